//! `pods/{name}/log`: proxied to the node agent that runs the pod, as kube-apiserver proxies
//! it to the kubelet (`GET /containerLogs/{namespace}/{pod}/{container}` on the port the Node
//! publishes in `status.daemonEndpoints.kubeletEndpoint`, at its InternalIP).
//!
//! The request to the node carries the server's bearer token; on one machine the node agent
//! uses a kubeconfig with the same token and accepts it. Only plain HTTP to the node is
//! supported, which is why a node must publish a loopback or pod-network address.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Empty, StreamBody};
use hyper::body::Frame;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::http::Body;

/// Query parameters kubectl sends that the node understands.
const FORWARDED: &[&str] =
    &["follow", "previous", "tailLines", "limitBytes", "timestamps", "sinceSeconds"];

/// Streams the logs of `container` (or the pod's only container) of `pod` from its node.
///
/// # Errors
/// The pod has no node or several containers and none was named, the node publishes no
/// endpoint, or the node cannot be reached or refuses.
pub async fn proxy(
    pod: &Value,
    node: Option<&Value>,
    container: Option<&str>,
    query: &[(String, String)],
    token: &str,
) -> ApiResult<Response<Body>> {
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    let names: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(pod.pointer("/spec/initContainers").and_then(Value::as_array).into_iter().flatten())
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    let container = match container {
        Some(c) if !c.is_empty() => c.to_owned(),
        _ => {
            let app: Vec<&str> = pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect();
            if app.len() != 1 {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    names.join(" ")
                )));
            }
            app[0].to_owned()
        }
    };
    if !names.contains(&container.as_str()) {
        return Err(ApiError::bad_request(format!(
            "container {container} is not valid for pod {name}"
        )));
    }
    let node_name = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
    let unavailable = |why: String| ApiError::new(503, "ServiceUnavailable", why);
    let node = node
        .ok_or_else(|| unavailable(format!("node {node_name:?} of pod {name} does not exist")))?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .filter(|p| *p > 0)
        .ok_or_else(|| unavailable(format!("node {node_name:?} publishes no kubelet endpoint")))?;
    let ip = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .ok_or_else(|| unavailable(format!("node {node_name:?} publishes no InternalIP")))?
        .to_owned();
    let mut q = String::new();
    for (k, v) in query.iter().filter(|(k, _)| FORWARDED.contains(&k.as_str())) {
        q.push(if q.is_empty() { '?' } else { '&' });
        q.push_str(k);
        q.push('=');
        q.push_str(v);
    }
    let addr = if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") };
    let io = |e: &dyn std::fmt::Display| {
        unavailable(format!("error dialing node {node_name:?} at {addr}: {e}"))
    };
    let stream = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(&addr),
    )
    .await
    .map_err(|_| io(&"timed out"))?
    .map_err(|e| io(&e))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| io(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get(format!("/containerLogs/{ns}/{name}/{container}{q}"))
        .header(header::HOST, &addr)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| io(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| io(&e))?;
    let status = resp.status();
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
