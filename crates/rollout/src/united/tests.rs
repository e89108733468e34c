//! Upstream's `allocator_test.go` cases (`TestScaleReplicas`, `TestSpecifyValidReplicas`,
//! `TestSpecifyInvalidReplicas`, `TestCapacityAllocator`, `TestAdaptiveElasticAllocator`,
//! `TestProtectingRunningPodsAdaptive`), plus the percentage rounding and the Adaptive
//! subset state.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kinetic_api::kruise::uniteddeployment::{ScheduleStrategy, UnitedDeploymentSpec};
use serde_json::json;

use super::*;

/// Upstream's `specificAllocator.String()` of the allocation.
fn specific(infos: &[(&str, i32)], replicas: i32, specified: &[(&str, i32)]) -> String {
    let infos: Vec<(String, i32)> = infos.iter().map(|(n, r)| ((*n).to_owned(), *r)).collect();
    let specified: BTreeMap<String, i32> =
        specified.iter().map(|(n, r)| ((*n).to_owned(), *r)).collect();
    match allocate_specific(&infos, replicas, &specified) {
        Ok(v) => v.iter().map(|(n, r)| format!(" {n} -> {r};")).collect(),
        Err(e) => format!("error: {e}"),
    }
}

const T4: [(&str, i32); 4] = [("t1", 1), ("t2", 4), ("t3", 2), ("t4", 2)];

#[test]
fn scale_replicas() {
    assert_eq!(specific(&T4, 5, &[]), " t1 -> 1; t3 -> 1; t4 -> 1; t2 -> 2;");
    assert_eq!(specific(&[("t1", 2)], 0, &[]), " t1 -> 0;");
    assert_eq!(specific(&T4, 17, &[]), " t1 -> 4; t3 -> 4; t4 -> 4; t2 -> 5;");
    let t = [("t1", 2), ("t2", 4), ("t3", 2), ("t4", 2)];
    assert_eq!(specific(&t, 9, &[]), " t1 -> 2; t3 -> 2; t4 -> 2; t2 -> 3;");
    assert_eq!(specific(&[("t1", 0), ("t2", 10)], 19, &[]), " t1 -> 9; t2 -> 10;");
    assert_eq!(specific(&[("t1", 0), ("t2", 10)], 21, &[]), " t1 -> 10; t2 -> 11;");
}

#[test]
fn specify_valid_replicas() {
    assert_eq!(specific(&T4, 27, &[("t1", 4), ("t3", 4)]), " t1 -> 4; t3 -> 4; t4 -> 9; t2 -> 10;");
    let t = [("t1", 2), ("t2", 4), ("t3", 2), ("t4", 2)];
    assert_eq!(specific(&t, 8, &[("t1", 4), ("t3", 4)]), " t2 -> 0; t4 -> 0; t1 -> 4; t3 -> 4;");
    assert_eq!(
        specific(&t, 16, &[("t1", 4), ("t2", 4), ("t3", 4), ("t4", 4)]),
        " t1 -> 4; t2 -> 4; t3 -> 4; t4 -> 4;"
    );
    let t = [("t1", 4), ("t2", 2), ("t3", 2), ("t4", 2)];
    assert_eq!(
        specific(&t, 10, &[("t1", 1), ("t2", 2), ("t3", 3)]),
        " t1 -> 1; t2 -> 2; t3 -> 3; t4 -> 4;"
    );
    let all = [("t1", 1), ("t2", 2), ("t3", 3), ("t4", 4)];
    assert_eq!(specific(&t, 10, &all), " t1 -> 1; t2 -> 2; t3 -> 3; t4 -> 4;");
    assert_eq!(specific(&t, -1, &all), " t1 -> 1; t2 -> 2; t3 -> 3; t4 -> 4;");
}

#[test]
fn specify_invalid_replicas() {
    let t = [("t1", 10), ("t2", 4)];
    assert_eq!(
        specific(&t, 14, &[("t1", 6), ("t2", 6)]),
        "error: specified subsets' replica (12) is less than UnitedDeployment replica (14)"
    );
    assert_eq!(
        specific(&t, 14, &[("t1", 10), ("t2", 11)]),
        "error: specified subsets' replica (21) is greater than UnitedDeployment replica (14)"
    );
    assert_eq!(
        specific(&t, -1, &[("t1", 10)]),
        "error: all subsets must be specified when UnitedDeployment replica is unspecified"
    );
}

fn bounds(min: &[i32], max: &[i32]) -> Vec<Bounds> {
    min.iter()
        .zip(max)
        .enumerate()
        .map(|(i, (min, max))| Bounds {
            name: format!("subset-{i}"),
            min: Some(IntOrString::Int(*min)),
            max: (*max != -1).then_some(IntOrString::Int(*max)),
        })
        .collect()
}

fn values(m: &BTreeMap<String, i32>, n: usize) -> Vec<i32> {
    (0..n).map(|i| m[&format!("subset-{i}")]).collect()
}

#[test]
fn capacity_allocator() {
    let cases = [
        ("sum_all_min_replicas == replicas", 10, [2, 2, 2, 2, 2], [2, 2, 2, 2, 2]),
        ("sum_all_min_replicas < replicas", 14, [2, 2, 2, 2, 2], [5, 3, 2, 2, 2]),
        ("sum_all_min_replicas > replicas", 5, [2, 2, 2, 2, 2], [2, 2, 1, 0, 0]),
    ];
    for (name, replicas, min, want) in cases {
        let b = bounds(&min, &[5, 5, 5, 5, -1]);
        let got = allocate_elastic(replicas, &b, &ScheduleStrategy::default(), None).unwrap();
        assert_eq!(values(&got, 5), want, "{name}");
    }
}

fn adaptive() -> ScheduleStrategy {
    ScheduleStrategy { type_: Some("Adaptive".into()), adaptive: None }
}

/// Subset 1 `[min, max]` unschedulable with `pending` pods of `max` running; subset 2
/// unbounded and not created yet.
#[test]
fn adaptive_elastic_allocator() {
    let cases = [
        ("5 pending pods > maxReplicas -> 0, 10", 5, (0, 10)),
        ("4 pending pods = maxReplicas -> 0, 10", 4, (0, 10)),
        ("3 pending pods < maxReplicas -> 1, 9", 3, (1, 9)),
        ("2 pending pods = minReplicas -> 2, 8", 2, (2, 8)),
        ("1 pending pods < minReplicas -> 3, 7", 1, (3, 7)),
        ("no pending pods -> 4, 6", 0, (4, 6)),
    ];
    for (name, pending, want) in cases {
        let mut b = bounds(&[2], &[4]);
        b.push(Bounds { name: "subset-1".into(), min: None, max: None });
        let existing = BTreeMap::from([(
            "subset-0".to_owned(),
            SubsetState {
                spec_replicas: 2,
                status_replicas: 4,
                pending_pods: pending,
                unschedulable: true,
            },
        )]);
        let got = allocate_elastic(10, &b, &adaptive(), Some(&existing)).unwrap();
        assert_eq!((got["subset-0"], got["subset-1"]), want, "{name}");
    }
}

#[test]
fn protecting_running_pods_adaptive() {
    // (subset1 running, subset2 running) with subset1 in [2, 4], replicas = their sum.
    let cases =
        [((1, 1), (2, 0)), ((2, 1), (2, 1)), ((1, 2), (2, 1)), ((0, 4), (2, 2)), ((3, 1), (3, 1))];
    let run = |min: i32, max: i32, r1: i32, r2: i32| {
        let mut b = bounds(&[min], &[max]);
        b.push(Bounds { name: "subset-1".into(), min: None, max: None });
        let existing = BTreeMap::from([
            ("subset-0".to_owned(), SubsetState { status_replicas: r1, ..Default::default() }),
            ("subset-1".to_owned(), SubsetState { status_replicas: r2, ..Default::default() }),
        ]);
        allocate_elastic(r1 + r2, &b, &adaptive(), Some(&existing))
    };
    for ((r1, r2), want) in cases {
        let got = run(2, 4, r1, r2).unwrap();
        assert_eq!((got["subset-0"], got["subset-1"]), want, "running {r1},{r2}");
    }
    assert_eq!(run(4, 2, 0, 0), Err(AllocError::MinAboveMax { index: 0 }));
}

#[test]
fn percentages_round_half_up_and_bad_values_say_why() {
    let p = |ud: i32, s: &str| parse_subset_replicas(ud, &IntOrString::String(s.into()));
    assert_eq!(p(6, "50%"), Ok(3));
    assert_eq!(p(5, "50%"), Ok(3));
    assert_eq!(p(5, "30%"), Ok(2));
    assert_eq!(p(10, "0%"), Ok(0));
    assert_eq!(
        p(-1, "10%").unwrap_err(),
        "subsetReplicas (10%) should not be string when unitedDeployment replicas is empty"
    );
    assert!(p(10, "101%").unwrap_err().contains("should be in range [0, 100]"));
    assert!(p(10, "ten").unwrap_err().contains("only support integer value or percentage"));
    assert!(parse_subset_replicas(1, &IntOrString::Int(-1)).unwrap_err().contains("less than 0"));
}

fn spec(v: serde_json::Value) -> UnitedDeploymentSpec {
    serde_json::from_value(v).unwrap()
}

/// The manual's example: 6 replicas, subset-a 1, subset-b 50%, subset-c the rest.
#[test]
fn manual_example_allocates_one_three_two() {
    let s = spec(json!({
        "replicas": 6, "selector": {},
        "topology": {"subsets": [
            {"name": "subset-a", "replicas": 1},
            {"name": "subset-b", "replicas": "50%"},
            {"name": "subset-c"},
        ]},
        "updateStrategy": {"type": "Manual", "manualUpdate": {"partitions": {"subset-a": 3, "subset-b": 1}}},
    }));
    let got = allocate(&s, &BTreeMap::new()).unwrap();
    assert_eq!(
        got,
        BTreeMap::from([("subset-a".into(), 1), ("subset-b".into(), 3), ("subset-c".into(), 2)])
    );
    // A partition is capped at the subset's replicas.
    let parts = next_partitions(&s, &got);
    assert_eq!(
        parts,
        BTreeMap::from([("subset-a".into(), 1), ("subset-b".into(), 1), ("subset-c".into(), 0)])
    );
}

/// MaxReplicas as the manual describes it: subsets fill in order, scale down in reverse.
#[test]
fn max_replicas_fill_in_order() {
    let s = |n: i32| {
        spec(json!({"replicas": n, "selector": {}, "topology": {"subsets": [
            {"name": "normal", "maxReplicas": 4}, {"name": "elastic"}]}}))
    };
    let alloc = |n| allocate(&s(n), &BTreeMap::new()).unwrap();
    assert_eq!((alloc(3)["normal"], alloc(3)["elastic"]), (3, 0));
    assert_eq!((alloc(5)["normal"], alloc(5)["elastic"]), (4, 1));
    assert_eq!((alloc(9)["normal"], alloc(9)["elastic"]), (4, 5));
}

fn pending_pod(created: Timestamp, unschedulable: bool) -> Pod {
    let conds = if unschedulable {
        json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}])
    } else {
        json!([])
    };
    serde_json::from_value(json!({
        "metadata": {"name": "p", "creationTimestamp": created.to_string()},
        "spec": {"containers": []},
        "status": {"phase": "Pending", "conditions": conds},
    }))
    .unwrap()
}

#[test]
fn adaptive_subset_becomes_unschedulable_then_recovers() {
    let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let strategy: ScheduleStrategy = serde_json::from_value(json!({
        "type": "Adaptive", "adaptive": {"rescheduleCriticalSeconds": 10, "unschedulableLastSeconds": 60}
    }))
    .unwrap();
    let secs = |s: i64| t0 + jiff::SignedDuration::from_secs(s);
    let stuck = pending_pod(t0, true);
    let waiting = pending_pod(t0, false);
    // Before the critical time: schedulable, look again when it passes.
    let v = adaptive_subset(None, 0, 1, &[&stuck], &strategy, secs(4));
    assert!(!v.unschedulable);
    assert_eq!(v.requeue, Some(Duration::from_secs(6)));
    // A pod Pending for lack of a node image or volume does not count.
    let v = adaptive_subset(None, 0, 1, &[&waiting], &strategy, secs(40));
    assert!(!v.unschedulable && v.requeue.is_none());
    // Past it: unschedulable, condition False since now.
    let v = adaptive_subset(None, 0, 1, &[&stuck], &strategy, secs(11));
    assert!(v.unschedulable);
    assert_eq!(v.pending_pods, 1);
    let cond = v.condition.unwrap();
    assert_eq!((cond.status, cond.reason, cond.since), (false, "reschedule", secs(11)));
    // Its pods gone, it stays unschedulable for unschedulableLastSeconds ...
    let v = adaptive_subset(Some(&cond), 0, 0, &[], &strategy, secs(50));
    assert!(v.unschedulable && v.condition.is_none());
    assert_eq!(v.requeue, Some(Duration::from_secs(21)));
    // ... then recovers.
    let v = adaptive_subset(Some(&cond), 0, 0, &[], &strategy, secs(72));
    assert!(!v.unschedulable);
    assert_eq!(v.condition.map(|c| (c.status, c.reason)), Some((true, "recover")));
}
