//! Server-side apply: field sets, structured merge, ownership and conflicts, as upstream's
//! `sigs.k8s.io/structured-merge-diff` (`typed` and `merge` packages) and the API server's field
//! manager compute them.
//!
//! - A [`FieldSet`] is a set of [`Path`]s. A path's elements are written as `metadata.managedFields`
//!   writes them (`fieldsV1`): `f:name` for a field, `k:{"name":"web"}` for the item of a
//!   `map` list with those key values, `v:"x"` for a value of a `set` list, `i:0` for an index.
//!   [`to_fields_v1`] and [`from_fields_v1`] convert to and from that trie (`"."` marks a path
//!   that is a member and also has children).
//! - [`Types`] says how each list and object merges: a schema's `x-kubernetes-list-type`,
//!   `x-kubernetes-list-map-keys` and `x-kubernetes-map-type` ([`SchemaTypes`]), or for the
//!   built-in kinds, which have no such schema here, the merge keys of their strategic merge
//!   patch tags ([`BuiltinTypes`], from the table in [`crate::patch`]).
//! - [`apply`] is upstream's `Updater.Apply`: merge the applied configuration into the live
//!   object, give the applier exactly the configuration's fields, remove the fields the applier
//!   stopped applying that nobody else owns, and refuse (unless forced) to change a field another
//!   manager owns. [`update`] is `Updater.Update`: a write that is not an apply takes the fields it
//!   changes from every other manager.
//!
//! Where this differs from upstream: objects are not members of a field set themselves (upstream
//! makes some of them members, depending on whether the Go type has a pointer there), only their
//! leaves, empty objects and list items are; a list whose items cannot be keyed is atomic
//! (upstream refuses the object); a `null` in an applied configuration removes the field.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// A path to a field, as `fieldsV1` keys: `["f:spec", "f:containers", "k:{\"name\":\"web\"}"]`.
pub type Path = Vec<String>;

/// A set of paths one manager owns.
pub type FieldSet = BTreeSet<Path>;

/// How a list merges (`x-kubernetes-list-type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole, owned as one field.
    Atomic,
    /// A set of scalars: items are merged and owned one by one (`v:`).
    Set,
    /// Items keyed by these fields: merged and owned one by one (`k:`).
    Map(Vec<String>),
}

/// How the values of one kind merge. `fields` are the field names leading to a value; list
/// levels are not counted (`spec.containers.env` is the `env` of every container).
pub trait Types {
    /// How the list at `fields` merges.
    fn list(&self, fields: &[&str]) -> ListType;
    /// Whether the object at `fields` is atomic (replaced and owned as a whole).
    fn atomic_object(&self, fields: &[&str]) -> bool;
    /// The value of key `key` of an item of the list at `fields` that leaves it out (a port's
    /// `protocol` is `TCP`), so that the item is the live one the server defaulted.
    fn key_default(&self, fields: &[&str], key: &str) -> Option<Value>;
}

/// The built-in kinds: lists merge as their strategic merge patch tags say
/// ([`crate::patch::list_patch_meta`]), with the extra keys of upstream's `+listMapKey` tags
/// where a list has several; `+structType=atomic`/`+mapType=atomic` selectors are atomic.
#[derive(Debug, Clone, Default)]
pub struct BuiltinTypes {
    /// The object's kind, for the few lists whose tags differ by kind.
    pub kind: Option<String>,
}

/// Upstream's `+listMapKey` tags for lists keyed by more than their patch merge key.
const MULTI_KEYS: &[(&str, &[&str])] = &[
    ("containers.ports", &["containerPort", "protocol"]),
    ("initContainers.ports", &["containerPort", "protocol"]),
    ("ephemeralContainers.ports", &["containerPort", "protocol"]),
    // core/v1 ServiceSpec ports: `+listMapKey=port +listMapKey=protocol`.
    ("spec.ports", &["port", "protocol"]),
    ("spec.topologySpreadConstraints", &["topologyKey", "whenUnsatisfiable"]),
];

/// Objects of the built-in kinds that are atomic: `metav1.LabelSelector`
/// (`+structType=atomic`), a Service's selector and a pod's `nodeSelector` (`+mapType=atomic`),
/// and the reference types upstream marks atomic.
const ATOMIC_OBJECTS: &[&str] = &[
    "spec.selector",
    "nodeSelector",
    "labelSelector",
    "namespaceSelector",
    // `+structType=atomic` references: ConfigMapKeySelector, SecretKeySelector,
    // ObjectFieldSelector, ResourceFieldSelector, LocalObjectReference, ObjectReference.
    "configMapKeyRef",
    "secretKeyRef",
    "fieldRef",
    "resourceFieldRef",
    "configMapRef",
    "secretRef",
    "targetRef",
    "involvedObject",
];

impl Types for BuiltinTypes {
    fn list(&self, fields: &[&str]) -> ListType {
        let it = fields.iter().copied();
        if let Some((_, keys)) =
            MULTI_KEYS.iter().find(|(p, _)| crate::patch::pattern_matches(p, it.clone()))
        {
            return ListType::Map(keys.iter().map(|k| (*k).to_owned()).collect());
        }
        match crate::patch::list_patch_meta(self.kind.as_deref(), it) {
            Some((_, Some(key))) => ListType::Map(vec![key.to_owned()]),
            Some((_, None)) => ListType::Set,
            None => ListType::Atomic,
        }
    }

    fn atomic_object(&self, fields: &[&str]) -> bool {
        // Called for every object of every write: first the last name, without allocating.
        let Some(last) = fields.last() else { return false };
        ATOMIC_OBJECTS.iter().any(|p| {
            p.rsplit('.').next() == Some(*last)
                && crate::patch::pattern_matches(p, fields.iter().copied())
        })
    }

    fn key_default(&self, _fields: &[&str], key: &str) -> Option<Value> {
        // Every defaulted list-map key of the built-in kinds is a protocol (ports).
        (key == "protocol").then(|| json!("TCP"))
    }
}

/// A kind with a structural schema (a CRD version's): lists merge as their
/// `x-kubernetes-list-type` says (atomic when it says nothing, as upstream for CRDs), objects as
/// their `x-kubernetes-map-type`.
#[derive(Debug, Clone, Copy)]
pub struct SchemaTypes<'a>(pub &'a crate::schema::Schema);

impl Types for SchemaTypes<'_> {
    fn list(&self, fields: &[&str]) -> ListType {
        let Some(info) = self.0.merge_info(fields) else { return ListType::Atomic };
        match info.list_type.as_deref() {
            Some("set") => ListType::Set,
            Some("map") if !info.list_map_keys.is_empty() => ListType::Map(info.list_map_keys),
            _ => ListType::Atomic,
        }
    }

    fn atomic_object(&self, fields: &[&str]) -> bool {
        self.0.merge_info(fields).is_some_and(|i| i.map_type.as_deref() == Some("atomic"))
    }

    fn key_default(&self, fields: &[&str], key: &str) -> Option<Value> {
        let info = self.0.merge_info(fields)?;
        info.key_defaults.into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// A kind without a schema: lists are atomic, objects granular.
#[derive(Debug, Clone, Copy, Default)]
pub struct Untyped;

impl Types for Untyped {
    fn list(&self, _fields: &[&str]) -> ListType {
        ListType::Atomic
    }

    fn atomic_object(&self, _fields: &[&str]) -> bool {
        false
    }

    fn key_default(&self, _fields: &[&str], _key: &str) -> Option<Value> {
        None
    }
}

/// Fields no manager owns: the object's type and the metadata the server sets (upstream's
/// `stripMeta`).
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

fn owned(path: &Path) -> bool {
    match path.as_slice() {
        [] => false,
        [f] => !matches!(f.as_str(), "f:apiVersion" | "f:kind" | "f:metadata"),
        [m, f, ..] if m == "f:metadata" => {
            !f.strip_prefix("f:").is_some_and(|f| SERVER_META.contains(&f))
        }
        _ => true,
    }
}

/// The `k:`/`v:` element of each item of a list, or `None` when an item cannot be keyed (not an
/// object, a key of a non-scalar value, duplicates): the list is then treated as atomic.
fn keyed<'a>(
    items: &'a [Value],
    lt: &ListType,
    fields: &[&str],
    types: &dyn Types,
) -> Option<Vec<(String, &'a Value)>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let el = match lt {
            ListType::Atomic => return None,
            ListType::Set => {
                if item.is_object() || item.is_array() {
                    return None;
                }
                format!("v:{item}")
            }
            ListType::Map(keys) => {
                let obj = item.as_object()?;
                // Keys in name order, as upstream serializes them.
                let mut key = BTreeMap::new();
                for k in keys {
                    let v = match obj.get(k) {
                        Some(v) if !v.is_null() => v.clone(),
                        _ => match types.key_default(fields, k) {
                            Some(d) => d,
                            None => continue,
                        },
                    };
                    if v.is_object() || v.is_array() {
                        return None;
                    }
                    key.insert(k.clone(), v);
                }
                if key.is_empty() {
                    return None;
                }
                format!("k:{}", Value::Object(key.into_iter().collect::<Map<_, _>>()))
            }
        };
        if !seen.insert(el.clone()) {
            return None;
        }
        out.push((el, item));
    }
    Some(out)
}

fn is_empty_container(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(_) => false,
    }
}

/// The fields of `obj` (upstream's `ToFieldSet`): its leaves, empty objects, atomic lists and
/// objects, and the items of set and map lists. The type and server-set metadata are left out.
pub fn field_set(obj: &Value, types: &dyn Types) -> FieldSet {
    fn walk<'a>(
        v: &'a Value,
        fields: &mut Vec<&'a str>,
        path: &mut Path,
        types: &dyn Types,
        out: &mut FieldSet,
    ) {
        match v {
            Value::Object(m)
                if !m.is_empty() && (path.is_empty() || !types.atomic_object(fields)) =>
            {
                for (k, c) in m {
                    fields.push(k);
                    path.push(format!("f:{k}"));
                    walk(c, fields, path, types, out);
                    path.pop();
                    fields.pop();
                }
            }
            Value::Array(items) if !path.is_empty() => {
                let lt = types.list(fields);
                match keyed(items, &lt, fields, types) {
                    Some(keyed) => {
                        for (el, item) in keyed {
                            path.push(el);
                            out.insert(path.clone());
                            if matches!(lt, ListType::Map(_)) {
                                walk_children(item, fields, path, types, out);
                            }
                            path.pop();
                        }
                    }
                    None => {
                        out.insert(path.clone());
                    }
                }
            }
            _ if !path.is_empty() => {
                out.insert(path.clone());
            }
            _ => {}
        }
    }
    /// The fields of a map list's item (the item itself is already a member).
    fn walk_children<'a>(
        item: &'a Value,
        fields: &mut Vec<&'a str>,
        path: &mut Path,
        types: &dyn Types,
        out: &mut FieldSet,
    ) {
        if let Value::Object(m) = item {
            for (k, c) in m {
                fields.push(k);
                path.push(format!("f:{k}"));
                walk(c, fields, path, types, out);
                path.pop();
                fields.pop();
            }
        }
    }
    let mut out = FieldSet::new();
    walk(obj, &mut Vec::new(), &mut Vec::new(), types, &mut out);
    out.retain(owned);
    out
}

/// What a change did, path by path (upstream's `typed.Comparison`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

impl Comparison {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }
}

/// Compares `old` with `new` field by field (upstream's `TypedValue.Compare`): leaves that
/// appear, change or go, and list items that appear or go.
pub fn compare(old: Option<&Value>, new: Option<&Value>, types: &dyn Types) -> Comparison {
    fn walk<'a>(
        l: Option<&'a Value>,
        r: Option<&'a Value>,
        fields: &mut Vec<&'a str>,
        path: &mut Path,
        types: &dyn Types,
        c: &mut Comparison,
    ) {
        let leaf = |c: &mut Comparison, path: &Path| match (l, r) {
            (None, Some(_)) => {
                c.added.insert(path.clone());
            }
            (Some(_), None) => {
                c.removed.insert(path.clone());
            }
            (Some(a), Some(b)) if a != b => {
                c.modified.insert(path.clone());
            }
            _ => {}
        };
        let both_empty = is_empty_container(l) && is_empty_container(r);
        let object = |v: Option<&Value>| v.is_none_or(Value::is_object);
        let array = |v: Option<&Value>| v.is_none_or(Value::is_array);
        if object(l) && object(r) && !(l.is_none() && r.is_none()) {
            if !path.is_empty() && (both_empty || types.atomic_object(fields)) {
                return leaf(c, path);
            }
            fields_of(l, r, fields, path, types, c);
            return;
        }
        if array(l) && array(r) && !path.is_empty() && !both_empty {
            let lt = types.list(fields);
            let none: &[Value] = &[];
            let la = l.and_then(Value::as_array).map_or(none, Vec::as_slice);
            let ra = r.and_then(Value::as_array).map_or(none, Vec::as_slice);
            if let (Some(lk), Some(rk)) =
                (keyed(la, &lt, fields, types), keyed(ra, &lt, fields, types))
            {
                let lmap: BTreeMap<&String, &'a Value> = lk.iter().map(|(k, v)| (k, *v)).collect();
                let rmap: BTreeMap<&String, &'a Value> = rk.iter().map(|(k, v)| (k, *v)).collect();
                let els: BTreeSet<&String> = lmap.keys().chain(rmap.keys()).copied().collect();
                for el in els {
                    let (li, ri) = (lmap.get(el).copied(), rmap.get(el).copied());
                    path.push(el.clone());
                    match (li, ri) {
                        (None, Some(_)) => {
                            c.added.insert(path.clone());
                        }
                        (Some(_), None) => {
                            c.removed.insert(path.clone());
                        }
                        _ => {}
                    }
                    if matches!(lt, ListType::Map(_)) {
                        fields_of(li, ri, fields, path, types, c);
                    }
                    path.pop();
                }
                return;
            }
        }
        if !path.is_empty() {
            leaf(c, path);
        }
    }
    /// Compares the members of two objects (either may be absent or not an object).
    fn fields_of<'a>(
        l: Option<&'a Value>,
        r: Option<&'a Value>,
        fields: &mut Vec<&'a str>,
        path: &mut Path,
        types: &dyn Types,
        c: &mut Comparison,
    ) {
        let (lm, rm) = (l.and_then(Value::as_object), r.and_then(Value::as_object));
        let keys: BTreeSet<&'a String> =
            lm.into_iter().flat_map(Map::keys).chain(rm.into_iter().flat_map(Map::keys)).collect();
        for k in keys {
            fields.push(k);
            path.push(format!("f:{k}"));
            walk(lm.and_then(|m| m.get(k)), rm.and_then(|m| m.get(k)), fields, path, types, c);
            path.pop();
            fields.pop();
        }
    }
    let mut c = Comparison::default();
    walk(old, new, &mut Vec::new(), &mut Vec::new(), types, &mut c);
    c.added.retain(owned);
    c.modified.retain(owned);
    c.removed.retain(owned);
    c
}

/// `v` without `null` object members (what upstream's decoding into Go types drops).
fn clean(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), clean(v))).collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(clean).collect()),
        other => other.clone(),
    }
}

/// Merges an applied configuration into the live object (upstream's `TypedValue.Merge`):
/// objects field by field, set and map lists item by item (the live items in their order, then
/// the configuration's new ones in its order, as upstream's `mergingWalker.visitListItems`),
/// everything else replaced.
pub fn merge(live: &Value, config: &Value, types: &dyn Types) -> Value {
    fn walk<'a>(l: &Value, r: &'a Value, fields: &mut Vec<&'a str>, types: &dyn Types) -> Value {
        match (l, r) {
            (Value::Object(lm), Value::Object(rm))
                if fields.is_empty() || !types.atomic_object(fields) =>
            {
                let mut out = lm.clone();
                for (k, rv) in rm {
                    if rv.is_null() {
                        out.remove(k);
                        continue;
                    }
                    fields.push(k);
                    let v = match lm.get(k) {
                        Some(lv) => walk(lv, rv, fields, types),
                        None => clean(rv),
                    };
                    fields.pop();
                    out.insert(k.clone(), v);
                }
                Value::Object(out)
            }
            (Value::Array(la), Value::Array(ra)) if !fields.is_empty() => {
                let lt = types.list(fields);
                let (Some(lk), Some(rk)) =
                    (keyed(la, &lt, fields, types), keyed(ra, &lt, fields, types))
                else {
                    return clean(r);
                };
                let in_config: BTreeMap<&String, &Value> =
                    rk.iter().map(|(k, v)| (k, *v)).collect();
                let in_live: BTreeSet<&String> = lk.iter().map(|(k, _)| k).collect();
                let mut out = Vec::with_capacity(la.len().max(ra.len()));
                for (k, lv) in &lk {
                    match in_config.get(k) {
                        Some(rv) => out.push(walk(lv, rv, fields, types)),
                        None => out.push((*lv).clone()),
                    }
                }
                out.extend(rk.iter().filter(|(k, _)| !in_live.contains(k)).map(|(_, v)| clean(v)));
                Value::Array(out)
            }
            _ => clean(r),
        }
    }
    walk(live, config, &mut Vec::new(), types)
}

/// Removes the field at `path` from `obj`, and the objects and lists that this leaves empty.
fn remove_path(obj: &mut Value, path: &[String], types: &dyn Types, fields: &mut Vec<String>) {
    let Some((first, rest)) = path.split_first() else { return };
    if let Some(name) = first.strip_prefix("f:") {
        let Some(m) = obj.as_object_mut() else { return };
        if rest.is_empty() {
            m.remove(name);
            return;
        }
        let Some(child) = m.get_mut(name) else { return };
        fields.push(name.to_owned());
        remove_path(child, rest, types, fields);
        fields.pop();
        if is_empty_container(Some(child)) {
            m.remove(name);
        }
        return;
    }
    let names: Vec<&str> = fields.iter().map(String::as_str).collect();
    let lt = types.list(&names);
    let Some(items) = obj.as_array() else { return };
    let Some(pos) =
        keyed(items, &lt, &names, types).and_then(|k| k.iter().position(|(el, _)| el == first))
    else {
        return;
    };
    let Some(items) = obj.as_array_mut() else { return };
    if rest.is_empty() {
        items.remove(pos);
    } else {
        remove_path(&mut items[pos], rest, types, fields);
    }
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Manager {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    pub api_version: String,
    pub subresource: Option<String>,
    /// RFC 3339; `None` for an entry whose fields just changed (the caller stamps it).
    pub time: Option<String>,
    pub fields: FieldSet,
}

impl Manager {
    /// A new entry without fields.
    pub fn new(manager: &str, operation: &str, api_version: &str, sub: Option<&str>) -> Self {
        Self {
            manager: manager.to_owned(),
            operation: operation.to_owned(),
            api_version: api_version.to_owned(),
            subresource: sub.map(str::to_owned),
            time: None,
            fields: FieldSet::new(),
        }
    }

    /// Whether `self` and `other` are the same manager (upstream's `BuildManagerIdentifier`:
    /// name, operation and subresource, and the API version of an `Update`).
    pub fn same(&self, other: &Self) -> bool {
        self.manager == other.manager
            && self.operation == other.operation
            && self.subresource == other.subresource
            && (self.operation == "Apply" || self.api_version == other.api_version)
    }

    /// The manager as conflicts name it (upstream's `printManager`): `"kubectl"` for an
    /// applier, `"mgr" using apps/v1` for an updater, with `with subresource "status"`.
    pub fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            s.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    /// Reads one `managedFields` entry; `None` for one that is not an object.
    pub fn from_entry(e: &Value) -> Option<Self> {
        let s = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_owned);
        e.as_object()?;
        Some(Self {
            manager: s("manager").unwrap_or_default(),
            operation: s("operation").unwrap_or_else(|| "Update".to_owned()),
            api_version: s("apiVersion").unwrap_or_default(),
            subresource: s("subresource").filter(|s| !s.is_empty()),
            time: s("time"),
            fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
        })
    }

    /// The `managedFields` entry, stamped with `now` when it has no time.
    pub fn to_entry(&self, now: &str) -> Value {
        let mut e = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time.as_deref().unwrap_or(now),
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(&self.fields),
        });
        if let Some(s) = &self.subresource {
            e["subresource"] = json!(s);
        }
        e
    }
}

/// Reads `metadata.managedFields` of `obj`.
pub fn managers_of(obj: &Value) -> Vec<Manager> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Manager::from_entry).collect())
        .unwrap_or_default()
}

/// A `fieldsV1` trie of `set`.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    #[derive(Default)]
    struct Node {
        member: bool,
        children: BTreeMap<String, Node>,
    }
    fn encode(n: &Node) -> Value {
        let mut m = Map::new();
        if n.member && !n.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (k, c) in &n.children {
            m.insert(k.clone(), encode(c));
        }
        Value::Object(m)
    }
    let mut root = Node::default();
    for p in set {
        let mut cur = &mut root;
        for el in p {
            cur = cur.children.entry(el.clone()).or_default();
        }
        cur.member = true;
    }
    encode(&root)
}

/// The paths of a `fieldsV1` trie.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn walk(v: &Value, path: &mut Path, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        if !path.is_empty() && (m.is_empty() || m.contains_key(".")) {
            out.insert(path.clone());
        }
        for (k, c) in m {
            if k != "." {
                path.push(k.clone());
                walk(c, path, out);
                path.pop();
            }
        }
    }
    let mut out = FieldSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// A path as upstream prints it in conflicts: `.spec.containers[name="web"].image`.
pub fn display_path(path: &Path) -> String {
    let mut s = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let parts: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        } else if let Some(i) = el.strip_prefix("i:") {
            s.push_str(&format!("[{i}]"));
        }
    }
    s
}

/// A field an apply would change that another manager owns.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub manager: Manager,
    pub path: Path,
}

/// Upstream's message for a refused apply (`getConflictMessage`).
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [c] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            c.manager.describe(),
            display_path(&c.path)
        );
    }
    let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in conflicts {
        by.entry(c.manager.describe()).or_default().push(display_path(&c.path));
    }
    let mut lines = Vec::new();
    for (m, paths) in by {
        lines.push(format!("conflicts with {m}:"));
        lines.extend(paths.into_iter().map(|p| format!("- {p}")));
    }
    format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
}

/// The result of an apply: the new object and its managers.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub object: Value,
    pub managers: Vec<Manager>,
}

/// Applies `config` for `me` (an `Apply` manager) to `live` (`None`: the object does not exist),
/// as upstream's `Updater.Apply`.
///
/// # Errors
/// The fields another manager owns that the apply would change, unless `force`, which takes
/// them.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    managers: Vec<Manager>,
    mut me: Manager,
    force: bool,
    types: &dyn Types,
) -> Result<Applied, Vec<Conflict>> {
    let empty = json!({});
    let base = live.unwrap_or(&empty);
    let mut merged = merge(base, config, types);
    let mut managers = managers;
    let mine = managers.iter().position(|m| m.same(&me));
    let last = mine.map(|i| managers.remove(i));
    me.fields = field_set(config, types);
    // Fields the applier stopped applying go when no manager owns them or anything under them
    // (upstream's `prune`: `RemoveItems(lastSet)` then `addBackOwnedItems`).
    if let Some(last) = &last {
        let all: Vec<&FieldSet> = managers.iter().map(|m| &m.fields).chain([&me.fields]).collect();
        for p in &last.fields {
            let kept = all
                .iter()
                .any(|s| s.range(p.clone()..).take_while(|q| q.starts_with(p)).next().is_some());
            if !kept {
                remove_path(&mut merged, p, types, &mut Vec::new());
            }
        }
    }
    let c = compare(live, Some(&merged), types);
    // The entry's time says when its manager last changed the object (upstream's
    // `managedFieldsUpdater`): an apply that changes nothing keeps it.
    if let Some(last) = &last
        && last.fields == me.fields
        && c.is_empty()
    {
        me.time.clone_from(&last.time);
    }
    let changed: FieldSet = c.modified.union(&c.added).cloned().collect();
    let mut conflicts = Vec::new();
    for m in &managers {
        for p in m.fields.intersection(&changed) {
            conflicts.push(Conflict { manager: m.clone(), path: p.clone() });
        }
    }
    if !force && !conflicts.is_empty() {
        conflicts
            .sort_by(|a, b| (a.manager.describe(), &a.path).cmp(&(b.manager.describe(), &b.path)));
        for c in &mut conflicts {
            c.manager.fields.clear();
        }
        return Err(conflicts);
    }
    for m in &mut managers {
        let before = m.fields.len();
        m.fields.retain(|p| !changed.contains(p) && !c.removed.contains(p));
        if m.fields.len() != before {
            m.time = None;
        }
    }
    // The applier's entry keeps its place; a new one goes last.
    match mine {
        Some(i) => managers.insert(i.min(managers.len()), me),
        None => managers.push(me),
    }
    managers.retain(|m| !m.fields.is_empty());
    Ok(Applied { object: merged, managers })
}

/// Records a write that is not an apply (`old` `None`: a create) by `me`, an `Update` manager,
/// as upstream's `Updater.Update`: it takes every field it adds or changes from the others, and
/// fields that go are dropped from every manager. A write that changes no field leaves the
/// managers as they are.
pub fn update(
    old: Option<&Value>,
    new: &Value,
    managers: Vec<Manager>,
    me: Manager,
    types: &dyn Types,
) -> Vec<Manager> {
    let c = compare(old, Some(new), types);
    if c.is_empty() {
        return managers;
    }
    let changed: FieldSet = c.modified.union(&c.added).cloned().collect();
    let mut out = Vec::with_capacity(managers.len() + 1);
    let mut mine = None;
    for mut m in managers {
        if m.same(&me) {
            mine = Some(m);
            continue;
        }
        m.fields.retain(|p| !changed.contains(p) && !c.removed.contains(p));
        if !m.fields.is_empty() {
            out.push(m);
        }
    }
    let mut me = mine.unwrap_or(me);
    me.fields.retain(|p| !c.removed.contains(p));
    me.fields.extend(changed);
    me.time = None;
    if !me.fields.is_empty() {
        out.push(me);
    }
    out
}

#[cfg(test)]
mod tests;
