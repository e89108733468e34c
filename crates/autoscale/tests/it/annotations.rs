//! The `autoscaling.knative.dev/*` annotations: Knative's webhook errors, and how they resolve
//! with the ConfigMap into the decider's spec.

use std::collections::BTreeMap;

use expect_test::{Expect, expect};
use kinetic_autoscale::{Config, DeciderSpec, RevisionSpec};

fn anns(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (format!("autoscaling.knative.dev/{k}"), (*v).to_owned())).collect()
}

fn check_errs(config: &Config, pairs: &[(&str, &str)], want: Expect) {
    match RevisionSpec::from_annotations(&anns(pairs), 0, config) {
        Ok(s) => panic!("accepted {pairs:?}: {s:?}"),
        Err(errs) => {
            let lines: Vec<String> =
                errs.into_iter().map(|e| e.via("metadata.annotations").to_string()).collect();
            want.assert_eq(&lines.join("\n"));
        }
    }
}

fn spec(config: &Config, pairs: &[(&str, &str)], cc: i64, reachable: bool) -> DeciderSpec {
    let rev = RevisionSpec::from_annotations(&anns(pairs), cc, config).expect("valid annotations");
    DeciderSpec::new(config, &rev, reachable)
}

#[test]
fn webhook_errors_with_field_paths() {
    let c = Config::default();
    check_errs(
        &c,
        &[("class", "foo.knative.dev")],
        expect![[
            "invalid value: foo.knative.dev: metadata.annotations.autoscaling.knative.dev/class"
        ]],
    );
    check_errs(
        &c,
        &[("min-scale", "-1"), ("max-scale", "many")],
        expect![[r#"
        expected 0 <= -1 <= 2147483647: metadata.annotations.autoscaling.knative.dev/min-scale
        invalid value: many: metadata.annotations.autoscaling.knative.dev/max-scale"#]],
    );
    check_errs(
        &c,
        &[("min-scale", "5"), ("max-scale", "3")],
        expect![[
            "max-scale=3 is less than min-scale=5: metadata.annotations.autoscaling.knative.dev/max-scale, metadata.annotations.autoscaling.knative.dev/min-scale"
        ]],
    );
    check_errs(
        &c,
        &[("max-scale", "3"), ("activation-scale", "4")],
        expect![[
            "max-scale=3 is less than activation-scale=4: metadata.annotations.autoscaling.knative.dev/max-scale, metadata.annotations.autoscaling.knative.dev/activation-scale"
        ]],
    );
    check_errs(
        &c,
        &[("activation-scale", "0")],
        expect![[
            "expected 1 <= 0 <= 2147483647: metadata.annotations.autoscaling.knative.dev/activation-scale"
        ]],
    );
    check_errs(
        &c,
        &[
            ("panic-window-percentage", "0.5"),
            ("panic-threshold-percentage", "100"),
            ("target", "0"),
            ("target-utilization-percentage", "120"),
            ("target-burst-capacity", "-3"),
        ],
        expect![[r#"
            expected 1 <= 0.5 <= 100: metadata.annotations.autoscaling.knative.dev/panic-window-percentage
            expected 110 <= 100 <= 1000: metadata.annotations.autoscaling.knative.dev/panic-threshold-percentage
            target 0 should be at least 0.01: metadata.annotations.autoscaling.knative.dev/target
            expected 1 <= 120 <= 100: metadata.annotations.autoscaling.knative.dev/target-utilization-percentage
            invalid value: -3: metadata.annotations.autoscaling.knative.dev/target-burst-capacity"#]],
    );
    check_errs(
        &c,
        &[("window", "5s")],
        expect![[
            "expected 6s <= 5s <= 1h0m0s: metadata.annotations.autoscaling.knative.dev/window"
        ]],
    );
    check_errs(
        &c,
        &[("window", "10500ms")],
        expect![[
            "must be specified with at most second precision: metadata.annotations.autoscaling.knative.dev/window"
        ]],
    );
    check_errs(
        &c,
        &[("scale-down-delay", "2h")],
        expect![[
            "expected 0s <= 2h <= 1h0m0s: metadata.annotations.autoscaling.knative.dev/scale-down-delay"
        ]],
    );
    check_errs(
        &c,
        &[("scale-to-zero-pod-retention-period", "later")],
        expect![[
            "invalid value: later: metadata.annotations.autoscaling.knative.dev/scale-to-zero-pod-retention-period"
        ]],
    );
    check_errs(
        &c,
        &[("metric", "cpu")],
        expect![["invalid value: cpu: metadata.annotations.autoscaling.knative.dev/metric"]],
    );
    check_errs(
        &c,
        &[("class", "kpa.autoscaling.knative.dev"), ("metric-aggregation-algorithm", "median")],
        expect![[
            "invalid value: median: metadata.annotations.autoscaling.knative.dev/metric-aggregation-algorithm"
        ]],
    );
    check_errs(
        &c,
        &[("initial-scale", "0")],
        expect![[
            "invalid value: 0: metadata.annotations.autoscaling.knative.dev/initial-scale=0 not allowed by cluster"
        ]],
    );
    let limited = Config { max_scale: 5, max_scale_limit: 10, ..Config::default() };
    check_errs(
        &limited,
        &[("max-scale", "0")],
        expect![[
            "max-scale=0 (unlimited), must be less than 10: metadata.annotations.autoscaling.knative.dev/max-scale"
        ]],
    );
    check_errs(
        &limited,
        &[("max-scale", "11")],
        expect![["expected 1 <= 11 <= 10: metadata.annotations.autoscaling.knative.dev/max-scale"]],
    );
}

/// HPA and custom classes take metrics the KPA does not know; the KPA does not scale them.
#[test]
fn other_classes_are_left_to_their_autoscaler() {
    let c = Config::default();
    let hpa = RevisionSpec::from_annotations(
        &anns(&[("class", "hpa.autoscaling.knative.dev"), ("metric", "cpu")]),
        0,
        &c,
    )
    .expect("valid for the HPA class");
    assert!(!hpa.is_kpa());
    let kpa = RevisionSpec::from_annotations(&BTreeMap::new(), 0, &c).expect("no annotations");
    assert!(kpa.is_kpa());
}

#[test]
fn defaults_resolve_to_seventy_concurrent_requests_per_pod() {
    let s = spec(&Config::default(), &[], 0, true);
    expect![[r#"
        DeciderSpec {
            metric: Concurrency,
            target_value: 70.0,
            total_value: 100.0,
            target_burst_capacity: 211.0,
            panic_threshold: 2.0,
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
            stable_window: 60s,
            panic_window: 6s,
            scale_down_delay: 0ns,
            initial_scale: 1,
            activation_scale: 1,
            reachable: true,
            min_scale: 0,
            max_scale: 0,
            enable_scale_to_zero: true,
            scale_to_zero_grace_period: 30s,
            scale_to_zero_pod_retention_period: 0ns,
            activation_timeout: 630s,
            algorithm: Linear,
        }"#]]
    .assert_eq(&format!("{s:#?}"));
}

/// The per-pod target from `containerConcurrency`, `target` and
/// `target-utilization-percentage` (`ResolveMetricTarget`).
#[test]
fn target_utilisation_and_container_concurrency() {
    let c = Config::default();
    let check = |pairs: &[(&str, &str)], cc: i64, want: Expect| {
        let s = spec(&c, pairs, cc, true);
        want.assert_eq(&format!("target {} total {}", s.target_value, s.total_value));
    };
    check(&[], 10, expect!["target 7 total 10"]);
    check(&[("target-utilization-percentage", "50")], 10, expect!["target 5 total 10"]);
    check(&[("target", "50")], 0, expect!["target 35 total 50"]);
    // containerConcurrency caps a soft target above it.
    check(&[("target", "50")], 10, expect!["target 7 total 10"]);
    check(
        &[("target", "5"), ("target-utilization-percentage", "100")],
        10,
        expect!["target 5 total 5"],
    );
    check(&[("metric", "rps")], 0, expect!["target 140 total 200"]);
    check(&[("metric", "rps"), ("target", "100")], 10, expect!["target 70 total 100"]);
    // Never below TargetMin.
    check(
        &[("target", "0.01"), ("target-utilization-percentage", "1")],
        0,
        expect!["target 0.01 total 0.01"],
    );
}

#[test]
fn windows_bounds_and_initial_scale() {
    let c = Config::default();
    let s = spec(&c, &[("window", "20s"), ("panic-window-percentage", "12")], 0, true);
    // 20 s × 12 % = 2.4 s, rounded to 2 s.
    assert_eq!((s.stable_window.as_secs(), s.panic_window.as_secs()), (20, 2));
    let s = spec(&c, &[("window", "6s"), ("panic-window-percentage", "1")], 0, true);
    // 0.06 s rounds to 0, raised to the 1 s bucket.
    assert_eq!(s.panic_window.as_secs(), 1);
    let s = spec(&c, &[("min-scale", "2"), ("max-scale", "5"), ("initial-scale", "3")], 0, true);
    assert_eq!((s.min_scale, s.max_scale, s.initial_scale), (2, 5, 3));
    // min-scale only holds while a route reaches the revision.
    let s = spec(&c, &[("min-scale", "2")], 0, false);
    assert_eq!(s.min_scale, 0);
    let global = Config { min_scale: 1, max_scale: 9, ..Config::default() };
    let s = spec(&global, &[], 0, true);
    assert_eq!((s.min_scale, s.max_scale), (1, 9));
    let zero_ok = Config { allow_zero_initial_scale: true, ..Config::default() };
    assert_eq!(spec(&zero_ok, &[("initial-scale", "0")], 0, true).initial_scale, 0);
}
