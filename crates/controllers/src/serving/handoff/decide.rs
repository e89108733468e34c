//! The handoff's decisions, pure (no API calls), with their table tests: whether a new
//! revision differs only in its images ([`image_only`]) and the Route sends it everything
//! ([`all_traffic_to_latest`]), whether the Route still routes the old one ([`routes`]), how
//! many pods are due over a rollout duration ([`due`], [`next_due`]), whether a moved pod's
//! pull failed ([`pull_failed`]) and the one write that moves a pod ([`move_patch`]).
//! See the parent module for the protocol.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kinetic_api::knative::TrafficTarget;
use kinetic_api::kruise::cloneset::CloneSet;
use kinetic_api::kruise::{
    CONTROLLER_REVISION_HASH_LABEL, LIFECYCLE_STATE_LABEL, LifecycleState, POD_TEMPLATE_HASH_LABEL,
};
use kinetic_rollout::inplace;
use kube::ResourceExt as _;
use serde_json::{Map, Value, json};

use super::HANDOFF_FROM_ANNOTATION;
use crate::serving::ReconcileError;

/// The new images by container name when the Revision specs `old` and `new` (as JSON) differ
/// in nothing but their containers' images; `None` for any other difference (env, command,
/// resources, ports, probes, containerConcurrency, timeouts, volumes, containers added,
/// removed or renamed). An empty map: the specs are equal.
pub fn image_only(old: &Value, new: &Value) -> Option<BTreeMap<String, String>> {
    fn blanked(spec: &Value) -> (Value, BTreeMap<String, String>) {
        let mut spec = spec.clone();
        let mut images = BTreeMap::new();
        if let Some(cs) = spec.get_mut("containers").and_then(Value::as_array_mut) {
            for c in cs {
                let name = c.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
                if let Some(i) = c.get_mut("image") {
                    images.insert(name, i.as_str().unwrap_or_default().to_owned());
                    *i = Value::Null;
                }
            }
        }
        (spec, images)
    }
    let (old, old_images) = blanked(old);
    let (new, new_images) = blanked(new);
    if old != new {
        return None;
    }
    Some(new_images.into_iter().filter(|(n, i)| old_images.get(n) != Some(i)).collect())
}

/// Whether a Route's `spec.traffic` sends everything to the latest revision of
/// `configuration` (a Service's default: no traffic block, or one latest-revision target).
pub fn all_traffic_to_latest(traffic: Option<&[TrafficTarget]>, configuration: &str) -> bool {
    let Some(targets) = traffic.filter(|t| !t.is_empty()) else { return true };
    let routed: Vec<&TrafficTarget> =
        targets.iter().filter(|t| t.percent.unwrap_or(0) > 0 || targets.len() == 1).collect();
    let total: i64 = routed.iter().map(|t| t.percent.unwrap_or(100)).sum();
    total == 100
        && routed.iter().all(|t| {
            t.latest_revision == Some(true)
                && t.tag.is_none()
                && t.configuration_name.as_deref().is_none_or(|c| c == configuration)
        })
}

/// Whether a Route's `status.traffic` still sends requests to `revision`.
pub fn routes(traffic: Option<&[TrafficTarget]>, revision: &str) -> bool {
    traffic
        .into_iter()
        .flatten()
        .any(|t| t.revision_name.as_deref() == Some(revision) && t.percent.unwrap_or(0) > 0)
}

/// How many of `total` pods should have moved `elapsed` into a handoff over `duration`: all
/// without a duration or once it is over; otherwise the first at once (so the new revision
/// becomes Ready and the Route's own gradual rollout starts) and then in proportion to the
/// time elapsed, rounded up (the new revision's share of the pods leads its share of the
/// traffic, which starts at 1 %).
pub fn due(total: usize, elapsed: Duration, duration: Duration) -> usize {
    if duration.is_zero() || elapsed >= duration || total == 0 {
        return total;
    }
    let share = elapsed.as_secs_f64() / duration.as_secs_f64();
    let n = (share * total as f64).ceil() as usize;
    n.clamp(1, total)
}

/// When the next pod is due, counted from the start; `None` when all are.
pub fn next_due(total: usize, moved: usize, duration: Duration) -> Option<Duration> {
    if moved >= total || duration.is_zero() {
        return None;
    }
    // `due` reaches moved + 1 once elapsed / duration > moved / total.
    Some(duration.mul_f64(moved as f64 / total as f64))
}

/// Whether a pod's new image cannot be pulled (the kubelet's waiting reasons).
pub fn pull_failed(p: &Pod) -> bool {
    const REASONS: [&str; 4] =
        ["ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"];
    let statuses = p.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    statuses.into_iter().flatten().any(|c| {
        let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
        waiting.and_then(|w| w.reason.as_deref()).is_some_and(|r| REASONS.contains(&r))
    })
}

/// The strategic merge patch that makes `p` (owned by `from`) a pod of `to` at `target`.
pub fn move_patch(
    p: &Pod,
    from: &CloneSet,
    to: &CloneSet,
    target: &str,
    mark: Option<&str>,
) -> Result<Value, ReconcileError> {
    let meta = |cs: &CloneSet, field: &str| -> Map<String, Value> {
        let m = cs.spec.template.metadata.as_ref();
        let m = if field == "labels" {
            m.and_then(|m| m.labels.clone())
        } else {
            m.and_then(|m| m.annotations.clone())
        };
        m.unwrap_or_default().into_iter().map(|(k, v)| (k, Value::String(v))).collect()
    };
    let mut fields = Map::new();
    for field in ["labels", "annotations"] {
        let (old, mut new) = (meta(from, field), meta(to, field));
        for k in old.keys() {
            new.entry(k.clone()).or_insert(Value::Null);
        }
        fields.insert(field.to_owned(), Value::Object(new));
    }
    let images: BTreeMap<String, String> = to
        .spec
        .template
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .filter_map(|c| Some((c.name.clone(), c.image.clone()?)))
        .filter(|(n, i)| {
            p.spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .any(|c| &c.name == n && c.image.as_ref() != Some(i))
        })
        .collect();
    let spec = inplace::UpdateSpec { container_images: images, ..Default::default() };
    // Moving forward, the receiver waits for the containers to restart with the new images;
    // moving back after a failed pull (no `mark`), for nothing: the containers may never
    // have left the old image, and `Ready` still needs them ready.
    let recorded = if mark.is_some() { spec.clone() } else { inplace::UpdateSpec::default() };
    let state = inplace::new_update_state(p, &recorded, target, Timestamp::now());
    let images = inplace::batch_images(&spec, &state);
    let labels = &mut fields["labels"];
    labels[CONTROLLER_REVISION_HASH_LABEL] = json!(kinetic_rollout::pod::revision_label(target));
    labels[POD_TEMPLATE_HASH_LABEL] = json!(kinetic_rollout::pod::short_hash(target));
    labels[LIFECYCLE_STATE_LABEL] = json!(LifecycleState::Updating.as_str());
    let annotations = &mut fields["annotations"];
    annotations[kinetic_api::kruise::INPLACE_UPDATE_STATE_ANNOTATION] =
        json!(serde_json::to_string(&state).map_err(|source| ReconcileError::Encode {
            what: "an in-place update state",
            source
        })?);
    annotations[HANDOFF_FROM_ANNOTATION] = json!(mark);
    // The controller reference moves in the same write: the giver's is deleted by its merge
    // key (`$patch: delete`), the receiver's added.
    let owners = json!([
        {"$patch": "delete", "uid": from.uid().unwrap_or_default()},
        crate::cloneset::owner_ref(to),
    ]);
    fields.insert("ownerReferences".into(), owners);
    fields.insert("resourceVersion".into(), json!(p.metadata.resource_version));
    let mut body = json!({ "metadata": fields });
    if !images.is_empty() {
        body["spec"] = inplace::containers_patch(p, &images);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(image: &str, env: &str) -> Value {
        json!({"containerConcurrency": 0, "timeoutSeconds": 300, "containers": [
            {"name": "user-container", "image": image, "env": [{"name": "X", "value": env}]}]})
    }

    #[test]
    fn only_an_image_change_is_a_handoff() {
        type Case = (&'static str, Value, Value, Option<&'static [(&'static str, &'static str)]>);
        let cases: [Case; 5] = [
            ("image", spec("a:1", "x"), spec("a:2", "x"), Some(&[("user-container", "a:2")])),
            ("same", spec("a:1", "x"), spec("a:1", "x"), Some(&[])),
            ("env", spec("a:1", "x"), spec("a:2", "y"), None),
            (
                "concurrency",
                spec("a:1", "x"),
                {
                    let mut s = spec("a:1", "x");
                    s["containerConcurrency"] = json!(1);
                    s
                },
                None,
            ),
            (
                "renamed",
                spec("a:1", "x"),
                {
                    let mut s = spec("a:2", "x");
                    s["containers"][0]["name"] = json!("other");
                    s
                },
                None,
            ),
        ];
        for (what, old, new, want) in cases {
            let want = want.map(|w| {
                w.iter()
                    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                    .collect::<BTreeMap<_, _>>()
            });
            assert_eq!(image_only(&old, &new), want, "{what}");
        }
    }

    fn target(latest: bool, percent: Option<i64>, tag: Option<&str>) -> TrafficTarget {
        TrafficTarget {
            latest_revision: Some(latest),
            percent,
            tag: tag.map(str::to_owned),
            revision_name: (!latest).then(|| "r-00001".to_owned()),
            ..TrafficTarget::default()
        }
    }

    #[test]
    fn only_a_route_sending_everything_to_the_latest_revision_hands_over() {
        let cases: [(&str, Option<Vec<TrafficTarget>>, bool); 6] = [
            ("no traffic block", None, true),
            ("latest 100", Some(vec![target(true, Some(100), None)]), true),
            ("latest, percent left out", Some(vec![target(true, None, None)]), true),
            (
                "split",
                Some(vec![target(true, Some(50), None), target(false, Some(50), None)]),
                false,
            ),
            ("pinned", Some(vec![target(false, Some(100), None)]), false),
            ("tagged", Some(vec![target(true, Some(100), Some("x"))]), false),
        ];
        for (what, traffic, want) in cases {
            assert_eq!(all_traffic_to_latest(traffic.as_deref(), "r"), want, "{what}");
        }
        let other = TrafficTarget {
            configuration_name: Some("other".into()),
            ..target(true, Some(100), None)
        };
        assert!(!all_traffic_to_latest(Some(&[other]), "r"));
    }

    #[test]
    fn pods_move_with_the_rollout_duration() {
        let s = Duration::from_secs;
        // (total, elapsed, duration) → due
        let cases = [
            (3, s(0), s(0), 3),
            (3, s(0), s(30), 1),
            (3, s(5), s(30), 1),
            (3, s(11), s(30), 2),
            (3, s(21), s(30), 3),
            (3, s(30), s(30), 3),
            (1, s(0), s(30), 1),
            (4, s(60), s(30), 4),
            (0, s(1), s(30), 0),
        ];
        for (total, elapsed, duration, want) in cases {
            assert_eq!(due(total, elapsed, duration), want, "{total} {elapsed:?} {duration:?}");
        }
        assert_eq!(next_due(3, 1, s(30)), Some(s(10)));
        assert_eq!(next_due(3, 3, s(30)), None);
        assert_eq!(next_due(3, 1, s(0)), None);
    }

    #[test]
    fn a_route_routes_a_revision_only_with_a_share() {
        let t = |r: &str, p| TrafficTarget {
            revision_name: Some(r.into()),
            percent: Some(p),
            ..TrafficTarget::default()
        };
        assert!(routes(Some(&[t("a", 1), t("b", 99)]), "a"));
        assert!(!routes(Some(&[t("a", 0), t("b", 100)]), "a"));
        assert!(!routes(None, "a"));
    }

    fn pod_waiting(reason: Option<&str>) -> Pod {
        let state = match reason {
            Some(r) => json!({"waiting": {"reason": r}}),
            None => json!({"running": {}}),
        };
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "status": {"containerStatuses": [{"name": "c", "image": "i", "imageID": "",
                "ready": false, "restartCount": 0, "state": state}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_moved_pod_failed_only_when_its_new_image_cannot_be_pulled() {
        let cases = [
            (Some("ErrImagePull"), true),
            (Some("ImagePullBackOff"), true),
            (Some("InvalidImageName"), true),
            (Some("ErrImageNeverPull"), true),
            (Some("ContainerCreating"), false),
            (Some("CrashLoopBackOff"), false),
            (None, false),
        ];
        for (reason, want) in cases {
            assert_eq!(pull_failed(&pod_waiting(reason)), want, "{reason:?}");
        }
        let bare: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}})).unwrap();
        assert!(!pull_failed(&bare), "no status yet");
    }

    fn cloneset(name: &str, uid: &str, image: &str, revision_label: &str) -> CloneSet {
        serde_json::from_value(json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
            "metadata": {"name": name, "namespace": "default", "uid": uid},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web",
                                                          "serving.knative.dev/revision": revision_label},
                                               "annotations": {"old-only": "x"}},
                                  "spec": {"containers": [{"name": "user-container", "image": image}]}}},
        }))
        .unwrap()
    }

    #[test]
    fn a_move_relabels_reowns_and_reimages_the_pod_in_one_conditional_write() {
        let from = cloneset("web-00001-deployment", "uid-1", "a:1", "web-00001");
        let mut to = cloneset("web-00002-deployment", "uid-2", "a:2", "web-00002");
        if let Some(m) = to.spec.template.metadata.as_mut() {
            m.annotations = None;
        }
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-00001-deployment-abcde", "resourceVersion": "42"},
            "spec": {"containers": [{"name": "user-container", "image": "a:1"}]},
        }))
        .unwrap();
        // (mark, the pod's old-revision mark in the patch, whether the state waits for the images)
        for (mark, want_mark, want_images) in
            [(Some("web-00001"), json!("web-00001"), true), (None, Value::Null, false)]
        {
            let body = move_patch(&p, &from, &to, "web-00002-deployment-6d8f7c9b4", mark).unwrap();
            let m = &body["metadata"];
            assert_eq!(m["resourceVersion"], "42", "a conditional write");
            assert_eq!(m["labels"]["serving.knative.dev/revision"], "web-00002");
            assert_eq!(
                m["labels"][CONTROLLER_REVISION_HASH_LABEL],
                "web-00002-deployment-6d8f7c9b4"
            );
            assert_eq!(m["labels"][POD_TEMPLATE_HASH_LABEL], "6d8f7c9b4");
            assert_eq!(m["labels"][LIFECYCLE_STATE_LABEL], "Updating");
            assert_eq!(m["annotations"]["old-only"], Value::Null, "the giver's annotation goes");
            assert_eq!(m["annotations"][HANDOFF_FROM_ANNOTATION], want_mark);
            assert_eq!(m["ownerReferences"][0], json!({"$patch": "delete", "uid": "uid-1"}));
            assert_eq!(m["ownerReferences"][1]["uid"], "uid-2");
            assert_eq!(m["ownerReferences"][1]["controller"], true);
            assert_eq!(
                body["spec"]["containers"],
                json!([{"name": "user-container", "image": "a:2"}])
            );
            let state = m["annotations"][kinetic_api::kruise::INPLACE_UPDATE_STATE_ANNOTATION]
                .as_str()
                .unwrap();
            assert_eq!(state.contains(r#""updateImages":true"#), want_images, "{state}");
        }
    }
}
