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

#[test]
fn indexes_format_as_ranges() {
    let s: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into_iter().collect();
    assert_eq!(format_indexes(&s), "0-2,4,6-7");
    assert_eq!(parse_indexes("0-2,4,6-7"), s);
}
