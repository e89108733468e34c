//! `config-autoscaler`: defaults, every key, Knative's errors.

use std::collections::BTreeMap;
use std::time::Duration;

use expect_test::{Expect, expect};
use kinetic_autoscale::Config;

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn check_err(pairs: &[(&str, &str)], want: Expect) {
    match Config::from_data(&data(pairs)) {
        Ok(c) => panic!("accepted {pairs:?}: {c:?}"),
        Err(e) => want.assert_eq(&e.to_string()),
    }
}

#[test]
fn empty_configmap_gives_knative_defaults() {
    let c = Config::from_data(&data(&[("_example", "ignored")])).expect("defaults");
    assert_eq!(c, Config::default());
    assert_eq!(c.container_concurrency_target_default, 100.0);
    assert_eq!(c.container_concurrency_target_fraction, 0.7);
    assert_eq!(c.rps_target_default, 200.0);
    assert_eq!(c.stable_window, Duration::from_secs(60));
    assert_eq!(c.panic_window_percentage, 10.0);
    assert_eq!(c.panic_threshold_percentage, 200.0);
    assert_eq!(c.max_scale_up_rate, 1000.0);
    assert_eq!(c.max_scale_down_rate, 2.0);
    assert_eq!(c.scale_to_zero_grace_period, Duration::from_secs(30));
    assert_eq!(c.scale_to_zero_pod_retention_period, Duration::ZERO);
    assert_eq!((c.initial_scale, c.allow_zero_initial_scale), (1, false));
    assert_eq!((c.min_scale, c.max_scale, c.max_scale_limit), (0, 0, 0));
    assert_eq!(c.scale_down_delay, Duration::ZERO);
    assert!(c.enable_scale_to_zero);
    assert_eq!(c.target_burst_capacity, 211.0);
    assert_eq!(c.pod_autoscaler_class, "kpa.autoscaling.knative.dev");
}

#[test]
fn every_key_is_read() {
    let c = Config::from_data(&data(&[
        ("container-concurrency-target-default", "10"),
        ("container-concurrency-target-percentage", "80"),
        ("requests-per-second-target-default", "50"),
        ("target-burst-capacity", "-1"),
        ("stable-window", "2m"),
        ("panic-window-percentage", "20"),
        ("panic-threshold-percentage", "300"),
        ("max-scale-up-rate", "3"),
        ("max-scale-down-rate", "4"),
        ("enable-scale-to-zero", "false"),
        ("scale-to-zero-grace-period", "45s"),
        ("scale-to-zero-pod-retention-period", "1m30s"),
        ("initial-scale", "0"),
        ("allow-zero-initial-scale", "true"),
        ("min-scale", "1"),
        ("max-scale", "8"),
        ("max-scale-limit", "10"),
        ("scale-down-delay", "15s"),
        ("pod-autoscaler-class", "example.com/custom"),
        ("activator-capacity", "50"),
    ]))
    .expect("valid");
    expect![[r#"
        Config {
            enable_scale_to_zero: false,
            container_concurrency_target_fraction: 0.8,
            container_concurrency_target_default: 10.0,
            target_utilization: 0.7,
            rps_target_default: 50.0,
            max_scale_up_rate: 3.0,
            max_scale_down_rate: 4.0,
            target_burst_capacity: -1.0,
            panic_window_percentage: 20.0,
            activator_capacity: 50.0,
            panic_threshold_percentage: 300.0,
            stable_window: 120s,
            scale_down_delay: 15s,
            scale_to_zero_grace_period: 45s,
            scale_to_zero_pod_retention_period: 90s,
            pod_autoscaler_class: "example.com/custom",
            allow_zero_initial_scale: true,
            initial_scale: 0,
            min_scale: 1,
            max_scale: 8,
            max_scale_limit: 10,
        }"#]]
    .assert_eq(&format!("{c:#?}"));
}

/// Upstream accepts the legacy fraction as well as the percentage.
#[test]
fn target_percentage_accepts_a_legacy_fraction() {
    let c = Config::from_data(&data(&[("container-concurrency-target-percentage", "0.5")]))
        .expect("valid");
    assert_eq!(c.container_concurrency_target_fraction, 0.5);
}

#[test]
fn knative_validation_errors() {
    check_err(
        &[("stable-window", "soon")],
        expect![[
            r#"failed to parse data: failed to parse "stable-window": time: invalid duration "soon""#
        ]],
    );
    check_err(
        &[("enable-scale-to-zero", "yes")],
        expect![[
            r#"failed to parse data: failed to parse "enable-scale-to-zero": strconv.ParseBool: parsing "yes": invalid syntax"#
        ]],
    );
    check_err(
        &[("max-scale-up-rate", "fast")],
        expect![[
            r#"failed to parse data: failed to parse "max-scale-up-rate": strconv.ParseFloat: parsing "fast": invalid syntax"#
        ]],
    );
    check_err(
        &[("initial-scale", "99999999999")],
        expect![[
            r#"failed to parse data: failed to parse "initial-scale": strconv.ParseInt: parsing "99999999999": value out of range"#
        ]],
    );
    check_err(
        &[("scale-to-zero-grace-period", "0s")],
        expect!["scale-to-zero-grace-period must be positive, was: 0s"],
    );
    check_err(
        &[("scale-down-delay", "-1s")],
        expect!["scale-down-delay cannot be negative, was: -1s"],
    );
    check_err(
        &[("scale-down-delay", "1.5s")],
        expect!["scale-down-delay = 1.5s, must be specified with at most second precision"],
    );
    check_err(
        &[("scale-to-zero-pod-retention-period", "-5m")],
        expect!["scale-to-zero-pod-retention-period cannot be negative, was: -5m0s"],
    );
    check_err(
        &[("target-burst-capacity", "-2")],
        expect![
            "target-burst-capacity must be either non-negative or -1 (for unlimited), was: -2.000000"
        ],
    );
    check_err(
        &[("container-concurrency-target-percentage", "200")],
        expect![
            "container-concurrency-target-percentage = 2.000000 is outside of valid range of (0, 100]"
        ],
    );
    check_err(
        &[("container-concurrency-target-percentage", "0")],
        expect![
            "container-concurrency-target-percentage = 0.000000 is outside of valid range of (0, 100]"
        ],
    );
    check_err(
        &[("container-concurrency-target-default", "0.001")],
        expect![
            "container-concurrency-target-percentage and container-concurrency-target-default yield target concurrency of 0.0007, can't be less than 0.01"
        ],
    );
    check_err(
        &[("requests-per-second-target-default", "0")],
        expect!["requests-per-second-target-default must be at least 0.01, was: 0"],
    );
    check_err(
        &[("activator-capacity", "0.5")],
        expect!["activator-capacity = 0.5, must be at least 1"],
    );
    check_err(
        &[("max-scale-up-rate", "1")],
        expect!["max-scale-up-rate = 1, must be greater than 1.0"],
    );
    check_err(
        &[("max-scale-down-rate", "0.5")],
        expect!["max-scale-down-rate = 0.5, must be greater than 1.0"],
    );
    check_err(
        &[("stable-window", "5s")],
        expect!["stable-window = 5s, must be in [6s; 1h0m0s] range"],
    );
    check_err(
        &[("stable-window", "2h")],
        expect!["stable-window = 2h0m0s, must be in [6s; 1h0m0s] range"],
    );
    check_err(
        &[("stable-window", "6500ms")],
        expect!["stable-window = 6.5s, must be specified with at most second precision"],
    );
    check_err(
        &[("panic-window-percentage", "0.5")],
        expect!["panic-window-percentage = 0.5, must be in [1, 100] interval"],
    );
    check_err(
        &[("initial-scale", "0")],
        expect![
            "initial-scale = 0, must be at least 0 (or at least 1 when allow-zero-initial-scale is false)"
        ],
    );
    check_err(
        &[("max-scale-limit", "10")],
        expect!["max-scale = 0, must be in [1, max-scale-limit(10)] range"],
    );
    check_err(
        &[("max-scale-limit", "10"), ("max-scale", "11")],
        expect!["max-scale = 11, must be in [1, max-scale-limit(10)] range"],
    );
    check_err(
        &[("min-scale", "5"), ("max-scale", "3")],
        expect!["min-scale (5) must be less than max-scale (3) and greater than or equal to 0"],
    );
}
