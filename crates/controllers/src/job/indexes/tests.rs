//! Cases after upstream's `TestMatchSuccessPolicy` (success_policy_test.go),
//! `TestCalculateFailedIndexes`/`TestGetNewIndexFailureCounts` (indexed_job_utils_test.go) and
//! `TestGetRemainingBackoffTime` (backoff_utils_test.go), v1.35.

use serde_json::{Value, json};

use super::*;

fn set(v: &[i32]) -> BTreeSet<i32> {
    v.iter().copied().collect()
}

#[test]
fn intervals_format_and_parse_as_upstream() {
    assert_eq!(format(&set(&[0, 1, 2, 4, 6, 7])), "0-2,4,6,7");
    assert_eq!(format(&set(&[])), "");
    assert_eq!(parse("0-2,4,6,7", 100), set(&[0, 1, 2, 4, 6, 7]));
    // Past completions is dropped, an interval is cut at it, garbage is skipped.
    assert_eq!(parse("1,x,3-9,12", 5), set(&[1, 3, 4]));
}

fn policy(rules: Value) -> SuccessPolicy {
    serde_json::from_value(json!({"rules": rules})).unwrap()
}

#[test]
fn match_success_policy_cases() {
    type Case<'a> = (&'a str, Option<Value>, i32, &'a [i32], Option<&'a str>);
    let cases: Vec<Case> = vec![
        ("successPolicy is null", None, 10, &[0, 1], None),
        (
            "any succeededIndexes are null",
            Some(json!([{"succeededIndexes": "0-2"}])),
            10,
            &[],
            None,
        ),
        (
            "succeededIndexes matched",
            Some(json!([{"succeededIndexes": "0-2"}])),
            10,
            &[0, 1, 2, 5],
            Some("Matched rules at index 0"),
        ),
        (
            "succeededIndexes not all succeeded",
            Some(json!([{"succeededIndexes": "0-2"}])),
            10,
            &[0, 2],
            None,
        ),
        (
            "succeededIndexes and succeededCount matched",
            Some(json!([{"succeededIndexes": "0-4", "succeededCount": 2}])),
            10,
            &[1, 7, 8],
            None,
        ),
        (
            "succeededIndexes and succeededCount met by two of them",
            Some(json!([{"succeededIndexes": "0-4", "succeededCount": 2}])),
            10,
            &[1, 3, 8],
            Some("Matched rules at index 0"),
        ),
        (
            "succeededCount alone",
            Some(json!([{"succeededCount": 3}])),
            10,
            &[4, 5, 9],
            Some("Matched rules at index 0"),
        ),
        (
            "the second rule matched",
            Some(json!([{"succeededIndexes": "9"}, {"succeededIndexes": "0,1"}])),
            10,
            &[0, 1],
            Some("Matched rules at index 1"),
        ),
        (
            "a rule with unparsable indexes is skipped",
            Some(json!([{"succeededIndexes": "x"}, {"succeededCount": 1}])),
            10,
            &[3],
            Some("Matched rules at index 1"),
        ),
    ];
    for (name, rules, completions, succeeded, want) in cases {
        let p = rules.map(policy);
        let got = success_policy(p.as_ref(), completions, &set(succeeded));
        assert_eq!(got.as_deref(), want, "case {name:?}");
    }
}

fn job(extra: Value) -> Job {
    let mut spec = json!({"completionMode": "Indexed", "completions": 4, "backoffLimitPerIndex": 1,
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({"metadata": {"name": "j"}, "spec": spec})).unwrap()
}

fn failed(failures: Option<&str>, ignored: Option<&str>, code: i32) -> Pod {
    let mut ann = json!({"batch.kubernetes.io/job-completion-index": "1"});
    if let Some(f) = failures {
        ann[INDEX_FAILURE_COUNT] = json!(f);
    }
    if let Some(i) = ignored {
        ann[INDEX_IGNORED_FAILURE_COUNT] = json!(i);
    }
    serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "default",
        "annotations": ann},
        "status": {"phase": "Failed", "containerStatuses": [{"name": "c", "image": "", "imageID": "",
            "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": code}}}]}}))
    .unwrap()
}

#[test]
fn index_fails_at_its_backoff_limit_or_on_fail_index() {
    let fail_index = json!({"podFailurePolicy": {"rules": [
        {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [3]}},
        {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [4]}}]}});
    let cases: Vec<(&str, Job, Pod, bool)> = vec![
        (
            "first failure of an index with limit 1",
            job(json!({})),
            failed(Some("0"), None, 1),
            false,
        ),
        ("second failure reaches the limit", job(json!({})), failed(Some("1"), None, 1), true),
        ("no annotation counts as zero", job(json!({})), failed(None, None, 1), false),
        ("garbage annotation counts as zero", job(json!({})), failed(Some("-4"), None, 1), false),
        (
            "limit 0 fails at the first failure",
            job(json!({"backoffLimitPerIndex": 0})),
            failed(None, None, 1),
            true,
        ),
        (
            "FailIndex rule fails the index at once",
            job(fail_index.clone()),
            failed(Some("0"), None, 3),
            true,
        ),
        (
            "an ignored failure never fails the index",
            job(fail_index),
            failed(Some("5"), None, 4),
            false,
        ),
    ];
    for (name, j, p, want) in cases {
        assert_eq!(index_failed(&j, &p), want, "case {name:?}");
    }
}

#[test]
fn replacement_counts_follow_the_policy() {
    let ignore = job(json!({"podFailurePolicy": {"rules": [
        {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [4]}}]}}));
    assert_eq!(next_counts(&job(json!({})), &failed(None, None, 1)), (1, 0));
    assert_eq!(next_counts(&job(json!({})), &failed(Some("2"), Some("1"), 1)), (3, 1));
    assert_eq!(next_counts(&ignore, &failed(Some("2"), Some("1"), 4)), (2, 2));
    assert_eq!(next_counts(&ignore, &failed(Some("2"), None, 1)), (3, 0));
}

#[test]
fn index_backoff_doubles_per_failure() {
    let now: Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
    let done: Timestamp = "2026-01-01T00:09:55Z".parse().unwrap();
    let p = |f: &str| failed(Some(f), None, 1);
    assert_eq!(remaining_backoff(&p("0"), Some(done), now), Duration::from_secs(5));
    assert_eq!(remaining_backoff(&p("1"), Some(done), now), Duration::from_secs(15));
    assert_eq!(remaining_backoff(&p("9"), Some(done), now), Duration::from_secs(595));
    assert_eq!(remaining_backoff(&p("0"), None, now), Duration::ZERO);
}
