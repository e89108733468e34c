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
//! Unlike kubelet, which dials `localhost:{port}` inside the pod's network namespace, the agent
//! dials the pod's IP: a server listening on the pod's loopback only is not reachable.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use k8s_openapi::api::core::v1::Pod;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

use crate::server::{Body, Server, text};
use crate::streaming::{frame, read_frame};

/// The WebSocket subprotocol of SPDY tunnelled over WebSocket.
const TUNNELED: &str = "SPDY/3.1+portforward.k8s.io";
const PROTOCOL: &str = "portforward.k8s.io";

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 0x01;

/// The zlib dictionary of SPDY/3 header blocks (draft 3, section 2.6.10.1), 1423 bytes.
const DICTIONARY: &[u8] = b"\
    \x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\
    \x00\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-char\
    set\x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-\
    ranges\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\
    \x0dcache-control\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\x00\x00\x00\x10c\
    ontent-encoding\x00\x00\x00\x10content-language\x00\x00\x00\x0econtent-length\x00\x00\
    \x00\x10content-location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\x00\x00\
    \x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00\
    \x00\x00\x07expires\x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\
    \x00\x00\x11if-modified-since\x00\x00\x00\x0dif-none-match\x00\x00\x00\x08if-range\x00\
    \x00\x00\x13if-unmodified-since\x00\x00\x00\x0dlast-modified\x00\x00\x00\x08location\x00\
    \x00\x00\x0cmax-forwards\x00\x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticate\x00\x00\
    \x00\x13proxy-authorization\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0br\
    etry-after\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\x00\x00\
    \x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\x0auser-agent\x00\x00\x00\x04va\
    ry\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10www-authenticate\x00\x00\x00\
    \x06method\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\x06200\x20OK\x00\x00\x00\
    \x07version\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\x00\
    \x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin10010120120220520630030230\
    3304305306307402405406407408409410411412413414415416417502504505203\x20Non-Authoritative\
    \x20Information204\x20No\x20Content301\x20Moved\x20Permanently400\x20Bad\x20Request401\
    \x20Unauthorized403\x20Forbidden404\x20Not\x20Found500\x20Internal\x20Server\x20Error501\
    \x20Not\x20Implemented503\x20Service\x20UnavailableJan\x20Feb\x20Mar\x20Apr\x20May\x20Ju\
    n\x20Jul\x20Aug\x20Sept\x20Oct\x20Nov\x20Dec\x2000:00:00\x20Mon,\x20Tue,\x20Wed,\x20Thu,\
    \x20Fri,\x20Sat,\x20Sun,\x20GMTchunked,text/html,image/png,image/jpg,image/gif,applicati\
    on/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflat\
    e,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

/// `/portForward/{ns}/{pod}` with an upgrade to SPDY or to SPDY over WebSocket.
pub(crate) async fn handle(
    srv: &Server,
    ns: &str,
    pod: &str,
    _query: &[(String, String)],
    mut req: Request<Incoming>,
) -> Response<Body> {
    if srv.index.get(ns, pod).is_none() {
        return text(StatusCode::NOT_FOUND, format!("pod {ns}/{pod} not found on this node"));
    }
    let api: kube::Api<Pod> = kube::Api::namespaced(srv.client.clone(), ns);
    let ip = match api.get_opt(pod).await {
        Ok(Some(p)) => p.status.and_then(|s| s.pod_ip).and_then(|ip| ip.parse::<IpAddr>().ok()),
        Ok(None) => None,
        Err(e) => {
            return text(StatusCode::INTERNAL_SERVER_ERROR, format!("reading pod {ns}/{pod}: {e}"));
        }
    };
    let Some(ip) = ip else {
        return text(StatusCode::BAD_REQUEST, format!("pod {ns}/{pod} has no IP yet"));
    };
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
        let (mut rd, mut wr) = tokio::io::split(hyper_util::rt::TokioIo::new(io));
        let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(64);
        let (wire_tx, mut wire_rx) = mpsc::channel::<Vec<u8>>(64);
        let (spdy_tx, mut spdy_rx) = mpsc::channel::<Vec<u8>>(64);
        let writer = tokio::spawn(async move {
            while let Some(b) = wire_rx.recv().await {
                if wr.write_all(&b).await.is_err() || wr.flush().await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });
        let wire = wire_tx.clone();
        let reader = tokio::spawn(async move {
            if tunneled {
                // Each binary message carries the next bytes of the SPDY connection.
                while let Ok(Some((_, op, payload))) = read_frame(&mut rd).await {
                    match op {
                        0x8 => break,
                        0x9 => {
                            let _ = wire.send(frame(0xA, &payload)).await;
                        }
                        0x0..=0x2 if in_tx.send(payload).await.is_err() => break,
                        _ => {}
                    }
                }
            } else {
                let mut buf = vec![0u8; 32 * 1024];
                while let Ok(n) = rd.read(&mut buf).await {
                    if n == 0 || in_tx.send(buf[..n].to_vec()).await.is_err() {
                        break;
                    }
                }
            }
        });
        let relay = tokio::spawn(async move {
            while let Some(b) = spdy_rx.recv().await {
                let b = if tunneled { frame(0x2, &b) } else { b };
                if wire_tx.send(b).await.is_err() {
                    break;
                }
            }
        });
        session(in_rx, spdy_tx, ip).await;
        reader.abort();
        let _ = relay.await;
        let _ = writer.await;
    });
    resp.body(Empty::<Bytes>::new().map_err(|e| match e {}).boxed())
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "building the upgrade"))
}

fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80, 0x03];
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(body);
    f
}

fn data(stream: u32, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut f = (stream & 0x7fff_ffff).to_be_bytes().to_vec();
    f.push(flags);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(body);
    f
}

fn be32(b: &[u8]) -> u32 {
    b.get(..4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Reads the zlib stream of the client's header blocks, primed with [`DICTIONARY`].
struct Inflater(flate2::Decompress);

impl Inflater {
    fn block(&mut self, input: &[u8]) -> io::Result<Vec<u8>> {
        let bad =
            |e: &dyn std::fmt::Display| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
        let mut out = Vec::with_capacity(1024);
        let mut pos = 0usize;
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(4096);
            }
            let (in0, out0) = (self.0.total_in(), self.0.total_out());
            let res = self.0.decompress_vec(&input[pos..], &mut out, flate2::FlushDecompress::Sync);
            pos += usize::try_from(self.0.total_in() - in0).unwrap_or(usize::MAX);
            match res {
                Ok(_) => {
                    let stalled = self.0.total_in() == in0 && self.0.total_out() == out0;
                    if pos >= input.len() && (out.capacity() > out.len() || stalled) {
                        return Ok(out);
                    }
                    if stalled {
                        return Err(bad(&"truncated header block"));
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.0.set_dictionary(DICTIONARY).map_err(|e| bad(&e))?;
                }
                Err(e) => return Err(bad(&e)),
            }
        }
    }
}

/// Compresses our header blocks: one zlib stream, each block sync-flushed as Go's writer does.
/// It has no preset dictionary, which zlib readers accept whatever dictionary they hold. (A
/// flush must end each block: Go's reader hands out a stored block's bytes only once it saw
/// the next block's start, and the frame ends there.)
struct Deflater(flate2::Compress);

impl Default for Deflater {
    fn default() -> Self {
        Self(flate2::Compress::new(flate2::Compression::fast(), true))
    }
}

impl Deflater {
    fn block(&mut self, raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(raw.len() + 64);
        let start = self.0.total_in();
        loop {
            let done = usize::try_from(self.0.total_in() - start).unwrap_or(raw.len());
            let _ = self.0.compress_vec(&raw[done..], &mut out, flate2::FlushCompress::Sync);
            if out.len() < out.capacity() {
                return out;
            }
            out.reserve(256);
        }
    }
}

/// Name/value pairs of a decompressed SPDY/3 header block.
fn parse_headers(b: &[u8]) -> HashMap<String, String> {
    let mut h = HashMap::new();
    let n = be32(b);
    let mut at = 4usize;
    let take = |at: &mut usize| -> Option<String> {
        let len = usize::try_from(be32(b.get(*at..)?)).ok()?;
        let s = b.get(*at + 4..*at + 4 + len)?;
        *at += 4 + len;
        Some(String::from_utf8_lossy(s).into_owned())
    };
    for _ in 0..n {
        let (Some(k), Some(v)) = (take(&mut at), take(&mut at)) else { break };
        h.insert(k.to_ascii_lowercase(), v);
    }
    h
}

/// The two streams of one forwarded connection, as they arrive.
#[derive(Default)]
struct Pair {
    port: u16,
    error: Option<u32>,
    data: Option<(u32, mpsc::Receiver<Vec<u8>>)>,
}

/// Serves one SPDY connection: `input` is its bytes from the client, `out` takes the bytes to
/// send.
async fn session(mut input: mpsc::Receiver<Vec<u8>>, out: mpsc::Sender<Vec<u8>>, ip: IpAddr) {
    let mut inflate = Inflater(flate2::Decompress::new(true));
    let mut deflate = Deflater::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut streams: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    loop {
        while buf.len() >= 8 {
            let len = usize::try_from(be32(&buf[4..8]) & 0x00ff_ffff).unwrap_or(usize::MAX);
            if buf.len() < 8 + len {
                break;
            }
            let f: Vec<u8> = buf.drain(..8 + len).collect();
            let (flags, body) = (f[4], &f[8..]);
            if f[0] & 0x80 == 0 {
                let id = be32(&f) & 0x7fff_ffff;
                if !body.is_empty()
                    && let Some(tx) = streams.get(&id)
                {
                    let _ = tx.send(body.to_vec()).await;
                }
                if flags & FLAG_FIN != 0 {
                    streams.remove(&id);
                }
                continue;
            }
            match u16::from_be_bytes([f[2], f[3]]) {
                SYN_STREAM if body.len() >= 10 => {
                    let id = be32(body) & 0x7fff_ffff;
                    let headers = match inflate.block(&body[10..]) {
                        Ok(raw) => parse_headers(&raw),
                        Err(e) => {
                            tracing::debug!(error = %e, "port-forward: unreadable SPDY headers");
                            return;
                        }
                    };
                    let mut reply = id.to_be_bytes().to_vec();
                    reply.extend(deflate.block(&0u32.to_be_bytes()));
                    if out.send(control(SYN_REPLY, 0, &reply)).await.is_err() {
                        return;
                    }
                    let port = headers.get("port").and_then(|p| p.parse::<u16>().ok());
                    let request = headers.get("requestid").cloned().unwrap_or_default();
                    let (Some(port), Some(kind)) = (port, headers.get("streamtype")) else {
                        // Kubelet refuses such a stream; reset it (PROTOCOL_ERROR).
                        let mut rst = id.to_be_bytes().to_vec();
                        rst.extend_from_slice(&1u32.to_be_bytes());
                        let _ = out.send(control(RST_STREAM, 0, &rst)).await;
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
                        tokio::spawn(forward(ip, port, d, err, rx, out.clone()));
                    }
                }
                RST_STREAM if body.len() >= 4 => {
                    streams.remove(&(be32(body) & 0x7fff_ffff));
                }
                PING if out.send(f.clone()).await.is_err() => return,
                GOAWAY => return,
                _ => {}
            }
        }
        match input.recv().await {
            Some(chunk) => buf.extend_from_slice(&chunk),
            None => return,
        }
    }
}

/// Connects to `port` of the pod and relays data stream `d` until both sides are done; the
/// error stream `err` carries why the port could not be reached.
async fn forward(
    ip: IpAddr,
    port: u16,
    d: u32,
    err: u32,
    mut rx: mpsc::Receiver<Vec<u8>>,
    out: mpsc::Sender<Vec<u8>>,
) {
    let addr = std::net::SocketAddr::new(ip, port);
    let tcp =
        match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
        {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                return refuse(
                    &out,
                    d,
                    err,
                    &format!("error forwarding port {port} to pod IP {ip}: {e}"),
                )
                .await;
            }
            Err(_) => {
                return refuse(
                    &out,
                    d,
                    err,
                    &format!("error forwarding port {port} to pod IP {ip}: timed out"),
                )
                .await;
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
                if out.send(data(d, 0, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = out.send(data(d, FLAG_FIN, &[])).await;
    let _ = out.send(data(err, FLAG_FIN, &[])).await;
}

async fn refuse(out: &mpsc::Sender<Vec<u8>>, d: u32, err: u32, message: &str) {
    let _ = out.send(data(err, 0, message.as_bytes())).await;
    let _ = out.send(data(err, FLAG_FIN, &[])).await;
    let _ = out.send(data(d, FLAG_FIN, &[])).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_spdy3s() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\x00\x00\x00\x07options"));
        assert!(DICTIONARY.ends_with(b"enq=0."));
    }

    #[test]
    fn header_blocks_round_trip_through_zlib() {
        // A block as a Go client writes it: zlib with the dictionary, sync-flushed.
        let mut raw = 2u32.to_be_bytes().to_vec();
        for s in ["port", "8080", "streamtype", "data"] {
            raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
            raw.extend_from_slice(s.as_bytes());
        }
        let mut z = flate2::Compress::new(flate2::Compression::default(), true);
        z.set_dictionary(DICTIONARY).unwrap();
        let mut block = Vec::with_capacity(1024);
        z.compress_vec(&raw, &mut block, flate2::FlushCompress::Sync).unwrap();
        let mut inflate = Inflater(flate2::Decompress::new(true));
        let h = parse_headers(&inflate.block(&block).unwrap());
        assert_eq!(h.get("port").map(String::as_str), Some("8080"));
        assert_eq!(h.get("streamtype").map(String::as_str), Some("data"));
        // Ours read back with a plain zlib reader.
        let mut d = Deflater::default();
        let mut ours = d.block(&raw);
        ours.extend(d.block(&raw));
        let mut plain = flate2::Decompress::new(true);
        let mut back = Vec::with_capacity(1024);
        plain.decompress_vec(&ours, &mut back, flate2::FlushDecompress::Sync).unwrap();
        assert_eq!(back, [raw.clone(), raw].concat());
    }
}
