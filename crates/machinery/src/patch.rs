//! The three patch formats a Kubernetes API server accepts on `PATCH`, applied to a stored
//! object as JSON.
//!
//! - [`json_patch()`]: `application/json-patch+json`, RFC 6902. A list of operations applied in
//!   order by the `json-patch` crate; errors name the operation, its op and path.
//! - [`merge_patch`]: `application/merge-patch+json`, RFC 7386. Objects merge recursively,
//!   `null` deletes, anything else (lists included) replaces.
//! - [`strategic_merge_patch`]: `application/strategic-merge-patch+json`, what `kubectl apply`
//!   (client side), `kubectl patch`, `label`, `annotate`, `set image` and `rollout restart` send
//!   for the built-in kinds. It follows upstream `k8s.io/apimachinery/pkg/util/strategicpatch`
//!   (`mergeMap`, `mergeSlice`, `mergePatchIntoOriginal`, `normalizeElementOrder`) with the
//!   options the API server uses (`MergeParallelList`, `IgnoreUnmatchedNulls`).
//!
//! # Why a table instead of Go struct tags
//!
//! Upstream learns how to merge each list from the `patchStrategy` and `patchMergeKey` tags on
//! the Go types. We have no Go types, so `LIST_FIELDS` is those tags written down as data: a
//! list is found by the field names that lead to it (`containers.env`, `spec.ports`), which is
//! enough context to tell a container's `ports` (merged by `containerPort`) from a Service's
//! `spec.ports` (merged by `port`), or `metadata.finalizers` (merged as a set) from a
//! Namespace's `spec.finalizers` (replaced). Lists the table does not name are replaced
//! wholesale, as upstream does for fields without a patch strategy (tolerations, node taints,
//! container args). The few kinds whose list lacks a tag that same-named lists elsewhere have
//! (CertificateSigningRequest and CustomResourceDefinition `status.conditions`) are named by
//! their `kind` in `KIND_EXCEPTIONS`.
//!
//! # Strategic merge patch directives
//!
//! - `$patch: replace` in an object replaces it with the rest of the patch object; in a list
//!   element it replaces the whole list with the other elements. `$patch: delete` in an object
//!   empties it; in a list element it deletes the elements with that merge key. `$patch: merge`
//!   in an object is the default and changes nothing.
//! - `$retainKeys: [..]` drops the stored fields it does not list (Deployment `strategy`, volume
//!   sources); every field the patch sets must be listed.
//! - `$setElementOrder/<field>: [..]` orders the merged list: the named elements in that order,
//!   the stored-only elements among them where their stored order allows (upstream's
//!   `normalizeElementOrder`). `kubectl apply` sends it with every merged list it touches.
//!   When the same patch also deletes elements, the stored order it interleaves by is the one
//!   upstream's slice aliasing leaves behind (`live_order_seen`), so results match upstream's
//!   test cases even there.
//! - `$deleteFromPrimitiveList/<field>: [..]` removes values from a list of values
//!   (`metadata.finalizers`).
//!
//! Without `$setElementOrder`, a merged list keeps the patch's order for the elements the patch
//! names and puts stored-only elements back where their stored order allows, so an element the
//! patch adds comes *before* the stored-only elements that follow it: `["b"]` patched into
//! finalizers `["a"]` gives `["b", "a"]`, exactly as upstream's `mergeSortedSlice` does.
//!
//! # Where this differs from upstream
//!
//! Upstream decodes the merged result into a Go struct, which silently drops stray `null`s and
//! unknown keys. We store JSON as it comes, so values taken whole from the patch (a new field, a
//! new list element, a replaced list) are cleaned here instead: `null`s and directives are
//! removed. Where upstream would keep a directive as data or panic, this module reports an
//! error: an unknown `$` key (kubectl's default `fieldValidation=Strict` rejects it upstream
//! too), `$setElementOrder` on a list of objects without a merge key. Two leniencies: a new
//! field given as `{"$patch": "replace", ..}` keeps its contents (upstream drops it), and
//! `$patch: merge` in an object is accepted as the default it is documented to be (upstream
//! rejects it as an unknown patch type).

use std::fmt;

use json_patch::{PatchErrorKind, PatchOperation};
use serde_json::{Map, Value};

/// A patch that could not be applied, with what was wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// A JSON patch body that is not a JSON array of operations.
    #[error("json patch must be a list of operations, got {found}")]
    JsonPatchNotAList { found: &'static str },
    /// A JSON patch operation that does not have the shape RFC 6902 section 4 gives it.
    /// `index` counts from 0, as a JSON pointer into the patch would.
    #[error("json patch operation {index}: {problem}")]
    InvalidJsonPatchOperation { index: usize, problem: String },
    /// A JSON patch operation that passed the shape checks but could not be decoded.
    #[error("json patch operation {index} could not be decoded")]
    UndecodableJsonPatchOperation {
        index: usize,
        #[source]
        source: serde_json::Error,
    },
    /// A JSON patch operation that could not be applied to the document.
    #[error("json patch operation {index} ({op} {path}): {failure}")]
    JsonPatchOperationFailed {
        index: usize,
        op: &'static str,
        path: String,
        failure: JsonPatchFailure,
    },
    /// A JSON merge patch that is not a JSON object (Kubernetes objects are objects).
    #[error("json merge patch must be a JSON object, got {found}")]
    MergePatchNotAnObject { found: &'static str },
    /// A strategic merge patch that is not a JSON object.
    #[error("strategic merge patch must be a JSON object, got {found}")]
    StrategicMergePatchNotAnObject { found: &'static str },
    /// A strategic merge patch applied to something other than a JSON object.
    #[error("strategic merge patch can only be applied to a JSON object, got {found}")]
    StrategicMergeTargetNotAnObject { found: &'static str },
    /// A strategic merge patch that is malformed at `path` (for example
    /// `spec.template.spec.containers[name="app"].env`; empty for the top level).
    #[error("strategic merge patch{}: {problem}", at_path(.path))]
    InvalidStrategicMergePatch { path: String, problem: StrategicProblem },
}

pub type Result<T, E = PatchError> = std::result::Result<T, E>;

/// Why a JSON patch operation could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonPatchFailure {
    /// The path (or, for `add`, its parent) does not exist, or an array index is out of range.
    PathNotFound,
    /// The `from` of a `move` or `copy` does not exist.
    FromNotFound { from: String },
    /// A `test` operation found a different value.
    TestFailed,
    /// A `move` whose target lies inside its source.
    MoveIntoItself,
    /// A failure the `json-patch` crate added after this was written.
    Other,
}

impl fmt::Display for JsonPatchFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PathNotFound => f.write_str("path not found"),
            Self::FromNotFound { from } => write!(f, "from path {from} not found"),
            Self::TestFailed => f.write_str("test failed: the value at the path does not match"),
            Self::MoveIntoItself => f.write_str("cannot move a value into one of its own children"),
            Self::Other => f.write_str("operation failed"),
        }
    }
}

/// Which list an element that failed a check came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListSide {
    /// The stored object.
    Stored,
    /// The patch.
    Patch,
    /// A `$setElementOrder/<field>` list.
    ElementOrder,
}

impl fmt::Display for ListSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Stored => "stored",
            Self::Patch => "patch",
            Self::ElementOrder => "$setElementOrder",
        })
    }
}

/// What is wrong with a strategic merge patch; [`PatchError::InvalidStrategicMergePatch`]
/// says where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrategicProblem {
    /// `$patch` with a value other than `replace`, `delete` or `merge` (shown as JSON).
    UnknownPatchDirective { value: String },
    /// `$patch: merge` in a list element, which upstream does not support.
    MergeDirectiveInList,
    /// A `$`-prefixed key that is not a directive.
    UnknownDirective { key: String },
    /// A directive whose value must be a list and is not.
    DirectiveNotAList { directive: String },
    /// `$setElementOrder/` or `$deleteFromPrimitiveList/` with no field after the slash.
    DirectiveWithoutField { directive: String },
    /// `$retainKeys` that is not a list of strings.
    RetainKeysNotFieldNames,
    /// A field the patch sets that `$retainKeys` does not list.
    NotInRetainKeys { field: String },
    /// A directive addresses a list, but the stored or patch value there is not a list.
    NotAList { side: ListSide },
    /// A list whose elements are lists.
    ListOfLists { side: ListSide, index: usize },
    /// An element of a list merged by key that is not an object.
    ElementNotAnObject { side: ListSide, index: usize, merge_key: &'static str },
    /// An element of a list merged as a set of values that is an object.
    ElementNotAValue { side: ListSide, index: usize },
    /// An element of a list merged by key without that key.
    MissingMergeKey { side: ListSide, index: usize, merge_key: &'static str },
    /// The patch list names elements in another order than `$setElementOrder` does.
    OrderMismatch,
    /// `$setElementOrder` on a list of objects that has no patch merge key.
    OrderWithoutMergeKey,
}

impl fmt::Display for StrategicProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownPatchDirective { value } => write!(
                f,
                "unknown $patch directive {value} (expected \"replace\", \"delete\" or \"merge\")"
            ),
            Self::MergeDirectiveInList => f.write_str(
                "\"$patch\": \"merge\" is not supported in list elements (expected \"replace\" or \"delete\")",
            ),
            Self::UnknownDirective { key } => write!(
                f,
                "unknown patch directive {key:?} (expected $patch, $retainKeys, \
                 $setElementOrder/<field> or $deleteFromPrimitiveList/<field>)"
            ),
            Self::DirectiveNotAList { directive } => write!(f, "{directive} must be a list"),
            Self::DirectiveWithoutField { directive } => {
                write!(f, "{directive:?} must name a field after the \"/\"")
            }
            Self::RetainKeysNotFieldNames => f.write_str("$retainKeys must be a list of field names"),
            Self::NotInRetainKeys { field } => {
                write!(f, "field {field:?} is set by the patch but missing from $retainKeys")
            }
            Self::NotAList { side } => write!(f, "the {side} value is not a list"),
            Self::ListOfLists { side, index } => {
                write!(f, "{side} element {index} is a list, and lists of lists cannot be merged")
            }
            Self::ElementNotAnObject { side, index, merge_key } => write!(
                f,
                "{side} element {index} is not an object, but this list is merged by key {merge_key:?}"
            ),
            Self::ElementNotAValue { side, index } => write!(
                f,
                "{side} element {index} is an object, but this list is merged as a set of values"
            ),
            Self::MissingMergeKey { side, index, merge_key } => {
                write!(f, "{side} element {index} has no merge key {merge_key:?}")
            }
            Self::OrderMismatch => {
                f.write_str("the patch list names its elements in another order than $setElementOrder")
            }
            Self::OrderWithoutMergeKey => f.write_str(
                "$setElementOrder cannot order a list of objects that has no patch merge key",
            ),
        }
    }
}

/// ` at <path>` for a non-empty path, nothing for the top level.
fn at_path(path: &str) -> String {
    if path.is_empty() { String::new() } else { format!(" at {path}") }
}

/// `a list`, `an object`, ...: what a user sent where something else was expected.
fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------------------------
// JSON patch (RFC 6902)
// ---------------------------------------------------------------------------------------------

/// Applies an RFC 6902 JSON patch to `doc` and returns the result; `doc` is left as it was.
///
/// # Errors
///
/// - [`PatchError::JsonPatchNotAList`] if `patch` is not an array.
/// - [`PatchError::InvalidJsonPatchOperation`] if an operation lacks `op`, `path`, `value` or
///   `from`, names an unknown op, or has a path that is not a JSON pointer. Every operation is
///   checked before any is applied.
/// - [`PatchError::JsonPatchOperationFailed`] if an operation cannot be applied (a missing path,
///   a failed `test`); no partial result is returned.
///
/// # Caveats
///
/// `remove` of an object member moves the object's last member into its place (the
/// `json-patch` crate uses `swap_remove`). Key order carries no meaning in JSON objects.
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value> {
    let Value::Array(operations) = patch else {
        return Err(PatchError::JsonPatchNotAList { found: describe(patch) });
    };
    let mut parsed = Vec::with_capacity(operations.len());
    for (index, operation) in operations.iter().enumerate() {
        check_operation(operation)
            .map_err(|problem| PatchError::InvalidJsonPatchOperation { index, problem })?;
        let operation: PatchOperation = serde_json::from_value(operation.clone())
            .map_err(|source| PatchError::UndecodableJsonPatchOperation { index, source })?;
        parsed.push(operation);
    }
    let mut result = doc.clone();
    // The result is thrown away on failure, so the crate's undo log would be wasted work.
    json_patch::patch_unsafe(&mut result, &parsed).map_err(|error| {
        let index = error.operation;
        let (op, path, from) = match parsed.get(index) {
            Some(operation) => describe_operation(operation),
            None => ("unknown", error.path.as_str().to_owned(), None),
        };
        let failure = match error.kind {
            PatchErrorKind::TestFailed => JsonPatchFailure::TestFailed,
            PatchErrorKind::InvalidFromPointer => {
                JsonPatchFailure::FromNotFound { from: from.unwrap_or_default() }
            }
            PatchErrorKind::InvalidPointer => JsonPatchFailure::PathNotFound,
            PatchErrorKind::CannotMoveInsideItself => JsonPatchFailure::MoveIntoItself,
            _ => JsonPatchFailure::Other,
        };
        PatchError::JsonPatchOperationFailed { index, op, path, failure }
    })?;
    Ok(result)
}

/// The op name, path and (for `move` and `copy`) `from` of an operation, for error messages.
fn describe_operation(operation: &PatchOperation) -> (&'static str, String, Option<String>) {
    let path = operation.path().as_str().to_owned();
    match operation {
        PatchOperation::Add(_) => ("add", path, None),
        PatchOperation::Remove(_) => ("remove", path, None),
        PatchOperation::Replace(_) => ("replace", path, None),
        PatchOperation::Move(op) => ("move", path, Some(op.from.as_str().to_owned())),
        PatchOperation::Copy(op) => ("copy", path, Some(op.from.as_str().to_owned())),
        PatchOperation::Test(_) => ("test", path, None),
    }
}

/// Checks one operation against RFC 6902 section 4, so that a malformed operation is reported
/// in words rather than as a serde error.
fn check_operation(operation: &Value) -> std::result::Result<(), String> {
    let Value::Object(fields) = operation else {
        return Err(format!(
            "must be an object with \"op\" and \"path\", got {}",
            describe(operation)
        ));
    };
    let op = match fields.get("op") {
        Some(Value::String(op)) => op.as_str(),
        Some(other) => return Err(format!("\"op\" must be a string, got {}", describe(other))),
        None => return Err("missing \"op\"".to_owned()),
    };
    let (needs_value, needs_from) = match op {
        "add" | "replace" | "test" => (true, false),
        "remove" => (false, false),
        "move" | "copy" => (false, true),
        other => {
            return Err(format!(
                "unknown op {other:?} (expected add, remove, replace, move, copy or test)"
            ));
        }
    };
    check_pointer(fields, "path")?;
    if needs_from {
        check_pointer(fields, "from")?;
    }
    if needs_value && !fields.contains_key("value") {
        return Err(format!("{op} needs a \"value\""));
    }
    Ok(())
}

/// Checks that `fields[name]` is an RFC 6901 JSON pointer.
fn check_pointer(fields: &Map<String, Value>, name: &str) -> std::result::Result<(), String> {
    match fields.get(name) {
        Some(Value::String(pointer)) if is_json_pointer(pointer) => Ok(()),
        Some(Value::String(pointer)) => Err(format!(
            "{name:?} {pointer:?} is not a JSON pointer (it must be empty or start with \"/\", \
             and \"~\" may only appear as \"~0\" or \"~1\")"
        )),
        Some(other) => Err(format!("{name:?} must be a string, got {}", describe(other))),
        None => Err(format!("missing {name:?}")),
    }
}

fn is_json_pointer(pointer: &str) -> bool {
    if !(pointer.is_empty() || pointer.starts_with('/')) {
        return false;
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return false;
        }
    }
    true
}

// ---------------------------------------------------------------------------------------------
// JSON merge patch (RFC 7386)
// ---------------------------------------------------------------------------------------------

/// Applies an RFC 7386 JSON merge patch to `doc` and returns the result.
///
/// Written here rather than with `json_patch::merge` because that one removes keys with
/// `swap_remove`, which reorders the remaining fields of every object it deletes from.
///
/// # Errors
///
/// [`PatchError::MergePatchNotAnObject`] if `patch` is not an object: RFC 7386 would replace
/// the whole document, which is never a valid patch of a Kubernetes object.
pub fn merge_patch(doc: &Value, patch: &Value) -> Result<Value> {
    if !patch.is_object() {
        return Err(PatchError::MergePatchNotAnObject { found: describe(patch) });
    }
    Ok(merge_patch_value(doc.clone(), patch))
}

/// RFC 7386 section 2 `MergePatch(Target, Patch)`.
fn merge_patch_value(target: Value, patch: &Value) -> Value {
    let Value::Object(patch) = patch else {
        return patch.clone();
    };
    let mut target = match target {
        Value::Object(target) => target,
        _ => Map::new(),
    };
    for (key, value) in patch {
        if value.is_null() {
            target.shift_remove(key);
        } else {
            let current = target.get_mut(key).map(Value::take).unwrap_or(Value::Null);
            target.insert(key.clone(), merge_patch_value(current, value));
        }
    }
    Value::Object(target)
}

// ---------------------------------------------------------------------------------------------
// Strategic merge patch
// ---------------------------------------------------------------------------------------------

const PATCH_DIRECTIVE: &str = "$patch";
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
const SET_ELEMENT_ORDER_PREFIX: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST_PREFIX: &str = "$deleteFromPrimitiveList/";

/// Field names that start with `$` but are data, not directives: `JSONSchemaProps` in a
/// CustomResourceDefinition's `openAPIV3Schema` has `$ref` and `$schema`.
const DOLLAR_FIELDS: &[&str] = &["$ref", "$schema"];

/// How a list field is patched (upstream's `patchStrategy` and `patchMergeKey` tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListStrategy {
    /// No patch strategy: the patch list replaces the stored one.
    Replace,
    /// `patchStrategy:"merge"` on a list of scalars: a union that keeps the stored order.
    MergeValues,
    /// `patchStrategy:"merge" patchMergeKey:"<key>"`: elements with the same key merge.
    MergeByKey(&'static str),
}

use ListStrategy::{MergeByKey, MergeValues};

/// The list fields of the built-in kinds that have a patch strategy, copied from the
/// `patchStrategy`/`patchMergeKey` struct tags in `k8s.io/api` and `k8s.io/apimachinery`.
///
/// A pattern matches when its dot-separated field names equal the last field names on the way
/// to the list (list positions are not counted), so `containers.env` matches
/// `spec.template.spec.containers[*].env`. A pattern starting with `/` must match the whole
/// way from the top of the object. Every list not matched here is replaced by the patch, as
/// upstream replaces lists without a patch strategy (`tolerations`, node `spec.taints`,
/// Namespace `spec.finalizers`, container `args`).
const LIST_FIELDS: &[(&str, ListStrategy)] = &[
    // meta/v1 ObjectMeta, in every object and every pod template:
    // finalizers `patchStrategy:"merge"`; ownerReferences `patchMergeKey:"uid"`.
    ("metadata.finalizers", MergeValues),
    ("metadata.ownerReferences", MergeByKey("uid")),
    // core/v1 PodSpec (Pod `spec`, the `spec` of every pod template), all `patchStrategy:"merge"`
    // (volumes and resourceClaims `merge,retainKeys`) with these `patchMergeKey`s.
    ("spec.volumes", MergeByKey("name")),
    ("spec.initContainers", MergeByKey("name")),
    ("spec.containers", MergeByKey("name")),
    ("spec.ephemeralContainers", MergeByKey("name")),
    ("spec.imagePullSecrets", MergeByKey("name")),
    ("spec.hostAliases", MergeByKey("ip")),
    ("spec.topologySpreadConstraints", MergeByKey("topologyKey")),
    ("spec.resourceClaims", MergeByKey("name")),
    ("spec.schedulingGates", MergeByKey("name")),
    // core/v1 Container and EphemeralContainerCommon, in all three container lists.
    ("containers.ports", MergeByKey("containerPort")),
    ("containers.env", MergeByKey("name")),
    ("containers.volumeMounts", MergeByKey("mountPath")),
    ("containers.volumeDevices", MergeByKey("devicePath")),
    ("initContainers.ports", MergeByKey("containerPort")),
    ("initContainers.env", MergeByKey("name")),
    ("initContainers.volumeMounts", MergeByKey("mountPath")),
    ("initContainers.volumeDevices", MergeByKey("devicePath")),
    ("ephemeralContainers.ports", MergeByKey("containerPort")),
    ("ephemeralContainers.env", MergeByKey("name")),
    ("ephemeralContainers.volumeMounts", MergeByKey("mountPath")),
    ("ephemeralContainers.volumeDevices", MergeByKey("devicePath")),
    // core/v1 ServiceSpec ports: `patchMergeKey:"port"` (so TCP and UDP on one port collide,
    // as upstream).
    ("spec.ports", MergeByKey("port")),
    // core/v1 NodeSpec podCIDRs: `patchStrategy:"merge"`.
    ("spec.podCIDRs", MergeValues),
    // `patchMergeKey:"type"` on the status conditions of Pod, Node, Namespace, PVC, Service,
    // ReplicationController, Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, HPA, PDB and
    // APIService (see KIND_EXCEPTIONS for the kinds without it), and ComponentStatus's
    // top-level conditions.
    ("status.conditions", MergeByKey("type")),
    ("/conditions", MergeByKey("type")),
    // core/v1 NodeStatus addresses `patchMergeKey:"type"`; PodStatus podIPs and hostIPs
    // `patchMergeKey:"ip"`, resourceClaimStatuses `patchMergeKey:"name"`.
    ("status.addresses", MergeByKey("type")),
    ("status.podIPs", MergeByKey("ip")),
    ("status.hostIPs", MergeByKey("ip")),
    ("status.resourceClaimStatuses", MergeByKey("name")),
    // resource/v1 ResourceClaimStatus reservedFor `patchMergeKey:"uid"`.
    ("status.reservedFor", MergeByKey("uid")),
    // core/v1 ServiceAccount secrets `patchMergeKey:"name"` (its imagePullSecrets has none).
    ("/secrets", MergeByKey("name")),
    // admissionregistration/v1 Validating/MutatingWebhookConfiguration `patchMergeKey:"name"`.
    ("/webhooks", MergeByKey("name")),
];

/// Kinds whose list at a [`LIST_FIELDS`] pattern has no patch strategy upstream, checked
/// first: `(kind, pattern, strategy)`.
const KIND_EXCEPTIONS: &[(&str, &str, ListStrategy)] = &[
    // certificates/v1 and apiextensions/v1 status conditions are `+listType=map` only.
    ("CertificateSigningRequest", "status.conditions", ListStrategy::Replace),
    ("CustomResourceDefinition", "status.conditions", ListStrategy::Replace),
];

/// The patch metadata upstream publishes in OpenAPI for the list at `fields` (the field names
/// leading to it) in an object of `kind`: `Some((strategy, merge_key))` for lists with a patch
/// strategy, `None` for lists that a patch replaces. The API server annotates its OpenAPI
/// documents with this (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`), so
/// kubectl computes the same patches that [`strategic_merge_patch`] applies.
pub fn list_patch_meta<'a>(
    kind: Option<&str>,
    fields: impl DoubleEndedIterator<Item = &'a str> + Clone,
) -> Option<(&'static str, Option<&'static str>)> {
    match list_strategy(kind, fields) {
        ListStrategy::Replace => None,
        ListStrategy::MergeValues => Some(("merge", None)),
        ListStrategy::MergeByKey(key) => Some(("merge", Some(key))),
    }
}

/// Looks up the strategy for the list at `fields` (the field names leading to it) in an
/// object of `kind`.
fn list_strategy<'a>(
    kind: Option<&str>,
    fields: impl DoubleEndedIterator<Item = &'a str> + Clone,
) -> ListStrategy {
    let exception = KIND_EXCEPTIONS.iter().find(|(exception_kind, pattern, _)| {
        kind == Some(*exception_kind) && pattern_matches(pattern, fields.clone())
    });
    if let Some((_, _, strategy)) = exception {
        return *strategy;
    }
    LIST_FIELDS
        .iter()
        .find(|(pattern, _)| pattern_matches(pattern, fields.clone()))
        .map_or(ListStrategy::Replace, |(_, strategy)| *strategy)
}

/// Whether a [`LIST_FIELDS`] pattern matches the field names leading to a list.
pub(crate) fn pattern_matches<'a>(
    pattern: &str,
    fields: impl DoubleEndedIterator<Item = &'a str>,
) -> bool {
    let (anchored, pattern) = match pattern.strip_prefix('/') {
        Some(rest) => (true, rest),
        None => (false, pattern),
    };
    let mut wanted = pattern.rsplit('.');
    let mut have = fields.rev();
    loop {
        match (wanted.next(), have.next()) {
            (Some(w), Some(h)) if w == h => {}
            (Some(_), _) => return false,
            (None, rest) => return !anchored || rest.is_none(),
        }
    }
}

/// Applies a Kubernetes strategic merge patch to `doc` (an object of a built-in kind) and
/// returns the result, as kube-apiserver does for `application/strategic-merge-patch+json`.
///
/// # Errors
///
/// [`PatchError::StrategicMergePatchNotAnObject`] or
/// [`PatchError::StrategicMergeTargetNotAnObject`] if either side is not an object;
/// [`PatchError::InvalidStrategicMergePatch`] with a [`StrategicProblem`] and the path where
/// the patch is malformed (an unknown directive, a list element without its merge key, a
/// `$retainKeys` the patch contradicts, a `$setElementOrder` list that disagrees with the patch).
///
/// # Caveats
///
/// Custom resources do not support strategic merge patch (upstream answers 415); the caller
/// must not send them here, since the list-field table would treat their lists as the
/// built-in kinds' lists of the same names.
pub fn strategic_merge_patch(doc: &Value, patch: &Value) -> Result<Value> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::StrategicMergePatchNotAnObject { found: describe(patch) });
    };
    let Value::Object(doc) = doc else {
        return Err(PatchError::StrategicMergeTargetNotAnObject { found: describe(doc) });
    };
    let kind = doc.get("kind").and_then(Value::as_str).map(str::to_owned);
    let merged = Merger { path: Vec::new(), kind }.merge_map(doc.clone(), patch.clone())?;
    Ok(Value::Object(merged))
}

/// One step on the way to the value being merged, for list lookups and error paths.
#[derive(Debug, Clone)]
enum Segment {
    /// An object member.
    Field(String),
    /// A list element by position.
    Index(usize),
    /// A list element by merge key, displayed as `[name="app"]`.
    Keyed { key: &'static str, value: String },
}

impl Segment {
    fn keyed(key: &'static str, value: &Value) -> Self {
        Segment::Keyed { key, value: value.to_string() }
    }
}

/// The recursive merge, carrying the path it is at.
#[derive(Debug)]
struct Merger {
    path: Vec<Segment>,
    /// The `kind` of the stored object, for [`KIND_EXCEPTIONS`].
    kind: Option<String>,
}

type Object = Map<String, Value>;

impl Merger {
    /// Runs `f` with `segment` appended to the path.
    fn within<T>(&mut self, segment: Segment, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.path.push(segment);
        let result = f(self);
        self.path.pop();
        result
    }

    fn fail(&self, problem: StrategicProblem) -> PatchError {
        let mut path = String::new();
        for segment in &self.path {
            match segment {
                Segment::Field(name) if name.contains(['.', '[', '"']) || name.is_empty() => {
                    path.push_str(&format!("[{name:?}]"));
                }
                Segment::Field(name) => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(name);
                }
                Segment::Index(index) => path.push_str(&format!("[{index}]")),
                Segment::Keyed { key, value } => path.push_str(&format!("[{key}={value}]")),
            }
        }
        PatchError::InvalidStrategicMergePatch { path, problem }
    }

    /// [`Self::fail`] one step further down the path.
    fn fail_at(&mut self, segment: Segment, problem: StrategicProblem) -> PatchError {
        self.path.push(segment);
        let error = self.fail(problem);
        self.path.pop();
        error
    }

    /// The strategy of the list at the current path.
    fn list_strategy(&self) -> ListStrategy {
        list_strategy(
            self.kind.as_deref(),
            self.path.iter().filter_map(|segment| match segment {
                Segment::Field(name) => Some(name.as_str()),
                Segment::Index(_) | Segment::Keyed { .. } => None,
            }),
        )
    }

    /// Upstream `mergeMap`: merges `patch` into `original`.
    fn merge_map(&mut self, mut original: Object, mut patch: Object) -> Result<Object> {
        if let Some(directive) = patch.shift_remove(PATCH_DIRECTIVE) {
            match directive.as_str() {
                Some("replace") => return self.clean_map(patch),
                // Upstream returns an empty object, not an absent field.
                Some("delete") => return Ok(Map::new()),
                Some("merge") => {}
                _ => {
                    return Err(self.fail(StrategicProblem::UnknownPatchDirective {
                        value: directive.to_string(),
                    }));
                }
            }
        }
        self.apply_retain_keys(&mut original, &mut patch)?;
        self.apply_element_orders(&mut original, &mut patch)?;
        for (key, value) in patch {
            if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST_PREFIX) {
                self.delete_from_primitive_list(&mut original, field, value)?;
                continue;
            }
            if is_directive_key(&key) {
                return Err(self.fail(StrategicProblem::UnknownDirective { key }));
            }
            if value.is_null() {
                original.shift_remove(&key);
                continue;
            }
            // Take the stored value out, leaving the key where it is so the order is kept.
            let current = original.get_mut(&key).map(Value::take);
            let merged =
                self.within(Segment::Field(key.clone()), |m| m.merge_value(current, value))?;
            match merged {
                Some(merged) => {
                    original.insert(key, merged);
                }
                None => {
                    original.shift_remove(&key);
                }
            }
        }
        Ok(original)
    }

    /// Merges one field; `None` means the field is to be absent.
    fn merge_value(&mut self, current: Option<Value>, patch: Value) -> Result<Option<Value>> {
        match (current, patch) {
            (Some(Value::Object(current)), Value::Object(patch)) => {
                Ok(Some(Value::Object(self.merge_map(current, patch)?)))
            }
            (Some(Value::Array(current)), Value::Array(patch)) => {
                let strategy = self.list_strategy();
                Ok(Some(Value::Array(self.merge_list(current, patch, strategy)?)))
            }
            // Absent, or of another JSON type than the patch, or a scalar: take the patch value.
            (_, patch) => self.clean(patch),
        }
    }

    /// Upstream `applyRetainKeysDirective`.
    fn apply_retain_keys(&mut self, original: &mut Object, patch: &mut Object) -> Result<()> {
        let Some(retain) = patch.shift_remove(RETAIN_KEYS_DIRECTIVE) else {
            return Ok(());
        };
        let Value::Array(retain) = retain else {
            return Err(self.fail(StrategicProblem::RetainKeysNotFieldNames));
        };
        let mut keep = Vec::with_capacity(retain.len());
        for name in &retain {
            let Value::String(name) = name else {
                return Err(self.fail(StrategicProblem::RetainKeysNotFieldNames));
            };
            keep.push(name.as_str());
        }
        for (key, value) in patch.iter() {
            let is_order_directive = key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
                || key.starts_with(SET_ELEMENT_ORDER_PREFIX);
            if !value.is_null() && !is_order_directive && !keep.contains(&key.as_str()) {
                return Err(self.fail(StrategicProblem::NotInRetainKeys { field: key.clone() }));
            }
        }
        original.retain(|key, _| keep.contains(&key.as_str()));
        Ok(())
    }

    /// Upstream `mergePatchIntoOriginal`: merges each list that has a `$setElementOrder`
    /// directive and orders it, removing both from the patch.
    fn apply_element_orders(&mut self, original: &mut Object, patch: &mut Object) -> Result<()> {
        let directives: Vec<String> =
            patch.keys().filter(|key| key.starts_with(SET_ELEMENT_ORDER_PREFIX)).cloned().collect();
        for directive in directives {
            let Some(order) = patch.shift_remove(&directive) else { continue };
            let field = directive[SET_ELEMENT_ORDER_PREFIX.len()..].to_owned();
            if field.is_empty() {
                return Err(self.fail(StrategicProblem::DirectiveWithoutField { directive }));
            }
            let Value::Array(order) = order else {
                return Err(self.fail(StrategicProblem::DirectiveNotAList { directive }));
            };
            let from_patch = patch.shift_remove(&field);
            let stored = original.get_mut(&field).map(Value::take);
            let ordered = self.within(Segment::Field(field.clone()), |m| {
                m.merge_ordered_list(stored, from_patch, order)
            })?;
            match ordered {
                Some(list) => {
                    original.insert(field, Value::Array(list));
                }
                None => {
                    original.shift_remove(&field);
                }
            }
        }
        Ok(())
    }

    /// Merges the stored and patch values of a list and orders the result by `order`.
    fn merge_ordered_list(
        &mut self,
        stored: Option<Value>,
        patch: Option<Value>,
        order: Vec<Value>,
    ) -> Result<Option<Vec<Value>>> {
        let stored = match stored {
            None | Some(Value::Null) => None,
            Some(Value::Array(list)) => Some(list),
            Some(_) => return Err(self.fail(StrategicProblem::NotAList { side: ListSide::Stored })),
        };
        let patch = match patch {
            None => None,
            Some(Value::Array(list)) => Some(list),
            Some(_) => return Err(self.fail(StrategicProblem::NotAList { side: ListSide::Patch })),
        };
        let strategy = self.list_strategy();
        let key = match strategy {
            MergeByKey(key) => Some(key),
            ListStrategy::Replace | MergeValues => None,
        };
        if key.is_none() {
            let mut elements =
                order.iter().chain(stored.iter().flatten()).chain(patch.iter().flatten());
            if elements.any(Value::is_object) {
                return Err(self.fail(StrategicProblem::OrderWithoutMergeKey));
            }
        }
        let order_ids = self.identities(&order, ListSide::ElementOrder, key)?;
        if let Some(patch) = &patch {
            self.check_order(patch, &order_ids, key)?;
        }
        let stored_ids = match &stored {
            Some(stored) => self.identities(stored, ListSide::Stored, key)?,
            None => Vec::new(),
        };
        let live_order = match (&patch, key) {
            (Some(patch), Some(key)) if stored.is_some() => {
                live_order_seen(&stored_ids, patch, key)
            }
            _ => stored_ids.clone(),
        };
        let merged = match (stored, patch) {
            (Some(stored), None) => stored,
            (None, Some(patch)) => self.clean_list(patch)?,
            (Some(stored), Some(patch)) => self.merge_list(stored, patch, strategy)?,
            (None, None) => return Ok(None),
        };
        let merged_ids = self.identities(&merged, ListSide::Patch, key)?;
        let (in_order, stored_only) = partition(merged, &merged_ids, &order_ids);
        Ok(Some(normalize_order(in_order, stored_only, &order_ids, &live_order, key)))
    }

    /// Upstream `validatePatchWithSetOrderList`: the patch elements (deletions and other
    /// directive elements aside) must appear in `$setElementOrder` in the same relative order.
    fn check_order(
        &self,
        patch: &[Value],
        order_ids: &[Value],
        key: Option<&'static str>,
    ) -> Result<()> {
        let mut wanted = order_ids.iter();
        for (index, element) in patch.iter().enumerate() {
            if let Value::Object(element) = element
                && element.contains_key(PATCH_DIRECTIVE)
            {
                continue;
            }
            let id = self.identity(element, ListSide::Patch, index, key)?;
            if !wanted.any(|wanted| same_value(wanted, &id)) {
                return Err(self.fail(StrategicProblem::OrderMismatch));
            }
        }
        Ok(())
    }

    /// Upstream `mergeSliceHandler` and `mergeSlice`.
    fn merge_list(
        &mut self,
        stored: Vec<Value>,
        patch: Vec<Value>,
        strategy: ListStrategy,
    ) -> Result<Vec<Value>> {
        match strategy {
            ListStrategy::Replace => self.clean_list(patch),
            MergeValues => self.merge_value_list(stored, patch),
            MergeByKey(key) => self.merge_keyed_list(stored, patch, key),
        }
    }

    /// A list merged as a set of values: the union, then ordered as upstream orders it.
    fn merge_value_list(&mut self, stored: Vec<Value>, patch: Vec<Value>) -> Result<Vec<Value>> {
        if stored.is_empty() && patch.is_empty() {
            return Ok(stored);
        }
        let stored_ids = self.identities(&stored, ListSide::Stored, None)?;
        let patch_ids = self.identities(&patch, ListSide::Patch, None)?;
        let mut merged: Vec<Value> = Vec::with_capacity(stored.len() + patch.len());
        for value in stored.into_iter().chain(patch) {
            if !merged.iter().any(|seen| same_value(seen, &value)) {
                merged.push(value);
            }
        }
        let merged_ids = merged.clone();
        let (in_patch, stored_only) = partition(merged, &merged_ids, &patch_ids);
        Ok(normalize_order(in_patch, stored_only, &patch_ids, &stored_ids, None))
    }

    /// A list merged by key: `$patch` elements first (upstream
    /// `mergeSliceWithSpecialElements`), then each patch element merges into the stored
    /// element with the same key or is added, then the result is ordered.
    fn merge_keyed_list(
        &mut self,
        stored: Vec<Value>,
        patch: Vec<Value>,
        key: &'static str,
    ) -> Result<Vec<Value>> {
        if stored.is_empty() && patch.is_empty() {
            return Ok(stored);
        }
        let mut merged = Vec::with_capacity(stored.len() + patch.len());
        for (index, element) in stored.into_iter().enumerate() {
            merged.push(self.keyed_element(element, ListSide::Stored, index, key)?);
        }
        let mut plain = Vec::with_capacity(patch.len());
        let mut replace = false;
        for (index, element) in patch.into_iter().enumerate() {
            let Value::Object(element) = element else {
                return Err(self.fail(element_not_an_object(
                    &element,
                    ListSide::Patch,
                    index,
                    key,
                )));
            };
            let Some(directive) = element.get(PATCH_DIRECTIVE) else {
                match element.get(key) {
                    Some(id) if !id.is_null() => plain.push((index, id.clone(), element)),
                    _ => {
                        return Err(self.fail(StrategicProblem::MissingMergeKey {
                            side: ListSide::Patch,
                            index,
                            merge_key: key,
                        }));
                    }
                }
                continue;
            };
            match directive.as_str() {
                Some("delete") => {
                    let Some(id) = element.get(key) else {
                        return Err(self.fail(StrategicProblem::MissingMergeKey {
                            side: ListSide::Patch,
                            index,
                            merge_key: key,
                        }));
                    };
                    merged.retain(|stored: &Object| {
                        !stored.get(key).is_some_and(|s| same_value(s, id))
                    });
                }
                // Keep going: upstream prunes every other directive element first.
                Some("replace") => replace = true,
                Some("merge") => return Err(self.fail(StrategicProblem::MergeDirectiveInList)),
                _ => {
                    return Err(self.fail(StrategicProblem::UnknownPatchDirective {
                        value: directive.to_string(),
                    }));
                }
            }
        }
        if replace {
            // The plain patch elements become the list, in patch order.
            return plain
                .into_iter()
                .map(|(_, id, element)| {
                    self.within(Segment::keyed(key, &id), |m| m.clean_map(element))
                        .map(Value::Object)
                })
                .collect();
        }
        let stored_ids: Vec<Value> =
            merged.iter().filter_map(|element| element.get(key).cloned()).collect();
        let patch_ids: Vec<Value> = plain.iter().map(|(_, id, _)| id.clone()).collect();
        for (index, id, element) in plain {
            let position = merged
                .iter()
                .position(|stored| stored.get(key).is_some_and(|s| same_value(s, &id)));
            let result = self.within(Segment::keyed(key, &id), |m| match position {
                Some(position) => m.merge_map(std::mem::take(&mut merged[position]), element),
                None => m.clean_map(element),
            })?;
            // A `$retainKeys` or `$patch: replace` in the element may have dropped its merge
            // key; upstream fails on that too.
            if !result.contains_key(key) {
                return Err(self.fail(StrategicProblem::MissingMergeKey {
                    side: ListSide::Patch,
                    index,
                    merge_key: key,
                }));
            }
            match position {
                Some(position) => merged[position] = result,
                None => merged.push(result),
            }
        }
        let merged: Vec<Value> = merged.into_iter().map(Value::Object).collect();
        let merged_ids: Vec<Value> =
            merged.iter().filter_map(|element| element.get(key).cloned()).collect();
        let (in_patch, stored_only) = partition(merged, &merged_ids, &patch_ids);
        Ok(normalize_order(in_patch, stored_only, &patch_ids, &stored_ids, Some(key)))
    }

    /// Checks that a stored element of a keyed list is an object with the key.
    fn keyed_element(
        &self,
        element: Value,
        side: ListSide,
        index: usize,
        key: &'static str,
    ) -> Result<Object> {
        match element {
            Value::Object(element) if element.contains_key(key) => Ok(element),
            Value::Object(_) => {
                Err(self.fail(StrategicProblem::MissingMergeKey { side, index, merge_key: key }))
            }
            other => Err(self.fail(element_not_an_object(&other, side, index, key))),
        }
    }

    /// What identifies `element` in its list: its merge key's value, or itself for a list of
    /// values.
    fn identity(
        &self,
        element: &Value,
        side: ListSide,
        index: usize,
        key: Option<&'static str>,
    ) -> Result<Value> {
        match (key, element) {
            (Some(key), Value::Object(object)) => object.get(key).cloned().ok_or_else(|| {
                self.fail(StrategicProblem::MissingMergeKey { side, index, merge_key: key })
            }),
            (Some(key), other) => Err(self.fail(element_not_an_object(other, side, index, key))),
            (None, Value::Array(_)) => {
                Err(self.fail(StrategicProblem::ListOfLists { side, index }))
            }
            (None, Value::Object(_)) => {
                Err(self.fail(StrategicProblem::ElementNotAValue { side, index }))
            }
            (None, value) => Ok(value.clone()),
        }
    }

    fn identities(
        &self,
        list: &[Value],
        side: ListSide,
        key: Option<&'static str>,
    ) -> Result<Vec<Value>> {
        list.iter()
            .enumerate()
            .map(|(index, element)| self.identity(element, side, index, key))
            .collect()
    }

    /// Upstream `$deleteFromPrimitiveList/<field>` handling (`deleteFromSlice`): removes the
    /// listed values from the stored list, whatever the list's patch strategy (upstream's
    /// "should delete item from a list without merge patch strategy" case).
    fn delete_from_primitive_list(
        &mut self,
        original: &mut Object,
        field: &str,
        values: Value,
    ) -> Result<()> {
        if field.is_empty() {
            return Err(self.fail(StrategicProblem::DirectiveWithoutField {
                directive: DELETE_FROM_PRIMITIVE_LIST_PREFIX.to_owned(),
            }));
        }
        self.within(Segment::Field(field.to_owned()), |m| {
            let Value::Array(values) = values else {
                return Err(m.fail(StrategicProblem::DirectiveNotAList {
                    directive: format!("{DELETE_FROM_PRIMITIVE_LIST_PREFIX}{field}"),
                }));
            };
            // A stored field that is absent or not a list is left alone, as upstream does.
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|value| !values.iter().any(|delete| same_value(delete, value)));
            }
            Ok(())
        })
    }

    /// Upstream `discardNullValuesFromPatch` and `removeDirectives`, for a value taken whole
    /// from the patch; `None` if it is `{"$patch": "delete"}`.
    fn clean(&mut self, value: Value) -> Result<Option<Value>> {
        match value {
            Value::Object(object) => {
                if let Some(directive) = object.get(PATCH_DIRECTIVE) {
                    match directive.as_str() {
                        Some("delete") => return Ok(None),
                        Some("replace" | "merge") => {}
                        _ => {
                            return Err(self.fail(StrategicProblem::UnknownPatchDirective {
                                value: directive.to_string(),
                            }));
                        }
                    }
                }
                Ok(Some(Value::Object(self.clean_map(object)?)))
            }
            Value::Array(list) => Ok(Some(Value::Array(self.clean_list(list)?))),
            other => Ok(Some(other)),
        }
    }

    /// Drops `null` members and directives from an object taken whole from the patch.
    fn clean_map(&mut self, object: Object) -> Result<Object> {
        let mut cleaned = Map::new();
        for (key, value) in object {
            if value.is_null()
                || key == PATCH_DIRECTIVE
                || key == RETAIN_KEYS_DIRECTIVE
                || key.starts_with(SET_ELEMENT_ORDER_PREFIX)
                || key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
            {
                continue;
            }
            if is_directive_key(&key) {
                return Err(self.fail(StrategicProblem::UnknownDirective { key }));
            }
            if let Some(value) = self.within(Segment::Field(key.clone()), |m| m.clean(value))? {
                cleaned.insert(key, value);
            }
        }
        Ok(cleaned)
    }

    /// Drops directive elements (`{"$patch": ..}`) from a list taken whole from the patch and
    /// cleans the others.
    fn clean_list(&mut self, list: Vec<Value>) -> Result<Vec<Value>> {
        let mut cleaned = Vec::with_capacity(list.len());
        for (index, element) in list.into_iter().enumerate() {
            if let Value::Object(object) = &element
                && let Some(directive) = object.get(PATCH_DIRECTIVE)
            {
                let problem = match directive.as_str() {
                    Some("replace" | "delete") => continue,
                    Some("merge") => StrategicProblem::MergeDirectiveInList,
                    _ => StrategicProblem::UnknownPatchDirective { value: directive.to_string() },
                };
                return Err(self.fail_at(Segment::Index(index), problem));
            }
            if let Some(element) = self.within(Segment::Index(index), |m| m.clean(element))? {
                cleaned.push(element);
            }
        }
        Ok(cleaned)
    }
}

fn element_not_an_object(
    element: &Value,
    side: ListSide,
    index: usize,
    key: &'static str,
) -> StrategicProblem {
    if element.is_array() {
        StrategicProblem::ListOfLists { side, index }
    } else {
        StrategicProblem::ElementNotAnObject { side, index, merge_key: key }
    }
}

/// A `$`-prefixed key that is neither a directive this module handles nor a known field name.
fn is_directive_key(key: &str) -> bool {
    key.starts_with('$') && !DOLLAR_FIELDS.contains(&key)
}

/// Equality as upstream's Go `==` on decoded JSON, where every number is a float64.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => a == b,
    }
}

/// The stored order upstream's `mergePatchIntoOriginal` orders a keyed list by, after
/// `mergeSlice` ran on it: not the stored list as it came, but what Go's slice aliasing leaves
/// in its first `stored.len()` slots. `deleteMatchingEntries` deletes with `append(s[:k],
/// s[k+1:]...)` and `mergeSliceWithoutSpecialElements` adds new elements with `append`, both
/// in the stored list's backing array, which the `$setElementOrder` step reads again. So when
/// the patch deletes elements, the slots they free hold the elements the patch adds, in patch
/// order, and stored-only elements then sort before added ones that follow them there. Upstream's
/// own cases depend on it ("add map and delete map from merging list": stored `[1, 2, 4]`,
/// `$setElementOrder` `[2, 3]`, add `3`, delete `1` gives `[2, 4, 3]`).
///
/// `$patch: replace` makes upstream build a new list, so the stored order stays as it is.
fn live_order_seen(stored_ids: &[Value], patch: &[Value], key: &str) -> Vec<Value> {
    fn directive(element: &Value) -> Option<&str> {
        element.get(PATCH_DIRECTIVE).and_then(Value::as_str)
    }
    if patch.iter().any(|element| directive(element) == Some("replace")) {
        return stored_ids.to_vec();
    }
    let mut slots = stored_ids.to_vec();
    let mut len = slots.len();
    for id in patch.iter().filter(|e| directive(e) == Some("delete")).filter_map(|e| e.get(key)) {
        while let Some(k) = slots[..len].iter().position(|s| same_value(s, id)) {
            // `append(s[:k], s[k+1:]...)`: shift left; the last slot keeps its old value.
            let last = slots[len - 1].clone();
            slots[k..len].rotate_left(1);
            slots[len - 1] = last;
            len -= 1;
        }
    }
    let mut local: Vec<Value> = slots[..len].to_vec();
    for element in patch.iter().filter(|e| e.get(PATCH_DIRECTIVE).is_none()) {
        let Some(id) = element.get(key) else { continue };
        if local.iter().any(|s| same_value(s, id)) {
            continue;
        }
        // Writes past the stored length land outside the window upstream reads again.
        if let Some(slot) = slots.get_mut(local.len()) {
            *slot = id.clone();
        }
        local.push(id.clone());
    }
    slots
}

fn position(ids: &[Value], id: &Value) -> Option<usize> {
    ids.iter().position(|candidate| same_value(candidate, id))
}

/// Splits `list` (whose identities are `list_ids`) into the elements whose identity is in
/// `by` and the others, keeping the order within each part (upstream
/// `partitionMapsByPresentInList`, `partitionPrimitivesByPresentInList`).
fn partition(list: Vec<Value>, list_ids: &[Value], by: &[Value]) -> (Vec<Value>, Vec<Value>) {
    let mut inside = Vec::new();
    let mut outside = Vec::new();
    for (element, id) in list.into_iter().zip(list_ids) {
        if position(by, id).is_some() {
            inside.push(element);
        } else {
            outside.push(element);
        }
    }
    (inside, outside)
}

/// The identity of an element whose identity was already checked.
fn id_of<'a>(element: &'a Value, key: Option<&str>) -> Option<&'a Value> {
    match key {
        Some(key) => element.get(key),
        None => Some(element),
    }
}

/// Upstream `normalizeElementOrder`: sorts the patch elements by `patch_order` and the
/// stored-only elements by `stored_order`, then interleaves them with `merge_sorted`.
fn normalize_order(
    mut patch_items: Vec<Value>,
    mut stored_only: Vec<Value>,
    patch_order: &[Value],
    stored_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let rank = |order: &[Value], element: &Value| {
        id_of(element, key).and_then(|id| position(order, id)).unwrap_or(usize::MAX)
    };
    patch_items.sort_by_key(|element| rank(patch_order, element));
    stored_only.sort_by_key(|element| rank(stored_order, element));
    merge_sorted(stored_only, patch_items, stored_order, key)
}

/// Upstream `mergeSortedSlice`: walks both lists, taking the stored-only element first only
/// when both elements are in the stored list and the stored-only one came first there. So
/// patch elements keep their order and new ones land before the stored-only elements that
/// follow them (a container added by `kubectl patch` comes first, as upstream puts it).
fn merge_sorted(
    stored_only: Vec<Value>,
    patch_items: Vec<Value>,
    stored_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let index = |element: &Value| id_of(element, key).and_then(|id| position(stored_order, id));
    let mut merged = Vec::with_capacity(stored_only.len() + patch_items.len());
    let mut left = stored_only.into_iter().peekable();
    let mut right = patch_items.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!((index(l), index(r)), (Some(l), Some(r)) if l < r),
        };
        let next = if take_left { left.next() } else { right.next() };
        merged.extend(next);
    }
    merged
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};
    use serde_json::Value;

    use super::{Result, json_patch, merge_patch, strategic_merge_patch};

    type Engine = fn(&Value, &Value) -> Result<Value>;

    /// Applies `patch` to `original` with `engine` and compares the pretty-printed result, or
    /// `error: <message>`, with the snapshot.
    fn check(engine: Engine, original: &str, patch: &str, expect: Expect) {
        let original: Value = serde_json::from_str(original).expect("original is JSON");
        let patch: Value = serde_json::from_str(patch).expect("patch is JSON");
        let actual = match engine(&original, &patch) {
            Ok(result) => serde_json::to_string_pretty(&result).expect("a Value serializes"),
            Err(error) => format!("error: {error}"),
        };
        expect.assert_eq(&actual);
    }

    const SMP: Engine = strategic_merge_patch;
    const JSON: Engine = json_patch;
    const MERGE: Engine = merge_patch;

    // -- strategic merge patch: what kubectl sends --------------------------------------------

    #[test]
    fn smp_apply_with_set_element_order_changes_one_image_and_keeps_the_other() {
        check(
            SMP,
            r#"{"spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": "app:v1", "ports": [{"containerPort": 80}]},
                {"name": "sidecar", "image": "proxy:v1"}
            ]}}}}"#,
            r#"{"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                "containers": [{"name": "app", "image": "app:v2"}]
            }}}}"#,
            expect![[r#"
                {
                  "spec": {
                    "template": {
                      "spec": {
                        "containers": [
                          {
                            "name": "app",
                            "image": "app:v2",
                            "ports": [
                              {
                                "containerPort": 80
                              }
                            ]
                          },
                          {
                            "name": "sidecar",
                            "image": "proxy:v1"
                          }
                        ]
                      }
                    }
                  }
                }"#]],
        );
    }

    #[test]
    fn smp_set_element_order_reorders_and_keeps_server_only_elements_after() {
        check(
            SMP,
            r#"{"spec": {"containers": [
                {"name": "a", "image": "a"}, {"name": "b", "image": "b"}, {"name": "injected", "image": "i"}
            ]}}"#,
            r#"{"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}}"#,
            expect![[r#"
                {
                  "spec": {
                    "containers": [
                      {
                        "name": "b",
                        "image": "b"
                      },
                      {
                        "name": "a",
                        "image": "a"
                      },
                      {
                        "name": "injected",
                        "image": "i"
                      }
                    ]
                  }
                }"#]],
        );
    }

    #[test]
    fn smp_set_element_order_must_agree_with_the_patch_list() {
        check(
            SMP,
            r#"{"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}"#,
            r#"{"spec": {
                "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                "containers": [{"name": "b", "image": "b2"}, {"name": "a", "image": "a2"}]
            }}"#,
            expect![
                "error: strategic merge patch at spec.containers: the patch list names its elements in another order than $setElementOrder"
            ],
        );
    }

    #[test]
    fn smp_set_image_merges_by_container_name() {
        // What `kubectl set image deployment/web app=app:v3` sends.
        check(
            SMP,
            r#"{"spec": {"template": {"spec": {"containers": [
                {"name": "sidecar", "image": "proxy:v1"}, {"name": "app", "image": "app:v1"}
            ]}}}}"#,
            r#"{"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:v3"}]}}}}"#,
            expect![[r#"
                {
                  "spec": {
                    "template": {
                      "spec": {
                        "containers": [
                          {
                            "name": "sidecar",
                            "image": "proxy:v1"
                          },
                          {
                            "name": "app",
                            "image": "app:v3"
                          }
                        ]
                      }
                    }
                  }
                }"#]],
        );
    }

    #[test]
    fn smp_added_container_goes_before_stored_only_ones_as_upstream() {
        check(
            SMP,
            r#"{"spec": {"containers": [{"name": "a", "image": "a"}]}}"#,
            r#"{"spec": {"containers": [{"name": "b", "image": "b", "env": null}]}}"#,
            expect![[r#"
                {
                  "spec": {
                    "containers": [
                      {
                        "name": "b",
                        "image": "b"
                      },
                      {
                        "name": "a",
                        "image": "a"
                      }
                    ]
                  }
                }"#]],
        );
    }

    #[test]
    fn smp_rollout_restart_adds_a_template_annotation() {
        check(
            SMP,
            r#"{"spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "web"}}}}}"#,
            r#"{"spec": {"template": {"metadata": {"annotations": {
                "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"
            }}}}}"#,
            expect![[r#"
                {
                  "spec": {
                    "replicas": 2,
                    "template": {
                      "metadata": {
                        "labels": {
                          "app": "web"
                        },
                        "annotations": {
                          "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"
                        }
                      }
                    }
                  }
                }"#]],
        );
    }

    #[test]
    fn smp_env_merges_by_name_and_patch_delete_removes_one() {
        check(
            SMP,
            r#"{"spec": {"containers": [{"name": "app", "env": [
                {"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}
            ]}]}}"#,
            r#"{"spec": {"containers": [{"name": "app", "env": [
                {"name": "B", "$patch": "delete"},
                {"name": "A", "value": "10"},
                {"name": "D", "value": "4"}
            ]}]}}"#,
            expect![[r#"
                {
                  "spec": {
                    "containers": [
                      {
                        "name": "app",
                        "env": [
                          {
                            "name": "A",
                            "value": "10"
                          },
                          {
                            "name": "D",
                            "value": "4"
                          },
                          {
                            "name": "C",
                            "value": "3"
                          }
                        ]
                      }
                    ]
                  }
                }"#]],
        );
    }

    #[test]
    fn smp_label_null_deletes_and_unmatched_null_is_ignored() {
        // What `kubectl label pod web tier- env=prod` sends, plus a null for a missing label.
        check(
            SMP,
            r#"{"metadata": {"name": "web", "labels": {"app": "web", "tier": "frontend"}}}"#,
            r#"{"metadata": {"labels": {"tier": null, "env": "prod", "missing": null}}}"#,
            expect![[r#"
                {
                  "metadata": {
                    "name": "web",
                    "labels": {
                      "app": "web",
                      "env": "prod"
                    }
                  }
                }"#]],
        );
    }

    #[test]
    fn smp_service_ports_merge_by_port() {
        check(
            SMP,
            r#"{"spec": {"ports": [
                {"name": "http", "port": 80, "targetPort": 8080},
                {"name": "https", "port": 443, "targetPort": 8443}
            ]}}"#,
            r#"{"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}"#,
            expect![[r#"
                {
                  "spec": {
                    "ports": [
                      {
                        "name": "http",
                        "port": 80,
                        "targetPort": 9090
                      },
                      {
                        "name": "https",
                        "port": 443,
                        "targetPort": 8443
                      }
                    ]
                  }
                }"#]],
        );
    }

    #[test]
    fn smp_container_ports_merge_by_container_port() {
        check(
            SMP,
            r#"{"spec": {"containers": [{"name": "app", "ports": [
                {"containerPort": 80, "protocol": "TCP"}, {"containerPort": 9090, "name": "metrics"}
            ]}]}}"#,
            r#"{"spec": {"containers": [{"name": "app", "ports": [{"containerPort": 80, "name": "http"}]}]}}"#,
            expect![[r#"
                {
                  "spec": {
                    "containers": [
                      {
                        "name": "app",
                        "ports": [
                          {
                            "containerPort": 80,
                            "protocol": "TCP",
                            "name": "http"
                          },
                          {
                            "containerPort": 9090,
                            "name": "metrics"
                          }
                        ]
                      }
                    ]
                  }
                }"#]],
        );
    }

    #[test]
    fn smp_tolerations_and_taints_are_replaced() {
        check(
            SMP,
            r#"{"spec": {
                "tolerations": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}],
                "taints": [{"key": "x", "effect": "NoSchedule"}]
            }}"#,
            r#"{"spec": {
                "tolerations": [{"key": "c", "operator": "Exists"}],
                "taints": [{"key": "y", "effect": "NoExecute"}]
            }}"#,
            expect![[r#"
                {
                  "spec": {
                    "tolerations": [
                      {
                        "key": "c",
                        "operator": "Exists"
                      }
                    ],
                    "taints": [
                      {
                        "key": "y",
                        "effect": "NoExecute"
                      }
                    ]
                  }
                }"#]],
        );
    }

    #[test]
    fn smp_finalizers_union_and_namespace_spec_finalizers_replaced() {
        check(
            SMP,
            r#"{"metadata": {"finalizers": ["a", "b"]}, "spec": {"finalizers": ["kubernetes"]}}"#,
            r#"{"metadata": {"finalizers": ["b", "c"]}, "spec": {"finalizers": ["other"]}}"#,
            expect![[r#"
                {
                  "metadata": {
                    "finalizers": [
                      "a",
                      "b",
                      "c"
                    ]
                  },
                  "spec": {
                    "finalizers": [
                      "other"
                    ]
                  }
                }"#]],
        );
    }

    #[test]
    fn smp_finalizer_added_without_order_goes_first_as_upstream() {
        check(
            SMP,
            r#"{"metadata": {"finalizers": ["a"]}}"#,
            r#"{"metadata": {"finalizers": ["b"]}}"#,
            expect![[r#"
                {
                  "metadata": {
                    "finalizers": [
                      "b",
                      "a"
                    ]
                  }
                }"#]],
        );
    }

    #[test]
    fn smp_delete_from_primitive_list_removes_finalizers() {
        check(
            SMP,
            r#"{"metadata": {"finalizers": ["a", "b", "c", "b"]}}"#,
            r#"{"metadata": {
                "$setElementOrder/finalizers": ["c", "a", "d"],
                "$deleteFromPrimitiveList/finalizers": ["b"],
                "finalizers": ["d"]
            }}"#,
            expect![[r#"
                {
                  "metadata": {
                    "finalizers": [
                      "c",
                      "a",
                      "d"
                    ]
                  }
                }"#]],
        );
    }

    #[test]
    fn smp_delete_from_primitive_list_also_works_on_lists_without_merge_strategy() {
        // Upstream's "should delete item from a list without merge patch strategy" case.
        check(
            SMP,
            r#"{"spec": {"containers": [{"name": "app", "args": ["a", "b", "c"]}]}}"#,
            r#"{"spec": {"containers": [{"name": "app", "$deleteFromPrimitiveList/args": ["b"]}]}}"#,
            expect![[r#"
                {
                  "spec": {
                    "containers": [
                      {
                        "name": "app",
                        "args": [
                          "a",
                          "c"
                        ]
                      }
                    ]
                  }
                }"#]],
        );
    }

    #[test]
    fn smp_apply_removing_a_container_sends_patch_delete_with_order() {
        check(
            SMP,
            r#"{"spec": {"containers": [{"name": "app"}, {"name": "sidecar"}, {"name": "injected"}]}}"#,
            r#"{"spec": {
                "$setElementOrder/containers": [{"name": "app"}],
                "containers": [{"name": "sidecar", "$patch": "delete"}]
            }}"#,
            expect![[r#"
                {
                  "spec": {
                    "containers": [
                      {
                        "name": "app"
                      },
                      {
                        "name": "injected"
                      }
                    ]
                  }
                }"#]],
        );
    }

    #[test]
    fn smp_retain_keys_in_a_volume_switches_its_source() {
        check(
            SMP,
            r#"{"spec": {"volumes": [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]}}"#,
            r#"{"spec": {
                "$setElementOrder/volumes": [{"name": "data"}, {"name": "tmp"}],
                "volumes": [{"name": "data", "$retainKeys": ["configMap", "name"], "configMap": {"name": "cm"}}]
            }}"#,
            expect![[r#"
                {
                  "spec": {
                    "volumes": [
                      {
                        "name": "data",
                        "configMap": {
                          "name": "cm"
                        }
                      },
                      {
                        "name": "tmp",
                        "emptyDir": {}
                      }
                    ]
                  }
                }"#]],
        );
    }

    #[test]
    fn smp_retain_keys_clears_the_old_strategy() {
        // `kubectl apply` switching a Deployment from RollingUpdate to Recreate.
        check(
            SMP,
            r#"{"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}"#,
            r#"{"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}}"#,
            expect![[r#"
                {
                  "spec": {
                    "strategy": {
                      "type": "Recreate"
                    }
                  }
                }"#]],
        );
    }

    #[test]
    fn smp_retain_keys_must_list_every_field_the_patch_sets() {
        check(
            SMP,
            r#"{"spec": {"strategy": {"type": "RollingUpdate"}}}"#,
            r#"{"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": {}}}}"#,
            expect![[
                r#"error: strategic merge patch at spec.strategy: field "rollingUpdate" is set by the patch but missing from $retainKeys"#
            ]],
        );
    }

    #[test]
    fn smp_patch_replace_replaces_a_map() {
        check(
            SMP,
            r#"{"spec": {"nodeSelector": {"disk": "ssd", "zone": "a"}, "replicas": 1}}"#,
            r#"{"spec": {"nodeSelector": {"$patch": "replace", "gpu": "true"}}}"#,
            expect![[r#"
                {
                  "spec": {
                    "nodeSelector": {
                      "gpu": "true"
                    },
                    "replicas": 1
                  }
                }"#]],
        );
    }

    #[test]
    fn smp_patch_delete_empties_a_map_and_patch_merge_is_the_default() {
        check(
            SMP,
            r#"{"spec": {"nodeSelector": {"disk": "ssd"}, "selector": {"app": "web"}}}"#,
            r#"{"spec": {"nodeSelector": {"$patch": "delete"}, "selector": {"$patch": "merge", "tier": "fe"}}}"#,
            expect![[r#"
                {
                  "spec": {
                    "nodeSelector": {},
                    "selector": {
                      "app": "web",
                      "tier": "fe"
                    }
                  }
                }"#]],
        );
    }

    #[test]
    fn smp_patch_replace_in_a_list_replaces_the_list() {
        check(
            SMP,
            r#"{"spec": {"volumes": [{"name": "a", "emptyDir": {}}, {"name": "b", "emptyDir": {}}]}}"#,
            r#"{"spec": {"volumes": [{"$patch": "replace"}, {"name": "c", "emptyDir": {}}]}}"#,
            expect![[r#"
                {
                  "spec": {
                    "volumes": [
                      {
                        "name": "c",
                        "emptyDir": {}
                      }
                    ]
                  }
                }"#]],
        );
    }

    #[test]
    fn smp_conditions_and_owner_references_merge_by_key() {
        check(
            SMP,
            r#"{
                "metadata": {"ownerReferences": [{"uid": "1", "kind": "ReplicaSet", "name": "rs"}]},
                "status": {"conditions": [
                    {"type": "Ready", "status": "False"}, {"type": "Scheduled", "status": "True"}
                ]}
            }"#,
            r#"{
                "metadata": {"ownerReferences": [{"uid": "1", "controller": true}]},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}
            }"#,
            expect![[r#"
                {
                  "metadata": {
                    "ownerReferences": [
                      {
                        "uid": "1",
                        "kind": "ReplicaSet",
                        "name": "rs",
                        "controller": true
                      }
                    ]
                  },
                  "status": {
                    "conditions": [
                      {
                        "type": "Ready",
                        "status": "True"
                      },
                      {
                        "type": "Scheduled",
                        "status": "True"
                      }
                    ]
                  }
                }"#]],
        );
    }

    #[test]
    fn smp_list_strategy_depends_on_kind_and_place() {
        // CertificateSigningRequest conditions have no patch merge key upstream.
        check(
            SMP,
            r#"{"kind": "CertificateSigningRequest", "status": {"conditions": [{"type": "Approved"}]}}"#,
            r#"{"status": {"conditions": [{"type": "Failed"}]}}"#,
            expect![[r#"
                {
                  "kind": "CertificateSigningRequest",
                  "status": {
                    "conditions": [
                      {
                        "type": "Failed"
                      }
                    ]
                  }
                }"#]],
        );
        // ServiceAccount `secrets` merges by name at the top level; its imagePullSecrets does not.
        check(
            SMP,
            r#"{"kind": "ServiceAccount", "secrets": [{"name": "a"}], "imagePullSecrets": [{"name": "x"}]}"#,
            r#"{"secrets": [{"name": "b"}], "imagePullSecrets": [{"name": "y"}]}"#,
            expect![[r#"
                {
                  "kind": "ServiceAccount",
                  "secrets": [
                    {
                      "name": "b"
                    },
                    {
                      "name": "a"
                    }
                  ],
                  "imagePullSecrets": [
                    {
                      "name": "y"
                    }
                  ]
                }"#]],
        );
    }

    #[test]
    fn smp_value_of_another_type_replaces_and_new_values_are_cleaned() {
        check(
            SMP,
            r#"{"spec": {"replicas": 1, "selector": "old", "template": {"spec": {}}}}"#,
            r#"{"spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web", "gone": null}},
                "template": {"spec": {"containers": [
                    {"name": "app", "$setElementOrder/env": [{"name": "A"}], "env": [{"name": "A", "value": "1"}]},
                    {"name": "old", "$patch": "delete"}
                ]}}
            }}"#,
            expect![[r#"
                {
                  "spec": {
                    "replicas": 3,
                    "selector": {
                      "matchLabels": {
                        "app": "web"
                      }
                    },
                    "template": {
                      "spec": {
                        "containers": [
                          {
                            "name": "app",
                            "env": [
                              {
                                "name": "A",
                                "value": "1"
                              }
                            ]
                          }
                        ]
                      }
                    }
                  }
                }"#]],
        );
    }

    // -- strategic merge patch: errors ---------------------------------------------------------

    #[test]
    fn smp_patch_must_be_an_object() {
        check(
            SMP,
            r#"{}"#,
            r#"[{"op": "add", "path": "/a", "value": 1}]"#,
            expect!["error: strategic merge patch must be a JSON object, got a list"],
        );
    }

    #[test]
    fn smp_unknown_directives_are_errors() {
        check(
            SMP,
            r#"{"spec": {}}"#,
            r#"{"spec": {"$frobnicate": true}}"#,
            expect![[
                r#"error: strategic merge patch at spec: unknown patch directive "$frobnicate" (expected $patch, $retainKeys, $setElementOrder/<field> or $deleteFromPrimitiveList/<field>)"#
            ]],
        );
        check(
            SMP,
            r#"{"spec": {"nodeSelector": {"a": "b"}}}"#,
            r#"{"spec": {"nodeSelector": {"$patch": "explode"}}}"#,
            expect![[
                r#"error: strategic merge patch at spec.nodeSelector: unknown $patch directive "explode" (expected "replace", "delete" or "merge")"#
            ]],
        );
        check(
            SMP,
            r#"{"spec": {"containers": [{"name": "a"}]}}"#,
            r#"{"spec": {"containers": [{"name": "a", "$patch": "merge"}]}}"#,
            expect![[
                r#"error: strategic merge patch at spec.containers: "$patch": "merge" is not supported in list elements (expected "replace" or "delete")"#
            ]],
        );
    }

    #[test]
    fn smp_merge_key_is_required() {
        check(
            SMP,
            r#"{"spec": {"template": {"spec": {"containers": [{"name": "app", "env": [{"name": "A"}]}]}}}}"#,
            r#"{"spec": {"template": {"spec": {"containers": [{"name": "app", "env": [{"value": "1"}]}]}}}}"#,
            expect![[
                r#"error: strategic merge patch at spec.template.spec.containers[name="app"].env: patch element 0 has no merge key "name""#
            ]],
        );
    }

    /// List ordering and list directives of a strategic merge patch against upstream's own
    /// cases (`k8s.io/apimachinery/pkg/util/strategicpatch/patch_test.go`, the apply half:
    /// the case's `current` or `original`, its `threeWay` or `twoWay` patch, and its `result` or
    /// `modified`). Upstream's test type has `mergingList` (merge by `name`), `mergingIntList`
    /// (merge) and `retainKeysMergingList` (merge,retainKeys by `name`); here they are a pod's
    /// `spec.containers`, `metadata.finalizers` and `spec.volumes`, which carry the same tags.
    ///
    /// The first cases pin what issue 18 hinged on: without `$setElementOrder`, the merged list
    /// takes the patch's order ("preserve the order from the patch in a merging list"), so a
    /// client that lists two containers out of the pod's order reorders them.
    #[test]
    fn smp_list_order_follows_upstream_cases() {
        // (upstream description, where the list lives, stored list, patch of the list's parent)
        let containers = "/spec/containers";
        let finalizers = "/metadata/finalizers";
        let volumes = "/spec/volumes";
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "preserve the order from the patch in a merging list",
                containers,
                r#"[{"name": "1"}, {"name": "2", "value": "b"}, {"name": "3"}]"#,
                r#"{"spec": {"containers": [{"name": "3", "value": "c"}, {"name": "1", "value": "a"}, {"name": "2", "other": "x"}]}}"#,
            ),
            (
                "preserve the order from the patch in a merging list 2",
                containers,
                r#"[{"name": "1"}, {"name": "2", "value": "b"}, {"name": "3"}]"#,
                r#"{"spec": {"containers": [{"name": "3", "value": "c"}, {"name": "1", "value": "a"}]}}"#,
            ),
            (
                "preserve the order from the patch in a merging int list",
                finalizers,
                r#"["1", "2", "3"]"#,
                r#"{"metadata": {"finalizers": ["3", "1", "2"]}}"#,
            ),
            (
                "preserve the order from the patch in a merging int list (2)",
                finalizers,
                r#"["1", "2", "3"]"#,
                r#"{"metadata": {"finalizers": ["3", "1"]}}"#,
            ),
            (
                "unique scalars when merging lists",
                finalizers,
                r#"["1", "2"]"#,
                r#"{"metadata": {"finalizers": ["2", "3"]}}"#,
            ),
            (
                "$setElementOrder contains item that is not present in the list to be merged",
                containers,
                r#"[{"name": "1"}, {"name": "3"}]"#,
                r#"{"spec": {"$setElementOrder/containers": [{"name": "3"}, {"name": "2"}, {"name": "1"}],
                    "containers": [{"name": "3", "value": "3"}, {"name": "1", "value": "1"}]}}"#,
            ),
            (
                "$setElementOrder contains item that is not present in the int list to be merged",
                finalizers,
                r#"["1", "3"]"#,
                r#"{"metadata": {"$setElementOrder/finalizers": ["3", "2", "1"]}}"#,
            ),
            (
                "should check if order in $setElementOrder and patch list match",
                containers,
                r#"[{"name": "1"}, {"name": "3"}, {"name": "2"}]"#,
                r#"{"spec": {"$setElementOrder/containers": [{"name": "1"}, {"name": "2"}, {"name": "3"}],
                    "containers": [{"name": "3", "value": "3"}, {"name": "1", "value": "1"}]}}"#,
            ),
            (
                "should check if order in $setElementOrder and patch int list match",
                finalizers,
                r#"["1", "3", "2"]"#,
                r#"{"metadata": {"$setElementOrder/finalizers": ["1", "2", "3"], "finalizers": ["3", "1"]}}"#,
            ),
            (
                "delete items in lists of scalars",
                finalizers,
                r#"["1", "2", "3", "4"]"#,
                r#"{"metadata": {"$setElementOrder/finalizers": ["1", "2"], "$deleteFromPrimitiveList/finalizers": ["3"]}}"#,
            ),
            (
                "add and delete items in lists of scalars",
                finalizers,
                r#"["1", "2", "3"]"#,
                r#"{"metadata": {"$setElementOrder/finalizers": ["1", "2", "4"],
                    "$deleteFromPrimitiveList/finalizers": ["3"], "finalizers": ["4"]}}"#,
            ),
            (
                "merge lists of maps",
                containers,
                r#"[{"name": "1", "other": "a"}, {"name": "2", "value": "2", "other": "b"}]"#,
                r#"{"spec": {"$setElementOrder/containers": [{"name": "4"}, {"name": "1"}, {"name": "2"}, {"name": "3"}],
                    "containers": [{"name": "4", "value": "4"}, {"name": "3", "value": "3"}]}}"#,
            ),
            (
                "merge lists of maps with conflict",
                containers,
                r#"[{"name": "1", "other": "a"}, {"name": "2", "value": "3", "other": "b"}]"#,
                r#"{"spec": {"$setElementOrder/containers": [{"name": "1"}, {"name": "2"}, {"name": "3"}],
                    "containers": [{"name": "2", "value": "2"}, {"name": "3", "value": "3"}]}}"#,
            ),
            (
                "delete all maps from merging list with conflict",
                containers,
                r#"[{"name": "1", "other": "a"}, {"name": "2", "other": "b"}]"#,
                r#"{"spec": {"containers": [{"name": "1", "$patch": "delete"}, {"name": "2", "$patch": "delete"}]}}"#,
            ),
            (
                "delete all items from merging list",
                containers,
                r#"[{"name": "1"}, {"name": "2"}]"#,
                r#"{"spec": {"containers": [{"$patch": "replace"}]}}"#,
            ),
            (
                "retainKeys list of maps clears a field",
                volumes,
                r#"[{"name": "bar"}, {"name": "foo", "value": "a", "other": "x"}]"#,
                r#"{"spec": {"$setElementOrder/volumes": [{"name": "bar"}, {"name": "foo"}],
                    "volumes": [{"$retainKeys": ["name", "value"], "name": "foo"}]}}"#,
            ),
            (
                "retainKeys list of maps clears a field with conflict",
                volumes,
                r#"[{"name": "bar"}, {"name": "foo", "value": "new", "other": "x"}]"#,
                r#"{"spec": {"$setElementOrder/volumes": [{"name": "bar"}, {"name": "foo"}],
                    "volumes": [{"$retainKeys": ["name", "value"], "name": "foo", "value": "modified"}]}}"#,
            ),
            (
                "add map and delete map from merging list",
                containers,
                r#"[{"name": "1"}, {"name": "2", "other": "b"}, {"name": "4", "other": "c"}]"#,
                r#"{"spec": {"$setElementOrder/containers": [{"name": "2"}, {"name": "3"}],
                    "containers": [{"name": "3"}, {"name": "1", "$patch": "delete"}]}}"#,
            ),
            (
                "add map and delete map from merging list with conflict",
                containers,
                r#"[{"name": "1", "other": "a"}, {"name": "4", "other": "c"}]"#,
                r#"{"spec": {"$setElementOrder/containers": [{"name": "2"}, {"name": "3"}],
                    "containers": [{"name": "2"}, {"name": "3"}, {"name": "1", "$patch": "delete"}]}}"#,
            ),
            (
                "add map to merging list by pointer",
                containers,
                r#"[{"name": "1", "other": "a"}, {"name": "3"}]"#,
                r#"{"spec": {"$setElementOrder/containers": [{"name": "1"}, {"name": "2"}],
                    "containers": [{"name": "2"}]}}"#,
            ),
            (
                "add map to merging list by pointer with conflict",
                containers,
                r#"[{"name": "3"}]"#,
                r#"{"spec": {"$setElementOrder/containers": [{"name": "1"}, {"name": "2"}],
                    "containers": [{"name": "1"}, {"name": "2"}]}}"#,
            ),
            (
                "add field to map in merging list nested in merging list with deletion conflict (2)",
                containers,
                r#"[{"name": "1", "other": "a", "env": [{"name": "2", "value": "2", "other": "d"}]},
                    {"name": "2", "other": "b"}]"#,
                r#"{"spec": {"$setElementOrder/containers": [{"name": "1"}, {"name": "2"}],
                    "containers": [{"$setElementOrder/env": [{"name": "2"}, {"name": "1"}],
                                    "name": "1", "env": [{"name": "1", "value": "1"}]}]}}"#,
            ),
            (
                "delete all duplicate entries in a merging list",
                containers,
                r#"[{"name": "1"}, {"name": "1"}, {"name": "2", "value": "a"}, {"name": "3"}, {"name": "3"}]"#,
                r#"{"spec": {"containers": [{"name": "1", "$patch": "delete"}, {"name": "1", "$patch": "delete"},
                    {"name": "3", "$patch": "delete"}, {"name": "3", "$patch": "delete"}]}}"#,
            ),
            // Issue 18's repro (`kubectl patch pod --type strategic`), then the same change as
            // the CloneSet controller now sends it.
            (
                "kinetic: two images listed out of the pod's order reorder the list",
                containers,
                r#"[{"name": "web", "image": "w1"}, {"name": "aux", "image": "a1"}]"#,
                r#"{"spec": {"containers": [{"name": "aux", "image": "X"}, {"name": "web", "image": "Y"}]}}"#,
            ),
            (
                "kinetic: the pod's order with $setElementOrder keeps it",
                containers,
                r#"[{"name": "web", "image": "w1"}, {"name": "aux", "image": "a1"}]"#,
                r#"{"spec": {"$setElementOrder/containers": [{"name": "web"}, {"name": "aux"}],
                    "containers": [{"name": "web", "image": "Y"}, {"name": "aux", "image": "X"}]}}"#,
            ),
        ];
        let mut out = String::new();
        for (description, at, stored, patch) in cases {
            let stored: Value = serde_json::from_str(stored).expect("stored list is JSON");
            let mut original = serde_json::json!({});
            let parts: Vec<&str> = at.trim_start_matches('/').split('/').collect();
            original[parts[0]][parts[1]] = stored;
            let patch: Value = serde_json::from_str(patch).expect("patch is JSON");
            let got = match strategic_merge_patch(&original, &patch) {
                Ok(result) => result.pointer(at).map_or("(absent)".to_owned(), Value::to_string),
                Err(error) => format!("error: {error}"),
            };
            out.push_str(&format!("{description}\n  {got}\n"));
        }
        expect![[r#"
            preserve the order from the patch in a merging list
              [{"name":"3","value":"c"},{"name":"1","value":"a"},{"name":"2","value":"b","other":"x"}]
            preserve the order from the patch in a merging list 2
              [{"name":"2","value":"b"},{"name":"3","value":"c"},{"name":"1","value":"a"}]
            preserve the order from the patch in a merging int list
              ["3","1","2"]
            preserve the order from the patch in a merging int list (2)
              ["2","3","1"]
            unique scalars when merging lists
              ["1","2","3"]
            $setElementOrder contains item that is not present in the list to be merged
              [{"name":"3","value":"3"},{"name":"1","value":"1"}]
            $setElementOrder contains item that is not present in the int list to be merged
              ["3","1"]
            should check if order in $setElementOrder and patch list match
              error: strategic merge patch at spec.containers: the patch list names its elements in another order than $setElementOrder
            should check if order in $setElementOrder and patch int list match
              error: strategic merge patch at metadata.finalizers: the patch list names its elements in another order than $setElementOrder
            delete items in lists of scalars
              ["1","2","4"]
            add and delete items in lists of scalars
              ["1","2","4"]
            merge lists of maps
              [{"name":"4","value":"4"},{"name":"1","other":"a"},{"name":"2","value":"2","other":"b"},{"name":"3","value":"3"}]
            merge lists of maps with conflict
              [{"name":"1","other":"a"},{"name":"2","value":"2","other":"b"},{"name":"3","value":"3"}]
            delete all maps from merging list with conflict
              []
            delete all items from merging list
              []
            retainKeys list of maps clears a field
              [{"name":"bar"},{"name":"foo","value":"a"}]
            retainKeys list of maps clears a field with conflict
              [{"name":"bar"},{"name":"foo","value":"modified"}]
            add map and delete map from merging list
              [{"name":"2","other":"b"},{"name":"4","other":"c"},{"name":"3"}]
            add map and delete map from merging list with conflict
              [{"name":"4","other":"c"},{"name":"2"},{"name":"3"}]
            add map to merging list by pointer
              [{"name":"1","other":"a"},{"name":"2"},{"name":"3"}]
            add map to merging list by pointer with conflict
              [{"name":"1"},{"name":"2"},{"name":"3"}]
            add field to map in merging list nested in merging list with deletion conflict (2)
              [{"name":"1","other":"a","env":[{"name":"2","value":"2","other":"d"},{"name":"1","value":"1"}]},{"name":"2","other":"b"}]
            delete all duplicate entries in a merging list
              [{"name":"2","value":"a"}]
            kinetic: two images listed out of the pod's order reorder the list
              [{"name":"aux","image":"X"},{"name":"web","image":"Y"}]
            kinetic: the pod's order with $setElementOrder keeps it
              [{"name":"web","image":"Y"},{"name":"aux","image":"X"}]
        "#]].assert_eq(&out);
    }

    // -- JSON patch ----------------------------------------------------------------------------

    #[test]
    fn json_patch_add_replace_remove() {
        check(
            JSON,
            r#"{"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 1, "args": ["x"]}}"#,
            r#"[
                {"op": "add", "path": "/metadata/labels/c", "value": "3"},
                {"op": "replace", "path": "/spec/replicas", "value": 5},
                {"op": "remove", "path": "/metadata/labels/a"},
                {"op": "add", "path": "/spec/args/-", "value": "y"},
                {"op": "test", "path": "/spec/replicas", "value": 5}
            ]"#,
            expect![[r#"
                {
                  "metadata": {
                    "labels": {
                      "c": "3",
                      "b": "2"
                    }
                  },
                  "spec": {
                    "replicas": 5,
                    "args": [
                      "x",
                      "y"
                    ]
                  }
                }"#]],
        );
    }

    #[test]
    fn json_patch_failures_name_the_operation() {
        check(
            JSON,
            r#"{"spec": {"replicas": 1}}"#,
            r#"[{"op": "test", "path": "/spec/replicas", "value": 1}, {"op": "test", "path": "/spec/replicas", "value": 2}]"#,
            expect![
                "error: json patch operation 1 (test /spec/replicas): test failed: the value at the path does not match"
            ],
        );
        check(
            JSON,
            r#"{"spec": {}}"#,
            r#"[{"op": "replace", "path": "/spec/foo", "value": 1}]"#,
            expect!["error: json patch operation 0 (replace /spec/foo): path not found"],
        );
        check(
            JSON,
            r#"{"spec": {}}"#,
            r#"[{"op": "move", "from": "/spec/nope", "path": "/spec/foo"}]"#,
            expect![
                "error: json patch operation 0 (move /spec/foo): from path /spec/nope not found"
            ],
        );
    }

    #[test]
    fn json_patch_malformed_operations() {
        check(
            JSON,
            r#"{}"#,
            r#"{"op": "add"}"#,
            expect!["error: json patch must be a list of operations, got an object"],
        );
        check(
            JSON,
            r#"{}"#,
            r#"[{"op": "frobnicate", "path": "/a"}]"#,
            expect![[
                r#"error: json patch operation 0: unknown op "frobnicate" (expected add, remove, replace, move, copy or test)"#
            ]],
        );
        check(
            JSON,
            r#"{}"#,
            r#"[{"op": "add", "path": "/a"}]"#,
            expect![[r#"error: json patch operation 0: add needs a "value""#]],
        );
        check(
            JSON,
            r#"{}"#,
            r#"[{"op": "remove", "path": "a"}]"#,
            expect![[
                r#"error: json patch operation 0: "path" "a" is not a JSON pointer (it must be empty or start with "/", and "~" may only appear as "~0" or "~1")"#
            ]],
        );
        check(
            JSON,
            r#"{}"#,
            r#"[{"op": "copy", "path": "/a"}]"#,
            expect![[r#"error: json patch operation 0: missing "from""#]],
        );
        check(
            JSON,
            r#"{}"#,
            r#"["add"]"#,
            expect![[
                r#"error: json patch operation 0: must be an object with "op" and "path", got a string"#
            ]],
        );
    }

    // -- JSON merge patch ----------------------------------------------------------------------

    #[test]
    fn merge_patch_nested_null_deletes_and_lists_replace() {
        check(
            MERGE,
            r#"{"metadata": {"labels": {"a": "1", "b": "2", "c": "3"}}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}}"#,
            r#"{"metadata": {"labels": {"a": null, "d": "4"}}, "spec": {"containers": [{"name": "c"}], "new": {"x": 1, "y": null}}}"#,
            expect![[r#"
                {
                  "metadata": {
                    "labels": {
                      "b": "2",
                      "c": "3",
                      "d": "4"
                    }
                  },
                  "spec": {
                    "containers": [
                      {
                        "name": "c"
                      }
                    ],
                    "new": {
                      "x": 1
                    }
                  }
                }"#]],
        );
    }

    #[test]
    fn merge_patch_must_be_an_object() {
        check(
            MERGE,
            r#"{"a": 1}"#,
            r#"[1, 2]"#,
            expect!["error: json merge patch must be a JSON object, got a list"],
        );
    }
}
