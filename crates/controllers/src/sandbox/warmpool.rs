//! The SandboxWarmPool reconciler: a warm pool is a `kinetic.dev` PodPool of the same name,
//! owned by the warm pool, made from the SandboxTemplate's pod, of fixed size `spec.replicas`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kinetic_api::agents::{SandboxTemplate, SandboxWarmPool, SandboxWarmPoolStatus, reason};
use kinetic_api::pool::{POOL_LABEL, POOL_STATE_LABEL, PodPool, PodPoolSpec, state};
use kube::ResourceExt as _;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use serde_json::json;

use super::decide::{self, Verdict};
use super::{Ctx, ReconcileError, controller_of, owner_ref};

/// How often a warm pool whose template is missing looks again (besides the template watch).
const TEMPLATE_RETRY: Duration = Duration::from_secs(30);

pub(super) async fn reconcile(
    p: Arc<SandboxWarmPool>,
    ctx: Arc<Ctx>,
) -> Result<Action, ReconcileError> {
    let obj = p.clone();
    ctx.backoff.reconcile(&*obj, pass(p, ctx.clone())).await
}

/// The pod spec a template's sandboxes get: upstream's claim and warm pool controllers
/// default `automountServiceAccountToken` to false ("secure by default").
pub(super) fn template_pod_spec(t: &SandboxTemplate) -> PodSpec {
    let mut spec = t.spec.pod_template.spec.clone();
    spec.automount_service_account_token.get_or_insert(false);
    spec
}

fn pool_spec(swp: &SandboxWarmPool, t: &SandboxTemplate, old: Option<&PodPoolSpec>) -> PodPoolSpec {
    let meta = &t.spec.pod_template.metadata;
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: (!meta.labels.is_empty()).then(|| meta.labels.clone()),
            annotations: (!meta.annotations.is_empty()).then(|| meta.annotations.clone()),
            ..ObjectMeta::default()
        }),
        spec: Some(template_pod_spec(t)),
    };
    let n = swp.spec.replicas.max(0);
    PodPoolSpec {
        template,
        min_ready: n,
        max_ready: n,
        code: None,
        specialization_timeout_seconds: old
            .map_or(kinetic_api::pool::DEFAULT_SPECIALIZATION_TIMEOUT_SECONDS, |o| {
                o.specialization_timeout_seconds
            }),
    }
}

async fn pass(swp: Arc<SandboxWarmPool>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    if swp.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = swp.namespace().unwrap_or_default();
    let name = swp.name_any();
    let templates: Api<SandboxTemplate> = Api::namespaced(ctx.client.clone(), &ns);
    let pools: Api<PodPool> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = format!("{POOL_LABEL}={name},{POOL_STATE_LABEL}={}", state::READY);
    let mut status = SandboxWarmPoolStatus { selector, ..SandboxWarmPoolStatus::default() };
    let tname = &swp.spec.sandbox_template_ref.name;
    let existing = pools.get_opt(&name).await?;
    if let Some(pp) = &existing {
        if controller_of(pp).map(|o| &o.uid) != swp.uid().as_ref() {
            let v = Verdict {
                ready: false,
                reason: reason::POD_POOL_CONFLICT,
                message: format!("PodPool {name:?} exists and is not this warm pool's"),
            };
            write_status(&ctx, &swp, status, &v).await?;
            return Ok(Action::await_change());
        }
        let st = pp.status.clone().unwrap_or_default();
        status.replicas = st.ready + st.starting;
        status.ready_replicas = st.ready;
    }
    let Some(t) = templates.get_opt(tname).await? else {
        let v = Verdict {
            ready: false,
            reason: reason::TEMPLATE_NOT_FOUND,
            message: format!("SandboxTemplate {tname:?} not found"),
        };
        write_status(&ctx, &swp, status, &v).await?;
        return Ok(Action::requeue(TEMPLATE_RETRY));
    };
    let want = pool_spec(&swp, &t, existing.as_ref().map(|p| &p.spec));
    match &existing {
        None => {
            let mut pp = PodPool::new(&name, want);
            pp.metadata.namespace = Some(ns.clone());
            pp.metadata.owner_references = Some(vec![owner_ref(&*swp)]);
            let labels = BTreeMap::from([("agents.x-k8s.io/warm-pool".to_owned(), name.clone())]);
            pp.metadata.labels = Some(labels);
            match pools.create(&PostParams::default(), &pp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Some(pp) if pp.spec != want => {
            let body =
                json!({"metadata": {"resourceVersion": pp.resource_version()}, "spec": want});
            pools.patch(&name, &PatchParams::default(), &Patch::Merge(&body)).await?;
        }
        Some(_) => {}
    }
    let v = if status.ready_replicas >= swp.spec.replicas {
        Verdict {
            ready: true,
            reason: reason::POOL_READY,
            message: format!("{} of {} sandboxes ready", status.ready_replicas, swp.spec.replicas),
        }
    } else {
        Verdict {
            ready: false,
            reason: reason::POOL_NOT_READY,
            message: format!("{} of {} sandboxes ready", status.ready_replicas, swp.spec.replicas),
        }
    };
    write_status(&ctx, &swp, status, &v).await?;
    Ok(Action::await_change())
}

async fn write_status(
    ctx: &Ctx,
    swp: &SandboxWarmPool,
    mut st: SandboxWarmPoolStatus,
    v: &Verdict,
) -> Result<(), ReconcileError> {
    let old = swp.status.clone().unwrap_or_default();
    st.conditions = vec![decide::condition_of(v, swp.metadata.generation, &old.conditions)];
    if old == st {
        return Ok(());
    }
    let api: Api<SandboxWarmPool> =
        Api::namespaced(ctx.client.clone(), &swp.namespace().unwrap_or_default());
    let status = super::nulled(serde_json::to_value(&st)?, &["replicas", "readyReplicas"]);
    let body = json!({"metadata": {"resourceVersion": swp.resource_version()}, "status": status});
    api.patch_status(&swp.name_any(), &PatchParams::default(), &Patch::Merge(&body)).await?;
    Ok(())
}
