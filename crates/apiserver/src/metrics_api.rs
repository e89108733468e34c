//! The resource metrics API, `metrics.k8s.io/v1beta1` PodMetrics and NodeMetrics, as
//! metrics-server serves it, so `kubectl top pod|node` and HorizontalPodAutoscalers work on the
//! embedded server without installing metrics-server.
//!
//! Where metrics-server scrapes every kubelet's `/metrics/resource` every 15 s and keeps the
//! points, this asks the node agents on each request: it reads the `/stats/summary` of the
//! nodes that run the selected pods (kubelet's Summary API, which the agent serves from the
//! containers' cgroups, CPU as a rate over 10–15 s), over HTTPS with the kubelet client
//! certificate, as [`crate::logs`] reaches them. A node that cannot be reached contributes no
//! metrics (metrics-server also drops the node whose scrape failed).
//!
//! Served: `get` and `list` of `pods` (namespaced, label and `metadata.name` field selectors)
//! and `nodes` (label selectors), and the group's discovery documents. A pod is listed only
//! when every running container has both CPU and memory figures (metrics-server skips pods with
//! incomplete metrics); getting one without is `404`, which kubectl reports as "Metrics not
//! available".

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Empty, Limited};
use kinetic_machinery::selector::{FieldSelector, LabelSelector};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::logs::NodeClient;
use crate::rest::{Api, ListOptions};

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";

/// The window reported with each point: the agent computes CPU rates over 10–15 s, and 15 s is
/// metrics-server's default resolution.
const WINDOW: &str = "15s";
/// The longest a node may take to answer (metrics-server's `--kubelet-request-timeout`: 10 s).
const NODE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest summary accepted from a node.
const MAX_SUMMARY: usize = 32 << 20;

/// The group as the `/apis` list shows it.
pub fn group() -> Value {
    let gv = json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION});
    json!({"name": GROUP, "versions": [gv], "preferredVersion": gv})
}

fn resource_list() -> Value {
    let r = |name: &str, kind: &str, namespaced: bool| {
        json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
               "verbs": ["get", "list"]})
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/{VERSION}"),
           "resources": [r("nodes", "NodeMetrics", false), r("pods", "PodMetrics", true)]})
}

fn query<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
}

/// Serves a GET under `/apis/metrics.k8s.io/` (`rest` is the path after the group).
///
/// # Errors
/// The path names nothing here, a selector does not parse, or the named object has no metrics.
pub async fn serve(
    api: &Api,
    nodes: &NodeClient,
    rest: &[&str],
    q: &[(String, String)],
) -> ApiResult<Value> {
    let labels = LabelSelector::parse(query(q, "labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("unable to parse labelSelector: {e}")))?;
    let fields =
        match query(q, "fieldSelector") {
            None | Some("") => None,
            Some(s) => Some(FieldSelector::parse(s).map_err(|e| {
                ApiError::bad_request(format!("unable to parse fieldSelector: {e}"))
            })?),
        };
    if query(q, "watch").is_some_and(|w| w == "true" || w == "1") {
        return Err(ApiError::method_not_allowed("watch is not supported on metrics.k8s.io"));
    }
    match rest {
        [] => {
            let mut g = group();
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            Ok(g)
        }
        [VERSION] => Ok(resource_list()),
        [VERSION, "pods"] => pod_list(api, nodes, None, None, &labels, fields.as_ref()).await,
        [VERSION, "namespaces", ns, "pods"] => {
            pod_list(api, nodes, Some(ns), None, &labels, fields.as_ref()).await
        }
        [VERSION, "namespaces", ns, "pods", name] => {
            let list = pod_list(api, nodes, Some(ns), Some(name), &labels, None).await?;
            list["items"]
                .get(0)
                .cloned()
                .ok_or_else(|| not_found("podmetrics", &format!("{ns}/{name}")))
        }
        [VERSION, "nodes"] => node_list(api, nodes, None, &labels, fields.as_ref()).await,
        [VERSION, "nodes", name] => {
            let list = node_list(api, nodes, Some(name), &labels, None).await?;
            list["items"].get(0).cloned().ok_or_else(|| not_found("nodemetrics", name))
        }
        _ => Err(ApiError::page_not_found()),
    }
}

fn not_found(plural: &str, name: &str) -> ApiError {
    ApiError::new(404, "NotFound", format!("{plural}.{GROUP} \"{name}\" not found"))
}

/// The stored objects of a core resource in `ns`, selected by labels.
fn list_core(api: &Api, plural: &str, ns: Option<&str>, labels: &LabelSelector) -> Vec<Value> {
    let Some(res) = api.registry.get("", "v1", plural) else { return vec![] };
    let opts = ListOptions {
        label_selector: labels.clone(),
        field_selector: None,
        limit: None,
        continue_token: None,
    };
    match api.list(&res, ns, &opts) {
        Ok(page) => page.items.iter().map(|s| s.value()).collect(),
        Err(_) => vec![],
    }
}

fn str_at<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

/// The summaries of `names`, fetched concurrently; unreachable nodes are left out.
async fn summaries(
    api: &Api,
    client: &NodeClient,
    names: impl IntoIterator<Item = String>,
) -> HashMap<String, Value> {
    let all: HashMap<String, Value> = list_core(api, "nodes", None, &LabelSelector::default())
        .into_iter()
        .map(|n| (str_at(&n, "/metadata/name").to_owned(), n))
        .collect();
    let calls = names.into_iter().filter_map(|name| {
        let node = all.get(&name)?.clone();
        Some(async move {
            match fetch_summary(client, &node).await {
                Ok(s) => Some((name, s)),
                Err(e) => {
                    tracing::debug!(node = %name, error = %e, "resource metrics: node summary failed");
                    None
                }
            }
        })
    });
    futures::future::join_all(calls).await.into_iter().flatten().collect()
}

/// `GET /stats/summary` on the node's kubelet API.
async fn fetch_summary(client: &NodeClient, node: &Value) -> Result<Value, String> {
    let addr = crate::logs::kubelet_address(node)?;
    let ip = addr.ip();
    let call = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let tls = client
            .tls
            .connect(ServerName::IpAddress(ip.into()), tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::get("/stats/summary")
            .header(header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        if resp.status() != StatusCode::OK {
            return Err(format!("status {}", resp.status()));
        }
        let body = Limited::new(resp.into_body(), MAX_SUMMARY)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        serde_json::from_slice::<Value>(&body).map_err(|e| e.to_string())
    };
    tokio::time::timeout(NODE_TIMEOUT, call).await.map_err(|_| "timed out".to_owned())?
}

/// A CPU quantity from nanocores (metrics-server: a quantity scaled by 10⁻⁹).
pub fn cpu_quantity(nano: u64) -> String {
    if nano.is_multiple_of(1_000_000) {
        if nano.is_multiple_of(1_000_000_000) {
            return (nano / 1_000_000_000).to_string();
        }
        return format!("{}m", nano / 1_000_000);
    }
    format!("{nano}n")
}

/// A memory quantity from bytes (metrics-server: binary SI).
pub fn memory_quantity(bytes: u64) -> String {
    if bytes > 0 && bytes.is_multiple_of(1024) {
        format!("{}Ki", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

fn usage(stats: &Value) -> Option<Value> {
    let cpu = stats.pointer("/cpu/usageNanoCores")?.as_u64()?;
    let mem = stats.pointer("/memory/workingSetBytes")?.as_u64()?;
    Some(json!({"cpu": cpu_quantity(cpu), "memory": memory_quantity(mem)}))
}

fn now() -> String {
    let t = jiff::Timestamp::now();
    jiff::Timestamp::from_second(t.as_second()).unwrap_or(t).to_string()
}

fn metadata(obj: &Value, namespaced: bool) -> Value {
    let mut m = json!({"name": str_at(obj, "/metadata/name"), "creationTimestamp": now()});
    if namespaced {
        m["namespace"] = json!(str_at(obj, "/metadata/namespace"));
    }
    if let Some(l) = obj.pointer("/metadata/labels").filter(|l| l.is_object()) {
        m["labels"] = l.clone();
    }
    m
}

async fn pod_list(
    api: &Api,
    nodes: &NodeClient,
    ns: Option<&str>,
    name: Option<&str>,
    labels: &LabelSelector,
    fields: Option<&FieldSelector>,
) -> ApiResult<Value> {
    let pods: Vec<Value> = list_core(api, "pods", ns, labels)
        .into_iter()
        .filter(|p| name.is_none_or(|n| str_at(p, "/metadata/name") == n))
        .filter(|p| fields.is_none_or(|f| f.matches(p)))
        .filter(|p| !str_at(p, "/spec/nodeName").is_empty())
        .filter(|p| str_at(p, "/status/phase") == "Running")
        .collect();
    let wanted: std::collections::BTreeSet<String> =
        pods.iter().map(|p| str_at(p, "/spec/nodeName").to_owned()).collect();
    let sums = summaries(api, nodes, wanted).await;
    // (namespace, name, uid) → the pod's summary entry.
    let mut by_pod: BTreeMap<(&str, &str, &str), &Value> = BTreeMap::new();
    for s in sums.values() {
        for p in s.get("pods").and_then(Value::as_array).into_iter().flatten() {
            by_pod.insert(
                (
                    str_at(p, "/podRef/namespace"),
                    str_at(p, "/podRef/name"),
                    str_at(p, "/podRef/uid"),
                ),
                p,
            );
        }
    }
    let mut items = Vec::new();
    for pod in &pods {
        let key = (
            str_at(pod, "/metadata/namespace"),
            str_at(pod, "/metadata/name"),
            str_at(pod, "/metadata/uid"),
        );
        let Some(s) = by_pod.get(&key) else { continue };
        let cs: Option<Vec<Value>> = s
            .get("containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| Some(json!({"name": c.get("name")?, "usage": usage(c)?})))
            .collect();
        let Some(containers) = cs.filter(|c| !c.is_empty()) else { continue };
        let time = s.pointer("/cpu/time").cloned().unwrap_or_else(|| json!(now()));
        items.push(json!({
            "kind": "PodMetrics",
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "metadata": metadata(pod, true),
            "timestamp": time,
            "window": WINDOW,
            "containers": containers,
        }));
    }
    Ok(json!({"kind": "PodMetricsList", "apiVersion": format!("{GROUP}/{VERSION}"),
              "metadata": {}, "items": items}))
}

async fn node_list(
    api: &Api,
    client: &NodeClient,
    name: Option<&str>,
    labels: &LabelSelector,
    fields: Option<&FieldSelector>,
) -> ApiResult<Value> {
    let nodes: Vec<Value> = list_core(api, "nodes", None, labels)
        .into_iter()
        .filter(|n| name.is_none_or(|x| str_at(n, "/metadata/name") == x))
        .filter(|n| fields.is_none_or(|f| f.matches(n)))
        .collect();
    let names: Vec<String> = nodes.iter().map(|n| str_at(n, "/metadata/name").to_owned()).collect();
    let sums = summaries(api, client, names).await;
    let mut items = Vec::new();
    for n in &nodes {
        let Some(s) = sums.get(str_at(n, "/metadata/name")) else { continue };
        let Some(u) = s.get("node").and_then(usage) else { continue };
        let time = s.pointer("/node/cpu/time").cloned().unwrap_or_else(|| json!(now()));
        items.push(json!({
            "kind": "NodeMetrics",
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "metadata": metadata(n, false),
            "timestamp": time,
            "window": WINDOW,
            "usage": u,
        }));
    }
    Ok(json!({"kind": "NodeMetricsList", "apiVersion": format!("{GROUP}/{VERSION}"),
              "metadata": {}, "items": items}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_as_metrics_server_writes_them() {
        assert_eq!(cpu_quantity(1_000_000_000), "1");
        assert_eq!(cpu_quantity(250_000_000), "250m");
        assert_eq!(cpu_quantity(1_234_567), "1234567n");
        assert_eq!(memory_quantity(4096), "4Ki");
        assert_eq!(memory_quantity(1000), "1000");
        assert_eq!(memory_quantity(0), "0");
    }

    #[test]
    fn usage_needs_cpu_rate_and_memory() {
        let c =
            json!({"cpu": {"usageNanoCores": 500_000_000u64}, "memory": {"workingSetBytes": 2048}});
        assert_eq!(usage(&c), Some(json!({"cpu": "500m", "memory": "2Ki"})));
        assert_eq!(usage(&json!({"cpu": {"usageCoreNanoSeconds": 5}, "memory": {}})), None);
    }
}
