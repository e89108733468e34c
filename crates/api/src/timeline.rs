//! The start-up timeline of a pod, kept as JSON in the [`ANNOTATION`] annotation.
//!
//! Kubernetes timestamps on objects have one-second resolution, which cannot show where the
//! milliseconds of a start went. The scheduler and the node agent therefore record their own
//! instants here with microsecond resolution:
//!
//! - the embedded scheduler puts [`QUEUED_AT`] (when it first saw the pending pod, which is within
//!   a watch delivery of its creation) and [`SCHEDULED_AT`] (when it decided) on the `Binding`,
//!   and the API server copies a Binding's annotations onto the pod, as upstream does;
//! - the node agent writes the whole [`Timeline`] once the pod is Ready (or has failed to start).
//!
//! `kinetic trace` reads it back. All instants are RFC 3339 in UTC.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Annotation holding the JSON [`Timeline`] written by the node agent.
pub const ANNOTATION: &str = "kinetic.dev/timeline";
/// Annotation (set through the Binding) with the instant the scheduler first saw the pod.
pub const QUEUED_AT: &str = "kinetic.dev/queued-at";
/// Annotation (set through the Binding) with the instant the scheduler bound the pod.
pub const SCHEDULED_AT: &str = "kinetic.dev/scheduled-at";

/// Where the time of one pod's start went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    /// When the scheduler first saw the pod (else the pod's creationTimestamp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<Timestamp>,
    /// When the pod was bound to its node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<Timestamp>,
    /// When the node agent first saw the bound pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<Timestamp>,
    /// When the pod's sandbox (network namespace with its IP, volumes) was ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_ready: Option<Timestamp>,
    /// Init containers first, in order, then the app containers in spec order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerTimeline>,
    /// When the pod's Ready condition first became true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<Timestamp>,
}

/// The start of one container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerTimeline {
    pub name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_started: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_finished: Option<Timestamp>,
    /// Bytes downloaded for this container's image (0 when every layer was already present).
    #[serde(default)]
    pub pull_bytes: u64,
    /// True when the image was already in the node's store.
    #[serde(default)]
    pub cache_hit: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Timestamp>,
    /// When the container became ready (init containers: when they completed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_microseconds() {
        let t: Timestamp = "2026-11-22T10:00:00.123456Z".parse().unwrap();
        let tl = Timeline {
            created: Some(t),
            containers: vec![ContainerTimeline { name: "web".into(), ..Default::default() }],
            ..Default::default()
        };
        let s = serde_json::to_string(&tl).unwrap();
        assert_eq!(
            s,
            r#"{"created":"2026-11-22T10:00:00.123456Z","containers":[{"name":"web","pullBytes":0,"cacheHit":false}]}"#
        );
        assert_eq!(serde_json::from_str::<Timeline>(&s).unwrap(), tl);
    }
}
