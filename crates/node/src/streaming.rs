//! `exec` and `attach` of the kubelet API over WebSocket, the channel protocols kubectl speaks
//! (`v5.channel.k8s.io`, and `v4.channel.k8s.io`; k8s.io/apimachinery `wsstream`): every binary
//! message starts with a channel byte — 0 stdin, 1 stdout, 2 stderr, 3 the error channel (a
//! `metav1.Status` written once at the end), 4 terminal resize (`{"Width":…,"Height":…}`) — and
//! in v5, 255 closes a channel (`[255, 0]` ends stdin).
//!
//! Exec runs `runc exec` in the container. With a TTY, runc allocates the container's terminal
//! and relays it to its own stdio, which is the replica side of a pseudo-terminal the agent
//! opens: the agent relays the primary side to the WebSocket, applies resizes to it and tells
//! runc with SIGWINCH, which resizes the container's terminal to match. The exit code reaches
//! kubectl as kubelet reports it: a `NonZeroExitCode` Status with an `ExitCode` cause.
//!
//! Attach connects to the container's shim (`shim`, its `attach.sock`): the output from then on
//! (a TTY container's terminal as stdout), stdin for a `stdin: true` container (closed for the
//! container after the first attach with `stdinOnce`, as kubelet's runtimes do) and resizes of
//! a `tty: true` container's terminal. Both travel over WebSocket and over SPDY (which
//! kube-apiserver speaks to kubelets, translating kubectl's WebSocket).
//! Port-forward: `portforward`.

use std::io;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;

use crate::server::{Body, Server, flag, text};

/// The WebSocket key GUID of RFC 6455 section 1.3.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// The channel protocols served, preferred first.
const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// The subprotocol and `Sec-WebSocket-Accept` of a WebSocket upgrade request, or why it is not
/// one this server accepts.
fn websocket_handshake(
    req: &Request<Incoming>,
    offered: &[&'static str],
) -> Result<(&'static str, String), String> {
    let h = req.headers();
    let has = |name: header::HeaderName, want: &str| {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(want)))
    };
    if !has(header::UPGRADE, "websocket") {
        let spdy = h
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("spdy"));
        return Err(if spdy {
            "this node speaks the WebSocket streaming protocols (v5.channel.k8s.io, v4.channel.k8s.io), not SPDY; use kubectl 1.30 or later".to_owned()
        } else {
            "a WebSocket upgrade is required".to_owned()
        });
    }
    let key = h
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .ok_or("the WebSocket upgrade has no Sec-WebSocket-Key")?;
    let asked: Vec<String> = h
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_owned()))
        .collect();
    let proto = offered.iter().find(|p| asked.iter().any(|a| a == *p)).ok_or_else(|| {
        format!("none of the requested subprotocols {asked:?} is supported; supported: {offered:?}")
    })?;
    Ok((proto, accept_key(key)))
}

/// `Sec-WebSocket-Accept` for `key` (RFC 6455 section 4.2.2).
pub(crate) fn accept_key(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{}{GUID}", key.trim()).as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

fn switching(proto: &str, accept: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .header(header::SEC_WEBSOCKET_PROTOCOL, proto)
        .body(Empty::<Bytes>::new().map_err(|e| match e {}).boxed())
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "building the upgrade"))
}

/// One WebSocket frame from the server (never masked), RFC 6455 section 5.2.
pub(crate) fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => f.push(n as u8),
        n @ 126..=0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

fn channel_message(ch: u8, data: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(data.len() + 1);
    m.push(ch);
    m.extend_from_slice(data);
    frame(0x2, &m)
}

/// Reads one frame: (fin, opcode, unmasked payload). `None` at end of stream.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
) -> io::Result<Option<(bool, u8, Vec<u8>)>> {
    let mut head = [0u8; 2];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let fin = head[0] & 0x80 != 0;
    let opcode = head[0] & 0x0f;
    let masked = head[1] & 0x80 != 0;
    let len = match head[1] & 0x7f {
        126 => u64::from(r.read_u16().await?),
        127 => r.read_u64().await?,
        n => u64::from(n),
    };
    // Larger than any message kubectl sends; refuse rather than allocate it.
    if len > 16 * 1024 * 1024 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "websocket frame too large"));
    }
    let mut mask = [0u8; 4];
    if masked {
        r.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok(Some((fin, opcode, payload)))
}

/// What the client sends, decoded.
#[derive(Debug)]
enum In {
    Stdin(Vec<u8>),
    CloseStdin,
    Resize(u16, u16),
    Gone,
}

/// Reads messages until the client closes, answering pings through `out`.
async fn read_client<R: AsyncRead + Unpin>(
    mut r: R,
    v5: bool,
    events: mpsc::Sender<In>,
    out: mpsc::Sender<Vec<u8>>,
) {
    let mut message: Vec<u8> = Vec::new();
    loop {
        let (fin, op, payload) = match read_frame(&mut r).await {
            Ok(Some(f)) => f,
            _ => break,
        };
        match op {
            0x8 => {
                let _ = out.send(frame(0x8, &[])).await;
                break;
            }
            0x9 => {
                let _ = out.send(frame(0xA, &payload)).await;
                continue;
            }
            0xA => continue,
            _ => message.extend_from_slice(&payload),
        }
        if !fin {
            continue;
        }
        let m = std::mem::take(&mut message);
        let Some((&ch, data)) = m.split_first() else { continue };
        let ev = match ch {
            STDIN if !data.is_empty() => In::Stdin(data.to_vec()),
            RESIZE => {
                let v: Value = serde_json::from_slice(data).unwrap_or_default();
                let dim = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0) as u16;
                In::Resize(dim("Width"), dim("Height"))
            }
            CLOSE if v5 && data.first() == Some(&STDIN) => In::CloseStdin,
            _ => continue,
        };
        if events.send(ev).await.is_err() {
            return;
        }
    }
    let _ = events.send(In::Gone).await;
}

/// Writes queued frames until every sender is gone, then ends the connection.
async fn write_client<W: AsyncWrite + Unpin>(mut w: W, mut frames: mpsc::Receiver<Vec<u8>>) {
    while let Some(f) = frames.recv().await {
        if w.write_all(&f).await.is_err() || w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

/// The Status kubelet writes on the error channel when the command ended.
fn exit_status(code: Option<i32>, argv: &[String]) -> Value {
    match code {
        Some(0) => json!({"metadata": {}, "status": "Success"}),
        Some(rc) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command {argv:?}, exit code {rc}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": rc.to_string()}]},
        }),
        None => failure("the command was killed by a signal"),
    }
}

fn failure(message: &str) -> Value {
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError",
           "code": 500})
}

/// Options of an exec or attach request (kubelet's `remotecommand.Options`).
#[derive(Debug, Clone, Copy)]
struct Opts {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

/// `GET /exec/{ns}/{pod}/{container}?command=…` and `GET /attach/…` with a WebSocket upgrade.
pub(crate) async fn handle(
    srv: &Server,
    attach: bool,
    ns: &str,
    pod: &str,
    container: &str,
    query: &[(String, String)],
    mut req: Request<Incoming>,
) -> Response<Body> {
    let Some(entry) = srv.index.get(ns, pod) else {
        return text(StatusCode::NOT_FOUND, format!("pod {ns}/{pod} not found on this node"));
    };
    let Some(&(attempt, running)) = entry.containers.get(container) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("container {container} is not valid for pod {pod}"),
        );
    };
    if !running {
        return text(
            StatusCode::BAD_REQUEST,
            format!("container {container} is not running in pod {ns}/{pod}"),
        );
    }
    let opts = Opts {
        stdin: flag(query, "stdin"),
        stdout: flag(query, "stdout"),
        stderr: flag(query, "stderr"),
        tty: flag(query, "tty"),
    };
    let argv: Vec<String> =
        query.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect();
    if !attach && argv.is_empty() {
        return text(StatusCode::BAD_REQUEST, "you must specify at least one command");
    }
    if !opts.stdin && !opts.stdout && !opts.stderr {
        return text(
            StatusCode::BAD_REQUEST,
            "you must specify at least 1 of stdin, stdout, stderr",
        );
    }
    let spdy = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("SPDY/3.1"));
    let resp = if spdy {
        let asked: Vec<String> = req
            .headers()
            .get_all("x-stream-protocol-version")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(|p| p.trim().to_owned()))
            .collect();
        let Some(proto) = PROTOCOLS.iter().find(|p| asked.iter().any(|a| a == *p)) else {
            return text(
                StatusCode::FORBIDDEN,
                format!(
                    "none of the stream protocols {asked:?} is supported; supported: {PROTOCOLS:?}"
                ),
            );
        };
        Transport::Spdy(proto)
    } else {
        match websocket_handshake(&req, PROTOCOLS) {
            Ok((proto, accept)) => Transport::WebSocket(proto, accept),
            Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
        }
    };
    let upgrade = hyper::upgrade::on(&mut req);
    // The container id of the running attempt (`worker::container_id`).
    let id = format!("{}-{container}-{attempt}", entry.uid);
    let runtime = srv.runtime.clone();
    let bundle = entry.bundle(container, attempt);
    let key = (ns.to_owned(), pod.to_owned(), container.to_owned());
    let response = resp.response();
    tokio::spawn(async move {
        let Ok(io) = upgrade.await else { return };
        let run = |events, out: mpsc::Sender<(u8, Vec<u8>)>| async move {
            if attach {
                run_attach(key, &bundle, &opts, events, &out).await
            } else {
                run_exec(&runtime, &id, &argv, &opts, events, &out).await
            }
        };
        match resp {
            Transport::WebSocket(proto, _) => {
                let (rd, wr) = tokio::io::split(hyper_util::rt::TokioIo::new(io));
                let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>(64);
                let (in_tx, in_rx) = mpsc::channel::<In>(64);
                let reader =
                    tokio::spawn(read_client(rd, proto == PROTOCOLS[0], in_tx, out_tx.clone()));
                let writer = tokio::spawn(write_client(wr, out_rx));
                let (chan_tx, mut chan_rx) = mpsc::channel::<(u8, Vec<u8>)>(64);
                let relay_out = out_tx.clone();
                let relay = tokio::spawn(async move {
                    while let Some((ch, d)) = chan_rx.recv().await {
                        if relay_out.send(channel_message(ch, &d)).await.is_err() {
                            break;
                        }
                    }
                });
                let status = run(in_rx, chan_tx).await;
                let _ = relay.await;
                let _ = out_tx.send(channel_message(ERROR, status.to_string().as_bytes())).await;
                // Normal closure (RFC 6455 section 7.4.1).
                let _ = out_tx.send(frame(0x8, &1000u16.to_be_bytes())).await;
                drop(out_tx);
                reader.abort();
                let _ = writer.await;
            }
            Transport::Spdy(_) => spdy_session(io, &opts, run).await,
        }
    });
    response
}

/// How a remote command session travels.
enum Transport {
    /// Subprotocol and `Sec-WebSocket-Accept`.
    WebSocket(&'static str, String),
    /// SPDY/3.1 with this stream protocol.
    Spdy(&'static str),
}

impl Transport {
    fn response(&self) -> Response<Body> {
        match self {
            Transport::WebSocket(proto, accept) => switching(proto, accept),
            Transport::Spdy(proto) => Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(header::UPGRADE, "SPDY/3.1")
                .header(header::CONNECTION, "Upgrade")
                .header("X-Stream-Protocol-Version", *proto)
                .body(Empty::<Bytes>::new().map_err(|e| match e {}).boxed())
                .unwrap_or_else(|_| {
                    text(StatusCode::INTERNAL_SERVER_ERROR, "building the upgrade")
                }),
        }
    }
}

/// A remote command over SPDY (kubelet's `remotecommand/httpstream.go`, what kube-apiserver
/// speaks to kubelets and kubectl falls back to): the client opens one stream per channel,
/// named by its `streamtype` header; once the expected ones are there (within 30 s, kubelet's
/// stream creation timeout) the command runs, and the error stream gets its Status.
async fn spdy_session<F, Fut>(io: hyper::upgrade::Upgraded, opts: &Opts, run: F)
where
    F: FnOnce(mpsc::Receiver<In>, mpsc::Sender<(u8, Vec<u8>)>) -> Fut,
    Fut: std::future::Future<Output = Value>,
{
    use crate::spdy::{self, Event};
    let (input, out, done) = crate::spdy::transport(io, false);
    let (ev_tx, mut events) = mpsc::channel(64);
    let reader = tokio::spawn(spdy::read(input, out.clone(), ev_tx));
    let mut ids: std::collections::HashMap<u8, u32> = std::collections::HashMap::new();
    let wanted = |ids: &std::collections::HashMap<u8, u32>| {
        ids.contains_key(&ERROR)
            && (!opts.stdin || ids.contains_key(&STDIN))
            && (!opts.stdout || ids.contains_key(&STDOUT))
            && (!opts.stderr || opts.tty || ids.contains_key(&STDERR))
            && (!opts.tty || ids.contains_key(&RESIZE))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !wanted(&ids) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Event::Open { id, headers })) => {
                let ch = match headers.get("streamtype").map(String::as_str) {
                    Some("error") => ERROR,
                    Some("stdin") => STDIN,
                    Some("stdout") => STDOUT,
                    Some("stderr") => STDERR,
                    Some("resize") => RESIZE,
                    _ => continue,
                };
                ids.insert(ch, id);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                reader.abort();
                drop(out);
                let _ = done.await;
                return;
            }
        }
    }
    // Client streams become the command's input.
    let (in_tx, in_rx) = mpsc::channel::<In>(64);
    let (stdin_id, resize_id) = (ids.get(&STDIN).copied(), ids.get(&RESIZE).copied());
    let input = tokio::spawn(async move {
        let mut resize_buf: Vec<u8> = Vec::new();
        while let Some(ev) = events.recv().await {
            let msg = match ev {
                Event::Data { id, data, fin } if Some(id) == stdin_id => {
                    if !data.is_empty() && in_tx.send(In::Stdin(data)).await.is_err() {
                        return;
                    }
                    if !fin {
                        continue;
                    }
                    In::CloseStdin
                }
                Event::Data { id, data, .. } if Some(id) == resize_id => {
                    // A stream of JSON TerminalSize objects.
                    resize_buf.extend_from_slice(&data);
                    let mut it =
                        serde_json::Deserializer::from_slice(&resize_buf).into_iter::<Value>();
                    let mut sizes = Vec::new();
                    while let Some(Ok(v)) = it.next() {
                        let dim = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0) as u16;
                        sizes.push(In::Resize(dim("Width"), dim("Height")));
                    }
                    let used = it.byte_offset();
                    resize_buf.drain(..used);
                    for s in sizes {
                        if in_tx.send(s).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                _ => continue,
            };
            if in_tx.send(msg).await.is_err() {
                return;
            }
        }
        let _ = in_tx.send(In::Gone).await;
    });
    let (chan_tx, mut chan_rx) = mpsc::channel::<(u8, Vec<u8>)>(64);
    let relay_out = out.clone();
    let stream_of = ids.clone();
    let relay = tokio::spawn(async move {
        while let Some((ch, d)) = chan_rx.recv().await {
            let Some(&id) = stream_of.get(&ch) else { continue };
            if relay_out.send(spdy::data(id, 0, &d)).await.is_err() {
                break;
            }
        }
    });
    let status = run(in_rx, chan_tx).await;
    let _ = relay.await;
    if let Some(&err) = ids.get(&ERROR) {
        let _ = out.send(spdy::data(err, 0, status.to_string().as_bytes())).await;
    }
    for ch in [STDOUT, STDERR, ERROR] {
        if let Some(&id) = ids.get(&ch) {
            let _ = out.send(spdy::data(id, spdy::FLAG_FIN, &[])).await;
        }
    }
    // Kubelet closes the connection once the command is done.
    let _ = out.send(spdy::control(spdy::GOAWAY, 0, &[0; 8])).await;
    input.abort();
    reader.abort();
    drop(out);
    let _ = done.await;
}

/// Copies `r` to channel `ch` until end of file or an error (EIO on a pty whose other side
/// closed).
async fn pump<R: AsyncRead + Unpin>(mut r: R, ch: u8, out: mpsc::Sender<(u8, Vec<u8>)>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out.send((ch, buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Writes what arrives to `w`; closing the channel closes `w`.
async fn feed<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(b) = rx.recv().await {
        if w.write_all(&b).await.is_err() || w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

/// A pseudo-terminal: the primary side and an open replica.
fn open_pty() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let primary = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&primary)?;
    unlockpt(&primary)?;
    let name = ptsname(&primary, Vec::new())?;
    let replica = rustix::fs::open(
        name.as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    Ok((primary, replica))
}

fn resize(primary: &std::os::fd::OwnedFd, width: u16, height: u16) {
    let ws = rustix::termios::Winsize { ws_row: height, ws_col: width, ws_xpixel: 0, ws_ypixel: 0 };
    if let Err(e) = rustix::termios::tcsetwinsize(primary, ws) {
        tracing::debug!(error = %e, "resizing the exec terminal failed");
    }
}

fn signal(pid: Option<u32>, sig: rustix::process::Signal) {
    if let Some(pid) =
        pid.and_then(|p| i32::try_from(p).ok()).and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

async fn run_exec(
    runtime: &crate::runtime::Runtime,
    id: &str,
    argv: &[String],
    opts: &Opts,
    mut events: mpsc::Receiver<In>,
    out: &mpsc::Sender<(u8, Vec<u8>)>,
) -> Value {
    let mut cmd = runtime.exec_command(id, argv, opts.tty);
    let mut pending: Vec<In> = Vec::new();
    let mut pumps = Vec::new();
    let (stdin_tx, stdin_rx) = mpsc::channel::<Vec<u8>>(16);
    let mut stdin_rx = Some(stdin_rx);
    let mut primary = None;
    if opts.tty {
        let (p, r) = match open_pty() {
            Ok(x) => x,
            Err(e) => return failure(&format!("opening a terminal: {e}")),
        };
        // kubectl sends the terminal size first: apply it before runc starts, so the
        // container's terminal has it from the beginning.
        if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(1), events.recv()).await {
            match ev {
                In::Resize(w, h) => resize(&p, w, h),
                other => pending.push(other),
            }
        }
        let dup = |fd: &std::os::fd::OwnedFd| fd.try_clone().map(std::process::Stdio::from);
        match (dup(&r), dup(&r)) {
            (Ok(a), Ok(b)) => {
                cmd.stdin(std::process::Stdio::from(r)).stdout(a).stderr(b);
            }
            (Err(e), _) | (_, Err(e)) => return failure(&format!("opening a terminal: {e}")),
        }
        let (Ok(rd), Ok(wr)) = (p.try_clone(), p.try_clone()) else {
            return failure("opening a terminal");
        };
        pumps.push(tokio::spawn(pump(
            tokio::fs::File::from_std(std::fs::File::from(rd)),
            STDOUT,
            out.clone(),
        )));
        if let Some(rx) = stdin_rx.take() {
            tokio::spawn(feed(tokio::fs::File::from_std(std::fs::File::from(wr)), rx));
        }
        primary = Some(p);
    } else {
        use std::process::Stdio;
        cmd.stdin(if opts.stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(if opts.stdout { Stdio::piped() } else { Stdio::null() })
            .stderr(if opts.stderr { Stdio::piped() } else { Stdio::null() });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return failure(&format!("starting runc exec: {e}")),
    };
    // The replica's copies live in the child now; ours must go so the primary sees the end.
    drop(cmd);
    if let (Some(w), Some(rx)) = (child.stdin.take(), stdin_rx.take()) {
        tokio::spawn(feed(w, rx));
    }
    let mut stdin = opts.stdin.then_some(stdin_tx);
    if let Some(o) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(o, STDOUT, out.clone())));
    }
    if let Some(e) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(e, STDERR, out.clone())));
    }
    let pid = child.id();
    let mut queued = pending.into_iter();
    let code = loop {
        let ev = match queued.next() {
            Some(ev) => Some(ev),
            None => tokio::select! {
                ev = events.recv() => ev,
                st = child.wait() => break st.ok().and_then(|s| s.code()),
            },
        };
        match ev {
            Some(In::Stdin(b)) => {
                if let Some(s) = &stdin {
                    let _ = s.send(b).await;
                }
            }
            Some(In::CloseStdin) if !opts.tty => stdin = None,
            Some(In::CloseStdin) => {}
            Some(In::Resize(w, h)) => {
                if let Some(p) = &primary {
                    resize(p, w, h);
                    signal(pid, rustix::process::Signal::WINCH);
                }
            }
            Some(In::Gone) | None => {
                // The client left: end the command as a hang-up would (runc forwards it).
                signal(pid, rustix::process::Signal::HUP);
                let st = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                if st.is_err() {
                    let _ = child.start_kill();
                }
                return failure("the client went away");
            }
        }
    };
    drop(stdin);
    // Output written just before the exit is still in the pipes: drain it, within a bound (a
    // background process may keep them open).
    let drain = async {
        for p in pumps {
            let _ = p.await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    drop(primary);
    exit_status(code, argv)
}

/// Relays the container's output from now on, its stdin and terminal resizes, through the
/// container's shim (`shim`'s attach socket), until the container ends or the client leaves.
async fn run_attach(
    (ns, pod, container): (String, String, String),
    bundle: &std::path::Path,
    opts: &Opts,
    mut events: mpsc::Receiver<In>,
    out: &mpsc::Sender<(u8, Vec<u8>)>,
) -> Value {
    use crate::shim::{read_msg, wire, write_msg};
    let conn = match crate::shim::connect(bundle).await {
        Ok(c) => c,
        Err(e) => {
            return failure(&format!(
                "container {container} in pod {ns}/{pod} cannot be attached to: {e}"
            ));
        }
    };
    let (mut r, mut w) = conn.into_split();
    let hello = match tokio::time::timeout(Duration::from_secs(5), read_msg(&mut r)).await {
        Ok(Ok(Some((wire::HELLO, d)))) => serde_json::from_slice::<Value>(&d).unwrap_or_default(),
        _ => return failure(&format!("the shim of container {container} did not answer")),
    };
    let has_stdin = hello.get("stdin").and_then(Value::as_bool).unwrap_or(false);
    if opts.stdin && !has_stdin {
        return failure(&format!(
            "container {container} in pod {ns}/{pod} does not read stdin (set stdin: true in its spec)"
        ));
    }
    let mine = json!({"stdin": opts.stdin}).to_string();
    if write_msg(&mut w, wire::HELLO, mine.as_bytes()).await.is_err() {
        return failure(&format!("the shim of container {container} went away"));
    }
    // The shim's messages, read apart (a read is not cancel-safe inside `select!`).
    let (shim_tx, mut shim_rx) = mpsc::channel::<(u8, Vec<u8>)>(64);
    let reader = tokio::spawn(async move {
        while let Ok(Some(m)) = read_msg(&mut r).await {
            if shim_tx.send(m).await.is_err() {
                return;
            }
        }
    });
    let success = json!({"metadata": {}, "status": "Success"});
    let status = loop {
        tokio::select! {
            ev = events.recv() => {
                let sent = match ev {
                    Some(In::Stdin(b)) if opts.stdin => write_msg(&mut w, wire::STDIN, &b).await,
                    Some(In::Stdin(_)) => Ok(()),
                    Some(In::CloseStdin) => write_msg(&mut w, wire::CLOSE_STDIN, &[]).await,
                    Some(In::Resize(width, height)) => {
                        let mut b = width.to_be_bytes().to_vec();
                        b.extend_from_slice(&height.to_be_bytes());
                        write_msg(&mut w, wire::RESIZE, &b).await
                    }
                    Some(In::Gone) | None => break success,
                };
                if sent.is_err() {
                    break success;
                }
            }
            m = shim_rx.recv() => match m {
                // A terminal has one stream; so has a client with a TTY.
                Some((wire::STDOUT, d)) if opts.stdout => {
                    let _ = out.send((STDOUT, d)).await;
                }
                Some((wire::STDERR, d)) if opts.stderr || opts.tty => {
                    let ch = if opts.tty { STDOUT } else { STDERR };
                    let _ = out.send((ch, d)).await;
                }
                Some(_) => {}
                // The container ended (its shim closes every attach).
                None => break success,
            },
        }
    };
    reader.abort();
    status
}

/// `/portForward/{ns}/{pod}`.
pub(crate) async fn port_forward(
    srv: &Server,
    ns: &str,
    pod: &str,
    query: &[(String, String)],
    req: Request<Incoming>,
) -> Response<Body> {
    crate::portforward::handle(srv, ns, pod, query, req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        for len in [0usize, 5, 125, 126, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let f = frame(0x2, &payload);
            let (fin, op, p) = read_frame(&mut f.as_slice()).await.unwrap().unwrap();
            assert!(fin);
            assert_eq!(op, 0x2);
            assert_eq!(p, payload);
        }
    }

    #[tokio::test]
    async fn reads_masked_frames() {
        let mask = [1u8, 2, 3, 4];
        let data = b"\x00hello";
        let mut f = vec![0x82, 0x80 | data.len() as u8];
        f.extend_from_slice(&mask);
        f.extend(data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        let (_, _, p) = read_frame(&mut f.as_slice()).await.unwrap().unwrap();
        assert_eq!(p, data);
    }

    #[test]
    fn exit_codes_are_reported_as_kubelet_does() {
        let s = exit_status(Some(3), &["sh".into()]);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0], json!({"reason": "ExitCode", "message": "3"}));
        assert_eq!(exit_status(Some(0), &[])["status"], "Success");
    }
}
