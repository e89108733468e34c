//! Bad input gets upstream's `Status` errors, never a panic or a half-written object.

use k8s_openapi::api::core::v1::ConfigMap;
use kinetic_testkit::TestServer;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

async fn send(
    client: &kube::Client,
    method: &str,
    path: &str,
    ct: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", ct)
        .body(body)
        .unwrap();
    let resp = client.send(req.map(kube::client::Body::from)).await.unwrap();
    let code = resp.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn requests_without_a_valid_token_are_unauthorized() {
    let t = TestServer::start().await.unwrap();
    let ca = rustls_pemfile::certs(&mut t.server().ca_pem().as_bytes())
        .map(|c| c.unwrap().to_vec())
        .collect::<Vec<_>>();
    let mut cfg = kube::Config::new(t.server().url().parse().unwrap());
    cfg.root_cert = Some(ca.clone());
    let anon = kube::Client::try_from(cfg.clone()).unwrap();
    let (code, status) = send(&anon, "GET", "/api/v1/namespaces", "application/json", vec![]).await;
    assert_eq!((code, status["reason"].as_str()), (401, Some("Unauthorized")));
    cfg.auth_info.token = Some("wrong".to_string().into());
    let bad = kube::Client::try_from(cfg).unwrap();
    let (code, _) = send(&bad, "GET", "/api/v1/namespaces", "application/json", vec![]).await;
    assert_eq!(code, 401);
    // Health and version stay public, as upstream's system:public-info-viewer allows.
    let req = http::Request::get("/healthz").body(Vec::new()).unwrap();
    assert_eq!(anon.request_text(req).await.unwrap(), "ok");
}

#[tokio::test]
async fn malformed_oversized_and_unknown_requests_get_status_errors() {
    let t = TestServer::start().await.unwrap();
    let c = t.client().await.unwrap();
    let path = "/api/v1/namespaces/default/configmaps";
    let (code, s) = send(&c, "POST", path, "application/json", b"{\"metadata\": ".to_vec()).await;
    assert_eq!((code, s["reason"].as_str()), (400, Some("BadRequest")), "{s}");
    assert!(s["message"].as_str().unwrap().contains("not valid JSON"), "{s}");

    let big = json!({"metadata": {"name": "big"}, "data": {"k": "x".repeat(4 << 20)}});
    let (code, s) =
        send(&c, "POST", path, "application/json", serde_json::to_vec(&big).unwrap()).await;
    assert_eq!((code, s["reason"].as_str()), (413, Some("RequestEntityTooLarge")), "{s}");

    let (code, s) =
        send(&c, "GET", "/apis/example.com/v1/nothings", "application/json", vec![]).await;
    assert_eq!((code, s["reason"].as_str()), (404, Some("NotFound")), "{s}");

    let ok = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}});
    let (code, _) =
        send(&c, "POST", path, "application/json", serde_json::to_vec(&ok).unwrap()).await;
    assert_eq!(code, 201);
    let (code, s) = send(
        &c,
        "PATCH",
        &format!("{path}/a"),
        "application/apply-patch+yaml",
        b"data: {k: v}".to_vec(),
    )
    .await;
    // Server-side apply without a fieldManager is refused as upstream refuses it.
    assert_eq!((code, s["reason"].as_str()), (422, Some("Invalid")), "{s}");

    // Nothing half-written: only the one good object exists (beside `kube-root-ca.crt`, which
    // every namespace has).
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    assert_eq!(cms.list(&ListParams::default()).await.unwrap().items.len(), 2);
}

#[tokio::test]
async fn invalid_objects_name_their_fields() {
    let t = TestServer::start().await.unwrap();
    let c = t.client().await.unwrap();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad_Name"}, "spec": {"containers": []}});
    let (code, s) = send(
        &c,
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        serde_json::to_vec(&pod).unwrap(),
    )
    .await;
    assert_eq!((code, s["reason"].as_str()), (422, Some("Invalid")), "{s}");
    let fields: Vec<&str> = s["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"metadata.name") && fields.contains(&"spec.containers"), "{s}");

    let typo = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "t"}, "dta": {"k": "v"}});
    let (code, s) = send(
        &c,
        "POST",
        "/api/v1/namespaces/default/configmaps?fieldValidation=Strict",
        "application/json",
        serde_json::to_vec(&typo).unwrap(),
    )
    .await;
    assert_eq!(code, 400, "{s}");
    assert!(s["message"].as_str().unwrap().contains("unknown field \"dta\""), "{s}");
}

/// Issue 15, part 6: a JSON patch whose `test` fails was answered 400; kube-apiserver answers
/// 422 Invalid for a patch that decodes but does not apply.
#[tokio::test]
async fn json_patch_with_a_failing_test_was_400_instead_of_422_invalid() {
    let t = TestServer::start().await.unwrap();
    let c = t.client().await.unwrap();
    let path = "/api/v1/namespaces/default/configmaps";
    let cm = json!({"metadata": {"name": "a"}, "data": {"k": "v"}});
    assert_eq!(send(&c, "POST", path, "application/json", cm.to_string().into()).await.0, 201);
    let p = json!([{"op": "test", "path": "/data/k", "value": "other"},
                   {"op": "replace", "path": "/data/k", "value": "new"}]);
    let (code, s) = send(
        &c,
        "PATCH",
        &format!("{path}/a"),
        "application/json-patch+json",
        p.to_string().into(),
    )
    .await;
    assert_eq!((code, s["reason"].as_str()), (422, Some("Invalid")), "{s}");
    let cms: Api<ConfigMap> = Api::namespaced(c, "default");
    assert_eq!(cms.get("a").await.unwrap().data.unwrap()["k"], "v", "nothing applied");
}

/// Issue 15, part 6: `replace` of a key missing from a map was answered 400 (RFC 6902 says the
/// target must exist); upstream's json-patch library (evanphx/json-patch v4) sets the key, and
/// kube-apiserver answers 200.
#[tokio::test]
async fn json_patch_replace_of_a_missing_map_key_was_400_instead_of_200() {
    let t = TestServer::start().await.unwrap();
    let c = t.client().await.unwrap();
    let path = "/api/v1/namespaces/default/configmaps";
    let cm = json!({"metadata": {"name": "a", "labels": {"x": "1"}}});
    assert_eq!(send(&c, "POST", path, "application/json", cm.to_string().into()).await.0, 201);
    let p = json!([{"op": "replace", "path": "/metadata/labels/y", "value": "2"}]);
    let (code, s) = send(
        &c,
        "PATCH",
        &format!("{path}/a"),
        "application/json-patch+json",
        p.to_string().into(),
    )
    .await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["metadata"]["labels"], json!({"x": "1", "y": "2"}));
    // A missing parent is still an error, as upstream's library reports it.
    let p = json!([{"op": "replace", "path": "/metadata/annotations/y", "value": "2"}]);
    let (code, s) = send(
        &c,
        "PATCH",
        &format!("{path}/a"),
        "application/json-patch+json",
        p.to_string().into(),
    )
    .await;
    assert_eq!((code, s["reason"].as_str()), (422, Some("Invalid")), "{s}");
}

/// Issue 15, part 6: a 413 sent before the 4 MiB body was read did not carry
/// `Connection: close`, yet the server closed the connection; a client that reused it (Python's
/// requests does) failed its next request with "connection closed without response".
#[tokio::test]
async fn a_413_sent_before_the_body_was_read_lacked_connection_close() {
    let t = TestServer::start().await.unwrap();
    let c = t.client().await.unwrap();
    let big = json!({"metadata": {"name": "big"}, "data": {"k": "x".repeat(4 << 20)}});
    let req = http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&big).unwrap())
        .unwrap();
    let resp = c.send(req.map(kube::client::Body::from)).await.unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    assert_eq!(resp.headers().get("connection").and_then(|v| v.to_str().ok()), Some("close"));
    // The next request on the same client is answered.
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    cms.list(&ListParams::default()).await.unwrap();
    // A request whose body was read keeps its connection.
    let ok = json!({"metadata": {"name": "small"}});
    let req = http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&ok).unwrap())
        .unwrap();
    let resp = c.send(req.map(kube::client::Body::from)).await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert!(resp.headers().get("connection").is_none());
}
