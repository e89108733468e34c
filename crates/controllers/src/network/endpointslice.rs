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
//! cache may not show this controller's own latest writes yet, it records the slices it wrote
//! in the shared [`crate::expectations`] until the cache shows them (upstream's
//! `EndpointSliceTracker`) and does not sync a Service while that is pending, so a slow watch
//! never makes it create a slice twice.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};

use crate::backoff::Backoff;
use crate::expectations::{Expectations, Seen};
use crate::network::services::{
    HEADLESS_LABEL, find_port, hostname_for, is_service_ip_set, managed_selector, pod_ipv4,
    selects, services_selecting, should_pod_be_in_endpoints,
};
use crate::util::SyncError;
use crate::util::{Labels, controller_ref, name_of, ns_of, sem_eq, uid_of};

/// `discovery.LabelServiceName`.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// `discovery.LabelManagedBy`.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// The managed-by value of upstream's controller, which this one replaces.
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// Upstream's default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// What a sync asks for: when to look again, if at all.
type Outcome = Result<Option<Duration>, SyncError>;

/// Runs the EndpointSlice controller until `shutdown` completes; running reconciles finish
/// first.
///
/// # Errors
/// None so far: API errors are retried per Service with back-off.
pub async fn run_endpointslice_controller(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    crate::util::run_together(shutdown, |stop| async move {
        let cfg = watcher::Config::default;
        let (pods, pod_changes) = crate::util::reflect_changes::<Pod>(&client, cfg());
        let (slices, slice_writer) = reflector::store::<EndpointSlice>();
        let slice_changes = reflector::reflector(
            slice_writer,
            watcher(
                Api::<EndpointSlice>::all(client.clone()),
                cfg().labels(&format!("{LABEL_MANAGED_BY}={CONTROLLER_NAME}")),
            ),
        )
        .default_backoff()
        .touched_objects();
        let controller = Controller::new(Api::<Service>::all(client.clone()), cfg());
        let ctx = Arc::new(Ctx {
            client,
            services: controller.store(),
            pods,
            slices,
            expectations: Expectations::default(),
            backoff: Backoff::default(),
        });
        let by_pod = ctx.clone();
        tracing::info!("endpointslice controller started");
        controller
            .watches_stream(pod_changes, move |pod| services_selecting(&by_pod.services, &pod))
            .watches_stream(slice_changes, |slice| service_of(&slice))
            .graceful_shutdown_on(stop.wait())
            .run(reconcile, error_policy, ctx)
            .for_each(crate::log_reconcile("endpointslice"))
            .await;
        Ok(())
    })
    .await
}

struct Ctx {
    client: Client,
    services: Store<Service>,
    pods: Store<Pod>,
    slices: Store<EndpointSlice>,
    /// The slices written and not yet in the cache, per Service.
    expectations: Expectations,
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

/// The Service a slice belongs to, by its `kubernetes.io/service-name` label.
fn service_of(slice: &EndpointSlice) -> Option<ObjectRef<Service>> {
    let svc = slice.metadata.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
    Some(ObjectRef::new(svc).within(ns_of(slice)))
}

fn rv_of(slice: &EndpointSlice) -> Option<&str> {
    slice.metadata.resource_version.as_deref()
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
    #[tracing::instrument(skip_all, fields(service = %format!("{}/{}", ns_of(svc), name_of(svc))))]
    async fn sync(&self, svc: &Service) -> Outcome {
        // Slices of a deleted Service are removed by the garbage collector (ownerReference).
        let Some(selector) = managed_selector(svc) else { return Ok(None) };
        // Never wait for the caches inside a reconcile (see `crate::cache_ready`).
        if !(crate::cache_ready(&self.pods) && crate::cache_ready(&self.slices)) {
            return Ok(Some(Duration::from_millis(200)));
        }
        let ns = ns_of(svc);
        let key = &format!("{ns}/{}", name_of(svc));
        let svc_name = name_of(svc);
        let mine = |s: &&Arc<EndpointSlice>| {
            ns_of(&***s) == ns
                && s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_SERVICE_NAME))
                    .map(String::as_str)
                    == Some(svc_name)
        };
        let current = self.slices.state();
        let seen = current.iter().filter(mine).map(|s| Seen {
            name: name_of(&**s),
            uid: uid_of(&**s),
            resource_version: rv_of(s).unwrap_or_default(),
            terminating: s.metadata.deletion_timestamp.is_some(),
        });
        if !self.expectations.satisfied(key, seen) {
            tracing::debug!("own slice writes not in the cache yet, waiting for the watch");
            return Ok(Some(Duration::from_millis(200)));
        }
        let spec = svc.spec.clone().unwrap_or_default();
        let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
        let svc_ports = spec.ports.clone().unwrap_or_default();
        // Desired endpoints grouped by their ports.
        let mut groups: BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
        for pod in self.pods.state().into_iter().filter(|p| ns_of(&**p) == ns) {
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
                hostname: hostname_for(&pod, svc),
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
        for s in current.iter().filter(mine).cloned() {
            if s.address_type != "IPv4" {
                continue;
            }
            existing.entry(ports_key(s.ports.as_deref().unwrap_or_default())).or_default().push(s);
        }
        for list in existing.values_mut() {
            list.sort_by(|a, b| name_of(&**a).cmp(name_of(&**b)));
        }
        let labels = slice_labels(svc);
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
                        if self.same(&old, &chunk, &labels, svc) {
                            continue;
                        }
                        let mut next = (*old).clone();
                        next.endpoints = chunk;
                        next.ports = Some(ports.clone());
                        next.metadata.labels = Some(labels.clone());
                        next.metadata.owner_references = Some(vec![controller_ref(svc)]);
                        let written = api
                            .replace(name_of(&next), &PostParams::default(), &next)
                            .await
                            .map_err(SyncError::api("updating an endpointslice"))?;
                        self.expectations.expect_update(
                            key,
                            name_of(&written),
                            rv_of(&written).unwrap_or_default(),
                        );
                        updated += 1;
                    }
                    None => {
                        let slice = EndpointSlice {
                            metadata: ObjectMeta {
                                generate_name: Some(format!("{svc_name}-")),
                                namespace: Some(ns.to_owned()),
                                labels: Some(labels.clone()),
                                owner_references: Some(vec![controller_ref(svc)]),
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
                        self.expectations.expect_create(key, name_of(&written));
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
        self.expectations.expect_delete(key, uid_of(slice));
        match api.delete(name_of(slice), &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => {
                self.expectations.delete_failed(key, uid_of(slice));
                Err(SyncError::api("deleting an endpointslice")(e))
            }
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
