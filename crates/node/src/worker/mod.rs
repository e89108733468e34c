//! One task per pod: kubelet's `syncPod` loop. It owns the pod's [`PodRecord`], brings the
//! containers to what the spec asks (init containers in order, restarts with back-off, in-place
//! image updates, probes, graceful termination), and writes the pod's status when it changes.
//!
//! The loop is level-triggered: every wake-up (a new version of the pod from the watch, a
//! container exit, a probe result, a back-off timer) runs the same `sync`, which compares the
//! spec with the record and acts on the difference.

mod adopt;
mod probes;
mod publish;
mod ready;
mod restart;
mod start;
mod stop;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container as CSpec, LifecycleHandler, Pod, PodSpec};
use kinetic_api::timeline::{self, ContainerTimeline};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::events::Subject;
use crate::probe::{self, Handler, Target};
use crate::runtime::{Exit, alive};
use crate::state::{CState, Container, PodRecord, Terminated};
use crate::volumes::Prepared;
use crate::{Ctx, status};

/// What the dispatcher tells a worker.
#[derive(Debug)]
pub enum Msg {
    /// A new version of the pod.
    Update(Arc<Pod>),
    /// The pod object is gone from the API (deleted with no grace, or never ours).
    Gone,
    /// Stop a container so its restart policy starts it again (`crate::recreate`).
    Recreate(Recreate),
}

/// A ContainerRecreateRequest's stop of one container: preStop hook, SIGTERM, SIGKILL after
/// `grace`. `done` is answered when the worker takes it (`Err` when the container does not
/// run); a pod being deleted drops it unanswered.
#[derive(Debug)]
pub struct Recreate {
    pub container: String,
    pub grace: Duration,
    /// The `Killing` Event's message.
    pub message: String,
    pub done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

#[derive(Debug)]
enum Internal {
    Exited { name: String, attempt: u32 },
    Probe { name: String, attempt: u32, kind: ProbeKind, ok: bool, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeKind {
    Startup,
    Readiness,
    Liveness,
}

/// A running container attempt.
struct Running {
    attempt: u32,
    id: String,
    dir: PathBuf,
    exit: watch::Receiver<Option<Exit>>,
    probes: Option<JoinHandle<()>>,
    /// Why the agent is stopping it (set before the kill, so the exit is explained).
    stopping: Option<&'static str>,
}

/// Why a container could not be started.
struct StartFailure {
    reason: &'static str,
    message: String,
}

struct Worker {
    ctx: Arc<Ctx>,
    pod: Arc<Pod>,
    rec: PodRecord,
    dir: PathBuf,
    subject: Subject,
    gone: bool,
    itx: mpsc::UnboundedSender<Internal>,
    /// The dispatcher's messages. Read in the main loop, and also while containers are being
    /// stopped, so a delete with a shorter grace period cuts the wait (kubelet re-reads it).
    rx: mpsc::UnboundedReceiver<Msg>,
    running: HashMap<String, Running>,
    volumes: Option<BTreeMap<String, Prepared>>,
    /// Refreshes the service account tokens of the pod's projected volumes while it lives.
    tokens: Option<crate::token::Refresher>,
    /// The last FailedMount reason reported, so a retry repeats no Event.
    mount_problem: Option<String>,
    /// Image pull back-off per image: (retry not before, current delay).
    pull_backoff: HashMap<String, (Instant, Duration)>,
    last_status: Option<Value>,
    wake_at: Option<Instant>,
    /// Removal of ended containers' runtime state (`runc delete`, rootfs unmount), done off the
    /// restart's critical path and awaited before the sandbox goes.
    cleanups: Vec<JoinHandle<()>>,
    /// The runtime state of a specialised pool pod's placeholder (runc id, bundle), removed only
    /// once the claimant's container has started (see [`Worker::finish`]).
    held_cleanup: Option<(String, PathBuf)>,
    /// Container stops asked for by ContainerRecreateRequests, done at the next sync.
    recreates: Vec<Recreate>,
    /// The in-place restart being recorded for the timeline (`restart`).
    restart: Option<restart::Pending>,
    /// The shim started for an in-place restart's new run while the old one stops (spawned on
    /// a blocking thread: the fork and exec do not hold up the stop).
    early_shim: Option<JoinHandle<crate::Result<crate::shim::Early>>>,
}

/// Runs the worker for `pod` until the pod is gone and cleaned up.
pub async fn run(
    ctx: Arc<Ctx>,
    rx: mpsc::UnboundedReceiver<Msg>,
    pod: Arc<Pod>,
    adopted: Option<PodRecord>,
) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let dir = ctx.pods_dir.join(&uid);
    let (itx, mut irx) = mpsc::unbounded_channel();
    let fresh = adopted.is_none();
    let mut rec = adopted.unwrap_or_else(|| PodRecord::new(&uid, &ns, &name));
    if fresh {
        rec.timeline.observed = Some(Timestamp::now());
    }
    let mut w = Worker {
        subject: Subject { namespace: ns, name, uid },
        ctx,
        pod,
        rec,
        dir,
        gone: false,
        itx,
        rx,
        running: HashMap::new(),
        volumes: None,
        tokens: None,
        mount_problem: None,
        pull_backoff: HashMap::new(),
        last_status: None,
        wake_at: None,
        cleanups: Vec::new(),
        held_cleanup: None,
        recreates: Vec::new(),
        restart: None,
        early_shim: None,
    };
    if let Err(e) = std::fs::create_dir_all(w.dir.join("logs")) {
        tracing::error!(pod = %w.key(), error = %e, "cannot create the pod directory");
        return;
    }
    w.adopt();
    loop {
        w.wake_at = None;
        let synced = w.pod.clone();
        let was_gone = w.gone;
        if w.sync().await {
            break;
        }
        w.save();
        w.publish_logs();
        w.flush_status().await;
        // The answer to our status write is the newest pod: if it carries a change this sync
        // did not see (a spec patched meanwhile, whose watch event will then look like
        // nothing new), sync again at once.
        if acts_on(&synced) != acts_on(&w.pod) || w.gone != was_gone {
            continue;
        }
        let wake = w.wake_at;
        // The pod's own status writes come back through the watch; they change nothing the
        // worker acts on, so they do not cause a sync (kubelet likewise ignores status-only
        // updates). Otherwise a failed pull's ErrImagePull would turn into ImagePullBackOff at
        // once instead of at the next sync.
        loop {
            let relevant = tokio::select! {
                m = w.rx.recv() => w.on_msg(m),
                Some(i) = irx.recv() => { w.on_internal(i).await; true }
                () = sleep_until(wake) => true,
            };
            if relevant {
                break;
            }
        }
        // Coalesce whatever else is queued so one sync serves them all.
        while let Ok(m) = w.rx.try_recv() {
            w.on_msg(Some(m));
        }
        while let Ok(i) = irx.try_recv() {
            w.on_internal(i).await;
        }
    }
    w.ctx.logs.remove(&w.subject.namespace, &w.subject.name, &w.subject.uid);
}

/// What of a pod the worker acts on: its spec, its metadata except the resource version and
/// managed fields, and the conditions its readiness gates name (set by other controllers).
type ActsOn<'a> = (Option<&'a PodSpec>, ObjectMetaView<'a>, Vec<(&'a str, &'a str)>);

fn acts_on(pod: &Pod) -> ActsOn<'_> {
    let m = &pod.metadata;
    let gates: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.readiness_gates.iter().flatten())
        .map(|g| g.condition_type.as_str())
        .collect();
    let conds = pod
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .filter(|c| gates.contains(&c.type_.as_str()))
        .map(|c| (c.type_.as_str(), c.status.as_str()))
        .collect();
    let meta = ObjectMetaView {
        labels: m.labels.as_ref(),
        // The timeline is the agent's own record: its writes (an in-place restart's comes
        // back through the watch) are nothing to act on.
        annotations: m
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| k.as_str() != timeline::ANNOTATION)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        deletion: m.deletion_timestamp.as_ref(),
        grace: m.deletion_grace_period_seconds,
        generation: m.generation,
    };
    (pod.spec.as_ref(), meta, conds)
}

#[derive(PartialEq)]
struct ObjectMetaView<'a> {
    labels: Option<&'a BTreeMap<String, String>>,
    annotations: Vec<(&'a str, &'a str)>,
    deletion: Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    grace: Option<i64>,
    generation: Option<i64>,
}

/// Whether the pod's stored conditions disagree with the status the agent computed for a
/// condition type the agent writes.
fn conditions_drifted(pod: &Pod, st: &Value) -> bool {
    let stored = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    st.get("conditions").and_then(Value::as_array).into_iter().flatten().any(|c| {
        let ty = c.get("type").and_then(Value::as_str).unwrap_or_default();
        let want = c.get("status").and_then(Value::as_str).unwrap_or_default();
        stored.and_then(|cs| cs.iter().find(|s| s.type_ == ty)).is_some_and(|s| s.status != want)
    })
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Whether a workload is updating the pod in place: its `InPlaceUpdateReady` condition is
/// False (kruise-daemon's test before it restarts a container for env from metadata).
fn in_place_updating(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.into_iter().flatten().any(|c| {
        c.type_ == kinetic_api::kruise::INPLACE_UPDATE_READY_CONDITION && c.status == "False"
    })
}

fn ts_now() -> Timestamp {
    Timestamp::now()
}

impl Worker {
    fn key(&self) -> String {
        format!("{}/{}", self.subject.namespace, self.subject.name)
    }

    fn spec_containers(&self) -> Vec<(bool, CSpec)> {
        let Some(spec) = &self.pod.spec else { return Vec::new() };
        spec.init_containers
            .iter()
            .flatten()
            .map(|c| (true, c.clone()))
            .chain(spec.containers.iter().map(|c| (false, c.clone())))
            // A claimed pool pod runs its claimant's container (`crate::specialize`).
            .map(|(init, c)| (init, crate::specialize::effective(&self.pod, c)))
            .collect()
    }

    fn spec_of(&self, name: &str) -> Option<CSpec> {
        self.spec_containers().into_iter().find(|(_, c)| c.name == name).map(|(_, c)| c)
    }

    fn restart_policy(&self) -> &str {
        self.pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always")
    }

    fn wake_in(&mut self, d: Duration) {
        let t = Instant::now() + d;
        self.wake_at = Some(self.wake_at.map_or(t, |w| w.min(t)));
    }

    /// Takes a message; says whether it changes anything a sync acts on.
    fn on_msg(&mut self, m: Option<Msg>) -> bool {
        match m {
            Some(Msg::Update(p)) => {
                let relevant = acts_on(&self.pod) != acts_on(&p);
                self.pod = p;
                relevant
            }
            Some(Msg::Gone) | None => {
                self.gone = true;
                true
            }
            Some(Msg::Recreate(r)) => {
                self.recreates.push(r);
                true
            }
        }
    }

    fn save(&self) {
        if let Err(e) = self.rec.save(&self.dir) {
            tracing::warn!(pod = %self.key(), error = %e, "pod state not saved");
        }
    }

    fn publish_logs(&self) {
        let containers = self
            .rec
            .containers
            .iter()
            .map(|(n, c)| (n.clone(), (c.attempt, c.running_pid().is_some())))
            .collect();
        self.ctx.logs.set(
            &self.subject.namespace,
            &self.subject.name,
            &self.subject.uid,
            self.dir.join("logs"),
            containers,
        );
    }

    async fn on_internal(&mut self, i: Internal) {
        match i {
            Internal::Exited { name, attempt } => {
                if self.running.get(&name).is_some_and(|r| r.attempt == attempt) {
                    self.finish(&name).await;
                }
            }
            Internal::Probe { name, attempt, kind, ok, message } => {
                let current = self.running.get(&name).is_some_and(|r| r.attempt == attempt);
                if !current {
                    return;
                }
                if !ok {
                    let what = match kind {
                        ProbeKind::Startup => "Startup",
                        ProbeKind::Readiness => "Readiness",
                        ProbeKind::Liveness => "Liveness",
                    };
                    self.ctx.events.emit(
                        &self.subject,
                        Some(&name),
                        true,
                        "Unhealthy",
                        format!("{what} probe failed: {message}"),
                    );
                }
                let Some(c) = self.rec.containers.get_mut(&name) else { return };
                match (kind, ok) {
                    (ProbeKind::Startup, true) => c.started = true,
                    (ProbeKind::Readiness, r) => {
                        c.ready = r && c.started;
                        if c.ready {
                            self.mark_ready(&name);
                        }
                    }
                    (ProbeKind::Startup | ProbeKind::Liveness, false) => {
                        let why = if kind == ProbeKind::Startup { "startup" } else { "liveness" };
                        self.ctx.events.emit(
                            &self.subject,
                            Some(&name),
                            false,
                            "Killing",
                            format!("Container {name} failed {why} probe, will be restarted"),
                        );
                        let grace = self.grace_period();
                        self.stop(&name, grace, "liveness").await;
                    }
                    (ProbeKind::Liveness, true) => {}
                }
            }
        }
    }

    fn grace_period(&self) -> Duration {
        let s =
            self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
        Duration::from_secs(u64::try_from(s.max(0)).unwrap_or(0))
    }

    /// One pass of syncPod. Returns true when the worker is finished (pod deleted and cleaned).
    async fn sync(&mut self) -> bool {
        let deleting = self.pod.metadata.deletion_timestamp.is_some();
        if self.gone || deleting {
            let grace = if self.gone {
                Duration::from_secs(2)
            } else {
                let s = self.pod.metadata.deletion_grace_period_seconds.unwrap_or(30);
                Duration::from_secs(u64::try_from(s.max(0)).unwrap_or(0))
            };
            self.terminate(grace).await;
            if let Err(e) = self.teardown().await {
                tracing::warn!(pod = %self.key(), error = %e, "sandbox teardown failed; retrying");
                self.ctx.events.emit(
                    &self.subject,
                    None,
                    true,
                    "FailedKillPod",
                    format!("error killing pod: {}", crate::report(&e)),
                );
                self.wake_in(Duration::from_secs(2));
                return false;
            }
            if !self.gone {
                self.flush_status().await;
                let api: Api<Pod> =
                    Api::namespaced(self.ctx.client.clone(), &self.subject.namespace);
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(self.subject.uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match api.delete(&self.subject.name, &dp).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => {
                        tracing::warn!(pod = %self.key(), error = %e, "final delete failed; retrying");
                        self.wake_in(Duration::from_secs(1));
                        return false;
                    }
                }
            }
            // Also whatever an earlier agent mounted here and never recorded.
            crate::mount::unmount_all_under(&self.dir);
            let _ = std::fs::remove_dir_all(&self.dir);
            return true;
        }
        if status::terminal_phase(&self.pod, &self.rec).is_some() {
            // Like kubelet, a finished pod keeps its record (status, logs) but not its sandbox.
            if self.rec.ip.is_some() && self.running.is_empty() {
                let _ = self.ctx.net.teardown(&self.rec.netns).await;
            }
            return false;
        }
        if self.rec.ip.is_none() && self.claim_ready_sandbox() {
            // A ready sandbox (`ready`): the record names it before anything runs in it.
        } else if self.rec.ip.is_none() {
            let (setup, agent_cpu) = crate::cpu::metered(self.ctx.net.setup(&self.rec.netns)).await;
            match setup {
                Ok((ip, network_cpu)) => {
                    self.rec.ip = Some(ip.to_string());
                    self.rec.start_time.get_or_insert_with(ts_now);
                    self.rec.timeline.sandbox_ready = Some(ts_now());
                    self.rec.timeline.sandbox_cpu = Some(timeline::CpuTime {
                        agent_us: crate::cpu::micros(agent_cpu),
                        network_us: crate::cpu::micros(network_cpu),
                        ..Default::default()
                    });
                    if let Err(e) = self.write_etc() {
                        tracing::warn!(pod = %self.key(), error = %e, "writing /etc files");
                    }
                }
                Err(e) => {
                    self.ctx.events.emit(
                        &self.subject,
                        None,
                        true,
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {}", crate::report(&e)),
                    );
                    self.wake_in(Duration::from_secs(5));
                    return false;
                }
            }
        }
        self.recreate_requested().await;
        let policy = self.restart_policy().to_owned();
        // Init containers, strictly in order.
        for (init, spec) in self.spec_containers() {
            if !init {
                continue;
            }
            let c = self
                .rec
                .containers
                .entry(spec.name.clone())
                .or_insert_with(|| Container::new(true, image_of(&spec)))
                .clone();
            match &c.state {
                CState::Terminated(t) if t.exit_code == 0 => continue,
                CState::Running { .. } => return false,
                CState::Terminated(_) if policy == "Never" => return false,
                CState::Terminated(_) => {
                    if !self.backoff_passed(&spec.name) {
                        return false;
                    }
                    self.start(&spec, true).await;
                    return false;
                }
                CState::Waiting { .. } => {
                    self.start(&spec, false).await;
                    return false;
                }
            }
        }
        // App containers in launch-priority order (`crate::launch`), so in one pass a container
        // that needs a higher-priority one ready finds it started already.
        let order = crate::launch::start_order(&self.pod);
        let mut app: Vec<CSpec> =
            self.spec_containers().into_iter().filter(|(init, _)| !init).map(|(_, c)| c).collect();
        app.sort_by_key(|c| order.iter().position(|n| *n == c.name));
        for spec in app {
            let c = self
                .rec
                .containers
                .entry(spec.name.clone())
                .or_insert_with(|| Container::new(false, image_of(&spec)))
                .clone();
            match &c.state {
                CState::Running { .. } => {
                    // Env read from labels/annotations that changed since the start
                    // (OpenKruise's `InPlaceUpdateEnvFromMetadata`): kubelet resolves it only
                    // at creation, so the container is recreated like for a new image. As
                    // kruise-daemon, only during an in-place update (`InPlaceUpdateReady`
                    // False): relabelling a pod by hand restarts nothing.
                    let env_changed = in_place_updating(&self.pod)
                        && c.meta_env
                            .as_ref()
                            .is_some_and(|e| *e != crate::env::from_metadata(&self.pod, &spec));
                    // A claimed pool pod's placeholder is replaced by its claimant's container,
                    // at once (it serves nothing, so it gets no grace).
                    let specialize = crate::specialize::pending(&self.pod, &self.rec, &spec.name);
                    if c.image != image_of(&spec) || env_changed || specialize {
                        // In-place update: only this container restarts, in the same sandbox.
                        self.ctx.events.emit(
                            &self.subject,
                            Some(&spec.name),
                            false,
                            "Killing",
                            format!(
                                "Container {} definition changed, will be restarted",
                                spec.name
                            ),
                        );
                        let grace = if specialize {
                            crate::specialize::observe(&self.pod, &mut self.rec);
                            Duration::ZERO
                        } else {
                            self.grace_period()
                        };
                        let began = Instant::now();
                        self.restart_begin(&spec.name, ts_now());
                        // The new run's shim starts now: its exec overlaps the old run's exit.
                        let next = container_id(&self.rec.uid, &spec.name, c.attempt + 1);
                        let exe = self.ctx.cfg.shim.clone();
                        self.early_shim = Some(tokio::task::spawn_blocking(move || {
                            crate::shim::Early::spawn(&exe, &next)
                        }));
                        let why = if specialize { SPECIALIZE } else { "spec" };
                        self.stop(&spec.name, grace, why).await;
                        let stopped = began.elapsed();
                        self.start(&spec, true).await;
                        self.release_held_cleanup();
                        tracing::info!(
                            pod = %self.key(),
                            container = %spec.name,
                            stop_ms = stopped.as_millis() as u64,
                            start_ms = (began.elapsed() - stopped).as_millis() as u64,
                            env_changed,
                            "container restarted for its new image or env"
                        );
                    }
                }
                CState::Terminated(t) => {
                    let restart = match policy.as_str() {
                        "Never" => false,
                        "OnFailure" => t.exit_code != 0,
                        _ => true,
                    };
                    // A changed image restarts even a container that finished (kubelet
                    // compares the spec hash whatever the state).
                    let changed = (c.image != image_of(&spec)
                        || crate::specialize::pending(&self.pod, &self.rec, &spec.name))
                        && policy != "Never";
                    if changed || (restart && self.backoff_passed(&spec.name)) {
                        self.start(&spec, true).await;
                    }
                }
                CState::Waiting { .. } => {
                    if c.attempt == 0 {
                        // Launch priority: the first start waits for every higher-priority
                        // container to be ready (a readiness probe result wakes the worker).
                        let waits = crate::launch::waits_for(&self.pod, &spec.name);
                        let ready =
                            |n: &String| self.rec.containers.get(n).is_some_and(|c| c.ready);
                        if let Some(n) = waits.iter().find(|n| !ready(n)) {
                            tracing::debug!(pod = %self.key(), container = %spec.name, waits_for = %n, "launch priority");
                            continue;
                        }
                        self.start(&spec, false).await;
                    } else if self.backoff_passed(&spec.name) {
                        self.start(&spec, true).await;
                    }
                }
            }
        }
        self.specialize_code().await;
        false
    }

    /// A claim by code (`crate::specialize_code`): once per claim, with the record persisted
    /// before the work so a restarted agent does not do it twice.
    async fn specialize_code(&mut self) {
        use crate::specialize_code::{self as code, Due};
        match code::due(&self.pod, &self.rec) {
            Due::Nothing => {}
            Due::Fail(why) => code::fail(&mut self.rec, why),
            // A pod made claimed from a code pool's template (its pool had no ready pod,
            // `kinetic_api::pool::CREATED_CLAIMED_ANNOTATION`) asks for its code from the
            // start: the runtime is called once it is ready (its readiness probe's result
            // wakes the worker), as a pool pod's is before it can be claimed.
            Due::Start(_) if !self.app_containers_ready() => {}
            Due::Start(req) => {
                code::observe(&self.pod, &mut self.rec, &req.image);
                self.save();
                let began = Instant::now();
                let opts = self.pull_options().await;
                let ip = self.rec.ip.clone();
                let volumes = self.dir.join("volumes");
                code::run(&self.ctx.images, &opts, &volumes, ip.as_deref(), &req, &mut self.rec)
                    .await;
                let failed =
                    self.rec.timeline.specialization.as_ref().and_then(|s| s.failed.clone());
                tracing::info!(
                    pod = %self.key(),
                    image = %req.image,
                    took_ms = began.elapsed().as_millis() as u64,
                    failed = failed.as_deref().unwrap_or(""),
                    "specialised by code"
                );
            }
        }
    }

    /// Whether every app container of the pod is ready (the code pool's runtime).
    fn app_containers_ready(&self) -> bool {
        let spec = self.pod.spec.as_ref();
        spec.is_some_and(|s| {
            s.containers.iter().all(|c| self.rec.containers.get(&c.name).is_some_and(|r| r.ready))
        })
    }

    /// Stops the containers ContainerRecreateRequests asked for; the app containers' pass of
    /// the same sync starts them again (as kubelet does after kruise-daemon's CRI kill), with
    /// no crash back-off since the agent stopped them.
    async fn recreate_requested(&mut self) {
        for r in std::mem::take(&mut self.recreates) {
            if !self.running.contains_key(&r.container) {
                let _ = r.done.send(Err(format!("container {} is not running", r.container)));
                continue;
            }
            let _ = r.done.send(Ok(()));
            self.ctx.events.emit(&self.subject, Some(&r.container), false, "Killing", r.message);
            self.stop(&r.container, r.grace, "recreate").await;
        }
    }

    /// True when the container may restart now; otherwise it is marked CrashLoopBackOff and a
    /// wake-up is set for the end of the back-off.
    fn backoff_passed(&mut self, name: &str) -> bool {
        let now = ts_now();
        let Some(c) = self.rec.containers.get_mut(name) else { return true };
        match c.backoff_until {
            Some(until) if until > now => {
                let left = until.duration_since(now);
                let left = Duration::try_from(left).unwrap_or_default();
                if !matches!(c.state, CState::Running { .. }) {
                    let msg = format!(
                        "back-off {}s restarting failed container={name} pod={}_{}({})",
                        c.backoff_secs, self.subject.name, self.subject.namespace, self.subject.uid
                    );
                    if let CState::Terminated(t) = &c.state {
                        c.last = Some(t.clone());
                    }
                    if !matches!(&c.state, CState::Waiting { reason, .. } if reason == "CrashLoopBackOff")
                    {
                        self.ctx.events.emit(
                            &self.subject,
                            Some(name),
                            true,
                            "BackOff",
                            "Back-off restarting failed container".into(),
                        );
                    }
                    c.state = CState::Waiting { reason: "CrashLoopBackOff".into(), message: msg };
                }
                self.wake_in(left);
                false
            }
            _ => true,
        }
    }

    fn write_etc(&self) -> std::io::Result<()> {
        let etc = self.dir.join("etc");
        std::fs::create_dir_all(&etc)?;
        let ip = self.rec.ip.clone().unwrap_or_default();
        let hostname = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.hostname.clone())
            .unwrap_or_else(|| self.subject.name.clone());
        std::fs::write(etc.join("hostname"), format!("{hostname}\n"))?;
        std::fs::write(
            etc.join("hosts"),
            format!(
                "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{hostname}\n"
            ),
        )?;
        std::fs::write(
            etc.join("resolv.conf"),
            format!(
                "search {}.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
                self.subject.namespace
            ),
        )?;
        Ok(())
    }
}

fn image_of(c: &CSpec) -> &str {
    c.image.as_deref().unwrap_or_default()
}

/// The runc id of one run of a container.
fn container_id(uid: &str, name: &str, attempt: u32) -> String {
    format!("{uid}-{name}-{attempt}")
}

fn fmt_dur(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

/// Why a specialised pool pod's placeholder is stopped (`Running::stopping`).
const SPECIALIZE: &str = "specialize";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pod(annotations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "annotations": annotations}}))
            .unwrap()
    }

    #[test]
    fn the_agents_own_timeline_write_is_nothing_to_act_on() {
        let before = pod(json!({"note": "a"}));
        let timeline = pod(json!({"note": "a", (timeline::ANNOTATION): "{\"restart\":{}}"}));
        assert!(acts_on(&before) == acts_on(&timeline), "a timeline write causes no sync");
        let other = pod(json!({"note": "b", (timeline::ANNOTATION): "{}"}));
        assert!(acts_on(&timeline) != acts_on(&other), "another annotation still does");
    }
}
