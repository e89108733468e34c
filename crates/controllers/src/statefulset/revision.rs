//! ControllerRevisions of a StatefulSet, as upstream's `history` package keeps them (and
//! `cloneset::revision` for CloneSets): one revision per distinct pod template, named
//! `{set}-{hash}` with the data `{"spec":{"template":{...,"$patch":"replace"}}}`
//! (`getPatch`), a `revision` number that grows, a rollback re-using the older revision with
//! the next number, and `collisionCount` on a hash collision.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::ResourceExt as _;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::{Ctx, ReconcileError, Set};

pub use crate::cloneset::revision::template_of;

/// The revisions of one set after [`sync`].
pub struct Revisions {
    /// The revision of the current template.
    pub update: Arc<ControllerRevision>,
    /// `status.currentRevision`, or `update` on the first pass.
    pub current: Arc<ControllerRevision>,
    /// All revisions the set owns, oldest first.
    pub all: Vec<Arc<ControllerRevision>>,
    pub collision_count: i32,
}

impl Revisions {
    /// The revision a pod is at, from its `controller-revision-hash` label.
    pub fn of_pod(&self, pod: &Pod) -> Option<&Arc<ControllerRevision>> {
        self.all.iter().find(|r| kinetic_rollout::pod::matches_revision(pod, &r.name_any()))
    }
}

/// Finds or creates the revision of the current template and reads the current one.
pub async fn sync(ctx: &Ctx, set: &Set) -> Result<Revisions, ReconcileError> {
    let mut all: Vec<Arc<ControllerRevision>> = ctx
        .revisions
        .state()
        .into_iter()
        .filter(|r| {
            r.namespace().as_deref() == Some(set.ns.as_str())
                && r.owner_references()
                    .iter()
                    .any(|o| o.controller == Some(true) && o.uid == set.uid)
        })
        .collect();
    all.sort_by_key(|r| r.revision);
    let template = serde_json::to_value(&set.spec.template)?;
    let data = kinetic_rollout::revision::revision_data(&template);
    let mut collision_count = set.status.collision_count.unwrap_or(0);
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &set.ns);
    let max = all.last().map_or(0, |r| r.revision);
    let existing = all.iter().find(|r| r.data.as_ref().map(|d| &d.0) == Some(&data)).cloned();
    let update = match existing {
        Some(r) if r.revision == max => r,
        Some(r) => {
            let body = json!({"revision": max + 1});
            Arc::new(api.patch(&r.name_any(), &PatchParams::default(), &Patch::Merge(body)).await?)
        }
        None => loop {
            let hash = kinetic_rollout::revision::revision_hash(&data, Some(collision_count));
            let name = kinetic_rollout::revision::revision_name(&set.name, &hash);
            let mut labels =
                set.spec.selector.as_ref().and_then(|s| s.match_labels.clone()).unwrap_or_default();
            labels.insert(
                kinetic_api::kruise::CONTROLLER_REVISION_HASH_LABEL.to_owned(),
                kinetic_rollout::pod::revision_label(&name).to_owned(),
            );
            let rev = ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(set.ns.clone()),
                    labels: Some(labels),
                    owner_references: Some(vec![set.owner.clone()]),
                    ..Default::default()
                },
                data: Some(RawExtension(data.clone())),
                revision: max + 1,
            };
            match crate::cloneset::revision::create_canonical(&ctx.client, &api, &rev).await {
                Ok(r) => break Arc::new(r),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let cur = api.get(&name).await?;
                    let ours = cur.owner_references().iter().any(|o| o.uid == set.uid);
                    if ours && cur.data.as_ref().map(|d| &d.0) == Some(&data) {
                        break Arc::new(cur);
                    }
                    collision_count += 1;
                }
                Err(e) => {
                    ctx.events.send(set.event(
                        "Warning",
                        "FailedCreate",
                        format!("create ControllerRevision {name} failed: {}", crate::report(&e)),
                    ));
                    return Err(e.into());
                }
            }
        },
    };
    all.retain(|r| r.name_any() != update.name_any());
    all.push(update.clone());
    all.sort_by_key(|r| r.revision);
    let current = set
        .status
        .current_revision
        .as_deref()
        .and_then(|c| all.iter().find(|r| r.name_any() == c).cloned())
        .unwrap_or_else(|| update.clone());
    Ok(Revisions { update, current, all, collision_count })
}

/// Deletes the oldest revisions beyond `revisionHistoryLimit` that no pod uses.
pub async fn truncate(
    ctx: &Ctx,
    set: &Set,
    revs: &Revisions,
    in_use: &[&str],
) -> Result<(), ReconcileError> {
    let limit = usize::try_from(set.spec.revision_history_limit.unwrap_or(10)).unwrap_or(0);
    let old: Vec<&Arc<ControllerRevision>> = revs
        .all
        .iter()
        .filter(|r| {
            let n = r.name_any();
            n != revs.update.name_any()
                && n != revs.current.name_any()
                && !in_use.iter().any(|u| *u == n || *u == kinetic_rollout::pod::short_hash(&n))
        })
        .collect();
    if old.len() <= limit {
        return Ok(());
    }
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &set.ns);
    for r in &old[..old.len() - limit] {
        match api.delete(&r.name_any(), &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
