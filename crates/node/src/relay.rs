//! The API relay: how pods reach the API server without kube-proxy.
//!
//! Upstream, kubelet sets `KUBERNETES_SERVICE_HOST/PORT` to the `kubernetes` Service's cluster
//! IP and port, and kube-proxy on every node DNATs that address to the API server. Kinetic's
//! nodes route no cluster IPs, and `kinetic up`'s server listens on loopback, which a pod's
//! network namespace cannot reach. So the agent listens on its bridge's gateway address (the
//! pod range's first address, which every pod routes to through its default route) and copies
//! each TCP connection to the API server address it uses itself; the pods' variables name that
//! address and port ([`crate::svcenv`]).
//!
//! The relay is a plain TCP copy: TLS runs end to end between the pod and the API server, so the
//! in-cluster client verifies the server certificate against the volume's `ca.crt` with the
//! gateway address as server name, and the server sees the pod's own token. The server's
//! certificate must therefore name the gateway address (`kinetic up` adds it; a separate server
//! takes it with `--tls-san`).
//!
//! The listener is bound with `IP_FREEBIND`: with CNI networking the bridge (and its address)
//! appears only with the first pod. It and every relayed connection belong to the relay task,
//! so stopping the agent closes them all.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::{Error, Result};

/// How long a connection to the API server may take before the pod's connection is closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the relay's listener on `ip:port` (port 0: any free one). The address need not exist
/// yet (`IP_FREEBIND`); `SO_REUSEADDR` lets a restarted agent bind again at once.
///
/// # Errors
/// The socket cannot be created or bound (for example the port is taken).
pub fn bind(ip: Ipv4Addr, port: u16) -> Result<TcpListener> {
    let addr = SocketAddr::V4(SocketAddrV4::new(ip, port));
    let err = |e: std::io::Error| Error::Relay { addr, source: e };
    let sock = TcpSocket::new_v4().map_err(err)?;
    sock.set_reuseaddr(true).map_err(err)?;
    rustix::net::sockopt::set_ip_freebind(&sock, true).map_err(|e| err(e.into()))?;
    sock.bind(addr).map_err(err)?;
    sock.listen(128).map_err(err)
}

/// Binds `ip:port`, or any free port on `ip` when `port` is taken (the pods' variables carry
/// the port, so in-cluster clients follow it).
///
/// # Errors
/// See [`bind`]: no port can be bound.
pub fn bind_or_any(ip: Ipv4Addr, port: u16) -> Result<TcpListener> {
    match bind(ip, port) {
        Ok(l) => Ok(l),
        Err(Error::Relay { source, .. })
            if port != 0 && source.kind() == std::io::ErrorKind::AddrInUse =>
        {
            tracing::warn!(%ip, port, "the API relay's port is taken; using a free one");
            bind(ip, 0)
        }
        Err(e) => Err(e),
    }
}

/// Accepts pods' connections on `listener` and copies each to and from `upstream` (`host:port`
/// of the API server, resolved on every connection). Runs until aborted; aborting it closes
/// the listener and every relayed connection.
pub async fn run(listener: TcpListener, upstream: Arc<str>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((pod, peer)) => {
                    let upstream = upstream.clone();
                    conns.spawn(async move {
                        if let Err(e) = relay(pod, &upstream).await {
                            tracing::debug!(%peer, error = %e, "API relay connection ended");
                        }
                    });
                }
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "the API relay cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn relay(mut pod: TcpStream, upstream: &str) -> std::io::Result<()> {
    let mut api = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream))
        .await
        .map_err(|_| std::io::Error::other(format!("connecting to {upstream} timed out")))??;
    let _ = api.set_nodelay(true);
    let _ = pod.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut pod, &mut api).await.map(|_| ())
}
