//! Image pre-download for in-place updates (OpenKruise's `cloneset_predownload_image.go`):
//! while a CloneSet rolls out in place, the new images are pulled on the nodes of the pods
//! that have not been updated yet, so their turn restarts containers without a download.
//!
//! When `currentRevision != updateRevision` and the update can be done in place, one
//! ImagePullJob per container whose image changed is created, named
//! `{updateRevision}-{container}`, owned by the CloneSet, with upstream's parameters:
//! `podSelector` = the CloneSet's selector plus `controller-revision-hash NotIn
//! [updateRevision]`; `parallelism` 1 (or the `apps.kruise.io/image-predownload-parallelism`
//! annotation); `pullPolicy {backoffLimit: 1, timeoutSeconds: 300}` (or the
//! `-timeout-seconds` annotation); `completionPolicy {type: Always,
//! ttlSecondsAfterFinished: 600}`. The update revision is then labelled
//! `apps.kruise.io/pre-predownload-created`, or `apps.kruise.io/image-predownload-ignored` when
//! pre-download does not apply (ReCreate or OnDelete, a change that is not in place, or
//! everything updating in one batch: partition 0 and maxUnavailable ≥ replicas). While fewer
//! than `-min-updated-ready-pods` (an integer or a percentage of replicas, rounded up) pods of
//! the update revision are ready it waits. Once the revisions converge, the CloneSet's jobs
//! are deleted. A failed step is logged and retried on a later pass; it never stops the
//! rollout, which only loses the head start (upstream logs and goes on as well).
//!
//! Unlike upstream, where this sits behind the alpha gate `PreDownloadImageForInPlaceUpdate`
//! (off by default) and is skipped for CloneSets of 3 replicas or fewer, it is on by default
//! and applies at any size: on a serverless platform a cold image pull is the slow part of an
//! update even for one replica (issue 5). OnDelete (newer than upstream's pre-download code)
//! is skipped like ReCreate because nothing updates in place on its own.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kinetic_api::kruise::cloneset::{CloneSet, CloneSetUpdateStrategyType};
use kinetic_api::kruise::imagepulljob::{
    CompletionPolicy, CompletionPolicyType, ImagePullJob, ImagePullJobPodSelector,
    ImagePullJobSpec, ImagePullJobTemplate, PullPolicy,
};
use kinetic_api::kruise::{
    CONTROLLER_REVISION_HASH_LABEL, IMAGE_PREDOWNLOAD_CREATED_LABEL,
    IMAGE_PREDOWNLOAD_IGNORED_LABEL, IMAGE_PREDOWNLOAD_MIN_UPDATED_READY_PODS_ANNOTATION,
    IMAGE_PREDOWNLOAD_PARALLELISM_ANNOTATION, IMAGE_PREDOWNLOAD_TIMEOUT_SECONDS_ANNOTATION,
};
use kinetic_rollout::Strategy;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};

use super::revision::{Revisions, template_of};

/// Upstream's per-job pull policy for pre-download.
const BACKOFF_LIMIT: i32 = 1;
const TIMEOUT_SECONDS: i32 = 300;
const TTL_SECONDS_AFTER_FINISHED: i32 = 600;
/// When to look again after a failed pre-download step.
const RETRY: Duration = Duration::from_secs(2);

/// One pass: create the jobs for a rollout in progress, or delete them once it converged.
///
/// # Guarantees
/// A failure never fails the CloneSet's reconcile: pre-download only saves time, so, as
/// upstream does (it logs `Failed to create ImagePullJobs for CloneSet` and goes on to scale
/// and update), the rollout proceeds without it. The revision is labelled only after its jobs
/// exist, so the failed step is retried: the returned delay asks for the next pass.
pub async fn sync(
    client: &Client,
    cs: &CloneSet,
    revs: &Revisions,
    strategy: &Strategy,
    in_place: bool,
) -> Option<Duration> {
    match sync_jobs(client, cs, revs, strategy, in_place).await {
        Ok(()) => None,
        // The ImagePullJob CRD is not installed (a cluster without the preheating
        // controllers): pre-download is unavailable, the rollout goes on without it.
        Err(kube::Error::Api(s)) if s.code == 404 => {
            tracing::debug!(cloneset = %cs.name_any(), "ImagePullJob not served; no pre-download");
            None
        }
        Err(e) => {
            tracing::warn!(
                cloneset = %cs.name_any(),
                error = %crate::report(&e),
                "image pre-download failed; the rollout goes on without it"
            );
            Some(RETRY)
        }
    }
}

async fn sync_jobs(
    client: &Client,
    cs: &CloneSet,
    revs: &Revisions,
    strategy: &Strategy,
    in_place: bool,
) -> Result<(), kube::Error> {
    let ns = cs.namespace().unwrap_or_default();
    let jobs: Api<ImagePullJob> = Api::namespaced(client.clone(), &ns);
    let update = revs.update.name_any();
    // Upstream compares the revisions of this pass only. The status's pair is stale on the
    // first pass after a template change (it still names the old revision as both), so
    // reading it would skip that pass's job creation.
    if revs.current.name_any() == update {
        // Upstream deletes the jobs of every revision once the rollout converged.
        let uid = cs.uid().unwrap_or_default();
        let lp = ListParams::default().labels(CONTROLLER_REVISION_HASH_LABEL);
        let has_label =
            revs.all.iter().any(|r| r.labels().contains_key(IMAGE_PREDOWNLOAD_CREATED_LABEL));
        if has_label {
            for j in jobs.list(&lp).await?.items {
                if j.owner_references().iter().any(|o| o.uid == uid) {
                    tracing::info!(job = %j.name_any(), "rollout converged; deleting the pre-download job");
                    match jobs.delete(&j.name_any(), &DeleteParams::background()).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(s)) if s.code == 404 => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            for r in
                revs.all.iter().filter(|r| r.labels().contains_key(IMAGE_PREDOWNLOAD_CREATED_LABEL))
            {
                // The label's job is done; dropping it keeps later passes from listing again.
                label_revision(client, &ns, r, IMAGE_PREDOWNLOAD_CREATED_LABEL, None).await?;
            }
        }
        return Ok(());
    }
    let labels = revs.update.labels();
    if labels.contains_key(IMAGE_PREDOWNLOAD_CREATED_LABEL)
        || labels.contains_key(IMAGE_PREDOWNLOAD_IGNORED_LABEL)
    {
        return Ok(());
    }
    // Upstream resolves a percentage maxUnavailable rounding down here, although the update
    // itself rounds it up; Kinetic uses the update's value, so "everything in one batch" means
    // what the update will really do (4 replicas at 80% update all 4 at once: no pre-download).
    let one_batch = strategy.partition == 0 && strategy.max_unavailable >= strategy.replicas;
    let skip = matches!(
        strategy.update_type,
        CloneSetUpdateStrategyType::ReCreate | CloneSetUpdateStrategyType::OnDelete
    ) || !in_place
        || one_batch;
    if skip {
        return label_revision(
            client,
            &ns,
            &revs.update,
            IMAGE_PREDOWNLOAD_IGNORED_LABEL,
            Some("true"),
        )
        .await;
    }
    let annotations = cs.annotations();
    if updated_ready(cs, &update) < min_updated_ready(cs, strategy.replicas) {
        return Ok(());
    }
    let parallelism = annotations
        .get(IMAGE_PREDOWNLOAD_PARALLELISM_ANNOTATION)
        .map(|v| v.parse::<i32>().map_or_else(|_| IntOrString::String(v.clone()), IntOrString::Int))
        .unwrap_or(IntOrString::Int(1));
    let timeout = annotations
        .get(IMAGE_PREDOWNLOAD_TIMEOUT_SECONDS_ANNOTATION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(TIMEOUT_SECONDS);
    let changed = changed_images(&revs.current, &revs.update);
    let selector = &cs.spec.selector;
    let mut expressions = selector.match_expressions.clone().unwrap_or_default();
    expressions.push(LabelSelectorRequirement {
        key: CONTROLLER_REVISION_HASH_LABEL.to_owned(),
        operator: "NotIn".to_owned(),
        // Pods carry the full name or, when it is too long for a label, the short hash.
        values: Some(vec![update.clone(), kinetic_rollout::pod::short_hash(&update).to_owned()]),
    });
    for (container, image) in changed {
        let job = ImagePullJob {
            metadata: ObjectMeta {
                name: Some(format!("{update}-{container}")),
                namespace: Some(ns.clone()),
                labels: Some(BTreeMap::from([(
                    CONTROLLER_REVISION_HASH_LABEL.to_owned(),
                    kinetic_rollout::pod::revision_label(&update).to_owned(),
                )])),
                owner_references: Some(vec![OwnerReference {
                    block_owner_deletion: Some(true),
                    ..super::owner_ref(cs)
                }]),
                ..Default::default()
            },
            spec: ImagePullJobSpec {
                image,
                template: ImagePullJobTemplate {
                    pull_secrets: cs.spec.template.spec.as_ref().and_then(|s| {
                        s.image_pull_secrets
                            .as_ref()
                            .map(|v| v.iter().map(|r| r.name.clone()).collect())
                    }),
                    selector: None,
                    pod_selector: Some(ImagePullJobPodSelector {
                        match_labels: selector.match_labels.clone(),
                        match_expressions: Some(expressions.clone()),
                    }),
                    parallelism: Some(parallelism.clone()),
                    pull_policy: Some(PullPolicy {
                        timeout_seconds: Some(timeout),
                        backoff_limit: Some(BACKOFF_LIMIT),
                    }),
                    completion_policy: CompletionPolicy {
                        type_: Some(CompletionPolicyType::Always),
                        active_deadline_seconds: None,
                        ttl_seconds_after_finished: Some(TTL_SECONDS_AFTER_FINISHED),
                    },
                    sandbox_config: None,
                    image_pull_policy: None,
                },
            },
            status: None,
        };
        match jobs.create(&PostParams::default(), &job).await {
            Ok(_) => tracing::info!(job = %job.name_any(), "pre-download job created"),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    label_revision(client, &ns, &revs.update, IMAGE_PREDOWNLOAD_CREATED_LABEL, Some("true")).await
}

/// `apps.kruise.io/image-predownload-min-updated-ready-pods`: an integer or a percentage of
/// `replicas` rounded up (upstream's `GetScaledValueFromIntOrPercent(.., true)`); 0 when
/// absent or invalid (upstream logs the error and uses 0 too).
fn min_updated_ready(cs: &CloneSet, replicas: i32) -> i32 {
    let Some(v) = cs.annotations().get(IMAGE_PREDOWNLOAD_MIN_UPDATED_READY_PODS_ANNOTATION) else {
        return 0;
    };
    // `intstr.Parse`: an integer, else a string.
    let value = v.parse::<i32>().map_or_else(|_| IntOrString::String(v.clone()), IntOrString::Int);
    kinetic_rollout::strategy::scaled_value(
        &value,
        replicas,
        true,
        "metadata.annotations[apps.kruise.io/image-predownload-min-updated-ready-pods]",
    )
    .unwrap_or_else(|e| {
        tracing::warn!(cloneset = %cs.name_any(), error = %e, "ignoring min-updated-ready-pods");
        0
    })
}

/// `status.updatedReadyReplicas`, counted for `update` only: on the first pass after a
/// template change the status still counts the previous revision's ready pods, which would
/// open the `min-updated-ready-pods` gate before a single new pod is ready (upstream reads 0
/// when `status.updateRevision` is not this pass's update revision).
fn updated_ready(cs: &CloneSet, update: &str) -> i32 {
    cs.status
        .as_ref()
        .filter(|s| s.update_revision.as_deref() == Some(update))
        .map_or(0, |s| s.updated_ready_replicas)
}

/// (container, new image) of the containers whose image differs between the revisions.
fn changed_images(
    current: &ControllerRevision,
    update: &ControllerRevision,
) -> Vec<(String, String)> {
    let images = |r: &ControllerRevision| -> BTreeMap<String, String> {
        template_of(r)
            .and_then(|t| t.pointer("/spec/containers").cloned())
            .and_then(|c| c.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|c| {
                Some((c.get("name")?.as_str()?.to_owned(), c.get("image")?.as_str()?.to_owned()))
            })
            .collect()
    };
    let old = images(current);
    images(update).into_iter().filter(|(n, i)| old.get(n).is_some_and(|o| o != i)).collect()
}

async fn label_revision(
    client: &Client,
    ns: &str,
    rev: &ControllerRevision,
    label: &str,
    value: Option<&str>,
) -> Result<(), kube::Error> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), ns);
    let body: Value = json!({"metadata": {"labels": {label: value}}});
    api.patch(&rev.name_any(), &PatchParams::default(), &Patch::Merge(body)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloneset(min_ready: Option<&str>, status: Value) -> CloneSet {
        let mut annotations = serde_json::Map::new();
        if let Some(v) = min_ready {
            annotations
                .insert(IMAGE_PREDOWNLOAD_MIN_UPDATED_READY_PODS_ANNOTATION.into(), v.into());
        }
        serde_json::from_value(json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
            "metadata": {"name": "cs", "namespace": "default", "annotations": annotations},
            "spec": {"replicas": 10, "selector": {"matchLabels": {"app": "cs"}},
                     "template": {"spec": {"containers": []}}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn min_updated_ready_pods_is_an_integer_or_a_percentage_rounded_up() {
        let st = Value::Null;
        assert_eq!(min_updated_ready(&cloneset(None, st.clone()), 10), 0);
        assert_eq!(min_updated_ready(&cloneset(Some("3"), st.clone()), 10), 3);
        assert_eq!(min_updated_ready(&cloneset(Some("25%"), st.clone()), 10), 3);
        assert_eq!(min_updated_ready(&cloneset(Some("10%"), st.clone()), 10), 1);
        assert_eq!(min_updated_ready(&cloneset(Some("lots"), st), 10), 0, "invalid reads as 0");
    }

    /// Regression: the first pass after a template change read the previous rollout's
    /// `updatedReadyReplicas` (all pods ready at the old update revision) and opened the
    /// `min-updated-ready-pods` gate before any pod of the new revision was ready.
    #[test]
    fn updated_ready_pods_of_a_stale_status_count_as_none() {
        let st = |rev: &str| {
            json!({"replicas": 10, "readyReplicas": 10, "availableReplicas": 10,
                   "updatedReplicas": 10, "updatedReadyReplicas": 10,
                   "updateRevision": rev, "currentRevision": "cs-old"})
        };
        assert_eq!(updated_ready(&cloneset(Some("1"), st("cs-old")), "cs-new"), 0);
        assert_eq!(updated_ready(&cloneset(Some("1"), st("cs-new")), "cs-new"), 10);
    }
}
