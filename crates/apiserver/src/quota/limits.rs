//! The LimitRanger admission plugin (upstream `plugin/pkg/admission/limitranger/admission.go`):
//! a pod created in a namespace with LimitRanges gets the `Container` limits' `default` and
//! `defaultRequest` for what its containers leave unset (recorded in the
//! `kubernetes.io/limit-ranger` annotation), and is refused with upstream's messages when a
//! container or the pod is outside `min`, `max` or `maxLimitRequestRatio`; a claim's storage
//! request must be within the `PersistentVolumeClaim` limits. Pod updates are not checked
//! (containers' resources change only through resize, which Kinetic does not serve); claim
//! updates are.

use serde_json::{Map, Value};

use super::amount::Amount;
use super::resources::{Kind, ResourceList, container_list, list_of, pod_totals};

/// The annotation recording the defaults the plugin set.
pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

fn limits_of(range: &Value) -> impl Iterator<Item = &Value> {
    range.pointer("/spec/limits").and_then(Value::as_array).into_iter().flatten()
}

fn type_of(limit: &Value) -> &str {
    limit.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// Applies the `Container` defaults of every range, in order, to the pod's containers and
/// init containers (upstream `PodMutateLimitFunc` per range).
pub fn default_pod(ranges: &[Value], pod: &mut Value) {
    for range in ranges {
        let mut requests = Map::new();
        let mut limits = Map::new();
        for l in limits_of(range).filter(|l| type_of(l) == "Container") {
            if let Some(m) = l.get("defaultRequest").and_then(Value::as_object) {
                requests.extend(m.clone());
            }
            if let Some(m) = l.get("default").and_then(Value::as_object) {
                limits.extend(m.clone());
            }
        }
        if requests.is_empty() && limits.is_empty() {
            continue;
        }
        let mut notes: Vec<String> = Vec::new();
        let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return };
        for (field, prefix) in [("containers", "container"), ("initContainers", "init container")] {
            let cs = spec.get_mut(field).and_then(Value::as_array_mut);
            for c in cs.into_iter().flatten().filter_map(Value::as_object_mut) {
                let name = c.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
                let Some(res) = super::resources::object_entry(c, "resources") else { continue };
                let set_limits = merge(res, "limits", &limits);
                let set_requests = merge(res, "requests", &requests);
                if !set_requests.is_empty() {
                    notes.push(format!("{} request for {prefix} {name}", set_requests.join(", ")));
                }
                if !set_limits.is_empty() {
                    notes.push(format!("{} limit for {prefix} {name}", set_limits.join(", ")));
                }
            }
        }
        if !notes.is_empty()
            && let Some(md) =
                pod.as_object_mut().and_then(|p| super::resources::object_entry(p, "metadata"))
            && let Some(ann) = super::resources::object_entry(md, "annotations")
        {
            let v = format!("LimitRanger plugin set: {}", notes.join("; "));
            ann.insert(ANNOTATION.into(), Value::String(v));
        }
    }
}

/// Sets the defaults a container lacks; the names set, sorted.
fn merge(res: &mut Map<String, Value>, key: &str, defaults: &Map<String, Value>) -> Vec<String> {
    let Some(target) = super::resources::object_entry(res, key) else { return Vec::new() };
    let mut set: Vec<String> = Vec::new();
    for (k, v) in defaults {
        if !target.contains_key(k) {
            target.insert(k.clone(), v.clone());
            set.push(k.clone());
        }
    }
    set.sort();
    set
}

/// Upstream `requestLimitEnforcedValues`: milli-units when all three fit, else whole units.
fn common_values(req: Option<&Amount>, lim: Option<&Amount>, enforced: &Amount) -> (i64, i64, i64) {
    const MAX_MILLI: i64 = i64::MAX / 1000;
    let zero = Amount::zero();
    let (r, l) = (req.unwrap_or(&zero), lim.unwrap_or(&zero));
    if r.value() <= MAX_MILLI && l.value() <= MAX_MILLI && enforced.value() <= MAX_MILLI {
        (r.milli_value(), l.milli_value(), enforced.milli_value())
    } else {
        (r.value(), l.value(), enforced.value())
    }
}

fn min_constraint(
    ty: &str,
    r: &str,
    enforced: &Amount,
    req: &ResourceList,
    lim: &ResourceList,
) -> Option<String> {
    let (rq, lm) = (req.get(r), lim.get(r));
    let (rv, lv, ev) = common_values(rq, lm, enforced);
    match (rq, lm) {
        (None, _) => {
            Some(format!("minimum {r} usage per {ty} is {enforced}.  No request is specified"))
        }
        (Some(q), _) if rv < ev => {
            Some(format!("minimum {r} usage per {ty} is {enforced}, but request is {q}"))
        }
        (_, Some(l)) if lv < ev => {
            Some(format!("minimum {r} usage per {ty} is {enforced}, but limit is {l}"))
        }
        _ => None,
    }
}

fn max_constraint(
    ty: &str,
    r: &str,
    enforced: &Amount,
    req: &ResourceList,
    lim: &ResourceList,
) -> Option<String> {
    let (rq, lm) = (req.get(r), lim.get(r));
    let (rv, lv, ev) = common_values(rq, lm, enforced);
    match (rq, lm) {
        (_, None) => {
            Some(format!("maximum {r} usage per {ty} is {enforced}.  No limit is specified"))
        }
        (_, Some(l)) if lv > ev => {
            Some(format!("maximum {r} usage per {ty} is {enforced}, but limit is {l}"))
        }
        (Some(q), _) if rv > ev => {
            Some(format!("maximum {r} usage per {ty} is {enforced}, but request is {q}"))
        }
        _ => None,
    }
}

/// For claims, whose limits are not user input: the request alone (`maxRequestConstraint`).
fn max_request_constraint(
    ty: &str,
    r: &str,
    enforced: &Amount,
    req: &ResourceList,
) -> Option<String> {
    let rq = req.get(r);
    let (rv, _, ev) = common_values(rq, None, enforced);
    match rq {
        None => Some(format!("maximum {r} usage per {ty} is {enforced}.  No request is specified")),
        Some(q) if rv > ev => {
            Some(format!("maximum {r} usage per {ty} is {enforced}, but request is {q}"))
        }
        _ => None,
    }
}

fn ratio_constraint(
    ty: &str,
    r: &str,
    enforced: &Amount,
    req: &ResourceList,
    lim: &ResourceList,
) -> Option<String> {
    let (rq, lm) = (req.get(r), lim.get(r));
    let (rv, lv, _) = common_values(rq, lm, enforced);
    if rq.is_none() || rv == 0 {
        return Some(format!(
            "{r} max limit to request ratio per {ty} is {enforced}, but no request is specified or request is 0"
        ));
    }
    if lm.is_none() || lv == 0 {
        return Some(format!(
            "{r} max limit to request ratio per {ty} is {enforced}, but no limit is specified or limit is 0"
        ));
    }
    #[allow(clippy::cast_precision_loss)]
    let observed = lv as f64 / rv as f64;
    const MAX_MILLI: i64 = i64::MAX / 1000;
    #[allow(clippy::cast_precision_loss)]
    let (scaled, allowed) = if enforced.value() <= MAX_MILLI {
        (observed * 1000.0, enforced.milli_value() as f64)
    } else {
        (observed, enforced.value() as f64)
    };
    (scaled > allowed).then(|| {
        format!("{r} max limit to request ratio per {ty} is {enforced}, but provided ratio is {observed:.6}")
    })
}

/// Checks `requests`/`limits` against one limit item's `min`, `max` and ratio.
fn check_item(item: &Value, req: &ResourceList, lim: &ResourceList, errs: &mut Vec<String>) {
    let ty = type_of(item);
    for (r, q) in list_of(item.get("min")) {
        errs.extend(min_constraint(ty, &r, &q, req, lim));
    }
    for (r, q) in list_of(item.get("max")) {
        errs.extend(max_constraint(ty, &r, &q, req, lim));
    }
    for (r, q) in list_of(item.get("maxLimitRequestRatio")) {
        errs.extend(ratio_constraint(ty, &r, &q, req, lim));
    }
}

/// Upstream `utilerrors.NewAggregate(...).Error()`: one message as it is, several in brackets.
fn aggregate(errs: Vec<String>) -> Result<(), String> {
    match errs.len() {
        0 => Ok(()),
        1 => Err(errs.into_iter().next().unwrap_or_default()),
        _ => Err(format!("[{}]", errs.join(", "))),
    }
}

/// Upstream `PodValidateLimitFunc` for each range in order; the first range refused answers.
///
/// # Errors
/// The reason of the 403.
pub fn validate_pod(ranges: &[Value], pod: &Value) -> Result<(), String> {
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    for range in ranges {
        let mut errs = Vec::new();
        for item in limits_of(range) {
            match type_of(item) {
                "Container" => {
                    for field in ["containers", "initContainers"] {
                        for c in spec.get(field).and_then(Value::as_array).into_iter().flatten() {
                            let req = container_list(c, Kind::Requests);
                            let lim = container_list(c, Kind::Limits);
                            check_item(item, &req, &lim, &mut errs);
                        }
                    }
                }
                "Pod" => {
                    // The limit ranger's own totals leave pod overhead out.
                    let req = pod_totals(pod, Kind::Requests, false);
                    let lim = pod_totals(pod, Kind::Limits, false);
                    check_item(item, &req, &lim, &mut errs);
                }
                _ => {}
            }
        }
        aggregate(errs)?;
    }
    Ok(())
}

/// Upstream `PersistentVolumeClaimValidateLimitFunc`.
///
/// # Errors
/// The reason of the 403.
pub fn validate_claim(ranges: &[Value], claim: &Value) -> Result<(), String> {
    let req = list_of(claim.pointer("/spec/resources/requests"));
    for range in ranges {
        let mut errs = Vec::new();
        for item in limits_of(range).filter(|l| type_of(l) == "PersistentVolumeClaim") {
            for (r, q) in list_of(item.get("min")) {
                errs.extend(min_constraint(
                    "PersistentVolumeClaim",
                    &r,
                    &q,
                    &req,
                    &ResourceList::new(),
                ));
            }
            for (r, q) in list_of(item.get("max")) {
                errs.extend(max_request_constraint("PersistentVolumeClaim", &r, &q, &req));
            }
        }
        aggregate(errs)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn range(limits: Value) -> Value {
        json!({"metadata": {"name": "lr"}, "spec": {"limits": limits}})
    }

    #[test]
    fn defaults_fill_what_containers_leave_unset() {
        let r = range(json!([{"type": "Container",
            "default": {"cpu": "500m", "memory": "256Mi"},
            "defaultRequest": {"cpu": "100m", "memory": "128Mi"}}]));
        let mut pod = json!({"spec": {
            "containers": [{"name": "app", "resources": {"limits": {"memory": "1Gi"}}}, {"name": "side"}],
            "initContainers": [{"name": "init", "resources": {"requests": {"cpu": "1"}}}]}});
        default_pod(&[r], &mut pod);
        assert_eq!(
            pod["spec"]["containers"][0]["resources"],
            json!({
            "limits": {"memory": "1Gi", "cpu": "500m"},
            "requests": {"cpu": "100m", "memory": "128Mi"}})
        );
        assert_eq!(
            pod["spec"]["initContainers"][0]["resources"]["requests"],
            json!({"cpu": "1", "memory": "128Mi"})
        );
        assert_eq!(
            pod["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: cpu, memory request for container app; cpu limit for container app; cpu, memory request for container side; cpu, memory limit for container side; memory request for init container init; cpu, memory limit for init container init"
        );
        let mut untouched = json!({"spec": {"containers": [{"name": "a"}]}});
        default_pod(&[range(json!([{"type": "Pod", "max": {"cpu": "2"}}]))], &mut untouched);
        assert!(untouched.get("metadata").is_none());
    }

    /// Ported from upstream `admission_test.go` `TestPodLimitFunc` (messages as 1.35 words them).
    #[test]
    fn bounds_follow_upstream() {
        let pod = |req: Value, lim: Value| json!({"spec": {"containers": [{"name": "c", "resources": {"requests": req, "limits": lim}}]}});
        let min = range(json!([{"type": "Container", "min": {"cpu": "100m"}}]));
        assert_eq!(
            validate_pod(std::slice::from_ref(&min), &pod(json!({"cpu": "50m"}), json!({})))
                .unwrap_err(),
            "minimum cpu usage per Container is 100m, but request is 50m"
        );
        assert_eq!(
            validate_pod(std::slice::from_ref(&min), &pod(json!({}), json!({}))).unwrap_err(),
            "minimum cpu usage per Container is 100m.  No request is specified"
        );
        assert!(validate_pod(&[min], &pod(json!({"cpu": "100m"}), json!({"cpu": "1"}))).is_ok());
        let max = range(json!([{"type": "Container", "max": {"memory": "1Gi", "cpu": "1"}}]));
        assert_eq!(
            validate_pod(
                std::slice::from_ref(&max),
                &pod(
                    json!({"cpu": "1", "memory": "512Mi"}),
                    json!({"cpu": "2", "memory": "512Mi"})
                )
            )
            .unwrap_err(),
            "maximum cpu usage per Container is 1, but limit is 2"
        );
        assert_eq!(
            validate_pod(&[max], &pod(json!({}), json!({}))).unwrap_err(),
            "[maximum cpu usage per Container is 1.  No limit is specified, maximum memory usage per Container is 1Gi.  No limit is specified]"
        );
        let ratio = range(json!([{"type": "Container", "maxLimitRequestRatio": {"cpu": "2"}}]));
        assert_eq!(
            validate_pod(
                std::slice::from_ref(&ratio),
                &pod(json!({"cpu": "100m"}), json!({"cpu": "300m"}))
            )
            .unwrap_err(),
            "cpu max limit to request ratio per Container is 2, but provided ratio is 3.000000"
        );
        assert!(
            validate_pod(&[ratio], &pod(json!({"cpu": "100m"}), json!({"cpu": "200m"}))).is_ok()
        );
        let per_pod = range(json!([{"type": "Pod", "max": {"cpu": "1"}}]));
        let two = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "600m"}, "limits": {"cpu": "600m"}}},
            {"name": "b", "resources": {"requests": {"cpu": "600m"}, "limits": {"cpu": "600m"}}}]}});
        assert_eq!(
            validate_pod(&[per_pod], &two).unwrap_err(),
            "maximum cpu usage per Pod is 1, but limit is 1200m"
        );
    }

    #[test]
    fn claims_are_bounded_by_their_request() {
        let r = range(
            json!([{"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "10Gi"}}]),
        );
        let claim = |s: &str| json!({"spec": {"resources": {"requests": {"storage": s}}}});
        assert!(validate_claim(std::slice::from_ref(&r), &claim("5Gi")).is_ok());
        assert_eq!(
            validate_claim(std::slice::from_ref(&r), &claim("20Gi")).unwrap_err(),
            "maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"
        );
        assert_eq!(
            validate_claim(&[r], &claim("500Mi")).unwrap_err(),
            "minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"
        );
    }
}
