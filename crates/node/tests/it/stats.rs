//! Resource metrics (issue 13, part 1): a container that burns a core shows about one core in
//! the agent's Summary API and `/metrics/resource`, and in `kubectl top pod|node` through the
//! embedded server's `metrics.k8s.io` API.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Cluster;
use crate::kubelet_api::kubelet_get;

/// The body of a `kubelet_get` response.
fn body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// The `usageNanoCores` of container `app` of pod `pod` in a summary, if reported.
fn nano_cores(summary: &Value, pod: &str) -> Option<u64> {
    summary["pods"].as_array()?.iter().find(|p| p["podRef"]["name"] == pod)?["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "app")?["cpu"]["usageNanoCores"]
        .as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_burning_a_core_shows_about_one_core() {
    let c = Cluster::start().await;
    let token = c.server.server().token().to_owned();
    let image = kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
    c.create(
        "burn",
        json!({"containers": [{"name": "app", "image": image,
            "command": ["sh", "-c", "while :; do :; done"],
            "resources": {"requests": {"cpu": "100m", "memory": "16Mi"}}}]}),
    )
    .await;
    c.wait("burn", 30, "Running", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
    // The rate needs two samples at least 10 s apart (the sampler takes one every 5 s).
    let deadline = Instant::now() + Duration::from_secs(40);
    let summary = loop {
        let resp = kubelet_get(&c, "/stats/summary", Some(&token), None).await.unwrap();
        assert!(resp.starts_with("HTTP/1.0 200"), "{resp}");
        let s: Value = serde_json::from_str(body(&resp)).unwrap();
        if nano_cores(&s, "burn").is_some_and(|n| n > 0) {
            break s;
        }
        if Instant::now() > deadline {
            let pods = c.data_dir().join("pods");
            let states: Vec<String> = std::fs::read_dir(&pods)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| std::fs::read_to_string(e.path().join("state.json")).unwrap_or_default())
                .collect();
            panic!("no CPU rate for the burning container: {s:#}\nrecords: {states:#?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // A busy loop takes one core; the machine is shared, so accept anything above 0.3.
    let cores = nano_cores(&summary, "burn").unwrap();
    assert!((300_000_000..1_300_000_000).contains(&cores), "usageNanoCores {cores}");
    let pod = summary["pods"].as_array().unwrap().iter().find(|p| p["podRef"]["name"] == "burn");
    let pod = pod.unwrap();
    assert!(pod["containers"][0]["memory"]["workingSetBytes"].as_u64().unwrap() > 0, "{pod:#}");
    assert!(summary["node"]["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap() > 0);
    assert!(summary["node"]["memory"]["workingSetBytes"].as_u64().unwrap() > 0);

    let resp = kubelet_get(&c, "/metrics/resource", Some(&token), None).await.unwrap();
    let text = body(&resp);
    assert!(
        text.contains("container_cpu_usage_seconds_total{container=\"app\",namespace=\"default\",pod=\"burn\"}"),
        "{text}"
    );
    assert!(text.contains("# TYPE node_memory_working_set_bytes gauge"), "{text}");

    // kubectl top through metrics.k8s.io.
    let top = c.server.kubectl_ok(&["top", "pod", "burn", "--no-headers"]).await.unwrap();
    let cols: Vec<&str> = top.split_whitespace().collect();
    assert_eq!(cols.first(), Some(&"burn"), "{top}");
    let milli: u64 = cols[1].trim_end_matches('m').parse().unwrap_or(0);
    assert!((300..1300).contains(&milli), "kubectl top pod: {top}");
    assert!(cols[2].ends_with("Mi"), "{top}");
    let top = c.server.kubectl_ok(&["top", "pod", "-l", "app=burn", "--containers"]).await.unwrap();
    assert!(top.contains("burn") && top.contains("app"), "{top}");
    let top = c.server.kubectl_ok(&["top", "node", "--no-headers"]).await.unwrap();
    assert!(top.starts_with(crate::harness::NODE), "kubectl top node: {top}");
    // No metrics for pods that do not exist, as metrics-server answers.
    let missing = c.server.kubectl(&["top", "pod", "nothing"]).await.unwrap();
    assert!(!missing.status.success());

    c.pods().delete("burn", &Default::default()).await.unwrap();
    c.wait_gone("burn", 20).await;
}
