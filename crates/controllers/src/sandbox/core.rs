//! The Sandbox reconciler: one pod and one headless Service per Sandbox, as upstream's
//! `controllers/sandbox_controller.go` makes them.
//!
//! - The pod is named after the Sandbox, or the pod named in `agents.x-k8s.io/pod-name` (a
//!   warm pool pod a claim handed over). Such a pod is adopted — its controller reference moved
//!   to the Sandbox, the `sandbox-name-hash` label and the template's labels and annotations
//!   added, the pool
//!   state set `specialized` so the pool's timeout leaves it alone — in one conditional write,
//!   and only when it has no controller or the Sandbox's own controller (the claim that took
//!   it from the pool): naming another's pod in the annotation does not take it.
//! - A new pod first gets its `volumeClaimTemplates`' PersistentVolumeClaims ([`super::volumes`]).
//! - The Service (headless, selecting the `sandbox-name-hash` label) is kept unless
//!   `spec.service` is `false`.
//! - `replicas: 0` / `operatingMode: Suspended` delete the pod; past `shutdownTime` the pod and
//!   Service are deleted and, with `shutdownPolicy: Delete`, the Sandbox too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kinetic_api::agents::{
    POD_NAME_ANNOTATION, SANDBOX_NAME_HASH_LABEL, Sandbox, SandboxStatus, condition,
};
use kinetic_api::pool::{POOL_LABEL, POOL_STATE_LABEL, state};
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use serde_json::json;

use super::decide::{self, SandboxState};
use super::{Ctx, ReconcileError, controller_of, owner_ref};

/// The cluster domain of `status.serviceFQDN` (upstream's default `--cluster-domain`).
const CLUSTER_DOMAIN: &str = "cluster.local";

pub(super) async fn reconcile(
    sb: Arc<Sandbox>,
    ctx: Arc<super::Ctx>,
) -> Result<Action, ReconcileError> {
    let obj = sb.clone();
    ctx.backoff.reconcile(&*obj, pass(sb, ctx.clone())).await
}

async fn pass(sb: Arc<Sandbox>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    ensure(&ctx, &sb, None, false).await.map(|(a, _)| a)
}

/// One reconcile of `sb`: its pod (created or adopted), its Service, its status. Returns what
/// to do next and the status `sb` has now (`None` when `sb` is going or was deleted).
///
/// The claim reconciler calls this on the Sandbox it just created, so a claim answered from a
/// warm pool is Ready within its own reconcile instead of after two more watch round trips.
/// Both writers use `sb`'s and the pod's resourceVersion: when the Sandbox reconciler runs on
/// the same Sandbox at the same time, one of them gets 409 Conflict and the other's writes
/// stand. `known_pod` is the pod as the caller just read or wrote it (the claim's warm pod),
/// used instead of reading it again. With `defer_status` the status is returned unwritten, for
/// the caller to write with [`put_status`] beside its own writes.
///
/// # Errors
/// An API request failed (409 included).
pub(super) async fn ensure(
    ctx: &Ctx,
    sb: &Sandbox,
    known_pod: Option<&Pod>,
    defer_status: bool,
) -> Result<(Action, Option<SandboxStatus>), ReconcileError> {
    if sb.metadata.deletion_timestamp.is_some() {
        return Ok((Action::await_change(), None));
    }
    let ns = sb.namespace().unwrap_or_default();
    let name = sb.name_any();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = sb.uid().unwrap_or_default();
    let pod_name =
        sb.annotations().get(POD_NAME_ANNOTATION).cloned().unwrap_or_else(|| name.clone());
    let hash = decide::name_hash(&name);
    let mut status = SandboxStatus {
        selector: format!("{SANDBOX_NAME_HASH_LABEL}={hash}"),
        ..SandboxStatus::default()
    };
    let mut requeue = None;

    // -- Expiry (upstream `Lifecycle`). -------------------------------------------------------
    if let Some(left) = decide::expiry(sb.spec.shutdown_time.as_ref(), jiff::Timestamp::now()) {
        if left.is_zero() {
            delete_owned(&pods, &pod_name, &uid).await?;
            delete_owned(&services, &name, &uid).await?;
            if sb.spec.shutdown_policy.as_deref() == Some("Delete") {
                let api: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &ns);
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
                return Ok((Action::await_change(), None));
            }
            let v = decide::sandbox_ready(SandboxState::Expired);
            let st = full_status(sb, status, &v, None);
            put_status(ctx, sb, &st).await?;
            return Ok((Action::await_change(), Some(st)));
        }
        requeue = Some(left);
    }

    // -- The pod and the headless Service, side by side (neither needs the other). ----------
    let running = sb.is_running();
    let pod_step = async {
        let mut pod = match known_pod.filter(|p| p.metadata.name.as_deref() == Some(&pod_name)) {
            Some(p) => Some(p.clone()),
            None => pods.get_opt(&pod_name).await?,
        };
        let mut not_owned = false;
        if !running {
            delete_owned(&pods, &pod_name, &uid).await?;
            pod = None;
        } else if let Some(p) = pod.take() {
            match controller_of(&p).map(|o| o.uid.as_str()) {
                Some(u) if u == uid => pod = Some(p),
                owner if owner.is_none() || owner == controller_of(sb).map(|o| o.uid.as_str()) => {
                    pod = adopt(&pods, sb, &p, &hash).await?;
                }
                _ => not_owned = true,
            }
        } else {
            if !sb.spec.volume_claim_templates.is_empty() {
                let pvcs = Api::namespaced(ctx.client.clone(), &ns);
                super::volumes::ensure_claims(&pvcs, sb).await?;
            }
            let fresh = new_pod(sb, &pod_name, &hash);
            match pods.create(&PostParams::default(), &fresh).await {
                Ok(p) => pod = Some(p),
                // Created meanwhile: the next reconcile finds it.
                Err(kube::Error::Api(s)) if s.code == 409 => return Ok(None),
                Err(e) => return Err(ReconcileError::from(e)),
            }
        }
        Ok(Some((pod, not_owned)))
    };
    let service_wanted = sb.spec.service != Some(false) && running;
    let service_step = async {
        if service_wanted {
            return ensure_service(&services, sb, &hash).await;
        }
        if sb.spec.service == Some(false) {
            delete_owned(&services, &name, &uid).await?;
        }
        Ok(false)
    };
    let (pod_found, service_exists) = tokio::try_join!(pod_step, service_step)?;
    let Some((pod, not_owned)) = pod_found else {
        return Ok((Action::requeue(Duration::from_millis(50)), None));
    };
    if service_exists {
        status.service = name.clone();
        status.service_fqdn = format!("{name}.{ns}.svc.{CLUSTER_DOMAIN}");
    }

    let state = if not_owned {
        SandboxState::PodNotOwned(&pod_name)
    } else if !running {
        SandboxState::Suspended
    } else {
        SandboxState::Running { pod: pod.as_ref(), service_wanted, service_exists }
    };
    if let Some(p) = pod.as_ref().filter(|_| !not_owned) {
        status.replicas = 1;
        let st = p.status.as_ref();
        status.pod_ips = st
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| ips.iter().map(|i| i.ip.clone()).collect())
            .or_else(|| st.and_then(|s| s.pod_ip.clone()).map(|ip| vec![ip]))
            .unwrap_or_default();
        status.node_name = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
    }
    let v = decide::sandbox_ready(state);
    let finished = decide::sandbox_finished(pod.as_ref().filter(|_| !not_owned));
    let st = full_status(sb, status, &v, finished.as_ref());
    if !defer_status {
        put_status(ctx, sb, &st).await?;
    }
    Ok((requeue.map_or_else(Action::await_change, Action::requeue), Some(st)))
}

/// The pod of `sb` from its template: the template's labels and annotations, the name-hash
/// label, the Sandbox as controller.
fn new_pod(sb: &Sandbox, name: &str, hash: &str) -> Pod {
    let t = &sb.spec.pod_template;
    let mut labels = t.metadata.labels.clone();
    labels.insert(SANDBOX_NAME_HASH_LABEL.to_owned(), hash.to_owned());
    let spec = super::volumes::with_claim_volumes(
        t.spec.clone(),
        &sb.spec.volume_claim_templates,
        &sb.name_any(),
    );
    let mut pod = Pod { spec: Some(spec), ..Pod::default() };
    pod.metadata.name = Some(name.to_owned());
    pod.metadata.namespace = sb.namespace();
    pod.metadata.labels = Some(labels);
    pod.metadata.annotations =
        (!t.metadata.annotations.is_empty()).then(|| t.metadata.annotations.clone());
    pod.metadata.owner_references = Some(vec![owner_ref(sb)]);
    pod
}

/// Hands `p` to `sb` in one write under `p`'s resourceVersion (a 409 retries the reconcile).
async fn adopt(
    pods: &Api<Pod>,
    sb: &Sandbox,
    p: &Pod,
    hash: &str,
) -> Result<Option<Pod>, ReconcileError> {
    let mut labels: BTreeMap<String, String> = sb.spec.pod_template.metadata.labels.clone();
    labels.insert(SANDBOX_NAME_HASH_LABEL.to_owned(), hash.to_owned());
    let mut body = json!({"metadata": {
        "resourceVersion": p.resource_version(),
        "labels": labels,
        "ownerReferences": [owner_ref(sb)],
    }});
    // The Sandbox's annotations too (a claim's `additionalPodMetadata` and `safeToEvict`).
    if !sb.spec.pod_template.metadata.annotations.is_empty() {
        body["metadata"]["annotations"] = json!(sb.spec.pod_template.metadata.annotations);
    }
    // A warm pool pod: handed over, so the pool's specialisation timeout does not delete it.
    if p.labels().contains_key(POOL_LABEL) {
        body["metadata"]["labels"][POOL_STATE_LABEL] = json!(state::SPECIALIZED);
    }
    match pods.patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(&body)).await {
        Ok(p) => {
            tracing::debug!(sandbox = %sb.name_any(), pod = %p.name_any(), "adopted");
            Ok(Some(p))
        }
        Err(e) => Err(e.into()),
    }
}

async fn ensure_service(
    api: &Api<Service>,
    sb: &Sandbox,
    hash: &str,
) -> Result<bool, ReconcileError> {
    let name = sb.name_any();
    let ours = |s: &Service| controller_of(s).is_some_and(|o| Some(&o.uid) == sb.uid().as_ref());
    // A Sandbox that reports no Service yet most likely has none: create it straight away
    // (one request, not a read and a create).
    let reported = sb.status.as_ref().is_some_and(|s| !s.service.is_empty());
    if reported && let Some(s) = api.get_opt(&name).await? {
        return Ok(ours(&s));
    }
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": sb.namespace(), "ownerReferences": [owner_ref(sb)],
                     "labels": {SANDBOX_NAME_HASH_LABEL: hash}},
        "spec": {"clusterIP": "None", "selector": {SANDBOX_NAME_HASH_LABEL: hash}},
    }))?;
    match api.create(&PostParams::default(), &svc).await {
        Ok(_) => Ok(true),
        // Created meanwhile: by the other of the claim's and the Sandbox's reconciles, or by
        // someone else.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            Ok(api.get_opt(&name).await?.is_some_and(|s| ours(&s)))
        }
        Err(e) => Err(e.into()),
    }
}

/// Deletes `name` if `owner` controls it.
async fn delete_owned<K>(api: &Api<K>, name: &str, owner: &str) -> Result<(), ReconcileError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(obj) = api.get_opt(name).await? else { return Ok(()) };
    let ours = obj
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == owner);
    if ours && obj.meta().deletion_timestamp.is_none() {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `st` with condition `Ready` from `v` (and `Finished` from `finished`), transition times
/// kept from `sb`'s status.
fn full_status(
    sb: &Sandbox,
    mut st: SandboxStatus,
    v: &decide::Verdict,
    finished: Option<&decide::Verdict>,
) -> SandboxStatus {
    let old = sb.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let generation = sb.metadata.generation;
    st.conditions = vec![decide::condition_of(v, generation, old)];
    if let Some(f) = finished {
        st.conditions.push(decide::typed_condition(condition::FINISHED, f, generation, old));
    }
    st
}

/// Writes `st` as `sb`'s status (under `sb`'s resourceVersion) unless it is unchanged.
///
/// # Errors
/// The write failed (409 when `sb` changed meanwhile).
pub(super) async fn put_status(
    ctx: &Ctx,
    sb: &Sandbox,
    st: &SandboxStatus,
) -> Result<(), ReconcileError> {
    if sb.status.as_ref() == Some(st) || (sb.status.is_none() && *st == SandboxStatus::default()) {
        return Ok(());
    }
    let api: Api<Sandbox> =
        Api::namespaced(ctx.client.clone(), &sb.namespace().unwrap_or_default());
    let body = json!({"metadata": {"resourceVersion": sb.resource_version()},
                      "status": super::nulled(serde_json::to_value(st)?, &["service", "serviceFQDN", "podIPs", "nodeName"])});
    api.patch_status(&sb.name_any(), &PatchParams::default(), &Patch::Merge(&body)).await?;
    Ok(())
}
