//! The UnitedDeployment controller: OpenKruise's `apps.kruise.io/v1alpha1` UnitedDeployment,
//! reconciled as upstream's `pkg/controller/uniteddeployment` does it, with its decisions taken
//! by `kinetic_rollout::united` (pure functions) and the subset workloads built by [`subset`].
//!
//! One reconcile, in upstream's order:
//! 1. find or create the ControllerRevision of `spec.template` (`{ud}-{hash}`, data
//!    `{"spec":{"template":{..,"$patch":"replace"}}}`), trim the history to
//!    `revisionHistoryLimit` ([`revision`]);
//! 2. find the subset workloads this UnitedDeployment controls (by controller reference), of
//!    the template's kind, by their `apps.kruise.io/subset-name` label; a second workload of one
//!    subset, and workloads of another kind (the template's kind changed), are deleted;
//! 3. with the Adaptive strategy, mark subsets whose pods failed to schedule for longer than
//!    `rescheduleCriticalSeconds` unschedulable (the `Schedulable` condition in
//!    `status.subsetStatuses`) for `unschedulableLastSeconds`;
//! 4. allocate the replicas and partitions, create the missing subsets, delete the ones no
//!    longer in the topology, and update those whose revision, replicas, partition or patch
//!    differ;
//! 5. write the status: counts from the workloads and their pods, `subsetReplicas`,
//!    `updateStatus`, `currentRevision` (moves once every pod is updated and ready), the
//!    conditions.
//!
//! Subset workloads are reached as dynamic objects, so CloneSet, Deployment and the
//! StatefulSets share one code path; only [`WATCHED`] kinds are watched. The two StatefulSet
//! kinds share a kind name and plural (`StatefulSet`, `statefulsets`) but not a group, so each
//! has its own cache and API path: a UnitedDeployment whose template moves between
//! `statefulSetTemplate` and `advancedStatefulSetTemplate` deletes the other group's
//! workloads like any other change of kind.

mod revision;
mod status;
pub mod subset;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kinetic_api::kruise::uniteddeployment::{SubsetKind, UnitedDeployment, condition};
use kinetic_rollout::united::{self, AdaptiveVerdict, Schedulable, SubsetState};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource as _, ResourceExt as _};
use serde_json::Value;

use crate::backoff::Backoff;
use crate::events::{EventReq, EventSink};
use crate::expectations::{Expectations, Seen};

/// The controller's name in Events.
pub const COMPONENT: &str = "uniteddeployment-controller";

/// The subset kinds watched (their workloads trigger a reconcile of their UnitedDeployment):
/// all four of upstream's (`apps/v1` StatefulSet, the Advanced StatefulSet of
/// `apps.kruise.io/v1beta1`, CloneSet and Deployment), in its order of precedence.
pub const WATCHED: [SubsetKind; 4] = SubsetKind::ALL;

/// What one reconcile shares with the others.
pub struct Ctx {
    client: Client,
    pods: Store<Pod>,
    revisions: Store<ControllerRevision>,
    workloads: Vec<(SubsetKind, ApiResource, Store<DynamicObject>)>,
    exp: Expectations,
    events: EventSink,
    backoff: Backoff,
}

/// The CustomResourceDefinitions this controller serves (for [`crate::crds::install`]).
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt as _;
    vec![UnitedDeployment::crd()]
}

/// A reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("API request failed")]
    Kube(#[from] kube::Error),
    #[error("building a subset workload")]
    Build(#[from] subset::BuildError),
    #[error("allocating subset replicas")]
    Alloc(#[from] united::AllocError),
    #[error("encoding an object")]
    Json(#[from] serde_json::Error),
    #[error("subset {kind} kind is not watched by this controller")]
    Unwatched { kind: &'static str },
}

fn api_resource(kind: SubsetKind) -> ApiResource {
    let (api_version, kind_name, plural) = kind.gvk();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind_name), plural)
}

/// Runs the UnitedDeployment controller until `shutdown` resolves.
///
/// # Errors
/// None so far: API errors are retried per UnitedDeployment with back-off.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> crate::Result<()> {
    let (pod_reader, pod_writer) = reflector::store();
    let pods = reflector::reflector(
        pod_writer,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects()
    .for_each(|_| std::future::ready(()));
    let (rev_reader, rev_writer) = reflector::store();
    let revs = reflector::reflector(
        rev_writer,
        watcher(Api::<ControllerRevision>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    let mut controller =
        Controller::new(Api::<UnitedDeployment>::all(client.clone()), watcher::Config::default())
            .owns_stream(revs);
    let mut workloads = Vec::new();
    for kind in WATCHED {
        let ar = api_resource(kind);
        let writer = reflector::store::Writer::<DynamicObject>::new(ar.clone());
        let reader = writer.as_reader();
        let stream = reflector::reflector(
            writer,
            watcher(
                Api::<DynamicObject>::all_with(client.clone(), &ar),
                watcher::Config::default(),
            ),
        )
        .default_backoff()
        .touched_objects();
        controller = controller.owns_stream_with(stream, ar.clone());
        workloads.push((kind, ar, reader));
    }
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods: pod_reader,
        revisions: rev_reader,
        workloads,
        exp: Expectations::default(),
        events: EventSink::spawn(client, COMPONENT.to_owned()),
        backoff: Backoff::default(),
    });
    let main = controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(crate::log_reconcile("uniteddeployment"));
    // The pod cache is read, never a trigger: it ends with the controller.
    tokio::select! {
        () = main => {}
        () = pods => {}
    }
    Ok(())
}

fn error_policy(ud: Arc<UnitedDeployment>, e: &ReconcileError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&*ud, e)
}

fn key(ud: &UnitedDeployment) -> String {
    format!("{}/{}", ud.namespace().unwrap_or_default(), ud.name_any())
}

fn owner_ref(ud: &UnitedDeployment) -> OwnerReference {
    OwnerReference {
        api_version: UnitedDeployment::api_version(&()).into_owned(),
        kind: UnitedDeployment::kind(&()).into_owned(),
        name: ud.name_any(),
        uid: ud.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

async fn reconcile(ud: Arc<UnitedDeployment>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let obj = ud.clone();
    ctx.backoff.reconcile(&*obj, reconcile_pass(ud, ctx.clone())).await
}

/// One existing subset workload.
pub(crate) struct Existing {
    kind: SubsetKind,
    obj: Arc<DynamicObject>,
    observed: subset::Observed,
    pods: Vec<Arc<Pod>>,
}

fn dyn_api(ctx: &Ctx, ns: &str, kind: SubsetKind) -> Option<Api<DynamicObject>> {
    let (_, ar, _) = ctx.workloads.iter().find(|(k, _, _)| *k == kind)?;
    Some(Api::namespaced_with(ctx.client.clone(), ns, ar))
}

async fn reconcile_pass(
    ud: Arc<UnitedDeployment>,
    ctx: Arc<Ctx>,
) -> Result<Action, ReconcileError> {
    let owner = key(&ud);
    if ud.meta().deletion_timestamp.is_some() {
        ctx.exp.forget(&owner);
        return Ok(Action::await_change());
    }
    if !(crate::cache_ready(&ctx.pods)
        && crate::cache_ready(&ctx.revisions)
        && ctx.workloads.iter().all(|(_, _, s)| crate::cache_ready(s)))
    {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    // Kruise's webhook rules, which nothing enforces on a real cluster: an invalid
    // UnitedDeployment is left alone, with a Warning Event saying why.
    let problems = united::validation::validate(&serde_json::to_value(&*ud)?);
    let Some((kind, _)) = ud.spec.template.get().filter(|_| problems.is_empty()) else {
        let why: Vec<String> =
            problems.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        ctx.events.send(EventReq::for_object(&*ud, "Warning", "InvalidSpec", why.join("; ")));
        return Ok(Action::await_change());
    };
    if !WATCHED.contains(&kind) {
        // Not an error to retry: nothing changes until the template does.
        ctx.events.send(EventReq::for_object(
            &*ud,
            "Warning",
            "FailedFindSubsets",
            format!("{} subsets are not supported yet", kind.field()),
        ));
        return Ok(Action::await_change());
    }
    let ns = ud.namespace().unwrap_or_default();
    let uid = ud.uid().unwrap_or_default();
    let now = Timestamp::now();

    // Everything this UnitedDeployment controls, of every watched kind.
    let mut mine: Vec<(SubsetKind, Arc<DynamicObject>)> = Vec::new();
    for (k, _, store) in &ctx.workloads {
        for o in store.state() {
            let controlled = o.namespace().as_deref() == Some(ns.as_str())
                && o.owner_references().iter().any(|r| r.controller == Some(true) && r.uid == uid);
            if controlled {
                mine.push((*k, o));
            }
        }
    }
    let seen = mine.iter().map(|(_, o)| Seen {
        name: o.metadata.name.as_deref().unwrap_or_default(),
        uid: o.metadata.uid.as_deref().unwrap_or_default(),
        resource_version: o.metadata.resource_version.as_deref().unwrap_or_default(),
        terminating: o.metadata.deletion_timestamp.is_some(),
    });
    if !ctx.exp.satisfied(&owner, seen) {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }

    let revs = revision::sync(&ctx, &ud).await?;
    let update_rev = revs.update.name_any();

    // Other kinds' workloads go (the template's kind changed); one workload per subset.
    let mut cleaned = false;
    let mut by_subset: BTreeMap<String, Vec<Existing>> = BTreeMap::new();
    mine.sort_by(|a, b| {
        let t = |o: &DynamicObject| o.metadata.creation_timestamp.clone().map(|t| t.0);
        t(&a.1).cmp(&t(&b.1)).then_with(|| a.1.name_any().cmp(&b.1.name_any()))
    });
    for (k, o) in mine {
        if o.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let value = serde_json::to_value(&*o)?;
        let observed = subset::observe(k, &value);
        if k != kind {
            delete_workload(&ctx, &owner, &ns, k, &o).await?;
            cleaned = true;
            continue;
        }
        if observed.subset.is_empty() {
            continue;
        }
        let pods = pods_of(&ctx, &ns, &value);
        by_subset.entry(observed.subset.clone()).or_default().push(Existing {
            kind: k,
            obj: o,
            observed,
            pods,
        });
    }
    let mut existing: BTreeMap<String, Existing> = BTreeMap::new();
    for (name, mut list) in by_subset {
        let first = list.remove(0);
        for dup in list {
            tracing::info!(ud = %owner, subset = %name, workload = %dup.obj.name_any(), "deleting a duplicated subset workload");
            delete_workload(&ctx, &owner, &ns, dup.kind, &dup.obj).await?;
        }
        existing.insert(name, first);
    }

    // Adaptive: which subsets cannot schedule their pods.
    let strategy = &ud.spec.topology.schedule_strategy;
    let old_status = ud.status.clone().unwrap_or_default();
    let mut conditions = status::subset_conditions(&old_status);
    let mut requeue: Option<Duration> = None;
    let mut states: BTreeMap<String, SubsetState> = BTreeMap::new();
    for (name, e) in &existing {
        let mut st = SubsetState {
            spec_replicas: e.observed.spec_replicas,
            status_replicas: e.observed.status_replicas,
            ..SubsetState::default()
        };
        if strategy.is_adaptive() {
            let pods: Vec<&Pod> = e.pods.iter().map(|p| &**p).collect();
            let AdaptiveVerdict { unschedulable, pending_pods, condition, requeue: again } =
                united::adaptive_subset(
                    conditions.get(name),
                    e.observed.ready_replicas,
                    e.observed.status_replicas,
                    &pods,
                    strategy,
                    now,
                );
            st.unschedulable = unschedulable;
            st.pending_pods = pending_pods;
            if let Some(c) = condition {
                conditions.insert(name.clone(), c);
            }
            requeue = sooner(requeue, again);
        }
        states.insert(name.clone(), st);
    }

    let next = match united::allocate(&ud.spec, &states) {
        Ok(n) => n,
        Err(e) => {
            ctx.events.send(EventReq::for_object(
                &*ud,
                "Warning",
                "Failed SpecifySubsetReplicas",
                format!("Specified subset replicas is ineffective: {e}"),
            ));
            return Err(e.into());
        }
    };
    let partitions = united::next_partitions(&ud.spec, &next);

    // Provision: create the missing subsets, delete the ones no longer wanted.
    let api = dyn_api(&ctx, &ns, kind).ok_or(ReconcileError::Unwatched { kind: kind.gvk().1 })?;
    let oref = owner_ref(&ud);
    let mut provision_err: Option<String> = None;
    let mut created = 0;
    let mut scaled_up = false;
    for s in &ud.spec.topology.subsets {
        if existing.contains_key(&s.name) {
            continue;
        }
        let replicas = next.get(&s.name).copied().unwrap_or(0);
        let partition = partitions.get(&s.name).copied().unwrap_or(0);
        let body = subset::build(&ud, &oref, &s.name, &update_rev, replicas, partition, None)?;
        let obj: DynamicObject = serde_json::from_value(body)?;
        match api.create(&PostParams::default(), &obj).await {
            Ok(made) => {
                ctx.exp.expect_create(&owner, &made.name_any());
                created += 1;
                scaled_up |= replicas > 0;
            }
            Err(e) => {
                provision_err = Some(format!(
                    "fail to create Subset ({}) {}: {}",
                    kind.gvk().1,
                    s.name,
                    crate::report(&e)
                ));
                break;
            }
        }
    }
    if created > 0 {
        ctx.events.send(EventReq::for_object(
            &*ud,
            "Normal",
            "SuccessfulUpdateSubset",
            format!("Create {created} Subset ({})", kind.gvk().1),
        ));
    }
    let wanted: Vec<&str> = ud.spec.topology.subsets.iter().map(|s| s.name.as_str()).collect();
    let mut deleted = 0;
    for (name, e) in &existing {
        if !wanted.contains(&name.as_str()) {
            delete_workload(&ctx, &owner, &ns, e.kind, &e.obj).await?;
            deleted += 1;
        }
    }
    if deleted > 0 {
        ctx.events.send(EventReq::for_object(
            &*ud,
            "Normal",
            "SuccessfulUpdateSubset",
            format!("Delete {deleted} Subset ({})", kind.gvk().1),
        ));
    }

    // Update the subsets whose revision, replicas, partition or patch differ.
    let mut update_err: Option<String> = None;
    for s in &ud.spec.topology.subsets {
        let Some(e) = existing.get(&s.name) else { continue };
        let replicas = next.get(&s.name).copied().unwrap_or(0);
        let partition = partitions.get(&s.name).copied().unwrap_or(0);
        let patch = subset::patch_string(s);
        let Some(why) = subset::needs_update(&e.observed, &update_rev, replicas, partition, &patch)
        else {
            continue;
        };
        tracing::info!(ud = %owner, subset = %s.name, why, replicas, partition, "updating a subset");
        let build = |base: Value| -> Result<DynamicObject, ReconcileError> {
            let body =
                subset::build(&ud, &oref, &s.name, &update_rev, replicas, partition, Some(base))?;
            Ok(serde_json::from_value(body)?)
        };
        match update_subset(&api, &e.obj, build).await? {
            Ok(done) => {
                ctx.exp.expect_update(
                    &owner,
                    &done.name_any(),
                    done.metadata.resource_version.as_deref().unwrap_or_default(),
                );
                scaled_up |= replicas > e.observed.spec_replicas;
            }
            Err(err) => {
                let msg = format!(
                    "Error updating PodSet ({}) {} when updating: {}",
                    kind.gvk().1,
                    e.obj.name_any(),
                    crate::report(&err)
                );
                ctx.events.send(EventReq::for_object(
                    &*ud,
                    "Warning",
                    "FailedUpdateSubset",
                    msg.clone(),
                ));
                update_err = Some(msg);
                break;
            }
        }
    }
    if strategy.is_adaptive() && (created > 0 || scaled_up) {
        // New pods may fail to schedule: look again once they could have timed out.
        let critical = u64::try_from(strategy.reschedule_critical_seconds()).unwrap_or(0);
        requeue = sooner(requeue, Some(Duration::from_secs(critical)));
    }

    let provisioned = created > 0 || deleted > 0 || cleaned;
    if status::pods_lag_workloads(existing.values()) {
        requeue = sooner(requeue, Some(Duration::from_millis(500)));
    }
    let st = status::compute(status::Input {
        ud: &ud,
        existing: &existing,
        next: &next,
        partitions: &partitions,
        current_revision: &revs.current.name_any(),
        update_revision: &update_rev,
        collision_count: revs.collision_count,
        provisioned,
        provision_err: provision_err.as_deref(),
        update_err: update_err.as_deref(),
        subset_conditions: &conditions,
        now,
    });
    status::write(&ctx, &ud, st).await?;
    revision::truncate(&ctx, &ud, &revs).await?;
    if let Some(e) = provision_err.or(update_err) {
        tracing::warn!(ud = %owner, error = %e, "subsets not reconciled");
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    if created > 0 || deleted > 0 || cleaned {
        requeue = sooner(requeue, Some(Duration::from_secs(5)));
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The pods the workload's selector selects in its namespace (their owners are the
/// workload's own business).
fn pods_of(ctx: &Ctx, ns: &str, workload: &Value) -> Vec<Arc<Pod>> {
    let selector = workload
        .pointer("/spec/selector")
        .and_then(|s| kinetic_machinery::selector::LabelSelector::from_label_selector(s).ok());
    let Some(selector) = selector.filter(|s| !s.is_empty()) else { return Vec::new() };
    ctx.pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
        .filter(|p| {
            let labels: Option<serde_json::Map<String, Value>> =
                p.metadata.labels.as_ref().map(|l| {
                    l.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect()
                });
            selector.matches(labels.as_ref())
        })
        .collect()
}

/// Upstream's `UpdateSubset`: builds onto the workload and updates it, up to 5 times, reading
/// it again after a conflict (the workload's own controller writes it too). The outer error
/// is a failure to build or read; the inner one the last update's.
async fn update_subset(
    api: &Api<DynamicObject>,
    cached: &DynamicObject,
    build: impl Fn(Value) -> Result<DynamicObject, ReconcileError>,
) -> Result<Result<DynamicObject, kube::Error>, ReconcileError> {
    let name = cached.name_any();
    let mut base = serde_json::to_value(cached)?;
    let mut attempt = 0;
    loop {
        let result = api.replace(&name, &PostParams::default(), &build(base)?).await;
        attempt += 1;
        match result {
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < 5 => {
                base = serde_json::to_value(api.get(&name).await?)?;
            }
            other => return Ok(other),
        }
    }
}

async fn delete_workload(
    ctx: &Ctx,
    owner: &str,
    ns: &str,
    kind: SubsetKind,
    obj: &DynamicObject,
) -> Result<(), ReconcileError> {
    let Some(api) = dyn_api(ctx, ns, kind) else { return Ok(()) };
    let uid = obj.uid().unwrap_or_default();
    ctx.exp.expect_delete(owner, &uid);
    match api.delete(&obj.name_any(), &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => {
            ctx.exp.delete_failed(owner, &uid);
            Err(e.into())
        }
    }
}

/// The `Schedulable` condition kept per subset, as [`Schedulable`].
pub(crate) fn schedulable_of(
    c: &kinetic_api::kruise::uniteddeployment::UnitedDeploymentCondition,
) -> Option<Schedulable> {
    if c.type_ != condition::SCHEDULABLE {
        return None;
    }
    let reason = match c.reason.as_deref() {
        Some("recover") => "recover",
        Some("reschedule") => "reschedule",
        _ => "",
    };
    Some(Schedulable {
        status: c.status == "True",
        reason,
        message: c.message.clone().unwrap_or_default(),
        since: c.last_transition_time.as_ref().map_or(Timestamp::UNIX_EPOCH, |t| t.0),
    })
}
