//! The pod subresources served by the node that runs the pod: `pods/log`, `pods/exec`,
//! `pods/attach` and `pods/portforward`, proxied to the node agent as kube-apiserver proxies them
//! to the kubelet API (`/containerLogs/{ns}/{pod}/{container}`, `/exec/…`, `/attach/…`,
//! `/portForward/{ns}/{pod}` over HTTPS on the port the Node publishes in
//! `status.daemonEndpoints.kubeletEndpoint`, at its InternalIP).
//!
//! The server authenticates to the node with a client certificate signed by its CA
//! ([`crate::pki`], kubeadm's `apiserver-kubelet-client`) and publishes that CA as the client CA
//! in `kube-system/extension-apiserver-authentication`, where node agents read it, as on a
//! kubeadm cluster. Like kube-apiserver without `--kubelet-certificate-authority`, it does not
//! verify the node's (self-signed) serving certificate.
//!
//! Upgrades (WebSocket for exec/attach, SPDY over WebSocket for port-forward) are passed through
//! byte for byte once the node answered `101 Switching Protocols`, as upstream's
//! `UpgradeAwareHandler` does; the protocols themselves are spoken by client and node.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Empty, StreamBody};
use hyper::body::Frame;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::http::Body;
use crate::pki::Pki;
use crate::rest::{Api, WriteOptions};

/// Query parameters of `pods/log` that the node understands (kube-apiserver's
/// `LogLocation` passes the same `PodLogOptions` on).
const LOG_PARAMS: &[&str] = &[
    "follow",
    "previous",
    "tailLines",
    "limitBytes",
    "timestamps",
    "sinceSeconds",
    "sinceTime",
    "stream",
];

/// Which node call a pod subresource is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Log,
    Exec,
    Attach,
    PortForward,
}

impl Call {
    /// The call for subresource `sub` of a pod, if it is one the node serves.
    pub fn of(sub: &str) -> Option<Call> {
        Some(match sub {
            "log" => Call::Log,
            "exec" => Call::Exec,
            "attach" => Call::Attach,
            "portforward" => Call::PortForward,
            _ => return None,
        })
    }
}

/// Failures to prepare the client TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum NodeClientError {
    #[error("reading the kubelet client certificate")]
    Pem(#[source] std::io::Error),
    #[error("configuring TLS to nodes")]
    Tls(#[source] rustls::Error),
}

/// How the server dials node agents: TLS with its kubelet client certificate.
#[derive(Clone)]
pub struct NodeClient {
    pub(crate) tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient").finish_non_exhaustive()
    }
}

impl NodeClient {
    /// # Errors
    /// The client certificate or key in `pki` does not parse or is refused by rustls.
    pub fn new(pki: &Pki) -> Result<Self, NodeClientError> {
        let certs: Vec<_> = rustls_pemfile::certs(&mut pki.kubelet_client_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(NodeClientError::Pem)?;
        let key = rustls_pemfile::private_key(&mut pki.kubelet_client_key_pem.as_bytes())
            .map_err(NodeClientError::Pem)?
            .ok_or_else(|| NodeClientError::Pem(std::io::Error::other("no private key")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(NodeClientError::Tls)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServingCert(provider)))
            .with_client_auth_cert(certs, key)
            .map_err(NodeClientError::Tls)?;
        // Upgrades need HTTP/1.1.
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self { tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)) })
    }
}

/// Accepts any serving certificate of a node (kube-apiserver's default without
/// `--kubelet-certificate-authority`) but still checks the handshake signatures, so the peer
/// holds the key of the certificate it shows.
#[derive(Debug)]
struct AnyServingCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServingCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Publishes `ca_pem` as the client CA in `kube-system/extension-apiserver-authentication`, as
/// kube-apiserver does, so node agents find which certificates to trust the same way on both
/// homes.
///
/// # Errors
/// The ConfigMap cannot be created or updated.
pub async fn publish_client_ca(api: &Api, ca_pem: &str) -> ApiResult<()> {
    let Some(res) = api.registry.get("", "v1", "configmaps") else { return Ok(()) };
    let name = "extension-apiserver-authentication";
    let opts = WriteOptions::default();
    match api.get(&res, "kube-system", name) {
        Ok(cur)
            if cur.value().pointer("/data/client-ca-file").and_then(Value::as_str)
                == Some(ca_pem) =>
        {
            Ok(())
        }
        Ok(_) => {
            let ca = ca_pem.to_owned();
            api.update_with(&res, "kube-system", name, None, &opts, move |cur| {
                let mut n = cur.clone();
                n["data"]["client-ca-file"] = json!(ca);
                Ok(n)
            })
            .await
            .map(|_| ())
        }
        Err(_) => {
            let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "kube-system"},
                "data": {"client-ca-file": ca_pem}});
            match api.create(&res, "kube-system", body, &opts).await {
                Ok(_) => Ok(()),
                Err(e) if e.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
    }
}

/// The request being proxied, as far as the node needs it.
pub struct Incoming<'a> {
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub query: &'a [(String, String)],
    /// The client connection's upgrade, for exec, attach and port-forward.
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
}

/// Proxies `call` for `pod` to its node.
///
/// # Errors
/// The pod has no node or several containers and none was named, the node publishes no
/// endpoint, or the node cannot be reached or refuses.
pub async fn proxy(
    nodes: &NodeClient,
    call: Call,
    pod: &Value,
    node: Option<&Value>,
    req: Incoming<'_>,
) -> ApiResult<Response<Body>> {
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    let container = req.query.iter().rev().find(|(k, _)| k == "container").map(|(_, v)| v);
    let path = match call {
        Call::PortForward => format!("/portForward/{ns}/{name}"),
        _ => {
            let c = container_of(pod, name, container.map(String::as_str))?;
            let what = match call {
                Call::Log => "containerLogs",
                Call::Exec => "exec",
                _ => "attach",
            };
            format!("/{what}/{ns}/{name}/{c}")
        }
    };
    let mut q = String::new();
    for (k, v) in req.query {
        let keep = match call {
            Call::Log => LOG_PARAMS.contains(&k.as_str()),
            _ => k != "container",
        };
        if keep {
            q.push(if q.is_empty() { '?' } else { '&' });
            q.push_str(&encode(k));
            q.push('=');
            q.push_str(&encode(v));
        }
    }
    let (addr, ip) = endpoint(pod, node, name)?;
    let node_name = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
    let unavailable = |why: String| ApiError::new(503, "ServiceUnavailable", why);
    let io = |e: &dyn std::fmt::Display| {
        unavailable(format!("error dialing node {node_name:?} at {addr}: {e}"))
    };
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(&addr),
    )
    .await
    .map_err(|_| io(&"timed out"))?
    .map_err(|e| io(&e))?;
    let _ = tcp.set_nodelay(true);
    let server_name = ServerName::IpAddress(ip.into());
    let tls = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        nodes.tls.connect(server_name, tcp),
    )
    .await
    .map_err(|_| io(&"TLS handshake timed out"))?
    .map_err(|e| io(&e))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| io(&e))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut builder = Request::builder().method(req.method.clone()).uri(format!("{path}{q}"));
    for (k, v) in req.headers {
        // The node authenticates the server's certificate, not the user's credentials.
        if k != header::AUTHORIZATION && k != header::HOST && k != header::CONTENT_LENGTH {
            builder = builder.header(k, v);
        }
    }
    let node_req =
        builder.header(header::HOST, &addr).body(Empty::<Bytes>::new()).map_err(|e| io(&e))?;
    let mut resp = sender.send_request(node_req).await.map_err(|e| io(&e))?;
    let status = resp.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client) = req.upgrade else {
            return Err(ApiError::bad_request("the node switched protocols on a plain request"));
        };
        let node_up = hyper::upgrade::on(&mut resp);
        let mut out = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        for (k, v) in resp.headers() {
            out = out.header(k, v);
        }
        tokio::spawn(async move {
            let (Ok(a), Ok(b)) = (client.await, node_up.await) else { return };
            let mut a = hyper_util::rt::TokioIo::new(a);
            let mut b = hyper_util::rt::TokioIo::new(b);
            let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
        });
        return out.body(Empty::new().map_err(|e| match e {}).boxed()).map_err(|e| io(&e));
    }
    if status != StatusCode::OK {
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let msg = String::from_utf8_lossy(&body).trim().to_owned();
        return Err(match status.as_u16() {
            400 => ApiError::bad_request(msg),
            404 => ApiError::new(404, "NotFound", msg),
            code => ApiError::new(code, "InternalError", msg),
        });
    }
    // Stream the node's body through; an error from the node ends the stream.
    let body = resp.into_body();
    let frames = futures::stream::unfold(Some(body), |b| async move {
        let mut b = b?;
        match b.frame().await {
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => Some((Ok::<_, Infallible>(Frame::data(d)), Some(b))),
                Err(_) => Some((Ok(Frame::data(Bytes::new())), Some(b))),
            },
            _ => None,
        }
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(StreamBody::new(frames).boxed())
        .unwrap_or_else(|_| Response::new(Empty::new().map_err(|e| match e {}).boxed())))
}

/// The container a call names, or the pod's only app container.
fn container_of(pod: &Value, name: &str, container: Option<&str>) -> ApiResult<String> {
    let list = |p: &str| -> Vec<&str> {
        pod.pointer(p)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("name").and_then(Value::as_str))
            .collect()
    };
    let app = list("/spec/containers");
    let all: Vec<&str> = app.iter().copied().chain(list("/spec/initContainers")).collect();
    let container = match container {
        Some(c) if !c.is_empty() => c.to_owned(),
        _ => {
            if app.len() != 1 {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    all.join(" ")
                )));
            }
            app[0].to_owned()
        }
    };
    if !all.contains(&container.as_str()) {
        return Err(ApiError::bad_request(format!(
            "container {container} is not valid for pod {name}"
        )));
    }
    Ok(container)
}

/// `host:port` of the pod's node and its IP.
fn endpoint(
    pod: &Value,
    node: Option<&Value>,
    name: &str,
) -> ApiResult<(String, std::net::IpAddr)> {
    let node_name = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
    let unavailable = |why: String| ApiError::new(503, "ServiceUnavailable", why);
    let node = node
        .ok_or_else(|| unavailable(format!("node {node_name:?} of pod {name} does not exist")))?;
    let addr = kubelet_address(node)
        .map_err(|why| unavailable(format!("node {node_name:?} publishes {why}")))?;
    Ok((addr.to_string(), addr.ip()))
}

/// The kubelet API's address a Node publishes: its `InternalIP` and
/// `daemonEndpoints.kubeletEndpoint.Port`, as kube-apiserver's node connection picks them.
///
/// # Errors
/// What the Node lacks ("no kubelet endpoint", "no InternalIP").
pub(crate) fn kubelet_address(node: &Value) -> Result<std::net::SocketAddr, &'static str> {
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or("no kubelet endpoint")?;
    let ip: std::net::IpAddr = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .and_then(|a| a.parse().ok())
        .ok_or("no InternalIP")?;
    Ok(std::net::SocketAddr::new(ip, port))
}

/// Percent-encodes a query key or value (commands hold spaces, `&`, `=`…).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_query_values() {
        assert_eq!(encode("sh -c 'exit 3'"), "sh%20-c%20%27exit%203%27");
        assert_eq!(encode("a&b=c"), "a%26b%3Dc");
    }
}
