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
