//! The built-in workload controllers (`apps`: Deployment, ReplicaSet; `network`: Endpoints,
//! EndpointSlice) against the embedded API server, through the real `kube` client and the real
//! `kubectl`. There is no node agent: the tests act as the kubelet themselves
//! ([`kubelet`]), patching pod status the way a kubelet does.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod deployment;
mod endpoints;
mod kubelet;
mod replicaset;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kinetic_testkit::TestServer;
use kube::Client;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The four controllers, as `kinetic up` runs them.
pub async fn run_all(
    client: Client,
    stop: futures::future::BoxFuture<'static, ()>,
) -> kinetic_controllers::Result<()> {
    use futures::FutureExt as _;
    let stop = stop.shared();
    futures::try_join!(
        kinetic_controllers::apps::run(client.clone(), stop.clone()),
        kinetic_controllers::network::run(client, stop),
    )
    .map(|_| ())
}

/// Polling deadline of every wait.
pub const WAIT: Duration = Duration::from_secs(30);

/// A test API server with controllers running against it.
pub struct Env {
    pub server: TestServer,
    pub client: Client,
    controllers: Option<(oneshot::Sender<()>, JoinHandle<kinetic_controllers::Result<()>>)>,
    /// Every write request the controllers sent: "METHOD path".
    writes: Arc<Mutex<Vec<String>>>,
}

impl Env {
    /// A server with all four controllers.
    pub async fn start() -> Self {
        let mut env = Self::bare().await;
        env.start_controllers();
        env
    }

    /// A server without controllers.
    pub async fn bare() -> Self {
        let server = TestServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        Self { server, client, controllers: None, writes: Arc::default() }
    }

    pub fn start_controllers(&mut self) {
        self.start_with(run_all);
    }

    /// Runs one controller entry point (or [`run_all`]).
    pub fn start_with<F, Fut>(&mut self, run: F)
    where
        F: FnOnce(Client, futures::future::BoxFuture<'static, ()>) -> Fut,
        Fut: Future<Output = kinetic_controllers::Result<()>> + Send + 'static,
    {
        assert!(self.controllers.is_none(), "controllers already running");
        let (tx, rx) = oneshot::channel::<()>();
        let stop: futures::future::BoxFuture<'static, ()> = Box::pin(async move {
            let _ = rx.await;
        });
        let client = recording_client(self.client.clone(), self.writes.clone());
        let task = tokio::spawn(run(client, stop));
        self.controllers = Some((tx, task));
    }

    /// Stops the controllers and waits until they returned.
    pub async fn stop_controllers(&mut self) {
        let (tx, task) = self.controllers.take().expect("controllers running");
        let _ = tx.send(());
        tokio::time::timeout(WAIT, task).await.unwrap().unwrap().unwrap();
    }

    /// Takes the controllers' write requests recorded so far ("METHOD path").
    pub fn take_writes(&self) -> Vec<String> {
        std::mem::take(&mut *self.writes.lock().unwrap())
    }

    pub async fn kubectl(&self, args: &[&str]) -> String {
        self.server.kubectl_ok(args).await.unwrap()
    }

    pub async fn apply(&self, yaml: &str) -> String {
        self.server.kubectl_stdin_ok(&["apply", "-f", "-"], yaml).await.unwrap()
    }

    pub async fn stop(mut self) {
        if self.controllers.is_some() {
            self.stop_controllers().await;
        }
        self.server.shutdown().await;
    }
}

/// Polls `check` every 50 ms until it returns `Some`, failing after [`WAIT`] with the last
/// state `describe` gives.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => {
                if tokio::time::Instant::now() > deadline {
                    panic!("timed out waiting for {what}; last state: {last}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client whose pod watches deliver every chunk `delay` late: the controllers' view of
/// pods lags behind the API, as with a slow or overloaded watch.
pub fn slow_pod_watch_client(client: Client, delay: Duration) -> Client {
    use futures::StreamExt as _;
    use http_body_util::{BodyStream, StreamBody};
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let client = client.clone();
        let slow = req.uri().path().ends_with("/pods")
            && req.uri().query().is_some_and(|q| q.contains("watch=true"));
        async move {
            let resp = client.send(req).await?;
            let (parts, body) = resp.into_parts();
            let frames = BodyStream::new(body).then(move |frame| async move {
                if slow {
                    tokio::time::sleep(delay).await;
                }
                frame
            });
            Ok::<_, kube::Error>(http::Response::from_parts(parts, StreamBody::new(frames)))
        }
    });
    Client::new(service, "default")
}

/// A client that records "METHOD path" of every request that is not a GET (the controllers'
/// writes: no-op writes leave resourceVersions alone, so only the requests tell).
pub fn recording_client(client: Client, writes: Arc<Mutex<Vec<String>>>) -> Client {
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let client = client.clone();
        if req.method() != http::Method::GET {
            writes.lock().unwrap().push(format!("{} {}", req.method(), req.uri().path()));
        }
        async move { client.send(req).await }
    });
    Client::new(service, "default")
}
