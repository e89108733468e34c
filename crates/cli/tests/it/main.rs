//! Integration tests of the `kinetic` binary: `kinetic up` as users run it, and durability of
//! acknowledged writes across `kill -9`.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the first unexpected error.

mod agent_sandbox;
mod batch;
mod batch_policy;
mod bench;
mod coldstart_demo;
mod controller;
mod daemonset;
mod disruption;
mod durability;
mod ehpa;
mod hpa;
mod image_ls;
mod inplace;
mod managed_fields;
mod node;
mod podpool;
mod podpool_code;
mod podpool_code_burst;
mod podpool_serving;
mod preheat;
mod recreate;
mod sandboxes;
mod serve_status;
mod serving;
mod serving_handoff;
mod serving_traffic;
mod sidecarset;
mod sidecarset_hot;
mod statefulset;
mod storage;
mod tenant;
mod united;
mod up;
mod workloads;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// A `kinetic` child process that is SIGKILLed when dropped.
pub struct Kinetic {
    pub child: tokio::process::Child,
    pub kubeconfig: PathBuf,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `kinetic SUBCOMMAND --data-dir DIR --listen 127.0.0.1:PORT` and waits until it
/// answers `/readyz`.
pub async fn start(sub: &str, dir: &Path, port: u16) -> Kinetic {
    start_with(sub, dir, port, &[]).await
}

/// [`start`] with more arguments.
pub async fn start_with(sub: &str, dir: &Path, port: u16, extra: &[&str]) -> Kinetic {
    let kubeconfig = dir.join("kubeconfig");
    let _ = std::fs::remove_file(&kubeconfig);
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kinetic"))
        .args([sub, "--data-dir", dir.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        // Tests run `up` in parallel: each gets its own gateway port unless it names one.
        .args(if sub == "up" && !extra.contains(&"--gateway-listen") {
            &["--gateway-listen", "127.0.0.1:0"][..]
        } else {
            &[]
        })
        .env("KINETIC_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if kubeconfig.exists()
            && let Ok(c) = kinetic_testkit::client_from_kubeconfig(&kubeconfig).await
            && c.request_text(http::Request::get("/readyz").body(Vec::new()).unwrap()).await.is_ok()
        {
            return Kinetic { child, kubeconfig };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("kinetic {sub} did not become ready");
}

/// `kinetic up` with its node agent named `node` on the network slot `slot` (its own bridge and
/// pod CIDR), data in a fresh directory under /var/tmp (returned, removed on drop).
pub async fn up_with_node(node: &str, slot: &kinetic_testkit::net::NetSlot) -> (Kinetic, UpDir) {
    up_on_slot(node, slot, &[]).await
}

/// `kinetic up` with its node agent named `node` on `slot` and the serving gateway on a free
/// loopback port: the `up`, its data directory (an [`UpDir`]: what the agent left is swept
/// when the test ends, however it ends) and the gateway's address. The set-up every
/// Knative test through the gateway shares.
pub async fn up_with_gateway(
    node: &str,
    slot: &kinetic_testkit::net::NetSlot,
) -> (Kinetic, UpDir, String) {
    let gateway = format!("127.0.0.1:{}", free_port());
    let (up, dir) = up_on_slot(node, slot, &["--gateway-listen", &gateway]).await;
    (up, dir, gateway)
}

/// `kinetic up` with its agent named `node` on `slot`'s bridge and pod range, plus `extra`
/// flags.
async fn up_on_slot(
    node: &str,
    slot: &kinetic_testkit::net::NetSlot,
    extra: &[&str],
) -> (Kinetic, UpDir) {
    let dir = UpDir::new();
    let mut args = vec![
        "--node-name",
        node,
        "--node-listen",
        "127.0.0.1:0",
        "--bridge",
        &slot.bridge,
        "--pod-cidr",
        &slot.cidr,
    ];
    args.extend_from_slice(extra);
    let up = start_with("up", dir.path(), free_port(), &args).await;
    (up, dir)
}

/// The host of the Route `name`'s URL once the Route is Ready (its traffic resolved to a ready
/// revision, which the gateway routes), waiting up to 60 s.
pub async fn route_host(up: &Kinetic, home: &Path, name: &str) -> String {
    for i in 0.. {
        let jsonpath = r#"jsonpath={.status.url} {.status.conditions[?(@.type=="Ready")].status}"#;
        let out = kubectl(up, home, &["get", "route", name, "-o", jsonpath]).await;
        if let Some((u, "True")) = out.trim().split_once(' ') {
            return u.trim_start_matches("http://").trim_end_matches('/').to_owned();
        }
        assert!(
            i < 600,
            "no Ready Route {name}: {}",
            kubectl(up, home, &["get", "ksvc,route,rev,cloneset,pods", "-o", "yaml"]).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

/// The data directory of a `kinetic up` with a node agent. Dropped — when its test ends,
/// passes, fails or panics — it kills the `kinetic up` still running on it and takes down the
/// containers, network namespaces and mounts its agent left (they outlive the agent by design),
/// then removes the directory. Before, a failed test's pods ran on for as long as the host did.
pub struct UpDir(tempfile::TempDir);

impl UpDir {
    pub fn new() -> Self {
        Self(tempfile::Builder::new().prefix("kinetic-up-it").tempdir_in("/var/tmp").unwrap())
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Default for UpDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for UpDir {
    fn drop(&mut self) {
        kinetic_testkit::cleanup::kill_owners(self.0.path());
        kinetic_testkit::cleanup::sweep(self.0.path());
    }
}

/// `kubectl ARGS` against `up`, asserting success; its stdout.
pub async fn kubectl(up: &Kinetic, home: &Path, args: &[&str]) -> String {
    kubectl_in(up, home, args, None).await
}

/// [`kubectl`] with `stdin`.
pub async fn kubectl_in(up: &Kinetic, home: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = kinetic_testkit::kubectl(&up.kubeconfig, home, args, stdin).await.unwrap();
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl apply -f -` of `manifest`, retried for up to 10 s while its kinds are not served
/// yet (the controllers install their CRDs when `kinetic up` starts).
pub async fn apply_when_served(up: &Kinetic, home: &Path, manifest: &str) {
    for i in 0.. {
        let out =
            kinetic_testkit::kubectl(&up.kubeconfig, home, &["apply", "-f", "-"], Some(manifest))
                .await
                .unwrap();
        if out.status.success() {
            return;
        }
        assert!(i < 100, "apply: {}", String::from_utf8_lossy(&out.stderr));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
