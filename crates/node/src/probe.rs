//! Container probes (startup, readiness, liveness) and lifecycle hook handlers: httpGet,
//! tcpSocket and exec, with kubelet's defaults and thresholds.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::runtime::Runtime;

/// Where and how to run a handler.
#[derive(Clone)]
pub struct Target {
    pub pod_ip: String,
    pub runtime: Runtime,
    pub container_id: String,
}

/// One handler (probe or hook) of a container.
pub enum Handler<'a> {
    Http(&'a HTTPGetAction),
    Tcp { host: Option<&'a str>, port: &'a IntOrString },
    Exec(&'a [String]),
    Unsupported(&'static str),
}

/// The handler of a probe.
pub fn of_probe(p: &Probe) -> Handler<'_> {
    if let Some(h) = &p.http_get {
        Handler::Http(h)
    } else if let Some(t) = &p.tcp_socket {
        Handler::Tcp { host: t.host.as_deref(), port: &t.port }
    } else if let Some(e) = &p.exec {
        Handler::Exec(e.command.as_deref().unwrap_or_default())
    } else {
        Handler::Unsupported("grpc probes are not supported")
    }
}

fn port_of(c: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("port {name:?} not found in the container's ports")),
    }
}

/// Runs the handler once; `Ok` when it succeeded, `Err(message)` when not.
pub async fn run(
    h: &Handler<'_>,
    c: &Container,
    t: &Target,
    timeout: Duration,
) -> Result<(), String> {
    match h {
        Handler::Http(g) => {
            let port = port_of(c, &g.port)?;
            let host = g.host.as_deref().filter(|h| !h.is_empty()).unwrap_or(&t.pod_ip);
            if g.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("HTTPS")) {
                return Err("HTTPS probes are not supported".into());
            }
            let path = g.path.as_deref().filter(|p| !p.is_empty()).unwrap_or("/");
            let mut headers = String::new();
            for h in g.http_headers.iter().flatten() {
                headers.push_str(&format!("{}: {}\r\n", h.name, h.value));
            }
            tokio::time::timeout(timeout, http_get(host, port, path, &headers)).await.map_err(
                |_| format!("Get \"http://{host}:{port}{path}\": context deadline exceeded"),
            )?
        }
        Handler::Tcp { host, port } => {
            let port = port_of(c, port)?;
            let host = host.filter(|h| !h.is_empty()).unwrap_or(&t.pod_ip);
            let addr: SocketAddr = format!("{host}:{port}").parse().map_err(|e| format!("{e}"))?;
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("dial tcp {addr}: {e}")),
                Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
            }
        }
        Handler::Exec(argv) => match t.runtime.exec(&t.container_id, argv, timeout).await {
            Ok((0, _)) => Ok(()),
            Ok((code, out)) => Err(format!("command {argv:?} exited with {code}: {out}")),
            Err(e) => Err(e.to_string()),
        },
        Handler::Unsupported(why) => Err((*why).to_owned()),
    }
}

async fn http_get(host: &str, port: u16, path: &str, headers: &str) -> Result<(), String> {
    let addr = format!("{host}:{port}");
    let mut s =
        tokio::net::TcpStream::connect(&addr).await.map_err(|e| format!("dial tcp {addr}: {e}"))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\n{headers}Connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1024];
    let mut n = 0;
    while n < 12 {
        let r = s.read(&mut buf[n..]).await.map_err(|e| e.to_string())?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let line = String::from_utf8_lossy(&buf[..n]);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("malformed HTTP response from {addr}"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

/// Probe timing with kubelet's defaults.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: i32,
    pub failure_threshold: i32,
}

pub fn timing(p: &Probe) -> Timing {
    let secs = |v: Option<i32>, d: i32| {
        Duration::from_secs(u64::try_from(v.unwrap_or(d).max(0)).unwrap_or(0))
    };
    Timing {
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
        timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
        success_threshold: p.success_threshold.unwrap_or(1).max(1),
        failure_threshold: p.failure_threshold.unwrap_or(3).max(1),
    }
}
