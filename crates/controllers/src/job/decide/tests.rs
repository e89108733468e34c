//! Table tests after upstream's `TestControllerSyncJob` (job_controller_test.go): each case a
//! Job and its pods; the plan's creations, deletions, counts and conditions.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use super::*;

fn now() -> Timestamp {
    "2026-01-01T00:10:00Z".parse().unwrap()
}

fn job(spec: serde_json::Value, status: serde_json::Value) -> Job {
    let mut s = json!({"parallelism": 2, "completions": 5, "backoffLimit": 6,
        "completionMode": "NonIndexed", "template": {"spec": {"restartPolicy": "Never",
        "containers": [{"name": "c", "image": "i"}]}}});
    for (k, v) in spec.as_object().unwrap() {
        s[k] = v.clone();
    }
    serde_json::from_value(json!({"metadata": {"name": "j", "namespace": "default"},
        "spec": s, "status": status}))
    .unwrap()
}

fn pod(name: &str, phase: &str, index: Option<i32>, finished: &str) -> Pod {
    let ann = index.map(|i| json!({COMPLETION_INDEX: i.to_string()})).unwrap_or(json!({}));
    serde_json::from_value(json!({"metadata": {"name": name, "annotations": ann,
            "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"phase": phase, "containerStatuses": [{"name": "c", "image": "i", "imageID": "",
            "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "finishedAt": finished}}}]}}))
    .unwrap()
}

/// (active, succeeded, failed, created, deleted, conditions "Type=Reason")
fn summary(p: &Plan) -> String {
    let conds: Vec<String> = p
        .status
        .conditions
        .iter()
        .flatten()
        .map(|c| format!("{}={}", c.type_, c.reason.clone().unwrap_or_default()))
        .collect();
    format!(
        "active={} succeeded={} failed={} create={:?} delete={} conds=[{}] requeue={:?}",
        p.status.active.unwrap_or(0),
        p.status.succeeded.unwrap_or(0),
        p.status.failed.unwrap_or(0),
        p.create,
        p.delete.len(),
        conds.join(","),
        p.requeue,
    )
}

#[test]
fn controller_sync_job_cases() {
    let t = "2026-01-01T00:01:00Z";
    let running = |n: &str| pod(n, "Running", None, t);
    let cases: Vec<(&str, Job, Vec<Pod>, &str)> = vec![
        (
            "new job creates parallelism pods",
            job(json!({}), json!({})),
            vec![],
            "active=0 succeeded=0 failed=0 create=[None, None] delete=0 conds=[] requeue=None",
        ),
        (
            "parallelism capped by remaining completions",
            job(json!({"parallelism": 3, "completions": 4}), json!({})),
            vec![pod("a", "Succeeded", None, t), pod("b", "Succeeded", None, t), running("c")],
            "active=1 succeeded=2 failed=0 create=[None] delete=0 conds=[] requeue=None",
        ),
        (
            "too many active pods are deleted",
            job(json!({"parallelism": 1}), json!({})),
            vec![running("a"), running("b")],
            "active=2 succeeded=0 failed=0 create=[] delete=1 conds=[] requeue=None",
        ),
        (
            "completions reached: SuccessCriteriaMet then Complete",
            job(json!({"completions": 2}), json!({})),
            vec![pod("a", "Succeeded", None, t), pod("b", "Succeeded", None, t)],
            "active=0 succeeded=2 failed=0 create=[] delete=0 conds=[SuccessCriteriaMet=CompletionsReached,Complete=CompletionsReached] requeue=None",
        ),
        (
            "work queue completes when one succeeded and none runs",
            job(json!({"completions": null, "parallelism": 2}), json!({})),
            vec![pod("a", "Succeeded", None, t), pod("b", "Succeeded", None, t)],
            "active=0 succeeded=2 failed=0 create=[] delete=0 conds=[SuccessCriteriaMet=CompletionsReached,Complete=CompletionsReached] requeue=None",
        ),
        (
            "work queue creates nothing more after a success",
            job(json!({"completions": null, "parallelism": 2}), json!({})),
            vec![pod("a", "Succeeded", None, t), running("b")],
            "active=1 succeeded=1 failed=0 create=[] delete=0 conds=[] requeue=None",
        ),
        (
            "backoff limit exceeded fails the job",
            job(json!({"backoffLimit": 1}), json!({})),
            vec![pod("a", "Failed", None, t), pod("b", "Failed", None, t)],
            "active=0 succeeded=0 failed=2 create=[] delete=0 conds=[FailureTarget=BackoffLimitExceeded,Failed=BackoffLimitExceeded] requeue=None",
        ),
        (
            "backoff limit with a pod still running: FailureTarget first, the pod is deleted",
            job(json!({"backoffLimit": 0}), json!({})),
            vec![pod("a", "Failed", None, t), running("b")],
            "active=1 succeeded=0 failed=1 create=[] delete=1 conds=[FailureTarget=BackoffLimitExceeded] requeue=Some(1s)",
        ),
        (
            "a failure backs off 10 s before the replacement",
            job(json!({}), json!({})),
            vec![pod("a", "Failed", None, "2026-01-01T00:09:55Z")],
            "active=0 succeeded=0 failed=1 create=[] delete=0 conds=[] requeue=Some(5s)",
        ),
        (
            "two failures back off 20 s",
            job(json!({}), json!({})),
            vec![
                pod("a", "Failed", None, "2026-01-01T00:09:30Z"),
                pod("b", "Failed", None, "2026-01-01T00:09:45Z"),
            ],
            "active=0 succeeded=0 failed=2 create=[] delete=0 conds=[] requeue=Some(5s)",
        ),
        (
            "active deadline exceeded",
            job(json!({"activeDeadlineSeconds": 60}), json!({"startTime": "2026-01-01T00:00:00Z"})),
            vec![running("a")],
            "active=1 succeeded=0 failed=0 create=[] delete=1 conds=[FailureTarget=DeadlineExceeded] requeue=Some(1s)",
        ),
        (
            "deadline ahead: looked at again then",
            job(
                json!({"activeDeadlineSeconds": 660}),
                json!({"startTime": "2026-01-01T00:00:00Z"}),
            ),
            vec![running("a"), running("b")],
            "active=2 succeeded=0 failed=0 create=[] delete=0 conds=[] requeue=Some(60s)",
        ),
        (
            "suspended job deletes its pods",
            job(json!({"suspend": true}), json!({})),
            vec![running("a")],
            "active=1 succeeded=0 failed=0 create=[] delete=1 conds=[Suspended=JobSuspended] requeue=None",
        ),
        (
            "indexed job creates the lowest missing indexes",
            job(
                json!({"completionMode": "Indexed", "completions": 4, "parallelism": 2}),
                json!({}),
            ),
            vec![pod("a", "Succeeded", Some(0), t), pod("b", "Running", Some(2), t)],
            "active=1 succeeded=1 failed=0 create=[Some(1)] delete=0 conds=[] requeue=None",
        ),
    ];
    for (name, j, pods, want) in cases {
        let refs: Vec<&Pod> = pods.iter().collect();
        let got = summary(&plan(&j, &refs, now()));
        assert_eq!(got, want, "case {name:?}");
    }
}

#[test]
fn resumed_job_restarts_its_clock() {
    let j = job(
        json!({"suspend": false}),
        json!({"startTime": "2026-01-01T00:00:00Z",
        "conditions": [{"type": "Suspended", "status": "True", "reason": "JobSuspended"}]}),
    );
    let p = plan(&j, &[], now());
    assert_eq!(p.status.start_time, Some(Time(now())));
    assert_eq!(p.events, vec![("Normal", "Resumed".to_owned(), "Job resumed".to_owned())]);
}

#[test]
fn finished_job_is_deleted_after_its_ttl() {
    let done = json!({"conditions": [{"type": "Complete", "status": "True",
        "lastTransitionTime": "2026-01-01T00:09:00Z"}]});
    let p = plan(&job(json!({"ttlSecondsAfterFinished": 100}), done.clone()), &[], now());
    assert_eq!((p.delete_job, p.requeue), (false, Some(Duration::from_secs(40))));
    let p = plan(&job(json!({"ttlSecondsAfterFinished": 0}), done), &[], now());
    assert!(p.delete_job);
}

/// A failed pod whose container exited with `code`; `failures` is its index's failure count
/// annotation.
fn failed_pod(name: &str, index: Option<i32>, code: i32, failures: Option<i32>) -> Pod {
    let mut p = pod(name, "Failed", index, "2026-01-01T00:01:00Z");
    p.metadata.namespace = Some("default".into());
    if let Some(f) = failures {
        p.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(indexes::INDEX_FAILURE_COUNT.into(), f.to_string());
    }
    let cs = p.status.as_mut().unwrap().container_statuses.as_mut().unwrap();
    cs[0].state.as_mut().unwrap().terminated.as_mut().unwrap().exit_code = code;
    p
}

fn with_failed_indexes(p: &Plan) -> String {
    format!(
        "{} completed={:?} failedIndexes={:?}",
        summary(p),
        p.status.completed_indexes.as_deref().unwrap_or(""),
        p.status.failed_indexes.as_deref()
    )
}

/// After upstream's `TestSyncJobWithJobPodFailurePolicy`, `TestSyncJobWithJobBackoffLimitPerIndex`
/// and `TestSyncJobWithJobSuccessPolicy` (job_controller_test.go, v1.35).
#[test]
fn sync_job_with_policies_cases() {
    let t = "2026-01-01T00:01:00Z";
    let pfp = json!({"rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "FailJob", "onExitCodes": {"containerName": "c", "operator": "In", "values": [5, 6, 7]}},
        {"action": "Count", "onExitCodes": {"operator": "In", "values": [42]}}]});
    let mut disrupted = failed_pod("d", None, 137, None);
    disrupted.status.as_mut().unwrap().conditions = Some(vec![
        serde_json::from_value(json!({"type": "DisruptionTarget", "status": "True"})).unwrap(),
    ]);
    let indexed = |extra: serde_json::Value| {
        let mut s = json!({"completionMode": "Indexed", "completions": 3, "parallelism": 3});
        for (k, v) in extra.as_object().unwrap() {
            s[k] = v.clone();
        }
        job(s, json!({}))
    };
    let per_index = json!({"backoffLimitPerIndex": 1, "backoffLimit": 2147483647});
    let cases: Vec<(&str, Job, Vec<Pod>, &str)> = vec![
        (
            "FailJob rule: the job fails at once with PodFailurePolicy",
            job(json!({"podFailurePolicy": pfp}), json!({})),
            vec![failed_pod("a", None, 5, None)],
            "active=0 succeeded=0 failed=1 create=[] delete=0 conds=[FailureTarget=PodFailurePolicy,Failed=PodFailurePolicy] requeue=None completed=\"\" failedIndexes=None",
        ),
        (
            "FailJob rule with a pod still running: FailureTarget, the pod deleted",
            job(json!({"podFailurePolicy": pfp}), json!({})),
            vec![failed_pod("a", None, 6, None), pod("b", "Running", None, t)],
            "active=1 succeeded=0 failed=1 create=[] delete=1 conds=[FailureTarget=PodFailurePolicy] requeue=Some(1s) completed=\"\" failedIndexes=None",
        ),
        (
            "Ignore rule: not counted against backoffLimit, replaced without back-off",
            job(json!({"podFailurePolicy": pfp, "backoffLimit": 0}), json!({})),
            vec![disrupted.clone()],
            "active=0 succeeded=0 failed=0 create=[None, None] delete=0 conds=[] requeue=None completed=\"\" failedIndexes=None",
        ),
        (
            "Count rule: counted against backoffLimit",
            job(json!({"podFailurePolicy": pfp, "backoffLimit": 0}), json!({})),
            vec![failed_pod("a", None, 42, None)],
            "active=0 succeeded=0 failed=1 create=[] delete=0 conds=[FailureTarget=BackoffLimitExceeded,Failed=BackoffLimitExceeded] requeue=None completed=\"\" failedIndexes=None",
        ),
        (
            "no rule matched: counted as usual",
            job(json!({"podFailurePolicy": pfp, "backoffLimit": 0}), json!({})),
            vec![failed_pod("a", None, 1, None)],
            "active=0 succeeded=0 failed=1 create=[] delete=0 conds=[FailureTarget=BackoffLimitExceeded,Failed=BackoffLimitExceeded] requeue=None completed=\"\" failedIndexes=None",
        ),
        (
            "per index: a first failure is retried after the index's back-off",
            indexed(per_index.clone()),
            vec![
                failed_pod("a", Some(0), 1, Some(0)),
                pod("b", "Running", Some(1), t),
                pod("c", "Running", Some(2), t),
            ],
            "active=2 succeeded=0 failed=1 create=[Some(0)] delete=0 conds=[] requeue=None completed=\"\" failedIndexes=Some(\"\")",
        ),
        (
            "per index: reaching backoffLimitPerIndex fails the index, the others go on",
            indexed(per_index.clone()),
            vec![
                failed_pod("a", Some(0), 1, Some(0)),
                failed_pod("a2", Some(0), 1, Some(1)),
                pod("b", "Succeeded", Some(1), t),
                pod("c", "Running", Some(2), t),
            ],
            "active=1 succeeded=1 failed=2 create=[] delete=0 conds=[] requeue=None completed=\"1\" failedIndexes=Some(\"0\")",
        ),
        (
            "per index: failed and succeeded indexes cover all, FailedIndexes",
            indexed(per_index.clone()),
            vec![
                failed_pod("a2", Some(0), 1, Some(1)),
                pod("b", "Succeeded", Some(1), t),
                pod("c", "Succeeded", Some(2), t),
            ],
            "active=0 succeeded=2 failed=1 create=[] delete=0 conds=[FailureTarget=FailedIndexes,Failed=FailedIndexes] requeue=None completed=\"1,2\" failedIndexes=Some(\"0\")",
        ),
        (
            "per index: more failed indexes than maxFailedIndexes",
            indexed(json!({"backoffLimitPerIndex": 0, "maxFailedIndexes": 1})),
            vec![
                failed_pod("a", Some(0), 1, Some(0)),
                failed_pod("b", Some(1), 1, Some(0)),
                pod("c", "Running", Some(2), t),
            ],
            "active=1 succeeded=0 failed=2 create=[] delete=1 conds=[FailureTarget=MaxFailedIndexesExceeded] requeue=Some(1s) completed=\"\" failedIndexes=Some(\"0,1\")",
        ),
        (
            "per index: a FailIndex rule fails the index on the first failure",
            indexed(json!({"backoffLimitPerIndex": 3, "podFailurePolicy": {"rules": [
                {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [3]}}]}})),
            vec![
                failed_pod("a", Some(2), 3, Some(0)),
                pod("b", "Running", Some(0), t),
                pod("c", "Running", Some(1), t),
            ],
            "active=2 succeeded=0 failed=1 create=[] delete=0 conds=[] requeue=None completed=\"\" failedIndexes=Some(\"2\")",
        ),
        (
            "success policy: the leader index succeeded, the others are deleted",
            indexed(json!({"successPolicy": {"rules": [{"succeededIndexes": "0"}]}})),
            vec![
                pod("a", "Succeeded", Some(0), t),
                pod("b", "Running", Some(1), t),
                pod("c", "Running", Some(2), t),
            ],
            "active=2 succeeded=1 failed=0 create=[] delete=2 conds=[SuccessCriteriaMet=SuccessPolicy] requeue=Some(1s) completed=\"0\" failedIndexes=None",
        ),
        (
            "success policy: succeededCount not reached yet",
            indexed(json!({"successPolicy": {"rules": [{"succeededCount": 2}]}})),
            vec![pod("a", "Succeeded", Some(0), t), pod("b", "Running", Some(1), t)],
            "active=1 succeeded=1 failed=0 create=[Some(2)] delete=0 conds=[] requeue=None completed=\"0\" failedIndexes=None",
        ),
    ];
    for (name, j, pods, want) in cases {
        let refs: Vec<&Pod> = pods.iter().collect();
        let got = with_failed_indexes(&plan(&j, &refs, now()));
        assert_eq!(got, want, "case {name:?}");
    }
}

#[test]
fn success_criteria_met_completes_with_its_reason_once_the_pods_are_gone() {
    let j = job(
        json!({"completionMode": "Indexed", "completions": 3, "parallelism": 3,
            "successPolicy": {"rules": [{"succeededIndexes": "0"}]}}),
        json!({"completedIndexes": "0", "conditions": [{"type": "SuccessCriteriaMet",
            "status": "True", "reason": "SuccessPolicy", "message": "Matched rules at index 0"}]}),
    );
    let done = pod("a", "Succeeded", Some(0), "2026-01-01T00:01:00Z");
    let p = plan(&j, &[&done], now());
    let complete = condition(&p.status, "Complete").unwrap();
    assert_eq!(complete.reason.as_deref(), Some("SuccessPolicy"));
    assert_eq!(complete.message.as_deref(), Some("Matched rules at index 0"));
    assert!(p.status.completion_time.is_some());
}

#[test]
fn per_index_replacement_carries_the_failure_count() {
    let j = job(
        json!({"completionMode": "Indexed", "completions": 1, "parallelism": 1,
            "backoffLimitPerIndex": 2}),
        json!({}),
    );
    // Failed 10 min ago with one failure before: the 20 s back-off has passed.
    let failed = failed_pod("a", Some(0), 1, Some(1));
    let p = plan(&j, &[&failed], now());
    assert_eq!(p.create, vec![Some(0)]);
    assert_eq!(p.index_failures.get(&0), Some(&(2, 0)));
}
