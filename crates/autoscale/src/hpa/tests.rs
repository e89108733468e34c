//! Table tests named after the behaviours they pin; the replica cases are upstream's
//! `replica_calculator_test.go` cases where one exists (named in the comment).

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

const S: fn(u64) -> Duration = Duration::from_secs;

/// A pod that has been Running and Ready for long (past the CPU initialisation period).
fn pod(name: &str, request: i64) -> Pod {
    Pod {
        name: name.into(),
        phase: Phase::Running,
        deleting: false,
        ready: Some(Ready { status: true, last_transition: S(10) }),
        start_time: Some(S(0)),
        request: Ok(request),
    }
}

const NOW: Duration = Duration::from_secs(3600);

fn metrics(values: &[(&str, i64)]) -> BTreeMap<String, Metric> {
    values
        .iter()
        .map(|(n, v)| ((*n).to_owned(), Metric { value: *v, timestamp: NOW, window: S(30) }))
        .collect()
}

fn cpu(current: i32, target: i32, pods: &[Pod], m: &[(&str, i64)]) -> Proposal {
    resource_replicas(current, Target::Utilization(target), "cpu", pods, &metrics(m), NOW).unwrap()
}

#[test]
fn scale_up_by_the_usage_ratio() {
    // TestReplicaCalcScaleUp: 50 % used against a 30 % target on 3 pods → 5.
    let pods = [pod("a", 1000), pod("b", 1000), pod("c", 1000)];
    let p = cpu(3, 30, &pods, &[("a", 300), ("b", 500), ("c", 700)]);
    assert_eq!((p.replicas, p.utilization, p.average), (5, Some(50), 500));
}

#[test]
fn scale_down_by_the_usage_ratio() {
    // TestReplicaCalcScaleDown: 28 % against 50 % on 5 pods → 3.
    let pods: Vec<Pod> = ["a", "b", "c", "d", "e"].iter().map(|n| pod(n, 1000)).collect();
    let p = cpu(5, 50, &pods, &[("a", 100), ("b", 300), ("c", 500), ("d", 250), ("e", 250)]);
    assert_eq!((p.replicas, p.utilization), (3, Some(28)));
}

#[test]
fn tolerance_keeps_the_current_count() {
    // TestReplicaCalcTolerance: 102 % of requests against 100 % → no change.
    let pods = [pod("a", 900), pod("b", 1000), pod("c", 1100)];
    let p = cpu(3, 100, &pods, &[("a", 1010), ("b", 1030), ("c", 1020)]);
    assert_eq!((p.replicas, p.utilization), (3, Some(102)));
    // Just outside the tolerance it scales.
    let p = cpu(3, 100, &pods, &[("a", 1200), ("b", 1200), ("c", 1200)]);
    assert_eq!(p.replicas, 4);
}

#[test]
fn not_ready_pods_count_as_zero_on_a_scale_up() {
    // TestReplicaCalcScaleUpUnreadyLessScale: the unready pod's metric is dropped and it counts
    // as idle, so 3 → 4 instead of 3 → 6.
    let mut pods = [pod("a", 1000), pod("b", 1000), pod("c", 1000)];
    pods[0].ready = Some(Ready { status: false, last_transition: NOW - S(5) });
    pods[0].start_time = Some(NOW - S(60));
    let p = cpu(3, 30, &pods, &[("a", 300), ("b", 500), ("c", 700)]);
    assert_eq!((p.replicas, p.utilization), (4, Some(60)));
}

#[test]
fn not_ready_pods_that_would_reverse_the_decision_keep_the_count() {
    // TestReplicaCalcScaleHotCpuNoScale: two pods in their CPU initialisation period and unready.
    let mut pods = [pod("a", 1000), pod("b", 1000), pod("c", 1000)];
    for i in [0, 2] {
        pods[i].ready = Some(Ready { status: false, last_transition: NOW - S(5) });
        pods[i].start_time = Some(NOW - S(60));
    }
    let p = cpu(3, 30, &pods, &[("a", 300), ("b", 500), ("c", 700)]);
    assert_eq!((p.replicas, p.utilization), (3, Some(50)));
}

#[test]
fn a_ready_pod_without_a_full_window_since_ready_is_not_ready_for_cpu() {
    // Within the initialisation period, a metric taken less than one window after the pod
    // became Ready still holds start-up CPU.
    let mut pods = [pod("a", 1000), pod("b", 1000)];
    pods[0].start_time = Some(NOW - S(20));
    pods[0].ready = Some(Ready { status: true, last_transition: NOW - S(10) });
    let p = cpu(2, 50, &pods, &[("a", 1000), ("b", 1000)]);
    // b alone: 100 % → ratio 2 → with a as 0: 50 % → within tolerance → no change.
    assert_eq!(p.replicas, 2);
}

#[test]
fn readiness_does_not_matter_for_memory() {
    let mut pods = [pod("a", 1000), pod("b", 1000)];
    pods[0].ready = Some(Ready { status: false, last_transition: NOW - S(5) });
    pods[0].start_time = Some(NOW - S(60));
    let m = metrics(&[("a", 1000), ("b", 1000)]);
    let p = resource_replicas(2, Target::Utilization(50), "memory", &pods, &m, NOW).unwrap();
    assert_eq!(p.replicas, 4);
}

#[test]
fn missing_metrics_count_as_the_full_request_on_a_scale_down() {
    // 3 pods at 10 % and one without metrics, target 50 %: the missing pod counts as 100 %, so
    // 4 → 3 instead of 4 → 1.
    let pods: Vec<Pod> = ["a", "b", "c", "d"].iter().map(|n| pod(n, 1000)).collect();
    let p = cpu(4, 50, &pods, &[("a", 100), ("b", 100), ("c", 100)]);
    assert_eq!((p.replicas, p.utilization), (3, Some(10)));
}

#[test]
fn missing_metrics_count_as_zero_on_a_scale_up() {
    let pods = [pod("a", 1000), pod("b", 1000), pod("c", 1000)];
    let p = cpu(3, 50, &pods, &[("a", 900), ("b", 900)]);
    assert_eq!((p.replicas, p.utilization), (4, Some(90)));
}

#[test]
fn missing_metrics_that_would_reverse_the_decision_keep_the_count() {
    // TestReplicaCalcMissingMetricsNoChangeGt-like: 120 % on two pods, the third missing at 0
    // gives 80 %: the direction flips, so no change.
    let pods = [pod("a", 1000), pod("b", 1000), pod("c", 1000)];
    let p = cpu(3, 100, &pods, &[("a", 1200), ("b", 1200)]);
    assert_eq!(p.replicas, 3);
}

#[test]
fn pending_failed_and_deleting_pods_are_ignored() {
    let mut pods = [pod("a", 1000), pod("b", 1000), pod("c", 1000), pod("d", 1000)];
    pods[1].phase = Phase::Pending;
    pods[2].phase = Phase::Failed;
    pods[3].deleting = true;
    // Only a counts (no "missing" pods): 100 % against 50 % → 2.
    let p = cpu(4, 50, &pods, &[("a", 1000), ("d", 1000)]);
    assert_eq!(p.replicas, 2);
}

#[test]
fn average_value_targets_use_the_plain_average() {
    let pods = [pod("a", 0), pod("b", 0), pod("c", 0)];
    let m = metrics(&[("a", 1000), ("b", 2000), ("c", 3000)]);
    let p = resource_replicas(3, Target::AverageValue(1000), "memory", &pods, &m, NOW).unwrap();
    assert_eq!((p.replicas, p.utilization, p.average), (6, None, 2000));
    // A missing pod counts as the target on a scale-down.
    let m = metrics(&[("a", 100), ("b", 100)]);
    let p = resource_replicas(3, Target::AverageValue(1000), "memory", &pods, &m, NOW).unwrap();
    assert_eq!(p.replicas, 2, "(100+100+1000)/3 = 400 → ceil(0.4 × 3)");
}

#[test]
fn errors_name_what_is_missing() {
    let mut pods = [pod("a", 1000)];
    let none = BTreeMap::new();
    let e = resource_replicas(1, Target::Utilization(50), "cpu", &[], &none, NOW).unwrap_err();
    assert_eq!(e.to_string(), "no pods returned by selector while calculating replica count");
    let e = resource_replicas(1, Target::Utilization(50), "cpu", &pods, &none, NOW).unwrap_err();
    assert_eq!(e.to_string(), "did not receive metrics for targeted pods (pods might be unready)");
    pods[0].request = Err("app".into());
    let m = metrics(&[("a", 10)]);
    let e = resource_replicas(1, Target::Utilization(50), "cpu", &pods, &m, NOW).unwrap_err();
    assert_eq!(e.to_string(), "missing request for cpu in container app of Pod a");
}

fn valid(replicas: i32) -> MetricOutcome {
    MetricOutcome::Valid {
        replicas,
        name: "cpu resource utilization (percentage of request)".into(),
    }
}

fn condition<'a>(p: &'a Plan, kind: &str) -> &'a Condition {
    p.conditions.iter().rev().find(|c| c.kind == kind).unwrap()
}

#[test]
fn min_and_max_bound_the_current_count_first() {
    let mut h = History::default();
    let p = plan(&mut h, None, 6, 1, 4, &[valid(10)], NOW);
    assert_eq!((p.desired, p.rescale), (4, true));
    assert_eq!(p.reason, "Current number of replicas above Spec.MaxReplicas");
    let p = plan(&mut h, None, 1, 2, 4, &[valid(1)], NOW);
    assert_eq!(
        (p.desired, p.reason.as_str()),
        (2, "Current number of replicas below Spec.MinReplicas")
    );
}

#[test]
fn a_target_at_zero_is_not_scaled() {
    let p = plan(&mut History::default(), None, 0, 1, 4, &[valid(3)], NOW);
    assert_eq!((p.desired, p.rescale), (0, false));
    let c = condition(&p, "ScalingActive");
    assert_eq!((c.status, c.reason.as_str()), (false, "ScalingDisabled"));
}

#[test]
fn the_largest_proposal_of_several_metrics_wins() {
    let p = plan(&mut History::default(), None, 2, 1, 10, &[valid(3), valid(4)], NOW);
    assert_eq!(p.desired, 4);
    assert_eq!(p.reason, "cpu resource utilization (percentage of request) above target");
    assert_eq!(condition(&p, "ScalingActive").reason, "ValidMetricFound");
}

#[test]
fn invalid_metrics_stop_scaling_down_but_not_up() {
    let bad = MetricOutcome::Invalid {
        reason: "FailedGetResourceMetric".into(),
        message: "unable to get metrics for resource memory".into(),
    };
    let p = plan(&mut History::default(), None, 3, 1, 10, std::slice::from_ref(&bad), NOW);
    assert_eq!((p.rescale, p.error.is_some()), (false, true));
    let c = condition(&p, "ScalingActive");
    assert_eq!((c.status, c.reason.as_str()), (false, "FailedGetResourceMetric"));
    let p = plan(&mut History::default(), None, 3, 1, 10, &[valid(1), bad.clone()], NOW);
    assert_eq!((p.desired, p.rescale), (3, false), "some invalid on a scale-down: no change");
    let p = plan(&mut History::default(), None, 3, 1, 10, &[valid(5), bad], NOW);
    assert_eq!((p.desired, p.rescale), (5, true), "a scale-up goes ahead");
}

#[test]
fn legacy_scale_up_is_limited_to_twice_or_four() {
    let p = plan(&mut History::default(), None, 1, 1, 10, &[valid(10)], NOW);
    assert_eq!(p.desired, 4);
    let c = condition(&p, "ScalingLimited");
    assert_eq!((c.status, c.reason.as_str()), (true, "ScaleUpLimit"));
    let p = plan(&mut History::default(), None, 3, 1, 5, &[valid(10)], NOW);
    assert_eq!(
        (p.desired, condition(&p, "ScalingLimited").reason.as_str()),
        (5, "TooManyReplicas")
    );
}

#[test]
fn legacy_scale_down_is_stabilised_for_five_minutes() {
    let mut h = History::default();
    assert_eq!(plan(&mut h, None, 5, 1, 10, &[valid(5)], S(1000)).desired, 5);
    let p = plan(&mut h, None, 5, 1, 10, &[valid(2)], S(1060));
    assert_eq!((p.desired, p.rescale), (5, false));
    assert_eq!(condition(&p, "AbleToScale").reason, "ScaleDownStabilized");
    let p = plan(&mut h, None, 5, 1, 10, &[valid(2)], S(1301));
    assert_eq!(p.desired, 2, "the recommendation of 5 left the window");
    assert_eq!(condition(&p, "AbleToScale").reason, "ReadyForNewScale");
}

#[test]
fn default_behavior_scales_up_by_the_larger_policy_per_period() {
    let b = Behavior::default();
    let mut h = History::default();
    // From 1: +4 pods beats +100 %.
    let p = plan(&mut h, Some(&b), 1, 1, 20, &[valid(20)], S(100));
    assert_eq!(p.desired, 5);
    assert_eq!(condition(&p, "ScalingLimited").reason, "ScaleUpLimit");
    record_scale(&mut h, Some(&b), 1, 5, S(100));
    // Within the same 15 s period nothing more may be added.
    let p = plan(&mut h, Some(&b), 5, 1, 20, &[valid(20)], S(110));
    assert_eq!((p.desired, p.rescale), (5, false));
    // The next period starts from 5: +100 % (10) beats +4 (9).
    let p = plan(&mut h, Some(&b), 5, 1, 20, &[valid(20)], S(116));
    assert_eq!(p.desired, 10);
}

#[test]
fn default_behavior_stabilises_scale_down_for_300_seconds() {
    let b = Behavior::default();
    let mut h = History::default();
    assert_eq!(plan(&mut h, Some(&b), 10, 1, 20, &[valid(10)], S(0)).desired, 10);
    let p = plan(&mut h, Some(&b), 10, 1, 20, &[valid(2)], S(100));
    assert_eq!(p.desired, 10);
    assert_eq!(condition(&p, "AbleToScale").reason, "ScaleDownStabilized");
    let p = plan(&mut h, Some(&b), 10, 1, 20, &[valid(2)], S(301));
    assert_eq!((p.desired, condition(&p, "ScalingLimited").status), (2, false));
}

#[test]
fn scale_up_stabilisation_takes_the_lowest_recent_recommendation() {
    let mut b = Behavior::default();
    b.up.stabilization = Some(S(60));
    let mut h = History::default();
    assert_eq!(plan(&mut h, Some(&b), 2, 1, 20, &[valid(3)], S(0)).desired, 3);
    let p = plan(&mut h, Some(&b), 2, 1, 20, &[valid(8)], S(30));
    assert_eq!(p.desired, 3);
    assert_eq!(condition(&p, "AbleToScale").reason, "ScaleUpStabilized");
}

#[test]
fn scale_down_policies_limit_the_rate() {
    let mut b = Behavior {
        down: Rules {
            stabilization: Some(Duration::ZERO),
            select: Select::Max,
            policies: vec![Policy { kind: PolicyKind::Pods, value: 1, period: S(60) }],
        },
        ..Behavior::default()
    };
    let mut h = History::default();
    let p = plan(&mut h, Some(&b), 10, 1, 20, &[valid(2)], S(0));
    assert_eq!(p.desired, 9);
    assert_eq!(condition(&p, "ScalingLimited").reason, "ScaleDownLimit");
    record_scale(&mut h, Some(&b), 10, 9, S(0));
    assert_eq!(plan(&mut h, Some(&b), 9, 1, 20, &[valid(2)], S(30)).desired, 9);
    assert_eq!(plan(&mut h, Some(&b), 9, 1, 20, &[valid(2)], S(61)).desired, 8);
    // Min picks the most restrictive, Max the most permissive of the policies.
    b.down.policies.push(Policy { kind: PolicyKind::Percent, value: 50, period: S(60) });
    let mut h = History::default();
    assert_eq!(plan(&mut h, Some(&b), 10, 1, 20, &[valid(2)], S(0)).desired, 5);
    b.down.select = Select::Min;
    let mut h = History::default();
    assert_eq!(plan(&mut h, Some(&b), 10, 1, 20, &[valid(2)], S(0)).desired, 9);
}

#[test]
fn a_disabled_direction_never_changes() {
    let mut b = Behavior::default();
    b.up.select = Select::Disabled;
    let p = plan(&mut History::default(), Some(&b), 2, 1, 20, &[valid(8)], S(0));
    assert_eq!((p.desired, p.rescale), (2, false));
}

#[test]
fn behavior_respects_min_and_max() {
    let b = Behavior::default();
    let p = plan(&mut History::default(), Some(&b), 3, 1, 4, &[valid(8)], S(0));
    assert_eq!(
        (p.desired, condition(&p, "ScalingLimited").reason.as_str()),
        (4, "TooManyReplicas")
    );
    let mut b = Behavior::default();
    b.down.stabilization = Some(Duration::ZERO);
    let p = plan(&mut History::default(), Some(&b), 3, 2, 4, &[valid(1)], S(0));
    assert_eq!((p.desired, condition(&p, "ScalingLimited").reason.as_str()), (2, "TooFewReplicas"));
}

/// `getUsageRatioReplicaCount`'s rules (the shapes of upstream's `...CMObject` and
/// `...CMExternal` cases): twice the target on 3 ready pods asks for 6, 1.03 of it keeps 3,
/// 0.6 of it on 5 pods asks for 3.
#[test]
fn object_and_external_value_targets_scale_the_ready_pods_by_the_ratio() {
    assert_eq!(usage_ratio_replicas(3, 30000.0 / 15000.0, 3), 6);
    assert_eq!(usage_ratio_replicas(3, 20666.0 / 20000.0, 3), 3);
    assert_eq!(usage_ratio_replicas(5, 8600.0 / 14334.0, 5), 3);
    // From zero replicas: the ratio rounded up.
    assert_eq!(usage_ratio_replicas(0, 2.2, 0), 3);
}

/// `GetExternalPerPodMetricReplicas`' rules (the shapes of upstream's `...PerPod...` cases):
/// 8600m at 2150m per pod asks for 4, at 3000m per pod for 3, 8200m at 2000m per pod keeps 4
/// (within the tolerance); from zero replicas the total over the target.
#[test]
fn per_pod_targets_divide_the_total_by_the_target() {
    assert_eq!(per_pod_replicas(3, 8600, 2150), 4);
    assert_eq!(per_pod_replicas(5, 8600, 3000), 3);
    assert_eq!(per_pod_replicas(4, 8200, 2000), 4);
    assert_eq!(per_pod_replicas(0, 3500, 1000), 4);
}
