//! The CronJob's registry strategy (upstream `pkg/registry/batch/cronjob/strategy.go`):
//! `SetDefaults_CronJob` and `ValidateCronJobCreate`/`ValidateCronJobUpdate`.

use serde_json::{Value, json};

use crate::builtin::{obj_mut, set_default};
use crate::error::Cause;
use crate::strategy::Strategy;

#[derive(Debug)]
pub struct CronJobStrategy;

impl Strategy for CronJobStrategy {
    fn tracks_generation(&self) -> bool {
        true
    }

    /// Upstream: a DNS-1123 subdomain of at most 52 characters, so that the Jobs it creates
    /// (`{name}-{minutes}`, 11 more) are valid label values.
    fn validate_name(&self, name: &str, causes: &mut Vec<Cause>) {
        if !crate::validation::is_dns1123_subdomain(name) {
            causes.push(crate::error::invalid(
                "metadata.name",
                name,
                crate::validation::DNS1123_SUBDOMAIN_MSG,
            ));
        } else if name.len() > 52 {
            causes.push(crate::error::invalid(
                "metadata.name",
                name,
                "must be no more than 52 characters",
            ));
        }
    }

    fn default(&self, obj: &mut Value) {
        default(obj);
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate(obj, old)
    }
}

/// `SetDefaults_CronJob`: concurrencyPolicy Allow, suspend false, history limits 3 and 1;
/// the job template's pod template gets the pod defaults (its Job fields stay unset until a
/// Job is made from it, as upstream).
pub fn default(obj: &mut Value) {
    let Some(spec) = obj_mut(obj, "spec") else { return };
    set_default(spec, "concurrencyPolicy", json!("Allow"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "successfulJobsHistoryLimit", json!(3));
    set_default(spec, "failedJobsHistoryLimit", json!(1));
    if let Some(js) = spec.get_mut("jobTemplate").and_then(|t| obj_mut(t, "spec")) {
        super::default_template(js);
    }
}

/// `ValidateCronJobSpec` with upstream's field paths and messages.
pub fn validate(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut c = Vec::new();
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let tz = spec.get("timeZone").and_then(Value::as_str);
    match spec.get("schedule").and_then(Value::as_str) {
        None | Some("") => c.push(Cause::required("spec.schedule", "")),
        Some(s) => {
            if let Err(e) = kinetic_machinery::cron::parse(s) {
                c.push(Cause::invalid("spec.schedule", &json!(s), &e));
            }
            // TZ in the schedule is kept on update when it was there before (upstream's
            // `allowTZInSchedule`), refused otherwise.
            let had_tz = old
                .and_then(|o| o.pointer("/spec/schedule"))
                .and_then(Value::as_str)
                .is_some_and(|o| o.contains("TZ"));
            if s.contains("TZ") {
                if had_tz && tz.is_some() {
                    c.push(Cause::invalid(
                        "spec.schedule",
                        &json!(s),
                        "cannot use both timeZone field and TZ or CRON_TZ in schedule",
                    ));
                } else if !had_tz {
                    c.push(Cause::invalid(
                        "spec.schedule",
                        &json!(s),
                        "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                    ));
                }
            }
        }
    }
    if let Some(tz) = tz {
        validate_time_zone(tz, &mut c);
    }
    match spec.get("concurrencyPolicy").and_then(Value::as_str) {
        None | Some("") => c.push(Cause::required("spec.concurrencyPolicy", "")),
        Some("Allow" | "Forbid" | "Replace") => {}
        Some(other) => c.push(Cause::not_supported(
            "spec.concurrencyPolicy",
            &json!(other),
            &["Allow".to_owned(), "Forbid".to_owned(), "Replace".to_owned()],
        )),
    }
    for k in ["startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"] {
        super::nonnegative(&spec, k, "spec", &mut c);
    }
    let job_spec = spec.pointer("/jobTemplate/spec").cloned().unwrap_or(Value::Null);
    super::validate_job_template(&job_spec, "spec.jobTemplate.spec", &mut c);
    c
}

/// `validateTimeZone`: a non-empty IANA name the system time zone database knows.
fn validate_time_zone(tz: &str, c: &mut Vec<Cause>) {
    if tz.is_empty() {
        c.push(Cause::invalid(
            "spec.timeZone",
            &json!(tz),
            "timeZone must be nil or non-empty string",
        ));
        return;
    }
    if tz.eq_ignore_ascii_case("Local") {
        c.push(Cause::invalid(
            "spec.timeZone",
            &json!(tz),
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
        ));
        return;
    }
    if load_zone(tz).is_err() {
        c.push(Cause::invalid("spec.timeZone", &json!(tz), &format!("unknown time zone {tz}")));
    }
}

/// The zone `name` from the system's zoneinfo (Go's `time.LoadLocation`; `UTC` needs no file).
///
/// # Errors
/// The name is not a zone the database has.
pub fn load_zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    if name == "UTC" {
        return Ok(jiff::tz::TimeZone::UTC);
    }
    if !kinetic_machinery::cron::is_zone_name(name) {
        return Err(format!("unknown time zone {name}"));
    }
    let data = std::fs::read(std::path::Path::new("/usr/share/zoneinfo").join(name))
        .map_err(|_| format!("unknown time zone {name}"))?;
    kinetic_machinery::cron::zone_from_tzif(name, &data)
}
