//! How many pods to create, delete and update now: upstream's `calculateDiffsWithExpectation`
//! (`pkg/controller/cloneset/sync/cloneset_sync_utils.go`), the heart of the CloneSet
//! controller, with one deliberate change (in-place before surge, see [`DiffOptions`]).

use std::fmt;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kinetic_api::kruise::LifecycleState;
use kinetic_api::kruise::cloneset::CloneSet;

use crate::pod;
use crate::strategy::Strategy;

/// Switches that upstream spreads over feature gates and flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffOptions {
    /// Upstream's `CloneSetPartitionRollback` gate (alpha, off by default): raising the
    /// partition rolls updated pods back to the current revision. Off, the partition only
    /// holds pods back.
    pub partition_rollback: bool,
    /// Count pods in `PreparingUpdate` as already updated (upstream's `PreparingUpdateAsUpdate`
    /// gate, which the scale path uses through `revision.IsPodUpdate`). The update path leaves
    /// it off so such pods are still candidates for the update.
    pub preparing_update_as_update: bool,
    /// Scaling ignores pods in PreparingDelete (upstream's
    /// `--cloneset-scaling-exclude-preparing-delete` flag; the CloneSet label of the same name
    /// is read into [`Strategy::scaling_exclude_preparing_delete`] and also counts).
    pub scaling_exclude_preparing_delete: bool,
    /// **Deviation from upstream: decide in place before surge.** Set it when every pod that
    /// waits for the update can be updated in place (the strategy is InPlaceIfPossible or
    /// InPlaceOnly and [`crate::inplace::update_spec`] of the current and update templates is
    /// `Some`). Then no surge pods are planned *for the update*, as long as the resolved
    /// maxUnavailable is at least 1 (so the in-place update can make progress without them).
    ///
    /// Upstream computes surge before it knows whether pods will be updated in place: with
    /// `maxSurge > 0` and InPlaceIfPossible it creates a new-revision pod, updates old pods in
    /// place, and then deletes an old pod to get back to replicas, on every rollout (the "CloneSet
    /// pod thrashing" case of the team's OpenKruise reference, §2.6): a partitioned rollout of 5
    /// pods with partition 3 ends with one pod recreated and only one of the two updates in
    /// place. With this flag the same rollout updates two pods in place and creates nothing.
    ///
    /// With maxUnavailable 0 an in-place update cannot start without a surge pod to stand in
    /// for the pod being updated, so there we keep upstream's behaviour. Surge for specified
    /// deletes (a pod being replaced) is unaffected.
    pub in_place_update: bool,
}

/// The counts `calculateDiffsWithExpectation` returns (`expectationDiffs`), same names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Diffs {
    /// Pods to create (>= 0).
    pub scale_up_num: i32,
    /// Of those, how many should be at the current (old) revision; may exceed
    /// `scale_up_num`, which still caps the total.
    pub scale_up_num_old_revision: i32,
    /// Pods to delete beyond those already marked for deletion (>= 0).
    pub scale_down_num: i32,
    /// Of those, how many should be old-revision pods; may exceed `scale_down_num`.
    pub scale_down_num_old_revision: i32,
    /// How many pods may be created now (`scaleStrategy.maxUnavailable` minus the unavailable).
    pub scale_up_limit: i32,
    /// How many ready pods may be deleted now (maxUnavailable, plus pods above replicas, minus
    /// the unavailable).
    pub delete_ready_limit: i32,
    /// Pods planned above replicas.
    pub use_surge: i32,
    /// Of those, how many at the old revision.
    pub use_surge_old_revision: i32,
    /// Pods to update: positive toward the update revision, negative back to the current
    /// revision (partition rollback), 0 nothing.
    pub update_num: i32,
    /// How many pods may be unavailable while updating (maxUnavailable plus pods above
    /// replicas); only set when `update_num` is not 0.
    pub update_max_unavailable: i32,
}

impl Diffs {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Prints the non-zero counts with upstream's field names, `{}` when all are zero, so test
/// snapshots read like upstream's `expectationDiffs{...}` literals.
impl fmt::Display for Diffs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields = [
            ("scaleUpNum", self.scale_up_num),
            ("scaleUpNumOldRevision", self.scale_up_num_old_revision),
            ("scaleDownNum", self.scale_down_num),
            ("scaleDownNumOldRevision", self.scale_down_num_old_revision),
            ("scaleUpLimit", self.scale_up_limit),
            ("deleteReadyLimit", self.delete_ready_limit),
            ("useSurge", self.use_surge),
            ("useSurgeOldRevision", self.use_surge_old_revision),
            ("updateNum", self.update_num),
            ("updateMaxUnavailable", self.update_max_unavailable),
        ];
        let set: Vec<String> =
            fields.iter().filter(|(_, v)| *v != 0).map(|(k, v)| format!("{k}={v}")).collect();
        if set.is_empty() { f.write_str("{}") } else { write!(f, "{{{}}}", set.join(" ")) }
    }
}

/// Everything one sync pass decides from: the CloneSet, its pods, its two revisions, the time.
#[derive(Debug, Clone)]
pub struct SyncInput<'a> {
    /// The CloneSet (for lifecycle hooks and the update strategy's sort rules).
    pub cloneset: &'a CloneSet,
    /// Its spec resolved to numbers.
    pub strategy: Strategy,
    /// The pods it owns (active ones: not terminating).
    pub pods: &'a [Pod],
    /// `status.currentRevision`: the ControllerRevision name pods are rolled back to.
    pub current_revision: &'a str,
    /// `status.updateRevision`: the ControllerRevision name of the current template.
    pub update_revision: &'a str,
    /// The time availability (minReadySeconds) is judged at.
    pub now: Timestamp,
    /// Gates and flags.
    pub options: DiffOptions,
}

impl<'a> SyncInput<'a> {
    /// Resolves `cloneset`'s strategy; options start at their defaults (upstream's default
    /// gates).
    ///
    /// # Errors
    /// An invalid int-or-string in the strategy, see [`Strategy::from_cloneset`].
    pub fn new(
        cloneset: &'a CloneSet,
        pods: &'a [Pod],
        current_revision: &'a str,
        update_revision: &'a str,
        now: Timestamp,
    ) -> crate::Result<Self> {
        Ok(Self {
            cloneset,
            strategy: Strategy::from_cloneset(cloneset)?,
            pods,
            current_revision,
            update_revision,
            now,
            options: DiffOptions::default(),
        })
    }

    /// `scaleStrategy.podsToDelete`.
    pub fn pods_to_delete(&self) -> &'a [String] {
        self.cloneset.spec.scale_strategy.pods_to_delete.as_deref().unwrap_or(&[])
    }

    /// Whether `p` is marked for deletion (label or podsToDelete).
    pub fn is_specified_delete(&self, p: &Pod) -> bool {
        pod::is_specified_delete(p, self.pods_to_delete())
    }

    /// Whether `p` counts as available under this CloneSet's minReadySeconds.
    pub fn is_available(&self, p: &Pod) -> bool {
        pod::is_available(p, self.strategy.min_ready_seconds, self.now)
    }

    /// Whether `p` counts as ready (available with minReadySeconds 0).
    pub fn is_ready(&self, p: &Pod) -> bool {
        pod::is_cloneset_ready(p, self.now)
    }

    /// Whether `p` counts as updated: at the update revision, or (with
    /// `preparing_update_as_update`) in PreparingUpdate.
    fn counts_as_updated(&self, p: &Pod, preparing_update_as_update: bool) -> bool {
        pod::matches_revision(p, self.update_revision)
            || (preparing_update_as_update && pod::in_state(p, LifecycleState::PreparingUpdate))
    }
}

#[derive(Default)]
struct Group {
    total: i32,
    active: i32,
    pre_deleting: i32,
    to_delete: i32,
    unavailable: i32,
}

/// Computes the scale and update counts for one sync pass.
///
/// `preparing_update_as_update` comes from `input.options`; upstream's scale path sets it and
/// its update path clears it, so call this twice if you need both views.
pub fn calculate_diffs(input: &SyncInput<'_>) -> Diffs {
    let s = &input.strategy;
    let opts = input.options;
    let mut res = Diffs::default();

    let (mut new, mut old) = (Group::default(), Group::default());
    for p in input.pods {
        let g = if input.counts_as_updated(p, opts.preparing_update_as_update) {
            &mut new
        } else {
            &mut old
        };
        g.total += 1;
        if pod::in_state(p, LifecycleState::PreparingDelete) {
            g.pre_deleting += 1;
        } else {
            g.active += 1;
            if input.is_specified_delete(p) {
                g.to_delete += 1;
            } else if !input.is_available(p) {
                g.unavailable += 1;
            }
        }
    }
    let all = input.pods.len() as i32;

    let mut update_old_diff = old.active - s.partition;
    let mut update_new_diff = new.active - (s.replicas - s.partition);
    let total_unavailable = new.pre_deleting + old.pre_deleting + new.unavailable + old.unavailable;
    // Without partition rollback (or when there is only one revision) pods only move forward.
    if input.update_revision == input.current_revision || !opts.partition_rollback {
        update_old_diff = update_old_diff.max(0);
        update_new_diff = update_new_diff.min(0);
    }

    if s.max_surge > 0 {
        // Surge to replace specified-delete pods without exceeding maxUnavailable.
        let (mut scale_surge, mut scale_old_surge) = (0, 0);
        let to_delete = new.to_delete + old.to_delete;
        if to_delete > 0 {
            scale_surge = (total_unavailable + to_delete - s.max_unavailable).max(0).min(to_delete);
            if scale_surge > new.to_delete {
                scale_old_surge = scale_surge - new.to_delete;
            }
        }

        // Surge to move pods between revisions, while old and new still differ in sign. This is
        // where we deviate: an in-place update needs no surge pod when maxUnavailable lets it
        // proceed (see `DiffOptions::in_place_update`).
        let (mut update_surge, mut update_old_surge) = (0, 0);
        let surge_for_update = !(opts.in_place_update && s.max_unavailable >= 1);
        if surge_for_update && differ_in_sign(update_old_diff, update_new_diff) {
            if update_old_diff.abs() <= update_new_diff.abs() {
                update_surge = update_old_diff.abs();
                if update_old_diff < 0 {
                    update_old_surge = update_surge;
                }
            } else {
                update_surge = update_new_diff.abs();
                if update_new_diff > 0 {
                    update_old_surge = update_surge;
                }
            }
        }

        // One pass never scales and updates at once, so the larger need wins.
        if scale_surge >= update_surge {
            res.use_surge = s.max_surge.min(scale_surge);
            res.use_surge_old_revision = res.use_surge.min(scale_old_surge);
        } else {
            res.use_surge = s.max_surge.min(update_surge);
            res.use_surge_old_revision = res.use_surge.min(update_old_surge);
        }
    }

    let (mut current_total, mut current_old) = (all, old.total);
    if s.scaling_exclude_preparing_delete || opts.scaling_exclude_preparing_delete {
        current_total -= old.pre_deleting + new.pre_deleting;
        current_old -= old.pre_deleting;
    }
    let expected_total = s.replicas + res.use_surge;
    let expected_old = s.partition + res.use_surge_old_revision;

    let up = expected_total - current_total;
    if up > 0 {
        res.scale_up_num = up;
        res.scale_up_num_old_revision = (expected_old - current_old).max(0);
        res.scale_up_limit =
            up.min(s.scale_max_unavailable.saturating_sub(total_unavailable).max(0));
    }

    // Pods already marked for deletion are not counted again.
    let down = current_total - old.to_delete - new.to_delete - expected_total;
    if down > 0 {
        res.scale_down_num = down;
        res.scale_down_num_old_revision = (current_old - old.to_delete - expected_old).max(0);
    }
    if new.to_delete > 0 || old.to_delete > 0 || res.scale_down_num > 0 {
        res.delete_ready_limit =
            (s.max_unavailable + (all - s.replicas) - total_unavailable).max(0);
    }

    res.update_num = if update_old_diff.abs() <= update_new_diff.abs() {
        update_old_diff
    } else {
        -update_new_diff
    };
    if res.update_num != 0 {
        res.update_max_unavailable = s.max_unavailable + all - s.replicas;
    }
    res
}

/// Upstream's `IsIntPlusAndMinus`: one is positive and the other negative.
fn differ_in_sign(a: i32, b: i32) -> bool {
    (a > 0 && b < 0) || (a < 0 && b > 0)
}
