//! Cgroups of a native container: placement (v1: one directory per mounted controller
//! hierarchy, as runc's `fs` manager; v2: one directory in the unified hierarchy, as runc's
//! `fs2`) and the resources `oci.rs` sets (cpu shares/quota/period, memory limit, pids limit,
//! device rules).
//!
//! The values written are runc's: v1 files as named in the OCI spec's cgroup v1 mapping; on v2
//! `cpu.weight` from the shares by runc's `ConvertCPUSharesToCgroupV2Value`, `cpu.max`
//! `"quota period"`, `memory.max`, `pids.max`. Not done on v2: device rules (runc attaches an
//! eBPF program; here they are not enforced on v2 hosts, which this machine is not).

use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

/// Where the cgroup filesystems are mounted.
pub const ROOT: &str = "/sys/fs/cgroup";

/// v1 controller hierarchies runc joins (those mounted on the host).
const V1: &[&str] =
    &["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd"];

/// The devices every container may use whatever its rules (runc's `AllowedDevices`): any
/// mknod, and read/write/mknod of null, zero, full, tty, random, urandom, console, the ptys
/// and ptmx, and tun.
const ALLOWED_DEVICES: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 5:0 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:1 rwm",
    "c 136:* rwm",
    "c 5:2 rwm",
    "c 10:200 rwm",
];

/// True on a host whose cgroups are the unified (v2) hierarchy only.
pub fn unified(root: &Path) -> bool {
    root.join("cgroup.controllers").exists()
}

/// The container's cgroup directories for `cgroups_path` (like `/kinetic/<id>`).
pub fn paths(root: &Path, cgroups_path: &str) -> Vec<PathBuf> {
    let rel = cgroups_path.trim_start_matches('/');
    if unified(root) {
        return vec![root.join(rel)];
    }
    V1.iter().map(|c| root.join(c)).filter(|d| d.is_dir()).map(|d| d.join(rel)).collect()
}

/// The file writes of `res` in the hierarchy of controller `ctrl` (v1) or in the unified
/// hierarchy (`ctrl` "" and `v2`), in order.
pub fn writes(res: &LinuxResources, ctrl: &str, v2: bool) -> Vec<(&'static str, String)> {
    let mut w = Vec::new();
    let cpu = res.cpu().as_ref();
    let shares = cpu.and_then(|c| c.shares());
    let quota = cpu.and_then(|c| c.quota());
    let period = cpu.and_then(|c| c.period());
    let memory = res.memory().as_ref().and_then(|m| m.limit());
    let pids = res.pids().as_ref().map(|p| p.limit());
    if v2 {
        if let Some(s) = shares.filter(|s| *s > 0) {
            // runc: 1 + ((shares - 2) * 9999) / 262142, mapping [2, 262144] to [1, 10000].
            let weight = 1 + ((s.max(2) - 2) * 9999) / 262_142;
            w.push(("cpu.weight", weight.to_string()));
        }
        if quota.is_some() || period.is_some() {
            let q = quota.filter(|q| *q > 0).map_or_else(|| "max".to_owned(), |q| q.to_string());
            w.push(("cpu.max", format!("{q} {}", period.unwrap_or(100_000))));
        }
        if let Some(m) = memory {
            w.push(("memory.max", if m < 0 { "max".into() } else { m.to_string() }));
        }
        if let Some(p) = pids {
            w.push(("pids.max", if p <= 0 { "max".into() } else { p.to_string() }));
        }
        return w;
    }
    match ctrl {
        "cpu" => {
            if let Some(s) = shares.filter(|s| *s > 0) {
                w.push(("cpu.shares", s.to_string()));
            }
            // The period first: a quota above the old period's bound would be refused.
            if let Some(p) = period.filter(|p| *p > 0) {
                w.push(("cpu.cfs_period_us", p.to_string()));
            }
            if let Some(q) = quota.filter(|q| *q != 0) {
                w.push(("cpu.cfs_quota_us", q.to_string()));
            }
        }
        "memory" => {
            if let Some(m) = memory {
                w.push(("memory.limit_in_bytes", m.to_string()));
            }
        }
        "pids" => {
            if let Some(p) = pids {
                w.push(("pids.max", if p <= 0 { "max".into() } else { p.to_string() }));
            }
        }
        "devices" => {
            // runc's order: the config's rules (deny all first when it denies all), then the
            // devices always allowed.
            for d in res.devices().iter().flatten() {
                let file = if d.allow() { "devices.allow" } else { "devices.deny" };
                let rule = d.to_string();
                // An all-devices rule is `a` in the kernel's syntax.
                let rule = if d.typ().is_none() && d.major().is_none() && d.minor().is_none() {
                    format!("a {}", d.access().as_deref().unwrap_or("rwm"))
                } else {
                    rule
                };
                w.push((file, rule));
            }
            for d in ALLOWED_DEVICES {
                w.push(("devices.allow", (*d).to_owned()));
            }
        }
        _ => {}
    }
    w
}

/// Creates the container's cgroups and writes its resources.
///
/// # Errors
/// A directory cannot be made or a value is refused (with the file and value).
pub fn create(
    root: &Path,
    cgroups_path: &str,
    res: Option<&LinuxResources>,
) -> Result<Vec<PathBuf>, String> {
    let dirs = paths(root, cgroups_path);
    let v2 = unified(root);
    let empty = LinuxResources::default();
    let res = res.unwrap_or(&empty);
    for dir in &dirs {
        if v2 {
            enable_controllers(root, dir);
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("creating cgroup {}: {e}", dir.display()))?;
        let ctrl = if v2 {
            ""
        } else {
            dir.strip_prefix(root)
                .ok()
                .and_then(|r| r.iter().next())
                .and_then(|c| c.to_str())
                .unwrap_or("")
        };
        if ctrl == "cpuset" {
            inherit_cpuset(root.join("cpuset").as_path(), dir);
        }
        for (file, value) in writes(res, ctrl, v2) {
            std::fs::write(dir.join(file), &value)
                .map_err(|e| format!("writing {value:?} to {}: {e}", dir.join(file).display()))?;
        }
    }
    Ok(dirs)
}

/// v2: the controllers the resources need, enabled in every ancestor's `cgroup.subtree_control`
/// (a leaf's files exist only then). Failures leave the defaults.
fn enable_controllers(root: &Path, dir: &Path) {
    let mut cur = root.to_path_buf();
    let Ok(rel) = dir.strip_prefix(root) else { return };
    for part in rel.iter() {
        let _ = std::fs::write(cur.join("cgroup.subtree_control"), "+cpu +memory +pids");
        cur.push(part);
        let _ = std::fs::create_dir_all(&cur);
    }
}

/// v1 cpuset: a new cgroup has empty `cpuset.cpus`/`cpuset.mems` and takes no task until they
/// are set; each level copies its parent's, as runc does.
fn inherit_cpuset(top: &Path, dir: &Path) {
    let Ok(rel) = dir.strip_prefix(top) else { return };
    let mut parent = top.to_path_buf();
    for part in rel.iter() {
        let cur = parent.join(part);
        for f in ["cpuset.cpus", "cpuset.mems"] {
            let mine = std::fs::read_to_string(cur.join(f)).unwrap_or_default();
            if mine.trim().is_empty()
                && let Ok(v) = std::fs::read_to_string(parent.join(f))
            {
                let _ = std::fs::write(cur.join(f), v.trim());
            }
        }
        parent = cur;
    }
}

/// Moves the calling process into `dirs` (each `cgroup.procs`; "0" is the writer).
///
/// # Errors
/// A write is refused.
pub fn join(dirs: &[PathBuf]) -> Result<(), String> {
    for d in dirs {
        std::fs::write(d.join("cgroup.procs"), "0")
            .map_err(|e| format!("joining cgroup {}: {e}", d.display()))?;
    }
    Ok(())
}

/// Kills what is left in `dirs` and removes them (retrying while the kernel still counts
/// exiting tasks). Returns the directories that could not be removed.
pub async fn remove(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut left = Vec::new();
    for d in dirs {
        if !d.exists() {
            continue;
        }
        let mut removed = false;
        for _ in 0..100 {
            for pid in std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default().lines() {
                if let Some(p) = pid.trim().parse().ok().and_then(rustix::process::Pid::from_raw) {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
            }
            if std::fs::remove_dir(d).is_ok() || !d.exists() {
                removed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if !removed {
            left.push(d.clone());
        }
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(json: serde_json::Value) -> LinuxResources {
        serde_json::from_value(json).unwrap()
    }

    /// What `oci.rs` writes for a container with limits, as v1 and v2 files.
    #[test]
    fn resources_become_runcs_files_on_v1_and_v2() {
        let r = res(serde_json::json!({
            "devices": [{"allow": false, "access": "rwm"}],
            "memory": {"limit": 67108864},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000},
            "pids": {"limit": 100},
        }));
        type Case<'a> = (&'a str, bool, &'a [(&'a str, &'a str)]);
        let cases: &[Case<'_>] = &[
            (
                "cpu",
                false,
                &[
                    ("cpu.shares", "512"),
                    ("cpu.cfs_period_us", "100000"),
                    ("cpu.cfs_quota_us", "50000"),
                ],
            ),
            ("memory", false, &[("memory.limit_in_bytes", "67108864")]),
            ("pids", false, &[("pids.max", "100")]),
            ("freezer", false, &[]),
            (
                "",
                true,
                &[
                    ("cpu.weight", "20"),
                    ("cpu.max", "50000 100000"),
                    ("memory.max", "67108864"),
                    ("pids.max", "100"),
                ],
            ),
        ];
        for (ctrl, v2, want) in cases {
            let got = writes(&r, ctrl, *v2);
            let got: Vec<(&str, &str)> = got.iter().map(|(f, v)| (*f, v.as_str())).collect();
            assert_eq!(got, *want, "{ctrl} v2={v2}");
        }
        let dev = writes(&r, "devices", false);
        assert_eq!(dev[0], ("devices.deny", "a rwm".to_owned()));
        assert!(dev.contains(&("devices.allow", "c 1:3 rwm".to_owned())));
    }

    #[test]
    fn no_resources_write_nothing_but_the_device_allowlist() {
        let r = LinuxResources::default();
        assert!(writes(&r, "cpu", false).is_empty());
        assert!(writes(&r, "", true).is_empty());
        assert_eq!(writes(&r, "devices", false).len(), ALLOWED_DEVICES.len());
    }

    #[test]
    fn v2_weight_follows_runcs_conversion() {
        for (shares, weight) in [(2, "1"), (1024, "39"), (262_144, "10000")] {
            let r = res(serde_json::json!({"cpu": {"shares": shares}}));
            assert_eq!(writes(&r, "", true), vec![("cpu.weight", weight.to_owned())]);
        }
    }

    #[test]
    fn paths_are_one_per_hierarchy() {
        let dir = tempfile::tempdir().unwrap();
        for c in ["cpu", "memory", "pids"] {
            std::fs::create_dir(dir.path().join(c)).unwrap();
        }
        let mut p = paths(dir.path(), "/kinetic/x");
        p.sort();
        assert_eq!(p.len(), 3);
        assert!(p[0].ends_with("cpu/kinetic/x"));
        std::fs::write(dir.path().join("cgroup.controllers"), "cpu memory").unwrap();
        assert_eq!(paths(dir.path(), "/kinetic/x"), vec![dir.path().join("kinetic/x")]);
    }
}
