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
//! than `-min-updated-ready-pods` updated pods are ready it waits. Once the revisions
//! converge, the CloneSet's jobs are deleted.
//!
//! Unlike upstream, where this sits behind the alpha gate `PreDownloadImageForInPlaceUpdate`
//! (off by default) and is skipped for CloneSets of 3 replicas or fewer, it is on by default
//! and applies at any size: on a serverless platform a cold image pull is the slow part of an
//! update even for one replica (issue 5). OnDelete (newer than upstream's pre-download code)
//! is skipped like ReCreate because nothing updates in place on its own.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kinetic_api::kruise::cloneset::{CloneSet, CloneSetUpdateStrategyType};
use kinetic_api::kruise::imagepulljob::{
    CompletionPolicy, CompletionPolicyType, ImagePullJob, ImagePullJobPodSelector,
    ImagePullJobSpec, PullPolicy,
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

/// One pass: create the jobs for a rollout in progress, or delete them once it converged.
///
/// # Errors
/// An API call failed (the reconcile retries).
pub async fn sync(
    client: &Client,
    cs: &CloneSet,
    revs: &Revisions,
    strategy: &Strategy,
    in_place: bool,
) -> Result<(), kube::Error> {
    match sync_jobs(client, cs, revs, strategy, in_place).await {
        // The ImagePullJob CRD is not installed (a cluster without the preheating
        // controllers): pre-download is unavailable, the rollout goes on without it.
        Err(kube::Error::Api(s)) if s.code == 404 => {
            tracing::debug!(cloneset = %cs.name_any(), "ImagePullJob not served; no pre-download");
            Ok(())
        }
        r => r,
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
    let status = cs.status.as_ref();
    let converged = status.and_then(|s| s.current_revision.as_deref())
        == status.and_then(|s| s.update_revision.as_deref());
    if converged || revs.current.name_any() == update {
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
    let min_ready: i32 = annotations
        .get(IMAGE_PREDOWNLOAD_MIN_UPDATED_READY_PODS_ANNOTATION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if status.map_or(0, |s| s.updated_ready_replicas) < min_ready {
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
        values: Some(vec![update.clone()]),
    });
    for (container, image) in changed {
        let job = ImagePullJob {
            metadata: ObjectMeta {
                name: Some(format!("{update}-{container}")),
                namespace: Some(ns.clone()),
                labels: Some(BTreeMap::from([(
                    CONTROLLER_REVISION_HASH_LABEL.to_owned(),
                    update.clone(),
                )])),
                owner_references: Some(vec![OwnerReference {
                    block_owner_deletion: Some(true),
                    ..super::owner_ref(cs)
                }]),
                ..Default::default()
            },
            spec: ImagePullJobSpec {
                image,
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
