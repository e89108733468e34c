//! The disruption controller (kube-controller-manager's `pkg/controller/disruption`): keeps
//! each `policy/v1` PodDisruptionBudget's status — `currentHealthy`, `desiredHealthy`,
//! `expectedPods` (from the scale of the selected pods' controllers, where upstream reads it),
//! `disruptionsAllowed`, `disruptedPods` (entries the eviction subresource made, dropped once
//! the pod deletes or after [`budget::DELETION_TIMEOUT`]), `observedGeneration` and the
//! `DisruptionAllowed` condition (`SufficientPods`, `InsufficientPods`, `SyncFailed`).
//!
//! A kube-runtime `Controller` over budgets that also watches pods (a pod change requeues the
//! budgets of its namespace that select it); a budget with pending disruptions is looked at
//! again when the first of them expires, and every budget every 30 s, since the controllers'
//! scales are not watched.

pub mod budget;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use kinetic_machinery::selector::LabelSelector;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::core::GroupVersionKind;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt as _};

use crate::events::{EventReq, EventSink};

/// How often a budget is recomputed without a pod event (the controllers' scales are not
/// watched).
const RESYNC: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("listing the pods of PodDisruptionBudget {key}")]
    Pods {
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status of PodDisruptionBudget {key}")]
    Status {
        key: String,
        #[source]
        source: kube::Error,
    },
}

struct Ctx {
    client: Client,
    backoff: crate::backoff::Backoff,
    events: EventSink,
    owners: Owners,
}

/// Reads the controllers of pods (and the workloads budgets name) through discovery, with the
/// discovered resources cached by `apiVersion/kind`.
pub(crate) struct Owners {
    client: Client,
    resources: Mutex<HashMap<String, ApiResource>>,
}

/// Runs the disruption controller until `shutdown` completes.
///
/// # Errors
/// None today; the signature matches the other controllers'.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> crate::Result<()> {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        backoff: crate::backoff::Backoff::default(),
        events: EventSink::spawn(client.clone(), "controllermanager".to_owned()),
        owners: Owners::new(client.clone()),
    });
    let controller = Controller::new(
        Api::<PodDisruptionBudget>::all(client.clone()),
        watcher::Config::default(),
    );
    let budgets = controller.store();
    controller
        .watches(Api::<Pod>::all(client), watcher::Config::default(), move |pod: Pod| {
            let ns = pod.namespace().unwrap_or_default();
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            budgets
                .state()
                .iter()
                .filter(|b| b.namespace().as_deref() == Some(ns.as_str()))
                .filter(|b| selects(b, &labels))
                .map(|b| ObjectRef::from_obj(&**b))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(crate::log_reconcile("disruption"))
        .await;
    Ok(())
}

/// The budget's selector as `policy/v1` reads it: missing selects nothing, empty everything.
fn selector(b: &PodDisruptionBudget) -> Option<LabelSelector> {
    let sel = b.spec.as_ref()?.selector.as_ref()?;
    LabelSelector::from_label_selector(&serde_json::to_value(sel).ok()?).ok()
}

fn selects(b: &PodDisruptionBudget, labels: &BTreeMap<String, String>) -> bool {
    let labels: serde_json::Map<String, serde_json::Value> =
        labels.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
    selector(b).is_some_and(|s| s.matches(Some(&labels)))
}

fn error_policy(b: Arc<PodDisruptionBudget>, e: &ReconcileError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&*b, e)
}

fn key(b: &PodDisruptionBudget) -> String {
    format!("{}/{}", b.namespace().unwrap_or_default(), b.name_any())
}

/// `podutil.IsPodReady`.
fn ready(p: &Pod) -> bool {
    let conds = p.status.as_ref().and_then(|s| s.conditions.as_ref());
    conds.into_iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
}

fn controller_of(p: &Pod) -> Option<&OwnerReference> {
    p.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true))
}

async fn reconcile(b: Arc<PodDisruptionBudget>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    ctx.backoff.reconcile(&*b, sync(&b, &ctx)).await
}

/// `trySync`, or `failSafe` when the expected count cannot be computed.
async fn sync(b: &PodDisruptionBudget, ctx: &Ctx) -> Result<Action, ReconcileError> {
    if b.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let k = key(b);
    let ns = b.namespace().unwrap_or_default();
    let pods = match selector(b) {
        None => Vec::new(),
        Some(sel) => {
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
            let lp = ListParams::default().labels(&sel.to_string());
            api.list(&lp)
                .await
                .map_err(|source| ReconcileError::Pods { key: k.clone(), source })?
                .items
        }
    };
    if pods.is_empty() {
        ctx.events.send(EventReq::for_object(
            b,
            "Normal",
            "NoPods",
            "No matching pods found".into(),
        ));
    }
    let infos: Vec<budget::PodInfo> = pods
        .iter()
        .map(|p| budget::PodInfo {
            name: p.name_any(),
            deleting: p.metadata.deletion_timestamp.is_some(),
            ready: ready(p),
            controller: controller_of(p).map(|o| o.uid.clone()),
        })
        .collect();
    let scales = ctx.owners.scales(&ns, &pods).await;
    let spec = b.spec.clone().unwrap_or_default();
    let expected = budget::expected_pod_count(
        spec.max_unavailable.as_ref(),
        spec.min_available.as_ref(),
        &infos,
        |uid| scales.get(uid).copied(),
    );
    let expected = match expected {
        Ok(e) => e,
        Err(msg) => {
            ctx.events.send(EventReq::for_object(
                b,
                "Warning",
                "CalculateExpectedPodCountFailed",
                format!("Failed to calculate the number of expected pods: {msg}"),
            ));
            return fail_safe(b, ctx, &msg).await;
        }
    };
    if !expected.unmanaged.is_empty() {
        ctx.events.send(EventReq::for_object(
            b,
            "Warning",
            "UnmanagedPods",
            format!("Pods selected by this PodDisruptionBudget (selector: {}) were found to be unmanaged. As a result, the status of the PDB cannot be calculated correctly, which may result in undefined behavior. To account for these pods please set \".spec.minAvailable\" field of the PDB to an integer value.", selector(b).map(|s| s.to_string()).unwrap_or_default()),
        ));
    }
    let now = Timestamp::now();
    let old = b.status.clone().unwrap_or_default();
    let recorded: BTreeMap<String, Timestamp> =
        old.disrupted_pods.iter().flatten().map(|(k, t)| (k.clone(), t.0)).collect();
    let (disrupted, recheck, expired) = budget::disrupted_pods(&infos, &recorded, now);
    for name in expired {
        if let Some(p) = pods.iter().find(|p| p.name_any() == name) {
            ctx.events.send(EventReq::for_pod(
                p,
                "Warning",
                "NotDeleted",
                format!(
                    "Pod was expected by PDB {ns}/{} to be deleted but it wasn't",
                    b.name_any()
                ),
            ));
        }
    }
    let current = budget::count_healthy(&infos, &disrupted, now);
    let allowed =
        budget::disruptions_allowed(current, expected.desired_healthy, expected.expected_count);
    let generation = b.metadata.generation.unwrap_or(0);
    let mut status = PodDisruptionBudgetStatus {
        current_healthy: current,
        desired_healthy: expected.desired_healthy,
        expected_pods: expected.expected_count,
        disruptions_allowed: allowed,
        disrupted_pods: (!disrupted.is_empty())
            .then(|| disrupted.iter().map(|(k, t)| (k.clone(), Time(*t))).collect()),
        observed_generation: Some(generation),
        conditions: old.conditions.clone(),
    };
    let (cond, reason) =
        if allowed > 0 { ("True", "SufficientPods") } else { ("False", "InsufficientPods") };
    set_condition(&mut status, cond, reason, "", generation);
    write_status(b, ctx, status).await?;
    let wait = recheck
        .and_then(|r| Duration::try_from(r.duration_since(now)).ok())
        .map_or(RESYNC, |d| d.min(RESYNC) + Duration::from_millis(100));
    Ok(Action::requeue(wait))
}

/// `failSafe`: no disruption allowed, `DisruptionAllowed=False` with reason `SyncFailed`.
async fn fail_safe(
    b: &PodDisruptionBudget,
    ctx: &Ctx,
    msg: &str,
) -> Result<Action, ReconcileError> {
    let mut status = b.status.clone().unwrap_or_default();
    status.disruptions_allowed = 0;
    let generation = status.observed_generation.unwrap_or(0);
    set_condition(&mut status, "False", "SyncFailed", msg, generation);
    write_status(b, ctx, status).await?;
    Ok(Action::requeue(RESYNC))
}

/// `apimeta.SetStatusCondition` of `DisruptionAllowed`.
fn set_condition(
    status: &mut PodDisruptionBudgetStatus,
    value: &str,
    reason: &str,
    message: &str,
    generation: i64,
) {
    let conds = status.conditions.get_or_insert_with(Vec::new);
    let now = Time(Timestamp::now());
    match conds.iter_mut().find(|c| c.type_ == "DisruptionAllowed") {
        Some(c) => {
            if c.status != value {
                c.last_transition_time = now;
            }
            c.status = value.to_owned();
            c.reason = reason.to_owned();
            c.message = message.to_owned();
            c.observed_generation = Some(generation);
        }
        None => conds.push(Condition {
            type_: "DisruptionAllowed".to_owned(),
            status: value.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            observed_generation: Some(generation),
            last_transition_time: now,
        }),
    }
}

/// Writes the status when it differs (the condition's transition time aside), as an update
/// with the budget's resourceVersion, as upstream's `UpdateStatus` (a conflict retries with
/// the newer budget).
async fn write_status(
    b: &PodDisruptionBudget,
    ctx: &Ctx,
    status: PodDisruptionBudgetStatus,
) -> Result<(), ReconcileError> {
    let strip = |s: &PodDisruptionBudgetStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        }
        s
    };
    let old = b.status.clone().unwrap_or_default();
    if strip(&old) == strip(&status) {
        return Ok(());
    }
    let mut new = b.clone();
    new.status = Some(status);
    let api: Api<PodDisruptionBudget> =
        Api::namespaced(ctx.client.clone(), &b.namespace().unwrap_or_default());
    let body = &new;
    api.replace_status(&b.name_any(), &PostParams::default(), body)
        .await
        .map(|_| ())
        .map_err(|source| ReconcileError::Status { key: key(b), source })
}

impl Owners {
    pub(crate) fn new(client: Client) -> Self {
        Self { client, resources: Mutex::default() }
    }

    /// The replicas of each controller of `pods`, by uid (upstream's finders): a ReplicaSet's
    /// Deployment when it has one, otherwise the controller itself; `spec.replicas` of the object
    /// the owner reference names, when its uid matches. A controller that cannot be read is left
    /// out (the count fails safe).
    pub(crate) async fn scales(&self, ns: &str, pods: &[Pod]) -> HashMap<String, i32> {
        let mut out = HashMap::new();
        let mut owners: Vec<OwnerReference> = Vec::new();
        for p in pods {
            if let Some(o) = controller_of(p)
                && !owners.iter().any(|x| x.uid == o.uid)
            {
                owners.push(o.clone());
            }
        }
        for o in owners {
            let Some(obj) = self.get(ns, &o.api_version, &o.kind, &o.name).await else { continue };
            if obj.metadata.uid.as_deref() != Some(o.uid.as_str()) {
                continue;
            }
            // `getPodDeployment`: a ReplicaSet a Deployment controls counts as the Deployment.
            let parent = obj.metadata.owner_references.iter().flatten().find(|p| {
                p.controller == Some(true)
                    && p.kind == "Deployment"
                    && p.api_version.starts_with("apps/")
            });
            let replicas = match parent {
                Some(d) if o.kind == "ReplicaSet" => {
                    self.get(ns, &d.api_version, &d.kind, &d.name).await.and_then(|d| replicas(&d))
                }
                _ => replicas(&obj),
            };
            if let Some(r) = replicas {
                out.insert(o.uid.clone(), r);
            }
        }
        out
    }

    /// The namespaced object of `apiVersion`/`kind` named `name`, if it can be read.
    pub(crate) async fn get(
        &self,
        ns: &str,
        api_version: &str,
        kind: &str,
        name: &str,
    ) -> Option<DynamicObject> {
        let cache_key = format!("{api_version}/{kind}");
        let cached =
            self.resources.lock().unwrap_or_else(|e| e.into_inner()).get(&cache_key).cloned();
        let ar = match cached {
            Some(ar) => ar,
            None => {
                let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
                let gvk = GroupVersionKind::gvk(group, version, kind);
                let (ar, _) = kube::discovery::pinned_kind(&self.client, &gvk).await.ok()?;
                self.resources
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(cache_key, ar.clone());
                ar
            }
        };
        Api::<DynamicObject>::namespaced_with(self.client.clone(), ns, &ar)
            .get_opt(name)
            .await
            .ok()?
    }
}

/// `spec.replicas` of a workload (1 when unset, the default of every apps/v1 kind).
pub(crate) fn replicas(o: &DynamicObject) -> Option<i32> {
    let r = o.data.pointer("/spec/replicas").and_then(serde_json::Value::as_i64).unwrap_or(1);
    i32::try_from(r).ok()
}
