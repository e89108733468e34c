//! The per-revision `autoscaling.knative.dev/*` annotations: their keys, Knative's validation
//! (`pkg/apis/autoscaling/annotation_validation.go`, `ValidateAnnotations`) and the parsed
//! [`RevisionSpec`] that [`crate::DeciderSpec::new`] combines with the [`Config`].
//!
//! Keys are the kebab-case ones current Knative documents (`min-scale`, not the legacy
//! `minScale`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::aggregation::Algorithm;
use crate::config::{
    Config, HPA_CLASS, KPA_CLASS, PANIC_THRESHOLD_PERCENTAGE_MAX, PANIC_THRESHOLD_PERCENTAGE_MIN,
    PANIC_WINDOW_PERCENTAGE_MAX, PANIC_WINDOW_PERCENTAGE_MIN, TARGET_MIN, WINDOW_MAX, WINDOW_MIN,
};
use crate::duration;

/// The annotations' group (`autoscaling.GroupName`).
pub const GROUP: &str = "autoscaling.knative.dev";
/// Autoscaler class: [`KPA_CLASS`] (default), [`HPA_CLASS`] or a custom one.
pub const CLASS_ANNOTATION: &str = "autoscaling.knative.dev/class";
/// Metric scaled on: `concurrency` (default) or `rps` for the KPA.
pub const METRIC_ANNOTATION: &str = "autoscaling.knative.dev/metric";
/// Soft per-pod target of the metric.
pub const TARGET_ANNOTATION: &str = "autoscaling.knative.dev/target";
/// Share of the target (or of `containerConcurrency`) aimed at, 1 ..= 100.
pub const TARGET_UTILIZATION_PERCENTAGE_ANNOTATION: &str =
    "autoscaling.knative.dev/target-utilization-percentage";
/// Lower bound of the scale (only while the revision is reachable).
pub const MIN_SCALE_ANNOTATION: &str = "autoscaling.knative.dev/min-scale";
/// Upper bound of the scale; 0 means unlimited.
pub const MAX_SCALE_ANNOTATION: &str = "autoscaling.knative.dev/max-scale";
/// Pods a new revision starts with.
pub const INITIAL_SCALE_ANNOTATION: &str = "autoscaling.knative.dev/initial-scale";
/// Pods at least, whenever there is traffic (waking from zero goes straight to this many).
pub const ACTIVATION_SCALE_ANNOTATION: &str = "autoscaling.knative.dev/activation-scale";
/// Scale down only to the highest decision within this window.
pub const SCALE_DOWN_DELAY_ANNOTATION: &str = "autoscaling.knative.dev/scale-down-delay";
/// The stable window.
pub const WINDOW_ANNOTATION: &str = "autoscaling.knative.dev/window";
/// The panic window as a percentage of the stable window.
pub const PANIC_WINDOW_PERCENTAGE_ANNOTATION: &str =
    "autoscaling.knative.dev/panic-window-percentage";
/// The panic threshold as a percentage of the target.
pub const PANIC_THRESHOLD_PERCENTAGE_ANNOTATION: &str =
    "autoscaling.knative.dev/panic-threshold-percentage";
/// Target burst capacity (-1 = the activator always in the path).
pub const TARGET_BURST_CAPACITY_ANNOTATION: &str = "autoscaling.knative.dev/target-burst-capacity";
/// Minimum time the last pod stays after the revision went inactive.
pub const SCALE_TO_ZERO_POD_RETENTION_PERIOD_ANNOTATION: &str =
    "autoscaling.knative.dev/scale-to-zero-pod-retention-period";
/// Averaging of the metric windows: `linear` (default) or `weighted-exponential`
/// (`weightedExponential`).
pub const METRIC_AGGREGATION_ALGORITHM_ANNOTATION: &str =
    "autoscaling.knative.dev/metric-aggregation-algorithm";

/// Value of [`METRIC_ANNOTATION`] for in-flight requests.
pub const METRIC_CONCURRENCY: &str = "concurrency";
/// Value of [`METRIC_ANNOTATION`] for requests per second.
pub const METRIC_RPS: &str = "rps";

/// The metric a KPA revision scales on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Requests in flight, averaged over each second (default).
    #[default]
    Concurrency,
    /// Requests per second.
    Rps,
}

/// One validation failure, as knative.dev/pkg's `apis.FieldError`: a message and the
/// annotation keys it is about. [`FieldError::via`] prefixes the paths (for example with
/// `metadata.annotations` or `spec.template.metadata.annotations`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// What is wrong, for example `expected 1 <= 0 <= 100`.
    pub message: String,
    /// The fields it is about.
    pub paths: Vec<String>,
}

impl FieldError {
    /// `apis.ErrInvalidValue`.
    fn invalid_value(value: &str, key: &str) -> Self {
        Self { message: format!("invalid value: {value}"), paths: vec![key.to_owned()] }
    }

    /// `apis.ErrOutOfBoundsValue`.
    fn out_of_bounds(
        value: impl fmt::Display,
        lo: impl fmt::Display,
        hi: impl fmt::Display,
        key: &str,
    ) -> Self {
        Self { message: format!("expected {lo} <= {value} <= {hi}"), paths: vec![key.to_owned()] }
    }

    /// `apis.ErrGeneric`.
    fn generic(message: String, paths: &[&str]) -> Self {
        Self { message, paths: paths.iter().map(|p| (*p).to_owned()).collect() }
    }

    /// The same error under a parent field (`ViaField`): `prefix.path` for each path.
    pub fn via(mut self, prefix: &str) -> Self {
        for p in &mut self.paths {
            *p = format!("{prefix}.{p}");
        }
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.message, self.paths.join(", "))
    }
}

impl std::error::Error for FieldError {}

/// A revision's autoscaling settings, parsed from its annotations and `containerConcurrency`.
/// `None` means "not set": the [`Config`] value applies.
#[derive(Debug, Clone, PartialEq)]
pub struct RevisionSpec {
    /// [`CLASS_ANNOTATION`] or the ConfigMap's `pod-autoscaler-class`.
    pub class: String,
    /// [`METRIC_ANNOTATION`].
    pub metric: Metric,
    /// [`TARGET_ANNOTATION`].
    pub target: Option<f64>,
    /// [`TARGET_UTILIZATION_PERCENTAGE_ANNOTATION`] as a fraction.
    pub target_utilization: Option<f64>,
    /// [`MIN_SCALE_ANNOTATION`].
    pub min_scale: Option<i32>,
    /// [`MAX_SCALE_ANNOTATION`].
    pub max_scale: Option<i32>,
    /// [`INITIAL_SCALE_ANNOTATION`].
    pub initial_scale: Option<i32>,
    /// [`ACTIVATION_SCALE_ANNOTATION`] (1 when not set).
    pub activation_scale: i32,
    /// [`SCALE_DOWN_DELAY_ANNOTATION`].
    pub scale_down_delay: Option<Duration>,
    /// [`WINDOW_ANNOTATION`].
    pub window: Option<Duration>,
    /// [`PANIC_WINDOW_PERCENTAGE_ANNOTATION`].
    pub panic_window_percentage: Option<f64>,
    /// [`PANIC_THRESHOLD_PERCENTAGE_ANNOTATION`].
    pub panic_threshold_percentage: Option<f64>,
    /// [`TARGET_BURST_CAPACITY_ANNOTATION`].
    pub target_burst_capacity: Option<f64>,
    /// [`SCALE_TO_ZERO_POD_RETENTION_PERIOD_ANNOTATION`].
    pub scale_to_zero_pod_retention_period: Option<Duration>,
    /// [`METRIC_AGGREGATION_ALGORITHM_ANNOTATION`].
    pub algorithm: Algorithm,
    /// The revision's `spec.containerConcurrency` (0 = unlimited): the hard per-pod limit,
    /// and the per-pod capacity the target is a share of.
    pub container_concurrency: i64,
}

impl RevisionSpec {
    /// Validates a revision's annotations as Knative's webhook does and parses them.
    ///
    /// # Errors
    ///
    /// Every failure `ValidateAnnotations` reports, in its order, with Knative's messages and
    /// the annotation keys as paths.
    pub fn from_annotations(
        annotations: &BTreeMap<String, String>,
        container_concurrency: i64,
        config: &Config,
    ) -> Result<Self, Vec<FieldError>> {
        let errs = validate_annotations(config, annotations);
        if !errs.is_empty() {
            return Err(errs);
        }
        let get = |k: &str| annotations.get(k).map(String::as_str);
        let float = |k: &str| get(k).and_then(|v| v.parse::<f64>().ok());
        let int = |k: &str| get(k).and_then(|v| v.parse::<i32>().ok());
        let dur = |k: &str| get(k).and_then(duration::parse).map(duration::to_std);
        let metric = match get(METRIC_ANNOTATION) {
            Some(METRIC_RPS) => Metric::Rps,
            _ => Metric::Concurrency,
        };
        let algorithm = match get(METRIC_AGGREGATION_ALGORITHM_ANNOTATION) {
            Some("weighted-exponential" | "weightedExponential") => Algorithm::WeightedExponential,
            _ => Algorithm::Linear,
        };
        Ok(Self {
            class: get(CLASS_ANNOTATION).unwrap_or(&config.pod_autoscaler_class).to_owned(),
            metric,
            target: float(TARGET_ANNOTATION),
            target_utilization: float(TARGET_UTILIZATION_PERCENTAGE_ANNOTATION).map(|p| p / 100.0),
            min_scale: int(MIN_SCALE_ANNOTATION),
            max_scale: int(MAX_SCALE_ANNOTATION),
            initial_scale: int(INITIAL_SCALE_ANNOTATION),
            activation_scale: int(ACTIVATION_SCALE_ANNOTATION).unwrap_or(1),
            scale_down_delay: dur(SCALE_DOWN_DELAY_ANNOTATION),
            window: dur(WINDOW_ANNOTATION),
            panic_window_percentage: float(PANIC_WINDOW_PERCENTAGE_ANNOTATION),
            panic_threshold_percentage: float(PANIC_THRESHOLD_PERCENTAGE_ANNOTATION),
            target_burst_capacity: float(TARGET_BURST_CAPACITY_ANNOTATION),
            scale_to_zero_pod_retention_period: dur(SCALE_TO_ZERO_POD_RETENTION_PERIOD_ANNOTATION),
            algorithm,
            container_concurrency,
        })
    }

    /// Whether the KPA (this crate) scales the revision; other classes are left alone.
    pub fn is_kpa(&self) -> bool {
        self.class == KPA_CLASS
    }
}

/// Knative's `ValidateAnnotations`: class, min/max/activation scale, the float knobs, window,
/// pod retention, scale-down delay, metric, aggregation algorithm, initial scale.
pub fn validate_annotations(config: &Config, m: &BTreeMap<String, String>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    validate_class(m, &mut errs);
    validate_min_max_scale(config, m, &mut errs);
    validate_floats(m, &mut errs);
    validate_window(m, &mut errs);
    validate_duration_within(m, SCALE_TO_ZERO_POD_RETENTION_PERIOD_ANNOTATION, false, &mut errs);
    validate_duration_within(m, SCALE_DOWN_DELAY_ANNOTATION, true, &mut errs);
    validate_metric(m, &mut errs);
    validate_algorithm(m, &mut errs);
    validate_initial_scale(config, m, &mut errs);
    errs
}

fn validate_class(m: &BTreeMap<String, String>, errs: &mut Vec<FieldError>) {
    // Classes of other domains belong to custom autoscalers and are not checked.
    if let Some(v) = m.get(CLASS_ANNOTATION)
        && v.ends_with(".knative.dev")
        && v != KPA_CLASS
        && v != HPA_CLASS
    {
        errs.push(FieldError::invalid_value(v, CLASS_ANNOTATION));
    }
}

/// `getIntGE0`: an int32 >= 0, or 0 when absent.
fn int_ge0(m: &BTreeMap<String, String>, key: &str, errs: &mut Vec<FieldError>) -> i32 {
    let Some(v) = m.get(key) else { return 0 };
    match v.parse::<i64>() {
        Ok(i) if (0..=i64::from(i32::MAX)).contains(&i) => i32::try_from(i).unwrap_or(i32::MAX),
        Ok(_) => {
            errs.push(FieldError::out_of_bounds(v, 0, i32::MAX, key));
            0
        }
        Err(e)
            if matches!(
                e.kind(),
                std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow
            ) =>
        {
            errs.push(FieldError::out_of_bounds(v, 0, i32::MAX, key));
            0
        }
        Err(_) => {
            errs.push(FieldError::invalid_value(v, key));
            0
        }
    }
}

fn validate_min_max_scale(
    config: &Config,
    m: &BTreeMap<String, String>,
    errs: &mut Vec<FieldError>,
) {
    let min = int_ge0(m, MIN_SCALE_ANNOTATION, errs);
    let max = int_ge0(m, MAX_SCALE_ANNOTATION, errs);
    if max != 0 && max < min {
        errs.push(FieldError::generic(
            format!("max-scale={max} is less than min-scale={min}"),
            &[MAX_SCALE_ANNOTATION, MIN_SCALE_ANNOTATION],
        ));
    }
    if m.contains_key(MAX_SCALE_ANNOTATION) && config.max_scale_limit > 0 {
        let limit = config.max_scale_limit;
        if max > limit {
            errs.push(FieldError::out_of_bounds(max, 1, limit, MAX_SCALE_ANNOTATION));
        }
        if max == 0 {
            errs.push(FieldError::generic(
                format!("max-scale=0 (unlimited), must be less than {limit}"),
                &[MAX_SCALE_ANNOTATION],
            ));
        }
    }
    // activation-scale (once `min-activate-scale`): at least 1 and within max-scale. Knative
    // words these two messages the same way for the older key.
    if let Some(v) = m.get(ACTIVATION_SCALE_ANNOTATION) {
        match v.parse::<i32>() {
            Err(_) => errs.push(FieldError::invalid_value(v, ACTIVATION_SCALE_ANNOTATION)),
            Ok(a) if a < 1 => {
                errs.push(FieldError::out_of_bounds(v, 1, i32::MAX, ACTIVATION_SCALE_ANNOTATION));
            }
            Ok(a) if max != 0 && max < a => errs.push(FieldError::generic(
                format!("max-scale={max} is less than activation-scale={a}"),
                &[MAX_SCALE_ANNOTATION, ACTIVATION_SCALE_ANNOTATION],
            )),
            Ok(_) => {}
        }
    }
}

fn validate_floats(m: &BTreeMap<String, String>, errs: &mut Vec<FieldError>) {
    let ranged = |key: &str, lo: f64, hi: f64, errs: &mut Vec<FieldError>| {
        if let Some(v) = m.get(key) {
            match v.parse::<f64>() {
                Err(_) => errs.push(FieldError::invalid_value(v, key)),
                Ok(f) if f < lo || f > hi => errs.push(FieldError::out_of_bounds(v, lo, hi, key)),
                Ok(_) => {}
            }
        }
    };
    ranged(
        PANIC_WINDOW_PERCENTAGE_ANNOTATION,
        PANIC_WINDOW_PERCENTAGE_MIN,
        PANIC_WINDOW_PERCENTAGE_MAX,
        errs,
    );
    ranged(
        PANIC_THRESHOLD_PERCENTAGE_ANNOTATION,
        PANIC_THRESHOLD_PERCENTAGE_MIN,
        PANIC_THRESHOLD_PERCENTAGE_MAX,
        errs,
    );
    if let Some(v) = m.get(TARGET_ANNOTATION) {
        match v.parse::<f64>() {
            Err(_) => errs.push(FieldError::invalid_value(v, TARGET_ANNOTATION)),
            Ok(f) if f < TARGET_MIN => errs.push(FieldError::generic(
                format!("target {v} should be at least {TARGET_MIN}"),
                &[TARGET_ANNOTATION],
            )),
            Ok(_) => {}
        }
    }
    ranged(TARGET_UTILIZATION_PERCENTAGE_ANNOTATION, 1.0, 100.0, errs);
    if let Some(v) = m.get(TARGET_BURST_CAPACITY_ANNOTATION) {
        match v.parse::<f64>() {
            Ok(f) if f >= 0.0 || f == -1.0 => {}
            _ => errs.push(FieldError::invalid_value(v, TARGET_BURST_CAPACITY_ANNOTATION)),
        }
    }
}

fn validate_window(m: &BTreeMap<String, String>, errs: &mut Vec<FieldError>) {
    let Some(v) = m.get(WINDOW_ANNOTATION) else { return };
    let (lo, hi) = (duration::from_std(WINDOW_MIN), duration::from_std(WINDOW_MAX));
    match duration::parse(v) {
        None => errs.push(FieldError::invalid_value(v, WINDOW_ANNOTATION)),
        Some(d) if d < lo || d > hi => errs.push(FieldError::out_of_bounds(
            v,
            duration::format(lo),
            duration::format(hi),
            WINDOW_ANNOTATION,
        )),
        Some(d) if d % 1_000_000_000 != 0 => errs.push(FieldError::generic(
            "must be specified with at most second precision".to_owned(),
            &[WINDOW_ANNOTATION],
        )),
        Some(_) => {}
    }
}

/// Scale-down delay and pod retention: a Go duration in 0 ..= 1 h (no longer than the longest
/// window); the delay also in whole seconds.
fn validate_duration_within(
    m: &BTreeMap<String, String>,
    key: &str,
    whole_seconds: bool,
    errs: &mut Vec<FieldError>,
) {
    let Some(v) = m.get(key) else { return };
    let hi = duration::from_std(WINDOW_MAX);
    match duration::parse(v) {
        None => errs.push(FieldError::invalid_value(v, key)),
        Some(d) if d < 0 || d > hi => {
            errs.push(FieldError::out_of_bounds(v, duration::format(0), duration::format(hi), key));
        }
        Some(d) if whole_seconds && d % 1_000_000_000 != 0 => errs.push(FieldError::generic(
            "must be specified with at most second precision".to_owned(),
            &[key],
        )),
        Some(_) => {}
    }
}

fn validate_metric(m: &BTreeMap<String, String>, errs: &mut Vec<FieldError>) {
    let Some(metric) = m.get(METRIC_ANNOTATION) else { return };
    let class = m.get(CLASS_ANNOTATION).map_or(KPA_CLASS, String::as_str);
    let ok = match class {
        KPA_CLASS => metric == METRIC_CONCURRENCY || metric == METRIC_RPS,
        HPA_CLASS => !metric.is_empty(),
        // Other classes' metrics are theirs to check.
        _ => true,
    };
    if !ok {
        errs.push(FieldError::invalid_value(metric, METRIC_ANNOTATION));
    }
}

fn validate_algorithm(m: &BTreeMap<String, String>, errs: &mut Vec<FieldError>) {
    // Upstream checks the algorithm only when the class annotation says KPA explicitly.
    if m.get(CLASS_ANNOTATION).map(String::as_str) != Some(KPA_CLASS) {
        return;
    }
    if let Some(v) = m.get(METRIC_AGGREGATION_ALGORITHM_ANNOTATION)
        && !v.is_empty()
        && !matches!(v.as_str(), "linear" | "weighted-exponential" | "weightedExponential")
    {
        errs.push(FieldError::invalid_value(v, METRIC_AGGREGATION_ALGORITHM_ANNOTATION));
    }
}

fn validate_initial_scale(
    config: &Config,
    m: &BTreeMap<String, String>,
    errs: &mut Vec<FieldError>,
) {
    let Some(v) = m.get(INITIAL_SCALE_ANNOTATION) else { return };
    let k = INITIAL_SCALE_ANNOTATION;
    match v.parse::<i64>() {
        Err(_) => errs.push(FieldError::invalid_value(v, k)),
        // Upstream puts the explanation in the path; kept as it is.
        Ok(i) if i < 0 => {
            errs.push(FieldError::invalid_value(v, &format!("{k} must be greater than 0")))
        }
        Ok(0) if !config.allow_zero_initial_scale => {
            errs.push(FieldError::invalid_value(v, &format!("{k}=0 not allowed by cluster")));
        }
        Ok(_) => {}
    }
}
