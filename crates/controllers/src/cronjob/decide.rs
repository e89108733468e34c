//! The CronJob controller's decisions as pure functions of the CronJob, its Jobs, the schedule
//! and an injected `now` (upstream `pkg/controller/cronjob/cronjob_controllerv2.go`
//! `syncCronJob` and `utils.go`, v1.35): the active-list bookkeeping, which scheduled time is
//! due (`mostRecentScheduleTime`, with its rough count of missed times and the cap of 100),
//! the concurrency policy, the starting deadline, the next wake-up, the name and shape of the
//! Job to create, and which finished Jobs fall out of the history limits.

use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job, JobTemplateSpec};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kinetic_machinery::cron::Schedule;

/// Annotation with the time a Job was scheduled for (RFC 3339 in the CronJob's zone).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Upstream's `nextScheduleDelta`: wake a little after the scheduled time.
const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);

/// How many start times were missed (upstream's `missedSchedulesType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    None,
    Few,
    Many,
}

/// `mostRecentScheduleTime`: the earliest time considered, the most recent scheduled time at
/// or before `now` after it (if any), and how many were missed.
///
/// # Errors
/// The schedule never fires, or fires twice within a second.
pub fn most_recent_schedule_time(
    cj: &CronJob,
    now: Timestamp,
    sched: &Schedule,
    tz: &TimeZone,
    include_deadline: bool,
) -> Result<(Timestamp, Option<Timestamp>, Missed), String> {
    let created = cj.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let status = cj.status.clone().unwrap_or_default();
    let mut earliest = status.last_schedule_time.map_or(created, |t| t.0);
    let deadline = cj.spec.as_ref().and_then(|s| s.starting_deadline_seconds);
    if include_deadline && let Some(d) = deadline {
        let limit = now.checked_sub(SignedDuration::from_secs(d)).unwrap_or(now);
        if limit > earliest {
            earliest = limit;
        }
    }
    let never = || "the schedule never fires".to_owned();
    let t1 = sched.next(earliest, tz).ok_or_else(never)?;
    let t2 = sched.next(t1, tz).ok_or_else(never)?;
    if now < t1 {
        return Ok((earliest, None, Missed::None));
    }
    if now < t2 {
        return Ok((earliest, Some(t1), Missed::None));
    }
    let between = t2.duration_since(t1).as_secs();
    if between < 1 {
        return Err("time difference between two schedules is less than 1 second".to_owned());
    }
    let elapsed = now.duration_since(t1).as_secs();
    let missed = elapsed / between + 1;
    // Start one interval before the estimate and walk forward: exact for irregular schedules
    // (`30 6-16/4 * * 1-5`) and for `@every`.
    let back = (missed - 2).saturating_mul(between);
    let mut t = t1.checked_add(SignedDuration::from_secs(back)).unwrap_or(t1);
    let mut most_recent = None;
    while let Some(n) = sched.next(t, tz) {
        if n > now {
            break;
        }
        most_recent = Some(n);
        t = n;
    }
    let kind = match missed {
        m if m > 100 => Missed::Many,
        m if m > 1 => Missed::Few,
        _ => Missed::None,
    };
    Ok((earliest, most_recent, kind))
}

/// `nextScheduleTimeDuration`: how long until just after the next scheduled time.
pub fn next_schedule_delay(
    cj: &CronJob,
    now: Timestamp,
    sched: &Schedule,
    tz: &TimeZone,
) -> Option<Duration> {
    let (earliest, most_recent, _) = most_recent_schedule_time(cj, now, sched, tz, false).ok()?;
    let from = most_recent.unwrap_or(earliest);
    let next = sched.next(from, tz)?;
    let d = next.duration_since(now);
    Some(Duration::try_from(d).unwrap_or(Duration::ZERO) + NEXT_SCHEDULE_DELTA)
}

/// What `syncCronJob` does after the active-list bookkeeping.
#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    /// Create the Job for this scheduled time.
    pub create_for: Option<Timestamp>,
    /// Delete these active Jobs first (`Replace`).
    pub replace: Vec<ObjectReference>,
    /// Events: (type, reason, message).
    pub events: Vec<(&'static str, &'static str, String)>,
    pub requeue: Option<Duration>,
}

fn rfc1123z(t: Timestamp) -> String {
    t.strftime("%a, %d %b %Y %H:%M:%S %z").to_string()
}

/// The scheduling part of `syncCronJob` for a CronJob that is not being deleted.
pub fn decide(cj: &CronJob, now: Timestamp, sched: &Schedule, tz: &TimeZone) -> Decision {
    let spec = cj.spec.clone().unwrap_or_default();
    let status = cj.status.clone().unwrap_or_default();
    let mut d = Decision::default();
    if spec.suspend == Some(true) {
        return d;
    }
    let scheduled = match most_recent_schedule_time(cj, now, sched, tz, true) {
        Ok((_, Some(t), missed)) if t <= now => {
            if missed == Missed::Many {
                d.events.push((
                    "Warning",
                    "TooManyMissedTimes",
                    "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".to_owned(),
                ));
            }
            t
        }
        Ok(_) => {
            d.requeue = next_schedule_delay(cj, now, sched, tz);
            return d;
        }
        Err(e) => {
            d.events.push((
                "Warning",
                "InvalidSchedule",
                format!("invalid schedule: {} : {e}", spec.schedule),
            ));
            return d;
        }
    };
    d.requeue = next_schedule_delay(cj, now, sched, tz);
    if let Some(deadline) = spec.starting_deadline_seconds
        && scheduled.checked_add(SignedDuration::from_secs(deadline)).is_ok_and(|t| t < now)
    {
        d.events.push((
            "Warning",
            "MissSchedule",
            format!("Missed scheduled time to start a job: {}", rfc1123z(scheduled)),
        ));
        return d;
    }
    let name = job_name(cj.metadata.name.as_deref().unwrap_or(""), scheduled);
    let active = status.active.clone().unwrap_or_default();
    if active.iter().any(|a| a.name.as_deref() == Some(name.as_str()))
        || status.last_schedule_time.as_ref().is_some_and(|t| t.0 == scheduled)
    {
        return d;
    }
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if !active.is_empty() => {
            d.events.push((
                "Normal",
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid".to_owned(),
            ));
            return d;
        }
        Some("Replace") => d.replace = active,
        _ => {}
    }
    d.create_for = Some(scheduled);
    d
}

/// `getJobName`: the CronJob's name and the scheduled time in minutes since the epoch, so one
/// scheduled time can only ever make one Job.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// `getJobFromTemplate2`: the Job for `scheduled`, with the template's labels and
/// annotations, the scheduled-timestamp annotation and the CronJob as controlling owner.
pub fn job_for(
    cj: &CronJob,
    owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    scheduled: Timestamp,
    tz: &TimeZone,
) -> Job {
    let template: JobTemplateSpec =
        cj.spec.as_ref().map(|s| s.job_template.clone()).unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    let zoned = scheduled.to_zoned(tz.clone());
    let stamp = if zoned.offset().seconds() == 0 {
        zoned.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    };
    annotations.insert(SCHEDULED_TIMESTAMP.to_owned(), stamp);
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(cj.metadata.name.as_deref().unwrap_or(""), scheduled)),
            namespace: cj.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(template.spec.unwrap_or_default()),
        status: None,
    }
}

/// Whether a Job finished, and if so whether it succeeded.
pub fn finished(job: &Job) -> Option<bool> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    conds.iter().filter(|c| c.status == "True").find_map(|c| match c.type_.as_str() {
        "Complete" => Some(true),
        "Failed" => Some(false),
        _ => None,
    })
}

/// The active-list bookkeeping of `syncCronJob` over the Jobs this CronJob controls: finished
/// Jobs leave `status.active`, succeeded ones advance `lastSuccessfulTime`. Returns the Events
/// and the active references whose Job is not among `jobs` (to be checked against the API).
pub fn reconcile_active(
    cj: &mut CronJob,
    jobs: &[&Job],
) -> (Vec<(&'static str, &'static str, String)>, Vec<ObjectReference>) {
    let status = cj.status.get_or_insert_with(Default::default);
    let mut events = Vec::new();
    let mut active = status.active.take().unwrap_or_default();
    for j in jobs {
        let uid = j.metadata.uid.as_deref();
        let name = j.metadata.name.clone().unwrap_or_default();
        let found = active.iter().any(|a| a.uid.as_deref() == uid);
        match finished(j) {
            None if !found => events.push((
                "Warning",
                "UnexpectedJob",
                format!("Saw a job that the controller did not create or forgot: {name}"),
            )),
            Some(ok) if found => {
                active.retain(|a| a.uid.as_deref() != uid);
                let cond = if ok { "Complete" } else { "Failed" };
                events.push((
                    "Normal",
                    "SawCompletedJob",
                    format!("Saw completed job: {name}, condition: {cond}"),
                ));
            }
            _ => {}
        }
        if finished(j) == Some(true)
            && let Some(done) = j.status.as_ref().and_then(|s| s.completion_time.clone())
            && status.last_successful_time.as_ref().is_none_or(|t| t.0 < done.0)
        {
            status.last_successful_time = Some(done);
        }
    }
    let missing = active
        .iter()
        .filter(|a| !jobs.iter().any(|j| j.metadata.uid.as_deref() == a.uid.as_deref()))
        .cloned()
        .collect();
    status.active = (!active.is_empty()).then_some(active);
    (events, missing)
}

/// `cleanupFinishedJobs`: the finished Jobs beyond the history limits, oldest first (by start
/// time, then name).
pub fn over_history(cj: &CronJob, jobs: &[&Job]) -> Vec<String> {
    let spec = cj.spec.clone().unwrap_or_default();
    let mut out = Vec::new();
    for (ok, limit) in
        [(true, spec.successful_jobs_history_limit), (false, spec.failed_jobs_history_limit)]
    {
        let Some(limit) = limit else { continue };
        let mut done: Vec<&&Job> = jobs.iter().filter(|j| finished(j) == Some(ok)).collect();
        done.sort_by_key(|j| {
            let start = j.status.as_ref().and_then(|s| s.start_time.clone()).map(|t| t.0);
            (start.is_none(), start, j.metadata.name.clone())
        });
        let keep = usize::try_from(limit.max(0)).unwrap_or(0);
        let n = done.len().saturating_sub(keep);
        out.extend(done.iter().take(n).filter_map(|j| j.metadata.name.clone()));
    }
    out
}

/// The reference a CronJob keeps to a Job it created (`getRef`).
pub fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".to_owned()),
        kind: Some("Job".to_owned()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        field_path: None,
    }
}

/// `lastScheduleTime` after a Job was created for `scheduled`.
pub fn scheduled_time(t: Timestamp) -> Time {
    Time(t)
}

#[cfg(test)]
mod tests;
