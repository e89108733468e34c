//! The gateway's stats endpoint, so that several gateway replicas add up in one autoscaler
//! (issue 11, part 3). Upstream, every activator pushes its per-revision stats to the
//! autoscaler over a websocket; here the autoscaler (one elected leader) pulls them from each
//! live gateway every second instead, which keeps the gateway free of any knowledge of who
//! leads. The wire format is plain text, one record per line (names are DNS labels, so they
//! never hold a space):
//!
//! - `GET /stats`: the report of [`Gateway::take_stats`] since the previous scrape:
//!   `window <seconds>` then `stat <namespace> <name> <concurrency> <requests>` per revision.
//!   Only one caller (the leading autoscaler) may scrape: each scrape starts a new window.
//! - `GET /load`: [`Gateway::load`], not resetting anything (for status displays):
//!   `load <namespace> <name> <requests> <held>` per revision.
//! - `POST /demand?<namespace>/<name>`: calls the server's on-demand hook at once (a gateway
//!   that is not the leader pokes the leader this way when a request is held at zero).
//!
//! [`scrape`], [`load`] and [`poke`] are the matching clients. The endpoint has no
//! authentication, like upstream's autoscaler websocket: serve it on an address only the
//! cluster reaches.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kinetic_autoscale::Stat;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::{Gateway, Load, OnDemand, RevisionKey, StatsReport};

/// Errors of the stats endpoint and its clients.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("binding the gateway stats listener on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("requesting {url}")]
    Request {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{url} answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url} answered a malformed line {line:?}")]
    Malformed { url: String, line: String },
}

/// The running endpoint; dropping it stops it.
#[derive(Debug)]
pub struct StatsServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl StatsServer {
    /// Serves `gateway`'s stats on `listen` (port 0 for an ephemeral one); `POST /demand`
    /// calls `on_demand`.
    ///
    /// # Errors
    /// [`StatsError::Bind`] when the address cannot be bound.
    pub async fn start(
        gateway: Arc<Gateway>,
        listen: SocketAddr,
        on_demand: Option<OnDemand>,
    ) -> Result<Self, StatsError> {
        let bind = |source| StatsError::Bind { addr: listen, source };
        let listener = TcpListener::bind(listen).await.map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let tcp = tokio::select! {
                    r = listener.accept() => match r {
                        Ok((tcp, _)) => tcp,
                        Err(e) => {
                            tracing::warn!(error = %e, "gateway stats accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                };
                let (gateway, on_demand) = (gateway.clone(), on_demand.clone());
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let out = answer(&gateway, on_demand.as_ref(), &req);
                        async move { Ok::<_, std::convert::Infallible>(out) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc);
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "gateway stats connection ended with an error");
                    }
                });
            }
        });
        Ok(Self { addr, task })
    }

    /// The address the endpoint listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for StatsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    r
}

fn answer<B>(
    gateway: &Gateway,
    on_demand: Option<&OnDemand>,
    req: &Request<B>,
) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/stats") => {
            let report = gateway.take_stats();
            let mut out = format!("window {}\n", report.window.as_secs_f64());
            for (k, s) in &report.revisions {
                out.push_str(&format!(
                    "stat {} {} {} {}\n",
                    k.namespace, k.name, s.concurrency, s.requests
                ));
            }
            text(StatusCode::OK, out)
        }
        (&Method::GET, "/load") => {
            let mut out = String::new();
            for (k, l) in gateway.load() {
                out.push_str(&format!(
                    "load {} {} {} {}\n",
                    k.namespace, k.name, l.requests, l.held
                ));
            }
            text(StatusCode::OK, out)
        }
        (&Method::POST, "/demand") => {
            let Some((ns, name)) = req.uri().query().and_then(|q| q.split_once('/')) else {
                return text(StatusCode::BAD_REQUEST, "want /demand?namespace/name\n".into());
            };
            if let Some(hook) = on_demand {
                hook(&RevisionKey::new(ns, name));
            }
            text(StatusCode::ACCEPTED, String::new())
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// A client for other gateways' endpoints (one per caller; it keeps connections alive).
#[derive(Clone, Debug)]
pub struct StatsClient {
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for StatsClient {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_millis(500)));
        Self { client: Client::builder(TokioExecutor::new()).build(connector) }
    }
}

impl StatsClient {
    /// Sends `method` to `http://{addr}{path}` and returns the body's lines, within 2 s.
    async fn call(
        &self,
        method: Method,
        addr: SocketAddr,
        path: &str,
    ) -> Result<String, StatsError> {
        let url = format!("http://{addr}{path}");
        let err = |source: Box<dyn std::error::Error + Send + Sync>| StatsError::Request {
            url: url.clone(),
            source,
        };
        let req = Request::builder()
            .method(method)
            .uri(&url)
            .body(Empty::new())
            .map_err(|e| err(Box::new(e)))?;
        let fut = async {
            let resp = self.client.request(req).await.map_err(|e| err(Box::new(e)))?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map_err(|e| err(Box::new(e)))?;
            Ok::<_, StatsError>((status, body.to_bytes()))
        };
        let (status, body) = tokio::time::timeout(Duration::from_secs(2), fut)
            .await
            .map_err(|e| err(Box::new(e)))??;
        if !status.is_success() {
            return Err(StatsError::Status { url, status });
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// Takes the stats of the gateway whose endpoint is `addr` (`GET /stats`).
    ///
    /// # Errors
    /// The request failed or timed out, or the answer is not the format above.
    pub async fn scrape(&self, addr: SocketAddr) -> Result<StatsReport, StatsError> {
        let body = self.call(Method::GET, addr, "/stats").await?;
        let bad = |line: &str| StatsError::Malformed {
            url: format!("http://{addr}/stats"),
            line: line.to_owned(),
        };
        let mut report = StatsReport { window: Duration::ZERO, revisions: BTreeMap::new() };
        for line in body.lines().filter(|l| !l.is_empty()) {
            let f: Vec<&str> = line.split(' ').collect();
            match f.as_slice() {
                ["window", w] => {
                    let w: f64 = w.parse().map_err(|_| bad(line))?;
                    report.window = Duration::try_from_secs_f64(w).map_err(|_| bad(line))?;
                }
                ["stat", ns, name, c, r] => {
                    let concurrency = c.parse().map_err(|_| bad(line))?;
                    let requests = r.parse().map_err(|_| bad(line))?;
                    report
                        .revisions
                        .insert(RevisionKey::new(*ns, *name), Stat { concurrency, requests });
                }
                _ => return Err(bad(line)),
            }
        }
        Ok(report)
    }

    /// The requests each revision has at the gateway of `addr` right now (`GET /load`).
    ///
    /// # Errors
    /// As [`StatsClient::scrape`].
    pub async fn load(&self, addr: SocketAddr) -> Result<BTreeMap<RevisionKey, Load>, StatsError> {
        let body = self.call(Method::GET, addr, "/load").await?;
        let bad = |line: &str| StatsError::Malformed {
            url: format!("http://{addr}/load"),
            line: line.to_owned(),
        };
        let mut out = BTreeMap::new();
        for line in body.lines().filter(|l| !l.is_empty()) {
            let f: Vec<&str> = line.split(' ').collect();
            let ["load", ns, name, r, h] = f.as_slice() else { return Err(bad(line)) };
            let requests = r.parse().map_err(|_| bad(line))?;
            let held = h.parse().map_err(|_| bad(line))?;
            out.insert(RevisionKey::new(*ns, *name), Load { requests, held });
        }
        Ok(out)
    }

    /// Asks the endpoint at `addr` to wake `key` at once (`POST /demand`).
    ///
    /// # Errors
    /// The request failed or was refused.
    pub async fn poke(&self, addr: SocketAddr, key: &RevisionKey) -> Result<(), StatsError> {
        self.call(Method::POST, addr, &format!("/demand?{}/{}", key.namespace, key.name))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::Options;

    #[tokio::test]
    async fn stats_load_and_demand_round_trip() {
        let local = "127.0.0.1:0".parse().unwrap();
        let gw = Arc::new(Gateway::start(local, Options::default()).await.unwrap());
        let poked = Arc::new(Mutex::new(Vec::new()));
        let hook: OnDemand = {
            let poked = poked.clone();
            Arc::new(move |k: &RevisionKey| poked.lock().unwrap().push(k.clone()))
        };
        let server = StatsServer::start(gw, local, Some(hook)).await.unwrap();
        let client = StatsClient::default();
        let report = client.scrape(server.local_addr()).await.unwrap();
        assert!(report.revisions.is_empty());
        assert!(report.window > Duration::ZERO);
        assert!(client.load(server.local_addr()).await.unwrap().is_empty());
        let key = RevisionKey::new("default", "hello-00001");
        client.poke(server.local_addr(), &key).await.unwrap();
        assert_eq!(*poked.lock().unwrap(), vec![key]);
    }
}
