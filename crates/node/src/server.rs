//! The kubelet API on the agent's port (kubelet: 10250), over HTTPS as kubelet serves it:
//! `/containerLogs/{ns}/{pod}/{container}` (`logs`), `/exec/…` and `/attach/…` (`streaming`)
//! and `/portForward/{ns}/{pod}` (`portforward`), for the API server's pod subresource proxy.
//!
//! TLS: a self-signed serving certificate made at start (kubelet without
//! `--tls-cert-file` does the same; API servers do not verify it unless told to).
//!
//! Authentication, as kubelet's `--client-ca-file` and webhook token authentication:
//! - a client certificate signed by the cluster's client CA, read from the `client-ca-file` key
//!   of `kube-system/extension-apiserver-authentication` (kube-apiserver and Kinetic's embedded
//!   server both publish it), else the configured CA (`Config::client_ca`; `kinetic node` passes
//!   its kubeconfig's cluster CA, the client CA of kubeadm clusters); the certificate's CN is
//!   the user and its O entries the groups;
//! - or a bearer token: the agent's own token (the one of its kubeconfig; on `kinetic up` the
//!   server's admin token) or any token the API accepts in a TokenReview.
//!
//! Authorisation, as kubelet's webhook mode: a SubjectAccessReview for verb (from the method)
//! on `nodes/{subresource}` of this node (`proxy` for logs, exec, attach and port-forward; kubelet
//! maps `/logs` to `log`, but `/containerLogs` to `proxy`). Where the API offers no
//! SubjectAccessReview (Kinetic's embedded server has no RBAC yet), the holders of a certificate
//! from the client CA and of the agent's own token are allowed, and nobody else.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::body::Incoming;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::PostParams;

use crate::logs::LogIndex;
use crate::{Error, Result};

pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

/// What the handlers share.
pub(crate) struct Server {
    pub index: LogIndex,
    /// The agent's own bearer token, accepted without a review.
    pub token: Option<Arc<str>>,
    pub client: kube::Client,
    pub node: String,
    pub runtime: crate::runtime::Runtime,
    /// Resource metrics for `/stats/summary` and `/metrics/resource`.
    pub stats: Arc<crate::stats::Stats>,
}

/// Who a request comes from.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    /// A client certificate from the client CA: CN and O.
    Cert { user: String, groups: Vec<String> },
    /// The agent's own token.
    Agent,
    /// A token the API's TokenReview accepted.
    Token { user: String, groups: Vec<String> },
}

pub(crate) fn text(code: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(msg.into())).map_err(|e: Infallible| match e {}).boxed(),
    );
    *r.status_mut() = code;
    r
}

/// The TLS configuration: a fresh self-signed serving certificate and, when the cluster
/// publishes one, its client CA for client certificates (optional, so tokens still work).
///
/// # Errors
/// The certificate cannot be made or the client CA does not parse.
pub(crate) async fn tls_config(
    client: &kube::Client,
    cfg: &crate::Config,
) -> Result<rustls::ServerConfig> {
    let tls_err = |what: &str, e: &dyn std::fmt::Display| {
        Error::Config(format!("kubelet API TLS: {what}: {e}"))
    };
    let mut names = vec![cfg.node_name.clone(), "localhost".to_owned(), "127.0.0.1".to_owned()];
    names.push(cfg.node_ip.to_string());
    names.dedup();
    let key = rcgen::KeyPair::generate().map_err(|e| tls_err("generating a key", &e))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| tls_err("certificate parameters", &e))?;
    for n in &names {
        params.subject_alt_names.push(match n.parse::<std::net::IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => rcgen::SanType::DnsName(
                n.clone().try_into().map_err(|e| tls_err("node name as DNS name", &e))?,
            ),
        });
    }
    let mut dn = rcgen::DistinguishedName::new();
    // kubelet names its self-signed certificate `{hostname}@{timestamp}`.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    dn.push(rcgen::DnType::CommonName, format!("{}@{now}", cfg.node_name));
    params.distinguished_name = dn;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key).map_err(|e| tls_err("self-signing", &e))?;
    let chain = vec![cert.der().clone()];
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| tls_err("serving key", &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("protocol versions", &e))?;
    let mut roots = rustls::RootCertStore::empty();
    match client_ca(client).await {
        Some(pem) => {
            for c in rustls_pemfile::certs(&mut pem.as_bytes()) {
                let c = c.map_err(|e| tls_err("client CA", &e))?;
                roots.add(c).map_err(|e| tls_err("client CA", &e))?;
            }
        }
        None => {
            for der in &cfg.client_ca {
                roots
                    .add(rustls::pki_types::CertificateDer::from(der.clone()))
                    .map_err(|e| tls_err("client CA", &e))?;
            }
        }
    }
    let builder = if roots.is_empty() {
        tracing::warn!(
            "no client CA (kube-system/extension-apiserver-authentication has no readable client-ca-file and none was configured): the kubelet API accepts bearer tokens only"
        );
        builder.with_no_client_auth()
    } else {
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| tls_err("client certificate verifier", &e))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut tls =
        builder.with_single_cert(chain, key_der).map_err(|e| tls_err("serving certificate", &e))?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// The cluster's client CA, as kube-apiserver publishes it for kubelets and aggregated servers.
async fn client_ca(client: &kube::Client) -> Option<String> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    match cms.get_opt("extension-apiserver-authentication").await {
        Ok(cm) => cm?.data?.remove("client-ca-file").filter(|s| !s.trim().is_empty()),
        Err(e) => {
            tracing::warn!(error = %e, "reading the client CA failed");
            None
        }
    }
}

/// The user (CN) and groups (O) of a verified client certificate.
fn cert_caller(der: &[u8]) -> Option<Caller> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let user = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let groups =
        subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_owned)).collect();
    Some(Caller::Cert { user, groups })
}

/// Accepts connections on `listener` until the task is aborted.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    srv: Arc<Server>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, peer)) = listener.accept().await else { continue };
        let _ = tcp.set_nodelay(true);
        let (acceptor, srv) = (acceptor.clone(), srv.clone());
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "kubelet API: TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let caller = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| cert_caller(c.as_ref()));
            let svc = hyper::service::service_fn(move |req| {
                let (srv, caller) = (srv.clone(), caller.clone());
                async move { Ok::<_, Infallible>(handle(srv, caller, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
}

async fn handle(srv: Arc<Server>, cert: Option<Caller>, req: Request<Incoming>) -> Response<Body> {
    let caller = match cert {
        Some(c) => c,
        None => {
            let bearer = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .unwrap_or_default()
                .to_owned();
            match authenticate_token(&srv, &bearer).await {
                Some(c) => c,
                None => return text(StatusCode::UNAUTHORIZED, "Unauthorized"),
            }
        }
    };
    let path = req.uri().path().to_owned();
    let parts: Vec<String> = path.trim_start_matches('/').split('/').map(percent_decode).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    if let Err(resp) = authorize(&srv, &caller, req.method(), &parts).await {
        return resp;
    }
    let query = query_pairs(req.uri().query().unwrap_or_default());
    match parts.as_slice() {
        ["healthz"] => text(StatusCode::OK, "ok"),
        ["stats", "summary"] | ["metrics", "resource"] => crate::stats::handle(&srv.stats, &parts),
        ["containerLogs", ns, pod, container] => {
            crate::logs::handle(srv.index.clone(), ns, pod, container, &query).await
        }
        [call @ ("exec" | "attach"), ns, pod, container] => {
            let (ns, pod, container) =
                ((*ns).to_owned(), (*pod).to_owned(), (*container).to_owned());
            crate::streaming::handle(&srv, *call == "attach", &ns, &pod, &container, &query, req)
                .await
        }
        ["portForward", ns, pod] => {
            let (ns, pod) = ((*ns).to_owned(), (*pod).to_owned());
            crate::streaming::port_forward(&srv, &ns, &pod, &query, req).await
        }
        _ => text(StatusCode::NOT_FOUND, format!("no handler for {path}")),
    }
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn token_matches(given: &str, want: &str) -> bool {
    let (a, b) = (given.as_bytes(), want.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authenticate_token(srv: &Server, token: &str) -> Option<Caller> {
    if token.is_empty() {
        return None;
    }
    if srv.token.as_deref().is_some_and(|t| token_matches(token, t)) {
        return Some(Caller::Agent);
    }
    let review = TokenReview {
        spec: TokenReviewSpec { token: Some(token.to_owned()), ..Default::default() },
        ..Default::default()
    };
    let api: Api<TokenReview> = Api::all(srv.client.clone());
    match api.create(&PostParams::default(), &review).await {
        Ok(r) => {
            let status = r.status?;
            if status.authenticated != Some(true) {
                return None;
            }
            let user = status.user?;
            Some(Caller::Token { user: user.username?, groups: user.groups.unwrap_or_default() })
        }
        Err(e) => {
            // Kinetic's embedded server has no TokenReview yet: only the agent's own token.
            tracing::debug!(error = %e, "kubelet API: token review failed");
            None
        }
    }
}

/// kubelet's mapping of a path to the `nodes` subresource it authorises.
fn subresource(parts: &[&str]) -> &'static str {
    match parts.first().copied() {
        Some("stats") => "stats",
        Some("metrics") => "metrics",
        Some("logs") => "log",
        Some("spec") => "spec",
        Some("healthz") => "healthz",
        Some("pods") => "pods",
        _ => "proxy",
    }
}

async fn authorize(
    srv: &Server,
    caller: &Caller,
    method: &http::Method,
    parts: &[&str],
) -> std::result::Result<(), Response<Body>> {
    let (user, groups) = match caller {
        Caller::Agent => return Ok(()),
        Caller::Cert { user, groups } | Caller::Token { user, groups } => (user, groups),
    };
    let verb = match *method {
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "get",
    };
    let sub = subresource(parts);
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.clone()),
            groups: Some(groups.clone()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.to_owned()),
                group: Some(String::new()),
                version: Some("v1".to_owned()),
                resource: Some("nodes".to_owned()),
                subresource: Some(sub.to_owned()),
                name: Some(srv.node.clone()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(srv.client.clone());
    let forbidden = |why: &str| {
        text(
            StatusCode::FORBIDDEN,
            format!("Forbidden (user={user}, verb={verb}, resource=nodes, subresource={sub}){why}"),
        )
    };
    match api.create(&PostParams::default(), &review).await {
        Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => Ok(()),
        Ok(r) => {
            let reason = r.status.and_then(|s| s.reason).unwrap_or_default();
            Err(forbidden(&if reason.is_empty() { String::new() } else { format!(": {reason}") }))
        }
        // No SubjectAccessReview on this API (Kinetic's embedded server has no RBAC yet): the
        // client CA is the server's own, so its certificates are the server's.
        Err(kube::Error::Api(e)) if e.code == 404 && matches!(caller, Caller::Cert { .. }) => {
            Ok(())
        }
        Err(e) => {
            tracing::debug!(error = %e, "kubelet API: access review failed");
            Err(forbidden(": the access review failed"))
        }
    }
}

/// Decoded query pairs, in order (a key may repeat: `command=sh&command=-c`).
pub(crate) fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first value of `key`.
pub(crate) fn get<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A boolean query parameter as Go's `strconv.ParseBool` reads it (a bare key counts as true).
pub(crate) fn flag(q: &[(String, String)], key: &str) -> bool {
    get(q, key).is_some_and(|v| matches!(v, "" | "1" | "t" | "T" | "true" | "TRUE" | "True"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_queries() {
        let q = query_pairs("command=sh&command=-c&command=exit%203&tty=1&x=%zz&y=a%2");
        assert_eq!(q[2].1, "exit 3");
        assert!(flag(&q, "tty"));
        assert_eq!(get(&q, "x"), Some("%zz"));
        assert_eq!(get(&q, "y"), Some("a%2"));
        assert_eq!(q.iter().filter(|(k, _)| k == "command").count(), 3);
    }

    #[test]
    fn subresources_follow_kubelet() {
        assert_eq!(subresource(&["containerLogs", "ns", "p", "c"]), "proxy");
        assert_eq!(subresource(&["exec", "ns", "p", "c"]), "proxy");
        assert_eq!(subresource(&["logs"]), "log");
    }
}
