//! Crane's EffectiveHorizontalPodAutoscaler controller against the embedded API server, through
//! kubectl and the real `kube` client: Crane's sample manifest applies as it is; `Preview`
//! only writes its recommendation to status (or holds `specificReplicas`), `Auto` scales the
//! target through its `scale` subresource; with a history too short for a period, the status
//! says the decision fell back to the reactive one and why. The load is an `External` metric
//! served on 127.0.0.1 by the test (the controller's loopback source). There are no pods: an
//! External metric needs none, and the online test (`kinetic-cli`'s `ehpa`) runs real ones.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kinetic_controllers::{cloneset, ehpa};
use kinetic_testkit::TestServer;
use kube::api::{Api, ApiResource, DynamicObject};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Serves `GET /{name}` → the current value, on 127.0.0.1.
async fn metric_server(
    value: Arc<Mutex<f64>>,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await;
            let v = *value.lock().unwrap();
            let _ = s.write_all(format!("HTTP/1.0 200 OK\r\n\r\n{v}").as_bytes()).await;
        }
    });
    (addr, task)
}

fn ehpa_manifest(addr: std::net::SocketAddr, strategy: &str) -> String {
    format!(
        r#"apiVersion: autoscaling.crane.io/v1alpha1
kind: EffectiveHorizontalPodAutoscaler
metadata:
  name: web
  namespace: default
  annotations: {{ehpa.kinetic.dev/external-metrics-url: "http://{addr}"}}
spec:
  scaleTargetRef: {{apiVersion: apps.kruise.io/v1alpha1, kind: CloneSet, name: web}}
  minReplicas: 1
  maxReplicas: 6
  scaleStrategy: {strategy}
  metrics:
  - type: External
    external:
      metric: {{name: load}}
      target: {{type: AverageValue, averageValue: "1"}}
  prediction:
    predictionAlgorithm:
      algorithmType: dsp
      dsp: {{sampleInterval: 1s, historyLength: 10m}}
"#
    )
}

const CLONESET: &str = r#"apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata: {name: web, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: busybox}]}
"#;

/// Crane's sample (`docs/.../effective-hpa.md`), as a Crane user would apply it.
const CRANE_SAMPLE: &str = r#"apiVersion: autoscaling.crane.io/v1alpha1
kind: EffectiveHorizontalPodAutoscaler
metadata:
  name: php-apache
  namespace: default
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: php-apache
  minReplicas: 1
  maxReplicas: 10
  scaleStrategy: Auto
  metrics:
  - type: Resource
    resource:
      name: cpu
      target:
        type: Utilization
        averageUtilization: 50
  prediction:
    predictionWindowSeconds: 3600
    predictionAlgorithm:
      algorithmType: dsp
      dsp:
        sampleInterval: "60s"
        historyLength: "3d"
"#;

fn clonesets(client: &kube::Client) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource {
            group: "apps.kruise.io".into(),
            version: "v1alpha1".into(),
            api_version: "apps.kruise.io/v1alpha1".into(),
            kind: "CloneSet".into(),
            plural: "clonesets".into(),
        },
    )
}

/// Polls `f` (at most 30 s) until it returns `Some`.
async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what} not reached");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status(server: &TestServer, name: &str) -> Value {
    let s = server.kubectl_ok(&["get", "ehpa", name, "-o", "jsonpath={.status}"]).await.unwrap();
    serde_json::from_str(&s).unwrap_or(Value::Null)
}

fn condition<'a>(status: &'a Value, kind: &str) -> Option<&'a Value> {
    status["conditions"].as_array()?.iter().find(|c| c["type"] == kind)
}

async fn replicas(client: &kube::Client) -> i64 {
    let cs = clonesets(client).get("web").await.unwrap();
    cs.data.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_recommends_auto_scales_and_status_says_why() {
    let server = TestServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    kinetic_controllers::crds::install(&client, &cloneset::crds()).await.unwrap();
    kinetic_controllers::crds::install(&client, &ehpa::crds()).await.unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(ehpa::run(client.clone(), async {
        let _ = rx.await;
    }));
    let load = Arc::new(Mutex::new(3.5));
    let (addr, metrics) = metric_server(load.clone()).await;

    // Crane's sample applies unchanged and is listed with Crane's columns; its Deployment does
    // not exist, which the status says.
    server.kubectl_stdin_ok(&["apply", "-f", "-"], CRANE_SAMPLE).await.unwrap();
    let table = server.kubectl_ok(&["get", "ehpa"]).await.unwrap();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "STRATEGY", "MINPODS", "MAXPODS", "SPECIFICPODS", "REPLICAS", "AGE"],
        "{table}"
    );
    let s = until("php-apache's Ready=False", || async {
        let s = status(&server, "php-apache").await;
        condition(&s, "Ready")
            .filter(|c| c["status"] == "False")
            .map(|c| c["reason"].as_str().unwrap_or_default().to_owned())
    })
    .await;
    assert_eq!(s, "FailedGetScale");

    // The example applies as it is.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/autoscaling/ehpa.yaml");
    server.kubectl_ok(&["apply", "-f", example.to_str().unwrap()]).await.unwrap();
    server.kubectl_ok(&["delete", "-f", example.to_str().unwrap()]).await.unwrap();

    // Preview: the recommendation (3.5 pods of load at 1 per pod: 4) in status only.
    server.kubectl_stdin_ok(&["apply", "-f", "-"], CLONESET).await.unwrap();
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &ehpa_manifest(addr, "Preview")).await.unwrap();
    let s = until("a Preview recommendation", || async {
        let s = status(&server, "web").await;
        (s["expectReplicas"] == 4).then_some(s)
    })
    .await;
    assert_eq!(replicas(&client).await, 1, "Preview does not scale: {s}");
    assert_eq!(s["currentReplicas"], 1);
    let ready = condition(&s, "Ready").unwrap();
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("True"), Some("Preview"))
    );
    // Seconds of history have no period: the decision is the reactive one, and says so.
    let p = condition(&s, "PredictionReady").unwrap();
    assert_eq!((p["status"].as_str(), p["reason"].as_str()), (Some("False"), Some("Fallback")));
    let why = p["message"].as_str().unwrap();
    assert!(why.starts_with("reactive 4: no period found in"), "{why}");
    assert_eq!(s["prediction"]["reactiveReplicas"], 4, "{s}");
    assert_eq!(s["prediction"]["metric"], "external/load");
    assert!(s["prediction"]["predictedReplicas"].is_null(), "{s}");
    assert!(s["prediction"]["leadTimeSeconds"].as_i64().is_some(), "{s}");

    // Preview with specificReplicas holds the target there (Crane's behaviour).
    server
        .kubectl_ok(&[
            "patch",
            "ehpa",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"specificReplicas":2}}"#,
        ])
        .await
        .unwrap();
    until("specificReplicas", || async { (replicas(&client).await == 2).then_some(()) }).await;

    // Auto scales to the recommendation, and follows the load down.
    server
        .kubectl_ok(&[
            "patch",
            "ehpa",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"scaleStrategy":"Auto","specificReplicas":null,
                "behavior":{"scaleDown":{"stabilizationWindowSeconds":0}}}}"#,
        ])
        .await
        .unwrap();
    until("Auto scales out", || async { (replicas(&client).await == 4).then_some(()) }).await;
    *load.lock().unwrap() = 1.0;
    until("Auto scales in", || async { (replicas(&client).await == 1).then_some(()) }).await;
    let s = status(&server, "web").await;
    assert!(s["lastScaleTime"].is_string(), "{s}");
    let events = server
        .kubectl_ok(&["get", "events", "--field-selector", "involvedObject.name=web"])
        .await
        .unwrap();
    assert!(events.contains("SuccessfulRescale"), "{events}");

    metrics.abort();
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    server.shutdown().await;
}

/// A 16 s cycle, 8 s at 1 pod of load and 8 s at 3.5, in step with the wall clock.
fn square_wave() -> f64 {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if s % 16 < 8 { 1.0 } else { 3.5 }
}

/// Polls `f` (at most `secs`) until it returns `Some`.
async fn within<T, F: std::future::Future<Output = Option<T>>>(
    secs: u64,
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what} not reached in {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_predicts_at_once_from_the_persisted_history() {
    let server = TestServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    kinetic_controllers::crds::install(&client, &cloneset::crds()).await.unwrap();
    kinetic_controllers::crds::install(&client, &ehpa::crds()).await.unwrap();
    let load = Arc::new(Mutex::new(square_wave()));
    let (addr, metrics) = metric_server(load.clone()).await;
    let wave = {
        let load = load.clone();
        tokio::spawn(async move {
            loop {
                *load.lock().unwrap() = square_wave();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    server.kubectl_stdin_ok(&["apply", "-f", "-"], CLONESET).await.unwrap();
    let manifest =
        ehpa_manifest(addr, "Preview").replace("historyLength: 10m", "historyLength: 2m");
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &manifest).await.unwrap();

    // The first controller learns the 16 s period (two cycles and a bit).
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let first = tokio::spawn(ehpa::run(client.clone(), async {
        let _ = rx.await;
    }));
    let before = within(90, "a prediction from the first controller", || async {
        let s = status(&server, "web").await;
        let ready = condition(&s, "PredictionReady").is_some_and(|c| c["status"] == "True");
        (ready && s["prediction"]["periodSeconds"] == 16).then_some(s)
    })
    .await;
    let learnt = before["prediction"]["historySamples"].as_i64().unwrap();
    assert!(learnt >= 32, "{before}");
    // Its history is in a ConfigMap the autoscaler owns.
    let cm = within(30, "the history ConfigMap", || async {
        let cm = server
            .kubectl_ok(&["get", "configmap", &ehpa::history_configmap_name("web"), "-o", "json"])
            .await
            .ok()?;
        let cm: Value = serde_json::from_str(&cm).ok()?;
        let h: Value = serde_json::from_str(cm["data"][ehpa::HISTORY_DATA_KEY].as_str()?).ok()?;
        (h["series"]["external/load"]["values"].as_array()?.len() >= 32).then_some(cm)
    })
    .await;
    let owner = &cm["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["name"].as_str()),
        (Some("EffectiveHorizontalPodAutoscaler"), Some("web"))
    );
    let _ = stop.send(());
    first.await.unwrap().unwrap();

    // Clear the status so the new controller's first write shows.
    server
        .kubectl_ok(&[
            "patch",
            "ehpa",
            "web",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"conditions":[],"prediction":null}}"#,
        ])
        .await
        .unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let started = tokio::time::Instant::now();
    let second = tokio::spawn(ehpa::run(client.clone(), async {
        let _ = rx.await;
    }));
    let after = within(30, "the restarted controller's first status", || async {
        let s = status(&server, "web").await;
        condition(&s, "PredictionReady").is_some().then_some(s)
    })
    .await;
    // A controller starting empty would have one sample per second since its start and no
    // period (it needs two cycles, 32 s); this one forecasts from its first write.
    let p = condition(&after, "PredictionReady").unwrap();
    assert_eq!(p["status"], "True", "{after}");
    assert_eq!(after["prediction"]["periodSeconds"], 16, "{after}");
    let samples = after["prediction"]["historySamples"].as_i64().unwrap();
    assert!(samples as u64 > started.elapsed().as_secs() + 16, "{samples} samples: {after}");

    wave.abort();
    metrics.abort();
    let _ = stop.send(());
    second.await.unwrap().unwrap();
    server.shutdown().await;
}
