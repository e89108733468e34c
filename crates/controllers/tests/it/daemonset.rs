//! The DaemonSet controller against the embedded API server, with Node objects and no node
//! agent (pods stay Pending, pinned by node affinity): OpenKruise's preDelete hook holds a
//! daemon pod in `PreparingDelete` until the hook's label is removed, and a node deleted takes
//! its daemon pod with it.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kinetic_api::kruise::daemonset::DaemonSet;
use kinetic_testkit::TestServer;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::oneshot;

async fn node(client: &kube::Client, name: &str, labels: serde_json::Value) {
    let n: Node =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    Api::<Node>::all(client.clone()).create(&PostParams::default(), &n).await.unwrap();
}

/// Polls the pods labelled `app=hooked` until `pred` holds.
async fn wait_pods(pods: &Api<Pod>, what: &str, pred: impl Fn(&[Pod]) -> bool) -> Vec<Pod> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = pods.list(&ListParams::default().labels("app=hooked")).await.unwrap().items;
        if pred(&list) {
            return list;
        }
        assert!(Instant::now() < deadline, "{what}: {list:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn node_of(p: &Pod) -> String {
    kinetic_controllers::daemonset::nodes::target_node(p).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advanced_daemonset_pre_delete_hook_holds_a_pod_until_its_label_goes() {
    let server = TestServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    kinetic_controllers::crds::install(&client, &kinetic_controllers::daemonset::crds())
        .await
        .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(kinetic_controllers::daemonset::run(client.clone(), async move {
        let _ = stopped.await;
    }));
    node(&client, "n1", json!({"pool": "a"})).await;
    node(&client, "n2", json!({"pool": "a"})).await;
    let ds: DaemonSet = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1alpha1", "kind": "DaemonSet",
        "metadata": {"name": "hooked", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "hooked"}},
            "template": {"metadata": {"labels": {"app": "hooked", "example.io/block": "true"}},
                         "spec": {"nodeSelector": {"pool": "a"},
                                  "containers": [{"name": "c", "image": "busybox"}]}},
            "lifecycle": {"preDelete": {"labelsHandler": {"example.io/block": "true"}}},
        },
    }))
    .unwrap();
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &ds).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let created = wait_pods(&pods, "one pod per node", |l| {
        let mut nodes: Vec<String> = l.iter().map(node_of).collect();
        nodes.sort();
        nodes == ["n1", "n2"]
    })
    .await;
    for p in &created {
        assert_eq!(p.labels()["lifecycle.apps.kruise.io/state"], "Normal");
    }

    // n1 leaves the pool: its pod is hooked, so it waits in PreparingDelete.
    let nodes: Api<Node> = Api::all(client.clone());
    let relabel = json!({"metadata": {"labels": {"pool": "b"}}});
    nodes.patch("n1", &PatchParams::default(), &Patch::Merge(relabel)).await.unwrap();
    let held = wait_pods(&pods, "PreparingDelete on n1", |l| {
        l.iter().any(|p| {
            node_of(p) == "n1"
                && p.labels().get("lifecycle.apps.kruise.io/state").map(String::as_str)
                    == Some("PreparingDelete")
        })
    })
    .await;
    let n1 = held.iter().find(|p| node_of(p) == "n1").unwrap();
    assert!(n1.metadata.deletion_timestamp.is_none(), "held by the hook");

    // The user's controller removes the hook label: the pod goes.
    let unhook = json!({"metadata": {"labels": {"example.io/block": null}}});
    pods.patch(&n1.name_any(), &PatchParams::default(), &Patch::Merge(unhook)).await.unwrap();
    wait_pods(&pods, "the n1 pod deleted", |l| {
        l.iter().all(|p| node_of(p) != "n1" || p.metadata.deletion_timestamp.is_some())
    })
    .await;
    let ds = api.get("hooked").await.unwrap();
    let status = ds.status.unwrap_or_default();
    assert_eq!(status.desired_number_scheduled, 1);

    // A node deleted takes its daemon pod with it.
    nodes.delete("n2", &DeleteParams::default()).await.unwrap();
    wait_pods(&pods, "n2's pod held by the hook after its node went", |l| {
        l.iter().any(|p| {
            node_of(p) == "n2"
                && p.labels().get("lifecycle.apps.kruise.io/state").map(String::as_str)
                    == Some("PreparingDelete")
        })
    })
    .await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    server.shutdown().await;
}
