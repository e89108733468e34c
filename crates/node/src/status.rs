//! The pod status the agent reports, computed from the spec and its record the way kubelet's
//! `generateAPIPodStatus` does: phase, the conditions kubelet owns, container statuses.
//!
//! Only the conditions kubelet owns are written (PodReadyToStartContainers, Initialized,
//! ContainersReady, Ready); the patch merges conditions by type, so conditions written by
//! others (PodScheduled by the scheduler, readiness gates by controllers) are kept.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::runtime::Kind;
use crate::state::{CState, Container, PodRecord};

/// Kubernetes `Time`: RFC 3339 with whole seconds.
pub fn time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// "Succeeded" or "Failed" once the pod can run nothing more.
pub fn terminal_phase(pod: &Pod, rec: &PodRecord) -> Option<&'static str> {
    let spec = pod.spec.as_ref()?;
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let exit = |name: &str| match rec.containers.get(name).map(|c| &c.state) {
        Some(CState::Terminated(t)) => Some(t.exit_code),
        _ => None,
    };
    // A failed init container under Never fails the pod.
    if policy == "Never" {
        for c in spec.init_containers.iter().flatten() {
            if exit(&c.name).is_some_and(|code| code != 0) {
                return Some("Failed");
            }
        }
    }
    if policy == "Always" {
        return None;
    }
    let codes: Vec<Option<i32>> = spec.containers.iter().map(|c| exit(&c.name)).collect();
    if codes.is_empty() || codes.iter().any(Option::is_none) {
        return None;
    }
    let all_ok = codes.iter().all(|c| *c == Some(0));
    match policy {
        "OnFailure" if all_ok => Some("Succeeded"),
        "OnFailure" => None,
        _ if all_ok => Some("Succeeded"),
        _ => Some("Failed"),
    }
}

/// True when the status's Ready condition is true.
pub fn is_ready(status: &Value) -> bool {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn container_status(
    runtime: Kind,
    uid: &str,
    name: &str,
    image: &str,
    c: Option<&Container>,
) -> Value {
    let Some(c) = c else {
        return json!({
            "name": name, "image": image, "imageID": "", "ready": false, "started": false,
            "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}},
        });
    };
    let terminated = |t: &crate::state::Terminated| {
        let mut v = json!({
            "exitCode": t.exit_code, "reason": t.reason,
            "finishedAt": time(t.finished_at), "containerID": t.container_id,
        });
        if let Some(s) = t.started_at {
            v["startedAt"] = json!(time(s));
        }
        if !t.message.is_empty() {
            v["message"] = json!(t.message);
        }
        json!({"terminated": v})
    };
    let state = match &c.state {
        CState::Waiting { reason, message } => {
            let mut w = json!({"reason": reason});
            if !message.is_empty() {
                w["message"] = json!(message);
            }
            json!({"waiting": w})
        }
        CState::Running { started_at, .. } => json!({"running": {"startedAt": time(*started_at)}}),
        CState::Terminated(t) => terminated(t),
    };
    let mut v = json!({
        "name": name,
        // The image the current run was started from: during an in-place update this stays
        // the old image until the new one runs, which is how controllers see completion.
        "image": if c.image.is_empty() { image } else { &c.image },
        "imageID": c.image_id,
        "ready": c.ready,
        "started": matches!(c.state, CState::Running { .. }) && c.started,
        "restartCount": c.restart_count,
        "state": state,
        "lastState": c.last.as_ref().map_or(json!({}), terminated),
    });
    if let CState::Running { .. } | CState::Terminated(_) = c.state
        && c.attempt > 0
    {
        v["containerID"] = json!(runtime.container_id(&format!("{uid}-{name}-{}", c.attempt)));
    }
    v
}

/// The `status` object for `pod` on a node whose containers `runtime` runs.
pub fn build(pod: &Pod, rec: &PodRecord, host_ip: &str, runtime: Kind) -> Value {
    let Some(spec) = pod.spec.as_ref() else { return json!({}) };
    let old = pod.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let now = time(Timestamp::now());
    let cond = |t: &str, ok: bool, reason: Option<&str>, message: Option<String>| {
        let status = if ok { "True" } else { "False" };
        let since = old
            .iter()
            .find(|c| c.type_ == t && c.status == status)
            .and_then(|c| c.last_transition_time.as_ref())
            .map_or_else(|| now.clone(), |t| time(t.0));
        // An absent reason or message is written as `null`: the status patch merges conditions
        // by type, field by field, so leaving them out would keep the reason of an earlier
        // False (the agent's own, or the one a workload wrote with its readiness gate).
        json!({"type": t, "status": status, "lastProbeTime": null, "lastTransitionTime": since,
               "reason": reason, "message": message})
    };
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    let init_done = inits.iter().all(|c| {
        matches!(rec.containers.get(&c.name).map(|c| &c.state), Some(CState::Terminated(t)) if t.exit_code == 0)
    });
    let phase = terminal_phase(pod, rec).unwrap_or_else(|| {
        let any_started = spec
            .containers
            .iter()
            .any(|c| rec.containers.get(&c.name).is_some_and(|c| c.attempt > 0));
        if init_done && any_started { "Running" } else { "Pending" }
    });
    let not_ready: Vec<&str> = spec
        .containers
        .iter()
        .filter(|c| !rec.containers.get(&c.name).is_some_and(|c| c.ready))
        .map(|c| c.name.as_str())
        .collect();
    let containers_ready = not_ready.is_empty();
    let list = |v: &[&str]| format!("[{}]", v.join(" "));
    let completed = phase == "Succeeded" || phase == "Failed";
    let (cr_reason, cr_msg) = if completed {
        (Some("PodCompleted"), None)
    } else if containers_ready {
        (None, None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!("containers with unready status: {}", list(&not_ready))),
        )
    };
    // Ready also needs every readiness gate's condition to be True (set by others).
    let missing_gate = spec.readiness_gates.iter().flatten().find_map(|g| {
        let c = old.iter().find(|c| c.type_ == g.condition_type);
        match c {
            None => Some(format!(
                "corresponding condition of pod readiness gate \"{}\" does not exist.",
                g.condition_type
            )),
            Some(c) if c.status != "True" => Some(format!(
                "the status of pod readiness gate \"{}\" is not \"True\", but {}",
                g.condition_type, c.status
            )),
            Some(_) => None,
        }
    });
    let ready = containers_ready && missing_gate.is_none() && !completed;
    let (r_reason, r_msg) = if completed {
        (Some("PodCompleted"), None)
    } else if !containers_ready {
        (cr_reason, cr_msg.clone())
    } else if let Some(m) = missing_gate {
        (Some("ReadinessGatesNotReady"), Some(m))
    } else {
        (None, None)
    };
    let not_init: Vec<&str> = inits
        .iter()
        .filter(|c| !matches!(rec.containers.get(&c.name).map(|c| &c.state), Some(CState::Terminated(t)) if t.exit_code == 0))
        .map(|c| c.name.as_str())
        .collect();
    let conditions = vec![
        cond("PodReadyToStartContainers", rec.ip.is_some(), None, None),
        if init_done {
            cond(
                "Initialized",
                true,
                if completed && !inits.is_empty() { Some("PodCompleted") } else { None },
                None,
            )
        } else {
            cond(
                "Initialized",
                false,
                Some("ContainersNotInitialized"),
                Some(format!("containers with incomplete status: {}", list(&not_init))),
            )
        },
        cond("ContainersReady", containers_ready && !completed, cr_reason, cr_msg),
        cond("Ready", ready, r_reason, r_msg),
    ];
    let statuses = |cs: &[k8s_openapi::api::core::v1::Container]| -> Vec<Value> {
        cs.iter()
            .map(|c| {
                container_status(
                    runtime,
                    &rec.uid,
                    &c.name,
                    c.image.as_deref().unwrap_or_default(),
                    rec.containers.get(&c.name),
                )
            })
            .collect()
    };
    let mut st = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "containerStatuses": statuses(&spec.containers),
        "qosClass": qos_class(pod),
    });
    if !inits.is_empty() {
        st["initContainerStatuses"] = json!(statuses(inits));
    }
    if let Some(ip) = &rec.ip {
        st["podIP"] = json!(ip);
        st["podIPs"] = json!([{"ip": ip}]);
    }
    if let Some(t) = rec.start_time {
        st["startTime"] = json!(time(t));
    }
    st
}

/// Guaranteed when every container has equal cpu and memory requests and limits, BestEffort
/// when none has any, Burstable otherwise.
fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = &pod.spec else { return "BestEffort" };
    let all: Vec<_> = spec.init_containers.iter().flatten().chain(&spec.containers).collect();
    let any = all.iter().any(|c| {
        c.resources.as_ref().is_some_and(|r| {
            r.requests.as_ref().is_some_and(|m| !m.is_empty())
                || r.limits.as_ref().is_some_and(|m| !m.is_empty())
        })
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = all.iter().all(|c| {
        let Some(r) = &c.resources else { return false };
        let lim = r.limits.clone().unwrap_or_default();
        let req = r.requests.clone().unwrap_or_default();
        ["cpu", "memory"].iter().all(|k| match (lim.get(*k), req.get(*k).or(lim.get(*k))) {
            (Some(l), Some(q)) => l == q,
            _ => false,
        })
    });
    if guaranteed { "Guaranteed" } else { "Burstable" }
}
