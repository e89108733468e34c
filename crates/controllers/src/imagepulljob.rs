//! The ImagePullJob controller: OpenKruise's `pkg/controller/imagepulljob`, through the `kube`
//! client only.
//!
//! One reconcile of a job:
//! 1. resolve the target nodes: `selector` (names and/or node labels; neither means every
//!    node) or `podSelector` (the nodes of the job namespace's scheduled, unfinished pods it
//!    selects); the two are mutually exclusive;
//! 2. read each target's NodeImage: a node whose tag entry names this job is active until the
//!    agent reports the tag Succeeded or Failed for the entry's version;
//! 3. write the tag into at most `parallelism − active` more NodeImages. The tag entry is
//!    merged into `spec.images` (an existing entry gets this job added to its
//!    `ownerReferences`) and written with the NodeImage's resourceVersion, so two jobs never
//!    overwrite each other's tags (upstream bug #1517): the loser gets 409 and retries on the
//!    fresh object;
//! 4. write the status (desired/active/succeeded/failed/failedNodes/startTime/completionTime/
//!    message). A `completionPolicy: Always` job completes when every target finished, or
//!    fails at `activeDeadlineSeconds` (unfinished nodes count as failed); it is deleted
//!    `ttlSecondsAfterFinished` after completion. A `Never` job keeps running: nodes that join
//!    later (or pods that land on new nodes) get the image too.
//!
//! A finished job's tag entries are removed from the NodeImages at once (their pulls are
//! done, and an in-flight pull of a job past its deadline is cancelled that way); the entries
//! of deleted jobs are swept by [`crate::nodeimage`].
//!
//! Deliberate differences: pull secrets are referenced in the job's own namespace instead of
//! being copied to `kruise-daemon-config` (the agent reads them with the cluster client), and
//! jobs are requeued on the NodeImage watch, not after upstream's 5-minute expectation delay
//! (upstream #1528). A reconcile is bounded by [`RECONCILE_TIMEOUT`] and a job past its TTL is
//! deleted before its tags are cleaned up, so neither a request that never answers nor a
//! failing clean-up keeps a finished job (issue 10).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kinetic_api::kruise::imagepulljob::{
    CompletionPolicyType, ImagePullJob, ImagePullJobStatus, ImagePullPolicy,
};
use kinetic_api::kruise::nodeimage::{
    ImageSpec, ImageTagPullPolicy, ImageTagSpec, NodeImage, ReferenceObject, phase, split_image,
};
use kinetic_machinery::selector::LabelSelector;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource as _, ResourceExt as _};
use serde_json::{Value, json};

/// The controller's name in logs and Events.
pub const COMPONENT: &str = "imagepulljob-controller";

/// How often an unfinished job is looked at even without a watch event.
const RESYNC: Duration = Duration::from_secs(5);

/// The longest one reconcile may run before it is abandoned (reconcilers are safe to cancel at
/// any `.await`) and retried. The `kube` client has no response timeout, so a request on a
/// connection that silently died would otherwise wedge this job for good: kube-runtime runs no
/// second reconcile of an object while one is in flight, so its TTL requeue and every watch
/// event for it would wait behind the stuck one (issue 10, item 4: finished jobs kept for
/// minutes past `ttlSecondsAfterFinished` until another leader took over).
pub const RECONCILE_TIMEOUT: Duration = Duration::from_secs(20);

/// What one reconcile shares with the others.
pub struct Ctx {
    client: Client,
    nodes: Store<Node>,
    node_images: Store<NodeImage>,
    pods: Store<Pod>,
    backoff: crate::backoff::Backoff,
}

/// The CRDs the preheating controllers serve.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    vec![
        ImagePullJob::crd_all_versions(),
        NodeImage::crd_all_versions(),
        kinetic_api::kruise::imagelistpulljob::ImageListPullJob::crd_all_versions(),
    ]
}

/// A reconcile failed; it is retried.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("API request failed")]
    Kube(#[from] kube::Error),
    #[error("the reconcile did not finish within {0:?}")]
    TimedOut(Duration),
}

/// Runs the ImagePullJob controller until `shutdown` resolves.
///
/// # Errors
/// None so far: API errors are retried per job.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> crate::Result<()> {
    let (nodes, node_writer) = reflector::store();
    let node_stream = reflector::reflector(
        node_writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    let (node_images, ni_writer) = reflector::store();
    let ni_stream = reflector::reflector(
        ni_writer,
        watcher(Api::<NodeImage>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    let (pods, pod_writer) = reflector::store();
    let pod_stream = reflector::reflector(
        pod_writer,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        nodes,
        node_images,
        pods,
        backoff: crate::backoff::Backoff::default(),
    });
    let jobs = Api::<ImagePullJob>::all(client);
    let controller = Controller::new(jobs, watcher::Config::default());
    let job_store = controller.store();
    // A NodeImage change concerns the jobs its tags name; a Node or Pod change may change any
    // job's targets, so it wakes every job (few jobs exist at a time).
    let all_jobs = move |store: &Store<ImagePullJob>| -> Vec<ObjectRef<ImagePullJob>> {
        store.state().iter().map(|j| ObjectRef::from_obj(&**j)).collect()
    };
    let (s1, s2) = (job_store.clone(), job_store.clone());
    controller
        .watches_stream(ni_stream, |ni: NodeImage| owners_of(&ni))
        .watches_stream(node_stream, move |_: Node| all_jobs(&s1))
        .watches_stream(pod_stream, move |p: Pod| {
            let ns = p.namespace();
            s2.state()
                .iter()
                .filter(|j| j.spec.template.pod_selector.is_some() && j.namespace() == ns)
                .map(|j| ObjectRef::from_obj(&**j))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(crate::log_reconcile("imagepulljob"))
        .await;
    Ok(())
}

/// The jobs a NodeImage's tags name.
fn owners_of(ni: &NodeImage) -> Vec<ObjectRef<ImagePullJob>> {
    ni.job_owners()
        .filter_map(|o| Some(ObjectRef::new(o.name.as_deref()?).within(o.namespace.as_deref()?)))
        .collect()
}

/// Every failure backs off per job (see [`crate::backoff`]).
fn error_policy(job: Arc<ImagePullJob>, e: &ReconcileError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&*job, e)
}

fn key(job: &ImagePullJob) -> String {
    format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any())
}

/// The reference a NodeImage tag entry keeps to its job.
fn job_ref(job: &ImagePullJob) -> ObjectReference {
    ObjectReference {
        api_version: Some(ImagePullJob::api_version(&()).into_owned()),
        kind: Some(ImagePullJob::kind(&()).into_owned()),
        name: Some(job.name_any()),
        namespace: job.namespace(),
        uid: job.uid(),
        ..Default::default()
    }
}

fn owned_by(tag: &ImageTagSpec, uid: &str) -> bool {
    tag.owner_references.iter().flatten().any(|o| o.uid.as_deref() == Some(uid))
}

fn to_map(labels: Option<&BTreeMap<String, String>>) -> serde_json::Map<String, Value> {
    labels.into_iter().flatten().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect()
}

/// Where a target node stands for this job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeState {
    /// The tag is not in its NodeImage for this job yet.
    Pending,
    /// Written; the node has not finished.
    Active,
    Succeeded,
    Failed,
}

/// The target nodes, by name, sorted.
///
/// # Errors
/// A message for the status when the selectors are invalid.
fn targets(ctx: &Ctx, job: &ImagePullJob) -> Result<BTreeSet<String>, String> {
    let spec = &job.spec;
    let live_nodes = ctx.nodes.state();
    let live = live_nodes.iter().filter(|n| n.metadata.deletion_timestamp.is_none());
    match (&spec.template.selector, &spec.template.pod_selector) {
        (Some(_), Some(_)) => Err("selector and podSelector are mutually exclusive".to_owned()),
        (None, Some(ps)) => {
            let sel = LabelSelector::from_label_selector(&json!(ps))
                .map_err(|e| format!("invalid podSelector: {e}"))?;
            let ns = job.namespace();
            Ok(ctx
                .pods
                .state()
                .iter()
                .filter(|p| p.namespace() == ns && p.metadata.deletion_timestamp.is_none())
                .filter(|p| {
                    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                    phase != Some("Succeeded") && phase != Some("Failed")
                })
                .filter(|p| sel.matches(Some(&to_map(p.metadata.labels.as_ref()))))
                .filter_map(|p| p.spec.as_ref()?.node_name.clone())
                .filter(|n| live_nodes.iter().any(|x| x.name_any() == *n))
                .collect())
        }
        (sel, None) => {
            let names = sel.as_ref().and_then(|s| s.names.clone());
            let labels = match sel {
                Some(s) if s.match_labels.is_some() || s.match_expressions.is_some() => {
                    let v = json!({
                        "matchLabels": s.match_labels,
                        "matchExpressions": s.match_expressions,
                    });
                    Some(
                        LabelSelector::from_label_selector(&v)
                            .map_err(|e| format!("invalid selector: {e}"))?,
                    )
                }
                _ => None,
            };
            Ok(live
                .filter(|n| names.as_ref().is_none_or(|ns| ns.contains(&n.name_any())))
                .filter(|n| {
                    labels
                        .as_ref()
                        .is_none_or(|l| l.matches(Some(&to_map(n.metadata.labels.as_ref()))))
                })
                .map(|n| n.name_any())
                .collect())
        }
    }
}

/// This job's state on `node`.
fn node_state(ni: Option<&NodeImage>, name: &str, tag: &str, uid: &str) -> NodeState {
    let Some(ni) = ni else { return NodeState::Pending };
    let Some(entry) = ni
        .spec
        .images
        .as_ref()
        .and_then(|m| m.get(name))
        .and_then(|i| i.tags.iter().find(|t| t.tag == tag))
        .filter(|t| owned_by(t, uid))
    else {
        return NodeState::Pending;
    };
    match ni.tag_status(name, tag) {
        Some(s) if s.version.unwrap_or(0) >= entry.version.unwrap_or(0) => match s.phase.as_str() {
            phase::SUCCEEDED => NodeState::Succeeded,
            phase::FAILED => NodeState::Failed,
            _ => NodeState::Active,
        },
        _ => NodeState::Active,
    }
}

fn ts(t: Timestamp) -> Time {
    Time(t)
}

/// One reconcile, unless the job is backing off from a failure at the same generation.
async fn reconcile(job: Arc<ImagePullJob>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let pass = tokio::time::timeout(RECONCILE_TIMEOUT, reconcile_pass(job.clone(), ctx.clone()));
    let bounded = async { pass.await.unwrap_or(Err(ReconcileError::TimedOut(RECONCILE_TIMEOUT))) };
    ctx.backoff.reconcile(&*job, bounded).await
}

async fn reconcile_pass(job: Arc<ImagePullJob>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    if job.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if !(crate::cache_ready(&ctx.nodes)
        && crate::cache_ready(&ctx.node_images)
        && crate::cache_ready(&ctx.pods))
    {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let now = Timestamp::now();
    let ns = job.namespace().unwrap_or_default();
    let jobs: Api<ImagePullJob> = Api::namespaced(ctx.client.clone(), &ns);
    let old = job.status.clone().unwrap_or_default();
    let uid = job.uid().unwrap_or_default();
    let (name, tag) = split_image(&job.spec.image);
    let always = job.spec.completion_type() == CompletionPolicyType::Always;

    // A finished job: only its TTL remains. Its tags stay in the NodeImages, with their
    // statuses, until their own ttlSecondsAfterFinished (300 s by default) or the job's
    // deletion: that is where upstream's FAQ looks for why a pull failed (issue 18; they
    // vanished about a second after the job ended). The NodeImage controller removes them.
    if let Some(done) = old.completion_time.as_ref().filter(|_| always) {
        let Some(ttl) = job.spec.template.completion_policy.ttl_seconds_after_finished else {
            return Ok(Action::await_change());
        };
        let at = done.0 + jiff::SignedDuration::from_secs(i64::from(ttl.max(0)));
        if now >= at {
            // The TTL does not wait for the tag clean-up: the NodeImage controller sweeps the
            // tags of deleted jobs, so a clean-up that keeps failing cannot keep a job alive.
            tracing::info!(job = %key(&job), "deleting a finished job (ttlSecondsAfterFinished)");
            match jobs.delete(&job.name_any(), &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(Action::await_change());
        }
        let left = Duration::try_from(at.duration_since(Timestamp::now())).unwrap_or_default();
        return Ok(Action::requeue(left.max(Duration::from_millis(50))));
    }

    let mut st = ImagePullJobStatus {
        start_time: Some(old.start_time.clone().unwrap_or(ts(now))),
        ..ImagePullJobStatus::default()
    };
    let targets = match targets(&ctx, &job) {
        Ok(t) => t,
        Err(msg) => {
            st.message = Some(msg);
            write_status(&jobs, &job, &old, st).await?;
            return Ok(Action::await_change());
        }
    };
    let node_images: BTreeMap<String, Arc<NodeImage>> =
        ctx.node_images.state().into_iter().map(|n| (n.name_any(), n)).collect();
    let mut states: BTreeMap<&str, NodeState> = targets
        .iter()
        .map(|n| (n.as_str(), node_state(node_images.get(n).map(|a| &**a), &name, &tag, &uid)))
        .collect();

    // Start more nodes, within parallelism.
    let desired = i32::try_from(targets.len()).unwrap_or(i32::MAX);
    // A percentage of the target nodes rounds up, as upstream's `GetScaledValueFromIntOrPercent`
    // call does; an unparsable value behaves as the default 1.
    let p = job.spec.template.parallelism.clone().unwrap_or(IntOrString::Int(1));
    let parallelism =
        kinetic_rollout::strategy::scaled_value(&p, desired, true, "parallelism").unwrap_or(1);
    let active = states.values().filter(|s| **s == NodeState::Active).count();
    let room = usize::try_from(parallelism).unwrap_or(0).saturating_sub(active);
    let pending: Vec<&str> =
        states.iter().filter(|(_, s)| **s == NodeState::Pending).map(|(n, _)| *n).collect();
    let mut waiting_for_nodeimage = false;
    for node in pending.into_iter().take(room) {
        let Some(ni) = node_images.get(node) else {
            // The NodeImage controller has not created it yet; its creation wakes us.
            waiting_for_nodeimage = true;
            continue;
        };
        add_tag(&ctx, &job, ni, &name, &tag, now).await?;
        states.insert(node, NodeState::Active);
    }

    st.desired = desired;
    for (node, s) in &states {
        match s {
            NodeState::Active => st.active += 1,
            NodeState::Succeeded => st.succeeded += 1,
            NodeState::Failed => {
                st.failed += 1;
                st.failed_nodes.get_or_insert_with(Vec::new).push((*node).to_owned());
            }
            NodeState::Pending => {}
        }
    }
    let start = st.start_time.as_ref().map_or(now, |t| t.0);
    let mut wake = Some(RESYNC);
    if always {
        let finished = st.succeeded + st.failed == st.desired && !waiting_for_nodeimage;
        let deadline = job
            .spec
            .template
            .completion_policy
            .active_deadline_seconds
            .map(|s| start + jiff::SignedDuration::from_secs(s.max(0)));
        if finished {
            st.completion_time = Some(ts(now));
            st.message = Some(if st.failed > 0 {
                format!(
                    "job has completed: the pull failed on {} of {} nodes",
                    st.failed, st.desired
                )
            } else {
                "job has completed".to_owned()
            });
        } else if deadline.is_some_and(|d| now >= d) {
            let done = st.succeeded + st.failed;
            // Unfinished nodes count as failed: their pulls are given up.
            for (node, s) in &states {
                if matches!(s, NodeState::Active | NodeState::Pending) {
                    st.failed += 1;
                    st.failed_nodes.get_or_insert_with(Vec::new).push((*node).to_owned());
                }
            }
            st.active = 0;
            st.completion_time = Some(ts(now));
            st.message = Some(format!(
                "job has failed: it exceeded activeDeadlineSeconds ({}s) with {done} of {} nodes finished",
                job.spec.template.completion_policy.active_deadline_seconds.unwrap_or_default(),
                st.desired
            ));
        } else if let Some(d) = deadline {
            let left = Duration::try_from(d.duration_since(now)).unwrap_or_default();
            wake = Some(left.min(RESYNC));
        }
        if st.completion_time.is_some() {
            wake = Some(Duration::ZERO);
        }
    } else {
        st.message = Some(format!(
            "job is running (completionPolicy Never): {} of {} nodes pulled the image",
            st.succeeded, st.desired
        ));
    }
    if let Some(f) = st.failed_nodes.as_mut() {
        f.sort();
        f.dedup();
    }
    write_status(&jobs, &job, &old, st).await?;
    Ok(wake
        .map_or_else(Action::await_change, |d| Action::requeue(d.max(Duration::from_millis(50)))))
}

/// Writes the status when it changed.
async fn write_status(
    jobs: &Api<ImagePullJob>,
    job: &ImagePullJob,
    old: &ImagePullJobStatus,
    st: ImagePullJobStatus,
) -> Result<(), ReconcileError> {
    if *old == st && job.status.is_some() {
        return Ok(());
    }
    let body = json!({
        "metadata": {"resourceVersion": job.metadata.resource_version},
        "status": st,
    });
    jobs.patch_status(&job.name_any(), &PatchParams::default(), &Patch::Merge(body)).await?;
    Ok(())
}

/// Merges this job's tag entry into `ni.spec.images`, with `ni`'s resourceVersion as the
/// precondition (a concurrent writer makes this fail with 409 and the job retries).
async fn add_tag(
    ctx: &Ctx,
    job: &ImagePullJob,
    ni: &NodeImage,
    name: &str,
    tag: &str,
    now: Timestamp,
) -> Result<(), ReconcileError> {
    let mut next = ni.clone();
    let images = next.spec.images.get_or_insert_with(BTreeMap::new);
    let image = images.entry(name.to_owned()).or_insert_with(|| ImageSpec {
        pull_secrets: None,
        tags: Vec::new(),
        sandbox_config: None,
    });
    let ns = job.namespace().unwrap_or_default();
    for s in job.spec.template.pull_secrets.iter().flatten() {
        let r = ReferenceObject { namespace: Some(ns.clone()), name: Some(s.clone()) };
        let secrets = image.pull_secrets.get_or_insert_with(Vec::new);
        if !secrets.contains(&r) {
            secrets.push(r);
        }
    }
    if image.sandbox_config.is_none() {
        image.sandbox_config.clone_from(&job.spec.template.sandbox_config);
    }
    let policy = ImageTagPullPolicy {
        timeout_seconds: Some(job.spec.timeout_seconds()),
        backoff_limit: Some(job.spec.backoff_limit()),
        // Upstream gives every tag a TTL after its pull finished, 300 s unless the job says
        // otherwise; the NodeImage controller drops the tag then.
        ttl_seconds_after_finished: Some(
            job.spec
                .template
                .completion_policy
                .ttl_seconds_after_finished
                .unwrap_or(kinetic_api::kruise::nodeimage::DEFAULT_TAG_TTL_SECONDS),
        ),
        active_deadline_seconds: job.spec.template.completion_policy.active_deadline_seconds,
    };
    let pull_policy = job.spec.template.image_pull_policy.unwrap_or_default();
    match image.tags.iter_mut().find(|t| t.tag == tag) {
        Some(t) => {
            t.owner_references.get_or_insert_with(Vec::new).push(job_ref(job));
            // A job that wants a fresh pull (Always), or a tag whose last pull failed, gets a
            // new version so the node pulls again.
            let failed = ni.tag_status(name, tag).is_some_and(|s| s.phase == phase::FAILED);
            if pull_policy == ImagePullPolicy::Always || failed {
                t.version = Some(t.version.unwrap_or(0) + 1);
                t.pull_policy = Some(policy);
                t.image_pull_policy = Some(pull_policy);
            }
        }
        None => image.tags.push(ImageTagSpec {
            tag: tag.to_owned(),
            created_at: Some(ts(now)),
            pull_policy: Some(policy),
            owner_references: Some(vec![job_ref(job)]),
            version: Some(ni.tag_status(name, tag).and_then(|s| s.version).map_or(1, |v| v + 1)),
            image_pull_policy: Some(pull_policy),
        }),
    }
    let api: Api<NodeImage> = Api::all(ctx.client.clone());
    api.replace(&ni.name_any(), &PostParams::default(), &next).await?;
    tracing::info!(job = %key(job), node = %ni.name_any(), image = %job.spec.image, "image pull started on node");
    Ok(())
}

/// `ni` without the owner references `gone` picks, dropping tags and images left without
/// owners; `None` when nothing changes.
pub(crate) fn without_owner(
    ni: &NodeImage,
    gone: impl Fn(&ObjectReference) -> bool,
) -> Option<NodeImage> {
    let mut next = ni.clone();
    let mut changed = false;
    let images = next.spec.images.as_mut()?;
    for image in images.values_mut() {
        for t in &mut image.tags {
            if let Some(refs) = t.owner_references.as_mut() {
                let before = refs.len();
                refs.retain(|o| !gone(o));
                changed |= refs.len() != before;
            }
        }
        image.tags.retain(|t| t.owner_references.as_ref().is_none_or(|r| !r.is_empty()));
    }
    images.retain(|_, i| !i.tags.is_empty());
    changed.then_some(next)
}
