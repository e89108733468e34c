//! The Advanced StatefulSet's image pre-download (Kruise's
//! `statefulset_predownload_image.go`): its rules for when pre-download applies, over the
//! shared [`crate::predownload`]. `apps/v1` StatefulSets have none (upstream's is Kruise's).
//!
//! It applies while `currentRevision != updateRevision`, except (upstream's order) under
//! OnDelete or `podUpdatePolicy: ReCreate`, when every pod updates in one batch (partition 0
//! and maxUnavailable ≥ replicas; maxUnavailable as the update resolves it), or when the
//! change cannot be done in place.

use std::time::Duration;

use kinetic_api::kruise::statefulset::{PodUpdatePolicy, StatefulSetUpdateStrategyType};
use kinetic_rollout::inplace::{self, InPlaceOptions};
use kinetic_rollout::statefulset as decide;
use kube::ResourceExt as _;

use super::revision::{Revisions, template_of};
use super::{Ctx, Set};
use crate::predownload::{self, Skip, Workload};

fn skip(set: &Set, revs: &Revisions) -> Skip {
    let on_delete = set.spec.update_strategy.as_ref().and_then(|u| u.type_)
        == Some(StatefulSetUpdateStrategyType::OnDelete);
    if on_delete || set.pod_update_policy() == PodUpdatePolicy::ReCreate {
        return Some("the update recreates pods or waits for their deletion");
    }
    let max = decide::max_unavailable(
        set.rolling_update().and_then(|r| r.max_unavailable.as_ref()),
        set.replicas(),
    )
    .unwrap_or(1);
    if set.partition() == 0 && max >= set.replicas() {
        return Some("every pod updates in one batch");
    }
    let in_place = match (template_of(&revs.current), template_of(&revs.update)) {
        (Some(old), Some(new)) => inplace::update_spec(&old, &new, InPlaceOptions::default()),
        _ => None,
    };
    if in_place.is_none() {
        return Some("the change cannot be done in place");
    }
    None
}

/// One pass of [`predownload::sync`] for an Advanced StatefulSet (nothing for `apps/v1`);
/// `outdated_pods` are its live pods not at the update revision.
pub async fn sync(
    ctx: &Ctx,
    set: &Set,
    revs: &Revisions,
    outdated_pods: usize,
) -> Option<Duration> {
    if !set.kruise {
        return None;
    }
    let update = revs.update.name_any();
    let default_selector = Default::default();
    let w = Workload {
        kind: "advanced-statefulset",
        name: &set.name,
        namespace: &set.ns,
        uid: &set.uid,
        owner: &set.owner,
        annotations: &set.annotations,
        selector: set.spec.selector.as_ref().unwrap_or(&default_selector),
        pull_secrets: set.spec.template.spec.as_ref().and_then(|s| {
            s.image_pull_secrets.as_ref().map(|v| v.iter().map(|r| r.name.clone()).collect())
        }),
        replicas: set.replicas(),
        updated_ready: predownload::updated_ready(
            set.status.update_revision.as_deref(),
            set.status.updated_ready_replicas.unwrap_or(0),
            &update,
        ),
        outdated_pods,
    };
    let r = predownload::Revisions {
        update: &revs.update,
        old: vec![&revs.current],
        all: &revs.all,
        converged: revs.current.name_any() == update,
    };
    predownload::sync(&ctx.client, &w, &r, skip(set, revs)).await
}
