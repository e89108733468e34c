//! HTTP: TLS, authentication, routing, content negotiation, and the wire encodings of lists,
//! tables and watch streams. Everything about meaning lives in [`crate::rest`].

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited, StreamBody, combinators::BoxBody};
use hyper::body::{Body as _, Frame, Incoming};
use kinetic_machinery::printers;
use kinetic_machinery::selector::{FieldSelector, LabelSelector};
use serde_json::{Value, json};

use crate::discovery;
use crate::error::{ApiError, ApiResult};
use crate::metrics::RequestLabels;
use crate::registry::{Printer, Resource};
use crate::rest::{Api, DeleteOptions, Deleted, FieldValidation, ListOptions, WriteOptions};
use crate::store::Stored;

pub type Body = BoxBody<Bytes, Infallible>;

/// Shared by every connection.
pub struct Ctx {
    pub api: Arc<Api>,
    /// Who a request is ([`crate::auth`]).
    pub authn: crate::auth::Authenticator,
    /// Whether they may ([`crate::auth`]): RBAC behind `system:masters`.
    pub authz: Arc<dyn crate::auth::Authorizer>,
    /// The RBAC policy, for the rules review ([`crate::rbac::review`]).
    pub rbac: Arc<crate::rbac::Rbac>,
    /// Service-account tokens: TokenRequest and TokenReview ([`crate::serviceaccount`]).
    pub tokens: Arc<crate::serviceaccount::Tokens>,
    pub max_body: usize,
    pub server_address: String,
    /// How pod subresources served by nodes reach them.
    pub nodes: crate::logs::NodeClient,
    /// Where each request is recorded, when `--audit-log` is given.
    pub audit: Option<crate::audit::AuditLog>,
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn json_response(code: u16, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(body))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

fn value_response(code: u16, v: &Value) -> Response<Body> {
    json_response(code, serde_json::to_vec(v).unwrap_or_default())
}

fn error_response(e: &ApiError) -> Response<Body> {
    value_response(e.code, &e.to_status())
}

fn with_warnings(mut r: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        // RFC 7234 warn-code 299 with the text quoted, as upstream sends them.
        let v = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(h) = header::HeaderValue::from_str(&v) {
            r.headers_mut().append(header::WARNING, h);
        }
    }
    r
}

/// What the client asked the response to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Object,
    Table,
    Metadata,
}

fn negotiate(headers: &HeaderMap) -> ApiResult<Want> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.is_empty() {
        return Ok(Want::Object);
    }
    // Take the first option we can serve, in the client's order.
    for opt in accept.split(',') {
        let opt = opt.trim();
        let mut parts = opt.split(';').map(str::trim);
        let mime = parts.next().unwrap_or("");
        let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
        let as_ = params.iter().find(|(k, _)| *k == "as").map(|(_, v)| *v);
        if !matches!(mime, "application/json" | "*/*" | "application/*") {
            continue;
        }
        match as_ {
            None => return Ok(Want::Object),
            Some("Table") => return Ok(Want::Table),
            Some("PartialObjectMetadata" | "PartialObjectMetadataList") => {
                return Ok(Want::Metadata);
            }
            Some(_) => continue,
        }
    }
    Err(ApiError::not_acceptable(format!(
        "only the following media types are accepted: application/json, application/json;as=Table;v=v1;g=meta.k8s.io (asked for {accept})"
    )))
}

fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = q else { return vec![] };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
    }
    fn flag(&self, k: &str) -> bool {
        self.get(k).is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
    }
    /// The write options of a request with `headers` (the User-Agent names the field manager
    /// when the query does not).
    fn write_options(
        &self,
        headers: &HeaderMap,
        user: &Arc<crate::auth::UserInfo>,
    ) -> ApiResult<WriteOptions> {
        let dry_run = match self.get("dryRun") {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "unsupported dryRun value {other:?}; supported values: All"
                )));
            }
        };
        Ok(WriteOptions {
            dry_run,
            field_validation: FieldValidation::parse(self.get("fieldValidation").unwrap_or(""))?,
            manager: Some(crate::managed::manager_for(
                self.get("fieldManager"),
                headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()),
            )),
            user: Some(user.clone()),
        })
    }
    fn list_options(&self) -> ApiResult<ListOptions> {
        let label_selector = LabelSelector::parse(self.get("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("unable to parse labelSelector: {e}")))?;
        let field_selector = match self.get("fieldSelector") {
            None | Some("") => None,
            Some(s) => Some(FieldSelector::parse(s).map_err(|e| {
                ApiError::bad_request(format!("unable to parse fieldSelector: {e}"))
            })?),
        };
        let limit = match self.get("limit") {
            None | Some("") => None,
            Some(l) => Some(l.parse::<usize>().map_err(|_| {
                ApiError::bad_request(format!("limit must be a non-negative integer, got {l:?}"))
            })?),
        };
        Ok(ListOptions {
            label_selector,
            field_selector,
            limit,
            continue_token: self.get("continue").map(str::to_owned),
        })
    }
}

/// Which resource a path names.
#[derive(Debug)]
struct Target {
    res: Arc<Resource>,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn route(ctx: &Ctx, segs: &[&str]) -> ApiResult<Option<Target>> {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Ok(None),
    };
    if rest.is_empty() {
        return Ok(None);
    }
    let reg = &ctx.api.registry;
    let lookup =
        |plural: &str| reg.get(group, version, plural).ok_or_else(ApiError::page_not_found);
    // /namespaces/{ns}/{plural}[/{name}[/{sub}]] — but /namespaces/{name}[/{sub}] is the
    // namespace itself.
    if rest[0] == "namespaces"
        && rest.len() >= 3
        && group.is_empty()
        && matches!(rest[2], "status" | "finalize")
        && rest.len() == 3
    {
        let res = lookup("namespaces")?;
        return Ok(Some(Target {
            res,
            namespace: None,
            name: Some(rest[1].to_owned()),
            sub: Some(rest[2].to_owned()),
        }));
    }
    if rest[0] == "namespaces" && rest.len() >= 3 {
        let res = lookup(rest[2])?;
        if !res.namespaced {
            return Err(ApiError::page_not_found());
        }
        let name = rest.get(3).map(|s| (*s).to_owned());
        let sub = rest.get(4).map(|s| (*s).to_owned());
        if rest.len() > 5 {
            return Err(ApiError::page_not_found());
        }
        return Ok(Some(Target { res, namespace: Some(rest[1].to_owned()), name, sub }));
    }
    let res = lookup(rest[0])?;
    if rest.len() > 3 {
        return Err(ApiError::page_not_found());
    }
    let name = rest.get(1).map(|s| (*s).to_owned());
    if res.namespaced && name.is_some() {
        // A namespaced item must be addressed inside its namespace.
        return Err(ApiError::page_not_found());
    }
    Ok(Some(Target { res, namespace: None, name, sub: rest.get(2).map(|s| (*s).to_owned()) }))
}

/// The entry point for one request.
/// A request body: the connection's, or nothing once a GET's body was discarded.
type ReqBody = http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>;

pub async fn handle(
    ctx: Arc<Ctx>,
    peer: Arc<crate::auth::Peer>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let received = jiff::Timestamp::now();
    let user = ctx.authn.authenticate(&peer, req.headers());
    let info = request_info(&ctx, &req, user.is_some());
    let http1 = req.version() < http::Version::HTTP_2;
    let read = Arc::new(AtomicBool::new(req.body().is_end_stream()));
    let req = req.map(|b| Tracked { inner: b, read: read.clone() });
    // A body nobody reads can make HTTP/1.1 drop a large response; read and discard up to
    // 256 KiB of it first, as Go's server does.
    let req: Request<ReqBody> = if matches!(*req.method(), Method::GET | Method::HEAD) {
        let (parts, body) = req.into_parts();
        let _ = Limited::new(body, 256 * 1024).collect().await;
        let empty = http_body_util::Empty::<Bytes>::new().map_err(|never| match never {});
        Request::from_parts(parts, http_body_util::BodyExt::boxed_unsync(empty))
    } else {
        req.map(http_body_util::BodyExt::boxed_unsync)
    };
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = std::time::Instant::now();
    let mut resp = match dispatch(&ctx, user, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    // An answer sent before the request body was read to its end (a 413, an early error) ends
    // the HTTP/1.1 connection: the unread rest cannot be told from the next request. Say so, as
    // Go's server does, so clients that reuse connections open a new one instead of failing
    // their next request on a closed one.
    if http1 && !read.load(Ordering::Acquire) {
        resp.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    }
    let code = resp.status().as_u16();
    let metrics = &ctx.api.metrics;
    metrics.request(&info.labels, code, (!info.long_running).then(|| started.elapsed()));
    if info.long_running && code < 300 {
        // Open until the response body ends (the watch or stream is dropped).
        let guard = metrics.long_running(&info.labels);
        resp = resp.map(move |b| {
            b.map_frame(move |f| {
                let _ = &guard;
                f
            })
            .boxed()
        });
    }
    if let Some(audit) = &ctx.audit {
        audit.write(&crate::audit::AuditLog::event(&crate::audit::Record {
            labels: &info.labels,
            namespace: info.namespace.as_deref(),
            name: info.name.as_deref(),
            request_uri: &info.uri,
            user_agent: info.user_agent.as_deref(),
            peer: peer.addr,
            authenticated: info.authenticated,
            code,
            received,
            long_running: info.long_running,
        }));
    }
    tracing::debug!(%method, %path, status = code, elapsed_us = started.elapsed().as_micros() as u64, "request");
    Ok(resp)
}

/// What metrics and audit record of a request (upstream's `RequestInfo`).
struct RequestInfo {
    labels: RequestLabels,
    namespace: Option<String>,
    name: Option<String>,
    uri: String,
    user_agent: Option<String>,
    authenticated: bool,
    long_running: bool,
}

/// Subresources upstream reports with the verb CONNECT (`cleanVerb`'s `validConnectRequests`).
const CONNECT_SUBRESOURCES: [&str; 4] = ["attach", "exec", "portforward", "proxy"];

fn request_info<B>(ctx: &Ctx, req: &Request<B>, authenticated: bool) -> RequestInfo {
    let path = req.uri().path();
    let query = Query(query_pairs(req.uri().query()));
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let header = |h: header::HeaderName| req.headers().get(h).and_then(|v| v.to_str().ok());
    let method = req.method();
    let target = route(ctx, &segs).ok().flatten();
    let mut labels = RequestLabels {
        verb: match *method {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::PATCH => "PATCH",
            Method::DELETE => "DELETE",
            Method::OPTIONS => "OPTIONS",
            _ => "OTHER",
        },
        dry_run: query.get("dryRun") == Some("All"),
        ..Default::default()
    };
    let mut long_running = false;
    let (mut namespace, mut name) = (None, None);
    if let Some(t) = target {
        labels.group = t.res.group.clone();
        labels.version = t.res.version.clone();
        labels.resource = t.res.plural.clone();
        labels.subresource = t.sub.clone().unwrap_or_default();
        labels.scope = match (&t.name, &t.namespace) {
            (Some(_), _) => "resource",
            (None, Some(_)) => "namespace",
            (None, None) => "cluster",
        };
        let watch = query.flag("watch");
        if *method == Method::GET && watch {
            labels.verb = "WATCH";
        } else if *method == Method::GET && t.name.is_none() {
            labels.verb = "LIST";
        } else if *method == Method::PATCH
            && header(header::CONTENT_TYPE)
                .is_some_and(|c| c.starts_with("application/apply-patch"))
        {
            labels.verb = "APPLY";
        }
        if CONNECT_SUBRESOURCES.contains(&labels.subresource.as_str()) {
            labels.verb = "CONNECT";
        }
        // Upstream's long-running check: watches and the streaming subresources.
        long_running =
            labels.verb == "WATCH" || labels.verb == "CONNECT" || labels.subresource == "log";
        namespace = t.namespace;
        name = t.name;
    }
    RequestInfo {
        labels,
        namespace,
        name,
        uri: req.uri().to_string(),
        user_agent: header(header::USER_AGENT).map(str::to_owned),
        authenticated,
        long_running,
    }
}

/// A request body that records when it was read to its end.
struct Tracked {
    inner: Incoming,
    read: Arc<AtomicBool>,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, std::task::Poll::Ready(None)) || self.inner.is_end_stream() {
            self.read.store(true, Ordering::Release);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

async fn read_body(ctx: &Ctx, body: ReqBody) -> ApiResult<Bytes> {
    match Limited::new(body, ctx.max_body).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::too_large(ctx.max_body))
        }
        Err(e) => Err(ApiError::bad_request(format!("reading the request body: {e}"))),
    }
}

/// Decodes a JSON or YAML body into a value, naming the problem on failure.
fn decode(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let v: Value = match mime {
        "application/yaml" | "application/apply-patch+yaml" | "text/yaml" => {
            if yaml_has_alias(body) {
                // Aliases can expand a small body into gigabytes (a "billion laughs" bomb);
                // manifests do not need them.
                return Err(ApiError::bad_request(
                    "the body of the request uses YAML aliases (*name), which this server does not accept; expand them or send JSON",
                ));
            }
            serde_yaml::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("the body of the request is not valid YAML: {e}"))
            })?
        }
        // kubectl's imperative commands (`create configmap`, `create deployment`, ...) send
        // built-in kinds as protobuf; we decode them to the JSON they stand for and answer JSON,
        // which those clients also accept.
        "application/vnd.kubernetes.protobuf" => {
            use kinetic_machinery::protobuf::{ProtobufError, decode};
            return decode(body).map_err(|e| match e {
                ProtobufError::UnknownKind { .. } => ApiError::unsupported_media_type(format!(
                    "{e}: send this kind as application/json"
                )),
                other => ApiError::bad_request(format!(
                    "the protobuf body could not be decoded: {other}"
                )),
            });
        }
        _ => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the body of the request is not valid JSON: {e}"))
        })?,
    };
    Ok(v)
}

/// A request's authorisation attributes, from its path alone (upstream's
/// `RequestInfoFactory.NewRequestInfo`): the registry is not asked, so a user who may not list
/// a resource gets 403 whether it exists or not.
fn attributes(
    user: crate::auth::UserInfo,
    method: &Method,
    segs: &[&str],
    query: &Query,
) -> crate::auth::Attributes {
    let mut a = crate::auth::Attributes {
        user,
        verb: method.as_str().to_ascii_lowercase(),
        path: format!("/{}", segs.join("/")),
        ..Default::default()
    };
    let (group, version, mut parts) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return a,
    };
    let mut watch = false;
    // The deprecated `/watch/` prefix of old clients.
    if parts.first() == Some(&"watch") {
        watch = true;
        parts = &parts[1..];
    }
    if parts.is_empty() {
        return a;
    }
    a.resource_request = true;
    a.api_group = group.to_owned();
    a.api_version = version.to_owned();
    if parts[0] == "namespaces" && parts.len() > 1 {
        a.namespace = parts[1].to_owned();
        if parts.len() > 2 && !matches!(parts[2], "status" | "finalize") {
            parts = &parts[2..];
        }
    }
    a.resource = parts[0].to_owned();
    if let Some(n) = parts.get(1) {
        a.name = (*n).to_owned();
    }
    if let Some(sub) = parts.get(2) {
        a.subresource = (*sub).to_owned();
    }
    watch |= query.flag("watch");
    a.verb = match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if a.name.is_empty() => "list",
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if a.name.is_empty() => "deletecollection",
        Method::DELETE => "delete",
        _ => a.verb.as_str(),
    }
    .to_owned();
    if matches!(a.verb.as_str(), "list" | "watch") {
        a.field_selector = query.get("fieldSelector").unwrap_or("").to_owned();
        // Upstream's RequestInfoFactory: a list or watch of one object by
        // `metadata.name=NAME` is authorised as a request for that name (resourceNames
        // rules, the Node authoriser's own-Node reads).
        if let Some(n) =
            a.field_requires("metadata.name").filter(|n| crate::validation::is_path_segment_name(n))
        {
            a.name = n.to_owned();
        }
    }
    a
}

async fn dispatch(
    ctx: &Arc<Ctx>,
    user: Option<crate::auth::UserInfo>,
    req: Request<ReqBody>,
) -> ApiResult<Response<Body>> {
    let path = req.uri().path().to_owned();
    let query = Query(query_pairs(req.uri().query()));
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // Upstream lets anyone read health and version (system:public-info-viewer).
    match segs.as_slice() {
        ["healthz" | "livez" | "readyz", ..] => {
            return Ok(Response::builder()
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(full("ok"))
                .unwrap_or_else(|_| Response::new(full("ok"))));
        }
        ["version"] => return Ok(value_response(200, &discovery::version())),
        _ => {}
    }
    let Some(user) = user else {
        return Err(ApiError::unauthorized());
    };
    let user = crate::rbac::review::impersonate(&*ctx.authz, user, req.headers())?;
    let attrs = attributes(user, req.method(), &segs, &query);
    match ctx.authz.authorize(&attrs) {
        crate::auth::Decision::Allow => {}
        crate::auth::Decision::Deny(why) | crate::auth::Decision::NoOpinion(why) => {
            return Err(crate::auth::forbidden(&attrs, &why));
        }
    }
    // authorization.k8s.io: the reviews are answered, not stored ([`crate::rbac::review`]).
    if let ["apis", crate::rbac::review::GROUP, rest @ ..] = segs.as_slice() {
        let method = req.method().clone();
        let (parts, body) = req.into_parts();
        let body = if method == Method::POST {
            Some(decode(&parts.headers, &read_body(ctx, body).await?)?)
        } else {
            None
        };
        let (code, v) = crate::rbac::review::serve_group(
            &*ctx.authz,
            &ctx.rbac,
            &attrs.user,
            &method,
            rest,
            body,
        )?;
        return Ok(value_response(code, &v));
    }
    let writer = Arc::new(attrs.user.clone());
    // Behind authentication, as kube-apiserver serves it (to system:monitoring and admins).
    if req.method() == Method::GET && segs.as_slice() == ["metrics"] {
        let text = ctx.api.metrics.render(&ctx.api.object_counts());
        return Ok(Response::builder()
            .header(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
            .body(full(text))
            .unwrap_or_else(|_| Response::new(full(Bytes::new()))));
    }
    let reg = &ctx.api.registry;
    let method = req.method().clone();
    if let ["apis", crate::serviceaccount::GROUP, rest @ ..] = segs.as_slice() {
        let (parts, body) = req.into_parts();
        let body = if method == Method::POST {
            Some(decode(&parts.headers, &read_body(ctx, body).await?)?)
        } else {
            None
        };
        let (code, v) = crate::serviceaccount::serve_group(
            &ctx.tokens,
            &ctx.authn,
            &attrs.user,
            &method,
            rest,
            body,
        )?;
        return Ok(value_response(code, &v));
    }
    if method == Method::GET
        && let ["apis", crate::metrics_api::GROUP, rest @ ..] = segs.as_slice()
    {
        let v = crate::metrics_api::serve(&ctx.api, &ctx.nodes, rest, &query.0).await?;
        return Ok(value_response(200, &v));
    }
    if method == Method::GET {
        match segs.as_slice() {
            [] => {
                let paths = json!({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/metrics", "/openapi/v2", "/openapi/v3", "/readyz", "/version"]});
                return Ok(value_response(200, &paths));
            }
            ["api"] => {
                return Ok(value_response(200, &discovery::core_versions(&ctx.server_address)));
            }
            ["apis"] => return Ok(value_response(200, &discovery::group_list(reg))),
            ["api", v] => {
                return discovery::resource_list(reg, "", v)
                    .map(|d| value_response(200, &d))
                    .ok_or_else(ApiError::page_not_found);
            }
            ["apis", g] => {
                return discovery::group(reg, g)
                    .map(|d| value_response(200, &d))
                    .ok_or_else(ApiError::page_not_found);
            }
            ["apis", g, v] => {
                return discovery::resource_list(reg, g, v)
                    .map(|d| value_response(200, &d))
                    .ok_or_else(ApiError::page_not_found);
            }
            ["openapi", "v3"] => return Ok(value_response(200, &discovery::openapi_v3_root(reg))),
            ["openapi", "v3", rest @ ..] => {
                return discovery::openapi_v3(reg, &ctx.api.store, &rest.join("/"))
                    .map(|d| value_response(200, &d))
                    .ok_or_else(ApiError::page_not_found);
            }
            ["openapi", "v2"] => {
                let accept =
                    req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
                // kubectl asks for the protobuf form only (see `openapi::v2_protobuf`).
                if accept.contains(kinetic_machinery::openapi::V2_PROTOBUF) {
                    let body = kinetic_machinery::openapi::v2_protobuf(discovery::GIT_VERSION);
                    return Ok(Response::builder()
                        .status(200)
                        // kube-openapi answers with the dotted form: Go's mime parser (which
                        // client-go runs on every response) refuses the `@` of the request's.
                        .header(
                            header::CONTENT_TYPE,
                            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                        )
                        .body(full(body))
                        .unwrap_or_else(|_| Response::new(full(Bytes::new()))));
                }
                if !accept.is_empty() && !accept.contains("json") && !accept.contains("*/*") {
                    return Err(ApiError::not_acceptable(
                        "only application/json and the protobuf form are served for /openapi/v2",
                    ));
                }
                return Ok(value_response(200, &discovery::openapi_v2(reg, &ctx.api.store)));
            }
            _ => {}
        }
    }
    let Some(target) = route(ctx, &segs)? else { return Err(ApiError::page_not_found()) };
    let want = negotiate(req.headers())?;
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let api = &ctx.api;
    let res = target.res.clone();
    let ns = target.namespace.clone().unwrap_or_default();
    if res.namespaced && target.namespace.is_none() && !matches!(method, Method::GET) {
        return Err(ApiError::method_not_allowed(format!(
            "{} requests on all namespaces are not supported for {}; name a namespace",
            method,
            res.group_resource()
        )));
    }
    match (&method, &target.name, target.sub.as_deref()) {
        (&Method::GET, None, _) => {
            let mut opts = query.list_options()?;
            if let Some(fs) = &opts.field_selector {
                api.check_field_selector(&res, fs)?;
            }
            if query.flag("watch") {
                return watch(ctx, &res, target.namespace.as_deref(), opts, &query, want);
            }
            if opts.limit == Some(0) {
                opts.limit = None;
            }
            let page = api.list(&res, target.namespace.as_deref(), &opts)?;
            Ok(list_response(api, &res, page, want, &query))
        }
        (&Method::GET, Some(name), None) => {
            if query.flag("watch") {
                let mut opts = query.list_options()?;
                opts.field_selector = Some(
                    FieldSelector::parse(&format!("metadata.name={name}"))
                        .map_err(|e| ApiError::bad_request(e.to_string()))?,
                );
                return watch(ctx, &res, target.namespace.as_deref(), opts, &query, want);
            }
            let obj = api.get(&res, &ns, name)?;
            Ok(object_response(api, &res, &obj, want, 200, &query))
        }
        (&Method::GET, Some(name), Some("status")) if res.status => {
            let obj = api.get(&res, &ns, name)?;
            Ok(object_response(api, &res, &obj, Want::Object, 200, &query))
        }
        (&Method::GET, Some(name), Some("scale")) if res.scale.is_some() => {
            let obj = api.get(&res, &ns, name)?;
            Ok(value_response(200, &api.scale_of(&res, &api.served_value(&res, &obj))?))
        }
        // The subresources the pod's node serves (kubelet API), proxied in `crate::logs`.
        // Logs are read with GET; exec, attach and port-forward are upgraded GET (WebSocket)
        // or POST (SPDY) requests.
        (m, Some(name), Some(sub))
            if res.has_subresource(sub)
                && crate::logs::Call::of(sub).is_some_and(|c| {
                    *m == Method::GET || *m == Method::POST && c != crate::logs::Call::Log
                }) =>
        {
            let call = crate::logs::Call::of(sub).ok_or_else(ApiError::page_not_found)?;
            let (obj, node_obj) = api.node_of(&res, &ns, name, sub)?;
            // exec, attach and port-forward are CONNECT requests to admission, with their
            // options object (upstream's `ConnectResource`); logs are reads and are not.
            if let Some(mut opts) = crate::admission::connect::options(sub, &query.0) {
                let kind = ("", "v1", opts["kind"].as_str().unwrap_or("").to_owned());
                let kind = (kind.0, kind.1, kind.2.as_str());
                crate::admission::connect::admit(
                    api, &res, sub, "CONNECT", &ns, name, &writer, kind, &mut opts, false,
                )
                .await?;
            }
            let mut extensions = parts.extensions;
            let incoming = crate::logs::Incoming {
                method: &method,
                headers: &headers,
                query: &query.0,
                upgrade: extensions.remove::<hyper::upgrade::OnUpgrade>(),
            };
            crate::logs::proxy(&ctx.nodes, call, &obj.value(), node_obj.as_ref(), incoming).await
        }
        (&Method::POST, None, None) => {
            let body = decode(&headers, &read_body(ctx, body).await?)?;
            let opts = query.write_options(&headers, &writer)?;
            let w = api.create(&res, &ns, body, &opts).await?;
            Ok(with_warnings(
                object_response(api, &res, &w.obj, Want::Object, 201, &query),
                &w.warnings,
            ))
        }
        (&Method::POST, Some(name), Some("binding")) if res.has_subresource("binding") => {
            let mut body = decode(&headers, &read_body(ctx, body).await?)?;
            // A CREATE of `pods/binding` with the Binding, as upstream admits it.
            crate::admission::connect::admit(
                api,
                &res,
                "binding",
                "CREATE",
                &ns,
                name,
                &writer,
                ("", "v1", "Binding"),
                &mut body,
                false,
            )
            .await?;
            api.bind(&res, &ns, name, &body).await?;
            Ok(value_response(
                201,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ))
        }
        (&Method::POST, Some(name), Some("eviction")) if res.has_subresource("eviction") => {
            let mut body = decode(&headers, &read_body(ctx, body).await?)?;
            let dry_run = query.get("dryRun") == Some("All");
            // A CREATE of `pods/eviction` with the `policy/v1` Eviction, as upstream admits it.
            crate::admission::connect::admit(
                api,
                &res,
                "eviction",
                "CREATE",
                &ns,
                name,
                &writer,
                ("policy", "v1", "Eviction"),
                &mut body,
                dry_run,
            )
            .await?;
            let status = crate::eviction::evict(api, &res, &ns, name, &body, dry_run).await?;
            Ok(value_response(201, &status))
        }
        (&Method::POST, Some(name), Some("token")) if res.has_subresource("token") => {
            let body = decode(&headers, &read_body(ctx, body).await?)?;
            crate::rbac::node::admit_token(&writer, &api.store, &ns, name, &body)?;
            Ok(value_response(201, &ctx.tokens.token_request(&ns, name, body)?))
        }
        (&Method::PUT, Some(name), sub @ (None | Some("status")))
            if sub.is_none() || res.status =>
        {
            let body = decode(&headers, &read_body(ctx, body).await?)?;
            let opts = query.write_options(&headers, &writer)?;
            let w = api.update(&res, &ns, name, body, sub, &opts).await?;
            Ok(with_warnings(
                object_response(api, &res, &w.obj, Want::Object, 200, &query),
                &w.warnings,
            ))
        }
        (&Method::PUT, Some(name), Some("finalize")) if res.has_subresource("finalize") => {
            let body = decode(&headers, &read_body(ctx, body).await?)?;
            let w =
                api.finalize(&res, name, &body, &query.write_options(&headers, &writer)?).await?;
            Ok(object_response(api, &res, &w.obj, Want::Object, 200, &query))
        }
        (&Method::PUT, Some(name), Some("scale")) if res.scale.is_some() => {
            let body = decode(&headers, &read_body(ctx, body).await?)?;
            let opts = query.write_options(&headers, &writer)?;
            let scale = api.set_scale(&res, &ns, name, |_| Ok(body.clone()), &opts).await?;
            Ok(value_response(200, &scale))
        }
        (&Method::PATCH, Some(name), sub @ (None | Some("status") | Some("scale"))) => {
            if sub == Some("status") && !res.status || sub == Some("scale") && res.scale.is_none() {
                return Err(ApiError::page_not_found());
            }
            let patch_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_owned();
            let raw = read_body(ctx, body).await?;
            let patch = decode(&headers, &raw)?;
            let opts = query.write_options(&headers, &writer)?;
            let force =
                crate::patch::options(&patch_type, query.get("fieldManager"), query.get("force"))?;
            if patch_type == crate::patch::APPLY && sub != Some("scale") {
                let (w, created) = api.apply(&res, &ns, name, sub, patch, force, &opts).await?;
                let code = if created { 201 } else { 200 };
                return Ok(with_warnings(
                    object_response(api, &res, &w.obj, Want::Object, code, &query),
                    &w.warnings,
                ));
            }
            let apply = crate::patch::patcher(&res, &patch_type, sub == Some("scale"))?;
            if sub == Some("scale") {
                let scale =
                    api.set_scale(&res, &ns, name, |cur| apply(&cur, &patch), &opts).await?;
                return Ok(value_response(200, &scale));
            }
            let w = api.update_with(&res, &ns, name, sub, &opts, |cur| apply(cur, &patch)).await?;
            Ok(with_warnings(
                object_response(api, &res, &w.obj, Want::Object, 200, &query),
                &w.warnings,
            ))
        }
        (&Method::DELETE, Some(name), None) => {
            let mut opts = delete_options(ctx, &query, &headers, body).await?;
            opts.user = Some(writer.clone());
            match api.delete(&res, &ns, name, &opts).await? {
                Deleted::Pending(obj) => {
                    Ok(object_response(api, &res, &obj, Want::Object, 200, &query))
                }
                Deleted::Gone(obj) => Ok(value_response(
                    200,
                    &json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": {"name": name, "group": res.group, "kind": res.plural, "uid": obj.uid()},
                    }),
                )),
            }
        }
        (&Method::DELETE, None, None) => {
            let mut opts = delete_options(ctx, &query, &headers, body).await?;
            opts.user = Some(writer.clone());
            let list = query.list_options()?;
            if let Some(fs) = &list.field_selector {
                api.check_field_selector(&res, fs)?;
            }
            let items =
                api.delete_collection(&res, target.namespace.as_deref(), &list, &opts).await?;
            let items: Vec<Value> = items.iter().map(|s| api.served_value(&res, s)).collect();
            Ok(value_response(
                200,
                &json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(), "metadata": {}, "items": items}),
            ))
        }
        (_, _, Some(sub)) if !res.subresources().iter().any(|s| s == sub) => {
            Err(ApiError::page_not_found())
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method} {path})"
        ))),
    }
}

async fn delete_options(
    ctx: &Ctx,
    query: &Query,
    headers: &HeaderMap,
    body: ReqBody,
) -> ApiResult<DeleteOptions> {
    let mut opts = DeleteOptions {
        grace_period_seconds: match query.get("gracePeriodSeconds") {
            None | Some("") => None,
            Some(g) => Some(g.parse().map_err(|_| {
                ApiError::bad_request(format!("gracePeriodSeconds must be an integer, got {g:?}"))
            })?),
        },
        propagation_policy: query
            .get("propagationPolicy")
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        precondition_uid: None,
        precondition_rv: None,
        dry_run: query.get("dryRun") == Some("All"),
        admit: true,
        user: None,
    };
    if query.get("orphanDependents") == Some("true") {
        opts.propagation_policy.get_or_insert_with(|| "Orphan".to_owned());
    }
    let raw = read_body(ctx, body).await?;
    if !raw.iter().all(u8::is_ascii_whitespace) {
        let v = decode(headers, &raw)?;
        opts.merge_body(&v)?;
    }
    Ok(opts)
}

fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

fn table_columns(res: &Resource) -> Vec<printers::Column> {
    match &res.printer {
        Printer::Builtin => printers::columns(&res.group, &res.kind),
        Printer::Custom(c) => c.clone(),
    }
}

fn table_row(
    res: &Resource,
    cols: &[printers::Column],
    obj: &Value,
    now: jiff::Timestamp,
    include: &str,
) -> (Vec<Value>, Value) {
    let cells = match &res.printer {
        Printer::Builtin => printers::cells(&res.group, &res.kind, obj, now),
        Printer::Custom(_) => printers::custom_cells(cols, obj, now),
    };
    let embedded = match include {
        "None" => Value::Null,
        "Object" => obj.clone(),
        _ => partial_metadata(obj),
    };
    (cells, embedded)
}

fn object_response(
    api: &Api,
    res: &Resource,
    obj: &Stored,
    want: Want,
    code: u16,
    query: &Query,
) -> Response<Body> {
    match want {
        Want::Object => json_response(code, api.served_json(res, obj)),
        Want::Metadata => value_response(code, &partial_metadata(&obj.value())),
        Want::Table => {
            let cols = table_columns(res);
            let v = api.served_value(res, obj);
            let row = table_row(
                res,
                &cols,
                &v,
                jiff::Timestamp::now(),
                query.get("includeObject").unwrap_or("Metadata"),
            );
            value_response(code, &printers::table(&cols, vec![row], &obj.rv.to_string(), None))
        }
    }
}

fn list_response(
    api: &Api,
    res: &Resource,
    page: crate::rest::ListPage,
    want: Want,
    query: &Query,
) -> Response<Body> {
    let rv = page.rv.to_string();
    match want {
        Want::Table => {
            let cols = table_columns(res);
            let now = jiff::Timestamp::now();
            let include = query.get("includeObject").unwrap_or("Metadata");
            let rows = page
                .items
                .iter()
                .map(|s| table_row(res, &cols, &api.served_value(res, s), now, include))
                .collect();
            value_response(200, &printers::table(&cols, rows, &rv, page.continue_token.as_deref()))
        }
        Want::Metadata => {
            let items: Vec<Value> =
                page.items.iter().map(|s| partial_metadata(&s.value())).collect();
            let mut md = json!({"resourceVersion": rv});
            if let Some(c) = &page.continue_token {
                md["continue"] = json!(c);
            }
            value_response(
                200,
                &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": md, "items": items}),
            )
        }
        Want::Object => {
            // Written by hand around the stored bytes: a 10,000-pod list costs one copy, no encode.
            let mut md = json!({"resourceVersion": rv});
            if let Some(c) = &page.continue_token {
                md["continue"] = json!(c);
            }
            if let Some(n) = page.remaining {
                md["remainingItemCount"] = json!(n);
            }
            let head = format!(
                "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
                res.kind,
                res.api_version(),
                md
            );
            let total: usize = page.items.iter().map(|s| s.json.len() + 1).sum();
            let mut out = Vec::with_capacity(head.len() + total + 2);
            out.extend_from_slice(head.as_bytes());
            for (i, s) in page.items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&api.served_json(res, s));
            }
            out.extend_from_slice(b"]}");
            json_response(200, out)
        }
    }
}

/// Starts a watch stream: HTTP 200 with one JSON event per line, as upstream. What is sent
/// is [`crate::watch`]'s; this decodes the parameters and encodes the items.
fn watch(
    ctx: &Arc<Ctx>,
    res: &Arc<Resource>,
    ns: Option<&str>,
    opts: ListOptions,
    query: &Query,
    want: Want,
) -> ApiResult<Response<Body>> {
    let api = ctx.api.clone();
    let timeout = match query.get("timeoutSeconds") {
        Some(t) if !t.is_empty() => Duration::from_secs(t.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("timeoutSeconds must be an integer, got {t:?}"))
        })?),
        // Upstream picks a random 30–60 minute timeout for watches without one.
        _ => Duration::from_secs(1800 + rand::random::<u64>() % 1800),
    };
    let resource_version: Option<u64> = match query.get("resourceVersion").unwrap_or("") {
        "" | "0" => None,
        s => Some(
            s.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))?,
        ),
    };
    let params = crate::watch::WatchParams {
        resource_version,
        send_initial_events: query.get("sendInitialEvents").map(|v| v == "true"),
        bookmarks: query.flag("allowWatchBookmarks"),
        timeout,
    };
    let items = crate::watch::start(api.clone(), res.clone(), ns.map(str::to_owned), opts, params);
    let sent = api.metrics.watch_events(&res.group, &res.version, &res.plural);
    let api_version = res.api_version();
    let served = res.clone();
    let cols = table_columns(res);
    let include = query.get("includeObject").unwrap_or("Metadata").to_owned();
    let encode = move |item: crate::watch::Item| -> Bytes {
        use crate::watch::Item;
        let (ty, stored) = match item {
            Item::Object(ty, stored) => {
                sent.fetch_add(1, Ordering::Relaxed);
                (ty, stored)
            }
            Item::Event(ty, ev) => {
                sent.fetch_add(1, Ordering::Relaxed);
                let same_version = ev.obj.api_version() == api_version;
                if want == Want::Object && same_version {
                    // The line every watcher of the event shares.
                    return ev.watch_line(ty);
                }
                (ty, ev.obj.clone())
            }
            Item::Bookmark(rv) => {
                return bookmark_line(&json!({"kind": served.kind,
                    "apiVersion": served.api_version(),
                    "metadata": {"resourceVersion": rv.to_string()}}));
            }
            Item::InitialEventsEnd(rv) => {
                return bookmark_line(&json!({"kind": served.kind,
                    "apiVersion": served.api_version(), "metadata": {
                    "resourceVersion": rv.to_string(),
                    "annotations": {"k8s.io/initial-events-end": "true"}}}));
            }
            Item::Error(e) => return bookmark_free_error(&e.to_status()),
        };
        let object = match want {
            // The common case costs a copy: the stored bytes go out as they are, framed by hand,
            // so a thousand watchers of one object do not encode it a thousand times.
            Want::Object => {
                return crate::store::watch_line(ty, &api.served_json(&served, &stored));
            }
            Want::Metadata => partial_metadata(&stored.value()),
            Want::Table => {
                let obj = api.served_value(&served, &stored);
                let row = table_row(&served, &cols, &obj, jiff::Timestamp::now(), &include);
                printers::table(&cols, vec![row], &stored.rv.to_string(), None)
            }
        };
        let mut line =
            serde_json::to_vec(&json!({"type": ty, "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    };
    let stream = futures::stream::unfold((items, encode), |(mut rx, encode)| async move {
        let item = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(encode(item))), (rx, encode)))
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(StreamBody::new(stream).boxed())
        .unwrap_or_else(|_| Response::new(full(Bytes::new()))))
}

fn bookmark_line(obj: &Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": "BOOKMARK", "object": obj})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark_free_error(status: &Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": "ERROR", "object": status})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// Whether a YAML document uses an alias (`*name` outside quotes and comments). Conservative:
/// a `*` that starts a plain scalar counts too, which only rejects odd manifests, never lets a
/// bomb through.
fn yaml_has_alias(body: &[u8]) -> bool {
    let (mut single, mut double, mut comment, mut prev) = (false, false, false, b'\n');
    let mut escaped = false;
    for &b in body {
        if comment {
            comment = b != b'\n';
        } else if double {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                double = false;
            }
        } else if single {
            single = b != b'\'';
        } else {
            match b {
                b'#' if prev.is_ascii_whitespace() => comment = true,
                b'"' => double = true,
                b'\'' => single = true,
                b'*' if matches!(
                    prev,
                    b' ' | b'\t' | b'\n' | b'[' | b'{' | b',' | b':' | b'-' | b'?'
                ) =>
                {
                    return true;
                }
                _ => {}
            }
        }
        prev = b;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cases from upstream's `requestinfo_test.go` (`TestGetAPIRequestInfo`), reduced to what
    /// authorisation reads.
    #[test]
    fn attributes_from_the_path_as_upstreams_request_info() {
        let user = crate::auth::UserInfo::default;
        type S = &'static str;
        type Case = (S, S, S, S, S, S, S, S);
        let cases: &[Case] = &[
            // method, path, verb, namespace, group, resource, name, subresource
            ("GET", "/api/v1/namespaces/other/pods/foo", "get", "other", "", "pods", "foo", ""),
            ("GET", "/api/v1/namespaces/other/pods", "list", "other", "", "pods", "", ""),
            ("GET", "/api/v1/pods", "list", "", "", "pods", "", ""),
            ("POST", "/api/v1/namespaces/other/pods", "create", "other", "", "pods", "", ""),
            ("PUT", "/api/v1/namespaces/other/pods/foo", "update", "other", "", "pods", "foo", ""),
            (
                "PATCH",
                "/apis/apps/v1/namespaces/a/deployments/d/scale",
                "patch",
                "a",
                "apps",
                "deployments",
                "d",
                "scale",
            ),
            (
                "DELETE",
                "/api/v1/namespaces/other/pods/foo",
                "delete",
                "other",
                "",
                "pods",
                "foo",
                "",
            ),
            (
                "DELETE",
                "/api/v1/namespaces/other/pods",
                "deletecollection",
                "other",
                "",
                "pods",
                "",
                "",
            ),
            ("GET", "/api/v1/namespaces/other", "get", "other", "", "namespaces", "other", ""),
            (
                "PUT",
                "/api/v1/namespaces/other/finalize",
                "update",
                "other",
                "",
                "namespaces",
                "other",
                "finalize",
            ),
            ("GET", "/api/v1/namespaces", "list", "", "", "namespaces", "", ""),
            ("GET", "/api/v1/watch/namespaces/other/pods", "watch", "other", "", "pods", "", ""),
            ("POST", "/api/v1/namespaces/o/pods/p/exec", "create", "o", "", "pods", "p", "exec"),
            ("GET", "/api/v1/nodes/n1", "get", "", "", "nodes", "n1", ""),
        ];
        for (m, path, verb, ns, group, resource, name, sub) in cases {
            let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            let a = attributes(user(), &m.parse().unwrap(), &segs, &Query(vec![]));
            assert!(a.resource_request, "{path}");
            assert_eq!(
                (
                    a.verb.as_str(),
                    a.namespace.as_str(),
                    a.api_group.as_str(),
                    a.resource.as_str(),
                    a.name.as_str(),
                    a.subresource.as_str()
                ),
                (*verb, *ns, *group, *resource, *name, *sub),
                "{m} {path}"
            );
        }
        let segs = ["api", "v1", "pods"];
        let watch = Query(vec![("watch".into(), "true".into())]);
        assert_eq!(attributes(user(), &Method::GET, &segs, &watch).verb, "watch");
        for path in ["/metrics", "/api", "/apis/apps", "/apis/apps/v1", "/openapi/v2"] {
            let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            let a = attributes(user(), &Method::GET, &segs, &Query(vec![]));
            assert!(!a.resource_request, "{path}");
            assert_eq!((a.verb.as_str(), a.path.as_str()), ("get", path));
        }
    }
}
