//! The Job's registry strategy (upstream `pkg/registry/batch/job/strategy.go`): the generated
//! selector on create, `SetDefaults_Job`, `ValidateJob` and `ValidateJobUpdate`.

use serde_json::{Map, Value, json};

use crate::builtin::{obj_mut, set_default};
use crate::error::Cause;
use crate::strategy::{Admission, Strategy};

/// Labels the generated selector puts on the template (`batch.kubernetes.io/…` and the legacy
/// unprefixed pair upstream still sets).
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";
const LEGACY_JOB_NAME_LABEL: &str = "job-name";

#[derive(Debug)]
pub struct JobStrategy;

impl Strategy for JobStrategy {
    fn tracks_generation(&self) -> bool {
        true
    }

    /// `PrepareForCreate`: unless `manualSelector` is true, the selector is generated from the
    /// new uid (`generateSelector`).
    fn prepare_create(&self, _adm: &Admission<'_>, obj: &mut Value) {
        if obj.pointer("/spec/manualSelector").and_then(Value::as_bool) != Some(true) {
            generate_selector(obj);
        }
    }

    fn default(&self, obj: &mut Value) {
        default(obj);
    }

    /// Upstream's job status strategy resets spec and metadata but for what the controller
    /// writes through status; annotations and finalizers follow the request.
    fn status_keeps_metadata(&self) -> &'static [&'static str] {
        &[]
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut c = validate(obj);
        if let Some(old) = old {
            validate_update(obj, old, &mut c);
        }
        c
    }
}

fn generate_selector(obj: &mut Value) {
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_owned();
    let uid = obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("").to_owned();
    let Some(spec) = obj_mut(obj, "spec") else { return };
    if let Some(tmeta) = spec.get_mut("template").and_then(|t| obj_mut(t, "metadata"))
        && let Some(labels) = obj_mut_value(tmeta, "labels")
    {
        // A label the user set is kept: a conflict is refused by validation, as upstream.
        for k in [LEGACY_JOB_NAME_LABEL, JOB_NAME_LABEL] {
            labels.entry(k).or_insert_with(|| json!(name));
        }
        for k in [LEGACY_CONTROLLER_UID_LABEL, CONTROLLER_UID_LABEL] {
            labels.entry(k).or_insert_with(|| json!(uid));
        }
    }
    let Some(sel) = obj_mut_value(spec, "selector") else { return };
    if let Some(ml) = obj_mut_value(sel, "matchLabels") {
        ml.entry(CONTROLLER_UID_LABEL).or_insert_with(|| json!(uid));
    }
}

/// The object at `key` of a map, created empty when missing or not an object.
fn obj_mut_value<'a>(
    m: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    if !m.get(key).is_some_and(Value::is_object) {
        m.insert(key.to_owned(), json!({}));
    }
    m.get_mut(key)?.as_object_mut()
}

/// `SetDefaults_Job` (v1.35): parallelism and completions 1 when both are unset (a
/// work-queue Job sets parallelism only and keeps completions unset), backoffLimit 6
/// (MaxInt32 with `backoffLimitPerIndex`), the Job's labels from the template's when it has
/// none, completionMode NonIndexed, suspend and manualSelector false, podReplacementPolicy
/// (`Failed` with a podFailurePolicy, else `TerminatingOrFailed`), `onPodConditions[].status`
/// True; and the pod template's defaults.
pub fn default(obj: &mut Value) {
    let template_labels = obj.pointer("/spec/template/metadata/labels").cloned();
    if let Some(labels) = template_labels.filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
        && let Some(md) = obj_mut(obj, "metadata")
        && md.get("labels").and_then(Value::as_object).is_none_or(Map::is_empty)
    {
        md.insert("labels".into(), labels);
    }
    let Some(spec) = obj_mut(obj, "spec") else { return };
    let unset = |s: &Map<String, Value>, k: &str| s.get(k).is_none_or(Value::is_null);
    if unset(spec, "completions") && unset(spec, "parallelism") {
        spec.insert("completions".into(), json!(1));
    }
    set_default(spec, "parallelism", json!(1));
    let backoff = if unset(spec, "backoffLimitPerIndex") { 6 } else { i64::from(i32::MAX) };
    set_default(spec, "backoffLimit", json!(backoff));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "manualSelector", json!(false));
    let replacement =
        if unset(spec, "podFailurePolicy") { "TerminatingOrFailed" } else { "Failed" };
    set_default(spec, "podReplacementPolicy", json!(replacement));
    if let Some(rules) = spec
        .get_mut("podFailurePolicy")
        .and_then(|p| p.get_mut("rules"))
        .and_then(Value::as_array_mut)
    {
        for rule in rules {
            for p in rule
                .get_mut("onPodConditions")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object_mut)
            {
                set_default(p, "status", json!("True"));
            }
        }
    }
    super::default_template(spec);
}

/// `ValidateJob`: the selector (required, matching the template, generated unless
/// `manualSelector`), the template and the numeric fields.
pub fn validate(obj: &Value) -> Vec<Cause> {
    let mut c: Vec<Cause> = kinetic_rollout::validation::workload_selector(obj, "job");
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    super::validate_job_template(&spec, "spec", &mut c);
    if spec.get("manualSelector").and_then(Value::as_bool) != Some(true) {
        validate_generated_selector(obj, &mut c);
    }
    c
}

/// `validateGeneratedSelector`: the generated labels are on the template with the Job's uid
/// and name, and the selector is the generated one.
fn validate_generated_selector(obj: &Value, c: &mut Vec<Cause>) {
    let uid = obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("");
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    let labels = obj.pointer("/spec/template/metadata/labels");
    for (key, want) in [
        (LEGACY_CONTROLLER_UID_LABEL, uid),
        (LEGACY_JOB_NAME_LABEL, name),
        (CONTROLLER_UID_LABEL, uid),
        (JOB_NAME_LABEL, name),
    ] {
        let field = format!("spec.template.metadata.labels[{key}]");
        match labels.and_then(|l| l.get(key)).and_then(Value::as_str) {
            None => c.push(Cause::required(&field, "")),
            Some(v) if v != want => {
                c.push(Cause::invalid(&field, &json!(v), &format!("must be '{want}'")));
            }
            Some(_) => {}
        }
    }
    let sel = obj.pointer("/spec/selector").cloned().unwrap_or(Value::Null);
    let generated = json!({"matchLabels": {CONTROLLER_UID_LABEL: uid}});
    let exprs_empty =
        sel.get("matchExpressions").and_then(Value::as_array).is_none_or(Vec::is_empty);
    if sel.get("matchLabels") != generated.get("matchLabels") || !exprs_empty {
        c.push(Cause::invalid("spec.selector", &sel, "`selector` not auto-generated"));
    }
}

/// `ValidateJobSpecUpdate`: selector, completionMode, podFailurePolicy, successPolicy,
/// backoffLimitPerIndex and managedBy are immutable; completions too, except for an Indexed Job
/// changing it together with parallelism (elastic Indexed Jobs); the template too, except that
/// a suspended Job that never started may change its scheduling directives (node selector,
/// affinity, tolerations, scheduling gates) and template labels and annotations.
fn validate_update(new: &Value, old: &Value, c: &mut Vec<Cause>) {
    let get = |v: &Value, k: &str| v.pointer(&format!("/spec/{k}")).cloned();
    for k in [
        "selector",
        "completionMode",
        "podFailurePolicy",
        "successPolicy",
        "backoffLimitPerIndex",
        "managedBy",
    ] {
        if get(new, k) != get(old, k) {
            c.push(immutable(&format!("spec.{k}"), get(new, k)));
        }
    }
    let indexed = get(new, "completionMode").and_then(|v| v.as_str().map(str::to_owned))
        == Some("Indexed".to_owned());
    let elastic = indexed && get(new, "completions") == get(new, "parallelism");
    if get(new, "completions") != get(old, "completions") && !elastic {
        let field = "spec.completions";
        if indexed {
            c.push(Cause::invalid(
                field,
                &get(new, "completions").unwrap_or(Value::Null),
                "can only be modified in tandem with spec.parallelism",
            ));
        } else {
            c.push(immutable(field, get(new, "completions")));
        }
    }
    let never_started = old.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true)
        && old.pointer("/status/startTime").is_none_or(Value::is_null);
    let strip = |v: &Value| {
        let mut t = v.pointer("/spec/template").cloned().unwrap_or(Value::Null);
        if never_started {
            if let Some(m) = t.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("labels");
                m.remove("annotations");
            }
            if let Some(s) = t.get_mut("spec").and_then(Value::as_object_mut) {
                for k in ["nodeSelector", "affinity", "tolerations", "schedulingGates"] {
                    s.remove(k);
                }
            }
        }
        t
    };
    if strip(new) != strip(old) {
        c.push(immutable("spec.template", get(new, "template")));
    }
}

#[cfg(test)]
pub(super) fn validate_update_for_test(new: &Value, old: &Value, c: &mut Vec<Cause>) {
    validate_update(new, old, c);
}

fn immutable(field: &str, v: Option<Value>) -> Cause {
    Cause::invalid(field, &v.unwrap_or(Value::Null), "field is immutable")
}
