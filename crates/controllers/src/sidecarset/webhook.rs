//! SidecarSet injection on a real cluster: a mutating admission webhook for pod creation served
//! over TLS by `kinetic controller`, and the MutatingWebhookConfiguration that points the API
//! server at it, kept in sync with the SidecarSets.
//!
//! Better than upstream (openkruise/kruise #343, #634, charts#90): upstream registers one
//! webhook for every pod of the cluster with `failurePolicy: Fail`, so a down
//! kruise-controller-manager blocks all pod creation. Here the configuration has one webhook
//! per SidecarSet whose `objectSelector` is the SidecarSet's selector and whose
//! `namespaceSelector` is its namespaceSelector (or `kubernetes.io/metadata.name` for
//! `spec.namespace`), so the API server only calls the webhook for pods some SidecarSet can
//! select; a pod no SidecarSet selects never waits on it. For the pods it selects the policy is
//! upstream's `Fail` (a selected pod is never created without its sidecars, charts#54). With no
//! SidecarSet (or all paused) the configuration has no webhook at all.
//!
//! Every call injects all matching SidecarSets ([`kinetic_rollout::sidecarset::inject`]) and
//! answers a JSONPatch; pods already injected (their injected list, e.g. by the embedded
//! server's own admission on `kinetic up`) get an empty answer, so nothing is injected twice.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::Namespace;
use kinetic_api::kruise::sidecarset::{REVISION_NAMESPACE, SIDECARSET_NAME_LABEL, SidecarSet};
use kinetic_rollout::sidecarset::resources::ResourcesError;
use kinetic_rollout::sidecarset::{inject, resolve, set_name};
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};

/// Name of the MutatingWebhookConfiguration `kinetic controller` keeps.
pub const CONFIGURATION: &str = "kinetic-sidecarset";
/// The path the webhook serves.
pub const PATH: &str = "/mutate-pod";

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("making the webhook's certificate")]
    Cert(#[from] rcgen::Error),
    #[error("configuring TLS")]
    Tls(#[from] rustls::Error),
    #[error("listening on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What the webhook reads: caches of SidecarSets, Namespaces and ControllerRevisions.
#[derive(Clone)]
struct Caches {
    sets: Store<SidecarSet>,
    namespaces: Store<Namespace>,
    revisions: Store<ControllerRevision>,
}

/// A CA and a serving certificate for `hosts` (IP addresses or DNS names), made at start.
struct Certs {
    ca_pem: String,
    config: rustls::ServerConfig,
}

fn certs(hosts: &[String]) -> Result<Certs, WebhookError> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "kinetic-sidecarset-webhook-ca");
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca.pem(), ca_key)?;
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(hosts.to_vec())?.signed_by(&key, &issuer)?;
    let chain = vec![cert.der().clone()];
    let key: rustls::pki_types::PrivateKeyDer<'static> =
        rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Certs { ca_pem: ca.pem(), config })
}

/// Serves the webhook on `listen` and keeps the configuration naming `url` (the address the
/// API server calls, e.g. `https://10.0.0.5:9443/mutate-pod`) in sync, until `shutdown`.
///
/// # Errors
/// The certificate, TLS setup or listener fails; API errors of the sync are retried.
pub async fn run(
    client: Client,
    listen: SocketAddr,
    url: String,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), WebhookError> {
    let host = url
        .strip_prefix("https://")
        .and_then(|r| r.split(['/', ':']).next())
        .unwrap_or("127.0.0.1")
        .to_owned();
    let certs = certs(&[host])?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| WebhookError::Listen { addr: listen, source })?;
    let caches = Caches {
        sets: cache::<SidecarSet>(Api::all(client.clone())),
        namespaces: cache::<Namespace>(Api::all(client.clone())),
        revisions: cache::<ControllerRevision>(Api::namespaced(client.clone(), REVISION_NAMESPACE)),
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(certs.config));
    let server = serve(listener, acceptor, caches.clone());
    let sync = sync_loop(client, caches.sets.clone(), url, certs.ca_pem);
    tokio::select! {
        () = shutdown => {}
        () = server => {}
        () = sync => {}
    }
    Ok(())
}

/// A reflector cache of `api`, filled by a task that ends when the store's last reader goes.
fn cache<K>(api: Api<K>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .for_each(|_| futures::future::ready(()));
    tokio::spawn(stream);
    reader
}

async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    caches: Caches,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let (acceptor, caches) = (acceptor.clone(), caches.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let caches = caches.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let body = req.into_body().collect().await?.to_bytes();
                        let (code, out) = if path == PATH {
                            match serde_json::from_slice::<Value>(&body) {
                                Ok(review) => (200, review_answer(&review, &caches)),
                                Err(e) => (400, json!({"error": e.to_string()})),
                            }
                        } else {
                            (404, json!({"error": "not found"}))
                        };
                        let mut resp = http::Response::new(Full::new(Bytes::from(out.to_string())));
                        *resp.status_mut() =
                            http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK);
                        resp.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, hyper::Error>(resp)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

/// The AdmissionReview answer for `review`: the injection as a JSONPatch, or allowed as is.
fn review_answer(review: &Value, caches: &Caches) -> Value {
    let req = &review["request"];
    let mut resp = json!({"uid": req["uid"].clone(), "allowed": true});
    let is_pod_create = req["operation"] == "CREATE"
        && req.pointer("/kind/kind").and_then(Value::as_str) == Some("Pod")
        && req.pointer("/kind/group").and_then(Value::as_str).unwrap_or("").is_empty();
    if is_pod_create {
        let mut pod = req["object"].clone();
        let ns = req["namespace"].as_str().unwrap_or("").to_owned();
        if let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.entry("namespace").or_insert_with(|| json!(ns));
        }
        let original = pod.clone();
        let injected = match inject_pod(&mut pod, caches) {
            Ok(i) => i,
            Err(e) => {
                resp["allowed"] = json!(false);
                resp["status"] =
                    json!({"code": 400, "reason": "BadRequest", "message": e.to_string()});
                false
            }
        };
        if injected {
            let patch = json_patch::diff(&original, &pod);
            if let Ok(bytes) = serde_json::to_vec(&patch) {
                resp["patchType"] = json!("JSONPatch");
                resp["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
            }
        }
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp})
}

/// Injects the matching SidecarSets into `pod`; whether it changed.
///
/// # Errors
/// A `resourcesPolicy` cannot be applied: the pod is refused, as upstream's webhook does.
fn inject_pod(pod: &mut Value, caches: &Caches) -> Result<bool, ResourcesError> {
    let sets: Vec<SidecarSet> = caches.sets.state().iter().map(|s| (**s).clone()).collect();
    let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").to_owned();
    let ns_labels: BTreeMap<String, String> = caches
        .namespaces
        .get(&reflector::ObjectRef::new(&ns))
        .map(|n| n.labels().clone())
        .unwrap_or_default();
    let chosen = inject::to_inject(pod, &sets, &ns_labels);
    if chosen.is_empty() {
        return Ok(false);
    }
    let revisions: Vec<ControllerRevision> =
        caches.revisions.state().iter().map(|r| (**r).clone()).collect();
    let resolved: Vec<inject::Resolved> = chosen
        .into_iter()
        .map(|ss| {
            let mine: Vec<ControllerRevision> = revisions
                .iter()
                .filter(|r| {
                    r.labels().get(SIDECARSET_NAME_LABEL).map(String::as_str) == Some(set_name(ss))
                })
                .cloned()
                .collect();
            resolve(ss, &mine)
        })
        .collect();
    let now = jiff::Timestamp::now().to_string();
    inject::inject(
        pod,
        &resolved,
        &inject::InjectContext { namespace_labels: &ns_labels, now: &now },
    )
    .map(|names| !names.is_empty())
}

/// The configuration the SidecarSets call for: one webhook per injecting SidecarSet, scoped by
/// its selectors.
pub fn desired_configuration(sets: &[SidecarSet], url: &str, ca_pem: &str) -> Value {
    let mut sets: Vec<&SidecarSet> = sets
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .filter(|s| !s.spec.injection_strategy.paused)
        .filter(|s| s.spec.selector.is_some())
        .collect();
    sets.sort_by(|a, b| set_name(a).cmp(set_name(b)));
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    let hooks: Vec<Value> = sets
        .iter()
        .map(|ss| {
            let ns_selector = match (&ss.spec.namespace, &ss.spec.namespace_selector) {
                (Some(n), _) if !n.is_empty() => json!({"matchExpressions": [{
                    "key": "kubernetes.io/metadata.name", "operator": "In", "values": [n]}]}),
                (_, Some(sel)) => serde_json::to_value(sel).unwrap_or_else(|_| json!({})),
                _ => json!({}),
            };
            json!({
                "name": format!("{}.sidecarset.kinetic.dev", set_name(ss)),
                "clientConfig": {"url": url, "caBundle": ca},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                           "resources": ["pods"], "scope": "Namespaced"}],
                "objectSelector": serde_json::to_value(&ss.spec.selector).unwrap_or_else(|_| json!({})),
                "namespaceSelector": ns_selector,
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 10,
                "reinvocationPolicy": "Never",
            })
        })
        .collect();
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": CONFIGURATION, "labels": {"app.kubernetes.io/managed-by": "kinetic-controller"}},
        "webhooks": hooks,
    })
}

/// Keeps the configuration equal to [`desired_configuration`] of the cached SidecarSets: the
/// cache is looked at every 200 ms, the API written only when the wanted configuration changed.
async fn sync_loop(client: Client, sets: Store<SidecarSet>, url: String, ca_pem: String) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let mut last: Option<Value> = None;
    loop {
        if sets.wait_until_ready().await.is_ok() {
            let all: Vec<SidecarSet> = sets.state().iter().map(|s| (**s).clone()).collect();
            let want = desired_configuration(&all, &url, &ca_pem);
            if last.as_ref() != Some(&want) {
                match apply(&api, &want).await {
                    Ok(()) => last = Some(want),
                    Err(e) => {
                        tracing::warn!(error = %crate::report(&e), "syncing the SidecarSet webhook configuration")
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn apply(api: &Api<MutatingWebhookConfiguration>, want: &Value) -> Result<(), kube::Error> {
    let mut obj: MutatingWebhookConfiguration =
        serde_json::from_value(want.clone()).map_err(kube::Error::SerdeError)?;
    match api.get_opt(CONFIGURATION).await? {
        None => api.create(&PostParams::default(), &obj).await.map(|_| ()),
        Some(cur) => {
            if serde_json::to_value(&cur.webhooks).ok() == serde_json::to_value(&obj.webhooks).ok()
            {
                return Ok(());
            }
            obj.metadata.resource_version = cur.metadata.resource_version;
            api.replace(CONFIGURATION, &PostParams::default(), &obj).await.map(|_| ())
        }
    }
}
