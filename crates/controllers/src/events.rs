//! Best-effort core/v1 Events, written by one background task so that no scheduling or
//! reconcile decision ever waits on them. Repeats of the same (pod, reason, message) bump `count` and
//! `lastTimestamp` of the first Event, as client-go's event correlator does.

use std::collections::HashMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use tokio::sync::mpsc;

/// Events waiting to be written; beyond this they are dropped (and logged) rather than queued
/// without bound or slowing the scheduler.
const QUEUE: usize = 4096;
/// How many distinct events the correlator remembers before it starts afresh.
const REMEMBERED: usize = 4096;

/// One event to record.
#[derive(Debug, Clone)]
pub struct EventReq {
    pub involved: ObjectReference,
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    pub reason: &'static str,
    pub message: String,
}

impl EventReq {
    pub fn for_pod(pod: &Pod, type_: &'static str, reason: &'static str, message: String) -> Self {
        Self::for_object(pod, type_, reason, message)
    }

    /// An event about any object (a CloneSet, a Pod, ...).
    pub fn for_object<K>(
        obj: &K,
        type_: &'static str,
        reason: &'static str,
        message: String,
    ) -> Self
    where
        K: kube::Resource<DynamicType = ()>,
    {
        let involved = ObjectReference {
            api_version: Some(K::api_version(&()).into_owned()),
            kind: Some(K::kind(&()).into_owned()),
            namespace: obj.meta().namespace.clone(),
            name: obj.meta().name.clone(),
            uid: obj.meta().uid.clone(),
            resource_version: obj.meta().resource_version.clone(),
            ..Default::default()
        };
        Self { involved, type_, reason, message }
    }
}

/// The sending side; cloning is cheap.
#[derive(Debug, Clone)]
pub struct EventSink(mpsc::Sender<EventReq>);

impl EventSink {
    /// Starts the writer task for events reported by `component`.
    pub fn spawn(client: Client, component: String) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_events(client, component, rx));
        Self(tx)
    }

    /// Queues an event; never waits.
    pub fn send(&self, ev: EventReq) {
        if let Err(e) = self.0.try_send(ev) {
            tracing::debug!(error = %e, "dropping an event");
        }
    }
}

struct Seen {
    name: String,
    count: i32,
}

async fn write_events(client: Client, component: String, mut rx: mpsc::Receiver<EventReq>) {
    let mut seen: HashMap<(String, String, &'static str, String), Seen> = HashMap::new();
    let mut failing = false;
    while let Some(ev) = rx.recv().await {
        let ns = ev.involved.namespace.clone().unwrap_or_else(|| "default".to_owned());
        let api: Api<Event> = Api::namespaced(client.clone(), &ns);
        let key = (
            ns.clone(),
            ev.involved.uid.clone().unwrap_or_default(),
            ev.reason,
            ev.message.clone(),
        );
        let now = Timestamp::now();
        if let Some(s) = seen.get_mut(&key) {
            let patch = serde_json::json!({"count": s.count + 1, "lastTimestamp": Time(now)});
            match api.patch(&s.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    s.count += 1;
                    continue;
                }
                Err(e) => tracing::debug!(event = %s.name, error = %e, "event not updated"),
            }
        }
        let involved_name = ev.involved.name.clone().unwrap_or_default();
        let name = format!("{involved_name}.{:x}", now.as_nanosecond());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: ev.involved,
            reason: Some(ev.reason.to_owned()),
            message: Some(ev.message),
            type_: Some(ev.type_.to_owned()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            source: Some(EventSource { component: Some(component.clone()), host: None }),
            reporting_component: Some(component.clone()),
            reporting_instance: Some(component.clone()),
            // Required by the events.k8s.io rules once `eventTime` is set (issue 10); harmless
            // and informative on these old-style Events.
            action: Some(ev.reason.to_owned()),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(created) => {
                failing = false;
                if seen.len() >= REMEMBERED {
                    seen.clear();
                }
                seen.insert(key, Seen { name: created.name_any(), count: 1 });
            }
            Err(e) if failing => {
                tracing::debug!(namespace = %ns, object = %involved_name, error = %e, "event not recorded")
            }
            Err(e) => {
                // Once per run of failures: a server that refuses one Event refuses them all.
                failing = true;
                tracing::warn!(namespace = %ns, object = %involved_name, error = %e, "event not recorded; further failures are logged at debug until one succeeds")
            }
        }
    }
}
