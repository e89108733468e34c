//! The OCI runtime configuration (`config.json`) of one container, from the pod spec, the
//! image config and the pod's sandbox.
//!
//! Defaults follow containerd's CRI plugin: its default capability set, masked and read-only
//! paths, `/dev/shm` and `/dev/termination-log`, the pod's network namespace joined by path,
//! and a cgroup per container under `/kinetic`. The config is oci-spec's [`Spec`], the type the
//! native runtime reads it back into.

use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use k8s_openapi::api::core::v1::{Container, Pod};
use kinetic_image::ImageConfig;
use oci_spec::runtime::{
    Capabilities, Capability, Linux, LinuxCapabilities, LinuxCpu, LinuxDeviceCgroup, LinuxMemory,
    LinuxNamespace, LinuxNamespaceType, LinuxResources, Process, Root, Spec, User,
};

use crate::env::ConfigError;
use crate::volumes::Prepared;

/// containerd's default capabilities for a non-privileged container.
const DEFAULT_CAPS: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
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
/// context asks for something not supported (or an unknown capability, or a negative id).
pub fn config(i: &Inputs<'_>) -> Result<Spec, ConfigError> {
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
    let id = |what: &str, n: i64| {
        u32::try_from(n).map_err(|_| ConfigError(format!("invalid {what} {n}: out of range")))
    };
    let groups = psc
        .and_then(|s| s.supplemental_groups.as_ref())
        .into_iter()
        .flatten()
        .map(|g| id("supplemental group", *g))
        .collect::<Result<Vec<u32>, _>>()?;
    let privileged = sc.and_then(|s| s.privileged).unwrap_or(false);
    let mut caps: Capabilities = DEFAULT_CAPS.iter().copied().collect();
    if let Some(cs) = sc.and_then(|s| s.capabilities.as_ref()) {
        // "CHOWN" or "CAP_CHOWN", any case, as containerd accepts them.
        let parse = |c: &str| {
            let upper = c.to_ascii_uppercase();
            let name = upper.strip_prefix("CAP_").unwrap_or(&upper);
            Capability::from_str(name)
                .map_err(|_| ConfigError(format!("unknown capability {c:?} in securityContext")))
        };
        for d in cs.drop.iter().flatten() {
            if d.eq_ignore_ascii_case("ALL") {
                caps.clear();
            } else {
                caps.remove(&parse(d)?);
            }
        }
        for a in cs.add.iter().flatten() {
            caps.insert(parse(a)?);
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

    let fs = |dest: &str, typ: &str, source: &str, opts: &[&'static str]| Mount {
        destination: dest.into(),
        typ: typ.into(),
        source: source.into(),
        options: opts.to_vec(),
    };
    let mut mounts = vec![
        fs("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        fs("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"]),
        fs(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        ),
        fs("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
        fs("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"]),
        fs("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"]),
        fs("/sys/fs/cgroup", "cgroup", "cgroup", &["nosuid", "noexec", "nodev", "relatime", "ro"]),
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
    let memory_limit = match q(lim, "memory") {
        Some(mem) => Some(kinetic_machinery::quantity::value(&mem).map_err(|_| bad(&mem))?),
        None => None,
    };
    // cpu.shares from the request (or the limit when only a limit is set), as kubelet does:
    // 1024 per core, minimum 2.
    let shares = match q(req, "cpu").or_else(|| q(lim, "cpu")) {
        Some(cpu) => {
            let m = kinetic_machinery::quantity::milli(&cpu).map_err(|_| bad(&cpu))?;
            Some(u64::try_from((m * 1024 / 1000).max(2)).map_err(|_| bad(&cpu))?)
        }
        None => None,
    };
    let quota = match q(lim, "cpu") {
        Some(cpu) => {
            let m = kinetic_machinery::quantity::milli(&cpu).map_err(|_| bad(&cpu))?;
            Some((m * 100).max(1000))
        }
        None => None,
    };
    let mut resources = LinuxResources::default();
    // Every device denied; runc then allows the default ones (as containerd's spec).
    let mut deny = LinuxDeviceCgroup::default();
    deny.set_allow(false).set_access(Some("rwm".into()));
    resources.set_devices(Some(vec![deny]));
    if let Some(limit) = memory_limit {
        resources.set_memory(Some(*LinuxMemory::default().set_limit(Some(limit))));
    }
    if shares.is_some() || quota.is_some() {
        let mut cpu = LinuxCpu::default();
        cpu.set_shares(shares);
        if quota.is_some() {
            cpu.set_quota(quota).set_period(Some(100_000));
        }
        resources.set_cpu(Some(cpu));
    }

    // A `tty: true` container gets a terminal (its shim holds the primary side) and, as
    // containerd's `WithTTY` gives it, `TERM=xterm`.
    let tty = i.container.tty == Some(true);
    if tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    // Every field is set: oci-spec's own defaults (youki's) would add rlimits, namespaces and
    // capabilities of their own.
    let mut user = User::default();
    user.set_uid(id("runAsUser", uid)?)
        .set_gid(id("runAsGroup", gid)?)
        .set_additional_gids(Some(groups));
    let mut capabilities = LinuxCapabilities::default();
    capabilities
        .set_bounding(Some(caps.clone()))
        .set_effective(Some(caps.clone()))
        .set_permitted(Some(caps))
        .set_inheritable(None)
        .set_ambient(None);
    let mut process = Process::default();
    process
        .set_terminal(Some(tty))
        .set_user(user)
        .set_args(Some(args))
        .set_env(Some(env))
        .set_cwd(cwd.into())
        .set_capabilities(Some(capabilities))
        .set_no_new_privileges(Some(no_new_privs))
        .set_oom_score_adj(Some(1000))
        .set_rlimits(None);
    let mut root = Root::default();
    root.set_path(i.rootfs.to_path_buf()).set_readonly(Some(read_only_root));
    let ns = |typ: LinuxNamespaceType, path: Option<&Path>| {
        let mut n = LinuxNamespace::default();
        n.set_typ(typ).set_path(path.map(Path::to_path_buf));
        n
    };
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
    let mut linux = Linux::default();
    linux
        .set_cgroups_path(Some(i.cgroup.clone().into()))
        .set_resources(Some(resources))
        .set_namespaces(Some(vec![
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::Ipc, None),
            ns(LinuxNamespaceType::Uts, None),
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Network, Some(i.netns)),
        ]))
        .set_masked_paths(Some(strings(&[
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi",
        ])))
        .set_readonly_paths(Some(strings(&[
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
        ])));
    let mut spec = Spec::default();
    spec.set_version("1.0.2".into())
        .set_process(Some(process))
        .set_root(Some(root))
        .set_hostname(Some(pod_name))
        .set_mounts(Some(mounts.into_iter().map(Mount::into_oci).collect()))
        .set_annotations(None)
        .set_linux(Some(linux));
    Ok(spec)
}

/// A mount of the config, made into oci-spec's (whose fields are private).
struct Mount {
    destination: String,
    typ: String,
    source: PathBuf,
    options: Vec<&'static str>,
}

impl Mount {
    fn into_oci(self) -> oci_spec::runtime::Mount {
        let mut m = oci_spec::runtime::Mount::default();
        m.set_destination(self.destination.into())
            .set_typ(Some(self.typ))
            .set_source(Some(self.source))
            .set_options(Some(self.options.into_iter().map(str::to_owned).collect()));
        m
    }
}

fn bind(dest: &str, src: &Path, ro: bool) -> Mount {
    let mut options = vec!["rbind", "rprivate"];
    if ro {
        options.push("ro");
    }
    Mount {
        destination: dest.to_owned(),
        typ: "bind".to_owned(),
        source: src.to_path_buf(),
        options,
    }
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

    /// The config of `container` in a pod with `pod_spec` (merged into a one-container pod).
    fn build(
        pod_spec: serde_json::Value,
        container: serde_json::Value,
    ) -> Result<Spec, ConfigError> {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": pod_spec,
        }))
        .unwrap();
        let container: Container = serde_json::from_value(container).unwrap();
        let mut volumes = std::collections::BTreeMap::new();
        volumes.insert(
            "data".to_owned(),
            Prepared { path: "/var/tmp/no-such-volume".into(), read_only: false },
        );
        volumes.insert("cfg".to_owned(), Prepared { path: "/var/tmp/cfg".into(), read_only: true });
        let image = image(&["/entry"], &["default"]);
        let i = Inputs {
            pod: &pod,
            container: &container,
            image: &image,
            rootfs: Path::new("/var/tmp/rootfs"),
            env: vec![("FOO".into(), "bar".into())],
            netns: Path::new("/var/run/netns/kinetic-x"),
            cgroup: "/kinetic/x-c-1".into(),
            volumes: &volumes,
            etc_dir: Path::new("/var/tmp/etc"),
            termination_log: Path::new("/var/tmp/tlog"),
        };
        config(&i)
    }

    fn cases() -> Vec<(serde_json::Value, serde_json::Value)> {
        use serde_json::json;
        vec![
            (json!({}), json!({"name": "c"})),
            (
                json!({"securityContext": {"supplementalGroups": [3000, 3001], "runAsUser": 7}}),
                json!({"name": "c", "tty": true, "workingDir": "/w",
                       "securityContext": {"runAsGroup": 2000, "readOnlyRootFilesystem": true,
                           "allowPrivilegeEscalation": false,
                           "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "cap_chown"]}},
                       "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
                       "volumeMounts": [{"name": "data", "mountPath": "/data"},
                                        {"name": "cfg", "mountPath": "/cfg"}]}),
            ),
            (
                json!({}),
                json!({"name": "c", "command": ["sh"],
                       "securityContext": {"capabilities": {"drop": ["KILL"], "add": ["SYS_TIME"]}},
                       "resources": {"requests": {"cpu": "250m"}}}),
            ),
        ]
    }

    /// Capabilities in a stable order.
    fn caps(v: &serde_json::Value) -> Vec<String> {
        let mut c: Vec<String> = v.as_array().unwrap().iter().map(|c| c.to_string()).collect();
        c.sort();
        c
    }

    #[test]
    fn config_sets_what_containerd_would_and_none_of_oci_specs_defaults() {
        let (pod, container) = cases().remove(0);
        let v = serde_json::to_value(build(pod, container).unwrap()).unwrap();
        let p = &v["process"];
        // oci-spec's defaults (youki's) would add an nofile rlimit, TERM, ambient and
        // inheritable capabilities, annotations and namespaces of their own.
        assert!(p.get("rlimits").is_none() && v.get("annotations").is_none(), "{v:#}");
        assert!(p["capabilities"].get("ambient").is_none(), "{p:#}");
        assert!(p["capabilities"].get("inheritable").is_none(), "{p:#}");
        assert_eq!(
            p["env"],
            serde_json::json!([
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "FOO=bar",
                "HOSTNAME=p"
            ])
        );
        assert_eq!(caps(&p["capabilities"]["bounding"]).len(), DEFAULT_CAPS.len());
        assert_eq!(p["capabilities"]["bounding"].as_array().unwrap().len(), 14);
        assert_eq!(
            (&p["user"]["uid"], &p["terminal"], &p["noNewPrivileges"]),
            (&0.into(), &false.into(), &false.into())
        );
        assert_eq!(v["root"], serde_json::json!({"path": "/var/tmp/rootfs", "readonly": false}));
        assert_eq!(v["hostname"], "p");
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount", "network"]);
        assert_eq!(v["linux"]["namespaces"][4]["path"], "/var/run/netns/kinetic-x");
        assert_eq!(
            v["linux"]["resources"],
            serde_json::json!({"devices": [{"allow": false, "access": "rwm"}]})
        );
        assert_eq!(v["mounts"].as_array().unwrap().len(), 11, "{:#}", v["mounts"]);
    }

    #[test]
    fn security_context_resources_and_volumes_reach_the_config() {
        let (pod, container) = cases().remove(1);
        let v = serde_json::to_value(build(pod, container).unwrap()).unwrap();
        let p = &v["process"];
        assert_eq!(
            p["user"],
            serde_json::json!({"uid": 7, "gid": 2000, "additionalGids": [3000, 3001]})
        );
        assert_eq!(
            caps(&p["capabilities"]["effective"]),
            ["\"CAP_CHOWN\"", "\"CAP_NET_BIND_SERVICE\""]
        );
        assert_eq!(p["capabilities"]["bounding"], p["capabilities"]["permitted"]);
        assert_eq!(
            (&p["terminal"], &p["noNewPrivileges"], &p["cwd"]),
            (&true.into(), &true.into(), &"/w".into())
        );
        assert!(p["env"].as_array().unwrap().contains(&"TERM=xterm".into()), "{p:#}");
        assert_eq!(v["root"]["readonly"], true);
        let r = &v["linux"]["resources"];
        assert_eq!(r["memory"]["limit"], 64 << 20);
        assert_eq!(r["cpu"], serde_json::json!({"shares": 512, "quota": 50000, "period": 100000}));
        let mounts = v["mounts"].as_array().unwrap();
        let at = |d: &str| mounts.iter().find(|m| m["destination"] == d).unwrap().clone();
        assert_eq!(at("/data")["options"], serde_json::json!(["rbind", "rprivate"]));
        assert_eq!(at("/cfg")["options"], serde_json::json!(["rbind", "rprivate", "ro"]));
        // A request alone gives shares and no quota; drop and add of single capabilities.
        let (pod, container) = cases().remove(2);
        let v = serde_json::to_value(build(pod, container).unwrap()).unwrap();
        assert_eq!(v["linux"]["resources"]["cpu"], serde_json::json!({"shares": 256}));
        let eff = caps(&v["process"]["capabilities"]["effective"]);
        assert!(
            eff.contains(&"\"CAP_SYS_TIME\"".into()) && !eff.contains(&"\"CAP_KILL\"".into()),
            "{eff:?}"
        );
    }

    #[test]
    fn unknown_capabilities_and_negative_ids_are_config_errors() {
        use serde_json::json;
        let caps =
            json!({"name": "c", "securityContext": {"capabilities": {"add": ["NOT_A_CAP"]}}});
        let e = build(json!({}), caps).unwrap_err();
        assert!(e.0.contains("unknown capability \"NOT_A_CAP\""), "{}", e.0);
        let user = json!({"name": "c", "securityContext": {"runAsUser": -1}});
        let e = build(json!({}), user).unwrap_err();
        assert!(e.0.contains("invalid runAsUser -1"), "{}", e.0);
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
