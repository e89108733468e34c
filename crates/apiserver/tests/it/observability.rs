//! `/metrics` under kube-apiserver's metric names, and the audit log (issue 15, part 7).

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kinetic_testkit::TestServer;
use kube::api::{Api, ListParams, PostParams, WatchParams};
use serde_json::{Value, json};

async fn metrics(client: &kube::Client) -> String {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    client.request_text(req).await.unwrap()
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_and_audit_log_record_requests_as_kube_apiserver_does() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let path = log.clone();
    let t = TestServer::start_with(move |c| c.audit_log = Some(path)).await.unwrap();
    let client = t.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "a"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    cms.list(&ListParams::default()).await.unwrap();

    // Anonymous requests get no metrics.
    let ca = rustls_pemfile::certs(&mut t.server().ca_pem().as_bytes())
        .map(|c| c.unwrap().to_vec())
        .collect::<Vec<_>>();
    let mut cfg = kube::Config::new(t.server().url().parse().unwrap());
    cfg.root_cert = Some(ca);
    let anon = kube::Client::try_from(cfg).unwrap();
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let err = anon.request_text(req).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 401), "{err:?}");

    let text = metrics(&client).await;
    let l = |verb: &str, scope: &str| {
        format!(
            "verb=\"{verb}\",dry_run=\"\",group=\"\",version=\"v1\",resource=\"configmaps\",subresource=\"\",scope=\"{scope}\",component=\"apiserver\""
        )
    };
    let created = format!("apiserver_request_total{{{},code=\"201\"}}", l("POST", "namespace"));
    assert_eq!(sample(&text, &created), Some(1.0), "{text}");
    let listed = format!("apiserver_request_total{{{},code=\"200\"}}", l("LIST", "namespace"));
    assert_eq!(sample(&text, &listed), Some(1.0));
    let hist = format!("apiserver_request_duration_seconds_count{{{}}}", l("POST", "namespace"));
    assert_eq!(sample(&text, &hist), Some(1.0));
    let storage = "etcd_request_duration_seconds_count{operation=\"create\",type=\"configmaps\"}";
    assert!(sample(&text, storage).is_some_and(|n| n >= 1.0), "{text}");
    assert!(sample(&text, "apiserver_storage_objects{resource=\"configmaps\"}").is_some());

    // A watch is long-running while it is open.
    let gauge = format!("apiserver_longrunning_requests{{{}}}", {
        l("WATCH", "namespace").replace("dry_run=\"\",", "")
    });
    let stream = cms.watch(&WatchParams::default().timeout(60), "0").await.unwrap();
    let mut stream = Box::pin(stream);
    assert!(stream.next().await.is_some(), "the watch sends the existing object");
    assert_eq!(sample(&metrics(&client).await, &gauge), Some(1.0));
    let events = "apiserver_watch_events_total{group=\"\",version=\"v1\",resource=\"configmaps\"}";
    assert!(sample(&metrics(&client).await, events).is_some_and(|n| n >= 1.0));
    drop(stream);
    let start = Instant::now();
    while sample(&metrics(&client).await, &gauge) != Some(0.0) {
        assert!(start.elapsed() < Duration::from_secs(10), "the watch stays counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // One audit.k8s.io/v1 Event per request, level Metadata.
    let lines = std::fs::read_to_string(&log).unwrap();
    let events: Vec<Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(events.iter().all(|e| e["apiVersion"] == "audit.k8s.io/v1"
        && e["kind"] == "Event"
        && e["level"] == "Metadata"));
    let create = events
        .iter()
        .find(|e| e["verb"] == "create" && e["objectRef"]["resource"] == "configmaps")
        .expect("the create is audited");
    assert_eq!(create["objectRef"]["namespace"], "default");
    assert_eq!(create["responseStatus"]["code"], 201);
    assert_eq!(create["user"]["username"], "kinetic-admin");
    assert_eq!(create["stage"], "ResponseComplete");
    assert!(create["requestObject"].is_null(), "Metadata level records no bodies");
    let denied = events.iter().find(|e| e["responseStatus"]["code"] == 401).expect("401 audited");
    assert_eq!(denied["user"]["username"], "system:anonymous");
    let watch = events.iter().find(|e| e["verb"] == "watch").expect("the watch is audited");
    assert_eq!(watch["stage"], "ResponseStarted");
}
