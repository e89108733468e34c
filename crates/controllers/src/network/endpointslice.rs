//! The EndpointSlice controller (upstream `pkg/controller/endpointslice` and
//! `staging/src/k8s.io/endpointslice/reconciler.go`), for IPv4.
//!
//! For every Service with a selector (and not `ExternalName`) it keeps the EndpointSlices
//! labelled `kubernetes.io/service-name: <service>` and
//! `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`, owned by the
//! Service (so the API server's garbage collector removes them with it). Every selected pod
//! with an IPv4 address that is not finished gets an endpoint — terminating pods included,
//! with `ready: false, terminating: true` — with `serving` = pod ready, `ready` = serving and
//! not terminating (or `publishNotReadyAddresses`), its `targetRef` and `nodeName`. Endpoints
//! are grouped by the ports they resolve (named target ports against the pod's container
//! ports), at most 100 per slice; a Service without endpoints keeps one empty placeholder
//! slice, as upstream.
//!
//! Slices are compared with what is wanted and written only when they differ. Because the
//! cache may not show this controller's own latest writes yet, it remembers the slices it
//! wrote until the watch shows them (upstream's `EndpointSliceTracker`) and does not sync a
//! Service while that is pending, so a slow watch never makes it create a slice twice.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::time::Instant;

use crate::Result;
use crate::legacy::cache::{Cache, Change, Reader};
use crate::legacy::queue::{Outcome, Queue, Reconcile, Workers};
use crate::network::services::{
    HEADLESS_LABEL, find_port, hostname_for, is_service_ip_set, managed_selector, pod_ipv4,
    selects, should_pod_be_in_endpoints,
};
use crate::util::SyncError;
use crate::util::{Labels, controller_ref, name_of, ns_of, sem_eq};

/// `discovery.LabelServiceName`.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// `discovery.LabelManagedBy`.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// The managed-by value of upstream's controller, which this one replaces.
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// Upstream's default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
const WORKERS: usize = 5;
/// Writes not seen in the watch after this long are forgotten (the watch relisted or lost
/// them; a sync from the then-current cache is right again).
const TRACKER_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the EndpointSlice controller until `shutdown` completes.
///
/// # Errors
/// A watch stream ended (kube's watcher retries failures with back-off, so it does not).
pub async fn run_endpointslice_controller(
    client: Client,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let cfg = watcher::Config::default;
    let svc_stream = watcher(Api::<Service>::all(client.clone()), cfg()).default_backoff();
    let pod_stream = watcher(Api::<Pod>::all(client.clone()), cfg()).default_backoff();
    let slice_stream = watcher(
        Api::<EndpointSlice>::all(client.clone()),
        cfg().labels(&format!("{LABEL_MANAGED_BY}={CONTROLLER_NAME}")),
    )
    .default_backoff();
    let mut svc_stream = std::pin::pin!(svc_stream);
    let mut pod_stream = std::pin::pin!(pod_stream);
    let mut slice_stream = std::pin::pin!(slice_stream);
    let mut shutdown = std::pin::pin!(shutdown);
    let (mut svc_cache, mut pod_cache, mut slice_cache) =
        (Cache::default(), Cache::default(), Cache::default());
    let ctx = Arc::new(Ctx {
        client,
        services: svc_cache.reader(),
        pods: pod_cache.reader(),
        slices: slice_cache.reader(),
        tracker: Tracker::default(),
    });
    let mut workers = Workers::new(ctx.clone(), WORKERS);
    tracing::info!("endpointslice controller started");
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => {
                workers.drain().await;
                return Ok(());
            }
            ev = svc_stream.next() => for ch in svc_cache.next_changes(ev, "services")? {
                crate::network::endpoints::on_service(ch, &mut workers.queue)
            },
            ev = pod_stream.next() => for ch in pod_cache.next_changes(ev, "pods")? {
                ctx.on_pod(ch, &mut workers.queue)
            },
            ev = slice_stream.next() => for ch in slice_cache.next_changes(ev, "endpointslices")? {
                ctx.on_slice(ch, &mut workers.queue)
            },
            () = workers.tick() => {}
        }
        if svc_cache.synced() && pod_cache.synced() && slice_cache.synced() {
            workers.start();
        }
    }
}

/// The slices this controller wrote and has not seen in its watch yet, per Service key:
/// slice name → the resourceVersion written (`None` for a deletion).
#[derive(Debug, Default)]
struct Tracker {
    inner: Mutex<Written>,
}

/// Service key → slice name → (resourceVersion written or `None` for a deletion, when).
type Written = HashMap<String, HashMap<String, (Option<u64>, Instant)>>;

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Written> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a write, unless the cache already shows it. The event loop updates the cache
    /// before it calls [`Tracker::observed`] under this lock, so checking the cache under the
    /// lock cannot miss an event that raced with the write's response.
    fn wrote(&self, svc: &str, slice: &str, rv: Option<u64>, cache: &Reader<EndpointSlice>) {
        let mut map = self.lock();
        let cached =
            cache.get(&format!("{}/{slice}", svc.split_once('/').map_or("", |(ns, _)| ns)));
        let seen = match (rv, cached) {
            (Some(want), Some(c)) => rv_of(&c).is_some_and(|got| got >= want),
            (None, None) => true,
            _ => false,
        };
        if !seen {
            map.entry(svc.to_owned()).or_default().insert(slice.to_owned(), (rv, Instant::now()));
        }
    }

    /// The watch showed `slice` at `rv` (`None`: deleted).
    fn observed(&self, svc: &str, slice: &str, rv: Option<u64>) {
        let mut map = self.lock();
        if let Some(slices) = map.get_mut(svc) {
            let seen = match (slices.get(slice), rv) {
                (Some((Some(want), _)), Some(got)) => got >= *want,
                (Some((None, _)), Some(_)) => false,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if seen {
                slices.remove(slice);
            }
            if slices.is_empty() {
                map.remove(svc);
            }
        }
    }

    fn stale(&self, svc: &str) -> bool {
        let mut map = self.lock();
        let Some(slices) = map.get_mut(svc) else { return false };
        slices.retain(|_, (_, at)| at.elapsed() < TRACKER_TIMEOUT);
        !slices.is_empty()
    }
}

fn rv_of(slice: &EndpointSlice) -> Option<u64> {
    slice.metadata.resource_version.as_deref()?.parse().ok()
}

struct Ctx {
    client: Client,
    services: Reader<Service>,
    pods: Reader<Pod>,
    slices: Reader<EndpointSlice>,
    tracker: Tracker,
}

impl Reconcile for Ctx {
    const NAME: &'static str = "endpointslice";
    async fn reconcile(self: Arc<Self>, key: String) -> Outcome {
        self.sync(&key).await
    }
}

fn service_key_of(slice: &EndpointSlice) -> Option<String> {
    let svc = slice.metadata.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
    Some(format!("{}/{svc}", ns_of(slice)))
}

/// The ports of a slice in a canonical order, as the key of its group.
fn ports_key(ports: &[EndpointPort]) -> String {
    let mut ports = ports.to_vec();
    ports.sort_by(|a, b| (&a.name, a.port, &a.protocol).cmp(&(&b.name, b.port, &b.protocol)));
    serde_json::to_string(&crate::util::normalize(
        serde_json::to_value(ports).unwrap_or_default(),
        false,
    ))
    .unwrap_or_default()
}

fn endpoint_sort_key(e: &Endpoint) -> (String, String) {
    (
        e.target_ref.as_ref().and_then(|r| r.name.clone()).unwrap_or_default(),
        e.addresses.first().cloned().unwrap_or_default(),
    )
}

impl Ctx {
    fn on_pod(&self, change: Change<Pod>, q: &mut Queue) {
        crate::network::endpoints::on_pod_change(&self.services, change, q);
    }

    fn on_slice(&self, change: Change<EndpointSlice>, q: &mut Queue) {
        let (slice, rv) = match change {
            Change::Added(s) | Change::Updated { new: s, .. } => {
                let rv = rv_of(&s);
                (s, rv)
            }
            Change::Deleted(s) => (s, None),
        };
        if let Some(key) = service_key_of(&slice) {
            self.tracker.observed(&key, name_of(&*slice), rv);
            q.add(key);
        }
    }

    #[tracing::instrument(skip_all, fields(service = %key))]
    async fn sync(&self, key: &str) -> Outcome {
        let Some((ns, _)) = key.split_once('/') else { return Ok(None) };
        // Slices of a deleted Service are removed by the garbage collector (ownerReference).
        let Some(svc) = self.services.get(key) else { return Ok(None) };
        let Some(selector) = managed_selector(&svc) else { return Ok(None) };
        if self.tracker.stale(key) {
            tracing::debug!("own slice writes not in the cache yet, waiting for the watch");
            return Ok(Some(Duration::from_millis(200)));
        }
        let spec = svc.spec.clone().unwrap_or_default();
        let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
        let svc_ports = spec.ports.clone().unwrap_or_default();
        // Desired endpoints grouped by their ports.
        let mut groups: BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
        for pod in self.pods.in_namespace(ns) {
            if !selects(selector, pod.metadata.labels.as_ref())
                || !should_pod_be_in_endpoints(&pod, true)
            {
                continue;
            }
            let Some(ip) = pod_ipv4(&pod) else { continue };
            let mut ports: Vec<EndpointPort> = svc_ports
                .iter()
                .filter_map(|sp| {
                    let port = find_port(&pod, sp)?;
                    Some(EndpointPort {
                        name: Some(sp.name.clone().unwrap_or_default()),
                        port: Some(port),
                        protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                        app_protocol: sp.app_protocol.clone(),
                    })
                })
                .collect();
            ports.sort_by(|a, b| (&a.name, a.port).cmp(&(&b.name, b.port)));
            let serving = crate::apps::pods::is_ready(&pod);
            let terminating = pod.metadata.deletion_timestamp.is_some();
            let endpoint = Endpoint {
                addresses: vec![ip],
                conditions: Some(EndpointConditions {
                    ready: Some(publish_not_ready || (serving && !terminating)),
                    serving: Some(serving),
                    terminating: Some(terminating),
                }),
                hostname: hostname_for(&pod, &svc),
                node_name: Some(crate::apps::pods::node_name(&pod).to_owned())
                    .filter(|n| !n.is_empty()),
                target_ref: Some(ObjectReference {
                    kind: Some("Pod".into()),
                    namespace: pod.metadata.namespace.clone(),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            groups.entry(ports_key(&ports)).or_insert_with(|| (ports, Vec::new())).1.push(endpoint);
        }
        if groups.is_empty() {
            // Upstream keeps one placeholder slice without ports or endpoints.
            groups.insert(ports_key(&[]), (Vec::new(), Vec::new()));
        }
        // Existing slices of this Service, grouped the same way.
        let mut existing: BTreeMap<String, Vec<Arc<EndpointSlice>>> = BTreeMap::new();
        let svc_name = name_of(&*svc);
        for s in self.slices.in_namespace(ns) {
            let labels = s.metadata.labels.as_ref();
            if labels.and_then(|l| l.get(LABEL_SERVICE_NAME)).map(String::as_str) != Some(svc_name)
                || s.address_type != "IPv4"
            {
                continue;
            }
            existing.entry(ports_key(s.ports.as_deref().unwrap_or_default())).or_default().push(s);
        }
        for list in existing.values_mut() {
            list.sort_by(|a, b| name_of(&**a).cmp(name_of(&**b)));
        }
        let labels = slice_labels(&svc);
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let (mut created, mut updated, mut deleted) = (0, 0, 0);
        for (pkey, (ports, mut endpoints)) in groups {
            endpoints.sort_by_key(endpoint_sort_key);
            let chunks: Vec<Vec<Endpoint>> = if endpoints.is_empty() {
                vec![Vec::new()]
            } else {
                endpoints.chunks(MAX_ENDPOINTS_PER_SLICE).map(<[Endpoint]>::to_vec).collect()
            };
            let mut olds = existing.remove(&pkey).unwrap_or_default().into_iter();
            for chunk in chunks {
                match olds.next() {
                    Some(old) => {
                        if self.same(&old, &chunk, &labels, &svc) {
                            continue;
                        }
                        let mut next = (*old).clone();
                        next.endpoints = chunk;
                        next.ports = Some(ports.clone());
                        next.metadata.labels = Some(labels.clone());
                        next.metadata.owner_references = Some(vec![controller_ref(&*svc)]);
                        let written = api
                            .replace(name_of(&next), &PostParams::default(), &next)
                            .await
                            .map_err(SyncError::api("updating an endpointslice"))?;
                        self.tracker.wrote(key, name_of(&written), rv_of(&written), &self.slices);
                        updated += 1;
                    }
                    None => {
                        let slice = EndpointSlice {
                            metadata: ObjectMeta {
                                generate_name: Some(format!("{svc_name}-")),
                                namespace: Some(ns.to_owned()),
                                labels: Some(labels.clone()),
                                owner_references: Some(vec![controller_ref(&*svc)]),
                                ..Default::default()
                            },
                            address_type: "IPv4".into(),
                            endpoints: chunk,
                            ports: Some(ports.clone()),
                        };
                        let written = api
                            .create(&PostParams::default(), &slice)
                            .await
                            .map_err(SyncError::api("creating an endpointslice"))?;
                        self.tracker.wrote(key, name_of(&written), rv_of(&written), &self.slices);
                        created += 1;
                    }
                }
            }
            for extra in olds {
                self.delete(&api, key, &extra).await?;
                deleted += 1;
            }
        }
        for extra in existing.into_values().flatten() {
            self.delete(&api, key, &extra).await?;
            deleted += 1;
        }
        if created + updated + deleted > 0 {
            tracing::debug!(created, updated, deleted, "endpointslices written");
        }
        Ok(None)
    }

    fn same(
        &self,
        old: &EndpointSlice,
        endpoints: &[Endpoint],
        labels: &Labels,
        svc: &Service,
    ) -> bool {
        let mut cur = old.endpoints.clone();
        cur.sort_by_key(endpoint_sort_key);
        let owner_ok = old
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.controller == Some(true) && Some(&r.uid) == svc.metadata.uid.as_ref());
        owner_ok
            && old.metadata.labels.as_ref() == Some(labels)
            && sem_eq(&cur, &endpoints.to_vec(), false)
    }

    async fn delete(
        &self,
        api: &Api<EndpointSlice>,
        key: &str,
        slice: &EndpointSlice,
    ) -> Result<(), SyncError> {
        match api.delete(name_of(slice), &DeleteParams::default()).await {
            Ok(_) => {
                self.tracker.wrote(key, name_of(slice), None, &self.slices);
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(SyncError::api("deleting an endpointslice")(e)),
        }
    }
}

/// Upstream `setEndpointSliceLabels`: the Service's labels (but the reserved ones), the
/// service-name and managed-by labels, and the headless label for a Service without a
/// ClusterIP.
fn slice_labels(svc: &Service) -> Labels {
    let mut labels: Labels = svc
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != LABEL_SERVICE_NAME && k.as_str() != LABEL_MANAGED_BY)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(LABEL_SERVICE_NAME.into(), name_of(svc).to_owned());
    labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    if is_service_ip_set(svc) {
        labels.remove(HEADLESS_LABEL);
    } else {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_waits_for_the_written_version() {
        let t = Tracker::default();
        let cache = Cache::<EndpointSlice>::default();
        t.wrote("ns/svc", "svc-abc", Some(10), &cache.reader());
        assert!(t.stale("ns/svc"));
        t.observed("ns/svc", "svc-abc", Some(9));
        assert!(t.stale("ns/svc"), "an older version is not the write");
        t.observed("ns/svc", "svc-abc", Some(10));
        assert!(!t.stale("ns/svc"));
        t.wrote("ns/svc", "svc-abc", Some(11), &cache.reader());
        t.observed("ns/svc", "svc-abc", Some(11));
        // A deletion of a slice the cache still has.
        let mut cache = Cache::<EndpointSlice>::default();
        let mut slice = EndpointSlice::default();
        slice.metadata.name = Some("svc-abc".into());
        slice.metadata.namespace = Some("ns".into());
        slice.metadata.resource_version = Some("11".into());
        cache.apply(watcher::Event::Apply(slice));
        t.wrote("ns/svc", "svc-abc", None, &cache.reader());
        t.observed("ns/svc", "svc-abc", Some(11));
        assert!(t.stale("ns/svc"), "a deleted slice must go away");
        t.observed("ns/svc", "svc-abc", None);
        assert!(!t.stale("ns/svc"));
    }
}
