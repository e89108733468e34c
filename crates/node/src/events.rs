//! Events about pods, posted in the background so they never slow a pod's start (kubelet's
//! event recorder is asynchronous too). Each event is its own object, as kubelet's are before
//! its aggregation kicks in.
//!
//! The Events carry `eventTime`, so kube-apiserver validates them with the `events.k8s.io` rules
//! (`legacyValidateEvent`): `reportingComponent`, `reportingInstance`, `action` and `reason` are
//! required. Without `action` every Event was refused with 422 on a real cluster (issue 10).

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::mpsc;

/// The `action` of an Event with `reason`. Kubelet's own Events are old-style (no `eventTime`)
/// and carry none; ours are `events.k8s.io`-style, where it is required and at most 128
/// characters, so the reason (already limited to 128 by the same rules) names the action too.
pub fn action_of(reason: &str) -> String {
    reason.chars().take(128).collect()
}

/// Logs refused Events at warn once per run of failures, not once per Event (a server that
/// refuses one refuses them all), and again after a success.
#[derive(Debug, Default)]
pub struct FailureLog {
    failing: bool,
}

impl FailureLog {
    pub fn failed(&mut self, e: &kube::Error, reason: &str) {
        if self.failing {
            tracing::debug!(error = %e, reason, "event not recorded");
        } else {
            self.failing = true;
            tracing::warn!(error = %e, reason, "event not recorded; further failures are logged at debug until one succeeds");
        }
    }

    pub fn succeeded(&mut self) {
        self.failing = false;
    }
}

/// Identifies the pod (and optionally a container in it) an event is about.
#[derive(Debug, Clone)]
pub struct Subject {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// Sends events to the API server from a background task.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Event>,
    node: String,
}

impl Recorder {
    /// Starts the posting task.
    pub fn start(client: kube::Client, node: &str) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        tokio::spawn(async move {
            let mut failing = FailureLog::default();
            while let Some(ev) = rx.recv().await {
                let ns = ev.metadata.namespace.clone().unwrap_or_else(|| "default".into());
                let api: Api<Event> = Api::namespaced(client.clone(), &ns);
                match api.create(&PostParams::default(), &ev).await {
                    Ok(_) => failing.succeeded(),
                    Err(e) => failing.failed(&e, ev.reason.as_deref().unwrap_or("")),
                }
            }
        });
        Self { tx, node: node.to_owned() }
    }

    /// Records `reason`/`message` about `s` (and `container`, as `spec.containers{name}`).
    pub fn emit(
        &self,
        s: &Subject,
        container: Option<&str>,
        warning: bool,
        reason: &str,
        message: String,
    ) {
        let now = jiff::Timestamp::now();
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", s.name, now.as_nanosecond())),
                namespace: Some(s.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(s.name.clone()),
                namespace: Some(s.namespace.clone()),
                uid: Some(s.uid.clone()),
                field_path: container.map(|c| format!("spec.containers{{{c}}}")),
                ..Default::default()
            },
            reason: Some(reason.to_owned()),
            message: Some(message),
            type_: Some(if warning { "Warning" } else { "Normal" }.to_owned()),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some(self.node.clone()),
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            count: Some(1),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(self.node.clone()),
            action: Some(action_of(reason)),
            ..Default::default()
        };
        let _ = self.tx.send(ev);
    }

    /// Records `reason`/`message` about any object (a cluster-scoped one's Event lives in
    /// `default`, where kubectl looks for it).
    pub fn emit_for(
        &self,
        involved: ObjectReference,
        warning: bool,
        reason: &str,
        message: String,
    ) {
        let now = jiff::Timestamp::now();
        let ns = involved.namespace.clone().unwrap_or_else(|| "default".into());
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    involved.name.as_deref().unwrap_or("object"),
                    now.as_nanosecond()
                )),
                namespace: Some(ns),
                ..Default::default()
            },
            involved_object: involved,
            reason: Some(reason.to_owned()),
            message: Some(message),
            type_: Some(if warning { "Warning" } else { "Normal" }.to_owned()),
            source: Some(EventSource {
                component: Some("kinetic-imagepuller".into()),
                host: Some(self.node.clone()),
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            count: Some(1),
            reporting_component: Some("kinetic-imagepuller".into()),
            reporting_instance: Some(self.node.clone()),
            action: Some(action_of(reason)),
            ..Default::default()
        };
        let _ = self.tx.send(ev);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::{Duration, Instant};

    use kube::api::ListParams;

    use super::*;

    /// Waits for an Event with `reason` in `ns` and returns it.
    async fn wait_event(client: &kube::Client, ns: &str, reason: &str) -> Event {
        let api: Api<Event> = Api::namespaced(client.clone(), ns);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let list = api.list(&ListParams::default()).await.unwrap();
            if let Some(e) = list.items.into_iter().find(|e| e.reason.as_deref() == Some(reason)) {
                return e;
            }
            assert!(Instant::now() < deadline, "no {reason} event in {ns} within 10s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Regression (issue 10): the agent's Events set `eventTime` but no `action`, and
    /// kube-apiserver refused every one with `422 action: Required value`. The embedded server
    /// now applies the same rule, so this fails if either writer loses `action`.
    #[tokio::test(flavor = "multi_thread")]
    async fn pod_events_without_action_are_refused_so_the_agent_sends_action() {
        let server = kinetic_testkit::TestServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let strict: Api<Event> = Api::namespaced(client.clone(), "default");
        let no_action = serde_json::from_value::<Event>(serde_json::json!({
            "metadata": {"name": "no-action"},
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": "p"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reason": "Pulling", "reportingComponent": "kubelet", "reportingInstance": "n",
        }))
        .unwrap();
        let err = strict.create(&PostParams::default(), &no_action).await.unwrap_err();
        assert!(
            matches!(&err, kube::Error::Api(s) if s.code == 422 && s.message.contains("action: Required value")),
            "{err:?}"
        );

        let rec = Recorder::start(client.clone(), "node-a");
        let pod = Subject { namespace: "default".into(), name: "p".into(), uid: "u1".into() };
        rec.emit(&pod, Some("c"), false, "Pulling", "pulling image \"x\"".into());
        let node = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some("node-a".into()),
            ..Default::default()
        };
        rec.emit_for(node, true, "FreeDiskSpaceFailed", "no space".into());
        let ev = wait_event(&client, "default", "Pulling").await;
        assert_eq!(ev.action.as_deref(), Some("Pulling"));
        assert_eq!(ev.reporting_component.as_deref(), Some("kubelet"));
        assert_eq!(ev.reporting_instance.as_deref(), Some("node-a"));
        let ev = wait_event(&client, "default", "FreeDiskSpaceFailed").await;
        assert_eq!(ev.action.as_deref(), Some("FreeDiskSpaceFailed"));
        server.shutdown().await;
    }
}
