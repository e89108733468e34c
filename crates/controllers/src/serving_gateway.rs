//! The serving data plane's wiring (issue 11, parts 3–5): watches Routes, Revisions and the
//! revisions' Pods and pushes a [`RoutingTable`] into an in-process [`Gateway`] whenever they
//! change, and runs the KPA loop ([`crate::serving_autoscaler`]) beside it.
//!
//! The table is computed from scratch from the three caches on every change (level-triggered,
//! like Knative's ingress reconciler that rebuilds the whole `Ingress` from the Route):
//! - every Route's `status.url` host, and its cluster-local names (`status.address`,
//!   `{route}.{namespace}`, `{route}.{namespace}.svc`), get its `status.traffic` targets with a
//!   nonzero `percent`; each tagged target's `url` host gets that revision alone (Knative's tag
//!   routes);
//! - every Revision gets its `containerConcurrency`, `timeoutSeconds`,
//!   `responseStartTimeoutSeconds`, `idleTimeoutSeconds`, its protocol from the serving container's port name (`h2c`)
//!   and, as endpoints, the IPs of its ready, not terminating pods (label
//!   `serving.knative.dev/revision`) on the serving container's port (default 8080).
//!
//! A target whose Revision is not in the cache yet gets a placeholder without endpoints, so its
//! requests are held rather than refused while the cache catches up. After each table swap the
//! sync stamps every Route whose routing changed as routed ([`ROUTED_ANNOTATION`] on its core
//! Service, a digest of its hosts and targets); the Route controller turns that into the
//! Route's `IngressReady`, so a Route is Ready only once the gateway routes it. What it does
//! not do: probe endpoints (the node agent's readiness probe decides "ready"), or tell several
//! gateway replicas apart (the last one to stamp speaks for all; upstream probes each).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Pod, Service as CoreService};
use kinetic_api::knative::REVISION_LABEL;
use kinetic_api::knative::revision::Revision;
use kinetic_api::knative::route::{Route, RouteStatusFields};
use kinetic_api::knative::webhook;
use kinetic_gateway::{Gateway, Options, Protocol, RevisionKey, RoutingTable, Target};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, ResourceExt as _};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

/// Errors of starting the data plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("starting the serving gateway")]
    Gateway(#[from] kinetic_gateway::Error),
}

/// The running gateway and its two loops.
#[derive(Debug)]
pub struct DataPlane {
    /// The address the gateway listens on.
    pub addr: SocketAddr,
    /// Ends once the shutdown future given to [`start`] resolved and both loops stopped.
    pub task: JoinHandle<()>,
}

/// Starts the gateway on `listen`, the routing-table sync and the autoscaler, until
/// `shutdown` resolves (the gateway then closes with them).
///
/// # Errors
/// [`Error::Gateway`] when the listener cannot be bound.
pub async fn start(
    client: Client,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<DataPlane, Error> {
    let (demand_tx, demand_rx) = mpsc::unbounded_channel();
    let on_demand: kinetic_gateway::OnDemand = Arc::new(move |key: &RevisionKey| {
        let _ = demand_tx.send(key.clone());
    });
    let gateway = Arc::new(
        Gateway::start(listen, Options { on_demand: Some(on_demand), ..Options::default() })
            .await?,
    );
    let addr = gateway.local_addr();
    let task = tokio::spawn(async move {
        // The autoscaler sees the shutdown itself, to hand its Lease over before it ends.
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let sync = sync_routes(client.clone(), gateway.clone());
        let scale = crate::serving_autoscaler::run_until(client, gateway, demand_rx, async {
            let _ = stop_rx.await;
        });
        tokio::pin!(scale);
        tokio::select! {
            () = shutdown => {
                let _ = stop_tx.send(());
                (&mut scale).await;
            }
            () = sync => {}
            () = &mut scale => {}
        }
    });
    Ok(DataPlane { addr, task })
}

/// The gateway and its routing-table sync alone, without the autoscaler (requests to a
/// revision at zero are held, nobody scales it): what a test of the Route controller runs so
/// that Routes get `IngressReady`, as upstream's tests run an ingress.
///
/// # Errors
/// [`Error::Gateway`] when the listener cannot be bound.
pub async fn start_routing(
    client: Client,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<DataPlane, Error> {
    let gateway = Arc::new(Gateway::start(listen, Options::default()).await?);
    let addr = gateway.local_addr();
    let task = tokio::spawn(async move {
        tokio::select! {
            () = shutdown => {}
            () = sync_routes(client, gateway) => {}
        }
    });
    Ok(DataPlane { addr, task })
}

/// Keeps `store` fed from a watch of `api`, poking `changed` on every event.
pub(crate) fn reflect<K>(
    api: Api<K>,
    cfg: watcher::Config,
    changed: Arc<Notify>,
) -> (Store<K>, JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, cfg).default_backoff().reflect(writer);
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            if let Err(e) = ev {
                tracing::debug!(error = %crate::report(&e), "serving gateway watch error");
            }
            changed.notify_one();
        }
    });
    (reader, task)
}

/// Watches Routes, Revisions and Pods and pushes a new table after every change (changes
/// within 20 ms are pushed together), then stamps each Route whose routing changed as routed
/// ([`ROUTED_ANNOTATION`]). Never returns on its own.
async fn sync_routes(client: Client, gateway: Arc<Gateway>) {
    let changed = Arc::new(Notify::new());
    let (routes, t1) =
        reflect(Api::<Route>::all(client.clone()), watcher::Config::default(), changed.clone());
    let (revisions, t2) =
        reflect(Api::<Revision>::all(client.clone()), watcher::Config::default(), changed.clone());
    let (pods, t3) = reflect(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default().labels(REVISION_LABEL),
        changed.clone(),
    );
    let _abort = AbortOnDrop(vec![t1, t2, t3]);
    let mut last = None;
    let mut stamped = HashMap::new();
    let mut retry = false;
    loop {
        if retry {
            // A stamp failed (its Service may not exist yet): try again in a second.
            let _ = tokio::time::timeout(Duration::from_secs(1), changed.notified()).await;
        } else {
            changed.notified().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let routes = routes.state();
        let table = routing_table(&routes, &revisions.state(), &pods.state());
        if last.as_ref() != Some(&table) {
            match gateway.set_routes(table.clone()) {
                Ok(()) => last = Some(table),
                Err(e) => {
                    tracing::warn!(error = %crate::report(&e), "routing table refused");
                    retry = true;
                    continue;
                }
            }
        }
        // Only now, with the table swapped, may a Route be told it is routed.
        retry = !stamp_routed(&client, &routes, &mut stamped).await;
    }
}

/// Annotation on a Route's core Service (the Service named after it, which the Route
/// controller creates and owns) that the gateway sets, once its routing table holds the
/// Route's current status, to [`routed_digest`] of what it routes. The Route controller
/// copies "the annotation matches the status I write" into the Route's `IngressReady`
/// condition, so a Route is Ready only once the gateway routes it and the first request
/// after Ready is answered (issue 11). Upstream does the same with a
/// `networking.internal.knative.dev` Ingress whose status the ingress implementation marks
/// Ready after programming its data plane.
pub const ROUTED_ANNOTATION: &str = "kinetic.dev/gateway-routed";

/// Sets [`ROUTED_ANNOTATION`] on the core Service of every Route whose digest is not the one
/// this gateway last set; `stamped` remembers those (by Route uid). Returns false when a
/// patch failed (to be retried).
async fn stamp_routed(
    client: &Client,
    routes: &[Arc<Route>],
    stamped: &mut HashMap<String, String>,
) -> bool {
    let mut ok = true;
    let uids: HashSet<String> = routes.iter().filter_map(|r| r.uid()).collect();
    stamped.retain(|uid, _| uids.contains(uid));
    for route in routes {
        let (Some(status), Some(uid), Some(ns)) =
            (route.status.as_ref(), route.uid(), route.namespace())
        else {
            continue;
        };
        let hosts = route_hosts(&route.name_any(), &ns, &status.fields);
        if hosts.is_empty() {
            continue;
        }
        let digest = routed_digest(&hosts);
        if stamped.get(&uid) == Some(&digest) {
            continue;
        }
        let api: Api<CoreService> = Api::namespaced(client.clone(), &ns);
        let patch = serde_json::json!({"metadata": {"annotations": {ROUTED_ANNOTATION: digest}}});
        match api.patch(&route.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                stamped.insert(uid, digest);
            }
            Err(e) => {
                tracing::debug!(route = %route.name_any(), error = %crate::report(&e),
                    "marking a Route routed failed");
                ok = false;
            }
        }
    }
    ok
}

/// Aborts its tasks when dropped (the loops are cancelled at shutdown).
pub(crate) struct AbortOnDrop(pub(crate) Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.iter().for_each(JoinHandle::abort);
    }
}

/// The host of a URL (`http://a.b.example.com[:port][/path]`), lowercase.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next()?.split(':').next()?;
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Whether a pod is ready and not terminating. A pool pod claimed by the revision is ready
/// only once specialised: until then its Ready condition is the placeholder's (issue 12).
fn pod_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && kinetic_api::pool::ready_as_claimant(p.metadata.labels.as_ref())
        && p.status.as_ref().is_some_and(|s| {
            s.conditions
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// Secs of an optional `*Seconds` field; `None` when absent or not positive.
fn secs(v: Option<i64>) -> Option<Duration> {
    v.and_then(|s| u64::try_from(s).ok()).filter(|s| *s > 0).map(Duration::from_secs)
}

/// The host names a Route's status routes and their targets: the `status.url` host and the
/// cluster-local names (`status.address`, `{route}.{namespace}`, `….svc`) get its
/// `status.traffic` targets with a nonzero `percent`, each tagged target's `url` host that
/// revision alone. Empty while the Route has no resolved traffic: upstream's ingress is not
/// programmed before the Route has traffic, so such a host stays unknown (404).
///
/// A target whose Revision the gateway's cache has not seen yet is still listed: the table
/// gives it a placeholder without endpoints, so its requests are held rather than refused
/// while the cache catches up.
pub fn route_hosts(
    name: &str,
    ns: &str,
    status: &RouteStatusFields,
) -> BTreeMap<String, Vec<Target>> {
    let mut hosts = BTreeMap::new();
    let traffic = status.traffic.as_deref().unwrap_or_default();
    let target =
        |name: &str, percent: u32| Target { revision: RevisionKey::new(ns, name), percent };
    if let Some(host) = status.url.as_deref().and_then(url_host) {
        let targets: Vec<Target> = traffic
            .iter()
            .filter_map(|t| {
                let percent = u32::try_from(t.percent.unwrap_or(0)).unwrap_or(0);
                Some(target(t.revision_name.as_deref()?, percent)).filter(|t| t.percent > 0)
            })
            .collect();
        if !targets.is_empty() {
            let local = status.address.as_ref().and_then(|a| a.url.as_deref());
            if let Some(local) = local.and_then(url_host) {
                let short = format!("{name}.{ns}");
                for h in [format!("{short}.svc"), short, local] {
                    hosts.insert(h, targets.clone());
                }
            }
            hosts.insert(host, targets);
        }
    }
    for t in traffic.iter().filter(|t| t.tag.is_some()) {
        if let (Some(host), Some(rev)) =
            (t.url.as_deref().and_then(url_host), t.revision_name.as_deref())
        {
            hosts.insert(host, vec![target(rev, 100)]);
        }
    }
    hosts
}

/// A digest of [`route_hosts`]: what the gateway stamps into [`ROUTED_ANNOTATION`] once its
/// table routes them, and what the Route controller compares with the status it writes.
/// FNV-1a (64 bit) over a canonical text, so every process and version computes the same.
pub fn routed_digest(hosts: &BTreeMap<String, Vec<Target>>) -> String {
    let mut text = String::new();
    for (host, targets) in hosts {
        text.push_str(host);
        for t in targets {
            text.push_str(&format!(" {}/{}={}", t.revision.namespace, t.revision.name, t.percent));
        }
        text.push('\n');
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The table for the cached objects (pure, for tests).
pub fn routing_table(
    routes: &[Arc<Route>],
    revisions: &[Arc<Revision>],
    pods: &[Arc<Pod>],
) -> RoutingTable {
    let mut endpoints: BTreeMap<RevisionKey, Vec<IpAddr>> = BTreeMap::new();
    // Pods handed over in place to a new revision (`serving::handoff`) also serve the one they
    // came from while it has no ready pod of its own: requests routed to it before the Route
    // follows are answered, not held.
    let mut handed: BTreeMap<RevisionKey, Vec<IpAddr>> = BTreeMap::new();
    for p in pods.iter().filter(|p| pod_ready(p)) {
        let (Some(rev), Some(ns)) = (p.labels().get(REVISION_LABEL), p.namespace()) else {
            continue;
        };
        let ip = p.status.as_ref().and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse().ok());
        if let Some(ip) = ip {
            endpoints.entry(RevisionKey::new(ns.clone(), rev.clone())).or_default().push(ip);
            if let Some(from) = crate::serving::handoff::handed_from(p) {
                handed.entry(RevisionKey::new(ns, from.to_owned())).or_default().push(ip);
            }
        }
    }
    for (key, ips) in handed {
        endpoints.entry(key).or_insert(ips);
    }
    let mut table = RoutingTable::default();
    for rev in revisions {
        let key = RevisionKey::new(rev.namespace().unwrap_or_default(), rev.name_any());
        let container = webhook::serving_container(&rev.spec);
        let port = container.map_or(webhook::DEFAULT_USER_PORT, webhook::user_port);
        let port = u16::try_from(port).unwrap_or(8080);
        let h2c = container
            .and_then(|c| c.ports.as_deref())
            .and_then(|p| p.first())
            .and_then(|p| p.name.as_deref())
            == Some("h2c");
        let mut eps: Vec<SocketAddr> = endpoints
            .remove(&key)
            .unwrap_or_default()
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        eps.sort();
        let r = kinetic_gateway::Revision {
            endpoints: eps,
            container_concurrency: rev
                .spec
                .container_concurrency
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(0),
            timeout: secs(rev.spec.timeout_seconds).unwrap_or(Duration::from_secs(300)),
            response_start_timeout: secs(rev.spec.response_start_timeout_seconds),
            idle_timeout: secs(rev.spec.idle_timeout_seconds),
            protocol: if h2c { Protocol::H2c } else { Protocol::Http1 },
        };
        table.revisions.insert(key, r);
    }
    for route in routes {
        let ns = route.namespace().unwrap_or_default();
        let Some(status) = route.status.as_ref() else { continue };
        for (host, targets) in route_hosts(&route.name_any(), &ns, &status.fields) {
            table.hosts.insert(host, kinetic_gateway::Route { targets });
        }
    }
    let routed: Vec<RevisionKey> =
        table.hosts.values().flat_map(|r| r.targets.iter().map(|t| t.revision.clone())).collect();
    for key in routed {
        table.revisions.entry(key).or_default();
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_and_its_tag_route_to_the_ready_pods_of_their_revisions() {
        let route: Route = serde_json::from_value(serde_json::json!({
            "apiVersion": "serving.knative.dev/v1", "kind": "Route",
            "metadata": {"name": "hello", "namespace": "default"},
            "spec": {},
            "status": {
                "url": "http://hello.default.example.com",
                "address": {"url": "http://hello.default.svc.cluster.local"},
                "traffic": [
                    {"revisionName": "hello-00001", "percent": 80},
                    {"revisionName": "hello-00002", "percent": 20, "tag": "next",
                     "url": "http://next-hello.default.example.com"},
                    {"revisionName": "gone", "percent": 0},
                    {"revisionName": "hello-00003", "tag": "new", "percent": 0,
                     "url": "http://new-hello.default.example.com"}
                ]
            }
        }))
        .unwrap();
        let rev = |name: &str, extra: serde_json::Value| -> Arc<Revision> {
            let mut spec = serde_json::json!({"containers": [{"image": "a"}]});
            if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
                s.extend(e.clone());
            }
            Arc::new(
                serde_json::from_value(serde_json::json!({
                    "apiVersion": "serving.knative.dev/v1", "kind": "Revision",
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": spec,
                }))
                .unwrap(),
            )
        };
        let pod = |name: &str, rev: &str, ip: &str, ready: &str| -> Arc<Pod> {
            Arc::new(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name, "namespace": "default",
                                 "labels": {REVISION_LABEL: rev}},
                    "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": ready}]},
                }))
                .unwrap(),
            )
        };
        let revisions = [
            rev(
                "hello-00001",
                serde_json::json!({"containerConcurrency": 2, "timeoutSeconds": 30}),
            ),
            rev(
                "hello-00002",
                serde_json::json!({"containers": [{"image": "b",
                    "ports": [{"containerPort": 9000, "name": "h2c"}]}]}),
            ),
        ];
        let pods = [
            pod("a", "hello-00001", "10.0.0.2", "True"),
            pod("b", "hello-00001", "10.0.0.3", "False"),
            pod("c", "hello-00002", "10.0.0.4", "True"),
        ];
        let t_route = Arc::new(route);
        let t = routing_table(std::slice::from_ref(&t_route), &revisions, &pods);
        let k1 = RevisionKey::new("default", "hello-00001");
        let k2 = RevisionKey::new("default", "hello-00002");
        let main = &t.hosts["hello.default.example.com"];
        assert_eq!(
            main.targets,
            vec![
                Target { revision: k1.clone(), percent: 80 },
                Target { revision: k2.clone(), percent: 20 }
            ]
        );
        for local in ["hello.default", "hello.default.svc", "hello.default.svc.cluster.local"] {
            assert_eq!(t.hosts[local].targets, main.targets, "{local}");
        }
        assert_eq!(
            t.hosts["next-hello.default.example.com"].targets,
            vec![Target { revision: k2.clone(), percent: 100 }]
        );
        let r1 = &t.revisions[&k1];
        assert_eq!(r1.endpoints, vec!["10.0.0.2:8080".parse().unwrap()]);
        assert_eq!((r1.container_concurrency, r1.timeout), (2, Duration::from_secs(30)));
        let r2 = &t.revisions[&k2];
        assert_eq!(r2.endpoints, vec!["10.0.0.4:9000".parse().unwrap()]);
        assert_eq!(r2.protocol, Protocol::H2c);
        // Not cached yet: held, not refused.
        let k3 = RevisionKey::new("default", "hello-00003");
        assert_eq!(
            t.hosts["new-hello.default.example.com"].targets,
            vec![Target { revision: k3.clone(), percent: 100 }]
        );
        assert_eq!(t.revisions[&k3], kinetic_gateway::Revision::default());
        assert_eq!(url_host("https://A.b:8443/x"), Some("a.b".into()));
        let mut pending = (*t_route).clone();
        if let Some(st) = pending.status.as_mut() {
            st.fields.traffic = None;
        }
        let t = routing_table(&[Arc::new(pending)], &revisions, &pods);
        assert!(t.hosts.is_empty(), "a Route without traffic routes nothing yet");
    }

    #[test]
    fn the_routed_digest_is_pinned_and_changes_with_any_host_revision_or_share() {
        let t = |rev: &str, percent| Target { revision: RevisionKey::new("default", rev), percent };
        let mut hosts = BTreeMap::new();
        hosts.insert("hello.default.example.com".to_owned(), vec![t("hello-00001", 100)]);
        // Pinned: a gateway and a controller of different builds must agree.
        assert_eq!(routed_digest(&hosts), "608c795fc6182e85");
        let mut other = hosts.clone();
        other.insert("hello.default.example.com".to_owned(), vec![t("hello-00001", 99)]);
        assert_ne!(routed_digest(&other), routed_digest(&hosts));
        let mut other = hosts.clone();
        other.insert("x-hello.default.example.com".to_owned(), vec![t("hello-00001", 100)]);
        assert_ne!(routed_digest(&other), routed_digest(&hosts));
        assert_ne!(routed_digest(&BTreeMap::new()), routed_digest(&hosts));
    }
}
