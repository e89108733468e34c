//! One request through the gateway: Host → route → revision (weighted) → slot on an endpoint
//! (held while there is none) → the container, with Knative's runtime-contract headers.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming, SizeHint};
use rand::Rng;

use crate::Shared;
use crate::table::Protocol;
use crate::throttler::{Admission, Rejection, Slot};

/// The body of every response the gateway sends.
pub(crate) type Body = BoxBody<Bytes, BoxError>;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of a request forwarded to a container: the client's, or empty on a retry.
pub(crate) type UpBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// How often a bodiless request is sent again after a refused connection (or, idempotent, a
/// connection closed before its response).
const MAX_REFUSED: u32 = 3;
/// How long an endpoint that refused a connection (or closed it before answering) gets no new
/// requests; a table that drops it ends this early.
const QUARANTINE: Duration = Duration::from_secs(1);

pub(crate) async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let Some(host) = request_host(&req) else {
        return Ok(reply(StatusCode::BAD_REQUEST, "the request names no host (Host header)"));
    };
    // The throttler the route picks, once the request is counted on it; picked again when a
    // table swap retired it in between (`Shared::is_current`: a request held on a retired
    // throttler would never see its revision's endpoints again).
    let (throttler, admission) = loop {
        let table = shared.table();
        let Some(route) = table.hosts.get(&host) else {
            return Ok(reply(StatusCode::NOT_FOUND, &format!("no route for host {host:?}")));
        };
        let Some(throttler) = route.pick(rand::rng().random_range(0..route.total.max(1))) else {
            return Ok(reply(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the route of host {host:?} has no traffic target"),
            ));
        };
        let throttler = throttler.clone();
        drop(table);
        let admission = throttler.admit();
        if shared.is_current(&throttler) {
            break (throttler, admission);
        }
    };
    let limits = throttler.limits();
    let arrived = tokio::time::Instant::now();
    let deadline = arrived + limits.timeout;
    let on_demand = |key: &_| {
        if let Some(hook) = &shared.on_demand {
            hook(key);
        }
    };
    let (req_parts, req_body) = req.into_parts();
    // A request without a body that could not even connect to its endpoint (refused: a pod
    // going away before the gateway saw it leave) never reached a container: it is sent to
    // another endpoint, and the refusing one is left out for a moment. Knative's queue-proxy
    // drains a pod before it stops; here the gateway absorbs that race instead.
    let retryable = hyper::body::Body::is_end_stream(&req_body);
    // And a bodiless request with an idempotent method whose connection closed before any
    // response (the container stopped mid-request) is sent again, as RFC 9110 §9.2.2 allows.
    let idempotent =
        [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE].contains(&req_parts.method);
    let mut req_body = Some(req_body);
    let mut refused = 0;
    let (slot, response) = loop {
        let slot = match throttler.acquire(deadline, shared.queue_depth, &on_demand).await {
            Ok(slot) => slot,
            Err(Rejection::QueueFull(depth)) => {
                return Ok(reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!(
                        "revision {}: request queue full ({depth} requests already wait for a free \
                         endpoint)",
                        throttler.key
                    ),
                ));
            }
            Err(Rejection::Timeout { at_zero }) => {
                let why = if at_zero { "no endpoint became ready" } else { "no endpoint had room" };
                return Ok(reply(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!(
                        "revision {}: {why} within the revision's timeout ({}s, timeoutSeconds)",
                        throttler.key,
                        secs(limits.timeout)
                    ),
                ));
            }
        };

        let addr = slot.addr();
        let body = match req_body.take() {
            Some(b) => b.boxed_unsync(),
            None => Empty::new().map_err(|never| match never {}).boxed_unsync(),
        };
        let upstream = match upstream_request(&req_parts, body, &host, peer, addr, limits.protocol)
        {
            Ok(r) => r,
            Err(e) => {
                return Ok(reply(StatusCode::BAD_REQUEST, &format!("bad request target: {e}")));
            }
        };
        // The response must start before the revision's overall deadline and, once sent,
        // within responseStartTimeoutSeconds and idleTimeoutSeconds (Knative's queue-proxy
        // enforces all three on the pod): the earliest applies.
        let sent = tokio::time::Instant::now();
        let mut limit = (deadline, format!("{}s, timeoutSeconds", secs(limits.timeout)));
        for (t, name) in [
            (limits.response_start_timeout, "responseStartTimeoutSeconds"),
            (limits.idle_timeout, "idleTimeoutSeconds"),
        ] {
            if let Some(t) = t.filter(|t| sent + *t < limit.0) {
                limit = (sent + t, format!("{}s, {name}", secs(t)));
            }
        }
        let (limit, which) = limit;
        let client = match limits.protocol {
            Protocol::Http1 => &shared.http1,
            Protocol::H2c => &shared.h2c,
        };
        match tokio::time::timeout_at(limit, client.request(upstream)).await {
            Ok(Ok(r)) => break (slot, r),
            Ok(Err(e)) if retryable && (e.is_connect() || idempotent) && refused < MAX_REFUSED => {
                refused += 1;
                tracing::debug!(revision = %throttler.key, %addr, error = %error_chain(&e),
                    "forwarding failed before a response; trying again");
                // Refused or closed before answering: likely a pod on its way out.
                throttler.quarantine(addr, QUARANTINE);
                drop(slot);
            }
            Ok(Err(e)) => {
                let cause = error_chain(&e);
                tracing::debug!(revision = %throttler.key, %addr, error = %cause,
                    "forwarding failed");
                return Ok(reply(
                    StatusCode::BAD_GATEWAY,
                    &format!("revision {}: forwarding to {addr} failed: {cause}", throttler.key),
                ));
            }
            Err(_) => {
                return Ok(reply(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!(
                        "revision {}: {addr} did not start its response in time ({which})",
                        throttler.key
                    ),
                ));
            }
        }
    };
    let (mut parts, body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    // timeoutSeconds bounds the whole response: one still streaming at the deadline is cut
    // off, as Knative's queue-proxy aborts it (the client sees the stream end in error).
    let body = Guarded {
        inner: body,
        deadline: Box::pin(tokio::time::sleep_until(deadline)),
        idle: limits.idle_timeout.map(|t| (t, Box::pin(tokio::time::sleep(t)))),
        revision: throttler.key.to_string(),
        timeout: limits.timeout,
        guard: Some((slot, admission)),
    };
    Ok(Response::from_parts(parts, body.boxed()))
}

/// The Host header's (or, in HTTP/2, the `:authority`'s) host name: lowercase, without port
/// or trailing dot.
fn request_host<B>(req: &Request<B>) -> Option<String> {
    let raw = match req.headers().get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(h) => h,
        None => req.uri().authority()?.as_str(),
    };
    strip_host(raw)
}

/// `raw` (a Host header or an authority) without port or trailing dot, lowercase.
fn strip_host(raw: &str) -> Option<String> {
    let host = if let Some(rest) = raw.strip_prefix('[') {
        // An IPv6 literal: `[::1]:80`.
        &raw[..rest.find(']').map_or(raw.len(), |i| i + 2)]
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// The request as the container receives it (Knative runtime contract): the original Host,
/// `Forwarded`, `X-Forwarded-For` and `X-Forwarded-Proto` added, hop-by-hop headers removed,
/// everything else (such as `traceparent`) kept.
fn upstream_request(
    parts: &http::request::Parts,
    body: UpBody,
    host: &str,
    peer: SocketAddr,
    addr: SocketAddr,
    protocol: Protocol,
) -> Result<Request<UpBody>, http::Error> {
    let mut headers = parts.headers.clone();
    let authority = headers
        .get(header::HOST)
        .cloned()
        .or_else(|| parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
    remove_hop_by_hop(&mut headers);
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri =
        Uri::builder().scheme("http").authority(addr.to_string()).path_and_query(path).build()?;
    let version = match protocol {
        Protocol::Http1 => Version::HTTP_11,
        Protocol::H2c => Version::HTTP_2,
    };
    if let Some(a) = authority {
        headers.insert(header::HOST, a);
    }
    add_forwarded(&mut headers, peer, host);
    let mut req = Request::builder().method(parts.method.clone()).uri(uri).version(version);
    if let Some(h) = req.headers_mut() {
        *h = headers;
    }
    req.body(body)
}

fn add_forwarded(headers: &mut HeaderMap, peer: SocketAddr, host: &str) {
    let ip = peer.ip().to_string();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.trim().is_empty() => format!("{prior}, {ip}"),
        _ => ip.clone(),
    };
    insert(headers, "x-forwarded-for", &xff);
    if !headers.contains_key("x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    // RFC 7239: IPv6 addresses are quoted and bracketed.
    let node = if peer.is_ipv6() { format!("\"[{ip}]\"") } else { ip };
    let element = format!("for={node};host={host};proto=http");
    let forwarded = match headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.trim().is_empty() => format!("{prior}, {element}"),
        _ => element,
    };
    insert(headers, "forwarded", &forwarded);
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1 and those the `Connection` header lists.
/// `TE: trailers` stays, as Go's `httputil.ReverseProxy` keeps it (gRPC needs it).
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers")));
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// A response the gateway answers itself, with a body that says why.
fn reply(status: StatusCode, message: &str) -> Response<Body> {
    let body =
        Full::new(Bytes::from(format!("{message}\n"))).map_err(|never| match never {}).boxed();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// `e` and its sources, `: `-separated (hyper's errors keep the useful part in the source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 { format!("{}", d.as_secs()) } else { format!("{s}") }
}

/// The container's response body, holding the request's slot and admission until it ends, so
/// `containerConcurrency` and the concurrency metric cover the whole response, and ending it
/// in error at the revision's deadline or after `idleTimeoutSeconds` without a frame.
struct Guarded {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// `idleTimeoutSeconds` and the timer it restarts at every frame.
    idle: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
    revision: String,
    timeout: Duration,
    guard: Option<(Slot, Admission)>,
}

impl hyper::body::Body for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.guard.is_some() && self.deadline.as_mut().poll(cx).is_ready() {
            self.guard = None;
            let message = format!(
                "revision {}: response not finished within the revision's timeout ({}s, \
                 timeoutSeconds)",
                self.revision,
                secs(self.timeout)
            );
            return Poll::Ready(Some(Err(message.into())));
        }
        if self.guard.is_some()
            && let Some((idle, timer)) = self.idle.as_mut()
            && timer.as_mut().poll(cx).is_ready()
        {
            let idle = *idle;
            self.guard = None;
            let message = format!(
                "revision {}: the response sent nothing for {}s (idleTimeoutSeconds)",
                self.revision,
                secs(idle)
            );
            return Poll::Ready(Some(Err(message.into())));
        }
        let poll = Pin::new(&mut self.inner).poll_frame(cx).map_err(BoxError::from);
        if let (Poll::Ready(Some(Ok(_))), Some((idle, timer))) = (&poll, self.idle.as_mut()) {
            timer.as_mut().reset(tokio::time::Instant::now() + *idle);
        }
        if matches!(poll, Poll::Ready(None) | Poll::Ready(Some(Err(_))))
            || self.inner.is_end_stream()
        {
            self.guard = None;
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn host_of(host_header: Option<&str>, uri: &str) -> Option<String> {
        let mut req = Request::builder().uri(uri);
        if let Some(h) = host_header {
            req = req.header(header::HOST, h);
        }
        request_host(&req.body(()).unwrap())
    }

    #[test]
    fn host_names_are_matched_without_port_case_or_trailing_dot() {
        assert_eq!(
            host_of(Some("Hello.Default.Example.com:8080"), "/").unwrap(),
            "hello.default.example.com"
        );
        assert_eq!(
            host_of(Some("hello.default.example.com."), "/").unwrap(),
            "hello.default.example.com"
        );
        assert_eq!(host_of(Some("[::1]:80"), "/").unwrap(), "[::1]");
        assert_eq!(host_of(Some("[::1]"), "/").unwrap(), "[::1]");
        // HTTP/2 carries the host in :authority.
        assert_eq!(
            host_of(None, "http://h2.default.example.com:81/x").unwrap(),
            "h2.default.example.com"
        );
        assert_eq!(host_of(None, "/"), None);
        assert_eq!(host_of(Some(":80"), "/"), None);
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_lists_are_removed_but_te_trailers_stays() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Custom-Hop"),
            ("x-custom-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers, deflate"),
            ("upgrade", "websocket"),
            ("transfer-encoding", "chunked"),
            ("proxy-connection", "keep-alive"),
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        remove_hop_by_hop(&mut h);
        let mut left: Vec<_> =
            h.iter().map(|(k, v)| format!("{k}: {}", v.to_str().unwrap())).collect();
        left.sort();
        assert_eq!(
            left,
            [
                "te: trailers",
                "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            ]
        );
    }

    #[test]
    fn forwarded_headers_append_to_what_the_client_sent() {
        let mut h = HeaderMap::new();
        h.insert("forwarded", HeaderValue::from_static("for=192.0.2.60;proto=https"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        add_forwarded(&mut h, "[2001:db8::1]:4711".parse().unwrap(), "a.b.example.com");
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(
            h["forwarded"],
            "for=192.0.2.60;proto=https, for=\"[2001:db8::1]\";host=a.b.example.com;proto=http"
        );
    }
}
