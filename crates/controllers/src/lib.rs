//! Kinetic's controllers: API clients that act on what they watch, through the `kube` client
//! only, so they run unchanged on the embedded API server and on a real cluster.
//!
//! For now this is the embedded scheduler ([`scheduler`]): `kinetic up` runs it in-process in
//! place of kube-scheduler. It watches Nodes and non-terminated Pods, keeps the requests of the
//! pods bound (or just assumed) to each node in memory, filters and scores nodes the way the
//! default kube-scheduler profile does for the features it supports, and binds each pending pod
//! through the `pods/binding` subresource within a watch delivery of its creation.
//!
//! The scheduler also does kube-scheduler's VolumeBinding (`scheduler::volumes`): missing claims
//! keep a pod Pending, bound volumes' node affinity restricts nodes, and unbound
//! `WaitForFirstConsumer` claims get `volume.kubernetes.io/selected-node`.
//!
//! The controllers beside it: [`cloneset`] (with image pre-download for in-place rollouts,
//! [`predownload`], which the Advanced StatefulSet and Advanced DaemonSet share),
//! [`imagepulljob`] (OpenKruise's ImagePullJob: writes per-node tags into NodeImages within
//! `parallelism` and computes the job status from what the nodes report), [`nodeimage`] (one
//! NodeImage per Node; the node agent does the pulls, nothing here pulls) and [`volume`] (the
//! PersistentVolume controller: binding, release, protection finalizers) and [`serving`] (Knative
//! Serving's Service, Configuration, Revision and Route; each Revision runs as a CloneSet).
//!
//! The built-in controllers of kube-controller-manager that Kinetic replaces are here too:
//! [`apps`] (`apps/v1` Deployment and ReplicaSet) and [`network`] (Endpoints, EndpointSlice).
//!
//! What the scheduler does *not* do: preemption, pod (anti-)affinity, topology spread, preferred node
//! affinity and other soft scores, scheduling profiles and extenders, leader
//! election (run one scheduler per scheduler name).

pub mod apps;
pub mod backoff;
pub mod broadcastjob;
pub mod cloneset;
pub mod crds;
pub mod cronjob;
pub mod crr;
pub mod daemonset;
pub mod disruption;
pub mod ehpa;
pub mod events;
pub mod expectations;
pub mod hpa;
pub mod imagelistpulljob;
pub mod imagepulljob;
pub mod job;
pub mod leader;
pub mod network;
pub mod nodeimage;
pub mod podpool;
pub mod podunavailablebudget;
pub mod predownload;
pub mod sandbox;
pub mod scheduler;
pub mod serving;
pub mod serving_autoscaler;
pub mod serving_gateway;
pub mod sidecarset;
pub mod statefulset;
pub mod uniteddeployment;
mod util;
pub mod volume;

pub use scheduler::{SchedulerConfig, run_scheduler};

/// A controller failed as a whole (individual API calls are retried and logged instead).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A watch stream ended, which `kube`'s watcher never does while it can retry.
    #[error("the {resource} watch ended")]
    WatchEnded { resource: &'static str },
    /// A CustomResourceDefinition could not be installed or upgraded.
    #[error("installing CRD {name}")]
    Crd {
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// The API server did not report a CRD as Established in time.
    #[error("CRD {name} did not become Established within 30 s")]
    NotEstablished { name: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error with its chain of causes on one line (`a: b: c`), for logs. A cause whose text
/// the line already holds is left out: `kube::Error::Api` prints its Status and then has that
/// Status as its source, which printed every API refusal twice.
pub(crate) fn report(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = c.source();
    }
    out
}

/// What a kube-runtime `Controller`'s result stream is drained with: a failed reconcile is
/// logged at debug only, since its error policy (`Backoff::retry`) already decided the retry
/// and logs what matters.
pub(crate) fn log_reconcile<T, E: std::fmt::Display>(
    controller: &'static str,
) -> impl FnMut(Result<T, E>) -> std::future::Ready<()> {
    move |r| {
        if let Err(e) = r {
            tracing::debug!(error = %e, "{controller} reconcile");
        }
        std::future::ready(())
    }
}

/// Whether a reflector's cache has received its first full list, without waiting for it.
///
/// Reconcilers check this and requeue instead of awaiting `Store::wait_until_ready`: kube-runtime
/// feeds the caches of `owns`/`watches` streams only while the controller runs, so a reconcile
/// still waiting for one when shutdown begins would wait forever and hold the controller's
/// graceful shutdown with it (issue 10, item 3: `kinetic controller` replicas that kept the
/// Lease after SIGTERM).
pub(crate) fn cache_ready<K>(store: &kube::runtime::reflector::Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    use futures::FutureExt as _;
    store.wait_until_ready().now_or_never().is_some()
}

#[cfg(test)]
mod report_tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("the cause")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("layer")]
    struct Layer(#[source] Inner);

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        assert_eq!(super::report(&Outer(Inner)), "outer: the cause");
        assert_eq!(super::report(&Layer(Inner)), "layer: the cause");
    }
}
