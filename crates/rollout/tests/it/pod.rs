//! Pod predicates (readiness, availability, revision, deletion marks) and strategy resolution
//! (upstream's rounding rules), as small tables.

use std::fmt::Write as _;

use expect_test::expect;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kinetic_rollout::strategy::{partition_replicas, scaled_value};
use kinetic_rollout::{Error, Strategy, pod};
use serde_json::{Value, json};

use crate::support::{cloneset, typed};

fn at(s: &str) -> Timestamp {
    s.parse().expect("a valid timestamp")
}

fn p(v: Value) -> Pod {
    serde_json::from_value(v).expect("a valid pod")
}

fn ready_since(since: &str, extra_conditions: Value) -> Pod {
    let mut conditions =
        vec![json!({"type": "Ready", "status": "True", "lastTransitionTime": since})];
    conditions.extend(extra_conditions.as_array().cloned().unwrap_or_default());
    p(json!({"metadata": {"name": "x"}, "status": {"phase": "Running", "conditions": conditions}}))
}

#[test]
fn availability() {
    let now = at("2026-01-01T00:01:00Z");
    let mut out = String::new();
    let mut row = |name: &str, pod: Pod, min_ready: i32| {
        let _ = writeln!(
            out,
            "{name}: ready={} available(minReady={min_ready})={}",
            pod::is_cloneset_ready(&pod, now),
            pod::is_available(&pod, min_ready, now),
        );
    };
    row("ready a minute ago", ready_since("2026-01-01T00:00:00Z", json!([])), 30);
    row("ready 10 s ago", ready_since("2026-01-01T00:00:50Z", json!([])), 30);
    row(
        "ready exactly 30 s ago (not before now)",
        ready_since("2026-01-01T00:00:30Z", json!([])),
        30,
    );
    row(
        "InPlaceUpdateReady False",
        ready_since(
            "2026-01-01T00:00:00Z",
            json!([{"type": "InPlaceUpdateReady", "status": "False"}]),
        ),
        0,
    );
    row(
        "InPlaceUpdateReady True",
        ready_since(
            "2026-01-01T00:00:00Z",
            json!([{"type": "InPlaceUpdateReady", "status": "True"}]),
        ),
        0,
    );
    let mut updating = ready_since("2026-01-01T00:00:00Z", json!([]));
    updating.metadata.labels =
        Some([("lifecycle.apps.kruise.io/state".to_owned(), "Updating".to_owned())].into());
    row("lifecycle Updating", updating, 0);
    let mut pending = p(
        json!({"status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "True"}]}}),
    );
    pending.metadata.name = Some("pending".into());
    row("Ready but not Running", pending, 0);
    expect![[r#"
        ready a minute ago: ready=true available(minReady=30)=true
        ready 10 s ago: ready=true available(minReady=30)=false
        ready exactly 30 s ago (not before now): ready=true available(minReady=30)=false
        InPlaceUpdateReady False: ready=false available(minReady=0)=false
        InPlaceUpdateReady True: ready=true available(minReady=0)=true
        lifecycle Updating: ready=false available(minReady=0)=false
        Ready but not Running: ready=false available(minReady=0)=false
    "#]]
    .assert_eq(&out);
}

#[test]
fn revisions_and_marks() {
    let labelled = |labels: Value| p(json!({"metadata": {"name": "web-abcde", "labels": labels}}));
    let full = labelled(json!({"controller-revision-hash": "web-5f57f4fc89"}));
    let short = labelled(json!({"controller-revision-hash": "5f57f4fc89"}));
    let template_only = labelled(json!({"pod-template-hash": "5f57f4fc89"}));
    let stale_template = labelled(
        json!({"controller-revision-hash": "web-other", "pod-template-hash": "5f57f4fc89"}),
    );
    assert!(pod::matches_revision(&full, "web-5f57f4fc89"));
    assert!(pod::matches_revision(&short, "web-5f57f4fc89"));
    assert!(pod::matches_revision(&template_only, "web-5f57f4fc89"));
    assert!(!pod::matches_revision(&stale_template, "web-5f57f4fc89"));
    assert!(!pod::matches_revision(&full, "web-other"));

    let marked = labelled(json!({"apps.kruise.io/specified-delete": "anything"}));
    assert!(pod::is_specified_delete(&marked, &[]));
    assert!(pod::is_specified_delete(&full, &["web-abcde".to_owned()]));
    assert!(!pod::is_specified_delete(&full, &["web-other".to_owned()]));
}

fn io(s: &str) -> IntOrString {
    s.parse::<i32>().map_or_else(|_| IntOrString::String(s.to_owned()), IntOrString::Int)
}

#[test]
fn rounding_rules() {
    let mut out = String::new();
    for (v, total, up) in
        [("20%", 5, true), ("20%", 3, true), ("20%", 3, false), ("30%", 5, false), ("7", 5, true)]
    {
        let got = scaled_value(&io(v), total, up, "f").expect("valid");
        let _ = writeln!(out, "{v} of {total} rounded {}: {got}", if up { "up" } else { "down" });
    }
    for (v, replicas) in
        [("0%", 5), ("1%", 5), ("99%", 5), ("100%", 5), ("99%", 1), ("3", 5), ("9", 5)]
    {
        let got = partition_replicas(Some(&io(v)), replicas).expect("valid");
        let _ = writeln!(out, "partition {v} of {replicas}: {got}");
    }
    expect![[r#"
        20% of 5 rounded up: 1
        20% of 3 rounded up: 1
        20% of 3 rounded down: 0
        30% of 5 rounded down: 1
        7 of 5 rounded up: 7
        partition 0% of 5: 0
        partition 1% of 5: 1
        partition 99% of 5: 4
        partition 100% of 5: 5
        partition 99% of 1: 1
        partition 3 of 5: 3
        partition 9 of 5: 5
    "#]]
    .assert_eq(&out);
    assert_eq!(
        scaled_value(&io("20"), 5, true, "spec.updateStrategy.maxSurge"),
        Ok(20),
        "an integer is taken as is"
    );
    assert_eq!(
        scaled_value(&io("abc"), 5, true, "spec.updateStrategy.partition"),
        Err(Error::InvalidIntOrString {
            field: "spec.updateStrategy.partition",
            value: "abc".into()
        })
    );
}

#[test]
fn strategy_resolution() {
    let mut out = String::new();
    let mut row = |name: &str, cs: Value| {
        let s = Strategy::from_cloneset(&typed(cs)).expect("valid");
        let _ = writeln!(
            out,
            "{name}: replicas={} partition={} maxSurge={} maxUnavailable={} scaleMaxUnavailable={} type={:?}",
            s.replicas,
            s.partition,
            s.max_surge,
            s.max_unavailable,
            s.scale_max_unavailable,
            s.update_type
        );
    };
    row("percentages, no surge: maxUnavailable rounds up", cloneset(3, "50%", "20%", "0"));
    row("with surge: maxUnavailable rounds down", cloneset(3, "0", "20%", "20%"));
    let mut paused = cloneset(3, "0", "20%", "20%");
    paused["spec"]["updateStrategy"]["paused"] = json!(true);
    row("paused: no surge, so maxUnavailable rounds up again", paused);
    let mut bare = cloneset(3, "0", "0", "0");
    bare["spec"] = json!({"selector": {}, "template": {}});
    row("nothing set: upstream's defaults", bare);
    expect![[r#"
        percentages, no surge: maxUnavailable rounds up: replicas=3 partition=2 maxSurge=0 maxUnavailable=1 scaleMaxUnavailable=2147483647 type=ReCreate
        with surge: maxUnavailable rounds down: replicas=3 partition=0 maxSurge=1 maxUnavailable=0 scaleMaxUnavailable=2147483647 type=ReCreate
        paused: no surge, so maxUnavailable rounds up again: replicas=3 partition=0 maxSurge=0 maxUnavailable=1 scaleMaxUnavailable=2147483647 type=ReCreate
        nothing set: upstream's defaults: replicas=1 partition=0 maxSurge=0 maxUnavailable=1 scaleMaxUnavailable=2147483647 type=ReCreate
    "#]].assert_eq(&out);

    let mut bad = cloneset(3, "half", "1", "0");
    bad["spec"]["updateStrategy"]["partition"] = json!("half");
    assert!(matches!(Strategy::from_cloneset(&typed(bad)), Err(Error::InvalidIntOrString { .. })));
}

#[test]
fn status() {
    use crate::support::{NEW, OLD, now, pods};
    let mut out = String::new();
    let mut row = |name: &str, cs: Value, specs: &[&str]| {
        let cs = typed(cs);
        let pods = pods(specs);
        let input = kinetic_rollout::SyncInput::new(&cs, &pods, OLD, NEW, now()).expect("valid");
        let _ = writeln!(out, "{name}: {:?}", kinetic_rollout::status_counts(&input));
    };
    row(
        "mid-rollout, one updating in place",
        cloneset(4, "1", "1", "0"),
        &["o+", "o+", "n+", "n+@Updating"],
    );
    row("all updated, one too many", cloneset(3, "0", "1", "0"), &["n+", "n+", "n+", "n-"]);
    row("all updated", cloneset(3, "0", "1", "0"), &["n+", "n+", "n-"]);
    expect![[r#"
        mid-rollout, one updating in place: StatusCounts { replicas: 4, ready_replicas: 4, available_replicas: 3, updated_replicas: 2, updated_ready_replicas: 2, updated_available_replicas: 1, expected_updated_replicas: 3, current_revision: "cs-old_rev" }
        all updated, one too many: StatusCounts { replicas: 4, ready_replicas: 3, available_replicas: 3, updated_replicas: 4, updated_ready_replicas: 3, updated_available_replicas: 3, expected_updated_replicas: 3, current_revision: "cs-old_rev" }
        all updated: StatusCounts { replicas: 3, ready_replicas: 2, available_replicas: 2, updated_replicas: 3, updated_ready_replicas: 2, updated_available_replicas: 2, expected_updated_replicas: 3, current_revision: "cs-new_rev" }
    "#]].assert_eq(&out);
}
