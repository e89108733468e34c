//! The NodeImage controller: one cluster-scoped NodeImage per Node, named after it, created
//! when the Node appears and deleted when it goes (upstream's `pkg/controller/nodeimage`).
//!
//! It also sweeps tag entries whose ImagePullJobs no longer exist (a job deleted before it
//! finished, or by its TTL), so tags never outlive every job that asked for them; an owner
//! missing from the watch cache is confirmed with a GET before its entries go, so a job
//! created a moment ago keeps its tag.
//!
//! Level-triggered: every change of a Node, NodeImage or ImagePullJob runs one pass over the
//! whole (cached) state, plus a pass every 30 s.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kinetic_api::kruise::imagepulljob::ImagePullJob;
use kinetic_api::kruise::nodeimage::{NodeImage, NodeImageSpec};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt as _};

/// Runs the NodeImage controller until `shutdown` resolves.
///
/// # Errors
/// None so far: failed passes are logged and repeated.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> crate::Result<()> {
    let (nodes, nw) = reflector::store::<Node>();
    let (images, iw) = reflector::store::<NodeImage>();
    let (jobs, jw) = reflector::store::<ImagePullJob>();
    let cfg = watcher::Config::default;
    let a = reflector::reflector(nw, watcher(Api::<Node>::all(client.clone()), cfg()))
        .default_backoff()
        .map(|_| ());
    let b = reflector::reflector(iw, watcher(Api::<NodeImage>::all(client.clone()), cfg()))
        .default_backoff()
        .map(|_| ());
    let c = reflector::reflector(jw, watcher(Api::<ImagePullJob>::all(client.clone()), cfg()))
        .default_backoff()
        .map(|_| ());
    // The reflectors run on their own tasks: a pass waits for their stores, so they must not
    // be polled only by this loop.
    let changed = std::sync::Arc::new(tokio::sync::Notify::new());
    let events = futures::stream::select(futures::stream::select(a, b), c);
    let feeder = {
        let changed = changed.clone();
        tokio::spawn(events.for_each(move |()| {
            changed.notify_one();
            futures::future::ready(())
        }))
    };
    let _feeder = AbortOnDrop(feeder);
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    const PASS: &str = "nodeimage";
    let backoff = crate::backoff::Backoff::default();
    // When the next tag's TTL runs out.
    let mut expiry: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = changed.notified() => {
                // Let a burst of events land before one pass.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ = tick.tick() => {}
            () = sleep_until(expiry) => {}
        }
        nodes.wait_until_ready().await.ok();
        images.wait_until_ready().await.ok();
        jobs.wait_until_ready().await.ok();
        match sync(&client, &nodes, &images, &jobs).await {
            Ok(wake) => {
                backoff.succeeded(PASS);
                expiry = wake.map(|d| tokio::time::Instant::now() + d);
            }
            Err(e) => {
                // Consecutive failures back off (crate::backoff), never a fixed-rate retry.
                let wait = backoff.failed(PASS, None);
                tracing::warn!(error = %crate::report(&e), ?wait, "nodeimage sync failed; retrying");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(wait) => {}
                }
                changed.notify_one();
            }
        }
    }
    Ok(())
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One pass: create missing NodeImages, delete those of vanished Nodes, sweep tags of deleted
/// jobs.
async fn sync(
    client: &Client,
    nodes: &Store<Node>,
    images: &Store<NodeImage>,
    jobs: &Store<ImagePullJob>,
) -> Result<Option<Duration>, kube::Error> {
    let mut next_wake: Option<Duration> = None;
    let api: Api<NodeImage> = Api::all(client.clone());
    let node_names: BTreeSet<String> = nodes.state().iter().map(|n| n.name_any()).collect();
    let have: BTreeSet<String> = images.state().iter().map(|n| n.name_any()).collect();
    let node_labels = |name: &str| {
        nodes.state().iter().find(|n| n.name_any() == name).map(|n| n.labels().clone())
    };
    for n in node_names.difference(&have) {
        let ni = NodeImage {
            metadata: ObjectMeta {
                name: Some(n.clone()),
                // Upstream's NodeImage carries its Node's labels, so NodeImages can be listed
                // by node label (the manual does; issue 18).
                labels: node_labels(n).filter(|l| !l.is_empty()),
                ..Default::default()
            },
            spec: NodeImageSpec::default(),
            status: None,
        };
        match api.create(&PostParams::default(), &ni).await {
            Ok(_) => tracing::info!(node = %n, "NodeImage created"),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    for ni in images.state() {
        let name = ni.name_any();
        if !node_names.contains(&name) {
            // Gone from the cache could be a lagging watch: confirm with the API first.
            let node_api: Api<Node> = Api::all(client.clone());
            if node_api.get_opt(&name).await?.is_none() {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions { uid: ni.uid(), resource_version: None }),
                    ..Default::default()
                };
                match api.delete(&name, &dp).await {
                    Ok(_) => tracing::info!(node = %name, "NodeImage of a deleted node removed"),
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(e),
                }
            }
            continue;
        }
        // Keep the labels equal to the Node's (upstream copies them on every sync).
        if let Some(want) = node_labels(&name)
            && &want != ni.labels()
        {
            let mut labels = serde_json::Map::new();
            for k in ni.labels().keys().filter(|k| !want.contains_key(*k)) {
                labels.insert(k.clone(), serde_json::Value::Null);
            }
            for (k, v) in &want {
                labels.insert(k.clone(), serde_json::Value::String(v.clone()));
            }
            let patch = serde_json::json!({"metadata": {"labels": labels}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        // Owners (jobs) that are gone.
        let live: BTreeSet<String> = jobs.state().iter().filter_map(|j| j.uid()).collect();
        let mut missing = BTreeSet::new();
        for o in ni.job_owners() {
            let uid = o.uid.clone().unwrap_or_default();
            if live.contains(&uid) || missing.contains(&uid) {
                continue;
            }
            let japi: Api<ImagePullJob> =
                Api::namespaced(client.clone(), o.namespace.as_deref().unwrap_or_default());
            let cur = japi.get_opt(o.name.as_deref().unwrap_or_default()).await?;
            if cur.is_none_or(|j| j.uid().as_deref() != Some(uid.as_str())) {
                missing.insert(uid);
            }
        }
        let (expired, wake) = expired_tags(&ni, Timestamp::now());
        next_wake = match (next_wake, wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if missing.is_empty() && expired.is_empty() {
            continue;
        }
        let mut next = crate::imagepulljob::without_owner(&ni, |o| {
            o.uid.as_ref().is_some_and(|u| missing.contains(u))
        });
        if !expired.is_empty() {
            let mut n = next.take().unwrap_or_else(|| (*ni).clone());
            if let Some(images) = n.spec.images.as_mut() {
                for (image, spec) in images.iter_mut() {
                    spec.tags.retain(|t| !expired.contains(&(image.clone(), t.tag.clone())));
                }
                images.retain(|_, i| !i.tags.is_empty());
            }
            next = Some(n);
        }
        if let Some(next) = next {
            api.replace(&name, &PostParams::default(), &next).await?;
            tracing::info!(
                node = %name,
                jobs = missing.len(),
                expired = expired.len(),
                "tags of deleted ImagePullJobs or past their TTL removed"
            );
        }
    }
    Ok(next_wake)
}

/// The tags of `ni` whose pull finished more than their `pullPolicy.ttlSecondsAfterFinished`
/// ago (upstream's NodeImage controller drops them; the job's own TTL is separate), and how
/// long until the next one expires.
fn expired_tags(ni: &NodeImage, now: Timestamp) -> (BTreeSet<(String, String)>, Option<Duration>) {
    let mut expired = BTreeSet::new();
    let mut wake: Option<Duration> = None;
    for (image, spec) in ni.spec.images.iter().flatten() {
        for t in &spec.tags {
            let Some(ttl) = t.pull_policy.as_ref().and_then(|p| p.ttl_seconds_after_finished)
            else {
                continue;
            };
            // Only a status for this version of the tag counts (a re-pull bumps it).
            let Some(done) = ni
                .tag_status(image, &t.tag)
                .filter(|s| s.version == t.version)
                .and_then(|s| s.completion_time.as_ref())
            else {
                continue;
            };
            let at = done.0 + jiff::SignedDuration::from_secs(i64::from(ttl.max(0)));
            match Duration::try_from(at.duration_since(now)) {
                Ok(left) if !left.is_zero() => wake = Some(wake.map_or(left, |w| w.min(left))),
                _ => {
                    expired.insert((image.clone(), t.tag.clone()));
                }
            }
        }
    }
    (expired, wake)
}
