//! The OCI runtime configuration (`config.json`) of one container, from the pod spec, the
//! image config and the pod's sandbox.
//!
//! Defaults follow containerd's CRI plugin: its default capability set, masked and read-only
//! paths, `/dev/shm` and `/dev/termination-log`, the pod's network namespace joined by path,
//! and a cgroup per container under `/kinetic`.

use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod};
use kinetic_image::ImageConfig;
use serde_json::{Value, json};

use crate::env::ConfigError;
use crate::volumes::Prepared;

/// containerd's default capabilities for a non-privileged container.
const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Everything the config needs besides the pod and container specs.
pub struct Inputs<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    pub image: &'a ImageConfig,
    pub rootfs: &'a Path,
    pub env: Vec<(String, String)>,
    pub netns: &'a Path,
    pub cgroup: String,
    pub volumes: &'a std::collections::BTreeMap<String, Prepared>,
    /// Pod-level files bind-mounted at /etc/hosts, /etc/hostname, /etc/resolv.conf.
    pub etc_dir: &'a Path,
    /// The container's termination message file, mounted at `terminationMessagePath`.
    pub termination_log: &'a Path,
}

/// The argv kubelet would run: `command` replaces the image's entrypoint (and then the image's
/// cmd is ignored), `args` replace the image's cmd.
pub fn argv(c: &Container, image: &ImageConfig) -> Vec<String> {
    match (&c.command, &c.args) {
        (Some(cmd), args) if !cmd.is_empty() => {
            cmd.iter().chain(args.iter().flatten()).cloned().collect()
        }
        (_, Some(args)) if !args.is_empty() => {
            image.entrypoint.iter().chain(args.iter()).cloned().collect()
        }
        _ => image.entrypoint.iter().chain(image.cmd.iter()).cloned().collect(),
    }
}

/// The runtime config.
///
/// # Errors
/// The container has nothing to run, a volume mount names an unknown volume, or the security
/// context asks for something not supported.
pub fn config(i: &Inputs<'_>) -> Result<Value, ConfigError> {
    let c = i.container;
    let vars: std::collections::BTreeMap<&str, &str> =
        i.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let args: Vec<String> = argv(c, i.image).iter().map(|a| crate::env::expand(a, &vars)).collect();
    if args.is_empty() {
        return Err(ConfigError("no command specified".into()));
    }
    let mut env: Vec<String> = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    // Container variables override the image's of the same name.
    for (k, v) in &i.env {
        names.insert(k.as_str());
        env.push(format!("{k}={v}"));
    }
    for e in &i.image.env {
        let name = e.split('=').next().unwrap_or_default();
        if !names.contains(name) {
            env.insert(0, e.clone());
        }
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    let pod_name = i.pod.metadata.name.clone().unwrap_or_default();
    env.push(format!("HOSTNAME={pod_name}"));

    let sc = c.security_context.as_ref();
    let psc = i.pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let (image_uid, image_gid) = parse_user(i.image.user.as_deref().unwrap_or_default(), i.rootfs)?;
    let uid =
        sc.and_then(|s| s.run_as_user).or(psc.and_then(|s| s.run_as_user)).unwrap_or(image_uid);
    let gid =
        sc.and_then(|s| s.run_as_group).or(psc.and_then(|s| s.run_as_group)).unwrap_or(image_gid);
    if sc.and_then(|s| s.run_as_non_root).or(psc.and_then(|s| s.run_as_non_root)).unwrap_or(false)
        && uid == 0
    {
        return Err(ConfigError("container has runAsNonRoot and image will run as root".into()));
    }
    let groups: Vec<i64> = psc.and_then(|s| s.supplemental_groups.clone()).unwrap_or_default();
    let privileged = sc.and_then(|s| s.privileged).unwrap_or(false);
    let mut caps: Vec<String> = DEFAULT_CAPS.iter().map(|s| (*s).to_owned()).collect();
    if let Some(cs) = sc.and_then(|s| s.capabilities.as_ref()) {
        let norm = |c: &str| {
            let c = c.to_ascii_uppercase();
            if c.starts_with("CAP_") { c } else { format!("CAP_{c}") }
        };
        for d in cs.drop.iter().flatten() {
            if d.eq_ignore_ascii_case("ALL") {
                caps.clear();
            } else {
                let d = norm(d);
                caps.retain(|c| *c != d);
            }
        }
        for a in cs.add.iter().flatten() {
            let a = norm(a);
            if !caps.contains(&a) {
                caps.push(a);
            }
        }
    }
    if privileged {
        return Err(ConfigError(
            "privileged containers are not supported by the kinetic node agent".into(),
        ));
    }
    let read_only_root = sc.and_then(|s| s.read_only_root_filesystem).unwrap_or(false);
    let no_new_privs = !sc.and_then(|s| s.allow_privilege_escalation).unwrap_or(true);
    let cwd = c
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| i.image.working_dir.clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());

    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    for f in ["hosts", "hostname", "resolv.conf"] {
        mounts.push(bind(&format!("/etc/{f}"), &i.etc_dir.join(f), false));
    }
    let tpath = c.termination_message_path.clone().unwrap_or_else(|| "/dev/termination-log".into());
    mounts.push(bind(&tpath, i.termination_log, false));
    for m in c.volume_mounts.iter().flatten() {
        let v = i.volumes.get(&m.name).ok_or_else(|| {
            ConfigError(format!("volume mount {:?} refers to an unknown volume", m.name))
        })?;
        let mut src = v.path.clone();
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if Path::new(sub).components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
                return Err(ConfigError(format!("invalid subPath {sub:?}")));
            }
            src = src.join(sub);
            if !src.exists() {
                std::fs::create_dir_all(&src)
                    .map_err(|e| ConfigError(format!("creating subPath {sub:?}: {e}")))?;
            }
        }
        mounts.push(bind(&m.mount_path, &src, v.read_only || m.read_only.unwrap_or(false)));
    }

    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    let lim = c.resources.as_ref().and_then(|r| r.limits.as_ref());
    let req = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let q = |m: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >,
             k: &str| { m.and_then(|m| m.get(k)).map(|q| q.0.clone()) };
    let bad = |s: &str| ConfigError(format!("invalid quantity {s:?}"));
    if let Some(mem) = q(lim, "memory") {
        let bytes = kinetic_machinery::quantity::value(&mem).map_err(|_| bad(&mem))?;
        resources["memory"] = json!({"limit": bytes});
    }
    // cpu.shares from the request (or the limit when only a limit is set), as kubelet does:
    // 1024 per core, minimum 2.
    if let Some(cpu) = q(req, "cpu").or_else(|| q(lim, "cpu")) {
        let m = kinetic_machinery::quantity::milli(&cpu).map_err(|_| bad(&cpu))?;
        resources["cpu"]["shares"] = json!((m * 1024 / 1000).max(2));
    }
    if let Some(cpu) = q(lim, "cpu") {
        let m = kinetic_machinery::quantity::milli(&cpu).map_err(|_| bad(&cpu))?;
        resources["cpu"]["quota"] = json!((m * 100).max(1000));
        resources["cpu"]["period"] = json!(100_000);
    }

    // A `tty: true` container gets a terminal (its shim holds the primary side) and, as
    // containerd's `WithTTY` gives it, `TERM=xterm`.
    let tty = i.container.tty == Some(true);
    if tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    let config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": tty,
            "user": {"uid": uid, "gid": gid, "additionalGids": groups},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            "noNewPrivileges": no_new_privs,
            "oomScoreAdj": 1000,
        },
        "root": {"path": i.rootfs, "readonly": read_only_root},
        "hostname": pod_name,
        "mounts": mounts,
        "linux": {
            "cgroupsPath": i.cgroup,
            "resources": resources,
            "namespaces": [
                {"type": "pid"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
                {"type": "network", "path": i.netns},
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    });
    Ok(config)
}

fn bind(dest: &str, src: &Path, ro: bool) -> Value {
    let mut opts = vec!["rbind", "rprivate"];
    if ro {
        opts.push("ro");
    }
    json!({"destination": dest, "type": "bind", "source": src, "options": opts})
}

/// The image's `user` ("uid", "uid:gid", "name", "name:group") as numbers, looking names up
/// in the image's /etc/passwd and /etc/group.
fn parse_user(user: &str, rootfs: &Path) -> Result<(i64, i64), ConfigError> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = user.split_once(':').map_or((user, None), |(u, g)| (u, Some(g)));
    let lookup = |file: &str, name: &str, field: usize| -> Option<(i64, i64)> {
        let text = std::fs::read_to_string(rootfs.join("etc").join(file)).ok()?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name)).then(|| {
                (
                    f.get(2).and_then(|s| s.parse().ok()).unwrap_or(0),
                    f.get(field).and_then(|s| s.parse().ok()).unwrap_or(0),
                )
            })
        })
    };
    let (uid, default_gid) = match u.parse::<i64>() {
        Ok(n) => (n, lookup_uid_gid(rootfs, n).unwrap_or(0)),
        Err(_) => lookup("passwd", u, 3).ok_or_else(|| {
            ConfigError(format!("unable to find user {u}: no matching entries in passwd file"))
        })?,
    };
    let gid = match g {
        None => default_gid,
        Some(g) => match g.parse::<i64>() {
            Ok(n) => n,
            Err(_) => lookup("group", g, 2).map(|(gid, _)| gid).ok_or_else(|| {
                ConfigError(format!("unable to find group {g}: no matching entries in group file"))
            })?,
        },
    };
    Ok((uid, gid))
}

fn lookup_uid_gid(rootfs: &Path, uid: i64) -> Option<i64> {
    let text = std::fs::read_to_string(rootfs.join("etc/passwd")).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.get(2).and_then(|s| s.parse::<i64>().ok()) == Some(uid))
            .then(|| f.get(3).and_then(|s| s.parse().ok()))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(entry: &[&str], cmd: &[&str]) -> ImageConfig {
        ImageConfig {
            entrypoint: entry.iter().map(|s| (*s).to_owned()).collect(),
            cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn argv_follows_kubernetes_rules() {
        let img = image(&["/entry"], &["default"]);
        let mut c = Container::default();
        assert_eq!(argv(&c, &img), ["/entry", "default"]);
        c.args = Some(vec!["a".into()]);
        assert_eq!(argv(&c, &img), ["/entry", "a"]);
        c.command = Some(vec!["/bin/sh".into()]);
        assert_eq!(argv(&c, &img), ["/bin/sh", "a"]);
        c.args = None;
        assert_eq!(argv(&c, &img), ["/bin/sh"]);
    }
}
