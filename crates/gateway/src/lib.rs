//! Kinetic's serving data plane (issue 11, parts 3 and 4): the gateway that is both Knative's
//! ingress and its activator. It speaks HTTP/1.1 and h2c on one listener, routes by Host,
//! splits traffic across revisions, balances over a revision's ready endpoints without ever
//! exceeding `containerConcurrency`, holds requests for a revision at zero until it has an
//! endpoint, and measures per-revision concurrency for the autoscaler.
//!
//! # How data flows
//!
//! ```text
//! caller (serving controller) ── Gateway::set_routes(RoutingTable) ──▶ atomic table swap
//!                                                                        │
//! client ──HTTP/1.1 or h2c──▶ Host (port stripped) ─▶ Route ─▶ weighted pick of a revision
//!     ─▶ Throttler (per revision): admit (counts concurrency from here on)
//!          ─▶ a slot on the least-loaded endpoint with room under containerConcurrency,
//!             or wait in FIFO order (at most `queue_depth`, until `timeoutSeconds`);
//!             the first request held at zero calls Options::on_demand at once
//!     ─▶ the container (Forwarded, X-Forwarded-For/-Proto added, hop-by-hop removed)
//!     ─▶ the response; slot and admission are released when its body ends
//!
//! caller ── every second: Gateway::take_stats() ──▶ StatsReport { revision → Stat } ──▶
//!     kinetic_autoscale::Metrics::record (zeros included for idle revisions)
//! ```
//!
//! - [`RoutingTable`] ([`table`]) is plain data the caller computes from Routes, Revisions and
//!   Endpoints: host names (`{route}.{namespace}.{domain}`, `{tag}-{route}.…`) to weighted
//!   [`Target`]s, and per [`Revision`] its ready endpoints and limits.
//! - A swap replaces the table in one step; each revision's runtime state (in-flight counts,
//!   held requests, metrics) lives in a throttler kept across swaps, so requests in flight
//!   finish on their endpoint and held requests are forwarded as soon as a table brings
//!   endpoints.
//! - The gateway answers itself, always with a plain-text body that says why: 404 for an
//!   unknown host, 503 when a revision's queue is full or a route has no target, 504 when
//!   a request waited past its revision's timeout or the container did not start its response
//!   in time, 502 when the container could not be reached. It never resets a connection for
//!   these. A response still streaming at the revision's `timeoutSeconds` is cut off (the client
//!   sees the body end in error), as Knative's queue-proxy aborts it.
//!
//! A revision's `idleTimeoutSeconds` bounds the time without a byte from the container: 504
//! before its response starts, a cut-off body after.
//!
//! A bodiless request whose endpoint refused the connection (or, with an idempotent method,
//! closed it before answering) is sent again, up to 3 times, and that endpoint gets no new
//! requests for a second: a pod on its way out, not yet out of the table, loses nothing.
//!
//! What it does not do: watch Kubernetes (the caller pushes tables), probe endpoints (the
//! caller lists ready ones), retry a request with a body, proxy protocol upgrades
//! (WebSockets), or serve TLS.

mod proxy;
pub mod stats;
pub mod table;
mod throttler;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kinetic_autoscale::Stat;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use table::{Protocol, Revision, RevisionKey, Route, RoutingTable, Target};
use throttler::Throttler;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding the gateway listener on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("host {host:?} targets revision {revision}, which the routing table does not list")]
    UnknownRevision { host: String, revision: RevisionKey },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Called with a revision when a request is held for it while it has no endpoint (once per
/// burst: again only after every held request has left), and when a table takes a revision's
/// last endpoint away while requests are held for it. It runs on the request's task or in
/// `set_routes` and must not block: send to a channel.
pub type OnDemand = Arc<dyn Fn(&RevisionKey) + Send + Sync>;

/// How the gateway behaves.
#[derive(Clone)]
pub struct Options {
    /// The most requests held per revision while they wait for a slot; one more gets 503.
    /// Knative's activator has a per-revision breaker queue of 10,000; we default to 1,000.
    pub queue_depth: usize,
    pub on_demand: Option<OnDemand>,
}

impl Default for Options {
    fn default() -> Self {
        Self { queue_depth: 1000, on_demand: None }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("queue_depth", &self.queue_depth)
            .field("on_demand", &self.on_demand.is_some())
            .finish()
    }
}

/// What the gateway saw per revision since the previous report.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsReport {
    /// The time the report covers (about a second when called every second).
    pub window: Duration,
    /// Every routed revision (zeros when idle), and unrouted ones that still had requests.
    /// `concurrency` is time-weighted over the window and counts held requests too;
    /// `requests` is the number of arrivals in the window.
    pub revisions: BTreeMap<RevisionKey, Stat>,
}

/// The running gateway; dropping it stops accepting and closes its connections.
pub struct Gateway {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

/// The routed form of a table: hosts to throttlers.
#[derive(Default)]
struct Active {
    hosts: HashMap<String, ActiveRoute>,
    /// Every revision of the table, routed or not.
    revisions: HashSet<RevisionKey>,
}

struct ActiveRoute {
    /// Targets with a nonzero share and their cumulative upper bounds.
    targets: Vec<(u32, Arc<Throttler>)>,
    total: u32,
}

impl ActiveRoute {
    /// The target whose cumulative range contains `n` (`0 <= n < total`).
    fn pick(&self, n: u32) -> Option<&Arc<Throttler>> {
        self.targets.iter().find(|(upper, _)| n < *upper).map(|(_, t)| t)
    }
}

pub(crate) struct Shared {
    table: RwLock<Arc<Active>>,
    throttlers: Mutex<HashMap<RevisionKey, Arc<Throttler>>>,
    last_report: Mutex<Instant>,
    queue_depth: usize,
    on_demand: Option<OnDemand>,
    http1: Client<HttpConnector, proxy::UpBody>,
    h2c: Client<HttpConnector, proxy::UpBody>,
}

impl Shared {
    fn table(&self) -> Arc<Active> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether `t` is still the gateway's throttler of its revision. A request picks its
    /// throttler from the table, then counts itself on it ([`Throttler::admit`]); a table swap
    /// in between may have dropped that throttler as idle (its revision out of the table for a
    /// moment) and a later one made a new throttler for the same revision, which the tables
    /// update from then on. Asked after `admit`, the answer cannot go stale: an admitted
    /// request makes the throttler non-idle, so it is kept.
    fn is_current(&self, t: &Arc<Throttler>) -> bool {
        let throttlers = self.throttlers.lock().unwrap_or_else(|e| e.into_inner());
        throttlers.get(&t.key).is_some_and(|c| Arc::ptr_eq(c, t))
    }
}

impl Gateway {
    /// Listens on `listen` (port 0 for an ephemeral one) with an empty routing table.
    ///
    /// # Errors
    /// [`Error::Bind`] when the address cannot be bound.
    pub async fn start(listen: SocketAddr, options: Options) -> Result<Gateway> {
        let bind = |source| Error::Bind { addr: listen, source };
        let listener = TcpListener::bind(listen).await.map_err(bind)?;
        let local_addr = listener.local_addr().map_err(bind)?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let shared = Arc::new(Shared {
            table: RwLock::default(),
            throttlers: Mutex::default(),
            last_report: Mutex::new(Instant::now()),
            queue_depth: options.queue_depth,
            on_demand: options.on_demand,
            http1: Client::builder(TokioExecutor::new()).build(connector.clone()),
            h2c: Client::builder(TokioExecutor::new()).http2_only(true).build(connector),
        });
        let accept = tokio::spawn(serve(listener, shared.clone()));
        Ok(Gateway { shared, local_addr, accept })
    }

    /// The address the gateway listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Replaces the routing table. Requests already routed keep their revision; held ones
    /// are forwarded at once if the table brings their revision endpoints (and keep waiting,
    /// up to their timeout, if it drops their revision). When a revision loses its last
    /// endpoint while requests are held for it, the on-demand hook is called from here.
    ///
    /// # Errors
    /// [`Error::UnknownRevision`] when a route targets a revision the table does not list;
    /// the previous table then stays.
    pub fn set_routes(&self, table: RoutingTable) -> Result<()> {
        for (host, route) in &table.hosts {
            if let Some(t) =
                route.targets.iter().find(|t| !table.revisions.contains_key(&t.revision))
            {
                return Err(Error::UnknownRevision {
                    host: host.clone(),
                    revision: t.revision.clone(),
                });
            }
        }
        let mut throttlers = self.shared.throttlers.lock().unwrap_or_else(|e| e.into_inner());
        let mut demand = Vec::new();
        for (key, rev) in &table.revisions {
            match throttlers.get(key) {
                Some(t) => {
                    if t.update(rev) {
                        demand.push(key.clone());
                    }
                }
                None => {
                    throttlers.insert(key.clone(), Throttler::new(key.clone(), rev));
                }
            }
        }
        throttlers.retain(|key, t| table.revisions.contains_key(key) || !t.is_idle());
        let mut active =
            Active { hosts: HashMap::new(), revisions: table.revisions.keys().cloned().collect() };
        for (host, route) in &table.hosts {
            let mut total = 0;
            let mut targets = Vec::new();
            for target in route.targets.iter().filter(|t| t.percent > 0) {
                if let Some(t) = throttlers.get(&target.revision) {
                    total += target.percent;
                    targets.push((total, t.clone()));
                }
            }
            active.hosts.insert(host.to_ascii_lowercase(), ActiveRoute { targets, total });
        }
        *self.shared.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(active);
        drop(throttlers);
        if let Some(hook) = &self.shared.on_demand {
            demand.iter().for_each(|key| hook(key));
        }
        Ok(())
    }

    /// Per-revision concurrency and arrivals since the previous call (or the start); call it
    /// once a second and feed each [`Stat`] to the revision's `kinetic_autoscale::Metrics`.
    pub fn take_stats(&self) -> StatsReport {
        let now = Instant::now();
        let window = {
            let mut last = self.shared.last_report.lock().unwrap_or_else(|e| e.into_inner());
            let w = now.saturating_duration_since(*last);
            *last = now;
            w
        };
        let table = self.shared.table();
        let mut throttlers = self.shared.throttlers.lock().unwrap_or_else(|e| e.into_inner());
        let revisions = throttlers.iter().map(|(k, t)| (k.clone(), t.take_stat(now))).collect();
        // A revision dropped from the table is reported until its last request is done.
        throttlers.retain(|key, t| table.revisions.contains(key) || !t.is_idle());
        StatsReport { window, revisions }
    }

    /// Each known revision's requests right now (for status displays and tests).
    pub fn load(&self) -> BTreeMap<RevisionKey, Load> {
        let throttlers = self.shared.throttlers.lock().unwrap_or_else(|e| e.into_inner());
        throttlers
            .iter()
            .map(|(k, t)| {
                let (requests, held) = t.load();
                (k.clone(), Load { requests, held })
            })
            .collect()
    }
}

/// A revision's requests at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Requests admitted and not yet answered: held ones included.
    pub requests: usize,
    /// Requests waiting for a slot (for an endpoint to appear or to have room).
    pub held: usize,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Accepts connections until aborted; aborting drops the set, which aborts every connection.
async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "gateway accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        conns.spawn(async move {
            let svc =
                hyper::service::service_fn(move |req| proxy::handle(shared.clone(), peer, req));
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http2().max_concurrent_streams(1000);
            if let Err(e) = builder.serve_connection(TokioIo::new(tcp), svc).await {
                tracing::debug!(%peer, error = %e, "gateway connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The race the load test `swapping_tables_under_load_loses_no_request` once lost: a
    /// request picked a revision's throttler, a swap dropped the revision (its throttler idle,
    /// so retired) and the next swap made a new throttler for it; the request, held on the
    /// retired one, never saw the revision's endpoints again and got 504 after its timeout.
    #[tokio::test]
    async fn a_throttler_retired_by_a_swap_is_not_current_and_an_admitted_one_is_kept() {
        let gw = Gateway::start("127.0.0.1:0".parse().unwrap(), Options::default()).await.unwrap();
        let key = RevisionKey::new("default", "swap-00002");
        let with = |endpoints: Vec<SocketAddr>| RoutingTable {
            hosts: [(
                "swap.default.example.com".to_owned(),
                Route { targets: vec![Target { revision: key.clone(), percent: 100 }] },
            )]
            .into(),
            revisions: [(key.clone(), Revision { endpoints, ..Revision::default() })].into(),
        };
        let without = RoutingTable::default();
        let picked =
            |gw: &Gateway| gw.shared.table().hosts["swap.default.example.com"].targets[0].1.clone();

        gw.set_routes(with(vec![])).unwrap();
        let old = picked(&gw);
        assert!(gw.shared.is_current(&old));
        gw.set_routes(without.clone()).unwrap();
        gw.set_routes(with(vec!["127.0.0.1:9".parse().unwrap()])).unwrap();
        let new = picked(&gw);
        assert!(!gw.shared.is_current(&old), "the idle throttler was retired by the swap");
        assert!(gw.shared.is_current(&new));

        // Counted on its throttler first, a request keeps it through a swap that drops its
        // revision, and the next table with the revision updates that same throttler.
        let admitted = new.admit();
        gw.set_routes(without).unwrap();
        gw.set_routes(with(vec![])).unwrap();
        assert!(gw.shared.is_current(&new));
        assert!(Arc::ptr_eq(&picked(&gw), &new));
        drop(admitted);
    }
}
