//! Scaling scenarios, one per behaviour, driven second by second with a fixed clock.
//!
//! The driver records the given concurrency every second and asks for a decision every tick
//! (2 s, upstream's `tickInterval`). Unless a test takes the pods in hand, applied decisions
//! become ready pods at once. A line is printed whenever the decision, the applied flag, the
//! panic mode, the `Active` condition or the ready pods change:
//! `t=<second> ready=<pods> -> desired=<n> [apply|hold] [PANIC] stable=<avg> panic=<avg>
//! ebc=<n> <Activity>/<reason>`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use expect_test::{Expect, expect};
use kinetic_autoscale::{
    Autoscaler, Config, DeciderSpec, Metrics, RevisionSpec, ScaleResult, Stat, Time,
};

struct Sim {
    config: Config,
    rev: RevisionSpec,
    metrics: Metrics,
    autoscaler: Autoscaler,
    now: u64,
    ready: i32,
    /// Applied decisions become ready pods at once.
    follow: bool,
    last: Option<(i32, bool, bool, String, i32)>,
    out: String,
}

fn sim(config: &[(&str, &str)], annotations: &[(&str, &str)], ready: i32) -> Sim {
    sim_cc(config, annotations, 0, ready, true)
}

fn sim_cc(
    config: &[(&str, &str)],
    annotations: &[(&str, &str)],
    container_concurrency: i64,
    ready: i32,
    reachable: bool,
) -> Sim {
    let data: BTreeMap<String, String> =
        config.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let config = Config::from_data(&data).expect("valid config");
    let anns: BTreeMap<String, String> = annotations
        .iter()
        .map(|(k, v)| (format!("autoscaling.knative.dev/{k}"), (*v).to_owned()))
        .collect();
    let rev = RevisionSpec::from_annotations(&anns, container_concurrency, &config)
        .expect("valid annotations");
    let spec = DeciderSpec::new(&config, &rev, reachable);
    Sim {
        config,
        rev,
        metrics: spec.metrics(),
        autoscaler: Autoscaler::new(spec, Time::from_secs(0), ready),
        now: 0,
        ready,
        follow: true,
        last: None,
        out: String::new(),
    }
}

impl Sim {
    /// Records `concurrency` for every second up to `until`, deciding every 2 s.
    fn run(&mut self, until: u64, concurrency: f64) -> &mut Self {
        while self.now < until {
            self.now += 1;
            self.metrics.record(Time::from_secs(self.now), Stat { concurrency, requests: 0.0 });
            if self.now.is_multiple_of(2) || self.now == until {
                self.tick();
            }
        }
        self
    }

    /// Lets time pass without any report (the gateway saw nothing to report).
    fn silence(&mut self, until: u64) -> &mut Self {
        while self.now < until {
            self.now += 1;
            if self.now.is_multiple_of(2) || self.now == until {
                self.tick();
            }
        }
        self
    }

    /// Decides now (as the controller does at once when a request waits at zero).
    fn tick(&mut self) -> ScaleResult {
        let r = self.autoscaler.scale(Time::from_secs(self.now), &self.metrics, self.ready);
        if r.scale_valid && self.follow {
            self.ready = r.desired;
        }
        let active = format!("{:?}/{}", r.active.activity, r.active.reason);
        let key = (r.desired, r.scale_valid, r.panic, active.clone(), self.ready);
        if self.last.as_ref() != Some(&key) {
            let _ = writeln!(
                self.out,
                "t={} ready={} -> desired={} {}{} stable={:.2} panic={:.2} ebc={} {}",
                self.now,
                self.ready,
                r.desired,
                if r.scale_valid { "apply" } else { "hold" },
                if r.panic { " PANIC" } else { "" },
                r.observed_stable,
                r.observed_panic,
                r.excess_burst_capacity,
                active.trim_end_matches('/'),
            );
            self.last = Some(key);
        }
        r
    }

    fn check(&self, want: Expect) {
        want.assert_eq(&self.out);
    }
}

#[test]
fn steady_load_scales_to_load_over_seventy_per_pod() {
    let mut s = sim(&[], &[], 1);
    s.run(60, 140.0).run(120, 350.0);
    s.check(expect![[r#"
        t=2 ready=2 -> desired=2 apply PANIC stable=140.00 panic=140.00 ebc=-251 Active
        t=62 ready=3 -> desired=3 apply PANIC stable=147.00 panic=210.00 ebc=-221 Active
        t=64 ready=3 -> desired=3 apply stable=154.00 panic=280.00 ebc=-191 Active
        t=82 ready=4 -> desired=4 apply stable=217.00 panic=350.00 ebc=-261 Active
        t=102 ready=5 -> desired=5 apply stable=287.00 panic=350.00 ebc=-161 Active
    "#]]);
}

#[test]
fn panic_entry_when_the_panic_window_doubles_the_ready_capacity_and_exit_a_stable_window_later() {
    let mut s = sim(&[], &[], 1);
    s.run(60, 70.0).run(70, 700.0).run(200, 70.0);
    s.check(expect![[r#"
        t=2 ready=1 -> desired=1 apply stable=70.00 panic=70.00 ebc=-181 Active
        t=62 ready=4 -> desired=4 apply PANIC stable=91.00 panic=280.00 ebc=-391 Active
        t=64 ready=7 -> desired=7 apply PANIC stable=112.00 panic=490.00 ebc=-301 Active
        t=66 ready=10 -> desired=10 apply PANIC stable=133.00 panic=700.00 ebc=-211 Active
        t=124 ready=5 -> desired=5 apply stable=133.00 panic=70.00 ebc=719 Active
        t=126 ready=2 -> desired=2 apply stable=112.00 panic=70.00 ebc=219 Active
        t=130 ready=1 -> desired=1 apply stable=70.00 panic=70.00 ebc=-81 Active
    "#]]);
}

#[test]
fn panic_mode_never_scales_down() {
    let mut s = sim(&[], &[], 1);
    s.run(20, 700.0).run(40, 1400.0).run(60, 140.0);
    s.check(expect![[r#"
        t=2 ready=10 -> desired=10 apply PANIC stable=700.00 panic=700.00 ebc=-811 Active
        t=22 ready=14 -> desired=14 apply PANIC stable=763.64 panic=933.33 ebc=-145 Active
        t=24 ready=17 -> desired=17 apply PANIC stable=816.67 panic=1166.67 ebc=22 Active
        t=26 ready=20 -> desired=20 apply PANIC stable=861.54 panic=1400.00 ebc=89 Active
    "#]]);
}

#[test]
fn restarted_autoscaler_with_pods_starts_in_panic_and_holds_them() {
    let mut s = sim(&[], &[], 5);
    s.run(80, 70.0);
    s.check(expect![[r#"
        t=2 ready=5 -> desired=5 apply PANIC stable=70.00 panic=70.00 ebc=219 Active
        t=62 ready=2 -> desired=2 apply stable=70.00 panic=70.00 ebc=219 Active
        t=64 ready=1 -> desired=1 apply stable=70.00 panic=70.00 ebc=-81 Active
    "#]]);
}

#[test]
fn max_scale_up_rate_limits_growth_relative_to_ready_pods() {
    let mut s = sim(&[("max-scale-up-rate", "2")], &[], 1);
    s.run(20, 1400.0);
    s.check(expect![[r#"
        t=2 ready=2 -> desired=2 apply PANIC stable=1400.00 panic=1400.00 ebc=-1511 Active
        t=4 ready=4 -> desired=4 apply PANIC stable=1400.00 panic=1400.00 ebc=-1411 Active
        t=6 ready=8 -> desired=8 apply PANIC stable=1400.00 panic=1400.00 ebc=-1211 Active
        t=8 ready=16 -> desired=16 apply PANIC stable=1400.00 panic=1400.00 ebc=-811 Active
        t=10 ready=20 -> desired=20 apply PANIC stable=1400.00 panic=1400.00 ebc=-11 Active
    "#]]);
}

#[test]
fn max_scale_down_rate_halves_at_most_per_decision() {
    // 1000 % panic threshold: no panic, so the drop shows the rate alone.
    let mut s = sim(&[], &[("panic-threshold-percentage", "1000"), ("window", "6s")], 1);
    s.run(10, 700.0).run(40, 0.5);
    s.check(expect![[r#"
        t=2 ready=10 -> desired=10 apply PANIC stable=700.00 panic=700.00 ebc=-811 Active
        t=10 ready=10 -> desired=10 apply stable=700.00 panic=700.00 ebc=89 Active
        t=12 ready=7 -> desired=7 apply stable=466.83 panic=0.50 ebc=788 Active
        t=14 ready=4 -> desired=4 apply stable=233.67 panic=0.50 ebc=488 Active
        t=16 ready=2 -> desired=2 apply stable=0.50 panic=0.50 ebc=188 Active
        t=18 ready=1 -> desired=1 apply stable=0.50 panic=0.50 ebc=-12 Active
    "#]]);
}

#[test]
fn unreachable_revision_scales_down_without_rate_limit_and_ignores_min_scale() {
    let mut s = sim_cc(&[], &[("window", "6s"), ("min-scale", "3")], 0, 1, false);
    s.run(10, 700.0).run(20, 0.5);
    s.check(expect![[r#"
        t=2 ready=10 -> desired=10 apply PANIC stable=700.00 panic=700.00 ebc=-811 Active
        t=10 ready=10 -> desired=10 apply stable=700.00 panic=700.00 ebc=89 Active
        t=12 ready=7 -> desired=7 apply stable=466.83 panic=0.50 ebc=788 Active
        t=14 ready=4 -> desired=4 apply stable=233.67 panic=0.50 ebc=488 Active
        t=16 ready=1 -> desired=1 apply stable=0.50 panic=0.50 ebc=188 Active
    "#]]);
}

#[test]
fn scale_down_delay_holds_the_highest_decision_of_the_delay_window() {
    let mut s = sim(&[], &[("scale-down-delay", "20s"), ("window", "6s")], 1);
    s.run(10, 280.0).run(50, 70.0);
    s.check(expect![[r#"
        t=2 ready=4 -> desired=4 apply PANIC stable=280.00 panic=280.00 ebc=-391 Active
        t=10 ready=4 -> desired=4 apply stable=280.00 panic=280.00 ebc=-91 Active
        t=30 ready=3 -> desired=3 apply stable=70.00 panic=70.00 ebc=119 Active
        t=32 ready=2 -> desired=2 apply stable=70.00 panic=70.00 ebc=19 Active
        t=50 ready=1 -> desired=1 apply stable=70.00 panic=70.00 ebc=-81 Active
    "#]]);
}

#[test]
fn scale_to_zero_after_a_stable_window_without_traffic_and_the_grace_period() {
    let mut s = sim(&[], &[], 1);
    s.run(10, 10.0).run(150, 0.0);
    s.check(expect![[r#"
        t=2 ready=1 -> desired=1 apply stable=10.00 panic=10.00 ebc=-121 Active
        t=70 ready=1 -> desired=0 hold stable=0.00 panic=0.00 ebc=-111 Inactive/NoTraffic
        t=100 ready=0 -> desired=0 apply stable=0.00 panic=0.00 ebc=-111 Inactive/NoTraffic
    "#]]);
}

#[test]
fn scale_to_zero_disabled_keeps_one_pod() {
    let mut s = sim(&[("enable-scale-to-zero", "false")], &[], 1);
    s.run(10, 10.0).run(150, 0.0);
    s.check(expect![[r#"
        t=2 ready=1 -> desired=1 apply stable=10.00 panic=10.00 ebc=-121 Active
    "#]]);
}

#[test]
fn pod_retention_period_keeps_the_last_pod_longer_than_the_grace_period() {
    let mut s = sim(&[], &[("scale-to-zero-pod-retention-period", "1m")], 1);
    s.run(10, 10.0).run(200, 0.0);
    s.check(expect![[r#"
        t=2 ready=1 -> desired=1 apply stable=10.00 panic=10.00 ebc=-121 Active
        t=70 ready=1 -> desired=0 hold stable=0.00 panic=0.00 ebc=-111 Inactive/NoTraffic
        t=130 ready=0 -> desired=0 apply stable=0.00 panic=0.00 ebc=-111 Inactive/NoTraffic
    "#]]);
}

#[test]
fn request_at_zero_activates_to_one_pod_then_active_once_ready() {
    let mut s = sim(&[], &[("window", "6s")], 1);
    s.run(4, 1.0).run(60, 0.0);
    // A request waits: the gateway records it and the controller decides at once.
    s.follow = false;
    s.now += 1;
    s.metrics.record(Time::from_secs(s.now), Stat { concurrency: 1.0, requests: 1.0 });
    s.tick();
    s.run(s.now + 3, 1.0);
    s.ready = 1;
    s.tick();
    s.check(expect![[r#"
        t=2 ready=1 -> desired=1 apply stable=1.00 panic=1.00 ebc=-112 Active
        t=10 ready=1 -> desired=0 hold stable=0.00 panic=0.00 ebc=-111 Inactive/NoTraffic
        t=40 ready=0 -> desired=0 apply stable=0.00 panic=0.00 ebc=-111 Inactive/NoTraffic
        t=61 ready=0 -> desired=1 apply stable=0.17 panic=1.00 ebc=-212 Activating/Queued
        t=64 ready=1 -> desired=1 apply stable=0.67 panic=1.00 ebc=-112 Active
    "#]]);
}

#[test]
fn activation_scale_is_the_floor_whenever_there_is_traffic() {
    let mut s = sim(&[], &[("activation-scale", "3"), ("window", "6s")], 1);
    s.run(4, 1.0).run(60, 0.0).run(70, 1.0);
    s.check(expect![[r#"
        t=2 ready=3 -> desired=3 apply stable=1.00 panic=1.00 ebc=-112 Active
        t=10 ready=1 -> desired=1 apply stable=0.00 panic=0.00 ebc=89 Active
        t=12 ready=1 -> desired=0 hold stable=0.00 panic=0.00 ebc=-111 Inactive/NoTraffic
        t=42 ready=0 -> desired=0 apply stable=0.00 panic=0.00 ebc=-111 Inactive/NoTraffic
        t=62 ready=3 -> desired=3 apply stable=0.33 panic=1.00 ebc=-212 Activating/Queued
        t=64 ready=3 -> desired=3 apply stable=0.67 panic=1.00 ebc=88 Active
    "#]]);
}

#[test]
fn min_scale_and_max_scale_bound_the_decision() {
    let mut s = sim(&[], &[("min-scale", "2"), ("max-scale", "4"), ("window", "6s")], 1);
    s.run(20, 0.0).run(40, 7000.0).run(120, 0.0);
    s.check(expect![[r#"
        t=2 ready=2 -> desired=2 apply stable=0.00 panic=0.00 ebc=-111 Activating/Queued
        t=4 ready=2 -> desired=2 apply stable=0.00 panic=0.00 ebc=-11 Active
        t=22 ready=4 -> desired=4 apply PANIC stable=2333.33 panic=7000.00 ebc=-7011 Active
        t=48 ready=2 -> desired=2 apply stable=0.00 panic=0.00 ebc=189 Active
    "#]]);
}

#[test]
fn initial_scale_is_held_until_reached_once() {
    let mut s = sim(&[], &[("initial-scale", "3"), ("window", "6s")], 0);
    s.follow = false;
    s.silence(4);
    s.ready = 3;
    s.follow = true;
    s.run(100, 0.0);
    s.check(expect![[r#"
        t=2 ready=0 -> desired=3 apply stable=0.00 panic=0.00 ebc=89 Activating/Queued
        t=6 ready=3 -> desired=3 apply stable=0.00 panic=0.00 ebc=89 Active
        t=8 ready=1 -> desired=1 apply stable=0.00 panic=0.00 ebc=89 Active
        t=12 ready=1 -> desired=0 hold stable=0.00 panic=0.00 ebc=-111 Inactive/NoTraffic
        t=42 ready=0 -> desired=0 apply stable=0.00 panic=0.00 ebc=-111 Inactive/NoTraffic
    "#]]);
}

#[test]
fn zero_initial_scale_starts_inactive() {
    let mut s = sim(&[("allow-zero-initial-scale", "true")], &[("initial-scale", "0")], 0);
    s.silence(10);
    s.check(expect![[r#"
        t=2 ready=0 -> desired=-1 hold stable=0.00 panic=0.00 ebc=-211 Inactive/NoTraffic
    "#]]);
}

#[test]
fn activation_that_never_gets_ready_times_out_to_zero() {
    let mut s = sim(&[], &[], 0);
    s.follow = false;
    s.silence(640);
    s.check(expect![[r#"
        t=2 ready=0 -> desired=-1 hold stable=0.00 panic=0.00 ebc=-111 Activating/Queued
        t=632 ready=0 -> desired=0 apply stable=0.00 panic=0.00 ebc=-111 Inactive/TimedOut
        t=634 ready=0 -> desired=-1 hold stable=0.00 panic=0.00 ebc=-111 Inactive/NoTraffic
    "#]]);
}

#[test]
fn no_data_keeps_the_last_decision() {
    let mut s = sim(&[], &[("window", "6s")], 1);
    s.run(10, 210.0).silence(30);
    s.check(expect![[r#"
        t=2 ready=3 -> desired=3 apply PANIC stable=210.00 panic=210.00 ebc=-321 Active
        t=10 ready=3 -> desired=3 apply stable=210.00 panic=210.00 ebc=-121 Active
        t=16 ready=1 -> desired=1 apply stable=0.00 panic=0.00 ebc=89 Active
    "#]]);
}

#[test]
fn target_utilisation_sets_the_per_pod_target() {
    // containerConcurrency 10 at 50 %: 5 requests per pod.
    let mut s = sim_cc(&[], &[("target-utilization-percentage", "50")], 10, 1, true);
    s.run(80, 20.0);
    s.check(expect![[r#"
        t=2 ready=4 -> desired=4 apply PANIC stable=20.00 panic=20.00 ebc=-221 Active
        t=64 ready=4 -> desired=4 apply stable=20.00 panic=20.00 ebc=-191 Active
    "#]]);
}

#[test]
fn rps_metric_scales_on_requests_per_second() {
    let mut s = sim(&[], &[("metric", "rps"), ("target", "100")], 1);
    // 70 rps per pod (100 at 70 %); concurrency stays low.
    for _ in 0..60 {
        s.now += 1;
        s.metrics.record(Time::from_secs(s.now), Stat { concurrency: 1.0, requests: 350.0 });
        if s.now.is_multiple_of(2) {
            s.tick();
        }
    }
    s.check(expect![[r#"
        t=2 ready=5 -> desired=5 apply PANIC stable=350.00 panic=350.00 ebc=-461 Active
    "#]]);
}

#[test]
fn excess_burst_capacity_is_spare_capacity_beyond_the_target_burst_capacity() {
    // 3 pods × 100 − 211 − 50 in flight = 39; TBC 0 gives 0 and TBC -1 gives -1.
    let mut s = sim(&[], &[("min-scale", "3")], 3);
    s.run(10, 50.0);
    let mut zero = sim(&[("target-burst-capacity", "0")], &[], 1);
    zero.run(4, 50.0);
    let mut always = sim(&[("target-burst-capacity", "-1")], &[], 1);
    always.run(4, 50.0);
    s.out.push_str(&zero.out);
    s.out.push_str(&always.out);
    s.check(expect![[r#"
        t=2 ready=3 -> desired=3 apply PANIC stable=50.00 panic=50.00 ebc=39 Active
        t=2 ready=1 -> desired=1 apply stable=50.00 panic=50.00 ebc=0 Active
        t=2 ready=1 -> desired=1 apply stable=50.00 panic=50.00 ebc=-1 Active
    "#]]);
}

#[test]
fn weighted_exponential_average_follows_a_step_faster_than_the_linear_one() {
    let anns = [("window", "20s"), ("panic-threshold-percentage", "1000")];
    let mut linear = sim(&[], &anns, 1);
    linear.run(30, 70.0).run(44, 350.0);
    let weighted_anns =
        [anns[0], anns[1], ("metric-aggregation-algorithm", "weighted-exponential")];
    let mut weighted = sim(&[], &weighted_anns, 1);
    weighted.run(30, 70.0).run(44, 350.0);
    linear.out.push_str("--- weighted\n");
    linear.out.push_str(&weighted.out);
    linear.check(expect![[r#"
        t=2 ready=1 -> desired=1 apply stable=70.00 panic=70.00 ebc=-181 Active
        t=32 ready=2 -> desired=2 apply stable=98.00 panic=350.00 ebc=-461 Active
        t=36 ready=3 -> desired=3 apply stable=154.00 panic=350.00 ebc=-361 Active
        t=42 ready=4 -> desired=4 apply stable=238.00 panic=350.00 ebc=-261 Active
        --- weighted
        t=2 ready=1 -> desired=1 apply stable=42.13 panic=69.99 ebc=-181 Active
        t=32 ready=4 -> desired=4 apply stable=238.52 panic=349.96 ebc=-461 Active
        t=34 ready=5 -> desired=5 apply stable=305.62 panic=349.96 ebc=-161 Active
    "#]]);
}

#[test]
fn becoming_unreachable_drops_min_scale_and_lets_the_revision_go_to_zero() {
    let mut s = sim(&[], &[("min-scale", "2"), ("window", "6s")], 2);
    s.run(20, 0.0);
    let spec = DeciderSpec::new(&s.config, &s.rev, false);
    s.metrics.resize(spec.stable_window, spec.panic_window, Time::from_secs(s.now));
    s.autoscaler.update(spec);
    s.run(80, 0.0);
    s.check(expect![[r#"
        t=2 ready=2 -> desired=2 apply PANIC stable=0.00 panic=0.00 ebc=-11 Active
        t=8 ready=2 -> desired=2 apply stable=0.00 panic=0.00 ebc=-11 Active
        t=22 ready=2 -> desired=0 hold stable=0.00 panic=0.00 ebc=-11 Inactive/NoTraffic
        t=52 ready=0 -> desired=0 apply stable=0.00 panic=0.00 ebc=-11 Inactive/NoTraffic
    "#]]);
}
