//! Server-side apply through the real kubectl (`apply --server-side`, `--force-conflicts`,
//! `diff --server-side`) and raw requests, answered as kube-apiserver answers them.

use kinetic_testkit::TestServer;
use serde_json::{Value, json};

fn deployment(replicas: u32, image: &str, extra_label: bool) -> String {
    let label = if extra_label { "\n    tier: web" } else { "" };
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
  labels:
    app: web{label}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: {image}
        ports:
        - containerPort: 80
"
    )
}

/// What a second manager (an autoscaler, a CI job) applies: only the replicas.
fn replicas_only(replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: default}}\nspec: {{replicas: {replicas}}}\n"
    )
}

async fn get_json(t: &TestServer, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json", "--show-managed-fields"]);
    serde_json::from_str(&t.kubectl_ok(&all).await.unwrap()).unwrap()
}

/// `(manager, operation, fieldsV1)` of each managedFields entry.
fn managers(obj: &Value) -> Vec<(String, String, Value)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["manager"].as_str().unwrap().to_owned(),
                e["operation"].as_str().unwrap().to_owned(),
                e["fieldsV1"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn kubectl_server_side_apply_creates_updates_conflicts_and_forces() {
    let t = TestServer::start().await.unwrap();
    let apply = ["apply", "--server-side", "-f", "-"];
    let out = t.kubectl_stdin_ok(&apply, &deployment(2, "nginx:1", true)).await.unwrap();
    assert_eq!(out.trim(), "deployment.apps/web serverside-applied");
    let d = get_json(&t, &["deploy", "web"]).await;
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate", "defaults apply: {d}");
    let m = managers(&d);
    assert_eq!((m[0].0.as_str(), m[0].1.as_str()), ("kubectl", "Apply"), "{m:?}");
    let container =
        &m[0].2["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
    assert_eq!(
        container["f:ports"],
        json!({"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}),
        "ports keyed by containerPort and the defaulted protocol: {m:?}"
    );

    // The same manifest again changes nothing; a changed one updates in place.
    let rv = d["metadata"]["resourceVersion"].clone();
    t.kubectl_stdin_ok(&apply, &deployment(2, "nginx:1", true)).await.unwrap();
    let again = get_json(&t, &["deploy", "web"]).await;
    assert_eq!(again["metadata"]["resourceVersion"], rv, "a no-op apply is no write");
    t.kubectl_stdin_ok(&apply, &deployment(2, "nginx:2", true)).await.unwrap();
    let d = get_json(&t, &["deploy", "web"]).await;
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:2");

    // A second manager that sets replicas to another value conflicts, with upstream's message.
    let other = ["apply", "--server-side", "--field-manager=ci", "-f", "-"];
    let out = t.kubectl_stdin(&other, Some(&replicas_only(5))).await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas"),
        "{err}"
    );
    assert!(err.contains("--force-conflicts"), "kubectl explains how to resolve it: {err}");
    assert_eq!(get_json(&t, &["deploy", "web"]).await["spec"]["replicas"], 2);

    // --force-conflicts takes the field; the first manager no longer owns it.
    let forced = ["apply", "--server-side", "--field-manager=ci", "--force-conflicts", "-f", "-"];
    t.kubectl_stdin_ok(&forced, &replicas_only(5)).await.unwrap();
    let d = get_json(&t, &["deploy", "web"]).await;
    assert_eq!(d["spec"]["replicas"], 5);
    let m = managers(&d);
    let kubectl = m.iter().find(|e| e.0 == "kubectl").unwrap();
    let ci = m.iter().find(|e| e.0 == "ci").unwrap();
    assert!(kubectl.2["f:spec"].get("f:replicas").is_none(), "{m:?}");
    assert_eq!(ci.2, json!({"f:spec": {"f:replicas": {}}}), "{m:?}");

    // Fields dropped from the first manager's manifest go: the label nobody else owns, and
    // the container port; replicas, now only ci's, stays.
    let out = t
        .kubectl_stdin_ok(
            &apply,
            &deployment(5, "nginx:2", false)
                .replace("        ports:\n        - containerPort: 80\n", ""),
        )
        .await
        .unwrap();
    assert!(out.contains("serverside-applied"), "{out}");
    let d = get_json(&t, &["deploy", "web"]).await;
    assert_eq!(d["metadata"]["labels"], json!({"app": "web"}), "tier removed: {d}");
    assert!(d["spec"]["template"]["spec"]["containers"][0].get("ports").is_none(), "{d}");
    assert_eq!(d["spec"]["replicas"], 5);
}

#[tokio::test]
async fn kubectl_diff_server_side_shows_the_change_and_writes_nothing() {
    let t = TestServer::start().await.unwrap();
    let cm = |v: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: conf\n  namespace: default\ndata:\n  key: {v}\n"
        )
    };
    t.kubectl_stdin_ok(&["apply", "--server-side", "-f", "-"], &cm("one")).await.unwrap();
    // kubectl diff exits 1 when there are differences.
    let out =
        t.kubectl_stdin(&["diff", "--server-side", "-f", "-"], Some(&cm("two"))).await.unwrap();
    let diff = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{diff}{}", String::from_utf8_lossy(&out.stderr));
    assert!(diff.contains("-  key: one") && diff.contains("+  key: two"), "{diff}");
    let out =
        t.kubectl_stdin(&["diff", "--server-side", "-f", "-"], Some(&cm("one"))).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let live = get_json(&t, &["cm", "conf"]).await;
    assert_eq!(live["data"]["key"], "one", "dry run wrote nothing");
    // Client-side diff works against the same object.
    let out = t.kubectl_stdin(&["diff", "-f", "-"], Some(&cm("three"))).await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("+  key: three"));
}

#[tokio::test]
async fn an_update_manager_owns_what_it_changed_and_apply_conflicts_with_it() {
    let t = TestServer::start().await.unwrap();
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: default\ndata:\n  key: a\n  other: b\n";
    t.kubectl_stdin_ok(&["apply", "--server-side", "-f", "-"], cm).await.unwrap();
    t.kubectl_ok(&["patch", "cm", "c", "--type=merge", "-p", r#"{"data":{"key":"patched"}}"#])
        .await
        .unwrap();
    let out = t.kubectl_stdin(&["apply", "--server-side", "-f", "-"], Some(cm)).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "Apply failed with 1 conflict: conflict with \"kubectl-patch\" using v1: .data.key"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn custom_resources_merge_lists_by_their_schemas_list_map_keys() {
    let t = TestServer::start().await.unwrap();
    let crd = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              parts:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {type: string}
                    size: {type: integer}
              tags:
                type: array
                x-kubernetes-list-type: set
                items: {type: string}
"#;
    t.kubectl_stdin_ok(&["apply", "-f", "-"], crd).await.unwrap();
    let gadget = |parts: &str, tags: &str| {
        format!(
            "apiVersion: example.com/v1\nkind: Gadget\nmetadata:\n  name: g\n  namespace: default\nspec:\n  parts: {parts}\n  tags: {tags}\n"
        )
    };
    // The CRD is served shortly after it is created.
    let mut last = String::new();
    for _ in 0..100 {
        let out = t
            .kubectl_stdin(
                &["apply", "--server-side", "--field-manager=a", "-f", "-"],
                Some(&gadget("[{name: p1, size: 1}, {name: p2, size: 2}]", "[red]")),
            )
            .await
            .unwrap();
        if out.status.success() {
            last.clear();
            break;
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(last.is_empty(), "{last}");
    t.kubectl_stdin_ok(
        &["apply", "--server-side", "--field-manager=b", "-f", "-"],
        &gadget("[{name: p3, size: 3}]", "[blue]"),
    )
    .await
    .unwrap();
    let g = get_json(&t, &["gadget", "g"]).await;
    assert_eq!(
        g["spec"],
        json!({"parts": [{"name": "p1", "size": 1}, {"name": "p2", "size": 2}, {"name": "p3", "size": 3}],
               "tags": ["red", "blue"]})
    );
    // `a` drops p2; b's p3 stays. Changing b's item is a conflict on that item's field.
    t.kubectl_stdin_ok(
        &["apply", "--server-side", "--field-manager=a", "-f", "-"],
        &gadget("[{name: p1, size: 1}]", "[red]"),
    )
    .await
    .unwrap();
    let g = get_json(&t, &["gadget", "g"]).await;
    assert_eq!(g["spec"]["parts"], json!([{"name": "p1", "size": 1}, {"name": "p3", "size": 3}]));
    let out = t
        .kubectl_stdin(
            &["apply", "--server-side", "--field-manager=a", "-f", "-"],
            Some(&gadget("[{name: p1, size: 1}, {name: p3, size: 9}]", "[red]")),
        )
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(r#"conflict with "b": .spec.parts[name="p3"].size"#), "{err}");
}

async fn apply_raw(c: &kube::Client, query: &str, body: Value) -> (u16, Value) {
    apply_at(c, &format!("/api/v1/namespaces/default/configmaps/raw{query}"), body).await
}

async fn apply_at(c: &kube::Client, uri: &str, body: Value) -> (u16, Value) {
    let req = http::Request::builder()
        .method("PATCH")
        .uri(uri)
        .header("content-type", "application/apply-patch+yaml")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    let resp = c.send(req.map(kube::client::Body::from)).await.unwrap();
    let code = resp.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn raw_apply_requests_answer_as_upstream() {
    let t = TestServer::start().await.unwrap();
    let c = t.client().await.unwrap();
    let send = |query: &'static str, body: Value| apply_raw(&c, query, body);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "raw"},
                    "data": {"k": "v"}});
    let (code, s) = send("", cm.clone()).await;
    assert_eq!((code, s["reason"].as_str()), (422, Some("Invalid")), "{s}");
    assert_eq!(
        s["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    let (code, s) = send("?fieldManager=m&dryRun=All", cm.clone()).await;
    assert_eq!(code, 201, "create-on-apply, dry run: {s}");
    let (code, _) = send("?fieldManager=m", cm.clone()).await;
    assert_eq!(code, 201, "create-on-apply");
    let (code, s) = send(
        "?fieldManager=n",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "raw"}, "data": {"k": "w"}}),
    )
    .await;
    assert_eq!((code, s["reason"].as_str()), (409, Some("Conflict")), "{s}");
    assert_eq!(
        s["details"]["causes"],
        json!([{"reason": "FieldManagerConflict", "message": "conflict with \"m\"",
                "field": ".data.k"}])
    );
    let (code, s) =
        send("?fieldManager=m", json!({"kind": "ConfigMap", "metadata": {"name": "raw"}})).await;
    assert_eq!(code, 400, "{s}");
    let (code, s) = send(
        "?fieldManager=m",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "other"}}),
    )
    .await;
    assert_eq!(code, 400, "{s}");
    let (code, s) = send("?fieldManager=m&force=true", cm).await;
    assert_eq!(code, 200, "{s}");
}

#[tokio::test]
async fn server_side_apply_after_client_side_apply_takes_over_without_conflicts() {
    // kubectl upgrades the `kubectl-client-side-apply` manager's fields to `kubectl` (a JSON
    // patch of managedFields) before its first server-side apply; a server that ignored
    // that patch would answer a conflict on every changed field.
    let t = TestServer::start().await.unwrap();
    t.kubectl_stdin_ok(&["apply", "-f", "-"], &deployment(2, "nginx:1", true)).await.unwrap();
    let out = t
        .kubectl_stdin(
            &["apply", "--server-side", "-v=8", "-f", "-"],
            Some(&deployment(3, "nginx:2", true)),
        )
        .await
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("application/json-patch+json"), "kubectl migrated the fields: {log}");
    let d = get_json(&t, &["deploy", "web"]).await;
    assert_eq!(d["spec"]["replicas"], 3);
    let m = managers(&d);
    assert!(!m.iter().any(|e| e.0 == "kubectl-client-side-apply"), "moved to kubectl: {m:?}");
    let last: Value = serde_json::from_str(
        d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["spec"]["replicas"], 3, "kept current for a later client-side apply");
    let kubectl = m.iter().find(|e| e.0 == "kubectl").unwrap();
    assert_eq!(kubectl.1, "Apply", "{m:?}");
    assert_eq!(kubectl.2["f:spec"]["f:replicas"], json!({}), "{m:?}");
    // A field dropped from the manifest now goes, as for any server-side applier.
    t.kubectl_stdin_ok(&["apply", "--server-side", "-f", "-"], &deployment(3, "nginx:2", false))
        .await
        .unwrap();
    let d = get_json(&t, &["deploy", "web"]).await;
    assert_eq!(d["metadata"]["labels"], json!({"app": "web"}), "{d}");
}

#[tokio::test]
async fn status_is_applied_through_its_subresource_only() {
    let t = TestServer::start().await.unwrap();
    let c = t.client().await.unwrap();
    let path = "/apis/apps/v1/namespaces/default/deployments/web";
    t.kubectl_stdin_ok(&["apply", "--server-side", "-f", "-"], &deployment(1, "nginx:1", false))
        .await
        .unwrap();
    let status = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "status": {"replicas": 7, "observedGeneration": 1}});
    let (code, d) = apply_at(&c, &format!("{path}/status?fieldManager=ctl"), status).await;
    assert_eq!(code, 200, "{d}");
    assert_eq!(d["status"]["replicas"], 7);
    let entry = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "ctl")
        .cloned()
        .unwrap();
    assert_eq!(entry["subresource"], "status");
    assert_eq!(entry["operation"], "Apply");
    assert_eq!(
        entry["fieldsV1"],
        json!({"f:status": {"f:observedGeneration": {}, "f:replicas": {}}})
    );
    // The main resource ignores status in an applied configuration, and owns none of it.
    let spec_and_status = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"replicas": 2}, "status": {"replicas": 0}});
    let (code, d) =
        apply_at(&c, &format!("{path}?fieldManager=other&force=true"), spec_and_status).await;
    assert_eq!(code, 200, "{d}");
    assert_eq!(
        (d["spec"]["replicas"].as_i64(), d["status"]["replicas"].as_i64()),
        (Some(2), Some(7))
    );
    // A status subresource apply of an object that does not exist is 404, not a create.
    let (code, _) = apply_at(
        &c,
        "/apis/apps/v1/namespaces/default/deployments/none/status?fieldManager=ctl",
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "none"}}),
    )
    .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn the_demo_manifests_apply_server_side_and_reapply_unchanged() {
    let t = TestServer::start().await.unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let mut versions = Vec::new();
    for f in ["namespace.yaml", "crd.yaml", "deployment.yaml"] {
        let out =
            t.kubectl_stdin_ok(&["apply", "--server-side", "-f", "-"], &read(f)).await.unwrap();
        assert!(out.contains("serverside-applied"), "{f}: {out}");
    }
    // The CRD's kind is served shortly after the CRD is created.
    let mut last = String::new();
    for _ in 0..100 {
        let out = t
            .kubectl_stdin(&["apply", "--server-side", "-f", "-"], Some(&read("widget.yaml")))
            .await
            .unwrap();
        if out.status.success() {
            last.clear();
            break;
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(last.is_empty(), "{last}");
    for (kind, name) in
        [("ns", "demo"), ("crd", "widgets.example.com"), ("deploy", "web"), ("widget", "gizmo")]
    {
        let args: Vec<&str> = if kind == "ns" || kind == "crd" {
            vec![kind, name]
        } else {
            vec![kind, name, "-n", "demo"]
        };
        versions.push(get_json(&t, &args).await["metadata"]["resourceVersion"].clone());
    }
    for f in ["namespace.yaml", "crd.yaml", "deployment.yaml", "widget.yaml"] {
        t.kubectl_stdin_ok(&["apply", "--server-side", "-f", "-"], &read(f)).await.unwrap();
    }
    for (i, (kind, name)) in
        [("ns", "demo"), ("crd", "widgets.example.com"), ("deploy", "web"), ("widget", "gizmo")]
            .into_iter()
            .enumerate()
    {
        let args: Vec<&str> = if kind == "ns" || kind == "crd" {
            vec![kind, name]
        } else {
            vec![kind, name, "-n", "demo"]
        };
        let rv = get_json(&t, &args).await["metadata"]["resourceVersion"].clone();
        assert_eq!(rv, versions[i], "{kind}/{name}: a second apply of the same manifest wrote");
    }
}

#[tokio::test]
async fn a_scale_write_is_recorded_under_the_scale_subresource() {
    // Upstream records writes through /scale as their manager's with subresource "scale", so
    // an apply that changes replicas afterwards names it so (kubectl scale sends no
    // fieldManager: its manager is its User-Agent's "kubectl", an Update, not the applier).
    let t = TestServer::start().await.unwrap();
    t.kubectl_stdin_ok(&["apply", "--server-side", "-f", "-"], &deployment(1, "nginx:1", false))
        .await
        .unwrap();
    t.kubectl_ok(&["scale", "deployment", "web", "--replicas=4"]).await.unwrap();
    let out = t
        .kubectl_stdin(
            &["apply", "--server-side", "-f", "-"],
            Some(&deployment(2, "nginx:1", false)),
        )
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            r#"conflict with "kubectl" with subresource "scale" using apps/v1: .spec.replicas"#
        ),
        "{err}"
    );
}
