//! An Indexed Job's index bookkeeping (upstream `pkg/controller/job/indexed_job_utils.go`,
//! `success_policy.go` and `backoff_utils.go`, v1.35): the `completedIndexes`/`failedIndexes`
//! interval strings, `successPolicy` rules, and `backoffLimitPerIndex`: each pod carries its
//! index's failure count in `batch.kubernetes.io/job-index-failure-count` (and failures a
//! policy ignored in `…-ignored-failure-count`), an index whose failed pod had reached the
//! limit, or that a `FailIndex` rule hit, is failed for good and never recreated.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, SuccessPolicy};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::policy::{self, Action};

/// Annotations with the failures of a pod's index before it (upstream
/// `JobIndexFailureCountAnnotation`, `JobIndexIgnoredFailureCountAnnotation`).
pub const INDEX_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";
pub const INDEX_IGNORED_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-ignored-failure-count";

/// `orderedIntervals.String`: `"0-2,4,6,7"` — a run of two is written as two entries, as
/// upstream does.
pub fn format(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end = it.next().unwrap_or(end);
        }
        out.push(match end - start {
            0 => start.to_string(),
            1 => format!("{start},{end}"),
            _ => format!("{start}-{end}"),
        });
    }
    out.join(",")
}

/// `parseIndexesFromString`: the indexes below `limit` (what does not parse is skipped).
pub fn parse(s: &str, limit: i32) -> BTreeSet<i32> {
    let mut set = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
            if a < 0 || a >= limit {
                continue;
            }
            set.extend(a..=b.min(limit - 1));
        }
    }
    set
}

/// `matchSuccessPolicy`: the message of the first rule the succeeded indexes meet. A rule with
/// `succeededIndexes` is met when all of them succeeded, or `succeededCount` of them if it has
/// one; a rule with only `succeededCount` when that many indexes succeeded.
pub fn success_policy(
    policy: Option<&SuccessPolicy>,
    completions: i32,
    succeeded: &BTreeSet<i32>,
) -> Option<String> {
    let policy = policy?;
    if succeeded.is_empty() {
        return None;
    }
    policy.rules.iter().enumerate().find_map(|(i, rule)| {
        let met = if let Some(s) = &rule.succeeded_indexes {
            let required = parse(s, completions);
            // A rule whose indexes do not parse is skipped.
            if required.is_empty() {
                return None;
            }
            let contains = required.intersection(succeeded).count();
            match rule.succeeded_count {
                Some(n) => contains >= usize::try_from(n).unwrap_or(0),
                None => contains == required.len(),
            }
        } else if let Some(n) = rule.succeeded_count {
            succeeded.len() >= usize::try_from(n).unwrap_or(0)
        } else {
            false
        };
        met.then(|| format!("Matched rules at index {i}"))
    })
}

fn count_annotation(p: &Pod, key: &str) -> i32 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|n| *n >= 0)
        .unwrap_or(0)
}

/// `getIndexAbsoluteFailureCount`: failures of the pod's index before it, ignored ones too.
fn absolute_failures(p: &Pod) -> i32 {
    count_annotation(p, INDEX_FAILURE_COUNT)
        .saturating_add(count_annotation(p, INDEX_IGNORED_FAILURE_COUNT))
}

/// `isIndexFailed`: a failed pod fails its index when a `FailIndex` rule matches it, or when
/// it counts and its index had already failed `backoffLimitPerIndex` times.
pub fn index_failed(job: &Job, pod: &Pod) -> bool {
    let spec = job.spec.as_ref();
    let limit = spec.and_then(|s| s.backoff_limit_per_index).unwrap_or(0);
    let m = policy::matches(spec.and_then(|s| s.pod_failure_policy.as_ref()), pod);
    m.action == Some(Action::FailIndex)
        || (m.counts && count_annotation(pod, INDEX_FAILURE_COUNT) >= limit)
}

/// Per pending index, the failed pod it replaces (`getPodsWithDelayedDeletionPerIndex`): the
/// one with the most failures, the latest finished among equals.
pub fn replaced<'a>(
    failed: &[&'a Pod],
    index_of: impl Fn(&Pod) -> Option<i32>,
    finished_at: impl Fn(&Pod) -> Option<Timestamp>,
) -> BTreeMap<i32, &'a Pod> {
    let mut out: BTreeMap<i32, &'a Pod> = BTreeMap::new();
    for p in failed {
        let Some(i) = index_of(p) else { continue };
        let newer = out.get(&i).is_none_or(|last| {
            absolute_failures(last) <= absolute_failures(p) && finished_at(p) >= finished_at(last)
        });
        if newer {
            out.insert(i, *p);
        }
    }
    out
}

/// `getNewIndexFailureCounts`: the (failure, ignored failure) counts the replacement of
/// `replaced` carries.
pub fn next_counts(job: &Job, replaced: &Pod) -> (i32, i32) {
    let spec = job.spec.as_ref();
    let mut failures = count_annotation(replaced, INDEX_FAILURE_COUNT);
    let mut ignored = count_annotation(replaced, INDEX_IGNORED_FAILURE_COUNT);
    if policy::matches(spec.and_then(|s| s.pod_failure_policy.as_ref()), replaced).counts {
        failures = failures.saturating_add(1);
    } else {
        ignored = ignored.saturating_add(1);
    }
    (failures, ignored)
}

/// `getRemainingTimePerIndex`: how long the replacement of `replaced` still waits, 10 s doubled
/// for each failure of the index before, at most 10 min, from when it finished.
pub fn remaining_backoff(replaced: &Pod, finished: Option<Timestamp>, now: Timestamp) -> Duration {
    let Some(finished) = finished else { return Duration::ZERO };
    let exp = u32::try_from(absolute_failures(replaced)).unwrap_or(0).min(16);
    let delay = super::decide::POD_FAILURE_BACKOFF
        .saturating_mul(2u32.saturating_pow(exp))
        .min(super::decide::MAX_POD_FAILURE_BACKOFF);
    let at = finished
        .checked_add(SignedDuration::try_from(delay).unwrap_or_default())
        .unwrap_or(finished);
    Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests;
