//! The Endpoints controller (upstream `pkg/controller/endpoint/endpoints_controller.go`).
//!
//! For every Service with a selector (and not `ExternalName`) it keeps an Endpoints object of
//! the same name: one address per selected pod that has an IPv4 address and is neither finished
//! nor terminating (terminating pods stay only with `publishNotReadyAddresses`), in `addresses`
//! when the pod is ready (or the Service publishes not-ready addresses) and in
//! `notReadyAddresses` otherwise, for every Service port the pod resolves (named target ports
//! against its container ports). Subsets are packed like upstream's `RepackSubsets`: addresses
//! that serve the same ports share a subset. It writes only when subsets or labels changed,
//! and deletes the Endpoints of a deleted Service.
//!
//! A kube-runtime `Controller` of Services: pod changes reach the Services that select the pod
//! (before and after a relabel), and the deletion of an Endpoints object its Service's
//! reconcile, which recreates it. A deleted Service is no reconcile (kube-runtime reconciles
//! only objects in its cache), so its Endpoints are deleted beside the controller
//! (`delete_orphans`), on the Service's deletion and, at start, for every Endpoints object
//! whose Service went away while no controller ran (upstream's `checkLeftoverEndpoints`).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event, watcher};

use crate::backoff::Backoff;
use crate::network::services::{
    HEADLESS_LABEL, find_port, hostname_for, is_service_ip_set, managed_selector, pod_ipv4,
    selects, services_selecting, should_pod_be_in_endpoints,
};
use crate::util::SyncError;
use crate::util::{Labels, name_of, ns_of, sem_eq};

/// What a sync asks for: when to look again, if at all.
type Outcome = Result<Option<Duration>, SyncError>;

/// Runs the Endpoints controller until `shutdown` completes; running reconciles finish first.
///
/// # Errors
/// None so far: API errors are retried per Service with back-off.
pub async fn run_endpoints_controller(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    crate::util::run_together(shutdown, |stop| async move {
        let cfg = watcher::Config::default;
        let (pods, pod_changes) = crate::util::reflect_changes::<Pod>(&client, cfg());
        // Services, with their deletions handed to `delete_orphans`.
        let (services, svc_writer) = reflector::store::<Service>();
        let (svc_gone, svc_gone_rx) = tokio::sync::mpsc::unbounded_channel::<Service>();
        let svc_stream = reflector::reflector(
            svc_writer,
            watcher(Api::<Service>::all(client.clone()), cfg()).default_backoff().map_ok(
                move |event| {
                    if let Event::Delete(svc) = &event {
                        let _ = svc_gone.send(svc.clone());
                    }
                    event
                },
            ),
        )
        .applied_objects();
        // Endpoints: only a deletion reconciles its Service (upstream reacts to nothing else).
        let (endpoints, mut ep_writer) = reflector::store::<Endpoints>();
        let ep_deleted = watcher(Api::<Endpoints>::all(client.clone()), cfg())
            .default_backoff()
            .map_ok(move |event| {
                ep_writer.apply_watcher_event(&event);
                match event {
                    Event::Delete(ep) => Some(ep),
                    _ => None,
                }
            })
            .try_filter_map(|ep| std::future::ready(Ok(ep)));
        let ctx = Arc::new(Ctx {
            client,
            services: services.clone(),
            pods,
            endpoints,
            backoff: Backoff::default(),
        });
        let by_pod = ctx.clone();
        tracing::info!("endpoints controller started");
        let controller = Controller::for_stream(svc_stream, services)
            .watches_stream(pod_changes, move |pod| services_selecting(&by_pod.services, &pod))
            .watches_stream(ep_deleted, |ep| Some(ObjectRef::new(name_of(&ep)).within(ns_of(&ep))))
            .graceful_shutdown_on(stop.wait())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(crate::log_reconcile("endpoints"));
        let gone = futures::stream::unfold(svc_gone_rx, |mut rx| async move {
            rx.recv().await.map(|svc| (svc, rx))
        });
        tokio::select! {
            () = controller => {}
            () = delete_orphans(ctx, gone) => {}
        }
        Ok(())
    })
    .await
}

/// Upstream `resourcelock.LeaderElectionRecordAnnotationKey`.
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

fn is_leader_lock(ep: &Endpoints) -> bool {
    ep.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(LEADER_ANNOTATION))
}

struct Ctx {
    client: Client,
    services: Store<Service>,
    pods: Store<Pod>,
    endpoints: Store<Endpoints>,
    backoff: Backoff,
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, SyncError> {
    let pass = async {
        let requeue = ctx.sync(&svc).await?;
        Ok(requeue.map_or_else(Action::await_change, Action::requeue))
    };
    ctx.backoff.reconcile(&*svc, pass).await
}

/// Every failure backs off per Service (see [`crate::backoff`]).
fn error_policy(svc: Arc<Service>, e: &SyncError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&*svc, e)
}

/// Deletes the Endpoints of deleted Services: first those left over from Services deleted
/// while no controller ran (leader-election locks excepted), then the Endpoints of each
/// Service deleted from now on. Runs until `gone` ends (the controller stopping drops it
/// first). A failed deletion is retried with back-off.
async fn delete_orphans(ctx: Arc<Ctx>, gone: impl Stream<Item = Service>) {
    let mut gone = std::pin::pin!(gone);
    // Both caches list before the leftovers are judged; Service deletions queue meanwhile.
    while !(crate::cache_ready(&ctx.services) && crate::cache_ready(&ctx.endpoints)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for ep in ctx.endpoints.state() {
        let service = ObjectRef::<Service>::new(name_of(&*ep)).within(ns_of(&*ep));
        if !is_leader_lock(&ep) && ctx.services.get(&service).is_none() {
            ctx.delete_endpoints(ns_of(&*ep), name_of(&*ep)).await;
        }
    }
    while let Some(svc) = gone.next().await {
        ctx.delete_endpoints(ns_of(&svc), name_of(&svc)).await;
    }
}

impl Ctx {
    /// Deletes the Endpoints `ns/name` unless its Service exists (again), retrying failures.
    async fn delete_endpoints(&self, ns: &str, name: &str) {
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), ns);
        let mut wait = Duration::from_millis(5);
        loop {
            let service = ObjectRef::<Service>::new(name).within(ns);
            if self.services.get(&service).is_some() {
                return;
            }
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(service = %format!("{ns}/{name}"), "deleted the endpoints of a deleted service");
                    return;
                }
                Err(kube::Error::Api(s)) if s.code == 404 => return,
                Err(error) => {
                    tracing::warn!(%error, endpoints = %format!("{ns}/{name}"), ?wait, "deleting endpoints failed");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(60));
                }
            }
        }
    }

    #[tracing::instrument(skip_all, fields(service = %format!("{}/{}", ns_of(svc), name_of(svc))))]
    async fn sync(&self, svc: &Service) -> Outcome {
        let Some(selector) = managed_selector(svc) else { return Ok(None) };
        // Never wait for the caches inside a reconcile (see `crate::cache_ready`).
        if !(crate::cache_ready(&self.pods) && crate::cache_ready(&self.endpoints)) {
            return Ok(Some(Duration::from_millis(200)));
        }
        let (ns, name) = (ns_of(svc), name_of(svc));
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), ns);
        let spec = svc.spec.clone().unwrap_or_default();
        let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
        let ports = spec.ports.clone().unwrap_or_default();
        let mut pods: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| ns_of(&**p) == ns)
            .filter(|p| selects(selector, p.metadata.labels.as_ref()))
            .collect();
        pods.sort_by(|a, b| name_of(&**a).cmp(name_of(&**b)));
        let mut entries: Vec<Entry> = Vec::new();
        for pod in &pods {
            if !should_pod_be_in_endpoints(pod, publish_not_ready) {
                continue;
            }
            let Some(ip) = pod_ipv4(pod) else { continue };
            let address = EndpointAddress {
                ip,
                hostname: hostname_for(pod, svc),
                node_name: Some(crate::apps::pods::node_name(pod).to_owned())
                    .filter(|n| !n.is_empty()),
                target_ref: Some(ObjectReference {
                    kind: Some("Pod".into()),
                    namespace: pod.metadata.namespace.clone(),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                    ..Default::default()
                }),
            };
            let ready = publish_not_ready || crate::apps::pods::is_ready(pod);
            if ports.is_empty() {
                // A headless Service may have no ports: its addresses are still published.
                if spec.cluster_ip.as_deref() == Some("None") {
                    entries.push(Entry { address, port: None, ready });
                }
                continue;
            }
            for sp in &ports {
                let Some(port) = find_port(pod, sp) else {
                    tracing::debug!(pod = %name_of(&**pod), port = ?sp.name, "no suitable port on the pod");
                    continue;
                };
                entries.push(Entry {
                    address: address.clone(),
                    port: Some(EndpointPort {
                        name: sp.name.clone(),
                        port,
                        protocol: sp.protocol.clone(),
                        app_protocol: sp.app_protocol.clone(),
                    }),
                    ready,
                });
            }
        }
        let subsets = repack(entries);
        let mut labels: Labels = svc.metadata.labels.clone().unwrap_or_default();
        let current = self.endpoints.get(&ObjectRef::new(name).within(ns));
        if let Some(cur) = &current {
            let mut cur_labels = cur.metadata.labels.clone().unwrap_or_default();
            cur_labels.remove(HEADLESS_LABEL);
            let same_subsets = sem_eq(&cur.subsets.clone().unwrap_or_default(), &subsets, false);
            if same_subsets && cur_labels == labels {
                return Ok(None);
            }
        }
        if is_service_ip_set(svc) {
            labels.remove(HEADLESS_LABEL);
        } else {
            labels.insert(HEADLESS_LABEL.into(), String::new());
        }
        let mut next = current.as_deref().cloned().unwrap_or_else(|| Endpoints {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(ns.to_owned()),
                ..Default::default()
            },
            subsets: None,
        });
        next.metadata.labels = Some(labels).filter(|l| !l.is_empty());
        next.subsets = Some(subsets).filter(|s| !s.is_empty());
        let ready: usize =
            next.subsets.iter().flatten().map(|s| s.addresses.as_ref().map_or(0, Vec::len)).sum();
        let not_ready: usize = next
            .subsets
            .iter()
            .flatten()
            .map(|s| s.not_ready_addresses.as_ref().map_or(0, Vec::len))
            .sum();
        if current.is_some() {
            api.replace(name, &PostParams::default(), &next)
                .await
                .map_err(SyncError::api("updating endpoints"))?;
        } else {
            api.create(&PostParams::default(), &next)
                .await
                .map_err(SyncError::api("creating endpoints"))?;
        }
        tracing::debug!(ready, not_ready, "endpoints written");
        Ok(None)
    }
}

/// One address for one port (`None`: a port-less headless Service).
struct Entry {
    address: EndpointAddress,
    port: Option<EndpointPort>,
    ready: bool,
}

type PortKey = (String, i32, String, String);
/// An address by (IP, target UID), as upstream's `addressKey`.
type AddrKey = (String, String);
/// Per port: the port and whether each address is ready for it.
type PortAddrs = (Option<EndpointPort>, BTreeMap<AddrKey, bool>);

fn port_key(p: Option<&EndpointPort>) -> PortKey {
    match p {
        Some(p) => (
            p.name.clone().unwrap_or_default(),
            p.port,
            p.protocol.clone().unwrap_or_default(),
            p.app_protocol.clone().unwrap_or_default(),
        ),
        // Upstream's sentinel for "no ports".
        None => (String::new(), -1, String::new(), String::new()),
    }
}

/// Upstream `RepackSubsets`: addresses that serve the same set of ports share a subset; an
/// address not ready for a port is not ready there, whatever else says. Sorted so the result
/// is the same for the same input (upstream sorts by hashes; we sort by value).
fn repack(entries: Vec<Entry>) -> Vec<EndpointSubset> {
    // address key (ip, uid) -> address; port -> address key -> ready
    let mut addresses: HashMap<AddrKey, EndpointAddress> = HashMap::new();
    let mut by_port: BTreeMap<PortKey, PortAddrs> = BTreeMap::new();
    for e in entries {
        let uid = e.address.target_ref.as_ref().and_then(|r| r.uid.clone()).unwrap_or_default();
        let akey = (e.address.ip.clone(), uid);
        addresses.entry(akey.clone()).or_insert(e.address);
        let slot = by_port
            .entry(port_key(e.port.as_ref()))
            .or_insert_with(|| (e.port.clone(), BTreeMap::new()));
        let ready = slot.1.entry(akey).or_insert(e.ready);
        *ready = *ready && e.ready;
    }
    // address set -> ports
    let mut by_set: BTreeMap<Vec<(AddrKey, bool)>, Vec<EndpointPort>> = BTreeMap::new();
    for (_, (port, set)) in by_port {
        let set: Vec<_> = set.into_iter().collect();
        let ports = by_set.entry(set).or_default();
        if let Some(p) = port {
            ports.push(p);
        }
    }
    by_set
        .into_iter()
        .map(|(set, ports)| {
            let mut ready = Vec::new();
            let mut not_ready = Vec::new();
            for (akey, is_ready) in set {
                if let Some(a) = addresses.get(&akey) {
                    if is_ready { ready.push(a.clone()) } else { not_ready.push(a.clone()) }
                }
            }
            EndpointSubset {
                addresses: Some(ready).filter(|v| !v.is_empty()),
                not_ready_addresses: Some(not_ready).filter(|v| !v.is_empty()),
                ports: Some(ports).filter(|v| !v.is_empty()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ip: &str, port: i32, ready: bool) -> Entry {
        Entry {
            address: EndpointAddress {
                ip: ip.into(),
                target_ref: Some(ObjectReference {
                    uid: Some(format!("uid-{ip}")),
                    ..Default::default()
                }),
                ..Default::default()
            },
            port: Some(EndpointPort {
                name: Some(format!("p{port}")),
                port,
                protocol: Some("TCP".into()),
                app_protocol: None,
            }),
            ready,
        }
    }

    #[test]
    fn repack_groups_addresses_by_their_ports() {
        let subsets = repack(vec![
            entry("10.0.0.2", 80, true),
            entry("10.0.0.1", 80, false),
            entry("10.0.0.2", 81, true),
            entry("10.0.0.1", 81, false),
            entry("10.0.0.3", 80, true),
        ]);
        let view: Vec<(Vec<String>, Vec<String>, Vec<i32>)> = subsets
            .iter()
            .map(|s| {
                (
                    s.addresses.iter().flatten().map(|a| a.ip.clone()).collect(),
                    s.not_ready_addresses.iter().flatten().map(|a| a.ip.clone()).collect(),
                    s.ports.iter().flatten().map(|p| p.port).collect(),
                )
            })
            .collect();
        assert_eq!(
            view,
            [
                (vec!["10.0.0.2".to_owned()], vec!["10.0.0.1".to_owned()], vec![81]),
                (
                    vec!["10.0.0.2".to_owned(), "10.0.0.3".to_owned()],
                    vec!["10.0.0.1".to_owned()],
                    vec![80]
                ),
            ]
        );
    }
}
