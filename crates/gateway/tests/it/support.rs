//! Test backends (plain hyper servers that report what they saw) and a client.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A container stand-in: answers every request (HTTP/1.1 or h2c) with its name, the request's
/// version, path and headers, after `work`; counts its own requests in flight.
pub struct Backend {
    pub addr: SocketAddr,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Counters {
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    served: AtomicUsize,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Self::start_with(name, Duration::ZERO).await
    }

    /// A backend that takes `work` to answer each request.
    pub async fn start_with(name: &str, work: Duration) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let (name, c) = (Arc::<str>::from(name), counters.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (name, c) = (name.clone(), c.clone());
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        answer(name.clone(), c.clone(), work, req)
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                });
            }
        });
        Backend { addr, counters, task }
    }

    /// The most requests this backend had in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.counters.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn served(&self) -> usize {
        self.counters.served.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    name: Arc<str>,
    c: Arc<Counters>,
    work: Duration,
    req: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, std::convert::Infallible>>, std::convert::Infallible> {
    let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    c.max_in_flight.fetch_max(now, Ordering::SeqCst);
    if !work.is_zero() {
        tokio::time::sleep(work).await;
    }
    let mut body = format!("{name}\nversion: {:?}\npath: {}\n", req.version(), req.uri());
    if let Some(pq) = req.uri().path_and_query() {
        body = format!("{name}\nversion: {:?}\npath: {pq}\n", req.version());
    }
    for (k, v) in req.headers() {
        body.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
    }
    c.served.fetch_add(1, Ordering::SeqCst);
    c.in_flight.fetch_sub(1, Ordering::SeqCst);
    if req.uri().path() == "/hang-body" {
        return Ok(Response::new(BoxBody::new(Hanging(Some(Bytes::from(body))))));
    }
    Ok(Response::new(BoxBody::new(Full::new(Bytes::from(body)))))
}

/// A body that sends one chunk and then never ends.
struct Hanging(Option<Bytes>);

impl hyper::body::Body for Hanging {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        match self.0.take() {
            Some(chunk) => std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(chunk)))),
            None => std::task::Poll::Pending,
        }
    }
}

/// The backend's name: the first line of its answer.
pub fn name(body: &str) -> &str {
    body.lines().next().unwrap_or("")
}

/// The request headers a backend echoed (lowercase names).
pub fn headers(body: &str) -> BTreeMap<String, String> {
    body.lines()
        .skip(3)
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A client of the gateway that names the host in each request.
#[derive(Clone)]
pub struct Client {
    gateway: SocketAddr,
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Http1(Box<HyperClient<HttpConnector, Empty<Bytes>>>),
    /// One HTTP/2 connection (prior knowledge), its streams shared by clones.
    H2c(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Client {
    pub fn http1(gateway: SocketAddr) -> Client {
        let inner = HyperClient::builder(TokioExecutor::new()).build(HttpConnector::new());
        Client { gateway, inner: Inner::Http1(Box::new(inner)) }
    }

    /// HTTP/2 with prior knowledge (h2c) on one connection; the host goes in `:authority`.
    pub async fn h2c(gateway: SocketAddr) -> Client {
        let tcp = tokio::net::TcpStream::connect(gateway).await.unwrap();
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        Client { gateway, inner: Inner::H2c(send) }
    }

    pub fn version(&self) -> Version {
        match self.inner {
            Inner::Http1(_) => Version::HTTP_11,
            Inner::H2c(_) => Version::HTTP_2,
        }
    }

    pub async fn get(&self, host: &str, path: &str) -> (StatusCode, String) {
        self.request(host, path, &[]).await
    }

    /// The response head and whether its body ended in error.
    pub async fn get_body_result(
        &self,
        host: &str,
        path: &str,
    ) -> (StatusCode, Result<Bytes, String>) {
        let Inner::Http1(client) = &self.inner else { panic!("http1 only") };
        let req = Request::builder()
            .uri(format!("http://{}{path}", self.gateway))
            .header("host", host)
            .body(Empty::new())
            .unwrap();
        let resp = client.request(req).await.expect("the gateway answered");
        let status = resp.status();
        let body =
            resp.into_body().collect().await.map(|b| b.to_bytes()).map_err(|e| e.to_string());
        (status, body)
    }

    pub async fn get_with(&self, host: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
        self.request(host, "/", headers).await
    }

    async fn request(
        &self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, String) {
        let resp = match &self.inner {
            Inner::Http1(client) => {
                let mut req = Request::builder()
                    .uri(format!("http://{}{path}", self.gateway))
                    .header("host", host);
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                client.request(req.body(Empty::new()).unwrap()).await.expect("the gateway answered")
            }
            Inner::H2c(send) => {
                let mut req =
                    Request::builder().version(Version::HTTP_2).uri(format!("http://{host}{path}"));
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                let mut send = send.clone();
                send.ready().await.unwrap();
                send.send_request(req.body(Empty::new()).unwrap())
                    .await
                    .expect("the gateway answered")
            }
        };
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("the body arrived").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// `n` GETs of `/` with at most `concurrency` at once; every answer, in no order.
    pub async fn many(
        &self,
        host: &str,
        n: usize,
        concurrency: usize,
    ) -> Vec<(StatusCode, String)> {
        let next = Arc::new(AtomicUsize::new(0));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (client, host, next) = (self.clone(), host.to_string(), next.clone());
            workers.spawn(async move {
                let mut out = Vec::new();
                while next.fetch_add(1, Ordering::SeqCst) < n {
                    out.push(client.get(&host, "/").await);
                }
                out
            });
        }
        let mut all = Vec::new();
        while let Some(r) = workers.join_next().await {
            all.extend(r.unwrap());
        }
        all
    }
}

/// Polls `cond` every few milliseconds for up to 10 s (a bounded wait on a condition).
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
