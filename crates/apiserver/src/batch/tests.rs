use serde_json::json;

use super::{cronjob, job};

fn fields(c: &[crate::error::Cause]) -> Vec<String> {
    c.iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
}

#[test]
fn job_defaults_follow_upstream() {
    let mut j = json!({"metadata": {"name": "pi"},
        "spec": {"template": {"metadata": {"labels": {"app": "pi"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    job::default(&mut j);
    let s = &j["spec"];
    assert_eq!((s["completions"].clone(), s["parallelism"].clone()), (json!(1), json!(1)));
    assert_eq!(s["backoffLimit"], 6);
    assert_eq!(s["completionMode"], "NonIndexed");
    assert_eq!((s["suspend"].clone(), s["manualSelector"].clone()), (json!(false), json!(false)));
    assert_eq!(s["podReplacementPolicy"], "TerminatingOrFailed");
    assert_eq!(j["metadata"]["labels"]["app"], "pi", "labels from the template");
    // A work queue: parallelism alone keeps completions unset.
    let mut w = json!({"spec": {"parallelism": 3, "template": {"spec": {}}}});
    job::default(&mut w);
    assert!(w["spec"].get("completions").is_none());
}

#[test]
fn job_validation_refuses_restart_always_and_indexed_without_completions() {
    let j = json!({"metadata": {"name": "pi", "uid": "u1"},
        "spec": {"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
                 "completionMode": "Indexed", "parallelism": 1,
                 "template": {"metadata": {"labels": {"batch.kubernetes.io/controller-uid": "u1",
                     "controller-uid": "u1", "job-name": "pi", "batch.kubernetes.io/job-name": "pi"}},
                              "spec": {"restartPolicy": "Always",
                                       "containers": [{"name": "c", "image": "busybox"}]}}}});
    let got = fields(&job::validate(&j));
    assert_eq!(
        got,
        vec![
            "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"",
            "spec.completions: Required value: when completion mode is Indexed",
        ],
    );
}

#[test]
fn job_template_and_completions_are_immutable_but_parallelism_is_not() {
    let old = json!({"spec": {"completions": 3, "parallelism": 1, "completionMode": "NonIndexed",
        "template": {"spec": {"containers": [{"name": "c", "image": "a"}]}}}});
    let mut new = old.clone();
    new["spec"]["parallelism"] = json!(2);
    let mut c = Vec::new();
    super::job::validate_update_for_test(&new, &old, &mut c);
    assert!(c.is_empty(), "{c:?}");
    new["spec"]["completions"] = json!(4);
    new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("b");
    super::job::validate_update_for_test(&new, &old, &mut c);
    let got = fields(&c);
    assert_eq!(
        got,
        vec!["spec.completions: Invalid value: 4: field is immutable".to_owned(), got[1].clone()]
    );
    assert!(
        got[1].starts_with("spec.template: Invalid value")
            && got[1].ends_with("field is immutable")
    );
}

#[test]
fn cronjob_defaults_and_validation_follow_upstream() {
    let mut cj = json!({"spec": {"schedule": "@hourly",
        "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure",
            "containers": [{"name": "c", "image": "busybox"}]}}}}}});
    cronjob::default(&mut cj);
    let s = &cj["spec"];
    assert_eq!(s["concurrencyPolicy"], "Allow");
    assert_eq!(s["suspend"], false);
    assert_eq!(
        (s["successfulJobsHistoryLimit"].clone(), s["failedJobsHistoryLimit"].clone()),
        (json!(3), json!(1))
    );
    assert!(cronjob::validate(&cj, None).is_empty());
    let mut bad = cj.clone();
    bad["spec"]["schedule"] = json!("TZ=UTC 0 * * * *");
    bad["spec"]["concurrencyPolicy"] = json!("Sometimes");
    bad["spec"]["timeZone"] = json!("Mars/Olympus");
    let got = fields(&cronjob::validate(&bad, None));
    assert_eq!(
        got,
        vec![
            "spec.schedule: Invalid value: \"TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            "spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone Mars/Olympus",
            "spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\"",
        ]
    );
    let mut bad = cj.clone();
    bad["spec"]["schedule"] = json!("61 * * * *");
    assert_eq!(cronjob::validate(&bad, None)[0].field, "spec.schedule");
}

/// A valid Indexed Job with `extra` merged into its spec.
fn indexed_job(extra: serde_json::Value) -> serde_json::Value {
    let mut j = json!({"metadata": {"name": "pi", "uid": "u1"},
        "spec": {"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
                 "completionMode": "Indexed", "completions": 5, "parallelism": 1,
                 "template": {"metadata": {"labels": {"batch.kubernetes.io/controller-uid": "u1",
                     "controller-uid": "u1", "job-name": "pi", "batch.kubernetes.io/job-name": "pi"}},
                              "spec": {"restartPolicy": "Never",
                                       "initContainers": [{"name": "init", "image": "busybox"}],
                                       "containers": [{"name": "main", "image": "busybox"}]}}}});
    for (k, v) in extra.as_object().unwrap() {
        j["spec"][k] = v.clone();
    }
    j
}

/// Error cases after upstream's `TestValidateJob` (pkg/apis/batch/validation, v1.35).
#[test]
fn job_policies_are_validated_as_upstream() {
    let exit = |action: &str, op: &str, values: serde_json::Value| json!({"rules": [{"action": action, "onExitCodes": {"operator": op, "values": values}}]});
    let cases: Vec<(&str, serde_json::Value, Vec<&str>)> = vec![
        (
            "valid: all three together",
            json!({"backoffLimitPerIndex": 1, "maxFailedIndexes": 2,
                "podFailurePolicy": {"rules": [
                    {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [1, 2, 42]}},
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                    {"action": "FailIndex", "onExitCodes": {"operator": "NotIn", "values": [0]}}]},
                "successPolicy": {"rules": [{"succeededIndexes": "0,2-3", "succeededCount": 2}]}}),
            vec![],
        ),
        (
            "restartPolicy OnFailure with a podFailurePolicy",
            json!({"podFailurePolicy": exit("FailJob", "In", json!([1])),
                "template": {"metadata": {"labels": {"batch.kubernetes.io/controller-uid": "u1",
                    "controller-uid": "u1", "job-name": "pi", "batch.kubernetes.io/job-name": "pi"}},
                    "spec": {"restartPolicy": "OnFailure", "containers": [{"name": "main", "image": "b"}]}}}),
            vec![
                "spec.template.spec.restartPolicy: Invalid value: \"OnFailure\": only \"Never\" is supported when podFailurePolicy is specified",
            ],
        ),
        (
            "FailIndex without backoffLimitPerIndex",
            json!({"podFailurePolicy": exit("FailIndex", "In", json!([1]))}),
            vec![
                "spec.podFailurePolicy.rules[0].action: Invalid value: \"FailIndex\": requires the backoffLimitPerIndex to be set",
            ],
        ),
        (
            "unknown action, unknown operator",
            json!({"podFailurePolicy": exit("UnknownAction", "Bad", json!([1]))}),
            vec![
                "spec.podFailurePolicy.rules[0].action: Unsupported value: \"UnknownAction\": supported values: \"Count\", \"FailIndex\", \"FailJob\", \"Ignore\"",
                "spec.podFailurePolicy.rules[0].onExitCodes.operator: Unsupported value: \"Bad\": supported values: \"In\", \"NotIn\"",
            ],
        ),
        (
            "exit codes: 0 with In, duplicates, unordered",
            json!({"podFailurePolicy": exit("FailJob", "In", json!([3, 0, 3]))}),
            vec![
                "spec.podFailurePolicy.rules[0].onExitCodes.values[1]: Invalid value: 0: must not be 0 for the In operator",
                "spec.podFailurePolicy.rules[0].onExitCodes.values[2]: Duplicate value: 3",
                "spec.podFailurePolicy.rules[0].onExitCodes.values: Invalid value: [3,0,3]: must be ordered",
            ],
        ),
        (
            "exit codes: none, and a container name not in the template",
            json!({"podFailurePolicy": {"rules": [{"action": "Count",
                "onExitCodes": {"containerName": "nope", "operator": "In", "values": []}}]}}),
            vec![
                "spec.podFailurePolicy.rules[0].onExitCodes.containerName: Invalid value: \"nope\": must be one of the container or initContainer names in the pod template",
                "spec.podFailurePolicy.rules[0].onExitCodes.values: Invalid value: []: at least one value is required",
            ],
        ),
        (
            "both and neither of onExitCodes and onPodConditions; bad condition status",
            json!({"podFailurePolicy": {"rules": [
                {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [1]},
                 "onPodConditions": [{"type": "DisruptionTarget", "status": "Maybe"}]},
                {"action": "Ignore"}]}}),
            vec![
                "spec.podFailurePolicy.rules[0].onPodConditions[0].status: Unsupported value: \"Maybe\": supported values: \"False\", \"True\", \"Unknown\"",
                "spec.podFailurePolicy.rules[0]: Invalid value: specifying both OnExitCodes and OnPodConditions is not supported",
                "spec.podFailurePolicy.rules[1]: Invalid value: specifying one of OnExitCodes and OnPodConditions is required",
            ],
        ),
        (
            "podReplacementPolicy must be Failed with a podFailurePolicy",
            json!({"podFailurePolicy": exit("FailJob", "In", json!([1])),
                "podReplacementPolicy": "TerminatingOrFailed"}),
            vec![
                "spec.podReplacementPolicy: Unsupported value: \"TerminatingOrFailed\": supported values: \"Failed\"",
            ],
        ),
        (
            "maxFailedIndexes without backoffLimitPerIndex, above completions",
            json!({"maxFailedIndexes": 6}),
            vec![
                "spec.backoffLimitPerIndex: Required value: when maxFailedIndexes is specified",
                "spec.maxFailedIndexes: Invalid value: 6: must be less than or equal to completions",
            ],
        ),
        (
            "per-index fields and successPolicy need Indexed",
            json!({"completionMode": "NonIndexed", "backoffLimitPerIndex": 1, "maxFailedIndexes": 1,
                "successPolicy": {"rules": [{"succeededCount": 1}]}}),
            vec![
                "spec.backoffLimitPerIndex: Invalid value: 1: requires indexed completion mode",
                "spec.maxFailedIndexes: Invalid value: 1: requires indexed completion mode",
                "spec.successPolicy: Invalid value: {\"rules\":[{\"succeededCount\":1}]}: requires indexed completion mode",
            ],
        ),
        (
            "successPolicy rules",
            json!({"successPolicy": {"rules": [{}, {"succeededIndexes": "3-1"},
                {"succeededIndexes": "0-1", "succeededCount": 3}, {"succeededIndexes": "7"},
                {"succeededCount": 6}]}}),
            vec![
                "spec.successPolicy.rules[0]: Required value: at least one of succeededCount or succeededIndexes must be specified",
                "spec.successPolicy.rules[1].succeededIndexes: Invalid value: \"3-1\": error parsing succeededIndexes: non-increasing order, previous: 3, current: 1",
                "spec.successPolicy.rules[2].succeededCount: Invalid value: 3: must be less than or equal to 2 (the number of indexes in the specified succeededIndexes field)",
                "spec.successPolicy.rules[3].succeededIndexes: Invalid value: \"7\": error parsing succeededIndexes: too large index: \"7\"",
                "spec.successPolicy.rules[4].succeededCount: Invalid value: 6: must be less than or equal to 5 (the number of specified completions)",
            ],
        ),
        (
            "successPolicy without rules",
            json!({"successPolicy": {"rules": []}}),
            vec![
                "spec.successPolicy.rules: Required value: at least one rules must be specified when the successPolicy is specified",
            ],
        ),
    ];
    for (name, extra, want) in cases {
        let got = fields(&job::validate(&indexed_job(extra)));
        assert_eq!(got, want, "case {name:?}");
    }
}

#[test]
fn per_index_defaults_backoff_limit_to_max_int32() {
    let mut j = indexed_job(json!({"backoffLimitPerIndex": 1,
        "podFailurePolicy": {"rules": [{"action": "Ignore",
            "onPodConditions": [{"type": "DisruptionTarget"}]}]}}));
    job::default(&mut j);
    assert_eq!(j["spec"]["backoffLimit"], 2147483647);
    assert_eq!(j["spec"]["podReplacementPolicy"], "Failed");
    assert_eq!(j["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"], "True");
}
