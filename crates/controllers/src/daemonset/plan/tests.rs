//! Table tests after upstream's `pkg/controller/daemon/update_test.go` and
//! `daemon_controller_test.go` (kubernetes) and `daemonset_update_test.go` (openkruise): each
//! case is a cluster written as `node=pod` tokens and the decision, printed.

use expect_test::{Expect, expect};
use serde_json::json;

use super::*;

/// `n1`: a node with no pod; `n1=old` / `n1=new`: a node with an available pod of the old /
/// current revision; `old-` / `new-`: not ready; `old!`: Failed; `old~`: being deleted;
/// `old^`: PreparingDelete; `n1:x=old`: the node has label `x=y`; `n1#`: the pod should not
/// run there (and may not stay); several `=pod` on one node are several pods; a pod named for
/// a node not listed is on a node that does not exist when the node token starts with `gone`.
fn cluster(spec: &str) -> (Vec<NodeView>, Vec<Pod>) {
    let mut nodes = Vec::new();
    let mut pods = Vec::new();
    for (i, tok) in spec.split_whitespace().enumerate() {
        let mut parts = tok.split('=');
        let head = parts.next().unwrap_or_default();
        let (head, barred) = match head.strip_suffix('#') {
            Some(h) => (h, true),
            None => (head, false),
        };
        let (node, label) = match head.split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (head, None),
        };
        if !node.starts_with("gone") {
            let mut labels = BTreeMap::new();
            if let Some(l) = label {
                labels.insert(l.to_owned(), "y".to_owned());
            }
            nodes.push(NodeView {
                name: node.to_owned(),
                labels,
                should_run: !barred,
                should_continue: !barred,
            });
        }
        for (j, p) in parts.enumerate() {
            let hash = if p.starts_with("new") { "h2" } else { "h1" };
            let ready = !p.ends_with('-');
            let mut obj = json!({
                "metadata": {"name": format!("{node}-{p}-{j}"),
                             "creationTimestamp": format!("2026-01-01T00:00:{:02}Z", i * 5 + j),
                             "labels": {"controller-revision-hash": hash}},
                "spec": {"nodeName": node, "containers": []},
                "status": {"phase": if p.ends_with('!') { "Failed" } else { "Running" },
                           "conditions": [{"type": "Ready",
                                           "status": if ready { "True" } else { "False" },
                                           "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
            });
            if p.ends_with('~') {
                obj["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:01:00Z");
            }
            if p.ends_with('^') {
                obj["metadata"]["labels"]["lifecycle.apps.kruise.io/state"] =
                    json!("PreparingDelete");
            }
            pods.push(serde_json::from_value(obj).expect("a pod"));
        }
    }
    (nodes, pods)
}

fn by_node(pods: &[Pod]) -> PodsByNode<'_> {
    let mut m: PodsByNode<'_> = BTreeMap::new();
    for p in pods {
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        m.entry(node).or_default().push(p);
    }
    m
}

fn now() -> Timestamp {
    "2026-01-01T01:00:00Z".parse().expect("a time")
}

fn check_manage(spec: &str, surge: bool, expect: Expect) {
    let (nodes, pods) = cluster(spec);
    let plan = manage(&nodes, &by_node(&pods), "h2", surge, 0, now());
    expect.assert_eq(&format!("create {:?} delete {:?}", plan.create_on, plan.delete));
}

fn check_update(spec: &str, limits: (i32, i32, i32), selector: Option<&str>, expect: Expect) {
    let (nodes, pods) = cluster(spec);
    let m = by_node(&pods);
    let sel = selector.map(|k| {
        Selector::from_label_selector(&json!({"matchLabels": {k: "y"}})).expect("a selector")
    });
    let order = nodes_to_update(&nodes, &m, "h2", sel.as_ref(), limits.2);
    let (max_unavailable, max_surge, partition) = limits;
    let plan = rolling_update(
        &order,
        &m,
        "h2",
        Limits { max_surge, max_unavailable, partition },
        0,
        now(),
    );
    expect.assert_eq(&format!(
        "order {order:?} replace {:?} create {:?} delete {:?}",
        plan.replace, plan.create_on, plan.delete
    ));
}

#[test]
fn manage_creates_and_deletes_per_node() {
    // TestSimpleDaemonSetLaunchesPods: one pod on every node.
    check_manage("n1 n2 n3", false, expect![[r#"create ["n1", "n2", "n3"] delete []"#]]);
    // TestNodeDaemonLaunchesToleratePod / misscheduled: a node it may not stay on.
    check_manage("n1=old n2#=old", false, expect![[r#"create [] delete ["n2-old-0"]"#]]);
    // TestDaemonKillFailedPods: a failed pod is deleted (and recreated next pass).
    check_manage("n1=old!", false, expect![[r#"create [] delete ["n1-old!-0"]"#]]);
    // TestDealsWithExistingPods: more than one pod, the oldest stays.
    check_manage("n1=old=new", false, expect![[r#"create [] delete ["n1-new-1"]"#]]);
    // A pod being deleted holds the node until it is gone.
    check_manage("n1=old~", false, expect![[r#"create [] delete []"#]]);
    // Pods for a node that no longer exists go.
    check_manage("n1=new gone=new", false, expect![[r#"create [] delete ["gone-new-0"]"#]]);
    // A pre-deleting pod is handed to the delete step (which waits for its hook).
    check_manage("n1=old^", false, expect![[r#"create [] delete ["n1-old^-0"]"#]]);
}

#[test]
fn manage_with_surge_keeps_old_until_new_is_available() {
    check_manage("n1=old=new-", true, expect![[r#"create [] delete []"#]]);
    check_manage("n1=old=new", true, expect![[r#"create [] delete ["n1-old-0"]"#]]);
    // The old pod is not ready: the new one replaces it at once.
    check_manage("n1=old-=new-", true, expect![[r#"create [] delete ["n1-old--0"]"#]]);
    // A surging node whose only running pod is pre-deleting gets a new one.
    check_manage("n1=old^", true, expect![[r#"create ["n1"] delete ["n1-old^-0"]"#]]);
}

#[test]
fn rolling_update_without_surge() {
    // TestDaemonSetUpdatesPods: maxUnavailable 1, one node at a time (reverse name order).
    check_update(
        "n1=old n2=old n3=old n4=old n5=old",
        (1, 0, 0),
        None,
        expect![[
            r#"order ["n5", "n4", "n3", "n2", "n1"] replace ["n5-old-0"] create [] delete []"#
        ]],
    );
    check_update(
        "n1=old n2=old n3=old n4=old n5=old",
        (2, 0, 0),
        None,
        expect![[
            r#"order ["n5", "n4", "n3", "n2", "n1"] replace ["n5-old-0", "n4-old-0"] create [] delete []"#
        ]],
    );
    // TestDaemonSetUpdatesWhenNewPosIsNotReady: an unavailable new pod uses up the budget.
    check_update(
        "n1=old n2=old n3=new-",
        (1, 0, 0),
        None,
        expect![[r#"order ["n3", "n2", "n1"] replace [] create [] delete []"#]],
    );
    // A node without a pod (the manage step is creating it) counts as unavailable.
    check_update(
        "n1=old n2=old n3",
        (1, 0, 0),
        None,
        expect![[r#"order ["n3", "n2", "n1"] replace [] create [] delete []"#]],
    );
    // TestDaemonSetUpdatesAllOldPodsNotReady: unavailable old pods are all replaced at once.
    check_update(
        "n1=old- n2=old- n3=old-",
        (1, 0, 0),
        None,
        expect![[
            r#"order ["n3", "n2", "n1"] replace ["n3-old--0", "n2-old--0", "n1-old--0"] create [] delete []"#
        ]],
    );
    // TestDaemonSetUpdatesNoTemplateChanged: nothing to do.
    check_update(
        "n1=new n2=new",
        (1, 0, 0),
        None,
        expect![[r#"order ["n2", "n1"] replace [] create [] delete []"#]],
    );
}

#[test]
fn rolling_update_with_surge() {
    // TestDaemonSetUpdatesPodsWithMaxSurge: new pods beside old ones, maxSurge at a time.
    check_update(
        "n1=old n2=old n3=old",
        (0, 2, 0),
        None,
        expect![[r#"order ["n3", "n2", "n1"] replace [] create ["n3", "n2"] delete []"#]],
    );
    // The new pod is available: its old pod goes; an unavailable new pod holds a surge slot.
    check_update(
        "n1=old n2=old=new- n3=old=new",
        (0, 1, 0),
        None,
        expect![[r#"order ["n3", "n2", "n1"] replace [] create [] delete ["n3-old-0"]"#]],
    );
    // TestDaemonSetUpdatesAllOldPodsNotReadyMaxSurge: unavailable old pods get a new one at once.
    check_update(
        "n1=old- n2=old- n3=old",
        (0, 1, 0),
        None,
        expect![[r#"order ["n3", "n2", "n1"] replace [] create ["n2", "n1", "n3"] delete []"#]],
    );
}

#[test]
fn kruise_partition_and_selector_choose_the_nodes() {
    // Partition 2 of 4: two nodes keep the old revision.
    check_update(
        "n1=old n2=old n3=old n4=old",
        (4, 0, 2),
        None,
        expect![[r#"order ["n4", "n3"] replace ["n4-old-0", "n3-old-0"] create [] delete []"#]],
    );
    // Updated nodes count against the partition first.
    check_update(
        "n1=new n2=old n3=old n4=old",
        (4, 0, 2),
        None,
        expect![[r#"order ["n1", "n4"] replace ["n4-old-0"] create [] delete []"#]],
    );
    // Partition as large as the nodes: nothing is updated.
    check_update(
        "n1=old n2=old",
        (1, 0, 2),
        None,
        expect![[r#"order [] replace [] create [] delete []"#]],
    );
    // The selector: only labelled nodes update.
    check_update(
        "n1:canary=old n2=old n3:canary=old",
        (3, 0, 0),
        Some("canary"),
        expect![[r#"order ["n3", "n1"] replace ["n3-old-0", "n1-old-0"] create [] delete []"#]],
    );
    // Selector and partition together.
    check_update(
        "n1:canary=old n2=old n3:canary=old",
        (3, 0, 2),
        Some("canary"),
        expect![[r#"order ["n3"] replace ["n3-old-0"] create [] delete []"#]],
    );
    // A node between pods (its old pod pre-deleting) is "updating" and comes before old ones.
    check_update(
        "n1=old n2=old^ n3=old",
        (1, 0, 1),
        None,
        expect![[r#"order ["n2", "n3"] replace [] create [] delete []"#]],
    );
}

#[test]
fn status_counts_follow_upstream() {
    let (nodes, pods) = cluster("n1=new n2=old- n3 n4#=old");
    let c = counts(&nodes, &by_node(&pods), "h2", 0, now());
    assert_eq!(
        c,
        Counts { desired: 3, current: 2, misscheduled: 1, ready: 1, available: 1, updated: 1 }
    );
}
