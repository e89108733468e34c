//! `core/v1` Events the way client-go's event recorder writes them (the ones
//! `kubectl describe` shows): `ScalingReplicaSet` on Deployments, `SuccessfulCreate`,
//! `SuccessfulDelete` and `FailedCreate` on ReplicaSets.
//!
//! Events are posted by background tasks and never delay or fail a reconcile; a failed post is
//! logged and dropped, as upstream's broadcaster drops events under pressure. There is no
//! aggregation of repeated events into `count` (each one is a new Event).

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, Resource};

/// Posts Events for one controller (`source.component`).
#[derive(Clone)]
pub(crate) struct Recorder {
    client: Client,
    component: &'static str,
    /// Set while posts fail, so a server refusing Events is logged at warn once, not per Event.
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Recorder {
    pub(crate) fn new(client: Client, component: &'static str) -> Self {
        Self { client, component, failing: Default::default() }
    }

    /// Posts a `Normal` (or, with `warning`, `Warning`) event about `obj` in the background.
    pub(crate) fn post<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        warning: bool,
        reason: &'static str,
        message: String,
    ) {
        let meta = obj.meta();
        let ns = meta.namespace.clone().unwrap_or_else(|| "default".to_owned());
        let name = meta.name.clone().unwrap_or_default();
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                // client-go names events `{object}.{unix nanoseconds in hex}`.
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some(K::api_version(&()).into_owned()),
                kind: Some(K::kind(&()).into_owned()),
                name: Some(name),
                namespace: Some(ns.clone()),
                uid: meta.uid.clone(),
                resource_version: meta.resource_version.clone(),
                ..Default::default()
            },
            reason: Some(reason.to_owned()),
            message: Some(message),
            type_: Some(if warning { "Warning" } else { "Normal" }.to_owned()),
            source: Some(EventSource { component: Some(self.component.to_owned()), host: None }),
            first_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
            last_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
            event_time: None::<MicroTime>,
            count: Some(1),
            reporting_component: Some(self.component.to_owned()),
            reporting_instance: Some(self.component.to_owned()),
            // Required by the events.k8s.io rules once `eventTime` is set (issue 10); harmless
            // and informative on the old-style Events written here.
            action: Some(reason.to_owned()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let failing = self.failing.clone();
        tokio::spawn(async move {
            use std::sync::atomic::Ordering;
            match api.create(&PostParams::default(), &event).await {
                Ok(_) => failing.store(false, Ordering::Relaxed),
                Err(error) if failing.swap(true, Ordering::Relaxed) => {
                    tracing::debug!(%error, reason, "event not posted");
                }
                Err(error) => tracing::warn!(
                    %error,
                    reason,
                    "event not posted; further failures are logged at debug until one succeeds"
                ),
            }
        });
    }
}
