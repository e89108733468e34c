//! The ReplicaSet controller (upstream `pkg/controller/replicaset/replica_set.go`).
//!
//! A sync of one ReplicaSet: take the active pods of its namespace, claim them (keep the ones it
//! controls that still match its selector, release those that no longer match, adopt matching
//! orphans), and — only when its expectations are fulfilled, i.e. the cache shows every create
//! and delete it asked for — create or delete the difference to `spec.replicas`. Then it
//! writes `status` when it changed.
//!
//! A kube-runtime `Controller` of ReplicaSets; pod changes reach the ReplicaSet that controls
//! the pod, or for an orphan the ReplicaSets whose selector matches it (and, when a pod's labels
//! or owner moved, those of its previous version too: `crate::util::reflect_changes`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use crate::apps::pods;
use crate::backoff::Backoff;
use crate::events::{EventReq, EventSink};
use crate::expectations::{Expectations, Seen};
use crate::util::SyncError;
use crate::util::{
    controller_of, controller_ref, is_deleting, name_of, now, ns_of, selector_is_empty,
    selector_of, uid_of,
};

/// Upstream's `BurstReplicas`: at most this many creations or deletions per sync.
pub const BURST_REPLICAS: usize = 500;
/// The controller's name in Events.
pub const COMPONENT: &str = "replicaset-controller";

/// Runs the ReplicaSet controller until `shutdown` completes; running reconciles finish first.
///
/// # Errors
/// None so far: API errors are retried per ReplicaSet with back-off.
pub async fn run_replicaset_controller(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    crate::util::run_together(shutdown, |stop| async move {
        let (pods, pod_changes) =
            crate::util::reflect_changes::<Pod>(&client, watcher::Config::default());
        let controller =
            Controller::new(Api::<ReplicaSet>::all(client.clone()), watcher::Config::default());
        let ctx = Arc::new(Ctx {
            client: client.clone(),
            rs: controller.store(),
            pods,
            expectations: Expectations::default(),
            events: EventSink::spawn(client, COMPONENT.to_owned()),
            backoff: Backoff::default(),
        });
        let mapper = ctx.clone();
        tracing::info!("replicaset controller started");
        controller
            .watches_stream(pod_changes, move |pod| mapper.replicasets_of(&pod))
            .graceful_shutdown_on(stop.wait())
            .run(reconcile, error_policy, ctx)
            .for_each(crate::log_reconcile("replicaset"))
            .await;
        Ok(())
    })
    .await
}

struct Ctx {
    client: Client,
    rs: Store<ReplicaSet>,
    pods: Store<Pod>,
    expectations: Expectations,
    events: EventSink,
    backoff: Backoff,
}

fn key_of(rs: &ReplicaSet) -> String {
    format!("{}/{}", ns_of(rs), name_of(rs))
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, SyncError> {
    let pass = async {
        let requeue = ctx.sync(&rs).await?;
        Ok(requeue.map_or_else(Action::await_change, Action::requeue))
    };
    ctx.backoff.reconcile(&*rs, pass).await
}

/// Every failure backs off per ReplicaSet (see [`crate::backoff`]).
fn error_policy(rs: Arc<ReplicaSet>, e: &SyncError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&*rs, e)
}

impl Ctx {
    /// The ReplicaSets a pod change concerns (upstream's pod event handlers): the one that
    /// controls it (whose expected creation it may be), else those whose selector matches it.
    fn replicasets_of(&self, pod: &Pod) -> Vec<ObjectRef<ReplicaSet>> {
        let ns = ns_of(pod);
        if let Some(ctrl) = controller_of(pod) {
            if ctrl.kind != "ReplicaSet" {
                return Vec::new();
            }
            self.expectations.creation_observed(&format!("{ns}/{}", ctrl.name), name_of(pod));
            return vec![ObjectRef::new(&ctrl.name).within(ns)];
        }
        if is_deleting(pod) {
            return Vec::new();
        }
        self.rs
            .state()
            .iter()
            .filter(|rs| ns_of(&***rs) == ns)
            .filter(|rs| {
                let sel = rs.spec.as_ref().map(|s| &s.selector);
                !selector_is_empty(sel)
                    && crate::util::matches(&selector_of(sel), pod.metadata.labels.as_ref())
            })
            .map(|rs| ObjectRef::from_obj(&**rs))
            .collect()
    }

    /// The pods of `ns` in the cache.
    fn pods_in(&self, ns: &str) -> Vec<Arc<Pod>> {
        self.pods.state().into_iter().filter(|p| ns_of(&**p) == ns).collect()
    }

    #[tracing::instrument(skip_all, fields(replicaset = %key_of(rs)))]
    async fn sync(&self, rs: &ReplicaSet) -> Result<Option<Duration>, SyncError> {
        // Never wait for the cache inside a reconcile (see `crate::cache_ready`).
        if !crate::cache_ready(&self.pods) {
            return Ok(Some(Duration::from_millis(200)));
        }
        let key = key_of(rs);
        let in_ns = self.pods_in(ns_of(rs));
        let uid = uid_of(rs);
        let seen =
            in_ns.iter().filter(|p| controller_of(&***p).is_some_and(|c| c.uid == uid)).map(|p| {
                Seen {
                    name: name_of(&**p),
                    uid: uid_of(&**p),
                    resource_version: p.metadata.resource_version.as_deref().unwrap_or_default(),
                    terminating: is_deleting(&**p),
                }
            });
        let needs_sync = self.expectations.satisfied(&key, seen);
        let active: Vec<Arc<Pod>> = in_ns.into_iter().filter(|p| pods::is_active(p)).collect();
        let claimed = self.claim_pods(rs, active).await?;
        let manage = if needs_sync && !is_deleting(rs) {
            self.manage_replicas(&key, rs, &claimed).await
        } else {
            if !needs_sync {
                tracing::debug!("expectations pending, not managing replicas");
            }
            Ok(())
        };
        let now_ts = Timestamp::now();
        let status = calculate_status(rs, &claimed, manage.as_ref().err(), now_ts);
        self.update_status(rs, status).await?;
        manage?;
        let min_ready = rs.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0);
        let available_at =
            claimed.iter().filter_map(|p| pods::until_available(p, min_ready, now_ts)).min();
        // While expectations are pending the watch brings the missing events and triggers the
        // next pass; the requeue is a safety net only (entries expire, see `crate::expectations`).
        let pending = (!needs_sync).then_some(Duration::from_secs(5));
        Ok([available_at, pending].into_iter().flatten().min())
    }

    /// Upstream's `ClaimPods` through a `PodControllerRefManager`.
    async fn claim_pods(
        &self,
        rs: &ReplicaSet,
        candidates: Vec<Arc<Pod>>,
    ) -> Result<Vec<Arc<Pod>>, SyncError> {
        let selector = selector_of(rs.spec.as_ref().map(|s| &s.selector));
        let uid = uid_of(rs);
        let mut claimed = Vec::new();
        let mut can_adopt: Option<bool> = None;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns_of(rs));
        for pod in candidates {
            let matches = crate::util::matches(&selector, pod.metadata.labels.as_ref());
            match controller_of(&*pod) {
                Some(c) if c.uid == uid => {
                    if matches {
                        claimed.push(pod);
                    } else if !is_deleting(rs) {
                        release(&api, &pod, uid).await?;
                    }
                }
                Some(_) => {}
                None => {
                    if !matches || is_deleting(rs) || is_deleting(&*pod) {
                        continue;
                    }
                    // Upstream's `RecheckDeletionTimestamp`: adopt only for a live, current
                    // owner, read from the API rather than the cache.
                    if can_adopt.is_none() {
                        let fresh = Api::<ReplicaSet>::namespaced(self.client.clone(), ns_of(rs))
                            .get_opt(name_of(rs))
                            .await
                            .map_err(SyncError::api("rereading the replicaset"))?;
                        can_adopt =
                            Some(fresh.is_some_and(|f| uid_of(&f) == uid && !is_deleting(&f)));
                    }
                    if can_adopt == Some(true)
                        && let Some(p) = adopt(&api, &pod, controller_ref(rs)).await?
                    {
                        claimed.push(Arc::new(p));
                    }
                }
            }
        }
        Ok(claimed)
    }

    async fn manage_replicas(
        &self,
        key: &str,
        rs: &ReplicaSet,
        pods: &[Arc<Pod>],
    ) -> Result<(), SyncError> {
        let want = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0);
        let want = usize::try_from(want).unwrap_or(0);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns_of(rs));
        if pods.len() < want {
            let n = (want - pods.len()).min(BURST_REPLICAS);
            let template = pod_from_template(rs)?;
            tracing::info!(have = pods.len(), want, creating = n, "too few replicas");
            let owner = Arc::new(rs.clone());
            let expectations = &self.expectations;
            let (_, err) = slow_start_batch(n, || {
                let (api, pod, owner, events) =
                    (api.clone(), template.clone(), owner.clone(), self.events.clone());
                async move {
                    match api.create(&PostParams::default(), &pod).await {
                        Ok(p) => {
                            // Recorded once the name is known (`generateName`): this
                            // ReplicaSet's next reconcile starts after this one returns.
                            expectations.expect_create(key, name_of(&p));
                            tracing::debug!(pod = %name_of(&p), "pod created");
                            let msg = format!("Created pod: {}", name_of(&p));
                            events.send(EventReq::for_object(
                                &*owner,
                                "Normal",
                                "SuccessfulCreate",
                                msg,
                            ));
                            Ok(())
                        }
                        Err(e) => {
                            events.send(EventReq::for_object(
                                &*owner,
                                "Warning",
                                "FailedCreate",
                                format!("Error creating: {e}"),
                            ));
                            Err(SyncError::api("creating a pod")(e))
                        }
                    }
                }
            })
            .await;
            if let Some(e) = err {
                return Err(e);
            }
        } else if pods.len() > want {
            let n = (pods.len() - want).min(BURST_REPLICAS);
            let related = self.related_pods(rs);
            let mut sorted = pods.to_vec();
            pods::sort_for_deletion(&mut sorted, &related, Timestamp::now());
            sorted.truncate(n);
            for p in &sorted {
                self.expectations.expect_delete(key, uid_of(&**p));
            }
            tracing::info!(have = pods.len(), want, deleting = n, "too many replicas");
            let results = futures::future::join_all(sorted.iter().map(|p| {
                let api = api.clone();
                async move {
                    let name = name_of(&**p);
                    let res = api.delete(name, &DeleteParams::default()).await;
                    (p, res)
                }
            }))
            .await;
            let mut first_err = None;
            for (p, res) in results {
                match res {
                    Ok(_) => {
                        tracing::debug!(pod = %name_of(&**p), "pod deleted");
                        let msg = format!("Deleted pod: {}", name_of(&**p));
                        self.events.send(EventReq::for_object(
                            rs,
                            "Normal",
                            "SuccessfulDelete",
                            msg,
                        ));
                    }
                    Err(e) => {
                        self.expectations.delete_failed(key, uid_of(&**p));
                        let not_found = matches!(&e, kube::Error::Api(s) if s.code == 404);
                        if !not_found {
                            let msg = format!("Error deleting: {e}");
                            self.events.send(EventReq::for_object(
                                rs,
                                "Warning",
                                "FailedDelete",
                                msg,
                            ));
                            first_err.get_or_insert(SyncError::api("deleting a pod")(e));
                        }
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
        }
        Ok(())
    }

    /// The active pods of every ReplicaSet with the same controller (the Deployment's other
    /// ReplicaSets), upstream's `getIndirectlyRelatedPods`; just its own pods without one.
    fn related_pods(&self, rs: &ReplicaSet) -> Vec<Arc<Pod>> {
        let siblings: Vec<String> = match controller_of(rs) {
            Some(owner) => self
                .rs
                .state()
                .iter()
                .filter(|o| ns_of(&***o) == ns_of(rs))
                .filter(|o| controller_of(&***o).is_some_and(|c| c.uid == owner.uid))
                .map(|o| uid_of(&**o).to_owned())
                .collect(),
            None => vec![uid_of(rs).to_owned()],
        };
        self.pods_in(ns_of(rs))
            .into_iter()
            .filter(|p| pods::is_active(p))
            .filter(|p| controller_of(&**p).is_some_and(|c| siblings.contains(&c.uid)))
            .collect()
    }

    async fn update_status(
        &self,
        rs: &ReplicaSet,
        status: ReplicaSetStatus,
    ) -> Result<(), SyncError> {
        let old = rs.status.clone().unwrap_or_default();
        if crate::util::sem_eq(&old, &status, true) {
            return Ok(());
        }
        let mut next = rs.clone();
        tracing::debug!(
            replicas = status.replicas,
            ready = status.ready_replicas.unwrap_or(0),
            available = status.available_replicas.unwrap_or(0),
            "updating replicaset status"
        );
        next.status = Some(status);
        Api::<ReplicaSet>::namespaced(self.client.clone(), ns_of(rs))
            .replace_status(name_of(rs), &PostParams::default(), &next)
            .await
            .map_err(SyncError::api("updating the replicaset status"))?;
        Ok(())
    }
}

/// Runs `n` calls of `f` in batches of 1, 2, 4, … (upstream `slowStartBatch`), stopping after
/// the first batch with a failure, so a quota or admission error costs one request, not `n`.
/// Returns how many calls succeeded and the first error.
pub(crate) async fn slow_start_batch<F, Fut>(n: usize, f: F) -> (usize, Option<SyncError>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), SyncError>>,
{
    let mut remaining = n;
    let mut batch = remaining.min(1);
    let mut ok = 0;
    while batch > 0 {
        let results = futures::future::join_all((0..batch).map(|_| f())).await;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(()) => ok += 1,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if first_err.is_some() {
            return (ok, first_err);
        }
        remaining -= batch;
        batch = (batch * 2).min(remaining);
    }
    (ok, None)
}

/// Upstream's `GetPodFromTemplate`: the template's labels, annotations, finalizers and spec,
/// `generateName: {rs}-` and a controller reference.
fn pod_from_template(rs: &ReplicaSet) -> Result<Pod, SyncError> {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .ok_or_else(|| SyncError::Invalid("the replicaset has no pod template".into()))?;
    let meta = template.metadata.unwrap_or_default();
    Ok(Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", name_of(rs))),
            namespace: rs.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_ref(rs)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    })
}

/// Adds `owner` as the pod's controller, if the pod is unchanged since it was read.
async fn adopt(
    api: &Api<Pod>,
    pod: &Pod,
    owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> Result<Option<Pod>, SyncError> {
    let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
    refs.push(owner);
    let patch = serde_json::json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": pod.metadata.resource_version,
    }});
    match api.patch(name_of(pod), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(p) => {
            tracing::info!(pod = %name_of(pod), "adopted orphan pod");
            Ok(Some(p))
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(SyncError::api("adopting a pod")(e)),
    }
}

/// Removes the controller reference of `owner_uid` from a pod that no longer matches.
async fn release(api: &Api<Pod>, pod: &Pod, owner_uid: &str) -> Result<(), SyncError> {
    let refs: Vec<_> = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != owner_uid)
        .cloned()
        .collect();
    let patch = serde_json::json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": pod.metadata.resource_version,
    }});
    match api.patch(name_of(pod), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => {
            tracing::info!(pod = %name_of(pod), "released pod that no longer matches");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(SyncError::api("releasing a pod")(e)),
    }
}

/// Upstream `calculateStatus`.
fn calculate_status(
    rs: &ReplicaSet,
    pods: &[Arc<Pod>],
    manage_err: Option<&SyncError>,
    now_ts: Timestamp,
) -> ReplicaSetStatus {
    let spec = rs.spec.as_ref();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(pods.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let fully_labeled = count(&|p: &Pod| {
        let labels = p.metadata.labels.as_ref();
        template_labels.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    });
    let ready = count(&pods::is_ready);
    let available = count(&|p: &Pod| pods::is_available(p, min_ready, now_ts));
    let old = rs.status.clone().unwrap_or_default();
    let mut conditions = old.conditions.clone().unwrap_or_default();
    let has_failure = conditions.iter().any(|c| c.type_ == "ReplicaFailure");
    match manage_err {
        Some(err) if !has_failure => {
            let want = spec.and_then(|s| s.replicas).unwrap_or(1);
            let diff = i64::try_from(pods.len()).unwrap_or(i64::MAX) - i64::from(want);
            let reason = if diff < 0 { "FailedCreate" } else { "FailedDelete" };
            let message = match std::error::Error::source(err) {
                Some(src) => format!("{err}: {src}"),
                None => err.to_string(),
            };
            conditions.push(ReplicaSetCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(message),
                last_transition_time: Some(now()),
            });
        }
        None if has_failure => conditions.retain(|c| c.type_ != "ReplicaFailure"),
        _ => {}
    }
    ReplicaSetStatus {
        replicas: i32::try_from(pods.len()).unwrap_or(i32::MAX),
        // Go's `omitempty`: zero counts are left out, as kube-controller-manager writes them.
        fully_labeled_replicas: Some(fully_labeled).filter(|v| *v != 0),
        ready_replicas: Some(ready).filter(|v| *v != 0),
        available_replicas: Some(available).filter(|v| *v != 0),
        observed_generation: rs.metadata.generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating_replicas: old.terminating_replicas,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_create_sets_replica_failure_and_success_clears_it() {
        let rs = ReplicaSet {
            metadata: ObjectMeta { generation: Some(2), ..Default::default() },
            spec: Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
                replicas: Some(2),
                ..Default::default()
            }),
            status: None,
        };
        let err = SyncError::Invalid("pods \"x\" is forbidden: exceeded quota".into());
        let s = calculate_status(&rs, &[], Some(&err), Timestamp::now());
        let c = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_deref()),
            ("ReplicaFailure", "True", Some("FailedCreate"))
        );
        assert_eq!(c.message.as_deref(), Some("pods \"x\" is forbidden: exceeded quota"));
        assert_eq!(s.observed_generation, Some(2));
        let rs = ReplicaSet { status: Some(s), ..rs };
        let s = calculate_status(&rs, &[], None, Timestamp::now());
        assert_eq!(s.conditions, None);
    }
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn slow_start_batches_double_and_stop_at_the_first_failure() {
        let calls = AtomicUsize::new(0);
        let (ok, err) = slow_start_batch(10, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .await;
        assert_eq!((ok, err.is_none(), calls.load(Ordering::SeqCst)), (10, true, 10));

        // Fail from the 4th call on: batches 1, 2 succeed, the batch of 4 fails, 3 is skipped.
        let calls = AtomicUsize::new(0);
        let (ok, err) = slow_start_batch(10, || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if n >= 3 { Err(SyncError::Invalid("quota".into())) } else { Ok(()) }
        })
        .await;
        assert_eq!((ok, err.is_some(), calls.load(Ordering::SeqCst)), (3, true, 7));
    }
}
