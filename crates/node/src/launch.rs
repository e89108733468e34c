//! Container launch priority (OpenKruise's `apps.kruise.io/container-launch-priority: Ordered`
//! pod annotation and the `KRUISE_CONTAINER_PRIORITY` container env): a pod's app containers
//! start highest priority first, and a container starts only once every container of a higher
//! priority is ready.
//!
//! Upstream does this with a webhook that gives each container an env from a per-pod
//! "barrier" ConfigMap key, so kubelet fails the container with `CreateContainerConfigError`
//! until the launch-priority controller adds the key once the higher-priority containers are
//! ready (`pkg/controller/containerlaunchpriority`). The agent orders the starts itself: the
//! waiting container stays `ContainerCreating`, and the pod needs no ConfigMap. As upstream,
//! the order applies to the first start only; restarts and in-place updates do not wait (the
//! CloneSet controller batches in-place updates by the same priorities).

use k8s_openapi::api::core::v1::Pod;
use kinetic_api::kruise::container_priority;

/// The app containers of `pod` in the order to start them: by priority, highest first, those
/// without a priority (which wait for nothing) before all; spec order among equals.
pub fn start_order(pod: &Pod) -> Vec<String> {
    let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    let mut order: Vec<(Option<i32>, &str)> = containers
        .iter()
        .enumerate()
        .map(|(i, c)| (container_priority(pod, i), c.name.as_str()))
        .collect();
    order.sort_by_key(|(p, _)| std::cmp::Reverse(p.map_or(i64::MAX, i64::from)));
    order.into_iter().map(|(_, n)| n.to_owned()).collect()
}

/// The app containers that must be ready before `name` first starts: those with a higher
/// priority. Empty for a container without a priority.
pub fn waits_for(pod: &Pod, name: &str) -> Vec<String> {
    let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    let Some(own) =
        containers.iter().position(|c| c.name == name).and_then(|i| container_priority(pod, i))
    else {
        return Vec::new();
    };
    containers
        .iter()
        .enumerate()
        .filter(|(i, _)| container_priority(pod, *i).is_some_and(|p| p > own))
        .map(|(_, c)| c.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(annotation: Option<&str>, prios: [Option<&str>; 3]) -> Pod {
        let containers: Vec<_> = ["a", "b", "c"]
            .iter()
            .zip(prios)
            .map(|(n, p)| match p {
                Some(v) => {
                    json!({"name": n, "env": [{"name": "KRUISE_CONTAINER_PRIORITY", "value": v}]})
                }
                None => json!({"name": n}),
            })
            .collect();
        let annotations = annotation
            .map(|v| json!({"apps.kruise.io/container-launch-priority": v}))
            .unwrap_or(json!({}));
        serde_json::from_value(json!({
            "metadata": {"name": "p", "annotations": annotations},
            "spec": {"containers": containers},
        }))
        .expect("a pod")
    }

    #[test]
    fn ordered_starts_in_spec_order_each_waiting_for_the_ones_before() {
        let p = pod(Some("Ordered"), [None, None, None]);
        assert_eq!(start_order(&p), ["a", "b", "c"]);
        assert_eq!(waits_for(&p, "a"), Vec::<String>::new());
        assert_eq!(waits_for(&p, "c"), ["a", "b"]);
    }

    #[test]
    fn env_priority_orders_highest_first_and_no_priority_waits_for_nothing() {
        let p = pod(None, [Some("1"), None, Some("10")]);
        assert_eq!(start_order(&p), ["b", "c", "a"]);
        assert_eq!(waits_for(&p, "a"), ["c"]);
        assert_eq!(waits_for(&p, "b"), Vec::<String>::new());
        assert_eq!(waits_for(&p, "c"), Vec::<String>::new());
        // Equal priorities do not wait for each other.
        let p = pod(None, [Some("5"), Some("5"), Some("5")]);
        assert_eq!(start_order(&p), ["a", "b", "c"]);
        assert_eq!(waits_for(&p, "c"), Vec::<String>::new());
        // `Ordered` wins over the env, as upstream's webhook does.
        let p = pod(Some("Ordered"), [Some("1"), Some("5"), Some("10")]);
        assert_eq!(start_order(&p), ["a", "b", "c"]);
        assert_eq!(waits_for(&p, "b"), ["a"]);
    }
}
