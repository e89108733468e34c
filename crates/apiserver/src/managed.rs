//! `metadata.managedFields` for `Update` operations: which manager last set which fields, as
//! kube-apiserver's field manager records them for create, update and patch.
//!
//! The manager is the request's `fieldManager`, else the part of its User-Agent before the first
//! `/` (upstream's `managerOrUserAgent` and `prefixFromUserAgent`), so `kubectl` shows as
//! `kubectl-client-side-apply`, `kubectl-edit`, ... and Kinetic's components by the User-Agent
//! their clients send. A request with neither is recorded as `unknown` (issue 10: every write of
//! Kinetic's showed so on a real cluster, whose clients sent no User-Agent).
//!
//! Simplifications, since this server has no server-side apply (no conflicts to compute): the
//! items of a list of objects that all carry a distinct `name` (containers, env, volumes) or
//! `type` (conditions) are keyed by it (`k:{"type":"Ready"}`, as upstream keys associative
//! lists by their schema's merge key); any other list is owned as a whole, and the `.` entries
//! of maps are left out. Each write gives the fields it changed or added to its manager, takes
//! them from the others, and drops removed fields from every entry.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

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

type Path = Vec<String>;

/// Metadata the server owns: never in a field set.
const SERVER_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The field that keys the items of `list`, when every item is an object with a distinct
/// string value of it.
fn list_key(list: &[Value]) -> Option<&'static str> {
    ["name", "type"].into_iter().find(|key| {
        let mut seen = BTreeSet::new();
        !list.is_empty()
            && list
                .iter()
                .all(|i| i.get(key).and_then(Value::as_str).is_some_and(|v| seen.insert(v)))
    })
}

/// The leaf paths of `obj`, as FieldsV1 keys (`f:spec`, `k:{"name":"web"}`); an unkeyed list or
/// an empty object is a leaf.
fn leaves(obj: &Value) -> BTreeMap<Path, &Value> {
    fn walk<'a>(v: &'a Value, path: &mut Path, out: &mut BTreeMap<Path, &'a Value>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind") {
                        continue;
                    }
                    if path.len() == 1
                        && path[0] == "f:metadata"
                        && SERVER_META.contains(&k.as_str())
                    {
                        continue;
                    }
                    path.push(format!("f:{k}"));
                    walk(child, path, out);
                    path.pop();
                }
            }
            Value::Array(items) if !path.is_empty() && list_key(items).is_some() => {
                let key = list_key(items).unwrap_or("name");
                for item in items {
                    path.push(format!("k:{}", json!({key: item[key]})));
                    walk(item, path, out);
                    path.pop();
                }
            }
            _ if !path.is_empty() => {
                out.insert(path.clone(), v);
            }
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    walk(obj, &mut Vec::new(), &mut out);
    out
}

/// A FieldsV1 trie (`{"f:spec": {"f:replicas": {}}}`) of `paths`; a keyed list item also
/// owns its existence (`"."`), as upstream writes it.
fn to_fields(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut cur = &mut root;
        for seg in p {
            let entry = cur.entry(seg.clone()).or_insert_with(|| json!({}));
            let Some(next) = entry.as_object_mut() else { break };
            if seg.starts_with("k:") {
                next.insert(".".into(), json!({}));
            }
            cur = next;
        }
    }
    Value::Object(root)
}

/// The leaf paths of a FieldsV1 trie (`.`, `v:` and `i:` entries make their parent a leaf).
fn from_fields(v: &Value) -> BTreeSet<Path> {
    fn walk(v: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
        let Some(m) = v.as_object() else { return };
        let mut child = false;
        for (k, c) in m {
            if k.starts_with("f:") || k.starts_with("k:") {
                child = true;
                path.push(k.clone());
                walk(c, path, out);
                path.pop();
            }
        }
        if !child && !path.is_empty() {
            out.insert(path.clone());
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn entry(manager: &str, api_version: &str, sub: Option<&str>, fields: &BTreeSet<Path>) -> Value {
    let mut e = json!({
        "manager": manager,
        "operation": "Update",
        "apiVersion": api_version,
        "time": crate::rest::now_rfc3339(),
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields(fields),
    });
    if let Some(s) = sub {
        e["subresource"] = json!(s);
    }
    e
}

fn set(obj: &mut Value, entries: Vec<Value>) {
    if let Some(md) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if entries.is_empty() {
            md.remove("managedFields");
        } else {
            md.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

/// Records a create by `manager`: it owns every field of `obj`.
pub fn on_create(obj: &mut Value, manager: &str, api_version: &str) {
    let fields: BTreeSet<Path> = leaves(obj).into_keys().collect();
    let entries = if fields.is_empty() {
        Vec::new()
    } else {
        vec![entry(manager, api_version, None, &fields)]
    };
    set(obj, entries);
}

/// Records an update of `old` to `new` by `manager` (through subresource `sub`): `new` gets
/// `old`'s entries with ownership moved as the change says. A write that changes no field keeps
/// them as they are (so a no-op stays a no-op).
pub fn on_update(
    new: &mut Value,
    old: &Value,
    manager: &str,
    api_version: &str,
    sub: Option<&str>,
) {
    let before = leaves(old);
    let after = leaves(new);
    let changed: BTreeSet<Path> =
        after.iter().filter(|(p, v)| before.get(*p) != Some(*v)).map(|(p, _)| p.clone()).collect();
    let removed: BTreeSet<&Path> = before.keys().filter(|p| !after.contains_key(*p)).collect();
    let old_entries: Vec<Value> = old
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if changed.is_empty() && removed.is_empty() {
        set(new, old_entries);
        return;
    }
    // A path is gone from an owner when it, or anything under or above it, changed or went.
    let touches = |p: &Path| {
        changed.iter().chain(removed.iter().copied()).any(|c| c.starts_with(p) || p.starts_with(c))
    };
    let mut mine: BTreeSet<Path> = BTreeSet::new();
    let mut entries = Vec::new();
    for e in old_entries {
        let same = e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Update")
            && e.get("subresource").and_then(Value::as_str) == sub;
        let fields = e.get("fieldsV1").map(from_fields).unwrap_or_default();
        let kept: BTreeSet<Path> = fields.into_iter().filter(|p| !touches(p)).collect();
        if same {
            mine = kept;
            continue;
        }
        if kept.is_empty() {
            continue;
        }
        let mut e = e;
        e["fieldsV1"] = to_fields(&kept);
        entries.push(e);
    }
    mine.extend(changed);
    entries.push(entry(manager, api_version, sub, &mine));
    set(new, entries);
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

    #[test]
    fn writes_move_the_fields_they_change_to_their_manager() {
        let mut created = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "uid": "u", "labels": {"a": "1"}},
            "data": {"x": "1", "y": "2"}});
        on_create(&mut created, "kubectl-create", "v1");
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
        on_update(&mut updated, &created, "kinetic-controller", "v1", None);
        assert_eq!(
            managers(&updated),
            [
                ("kubectl-create".to_owned(), json!({"f:data": {"f:x": {}}})),
                (
                    "kinetic-controller".to_owned(),
                    json!({"f:data": {"f:y": {}, "f:z": {}}, "f:metadata": {"f:labels": {}}})
                ),
            ]
        );
        // Conditions are keyed by type: a second writer owns only its own condition.
        let mut pod = json!({"metadata": {"name": "p"}, "status": {"conditions": [
            {"type": "PodScheduled", "status": "False"}]}});
        on_create(&mut pod, "kinetic-scheduler", "v1");
        let mut next = pod.clone();
        next["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False"},
            {"type": "KruisePodReady", "status": "True"}]);
        on_update(&mut next, &pod, "kinetic-controller", "v1", Some("status"));
        let ready = json!({"f:status": {"f:conditions": {
            "k:{\"type\":\"KruisePodReady\"}": {".": {}, "f:status": {}, "f:type": {}}}}});
        assert_eq!(next["metadata"]["managedFields"][1]["fieldsV1"], ready);
        assert_eq!(next["metadata"]["managedFields"][0]["manager"], "kinetic-scheduler");
        // Nothing changed: the entries stay as they are.
        let mut same = updated.clone();
        on_update(&mut same, &updated, "someone", "v1", None);
        assert_eq!(same, updated);
    }
}
