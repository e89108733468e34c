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
    /// The CPU the sandbox's set-up cost: the agent's and the network plugins'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_cpu: Option<CpuTime>,
    /// The pod claimed a sandbox the node made ahead of it (a ready sandbox) instead of
    /// making one on its start path; `sandbox_cpu` is then the claim's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ready_sandbox: bool,
    /// Init containers first, in order, then the app containers in spec order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerTimeline>,
    /// When the pod's Ready condition first became true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<Timestamp>,
    /// A pool pod's specialisation after a claim (issue 12 part 3), when it had one. The
    /// fields above stay those of the pool pod's own start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specialization: Option<Specialization>,
    /// The pod's latest in-place container restart (a new image or env from metadata, issue
    /// 14): written again after each one, when the restarted container is ready. The fields
    /// above stay those of the pod's own start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartTimeline>,
}

/// One in-place restart of a container by the node agent, step by step. Every instant is
/// taken in the agent, so `observed` → `started` is the restart's time in the agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestartTimeline {
    pub container: String,
    /// The attempt this restart started (the container's run number on the node).
    pub attempt: u32,
    /// When the agent's pass over the pod saw the container's changed definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<Timestamp>,
    /// When the old run's init process was sent SIGTERM (after any preStop hook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signalled: Option<Timestamp>,
    /// When the agent saw the old run's exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exited: Option<Timestamp>,
    /// When the new image was found (or pulled) and the container's configuration (referenced
    /// objects, service variables, env) resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configured: Option<Timestamp>,
    /// When the new run's overlay rootfs was mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<Timestamp>,
    /// When its `config.json` was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<Timestamp>,
    /// When the runtime reported the new run's init process started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Timestamp>,
    /// When the agent wrote the new run's Running state to the pod status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<Timestamp>,
    /// When the container was ready again (its first successful readiness probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<Timestamp>,
    /// The CPU of the new run's start (the shim's, the runtime's, the container init's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuTime>,
}

/// The specialisation of a claimed pool pod into its claimant's container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Specialization {
    /// The claim (from the pod's `kinetic.dev/claimed-at` annotation, written by the claimant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed: Option<Timestamp>,
    /// When the node agent saw the claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<Timestamp>,
    /// Specialisation by code: when the code image's layers were in the pod's volume (pulled
    /// and unpacked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpacked: Option<Timestamp>,
    /// When the claimant's container was started in the pod (runc had started it); by code,
    /// when the runtime accepted the specialise call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specialized: Option<Timestamp>,
    /// When the pod was Ready again as the claimant's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<Timestamp>,
    /// The claimant's container image (by code: the code image).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// Why the specialisation failed (the pod is then marked for the pool to delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
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
    /// The CPU this container's start cost (its image pull's, when there was one, included in
    /// the agent's figure), from the agent starting it to runc having started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuTime>,
}

/// CPU time (user + system) of one step of a start, in microseconds, by who spent it. Zero
/// parts are left out of the JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuTime {
    /// The agent's threads while they ran this step's task (its own code; not other tasks it
    /// waited on, such as the API client's connection).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub agent_us: u64,
    /// The network plugins and `ip` run for the sandbox, until they exited; with native
    /// networking, the agent's thread that makes the pod's namespace and wires it over netlink.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub network_us: u64,
    /// The container's shim, from its exec to its report that the container runs.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shim_us: u64,
    /// `runc run -d` with the `runc init` stages it reaped.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub runc_us: u64,
    /// The container's init process when runc returned: runc's last `runc init` stage before
    /// it executed the entrypoint, plus the entrypoint's first instants.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub init_us: u64,
}

impl CpuTime {
    /// All processes together.
    pub fn total_us(&self) -> u64 {
        self.agent_us + self.network_us + self.shim_us + self.runc_us + self.init_us
    }

    /// The processes other than the agent.
    pub fn children_us(&self) -> u64 {
        self.total_us() - self.agent_us
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(v: &u64) -> bool {
    *v == 0
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
