//! Sweeping what a `kinetic up` or a benchmark platform left under its data directory.
//!
//! Containers outlive the node agent on purpose (their shim keeps them, so a restarted agent
//! adopts them), so a test or benchmark that ends — finished, failed or interrupted — while its
//! pods run must take them down itself, or they keep running in a directory no agent will ever
//! adopt (found: HPA busy-loop pods burning a core for an hour after their test failed).

use std::path::Path;
use std::time::{Duration, Instant};

/// SIGKILLs every process started with `dir` on its command line except containers' shims
/// (`kinetic up --data-dir DIR`, its node agent), and waits up to 5 s for them to be gone (or
/// zombies), so nothing restarts what [`sweep`] removes.
pub fn kill_owners(dir: &Path) {
    kill_matching(dir, false);
}

/// SIGKILLs the processes with `dir` on their command line: the shims (`shims`) or everything
/// else, and waits up to 5 s for them to be gone or zombies.
fn kill_matching(dir: &Path, shims: bool) {
    let exact = dir.to_string_lossy().into_owned();
    let inside = format!("{exact}/");
    let me = std::process::id();
    let mut killed = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> =
            cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let is_shim = args.iter().any(|a| a == "__shim");
        if is_shim != shims || !args.iter().any(|a| *a == exact || a.contains(&inside)) {
            continue;
        }
        if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            killed.push(pid);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && killed.iter().any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.starts_with(" Z")))
        })
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes what a node agent left under `dir`: runc containers of the runc roots there (their
/// shims then exit), the network namespaces of pods with a directory there, and mounts under
/// `dir` (deepest first). Best effort: every step is tried even when an earlier one fails.
pub fn sweep(dir: &Path) {
    for root in [dir.join("node/runc"), dir.join("floor-runc")] {
        let Ok(entries) = std::fs::read_dir(&root) else { continue };
        for id in entries.flatten().map(|e| e.file_name()) {
            let _ = std::process::Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["delete", "-f"])
                .arg(&id)
                .output();
        }
    }
    // What runc could not delete (its state gone with a half-removed directory): the
    // processes of every container cgroup of the pods here (`kinetic/<pod uid>-<container>-<n>`),
    // then the shims that waited on them.
    let uids: Vec<String> = std::fs::read_dir(dir.join("node/pods"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for cg in std::fs::read_dir("/sys/fs/cgroup/pids/kinetic").into_iter().flatten().flatten() {
        let name = cg.file_name().to_string_lossy().into_owned();
        if !uids.iter().any(|u| name.starts_with(&format!("{u}-"))) {
            continue;
        }
        let procs = std::fs::read_to_string(cg.path().join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if let Some(p) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
    }
    kill_matching(dir, true);
    // The native runtime's containers: their init (gone with its shim's pid namespace only if
    // the shim was its parent and died) and cgroups (`node/native/<id>/state.json`).
    for st in std::fs::read_dir(dir.join("node/native")).into_iter().flatten().flatten() {
        let Ok(b) = std::fs::read(st.path().join("state.json")) else { continue };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b) else { continue };
        if let Some(p) = v["pid"]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
        for cg in v["cgroups"].as_array().into_iter().flatten().filter_map(|c| c.as_str()) {
            for _ in 0..50 {
                if std::fs::remove_dir(cg).is_ok() || !Path::new(cg).exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    for netns in netns_names(dir) {
        let _ = std::process::Command::new("ip").args(["netns", "delete", &netns]).output();
    }
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(dir))
        .map(str::to_owned)
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = std::process::Command::new("umount").args(["-l", &m]).output();
    }
}

/// The network namespaces a node agent under `dir` made: its pods' (`kinetic-<uid>`, or the
/// ready sandbox a pod claimed, named in its record) and its ready sandboxes' (markers in
/// `node/network/ready`). Deleting a namespace also removes its veth pair.
pub fn netns_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for pod in std::fs::read_dir(dir.join("node/pods")).into_iter().flatten().flatten() {
        out.push(format!("kinetic-{}", pod.file_name().to_string_lossy()));
        let rec = std::fs::read(pod.path().join("state.json")).unwrap_or_default();
        if let Some(ns) = serde_json::from_slice::<serde_json::Value>(&rec)
            .ok()
            .and_then(|v| v.get("netns")?.as_str().map(str::to_owned))
        {
            out.push(ns);
        }
    }
    for m in std::fs::read_dir(dir.join("node/network/ready")).into_iter().flatten().flatten() {
        let f = m.file_name().to_string_lossy().into_owned();
        if let Some(ns) = f.strip_suffix(".ready").or_else(|| f.strip_suffix(".making")) {
            out.push(ns.to_owned());
        }
    }
    out.sort();
    out.dedup();
    out
}
