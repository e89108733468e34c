//! `kinetic controller` as a separate process against `kinetic apiserver`, as it runs against a
//! real cluster: it installs the CloneSet CRD, takes the leader Lease, and reconciles; a second
//! replica waits; when the leader stops (SIGTERM), it releases the Lease and the second takes
//! over and keeps reconciling.

use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

fn controller(kubeconfig: &std::path::Path, id: &str) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kinetic"))
        .args(["controller", "--identity", id, "--kubeconfig"])
        .arg(kubeconfig)
        .env("KINETIC_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn until<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    for _ in 0..300 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} not reached within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinetic_controller_elects_a_leader_reconciles_and_hands_over() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::start("apiserver", dir.path(), crate::free_port()).await;
    let client = kinetic_testkit::client_from_kubeconfig(&server.kubeconfig).await.unwrap();
    let mut a = controller(&server.kubeconfig, "replica-a");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let holder = || async {
        leases
            .get_opt("kinetic-controller")
            .await
            .unwrap()
            .and_then(|l| l.spec?.holder_identity)
            .unwrap_or_default()
    };
    until("replica-a leads", || async { holder().await == "replica-a" }).await;
    let mut b = controller(&server.kubeconfig, "replica-b");

    // The CRD is installed and a CloneSet gets its pods (no node: they stay Pending).
    let home = tempfile::tempdir().unwrap();
    let manifest = "apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata: {name: cs, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: cs}}
  template:
    metadata: {labels: {app: cs}}
    spec: {containers: [{name: c, image: example.invalid/c:v1}]}
";
    let out = kinetic_testkit::kubectl(
        &server.kubeconfig,
        home.path(),
        &["apply", "-f", "-"],
        Some(manifest),
    )
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let count =
        || async { pods.list(&ListParams::default().labels("app=cs")).await.unwrap().items.len() };
    until("2 pods", || async { count().await == 2 }).await;
    assert_eq!(holder().await, "replica-a", "b must not have taken over");

    // SIGTERM the leader: it releases the Lease, b takes over and scales the CloneSet up.
    let pid = rustix::process::Pid::from_raw(i32::try_from(a.id().unwrap()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), a.wait()).await.unwrap().unwrap();
    assert!(status.success(), "the leader exits cleanly on SIGTERM: {status}");
    until("replica-b leads", || async { holder().await == "replica-b" }).await;
    let out = kinetic_testkit::kubectl(
        &server.kubeconfig,
        home.path(),
        &["scale", "cloneset/cs", "--replicas=3"],
        None,
    )
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    until("3 pods", || async { count().await == 3 }).await;
    b.kill().await.unwrap();
}
