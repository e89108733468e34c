//! The Job controller (upstream `pkg/controller/job`, v1.35, and the TTL-after-finished
//! controller): a kube-runtime `Controller` of `batch/v1` Jobs over a pod reflector. A pass
//! takes the pods the Job controls, waits for its `expectations`, asks [`decide::plan`] what to
//! do, creates and deletes pods, writes status and Events, and deletes a Job whose
//! `ttlSecondsAfterFinished` ran out.
//!
//! Pods are made from the template as upstream's `GetPodFromTemplate` does (`generateName`
//! `{job}-`, the template's labels, which carry the generated selector, the Job as controlling
//! owner); an Indexed Job's pods get `batch.kubernetes.io/job-completion-index` as annotation
//! and label, `{job}-{index}-` as name prefix, the hostname `{job}-{index}` and the
//! `JOB_COMPLETION_INDEX` variable in every container (a `fieldRef` to the annotation).
//!
//! With `backoffLimitPerIndex` each Indexed pod also carries its index's failure counts
//! (`batch.kubernetes.io/job-index-failure-count`, see [`indexes`]); [`policy`] applies a
//! `podFailurePolicy` to a failed pod.
//!
//! Not done: the job-tracking finalizer (see [`decide`]), adoption of orphans matching a manual
//! selector.

pub mod decide;
pub mod indexes;
pub mod policy;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use crate::backoff::Backoff;
use crate::events::{EventReq, EventSink};
use crate::expectations::{Expectations, Seen};
use crate::util::{SyncError, controller_of, controller_ref, is_deleting, name_of, ns_of, uid_of};
use decide::COMPLETION_INDEX;

/// The controller's name in Events.
pub const COMPONENT: &str = "job-controller";

/// Runs the Job controller until `shutdown` completes.
///
/// # Errors
/// None so far: API errors are retried per Job with back-off.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    crate::util::run_together(shutdown, |stop| async move {
        let (pods, pod_changes) =
            crate::util::reflect_changes::<Pod>(&client, watcher::Config::default());
        let controller =
            Controller::new(Api::<Job>::all(client.clone()), watcher::Config::default());
        let ctx = Arc::new(Ctx {
            client: client.clone(),
            pods,
            expectations: Expectations::default(),
            events: EventSink::spawn(client, COMPONENT.to_owned()),
            backoff: Backoff::default(),
        });
        let mapper = ctx.clone();
        tracing::info!("job controller started");
        controller
            .watches_stream(pod_changes, move |pod| mapper.job_of(&pod))
            .graceful_shutdown_on(stop.wait())
            .run(reconcile, error_policy, ctx)
            .for_each(crate::log_reconcile("job"))
            .await;
        Ok(())
    })
    .await
}

struct Ctx {
    client: Client,
    pods: Store<Pod>,
    expectations: Expectations,
    events: EventSink,
    backoff: Backoff,
}

fn key_of(job: &Job) -> String {
    format!("{}/{}", ns_of(job), name_of(job))
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, SyncError> {
    let pass = async {
        let requeue = ctx.sync(&job).await?;
        Ok(requeue.map_or_else(Action::await_change, Action::requeue))
    };
    ctx.backoff.reconcile(&*job, pass).await
}

fn error_policy(job: Arc<Job>, e: &SyncError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&*job, e)
}

impl Ctx {
    /// The Job that controls a pod (and the creation it may be the expected one of).
    fn job_of(&self, pod: &Pod) -> Option<ObjectRef<Job>> {
        let ctrl = controller_of(pod).filter(|c| c.kind == "Job" && c.api_version == "batch/v1")?;
        let ns = ns_of(pod);
        self.expectations.creation_observed(&format!("{ns}/{}", ctrl.name), name_of(pod));
        Some(ObjectRef::new(&ctrl.name).within(ns))
    }

    #[tracing::instrument(skip_all, fields(job = %key_of(job)))]
    async fn sync(&self, job: &Job) -> Result<Option<Duration>, SyncError> {
        if !crate::cache_ready(&self.pods) {
            return Ok(Some(Duration::from_millis(200)));
        }
        if is_deleting(job) {
            return Ok(None);
        }
        let key = key_of(job);
        let uid = uid_of(job);
        let all = self.pods.state();
        let mine: Vec<&Pod> = all
            .iter()
            .map(|p| &**p)
            .filter(|p| ns_of(*p) == ns_of(job))
            .filter(|p| controller_of(*p).is_some_and(|c| c.uid == uid))
            .collect();
        let seen = mine.iter().map(|p| Seen {
            name: name_of(*p),
            uid: uid_of(*p),
            resource_version: p.metadata.resource_version.as_deref().unwrap_or_default(),
            terminating: is_deleting(*p),
        });
        if !self.expectations.satisfied(&key, seen) {
            tracing::debug!("expectations pending");
            return Ok(Some(Duration::from_secs(5)));
        }
        let now = k8s_openapi::jiff::Timestamp::now();
        let plan = decide::plan(job, &mine, now);
        if plan.delete_job {
            tracing::info!("ttlSecondsAfterFinished passed, deleting the job");
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Foreground),
                preconditions: Some(kube::api::Preconditions {
                    uid: Some(uid.to_owned()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            return match Api::<Job>::namespaced(self.client.clone(), ns_of(job))
                .delete(name_of(job), &dp)
                .await
            {
                Ok(_) => Ok(None),
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(None),
                Err(e) => Err(SyncError::api("deleting a finished job")(e)),
            };
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns_of(job));
        let mut first_err = None;
        for name in &plan.delete {
            let Some(p) = mine.iter().find(|p| name_of(**p) == name) else { continue };
            self.expectations.expect_delete(&key, uid_of(*p));
            match pods.delete(name, &DeleteParams::default()).await {
                Ok(_) => self.events.send(EventReq::for_object(
                    job,
                    "Normal",
                    "SuccessfulDelete",
                    format!("Deleted pod: {name}"),
                )),
                Err(e) => {
                    self.expectations.delete_failed(&key, uid_of(*p));
                    if !matches!(&e, kube::Error::Api(s) if s.code == 404) {
                        first_err.get_or_insert(SyncError::api("deleting a pod")(e));
                    }
                }
            }
        }
        if !plan.create.is_empty() {
            tracing::info!(creating = plan.create.len(), "creating pods");
        }
        // Slow start (1, 2, 4, …), stopping at the first failure, as upstream's `manageJob`.
        let mut batch = 1;
        let mut todo = plan.create.iter();
        'create: loop {
            let chunk: Vec<Option<i32>> = todo.by_ref().take(batch).copied().collect();
            if chunk.is_empty() {
                break;
            }
            let results = futures::future::join_all(chunk.iter().map(|index| {
                let pod = pod_for(job, *index, index.and_then(|i| plan.index_failures.get(&i)));
                let pods = pods.clone();
                async move { pods.create(&PostParams::default(), &pod).await }
            }))
            .await;
            for r in results {
                match r {
                    Ok(p) => {
                        self.expectations.expect_create(&key, name_of(&p));
                        self.events.send(EventReq::for_object(
                            job,
                            "Normal",
                            "SuccessfulCreate",
                            format!("Created pod: {}", name_of(&p)),
                        ));
                    }
                    Err(e) => {
                        self.events.send(EventReq::for_object(
                            job,
                            "Warning",
                            "FailedCreate",
                            format!("Error creating: {e}"),
                        ));
                        first_err.get_or_insert(SyncError::api("creating a pod")(e));
                        break 'create;
                    }
                }
            }
            batch *= 2;
        }
        let old = job.status.clone().unwrap_or_default();
        if !crate::util::sem_eq(&old, &plan.status, true) {
            let mut next = job.clone();
            next.status = Some(plan.status.clone());
            Api::<Job>::namespaced(self.client.clone(), ns_of(job))
                .replace_status(name_of(job), &PostParams::default(), &next)
                .await
                .map_err(SyncError::api("updating the job status"))?;
            // Events only once the transition they tell of is stored.
            for (type_, reason, msg) in plan.events {
                self.events.send(EventReq::for_object(job, type_, static_reason(&reason), msg));
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        Ok(plan.requeue)
    }
}

/// Event reasons are `&'static str`: the Job's transitions have these few.
fn static_reason(reason: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "BackoffLimitExceeded",
        "DeadlineExceeded",
        "PodFailurePolicy",
        "FailedIndexes",
        "MaxFailedIndexesExceeded",
        "Completed",
        "Suspended",
        "Resumed",
        "Failed",
    ];
    KNOWN.iter().find(|k| **k == reason).copied().unwrap_or("JobFinished")
}

/// A pod from the Job's template (`GetPodFromTemplate`, plus the Indexed additions).
fn pod_for(job: &Job, index: Option<i32>, failures: Option<&(i32, i32)>) -> Pod {
    let template = job.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let name = name_of(job);
    let mut labels = meta.labels.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    let mut spec = template.spec.unwrap_or_default();
    let generate_name = match index {
        Some(i) => {
            labels.insert(COMPLETION_INDEX.to_owned(), i.to_string());
            annotations.insert(COMPLETION_INDEX.to_owned(), i.to_string());
            // `addIndexFailureCountAnnotation`: the ignored count only when there is one.
            if let Some((count, ignored)) = failures {
                annotations.insert(indexes::INDEX_FAILURE_COUNT.to_owned(), count.to_string());
                if *ignored > 0 {
                    annotations.insert(
                        indexes::INDEX_IGNORED_FAILURE_COUNT.to_owned(),
                        ignored.to_string(),
                    );
                }
            }
            if spec.hostname.is_none() {
                spec.hostname = Some(format!("{name}-{i}"));
            }
            let env = EnvVar {
                name: "JOB_COMPLETION_INDEX".to_owned(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: None,
                        field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                    }),
                    ..EnvVarSource::default()
                }),
            };
            for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
                let list = c.env.get_or_insert_with(Vec::new);
                if !list.iter().any(|e| e.name == env.name) {
                    list.push(env.clone());
                }
            }
            format!("{name}-{i}-")
        }
        None => format!("{name}-"),
    };
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_ref(job)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}
