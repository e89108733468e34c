//! Table tests after upstream's `structured-merge-diff` `merge` package cases (multiple
//! appliers, conflicts, set and associative lists, removal of fields an applier stops applying)
//! and the API server's field manager tests.

use serde_json::{Value, json};

use super::*;
use crate::schema::Schema;

/// A schema with every list and map type: `list` atomic, `set` a set, `items` a map list keyed
/// by `name`, `ports` keyed by `port` and `protocol` (defaulted), `labels` a granular map and
/// `selector` an atomic one.
fn schema() -> Schema {
    Schema::from_json(
        &json!({"type": "object", "properties": {
            "numeric": {"type": "integer"},
            "string": {"type": "string"},
            "other": {"type": "string"},
            "list": {"type": "array", "items": {"type": "string"},
                     "x-kubernetes-list-type": "atomic"},
            "set": {"type": "array", "items": {"type": "string"},
                    "x-kubernetes-list-type": "set"},
            "items": {"type": "array", "x-kubernetes-list-type": "map",
                      "x-kubernetes-list-map-keys": ["name"],
                      "items": {"type": "object", "properties": {
                          "name": {"type": "string"}, "value": {"type": "string"},
                          "extra": {"type": "string"}}}},
            "ports": {"type": "array", "x-kubernetes-list-type": "map",
                      "x-kubernetes-list-map-keys": ["port", "protocol"],
                      "items": {"type": "object", "properties": {
                          "port": {"type": "integer"},
                          "protocol": {"type": "string", "default": "TCP"}}}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "selector": {"type": "object", "additionalProperties": {"type": "string"},
                         "x-kubernetes-map-type": "atomic"}
        }}),
        None,
    )
    .unwrap()
}

fn applier(name: &str) -> Manager {
    Manager::new(name, "Apply", "v1", None)
}

fn updater(name: &str) -> Manager {
    Manager::new(name, "Update", "v1", None)
}

/// A sequence of writes to one object, as upstream's `State` runs them.
struct State {
    types: Box<dyn Types>,
    live: Option<Value>,
    managers: Vec<Manager>,
}

impl State {
    fn new() -> Self {
        let schema: &'static Schema = Box::leak(Box::new(schema()));
        Self { types: Box::new(SchemaTypes(schema)), live: None, managers: Vec::new() }
    }

    fn apply(&mut self, who: &str, config: Value, force: bool) -> Result<(), Vec<Conflict>> {
        let out = apply(
            self.live.as_ref(),
            &config,
            self.managers.clone(),
            applier(who),
            force,
            &*self.types,
        )?;
        self.live = Some(out.object);
        self.managers = out.managers;
        Ok(())
    }

    fn update(&mut self, who: &str, new: Value) {
        self.managers =
            update(self.live.as_ref(), &new, self.managers.clone(), updater(who), &*self.types);
        self.live = Some(new);
    }

    fn owners(&self) -> Vec<(String, Vec<String>)> {
        self.managers
            .iter()
            .map(|m| (m.manager.clone(), m.fields.iter().map(display_path).collect()))
            .collect()
    }
}

fn owners(list: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    list.iter()
        .map(|(m, p)| ((*m).to_owned(), p.iter().map(|s| (*s).to_owned()).collect()))
        .collect()
}

#[test]
fn apply_twice_with_the_same_value_shares_ownership() {
    // Upstream: merge/multiple_appliers_test.go, "apply twice, same value".
    let mut s = State::new();
    s.apply("a", json!({"numeric": 1, "string": "x"}), false).unwrap();
    s.apply("b", json!({"numeric": 1}), false).unwrap();
    assert_eq!(s.live, Some(json!({"numeric": 1, "string": "x"})));
    assert_eq!(s.owners(), owners(&[("a", &[".numeric", ".string"]), ("b", &[".numeric"])]));
}

#[test]
fn a_different_value_conflicts_and_force_takes_ownership() {
    // Upstream: merge/conflict_test.go, "conflict on scalar" and its forced variant.
    let mut s = State::new();
    s.apply("a", json!({"numeric": 1, "string": "x"}), false).unwrap();
    let err = s.apply("b", json!({"numeric": 2, "string": "y"}), false).unwrap_err();
    let paths: Vec<String> = err.iter().map(|c| display_path(&c.path)).collect();
    assert_eq!(paths, [".numeric", ".string"]);
    assert_eq!(
        conflict_message(&err),
        "Apply failed with 2 conflicts: conflicts with \"a\":\n- .numeric\n- .string"
    );
    assert_eq!(
        conflict_message(&err[..1]),
        "Apply failed with 1 conflict: conflict with \"a\": .numeric"
    );
    assert_eq!(s.live, Some(json!({"numeric": 1, "string": "x"})), "nothing changed");
    s.apply("b", json!({"numeric": 2}), true).unwrap();
    assert_eq!(s.live, Some(json!({"numeric": 2, "string": "x"})));
    assert_eq!(s.owners(), owners(&[("a", &[".string"]), ("b", &[".numeric"])]));
}

#[test]
fn an_update_takes_ownership_and_a_later_apply_conflicts_with_the_updater() {
    // Upstream: merge/update_test.go, "apply, update, apply" (the controller's change wins
    // ownership; the applier must force it back).
    let mut s = State::new();
    s.apply("kubectl", json!({"numeric": 1, "string": "x"}), false).unwrap();
    s.update("controller", json!({"numeric": 3, "string": "x"}));
    assert_eq!(s.owners(), owners(&[("kubectl", &[".string"]), ("controller", &[".numeric"])]));
    let err = s.apply("kubectl", json!({"numeric": 1, "string": "x"}), false).unwrap_err();
    assert_eq!(
        conflict_message(&err),
        "Apply failed with 1 conflict: conflict with \"controller\" using v1: .numeric"
    );
    // Applying the updater's value is no conflict: both own it.
    s.apply("kubectl", json!({"numeric": 3, "string": "x"}), false).unwrap();
    assert_eq!(
        s.owners(),
        owners(&[("kubectl", &[".numeric", ".string"]), ("controller", &[".numeric"])])
    );
}

#[test]
fn fields_an_applier_stops_applying_are_removed_unless_someone_else_owns_them() {
    // Upstream: merge/multiple_appliers_test.go "remove field" and prune's addBackOwnedItems.
    let mut s = State::new();
    s.apply("a", json!({"numeric": 1, "string": "x", "other": "o", "labels": {"k": "v"}}), false)
        .unwrap();
    s.apply("b", json!({"other": "o"}), false).unwrap();
    s.apply("a", json!({"numeric": 1}), false).unwrap();
    assert_eq!(s.live, Some(json!({"numeric": 1, "other": "o"})), "labels emptied and gone");
    assert_eq!(s.owners(), owners(&[("a", &[".numeric"]), ("b", &[".other"])]));
}

#[test]
fn map_lists_merge_by_key_and_keep_other_managers_items() {
    // Upstream: merge/key_test.go and the associative-list cases of multiple_appliers_test.go.
    let mut s = State::new();
    s.apply(
        "a",
        json!({"items": [{"name": "x", "value": "1"}, {"name": "y", "value": "2"}]}),
        false,
    )
    .unwrap();
    s.apply(
        "b",
        json!({"items": [{"name": "z", "value": "3"}, {"name": "x", "extra": "e"}]}),
        false,
    )
    .unwrap();
    assert_eq!(
        s.live,
        Some(json!({"items": [
            {"name": "x", "value": "1", "extra": "e"},
            {"name": "y", "value": "2"},
            {"name": "z", "value": "3"}]}))
    );
    s.apply("a", json!({"items": [{"name": "x", "value": "1"}]}), false).unwrap();
    assert_eq!(
        s.live,
        Some(json!({"items": [
            {"name": "x", "value": "1", "extra": "e"}, {"name": "z", "value": "3"}]}))
    );
    let a = &s.managers[0];
    assert_eq!(
        to_fields_v1(&a.fields),
        json!({"f:items": {"k:{\"name\":\"x\"}": {".": {}, "f:name": {}, "f:value": {}}}})
    );
    let err = s.apply("b", json!({"items": [{"name": "x", "value": "9"}]}), false).unwrap_err();
    assert_eq!(display_path(&err[0].path), ".items[name=\"x\"].value");
}

#[test]
fn set_lists_merge_by_value() {
    // Upstream: merge/set_test.go, "apply update apply no overlap".
    let mut s = State::new();
    s.apply("a", json!({"set": ["a", "b"]}), false).unwrap();
    s.apply("b", json!({"set": ["c"]}), false).unwrap();
    assert_eq!(s.live, Some(json!({"set": ["a", "b", "c"]})));
    s.apply("a", json!({"set": ["a"]}), false).unwrap();
    assert_eq!(s.live, Some(json!({"set": ["a", "c"]})));
    assert_eq!(s.owners(), owners(&[("a", &[".set[=\"a\"]"]), ("b", &[".set[=\"c\"]"])]));
}

#[test]
fn atomic_lists_and_maps_are_one_field() {
    // Upstream: merge/atomic_test.go (`x-kubernetes-list-type: atomic`,
    // `x-kubernetes-map-type: atomic`).
    let mut s = State::new();
    s.apply("a", json!({"list": ["a", "b"], "selector": {"x": "1", "y": "2"}}), false).unwrap();
    assert_eq!(s.owners(), owners(&[("a", &[".list", ".selector"])]));
    let err = s.apply("b", json!({"list": ["c"], "selector": {"x": "1"}}), false).unwrap_err();
    let paths: Vec<String> = err.iter().map(|c| display_path(&c.path)).collect();
    assert_eq!(paths, [".list", ".selector"]);
    s.apply("b", json!({"list": ["c"], "selector": {"x": "1"}}), true).unwrap();
    assert_eq!(s.live, Some(json!({"list": ["c"], "selector": {"x": "1"}})));
    // A granular map's entries are owned one by one.
    s.apply("c", json!({"labels": {"k": "v"}}), false).unwrap();
    s.apply("d", json!({"labels": {"l": "w"}}), false).unwrap();
    assert_eq!(s.live.as_ref().unwrap()["labels"], json!({"k": "v", "l": "w"}));
}

#[test]
fn a_key_the_config_leaves_out_takes_its_default() {
    // The server defaulted `protocol: TCP`; a manifest without it names the same item
    // (upstream fills list-map keys from the schema's defaults).
    let mut s = State::new();
    s.live = Some(json!({"ports": [{"port": 80, "protocol": "TCP"}]}));
    s.apply("a", json!({"ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}), false).unwrap();
    assert_eq!(
        s.live,
        Some(json!({"ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}))
    );
    assert_eq!(
        s.owners(),
        owners(&[(
            "a",
            &[
                ".ports[port=53,protocol=\"UDP\"]",
                ".ports[port=53,protocol=\"UDP\"].port",
                ".ports[port=53,protocol=\"UDP\"].protocol",
                ".ports[port=80,protocol=\"TCP\"]",
                ".ports[port=80,protocol=\"TCP\"].port",
            ]
        )])
    );
}

#[test]
fn updates_move_changed_fields_and_drop_removed_ones() {
    // Upstream: fieldmanager's TestUpdate*: an update owns what it adds or changes; a field it
    // removes goes from every manager; no change keeps the managers as they are.
    let mut s = State::new();
    s.update("create", json!({"numeric": 1, "labels": {"a": "1"}, "items": [{"name": "x"}]}));
    assert_eq!(
        s.owners(),
        owners(&[(
            "create",
            &[".items[name=\"x\"]", ".items[name=\"x\"].name", ".labels.a", ".numeric"]
        )])
    );
    s.update("ctl", json!({"numeric": 2, "labels": {}, "items": [{"name": "x", "value": "v"}]}));
    assert_eq!(
        s.owners(),
        owners(&[
            ("create", &[".items[name=\"x\"]", ".items[name=\"x\"].name"]),
            ("ctl", &[".items[name=\"x\"].value", ".numeric"]),
        ])
    );
    let before = s.managers.clone();
    s.update("other", s.live.clone().unwrap());
    assert_eq!(s.managers, before);
}

#[test]
fn builtin_kinds_merge_by_their_patch_merge_keys() {
    let types = BuiltinTypes { kind: Some("Deployment".into()) };
    let live = json!({"spec": {"replicas": 1, "selector": {"matchLabels": {"app": "w"}},
        "template": {"spec": {"containers": [
            {"name": "web", "image": "a", "ports": [{"containerPort": 80, "protocol": "TCP"}],
             "args": ["x"]}]}}}});
    let set = field_set(&live, &types);
    let shown: Vec<String> = set.iter().map(display_path).collect();
    assert_eq!(
        shown,
        [
            ".spec.replicas",
            ".spec.selector",
            ".spec.template.spec.containers[name=\"web\"]",
            ".spec.template.spec.containers[name=\"web\"].args",
            ".spec.template.spec.containers[name=\"web\"].image",
            ".spec.template.spec.containers[name=\"web\"].name",
            ".spec.template.spec.containers[name=\"web\"].ports[containerPort=80,protocol=\"TCP\"]",
            ".spec.template.spec.containers[name=\"web\"].ports[containerPort=80,protocol=\"TCP\"].containerPort",
            ".spec.template.spec.containers[name=\"web\"].ports[containerPort=80,protocol=\"TCP\"].protocol",
        ]
    );
    let config = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "sidecar", "image": "s"}, {"name": "web", "args": ["y"]}]}}}});
    let merged = merge(&live, &config, &types);
    assert_eq!(
        merged["spec"]["template"]["spec"]["containers"],
        json!([{"name": "web", "image": "a", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "args": ["y"]},
               {"name": "sidecar", "image": "s"}])
    );
}

#[test]
fn fields_v1_round_trips_and_marks_members_with_children() {
    let set: FieldSet = [
        vec!["f:metadata".into(), "f:labels".into(), "f:app".into()],
        vec!["f:spec".into(), "f:containers".into(), "k:{\"name\":\"web\"}".into()],
        vec![
            "f:spec".into(),
            "f:containers".into(),
            "k:{\"name\":\"web\"}".into(),
            "f:image".into(),
        ],
    ]
    .into_iter()
    .collect();
    let v = to_fields_v1(&set);
    assert_eq!(
        v,
        json!({"f:metadata": {"f:labels": {"f:app": {}}},
               "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}}}}})
    );
    assert_eq!(from_fields_v1(&v), set);
    assert_eq!(
        Manager::new("m", "Update", "apps/v1", Some("status")).describe(),
        "\"m\" with subresource \"status\" using apps/v1"
    );
}

#[test]
fn server_metadata_and_type_are_owned_by_nobody() {
    let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "d", "resourceVersion": "3", "labels": {"a": "1"}},
        "data": {"k": "v"}});
    let shown: Vec<String> = field_set(&obj, &Untyped).iter().map(display_path).collect();
    assert_eq!(shown, [".data.k", ".metadata.labels.a"]);
}

#[test]
fn an_applier_keeps_its_time_only_when_it_changes_nothing() {
    let mut s = State::new();
    s.apply("a", json!({"numeric": 1}), false).unwrap();
    s.managers[0].time = Some("2026-01-01T00:00:00Z".into());
    s.apply("a", json!({"numeric": 1}), false).unwrap();
    assert_eq!(s.managers[0].time.as_deref(), Some("2026-01-01T00:00:00Z"));
    s.apply("a", json!({"numeric": 2}), false).unwrap();
    assert_eq!(s.managers[0].time, None, "stamped anew by the caller");
}

#[test]
fn builtin_references_and_selectors_are_atomic() {
    let types = BuiltinTypes { kind: Some("Pod".into()) };
    let pod = json!({"spec": {"nodeSelector": {"disk": "ssd"}, "containers": [{"name": "c",
        "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]}});
    let shown: Vec<String> = field_set(&pod, &types).iter().map(display_path).collect();
    assert_eq!(
        shown,
        [
            ".spec.containers[name=\"c\"]",
            ".spec.containers[name=\"c\"].env[name=\"E\"]",
            ".spec.containers[name=\"c\"].env[name=\"E\"].name",
            ".spec.containers[name=\"c\"].env[name=\"E\"].valueFrom.secretKeyRef",
            ".spec.containers[name=\"c\"].name",
            ".spec.nodeSelector",
        ]
    );
}
