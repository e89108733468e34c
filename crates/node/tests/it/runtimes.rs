//! The OCI config cases of issue 14, run under both runtimes (runc and the native one) with
//! real containers: what a container sees of its user, capabilities, rootfs, mounts, rlimits,
//! env, working directory, hostname and cgroup limits, what `kubectl exec` sees, and how a
//! failing entrypoint ends, must be the same.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kinetic_node::runtime::Kind;
use serde_json::{Value, json};

use crate::harness::Cluster;

/// Prints what the container sees, one `key: value` per line, then `END` and sleeps (so
/// `kubectl exec` can look too).
const PROBE: &str = r#"
echo "id: $(id)"
grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp)' /proc/self/status | sed 's/\t/ /'
echo "pid 1: $(cat /proc/1/comm)"
echo "pwd: $(pwd)"
echo "hostname: $(hostname)"
echo "rlimits: nofile $(ulimit -n) nproc $(ulimit -u) stack $(ulimit -s) core $(ulimit -c)"
env | sort | sed 's/^/env: /'
awk '{ split($4, o, ","); print "mount:", $2, $3, o[1] }' /proc/self/mounts | sort
ls /dev | tr '\n' ' ' | sed 's/^/dev: /'; echo
if touch /rootfs-probe 2>/dev/null; then echo "rootfs: writable"; else echo "rootfs: read-only"; fi
if sh -c 'echo 1 > /proc/sys/kernel/ns_last_pid' 2>/dev/null; then echo "proc-sys: writable"; else echo "proc-sys: read-only"; fi
echo "kcore: $(head -c 16 /proc/kcore 2>/dev/null | wc -c)"
echo "cgroup-memory: $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null)"
echo "cgroup-cpu: $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null) $(cat /sys/fs/cgroup/cpu/cpu.shares 2>/dev/null)"
echo "cgroup-pids: $(cat /sys/fs/cgroup/pids/pids.max 2>/dev/null)"
echo "devices: $(head -c 4 /dev/zero | wc -c) $(echo x > /dev/null && echo null-ok)"
echo END
exec sleep 3600
"#;

/// The exec side: what a command run by `kubectl exec` sees.
const EXEC: &str = "id; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; pwd; echo \"FOO=$FOO\"; hostname; echo pid1=$(cat /proc/1/comm)";

/// The pods of the table: (name, spec).
fn cases(image: &str) -> Vec<(&'static str, Value)> {
    let probe = |extra: Value| {
        let mut c = json!({"name": "c", "image": image, "command": ["sh", "-c", PROBE]});
        json_patch::merge(&mut c, &extra);
        json!({"restartPolicy": "Never", "containers": [c]})
    };
    vec![
        ("plain", probe(json!({}))),
        ("locked", {
            let mut s = probe(json!({
                "workingDir": "/tmp/work",
                "env": [{"name": "FOO", "value": "bar"}, {"name": "PATH", "value": "/bin:/usr/bin"}],
                "securityContext": {
                    "runAsUser": 1000, "runAsGroup": 2000,
                    "readOnlyRootFilesystem": true,
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "CHOWN"]},
                },
                "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
            }));
            s["securityContext"] = json!({"supplementalGroups": [3000, 3001]});
            s
        }),
        (
            "missing",
            json!({"restartPolicy": "Never",
                   "containers": [{"name": "c", "image": image, "command": ["/no/such/binary"]}]}),
        ),
        (
            "notinpath",
            json!({"restartPolicy": "Never",
                   "containers": [{"name": "c", "image": image, "command": ["no-such-command"]}]}),
        ),
        (
            "notexec",
            json!({"restartPolicy": "Never",
                   "containers": [{"name": "c", "image": image, "command": ["/etc/passwd"]}]}),
        ),
        (
            "exit3",
            json!({"restartPolicy": "Never",
                   "containers": [{"name": "c", "image": image, "command": ["sh", "-c", "echo bye; exit 3"]}]}),
        ),
    ]
}

/// The container's log lines (CRI format, prefix stripped).
fn log_lines(c: &Cluster, pod: &Pod) -> Vec<String> {
    let uid = pod.metadata.uid.clone().unwrap();
    let path = c.data_dir().join("pods").join(uid).join("logs/c/1.log");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or("").to_owned())
        // A chunk boundary may split a line (`P` records); empty pieces say nothing.
        .filter(|l| !l.is_empty())
        .collect()
}

/// What one case shows: its observations, by line.
async fn observe(c: &Cluster, name: &str, spec: &Value) -> Vec<String> {
    c.create(name, spec.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    loop {
        let pod = c.pods().get(name).await.unwrap();
        let lines = log_lines(c, &pod);
        let status = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|s| s.first().cloned());
        let state = status.as_ref().and_then(|s| s.state.clone()).unwrap_or_default();
        if let Some(w) =
            state.waiting.as_ref().filter(|w| w.reason.as_deref() == Some("RunContainerError"))
        {
            // runc's text carries its own prefix: compare what follows.
            let msg = w.message.clone().unwrap_or_default();
            let msg = msg.split(" failed: ").skip(1).collect::<Vec<_>>().join(" failed: ");
            // runc's (logrus) wording: `time=… level=error msg="runc run failed: <text>"`.
            let msg = match msg.split_once(" msg=\"") {
                Some((_, m)) => m
                    .trim_end_matches('"')
                    .replace("\\\"", "\"")
                    .trim_start_matches("runc run failed: ")
                    .to_owned(),
                None => msg,
            };
            out.push(format!("waiting: {} {msg}", w.reason.clone().unwrap_or_default()));
            break;
        }
        if let Some(t) = state.terminated.as_ref() {
            out.push(format!(
                "terminated: {} {}",
                t.exit_code,
                t.reason.clone().unwrap_or_default()
            ));
            out.extend(lines.iter().map(|l| format!("log: {l}")));
            break;
        }
        if lines.iter().any(|l| l == "END") {
            out.extend(lines.into_iter().filter(|l| l != "END"));
            let exec = c.server.kubectl_ok(&["exec", name, "--", "sh", "-c", EXEC]).await.unwrap();
            out.extend(exec.lines().map(|l| format!("exec: {l}")));
            break;
        }
        assert!(Instant::now() < deadline, "{name}: no result; status {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.pods().delete(name, &Default::default()).await.unwrap();
    c.wait_gone(name, 30).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_config_cases_look_the_same_under_runc_and_the_native_runtime() {
    let mut seen: BTreeMap<&str, Vec<(Kind, Vec<String>)>> = BTreeMap::new();
    for kind in [Kind::Runc, Kind::Native] {
        let c = Cluster::start_with(|cfg| cfg.runtime = kind).await;
        let image =
            kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
        // Each cluster has its own pod range, so the API relay on its bridge's gateway (the
        // pods' `KUBERNETES_SERVICE_HOST`) differs by nature: compare it by name.
        let gw = kinetic_node::pod_gateway(&c.cfg.pod_cidr).unwrap().to_string();
        let relay = |l: String| match l.strip_suffix(&format!("={gw}")) {
            Some(head) => format!("{head}=<gateway>"),
            None => l.replace(&format!("//{gw}:"), "//<gateway>:"),
        };
        for (name, spec) in cases(&image) {
            let lines = observe(&c, name, &spec).await.into_iter().map(relay).collect();
            seen.entry(name).or_default().push((kind, lines));
        }
        let left = c.settled_leftovers(10).await;
        assert!(left.is_empty(), "{kind}: left behind: {left:#?}");
    }
    let mut diffs = Vec::new();
    for (name, runs) in &seen {
        let [(_, runc), (_, native)] = &runs[..] else { panic!("{name}: {runs:?}") };
        // Lines that differ by nature: none expected. Print both sides of any difference.
        let only_runc: Vec<&String> = runc.iter().filter(|l| !native.contains(l)).collect();
        let only_native: Vec<&String> = native.iter().filter(|l| !runc.contains(l)).collect();
        if !only_runc.is_empty() || !only_native.is_empty() {
            diffs.push(format!(
                "{name}:\n  runc only:   {only_runc:#?}\n  native only: {only_native:#?}"
            ));
        }
        assert!(!runc.is_empty(), "{name}: nothing observed");
    }
    if !diffs.is_empty() {
        let dump = format!("{seen:#?}");
        let _ = std::fs::write(std::env::temp_dir().join("kinetic-runtimes-table.txt"), &dump);
    }
    assert!(diffs.is_empty(), "the runtimes differ:\n{}", diffs.join("\n"));
    // And the cases show what they set (so an equal failure of both is not a pass).
    let runc_of = |n: &str| seen[n][0].1.join("\n");
    let locked = runc_of("locked");
    assert!(locked.contains("id: uid=1000 gid=2000 groups=3000,3001"), "{locked}");
    assert!(locked.contains("rootfs: read-only") && locked.contains("NoNewPrivs: 1"), "{locked}");
    // A non-root process keeps its capabilities only in the bounding set (no ambient ones).
    assert!(locked.contains("CapBnd: 0000000000000401"), "{locked}");
    assert!(runc_of("plain").contains("CapEff: 00000000a80425fb"), "{}", runc_of("plain"));
    assert!(locked.contains("pwd: /tmp/work") && locked.contains("exec: FOO=bar"), "{locked}");
    assert!(
        locked.contains("cgroup-memory: 67108864") && locked.contains("cgroup-cpu: 50000 512"),
        "{locked}"
    );
    let plain = runc_of("plain");
    assert!(plain.contains("env: KUBERNETES_SERVICE_HOST=<gateway>"), "{plain}");
    assert!(
        plain.contains("pid 1: sh")
            && plain.contains("rootfs: writable")
            && plain.contains("kcore: 0"),
        "{plain}"
    );
    assert!(runc_of("missing").contains("no such file or directory"), "{}", runc_of("missing"));
    assert!(runc_of("exit3").contains("terminated: 3 Error"), "{}", runc_of("exit3"));
}

/// Native containers outlive the agent (their shim is their parent) and the next agent adopts
/// them: same container, still served, still exec-able, deleted cleanly. A create the crashed
/// agent left half-made (state and cgroup, no process) is removed at the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_containers_survive_an_agent_restart_and_half_made_ones_are_removed() {
    let mut c = Cluster::start_with(|cfg| cfg.runtime = Kind::Native).await;
    let image = kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
    c.create(
        "kept",
        json!({"containers": [{"name": "web", "image": image,
                               "command": ["httpd", "-f", "-p", "8080", "-h", "/www"]}]}),
    )
    .await;
    let before = c.wait_ready("kept").await;
    let ip = crate::harness::pod_ip(&before);
    c.stop_agent().await;
    assert!(Cluster::http_get(&ip, 8080, "/").await.is_ok(), "container stopped with the agent");
    // What a crash between the state write and the clone leaves: state without a pid, and a
    // cgroup.
    let stale = "00000000-0000-0000-0000-000000000000-app-1";
    let cgroup = std::path::Path::new("/sys/fs/cgroup/pids/kinetic").join(stale);
    std::fs::create_dir_all(&cgroup).unwrap();
    let dir = c.data_dir().join("native").join(stale);
    std::fs::create_dir_all(&dir).unwrap();
    let state =
        json!({"bundle": "/nonexistent", "pid": null, "start_time": null, "cgroups": [cgroup]});
    std::fs::write(dir.join("state.json"), state.to_string()).unwrap();
    c.start_agent().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let p = c.pods().get("kept").await.unwrap();
        let same = crate::harness::container_status(&p, "web").container_id
            == crate::harness::container_status(&before, "web").container_id;
        if same && crate::harness::is_ready(&p) && !dir.exists() && !cgroup.exists() {
            break p;
        }
        assert!(Instant::now() < deadline, "not adopted or not swept: {:?}", p.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(crate::harness::container_status(&after, "web").restart_count, 0);
    assert!(Cluster::http_get(&ip, 8080, "/").await.is_ok());
    let comm = c.server.kubectl_ok(&["exec", "kept", "--", "cat", "/proc/1/comm"]).await.unwrap();
    assert_eq!(comm.trim(), "httpd");
    c.pods().delete("kept", &Default::default()).await.unwrap();
    c.wait_gone("kept", 15).await;
    let left = c.settled_leftovers(10).await;
    assert!(left.is_empty(), "left behind: {left:#?}");
}
