//! Issue 17's `batch/v1` baseline, the Job's failure and success policies end to end on
//! `kinetic up` with real containers: a pod exiting with a code a `podFailurePolicy` FailJob
//! rule lists fails the Job at once (reason `PodFailurePolicy`, upstream's message); an Indexed
//! Job with `backoffLimitPerIndex` fails only its bad index (retried once, with the failure
//! count on the replacement) and completes the others; a `successPolicy` Job completes when its
//! leader index succeeds and terminates its workers.

use std::time::{Duration, Instant};

use crate::batch::{job_manifest, kubectl_stdin, pods_of, wait_node};
use crate::kubectl;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use kinetic_testkit::net::NetSlot;
use kinetic_testkit::registry::Registry;
use kube::api::Api;

fn cond<'a>(st: &'a JobStatus, type_: &str) -> &'a JobCondition {
    st.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == "True")
        .unwrap_or_else(|| panic!("no {type_}=True condition in {st:#?}"))
}

fn annotation<'a>(p: &'a Pod, key: &str) -> Option<&'a str> {
    p.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_pod_failure_policy_backoff_limit_per_index_and_success_policy() {
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let image = kinetic_testkit::images::busybox(&registry, "batchpol", "v1", &[]).await.unwrap();
    let (up, _dir) = crate::up_with_node("node-a", &slot).await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let client = kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap();
    wait_node(&up, h, "node-a").await;

    // Exit code 42 matches the FailJob rule at index 1: no retry despite backoffLimit 6.
    let pfp = "  backoffLimit: 6
  podFailurePolicy:
    rules:
    - action: Ignore
      onPodConditions:
      - type: DisruptionTarget
    - action: FailJob
      onExitCodes:
        containerName: main
        operator: In
        values: [42]
";
    kubectl_stdin(&up, h, &["apply", "-f", "-"], &job_manifest("pfp", &image, pfp, "exit 42"))
        .await;
    // Index 1 always fails: with backoffLimitPerIndex 1 it runs twice, then only it fails.
    let per_index = "  completionMode: Indexed
  completions: 3
  parallelism: 3
  backoffLimitPerIndex: 1
";
    let script = "if [ \"$JOB_COMPLETION_INDEX\" = 1 ]; then exit 3; fi; echo ok";
    let m = job_manifest("per-index", &image, per_index, script);
    kubectl_stdin(&up, h, &["apply", "-f", "-"], &m).await;
    // Index 0 is the leader: its success completes the Job, the workers are terminated.
    let leader = "  completionMode: Indexed
  completions: 3
  parallelism: 3
  successPolicy:
    rules:
    - succeededIndexes: \"0\"
";
    let script = "if [ \"$JOB_COMPLETION_INDEX\" = 0 ]; then sleep 2; exit 0; fi; exec sleep 300";
    kubectl_stdin(&up, h, &["apply", "-f", "-"], &job_manifest("leader", &image, leader, script))
        .await;

    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");

    kubectl(&up, h, &["wait", "--for=condition=Failed", "job/pfp", "--timeout=120s"]).await;
    let st = jobs.get("pfp").await.unwrap().status.unwrap();
    let pods = pods_of(&client, "pfp").await;
    assert_eq!(pods.len(), 1, "a FailJob match is not retried: {pods:#?}");
    let pod = pods[0].metadata.name.clone().unwrap();
    let msg = format!(
        "Container main for pod default/{pod} failed with exit code 42 matching FailJob rule at index 1"
    );
    for type_ in ["FailureTarget", "Failed"] {
        let c = cond(&st, type_);
        assert_eq!(c.reason.as_deref(), Some("PodFailurePolicy"), "{type_}");
        assert_eq!(c.message.as_deref(), Some(msg.as_str()), "{type_}");
    }
    assert_eq!(st.failed, Some(1));
    let events =
        kubectl(&up, h, &["get", "events", "--field-selector", "involvedObject.name=pfp"]).await;
    assert!(events.contains("PodFailurePolicy"), "{events}");

    kubectl(&up, h, &["wait", "--for=condition=Complete", "job/leader", "--timeout=120s"]).await;
    let st = jobs.get("leader").await.unwrap().status.unwrap();
    for type_ in ["SuccessCriteriaMet", "Complete"] {
        let c = cond(&st, type_);
        assert_eq!(c.reason.as_deref(), Some("SuccessPolicy"), "{type_}");
        assert_eq!(c.message.as_deref(), Some("Matched rules at index 0"), "{type_}");
    }
    assert_eq!(st.completed_indexes.as_deref(), Some("0"));
    assert_eq!((st.succeeded, st.active), (Some(1), None));
    assert!(st.completion_time.is_some());
    let pods = pods_of(&client, "leader").await;
    assert!(
        pods.iter().all(|p| matches!(phase(p), "Succeeded" | "Failed")),
        "the workers were terminated: {:?}",
        pods.iter().map(|p| (p.metadata.name.clone(), phase(p).to_owned())).collect::<Vec<_>>()
    );

    kubectl(&up, h, &["wait", "--for=condition=Failed", "job/per-index", "--timeout=180s"]).await;
    let st = jobs.get("per-index").await.unwrap().status.unwrap();
    for type_ in ["FailureTarget", "Failed"] {
        let c = cond(&st, type_);
        assert_eq!(c.reason.as_deref(), Some("FailedIndexes"), "{type_}");
        assert_eq!(c.message.as_deref(), Some("Job has failed indexes"), "{type_}");
    }
    assert_eq!(st.failed_indexes.as_deref(), Some("1"));
    assert_eq!(st.completed_indexes.as_deref(), Some("0,2"));
    assert_eq!((st.succeeded, st.failed), (Some(2), Some(2)));
    let pods = pods_of(&client, "per-index").await;
    let mut index1: Vec<(String, String)> = pods
        .iter()
        .filter(|p| annotation(p, "batch.kubernetes.io/job-completion-index") == Some("1"))
        .map(|p| {
            let count = annotation(p, "batch.kubernetes.io/job-index-failure-count");
            (count.unwrap_or("").to_owned(), phase(p).to_owned())
        })
        .collect();
    index1.sort();
    assert_eq!(
        index1,
        [("0".to_owned(), "Failed".to_owned()), ("1".to_owned(), "Failed".to_owned())],
        "index 1 ran twice, its replacement carrying the failure count"
    );
    assert_eq!(pods.len(), 4, "indexes 0 and 2 ran once: {pods:#?}");

    kubectl(&up, h, &["delete", "jobs", "--all", "--wait=true"]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = kubectl(&up, h, &["get", "pods", "-o", "name"]).await;
        if left.trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "pods left: {left}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(up);
}
