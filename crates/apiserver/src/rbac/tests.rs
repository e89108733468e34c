//! The RBAC index and authoriser over a real store, and a seeded fuzz of the decision and of the
//! escalation check's covering (the property that makes escalation checks sound).

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::json;

use super::rules::{PolicyRule, breakdown, uncovered};
use super::*;
use crate::store::Op;

fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo {
        name: name.into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        ..UserInfo::default()
    }
}

fn attrs(
    u: &UserInfo,
    verb: &str,
    group: &str,
    resource: &str,
    ns: &str,
    name: &str,
) -> Attributes {
    Attributes {
        user: u.clone(),
        verb: verb.into(),
        resource_request: true,
        api_group: group.into(),
        resource: resource.into(),
        namespace: ns.into(),
        name: name.into(),
        ..Attributes::default()
    }
}

async fn put(store: &Store, plural: &str, ns: &str, v: serde_json::Value) {
    let name = v["metadata"]["name"].as_str().unwrap().to_owned();
    let key = ObjKey::new(&Rbac::key(plural), ns, &name);
    store.write(Op::Create { key, value: v }).await.unwrap();
}

fn role_json(name: &str, ns: &str, rules: serde_json::Value) -> serde_json::Value {
    json!({"metadata": {"name": name, "namespace": ns}, "rules": rules})
}

fn binding_json(
    name: &str,
    ns: &str,
    kind: &str,
    role: &str,
    subjects: serde_json::Value,
) -> serde_json::Value {
    json!({"metadata": {"name": name, "namespace": ns},
           "roleRef": {"apiGroup": GROUP, "kind": kind, "name": role}, "subjects": subjects})
}

/// Upstream's `TestAuthorizer` cases (plugin/pkg/auth/authorizer/rbac/rbac_test.go), on one
/// policy: a ClusterRoleBinding applies everywhere, a RoleBinding only in its namespace (also
/// when it refers to a ClusterRole), service-account subjects default to the binding's
/// namespace, and groups match.
#[tokio::test]
async fn bindings_apply_as_upstreams_authorizer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db"), 100).unwrap();
    put(
        &store,
        CLUSTER_ROLES,
        "",
        role_json(
            "read-pods",
            "",
            json!([{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]),
        ),
    )
    .await;
    put(
        &store,
        CLUSTER_ROLES,
        "",
        role_json(
            "write-cm",
            "",
            json!([{"verbs": ["*"], "apiGroups": [""], "resources": ["configmaps"]}]),
        ),
    )
    .await;
    put(&store, ROLES, "ns1", role_json("secret-a", "ns1", json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"]}]))).await;
    put(
        &store,
        CLUSTER_BINDINGS,
        "",
        binding_json(
            "everyone-reads",
            "",
            "ClusterRole",
            "read-pods",
            json!([{"kind": "Group", "name": "readers"}]),
        ),
    )
    .await;
    put(
        &store,
        BINDINGS,
        "ns1",
        binding_json(
            "cm",
            "ns1",
            "ClusterRole",
            "write-cm",
            json!([{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "bot"}]),
        ),
    )
    .await;
    put(
        &store,
        BINDINGS,
        "ns1",
        binding_json(
            "sec",
            "ns1",
            "Role",
            "secret-a",
            json!([{"kind": "ServiceAccount", "name": "bot", "namespace": "ns1"}]),
        ),
    )
    .await;
    // A RoleBinding naming a Role of another namespace grants nothing.
    put(
        &store,
        BINDINGS,
        "ns2",
        binding_json("sec", "ns2", "Role", "secret-a", json!([{"kind": "User", "name": "alice"}])),
    )
    .await;
    let rbac = Rbac::new(store.clone());
    let alice = user("alice", &["readers"]);
    let bob = user("bob", &[]);
    let bot = user("system:serviceaccount:ns1:bot", &["system:serviceaccounts"]);
    let other_bot = user("system:serviceaccount:ns2:bot", &[]);
    let cases = [
        (attrs(&alice, "get", "", "pods", "", ""), true),
        (attrs(&alice, "list", "", "pods", "any", ""), true),
        (attrs(&alice, "watch", "", "pods", "any", ""), false),
        (attrs(&bob, "get", "", "pods", "ns1", ""), false),
        (attrs(&alice, "delete", "", "configmaps", "ns1", "x"), true),
        (attrs(&alice, "delete", "", "configmaps", "ns2", "x"), false),
        (attrs(&alice, "delete", "", "configmaps", "", "x"), false),
        (attrs(&alice, "get", "", "secrets", "ns2", "a"), false),
        (attrs(&bot, "create", "", "configmaps", "ns1", ""), true),
        (attrs(&other_bot, "create", "", "configmaps", "ns1", ""), false),
        (attrs(&bot, "get", "", "secrets", "ns1", "a"), true),
        (attrs(&bot, "get", "", "secrets", "ns1", "b"), false),
        (attrs(&bot, "list", "", "secrets", "ns1", ""), false),
    ];
    for (a, want) in cases {
        assert_eq!(rbac.authorize(&a) == Decision::Allow, want, "{a:?}");
    }
    // Deleting a binding takes its rights away once the index is refreshed.
    let key = ObjKey::new(&Rbac::key(BINDINGS), "ns1", "cm");
    store
        .write(Op::Delete { key: key.clone(), expected_rv: None, expected_uid: None })
        .await
        .unwrap();
    rbac.refresh(&key);
    assert_eq!(
        rbac.authorize(&attrs(&alice, "delete", "", "configmaps", "ns1", "x")),
        Decision::NoOpinion(String::new())
    );
    // rules_for is what the rules review and the escalation check see.
    assert_eq!(rbac.rules_for(&bot, "ns1").len(), 1);
}

#[tokio::test]
async fn escalation_names_the_rules_not_held_as_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db"), 100).unwrap();
    put(
        &store,
        CLUSTER_ROLES,
        "",
        role_json(
            "pods",
            "",
            json!([{"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["pods"]}]),
        ),
    )
    .await;
    put(
        &store,
        BINDINGS,
        "dev",
        binding_json("b", "dev", "ClusterRole", "pods", json!([{"kind": "User", "name": "alice"}])),
    )
    .await;
    let rbac = Rbac::new(store);
    let alice = user("alice", &["system:authenticated"]);
    let ok = PolicyRule::list_from(
        &json!({"rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}),
    );
    assert!(rbac.confirm_no_escalation(&alice, "dev", &ok).is_ok());
    let bad = PolicyRule::list_from(
        &json!({"rules": [{"verbs": ["get", "delete"], "apiGroups": [""], "resources": ["pods", "secrets"]}]}),
    );
    assert_eq!(
        rbac.confirm_no_escalation(&alice, "dev", &bad).unwrap_err(),
        "user \"alice\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}\n{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\" \"delete\"]}"
    );
    // The same rules in another namespace are not held.
    assert!(rbac.confirm_no_escalation(&alice, "prod", &ok).is_err());
}

// ---------------------------------------------------------------------------------------------
// Fuzz
// ---------------------------------------------------------------------------------------------

const VERBS: &[&str] = &["get", "list", "create", "delete", "*"];
const GROUPS: &[&str] = &["", "apps", "*"];
const RESOURCES: &[&str] = &["pods", "pods/log", "pods/status", "*/status", "secrets", "*"];
const NAMES: &[&str] = &["a", "b"];
const URLS: &[&str] = &["/metrics", "/api", "/api/*", "/apis/*", "*"];

fn pick(rng: &mut StdRng, from: &[&str], max: usize) -> Vec<String> {
    let n = rng.random_range(0..=max);
    (0..n).map(|_| from[rng.random_range(0..from.len())].to_owned()).collect()
}

fn random_rule(rng: &mut StdRng) -> PolicyRule {
    if rng.random_bool(0.2) {
        return PolicyRule {
            verbs: pick(rng, VERBS, 2),
            non_resource_urls: pick(rng, URLS, 2),
            ..PolicyRule::default()
        };
    }
    PolicyRule {
        verbs: pick(rng, VERBS, 3),
        api_groups: pick(rng, GROUPS, 2),
        resources: pick(rng, RESOURCES, 3),
        resource_names: if rng.random_bool(0.3) { pick(rng, NAMES, 2) } else { vec![] },
        non_resource_urls: vec![],
    }
}

fn random_attrs(rng: &mut StdRng) -> Attributes {
    let one = |rng: &mut StdRng, from: &[&str]| from[rng.random_range(0..from.len())].to_owned();
    if rng.random_bool(0.2) {
        let paths = ["/metrics", "/api", "/api/v1", "/apis/apps", "/healthz"];
        return Attributes {
            verb: one(rng, &["get", "post"]),
            path: one(rng, &paths),
            ..Attributes::default()
        };
    }
    let (resource, subresource) =
        match one(rng, &["pods", "pods/log", "pods/status", "secrets", "deployments/status"])
            .split_once('/')
        {
            Some((r, s)) => (r.to_owned(), s.to_owned()),
            None => (one(rng, &["pods", "secrets"]), String::new()),
        };
    Attributes {
        verb: one(rng, &["get", "list", "create", "delete", "watch"]),
        resource_request: true,
        api_group: one(rng, &["", "apps"]),
        resource,
        subresource,
        name: one(rng, &["", "a", "b", "c"]),
        ..Attributes::default()
    }
}

/// For random rule sets O and S and random requests: if O covers S (the escalation check
/// passes), every request S allows O allows too; and a rule allows exactly what its broken-down
/// parts allow. Seeded (`KINETIC_FUZZ_SEED`, `KINETIC_FUZZ_CASES`) like the API's fuzzing.
#[test]
fn fuzz_covering_never_grants_more_than_held() {
    let seed = std::env::var("KINETIC_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0072_6261_6300_u64);
    let cases: u64 =
        std::env::var("KINETIC_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(3000);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut covered = 0;
    for i in 0..cases {
        let owner: Vec<PolicyRule> =
            (0..rng.random_range(0..4)).map(|_| random_rule(&mut rng)).collect();
        let servant: Vec<PolicyRule> = if rng.random_bool(0.5) {
            // Often a subset of the owner's parts, so that covering holds in many cases.
            owner.iter().flat_map(breakdown).filter(|_| rng.random_bool(0.5)).collect()
        } else {
            (0..rng.random_range(0..3)).map(|_| random_rule(&mut rng)).collect()
        };
        let covers = uncovered(&owner, &servant).is_empty();
        covered += u64::from(covers);
        for _ in 0..20 {
            let a = random_attrs(&mut rng);
            let s_allows = servant.iter().any(|r| r.allows(&a));
            let o_allows = owner.iter().any(|r| r.allows(&a));
            assert!(
                !covers || !s_allows || o_allows,
                "seed {seed} case {i}: {owner:?} covers {servant:?} but not {a:?}"
            );
            for r in &servant {
                let parts = breakdown(r).iter().any(|p| p.allows(&a));
                assert_eq!(
                    r.allows(&a),
                    parts,
                    "seed {seed} case {i}: {r:?} vs its parts on {a:?}"
                );
            }
        }
    }
    assert!(covered > cases / 4, "the fuzz must exercise covering sets ({covered} of {cases})");
}

#[test]
fn reconciling_a_default_role_adds_and_never_removes() {
    let view = policy::cluster_roles().into_iter().find(|r| r.name == "system:basic-user").unwrap();
    // An administrator added a rule and a label; the default's rule went missing.
    let have = json!({"metadata": {"name": "system:basic-user", "labels": {"mine": "x"}},
                      "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"]}]});
    let out = policy::reconcile_role(&have, &view).unwrap();
    let rules = PolicyRule::list_from(&out);
    assert_eq!(rules.len(), 1 + view.rules.len());
    assert_eq!(out["metadata"]["labels"]["mine"], "x");
    assert_eq!(out["metadata"]["labels"]["kubernetes.io/bootstrapping"], "rbac-defaults");
    // Reconciled once, nothing more to do.
    assert!(policy::reconcile_role(&out, &view).is_none());
}

/// Issue 17: a node identity (`system:node:NAME` in `system:nodes`) carries out
/// ContainerRecreateRequests on a real cluster: the default policy binds its group to
/// `kinetic:node-agent`, which allows what kruise-daemon's role allows on them and their
/// status, and nothing more (no create or delete: those are the user's and the controller's).
#[test]
fn node_identities_may_carry_out_container_recreate_requests() {
    let (_, subjects) = policy::cluster_role_bindings()
        .into_iter()
        .find(|(name, _)| *name == policy::NODE_AGENT_ROLE)
        .expect("the node agent's binding is a default");
    assert_eq!(subjects, [("Group", node::NODES_GROUP)]);
    let role = policy::cluster_roles()
        .into_iter()
        .find(|r| r.name == policy::NODE_AGENT_ROLE)
        .expect("the node agent's role is a default");
    let n1 = user("system:node:n1", &[node::NODES_GROUP]);
    let allowed = |verb: &str, subresource: &str| {
        let mut a = attrs(&n1, verb, "apps.kruise.io", "containerrecreaterequests", "ns", "r");
        a.subresource = subresource.into();
        role.rules.iter().any(|r| r.allows(&a))
    };
    for verb in ["get", "list", "watch", "update", "patch"] {
        assert!(allowed(verb, ""), "{verb} containerrecreaterequests");
    }
    for verb in ["get", "update", "patch"] {
        assert!(allowed(verb, "status"), "{verb} containerrecreaterequests/status");
    }
    for verb in ["create", "delete", "deletecollection"] {
        assert!(!allowed(verb, ""), "{verb} must stay the user's and the controller's");
    }
    let other = attrs(&n1, "get", "apps.kruise.io", "clonesets", "ns", "c");
    assert!(!role.rules.iter().any(|r| r.allows(&other)));
}
