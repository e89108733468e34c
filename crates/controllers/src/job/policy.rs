//! A Job's `podFailurePolicy` applied to one failed pod (upstream
//! `pkg/controller/job/pod_failure_policy.go`, v1.35, `matchPodFailurePolicy`): the first rule
//! whose `onExitCodes` or `onPodConditions` matches decides. `FailJob` fails the Job with a
//! message naming the container (or condition) and the rule; `Ignore` does not count the
//! failure against `backoffLimit` (nor an index's `backoffLimitPerIndex`); `Count` counts it as
//! usual; `FailIndex` fails the pod's index at once. No rule matching counts it as usual.

use k8s_openapi::api::batch::v1::{
    PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern,
};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};

/// A rule's `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    FailJob,
    FailIndex,
    Ignore,
    Count,
}

/// What the policy says of one failed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// With `FailJob`: the message of the Job's `FailureTarget` and `Failed` conditions.
    pub fail_job: Option<String>,
    /// Whether the failure counts against the back-off limits (false only for `Ignore`).
    pub counts: bool,
    /// The action of the matching rule, if one matched.
    pub action: Option<Action>,
}

impl Match {
    const UNMATCHED: Match = Match { fail_job: None, counts: true, action: None };
}

/// `matchPodFailurePolicy`: the first matching rule's verdict on `pod`; no policy or no match
/// counts the failure.
pub fn matches(policy: Option<&PodFailurePolicy>, pod: &Pod) -> Match {
    let Some(policy) = policy else { return Match::UNMATCHED };
    let default_status = PodStatus::default();
    let status = pod.status.as_ref().unwrap_or(&default_status);
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    for (index, rule) in policy.rules.iter().enumerate() {
        let action = match rule.action.as_str() {
            "FailJob" => Action::FailJob,
            "FailIndex" => Action::FailIndex,
            "Ignore" => Action::Ignore,
            "Count" => Action::Count,
            // An action this version does not know is skipped, as upstream's switch does.
            _ => continue,
        };
        let message = if let Some(req) = &rule.on_exit_codes {
            let Some(c) = match_exit_codes(status, req) else { continue };
            let code =
                c.state.as_ref().and_then(|s| s.terminated.as_ref()).map_or(0, |t| t.exit_code);
            format!(
                "Container {} for pod {ns}/{name} failed with exit code {code} matching {} rule at index {index}",
                c.name, rule.action
            )
        } else if let Some(patterns) = &rule.on_pod_conditions {
            let Some(t) = match_pod_conditions(status, patterns) else { continue };
            format!(
                "Pod {ns}/{name} has condition {t} matching {} rule at index {index}",
                rule.action
            )
        } else {
            continue;
        };
        return match action {
            Action::FailJob => {
                Match { fail_job: Some(message), counts: true, action: Some(action) }
            }
            Action::Ignore => Match { fail_job: None, counts: false, action: Some(action) },
            Action::Count | Action::FailIndex => {
                Match { fail_job: None, counts: true, action: Some(action) }
            }
        };
    }
    Match::UNMATCHED
}

/// `matchOnExitCodes`: the first terminated container (then init container) with a non-zero
/// exit code the requirement selects.
fn match_exit_codes<'a>(
    status: &'a PodStatus,
    req: &PodFailurePolicyOnExitCodesRequirement,
) -> Option<&'a ContainerStatus> {
    let find = |list: Option<&'a Vec<ContainerStatus>>| {
        list.into_iter().flatten().find(|c| {
            let Some(t) = c.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
                // Still terminating: no exit code to match yet.
                return false;
            };
            req.container_name.as_ref().is_none_or(|n| *n == c.name)
                && t.exit_code != 0
                && match req.operator.as_str() {
                    "In" => req.values.contains(&t.exit_code),
                    "NotIn" => !req.values.contains(&t.exit_code),
                    _ => false,
                }
        })
    };
    find(status.container_statuses.as_ref())
        .or_else(|| find(status.init_container_statuses.as_ref()))
}

/// `matchOnPodConditions`: the type of the first pod condition some pattern names with its
/// status.
fn match_pod_conditions<'a>(
    status: &'a PodStatus,
    patterns: &[PodFailurePolicyOnPodConditionsPattern],
) -> Option<&'a str> {
    status.conditions.iter().flatten().find_map(|c| {
        patterns
            .iter()
            .any(|p| p.type_ == c.type_ && p.status == c.status)
            .then_some(c.type_.as_str())
    })
}

#[cfg(test)]
mod tests;
