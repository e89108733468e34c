//! A CloneSet's strategy resolved to plain numbers: replicas, partition, maxSurge,
//! maxUnavailable, with upstream's rounding rules.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kinetic_api::kruise::SCALING_EXCLUDE_PREPARING_DELETE_LABEL;
use kinetic_api::kruise::cloneset::{
    CloneSet, CloneSetUpdateStrategyType, DEFAULT_MAX_UNAVAILABLE,
};

use crate::{Error, Result};

/// Kubernetes' `intstr.GetScaledValueFromIntOrPercent`: an integer as it is, a percentage
/// `"N%"` of `total`, rounded up or down.
///
/// # Errors
/// [`Error::InvalidIntOrString`] for a string that is not an integer percentage; `field` names
/// the field in the message.
pub fn scaled_value(
    value: &IntOrString,
    total: i32,
    round_up: bool,
    field: &'static str,
) -> Result<i32> {
    match value {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let invalid = || Error::InvalidIntOrString { field, value: s.clone() };
            let percent: i64 =
                s.strip_suffix('%').ok_or_else(invalid)?.parse().map_err(|_| invalid())?;
            // Upstream computes in float64; integers are exact at these magnitudes.
            let scaled = percent as f64 * f64::from(total) / 100.0;
            let rounded = if round_up { scaled.ceil() } else { scaled.floor() };
            Ok(rounded.clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32)
        }
    }
}

/// The number of pods to keep at old revisions (`pkg/util/tools.go`
/// `CalculatePartitionReplicas`): percentages round up, so a partition above "0%" keeps at
/// least one old pod; with more than one replica, a percentage below "100%" that rounds up to
/// all replicas is lowered by one, so at least one pod is updated; the result is clamped to
/// `0..=replicas`.
///
/// # Errors
/// [`Error::InvalidIntOrString`] for a partition that is neither an integer nor a percentage.
pub fn partition_replicas(partition: Option<&IntOrString>, replicas: i32) -> Result<i32> {
    let Some(partition) = partition else { return Ok(0) };
    let mut value = scaled_value(partition, replicas, true, "spec.updateStrategy.partition")?;
    if replicas > 1
        && value == replicas
        && matches!(partition, IntOrString::String(s) if s != "100%")
    {
        value = replicas - 1;
    }
    Ok(value.min(replicas).max(0))
}

/// The numbers the sync algorithm works with, resolved once from a CloneSet's spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strategy {
    /// `spec.replicas` (default 1).
    pub replicas: i32,
    /// Pods to keep at old revisions.
    pub partition: i32,
    /// Pods allowed above replicas; 0 while the update is paused.
    pub max_surge: i32,
    /// Pods allowed to be unavailable during update and scale (default 20%; percentages round
    /// up, or down when `max_surge` > 0).
    pub max_unavailable: i32,
    /// `scaleStrategy.maxUnavailable` (unset: no limit, `i32::MAX`).
    pub scale_max_unavailable: i32,
    /// `spec.minReadySeconds`.
    pub min_ready_seconds: i32,
    /// `updateStrategy.paused`.
    pub paused: bool,
    /// `updateStrategy.type` (default ReCreate).
    pub update_type: CloneSetUpdateStrategyType,
    /// Scaling ignores pods in PreparingDelete (the CloneSet's
    /// `apps.kruise.io/cloneset-scaling-exclude-preparing-delete: "true"` label).
    pub scaling_exclude_preparing_delete: bool,
}

impl Strategy {
    /// Resolves `cs`'s spec as `calculateDiffsWithExpectation` does
    /// (`sync/cloneset_sync_utils.go`).
    ///
    /// # Errors
    /// [`Error::InvalidIntOrString`] when partition, maxSurge, maxUnavailable or
    /// scaleStrategy.maxUnavailable is a string but not a percentage. Upstream logs and reads
    /// such a value as 0, which for a partition means "update everything"; we refuse instead.
    pub fn from_cloneset(cs: &CloneSet) -> Result<Self> {
        let spec = &cs.spec;
        let us = &spec.update_strategy;
        let replicas = spec.replicas.unwrap_or(1);
        let paused = us.paused.unwrap_or(false);
        let partition = partition_replicas(us.partition.as_ref(), replicas)?;
        let max_surge = match &us.max_surge {
            Some(v) if !paused => scaled_value(v, replicas, true, "spec.updateStrategy.maxSurge")?,
            _ => 0,
        };
        let default_unavailable = IntOrString::String(DEFAULT_MAX_UNAVAILABLE.to_owned());
        let max_unavailable = scaled_value(
            us.max_unavailable.as_ref().unwrap_or(&default_unavailable),
            replicas,
            max_surge == 0,
            "spec.updateStrategy.maxUnavailable",
        )?;
        let scale_max_unavailable = match &spec.scale_strategy.max_unavailable {
            Some(v) => scaled_value(v, replicas, true, "spec.scaleStrategy.maxUnavailable")?,
            None => i32::MAX,
        };
        let scaling_exclude_preparing_delete = cs
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SCALING_EXCLUDE_PREPARING_DELETE_LABEL))
            .is_some_and(|v| v == "true");
        Ok(Self {
            replicas,
            partition,
            max_surge,
            max_unavailable,
            scale_max_unavailable,
            min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
            paused,
            update_type: us.type_.unwrap_or_default(),
            scaling_exclude_preparing_delete,
        })
    }

    /// Whether the update type allows in-place updates (InPlaceIfPossible or InPlaceOnly).
    pub fn allows_in_place(&self) -> bool {
        matches!(
            self.update_type,
            CloneSetUpdateStrategyType::InPlaceIfPossible | CloneSetUpdateStrategyType::InPlaceOnly
        )
    }
}
