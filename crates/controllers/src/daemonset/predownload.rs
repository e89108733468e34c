//! The Advanced DaemonSet's image pre-download (Kruise's `daemonset_predownload_image.go`),
//! over the shared [`crate::predownload`]. `apps/v1` DaemonSets have none (upstream's is
//! Kruise's).
//!
//! As upstream: while `updatedNumberScheduled != desiredNumberScheduled` or the status's
//! `daemonSetHash` is not the current revision's, the images that differ from any older
//! revision's are pulled on the nodes of pods not at the current revision — for a Standard
//! (recreating) update too, since a DaemonSet's new pod lands on the same node; only an update
//! of every node in one batch (partition 0 and maxUnavailable ≥ the desired nodes) skips it.
//! Once the status converged, the jobs go. Upstream reads `-min-updated-ready-pods` but does
//! not enforce it yet (a `todo` in `syncDaemonSet`); here it gates the jobs as for the other
//! workloads, counted from the pods at the current revision that are ready.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kinetic_api::kruise::CONTROLLER_REVISION_HASH_LABEL;
use kube::ResourceExt as _;

use super::revision::Revisions;
use super::{Ctx, Ds};
use crate::predownload::{self, Workload};

/// One pass of [`predownload::sync`] for an Advanced DaemonSet (nothing for `apps/v1`) whose
/// eligible nodes number `desired`; `pods` are the pods it owns.
pub async fn sync(
    ctx: &Ctx,
    ds: &Ds,
    owner: &OwnerReference,
    revs: &Revisions,
    pods: &[&Pod],
    desired: i32,
) -> Option<Duration> {
    if !ds.advanced {
        return None;
    }
    let live: Vec<&&Pod> =
        pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    let at_current = |p: &Pod| {
        kinetic_rollout::pod::label(p, CONTROLLER_REVISION_HASH_LABEL) == Some(&revs.hash)
    };
    let outdated_pods = live.iter().filter(|p| !at_current(p)).count();
    let updated_ready =
        live.iter().filter(|p| at_current(p) && kinetic_rollout::pod::is_ready(p)).count();
    let limits = ds.limits(desired);
    let skip = (limits.partition == 0 && limits.max_unavailable >= desired)
        .then_some("every node updates in one batch");
    let w = Workload {
        kind: "advanced-daemonset",
        name: &ds.name,
        namespace: &ds.ns,
        uid: &ds.uid,
        owner,
        annotations: &ds.annotations,
        selector: &ds.spec.selector,
        pull_secrets: ds.spec.template.spec.as_ref().and_then(|s| {
            s.image_pull_secrets.as_ref().map(|v| v.iter().map(|r| r.name.clone()).collect())
        }),
        replicas: desired,
        updated_ready: i32::try_from(updated_ready).unwrap_or(i32::MAX),
        outdated_pods,
    };
    let current = revs.current.name_any();
    let r = predownload::Revisions {
        update: &revs.current,
        old: revs.all.iter().filter(|r| r.name_any() != current).map(|r| &**r).collect(),
        all: &revs.all,
        converged: ds.status.updated_number_scheduled == ds.status.desired_number_scheduled
            && ds.status.daemon_set_hash == revs.hash,
    };
    predownload::sync(&ctx.client, &w, &r, skip).await
}
