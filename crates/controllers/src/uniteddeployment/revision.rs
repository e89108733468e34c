//! ControllerRevisions of a UnitedDeployment, as upstream's `revision.go` keeps them with
//! Kubernetes' `history` package: one per distinct `spec.template`, named `{ud}-{hash}`, data
//! `{"spec":{"template":{...,"$patch":"replace"}}}`, labelled with the selector's and the
//! template's labels; a template seen before gets its old revision back with the next number;
//! beyond `revisionHistoryLimit` the oldest go, except the current and updated ones.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kinetic_api::kruise::uniteddeployment::{DEFAULT_REVISION_HISTORY_LIMIT, UnitedDeployment};
use kube::ResourceExt as _;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::{Ctx, ReconcileError, owner_ref};

/// The revisions of one UnitedDeployment after [`sync`].
pub struct Revisions {
    pub update: Arc<ControllerRevision>,
    pub current: Arc<ControllerRevision>,
    /// Owned revisions, oldest first.
    pub all: Vec<Arc<ControllerRevision>>,
    pub collision_count: i32,
}

/// Finds or creates the revision of the current template and reads the current one.
pub async fn sync(ctx: &Ctx, ud: &UnitedDeployment) -> Result<Revisions, ReconcileError> {
    let ns = ud.namespace().unwrap_or_default();
    let uid = ud.uid().unwrap_or_default();
    let mut all: Vec<Arc<ControllerRevision>> = ctx
        .revisions
        .state()
        .into_iter()
        .filter(|r| {
            r.namespace().as_deref() == Some(ns.as_str())
                && r.owner_references().iter().any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .collect();
    all.sort_by_key(|r| r.revision);
    let template = serde_json::to_value(&ud.spec.template).unwrap_or(Value::Null);
    let data = kinetic_rollout::revision::revision_data(&template);
    let status = ud.status.clone().unwrap_or_default();
    let mut collision_count = status.collision_count.unwrap_or(0);
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    let max = all.last().map_or(0, |r| r.revision);
    let existing = all.iter().find(|r| r.data.as_ref().map(|d| &d.0) == Some(&data)).cloned();
    let update = match existing {
        Some(r) if r.revision == max => r,
        Some(r) => {
            let patch = Patch::Merge(json!({"revision": max + 1}));
            Arc::new(api.patch(&r.name_any(), &PatchParams::default(), &patch).await?)
        }
        None => loop {
            let hash = kinetic_rollout::revision::revision_hash(&data, Some(collision_count));
            let name = kinetic_rollout::revision::revision_name(&ud.name_any(), &hash);
            let mut labels = ud.spec.selector.match_labels.clone().unwrap_or_default();
            if let Some((_, t)) = ud.spec.template.get() {
                labels.extend(t.metadata.labels.clone().unwrap_or_default());
            }
            labels.insert("controller.kubernetes.io/hash".to_owned(), hash.clone());
            let rev = ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    owner_references: Some(vec![owner_ref(ud)]),
                    ..Default::default()
                },
                data: Some(RawExtension(data.clone())),
                revision: max + 1,
            };
            match create_canonical(&ctx.client, &api, &rev).await {
                Ok(r) => break Arc::new(r),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let cur = api.get(&name).await?;
                    let ours = cur.owner_references().iter().any(|o| o.uid == uid);
                    if ours && cur.data.as_ref().map(|d| &d.0) == Some(&data) {
                        break Arc::new(cur);
                    }
                    collision_count += 1;
                }
                Err(e) => return Err(e.into()),
            }
        },
    };
    all.retain(|r| r.name_any() != update.name_any());
    all.push(update.clone());
    all.sort_by_key(|r| r.revision);
    let current = (!status.current_revision.is_empty())
        .then(|| all.iter().find(|r| r.name_any() == status.current_revision).cloned())
        .flatten()
        .unwrap_or_else(|| update.clone());
    Ok(Revisions { update, current, all, collision_count })
}

/// Creates `rev` with its body in Go's canonical JSON (see the CloneSet's revisions).
async fn create_canonical(
    client: &kube::Client,
    api: &Api<ControllerRevision>,
    rev: &ControllerRevision,
) -> Result<ControllerRevision, kube::Error> {
    let value = serde_json::to_value(rev).map_err(kube::Error::SerdeError)?;
    let body = kinetic_rollout::revision::go_json(&value).into_bytes();
    let req = kube::core::Request::new(api.resource_url())
        .create(&PostParams::default(), body)
        .map_err(kube::Error::BuildRequest)?;
    client.request::<ControllerRevision>(req).await
}

/// Deletes the oldest revisions beyond `revisionHistoryLimit` (upstream's
/// `cleanExpiredRevision`), never the current or updated one.
pub async fn truncate(
    ctx: &Ctx,
    ud: &UnitedDeployment,
    revs: &Revisions,
) -> Result<(), ReconcileError> {
    let limit =
        usize::try_from(ud.spec.revision_history_limit.unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT))
            .unwrap_or(0);
    let exceed = revs.all.len().saturating_sub(limit);
    if exceed == 0 {
        return Ok(());
    }
    let api: Api<ControllerRevision> =
        Api::namespaced(ctx.client.clone(), &ud.namespace().unwrap_or_default());
    let live = [revs.update.name_any(), revs.current.name_any()];
    for r in revs.all.iter().take(exceed) {
        if live.contains(&r.name_any()) {
            continue;
        }
        match api.delete(&r.name_any(), &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
