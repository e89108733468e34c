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

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};

use crate::Result;
use crate::legacy::cache::{Cache, Change, Reader, key_of};
use crate::legacy::queue::{Outcome, Queue, Reconcile, Workers};
use crate::network::services::{
    HEADLESS_LABEL, find_port, hostname_for, is_service_ip_set, managed_selector, pod_ipv4,
    selects, services_selecting, should_pod_be_in_endpoints,
};
use crate::util::SyncError;
use crate::util::{Labels, name_of, sem_eq};

const WORKERS: usize = 5;

/// Runs the Endpoints controller until `shutdown` completes.
///
/// # Errors
/// A watch stream ended (kube's watcher retries failures with back-off, so it does not).
pub async fn run_endpoints_controller(
    client: Client,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let cfg = watcher::Config::default;
    let svc_stream = watcher(Api::<Service>::all(client.clone()), cfg()).default_backoff();
    let pod_stream = watcher(Api::<Pod>::all(client.clone()), cfg()).default_backoff();
    let ep_stream = watcher(Api::<Endpoints>::all(client.clone()), cfg()).default_backoff();
    let mut svc_stream = std::pin::pin!(svc_stream);
    let mut pod_stream = std::pin::pin!(pod_stream);
    let mut ep_stream = std::pin::pin!(ep_stream);
    let mut shutdown = std::pin::pin!(shutdown);
    let (mut svc_cache, mut pod_cache, mut ep_cache) =
        (Cache::default(), Cache::default(), Cache::default());
    let ctx = Arc::new(Ctx {
        client,
        services: svc_cache.reader(),
        pods: pod_cache.reader(),
        endpoints: ep_cache.reader(),
    });
    let mut workers = Workers::new(ctx.clone(), WORKERS);
    tracing::info!("endpoints controller started");
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => {
                workers.drain().await;
                return Ok(());
            }
            ev = svc_stream.next() => for ch in svc_cache.next_changes(ev, "services")? {
                on_service(ch, &mut workers.queue)
            },
            ev = pod_stream.next() => for ch in pod_cache.next_changes(ev, "pods")? {
                ctx.on_pod(ch, &mut workers.queue)
            },
            ev = ep_stream.next() => {
                // Upstream reacts to deletions only: an Endpoints object deleted behind its
                // back is recreated.
                let first_list = !ep_cache.synced();
                for ch in ep_cache.next_changes(ev, "endpoints")? {
                    match ch {
                        Change::Deleted(ep) => workers.queue.add(key_of(&*ep)),
                        // Upstream's `checkLeftoverEndpoints`: at start every Endpoints object
                        // is synced once, so those whose Service went away while no controller
                        // ran are deleted (leader-election locks excepted).
                        Change::Added(ep) if first_list && !is_leader_lock(&ep) => {
                            workers.queue.add(key_of(&*ep));
                        }
                        _ => {}
                    }
                }
            }
            () = workers.tick() => {}
        }
        if svc_cache.synced() && pod_cache.synced() && ep_cache.synced() {
            workers.start();
        }
    }
}

/// Upstream `resourcelock.LeaderElectionRecordAnnotationKey`.
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

fn is_leader_lock(ep: &Endpoints) -> bool {
    ep.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(LEADER_ANNOTATION))
}

pub(crate) fn on_service(change: Change<Service>, q: &mut Queue) {
    match change {
        Change::Added(s) | Change::Updated { new: s, .. } | Change::Deleted(s) => {
            q.add(key_of(&*s))
        }
    }
}

struct Ctx {
    client: Client,
    services: Reader<Service>,
    pods: Reader<Pod>,
    endpoints: Reader<Endpoints>,
}

/// Queues the Services a pod change concerns: those selecting it, and on a relabel those that
/// selected it before (shared by the Endpoints and EndpointSlice controllers).
pub(crate) fn on_pod_change(services: &Reader<Service>, change: Change<Pod>, q: &mut Queue) {
    let mut keys = Vec::new();
    match change {
        Change::Added(p) | Change::Deleted(p) => services_selecting(services, &p, &mut keys),
        Change::Updated { old, new } => {
            if old.metadata.resource_version == new.metadata.resource_version {
                return;
            }
            services_selecting(services, &new, &mut keys);
            if old.metadata.labels != new.metadata.labels {
                services_selecting(services, &old, &mut keys);
            }
        }
    }
    q.extend(keys);
}

impl Reconcile for Ctx {
    const NAME: &'static str = "endpoints";
    async fn reconcile(self: Arc<Self>, key: String) -> Outcome {
        self.sync(&key).await
    }
}

impl Ctx {
    fn on_pod(&self, change: Change<Pod>, q: &mut Queue) {
        on_pod_change(&self.services, change, q);
    }

    #[tracing::instrument(skip_all, fields(service = %key))]
    async fn sync(&self, key: &str) -> Outcome {
        let Some((ns, name)) = key.split_once('/') else { return Ok(None) };
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), ns);
        let Some(svc) = self.services.get(key) else {
            if self.endpoints.get(key).is_some() {
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => tracing::info!("deleted the endpoints of a deleted service"),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(SyncError::api("deleting endpoints")(e)),
                }
            }
            return Ok(None);
        };
        let Some(selector) = managed_selector(&svc) else { return Ok(None) };
        let spec = svc.spec.clone().unwrap_or_default();
        let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
        let ports = spec.ports.clone().unwrap_or_default();
        let mut pods: Vec<Arc<Pod>> = self
            .pods
            .in_namespace(ns)
            .into_iter()
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
                hostname: hostname_for(pod, &svc),
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
        let current = self.endpoints.get(key);
        if let Some(cur) = &current {
            let mut cur_labels = cur.metadata.labels.clone().unwrap_or_default();
            cur_labels.remove(HEADLESS_LABEL);
            let same_subsets = sem_eq(&cur.subsets.clone().unwrap_or_default(), &subsets, false);
            if same_subsets && cur_labels == labels {
                return Ok(None);
            }
        }
        if is_service_ip_set(&svc) {
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
