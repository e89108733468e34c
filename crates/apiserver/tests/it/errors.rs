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
    assert_eq!((code, s["reason"].as_str()), (415, Some("UnsupportedMediaType")), "{s}");

    // Nothing half-written: only the one good object exists.
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    assert_eq!(cms.list(&ListParams::default()).await.unwrap().items.len(), 1);
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
