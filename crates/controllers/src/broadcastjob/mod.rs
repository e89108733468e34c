//! OpenKruise's BroadcastJob controller (`pkg/controller/broadcastjob`, v1.9): a kube-runtime
//! `Controller` of BroadcastJobs over pod and node reflectors. Each pass asks
//! [`decide::plan`] which nodes still need the job's pod, creates those pods pinned to their
//! node through a required `metadata.name` node affinity (upstream's default, so the scheduler
//! still binds them), deletes pods that no longer fit or belong to a failed job, writes
//! status and Events, and deletes a finished job after `ttlSecondsAfterFinished`. A node that
//! joins reconciles every unfinished BroadcastJob, so `completionPolicy: Never` jobs reach it.

pub mod decide;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kinetic_api::kruise::broadcastjob::{BroadcastJob, CONTROLLER_UID_LABEL, JOB_NAME_LABEL};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use crate::backoff::Backoff;
use crate::events::{EventReq, EventSink};
use crate::expectations::{Expectations, Seen};
use crate::util::{SyncError, controller_of, controller_ref, is_deleting, name_of, ns_of, uid_of};

/// The controller's name in Events.
pub const COMPONENT: &str = "broadcastjob-controller";

/// The BroadcastJob CRD, for `crds::install`.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    vec![BroadcastJob::crd_all()]
}

/// Runs the BroadcastJob controller until `shutdown` completes.
///
/// # Errors
/// None so far: API errors are retried per BroadcastJob with back-off.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    crate::util::run_together(shutdown, |stop| async move {
        let (pods, pod_changes) =
            crate::util::reflect_changes::<Pod>(&client, watcher::Config::default());
        let (nodes, node_changes) =
            crate::util::reflect_changes::<Node>(&client, watcher::Config::default());
        let controller =
            Controller::new(Api::<BroadcastJob>::all(client.clone()), watcher::Config::default());
        let ctx = Arc::new(Ctx {
            client: client.clone(),
            jobs: controller.store(),
            pods,
            nodes,
            expectations: Expectations::default(),
            events: EventSink::spawn(client, COMPONENT.to_owned()),
            backoff: Backoff::default(),
        });
        let (by_pod, by_node) = (ctx.clone(), ctx.clone());
        tracing::info!("broadcastjob controller started");
        controller
            .watches_stream(pod_changes, move |pod| by_pod.job_of(&pod))
            .watches_stream(node_changes, move |_node| by_node.unfinished())
            .graceful_shutdown_on(stop.wait())
            .run(reconcile, error_policy, ctx)
            .for_each(crate::log_reconcile("broadcastjob"))
            .await;
        Ok(())
    })
    .await
}

struct Ctx {
    client: Client,
    jobs: Store<BroadcastJob>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    expectations: Expectations,
    events: EventSink,
    backoff: Backoff,
}

fn key_of(job: &BroadcastJob) -> String {
    format!("{}/{}", ns_of(job), name_of(job))
}

async fn reconcile(job: Arc<BroadcastJob>, ctx: Arc<Ctx>) -> Result<Action, SyncError> {
    let pass = async {
        let requeue = ctx.sync(&job).await?;
        Ok(requeue.map_or_else(Action::await_change, Action::requeue))
    };
    ctx.backoff.reconcile(&*job, pass).await
}

fn error_policy(job: Arc<BroadcastJob>, e: &SyncError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&*job, e)
}

impl Ctx {
    fn job_of(&self, pod: &Pod) -> Option<ObjectRef<BroadcastJob>> {
        let ctrl = controller_of(pod).filter(|c| c.kind == "BroadcastJob")?;
        let ns = ns_of(pod);
        self.expectations.creation_observed(&format!("{ns}/{}", ctrl.name), name_of(pod));
        Some(ObjectRef::new(&ctrl.name).within(ns))
    }

    fn unfinished(&self) -> Vec<ObjectRef<BroadcastJob>> {
        self.jobs
            .state()
            .iter()
            .filter(|j| !j.status.as_ref().is_some_and(decide::finished))
            .map(|j| ObjectRef::from_obj(&**j))
            .collect()
    }

    #[tracing::instrument(skip_all, fields(broadcastjob = %key_of(job)))]
    async fn sync(&self, job: &BroadcastJob) -> Result<Option<Duration>, SyncError> {
        if !crate::cache_ready(&self.pods) || !crate::cache_ready(&self.nodes) {
            return Ok(Some(Duration::from_millis(200)));
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
            return Ok(Some(Duration::from_secs(5)));
        }
        let nodes = self.nodes.state();
        let nodes: Vec<&Node> = nodes.iter().map(|n| &**n).collect();
        let now = k8s_openapi::jiff::Timestamp::now();
        let plan = decide::plan(job, &nodes, &mine, now);
        let api: Api<BroadcastJob> = Api::namespaced(self.client.clone(), ns_of(job));
        if plan.delete_job {
            tracing::info!("ttlSecondsAfterFinished passed, deleting the job");
            return match api.delete(name_of(job), &DeleteParams::background()).await {
                Ok(_) => Ok(None),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
                Err(e) => Err(SyncError::api("deleting a finished broadcastjob")(e)),
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
                    format!("Delete pod: {name}"),
                )),
                Err(e) => {
                    self.expectations.delete_failed(&key, uid_of(*p));
                    if !matches!(&e, kube::Error::Api(s) if s.code == 404) {
                        first_err.get_or_insert(SyncError::api("deleting a pod")(e));
                    }
                }
            }
        }
        let results = futures::future::join_all(plan.create_on.iter().map(|node| {
            let pod = pod_for(job, node);
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
                }
            }
        }
        if plan.pause {
            let patch = serde_json::json!({"spec": {"paused": true}});
            api.patch(name_of(job), &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(SyncError::api("pausing the broadcastjob"))?;
        }
        let old = job.status.clone().unwrap_or_default();
        if !crate::util::sem_eq(&old, &plan.status, false) {
            let mut next = job.clone();
            next.status = Some(plan.status.clone());
            api.replace_status(name_of(job), &PostParams::default(), &next)
                .await
                .map_err(SyncError::api("updating the broadcastjob status"))?;
            for (type_, reason, msg) in plan.events {
                self.events.send(EventReq::for_object(job, type_, reason, msg));
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        Ok(plan.requeue)
    }
}

/// The job's pod for `node` (`createPod`): the template with the job's labels, the job as
/// controlling owner, and the node affinity replaced by the node's name
/// (`ReplaceDaemonSetPodNodeNameNodeAffinity`).
fn pod_for(job: &BroadcastJob, node: &str) -> Pod {
    let template = job.spec.template.clone();
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(JOB_NAME_LABEL.to_owned(), name_of(job).to_owned());
    labels.insert(CONTROLLER_UID_LABEL.to_owned(), uid_of(job).to_owned());
    let mut spec = template.spec.unwrap_or_default();
    let term = NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".to_owned(),
            operator: "In".to_owned(),
            values: Some(vec![node.to_owned()]),
        }]),
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let na = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution =
        Some(NodeSelector { node_selector_terms: vec![term] });
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", name_of(job))),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_ref(job)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}
