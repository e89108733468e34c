//! The KPA loop (issue 11, part 5): every second the gateway's per-revision [`Stat`]s go into
//! one [`Metrics`] per Revision, [`Autoscaler::scale`] decides with the Revision's
//! `autoscaling.knative.dev/*` annotations and the `config-autoscaler` ConfigMap (namespace
//! `knative-serving`, defaults when absent or invalid), and a valid decision that differs from
//! the CloneSet `{revision}-deployment`'s `spec.replicas` is merge-patched into it.
//!
//! The gateway's on-demand hook (a request held for a revision without endpoints) wakes the
//! loop at once: a revision whose CloneSet is at zero is set to `max(1, activation-scale)`
//! right away, without waiting for the metrics to show the held request (upstream's activator
//! pokes the autoscaler the same way, `pkg/activator/handler`). Later ticks then decide from
//! the metrics, which count held requests.
//!
//! A Revision no Route names and that is not its Configuration's newest is unreachable
//! ([`reachable`]): its `min-scale` no longer holds. Deliberate simplifications: the decision runs every second rather than upstream's
//! 2 s tick, and the Revision's `actualReplicas`/`desiredReplicas` are left to the Revision
//! controller. A Revision whose annotations do not validate is skipped (the API server refuses
//! them anyway).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::ConfigMap;
use kinetic_api::knative::configuration::Configuration;
use kinetic_api::knative::revision::Revision;
use kinetic_api::knative::route::Route;
use kinetic_api::kruise::cloneset::CloneSet;
use kinetic_autoscale::{Autoscaler, Config, DeciderSpec, Metrics, RevisionSpec, Time};
use kinetic_gateway::{Gateway, RevisionKey};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt as _};
use tokio::sync::{Notify, mpsc};

use crate::serving::revision::workload_name;
use crate::serving_gateway::AbortOnDrop;

/// Where Knative keeps its ConfigMaps.
pub const SYSTEM_NAMESPACE: &str = "knative-serving";
/// The autoscaler's ConfigMap.
pub const CONFIG_NAME: &str = "config-autoscaler";

/// One revision's KPA state.
struct State {
    metrics: Metrics,
    scaler: Autoscaler,
}

/// `now` for the autoscaler: the time since the Unix epoch.
fn now() -> Time {
    Time::new(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default())
}

/// Runs the loop until cancelled (it never returns on its own).
pub async fn run(
    client: Client,
    gateway: Arc<Gateway>,
    mut demand: mpsc::UnboundedReceiver<RevisionKey>,
) {
    let changed = Arc::new(Notify::new());
    let (revisions, t1) = crate::serving_gateway::reflect(
        Api::<Revision>::all(client.clone()),
        watcher::Config::default(),
        changed.clone(),
    );
    let (clonesets, t2) = crate::serving_gateway::reflect(
        Api::<CloneSet>::all(client.clone()),
        watcher::Config::default(),
        changed.clone(),
    );
    let (configs, t3) = crate::serving_gateway::reflect(
        Api::<ConfigMap>::namespaced(client.clone(), SYSTEM_NAMESPACE),
        watcher::Config::default().fields(&format!("metadata.name={CONFIG_NAME}")),
        changed,
    );
    let (routes, t4) = crate::serving_gateway::reflect(
        Api::<Route>::all(client.clone()),
        watcher::Config::default(),
        Arc::new(Notify::new()),
    );
    let (configurations, t5) = crate::serving_gateway::reflect(
        Api::<Configuration>::all(client.clone()),
        watcher::Config::default(),
        Arc::new(Notify::new()),
    );
    let _abort = AbortOnDrop(vec![t1, t2, t3, t4, t5]);
    let mut states: HashMap<RevisionKey, State> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let woken = tokio::select! {
            _ = tick.tick() => None,
            Some(key) = demand.recv() => Some(key),
        };
        let config = configs
            .state()
            .first()
            .map(|cm| {
                Config::from_data(&cm.data.clone().unwrap_or_default()).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "config-autoscaler is invalid; using the defaults");
                    Config::default()
                })
            })
            .unwrap_or_default();
        let cs_of = |key: &RevisionKey| {
            clonesets.get(&ObjectRef::new(&workload_name(&key.name)).within(&key.namespace))
        };
        if let Some(key) = woken {
            // A request waits for a revision without endpoints: wake it now.
            let Some(rev) = revisions.get(&ObjectRef::new(&key.name).within(&key.namespace)) else {
                continue;
            };
            let activation = spec_of(&rev, &config).map_or(1, |s| s.activation_scale.max(1));
            if let Some(cs) = cs_of(&key)
                && cs.spec.replicas.unwrap_or(1) == 0
            {
                tracing::info!(revision = %key, replicas = activation, "activating from zero");
                scale_to(&client, &key, activation).await;
            }
            continue;
        }
        let t = now();
        let report = gateway.take_stats();
        let mut seen = Vec::new();
        for rev in revisions.state() {
            let key = RevisionKey::new(rev.namespace().unwrap_or_default(), rev.name_any());
            let Ok(spec) = spec_of(&rev, &config) else { continue };
            let Some(cs) = cs_of(&key) else { continue };
            let ready = cs.status.as_ref().map_or(0, |s| s.ready_replicas);
            // Until both caches have listed, every revision counts as reachable (the safe side:
            // min-scale holds).
            let known = crate::cache_ready(&routes) && crate::cache_ready(&configurations);
            let reachable = !known || reachable(&rev, &routes.state(), &configurations.state());
            let decider = DeciderSpec::new(&config, &spec, reachable);
            let state = states.entry(key.clone()).or_insert_with(|| State {
                metrics: decider.metrics(),
                scaler: Autoscaler::new(decider.clone(), t, ready),
            });
            if state.scaler.spec() != &decider {
                state.metrics.resize(decider.stable_window, decider.panic_window, t);
                state.scaler.update(decider);
            }
            state.metrics.record(t, report.revisions.get(&key).copied().unwrap_or_default());
            let result = state.scaler.scale(t, &state.metrics, ready);
            let current = cs.spec.replicas.unwrap_or(1);
            if result.scale_valid && result.desired != current {
                tracing::info!(revision = %key, from = current, to = result.desired,
                    stable = result.observed_stable, panic = result.panic, "scaling");
                scale_to(&client, &key, result.desired).await;
            }
            seen.push(key);
        }
        states.retain(|k, _| seen.contains(k));
    }
}

/// Whether a Route may send the revision traffic (upstream's `routingState`: `active` when a
/// Route's traffic names it, `pending` for its Configuration's newest revision, which a Route
/// will name once it is ready; both are reachable, so `min-scale` holds). Anything else is
/// `reserve`: unreachable, scaled to zero whatever its `min-scale`.
pub fn reachable(
    rev: &Revision,
    routes: &[Arc<Route>],
    configurations: &[Arc<Configuration>],
) -> bool {
    let (ns, name) = (rev.namespace(), rev.name_any());
    let routed = routes.iter().filter(|r| r.namespace() == ns).any(|r| {
        r.status
            .as_ref()
            .and_then(|s| s.fields.traffic.as_deref())
            .is_some_and(|t| t.iter().any(|t| t.revision_name.as_deref() == Some(name.as_str())))
    });
    let pending = configurations.iter().filter(|c| c.namespace() == ns).any(|c| {
        c.status.as_ref().and_then(|s| s.fields.latest_created_revision_name.as_deref())
            == Some(name.as_str())
    });
    routed || pending
}

/// The revision's autoscaling settings from its annotations.
fn spec_of(rev: &Revision, config: &Config) -> Result<RevisionSpec, ()> {
    let cc = rev.spec.container_concurrency.unwrap_or(0);
    RevisionSpec::from_annotations(rev.annotations(), cc, config).map_err(|errs| {
        tracing::debug!(revision = %rev.name_any(), ?errs, "invalid autoscaling annotations");
    })
}

/// Merge-patches the revision's CloneSet to `replicas`; failures are logged and retried by
/// the next tick.
async fn scale_to(client: &Client, key: &RevisionKey, replicas: i32) {
    let api: Api<CloneSet> = Api::namespaced(client.clone(), &key.namespace);
    let patch = serde_json::json!({"spec": {"replicas": replicas}});
    if let Err(e) =
        api.patch(&workload_name(&key.name), &PatchParams::default(), &Patch::Merge(&patch)).await
    {
        tracing::warn!(revision = %key, error = %crate::report(&e), "scaling the CloneSet failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj<K: serde::de::DeserializeOwned>(v: serde_json::Value) -> Arc<K> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn a_revision_is_reachable_when_routed_or_newest_and_unreachable_otherwise() {
        let rev = |name: &str| -> Arc<Revision> {
            obj(serde_json::json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"containers": [{"image": "a"}]},
            }))
        };
        let routes: Vec<Arc<Route>> = vec![obj(serde_json::json!({
            "metadata": {"name": "hello", "namespace": "default"},
            "spec": {},
            "status": {"traffic": [{"revisionName": "hello-00001", "percent": 100}]},
        }))];
        let configs: Vec<Arc<Configuration>> = vec![obj(serde_json::json!({
            "metadata": {"name": "hello", "namespace": "default"},
            "spec": {"template": {"spec": {"containers": [{"image": "a"}]}}},
            "status": {"latestCreatedRevisionName": "hello-00003"},
        }))];
        assert!(reachable(&rev("hello-00001"), &routes, &configs), "routed");
        assert!(reachable(&rev("hello-00003"), &routes, &configs), "newest, not routed yet");
        assert!(!reachable(&rev("hello-00002"), &routes, &configs), "neither");
    }
}
