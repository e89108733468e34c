//! Validation of `apps.kruise.io` objects, as OpenKruise's validating webhook does it
//! (`pkg/webhook/cloneset/validating/validation.go`), so a CloneSet that OpenKruise would refuse
//! is refused here too, with `Invalid` and field causes, before anything is stored.
//!
//! The embedded server runs this in place of the webhook; the CRD schema (served like any
//! CRD) has already checked types, applied defaults and pruned unknown fields. The rules that
//! need neither the stored object nor the pod template live in
//! [`kinetic_rollout::validation`], where the CloneSet controller applies them too: on a real
//! cluster `kinetic controller` serves no webhook, so it refuses to act on a CloneSet that
//! breaks them instead.
//!
//! New `podsToDelete` entries must name existing pods of this CloneSet, as upstream's webhook
//! checks with a read of each pod ([`validate_pods_to_delete`], given the store by the caller):
//! a name of a pod that does not exist was accepted and silently cleared (issue 18).

use serde_json::Value;

use crate::error::Cause;
use crate::validation::validate_pod_spec;

pub const GROUP: &str = "apps.kruise.io";

/// Validates a new (`old` = None) or updated object of kind `kind` in `apps.kruise.io`.
pub fn validate(kind: &str, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    match kind {
        "CloneSet" => validate_cloneset(obj, old),
        "ImagePullJob" => validate_image_pull_job(obj),
        "ImageListPullJob" => validate_image_list_pull_job(obj),
        "BroadcastJob" => validate_broadcast_job(obj),
        _ => Vec::new(),
    }
}

/// The defaults OpenKruise's mutating webhook sets that a CRD schema cannot: the pod
/// template's core/v1 defaults (`SetDefaultPodSpec`) of a BroadcastJob. (The schema defaults
/// `parallelism`, `completionPolicy.type` and `failurePolicy.type`.)
pub fn default(kind: &str, obj: &mut Value) {
    if kind == "BroadcastJob"
        && let Some(spec) = obj
            .get_mut("spec")
            .and_then(|s| s.get_mut("template"))
            .and_then(|t| crate::builtin::obj_mut(t, "spec"))
    {
        crate::builtin::default_pod_spec(spec);
    }
}

/// OpenKruise's BroadcastJob webhook (`pkg/webhook/broadcastjob/validating`): a job pod
/// template (restartPolicy `Never` or `OnFailure`), a non-negative parallelism, and the
/// completion policy rules ImagePullJob has too.
fn validate_broadcast_job(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    validate_pod_spec(spec.pointer("/template/spec"), "spec.template.spec", &mut causes);
    let rp = spec.pointer("/template/spec/restartPolicy").and_then(Value::as_str).unwrap_or("");
    if !matches!(rp, "Never" | "OnFailure") {
        causes.retain(|c| c.field != "spec.template.spec.restartPolicy");
        causes.push(Cause::invalid(
            "spec.template.spec.restartPolicy",
            &Value::String(rp.to_owned()),
            "pod restartPolicy can only be Never or OnFailure",
        ));
    }
    let bad_parallelism = match spec.get("parallelism") {
        Some(Value::Number(n)) => n.as_i64().is_none_or(|n| n < 0),
        Some(Value::String(s)) => {
            s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()).is_none_or(|p| p < 0)
        }
        _ => false,
    };
    if bad_parallelism {
        causes.push(Cause::invalid(
            "spec.parallelism",
            spec.get("parallelism").unwrap_or(&Value::Null),
            "parallelism must be a non-negative integer or percentage",
        ));
    }
    let policy = spec.get("completionPolicy").cloned().unwrap_or(Value::Null);
    validate_completion_type(&policy, &mut causes);
    causes
}

/// OpenKruise's ImagePullJob webhook (`pkg/webhook/imagepulljob/validating`, `validate`, the
/// same for v1alpha1 and v1beta1), with its messages, as `Forbidden` field causes (the webhook
/// answers 400 with the bare message; a field cause says where). Issue 18: the manual's own
/// first example sets `names` and `matchLabels` together, which upstream refuses.
fn validate_image_pull_job(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    validate_pull_targets(&spec, &mut causes);
    if spec.get("image").and_then(Value::as_str).is_none_or(str::is_empty) {
        causes.push(Cause::required("spec.image", "image can not be empty"));
    }
    let policy = spec.get("completionPolicy").cloned().unwrap_or(Value::Null);
    let deadline = policy.get("activeDeadlineSeconds").and_then(Value::as_i64);
    let timeout = spec.pointer("/pullPolicy/timeoutSeconds").and_then(Value::as_i64).unwrap_or(600);
    if policy.get("type").and_then(Value::as_str).unwrap_or("Always") == "Always"
        && deadline.is_some_and(|d| timeout > d)
    {
        causes.push(Cause::forbidden(
            "spec.completionPolicy.activeDeadlineSeconds",
            "completionPolicy.activeDeadlineSeconds must be greater than pullPolicy.timeoutSeconds(default 600)",
        ));
    }
    validate_completion_type(&policy, &mut causes);
    causes
}

/// The ImageListPullJob webhook (`pkg/webhook/imagelistpulljob/validating`): the target and
/// completion rules of ImagePullJob, and a list of at most 255 distinct images.
fn validate_image_list_pull_job(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    validate_pull_targets(&spec, &mut causes);
    let images: Vec<&Value> =
        spec.get("images").and_then(Value::as_array).into_iter().flatten().collect();
    if images.is_empty() || images.iter().any(|i| i.as_str().is_none_or(str::is_empty)) {
        causes.push(Cause::required("spec.images", "image can not be empty"));
    }
    if images.iter().enumerate().any(|(i, image)| images[..i].contains(image)) {
        causes.push(Cause::forbidden("spec.images", "images cannot have duplicate values"));
    }
    if images.len() > 255 {
        causes.push(Cause::forbidden("spec.images", "the maximum number of images cannot > 255"));
    }
    let policy = spec.get("completionPolicy").cloned().unwrap_or(Value::Null);
    validate_completion_type(&policy, &mut causes);
    causes
}

/// `Never` takes neither a deadline nor a TTL; types other than `Always` and `Never` are
/// refused (upstream's messages).
fn validate_completion_type(policy: &Value, causes: &mut Vec<Cause>) {
    let set = |v: Option<&Value>| v.is_some_and(|v| !v.is_null());
    match policy.get("type").and_then(Value::as_str).unwrap_or("Always") {
        "Always" => {}
        "Never" => {
            if set(policy.get("activeDeadlineSeconds"))
                || set(policy.get("ttlSecondsAfterFinished"))
            {
                causes.push(Cause::forbidden(
                    "spec.completionPolicy",
                    "activeDeadlineSeconds and ttlSecondsAfterFinished can only work with Always CompletionPolicyType",
                ));
            }
        }
        other => causes.push(Cause::forbidden(
            "spec.completionPolicy.type",
            &format!("unknown type of completionPolicy: {other}"),
        )),
    }
}

/// The node and pod selector rules ImagePullJob and ImageListPullJob share.
fn validate_pull_targets(spec: &Value, causes: &mut Vec<Cause>) {
    let set = |v: Option<&Value>| v.is_some_and(|v| !v.is_null());
    let selector = spec.get("selector").filter(|s| !s.is_null());
    if let Some(sel) = selector {
        let labels = set(sel.get("matchLabels")) || set(sel.get("matchExpressions"));
        let names = sel.get("names").filter(|n| !n.is_null());
        if labels && names.is_some() {
            causes.push(Cause::forbidden(
                "spec.selector",
                "can not set both names and labelSelector in this spec.selector",
            ));
        }
        let list: Vec<&Value> = names.and_then(Value::as_array).into_iter().flatten().collect();
        if list.iter().enumerate().any(|(i, n)| list[..i].contains(n)) {
            causes
                .push(Cause::forbidden("spec.selector.names", "duplicated name in selector names"));
        }
    }
    if set(spec.get("podSelector")) && selector.is_some() {
        causes.push(Cause::forbidden(
            "spec.podSelector",
            "can not set both selector and podSelector",
        ));
    }
}

/// Upstream's `validateScaleStrategy`: each `scaleStrategy.podsToDelete` entry that `old` did
/// not list must name a pod (looked up by `pod`) controlled by this CloneSet, else `Invalid`
/// with upstream's `find pod NAME failed` / `pod NAME not owned by CloneSet`.
pub fn validate_pods_to_delete(
    obj: &Value,
    old: Option<&Value>,
    pod: impl Fn(&str) -> Option<Value>,
) -> Vec<Cause> {
    let names = |o: &Value| -> Vec<String> {
        o.pointer("/spec/scaleStrategy/podsToDelete")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    let before = old.map(names).unwrap_or_default();
    let uid = obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("");
    let mut causes = Vec::new();
    for name in names(obj).into_iter().filter(|n| !before.contains(n)) {
        let detail = match pod(&name) {
            None => format!("find pod {name} failed"),
            Some(p) => {
                let owners = p.pointer("/metadata/ownerReferences").and_then(Value::as_array);
                let controller = owners
                    .into_iter()
                    .flatten()
                    .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true));
                let ours = controller.and_then(|o| o.get("uid")).and_then(Value::as_str);
                if !uid.is_empty() && ours == Some(uid) {
                    continue;
                }
                format!("pod {name} not owned by CloneSet")
            }
        };
        causes.push(crate::error::invalid("spec.scaleStrategy.podsToDelete", &name, &detail));
    }
    causes
}

/// Fields of a CloneSet spec that may change after creation (validation.go, `validateCloneSetUpdate`).
const MUTABLE: [&str; 9] = [
    "replicas",
    "template",
    "scaleStrategy",
    "updateStrategy",
    "minReadySeconds",
    "lifecycle",
    "revisionHistoryLimit",
    "volumeClaimTemplates",
    "progressDeadlineSeconds",
];

fn validate_cloneset(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    // The rules the controller applies too (on a real cluster no webhook runs), then the pod
    // template's own validation and the rules of an update.
    let mut causes = kinetic_rollout::validation::cloneset(obj);
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    validate_pod_spec(spec.pointer("/template/spec"), "spec.template.spec", &mut causes);
    if let Some(old) = old {
        causes.extend(kinetic_rollout::validation::cloneset_in_place_only_update(old, obj));
    }
    if let Some(old_spec) = old.and_then(|o| o.get("spec")) {
        let strip = |s: &Value| {
            let mut s = s.as_object().cloned().unwrap_or_default();
            for f in MUTABLE {
                s.remove(f);
            }
            s
        };
        if strip(&spec) != strip(old_spec) {
            causes.push(Cause::forbidden(
                "spec",
                "updates to cloneset spec for fields other than 'replicas', 'template', 'lifecycle', 'scaleStrategy', 'updateStrategy', 'minReadySeconds', 'volumeClaimTemplates' and 'revisionHistoryLimit' are forbidden",
            ));
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cs(update: Value) -> Value {
        json!({"spec": {
            "replicas": 5,
            "selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}},
                         "spec": {"containers": [{"name": "c", "image": "i"}]}},
            "updateStrategy": update,
        }})
    }

    fn fields(c: &[Cause]) -> Vec<String> {
        c.iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn follows_the_webhook() {
        assert!(validate("CloneSet", &cs(json!({"maxUnavailable": "20%"})), None).is_empty());
        let c = validate(
            "CloneSet",
            &cs(json!({"type": "InPlaceOnly", "maxSurge": 1, "maxUnavailable": 0})),
            None,
        );
        assert_eq!(
            fields(&c),
            [
                "spec.updateStrategy.maxSurge: Invalid value: \"1\": can not use maxSurge with strategy type InPlaceOnly"
            ]
        );
        let c = validate("CloneSet", &cs(json!({"maxUnavailable": 0, "maxSurge": "0%"})), None);
        assert_eq!(c.len(), 1, "{:?}", fields(&c));
        assert!(c[0].message.contains("should not both be less than 1"));
        let c = validate("CloneSet", &cs(json!({"type": "Rolling", "partition": "x%"})), None);
        assert_eq!(c.len(), 2, "{:?}", fields(&c));
        // Only the listed fields may change.
        let old = cs(json!({}));
        let mut new = old.clone();
        new["spec"]["selector"] = json!({"matchLabels": {"app": "b"}});
        new["spec"]["template"]["metadata"]["labels"] = json!({"app": "b"});
        let c = validate("CloneSet", &new, Some(&old));
        assert_eq!(c.len(), 1, "{:?}", fields(&c));
        assert_eq!(c[0].field, "spec");
    }
}
