//! The embedded scheduler: binds pending pods to Nodes the way kube-scheduler's default profile
//! does for the features listed in the crate doc, talking to the API only through `kube`.
//!
//! One task owns all state and reacts to three inputs: the Node watch, one watch of every
//! non-terminated Pod (split by `spec.nodeName` in memory, like upstream's single informer, so a
//! pod's move from pending to bound is one ordered event), and the outcomes of the binds it
//! started. After each input it schedules every pod in its active queue at once, in memory,
//! and starts the binds as separate tasks, so a pending pod is bound within one watch delivery
//! and one request of its creation; nothing on that path sleeps or polls.
//!
//! A pod is *assumed* on its node (its requests count against the node) from the moment the
//! scheduler picks the node until the watch shows it bound or the bind fails, as upstream's
//! scheduler cache does, so scheduling many pods at once never overcommits a node.
//!
//! Pods that fit nowhere get `PodScheduled=False/Unschedulable` and a `FailedScheduling` Event
//! with upstream's message, and are retried after a back-off (1 s doubling, at most 5 min, as
//! upstream's unschedulable queue) or at once when a Node is added or changes, or a pod goes
//! away. Failed binds back off from 1 s to at most 10 s. Status patches and Events are written
//! by background tasks and never delay a bind.

pub mod fit;
pub mod volumes;
pub use kinetic_machinery::quantity;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Binding, Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher;
use kube::{Client, ResourceExt as _};
use tokio::sync::mpsc;
use tokio::time::Instant;

use self::fit::{NodeInfo, PodInfo, Usage};
use crate::events::{EventReq, EventSink};
use crate::{Error, Result};

/// The scheduler name pods get by default (`spec.schedulerName`).
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(10);
const MAX_UNSCHEDULABLE_BACKOFF: Duration = Duration::from_secs(300);

/// Configuration of [`run_scheduler`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Pods whose `spec.schedulerName` is this are scheduled; others are left alone. It is also
    /// the `source.component` of the Events.
    pub scheduler_name: String,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self { scheduler_name: DEFAULT_SCHEDULER_NAME.to_owned() }
    }
}

/// Runs the scheduler until `shutdown` completes.
///
/// # Errors
/// A watch stream ends (kube's watcher retries API errors with back-off, so this does not
/// happen in practice). API errors of single binds, patches and Events are logged and retried
/// or dropped, never returned.
///
/// # Caveats
/// Run one scheduler per scheduler name: there is no leader election.
pub async fn run_scheduler(
    client: Client,
    cfg: SchedulerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let pods = watcher(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed"),
    )
    .default_backoff();
    let nodes =
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()).default_backoff();
    let mut pods = std::pin::pin!(pods);
    let mut nodes = std::pin::pin!(nodes);
    let wcfg = watcher::Config::default;
    let mut claims = std::pin::pin!(
        watcher(Api::<PersistentVolumeClaim>::all(client.clone()), wcfg()).default_backoff()
    );
    let mut volumes = std::pin::pin!(
        watcher(Api::<PersistentVolume>::all(client.clone()), wcfg()).default_backoff()
    );
    let mut classes =
        std::pin::pin!(watcher(Api::<StorageClass>::all(client.clone()), wcfg()).default_backoff());
    let mut shutdown = std::pin::pin!(shutdown);
    let (bind_tx, mut bind_rx) = mpsc::unbounded_channel();
    let io = Io {
        client: client.clone(),
        events: EventSink::spawn(client, cfg.scheduler_name.clone()),
        binds: bind_tx,
    };
    let mut state = State::new(cfg.scheduler_name);
    tracing::info!(scheduler = %state.name, "scheduler started");
    loop {
        let deadline = state.next_deadline();
        tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            Some(outcome) = bind_rx.recv() => state.on_bind_outcome(outcome, Instant::now()),
            ev = nodes.next() => match ev {
                Some(Ok(ev)) => state.on_node_event(ev),
                Some(Err(error)) => tracing::warn!(%error, "node watch failed, retrying"),
                None => return Err(Error::WatchEnded { resource: "node" }),
            },
            ev = pods.next() => match ev {
                Some(Ok(ev)) => state.on_pod_event(ev, Instant::now()),
                Some(Err(error)) => tracing::warn!(%error, "pod watch failed, retrying"),
                None => return Err(Error::WatchEnded { resource: "pod" }),
            },
            ev = claims.next() => match ev {
                Some(Ok(ev)) => if state.volumes.claims.on(ev) { state.activate_unschedulable() },
                Some(Err(error)) => tracing::warn!(%error, "claim watch failed, retrying"),
                None => return Err(Error::WatchEnded { resource: "persistentvolumeclaim" }),
            },
            ev = volumes.next() => match ev {
                Some(Ok(ev)) => if state.volumes.volumes.on(ev) { state.activate_unschedulable() },
                Some(Err(error)) => tracing::warn!(%error, "volume watch failed, retrying"),
                None => return Err(Error::WatchEnded { resource: "persistentvolume" }),
            },
            ev = classes.next() => match ev {
                Some(Ok(ev)) => if state.volumes.classes.on(ev) { state.activate_unschedulable() },
                Some(Err(error)) => tracing::warn!(%error, "class watch failed, retrying"),
                None => return Err(Error::WatchEnded { resource: "storageclass" }),
            },
            () = sleep_until(deadline) => state.on_timer(Instant::now()),
        }
        for action in state.schedule_pending(Instant::now()) {
            io.execute(action);
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The instant as the timeline annotations carry it: RFC 3339, UTC, microseconds.
fn now_micros() -> String {
    format!("{:.6}", Timestamp::now())
}

/// What the state machine asks the I/O side to do.
#[derive(Debug)]
enum Action {
    /// `claims`: the pod's unbound `WaitForFirstConsumer` claims (namespace, name), annotated
    /// with the node before the pod is bound.
    Bind {
        key: String,
        pod: Box<Pod>,
        node: String,
        queued_at: String,
        claims: Vec<String>,
    },
    Unschedulable {
        pod: Box<Pod>,
        message: String,
    },
}

#[derive(Debug)]
struct BindOutcome {
    key: String,
    uid: String,
    node: String,
    result: BindResult,
}

#[derive(Debug, PartialEq, Eq)]
enum BindResult {
    Bound,
    /// The pod is gone or already bound (404/409): the watch will say so.
    Gone,
    Failed,
}

struct Io {
    client: Client,
    events: EventSink,
    binds: mpsc::UnboundedSender<BindOutcome>,
}

impl Io {
    fn execute(&self, action: Action) {
        match action {
            Action::Bind { key, pod, node, queued_at, claims } => {
                let (client, events, tx) =
                    (self.client.clone(), self.events.clone(), self.binds.clone());
                tokio::spawn(async move {
                    let uid = pod.uid().unwrap_or_default();
                    let result = match select_node(&client, &pod, &claims, &node).await {
                        Ok(()) => bind(client, &pod, &node, queued_at).await,
                        Err(r) => r,
                    };
                    if result == BindResult::Bound {
                        let message = format!(
                            "Successfully assigned {}/{} to {node}",
                            pod.namespace().unwrap_or_default(),
                            pod.name_any()
                        );
                        events.send(EventReq::for_pod(&pod, "Normal", "Scheduled", message));
                    }
                    // The receiver lives as long as the scheduler loop.
                    let _ = tx.send(BindOutcome { key, uid, node, result });
                });
            }
            Action::Unschedulable { pod, message } => {
                self.events.send(EventReq::for_pod(
                    &pod,
                    "Warning",
                    "FailedScheduling",
                    message.clone(),
                ));
                if !has_unschedulable_condition(&pod, &message) {
                    tokio::spawn(patch_unschedulable(self.client.clone(), pod, message));
                }
            }
        }
    }
}

/// VolumeBinding's PreBind, the part Kinetic does: `volume.kubernetes.io/selected-node` on the
/// pod's unbound `WaitForFirstConsumer` claims, so the provisioner of that node provisions them.
async fn select_node(
    client: &Client,
    pod: &Pod,
    claims: &[String],
    node: &str,
) -> Result<(), BindResult> {
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let patch = serde_json::json!({"metadata": {"annotations": {
        kinetic_api::storage::ANN_SELECTED_NODE: node,
    }}});
    for name in claims {
        match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => tracing::debug!(claim = %name, %node, "claim annotated with selected node"),
            Err(error) => {
                tracing::warn!(claim = %name, %error, "annotating the claim failed, will retry");
                return Err(BindResult::Failed);
            }
        }
    }
    Ok(())
}

#[tracing::instrument(skip_all, fields(pod = %pod_key(pod), node = %node))]
async fn bind(client: Client, pod: &Pod, node: &str, queued_at: String) -> BindResult {
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(client, &pod.namespace().unwrap_or_default());
    let annotations = BTreeMap::from([
        (kinetic_api::timeline::QUEUED_AT.to_owned(), queued_at),
        (kinetic_api::timeline::SCHEDULED_AT.to_owned(), now_micros()),
    ]);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: pod.namespace(),
            uid: pod.uid(),
            annotations: Some(annotations),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Node".to_owned()),
            name: Some(node.to_owned()),
            ..Default::default()
        },
    };
    let res = api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await;
    match res {
        Ok(_) => {
            tracing::debug!("pod bound");
            BindResult::Bound
        }
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => {
            tracing::debug!(reason = %s.reason, message = %s.message, "pod not bound: gone or taken");
            BindResult::Gone
        }
        Err(error) => {
            tracing::warn!(%error, "binding failed, will retry");
            BindResult::Failed
        }
    }
}

fn has_unschedulable_condition(pod: &Pod, message: &str) -> bool {
    pod.status.as_ref().and_then(|s| s.conditions.as_ref()).into_iter().flatten().any(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
            && c.message.as_deref() == Some(message)
    })
}

/// Sets `PodScheduled=False/Unschedulable` with a resourceVersion precondition, so it can never
/// land on a pod that got bound meanwhile; on a conflict it rereads the pod and tries again
/// while the pod is still pending.
#[tracing::instrument(skip_all, fields(pod = %pod_key(&pod)))]
async fn patch_unschedulable(client: Client, pod: Box<Pod>, message: String) {
    let api: Api<Pod> = Api::namespaced(client, &pod.namespace().unwrap_or_default());
    let name = pod.name_any();
    let mut pod = *pod;
    for _ in 0..3 {
        let old = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
        // The transition time moves only when the status does.
        let transition = match old {
            Some(c) if c.status == "False" => c.last_transition_time.clone(),
            _ => None,
        }
        .map_or_else(|| serde_json::json!(Timestamp::now()), |t| serde_json::json!(t));
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": pod.resource_version()},
            "status": {"conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastProbeTime": null,
                "lastTransitionTime": transition,
            }]},
        });
        match api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return,
            Err(error) => {
                tracing::debug!(%error, "pod condition not updated");
                return;
            }
        }
        match api.get(&name).await {
            Ok(p)
                if p.uid() == pod.uid()
                    && p.metadata.deletion_timestamp.is_none()
                    && p.spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_deref())
                        .unwrap_or("")
                        .is_empty() =>
            {
                pod = p;
            }
            _ => return,
        }
    }
}

fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

fn node_name(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("")
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// Upstream's exponential back-off: 1 s, 2 s, 4 s … capped.
fn backoff(attempts: u32, max: Duration) -> Duration {
    let exp = attempts.saturating_sub(1).min(16);
    INITIAL_BACKOFF.saturating_mul(1 << exp).min(max)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QState {
    /// In `active`, to be tried at the next pass.
    Active,
    /// Has `spec.schedulingGates`; waits for an update that removes them.
    Gated,
    /// In `waiting` until the instant (or a cluster change, for unschedulable pods).
    Waiting { until: Instant, unschedulable: bool },
    /// A bind is under way.
    InFlight,
}

#[derive(Debug)]
struct Pending {
    pod: Pod,
    uid: String,
    /// When the scheduler first saw the pod, as annotated on the Binding.
    queued_at: String,
    seq: u64,
    priority: i32,
    attempts: u32,
    state: QState,
}

#[derive(Debug)]
struct Cached {
    node: String,
    info: PodInfo,
    /// Set while the pod is only assumed on the node: `None` while the bind is under way, then
    /// when it succeeded (until the watch shows the pod bound).
    assumed: Option<Option<Instant>>,
}

#[derive(Debug, Default)]
struct NodeEntry {
    /// `None` for a node that pods are bound to but that does not exist (yet).
    info: Option<NodeInfo>,
    used: Usage,
}

#[derive(Debug, Default)]
struct PodRelist {
    started: Option<Instant>,
    uids: HashSet<String>,
    keys: HashSet<String>,
}

/// Everything the scheduler knows; no I/O.
#[derive(Debug)]
struct State {
    name: String,
    nodes: BTreeMap<String, NodeEntry>,
    /// Pods bound or assumed to a node, by UID.
    pods: HashMap<String, Cached>,
    /// Pods to schedule, by namespace/name.
    pending: HashMap<String, Pending>,
    active: BTreeSet<(Reverse<i32>, u64, String)>,
    waiting: BTreeSet<(Instant, u64, String)>,
    seq: u64,
    nodes_synced: bool,
    pods_synced: bool,
    node_relist: Option<HashSet<String>>,
    pod_relist: Option<PodRelist>,
    volumes: volumes::Volumes,
}

impl State {
    fn new(name: String) -> Self {
        Self {
            name,
            nodes: BTreeMap::new(),
            pods: HashMap::new(),
            pending: HashMap::new(),
            active: BTreeSet::new(),
            waiting: BTreeSet::new(),
            seq: 0,
            nodes_synced: false,
            pods_synced: false,
            node_relist: None,
            pod_relist: None,
            volumes: volumes::Volumes::default(),
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.waiting.first().map(|w| w.0)
    }

    fn on_node_event(&mut self, ev: watcher::Event<Node>) {
        match ev {
            watcher::Event::Init => self.node_relist = Some(HashSet::new()),
            watcher::Event::InitApply(n) => {
                if let Some(seen) = &mut self.node_relist {
                    seen.insert(n.name_any());
                }
                self.apply_node(&n);
            }
            watcher::Event::InitDone => {
                let seen = self.node_relist.take().unwrap_or_default();
                let gone: Vec<String> = self
                    .nodes
                    .iter()
                    .filter(|(name, e)| e.info.is_some() && !seen.contains(*name))
                    .map(|(name, _)| name.clone())
                    .collect();
                for name in gone {
                    self.delete_node(&name);
                }
                self.nodes_synced = true;
            }
            watcher::Event::Apply(n) => self.apply_node(&n),
            watcher::Event::Delete(n) => self.delete_node(&n.name_any()),
        }
    }

    fn apply_node(&mut self, n: &Node) {
        let info = NodeInfo::from_node(n);
        let entry = self.nodes.entry(info.name.clone()).or_default();
        // Heartbeats change nothing the filters read; only real changes retry pods.
        if entry.info.as_ref() != Some(&info) {
            tracing::debug!(node = %info.name, "node changed");
            entry.info = Some(info);
            self.activate_unschedulable();
        }
    }

    fn delete_node(&mut self, name: &str) {
        if let Some(e) = self.nodes.get_mut(name) {
            e.info = None;
            if e.used.pods == 0 {
                self.nodes.remove(name);
            }
        }
    }

    fn on_pod_event(&mut self, ev: watcher::Event<Pod>, now: Instant) {
        match ev {
            watcher::Event::Init => {
                self.pod_relist = Some(PodRelist { started: Some(now), ..Default::default() });
            }
            watcher::Event::InitApply(p) => {
                if let Some(r) = &mut self.pod_relist {
                    r.uids.insert(p.uid().unwrap_or_default());
                    r.keys.insert(pod_key(&p));
                }
                self.apply_pod(p);
            }
            watcher::Event::InitDone => {
                let r = self.pod_relist.take().unwrap_or_default();
                // Pods that went away while the watch was down. An assumed pod whose bind
                // succeeded before the relist started must be in it, else it is gone too.
                let gone: Vec<String> = self
                    .pods
                    .iter()
                    .filter(|(uid, c)| {
                        !r.uids.contains(*uid)
                            && match c.assumed {
                                None => true,
                                Some(None) => false,
                                Some(Some(at)) => r.started.is_some_and(|s| at < s),
                            }
                    })
                    .map(|(uid, _)| uid.clone())
                    .collect();
                for uid in gone {
                    self.forget_pod(&uid);
                }
                let gone: Vec<String> = self
                    .pending
                    .iter()
                    .filter(|(k, e)| !r.keys.contains(*k) && e.state != QState::InFlight)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in gone {
                    self.remove_pending(&k);
                }
                self.pods_synced = true;
            }
            watcher::Event::Apply(p) => self.apply_pod(p),
            watcher::Event::Delete(p) => self.delete_pod(&p),
        }
    }

    fn apply_pod(&mut self, pod: Pod) {
        if is_terminal(&pod) {
            return self.delete_pod(&pod);
        }
        let uid = pod.uid().unwrap_or_default();
        let key = pod_key(&pod);
        let node = node_name(&pod);
        if !node.is_empty() {
            if self.pending.get(&key).is_some_and(|e| e.uid == uid) {
                self.remove_pending(&key);
            }
            let info = PodInfo::from_pod(&pod);
            match self.pods.get_mut(&uid) {
                Some(c) if c.node == node && c.info == info => c.assumed = None,
                _ => {
                    self.forget_pod(&uid);
                    let entry = self.nodes.entry(node.to_owned()).or_default();
                    entry.used.add(&info);
                    self.pods.insert(uid, Cached { node: node.to_owned(), info, assumed: None });
                }
            }
            return;
        }
        let scheduler = pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref());
        if scheduler.unwrap_or(DEFAULT_SCHEDULER_NAME) != self.name {
            return;
        }
        if pod.metadata.deletion_timestamp.is_some() {
            if self.pending.get(&key).is_some_and(|e| e.uid == uid) {
                self.remove_pending(&key);
            }
            return;
        }
        match self.pending.get_mut(&key) {
            Some(e) if e.uid == uid => {
                let changed =
                    e.pod.spec != pod.spec || e.pod.metadata.labels != pod.metadata.labels;
                e.pod = pod;
                let retry = matches!(e.state, QState::Gated | QState::Waiting { .. });
                if changed && retry {
                    self.set_state(&key, QState::Active);
                }
            }
            _ => {
                self.remove_pending(&key);
                self.seq += 1;
                let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
                tracing::debug!(pod = %key, "pod queued");
                self.pending.insert(
                    key.clone(),
                    Pending {
                        pod,
                        uid,
                        queued_at: now_micros(),
                        seq: self.seq,
                        priority,
                        attempts: 0,
                        state: QState::Gated,
                    },
                );
                self.set_state(&key, QState::Active);
            }
        }
    }

    fn delete_pod(&mut self, pod: &Pod) {
        let uid = pod.uid().unwrap_or_default();
        if self.forget_pod(&uid) {
            self.activate_unschedulable();
        }
        let key = pod_key(pod);
        if self.pending.get(&key).is_some_and(|e| e.uid == uid) {
            self.remove_pending(&key);
        }
    }

    /// Drops a pod from its node's usage; true when it was there.
    fn forget_pod(&mut self, uid: &str) -> bool {
        let Some(c) = self.pods.remove(uid) else { return false };
        if let Some(e) = self.nodes.get_mut(&c.node) {
            e.used.remove(&c.info);
            if e.info.is_none() && e.used.pods == 0 {
                self.nodes.remove(&c.node);
            }
        }
        true
    }

    fn remove_pending(&mut self, key: &str) {
        if let Some(e) = self.pending.remove(key) {
            self.unlink(key, &e);
        }
    }

    fn unlink(&mut self, key: &str, e: &Pending) {
        match e.state {
            QState::Active => {
                self.active.remove(&(Reverse(e.priority), e.seq, key.to_owned()));
            }
            QState::Waiting { until, .. } => {
                self.waiting.remove(&(until, e.seq, key.to_owned()));
            }
            QState::Gated | QState::InFlight => {}
        }
    }

    fn set_state(&mut self, key: &str, state: QState) {
        let Some(e) = self.pending.remove(key) else { return };
        self.unlink(key, &e);
        match state {
            QState::Active => {
                self.active.insert((Reverse(e.priority), e.seq, key.to_owned()));
            }
            QState::Waiting { until, .. } => {
                self.waiting.insert((until, e.seq, key.to_owned()));
            }
            QState::Gated | QState::InFlight => {}
        }
        self.pending.insert(key.to_owned(), Pending { state, ..e });
    }

    /// Something freed capacity or changed a node: retry every unschedulable pod now.
    fn activate_unschedulable(&mut self) {
        let keys: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, e)| matches!(e.state, QState::Waiting { unschedulable: true, .. }))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.set_state(&k, QState::Active);
        }
    }

    fn on_timer(&mut self, now: Instant) {
        while let Some((until, _, key)) = self.waiting.first().cloned() {
            if until > now {
                break;
            }
            self.set_state(&key, QState::Active);
        }
    }

    fn on_bind_outcome(&mut self, o: BindOutcome, now: Instant) {
        let in_flight =
            self.pending.get(&o.key).is_some_and(|e| e.uid == o.uid && e.state == QState::InFlight);
        if o.result == BindResult::Bound {
            if let Some(c) = self.pods.get_mut(&o.uid)
                && c.assumed.is_some()
            {
                c.assumed = Some(Some(now));
            }
            if in_flight {
                self.remove_pending(&o.key);
            }
            return;
        }
        if self.pods.get(&o.uid).is_some_and(|c| c.assumed.is_some() && c.node == o.node) {
            self.forget_pod(&o.uid);
            self.activate_unschedulable();
        }
        if in_flight {
            // A pod that is gone or bound elsewhere leaves through the watch; until then (and
            // for any other failure) it waits like a failed attempt.
            let Some(e) = self.pending.get_mut(&o.key) else { return };
            e.attempts += 1;
            let until = now + backoff(e.attempts, MAX_ERROR_BACKOFF);
            self.set_state(&o.key, QState::Waiting { until, unschedulable: false });
        }
    }

    /// Tries every active pod, in priority then arrival order.
    fn schedule_pending(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if !(self.nodes_synced && self.pods_synced && self.volumes.synced()) {
            return actions;
        }
        while let Some((_, _, key)) = self.active.pop_first() {
            self.schedule_one(key, now, &mut actions);
        }
        actions
    }

    fn schedule_one(&mut self, key: String, now: Instant, actions: &mut Vec<Action>) {
        let Some(e) = self.pending.get_mut(&key) else { return };
        // `active` no longer holds the key; mark it so before any early return.
        e.state = QState::Gated;
        if e.pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduling_gates.as_ref())
            .is_some_and(|g| !g.is_empty())
        {
            return;
        }
        let info = PodInfo::from_pod(&e.pod);
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut num_nodes = 0;
        let mut best: Option<(i64, &str)> = None;
        // VolumeBinding's PreFilter: a failure holds for every node (upstream's PreFilterMsg).
        let (pod_volumes, prefilter_msg) = match self.volumes.prefilter(&e.pod) {
            Ok(v) => (v, None),
            Err(msg) => (volumes::PodVolumes::default(), Some(msg)),
        };
        for (name, n) in &self.nodes {
            let Some(node) = &n.info else { continue };
            num_nodes += 1;
            if prefilter_msg.is_some() {
                continue;
            }
            let mut why = fit::filter(node, &n.used, &info);
            if why.is_empty()
                && let Some(r) = self.volumes.filter(&pod_volumes, node)
            {
                why.push(r.to_owned());
            }
            if why.is_empty() {
                let score = fit::score(node, &n.used, &info);
                if best.is_none_or(|(s, _)| score > s) {
                    best = Some((score, name));
                }
            } else {
                for r in why {
                    *reasons.entry(r).or_default() += 1;
                }
            }
        }
        match best {
            Some((_, node)) => {
                let node = node.to_owned();
                let uid = e.uid.clone();
                let pod = Box::new(e.pod.clone());
                let queued_at = e.queued_at.clone();
                e.state = QState::InFlight;
                tracing::debug!(pod = %key, node = %node, "pod assumed");
                self.forget_pod(&uid);
                self.nodes.entry(node.clone()).or_default().used.add(&info);
                self.pods.insert(uid, Cached { node: node.clone(), info, assumed: Some(None) });
                let claims = pod_volumes.unbound.iter().map(|(c, _)| c.name_any()).collect();
                actions.push(Action::Bind { key, pod, node, queued_at, claims });
            }
            None => {
                let message = match &prefilter_msg {
                    // Upstream's FitError with a PreFilterMsg: "0/1 nodes are available: msg."
                    Some(msg) if num_nodes > 0 => {
                        format!("0/{num_nodes} nodes are available: {msg}.")
                    }
                    _ => fit::fit_error_message(num_nodes, &reasons),
                };
                e.attempts += 1;
                let until = now + backoff(e.attempts, MAX_UNSCHEDULABLE_BACKOFF);
                tracing::info!(pod = %key, attempts = e.attempts, %message, "pod unschedulable");
                let pod = Box::new(e.pod.clone());
                self.set_state(&key, QState::Waiting { until, unschedulable: true });
                actions.push(Action::Unschedulable { pod, message });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use serde_json::json;

    use super::*;

    fn node(name: &str, cpu: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {
                "allocatable": {"cpu": cpu, "memory": "1Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }))
        .unwrap()
    }

    fn pod(name: &str, cpu: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
            "spec": {
                "schedulerName": "default-scheduler",
                "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]
            }
        }))
        .unwrap()
    }

    fn synced(nodes: &[Node]) -> State {
        let mut s = State::new(DEFAULT_SCHEDULER_NAME.to_owned());
        s.on_node_event(watcher::Event::Init);
        for n in nodes {
            s.on_node_event(watcher::Event::InitApply(n.clone()));
        }
        s.on_node_event(watcher::Event::InitDone);
        let now = Instant::now();
        s.on_pod_event(watcher::Event::Init, now);
        s.on_pod_event(watcher::Event::InitDone, now);
        s.volumes.claims.on(watcher::Event::InitDone);
        s.volumes.volumes.on(watcher::Event::InitDone);
        s.volumes.classes.on(watcher::Event::InitDone);
        s
    }

    fn summary(actions: &[Action]) -> String {
        actions
            .iter()
            .map(|a| match a {
                Action::Bind { key, node, .. } => format!("bind {key} -> {node}\n"),
                Action::Unschedulable { pod, message } => {
                    format!("unschedulable {}: {message}\n", pod_key(pod))
                }
            })
            .collect()
    }

    #[test]
    fn assumed_pods_count_before_the_watch_confirms_them() {
        let mut s = synced(&[node("a", "1"), node("b", "1")]);
        let now = Instant::now();
        for i in 0..5 {
            s.on_pod_event(watcher::Event::Apply(pod(&format!("p{i}"), "400m")), now);
        }
        expect![[r#"
            bind ns/p0 -> a
            bind ns/p1 -> b
            bind ns/p2 -> a
            bind ns/p3 -> b
            unschedulable ns/p4: 0/2 nodes are available: 2 Insufficient cpu.
        "#]]
        .assert_eq(&summary(&s.schedule_pending(now)));

        // A failed bind releases its node and retries the unschedulable pod at once.
        s.on_bind_outcome(
            BindOutcome {
                key: "ns/p0".into(),
                uid: "uid-p0".into(),
                node: "a".into(),
                result: BindResult::Failed,
            },
            now,
        );
        expect![[r#"
            bind ns/p4 -> a
        "#]]
        .assert_eq(&summary(&s.schedule_pending(now)));
        // p0 waits for its back-off.
        assert_eq!(s.next_deadline(), Some(now + INITIAL_BACKOFF));
        s.on_timer(now + INITIAL_BACKOFF);
        expect![[r#"
            unschedulable ns/p0: 0/2 nodes are available: 2 Insufficient cpu.
        "#]]
        .assert_eq(&summary(&s.schedule_pending(now + INITIAL_BACKOFF)));
    }

    #[test]
    fn nothing_is_scheduled_before_both_lists_are_complete() {
        let mut s = State::new(DEFAULT_SCHEDULER_NAME.to_owned());
        let now = Instant::now();
        s.on_node_event(watcher::Event::Apply(node("a", "1")));
        s.on_pod_event(watcher::Event::Apply(pod("p", "1")), now);
        assert!(s.schedule_pending(now).is_empty());
        s.nodes_synced = true;
        s.pods_synced = true;
        // The claims, volumes and classes the VolumeBinding checks read must be listed too.
        assert!(s.schedule_pending(now).is_empty());
        s.volumes.claims.on(watcher::Event::InitDone);
        s.volumes.volumes.on(watcher::Event::InitDone);
        s.volumes.classes.on(watcher::Event::InitDone);
        assert_eq!(summary(&s.schedule_pending(now)), "bind ns/p -> a\n");
    }

    #[test]
    fn timestamps_have_microseconds() {
        let t = now_micros();
        let frac = t.split('.').nth(1).unwrap();
        assert_eq!(frac.len(), 7, "{t}");
        assert!(t.ends_with('Z'));
    }
}
