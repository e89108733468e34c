//! The KPA loop (issue 11, part 5) and how several gateways feed one autoscaler (part 3).
//!
//! # One autoscaler, many gateways
//!
//! Every gateway process (`kinetic up`'s in-process one, each `kinetic gateway --kubeconfig`)
//! runs this loop, and the processes elect one leader through the Lease
//! `knative-serving/autoscaler-bucket-00-of-01` (upstream's autoscaler elects its bucket owner
//! through a Lease of that name; [`crate::leader`] does the election). Only the leader decides
//! and writes. The data path follows Knative's, where activators push per-revision stats to
//! the autoscaler that owns the revision's bucket, with pull in place of push:
//!
//! - each gateway serves its stats on a small HTTP endpoint
//!   ([`kinetic_gateway::stats::StatsServer`], on the gateway's IP, ephemeral port) and
//!   registers it in a Lease `knative-serving/kinetic-gateway-{identity}` (label
//!   [`GATEWAY_LABEL`], annotation [`STATS_ADDRESS_ANNOTATION`]) renewed every
//!   [`REGISTRATION_RENEW`], as kube-apiserver registers its identity Leases;
//! - every second the leader takes its own gateway's stats in-process and scrapes every other
//!   live gateway (`renewTime` within the lease duration) with a bounded timeout, sums each
//!   revision's concurrency and arrivals, and records the sum into one
//!   [`kinetic_autoscale::Metrics`] per Revision; a gateway that does not answer is left out of
//!   that second (upstream drops an activator's stats the same way when its connection fails);
//!   registrations expired for a minute are deleted by the leader;
//! - a request held at zero by any gateway wakes the leader at once: the leader's own gateway
//!   through the in-process channel, any other by `POST /demand` to the leader's endpoint
//!   (found through the election Lease's holder and its registration), as an activator pokes
//!   the autoscaler with a stat on the first request for a revision at zero.
//!
//! A new leader starts every revision's metrics anew (as upstream's restarted autoscaler does).
//!
//! # The decision
//!
//! [`Autoscaler::scale`] decides with the Revision's `autoscaling.knative.dev/*` annotations
//! and the `config-autoscaler` ConfigMap (namespace `knative-serving`, defaults when absent or
//! invalid); a valid decision that differs from the CloneSet `{revision}-deployment`'s
//! `spec.replicas` is merge-patched into it. The on-demand poke sets a CloneSet at zero to
//! `max(1, activation-scale)` right away; later ticks decide from the metrics, which count held
//! requests.
//!
//! The decision is shown in the Revision's PodAutoscaler (created by the Revision controller):
//! `status.desiredScale`, `actualScale` (ready pods), the `Active`, `ScaleTargetInitialized`,
//! `SKSReady` and `Ready` conditions (upstream's `computeActiveCondition`), and Kinetic's
//! `status.decider` (panic mode, the observed stable and panic values, the excess burst
//! capacity, the gateways summed, a reason). The status is written only when the decision
//! changes (desired or actual scale, a condition, the mode, the gateways summed), and the
//! observed values alone refresh it at most every [`OBSERVED_REFRESH`]: at most a few writes per
//! revision and minute in steady state. `spec.reachability` is written here too (see
//! [`reachable`]).
//!
//! Revisions of another autoscaler class are left alone. Deliberate simplifications: the
//! decision runs every second rather than upstream's 2 s tick.
//! A Revision whose annotations do not validate is skipped (the API server refuses them
//! anyway). The stats endpoint is unauthenticated, like upstream's autoscaler websocket.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kinetic_api::knative::configuration::Configuration;
use kinetic_api::knative::podautoscaler::{
    self as pa, DeciderStatus, PodAutoscaler, PodAutoscalerStatus,
};
use kinetic_api::knative::revision::Revision;
use kinetic_api::knative::route::Route;
use kinetic_api::kruise::cloneset::CloneSet;
use kinetic_autoscale::{
    Activity, Autoscaler, Config, DeciderSpec, Metric, Metrics, RevisionSpec, ScaleResult, Stat,
    Time,
};
use kinetic_gateway::stats::{StatsClient, StatsServer};
use kinetic_gateway::{Gateway, RevisionKey};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt as _};
use tokio::sync::{Notify, mpsc, watch};

use crate::serving::revision::workload_name;
use crate::serving::set_condition;
use crate::serving_gateway::AbortOnDrop;

/// Where Knative keeps its ConfigMaps and Leases.
pub const SYSTEM_NAMESPACE: &str = "knative-serving";
/// The autoscaler's ConfigMap.
pub const CONFIG_NAME: &str = "config-autoscaler";
/// The Lease the autoscaler's leader holds (upstream's name for its single bucket).
pub const LEADER_LEASE: &str = "autoscaler-bucket-00-of-01";
/// Label on the Leases that register gateways' stats endpoints.
pub const GATEWAY_LABEL: &str = "serving.kinetic.dev/gateway";
/// Annotation on a gateway's registration Lease: its stats endpoint, `ip:port`.
pub const STATS_ADDRESS_ANNOTATION: &str = "serving.kinetic.dev/stats-address";
/// How often a gateway renews its registration; it counts as gone after three times that.
pub const REGISTRATION_RENEW: Duration = Duration::from_secs(5);
/// How often the observed values alone may rewrite a PodAutoscaler's status.
pub const OBSERVED_REFRESH: Duration = Duration::from_secs(10);
/// How long the leader waits for one gateway's stats each second.
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(700);

/// One revision's KPA state.
struct State {
    metrics: Metrics,
    scaler: Autoscaler,
    /// The workload reached its initial scale once (`ScaleTargetInitialized`).
    initialized: bool,
    /// This autoscaler made a decision (a desired scale of at least 0) since it started.
    decided: bool,
    /// The status last written (or found), and when.
    written: Option<(PodAutoscalerStatus, Instant)>,
}

/// `now` for the autoscaler: the time since the Unix epoch.
fn now() -> Time {
    Time::new(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default())
}

/// A name for this gateway, unique per process and per gateway in it: the host name, the
/// process id and a counter, as a DNS label.
fn identity() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(30)
        .collect();
    let host = host.trim_matches('-');
    let host = if host.is_empty() { "gateway" } else { host };
    format!("{host}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The registration Lease's name of a gateway.
fn registration_name(identity: &str) -> String {
    format!("kinetic-gateway-{identity}")
}

/// The address other processes reach this gateway's stats endpoint at: the gateway's own IP,
/// or, when it listens on every address, the first non-loopback address of the host name
/// (loopback when there is none).
async fn advertised(ip: IpAddr, port: u16) -> SocketAddr {
    if !ip.is_unspecified() {
        return SocketAddr::new(ip, port);
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let found = tokio::net::lookup_host((host.trim(), port))
        .await
        .ok()
        .and_then(|mut addrs| addrs.find(|a| !a.ip().is_loopback() && a.is_ipv4()));
    found.unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
}

/// Runs the loop until cancelled (it never returns on its own): registers this gateway's
/// stats endpoint, takes part in the election, and decides while it leads. Dropping it
/// leaves a held leadership Lease to expire by itself; [`run_until`] hands it over.
pub async fn run(
    client: Client,
    gateway: Arc<Gateway>,
    demand: mpsc::UnboundedReceiver<RevisionKey>,
) {
    run_until(client, gateway, demand, std::future::pending()).await;
}

/// [`run`] until `shutdown` resolves; a leader then releases the autoscaler's Lease (bounded
/// by the Lease's renew deadline) so another gateway's process takes over at once instead of
/// after the lease duration, as client-go's `ReleaseOnCancel` does.
pub async fn run_until(
    client: Client,
    gateway: Arc<Gateway>,
    mut demand: mpsc::UnboundedReceiver<RevisionKey>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let me = identity();
    // Pokes from other gateways arrive on the stats endpoint.
    let (remote_tx, mut remote) = mpsc::unbounded_channel();
    let hook: kinetic_gateway::OnDemand = Arc::new(move |key: &RevisionKey| {
        let _ = remote_tx.send(key.clone());
    });
    let listen = SocketAddr::new(gateway.local_addr().ip(), 0);
    let server = match StatsServer::start(gateway.clone(), listen, Some(hook)).await {
        Ok(s) => Some(s),
        Err(e) => {
            // Without the endpoint this gateway still scales alone when it leads.
            tracing::error!(error = %crate::report(&e), "gateway stats endpoint failed to start");
            None
        }
    };
    let stats_addr = match &server {
        Some(s) => Some(advertised(s.local_addr().ip(), s.local_addr().port()).await),
        None => None,
    };
    ensure_namespace(&client).await;

    let changed = Arc::new(Notify::new());
    let reflect = |api, cfg| crate::serving_gateway::reflect(api, cfg, changed.clone());
    let (revisions, t1) = reflect(Api::<Revision>::all(client.clone()), watcher::Config::default());
    let (clonesets, t2) = crate::serving_gateway::reflect(
        Api::<CloneSet>::all(client.clone()),
        watcher::Config::default(),
        changed.clone(),
    );
    let (configs, t3) = crate::serving_gateway::reflect(
        Api::<ConfigMap>::namespaced(client.clone(), SYSTEM_NAMESPACE),
        watcher::Config::default().fields(&format!("metadata.name={CONFIG_NAME}")),
        changed.clone(),
    );
    let (routes, t4) = crate::serving_gateway::reflect(
        Api::<Route>::all(client.clone()),
        watcher::Config::default(),
        changed.clone(),
    );
    let (configurations, t5) = crate::serving_gateway::reflect(
        Api::<Configuration>::all(client.clone()),
        watcher::Config::default(),
        changed.clone(),
    );
    let (leases, t6) = crate::serving_gateway::reflect(
        Api::<Lease>::namespaced(client.clone(), SYSTEM_NAMESPACE),
        watcher::Config::default(),
        changed.clone(),
    );
    let (pas, t7) = crate::serving_gateway::reflect(
        Api::<PodAutoscaler>::all(client.clone()),
        watcher::Config::default(),
        changed,
    );
    let register = tokio::spawn(register(client.clone(), me.clone(), stats_addr));
    let (leading_tx, leading) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut election = tokio::spawn(elect(client.clone(), me.clone(), leading_tx, stop_rx));
    let _abort = AbortOnDrop(vec![t1, t2, t3, t4, t5, t6, t7, register]);
    // Aborts the election when this future is dropped rather than stopped.
    let abort_election = election.abort_handle();
    let _abort_election = abort_on_drop(abort_election);
    tokio::pin!(shutdown);
    let _server = server;

    let caches = Caches { revisions, clonesets, configs, routes, configurations, leases, pas };
    let scrape = StatsClient::default();
    let mut states: HashMap<RevisionKey, State> = HashMap::new();
    let mut was_leading = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        enum Ev {
            Tick,
            Local(RevisionKey),
            Remote(RevisionKey),
        }
        let ev = tokio::select! {
            _ = tick.tick() => Ev::Tick,
            Some(key) = demand.recv() => Ev::Local(key),
            Some(key) = remote.recv() => Ev::Remote(key),
            () = &mut shutdown => {
                let _ = stop_tx.send(true);
                // The release inside is bounded by the renew deadline; this bound only
                // covers an election stuck before it.
                let _ = tokio::time::timeout(Duration::from_secs(15), &mut election).await;
                return;
            }
        };
        let leads = *leading.borrow();
        if leads != was_leading {
            // A new leader starts from no history; a former one forgets its own.
            states.clear();
            was_leading = leads;
        }
        match ev {
            Ev::Local(key) if !leads => {
                // Tell the leader at once, without holding up this loop.
                if let Some(addr) = leader_address(&caches.leases.state(), &me) {
                    let scrape = scrape.clone();
                    tokio::spawn(async move {
                        if let Err(e) = scrape.poke(addr, &key).await {
                            tracing::warn!(revision = %key, error = %crate::report(&e),
                                "waking the autoscaler's leader failed");
                        }
                    });
                } else {
                    tracing::debug!(revision = %key, "no autoscaler leader to wake yet");
                }
            }
            Ev::Local(key) | Ev::Remote(key) => {
                if leads {
                    // Each activation is its own task: a burst of Services cold at once
                    // (`kinetic bench coldstart`, issue 12) made the loop write their CloneSets
                    // one after the other, the last scaled from zero seconds after the first
                    // (its request waiting all along). Upstream's autoscaler runs one scaler per
                    // revision (`pkg/autoscaler/scaling/multiscaler.go`; `Poke` wakes that one),
                    // so no revision's scale from zero waits for another's. The write is
                    // idempotent (`replicas` set to the activation scale while at zero).
                    let (client, caches) = (client.clone(), caches.clone());
                    tokio::spawn(async move { activate(&client, &caches, &key).await });
                }
            }
            Ev::Tick if leads => {
                let (report, gateways) =
                    gather(&gateway, &scrape, &caches.leases.state(), &me).await;
                decide(&client, &caches, &mut states, &report, gateways).await;
                collect_registrations(&client, &caches.leases.state()).await;
            }
            Ev::Tick => {}
        }
    }
}

/// The reflectors the loop decides from.
#[derive(Clone)]
struct Caches {
    revisions: Store<Revision>,
    clonesets: Store<CloneSet>,
    configs: Store<ConfigMap>,
    routes: Store<Route>,
    configurations: Store<Configuration>,
    leases: Store<Lease>,
    pas: Store<PodAutoscaler>,
}

impl Caches {
    fn config(&self) -> Config {
        self.configs
            .state()
            .first()
            .map(|cm| {
                Config::from_data(&cm.data.clone().unwrap_or_default()).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "config-autoscaler is invalid; using the defaults");
                    Config::default()
                })
            })
            .unwrap_or_default()
    }

    fn cloneset(&self, key: &RevisionKey) -> Option<Arc<CloneSet>> {
        self.clonesets.get(&ObjectRef::new(&workload_name(&key.name)).within(&key.namespace))
    }
}

/// Creates `knative-serving` when it is missing (Knative's installation creates it upstream).
async fn ensure_namespace(client: &Client) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(SYSTEM_NAMESPACE.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => tracing::info!(namespace = SYSTEM_NAMESPACE, "namespace created"),
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => tracing::warn!(error = %crate::report(&e), "creating knative-serving failed"),
    }
}

/// Keeps this gateway's registration Lease renewed (never returns).
async fn register(client: Client, me: String, addr: Option<SocketAddr>) {
    let Some(addr) = addr else { return };
    let api: Api<Lease> = Api::namespaced(client, SYSTEM_NAMESPACE);
    let name = registration_name(&me);
    let secs = i32::try_from(REGISTRATION_RENEW.as_secs() * 3).unwrap_or(15);
    loop {
        let lease = serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {
                "name": name,
                "labels": {GATEWAY_LABEL: "true"},
                "annotations": {STATS_ADDRESS_ANNOTATION: addr.to_string()},
            },
            "spec": {
                "holderIdentity": me,
                "leaseDurationSeconds": secs,
                "renewTime": MicroTime(Timestamp::now()),
            },
        });
        let written = match serde_json::from_value::<Lease>(lease) {
            Ok(lease) => match api.create(&PostParams::default(), &lease).await {
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let patch = serde_json::json!({"metadata": lease.metadata, "spec": lease.spec});
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(|_| ())
                }
                r => r.map(|_| ()),
            },
            Err(e) => {
                tracing::error!(error = %e, "encoding the gateway registration");
                return;
            }
        };
        if let Err(e) = written {
            tracing::warn!(error = %crate::report(&e), "renewing the gateway registration failed");
        }
        tokio::time::sleep(REGISTRATION_RENEW).await;
    }
}

/// Takes part in the autoscaler's election until `stop` turns true, publishing whether this
/// process leads; a leader that is stopped releases the Lease.
async fn elect(
    client: Client,
    me: String,
    leading: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let cfg = crate::leader::LeaseConfig::new(SYSTEM_NAMESPACE, LEADER_LEASE, &me);
        let leadership = tokio::select! {
            l = crate::leader::acquire(client.clone(), cfg) => l,
            _ = stop.wait_for(|s| *s) => return,
        };
        let _ = leading.send(true);
        let stopped = tokio::select! {
            () = leadership.lost() => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        let _ = leading.send(false);
        if stopped {
            leadership.release().await;
            return;
        }
        tracing::warn!("lost the autoscaler's leadership");
    }
}

/// Aborts a task when dropped (the election, owned apart from the other tasks because a
/// shutdown awaits it instead).
fn abort_on_drop(handle: tokio::task::AbortHandle) -> impl Drop {
    struct Guard(tokio::task::AbortHandle);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    Guard(handle)
}

/// Whether a registration Lease was renewed within its duration.
fn live(lease: &Lease, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else { return false };
    let (Some(renew), Some(secs)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return false;
    };
    now.duration_since(renew.0).as_secs() < i64::from(secs)
}

/// The registered gateways other than `me`, as (identity, stats address), live ones only.
fn other_gateways(leases: &[Arc<Lease>], me: &str) -> Vec<(String, SocketAddr)> {
    let t = Timestamp::now();
    leases
        .iter()
        .filter(|l| l.labels().contains_key(GATEWAY_LABEL) && live(l, t))
        .filter_map(|l| {
            let id = l.spec.as_ref()?.holder_identity.clone()?;
            let addr = l.annotations().get(STATS_ADDRESS_ANNOTATION)?.parse().ok()?;
            (id != me).then_some((id, addr))
        })
        .collect()
}

/// The stats endpoint of the current leader, when another process leads.
fn leader_address(leases: &[Arc<Lease>], me: &str) -> Option<SocketAddr> {
    let holder = leases
        .iter()
        .find(|l| l.name_any() == LEADER_LEASE)?
        .spec
        .as_ref()?
        .holder_identity
        .clone()?;
    other_gateways(leases, me).into_iter().find(|(id, _)| *id == holder).map(|(_, a)| a)
}

/// This second's stats of every live gateway, summed per revision, and how many answered.
async fn gather(
    gateway: &Gateway,
    client: &StatsClient,
    leases: &[Arc<Lease>],
    me: &str,
) -> (BTreeMap<RevisionKey, Stat>, i32) {
    let mut sum: BTreeMap<RevisionKey, Stat> = BTreeMap::new();
    let mut add = |revisions: BTreeMap<RevisionKey, Stat>| {
        for (k, s) in revisions {
            let e = sum.entry(k).or_default();
            e.concurrency += s.concurrency;
            e.requests += s.requests;
        }
    };
    add(gateway.take_stats().revisions);
    let mut answered = 1;
    let others = other_gateways(leases, me);
    let scrapes = others.iter().map(|(id, addr)| async move {
        match tokio::time::timeout(SCRAPE_TIMEOUT, client.scrape(*addr)).await {
            Ok(Ok(r)) => Some(r.revisions),
            Ok(Err(e)) => {
                tracing::debug!(gateway = %id, error = %crate::report(&e), "scrape failed");
                None
            }
            Err(_) => {
                tracing::debug!(gateway = %id, "scrape timed out");
                None
            }
        }
    });
    for r in futures::future::join_all(scrapes).await.into_iter().flatten() {
        answered += 1;
        add(r);
    }
    (sum, answered)
}

pub use kinetic_gateway::{Load, RevisionKey as GatewayRevision};

/// The requests every live gateway holds or forwards right now, summed per revision, with the
/// number of gateways that answered and the number registered (for `kinetic serve status`).
///
/// # Errors
/// Listing the registrations failed.
pub async fn gateway_load(
    client: &Client,
) -> Result<(BTreeMap<RevisionKey, Load>, usize, usize), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let leases = api.list(&kube::api::ListParams::default().labels(GATEWAY_LABEL)).await?;
    let leases: Vec<Arc<Lease>> = leases.items.into_iter().map(Arc::new).collect();
    // Nobody is `me` here: every live gateway counts.
    let gateways = other_gateways(&leases, "");
    let stats = StatsClient::default();
    let loads = gateways.iter().map(|(_, addr)| stats.load(*addr));
    let mut sum: BTreeMap<RevisionKey, Load> = BTreeMap::new();
    let mut answered = 0;
    for r in futures::future::join_all(loads).await.into_iter().flatten() {
        answered += 1;
        for (k, l) in r {
            let e = sum.entry(k).or_default();
            e.requests += l.requests;
            e.held += l.held;
        }
    }
    Ok((sum, answered, gateways.len()))
}

/// Deletes gateway registrations that expired a minute ago (their process is gone).
async fn collect_registrations(client: &Client, leases: &[Arc<Lease>]) {
    let t = Timestamp::now();
    for l in leases.iter().filter(|l| l.labels().contains_key(GATEWAY_LABEL)) {
        let expired_long = l.spec.as_ref().and_then(|s| s.renew_time.as_ref()).is_none_or(|r| {
            t.duration_since(r.0).as_secs() > 60 + REGISTRATION_RENEW.as_secs() as i64 * 3
        });
        if expired_long {
            let api: Api<Lease> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
            let _ = api.delete(&l.name_any(), &DeleteParams::default()).await;
        }
    }
}

/// A request waits for a revision without endpoints: a CloneSet at zero goes to
/// `max(1, activation-scale)` now.
async fn activate(client: &Client, caches: &Caches, key: &RevisionKey) {
    let Some(rev) = caches.revisions.get(&ObjectRef::new(&key.name).within(&key.namespace)) else {
        return;
    };
    let Some(spec) = spec_of(&rev, &caches.config()).ok().filter(RevisionSpec::is_kpa) else {
        return;
    };
    let activation = spec.activation_scale.max(1);
    if let Some(cs) = caches.cloneset(key)
        && cs.spec.replicas.unwrap_or(1) == 0
        && !crate::serving::handoff::in_handoff(&cs)
    {
        tracing::info!(revision = %key, replicas = activation, "activating from zero");
        scale_to(client, key, activation).await;
    }
}

/// One tick of the leader: records the stats, decides every revision, scales and reports.
async fn decide(
    client: &Client,
    caches: &Caches,
    states: &mut HashMap<RevisionKey, State>,
    report: &BTreeMap<RevisionKey, Stat>,
    gateways: i32,
) {
    let t = now();
    let config = caches.config();
    // Until both caches have listed, every revision counts as reachable (the safe side:
    // min-scale holds).
    let known = crate::cache_ready(&caches.routes) && crate::cache_ready(&caches.configurations);
    let (routes, configurations) = (caches.routes.state(), caches.configurations.state());
    let mut seen = Vec::new();
    for rev in caches.revisions.state() {
        let key = RevisionKey::new(rev.namespace().unwrap_or_default(), rev.name_any());
        // Another class (`hpa.autoscaling.knative.dev`) is another autoscaler's, as upstream's
        // KPA reconciler filters PodAutoscalers by class.
        let Some(spec) = spec_of(&rev, &config).ok().filter(RevisionSpec::is_kpa) else {
            continue;
        };
        let Some(cs) = caches.cloneset(&key) else { continue };
        // Pods moving between two revisions in place (`serving::handoff`): their counts are
        // the handoff's until it ends.
        if crate::serving::handoff::in_handoff(&cs) {
            continue;
        }
        let ready = cs.status.as_ref().map_or(0, |s| s.ready_replicas);
        let reachable = !known || reachable(&rev, &routes, &configurations);
        let decider = DeciderSpec::new(&config, &spec, reachable);
        let state = states.entry(key.clone()).or_insert_with(|| State {
            metrics: decider.metrics(),
            scaler: Autoscaler::new(decider.clone(), t, ready),
            initialized: false,
            decided: false,
            written: None,
        });
        if state.scaler.spec() != &decider {
            state.metrics.resize(decider.stable_window, decider.panic_window, t);
            state.scaler.update(decider);
        }
        state.metrics.record(t, report.get(&key).copied().unwrap_or_default());
        let result = state.scaler.scale(t, &state.metrics, ready);
        let current = cs.spec.replicas.unwrap_or(1);
        if result.scale_valid && result.desired != current {
            tracing::info!(revision = %key, from = current, to = result.desired,
                stable = result.observed_stable, panic = result.panic, "scaling");
            scale_to(client, &key, result.desired).await;
        }
        let min_ready = state.scaler.spec().initial_scale.max(1);
        state.initialized |= ready >= min_ready;
        let pa = caches.pas.get(&ObjectRef::new(&key.name).within(&key.namespace));
        if let Some(pa) = pa {
            report_status(client, &pa, state, &result, ready, gateways, known.then_some(reachable))
                .await;
        }
        seen.push(key);
    }
    states.retain(|k, _| seen.contains(k));
}

/// Two decimals: the observed values as the status shows them.
fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The PodAutoscaler's status for a decision (`computeStatus`, `computeActiveCondition`).
fn pa_status(
    old: &PodAutoscalerStatus,
    state: &State,
    result: &ScaleResult,
    ready: i32,
    gateways: i32,
) -> PodAutoscalerStatus {
    let spec = state.scaler.spec();
    let old_conds = old.status.conditions.clone().unwrap_or_default();
    let mut conds = Vec::new();
    let active = result.active;
    set_condition(
        &mut conds,
        &old_conds,
        pa::condition::ACTIVE,
        active.status(),
        active.reason,
        active.message(),
    );
    let (init, init_reason) =
        if state.initialized { ("True", "") } else { ("Unknown", "Initializing") };
    set_condition(
        &mut conds,
        &old_conds,
        pa::condition::SCALE_TARGET_INITIALIZED,
        init,
        init_reason,
        "",
    );
    // Kinetic's gateway is the ServerlessService: it is always in the path, so always ready.
    set_condition(&mut conds, &old_conds, pa::condition::SKS_READY, "True", "", "");
    let deps = [(active.status(), active.reason, active.message()), (init, init_reason, "")];
    let ready_cond = deps
        .iter()
        .find(|c| c.0 == "False")
        .or_else(|| deps.iter().find(|c| c.0 == "Unknown"))
        .copied()
        .unwrap_or(("True", "", ""));
    set_condition(
        &mut conds,
        &old_conds,
        pa::condition::READY,
        ready_cond.0,
        ready_cond.1,
        ready_cond.2,
    );
    let mut st = PodAutoscalerStatus {
        desired_scale: Some(result.desired),
        actual_scale: Some(ready),
        decider: Some(DeciderStatus {
            mode: if result.panic { pa::mode::PANIC } else { pa::mode::STABLE }.to_owned(),
            reason: reason(spec, result, ready),
            metric: match spec.metric {
                Metric::Concurrency => "concurrency",
                Metric::Rps => "rps",
            }
            .to_owned(),
            target: round2(spec.target_value),
            observed_stable_value: round2(result.observed_stable),
            observed_panic_value: round2(result.observed_panic),
            excess_burst_capacity: result.excess_burst_capacity,
            gateways,
        }),
        ..PodAutoscalerStatus::default()
    };
    st.status.conditions = Some(conds);
    st.status.observed_generation = old.status.observed_generation;
    st
}

/// Why the decider wants what it wants, in a sentence (`kinetic serve status` prints it).
fn reason(spec: &DeciderSpec, r: &ScaleResult, ready: i32) -> String {
    let unit = match spec.metric {
        Metric::Concurrency => "concurrent requests",
        Metric::Rps => "requests/s",
    };
    let t = spec.target_value;
    if r.active.activity == Activity::Inactive {
        return format!(
            "no traffic for a stable window ({}s): scaled to zero",
            spec.stable_window.as_secs()
        );
    }
    if r.desired < 0 {
        return if r.active.activity == Activity::Activating {
            "activating: waiting for the first ready pods".to_owned()
        } else {
            "no metrics yet".to_owned()
        };
    }
    if r.panic {
        let want = (r.observed_panic / t).ceil();
        let ratio = want / f64::from(ready.max(1));
        return if ratio >= spec.panic_threshold {
            format!(
                "panic: {:.1} {unit} over the last {}s need {want} pods, at least {:.0}% of the {ready} ready",
                r.observed_panic,
                spec.panic_window.as_secs(),
                spec.panic_threshold * 100.0,
            )
        } else {
            format!(
                "panic: holding {} pods until a stable window ({}s) passes below {:.0}%",
                r.desired,
                spec.stable_window.as_secs(),
                spec.panic_threshold * 100.0,
            )
        };
    }
    // What the stable average alone asks for, then why the decision differs, if it does.
    let raw = (r.observed_stable / t).ceil().max(0.0);
    let mut out = format!(
        "stable: {:.1} {unit} over the last {}s at {:.1} per pod: {raw} pods",
        r.observed_stable,
        spec.stable_window.as_secs(),
        t,
    );
    if f64::from(r.desired) != raw {
        let why = if spec.min_scale > 0 && r.desired == spec.min_scale {
            format!("min-scale {}", spec.min_scale)
        } else if spec.max_scale > 0 && r.desired == spec.max_scale {
            format!("max-scale {}", spec.max_scale)
        } else if raw == 0.0 && r.desired >= 1 {
            format!(
                "the last pod stays until {}s without traffic, then {}s of grace",
                spec.stable_window.as_secs(),
                spec.scale_to_zero_grace_period.as_secs()
            )
        } else {
            "rate limits or scale-down delay".to_owned()
        };
        out.push_str(&format!(", keeping {} ({why})", r.desired));
    }
    out
}

/// What decides whether a status is worth a write: everything but the observed values and
/// the reason sentence (which follow them).
fn decision_key(st: &PodAutoscalerStatus) -> impl PartialEq + use<> {
    let conds: Vec<(String, String, Option<String>)> = st
        .status
        .conditions
        .iter()
        .flatten()
        .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
        .collect();
    let d = st.decider.as_ref().map(|d| (d.mode.clone(), d.metric.clone(), d.gateways));
    (st.desired_scale, st.actual_scale, conds, d)
}

/// Writes the PodAutoscaler's status when the decision changed, or its observed values when
/// they changed and the last write is [`OBSERVED_REFRESH`] old; and `spec.reachability` when
/// it changed.
async fn report_status(
    client: &Client,
    pa: &PodAutoscaler,
    state: &mut State,
    result: &ScaleResult,
    ready: i32,
    gateways: i32,
    reachable: Option<bool>,
) {
    let ns = pa.namespace().unwrap_or_default();
    let api: Api<PodAutoscaler> = Api::namespaced(client.clone(), &ns);
    if let Some(r) = reachable {
        let want = if r { pa::reachability::REACHABLE } else { pa::reachability::UNREACHABLE };
        if pa.spec.reachability.as_deref() != Some(want) {
            let patch = serde_json::json!({"spec": {"reachability": want}});
            if let Err(e) =
                api.patch(&pa.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await
            {
                tracing::warn!(pa = %pa.name_any(), error = %crate::report(&e), "writing reachability failed");
            }
        }
    }
    let cached = pa.status.clone().unwrap_or_default();
    // A new leader knows nothing for its first tick (desired -1, activating): it does not
    // overwrite its predecessor's decision with that, which would flap the Revision's Active.
    state.decided |= result.desired >= 0;
    if !state.decided && cached.desired_scale.is_some_and(|d| d >= 0) {
        return;
    }
    let (base, at) = match &state.written {
        Some((s, at)) => (s.clone(), Some(*at)),
        None => (cached.clone(), None),
    };
    let st = pa_status(&base, state, result, ready, gateways);
    let same_decision = decision_key(&st) == decision_key(&base);
    let fresh = at.is_some_and(|at| at.elapsed() < OBSERVED_REFRESH);
    if same_decision && (st.decider == base.decider || fresh) {
        return;
    }
    let patch = serde_json::json!({"status": st});
    match api.patch_status(&pa.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => state.written = Some((st, Instant::now())),
        Err(e) => {
            tracing::warn!(pa = %pa.name_any(), error = %crate::report(&e), "writing the PodAutoscaler status failed");
        }
    }
}

/// Whether a Route may send the revision traffic (upstream's `routingState`: `active` when a
/// Route's traffic names it, `pending` for its Configuration's newest revision, which a Route
/// will name once it is ready; both are reachable, so `min-scale` holds). Anything else is
/// `reserve`: unreachable, scaled to zero whatever its `min-scale`.
pub fn reachable(
    rev: &Revision,
    routes: &[Arc<Route>],
    configurations: &[Arc<Configuration>],
) -> bool {
    let (ns, name) = (rev.namespace(), rev.name_any());
    let routed = routes.iter().filter(|r| r.namespace() == ns).any(|r| {
        r.status
            .as_ref()
            .and_then(|s| s.fields.traffic.as_deref())
            .is_some_and(|t| t.iter().any(|t| t.revision_name.as_deref() == Some(name.as_str())))
    });
    let pending = configurations.iter().filter(|c| c.namespace() == ns).any(|c| {
        c.status.as_ref().and_then(|s| s.fields.latest_created_revision_name.as_deref())
            == Some(name.as_str())
    });
    routed || pending
}

/// The revision's autoscaling settings from its annotations.
fn spec_of(rev: &Revision, config: &Config) -> Result<RevisionSpec, ()> {
    let cc = rev.spec.container_concurrency.unwrap_or(0);
    RevisionSpec::from_annotations(rev.annotations(), cc, config).map_err(|errs| {
        tracing::debug!(revision = %rev.name_any(), ?errs, "invalid autoscaling annotations");
    })
}

/// Merge-patches the revision's CloneSet to `replicas`; failures are logged and retried by
/// the next tick.
async fn scale_to(client: &Client, key: &RevisionKey, replicas: i32) {
    let api: Api<CloneSet> = Api::namespaced(client.clone(), &key.namespace);
    let patch = serde_json::json!({"spec": {"replicas": replicas}});
    if let Err(e) =
        api.patch(&workload_name(&key.name), &PatchParams::default(), &Patch::Merge(&patch)).await
    {
        tracing::warn!(revision = %key, error = %crate::report(&e), "scaling the CloneSet failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj<K: serde::de::DeserializeOwned>(v: serde_json::Value) -> Arc<K> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn a_revision_is_reachable_when_routed_or_newest_and_unreachable_otherwise() {
        let rev = |name: &str| -> Arc<Revision> {
            obj(serde_json::json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"containers": [{"image": "a"}]},
            }))
        };
        let routes: Vec<Arc<Route>> = vec![obj(serde_json::json!({
            "metadata": {"name": "hello", "namespace": "default"},
            "spec": {},
            "status": {"traffic": [{"revisionName": "hello-00001", "percent": 100}]},
        }))];
        let configs: Vec<Arc<Configuration>> = vec![obj(serde_json::json!({
            "metadata": {"name": "hello", "namespace": "default"},
            "spec": {"template": {"spec": {"containers": [{"image": "a"}]}}},
            "status": {"latestCreatedRevisionName": "hello-00003"},
        }))];
        assert!(reachable(&rev("hello-00001"), &routes, &configs), "routed");
        assert!(reachable(&rev("hello-00003"), &routes, &configs), "newest, not routed yet");
        assert!(!reachable(&rev("hello-00002"), &routes, &configs), "neither");
    }

    #[test]
    fn the_reason_says_what_the_decider_does_and_why() {
        use kinetic_autoscale::ActiveCondition;
        let config = Config::default();
        let rev = RevisionSpec::from_annotations(&BTreeMap::new(), 0, &config).unwrap();
        let spec = DeciderSpec::new(&config, &rev, true);
        let active =
            ActiveCondition { activity: Activity::Active, reason: "", since: Time::default() };
        let result = |desired, panic, stable, panic_value| ScaleResult {
            desired,
            excess_burst_capacity: 0,
            panic,
            observed_stable: stable,
            observed_panic: panic_value,
            scale_valid: true,
            active,
        };
        let activating = ScaleResult {
            active: ActiveCondition { activity: Activity::Activating, ..active },
            ..result(-1, false, 0.0, 0.0)
        };
        let inactive = ScaleResult {
            active: ActiveCondition { activity: Activity::Inactive, ..active },
            ..result(0, false, 0.0, 0.0)
        };
        let out = [
            reason(&spec, &result(1, false, 0.0, 0.0), 1),
            reason(&spec, &result(3, false, 150.0, 140.0), 2),
            reason(&spec, &result(5, true, 80.0, 300.0), 1),
            reason(&spec, &result(5, true, 80.0, 100.0), 5),
            reason(&spec, &activating, 0),
            reason(&spec, &inactive, 0),
        ]
        .join("\n");
        expect_test::expect![[r#"
            stable: 0.0 concurrent requests over the last 60s at 70.0 per pod: 0 pods, keeping 1 (the last pod stays until 60s without traffic, then 30s of grace)
            stable: 150.0 concurrent requests over the last 60s at 70.0 per pod: 3 pods
            panic: 300.0 concurrent requests over the last 6s need 5 pods, at least 200% of the 1 ready
            panic: holding 5 pods until a stable window (60s) passes below 200%
            activating: waiting for the first ready pods
            no traffic for a stable window (60s): scaled to zero"#]].assert_eq(&out);
    }

    #[test]
    fn live_gateways_and_the_leader_come_from_the_leases() {
        let now = Timestamp::now();
        let reg = |id: &str, addr: &str, age: i64| -> Arc<Lease> {
            let renew = now - jiff::SignedDuration::from_secs(age);
            obj(serde_json::json!({
                "metadata": {"name": registration_name(id), "namespace": SYSTEM_NAMESPACE,
                    "labels": {GATEWAY_LABEL: "true"},
                    "annotations": {STATS_ADDRESS_ANNOTATION: addr}},
                "spec": {"holderIdentity": id, "leaseDurationSeconds": 15,
                    "renewTime": MicroTime(renew)},
            }))
        };
        let leader: Arc<Lease> = obj(serde_json::json!({
            "metadata": {"name": LEADER_LEASE, "namespace": SYSTEM_NAMESPACE},
            "spec": {"holderIdentity": "b"},
        }));
        let leases = vec![
            reg("a", "127.0.0.1:1", 1),
            reg("b", "127.0.0.1:2", 2),
            reg("c", "127.0.0.1:3", 40),
            leader,
        ];
        let others = other_gateways(&leases, "a");
        assert_eq!(others, vec![("b".to_owned(), "127.0.0.1:2".parse().unwrap())]);
        assert_eq!(leader_address(&leases, "a"), Some("127.0.0.1:2".parse().unwrap()));
        assert_eq!(leader_address(&leases, "b"), None, "the leader does not poke itself");
        assert!(identity() != identity(), "two gateways in one process differ");
    }
}
