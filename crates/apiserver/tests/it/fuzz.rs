//! Request-level fuzzing: a seeded stream of generated requests against a real server, then
//! the server must still be healthy.
//!
//! Requests combine real path segments (`api/v1`, `apis/apps/v1`, `namespaces/default`,
//! `pods`, `status`, `scale`, `binding`, names that exist and names that cannot), query
//! parameters with good and garbage values, every content type the server knows and some it
//! does not, and bodies that are mutated valid objects, patches, random JSON, random bytes,
//! deep nesting, small YAML alias bombs, and protobuf (kubectl's bodies with bytes changed,
//! envelopes of random messages).
//!
//! Properties, for every request (sent once: the client does not retry):
//! - a response arrives within [`REQUEST_TIMEOUT`] (a panicking handler drops the connection;
//!   a panic anywhere in the server process is caught by a panic hook and reported too);
//! - its code is one Kubernetes uses, and a non-2xx body is a `Status` whose `code` is the HTTP
//!   code and which has a `reason`;
//! - a JSON 2xx body parses, and a watch (every `GET` ends its query with `timeoutSeconds` 0 or
//!   1, so watches end) is one JSON event per line.
//!
//! At the end `/readyz` answers and a create and get round trip works.
//!
//! Knobs: `KINETIC_FUZZ_CASES` (requests, default [`DEFAULT_CASES`]) and `KINETIC_FUZZ_SEED`.
//! Failures print the seed and the request's index; the bugs found are pinned by the named
//! regression tests at the end of this file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use kinetic_testkit::TestServer;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Map, Value, json};

const DEFAULT_CASES: u64 = 3000;
/// "kinetic" in ASCII.
const DEFAULT_SEED: u64 = 0x006b_696e_6574_6963;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// The server's request body limit (`DEFAULT_MAX_BODY`).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// The status codes a Kubernetes API server answers with.
const KUBERNETES_CODES: &[u16] = &[
    200, 201, 202, 204, 400, 401, 403, 404, 405, 406, 409, 410, 413, 415, 422, 429, 500, 503, 504,
];

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------
// Panics anywhere in the process
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Panic {
    thread: String,
    message: String,
    location: String,
}

/// Every panic in this process since the hook was installed. The server runs on the test's
/// runtime and on its own threads; panics of other tests (on threads named after them) are left
/// out by [`server_panics_since`].
fn panics() -> &'static Mutex<Vec<Panic>> {
    static PANICS: OnceLock<Mutex<Vec<Panic>>> = OnceLock::new();
    PANICS.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let panic = Panic {
                thread: std::thread::current().name().unwrap_or("<unnamed>").to_owned(),
                message: info.payload_as_str().unwrap_or("<non-string payload>").to_owned(),
                location: info.location().map(ToString::to_string).unwrap_or_default(),
            };
            if let Some(list) = PANICS.get()
                && let Ok(mut list) = list.lock()
            {
                list.push(panic);
            }
            previous(info);
        }));
        Mutex::new(Vec::new())
    })
}

/// Panics recorded after `mark` on the server's threads: this test's thread (the server's
/// tasks run on its runtime), the store writer and tokio's blocking pool.
fn server_panics_since(mark: usize, test_thread: &str) -> Vec<Panic> {
    let list = panics().lock().map(|l| l.clone()).unwrap_or_default();
    list.into_iter()
        .skip(mark)
        .filter(|p| p.thread == test_thread || !p.thread.contains("::"))
        .collect()
}

fn panic_mark() -> usize {
    panics().lock().map(|l| l.len()).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Req {
    method: String,
    uri: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Vec<u8>,
    /// Asked for a watch; the response is a stream that must end.
    watch: bool,
}

impl std::fmt::Display for Req {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} {}", self.method, self.uri)?;
        for (name, value) in &self.headers {
            writeln!(f, "{name}: {}", String::from_utf8_lossy(value))?;
        }
        let body = String::from_utf8_lossy(&self.body);
        if body.chars().count() > 2000 {
            let head: String = body.chars().take(2000).collect();
            write!(f, "\n{head}... ({} bytes)", self.body.len())
        } else {
            write!(f, "\n{body:?}")
        }
    }
}

/// What came back: the code, the content type and the whole body (a watch's whole stream).
struct Resp {
    code: u16,
    content_type: String,
    body: Vec<u8>,
}

/// Sends `req`; `Err` when no complete response arrives in time.
async fn send(client: &kube::Client, req: &Req) -> Result<Resp, String> {
    let mut builder = http::Request::builder().method(req.method.as_str()).uri(req.uri.as_str());
    for (name, value) in &req.headers {
        builder = builder.header(*name, value.as_slice());
    }
    let request = builder
        .body(kube::client::Body::from(req.body.clone()))
        .map_err(|e| format!("the generator built an unsendable request: {e}"))?;
    let exchange = async {
        let response = client.send(request).await.map_err(|e| format!("no response: {e}"))?;
        let code = response.status().as_u16();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("the response body broke off: {e}"))?
            .to_bytes()
            .to_vec();
        Ok(Resp { code, content_type, body })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no complete response within {REQUEST_TIMEOUT:?}"))?
}

/// Checks one response against the properties in the module docs.
fn check(req: &Req, resp: &Resp) -> Result<(), String> {
    if !KUBERNETES_CODES.contains(&resp.code) {
        return Err(format!("status {} is not a Kubernetes status code", resp.code));
    }
    if req.method == "HEAD" {
        return Ok(());
    }
    let text = || String::from_utf8_lossy(&resp.body).chars().take(500).collect::<String>();
    if !(200..300).contains(&resp.code) {
        let status: Value = serde_json::from_slice(&resp.body)
            .map_err(|e| format!("{} body is not JSON ({e}): {}", resp.code, text()))?;
        let ok = status["kind"] == "Status"
            && status["code"].as_u64() == Some(u64::from(resp.code))
            && status["reason"].as_str().is_some_and(|r| !r.is_empty());
        if !ok {
            return Err(format!("{} body is not a matching Status: {status}", resp.code));
        }
        return Ok(());
    }
    if !resp.content_type.starts_with("application/json") {
        return Ok(());
    }
    // One JSON value (a watch of one event, or `watch` on a path that ignores it, is one
    // too), or a watch stream (asked for, or spelled `%77atch`): one event a line.
    if serde_json::from_slice::<Value>(&resp.body).is_ok() {
        return Ok(());
    }
    for line in resp.body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let event: Value = serde_json::from_slice(line).map_err(|e| {
            format!("2xx body is neither JSON nor a watch stream ({e}): {}", text())
        })?;
        if !event["type"].is_string() || !event["object"].is_object() {
            return Err(format!("watch event without a type or an object: {event}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

/// Field names the server and the patch engines give meaning to.
const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "generateName",
    "namespace",
    "labels",
    "annotations",
    "finalizers",
    "ownerReferences",
    "uid",
    "resourceVersion",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "spec",
    "template",
    "selector",
    "matchLabels",
    "matchExpressions",
    "containers",
    "env",
    "value",
    "ports",
    "containerPort",
    "port",
    "image",
    "nodeName",
    "terminationGracePeriodSeconds",
    "replicas",
    "status",
    "conditions",
    "phase",
    "type",
    "data",
    "target",
    "clusterIP",
    "versions",
    "schema",
    "openAPIV3Schema",
    "properties",
    "default",
    "pattern",
    "$patch",
    "$retainKeys",
    "$setElementOrder/containers",
    "$deleteFromPrimitiveList/finalizers",
    "$bogus",
    "",
    "é",
];

const STRINGS: &[&str] = &[
    "",
    "a",
    "b",
    "web",
    "node-1",
    "default",
    "v1",
    "apps/v1",
    "example.com/v1",
    "Pod",
    "ConfigMap",
    "Widget",
    "replace",
    "delete",
    "merge",
    "kubernetes",
    "foregroundDeletion",
    "orphan",
    "Always",
    "Running",
    "é",
    "\u{0}",
    "🦀",
];

/// Names: ones the setup created, valid new ones, and ones no object can have.
fn name(g: &mut StdRng) -> String {
    match g.random_range(0..20) {
        0..=13 => pick(g, &["a", "b", "web", "node-1", "default", "fuzz"]).to_owned(),
        14 => pick(g, &["..", ".", "%2e%2e", "a%2Fb", "%00", "%E2%98%83", "a%20b", "A_B", "-a"])
            .to_owned(),
        15 => "a".repeat(pick(g, &[63, 64, 253, 254, 300, 5000])),
        16 => pick(g, &["%3F", "%23", "+", "~", "a:b", "a@b", "%", "%zz", "x.y"]).to_owned(),
        _ => format!("f{}", g.random_range(0..10)),
    }
}

fn pick<T: Copy>(g: &mut StdRng, items: &[T]) -> T {
    items[g.random_range(0..items.len())]
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `(group prefix, resource)` pairs that exist, and some that do not.
const RESOURCES: &[(&str, &str)] = &[
    ("/api/v1", "pods"),
    ("/api/v1", "configmaps"),
    ("/api/v1", "namespaces"),
    ("/api/v1", "nodes"),
    ("/api/v1", "services"),
    ("/api/v1", "secrets"),
    ("/api/v1", "events"),
    ("/api/v1", "serviceaccounts"),
    ("/api/v1", "endpoints"),
    ("/apis/apps/v1", "deployments"),
    ("/apis/apps/v1", "replicasets"),
    ("/apis/apps/v1", "controllerrevisions"),
    ("/apis/coordination.k8s.io/v1", "leases"),
    ("/apis/discovery.k8s.io/v1", "endpointslices"),
    ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions"),
    ("/apis/example.com/v1", "widgets"),
    ("/apis/example.com/v1", "gadgets"),
    ("/apis/example.com/v2", "widgets"),
    ("/apis/apps/v1", "pods"),
    ("/apis/nope/v1", "things"),
    ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    ("/apis/rbac.authorization.k8s.io/v1", "clusterroles"),
    ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings"),
    ("/apis/authorization.k8s.io/v1", "selfsubjectaccessreviews"),
    ("/apis/authorization.k8s.io/v1", "subjectaccessreviews"),
    ("/apis/authorization.k8s.io/v1", "localsubjectaccessreviews"),
    ("/apis/authorization.k8s.io/v1", "selfsubjectrulesreviews"),
];

/// Paths that are not resources: discovery, OpenAPI, health.
const OTHER_PATHS: &[&str] = &[
    "/",
    "/api",
    "/api/v1",
    "/apis",
    "/apis/apps",
    "/apis/apps/v1",
    "/apis/example.com",
    "/apis/example.com/v1",
    "/apis/nope",
    "/apis/authorization.k8s.io",
    "/apis/authorization.k8s.io/v1",
    "/openapi/v2",
    "/openapi/v3",
    "/openapi/v3/api/v1",
    "/openapi/v3/apis/apps/v1",
    "/openapi/v3/apis/example.com/v1",
    "/openapi/v3/nope",
    "/version",
    "/healthz",
    "/readyz",
    "/livez",
    "//api//v1//",
    "/api/v1/namespaces/default/pods/a/status/extra/more",
];

const SUBRESOURCES: &[&str] = &[
    "status", "status", "status", "scale", "scale", "binding", "log", "finalize", "exec", "", "..",
];

/// A path for `method`, the plural it names (if any) and the object it names (if any):
/// mostly the shape the method expects (a collection for `POST`, an object otherwise),
/// sometimes not.
fn path(g: &mut StdRng, method: &str) -> (String, Option<&'static str>, Option<String>) {
    if g.random_bool(0.05) {
        return (pick(g, OTHER_PATHS).to_owned(), None, None);
    }
    let (prefix, plural) =
        if g.random_bool(0.8) { pick(g, &RESOURCES[..16]) } else { pick(g, RESOURCES) };
    let mut path = prefix.to_owned();
    let cluster_scoped = matches!(plural, "namespaces" | "nodes" | "customresourcedefinitions");
    if g.random_bool(if cluster_scoped { 0.1 } else { 0.9 }) {
        let ns = match g.random_range(0..10) {
            0..=7 => "default".to_owned(),
            8 => "fuzz".to_owned(),
            _ => name(g),
        };
        let _ = write!(path, "/namespaces/{ns}");
    }
    let _ = write!(path, "/{plural}");
    let subresource = g.random_bool(0.2);
    // Deleting `default` (or every namespace) would leave the rest of the session without
    // it; upstream forbids that (`deleting_the_default_namespace_is_forbidden`).
    let spare_namespaces = method == "DELETE" && plural == "namespaces";
    let named = match method {
        _ if spare_namespaces => true,
        "POST" => subresource || g.random_bool(0.1),
        "GET" => g.random_bool(0.5),
        _ => g.random_bool(0.9),
    };
    let mut named_object = None;
    if named {
        let object = match plural {
            "customresourcedefinitions" if g.random_bool(0.7) => {
                pick(g, &["widgets.example.com", "gadgets.example.com"]).to_owned()
            }
            "namespaces" if spare_namespaces => pick(g, &["fuzz", "f1", "nope"]).to_owned(),
            _ => name(g),
        };
        let _ = write!(path, "/{object}");
        named_object = Some(object);
        if subresource {
            let _ = write!(path, "/{}", pick(g, SUBRESOURCES));
            if g.random_bool(0.05) {
                let _ = write!(path, "/{}", name(g));
            }
        }
    }
    if g.random_bool(0.03) {
        path.push('/');
    }
    (path, Some(plural), named_object)
}

/// Label selectors as users write them, and token soup.
fn label_selector(g: &mut StdRng) -> String {
    let keys = ["app", "tier", "example.com/app", "a", "-a", "k8s.io/", "é", "in"];
    let values = ["web", "db", "", "1", "a b", "(x)", "v,w"];
    let mut terms = Vec::new();
    for _ in 0..g.random_range(0..4) {
        let k = pick(g, &keys);
        let v = pick(g, &values);
        terms.push(match g.random_range(0..9) {
            0 => k.to_owned(),
            1 => format!("!{k}"),
            2 => format!("{k}={v}"),
            3 => format!("{k}=={v}"),
            4 => format!("{k}!={v}"),
            5 => format!("{k} in ({v},{})", pick(g, &values)),
            6 => format!("{k} notin ({v})"),
            7 => format!("{k}>{}", pick(g, &["1", "-1", "x", "99999999999999999999"])),
            _ => (0..g.random_range(1..6))
                .map(|_| pick(g, &["(", ")", ",", "=", "!", " ", "in", "a", "<", "\\"]))
                .collect(),
        });
    }
    terms.join(",")
}

fn field_selector(g: &mut StdRng) -> String {
    let fields = [
        "metadata.name",
        "metadata.namespace",
        "spec.nodeName",
        "status.phase",
        "spec.unknown",
        "",
    ];
    let mut terms = Vec::new();
    for _ in 0..g.random_range(0..3) {
        let f = pick(g, &fields);
        let op = pick(g, &["=", "==", "!=", "", "=="]);
        let v = pick(g, &["a", "node-1", "", "Running", "\\,", "\\", "a\\=b", "x,y"]);
        terms.push(format!("{f}{op}{v}"));
    }
    terms.join(",")
}

/// Query parameters; the request watches when `watch` ends up set.
fn query(g: &mut StdRng, method: &str) -> (String, bool) {
    let mut params: Vec<(String, String)> = Vec::new();
    let mut watch = false;
    for _ in 0..g.random_range(0..5) {
        let (k, v): (&str, String) = match g.random_range(0..17) {
            0 if method == "GET" => {
                let v = pick(g, &["true", "1", "false", "TRUE", "yes", ""]);
                // The last `watch` wins, as the server reads it.
                watch = v == "1" || v.eq_ignore_ascii_case("true");
                ("watch", v.to_owned())
            }
            1 => ("labelSelector", label_selector(g)),
            2 => ("fieldSelector", field_selector(g)),
            3 => (
                "limit",
                pick(g, &["0", "1", "2", "-1", "abc", "99999999999999999999999", ""]).to_owned(),
            ),
            4 => ("continue", continue_token(g)),
            5 => (
                "resourceVersion",
                pick(
                    g,
                    &[
                        "0",
                        "1",
                        "",
                        "abc",
                        "-1",
                        "18446744073709551615",
                        "99999999999999999999",
                        "999999",
                    ],
                )
                .to_owned(),
            ),
            // Never a value that parses as a long timeout: watches must end.
            6 => (
                "timeoutSeconds",
                pick(g, &["1", "0", "-1", "abc", "1.5", "99999999999999999999"]).to_owned(),
            ),
            7 => ("dryRun", pick(g, &["All", "", "x", "All,All"]).to_owned()),
            8 => {
                ("fieldValidation", pick(g, &["Strict", "Warn", "Ignore", "", "strict"]).to_owned())
            }
            9 => (
                "propagationPolicy",
                pick(g, &["Orphan", "Foreground", "Background", "", "x"]).to_owned(),
            ),
            10 => (
                "gracePeriodSeconds",
                pick(
                    g,
                    &[
                        "0",
                        "1",
                        "30",
                        "-1",
                        "abc",
                        "9223372036854775807",
                        "-9223372036854775808",
                        "99999999999999999999",
                    ],
                )
                .to_owned(),
            ),
            11 => ("includeObject", pick(g, &["None", "Object", "Metadata", "x"]).to_owned()),
            12 => ("allowWatchBookmarks", pick(g, &["true", "false", "x"]).to_owned()),
            13 => ("sendInitialEvents", pick(g, &["true", "false", "x"]).to_owned()),
            14 => ("orphanDependents", pick(g, &["true", "false"]).to_owned()),
            15 => ("resourceVersionMatch", pick(g, &["NotOlderThan", "Exact", "x"]).to_owned()),
            _ => (
                pick(g, &["pretty", "x", "", "%", "a%zz", "%77atch"]),
                pick(g, &["", "true", "%", "+", "%G1"]).to_owned(),
            ),
        };
        params.push((k.to_owned(), v));
    }
    let mut q: Vec<String> = params
        .iter()
        .map(|(k, v)| {
            // Keys are written raw (some are deliberately malformed); values are encoded,
            // except now and then.
            if g.random_bool(0.9) { format!("{k}={}", enc(v)) } else { format!("{k}={}", raw(v)) }
        })
        .collect();
    if method == "GET" {
        // Whatever came before, a watch ends at once or after a second: the last value wins.
        q.push(format!("timeoutSeconds={}", pick(g, &[0, 0, 1])));
    }
    if g.random_bool(0.03) {
        q.push("&&=&".to_owned());
    }
    (q.join("&"), watch)
}

/// A value written into the query as it is, minus what would end the URI or be rejected by it.
fn raw(v: &str) -> String {
    v.chars()
        .map(|c| if c.is_ascii_graphic() && !"#%\"<>\\^`{|}".contains(c) { c } else { '+' })
        .collect()
}

fn continue_token(g: &mut StdRng) -> String {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    match g.random_range(0..5) {
        0 => engine.encode(br#"{"v":"kinetic/1","ns":"default","name":"a"}"#),
        1 => engine.encode(br#"{"ns":1,"name":null}"#),
        2 => engine.encode(random_bytes(g, 20)),
        3 => "!!!".to_owned(),
        _ => String::new(),
    }
}

fn random_bytes(g: &mut StdRng, max: usize) -> Vec<u8> {
    let n = g.random_range(0..=max);
    (0..n).map(|_| g.random::<u8>()).collect()
}

fn random_string(g: &mut StdRng) -> String {
    match g.random_range(0..10) {
        0..=6 => pick(g, STRINGS).to_owned(),
        7 => "x".repeat(pick(g, &[63, 64, 254, 1000, 70_000])),
        _ => (0..g.random_range(0..12))
            .map(|_| char::from_u32(g.random_range(0..0x3000)).unwrap_or('?'))
            .collect(),
    }
}

fn random_number(g: &mut StdRng) -> Value {
    match g.random_range(0..8) {
        0 => json!(pick(g, &[0_i64, 1, -1, 3, 80, 30])),
        1 => json!(pick(g, &[i64::MAX, i64::MIN, i64::from(i32::MAX) + 1])),
        2 => json!(u64::MAX),
        3 => json!(pick(g, &[0.5, 1e308, -0.0, 1.0])),
        _ => json!(g.random_range(-5_i64..100)),
    }
}

fn random_leaf(g: &mut StdRng) -> Value {
    match g.random_range(0..8) {
        0 => Value::Null,
        1 => Value::Bool(g.random()),
        2 | 3 => random_number(g),
        _ => Value::String(random_string(g)),
    }
}

fn random_key(g: &mut StdRng) -> String {
    if g.random_bool(0.85) { pick(g, KEYS).to_owned() } else { random_string(g) }
}

fn random_value(g: &mut StdRng, depth: u32) -> Value {
    if depth == 0 || g.random_bool(0.4) {
        return random_leaf(g);
    }
    if g.random_bool(0.5) {
        Value::Array((0..g.random_range(0..4)).map(|_| random_value(g, depth - 1)).collect())
    } else {
        Value::Object(
            (0..g.random_range(0..5))
                .map(|_| (random_key(g), random_value(g, depth - 1)))
                .collect(),
        )
    }
}

/// Changes one to four places in `v`: replaces a value, adds or removes a field, grows or
/// shrinks a list.
fn mutate(g: &mut StdRng, v: &mut Value) {
    for _ in 0..g.random_range(1..5) {
        mutate_once(g, v);
    }
}

fn mutate_once(g: &mut StdRng, v: &mut Value) {
    let descend = g.random_bool(0.7);
    match v {
        Value::Object(m) if descend && !m.is_empty() => {
            let i = g.random_range(0..m.len());
            if let Some((_, child)) = m.iter_mut().nth(i) {
                mutate_once(g, child);
            }
        }
        Value::Array(a) if descend && !a.is_empty() => {
            let i = g.random_range(0..a.len());
            mutate_once(g, &mut a[i]);
        }
        Value::Object(m) => match g.random_range(0..4) {
            0 if !m.is_empty() => {
                let i = g.random_range(0..m.len());
                if let Some(k) = m.keys().nth(i).cloned() {
                    m.shift_remove(&k);
                }
            }
            1 => *v = random_value(g, 2),
            _ => {
                m.insert(random_key(g), random_value(g, 2));
            }
        },
        Value::Array(a) => match g.random_range(0..4) {
            0 if !a.is_empty() => {
                let i = g.random_range(0..a.len());
                a.remove(i);
            }
            1 if !a.is_empty() => {
                let i = g.random_range(0..a.len());
                let copy = a[i].clone();
                a.push(copy);
            }
            2 => *v = random_value(g, 2),
            _ => a.push(random_value(g, 2)),
        },
        _ => *v = random_value(g, 2),
    }
}

/// A `pattern` from RE2 tokens, valid and not.
fn pattern(g: &mut StdRng) -> String {
    let tokens = [
        "a",
        "b",
        ".",
        "*",
        "+",
        "?",
        "|",
        "(",
        ")",
        "[",
        "]",
        "^",
        "$",
        "\\d",
        "\\w",
        "\\b",
        "\\x{1F600}",
        "\\p{L}",
        "{2}",
        "{1,3}",
        "{1000}",
        "{2,1}",
        "[a-z]",
        "[^a]",
        "(?:",
        "(?P<n>",
        "(?=",
        "(?i)",
        "\\1",
        "\\",
    ];
    (0..g.random_range(0..8)).map(|_| pick(g, &tokens)).collect()
}

/// A CRD `openAPIV3Schema` node: structural most of the time.
fn crd_schema(g: &mut StdRng, depth: u32) -> Value {
    let ty = pick(g, &["object", "object", "string", "integer", "array", "number", "boolean", ""]);
    let mut m = Map::new();
    if !ty.is_empty() {
        m.insert("type".into(), json!(ty));
    }
    match ty {
        "object" if depth > 0 => {
            let props: Map<String, Value> = (0..g.random_range(0..4))
                .map(|_| {
                    (
                        pick(g, &["replicas", "image", "items", "size", "a"]).to_owned(),
                        crd_schema(g, depth - 1),
                    )
                })
                .collect();
            m.insert("properties".into(), Value::Object(props));
            if g.random_bool(0.2) {
                m.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
            }
            if g.random_bool(0.2) {
                m.insert("required".into(), json!(["replicas"]));
            }
        }
        "array" if depth > 0 => {
            m.insert("items".into(), crd_schema(g, depth - 1));
        }
        "string" => {
            if g.random_bool(0.5) {
                m.insert("pattern".into(), json!(pattern(g)));
            }
            if g.random_bool(0.2) {
                m.insert("maxLength".into(), random_number(g));
            }
            if g.random_bool(0.2) {
                m.insert("enum".into(), json!(["a", "b"]));
            }
        }
        "integer" | "number" => {
            if g.random_bool(0.3) {
                m.insert("minimum".into(), random_number(g));
            }
            if g.random_bool(0.2) {
                m.insert("multipleOf".into(), random_number(g));
            }
            if g.random_bool(0.2) {
                m.insert("format".into(), json!(pick(g, &["int32", "int64", "x"])));
            }
        }
        _ => {}
    }
    if g.random_bool(0.2) {
        m.insert("default".into(), random_value(g, 2));
    }
    if g.random_bool(0.05) {
        m.insert("x-kubernetes-int-or-string".into(), json!(true));
    }
    Value::Object(m)
}

fn crd(g: &mut StdRng, plural: &str) -> Value {
    let replicas_path =
        pick(g, &[".spec.replicas", ".spec.replicas", ".spec", "..", ".spec.replicas.x", "spec"]);
    let kind = if plural == "widgets" { "Widget" } else { "Gadget" };
    let schema = json!({
        "type": "object",
        "properties": {"spec": crd_schema(g, 3), "status": crd_schema(g, 2)},
    });
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.example.com")},
        "spec": {
            "group": "example.com",
            "names": {"plural": plural, "singular": plural.trim_end_matches('s'), "kind": kind},
            "scope": pick(g, &["Namespaced", "Namespaced", "Cluster", "x"]),
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {
                    "status": {},
                    "scale": {
                        "specReplicasPath": replicas_path,
                        "statusReplicasPath": ".status.replicas",
                        "labelSelectorPath": pick(g, &[".status.selector", ".spec"]),
                    },
                },
            }],
        },
    })
}

/// A valid object of the kind `plural` names (or a random kind's).
fn template(g: &mut StdRng, plural: Option<&str>, name: &str) -> Value {
    let plural =
        plural.unwrap_or_else(|| pick(g, &["pods", "configmaps", "deployments", "widgets"]));
    let mut meta = json!({"name": name, "labels": {"app": "web"}});
    if plural != "namespaces" && g.random_bool(0.15) {
        // Owners that exist (the setup's `web` deployment, whose uid the server made up) or
        // not: the garbage collector acts on both. Not on namespaces: the collector would
        // delete `default` (`deleting_the_default_namespace_is_forbidden`).
        meta["ownerReferences"] = json!([{
            "apiVersion": pick(g, &["apps/v1", "v1", "example.com/v1", "nope/v1"]),
            "kind": pick(g, &["Deployment", "ConfigMap", "Widget", "Nope"]),
            "name": pick(g, &["web", "a", "gone"]),
            "uid": pick(g, &["00000000-0000-0000-0000-000000000000", "x", ""]),
            "controller": g.random::<bool>(),
            "blockOwnerDeletion": g.random::<bool>(),
        }]);
    }
    if g.random_bool(0.15) {
        meta["finalizers"] =
            json!([pick(g, &["example.com/f", "foregroundDeletion", "orphan", "kubernetes"])]);
    }
    let container = json!({
        "name": "app", "image": "nginx",
        "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}],
    });
    let pod_spec =
        json!({"containers": [container], "terminationGracePeriodSeconds": random_number(g)});
    match plural {
        "pods" => {
            let mut spec = pod_spec;
            if g.random_bool(0.5) {
                spec["nodeName"] = json!("node-1");
            }
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
        }
        "configmaps" => {
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}})
        }
        "secrets" => {
            let data = json!({"k": pick(g, &["dg==", "!!"])});
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta, "data": data})
        }
        "namespaces" => json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta}),
        "nodes" => {
            let spec = json!({"unschedulable": g.random::<bool>()});
            json!({"apiVersion": "v1", "kind": "Node", "metadata": meta, "spec": spec})
        }
        "services" => json!({"apiVersion": "v1", "kind": "Service", "metadata": meta,
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
        "events" => json!({"apiVersion": "v1", "kind": "Event", "metadata": meta,
            "involvedObject": {"kind": "Pod", "name": "a"}, "reason": "Fuzz", "message": "m"}),
        "deployments" | "replicasets" => json!({
            "apiVersion": "apps/v1",
            "kind": if plural == "deployments" { "Deployment" } else { "ReplicaSet" },
            "metadata": meta,
            "spec": {"replicas": random_number(g), "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec}},
        }),
        "leases" => {
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
            "spec": {"holderIdentity": "x", "leaseDurationSeconds": random_number(g)}})
        }
        "customresourcedefinitions" => {
            let plural = pick(g, &["widgets", "gadgets"]);
            crd(g, plural)
        }
        "widgets" | "gadgets" => json!({
            "apiVersion": "example.com/v1",
            "kind": if plural == "widgets" { "Widget" } else { "Gadget" },
            "metadata": meta, "spec": {"replicas": random_number(g), "image": "x"},
            "status": {"replicas": 1},
        }),
        _ => json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}),
    }
}

/// Every JSON pointer into `v`, plus `-` past each array's end.
fn pointers(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                pointers(child, &format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                pointers(child, &format!("{at}/{i}"), out);
            }
            out.push(format!("{at}/-"));
        }
        _ => {}
    }
    out.push(at.to_owned());
}

fn json_patch_body(g: &mut StdRng, target: &Value) -> Value {
    let mut paths = Vec::new();
    pointers(target, "", &mut paths);
    paths.extend(
        ["/metadata/finalizers/-", "/spec/nodeName", "/nope/x", "/~2", "x"].map(String::from),
    );
    let ops = (0..g.random_range(0..4))
        .map(|_| {
            let op = pick(g, &["add", "remove", "replace", "move", "copy", "test", "nope"]);
            let path = paths[g.random_range(0..paths.len())].clone();
            let mut o = json!({"op": op, "path": path});
            if matches!(op, "move" | "copy") || g.random_bool(0.1) {
                o["from"] = json!(paths[g.random_range(0..paths.len())]);
            }
            if !matches!(op, "remove" | "move" | "copy") || g.random_bool(0.1) {
                o["value"] = random_value(g, 2);
            }
            if g.random_bool(0.1) {
                mutate(g, &mut o);
            }
            o
        })
        .collect();
    Value::Array(ops)
}

/// Directives a strategic merge patch may carry, well formed or not.
fn add_directives(g: &mut StdRng, patch: &mut Value) {
    let Some(m) = patch.as_object_mut() else { return };
    match g.random_range(0..6) {
        0 => {
            m.insert("$patch".into(), json!(pick(g, &["replace", "delete", "merge", "x"])));
        }
        1 => {
            m.insert("$retainKeys".into(), json!(["metadata", "spec"]));
        }
        2 => {
            let spec = m.entry("spec").or_insert_with(|| json!({}));
            if let Some(spec) = spec.as_object_mut() {
                spec.insert(
                    "$setElementOrder/containers".into(),
                    json!([{"name": "app"}, {"name": pick(g, &["b", "app"])}]),
                );
            }
        }
        3 => {
            let meta = m.entry("metadata").or_insert_with(|| json!({}));
            if let Some(meta) = meta.as_object_mut() {
                meta.insert("$deleteFromPrimitiveList/finalizers".into(), json!(["x", 1]));
                meta.insert("finalizers".into(), json!(["example.com/f"]));
            }
        }
        4 => {
            let directive = pick(g, &["delete", "replace", "merge"]);
            let containers = json!([{"name": "app", "$patch": directive}]);
            m.insert("spec".into(), json!({"containers": containers}));
        }
        _ => {}
    }
}

/// A body for `method` on `plural` with `content_type`.
fn body(
    g: &mut StdRng,
    method: &str,
    plural: Option<&str>,
    content_type: &str,
    object: &str,
    subresource: &str,
) -> Vec<u8> {
    if content_type.starts_with("application/vnd.kubernetes.protobuf") && g.random_bool(0.9) {
        return protobuf_body(g, plural);
    }
    // Bodies that are not JSON values at all.
    match g.random_range(0..100) {
        0..=2 => return random_bytes(g, 64),
        3 => return Vec::new(),
        4 => return b"  \n\t".to_vec(),
        5 => {
            let depth = pick(g, &[100, 127, 128, 129, 1000, 100_000]);
            return format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
        }
        6 => return yaml_bomb(g),
        7 => return b"a: 1\n---\nb: 2\n".to_vec(),
        8 if g.random_bool(0.1) => return vec![b' '; MAX_BODY + 1],
        9 => return b"\xEF\xBB\xBF{\"metadata\": {\"name\": \"a\"}}".to_vec(),
        _ => {}
    }
    let name = if g.random_bool(0.8) { object.to_owned() } else { name(g) };
    let mut v = match method {
        "DELETE" => json!({
            "kind": "DeleteOptions", "apiVersion": "v1",
            "gracePeriodSeconds": random_number(g),
            "propagationPolicy": pick(g, &["Orphan", "Foreground", "Background", "x"]),
            "preconditions": {"uid": "x", "resourceVersion": pick(g, &["1", "x"])},
            "dryRun": ["All"],
        }),
        "POST" if subresource == "binding" || g.random_bool(0.05) => json!({
            "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": pick(g, &["node-1", "", "n2"])},
        }),
        "PATCH" if content_type.starts_with("application/json-patch") => {
            let target = template(g, plural, &name);
            json_patch_body(g, &target)
        }
        "PATCH" => {
            let mut p = template(g, plural, &name);
            if g.random_bool(0.5)
                && let Some(m) = p.as_object_mut()
            {
                // A patch names only what it changes.
                m.retain(|k, _| k != "apiVersion" && k != "kind");
            }
            add_directives(g, &mut p);
            p
        }
        _ if g.random_bool(0.1) => random_value(g, 4),
        _ if subresource == "scale" || g.random_bool(0.03) => json!({
            "apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": name},
            "spec": {"replicas": random_number(g)},
        }),
        _ => template(g, plural, &name),
    };
    if g.random_bool(0.35) {
        mutate(g, &mut v);
    }
    let yaml = content_type.contains("yaml");
    let mut bytes = if yaml && g.random_bool(0.8) {
        serde_yaml::to_string(&v).map(String::into_bytes).unwrap_or_default()
    } else {
        serde_json::to_vec(&v).unwrap_or_default()
    };
    if g.random_bool(0.04) && !bytes.is_empty() {
        let cut = g.random_range(0..bytes.len());
        bytes.truncate(cut);
    }
    if g.random_bool(0.02) {
        bytes.extend_from_slice(b"}{garbage");
    }
    bytes
}

/// The bodies kubectl sends as protobuf, captured by the decoder's author.
const PB_FIXTURES: &[&[u8]] = &[
    include_bytes!("../../../machinery/src/protobuf/fixtures/create-configmap.pb"),
    include_bytes!("../../../machinery/src/protobuf/fixtures/create-deployment.pb"),
    include_bytes!("../../../machinery/src/protobuf/fixtures/create-job.pb"),
    include_bytes!("../../../machinery/src/protobuf/fixtures/create-namespace.pb"),
    include_bytes!("../../../machinery/src/protobuf/fixtures/create-secret-generic.pb"),
    include_bytes!("../../../machinery/src/protobuf/fixtures/create-service-nodeport.pb"),
];

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_len(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
    put_varint(out, (number << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A message of random varint, string and nested fields at the numbers built-in messages use.
fn protobuf_message(g: &mut StdRng, depth: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..g.random_range(0..6) {
        let number = if g.random_bool(0.9) { g.random_range(1..17) } else { g.random_range(0..64) };
        match g.random_range(0..6) {
            0 | 1 => {
                put_varint(&mut out, number << 3);
                let v = match g.random_range(0..3) {
                    0 => g.random_range(0..4),
                    1 => g.random(),
                    _ => pick(g, &[253_402_300_800, (-62_135_596_801_i64) as u64, u64::MAX]),
                };
                put_varint(&mut out, v);
            }
            2 | 3 => put_len(&mut out, number, random_string(g).as_bytes()),
            _ if depth > 0 => {
                let inner = protobuf_message(g, depth - 1);
                put_len(&mut out, number, &inner);
            }
            _ => put_varint(&mut out, (number << 3) | pick(g, &[1, 3, 5, 6])),
        }
    }
    out
}

/// A protobuf body: a kubectl body with a few bytes changed, an envelope of a random message
/// for the kind the path names, or garbage after the magic.
fn protobuf_body(g: &mut StdRng, plural: Option<&str>) -> Vec<u8> {
    match g.random_range(0..10) {
        0..=3 => {
            let mut body = pick(g, PB_FIXTURES).to_vec();
            for _ in 0..g.random_range(0..4) {
                let i = g.random_range(0..body.len());
                body[i] =
                    if g.random_bool(0.5) { g.random() } else { pick(g, &[0, 0x7f, 0x80, 0xff]) };
            }
            body
        }
        4..=8 => {
            let (api_version, kind) = match plural.unwrap_or("") {
                "pods" => ("v1", "Pod"),
                "configmaps" => ("v1", "ConfigMap"),
                "namespaces" => ("v1", "Namespace"),
                "services" => ("v1", "Service"),
                "deployments" => ("apps/v1", "Deployment"),
                "widgets" => ("example.com/v1", "Widget"),
                _ => pick(g, &[("v1", "DeleteOptions"), ("v1", "Secret"), ("v1", "Nope")]),
            };
            let mut type_meta = Vec::new();
            put_len(&mut type_meta, 1, api_version.as_bytes());
            put_len(&mut type_meta, 2, kind.as_bytes());
            let mut body = b"k8s\0".to_vec();
            put_len(&mut body, 1, &type_meta);
            put_len(&mut body, 2, &protobuf_message(g, 4));
            body
        }
        _ => [b"k8s\0".as_slice(), &random_bytes(g, 64)].concat(),
    }
}

/// A YAML alias bomb small enough for the test: `levels` levels of `width` aliases each.
fn yaml_bomb(g: &mut StdRng) -> Vec<u8> {
    let levels = g.random_range(2..6);
    let width = g.random_range(2..8);
    let mut s = String::from("a0: &a0 [x, y]\n");
    for l in 1..levels {
        let refs = vec![format!("*a{}", l - 1); width].join(", ");
        let _ = writeln!(s, "a{l}: &a{l} [{refs}]");
    }
    s.push_str("metadata: {name: bomb}\n");
    s.into_bytes()
}

fn content_type(g: &mut StdRng, method: &str) -> Option<Vec<u8>> {
    let patches = [
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    ];
    let others = [
        "application/json",
        "application/json; charset=utf-8",
        "application/yaml",
        "text/yaml",
        "application/vnd.kubernetes.protobuf",
        "text/plain",
        "",
        "garbage/;;;",
        "application/json;;",
        ";",
        "multipart/form-data; boundary=x",
    ];
    let ct = match g.random_range(0..20) {
        0 => return None,
        1 => return Some(b"application/\xFFjson".to_vec()),
        _ if method == "PATCH" && g.random_bool(0.85) => pick(g, &patches),
        // kubectl's imperative commands send built-in kinds as protobuf.
        _ if method != "PATCH" && g.random_bool(0.1) => "application/vnd.kubernetes.protobuf",
        _ if g.random_bool(0.8) => "application/json",
        _ if g.random_bool(0.5) => pick(g, &others),
        _ => pick(g, &patches),
    };
    Some(ct.as_bytes().to_vec())
}

fn accept(g: &mut StdRng) -> Option<&'static str> {
    if g.random_bool(0.7) {
        return None;
    }
    if g.random_bool(0.6) {
        return Some(pick(
            g,
            &[
                "application/json",
                "application/json;as=Table;v=v1;g=meta.k8s.io",
                "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io",
            ],
        ));
    }
    Some(pick(
        g,
        &[
            "application/json",
            "application/json;as=Table;v=v1;g=meta.k8s.io",
            "application/json;as=Table;v=v1;g=meta.k8s.io, application/json",
            "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io",
            "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io",
            "application/vnd.kubernetes.protobuf",
            "application/json;as=Nope",
            "*/*",
            "text/html",
            ";;,,",
        ],
    ))
}

fn request(g: &mut StdRng) -> Req {
    let method = match g.random_range(0..20) {
        0..=5 => "GET",
        6..=9 => "POST",
        10..=11 => "PUT",
        12..=15 => "PATCH",
        16..=17 => "DELETE",
        18 => pick(g, &["HEAD", "OPTIONS"]),
        _ => pick(g, &["FOO", "GET", "PATCH"]),
    }
    .to_owned();
    let (path, plural, object) = path(g, &method);
    let (query, watch) = query(g, &method);
    let uri = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };
    let mut headers = Vec::new();
    let ct = content_type(g, &method);
    let ct_text = ct.as_ref().map(|c| String::from_utf8_lossy(c).into_owned()).unwrap_or_default();
    if let Some(ct) = ct {
        headers.push(("content-type", ct));
    }
    if let Some(a) = accept(g) {
        headers.push(("accept", a.as_bytes().to_vec()));
    }
    // Now and then the admin acts as someone else, so RBAC decides (and refuses) for real.
    if g.random_bool(0.1) {
        let user = pick(
            g,
            &[
                "vera",
                "system:serviceaccount:default:default",
                "system:serviceaccount:x",
                "",
                "system:masters",
            ],
        );
        headers.push(("impersonate-user", user.as_bytes().to_vec()));
        if g.random_bool(0.3) {
            headers.push((
                "impersonate-group",
                pick(g, &["system:masters", "dev", ""]).as_bytes().to_vec(),
            ));
        }
    }
    let subresource = path.rsplit('/').next().filter(|s| SUBRESOURCES.contains(s)).unwrap_or("");
    let body = if method == "GET" && g.random_bool(0.9) {
        Vec::new()
    } else {
        let object = object.unwrap_or_else(|| name(g));
        body(g, &method, plural, &ct_text, &object, subresource)
    };
    // Discovery, OpenAPI and health ignore `watch`.
    Req { method, uri, headers, body, watch: watch && plural.is_some() }
}

// ---------------------------------------------------------------------------------------------
// The session
// ---------------------------------------------------------------------------------------------

fn json_req(method: &str, uri: &str, content_type: &str, body: &Value) -> Req {
    Req {
        method: method.to_owned(),
        uri: uri.to_owned(),
        headers: vec![("content-type", content_type.as_bytes().to_vec())],
        body: serde_json::to_vec(body).unwrap(),
        watch: false,
    }
}

/// Objects for the requests to find: a CRD with status and scale, a scheduled pod (graceful
/// deletion), a deployment, a node, a second namespace.
async fn setup(client: &kube::Client) {
    let mut g = StdRng::seed_from_u64(0);
    let mut widgets = crd(&mut g, "widgets");
    widgets["spec"]["scope"] = json!("Namespaced");
    widgets["spec"]["versions"][0]["subresources"]["scale"]["specReplicasPath"] =
        json!(".spec.replicas");
    widgets["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = json!({
        "type": "object",
        "properties": {
            "spec": {"type": "object", "properties": {
                "replicas": {"type": "integer", "minimum": 0, "default": 1},
                "image": {"type": "string", "pattern": "^[a-z]+(:[a-z0-9.]+)?$", "maxLength": 64},
            }},
            "status": {"type": "object", "properties": {
                "replicas": {"type": "integer"},
                "selector": {"type": "string"},
            }},
        },
    });
    let mut gadgets = crd(&mut g, "gadgets");
    gadgets["spec"]["scope"] = json!("Cluster");
    gadgets["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = json!({
        "type": "object", "x-kubernetes-preserve-unknown-fields": true,
    });
    let objects = [
        ("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", widgets),
        ("/api/v1/namespaces", json!({"metadata": {"name": "fuzz"}})),
        ("/api/v1/nodes", json!({"metadata": {"name": "node-1"}})),
        (
            "/api/v1/namespaces/default/configmaps",
            json!({"metadata": {"name": "a"}, "data": {"k": "v"}}),
        ),
        (
            "/api/v1/namespaces/default/pods",
            json!({"metadata": {"name": "a"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "nginx"}]}}),
        ),
        (
            "/api/v1/namespaces/default/pods",
            json!({"metadata": {"name": "b", "finalizers": ["example.com/f"]},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]}}),
        ),
        (
            "/apis/apps/v1/namespaces/default/deployments",
            json!({"metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": "nginx"}]}}}}),
        ),
        ("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", gadgets),
        (
            "/apis/example.com/v1/namespaces/default/widgets",
            json!({"apiVersion": "example.com/v1",
            "kind": "Widget", "metadata": {"name": "a"}, "spec": {"replicas": 2, "image": "x"}}),
        ),
    ];
    for (uri, body) in objects {
        let resp = send(client, &json_req("POST", uri, "application/json", &body)).await.unwrap();
        assert_eq!(resp.code, 201, "setup POST {uri}: {}", String::from_utf8_lossy(&resp.body));
    }
}

/// After the session: health and an ordinary round trip.
async fn still_healthy(client: &kube::Client) -> Result<(), String> {
    let readyz = Req {
        method: "GET".into(),
        uri: "/readyz".into(),
        headers: vec![],
        body: vec![],
        watch: false,
    };
    let resp = send(client, &readyz).await?;
    if (resp.code, resp.body.as_slice()) != (200, b"ok".as_slice()) {
        return Err(format!(
            "/readyz answered {} {:?}",
            resp.code,
            String::from_utf8_lossy(&resp.body)
        ));
    }
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "after-fuzz"}, "data": {"k": "v"}});
    let uri = "/api/v1/namespaces/default/configmaps";
    let resp = send(client, &json_req("POST", uri, "application/json", &cm)).await?;
    if resp.code != 201 {
        return Err(format!(
            "create after fuzzing: {} {}",
            resp.code,
            String::from_utf8_lossy(&resp.body)
        ));
    }
    let get = Req {
        method: "GET".into(),
        uri: format!("{uri}/after-fuzz"),
        headers: vec![],
        body: vec![],
        watch: false,
    };
    let resp = send(client, &get).await?;
    let got: Value = serde_json::from_slice(&resp.body).unwrap_or_default();
    if resp.code != 200 || got["data"] != json!({"k": "v"}) {
        return Err(format!("get after fuzzing: {} {got}", resp.code));
    }
    Ok(())
}

/// A client that sends every request once: `kube`'s default client retries 429, 503 and 504
/// up to 15 times with backoff growing to minutes, which would turn one 503 into a "hang".
fn client_without_retries(t: &TestServer) -> kube::Client {
    let ca = rustls_pemfile::certs(&mut t.server().ca_pem().as_bytes())
        .map(|c| c.unwrap().to_vec())
        .collect::<Vec<_>>();
    let mut cfg = kube::Config::new(t.server().url().parse().unwrap());
    cfg.root_cert = Some(ca);
    cfg.auth_info.token = Some(t.server().token().to_owned().into());
    cfg.default_retry = false;
    kube::Client::try_from(cfg).unwrap()
}

#[tokio::test]
async fn generated_requests_always_get_a_kubernetes_answer() {
    let seed = env_u64("KINETIC_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let cases = env_u64("KINETIC_FUZZ_CASES").unwrap_or(DEFAULT_CASES);
    eprintln!("fuzz seed {seed}, {cases} requests (rerun with KINETIC_FUZZ_SEED={seed})");
    let test_thread = std::thread::current().name().unwrap_or("").to_owned();
    let t = TestServer::start().await.unwrap();
    let client = client_without_retries(&t);
    setup(&client).await;

    let mut g = StdRng::seed_from_u64(seed);
    let mut session = Session::default();
    // Watches last a second: they run beside the following requests (and see their events)
    // rather than stall the session.
    let mut watches = tokio::task::JoinSet::new();
    let started = Instant::now();
    for index in 0..cases {
        let req = request(&mut g);
        if req.watch {
            let client = client.clone();
            watches.spawn(async move {
                let outcome = send(&client, &req).await;
                (index, req, outcome)
            });
            continue;
        }
        let mark = panic_mark();
        let sent = Instant::now();
        let outcome = send(&client, &req).await;
        session.record(index, &req, outcome, sent.elapsed());
        while let Some(joined) = watches.try_join_next() {
            let (index, req, outcome) = joined.unwrap();
            session.record(index, &req, outcome, Duration::ZERO);
        }
        // The server runs on this thread: a panic since `mark` happened while this request
        // was in flight (or a watch beside it, or the garbage collector).
        for p in server_panics_since(mark, &test_thread) {
            let in_flight = watches.len();
            session.fail(
                format!("panic at {}", p.location),
                format!(
                    "request #{index} (up to {in_flight} watches in flight): thread {} panicked \
                     at {}: {}\n{req}",
                    p.thread, p.location, p.message
                ),
            );
        }
    }
    while let Some(joined) = watches.join_next().await {
        let (index, req, outcome) = joined.unwrap();
        session.record(index, &req, outcome, Duration::ZERO);
    }
    let health = still_healthy(&client).await;
    eprintln!(
        "{cases} requests in {:.1?}; status codes {:?}; slowest {:.1?} {}",
        started.elapsed(),
        session.codes,
        session.slowest.0,
        session.slowest.1
    );
    for e in &session.internal_errors {
        eprintln!("500 InternalError for {e}\n");
    }
    if let Err(e) = health {
        session.fail("unhealthy after fuzzing".into(), e);
    }
    let report: Vec<&str> = session.failures.values().map(String::as_str).collect();
    assert!(
        report.is_empty(),
        "seed {seed}: {} kinds of failure:\n\n{}",
        report.len(),
        report.join("\n\n")
    );
}

/// What a session saw.
#[derive(Default)]
struct Session {
    /// The first failure of each kind, with the request that caused it.
    failures: BTreeMap<String, String>,
    codes: BTreeMap<u16, usize>,
    internal_errors: Vec<String>,
    slowest: (Duration, String),
}

impl Session {
    fn fail(&mut self, kind: String, problem: String) {
        self.failures.entry(kind).or_insert(problem);
    }

    fn record(&mut self, index: u64, req: &Req, outcome: Result<Resp, String>, took: Duration) {
        if took > self.slowest.0 {
            let uri: String = req.uri.chars().take(200).collect();
            self.slowest = (took, format!("#{index} {uri}"));
        }
        let problem = match outcome {
            // An oversized body may be refused before it is all sent.
            Err(e) if req.body.len() > MAX_BODY && e.starts_with("no response") => return,
            Err(e) => (e.split(':').next().unwrap_or("").to_owned(), e),
            Ok(resp) => {
                *self.codes.entry(resp.code).or_default() += 1;
                if resp.code == 500 {
                    let body = String::from_utf8_lossy(&resp.body);
                    self.internal_errors.push(format!("#{index}: {body}\n{req}"));
                }
                match check(req, &resp) {
                    Ok(()) => return,
                    Err(e) => (e.chars().take(40).collect(), e),
                }
            }
        };
        self.fail(problem.0, format!("request #{index}: {}\n{req}", problem.1));
    }
}

// ---------------------------------------------------------------------------------------------
// Regressions found by fuzzing, each with its minimised input
// ---------------------------------------------------------------------------------------------

/// Sends one request with an empty body and returns the code and the body.
async fn simple(client: &kube::Client, method: &str, uri: &str) -> Result<Resp, String> {
    let req =
        Req { method: method.into(), uri: uri.into(), headers: vec![], body: vec![], watch: false };
    send(client, &req).await
}

/// Fails with the server's panics since `mark`, if there were any.
fn assert_no_server_panic(mark: usize, what: &str) {
    let test_thread = std::thread::current().name().unwrap_or("").to_owned();
    let panics = server_panics_since(mark, &test_thread);
    assert!(panics.is_empty(), "{what} panicked the server: {panics:#?}");
}

/// `DELETE` of a pod bound to a node with `gracePeriodSeconds=9223372036854775807`: the
/// deletion timestamp `now + grace` overflows `jiff::Timestamp` and the handler panics
/// ("adding signed duration to timestamp overflowed", `rest.rs` in `Api::delete`), so the
/// client gets no response at all.
#[tokio::test]
async fn deleting_a_scheduled_pod_with_a_huge_grace_period_does_not_panic() {
    let t = TestServer::start().await.unwrap();
    let client = t.client().await.unwrap();
    let pods = "/api/v1/namespaces/default/pods";
    let pod = json!({"metadata": {"name": "p"},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "i"}]}});
    let created = send(&client, &json_req("POST", pods, "application/json", &pod)).await.unwrap();
    assert_eq!(created.code, 201, "{}", String::from_utf8_lossy(&created.body));
    let mark = panic_mark();
    let resp =
        simple(&client, "DELETE", &format!("{pods}/p?gracePeriodSeconds=9223372036854775807"))
            .await;
    assert_no_server_panic(mark, "DELETE ?gracePeriodSeconds=9223372036854775807");
    let resp = resp.unwrap();
    assert!(
        matches!(resp.code, 200 | 400 | 422),
        "{} {}",
        resp.code,
        String::from_utf8_lossy(&resp.body)
    );
}

/// The same overflow reached without a query parameter: a scheduled pod whose
/// `spec.terminationGracePeriodSeconds` is `9223372036854775807` (the schema accepts any
/// int64), deleted the ordinary way (`kubectl delete pod`).
#[tokio::test]
async fn deleting_a_scheduled_pod_with_a_huge_termination_grace_period_does_not_panic() {
    let t = TestServer::start().await.unwrap();
    let client = t.client().await.unwrap();
    let pods = "/api/v1/namespaces/default/pods";
    let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "node-1",
        "terminationGracePeriodSeconds": i64::MAX, "containers": [{"name": "c", "image": "i"}]}});
    let created = send(&client, &json_req("POST", pods, "application/json", &pod)).await.unwrap();
    assert_eq!(created.code, 201, "{}", String::from_utf8_lossy(&created.body));
    let mark = panic_mark();
    let resp = simple(&client, "DELETE", &format!("{pods}/p")).await;
    assert_no_server_panic(mark, "DELETE of a pod with terminationGracePeriodSeconds=i64::MAX");
    let resp = resp.unwrap();
    assert!(
        matches!(resp.code, 200 | 422),
        "{} {}",
        resp.code,
        String::from_utf8_lossy(&resp.body)
    );
}

/// A watch with `timeoutSeconds=18446744073709551615`: the watch task computes
/// `Instant::now() + timeout` and panics ("overflow when adding duration to instant",
/// `http.rs` in `watch`), so the stream ends at once instead of staying open. Upstream clamps
/// nothing here either, but never ends a watch early.
#[tokio::test]
async fn watch_with_a_huge_timeout_stays_open() {
    let t = TestServer::start().await.unwrap();
    let client = t.client().await.unwrap();
    let mark = panic_mark();
    let uri =
        "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=18446744073709551615";
    let request = http::Request::get(uri).body(kube::client::Body::empty()).unwrap();
    let response = client.send(request).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // The stream must still be open after a second: reading it to the end must time out.
    let ended = tokio::time::timeout(Duration::from_secs(1), response.into_body().collect()).await;
    assert_no_server_panic(mark, "a watch with timeoutSeconds=18446744073709551615");
    assert!(ended.is_err(), "the watch ended at once instead of staying open");
}

/// Runs the calling test again in a child process (this test binary, only that test, with the
/// usual 2 MiB test-thread stack and at most `memory_mib` of address space) and fails unless
/// the child passes within `limit`: for inputs that take the whole process down (a stack
/// overflow, memory exhaustion) rather than panic a handler.
///
/// Returns `true` in the child, which then runs the input; `false` in the parent once the
/// child passed.
fn in_isolated_child(test: &str, limit: Duration, memory_mib: u64) -> bool {
    if std::env::var("KINETIC_FUZZ_CHILD").as_deref() == Ok(test) {
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    let ulimit = format!("ulimit -v {} && exec \"$0\" \"$@\"", memory_mib * 1024);
    let mut child = std::process::Command::new("sh")
        .args(["-c", &ulimit])
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env("KINETIC_FUZZ_CHILD", test)
        .env_remove("RUST_MIN_STACK")
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(stderr), &mut text);
        text
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{test}: the input did not finish within {limit:?} (the child was killed)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = reader.join().unwrap_or_default();
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = lines[lines.len().saturating_sub(12)..].join("\n");
    // A signal (SIGABRT from a stack overflow or a failed allocation, SIGKILL from the OOM
    // killer) means the process went down; exit status 101 is an ordinary test failure.
    assert!(status.success(), "{test}: the child process failed ({status}):\n{tail}");
    false
}

/// A CRD whose schema has a `pattern` of 100,000 nested groups: validating the CRD compiles
/// the pattern (`crd::validate` -> `Schema::check_structural` -> the private regex parser,
/// which recurses once per group) and overflows the handler's stack, which aborts the whole
/// server process. Upstream answers 422 ("expression nests too deeply").
#[tokio::test]
async fn crd_with_a_deeply_nested_pattern_does_not_abort_the_server() {
    let test = "fuzz::crd_with_a_deeply_nested_pattern_does_not_abort_the_server";
    if !in_isolated_child(test, Duration::from_secs(120), 4096) {
        return;
    }
    let t = TestServer::start().await.unwrap();
    let client = t.client().await.unwrap();
    let pattern = format!("{}a{}", "(".repeat(100_000), ")".repeat(100_000));
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "deeps.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "deeps", "singular": "deep", "kind": "Deep"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {"type": "string", "pattern": pattern}},
                }}}]},
    });
    let uri = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let resp = send(&client, &json_req("POST", uri, "application/json", &crd)).await.unwrap();
    assert!(
        matches!(resp.code, 201 | 422),
        "{} {}",
        resp.code,
        String::from_utf8_lossy(&resp.body)
    );
}

/// `DELETE /api/v1/namespaces/default` is accepted and the namespace starts terminating, after
/// which nothing can be created in `default` (found by the fuzz session's final health check:
/// "unable to create new content in namespace default because it is being terminated").
/// Upstream's NamespaceLifecycle admission refuses to delete the immortal namespaces with 403
/// `namespaces "default" is forbidden: this namespace may not be deleted`.
#[tokio::test]
async fn deleting_the_default_namespace_is_forbidden() {
    let t = TestServer::start().await.unwrap();
    let client = t.client().await.unwrap();
    for ns in ["default", "kube-system", "kube-public"] {
        let resp = simple(&client, "DELETE", &format!("/api/v1/namespaces/{ns}")).await.unwrap();
        let status: Value = serde_json::from_slice(&resp.body).unwrap_or_default();
        assert_eq!(
            (resp.code, status["reason"].as_str()),
            (403, Some("Forbidden")),
            "{ns}: {status}"
        );
    }
    let cm = json!({"metadata": {"name": "still-there"}});
    let uri = "/api/v1/namespaces/default/configmaps";
    let resp = send(&client, &json_req("POST", uri, "application/json", &cm)).await.unwrap();
    assert_eq!(resp.code, 201, "{}", String::from_utf8_lossy(&resp.body));
}

/// The same overflow inside the garbage collector: deleting a namespace makes the collector
/// delete its pods (`gc::finalize_namespace` -> `Api::delete`), and a scheduled pod with
/// `terminationGracePeriodSeconds: 9223372036854775807` panics it. The collector task is gone
/// from then on (and panics again at every start, since the namespace is still terminating), so
/// no namespace, owner or finalizer is ever processed again. Found by the fuzz session (seed 2):
/// the panic surfaced during an unrelated request.
#[tokio::test]
async fn a_pod_with_a_huge_grace_period_does_not_kill_the_garbage_collector() {
    let t = TestServer::start().await.unwrap();
    let client = t.client().await.unwrap();
    for ns in ["doomed", "other"] {
        let body = json!({"metadata": {"name": ns}});
        let req = json_req("POST", "/api/v1/namespaces", "application/json", &body);
        assert_eq!(send(&client, &req).await.unwrap().code, 201);
    }
    let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "node-1",
        "terminationGracePeriodSeconds": i64::MAX, "containers": [{"name": "c", "image": "i"}]}});
    let uri = "/api/v1/namespaces/doomed/pods";
    let created = send(&client, &json_req("POST", uri, "application/json", &pod)).await.unwrap();
    assert_eq!(created.code, 201, "{}", String::from_utf8_lossy(&created.body));
    let mark = panic_mark();
    assert_eq!(simple(&client, "DELETE", "/api/v1/namespaces/doomed").await.unwrap().code, 200);
    assert_eq!(simple(&client, "DELETE", "/api/v1/namespaces/other").await.unwrap().code, 200);
    // The collector empties `other` and removes it within moments, unless it died.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let code = simple(&client, "GET", "/api/v1/namespaces/other").await.unwrap().code;
        if code == 404 {
            break;
        }
        assert_no_server_panic(mark, "namespace cleanup of a pod with a huge grace period");
        assert!(Instant::now() < deadline, "namespace other is still there after 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_no_server_panic(mark, "namespace cleanup of a pod with a huge grace period");
}

/// A `GET` that carries a body the handler never reads (100 KB here) and gets a large answer
/// (`/openapi/v3/apis/apps/v1`, a few hundred KB): the response breaks off mid-body ("error
/// reading a body from connection") in 9 of 10 tries, because the connection is closed with
/// the request body unread and the peer resets it. Found by the fuzz session (seed 4). Go's
/// server drains up to 256 KiB of an unread body before it answers, then closes gracefully.
#[tokio::test]
async fn large_responses_survive_an_unread_request_body() {
    let t = TestServer::start().await.unwrap();
    let client = client_without_retries(&t);
    for attempt in 0..5 {
        let req = Req {
            method: "GET".into(),
            uri: "/openapi/v3/apis/apps/v1".into(),
            headers: vec![("content-type", b"application/json".to_vec())],
            body: vec![b'x'; 100_000],
            watch: false,
        };
        let resp = send(&client, &req).await.unwrap_or_else(|e| panic!("attempt {attempt}: {e}"));
        assert_eq!(resp.code, 200);
        serde_json::from_slice::<Value>(&resp.body).unwrap();
    }
}

/// A YAML alias bomb: one anchor of 20,000 scalars and a list of 20,000 aliases to it is a
/// 100 KB body (a thirtieth of the body limit) that `serde_yaml` expands into 400 million
/// values, about 30 GB: the server is killed for memory (2,000 x 2,000, 10 KB, already takes
/// 300 MB and a second). `serde_yaml`'s repetition limit counts alias jumps, not the values
/// they copy. Upstream's YAML decoder refuses such documents ("document contains excessive
/// aliasing") with 400.
#[tokio::test]
async fn yaml_alias_bomb_is_refused_without_exhausting_memory() {
    let test = "fuzz::yaml_alias_bomb_is_refused_without_exhausting_memory";
    if !in_isolated_child(test, Duration::from_secs(120), 512) {
        return;
    }
    let t = TestServer::start().await.unwrap();
    let client = client_without_retries(&t);
    let n = 20_000;
    let body = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bomb}}\nx: &a [{}]\ny: [{}]\n",
        vec!["x"; n].join(","),
        vec!["*a"; n].join(",")
    );
    let req = Req {
        method: "POST".into(),
        uri: "/api/v1/namespaces/default/configmaps".into(),
        headers: vec![("content-type", b"application/yaml".to_vec())],
        body: body.into_bytes(),
        watch: false,
    };
    let resp = send(&client, &req).await.unwrap();
    assert_eq!(resp.code, 400, "{}", String::from_utf8_lossy(&resp.body));
}

/// A CRD whose schema `check_structural` accepts but `Schema::from_json` cannot compile is
/// stored (201) and then never served: `crd::sync_registry` only logs "custom resource
/// definition not served", and every request for the resource is 404. Upstream refuses the
/// first two with 422 (`$ref` is not supported; `type` must be a JSON type) and serves the
/// third (`type: ""` is no type). Found by the machinery property `structural_schemas_compile`.
#[tokio::test]
async fn a_crd_that_is_accepted_is_served() {
    let t = TestServer::start().await.unwrap();
    let client = t.client().await.unwrap();
    let refs = json!({"type": "object", "$ref": "#/$defs/A"});
    let schemas = [
        ("refs", json!({"type": "object", "properties": {"spec": refs}})),
        ("dates", json!({"type": "object", "properties": {"spec": {"type": "date"}}})),
        (
            "blanks",
            json!({"type": "object", "properties": {
            "spec": {"type": "", "x-kubernetes-preserve-unknown-fields": true}}}),
        ),
    ];
    let mut problems = Vec::new();
    for (plural, schema) in schemas {
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.example.com")},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": plural, "kind": plural.trim_end_matches('s')},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": schema}}]},
        });
        let uri = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
        let created =
            send(&client, &json_req("POST", uri, "application/json", &crd)).await.unwrap();
        if created.code == 422 {
            continue;
        }
        let list = format!("/apis/example.com/v1/namespaces/default/{plural}");
        let served = simple(&client, "GET", &list).await.unwrap();
        if (created.code, served.code) != (201, 200) {
            problems.push(format!("{plural}: create {} then list {}", created.code, served.code));
        }
    }
    assert!(problems.is_empty(), "accepted but not served: {problems:?}");
}
