//! Resource lists and their arithmetic, as upstream's `k8s.io/apiserver/pkg/quota/v1`
//! (`resources.go`: `Add`, `SubtractWithNonNegativeResult`, `Mask`, `LessThanOrEqual`,
//! `RemoveZeros`, `IsNegative`) and the pod resource totals of `k8s.io/component-helpers/resource`
//! (`PodRequests`/`PodLimits`, with restartable init containers) that quota and limit ranges
//! charge.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::amount::Amount;

/// Quantities by resource name, ordered (upstream's `ResourceList`, printed sorted).
pub type ResourceList = BTreeMap<String, Amount>;

/// A quantity in JSON: a string, or a number (as YAML writes `cpu: 1`).
pub fn amount_of(v: &Value) -> Option<Amount> {
    match v {
        Value::String(s) => Amount::parse(s).ok(),
        Value::Number(n) => Amount::parse(&n.to_string()).ok(),
        _ => None,
    }
}

/// The resource list at `v` (a JSON object of quantities); entries that do not parse are left
/// out (validation answers for them).
pub fn list_of(v: Option<&Value>) -> ResourceList {
    v.and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, q)| Some((k.clone(), amount_of(q)?))).collect())
        .unwrap_or_default()
}

/// The resource list as JSON, quantities in their canonical form.
pub fn to_json(l: &ResourceList) -> Value {
    Value::Object(l.iter().map(|(k, v)| (k.clone(), Value::String(v.to_string()))).collect())
}

pub fn add(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut out = a.clone();
    for (k, v) in b {
        out.entry(k.clone()).and_modify(|x| *x = x.add(v)).or_insert(*v);
    }
    out
}

/// `a - b` per key, negative results as zero; keys only in `b` are zero.
pub fn subtract_non_negative(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut out = ResourceList::new();
    for (k, v) in a {
        let d = b.get(k).map_or(*v, |o| v.sub(o));
        out.insert(k.clone(), if d.sign() > 0 { d } else { Amount::zero() });
    }
    for k in b.keys() {
        out.entry(k.clone()).or_insert(Amount::zero());
    }
    out
}

/// The entries of `l` whose names are in `names`.
pub fn mask<'a>(l: &ResourceList, names: impl IntoIterator<Item = &'a String>) -> ResourceList {
    let names: BTreeSet<&String> = names.into_iter().collect();
    l.iter().filter(|(k, _)| names.contains(k)).map(|(k, v)| (k.clone(), *v)).collect()
}

/// Whether every entry of `a` named in `b` is at most `b`'s, and the names that are not.
pub fn less_than_or_equal(a: &ResourceList, b: &ResourceList) -> (bool, Vec<String>) {
    let exceeded: Vec<String> = b
        .iter()
        .filter(|(k, limit)| a.get(*k).is_some_and(|v| v > limit))
        .map(|(k, _)| k.clone())
        .collect();
    (exceeded.is_empty(), exceeded)
}

pub fn remove_zeros(l: &ResourceList) -> ResourceList {
    l.iter().filter(|(_, v)| !v.is_zero()).map(|(k, v)| (k.clone(), *v)).collect()
}

pub fn negative_names(l: &ResourceList) -> Vec<String> {
    l.iter().filter(|(_, v)| v.sign() < 0).map(|(k, _)| k.clone()).collect()
}

/// Upstream's `Equals`: the same names with equal values.
pub fn equals(a: &ResourceList, b: &ResourceList) -> bool {
    a.len() == b.len() && a.iter().all(|(k, v)| b.get(k) == Some(v))
}

/// `name=value,...` sorted by name (the quota admission's `prettyPrint`).
pub fn pretty(l: &ResourceList) -> String {
    l.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn max_into(acc: &mut ResourceList, l: &ResourceList) {
    for (k, v) in l {
        match acc.get(k) {
            Some(cur) if cur >= v => {}
            _ => {
                acc.insert(k.clone(), *v);
            }
        }
    }
}

/// Which of a container's lists: `requests` or `limits`.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Requests,
    Limits,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Requests => "requests",
            Kind::Limits => "limits",
        }
    }
}

fn containers<'a>(spec: &'a Value, field: &str) -> impl Iterator<Item = &'a Value> {
    spec.get(field).and_then(Value::as_array).into_iter().flatten()
}

/// A container's requests or limits.
pub fn container_list(c: &Value, kind: Kind) -> ResourceList {
    list_of(c.pointer(&format!("/resources/{}", kind.key())))
}

/// The pod's effective requests or limits (upstream `PodRequests`/`PodLimits` on the spec):
/// the sum of the containers and restartable (sidecar) init containers, at least each regular
/// init container plus the sidecars started before it, plus `spec.overhead`; cpu and memory
/// set at pod level (`spec.resources`, PodLevelResources) replace the containers' totals.
/// Limits of a resource some container leaves unset are summed over those that set it, as
/// upstream does. Overhead is added to all requests, and to limits the pod has.
pub fn pod_totals(pod: &Value, kind: Kind, with_overhead: bool) -> ResourceList {
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let mut reqs = ResourceList::new();
    for c in containers(spec, "containers") {
        reqs = add(&reqs, &container_list(c, kind));
    }
    let mut sidecars = ResourceList::new();
    let mut init_max = ResourceList::new();
    for c in containers(spec, "initContainers") {
        let own = container_list(c, kind);
        let charged = if c.get("restartPolicy").and_then(Value::as_str) == Some("Always") {
            reqs = add(&reqs, &own);
            sidecars = add(&sidecars, &own);
            sidecars.clone()
        } else {
            add(&own, &sidecars)
        };
        max_into(&mut init_max, &charged);
    }
    max_into(&mut reqs, &init_max);
    if let Some(pod_level) = spec.pointer(&format!("/resources/{}", kind.key())) {
        for (k, v) in list_of(Some(pod_level)) {
            if k == "cpu" || k == "memory" {
                reqs.insert(k, v);
            }
        }
    }
    if with_overhead && let Some(overhead) = spec.get("overhead") {
        // Upstream adds all of the overhead to requests, and to limits only where the pod
        // has a limit.
        for (k, v) in list_of(Some(overhead)) {
            match reqs.get_mut(&k) {
                Some(cur) => *cur = cur.add(&v),
                None if matches!(kind, Kind::Requests) => {
                    reqs.insert(k, v);
                }
                None => {}
            }
        }
    }
    reqs
}

/// The object at `key` of `m`, created empty when missing.
pub fn object_entry<'a>(
    m: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    if !m.get(key).is_some_and(Value::is_object) {
        m.insert(key.to_owned(), Value::Object(Map::new()));
    }
    m.get_mut(key)?.as_object_mut()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn l(pairs: &[(&str, &str)]) -> ResourceList {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), Amount::parse(v).unwrap())).collect()
    }

    #[test]
    fn list_arithmetic_follows_upstream() {
        let a = l(&[("cpu", "1"), ("memory", "1Gi")]);
        let b = l(&[("cpu", "500m"), ("pods", "1")]);
        assert_eq!(pretty(&add(&a, &b)), "cpu=1500m,memory=1Gi,pods=1");
        assert_eq!(pretty(&subtract_non_negative(&b, &a)), "cpu=0,memory=0,pods=1");
        let (ok, over) =
            less_than_or_equal(&l(&[("pods", "3"), ("cpu", "1")]), &l(&[("pods", "2")]));
        assert!(!ok);
        assert_eq!(over, ["pods"]);
        assert!(less_than_or_equal(&l(&[("pods", "2")]), &l(&[("pods", "2"), ("cpu", "1")])).0);
        assert!(equals(&l(&[("cpu", "1")]), &l(&[("cpu", "1000m")])));
        assert_eq!(pretty(&remove_zeros(&l(&[("cpu", "0"), ("pods", "1")]))), "pods=1");
        assert_eq!(negative_names(&l(&[("cpu", "-1"), ("pods", "1")])), ["cpu"]);
    }

    /// `component-helpers/resource` `TestPodResourceRequests` cases: regular init containers
    /// run one at a time, sidecars keep running beside what starts after them.
    #[test]
    fn pod_totals_count_sidecars_and_init_containers() {
        let c = |cpu: &str| json!({"resources": {"requests": {"cpu": cpu}}});
        let side =
            |cpu: &str| json!({"restartPolicy": "Always", "resources": {"requests": {"cpu": cpu}}});
        let total = |containers: Value, init: Value| {
            let pod = json!({"spec": {"containers": containers, "initContainers": init}});
            pod_totals(&pod, Kind::Requests, true).get("cpu").map(ToString::to_string)
        };
        assert_eq!(total(json!([c("1"), c("2")]), json!([])), Some("3".into()));
        assert_eq!(total(json!([c("1")]), json!([c("5")])), Some("5".into()));
        assert_eq!(total(json!([c("1")]), json!([side("1"), c("2")])), Some("3".into()));
        assert_eq!(total(json!([c("1")]), json!([c("2"), side("1")])), Some("2".into()));
        assert_eq!(total(json!([c("1")]), json!([side("1"), c("5")])), Some("6".into()));
        let pod_level = json!({"spec": {"resources": {"requests": {"cpu": "4"}}, "containers": [c("1")],
            "overhead": {"cpu": "100m", "memory": "10Mi"}}});
        let t = pod_totals(&pod_level, Kind::Requests, true);
        assert_eq!(pretty(&t), "cpu=4100m,memory=10Mi");
        let limits = pod_totals(&pod_level, Kind::Limits, true);
        assert!(limits.is_empty(), "{limits:?}");
    }
}
