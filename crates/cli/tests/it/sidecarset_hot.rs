//! SidecarSet hot upgrade on `kinetic up` with real containers (issue 17): "hot upgrade keeps a
//! sidecar serving through the switch".
//!
//! The sidecar is `tests/fixtures/handover.rs`, compiled here with `rustc` into the test
//! images: it serves HTTP on port 8081 and hands its listening socket to its successor over a
//! Unix socket in a shared emptyDir (upstream's sample sidecar migrates the same way, from its
//! PostStartHook), so the switch from `proxy-1` (v1) to `proxy-2` (v2) never closes the port.
//! A client opens a new connection to the pod IP after each answer for the whole upgrade and
//! must never fail; it sees v1, then v2. The app container is never restarted, the pod keeps
//! its UID and IP, and afterwards `proxy-1` runs the empty image.

use std::io::{Read as _, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kinetic_image::push::{Compression, Format, ImageSpec, Layer, TarBuilder};
use kinetic_testkit::net::NetSlot;
use kinetic_testkit::registry::Registry;
use kube::ResourceExt as _;
use kube::api::Api;

use crate::kubectl;
use crate::sidecarset::{ip_of, restarts, spec_image};

const SIDECARSET: &str = "apiVersion: apps.kruise.io/v1alpha1
kind: SidecarSet
metadata:
  name: hot
spec:
  selector:
    matchLabels:
      app: hot
  volumes:
  - name: handover
    emptyDir: {}
  containers:
  - name: proxy
    image: SIDE
    command: [/handover]
    env:
    - {name: SOCK, value: /run/handover/sock}
    - {name: PORT, value: '8081'}
    volumeMounts:
    - {name: handover, mountPath: /run/handover}
    readinessProbe:
      exec: {command: [cat, /tmp/serving]}
      periodSeconds: 1
    upgradeStrategy:
      upgradeType: HotUpgrade
      hotUpgradeEmptyImage: EMPTY
";

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: hot
  labels:
    app: hot
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: APP
    command: [sh, -c, exec httpd -f -p 8080 -h /www]
";

/// The empty image's `/handover`: idles, ready, and ends on SIGTERM.
const EMPTY: &str =
    "#!/bin/sh\necho empty > /tmp/serving\ntrap 'exit 0' TERM\nwhile :; do sleep 1; done\n";

/// Compiles the hand-over sidecar, statically linked so it runs in a busybox image.
fn compile_handover(dir: &std::path::Path) -> std::path::PathBuf {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/handover.rs");
    let out = dir.join("handover");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = std::process::Command::new(&rustc)
        .args(["--edition", "2024", "-C", "opt-level=1", "-C", "target-feature=+crt-static"])
        .args(["-C", "strip=symbols", "-o"])
        .arg(&out)
        .arg(src)
        .status()
        .unwrap_or_else(|e| panic!("running {rustc} (the test compiles its sidecar): {e}"));
    assert!(status.success(), "{rustc} could not compile {src}");
    out
}

/// Pushes busybox plus `/handover` (mode 0755) and `/version`.
async fn image(registry: &Registry, tag: &str, handover: &[u8], version: &str) -> String {
    let mut t = TarBuilder::new();
    t.file("handover", handover, 0o755).unwrap();
    t.file("version", version.as_bytes(), 0o644).unwrap();
    let layer = Layer::from_tar(&t.finish().unwrap(), Compression::Gzip, Format::Oci).unwrap();
    let reference = format!("{}/proxy:{tag}", registry.addr());
    let layers = vec![kinetic_testkit::images::busybox_layer().unwrap(), layer];
    let config = kinetic_testkit::images::busybox_config();
    kinetic_testkit::images::push(&reference, ImageSpec { config, layers, ..ImageSpec::default() })
        .await
        .unwrap();
    reference
}

/// One request on a new connection: the body of a 200, or what went wrong.
fn get(ip: &str) -> Result<String, String> {
    let addr = format!("{ip}:8081").parse().map_err(|e| format!("{e}"))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| format!("{e}"))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: hot\r\n\r\n").map_err(|e| format!("write: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| format!("read: {e}"))?;
    match out.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.trim().to_owned()),
        _ => Err(format!("answer {out:?}")),
    }
}

/// What the polling client saw: the versions in the order they answered, the failed
/// requests, and how many answered.
#[derive(Clone, Default)]
struct Seen {
    versions: Vec<String>,
    failures: Vec<String>,
    answers: usize,
}

fn status_image(p: &Pod, name: &str) -> String {
    let statuses = p.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    statuses
        .into_iter()
        .flatten()
        .find(|c| c.name == name)
        .map(|c| c.image.clone())
        .unwrap_or_default()
}

fn container_ready(p: &Pod, name: &str) -> bool {
    let statuses = p.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    statuses.into_iter().flatten().any(|c| c.name == name && c.ready)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_upgrade_keeps_a_sidecar_serving_through_the_switch() {
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let build = tempfile::tempdir().unwrap();
    let handover = std::fs::read(compile_handover(build.path())).unwrap();
    let v1 = image(&registry, "v1", &handover, "v1\n").await;
    let v2 = image(&registry, "v2", &handover, "v2\n").await;
    let empty = image(&registry, "empty", EMPTY.as_bytes(), "empty\n").await;
    let app = kinetic_testkit::images::busybox(&registry, "app", "v1", &[]).await.unwrap();
    let (up, _dir) = crate::up_with_node("node-hot", &slot).await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let client = kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let manifest = |side: &str| SIDECARSET.replace("SIDE", side).replace("EMPTY", &empty);
    let wait_pod = |what: &'static str, done: Box<dyn Fn(&Pod) -> bool + Send + Sync>| {
        let pods = pods.clone();
        async move {
            for i in 0.. {
                let p = pods.get("hot").await.unwrap();
                if done(&p) {
                    return p;
                }
                assert!(i < 1200, "{what}: {:#?} {:#?}", p.metadata.annotations, p.status);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            unreachable!()
        }
    };

    crate::apply_when_served(&up, h, &manifest(&v1)).await;
    crate::kubectl_in(&up, h, &["apply", "-f", "-"], Some(&POD.replace("APP", &app))).await;
    let before = wait_pod(
        "the pod with its hot pair ready",
        Box::new(|p| crate::workloads::is_ready(p) && !ip_of(p).is_empty()),
    )
    .await;
    let names: Vec<String> =
        before.spec.iter().flat_map(|s| s.containers.iter()).map(|c| c.name.clone()).collect();
    assert_eq!(names, ["proxy-1", "proxy-2", "app"]);
    assert_eq!(spec_image(&before, "proxy-2"), empty);
    let ip = ip_of(&before);
    assert_eq!(
        tokio::task::spawn_blocking({
            let ip = ip.clone();
            move || get(&ip)
        })
        .await
        .unwrap(),
        Ok("v1".to_owned())
    );

    // A client polling the sidecar over new connections for the whole switch.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let poller = {
        let (stop, seen, ip) = (stop.clone(), seen.clone(), ip.clone());
        tokio::task::spawn_blocking(move || {
            while !stop.load(Ordering::Relaxed) {
                let r = get(&ip);
                let mut s = seen.lock().unwrap();
                match r {
                    Ok(v) => {
                        s.answers += 1;
                        if s.versions.last() != Some(&v) {
                            s.versions.push(v);
                        }
                    }
                    Err(e) => s.failures.push(e),
                }
            }
        })
    };

    crate::kubectl_in(&up, h, &["apply", "-f", "-"], Some(&manifest(&v2))).await;
    let (v2c, emptyc) = (v2.clone(), empty.clone());
    let after = wait_pod(
        "proxy-2 on v2 working, proxy-1 back on the empty image",
        Box::new(move |p| {
            spec_image(p, "proxy-2") == v2c
                && status_image(p, "proxy-2") == v2c
                && spec_image(p, "proxy-1") == emptyc
                && status_image(p, "proxy-1") == emptyc
                && container_ready(p, "proxy-1")
                && crate::workloads::is_ready(p)
        }),
    )
    .await;
    // Keep polling a moment after the switch.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    poller.await.unwrap();
    let Seen { versions, failures, answers } = seen.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed requests (of {answers} answered): {failures:?}",
        failures.len()
    );
    assert_eq!(versions, ["v1", "v2"], "the sidecar served v1, then v2");
    assert!(answers > 20, "only {answers} answers during the switch");

    assert_eq!(after.uid(), before.uid(), "same pod");
    assert_eq!(ip_of(&after), ip, "same IP");
    assert_eq!(
        restarts(&after, "app"),
        restarts(&before, "app"),
        "the app container did not restart"
    );
    assert_eq!(
        after
            .annotations()
            .get("kruise.io/sidecarset-working-hotupgrade-container")
            .map(String::as_str),
        Some(r#"{"proxy":"proxy-2"}"#)
    );
    assert_eq!(
        after.annotations().get("version.sidecarset.kruise.io/proxy-1").map(String::as_str),
        Some("0")
    );
    let status = kubectl(
        &up,
        h,
        &["get", "sidecarset", "hot", "-o",
          "jsonpath={.status.matchedPods}/{.status.updatedPods}/{.status.readyPods}/{.status.updatedReadyPods}"],
    )
    .await;
    assert_eq!(status, "1/1/1/1");

    // Containers outlive a killed agent by design: delete the pod before stopping `kinetic up`.
    kubectl(&up, h, &["delete", "pod", "hot", "--wait=true"]).await;
}
