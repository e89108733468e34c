//! The Endpoints and EndpointSlice controllers: ready and not-ready pods, named target ports,
//! terminating and deleted pods, publishNotReadyAddresses, and no writes without changes.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};

use super::kubelet::set_status;
use super::{Env, eventually};

fn pod_yaml(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: ep
spec:
  nodeName: {node}
  containers:
  - name: web
    image: busybox:1
    ports:
    - name: http
      containerPort: 8080
"
    )
}

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
  labels:
    team: a
spec:
  selector:
    app: ep
  ports:
  - name: http
    port: 80
    targetPort: http
";

/// The Endpoints subsets as (ready IPs, not-ready IPs, ports), compactly.
async fn endpoints_view(client: &Client, name: &str) -> Result<Value, String> {
    let api: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let ep = api.get_opt(name).await.map_err(|e| e.to_string())?.ok_or("no endpoints")?;
    let subsets: Vec<Value> = ep
        .subsets
        .iter()
        .flatten()
        .map(|s| {
            let ips = |a: &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>| {
                a.iter().flatten().map(|a| a.ip.clone()).collect::<Vec<_>>()
            };
            let ports: Vec<Value> =
                s.ports.iter().flatten().map(|p| json!([p.name, p.port, p.protocol])).collect();
            json!({"ready": ips(&s.addresses), "notReady": ips(&s.not_ready_addresses), "ports": ports})
        })
        .collect();
    Ok(json!(subsets))
}

async fn slices(client: &Client, svc: &str) -> Vec<EndpointSlice> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    api.list(&ListParams::default().labels(&format!("kubernetes.io/service-name={svc}")))
        .await
        .unwrap()
        .items
}

/// The endpoints of the Service's slices as (ip, ready, serving, terminating, pod, node).
async fn slice_view(client: &Client, svc: &str) -> Value {
    let mut eps: Vec<Value> = slices(client, svc)
        .await
        .iter()
        .flat_map(|s| s.endpoints.clone())
        .map(|e| {
            let c = e.conditions.unwrap_or_default();
            json!([
                e.addresses[0],
                c.ready,
                c.serving,
                c.terminating,
                e.target_ref.and_then(|r| r.name),
                e.node_name
            ])
        })
        .collect();
    eps.sort_by_key(|v| v[0].as_str().unwrap_or_default().to_owned());
    json!(eps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_slices_follow_pod_readiness_and_deletion() {
    let env = Env::start().await;
    env.apply(SERVICE).await;
    for name in ["a", "b", "c"] {
        env.apply(&pod_yaml(name, "node-1")).await;
    }
    let client = &env.client;
    set_status(client, "default", "a", "10.1.0.1", true).await;
    set_status(client, "default", "b", "10.1.0.2", false).await;
    // "c" has no IP yet: no endpoint.
    let want = json!([{"ready": ["10.1.0.1"], "notReady": ["10.1.0.2"], "ports": [["http", 8080, "TCP"]]}]);
    eventually("endpoints", || async {
        let v = endpoints_view(client, "web").await?;
        if v == want { Ok(()) } else { Err(v.to_string()) }
    })
    .await;
    let ep = Api::<Endpoints>::namespaced(client.clone(), "default").get("web").await.unwrap();
    assert_eq!(ep.labels().get("team").map(String::as_str), Some("a"));
    let address = &ep.subsets.as_ref().unwrap()[0].addresses.as_ref().unwrap()[0];
    assert_eq!(address.node_name.as_deref(), Some("node-1"));
    let target = address.target_ref.as_ref().unwrap();
    assert_eq!((target.kind.as_deref(), target.name.as_deref()), (Some("Pod"), Some("a")));

    let want_slices = json!([
        ["10.1.0.1", true, true, false, "a", "node-1"],
        ["10.1.0.2", false, false, false, "b", "node-1"],
    ]);
    eventually("endpointslices", || async {
        let v = slice_view(client, "web").await;
        if v == want_slices { Ok(()) } else { Err(v.to_string()) }
    })
    .await;
    let list = slices(client, "web").await;
    assert_eq!(list.len(), 1);
    let slice = &list[0];
    assert_eq!(slice.address_type, "IPv4");
    assert!(slice.name_any().starts_with("web-"));
    let labels = slice.labels();
    assert_eq!(labels["endpointslice.kubernetes.io/managed-by"], "endpointslice-controller.k8s.io");
    assert_eq!(labels["team"], "a");
    assert!(!labels.contains_key("service.kubernetes.io/headless"), "the service has a ClusterIP");
    let ports = slice.ports.as_ref().unwrap();
    assert_eq!(
        (ports[0].name.as_deref(), ports[0].port, ports[0].protocol.as_deref()),
        (Some("http"), Some(8080), Some("TCP"))
    );
    let owner = &slice.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Service", "web", Some(true))
    );

    // No change, no write: touching the Service and a pod resyncs both controllers.
    let rv = |client: Client| async move {
        let ep = Api::<Endpoints>::namespaced(client.clone(), "default").get("web").await.unwrap();
        let slices = slices(&client, "web").await;
        (ep.resource_version(), slices.iter().map(|s| s.resource_version()).collect::<Vec<_>>())
    };
    let before = rv(client.clone()).await;
    env.take_writes();
    env.kubectl(&["annotate", "service", "web", "touched=1"]).await;
    env.kubectl(&["annotate", "pod", "a", "touched=1"]).await;
    // A barrier in another namespace: both controllers resynced "web" before they finish a
    // Service created after the touches.
    env.kubectl(&["create", "namespace", "barrier"]).await;
    let barrier = format!("{}---\n{}", pod_yaml("bp", "node-1"), SERVICE);
    env.server.kubectl_stdin_ok(&["-n", "barrier", "apply", "-f", "-"], &barrier).await.unwrap();
    set_status(client, "barrier", "bp", "10.1.9.9", true).await;
    eventually("the barrier's endpoints and slice", || async {
        let ep =
            Api::<Endpoints>::namespaced(client.clone(), "barrier").get_opt("web").await.unwrap();
        let slices = Api::<EndpointSlice>::namespaced(client.clone(), "barrier")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        let ep_ok = ep.is_some_and(|e| e.subsets.is_some());
        if ep_ok && slices.iter().any(|s| !s.endpoints.is_empty()) {
            Ok(())
        } else {
            Err(format!("{slices:?}"))
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let writes = env.take_writes();
    assert!(writes.iter().any(|w| w.contains("/namespaces/barrier/")), "{writes:?}");
    let in_default: Vec<&String> =
        writes.iter().filter(|w| w.contains("/namespaces/default/")).collect();
    assert!(in_default.is_empty(), "writes for unchanged endpoints: {in_default:?}");
    assert_eq!(rv(client.clone()).await, before, "unchanged endpoints were rewritten");

    // A terminating pod leaves Endpoints, and stays in the slice as terminating.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.delete("a", &DeleteParams::default()).await.unwrap();
    eventually("a terminating", || async {
        let v = endpoints_view(client, "web").await?;
        let want =
            json!([{"ready": [], "notReady": ["10.1.0.2"], "ports": [["http", 8080, "TCP"]]}]);
        if v == want { Ok(()) } else { Err(v.to_string()) }
    })
    .await;
    eventually("a terminating in the slice", || async {
        let v = slice_view(client, "web").await;
        let want = json!([
            ["10.1.0.1", false, true, true, "a", "node-1"],
            ["10.1.0.2", false, false, false, "b", "node-1"],
        ]);
        if v == want { Ok(()) } else { Err(v.to_string()) }
    })
    .await;
    // Gone for good (the kubelet's final delete), and b becomes ready.
    pods.delete("a", &DeleteParams::default().grace_period(0)).await.unwrap();
    set_status(client, "default", "b", "10.1.0.2", true).await;
    eventually("a removed, b ready", || async {
        let v = slice_view(client, "web").await;
        let want = json!([["10.1.0.2", true, true, false, "b", "node-1"]]);
        let e = endpoints_view(client, "web").await?;
        let want_e =
            json!([{"ready": ["10.1.0.2"], "notReady": [], "ports": [["http", 8080, "TCP"]]}]);
        if v == want && e == want_e { Ok(()) } else { Err(format!("{v} {e}")) }
    })
    .await;

    // Deleting the Service deletes its Endpoints.
    env.kubectl(&["delete", "service", "web"]).await;
    eventually("endpoints deleted", || async {
        match endpoints_view(client, "web").await {
            Err(e) if e == "no endpoints" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_not_ready_addresses_and_placeholder_slice() {
    let env = Env::start().await;
    let client = &env.client;
    env.apply(
        &SERVICE
            .replace("name: web\n", "name: pub\n")
            .replace("spec:\n", "spec:\n  publishNotReadyAddresses: true\n"),
    )
    .await;
    // No pods yet: an empty placeholder slice, and an Endpoints without subsets.
    eventually("placeholder slice", || async {
        let list = slices(client, "pub").await;
        match list.as_slice() {
            [s] if s.endpoints.is_empty() && s.ports.as_ref().is_none_or(Vec::is_empty) => Ok(()),
            _ => Err(format!("{list:?}")),
        }
    })
    .await;
    eventually("empty endpoints", || async {
        let v = endpoints_view(client, "pub").await?;
        if v == json!([]) { Ok(()) } else { Err(v.to_string()) }
    })
    .await;
    env.apply(&pod_yaml("np", "node-1")).await;
    set_status(client, "default", "np", "10.2.0.1", false).await;
    eventually("not-ready pod published", || async {
        let v = endpoints_view(client, "pub").await?;
        let want =
            json!([{"ready": ["10.2.0.1"], "notReady": [], "ports": [["http", 8080, "TCP"]]}]);
        if v == want { Ok(()) } else { Err(v.to_string()) }
    })
    .await;
    eventually("slice ready despite not serving", || async {
        let v = slice_view(client, "pub").await;
        let want = json!([["10.2.0.1", true, false, false, "np", "node-1"]]);
        if v == want && slices(client, "pub").await.len() == 1 {
            Ok(())
        } else {
            Err(v.to_string())
        }
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_services_and_user_managed_endpoints() {
    let env = Env::start().await;
    let client = &env.client;
    // A headless Service without ports still publishes its addresses.
    env.apply(
        "apiVersion: v1
kind: Service
metadata:
  name: hl
spec:
  clusterIP: None
  selector:
    app: ep
",
    )
    .await;
    // A Service without a selector: its Endpoints belong to the user.
    env.apply(
        "apiVersion: v1
kind: Service
metadata:
  name: manual
spec:
  ports:
  - port: 5432
---
apiVersion: v1
kind: Endpoints
metadata:
  name: manual
subsets:
- addresses:
  - ip: 192.0.2.10
  ports:
  - port: 5432
",
    )
    .await;
    env.apply(&pod_yaml("h1", "node-1")).await;
    set_status(client, "default", "h1", "10.3.0.1", true).await;
    eventually("headless endpoints", || async {
        let v = endpoints_view(client, "hl").await?;
        let want = json!([{"ready": ["10.3.0.1"], "notReady": [], "ports": []}]);
        if v == want { Ok(()) } else { Err(v.to_string()) }
    })
    .await;
    let ep = Api::<Endpoints>::namespaced(client.clone(), "default").get("hl").await.unwrap();
    assert_eq!(ep.labels().get("service.kubernetes.io/headless").map(String::as_str), Some(""));
    eventually("headless slice", || async {
        let list = slices(client, "hl").await;
        let ok = list.len() == 1
            && list[0].labels().contains_key("service.kubernetes.io/headless")
            && list[0].endpoints.len() == 1;
        if ok { Ok(()) } else { Err(format!("{list:?}")) }
    })
    .await;
    // The controllers leave the selector-less Service's Endpoints alone and make no slices
    // (they handled "manual" before "h1", whose endpoints are there).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let v = endpoints_view(client, "manual").await.unwrap();
    // (Only IP and port: the server does not default an Endpoints port's protocol to TCP.)
    assert_eq!(v[0]["ready"], json!(["192.0.2.10"]));
    assert_eq!(v[0]["ports"][0][1], json!(5432));
    assert_eq!(v.as_array().map(Vec::len), Some(1));
    assert!(slices(client, "manual").await.is_empty());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_left_over_from_a_deleted_service_are_deleted_at_start() {
    let mut env = Env::bare().await;
    // Left over: its Service was deleted while no controller ran.
    env.apply(
        "apiVersion: v1
kind: Endpoints
metadata:
  name: leftover
subsets:
- addresses:
  - ip: 192.0.2.20
",
    )
    .await;
    env.apply(
        "apiVersion: v1
kind: Endpoints
metadata:
  name: lock
  annotations:
    control-plane.alpha.kubernetes.io/leader: '{}'
",
    )
    .await;
    env.start_controllers();
    eventually("leftover endpoints deleted", || async {
        match endpoints_view(&env.client, "leftover").await {
            Err(e) if e == "no endpoints" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let api: Api<Endpoints> = Api::namespaced(env.client.clone(), "default");
    assert!(api.get_opt("lock").await.unwrap().is_some(), "leader-election locks are kept");
    env.stop().await;
}

/// Regression for the move onto kube-runtime, whose triggers see only an object's new version:
/// a pod relabelled away from a Service must still leave that Service's Endpoints and slices
/// (upstream's update handler queues the Services of the old labels too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relabelled_pod_leaves_the_endpoints_and_slices_of_the_service_that_selected_it() {
    let env = Env::start().await;
    env.apply(SERVICE).await;
    for name in ["a", "b"] {
        env.apply(&pod_yaml(name, "node-1")).await;
    }
    let client = &env.client;
    set_status(client, "default", "a", "10.1.0.1", true).await;
    set_status(client, "default", "b", "10.1.0.2", true).await;
    eventually("both pods in the endpoints", || async {
        let v = endpoints_view(client, "web").await?;
        let want = json!([{"ready": ["10.1.0.1", "10.1.0.2"], "notReady": [], "ports": [["http", 8080, "TCP"]]}]);
        if v == want { Ok(()) } else { Err(v.to_string()) }
    })
    .await;
    env.kubectl(&["label", "pod", "b", "app=other", "--overwrite"]).await;
    eventually("b gone from the endpoints and the slice", || async {
        let e = endpoints_view(client, "web").await?;
        let want_e =
            json!([{"ready": ["10.1.0.1"], "notReady": [], "ports": [["http", 8080, "TCP"]]}]);
        let v = slice_view(client, "web").await;
        let want = json!([["10.1.0.1", true, true, false, "a", "node-1"]]);
        if e == want_e && v == want { Ok(()) } else { Err(format!("{e} {v}")) }
    })
    .await;
    env.stop().await;
}
