//! The routing table a caller pushes into the gateway: host names → weighted revisions →
//! ready endpoints and the revision's serving limits.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// A revision, named by namespace and name (a Knative `Revision`'s metadata).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RevisionKey {
    pub namespace: String,
    pub name: String,
}

impl RevisionKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for RevisionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Everything the gateway routes: which host goes to which revisions, and each revision's
/// endpoints and limits. The caller (the serving controller) computes the host names
/// (`{route}.{namespace}.{domain}`, `{tag}-{route}.{namespace}.{domain}`) from the Route's
/// `status.traffic` and `config-domain`; the gateway only matches them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoutingTable {
    /// Host name (lowercase, no port) → route.
    pub hosts: BTreeMap<String, Route>,
    /// Every revision a route targets.
    pub revisions: BTreeMap<RevisionKey, Revision>,
}

/// The traffic split of one host name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Route {
    pub targets: Vec<Target>,
}

/// One entry of a traffic split (a Route's `status.traffic[]` item, resolved to a revision).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub revision: RevisionKey,
    /// Share of the host's requests; the shares of a route need not add up to 100 (each
    /// target gets `percent / sum`), and a target with 0 gets none.
    pub percent: u32,
}

/// The wire protocol of a revision's container port (Knative's port names `http1` and `h2c`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    Http1,
    H2c,
}

/// What the gateway needs to know of one revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    /// Ready endpoints (pod IP and container port). Empty means "at zero": requests are held
    /// and the on-demand hook is called.
    pub endpoints: Vec<SocketAddr>,
    /// `spec.containerConcurrency`: at most this many requests in flight to one endpoint;
    /// 0 means unlimited.
    pub container_concurrency: u32,
    /// `spec.timeoutSeconds`: the longest a request may take from its arrival at the gateway
    /// until its response is finished. A request still held then gets 504, so does one whose
    /// response has not started; a body still streaming is cut off. Knative's queue-proxy
    /// starts this clock when the pod receives the request; here the time held counts too,
    /// since issue 11 bounds held requests by the revision's timeout.
    pub timeout: Duration,
    /// `spec.responseStartTimeoutSeconds`: the longest the container may take, once the
    /// request is sent to it, to start its response; `None` means `timeout` alone applies.
    pub response_start_timeout: Option<Duration>,
    /// `spec.idleTimeoutSeconds`: the longest the container may go without sending a byte of
    /// its response, counted from when the request is sent to it and again after every chunk
    /// (Knative's queue-proxy resets this timer at every write). Before the response starts
    /// that is a 504; a response body idle that long is cut off. `None`: no idle limit.
    pub idle_timeout: Option<Duration>,
    pub protocol: Protocol,
}

impl Default for Revision {
    /// No endpoints, unlimited concurrency, Knative's default `timeoutSeconds` (300).
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            container_concurrency: 0,
            timeout: Duration::from_secs(300),
            response_start_timeout: None,
            idle_timeout: None,
            protocol: Protocol::Http1,
        }
    }
}
