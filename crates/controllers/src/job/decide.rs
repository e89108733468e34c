//! One Job's next step as a pure function of the Job, its pods and the time (upstream
//! `pkg/controller/job/job_controller.go` `syncJob` and `manageJob`, v1.35): which pods to
//! create (and with which completion index), which active pods to delete, the new status with
//! its conditions, the Events of the transitions, when to look again, and whether the Job's
//! `ttlSecondsAfterFinished` has run out. The end is decided in upstream's order: an earlier
//! pass's `SuccessCriteriaMet` or `FailureTarget`, a `podFailurePolicy` `FailJob` rule
//! ([`super::policy`]), `backoffLimit`, `activeDeadlineSeconds`, `maxFailedIndexes` and failed
//! indexes (`backoffLimitPerIndex`), a `successPolicy` rule, then `completions`
//! ([`super::indexes`]).
//!
//! Kinetic counts finished pods from the pods themselves and never lets a count go down
//! (`max(status, pods)`), where upstream tracks them with the `batch.kubernetes.io/job-tracking`
//! finalizer: a finished pod someone deletes is not counted twice, but one deleted before this
//! controller saw it finish is not counted at all.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::indexes;
use super::policy;

/// Annotation and label with an Indexed Job pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// Upstream's `DefaultJobPodFailureBackOff` and `MaxJobPodFailureBackOff`.
pub const POD_FAILURE_BACKOFF: Duration = Duration::from_secs(10);
pub const MAX_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(600);
/// At most this many pod creations or deletions per pass (upstream's `MaxBatchSize`-like cap).
const BURST: usize = 500;

/// What one pass does.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Pods to create: the completion index of each (Indexed) or `None` (NonIndexed).
    pub create: Vec<Option<i32>>,
    /// With `backoffLimitPerIndex`: the (failure, ignored failure) counts each created index's
    /// pod carries in its annotations.
    pub index_failures: std::collections::BTreeMap<i32, (i32, i32)>,
    /// Names of active pods to delete.
    pub delete: Vec<String>,
    pub status: JobStatus,
    /// Events of the transitions this pass makes: (type, reason, message).
    pub events: Vec<(&'static str, String, String)>,
    pub requeue: Option<Duration>,
    /// The Job finished more than `ttlSecondsAfterFinished` ago: delete it.
    pub delete_job: bool,
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn terminal(p: &Pod) -> bool {
    matches!(phase(p), "Succeeded" | "Failed")
}

fn deleting(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pod's completion index, from its annotation.
pub fn index_of(p: &Pod) -> Option<i32> {
    p.metadata.annotations.as_ref()?.get(COMPLETION_INDEX)?.parse().ok()
}

/// When a finished pod finished: its containers' last `finishedAt`, else its creation.
fn finished_at(p: &Pod) -> Option<Timestamp> {
    let st = p.status.as_ref();
    let ends =
        st.and_then(|s| s.container_statuses.as_ref()).into_iter().flatten().filter_map(|c| {
            c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref().map(|t| t.0)
        });
    ends.max().or_else(|| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Restarts of a pod's containers (`pastBackoffLimitOnFailure` counts init containers too).
fn restarts(p: &Pod) -> i64 {
    let st = p.status.as_ref();
    let a = st.and_then(|s| s.container_statuses.as_ref()).into_iter().flatten();
    let b = st.and_then(|s| s.init_container_statuses.as_ref()).into_iter().flatten();
    a.chain(b).map(|c| i64::from(c.restart_count)).sum()
}

pub fn condition<'a>(st: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    st.conditions.iter().flatten().find(|c| c.type_ == type_ && c.status == "True")
}

/// Whether the Job has its final condition (`IsJobFinished`).
pub fn finished(st: &JobStatus) -> bool {
    condition(st, "Complete").is_some() || condition(st, "Failed").is_some()
}

fn cond(type_: &str, status: &str, reason: &str, message: &str, now: Timestamp) -> JobCondition {
    JobCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Sets condition `type_` to `status` unless it already has it; whether it changed.
fn set_cond(
    st: &mut JobStatus,
    type_: &str,
    status: &str,
    reason: &str,
    msg: &str,
    now: Timestamp,
) -> bool {
    let list = st.conditions.get_or_insert_with(Vec::new);
    match list.iter_mut().find(|c| c.type_ == type_) {
        Some(c) if c.status == status => false,
        Some(c) => {
            *c = cond(type_, status, reason, msg, now);
            true
        }
        None => {
            list.push(cond(type_, status, reason, msg, now));
            true
        }
    }
}

fn until(t: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// One pass of the Job controller over `job` and the pods it controls.
#[allow(clippy::too_many_lines)]
pub fn plan(job: &Job, pods: &[&Pod], now: Timestamp) -> Plan {
    let spec = job.spec.clone().unwrap_or_default();
    let old = job.status.clone().unwrap_or_default();
    let mut plan = Plan { status: old.clone(), ..Plan::default() };
    if finished(&old) {
        // The TTL-after-finished controller's part: the time runs from the final condition.
        if let Some(ttl) = spec.ttl_seconds_after_finished {
            let done = ["Complete", "Failed"]
                .iter()
                .find_map(|t| condition(&old, t))
                .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0))
                .or(old.completion_time.as_ref().map(|t| t.0))
                .unwrap_or(now);
            let expire = done.checked_add(SignedDuration::from_secs(i64::from(ttl))).unwrap_or(now);
            if expire <= now {
                plan.delete_job = true;
            } else {
                plan.requeue = Some(until(expire, now));
            }
        }
        return plan;
    }
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let per_index = indexed && spec.backoff_limit_per_index.is_some();
    let pfp = spec.pod_failure_policy.as_ref();
    let parallelism = usize::try_from(spec.parallelism.unwrap_or(1).max(0)).unwrap_or(0);
    let completions = spec.completions.map(|c| usize::try_from(c.max(0)).unwrap_or(0));
    let limit = spec.completions.unwrap_or(0).max(0);
    let in_range = |i: &i32| (0..limit).contains(i);
    let active: Vec<&Pod> = pods.iter().copied().filter(|p| !terminal(p) && !deleting(p)).collect();
    let terminating = pods.iter().filter(|p| !terminal(p) && deleting(p)).count();
    let succeeded_pods: Vec<&Pod> =
        pods.iter().copied().filter(|p| phase(p) == "Succeeded").collect();
    let failed_pods: Vec<&Pod> = pods.iter().copied().filter(|p| phase(p) == "Failed").collect();
    let mut done_indexes = BTreeSet::new();
    if indexed {
        done_indexes = indexes::parse(old.completed_indexes.as_deref().unwrap_or(""), limit);
        done_indexes.extend(succeeded_pods.iter().filter_map(|p| index_of(p)).filter(in_range));
    }
    // `backoffLimitPerIndex`: indexes failed for good (`calculateFailedIndexes`).
    let mut failed_indexes = BTreeSet::new();
    if per_index {
        failed_indexes = indexes::parse(old.failed_indexes.as_deref().unwrap_or(""), limit);
        failed_indexes.extend(
            failed_pods
                .iter()
                .filter(|p| indexes::index_failed(job, p))
                .filter_map(|p| index_of(p))
                .filter(in_range),
        );
        failed_indexes.retain(|i| !done_indexes.contains(i));
    }
    let succeeded = if indexed {
        done_indexes.len()
    } else {
        succeeded_pods.len().max(usize::try_from(old.succeeded.unwrap_or(0)).unwrap_or(0))
    };
    // Failures an `Ignore` rule matched count nowhere (`nonIgnoredFailedPodsCount`).
    let counted = failed_pods.iter().filter(|p| policy::matches(pfp, p).counts).count();
    let failed = counted.max(usize::try_from(old.failed.unwrap_or(0)).unwrap_or(0));
    let st = &mut plan.status;
    st.succeeded = i32::try_from(succeeded).ok().filter(|n| *n > 0);
    st.failed = i32::try_from(failed).ok().filter(|n| *n > 0);
    st.terminating = i32::try_from(terminating).ok();
    if indexed {
        st.completed_indexes = Some(indexes::format(&done_indexes));
    }
    if per_index {
        st.failed_indexes = Some(indexes::format(&failed_indexes));
    }
    let set_active = |st: &mut JobStatus, n: usize, ready: usize| {
        st.active = i32::try_from(n).ok().filter(|n| *n > 0);
        st.ready = i32::try_from(ready).ok();
    };
    let ready_n = active.iter().filter(|p| ready(p)).count();
    set_active(st, active.len(), ready_n);

    // Suspension (KEP-2232): active pods go, the condition says so; resuming restarts the clock.
    if spec.suspend == Some(true) {
        plan.delete = active.iter().map(|p| p.metadata.name.clone().unwrap_or_default()).collect();
        if set_cond(st, "Suspended", "True", "JobSuspended", "Job suspended", now) {
            plan.events.push(("Normal", "Suspended".into(), "Job suspended".into()));
        }
        return plan;
    }
    if condition(st, "Suspended").is_some() {
        set_cond(st, "Suspended", "False", "JobResumed", "Job resumed", now);
        plan.events.push(("Normal", "Resumed".into(), "Job resumed".into()));
        st.start_time = Some(Time(now));
    }
    let start = st.start_time.get_or_insert(Time(now)).clone();

    let backoff_limit = i64::from(spec.backoff_limit.unwrap_or(6));
    let on_failure =
        spec.template.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("OnFailure");
    let restarts: i64 = active.iter().map(|p| restarts(p)).sum();
    let past_restarts =
        on_failure && if backoff_limit == 0 { restarts > 0 } else { restarts >= backoff_limit };
    let deadline = spec
        .active_deadline_seconds
        .and_then(|s| start.0.checked_add(SignedDuration::from_secs(s)).ok());
    let max_failed = spec.max_failed_indexes.and_then(|m| usize::try_from(m).ok());
    let kept = |c: &JobCondition| {
        (c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default())
    };
    let owned = |r: &str, m: &str| (r.to_owned(), m.to_owned());
    // The end, in upstream's order (`syncJob`): the interim conditions of an earlier pass, the
    // pod failure policy, the backoff limit, the deadline, failed indexes, then success.
    let end = if let Some(c) = condition(st, "SuccessCriteriaMet") {
        Some((true, kept(c)))
    } else if let Some(c) = condition(st, "FailureTarget") {
        Some((false, kept(c)))
    } else if let Some(msg) = failed_pods.iter().find_map(|p| policy::matches(pfp, p).fail_job) {
        Some((false, ("PodFailurePolicy".to_owned(), msg)))
    } else if i64::try_from(failed).unwrap_or(i64::MAX) > backoff_limit || past_restarts {
        Some((false, owned("BackoffLimitExceeded", "Job has reached the specified backoff limit")))
    } else if deadline.is_some_and(|d| d <= now) {
        Some((false, owned("DeadlineExceeded", "Job was active longer than specified deadline")))
    } else if per_index && max_failed.is_some_and(|m| failed_indexes.len() > m) {
        let msg = "Job has exceeded the specified maximal number of failed indexes";
        Some((false, owned("MaxFailedIndexesExceeded", msg)))
    } else if per_index
        && !failed_indexes.is_empty()
        && failed_indexes.len() + done_indexes.len() >= completions.unwrap_or(0)
    {
        Some((false, owned("FailedIndexes", "Job has failed indexes")))
    } else if let Some(msg) = indexed
        .then(|| indexes::success_policy(spec.success_policy.as_ref(), limit, &done_indexes))
        .flatten()
    {
        Some((true, ("SuccessPolicy".to_owned(), msg)))
    } else if match completions {
        Some(c) => succeeded >= c,
        // A work queue: done once one pod succeeded and none is left running.
        None => succeeded > 0 && active.is_empty(),
    } {
        Some((true, owned("CompletionsReached", "Reached expected number of succeeded pods")))
    } else {
        None
    };
    if let Some((success, (reason, msg))) = end {
        // Every pod still running goes; the final condition waits until none is left (v1.31+).
        plan.delete = active.iter().map(|p| p.metadata.name.clone().unwrap_or_default()).collect();
        let (interim, last) =
            if success { ("SuccessCriteriaMet", "Complete") } else { ("FailureTarget", "Failed") };
        set_cond(st, interim, "True", &reason, &msg, now);
        if active.is_empty() && terminating == 0 {
            set_cond(st, last, "True", &reason, &msg, now);
            if success {
                st.completion_time = Some(Time(now));
                plan.events.push(("Normal", "Completed".into(), "Job completed".into()));
            } else {
                plan.events.push(("Warning", reason, msg));
            }
        } else {
            plan.requeue = Some(Duration::from_secs(1));
        }
        return plan;
    }

    // How many should run (`manageJob`).
    let want = match completions {
        None if succeeded > 0 => active.len(),
        None => parallelism,
        Some(c) => parallelism.min(c.saturating_sub(succeeded)),
    };
    // `podReplacementPolicy: Failed` waits for terminating pods before replacing them.
    let busy = active.len()
        + if spec.pod_replacement_policy.as_deref() == Some("Failed") { terminating } else { 0 };
    if active.len() > want {
        let mut extra = active.clone();
        // Not-ready and newest first, as upstream's `ActivePods` order deletes them.
        extra.sort_by_key(|p| (ready(p), std::cmp::Reverse(p.metadata.creation_timestamp.clone())));
        if indexed {
            extra.sort_by_key(|p| std::cmp::Reverse(index_of(p)));
        }
        plan.delete = extra
            .iter()
            .take(active.len() - want)
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect();
    } else if busy < want {
        // Back-off after failures since the last success (`getRemainingTimeForFailuresCount`);
        // with `backoffLimitPerIndex` each index backs off on its own instead.
        let last_success = succeeded_pods.iter().filter_map(|p| finished_at(p)).max();
        let recent: Vec<Timestamp> = failed_pods
            .iter()
            .filter_map(|p| finished_at(p))
            .filter(|t| last_success.is_none_or(|s| *t > s))
            .collect();
        if let Some(last) = recent.iter().max().filter(|_| !per_index) {
            let exp = u32::try_from(recent.len().saturating_sub(1)).unwrap_or(u32::MAX).min(16);
            let delay = POD_FAILURE_BACKOFF.saturating_mul(2u32.saturating_pow(exp));
            let delay = delay.min(MAX_POD_FAILURE_BACKOFF);
            let at = last
                .checked_add(SignedDuration::try_from(delay).unwrap_or_default())
                .unwrap_or(*last);
            if at > now {
                plan.requeue = Some(until(at, now));
                return with_deadline(plan, deadline, now);
            }
        }
        let n = (want - busy).min(BURST);
        if indexed {
            // `firstPendingIndexes`: neither succeeded, running, failed for good, nor (with
            // `podReplacementPolicy: Failed`) still terminating.
            let mut taken: BTreeSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
            if spec.pod_replacement_policy.as_deref() == Some("Failed") {
                let gone = pods.iter().filter(|p| !terminal(p) && deleting(p));
                taken.extend(gone.filter_map(|p| index_of(p)));
            }
            let pending = (0..limit)
                .filter(|i| !done_indexes.contains(i) && !taken.contains(i))
                .filter(|i| !failed_indexes.contains(i))
                .take(n);
            if per_index {
                let replaced = indexes::replaced(&failed_pods, index_of, finished_at);
                for i in pending {
                    let Some(p) = replaced.get(&i) else {
                        plan.create.push(Some(i));
                        plan.index_failures.insert(i, (0, 0));
                        continue;
                    };
                    let wait = indexes::remaining_backoff(p, finished_at(p), now);
                    if wait.is_zero() {
                        plan.create.push(Some(i));
                        plan.index_failures.insert(i, indexes::next_counts(job, p));
                    } else {
                        plan.requeue = Some(plan.requeue.map_or(wait, |r| r.min(wait)));
                    }
                }
            } else {
                plan.create = pending.map(Some).collect();
            }
        } else {
            plan.create = vec![None; n];
        }
    }
    with_deadline(plan, deadline, now)
}

/// Looks again at the active deadline, if that is sooner than what the plan has.
fn with_deadline(mut plan: Plan, deadline: Option<Timestamp>, now: Timestamp) -> Plan {
    if let Some(d) = deadline {
        let left = until(d, now);
        plan.requeue = Some(plan.requeue.map_or(left, |r| r.min(left)));
    }
    plan
}

#[cfg(test)]
mod tests;
