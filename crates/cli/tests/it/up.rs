//! `kinetic up` as the README runs it: a kubeconfig with which kubectl applies a Namespace, a
//! Deployment, a CRD and a custom resource.

use std::os::unix::fs::PermissionsExt as _;

#[tokio::test]
async fn kinetic_up_serves_kubectl_apply_of_the_demo_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::free_port();
    // The node agent is covered by the node tests; this one checks the API side of `up`.
    let mut up = crate::start_with("up", dir.path(), port, &["--no-node"]).await;
    let mode = std::fs::metadata(&up.kubeconfig).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the kubeconfig holds the admin token");
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo");
    let home = tempfile::tempdir().unwrap();
    for f in ["namespace.yaml", "crd.yaml", "deployment.yaml", "widget.yaml"] {
        let path = demo.join(f);
        let out = kinetic_testkit::kubectl(
            &up.kubeconfig,
            home.path(),
            &["apply", "-f", path.to_str().unwrap()],
            None,
        )
        .await
        .unwrap();
        assert!(out.status.success(), "{f}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = kinetic_testkit::kubectl(
        &up.kubeconfig,
        home.path(),
        &["get", "deploy,widgets", "-n", "demo", "-o", "name"],
        None,
    )
    .await
    .unwrap();
    let names = String::from_utf8_lossy(&out.stdout);
    assert!(
        names.contains("deployment.apps/web") && names.contains("widget.example.com/gizmo"),
        "{names}"
    );
    // SIGTERM shuts it down cleanly.
    let pid = up.child.id().unwrap();
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), up.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}

/// Bad node flags fail before anything starts, with one readable line (kubelet's rules for the
/// image GC thresholds).
#[test]
fn bad_image_gc_flags_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kinetic"))
            .args(["up", "--data-dir", dir.path().to_str().unwrap(), "--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--image-gc-high-threshold", "80", "--image-gc-low-threshold", "90"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "--image-gc-low-threshold (90) must be less than --image-gc-high-threshold (80)"
        ),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!dir.path().join("kubeconfig").exists(), "nothing started");
    let out = run(&["--image-gc-high-threshold", "101"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("101"), "clap names the bad value");
}

/// Issue 19: a fresh `kinetic up` printed `NodeImage watch failed; retrying … 404` several
/// times a second until its controllers had installed the CRD. A fresh start (with its node
/// agent) logs no warning during its first 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinetic_up_started_fresh_logs_no_warning_in_its_first_ten_seconds() {
    use tokio::io::AsyncBufReadExt as _;
    let slot = kinetic_testkit::net::NetSlot::take();
    let dir = tempfile::Builder::new().prefix("kinetic-up-quiet").tempdir_in("/var/tmp").unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kinetic"))
        .args(["up", "--data-dir", dir.path().to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{}", crate::free_port())])
        .args(["--node-name", "node-quiet", "--node-listen", "127.0.0.1:0"])
        .args(["--gateway-listen", "127.0.0.1:0"])
        .args(["--bridge", &slot.bridge, "--pod-cidr", &slot.cidr])
        .env("KINETIC_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut logged = Vec::new();
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while let Ok(Ok(Some(line))) = tokio::time::timeout_at(until, lines.next_line()).await {
        logged.push(line);
    }
    // It did start: the node agent registered within those 10 s.
    let kubeconfig = dir.path().join("kubeconfig");
    let client = kinetic_testkit::client_from_kubeconfig(&kubeconfig).await.unwrap();
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    assert!(nodes.get_opt("node-quiet").await.unwrap().is_some(), "{logged:#?}");
    let warnings: Vec<&String> =
        logged.iter().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
    assert!(warnings.is_empty(), "warnings at start: {warnings:#?}");
    // A clean stop: SIGTERM, as a user's Ctrl-C.
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait()).await;
    assert!(status.is_ok(), "kinetic up did not stop on SIGTERM");
}

/// `kinetic up --audit-log FILE` writes one audit.k8s.io/v1 Event per request, and `/metrics`
/// answers kubectl with kube-apiserver's metric names (issue 15, part 7).
#[tokio::test]
async fn kinetic_up_writes_an_audit_log_and_serves_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let port = crate::free_port();
    let mut up = crate::start_with(
        "up",
        dir.path(),
        port,
        &["--no-node", "--audit-log", log.to_str().unwrap()],
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let run = |args: &'static [&'static str]| {
        let (kubeconfig, home) = (up.kubeconfig.clone(), home.path().to_owned());
        async move {
            let out = kinetic_testkit::kubectl(&kubeconfig, &home, args, None).await.unwrap();
            assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    run(&["get", "namespaces"]).await;
    let metrics = run(&["get", "--raw", "/metrics"]).await;
    assert!(metrics.contains("apiserver_request_total{verb=\"LIST\",dry_run=\"\",group=\"\",version=\"v1\",resource=\"namespaces\""), "{metrics}");
    assert!(metrics.contains("# TYPE apiserver_request_duration_seconds histogram"));
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let list = events
        .iter()
        .find(|e| e["verb"] == "list" && e["objectRef"]["resource"] == "namespaces")
        .expect("kubectl's list is audited");
    assert_eq!(
        (list["apiVersion"].as_str(), list["level"].as_str()),
        (Some("audit.k8s.io/v1"), Some("Metadata"))
    );
    assert!(list["userAgent"].as_str().is_some_and(|ua| ua.starts_with("kubectl")), "{list}");
    let pid = up.child.id().unwrap();
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), up.child.wait()).await;
}
