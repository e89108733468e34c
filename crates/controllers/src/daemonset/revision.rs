//! A DaemonSet's ControllerRevisions, as upstream's `constructHistory` and `cleanupHistory`
//! keep them (`pkg/controller/daemon/update.go`): one revision per distinct pod template,
//! named `{daemonset}-{hash}`, labelled `controller-revision-hash: {hash}` (the value pods carry),
//! with the CloneSet's data shape `{"spec":{"template":{...,"$patch":"replace"}}}` and a
//! `revision` number that grows; going back to an older template gives its revision the next
//! number.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kinetic_api::kruise::CONTROLLER_REVISION_HASH_LABEL;
use kube::ResourceExt as _;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use super::{Ctx, Ds, ReconcileError};

/// The revisions of one DaemonSet after [`sync`].
pub struct Revisions {
    /// The revision of the current template.
    pub current: Arc<ControllerRevision>,
    /// Every revision the DaemonSet owns, oldest first (the current one included).
    pub all: Vec<Arc<ControllerRevision>>,
    /// `current`'s `controller-revision-hash`.
    pub hash: String,
    pub collision_count: i32,
}

impl Revisions {
    /// The revision whose hash a pod carries.
    pub fn of_hash(&self, hash: &str) -> Option<&Arc<ControllerRevision>> {
        self.all.iter().find(|r| hash_of(r) == Some(hash))
    }
}

/// A revision's `controller-revision-hash` label.
pub fn hash_of(r: &ControllerRevision) -> Option<&str> {
    r.metadata.labels.as_ref()?.get(CONTROLLER_REVISION_HASH_LABEL).map(String::as_str)
}

/// The pod template a revision records, without the `$patch` directive.
pub fn template_of(r: &ControllerRevision) -> Option<Value> {
    crate::cloneset::revision::template_of(r)
}

/// Finds or creates the revision of the current template (upstream `constructHistory`).
pub async fn sync(ctx: &Ctx, ds: &Ds, owner: &OwnerReference) -> Result<Revisions, ReconcileError> {
    let mut all: Vec<Arc<ControllerRevision>> = ctx
        .revisions
        .state()
        .into_iter()
        .filter(|r| {
            r.namespace().as_deref() == Some(ds.ns.as_str())
                && r.owner_references()
                    .iter()
                    .any(|o| o.controller == Some(true) && o.uid == ds.uid)
        })
        .collect();
    all.sort_by_key(|r| r.revision);
    let template = serde_json::to_value(&ds.spec.template).unwrap_or(Value::Null);
    let data = kinetic_rollout::revision::revision_data(&template);
    let mut collision_count = ds.status.collision_count.unwrap_or(0);
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ds.ns);
    let max = all.last().map_or(0, |r| r.revision);
    let existing = all.iter().find(|r| r.data.as_ref().map(|d| &d.0) == Some(&data)).cloned();
    let current = match existing {
        Some(r) if r.revision == max => r,
        Some(r) => {
            let body = json!({"revision": max + 1});
            Arc::new(api.patch(&r.name_any(), &PatchParams::default(), &Patch::Merge(body)).await?)
        }
        None => loop {
            let hash = kinetic_rollout::revision::revision_hash(&data, Some(collision_count));
            let name = kinetic_rollout::revision::revision_name(&ds.name, &hash);
            let mut labels = ds.spec.template.metadata.as_ref().and_then(|m| m.labels.clone());
            labels
                .get_or_insert_with(Default::default)
                .insert(CONTROLLER_REVISION_HASH_LABEL.to_owned(), hash.clone());
            let rev = ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ds.ns.clone()),
                    labels,
                    owner_references: Some(vec![owner.clone()]),
                    ..Default::default()
                },
                data: Some(RawExtension(data.clone())),
                revision: max + 1,
            };
            match crate::cloneset::revision::create_canonical(&ctx.client, &api, &rev).await {
                Ok(r) => break Arc::new(r),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let cur = api.get(&name).await?;
                    let ours = cur.owner_references().iter().any(|o| o.uid == ds.uid);
                    if ours && cur.data.as_ref().map(|d| &d.0) == Some(&data) {
                        break Arc::new(cur);
                    }
                    collision_count += 1;
                }
                Err(e) => return Err(e.into()),
            }
        },
    };
    all.retain(|r| r.name_any() != current.name_any());
    all.push(current.clone());
    all.sort_by_key(|r| r.revision);
    let hash = hash_of(&current).map_or_else(
        || kinetic_rollout::pod::short_hash(&current.name_any()).to_owned(),
        str::to_owned,
    );
    Ok(Revisions { current, all, hash, collision_count })
}

/// Deletes the oldest revisions beyond `revisionHistoryLimit` that no pod uses (upstream
/// `cleanupHistory`).
pub async fn truncate(
    ctx: &Ctx,
    ds: &Ds,
    revs: &Revisions,
    in_use: &[&str],
) -> Result<(), ReconcileError> {
    let limit = usize::try_from(ds.spec.revision_history_limit.unwrap_or(10)).unwrap_or(0);
    let old: Vec<&Arc<ControllerRevision>> = revs
        .all
        .iter()
        .filter(|r| r.name_any() != revs.current.name_any())
        .filter(|r| hash_of(r).is_none_or(|h| !in_use.contains(&h)))
        .collect();
    if old.len() <= limit {
        return Ok(());
    }
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ds.ns);
    for r in &old[..old.len() - limit] {
        match api.delete(&r.name_any(), &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
