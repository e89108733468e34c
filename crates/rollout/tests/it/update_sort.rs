//! The update order: upstream's scatter tables (`pkg/util/updatesort/scatter_sort_test.go`)
//! with their expected indexes, and snapshot tables for priority and the full
//! `sort_update_indexes` order.

use std::fmt::Write as _;

use expect_test::{Expect, expect};
use k8s_openapi::api::core::v1::Pod;
use kinetic_api::kruise::UpdatePriorityStrategy;
use kinetic_api::kruise::cloneset::{CloneSetUpdateStrategy, UpdateScatterTerm};
use kinetic_rollout::update::{scatter_sort, sort_by_priority, sort_update_indexes};
use serde_json::json;

/// A bare pod named after its index with labels from `a=1,b=2` shorthand (entries without `=`
/// are ignored, as upstream's test does).
fn labelled(i: usize, labels: &str) -> Pod {
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
    serde_json::from_value(json!({"metadata": {"name": i.to_string(), "labels": labels}}))
        .expect("a valid pod")
}

fn term(key: &str, value: &str) -> UpdateScatterTerm {
    UpdateScatterTerm { key: key.to_owned(), value: value.to_owned() }
}

/// `TestScatterPodsByRule`: one term `labelA=AAA`; every pod waits for the update.
#[test]
fn scatter_by_rule_matches_upstream() {
    let cases: &[(&str, &[&str], &[usize])] = &[
        ("no label", &[""], &[0]),
        ("only one scattered pod", &["labelA=AAA"], &[0]),
        ("odd scattered pod + odd ordinary pod", &["labelA=AAA", "bbb"], &[0, 1]),
        (
            "even scattered pods + even ordinary pods",
            &["", "", "", "", "labelA=AAA", "labelA=AAA"],
            &[4, 0, 1, 2, 3, 5],
        ),
        (
            "odd scattered pods + odd ordinary pods",
            &["", "", "", "labelA=AAA", "labelA=AAA", "labelA=AAA"],
            &[3, 0, 1, 4, 2, 5],
        ),
        (
            "even scattered pods + odd ordinary pods",
            &["", "", "", "labelA=AAA", "", "", "labelA=AAA"],
            &[3, 0, 1, 2, 4, 5, 6],
        ),
        (
            "odd scattered pods + even ordinary pods",
            &["", "", "", "", "", "", "labelA=AAA", "labelA=AAA", "labelA=AAA"],
            &[6, 0, 1, 2, 7, 3, 4, 5, 8],
        ),
        (
            "even scattered + even ordinary, more scattered",
            &["", "", "labelA=AAA", "labelA=AAA", "labelA=AAA", "labelA=AAA"],
            &[2, 0, 3, 1, 4, 5],
        ),
        // Upstream lists eight labels but builds only as many pods as expected indexes (six).
        (
            "odd scattered + odd ordinary, more scattered",
            &["", "", "", "labelA=AAA", "labelA=AAA", "labelA=AAA"],
            &[3, 0, 1, 4, 2, 5],
        ),
        (
            "even scattered + odd ordinary, more scattered",
            &[
                "",
                "",
                "labelA=AAA",
                "",
                "labelA=AAA",
                "labelA=AAA",
                "labelA=AAA",
                "labelA=AAA",
                "labelA=AAA",
            ],
            &[2, 0, 4, 1, 5, 3, 6, 7, 8],
        ),
        (
            "odd scattered + even ordinary, more scattered",
            &["", "labelA=AAA", "", "labelA=AAA", "", "", "labelA=AAA", "labelA=AAA", "labelA=AAA"],
            &[1, 0, 3, 2, 6, 4, 7, 5, 8],
        ),
        (
            "invalid label",
            &["", "", "", "", "ee", "a", "", "labelA=AAA", "labelA=AAA", "labelA=AAA,labelB=BBB"],
            &[7, 0, 1, 2, 3, 8, 4, 5, 6, 9],
        ),
    ];
    for (name, labels, want) in cases {
        let pods: Vec<Pod> = labels.iter().enumerate().map(|(i, l)| labelled(i, l)).collect();
        let got = scatter_sort(&[term("labelA", "AAA")], &pods, (0..pods.len()).collect());
        assert_eq!(got, *want, "{name}");
    }
}

/// Name, pod labels, scatter terms, expected order.
type ScatterCase = (&'static str, Vec<&'static str>, Vec<UpdateScatterTerm>, Vec<usize>);

/// `TestSort`: the first `want.len()` pods wait for the update, all pods count for the density.
/// Upstream's case with a nil pod in the list has no equivalent (pods are never absent here).
#[test]
fn scatter_sort_matches_upstream() {
    let a = || term("labelA", "AAA");
    let b = || term("labelB", "BBB");
    let c = || term("labelC", "CCC");
    let cases: Vec<ScatterCase> = vec![
        ("a scattered pod + a ordinary pod", vec!["labelA=AAA,labelB=BBB"], vec![a()], vec![0]),
        ("all ordinary pods", vec![""; 6], vec![], vec![0, 1, 2, 3, 4, 5]),
        (
            "one pod one label",
            vec!["", "", "", "", "labelA=AAA", "labelA=AAA"],
            vec![a()],
            vec![4, 0, 1, 2, 3, 5],
        ),
        (
            "one pod more labels",
            vec![
                "",
                "",
                "",
                "",
                "sdfb=eee",
                "dsf=same",
                "labelB=BBB",
                "labelA=AAA",
                "labelA=AAA",
                "labelA=AAA,labelB=BBB",
            ],
            vec![b()],
            vec![6, 0, 1, 2, 3, 4, 5, 7, 8, 9],
        ),
        (
            "2 dimensions + one pod one label",
            vec!["labelB=BBB", "labelB=BBB", "", "", "labelA=AAA", "labelA=AAA"],
            vec![a(), b()],
            vec![0, 4, 2, 3, 5, 1],
        ),
        (
            "2 dimensions + one pod more labels",
            vec!["", "", "", "labelB=BBB", "labelA=AAA,labelB=BBB", "labelA=AAA"],
            vec![a(), b()],
            vec![4, 0, 1, 2, 5, 3],
        ),
        (
            "2 dimensions + same label + sequence: A + B",
            vec![
                "",
                "",
                "",
                "",
                "sdfb=eee",
                "dsf=same",
                "labelB=BBB",
                "labelA=AAA",
                "labelA=AAA",
                "labelB=BBB",
            ],
            vec![b(), a()],
            vec![7, 6, 0, 1, 2, 3, 4, 5, 9, 8],
        ),
        (
            "2 dimensions + same label + sequence: B + A",
            vec![
                "",
                "",
                "",
                "",
                "sdfb=eee",
                "dsf=same",
                "labelB=BBB",
                "labelA=AAA",
                "labelA=AAA",
                "labelB=BBB",
            ],
            vec![a(), b()],
            vec![6, 7, 0, 1, 2, 3, 4, 5, 8, 9],
        ),
        (
            "2 dimensions + same pod same label + even scatter + even ordinary",
            vec![
                "",
                "",
                "",
                "",
                "sdfb=eee",
                "dsf=same",
                "labelA=AAA,labelB=BBB",
                "",
                "",
                "labelB=BBB,labelA=AAA",
            ],
            vec![a(), b()],
            vec![6, 0, 1, 2, 3, 4, 5, 7, 8, 9],
        ),
        (
            "2 dimensions + same pod same label + even scatter + odd ordinary",
            vec![
                "",
                "",
                "",
                "sdfb=eee",
                "dsf=same",
                "labelA=AAA,labelB=BBB",
                "",
                "",
                "labelB=BBB,labelA=AAA",
            ],
            vec![a(), b()],
            vec![5, 0, 1, 2, 3, 4, 6, 7, 8],
        ),
        (
            "2 dimensions + same pod same label + odd scatter + odd ordinary",
            vec![
                "",
                "",
                "",
                "labelA=AAA",
                "sdfb=eee",
                "dsf=same",
                "labelA=AAA,labelB=BBB",
                "",
                "",
                "",
            ],
            vec![a(), b()],
            vec![3, 0, 1, 2, 4, 5, 7, 6],
        ),
        (
            "2 dimensions + same pod same label + odd scatter + odd ordinary (2)",
            vec![
                "",
                "",
                "",
                "labelA=AAA",
                "",
                "",
                "sdfb=eee",
                "dsf=same",
                "labelA=AAA,labelB=BBB",
                "",
                "",
                "labelB=BBB,labelA=AAA",
            ],
            vec![a(), b()],
            vec![0, 1, 2, 4, 3, 5, 6, 7, 9, 10, 8],
        ),
        (
            "2 dimensions + even scatter + even ordinary, more scattered",
            vec![
                "",
                "",
                "",
                "labelA=AAA",
                "sdfb=eee,labelA=AAA",
                "dsf=same",
                "labelA=AAA,labelB=BBB",
                "",
                "",
                "labelB=BBB,labelA=AAA",
            ],
            vec![a(), b()],
            vec![6, 3, 0, 1, 4, 2, 5, 7, 8, 9],
        ),
        (
            "2 dimensions + even scatter + odd ordinary, more scattered",
            vec![
                "",
                "labelA=AAA",
                "labelA=AAA",
                "sdfb=eee",
                "dsf=same",
                "labelA=AAA,labelB=BBB",
                "",
                "",
                "labelB=BBB,labelA=AAA",
            ],
            vec![a(), b()],
            vec![5, 1, 0, 3, 2, 4, 6, 7, 8],
        ),
        (
            "2 dimensions + odd scatter + odd ordinary, more scattered",
            vec![
                "labelA=AAA",
                "",
                "",
                "labelA=AAA",
                "sdfb=eee,labelA=AAA",
                "dsf=same",
                "labelA=AAA,labelB=BBB",
                "",
                "",
                "labelB=BBB,labelA=AAA",
            ],
            vec![a(), b()],
            vec![1, 0, 2, 3, 5, 4, 7, 6],
        ),
        (
            "2 dimensions + odd scatter + odd ordinary, more scattered (2)",
            vec![
                "",
                "",
                "labelA=AAA",
                "labelA=AAA",
                "",
                "labelA=AAA",
                "sdfb=eee",
                "dsf=same",
                "labelA=AAA,labelB=BBB",
                "",
                "",
                "labelB=BBB,labelA=AAA",
            ],
            vec![a(), b()],
            vec![0, 2, 1, 4, 3, 6, 7, 5, 9, 10, 8],
        ),
        (
            "3 dimensions + one pod one label",
            vec![
                "",
                "labelA=AAA",
                "labelA=AAA",
                "labelB=BBB",
                "labelB=BBB",
                "labelC=CCC",
                "labelC=CCC",
                "labelC=CCC",
                "labelC=CCC",
                "labelC=CCC",
            ],
            vec![a(), b(), c()],
            vec![3, 1, 5, 0, 6, 7, 8, 9, 2, 4],
        ),
        (
            "3 dimensions + one pod more label",
            vec![
                "",
                "labelA=AAA",
                "labelA=AAA,labelC=CCC",
                "labelB=BBB,labelC=CCC",
                "labelB=BBB",
                "",
                "",
                "labelC=CCC",
                "labelC=CCC",
                "labelC=CCC",
            ],
            vec![a(), b(), c()],
            vec![3, 2, 0, 7, 8, 5, 6, 9, 1, 4],
        ),
        (
            "continuous sort 1",
            vec!["", "", "", "", "labelA=AAA", "labelA=AAA", "labelA=AAA"],
            vec![a()],
            vec![0, 1, 4, 2, 3, 5],
        ),
        (
            "continuous sort 2",
            vec!["labelA=AAA", "labelA=AAA", "", "", "", "", "", "", "", "labelA=AAA"],
            vec![a()],
            vec![2, 0, 3, 4, 5, 6, 1],
        ),
    ];
    for (name, labels, terms, want) in cases {
        let pods: Vec<Pod> = labels.iter().enumerate().map(|(i, l)| labelled(i, l)).collect();
        let got = scatter_sort(&terms, &pods, (0..want.len()).collect());
        assert_eq!(got, want, "{name}");
    }
}

fn names(pods: &[Pod], order: &[usize]) -> String {
    order
        .iter()
        .map(|&i| pods[i].metadata.name.clone().unwrap_or_default())
        .collect::<Vec<_>>()
        .join(" ")
}

fn check_priority(strategy: serde_json::Value, pods: &[(&str, &str)], want: Expect) {
    let strategy: UpdatePriorityStrategy =
        serde_json::from_value(strategy).expect("a valid strategy");
    let pods: Vec<Pod> = pods
        .iter()
        .map(|(name, labels)| {
            let mut p = labelled(0, labels);
            p.metadata.name = Some((*name).to_owned());
            p
        })
        .collect();
    let order = sort_by_priority(&strategy, &pods, (0..pods.len()).collect());
    want.assert_eq(&names(&pods, &order));
}

/// Weight priority: the sum of matching terms' weights, highest first; equal weights keep the
/// order they came in (the ActivePods order), where upstream would order them by reverse index.
#[test]
fn weight_priority() {
    check_priority(
        json!({"weightPriority": [
            {"weight": 50, "matchSelector": {"matchLabels": {"zone": "a"}}},
            {"weight": 30, "matchSelector": {"matchExpressions": [{"key": "canary", "operator": "Exists"}]}},
        ]}),
        &[
            ("p0", ""),
            ("p1", "zone=a"),
            ("p2", "canary=1"),
            ("p3", "zone=a,canary=1"),
            ("p4", "zone=b"),
            ("p5", "zone=a"),
        ],
        expect!["p3 p1 p5 p2 p0 p4"],
    );
}

/// Order priority: the first ordered key a pod has decides its level, then the trailing integer
/// of the value, highest first; pods with none of the keys come first (upstream's level -1).
#[test]
fn order_priority() {
    check_priority(
        json!({"orderPriority": [{"orderedKey": "tier"}, {"orderedKey": "idx"}]}),
        &[
            ("a", "idx=sts-2"),
            ("b", "tier=t-1"),
            ("c", "tier=t-10"),
            ("d", ""),
            ("e", "idx=7"),
            ("f", "tier=x"),
        ],
        expect!["d c b f e a"],
    );
}

fn pod_json(name: &str, extra: serde_json::Value) -> Pod {
    let mut p = json!({"metadata": {"name": name, "labels": {}}, "spec": {"nodeName": "n1", "containers": []},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True",
            "lastTransitionTime": "2025-12-01T00:00:00Z"}]}});
    merge(&mut p, extra);
    serde_json::from_value(p).expect("a valid pod")
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// The whole update order: ActivePods (unscheduled, pending, not ready, recently ready, restarts,
/// newer first), then priority, then scatter, then PreparingUpdate pods first.
#[test]
fn full_update_order() {
    let pods = vec![
        pod_json("ready-old", json!({})),
        pod_json(
            "ready-recent",
            json!({"status": {"conditions": [{"type": "Ready", "status": "True",
            "lastTransitionTime": "2025-12-20T00:00:00Z"}]}}),
        ),
        pod_json(
            "not-ready",
            json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        ),
        pod_json("pending", json!({"status": {"phase": "Pending", "conditions": []}})),
        pod_json(
            "unscheduled",
            json!({"spec": {"nodeName": null}, "status": {"phase": "Pending", "conditions": []}}),
        ),
        pod_json(
            "restarts",
            json!({"status": {"containerStatuses": [{"name": "app", "image": "x", "imageID": "",
            "ready": true, "restartCount": 3}]}}),
        ),
        pod_json(
            "preparing-update",
            json!({"metadata": {"labels": {"lifecycle.apps.kruise.io/state": "PreparingUpdate"}}}),
        ),
    ];
    let order =
        sort_update_indexes(&CloneSetUpdateStrategy::default(), &pods, (0..pods.len()).collect());
    expect!["preparing-update unscheduled pending not-ready ready-recent restarts ready-old"]
        .assert_eq(&names(&pods, &order));

    // With a weight priority on `ready-old`, it comes right after the PreparingUpdate pod.
    let strategy: CloneSetUpdateStrategy =
        serde_json::from_value(json!({"priorityStrategy": {"weightPriority": [
        {"weight": 10, "matchSelector": {"matchLabels": {"first": "yes"}}}]}}))
        .expect("a valid strategy");
    let mut pods = pods;
    pods[0].metadata.labels.get_or_insert_default().insert("first".into(), "yes".into());
    let order = sort_update_indexes(&strategy, &pods, (0..pods.len()).collect());
    let mut out = String::new();
    let _ = write!(out, "{}", names(&pods, &order));
    expect!["preparing-update ready-old unscheduled pending not-ready ready-recent restarts"]
        .assert_eq(&out);
}

fn plan(cs: serde_json::Value, specs: &[&str], consistent: bool) -> String {
    use crate::support::{NEW, OLD, now, pods, typed};
    let cs = typed(cs);
    let pods = pods(specs);
    let current = if consistent { NEW } else { OLD };
    let mut input =
        kinetic_rollout::SyncInput::new(&cs, &pods, current, NEW, now()).expect("a valid strategy");
    input.options.partition_rollback = true;
    let plan = kinetic_rollout::plan_update(&input);
    format!("{} -> {} {:?}", plan.diffs, plan.target_revision, plan.pods)
}

/// Which pods `plan_update` picks, one line per situation. Pods are named `pod-<index>`.
#[test]
fn update_plans() {
    use crate::support::cloneset;
    let mut out = String::new();
    let mut line = |name: &str, cs: serde_json::Value, specs: &[&str]| {
        out.push_str(&format!("{name}: {}\n", plan(cs, specs, false)));
    };
    line("partition 3: two to update, one at a time", cloneset(5, "3", "1", "0"), &["o+"; 5]);
    line("maxUnavailable 2: two at once", cloneset(5, "0", "2", "0"), &["o+"; 5]);
    line(
        "an updated pod is still unavailable: wait",
        cloneset(5, "0", "1", "0"),
        &["n-", "o+", "o+", "o+", "o+"],
    );
    line(
        "an old pod already unavailable goes first, for free",
        cloneset(5, "0", "1", "0"),
        &["o+", "o+", "o-", "o+", "o+"],
    );
    line(
        "skips PreparingDelete; takes PreparingUpdate first",
        cloneset(3, "0", "1", "0"),
        &["o+@PreparingDelete", "o+", "o+@PreparingUpdate"],
    );
    line(
        "rollback when partition grows (rollback gate on)",
        cloneset(3, "2", "1", "0"),
        &["n+", "n+", "o+"],
    );
    let mut paused = cloneset(5, "0", "1", "0");
    paused["spec"]["updateStrategy"]["paused"] = json!(true);
    line("paused", paused, &["o+"; 5]);
    expect![[r#"
        partition 3: two to update, one at a time: {updateNum=2 updateMaxUnavailable=1} -> cs-new_rev ["pod-0"]
        maxUnavailable 2: two at once: {updateNum=5 updateMaxUnavailable=2} -> cs-new_rev ["pod-0", "pod-1"]
        an updated pod is still unavailable: wait: {updateNum=4 updateMaxUnavailable=1} -> cs-new_rev []
        an old pod already unavailable goes first, for free: {updateNum=5 updateMaxUnavailable=1} -> cs-new_rev ["pod-2"]
        skips PreparingDelete; takes PreparingUpdate first: {updateNum=2 updateMaxUnavailable=1} -> cs-new_rev ["pod-2"]
        rollback when partition grows (rollback gate on): {updateNum=-1 updateMaxUnavailable=1} -> cs-old_rev ["pod-0"]
        paused: {} -> cs-new_rev []
    "#]].assert_eq(&out);
}
