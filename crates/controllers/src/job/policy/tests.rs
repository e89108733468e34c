//! Cases after upstream's `TestMatchPodFailurePolicy` (pod_failure_policy_test.go, v1.35).

use serde_json::{Value, json};

use super::*;

fn pod(status: Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"namespace": "default", "name": "mypod"},
        "status": status}))
    .unwrap()
}

/// A failed pod whose containers exited with these (name, code).
fn exited(codes: &[(&str, i32)]) -> Pod {
    let cs: Vec<Value> = codes
        .iter()
        .map(|(n, c)| {
            json!({"name": n, "image": "", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"terminated": {"exitCode": c}}})
        })
        .collect();
    pod(json!({"phase": "Failed", "containerStatuses": cs}))
}

fn with_condition(type_: &str, status: &str) -> Pod {
    pod(json!({"phase": "Failed", "conditions": [{"type": type_, "status": status}]}))
}

fn exit_rule(action: &str, op: &str, values: &[i32]) -> Value {
    json!({"action": action, "onExitCodes": {"operator": op, "values": values}})
}

fn cond_rule(action: &str, status: &str) -> Value {
    json!({"action": action, "onPodConditions": [{"type": "DisruptionTarget", "status": status}]})
}

#[test]
fn match_pod_failure_policy_cases() {
    let msg = |c: &str, code: i32, i: usize| {
        Some(format!(
            "Container {c} for pod default/mypod failed with exit code {code} matching FailJob rule at index {i}"
        ))
    };
    let main2 = exited(&[("main-container", 2)]);
    type Case<'a> = (&'a str, Option<Value>, Pod, Option<String>, bool, Option<Action>);
    let cases: Vec<Case> = vec![
        (
            "unknown action for rule matching by exit codes - skip rule with unknown action",
            Some(json!([
                exit_rule("UnknownAction", "In", &[1, 2]),
                exit_rule("FailJob", "In", &[2, 3])
            ])),
            main2.clone(),
            msg("main-container", 2, 1),
            true,
            Some(Action::FailJob),
        ),
        (
            "unknown action for rule matching by pod conditions - skip rule with unknown action",
            Some(json!([cond_rule("UnkonwnAction", "True"), cond_rule("Ignore", "True")])),
            with_condition("DisruptionTarget", "True"),
            None,
            false,
            Some(Action::Ignore),
        ),
        (
            "unknown operator - rule with unknown action is skipped for onExitCodes",
            Some(json!([
                exit_rule("Ignore", "UnknownOperator", &[1, 2]),
                exit_rule("FailJob", "In", &[2, 3])
            ])),
            main2.clone(),
            msg("main-container", 2, 1),
            true,
            Some(Action::FailJob),
        ),
        ("no policy rules", None, exited(&[("", 2)]), None, true, None),
        (
            "ignore rule matched for exit codes",
            Some(json!([exit_rule("Ignore", "In", &[1, 2, 3])])),
            exited(&[("", 2)]),
            None,
            false,
            Some(Action::Ignore),
        ),
        (
            "FailJob rule matched for exit codes",
            Some(json!([exit_rule("FailJob", "In", &[1, 2, 3])])),
            main2.clone(),
            msg("main-container", 2, 0),
            true,
            Some(Action::FailJob),
        ),
        (
            "successful containers are skipped by the rules",
            Some(json!([exit_rule("FailJob", "NotIn", &[111])])),
            exited(&[("main-container", 111), ("suppport-container", 0)]),
            None,
            true,
            None,
        ),
        (
            "FailIndex rule matched for exit codes",
            Some(json!([exit_rule("FailIndex", "In", &[1, 2, 3])])),
            exited(&[("", 2)]),
            None,
            true,
            Some(Action::FailIndex),
        ),
        (
            "pod failure policy with NotIn operator and value 0",
            Some(json!([exit_rule("FailJob", "NotIn", &[0])])),
            exited(&[("main-container", 1), ("suppport-container", 0)]),
            msg("main-container", 1, 0),
            true,
            Some(Action::FailJob),
        ),
        (
            "second jobfail rule matched for exit codes",
            Some(json!([
                exit_rule("Count", "In", &[1, 2, 3]),
                exit_rule("FailJob", "In", &[4, 5, 6])
            ])),
            exited(&[("main-container", 6)]),
            msg("main-container", 6, 1),
            true,
            Some(Action::FailJob),
        ),
        (
            "count rule matched for exit codes",
            Some(json!([exit_rule("Count", "In", &[1, 2, 3])])),
            exited(&[("bar", 2)]),
            None,
            true,
            Some(Action::Count),
        ),
        (
            "FailIndex rule matched for pod conditions",
            Some(json!([cond_rule("FailIndex", "True")])),
            with_condition("DisruptionTarget", "True"),
            None,
            true,
            Some(Action::FailIndex),
        ),
        (
            "ignore rule matched for pod conditions",
            Some(json!([cond_rule("Ignore", "True")])),
            with_condition("DisruptionTarget", "True"),
            None,
            false,
            Some(Action::Ignore),
        ),
        (
            "ignore rule matches by the status=False",
            Some(json!([cond_rule("Ignore", "False")])),
            with_condition("DisruptionTarget", "False"),
            None,
            false,
            Some(Action::Ignore),
        ),
        (
            "ignore rule does not match when status for pattern is False, but actual True",
            Some(json!([cond_rule("Ignore", "False")])),
            with_condition("DisruptionTarget", "True"),
            None,
            true,
            None,
        ),
        (
            "FailJob rule matched for pod conditions",
            Some(json!([cond_rule("FailJob", "True")])),
            with_condition("DisruptionTarget", "True"),
            Some(
                "Pod default/mypod has condition DisruptionTarget matching FailJob rule at index 0"
                    .into(),
            ),
            true,
            Some(Action::FailJob),
        ),
        (
            "exit code rule restricted to another container does not match",
            Some(json!([{"action": "FailJob",
                "onExitCodes": {"containerName": "other", "operator": "In", "values": [2]}}])),
            main2.clone(),
            None,
            true,
            None,
        ),
        (
            "init container exit codes are matched after the containers'",
            Some(json!([exit_rule("FailJob", "In", &[5])])),
            pod(json!({"phase": "Failed", "initContainerStatuses": [{"name": "init",
                "image": "", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 5}}}]})),
            msg("init", 5, 0),
            true,
            Some(Action::FailJob),
        ),
    ];
    for (name, rules, pod, want_msg, want_counts, want_action) in cases {
        let policy: Option<PodFailurePolicy> =
            rules.map(|r| serde_json::from_value(json!({"rules": r})).unwrap());
        let got = matches(policy.as_ref(), &pod);
        assert_eq!(
            got,
            Match { fail_job: want_msg, counts: want_counts, action: want_action },
            "case {name:?}"
        );
    }
}
