//! Image pre-download for rollouts (OpenKruise's `cloneset_predownload_image.go`,
//! `statefulset_predownload_image.go` and `daemonset_predownload_image.go`), one
//! implementation for the three workloads upstream enables it for: CloneSet, Advanced
//! StatefulSet and Advanced DaemonSet. While a workload rolls out, the new images are pulled
//! on the nodes of the pods that have not been updated yet, so their turn restarts (or
//! recreates, for a DaemonSet's pod on the same node) containers without a download.
//!
//! Each controller decides whether pre-download applies ([`Skip`]: its own update strategy
//! rules) and whether its revisions converged; this module does the rest, as upstream does it
//! for all three:
//! - while they have not converged, one ImagePullJob per container whose image differs from
//!   the old revisions', named `{updateRevision}-{container}`, owned by the workload, with
//!   `podSelector` = the workload's selector plus `controller-revision-hash NotIn [the update
//!   revision's name and hash]`; `parallelism` 1 (or the
//!   `apps.kruise.io/image-predownload-parallelism` annotation); `pullPolicy {backoffLimit:
//!   1, timeoutSeconds: 300}` (or the `-timeout-seconds` annotation); `completionPolicy
//!   {type: Always, ttlSecondsAfterFinished: 600}`. The update revision is then labelled
//!   `apps.kruise.io/pre-predownload-created`, or `apps.kruise.io/image-predownload-ignored`
//!   when the controller says it does not apply. While fewer than `-min-updated-ready-pods`
//!   (an integer or a percentage of replicas, rounded up) pods of the update revision are
//!   ready, it waits;
//! - once they converged, the workload's jobs are deleted (`DeleteJobsForWorkload`) and the
//!   created label dropped, so a later rollback to that revision pre-downloads again (unlike
//!   upstream, Kruise's #1419).
//!
//! A failed step is logged and retried on a later pass; it never stops the rollout, which
//! only loses the head start (upstream logs and goes on as well). Unlike upstream, where this
//! sits behind alpha gates (off by default) and the CloneSet and Advanced StatefulSet skip it
//! for 3 replicas or fewer, it is on by default and applies at any size: on a serverless
//! platform a cold image pull is the slow part of an update even for one replica (issue 5).
//! And no job is created while no pod is at an older revision (a DaemonSet that only gained a
//! node): such a job would select no node.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, OwnerReference,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kinetic_api::kruise::imagepulljob::{
    CompletionPolicy, CompletionPolicyType, ImagePullJob, ImagePullJobPodSelector,
    ImagePullJobSpec, ImagePullJobTemplate, PullPolicy,
};
use kinetic_api::kruise::{
    CONTROLLER_REVISION_HASH_LABEL, IMAGE_PREDOWNLOAD_CREATED_LABEL,
    IMAGE_PREDOWNLOAD_IGNORED_LABEL, IMAGE_PREDOWNLOAD_MIN_UPDATED_READY_PODS_ANNOTATION,
    IMAGE_PREDOWNLOAD_PARALLELISM_ANNOTATION, IMAGE_PREDOWNLOAD_TIMEOUT_SECONDS_ANNOTATION,
};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};

/// Upstream's per-job pull policy for pre-download.
const BACKOFF_LIMIT: i32 = 1;
const TIMEOUT_SECONDS: i32 = 300;
const TTL_SECONDS_AFTER_FINISHED: i32 = 600;
/// When to look again after a failed pre-download step.
const RETRY: Duration = Duration::from_secs(2);

/// The workload a pass is for, as the three controllers read it.
pub struct Workload<'a> {
    /// The kind in logs (`cloneset`, `advanced-statefulset`, `advanced-daemonset`).
    pub kind: &'static str,
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    /// The controller reference the jobs get (`blockOwnerDeletion` is set here).
    pub owner: &'a OwnerReference,
    pub annotations: &'a BTreeMap<String, String>,
    pub selector: &'a LabelSelector,
    /// The pod template's `imagePullSecrets`.
    pub pull_secrets: Option<Vec<String>>,
    /// What `-min-updated-ready-pods` percentages are of (replicas, or a DaemonSet's desired
    /// number of scheduled pods).
    pub replicas: i32,
    /// Ready pods at the update revision (0 when the status counts another revision).
    pub updated_ready: i32,
    /// Pods not at the update revision (those the jobs would pull for).
    pub outdated_pods: usize,
}

/// Where the rollout stands.
pub struct Revisions<'a> {
    /// The revision pods are updated to.
    pub update: &'a ControllerRevision,
    /// The revisions whose images the update's are compared with (the current one; every
    /// older one for a DaemonSet, as upstream compares them).
    pub old: Vec<&'a ControllerRevision>,
    /// Every revision the workload owns (for dropping the created label).
    pub all: &'a [Arc<ControllerRevision>],
    /// The rollout is complete: the jobs go.
    pub converged: bool,
}

/// Why a controller's update strategy rules pre-download out, or `None` when it applies.
pub type Skip = Option<&'static str>;

/// One pass: create the jobs for a rollout in progress, or delete them once it converged.
///
/// # Guarantees
/// A failure never fails the workload's reconcile: pre-download only saves time, so, as
/// upstream does (it logs `Failed to create ImagePullJobs` and goes on to scale and update),
/// the rollout proceeds without it. The revision is labelled only after its jobs exist, so the
/// failed step is retried: the returned delay asks for the next pass.
pub async fn sync(
    client: &Client,
    w: &Workload<'_>,
    revs: &Revisions<'_>,
    skip: Skip,
) -> Option<Duration> {
    match sync_jobs(client, w, revs, skip).await {
        Ok(()) => None,
        // The ImagePullJob CRD is not installed (a cluster without the preheating
        // controllers): pre-download is unavailable, the rollout goes on without it.
        Err(kube::Error::Api(s)) if s.code == 404 => {
            tracing::debug!(kind = w.kind, workload = %w.name, "ImagePullJob not served; no pre-download");
            None
        }
        Err(e) => {
            tracing::warn!(
                kind = w.kind,
                workload = %w.name,
                error = %crate::report(&e),
                "image pre-download failed; the rollout goes on without it"
            );
            Some(RETRY)
        }
    }
}

async fn sync_jobs(
    client: &Client,
    w: &Workload<'_>,
    revs: &Revisions<'_>,
    skip: Skip,
) -> Result<(), kube::Error> {
    let jobs: Api<ImagePullJob> = Api::namespaced(client.clone(), w.namespace);
    let update = revs.update.name_any();
    if revs.converged {
        // Upstream deletes the jobs of every revision once the rollout converged.
        let created: Vec<&Arc<ControllerRevision>> = revs
            .all
            .iter()
            .filter(|r| r.labels().contains_key(IMAGE_PREDOWNLOAD_CREATED_LABEL))
            .collect();
        if created.is_empty() {
            return Ok(());
        }
        let lp = ListParams::default().labels(CONTROLLER_REVISION_HASH_LABEL);
        for j in jobs.list(&lp).await?.items {
            if j.owner_references().iter().any(|o| o.uid == w.uid) {
                tracing::info!(kind = w.kind, job = %j.name_any(), "rollout converged; deleting the pre-download job");
                match jobs.delete(&j.name_any(), &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        for r in created {
            // The label's job is done; dropping it keeps later passes from listing again.
            label_revision(client, w.namespace, r, IMAGE_PREDOWNLOAD_CREATED_LABEL, None).await?;
        }
        return Ok(());
    }
    let labels = revs.update.labels();
    if labels.contains_key(IMAGE_PREDOWNLOAD_CREATED_LABEL)
        || labels.contains_key(IMAGE_PREDOWNLOAD_IGNORED_LABEL)
    {
        return Ok(());
    }
    if let Some(why) = skip {
        tracing::debug!(kind = w.kind, workload = %w.name, why, "no image pre-download");
        return label_revision(
            client,
            w.namespace,
            revs.update,
            IMAGE_PREDOWNLOAD_IGNORED_LABEL,
            Some("true"),
        )
        .await;
    }
    if w.outdated_pods == 0 || w.updated_ready < min_updated_ready(w) {
        return Ok(());
    }
    let parallelism = w
        .annotations
        .get(IMAGE_PREDOWNLOAD_PARALLELISM_ANNOTATION)
        .map(|v| v.parse::<i32>().map_or_else(|_| IntOrString::String(v.clone()), IntOrString::Int))
        .unwrap_or(IntOrString::Int(1));
    let timeout = w
        .annotations
        .get(IMAGE_PREDOWNLOAD_TIMEOUT_SECONDS_ANNOTATION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(TIMEOUT_SECONDS);
    let mut expressions = w.selector.match_expressions.clone().unwrap_or_default();
    expressions.push(LabelSelectorRequirement {
        key: CONTROLLER_REVISION_HASH_LABEL.to_owned(),
        operator: "NotIn".to_owned(),
        values: Some(outdated_values(revs.update)),
    });
    let hash_label = revs
        .update
        .labels()
        .get(CONTROLLER_REVISION_HASH_LABEL)
        .cloned()
        .unwrap_or_else(|| kinetic_rollout::pod::revision_label(&update).to_owned());
    for (container, image) in changed_images(&revs.old, revs.update) {
        let job = ImagePullJob {
            metadata: ObjectMeta {
                name: Some(format!("{update}-{container}")),
                namespace: Some(w.namespace.to_owned()),
                labels: Some(BTreeMap::from([(
                    CONTROLLER_REVISION_HASH_LABEL.to_owned(),
                    hash_label.clone(),
                )])),
                owner_references: Some(vec![OwnerReference {
                    block_owner_deletion: Some(true),
                    ..w.owner.clone()
                }]),
                ..Default::default()
            },
            spec: ImagePullJobSpec {
                image,
                template: ImagePullJobTemplate {
                    pull_secrets: w.pull_secrets.clone(),
                    selector: None,
                    pod_selector: Some(ImagePullJobPodSelector {
                        match_labels: w.selector.match_labels.clone(),
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
            Ok(_) => {
                tracing::info!(kind = w.kind, workload = %w.name, job = %job.name_any(), "pre-download job created");
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    label_revision(client, w.namespace, revs.update, IMAGE_PREDOWNLOAD_CREATED_LABEL, Some("true"))
        .await
}

/// The `controller-revision-hash` values of pods already at `update`: its name (CloneSet and
/// StatefulSet pods), the short hash a name too long for a label is cut to, and the
/// revision's own hash label (DaemonSet pods carry the hash alone), as upstream's `NotIn
/// [updateRevision.Name, updateRevision.Labels[ControllerRevisionHashLabel]]`.
fn outdated_values(update: &ControllerRevision) -> Vec<String> {
    let name = update.name_any();
    let mut values = vec![name.clone(), kinetic_rollout::pod::short_hash(&name).to_owned()];
    if let Some(h) = update.labels().get(CONTROLLER_REVISION_HASH_LABEL) {
        values.push(h.clone());
    }
    let mut seen = std::collections::BTreeSet::new();
    values.retain(|v| seen.insert(v.clone()));
    values
}

/// `apps.kruise.io/image-predownload-min-updated-ready-pods`: an integer or a percentage of
/// `replicas` rounded up (upstream's `GetScaledValueFromIntOrPercent(.., true)`); 0 when
/// absent or invalid (upstream logs the error and uses 0 too).
fn min_updated_ready(w: &Workload<'_>) -> i32 {
    let Some(v) = w.annotations.get(IMAGE_PREDOWNLOAD_MIN_UPDATED_READY_PODS_ANNOTATION) else {
        return 0;
    };
    // `intstr.Parse`: an integer, else a string.
    let value = v.parse::<i32>().map_or_else(|_| IntOrString::String(v.clone()), IntOrString::Int);
    kinetic_rollout::strategy::scaled_value(
        &value,
        w.replicas,
        true,
        "metadata.annotations[apps.kruise.io/image-predownload-min-updated-ready-pods]",
    )
    .unwrap_or_else(|e| {
        tracing::warn!(kind = w.kind, workload = %w.name, error = %e, "ignoring min-updated-ready-pods");
        0
    })
}

/// The pod template a revision records, without the `$patch` directive.
fn template_of(rev: &ControllerRevision) -> Option<Value> {
    let mut t = kinetic_rollout::inplace::template_of_revision(&rev.data.as_ref()?.0)?.clone();
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    Some(t)
}

fn images(r: &ControllerRevision) -> BTreeMap<String, String> {
    template_of(r)
        .and_then(|t| t.pointer("/spec/containers").cloned())
        .and_then(|c| c.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| {
            Some((c.get("name")?.as_str()?.to_owned(), c.get("image")?.as_str()?.to_owned()))
        })
        .collect()
}

/// (container, new image) of the update's containers whose image differs from an old
/// revision's (upstream's `diffImagesBetweenRevisions`: a container no old revision has counts
/// too, except that with no old revision at all nothing is to pull).
fn changed_images(
    old: &[&ControllerRevision],
    update: &ControllerRevision,
) -> Vec<(String, String)> {
    let olds: Vec<BTreeMap<String, String>> = old.iter().map(|r| images(r)).collect();
    if olds.is_empty() {
        return Vec::new();
    }
    images(update)
        .into_iter()
        .filter(|(n, i)| {
            let known: Vec<&String> = olds.iter().filter_map(|o| o.get(n)).collect();
            known.is_empty() || known.iter().any(|o| *o != i)
        })
        .collect()
}

/// The ready pods at `update` a status counts: its `updatedReadyReplicas` when the status
/// speaks of `update`, else 0. On the first pass after a template change the status still
/// counts the previous revision's ready pods, which would open the `min-updated-ready-pods`
/// gate before a single new pod is ready (upstream reads 0 when `status.updateRevision` is
/// not this pass's update revision).
pub fn updated_ready(
    status_update_revision: Option<&str>,
    updated_ready: i32,
    update: &str,
) -> i32 {
    if status_update_revision == Some(update) { updated_ready } else { 0 }
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
    use k8s_openapi::apimachinery::pkg::runtime::RawExtension;

    use super::*;

    fn annotations(min_ready: Option<&str>) -> BTreeMap<String, String> {
        min_ready
            .map(|v| (IMAGE_PREDOWNLOAD_MIN_UPDATED_READY_PODS_ANNOTATION.to_owned(), v.to_owned()))
            .into_iter()
            .collect()
    }

    fn min(min_ready: Option<&str>, replicas: i32) -> i32 {
        let a = annotations(min_ready);
        let owner = OwnerReference::default();
        let selector = LabelSelector::default();
        min_updated_ready(&Workload {
            kind: "cloneset",
            name: "cs",
            namespace: "default",
            uid: "u",
            owner: &owner,
            annotations: &a,
            selector: &selector,
            pull_secrets: None,
            replicas,
            updated_ready: 0,
            outdated_pods: 1,
        })
    }

    #[test]
    fn min_updated_ready_pods_is_an_integer_or_a_percentage_rounded_up() {
        assert_eq!(min(None, 10), 0);
        assert_eq!(min(Some("3"), 10), 3);
        assert_eq!(min(Some("25%"), 10), 3);
        assert_eq!(min(Some("10%"), 10), 1);
        assert_eq!(min(Some("lots"), 10), 0, "invalid reads as 0");
    }

    /// Regression: the first pass after a template change read the previous rollout's
    /// `updatedReadyReplicas` (all pods ready at the old update revision) and opened the
    /// `min-updated-ready-pods` gate before any pod of the new revision was ready.
    #[test]
    fn updated_ready_pods_of_a_stale_status_count_as_none() {
        assert_eq!(updated_ready(Some("cs-old"), 10, "cs-new"), 0);
        assert_eq!(updated_ready(Some("cs-new"), 10, "cs-new"), 10);
        assert_eq!(updated_ready(None, 10, "cs-new"), 0);
    }

    fn rev(name: &str, hash: Option<&str>, containers: Value) -> ControllerRevision {
        ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: hash
                    .map(|h| BTreeMap::from([(CONTROLLER_REVISION_HASH_LABEL.into(), h.into())])),
                ..Default::default()
            },
            data: Some(RawExtension(json!({"spec": {"template": {
                "spec": {"containers": containers}, "$patch": "replace"}}}))),
            revision: 1,
        }
    }

    #[test]
    fn changed_images_are_those_an_old_revision_ran_differently_or_not_at_all() {
        let a = rev(
            "ds-a",
            Some("a"),
            json!([{"name": "main", "image": "m:1"}, {"name": "log", "image": "l:1"}]),
        );
        let b = rev(
            "ds-b",
            Some("b"),
            json!([{"name": "main", "image": "m:2"}, {"name": "log", "image": "l:1"}]),
        );
        let c = rev(
            "ds-c",
            Some("c"),
            json!([{"name": "main", "image": "m:2"}, {"name": "log", "image": "l:1"}, {"name": "new", "image": "n:1"}]),
        );
        assert_eq!(changed_images(&[&a], &b), [("main".to_owned(), "m:2".to_owned())]);
        // DaemonSets compare with every old revision: `main` differs from a's.
        assert_eq!(
            changed_images(&[&a, &b], &c),
            [("main".to_owned(), "m:2".to_owned()), ("new".to_owned(), "n:1".to_owned())]
        );
        assert_eq!(changed_images(&[&b], &b), []);
        assert_eq!(changed_images(&[], &b), []);
    }

    #[test]
    fn pods_at_the_update_revision_are_excluded_by_name_short_hash_and_hash_label() {
        assert_eq!(
            outdated_values(&rev("web-7f9c", Some("7f9c"), json!([]))),
            ["web-7f9c", "7f9c"]
        );
        assert_eq!(outdated_values(&rev("ds-5d8b", Some("5d8b"), json!([]))), ["ds-5d8b", "5d8b"]);
        assert_eq!(outdated_values(&rev("web-7f9c", None, json!([]))), ["web-7f9c", "7f9c"]);
    }
}
