//! The SandboxClaim reconciler (upstream `extensions/controllers/sandboxclaim_controller.go`):
//! a claim gets a Sandbox of its own name, owned by the claim, whose pod comes from a warm
//! pool of the claim's template when one has a ready pod, and is created otherwise.
//!
//! # Guarantees
//! - A pool pod goes to at most one claim: [`crate::podpool::claim`] is one conditional write.
//! - A claim that crashes between taking a pod and creating its Sandbox finds the pod again
//!   on its next reconcile (a `claimed` pool pod whose controller is the claim); if it never
//!   comes back, the pool's specialisation timeout deletes the pod.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use kinetic_api::agents::{
    CLAIM_UID_LABEL, ClaimedSandbox, LAUNCH_TYPE_LABEL, POD_NAME_ANNOTATION, PodMetadata,
    PodTemplate, SAFE_TO_EVICT_ANNOTATION, Sandbox, SandboxClaim, SandboxClaimStatus, SandboxSpec,
    SandboxTemplate, SandboxWarmPool, TEMPLATE_REF_ANNOTATION, condition, launch_type,
};
use kinetic_api::pool::{POOL_STATE_LABEL, state};
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use serde_json::json;

use super::decide::{self, ClaimState};
use super::{Ctx, ReconcileError, controller_of, owner_ref};
use crate::events::EventReq;
use crate::podpool::ClaimError;

/// How often a claim whose template is missing looks again (besides the template watch).
const TEMPLATE_RETRY: Duration = Duration::from_secs(30);

pub(super) async fn reconcile(
    c: Arc<SandboxClaim>,
    ctx: Arc<Ctx>,
) -> Result<Action, ReconcileError> {
    let obj = c.clone();
    ctx.backoff.reconcile(&*obj, pass(c, ctx.clone())).await
}

async fn pass(claim: Arc<SandboxClaim>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    if claim.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = claim.namespace().unwrap_or_default();
    let name = claim.name_any();
    let uid = claim.uid().unwrap_or_default();
    let sandboxes: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &ns);
    // A claim that has no Sandbox in its status yet is (almost always) new: what it needs to
    // make one is read at the same time as its Sandbox is looked up, not one request after the
    // other, since every round trip counts in a claim → Ready of milliseconds.
    let fresh = claim.status.as_ref().is_none_or(|s| s.sandbox.name.is_empty());
    let (existing, looked_up) = if fresh {
        let (sb, l) = tokio::try_join!(
            async { sandboxes.get_opt(&name).await.map_err(ReconcileError::from) },
            lookup(&ctx, &claim)
        )?;
        (sb, Some(l))
    } else {
        (sandboxes.get_opt(&name).await?, None)
    };
    let mut requeue = None;

    // -- Expiry (upstream claim `Lifecycle`). -------------------------------------------------
    if let Some(lc) = &claim.spec.lifecycle
        && let Some(left) = decide::expiry(lc.shutdown_time.as_ref(), jiff::Timestamp::now())
    {
        if left.is_zero() {
            if lc.shutdown_policy == "Delete" || lc.shutdown_policy == "DeleteForeground" {
                let api: Api<SandboxClaim> = Api::namespaced(ctx.client.clone(), &ns);
                let mut dp = DeleteParams::default();
                if lc.shutdown_policy == "DeleteForeground" {
                    dp.propagation_policy = Some(PropagationPolicy::Foreground);
                }
                match api.delete(&name, &dp).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
                return Ok(Action::await_change());
            }
            if let Some(sb) = existing.as_ref().filter(|s| owned(s, &uid))
                && sb.metadata.deletion_timestamp.is_none()
            {
                sandboxes.delete(&sb.name_any(), &DeleteParams::default()).await?;
            }
            let v = decide::claim_ready(ClaimState::Expired);
            write_status(&ctx, &claim, None, &v).await?;
            return Ok(Action::await_change());
        }
        requeue = Some(left);
    }
    // -- `lifecycle.ttlSecondsAfterFinished` (upstream v1beta1): the claim goes that long after
    // its mirrored `Finished` condition turned True. -----------------------------------------
    let conditions = claim.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let ttl = claim.spec.lifecycle.as_ref().and_then(|l| l.ttl_seconds_after_finished);
    if let Some(left) = decide::finished_ttl_left(ttl, conditions, jiff::Timestamp::now()) {
        if left.is_zero() {
            let api: Api<SandboxClaim> = Api::namespaced(ctx.client.clone(), &ns);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(Action::await_change());
        }
        requeue = Some(requeue.map_or(left, |r: Duration| r.min(left)));
    }
    let done = |a: Option<Duration>| a.map_or_else(Action::await_change, Action::requeue);

    // -- The claim's Sandbox exists: report it. -----------------------------------------------
    if let Some(sb) = existing {
        if !owned(&sb, &uid) {
            let v = decide::claim_ready(ClaimState::SandboxNotOwned(&name));
            write_status(&ctx, &claim, None, &v).await?;
            return Ok(done(requeue));
        }
        let ready = sb
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == condition::READY));
        let v = decide::claim_ready(ClaimState::Sandbox(ready));
        write_status(&ctx, &claim, Some(&sb), &v).await?;
        return Ok(done(requeue));
    }

    // -- No Sandbox yet: the template (named by a `v1alpha1` claim, or the `v1beta1` claim's
    // warm pool's), a pool pod if one can be had, the Sandbox. ---------------------------------
    let retry = Action::requeue(requeue.map_or(TEMPLATE_RETRY, |r| r.min(TEMPLATE_RETRY)));
    let started = Instant::now();
    let found = match looked_up {
        Some(l) => l,
        None => lookup(&ctx, &claim).await?,
    };
    let (t, only_pool) = match found.template {
        Ok(found) => found,
        Err(missing) => {
            let state = match &missing {
                Missing::Pool(p) => ClaimState::WarmPoolNotFound(p),
                Missing::Template(t) => ClaimState::TemplateNotFound(t),
            };
            write_status(&ctx, &claim, None, &decide::claim_ready(state)).await?;
            return Ok(retry);
        }
    };
    let tname = t.name_any();
    let pod_spec = match decide::with_claim_env(
        super::warmpool::template_pod_spec(&t),
        &claim.spec.env,
        t.spec.env_vars_injection_policy.as_deref(),
    ) {
        Ok(spec) => spec,
        Err(why) => {
            let v = decide::claim_ready(ClaimState::EnvRefused(&why));
            write_status(&ctx, &claim, None, &v).await?;
            return Ok(done(requeue));
        }
    };
    // A claim with `env` always gets a new pod (upstream: "adding this field means the Sandbox
    // will always be cold-started").
    // Nor can a pool pod take the claims of volumeClaimTemplates (a running pod gets no new
    // volumes): those claims get a new pod too.
    let warm = match found.claimed {
        Some(p) => Some((p, String::new())),
        None if claim.spec.env.is_empty() && t.spec.volume_claim_templates.is_empty() => {
            let policy = only_pool.as_deref().unwrap_or(&claim.spec.warm_pool);
            let pools = match &only_pool {
                Some(p) => vec![(p.clone(), tname.clone())],
                None => found.pools,
            };
            claim_from_pools(&ctx, &claim, &tname, policy, &pools, found.pool_pods).await?
        }
        None => None,
    };
    let mut sb = new_sandbox(&claim, &t, pod_spec);
    if let Some((pod, _)) = &warm {
        sb.annotations_mut().insert(POD_NAME_ANNOTATION.to_owned(), pod.name_any());
        sb.labels_mut().insert(LAUNCH_TYPE_LABEL.to_owned(), launch_type::WARM.to_owned());
    }
    let sb = match sandboxes.create(&PostParams::default(), &sb).await {
        Ok(sb) => sb,
        Err(kube::Error::Api(s)) if s.code == 409 => {
            return Ok(Action::requeue(Duration::from_millis(50)));
        }
        Err(e) => return Err(e.into()),
    };
    // The Sandbox's own reconcile, here and now: it adopts the warm pod (one conditional write:
    // owner to the Sandbox, its labels, pool state `specialized`), creates the Service and
    // writes the Sandbox's status, so the claim is Ready in this reconcile when the pod is.
    // Should the Sandbox reconciler, woken by the create, get there first, one of the two gets
    // 409 and the other's writes stand; the claim then hears of the Sandbox's status by watch.
    let warm_pod = warm.as_ref().map(|(p, _)| p);
    let ensured = match super::core::ensure(&ctx, &sb, warm_pod, true).await {
        Ok((_, st)) => st,
        Err(e) => {
            tracing::debug!(claim = %name, error = %e, "the Sandbox reconciler got there first");
            None
        }
    };
    let message = match &warm {
        Some((pod, pool)) => format!(
            "Adopted warm pool pod {:?}{} for Sandbox {name:?} in {} ms",
            pod.name_any(),
            if pool.is_empty() { String::new() } else { format!(" of SandboxWarmPool {pool:?}") },
            started.elapsed().as_millis()
        ),
        None => format!("Created Sandbox {name:?} with a new pod (no warm pool pod ready)"),
    };
    let reason = if warm.is_some() { "SandboxAdopted" } else { "SandboxCreated" };
    tracing::debug!(claim = %name, %message, "claimed");
    ctx.events.send(EventReq::for_object(&*claim, "Normal", reason, message));
    // The Sandbox's status and the claim's, written side by side.
    let reported = Sandbox { status: ensured.clone(), ..sb.clone() };
    let ready =
        ensured.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == condition::READY));
    let v = decide::claim_ready(ClaimState::Sandbox(ready));
    let sandbox_status = async {
        match &ensured {
            Some(st) => match super::core::put_status(&ctx, &sb, st).await {
                // The Sandbox reconciler wrote first; it writes the same again.
                Err(ReconcileError::Kube(kube::Error::Api(s))) if s.code == 409 => Ok(()),
                r => r,
            },
            None => Ok(()),
        }
    };
    tokio::try_join!(sandbox_status, write_status(&ctx, &claim, Some(&reported), &v))?;
    Ok(done(requeue))
}

fn owned(sb: &Sandbox, claim_uid: &str) -> bool {
    controller_of(sb).is_some_and(|o| o.uid == claim_uid)
}

/// A pool pod this claim took on an earlier reconcile that did not get to create the Sandbox.
async fn claimed_before(ctx: &Ctx, ns: &str, uid: &str) -> Result<Option<Pod>, ReconcileError> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let lp = ListParams::default().labels(&format!("{POOL_STATE_LABEL}={}", state::CLAIMED));
    let found = pods.list(&lp).await?.items.into_iter().find(|p| {
        p.metadata.deletion_timestamp.is_none() && controller_of(p).is_some_and(|o| o.uid == uid)
    });
    Ok(found)
}

/// Why a claim has no template.
enum Missing {
    /// Its `warmPoolRef` names no warm pool.
    Pool(String),
    /// Its template (named, or its warm pool's) does not exist.
    Template(String),
}

/// What a claim without a Sandbox needs, read concurrently.
struct Lookup {
    /// The template and, for a `v1beta1` claim, its warm pool; or why there is none.
    template: Result<(SandboxTemplate, Option<String>), Missing>,
    /// A pool pod the claim took on an earlier reconcile.
    claimed: Option<Pod>,
    /// The namespace's warm pools and their templates (`v1alpha1` claims that may use one).
    pools: Vec<(String, String)>,
    /// The namespace's Ready, unclaimed pool pods (of every pool), to claim among.
    pool_pods: Vec<Pod>,
}

async fn lookup(ctx: &Ctx, claim: &SandboxClaim) -> Result<Lookup, ReconcileError> {
    let ns = claim.namespace().unwrap_or_default();
    let uid = claim.uid().unwrap_or_default();
    let pool_api: Api<SandboxWarmPool> = Api::namespaced(ctx.client.clone(), &ns);
    let templates: Api<SandboxTemplate> = Api::namespaced(ctx.client.clone(), &ns);
    let template = async {
        let (tname, only) = match claim.spec.warm_pool_ref_name() {
            Some(pool) => {
                let got = pool_api.get_opt(pool).await?;
                match got.filter(|p| p.metadata.deletion_timestamp.is_none()) {
                    Some(p) => (p.spec.sandbox_template_ref.name, Some(pool.to_owned())),
                    None => return Ok(Err(Missing::Pool(pool.to_owned()))),
                }
            }
            None => (claim.spec.template_name().unwrap_or_default().to_owned(), None),
        };
        Ok::<_, ReconcileError>(match templates.get_opt(&tname).await? {
            Some(t) => Ok((t, only)),
            None => Err(Missing::Template(tname)),
        })
    };
    let pools = async {
        let uses_any = claim.spec.warm_pool_ref_name().is_none()
            && claim.spec.warm_pool != kinetic_api::agents::warm_pool_policy::NONE
            && claim.spec.env.is_empty();
        if !uses_any {
            return Ok(Vec::new());
        }
        Ok::<_, ReconcileError>(
            pool_api
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(|p| (p.name_any(), p.spec.sandbox_template_ref.name))
                .collect(),
        )
    };
    let pool_pods = async {
        if (claim.spec.warm_pool == kinetic_api::agents::warm_pool_policy::NONE
            && claim.spec.warm_pool_ref_name().is_none())
            || !claim.spec.env.is_empty()
        {
            return Ok(Vec::new());
        }
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        let lp = ListParams::default().labels(&format!("{POOL_STATE_LABEL}={}", state::READY));
        Ok::<_, ReconcileError>(pods.list(&lp).await?.items)
    };
    let (template, claimed, pools, pool_pods) =
        tokio::try_join!(template, claimed_before(ctx, &ns, &uid), pools, pool_pods)?;
    Ok(Lookup { template, claimed, pools, pool_pods })
}

/// Takes a ready pod from the first of `pools` (name, template) that `policy` (a `v1alpha1`
/// claim's `warmpool`, or a `v1beta1` claim's `warmPoolRef`) allows and that has one.
async fn claim_from_pools(
    ctx: &Ctx,
    claim: &SandboxClaim,
    template: &str,
    policy: &str,
    pools: &[(String, String)],
    pool_pods: Vec<Pod>,
) -> Result<Option<(Pod, String)>, ReconcileError> {
    let ns = claim.namespace().unwrap_or_default();
    let owner = owner_ref(claim);
    for pool in decide::candidate_pools(policy, template, pools) {
        let listed = pool_pods.clone();
        match crate::podpool::claim_among(&ctx.client, &ns, &pool, &owner, listed).await {
            Ok(p) => return Ok(Some((p, pool))),
            Err(ClaimError::PoolEmpty { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// The claim's Sandbox: the template's pod (`pod_spec`, with the claim's `env`) with the
/// template's labels and annotations, the claim's `additionalPodMetadata` and `safeToEvict`
/// over them and the claim's UID label, owned by the claim.
fn new_sandbox(claim: &SandboxClaim, t: &SandboxTemplate, pod_spec: PodSpec) -> Sandbox {
    let mut labels = t.spec.pod_template.metadata.labels.clone();
    let mut annotations = t.spec.pod_template.metadata.annotations.clone();
    let extra = &claim.spec.additional_pod_metadata;
    labels.extend(extra.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    annotations.extend(extra.annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(v) = &claim.spec.safe_to_evict {
        annotations.insert(SAFE_TO_EVICT_ANNOTATION.to_owned(), v.clone());
    }
    labels.insert(CLAIM_UID_LABEL.to_owned(), claim.uid().unwrap_or_default());
    let spec = SandboxSpec {
        pod_template: PodTemplate { spec: pod_spec, metadata: PodMetadata { labels, annotations } },
        volume_claim_templates: t.spec.volume_claim_templates.clone(),
        service: t.spec.service,
        ..SandboxSpec::default()
    };
    let mut sb = Sandbox::new(&claim.name_any(), spec);
    sb.metadata.namespace = claim.namespace();
    sb.metadata.owner_references = Some(vec![owner_ref(claim)]);
    sb.metadata.annotations =
        Some(BTreeMap::from([(TEMPLATE_REF_ANNOTATION.to_owned(), t.name_any())]));
    sb.metadata.labels =
        Some(BTreeMap::from([(LAUNCH_TYPE_LABEL.to_owned(), launch_type::COLD.to_owned())]));
    sb
}

async fn write_status(
    ctx: &Ctx,
    claim: &SandboxClaim,
    sb: Option<&Sandbox>,
    v: &decide::Verdict,
) -> Result<(), ReconcileError> {
    let old = claim.status.clone().unwrap_or_default();
    let sandbox = sb.map_or_else(ClaimedSandbox::default, |s| ClaimedSandbox {
        name: s.name_any(),
        pod_ips: s.status.as_ref().map(|st| st.pod_ips.clone()).unwrap_or_default(),
    });
    let generation = claim.metadata.generation;
    let mut conditions = vec![decide::condition_of(v, generation, &old.conditions)];
    // The Sandbox's `Finished`, mirrored (upstream v1beta1).
    let finished = sb
        .and_then(|s| s.status.as_ref())
        .and_then(|st| st.conditions.iter().find(|c| c.type_ == condition::FINISHED));
    if let Some(f) = finished {
        let v = decide::Verdict {
            ready: f.status == "True",
            reason: if f.reason == kinetic_api::agents::reason::POD_FAILED {
                kinetic_api::agents::reason::POD_FAILED
            } else {
                kinetic_api::agents::reason::POD_SUCCEEDED
            },
            message: f.message.clone(),
        };
        conditions.push(decide::typed_condition(
            condition::FINISHED,
            &v,
            generation,
            &old.conditions,
        ));
    }
    let st = SandboxClaimStatus { conditions, sandbox };
    if old == st {
        return Ok(());
    }
    let api: Api<SandboxClaim> =
        Api::namespaced(ctx.client.clone(), &claim.namespace().unwrap_or_default());
    let mut status = serde_json::to_value(&st)?;
    status["sandbox"] = super::nulled(status["sandbox"].take(), &["name", "podIPs"]);
    let body = json!({"metadata": {"resourceVersion": claim.resource_version()}, "status": status});
    api.patch_status(&claim.name_any(), &PatchParams::default(), &Patch::Merge(&body)).await?;
    Ok(())
}
