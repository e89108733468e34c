//! ControllerRevisions of a CloneSet, as upstream `revision/cloneset_revision.go` and the
//! `history` package keep them: one revision per distinct pod template, named
//! `{cloneset}-{hash}`, whose data is `{"spec":{"template":{...,"$patch":"replace"}}}`, with a
//! `revision` number that grows; going back to an older template re-uses its revision and gives
//! it the next number (so `kubectl rollout history`-style tools see it as the newest).

use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kinetic_api::kruise::cloneset::{CloneSet, DEFAULT_REVISION_HISTORY_LIMIT};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Resource as _, ResourceExt as _};
use serde_json::{Value, json};

use super::{Ctx, ReconcileError, owner_ref};

/// The revisions of one CloneSet after [`sync`].
pub struct Revisions {
    /// The revision pods should be at (built from the current template).
    pub update: Arc<ControllerRevision>,
    /// `status.currentRevision` (the last fully rolled out), or `update` on the first pass.
    pub current: Arc<ControllerRevision>,
    /// All revisions owned by the CloneSet, oldest first.
    pub all: Vec<Arc<ControllerRevision>>,
    pub collision_count: i32,
}

impl Revisions {
    /// The revision a pod is at, from its `controller-revision-hash` (full name) or
    /// `pod-template-hash` (short hash) label.
    pub fn of_pod(&self, pod: &Pod) -> Option<&Arc<ControllerRevision>> {
        self.all.iter().find(|r| kinetic_rollout::pod::matches_revision(pod, &r.name_any()))
    }
}

/// The pod template a revision records, as JSON without the `$patch` directive.
pub fn template_of(rev: &ControllerRevision) -> Option<Value> {
    let mut t = kinetic_rollout::inplace::template_of_revision(&rev.data.as_ref()?.0)?.clone();
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    Some(t)
}

fn revision_number(r: &ControllerRevision) -> i64 {
    r.revision
}

/// Finds or creates the revision of the current template and reads the current one.
pub async fn sync(ctx: &Ctx, cs: &CloneSet) -> Result<Revisions, ReconcileError> {
    let ns = cs.namespace().unwrap_or_default();
    let uid = cs.uid().unwrap_or_default();
    let mut all: Vec<Arc<ControllerRevision>> = ctx
        .revisions
        .state()
        .into_iter()
        .filter(|r| {
            r.namespace().as_deref() == Some(ns.as_str())
                && r.owner_references().iter().any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .collect();
    all.sort_by_key(|r| revision_number(r));
    let template = serde_json::to_value(&cs.spec.template).unwrap_or(Value::Null);
    let data = kinetic_rollout::revision::revision_data(&template);
    let status = cs.status.clone().unwrap_or_default();
    let mut collision_count = status.collision_count.unwrap_or(0);
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    let max = all.last().map_or(0, |r| revision_number(r));
    let existing = all.iter().find(|r| r.data.as_ref().map(|d| &d.0) == Some(&data)).cloned();
    let update = match existing {
        Some(r) if revision_number(&r) == max => r,
        Some(r) => {
            // A rollback to an older template: it becomes the newest revision.
            let patched = api
                .patch(
                    &r.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"revision": max + 1})),
                )
                .await?;
            Arc::new(patched)
        }
        None => loop {
            let hash = kinetic_rollout::revision::revision_hash(&data, Some(collision_count));
            let name = kinetic_rollout::revision::revision_name(&cs.name_any(), &hash);
            let mut labels = cs.spec.selector.match_labels.clone().unwrap_or_default();
            labels.insert(
                kinetic_api::kruise::CONTROLLER_REVISION_HASH_LABEL.to_owned(),
                kinetic_rollout::pod::revision_label(&name).to_owned(),
            );
            let rev = ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    annotations: cs.meta().annotations.clone().filter(|a| !a.is_empty()),
                    owner_references: Some(vec![owner_ref(cs)]),
                    ..Default::default()
                },
                data: Some(RawExtension(data.clone())),
                revision: max + 1,
            };
            match create_canonical(&ctx.client, &api, &rev).await {
                Ok(r) => break Arc::new(r),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    // Same name: ours with the same data (a stale cache) is fine; anything else
                    // is a hash collision, resolved as upstream with collisionCount.
                    let cur = api.get(&name).await?;
                    let ours = cur.owner_references().iter().any(|o| o.uid == uid);
                    if ours && cur.data.as_ref().map(|d| &d.0) == Some(&data) {
                        break Arc::new(cur);
                    }
                    collision_count += 1;
                }
                Err(e) => {
                    // Say it on the CloneSet, not only in the controller's log (issue 18).
                    ctx.events.send(crate::events::EventReq::for_object(
                        cs,
                        "Warning",
                        "FailedCreate",
                        format!("create ControllerRevision {name} failed: {}", crate::report(&e)),
                    ));
                    return Err(e.into());
                }
            }
        },
    };
    if !all.iter().any(|r| r.name_any() == update.name_any()) {
        all.push(update.clone());
    } else {
        for r in &mut all {
            if r.name_any() == update.name_any() {
                *r = update.clone();
            }
        }
    }
    all.sort_by_key(|r| revision_number(r));
    let current = status
        .current_revision
        .as_deref()
        .and_then(|c| all.iter().find(|r| r.name_any() == c).cloned())
        .unwrap_or_else(|| update.clone());
    Ok(Revisions { update, current, all, collision_count })
}

/// Creates `rev` with its body in Go's canonical JSON encoding (`encoding/json`: `&`, `<`, `>`,
/// U+2028 and U+2029 escaped), not serde's.
///
/// kube-apiserver keeps `data` as the bytes it received (protobuf storage) but re-encodes it with
/// `encoding/json` whenever it applies a patch, and then compares the two as bytes: a template
/// holding `&` (`sh -c "... & wait"`) written raw made every later patch of the revision fail
/// with `data: field is immutable`, so a rollback hung forever (issue 10). Bytes Go would write
/// itself survive that round trip unchanged.
pub(crate) async fn create_canonical(
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

/// Deletes the oldest revisions beyond `revisionHistoryLimit` that no pod uses.
pub async fn truncate(
    ctx: &Ctx,
    cs: &CloneSet,
    revs: &Revisions,
    in_use: &[&str],
) -> Result<(), ReconcileError> {
    let limit =
        usize::try_from(cs.spec.revision_history_limit.unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT))
            .unwrap_or(0);
    let live: Vec<&Arc<ControllerRevision>> = revs
        .all
        .iter()
        .filter(|r| {
            let n = r.name_any();
            n != revs.update.name_any()
                && n != revs.current.name_any()
                && !in_use.iter().any(|u| *u == n || *u == kinetic_rollout::pod::short_hash(&n))
        })
        .collect();
    if live.len() <= limit {
        return Ok(());
    }
    let api: Api<ControllerRevision> =
        Api::namespaced(ctx.client.clone(), &cs.namespace().unwrap_or_default());
    for r in &live[..live.len() - limit] {
        match api.delete(&r.name_any(), &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
