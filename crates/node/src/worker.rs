//! One task per pod: kubelet's `syncPod` loop. It owns the pod's [`PodRecord`], brings the
//! containers to what the spec asks (init containers in order, restarts with back-off, in-place
//! image updates, probes, graceful termination), and writes the pod's status when it changes.
//!
//! The loop is level-triggered: every wake-up (a new version of the pod from the watch, a
//! container exit, a probe result, a back-off timer) runs the same `sync`, which compares the
//! spec with the record and acts on the difference.

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
use crate::runc::{Exit, alive};
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
        annotations: m.annotations.as_ref(),
        deletion: m.deletion_timestamp.as_ref(),
        grace: m.deletion_grace_period_seconds,
        generation: m.generation,
    };
    (pod.spec.as_ref(), meta, conds)
}

#[derive(PartialEq)]
struct ObjectMetaView<'a> {
    labels: Option<&'a BTreeMap<String, String>>,
    annotations: Option<&'a BTreeMap<String, String>>,
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

    /// Re-attaches to containers recorded by an earlier agent.
    fn adopt(&mut self) {
        let names: Vec<String> = self.rec.containers.keys().cloned().collect();
        for name in names {
            let Some(c) = self.rec.containers.get(&name).cloned() else { continue };
            let Some(pid) = c.running_pid() else { continue };
            let id = container_id(&self.rec.uid, &name, c.attempt);
            let cdir = self.dir.join("containers").join(&name).join(c.attempt.to_string());
            // A container that ended while no agent ran is adopted too when its shim recorded
            // the exit: the exit is then seen at once, with its code.
            if alive(pid) || crate::shim::known(&cdir, &id) {
                tracing::info!(pod = %self.key(), container = %name, pid, "adopted running container");
                let exit = self.watch_exit(&name, c.attempt, &cdir, &id, pid);
                let probes =
                    self.spec_of(&name).and_then(|spec| self.start_probes(&spec, c.attempt, &id));
                self.running.insert(
                    name.clone(),
                    Running { attempt: c.attempt, id, dir: cdir, exit, probes, stopping: None },
                );
            } else if let Some(rc) = self.rec.containers.get_mut(&name) {
                // It ended while no agent watched: its exit code is lost.
                rc.state = CState::Terminated(Terminated {
                    exit_code: 137,
                    reason: "ContainerStatusUnknown".into(),
                    message: "The container could not be located when the node agent restarted"
                        .into(),
                    started_at: None,
                    finished_at: ts_now(),
                    container_id: format!("runc://{id}"),
                });
                rc.ready = false;
            }
        }
        if !self.running.is_empty() {
            // The tokens in the adopted containers' volumes were issued by the previous agent;
            // a fresh one now, then every 80 % of its lifetime.
            self.tokens = crate::token::spawn_refresher(
                crate::token::ApiIssuer(self.ctx.client.clone()),
                self.pod.clone(),
                crate::volumes::token_files(&self.pod, &self.dir.join("volumes"), None),
            );
        }
    }

    fn watch_exit(
        &self,
        name: &str,
        attempt: u32,
        dir: &std::path::Path,
        id: &str,
        pid: i32,
    ) -> watch::Receiver<Option<Exit>> {
        let (tx, rx) = watch::channel(None);
        let itx = self.itx.clone();
        let name = name.to_owned();
        let (dir, id) = (dir.to_path_buf(), id.to_owned());
        tokio::spawn(async move {
            let e = crate::shim::wait_exit(&dir, &id, pid).await;
            let _ = tx.send(Some(e));
            let _ = itx.send(Internal::Exited { name, attempt });
        });
        rx
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
            // A ready sandbox (`sandboxes`): the record names it before anything runs in it.
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

    /// Starts (or restarts) container `spec`. Failures become the container's waiting state.
    async fn start(&mut self, spec: &CSpec, restart: bool) {
        let name = spec.name.clone();
        let (result, agent_cpu) = crate::cpu::metered(self.try_start(spec, restart)).await;
        if result.is_ok() {
            crate::specialize::started(&self.pod, &mut self.rec, &name);
        }
        if result.is_ok()
            && !self.rec.timeline_written
            && let Some(tl) = self.rec.timeline.containers.iter_mut().find(|t| t.name == name)
        {
            tl.cpu.get_or_insert_with(Default::default).agent_us = crate::cpu::micros(agent_cpu);
        }
        if let Err(f) = result {
            if let Some(c) = self.rec.containers.get_mut(&name) {
                if let CState::Terminated(t) = &c.state {
                    c.last = Some(t.clone());
                }
                c.state = CState::Waiting { reason: f.reason.into(), message: f.message.clone() };
            }
            if f.reason == "ContainerCreating" {
                // Retried every second (nothing about the pod changes when its claim is
                // bound); the Event only when the reason changes, not on every retry.
                self.wake_in(Duration::from_secs(1));
                let already = self.mount_problem.as_deref() == Some(f.message.as_str());
                if !already {
                    self.mount_problem = Some(f.message.clone());
                    self.ctx.events.emit(
                        &self.subject,
                        None,
                        true,
                        "FailedMount",
                        format!("Unable to attach or mount volumes: {}", f.message),
                    );
                }
            } else if f.reason != "ImagePullBackOff" {
                self.ctx.events.emit(
                    &self.subject,
                    Some(&name),
                    true,
                    "Failed",
                    format!("Error: {}", f.message),
                );
            }
        }
    }

    async fn try_start(&mut self, spec: &CSpec, restart: bool) -> Result<(), StartFailure> {
        let name = spec.name.clone();
        let init = self.rec.containers.get(&name).is_some_and(|c| c.init);
        let mut tl = ContainerTimeline { name: name.clone(), init, ..Default::default() };
        // 1. The image.
        let image = self.ensure_image(spec, &mut tl).await?;
        // 2. Configuration: referenced objects, env, volumes.
        let fail = |reason: &'static str| {
            move |e: crate::env::ConfigError| StartFailure { reason, message: e.0 }
        };
        let mut refs =
            crate::refs::Refs::fetch(&self.ctx.client, &self.pod).await.map_err(|e| {
                StartFailure { reason: "CreateContainerConfigError", message: crate::report(&e) }
            })?;
        let pod_ip = self.rec.ip.clone().unwrap_or_default();
        let host_ip = self.ctx.cfg.node_ip.to_string();
        let services = crate::svcenv::fetch(&self.ctx.client, &self.pod, self.ctx.api_relay)
            .await
            .map_err(|e| StartFailure {
                reason: "CreateContainerConfigError",
                message: crate::report(&e),
            })?;
        let env = crate::env::build(&self.pod, spec, &pod_ip, &host_ip, &refs, &services)
            .map_err(fail("CreateContainerConfigError"))?;
        if self.volumes.is_none() {
            // Kubelet's volume manager waits for claims to be bound before anything starts;
            // the container stays in ContainerCreating with a FailedMount Event meanwhile.
            refs.fetch_tokens(&self.ctx.client, &self.pod).await;
            if let Some(message) = refs.mount_problem() {
                return Err(StartFailure { reason: "ContainerCreating", message });
            }
            let vdir = self.dir.join("volumes");
            let v = crate::volumes::prepare(&self.pod, &vdir, &refs, &pod_ip, &host_ip)
                .map_err(fail("CreateContainerConfigError"))?;
            self.volumes = Some(v);
            self.tokens = crate::token::spawn_refresher(
                crate::token::ApiIssuer(self.ctx.client.clone()),
                self.pod.clone(),
                crate::volumes::token_files(&self.pod, &vdir, Some(&refs)),
            );
        }
        // 3. The bundle: an overlayfs rootfs over the image layers and config.json.
        let prev = self.rec.containers.get(&name).map_or(0, |c| c.attempt);
        let attempt = prev + 1;
        let id = container_id(&self.rec.uid, &name, attempt);
        let cdir = self.dir.join("containers").join(&name).join(attempt.to_string());
        let created_at = Instant::now();
        tl.created = Some(ts_now());
        let rootfs = cdir.join("rootfs");
        let run_err = |m: String| StartFailure { reason: "RunContainerError", message: m };
        if cdir.exists() || self.ctx.runc.root().join(&id).exists() {
            // A start of this attempt that was never recorded (the agent crashed mid-create):
            // its container, shim and rootfs go before it starts again.
            crate::shim::clear_stale(&self.ctx.runc, &id, &cdir).await;
            crate::mount::remove(&cdir);
        }
        crate::mount::overlay(&image.layers, &cdir).map_err(|e| run_err(crate::report(&e)))?;
        let tlog = cdir.join("termination-log");
        let _ = std::fs::write(&tlog, b"");
        let netns = crate::cni::Network::netns_path(&self.rec.netns);
        let empty = BTreeMap::new();
        let inputs = crate::oci::Inputs {
            pod: &self.pod,
            container: spec,
            image: &image.config,
            rootfs: &rootfs,
            env,
            netns: &netns,
            cgroup: format!("/kinetic/{id}"),
            volumes: self.volumes.as_ref().unwrap_or(&empty),
            etc_dir: &self.dir.join("etc"),
            termination_log: &tlog,
        };
        let config = match crate::oci::config(&inputs) {
            Ok(c) => c,
            Err(e) => {
                crate::mount::remove(&cdir);
                return Err(StartFailure { reason: "CreateContainerConfigError", message: e.0 });
            }
        };
        let cfg_path = cdir.join("config.json");
        if let Err(e) = std::fs::write(&cfg_path, serde_json::to_vec(&config).unwrap_or_default()) {
            crate::mount::remove(&cdir);
            return Err(run_err(format!("writing {}: {e}", cfg_path.display())));
        }
        let log = self.dir.join("logs").join(&name);
        let _ = std::fs::create_dir_all(&log);
        let log = log.join(format!("{attempt}.log"));
        let created_ms = created_at.elapsed();
        self.ctx.events.emit(
            &self.subject,
            Some(&name),
            false,
            "Created",
            format!("Created container {name} in {}", fmt_dur(created_ms)),
        );
        let shim = crate::shim::Spec {
            runc: self.ctx.runc.bin().to_path_buf(),
            root: self.ctx.runc.root().to_path_buf(),
            id: id.clone(),
            bundle: cdir.clone(),
            log,
            stdin: spec.stdin == Some(true),
            stdin_once: spec.stdin_once == Some(true),
            tty: spec.tty == Some(true),
        };
        let pid = match crate::shim::start(&self.ctx.cfg.shim, &shim).await {
            Ok((pid, cpu)) => {
                tl.cpu = Some(cpu);
                pid
            }
            Err(e) => {
                let _ = self.ctx.runc.delete(&id).await;
                crate::mount::remove(&cdir);
                if let Some(c) = self.rec.containers.get_mut(&name) {
                    c.attempt = attempt;
                }
                return Err(run_err(crate::report(&e)));
            }
        };
        let started_at = ts_now();
        tl.started = Some(started_at);
        self.ctx.events.emit(
            &self.subject,
            Some(&name),
            false,
            "Started",
            format!("Started container {name} in {}", fmt_dur(created_at.elapsed())),
        );
        // 4. Record it, watch its exit, start its probes.
        let exit = self.watch_exit(&name, attempt, &cdir, &id, pid);
        let probes = self.start_probes(spec, attempt, &id);
        let has_startup = spec.startup_probe.is_some();
        let has_readiness = spec.readiness_probe.is_some();
        if let Some(c) = self.rec.containers.get_mut(&name) {
            if let CState::Terminated(t) = &c.state {
                c.last = Some(t.clone());
            }
            if restart && prev > 0 {
                c.restart_count += 1;
                // Kubelet's back-off: the first restart is immediate, later ones wait 10 s,
                // doubling up to 5 min.
                let base = self.ctx.cfg.crash_backoff.as_secs().max(1);
                c.backoff_secs =
                    if c.backoff_secs == 0 { base } else { (c.backoff_secs * 2).min(base * 30) };
            }
            c.attempt = attempt;
            c.image = image_of(spec).to_owned();
            c.meta_env = Some(crate::env::from_metadata(&self.pod, spec));
            c.image_id = image.image_id.clone();
            c.state = CState::Running { started_at, pid };
            c.started = !has_startup;
            c.ready = !has_startup && !has_readiness;
            c.backoff_until = None;
        }
        if !self.rec.timeline_written {
            self.rec.timeline.containers.retain(|c| c.name != name);
            self.rec.timeline.containers.push(tl);
        }
        self.running
            .insert(name.clone(), Running { attempt, id, dir: cdir, exit, probes, stopping: None });
        if self.rec.containers.get(&name).is_some_and(|c| c.ready) {
            self.mark_ready(&name);
        }
        if let Some(h) = spec.lifecycle.as_ref().and_then(|l| l.post_start.as_ref())
            && let Err(msg) = self.run_hook(spec, h, Duration::from_secs(30)).await
        {
            self.ctx.events.emit(&self.subject, Some(&name), true, "FailedPostStartHook", msg);
            let grace = self.grace_period();
            self.stop(&name, grace, "poststart").await;
        }
        Ok(())
    }

    /// Pulls or finds the container's image according to `imagePullPolicy`.
    async fn ensure_image(
        &mut self,
        spec: &CSpec,
        tl: &mut ContainerTimeline,
    ) -> Result<kinetic_image::Image, StartFailure> {
        let reference = image_of(spec).to_owned();
        let name = spec.name.clone();
        if reference.is_empty() {
            return Err(StartFailure {
                reason: "InvalidImageName",
                message: "image is empty".into(),
            });
        }
        if let Err(e) = kinetic_image::reference::Reference::parse(&reference) {
            return Err(StartFailure {
                reason: "InvalidImageName",
                message: format!(
                    "Failed to apply default image tag {reference:?}: couldn't parse image name {reference:?}: {e}"
                ),
            });
        }
        let latest = !reference.contains('@') && {
            let last = reference.rsplit('/').next().unwrap_or(&reference);
            !last.contains(':') || last.ends_with(":latest")
        };
        let policy = spec
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| if latest { "Always".into() } else { "IfNotPresent".into() });
        if policy != "Always" {
            if let Some(img) = self.ctx.images.local(&reference) {
                tl.cache_hit = true;
                let now = ts_now();
                tl.pull_started = Some(now);
                tl.pull_finished = Some(now);
                self.ctx.events.emit(
                    &self.subject,
                    Some(&name),
                    false,
                    "Pulled",
                    format!("Container image {reference:?} already present on machine"),
                );
                return Ok(img);
            }
            if policy == "Never" {
                return Err(StartFailure {
                    reason: "ErrImageNeverPull",
                    message: format!(
                        "Container image {reference:?} is not present with pull policy of Never"
                    ),
                });
            }
        }
        if let Some((until, _)) = self.pull_backoff.get(&reference)
            && *until > Instant::now()
        {
            let left = *until - Instant::now();
            self.wake_in(left);
            return Err(StartFailure {
                reason: "ImagePullBackOff",
                message: format!("Back-off pulling image {reference:?}"),
            });
        }
        // A pull takes long enough to show ContainerCreating first.
        if let Some(c) = self.rec.containers.get_mut(&name)
            && let CState::Waiting { .. } = c.state
        {
            c.state =
                CState::Waiting { reason: "ContainerCreating".into(), message: String::new() };
        }
        self.flush_status().await;
        self.ctx.events.emit(
            &self.subject,
            Some(&name),
            false,
            "Pulling",
            format!("Pulling image {reference:?}"),
        );
        let began = Instant::now();
        tl.pull_started = Some(ts_now());
        let opts = self.pull_options().await;
        match self.ctx.images.pull(&reference, &opts, &kinetic_image::NoProgress).await {
            Ok(img) => {
                self.pull_backoff.remove(&reference);
                tl.pull_finished = Some(ts_now());
                tl.pull_bytes = img.downloaded_bytes;
                tl.cache_hit = img.cache_hit;
                self.ctx.events.emit(
                    &self.subject,
                    Some(&name),
                    false,
                    "Pulled",
                    {
                        // kubelet's message, plus the download rate (issue 5: bytes and rate in
                        // the pod's Events) when anything was downloaded.
                        let took = began.elapsed();
                        let rate = if img.downloaded_bytes > 0 {
                            format!(
                                " Downloaded at {:.1} MB/s.",
                                img.downloaded_bytes as f64 / 1e6 / took.as_secs_f64().max(1e-6)
                            )
                        } else {
                            String::new()
                        };
                        format!(
                            "Successfully pulled image {reference:?} in {}. Image size: {} bytes.{rate}",
                            fmt_dur(took),
                            img.downloaded_bytes
                        )
                    },
                );
                Ok(img)
            }
            Err(e) => {
                let base = self.ctx.cfg.crash_backoff;
                let delay = self
                    .pull_backoff
                    .get(&reference)
                    .map_or(base, |(_, d)| (*d * 2).min(base * 30));
                self.pull_backoff.insert(reference.clone(), (Instant::now() + delay, delay));
                // Like kubelet: ErrImagePull until the next sync, which (inside the back-off)
                // says ImagePullBackOff; the sync after that pulls again.
                self.wake_in(delay / 2);
                let msg = format!("Failed to pull image {reference:?}: {}", crate::report(&e));
                self.ctx.events.emit(&self.subject, Some(&name), true, "Failed", msg.clone());
                self.ctx.events.emit(
                    &self.subject,
                    Some(&name),
                    false,
                    "BackOff",
                    format!("Back-off pulling image {reference:?}"),
                );
                Err(StartFailure { reason: "ErrImagePull", message: msg })
            }
        }
    }

    /// Credentials from the pod's imagePullSecrets (dockerconfigjson), and the node's insecure
    /// registries.
    async fn pull_options(&self) -> kinetic_image::PullOptions {
        let secrets: Vec<(String, String)> = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|s| (self.subject.namespace.clone(), s.name))
            .collect();
        crate::pull_options(&self.ctx, &secrets).await
    }

    fn start_probes(&self, spec: &CSpec, attempt: u32, id: &str) -> Option<JoinHandle<()>> {
        if spec.startup_probe.is_none()
            && spec.readiness_probe.is_none()
            && spec.liveness_probe.is_none()
        {
            return None;
        }
        let target = Target {
            pod_ip: self.rec.ip.clone().unwrap_or_default(),
            runc: self.ctx.runc.clone(),
            container_id: id.to_owned(),
        };
        Some(tokio::spawn(probe_loop(spec.clone(), target, attempt, self.itx.clone())))
    }

    async fn run_hook(
        &self,
        spec: &CSpec,
        h: &LifecycleHandler,
        timeout: Duration,
    ) -> Result<(), String> {
        let Some(r) = self.running.get(&spec.name) else { return Ok(()) };
        let target = Target {
            pod_ip: self.rec.ip.clone().unwrap_or_default(),
            runc: self.ctx.runc.clone(),
            container_id: r.id.clone(),
        };
        let handler = if let Some(e) = &h.exec {
            Handler::Exec(e.command.as_deref().unwrap_or_default())
        } else if let Some(g) = &h.http_get {
            Handler::Http(g)
        } else if let Some(s) = &h.sleep {
            tokio::time::sleep(
                Duration::from_secs(u64::try_from(s.seconds.max(0)).unwrap_or(0)).min(timeout),
            )
            .await;
            return Ok(());
        } else {
            Handler::Unsupported("tcpSocket lifecycle handlers are deprecated and not supported")
        };
        probe::run(&handler, spec, &target, timeout).await
    }

    fn mark_ready(&mut self, name: &str) {
        if self.rec.timeline_written {
            return;
        }
        if let Some(t) = self.rec.timeline.containers.iter_mut().find(|t| t.name == name) {
            t.ready.get_or_insert_with(ts_now);
        }
    }

    /// Stops a running container: preStop hook, SIGTERM, then SIGKILL at the grace deadline.
    async fn stop(&mut self, name: &str, grace: Duration, why: &'static str) {
        let Some(r) = self.running.get_mut(name) else { return };
        r.stopping = Some(why);
        if let Some(p) = r.probes.take() {
            p.abort();
        }
        let id = r.id.clone();
        let mut exit = r.exit.clone();
        let deadline = Instant::now() + grace;
        if let Some(c) = self.rec.containers.get_mut(name) {
            c.ready = false;
        }
        if grace > Duration::ZERO {
            if let Some(spec) = self.spec_of(name)
                && let Some(h) = spec.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref())
                && let Err(msg) = self.run_hook(&spec, h, grace).await
            {
                self.ctx.events.emit(&self.subject, Some(name), true, "FailedPreStopHook", msg);
            }
            self.signal(name, &id, rustix::process::Signal::TERM, "TERM").await;
            self.wait_exits(vec![exit.clone()], deadline, why == "delete").await;
        }
        if exit.borrow().is_none() {
            self.signal(name, &id, rustix::process::Signal::KILL, "KILL").await;
            let _ =
                tokio::time::timeout(Duration::from_secs(10), exit.wait_for(Option::is_some)).await;
        }
        self.finish(name).await;
    }

    /// Waits until every container in `exits` has exited or `deadline` has passed.
    ///
    /// With `follow_deletion` (the pod is being deleted) it keeps taking the dispatcher's
    /// messages meanwhile: a newer, shorter `deletionGracePeriodSeconds` (a second `kubectl
    /// delete --grace-period=N`, `kubectl drain --grace-period=N`) brings the deadline forward
    /// to now + that grace, and the pod's removal from the API to now + 2 s, as kubelet's
    /// `killPod` does when it is called again with a shorter grace period. The deadline never
    /// moves later.
    async fn wait_exits(
        &mut self,
        exits: Vec<watch::Receiver<Option<Exit>>>,
        mut deadline: Instant,
        mut follow_deletion: bool,
    ) {
        let all = futures::future::join_all(exits.into_iter().map(|mut rx| async move {
            let _ = rx.wait_for(Option::is_some).await;
        }));
        tokio::pin!(all);
        loop {
            tokio::select! {
                _ = &mut all => return,
                () = tokio::time::sleep_until(deadline.into()) => return,
                m = self.rx.recv(), if follow_deletion => {
                    self.on_msg(m);
                    let now = Instant::now();
                    if self.gone {
                        // The channel is closed or the pod left the API: nothing more to read.
                        follow_deletion = false;
                        deadline = deadline.min(now + Duration::from_secs(2));
                    } else if let Some(s) = self.pod.metadata.deletion_grace_period_seconds {
                        let grace = Duration::from_secs(u64::try_from(s.max(0)).unwrap_or(0));
                        if now + grace < deadline {
                            tracing::info!(
                                pod = %self.key(),
                                grace_seconds = s,
                                "shorter grace period; stopping sooner"
                            );
                            deadline = now + grace;
                        }
                    }
                }
            }
        }
    }

    /// Sends `sig` to the container's init process directly (what `runc kill` does, without
    /// starting a runc process: an in-place restart waits for this), falling back to `runc
    /// kill` when the pid is unknown or the signal fails. The pid cannot have been reused: the
    /// container's exit watch reaps it, and a reaped container is no longer `Running`.
    async fn signal(&self, name: &str, id: &str, sig: rustix::process::Signal, runc_sig: &str) {
        let pid = match self.rec.containers.get(name).map(|c| &c.state) {
            Some(CState::Running { pid, .. }) => rustix::process::Pid::from_raw(*pid),
            _ => None,
        };
        let exited = self.running.get(name).is_none_or(|r| r.exit.borrow().is_some());
        if let Some(pid) = pid
            && !exited
            && rustix::process::kill_process(pid, sig).is_ok()
        {
            return;
        }
        let _ = self.ctx.runc.kill(id, runc_sig).await;
    }

    /// Records the end of a container run and removes its runtime state (not its logs).
    async fn finish(&mut self, name: &str) {
        let Some(mut r) = self.running.remove(name) else { return };
        if let Some(p) = r.probes.take() {
            p.abort();
        }
        let exit = *r.exit.borrow();
        let message = std::fs::read_to_string(r.dir.join("termination-log")).unwrap_or_default();
        // Each attempt has its own runc id, cgroup and rootfs directory, so a restarted
        // container does not wait for the old one's removal.
        // A specialised pool pod's placeholder waits for the claimant's start: `runc delete` is
        // a process of its own and would compete with `runc run` for the CPU (issue 12).
        if r.stopping == Some(SPECIALIZE) {
            self.release_held_cleanup();
            self.held_cleanup = Some((r.id.clone(), r.dir.clone()));
        } else {
            self.spawn_cleanup(r.id.clone(), r.dir.clone());
        }
        let now = ts_now();
        let Some(c) = self.rec.containers.get_mut(name) else { return };
        let started_at = match c.state {
            CState::Running { started_at, .. } => Some(started_at),
            _ => None,
        };
        let (exit_code, reason) = match exit {
            Some(Exit::Code(0)) => (0, "Completed"),
            Some(Exit::Code(n)) => (n, "Error"),
            Some(Exit::Unknown) | None => (137, "ContainerStatusUnknown"),
        };
        // A run that lasted long enough resets the crash back-off (kubelet: 2 × the maximum).
        if let Some(s) = started_at {
            let ran = now.duration_since(s).as_secs();
            let reset =
                i64::try_from(self.ctx.cfg.crash_backoff.as_secs() * 60).unwrap_or(i64::MAX);
            if ran >= reset {
                c.backoff_secs = 0;
            }
        }
        if c.backoff_secs > 0 && r.stopping.is_none() {
            let until = now
                .checked_add(jiff::SignedDuration::from_secs(
                    i64::try_from(c.backoff_secs).unwrap_or(300),
                ))
                .ok();
            c.backoff_until = until;
        }
        c.state = CState::Terminated(Terminated {
            exit_code,
            reason: reason.into(),
            message: message.trim_end().to_owned(),
            started_at,
            finished_at: now,
            container_id: format!("runc://{}", r.id),
        });
        c.ready = false;
    }

    fn spawn_cleanup(&mut self, id: String, dir: PathBuf) {
        let runc = self.ctx.runc.clone();
        self.cleanups.retain(|h| !h.is_finished());
        self.cleanups.push(tokio::spawn(async move {
            let _ = runc.delete(&id).await;
            crate::mount::remove(&dir);
        }));
    }

    /// Starts the removal held back by [`Worker::finish`] for a specialised placeholder.
    fn release_held_cleanup(&mut self) {
        if let Some((id, dir)) = self.held_cleanup.take() {
            self.spawn_cleanup(id, dir);
        }
    }

    /// Stops every container, app containers in parallel would be faster; kubelet also stops
    /// them concurrently, each with the pod's grace period.
    async fn terminate(&mut self, grace: Duration) {
        let names: Vec<String> = self.running.keys().cloned().collect();
        if names.is_empty() {
            return;
        }
        if names.len() == 1 {
            self.ctx.events.emit(
                &self.subject,
                Some(&names[0]),
                false,
                "Killing",
                format!("Stopping container {}", names[0]),
            );
            self.stop(&names[0], grace, "delete").await;
            return;
        }
        // Several containers: signal all, then wait for all, within one grace period.
        let deadline = Instant::now() + grace;
        for n in &names {
            self.ctx.events.emit(
                &self.subject,
                Some(n),
                false,
                "Killing",
                format!("Stopping container {n}"),
            );
        }
        let mut pre = Vec::new();
        for n in &names {
            if let (Some(spec), Some(r)) = (self.spec_of(n), self.running.get(n))
                && let Some(h) = spec.lifecycle.as_ref().and_then(|l| l.pre_stop.clone())
            {
                pre.push((spec, h, r.id.clone()));
            }
        }
        let hooks = pre.iter().map(|(spec, h, _)| self.run_hook(spec, h, grace));
        let _ = futures::future::join_all(hooks).await;
        for n in &names {
            if let Some(r) = self.running.get_mut(n) {
                r.stopping = Some("delete");
                let _ = self.ctx.runc.kill(&r.id, "TERM").await;
            }
        }
        let exits = names.iter().filter_map(|n| self.running.get(n)).map(|r| r.exit.clone());
        self.wait_exits(exits.collect(), deadline, true).await;
        for n in names {
            self.stop(&n, Duration::ZERO, "delete").await;
        }
    }

    /// Removes everything the pod had on the node except its record: network, volumes.
    async fn teardown(&mut self) -> crate::Result<()> {
        self.release_held_cleanup();
        for h in self.cleanups.drain(..) {
            let _ = h.await;
        }
        self.ctx.net.teardown(&self.rec.netns).await?;
        self.rec.ip = None;
        let containers = self.dir.join("containers");
        crate::mount::unmount_all_under(&containers);
        let _ = std::fs::remove_dir_all(containers);
        Ok(())
    }

    /// Takes a ready sandbox for the pod when the node keeps them: its namespace becomes the
    /// pod's (saved in the record before the pool lets go of it), then the pod's /etc files.
    fn claim_ready_sandbox(&mut self) -> bool {
        let Some(pool) = self.ctx.ready.clone() else { return false };
        if crate::cni::Network::netns_path(&self.rec.netns).exists() {
            // Its own namespace, half made by an agent killed mid-start: the usual set-up
            // clears it and its address, which a claim would leave behind.
            return false;
        }
        let t0 = kinetic_sys::thread_cpu();
        let Some(sb) = pool.claim() else { return false };
        self.rec.netns = sb.netns.clone();
        self.rec.ip = Some(sb.ip.to_string());
        self.rec.start_time.get_or_insert_with(ts_now);
        self.rec.timeline.sandbox_ready = Some(ts_now());
        self.rec.timeline.ready_sandbox = true;
        if let Err(e) = self.write_etc() {
            tracing::warn!(pod = %self.key(), error = %e, "writing /etc files");
        }
        self.rec.timeline.sandbox_cpu = Some(timeline::CpuTime {
            agent_us: crate::cpu::micros(kinetic_sys::thread_cpu().saturating_sub(t0)),
            ..Default::default()
        });
        self.save();
        pool.claimed(&sb.netns);
        true
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

    /// Writes the pod status (strategic merge patch on `pods/status`) when it changed, and the
    /// timeline annotation once the pod is Ready.
    async fn flush_status(&mut self) {
        let st = status::build(&self.pod, &self.rec, &self.ctx.cfg.node_ip.to_string());
        let ready = status::is_ready(&st);
        if ready && !self.rec.timeline_written {
            self.rec.timeline.ready = Some(ts_now());
        }
        // Another writer (a CloneSet controller marking a pod not ready before an in-place
        // update) may have changed a condition kubelet owns since our last write: write again.
        // A specialisation that ended goes into the same write ([`crate::specialize::report`]).
        let report = crate::specialize::report(&self.pod, &self.rec, ready);
        if self.last_status.as_ref() != Some(&st)
            || conditions_drifted(&self.pod, &st)
            || report.is_some()
        {
            let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.subject.namespace);
            let mut meta = json!({"uid": self.subject.uid});
            if let Some(r) = &report {
                meta["labels"] = r.metadata["labels"].clone();
                meta["annotations"] = r.metadata["annotations"].clone();
            }
            let body = json!({"metadata": meta, "status": st});
            match api
                .patch_status(&self.subject.name, &PatchParams::default(), &Patch::Strategic(body))
                .await
            {
                Ok(p) => {
                    self.last_status = Some(st);
                    self.pod = Arc::new(p);
                    if let Some(r) = report {
                        crate::specialize::reported(
                            &self.ctx.events,
                            &self.subject,
                            &mut self.rec,
                            r,
                        );
                    }
                }
                Err(kube::Error::Api(s)) if s.code == 404 => self.gone = true,
                Err(e) => {
                    tracing::warn!(pod = %self.key(), error = %e, "status update failed; retrying");
                    self.wake_in(Duration::from_millis(500));
                }
            }
        }
        let failed_start = self.rec.containers.values().any(|c| matches!(&c.state, CState::Waiting { reason, .. } if reason != "ContainerCreating" && reason != "PodInitializing"));
        if (ready || failed_start) && !self.rec.timeline_written {
            self.write_timeline().await;
        }
    }

    async fn write_timeline(&mut self) {
        let mut tl = self.rec.timeline.clone();
        let annotations = self.pod.metadata.annotations.clone().unwrap_or_default();
        let parse = |k: &str| annotations.get(k).and_then(|v| v.parse::<Timestamp>().ok());
        tl.created = parse(timeline::QUEUED_AT)
            .or_else(|| self.pod.metadata.creation_timestamp.as_ref().map(|t| t.0));
        tl.scheduled = parse(timeline::SCHEDULED_AT).or_else(|| {
            self.pod
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "PodScheduled")?
                .last_transition_time
                .as_ref()
                .map(|t| t.0)
        });
        let body = json!({"metadata": {"annotations": {timeline::ANNOTATION: serde_json::to_string(&tl).unwrap_or_default()}}});
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.subject.namespace);
        match api.patch(&self.subject.name, &PatchParams::default(), &Patch::Merge(body)).await {
            Ok(p) => {
                self.pod = Arc::new(p);
                self.rec.timeline = tl;
                self.rec.timeline_written = true;
            }
            Err(e) => tracing::debug!(pod = %self.key(), error = %e, "timeline not written"),
        }
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

/// The first retry of a readiness probe that has not succeeded yet (see `probe_loop`).
const FIRST_READINESS_RETRY: Duration = Duration::from_millis(25);
/// Why a specialised pool pod's placeholder is stopped (`Running::stopping`).
const SPECIALIZE: &str = "specialize";

/// Runs a container's probes: the startup probe first, then readiness and liveness on their
/// own periods. Sends a message when a result changes (readiness) or a threshold is crossed.
async fn probe_loop(
    spec: CSpec,
    target: Target,
    attempt: u32,
    tx: mpsc::UnboundedSender<Internal>,
) {
    let name = spec.name.clone();
    let send = |kind, ok, message: String| {
        let _ = tx.send(Internal::Probe { name: name.clone(), attempt, kind, ok, message });
    };
    if let Some(p) = &spec.startup_probe {
        let t = probe::timing(p);
        tokio::time::sleep(t.initial_delay).await;
        let mut failures = 0;
        loop {
            match probe::run(&probe::of_probe(p), &spec, &target, t.timeout).await {
                Ok(()) => {
                    send(ProbeKind::Startup, true, String::new());
                    break;
                }
                Err(m) => {
                    failures += 1;
                    if failures >= t.failure_threshold {
                        send(ProbeKind::Startup, false, m);
                        return;
                    }
                }
            }
            tokio::time::sleep(t.period).await;
        }
    }
    let start = Instant::now();
    let mut r = spec
        .readiness_probe
        .as_ref()
        .map(|p| (p, probe::timing(p), start + probe::timing(p).initial_delay, 0, 0, None::<bool>));
    // Deliberate deviation from kubelet: until the container's first successful readiness
    // probe, probe again after 25 ms, doubling up to periodSeconds, instead of waiting a whole
    // period after a first probe that ran before the process listened (Knative's queue-proxy
    // probes as eagerly, for the same reason: time to Ready is what users wait for). After the
    // first success the probe runs every periodSeconds, as kubelet's.
    let mut eager = FIRST_READINESS_RETRY;
    let mut l = spec
        .liveness_probe
        .as_ref()
        .map(|p| (p, probe::timing(p), start + probe::timing(p).initial_delay, 0));
    if r.is_none() && l.is_none() {
        return;
    }
    loop {
        let next = [r.as_ref().map(|x| x.2), l.as_ref().map(|x| x.2)].into_iter().flatten().min();
        let Some(next) = next else { return };
        tokio::time::sleep_until(next.into()).await;
        let now = Instant::now();
        if let Some((p, t, due, succ, fail, last)) = r.as_mut()
            && *due <= now
        {
            if eager >= t.period {
                *due = now + t.period;
            } else {
                *due = now + eager;
                eager *= 2;
            }
            match probe::run(&probe::of_probe(p), &spec, &target, t.timeout).await {
                Ok(()) => {
                    *succ += 1;
                    *fail = 0;
                    // From the first success on, probes keep the period.
                    eager = t.period;
                    if *succ >= t.success_threshold && *last != Some(true) {
                        *last = Some(true);
                        send(ProbeKind::Readiness, true, String::new());
                    }
                }
                Err(m) => {
                    *fail += 1;
                    *succ = 0;
                    if *fail >= t.failure_threshold && *last != Some(false) {
                        *last = Some(false);
                        send(ProbeKind::Readiness, false, m);
                    } else if last.is_none() {
                        // Until the first success the container is not ready; say why once.
                        *last = Some(false);
                        send(ProbeKind::Readiness, false, m);
                    }
                }
            }
        }
        if let Some((p, t, due, fail)) = l.as_mut()
            && *due <= now
        {
            *due = now + t.period;
            match probe::run(&probe::of_probe(p), &spec, &target, t.timeout).await {
                Ok(()) => *fail = 0,
                Err(m) => {
                    *fail += 1;
                    if *fail >= t.failure_threshold {
                        send(ProbeKind::Liveness, false, m);
                        return;
                    }
                }
            }
        }
    }
}
