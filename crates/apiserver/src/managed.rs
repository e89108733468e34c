//! `metadata.managedFields`: which manager set which fields, as kube-apiserver's field manager
//! records them for create, update and patch (`Update` operations) and server-side apply
//! (`Apply`, with conflicts), on the field sets, merge and ownership rules of
//! [`kinetic_machinery::ssa`].
//!
//! The manager is the request's `fieldManager`, else the part of its User-Agent before the first
//! `/` (upstream's `managerOrUserAgent` and `prefixFromUserAgent`), so `kubectl` shows as
//! `kubectl-client-side-apply`, `kubectl-edit`, ... and Kinetic's components by the User-Agent
//! their clients send. A request with neither is recorded as `unknown` (issue 10: every write of
//! Kinetic's showed so on a real cluster, whose clients sent no User-Agent).
//!
//! Lists are keyed as the kind's types say: the built-in kinds' by their merge keys
//! (`k:{"name":"web"}`, `k:{"type":"Ready"}`), CRD-served kinds' by their schema's
//! `x-kubernetes-list-type`/`list-map-keys`; other lists are owned as a whole, and objects are
//! not members themselves (no `.` entry on maps). Each write gives the fields it changed or
//! added to its manager, takes them from the others, and drops removed fields from every entry.

use kinetic_machinery::ssa::{self, BuiltinTypes, Manager, SchemaTypes, Types, Untyped};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::registry::Resource;

/// Upstream's `FieldManagerMaxLength`.
pub const MAX_MANAGER_LENGTH: usize = 128;

/// The manager recorded for a request.
pub fn manager_for(field_manager: Option<&str>, user_agent: Option<&str>) -> String {
    if let Some(m) = field_manager.filter(|m| !m.is_empty()) {
        return m.to_owned();
    }
    let prefix = user_agent.unwrap_or("").split('/').next().unwrap_or("");
    let mut out = String::new();
    for c in prefix.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_MANAGER_LENGTH {
            break;
        }
        out.push(c);
    }
    if out.is_empty() { "unknown".to_owned() } else { out }
}

/// How the values of `res` merge and are owned: the built-in kinds by their strategic merge
/// patch tags (their schemas here carry no list types), CRD-served kinds by their schema's
/// `x-kubernetes-list-type`/`map-type`, anything else with atomic lists.
fn types(res: &Resource) -> Box<dyn Types + '_> {
    match &res.schema {
        _ if res.builtin => Box::new(BuiltinTypes { kind: Some(res.kind.clone()) }),
        Some(schema) => Box::new(SchemaTypes(schema)),
        None => Box::new(Untyped),
    }
}

fn set(obj: &mut Value, managers: &[Manager]) {
    let now = crate::rest::now_rfc3339();
    if let Some(md) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if managers.is_empty() {
            md.remove("managedFields");
        } else {
            let entries = managers.iter().map(|m| m.to_entry(&now)).collect();
            md.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

/// Records a create by `manager`: it owns every field of `obj`.
pub fn on_create(res: &Resource, obj: &mut Value, manager: &str) {
    let me = Manager::new(manager, "Update", &res.api_version(), None);
    let managers = ssa::update(None, obj, Vec::new(), me, &*types(res));
    set(obj, &managers);
}

/// Records an update of `old` to `new` by `manager` (through subresource `sub`): `new` gets
/// `old`'s entries with ownership moved as the change says. A write that changes no field keeps
/// them as they are (so a no-op stays a no-op).
///
/// `requested` is the `managedFields` the request itself sent: when they are a non-empty list
/// that differs from the stored one, they replace it before the change is recorded, as
/// upstream's field manager decodes them from the new object first. That is how kubectl moves
/// the fields of `kubectl-client-side-apply` to `kubectl` before its first server-side apply of
/// an object, and how `[{}]` resets them.
pub fn on_update(
    res: &Resource,
    new: &mut Value,
    old: &Value,
    requested: Option<&Value>,
    manager: &str,
    sub: Option<&str>,
) {
    let before = ssa::managers_of(old);
    let stored = old.pointer("/metadata/managedFields");
    let base = match requested.and_then(Value::as_array) {
        Some(list) if !list.is_empty() && requested != stored => list
            .iter()
            .filter_map(Manager::from_entry)
            .filter(|m| !m.manager.is_empty() && !m.fields.is_empty())
            .collect(),
        _ => before.clone(),
    };
    let me = Manager::new(manager, "Update", &res.api_version(), sub);
    let after = ssa::update(Some(old), new, base, me, &*types(res));
    if after == before {
        // Kept verbatim, so an entry written by another server round-trips unchanged.
        let entries = old.pointer("/metadata/managedFields").cloned();
        if let Some(md) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            match entries {
                Some(e) => md.insert("managedFields".into(), e),
                None => md.remove("managedFields"),
            };
        }
        return;
    }
    set(new, &after);
}

/// The parts of an applied configuration a write through `sub` may set: the status
/// subresource takes only `status`; the main resource of a kind whose status is written
/// separately ignores `status` (upstream's `ResetFieldsFor`, which the field manager leaves
/// out of the applier's fields).
pub fn applicable(res: &Resource, config: &Value, sub: Option<&str>) -> Value {
    let mut config = config.clone();
    if let Some(m) = config.as_object_mut() {
        if sub == Some("status") {
            m.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
            if let Some(md) = m.get_mut("metadata").and_then(Value::as_object_mut) {
                md.retain(|k, _| matches!(k.as_str(), "name" | "namespace"));
            }
        } else if res.status || res.builtin {
            m.remove("status");
        }
    }
    config
}

/// Server-side apply of `config` by `manager` to `live` (`None`: the object does not exist
/// yet): the merged object, with its `managedFields` set.
///
/// # Errors
/// 409 Conflict with one `FieldManagerConflict` cause per field another manager owns and the
/// apply would change, unless `force` (upstream's `NewConflictError`).
pub fn apply(
    res: &Resource,
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    sub: Option<&str>,
    force: bool,
) -> ApiResult<Value> {
    let managers = live.map(ssa::managers_of).unwrap_or_default();
    let me = Manager::new(manager, "Apply", &res.api_version(), sub);
    let config = applicable(res, config, sub);
    let types = types(res);
    let result = match ssa::apply(live, &config, managers.clone(), me.clone(), force, &*types) {
        // Upstream's `lastAppliedManager`: kubectl's first server-side apply of an object it
        // applied client-side may take the fields of its last-applied configuration (kubectl
        // then moves the client-side manager's fields to itself).
        Err(conflicts) if manager == KUBECTL => {
            match live.and_then(last_applied).map(|l| ssa::field_set(&l, &*types)) {
                Some(allowed) => {
                    let rest: Vec<ssa::Conflict> =
                        conflicts.into_iter().filter(|c| !allowed.contains(&c.path)).collect();
                    if rest.is_empty() {
                        ssa::apply(live, &config, managers, me, true, &*types)
                    } else {
                        Err(rest)
                    }
                }
                None => Err(conflicts),
            }
        }
        other => other,
    };
    let mut out = result.map_err(|c| {
        let causes: Vec<Value> = c
            .iter()
            .map(|c| {
                json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with {}", c.manager.describe()),
                    "field": ssa::display_path(&c.path),
                })
            })
            .collect();
        let mut e = ApiError::new(409, "Conflict", ssa::conflict_message(&c));
        e.details = Some(json!({"causes": causes}));
        e
    })?;
    // Upstream's `lastAppliedUpdater`: kubectl's server-side apply keeps an existing
    // last-applied annotation current, so a later client-side apply computes the right patch.
    if manager == KUBECTL && live.and_then(last_applied).is_some() {
        let mut applied = config.clone();
        if let Some(a) = applied.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut)
        {
            a.remove(LAST_APPLIED);
        }
        if let (Ok(text), Some(a)) = (
            serde_json::to_string(&applied),
            out.object.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut),
        ) {
            a.insert(LAST_APPLIED.into(), Value::String(text));
        }
    }
    set(&mut out.object, &out.managers);
    Ok(out.object)
}

/// The field manager of `kubectl apply --server-side`, which upstream treats specially.
const KUBECTL: &str = "kubectl";

/// The annotation client-side `kubectl apply` keeps its last configuration in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The configuration a client-side `kubectl apply` last applied to `obj`, if any.
fn last_applied(obj: &Value) -> Option<Value> {
    let text = obj.pointer("/metadata/annotations")?.get(LAST_APPLIED)?.as_str()?;
    serde_json::from_str(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn managers(obj: &Value) -> Vec<(String, Value)> {
        obj["metadata"]["managedFields"]
            .as_array()
            .unwrap_or(&Vec::new())
            .iter()
            .map(|e| (e["manager"].as_str().unwrap_or("").to_owned(), e["fieldsV1"].clone()))
            .collect()
    }

    #[test]
    fn the_manager_is_the_field_manager_else_the_user_agent_prefix() {
        assert_eq!(manager_for(Some("kubectl-edit"), Some("kubectl/v1.35")), "kubectl-edit");
        assert_eq!(
            manager_for(None, Some("kinetic-controller/0.1.0 (linux/amd64)")),
            "kinetic-controller"
        );
        assert_eq!(manager_for(Some(""), None), "unknown");
        assert_eq!(manager_for(None, Some(&"x".repeat(300))).len(), MAX_MANAGER_LENGTH);
    }

    fn resource(plural: &str) -> std::sync::Arc<Resource> {
        let registry = crate::registry::Registry::default();
        crate::builtin::register(&registry).unwrap();
        let group = if plural == "deployments" { "apps" } else { "" };
        registry.get(group, "v1", plural).unwrap()
    }

    #[test]
    fn writes_move_the_fields_they_change_to_their_manager() {
        let cm = resource("configmaps");
        let mut created = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "uid": "u", "labels": {"a": "1"}},
            "data": {"x": "1", "y": "2"}});
        on_create(&cm, &mut created, "kubectl-create");
        assert_eq!(
            managers(&created),
            [(
                "kubectl-create".to_owned(),
                json!({"f:data": {"f:x": {}, "f:y": {}}, "f:metadata": {"f:labels": {"f:a": {}}}})
            )]
        );
        let mut updated = created.clone();
        updated["data"]["y"] = json!("3");
        updated["data"]["z"] = json!("4");
        updated["metadata"]["labels"] = json!({});
        on_update(&cm, &mut updated, &created, None, "kinetic-controller", None);
        // The removed label goes from its owner; an emptied map is no field of the writer's
        // (upstream's Compare reports only `.metadata.labels.a` as removed).
        assert_eq!(
            managers(&updated),
            [
                ("kubectl-create".to_owned(), json!({"f:data": {"f:x": {}}})),
                ("kinetic-controller".to_owned(), json!({"f:data": {"f:y": {}, "f:z": {}}})),
            ]
        );
        // Conditions are keyed by type: a second writer owns only its own condition.
        let pods = resource("pods");
        let mut pod = json!({"metadata": {"name": "p"}, "status": {"conditions": [
            {"type": "PodScheduled", "status": "False"}]}});
        on_create(&pods, &mut pod, "kinetic-scheduler");
        let mut next = pod.clone();
        next["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False"},
            {"type": "KruisePodReady", "status": "True"}]);
        on_update(&pods, &mut next, &pod, None, "kinetic-controller", Some("status"));
        let ready = json!({"f:status": {"f:conditions": {
            "k:{\"type\":\"KruisePodReady\"}": {".": {}, "f:status": {}, "f:type": {}}}}});
        assert_eq!(next["metadata"]["managedFields"][1]["fieldsV1"], ready);
        assert_eq!(next["metadata"]["managedFields"][1]["subresource"], "status");
        assert_eq!(next["metadata"]["managedFields"][0]["manager"], "kinetic-scheduler");
        // Nothing changed: the entries stay as they are.
        let mut same = updated.clone();
        on_update(&cm, &mut same, &updated, None, "someone", None);
        assert_eq!(same, updated);
    }

    #[test]
    fn apply_conflicts_with_an_updater_as_upstream_and_force_takes_the_field() {
        let deploy = resource("deployments");
        let mut live = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [
                {"name": "web", "image": "a"}]}}}});
        on_create(&deploy, &mut live, "kubectl-create");
        let config = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {"replicas": 3}, "status": {"replicas": 9}});
        let e = apply(&deploy, Some(&live), &config, "kubectl", None, false).unwrap_err();
        assert_eq!((e.code, e.reason), (409, "Conflict"));
        assert_eq!(
            e.message,
            "Apply failed with 1 conflict: conflict with \"kubectl-create\" using apps/v1: .spec.replicas"
        );
        assert_eq!(
            e.details.unwrap()["causes"],
            json!([{"reason": "FieldManagerConflict",
                    "message": "conflict with \"kubectl-create\" using apps/v1",
                    "field": ".spec.replicas"}])
        );
        let forced = apply(&deploy, Some(&live), &config, "kubectl", None, true).unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        assert!(forced.get("status").is_none(), "status is not the main resource's to apply");
        let entries = &forced["metadata"]["managedFields"];
        assert_eq!(entries[1]["manager"], "kubectl");
        assert_eq!(entries[1]["operation"], "Apply");
        assert_eq!(entries[1]["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
        assert!(
            entries[0]["fieldsV1"]["f:spec"].get("f:replicas").is_none(),
            "taken from the updater: {entries}"
        );
    }
}
