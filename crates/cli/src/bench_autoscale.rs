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
//! The simulation runs second by second; each policy decides at its own period.
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
//! Policies see only the past: completed minutes plus the current minute's load (what a
//! metric read now reports).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use kinetic_autoscale::hpa;
use kinetic_autoscale::{Autoscaler, Config, DeciderSpec, RevisionSpec, Stat, Time};

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
    /// Seconds from a pod's creation to Ready. The default, 1 s, is Kinetic's measured cold
    /// start p99 (912 ms, `kinetic bench serve` in docs/benchmarks.md) rounded up
    #[arg(long, default_value_t = 1)]
    startup_secs: u64,
    /// The quantile of its own past forecast errors Kinetic's predictor adds as headroom
    #[arg(long, default_value_t = 0.95)]
    quantile: f64,
    /// Where to write the chart (SVG): load and each policy's ready pods over time
    #[arg(long, default_value = "autoscale.svg")]
    chart: PathBuf,
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
    /// Load of the completed minutes, in pods.
    pub history: &'a [f64],
    /// The current minute's load.
    pub current: f64,
    /// Pods that exist (the scale's replicas).
    pub pods: &'a [SimPod],
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
    for (m, &u) in load.iter().enumerate() {
        let mut ready_sum = 0u64;
        for sec in 0..STEP {
            let now = m as u64 * STEP + sec;
            if now.is_multiple_of(period) && now > 0 {
                let obs = Obs { now, history: &load[..m], current: u, pods: &pods };
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

/// The HPA's view of the pods: requests of 1 core, usage split over the Ready pods so that one
/// pod of load is 70 % of its request.
const TARGET_UTILISATION: i32 = 70;
const METRIC_WINDOW: Duration = Duration::from_secs(15);

fn hpa_pods(obs: &Obs<'_>) -> (Vec<hpa::Pod>, BTreeMap<String, hpa::Metric>) {
    let now = obs.now;
    let ready = obs.pods.iter().filter(|p| p.ready_at <= now).count().max(1);
    let per_pod = obs.current / ready as f64 * f64::from(TARGET_UTILISATION) * 10.0;
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
        if is_ready {
            metrics.insert(
                name,
                hpa::Metric {
                    value: per_pod.round() as i64,
                    timestamp: Duration::from_secs(now),
                    window: METRIC_WINDOW,
                },
            );
        }
    }
    (pods, metrics)
}

fn cpu_outcome(obs: &Obs<'_>) -> hpa::MetricOutcome {
    let (pods, metrics) = hpa_pods(obs);
    let current = obs.pods.len() as i32;
    match hpa::resource_replicas(
        current,
        hpa::Target::Utilization(TARGET_UTILISATION),
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

/// Upstream's HPA.
#[derive(Default)]
pub struct Hpa {
    history: hpa::History,
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
        let m = cpu_outcome(obs);
        hpa_step(&mut self.history, obs, &[m])
    }
}

/// Knative's KPA decider.
pub struct Kpa {
    autoscaler: Autoscaler,
    metrics: kinetic_autoscale::Metrics,
    recorded_until: u64,
}

/// The concurrency one pod of load stands for: Knative's per-pod target (`target` 10 at
/// 70 % utilisation).
const KPA_PER_POD: f64 = 7.0;

impl Kpa {
    /// # Errors
    /// Never with these fixed annotations; a changed one could be refused.
    pub fn new() -> anyhow::Result<Self> {
        let config = Config::default();
        let ann: BTreeMap<String, String> =
            [("autoscaling.knative.dev/target", "10"), ("autoscaling.knative.dev/min-scale", "1")]
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
        // The gateway's per-second concurrency since the last tick.
        while self.recorded_until < obs.now {
            let s = self.recorded_until;
            let m = (s / STEP) as usize;
            let u = obs.history.get(m).copied().unwrap_or(obs.current);
            let c = u * KPA_PER_POD;
            self.metrics.record(Time::from_secs(s), Stat { concurrency: c, requests: c });
            self.recorded_until += 1;
        }
        let ready = obs.pods.iter().filter(|p| p.ready_at <= obs.now).count() as i32;
        let r = self.autoscaler.scale(Time::from_secs(obs.now), &self.metrics, ready);
        if r.scale_valid { r.desired } else { obs.pods.len() as i32 }
    }
}

// ---------------------------------------------------------------------------------------
// Crane's DSP predictor.

#[derive(Clone, Copy, Debug, Default)]
struct C64 {
    re: f64,
    im: f64,
}

impl C64 {
    fn mul(self, o: C64) -> C64 {
        C64 { re: self.re * o.re - self.im * o.im, im: self.re * o.im + self.im * o.re }
    }
    fn abs(self) -> f64 {
        self.re.hypot(self.im)
    }
}

/// In-place radix-2 FFT (`a.len()` a power of two); `inverse` without the 1/n.
fn fft2(a: &mut [C64], inverse: bool) {
    let n = a.len();
    let mut j = 0;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            a.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let ang = std::f64::consts::TAU / len as f64 * if inverse { 1.0 } else { -1.0 };
        let w = C64 { re: ang.cos(), im: ang.sin() };
        for start in (0..n).step_by(len) {
            let mut wk = C64 { re: 1.0, im: 0.0 };
            for k in 0..len / 2 {
                let u = a[start + k];
                let v = a[start + k + len / 2].mul(wk);
                a[start + k] = C64 { re: u.re + v.re, im: u.im + v.im };
                a[start + k + len / 2] = C64 { re: u.re - v.re, im: u.im - v.im };
                wk = wk.mul(w);
            }
        }
        len <<= 1;
    }
}

/// The DFT of a real series of any length (Bluestein's chirp-z over radix-2 FFTs).
fn dft(x: &[f64]) -> Vec<C64> {
    let n = x.len();
    if n == 0 {
        return vec![];
    }
    let m = (2 * n - 1).next_power_of_two();
    let chirp: Vec<C64> = (0..n)
        .map(|k| {
            // k² mod 2n keeps the angle small and exact.
            let kk = (k as u128 * k as u128 % (2 * n as u128)) as f64;
            let ang = std::f64::consts::PI * kk / n as f64;
            C64 { re: ang.cos(), im: -ang.sin() }
        })
        .collect();
    let mut a = vec![C64::default(); m];
    for k in 0..n {
        a[k] = C64 { re: x[k], im: 0.0 }.mul(chirp[k]);
    }
    let mut b = vec![C64::default(); m];
    b[0] = C64 { re: chirp[0].re, im: -chirp[0].im };
    for k in 1..n {
        let c = C64 { re: chirp[k].re, im: -chirp[k].im };
        b[k] = c;
        b[m - k] = c;
    }
    fft2(&mut a, false);
    fft2(&mut b, false);
    for i in 0..m {
        a[i] = a[i].mul(b[i]);
    }
    fft2(&mut a, true);
    (0..n)
        .map(|k| {
            let v = C64 { re: a[k].re / m as f64, im: a[k].im / m as f64 };
            v.mul(chirp[k])
        })
        .collect()
}

/// Circular autocorrelation of the standardised series: IFFT(|FFT|²) / n.
fn circular_acf(x: &[f64]) -> Vec<f64> {
    let n = x.len();
    let mean = x.iter().sum::<f64>() / n as f64;
    let sd = (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    if sd <= f64::EPSILON {
        return vec![0.0; n];
    }
    let z: Vec<f64> = x.iter().map(|v| (v - mean) / sd).collect();
    let f = dft(&z);
    let power: Vec<f64> = f.iter().map(|c| c.re * c.re + c.im * c.im).collect();
    // The inverse DFT of a real even spectrum is the DFT of it, conjugated, / n.
    dft(&power).iter().map(|c| c.re / (n as f64 * n as f64)).collect()
}

/// Slope of the least-squares line through `y` at x = 0, 1, ….
fn slope(y: &[f64]) -> f64 {
    let n = y.len() as f64;
    let mx = (n - 1.0) / 2.0;
    let my = y.iter().sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (i, v) in y.iter().enumerate() {
        num += (i as f64 - mx) * (v - my);
        den += (i as f64 - mx).powi(2);
    }
    if den > 0.0 { num / den } else { 0.0 }
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Crane's periodicity test of period `t` samples on `x` (its last `k·t` samples).
fn crane_is_periodic(x: &[f64], t: usize, cycles: usize, seed: u64) -> bool {
    let n = t * cycles;
    if x.len() < n {
        return false;
    }
    let x = &x[x.len() - n..];
    let amp = |s: &[f64]| -> Vec<f64> {
        let mean = s.iter().sum::<f64>() / s.len() as f64;
        let d: Vec<f64> = s.iter().map(|v| v - mean).collect();
        dft(&d).iter().take(n / 2 + 1).map(|c| c.abs()).collect()
    };
    let spectrum = amp(x);
    let mut rng = XorShift(seed | 1);
    let mut maxima: Vec<f64> = (0..100)
        .map(|_| {
            let mut s = x.to_vec();
            for i in (1..s.len()).rev() {
                let j = (rng.next() % (i as u64 + 1)) as usize;
                s.swap(i, j);
            }
            amp(&s).iter().skip(1).copied().fold(0.0, f64::max)
        })
        .collect();
    let threshold = kinetic_predict::clean::quantile(&mut maxima, 0.99);
    // Bin k has period n / k samples; the candidate for t is k = cycles.
    let k = cycles;
    if spectrum.get(k).is_none_or(|a| *a <= threshold) {
        return false;
    }
    let acf = circular_acf(x);
    let w = (t / 10).max(3);
    if t < w || t + w >= acf.len() {
        return false;
    }
    slope(&acf[t - w..=t]) > 0.0 && slope(&acf[t..=t + w]) < 0.0
}

/// Crane's EffectiveHPA with the DSP predictor.
pub struct Crane {
    hpa: hpa::History,
    /// The minute the prediction starts at and one predicted period from it.
    prediction: Option<(usize, Vec<f64>)>,
    refreshed: Option<usize>,
    /// The period found by the last test, and when it ran (minutes).
    period: Option<usize>,
    tested: Option<usize>,
}

const CRANE_HISTORY: usize = 14 * 1440;
const CRANE_WINDOW_MIN: usize = 60;
const CRANE_MARGIN: f64 = 0.15;
const REFRESH_MIN: usize = 60;

impl Crane {
    pub fn new() -> Self {
        Self {
            hpa: hpa::History::default(),
            prediction: None,
            refreshed: None,
            period: None,
            tested: None,
        }
    }

    fn refresh(&mut self, history: &[f64]) {
        let m = history.len();
        let h = &history[m.saturating_sub(CRANE_HISTORY)..];
        // Outliers outside [P0.1, P99.9] take the previous sample's value.
        let mut sorted = h.to_vec();
        let lo = kinetic_predict::clean::quantile(&mut sorted, 0.001);
        let hi = kinetic_predict::clean::quantile(&mut sorted, 0.999);
        let mut x = h.to_vec();
        for i in 1..x.len() {
            if x[i] < lo || x[i] > hi {
                x[i] = x[i - 1];
            }
        }
        // The period test (100 shuffled FFTs) once a day; the prediction every hour.
        if self.tested.is_none_or(|t| m >= t + 1440) {
            self.period = [(1440usize, 3usize), (7 * 1440, 2)]
                .into_iter()
                .filter(|(t, k)| crane_is_periodic(&x, *t, *k, m as u64))
                .map(|(t, _)| t)
                .next_back();
            self.tested = Some(m);
        }
        self.prediction = self.period.filter(|t| x.len() >= 2 * t).map(|t| {
            let cycles = x.len() / t;
            let base = x.len() - cycles * t;
            let pred = (0..t)
                .map(|j| {
                    (0..cycles).map(|c| x[base + c * t + j]).fold(0.0, f64::max)
                        * (1.0 + CRANE_MARGIN)
                })
                .collect::<Vec<_>>();
            // Phase 0 of `pred` is minute `start` of the trace.
            let start = m - h.len() + base;
            (start, pred)
        });
    }

    /// The largest predicted load in [minute, minute + window].
    fn predicted(&self, minute: usize) -> Option<f64> {
        let (start, pred) = self.prediction.as_ref()?;
        let t = pred.len();
        (minute..=minute + CRANE_WINDOW_MIN)
            .map(|i| pred[(i - start) % t])
            .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))))
    }
}

impl Default for Crane {
    fn default() -> Self {
        Self::new()
    }
}

impl Policy for Crane {
    fn period(&self) -> u64 {
        hpa::SYNC_PERIOD.as_secs()
    }
    fn decide(&mut self, obs: &Obs<'_>) -> i32 {
        let minute = obs.history.len();
        if self.refreshed.is_none_or(|r| minute >= r + REFRESH_MIN) {
            self.refresh(obs.history);
            self.refreshed = Some(minute);
        }
        let mut outcomes = vec![cpu_outcome(obs)];
        if let Some(p) = self.predicted(minute) {
            // The prediction metric as a Pods metric of the same per-pod target: HPA's usage
            // ratio with its tolerance.
            let current = obs.pods.len().max(1) as f64;
            let ratio = p / current;
            let replicas = if (ratio - 1.0).abs() <= hpa::TOLERANCE {
                current as i32
            } else {
                (p - 1e-9).ceil().max(1.0) as i32
            };
            outcomes.push(hpa::MetricOutcome::Valid {
                replicas,
                name: "pods metric crane_pod_cpu_usage".into(),
            });
        }
        hpa_step(&mut self.hpa, obs, &outcomes)
    }
}

// ---------------------------------------------------------------------------------------
// Ours.

/// Kinetic's predictive policy. Every hour it refits `kinetic_predict`'s model on up to 28
/// days of history (no period found, or under two cycles: a flat profile) and calibrates a
/// [`kinetic_predict::Nowcast`] on that history: the level of the last `OURS_K` minutes plus the
/// seasonal profile, plus the `--quantile` quantile of its own past errors. Every 15 s it asks
/// for the current minute's load (the metric read now) and, when the next minute falls within
/// the lead time (start-up + one control period) of this decision, the forecast for it; it
/// runs the larger (max(predicted, reactive)) with no stabilisation window.
pub struct Ours {
    startup: u64,
    quantile: f64,
    nowcast: Option<kinetic_predict::Nowcast>,
    refreshed: Option<usize>,
}

const OURS_PERIOD: u64 = 15;
const OURS_HISTORY: usize = 28 * 1440;
const OURS_K: usize = 3;

impl Ours {
    pub fn new(startup: u64, quantile: f64) -> Self {
        Self { startup, quantile, nowcast: None, refreshed: None }
    }

    /// Minutes after the next one that a decision must cover at most.
    fn lead(&self) -> usize {
        ((STEP - 1 + self.startup + OURS_PERIOD) / STEP).saturating_sub(1) as usize
    }
}

impl Policy for Ours {
    fn period(&self) -> u64 {
        OURS_PERIOD
    }
    fn decide(&mut self, obs: &Obs<'_>) -> i32 {
        let minute = obs.history.len();
        if self.refreshed.is_none_or(|r| minute >= r + REFRESH_MIN) {
            let start = minute.saturating_sub(OURS_HISTORY);
            let h: Vec<Option<f64>> = obs.history[start..].iter().map(|v| Some(*v)).collect();
            let x = kinetic_predict::clean::clean(&h).unwrap_or_default();
            let model = kinetic_predict::fit(&h, STEP, self.lead() + 1).ok();
            self.nowcast = (x.len() > 60).then(|| {
                let mut n = kinetic_predict::Nowcast::calibrate(
                    &x,
                    model.as_ref(),
                    self.lead(),
                    OURS_K,
                    self.quantile,
                );
                // Phases are counted from the trace's start from here on.
                n.shift(start);
                n
            });
            self.refreshed = Some(minute);
        }
        let reactive = (obs.current - 1e-9).ceil().max(1.0) as i32;
        let reach = (obs.now + self.startup + OURS_PERIOD) / STEP;
        let Some(n) = &self.nowcast else { return reactive };
        if reach <= minute as u64 {
            return reactive;
        }
        // The next minute is within reach: forecast it from the minutes up to this one.
        let mut recent: Vec<f64> = obs.history[minute.saturating_sub(OURS_K - 1)..].to_vec();
        recent.push(obs.current);
        let f = n.forecast(&recent, minute + 1);
        reactive.max((f - 1e-9).ceil() as i32)
    }
}

// ---------------------------------------------------------------------------------------
// Report.

/// The policies in report order; the first three are the baselines.
pub const POLICIES: [&str; 4] = ["hpa", "kpa", "crane", "ours"];

/// Runs every policy on `trace`.
pub fn evaluate(trace: &Trace, startup: u64, quantile: f64) -> anyhow::Result<Vec<Outcome>> {
    let mut policies: Vec<Box<dyn Policy>> = vec![
        Box::new(Hpa::default()),
        Box::new(Kpa::new()?),
        Box::new(Crane::new()),
        Box::new(Ours::new(startup, quantile)),
    ];
    Ok(policies.iter_mut().map(|p| simulate(&trace.load, p.as_mut(), startup)).collect())
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

/// `kinetic bench autoscale`.
#[allow(clippy::print_stdout)]
pub fn run(args: AutoscaleArgs) -> anyhow::Result<()> {
    let mut traces = Vec::new();
    for path in &args.traces {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        traces.push(parse_trace(&trace_name(path), &text, args.peak_pods)?);
    }
    let mut results = Vec::new();
    for t in &traces {
        results.push((t.name.clone(), evaluate(t, args.startup_secs, args.quantile)?));
    }
    println!(
        "kinetic bench autoscale: {} trace(s), peak = {} pods, start-up {} s, ours at quantile {}",
        traces.len(),
        args.peak_pods,
        args.startup_secs,
        args.quantile
    );
    print!("{}", table(&results));
    print!("{}", verdict(&results));
    std::fs::write(&args.chart, chart(&traces, &results))
        .with_context(|| format!("writing {}", args.chart.display()))?;
    println!("chart: {}", args.chart.display());
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

    #[test]
    fn the_dft_matches_a_naive_one() {
        let x: Vec<f64> = (0..30).map(|i| ((i * 37) % 11) as f64).collect();
        let f = dft(&x);
        for (k, c) in f.iter().enumerate() {
            let (mut re, mut im) = (0.0, 0.0);
            for (j, v) in x.iter().enumerate() {
                let a = -std::f64::consts::TAU * (k * j) as f64 / 30.0;
                re += v * a.cos();
                im += v * a.sin();
            }
            assert!((c.re - re).abs() < 1e-6 && (c.im - im).abs() < 1e-6, "bin {k}");
        }
    }

    #[test]
    fn crane_finds_a_daily_period() {
        let x: Vec<f64> = (0..3 * 1440)
            .map(|i| 50.0 + 30.0 * ((i % 1440) as f64 / 1440.0 * std::f64::consts::TAU).sin())
            .collect();
        assert!(crane_is_periodic(&x, 1440, 3, 7));
        let noise: Vec<f64> = (0..3 * 1440).map(|i| ((i * 7919) % 101) as f64).collect();
        assert!(!crane_is_periodic(&noise, 1440, 3, 7));
    }
}
