//! The built-in `apps/v1` workload controllers, Deployments and ReplicaSets, with upstream
//! kube-controller-manager's behaviour as the spec (`pkg/controller/deployment`,
//! `pkg/controller/replicaset`); the Endpoints and EndpointSlice controllers of Services are in
//! [`crate::network`] and share this description of how they are built.
//!
//! Every controller talks to the API only through the `kube` client, so it runs unchanged on the
//! embedded API server and on a real cluster. Each one is a kube-runtime `Controller` like every
//! other controller of this crate: reflector stores are its informers, its `watches_stream`
//! mappers are client-go's event handlers (fed by `crate::util::reflect_changes`, which also
//! yields the previous version of a relabelled or re-owned object), and kube-runtime's scheduler
//! is the work queue (an object is reconciled by one reconcile at a time, and again afterwards
//! if it changed meanwhile). Reconciles are level-triggered and idempotent: they read the
//! caches, compute the desired state and write only the difference, with the resourceVersion
//! of what they read (a `409 Conflict` is retried with [`crate::backoff`]). A reconcile that
//! finds a cache not yet listed requeues itself. What a controller wrote and its caches do not
//! show yet is held in [`crate::expectations`], so a slow watch never makes it act twice.
//!
//! - [`replicaset`]: creates pods from the template (`generateName: {rs}-`, slow-start batches
//!   1, 2, 4, …, at most 500 per sync) and deletes the surplus in upstream's order (unassigned,
//!   pending, not ready, lower `controller.kubernetes.io/pod-deletion-cost`, doubled-up on a
//!   node, ready for less time, more restarts, newer); adopts matching orphans and releases pods
//!   that no longer match; writes `status` (replicas, fullyLabeledReplicas, readyReplicas,
//!   availableReplicas after `minReadySeconds`, observedGeneration, `ReplicaFailure`).
//!   Expectations make sure a slow watch or a restart never creates or deletes a pod twice.
//! - [`deployment`]: `RollingUpdate` (maxSurge / maxUnavailable) and `Recreate`, one ReplicaSet
//!   per template named `{deployment}-{pod-template-hash}`, the revision annotations,
//!   proportional scaling during a rollout, `paused`, `revisionHistoryLimit`,
//!   `progressDeadlineSeconds` and the `Progressing` / `Available` / `ReplicaFailure`
//!   conditions, so `kubectl rollout status|undo|restart|history|pause|resume`, `kubectl scale`
//!   and `kubectl set image` behave as on Kubernetes (`rollout undo` is done by kubectl itself).
//! - `network::endpoints`: the `v1` Endpoints of every Service with a selector (ready pods in
//!   `addresses`, others in `notReadyAddresses`, terminating pods left out unless
//!   `publishNotReadyAddresses`).
//! - `network::endpointslice`: `discovery.k8s.io/v1` EndpointSlices of the same Services (IPv4,
//!   conditions ready/serving/terminating, at most 100 endpoints per slice).
//!
//! [`run`] runs both (and [`crate::network::run`] the other two) until its shutdown future
//! completes; each has its own entry point too.
//! On shutdown a controller stops taking objects and lets its running reconciles finish
//! (kube-runtime's graceful shutdown), so none of its creates or deletes is still in flight when
//! a successor lists: a restart never doubles a pod (after a crash, a surplus pod is deleted by
//! the next sync). Events (`ScalingReplicaSet`, `SuccessfulCreate`, `SuccessfulDelete`,
//! `FailedCreate`) are posted as `core/v1` Events in the background ([`crate::events`]).
//!
//! Deliberate deviations from upstream (each explained where it is implemented):
//! - The pod-template hash is FNV-32a of the template's canonical JSON, not of Go's `spew`
//!   dump ([`deployment::util::compute_hash`]): same shape, different values (encoded with
//!   [`kinetic_rollout::revision::safe_encode`], as the CloneSet's revision names).
//! - Expectations of pod creations and deletions expire after
//!   [`crate::expectations::TIMEOUT`] (upstream: 5 minutes), and a failing ReplicaSet or
//!   Deployment is not reconciled again before its back-off ends unless its spec changes
//!   ([`crate::backoff`]), where client-go's queue retries at once on any event.
//! - A rolling update counts an old ReplicaSet for the larger of its spec and status replicas,
//!   so the pod count stays within `replicas + maxSurge` at every moment
//!   ([`deployment::util::new_rs_new_replicas`]).
//! - The pod deletion order is a sort key: ties in the logarithmic time buckets are broken by
//!   UID last, because upstream's comparison is not a total order.
//! - Endpoints subsets and ports are sorted by value, not by hash.
//! - The Deployment's revision annotation is written with the status, as upstream, and with a
//!   metadata patch when the server keeps only `.status` from a status write.
//!
//! What this crate does *not* do: DaemonSets, StatefulSets, Jobs, CronJobs, ReplicationControllers
//! and the garbage collector (the API server does ownerReference GC); leader election (run one
//! instance per cluster); EndpointSlice topology hints, zones,
//! dual-stack (IPv4 slices only), mirroring of selector-less Endpoints and the
//! `endpoints.kubernetes.io/last-change-trigger-time` annotation; the 1000-address capacity
//! truncation of Endpoints; `status.terminatingReplicas`; `rollbackTo` (apps/v1 has none:
//! kubectl rolls back by patching the template).

pub mod deployment;
pub(crate) mod pods;
pub mod replicaset;

use std::future::Future;

pub use deployment::run_deployment_controller;
pub use replicaset::run_replicaset_controller;

/// Runs the ReplicaSet and Deployment controllers until `shutdown` completes.
///
/// # Errors
/// One of the controllers stopped (a watch stream ended); the other is stopped too.
///
/// # Caveats
/// Run one instance per cluster: there is no leader election.
pub async fn run(
    client: kube::Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    crate::util::run_together(shutdown, |stop| async move {
        tracing::info!("apps/v1 controllers started");
        futures::try_join!(
            run_replicaset_controller(client.clone(), stop.wait()),
            run_deployment_controller(client, stop.wait()),
        )
        .map(|_| ())
    })
    .await
}
