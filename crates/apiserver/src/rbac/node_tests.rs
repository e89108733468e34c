//! The Node authoriser over a real store, with upstream's cases
//! (`plugin/pkg/auth/authorizer/node/node_authorizer_test.go`: own pods and what they reference
//! allowed, other nodes' objects and unreferenced secrets not), and NodeRestriction's checks.

#![allow(clippy::unwrap_used)]

use serde_json::json;

use super::*;
use crate::store::Op;

fn node_user(name: &str) -> UserInfo {
    UserInfo {
        name: format!("{NODE_USER_PREFIX}{name}"),
        groups: vec![NODES_GROUP.to_owned(), crate::auth::AUTHENTICATED_GROUP.to_owned()],
        ..UserInfo::default()
    }
}

fn attrs(user: &UserInfo, verb: &str, resource: &str, ns: &str, name: &str) -> Attributes {
    let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
    let (group, resource) = resource.split_once(':').unwrap_or(("", resource));
    Attributes {
        user: user.clone(),
        verb: verb.into(),
        resource_request: true,
        api_group: group.into(),
        resource: resource.into(),
        subresource: sub.into(),
        namespace: ns.into(),
        name: name.into(),
        ..Attributes::default()
    }
}

async fn put(store: &Store, plural: &str, ns: &str, v: Value) {
    let name = v["metadata"]["name"].as_str().unwrap().to_owned();
    let key = ObjKey::new(&storage_key("", plural), ns, &name);
    store.write(Op::Create { key, value: v }).await.unwrap();
}

fn pod(name: &str, node: &str, secret: &str, cm: &str, claim: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": "ns"}, "spec": {
        "nodeName": node,
        "serviceAccountName": format!("sa-{name}"),
        "volumes": [
            {"name": "s", "secret": {"secretName": secret}},
            {"name": "c", "persistentVolumeClaim": {"claimName": claim}},
            {"name": "p", "projected": {"sources": [{"configMap": {"name": cm}}]}},
        ],
        "containers": [{"name": "c", "envFrom": [{"secretRef": {"name": format!("env-{secret}")}}]}],
    }})
}

async fn fixture() -> (tempfile::TempDir, Arc<NodeAuthorizer>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db"), 100).unwrap();
    put(&store, "pods", "ns", pod("p1", "n1", "s1", "cm1", "pvc1")).await;
    put(&store, "pods", "ns", pod("p2", "n2", "s2", "cm2", "pvc2")).await;
    for (claim, volume) in [("pvc1", "pv1"), ("pvc2", "pv2")] {
        put(
            &store,
            "persistentvolumeclaims",
            "ns",
            json!({"metadata": {"name": claim, "namespace": "ns"}, "spec": {"volumeName": volume}}),
        )
        .await;
    }
    (dir, NodeAuthorizer::new(store))
}

#[tokio::test]
async fn a_node_reaches_only_its_own_pods_and_what_they_reference() {
    let (_dir, authz) = fixture().await;
    let n1 = node_user("n1");
    let allowed = |verb: &str, res: &str, ns: &str, name: &str| {
        authz.authorize(&attrs(&n1, verb, res, ns, name)) == Decision::Allow
    };
    let cases: &[(&str, &str, &str, &str, bool)] = &[
        ("get", "pods", "ns", "p1", true),
        ("get", "pods", "ns", "p2", false),
        ("get", "secrets", "ns", "s1", true),
        ("get", "secrets", "ns", "env-s1", true),
        ("watch", "secrets", "ns", "s1", true),
        ("get", "secrets", "ns", "s2", false),
        ("list", "secrets", "ns", "", false),
        ("update", "secrets", "ns", "s1", false),
        ("get", "configmaps", "ns", "cm1", true),
        ("get", "configmaps", "ns", "cm2", false),
        ("get", "persistentvolumeclaims", "ns", "pvc1", true),
        ("get", "persistentvolumeclaims", "ns", "pvc2", false),
        ("patch", "persistentvolumeclaims/status", "ns", "pvc1", true),
        ("get", "persistentvolumes", "", "pv1", true),
        ("get", "persistentvolumes", "", "pv2", false),
        ("create", "serviceaccounts/token", "ns", "sa-p1", true),
        ("create", "serviceaccounts/token", "ns", "sa-p2", false),
        ("get", "serviceaccounts", "ns", "sa-p1", false),
        ("patch", "pods/status", "ns", "p1", true),
        ("patch", "pods", "ns", "p1", true),
        ("patch", "pods", "ns", "p2", false),
        ("delete", "pods", "ns", "p1", true),
        ("delete", "pods", "ns", "p2", false),
        ("create", "pods/eviction", "ns", "p2", false),
        ("get", "nodes", "", "n1", true),
        ("get", "nodes", "", "n2", false),
        ("list", "nodes", "", "", false),
        ("patch", "nodes/status", "", "n1", true),
        ("get", "coordination.k8s.io:leases", "kube-node-lease", "n1", true),
        ("update", "coordination.k8s.io:leases", "kube-node-lease", "n2", false),
        ("get", "coordination.k8s.io:leases", "default", "n1", false),
        ("create", "events", "ns", "", true),
        ("create", "authentication.k8s.io:tokenreviews", "", "", true),
        ("list", "services", "", "", true),
        ("get", "apps:deployments", "ns", "d", false),
    ];
    for (verb, res, ns, name, want) in cases {
        assert_eq!(allowed(verb, res, ns, name), *want, "{verb} {res} {ns}/{name}");
    }
}

#[tokio::test]
async fn pods_are_listed_only_with_the_nodes_own_field_selector() {
    let (_dir, authz) = fixture().await;
    let n1 = node_user("n1");
    let mut a = attrs(&n1, "watch", "pods", "", "");
    assert_eq!(
        authz.authorize(&a),
        Decision::NoOpinion("can only list/watch pods with spec.nodeName field selector".into())
    );
    a.field_selector = "spec.nodeName=n2".into();
    assert_ne!(authz.authorize(&a), Decision::Allow);
    a.field_selector = "status.phase!=Failed,spec.nodeName=n1".into();
    assert_eq!(authz.authorize(&a), Decision::Allow);
    a.field_selector = "spec.nodeName!=n1".into();
    assert_ne!(authz.authorize(&a), Decision::Allow);
}

#[tokio::test]
async fn refusals_carry_upstreams_reasons_and_other_users_get_no_opinion() {
    let (_dir, authz) = fixture().await;
    let n1 = node_user("n1");
    assert_eq!(
        authz.authorize(&attrs(&n1, "get", "secrets", "ns", "s2")),
        Decision::NoOpinion("no relationship found between node 'n1' and this object".into())
    );
    assert_eq!(
        authz.authorize(&attrs(&n1, "list", "nodes", "", "")),
        Decision::NoOpinion("node 'n1' cannot read all nodes, only its own Node object".into())
    );
    // Not a node: the name alone, or the group alone, is not enough.
    let mut alice = node_user("n1");
    alice.groups.clear();
    assert_eq!(node_identity(&alice), None);
    assert_eq!(
        authz.authorize(&attrs(&alice, "get", "pods", "ns", "p1")),
        Decision::NoOpinion(String::new())
    );
    let nameless = UserInfo { name: "system:node:".into(), ..node_user("") };
    assert_eq!(
        authz.authorize(&attrs(&nameless, "get", "nodes", "", "")),
        Decision::NoOpinion("unknown node for user \"system:node:\"".into())
    );
}

#[test]
fn node_restriction_keeps_nodes_to_their_own_objects() {
    let n1 = node_user("n1");
    let p1 = pod("p1", "n1", "s", "c", "v");
    let p2 = pod("p2", "n2", "s", "c", "v");
    let admit = |plural: &str, group: &str, obj: &Value, old: Option<&Value>| {
        admit(&n1, group, plural, obj, old)
    };
    assert!(admit("pods", "", &p1, None).unwrap_err().contains("can only create mirror pods"));
    let mut mirror = p1.clone();
    mirror["metadata"]["annotations"] = json!({MIRROR_ANNOTATION: "x"});
    assert_eq!(admit("pods", "", &mirror, None), Ok(()));
    let mut labelled = p1.clone();
    labelled["metadata"]["labels"] = json!({"a": "b"});
    assert_eq!(admit("pods", "", &labelled, Some(&p1)), Ok(()));
    let mut respec = p1.clone();
    respec["spec"]["containers"][0]["image"] = json!("evil");
    assert!(admit("pods", "", &respec, Some(&p1)).is_err());
    assert!(admit("pods", "", &p2, Some(&p2)).unwrap_err().contains("spec.nodeName set to itself"));
    let node = |n: &str| json!({"metadata": {"name": n}});
    assert_eq!(admit("nodes", "", &node("n1"), None), Ok(()));
    assert_eq!(
        admit("nodes", "", &node("n2"), Some(&node("n2"))),
        Err("node \"n1\" is not allowed to modify node \"n2\"".into())
    );
    assert!(admit("leases", "coordination.k8s.io", &node("n2"), None).is_err());
    assert_eq!(admit("leases", "coordination.k8s.io", &node("n1"), None), Ok(()));
    // Anyone else is not this plugin's business.
    assert_eq!(super::admit(&UserInfo::admin(), "", "pods", &p2, None), Ok(()));
}

#[test]
fn pod_references_follow_upstreams_graph_populator() {
    let p = json!({"metadata": {"name": "p"}, "spec": {
        "imagePullSecrets": [{"name": "pull"}],
        "volumes": [{"name": "e", "ephemeral": {"volumeClaimTemplate": {}}}],
        "initContainers": [{"name": "i", "env": [
            {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}},
            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "k"}}},
        ]}],
    }});
    let r = pod_refs(&p);
    assert_eq!(r.secrets, BTreeSet::from(["pull".to_owned(), "sec".to_owned()]));
    assert_eq!(r.config_maps, BTreeSet::from(["cfg".to_owned()]));
    assert_eq!(r.claims, BTreeSet::from(["p-e".to_owned()]));
    assert_eq!(r.service_account, "default");
}

#[tokio::test]
async fn a_node_gets_tokens_only_bound_to_its_own_pods() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db"), 100).unwrap();
    for (name, node) in [("p1", "n1"), ("p2", "n2")] {
        let mut p = pod(name, node, "s", "c", "v");
        p["metadata"]["uid"] = json!(format!("uid-{name}"));
        put(&store, "pods", "ns", p).await;
    }
    let n1 = node_user("n1");
    let req = |name: &str, uid: &str| json!({"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": name, "uid": uid}}});
    assert!(admit_token(&n1, &store, "ns", "sa-p1", &req("p1", "uid-p1")).is_ok());
    let why = |r: &Value| admit_token(&n1, &store, "ns", "sa", r).unwrap_err().message;
    assert!(why(&req("p2", "uid-p2")).ends_with("bound to a pod scheduled on a different node"));
    assert!(why(&req("p1", "old")).contains("does not match the UID in record"));
    assert!(why(&json!({"spec": {}})).ends_with("node requested token not bound to a pod"));
    // Anyone else is not this plugin's business.
    assert!(admit_token(&UserInfo::admin(), &store, "ns", "sa", &json!({})).is_ok());
}

/// A seeded fuzz of the decision (`KINETIC_FUZZ_SEED`, `KINETIC_FUZZ_CASES`, like the API's
/// fuzzing): random pods on random nodes referencing random objects, random requests by nodes
/// and others. It never panics, never answers for a user that is not a node, and an Allow to
/// read a pod, Secret or ConfigMap always has a pod bound to the asking node behind it (checked
/// against the pods themselves, not the authoriser's lookup).
#[tokio::test]
async fn fuzz_a_node_is_allowed_only_what_its_pods_reference() {
    use rand::rngs::StdRng;
    use rand::{Rng as _, SeedableRng as _};
    let seed = std::env::var("KINETIC_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x006e_6f64_6500_u64);
    let cases: u64 =
        std::env::var("KINETIC_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(2000);
    let mut rng = StdRng::seed_from_u64(seed);
    let names = ["a", "b", "c", "d"];
    let nodes = ["n1", "n2", "n3"];
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db"), 100).unwrap();
    let mut pods = Vec::new();
    for i in 0..12 {
        let pick = |rng: &mut StdRng| names[rng.random_range(0..names.len())];
        let (s, c, v) = (pick(&mut rng), pick(&mut rng), pick(&mut rng));
        let node = nodes[rng.random_range(0..nodes.len())];
        let ns = if rng.random_bool(0.5) { "ns" } else { "other" };
        let mut p = pod(&format!("p{i}"), node, s, c, v);
        p["metadata"]["namespace"] = json!(ns);
        put(&store, "pods", ns, p.clone()).await;
        pods.push(p);
    }
    let authz = NodeAuthorizer::new(store);
    let verbs = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"];
    let resources = ["pods", "pods/status", "secrets", "configmaps", "nodes", "services", "events"];
    for _ in 0..cases {
        let node = nodes[rng.random_range(0..nodes.len())];
        let mut user = node_user(node);
        if rng.random_bool(0.2) {
            user.groups.retain(|g| g != NODES_GROUP);
        }
        let verb = verbs[rng.random_range(0..verbs.len())];
        let res = resources[rng.random_range(0..resources.len())];
        let ns = ["ns", "other", ""][rng.random_range(0..3)];
        let name = match rng.random_range(0..3) {
            0 => String::new(),
            1 => names[rng.random_range(0..names.len())].to_owned(),
            _ => format!("p{}", rng.random_range(0..14)),
        };
        let mut a = attrs(&user, verb, res, ns, &name);
        if rng.random_bool(0.3) {
            a.field_selector = format!("spec.nodeName={}", nodes[rng.random_range(0..nodes.len())]);
        }
        let d = authz.authorize(&a);
        if node_identity(&user).is_none() {
            assert_eq!(d, Decision::NoOpinion(String::new()), "{a:?}");
            continue;
        }
        if d != Decision::Allow || !matches!(verb, "get" | "list" | "watch") {
            continue;
        }
        let mine = pods.iter().filter(|p| {
            p["spec"]["nodeName"] == node && p["metadata"]["namespace"] == a.namespace.as_str()
        });
        let ok = match (a.resource.as_str(), a.subresource.as_str()) {
            // The server lists only the node's pods whatever else the request names.
            ("pods", "")
                if verb != "get" && a.field_selector == format!("spec.nodeName={node}") =>
            {
                true
            }
            ("pods", "") => mine.clone().any(|p| p["metadata"]["name"] == a.name.as_str()),
            ("secrets", _) => mine.clone().any(|p| {
                p["spec"]["volumes"][0]["secret"]["secretName"] == a.name.as_str()
                    || a.name
                        .strip_prefix("env-")
                        .is_some_and(|s| p["spec"]["volumes"][0]["secret"]["secretName"] == s)
            }),
            ("configmaps", _) => mine.clone().any(|p| {
                p["spec"]["volumes"][2]["projected"]["sources"][0]["configMap"]["name"]
                    == a.name.as_str()
            }),
            ("nodes", _) => a.name == node,
            ("services", _) => true,
            other => panic!("a node may not read {other:?}: {a:?}"),
        };
        assert!(ok, "allowed without a relationship: {a:?}");
    }
}
