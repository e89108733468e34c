//! The CloneSet's image pre-download (OpenKruise's `cloneset_predownload_image.go`): its rules
//! for when pre-download applies, over the shared [`crate::predownload`].
//!
//! It applies while `currentRevision != updateRevision` and the update can be done in place;
//! it does not for ReCreate or OnDelete (OnDelete, newer than upstream's pre-download code,
//! is skipped like ReCreate because nothing updates in place on its own), a change that is not
//! in place, or everything updating in one batch (partition 0 and maxUnavailable ≥ replicas).

use std::time::Duration;

use kinetic_api::kruise::cloneset::{CloneSet, CloneSetUpdateStrategyType};
use kinetic_rollout::Strategy;
use kube::{Client, ResourceExt as _};

use super::revision::Revisions;
use crate::predownload::{self, Skip, Workload};

/// Why a CloneSet's update strategy rules pre-download out.
fn skip(strategy: &Strategy, in_place: bool) -> Skip {
    // Upstream resolves a percentage maxUnavailable rounding down here, although the update
    // itself rounds it up; Kinetic uses the update's value, so "everything in one batch" means
    // what the update will really do (4 replicas at 80% update all 4 at once: no pre-download).
    if matches!(
        strategy.update_type,
        CloneSetUpdateStrategyType::ReCreate | CloneSetUpdateStrategyType::OnDelete
    ) {
        Some("the update recreates pods")
    } else if !in_place {
        Some("the change cannot be done in place")
    } else if strategy.partition == 0 && strategy.max_unavailable >= strategy.replicas {
        Some("every pod updates in one batch")
    } else {
        None
    }
}

/// One pass of [`predownload::sync`] for `cs`; `outdated_pods` are its active pods not at the
/// update revision.
pub async fn sync(
    client: &Client,
    cs: &CloneSet,
    revs: &Revisions,
    strategy: &Strategy,
    in_place: bool,
    outdated_pods: usize,
) -> Option<Duration> {
    let update = revs.update.name_any();
    let status = cs.status.as_ref();
    let (name, ns, uid) =
        (cs.name_any(), cs.namespace().unwrap_or_default(), cs.uid().unwrap_or_default());
    let owner = super::owner_ref(cs);
    let w = Workload {
        kind: "cloneset",
        name: &name,
        namespace: &ns,
        uid: &uid,
        owner: &owner,
        annotations: cs.annotations(),
        selector: &cs.spec.selector,
        pull_secrets: cs.spec.template.spec.as_ref().and_then(|s| {
            s.image_pull_secrets.as_ref().map(|v| v.iter().map(|r| r.name.clone()).collect())
        }),
        replicas: strategy.replicas,
        updated_ready: predownload::updated_ready(
            status.and_then(|s| s.update_revision.as_deref()),
            status.map_or(0, |s| s.updated_ready_replicas),
            &update,
        ),
        outdated_pods,
    };
    let r = predownload::Revisions {
        update: &revs.update,
        old: vec![&revs.current],
        all: &revs.all,
        // Upstream compares the revisions of this pass only. The status's pair is stale on
        // the first pass after a template change (it still names the old revision as both),
        // so reading it would skip that pass's job creation.
        converged: revs.current.name_any() == update,
    };
    predownload::sync(client, &w, &r, skip(strategy, in_place)).await
}
