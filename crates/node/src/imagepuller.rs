//! Image preheating on the node: kruise-daemon's image puller
//! (`pkg/daemon/imagepuller`), pulling through the agent's own image [`Store`] so that a pod
//! on a preheated image later starts without downloading anything.
//!
//! The agent watches only its own NodeImage (field selector `metadata.name=<node>`). For each
//! tag in `spec.images` whose version it has not finished, a pull task waits for one of
//! [`crate::Config::image_pull_workers`] slots, honours `imagePullPolicy` (`IfNotPresent`
//! answers from the store), reads the image's pull secrets (namespace/name, type
//! `kubernetes.io/dockerconfigjson`) the way pod pull secrets are read, and tries up to
//! `1 + backoffLimit` times, each try bounded by `timeoutSeconds`, with exponential back-off
//! between tries (1 s doubling, at most 30 s). A tag removed from the spec cancels its pull.
//!
//! The agent writes only the NodeImage's status: per tag the phase (Waiting, Pulling,
//! Succeeded, Failed), progress 0-100 (compressed bytes received of the layers to fetch),
//! start and completion time, the spec version it handled, the image ID
//! (`registry/repository@<manifest digest>`) and a message; and the counts desired, succeeded,
//! failed, pulling and waiting. Each finished pull records a `PullImageSucceed` or
//! `PullImageFailed` Event on the NodeImage and wakes the image GC.
//!
//! [`Store`]: kinetic_image::Store

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kinetic_api::kruise::imagepulljob::{
    DEFAULT_BACKOFF_LIMIT, DEFAULT_TIMEOUT_SECONDS, ImagePullPolicy,
};
use kinetic_api::kruise::nodeimage::{
    ImageStatus, ImageTagStatus, NodeImage, NodeImageStatus, join_image, phase,
};
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::Ctx;

/// (image name, tag).
type Key = (String, String);

/// What the pull tasks and the status writer share.
struct Shared {
    ctx: Arc<Ctx>,
    statuses: Mutex<BTreeMap<Key, ImageTagStatus>>,
    /// Wakes the status writer.
    dirty: Notify,
    slots: Semaphore,
    /// References being pulled now (the GC must keep them).
    pulling: Arc<Mutex<HashSet<String>>>,
    gc_kick: Arc<Notify>,
    /// Image names the NodeImage's status held when we last saw it.
    reported: Mutex<Vec<String>>,
}

impl Shared {
    fn set(&self, key: &Key, f: impl FnOnce(&mut ImageTagStatus)) {
        let mut st = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
        let entry = st
            .entry(key.clone())
            .or_insert_with(|| ImageTagStatus { tag: key.1.clone(), ..Default::default() });
        f(entry);
        drop(st);
        self.dirty.notify_one();
    }
}

/// One tag's work order, from the spec.
#[derive(Clone, PartialEq)]
struct Work {
    version: i64,
    always: bool,
    timeout: Duration,
    backoff_limit: u32,
    secrets: Vec<(String, String)>,
    /// `createdAt + pullPolicy.activeDeadlineSeconds`: the pull is given up then, retries
    /// included (issue 18: it was ignored).
    deadline: Option<(jiff::Timestamp, i64)>,
}

/// Watches this node's NodeImage and pulls what it asks for, until aborted.
pub(crate) async fn run(ctx: Arc<Ctx>, pulling: Arc<Mutex<HashSet<String>>>, gc_kick: Arc<Notify>) {
    let node = ctx.cfg.node_name.clone();
    let shared = Arc::new(Shared {
        slots: Semaphore::new(ctx.cfg.image_pull_workers.max(1)),
        ctx: ctx.clone(),
        statuses: Mutex::new(BTreeMap::new()),
        dirty: Notify::new(),
        pulling,
        gc_kick,
        reported: Mutex::new(Vec::new()),
    });
    let writer = tokio::spawn(write_status_loop(shared.clone()));
    let _writer = AbortOnDrop(vec![writer]);
    let api: Api<NodeImage> = Api::all(ctx.client.clone());
    let wc = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let mut stream = watcher::watcher(api, wc).default_backoff().boxed();
    let mut tasks: HashMap<Key, (Work, JoinHandle<()>)> = HashMap::new();
    let mut loaded = false;
    let mut failing = Failing::default();
    while let Some(ev) = stream.next().await {
        let ni = match ev {
            Ok(Event::Apply(ni) | Event::InitApply(ni)) => ni,
            Ok(Event::Delete(_)) => {
                for (_, (_, h)) in tasks.drain() {
                    h.abort();
                }
                shared.statuses.lock().unwrap_or_else(|e| e.into_inner()).clear();
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                failing.failed(&e);
                continue;
            }
        };
        failing.recovered();
        *shared.reported.lock().unwrap_or_else(|e| e.into_inner()) = ni
            .status
            .iter()
            .flat_map(|s| s.image_statuses.iter().flatten())
            .map(|(k, _)| k.clone())
            .collect();
        if !loaded {
            // Keep what an earlier agent reported, so finished tags are not pulled again.
            loaded = true;
            let mut st = shared.statuses.lock().unwrap_or_else(|e| e.into_inner());
            for (name, img) in ni.status.iter().flat_map(|s| s.image_statuses.iter().flatten()) {
                for t in &img.tags {
                    st.insert((name.clone(), t.tag.clone()), t.clone());
                }
            }
        }
        let mut wanted: HashMap<Key, Work> = HashMap::new();
        for (name, img) in ni.spec.images.iter().flatten() {
            let secrets: Vec<(String, String)> = img
                .pull_secrets
                .iter()
                .flatten()
                .filter_map(|r| Some((r.namespace.clone()?, r.name.clone()?)))
                .collect();
            for t in &img.tags {
                let p = t.pull_policy.clone().unwrap_or_default();
                wanted.insert(
                    (name.clone(), t.tag.clone()),
                    Work {
                        version: t.version.unwrap_or(0),
                        always: t.image_pull_policy == Some(ImagePullPolicy::Always),
                        timeout: Duration::from_secs(
                            u64::try_from(p.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS))
                                .unwrap_or(1)
                                .max(1),
                        ),
                        backoff_limit: u32::try_from(
                            p.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT),
                        )
                        .unwrap_or(0),
                        secrets: secrets.clone(),
                        deadline: p.active_deadline_seconds.and_then(|d| {
                            let created = t.created_at.as_ref()?.0;
                            Some((created + jiff::SignedDuration::from_secs(d.max(0)), d))
                        }),
                    },
                );
            }
        }
        // Tags no longer asked for: cancel their pulls and forget them.
        tasks.retain(|k, (_, h)| {
            let keep = wanted.contains_key(k);
            if !keep {
                h.abort();
            }
            keep
        });
        {
            let mut st = shared.statuses.lock().unwrap_or_else(|e| e.into_inner());
            st.retain(|k, _| wanted.contains_key(k));
        }
        shared.dirty.notify_one();
        for (key, work) in wanted {
            if let Some((w, h)) = tasks.get(&key)
                && w.version == work.version
                && !h.is_finished()
            {
                continue;
            }
            let done = {
                let st = shared.statuses.lock().unwrap_or_else(|e| e.into_inner());
                st.get(&key).is_some_and(|s| {
                    s.version.unwrap_or(0) >= work.version
                        && (s.phase == phase::SUCCEEDED || s.phase == phase::FAILED)
                })
            };
            if done {
                continue;
            }
            if let Some((_, h)) = tasks.remove(&key) {
                h.abort();
            }
            let h = tokio::spawn(pull_tag(shared.clone(), key.clone(), work.clone()));
            tasks.insert(key, (work, h));
        }
    }
    for (_, (_, h)) in tasks {
        h.abort();
    }
}

struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// Bytes of the layers being fetched and bytes received, for `progress`.
#[derive(Default)]
struct Counter {
    total: AtomicU64,
    done: AtomicU64,
}

impl kinetic_image::Progress for Counter {
    fn layer_total(&self, _digest: &str, bytes: u64) {
        self.total.fetch_add(bytes, Ordering::Relaxed);
    }
    fn advanced(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Counter {
    /// Percent received, below 100 until the pull returns.
    fn percent(&self) -> i32 {
        let total = self.total.load(Ordering::Relaxed);
        if total == 0 {
            return 0;
        }
        let done = self.done.load(Ordering::Relaxed).min(total);
        i32::try_from(done * 99 / total).unwrap_or(99)
    }
}

/// How long the NodeImage watch may fail before it is worth a warning.
const WATCH_WARN_AFTER: Duration = Duration::from_secs(60);

/// The state of a failing NodeImage watch. At start the watch answers 404 until `kinetic
/// controller` (or `kinetic up`'s controllers) has installed the CRD, which takes seconds: those
/// failures are logged at debug level. A failure that lasts [`WATCH_WARN_AFTER`] is a warning,
/// repeated at most once per that period.
#[derive(Default)]
struct Failing {
    since: Option<Instant>,
    warned: Option<Instant>,
}

impl Failing {
    fn failed(&mut self, e: &watcher::Error) {
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        let due = now.duration_since(since) >= WATCH_WARN_AFTER
            && self.warned.is_none_or(|w| now.duration_since(w) >= WATCH_WARN_AFTER);
        if due {
            self.warned = Some(now);
            let secs = now.duration_since(since).as_secs();
            tracing::warn!(
                error = %e,
                failing_for_seconds = secs,
                "NodeImage watch failing; retrying"
            );
        } else {
            tracing::debug!(error = %e, "NodeImage watch failed; retrying");
        }
    }

    fn recovered(&mut self) {
        if self.warned.is_some() {
            tracing::info!("NodeImage watch recovered");
        }
        *self = Self::default();
    }
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// Pulls one tag for one spec version; the result goes into the shared status.
async fn pull_tag(shared: Arc<Shared>, key: Key, work: Work) {
    let reference = join_image(&key.0, &key.1);
    shared.set(&key, |s| {
        *s = ImageTagStatus {
            tag: key.1.clone(),
            phase: phase::WAITING.to_owned(),
            version: Some(work.version),
            ..Default::default()
        };
    });
    let Ok(_slot) = shared.slots.acquire().await else { return };
    shared.set(&key, |s| {
        s.phase = phase::PULLING.to_owned();
        s.start_time = Some(now());
    });
    let ctx = &shared.ctx;
    let result = if let Some(img) = ctx.images.local(&reference).filter(|_| !work.always) {
        Ok(img)
    } else {
        shared.pulling.lock().unwrap_or_else(|e| e.into_inner()).insert(reference.clone());
        let pull = pull_with_retries(&shared, &key, &reference, &work);
        let r = match work.deadline {
            None => pull.await,
            Some((at, secs)) => {
                let left = at.duration_since(jiff::Timestamp::now());
                let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
                tokio::time::timeout(left, pull).await.unwrap_or_else(|_| {
                    Err(format!("pull exceeded pullPolicy.activeDeadlineSeconds ({secs}s)"))
                })
            }
        };
        shared.pulling.lock().unwrap_or_else(|e| e.into_inner()).remove(&reference);
        r
    };
    let subject = ObjectReference {
        api_version: Some("apps.kruise.io/v1alpha1".into()),
        kind: Some("NodeImage".into()),
        name: Some(ctx.cfg.node_name.clone()),
        ..Default::default()
    };
    match result {
        Ok(img) => {
            tracing::info!(image = %reference, id = %img.image_id, bytes = img.downloaded_bytes, "image preheated");
            shared.set(&key, |s| {
                s.phase = phase::SUCCEEDED.to_owned();
                s.progress = 100;
                s.completion_time = Some(now());
                s.image_id = Some(img.image_id.clone());
                s.message =
                    Some(format!("image pulled ({} bytes downloaded)", img.downloaded_bytes));
            });
            ctx.events.emit_for(
                subject,
                false,
                "PullImageSucceed",
                format!("Image {reference} has been pulled successfully"),
            );
        }
        Err(msg) => {
            tracing::warn!(image = %reference, error = %msg, "image preheat failed");
            shared.set(&key, |s| {
                s.phase = phase::FAILED.to_owned();
                s.completion_time = Some(now());
                s.message = Some(msg.clone());
            });
            ctx.events.emit_for(
                subject,
                true,
                "PullImageFailed",
                format!("Image {reference} failed to be pulled: {msg}"),
            );
        }
    }
    shared.gc_kick.notify_one();
}

/// Up to `1 + backoffLimit` tries of at most `timeout` each, with exponential back-off.
async fn pull_with_retries(
    shared: &Shared,
    key: &Key,
    reference: &str,
    work: &Work,
) -> Result<kinetic_image::Image, String> {
    let ctx = &shared.ctx;
    let opts = crate::pull_options(ctx, &work.secrets).await;
    let mut delay = Duration::from_secs(1);
    let mut last = String::new();
    for attempt in 0..=work.backoff_limit {
        let counter = Arc::new(Counter::default());
        let pull = ctx.images.pull(reference, &opts, &*counter);
        tokio::pin!(pull);
        let deadline = tokio::time::sleep(work.timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let outcome = loop {
            tokio::select! {
                r = &mut pull => break Some(r),
                () = &mut deadline => break None,
                _ = tick.tick() => {
                    let p = counter.percent();
                    shared.set(key, |s| s.progress = p);
                }
            }
        };
        match outcome {
            Some(Ok(img)) => return Ok(img),
            Some(Err(e)) => last = crate::report(&e),
            None => {
                last = format!(
                    "pull timed out after {}s (pullPolicy.timeoutSeconds)",
                    work.timeout.as_secs()
                )
            }
        }
        if attempt < work.backoff_limit {
            shared.set(key, |s| {
                s.message = Some(format!(
                    "try {} failed, retrying in {}s: {last}",
                    attempt + 1,
                    delay.as_secs()
                ));
            });
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }
    Err(format!("{last} (after {} tries)", work.backoff_limit + 1))
}

/// Writes the status whenever it changed (at most every 200 ms).
async fn write_status_loop(shared: Arc<Shared>) {
    let api: Api<NodeImage> = Api::all(shared.ctx.client.clone());
    let node = shared.ctx.cfg.node_name.clone();
    let mut written: Option<Value> = None;
    loop {
        shared.dirty.notified().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let status = {
            let st = shared.statuses.lock().unwrap_or_else(|e| e.into_inner());
            build_status(&st)
        };
        let Ok(mut value) = serde_json::to_value(&status) else { continue };
        if written.as_ref() == Some(&value) {
            continue;
        }
        // A merge patch merges maps: images the object still reports but we no longer do
        // must be nulled.
        let stale: Vec<String> =
            shared.reported.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
        if let Some(m) = value.get_mut("imageStatuses").and_then(Value::as_object_mut) {
            for k in stale {
                m.entry(k).or_insert(Value::Null);
            }
        }
        let body = json!({"status": value});
        match api.patch_status(&node, &PatchParams::default(), &Patch::Merge(&body)).await {
            Ok(_) => written = serde_json::to_value(&status).ok(),
            Err(e) => {
                tracing::debug!(error = %e, "NodeImage status not written; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                shared.dirty.notify_one();
            }
        }
    }
}

/// The NodeImage status for the tags' statuses.
fn build_status(st: &BTreeMap<Key, ImageTagStatus>) -> NodeImageStatus {
    let mut out = NodeImageStatus::default();
    let mut images: BTreeMap<String, ImageStatus> = BTreeMap::new();
    for ((name, _), s) in st {
        out.desired += 1;
        match s.phase.as_str() {
            phase::SUCCEEDED => out.succeeded += 1,
            phase::FAILED => out.failed += 1,
            phase::PULLING => out.pulling += 1,
            _ => out.waiting += 1,
        }
        images
            .entry(name.clone())
            .or_insert_with(|| ImageStatus { tags: Vec::new() })
            .tags
            .push(s.clone());
    }
    out.image_statuses = Some(images);
    out
}
