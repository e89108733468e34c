//! Issue 19: an interrupted `kinetic bench` left its pods running forever (containers, network
//! namespaces and overlay mounts in a temporary directory no agent adopts), and its leftover
//! bridge broke later runs. Each benchmark, sent SIGINT mid-run, must leave nothing behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt as _;

/// Names of the `kinetic-<uid>` network namespaces of the pods under `dir/node/pods`.
fn pod_netns(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("node/pods"))
        .map(|d| d.flatten().map(|e| format!("kinetic-{}", e.file_name().to_string_lossy())))
        .map(|n| n.filter(|ns| Path::new("/var/run/netns").join(ns).exists()).collect())
        .unwrap_or_default()
}

fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(dir))
        .map(str::to_owned)
        .collect()
}

/// Processes whose root directory lies under `dir` (the benchmark's containers).
fn processes_rooted_under(dir: &Path) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter(|e| std::fs::read_link(e.path().join("root")).is_ok_and(|r| r.starts_with(dir)))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Sends SIGINT to the benchmark and waits (up to 150 s) for it to end when dropped, so a
/// failing assertion still lets the run clean up after itself instead of SIGKILLing it.
struct Interrupt(Option<rustix::process::Pid>);

impl Interrupt {
    fn send(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        }
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        let Some(pid) = self.0 else { return };
        self.send();
        let proc = Path::new("/proc").join(pid.as_raw_nonzero().to_string());
        for _ in 0..1500 {
            // Ended: gone, or a zombie nobody has reaped yet.
            let stat = std::fs::read_to_string(proc.join("stat")).unwrap_or_default();
            if stat.rsplit_once(") ").is_none_or(|(_, rest)| rest.starts_with('Z')) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn bridge_exists(bridge: &str) -> bool {
    Path::new("/sys/class/net").join(bridge).exists()
}

/// Runs `kinetic bench ARGS`, waits until `pods` of its pods run (with their network
/// namespaces), sends SIGINT, and checks that the run removed everything it had made.
async fn interrupted_bench_leaves_nothing(args: &[&str], bridge: &str, pods: usize) {
    assert!(!bridge_exists(bridge), "bridge {bridge} exists before the run");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kinetic"))
        .arg("bench")
        .args(args)
        .env("KINETIC_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = i32::try_from(child.id().unwrap()).unwrap();
    let mut interrupt = Interrupt(rustix::process::Pid::from_raw(pid));
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut dir: Option<PathBuf> = None;
    let mut seen = Vec::new();
    while dir.is_none() {
        let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await
            .expect("no `platform up` line within 120 s")
            .unwrap()
            .unwrap_or_else(|| panic!("the benchmark ended before its platform was up: {seen:#?}"));
        dir = line.strip_prefix("platform up in ").map(PathBuf::from);
        seen.push(line);
    }
    let dir = dir.unwrap();
    let output = tokio::spawn(async move {
        let mut rest = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push(line);
        }
        rest
    });
    let mut netns = Vec::new();
    for _ in 0..1200 {
        netns = pod_netns(&dir);
        if netns.len() >= pods && !mounts_under(&dir).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(netns.len() >= pods, "fewer than {pods} pods ran within 120 s");
    assert!(bridge_exists(bridge), "no bridge {bridge} mid-run");
    assert!(!mounts_under(&dir).is_empty(), "no mounts under {} mid-run", dir.display());

    interrupt.send();
    let status = tokio::time::timeout(Duration::from_secs(150), child.wait())
        .await
        .expect("the interrupted benchmark did not end within 150 s")
        .unwrap();
    let rest = output.await.unwrap();
    assert!(!status.success(), "an interrupted benchmark reports failure: {rest:#?}");
    assert!(rest.iter().any(|l| l.contains("interrupted by SIGINT")), "{rest:#?}");

    assert!(!dir.exists(), "{} is left: {rest:#?}", dir.display());
    assert!(mounts_under(&dir).is_empty(), "mounts left: {:?}", mounts_under(&dir));
    let left: Vec<&String> =
        netns.iter().filter(|n| Path::new("/var/run/netns").join(n).exists()).collect();
    assert!(left.is_empty(), "network namespaces left: {left:?}");
    assert!(processes_rooted_under(&dir).is_empty(), "container processes left");
    assert!(!bridge_exists(bridge), "bridge {bridge} left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_bench_pods_leaves_no_containers_netns_mounts_or_bridge() {
    interrupted_bench_leaves_nothing(
        &["pods", "--pods", "40", "--concurrency", "8", "--burst", "40", "--floor-runs", "1"],
        "kbench0",
        1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_bench_rollout_leaves_no_containers_netns_mounts_or_bridge() {
    interrupted_bench_leaves_nothing(&["rollout", "--replicas", "6"], "kbench1", 4).await;
}

/// `kinetic bench serve` with tiny counts: it runs to its end, its table has every figure with
/// a value that parses, nothing was lost from zero, and it leaves neither its directory nor its
/// bridge (nor nginx) behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_serve_with_tiny_counts_prints_a_table_that_parses_and_cleans_up() {
    let slot = kinetic_testkit::net::NetSlot::take();
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_kinetic"))
            .args(["bench", "serve", "--cold-starts", "2", "--burst", "20", "--requests", "100"])
            .args(["--max-seconds", "10", "--bridge", &slot.bridge, "--pod-cidr", &slot.cidr])
            .env("KINETIC_LOG", "warn")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("kinetic bench serve with tiny counts did not end within 300 s")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    let dir = stderr.lines().find_map(|l| l.strip_prefix("platform up in ")).map(PathBuf::from);
    let dir = dir.expect("no `platform up in` line");

    // `figure  value  target  met?`, columns separated by two spaces or more.
    let value = |figure: &str| -> String {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(figure))
            .unwrap_or_else(|| panic!("no row {figure:?} in\n{stdout}"));
        let rest = line[figure.len()..].trim_start();
        rest.split("  ").next().unwrap_or_default().trim().to_owned()
    };
    let millis = |figure: &str| -> f64 {
        let v = value(figure);
        v.strip_suffix(" ms").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{v:?}"))
    };
    for q in ["p50 (2 from zero)", "p90", "p99", "max"] {
        let ms = millis(&format!("cold start, first byte {q}"));
        assert!(ms > 0.0 && ms < 120_000.0, "cold start {q}: {ms} ms");
    }
    assert_eq!(value("cold starts answered 200"), "2/2");
    assert_eq!(value("burst of 20 from zero: answered 200"), "20/20");
    assert_eq!(value("  connection errors"), "0");
    for name in ["direct to the pod", "gateway", "nginx"] {
        let rps: f64 =
            value(&format!("steady, {name}: requests/s (100 measured)")).parse().unwrap();
        assert!(rps > 0.0, "{name}: {rps} requests/s");
        assert_eq!(
            value(&format!("  {name}: errors / non-200 / client connections"))[..6],
            *"0 / 0 "
        );
    }
    let ratio = value("gateway / nginx throughput");
    assert!(ratio.strip_suffix('×').is_some_and(|r| r.parse::<f64>().is_ok()), "{ratio:?}");
    assert!(stdout.contains("where a cold start's time goes, over 2 cold starts"), "{stdout}");

    assert!(!dir.exists(), "{} is left", dir.display());
    assert!(!bridge_exists(&slot.bridge), "bridge {} left", slot.bridge);
    assert!(processes_rooted_under(&dir).is_empty(), "container processes left");
    // nginx's master and workers keep its error log (under the directory) open.
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|p| {
            std::fs::read_dir(p.path().join("fd")).is_ok_and(|fds| {
                fds.flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.starts_with(&dir)))
            })
        })
        .map(|p| p.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "processes with files under the directory left: {left:?}");
}
