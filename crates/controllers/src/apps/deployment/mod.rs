//! The Deployment controller (upstream `pkg/controller/deployment`: `deployment_controller.go`,
//! `sync.go`, `rolling.go`, `recreate.go`, `progress.go`).
//!
//! A sync of one Deployment claims the ReplicaSets its selector matches (adopting orphans,
//! releasing those that no longer match), finds the *new* ReplicaSet (the oldest one whose
//! template equals the Deployment's but for the `pod-template-hash` label) and the old ones,
//! and then, as upstream:
//! - while paused, or when only `spec.replicas` changed (a *scaling event*: some active
//!   ReplicaSet's `desired-replicas` annotation differs), scales the ReplicaSets proportionally
//!   and updates the status;
//! - otherwise rolls out: `RollingUpdate` scales the new ReplicaSet up within
//!   `replicas + maxSurge` and the old ones down while `replicas - maxUnavailable` pods stay
//!   available; `Recreate` scales the old ones to zero, waits until their pods are gone, then
//!   creates and scales up the new one;
//! - finally writes the status and the `Progressing` / `Available` / `ReplicaFailure`
//!   conditions, deletes old ReplicaSets beyond `revisionHistoryLimit` once the rollout is
//!   complete, and requeues itself for the progress deadline.
//!
//! Every write carries the resourceVersion of what the sync read, so a sync on a stale cache
//! fails with a conflict and is retried instead of undoing a newer change.

pub mod util;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use self::util::*;
use crate::backoff::Backoff;
use crate::events::{EventReq, EventSink};
use crate::util::SyncError;
use crate::util::{
    controller_of, controller_ref, is_deleting, matches, name_of, ns_of, selector_is_empty,
    selector_of, sem_eq, uid_of,
};

/// The controller's name in Events.
pub const COMPONENT: &str = "deployment-controller";

/// What a sync asks for: when to look again (the progress deadline), if at all.
type Outcome = Result<Option<Duration>, SyncError>;

/// Runs the Deployment controller until `shutdown` completes; running reconciles finish first.
///
/// # Errors
/// None so far: API errors are retried per Deployment with back-off.
pub async fn run_deployment_controller(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    crate::util::run_together(shutdown, |stop| async move {
        let cfg = watcher::Config::default;
        let (rs, rs_changes) = crate::util::reflect_changes::<ReplicaSet>(&client, cfg());
        let (pods, pod_changes) = crate::util::reflect_changes::<Pod>(&client, cfg());
        let controller = Controller::new(Api::<Deployment>::all(client.clone()), cfg());
        let ctx = Arc::new(Ctx {
            client: client.clone(),
            events: EventSink::spawn(client, COMPONENT.to_owned()),
            deployments: controller.store(),
            rs,
            pods,
            backoff: Backoff::default(),
        });
        let (by_rs, by_pod) = (ctx.clone(), ctx.clone());
        tracing::info!("deployment controller started");
        controller
            .watches_stream(rs_changes, move |rs| by_rs.deployments_of_rs(&rs))
            .watches_stream(pod_changes, move |pod| by_pod.recreate_deployment_of(&pod))
            .graceful_shutdown_on(stop.wait())
            .run(reconcile, error_policy, ctx)
            .for_each(crate::log_reconcile("deployment"))
            .await;
        Ok(())
    })
    .await
}

struct Ctx {
    client: Client,
    events: EventSink,
    deployments: Store<Deployment>,
    rs: Store<ReplicaSet>,
    pods: Store<Pod>,
    backoff: Backoff,
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, SyncError> {
    let pass = async {
        let requeue = ctx.sync(&d).await?;
        Ok(requeue.map_or_else(Action::await_change, Action::requeue))
    };
    ctx.backoff.reconcile(&*d, pass).await
}

/// Every failure backs off per Deployment (see [`crate::backoff`]).
fn error_policy(d: Arc<Deployment>, e: &SyncError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&*d, e)
}

type RsList = Vec<Arc<ReplicaSet>>;

fn active(list: &[Arc<ReplicaSet>]) -> RsList {
    list.iter().filter(|rs| rs_replicas(rs) > 0).cloned().collect()
}

/// Replaces the entry with the same UID (or appends).
fn replace_in(list: &mut RsList, rs: Arc<ReplicaSet>) {
    match list.iter_mut().find(|o| uid_of(&***o) == uid_of(&*rs)) {
        Some(slot) => *slot = rs,
        None => list.push(rs),
    }
}

fn in_namespace<K: kube::Resource<DynamicType = ()> + Clone>(
    store: &Store<K>,
    ns: &str,
) -> Vec<Arc<K>> {
    store.state().into_iter().filter(|o| ns_of(&**o) == ns).collect()
}

impl Ctx {
    /// The Deployments a ReplicaSet change concerns (upstream's ReplicaSet event handlers):
    /// the one that controls it, else those whose selector matches it (an orphan to adopt).
    fn deployments_of_rs(&self, rs: &ReplicaSet) -> Vec<ObjectRef<Deployment>> {
        if let Some(c) = controller_of(rs) {
            return if c.kind == "Deployment" {
                vec![ObjectRef::new(&c.name).within(ns_of(rs))]
            } else {
                Vec::new()
            };
        }
        in_namespace(&self.deployments, ns_of(rs))
            .iter()
            .filter(|d| {
                let sel = d.spec.as_ref().map(|s| &s.selector);
                !selector_is_empty(sel) && matches(&selector_of(sel), rs.metadata.labels.as_ref())
            })
            .map(|d| ObjectRef::from_obj(&**d))
            .collect()
    }

    /// A pod of a Recreate Deployment changed (went away or finished): the Deployment may now
    /// create its new ReplicaSet (upstream `deletePod`).
    fn recreate_deployment_of(&self, pod: &Pod) -> Option<ObjectRef<Deployment>> {
        let rs_ref = controller_of(pod).filter(|c| c.kind == "ReplicaSet")?;
        let rs = self.rs.get(&ObjectRef::new(&rs_ref.name).within(ns_of(pod)))?;
        let d_ref = controller_of(&*rs).filter(|c| c.kind == "Deployment")?;
        let key = ObjectRef::new(&d_ref.name).within(ns_of(pod));
        let d = self.deployments.get(&key)?;
        (uid_of(&*d) == d_ref.uid && strategy_type(&d) == "Recreate").then_some(key)
    }

    #[tracing::instrument(skip_all, fields(deployment = %format!("{}/{}", ns_of(d), name_of(d))))]
    async fn sync(&self, d: &Deployment) -> Outcome {
        // Never wait for the caches inside a reconcile (see `crate::cache_ready`).
        if !(crate::cache_ready(&self.rs) && crate::cache_ready(&self.pods)) {
            return Ok(Some(Duration::from_millis(200)));
        }
        let mut d = d.clone();
        if selector_is_empty(d.spec.as_ref().map(|s| &s.selector)) {
            tracing::warn!("deployment has an empty selector, not syncing it");
            let generation = d.metadata.generation;
            let mut status = d.status.clone().unwrap_or_default();
            if status.observed_generation < generation {
                status.observed_generation = generation;
                self.write_status(&mut d, status).await?;
            }
            return Ok(None);
        }
        let rs_list = self.claim_replicasets(&d).await?;
        if is_deleting(&d) {
            let (new_rs, old) = self.get_all_and_sync_revision(&mut d, &rs_list, false).await?;
            self.sync_deployment_status(&mut d, &old, new_rs.as_deref()).await?;
            return Ok(None);
        }
        self.check_paused_conditions(&mut d).await?;
        if d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
            return self.sync_scale(&mut d, &rs_list).await;
        }
        if self.is_scaling_event(&mut d, &rs_list).await? {
            return self.sync_scale(&mut d, &rs_list).await;
        }
        if strategy_type(&d) == "Recreate" {
            self.rollout_recreate(&mut d, &rs_list).await
        } else {
            self.rollout_rolling(&mut d, &rs_list).await
        }
    }

    /// Upstream `getReplicaSetsForDeployment` with a `ReplicaSetControllerRefManager`.
    async fn claim_replicasets(&self, d: &Deployment) -> Result<RsList, SyncError> {
        let selector = selector_of(d.spec.as_ref().map(|s| &s.selector));
        let uid = uid_of(d);
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns_of(d));
        let mut claimed = Vec::new();
        let mut can_adopt: Option<bool> = None;
        for rs in in_namespace(&self.rs, ns_of(d)) {
            let matches = matches(&selector, rs.metadata.labels.as_ref());
            match controller_of(&*rs) {
                Some(c) if c.uid == uid => {
                    if matches {
                        claimed.push(rs);
                    } else if !is_deleting(d) {
                        let refs: Vec<_> = rs
                            .metadata
                            .owner_references
                            .iter()
                            .flatten()
                            .filter(|r| r.uid != uid)
                            .cloned()
                            .collect();
                        patch_owners(&api, &rs, refs).await?;
                        tracing::info!(replicaset = %name_of(&*rs), "released replicaset");
                    }
                }
                Some(_) => {}
                None => {
                    if !matches || is_deleting(d) || is_deleting(&*rs) {
                        continue;
                    }
                    if can_adopt.is_none() {
                        let fresh = Api::<Deployment>::namespaced(self.client.clone(), ns_of(d))
                            .get_opt(name_of(d))
                            .await
                            .map_err(SyncError::api("rereading the deployment"))?;
                        can_adopt =
                            Some(fresh.is_some_and(|f| uid_of(&f) == uid && !is_deleting(&f)));
                    }
                    if can_adopt == Some(true) {
                        let mut refs = rs.metadata.owner_references.clone().unwrap_or_default();
                        refs.push(controller_ref(d));
                        if let Some(adopted) = patch_owners(&api, &rs, refs).await? {
                            tracing::info!(replicaset = %name_of(&*rs), "adopted replicaset");
                            claimed.push(Arc::new(adopted));
                        }
                    }
                }
            }
        }
        Ok(claimed)
    }

    /// Upstream `getAllReplicaSetsAndSyncRevision`: the new ReplicaSet (created when asked
    /// to) and the old ones.
    async fn get_all_and_sync_revision(
        &self,
        d: &mut Deployment,
        rs_list: &[Arc<ReplicaSet>],
        create: bool,
    ) -> Result<(Option<Arc<ReplicaSet>>, RsList), SyncError> {
        let template = d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
        let mut sorted = rs_list.to_vec();
        sorted.sort_by(|a, b| by_creation(a, b));
        let existing = sorted
            .iter()
            .find(|rs| {
                rs.spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| equal_ignore_hash(t, &template))
            })
            .cloned();
        let old: RsList = sorted
            .iter()
            .filter(|rs| existing.as_ref().is_none_or(|n| uid_of(&***rs) != uid_of(&**n)))
            .cloned()
            .collect();
        let new_revision = max_revision(&old) + 1;
        let min_ready = d.spec.as_ref().and_then(|s| s.min_ready_seconds);
        if let Some(existing) = existing {
            let mut copy = (*existing).clone();
            let annotations_updated = set_new_rs_annotations(d, &mut copy, new_revision, true);
            let spec = copy.spec.get_or_insert_with(Default::default);
            let min_ready_changed = spec.min_ready_seconds.unwrap_or(0) != min_ready.unwrap_or(0);
            if annotations_updated || min_ready_changed {
                spec.min_ready_seconds = min_ready;
                let updated = Api::<ReplicaSet>::namespaced(self.client.clone(), ns_of(d))
                    .replace(name_of(&copy), &PostParams::default(), &copy)
                    .await
                    .map_err(SyncError::api("updating the new replicaset's annotations"))?;
                tracing::debug!(replicaset = %name_of(&updated), "new replicaset annotations synced");
                return Ok((Some(Arc::new(updated)), old));
            }
            let revision = copy
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION))
                .cloned()
                .unwrap_or_default();
            let mut status = d.status.clone().unwrap_or_default();
            let mut needs_update = set_deployment_revision(d, &revision);
            if progress_deadline(d).is_some() && condition(&status, "Progressing").is_none() {
                let msg = format!("Found new replica set \"{}\"", name_of(&copy));
                set_condition(
                    &mut status,
                    new_condition("Progressing", "True", FOUND_NEW_RS_REASON, msg),
                );
                needs_update = true;
            }
            if needs_update {
                self.write_status(d, status).await?;
            }
            return Ok((Some(Arc::new(copy)), old));
        }
        if !create {
            return Ok((None, old));
        }
        // A new ReplicaSet: named after the template hash, with the hash label on its
        // selector, template and pods, so it never selects another revision's pods.
        let collision_count = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = compute_hash(&template, collision_count);
        let mut new_template = template.clone();
        new_template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector = d.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut new_rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", name_of(d))),
                namespace: d.metadata.namespace.clone(),
                owner_references: Some(vec![controller_ref(d)]),
                labels: new_template.metadata.as_ref().and_then(|m| m.labels.clone()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: min_ready,
                selector,
                template: Some(new_template),
            }),
            status: None,
        };
        let mut all = old.clone();
        all.push(Arc::new(new_rs.clone()));
        let new_replicas = new_rs_new_replicas(d, &all, &new_rs);
        if let Some(spec) = new_rs.spec.as_mut() {
            spec.replicas = Some(new_replicas);
        }
        set_new_rs_annotations(d, &mut new_rs, new_revision, false);
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns_of(d));
        let (created, already_existed) = match api.create(&PostParams::default(), &new_rs).await {
            Ok(rs) => (rs, false),
            Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => {
                let current = api
                    .get(name_of(&new_rs))
                    .await
                    .map_err(SyncError::api("reading the existing new replicaset"))?;
                let ours = controller_of(&current).is_some_and(|c| c.uid == uid_of(d));
                let same = current
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| equal_ignore_hash(t, &template));
                if !(ours && same) {
                    // A hash collision: bump collisionCount so the next sync hashes
                    // differently (upstream does the same).
                    let mut status = d.status.clone().unwrap_or_default();
                    let count = status.collision_count.unwrap_or(0) + 1;
                    status.collision_count = Some(count);
                    tracing::warn!(replicaset = %name_of(&new_rs), collision_count = count, "pod-template-hash collision");
                    self.write_status(d, status).await?;
                    return Err(SyncError::Invalid(format!(
                        "replicaset {} exists with another template (hash collision)",
                        name_of(&new_rs)
                    )));
                }
                (current, true)
            }
            Err(e) => {
                let msg = format!("Failed to create new replica set \"{}\": {e}", name_of(&new_rs));
                if progress_deadline(d).is_some() {
                    let mut status = d.status.clone().unwrap_or_default();
                    set_condition(
                        &mut status,
                        new_condition("Progressing", "False", FAILED_RS_CREATE_REASON, msg),
                    );
                    self.write_status(d, status).await?;
                }
                return Err(SyncError::api("creating the new replicaset")(e));
            }
        };
        if !already_existed && new_replicas > 0 {
            let msg =
                format!("Scaled up replica set {} from 0 to {new_replicas}", name_of(&created));
            self.events.send(EventReq::for_object(d, "Normal", "ScalingReplicaSet", msg));
        }
        if !already_existed {
            tracing::info!(
                replicaset = %name_of(&created),
                replicas = new_replicas,
                "Scaled up replica set {} from 0 to {new_replicas}",
                name_of(&created)
            );
        }
        let mut needs_update = set_deployment_revision(d, &new_revision.to_string());
        let mut status = d.status.clone().unwrap_or_default();
        if !already_existed && progress_deadline(d).is_some() {
            let msg = format!("Created new replica set \"{}\"", name_of(&created));
            set_condition(&mut status, new_condition("Progressing", "True", NEW_RS_REASON, msg));
            needs_update = true;
        }
        if needs_update {
            self.write_status(d, status).await?;
        }
        Ok((Some(Arc::new(created)), old))
    }

    /// Writes `status` (and any annotation set on `d` meanwhile, as upstream's `UpdateStatus`
    /// of the whole object does) and keeps `d` current.
    async fn write_status(
        &self,
        d: &mut Deployment,
        status: DeploymentStatus,
    ) -> Result<(), SyncError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns_of(d));
        let wanted_revision =
            d.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).cloned();
        let mut next = d.clone();
        next.status = Some(status);
        let mut written = api
            .replace_status(name_of(d), &PostParams::default(), &next)
            .await
            .map_err(SyncError::api("updating the deployment status"))?;
        let stored_revision =
            written.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).cloned();
        if wanted_revision.is_some() && stored_revision != wanted_revision {
            // Kubernetes keeps metadata changes made through `deployments/status` (its
            // status strategy resets only spec and labels); a server that keeps only
            // `.status` gets the revision annotation with a metadata patch instead.
            let patch = serde_json::json!({"metadata": {
                "annotations": {REVISION: wanted_revision},
                "resourceVersion": written.metadata.resource_version,
            }});
            written = api
                .patch(name_of(d), &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(SyncError::api("setting the deployment revision"))?;
        }
        *d = written;
        Ok(())
    }

    /// Upstream `checkPausedConditions`.
    async fn check_paused_conditions(&self, d: &mut Deployment) -> Result<(), SyncError> {
        if progress_deadline(d).is_none() {
            return Ok(());
        }
        let mut status = d.status.clone().unwrap_or_default();
        let cond = condition(&status, "Progressing");
        if cond.is_some_and(|c| c.reason.as_deref() == Some(TIMED_OUT_REASON)) {
            return Ok(());
        }
        let paused_cond = cond.is_some_and(|c| c.reason.as_deref() == Some(PAUSED_REASON));
        let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        if paused && !paused_cond {
            set_condition(
                &mut status,
                new_condition(
                    "Progressing",
                    "Unknown",
                    PAUSED_REASON,
                    "Deployment is paused".into(),
                ),
            );
        } else if !paused && paused_cond {
            set_condition(
                &mut status,
                new_condition(
                    "Progressing",
                    "Unknown",
                    RESUMED_REASON,
                    "Deployment is resumed".into(),
                ),
            );
        } else {
            return Ok(());
        }
        self.write_status(d, status).await
    }

    /// Upstream `isScalingEvent`.
    async fn is_scaling_event(
        &self,
        d: &mut Deployment,
        rs_list: &[Arc<ReplicaSet>],
    ) -> Result<bool, SyncError> {
        let (new_rs, mut all) = self.get_all_and_sync_revision(d, rs_list, false).await?;
        all.extend(new_rs);
        let want = replicas(d);
        Ok(active(&all).iter().any(|rs| desired_replicas_annotation(rs).is_some_and(|v| v != want)))
    }

    /// Upstream `sync`: scaling while paused or for a scaling event.
    async fn sync_scale(&self, d: &mut Deployment, rs_list: &[Arc<ReplicaSet>]) -> Outcome {
        let (new_rs, old) = self.get_all_and_sync_revision(d, rs_list, false).await?;
        let (new_rs, old) = self.scale(d, new_rs, old).await?;
        if d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
            self.cleanup(d, &old).await?;
        }
        self.sync_deployment_status(d, &old, new_rs.as_deref()).await?;
        Ok(None)
    }

    /// Upstream `scale`: proportional scaling of the active ReplicaSets.
    async fn scale(
        &self,
        d: &Deployment,
        new_rs: Option<Arc<ReplicaSet>>,
        mut old: RsList,
    ) -> Result<(Option<Arc<ReplicaSet>>, RsList), SyncError> {
        let want = replicas(d);
        let mut all = old.clone();
        all.extend(new_rs.clone());
        let mut new_rs = new_rs;
        let put_back =
            |rs: Arc<ReplicaSet>, new_rs: &mut Option<Arc<ReplicaSet>>, old: &mut RsList| {
                if new_rs.as_ref().is_some_and(|n| uid_of(&**n) == uid_of(&*rs)) {
                    *new_rs = Some(rs);
                } else {
                    replace_in(old, rs);
                }
            };
        // One active ReplicaSet (or none: then the newest) gets all the replicas.
        let active_all = active(&all);
        let active_or_latest = match active_all.len() {
            0 => new_rs.clone().or_else(|| {
                let mut o = old.clone();
                o.sort_by(|a, b| by_creation(b, a));
                o.first().cloned()
            }),
            1 => active_all.first().cloned(),
            _ => None,
        };
        if let Some(rs) = active_or_latest {
            if rs_replicas(&rs) != want {
                let (_, rs) = self.scale_and_record(&rs, want, d).await?;
                put_back(rs, &mut new_rs, &mut old);
            }
            return Ok((new_rs, old));
        }
        // A saturated new ReplicaSet: the old ones go to zero.
        if is_saturated(d, new_rs.as_deref()) {
            for rs in active(&old) {
                let (_, rs) = self.scale_and_record(&rs, 0, d).await?;
                put_back(rs, &mut new_rs, &mut old);
            }
            return Ok((new_rs, old));
        }
        if !is_rolling(d) {
            return Ok((new_rs, old));
        }
        let mut all = active_all;
        let current: i32 = all.iter().map(|rs| rs_replicas(rs)).sum();
        let allowed = if want > 0 { want + max_surge(d) } else { 0 };
        let to_add = allowed - current;
        match to_add.cmp(&0) {
            std::cmp::Ordering::Greater => all.sort_by(|a, b| by_size_newer(a, b)),
            std::cmp::Ordering::Less => all.sort_by(|a, b| by_size_older(a, b)),
            std::cmp::Ordering::Equal => {}
        }
        let mut added = 0;
        let mut sizes: Vec<i32> = Vec::with_capacity(all.len());
        for rs in &all {
            if to_add != 0 {
                let p = proportion(rs, d, to_add, added);
                sizes.push(rs_replicas(rs) + p);
                added += p;
            } else {
                sizes.push(rs_replicas(rs));
            }
        }
        if to_add != 0
            && let Some(first) = sizes.first_mut()
        {
            *first = (*first + to_add - added).max(0);
        }
        for (rs, size) in all.iter().zip(sizes) {
            let (_, rs) = self.scale_rs(rs, size, d).await?;
            put_back(rs, &mut new_rs, &mut old);
        }
        Ok((new_rs, old))
    }

    /// Upstream `scaleReplicaSetAndRecordEvent`: nothing to do when the size is right
    /// (the replica annotations are left as they are then).
    async fn scale_and_record(
        &self,
        rs: &ReplicaSet,
        size: i32,
        d: &Deployment,
    ) -> Result<(bool, Arc<ReplicaSet>), SyncError> {
        if rs_replicas(rs) == size {
            return Ok((false, Arc::new(rs.clone())));
        }
        self.scale_rs(rs, size, d).await
    }

    /// Upstream `scaleReplicaSet`: sets `spec.replicas` and the replica annotations.
    async fn scale_rs(
        &self,
        rs: &ReplicaSet,
        size: i32,
        d: &Deployment,
    ) -> Result<(bool, Arc<ReplicaSet>), SyncError> {
        let max = replicas(d) + max_surge(d);
        let size_changed = rs_replicas(rs) != size;
        if !size_changed && !replicas_annotations_need_update(rs, replicas(d), max) {
            return Ok((false, Arc::new(rs.clone())));
        }
        let mut copy = rs.clone();
        if let Some(spec) = copy.spec.as_mut() {
            spec.replicas = Some(size);
        }
        set_replicas_annotations(&mut copy, replicas(d), max);
        let updated = Api::<ReplicaSet>::namespaced(self.client.clone(), ns_of(rs))
            .replace(name_of(rs), &PostParams::default(), &copy)
            .await
            .map_err(SyncError::api(format!("scaling replicaset {}", name_of(rs))))?;
        if size_changed {
            let dir = if size > rs_replicas(rs) { "up" } else { "down" };
            let msg = format!(
                "Scaled {dir} replica set {} from {} to {size}",
                name_of(rs),
                rs_replicas(rs)
            );
            self.events.send(EventReq::for_object(d, "Normal", "ScalingReplicaSet", msg));
            tracing::info!(
                replicaset = %name_of(rs),
                from = rs_replicas(rs),
                to = size,
                "Scaled {dir} replica set {} from {} to {size}",
                name_of(rs),
                rs_replicas(rs)
            );
        }
        Ok((size_changed, Arc::new(updated)))
    }

    /// Upstream `rolloutRolling`.
    async fn rollout_rolling(&self, d: &mut Deployment, rs_list: &[Arc<ReplicaSet>]) -> Outcome {
        let (new_rs, mut old) = self.get_all_and_sync_revision(d, rs_list, true).await?;
        let Some(mut new_rs) = new_rs else {
            return Err(SyncError::Invalid("no new replicaset after creating it".into()));
        };
        let mut all = old.clone();
        all.push(new_rs.clone());
        // Scale up the new ReplicaSet as far as maxSurge allows.
        let want = replicas(d);
        if rs_replicas(&new_rs) != want {
            let target = if rs_replicas(&new_rs) > want {
                want
            } else {
                new_rs_new_replicas(d, &all, &new_rs)
            };
            let (scaled, rs) = self.scale_and_record(&new_rs, target, d).await?;
            new_rs = rs;
            if scaled {
                return self.sync_rollout_status(d, &old, Some(&new_rs)).await;
            }
        }
        // Scale down old ReplicaSets as far as maxUnavailable allows.
        if self.reconcile_old(d, &mut old, &new_rs).await? {
            return self.sync_rollout_status(d, &old, Some(&new_rs)).await;
        }
        if deployment_complete(d, &d.status.clone().unwrap_or_default()) {
            self.cleanup(d, &old).await?;
        }
        self.sync_rollout_status(d, &old, Some(&new_rs)).await
    }

    /// Upstream `reconcileOldReplicaSets`.
    async fn reconcile_old(
        &self,
        d: &Deployment,
        old: &mut RsList,
        new_rs: &Arc<ReplicaSet>,
    ) -> Result<bool, SyncError> {
        let old_pods: i32 = old.iter().map(|rs| rs_replicas(rs)).sum();
        if old_pods == 0 {
            return Ok(false);
        }
        let all_pods = old_pods + rs_replicas(new_rs);
        let min_available = replicas(d) - max_unavailable(d);
        let new_unavailable = rs_replicas(new_rs) - rs_available(new_rs);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        // First the old ReplicaSets' unhealthy replicas: scaling them down costs nothing.
        let mut sorted = active(old);
        sorted.sort_by(|a, b| by_creation(a, b));
        let mut cleaned = 0;
        for rs in &sorted {
            if cleaned >= max_scaled_down {
                break;
            }
            let (spec, avail) = (rs_replicas(rs), rs_available(rs));
            if spec == 0 || spec == avail {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(spec - avail);
            let (_, updated) = self.scale_and_record(rs, spec - down, d).await?;
            replace_in(old, updated);
            cleaned += down;
        }
        // Then available ones, while minAvailable stays available.
        let mut all = old.clone();
        all.push(new_rs.clone());
        let available: i32 = all.iter().map(|rs| rs_available(rs)).sum();
        let mut scaled_down = 0;
        if available > min_available {
            let total = available - min_available;
            let mut sorted = active(old);
            sorted.sort_by(|a, b| by_creation(a, b));
            for rs in &sorted {
                if scaled_down >= total {
                    break;
                }
                let spec = rs_replicas(rs);
                if spec == 0 {
                    continue;
                }
                let down = spec.min(total - scaled_down);
                let (_, updated) = self.scale_and_record(rs, spec - down, d).await?;
                replace_in(old, updated);
                scaled_down += down;
            }
        }
        Ok(cleaned + scaled_down > 0)
    }

    /// Upstream `rolloutRecreate`.
    async fn rollout_recreate(&self, d: &mut Deployment, rs_list: &[Arc<ReplicaSet>]) -> Outcome {
        let (new_rs, mut old) = self.get_all_and_sync_revision(d, rs_list, false).await?;
        let mut scaled = false;
        for rs in active(&old) {
            let (s, updated) = self.scale_and_record(&rs, 0, d).await?;
            scaled |= s;
            replace_in(&mut old, updated);
        }
        if scaled {
            return self.sync_rollout_status(d, &old, new_rs.as_deref()).await;
        }
        if self.old_pods_running(new_rs.as_deref(), &old) {
            return self.sync_rollout_status(d, &old, new_rs.as_deref()).await;
        }
        let (new_rs, old) = match new_rs {
            Some(n) => (n, old),
            None => {
                let (n, o) = self.get_all_and_sync_revision(d, rs_list, true).await?;
                let n = n.ok_or_else(|| {
                    SyncError::Invalid("no new replicaset after creating it".into())
                })?;
                (n, o)
            }
        };
        let (_, new_rs) = self.scale_and_record(&new_rs, replicas(d), d).await?;
        if deployment_complete(d, &d.status.clone().unwrap_or_default()) {
            self.cleanup(d, &old).await?;
        }
        self.sync_rollout_status(d, &old, Some(&new_rs)).await
    }

    /// Upstream `oldPodsRunning`: old ReplicaSets still report pods, or a pod of theirs is
    /// not finished.
    fn old_pods_running(&self, new_rs: Option<&ReplicaSet>, old: &[Arc<ReplicaSet>]) -> bool {
        if old.iter().any(|rs| rs.status.as_ref().is_some_and(|s| s.replicas > 0)) {
            return true;
        }
        let old_uids: Vec<&str> = old.iter().map(|rs| uid_of(&**rs)).collect();
        let ns =
            new_rs.map(ns_of).or_else(|| old.first().map(|rs| ns_of(&**rs))).unwrap_or_default();
        in_namespace(&self.pods, ns).iter().any(|p| {
            controller_of(&**p).is_some_and(|c| old_uids.contains(&c.uid.as_str()))
                && !matches!(crate::apps::pods::phase(p), "Failed" | "Succeeded")
        })
    }

    /// Upstream `cleanupDeployment`: deletes the oldest old ReplicaSets beyond
    /// `revisionHistoryLimit` that have no replicas left and whose status caught up.
    async fn cleanup(&self, d: &Deployment, old: &[Arc<ReplicaSet>]) -> Result<(), SyncError> {
        let Some(limit) = d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut cleanable: RsList = old.iter().filter(|rs| !is_deleting(&***rs)).cloned().collect();
        let excess = i64::try_from(cleanable.len()).unwrap_or(i64::MAX) - i64::from(limit);
        if excess <= 0 {
            return Ok(());
        }
        cleanable.sort_by(|a, b| by_revision(a, b));
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns_of(d));
        for rs in cleanable.iter().take(usize::try_from(excess).unwrap_or(0)) {
            let status = rs.status.clone().unwrap_or_default();
            if status.replicas != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation > status.observed_generation
                || is_deleting(&**rs)
            {
                continue;
            }
            tracing::info!(replicaset = %name_of(&**rs), revision = revision(rs), "deleting old replicaset beyond revisionHistoryLimit");
            match api.delete(name_of(&**rs), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(SyncError::api("deleting an old replicaset")(e)),
            }
        }
        Ok(())
    }

    /// Upstream `syncDeploymentStatus`.
    async fn sync_deployment_status(
        &self,
        d: &mut Deployment,
        old: &[Arc<ReplicaSet>],
        new_rs: Option<&ReplicaSet>,
    ) -> Result<(), SyncError> {
        let mut all = old.to_vec();
        all.extend(new_rs.map(|n| Arc::new(n.clone())));
        let status = calculate_status(&all, new_rs, d);
        if sem_eq(&d.status.clone().unwrap_or_default(), &status, true) {
            return Ok(());
        }
        self.write_status(d, status).await
    }

    /// Upstream `syncRolloutStatus`, with `requeueStuckDeployment` as its result.
    async fn sync_rollout_status(
        &self,
        d: &mut Deployment,
        old: &[Arc<ReplicaSet>],
        new_rs: Option<&ReplicaSet>,
    ) -> Outcome {
        let mut all = old.to_vec();
        all.extend(new_rs.map(|n| Arc::new(n.clone())));
        let mut status = calculate_status(&all, new_rs, d);
        let now_ts = Timestamp::now();
        let deadline = progress_deadline(d);
        if deadline.is_none() {
            remove_condition(&mut status, "Progressing");
        }
        let current = d.status.as_ref().and_then(|s| condition(s, "Progressing")).cloned();
        let complete_before = status.replicas == status.updated_replicas
            && current
                .as_ref()
                .is_some_and(|c| c.reason.as_deref() == Some(NEW_RS_AVAILABLE_REASON));
        let rs_name = new_rs.map(|n| name_of(n).to_owned());
        if deadline.is_some() && !complete_before {
            if deployment_complete(d, &status) {
                let msg = match &rs_name {
                    Some(n) => format!("ReplicaSet \"{n}\" has successfully progressed."),
                    None => format!("Deployment \"{}\" has successfully progressed.", name_of(d)),
                };
                set_condition(
                    &mut status,
                    new_condition("Progressing", "True", NEW_RS_AVAILABLE_REASON, msg),
                );
            } else if deployment_progressing(d, &status) {
                let msg = match &rs_name {
                    Some(n) => format!("ReplicaSet \"{n}\" is progressing."),
                    None => format!("Deployment \"{}\" is progressing.", name_of(d)),
                };
                let mut c = new_condition("Progressing", "True", RS_UPDATED_REASON, msg);
                if let Some(cur) = &current {
                    if cur.status == "True" {
                        c.last_transition_time = cur.last_transition_time.clone();
                    }
                    remove_condition(&mut status, "Progressing");
                }
                set_condition(&mut status, c);
            } else if deployment_timed_out(d, &status, now_ts) {
                let msg = match &rs_name {
                    Some(n) => format!("ReplicaSet \"{n}\" has timed out progressing."),
                    None => format!("Deployment \"{}\" has timed out progressing.", name_of(d)),
                };
                tracing::info!(
                    deadline_seconds = deadline,
                    "deployment progress deadline exceeded"
                );
                set_condition(
                    &mut status,
                    new_condition("Progressing", "False", TIMED_OUT_REASON, msg),
                );
            }
        }
        match replica_failure(&all, new_rs) {
            Some(c) => set_condition(&mut status, c),
            None => remove_condition(&mut status, "ReplicaFailure"),
        }
        if sem_eq(&d.status.clone().unwrap_or_default(), &status, true) {
            return Ok(requeue_stuck(d, &status, now_ts));
        }
        // The write comes back through the watch and that sync decides about requeueing.
        self.write_status(d, status).await?;
        Ok(None)
    }
}

/// `SetDeploymentRevision`.
fn set_deployment_revision(d: &mut Deployment, revision: &str) -> bool {
    let ann = d.metadata.annotations.get_or_insert_with(Default::default);
    if ann.get(REVISION).map(String::as_str) == Some(revision) {
        return false;
    }
    ann.insert(REVISION.into(), revision.to_owned());
    true
}

/// Upstream `getReplicaFailures`: the new ReplicaSet's failure first, else any old one's.
fn replica_failure(
    all: &[Arc<ReplicaSet>],
    new_rs: Option<&ReplicaSet>,
) -> Option<DeploymentCondition> {
    let failure = |rs: &ReplicaSet| {
        rs.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "ReplicaFailure").map(
            |c| DeploymentCondition {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_update_time: c.last_transition_time.clone(),
                last_transition_time: c.last_transition_time.clone(),
            },
        )
    };
    new_rs.and_then(failure).or_else(|| all.iter().find_map(|rs| failure(rs)))
}

/// Upstream `requeueStuckDeployment`: when the progress deadline will pass, if no progress
/// is reported before.
fn requeue_stuck(
    d: &Deployment,
    new_status: &DeploymentStatus,
    now_ts: Timestamp,
) -> Option<Duration> {
    let deadline = progress_deadline(d)?;
    let cur = d.status.as_ref().and_then(|s| condition(s, "Progressing"))?;
    if deployment_complete(d, new_status) || cur.reason.as_deref() == Some(TIMED_OUT_REASON) {
        return None;
    }
    let from = cur.last_update_time.as_ref()?.0;
    let at = from + k8s_openapi::jiff::SignedDuration::from_secs(i64::from(deadline));
    let after = Duration::try_from(at.duration_since(now_ts)).unwrap_or(Duration::ZERO);
    if after < Duration::from_secs(1) {
        return Some(Duration::from_millis(10));
    }
    Some(after + Duration::from_secs(1))
}

/// Sets a ReplicaSet's ownerReferences, if it is unchanged since it was read.
async fn patch_owners(
    api: &Api<ReplicaSet>,
    rs: &ReplicaSet,
    refs: Vec<OwnerReference>,
) -> Result<Option<ReplicaSet>, SyncError> {
    let patch = serde_json::json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": rs.metadata.resource_version,
    }});
    match api.patch(name_of(rs), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(rs) => Ok(Some(rs)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(SyncError::api("patching replicaset owners")(e)),
    }
}
