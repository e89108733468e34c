//! `kinetic bench autoscale`: replays per-minute load traces through four autoscaling
//! policies against a capacity model and compares what each costs and how often it leaves
//! demand unserved (issue 13 part 4). Pure simulation: no cluster, no clock, deterministic.
//!
//! **Traces.** Any CSV of `ts,value` rows (Unix seconds, a non-negative number; an optional
//! `ts,value` header), one row per minute as in Crane's `pkg/prediction/dsp/test_data`. Rows
//! are sorted by time; missing minutes are interpolated linearly.
//!
//! **Capacity model.** The load is expressed in *pods*: a pod serves `peak / peak_pods` of the
//! trace's value at the target utilisation (so the trace's highest minute needs `--peak-pods`
//! pods, 20 by default). A pod counts from the second it is created (pod-minutes) and serves
//! from `--startup-secs` later (ready capacity). The load is constant within its minute.
//! The simulation runs second by second; each policy decides at its own period. The start-up
//! defaults to two runs: 1 s (Kinetic's measured cold start) and 15 s (a Deployment pod on a
//! cluster: upstream's start-up SLO plus one readiness-probe period), see [`AutoscaleArgs`].
//!
//! **What each policy sees**, with the lag it has upstream, the same for every policy that
//! reads the same source:
//! - HPA, the Crane-style EHPA and ours read CPU as the HPA does, from metrics-server
//!   ([`MetricsView`]): a rate over the 15 s between its last two scrapes, 7 s old at a
//!   decision, and no value for a pod until it has been Ready through a whole window (the HPA
//!   then counts it as missing). Their history is the minutes those readings have covered.
//! - KPA reads the per-second concurrency Knative's autoscaler scrapes from every pod each
//!   second, up to the second before its 2 s tick.
//!
//! **Measures**, per trace and over all: *pod-minutes* (pods that exist, starting or ready);
//! *SLO-violation minutes* (the seconds where demand exceeds ready pods, / 60); *mean
//! utilisation* (Σ demand / Σ pods, where 100 % is every pod at the target utilisation).
//! Ratios are to the best baseline on that measure (HPA, KPA or Crane, whichever is lowest).
//!
//! **Policies** (all with at least one pod, no upper bound that matters):
//! - `hpa`: `kinetic_autoscale::hpa` (ported from kube-controller-manager) with upstream's
//!   defaults: a 15 s sync, CPU `Utilization` target 70 % of a 1-core request (one pod at
//!   70 % = one pod of load), tolerance 0.1, the readiness rules (a pod's metric counts one
//!   15 s window after it became Ready), default `behavior` (scale-down stabilisation 300 s,
//!   scale-up +100 % / +4 pods per 15 s).
//! - `kpa`: `kinetic_autoscale::Autoscaler` (Knative's decider) with `config-autoscaler`'s
//!   defaults (stable window 60 s, panic window 10 %, panic threshold 200 %, max scale-down
//!   rate 2, scale-up rate 1000), a 2 s tick, concurrency recorded each second, `min-scale` 1
//!   (the traces never idle; scale to zero would not change them).
//! - `crane`: gocrane/crane's EffectiveHPA with its DSP predictor as documented in
//!   `docs/tutorials/timeseriees-forecasting-by-dsp.md` and `pkg/prediction/dsp`: history of
//!   14 days per minute (enough for its weekly candidate), outliers outside [P0.1, P99.9] replaced by the previous sample, fixed
//!   candidate periods of 1 day (3 days of samples) and 7 days (14 days), an FFT whose
//!   candidate bins exceed the P99 of the largest amplitude of 100 shuffles of the series, the
//!   candidate accepted when the circular autocorrelation has a peak at its lag (a rising
//!   regression line before it, a falling one after); the next period predicted by the
//!   `maxValue` estimator (per phase the maximum over the past cycles × (1 + marginFraction
//!   0.15)); the period test re-run daily, the prediction re-made hourly. The EHPA's HPA has two metrics, the
//!   prediction (the largest predicted value within `predictionWindowSeconds` 3600, Crane's
//!   metric adapter) and the original one, and takes the larger, with HPA's defaults as above.
//!   Simplification: Crane also has an `fft` estimator and picks the better fit; only
//!   `maxValue` is modelled here.
//! - `ours`: `kinetic_predict` (periods found robustly, a high quantile of the load's maximum
//!   over the lead time), the lead time being the start-up delay plus the control period
//!   (15 s), max(predicted, reactive), refitted every hour on up to 28 days of history; see
//!   [`Ours`].
//!
//! **Iso-SLO** (`--iso-slo`): pod-minutes alone favour whoever violates more, so each policy's
//! own knob is also swept over a grid fixed beforehand ([`HPA_TARGETS`], [`KPA_UTILISATIONS`],
//! [`OURS_QUANTILES`]) and the report gives the pod-minutes each baseline needs for our
//! violation minutes (interpolated between the two settings that bracket them), as
//! autoscaling papers compare at equal SLO.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use kinetic_autoscale::hpa;
use kinetic_autoscale::{Autoscaler, Config, DeciderSpec, RevisionSpec, Stat, Time};

mod crane;
use crane::Crane;

/// Arguments of `kinetic bench autoscale`.
#[derive(clap::Args, Debug, Clone)]
pub struct AutoscaleArgs {
    /// Load traces: CSV rows `ts,value` (Unix seconds, per minute); several may follow one
    /// `--trace`, and `--trace` may repeat
    #[arg(long = "trace", required = true, num_args = 1.., value_name = "FILE.csv")]
    traces: Vec<PathBuf>,
    /// Pods the trace's highest minute needs at the target utilisation (sets the per-pod
    /// capacity: peak / peak-pods)
    #[arg(long, default_value_t = 20)]
    peak_pods: u32,
    /// Seconds from a pod's creation to Ready; each value is a separate run. The defaults:
    /// 1 s, Kinetic's measured cold start p99 (912 ms, `kinetic bench serve` in
    /// docs/benchmarks.md) rounded up; 15 s, a typical Deployment pod on a cluster without an
    /// image pull: upstream's pod start-up SLO (p99 <= 5 s, sig-scalability
    /// `slos/pod_startup_latency.md`) plus one default readiness-probe period (10 s)
    #[arg(long, value_delimiter = ',', default_values_t = [1, 15])]
    startup_secs: Vec<u64>,
    /// The quantile of its own past forecast errors Kinetic's predictor adds as headroom
    #[arg(long, default_value_t = 0.95)]
    quantile: f64,
    /// Where to write the chart (SVG): load and each policy's ready pods over time (with
    /// several start-ups, one per start-up: `-<secs>s` before the extension)
    #[arg(long, default_value = "autoscale.svg")]
    chart: PathBuf,
    /// Also sweep each policy's own setting (HPA's CPU target, KPA's target utilisation, our
    /// quantile) and report the pod-minutes each baseline needs for our SLO-violation minutes
    #[arg(long)]
    iso_slo: bool,
}

/// Seconds per sample of a trace.
const STEP: u64 = 60;
/// The longest trace accepted (a year of minutes), so a stray timestamp is an error, not an
/// allocation of gigabytes.
const MAX_MINUTES: usize = 366 * 1440;

/// A loaded trace: load per minute in pods.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub name: String,
    pub load: Vec<f64>,
}

/// Parses a trace's CSV text; `name` is for messages. The load is scaled so its peak is
/// `peak_pods`.
pub fn parse_trace(name: &str, text: &str, peak_pods: u32) -> anyhow::Result<Trace> {
    let mut rows: Vec<(i64, f64)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (i == 0 && line.eq_ignore_ascii_case("ts,value")) {
            continue;
        }
        let bad = || {
            anyhow::anyhow!(
                "{name} line {}: expected `ts,value` (Unix seconds, a non-negative number), got {line:?}",
                i + 1
            )
        };
        let (ts, v) = line.split_once(',').ok_or_else(bad)?;
        let ts: f64 = ts.trim().parse().map_err(|_| bad())?;
        let v: f64 = v.trim().parse().map_err(|_| bad())?;
        if !ts.is_finite() || !v.is_finite() || v < 0.0 {
            return Err(bad());
        }
        rows.push((ts.round() as i64, v));
    }
    if rows.len() < 2 {
        bail!("{name}: fewer than two `ts,value` rows");
    }
    rows.sort_by_key(|r| r.0);
    let t0 = rows[0].0;
    let span = (rows[rows.len() - 1].0 - t0) / STEP as i64;
    let minutes = usize::try_from(span).unwrap_or(usize::MAX).saturating_add(1);
    if minutes > MAX_MINUTES {
        bail!("{name}: the rows span more than a year of minutes ({minutes})");
    }
    let mut samples: Vec<Option<f64>> = vec![None; minutes];
    for (ts, v) in rows {
        let m = ((ts - t0) as f64 / STEP as f64).round() as usize;
        samples[m.min(minutes - 1)] = Some(v);
    }
    let raw = kinetic_predict::clean::interpolate(&samples)
        .with_context(|| format!("{name}: no values"))?;
    let peak = raw.iter().copied().fold(0.0, f64::max);
    if peak <= 0.0 {
        bail!("{name}: every value is 0, so there is no load to scale for");
    }
    let k = f64::from(peak_pods.max(1)) / peak;
    Ok(Trace { name: name.to_owned(), load: raw.iter().map(|v| v * k).collect() })
}

/// What a policy sees at a decision.
pub struct Obs<'a> {
    /// Seconds since the trace's start.
    pub now: u64,
    /// Pods that exist (the scale's replicas).
    pub pods: &'a [SimPod],
    /// metrics-server's latest CPU reading, `None` before its second scrape.
    pub metric: Option<MetricsView>,
    /// The minutes the metrics have covered whole (the last scrape is past their end): what a
    /// predictor's history holds.
    pub history: &'a [f64],
    /// The trace, for the one policy with its own per-second pipeline: Knative's autoscaler
    /// scrapes each pod's queue-proxy every second, so KPA reads the seconds before `now`
    /// and nothing later.
    load: &'a [f64],
}

impl Obs<'_> {
    /// The load of second `s` (< `now`), as Knative's 1 s stat scrape reports it.
    fn load_at(&self, s: u64) -> f64 {
        debug_assert!(s < self.now);
        self.load.get((s / STEP) as usize).copied().unwrap_or(0.0)
    }
}

/// metrics-server's reading of the pods' CPU (`pkg/storage/pod.go`): each scrape stores every
/// container's cumulative CPU counter, and a pod's usage is the rate between its last two
/// points, so it covers the `window` seconds before `at` and a pod gets a value only once it has
/// run through a whole window. The release manifests run metrics-server with
/// `--metric-resolution=15s` (its FAQ: the kubelet's own resolution; the binary's default is
/// 60 s). The HPA's 15 s sync is not aligned with the scrapes: the reading it gets is half a
/// resolution old on average, so scrapes fall [`SCRAPE_OFFSET`] s after each sync's multiple
/// of 15 and every 15 s decision sees a reading 7 s old, covering the 22 to 7 s before it.
/// The kubelet's own stats housekeeping (10 to 15 s in cAdvisor) is not added: the reading is
/// if anything fresher than on a real cluster, which favours the policies that read it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricsView {
    /// The scrape the reading is from.
    pub at: u64,
    /// Seconds it averages over (`--metric-resolution`).
    pub window: u64,
    /// Mean load over the window, in pods (the sum of the pods' CPU, as a policy that totals
    /// the metric sees it).
    pub total: f64,
    /// Mean load per Ready pod over the window: the usage of a pod Ready through all of it.
    pub per_pod: f64,
}

impl MetricsView {
    /// Whether the pod has a reading: Ready before the window began (two scrapes of it).
    pub fn covers(&self, p: &SimPod) -> bool {
        p.ready_at + self.window <= self.at
    }
}

/// `--metric-resolution` in metrics-server's release manifests.
pub const METRICS_RESOLUTION: u64 = 15;
/// Scrapes at 15 k + 8 s: 7 s before each 15 s decision.
pub const SCRAPE_OFFSET: u64 = 8;

/// The reading metrics-server serves at `now`: from the last scrape at or before it, over the
/// window before that scrape. `ready[t]` is the Ready pods in second `t` (< `now`).
fn metrics_view(now: u64, load: &[f64], ready: &[u32]) -> Option<MetricsView> {
    let r = METRICS_RESOLUTION;
    let at = now.checked_sub(SCRAPE_OFFSET)? / r * r + SCRAPE_OFFSET;
    let from = at.checked_sub(r)?;
    let (mut total, mut per_pod) = (0.0, 0.0);
    for t in from..at {
        let u = load.get((t / STEP) as usize).copied().unwrap_or(0.0);
        total += u;
        per_pod += u / f64::from(ready.get(t as usize).copied().unwrap_or(0).max(1));
    }
    Some(MetricsView { at, window: r, total: total / r as f64, per_pod: per_pod / r as f64 })
}

/// One pod of the simulation.
#[derive(Debug, Clone, Copy)]
pub struct SimPod {
    pub id: u64,
    pub created: u64,
    pub ready_at: u64,
}

/// An autoscaling policy: every `period()` seconds it names the replicas.
pub trait Policy {
    fn period(&self) -> u64;
    fn decide(&mut self, obs: &Obs<'_>) -> i32;
}

/// Results of one policy on one trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub pod_minutes: f64,
    pub violation_minutes: f64,
    pub demand: f64,
    /// Mean ready pods per minute, for the chart.
    pub ready: Vec<f32>,
}

/// Replays `load` (pods per minute) through `policy`; pods take `startup` seconds to Ready.
pub fn simulate(load: &[f64], policy: &mut dyn Policy, startup: u64) -> Outcome {
    let mut pods: Vec<SimPod> = Vec::new();
    let mut next_id = 0u64;
    // Warm start: the first minute's pods exist and are ready.
    let initial = (load.first().copied().unwrap_or(0.0) - 1e-9).ceil().max(1.0) as usize;
    for _ in 0..initial {
        pods.push(SimPod { id: next_id, created: 0, ready_at: 0 });
        next_id += 1;
    }
    let period = policy.period().max(1);
    let (mut pod_secs, mut viol_secs, mut demand) = (0u64, 0u64, 0.0);
    let mut ready_per_min = Vec::with_capacity(load.len());
    // Ready pods per second, for metrics-server's per-pod reading.
    let mut ready_log: Vec<u32> = Vec::with_capacity(load.len() * STEP as usize);
    for (m, &u) in load.iter().enumerate() {
        let mut ready_sum = 0u64;
        for sec in 0..STEP {
            let now = m as u64 * STEP + sec;
            if now.is_multiple_of(period) && now > 0 {
                let metric = metrics_view(now, load, &ready_log);
                let covered = metric.map_or(0, |v| (v.at / STEP) as usize).min(m);
                let obs = Obs { now, pods: &pods, metric, history: &load[..covered], load };
                let want = policy.decide(&obs).max(1) as usize;
                if want > pods.len() {
                    for _ in pods.len()..want {
                        pods.push(SimPod { id: next_id, created: now, ready_at: now + startup });
                        next_id += 1;
                    }
                } else {
                    // The newest go first (upstream's ReplicaSet deletes not-ready and
                    // younger pods first).
                    pods.truncate(want);
                }
            }
            let ready = pods.iter().filter(|p| p.ready_at <= now).count() as u64;
            ready_log.push(u32::try_from(ready).unwrap_or(u32::MAX));
            ready_sum += ready;
            pod_secs += pods.len() as u64;
            if u > ready as f64 + 1e-9 {
                viol_secs += 1;
            }
        }
        demand += u;
        ready_per_min.push(ready_sum as f32 / STEP as f32);
    }
    Outcome {
        pod_minutes: pod_secs as f64 / STEP as f64,
        violation_minutes: viol_secs as f64 / STEP as f64,
        demand,
        ready: ready_per_min,
    }
}

/// The HPA's view of the pods: requests of 1 core, and one pod of load uses 70 % of it (the
/// capacity model's reference utilisation: a pod "serves one pod of load at the target").
/// Each pod's metric is metrics-server's reading; a Ready pod without one is `missing`, as
/// upstream's HPA sees a pod metrics-server has not yet scraped twice.
const REFERENCE_UTILISATION: i32 = 70;

fn hpa_pods(obs: &Obs<'_>) -> (Vec<hpa::Pod>, BTreeMap<String, hpa::Metric>) {
    let now = obs.now;
    let mut pods = Vec::with_capacity(obs.pods.len());
    let mut metrics = BTreeMap::new();
    for p in obs.pods {
        let name = format!("p{}", p.id);
        let is_ready = p.ready_at <= now;
        pods.push(hpa::Pod {
            name: name.clone(),
            phase: if is_ready { hpa::Phase::Running } else { hpa::Phase::Pending },
            deleting: false,
            ready: Some(hpa::Ready {
                status: is_ready,
                last_transition: Duration::from_secs(if is_ready { p.ready_at } else { p.created }),
            }),
            start_time: Some(Duration::from_secs(p.created)),
            request: Ok(1000),
        });
        if let Some(v) = obs.metric.filter(|v| is_ready && v.covers(p)) {
            metrics.insert(
                name,
                hpa::Metric {
                    value: (v.per_pod * f64::from(REFERENCE_UTILISATION) * 10.0).round() as i64,
                    timestamp: Duration::from_secs(v.at),
                    window: Duration::from_secs(v.window),
                },
            );
        }
    }
    (pods, metrics)
}

/// The HPA's proposal for its CPU `Utilization` target `target` (%).
fn cpu_outcome(obs: &Obs<'_>, target: i32) -> hpa::MetricOutcome {
    let (pods, metrics) = hpa_pods(obs);
    let current = obs.pods.len() as i32;
    match hpa::resource_replicas(
        current,
        hpa::Target::Utilization(target),
        "cpu",
        &pods,
        &metrics,
        Duration::from_secs(obs.now),
    ) {
        Ok(p) => hpa::MetricOutcome::Valid {
            replicas: p.replicas,
            name: "cpu resource utilization (percentage of request)".into(),
        },
        Err(e) => hpa::MetricOutcome::Invalid {
            reason: "FailedGetResourceMetric".into(),
            message: e.to_string(),
        },
    }
}

/// Upstream's HPA at a CPU `Utilization` target (70 % unless swept for the iso-SLO view).
pub struct Hpa {
    history: hpa::History,
    target: i32,
}

impl Hpa {
    pub fn new(target: i32) -> Self {
        Self { history: hpa::History::default(), target }
    }
}

impl Default for Hpa {
    fn default() -> Self {
        Self::new(REFERENCE_UTILISATION)
    }
}

const MAX_REPLICAS: i32 = 10_000;

fn hpa_step(history: &mut hpa::History, obs: &Obs<'_>, outcomes: &[hpa::MetricOutcome]) -> i32 {
    let behavior = hpa::Behavior::default();
    let current = obs.pods.len() as i32;
    let now = Duration::from_secs(obs.now);
    let plan = hpa::plan(history, Some(&behavior), current, 1, MAX_REPLICAS, outcomes, now);
    if plan.error.is_some() || !plan.rescale {
        return current;
    }
    hpa::record_scale(history, Some(&behavior), current, plan.desired, now);
    plan.desired
}

impl Policy for Hpa {
    fn period(&self) -> u64 {
        hpa::SYNC_PERIOD.as_secs()
    }
    fn decide(&mut self, obs: &Obs<'_>) -> i32 {
        let m = cpu_outcome(obs, self.target);
        hpa_step(&mut self.history, obs, &[m])
    }
}

/// Knative's KPA decider.
pub struct Kpa {
    autoscaler: Autoscaler,
    metrics: kinetic_autoscale::Metrics,
    recorded_until: u64,
}

/// The concurrency one pod of load stands for: Knative's per-pod target at its defaults
/// (`target` 10 at `container-concurrency-target-percentage` 70 %), the same reference
/// utilisation as the HPA's.
const KPA_PER_POD: f64 = 7.0;

impl Kpa {
    /// KPA with `target` 10 and `target-utilization-percentage` `utilisation` (Knative's
    /// default 70 %, swept for the iso-SLO view).
    ///
    /// # Errors
    /// Never with these annotations; a changed one could be refused.
    pub fn new(utilisation: u32) -> anyhow::Result<Self> {
        let config = Config::default();
        let utilisation = utilisation.to_string();
        let ann: BTreeMap<String, String> = [
            ("autoscaling.knative.dev/target", "10"),
            ("autoscaling.knative.dev/min-scale", "1"),
            (kinetic_autoscale::revision::TARGET_UTILIZATION_PERCENTAGE_ANNOTATION, &utilisation),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let rev = RevisionSpec::from_annotations(&ann, 0, &config)
            .map_err(|e| anyhow::anyhow!("revision annotations: {e:?}"))?;
        let spec = DeciderSpec::new(&config, &rev, true);
        let metrics = spec.metrics();
        Ok(Self {
            autoscaler: Autoscaler::new(spec, Time::from_secs(0), 1),
            metrics,
            recorded_until: 0,
        })
    }
}

impl Policy for Kpa {
    fn period(&self) -> u64 {
        kinetic_autoscale::autoscaler::TICK_INTERVAL.as_secs()
    }
    fn decide(&mut self, obs: &Obs<'_>) -> i32 {
        // Knative's autoscaler scrapes every pod's queue-proxy each second
        // (`pkg/autoscaler/metrics/collector.go`, `scrapeTickInterval` 1 s), so the decider has
        // every second's concurrency up to the last one; it does not read metrics-server.
        while self.recorded_until < obs.now {
            let s = self.recorded_until;
            let c = obs.load_at(s) * KPA_PER_POD;
            self.metrics.record(Time::from_secs(s), Stat { concurrency: c, requests: c });
            self.recorded_until += 1;
        }
        let ready = obs.pods.iter().filter(|p| p.ready_at <= obs.now).count() as i32;
        let r = self.autoscaler.scale(Time::from_secs(obs.now), &self.metrics, ready);
        if r.scale_valid { r.desired } else { obs.pods.len() as i32 }
    }
}

// ---------------------------------------------------------------------------------------
// Ours.

/// Kinetic's predictive policy. Every hour it refits `kinetic_predict`'s model on up to 28
/// days of history (no period found, or under two cycles: no profile) and selects a
/// [`kinetic_predict::Nowcast`] on the last week of it ([`kinetic_predict::Nowcast::select`]:
/// the cheapest of the seasonal and flat forecasters, levels of 1, 3 or 6 minutes, additive or
/// relative margins, each with the `--quantile` quantile of its own past errors per horizon).
/// Every 15 s it forecasts the minutes from the first one it has no sample of up to the one the
/// lead time (start-up + one control period) reaches, and runs the larger of that and the
/// reactive count (the metrics-server reading's total, the same reading the HPA gets); no
/// stabilisation window.
///
/// Its samples: the minutes metrics-server's readings have covered whole, and, when the
/// latest reading's 15 s window lies inside the next minute, that reading as the sample of
/// that minute (a window's mean estimates its minute's mean; the HPA acts on the same reading).
/// The reactive count stands only while the reading's window reaches into the current
/// minute: a reading of a past minute is one of the forecast's samples, and when the forecast
/// says the load falls, capacity follows it down instead of being held at the last minute's.
pub struct Ours {
    startup: u64,
    quantile: f64,
    nowcast: Option<kinetic_predict::Nowcast>,
    refreshed: Option<usize>,
}

const OURS_PERIOD: u64 = 15;
/// How often the predictors refit (minutes).
const REFRESH_MIN: usize = 60;
const OURS_HISTORY: usize = 28 * 1440;
/// The history the nowcast's errors are calibrated on (minutes): the last week.
const OURS_CALIBRATION: usize = 7 * 1440;
/// The most samples a level averages ([`kinetic_predict::nowcast::LEVELS`]).
const OURS_K: usize = 6;
/// How old metrics-server's reading is at a decision on a multiple of 15 s.
const SCRAPE_AGE: u64 = METRICS_RESOLUTION - SCRAPE_OFFSET;

impl Ours {
    pub fn new(startup: u64, quantile: f64) -> Self {
        Self { startup, quantile, nowcast: None, refreshed: None }
    }

    /// Minutes after the first uncovered one that a decision must cover at most: from the end
    /// of the covered history (the reading's age behind now) to now + start-up + one period.
    fn lead(&self) -> usize {
        ((SCRAPE_AGE + self.startup + OURS_PERIOD).div_ceil(STEP)) as usize
    }
}

impl Policy for Ours {
    fn period(&self) -> u64 {
        OURS_PERIOD
    }
    fn decide(&mut self, obs: &Obs<'_>) -> i32 {
        let covered = obs.history.len();
        if self.refreshed.is_none_or(|r| covered >= r + REFRESH_MIN) {
            let start = covered.saturating_sub(OURS_HISTORY);
            let h: Vec<Option<f64>> = obs.history[start..].iter().map(|v| Some(*v)).collect();
            let x = kinetic_predict::clean::clean(&h).unwrap_or_default();
            let model = kinetic_predict::fit(&h, STEP, self.lead() + 1).ok();
            self.nowcast = (x.len() > 60).then(|| {
                let mut n = kinetic_predict::Nowcast::select(
                    &x,
                    model.as_ref(),
                    self.lead(),
                    self.quantile,
                    OURS_CALIBRATION,
                );
                // Phases are counted from the trace's start from here on.
                n.shift(start);
                n
            });
            self.refreshed = Some(covered);
        }
        let current = obs.now / STEP;
        // The reading's window [at - window, at), by minute.
        let window = obs.metric.map(|v| ((v.at - v.window) / STEP, (v.at - 1) / STEP, v.total));
        // Without a reading yet, the reactive half keeps what runs.
        let reactive = match obs.metric {
            None => obs.pods.len() as i32,
            Some(v) => (v.total - 1e-9).ceil().max(1.0) as i32,
        };
        let Some(n) = &self.nowcast else { return reactive };
        let mut recent: Vec<f64> = obs.history[covered.saturating_sub(OURS_K)..].to_vec();
        let fresh = window.filter(|(from, to, _)| from == to && *to == covered as u64);
        if let Some((_, _, total)) = fresh {
            recent.push(total);
        }
        let first = covered + usize::from(fresh.is_some());
        let reach = ((obs.now + self.startup + OURS_PERIOD) / STEP) as usize;
        let reads_now = window.is_some_and(|(_, to, _)| to == current);
        let forecast = n.forecast_through(&recent, first, reach).map(|f| (f - 1e-9).ceil() as i32);
        match forecast {
            Some(f) if reads_now => f.max(reactive),
            Some(f) => f.max(1),
            None => reactive,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Report.

/// The policies in report order; the first three are the baselines.
pub const POLICIES: [&str; 4] = ["hpa", "kpa", "crane", "ours"];

/// Runs every policy on `trace` at its default setting (ours at `quantile`).
pub fn evaluate(trace: &Trace, startup: u64, quantile: f64) -> anyhow::Result<Vec<Outcome>> {
    let mut policies: Vec<Box<dyn Policy>> = vec![
        Box::new(Hpa::default()),
        Box::new(Kpa::new(KPA_DEFAULT_UTILISATION)?),
        Box::new(Crane::new()),
        Box::new(Ours::new(startup, quantile)),
    ];
    Ok(policies.iter_mut().map(|p| simulate(&trace.load, p.as_mut(), startup)).collect())
}

/// Knative's `container-concurrency-target-percentage` default.
const KPA_DEFAULT_UTILISATION: u32 = 70;

/// The settings swept for the iso-SLO view, fixed before any run and the same for every
/// trace: each policy's own knob from its default towards more headroom. HPA's CPU
/// `Utilization` target (%), KPA's `target-utilization-percentage`, our quantile.
pub const HPA_TARGETS: [i32; 6] = [70, 60, 50, 40, 30, 20];
pub const KPA_UTILISATIONS: [u32; 6] = [70, 60, 50, 40, 30, 20];
pub const OURS_QUANTILES: [f64; 5] = [0.5, 0.8, 0.9, 0.95, 0.99];

/// One point of a sweep: policy, setting, pod-minutes and SLO-violation minutes.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepPoint {
    pub policy: &'static str,
    pub setting: String,
    pub pod_minutes: f64,
    pub violation_minutes: f64,
}

/// Runs the sweeps of [`HPA_TARGETS`], [`KPA_UTILISATIONS`] and [`OURS_QUANTILES`] on `trace`.
pub fn sweep(trace: &Trace, startup: u64) -> anyhow::Result<Vec<SweepPoint>> {
    let mut runs: Vec<(&'static str, String, Box<dyn Policy>)> = Vec::new();
    for t in HPA_TARGETS {
        runs.push(("hpa", format!("target {t} %"), Box::new(Hpa::new(t))));
    }
    for u in KPA_UTILISATIONS {
        runs.push(("kpa", format!("utilisation {u} %"), Box::new(Kpa::new(u)?)));
    }
    for q in OURS_QUANTILES {
        runs.push(("ours", format!("quantile {q}"), Box::new(Ours::new(startup, q))));
    }
    Ok(runs
        .into_iter()
        .map(|(policy, setting, mut p)| {
            let o = simulate(&trace.load, p.as_mut(), startup);
            SweepPoint {
                policy,
                setting,
                pod_minutes: o.pod_minutes,
                violation_minutes: o.violation_minutes,
            }
        })
        .collect())
}

/// The pod-minutes a policy's sweep needs for `violations` SLO-violation minutes: linear
/// between the two settings that bracket it; `Err` with the most-headroom point when even
/// that one violates more.
pub fn pods_at(points: &[(f64, f64)], violations: f64) -> Result<f64, (f64, f64)> {
    // (pod-minutes, violation minutes), in the order of more headroom.
    for w in points.windows(2) {
        let ((p0, v0), (p1, v1)) = (w[0], w[1]);
        if v0 >= violations && violations >= v1 {
            if (v0 - v1).abs() < f64::EPSILON {
                return Ok(p0.min(p1));
            }
            return Ok(p0 + (p1 - p0) * (v0 - violations) / (v0 - v1));
        }
    }
    match points.first() {
        Some(&(p, v)) if v <= violations => Ok(p),
        _ => Err(points.last().copied().unwrap_or((0.0, f64::INFINITY))),
    }
}

/// The iso-SLO report: every swept setting's totals over the traces, then what each baseline
/// needs for our SLO-violation minutes at `quantile`.
pub fn iso_slo(sweeps: &[Vec<SweepPoint>], ours: (f64, f64)) -> String {
    let mut totals: Vec<SweepPoint> = Vec::new();
    for trace in sweeps {
        for (i, p) in trace.iter().enumerate() {
            match totals.get_mut(i) {
                Some(t) => {
                    t.pod_minutes += p.pod_minutes;
                    t.violation_minutes += p.violation_minutes;
                }
                None => totals.push(p.clone()),
            }
        }
    }
    let mut out = String::new();
    let _ =
        writeln!(out, "{:<6} {:<18} {:>12} {:>10}", "policy", "setting", "pod-minutes", "SLO-min");
    for t in &totals {
        let _ = writeln!(
            out,
            "{:<6} {:<18} {:>12.0} {:>10.1}",
            t.policy, t.setting, t.pod_minutes, t.violation_minutes
        );
    }
    for b in ["hpa", "kpa"] {
        let points: Vec<(f64, f64)> = totals
            .iter()
            .filter(|t| t.policy == b)
            .map(|t| (t.pod_minutes, t.violation_minutes))
            .collect();
        let _ = match pods_at(&points, ours.1) {
            Ok(p) => writeln!(
                out,
                "iso-SLO: {b} needs {p:.0} pod-minutes for ours' {:.1} SLO-violation minutes; ours uses {:.0} ({:+.1} %)",
                ours.1,
                ours.0,
                (ours.0 / p - 1.0) * 100.0
            ),
            Err((p, v)) => writeln!(
                out,
                "iso-SLO: {b} does not reach ours' {:.1} SLO-violation minutes in its sweep; at most headroom it has {v:.1} with {p:.0} pod-minutes; ours uses {:.0} ({:+.1} %)",
                ours.1,
                ours.0,
                (ours.0 / p - 1.0) * 100.0
            ),
        };
    }
    out
}

fn ratio(v: f64, best: f64) -> String {
    if best > 0.0 {
        format!("{:.2}", v / best)
    } else if v == 0.0 {
        "1.00".into()
    } else {
        "inf".into()
    }
}

/// The table: per trace and overall, each policy's figures and its ratios to the best
/// baseline.
pub fn table(results: &[(String, Vec<Outcome>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14} {:<6} {:>12} {:>10} {:>7} {:>9} {:>9}",
        "trace", "policy", "pod-minutes", "SLO-min", "util", "pods/best", "SLO/best"
    );
    type Row = (String, Vec<(f64, f64, f64)>);
    let mut rows: Vec<Row> = results
        .iter()
        .map(|(n, o)| {
            (n.clone(), o.iter().map(|o| (o.pod_minutes, o.violation_minutes, o.demand)).collect())
        })
        .collect();
    let mut total = vec![(0.0, 0.0, 0.0); POLICIES.len()];
    for (_, r) in &rows {
        for (t, v) in total.iter_mut().zip(r) {
            t.0 += v.0;
            t.1 += v.1;
            t.2 += v.2;
        }
    }
    rows.push(("ALL".into(), total));
    for (name, r) in &rows {
        let best_pods = r[..3].iter().map(|v| v.0).fold(f64::INFINITY, f64::min);
        let best_slo = r[..3].iter().map(|v| v.1).fold(f64::INFINITY, f64::min);
        for (p, v) in POLICIES.iter().zip(r) {
            let util = if v.0 > 0.0 { v.2 / v.0 * 100.0 } else { 0.0 };
            let _ = writeln!(
                out,
                "{:<14} {:<6} {:>12.0} {:>10.1} {:>6.1}% {:>9} {:>9}",
                name,
                p,
                v.0,
                v.1,
                util,
                ratio(v.0, best_pods),
                ratio(v.1, best_slo)
            );
        }
    }
    out
}

/// Against the issue's target: ours vs each baseline overall, and traces where ours is worse
/// than the best baseline on both measures.
pub fn verdict(results: &[(String, Vec<Outcome>)]) -> String {
    let mut sum = [(0.0, 0.0); 4];
    let mut both_worse = Vec::new();
    for (name, o) in results {
        for (s, v) in sum.iter_mut().zip(o) {
            s.0 += v.pod_minutes;
            s.1 += v.violation_minutes;
        }
        let best_pods = o[..3].iter().map(|v| v.pod_minutes).fold(f64::INFINITY, f64::min);
        let best_slo = o[..3].iter().map(|v| v.violation_minutes).fold(f64::INFINITY, f64::min);
        if o[3].pod_minutes > best_pods && o[3].violation_minutes > best_slo {
            both_worse.push(name.clone());
        }
    }
    let mut out = String::new();
    let ours = sum[3];
    for (i, p) in POLICIES[..3].iter().enumerate() {
        let _ = writeln!(
            out,
            "ours vs {p}: pod-minutes {:+.1} %, SLO-violation minutes {:.1} vs {:.1}",
            (ours.0 / sum[i].0 - 1.0) * 100.0,
            ours.1,
            sum[i].1
        );
    }
    let _ = writeln!(
        out,
        "traces where ours is worse than the best baseline on both: {}",
        if both_worse.is_empty() { "none".to_owned() } else { both_worse.join(", ") }
    );
    out
}

const COLOURS: [&str; 4] = ["#1f77b4", "#2ca02c", "#ff7f0e", "#d62728"];

/// One panel: load (grey area) and each policy's ready pods over minutes `from..to`, at most
/// `width` columns (each the maximum of its minutes).
fn panel(
    svg: &mut String,
    title: &str,
    load: &[f64],
    outcomes: &[Outcome],
    y0: f64,
    from: usize,
    to: usize,
) {
    let (w, h, left) = (1100.0, 160.0, 50.0);
    let n = to - from;
    let cols = n.clamp(1, 550);
    let per = n.div_ceil(cols).max(1);
    let col_max = |f: &dyn Fn(usize) -> f64, c: usize| {
        (from + c * per..(from + (c + 1) * per).min(to)).map(f).fold(0.0, f64::max)
    };
    let ncol = n.div_ceil(per);
    let ymax =
        (from..to).map(|i| load[i]).fold(1.0, f64::max).max(
            outcomes.iter().flat_map(|o| o.ready[from..to].iter()).fold(1.0f32, |a, b| a.max(*b))
                as f64,
        ) * 1.05;
    let x = |c: usize| left + c as f64 * w / ncol.max(1) as f64;
    let y = |v: f64| y0 + 20.0 + h - v / ymax * h;
    let _ =
        writeln!(svg, r#"<text x="{left}" y="{}" font-size="13">{}</text>"#, y0 + 14.0, xml(title));
    let _ = writeln!(
        svg,
        r##"<rect x="{left}" y="{}" width="{w}" height="{h}" fill="none" stroke="#999"/>"##,
        y0 + 20.0
    );
    let _ =
        writeln!(svg, r#"<text x="5" y="{}" font-size="10">{:.0}</text>"#, y(ymax) + 10.0, ymax);
    let _ = writeln!(svg, r#"<text x="5" y="{}" font-size="10">0</text>"#, y(0.0));
    let mut area = format!("M{} {}", x(0), y(0.0));
    for c in 0..ncol {
        let v = col_max(&|i| load[i], c);
        let _ = write!(area, " L{:.0} {:.0} L{:.0} {:.0}", x(c), y(v), x(c + 1), y(v));
    }
    let _ = write!(area, " L{} {} Z", x(ncol), y(0.0));
    let _ = writeln!(svg, r##"<path d="{area}" fill="#ccc" stroke="none"/>"##);
    for (o, colour) in outcomes.iter().zip(COLOURS) {
        let mut d = String::new();
        for c in 0..ncol {
            let v = col_max(&|i| f64::from(o.ready[i]), c);
            let _ = write!(
                d,
                "{}{:.0} {:.0} L{:.0} {:.0}",
                if c == 0 { "M" } else { " L" },
                x(c),
                y(v),
                x(c + 1),
                y(v)
            );
        }
        let _ = writeln!(svg, r#"<path d="{d}" fill="none" stroke="{colour}" stroke-width="1"/>"#);
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The chart: per trace, the whole trace and its last two days, load in grey and each
/// policy's ready pods as a line.
pub fn chart(traces: &[Trace], results: &[(String, Vec<Outcome>)]) -> String {
    let panel_h = 200.0;
    let height = 40.0 + panel_h * 2.0 * traces.len() as f64;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="1200" height="{height}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
"#
    );
    let mut lx = 50.0;
    let _ = writeln!(
        svg,
        r##"<rect x="{lx}" y="8" width="14" height="10" fill="#ccc"/><text x="{}" y="17" font-size="12">load (pods needed)</text>"##,
        lx + 18.0
    );
    lx += 150.0;
    for (p, c) in POLICIES.iter().zip(COLOURS) {
        let _ = writeln!(
            svg,
            r#"<rect x="{lx}" y="8" width="14" height="10" fill="{c}"/><text x="{}" y="17" font-size="12">{p} ready pods</text>"#,
            lx + 18.0
        );
        lx += 130.0;
    }
    for (i, (t, (_, o))) in traces.iter().zip(results).enumerate() {
        let y0 = 30.0 + panel_h * 2.0 * i as f64;
        let n = t.load.len();
        panel(
            &mut svg,
            &format!("{}: all {} days (max per column)", t.name, n / 1440),
            &t.load,
            o,
            y0,
            0,
            n,
        );
        let from = n.saturating_sub(2 * 1440);
        panel(
            &mut svg,
            &format!("{}: last {} hours", t.name, (n - from) / 60),
            &t.load,
            o,
            y0 + panel_h,
            from,
            n,
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn trace_name(path: &Path) -> String {
    path.file_stem()
        .map_or_else(|| path.display().to_string(), |s| s.to_string_lossy().into_owned())
}

/// The chart's file for one start-up of several: `autoscale-15s.svg`.
fn chart_path(chart: &Path, startup: u64, several: bool) -> PathBuf {
    if !several {
        return chart.to_owned();
    }
    let stem = chart.file_stem().map_or_else(|| "autoscale".into(), |s| s.to_string_lossy());
    let ext = chart.extension().map_or_else(|| "svg".into(), |s| s.to_string_lossy());
    chart.with_file_name(format!("{stem}-{startup}s.{ext}"))
}

/// `kinetic bench autoscale`.
#[allow(clippy::print_stdout)]
pub fn run(args: AutoscaleArgs) -> anyhow::Result<()> {
    let mut traces = Vec::new();
    for path in &args.traces {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        traces.push(parse_trace(&trace_name(path), &text, args.peak_pods)?);
    }
    let several = args.startup_secs.len() > 1;
    for &startup in &args.startup_secs {
        let mut results = Vec::new();
        for t in &traces {
            results.push((t.name.clone(), evaluate(t, startup, args.quantile)?));
        }
        println!(
            "kinetic bench autoscale: {} trace(s), peak = {} pods, start-up {startup} s, ours at quantile {}",
            traces.len(),
            args.peak_pods,
            args.quantile
        );
        print!("{}", table(&results));
        print!("{}", verdict(&results));
        if args.iso_slo {
            let mut sweeps = Vec::new();
            for t in &traces {
                sweeps.push(sweep(t, startup)?);
            }
            let ours = results.iter().fold((0.0, 0.0), |a, (_, o)| {
                (a.0 + o[3].pod_minutes, a.1 + o[3].violation_minutes)
            });
            print!("{}", iso_slo(&sweeps, ours));
        }
        let path = chart_path(&args.chart, startup, several);
        std::fs::write(&path, chart(&traces, &results))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("chart: {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(values: &[f64]) -> String {
        let mut s = "ts,value\n".to_owned();
        for (i, v) in values.iter().enumerate() {
            let _ = writeln!(s, "{},{v}", 1_600_000_000 + i as u64 * 60);
        }
        s
    }

    #[test]
    fn a_constant_trace_costs_every_policy_the_same_pod_minutes() {
        let t = parse_trace("flat", &csv(&vec![42.0; 600]), 5).unwrap();
        let out = evaluate(&t, 1, 0.95).unwrap();
        for (p, o) in POLICIES.iter().zip(&out) {
            assert_eq!(o.pod_minutes, 5.0 * 600.0, "{p}");
            assert_eq!(o.violation_minutes, 0.0, "{p}");
        }
    }

    #[test]
    fn the_same_trace_twice_gives_identical_results() {
        let values: Vec<f64> = (0..4 * 1440)
            .map(|i| {
                let phase = (i % 1440) as f64 / 1440.0 * std::f64::consts::TAU;
                100.0 + 60.0 * phase.sin() + ((i * 7919) % 13) as f64
            })
            .collect();
        let text = csv(&values);
        let a = evaluate(&parse_trace("a", &text, 20).unwrap(), 1, 0.95).unwrap();
        let b = evaluate(&parse_trace("a", &text, 20).unwrap(), 1, 0.95).unwrap();
        assert_eq!(a, b);
        // Crane and ours found the daily period and used it.
        assert!(a.iter().all(|o| o.pod_minutes > 0.0));
    }

    /// Records when a policy changed the replicas.
    struct Recorder<P> {
        inner: P,
        changes: Vec<(u64, i32)>,
    }

    impl<P: Policy> Policy for Recorder<P> {
        fn period(&self) -> u64 {
            self.inner.period()
        }
        fn decide(&mut self, obs: &Obs<'_>) -> i32 {
            let d = self.inner.decide(obs);
            if d != obs.pods.len() as i32 {
                self.changes.push((obs.now, d));
            }
            d
        }
    }

    fn step_trace() -> Trace {
        let mut v = vec![4.0; 10];
        v.extend([8.0; 10]);
        parse_trace("step", &csv(&v), 8).unwrap()
    }

    #[test]
    fn the_hpa_sees_a_rise_through_metrics_servers_window() {
        // The load doubles at 600 s. The sync at 600 s has the scrape of 593 s (all before the
        // rise); the one at 615 s has the scrape of 608 s, whose window [593, 608) holds 8 s
        // of the new load: 6.13 pods of load on 4 pods, 107 % of the request, so 7 replicas.
        let mut r = Recorder { inner: Hpa::default(), changes: vec![] };
        simulate(&step_trace().load, &mut r, 1);
        assert_eq!(r.changes.first(), Some(&(615, 7)), "{:?}", r.changes);
    }

    #[test]
    fn ours_reactive_half_reads_the_same_window_as_the_hpa() {
        // Under an hour of history there is no forecast: ours is its reactive half, which
        // reads the same metrics-server reading as the HPA.
        let mut r = Recorder { inner: Ours::new(1, 0.95), changes: vec![] };
        simulate(&step_trace().load, &mut r, 1);
        assert_eq!(r.changes.first(), Some(&(615, 7)), "{:?}", r.changes);
    }

    /// A square wave: 10 minutes at 2 pods of load, 10 at 8, for 5 hours.
    fn square_trace() -> Trace {
        let v: Vec<f64> = (0..300).map(|m| if m % 20 < 10 { 2.0 } else { 8.0 }).collect();
        parse_trace("square", &csv(&v), 8).unwrap()
    }

    #[test]
    fn ours_scales_out_before_a_forecast_rise_and_down_at_a_forecast_fall() {
        let mut r = Recorder { inner: Ours::new(1, 0.95), changes: vec![] };
        let out = simulate(&square_trace().load, &mut r, 1);
        // From the third hour (the model fitted on two), every rise at minute 20 c + 10 is met
        // by 8 pods made in the minute before it, at its 45 s decision (the first that
        // forecasts the next minute); every fall at 20 c by 2 pods at the fall's first
        // second (the reading then is of the minute before, a forecast sample, not a reason
        // to hold 8 pods).
        for c in 6..14u64 {
            let rise = (20 * c + 10) * 60;
            let fall = (20 * c + 20) * 60;
            assert!(r.changes.contains(&(rise - 15, 8)), "rise {rise}: {:?}", r.changes);
            assert!(r.changes.contains(&(fall, 2)), "fall {fall}: {:?}", r.changes);
        }
        // The HPA on the same trace violates at each rise and holds 8 pods for 300 s after
        // each fall.
        let hpa = simulate(&square_trace().load, &mut Hpa::default(), 1);
        assert!(out.pod_minutes < hpa.pod_minutes, "{} vs {}", out.pod_minutes, hpa.pod_minutes);
        assert!(out.violation_minutes < hpa.violation_minutes);
    }

    #[test]
    fn metrics_server_reads_a_pod_only_after_a_whole_window_ready() {
        let load = vec![2.0; 3];
        // Two pods Ready from 0 s, a third from 100 s.
        let mut ready = vec![2u32; 100];
        ready.extend([3u32; 80]);
        assert_eq!(metrics_view(7, &load, &ready), None);
        assert_eq!(metrics_view(22, &load, &ready), None, "one scrape is not a rate");
        let v = metrics_view(30, &load, &ready).unwrap();
        assert_eq!((v.at, v.window, v.total, v.per_pod), (23, 15, 2.0, 1.0));
        let third = SimPod { id: 2, created: 99, ready_at: 100 };
        // The scrape of 113 s covers [98, 113): the third pod was not Ready through it.
        let v = metrics_view(120, &load, &ready).unwrap();
        assert_eq!(v.at, 113);
        assert!(!v.covers(&third));
        assert!((v.per_pod - (2.0 * 1.0 + 13.0 * 2.0 / 3.0) / 15.0).abs() < 1e-9);
        let v = metrics_view(128, &load, &ready).unwrap();
        assert_eq!(v.at, 128);
        assert!(v.covers(&third));
    }

    #[test]
    fn pods_at_interpolates_between_the_bracketing_settings() {
        // (pod-minutes, violation minutes) from the default towards more headroom.
        let sweep = [(100.0, 50.0), (110.0, 10.0), (130.0, 2.0)];
        type Case = (f64, Result<f64, (f64, f64)>);
        let cases: [Case; 5] = [
            (50.0, Ok(100.0)),
            (80.0, Ok(100.0)),
            (30.0, Ok(105.0)),
            (6.0, Ok(120.0)),
            (1.0, Err((130.0, 2.0))),
        ];
        for (v, want) in cases {
            assert_eq!(pods_at(&sweep, v), want, "{v}");
        }
    }

    #[test]
    fn bad_csv_is_a_clear_error() {
        let e = parse_trace("x", "ts,value\n1600000000,1\n1600000060,abc\n", 20).unwrap_err();
        assert_eq!(
            e.to_string(),
            "x line 3: expected `ts,value` (Unix seconds, a non-negative number), got \"1600000060,abc\""
        );
        let e = parse_trace("y", "ts,value\n", 20).unwrap_err();
        assert_eq!(e.to_string(), "y: fewer than two `ts,value` rows");
        let e = parse_trace("z", "1,0\n61,0\n", 20).unwrap_err();
        assert_eq!(e.to_string(), "z: every value is 0, so there is no load to scale for");
    }

    #[test]
    fn gaps_are_interpolated_and_rows_sorted() {
        let t = parse_trace("g", "120,3\n0,1\n", 3).unwrap();
        assert_eq!(t.load, [1.0, 2.0, 3.0]);
    }
}
