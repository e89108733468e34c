//! Issue 17 part 5 end to end on `kinetic up` with real containers: `batch/v1` Jobs run to
//! completion with their parallelism, a failing Job stops at its backoffLimit with upstream's
//! conditions, an Indexed Job's pods see their index, `kubectl create job --from=cronjob/…`
//! instantiates a CronJob's template; a BroadcastJob runs once on each of two node agents.

use std::time::{Duration, Instant};

use crate::kubectl;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kinetic_testkit::net::NetSlot;
use kinetic_testkit::registry::Registry;
use kube::api::{Api, ListParams};

pub(crate) async fn wait_node(up: &crate::Kinetic, home: &std::path::Path, node: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = kubectl(up, home, &["get", "nodes", "-o", "name"]).await;
        if out.contains(&format!("node/{node}")) {
            return;
        }
        assert!(Instant::now() < deadline, "node {node} did not register: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pods a Job controls, by its generated `batch.kubernetes.io/job-name` label.
pub(crate) async fn pods_of(client: &kube::Client, job: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let lp = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
    api.list(&lp).await.unwrap().items
}

/// Each pod's container run as (started, finished).
fn runs(pods: &[Pod]) -> Vec<(Timestamp, Timestamp)> {
    pods.iter()
        .filter_map(|p| {
            let t = p.status.as_ref()?.container_statuses.as_ref()?.first()?.state.as_ref()?;
            let t = t.terminated.as_ref()?;
            Some((t.started_at.as_ref()?.0, t.finished_at.as_ref()?.0))
        })
        .collect()
}

pub(crate) fn job_manifest(name: &str, image: &str, extra: &str, script: &str) -> String {
    format!(
        "apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
{extra}  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {image}
        command: [sh, -c, '{script}']
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_with_parallelism_fail_at_backoff_limit_and_instantiate_cronjobs() {
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let image = kinetic_testkit::images::busybox(&registry, "batch", "v1", &[]).await.unwrap();
    let (up, _dir) = crate::up_with_node("node-a", &slot).await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let client = kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap();
    wait_node(&up, h, "node-a").await;

    // completions 3, parallelism 2: three pods succeed, never more than two at a time.
    let m =
        job_manifest("three", &image, "  completions: 3\n  parallelism: 2\n", "sleep 1; echo done");
    kubectl_stdin(&up, h, &["apply", "-f", "-"], &m).await;
    // A failing Job: backoffLimit 1 means the second failed pod fails the Job.
    let m = job_manifest("fails", &image, "  backoffLimit: 1\n", "exit 3");
    kubectl_stdin(&up, h, &["apply", "-f", "-"], &m).await;
    // Indexed: each pod reads its index from JOB_COMPLETION_INDEX.
    let m = job_manifest(
        "indexed",
        &image,
        "  completions: 2\n  parallelism: 2\n  completionMode: Indexed\n",
        "echo index=$JOB_COMPLETION_INDEX",
    );
    kubectl_stdin(&up, h, &["apply", "-f", "-"], &m).await;

    kubectl(&up, h, &["wait", "--for=condition=Complete", "job/three", "--timeout=120s"]).await;
    let pods = pods_of(&client, "three").await;
    assert_eq!(pods.len(), 3, "{pods:#?}");
    assert!(pods.iter().all(|p| p.status.as_ref().unwrap().phase.as_deref() == Some("Succeeded")));
    let runs = runs(&pods);
    assert_eq!(runs.len(), 3);
    for (start, _) in &runs {
        let overlapping = runs.iter().filter(|(s, f)| s <= start && start < f).count();
        assert!(overlapping <= 2, "more than parallelism 2 ran at once: {runs:?}");
    }
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let three = jobs.get("three").await.unwrap();
    let st = three.status.clone().unwrap();
    assert_eq!((st.succeeded, st.active, st.failed), (Some(3), None, None));
    assert!(st.start_time.is_some() && st.completion_time.is_some());
    let types: Vec<&str> = st.conditions.iter().flatten().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, ["SuccessCriteriaMet", "Complete"]);
    let sel = three.spec.as_ref().unwrap().selector.as_ref().unwrap();
    let uid = three.metadata.uid.clone().unwrap();
    assert_eq!(
        sel.match_labels.as_ref().unwrap().get("batch.kubernetes.io/controller-uid"),
        Some(&uid)
    );
    let table = kubectl(&up, h, &["get", "job", "three"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"], "{table}");
    assert!(table.contains("Complete") && table.contains("3/3"), "{table}");

    kubectl(&up, h, &["wait", "--for=condition=Failed", "job/fails", "--timeout=120s"]).await;
    let fails = jobs.get("fails").await.unwrap().status.unwrap();
    assert_eq!(fails.failed, Some(2));
    let failed = fails.conditions.iter().flatten().find(|c| c.type_ == "Failed").unwrap();
    assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(failed.message.as_deref(), Some("Job has reached the specified backoff limit"));
    let target = fails.conditions.iter().flatten().find(|c| c.type_ == "FailureTarget");
    assert!(target.is_some_and(|c| c.reason.as_deref() == Some("BackoffLimitExceeded")));
    let events =
        kubectl(&up, h, &["get", "events", "--field-selector", "involvedObject.name=fails"]).await;
    assert!(events.contains("BackoffLimitExceeded"), "{events}");

    kubectl(&up, h, &["wait", "--for=condition=Complete", "job/indexed", "--timeout=120s"]).await;
    let indexed = jobs.get("indexed").await.unwrap().status.unwrap();
    // Upstream writes a run of two as two entries (`orderedIntervals.String`).
    assert_eq!(indexed.completed_indexes.as_deref(), Some("0,1"));
    let mut seen = Vec::new();
    for p in pods_of(&client, "indexed").await {
        let name = p.metadata.name.clone().unwrap();
        let index =
            p.metadata.annotations.unwrap()["batch.kubernetes.io/job-completion-index"].clone();
        let logs = kubectl(&up, h, &["logs", &name]).await;
        assert_eq!(logs.trim(), format!("index={index}"), "pod {name}");
        seen.push(index);
    }
    seen.sort();
    assert_eq!(seen, ["0", "1"]);

    // A CronJob that would fire only in five minutes, instantiated by hand.
    kubectl(
        &up,
        h,
        &[
            "create",
            "cronjob",
            "nightly",
            &format!("--image={image}"),
            "--schedule=*/5 * * * *",
            "--",
            "sh",
            "-c",
            "echo from cron",
        ],
    )
    .await;
    let table = kubectl(&up, h, &["get", "cronjob", "nightly"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE"],
        "{table}"
    );
    assert!(table.contains("*/5 * * * *") && table.contains("False"), "{table}");
    kubectl(&up, h, &["create", "job", "by-hand", "--from=cronjob/nightly"]).await;
    kubectl(&up, h, &["wait", "--for=condition=Complete", "job/by-hand", "--timeout=120s"]).await;
    let by_hand = jobs.get("by-hand").await.unwrap();
    let owner = &by_hand.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("CronJob", "nightly"));
    assert_eq!(
        by_hand.metadata.annotations.as_ref().unwrap().get("cronjob.kubernetes.io/instantiate"),
        Some(&"manual".to_owned())
    );
    let name = pods_of(&client, "by-hand").await[0].metadata.name.clone().unwrap();
    assert_eq!(kubectl(&up, h, &["logs", &name]).await.trim(), "from cron");

    // Deleting the Jobs takes their pods (ownerReferences, foreground or background).
    kubectl(&up, h, &["delete", "jobs", "--all", "--wait=true"]).await;
    kubectl(&up, h, &["delete", "cronjob", "nightly"]).await;
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

pub(crate) async fn kubectl_stdin(
    up: &crate::Kinetic,
    home: &std::path::Path,
    args: &[&str],
    stdin: &str,
) {
    crate::kubectl_in(up, home, args, Some(stdin)).await;
}

/// The manual's BroadcastJob examples (openkruise.io `user-manuals/broadcastjob.md`), as
/// published.
const MANUAL_EXAMPLES: &str = r#"apiVersion: apps.kruise.io/v1alpha1
kind: BroadcastJob
metadata:
  name: broadcastjob-ttl
spec:
  template:
    spec:
      containers:
        - name: pi
          image: perl
          command: ["perl",  "-Mbignum=bpi", "-wle", "print bpi(2000)"]
      restartPolicy: Never
  completionPolicy:
    type: Always
    ttlSecondsAfterFinished: 30
---
apiVersion: apps.kruise.io/v1alpha1
kind: BroadcastJob
metadata:
  name: broadcastjob-active-deadline
spec:
  template:
    spec:
      containers:
        - name: sleep
          image: busybox
          command: ["sleep",  "50000"]
      restartPolicy: Never
  completionPolicy:
    type: Always
    activeDeadlineSeconds: 10
---
apiVersion: apps.kruise.io/v1alpha1
kind: BroadcastJob
metadata:
  name: broadcastjob-never-complete
spec:
  template:
    spec:
      containers:
        - name: sleep
          image: busybox
          command: ["sleep",  "5"]
      restartPolicy: Never
  completionPolicy:
    type: Never
"#;

/// `kinetic node` as a second agent joining `up`: its own data directory (swept on drop),
/// bridge and pod range.
async fn second_node(
    up: &crate::Kinetic,
    name: &str,
    slot: &NetSlot,
) -> (tokio::process::Child, crate::UpDir) {
    let dir = crate::UpDir::new();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kinetic"))
        .args(["node", "--kubeconfig", up.kubeconfig.to_str().unwrap()])
        .args(["--data-dir", dir.path().to_str().unwrap(), "--node-name", name])
        .args(["--node-listen", "127.0.0.1:0", "--bridge", &slot.bridge, "--pod-cidr", &slot.cidr])
        .env("KINETIC_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    (child, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcastjob_runs_once_per_node_completes_and_goes_after_its_ttl() {
    let (slot_a, slot_b) = (NetSlot::take(), NetSlot::take());
    let registry = Registry::start().await.unwrap();
    let image = kinetic_testkit::images::busybox(&registry, "bcast", "v1", &[]).await.unwrap();
    let (up, _dir) = crate::up_with_node("node-a", &slot_a).await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let (mut node_b, _node_b_dir) = second_node(&up, "node-b", &slot_b).await;
    wait_node(&up, h, "node-a").await;
    wait_node(&up, h, "node-b").await;

    // The manual's examples apply unchanged and get upstream's webhook defaults.
    let mut applied = String::new();
    for _ in 0..100 {
        let out = kinetic_testkit::kubectl(
            &up.kubeconfig,
            h,
            &["apply", "--dry-run=server", "-o", "json", "-f", "-"],
            Some(MANUAL_EXAMPLES),
        )
        .await
        .unwrap();
        if out.status.success() {
            applied = String::from_utf8_lossy(&out.stdout).into_owned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!applied.is_empty(), "the manual's examples were not accepted within 10 s");
    let list: serde_json::Value = serde_json::from_str(&applied).unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{applied}");
    for item in items {
        assert_eq!(item["spec"]["failurePolicy"]["type"], "FailFast", "{item}");
        assert_eq!(item["spec"]["parallelism"], 1 << 30, "{item}");
    }

    let bcj = format!(
        "apiVersion: apps.kruise.io/v1alpha1
kind: BroadcastJob
metadata:
  name: everywhere
spec:
  template:
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {image}
        command: [sh, -c, 'echo ran once']
      restartPolicy: Never
  completionPolicy:
    type: Always
    ttlSecondsAfterFinished: 3
"
    );
    kubectl_stdin(&up, h, &["apply", "-f", "-"], &bcj).await;
    kubectl(&up, h, &["wait", "--for=condition=Complete", "bcj/everywhere", "--timeout=120s"])
        .await;
    let client = kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap();
    let bcjs: Api<kinetic_api::kruise::broadcastjob::BroadcastJob> =
        Api::namespaced(client.clone(), "default");
    let st = bcjs.get("everywhere").await.unwrap().status.unwrap();
    assert_eq!((st.desired, st.succeeded, st.failed, st.active), (2, 2, 0, 0));
    assert_eq!(st.phase.as_deref(), Some("completed"));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let lp = ListParams::default().labels("broadcastjob-name=everywhere");
    let mut on: Vec<String> = pods
        .list(&lp)
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.spec.as_ref().unwrap().node_name.clone().unwrap())
        .collect();
    on.sort();
    assert_eq!(on, ["node-a", "node-b"], "exactly one pod per node");
    let table = kubectl(&up, h, &["get", "bcj"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "DESIRED", "ACTIVE", "SUCCEEDED", "FAILED", "AGE"], "{table}");
    // ttlSecondsAfterFinished: 3 deletes the job, and its pods with it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = kubectl(&up, h, &["get", "bcj,pods", "-o", "name"]).await;
        if left.trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left after the TTL: {left}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = node_b.kill().await;
    drop(up);
}
