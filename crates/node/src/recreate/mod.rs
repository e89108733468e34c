//! ContainerRecreateRequests on this node: kruise-daemon's `containerrecreate` controller
//! (`pkg/daemon/containerrecreate`), with the pod's worker in place of CRI.
//!
//! The task watches the requests labelled with this node that are still active
//! (`crr.apps.kruise.io/node-name=<node>,crr.apps.kruise.io/active=true`) and this node's pods.
//! On every change it makes one pass per pod with requests: the oldest request (by phase, then
//! creation) is picked and the others are marked Pending; the picked one goes to Recreating,
//! waits for the controller to have taken the pod out of service when
//! `unreadyGracePeriodSeconds` is set (the `crr.apps.kruise.io/unready-acquired` annotation)
//! and for that grace to pass, then [`plan`] decides which container to stop. The stop is the
//! pod worker's (`worker::Msg::Recreate`: preStop hook, SIGTERM, SIGKILL at the grace
//! period); the worker's restart policy starts the container again in the same sandbox, with
//! its restart count + 1. States, and completion, are written to the request's status.
//!
//! The controller (`kinetic-controllers`' `crr`) fails requests at `activeDeadlineSeconds` or
//! when their pod is gone, gives the pod's readiness back and deletes finished requests after
//! `ttlSecondsAfterFinished`.

mod plan;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kinetic_api::kruise::containerrecreaterequest::{
    ACTIVE_LABEL, ContainerRecreateRequest, ContainerRecreateState, NODE_NAME_LABEL, POD_UID_LABEL,
    Phase, UNREADY_ACQUIRED_KEY,
};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt as _};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::worker;

/// A message for the worker of the pod with this UID.
pub(crate) type ToWorker = (String, worker::Msg);

/// A kill the worker answered: (request UID, container, error).
type KillResult = (String, String, Option<String>);

struct Recreator {
    client: Client,
    crrs: Store<ContainerRecreateRequest>,
    pods: Store<Pod>,
    to_workers: mpsc::UnboundedSender<ToWorker>,
    results: mpsc::UnboundedSender<KillResult>,
    /// Kills sent, by request UID (cleared with the request).
    killed: HashMap<String, HashSet<String>>,
    /// Kills the worker refused, by request UID and container.
    kill_errors: HashMap<String, HashMap<String, String>>,
}

/// Runs until the agent stops.
pub(crate) async fn run(client: Client, node: String, to_workers: mpsc::UnboundedSender<ToWorker>) {
    let (crrs, crr_writer) = reflector::store();
    let (pods, pod_writer) = reflector::store();
    let selector = format!("{NODE_NAME_LABEL}={node},{ACTIVE_LABEL}=true");
    let crr_stream = reflector::reflector(
        crr_writer,
        watcher(
            Api::<ContainerRecreateRequest>::all(client.clone()),
            watcher::Config::default().labels(&selector),
        ),
    )
    .default_backoff()
    .map(|_| ());
    let pod_stream = reflector::reflector(
        pod_writer,
        watcher(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().fields(&format!("spec.nodeName={node}")),
        ),
    )
    .default_backoff()
    .map(|_| ());
    let mut changes = futures::stream::select(crr_stream, pod_stream).boxed();
    let (results, mut result_rx) = mpsc::unbounded_channel();
    let mut r = Recreator {
        client,
        crrs,
        pods,
        to_workers,
        results,
        killed: HashMap::new(),
        kill_errors: HashMap::new(),
    };
    let mut wake: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            c = changes.next() => if c.is_none() { return },
            Some((uid, name, err)) = result_rx.recv() => {
                if let Some(e) = err {
                    r.kill_errors.entry(uid).or_default().insert(name, e);
                }
            }
            () = async { match wake { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {}
        }
        // Take whatever else is ready so one pass serves it all.
        while let Some(Some(())) = futures::FutureExt::now_or_never(changes.next()) {}
        if r.crrs.state().is_empty() && r.killed.is_empty() {
            wake = None;
            continue;
        }
        let next = r.pass().await;
        wake = next.map(|d| tokio::time::Instant::now() + d);
    }
}

impl Recreator {
    /// One pass over every pod with active requests; returns when to look again.
    async fn pass(&mut self) -> Option<Duration> {
        let all = self.crrs.state();
        let live: HashSet<String> = all.iter().filter_map(|c| c.uid()).collect();
        self.killed.retain(|u, _| live.contains(u));
        self.kill_errors.retain(|u, _| live.contains(u));
        let mut by_pod: HashMap<(String, String), Vec<Arc<ContainerRecreateRequest>>> =
            HashMap::new();
        for c in all {
            let done = c.status.as_ref().is_some_and(|s| s.completion_time.is_some());
            if c.metadata.deletion_timestamp.is_some() || done {
                continue;
            }
            by_pod
                .entry((c.namespace().unwrap_or_default(), c.spec.pod_name.clone()))
                .or_default()
                .push(c);
        }
        let mut wake: Option<Duration> = None;
        for ((ns, pod), mut list) in by_pod {
            list.sort_by_key(|c| {
                (phase_weight(c), c.metadata.creation_timestamp.clone().map(|t| t.0))
            });
            for other in list.iter().skip(1) {
                if other.status.as_ref().and_then(|s| s.phase).is_none() {
                    self.write_status(other, json!({"phase": "Pending"})).await;
                }
            }
            let Some(picked) = list.first() else { continue };
            let pod = self.pods.get(&ObjectRef::new(&pod).within(&ns));
            match self.sync(picked, pod.as_deref()).await {
                Ok(Some(d)) => wake = Some(wake.map_or(d, |w| w.min(d))),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(crr = %key(picked), error = %e, "container recreate pass failed; retrying");
                    let d = Duration::from_secs(1);
                    wake = Some(wake.map_or(d, |w| w.min(d)));
                }
            }
        }
        wake
    }

    async fn sync(
        &mut self,
        crr: &ContainerRecreateRequest,
        pod: Option<&Pod>,
    ) -> Result<Option<Duration>, kube::Error> {
        // A pod that is gone (or another pod of the name) is the controller's to report.
        let uid_label = crr.labels().get(POD_UID_LABEL).cloned().unwrap_or_default();
        let Some(pod) = pod.filter(|p| p.uid().unwrap_or_default() == uid_label) else {
            return Ok(None);
        };
        let api: Api<ContainerRecreateRequest> =
            Api::namespaced(self.client.clone(), &crr.namespace().unwrap_or_default());
        let status = crr.status.clone().unwrap_or_default();
        if status.phase != Some(Phase::Recreating) {
            api.patch_status(
                &crr.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Recreating"}})),
            )
            .await?;
            return Ok(None);
        }
        let statuses =
            pod.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
        if crr.spec.containers.iter().any(|c| c.status_context.is_none()) {
            // Admitted without Kinetic's webhook (a real cluster): fill in what the request is
            // made against, as upstream's daemon does on its first pass.
            let mut containers = crr.spec.containers.clone();
            for c in containers.iter_mut().filter(|c| c.status_context.is_none()) {
                if let Some(s) = statuses.iter().find(|s| s.name == c.name) {
                    c.status_context = Some(kinetic_api::kruise::containerrecreaterequest::ContainerRecreateRequestContainerContext {
                        container_id: s.container_id.clone().unwrap_or_default(),
                        restart_count: s.restart_count,
                    });
                }
            }
            let body = json!({"spec": {"containers": containers}});
            api.patch(&crr.name_any(), &PatchParams::default(), &Patch::Merge(body)).await?;
            return Ok(None);
        }
        let now = Timestamp::now();
        if let Some(grace) = crr.spec.unready_grace_seconds() {
            let Some(at) = crr.annotations().get(UNREADY_ACQUIRED_KEY) else {
                // The controller takes the pod out of service first.
                return Ok(None);
            };
            let Ok(at) = at.parse::<Timestamp>() else {
                self.complete(&api, crr, &format!("failed to parse unready time {at}")).await?;
                return Ok(None);
            };
            let until = at + jiff::SignedDuration::from_secs(grace.max(0));
            if until > now {
                return Ok(Some(Duration::try_from(until.duration_since(now)).unwrap_or_default()));
            }
        }
        let observed: HashMap<String, plan::Observed> = statuses
            .iter()
            .map(|s| {
                let running = s.state.as_ref().and_then(|st| st.running.as_ref());
                let o = plan::Observed {
                    id: s.container_id.clone().unwrap_or_default(),
                    restart_count: s.restart_count,
                    running: running.is_some(),
                    started_at: running.and_then(|r| r.started_at.as_ref()).map(|t| t.0),
                    ready: s.ready,
                };
                (s.name.clone(), o)
            })
            .collect();
        let uid = crr.uid().unwrap_or_default();
        let killed = self.killed.get(&uid);
        let errors = self.kill_errors.get(&uid);
        let mem = plan::Memory {
            killed: killed.into_iter().flatten().map(String::as_str).collect(),
            kill_errors: errors
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        };
        let created = crr.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
        let prev = status.container_recreate_states.clone().unwrap_or_default();
        let p = plan::plan(&crr.spec, &prev, created, &observed, &mem, now);
        if let Some(name) = &p.kill {
            self.kill(crr, pod, name);
        }
        if p.states != prev {
            self.write_states(&api, crr, &p.states).await?;
        }
        if p.complete {
            self.complete(&api, crr, "").await?;
        }
        Ok(p.wake)
    }

    /// Asks the pod's worker to stop `name` (it restarts per the pod's restart policy).
    fn kill(&mut self, crr: &ContainerRecreateRequest, pod: &Pod, name: &str) {
        let uid = crr.uid().unwrap_or_default();
        self.killed.entry(uid.clone()).or_default().insert(name.to_owned());
        let grace = crr
            .spec
            .strategy
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .or_else(|| pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30);
        let (done, answer) = oneshot::channel();
        let msg = worker::Msg::Recreate(worker::Recreate {
            container: name.to_owned(),
            grace: Duration::from_secs(u64::try_from(grace.max(0)).unwrap_or(0)),
            message: format!(
                "Stopping container {name} by ContainerRecreateRequest {}",
                crr.name_any()
            ),
            done,
        });
        tracing::info!(crr = %key(crr), container = %name, "recreating container");
        let _ = self.to_workers.send((pod.uid().unwrap_or_default(), msg));
        let results = self.results.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            let err = match answer.await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some("the pod's worker is gone".to_owned()),
            };
            let _ = results.send((uid, name, err));
        });
    }

    async fn write_states(
        &self,
        api: &Api<ContainerRecreateRequest>,
        crr: &ContainerRecreateRequest,
        states: &[ContainerRecreateState],
    ) -> Result<(), kube::Error> {
        let body = json!({"status": {"containerRecreateStates": states}});
        api.patch_status(&crr.name_any(), &PatchParams::default(), &Patch::Merge(body)).await?;
        Ok(())
    }

    async fn complete(
        &self,
        api: &Api<ContainerRecreateRequest>,
        crr: &ContainerRecreateRequest,
        message: &str,
    ) -> Result<(), kube::Error> {
        let mut st =
            json!({"phase": "Completed", "completionTime": crate::status::time(Timestamp::now())});
        if !message.is_empty() {
            st["message"] = json!(message);
        }
        tracing::info!(crr = %key(crr), "container recreate request completed");
        api.patch_status(
            &crr.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": st})),
        )
        .await?;
        Ok(())
    }

    async fn write_status(&self, crr: &ContainerRecreateRequest, st: serde_json::Value) {
        let api: Api<ContainerRecreateRequest> =
            Api::namespaced(self.client.clone(), &crr.namespace().unwrap_or_default());
        if let Err(e) = api
            .patch_status(
                &crr.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": st})),
            )
            .await
        {
            tracing::debug!(crr = %key(crr), error = %e, "status not written");
        }
    }
}

fn key(crr: &ContainerRecreateRequest) -> String {
    format!("{}/{}", crr.namespace().unwrap_or_default(), crr.name_any())
}

/// Upstream's `crrListByPhaseAndCreated`: Completed, Recreating, Pending, then new ones.
fn phase_weight(c: &ContainerRecreateRequest) -> u8 {
    match c.status.as_ref().and_then(|s| s.phase) {
        Some(Phase::Completed) => 1,
        Some(Phase::Recreating) => 2,
        Some(Phase::Pending) => 3,
        _ => 4,
    }
}
