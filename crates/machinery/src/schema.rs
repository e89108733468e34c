//! Structural schemas: validation with field causes, pruning of unknown fields and defaulting.
//!
//! A [`Schema`] is compiled once from a JSON schema and then applied to many objects. Two kinds
//! of input are expected:
//!
//! - a CustomResourceDefinition version's `openAPIV3Schema` (no references, checked first with
//!   [`Schema::check_structural`] when the CRD is created or updated);
//! - the schema of a built-in kind as schemars generates it from k8s-openapi: `$ref`s into a map
//!   of definitions (`#/$defs/io.k8s.api.core.v1.PodSpec`), possibly with sibling keys such as
//!   `description`, and `x-kubernetes-int-or-string` for `IntOrString` and `Quantity`.
//!
//! References are compiled into an arena once per definition, so recursive definitions such as
//! `JSONSchemaProps` cost nothing extra and every walk is bounded by the object being walked.
//!
//! The server applies a schema in the order the apiextensions apiserver does:
//! [`Schema::prune`] (unknown fields, reported for strict field validation), then
//! [`Schema::default`] (drops non-nullable nulls, fills in `default`s), then
//! [`Schema::validate`] (field causes for a `422 Invalid` status). Causes use the upstream
//! `field.ErrorType` reasons and `ErrorBody` wording so that kubectl prints what users expect.
//!
//! What it does not do:
//! - validate `metadata` beyond "is an object": the server validates `ObjectMeta` itself, so
//!   `metadata` at the root and inside `x-kubernetes-embedded-resource` is never validated,
//!   pruned or defaulted here (and `apiVersion`/`kind`/`metadata` are not treated as required);
//! - string formats other than the integer ranges of `int32`/`int64` (upstream checks
//!   `date-time`, `uuid` and others for CRDs);
//! - CEL rules (`x-kubernetes-validations`: the API server's `cel` module enforces them),
//!   `patternProperties`, and the uniqueness of list types (`x-kubernetes-list-type` and
//!   `x-kubernetes-map-type` are only read for server-side apply, by [`Schema::merge_info`]);
//! - `pattern` outside the RE2 subset the private `regex` module implements: a pattern using
//!   other syntax (flags, Unicode classes, POSIX classes) is not enforced.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};

/// Why a JSON schema could not be compiled into a [`Schema`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaError {
    /// A `$ref` names a definition that is not in the definitions map (or there is no map).
    #[error("schema reference {reference:?} at {path} does not name a known definition")]
    UnresolvedRef { reference: String, path: String },
    /// A `$ref` points outside the document (`other.json#/...`) or not at a definition.
    #[error("schema reference {reference:?} at {path} is not a local definition reference")]
    UnsupportedRef { reference: String, path: String },
    /// A definition refers to itself through nothing but `$ref`s, so it has no meaning.
    #[error("schema definition {name:?} refers only to itself")]
    RefCycle { name: String },
    /// A schema (or sub-schema) is not a JSON object.
    #[error("schema at {path} is not an object")]
    NotAnObject { path: String },
    /// A keyword has a value of the wrong JSON type.
    #[error("schema keyword {keyword:?} at {path} must be {expected}")]
    InvalidKeyword { path: String, keyword: String, expected: &'static str },
    /// `type` names something other than the seven JSON types.
    #[error("schema type {name:?} at {path} is not a json type")]
    UnknownType { name: String, path: String },
}

/// One field error, shaped like a `metav1.StatusCause` built from an upstream `field.Error`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FieldCause {
    /// The upstream `field.ErrorType` as a cause type, such as `FieldValueInvalid`.
    pub reason: String,
    /// The upstream `ErrorBody()`: the error type, the bad value and the detail.
    pub message: String,
    /// The field path, such as `spec.template.spec.containers[0].name`.
    pub field: String,
}

impl FieldCause {
    fn new(reason: &str, field: &str, message: String) -> Self {
        FieldCause { reason: reason.to_owned(), message, field: field.to_owned() }
    }

    fn with_detail(head: String, detail: &str) -> String {
        if detail.is_empty() { head } else { format!("{head}: {detail}") }
    }

    /// `field.Required`: `Required value` and an optional detail.
    pub fn required(field: &str, detail: &str) -> Self {
        Self::new("FieldValueRequired", field, Self::with_detail("Required value".into(), detail))
    }

    /// `field.Invalid`: `Invalid value: <value>: <detail>`.
    pub fn invalid(field: &str, value: &Value, detail: &str) -> Self {
        let head = format!("Invalid value: {}", go_value(value));
        Self::new("FieldValueInvalid", field, Self::with_detail(head, detail))
    }

    /// `field.TypeInvalid`: printed like `field.Invalid`, with its own reason.
    pub fn type_invalid(field: &str, value: &Value, detail: &str) -> Self {
        let head = format!("Invalid value: {}", go_value(value));
        Self::new("FieldValueTypeInvalid", field, Self::with_detail(head, detail))
    }

    /// `field.NotSupported`: `Unsupported value: <value>: supported values: "a", "b"`.
    pub fn not_supported(field: &str, value: &Value, supported: &[String]) -> Self {
        let mut message = format!("Unsupported value: {}", go_value(value));
        if !supported.is_empty() {
            let quoted: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
            message = format!("{message}: supported values: {}", quoted.join(", "));
        }
        Self::new("FieldValueNotSupported", field, message)
    }

    /// `field.Forbidden`: `Forbidden: <detail>`.
    pub fn forbidden(field: &str, detail: &str) -> Self {
        Self::new("FieldValueForbidden", field, Self::with_detail("Forbidden".into(), detail))
    }

    /// `field.TooLong`: `Too long: may not be more than <max> bytes` (the value is not printed).
    pub fn too_long(field: &str, max: u64) -> Self {
        let unit = if max == 1 { "byte" } else { "bytes" };
        Self::new(
            "FieldValueTooLong",
            field,
            format!("Too long: may not be more than {max} {unit}"),
        )
    }

    /// `field.TooMany`: `Too many: <actual>: must have at most <max> items`.
    pub fn too_many(field: &str, actual: u64, max: Option<u64>) -> Self {
        let detail = match max {
            Some(1) => "must have at most 1 item".to_owned(),
            Some(max) => format!("must have at most {max} items"),
            None => "has too many items".to_owned(),
        };
        Self::new("FieldValueTooMany", field, format!("Too many: {actual}: {detail}"))
    }
}

/// Definitions whose generated schema says less than the Go type accepts. schemars describes
/// them as `type: object` without properties (or, for `JSON`, as an object although any JSON
/// value is allowed); upstream decodes them opaquely, so their contents are kept as they are.
const OPAQUE_DEFINITIONS: &[(&str, bool)] = &[
    ("io.k8s.apimachinery.pkg.runtime.RawExtension", false),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1", false),
    ("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON", true),
    ("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1beta1.JSON", true),
];

/// Prefixes under which a `$ref` names a definition.
const REF_PREFIXES: &[&str] = &["#/$defs/", "#/definitions/", "#/components/schemas/"];

/// Bound on nested walks through the arena. Objects are walked along their own nesting, which
/// serde_json already limits; this stops schema-only cycles such as `allOf: [$ref self]`.
/// The most defaults one object gets; far above any real object, low enough to bound a
/// recursive schema.
const MAX_DEFAULTS: usize = 10_000;
const MAX_DEPTH: usize = 512;

type NodeId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonType {
    Object,
    Array,
    String,
    Integer,
    Number,
    Boolean,
    Null,
}

impl JsonType {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "object" => JsonType::Object,
            "array" => JsonType::Array,
            "string" => JsonType::String,
            "integer" => JsonType::Integer,
            "number" => JsonType::Number,
            "boolean" => JsonType::Boolean,
            "null" => JsonType::Null,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            JsonType::Object => "object",
            JsonType::Array => "array",
            JsonType::String => "string",
            JsonType::Integer => "integer",
            JsonType::Number => "number",
            JsonType::Boolean => "boolean",
            JsonType::Null => "null",
        }
    }

    /// The type go-openapi infers for a decoded JSON value.
    fn of(value: &Value) -> Self {
        match value {
            Value::Null => JsonType::Null,
            Value::Bool(_) => JsonType::Boolean,
            Value::Number(n) if n.is_i64() || n.is_u64() => JsonType::Integer,
            Value::Number(_) => JsonType::Number,
            Value::String(_) => JsonType::String,
            Value::Array(_) => JsonType::Array,
            Value::Object(_) => JsonType::Object,
        }
    }
}

#[derive(Debug, Clone)]
struct Bound {
    value: f64,
    exclusive: bool,
    /// The bound as written, for messages (`1`, not `1.0`).
    text: String,
}

#[derive(Debug, Clone, Default)]
enum Additional {
    #[default]
    Absent,
    Allow(bool),
    Schema(NodeId),
}

#[derive(Debug, Clone)]
struct Pattern {
    source: String,
    /// `None` when the pattern uses syntax outside the supported subset: not enforced.
    regex: Option<regex::Regex>,
}

/// One compiled schema node. A node with a `reference` means "the referenced node, plus my own
/// keywords", which is how a `$ref` with sibling keys (`description`, `default`) is read.
#[derive(Debug, Clone, Default)]
struct Node {
    reference: Option<NodeId>,
    types: Vec<JsonType>,
    format: Option<String>,
    nullable: bool,
    int_or_string: bool,
    preserve_unknown: bool,
    embedded_resource: bool,
    default: Option<Value>,
    enumeration: Option<Vec<Value>>,
    minimum: Option<Bound>,
    maximum: Option<Bound>,
    multiple_of: Option<f64>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    pattern: Option<Pattern>,
    items: Option<NodeId>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    unique_items: bool,
    properties: Vec<(String, NodeId)>,
    required: Vec<String>,
    additional: Additional,
    min_properties: Option<u64>,
    max_properties: Option<u64>,
    all_of: Vec<NodeId>,
    any_of: Vec<NodeId>,
    one_of: Vec<NodeId>,
    not: Option<NodeId>,
    /// `x-kubernetes-list-type`, `x-kubernetes-list-map-keys` and `x-kubernetes-map-type`:
    /// read by server-side apply ([`Schema::merge_info`]), not by validation.
    list_type: Option<String>,
    list_map_keys: Vec<String>,
    map_type: Option<String>,
}

impl Node {
    fn property(&self, name: &str) -> Option<NodeId> {
        self.properties.iter().find(|(k, _)| k == name).map(|(_, id)| *id)
    }

    fn has_structure(&self) -> bool {
        !self.types.is_empty()
            || !self.properties.is_empty()
            || self.items.is_some()
            || !matches!(self.additional, Additional::Absent)
    }
}

/// How one field merges under server-side apply, from its schema's extensions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MergeInfo {
    /// `x-kubernetes-list-type`: `atomic`, `set` or `map`.
    pub list_type: Option<String>,
    /// `x-kubernetes-list-map-keys` of a `map` list.
    pub list_map_keys: Vec<String>,
    /// `x-kubernetes-map-type`: `atomic` or `granular`.
    pub map_type: Option<String>,
    /// The schema defaults of list-map keys, filled in when an item leaves one out.
    pub key_defaults: Vec<(String, Value)>,
}

/// A compiled structural schema. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug, Clone)]
pub struct Schema {
    nodes: Vec<Node>,
    root: NodeId,
}

/// The facts about a node that pruning and defaulting need, with `$ref` chains followed.
struct Effective<'a> {
    /// The last node of the reference chain: the one carrying `properties`/`items`.
    shape: &'a Node,
    preserve_unknown: bool,
    embedded_resource: bool,
}

impl Schema {
    /// Compiles `root`, resolving `$ref`s (`#/$defs/X`, `#/definitions/X` or
    /// `#/components/schemas/X`) against `defs`.
    ///
    /// # Errors
    ///
    /// A sub-schema that is not an object, a keyword of the wrong JSON type, an unknown `type`,
    /// a reference that does not resolve, or a definition that is nothing but a reference to
    /// itself.
    ///
    /// # Caveats
    ///
    /// A `pattern` is compiled leniently: one this module cannot parse is not enforced (CRD
    /// creation reports invalid ones through [`Schema::check_structural`]).
    pub fn from_json(root: &Value, defs: Option<&Map<String, Value>>) -> Result<Self, SchemaError> {
        let mut compiler =
            Compiler { defs, nodes: Vec::new(), by_name: HashMap::new(), order: Vec::new() };
        let root = compiler.compile(root, "")?;
        compiler.check_ref_cycles()?;
        Ok(Schema { nodes: compiler.nodes, root })
    }

    /// Validates `obj` against the schema and returns every failure as a field cause, in the
    /// order the object is walked (required fields first at each level, then properties).
    ///
    /// The root's `metadata` is only checked for being an object; `apiVersion`, `kind` and
    /// `metadata` are not required here because the server sets or checks them itself.
    pub fn validate(&self, obj: &Value) -> Vec<FieldCause> {
        let mut out = Vec::new();
        let mut path = DataPath::default();
        self.validate_node(self.root, obj, &mut path, 0, &mut out);
        out
    }

    /// Removes every field the schema does not specify, unless a node says
    /// `x-kubernetes-preserve-unknown-fields` or allows them with `additionalProperties`, and
    /// returns the removed fields' paths (`spec.foo`, `spec.items[0].bar`), as upstream's
    /// pruning records them for strict field validation (`unknown field "spec.foo"`).
    ///
    /// `apiVersion`, `kind` and `metadata` are kept at the root and inside
    /// `x-kubernetes-embedded-resource` nodes (when they are a string, a string and an object).
    ///
    /// # Caveats
    ///
    /// `additionalProperties: true` keeps the values as they are; upstream would prune their
    /// contents with an empty schema. Schemas for built-in kinds never use it.
    pub fn prune(&self, obj: &mut Value) -> Vec<String> {
        let mut pruned = Vec::new();
        let mut path = DataPath::default();
        self.prune_node(Some(self.root), obj, &mut path, true, 0, &mut pruned);
        pruned
    }

    /// Applies `default`s as the apiextensions apiserver does after pruning: first removes
    /// `null`s of non-nullable fields that have no default, then fills in each missing (or
    /// non-nullable `null`) property that has a default, recursively, including array items and
    /// `additionalProperties` values. Defaults are copied as they are; they are not validated.
    pub fn default(&self, obj: &mut Value) {
        self.prune_nulls(Some(self.root), obj, true, 0);
        // A budget of inserted defaults: recursive `$ref`s with defaults would otherwise grow
        // the object exponentially down to the depth limit.
        let mut budget = MAX_DEFAULTS;
        self.apply_defaults(self.root, obj, true, 0, &mut budget);
    }

    /// How the value at `fields` (the field names leading to it; list levels are not counted,
    /// so `spec.ports.port` is the `port` of every item of `spec.ports`) merges under
    /// server-side apply: its `x-kubernetes-list-type`, `x-kubernetes-list-map-keys` and
    /// `x-kubernetes-map-type`, and the defaults of its items' properties (for list-map keys
    /// a client may leave out). `None` when the schema does not describe that field.
    pub fn merge_info(&self, fields: &[&str]) -> Option<MergeInfo> {
        let mut id = self.root;
        for name in fields {
            id = self.child_of(id, name)?;
        }
        let mut info = MergeInfo::default();
        let mut node = Some(id);
        let mut hops = 0;
        // Keywords beside a `$ref` win over the referenced node's, as `default_of` reads them.
        while let Some(n) = node.map(|n| self.node(n)) {
            if hops > self.nodes.len() {
                break;
            }
            hops += 1;
            if info.list_type.is_none() {
                info.list_type.clone_from(&n.list_type);
            }
            if info.list_map_keys.is_empty() {
                info.list_map_keys.clone_from(&n.list_map_keys);
            }
            if info.map_type.is_none() {
                info.map_type.clone_from(&n.map_type);
            }
            node = n.reference;
        }
        if let Some(items) = self.effective(id).shape.items {
            let item = self.effective(items).shape;
            for key in &info.list_map_keys {
                if let Some(d) = item.property(key).and_then(|p| self.default_of(p)) {
                    info.key_defaults.push((key.clone(), d.clone()));
                }
            }
        }
        Some(info)
    }

    /// The node of field `name` under `id`; through the items of an array, since field paths
    /// do not count list levels.
    fn child_of(&self, id: NodeId, name: &str) -> Option<NodeId> {
        let mut shape = self.effective(id).shape;
        if let Some(items) = shape.items {
            shape = self.effective(items).shape;
        }
        shape.property(name).or(match shape.additional {
            Additional::Schema(extra) => Some(extra),
            _ => None,
        })
    }

    /// Whether a CRD `openAPIV3Schema` is structural; see [`Schema::check_structural`].
    pub fn is_structural(root: &Value) -> bool {
        Self::check_structural(root, "").is_empty()
    }

    /// Checks that a CRD `openAPIV3Schema` is structural, the way the apiextensions apiserver
    /// does before it accepts a CustomResourceDefinition. `base` is the schema's own field path
    /// (`spec.versions[0].schema.openAPIV3Schema`), so causes read like upstream's:
    /// `spec.versions[0].schema.openAPIV3Schema.properties[foo].type` with
    /// `Required value: must not be empty for specified object fields`.
    ///
    /// Causes are sorted as upstream sorts them (by field and message).
    ///
    /// # Caveats
    ///
    /// Only the structural rules (`ValidateStructural`) are checked, not the rest of CRD
    /// validation (such as `$ref` being forbidden, defaults being pruned and valid, or list-type
    /// rules).
    pub fn check_structural(root: &Value, base: &str) -> Vec<FieldCause> {
        let mut out = Vec::new();
        let path = FieldPath(base.to_owned());
        match root.as_object() {
            Some(map) => {
                structural::invariants(map, structural::Level::Root, &path, &mut out);
                structural::completeness(map, &path, &mut out);
            }
            None => out
                .push(FieldCause::required(&path.child("type").0, "must not be empty at the root")),
        }
        if out.is_empty()
            && let Err(e) = Self::from_json(root, None)
        {
            // A schema the rules let through but this engine cannot compile (a `$ref`, a type
            // that is no JSON type) would leave a CRD accepted and never served.
            out.push(FieldCause::invalid(&path.0, &Value::String(String::new()), &e.to_string()));
        }
        // Upstream sorts by `field.Error.Error()`, which is `<field>: <body>`.
        out.sort_by_cached_key(|c| format!("{}: {}", c.field, c.message));
        out
    }

    fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// Follows `$ref`s from `id`. Cycles were rejected at compile time; the bound is a guard.
    fn effective(&self, id: NodeId) -> Effective<'_> {
        let mut node = self.node(id);
        let mut preserve_unknown = node.preserve_unknown;
        let mut embedded_resource = node.embedded_resource;
        let mut hops = 0;
        while let Some(next) = node.reference {
            if hops > self.nodes.len() {
                break;
            }
            hops += 1;
            node = self.node(next);
            preserve_unknown |= node.preserve_unknown;
            embedded_resource |= node.embedded_resource;
        }
        Effective { shape: node, preserve_unknown, embedded_resource }
    }

    /// The first `default` along the reference chain: a sibling of `$ref` wins.
    fn default_of(&self, id: NodeId) -> Option<&Value> {
        let mut current = Some(id);
        let mut hops = 0;
        while let Some(id) = current {
            let node = self.node(id);
            if node.default.is_some() || hops > self.nodes.len() {
                return node.default.as_ref();
            }
            hops += 1;
            current = node.reference;
        }
        None
    }

    fn nullable(&self, id: NodeId) -> bool {
        let mut current = Some(id);
        let mut hops = 0;
        while let Some(id) = current {
            let node = self.node(id);
            if node.nullable {
                return true;
            }
            if hops > self.nodes.len() {
                return false;
            }
            hops += 1;
            current = node.reference;
        }
        false
    }

    fn validate_node(
        &self,
        id: NodeId,
        value: &Value,
        path: &mut DataPath,
        depth: usize,
        out: &mut Vec<FieldCause>,
    ) {
        if depth > MAX_DEPTH {
            return;
        }
        let node = self.node(id);
        if value.is_null() && node.nullable {
            return;
        }
        if let Some(target) = node.reference {
            let before = out.len();
            self.validate_node(target, value, path, depth + 1, out);
            if out.len() != before && node.types.is_empty() {
                // The referenced type already failed; the sibling keywords add nothing useful.
                return;
            }
        }
        self.validate_own(node, value, path, depth, out);
    }

    fn validate_own(
        &self,
        node: &Node,
        value: &Value,
        path: &mut DataPath,
        depth: usize,
        out: &mut Vec<FieldCause>,
    ) {
        let name = path.0.clone();
        let allowed: &[JsonType] =
            if node.int_or_string { &[JsonType::Integer, JsonType::String] } else { &node.types };
        if !allowed.is_empty() && !type_matches(allowed, value) {
            let expected: Vec<&str> = allowed.iter().map(|t| t.name()).collect();
            let actual = JsonType::of(value).name();
            let detail =
                format!("{name} in body must be of type {}: {actual:?}", expected.join(","));
            out.push(FieldCause::type_invalid(&name, &Value::from(actual), &detail));
            return;
        }
        if value.is_null() {
            // Nothing else applies to a null that the type allows (or no type constrains).
            return;
        }

        if let (Some(format), Some(n)) = (&node.format, value.as_number()) {
            check_integer_format(format, n, &name, value, out);
        }
        if let Some(allowed) = &node.enumeration
            && !allowed.iter().any(|candidate| json_equal(candidate, value))
        {
            let supported: Vec<String> = allowed
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            out.push(FieldCause::not_supported(&name, value, &supported));
        }

        match value {
            Value::String(s) => self.validate_string(node, s, &name, value, out),
            Value::Number(n) => validate_number(node, n, &name, value, out),
            Value::Array(items) => self.validate_array(node, items, path, depth, out),
            Value::Object(map) => self.validate_object(node, map, path, depth, out),
            Value::Bool(_) | Value::Null => {}
        }

        for &sub in &node.all_of {
            self.validate_node(sub, value, path, depth + 1, out);
        }
        if !node.any_of.is_empty()
            && !node.any_of.iter().any(|&s| self.passes(s, value, path, depth))
        {
            let detail = format!("{name} must validate at least one schema (anyOf)");
            out.push(FieldCause::invalid(&name, &Value::from(""), &detail));
        }
        if !node.one_of.is_empty() {
            let passing =
                node.one_of.iter().filter(|&&s| self.passes(s, value, path, depth)).count();
            if passing != 1 {
                let detail = format!("{name} must validate one and only one schema (oneOf)");
                out.push(FieldCause::invalid(&name, &Value::from(""), &detail));
            }
        }
        if let Some(not) = node.not
            && self.passes(not, value, path, depth)
        {
            let detail = format!("{name} must not validate the schema (not)");
            out.push(FieldCause::invalid(&name, &Value::from(""), &detail));
        }
    }

    fn passes(&self, id: NodeId, value: &Value, path: &mut DataPath, depth: usize) -> bool {
        let mut scratch = Vec::new();
        self.validate_node(id, value, path, depth + 1, &mut scratch);
        scratch.is_empty()
    }

    fn validate_string(
        &self,
        node: &Node,
        s: &str,
        name: &str,
        value: &Value,
        out: &mut Vec<FieldCause>,
    ) {
        // go-openapi counts characters (runes), not bytes.
        let len = s.chars().count() as u64;
        if let Some(max) = node.max_length
            && len > max
        {
            out.push(FieldCause::too_long(name, max));
        }
        if let Some(min) = node.min_length
            && len < min
        {
            let detail = format!("{name} in body should be at least {min} chars long");
            out.push(FieldCause::invalid(name, value, &detail));
        }
        if let Some(Pattern { source, regex: Some(regex) }) = &node.pattern
            && !regex.is_match(s)
        {
            let detail = format!("{name} in body should match '{source}'");
            out.push(FieldCause::invalid(name, value, &detail));
        }
    }

    fn validate_array(
        &self,
        node: &Node,
        items: &[Value],
        path: &mut DataPath,
        depth: usize,
        out: &mut Vec<FieldCause>,
    ) {
        if let Some(item_schema) = node.items {
            for (i, item) in items.iter().enumerate() {
                let mark = path.index(i);
                self.validate_node(item_schema, item, path, depth + 1, out);
                path.truncate(mark);
            }
        }
        let name = path.0.as_str();
        let size = items.len() as u64;
        if let Some(min) = node.min_items
            && size < min
        {
            let detail = format!("{name} in body should have at least {min} items");
            out.push(FieldCause::invalid(name, &Value::from(size), &detail));
        }
        if let Some(max) = node.max_items
            && size > max
        {
            out.push(FieldCause::too_many(name, size, Some(max)));
        }
        if node.unique_items
            && items.iter().enumerate().any(|(i, a)| items[..i].iter().any(|b| json_equal(a, b)))
        {
            let detail = format!("{name} in body shouldn't contain duplicates");
            out.push(FieldCause::invalid(name, &Value::from(""), &detail));
        }
    }

    fn validate_object(
        &self,
        node: &Node,
        map: &Map<String, Value>,
        path: &mut DataPath,
        depth: usize,
        out: &mut Vec<FieldCause>,
    ) {
        let at_resource_root = path.0.is_empty() || node.embedded_resource;
        let name = path.0.clone();
        let count = map.len() as u64;
        if let Some(min) = node.min_properties
            && count < min
        {
            let detail = format!("{name} in body should have at least {min} properties");
            out.push(FieldCause::invalid(&name, &Value::from(min), &detail));
        }
        if let Some(max) = node.max_properties
            && count > max
        {
            out.push(FieldCause::too_many(&name, max, None));
        }
        if matches!(node.additional, Additional::Allow(false)) {
            for key in map.keys() {
                if node.property(key).is_none() && !(at_resource_root && is_meta_field(key)) {
                    let detail =
                        format!("{} in body is a forbidden property", join_key(&name, key));
                    out.push(FieldCause::invalid(&name, &Value::from(key.as_str()), &detail));
                }
            }
        }
        for key in &node.required {
            if at_resource_root && is_meta_field(key) {
                continue;
            }
            if !map.contains_key(key) {
                out.push(FieldCause::required(&join_key(&name, key), ""));
            }
        }
        for (key, value) in map {
            let mark = path.key(key);
            if at_resource_root && key == "metadata" {
                if !value.is_object() {
                    let actual = JsonType::of(value).name();
                    let detail = format!("{} in body must be of type object: {actual:?}", path.0);
                    out.push(FieldCause::type_invalid(&path.0, &Value::from(actual), &detail));
                }
            } else if let Some(prop) = node.property(key) {
                self.validate_node(prop, value, path, depth + 1, out);
            } else if let Additional::Schema(extra) = node.additional {
                self.validate_node(extra, value, path, depth + 1, out);
            }
            path.truncate(mark);
        }
    }

    fn prune_node(
        &self,
        id: Option<NodeId>,
        value: &mut Value,
        path: &mut DataPath,
        resource_root: bool,
        depth: usize,
        pruned: &mut Vec<String>,
    ) {
        if depth > MAX_DEPTH {
            return;
        }
        let Some(id) = id else {
            self.prune_everything(value, path, depth, pruned);
            return;
        };
        let eff = self.effective(id);
        let embedded = eff.embedded_resource || resource_root;
        if eff.preserve_unknown {
            self.prune_known(&eff, embedded, value, path, depth, pruned);
            return;
        }
        match value {
            Value::Object(map) => {
                let keys: Vec<String> = map.keys().cloned().collect();
                for key in keys {
                    let Some(child) = map.get_mut(&key) else { continue };
                    if embedded && keeps_meta_field(&key, child) {
                        continue;
                    }
                    let schema = match (eff.shape.property(&key), &eff.shape.additional) {
                        (Some(prop), _) => Some(Some(prop)),
                        (None, Additional::Schema(extra)) => Some(Some(*extra)),
                        (None, Additional::Allow(true)) => Some(None),
                        (None, _) => None,
                    };
                    match schema {
                        Some(Some(child_schema)) => {
                            let mark = path.key(&key);
                            self.prune_node(
                                Some(child_schema),
                                child,
                                path,
                                false,
                                depth + 1,
                                pruned,
                            );
                            path.truncate(mark);
                        }
                        Some(None) => {}
                        None => {
                            map.shift_remove(&key);
                            // Upstream drops a mistyped apiVersion/kind/metadata at the root
                            // silently: the decoder reports those itself.
                            if !(resource_root && is_meta_field(&key)) {
                                pruned.push(path.joined(&key));
                            }
                        }
                    }
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let mark = path.index(i);
                    self.prune_node(eff.shape.items, item, path, false, depth + 1, pruned);
                    path.truncate(mark);
                }
            }
            _ => {}
        }
    }

    /// Pruning under `x-kubernetes-preserve-unknown-fields`: unknown fields stay, but the
    /// fields the schema does specify are still pruned by their own schemas.
    fn prune_known(
        &self,
        eff: &Effective<'_>,
        embedded: bool,
        value: &mut Value,
        path: &mut DataPath,
        depth: usize,
        pruned: &mut Vec<String>,
    ) {
        match value {
            Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    if embedded && is_meta_field(key) {
                        continue;
                    }
                    let schema = eff.shape.property(key).or(match eff.shape.additional {
                        Additional::Schema(extra) => Some(extra),
                        _ => None,
                    });
                    if let Some(schema) = schema {
                        let mark = path.key(key);
                        self.prune_node(Some(schema), child, path, false, depth + 1, pruned);
                        path.truncate(mark);
                    }
                }
            }
            Value::Array(items) => {
                let Some(item_schema) = eff.shape.items else { return };
                let item_eff = self.effective(item_schema);
                let item_embedded = item_eff.embedded_resource;
                for (i, item) in items.iter_mut().enumerate() {
                    let mark = path.index(i);
                    self.prune_known(&item_eff, item_embedded, item, path, depth + 1, pruned);
                    path.truncate(mark);
                }
            }
            _ => {}
        }
    }

    /// Pruning with no schema at all (array items without `items`, for example).
    fn prune_everything(
        &self,
        value: &mut Value,
        path: &mut DataPath,
        depth: usize,
        pruned: &mut Vec<String>,
    ) {
        match value {
            Value::Object(map) => {
                for key in map.keys() {
                    pruned.push(path.joined(key));
                }
                map.clear();
            }
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let mark = path.index(i);
                    self.prune_node(None, item, path, false, depth + 1, pruned);
                    path.truncate(mark);
                }
            }
            _ => {}
        }
    }

    /// The schema for `key` inside an object described by `id`, if any.
    fn field_schema(&self, id: Option<NodeId>, key: &str) -> Option<NodeId> {
        let eff = self.effective(id?);
        eff.shape.property(key).or(match eff.shape.additional {
            Additional::Schema(extra) => Some(extra),
            _ => None,
        })
    }

    /// Upstream `PruneNonNullableNullsWithoutDefaults`.
    fn prune_nulls(&self, id: Option<NodeId>, value: &mut Value, root: bool, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        match value {
            Value::Object(map) => {
                let keys: Vec<String> = map.keys().cloned().collect();
                for key in keys {
                    if root && key == "metadata" {
                        continue;
                    }
                    let schema = self.field_schema(id, &key);
                    let Some(child) = map.get_mut(&key) else { continue };
                    let drop = child.is_null()
                        && schema
                            .is_some_and(|s| !self.nullable(s) && self.default_of(s).is_none());
                    if drop {
                        map.shift_remove(&key);
                    } else {
                        self.prune_nulls(schema, child, false, depth + 1);
                    }
                }
            }
            Value::Array(items) => {
                let item_schema = id.and_then(|id| self.effective(id).shape.items);
                for item in items {
                    self.prune_nulls(item_schema, item, false, depth + 1);
                }
            }
            _ => {}
        }
    }

    /// Upstream structural `Default`.
    fn apply_defaults(
        &self,
        id: NodeId,
        value: &mut Value,
        root: bool,
        depth: usize,
        budget: &mut usize,
    ) {
        if depth > MAX_DEPTH || *budget == 0 {
            return;
        }
        let shape = self.effective(id).shape;
        match value {
            Value::Object(map) => {
                for (key, prop) in &shape.properties {
                    if root && key == "metadata" {
                        continue;
                    }
                    let Some(default) = self.default_of(*prop) else { continue };
                    let missing = match map.get(key) {
                        None => true,
                        Some(v) => v.is_null() && !self.nullable(*prop),
                    };
                    if missing && *budget > 0 {
                        *budget -= 1;
                        map.insert(key.clone(), default.clone());
                    }
                }
                for (key, child) in map.iter_mut() {
                    if root && key == "metadata" {
                        continue;
                    }
                    if let Some(prop) = shape.property(key) {
                        self.apply_defaults(prop, child, false, depth + 1, budget);
                    } else if let Additional::Schema(extra) = shape.additional {
                        self.default_null(extra, child);
                        self.apply_defaults(extra, child, false, depth + 1, budget);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item_schema) = shape.items {
                    for item in items {
                        self.default_null(item_schema, item);
                        self.apply_defaults(item_schema, item, false, depth + 1, budget);
                    }
                }
            }
            _ => {}
        }
    }

    fn default_null(&self, id: NodeId, value: &mut Value) {
        if value.is_null()
            && !self.nullable(id)
            && let Some(default) = self.default_of(id)
        {
            *value = default.clone();
        }
    }
}

fn type_matches(allowed: &[JsonType], value: &Value) -> bool {
    let actual = JsonType::of(value);
    if allowed.contains(&actual) {
        return true;
    }
    match (actual, value) {
        // go-openapi accepts a float with an integral value where an integer is expected...
        (JsonType::Number, Value::Number(n)) => {
            allowed.contains(&JsonType::Integer) && n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        // ...and an integer where a number is expected.
        (JsonType::Integer, _) => allowed.contains(&JsonType::Number),
        _ => false,
    }
}

fn check_integer_format(
    format: &str,
    n: &serde_json::Number,
    name: &str,
    value: &Value,
    out: &mut Vec<FieldCause>,
) {
    let (min, max) = match format {
        "int32" => (i64::from(i32::MIN), i64::from(i32::MAX)),
        "int64" => (i64::MIN, i64::MAX),
        _ => return,
    };
    let below = match (n.as_i64(), n.as_u64()) {
        (Some(i), _) => Some(i < min),
        (None, Some(_)) => Some(false),
        // A float: compare in floating point; the integral check is the type's business.
        (None, None) => n.as_f64().map(|f| f < min as f64),
    };
    let above = match (n.as_i64(), n.as_u64()) {
        (Some(i), _) => Some(i > max),
        (None, Some(u)) => Some(i64::try_from(u).map_or(true, |i| i > max)),
        (None, None) => n.as_f64().map(|f| f > max as f64),
    };
    if below == Some(true) {
        let detail = format!("{name} in body should be greater than or equal to {min}");
        out.push(FieldCause::invalid(name, value, &detail));
    } else if above == Some(true) {
        let detail = format!("{name} in body should be less than or equal to {max}");
        out.push(FieldCause::invalid(name, value, &detail));
    }
}

fn validate_number(
    node: &Node,
    n: &serde_json::Number,
    name: &str,
    value: &Value,
    out: &mut Vec<FieldCause>,
) {
    let Some(f) = n.as_f64() else { return };
    if let Some(max) = &node.maximum {
        let fails = if max.exclusive { f >= max.value } else { f > max.value };
        if fails {
            let op = if max.exclusive { "less than" } else { "less than or equal to" };
            let detail = format!("{name} in body should be {op} {}", max.text);
            out.push(FieldCause::invalid(name, value, &detail));
        }
    }
    if let Some(min) = &node.minimum {
        let fails = if min.exclusive { f <= min.value } else { f < min.value };
        if fails {
            let op = if min.exclusive { "greater than" } else { "greater than or equal to" };
            let detail = format!("{name} in body should be {op} {}", min.text);
            out.push(FieldCause::invalid(name, value, &detail));
        }
    }
    if let Some(factor) = node.multiple_of
        && factor > 0.0
    {
        let ratio = f / factor;
        if (ratio - ratio.round()).abs() > 1e-9 {
            let detail = format!("{name} in body should be a multiple of {}", format_f64(factor));
            out.push(FieldCause::invalid(name, value, &detail));
        }
    }
}

/// JSON equality where `1` and `1.0` are the same number, as in Go's decoded values.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

fn is_meta_field(key: &str) -> bool {
    matches!(key, "apiVersion" | "kind" | "metadata")
}

/// Upstream keeps `apiVersion`/`kind` strings and a `metadata` object of a resource unpruned.
fn keeps_meta_field(key: &str, value: &Value) -> bool {
    match key {
        "apiVersion" | "kind" => value.is_string(),
        "metadata" => value.is_object(),
        _ => false,
    }
}

fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_owned() } else { format!("{parent}.{key}") }
}

fn format_f64(f: f64) -> String {
    // Rust prints integral floats without a fraction (`1`), like Go's `%v`.
    format!("{f}")
}

/// A value as upstream `field.Error.ErrorBody` prints it: strings quoted, numbers and booleans
/// bare, `null` for nil. Objects and arrays are printed as JSON (Go prints its own syntax).
fn go_value(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => go_quote(s),
        Value::Array(_) | Value::Object(_) => value.to_string(),
    }
}

/// Go's `%q` for the common cases: printable characters as they are, the usual escapes, and
/// `\x`/`\u` for other control characters.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A data path as go-openapi builds it: `spec.containers[0].name`.
#[derive(Debug, Default)]
struct DataPath(String);

impl DataPath {
    fn key(&mut self, key: &str) -> usize {
        let mark = self.0.len();
        if !self.0.is_empty() {
            self.0.push('.');
        }
        self.0.push_str(key);
        mark
    }

    fn index(&mut self, i: usize) -> usize {
        let mark = self.0.len();
        let _ = write!(self.0, "[{i}]");
        mark
    }

    fn truncate(&mut self, mark: usize) {
        self.0.truncate(mark);
    }

    fn joined(&self, key: &str) -> String {
        join_key(&self.0, key)
    }
}

/// A schema field path as `field.Path` prints it: `openAPIV3Schema.properties[foo].type`.
#[derive(Debug, Clone)]
struct FieldPath(String);

impl FieldPath {
    fn child(&self, name: &str) -> FieldPath {
        if self.0.is_empty() {
            FieldPath(name.to_owned())
        } else {
            FieldPath(format!("{}.{name}", self.0))
        }
    }

    fn key(&self, key: &str) -> FieldPath {
        FieldPath(format!("{}[{key}]", self.0))
    }

    fn index(&self, i: usize) -> FieldPath {
        FieldPath(format!("{}[{i}]", self.0))
    }
}

struct Compiler<'a> {
    defs: Option<&'a Map<String, Value>>,
    nodes: Vec<Node>,
    /// Definitions compiled so far.
    by_name: HashMap<String, NodeId>,
    /// The same, in compile order, so that errors name the first definition of a cycle.
    order: Vec<(String, NodeId)>,
}

impl Compiler<'_> {
    fn alloc(&mut self) -> NodeId {
        self.nodes.push(Node::default());
        self.nodes.len() - 1
    }

    fn compile(&mut self, value: &Value, path: &str) -> Result<NodeId, SchemaError> {
        let id = self.alloc();
        self.fill(id, value, path)?;
        Ok(id)
    }

    fn fill(&mut self, id: NodeId, value: &Value, path: &str) -> Result<(), SchemaError> {
        let map = match value {
            Value::Object(map) => map,
            // `true` is the schema that allows everything.
            Value::Bool(true) => {
                self.nodes[id].preserve_unknown = true;
                return Ok(());
            }
            _ => return Err(SchemaError::NotAnObject { path: display_path(path) }),
        };
        let mut node = Node::default();
        if let Some(reference) = map.get("$ref") {
            let reference = expect_str(reference, path, "$ref")?;
            node.reference = Some(self.reference(reference, path)?);
        }
        if let Some(ty) = map.get("type") {
            match ty {
                Value::String(name) => node.types.push(parse_type(name, path)?),
                Value::Array(names) => {
                    for name in names {
                        let name = expect_str(name, path, "type")?;
                        match parse_type(name, path)? {
                            JsonType::Null => node.nullable = true,
                            other => node.types.push(other),
                        }
                    }
                }
                _ => return Err(invalid_keyword(path, "type", "a string or an array of strings")),
            }
        }
        node.format = opt_str(map, path, "format")?.map(str::to_owned);
        node.nullable |= opt_bool(map, path, "nullable")?;
        node.int_or_string = opt_bool(map, path, "x-kubernetes-int-or-string")?;
        node.preserve_unknown = opt_bool(map, path, "x-kubernetes-preserve-unknown-fields")?;
        node.embedded_resource = opt_bool(map, path, "x-kubernetes-embedded-resource")?;
        node.list_type = opt_str(map, path, "x-kubernetes-list-type")?.map(str::to_owned);
        node.map_type = opt_str(map, path, "x-kubernetes-map-type")?.map(str::to_owned);
        if let Some(keys) = map.get("x-kubernetes-list-map-keys").and_then(Value::as_array) {
            node.list_map_keys = keys.iter().filter_map(Value::as_str).map(str::to_owned).collect();
        }
        node.default = map.get("default").cloned();
        if let Some(values) = map.get("enum") {
            let values =
                values.as_array().ok_or_else(|| invalid_keyword(path, "enum", "an array"))?;
            node.enumeration = Some(values.clone());
        }
        node.minimum = bound(map, path, "minimum", "exclusiveMinimum")?;
        node.maximum = bound(map, path, "maximum", "exclusiveMaximum")?;
        node.multiple_of = opt_f64(map, path, "multipleOf")?;
        node.min_length = opt_u64(map, path, "minLength")?;
        node.max_length = opt_u64(map, path, "maxLength")?;
        if let Some(source) = opt_str(map, path, "pattern")? {
            node.pattern =
                Some(Pattern { source: source.to_owned(), regex: regex::compile(source).ok() });
        }
        node.min_items = opt_u64(map, path, "minItems")?;
        node.max_items = opt_u64(map, path, "maxItems")?;
        node.unique_items = opt_bool(map, path, "uniqueItems")?;
        node.min_properties = opt_u64(map, path, "minProperties")?;
        node.max_properties = opt_u64(map, path, "maxProperties")?;
        match map.get("items") {
            None => {}
            Some(Value::Array(tuple)) => {
                // A tuple schema: its items share one schema in structural schemas; use the
                // first, as nothing in Kubernetes generates tuples.
                if let Some(first) = tuple.first() {
                    node.items = Some(self.compile(first, &format!("{path}/items/0"))?);
                }
            }
            Some(items) => node.items = Some(self.compile(items, &format!("{path}/items"))?),
        }
        if let Some(properties) = map.get("properties") {
            let properties = properties
                .as_object()
                .ok_or_else(|| invalid_keyword(path, "properties", "an object"))?;
            for (name, sub) in properties {
                let sub_path = format!("{path}/properties/{}", escape_pointer(name));
                let sub = self.compile(sub, &sub_path)?;
                node.properties.push((name.clone(), sub));
            }
        }
        if let Some(required) = map.get("required") {
            let required =
                required.as_array().ok_or_else(|| invalid_keyword(path, "required", "an array"))?;
            for name in required {
                node.required.push(expect_str(name, path, "required")?.to_owned());
            }
        }
        match map.get("additionalProperties") {
            None => {}
            Some(Value::Bool(allow)) => node.additional = Additional::Allow(*allow),
            Some(sub) => {
                let sub = self.compile(sub, &format!("{path}/additionalProperties"))?;
                node.additional = Additional::Schema(sub);
            }
        }
        node.all_of = self.compile_list(map, path, "allOf")?;
        node.any_of = self.compile_list(map, path, "anyOf")?;
        node.one_of = self.compile_list(map, path, "oneOf")?;
        if let Some(not) = map.get("not") {
            node.not = Some(self.compile(not, &format!("{path}/not"))?);
        }

        // `allOf: [{$ref: X}]` with nothing structural beside it is how OpenAPI 3.0 writes a
        // reference with siblings; read it as the reference so pruning sees X's properties.
        if node.reference.is_none() && !node.has_structure() && node.all_of.len() == 1 {
            node.reference = node.all_of.pop();
        }
        // Polymorphic built-in types (`JSONSchemaPropsOrBool` and friends) have no structure
        // of their own, only alternatives: keep their contents rather than prune everything.
        // A structural CRD schema never reaches this: a node without a type must already say
        // x-kubernetes-preserve-unknown-fields or x-kubernetes-int-or-string.
        if node.reference.is_none()
            && !node.has_structure()
            && !node.int_or_string
            && (!node.any_of.is_empty() || !node.one_of.is_empty())
        {
            node.preserve_unknown = true;
        }
        self.nodes[id] = node;
        Ok(())
    }

    fn compile_list(
        &mut self,
        map: &Map<String, Value>,
        path: &str,
        keyword: &str,
    ) -> Result<Vec<NodeId>, SchemaError> {
        let Some(list) = map.get(keyword) else { return Ok(Vec::new()) };
        let list = list.as_array().ok_or_else(|| invalid_keyword(path, keyword, "an array"))?;
        list.iter()
            .enumerate()
            .map(|(i, sub)| self.compile(sub, &format!("{path}/{keyword}/{i}")))
            .collect()
    }

    fn reference(&mut self, reference: &str, path: &str) -> Result<NodeId, SchemaError> {
        let name = REF_PREFIXES
            .iter()
            .find_map(|prefix| reference.strip_prefix(prefix))
            .map(unescape_pointer)
            .ok_or_else(|| SchemaError::UnsupportedRef {
                reference: reference.to_owned(),
                path: display_path(path),
            })?;
        if let Some(id) = self.by_name.get(&name) {
            return Ok(*id);
        }
        let def = self.defs.and_then(|defs| defs.get(&name)).ok_or_else(|| {
            SchemaError::UnresolvedRef { reference: reference.to_owned(), path: display_path(path) }
        })?;
        // Register before compiling the body so that recursive references find this slot.
        let id = self.alloc();
        self.by_name.insert(name.clone(), id);
        self.order.push((name.clone(), id));
        self.fill(id, def, &format!("#/$defs/{}", escape_pointer(&name)))?;
        if let Some((_, any_type)) = OPAQUE_DEFINITIONS.iter().find(|(opaque, _)| *opaque == name) {
            let node = &mut self.nodes[id];
            node.preserve_unknown = true;
            node.properties.clear();
            if *any_type {
                node.types.clear();
            }
        }
        Ok(id)
    }

    /// Rejects definitions that are only `$ref`s around a loop: walking them never reaches a
    /// node that says anything.
    fn check_ref_cycles(&self) -> Result<(), SchemaError> {
        for (name, start) in &self.order {
            let mut current = self.nodes[*start].reference;
            let mut hops = 0;
            while let Some(next) = current {
                if next == *start || hops > self.nodes.len() {
                    return Err(SchemaError::RefCycle { name: name.clone() });
                }
                hops += 1;
                current = self.nodes[next].reference;
            }
        }
        Ok(())
    }
}

fn display_path(path: &str) -> String {
    if path.is_empty() { "/".to_owned() } else { path.to_owned() }
}

fn escape_pointer(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

fn unescape_pointer(name: &str) -> String {
    name.replace("~1", "/").replace("~0", "~")
}

fn invalid_keyword(path: &str, keyword: &str, expected: &'static str) -> SchemaError {
    SchemaError::InvalidKeyword { path: display_path(path), keyword: keyword.to_owned(), expected }
}

fn parse_type(name: &str, path: &str) -> Result<JsonType, SchemaError> {
    JsonType::parse(name)
        .ok_or_else(|| SchemaError::UnknownType { name: name.to_owned(), path: display_path(path) })
}

fn expect_str<'v>(value: &'v Value, path: &str, keyword: &str) -> Result<&'v str, SchemaError> {
    value.as_str().ok_or_else(|| invalid_keyword(path, keyword, "a string"))
}

fn opt_str<'v>(
    map: &'v Map<String, Value>,
    path: &str,
    keyword: &str,
) -> Result<Option<&'v str>, SchemaError> {
    map.get(keyword).map(|v| expect_str(v, path, keyword)).transpose()
}

fn opt_bool(map: &Map<String, Value>, path: &str, keyword: &str) -> Result<bool, SchemaError> {
    match map.get(keyword) {
        None => Ok(false),
        Some(v) => v.as_bool().ok_or_else(|| invalid_keyword(path, keyword, "a boolean")),
    }
}

fn opt_u64(
    map: &Map<String, Value>,
    path: &str,
    keyword: &str,
) -> Result<Option<u64>, SchemaError> {
    map.get(keyword)
        .map(|v| v.as_u64().ok_or_else(|| invalid_keyword(path, keyword, "a non-negative integer")))
        .transpose()
}

fn opt_f64(
    map: &Map<String, Value>,
    path: &str,
    keyword: &str,
) -> Result<Option<f64>, SchemaError> {
    map.get(keyword)
        .map(|v| v.as_f64().ok_or_else(|| invalid_keyword(path, keyword, "a number")))
        .transpose()
}

/// `minimum` with OpenAPI 3.0's boolean `exclusiveMinimum`, or JSON Schema's numeric one.
fn bound(
    map: &Map<String, Value>,
    path: &str,
    keyword: &str,
    exclusive_keyword: &str,
) -> Result<Option<Bound>, SchemaError> {
    let plain = map.get(keyword).map(|v| match v {
        Value::Number(n) => Ok(Bound {
            value: n.as_f64().unwrap_or(f64::NAN),
            exclusive: false,
            text: n.to_string(),
        }),
        _ => Err(invalid_keyword(path, keyword, "a number")),
    });
    let mut plain = plain.transpose()?;
    match map.get(exclusive_keyword) {
        None => {}
        Some(Value::Bool(exclusive)) => {
            if let Some(plain) = &mut plain {
                plain.exclusive = *exclusive;
            }
        }
        Some(Value::Number(n)) => {
            plain = Some(Bound {
                value: n.as_f64().unwrap_or(f64::NAN),
                exclusive: true,
                text: n.to_string(),
            });
        }
        Some(_) => return Err(invalid_keyword(path, exclusive_keyword, "a boolean or a number")),
    }
    Ok(plain)
}

/// Structural-schema checks over the raw `openAPIV3Schema` JSON, after upstream's
/// `ValidateStructural` (apiextensions-apiserver `pkg/apiserver/schema/validation.go` and
/// `complete.go`).
mod structural {
    use serde_json::{Map, Value};

    use super::{FieldCause, FieldPath};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Level {
        Root,
        Item,
        Field,
    }

    fn str_of<'a>(s: &'a Map<String, Value>, key: &str) -> &'a str {
        s.get(key).and_then(Value::as_str).unwrap_or("")
    }

    fn flag(s: &Map<String, Value>, key: &str) -> bool {
        s.get(key).and_then(Value::as_bool).unwrap_or(false)
    }

    fn properties(s: &Map<String, Value>) -> impl Iterator<Item = (&String, &Map<String, Value>)> {
        s.get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| v.as_object().map(|v| (k, v)))
    }

    fn list<'a>(s: &'a Map<String, Value>, key: &str) -> Vec<&'a Map<String, Value>> {
        s.get(key)
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(Value::as_object).collect())
            .unwrap_or_default()
    }

    pub(super) fn invariants(
        s: &Map<String, Value>,
        lvl: Level,
        path: &FieldPath,
        out: &mut Vec<FieldCause>,
    ) {
        let ty = str_of(s, "type");
        let int_or_string = flag(s, "x-kubernetes-int-or-string");
        let preserve = flag(s, "x-kubernetes-preserve-unknown-fields");
        let embedded = flag(s, "x-kubernetes-embedded-resource");

        if ty == "array" && s.get("items").is_none() {
            out.push(FieldCause::required(&path.child("items").0, "must be specified"));
        }
        if let Some(items) = s.get("items").and_then(Value::as_object) {
            invariants(items, Level::Item, &path.child("items"), out);
        }
        for (name, prop) in properties(s) {
            invariants(prop, Level::Field, &path.child("properties").key(name), out);
        }
        if let Some(additional) = s.get("additionalProperties") {
            if lvl == Level::Root {
                out.push(FieldCause::forbidden(
                    &path.child("additionalProperties").0,
                    "must not be used at the root",
                ));
            }
            if let Some(additional) = additional.as_object() {
                invariants(additional, Level::Field, &path.child("additionalProperties"), out);
            }
        }

        if int_or_string && preserve {
            out.push(FieldCause::invalid(
                &path.child("x-kubernetes-preserve-unknown-fields").0,
                &Value::Bool(true),
                "must be false if x-kubernetes-int-or-string is true",
            ));
        }
        if int_or_string && embedded {
            out.push(FieldCause::invalid(
                &path.child("x-kubernetes-embedded-resource").0,
                &Value::Bool(true),
                "must be false if x-kubernetes-int-or-string is true",
            ));
        }

        let skip_any_of = is_int_or_string_any_of(s);
        let skip_first_all_of_any_of =
            list(s, "allOf").first().is_some_and(|first| is_int_or_string_any_of(first));
        value_validation(s, skip_any_of, skip_first_all_of_any_of, lvl, path, out);

        let check_metadata = lvl == Level::Root || embedded;
        if embedded && ty != "object" {
            let detail = "must be object if x-kubernetes-embedded-resource is true";
            if ty.is_empty() {
                out.push(FieldCause::required(&path.child("type").0, detail));
            } else {
                out.push(FieldCause::invalid(&path.child("type").0, &Value::from(ty), detail));
            }
        } else if ty.is_empty() && !int_or_string && !preserve {
            let detail = match lvl {
                Level::Root => "must not be empty at the root",
                Level::Item => "must not be empty for specified array items",
                Level::Field => "must not be empty for specified object fields",
            };
            out.push(FieldCause::required(&path.child("type").0, detail));
        }
        if embedded && s.get("additionalProperties").is_some() {
            out.push(FieldCause::forbidden(
                &path.child("additionalProperties").0,
                "must not be used if x-kubernetes-embedded-resource is set",
            ));
        }
        if lvl == Level::Root && !ty.is_empty() && ty != "object" {
            out.push(FieldCause::invalid(
                &path.child("type").0,
                &Value::from(ty),
                "must be object at the root",
            ));
        }

        for (name, prop) in properties(s) {
            let prop_path = path.child("properties").key(name);
            let prop_ty = str_of(prop, "type");
            match name.as_str() {
                "kind" | "apiVersion" if check_metadata && prop_ty != "string" => {
                    out.push(FieldCause::invalid(
                        &prop_path.child("type").0,
                        &Value::from(prop_ty),
                        "must be string",
                    ));
                }
                "metadata" => metadata_invariants(prop, check_metadata, lvl, &prop_path, out),
                _ => {}
            }
        }

        if embedded && !preserve && properties(s).next().is_none() {
            out.push(FieldCause::required(
                &path.child("properties").0,
                "must not be empty if x-kubernetes-embedded-resource is true without \
                 x-kubernetes-preserve-unknown-fields",
            ));
        }
    }

    fn metadata_invariants(
        s: &Map<String, Value>,
        check_metadata: bool,
        lvl: Level,
        path: &FieldPath,
        out: &mut Vec<FieldCause>,
    ) {
        let ty = str_of(s, "type");
        if check_metadata && ty != "object" {
            out.push(FieldCause::invalid(
                &path.child("type").0,
                &Value::from(ty),
                "must be object",
            ));
        }
        if lvl != Level::Root {
            return;
        }
        // Only `type`, `default` and properties restricted to name/generateName may be said
        // about metadata at the root: the server owns the rest of ObjectMeta.
        let only_names = |props: &Map<String, Value>| {
            !props.is_empty() && props.keys().all(|k| k == "name" || k == "generateName")
        };
        let specifies_more = s.iter().any(|(key, value)| match key.as_str() {
            "type" | "default" => false,
            "properties" => !value.as_object().is_some_and(only_names),
            "nullable"
            | "x-kubernetes-preserve-unknown-fields"
            | "x-kubernetes-embedded-resource"
            | "x-kubernetes-int-or-string"
            | "uniqueItems"
            | "exclusiveMinimum"
            | "exclusiveMaximum" => value.as_bool() != Some(false),
            _ => true,
        });
        if specifies_more {
            out.push(FieldCause::forbidden(
                &path.0,
                "must not specify anything other than name and generateName, but metadata is \
                 implicitly specified",
            ));
        }
    }

    fn is_int_or_string_any_of(s: &Map<String, Value>) -> bool {
        let any_of = list(s, "anyOf");
        let is_only_type = |m: &Map<String, Value>, ty: &str| {
            m.len() == 1 && m.get("type").and_then(Value::as_str) == Some(ty)
        };
        any_of.len() == 2 && is_only_type(any_of[0], "integer") && is_only_type(any_of[1], "string")
    }

    fn value_validation(
        s: &Map<String, Value>,
        skip_any_of: bool,
        skip_first_all_of_any_of: bool,
        lvl: Level,
        path: &FieldPath,
        out: &mut Vec<FieldCause>,
    ) {
        if !skip_any_of {
            for (i, sub) in list(s, "anyOf").into_iter().enumerate() {
                nested(sub, false, false, lvl, &path.child("anyOf").index(i), out);
            }
        }
        for (i, sub) in list(s, "allOf").into_iter().enumerate() {
            let skip = skip_first_all_of_any_of && i == 0;
            nested(sub, skip, false, lvl, &path.child("allOf").index(i), out);
        }
        for (i, sub) in list(s, "oneOf").into_iter().enumerate() {
            nested(sub, false, false, lvl, &path.child("oneOf").index(i), out);
        }
        if let Some(not) = s.get("not").and_then(Value::as_object) {
            nested(not, false, false, lvl, &path.child("not"), out);
        }
        if let Some(pattern) = s.get("pattern").and_then(Value::as_str)
            && let Err(super::regex::CompileError::Invalid(reason)) = super::regex::compile(pattern)
        {
            out.push(FieldCause::invalid(
                &path.child("pattern").0,
                &Value::from(pattern),
                &format!("must be a valid regular expression, but isn't: {reason}"),
            ));
        }
    }

    fn nested(
        v: &Map<String, Value>,
        skip_any_of: bool,
        skip_all_of_any_of: bool,
        lvl: Level,
        path: &FieldPath,
        out: &mut Vec<FieldCause>,
    ) {
        value_validation(v, skip_any_of, skip_all_of_any_of, lvl, path, out);
        if let Some(items) = v.get("items").and_then(Value::as_object) {
            nested(items, false, false, lvl, &path.child("items"), out);
        }
        for (name, prop) in properties(v) {
            nested(prop, false, false, Level::Field, &path.child("properties").key(name), out);
        }

        let forbid = |out: &mut Vec<FieldCause>, key: &str, detail: &str| {
            out.push(FieldCause::forbidden(&path.child(key).0, detail));
        };
        if !str_of(v, "type").is_empty() {
            forbid(out, "type", "must be empty to be structural");
        }
        if v.contains_key("additionalProperties") {
            forbid(out, "additionalProperties", "must be undefined to be structural");
        }
        if v.contains_key("default") {
            forbid(out, "default", "must be undefined to be structural");
        }
        if !str_of(v, "title").is_empty() {
            forbid(out, "title", "must be empty to be structural");
        }
        if !str_of(v, "description").is_empty() {
            forbid(out, "description", "must be empty to be structural");
        }
        if flag(v, "nullable") {
            forbid(out, "nullable", "must be false to be structural");
        }
        if v.contains_key("externalDocs") {
            forbid(out, "externalDocs", "must be undefined to be structural");
        }
        for key in [
            "x-kubernetes-preserve-unknown-fields",
            "x-kubernetes-embedded-resource",
            "x-kubernetes-int-or-string",
        ] {
            if flag(v, key) {
                forbid(out, key, "must be false to be structural");
            }
        }
        if v.get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .is_some_and(|k| !k.is_empty())
        {
            forbid(out, "x-kubernetes-list-map-keys", "must be empty to be structural");
        }
        for key in ["x-kubernetes-list-type", "x-kubernetes-map-type"] {
            if v.get(key).is_some_and(|t| !t.is_null()) {
                forbid(out, key, "must be undefined to be structural");
            }
        }
        if v.get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .is_some_and(|r| !r.is_empty())
        {
            forbid(out, "x-kubernetes-validations", "must be empty to be structural");
        }
        if properties(v).any(|(name, _)| name == "metadata") {
            out.push(FieldCause::forbidden(
                &path.child("properties").key("metadata").0,
                "must not be specified in a nested context",
            ));
        }
    }

    /// Every field named inside `allOf`/`anyOf`/`oneOf`/`not` must also be specified in the
    /// structural part. Like upstream, only the root's value validations are checked.
    pub(super) fn completeness(
        s: &Map<String, Value>,
        path: &FieldPath,
        out: &mut Vec<FieldCause>,
    ) {
        value_validation_completeness(s, Some(s), path, path, out);
    }

    fn value_validation_completeness(
        v: &Map<String, Value>,
        s: Option<&Map<String, Value>>,
        s_path: &FieldPath,
        v_path: &FieldPath,
        out: &mut Vec<FieldCause>,
    ) {
        let has_junctors = ["not", "allOf", "anyOf", "oneOf"].iter().any(|k| v.contains_key(*k));
        if !has_junctors {
            return;
        }
        let Some(s) = s else {
            let detail = format!("because it is defined in {}", v_path.0);
            out.push(FieldCause::required(&s_path.0, &detail));
            return;
        };
        if let Some(not) = v.get("not").and_then(Value::as_object) {
            nested_completeness(not, Some(s), s_path, &v_path.child("not"), out);
        }
        for junctor in ["allOf", "anyOf", "oneOf"] {
            for (i, sub) in list(v, junctor).into_iter().enumerate() {
                nested_completeness(sub, Some(s), s_path, &v_path.child(junctor).index(i), out);
            }
        }
    }

    fn nested_completeness(
        v: &Map<String, Value>,
        s: Option<&Map<String, Value>>,
        s_path: &FieldPath,
        v_path: &FieldPath,
        out: &mut Vec<FieldCause>,
    ) {
        let Some(s) = s else {
            let detail = format!("because it is defined in {}", v_path.0);
            out.push(FieldCause::required(&s_path.0, &detail));
            return;
        };
        value_validation_completeness(v, Some(s), s_path, v_path, out);
        if let Some(items) = v.get("items").and_then(Value::as_object) {
            let s_items = s.get("items").and_then(Value::as_object);
            nested_completeness(
                items,
                s_items,
                &s_path.child("items"),
                &v_path.child("items"),
                out,
            );
        }
        for (name, v_prop) in properties(v) {
            let s_prop_path = s_path.child("properties").key(name);
            let v_prop_path = v_path.child("properties").key(name);
            match properties(s).find(|(k, _)| *k == name) {
                Some((_, s_prop)) => {
                    nested_completeness(v_prop, Some(s_prop), &s_prop_path, &v_prop_path, out);
                }
                None => {
                    let detail = format!("because it is defined in {}", v_prop_path.0);
                    out.push(FieldCause::required(&s_prop_path.0, &detail));
                }
            }
        }
    }
}

/// A small regular-expression engine for `pattern`, so that CRD patterns are enforced without
/// a dependency. Supported (RE2 syntax, which upstream uses): literals, `.`, `[...]` classes
/// with ranges and negation, `\d \w \s` (and negations), `\b \B`, `^ $ \A \z`, groups
/// `(...)`, `(?:...)`, `(?P<name>...)`, alternation, and the quantifiers `* + ? {n} {n,}
/// {n,m}` (greedy or lazy). Flags (`(?i)`), Unicode and POSIX classes are unsupported: such a
/// pattern is not enforced. Syntax RE2 rejects (look-around, back-references, unbalanced
/// parentheses) is reported as invalid.
///
/// Matching simulates the NFA (Pike VM), so time is linear in the input whatever the pattern.
mod regex {
    #[derive(Debug, Clone, PartialEq)]
    pub(crate) enum CompileError {
        /// RE2 would reject the pattern; the text follows Go's `regexp` error wording.
        Invalid(String),
        /// Valid syntax this engine does not implement.
        Unsupported,
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Perl {
        Digit,
        Word,
        Space,
    }

    impl Perl {
        fn matches(self, c: char) -> bool {
            match self {
                Perl::Digit => c.is_ascii_digit(),
                Perl::Word => c.is_ascii_alphanumeric() || c == '_',
                Perl::Space => matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' '),
            }
        }
    }

    #[derive(Debug, Clone, PartialEq)]
    enum ClassItem {
        Range(char, char),
        Perl(Perl, bool),
    }

    #[derive(Debug, Clone, PartialEq)]
    struct Class {
        negated: bool,
        items: Vec<ClassItem>,
    }

    impl Class {
        fn matches(&self, c: char) -> bool {
            let hit = self.items.iter().any(|item| match *item {
                ClassItem::Range(lo, hi) => lo <= c && c <= hi,
                ClassItem::Perl(perl, negated) => perl.matches(c) != negated,
            });
            hit != self.negated
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Look {
        Start,
        End,
        WordBoundary,
        NotWordBoundary,
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Ast {
        Empty,
        Char(char),
        Any,
        Class(Class),
        Look(Look),
        Concat(Vec<Ast>),
        Alt(Vec<Ast>),
        Repeat(Box<Ast>, u32, Option<u32>),
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Inst {
        Char(char),
        Any,
        Class(Class),
        Split(usize, usize),
        Jmp(usize),
        Assert(Look),
        Match,
    }

    /// A compiled pattern; search semantics (unanchored unless `^`/`$` say otherwise).
    #[derive(Debug, Clone)]
    pub(crate) struct Regex {
        prog: Vec<Inst>,
    }

    const MAX_REPEAT: u32 = 1000;
    const MAX_PROGRAM: usize = 50_000;

    /// How deeply groups may nest. Go's RE2 allows 1,000; the parser here recurses per group,
    /// so we stop earlier to stay far from the stack limit of any thread (debug builds too).
    const MAX_NESTING: usize = 250;

    /// The deepest group nesting in `pattern` (escapes and character classes skipped).
    fn nesting(pattern: &str) -> usize {
        let (mut depth, mut max, mut escaped, mut in_class) = (0usize, 0usize, false, false);
        for c in pattern.chars() {
            match (escaped, in_class, c) {
                (true, _, _) => escaped = false,
                (false, _, '\\') => escaped = true,
                (false, false, '[') => in_class = true,
                (false, true, ']') => in_class = false,
                (false, false, '(') => {
                    depth += 1;
                    max = max.max(depth);
                }
                (false, false, ')') => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        max
    }

    pub(crate) fn compile(pattern: &str) -> Result<Regex, CompileError> {
        if nesting(pattern) > MAX_NESTING {
            return Err(CompileError::Invalid(format!(
                "error parsing regexp: expression nests too deeply: `{pattern}`"
            )));
        }
        let mut parser = Parser { chars: pattern.chars().collect(), pos: 0, pattern };
        let ast = parser.alternation()?;
        if parser.pos < parser.chars.len() {
            // Only an unmatched `)` stops the top-level alternation early.
            return Err(parser.invalid("unexpected )", pattern));
        }
        let mut prog = Vec::new();
        emit(&ast, &mut prog)?;
        prog.push(Inst::Match);
        Ok(Regex { prog })
    }

    struct Parser<'p> {
        chars: Vec<char>,
        pos: usize,
        pattern: &'p str,
    }

    impl Parser<'_> {
        fn peek(&self) -> Option<char> {
            self.chars.get(self.pos).copied()
        }

        fn peek_at(&self, offset: usize) -> Option<char> {
            self.chars.get(self.pos + offset).copied()
        }

        fn invalid(&self, code: &str, arg: &str) -> CompileError {
            CompileError::Invalid(format!("error parsing regexp: {code}: `{arg}`"))
        }

        fn alternation(&mut self) -> Result<Ast, CompileError> {
            let mut branches = vec![self.concatenation()?];
            while self.peek() == Some('|') {
                self.pos += 1;
                branches.push(self.concatenation()?);
            }
            Ok(if branches.len() == 1 { branches.remove(0) } else { Ast::Alt(branches) })
        }

        fn concatenation(&mut self) -> Result<Ast, CompileError> {
            let mut items = Vec::new();
            while let Some(c) = self.peek() {
                if c == '|' || c == ')' {
                    break;
                }
                let atom = self.atom()?;
                items.push(self.quantified(atom)?);
            }
            Ok(match items.len() {
                0 => Ast::Empty,
                1 => items.remove(0),
                _ => Ast::Concat(items),
            })
        }

        /// Parses `{n}`, `{n,}` or `{n,m}` at the cursor without consuming it.
        fn repeat_at(&self) -> Option<(u32, Option<u32>, usize)> {
            let rest: String = self.chars[self.pos..].iter().collect();
            let body = rest.strip_prefix('{')?;
            let end = body.find('}')?;
            let inner = &body[..end];
            let consumed = end + 2;
            let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
            match inner.split_once(',') {
                None if digits(inner) => Some((inner.parse().ok()?, inner.parse().ok(), consumed)),
                Some((min, "")) if digits(min) => Some((min.parse().ok()?, None, consumed)),
                Some((min, max)) if digits(min) && digits(max) => {
                    Some((min.parse().ok()?, Some(max.parse().ok()?), consumed))
                }
                _ => None,
            }
        }

        fn quantified(&mut self, atom: Ast) -> Result<Ast, CompileError> {
            let start = self.pos;
            let (min, max, len) = match self.peek() {
                Some('*') => (0, None, 1),
                Some('+') => (1, None, 1),
                Some('?') => (0, Some(1), 1),
                Some('{') => match self.repeat_at() {
                    Some(repeat) => repeat,
                    None => return Ok(atom),
                },
                _ => return Ok(atom),
            };
            self.pos += len;
            if self.peek() == Some('?') {
                self.pos += 1;
            }
            let op: String = self.chars[start..self.pos].iter().collect();
            if min > MAX_REPEAT || max.is_some_and(|m| m > MAX_REPEAT || m < min) {
                return Err(self.invalid("invalid repeat count", &op));
            }
            let nested = matches!(self.peek(), Some('*' | '+' | '?'))
                || (self.peek() == Some('{') && self.repeat_at().is_some());
            if nested {
                let next: String = self.chars[start..=self.pos].iter().collect();
                return Err(self.invalid("invalid nested repetition operator", &next));
            }
            Ok(Ast::Repeat(Box::new(atom), min, max))
        }

        fn atom(&mut self) -> Result<Ast, CompileError> {
            let Some(c) = self.peek() else { return Ok(Ast::Empty) };
            match c {
                '(' => self.group(),
                '[' => self.class(),
                '.' => {
                    self.pos += 1;
                    Ok(Ast::Any)
                }
                '^' => {
                    self.pos += 1;
                    Ok(Ast::Look(Look::Start))
                }
                '$' => {
                    self.pos += 1;
                    Ok(Ast::Look(Look::End))
                }
                '\\' => self.escape(),
                '*' | '+' | '?' => {
                    Err(self.invalid("missing argument to repetition operator", &c.to_string()))
                }
                '{' if self.repeat_at().is_some() => {
                    Err(self.invalid("missing argument to repetition operator", "{"))
                }
                c => {
                    self.pos += 1;
                    Ok(Ast::Char(c))
                }
            }
        }

        fn group(&mut self) -> Result<Ast, CompileError> {
            self.pos += 1;
            if self.peek() == Some('?') {
                let rest: String = self.chars[self.pos..].iter().take(4).collect();
                if rest.starts_with("?:") {
                    self.pos += 2;
                } else if rest.starts_with("?P<")
                    || (rest.starts_with("?<")
                        && !rest.starts_with("?<=")
                        && !rest.starts_with("?<!"))
                {
                    let name_start = self.pos + if rest.starts_with("?P<") { 3 } else { 2 };
                    let close = self.chars[name_start..].iter().position(|&c| c == '>');
                    let Some(close) = close else {
                        return Err(self.invalid("invalid named capture", self.pattern));
                    };
                    let name = &self.chars[name_start..name_start + close];
                    if name.is_empty() || !name.iter().all(|c| c.is_alphanumeric() || *c == '_') {
                        return Err(self.invalid("invalid named capture", self.pattern));
                    }
                    self.pos = name_start + close + 1;
                } else if rest.starts_with("?=") || rest.starts_with("?!") || rest.starts_with("?<")
                {
                    let op: String =
                        rest.chars().take(if rest.starts_with("?<") { 3 } else { 2 }).collect();
                    return Err(
                        self.invalid("invalid or unsupported Perl syntax", &format!("({op}"))
                    );
                } else {
                    return Err(CompileError::Unsupported);
                }
            }
            let inner = self.alternation()?;
            if self.peek() != Some(')') {
                return Err(self.invalid("missing closing )", self.pattern));
            }
            self.pos += 1;
            Ok(inner)
        }

        fn class(&mut self) -> Result<Ast, CompileError> {
            let start = self.pos;
            self.pos += 1;
            let mut class = Class { negated: false, items: Vec::new() };
            if self.peek() == Some('^') {
                class.negated = true;
                self.pos += 1;
            }
            let mut first = true;
            loop {
                let Some(c) = self.peek() else {
                    let text: String = self.chars[start..].iter().collect();
                    return Err(self.invalid("missing closing ]", &text));
                };
                if c == ']' && !first {
                    self.pos += 1;
                    break;
                }
                first = false;
                if c == '[' && self.peek_at(1) == Some(':') {
                    return Err(CompileError::Unsupported);
                }
                let lo = match self.class_char()? {
                    ClassAtom::Perl(perl, negated) => {
                        class.items.push(ClassItem::Perl(perl, negated));
                        continue;
                    }
                    ClassAtom::Char(lo) => lo,
                };
                if self.peek() == Some('-') && self.peek_at(1).is_some_and(|n| n != ']') {
                    let range_start = self.pos - 1;
                    self.pos += 1;
                    let hi = match self.class_char()? {
                        ClassAtom::Char(hi) => hi,
                        ClassAtom::Perl(..) => {
                            let text: String = self.chars[range_start..self.pos].iter().collect();
                            return Err(self.invalid("invalid character class range", &text));
                        }
                    };
                    if hi < lo {
                        let text: String = self.chars[range_start..self.pos].iter().collect();
                        return Err(self.invalid("invalid character class range", &text));
                    }
                    class.items.push(ClassItem::Range(lo, hi));
                } else {
                    class.items.push(ClassItem::Range(lo, lo));
                }
            }
            Ok(Ast::Class(class))
        }

        fn class_char(&mut self) -> Result<ClassAtom, CompileError> {
            let Some(c) = self.peek() else {
                return Err(self.invalid("missing closing ]", self.pattern));
            };
            if c != '\\' {
                self.pos += 1;
                return Ok(ClassAtom::Char(c));
            }
            match self.escape()? {
                Ast::Char(c) => Ok(ClassAtom::Char(c)),
                Ast::Class(Class { negated, items }) => match items.as_slice() {
                    [ClassItem::Perl(perl, false)] => Ok(ClassAtom::Perl(*perl, negated)),
                    _ => Err(CompileError::Unsupported),
                },
                // `\b` and friends mean nothing inside a class in RE2.
                _ => Err(self.invalid("invalid escape sequence", "\\b")),
            }
        }

        fn escape(&mut self) -> Result<Ast, CompileError> {
            self.pos += 1;
            let Some(c) = self.peek() else {
                return Err(self.invalid("trailing backslash at end of expression", ""));
            };
            self.pos += 1;
            let perl = |perl, negated| {
                Ast::Class(Class { negated, items: vec![ClassItem::Perl(perl, false)] })
            };
            Ok(match c {
                'd' => perl(Perl::Digit, false),
                'D' => perl(Perl::Digit, true),
                'w' => perl(Perl::Word, false),
                'W' => perl(Perl::Word, true),
                's' => perl(Perl::Space, false),
                'S' => perl(Perl::Space, true),
                'b' => Ast::Look(Look::WordBoundary),
                'B' => Ast::Look(Look::NotWordBoundary),
                'A' => Ast::Look(Look::Start),
                'z' => Ast::Look(Look::End),
                'n' => Ast::Char('\n'),
                't' => Ast::Char('\t'),
                'r' => Ast::Char('\r'),
                'f' => Ast::Char('\x0c'),
                'v' => Ast::Char('\x0b'),
                'a' => Ast::Char('\x07'),
                'x' => Ast::Char(self.hex_escape()?),
                'p' | 'P' | 'Q' | 'E' | 'C' | '0' => return Err(CompileError::Unsupported),
                '1'..='9' => return Err(self.invalid("invalid escape sequence", &format!("\\{c}"))),
                c if c.is_ascii_punctuation() => Ast::Char(c),
                c => return Err(self.invalid("invalid escape sequence", &format!("\\{c}"))),
            })
        }

        fn hex_escape(&mut self) -> Result<char, CompileError> {
            let digits: String = if self.peek() == Some('{') {
                let close = self.chars[self.pos..].iter().position(|&c| c == '}');
                let Some(close) = close else {
                    return Err(self.invalid("invalid escape sequence", "\\x{"));
                };
                let digits = self.chars[self.pos + 1..self.pos + close].iter().collect();
                self.pos += close + 1;
                digits
            } else {
                let digits: String = self.chars[self.pos..].iter().take(2).collect();
                self.pos += digits.chars().count();
                digits
            };
            u32::from_str_radix(&digits, 16)
                .ok()
                .and_then(char::from_u32)
                .ok_or_else(|| self.invalid("invalid escape sequence", &format!("\\x{digits}")))
        }
    }

    enum ClassAtom {
        Char(char),
        Perl(Perl, bool),
    }

    fn emit(ast: &Ast, prog: &mut Vec<Inst>) -> Result<(), CompileError> {
        if prog.len() > MAX_PROGRAM {
            return Err(CompileError::Unsupported);
        }
        match ast {
            Ast::Empty => {}
            Ast::Char(c) => prog.push(Inst::Char(*c)),
            Ast::Any => prog.push(Inst::Any),
            Ast::Class(class) => prog.push(Inst::Class(class.clone())),
            Ast::Look(look) => prog.push(Inst::Assert(*look)),
            Ast::Concat(items) => {
                for item in items {
                    emit(item, prog)?;
                }
            }
            Ast::Alt(branches) => {
                let mut jumps = Vec::new();
                for (i, branch) in branches.iter().enumerate() {
                    if i + 1 < branches.len() {
                        let split = prog.len();
                        prog.push(Inst::Split(split + 1, 0));
                        emit(branch, prog)?;
                        jumps.push(prog.len());
                        prog.push(Inst::Jmp(0));
                        let next = prog.len();
                        prog[split] = Inst::Split(split + 1, next);
                    } else {
                        emit(branch, prog)?;
                    }
                }
                let end = prog.len();
                for jump in jumps {
                    prog[jump] = Inst::Jmp(end);
                }
            }
            Ast::Repeat(inner, min, max) => {
                for _ in 0..*min {
                    emit(inner, prog)?;
                }
                match max {
                    None => {
                        let split = prog.len();
                        prog.push(Inst::Split(split + 1, 0));
                        emit(inner, prog)?;
                        prog.push(Inst::Jmp(split));
                        let end = prog.len();
                        prog[split] = Inst::Split(split + 1, end);
                    }
                    Some(max) => {
                        for _ in *min..*max {
                            let split = prog.len();
                            prog.push(Inst::Split(split + 1, 0));
                            emit(inner, prog)?;
                            let end = prog.len();
                            prog[split] = Inst::Split(split + 1, end);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The set of live program counters at one input position.
    struct Threads {
        seen: Vec<bool>,
        list: Vec<usize>,
    }

    impl Threads {
        fn new(len: usize) -> Self {
            Threads { seen: vec![false; len], list: Vec::new() }
        }

        fn clear(&mut self) {
            for &pc in &self.list {
                self.seen[pc] = false;
            }
            self.list.clear();
        }
    }

    impl Regex {
        pub(crate) fn is_match(&self, text: &str) -> bool {
            let chars: Vec<char> = text.chars().collect();
            let mut current = Threads::new(self.prog.len());
            let mut next = Threads::new(self.prog.len());
            let mut stack = Vec::new();
            for pos in 0..=chars.len() {
                // Unanchored search: a new attempt starts at every position.
                self.add(&mut current, &mut stack, 0, pos, &chars);
                let at = chars.get(pos).copied();
                for i in 0..current.list.len() {
                    let pc = current.list[i];
                    let advance = match (&self.prog[pc], at) {
                        (Inst::Match, _) => return true,
                        (Inst::Char(want), Some(c)) => *want == c,
                        (Inst::Any, Some(c)) => c != '\n',
                        (Inst::Class(class), Some(c)) => class.matches(c),
                        _ => false,
                    };
                    if advance {
                        self.add(&mut next, &mut stack, pc + 1, pos + 1, &chars);
                    }
                }
                std::mem::swap(&mut current, &mut next);
                next.clear();
            }
            false
        }

        /// Adds `pc` and everything reachable from it without consuming input.
        fn add(
            &self,
            threads: &mut Threads,
            stack: &mut Vec<usize>,
            pc: usize,
            pos: usize,
            chars: &[char],
        ) {
            stack.push(pc);
            while let Some(pc) = stack.pop() {
                if threads.seen[pc] {
                    continue;
                }
                threads.seen[pc] = true;
                threads.list.push(pc);
                match &self.prog[pc] {
                    Inst::Jmp(target) => stack.push(*target),
                    Inst::Split(a, b) => {
                        stack.push(*b);
                        stack.push(*a);
                    }
                    Inst::Assert(look) if holds(*look, pos, chars) => stack.push(pc + 1),
                    _ => {}
                }
            }
        }
    }

    fn holds(look: Look, pos: usize, chars: &[char]) -> bool {
        let word =
            |i: Option<usize>| i.and_then(|i| chars.get(i)).is_some_and(|&c| Perl::Word.matches(c));
        let boundary = word(pos.checked_sub(1)) != word(Some(pos));
        match look {
            Look::Start => pos == 0,
            Look::End => pos == chars.len(),
            Look::WordBoundary => boundary,
            Look::NotWordBoundary => !boundary,
        }
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};
    use serde_json::{Map, Value, json};

    use super::{Schema, regex};

    /// A CRD-like `openAPIV3Schema` touching every feature the server relies on.
    fn widget_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
                "spec": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "minLength": 1, "pattern": "^[a-z0-9./:-]+$"},
                        "replicas": {
                            "type": "integer", "format": "int32",
                            "minimum": 0, "maximum": 10, "default": 1
                        },
                        "mode": {"type": "string", "enum": ["Fast", "Safe"], "default": "Safe"},
                        "port": {
                            "x-kubernetes-int-or-string": true,
                            "anyOf": [{"type": "integer"}, {"type": "string"}]
                        },
                        "tags": {
                            "type": "array", "items": {"type": "string"},
                            "maxItems": 3, "uniqueItems": true
                        },
                        "env": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "value": {"type": "string", "default": ""}
                                }
                            }
                        },
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "config": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": true,
                            "properties": {
                                "level": {"type": "integer"},
                                "nested": {"type": "object", "properties": {"keep": {"type": "string"}}}
                            }
                        },
                        "template": {
                            "type": "object",
                            "x-kubernetes-embedded-resource": true,
                            "x-kubernetes-preserve-unknown-fields": true
                        },
                        "resources": {
                            "type": "object",
                            "default": {},
                            "properties": {"cpu": {"type": "string", "default": "100m"}}
                        },
                        "note": {"type": "string", "nullable": true}
                    }
                },
                "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
            }
        })
    }

    /// Definitions shaped like schemars' output for k8s-openapi types, including a recursive one.
    fn builtin_defs() -> Map<String, Value> {
        let defs = json!({
            "io.k8s.example.v1.Thing": {
                "description": "Thing is a test kind.",
                "type": "object",
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {
                        "$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
                        "description": "Standard object's metadata."
                    },
                    "spec": {
                        "$ref": "#/$defs/io.k8s.example.v1.ThingSpec",
                        "description": "Specification of the thing."
                    }
                },
                "required": ["metadata"]
            },
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": {
                "type": "object",
                "properties": {"name": {"type": "string"}}
            },
            "io.k8s.example.v1.ThingSpec": {
                "type": "object",
                "properties": {
                    "port": {"$ref": "#/$defs/io.k8s.apimachinery.pkg.util.intstr.IntOrString"},
                    "tree": {"$ref": "#/$defs/io.k8s.example.v1.Node"},
                    "raw": {"$ref": "#/$defs/io.k8s.apimachinery.pkg.runtime.RawExtension"},
                    "any": {"$ref": "#/$defs/io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON"},
                    "extra": {"$ref": "#/$defs/io.k8s.example.v1.PropsOrBool"}
                }
            },
            "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {
                "description": "IntOrString is a type that can hold an int32 or a string.",
                "x-kubernetes-int-or-string": true
            },
            "io.k8s.example.v1.Node": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/io.k8s.example.v1.Node"}},
                    "byName": {
                        "type": "object",
                        "additionalProperties": {"$ref": "#/$defs/io.k8s.example.v1.Node"}
                    }
                }
            },
            "io.k8s.apimachinery.pkg.runtime.RawExtension": {"type": "object"},
            "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON": {"type": "object"},
            "io.k8s.example.v1.PropsOrBool": {
                "oneOf": [{"$ref": "#/$defs/io.k8s.example.v1.Node"}, {"type": "boolean"}]
            }
        });
        match defs {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    fn thing_schema() -> Schema {
        let root = json!({"$ref": "#/$defs/io.k8s.example.v1.Thing"});
        Schema::from_json(&root, Some(&builtin_defs())).expect("compile thing")
    }

    fn widget() -> Schema {
        Schema::from_json(&widget_schema(), None).expect("compile widget")
    }

    fn render_causes(causes: &[super::FieldCause]) -> String {
        causes.iter().map(|c| format!("{} {}: {}\n", c.reason, c.field, c.message)).collect()
    }

    fn check_validate(schema: &Schema, obj: Value, expect: Expect) {
        expect.assert_eq(&render_causes(&schema.validate(&obj)));
    }

    fn check_prune(schema: &Schema, mut obj: Value, expect: Expect) {
        let pruned = schema.prune(&mut obj);
        let obj = serde_json::to_string_pretty(&obj).expect("print");
        expect.assert_eq(&format!("pruned: {pruned:?}\n{obj}\n"));
    }

    fn check_default(schema: &Schema, mut obj: Value, expect: Expect) {
        schema.default(&mut obj);
        expect.assert_eq(&format!("{}\n", serde_json::to_string_pretty(&obj).expect("print")));
    }

    fn check_structural(root: Value, expect: Expect) {
        let causes = Schema::check_structural(&root, "spec.versions[0].schema.openAPIV3Schema");
        assert_eq!(Schema::is_structural(&root), causes.is_empty());
        expect.assert_eq(&render_causes(&causes));
    }

    fn check_compile_error(root: Value, defs: Value, expect: Expect) {
        let defs = defs.as_object().cloned();
        let err = Schema::from_json(&root, defs.as_ref()).expect_err("compile should fail");
        expect.assert_eq(&err.to_string());
    }

    #[test]
    fn valid_widget_has_no_causes() {
        check_validate(
            &widget(),
            json!({
                "apiVersion": "example.dev/v1", "kind": "Widget",
                "metadata": {"name": "w", "anything": {"goes": true}},
                "spec": {
                    "image": "nginx:1.27", "replicas": 2.0, "mode": "Fast", "port": "http",
                    "tags": ["a", "b"], "env": [{"name": "A", "value": "1"}],
                    "labels": {"x": "y"}, "config": {"level": 3, "free": [1, "two"]},
                    "template": {"apiVersion": "v1", "kind": "Pod", "spec": {}},
                    "note": null
                },
                "status": {"ready": true}
            }),
            expect![[""]],
        );
    }

    #[test]
    fn wrong_types_are_type_invalid() {
        check_validate(
            &widget(),
            json!({
                "metadata": "nope",
                "spec": {
                    "image": null, "replicas": "3", "port": 1.5, "tags": "a",
                    "env": [{"name": 5}], "labels": {"x": 1}, "config": {"level": "high"}
                },
                "status": {"ready": "yes"}
            }),
            expect![[r#"
                FieldValueTypeInvalid metadata: Invalid value: "string": metadata in body must be of type object: "string"
                FieldValueTypeInvalid spec.image: Invalid value: "null": spec.image in body must be of type string: "null"
                FieldValueTypeInvalid spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string"
                FieldValueTypeInvalid spec.port: Invalid value: "number": spec.port in body must be of type integer,string: "number"
                FieldValueTypeInvalid spec.tags: Invalid value: "string": spec.tags in body must be of type array: "string"
                FieldValueTypeInvalid spec.env[0].name: Invalid value: "integer": spec.env[0].name in body must be of type string: "integer"
                FieldValueTypeInvalid spec.labels.x: Invalid value: "integer": spec.labels.x in body must be of type string: "integer"
                FieldValueTypeInvalid spec.config.level: Invalid value: "string": spec.config.level in body must be of type integer: "string"
                FieldValueTypeInvalid status.ready: Invalid value: "string": status.ready in body must be of type boolean: "string"
            "#]],
        );
    }

    #[test]
    fn missing_required_and_unsupported_enum() {
        check_validate(
            &widget(),
            json!({"spec": {"mode": "Slow", "env": [{"value": "x"}]}}),
            expect![[r#"
                FieldValueRequired spec.image: Required value
                FieldValueNotSupported spec.mode: Unsupported value: "Slow": supported values: "Fast", "Safe"
                FieldValueRequired spec.env[0].name: Required value
            "#]],
        );
    }

    #[test]
    fn bounds_lengths_patterns_and_items() {
        check_validate(
            &widget(),
            json!({"spec": {"image": "", "replicas": 11, "tags": ["a", "b", "a", "c"]}}),
            expect![[r#"
                FieldValueInvalid spec.image: Invalid value: "": spec.image in body should be at least 1 chars long
                FieldValueInvalid spec.image: Invalid value: "": spec.image in body should match '^[a-z0-9./:-]+$'
                FieldValueInvalid spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10
                FieldValueTooMany spec.tags: Too many: 4: must have at most 3 items
                FieldValueInvalid spec.tags: Invalid value: "": spec.tags in body shouldn't contain duplicates
            "#]],
        );
        check_validate(
            &widget(),
            json!({"spec": {"image": "Nginx", "replicas": 3000000000_i64}}),
            expect![[r#"
                FieldValueInvalid spec.image: Invalid value: "Nginx": spec.image in body should match '^[a-z0-9./:-]+$'
                FieldValueInvalid spec.replicas: Invalid value: 3000000000: spec.replicas in body should be less than or equal to 2147483647
                FieldValueInvalid spec.replicas: Invalid value: 3000000000: spec.replicas in body should be less than or equal to 10
            "#]],
        );
    }

    #[test]
    fn more_value_validations() {
        let schema = Schema::from_json(
            &json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 3},
                    "ratio": {"type": "number", "minimum": 0, "exclusiveMinimum": true, "multipleOf": 0.5},
                    "list": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
                    "closed": {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false},
                    "pick": {"type": "string", "oneOf": [{"enum": ["a"]}, {"enum": ["b"]}]},
                    "notB": {"type": "string", "not": {"enum": ["b"]}},
                    "sized": {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}}
                }
            }),
            None,
        )
        .expect("compile");
        check_validate(
            &schema,
            json!({
                "name": "abcd", "ratio": 0, "list": [], "closed": {"a": "x", "b": "y"},
                "pick": "c", "notB": "b", "sized": {}
            }),
            expect![[r#"
                FieldValueTooLong name: Too long: may not be more than 3 bytes
                FieldValueInvalid ratio: Invalid value: 0: ratio in body should be greater than 0
                FieldValueInvalid list: Invalid value: 0: list in body should have at least 1 items
                FieldValueInvalid closed: Invalid value: "b": closed.b in body is a forbidden property
                FieldValueInvalid pick: Invalid value: "": pick must validate one and only one schema (oneOf)
                FieldValueInvalid notB: Invalid value: "": notB must not validate the schema (not)
                FieldValueInvalid sized: Invalid value: 1: sized in body should have at least 1 properties
            "#]],
        );
        check_validate(
            &schema,
            json!({"ratio": 1.25, "pick": "a"}),
            expect![[r#"
            FieldValueInvalid ratio: Invalid value: 1.25: ratio in body should be a multiple of 0.5
        "#]],
        );
    }

    #[test]
    fn prune_drops_unknown_fields_and_reports_paths() {
        check_prune(
            &widget(),
            json!({
                "apiVersion": "example.dev/v1", "kind": "Widget",
                "metadata": {"name": "w", "unknownMeta": 1},
                "extra": true,
                "spec": {
                    "image": "x", "bogus": {"deep": 1},
                    "env": [{"name": "A", "junk": 1}, {"name": "B"}],
                    "labels": {"free": "form"},
                    "config": {"free": {"a": 1}, "nested": {"keep": "k", "drop": 1}},
                    "template": {
                        "apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": "p"}, "spec": {"anything": 1}
                    }
                },
                "status": {"ready": true, "phase": "Running"}
            }),
            expect![[r#"
                pruned: ["extra", "spec.bogus", "spec.env[0].junk", "spec.config.nested.drop", "status.phase"]
                {
                  "apiVersion": "example.dev/v1",
                  "kind": "Widget",
                  "metadata": {
                    "name": "w",
                    "unknownMeta": 1
                  },
                  "spec": {
                    "image": "x",
                    "env": [
                      {
                        "name": "A"
                      },
                      {
                        "name": "B"
                      }
                    ],
                    "labels": {
                      "free": "form"
                    },
                    "config": {
                      "free": {
                        "a": 1
                      },
                      "nested": {
                        "keep": "k"
                      }
                    },
                    "template": {
                      "apiVersion": "v1",
                      "kind": "Pod",
                      "metadata": {
                        "name": "p"
                      },
                      "spec": {
                        "anything": 1
                      }
                    }
                  },
                  "status": {
                    "ready": true
                  }
                }
            "#]],
        );
    }

    #[test]
    fn prune_keeps_root_meta_fields_without_a_schema_for_them() {
        let schema = Schema::from_json(
            &json!({"type": "object", "properties": {"spec": {"type": "object"}}}),
            None,
        )
        .expect("compile");
        check_prune(
            &schema,
            json!({"apiVersion": "v1", "kind": 7, "metadata": {"name": "x"}, "spec": {"a": 1}}),
            expect![[r#"
                pruned: ["spec.a"]
                {
                  "apiVersion": "v1",
                  "metadata": {
                    "name": "x"
                  },
                  "spec": {}
                }
            "#]],
        );
    }

    #[test]
    fn default_fills_missing_fields_recursively() {
        check_default(
            &widget(),
            json!({
                "metadata": {"name": "w", "labels": null},
                "spec": {
                    "image": null, "replicas": null, "note": null,
                    "env": [{"name": "A"}, {"name": "B", "value": "b"}]
                }
            }),
            expect![[r#"
                {
                  "metadata": {
                    "name": "w",
                    "labels": null
                  },
                  "spec": {
                    "replicas": 1,
                    "note": null,
                    "env": [
                      {
                        "name": "A",
                        "value": ""
                      },
                      {
                        "name": "B",
                        "value": "b"
                      }
                    ],
                    "mode": "Safe",
                    "resources": {
                      "cpu": "100m"
                    }
                  }
                }
            "#]],
        );
    }

    #[test]
    fn default_leaves_present_values_alone() {
        check_default(
            &widget(),
            json!({"spec": {"replicas": 5, "mode": "Fast", "resources": {"cpu": "1"}}}),
            expect![[r#"
                {
                  "spec": {
                    "replicas": 5,
                    "mode": "Fast",
                    "resources": {
                      "cpu": "1"
                    }
                  }
                }
            "#]],
        );
    }

    #[test]
    fn recursive_refs_validate_prune_and_keep_opaque_types() {
        let schema = thing_schema();
        let obj = json!({
            "apiVersion": "example.dev/v1", "kind": "Thing",
            "spec": {
                "port": 8080,
                "tree": {
                    "name": "root",
                    "children": [{"name": "a", "children": [{"children": []}]}],
                    "byName": {"b": {"name": 3}}
                },
                "raw": {"kind": "Anything", "x": [1]},
                "any": "a string is fine",
                "extra": true
            }
        });
        check_validate(
            &schema,
            obj.clone(),
            expect![[r#"
            FieldValueRequired spec.tree.children[0].children[0].name: Required value
            FieldValueTypeInvalid spec.tree.byName.b.name: Invalid value: "integer": spec.tree.byName.b.name in body must be of type string: "integer"
        "#]],
        );
        check_validate(
            &schema,
            json!({"spec": {"port": true, "extra": 5}}),
            expect![[r#"
            FieldValueTypeInvalid spec.port: Invalid value: "boolean": spec.port in body must be of type integer,string: "boolean"
            FieldValueInvalid spec.extra: Invalid value: "": spec.extra must validate one and only one schema (oneOf)
        "#]],
        );
        check_prune(
            &schema,
            json!({
                "metadata": {"name": "t", "other": 1},
                "spec": {
                    "tree": {"name": "r", "children": [{"name": "c", "color": "red"}]},
                    "raw": {"kept": {"deep": true}},
                    "extra": {"anything": 1},
                    "unknown": 1
                }
            }),
            expect![[r#"
                pruned: ["spec.tree.children[0].color", "spec.unknown"]
                {
                  "metadata": {
                    "name": "t",
                    "other": 1
                  },
                  "spec": {
                    "tree": {
                      "name": "r",
                      "children": [
                        {
                          "name": "c"
                        }
                      ]
                    },
                    "raw": {
                      "kept": {
                        "deep": true
                      }
                    },
                    "extra": {
                      "anything": 1
                    }
                  }
                }
            "#]],
        );
    }

    #[test]
    fn allof_wrapped_ref_is_read_as_the_ref() {
        let root = json!({
            "type": "object",
            "properties": {
                "spec": {"allOf": [{"$ref": "#/components/schemas/Spec"}], "description": "the spec"}
            }
        });
        let defs = json!({"Spec": {"type": "object", "properties": {"a": {"type": "string"}}}});
        let schema = Schema::from_json(&root, defs.as_object()).expect("compile");
        check_prune(
            &schema,
            json!({"spec": {"a": "x", "b": 1}}),
            expect![[r#"
            pruned: ["spec.b"]
            {
              "spec": {
                "a": "x"
              }
            }
        "#]],
        );
    }

    #[test]
    fn compile_errors() {
        check_compile_error(
            json!({"$ref": "#/$defs/Missing"}),
            json!({}),
            expect![[
                r##"schema reference "#/$defs/Missing" at / does not name a known definition"##
            ]],
        );
        check_compile_error(
            json!({"properties": {"a": {"$ref": "#/$defs/A"}}}),
            json!({"A": {"$ref": "#/$defs/B"}, "B": {"$ref": "#/$defs/A"}}),
            expect![[r#"schema definition "A" refers only to itself"#]],
        );
        check_compile_error(
            json!({"properties": {"a": {"type": "string", "maxLength": "3"}}}),
            json!({}),
            expect![[
                r#"schema keyword "maxLength" at /properties/a must be a non-negative integer"#
            ]],
        );
        check_compile_error(
            json!({"type": "int"}),
            json!({}),
            expect![[r#"schema type "int" at / is not a json type"#]],
        );
        check_compile_error(
            json!({"$ref": "other.json#/Foo"}),
            json!({}),
            expect![[
                r##"schema reference "other.json#/Foo" at / is not a local definition reference"##
            ]],
        );
    }

    #[test]
    fn structural_schema_passes() {
        check_structural(widget_schema(), expect![[""]]);
    }

    #[test]
    fn property_without_type_is_not_structural() {
        check_structural(
            json!({
                "type": "object",
                "properties": {
                    "spec": {
                        "type": "object",
                        "properties": {
                            "foo": {"description": "no type"},
                            "ok1": {"x-kubernetes-int-or-string": true},
                            "ok2": {"x-kubernetes-preserve-unknown-fields": true},
                            "list": {"type": "array"},
                            "items": {"type": "array", "items": {}}
                        }
                    }
                }
            }),
            expect![[r#"
                FieldValueRequired spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[foo].type: Required value: must not be empty for specified object fields
                FieldValueRequired spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[items].items.type: Required value: must not be empty for specified array items
                FieldValueRequired spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[list].items: Required value: must be specified
            "#]],
        );
    }

    #[test]
    fn structural_root_metadata_and_value_validation_rules() {
        check_structural(
            json!({
                "type": "array",
                "additionalProperties": {"type": "string"},
                "items": {"type": "string"},
                "properties": {
                    "kind": {"type": "integer"},
                    "metadata": {"type": "object", "properties": {"name": {"type": "string"}, "labels": {"type": "object"}}},
                    "spec": {
                        "type": "object",
                        "pattern": "(unclosed",
                        "allOf": [{"type": "string", "description": "d", "properties": {"metadata": {}}}],
                        "properties": {
                            "port": {
                                "x-kubernetes-int-or-string": true,
                                "anyOf": [{"type": "integer"}, {"type": "string"}]
                            },
                            "inner": {"type": "object", "x-kubernetes-embedded-resource": true}
                        }
                    }
                },
                "anyOf": [{"properties": {"ghost": {"minLength": 1}}}]
            }),
            expect![[r#"
                FieldValueForbidden spec.versions[0].schema.openAPIV3Schema.additionalProperties: Forbidden: must not be used at the root
                FieldValueRequired spec.versions[0].schema.openAPIV3Schema.properties[ghost]: Required value: because it is defined in spec.versions[0].schema.openAPIV3Schema.anyOf[0].properties[ghost]
                FieldValueInvalid spec.versions[0].schema.openAPIV3Schema.properties[kind].type: Invalid value: "integer": must be string
                FieldValueForbidden spec.versions[0].schema.openAPIV3Schema.properties[metadata]: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified
                FieldValueForbidden spec.versions[0].schema.openAPIV3Schema.properties[spec].allOf[0].description: Forbidden: must be empty to be structural
                FieldValueForbidden spec.versions[0].schema.openAPIV3Schema.properties[spec].allOf[0].properties[metadata]: Forbidden: must not be specified in a nested context
                FieldValueForbidden spec.versions[0].schema.openAPIV3Schema.properties[spec].allOf[0].type: Forbidden: must be empty to be structural
                FieldValueInvalid spec.versions[0].schema.openAPIV3Schema.properties[spec].pattern: Invalid value: "(unclosed": must be a valid regular expression, but isn't: error parsing regexp: missing closing ): `(unclosed`
                FieldValueRequired spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[inner].properties: Required value: must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields
                FieldValueInvalid spec.versions[0].schema.openAPIV3Schema.type: Invalid value: "array": must be object at the root
            "#]],
        );
    }

    fn check_regex(pattern: &str, inputs: &[&str], expect: Expect) {
        let rendered = match regex::compile(pattern) {
            Ok(re) => inputs
                .iter()
                .map(|input| {
                    format!("{input:?} {}\n", if re.is_match(input) { "matches" } else { "no" })
                })
                .collect(),
            Err(err) => format!("{err:?}\n"),
        };
        expect.assert_eq(&rendered);
    }

    #[test]
    fn regex_subset_matches_like_re2() {
        check_regex(
            "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
            &["my-name", "-bad", "bad-", "a", "", "UPPER"],
            expect![[r#"
                "my-name" matches
                "-bad" no
                "bad-" no
                "a" matches
                "" no
                "UPPER" no
            "#]],
        );
        check_regex(
            r"^(\d+)(m|Mi|Gi)?$",
            &["100m", "2Gi", "3", "4Ki", "x1"],
            expect![[r#"
                "100m" matches
                "2Gi" matches
                "3" matches
                "4Ki" no
                "x1" no
            "#]],
        );
        check_regex(
            r"(?:ab){2,3}\.\bz|[^\sq-s]{2}$",
            &["abab.zq", "ab.zq", "xyx", "a r", "zr"],
            expect![[r#"
                "abab.zq" matches
                "ab.zq" no
                "xyx" matches
                "a r" no
                "zr" no
            "#]],
        );
        check_regex(
            "colou?r",
            &["the colour", "color", "colr"],
            expect![[r#"
            "the colour" matches
            "color" matches
            "colr" no
        "#]],
        );
        check_regex(
            r"(a*)*b",
            &["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaac"],
            expect![[r#"
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaac" no
        "#]],
        );
    }

    #[test]
    fn regex_rejects_what_re2_rejects_and_skips_what_it_cannot_do() {
        check_regex(
            "(?=x)",
            &[],
            expect![[r#"
            Invalid("error parsing regexp: invalid or unsupported Perl syntax: `(?=`")
        "#]],
        );
        check_regex(
            r"(a)\1",
            &[],
            expect![[r#"
            Invalid("error parsing regexp: invalid escape sequence: `\\1`")
        "#]],
        );
        check_regex(
            "a)",
            &[],
            expect![[r#"
            Invalid("error parsing regexp: unexpected ): `a)`")
        "#]],
        );
        check_regex(
            "[z-a]",
            &[],
            expect![[r#"
            Invalid("error parsing regexp: invalid character class range: `z-a`")
        "#]],
        );
        check_regex(
            "a**",
            &[],
            expect![[r#"
            Invalid("error parsing regexp: invalid nested repetition operator: `**`")
        "#]],
        );
        check_regex(
            "*a",
            &[],
            expect![[r#"
            Invalid("error parsing regexp: missing argument to repetition operator: `*`")
        "#]],
        );
        check_regex(
            "[abc",
            &[],
            expect![[r#"
            Invalid("error parsing regexp: missing closing ]: `[abc`")
        "#]],
        );
        check_regex(
            "(?i)abc",
            &[],
            expect![[r#"
            Unsupported
        "#]],
        );
        check_regex(
            r"\pL",
            &[],
            expect![[r#"
            Unsupported
        "#]],
        );
    }
}
