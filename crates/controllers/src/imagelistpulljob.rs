//! The ImageListPullJob controller (upstream's `pkg/controller/imagelistpulljob`): one
//! ImagePullJob per listed image, owned by the list, and the list's status summed from theirs.
//!
//! Data flow: the list and the ImagePullJobs it owns are watched (kube-runtime `Controller`
//! with `owns`); a pass creates the job of every image that has none, deletes the jobs of
//! images no longer listed, writes the status (desired, active, completed, succeeded, the
//! failed images with their job's message, start and completion time) and, once an `Always`
//! list completed, deletes it after its `ttlSecondsAfterFinished` (its jobs go with it, by
//! garbage collection).
//!
//! One deliberate difference: upstream names the jobs with `generateName`; here a job's name
//! is `{list}-{hash of the image}`, so a pass that runs on a stale cache cannot create a second
//! job for an image (the create answers 409 instead).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kinetic_api::kruise::imagelistpulljob::{
    FailedImageStatus, ImageListPullJob, ImageListPullJobStatus,
};
use kinetic_api::kruise::imagepulljob::{CompletionPolicyType, ImagePullJob};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource as _, ResourceExt as _};
use serde_json::json;

/// A reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("API request failed")]
    Kube(#[from] kube::Error),
}

struct Ctx {
    client: Client,
    jobs: Store<ImagePullJob>,
    backoff: crate::backoff::Backoff,
}

/// Runs the ImageListPullJob controller until `shutdown` resolves.
///
/// # Errors
/// None so far: API errors are retried per list with back-off.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> crate::Result<()> {
    let (jobs, writer) = reflector::store();
    let job_stream = reflector::reflector(
        writer,
        watcher(Api::<ImagePullJob>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    let lists = Api::<ImageListPullJob>::all(client.clone());
    let ctx = Arc::new(Ctx { client, jobs, backoff: crate::backoff::Backoff::default() });
    Controller::new(lists, watcher::Config::default())
        .owns_stream(job_stream)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(crate::log_reconcile("imagelistpulljob"))
        .await;
    Ok(())
}

fn key(list: &ImageListPullJob) -> String {
    format!("{}/{}", list.namespace().unwrap_or_default(), list.name_any())
}

fn error_policy(list: Arc<ImageListPullJob>, e: &ReconcileError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&*list, e)
}

/// The name of the job pulling `image` for `list`.
pub fn job_name(list: &str, image: &str) -> String {
    // The hash revisions use (Go's FNV-1 32), printed as 8 hex digits.
    format!("{list}-{:08x}", kinetic_rollout::revision::fnv1_32(image.as_bytes()))
}

async fn reconcile(list: Arc<ImageListPullJob>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    ctx.backoff.reconcile(&*list, reconcile_pass(&list, &ctx)).await
}

async fn reconcile_pass(list: &ImageListPullJob, ctx: &Ctx) -> Result<Action, ReconcileError> {
    if list.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if !crate::cache_ready(&ctx.jobs) {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let ns = list.namespace().unwrap_or_default();
    let uid = list.uid().unwrap_or_default();
    let lists: Api<ImageListPullJob> = Api::namespaced(ctx.client.clone(), &ns);
    let jobs: Api<ImagePullJob> = Api::namespaced(ctx.client.clone(), &ns);
    let now = Timestamp::now();
    let old = list.status.clone().unwrap_or_default();

    // A completed list: only its TTL remains.
    if let Some(done) = &old.completion_time {
        let Some(ttl) = list.spec.template.completion_policy.ttl_seconds_after_finished else {
            return Ok(Action::await_change());
        };
        let at = done.0 + jiff::SignedDuration::from_secs(i64::from(ttl.max(0)));
        if now >= at {
            tracing::info!(list = %key(list), "deleting a finished list (ttlSecondsAfterFinished)");
            match lists.delete(&list.name_any(), &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(Action::await_change());
        }
        let left = Duration::try_from(at.duration_since(now)).unwrap_or_default();
        return Ok(Action::requeue(left.max(Duration::from_millis(50))));
    }

    let owned: Vec<Arc<ImagePullJob>> = ctx
        .jobs
        .state()
        .into_iter()
        .filter(|j| j.namespace().as_deref() == Some(ns.as_str()))
        .filter(|j| j.owner_references().iter().any(|o| o.controller == Some(true) && o.uid == uid))
        .collect();
    let by_image: BTreeMap<&str, &Arc<ImagePullJob>> =
        owned.iter().map(|j| (j.spec.image.as_str(), j)).collect();

    // Jobs of images no longer listed go.
    for j in owned.iter().filter(|j| !list.spec.images.contains(&j.spec.image)) {
        match jobs.delete(&j.name_any(), &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Every listed image gets its job.
    for image in list.spec.images.iter().filter(|i| !by_image.contains_key(i.as_str())) {
        let job = ImagePullJob {
            metadata: ObjectMeta {
                name: Some(job_name(&list.name_any(), image)),
                namespace: Some(ns.clone()),
                owner_references: Some(vec![OwnerReference {
                    api_version: ImageListPullJob::api_version(&()).into_owned(),
                    kind: ImageListPullJob::kind(&()).into_owned(),
                    name: list.name_any(),
                    uid: uid.clone(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..Default::default()
            },
            spec: list.spec.job_spec(image),
            status: None,
        };
        match jobs.create(&PostParams::default(), &job).await {
            Ok(_) => tracing::info!(list = %key(list), %image, "ImagePullJob created"),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }

    // The status, summed from the jobs of the listed images.
    let mut st = ImageListPullJobStatus {
        start_time: old.start_time.clone().or(Some(Time(now))),
        desired: i32::try_from(list.spec.images.len()).unwrap_or(i32::MAX),
        ..Default::default()
    };
    let mut failed = Vec::new();
    for image in &list.spec.images {
        let Some(job) = by_image.get(image.as_str()) else {
            st.active += 1;
            continue;
        };
        let js = job.status.clone().unwrap_or_default();
        if js.completion_time.is_none() {
            st.active += 1;
            continue;
        }
        st.completed += 1;
        if js.failed == 0 && js.succeeded == js.desired {
            st.succeeded += 1;
        } else {
            failed.push(FailedImageStatus {
                image_pull_job: Some(job.name_any()),
                name: Some(image.clone()),
                message: js.message.clone(),
            });
        }
    }
    st.failed_image_statuses = (!failed.is_empty()).then_some(failed);
    let always = list.spec.template.completion_policy.type_.unwrap_or_default()
        == CompletionPolicyType::Always;
    if always && st.completed == st.desired {
        st.completion_time = Some(Time(now));
    }
    let unchanged = ImageListPullJobStatus { start_time: old.start_time.clone(), ..st.clone() };
    if old.start_time.is_none() || unchanged != old {
        let patch = json!({"status": st});
        lists
            .patch_status(&list.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(if st.completion_time.is_some() {
        // The next pass sees the completion and schedules the TTL.
        Action::requeue(Duration::from_millis(50))
    } else {
        Action::await_change()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn job_names_are_stable_per_image_and_distinct_between_images() {
        let a = super::job_name("list", "nginx:1");
        assert_eq!(a, super::job_name("list", "nginx:1"));
        assert_ne!(a, super::job_name("list", "nginx:2"));
        assert!(a.starts_with("list-") && a.len() == "list-".len() + 8, "{a}");
    }
}
