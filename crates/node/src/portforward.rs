//! `portForward` of the kubelet API: the `portforward.k8s.io` protocol over SPDY/3.1, either on
//! the upgraded connection itself (`Upgrade: SPDY/3.1`, what kubectl up to 1.30 speaks) or
//! tunnelled in binary WebSocket messages (subprotocol `SPDY/3.1+portforward.k8s.io`, what
//! kubectl 1.31+ tries first; client-go `tools/portforward` `tunneling_connection.go`).
//!
//! The client opens two SPDY streams per connection, with headers `streamtype` (`error` or
//! `data`), `port` and `requestid`; once both are there the agent connects to the port and
//! relays the data stream both ways, half-closes following the client's, and ends the error
//! stream, with a message when the port could not be reached (kubelet's
//! `pkg/kubelet/cri/streaming/portforward/httpstream.go`). Only the SPDY frames this needs are
//! spoken: SYN_STREAM, SYN_REPLY, DATA, RST_STREAM, PING, GOAWAY (SETTINGS and WINDOW_UPDATE
//! are read and ignored; the Go client does no flow control of its own).
//!
//! As kubelet (through containerd) does, the agent dials `127.0.0.1:{port}` inside the pod's
//! network namespace, so a server listening on the pod's loopback only is reachable too.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

use crate::server::{Body, Server, text};
use crate::spdy::{self, Event};

/// The WebSocket subprotocol of SPDY tunnelled over WebSocket.
const TUNNELED: &str = "SPDY/3.1+portforward.k8s.io";
const PROTOCOL: &str = "portforward.k8s.io";

/// `/portForward/{ns}/{pod}` with an upgrade to SPDY or to SPDY over WebSocket.
pub(crate) async fn handle(
    srv: &Server,
    ns: &str,
    pod: &str,
    _query: &[(String, String)],
    mut req: Request<Incoming>,
) -> Response<Body> {
    let Some(entry) = srv.index.get(ns, pod) else {
        return text(StatusCode::NOT_FOUND, format!("pod {ns}/{pod} not found on this node"));
    };
    // The pod's network namespace (`state::PodRecord::netns`).
    // A pod that claimed a ready sandbox (`sandboxes`) has that one's name.
    let pod_dir = entry.dir.parent().unwrap_or(&entry.dir);
    let name = std::fs::read(pod_dir.join("state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::state::PodRecord>(&b).ok())
        .map_or_else(|| format!("kinetic-{}", entry.uid), |r| r.netns);
    let netns = crate::cni::Network::netns_path(&name);
    if !netns.exists() {
        return text(StatusCode::BAD_REQUEST, format!("pod {ns}/{pod} has no network yet"));
    }
    let h = req.headers();
    let values = |name: header::HeaderName| -> Vec<String> {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(|p| p.trim().to_owned()))
            .collect()
    };
    let upgrade_to = values(header::UPGRADE);
    let tunneled = upgrade_to.iter().any(|u| u.eq_ignore_ascii_case("websocket"));
    let resp = if tunneled {
        if !values(header::SEC_WEBSOCKET_PROTOCOL).iter().any(|p| p == TUNNELED) {
            return text(
                StatusCode::BAD_REQUEST,
                format!("port-forward over WebSocket needs the subprotocol {TUNNELED}"),
            );
        }
        let Some(key) = h.get(header::SEC_WEBSOCKET_KEY).and_then(|v| v.to_str().ok()) else {
            return text(StatusCode::BAD_REQUEST, "the WebSocket upgrade has no Sec-WebSocket-Key");
        };
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "Upgrade")
            .header(header::SEC_WEBSOCKET_ACCEPT, crate::streaming::accept_key(key))
            .header(header::SEC_WEBSOCKET_PROTOCOL, TUNNELED)
    } else if upgrade_to.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
        if !values(header::HeaderName::from_static("x-stream-protocol-version"))
            .iter()
            .any(|p| p == PROTOCOL)
        {
            return text(
                StatusCode::FORBIDDEN,
                format!("the only supported protocol is {PROTOCOL}"),
            );
        }
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::UPGRADE, "SPDY/3.1")
            .header(header::CONNECTION, "Upgrade")
            .header("X-Stream-Protocol-Version", PROTOCOL)
    } else {
        return text(StatusCode::BAD_REQUEST, "port-forward needs an upgrade to SPDY/3.1");
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(io) = upgrade.await else { return };
        let (input, out, done) = spdy::transport(io, tunneled);
        session(input, out, netns).await;
        let _ = done.await;
    });
    resp.body(Empty::<Bytes>::new().map_err(|e| match e {}).boxed())
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "building the upgrade"))
}

/// The two streams of one forwarded connection, as they arrive.
#[derive(Default)]
struct Pair {
    port: u16,
    error: Option<u32>,
    data: Option<(u32, mpsc::Receiver<Vec<u8>>)>,
}

/// Serves one port-forward connection: pairs its streams by `requestid` and forwards each pair.
async fn session(input: mpsc::Receiver<Vec<u8>>, out: mpsc::Sender<Vec<u8>>, netns: PathBuf) {
    let (ev_tx, mut events) = mpsc::channel(64);
    let reader = tokio::spawn(spdy::read(input, out.clone(), ev_tx));
    let mut streams: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    while let Some(ev) = events.recv().await {
        match ev {
            Event::Open { id, headers } => {
                let port = headers.get("port").and_then(|p| p.parse::<u16>().ok());
                let request = headers.get("requestid").cloned().unwrap_or_default();
                let (Some(port), Some(kind)) = (port, headers.get("streamtype")) else {
                    // Kubelet refuses such a stream; reset it (PROTOCOL_ERROR).
                    let mut rst = id.to_be_bytes().to_vec();
                    rst.extend_from_slice(&1u32.to_be_bytes());
                    let _ = out.send(spdy::control(spdy::RST_STREAM, 0, &rst)).await;
                    continue;
                };
                let pair = pairs.entry(request.clone()).or_default();
                pair.port = port;
                if kind == "error" {
                    pair.error = Some(id);
                } else {
                    let (tx, rx) = mpsc::channel(16);
                    streams.insert(id, tx);
                    pair.data = Some((id, rx));
                }
                if pair.error.is_some()
                    && pair.data.is_some()
                    && let Some(Pair { port, error: Some(err), data: Some((d, rx)) }) =
                        pairs.remove(&request)
                {
                    tokio::spawn(forward(netns.clone(), port, d, err, rx, out.clone()));
                }
            }
            Event::Data { id, data, fin } => {
                if !data.is_empty()
                    && let Some(tx) = streams.get(&id)
                {
                    let _ = tx.send(data).await;
                }
                if fin {
                    streams.remove(&id);
                }
            }
            Event::Reset { id } => {
                streams.remove(&id);
            }
        }
    }
    reader.abort();
}

/// Connects to `port` of the pod and relays data stream `d` until both sides are done; the
/// error stream `err` carries why the port could not be reached.
async fn forward(
    netns: PathBuf,
    port: u16,
    d: u32,
    err: u32,
    mut rx: mpsc::Receiver<Vec<u8>>,
    out: mpsc::Sender<Vec<u8>>,
) {
    let tcp = match dial(netns, port).await {
        Ok(t) => t,
        Err(e) => {
            let msg =
                format!("error forwarding port {port} to pod: dial tcp4 127.0.0.1:{port}: {e}");
            return refuse(&out, d, err, &msg).await;
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut r, mut w) = tcp.into_split();
    // Client to pod, until the client half-closes or resets the stream.
    tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if w.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    });
    // Pod to client; the client waits for the end of this and of the error stream.
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out.send(spdy::data(d, 0, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = out.send(spdy::data(d, spdy::FLAG_FIN, &[])).await;
    let _ = out.send(spdy::data(err, spdy::FLAG_FIN, &[])).await;
}

/// Connects to `127.0.0.1:{port}` inside the network namespace at `netns`. A thread of its own
/// enters the namespace (setns changes only the calling thread), dials, and ends; the socket
/// stays in the pod's namespace.
async fn dial(netns: PathBuf, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let dialed = (|| -> std::io::Result<std::net::TcpStream> {
            let ns = std::fs::File::open(&netns)?;
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            let s = std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(5),
            )?;
            s.set_nonblocking(true)?;
            Ok(s)
        })();
        let _ = tx.send(dialed);
    });
    let s = rx.await.map_err(|_| std::io::Error::other("the dialing thread ended"))??;
    tokio::net::TcpStream::from_std(s)
}

async fn refuse(out: &mpsc::Sender<Vec<u8>>, d: u32, err: u32, message: &str) {
    let _ = out.send(spdy::data(err, 0, message.as_bytes())).await;
    let _ = out.send(spdy::data(err, spdy::FLAG_FIN, &[])).await;
    let _ = out.send(spdy::data(d, spdy::FLAG_FIN, &[])).await;
}
