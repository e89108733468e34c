//! Leader election through a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection`
//! package does it, so two `kinetic controller` replicas never reconcile at the same time.
//!
//! A candidate takes the Lease when it does not exist, when it already holds it, or when the
//! holder has not renewed it for `leaseDurationSeconds` (measured on the candidate's own clock
//! from the moment it *observed* the last change, as client-go does, so clock skew between
//! replicas does not matter). Every write carries the Lease's resourceVersion, so two candidates
//! racing for an expired Lease cannot both win: the loser gets a 409 and tries again later.
//!
//! The leader renews every `retry_period`; when it cannot renew within `renew_deadline` it
//! gives up leadership ([`Leadership::lost`] resolves) and the caller must stop reconciling at
//! once — `kinetic controller` exits, as upstream controller managers do, and its supervisor
//! restarts it as a candidate. On a clean shutdown the leader releases the Lease (empties the
//! holder and sets a 1 s duration) so a standby takes over without waiting out the lease.
//!
//! Every API call here runs under a timeout, as client-go's `renew` runs `tryAcquireOrRenew`
//! under a context with the renew deadline: the `kube` client has no response timeout, so a
//! request to an API server that stopped answering (a paused process, a dropped connection)
//! would otherwise wait forever and the leader would never notice it lost the Lease (issue 10,
//! item 3).

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// Timings of the election; the defaults are client-go's and controller-runtime's.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This candidate's identity (`holderIdentity`), unique per replica.
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Held leadership. Dropping it stops renewing (the Lease then expires by itself);
/// [`Leadership::release`] hands it over at once.
pub struct Leadership {
    lost: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Resolves when leadership is lost (a renewal failed for longer than the renew deadline,
    /// or another holder took the Lease).
    pub async fn lost(&self) {
        self.on_lost().await;
    }

    /// [`Leadership::lost`] as a future that does not borrow `self`, so the caller can still
    /// [`Leadership::release`] after waiting on it. A renewal task that ended for any reason
    /// counts as lost.
    pub fn on_lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.lost.clone();
        async move {
            let _ = rx.wait_for(|l| *l).await;
        }
    }

    /// Stops renewing and releases the Lease so a standby can take over at once.
    ///
    /// # Guarantees
    /// Returns within about `renew_deadline`: an API server that does not answer leaves the
    /// Lease to expire by itself instead.
    pub async fn release(mut self) {
        let _ = self.stop.send(true);
        let _ = (&mut self.task).await;
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_micro() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// What a candidate remembers of the Lease it observed: client-go's `observedRecord` and
/// `observedTime`.
struct Observed {
    holder: String,
    renew: Option<Timestamp>,
    at: Instant,
}

enum Try {
    Acquired,
    HeldByOther,
    Failed(String),
}

async fn try_acquire_or_renew(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    observed: &mut Option<Observed>,
) -> Try {
    let secs = i32::try_from(cfg.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let current = match api.get_opt(&cfg.name).await {
        Ok(c) => c,
        Err(e) => return Try::Failed(format!("reading the lease: {e}")),
    };
    let Some(mut lease) = current else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(now_micro()),
                renew_time: Some(now_micro()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Try::Acquired,
            Err(kube::Error::Api(s)) if s.code == 409 => Try::HeldByOther,
            Err(e) => Try::Failed(format!("creating the lease: {e}")),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let renew = spec.renew_time.as_ref().map(|t| t.0);
    let transitions = spec.lease_transitions.unwrap_or(0);
    // A changed record restarts the expiry clock, measured locally.
    let changed = observed.as_ref().is_none_or(|o| o.holder != holder || o.renew != renew);
    if changed {
        *observed = Some(Observed { holder: holder.clone(), renew, at: Instant::now() });
    }
    let held_by_us = holder == cfg.identity;
    let duration = Duration::from_secs(
        u64::try_from(spec.lease_duration_seconds.unwrap_or(secs)).unwrap_or(0),
    );
    let expired =
        holder.is_empty() || observed.as_ref().is_some_and(|o| o.at.elapsed() >= duration);
    if !held_by_us && !expired {
        return Try::HeldByOther;
    }
    let mut next = spec.clone();
    next.holder_identity = Some(cfg.identity.clone());
    next.lease_duration_seconds = Some(secs);
    next.renew_time = Some(now_micro());
    if !held_by_us {
        next.acquire_time = Some(now_micro());
        next.lease_transitions = Some(transitions + 1);
    }
    lease.spec = Some(next);
    // `replace` sends the resourceVersion we read: a racing candidate gets a 409.
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(l) => {
            let s = l.spec.unwrap_or_default();
            *observed = Some(Observed {
                holder: cfg.identity.clone(),
                renew: s.renew_time.map(|t| t.0),
                at: Instant::now(),
            });
            Try::Acquired
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Try::HeldByOther,
        Err(e) => Try::Failed(format!("updating the lease: {e}")),
    }
}

/// Waits until this candidate holds the Lease, then keeps renewing it in the background.
///
/// # Errors
/// None: API errors are logged and retried every `retry_period` until the Lease is won.
pub async fn acquire(client: Client, cfg: LeaseConfig) -> Leadership {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut observed = None;
    loop {
        match bounded(cfg.renew_deadline, try_acquire_or_renew(&api, &cfg, &mut observed)).await {
            Try::Acquired => break,
            Try::HeldByOther => {
                let holder = observed.as_ref().map(|o| o.holder.as_str()).unwrap_or_default();
                tracing::debug!(lease = %cfg.name, holder, "lease held by another candidate");
            }
            Try::Failed(e) => tracing::warn!(lease = %cfg.name, error = %e, "leader election"),
        }
        tokio::time::sleep(cfg.retry_period).await;
    }
    tracing::info!(lease = %format!("{}/{}", cfg.namespace, cfg.name), identity = %cfg.identity, "became leader");
    let (lost_tx, lost) = watch::channel(false);
    let (stop, mut stop_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut last_renew = Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(cfg.retry_period) => {}
                _ = stop_rx.changed() => {
                    release(&api, &cfg).await;
                    return;
                }
            }
            // The attempt may not outlive the renew deadline (client-go's `renew` runs it under
            // a context with that timeout): a hung request must not keep a stale leader going.
            let deadline = last_renew + cfg.renew_deadline;
            let attempt = try_acquire_or_renew(&api, &cfg, &mut observed);
            let outcome = tokio::select! {
                r = tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), attempt) => {
                    r.unwrap_or_else(|_| Try::Failed("no answer before the renew deadline".into()))
                }
                // A shutdown while an attempt hangs still releases (itself bounded).
                _ = stop_rx.changed() => {
                    release(&api, &cfg).await;
                    return;
                }
            };
            match outcome {
                Try::Acquired => last_renew = Instant::now(),
                Try::HeldByOther => {
                    tracing::error!(lease = %cfg.name, "another candidate took the lease");
                    let _ = lost_tx.send(true);
                    return;
                }
                Try::Failed(e) => {
                    tracing::warn!(lease = %cfg.name, error = %e, "lease renewal failed");
                    if Instant::now() >= deadline {
                        tracing::error!(lease = %cfg.name, "lease not renewed within the renew deadline");
                        let _ = lost_tx.send(true);
                        return;
                    }
                }
            }
        }
    });
    Leadership { lost, stop, task }
}

/// `attempt`, or a failure when it has not finished within `limit`.
async fn bounded(limit: Duration, attempt: impl std::future::Future<Output = Try>) -> Try {
    tokio::time::timeout(limit, attempt)
        .await
        .unwrap_or_else(|_| Try::Failed(format!("no answer within {limit:?}")))
}

/// Gives the Lease up (client-go's `ReleaseOnCancel`): empty holder, 1 s duration. Bounded by
/// the renew deadline; on failure the Lease simply expires.
async fn release(api: &Api<Lease>, cfg: &LeaseConfig) {
    if tokio::time::timeout(cfg.renew_deadline, release_once(api, cfg)).await.is_err() {
        tracing::warn!(lease = %cfg.name, "releasing the lease: no answer; it will expire instead");
    }
}

async fn release_once(api: &Api<Lease>, cfg: &LeaseConfig) {
    // A write that lands between our read and our release (a renewal still in flight, a
    // standby's read-modify) makes the release conflict; read again and retry while the Lease
    // is still ours, or the standby waits out a whole lease duration (seen in CI).
    for _ in 0..5 {
        let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await else { return };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now_micro());
        match api.replace(&cfg.name, &PostParams::default(), &lease).await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                tracing::warn!(lease = %cfg.name, error = %e, "releasing the lease");
                return;
            }
        }
    }
    tracing::warn!(lease = %cfg.name, "releasing the lease: conflicts every time; it will expire");
}
