//! The disruption controller's arithmetic, as pure functions (kube-controller-manager's
//! `pkg/controller/disruption/disruption.go`: `getExpectedPodCount`, `buildDisruptedPodMap`,
//! `countHealthyPods`, `updatePdbStatus`), with table tests after upstream's
//! `disruption_test.go`.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kinetic_api::kruise::podunavailablebudget::scaled;

/// Upstream's `DeletionTimeout`: a pod recorded in `disruptedPods` that is not deleting after
/// this long counts again.
pub const DELETION_TIMEOUT: SignedDuration = SignedDuration::from_secs(120);

/// What the controller knows of one selected pod.
#[derive(Debug, Clone, Default)]
pub struct PodInfo {
    pub name: String,
    pub deleting: bool,
    pub ready: bool,
    /// The uid of the pod's controller; `None` for an unmanaged pod.
    pub controller: Option<String>,
}

/// The result of `getExpectedPodCount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub expected_count: i32,
    pub desired_healthy: i32,
    /// Pods without a controller, when the count needed the controllers' scale.
    pub unmanaged: Vec<String>,
}

/// `getExpectedPodCount`: with `maxUnavailable`, the sum of the controllers' scales less it
/// (a percentage rounded up); with an integer `minAvailable`, it against the number of pods;
/// with a percentage, it of the scales (rounded up). `scale` gives a controller's replicas
/// by its uid (`None`: no controller found, an error as upstream).
///
/// # Errors
/// A pod's controller has no known scale (upstream's `found no controllers for pod`), or a
/// bound is not a percentage.
pub fn expected_pod_count(
    max_unavailable: Option<&IntOrString>,
    min_available: Option<&IntOrString>,
    pods: &[PodInfo],
    scale: impl Fn(&str) -> Option<i32>,
) -> Result<Expected, String> {
    let expected_scale = || -> Result<(i32, Vec<String>), String> {
        let mut seen = BTreeMap::new();
        let mut unmanaged = Vec::new();
        for p in pods {
            let Some(uid) = &p.controller else {
                unmanaged.push(p.name.clone());
                continue;
            };
            if seen.contains_key(uid) {
                continue;
            }
            let s =
                scale(uid).ok_or_else(|| format!("found no controllers for pod {:?}", p.name))?;
            seen.insert(uid.clone(), s);
        }
        Ok((seen.values().sum(), unmanaged))
    };
    let bad = |v: &IntOrString| format!("invalid value for IntOrString: invalid value {v:?}");
    if let Some(m) = max_unavailable {
        let (expected, unmanaged) = expected_scale()?;
        let max = scaled(m, expected, true).ok_or_else(|| bad(m))?;
        return Ok(Expected {
            expected_count: expected,
            desired_healthy: (expected - max).max(0),
            unmanaged,
        });
    }
    match min_available {
        Some(IntOrString::Int(n)) => Ok(Expected {
            expected_count: i32::try_from(pods.len()).unwrap_or(i32::MAX),
            desired_healthy: *n,
            unmanaged: Vec::new(),
        }),
        Some(m @ IntOrString::String(_)) => {
            let (expected, unmanaged) = expected_scale()?;
            let min = scaled(m, expected, true).ok_or_else(|| bad(m))?;
            Ok(Expected { expected_count: expected, desired_healthy: min, unmanaged })
        }
        None => Ok(Expected { expected_count: 0, desired_healthy: 0, unmanaged: Vec::new() }),
    }
}

/// `buildDisruptedPodMap`: the recorded disruptions still pending (the pod is not deleting yet
/// and was recorded less than [`DELETION_TIMEOUT`] ago), when to look again, and the pods
/// whose expected deletion never came (upstream's `NotDeleted` events).
pub fn disrupted_pods(
    pods: &[PodInfo],
    recorded: &BTreeMap<String, Timestamp>,
    now: Timestamp,
) -> (BTreeMap<String, Timestamp>, Option<Timestamp>, Vec<String>) {
    let mut keep = BTreeMap::new();
    let mut recheck: Option<Timestamp> = None;
    let mut expired = Vec::new();
    for p in pods.iter().filter(|p| !p.deleting) {
        let Some(at) = recorded.get(&p.name) else { continue };
        let expected_deletion = *at + DELETION_TIMEOUT;
        if expected_deletion < now {
            expired.push(p.name.clone());
        } else {
            recheck = Some(recheck.map_or(expected_deletion, |r| r.min(expected_deletion)));
            keep.insert(p.name.clone(), *at);
        }
    }
    (keep, recheck, expired)
}

/// `countHealthyPods`: ready pods neither deleting nor expected to be deleted soon.
pub fn count_healthy(
    pods: &[PodInfo],
    disrupted: &BTreeMap<String, Timestamp>,
    now: Timestamp,
) -> i32 {
    let n = pods
        .iter()
        .filter(|p| !p.deleting)
        .filter(|p| disrupted.get(&p.name).is_none_or(|at| *at + DELETION_TIMEOUT <= now))
        .filter(|p| p.ready)
        .count();
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// `updatePdbStatus`'s rule: no disruption while no pod is expected (a budget whose first
/// pods appear before its status is computed stays safe), never below 0.
pub fn disruptions_allowed(current_healthy: i32, desired_healthy: i32, expected: i32) -> i32 {
    let allowed = current_healthy - desired_healthy;
    if expected <= 0 || allowed <= 0 { 0 } else { allowed }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: bool, controller: Option<&str>) -> PodInfo {
        PodInfo {
            name: name.into(),
            deleting: false,
            ready,
            controller: controller.map(str::to_owned),
        }
    }

    fn int(n: i32) -> IntOrString {
        IntOrString::Int(n)
    }

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    /// One row: bounds, pods, controller scales → (expected, desired, allowed).
    fn status(
        max: Option<IntOrString>,
        min: Option<IntOrString>,
        pods: &[PodInfo],
        scales: &[(&str, i32)],
    ) -> Result<(i32, i32, i32), String> {
        let scale = |uid: &str| scales.iter().find(|(u, _)| *u == uid).map(|(_, s)| *s);
        let e = expected_pod_count(max.as_ref(), min.as_ref(), pods, scale)?;
        let now = Timestamp::UNIX_EPOCH;
        let healthy = count_healthy(pods, &BTreeMap::new(), now);
        Ok((
            e.expected_count,
            e.desired_healthy,
            disruptions_allowed(healthy, e.desired_healthy, e.expected_count),
        ))
    }

    /// Upstream's cases: `TestNoSelector`/`TestUnavailable` (integer minAvailable against the
    /// pods there are), `TestIntegerMaxUnavailable`, `TestReplicaSet` (percentages of the
    /// controller's scale, rounded up), `TestNakedPod` (unmanaged pods do not count in the
    /// scale), `TestReplicationController` and the missing-controller error.
    #[test]
    fn status_follows_upstreams_cases() {
        let rs = Some("rs");
        // TestNoSelector: minAvailable 3, no pods, then one ready pod.
        assert_eq!(status(None, Some(int(3)), &[], &[]), Ok((0, 3, 0)));
        assert_eq!(status(None, Some(int(3)), &[pod("a", true, None)], &[]), Ok((1, 3, 0)));
        // TestUnavailable: minAvailable 3 with four ready pods allows one, a fifth two.
        let four: Vec<PodInfo> = (0..4).map(|i| pod(&format!("p{i}"), true, None)).collect();
        assert_eq!(status(None, Some(int(3)), &four, &[]), Ok((4, 3, 1)));
        let mut five = four.clone();
        five.push(pod("p4", true, None));
        assert_eq!(status(None, Some(int(3)), &five, &[]), Ok((5, 3, 2)));
        // One of them not ready: back to one.
        five[0].ready = false;
        assert_eq!(status(None, Some(int(3)), &five, &[]), Ok((5, 3, 1)));
        // TestIntegerMaxUnavailable: maxUnavailable 1 over a ReplicaSet of 2 with 2 ready pods.
        let two = [pod("a", true, rs), pod("b", true, rs)];
        assert_eq!(status(Some(int(1)), None, &two, &[("rs", 2)]), Ok((2, 1, 1)));
        // ... of which one is not ready: none.
        let one_down = [pod("a", true, rs), pod("b", false, rs)];
        assert_eq!(status(Some(int(1)), None, &one_down, &[("rs", 2)]), Ok((2, 1, 0)));
        // TestReplicaSet: minAvailable 20% of a ReplicaSet of 10 with one pod: desired 2.
        assert_eq!(
            status(None, Some(pct("20%")), &[pod("a", true, rs)], &[("rs", 10)]),
            Ok((10, 2, 0))
        );
        // maxUnavailable 25% of 10 (3, rounded up): desired 7.
        let ten: Vec<PodInfo> = (0..10).map(|i| pod(&format!("p{i}"), true, rs)).collect();
        assert_eq!(status(Some(pct("25%")), None, &ten, &[("rs", 10)]), Ok((10, 7, 3)));
        // maxUnavailable 100%: everything may go.
        assert_eq!(status(Some(pct("100%")), None, &ten, &[("rs", 10)]), Ok((10, 0, 10)));
        // TestNakedPod: a percentage over unmanaged pods: expected 0, nothing allowed.
        let naked = [pod("a", true, None)];
        let e = expected_pod_count(None, Some(&pct("28%")), &naked, |_| None).unwrap();
        assert_eq!(
            e,
            Expected { expected_count: 0, desired_healthy: 0, unmanaged: vec!["a".into()] }
        );
        assert_eq!(disruptions_allowed(1, 0, 0), 0, "no pods expected: no disruption");
        // A controller whose scale cannot be found is an error (status fails safe).
        let err = status(Some(int(1)), None, &[pod("a", true, Some("gone"))], &[]).unwrap_err();
        assert_eq!(err, "found no controllers for pod \"a\"");
        // Two controllers add up: 3 + 2.
        let mixed = [pod("a", true, rs), pod("b", true, Some("ss"))];
        assert_eq!(status(Some(int(1)), None, &mixed, &[("rs", 3), ("ss", 2)]), Ok((5, 4, 0)));
    }

    /// `TestUpdateDisruptedPods`-style: a recorded pod not yet deleting keeps counting as
    /// disrupted until the deletion timeout, then counts again; a deleting pod leaves the map.
    #[test]
    fn disrupted_pods_expire_after_the_deletion_timeout() {
        let t0 = Timestamp::UNIX_EPOCH + SignedDuration::from_secs(1000);
        let mut pods = vec![pod("a", true, None), pod("b", true, None), pod("c", true, None)];
        pods[2].deleting = true;
        let recorded: BTreeMap<String, Timestamp> = [
            ("a".to_owned(), t0),
            ("b".to_owned(), t0 - SignedDuration::from_secs(200)),
            ("c".to_owned(), t0),
        ]
        .into();
        let (keep, recheck, expired) = disrupted_pods(&pods, &recorded, t0);
        assert_eq!(keep.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(recheck, Some(t0 + DELETION_TIMEOUT));
        assert_eq!(expired, ["b"]);
        // a is about to be deleted: not healthy; b counts again; c is deleting.
        assert_eq!(count_healthy(&pods, &keep, t0), 1);
        assert_eq!(count_healthy(&pods, &keep, t0 + DELETION_TIMEOUT), 2);
    }
}
