//! The "done when": `kubectl run` against `kinetic up` gives a Running, Ready pod with
//! its own IP that answers HTTP; `kubectl logs`, `kinetic trace pod` and `kubectl delete` work.

use std::time::Duration;

use crate::kubectl;
use kinetic_testkit::net::NetSlot;
use kinetic_testkit::registry::Registry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_run_gives_a_ready_pod_that_answers_http_and_logs_traces_deletes() {
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let image = kinetic_testkit::images::busybox(&registry, "web", "v1", &[]).await.unwrap();
    let (up, _dir) = crate::up_with_node("node-a", &slot).await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // The node registers itself and the scheduler binds to it.
    for _ in 0..100 {
        if kubectl(&up, h, &["get", "nodes", "-o", "name"]).await.contains("node/node-a") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    kubectl(
        &up,
        h,
        &[
            "run",
            "web",
            &format!("--image={image}"),
            "--command",
            "--",
            "sh",
            "-c",
            "echo started web; exec httpd -f -p 8080 -h /www",
        ],
    )
    .await;
    kubectl(&up, h, &["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"]).await;
    let ip = kubectl(&up, h, &["get", "pod", "web", "-o", "jsonpath={.status.podIP}"]).await;
    assert!(ip.starts_with("10.201."), "pod IP {ip:?}");
    let wide = kubectl(&up, h, &["get", "pod", "web", "-o", "wide"]).await;
    assert!(wide.contains("Running") && wide.contains("node-a") && wide.contains(&ip), "{wide}");
    let page = crate::node::http_get(&ip, 8080).await;
    assert!(page.contains("hello from kinetic"), "{page}");
    let logs = kubectl(&up, h, &["logs", "web"]).await;
    assert!(logs.contains("started web"), "{logs}");
    // -f streams through the API server's proxy until the container ends; -c names it.
    kubectl(
        &up,
        h,
        &[
            "run",
            "talker",
            &format!("--image={image}"),
            "--restart=Never",
            "--command",
            "--",
            "sh",
            "-c",
            "sleep 2; for i in 1 2 3; do echo tick $i; sleep 0.5; done",
        ],
    )
    .await;
    kubectl(
        &up,
        h,
        &["wait", "--for=jsonpath={.status.phase}=Running", "pod/talker", "--timeout=60s"],
    )
    .await;
    let followed = kubectl(&up, h, &["logs", "-f", "talker", "-c", "talker"]).await;
    assert_eq!(followed, "tick 1\ntick 2\ntick 3\n");
    kubectl(&up, h, &["delete", "pod", "talker"]).await;
    let trace = tokio::process::Command::new(env!("CARGO_BIN_EXE_kinetic"))
        .args(["trace", "--kubeconfig", up.kubeconfig.to_str().unwrap(), "pod", "web"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&trace.stdout);
    assert!(trace.status.success(), "{}", String::from_utf8_lossy(&trace.stderr));
    for phase in ["schedule", "sandbox", "pull", "start", "total"] {
        assert!(text.to_lowercase().contains(phase), "trace lacks {phase}:\n{text}");
    }
    // Issue 14: the CPU the start cost, by process; the pod's total over all of them is > 0.
    let cpu_total = text
        .lines()
        .skip_while(|l| !l.starts_with("CPU ms"))
        .find(|l| l.starts_with("total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok());
    assert!(cpu_total.is_some_and(|v| v > 0.0), "trace lacks the start's CPU:\n{text}");
    let events =
        kubectl(&up, h, &["get", "events", "--field-selector", "involvedObject.name=web"]).await;
    for reason in ["Scheduled", "Pulled", "Created", "Started"] {
        assert!(events.contains(reason), "no {reason} event:\n{events}");
    }
    // httpd runs as pid 1 without a TERM handler, so (as on kubelet) only the grace deadline
    // ends it: keep that short.
    kubectl(&up, h, &["delete", "pod", "web", "--grace-period=2", "--timeout=30s"]).await;
    let left = kubectl(&up, h, &["get", "pods", "-o", "name"]).await;
    assert!(left.trim().is_empty(), "{left}");
    // Stop the control plane (and its node agent) before the slot's bridge goes.
    drop(up);
}

pub async fn http_get(ip: &str, port: u16) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect((ip, port)).await.unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Issue 19: a pod stuck in Terminating behind a SIGTERM-ignoring process went only at its
/// original 30 s deadline although `kubectl delete --grace-period=1` had shortened it. Kubelet
/// re-reads the grace period of a pod it is stopping; so must the agent, for a second delete
/// and for `kubectl drain --grace-period` (which deletes, having no eviction API to call here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shortened_grace_period_of_a_terminating_pod_is_honoured_by_delete_and_drain() {
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let image = kinetic_testkit::images::busybox(&registry, "stubborn", "v1", &[]).await.unwrap();
    let (up, _dir) = crate::up_with_node("node-g", &slot).await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // Pid 1 ignores SIGTERM: only the grace deadline's SIGKILL ends it.
    for pod in ["stubborn-a", "stubborn-b"] {
        kubectl(
            &up,
            h,
            &[
                "run",
                pod,
                &format!("--image={image}"),
                "--command",
                "--",
                "sh",
                "-c",
                "trap '' TERM; while true; do sleep 1; done",
            ],
        )
        .await;
    }
    for pod in ["stubborn-a", "stubborn-b"] {
        kubectl(&up, h, &["wait", "--for=condition=Ready", &format!("pod/{pod}"), "--timeout=60s"])
            .await;
        // The default grace period: 30 s of Terminating.
        kubectl(&up, h, &["delete", "pod", pod, "--wait=false"]).await;
        let grace = kubectl(
            &up,
            h,
            &["get", "pod", pod, "-o", "jsonpath={.metadata.deletionGracePeriodSeconds}"],
        )
        .await;
        assert_eq!(grace, "30", "{pod} is terminating with the default grace period");
    }

    let started = std::time::Instant::now();
    kubectl(&up, h, &["delete", "pod", "stubborn-a", "--grace-period=1", "--timeout=20s"]).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "second delete with --grace-period=1 took {took:?}");

    let started = std::time::Instant::now();
    kubectl(
        &up,
        h,
        &["drain", "node-g", "--force", "--grace-period=1", "--timeout=20s", "--ignore-daemonsets"],
    )
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "drain --grace-period=1 took {took:?}");
    let left = kubectl(&up, h, &["get", "pods", "-o", "name"]).await;
    assert!(left.trim().is_empty(), "{left}");
    drop(up);
}

/// Issue 10: `kinetic up` killed and started again (the agent restarts with it) leaves its
/// containers logging through their shims (`kinetic __shim`), so `kubectl logs -f` of the new
/// process streams on with no line lost; `--timestamps` gives kubelet's RFC3339Nano times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinetic_up_killed_and_restarted_keeps_container_logs_streaming() {
    use tokio::io::AsyncBufReadExt as _;
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let image = kinetic_testkit::images::busybox(&registry, "ticker", "v1", &[]).await.unwrap();
    let dir = crate::UpDir::new();
    let port = crate::free_port();
    let args = [
        "--node-name",
        "node-l",
        "--node-listen",
        "127.0.0.1:0",
        "--bridge",
        &slot.bridge,
        "--pod-cidr",
        &slot.cidr,
    ];
    let mut up = crate::start_with("up", dir.path(), port, &args).await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    kubectl(
        &up,
        h,
        &[
            "run",
            "ticker",
            &format!("--image={image}"),
            "--command",
            "--",
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done",
        ],
    )
    .await;
    kubectl(&up, h, &["wait", "--for=condition=Ready", "pod/ticker", "--timeout=60s"]).await;
    let mut stamped = String::new();
    for _ in 0..100 {
        stamped = kubectl(&up, h, &["logs", "--timestamps", "ticker"]).await;
        if stamped.lines().count() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let times: Vec<jiff::Timestamp> = stamped
        .lines()
        .map(|l| l.split_once(' ').expect("a timestamp").0.parse().expect("RFC 3339"))
        .collect();
    assert!(times.len() >= 5 && times.windows(2).all(|w| w[0] < w[1]), "{stamped}");

    up.child.start_kill().unwrap();
    let _ = up.child.wait().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let up = crate::start_with("up", dir.path(), port, &args).await;
    // The new agent serves the pod once it has registered and adopted it.
    for i in 0.. {
        let out =
            kinetic_testkit::kubectl(&up.kubeconfig, h, &["logs", "--tail=1", "ticker"], None);
        if out.await.unwrap().status.success() {
            break;
        }
        assert!(i < 300, "the restarted agent never served the pod's logs");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut child = tokio::process::Command::new(kinetic_testkit::kubectl_bin())
        .args(["logs", "-f", "ticker"])
        .env("KUBECONFIG", &up.kubeconfig)
        .env("HOME", h)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen: Vec<u32> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // Read until well past the restart.
    while seen.len() < times.len() + 25 {
        assert!(std::time::Instant::now() < deadline, "{seen:?}");
        let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await
        else {
            panic!("kubectl logs -f ended or stalled after {seen:?}");
        };
        seen.push(line.strip_prefix("tick ").and_then(|n| n.parse().ok()).expect("a tick"));
    }
    let _ = child.kill().await;
    assert!(seen.iter().copied().eq(1..=seen.len() as u32), "a line was lost: {seen:?}");
    kubectl(&up, h, &["delete", "pod", "ticker", "--grace-period=1", "--timeout=30s"]).await;
    drop(up);
}

/// Regression: a `kinetic up` test that ended with its pods running (failed, panicked, or just
/// never deleted them) left the containers running for as long as the host did — their shims
/// outlive the agent by design. Dropping the test's [`crate::UpDir`] must take them down: no
/// process in the pod's cgroups, no shim, no network namespace, no mount under the directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_tests_up_dir_takes_its_running_pods_down() {
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let image = kinetic_testkit::images::busybox(&registry, "left", "v1", &[]).await.unwrap();
    let (up, dir) = crate::up_with_node("node-left", &slot).await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    for _ in 0..100 {
        if kubectl(&up, h, &["get", "nodes", "-o", "name"]).await.contains("node/node-left") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run = ["run", "left", &format!("--image={image}"), "--command", "--", "sleep", "3600"];
    kubectl(&up, h, &run).await;
    kubectl(&up, h, &["wait", "--for=condition=Ready", "pod/left", "--timeout=60s"]).await;
    let uid = kubectl(&up, h, &["get", "pod", "left", "-o", "jsonpath={.metadata.uid}"]).await;
    let path = dir.path().to_owned();
    let cgroups = || -> Vec<String> {
        std::fs::read_dir("/sys/fs/cgroup/pids/kinetic")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&uid)))
            .flat_map(|p| {
                std::fs::read_to_string(p.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    assert!(!cgroups().is_empty(), "the pod's container runs before the drop");
    // The test ends with its pod running: `kinetic up` is still up when the directory drops
    // first, as with `let (up, _dir) = ...`.
    drop(dir);
    drop(up);
    assert_eq!(cgroups(), Vec::<String>::new(), "container processes left running");
    let shims = std::process::Command::new("pgrep")
        .args(["-f", &format!("{}/", path.display())])
        .output()
        .unwrap();
    assert!(shims.stdout.is_empty(), "processes left: {}", String::from_utf8_lossy(&shims.stdout));
    let netns = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&netns.stdout).contains(&uid), "network namespace left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&path.display().to_string()), "mounts left under {}", path.display());
    assert!(!path.exists(), "{} left", path.display());
}
