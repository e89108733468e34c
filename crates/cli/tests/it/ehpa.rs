//! Issue 13 part 5, online: on `kinetic up` with a real node agent, Crane's
//! EffectiveHorizontalPodAutoscaler scales a CloneSet of real pods out *before* each rise of a
//! periodic load once it has seen two cycles, and only after the rise before that.
//!
//! The load: a per-minute trace (a 16-minute cycle: 8 minutes at 1 pod of load, 8 at 3.5)
//! replayed at 60× (a minute per second) by a bounded generator on 127.0.0.1, which serves the
//! current load as an `External` metric through the controller's loopback source
//! (`ehpa.kinetic.dev/external-metrics-url`). Why a synthetic metric rather than pods burning
//! CPU: the node agent's CPU rate is a 10–15 s window (metrics-server's too), as long as the
//! whole rise at this speed, and the CPU a burning pod gets on a shared two-core host follows
//! the other tests more than the trace. Everything else is the real path: the EHPA object from
//! kubectl, the controller inside `kinetic up`, its history at `dsp.sampleInterval: 1s`, the
//! lead time from the real pods' start-up timelines, the CloneSet's `scale` subresource, and
//! pods started by runc.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kinetic_testkit::net::NetSlot;
use kinetic_testkit::registry::Registry;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{Kinetic, kubectl};

/// Minutes of one cycle of the trace, and the minute its rise starts.
const CYCLE: usize = 16;
const RISE: usize = 8;
/// How long the load runs (seconds at 60×): the rises at 8, 24, 40 and 56 s.
const RUN_SECS: u64 = 60;

/// The trace: the load per minute, in pods.
fn trace() -> Vec<f64> {
    (0..(RUN_SECS as usize + CYCLE)).map(|m| if m % CYCLE < RISE { 1.0 } else { 3.5 }).collect()
}

/// The load generator: replays `load` (one value per minute) at 60× from `start`, serving the
/// current value at `GET /load` on 127.0.0.1 until the returned task is aborted.
async fn replay(
    load: Vec<f64>,
    start: Instant,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let load = Arc::new(load);
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let load = load.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let minute = start.elapsed().as_secs() as usize;
                let value = load.get(minute).or(load.last()).copied().unwrap_or(0.0);
                let resp = if req.starts_with("GET /load ") {
                    format!("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{value}\n")
                } else {
                    "HTTP/1.0 404 Not Found\r\n\r\n".to_owned()
                };
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (addr, task)
}

fn manifests(image: &str, metrics: std::net::SocketAddr) -> String {
    format!(
        r#"apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata: {{name: web, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {{name: web, image: "{image}", command: ["sleep", "3600"]}}
---
apiVersion: autoscaling.crane.io/v1alpha1
kind: EffectiveHorizontalPodAutoscaler
metadata:
  name: web
  namespace: default
  annotations: {{ehpa.kinetic.dev/external-metrics-url: "http://{metrics}"}}
spec:
  scaleTargetRef: {{apiVersion: apps.kruise.io/v1alpha1, kind: CloneSet, name: web}}
  minReplicas: 1
  maxReplicas: 6
  scaleStrategy: Auto
  metrics:
  - type: External
    external:
      metric: {{name: load}}
      target: {{type: AverageValue, averageValue: "1"}}
  behavior:
    scaleUp: {{stabilizationWindowSeconds: 0, policies: [{{type: Pods, value: 10, periodSeconds: 1}}]}}
    scaleDown: {{stabilizationWindowSeconds: 0, policies: [{{type: Percent, value: 100, periodSeconds: 1}}]}}
  prediction:
    predictionWindowSeconds: 60
    predictionAlgorithm:
      algorithmType: dsp
      dsp: {{sampleInterval: 1s, historyLength: 2m}}
"#
    )
}

async fn wait_no_pods(up: &Kinetic, h: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = kubectl(up, h, &["get", "pods", "-o", "name"]).await;
        if left.trim().is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "pods left: {left}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ehpa_scales_a_cloneset_out_before_each_rise_of_a_periodic_load() {
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let image = kinetic_testkit::images::busybox(&registry, "web", "v1", &[]).await.unwrap();
    let (up, _dir) = crate::up_with_node("node-ehpa", &slot).await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let client = kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap();
    for _ in 0..100 {
        if kubectl(&up, h, &["get", "nodes", "-o", "name"]).await.contains("node/node-ehpa") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let trace = trace();
    // The controllers install their CRDs one after another when `kinetic up` starts; Crane's
    // comes last, so wait for it (bounded) before the load starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out =
            kinetic_testkit::kubectl(&up.kubeconfig, h, &["get", "ehpa"], None).await.unwrap();
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "{}", String::from_utf8_lossy(&out.stderr));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let start = Instant::now();
    let (addr, generator) = replay(trace, start).await;
    crate::apply_when_served(&up, h, &manifests(&image, addr)).await;

    // Watch the CloneSet's replicas and its ready pods for the length of the run.
    let clonesets: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        client.clone(),
        "default",
        &kube::api::ApiResource {
            group: "apps.kruise.io".into(),
            version: "v1alpha1".into(),
            api_version: "apps.kruise.io/v1alpha1".into(),
            kind: "CloneSet".into(),
            plural: "clonesets".into(),
        },
    );
    let mut seen: Vec<(f64, i64, i64)> = Vec::new(); // (t, spec.replicas, readyReplicas)
    while start.elapsed() < Duration::from_secs(RUN_SECS) {
        if let Ok(cs) = clonesets.get("web").await {
            let r = cs.data.pointer("/spec/replicas").and_then(|v| v.as_i64()).unwrap_or(-1);
            let ready =
                cs.data.pointer("/status/readyReplicas").and_then(|v| v.as_i64()).unwrap_or(0);
            if seen.last().is_none_or(|l| (l.1, l.2) != (r, ready)) {
                seen.push((start.elapsed().as_secs_f64(), r, ready));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Status while the load still runs: without it the metric is gone and the conditions
    // turn to NoMetric.
    let status = kubectl(&up, h, &["get", "ehpa", "web", "-o", "jsonpath={.status}"]).await;
    let wide = kubectl(&up, h, &["get", "ehpa", "web", "-o", "wide"]).await;
    generator.abort();
    eprintln!("replicas/ready over time: {seen:?}\n{wide}\n{status}");

    // For each rise: when spec.replicas first reached the high load's 4 pods within half a
    // cycle before it, and when 4 pods were ready.
    let first_at = |from: f64, pred: &dyn Fn(&(f64, i64, i64)) -> bool| {
        seen.iter().filter(|s| s.0 >= from).find(|s| pred(s)).map(|s| s.0)
    };
    let mut report = Vec::new();
    for rise in (RISE..RUN_SECS as usize).step_by(CYCLE) {
        let rise = rise as f64;
        let from = rise - (CYCLE - RISE) as f64 / 2.0;
        let scaled = first_at(from, &|s| s.1 >= 4);
        let ready = first_at(from, &|s| s.2 >= 4);
        report.push((rise, scaled.map(|t| t - rise), ready.map(|t| t - rise)));
    }
    eprintln!("(rise s, scale-out − rise, 4 ready − rise): {report:?}");
    // The first rise comes before any history: scaled reactively, after it.
    let (_, first, _) = report[0];
    assert!(first.is_some_and(|d| d >= 0.0), "the first rise is met reactively: {report:?}");
    // A rise is forecast once the history holds the samples the period test needs before it:
    // 36 one-second samples for a 16 s period (two cycles, and the autocorrelation up to lag
    // 16 + 2) plus the lead time. The history started when the controller first read the
    // metric, `historySamples` seconds before the end. Every such rise is scaled out before
    // it comes (here the last two; on a slower host at least the last).
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let samples = v["prediction"]["historySamples"].as_f64().unwrap_or(0.0);
    let first_sample = start.elapsed().as_secs_f64() - samples;
    let eligible: Vec<_> = report.iter().filter(|r| r.0 - first_sample >= 36.0 + 3.0).collect();
    assert!(!eligible.is_empty(), "no rise after 36 s of history ({first_sample:.1} s): {status}");
    for (rise, scaled, _) in eligible {
        assert!(
            scaled.is_some_and(|d| d < 0.0),
            "scaled out before the rise at {rise}s: {report:?}\n{status}"
        );
    }
    assert!(status.contains("\"periodSeconds\":16"), "{status}");
    assert!(status.contains("\"leadTimeSeconds\""), "{status}");
    // The condition as it stood with the load running (read with `status`): once the
    // generator stops, the metric is gone and the controller rightly says `NoMetric`, so a
    // fresh read here would race that (it failed in CI).
    let cond = v["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "PredictionReady"))
        .map(|c| c["status"].clone());
    assert_eq!(cond, Some(serde_json::json!("True")), "{status}");

    kubectl(&up, h, &["delete", "ehpa", "web"]).await;
    kubectl(&up, h, &["delete", "cloneset", "web"]).await;
    wait_no_pods(&up, h).await;
    // Stop the control plane (and its node agent) before the slot's bridge goes.
    drop(up);
}
