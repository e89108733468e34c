//! Upstream's `TestCalculateDiffsWithExpectation` (`pkg/controller/cloneset/sync/
//! cloneset_sync_utils_test.go`), case by case, plus the cases where we deliberately deviate
//! (in-place before surge).
//!
//! Every case carries upstream's expected `expectationDiffs` (transcribed from the Go table in
//! the same `key=value` form our `Display` prints); the test asserts we compute exactly that,
//! except in cases marked as deviations, where the line says what upstream would do. The whole
//! table is also an `expect-test` snapshot so a change of any count shows in review.

use std::fmt::Write as _;

use expect_test::expect;
use kinetic_rollout::{DiffOptions, Diffs, SyncInput, calculate_diffs};
use serde_json::{Value, json};

use crate::support::{NEW, OLD, cloneset, now, pods, typed};

struct Case {
    name: &'static str,
    cs: Value,
    pods: &'static str,
    consistent: bool,
    options: DiffOptions,
    /// Upstream's expected diffs for these inputs.
    upstream: &'static str,
    /// Our expected diffs when we deliberately differ (in-place before surge).
    ours: Option<&'static str>,
}

fn case(
    name: &'static str,
    (replicas, partition, max_unavailable, max_surge): (i32, &str, &str, &str),
    pods: &'static str,
    upstream: &'static str,
) -> Case {
    Case {
        name,
        cs: cloneset(replicas, partition, max_unavailable, max_surge),
        pods,
        consistent: false,
        // Upstream's test enables CloneSetPartitionRollback for every case but one.
        options: DiffOptions { partition_rollback: true, ..DiffOptions::default() },
        upstream,
        ours: None,
    }
}

impl Case {
    fn consistent(mut self) -> Self {
        self.consistent = true;
        self
    }
    fn no_rollback_gate(mut self) -> Self {
        self.options.partition_rollback = false;
        self
    }
    fn scale_max_unavailable(mut self, v: i64) -> Self {
        self.cs["spec"]["scaleStrategy"] = json!({"maxUnavailable": v});
        self
    }
    fn exclude_preparing_delete(mut self) -> Self {
        self.cs["metadata"]["labels"] =
            json!({"apps.kruise.io/cloneset-scaling-exclude-preparing-delete": "true"});
        self
    }
    fn paused(mut self) -> Self {
        self.cs["spec"]["updateStrategy"]["paused"] = json!(true);
        self
    }
    /// Upstream passes `revision.IsPodUpdate` (PreparingUpdate counts as updated).
    fn preparing_update_as_update(mut self) -> Self {
        self.options.preparing_update_as_update = true;
        self
    }
    /// In-place before surge, with what we compute instead of `upstream`.
    fn in_place(mut self, ours: &'static str) -> Self {
        self.options.in_place_update = true;
        self.ours = Some(ours);
        self
    }
    /// In-place before surge where we keep upstream's result.
    fn in_place_same(mut self) -> Self {
        self.options.in_place_update = true;
        self
    }
}

/// Pod shorthand list: space-separated, `x*N` repeats `x`.
fn expand(pods: &str) -> Vec<&str> {
    pods.split_whitespace()
        .flat_map(|t| match t.split_once('*') {
            Some((p, n)) => vec![p; n.parse().expect("a repeat count")],
            None => vec![t],
        })
        .collect()
}

/// Parses `{}` or `{key=value ...}` (our `Display` form, any order) into `Diffs`.
fn parse(s: &str) -> Diffs {
    let mut d = Diffs::default();
    let body = s.trim().trim_start_matches('{').trim_end_matches('}');
    for kv in body.split_whitespace() {
        let (k, v) = kv.split_once('=').expect("key=value");
        let v: i32 = v.parse().expect("an integer");
        match k {
            "scaleUpNum" => d.scale_up_num = v,
            "scaleUpNumOldRevision" => d.scale_up_num_old_revision = v,
            "scaleDownNum" => d.scale_down_num = v,
            "scaleDownNumOldRevision" => d.scale_down_num_old_revision = v,
            "scaleUpLimit" => d.scale_up_limit = v,
            "deleteReadyLimit" => d.delete_ready_limit = v,
            "useSurge" => d.use_surge = v,
            "useSurgeOldRevision" => d.use_surge_old_revision = v,
            "updateNum" => d.update_num = v,
            "updateMaxUnavailable" => d.update_max_unavailable = v,
            other => panic!("unknown field {other}"),
        }
    }
    d
}

fn strategy_of(cs: &Value) -> String {
    let us = &cs["spec"]["updateStrategy"];
    let mut s = format!(
        "replicas={} partition={} maxUnavailable={} maxSurge={}",
        cs["spec"]["replicas"], us["partition"], us["maxUnavailable"], us["maxSurge"]
    );
    if us["paused"] == json!(true) {
        s.push_str(" paused");
    }
    if let Some(v) = cs["spec"]["scaleStrategy"].get("maxUnavailable") {
        let _ = write!(s, " scaleMaxUnavailable={v}");
    }
    if cs["metadata"].get("labels").is_some() {
        s.push_str(" excludePreparingDelete");
    }
    s.replace('"', "")
}

fn run(cases: Vec<Case>) -> String {
    let mut out = String::new();
    let mut mismatches = Vec::new();
    for c in cases {
        let cs = typed(c.cs.clone());
        let pods = pods(&expand(c.pods));
        let current = if c.consistent { NEW } else { OLD };
        let mut input = SyncInput::new(&cs, &pods, current, NEW, now()).expect("a valid strategy");
        input.options = c.options;
        let got = calculate_diffs(&input);
        let upstream = parse(c.upstream);
        let want = c.ours.map_or(upstream, parse);
        if got != want {
            mismatches.push(format!("{}: got {got}, want {want}", c.name));
        }
        let _ = writeln!(out, "{}", c.name);
        let mut flags = Vec::new();
        if c.consistent {
            flags.push("revisions consistent");
        }
        if !c.options.partition_rollback {
            flags.push("no rollback gate");
        }
        if c.options.preparing_update_as_update {
            flags.push("PreparingUpdate as updated");
        }
        if c.options.in_place_update {
            flags.push("in-place");
        }
        let flags =
            if flags.is_empty() { String::new() } else { format!(" ({})", flags.join(", ")) };
        let _ = writeln!(out, "    {}{flags} [{}]", strategy_of(&c.cs), c.pods);
        match c.ours {
            Some(_) => {
                let _ = writeln!(out, "    -> {got}   DEVIATES, upstream: {upstream}");
            }
            None => {
                let _ = writeln!(out, "    -> {got}");
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "diffs differ from the expected ones:\n{}",
        mismatches.join("\n")
    );
    out
}

/// Upstream's table, in upstream's order and with upstream's names.
fn upstream_cases() -> Vec<Case> {
    vec![
        case("an empty cloneset", (0, "0", "1", "0"), "", "{}"),
        case("increase replicas to 5 (step 1/2)", (5, "0", "1", "0"), "", "{scaleUpNum=5 scaleUpLimit=5}"),
        case("increase replicas to 5 (step 2/2)", (5, "0", "1", "0"), "n+*5", "{}"),
        case("specified delete 1 pod (all ready) (step 1/3)", (5, "0", "1", "0"), "n+d n+*4", "{deleteReadyLimit=1}"),
        case("specified delete 1 pod (all ready) (step 2/3)", (5, "0", "1", "0"), "n+*4", "{scaleUpNum=1 scaleUpLimit=1}"),
        case("specified delete 1 pod (all ready) (step 3/3)", (5, "0", "1", "0"), "n+*5", "{}"),
        case("specified delete 2 pod (all ready) (step 1/6)", (5, "0", "1", "0"), "n+d*2 n+*3", "{deleteReadyLimit=1}"),
        case("specified delete 2 pod (all ready) (step 2/6)", (5, "0", "1", "0"), "n+d n+*3", "{scaleUpNum=1 scaleUpLimit=1}"),
        case("specified delete 2 pod (all ready) (step 3/6)", (5, "0", "1", "0"), "n+d n+*3 n-", "{}"),
        case("specified delete 2 pod (all ready) (step 4/6)", (5, "0", "1", "0"), "n+d n+*4", "{deleteReadyLimit=1}"),
        case("specified delete 2 pod (all ready) (step 5/6)", (5, "0", "1", "0"), "n+*4", "{scaleUpNum=1 scaleUpLimit=1}"),
        case("specified delete 2 pod (all ready) (step 6/6)", (5, "0", "1", "0"), "n+*5", "{}"),
        case("specified delete 2 pod and replicas to 4 (step 1/3)", (4, "0", "1", "0"), "n-d*2 n+*3", "{deleteReadyLimit=2}"),
        case("specified delete 2 pod and replicas to 4 (step 2/3)", (4, "0", "1", "0"), "n+*3", "{scaleUpNum=1 scaleUpLimit=1}"),
        case("specified delete 2 pod and replicas to 4 (step 3/3)", (4, "0", "1", "0"), "n+*4", "{}"),
        case("update partition=3 (step 1/3)", (5, "3", "1", "0"), "o+*5", "{updateNum=2 updateMaxUnavailable=1}"),
        case("update partition=3 (step 2/3)", (5, "3", "1", "0"), "n+ o+*4", "{updateNum=1 updateMaxUnavailable=1}"),
        case("update partition=3 (step 3/3)", (5, "3", "1", "0"), "n+*2 o+*3", "{}"),
        case("rollback partition=4 (step 1/3)", (5, "4", "2", "0"), "n+*4 o+", "{updateNum=-3 updateMaxUnavailable=2}"),
        case("rollback partition=4 (step 2/3)", (5, "4", "2", "0"), "n+*2 o+*3", "{updateNum=-1 updateMaxUnavailable=2}"),
        case("rollback partition=4 (step 3/3)", (5, "4", "2", "0"), "n+ o+*4", "{}"),
        case("specified delete with maxSurge (step 1/4)", (5, "0", "0", "1"), "n+d n+*4", "{scaleUpNum=1 useSurge=1 scaleUpLimit=1}"),
        case("specified delete with maxSurge (step 2/4)", (5, "0", "0", "1"), "n+d n+*4 n-", "{useSurge=1}"),
        case("specified delete with maxSurge (step 3/4)", (5, "0", "0", "1"), "n+d n+*5", "{deleteReadyLimit=1 useSurge=1}"),
        case("specified delete with maxSurge (step 4/4)", (5, "0", "0", "1"), "n+*5", "{}"),
        case("update in-place partition=3 with maxSurge (step 1/4)", (5, "3", "1", "1"), "o+*5",
            "{scaleUpNum=1 useSurge=1 updateNum=2 updateMaxUnavailable=1 scaleUpLimit=1}"),
        case("update in-place partition=3 with maxSurge step 2/4", (5, "3", "1", "1"), "o+*5 n-",
            "{useSurge=1 updateNum=1 updateMaxUnavailable=2}"),
        case("update in-place partition=3 with maxSurge (step 3/4)", (5, "3", "1", "1"), "o+*4 n-@Updating n-",
            "{scaleDownNum=1 scaleDownNumOldRevision=1 deleteReadyLimit=0}"),
        case("update in-place partition=3 with maxSurge (step 4/4)", (5, "3", "1", "1"), "o+*4 n+ n-",
            "{scaleDownNum=1 scaleDownNumOldRevision=1 deleteReadyLimit=1}"),
        case("update recreate partition=3 with maxSurge (step 1/7)", (5, "3", "1", "1"), "o+*5",
            "{scaleUpNum=1 useSurge=1 updateNum=2 updateMaxUnavailable=1 scaleUpLimit=1}"),
        case("update recreate partition=3 with maxSurge (step 2/7)", (5, "3", "1", "1"), "o+*5 n-",
            "{useSurge=1 updateNum=1 updateMaxUnavailable=2}"),
        case("update recreate partition=3 with maxSurge (step 3/7)", (5, "3", "1", "1"), "o+*4 o+d n-",
            "{useSurge=1 useSurgeOldRevision=1 deleteReadyLimit=1 updateNum=1 updateMaxUnavailable=2}"),
        case("update recreate partition=3 with maxSurge (step 4/7)", (5, "3", "1", "1"), "o+*4 n-",
            "{useSurge=1 scaleUpNum=1 updateNum=1 updateMaxUnavailable=1 scaleUpLimit=1}"),
        case("update recreate partition=3 with maxSurge (step 5/7)", (5, "3", "1", "1"), "o+*4 n- n-",
            "{scaleDownNum=1 scaleDownNumOldRevision=1 deleteReadyLimit=0}"),
        case("update recreate partition=3 with maxSurge (step 6/7)", (5, "3", "1", "1"), "o+*4 n+ n-",
            "{scaleDownNum=1 scaleDownNumOldRevision=1 deleteReadyLimit=1}"),
        case("update recreate partition=3 with maxSurge (step 7/7)", (5, "3", "1", "1"), "o+*3 n+ n+", "{}"),
        case("update recreate partition=99% with maxUnavailable=3, maxSurge=2 (step 1/3)", (5, "99%", "3", "2"), "o+*5",
            "{scaleUpNum=1 useSurge=1 updateNum=1 updateMaxUnavailable=3 scaleUpLimit=1}"),
        case("update recreate partition=99% with maxUnavailable=3, maxSurge=2 (step 2/3)", (5, "99%", "3", "2"), "o+*5 n-",
            "{scaleDownNum=1 scaleDownNumOldRevision=1 deleteReadyLimit=3}"),
        case("update recreate partition=99% with maxUnavailable=3, maxSurge=2 (step 3/3)", (5, "99%", "3", "2"), "o+*4 n-", "{}"),
        case("update recreate partition=99% with maxUnavailable=40%, maxSurge=30% (step 1/3)", (5, "99%", "40%", "30%"), "o+*5",
            "{scaleUpNum=1 useSurge=1 updateNum=1 updateMaxUnavailable=2 scaleUpLimit=1}"),
        case("update recreate partition=99% with maxUnavailable=40%, maxSurge=30% (step 2/3)", (5, "99%", "40%", "30%"), "o+*5 n-",
            "{scaleDownNum=1 scaleDownNumOldRevision=1 deleteReadyLimit=2}"),
        case("update recreate partition=99% with maxUnavailable=40%, maxSurge=30% (step 3/3)", (5, "99%", "40%", "30%"), "o+*4 n-", "{}"),
        case("update recreate partition=99% with maxUnavailable=30%, maxSurge=30% (step 1/3)", (5, "99%", "30%", "30%"), "o+*5",
            "{scaleUpNum=1 useSurge=1 updateNum=1 updateMaxUnavailable=1 scaleUpLimit=1}"),
        case("update recreate partition=99% with maxUnavailable=30%, maxSurge=30% (step 2/3)", (5, "99%", "30%", "30%"), "o+*5 n-",
            "{scaleDownNum=1 scaleDownNumOldRevision=1 deleteReadyLimit=1}"),
        case("update recreate partition=99% with maxUnavailable=30%, maxSurge=30% (step 3/3)", (5, "99%", "30%", "30%"), "o+*4 n-", "{}"),
        case("revision consistent 1", (5, "0", "1", "0"), "n+*5", "{}").consistent(),
        case("revision consistent 2", (5, "3", "1", "0"), "n+*5", "{}").consistent(),
        case("revision consistent 3", (5, "3", "1", "0"), "o+*2 n+*3", "{}").consistent(),
        case("revision consistent 4", (5, "1", "1", "0"), "o+*3 n+*2", "{updateNum=2 updateMaxUnavailable=1}").consistent(),
        case("allow to update when fail to scale out normally", (5, "1", "2", "0"), "o+*2 n+*2",
            "{scaleUpNum=1 updateNum=1 updateMaxUnavailable=1 scaleUpLimit=1}").consistent(),
        case("allow to update when fail to scale in normally", (5, "1", "1", "0"), "o+*3 n+*3",
            "{scaleDownNum=1 scaleDownNumOldRevision=2 deleteReadyLimit=2 updateNum=1 updateMaxUnavailable=2}").consistent(),
        case("disable rollback feature-gate", (5, "4", "1", "0"), "o+ n+*4", "{}").no_rollback_gate(),
        case("increase replicas 0 to 5 with scale maxUnavailable = 2", (5, "0", "1", "0"), "",
            "{scaleUpNum=5 scaleUpLimit=2}").scale_max_unavailable(2),
        case("increase replicas 3 to 6 with scale maxUnavailable = 2, not ready pod = 1", (6, "0", "1", "0"), "n+ n+ n-",
            "{scaleUpNum=3 scaleUpLimit=1}").scale_max_unavailable(2),
        case("increase replicas 3 to 6 with scale maxUnavailable = 2, not ready pod = 2", (6, "0", "1", "0"), "n+ n- n-",
            "{scaleUpNum=3 scaleUpLimit=0}").scale_max_unavailable(2),
        case("[scalingExcludePreparingDelete=false] specific delete a pod with lifecycle hook (step 1/4)", (3, "0", "1", "0"),
            "n+ n+ n+d", "{deleteReadyLimit=1}"),
        case("[scalingExcludePreparingDelete=false] specific delete a pod with lifecycle hook (step 2/4)", (3, "0", "1", "0"),
            "n+ n+ n+d@PreparingDelete", "{}"),
        case("[scalingExcludePreparingDelete=false] specific delete a pod with lifecycle hook (step 3/4)", (3, "0", "1", "0"),
            "n+ n+", "{scaleUpNum=1 scaleUpLimit=1}"),
        case("[scalingExcludePreparingDelete=false] specific delete a pod with lifecycle hook (step 4/4)", (3, "0", "1", "0"),
            "n+ n+ n-", "{}"),
        case("[scalingExcludePreparingDelete=true] specific delete a pod with lifecycle hook (step 1/4)", (3, "0", "1", "0"),
            "n+ n+ n+d", "{deleteReadyLimit=1}").exclude_preparing_delete(),
        case("[scalingExcludePreparingDelete=true] specific delete a pod with lifecycle hook (step 2/4)", (3, "0", "1", "0"),
            "n+ n+ n+d@PreparingDelete", "{scaleUpNum=1 scaleUpLimit=1}").exclude_preparing_delete(),
        case("[scalingExcludePreparingDelete=true] specific delete a pod with lifecycle hook (step 3/4)", (3, "0", "1", "0"),
            "n+ n+ n+d@PreparingDelete n-", "{}").exclude_preparing_delete(),
        case("[scalingExcludePreparingDelete=true] specific delete a pod with lifecycle hook (step 4/4)", (3, "0", "1", "0"),
            "n+ n+ n+d@PreparingDelete n-", "{}").exclude_preparing_delete(),
        case("[scalingExcludePreparingDelete=true] specific delete a pod with lifecycle hook and then cancel (step 1/5)", (3, "0", "1", "0"),
            "n+ n+ n+d", "{deleteReadyLimit=1}").exclude_preparing_delete(),
        case("[scalingExcludePreparingDelete=true] specific delete a pod with lifecycle hook and then cancel (step 2/5)", (3, "0", "1", "0"),
            "n+ n+ n+d@PreparingDelete", "{scaleUpNum=1 scaleUpLimit=1}").exclude_preparing_delete(),
        case("[scalingExcludePreparingDelete=true] specific delete a pod with lifecycle hook and then cancel (step 3/5)", (3, "0", "1", "0"),
            "n+ n+ n+d@PreparingDelete n-", "{}").exclude_preparing_delete(),
        case("[scalingExcludePreparingDelete=true] specific delete a pod with lifecycle hook and then cancel (step 4/5)", (3, "0", "1", "0"),
            "n+ n+ n+ n-", "{scaleDownNum=1 deleteReadyLimit=1}").exclude_preparing_delete(),
        case("[scalingExcludePreparingDelete=true] specific delete a pod with lifecycle hook and then cancel (step 5/5)", (3, "0", "1", "0"),
            "n+*3", "{}").exclude_preparing_delete(),
        case("[scalingExcludePreparingDelete=true] specific scale down with lifecycle hook, then scale up pods (step 1/6)", (3, "0", "1", "0"),
            "n+*3", "{}").exclude_preparing_delete(),
        case("[scalingExcludePreparingDelete=true] specific scale down with lifecycle hook, then scale up pods (step 2/6)", (2, "0", "1", "0"),
            "n+ n+ n+d", "{deleteReadyLimit=2}").exclude_preparing_delete(),
        case("[scalingExcludePreparingDelete=true] specific scale down with lifecycle hook, then scale up pods (step 3/6)", (2, "0", "1", "0"),
            "n+ n+ n+d@PreparingDelete", "{}").exclude_preparing_delete(),
        case("[scalingExcludePreparingDelete=true] specific scale down with lifecycle hook, then scale up pods (step 4/6)", (3, "0", "1", "0"),
            "n+ n+ n+d@PreparingDelete", "{scaleUpNum=1 scaleUpLimit=1}").exclude_preparing_delete(),
        case("[scalingExcludePreparingDelete=true] specific scale down with lifecycle hook, then scale up pods (step 5/6)", (3, "0", "1", "0"),
            "n+ n+ n+d@PreparingDelete n-", "{}").exclude_preparing_delete(),
        case("[scalingExcludePreparingDelete=true] specific scale down with lifecycle hook, then scale up pods (step 6/6)", (3, "0", "1", "0"),
            "n+ n+ n-", "{}").exclude_preparing_delete(),
        case("[scalingWithPreparingUpdate=true] scaling up when a preparing pod is not updated, and expected-updated is 1", (4, "90%", "1", "0"),
            "o+@PreparingUpdate o+ o+", "{scaleUpNum=1 scaleUpLimit=1 scaleUpNumOldRevision=1}")
            .exclude_preparing_delete()
            .preparing_update_as_update(),
        case("[scalingWithPreparingUpdate=true] scaling up when a preparing pod is not updated, and expected-updated is 2", (4, "2", "1", "0"),
            "o+@PreparingUpdate o+ o+", "{scaleUpNum=1 scaleUpLimit=1}")
            .exclude_preparing_delete()
            .preparing_update_as_update(),
        case("[UpdateStrategyPaused=true] scale up pods with maxSurge=3,maxUnavailable=0", (5, "0", "0", "3"), "o+*3",
            "{scaleUpNum=2 scaleUpLimit=2 updateNum=3 updateMaxUnavailable=-2}").paused(),
        case("[UpdateStrategyPaused=true] scale down pods with maxSurge=3,maxUnavailable=0", (3, "0", "0", "3"), "o+*5",
            "{scaleDownNum=2 scaleDownNumOldRevision=5 deleteReadyLimit=2 updateNum=3 updateMaxUnavailable=2}").paused(),
        case("[UpdateStrategyPaused=true] create 0 newRevision pods with maxSurge=3,maxUnavailable=0", (5, "0", "0", "3"), "o+*5 n-*3",
            "{scaleDownNum=3 scaleDownNumOldRevision=5 updateNum=2 updateMaxUnavailable=3}").paused(),
        case("[UpdateStrategyPaused=true] create 0 newRevision pods with maxSurge=3,maxUnavailable=0 (partition=2)", (5, "2", "0", "3"),
            "o+*5 n-*3", "{scaleDownNum=3 scaleDownNumOldRevision=3}").paused(),
    ]
}

#[test]
fn calculate_diffs_matches_upstream_table() {
    let out = run(upstream_cases());
    assert_eq!(out.lines().filter(|l| l.starts_with("    -> ")).count(), 80);
    expect![[r#"
        an empty cloneset
            replicas=0 partition=0 maxUnavailable=1 maxSurge=0 []
            -> {}
        increase replicas to 5 (step 1/2)
            replicas=5 partition=0 maxUnavailable=1 maxSurge=0 []
            -> {scaleUpNum=5 scaleUpLimit=5}
        increase replicas to 5 (step 2/2)
            replicas=5 partition=0 maxUnavailable=1 maxSurge=0 [n+*5]
            -> {}
        specified delete 1 pod (all ready) (step 1/3)
            replicas=5 partition=0 maxUnavailable=1 maxSurge=0 [n+d n+*4]
            -> {deleteReadyLimit=1}
        specified delete 1 pod (all ready) (step 2/3)
            replicas=5 partition=0 maxUnavailable=1 maxSurge=0 [n+*4]
            -> {scaleUpNum=1 scaleUpLimit=1}
        specified delete 1 pod (all ready) (step 3/3)
            replicas=5 partition=0 maxUnavailable=1 maxSurge=0 [n+*5]
            -> {}
        specified delete 2 pod (all ready) (step 1/6)
            replicas=5 partition=0 maxUnavailable=1 maxSurge=0 [n+d*2 n+*3]
            -> {deleteReadyLimit=1}
        specified delete 2 pod (all ready) (step 2/6)
            replicas=5 partition=0 maxUnavailable=1 maxSurge=0 [n+d n+*3]
            -> {scaleUpNum=1 scaleUpLimit=1}
        specified delete 2 pod (all ready) (step 3/6)
            replicas=5 partition=0 maxUnavailable=1 maxSurge=0 [n+d n+*3 n-]
            -> {}
        specified delete 2 pod (all ready) (step 4/6)
            replicas=5 partition=0 maxUnavailable=1 maxSurge=0 [n+d n+*4]
            -> {deleteReadyLimit=1}
        specified delete 2 pod (all ready) (step 5/6)
            replicas=5 partition=0 maxUnavailable=1 maxSurge=0 [n+*4]
            -> {scaleUpNum=1 scaleUpLimit=1}
        specified delete 2 pod (all ready) (step 6/6)
            replicas=5 partition=0 maxUnavailable=1 maxSurge=0 [n+*5]
            -> {}
        specified delete 2 pod and replicas to 4 (step 1/3)
            replicas=4 partition=0 maxUnavailable=1 maxSurge=0 [n-d*2 n+*3]
            -> {deleteReadyLimit=2}
        specified delete 2 pod and replicas to 4 (step 2/3)
            replicas=4 partition=0 maxUnavailable=1 maxSurge=0 [n+*3]
            -> {scaleUpNum=1 scaleUpLimit=1}
        specified delete 2 pod and replicas to 4 (step 3/3)
            replicas=4 partition=0 maxUnavailable=1 maxSurge=0 [n+*4]
            -> {}
        update partition=3 (step 1/3)
            replicas=5 partition=3 maxUnavailable=1 maxSurge=0 [o+*5]
            -> {updateNum=2 updateMaxUnavailable=1}
        update partition=3 (step 2/3)
            replicas=5 partition=3 maxUnavailable=1 maxSurge=0 [n+ o+*4]
            -> {updateNum=1 updateMaxUnavailable=1}
        update partition=3 (step 3/3)
            replicas=5 partition=3 maxUnavailable=1 maxSurge=0 [n+*2 o+*3]
            -> {}
        rollback partition=4 (step 1/3)
            replicas=5 partition=4 maxUnavailable=2 maxSurge=0 [n+*4 o+]
            -> {updateNum=-3 updateMaxUnavailable=2}
        rollback partition=4 (step 2/3)
            replicas=5 partition=4 maxUnavailable=2 maxSurge=0 [n+*2 o+*3]
            -> {updateNum=-1 updateMaxUnavailable=2}
        rollback partition=4 (step 3/3)
            replicas=5 partition=4 maxUnavailable=2 maxSurge=0 [n+ o+*4]
            -> {}
        specified delete with maxSurge (step 1/4)
            replicas=5 partition=0 maxUnavailable=0 maxSurge=1 [n+d n+*4]
            -> {scaleUpNum=1 scaleUpLimit=1 useSurge=1}
        specified delete with maxSurge (step 2/4)
            replicas=5 partition=0 maxUnavailable=0 maxSurge=1 [n+d n+*4 n-]
            -> {useSurge=1}
        specified delete with maxSurge (step 3/4)
            replicas=5 partition=0 maxUnavailable=0 maxSurge=1 [n+d n+*5]
            -> {deleteReadyLimit=1 useSurge=1}
        specified delete with maxSurge (step 4/4)
            replicas=5 partition=0 maxUnavailable=0 maxSurge=1 [n+*5]
            -> {}
        update in-place partition=3 with maxSurge (step 1/4)
            replicas=5 partition=3 maxUnavailable=1 maxSurge=1 [o+*5]
            -> {scaleUpNum=1 scaleUpLimit=1 useSurge=1 updateNum=2 updateMaxUnavailable=1}
        update in-place partition=3 with maxSurge step 2/4
            replicas=5 partition=3 maxUnavailable=1 maxSurge=1 [o+*5 n-]
            -> {useSurge=1 updateNum=1 updateMaxUnavailable=2}
        update in-place partition=3 with maxSurge (step 3/4)
            replicas=5 partition=3 maxUnavailable=1 maxSurge=1 [o+*4 n-@Updating n-]
            -> {scaleDownNum=1 scaleDownNumOldRevision=1}
        update in-place partition=3 with maxSurge (step 4/4)
            replicas=5 partition=3 maxUnavailable=1 maxSurge=1 [o+*4 n+ n-]
            -> {scaleDownNum=1 scaleDownNumOldRevision=1 deleteReadyLimit=1}
        update recreate partition=3 with maxSurge (step 1/7)
            replicas=5 partition=3 maxUnavailable=1 maxSurge=1 [o+*5]
            -> {scaleUpNum=1 scaleUpLimit=1 useSurge=1 updateNum=2 updateMaxUnavailable=1}
        update recreate partition=3 with maxSurge (step 2/7)
            replicas=5 partition=3 maxUnavailable=1 maxSurge=1 [o+*5 n-]
            -> {useSurge=1 updateNum=1 updateMaxUnavailable=2}
        update recreate partition=3 with maxSurge (step 3/7)
            replicas=5 partition=3 maxUnavailable=1 maxSurge=1 [o+*4 o+d n-]
            -> {deleteReadyLimit=1 useSurge=1 useSurgeOldRevision=1 updateNum=1 updateMaxUnavailable=2}
        update recreate partition=3 with maxSurge (step 4/7)
            replicas=5 partition=3 maxUnavailable=1 maxSurge=1 [o+*4 n-]
            -> {scaleUpNum=1 scaleUpLimit=1 useSurge=1 updateNum=1 updateMaxUnavailable=1}
        update recreate partition=3 with maxSurge (step 5/7)
            replicas=5 partition=3 maxUnavailable=1 maxSurge=1 [o+*4 n- n-]
            -> {scaleDownNum=1 scaleDownNumOldRevision=1}
        update recreate partition=3 with maxSurge (step 6/7)
            replicas=5 partition=3 maxUnavailable=1 maxSurge=1 [o+*4 n+ n-]
            -> {scaleDownNum=1 scaleDownNumOldRevision=1 deleteReadyLimit=1}
        update recreate partition=3 with maxSurge (step 7/7)
            replicas=5 partition=3 maxUnavailable=1 maxSurge=1 [o+*3 n+ n+]
            -> {}
        update recreate partition=99% with maxUnavailable=3, maxSurge=2 (step 1/3)
            replicas=5 partition=99% maxUnavailable=3 maxSurge=2 [o+*5]
            -> {scaleUpNum=1 scaleUpLimit=1 useSurge=1 updateNum=1 updateMaxUnavailable=3}
        update recreate partition=99% with maxUnavailable=3, maxSurge=2 (step 2/3)
            replicas=5 partition=99% maxUnavailable=3 maxSurge=2 [o+*5 n-]
            -> {scaleDownNum=1 scaleDownNumOldRevision=1 deleteReadyLimit=3}
        update recreate partition=99% with maxUnavailable=3, maxSurge=2 (step 3/3)
            replicas=5 partition=99% maxUnavailable=3 maxSurge=2 [o+*4 n-]
            -> {}
        update recreate partition=99% with maxUnavailable=40%, maxSurge=30% (step 1/3)
            replicas=5 partition=99% maxUnavailable=40% maxSurge=30% [o+*5]
            -> {scaleUpNum=1 scaleUpLimit=1 useSurge=1 updateNum=1 updateMaxUnavailable=2}
        update recreate partition=99% with maxUnavailable=40%, maxSurge=30% (step 2/3)
            replicas=5 partition=99% maxUnavailable=40% maxSurge=30% [o+*5 n-]
            -> {scaleDownNum=1 scaleDownNumOldRevision=1 deleteReadyLimit=2}
        update recreate partition=99% with maxUnavailable=40%, maxSurge=30% (step 3/3)
            replicas=5 partition=99% maxUnavailable=40% maxSurge=30% [o+*4 n-]
            -> {}
        update recreate partition=99% with maxUnavailable=30%, maxSurge=30% (step 1/3)
            replicas=5 partition=99% maxUnavailable=30% maxSurge=30% [o+*5]
            -> {scaleUpNum=1 scaleUpLimit=1 useSurge=1 updateNum=1 updateMaxUnavailable=1}
        update recreate partition=99% with maxUnavailable=30%, maxSurge=30% (step 2/3)
            replicas=5 partition=99% maxUnavailable=30% maxSurge=30% [o+*5 n-]
            -> {scaleDownNum=1 scaleDownNumOldRevision=1 deleteReadyLimit=1}
        update recreate partition=99% with maxUnavailable=30%, maxSurge=30% (step 3/3)
            replicas=5 partition=99% maxUnavailable=30% maxSurge=30% [o+*4 n-]
            -> {}
        revision consistent 1
            replicas=5 partition=0 maxUnavailable=1 maxSurge=0 (revisions consistent) [n+*5]
            -> {}
        revision consistent 2
            replicas=5 partition=3 maxUnavailable=1 maxSurge=0 (revisions consistent) [n+*5]
            -> {}
        revision consistent 3
            replicas=5 partition=3 maxUnavailable=1 maxSurge=0 (revisions consistent) [o+*2 n+*3]
            -> {}
        revision consistent 4
            replicas=5 partition=1 maxUnavailable=1 maxSurge=0 (revisions consistent) [o+*3 n+*2]
            -> {updateNum=2 updateMaxUnavailable=1}
        allow to update when fail to scale out normally
            replicas=5 partition=1 maxUnavailable=2 maxSurge=0 (revisions consistent) [o+*2 n+*2]
            -> {scaleUpNum=1 scaleUpLimit=1 updateNum=1 updateMaxUnavailable=1}
        allow to update when fail to scale in normally
            replicas=5 partition=1 maxUnavailable=1 maxSurge=0 (revisions consistent) [o+*3 n+*3]
            -> {scaleDownNum=1 scaleDownNumOldRevision=2 deleteReadyLimit=2 updateNum=1 updateMaxUnavailable=2}
        disable rollback feature-gate
            replicas=5 partition=4 maxUnavailable=1 maxSurge=0 (no rollback gate) [o+ n+*4]
            -> {}
        increase replicas 0 to 5 with scale maxUnavailable = 2
            replicas=5 partition=0 maxUnavailable=1 maxSurge=0 scaleMaxUnavailable=2 []
            -> {scaleUpNum=5 scaleUpLimit=2}
        increase replicas 3 to 6 with scale maxUnavailable = 2, not ready pod = 1
            replicas=6 partition=0 maxUnavailable=1 maxSurge=0 scaleMaxUnavailable=2 [n+ n+ n-]
            -> {scaleUpNum=3 scaleUpLimit=1}
        increase replicas 3 to 6 with scale maxUnavailable = 2, not ready pod = 2
            replicas=6 partition=0 maxUnavailable=1 maxSurge=0 scaleMaxUnavailable=2 [n+ n- n-]
            -> {scaleUpNum=3}
        [scalingExcludePreparingDelete=false] specific delete a pod with lifecycle hook (step 1/4)
            replicas=3 partition=0 maxUnavailable=1 maxSurge=0 [n+ n+ n+d]
            -> {deleteReadyLimit=1}
        [scalingExcludePreparingDelete=false] specific delete a pod with lifecycle hook (step 2/4)
            replicas=3 partition=0 maxUnavailable=1 maxSurge=0 [n+ n+ n+d@PreparingDelete]
            -> {}
        [scalingExcludePreparingDelete=false] specific delete a pod with lifecycle hook (step 3/4)
            replicas=3 partition=0 maxUnavailable=1 maxSurge=0 [n+ n+]
            -> {scaleUpNum=1 scaleUpLimit=1}
        [scalingExcludePreparingDelete=false] specific delete a pod with lifecycle hook (step 4/4)
            replicas=3 partition=0 maxUnavailable=1 maxSurge=0 [n+ n+ n-]
            -> {}
        [scalingExcludePreparingDelete=true] specific delete a pod with lifecycle hook (step 1/4)
            replicas=3 partition=0 maxUnavailable=1 maxSurge=0 excludePreparingDelete [n+ n+ n+d]
            -> {deleteReadyLimit=1}
        [scalingExcludePreparingDelete=true] specific delete a pod with lifecycle hook (step 2/4)
            replicas=3 partition=0 maxUnavailable=1 maxSurge=0 excludePreparingDelete [n+ n+ n+d@PreparingDelete]
            -> {scaleUpNum=1 scaleUpLimit=1}
        [scalingExcludePreparingDelete=true] specific delete a pod with lifecycle hook (step 3/4)
            replicas=3 partition=0 maxUnavailable=1 maxSurge=0 excludePreparingDelete [n+ n+ n+d@PreparingDelete n-]
            -> {}
        [scalingExcludePreparingDelete=true] specific delete a pod with lifecycle hook (step 4/4)
            replicas=3 partition=0 maxUnavailable=1 maxSurge=0 excludePreparingDelete [n+ n+ n+d@PreparingDelete n-]
            -> {}
        [scalingExcludePreparingDelete=true] specific delete a pod with lifecycle hook and then cancel (step 1/5)
            replicas=3 partition=0 maxUnavailable=1 maxSurge=0 excludePreparingDelete [n+ n+ n+d]
            -> {deleteReadyLimit=1}
        [scalingExcludePreparingDelete=true] specific delete a pod with lifecycle hook and then cancel (step 2/5)
            replicas=3 partition=0 maxUnavailable=1 maxSurge=0 excludePreparingDelete [n+ n+ n+d@PreparingDelete]
            -> {scaleUpNum=1 scaleUpLimit=1}
        [scalingExcludePreparingDelete=true] specific delete a pod with lifecycle hook and then cancel (step 3/5)
            replicas=3 partition=0 maxUnavailable=1 maxSurge=0 excludePreparingDelete [n+ n+ n+d@PreparingDelete n-]
            -> {}
        [scalingExcludePreparingDelete=true] specific delete a pod with lifecycle hook and then cancel (step 4/5)
            replicas=3 partition=0 maxUnavailable=1 maxSurge=0 excludePreparingDelete [n+ n+ n+ n-]
            -> {scaleDownNum=1 deleteReadyLimit=1}
        [scalingExcludePreparingDelete=true] specific delete a pod with lifecycle hook and then cancel (step 5/5)
            replicas=3 partition=0 maxUnavailable=1 maxSurge=0 excludePreparingDelete [n+*3]
            -> {}
        [scalingExcludePreparingDelete=true] specific scale down with lifecycle hook, then scale up pods (step 1/6)
            replicas=3 partition=0 maxUnavailable=1 maxSurge=0 excludePreparingDelete [n+*3]
            -> {}
        [scalingExcludePreparingDelete=true] specific scale down with lifecycle hook, then scale up pods (step 2/6)
            replicas=2 partition=0 maxUnavailable=1 maxSurge=0 excludePreparingDelete [n+ n+ n+d]
            -> {deleteReadyLimit=2}
        [scalingExcludePreparingDelete=true] specific scale down with lifecycle hook, then scale up pods (step 3/6)
            replicas=2 partition=0 maxUnavailable=1 maxSurge=0 excludePreparingDelete [n+ n+ n+d@PreparingDelete]
            -> {}
        [scalingExcludePreparingDelete=true] specific scale down with lifecycle hook, then scale up pods (step 4/6)
            replicas=3 partition=0 maxUnavailable=1 maxSurge=0 excludePreparingDelete [n+ n+ n+d@PreparingDelete]
            -> {scaleUpNum=1 scaleUpLimit=1}
        [scalingExcludePreparingDelete=true] specific scale down with lifecycle hook, then scale up pods (step 5/6)
            replicas=3 partition=0 maxUnavailable=1 maxSurge=0 excludePreparingDelete [n+ n+ n+d@PreparingDelete n-]
            -> {}
        [scalingExcludePreparingDelete=true] specific scale down with lifecycle hook, then scale up pods (step 6/6)
            replicas=3 partition=0 maxUnavailable=1 maxSurge=0 excludePreparingDelete [n+ n+ n-]
            -> {}
        [scalingWithPreparingUpdate=true] scaling up when a preparing pod is not updated, and expected-updated is 1
            replicas=4 partition=90% maxUnavailable=1 maxSurge=0 excludePreparingDelete (PreparingUpdate as updated) [o+@PreparingUpdate o+ o+]
            -> {scaleUpNum=1 scaleUpNumOldRevision=1 scaleUpLimit=1}
        [scalingWithPreparingUpdate=true] scaling up when a preparing pod is not updated, and expected-updated is 2
            replicas=4 partition=2 maxUnavailable=1 maxSurge=0 excludePreparingDelete (PreparingUpdate as updated) [o+@PreparingUpdate o+ o+]
            -> {scaleUpNum=1 scaleUpLimit=1}
        [UpdateStrategyPaused=true] scale up pods with maxSurge=3,maxUnavailable=0
            replicas=5 partition=0 maxUnavailable=0 maxSurge=3 paused [o+*3]
            -> {scaleUpNum=2 scaleUpLimit=2 updateNum=3 updateMaxUnavailable=-2}
        [UpdateStrategyPaused=true] scale down pods with maxSurge=3,maxUnavailable=0
            replicas=3 partition=0 maxUnavailable=0 maxSurge=3 paused [o+*5]
            -> {scaleDownNum=2 scaleDownNumOldRevision=5 deleteReadyLimit=2 updateNum=3 updateMaxUnavailable=2}
        [UpdateStrategyPaused=true] create 0 newRevision pods with maxSurge=3,maxUnavailable=0
            replicas=5 partition=0 maxUnavailable=0 maxSurge=3 paused [o+*5 n-*3]
            -> {scaleDownNum=3 scaleDownNumOldRevision=5 updateNum=2 updateMaxUnavailable=3}
        [UpdateStrategyPaused=true] create 0 newRevision pods with maxSurge=3,maxUnavailable=0 (partition=2)
            replicas=5 partition=2 maxUnavailable=0 maxSurge=3 paused [o+*5 n-*3]
            -> {scaleDownNum=3 scaleDownNumOldRevision=3}
    "#]].assert_eq(&out);
}

/// The "CloneSet pod thrashing" rollout (shared OpenKruise reference §2.6, upstream's
/// "update in-place partition=3 with maxSurge" steps) with in-place decided before surge: the
/// same strategy updates two pods in place and never creates or deletes one. `upstream` is what
/// upstream computes for the same pods (checked against the table above where the pods match).
#[test]
fn in_place_before_surge() {
    let cases = vec![
        case(
            "partition=3 maxSurge=1 maxUnavailable=1: start",
            (5, "3", "1", "1"),
            "o+*5",
            "{scaleUpNum=1 useSurge=1 updateNum=2 updateMaxUnavailable=1 scaleUpLimit=1}",
        )
        .in_place("{updateNum=2 updateMaxUnavailable=1}"),
        case(
            "partition=3 maxSurge=1 maxUnavailable=1: one pod updating in place",
            (5, "3", "1", "1"),
            "o+*4 n-@Updating",
            "{scaleUpNum=1 useSurge=1 updateNum=1 updateMaxUnavailable=1 scaleUpLimit=1}",
        )
        .in_place("{updateNum=1 updateMaxUnavailable=1}"),
        case(
            "partition=3 maxSurge=1 maxUnavailable=1: first pod done",
            (5, "3", "1", "1"),
            "o+*4 n+",
            "{scaleUpNum=1 useSurge=1 updateNum=1 updateMaxUnavailable=1 scaleUpLimit=1}",
        )
        .in_place("{updateNum=1 updateMaxUnavailable=1}"),
        case(
            "partition=3 maxSurge=1 maxUnavailable=1: done",
            (5, "3", "1", "1"),
            "o+*3 n+*2",
            "{}",
        )
        .in_place_same(),
        case(
            "partition=0 maxSurge=20% maxUnavailable=20%: start",
            (5, "0", "20%", "20%"),
            "o+*5",
            "{scaleUpNum=1 useSurge=1 updateNum=5 updateMaxUnavailable=1 scaleUpLimit=1}",
        )
        .in_place("{updateNum=5 updateMaxUnavailable=1}"),
        // maxUnavailable rounds down to 0 next to a surge: an in-place update could never start
        // without the surge pod, so upstream's surge stays.
        case(
            "partition=3 maxSurge=1 maxUnavailable=10% (rounds to 0): surge kept",
            (5, "3", "10%", "1"),
            "o+*5",
            "{scaleUpNum=1 useSurge=1 updateNum=2 scaleUpLimit=1}",
        )
        .in_place_same(),
        // Surge that replaces a specified-delete pod is not about the update and stays.
        case(
            "specified delete with maxSurge: surge kept",
            (5, "0", "0", "1"),
            "n+d n+*4",
            "{scaleUpNum=1 useSurge=1 scaleUpLimit=1}",
        )
        .in_place_same(),
    ];
    let out = run(cases);
    expect![[r#"
        partition=3 maxSurge=1 maxUnavailable=1: start
            replicas=5 partition=3 maxUnavailable=1 maxSurge=1 (in-place) [o+*5]
            -> {updateNum=2 updateMaxUnavailable=1}   DEVIATES, upstream: {scaleUpNum=1 scaleUpLimit=1 useSurge=1 updateNum=2 updateMaxUnavailable=1}
        partition=3 maxSurge=1 maxUnavailable=1: one pod updating in place
            replicas=5 partition=3 maxUnavailable=1 maxSurge=1 (in-place) [o+*4 n-@Updating]
            -> {updateNum=1 updateMaxUnavailable=1}   DEVIATES, upstream: {scaleUpNum=1 scaleUpLimit=1 useSurge=1 updateNum=1 updateMaxUnavailable=1}
        partition=3 maxSurge=1 maxUnavailable=1: first pod done
            replicas=5 partition=3 maxUnavailable=1 maxSurge=1 (in-place) [o+*4 n+]
            -> {updateNum=1 updateMaxUnavailable=1}   DEVIATES, upstream: {scaleUpNum=1 scaleUpLimit=1 useSurge=1 updateNum=1 updateMaxUnavailable=1}
        partition=3 maxSurge=1 maxUnavailable=1: done
            replicas=5 partition=3 maxUnavailable=1 maxSurge=1 (in-place) [o+*3 n+*2]
            -> {}
        partition=0 maxSurge=20% maxUnavailable=20%: start
            replicas=5 partition=0 maxUnavailable=20% maxSurge=20% (in-place) [o+*5]
            -> {updateNum=5 updateMaxUnavailable=1}   DEVIATES, upstream: {scaleUpNum=1 scaleUpLimit=1 useSurge=1 updateNum=5 updateMaxUnavailable=1}
        partition=3 maxSurge=1 maxUnavailable=10% (rounds to 0): surge kept
            replicas=5 partition=3 maxUnavailable=10% maxSurge=1 (in-place) [o+*5]
            -> {scaleUpNum=1 scaleUpLimit=1 useSurge=1 updateNum=2}
        specified delete with maxSurge: surge kept
            replicas=5 partition=0 maxUnavailable=0 maxSurge=1 (in-place) [n+d n+*4]
            -> {scaleUpNum=1 scaleUpLimit=1 useSurge=1}
    "#]].assert_eq(&out);
}
