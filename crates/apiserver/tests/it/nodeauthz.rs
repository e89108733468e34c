//! The Node authoriser and NodeRestriction through real clients: a node agent's identity
//! (`system:node:NAME` in `system:nodes`, a client certificate of the cluster CA) reaches its own
//! pods and what they reference, and nothing of another node's, with upstream's 403 messages.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kinetic_testkit::TestServer;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

const OBJECTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: v1
kind: Secret
metadata: {name: mine, namespace: team}
stringData: {k: v}
---
apiVersion: v1
kind: Secret
metadata: {name: theirs, namespace: team}
stringData: {k: v}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: team}
spec:
  nodeName: n1
  automountServiceAccountToken: false
  volumes: [{name: s, secret: {secretName: mine}}]
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: p2, namespace: team}
spec:
  nodeName: n2
  automountServiceAccountToken: false
  volumes: [{name: s, secret: {secretName: theirs}}]
  containers: [{name: c, image: busybox}]
"#;

/// Runs kubectl with `kubeconfig` and returns (success, stdout, stderr).
async fn kubectl_as(
    t: &TestServer,
    kubeconfig: &std::path::Path,
    args: &[&str],
) -> (bool, String, String) {
    let out = kinetic_testkit::kubectl(kubeconfig, &t.data_dir(), args, None).await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn forbidden(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => s.message,
        other => panic!("expected 403, got {other:?}"),
    }
}

#[tokio::test]
async fn a_node_cannot_read_another_nodes_pod_or_a_secret_its_pods_do_not_reference() {
    let t = TestServer::start().await.unwrap();
    t.kubectl_stdin_ok(&["apply", "-f", "-"], OBJECTS).await.unwrap();
    let kc = t.server().client_kubeconfig("system:node:n1", &["system:nodes"]).unwrap();
    let n1 = t.data_dir().join("n1.kubeconfig");
    std::fs::write(&n1, kc).unwrap();

    let (ok, out, err) =
        kubectl_as(&t, &n1, &["get", "pod", "p1", "-n", "team", "-o", "name"]).await;
    assert!(ok && out.trim() == "pod/p1", "{err}");
    let (ok, _, err) = kubectl_as(&t, &n1, &["get", "pod", "p2", "-n", "team"]).await;
    assert!(!ok);
    assert!(
        err.contains(
            "Error from server (Forbidden): pods \"p2\" is forbidden: User \"system:node:n1\" cannot get resource \"pods\" in API group \"\" in the namespace \"team\": no relationship found between node 'n1' and this object"
        ),
        "{err}"
    );
    let (ok, _, err) = kubectl_as(&t, &n1, &["get", "secret", "mine", "-n", "team"]).await;
    assert!(ok, "{err}");
    let (ok, _, err) = kubectl_as(&t, &n1, &["get", "secret", "theirs", "-n", "team"]).await;
    assert!(!ok);
    assert!(
        err.contains(
            "secrets \"theirs\" is forbidden: User \"system:node:n1\" cannot get resource \"secrets\" in API group \"\" in the namespace \"team\": no relationship found between node 'n1' and this object"
        ),
        "{err}"
    );
    // Lists: pods only with the node's own field selector, nodes only its own.
    let (ok, _, err) = kubectl_as(&t, &n1, &["get", "pods", "-n", "team"]).await;
    assert!(
        !ok && err.contains("can only list/watch pods with spec.nodeName field selector"),
        "{err}"
    );
    let (ok, out, err) = kubectl_as(
        &t,
        &n1,
        &["get", "pods", "-A", "--field-selector", "spec.nodeName=n1", "-o", "name"],
    )
    .await;
    assert!(ok && out.trim() == "pod/p1", "{out} {err}");
    let (ok, _, err) = kubectl_as(&t, &n1, &["get", "nodes"]).await;
    assert!(
        !ok && err.contains("node 'n1' cannot read all nodes, only its own Node object"),
        "{err}"
    );

    // Writes: the status of its own pods only, never their spec; its own Node and Lease.
    let client = kinetic_testkit::client_from_kubeconfig(&n1).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "team");
    let status = Patch::Merge(json!({"status": {"message": "seen"}}));
    pods.patch_status("p1", &PatchParams::default(), &status).await.unwrap();
    let e = pods.patch_status("p2", &PatchParams::default(), &status).await.unwrap_err();
    assert!(forbidden(e).contains(
        "node \"n1\" can only update pod status for pods with spec.nodeName set to itself"
    ),);
    let labels = Patch::Merge(json!({"metadata": {"labels": {"seen": "yes"}}}));
    pods.patch("p1", &PatchParams::default(), &labels).await.unwrap();
    let image = Patch::Merge(json!({"spec": {"containers": [{"name": "c", "image": "evil"}]}}));
    let e = pods.patch("p1", &PatchParams::default(), &image).await.unwrap_err();
    assert!(forbidden(e).contains("can only change the metadata and status of its pods"));
    let e = pods.delete("p2", &Default::default()).await.unwrap_err();
    assert!(
        forbidden(e).contains("node 'n1' can only delete pods with spec.nodeName set to itself")
    );

    let nodes: Api<Node> = Api::all(client.clone());
    let node =
        |name: &str| serde_json::from_value::<Node>(json!({"metadata": {"name": name}})).unwrap();
    nodes.create(&PostParams::default(), &node("n1")).await.unwrap();
    let e = nodes.create(&PostParams::default(), &node("n2")).await.unwrap_err();
    assert!(forbidden(e).contains("node \"n1\" is not allowed to modify node \"n2\""));
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let lease =
        |name: &str| serde_json::from_value::<Lease>(json!({"metadata": {"name": name}})).unwrap();
    leases.create(&PostParams::default(), &lease("n1")).await.unwrap();
    let e = leases.create(&PostParams::default(), &lease("n2")).await.unwrap_err();
    assert!(forbidden(e).contains("can only access node lease with the same name"));

    // `kubectl auth can-i` asks the same chain.
    let (_, out, _) =
        kubectl_as(&t, &n1, &["auth", "can-i", "get", "secret/theirs", "-n", "team"]).await;
    // kubectl prints the authoriser's reason after the answer, as against kube-apiserver.
    assert_eq!(out.trim(), "no - no relationship found between node 'n1' and this object");
    let (_, out, _) =
        kubectl_as(&t, &n1, &["auth", "can-i", "get", "secret/mine", "-n", "team"]).await;
    assert_eq!(out.trim(), "yes");
}
