//! `kinetic controller` as a separate process against `kinetic apiserver`, as it runs against a
//! real cluster: it installs the CloneSet CRD, takes the leader Lease, and reconciles; a second
//! replica waits; when the leader stops (SIGTERM), it releases the Lease and the second takes
//! over and keeps reconciling.

use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

fn controller(kubeconfig: &std::path::Path, id: &str) -> tokio::process::Child {
    controller_with(kubeconfig, id, &[])
}

fn controller_with(
    kubeconfig: &std::path::Path,
    id: &str,
    extra: &[&str],
) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kinetic"))
        .args(["controller", "--identity", id, "--kubeconfig"])
        .arg(kubeconfig)
        .args(extra)
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

/// Short election timings, so the loops below take seconds, not minutes.
const FAST_LEASE: [&str; 3] = [
    "--leader-elect-lease-duration=4s",
    "--leader-elect-renew-deadline=3s",
    "--leader-elect-retry-period=500ms",
];
const LEASE_DURATION: Duration = Duration::from_secs(4);

fn signal(child: &tokio::process::Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap()).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

async fn lease_holder(leases: &Api<Lease>) -> String {
    leases
        .get_opt("kinetic-controller")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
        .unwrap_or_default()
}

/// Issue 10, item 3: on SIGTERM some replicas kept renewing the Lease for up to 55 s without
/// reconciling (shutdown awaited every controller without a bound), so the standby could not
/// take over. Here, in a loop (the failure was intermittent), the leader is signalled while it
/// is creating a CloneSet's pods: it must exit cleanly within the shutdown bound, and the
/// standby must lead within a lease duration and finish the CloneSet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinetic_controller_sigterm_during_reconciles_exits_in_bound_and_the_standby_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::start("apiserver", dir.path(), crate::free_port()).await;
    let client = kinetic_testkit::client_from_kubeconfig(&server.kubeconfig).await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let home = tempfile::tempdir().unwrap();
    let mut leader = controller_with(&server.kubeconfig, "r0", &FAST_LEASE);
    until("r0 leads", || async { lease_holder(&leases).await == "r0" }).await;
    for i in 0..4 {
        let next = format!("r{}", i + 1);
        let standby = controller_with(&server.kubeconfig, &next, &FAST_LEASE);
        let manifest = format!(
            "apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata: {{name: cs{i}, namespace: default}}
spec:
  replicas: 30
  selector: {{matchLabels: {{app: cs{i}}}}}
  template:
    metadata: {{labels: {{app: cs{i}}}}}
    spec: {{containers: [{{name: c, image: example.invalid/c:v1}}]}}
"
        );
        let out = kinetic_testkit::kubectl(
            &server.kubeconfig,
            home.path(),
            &["apply", "-f", "-"],
            Some(&manifest),
        )
        .await
        .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let sel = format!("app=cs{i}");
        let count =
            || async { pods.list(&ListParams::default().labels(&sel)).await.unwrap().items.len() };
        // The leader is reconciling: its first pods exist.
        until("the leader creates pods", || async { count().await > 0 }).await;

        signal(&leader, rustix::process::Signal::TERM);
        let signalled = Instant::now();
        let status = tokio::time::timeout(Duration::from_secs(12), leader.wait())
            .await
            .unwrap_or_else(|_| panic!("iteration {i}: the leader still runs 12 s after SIGTERM"))
            .unwrap();
        let exited = signalled.elapsed();
        assert!(status.success(), "iteration {i}: the leader exits cleanly on SIGTERM: {status}");
        // 5 s for the controllers plus the Lease release, with room for a loaded machine.
        assert!(exited < Duration::from_secs(9), "iteration {i}: exit took {exited:?}");

        // The released Lease goes to the standby within a lease duration.
        let mut took = None;
        for _ in 0..100 {
            if lease_holder(&leases).await == next {
                took = Some(signalled.elapsed().saturating_sub(exited));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let took = took.unwrap_or_else(|| panic!("iteration {i}: {next} did not take over"));
        assert!(took < LEASE_DURATION, "iteration {i}: the standby took over after {took:?}");
        until("the new leader finishes the CloneSet", || async { count().await == 30 }).await;
        leader = standby;
    }
    signal(&leader, rustix::process::Signal::TERM);
    let status =
        tokio::time::timeout(Duration::from_secs(12), leader.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
}

/// Issue 10, item 3: after the API server was unreachable past the renew deadline the leader
/// logged "lease not renewed" and stayed alive, idle, still named in the Lease. Now it exits
/// non-zero, as client-go's `OnStoppedLeading` does, so its supervisor restarts it. Checked in
/// a loop, with the API server both paused (SIGSTOP: requests hang, the harder case) and
/// killed (connections refused), each time while the leader is reconciling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinetic_controller_exits_non_zero_when_the_api_server_is_gone_past_the_renew_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::free_port();
    let mut server = crate::start("apiserver", dir.path(), port).await;
    let home = tempfile::tempdir().unwrap();
    for i in 0..4 {
        let client = kinetic_testkit::client_from_kubeconfig(&server.kubeconfig).await.unwrap();
        let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
        let id = format!("r{i}");
        let mut leader = controller_with(&server.kubeconfig, &id, &FAST_LEASE);
        // The previous leader died without releasing: this one waits out the lease.
        until("the new replica leads", || async { lease_holder(&leases).await == id }).await;
        let manifest = format!(
            "apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata: {{name: gone{i}, namespace: default}}
spec:
  replicas: 30
  selector: {{matchLabels: {{app: gone{i}}}}}
  template:
    metadata: {{labels: {{app: gone{i}}}}}
    spec: {{containers: [{{name: c, image: example.invalid/c:v1}}]}}
"
        );
        let out = kinetic_testkit::kubectl(
            &server.kubeconfig,
            home.path(),
            &["apply", "-f", "-"],
            Some(&manifest),
        )
        .await
        .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let sel = format!("app=gone{i}");
        until("the leader creates pods", || async {
            !pods.list(&ListParams::default().labels(&sel)).await.unwrap().items.is_empty()
        })
        .await;

        let paused = i % 2 == 0;
        if paused {
            signal(&server.child, rustix::process::Signal::STOP);
        } else {
            server.child.start_kill().unwrap();
            server.child.wait().await.unwrap();
        }
        let gone = Instant::now();
        // Renew deadline 3 s after the last renewal, then an immediate exit.
        let status = tokio::time::timeout(Duration::from_secs(15), leader.wait()).await;
        let exited = gone.elapsed();
        if paused {
            signal(&server.child, rustix::process::Signal::CONT);
        } else {
            server = crate::start("apiserver", dir.path(), port).await;
        }
        let status = status
            .unwrap_or_else(|_| {
                panic!("iteration {i} (paused: {paused}): the leader still runs 15 s later")
            })
            .unwrap();
        assert!(!status.success(), "iteration {i}: losing the Lease must exit non-zero");
        assert!(exited < Duration::from_secs(10), "iteration {i}: exited after {exited:?}");
    }
}
