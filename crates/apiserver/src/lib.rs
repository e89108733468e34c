//! The embedded Kubernetes-compatible API server.
//!
//! `kinetic up` and `kinetic apiserver` start an [`ApiServer`]: HTTPS with a generated CA and a
//! bearer token, the Kubernetes REST API over a SQLite [`store`], watch, discovery, OpenAPI,
//! CRDs served dynamically, and the server-side controllers a cluster needs for deletions to
//! finish (ownerReference garbage collection, namespace cleanup, CRD cleanup; see [`gc`]).
//!
//! Data flow: [`http`] authenticates and decodes a request → [`rest::Api`] applies the API's
//! rules (preconditions, finalizers, schemas), asking the resource's [`strategy::Strategy`]
//! where a kind differs (defaults, validation, admission, deletion) → [`store::Store`] commits
//! it durably and publishes the change → [`watch`]ers and [`gc`] see it.
//!
//! Authorisation is the Node authoriser ([`rbac::node`]) and RBAC ([`rbac`]) behind the
//! `system:masters` group of the admin token.
//!
//! Server-side apply (`managedFields`, conflicts) is [`managed`] on machinery's `ssa`.
//!
//! What it does not do: protobuf responses (protobuf request bodies are decoded), conversion
//! webhooks, aggregated APIs. Admission webhooks are [`admission`]; ResourceQuota and
//! LimitRange admission and the quota controller are [`quota`].

pub mod admission;
pub mod audit;
pub mod auth;
pub mod batch;
pub mod builtin;
pub mod cel;
pub mod certauth;
pub mod controlplane;
pub mod crd;
mod crr;
pub mod daemonset;
pub mod discovery;
pub mod error;
pub mod events;
pub mod eviction;
pub mod gc;
pub mod hpa;
pub mod http;
mod knative;
mod kruise;
pub mod logs;
pub mod managed;
pub mod metrics;
pub mod metrics_api;
pub mod patch;
pub mod pdb;
pub mod pki;
pub mod quota;
pub mod rbac;
pub mod registry;
pub mod rest;
pub mod revisions;
pub mod serviceaccount;
pub mod statefulset;
pub mod storage;
pub mod store;
pub mod strategy;
pub mod unavailable;
pub mod validation;
pub mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::registry::Registry;
use crate::rest::{Api, WriteOptions};

/// Request bodies above this get 413 (upstream's limit is 3 MiB).
pub const DEFAULT_MAX_BODY: usize = 3 * 1024 * 1024;

/// Failures to start the server. Request failures are [`error::ApiError`]s instead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("preparing credentials")]
    Pki(#[from] pki::PkiError),
    #[error("opening the store")]
    Store(#[from] store::StoreError),
    #[error("building the schemas of the built-in kinds")]
    Schema(#[from] kinetic_machinery::schema::SchemaError),
    #[error("configuring TLS")]
    Tls(#[source] rustls::Error),
    #[error(
        "publishing the client CA in kube-system/extension-apiserver-authentication: {message}"
    )]
    ClientCa { message: String },
    #[error("preparing the client certificate for nodes")]
    NodeClient(#[source] logs::NodeClientError),
    #[error("reading PEM data")]
    Pem(#[source] std::io::Error),
    #[error("listening on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the audit log {path}")]
    AuditLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("preparing the service-account token signing key")]
    ServiceAccountKey(#[from] serviceaccount::KeyError),
    #[error("creating the initial namespace {name}: {message}")]
    Bootstrap { name: String, message: String },
    #[error("bootstrapping the default RBAC policy: {message}")]
    Rbac { message: String },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: pki::PkiError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct Config {
    /// State (`state.db`), credentials (`pki/`) and the kubeconfig live here.
    pub data_dir: PathBuf,
    /// Port 0 picks a free port (tests).
    pub listen: SocketAddr,
    pub max_body: usize,
    /// How many events the watch history keeps.
    pub history: usize,
    /// Validate `apps.kruise.io` objects as OpenKruise's webhook does, and default and validate
    /// `serving.knative.dev` ones as Knative's webhooks do (the default). Off, the server
    /// stores what the CRD schema admits, like a real cluster without the webhooks.
    pub kruise_webhook: bool,
    /// How many events a watcher or the garbage collector may fall behind before it lags (a
    /// lagged collector rebuilds its index; tests make it small to force that).
    pub event_buffer: usize,
    /// Where to write the audit log (one `audit.k8s.io/v1` Event per line, level Metadata).
    pub audit_log: Option<PathBuf>,
    /// More names and addresses for the serving certificate (k3s's `--tls-san`, kubeadm's
    /// `certSANs`): a node agent's bridge gateway, where its pods reach the server through
    /// the agent's API relay and verify it by that address.
    pub tls_sans: Vec<String>,
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen,
            max_body: DEFAULT_MAX_BODY,
            history: store::DEFAULT_HISTORY,
            kruise_webhook: true,
            event_buffer: store::DEFAULT_EVENT_BUFFER,
            audit_log: None,
            tls_sans: Vec::new(),
        }
    }
}

/// A running server. Dropping it without [`ApiServer::shutdown`] leaves the tasks running until
/// the runtime ends.
pub struct ApiServer {
    addr: SocketAddr,
    pki: pki::Pki,
    api: Arc<Api>,
    data_dir: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

fn tls_config(pki: &pki::Pki) -> Result<rustls::ServerConfig> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut pki.cert_pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(Error::Pem)?;
    let key = rustls_pemfile::private_key(&mut pki.key_pem.as_bytes())
        .map_err(Error::Pem)?
        .ok_or_else(|| Error::Pem(std::io::Error::other("no private key in apiserver.key")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Client certificates are requested, not required (upstream's `--client-ca-file`): one
    // signed by the cluster CA authenticates its subject ([`certauth`]); clients without one
    // authenticate with a bearer token.
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pki.ca_pem.as_bytes()) {
        roots.add(c.map_err(Error::Pem)?).map_err(Error::Tls)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| Error::Tls(rustls::Error::General(e.to_string())))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Error::Tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(Error::Tls)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

impl ApiServer {
    /// Opens the store, prepares credentials and starts serving.
    ///
    /// # Errors
    /// The data directory, store, credentials or listening socket cannot be set up.
    pub async fn start(cfg: Config) -> Result<Self> {
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|source| Error::DataDir { path: cfg.data_dir.clone(), source })?;
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| Error::Listen { addr: cfg.listen, source })?;
        let addr =
            listener.local_addr().map_err(|source| Error::Listen { addr: cfg.listen, source })?;
        let mut sans = vec!["127.0.0.1".to_owned(), "localhost".to_owned(), "::1".to_owned()];
        if !addr.ip().is_unspecified() && !addr.ip().is_loopback() {
            sans.push(addr.ip().to_string());
        }
        // Upstream's serving certificate also names the `kubernetes` Service: its cluster IP
        // and DNS names (kube-apiserver's `getServiceIP` and kubeadm's defaults).
        sans.push(controlplane::CLUSTER_IP.to_owned());
        for n in controlplane::DNS_NAMES {
            sans.push((*n).to_owned());
        }
        for s in &cfg.tls_sans {
            if !sans.contains(s) {
                sans.push(s.clone());
            }
        }
        let pki = pki::ensure(&cfg.data_dir.join("pki"), &sans)?;
        let store =
            store::Store::open_with(&cfg.data_dir.join("state.db"), cfg.history, cfg.event_buffer)?;
        let registry = Arc::new(Registry::default());
        builtin::register(&registry)?;
        hpa::register(&registry)?;
        pdb::register(&registry)?;
        quota::register(&registry)?;
        batch::register(&registry)?;
        daemonset::register(&registry)?;
        admission::register(&registry)?;
        statefulset::register(&registry)?;
        let rbac = rbac::Rbac::new(store.clone());
        rbac::register(&registry, &rbac)?;
        let api =
            Arc::new(Api::new(store, registry.clone()).with_kruise_webhook(cfg.kruise_webhook));
        // Serve the CRDs stored by an earlier run.
        {
            let key = registry::storage_key("apiextensions.k8s.io", "customresourcedefinitions");
            let crds: Vec<_> =
                api.store.read().list(&key, None, None).map(|(_, s)| s.value()).collect();
            for c in &crds {
                crd::sync_registry(&registry, c);
            }
        }
        bootstrap(&api).await?;
        rbac::policy::bootstrap(&api).await.map_err(|message| Error::Rbac { message })?;
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            serviceaccount::ensure_namespace(&api, ns, &pki.ca_pem).await;
        }
        let tokens =
            Arc::new(serviceaccount::Tokens::load(&cfg.data_dir.join("pki"), api.clone())?);
        controlplane::reconcile(&api, addr).await;
        logs::publish_client_ca(&api, &pki.ca_pem)
            .await
            .map_err(|e| Error::ClientCa { message: e.message })?;
        let nodes = logs::NodeClient::new(&pki).map_err(Error::NodeClient)?;
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(&pki)?));
        let audit = match &cfg.audit_log {
            Some(path) => Some(
                audit::AuditLog::open(path)
                    .map_err(|source| Error::AuditLog { path: path.clone(), source })?,
            ),
            None => None,
        };
        let host =
            if addr.ip().is_unspecified() { "127.0.0.1".to_owned() } else { addr.ip().to_string() };
        // Node, then RBAC, behind the chain's `system:masters` check (the admin token's
        // group), as kube-apiserver's `--authorization-mode=Node,RBAC`.
        let authz: Arc<dyn auth::Authorizer> = Arc::new(auth::Chain(vec![
            rbac::node::NodeAuthorizer::new(api.store.clone()),
            rbac.clone(),
        ]));
        // Admission's `authorizer` CEL variable asks the same authoriser.
        let _ = api.authz.set(authz.clone());
        let ctx = Arc::new(http::Ctx {
            api: api.clone(),
            authn: auth::Authenticator::new(pki.token.clone())
                .with_token_source(tokens.clone())
                .with_cert_source(Arc::new(certauth::CommonNameAuthenticator)),
            tokens,
            authz: authz.clone(),
            rbac: rbac.clone(),
            max_body: cfg.max_body,
            server_address: format!("{host}:{}", addr.port()),
            nodes,
            audit,
        });
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(rbac::run(api.clone(), rbac, stop_rx.clone()));
        let serve = tokio::spawn(accept_loop(listener, tls, ctx, stop_rx));
        let gc = tokio::spawn(gc::run(api.clone()));
        let sa = tokio::spawn(serviceaccount::run(api.clone(), pki.ca_pem.clone()));
        let quotas = tokio::spawn(quota::controller::run(api.clone()));
        tracing::info!(%addr, data_dir = %cfg.data_dir.display(), "api server listening");
        Ok(Self {
            addr,
            pki,
            api,
            data_dir: cfg.data_dir,
            stop,
            tasks: vec![serve, gc, sa, quotas],
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://HOST:PORT` as clients should dial it.
    pub fn url(&self) -> String {
        let ip = if self.addr.ip().is_unspecified() {
            "127.0.0.1".parse().unwrap_or(self.addr.ip())
        } else {
            self.addr.ip()
        };
        match ip {
            std::net::IpAddr::V6(v6) => format!("https://[{v6}]:{}", self.addr.port()),
            std::net::IpAddr::V4(v4) => format!("https://{v4}:{}", self.addr.port()),
        }
    }

    pub fn token(&self) -> &str {
        &self.pki.token
    }

    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    pub fn api(&self) -> &Arc<Api> {
        &self.api
    }

    /// A kubeconfig with the CA and the admin token.
    pub fn kubeconfig(&self) -> String {
        use base64::Engine as _;
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.pki.ca_pem);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kinetic\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: kinetic-admin\n  user:\n    token: {}\ncontexts:\n- name: kinetic\n  context:\n    cluster: kinetic\n    user: kinetic-admin\n    namespace: default\ncurrent-context: kinetic\npreferences: {{}}\n",
            self.url(),
            self.pki.token
        )
    }

    /// A kubeconfig that authenticates as user `name` in `groups` with a client certificate
    /// signed by the cluster CA (node agents: `system:node:NAME` in `system:nodes`; the
    /// controllers: `system:kube-controller-manager`), as kubeadm writes theirs.
    ///
    /// # Errors
    /// The CA cannot be read or used.
    pub fn client_kubeconfig(&self, name: &str, groups: &[&str]) -> Result<String> {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let (cert, key) = pki::issue_client(&self.data_dir.join("pki"), name, groups)?;
        Ok(format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kinetic\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: {name}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: kinetic\n  context:\n    cluster: kinetic\n    user: {name}\n    namespace: default\ncurrent-context: kinetic\npreferences: {{}}\n",
            self.url(),
            b64(&self.pki.ca_pem),
            b64(&cert),
            b64(&key),
        ))
    }

    /// Writes the kubeconfig to `DATA/kubeconfig` (mode 0600: it holds the token) and returns
    /// its path.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write_kubeconfig(&self) -> Result<PathBuf> {
        let path = self.data_dir.join("kubeconfig");
        self.write_kubeconfig_to(&path)?;
        Ok(path)
    }

    /// Writes the kubeconfig to `path`.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write_kubeconfig_to(&self, path: &Path) -> Result<()> {
        pki::write_private(path, self.kubeconfig().as_bytes(), 0o600)
            .map_err(|source| Error::Write { path: path.to_owned(), source })
    }

    /// Stops accepting, ends open connections and waits for the tasks. Every acknowledged write
    /// is already durable, so nothing needs flushing.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        tracing::info!("api server stopped");
    }
}

/// Creates the namespaces every cluster has.
async fn bootstrap(api: &Api) -> Result<()> {
    let Some(ns_res) = api.registry.get("", "v1", "namespaces") else { return Ok(()) };
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        if api.get(&ns_res, "", name).is_ok() {
            continue;
        }
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match api.create(&ns_res, "", body, &WriteOptions::default()).await {
            Ok(_) => {}
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(Error::Bootstrap { name: name.to_owned(), message: e.message }),
        }
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    ctx: Arc<http::Ctx>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let ctx = ctx.clone();
        conns.spawn(async move {
            let stream = match tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "tls handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let addr = peer;
            let peer = Arc::new(auth::Peer {
                addr: Some(addr),
                client_cert: stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| Arc::new(c.as_ref().to_vec())),
            });
            let svc =
                hyper::service::service_fn(move |req| http::handle(ctx.clone(), peer.clone(), req));
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // Many watches share one HTTP/2 connection (kube clients multiplex).
            builder.http2().max_concurrent_streams(2000);
            if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).await
            {
                tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
            }
        });
    }
    conns.abort_all();
}
