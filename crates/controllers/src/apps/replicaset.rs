//! The ReplicaSet controller (upstream `pkg/controller/replicaset/replica_set.go`).
//!
//! A sync of one ReplicaSet: take the active pods of its namespace, claim them (keep the ones it
//! controls that still match its selector, release those that no longer match, adopt matching
//! orphans), and — only when its [`Expectations`] are fulfilled, i.e. the cache shows every
//! create and delete it asked for — create or delete the difference to `spec.replicas`. Then it
//! writes `status` when it changed.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};

use crate::Result;
use crate::apps::pods;
use crate::legacy::cache::{Cache, Change, Reader, key_of};
use crate::legacy::expectations::Expectations;
use crate::legacy::queue::{Outcome, Queue, Reconcile, Workers};
use crate::util::SyncError;
use crate::util::{
    controller_of, controller_ref, is_deleting, name_of, now, ns_of, selector_matches, uid_of,
};

/// Upstream's `BurstReplicas`: at most this many creations or deletions per sync.
pub const BURST_REPLICAS: usize = 500;
const WORKERS: usize = 5;

/// Runs the ReplicaSet controller until `shutdown` completes.
///
/// # Errors
/// A watch stream ended (kube's watcher retries failures with back-off, so it does not).
pub async fn run_replicaset_controller(
    client: Client,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let rs_stream = watcher(Api::<ReplicaSet>::all(client.clone()), watcher::Config::default())
        .default_backoff();
    let pod_stream =
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()).default_backoff();
    let (mut rs_stream, mut pod_stream) = (std::pin::pin!(rs_stream), std::pin::pin!(pod_stream));
    let mut shutdown = std::pin::pin!(shutdown);
    let (mut rs_cache, mut pod_cache) = (Cache::default(), Cache::default());
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        rs: rs_cache.reader(),
        pods: pod_cache.reader(),
        expectations: Expectations::default(),
        events: crate::legacy::events::Recorder::new(client.clone(), "replicaset-controller"),
    });
    let mut workers = Workers::new(ctx.clone(), WORKERS);
    tracing::info!("replicaset controller started");
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => {
                workers.drain().await;
                return Ok(());
            }
            ev = rs_stream.next() => for ch in rs_cache.next_changes(ev, "replicasets")? {
                ctx.on_rs(ch, &mut workers.queue)
            },
            ev = pod_stream.next() => for ch in pod_cache.next_changes(ev, "pods")? {
                ctx.on_pod(ch, &mut workers.queue)
            },
            () = workers.tick() => {}
        }
        if rs_cache.synced() && pod_cache.synced() {
            workers.start();
        }
    }
}

struct Ctx {
    client: Client,
    rs: Reader<ReplicaSet>,
    pods: Reader<Pod>,
    expectations: Expectations,
    events: crate::legacy::events::Recorder,
}

impl Reconcile for Ctx {
    const NAME: &'static str = "replicaset";
    async fn reconcile(self: Arc<Self>, key: String) -> Outcome {
        self.sync(&key).await
    }
}

fn pod_key(pod: &Pod) -> String {
    key_of(pod)
}

impl Ctx {
    fn on_rs(&self, change: Change<ReplicaSet>, q: &mut Queue) {
        match change {
            Change::Added(rs) | Change::Updated { new: rs, .. } => q.add(key_of(&*rs)),
            Change::Deleted(rs) => {
                let key = key_of(&*rs);
                self.expectations.forget(&key);
                q.add(key);
            }
        }
    }

    /// The key of the cached ReplicaSet `ctrl` refers to, if it is that very object.
    fn resolve(
        &self,
        ns: &str,
        ctrl: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    ) -> Option<String> {
        self.rs.controller_key(ns, ctrl)
    }

    /// ReplicaSets whose selector matches an orphan pod (upstream `getPodReplicaSets`).
    fn matching(&self, pod: &Pod) -> Vec<String> {
        self.rs.selecting(ns_of(pod), pod.metadata.labels.as_ref(), |rs| {
            rs.spec.as_ref().map(|s| &s.selector)
        })
    }

    fn on_pod(&self, change: Change<Pod>, q: &mut Queue) {
        match change {
            Change::Added(pod) => {
                if is_deleting(&*pod) {
                    // A restarted controller sees pods that are already going away.
                    return self.pod_gone(&pod, q);
                }
                if let Some(ctrl) = controller_of(&*pod) {
                    if let Some(key) = self.resolve(ns_of(&*pod), ctrl) {
                        self.expectations.creation_observed(&key);
                        q.add(key);
                    }
                    return;
                }
                for key in self.matching(&pod) {
                    q.add(key);
                }
            }
            Change::Updated { old, new } => {
                if old.metadata.resource_version == new.metadata.resource_version {
                    return;
                }
                let labels_changed = old.metadata.labels != new.metadata.labels;
                if is_deleting(&*new) {
                    self.pod_gone(&new, q);
                    if labels_changed {
                        self.pod_gone(&old, q);
                    }
                    return;
                }
                let (old_ctrl, new_ctrl) = (controller_of(&*old), controller_of(&*new));
                let ctrl_changed = old_ctrl != new_ctrl;
                if ctrl_changed
                    && let Some(key) = old_ctrl.and_then(|c| self.resolve(ns_of(&*old), c))
                {
                    q.add(key);
                }
                if let Some(ctrl) = new_ctrl {
                    if let Some(key) = self.resolve(ns_of(&*new), ctrl) {
                        q.add(key);
                    }
                    return;
                }
                if labels_changed || ctrl_changed {
                    for key in self.matching(&new) {
                        q.add(key);
                    }
                }
            }
            Change::Deleted(pod) => self.pod_gone(&pod, q),
        }
    }

    fn pod_gone(&self, pod: &Pod, q: &mut Queue) {
        if let Some(key) = controller_of(pod).and_then(|c| self.resolve(ns_of(pod), c)) {
            self.expectations.deletion_observed(&key, &pod_key(pod));
            q.add(key);
        }
    }

    #[tracing::instrument(skip_all, fields(replicaset = %key))]
    async fn sync(&self, key: &str) -> Outcome {
        let Some(rs) = self.rs.get(key) else {
            self.expectations.forget(key);
            tracing::debug!("replicaset gone");
            return Ok(None);
        };
        let needs_sync = self.expectations.satisfied(key);
        let active: Vec<Arc<Pod>> = self
            .pods
            .in_namespace(ns_of(&*rs))
            .into_iter()
            .filter(|p| pods::is_active(p))
            .collect();
        let claimed = self.claim_pods(&rs, active).await?;
        let manage = if needs_sync && !is_deleting(&*rs) {
            self.manage_replicas(key, &rs, &claimed).await
        } else {
            if !needs_sync {
                tracing::debug!("expectations pending, not managing replicas");
            }
            Ok(())
        };
        let now_ts = Timestamp::now();
        let status = calculate_status(&rs, &claimed, manage.as_ref().err(), now_ts);
        self.update_status(&rs, status).await?;
        manage?;
        let min_ready = rs.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0);
        Ok(claimed.iter().filter_map(|p| pods::until_available(p, min_ready, now_ts)).min())
    }

    /// Upstream's `ClaimPods` through a `PodControllerRefManager`.
    async fn claim_pods(
        &self,
        rs: &ReplicaSet,
        candidates: Vec<Arc<Pod>>,
    ) -> Result<Vec<Arc<Pod>>, SyncError> {
        let selector = rs.spec.as_ref().map(|s| &s.selector);
        let uid = uid_of(rs);
        let mut claimed = Vec::new();
        let mut can_adopt: Option<bool> = None;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns_of(rs));
        for pod in candidates {
            let matches = selector_matches(selector, pod.metadata.labels.as_ref());
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
            self.expectations.expect_creations(key, n);
            let template = pod_from_template(rs)?;
            tracing::info!(have = pods.len(), want, creating = n, "too few replicas");
            let owner = Arc::new(rs.clone());
            let (created, err) = slow_start_batch(n, || {
                let (api, pod, owner, events) =
                    (api.clone(), template.clone(), owner.clone(), self.events.clone());
                async move {
                    match api.create(&PostParams::default(), &pod).await {
                        Ok(p) => {
                            tracing::debug!(pod = %name_of(&p), "pod created");
                            let msg = format!("Created pod: {}", name_of(&p));
                            events.post(&*owner, false, "SuccessfulCreate", msg);
                            Ok(())
                        }
                        Err(e) => {
                            events.post(
                                &*owner,
                                true,
                                "FailedCreate",
                                format!("Error creating: {e}"),
                            );
                            Err(SyncError::api("creating a pod")(e))
                        }
                    }
                }
            })
            .await;
            for _ in created..n {
                // Skipped or failed: the watch will never show these.
                self.expectations.creation_observed(key);
            }
            if let Some(e) = err {
                return Err(e);
            }
        } else if pods.len() > want {
            let n = (pods.len() - want).min(BURST_REPLICAS);
            let related = self.related_pods(rs);
            let mut sorted = pods.to_vec();
            pods::sort_for_deletion(&mut sorted, &related, Timestamp::now());
            sorted.truncate(n);
            self.expectations.expect_deletions(key, sorted.iter().map(|p| pod_key(p)));
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
                        self.events.post(rs, false, "SuccessfulDelete", msg);
                    }
                    Err(e) => {
                        self.expectations.deletion_observed(key, &pod_key(p));
                        let not_found = matches!(&e, kube::Error::Api(s) if s.code == 404);
                        if !not_found {
                            let msg = format!("Error deleting: {e}");
                            self.events.post(rs, true, "FailedDelete", msg);
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
                .in_namespace(ns_of(rs))
                .iter()
                .filter(|o| controller_of(&***o).is_some_and(|c| c.uid == owner.uid))
                .map(|o| uid_of(&**o).to_owned())
                .collect(),
            None => vec![uid_of(rs).to_owned()],
        };
        self.pods
            .in_namespace(ns_of(rs))
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
