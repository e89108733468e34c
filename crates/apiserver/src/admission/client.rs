//! Calling one webhook: where it is (`clientConfig.url`, or `clientConfig.service` resolved
//! through the Service's Endpoints to an address, as kube-apiserver's endpoint resolver does),
//! TLS verified against `caBundle` (the system roots when it is empty) with upstream's server
//! name (the URL's host, or `NAME.NAMESPACE.svc` for a service), and one `POST` of the
//! AdmissionReview with `?timeout=Ns`, cut off at the webhook's `timeoutSeconds`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::registry::storage_key;
use crate::store::{ObjKey, Store};

/// The largest webhook response read (upstream reads at most 3 MiB plus some).
const MAX_RESPONSE: usize = 4 * 1024 * 1024;

/// Where a webhook is reached and as whom it is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// What upstream prints in errors: `https://host:port/path?timeout=10s`.
    pub url: String,
    pub server_name: String,
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// Parses `https://HOST[:PORT][/PATH]` (validation already refused everything else).
pub fn parse_url(u: &str) -> Result<(String, u16, String), String> {
    let rest = u.strip_prefix("https://").ok_or_else(|| format!("{u:?} is not an https URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| format!("bad host in {u:?}"))?;
        (h.to_owned(), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| format!("bad port in {u:?}"))?,
        None => 443,
    };
    Ok((host, port, path.to_owned()))
}

/// Resolves a webhook's `clientConfig` to the address to dial.
pub fn target(store: &Store, cc: &Value, timeout: u64) -> Result<Target, String> {
    if let Some(u) = cc.get("url").and_then(Value::as_str) {
        let (host, port, path) = parse_url(u)?;
        let shown = if u.contains('?') { u.to_owned() } else { format!("{u}?timeout={timeout}s") };
        return Ok(Target { url: shown, server_name: host.clone(), host, port, path });
    }
    let svc = cc.get("service").ok_or("webhook has no clientConfig")?;
    let s = |f: &str| svc.get(f).and_then(Value::as_str).unwrap_or("").to_owned();
    let (ns, name, path) = (s("namespace"), s("name"), s("path"));
    let port = svc.get("port").and_then(Value::as_u64).unwrap_or(443);
    let path = if path.is_empty() { "/".to_owned() } else { path };
    let server_name = format!("{name}.{ns}.svc");
    let url = format!("https://{server_name}:{port}{path}?timeout={timeout}s");
    let (host, port) = resolve_service(store, &ns, &name, port)?;
    Ok(Target { url, server_name, host, port, path })
}

/// The first ready address of the Service's Endpoints on the Service port `port` (matched by
/// the port's name, as the Endpoints controller names them).
fn resolve_service(
    store: &Store,
    ns: &str,
    name: &str,
    port: u64,
) -> Result<(String, u16), String> {
    let svc = store
        .get(&ObjKey::new(&storage_key("", "services"), ns, name))
        .ok_or_else(|| format!("service \"{name}\" not found"))?;
    let svc = svc.value();
    let ports = svc.pointer("/spec/ports").and_then(Value::as_array);
    let sp = ports
        .and_then(|ps| ps.iter().find(|p| p.get("port").and_then(Value::as_u64) == Some(port)))
        .ok_or_else(|| format!("no service port {port} found for service \"{name}\""))?;
    let port_name = sp.get("name").and_then(Value::as_str).unwrap_or("");
    let eps = store
        .get(&ObjKey::new(&storage_key("", "endpoints"), ns, name))
        .ok_or_else(|| format!("endpoints \"{name}\" not found"))?;
    let eps = eps.value();
    for subset in eps.get("subsets").and_then(Value::as_array).into_iter().flatten() {
        let Some(p) = subset.get("ports").and_then(Value::as_array).and_then(|ps| {
            ps.iter().find(|p| p.get("name").and_then(Value::as_str).unwrap_or("") == port_name)
        }) else {
            continue;
        };
        let Some(ep_port) = p.get("port").and_then(Value::as_u64) else { continue };
        let ip = subset
            .get("addresses")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find_map(|a| a.get("ip").and_then(Value::as_str)));
        if let Some(ip) = ip {
            return Ok((ip.to_owned(), u16::try_from(ep_port).map_err(|_| "bad port")?));
        }
    }
    Err(format!("no endpoints available for service \"{name}\""))
}

/// The roots a webhook's certificate is verified against: its `caBundle` (PEM, base64 in JSON),
/// or the system's when it has none.
fn roots(ca_bundle: Option<&str>) -> Result<rustls::RootCertStore, String> {
    use base64::Engine as _;
    let pem = match ca_bundle.filter(|b| !b.is_empty()) {
        Some(b) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|e| format!("caBundle is not base64: {e}"))?,
        None => std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default(),
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        let c = c.map_err(|e| format!("caBundle does not parse: {e}"))?;
        roots.add(c).map_err(|e| format!("caBundle certificate not usable: {e}"))?;
    }
    Ok(roots)
}

/// POSTs `body` to the webhook and returns the response body. Errors read as Go's client
/// prints them after upstream's `failed to call webhook: `.
pub async fn post(
    t: &Target,
    ca_bundle: Option<&str>,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Bytes, String> {
    let call = async {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots(ca_bundle)?)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let name = rustls::pki_types::ServerName::try_from(t.server_name.clone())
            .map_err(|e| format!("bad server name {:?}: {e}", t.server_name))?;
        let addr: Vec<SocketAddr> = tokio::net::lookup_host((t.host.as_str(), t.port))
            .await
            .map_err(|e| format!("dial tcp: lookup {}: {e}", t.host))?
            .collect();
        let first =
            addr.first().ok_or_else(|| format!("dial tcp: lookup {}: no address", t.host))?;
        let tcp = tokio::net::TcpStream::connect(first)
            .await
            .map_err(|e| format!("dial tcp {first}: connect: {e}"))?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: failed to verify certificate: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let path_q = format!("{}?timeout={}s", t.path, timeout.as_secs());
        let req = http::Request::post(path_q)
            .header(http::header::HOST, format!("{}:{}", t.server_name, t.port))
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let limited = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE);
        let bytes = limited.collect().await.map_err(|e| e.to_string())?.to_bytes();
        if !status.is_success() {
            return Err(format!(
                "the server responded with status {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&bytes).trim()
            ));
        }
        Ok(bytes)
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(r) => r.map_err(|e| format!("Post \"{}\": {e}", t.url)),
        Err(_) => Err(format!("Post \"{}\": context deadline exceeded", t.url)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_webhook_urls() {
        assert_eq!(
            parse_url("https://127.0.0.1:8443/mutate").unwrap(),
            ("127.0.0.1".to_owned(), 8443, "/mutate".to_owned())
        );
        assert_eq!(
            parse_url("https://hooks.example.com").unwrap(),
            ("hooks.example.com".to_owned(), 443, "/".to_owned())
        );
        assert_eq!(parse_url("https://[::1]:9/x").unwrap(), ("::1".to_owned(), 9, "/x".to_owned()));
        assert!(parse_url("http://x").is_err());
    }
}
