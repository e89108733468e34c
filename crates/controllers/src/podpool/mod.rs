//! The PodPool controller (issue 12 parts 1 and 2): keeps a learned number of ready, generic
//! pods for consumers to claim ([`claim::claim`]) instead of creating pods.
//!
//! One reconcile of a pool:
//! 1. refuse an invalid spec (`minReady > maxReady`, no containers) with `Ready=False
//!    InvalidSpec` and a Warning Event (the schema cannot say it without CEL);
//! 2. wait until the pod cache shows the controller's own creates and deletes (expectations);
//! 3. delete claimed pods not specialised within `specializationTimeoutSeconds` (Warning Event
//!    `SpecializationTimeout` on the pool and the pod), with the pod's uid and resourceVersion
//!    as preconditions so a pod specialised at that moment is kept, and at once those the node
//!    agent labelled `failed` (Warning Event `SpecializationFailed`);
//! 4. replace unclaimed pods of an older template and failed ones;
//! 5. learn the size ([`sizing::size`]) from the claim history and the start-up durations of
//!    the pool's pods (their `kinetic.dev/timeline`, else creation to the Ready condition);
//! 6. create (once no claim is being specialised, [`refill`]) or delete unclaimed pods to hold
//!    that many, and write the status.
//!
//! Refill is watch-driven: pods are watched by the `kinetic.dev/pool` label and mapped to their
//! pool by it, so a claim (which moves the pod's ownerReference away from the pool) triggers
//! the pool's reconcile at once. The claim history lives in the status (bounded), so a new
//! controller continues it; claims are also collected from the watch events as they pass, so a
//! pod claimed and deleted between two reconciles is still counted. The replacements wait
//! while a pod just claimed is being specialised (at most [`refill::HOLD`]), so they do not
//! compete with the claimant's start ([`refill`]).
//!
//! Specialisation by image is the node agent's ([`claim_for_image`] asks for it). Not here yet
//! (later sessions of issue 12): specialisation by code (part 3), the Knative revision and
//! CloneSet consumers (parts 4–5), agent-sandbox's API (part 6).
//! Pool pods get no PriorityClass of their own: a pod's priority cannot change after creation,
//! and a claimed pod becomes a serving pod that must not stay preemptible; they carry a
//! negative `controller.kubernetes.io/pod-deletion-cost` instead, and a template may name a
//! low PriorityClass.

pub mod claim;
pub mod refill;
pub mod sizing;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, OwnerReference, Time};
use kinetic_api::pool::{
    CLAIMED_AT_ANNOTATION, CREATED_CLAIMED_ANNOTATION, ClaimRecord, MAX_CLAIM_HISTORY,
    MAX_STARTUP_HISTORY, POD_DELETION_COST_ANNOTATION, POOL_LABEL, POOL_POD_DELETION_COST,
    POOL_STATE_LABEL, PodPool, PodPoolStatus, StartupRecord, TEMPLATE_HASH_LABEL, condition,
    reason, state,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource as _, ResourceExt as _};
use serde_json::json;

use self::claim::is_ready;
pub use self::claim::{
    ClaimError, ClaimMeta, claim, claim_among, claim_for, claim_for_code, claim_for_image,
    claim_for_with, create_claimed, created_claimed, mark_specialized,
};
use crate::backoff::Backoff;
use crate::events::{EventReq, EventSink};
use crate::expectations::{Expectations, Seen};

/// The controller's name in Events.
pub const COMPONENT: &str = "podpool-controller";

/// The CustomResourceDefinitions this controller serves (for [`crate::crds::install`]).
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt as _;
    vec![PodPool::crd()]
}

/// A reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("API request failed")]
    Kube(#[from] kube::Error),
    #[error("encoding a pool pod")]
    Json(#[from] serde_json::Error),
}

/// What one reconcile shares with the others.
pub struct Ctx {
    client: Client,
    pods: Store<Pod>,
    exp: Expectations,
    events: EventSink,
    backoff: Backoff,
    /// Claims seen in watch events, per pool key, until a status write keeps them.
    seen_claims: Mutex<HashMap<String, BTreeMap<String, Timestamp>>>,
}

fn key_of(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

fn key(pool: &PodPool) -> String {
    key_of(&pool.namespace().unwrap_or_default(), &pool.name_any())
}

fn label<'a>(p: &'a Pod, k: &str) -> Option<&'a str> {
    p.metadata.labels.as_ref()?.get(k).map(String::as_str)
}

fn claimed_at(p: &Pod) -> Option<Timestamp> {
    p.metadata.annotations.as_ref()?.get(CLAIMED_AT_ANNOTATION)?.parse().ok()
}

/// From when a claimed pod's specialisation timeout runs: its claim; for a pod a consumer of
/// an empty code pool created claimed (`kinetic_api::pool::CREATED_CLAIMED_ANNOTATION`), the
/// later of the claim and its runtime's Ready, and `None` (no timeout) while its runtime is
/// still starting: such a pod first starts like any created pod, and a controller does not
/// delete a created pod for being slow to become ready (a ReplicaSet's or a CloneSet's pod
/// stays `ContainerCreating` or not ready as long as it takes).
fn timeout_from(p: &Pod, now: Timestamp) -> Option<Timestamp> {
    let at = claimed_at(p).unwrap_or(now);
    let created = p.annotations().get(CREATED_CLAIMED_ANNOTATION).is_some_and(|v| v == "true");
    if !created {
        return Some(at);
    }
    let ready = p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?;
    if ready.status != "True" {
        return None;
    }
    let since = ready.last_transition_time.as_ref().map_or(at, |t| t.0);
    Some(at.max(since))
}

/// Runs the PodPool controller until `shutdown` resolves.
///
/// # Errors
/// None so far: API errors are retried per pool with back-off.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> crate::Result<()> {
    let (reader, writer) = reflector::store();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods: reader,
        exp: Expectations::default(),
        events: EventSink::spawn(client.clone(), COMPONENT.to_owned()),
        backoff: Backoff::default(),
        seen_claims: Mutex::new(HashMap::new()),
    });
    let recorder = ctx.clone();
    let pods = reflector::reflector(
        writer,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default().labels(POOL_LABEL)),
    )
    .default_backoff()
    .touched_objects()
    .inspect(move |p| {
        if let Ok(p) = p {
            record_claim(&recorder, p);
        }
    });
    Controller::new(Api::<PodPool>::all(client), watcher::Config::default())
        .watches_stream(pods, |p: Pod| {
            let ns = p.namespace();
            label(&p, POOL_LABEL)
                .map(|name| ObjectRef::<PodPool>::new(name).within(&ns.unwrap_or_default()))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(crate::log_reconcile("podpool"))
        .await;
    Ok(())
}

fn record_claim(ctx: &Ctx, p: &Pod) {
    let (Some(pool), Some(at)) = (label(p, POOL_LABEL), claimed_at(p)) else { return };
    let k = key_of(&p.namespace().unwrap_or_default(), pool);
    if let Ok(mut m) = ctx.seen_claims.lock() {
        m.entry(k).or_default().insert(p.name_any(), at);
    }
}

fn error_policy(pool: Arc<PodPool>, e: &ReconcileError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&*pool, e)
}

async fn reconcile(pool: Arc<PodPool>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let obj = pool.clone();
    ctx.backoff.reconcile(&*obj, reconcile_pass(pool, ctx.clone())).await
}

/// What is wrong with the spec, or `None`.
pub fn problems(pool: &PodPool) -> Option<String> {
    let s = &pool.spec;
    let mut out = Vec::new();
    if s.min_ready > s.max_ready {
        out.push(format!(
            "spec.minReady: Invalid value: {}: must be less than or equal to spec.maxReady ({})",
            s.min_ready, s.max_ready
        ));
    }
    if s.template.spec.as_ref().is_none_or(|p| p.containers.is_empty()) {
        out.push("spec.template.spec.containers: Required value".to_owned());
    }
    if let Some(code) = &s.code
        && let Err(e) = code.mount_path(&s.template)
    {
        out.push(e.to_string());
    }
    (!out.is_empty()).then(|| out.join("; "))
}

/// A hash of the template, so pods of an older one are recognised.
fn template_hash(pool: &PodPool) -> String {
    let s = serde_json::to_string(&pool.spec.template).unwrap_or_default();
    let h = s
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("{:x}", h & 0xffff_ffff)
}

fn owner_ref(pool: &PodPool) -> OwnerReference {
    OwnerReference {
        api_version: PodPool::api_version(&()).into_owned(),
        kind: PodPool::kind(&()).into_owned(),
        name: pool.name_any(),
        uid: pool.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A new pool pod from the template.
fn new_pod(pool: &PodPool, hash: &str) -> Pod {
    let mut meta = pool.spec.template.metadata.clone().unwrap_or_default();
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POOL_LABEL.to_owned(), pool.name_any());
    labels.insert(POOL_STATE_LABEL.to_owned(), state::READY.to_owned());
    labels.insert(TEMPLATE_HASH_LABEL.to_owned(), hash.to_owned());
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_DELETION_COST_ANNOTATION.to_owned(), POOL_POD_DELETION_COST.to_owned());
    meta.name = None;
    meta.generate_name = Some(format!("{}-", pool.name_any()));
    meta.namespace = pool.namespace();
    meta.owner_references = Some(vec![owner_ref(pool)]);
    Pod { metadata: meta, spec: pool.spec.template.spec.clone(), status: None }
}

/// Why the node agent could not specialise `p`, from its timeline.
fn specialization_failure(p: &Pod) -> String {
    p.annotations()
        .get(kinetic_api::timeline::ANNOTATION)
        .and_then(|s| serde_json::from_str::<kinetic_api::timeline::Timeline>(s).ok())
        .and_then(|t| t.specialization?.failed)
        .unwrap_or_else(|| "no reason recorded".to_owned())
}

fn is_terminal(p: &Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Failed" | "Succeeded"))
}

async fn delete_pod(ctx: &Ctx, owner: &str, p: &Pod) -> Result<bool, ReconcileError> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
    let uid = p.uid().unwrap_or_default();
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.clone()),
            resource_version: p.resource_version(),
        }),
        ..DeleteParams::default()
    };
    ctx.exp.expect_delete(owner, &uid);
    match api.delete(&p.name_any(), &dp).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
            ctx.exp.delete_failed(owner, &uid);
            Ok(false)
        }
        Err(e) => {
            ctx.exp.delete_failed(owner, &uid);
            Err(e.into())
        }
    }
}

fn earlier(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn ready_condition(pool: &PodPool, status: &str, why: &str, message: String) -> Condition {
    let old = pool
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == condition::READY));
    let last_transition_time = match old {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(Timestamp::now()),
    };
    Condition {
        type_: condition::READY.to_owned(),
        status: status.to_owned(),
        reason: why.to_owned(),
        message,
        observed_generation: pool.metadata.generation,
        last_transition_time,
    }
}

async fn write_status(ctx: &Ctx, pool: &PodPool, st: PodPoolStatus) -> Result<(), ReconcileError> {
    if pool.status.as_ref() == Some(&st) {
        return Ok(());
    }
    let api: Api<PodPool> =
        Api::namespaced(ctx.client.clone(), &pool.namespace().unwrap_or_default());
    let body = json!({"metadata": {"resourceVersion": pool.resource_version()}, "status": st});
    api.patch_status(&pool.name_any(), &PatchParams::default(), &Patch::Merge(&body)).await?;
    Ok(())
}

#[allow(clippy::too_many_lines)]
async fn reconcile_pass(pool: Arc<PodPool>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let owner = key(&pool);
    if pool.metadata.deletion_timestamp.is_some() {
        ctx.exp.forget(&owner);
        return Ok(Action::await_change());
    }
    let old = pool.status.clone().unwrap_or_default();
    if let Some(why) = problems(&pool) {
        let already = old.conditions.iter().any(|c| {
            c.type_ == condition::READY && c.reason == reason::INVALID_SPEC && c.message == why
        });
        if !already {
            tracing::warn!(pool = %owner, problems = %why, "invalid PodPool: not acting on it");
            ctx.events.send(EventReq::for_object(
                &*pool,
                "Warning",
                reason::INVALID_SPEC,
                format!("the controller does not act on this pool until it is fixed: {why}"),
            ));
        }
        let mut st = old.clone();
        st.observed_generation = pool.metadata.generation;
        st.conditions = vec![ready_condition(&pool, "False", reason::INVALID_SPEC, why)];
        write_status(&ctx, &pool, st).await?;
        return Ok(Action::await_change());
    }
    if !crate::cache_ready(&ctx.pods) {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let ns = pool.namespace().unwrap_or_default();
    let name = pool.name_any();
    let uid = pool.uid().unwrap_or_default();
    let mine: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|p| label(p, POOL_LABEL) == Some(name.as_str()))
        .collect();
    let seen = mine.iter().map(|p| Seen {
        name: p.metadata.name.as_deref().unwrap_or_default(),
        uid: p.metadata.uid.as_deref().unwrap_or_default(),
        resource_version: p.metadata.resource_version.as_deref().unwrap_or_default(),
        terminating: p.metadata.deletion_timestamp.is_some(),
    });
    if !ctx.exp.satisfied(&owner, seen) {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let now = Timestamp::now();
    let hash = template_hash(&pool);
    let timeout =
        jiff::SignedDuration::from_secs(i64::from(pool.spec.specialization_timeout_seconds));
    let mut requeue = None;

    // Claimed pods past their specialisation timeout, and those the node agent could not
    // specialise.
    let mut claimed = 0;
    let mut specializing = Vec::new();
    for p in mine.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        if label(p, POOL_STATE_LABEL) == Some(state::FAILED) {
            if delete_pod(&ctx, &owner, p).await? {
                let msg = format!(
                    "pod {} could not be specialized ({}); deleted",
                    p.name_any(),
                    specialization_failure(p)
                );
                tracing::info!(pool = %owner, pod = %p.name_any(), "specialization failed");
                ctx.events.send(EventReq::for_object(
                    &*pool,
                    "Warning",
                    reason::SPECIALIZATION_FAILED,
                    msg,
                ));
            }
            continue;
        }
        if label(p, POOL_STATE_LABEL) != Some(state::CLAIMED) {
            continue;
        }
        let Some(at) = timeout_from(p, now) else {
            // A pod of the pool's runtime made claimed, still starting: no timeout yet, and
            // it holds no refill (its start already competes; the pool's own refill is the
            // pool's business).
            claimed += 1;
            continue;
        };
        let deadline = at.checked_add(timeout).unwrap_or(at);
        if deadline > now {
            claimed += 1;
            specializing.push(at);
            requeue = earlier(requeue, Duration::try_from(deadline.duration_since(now)).ok());
            continue;
        }
        if delete_pod(&ctx, &owner, p).await? {
            let by = p
                .annotations()
                .get(kinetic_api::pool::CLAIMED_BY_ANNOTATION)
                .cloned()
                .unwrap_or_default();
            let msg = format!(
                "pod {} claimed by {by} was not specialized within {}s; deleted",
                p.name_any(),
                pool.spec.specialization_timeout_seconds
            );
            tracing::info!(pool = %owner, pod = %p.name_any(), "claim timed out");
            ctx.events.send(EventReq::for_object(
                &*pool,
                "Warning",
                reason::SPECIALIZATION_TIMEOUT,
                msg.clone(),
            ));
            ctx.events.send(EventReq::for_pod(p, "Warning", reason::SPECIALIZATION_TIMEOUT, msg));
        }
    }

    // The pool's own pods: stale or failed ones go.
    let mut unclaimed: Vec<Arc<Pod>> = Vec::new();
    for p in &mine {
        let own = p.owner_references().iter().any(|o| o.uid == uid && o.controller == Some(true));
        if !own
            || label(p, POOL_STATE_LABEL) != Some(state::READY)
            || p.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        if label(p, TEMPLATE_HASH_LABEL) != Some(hash.as_str()) || is_terminal(p) {
            delete_pod(&ctx, &owner, p).await?;
            continue;
        }
        unclaimed.push(p.clone());
    }

    // Learn the size.
    let mut claims: BTreeMap<String, Timestamp> =
        old.claim_history.iter().map(|c| (c.pod.clone(), c.claimed_at.0)).collect();
    if let Ok(mut m) = ctx.seen_claims.lock()
        && let Some(seen) = m.remove(&owner)
    {
        claims.extend(seen);
    }
    for p in &mine {
        if let Some(at) = claimed_at(p) {
            claims.insert(p.name_any(), at);
        }
    }
    let lookback = jiff::SignedDuration::try_from(sizing::LOOKBACK).unwrap_or_default();
    let since = now.checked_sub(lookback).unwrap_or(now);
    let mut history: Vec<ClaimRecord> = claims
        .into_iter()
        .filter(|(_, t)| *t > since)
        .map(|(pod, t)| ClaimRecord { pod, claimed_at: MicroTime(t) })
        .collect();
    history.sort_by_key(|c| c.claimed_at.0);
    let drop = history.len().saturating_sub(MAX_CLAIM_HISTORY);
    history.drain(..drop);

    let mut startups = old.startup_history.clone();
    for p in &mine {
        if !is_ready(p) || startups.iter().any(|s| s.pod == p.name_any()) {
            continue;
        }
        if let Some(d) = crate::util::startup_of(p) {
            let millis = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            startups.push(StartupRecord { pod: p.name_any(), millis });
        }
    }
    let drop = startups.len().saturating_sub(MAX_STARTUP_HISTORY);
    startups.drain(..drop);

    let claim_times: Vec<Timestamp> = history.iter().map(|c| c.claimed_at.0).collect();
    let durations: Vec<Duration> = startups
        .iter()
        .map(|s| Duration::from_millis(u64::try_from(s.millis).unwrap_or(0)))
        .collect();
    let sized =
        sizing::size(&claim_times, &durations, now, pool.spec.min_ready, pool.spec.max_ready);
    requeue = earlier(requeue, sized.recheck);

    // Hold `size` unclaimed pods; replacements once the pods just claimed are specialised
    // (`refill`).
    let have = i32::try_from(unclaimed.len()).unwrap_or(i32::MAX);
    let held = refill::hold(&specializing, now);
    if have < sized.size
        && let Some(left) = held
    {
        tracing::debug!(pool = %owner, wait_ms = left.as_millis() as u64, "refill waits for a specialisation");
        requeue = earlier(requeue, Some(left));
    } else if have < sized.size {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        for _ in have..sized.size {
            let created = api.create(&PostParams::default(), &new_pod(&pool, &hash)).await?;
            ctx.exp.expect_create(&owner, &created.name_any());
            unclaimed.push(Arc::new(created));
        }
    } else if have > sized.size {
        // Starting pods first, then the newest.
        unclaimed.sort_by_key(|p| {
            (is_ready(p), std::cmp::Reverse(p.metadata.creation_timestamp.clone()))
        });
        let excess = usize::try_from(have - sized.size).unwrap_or(0);
        let victims: Vec<Arc<Pod>> = unclaimed.drain(..excess).collect();
        for p in victims {
            delete_pod(&ctx, &owner, &p).await?;
        }
    }
    let ready = unclaimed.iter().filter(|p| is_ready(p)).count();
    let ready = i32::try_from(ready).unwrap_or(i32::MAX);
    let starting = i32::try_from(unclaimed.len()).unwrap_or(i32::MAX) - ready;
    if old.learned_size != sized.size && pool.status.is_some() {
        ctx.events.send(EventReq::for_object(
            &*pool,
            "Normal",
            reason::RESIZED,
            format!("size {} → {}: {}", old.learned_size, sized.size, sized.reason),
        ));
    }
    let cond = if ready >= sized.size {
        ready_condition(
            &pool,
            "True",
            reason::FULL,
            format!("{ready} of {} pods ready", sized.size),
        )
    } else {
        ready_condition(
            &pool,
            "False",
            reason::FILLING,
            format!("{ready} of {} pods ready, {starting} starting", sized.size),
        )
    };
    let st = PodPoolStatus {
        observed_generation: pool.metadata.generation,
        ready,
        claimed,
        starting,
        learned_size: sized.size,
        size_reason: sized.reason,
        claim_history: history,
        startup_history: startups,
        conditions: vec![cond],
    };
    write_status(&ctx, &pool, st).await?;
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn start_up_comes_from_the_timeline_else_from_the_ready_condition() {
        let tl =
            json!({"created": "2026-12-06T10:00:00.100Z", "ready": "2026-12-06T10:00:00.850Z"});
        let with_timeline = pod(json!({
            "metadata": {"name": "a", "creationTimestamp": "2026-12-06T10:00:00Z",
                         "annotations": {kinetic_api::timeline::ANNOTATION: tl.to_string()}},
        }));
        assert_eq!(crate::util::startup_of(&with_timeline), Some(Duration::from_millis(750)));
        let without = pod(json!({
            "metadata": {"name": "b", "creationTimestamp": "2026-12-06T10:00:00Z"},
            "status": {"conditions": [{"type": "Ready", "status": "True",
                                       "lastTransitionTime": "2026-12-06T10:00:03Z"}]},
        }));
        assert_eq!(crate::util::startup_of(&without), Some(Duration::from_secs(3)));
        let not_ready =
            pod(json!({"metadata": {"name": "c", "creationTimestamp": "2026-12-06T10:00:00Z"}}));
        assert_eq!(crate::util::startup_of(&not_ready), None);
    }

    #[test]
    fn a_pod_made_claimed_is_timed_out_from_its_runtimes_ready_not_its_creation() {
        let now: Timestamp = "2026-12-07T10:01:00Z".parse().unwrap();
        let claimed = "2026-12-07T10:00:00Z";
        let p = |created: bool, ready: Option<(&str, &str)>| {
            let mut v = json!({"metadata": {"name": "p",
                "annotations": {CLAIMED_AT_ANNOTATION: claimed}}});
            if created {
                v["metadata"]["annotations"][CREATED_CLAIMED_ANNOTATION] = json!("true");
            }
            if let Some((status, at)) = ready {
                v["status"] = json!({"conditions": [{"type": "Ready", "status": status,
                                                     "lastTransitionTime": at}]});
            }
            pod(v)
        };
        let t = |s: &str| Some(s.parse::<Timestamp>().unwrap());
        // (what, pod, timeout runs from)
        let table = [
            ("a claimed pool pod: from its claim", p(false, None), t(claimed)),
            (
                "a claimed pool pod that is no longer Ready: still from its claim",
                p(false, Some(("False", "2026-12-07T10:00:30Z"))),
                t(claimed),
            ),
            ("made claimed, runtime starting: no timeout", p(true, None), None),
            (
                "made claimed, runtime not ready: no timeout",
                p(true, Some(("False", "2026-12-07T10:00:20Z"))),
                None,
            ),
            (
                "made claimed, runtime ready after the claim: from its Ready",
                p(true, Some(("True", "2026-12-07T10:00:40Z"))),
                t("2026-12-07T10:00:40Z"),
            ),
        ];
        for (what, pod, want) in table {
            assert_eq!(timeout_from(&pod, now), want, "{what}");
        }
    }

    #[test]
    fn pool_pods_carry_the_pool_labels_owner_and_negative_deletion_cost() {
        let pool: PodPool = serde_json::from_value(json!({
            "apiVersion": "kinetic.dev/v1alpha1", "kind": "PodPool",
            "metadata": {"name": "py", "namespace": "fn", "uid": "u1"},
            "spec": {"template": {"metadata": {"labels": {"app": "py"}},
                                  "spec": {"containers": [{"name": "c", "image": "python"}]}}},
        }))
        .unwrap();
        assert_eq!(problems(&pool), None);
        let p = new_pod(&pool, "h");
        let labels = p.metadata.labels.unwrap();
        assert_eq!(labels[POOL_LABEL], "py");
        assert_eq!(labels[POOL_STATE_LABEL], state::READY);
        assert_eq!(labels["app"], "py");
        assert_eq!(p.metadata.annotations.unwrap()[POD_DELETION_COST_ANNOTATION], "-1000");
        assert_eq!(p.metadata.generate_name.as_deref(), Some("py-"));
        let owner = &p.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("PodPool", "u1", Some(true))
        );
    }

    #[test]
    fn min_ready_above_max_ready_and_no_containers_are_problems() {
        let pool: PodPool = serde_json::from_value(json!({
            "apiVersion": "kinetic.dev/v1alpha1", "kind": "PodPool",
            "metadata": {"name": "x"},
            "spec": {"template": {}, "minReady": 4, "maxReady": 2},
        }))
        .unwrap();
        expect_test::expect![[r#"
            "spec.minReady: Invalid value: 4: must be less than or equal to spec.maxReady (2); spec.template.spec.containers: Required value"
        "#]]
        .assert_debug_eq(&problems(&pool).unwrap());
    }

    #[test]
    fn a_code_volume_that_is_no_mounted_empty_dir_is_a_problem() {
        let pool: PodPool = serde_json::from_value(json!({
            "apiVersion": "kinetic.dev/v1alpha1", "kind": "PodPool",
            "metadata": {"name": "x"},
            "spec": {"template": {"spec": {"containers": [{"name": "r", "image": "env"}]}},
                     "code": {}},
        }))
        .unwrap();
        expect_test::expect![[r#"
            "spec.code.volume: Not found: \"userfunc\": no such volume in spec.template.spec.volumes"
        "#]]
        .assert_debug_eq(&problems(&pool).unwrap());
    }
}
