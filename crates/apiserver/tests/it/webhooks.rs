//! Admission webhooks (issue 16, part 4): webhooks served by the test over TLS with a CA and
//! certificate made here, registered through kubectl, and writes through the real `kube`
//! client and kubectl: a mutating webhook labels pods, a validating one refuses with its
//! message, failure policies, timeouts, selectors, and what an AdmissionReview carries.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kinetic_testkit::TestServer;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

/// A webhook server on 127.0.0.1 with its own CA; answers by path, records every review.
pub(crate) struct Hooks {
    pub(crate) port: u16,
    pub(crate) ca_bundle: String,
    reviews: Arc<Mutex<Vec<(String, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hooks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the test's webhooks answer: `/label` adds `webhook: injected` (JSONPatch), `/deny`
/// refuses objects named `bad*`, `/annotate` adds an annotation, `/slow` answers after 10 s, anything else allows.
async fn answer(path: &str, review: &Value) -> Value {
    let req = &review["request"];
    let uid = req["uid"].clone();
    let mut resp = json!({"uid": uid, "allowed": true});
    match path {
        "/label" => {
            let has_labels = req["object"]["metadata"]["labels"].is_object();
            let patch = if has_labels {
                json!([{"op": "add", "path": "/metadata/labels/webhook", "value": "injected"}])
            } else {
                json!([{"op": "add", "path": "/metadata/labels", "value": {"webhook": "injected"}}])
            };
            resp["patchType"] = json!("JSONPatch");
            resp["patch"] = json!(
                base64::engine::general_purpose::STANDARD.encode(patch.to_string().as_bytes())
            );
            resp["warnings"] = json!(["labelled by the test webhook"]);
        }
        "/deny" => {
            let name = req["name"].as_str().unwrap_or("");
            if name.starts_with("bad") {
                resp["allowed"] = json!(false);
                resp["status"] = json!({"code": 403, "reason": "Forbidden",
                                        "message": format!("pods named {name} are not allowed")});
            }
        }
        "/annotate" => {
            resp["patchType"] = json!("JSONPatch");
            let patch = if req["object"]["metadata"]["annotations"].is_object() {
                json!([{"op": "add", "path": "/metadata/annotations/annotated", "value": "yes"}])
            } else {
                json!([{"op": "add", "path": "/metadata/annotations", "value": {"annotated": "yes"}}])
            };
            resp["patch"] = json!(
                base64::engine::general_purpose::STANDARD.encode(patch.to_string().as_bytes())
            );
        }
        "/slow" => tokio::time::sleep(Duration::from_secs(10)).await,
        _ => {}
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp})
}

impl Hooks {
    pub(crate) async fn start(names: &[&str]) -> Hooks {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca.pem(), ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let sans: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let cert = rcgen::CertificateParams::new(sans).unwrap().signed_by(&key, &issuer).unwrap();
        let certs = vec![cert.der().clone()];
        let key: rustls::pki_types::PrivateKeyDer<'static> =
            rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let reviews: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let log = reviews.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, log) = (acceptor.clone(), log.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let log = log.clone();
                            async move {
                                let path = req.uri().path().to_owned();
                                let body = req.into_body().collect().await?.to_bytes();
                                let review: Value = serde_json::from_slice(&body).unwrap();
                                log.lock().unwrap().push((path.clone(), review.clone()));
                                let out = answer(&path, &review).await;
                                Ok::<_, hyper::Error>(http::Response::new(Full::new(Bytes::from(
                                    out.to_string(),
                                ))))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca.pem());
        Hooks { port, ca_bundle, reviews, task }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    pub(crate) fn reviews(&self, path: &str) -> Vec<Value> {
        let all = self.reviews.lock().unwrap();
        all.iter().filter(|(p, _)| p == path).map(|(_, r)| r["request"].clone()).collect()
    }
}

/// A webhook entry calling `url` for pod writes, with `extra` fields merged in.
pub(crate) fn hook(name: &str, client: Value, extra: Value) -> Value {
    let mut h = json!({
        "name": name,
        "clientConfig": client,
        "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""],
                   "apiVersions": ["v1"], "resources": ["pods"]}],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    });
    for (k, v) in extra.as_object().unwrap() {
        h[k] = v.clone();
    }
    h
}

pub(crate) async fn configure(t: &TestServer, kind: &str, name: &str, hooks: Vec<Value>) {
    let obj = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
                     "metadata": {"name": name}, "webhooks": hooks});
    t.kubectl_stdin_ok(&["apply", "-f", "-"], &obj.to_string()).await.unwrap();
}

fn pod(name: &str, labels: Value) -> Pod {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap()
}

async fn kubectl_err(t: &TestServer, args: &[&str], stdin: Option<&str>) -> String {
    let out = t.kubectl_stdin(args, stdin).await.unwrap();
    assert!(!out.status.success(), "kubectl {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn pod_json(name: &str, labels: Value) -> String {
    serde_json::to_string(&pod(name, labels)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutating_webhook_labels_pods_and_a_validating_webhook_refuses_with_its_message() {
    let t = TestServer::start().await.unwrap();
    let hooks = Hooks::start(&["127.0.0.1", "hooks.default.svc"]).await;
    // The mutating webhook is reached through a Service and its Endpoints, verified as
    // `hooks.default.svc`; the validating one by URL, verified as 127.0.0.1.
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "hooks", "namespace": "default"},
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": hooks.port}]}});
    let eps = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "hooks", "namespace": "default"},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}],
                     "ports": [{"name": "https", "port": hooks.port}]}]});
    for o in [svc, eps] {
        t.kubectl_stdin_ok(&["apply", "-f", "-"], &o.to_string()).await.unwrap();
    }
    let by_service = json!({"service": {"namespace": "default", "name": "hooks", "path": "/label"},
                            "caBundle": hooks.ca_bundle});
    configure(
        &t,
        "MutatingWebhookConfiguration",
        "label",
        vec![hook("label.kinetic.test", by_service, json!({}))],
    )
    .await;
    let by_url = json!({"url": hooks.url("/deny"), "caBundle": hooks.ca_bundle});
    configure(
        &t,
        "ValidatingWebhookConfiguration",
        "deny",
        vec![hook("deny.kinetic.test", by_url, json!({}))],
    )
    .await;

    // Upstream's defaults.
    let got: Value = serde_json::from_str(
        &t.kubectl_ok(&["get", "mutatingwebhookconfiguration", "label", "-o", "json"])
            .await
            .unwrap(),
    )
    .unwrap();
    let h = &got["webhooks"][0];
    assert_eq!(
        (&h["failurePolicy"], &h["matchPolicy"], &h["timeoutSeconds"], &h["reinvocationPolicy"]),
        (&json!("Fail"), &json!("Equivalent"), &json!(10), &json!("Never"))
    );
    assert_eq!(h["clientConfig"]["service"]["port"], 443);

    let pods: Api<Pod> = Api::namespaced(t.client().await.unwrap(), "default");
    let created =
        pods.create(&PostParams::default(), &pod("web", json!({"app": "web"}))).await.unwrap();
    let labels = created.metadata.labels.unwrap();
    assert_eq!(labels.get("webhook").map(String::as_str), Some("injected"));
    assert_eq!(labels.get("app").map(String::as_str), Some("web"));

    // The review of the create: what upstream's AdmissionReview v1 carries.
    let r = hooks.reviews("/label").pop().unwrap();
    assert_eq!(r["operation"], "CREATE");
    assert_eq!(r["kind"], json!({"group": "", "version": "v1", "kind": "Pod"}));
    assert_eq!(r["resource"], json!({"group": "", "version": "v1", "resource": "pods"}));
    assert_eq!(r["requestResource"], r["resource"]);
    assert_eq!((r["name"].as_str(), r["namespace"].as_str()), (Some("web"), Some("default")));
    assert_eq!(r["userInfo"]["username"], "kubernetes-admin");
    assert!(r["userInfo"]["groups"].as_array().unwrap().contains(&json!("system:masters")));
    assert_eq!(r["dryRun"], false);
    assert_eq!(r["options"]["kind"], "CreateOptions");
    assert!(r["oldObject"].is_null());
    // The validating webhook saw the mutated object.
    let v = hooks.reviews("/deny").pop().unwrap();
    assert_eq!(v["object"]["metadata"]["labels"]["webhook"], "injected");

    // An update carries the old object.
    t.kubectl_ok(&["label", "pod", "web", "tier=front"]).await.unwrap();
    let r = hooks.reviews("/deny").pop().unwrap();
    assert_eq!(r["operation"], "UPDATE");
    assert_eq!(r["options"]["kind"], "UpdateOptions");
    assert!(r["oldObject"]["metadata"]["labels"].get("tier").is_none());
    assert_eq!(r["object"]["metadata"]["labels"]["tier"], "front");

    // The validating webhook's refusal, as kubectl prints upstream's.
    let err = kubectl_err(&t, &["create", "-f", "-"], Some(&pod_json("bad-pod", json!({})))).await;
    assert!(
        err.contains(
            "admission webhook \"deny.kinetic.test\" denied the request: pods named bad-pod are not allowed"
        ),
        "{err}"
    );
    assert!(err.contains("Forbidden"), "{err}");
    let e = pods.create(&PostParams::default(), &pod("bad-two", json!({}))).await.unwrap_err();
    match e {
        kube::Error::Api(s) => assert_eq!(s.code, 403),
        other => panic!("{other}"),
    }
    assert!(t.kubectl(&["get", "pod", "bad-pod"]).await.unwrap().status.code() != Some(0));
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_webhook_with_ignore_does_not_block_and_with_fail_refuses_as_upstream() {
    let t = TestServer::start().await.unwrap();
    let port = closed_port().await;
    let url = format!("https://127.0.0.1:{port}/");
    let client = json!({"url": url});
    configure(
        &t,
        "MutatingWebhookConfiguration",
        "down",
        vec![hook("down.kinetic.test", client.clone(), json!({"failurePolicy": "Ignore"}))],
    )
    .await;
    t.kubectl_stdin_ok(&["create", "-f", "-"], &pod_json("ok", json!({}))).await.unwrap();

    configure(
        &t,
        "ValidatingWebhookConfiguration",
        "down",
        vec![hook("down.kinetic.test", client, json!({"failurePolicy": "Fail"}))],
    )
    .await;
    let err = kubectl_err(&t, &["create", "-f", "-"], Some(&pod_json("refused", json!({})))).await;
    let want = format!(
        "Internal error occurred: failed calling webhook \"down.kinetic.test\": failed to call webhook: Post \"{url}?timeout=10s\": dial tcp 127.0.0.1:{port}: connect:"
    );
    assert!(err.contains(&want), "{err}");
    assert!(err.contains("InternalError"), "{err}");
    // Its own configuration never goes to a webhook, so a broken one can be removed.
    t.kubectl_ok(&["delete", "validatingwebhookconfiguration", "down"]).await.unwrap();
    t.kubectl_stdin_ok(&["create", "-f", "-"], &pod_json("after", json!({}))).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_webhook_is_cut_off_at_its_timeout() {
    let t = TestServer::start().await.unwrap();
    let hooks = Hooks::start(&["127.0.0.1"]).await;
    let client = json!({"url": hooks.url("/slow"), "caBundle": hooks.ca_bundle});
    configure(
        &t,
        "ValidatingWebhookConfiguration",
        "slow",
        vec![hook("slow.kinetic.test", client.clone(), json!({"timeoutSeconds": 1}))],
    )
    .await;
    let started = Instant::now();
    let err = kubectl_err(&t, &["create", "-f", "-"], Some(&pod_json("slow", json!({})))).await;
    let took = started.elapsed();
    assert!(
        err.contains(&format!(
            "failed calling webhook \"slow.kinetic.test\": failed to call webhook: Post \"{}?timeout=1s\": context deadline exceeded",
            hooks.url("/slow")
        )),
        "{err}"
    );
    assert!(took < Duration::from_secs(6), "cut off after {took:?}");
    configure(
        &t,
        "ValidatingWebhookConfiguration",
        "slow",
        vec![hook(
            "slow.kinetic.test",
            client,
            json!({"timeoutSeconds": 1, "failurePolicy": "Ignore"}),
        )],
    )
    .await;
    let started = Instant::now();
    t.kubectl_stdin_ok(&["create", "-f", "-"], &pod_json("slow", json!({}))).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_and_rules_choose_which_writes_reach_a_webhook() {
    let t = TestServer::start().await.unwrap();
    let hooks = Hooks::start(&["127.0.0.1"]).await;
    for (ns, env) in [("prod", "prod"), ("dev", "dev")] {
        let o = json!({"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": ns, "labels": {"env": env}}});
        t.kubectl_stdin_ok(&["apply", "-f", "-"], &o.to_string()).await.unwrap();
    }
    let client = json!({"url": hooks.url("/deny"), "caBundle": hooks.ca_bundle});
    configure(&t, "ValidatingWebhookConfiguration", "guard", vec![hook("guard.kinetic.test", client, json!({
        "objectSelector": {"matchLabels": {"guard": "on"}},
        "namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]},
    }))]).await;
    let create = |ns: &'static str, name: &'static str, labels: Value| {
        let t = &t;
        async move {
            let out = t
                .kubectl_stdin(&["create", "-n", ns, "-f", "-"], Some(&pod_json(name, labels)))
                .await
                .unwrap();
            (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
        }
    };
    let (ok, err) = create("prod", "bad-guarded", json!({"guard": "on"})).await;
    assert!(!ok && err.contains("denied the request"), "{err}");
    assert!(create("prod", "bad-unguarded", json!({})).await.0, "object selector");
    assert!(create("dev", "bad-dev", json!({"guard": "on"})).await.0, "namespace selector");
    // A ConfigMap is not in the rules.
    t.kubectl_ok(&["create", "configmap", "bad-cm", "-n", "prod"]).await.unwrap();
    // An update that adds the label matches on the new object.
    t.kubectl_ok(&["label", "pod", "bad-unguarded", "-n", "prod", "guard=on"]).await.unwrap_err();
    let seen: Vec<String> = hooks
        .reviews("/deny")
        .iter()
        .map(|r| format!("{} {}", r["operation"].as_str().unwrap(), r["name"].as_str().unwrap()))
        .collect();
    assert_eq!(seen, ["CREATE bad-guarded", "UPDATE bad-unguarded"]);
    // A dry run reaches webhooks without side effects (v1 allows no others), marked as one.
    let out = t
        .kubectl_stdin(
            &["create", "--dry-run=server", "-n", "prod", "-f", "-"],
            Some(&pod_json("bad-dry", json!({"guard": "on"}))),
        )
        .await
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(hooks.reviews("/deny").pop().unwrap()["dryRun"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_configurations_are_validated_as_upstream() {
    let t = TestServer::start().await.unwrap();
    let bad = json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "bad"},
        "webhooks": [{"name": "bad", "clientConfig": {"url": "http://127.0.0.1/"},
                      "timeoutSeconds": 31, "admissionReviewVersions": ["v1"]}]});
    let err = kubectl_err(&t, &["create", "-f", "-"], Some(&bad.to_string())).await;
    for want in [
        "webhooks[0].name: Invalid value: \"bad\": should be a domain with at least three segments separated by dots",
        "webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun",
        "webhooks[0].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 and 30 seconds",
        "webhooks[0].clientConfig.url: Invalid value: \"http://127.0.0.1/\": 'https' is the only allowed URL scheme",
    ] {
        assert!(err.contains(want), "{want}\n{err}");
    }
    assert!(err.contains("is invalid"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinvocation_match_conditions_and_subresources() {
    let t = TestServer::start().await.unwrap();
    let hooks = Hooks::start(&["127.0.0.1"]).await;
    let client = |path: &str| json!({"url": hooks.url(path), "caBundle": hooks.ca_bundle});
    // `a-label` runs first (configurations in name order); `b-annotate` changes the object
    // after it, so the IfNeeded webhook runs once more and sees the annotation.
    configure(
        &t,
        "MutatingWebhookConfiguration",
        "a-label",
        vec![hook(
            "label.kinetic.test",
            client("/label"),
            json!({"reinvocationPolicy": "IfNeeded"}),
        )],
    )
    .await;
    configure(
        &t,
        "MutatingWebhookConfiguration",
        "b-annotate",
        vec![hook("annotate.kinetic.test", client("/annotate"), json!({}))],
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(t.client().await.unwrap(), "default");
    let p = pods.create(&PostParams::default(), &pod("twice", json!({}))).await.unwrap();
    assert_eq!(p.metadata.annotations.unwrap()["annotated"], "yes");
    assert_eq!(p.metadata.labels.unwrap()["webhook"], "injected");
    let label_calls = hooks.reviews("/label");
    assert_eq!(label_calls.len(), 2, "reinvoked once");
    assert_eq!(label_calls[1]["object"]["metadata"]["annotations"]["annotated"], "yes");
    assert_eq!(hooks.reviews("/annotate").len(), 1);

    // matchConditions (CEL) skip the webhook when false.
    configure(&t, "ValidatingWebhookConfiguration", "deny", vec![hook("deny.kinetic.test", client("/deny"), json!({
        "matchConditions": [{"name": "not-exempt",
                             "expression": "object.metadata.name != 'bad-but-exempt'"}],
        "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"],
                   "resources": ["pods"]},
                  {"operations": ["UPDATE"], "apiGroups": ["apps"], "apiVersions": ["v1"],
                   "resources": ["deployments/scale"]}],
    }))]).await;
    t.kubectl_stdin_ok(&["create", "-f", "-"], &pod_json("bad-but-exempt", json!({})))
        .await
        .unwrap();
    let err =
        kubectl_err(&t, &["create", "-f", "-"], Some(&pod_json("bad-other", json!({})))).await;
    assert!(err.contains("pods named bad-other are not allowed"), "{err}");

    // A scale write reaches webhooks of `deployments/scale` with an autoscaling/v1 Scale; the
    // deployment itself is not in the rules.
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "bad-scale", "namespace": "default"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "s"}},
          "template": {"metadata": {"labels": {"app": "s"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    t.kubectl_stdin_ok(&["create", "-f", "-"], &deploy.to_string()).await.unwrap();
    let err = kubectl_err(&t, &["scale", "deployment", "bad-scale", "--replicas=3"], None).await;
    assert!(err.contains("denied the request: pods named bad-scale are not allowed"), "{err}");
    let r = hooks.reviews("/deny").pop().unwrap();
    assert_eq!(r["kind"], json!({"group": "autoscaling", "version": "v1", "kind": "Scale"}));
    assert_eq!(r["subResource"], "scale");
    assert_eq!(r["resource"]["resource"], "deployments");
    assert_eq!(r["object"]["spec"]["replicas"], 3);
    assert_eq!(r["oldObject"]["spec"]["replicas"], 1);
}

fn deployment(name: &str, replicas: i64) -> String {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
          "template": {"metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validating_admission_policies_deny_and_warn_with_cel_and_params() {
    let t = TestServer::start().await.unwrap();
    let policy = json!({"apiVersion": "admissionregistration.k8s.io/v1",
    "kind": "ValidatingAdmissionPolicy", "metadata": {"name": "replicas-limit"},
    "spec": {
        "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
        "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE"], "resources": ["deployments"]}]},
        "variables": [{"name": "limit", "expression": "int(params.data.maxReplicas)"}],
        "validations": [
            {"expression": "object.spec.replicas <= variables.limit",
             "messageExpression": "'replicas must be at most ' + params.data.maxReplicas",
             "reason": "Forbidden"},
            {"expression": "'app' in object.metadata.labels", "message": "an app label is required"},
        ]}});
    t.kubectl_stdin_ok(&["apply", "-f", "-"], &policy.to_string()).await.unwrap();
    let got: Value = serde_json::from_str(
        &t.kubectl_ok(&["get", "validatingadmissionpolicy", "replicas-limit", "-o", "json"])
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(got["spec"]["failurePolicy"], "Fail");
    assert_eq!(got["spec"]["matchConstraints"]["matchPolicy"], "Equivalent");
    t.kubectl_ok(&["create", "configmap", "limits", "--from-literal=maxReplicas=5"]).await.unwrap();
    let binding = |name: &str, actions: Value, param: &str| {
        json!({"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
            "spec": {"policyName": "replicas-limit", "validationActions": actions,
                     "paramRef": {"name": param, "namespace": "default",
                                  "parameterNotFoundAction": "Deny"}}})
        .to_string()
    };
    t.kubectl_stdin_ok(&["apply", "-f", "-"], &binding("deny", json!(["Deny"]), "limits"))
        .await
        .unwrap();

    t.kubectl_stdin_ok(&["create", "-f", "-"], &deployment("small", 2)).await.unwrap();
    let err = kubectl_err(&t, &["create", "-f", "-"], Some(&deployment("big", 6))).await;
    assert!(
        err.contains("ValidatingAdmissionPolicy 'replicas-limit' with binding 'deny' denied request: replicas must be at most 5"),
        "{err}"
    );
    assert!(err.contains("Forbidden"), "{err}");
    // `deployments/scale` is not in the policy's rules (`deployments` names no subresource).
    t.kubectl_ok(&["scale", "deployment", "small", "--replicas=9"]).await.unwrap();
    // An invalid binding is refused as upstream.
    let err = kubectl_err(
        &t,
        &["apply", "-f", "-"],
        Some(&binding("both", json!(["Deny", "Warn"]), "limits")),
    )
    .await;
    assert!(err.contains("must not contain both Deny and Warn"), "{err}");

    // Warn: the write goes through with kubectl's `Warning:` line.
    t.kubectl_ok(&["delete", "validatingadmissionpolicybinding", "deny"]).await.unwrap();
    t.kubectl_stdin_ok(&["apply", "-f", "-"], &binding("warn", json!(["Warn"]), "limits"))
        .await
        .unwrap();
    let out = t.kubectl_stdin(&["create", "-f", "-"], Some(&deployment("big", 6))).await.unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Warning: Validation failed for ValidatingAdmissionPolicy 'replicas-limit' with binding 'warn': replicas must be at most 5"),
        "{stderr}"
    );

    // Missing params with `parameterNotFoundAction: Deny` refuse.
    t.kubectl_stdin_ok(&["apply", "-f", "-"], &binding("missing", json!(["Deny"]), "nope"))
        .await
        .unwrap();
    let err = kubectl_err(&t, &["create", "-f", "-"], Some(&deployment("other", 1))).await;
    assert!(
        err.contains("no params found for policy binding with `Deny` parameterNotFoundAction"),
        "{err}"
    );
}
