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
