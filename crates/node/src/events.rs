//! Events about pods, posted in the background so they never slow a pod's start (kubelet's
//! event recorder is asynchronous too). Each event is its own object, as kubelet's are before
//! its aggregation kicks in.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::mpsc;

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
            while let Some(ev) = rx.recv().await {
                let ns = ev.metadata.namespace.clone().unwrap_or_else(|| "default".into());
                let api: Api<Event> = Api::namespaced(client.clone(), &ns);
                if let Err(e) = api.create(&PostParams::default(), &ev).await {
                    tracing::debug!(error = %e, reason = ?ev.reason, "event not recorded");
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
            action: None,
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
            ..Default::default()
        };
        let _ = self.tx.send(ev);
    }
}
