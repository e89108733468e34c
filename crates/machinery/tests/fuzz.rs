//! Property-based fuzzing of the pure machinery on the stable toolchain (no libFuzzer, no
//! sanitizers): arbitrary JSON documents and patches through the three patch engines, arbitrary
//! selector strings, arbitrary schemas applied to arbitrary values, and protobuf request bodies
//! (kubectl's, changed structurally and byte by byte, and envelopes of random messages).
//!
//! The property everywhere is that nothing panics; errors are fine. Where a format promises a
//! law, it is checked too: RFC 7386 merge patches are idempotent, a strategic merge patch without
//! lists or directives is a merge patch, a selector's canonical string selects the same objects
//! and parses back to itself, pruning leaves nothing to prune, a schema `check_structural`
//! accepts compiles, and a decoded protobuf body is an object with `apiVersion` and `kind`.
//!
//! Generators draw keys from the field names the engines treat specially (`containers`, `env`,
//! `ports`, `$patch`, `$setElementOrder/containers`, ...) and values from small pools, so merge
//! keys collide and lists really merge, plus fully random keys and values.
//!
//! Knobs, for a longer session (`cargo test -p kinetic-machinery --test fuzz --release`, best
//! with `CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true` so arithmetic overflow still panics):
//! - `KINETIC_FUZZ_CASES=N`: cases per property instead of each property's default.
//! - `KINETIC_FUZZ_SEED=N`: the RNG seed (fixed by default, so a failure reproduces).
//!
//! Failures found by fuzzing are kept at the end as plain tests named after the bug, with the
//! minimised input written out literally. Inputs that take the whole process down (a stack
//! overflow, memory exhaustion) run in a child process, so they fail one test, not the binary.

use std::sync::OnceLock;

use kinetic_machinery::patch::{json_patch, merge_patch, strategic_merge_patch};
use kinetic_machinery::schema::{Schema, SchemaError};
use kinetic_machinery::selector::{FieldSelector, LabelSelector};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{RngSeed, TestCaseError};
use serde_json::{Map, Number, Value, json};

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// "kinetic" in ASCII.
const DEFAULT_SEED: u64 = 0x006b_696e_6574_6963;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The seed, printed once per test so that a failure's output names it.
fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    let seed = *SEED.get_or_init(|| env_u64("KINETIC_FUZZ_SEED").unwrap_or(DEFAULT_SEED));
    eprintln!("fuzz seed {seed} (rerun with KINETIC_FUZZ_SEED={seed})");
    seed
}

/// `default_cases` cases (or `KINETIC_FUZZ_CASES`), a fixed seed, and no regression files: the
/// regressions worth keeping are written below as named tests.
fn config(default_cases: u32) -> ProptestConfig {
    let cases = env_u64("KINETIC_FUZZ_CASES")
        .map_or(default_cases, |n| u32::try_from(n).unwrap_or(u32::MAX));
    ProptestConfig {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed()),
        max_shrink_iters: 10_000,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// JSON generators
// ---------------------------------------------------------------------------------------------

/// Field names the patch engines, the schemas and the selectors give meaning to, and a few that
/// stress path rendering and pointer escaping.
const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
    "finalizers",
    "ownerReferences",
    "uid",
    "spec",
    "template",
    "containers",
    "initContainers",
    "ephemeralContainers",
    "env",
    "value",
    "ports",
    "containerPort",
    "port",
    "protocol",
    "image",
    "args",
    "volumes",
    "volumeMounts",
    "mountPath",
    "volumeDevices",
    "devicePath",
    "hostAliases",
    "ip",
    "topologySpreadConstraints",
    "topologyKey",
    "tolerations",
    "podCIDRs",
    "status",
    "conditions",
    "type",
    "addresses",
    "podIPs",
    "secrets",
    "webhooks",
    "replicas",
    "selector",
    "strategy",
    "items",
    "$patch",
    "$retainKeys",
    "$setElementOrder/containers",
    "$setElementOrder/finalizers",
    "$setElementOrder/env",
    "$setElementOrder/ports",
    "$setElementOrder/",
    "$deleteFromPrimitiveList/finalizers",
    "$deleteFromPrimitiveList/args",
    "$deleteFromPrimitiveList/",
    "$ref",
    "$schema",
    "$bogus",
    "",
    "a",
    "b",
    "a.b",
    "x[0]",
    "\"",
    "~1",
    "/",
    "é",
];

/// String values: merge keys that collide, directive values, kinds with list exceptions.
const STRINGS: &[&str] = &[
    "",
    "a",
    "b",
    "c",
    "app",
    "sidecar",
    "replace",
    "delete",
    "merge",
    "Pod",
    "Deployment",
    "CertificateSigningRequest",
    "CustomResourceDefinition",
    "TCP",
    "10.0.0.1",
    "kubernetes",
    "foregroundDeletion",
    "é",
    "\u{0}",
    "🦀",
    "a=b",
    "-",
];

fn key() -> BoxedStrategy<String> {
    prop_oneof![
        6 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => ".{0,12}",
    ]
    .boxed()
}

fn string() -> BoxedStrategy<String> {
    prop_oneof![
        6 => prop::sample::select(STRINGS).prop_map(str::to_owned),
        1 => ".{0,16}",
    ]
    .boxed()
}

fn number() -> BoxedStrategy<Value> {
    prop_oneof![
        prop::sample::select(vec![0_i64, 1, -1, 80, 443, i64::MIN, i64::MAX]).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(vec![u64::MAX, 1 << 63]).prop_map(Value::from),
        prop::sample::select(vec![80.0, 0.5, -0.0, 1e308, -1e-308, 2.5e9])
            .prop_map(|f| Value::Number(Number::from_f64(f).unwrap_or_else(|| 0.into()))),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
    ]
    .boxed()
}

fn leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        2 => number(),
        4 => string().prop_map(Value::String),
    ]
    .boxed()
}

fn object(entries: impl Strategy<Value = Vec<(String, Value)>>) -> impl Strategy<Value = Value> {
    entries.prop_map(|entries| Value::Object(entries.into_iter().collect()))
}

/// Any JSON value, with keys from [`KEYS`] most of the time.
fn value() -> BoxedStrategy<Value> {
    leaf()
        .prop_recursive(5, 48, 6, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..6).prop_map(Value::Array),
                object(vec((key(), inner), 0..6)),
            ]
        })
        .boxed()
}

/// Values that identify list elements, so that stored and patch elements collide; `80` and
/// `80.0` are the same key to upstream's Go `==` on float64s.
fn merge_key_value() -> BoxedStrategy<Value> {
    prop_oneof![
        6 => prop::sample::select(vec!["a", "b", "c", ""]).prop_map(Value::from),
        2 => prop::sample::select(vec![80_i64, 443]).prop_map(Value::from),
        1 => Just(json!(80.0)),
        1 => Just(Value::Null),
        1 => Just(json!({"x": 1})),
        1 => Just(json!(["a"])),
    ]
    .boxed()
}

/// A `$patch` value: the three directives, and garbage.
fn patch_directive() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => Just(Value::from("replace")),
        4 => Just(Value::from("delete")),
        2 => Just(Value::from("merge")),
        1 => leaf(),
    ]
    .boxed()
}

/// An entry `(key, value)` present with probability `p`.
fn maybe(
    p: f64,
    key: &'static str,
    value: impl Strategy<Value = Value> + 'static,
) -> BoxedStrategy<Option<(String, Value)>> {
    prop::option::weighted(p, value.prop_map(move |v| (key.to_owned(), v))).boxed()
}

/// Directive entries as `kubectl apply` and `kubectl patch` send them, and malformed ones.
fn directives() -> BoxedStrategy<Vec<(String, Value)>> {
    let order_key = prop::sample::select(vec![
        "$setElementOrder/containers",
        "$setElementOrder/env",
        "$setElementOrder/ports",
        "$setElementOrder/finalizers",
        "$setElementOrder/conditions",
        "$setElementOrder/tolerations",
        "$setElementOrder/",
    ]);
    let order_element = prop_oneof![
        3 => merge_key_value().prop_map(|v| json!({"name": v})),
        1 => merge_key_value().prop_map(|v| json!({"containerPort": v})),
        1 => merge_key_value().prop_map(|v| json!({"type": v})),
        2 => merge_key_value(),
    ];
    let delete_key = prop::sample::select(vec![
        "$deleteFromPrimitiveList/finalizers",
        "$deleteFromPrimitiveList/args",
        "$deleteFromPrimitiveList/containers",
        "$deleteFromPrimitiveList/",
    ]);
    let order = prop_oneof![4 => vec(order_element, 0..4).prop_map(Value::Array), 1 => leaf()];
    let deleted =
        prop_oneof![4 => vec(merge_key_value(), 0..4).prop_map(Value::Array), 1 => leaf()];
    let entry = prop_oneof![
        3 => (order_key, order).prop_map(|(k, v)| (k.to_owned(), v)),
        2 => (delete_key, deleted).prop_map(|(k, v)| (k.to_owned(), v)),
        1 => prop_oneof![
            4 => vec(key().prop_map(Value::String), 0..4).prop_map(Value::Array),
            1 => leaf(),
        ]
        .prop_map(|v| ("$retainKeys".to_owned(), v)),
        2 => patch_directive().prop_map(|v| ("$patch".to_owned(), v)),
    ];
    prop_oneof![3 => Just(Vec::new()), 1 => vec(entry, 1..3)].boxed()
}

/// An element of a list merged by key: usually an object with the key, sometimes without it,
/// sometimes a directive element, sometimes not an object at all.
fn keyed_element(merge_key: &'static str, extra: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    let entries = (
        prop::option::weighted(0.85, merge_key_value()),
        prop::option::weighted(0.1, patch_directive()),
        vec((key(), extra), 0..3),
    );
    prop_oneof![
        8 => entries.prop_map(move |(id, directive, rest)| {
            let mut m = Map::new();
            if let Some(id) = id {
                m.insert(merge_key.to_owned(), id);
            }
            if let Some(d) = directive {
                m.insert("$patch".to_owned(), d);
            }
            m.extend(rest);
            Value::Object(m)
        }),
        1 => leaf(),
    ]
    .boxed()
}

/// A list that is a list most of the time.
fn list(element: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    prop_oneof![8 => vec(element, 0..4).prop_map(Value::Array), 1 => leaf()].boxed()
}

/// A container (or init or ephemeral container) with the lists merged by key inside it.
fn container() -> BoxedStrategy<Value> {
    let port = keyed_element("containerPort", leaf());
    let env = keyed_element("name", leaf());
    let mount = keyed_element("mountPath", leaf());
    let fields = vec![
        maybe(0.9, "name", merge_key_value()),
        maybe(0.5, "image", string().prop_map(Value::String)),
        maybe(0.4, "ports", list(port)),
        maybe(0.4, "env", list(env)),
        maybe(0.2, "volumeMounts", list(mount)),
        maybe(0.2, "args", list(string().prop_map(Value::String).boxed())),
        maybe(0.1, "$patch", patch_directive()),
    ];
    (fields, directives(), vec((key(), leaf()), 0..2))
        .prop_map(|(fields, directives, extra)| {
            Value::Object(fields.into_iter().flatten().chain(directives).chain(extra).collect())
        })
        .boxed()
}

fn metadata() -> BoxedStrategy<Value> {
    let fields = vec![
        maybe(0.6, "name", merge_key_value()),
        maybe(0.5, "finalizers", list(merge_key_value())),
        maybe(0.3, "ownerReferences", list(keyed_element("uid", leaf()))),
        maybe(0.4, "labels", object(vec((key(), leaf()), 0..3))),
        maybe(0.1, "$patch", patch_directive()),
    ];
    (fields, directives())
        .prop_map(|(fields, directives)| {
            Value::Object(fields.into_iter().flatten().chain(directives).collect())
        })
        .boxed()
}

/// A pod spec (or a pod template spec when `depth > 0`, with another level inside).
fn spec(depth: u32) -> BoxedStrategy<Value> {
    let mut fields = vec![
        maybe(0.7, "containers", list(container())),
        maybe(0.2, "initContainers", list(container())),
        maybe(0.2, "volumes", list(keyed_element("name", value()))),
        maybe(0.2, "ports", list(keyed_element("port", leaf()))),
        maybe(0.2, "tolerations", list(value())),
        maybe(0.1, "finalizers", list(merge_key_value())),
        maybe(0.1, "podCIDRs", list(merge_key_value())),
        maybe(0.2, "strategy", value()),
        maybe(0.1, "$patch", patch_directive()),
    ];
    if depth > 0 {
        let template = (prop::option::weighted(0.5, metadata()), spec(depth - 1)).prop_map(
            |(metadata, spec)| {
                let mut m = Map::new();
                if let Some(metadata) = metadata {
                    m.insert("metadata".to_owned(), metadata);
                }
                m.insert("spec".to_owned(), spec);
                Value::Object(m)
            },
        );
        fields.push(maybe(0.5, "template", template));
    }
    (fields, directives(), vec((key(), leaf()), 0..2))
        .prop_map(|(fields, directives, extra)| {
            Value::Object(fields.into_iter().flatten().chain(directives).chain(extra).collect())
        })
        .boxed()
}

/// Something shaped like a built-in object (a Pod, a Deployment), usable as a stored object or
/// as a strategic merge patch.
fn k8s_object() -> BoxedStrategy<Value> {
    let kind = prop::sample::select(vec![
        "Pod",
        "Deployment",
        "Service",
        "Node",
        "CertificateSigningRequest",
        "CustomResourceDefinition",
    ]);
    let status = (
        maybe(0.6, "conditions", list(keyed_element("type", leaf()))),
        maybe(0.2, "podIPs", list(keyed_element("ip", leaf()))),
    )
        .prop_map(|(a, b)| Value::Object([a, b].into_iter().flatten().collect()));
    let fields = vec![
        maybe(0.5, "kind", kind.prop_map(Value::from)),
        maybe(0.7, "metadata", metadata()),
        maybe(0.8, "spec", spec(1)),
        maybe(0.3, "status", status),
        maybe(0.1, "conditions", list(keyed_element("type", leaf()))),
        maybe(0.1, "secrets", list(keyed_element("name", leaf()))),
    ];
    (fields, directives(), vec((key(), value()), 0..2))
        .prop_map(|(fields, directives, extra)| {
            Value::Object(fields.into_iter().flatten().chain(directives).chain(extra).collect())
        })
        .boxed()
}

/// A document or patch: mostly shaped, sometimes anything at all.
fn document() -> BoxedStrategy<Value> {
    prop_oneof![8 => k8s_object(), 1 => value()].boxed()
}

// ---------------------------------------------------------------------------------------------
// JSON patch (RFC 6902)
// ---------------------------------------------------------------------------------------------

/// Every JSON pointer into `doc` (RFC 6901 escaped), plus the `-` past the end of each array.
fn pointers(doc: &Value) -> Vec<String> {
    fn walk(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    walk(child, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, format!("{at}/{i}"), out);
                }
                out.push(format!("{at}/-"));
            }
            _ => {}
        }
        out.push(at);
    }
    let mut out = Vec::new();
    walk(doc, String::new(), &mut out);
    out
}

/// A pointer into the document (existing, one level below an existing one, or past the end)
/// most of the time, otherwise any pointer-like or malformed string.
fn pointer(existing: Vec<String>) -> BoxedStrategy<String> {
    let segment = prop_oneof![
        8 => prop::sample::select(vec![
            "spec", "containers", "metadata", "finalizers", "name", "ports", "env", "template",
            "0", "1", "2", "-", "00", "01", "-1", "18446744073709551616", "", "~0", "~1", "a~1b",
        ])
        .prop_map(str::to_owned),
        1 => key(),
    ];
    let random = prop_oneof![
        8 => vec(segment.clone(), 0..5).prop_map(|segments| {
            segments.iter().map(|s| format!("/{s}")).collect::<String>()
        }),
        1 => ".{0,10}",
        1 => prop::sample::select(vec!["", "/", "//", "~", "/~", "/~2", "spec"])
            .prop_map(str::to_owned),
    ];
    let existing = prop::sample::select(existing);
    prop_oneof![
        4 => existing.clone(),
        2 => (existing, segment).prop_map(|(p, s)| format!("{p}/{s}")),
        1 => random,
    ]
    .boxed()
}

/// One operation: well formed for its op most of the time, otherwise missing or mistyped
/// members.
fn json_patch_operation(existing: Vec<String>) -> BoxedStrategy<Value> {
    let op = prop::sample::select(vec!["add", "remove", "replace", "move", "copy", "test"]);
    let well_formed = (op, pointer(existing.clone()), pointer(existing.clone()), value()).prop_map(
        |(op, path, from, value)| match op {
            "remove" => json!({"op": op, "path": path}),
            "move" | "copy" => json!({"op": op, "from": from, "path": path}),
            _ => json!({"op": op, "path": path, "value": value}),
        },
    );
    let any_op = prop_oneof![
        8 => prop::sample::select(vec!["add", "remove", "replace", "move", "copy", "test"])
            .prop_map(Value::from),
        1 => leaf(),
    ];
    let fields = vec![
        maybe(0.9, "op", any_op),
        maybe(
            0.9,
            "path",
            prop_oneof![8 => pointer(existing.clone()).prop_map(Value::String), 1 => leaf()],
        ),
        maybe(0.7, "value", value()),
        maybe(
            0.5,
            "from",
            prop_oneof![8 => pointer(existing).prop_map(Value::String), 1 => leaf()],
        ),
    ];
    prop_oneof![
        16 => well_formed,
        2 => fields.prop_map(|f| Value::Object(f.into_iter().flatten().collect())),
        1 => value(),
    ]
    .boxed()
}

/// A document and a JSON patch whose paths mostly exist in it.
fn json_patch_case() -> BoxedStrategy<(Value, Value)> {
    document()
        .prop_flat_map(|doc| {
            let existing = pointers(&doc);
            let patch = prop_oneof![
                12 => vec(json_patch_operation(existing), 0..4).prop_map(Value::Array),
                1 => value(),
            ];
            (Just(doc), patch)
        })
        .boxed()
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn json_patch_never_panics((doc, patch) in json_patch_case()) {
        let _ = json_patch(&doc, &patch);
    }
}

// ---------------------------------------------------------------------------------------------
// JSON merge patch (RFC 7386)
// ---------------------------------------------------------------------------------------------

/// A merge patch without arrays and directives, lists being where merge and strategic merge
/// differ.
fn plain_object() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        number(),
        string().prop_map(Value::String),
    ];
    // `$` keys are directives to strategic merge.
    let key = key().prop_map(|k| if k.starts_with('$') { format!("_{k}") } else { k });
    let value = leaf.prop_recursive(3, 24, 5, {
        let key = key.clone();
        move |inner| {
            let entry = (key.clone(), prop_oneof![6 => inner, 1 => Just(Value::Null)]);
            object(vec(entry, 0..5))
        }
    });
    object(vec((key, prop_oneof![6 => value, 1 => Just(Value::Null)]), 0..5)).boxed()
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn merge_patch_never_panics_and_is_idempotent(doc in document(), patch in document()) {
        if let Ok(once) = merge_patch(&doc, &patch) {
            let twice = merge_patch(&once, &patch)
                .map_err(|e| TestCaseError::fail(format!("second application failed: {e}")))?;
            prop_assert_eq!(once, twice, "applying the merge patch twice differs from once");
        }
    }

    /// Without lists and directives, strategic merge is merge patch (upstream's
    /// `mergeMap` on maps and scalars is RFC 7386).
    #[test]
    fn strategic_merge_without_lists_is_merge_patch(doc in k8s_object(), patch in plain_object()) {
        let merged = merge_patch(&doc, &patch).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let strategic =
            strategic_merge_patch(&doc, &patch).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(merged, strategic);
    }
}

// ---------------------------------------------------------------------------------------------
// Strategic merge patch
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn strategic_merge_patch_never_panics(doc in document(), patch in document()) {
        let _ = strategic_merge_patch(&doc, &patch);
    }

    /// A patch derived from the document (same merge keys, same lists) reaches deeper into
    /// the list merging than two independent documents do.
    #[test]
    fn strategic_merge_patch_of_a_document_with_itself_never_panics(
        doc in k8s_object(),
        extra in directives(),
    ) {
        let mut patch = doc.clone();
        if let Value::Object(m) = &mut patch {
            m.extend(extra);
        }
        let _ = strategic_merge_patch(&doc, &patch);
        let _ = strategic_merge_patch(&patch, &doc);
    }
}

// ---------------------------------------------------------------------------------------------
// Selectors
// ---------------------------------------------------------------------------------------------

/// A label selector as kubectl users write them: requirements of every operator, keys and
/// values valid and not, joined by commas with stray spaces.
fn label_requirement() -> BoxedStrategy<String> {
    let label_key = prop_oneof![
        8 => prop::sample::select(vec![
            "a", "app", "tier", "example.com/app", "k8s.io/name", "a-b", "a_b", "a.b", "-a",
            "a-", "x/y/z", "/a", "a/", "é", "in", "notin",
        ])
        .prop_map(str::to_owned),
        1 => Just("k".repeat(64)),
        1 => Just(format!("{}/a", "d".repeat(254))),
        1 => "[a-z0-9./_-]{0,8}",
    ];
    let label_value = prop_oneof![
        8 => prop::sample::select(vec![
            "", "a", "web", "1", "-1", "007", "1.5", "a b", "a,b", "(a)", "é",
        ])
        .prop_map(str::to_owned),
        1 => Just("v".repeat(64)),
        1 => Just("99999999999999999999".to_owned()),
        1 => "[a-z0-9._-]{0,8}",
    ];
    let space = prop::sample::select(vec!["", "", "", " ", "  ", "\t"]);
    let values = vec(label_value.clone(), 0..4).prop_map(|v| v.join(","));
    (
        prop::sample::select(vec![
            "", "!", "=", "==", "!=", " in ", " notin ", ">", "<", " In ", " exists",
        ]),
        label_key,
        label_value,
        values,
        space.clone(),
        space,
    )
        .prop_map(|(op, key, value, values, s1, s2)| match op {
            "" => format!("{s1}{key}{s2}"),
            "!" => format!("{s1}!{s2}{key}"),
            " in " | " notin " | " In " => format!("{s1}{key}{op}{s2}({values}){s1}"),
            " exists" => format!("{key}{op}"),
            _ => format!("{s1}{key}{s2}{op}{s1}{value}{s2}"),
        })
        .boxed()
}

fn label_selector_string() -> BoxedStrategy<String> {
    let token = prop::sample::select(vec![
        "a",
        "app",
        "example.com/app",
        "-a",
        "in",
        "notin",
        "!",
        "=",
        "==",
        "!=",
        ",",
        "(",
        ")",
        " ",
        ">",
        "<",
        "1",
        "-1",
        "é",
        "🦀",
        "\\",
        "\t",
    ]);
    prop_oneof![
        12 => vec(label_requirement(), 0..4).prop_map(|r| r.join(",")),
        3 => vec(token, 0..12).prop_map(|t| t.concat()),
        1 => ".{0,24}",
    ]
    .boxed()
}

fn field_selector_string() -> BoxedStrategy<String> {
    let token = prop::sample::select(vec![
        "metadata.name",
        "metadata.namespace",
        "spec.nodeName",
        "status.phase",
        "=",
        "==",
        "!=",
        ",",
        "\\",
        "\\,",
        "\\=",
        "\\\\",
        "\\n",
        "a",
        "é",
        " ",
        "!",
        ".",
        "..",
        "true",
        "3",
    ]);
    prop_oneof![
        6 => vec(token, 0..10).prop_map(|t| t.concat()),
        1 => ".{0,24}",
    ]
    .boxed()
}

fn labels() -> BoxedStrategy<Option<Map<String, Value>>> {
    let label_key = prop_oneof![
        prop::sample::select(vec!["a", "app", "tier", "example.com/app", "a.b"])
            .prop_map(str::to_owned),
        key(),
    ];
    let label_value = prop_oneof![
        4 => prop::sample::select(vec!["", "a", "b", "1", "2", "-1", "web"]).prop_map(Value::from),
        1 => leaf(),
    ];
    prop::option::weighted(
        0.9,
        vec((label_key, label_value), 0..4).prop_map(|kv| kv.into_iter().collect()),
    )
    .boxed()
}

fn label_selector_value() -> BoxedStrategy<Value> {
    let token = prop::sample::select(vec!["a", "app", "tier", "example.com/app", "", "a b", "é"]);
    let operator = prop_oneof![
        6 => prop::sample::select(vec!["In", "NotIn", "Exists", "DoesNotExist"])
            .prop_map(Value::from),
        1 => prop::sample::select(vec!["Gt", "in", ""]).prop_map(Value::from),
        1 => leaf(),
    ];
    let values = prop_oneof![
        6 => vec(token.clone().prop_map(Value::from), 0..3).prop_map(Value::Array),
        1 => value(),
    ];
    let expression = vec![
        maybe(0.9, "key", token.clone().prop_map(Value::from)),
        maybe(0.9, "operator", operator),
        maybe(0.7, "values", values),
    ]
    .prop_map(|f| Value::Object(f.into_iter().flatten().collect()));
    let label = prop_oneof![4 => string().prop_map(Value::String), 1 => leaf()];
    let match_labels = prop_oneof![
        6 => object(vec((token.prop_map(str::to_owned), label), 0..3)),
        1 => value(),
    ];
    let match_expressions =
        prop_oneof![6 => vec(expression, 0..3).prop_map(Value::Array), 1 => value()];
    let selector = vec![
        maybe(0.6, "matchLabels", match_labels),
        maybe(0.6, "matchExpressions", match_expressions),
    ];
    prop_oneof![
        8 => selector.prop_map(|f| Value::Object(f.into_iter().flatten().collect())),
        1 => value(),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn label_selector_parse_never_panics_and_round_trips(
        s in label_selector_string(),
        labels in labels(),
    ) {
        if let Ok(selector) = LabelSelector::parse(&s) {
            let _ = selector.matches(labels.as_ref());
            let _ = selector.is_empty();
            let canonical = selector.to_string();
            let again = LabelSelector::parse(&canonical).map_err(|e| {
                TestCaseError::fail(format!("canonical form {canonical:?} does not parse: {e}"))
            })?;
            prop_assert_eq!(again, selector, "canonical form {:?}", canonical);
        }
    }

    #[test]
    fn field_selector_parse_never_panics_and_round_trips(
        s in field_selector_string(),
        obj in document(),
    ) {
        if let Ok(selector) = FieldSelector::parse(&s) {
            let _ = selector.matches(&obj);
            let _ = selector.fields().count();
            let _ = selector.requires_exact_match("metadata.name");
            // The canonical form selects the same objects, and is a fixed point once parsed
            // (terms are sorted by their raw text, so `==` and `=` may sort differently).
            let canonical = selector.to_string();
            let again = FieldSelector::parse(&canonical).map_err(|e| {
                TestCaseError::fail(format!("canonical form {canonical:?} does not parse: {e}"))
            })?;
            prop_assert_eq!(again.matches(&obj), selector.matches(&obj));
            let stable = again.to_string();
            let reparsed = FieldSelector::parse(&stable).ok();
            prop_assert_eq!(reparsed, Some(again), "canonical form {:?}", stable);
        }
    }

    #[test]
    fn label_selector_from_value_never_panics(v in label_selector_value(), labels in labels()) {
        if let Ok(selector) = LabelSelector::from_label_selector(&v) {
            let _ = selector.matches(labels.as_ref());
            let canonical = selector.to_string();
            LabelSelector::parse(&canonical).map_err(|e| {
                TestCaseError::fail(format!("canonical form {canonical:?} does not parse: {e}"))
            })?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Structural schemas
// ---------------------------------------------------------------------------------------------

/// A `pattern`: RE2 syntax tokens, valid and not, including what the private engine rejects
/// or leaves unenforced.
fn pattern() -> BoxedStrategy<String> {
    let token = prop::sample::select(vec![
        "a",
        "b",
        "é",
        "🦀",
        ".",
        "*",
        "+",
        "?",
        "*?",
        "|",
        "(",
        ")",
        "[",
        "]",
        "^",
        "$",
        "\\",
        "\\d",
        "\\w",
        "\\s",
        "\\W",
        "\\b",
        "\\B",
        "\\A",
        "\\z",
        "\\x41",
        "\\x{1F600}",
        "\\x{",
        "\\x{110000}",
        "\\x",
        "\\p{L}",
        "\\Q",
        "\\1",
        "\\.",
        "\\n",
        "{",
        "}",
        "{2}",
        "{1,3}",
        "{2,}",
        "{1000}",
        "{1001}",
        "{2,1}",
        "{99999999999}",
        ",",
        "-",
        "[a-z]",
        "[^a]",
        "[a-]",
        "[]a]",
        "[\\d-z]",
        "[z-a]",
        "[[:alpha:]]",
        "(?:",
        "(?P<n>",
        "(?<n>",
        "(?P<>",
        "(?=",
        "(?!",
        "(?<=",
        "(?i)",
        "0",
        "9",
    ]);
    prop_oneof![6 => vec(token, 0..10).prop_map(|t| t.concat()), 1 => ".{0,12}"].boxed()
}

fn schema_number() -> BoxedStrategy<Value> {
    prop_oneof![
        16 => prop::sample::select(vec![0_i64, 1, 2, 3, 10]).prop_map(Value::from),
        2 => number(),
        1 => leaf(),
    ]
    .boxed()
}

const REFS: &[&str] = &[
    "#/$defs/A",
    "#/$defs/B",
    "#/definitions/A",
    "#/components/schemas/B",
    "#/$defs/a~1b",
    "#/$defs/",
    "#/$defs/missing",
    "A",
    "",
];

/// A JSON schema as a CRD or schemars would write it, with every keyword the compiler reads,
/// keywords of the wrong JSON type, and references into [`definitions`].
fn schema(depth: u32) -> BoxedStrategy<Value> {
    let ty = prop_oneof![
        24 => prop::sample::select(vec![
            "object", "array", "string", "integer", "number", "boolean",
        ])
        .prop_map(Value::from),
        1 => prop::sample::select(vec!["null", "", "date"]).prop_map(Value::from),
        1 => leaf(),
        1 => vec(prop::sample::select(vec!["string", "null", "integer", "x"]), 0..3)
            .prop_map(Value::from),
    ];
    let flag = || prop_oneof![20 => any::<bool>().prop_map(Value::Bool), 1 => leaf()];
    let mut fields = vec![
        maybe(0.8, "type", ty),
        maybe(
            0.05,
            "$ref",
            prop_oneof![
                4 => Just(Value::from("#/$defs/A")),
                1 => prop::sample::select(REFS).prop_map(Value::from),
            ],
        ),
        maybe(0.15, "nullable", flag()),
        maybe(0.1, "x-kubernetes-preserve-unknown-fields", flag()),
        maybe(0.1, "x-kubernetes-int-or-string", flag()),
        maybe(0.1, "x-kubernetes-embedded-resource", flag()),
        maybe(0.15, "default", value()),
        maybe(
            0.15,
            "enum",
            prop_oneof![16 => vec(leaf(), 0..4).prop_map(Value::Array), 1 => leaf()],
        ),
        maybe(
            0.15,
            "format",
            prop::sample::select(vec!["int32", "int64", "date-time", "", "x"])
                .prop_map(Value::from),
        ),
        maybe(0.2, "pattern", prop_oneof![16 => pattern().prop_map(Value::String), 1 => leaf()]),
        maybe(0.1, "minLength", schema_number()),
        maybe(0.1, "maxLength", schema_number()),
        maybe(0.1, "minimum", schema_number()),
        maybe(0.1, "maximum", schema_number()),
        maybe(0.1, "exclusiveMinimum", prop_oneof![flag(), schema_number()]),
        maybe(0.1, "exclusiveMaximum", prop_oneof![flag(), schema_number()]),
        maybe(0.1, "multipleOf", schema_number()),
        maybe(0.1, "minItems", schema_number()),
        maybe(0.1, "maxItems", schema_number()),
        maybe(0.1, "uniqueItems", flag()),
        maybe(0.1, "minProperties", schema_number()),
        maybe(0.1, "maxProperties", schema_number()),
        maybe(
            0.15,
            "required",
            prop_oneof![
                16 => vec(key().prop_map(Value::String), 0..3).prop_map(Value::Array),
                1 => leaf(),
            ],
        ),
        maybe(0.05, "description", string().prop_map(Value::String)),
    ];
    if depth > 0 {
        let sub = || schema(depth - 1);
        fields.extend([
            maybe(
                0.5,
                "properties",
                prop_oneof![24 => object(vec((key(), sub()), 0..4)), 1 => leaf()],
            ),
            maybe(
                0.3,
                "items",
                prop_oneof![6 => sub(), 1 => vec(sub(), 0..2).prop_map(Value::Array)],
            ),
            maybe(
                0.2,
                "additionalProperties",
                prop_oneof![any::<bool>().prop_map(Value::Bool), sub()],
            ),
            maybe(
                0.1,
                "allOf",
                prop_oneof![16 => vec(sub(), 0..3).prop_map(Value::Array), 1 => leaf()],
            ),
            maybe(0.1, "anyOf", vec(sub(), 0..3).prop_map(Value::Array)),
            maybe(0.1, "oneOf", vec(sub(), 0..3).prop_map(Value::Array)),
            maybe(0.05, "not", sub()),
        ]);
    }
    prop_oneof![
        40 => fields.prop_map(|f| Value::Object(f.into_iter().flatten().collect())),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => leaf(),
    ]
    .boxed()
}

/// Definitions for `$ref`s: `A` (often), `B` and `a/b`, which may refer to each other.
fn definitions() -> BoxedStrategy<Option<Map<String, Value>>> {
    let entries =
        vec![maybe(0.9, "A", schema(2)), maybe(0.5, "B", schema(2)), maybe(0.2, "a/b", schema(1))];
    prop::option::weighted(0.8, entries.prop_map(|e| e.into_iter().flatten().collect())).boxed()
}

/// `schema` with the keywords whose value is `null` removed, as the API server stores a CRD
/// (values inside `default`, `enum` and `example` are data and stay).
fn without_null_keywords(schema: &Value) -> Value {
    match schema {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| match k.as_str() {
                    "default" | "enum" | "example" => (k.clone(), v.clone()),
                    _ => (k.clone(), without_null_keywords(v)),
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_null_keywords).collect()),
        other => other.clone(),
    }
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn schemas_never_panic(
        root in schema(3),
        defs in definitions(),
        values in vec(document(), 1..4),
    ) {
        let _ = Schema::check_structural(&root, "spec.versions[0].schema.openAPIV3Schema");
        // Defaults reached through a `$ref` cycle expand without bound (see
        // `defaults_through_a_recursive_ref_stay_bounded`); the server never builds such a
        // schema (CRD schemas have no definitions, built-in schemas no defaults), so the
        // property leaves them out until that is fixed.
        let text = format!("{root}{defs:?}");
        let recursive_defaults = text.contains("$ref") && text.contains("default");
        if let Ok(schema) = Schema::from_json(&root, defs.as_ref()) {
            for v in values {
                let _ = schema.validate(&v);
                let mut pruned = v.clone();
                let _ = schema.prune(&mut pruned);
                // Pruning leaves nothing unknown behind.
                let mut again = pruned.clone();
                let second = schema.prune(&mut again);
                prop_assert!(second.is_empty(), "second prune removed {:?}", second);
                prop_assert_eq!(&again, &pruned);
                if !recursive_defaults {
                    let mut defaulted = pruned;
                    schema.default(&mut defaulted);
                    let _ = schema.validate(&defaulted);
                }
            }
        }
    }

    /// Patterns reach the private regex engine both through `check_structural` (CRD
    /// creation) and through validation of strings.
    #[test]
    fn patterns_never_panic(p in pattern(), inputs in vec(".{0,8}|[ab0_é\n ]{0,8}", 1..4)) {
        let root = json!({"type": "object", "properties": {"s": {"type": "string", "pattern": p}}});
        let _ = Schema::check_structural(&root, "");
        if let Ok(schema) = Schema::from_json(&root, None) {
            for input in inputs {
                let _ = schema.validate(&json!({"s": input}));
            }
        }
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// The API server accepts a CRD whose schemas pass `check_structural` and then serves it
    /// with `from_json(schema, None)`: what the first accepts, the second must compile, or the
    /// CRD is stored but never served. The server drops `null` keywords first (Go decodes them
    /// to absent fields), and its built-in CRD schema has already refused keywords of the wrong
    /// JSON type, so those compile errors do not count.
    #[test]
    fn structural_schemas_compile(root in schema(3)) {
        let causes = Schema::check_structural(&root, "spec.versions[0].schema.openAPIV3Schema");
        prop_assert_eq!(causes.is_empty(), Schema::is_structural(&root));
        let stored = without_null_keywords(&root);
        if Schema::is_structural(&stored) {
            match Schema::from_json(&stored, None) {
                Ok(_)
                | Err(SchemaError::InvalidKeyword { .. } | SchemaError::NotAnObject { .. }) => {}
                Err(e) => prop_assert!(false, "structural, yet not served: {}", e),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Protobuf request bodies
// ---------------------------------------------------------------------------------------------

/// A protobuf field as the generator builds it, before encoding.
#[derive(Debug, Clone)]
enum PbField {
    Varint(u32, u64),
    Fixed64(u32, u64),
    Fixed32(u32, u32),
    Bytes(u32, Vec<u8>),
    Message(u32, Vec<PbField>),
    /// A nested `k8s\0` envelope, as `RawExtension` fields may carry.
    Envelope(u32, Vec<u8>),
    /// A key with a wire type Kubernetes never uses (groups, 6, 7).
    BadWireType(u32, u8),
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_key(out: &mut Vec<u8>, number: u32, wire_type: u8) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wire_type));
}

fn put_bytes(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_key(out, number, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn encode_fields(fields: &[PbField]) -> Vec<u8> {
    let mut out = Vec::new();
    for field in fields {
        match field {
            PbField::Varint(n, v) => {
                put_key(&mut out, *n, 0);
                put_varint(&mut out, *v);
            }
            PbField::Fixed64(n, v) => {
                put_key(&mut out, *n, 1);
                out.extend_from_slice(&v.to_le_bytes());
            }
            PbField::Fixed32(n, v) => {
                put_key(&mut out, *n, 5);
                out.extend_from_slice(&v.to_le_bytes());
            }
            PbField::Bytes(n, b) | PbField::Envelope(n, b) => put_bytes(&mut out, *n, b),
            PbField::Message(n, inner) => put_bytes(&mut out, *n, &encode_fields(inner)),
            PbField::BadWireType(n, w) => put_key(&mut out, *n, *w),
        }
    }
    out
}

/// `k8s\0` + `runtime.Unknown{typeMeta: {apiVersion, kind}, raw, contentEncoding, contentType}`.
fn envelope(
    api_version: &str,
    kind: &str,
    raw: &[u8],
    encoding: &str,
    content_type: &str,
) -> Vec<u8> {
    let mut type_meta = Vec::new();
    put_bytes(&mut type_meta, 1, api_version.as_bytes());
    put_bytes(&mut type_meta, 2, kind.as_bytes());
    let mut out = b"k8s\0".to_vec();
    put_bytes(&mut out, 1, &type_meta);
    put_bytes(&mut out, 2, raw);
    if !encoding.is_empty() {
        put_bytes(&mut out, 3, encoding.as_bytes());
    }
    if !content_type.is_empty() {
        put_bytes(&mut out, 4, content_type.as_bytes());
    }
    out
}

/// Kinds the decoder knows (and a few it does not).
const PB_KINDS: &[(&str, &str)] = &[
    ("v1", "Pod"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("v1", "Namespace"),
    ("v1", "Node"),
    ("v1", "Event"),
    ("v1", "ServiceAccount"),
    ("v1", "PodList"),
    ("v1", "DeleteOptions"),
    ("v1", "Binding"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "ControllerRevision"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
    ("autoscaling/v1", "Scale"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("networking.k8s.io/v1", "Ingress"),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
    ("coordination.k8s.io/v1", "Lease"),
    ("v1", "Nope"),
    ("", ""),
];

fn pb_number() -> BoxedStrategy<u32> {
    prop_oneof![
        24 => 1_u32..=16,
        2 => 17_u32..=64,
        1 => prop::sample::select(vec![536_870_911, 19_000]),
    ]
    .boxed()
}

fn pb_varint() -> BoxedStrategy<u64> {
    prop_oneof![
        4 => 0_u64..=3,
        2 => any::<u64>(),
        // Times just inside and outside the years 0 to 9999, negative int32s and int64s.
        1 => prop::sample::select(vec![
            253_402_300_799_u64,
            253_402_300_800,
            (-62_135_596_800_i64) as u64,
            (-62_135_596_801_i64) as u64,
            u64::MAX,
            1 << 63,
            (-1_i64) as u64,
            u64::from(u32::MAX),
        ]),
    ]
    .boxed()
}

fn pb_bytes() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        4 => string().prop_map(String::into_bytes),
        2 => vec(any::<u8>(), 0..16),
        1 => value().prop_map(|v| v.to_string().into_bytes()),
        1 => Just(b"{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\"}".to_vec()),
        1 => Just(vec![0xff, 0xfe, 0x80]),
    ]
    .boxed()
}

/// A message of random fields at the field numbers built-in messages use (1 to 16 mostly), so
/// the table-driven decoder meets both matching and mismatched wire types.
fn pb_message() -> BoxedStrategy<Vec<PbField>> {
    // Mostly length-delimited: most Kubernetes fields are strings and messages.
    let leaf = prop_oneof![
        8 => (pb_number(), pb_varint()).prop_map(|(n, v)| PbField::Varint(n, v)),
        1 => (pb_number(), any::<u64>()).prop_map(|(n, v)| PbField::Fixed64(n, v)),
        1 => (pb_number(), any::<u32>()).prop_map(|(n, v)| PbField::Fixed32(n, v)),
        16 => (pb_number(), pb_bytes()).prop_map(|(n, b)| PbField::Bytes(n, b)),
        1 => (Just(0_u32), pb_varint()).prop_map(|(n, v)| PbField::Varint(n, v)),
        1 => (pb_number(), prop::sample::select(vec![3_u8, 4, 6, 7]))
            .prop_map(|(n, w)| PbField::BadWireType(n, w)),
    ];
    vec(leaf, 0..6)
        .prop_recursive(6, 64, 6, |inner| {
            let nested = prop_oneof![
                8 => (pb_number(), inner.clone()).prop_map(|(n, m)| PbField::Message(n, m)),
                1 => (pb_number(), prop::sample::select(PB_KINDS), inner.clone()).prop_map(
                    |(n, (v, k), m)| {
                        PbField::Envelope(n, envelope(v, k, &encode_fields(&m), "", ""))
                    }
                ),
            ];
            vec(prop_oneof![4 => nested, 2 => inner.prop_map(|m| PbField::Message(1, m))], 0..5)
        })
        .boxed()
}

/// The bodies kubectl sent for these, captured by the protobuf decoder's author.
const PB_FIXTURES: &[&[u8]] = &[
    include_bytes!("../src/protobuf/fixtures/create-configmap.pb"),
    include_bytes!("../src/protobuf/fixtures/create-cronjob.pb"),
    include_bytes!("../src/protobuf/fixtures/create-deployment.pb"),
    include_bytes!("../src/protobuf/fixtures/create-job.pb"),
    include_bytes!("../src/protobuf/fixtures/create-namespace.pb"),
    include_bytes!("../src/protobuf/fixtures/create-secret-generic.pb"),
    include_bytes!("../src/protobuf/fixtures/create-service-nodeport.pb"),
    include_bytes!("../src/protobuf/fixtures/create-serviceaccount.pb"),
];

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Duplicate(usize, usize),
    Truncate(usize),
}

fn mutated_fixture() -> BoxedStrategy<Vec<u8>> {
    let byte = prop_oneof![
        any::<u8>(),
        prop::sample::select(vec![0x00_u8, 0x01, 0x08, 0x0a, 0x12, 0x7f, 0x80, 0xff]),
    ];
    let mutation = prop_oneof![
        4 => (any::<usize>(), byte).prop_map(|(i, b)| Mutation::Set(i, b)),
        2 => (any::<usize>(), vec(any::<u8>(), 1..4)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (any::<usize>(), 1_usize..8).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => (any::<usize>(), 1_usize..32).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ];
    (prop::sample::select(PB_FIXTURES), vec(mutation, 1..6))
        .prop_map(|(fixture, mutations)| {
            let mut body = fixture.to_vec();
            for m in mutations {
                let len = body.len().max(1);
                match m {
                    Mutation::Set(i, b) => {
                        if let Some(slot) = body.get_mut(i % len) {
                            *slot = b;
                        }
                    }
                    Mutation::Insert(i, b) => {
                        let at = i % (body.len() + 1);
                        body.splice(at..at, b);
                    }
                    Mutation::Remove(i, n) => {
                        let at = i % len;
                        let end = (at + n).min(body.len());
                        if at < end {
                            body.drain(at..end);
                        }
                    }
                    Mutation::Duplicate(i, n) => {
                        let at = i % len;
                        let end = (at + n).min(body.len());
                        let copy = body.get(at..end).map(<[u8]>::to_vec).unwrap_or_default();
                        body.splice(at..at, copy);
                    }
                    Mutation::Truncate(i) => body.truncate(i % len),
                }
            }
            body
        })
        .boxed()
}

/// Reads `bytes` as a message of fields, reading a length-delimited field as a nested message
/// when it parses as one (strings usually do not); `None` if `bytes` is not a message.
fn parse_fields(bytes: &[u8], depth: usize) -> Option<Vec<PbField>> {
    fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
        let mut v = 0_u64;
        for shift in (0..64).step_by(7) {
            let b = *bytes.get(*at)?;
            *at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut fields = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let key = varint(bytes, &mut at)?;
        let number = u32::try_from(key >> 3).ok().filter(|n| *n > 0)?;
        fields.push(match key & 7 {
            0 => PbField::Varint(number, varint(bytes, &mut at)?),
            1 => {
                let b = bytes.get(at..at + 8)?;
                at += 8;
                PbField::Fixed64(number, u64::from_le_bytes(b.try_into().ok()?))
            }
            5 => {
                let b = bytes.get(at..at + 4)?;
                at += 4;
                PbField::Fixed32(number, u32::from_le_bytes(b.try_into().ok()?))
            }
            2 => {
                let len = usize::try_from(varint(bytes, &mut at)?).ok()?;
                let b = bytes.get(at..at.checked_add(len)?)?;
                at += len;
                let printable = std::str::from_utf8(b).is_ok_and(|s| !s.contains('\0'));
                match (b.starts_with(b"k8s\0"), printable, depth < 32) {
                    (true, _, _) => PbField::Envelope(number, b.to_vec()),
                    (false, false, true) if !b.is_empty() => match parse_fields(b, depth + 1) {
                        Some(inner) => PbField::Message(number, inner),
                        None => PbField::Bytes(number, b.to_vec()),
                    },
                    _ => PbField::Bytes(number, b.to_vec()),
                }
            }
            _ => return None,
        });
    }
    Some(fields)
}

/// What to do at one place of a parsed kubectl body.
#[derive(Debug, Clone)]
enum TreeMutation {
    /// Replace a varint's or a length-delimited field's value by one of the same wire type.
    SameType(u64, Vec<u8>),
    /// Replace the field's value, keeping its number.
    Varint(u64),
    Bytes(Vec<u8>),
    /// Replace the field with a random message at the same number.
    Message(Vec<PbField>),
    /// Repeat the field (repeated fields, or a singular one given twice).
    Duplicate,
    Remove,
    /// Add a field next to it.
    Insert(PbField),
}

/// The number of fields in `fields` and below, in pre-order.
fn count_fields(fields: &[PbField]) -> usize {
    fields
        .iter()
        .map(|f| match f {
            PbField::Message(_, inner) => 1 + count_fields(inner),
            _ => 1,
        })
        .sum()
}

/// Applies `m` to the `index`th field in pre-order; returns the fields still to skip.
fn mutate_tree(fields: &mut Vec<PbField>, mut index: usize, m: &TreeMutation) -> usize {
    let mut i = 0;
    while i < fields.len() {
        if index == 0 {
            let number = match &fields[i] {
                PbField::Varint(n, _)
                | PbField::Fixed64(n, _)
                | PbField::Fixed32(n, _)
                | PbField::Bytes(n, _)
                | PbField::Message(n, _)
                | PbField::Envelope(n, _)
                | PbField::BadWireType(n, _) => *n,
            };
            match m.clone() {
                TreeMutation::SameType(v, b) => match &fields[i] {
                    PbField::Varint(..) => fields[i] = PbField::Varint(number, v),
                    PbField::Bytes(..) => fields[i] = PbField::Bytes(number, b),
                    _ => {}
                },
                TreeMutation::Varint(v) => fields[i] = PbField::Varint(number, v),
                TreeMutation::Bytes(b) => fields[i] = PbField::Bytes(number, b),
                TreeMutation::Message(inner) => fields[i] = PbField::Message(number, inner),
                TreeMutation::Duplicate => {
                    let copy = fields[i].clone();
                    fields.insert(i, copy);
                }
                TreeMutation::Remove => {
                    fields.remove(i);
                }
                TreeMutation::Insert(f) => fields.insert(i, f),
            }
            return 0;
        }
        index -= 1;
        if let PbField::Message(_, inner) = &mut fields[i] {
            let below = count_fields(inner);
            if index < below {
                return mutate_tree(inner, index, m);
            }
            index -= below;
        }
        i += 1;
    }
    index
}

/// kubectl's bodies, parsed into fields and changed in place, then encoded again with correct
/// lengths: well-formed protobuf with real field numbers and wire types at every depth.
fn structurally_mutated_fixture() -> BoxedStrategy<Vec<u8>> {
    let leaf = prop_oneof![
        (pb_number(), pb_varint()).prop_map(|(n, v)| PbField::Varint(n, v)),
        (pb_number(), pb_bytes()).prop_map(|(n, b)| PbField::Bytes(n, b)),
    ];
    let mutation = prop_oneof![
        12 => (pb_varint(), pb_bytes()).prop_map(|(v, b)| TreeMutation::SameType(v, b)),
        1 => pb_varint().prop_map(TreeMutation::Varint),
        1 => pb_bytes().prop_map(TreeMutation::Bytes),
        1 => pb_message().prop_map(TreeMutation::Message),
        3 => Just(TreeMutation::Duplicate),
        3 => Just(TreeMutation::Remove),
        1 => leaf.prop_map(TreeMutation::Insert),
    ];
    (prop::sample::select(PB_FIXTURES), vec((any::<usize>(), mutation), 1..5))
        .prop_map(|(fixture, mutations)| {
            let Some(rest) = fixture.strip_prefix(b"k8s\0".as_slice()) else {
                return fixture.to_vec();
            };
            let Some(mut unknown) = parse_fields(rest, 0) else { return fixture.to_vec() };
            // The object is the envelope's `raw` (field 2), read as a message.
            for field in &mut unknown {
                if let PbField::Bytes(2, raw) = field
                    && let Some(object) = parse_fields(raw, 1)
                {
                    *field = PbField::Message(2, object);
                }
            }
            for (index, m) in mutations {
                let count = count_fields(&unknown).max(1);
                mutate_tree(&mut unknown, index % count, &m);
            }
            [b"k8s\0".as_slice(), &encode_fields(&unknown)].concat()
        })
        .boxed()
}

/// Protobuf bodies: well-formed envelopes of random messages for known kinds, mutated kubectl
/// bodies, and garbage after the magic.
fn protobuf_body() -> BoxedStrategy<Vec<u8>> {
    let encodings = prop_oneof![12 => Just(""), 1 => Just("gzip")];
    let content_types = prop_oneof![
        10 => Just(""),
        2 => Just("application/vnd.kubernetes.protobuf"),
        1 => Just("x"),
    ];
    let generated = (prop::sample::select(PB_KINDS), pb_message(), encodings, content_types)
        .prop_map(|((v, k), m, e, c)| envelope(v, k, &encode_fields(&m), e, c));
    prop_oneof![
        4 => generated,
        6 => structurally_mutated_fixture(),
        3 => mutated_fixture(),
        1 => vec(any::<u8>(), 0..64).prop_map(|tail| [b"k8s\0".as_slice(), &tail].concat()),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config(3000))]

    /// The decoder's documented guarantee: an error or a value, never a panic; and a value is
    /// an object that says what it is.
    #[test]
    fn protobuf_decode_never_panics(body in protobuf_body()) {
        if let Ok(v) = kinetic_machinery::protobuf::decode(&body) {
            prop_assert!(v.is_object(), "decoded to {}", v);
            prop_assert!(v["kind"].is_string() && v["apiVersion"].is_string(), "{}", v);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Regressions found by fuzzing, each with its minimised input
// ---------------------------------------------------------------------------------------------

/// Runs the calling test again in a child process (this test binary, only that test, with the
/// usual 2 MiB test-thread stack and at most `memory_mib` of address space) and fails if the
/// child does not pass within `limit`. For inputs that take the whole process down rather than
/// panic: a stack overflow aborts, memory exhaustion aborts or gets the process killed.
///
/// Returns `true` in the child, which then runs the input; `false` in the parent once the
/// child passed.
fn in_isolated_child(test: &str, limit: std::time::Duration, memory_mib: u64) -> bool {
    if std::env::var("KINETIC_FUZZ_CHILD").as_deref() == Ok(test) {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let ulimit = format!("ulimit -v {} && exec \"$0\" \"$@\"", memory_mib * 1024);
    let mut child = std::process::Command::new("sh")
        .args(["-c", &ulimit])
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env("KINETIC_FUZZ_CHILD", test)
        .env_remove("RUST_MIN_STACK")
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sh starts the child");
    let stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(stderr), &mut text);
        text
    });
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{test}: the input did not finish within {limit:?} (the child was killed)");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let stderr = reader.join().unwrap_or_default();
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = lines[lines.len().saturating_sub(12)..].join("\n");
    // A signal (SIGABRT from a stack overflow or a failed allocation, SIGKILL from the OOM
    // killer) means the process went down; exit status 101 is an ordinary test failure.
    assert!(status.success(), "{test}: the child process failed ({status}):\n{tail}");
    false
}

/// A `pattern` of 100,000 nested groups: the private regex parser recurses once per group
/// (`Parser::group` -> `alternation` -> `concatenation` -> `atom`), as do `emit` and the
/// AST's drop, and overflows the stack, which aborts the process. CRD creation compiles every
/// `pattern` (`Schema::check_structural`), so one request body kills the API server. RE2
/// rejects nesting deeper than 1000 ("expression nests too deeply").
#[test]
fn deeply_nested_pattern_does_not_overflow_the_stack() {
    let test = "deeply_nested_pattern_does_not_overflow_the_stack";
    if !in_isolated_child(test, std::time::Duration::from_secs(60), 1024) {
        return;
    }
    let pattern = format!("{}a{}", "(".repeat(100_000), ")".repeat(100_000));
    let root =
        json!({"type": "object", "properties": {"s": {"type": "string", "pattern": pattern}}});
    let _ = Schema::check_structural(&root, "spec.versions[0].schema.openAPIV3Schema");
    if let Ok(schema) = Schema::from_json(&root, None) {
        let _ = schema.validate(&json!({"s": "a"}));
    }
}

/// Defaults reached through a `$ref` cycle: each defaulted `l` and `r` is an `A` again, whose
/// missing `l` and `r` get defaulted in turn, doubling the object at every level down to
/// `MAX_DEPTH` (512), so `Schema::default` exhausts memory (found as a 24 GB OOM kill by
/// `schemas_never_panic`, seed 13). Not reachable through the API server today: CRD schemas
/// are compiled without definitions and the built-in schemas carry no defaults.
#[test]
fn defaults_through_a_recursive_ref_stay_bounded() {
    let test = "defaults_through_a_recursive_ref_stay_bounded";
    if !in_isolated_child(test, std::time::Duration::from_secs(30), 384) {
        return;
    }
    let defs = json!({"A": {"type": "object", "properties": {
        "l": {"$ref": "#/$defs/A", "default": {}},
        "r": {"$ref": "#/$defs/A", "default": {}},
    }}});
    let schema = Schema::from_json(&json!({"$ref": "#/$defs/A"}), defs.as_object())
        .expect("the schema compiles");
    let mut v = json!({});
    schema.default(&mut v);
}

/// Schemas `check_structural` accepts (so the API server stores the CRD) that
/// `Schema::from_json(schema, None)` cannot compile (so `crd::sync_registry` logs "custom
/// resource definition not served" and the resource is never served): a `$ref` (upstream
/// refuses it: "$ref is not supported"), a `type` that is not a JSON type below the root
/// (upstream: "Unsupported value"), and `type: ""` (upstream: no type, which is valid with
/// `x-kubernetes-preserve-unknown-fields`). Found by `structural_schemas_compile`.
#[test]
fn check_structural_accepts_only_schemas_that_compile() {
    let accepted_but_not_compiled = [
        json!({"type": "object", "$ref": "#/$defs/A"}),
        json!({"type": "object", "properties": {"name": {"type": "a"}}}),
        json!({"type": "", "x-kubernetes-preserve-unknown-fields": true}),
    ];
    let failures: Vec<String> = accepted_but_not_compiled
        .iter()
        .filter(|root| Schema::is_structural(root))
        .filter_map(|root| Schema::from_json(root, None).err().map(|e| format!("{root}: {e}")))
        .collect();
    assert!(failures.is_empty(), "structural but not compilable:\n{}", failures.join("\n"));
}
