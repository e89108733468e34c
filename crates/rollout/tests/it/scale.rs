//! Scale-down victims (`utils/pod_sorter.go`), the scale step's one action per pass
//! (`sync/cloneset_scale.go`), and instance ids.

use std::collections::{BTreeMap, HashMap};

use expect_test::{Expect, expect};
use k8s_openapi::api::core::v1::Pod;
use kinetic_rollout::scale::{
    ALPHANUMS, available_instance_ids, new_instance_id, same_node_ranks, spread_ranks, victim_cmp,
};
use kinetic_rollout::{ScaleAction, SyncInput, plan_scale};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use crate::support::{NEW, OLD, cloneset, now, pods, typed};

/// A running, ready pod on node `n1`, ready since December, then `extra` merged in.
fn pod(name: &str, extra: Value) -> Pod {
    let mut p = json!({
        "metadata": {"name": name, "labels": {}, "creationTimestamp": "2025-11-01T00:00:00Z"},
        "spec": {"nodeName": "n1", "containers": []},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True",
            "lastTransitionTime": "2025-12-01T00:00:00Z"}]},
    });
    merge(&mut p, extra);
    serde_json::from_value(p).expect("a valid pod")
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

fn order(pods: &[Pod], ranks: &HashMap<String, f64>) -> String {
    let mut sorted: Vec<&Pod> = pods.iter().collect();
    sorted.sort_by(|a, b| victim_cmp(a, b, ranks, None));
    sorted.iter().map(|p| p.metadata.name.as_deref().unwrap_or("")).collect::<Vec<_>>().join(" ")
}

fn check(pods: &[Pod], want: Expect) {
    want.assert_eq(&order(pods, &HashMap::new()));
}

/// Each rule of the victim order, one pair (or trio) per rule; the first name is deleted first.
#[test]
fn victim_order_rules() {
    check(
        &[pod("assigned", json!({})), pod("unassigned", json!({"spec": {"nodeName": null}}))],
        expect!["unassigned assigned"],
    );
    check(
        &[
            pod("running", json!({})),
            pod("unknown", json!({"status": {"phase": "Unknown"}})),
            pod("pending", json!({"status": {"phase": "Pending"}})),
        ],
        expect!["pending unknown running"],
    );
    check(
        &[
            pod("ready", json!({})),
            pod(
                "not-ready",
                json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
            ),
        ],
        expect!["not-ready ready"],
    );
    check(
        &[
            pod(
                "cost-10",
                json!({"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": "10"}}}),
            ),
            pod(
                "cost-minus-5",
                json!({"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": "-5"}}}),
            ),
            pod(
                "cost-invalid",
                json!({"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": "+20"}}}),
            ),
        ],
        expect!["cost-minus-5 cost-invalid cost-10"],
    );
    check(
        &[
            pod("ready-long", json!({})),
            pod(
                "ready-recently",
                json!({"status": {"conditions": [{"type": "Ready", "status": "True",
                "lastTransitionTime": "2025-12-31T00:00:00Z"}]}}),
            ),
        ],
        expect!["ready-recently ready-long"],
    );
    check(
        &[
            pod("no-restarts", json!({})),
            pod(
                "restarted",
                json!({"status": {"containerStatuses": [{"name": "a", "image": "x", "imageID": "",
                "ready": true, "restartCount": 4}]}}),
            ),
        ],
        expect!["restarted no-restarts"],
    );
    check(
        &[
            pod("older", json!({})),
            pod("newer", json!({"metadata": {"creationTimestamp": "2025-11-20T00:00:00Z"}})),
        ],
        expect!["newer older"],
    );
}

/// The same-node ranker spreads what remains: of three pods on one node and one alone, two of
/// the crowded ones are ranked (the worst highest) and go before the lone pod.
#[test]
fn same_node_spread() {
    let pods = vec![
        pod("a-n1", json!({})),
        pod("b-n1", json!({"metadata": {"creationTimestamp": "2025-11-10T00:00:00Z"}})),
        pod("c-n1", json!({"metadata": {"creationTimestamp": "2025-11-20T00:00:00Z"}})),
        pod(
            "d-n2",
            json!({"spec": {"nodeName": "n2"}, "metadata": {"creationTimestamp": "2025-11-30T00:00:00Z"}}),
        ),
    ];
    let refs: Vec<&Pod> = pods.iter().collect();
    let ranks = same_node_ranks(&refs);
    let mut ranked: Vec<(String, f64)> = ranks.into_iter().collect();
    ranked.sort_by(|a, b| a.0.cmp(&b.0));
    expect![[r#"[("b-n1", 1.0), ("c-n1", 2.0)]"#]].assert_eq(&format!("{ranked:?}"));
    let ranks = same_node_ranks(&refs);
    // Without ranks the newest pod (d-n2) would go first.
    expect!["c-n1 b-n1 d-n2 a-n1"].assert_eq(&order(&pods, &ranks));
}

/// The topology ranker: zone `z1` holds three pods, `z2` one, so z1's pods rank higher.
#[test]
fn topology_spread() {
    let pods = vec![
        pod("p1", json!({"spec": {"nodeName": "n1"}})),
        pod("p2", json!({"spec": {"nodeName": "n2"}})),
        pod(
            "p3",
            json!({"spec": {"nodeName": "n2"}, "metadata": {"creationTimestamp": "2025-11-05T00:00:00Z"}}),
        ),
        pod("p4", json!({"spec": {"nodeName": "n3"}})),
    ];
    let nodes: BTreeMap<String, BTreeMap<String, String>> =
        [("n1", "z1"), ("n2", "z1"), ("n3", "z2")]
            .into_iter()
            .map(|(n, z)| {
                (
                    n.to_owned(),
                    BTreeMap::from([("topology.kubernetes.io/zone".to_owned(), z.to_owned())]),
                )
            })
            .collect();
    let refs: Vec<&Pod> = pods.iter().collect();
    let ranks = spread_ranks(&refs, &["topology.kubernetes.io/zone"], &nodes);
    expect!["p3 p1 p2 p4"].assert_eq(&order(&pods, &ranks));
}

#[test]
fn instance_ids() {
    let mut rng = StdRng::seed_from_u64(7);
    let id = new_instance_id(&mut rng);
    assert_eq!(id.len(), 5);
    assert!(id.bytes().all(|b| ALPHANUMS.contains(&b)), "{id}");

    // Free PVC ids are reused first (sorted), then fresh ids that collide with nothing.
    let pods = vec![
        serde_json::from_value::<Pod>(json!({"metadata": {"name": "cs-bbbbb",
            "labels": {"apps.kruise.io/cloneset-instance-id": "bbbbb"}}}))
        .expect("a valid pod"),
    ];
    let ids = available_instance_ids(3, &pods, ["zzzzz", "bbbbb", "ccccc"], &mut rng);
    assert_eq!(&ids[..2], ["ccccc", "zzzzz"]);
    assert!(!["bbbbb", "ccccc", "zzzzz"].contains(&ids[2].as_str()), "{ids:?}");
}

fn plan(cs: Value, specs: &[&str]) -> String {
    let cs = typed(cs);
    let pods = pods(specs);
    let input = SyncInput::new(&cs, &pods, OLD, NEW, now()).expect("a valid strategy");
    let plan = plan_scale(&input, None);
    let action = match plan.action {
        ScaleAction::Nothing => "nothing".to_owned(),
        ScaleAction::CancelPreparingDelete(names) => format!("cancel preparing-delete {names:?}"),
        ScaleAction::Create { current_revision, update_revision } => {
            format!("create current={current_revision} update={update_revision}")
        }
        ScaleAction::Delete(pods) => {
            let names: Vec<String> = pods
                .iter()
                .map(|d| {
                    if d.prepare_delete { format!("{} (prepare)", d.name) } else { d.name.clone() }
                })
                .collect();
            format!("delete {}", names.join(" "))
        }
    };
    format!("{} -> {action}", plan.diffs)
}

/// The scale step's decisions, one line per situation. Pods are named `pod-<index>`.
#[test]
fn scale_actions() {
    let mut out = String::new();
    let mut line = |name: &str, cs: Value, specs: &[&str]| {
        out.push_str(&format!("{name}: {}\n", plan(cs, specs)));
    };
    line("scale out from nothing", cloneset(3, "0", "1", "0"), &[]);
    line("scale out, partition keeps old pods", cloneset(4, "2", "1", "0"), &["o+"]);
    line(
        "specified delete, ready, within maxUnavailable",
        cloneset(3, "0", "1", "0"),
        &["n+", "n+d", "n+"],
    );
    line(
        "specified deletes: one ready within the limit, not-ready ones regardless",
        cloneset(3, "0", "1", "0"),
        &["n+d", "n+d", "n-d"],
    );
    line("scale in takes old pods first", cloneset(2, "0", "2", "0"), &["n+", "o+", "n-", "o-"]);
    line(
        "scale in, then the least valuable (not ready)",
        cloneset(3, "0", "2", "0"),
        &["n+", "o+", "n-", "o-"],
    );
    let mut hooked = cloneset(3, "0", "1", "0");
    hooked["spec"]["lifecycle"] = json!({"preDelete": {"labelsHandler": {"hold": "yes"}}});
    line("preDelete hook: prepare instead of delete", hooked.clone(), &["n+", "n+", "n+dh"]);
    hooked["spec"]["replicas"] = json!(2);
    line("preDelete hook released: delete", hooked.clone(), &["n+", "n+", "n+@PreparingDelete"]);
    line(
        "preDelete hook holds: no scale in meanwhile",
        hooked.clone(),
        &["n+", "n+", "n+", "n+h@PreparingDelete"],
    );
    hooked["spec"]["replicas"] = json!(3);
    line(
        "replicas grew back: cancel the preparing delete",
        hooked,
        &["n+", "n+", "n+h@PreparingDelete"],
    );
    let mut limited = cloneset(5, "0", "1", "0");
    limited["spec"]["scaleStrategy"] = json!({"maxUnavailable": 1});
    line("scaleStrategy.maxUnavailable blocks creation", limited, &["n+", "n-", "n+"]);
    expect![[r#"
        scale out from nothing: {scaleUpNum=3 scaleUpLimit=3} -> create current=0 update=3
        scale out, partition keeps old pods: {scaleUpNum=3 scaleUpNumOldRevision=1 scaleUpLimit=3} -> create current=1 update=2
        specified delete, ready, within maxUnavailable: {deleteReadyLimit=1} -> delete pod-1
        specified deletes: one ready within the limit, not-ready ones regardless: {deleteReadyLimit=1} -> delete pod-0 pod-2
        scale in takes old pods first: {scaleDownNum=2 scaleDownNumOldRevision=2 deleteReadyLimit=2} -> delete pod-1 pod-3
        scale in, then the least valuable (not ready): {scaleDownNum=1 scaleDownNumOldRevision=2 deleteReadyLimit=1 updateNum=1 updateMaxUnavailable=3} -> delete pod-3
        preDelete hook: prepare instead of delete: {deleteReadyLimit=1} -> delete pod-2 (prepare)
        preDelete hook released: delete: {scaleDownNum=1 deleteReadyLimit=1} -> delete pod-2
        preDelete hook holds: no scale in meanwhile: {scaleDownNum=2 deleteReadyLimit=2} -> nothing
        replicas grew back: cancel the preparing delete: {} -> cancel preparing-delete ["pod-2"]
        scaleStrategy.maxUnavailable blocks creation: {scaleUpNum=2} -> create current=0 update=0
    "#]].assert_eq(&out);
}
