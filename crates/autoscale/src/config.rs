//! The `config-autoscaler` ConfigMap: its keys, Knative's defaults and validation
//! (`pkg/autoscaler/config/config.go`: `defaultConfig`, `NewConfigFromMap`, `validate`).
//!
//! [`Config::from_data`] reads the ConfigMap's `data` map; unknown keys (such as `_example`)
//! are ignored as upstream ignores them, and a value that does not parse or a combination that
//! `validate` refuses gives a [`ConfigError`] whose message is Knative's.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::duration::{self, GoDuration};

/// Name of the ConfigMap (in the control plane's namespace, `knative-serving` upstream).
pub const CONFIG_NAME: &str = "config-autoscaler";

/// The KPA class, the default `pod-autoscaler-class` (`autoscaling.KPA`).
pub const KPA_CLASS: &str = "kpa.autoscaling.knative.dev";
/// The HPA class (`autoscaling.HPA`); Kinetic has no HPA-class autoscaler.
pub const HPA_CLASS: &str = "hpa.autoscaling.knative.dev";

/// Smallest target a revision may ask for (`autoscaling.TargetMin`).
pub const TARGET_MIN: f64 = 0.01;
/// Bounds of the stable window (`autoscaling.WindowMin`, `WindowMax`).
pub const WINDOW_MIN: Duration = Duration::from_secs(6);
/// See [`WINDOW_MIN`].
pub const WINDOW_MAX: Duration = Duration::from_secs(3600);
/// Bounds of the panic window as a percentage of the stable window
/// (`autoscaling.PanicWindowPercentageMin`, `Max`).
pub const PANIC_WINDOW_PERCENTAGE_MIN: f64 = 1.0;
/// See [`PANIC_WINDOW_PERCENTAGE_MIN`].
pub const PANIC_WINDOW_PERCENTAGE_MAX: f64 = 100.0;
/// Bounds of the panic threshold percentage (`autoscaling.PanicThresholdPercentageMin`, `Max`):
/// below 110 % the autoscaler would panic at its own target and never scale down.
pub const PANIC_THRESHOLD_PERCENTAGE_MIN: f64 = 110.0;
/// See [`PANIC_THRESHOLD_PERCENTAGE_MIN`].
pub const PANIC_THRESHOLD_PERCENTAGE_MAX: f64 = 1000.0;
/// Width of one metric bucket (`config.BucketSize`); the panic window is at least this.
pub const BUCKET_SIZE: Duration = Duration::from_secs(1);

/// Knative's tunable autoscaler parameters (`autoscalerconfig.Config`), with its defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `enable-scale-to-zero` (default true): when false the last pod is never removed.
    pub enable_scale_to_zero: bool,
    /// `container-concurrency-target-percentage` as a fraction (default 0.7). Upstream accepts
    /// a percentage in (1, 100] or a legacy fraction in (0, 1].
    pub container_concurrency_target_fraction: f64,
    /// `container-concurrency-target-default` (default 100): the per-pod concurrency aimed at
    /// when `containerConcurrency` is 0 (unlimited).
    pub container_concurrency_target_default: f64,
    /// Target utilisation of the metrics other than concurrency (default 0.7); not a
    /// ConfigMap key upstream, only the `target-utilization-percentage` annotation changes it.
    pub target_utilization: f64,
    /// `requests-per-second-target-default` (default 200).
    pub rps_target_default: f64,
    /// `max-scale-up-rate` (default 1000): desired pods are at most `ceil(rate × ready)`.
    pub max_scale_up_rate: f64,
    /// `max-scale-down-rate` (default 2): desired pods are at least `floor(ready / rate)`.
    pub max_scale_down_rate: f64,
    /// `target-burst-capacity` (default 211; -1 keeps the activator in the path always, 0
    /// only at zero). See the crate docs on why 211 and not the 200 of older releases.
    pub target_burst_capacity: f64,
    /// `panic-window-percentage` (default 10): the panic window as a share of the stable one.
    pub panic_window_percentage: f64,
    /// `activator-capacity` (default 100): requests one activator takes at once; used by
    /// upstream for activator subsetting, kept for the key's sake.
    pub activator_capacity: f64,
    /// `panic-threshold-percentage` (default 200).
    pub panic_threshold_percentage: f64,
    /// `stable-window` (default 60 s, 6 s ..= 1 h, whole seconds).
    pub stable_window: Duration,
    /// `scale-down-delay` (default 0): scale down only to the highest decision of this window.
    pub scale_down_delay: Duration,
    /// `scale-to-zero-grace-period` (default 30 s): how long an inactive revision keeps its
    /// last pod.
    pub scale_to_zero_grace_period: Duration,
    /// `scale-to-zero-pod-retention-period` (default 0).
    pub scale_to_zero_pod_retention_period: Duration,
    /// `pod-autoscaler-class` (default [`KPA_CLASS`]).
    pub pod_autoscaler_class: String,
    /// `allow-zero-initial-scale` (default false).
    pub allow_zero_initial_scale: bool,
    /// `initial-scale` (default 1): pods a new revision starts with.
    pub initial_scale: i32,
    /// `min-scale` (default 0): the cluster-wide lower bound, overridden per revision.
    pub min_scale: i32,
    /// `max-scale` (default 0 = unlimited).
    pub max_scale: i32,
    /// `max-scale-limit` (default 0 = none): no revision may ask for more (nor for unlimited).
    pub max_scale_limit: i32,
}

impl Default for Config {
    /// Knative's `defaultConfig()`.
    fn default() -> Self {
        Self {
            enable_scale_to_zero: true,
            container_concurrency_target_fraction: 0.7,
            container_concurrency_target_default: 100.0,
            target_utilization: 0.7,
            rps_target_default: 200.0,
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
            target_burst_capacity: 211.0,
            panic_window_percentage: 10.0,
            activator_capacity: 100.0,
            panic_threshold_percentage: 200.0,
            stable_window: Duration::from_secs(60),
            scale_down_delay: Duration::ZERO,
            scale_to_zero_grace_period: Duration::from_secs(30),
            scale_to_zero_pod_retention_period: Duration::ZERO,
            pod_autoscaler_class: KPA_CLASS.to_owned(),
            allow_zero_initial_scale: false,
            initial_scale: 1,
            min_scale: 0,
            max_scale: 0,
            max_scale_limit: 0,
        }
    }
}

/// Why a `config-autoscaler` ConfigMap was refused; the messages are Knative's.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A value is not of the key's type (`cm.Parse`'s errors).
    #[error("failed to parse data: failed to parse {key:?}: {reason}")]
    Parse {
        /// The ConfigMap key.
        key: &'static str,
        /// What Go's parser says, for example `time: invalid duration "soon"`.
        reason: String,
    },
    /// The values parse but `validate` refuses them.
    #[error("{0}")]
    Invalid(String),
}

/// Data map reader in the style of knative.dev/pkg's `configmap.Parse`.
struct Reader<'a>(&'a BTreeMap<String, String>);

impl Reader<'_> {
    fn string(&self, key: &'static str, target: &mut String) {
        if let Some(v) = self.0.get(key) {
            v.clone_into(target);
        }
    }

    fn bool(&self, key: &'static str, target: &mut bool) -> Result<(), ConfigError> {
        if let Some(v) = self.0.get(key) {
            *target = parse_go_bool(v).ok_or_else(|| ConfigError::Parse {
                key,
                reason: format!("strconv.ParseBool: parsing {v:?}: invalid syntax"),
            })?;
        }
        Ok(())
    }

    fn f64(&self, key: &'static str, target: &mut f64) -> Result<(), ConfigError> {
        if let Some(v) = self.0.get(key) {
            *target = v.parse().map_err(|_| ConfigError::Parse {
                key,
                reason: format!("strconv.ParseFloat: parsing {v:?}: invalid syntax"),
            })?;
        }
        Ok(())
    }

    fn i32(&self, key: &'static str, target: &mut i32) -> Result<(), ConfigError> {
        if let Some(v) = self.0.get(key) {
            *target = v.parse().map_err(|e: std::num::ParseIntError| {
                let what = match e.kind() {
                    std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                        "value out of range"
                    }
                    _ => "invalid syntax",
                };
                ConfigError::Parse {
                    key,
                    reason: format!("strconv.ParseInt: parsing {v:?}: {what}"),
                }
            })?;
        }
        Ok(())
    }

    fn duration(&self, key: &'static str, target: &mut GoDuration) -> Result<(), ConfigError> {
        if let Some(v) = self.0.get(key) {
            *target = duration::parse(v).ok_or_else(|| ConfigError::Parse {
                key,
                reason: format!("time: invalid duration {v:?}"),
            })?;
        }
        Ok(())
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

impl Config {
    /// Reads a `config-autoscaler` data map over Knative's defaults (`NewConfigFromMap`).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Parse`] for a value of the wrong type, [`ConfigError::Invalid`] for the
    /// combinations Knative's `validate` refuses (non-positive grace period, a stable window
    /// outside 6 s ..= 1 h or not in whole seconds, rates not above 1, ...).
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut c = Self::default();
        let r = Reader(data);
        // Durations are read as signed Go durations so that negative values get Knative's
        // "cannot be negative" messages rather than a parse error.
        let mut stable_window = duration::from_std(c.stable_window);
        let mut scale_down_delay = duration::from_std(c.scale_down_delay);
        let mut grace = duration::from_std(c.scale_to_zero_grace_period);
        let mut retention = duration::from_std(c.scale_to_zero_pod_retention_period);

        r.string("pod-autoscaler-class", &mut c.pod_autoscaler_class);
        r.bool("enable-scale-to-zero", &mut c.enable_scale_to_zero)?;
        r.bool("allow-zero-initial-scale", &mut c.allow_zero_initial_scale)?;
        r.f64("max-scale-up-rate", &mut c.max_scale_up_rate)?;
        r.f64("max-scale-down-rate", &mut c.max_scale_down_rate)?;
        r.f64(
            "container-concurrency-target-percentage",
            &mut c.container_concurrency_target_fraction,
        )?;
        r.f64("container-concurrency-target-default", &mut c.container_concurrency_target_default)?;
        r.f64("requests-per-second-target-default", &mut c.rps_target_default)?;
        r.f64("target-burst-capacity", &mut c.target_burst_capacity)?;
        r.f64("panic-window-percentage", &mut c.panic_window_percentage)?;
        r.f64("activator-capacity", &mut c.activator_capacity)?;
        r.f64("panic-threshold-percentage", &mut c.panic_threshold_percentage)?;
        r.i32("initial-scale", &mut c.initial_scale)?;
        r.i32("min-scale", &mut c.min_scale)?;
        r.i32("max-scale", &mut c.max_scale)?;
        r.i32("max-scale-limit", &mut c.max_scale_limit)?;
        r.duration("stable-window", &mut stable_window)?;
        r.duration("scale-down-delay", &mut scale_down_delay)?;
        r.duration("scale-to-zero-grace-period", &mut grace)?;
        r.duration("scale-to-zero-pod-retention-period", &mut retention)?;

        // Upstream: for legacy reasons a value in (0, 1] is a fraction, above 1 a percentage.
        if c.container_concurrency_target_fraction > 1.0 {
            c.container_concurrency_target_fraction /= 100.0;
        }
        validate(&c, stable_window, scale_down_delay, grace, retention)?;
        c.stable_window = duration::to_std(stable_window);
        c.scale_down_delay = duration::to_std(scale_down_delay);
        c.scale_to_zero_grace_period = duration::to_std(grace);
        c.scale_to_zero_pod_retention_period = duration::to_std(retention);
        Ok(c)
    }
}

const SECOND: GoDuration = 1_000_000_000;

/// Knative's `validate`, in its order (the first failure is reported).
fn validate(
    c: &Config,
    stable_window: GoDuration,
    scale_down_delay: GoDuration,
    grace: GoDuration,
    retention: GoDuration,
) -> Result<(), ConfigError> {
    let fail = |msg: String| Err(ConfigError::Invalid(msg));
    let d = duration::format;
    if grace <= 0 {
        return fail(format!("scale-to-zero-grace-period must be positive, was: {}", d(grace)));
    }
    if scale_down_delay < 0 {
        return fail(format!("scale-down-delay cannot be negative, was: {}", d(scale_down_delay)));
    }
    if scale_down_delay % SECOND != 0 {
        return fail(format!(
            "scale-down-delay = {}, must be specified with at most second precision",
            d(scale_down_delay)
        ));
    }
    if retention < 0 {
        return fail(format!(
            "scale-to-zero-pod-retention-period cannot be negative, was: {}",
            d(retention)
        ));
    }
    if c.target_burst_capacity < 0.0 && c.target_burst_capacity != -1.0 {
        return fail(format!(
            "target-burst-capacity must be either non-negative or -1 (for unlimited), was: {:.6}",
            c.target_burst_capacity
        ));
    }
    if c.container_concurrency_target_fraction <= 0.0
        || c.container_concurrency_target_fraction > 1.0
    {
        return fail(format!(
            "container-concurrency-target-percentage = {:.6} is outside of valid range of (0, 100]",
            c.container_concurrency_target_fraction
        ));
    }
    let target = c.container_concurrency_target_fraction * c.container_concurrency_target_default;
    if target < TARGET_MIN {
        return fail(format!(
            "container-concurrency-target-percentage and container-concurrency-target-default yield target concurrency of {target}, can't be less than {TARGET_MIN}"
        ));
    }
    if c.rps_target_default < TARGET_MIN {
        return fail(format!(
            "requests-per-second-target-default must be at least {TARGET_MIN}, was: {}",
            c.rps_target_default
        ));
    }
    if c.activator_capacity < 1.0 {
        return fail(format!("activator-capacity = {}, must be at least 1", c.activator_capacity));
    }
    if c.max_scale_up_rate <= 1.0 {
        return fail(format!(
            "max-scale-up-rate = {}, must be greater than 1.0",
            c.max_scale_up_rate
        ));
    }
    if c.max_scale_down_rate <= 1.0 {
        return fail(format!(
            "max-scale-down-rate = {}, must be greater than 1.0",
            c.max_scale_down_rate
        ));
    }
    let (wmin, wmax) = (duration::from_std(WINDOW_MIN), duration::from_std(WINDOW_MAX));
    if stable_window < wmin || stable_window > wmax {
        return fail(format!(
            "stable-window = {}, must be in [{}; {}] range",
            d(stable_window),
            d(wmin),
            d(wmax)
        ));
    }
    if stable_window % SECOND != 0 {
        return fail(format!(
            "stable-window = {}, must be specified with at most second precision",
            d(stable_window)
        ));
    }
    if c.panic_window_percentage < PANIC_WINDOW_PERCENTAGE_MIN
        || c.panic_window_percentage > PANIC_WINDOW_PERCENTAGE_MAX
    {
        return fail(format!(
            "panic-window-percentage = {}, must be in [{PANIC_WINDOW_PERCENTAGE_MIN}, {PANIC_WINDOW_PERCENTAGE_MAX}] interval",
            c.panic_window_percentage
        ));
    }
    if c.initial_scale < 0 || (c.initial_scale == 0 && !c.allow_zero_initial_scale) {
        return fail(format!(
            "initial-scale = {}, must be at least 0 (or at least 1 when allow-zero-initial-scale is false)",
            c.initial_scale
        ));
    }
    // Upstream requires a default max-scale whenever max-scale-limit is set.
    let min_max_scale = i32::from(c.max_scale_limit > 0);
    if c.max_scale < min_max_scale || (c.max_scale_limit > 0 && c.max_scale > c.max_scale_limit) {
        return fail(format!(
            "max-scale = {}, must be in [{min_max_scale}, max-scale-limit({})] range",
            c.max_scale, c.max_scale_limit
        ));
    }
    if c.max_scale_limit < 0 {
        return fail(format!("max-scale-limit = {}, must be at least 0", c.max_scale_limit));
    }
    // The global min-scale (newer releases): not negative and not above a set max-scale.
    if c.min_scale < 0 || (c.max_scale > 0 && c.min_scale > c.max_scale) {
        return fail(format!(
            "min-scale ({}) must be less than max-scale ({}) and greater than or equal to 0",
            c.min_scale, c.max_scale
        ));
    }
    Ok(())
}
