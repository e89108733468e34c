//! One BroadcastJob pass as a pure function of the job, the nodes, its pods and `now`
//! (OpenKruise `pkg/controller/broadcastjob/broadcastjob_controller.go` `Reconcile`, v1.9):
//! which nodes are eligible (node name, node selector and required affinity, untolerated
//! NoSchedule/NoExecute taints, cordoned nodes, resources: `checkNodeFitness`), which of them
//! still need a pod within the parallelism, which pods no longer fit, the counts, the phase,
//! the failure policy, the deadline, completion and the TTL.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kinetic_api::kruise::broadcastjob::{
    BroadcastJob, BroadcastJobStatus, CompletionPolicyType, DEFAULT_PARALLELISM, FailurePolicyType,
    JobCondition, phase,
};

use crate::scheduler::fit;

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Nodes to create a pod on, in node-name order.
    pub create_on: Vec<String>,
    /// Pods to delete (active pods of a failed job, pods on nodes that no longer fit).
    pub delete: Vec<String>,
    pub status: BroadcastJobStatus,
    /// Set `spec.paused` (failure policy Pause).
    pub pause: bool,
    pub events: Vec<(&'static str, &'static str, String)>,
    pub requeue: Option<Duration>,
    pub delete_job: bool,
}

fn pod_phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn is_active(p: &Pod) -> bool {
    !matches!(pod_phase(p), "Succeeded" | "Failed") && p.metadata.deletion_timestamp.is_none()
}

/// `isPodFailed`: under restartPolicy OnFailure, more restarts than `restartLimit`.
fn restarted_too_often(limit: i32, p: &Pod) -> bool {
    if p.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) != Some("OnFailure") {
        return false;
    }
    let st = p.status.as_ref();
    let a = st.and_then(|s| s.container_statuses.as_ref()).into_iter().flatten();
    let b = st.and_then(|s| s.init_container_statuses.as_ref()).into_iter().flatten();
    a.chain(b).map(|c| c.restart_count).sum::<i32>() > limit
}

/// The node a pod is for: its `nodeName`, else the `metadata.name` of its required affinity.
pub fn node_of(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = spec.node_name.clone().filter(|n| !n.is_empty()) {
        return Some(n);
    }
    let req = spec.affinity.as_ref()?.node_affinity.as_ref()?;
    let terms =
        &req.required_during_scheduling_ignored_during_execution.as_ref()?.node_selector_terms;
    terms.iter().flat_map(|t| t.match_fields.iter().flatten()).find_map(|f| {
        (f.key == "metadata.name" && f.operator == "In")
            .then(|| f.values.as_ref()?.first().cloned())?
    })
}

/// `checkNodeFitness` of the job's pod (or a mock of it) on `node`.
pub fn fits(pod: &Pod, node: &Node) -> bool {
    let name = node.metadata.name.as_deref().unwrap_or("");
    let wanted = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("");
    if !wanted.is_empty() && wanted != name {
        return false;
    }
    // The mock pod is pinned to this node through `nodeName`, so affinity sees the template's.
    fit::filter(
        &fit::NodeInfo::from_node(node),
        &fit::Usage::default(),
        &fit::PodInfo::from_pod(pod),
    )
    .is_empty()
}

fn mock_pod(job: &BroadcastJob) -> Pod {
    Pod {
        metadata: job.spec.template.metadata.clone().unwrap_or_default(),
        spec: job.spec.template.spec.clone(),
        status: None,
    }
}

fn condition(type_: &str, message: String, now: Timestamp) -> JobCondition {
    JobCondition {
        type_: type_.to_owned(),
        status: "True".to_owned(),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
        reason: Some(type_.to_owned()),
        message: Some(message),
    }
}

pub fn finished(st: &BroadcastJobStatus) -> bool {
    st.conditions
        .iter()
        .flatten()
        .any(|c| matches!(c.type_.as_str(), "Complete" | "Failed") && c.status == "True")
}

/// `finishJob`: the final condition, the completion time, and a look again just after the TTL.
fn finish(plan: &mut Plan, job: &BroadcastJob, type_: &str, message: String, now: Timestamp) {
    plan.status.conditions.get_or_insert_with(Vec::new).push(condition(type_, message, now));
    plan.status.completion_time = Some(Time(now));
    if let Some(ttl) = job.spec.completion_policy.ttl_seconds_after_finished {
        plan.requeue = Some(Duration::from_secs(u64::try_from(ttl).unwrap_or(0) + 1));
    }
}

fn parallelism(job: &BroadcastJob, desired: usize) -> usize {
    let n = match &job.spec.parallelism {
        None => i64::from(DEFAULT_PARALLELISM),
        Some(IntOrString::Int(n)) => i64::from(*n),
        Some(IntOrString::String(s)) => {
            let p: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            // Rounded up, as `GetValueFromIntOrPercent(..., true)`.
            (p * i64::try_from(desired).unwrap_or(0) + 99) / 100
        }
    };
    usize::try_from(n.max(0)).unwrap_or(0)
}

/// One reconcile of `job` over the cluster's `nodes` and the pods it controls.
#[allow(clippy::too_many_lines)]
pub fn plan(job: &BroadcastJob, nodes: &[&Node], pods: &[&Pod], now: Timestamp) -> Plan {
    let old = job.status.clone().unwrap_or_default();
    let mut plan = Plan { status: old.clone(), ..Plan::default() };
    let policy = &job.spec.completion_policy;
    let always = policy.type_.unwrap_or_default() == CompletionPolicyType::Always;
    if finished(&old) {
        if let Some(ttl) = policy.ttl_seconds_after_finished {
            let done = old.completion_time.as_ref().map_or(now, |t| t.0);
            let expire = done.checked_add(SignedDuration::from_secs(i64::from(ttl))).unwrap_or(now);
            if expire <= now {
                plan.delete_job = true;
            } else {
                let left = Duration::try_from(expire.duration_since(now)).unwrap_or_default();
                plan.requeue = Some(left);
            }
        }
        return plan;
    }
    let st = &mut plan.status;
    let start = st.start_time.get_or_insert(Time(now)).clone();
    let deadline = policy
        .active_deadline_seconds
        .filter(|_| always)
        .and_then(|s| start.0.checked_add(SignedDuration::from_secs(s)).ok());
    if let Some(d) = deadline {
        plan.requeue = Some(Duration::try_from(d.duration_since(now)).unwrap_or_default());
    }
    if st.phase.as_deref().is_none_or(str::is_empty) {
        st.phase = Some(phase::RUNNING.to_owned());
    }
    let restart_limit = job.spec.failure_policy.restart_limit;
    let active: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|p| is_active(p) && !restarted_too_often(restart_limit, p))
        .collect();
    let failed: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|p| {
            pod_phase(p) == "Failed" || (is_active(p) && restarted_too_often(restart_limit, p))
        })
        .collect();
    let succeeded = pods.iter().filter(|p| pod_phase(p) == "Succeeded").count();
    let by_node: BTreeMap<String, &Pod> =
        pods.iter().filter_map(|p| Some((node_of(p)?, *p))).collect();
    // `getNodesToRunPod`.
    let mock = mock_pod(job);
    let mut desired: BTreeMap<String, Option<&Pod>> = BTreeMap::new();
    let mut rest = Vec::new();
    let mut misfits = Vec::new();
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        match by_node.get(&name) {
            Some(p) if fits(p, node) => {
                desired.insert(name, Some(*p));
            }
            Some(p) if p.metadata.deletion_timestamp.is_none() => {
                misfits.push(p.metadata.name.clone().unwrap_or_default());
            }
            Some(_) => {}
            None if fits(&mock, node) => {
                desired.insert(name.clone(), None);
                rest.push(name);
            }
            None => {}
        }
    }
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let (mut n_active, mut n_failed) = (active.len(), failed.len());
    st.active = count(n_active);
    st.failed = count(n_failed);
    st.succeeded = count(succeeded);
    st.desired = count(desired.len());
    if st.phase.as_deref() == Some(phase::FAILED) {
        return plan;
    }
    let paused_phase = st.phase.as_deref() == Some(phase::PAUSED);
    if job.spec.paused && (st.phase.as_deref() == Some(phase::RUNNING) || paused_phase) {
        st.phase = Some(phase::PAUSED.to_owned());
        return plan;
    }
    if !job.spec.paused && paused_phase {
        st.phase = Some(phase::RUNNING.to_owned());
        plan.events.push(("Normal", "Continue", "continue to process job".to_owned()));
    }
    let mut failure: Option<(&'static str, String)> = None;
    if n_failed > 0 {
        match job.spec.failure_policy.type_.unwrap_or_default() {
            FailurePolicyType::Pause => {
                plan.events.push((
                    "Warning",
                    "Paused",
                    "job is paused, due to failed pod".to_owned(),
                ));
                plan.pause = true;
                plan.status.phase = Some(phase::PAUSED.to_owned());
                return plan;
            }
            FailurePolicyType::FailFast => {
                failure = Some((
                    "failed pod is found",
                    "failure policy is FailurePolicyTypeFailFast and failed pod is found"
                        .to_owned(),
                ));
            }
            FailurePolicyType::Continue => {}
        }
    }
    if failure.is_none() && always && deadline.is_some_and(|d| d <= now) {
        let (ns, name) = (
            job.metadata.namespace.as_deref().unwrap_or(""),
            job.metadata.name.as_deref().unwrap_or(""),
        );
        failure = Some((
            "DeadlineExceeded",
            format!("Job {ns}/{name} was active longer than specified deadline"),
        ));
    }
    let st = &mut plan.status;
    if let Some((reason, message)) = failure {
        plan.delete = active.iter().filter_map(|p| p.metadata.name.clone()).collect();
        n_failed += plan.delete.len();
        n_active -= plan.delete.len();
        st.phase = Some(phase::FAILED.to_owned());
        st.active = count(n_active);
        st.failed = count(n_failed);
        let summary = format!("{message}: {succeeded} pods succeeded, {n_failed} pods failed");
        finish(&mut plan, job, "Failed", message, now);
        plan.events.push(("Warning", reason, summary));
        return plan;
    }
    // Upstream counts the pods it deletes for no longer fitting as failed (`deleteJobPods`).
    n_failed += misfits.len();
    n_active = n_active.saturating_sub(
        misfits
            .iter()
            .filter(|m| active.iter().any(|p| p.metadata.name.as_ref() == Some(m)))
            .count(),
    );
    plan.status.active = count(n_active);
    plan.status.failed = count(n_failed);
    plan.delete = misfits;
    if job.metadata.deletion_timestamp.is_none() && !rest.is_empty() {
        let limit = parallelism(job, desired.len());
        if n_active < limit {
            plan.create_on = rest.into_iter().take(limit - n_active).collect();
        } else if n_active > limit {
            plan.events.push((
                "Warning",
                "TooManyActivePods",
                "Number of active pods exceed parallelism limit".to_owned(),
            ));
        }
    }
    // `isJobComplete`: every desired node has a pod and none is active.
    let complete = always
        && !desired.is_empty()
        && plan.create_on.is_empty()
        && desired.values().all(|p| p.is_some_and(|p| !is_active(p)));
    if complete {
        let (ns, name) = (
            job.metadata.namespace.as_deref().unwrap_or(""),
            job.metadata.name.as_deref().unwrap_or(""),
        );
        plan.status.phase = Some(phase::COMPLETED.to_owned());
        let msg = format!("Job completed, {succeeded} pods succeeded, {n_failed} pods failed");
        finish(&mut plan, job, "Complete", msg, now);
        plan.events.push((
            "Normal",
            "JobComplete",
            format!(
                "Job {ns}/{name} is completed, {succeeded} pods succeeded, {n_failed} pods failed"
            ),
        ));
    }
    plan
}

#[cfg(test)]
mod tests;
