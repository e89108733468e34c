//! The OpenAPI documents kubectl reads: `/openapi/v3` (an index of group-versions), one OpenAPI
//! 3.0 document per group-version under `/openapi/v3/apis/<group>/<version>`, and the single
//! Swagger 2.0 document at `/openapi/v2`.
//!
//! The documents are shaped like kube-apiserver's so that stock kubectl works against them:
//!
//! - `kubectl explain` (`staging/src/k8s.io/kubectl/pkg/explain/v2`) looks up the resource's
//!   collection or item path (`/apis/apps/v1/namespaces/{namespace}/deployments`), reads the
//!   `x-kubernetes-group-version-kind` of one of its operations, and then finds the component
//!   schema whose `x-kubernetes-group-version-kind` list contains exactly that `{group, kind,
//!   version}` map. Fields that reference another schema are written as `allOf: [{$ref}]` with
//!   their own `description` beside it, as upstream does in OpenAPI 3.0 (where siblings of a
//!   `$ref` are ignored).
//! - kubectl's `QueryParamVerifierV3` (`staging/src/k8s.io/cli-runtime/pkg/resource/
//!   query_param_verifier_v3.go`) takes the first PATCH operation carrying the kind's
//!   `x-kubernetes-group-version-kind` and checks that its parameters include
//!   `fieldValidation`; only then does kubectl leave validation to the server. Every PATCH
//!   operation here therefore lists `dryRun`, `fieldManager`, `fieldValidation` and `force`.
//!
//! The schemas come from the caller (schemars output for built-in kinds, CRD `openAPIV3Schema`s
//! for custom resources) keyed by their definition name; `#/$defs/X` and `#/definitions/X`
//! references are rewritten to the document's own form.
//!
//! What it does not do: serve or hash the documents (the caller passes `hash_of`), encode them
//! as protobuf (kubectl asks for protobuf at `/openapi/v2`; the server decides how to answer),
//! or describe the deprecated `watch/` paths, `proxy`, `exec`, `log` and other connect-style
//! subresources.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// One resource as the OpenAPI documents describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceDoc {
    /// API group; empty for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    /// Resource name in URLs, such as `deployments`.
    pub plural: String,
    pub namespaced: bool,
    /// Subresources with their own paths. `status`, `scale`, `ephemeralcontainers` and
    /// `resize` are described; others are left out.
    pub subresources: Vec<String>,
    /// Definition name of the kind's schema, such as `io.k8s.api.apps.v1.Deployment`, or for a
    /// CRD the reversed group with version and kind (`dev.kinetic.v1.Widget`). The list kind's
    /// schema, if the caller has one, is expected at the same name with `List` appended.
    pub schema_name: String,
    /// Whether PATCH accepts strategic merge patches: built-in kinds do, custom resources do
    /// not (except their `scale` subresource). kubectl reads this from the document to pick
    /// the patch type of `apply`.
    pub strategic_merge: bool,
}

/// Definition names the operations refer to besides the resources' own schemas.
const STATUS_SCHEMA: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const DELETE_OPTIONS_SCHEMA: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const PATCH_SCHEMA: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const SCALE_SCHEMA: &str = "io.k8s.api.autoscaling.v1.Scale";

/// Prefixes under which callers' schemas may reference each other.
const REF_PREFIXES: &[&str] = &["#/$defs/", "#/definitions/", "#/components/schemas/"];

/// Media types a PATCH request body may have.
const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

/// Media types responses are offered in.
const RESPONSE_TYPES: &[&str] = &["application/json", "application/yaml"];

/// The discovery path of a group-version in the `/openapi/v3` index: `api/v1` for the core
/// group, `apis/<group>/<version>` otherwise.
pub fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

/// The `/openapi/v3` index: each group-version's path and the URL of its document, with the
/// `hash` query parameter clients use to cache it. `hash_of` receives the index key (`api/v1`,
/// `apis/apps/v1`) and returns the document's hash (upstream: uppercase hex SHA-512).
pub fn v3_root(group_versions: &[(String, String)], hash_of: impl Fn(&str) -> String) -> Value {
    let mut keys: Vec<String> =
        group_versions.iter().map(|(group, version)| group_version_path(group, version)).collect();
    keys.sort();
    keys.dedup();
    let mut paths = Map::new();
    for key in keys {
        let url = format!("/openapi/v3/{key}?hash={}", hash_of(&key));
        paths.insert(key, json!({ "serverRelativeURL": url }));
    }
    json!({ "paths": paths })
}

/// The OpenAPI 3.0 document of one group-version: the paths of its resources and the component
/// schemas they reach. Resources of other group-versions in `resources` are ignored.
pub fn v3_group_version(
    group: &str,
    version: &str,
    resources: &[ResourceDoc],
    schemas: &Map<String, Value>,
) -> Value {
    let resources: Vec<&ResourceDoc> =
        resources.iter().filter(|r| r.group == group && r.version == version).collect();
    let builder = Builder { flavor: Flavor::V3, schemas };
    let paths = builder.paths(&resources);

    let mut roots: Vec<String> = vec![STATUS_SCHEMA.into(), DELETE_OPTIONS_SCHEMA.into()];
    for r in &resources {
        roots.push(r.schema_name.clone());
        roots.push(format!("{}List", r.schema_name));
        if r.subresources.iter().any(|s| s == "scale") {
            roots.push(SCALE_SCHEMA.into());
        }
    }
    let names = reachable(schemas, roots);
    let mut components = builder.definitions(names, &resources);
    components.insert(PATCH_SCHEMA.into(), patch_schema());

    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": "unversioned" },
        "paths": paths,
        "components": { "schemas": sorted(components) },
    })
}

/// The Swagger 2.0 document at `/openapi/v2`: every resource's paths and every given schema
/// under `definitions`, with the same group-version-kind extensions as the v3 documents.
pub fn v2_document(resources: &[ResourceDoc], schemas: &Map<String, Value>) -> Value {
    let resources: Vec<&ResourceDoc> = resources.iter().collect();
    let builder = Builder { flavor: Flavor::V2, schemas };
    let paths = builder.paths(&resources);
    let mut definitions = builder.definitions(schemas.keys().cloned().collect(), &resources);
    definitions.insert(PATCH_SCHEMA.into(), patch_schema());
    json!({
        "swagger": "2.0",
        "info": { "title": "Kubernetes", "version": "unversioned" },
        "paths": paths,
        "definitions": sorted(definitions),
    })
}

fn patch_schema() -> Value {
    json!({
        "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.",
        "type": "object",
    })
}

fn sorted(map: Map<String, Value>) -> Map<String, Value> {
    // Go marshals maps with sorted keys; doing the same keeps documents (and hashes) stable.
    map.into_iter().collect::<BTreeMap<_, _>>().into_iter().collect()
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "kind": kind, "version": version })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    V2,
    V3,
}

impl Flavor {
    fn ref_prefix(self) -> &'static str {
        match self {
            Flavor::V2 => "#/definitions/",
            Flavor::V3 => "#/components/schemas/",
        }
    }
}

/// A query parameter of an operation.
#[derive(Debug)]
struct Param {
    name: &'static str,
    ty: &'static str,
    description: &'static str,
}

const PRETTY: Param =
    Param { name: "pretty", ty: "string", description: "If 'true', the output is pretty printed." };
const DRY_RUN: Param = Param {
    name: "dryRun",
    ty: "string",
    description: "When present, indicates that modifications should not be persisted. The only valid value is All.",
};
const FIELD_MANAGER: Param = Param {
    name: "fieldManager",
    ty: "string",
    description: "A name associated with the actor or entity that is making these changes.",
};
const FIELD_VALIDATION: Param = Param {
    name: "fieldValidation",
    ty: "string",
    description: "How the server treats unknown and duplicate fields in the request: Ignore, Warn or Strict.",
};
const FORCE: Param = Param {
    name: "force",
    ty: "boolean",
    description: "Force is going to \"force\" Apply requests: take over fields owned by other managers. Only for apply patches.",
};
const GRACE_PERIOD: Param = Param {
    name: "gracePeriodSeconds",
    ty: "integer",
    description: "The duration in seconds before the object should be deleted.",
};
const PROPAGATION_POLICY: Param = Param {
    name: "propagationPolicy",
    ty: "string",
    description: "Whether and how garbage collection is performed: Orphan, Background or Foreground.",
};
const ORPHAN_DEPENDENTS: Param = Param {
    name: "orphanDependents",
    ty: "boolean",
    description: "Deprecated: use propagationPolicy.",
};
const LIST_PARAMS: &[Param] = &[
    Param {
        name: "allowWatchBookmarks",
        ty: "boolean",
        description: "Requests watch events with type BOOKMARK.",
    },
    Param {
        name: "continue",
        ty: "string",
        description: "The continue token of a previous list call, to retrieve the next page.",
    },
    Param {
        name: "fieldSelector",
        ty: "string",
        description: "A selector to restrict the list of returned objects by their fields.",
    },
    Param {
        name: "labelSelector",
        ty: "string",
        description: "A selector to restrict the list of returned objects by their labels.",
    },
    Param {
        name: "limit",
        ty: "integer",
        description: "The maximum number of responses to return for a list call.",
    },
    Param {
        name: "resourceVersion",
        ty: "string",
        description: "Constrains which resource versions the request may be served from.",
    },
    Param {
        name: "resourceVersionMatch",
        ty: "string",
        description: "How resourceVersion is applied to list calls.",
    },
    Param {
        name: "sendInitialEvents",
        ty: "boolean",
        description: "Starts a watch with synthetic events for the current state.",
    },
    Param {
        name: "timeoutSeconds",
        ty: "integer",
        description: "Timeout for the list/watch call.",
    },
    Param {
        name: "watch",
        ty: "boolean",
        description: "Watch for changes to the described resources and return them as a stream.",
    },
];

/// What a request carries in its body.
#[derive(Debug, Clone)]
enum Body {
    /// An object of the named schema.
    Object(String),
    Patch,
    /// A patch without the strategic merge type (custom resources).
    PatchNoStrategic,
    DeleteOptions,
}

/// One operation before it is rendered for a flavor.
#[derive(Debug, Clone)]
struct Op {
    method: &'static str,
    action: &'static str,
    operation_id: String,
    description: String,
    gvk: Value,
    params: Vec<&'static Param>,
    body: Option<Body>,
    /// Schema of successful responses.
    response: String,
    codes: &'static [(&'static str, &'static str)],
}

const OK: &[(&str, &str)] = &[("200", "OK")];
const WRITE: &[(&str, &str)] = &[("200", "OK"), ("201", "Created")];
const CREATE: &[(&str, &str)] = &[("200", "OK"), ("201", "Created"), ("202", "Accepted")];
const DELETE: &[(&str, &str)] = &[("200", "OK"), ("202", "Accepted")];

const CREATE_PARAMS: &[&Param] = &[&DRY_RUN, &FIELD_MANAGER, &FIELD_VALIDATION];
const PATCH_PARAMS: &[&Param] = &[&DRY_RUN, &FIELD_MANAGER, &FIELD_VALIDATION, &FORCE];
const DELETE_PARAMS: &[&Param] =
    &[&DRY_RUN, &GRACE_PERIOD, &ORPHAN_DEPENDENTS, &PROPAGATION_POLICY];

/// The operations of one path, with the parameters every operation of the path shares.
struct PathOps {
    path: String,
    params: Vec<Value>,
    ops: Vec<Op>,
}

struct Builder<'a> {
    flavor: Flavor,
    schemas: &'a Map<String, Value>,
}

impl Builder<'_> {
    fn paths(&self, resources: &[&ResourceDoc]) -> Map<String, Value> {
        let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for resource in resources {
            let tag = tag(&resource.group, &resource.version);
            for PathOps { path, params, ops } in self.resource_paths(resource) {
                let item = paths.entry(path).or_default();
                item.entry("parameters").or_insert(Value::Array(params));
                for op in ops {
                    item.insert(op.method.into(), self.render(op, &tag));
                }
            }
        }
        paths
            .into_iter()
            .map(|(path, mut item)| {
                let mut ordered = Map::new();
                for key in ["parameters", "get", "put", "post", "delete", "patch"] {
                    if let Some(value) = item.remove(key) {
                        ordered.insert(key.into(), value);
                    }
                }
                (path, Value::Object(ordered))
            })
            .collect()
    }

    /// The collection, item, all-namespaces and subresource paths of one resource.
    fn resource_paths(&self, r: &ResourceDoc) -> Vec<PathOps> {
        let prefix = format!("/{}", group_version_path(&r.group, &r.version));
        let gv = gv_camel(&r.group, &r.version);
        let scope = if r.namespaced { "Namespaced" } else { "" };
        let kind = r.kind.as_str();
        let own_gvk = gvk(&r.group, &r.version, kind);
        let schema = r.schema_name.as_str();
        let list_schema = format!("{schema}List");
        let collection = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{prefix}/{}", r.plural)
        };
        let item = format!("{collection}/{{name}}");

        let mut collection_params = Vec::new();
        if r.namespaced {
            collection_params.push(self.path_param(
                "namespace",
                "object name and auth scope, such as for teams and projects",
            ));
        }
        collection_params.push(self.query_param(&PRETTY));
        let mut item_params = vec![self.path_param("name", &format!("name of the {kind}"))];
        item_params.extend(collection_params.iter().cloned());

        // Operation ids follow upstream: verb, group-version, scope, kind, subresource.
        let id = |verb: &str, suffix: &str| format!("{verb}{gv}{scope}{kind}{suffix}");
        let op = |method, action, operation_id: String, description: String| Op {
            method,
            action,
            operation_id,
            description,
            gvk: own_gvk.clone(),
            params: Vec::new(),
            body: None,
            response: schema.to_owned(),
            codes: OK,
        };
        let list = |operation_id| Op {
            params: LIST_PARAMS.iter().collect(),
            response: list_schema.clone(),
            ..op("get", "list", operation_id, format!("list or watch objects of kind {kind}"))
        };

        let mut out = vec![
            PathOps {
                path: collection.clone(),
                params: collection_params,
                ops: vec![
                    list(id("list", "")),
                    Op {
                        params: CREATE_PARAMS.to_vec(),
                        body: Some(Body::Object(schema.to_owned())),
                        codes: CREATE,
                        ..op("post", "post", id("create", ""), format!("create a {kind}"))
                    },
                    Op {
                        params: LIST_PARAMS.iter().chain(DELETE_PARAMS.iter().copied()).collect(),
                        body: Some(Body::DeleteOptions),
                        response: STATUS_SCHEMA.to_owned(),
                        ..op(
                            "delete",
                            "deletecollection",
                            format!("delete{gv}Collection{scope}{kind}"),
                            format!("delete collection of {kind}"),
                        )
                    },
                ],
            },
            PathOps {
                path: item.clone(),
                params: item_params.clone(),
                ops: vec![
                    op("get", "get", id("read", ""), format!("read the specified {kind}")),
                    Op {
                        params: CREATE_PARAMS.to_vec(),
                        body: Some(Body::Object(schema.to_owned())),
                        codes: WRITE,
                        ..op(
                            "put",
                            "put",
                            id("replace", ""),
                            format!("replace the specified {kind}"),
                        )
                    },
                    Op {
                        params: PATCH_PARAMS.to_vec(),
                        body: Some(if r.strategic_merge {
                            Body::Patch
                        } else {
                            Body::PatchNoStrategic
                        }),
                        codes: WRITE,
                        ..op(
                            "patch",
                            "patch",
                            id("patch", ""),
                            format!("partially update the specified {kind}"),
                        )
                    },
                    Op {
                        params: DELETE_PARAMS.to_vec(),
                        body: Some(Body::DeleteOptions),
                        response: STATUS_SCHEMA.to_owned(),
                        codes: DELETE,
                        ..op("delete", "delete", id("delete", ""), format!("delete a {kind}"))
                    },
                ],
            },
        ];
        if r.namespaced {
            out.push(PathOps {
                path: format!("{prefix}/{}", r.plural),
                params: vec![self.query_param(&PRETTY)],
                ops: vec![list(format!("list{gv}{kind}ForAllNamespaces"))],
            });
        }

        for sub in &r.subresources {
            let (suffix, sub_gvk, sub_schema) = match sub.as_str() {
                "status" => ("Status", own_gvk.clone(), schema),
                "scale" => ("Scale", gvk("autoscaling", "v1", "Scale"), SCALE_SCHEMA),
                "ephemeralcontainers" => ("EphemeralContainers", own_gvk.clone(), schema),
                "resize" => ("Resize", own_gvk.clone(), schema),
                _ => continue,
            };
            let sub_op = |method, verb: &str, description: String| Op {
                gvk: sub_gvk.clone(),
                response: sub_schema.to_owned(),
                ..op(method, method, id(verb, suffix), description)
            };
            out.push(PathOps {
                path: format!("{item}/{sub}"),
                params: item_params.clone(),
                ops: vec![
                    sub_op("get", "read", format!("read {sub} of the specified {kind}")),
                    Op {
                        params: CREATE_PARAMS.to_vec(),
                        body: Some(Body::Object(sub_schema.to_owned())),
                        codes: WRITE,
                        ..sub_op("put", "replace", format!("replace {sub} of the specified {kind}"))
                    },
                    Op {
                        params: PATCH_PARAMS.to_vec(),
                        body: Some(if r.strategic_merge || sub == "scale" {
                            Body::Patch
                        } else {
                            Body::PatchNoStrategic
                        }),
                        codes: WRITE,
                        ..sub_op(
                            "patch",
                            "patch",
                            format!("partially update {sub} of the specified {kind}"),
                        )
                    },
                ],
            });
        }
        out
    }

    /// A reference to a schema the document defines, or a plain object schema when the caller
    /// has none under that name (so that no reference dangles).
    fn schema_ref(&self, name: &str) -> Value {
        if self.schemas.contains_key(name) || name == PATCH_SCHEMA {
            json!({ "$ref": format!("{}{name}", self.flavor.ref_prefix()) })
        } else {
            json!({ "type": "object" })
        }
    }

    fn path_param(&self, name: &str, description: &str) -> Value {
        match self.flavor {
            Flavor::V3 => json!({
                "name": name,
                "in": "path",
                "description": description,
                "required": true,
                "schema": { "type": "string", "uniqueItems": true },
            }),
            Flavor::V2 => json!({
                "name": name,
                "in": "path",
                "description": description,
                "required": true,
                "type": "string",
                "uniqueItems": true,
            }),
        }
    }

    fn query_param(&self, param: &Param) -> Value {
        match self.flavor {
            Flavor::V3 => json!({
                "name": param.name,
                "in": "query",
                "description": param.description,
                "schema": { "type": param.ty, "uniqueItems": true },
            }),
            Flavor::V2 => json!({
                "name": param.name,
                "in": "query",
                "description": param.description,
                "type": param.ty,
                "uniqueItems": true,
            }),
        }
    }

    fn render(&self, op: Op, tag: &str) -> Value {
        let body_schema = op.body.as_ref().map(|body| match body {
            Body::Object(name) => self.schema_ref(name),
            Body::Patch | Body::PatchNoStrategic => self.schema_ref(PATCH_SCHEMA),
            Body::DeleteOptions => self.schema_ref(DELETE_OPTIONS_SCHEMA),
        });
        let body_types: &[&str] = match op.body {
            Some(Body::Patch) => PATCH_TYPES,
            Some(Body::PatchNoStrategic) => &PATCH_TYPES[..3],
            _ => &["*/*"],
        };
        let response = self.schema_ref(&op.response);
        let mut params: Vec<Value> = op.params.iter().map(|p| self.query_param(p)).collect();

        let mut out = Map::new();
        out.insert("tags".into(), json!([tag]));
        out.insert("description".into(), Value::String(op.description));
        out.insert("operationId".into(), Value::String(op.operation_id));
        match self.flavor {
            Flavor::V3 => {
                if !params.is_empty() {
                    out.insert("parameters".into(), Value::Array(params));
                }
                if let Some(schema) = body_schema {
                    let content: Map<String, Value> = body_types
                        .iter()
                        .map(|t| ((*t).to_owned(), json!({ "schema": schema })))
                        .collect();
                    let required = !matches!(op.body, Some(Body::DeleteOptions));
                    let mut request = Map::new();
                    request.insert("content".into(), Value::Object(content));
                    if required {
                        request.insert("required".into(), Value::Bool(true));
                    }
                    out.insert("requestBody".into(), Value::Object(request));
                }
                let mut responses = Map::new();
                for (code, description) in op.codes {
                    let content: Map<String, Value> = RESPONSE_TYPES
                        .iter()
                        .map(|t| ((*t).to_owned(), json!({ "schema": response })))
                        .collect();
                    responses.insert(
                        (*code).to_owned(),
                        json!({ "description": description, "content": content }),
                    );
                }
                responses.insert("401".into(), json!({ "description": "Unauthorized" }));
                out.insert("responses".into(), Value::Object(responses));
            }
            Flavor::V2 => {
                if op.body.is_some() {
                    out.insert("consumes".into(), json!(body_types));
                }
                out.insert("produces".into(), json!(RESPONSE_TYPES));
                out.insert("schemes".into(), json!(["https"]));
                if let Some(schema) = body_schema {
                    let required = !matches!(op.body, Some(Body::DeleteOptions));
                    params.insert(
                        0,
                        json!({ "name": "body", "in": "body", "required": required, "schema": schema }),
                    );
                }
                if !params.is_empty() {
                    out.insert("parameters".into(), Value::Array(params));
                }
                let mut responses = Map::new();
                for (code, description) in op.codes {
                    responses.insert(
                        (*code).to_owned(),
                        json!({ "description": description, "schema": response }),
                    );
                }
                responses.insert("401".into(), json!({ "description": "Unauthorized" }));
                out.insert("responses".into(), Value::Object(responses));
            }
        }
        out.insert("x-kubernetes-action".into(), Value::String(op.action.to_owned()));
        out.insert("x-kubernetes-group-version-kind".into(), op.gvk);
        Value::Object(out)
    }

    /// The named schemas with references rewritten for the flavor, and each resource's kind
    /// (and list kind) tagged with `x-kubernetes-group-version-kind`.
    fn definitions(&self, names: Vec<String>, resources: &[&ResourceDoc]) -> Map<String, Value> {
        let mut out = Map::new();
        for name in names {
            if let Some(schema) = self.schemas.get(&name) {
                out.insert(name, rewrite(schema, self.flavor));
            }
        }
        let mut tags: Vec<(String, Value)> = Vec::new();
        for r in resources {
            tags.push((r.schema_name.clone(), gvk(&r.group, &r.version, &r.kind)));
            tags.push((
                format!("{}List", r.schema_name),
                gvk(&r.group, &r.version, &format!("{}List", r.kind)),
            ));
            if r.subresources.iter().any(|s| s == "scale") {
                tags.push((SCALE_SCHEMA.to_owned(), gvk("autoscaling", "v1", "Scale")));
            }
        }
        for (name, gvk) in tags {
            let Some(Value::Object(schema)) = out.get_mut(&name) else { continue };
            let list = schema
                .entry("x-kubernetes-group-version-kind")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = list
                && !list.contains(&gvk)
            {
                list.push(gvk);
            }
        }
        out
    }
}

/// `CoreV1`, `AppsV1`, `RbacAuthorizationV1`, `StableExampleComV1`: the group-version part of
/// upstream operation ids.
fn gv_camel(group: &str, version: &str) -> String {
    let group =
        if group.is_empty() { "core" } else { group.strip_suffix(".k8s.io").unwrap_or(group) };
    let mut out: String = group.split(['.', '-', '_']).map(capitalize).collect();
    out.push_str(&capitalize(version));
    out
}

/// `core_v1`, `apps_v1`, `rbacAuthorization_v1`: upstream's operation tags.
fn tag(group: &str, version: &str) -> String {
    let camel = gv_camel(group, "");
    let mut chars = camel.chars();
    let head: String = chars.next().map(|c| c.to_lowercase().collect()).unwrap_or_default();
    format!("{head}{}_{version}", chars.as_str())
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The definition name a `$ref` points at, if it is a local definition reference.
fn ref_name(reference: &str) -> Option<&str> {
    REF_PREFIXES.iter().find_map(|prefix| reference.strip_prefix(prefix))
}

/// Keywords whose value is one schema.
const SCHEMA_KEYWORDS: &[&str] =
    &["additionalProperties", "items", "not", "additionalItems", "contains", "propertyNames"];
/// Keywords whose value is a list of schemas.
const SCHEMA_LIST_KEYWORDS: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];
/// Keywords whose value maps names to schemas.
const SCHEMA_MAP_KEYWORDS: &[&str] = &["properties", "patternProperties"];

/// Rewrites every `$ref` in a schema for the flavor, walking only where schemas can occur (so
/// a property that happens to be named `$ref`, or a `default` value, is left alone). For OpenAPI
/// 3.0 a `$ref` with sibling keys becomes `allOf: [{$ref}]` beside those keys, as upstream
/// writes it. `$schema` and nested definition maps are dropped.
fn rewrite(schema: &Value, flavor: Flavor) -> Value {
    let Value::Object(map) = schema else { return schema.clone() };
    let mut out = Map::new();
    for (key, value) in map {
        let key = key.as_str();
        let rewritten = match (key, value) {
            ("$schema" | "$defs" | "definitions", _) => continue,
            ("$ref", Value::String(reference)) => match ref_name(reference) {
                Some(name) => Value::String(format!("{}{name}", flavor.ref_prefix())),
                None => value.clone(),
            },
            (k, Value::Array(list)) if SCHEMA_LIST_KEYWORDS.contains(&k) || k == "items" => {
                Value::Array(list.iter().map(|s| rewrite(s, flavor)).collect())
            }
            (k, Value::Object(_)) if SCHEMA_KEYWORDS.contains(&k) => rewrite(value, flavor),
            (k, Value::Object(props)) if SCHEMA_MAP_KEYWORDS.contains(&k) => Value::Object(
                props.iter().map(|(name, s)| (name.clone(), rewrite(s, flavor))).collect(),
            ),
            _ => value.clone(),
        };
        out.insert(key.to_owned(), rewritten);
    }
    if flavor == Flavor::V3 && out.len() > 1 && out.get("$ref").is_some_and(Value::is_string) {
        // Keep the key order, putting `allOf` where `$ref` was.
        let mut wrapped = Map::new();
        for (key, value) in out {
            if key == "$ref" {
                let mut all_of = vec![json!({ "$ref": value })];
                if let Some(Value::Array(existing)) = map.get("allOf") {
                    all_of.extend(existing.iter().map(|s| rewrite(s, flavor)));
                }
                wrapped.insert("allOf".into(), Value::Array(all_of));
            } else if key != "allOf" {
                wrapped.insert(key, value);
            }
        }
        return Value::Object(wrapped);
    }
    Value::Object(out)
}

/// Collects the definition names a schema references, walking like [`rewrite`].
fn collect_refs<'v>(schema: &'v Value, out: &mut Vec<&'v str>) {
    let Value::Object(map) = schema else { return };
    for (key, value) in map {
        match (key.as_str(), value) {
            ("$ref", Value::String(reference)) => out.extend(ref_name(reference)),
            (k, Value::Array(list)) if SCHEMA_LIST_KEYWORDS.contains(&k) || k == "items" => {
                list.iter().for_each(|s| collect_refs(s, out));
            }
            (k, Value::Object(_)) if SCHEMA_KEYWORDS.contains(&k) => collect_refs(value, out),
            (k, Value::Object(props)) if SCHEMA_MAP_KEYWORDS.contains(&k) => {
                props.values().for_each(|s| collect_refs(s, out));
            }
            _ => {}
        }
    }
}

/// The given roots that exist in `schemas` and every definition they reach, sorted.
fn reachable(schemas: &Map<String, Value>, roots: Vec<String>) -> Vec<String> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut queue: Vec<String> = roots;
    while let Some(name) = queue.pop() {
        if seen.contains(&name) {
            continue;
        }
        let Some(schema) = schemas.get(&name) else { continue };
        let mut refs = Vec::new();
        collect_refs(schema, &mut refs);
        queue.extend(refs.into_iter().map(str::to_owned));
        seen.insert(name);
    }
    seen.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};
    use serde_json::{Map, Value, json};

    use super::{ResourceDoc, v2_document, v3_group_version, v3_root};

    fn resource(
        group: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
        subs: &[&str],
    ) -> ResourceDoc {
        let schema_group = match group {
            "" => "core".to_owned(),
            "apps" => "apps".to_owned(),
            other => other.split('.').rev().collect::<Vec<_>>().join("."),
        };
        let schema_name = if group.is_empty() || group == "apps" {
            format!("io.k8s.api.{schema_group}.v1.{kind}")
        } else {
            format!("{schema_group}.v1.{kind}")
        };
        ResourceDoc {
            group: group.into(),
            version: "v1".into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
            subresources: subs.iter().map(|s| (*s).to_owned()).collect(),
            schema_name,
            strategic_merge: group.is_empty() || group == "apps",
        }
    }

    fn resources() -> Vec<ResourceDoc> {
        vec![
            resource("apps", "Deployment", "deployments", true, &["status", "scale"]),
            resource("", "Namespace", "namespaces", false, &["status"]),
            resource("kinetic.dev", "Widget", "widgets", true, &[]),
        ]
    }

    /// Schemas as schemars writes them: `#/$defs/` references with sibling descriptions.
    fn schemas() -> Map<String, Value> {
        let schemas = json!({
            "io.k8s.api.apps.v1.Deployment": {
                "description": "Deployment enables declarative updates for Pods and ReplicaSets.",
                "type": "object",
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {
                        "$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
                        "description": "Standard object's metadata."
                    },
                    "spec": {
                        "$ref": "#/$defs/io.k8s.api.apps.v1.DeploymentSpec",
                        "description": "Specification of the desired behavior of the Deployment."
                    }
                }
            },
            "io.k8s.api.apps.v1.DeploymentList": {
                "type": "object",
                "properties": {
                    "items": {"type": "array", "items": {"$ref": "#/$defs/io.k8s.api.apps.v1.Deployment"}}
                }
            },
            "io.k8s.api.apps.v1.DeploymentSpec": {
                "type": "object",
                "properties": {
                    "replicas": {"description": "Number of desired pods.", "type": "integer", "format": "int32"},
                    "strategy": {"$ref": "#/$defs/io.k8s.api.apps.v1.DeploymentStrategy"}
                }
            },
            "io.k8s.api.apps.v1.DeploymentStrategy": {
                "type": "object",
                "properties": {"type": {"type": "string", "enum": ["Recreate", "RollingUpdate"]}}
            },
            "io.k8s.api.autoscaling.v1.Scale": {
                "type": "object",
                "properties": {"spec": {"type": "object", "properties": {"replicas": {"type": "integer"}}}}
            },
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": {
                "type": "object",
                "properties": {"name": {"type": "string"}}
            },
            "io.k8s.apimachinery.pkg.apis.meta.v1.Status": {"type": "object"},
            "io.k8s.api.core.v1.Namespace": {
                "type": "object",
                "properties": {
                    "metadata": {"$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
                }
            },
            "dev.kinetic.v1.Widget": {
                "type": "object",
                "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}
                }
            }
        });
        match schemas {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    /// One line per operation: path, method, action, kind and query parameter names.
    fn summarize_paths(doc: &Value) -> String {
        let mut out = String::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            let path_params: Vec<&str> = item["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["name"].as_str())
                .collect();
            out.push_str(&format!("{path} [{}]\n", path_params.join(" ")));
            for (method, op) in item.as_object().into_iter().flatten() {
                if method == "parameters" {
                    continue;
                }
                let gvk = &op["x-kubernetes-group-version-kind"];
                let params: Vec<&str> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "query")
                    .filter_map(|p| p["name"].as_str())
                    .filter(|n| {
                        matches!(*n, "dryRun" | "fieldManager" | "fieldValidation" | "force")
                    })
                    .collect();
                out.push_str(&format!(
                    "  {method} {} {} {}/{}/{} {}\n",
                    op["operationId"].as_str().unwrap_or("-"),
                    op["x-kubernetes-action"].as_str().unwrap_or("-"),
                    gvk["group"].as_str().unwrap_or("-"),
                    gvk["version"].as_str().unwrap_or("-"),
                    gvk["kind"].as_str().unwrap_or("-"),
                    params.join(","),
                ));
            }
        }
        out
    }

    fn check(actual: &str, expect: Expect) {
        expect.assert_eq(actual);
    }

    #[test]
    fn v3_root_lists_sorted_group_versions_with_hashes() {
        let gvs = [
            ("apps".to_owned(), "v1".to_owned()),
            (String::new(), "v1".to_owned()),
            ("apps".to_owned(), "v1".to_owned()),
        ];
        let root = v3_root(&gvs, |path| format!("HASH-{}", path.len()));
        check(
            &serde_json::to_string_pretty(&root).expect("print"),
            expect![[r#"
                {
                  "paths": {
                    "api/v1": {
                      "serverRelativeURL": "/openapi/v3/api/v1?hash=HASH-6"
                    },
                    "apis/apps/v1": {
                      "serverRelativeURL": "/openapi/v3/apis/apps/v1?hash=HASH-12"
                    }
                  }
                }"#]],
        );
    }

    #[test]
    fn v3_paths_carry_gvk_action_and_patch_parameters() {
        let doc = v3_group_version("apps", "v1", &resources(), &schemas());
        check(
            &summarize_paths(&doc),
            expect![[r#"
            /apis/apps/v1/deployments [pretty]
              get listAppsV1DeploymentForAllNamespaces list apps/v1/Deployment 
            /apis/apps/v1/namespaces/{namespace}/deployments [namespace pretty]
              get listAppsV1NamespacedDeployment list apps/v1/Deployment 
              post createAppsV1NamespacedDeployment post apps/v1/Deployment dryRun,fieldManager,fieldValidation
              delete deleteAppsV1CollectionNamespacedDeployment deletecollection apps/v1/Deployment dryRun
            /apis/apps/v1/namespaces/{namespace}/deployments/{name} [name namespace pretty]
              get readAppsV1NamespacedDeployment get apps/v1/Deployment 
              put replaceAppsV1NamespacedDeployment put apps/v1/Deployment dryRun,fieldManager,fieldValidation
              delete deleteAppsV1NamespacedDeployment delete apps/v1/Deployment dryRun
              patch patchAppsV1NamespacedDeployment patch apps/v1/Deployment dryRun,fieldManager,fieldValidation,force
            /apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale [name namespace pretty]
              get readAppsV1NamespacedDeploymentScale get autoscaling/v1/Scale 
              put replaceAppsV1NamespacedDeploymentScale put autoscaling/v1/Scale dryRun,fieldManager,fieldValidation
              patch patchAppsV1NamespacedDeploymentScale patch autoscaling/v1/Scale dryRun,fieldManager,fieldValidation,force
            /apis/apps/v1/namespaces/{namespace}/deployments/{name}/status [name namespace pretty]
              get readAppsV1NamespacedDeploymentStatus get apps/v1/Deployment 
              put replaceAppsV1NamespacedDeploymentStatus put apps/v1/Deployment dryRun,fieldManager,fieldValidation
              patch patchAppsV1NamespacedDeploymentStatus patch apps/v1/Deployment dryRun,fieldManager,fieldValidation,force
        "#]],
        );
        assert_eq!(doc["openapi"], "3.0.0");
    }

    #[test]
    fn v3_core_and_cluster_scoped_paths() {
        let doc = v3_group_version("", "v1", &resources(), &schemas());
        check(
            &summarize_paths(&doc),
            expect![[r#"
            /api/v1/namespaces [pretty]
              get listCoreV1Namespace list /v1/Namespace 
              post createCoreV1Namespace post /v1/Namespace dryRun,fieldManager,fieldValidation
              delete deleteCoreV1CollectionNamespace deletecollection /v1/Namespace dryRun
            /api/v1/namespaces/{name} [name pretty]
              get readCoreV1Namespace get /v1/Namespace 
              put replaceCoreV1Namespace put /v1/Namespace dryRun,fieldManager,fieldValidation
              delete deleteCoreV1Namespace delete /v1/Namespace dryRun
              patch patchCoreV1Namespace patch /v1/Namespace dryRun,fieldManager,fieldValidation,force
            /api/v1/namespaces/{name}/status [name pretty]
              get readCoreV1NamespaceStatus get /v1/Namespace 
              put replaceCoreV1NamespaceStatus put /v1/Namespace dryRun,fieldManager,fieldValidation
              patch patchCoreV1NamespaceStatus patch /v1/Namespace dryRun,fieldManager,fieldValidation,force
        "#]],
        );
        let op = &doc["paths"]["/api/v1/namespaces/{name}"]["patch"];
        check(&serde_json::to_string(&op["tags"]).expect("print"), expect![[r#"["core_v1"]"#]]);
    }

    #[test]
    fn v3_components_are_reachable_rewritten_and_tagged() {
        let doc = v3_group_version("apps", "v1", &resources(), &schemas());
        let components = &doc["components"]["schemas"];
        let names: Vec<&String> =
            components.as_object().into_iter().flatten().map(|(k, _)| k).collect();
        check(
            &format!("{names:#?}"),
            expect![[r#"
            [
                "io.k8s.api.apps.v1.Deployment",
                "io.k8s.api.apps.v1.DeploymentList",
                "io.k8s.api.apps.v1.DeploymentSpec",
                "io.k8s.api.apps.v1.DeploymentStrategy",
                "io.k8s.api.autoscaling.v1.Scale",
                "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
                "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
                "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
            ]"#]],
        );
        check(
            &serde_json::to_string_pretty(&components["io.k8s.api.apps.v1.Deployment"])
                .expect("print"),
            expect![[r##"
                {
                  "description": "Deployment enables declarative updates for Pods and ReplicaSets.",
                  "type": "object",
                  "properties": {
                    "apiVersion": {
                      "type": "string"
                    },
                    "kind": {
                      "type": "string"
                    },
                    "metadata": {
                      "allOf": [
                        {
                          "$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
                        }
                      ],
                      "description": "Standard object's metadata."
                    },
                    "spec": {
                      "allOf": [
                        {
                          "$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
                        }
                      ],
                      "description": "Specification of the desired behavior of the Deployment."
                    }
                  },
                  "x-kubernetes-group-version-kind": [
                    {
                      "group": "apps",
                      "kind": "Deployment",
                      "version": "v1"
                    }
                  ]
                }"##]],
        );
        check(
            &serde_json::to_string(&components["io.k8s.api.apps.v1.DeploymentList"])
                .expect("print"),
            expect![[
                r##"{"type":"object","properties":{"items":{"type":"array","items":{"$ref":"#/components/schemas/io.k8s.api.apps.v1.Deployment"}}},"x-kubernetes-group-version-kind":[{"group":"apps","kind":"DeploymentList","version":"v1"}]}"##
            ]],
        );
        let text = doc.to_string();
        assert!(!text.contains("#/$defs/"), "a $defs reference survived: {text}");
    }

    /// kubectl explain's lookup (`explain/v2/templates/plaintext.tmpl`): the GVK from the
    /// resource's paths, the component carrying that GVK, then the field path through `$ref`s
    /// and `allOf`s. Returns the field's type guess and description.
    fn explain(doc: &Value, group: &str, resource: &str, fields: &[&str]) -> Option<String> {
        let prefix = if group.is_empty() { "/api".to_owned() } else { format!("/apis/{group}") };
        let searches = [
            format!("{prefix}/v1/{resource}"),
            format!("{prefix}/v1/{resource}/{{name}}"),
            format!("{prefix}/v1/namespaces/{{namespace}}/{resource}"),
            format!("{prefix}/v1/namespaces/{{namespace}}/{resource}/{{name}}"),
        ];
        let gvk = searches.iter().find_map(|path| {
            let item = doc["paths"].get(path)?;
            ["get", "post", "put", "patch", "delete"]
                .iter()
                .find_map(|m| item.get(*m)?.get("x-kubernetes-group-version-kind"))
        })?;
        let lookup = |schema: &Value| -> Option<Value> {
            let reference = schema.get("$ref").and_then(Value::as_str)?;
            let name = reference.strip_prefix("#/components/schemas/")?;
            doc["components"]["schemas"].get(name).cloned()
        };
        let resolve = |schema: &Value| lookup(schema).unwrap_or_else(|| schema.clone());
        let mut schema = doc["components"]["schemas"]
            .as_object()?
            .values()
            .find(|s| {
                s["x-kubernetes-group-version-kind"].as_array().is_some_and(|l| l.contains(gvk))
            })?
            .clone();
        let mut description = String::new();
        for field in fields {
            let mut current = resolve(&schema);
            if current.get("properties").is_none()
                && let Some(first) = current["allOf"].get(0)
            {
                current = resolve(first);
            }
            schema = current["properties"].get(*field)?.clone();
            description = schema["description"].as_str().unwrap_or("<no description>").to_owned();
        }
        let target = match schema["allOf"].get(0) {
            Some(first) => first.clone(),
            None => schema.clone(),
        };
        let ty = match target.get("$ref").and_then(Value::as_str) {
            Some(r) => r.rsplit('.').next().unwrap_or("Object").to_owned(),
            None => target["type"].as_str().unwrap_or("Object").to_owned(),
        };
        Some(format!("{} <{ty}>: {description}", fields.join(".")))
    }

    #[test]
    fn kubectl_explain_finds_kinds_and_fields() {
        let apps = v3_group_version("apps", "v1", &resources(), &schemas());
        let kinetic = v3_group_version("kinetic.dev", "v1", &resources(), &schemas());
        let lines = [
            explain(&apps, "apps", "deployments", &["spec"]),
            explain(&apps, "apps", "deployments", &["spec", "replicas"]),
            explain(&apps, "apps", "deployments", &["spec", "strategy", "type"]),
            explain(&kinetic, "kinetic.dev", "widgets", &["spec", "size"]),
            explain(&apps, "apps", "statefulsets", &["spec"]),
        ];
        check(
            &format!("{lines:#?}"),
            expect![[r#"
            [
                Some(
                    "spec <DeploymentSpec>: Specification of the desired behavior of the Deployment.",
                ),
                Some(
                    "spec.replicas <integer>: Number of desired pods.",
                ),
                Some(
                    "spec.strategy.type <string>: <no description>",
                ),
                Some(
                    "spec.size <integer>: <no description>",
                ),
                None,
            ]"#]],
        );
    }

    /// kubectl's `supportsQueryParamV3`: the first PATCH operation with the GVK decides.
    fn supports_field_validation(doc: &Value, gvk: &Value) -> bool {
        let Some(paths) = doc["paths"].as_object() else { return false };
        let patches: Vec<&Value> = paths
            .values()
            .filter_map(|item| item.get("patch"))
            .filter(|op| &op["x-kubernetes-group-version-kind"] == gvk)
            .collect();
        !patches.is_empty()
            && patches.iter().all(|op| {
                op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == "fieldValidation"))
            })
    }

    #[test]
    fn kubectl_sees_server_side_field_validation() {
        let apps = v3_group_version("apps", "v1", &resources(), &schemas());
        let core = v3_group_version("", "v1", &resources(), &schemas());
        let kinetic = v3_group_version("kinetic.dev", "v1", &resources(), &schemas());
        let verdicts = [
            supports_field_validation(
                &apps,
                &json!({"group": "apps", "version": "v1", "kind": "Deployment"}),
            ),
            supports_field_validation(
                &core,
                &json!({"group": "", "version": "v1", "kind": "Namespace"}),
            ),
            supports_field_validation(
                &kinetic,
                &json!({"group": "kinetic.dev", "version": "v1", "kind": "Widget"}),
            ),
            supports_field_validation(
                &apps,
                &json!({"group": "apps", "version": "v1", "kind": "Widget"}),
            ),
        ];
        check(&format!("{verdicts:?}"), expect!["[true, true, true, false]"]);
    }

    #[test]
    fn v2_document_uses_definitions_and_body_parameters() {
        let doc = v2_document(&resources(), &schemas());
        assert_eq!(doc["swagger"], "2.0");
        let definitions = doc["definitions"].as_object().map(|d| d.len());
        check(&format!("{definitions:?}"), expect!["Some(10)"]);
        check(
            &serde_json::to_string_pretty(
                &doc["definitions"]["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"],
            )
            .expect("print"),
            expect![[r##"
                {
                  "$ref": "#/definitions/io.k8s.api.apps.v1.DeploymentSpec",
                  "description": "Specification of the desired behavior of the Deployment."
                }"##]],
        );
        check(
            &serde_json::to_string_pretty(
                &doc["definitions"]["dev.kinetic.v1.Widget"]["x-kubernetes-group-version-kind"],
            )
            .expect("print"),
            expect![[r#"
                [
                  {
                    "group": "kinetic.dev",
                    "kind": "Widget",
                    "version": "v1"
                  }
                ]"#]],
        );
        let patch =
            &doc["paths"]["/apis/kinetic.dev/v1/namespaces/{namespace}/widgets/{name}"]["patch"];
        check(
            &serde_json::to_string_pretty(patch).expect("print"),
            expect![[r##"
                {
                  "tags": [
                    "kineticDev_v1"
                  ],
                  "description": "partially update the specified Widget",
                  "operationId": "patchKineticDevV1NamespacedWidget",
                  "consumes": [
                    "application/apply-patch+yaml",
                    "application/json-patch+json",
                    "application/merge-patch+json"
                  ],
                  "produces": [
                    "application/json",
                    "application/yaml"
                  ],
                  "schemes": [
                    "https"
                  ],
                  "parameters": [
                    {
                      "name": "body",
                      "in": "body",
                      "required": true,
                      "schema": {
                        "$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"
                      }
                    },
                    {
                      "name": "dryRun",
                      "in": "query",
                      "description": "When present, indicates that modifications should not be persisted. The only valid value is All.",
                      "type": "string",
                      "uniqueItems": true
                    },
                    {
                      "name": "fieldManager",
                      "in": "query",
                      "description": "A name associated with the actor or entity that is making these changes.",
                      "type": "string",
                      "uniqueItems": true
                    },
                    {
                      "name": "fieldValidation",
                      "in": "query",
                      "description": "How the server treats unknown and duplicate fields in the request: Ignore, Warn or Strict.",
                      "type": "string",
                      "uniqueItems": true
                    },
                    {
                      "name": "force",
                      "in": "query",
                      "description": "Force is going to \"force\" Apply requests: take over fields owned by other managers. Only for apply patches.",
                      "type": "boolean",
                      "uniqueItems": true
                    }
                  ],
                  "responses": {
                    "200": {
                      "description": "OK",
                      "schema": {
                        "$ref": "#/definitions/dev.kinetic.v1.Widget"
                      }
                    },
                    "201": {
                      "description": "Created",
                      "schema": {
                        "$ref": "#/definitions/dev.kinetic.v1.Widget"
                      }
                    },
                    "401": {
                      "description": "Unauthorized"
                    }
                  },
                  "x-kubernetes-action": "patch",
                  "x-kubernetes-group-version-kind": {
                    "group": "kinetic.dev",
                    "kind": "Widget",
                    "version": "v1"
                  }
                }"##]],
        );
        assert!(!doc.to_string().contains("#/$defs/"));
    }

    #[test]
    fn v3_patch_operation_shape() {
        let doc = v3_group_version("kinetic.dev", "v1", &resources(), &schemas());
        let patch =
            &doc["paths"]["/apis/kinetic.dev/v1/namespaces/{namespace}/widgets/{name}"]["patch"];
        let mut shape = patch.clone();
        // The parameters are covered elsewhere; keep this snapshot about bodies and responses.
        if let Some(op) = shape.as_object_mut() {
            op.shift_remove("parameters");
        }
        check(
            &serde_json::to_string_pretty(&shape).expect("print"),
            expect![[r##"
                {
                  "tags": [
                    "kineticDev_v1"
                  ],
                  "description": "partially update the specified Widget",
                  "operationId": "patchKineticDevV1NamespacedWidget",
                  "requestBody": {
                    "content": {
                      "application/apply-patch+yaml": {
                        "schema": {
                          "$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"
                        }
                      },
                      "application/json-patch+json": {
                        "schema": {
                          "$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"
                        }
                      },
                      "application/merge-patch+json": {
                        "schema": {
                          "$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"
                        }
                      }
                    },
                    "required": true
                  },
                  "responses": {
                    "200": {
                      "description": "OK",
                      "content": {
                        "application/json": {
                          "schema": {
                            "$ref": "#/components/schemas/dev.kinetic.v1.Widget"
                          }
                        },
                        "application/yaml": {
                          "schema": {
                            "$ref": "#/components/schemas/dev.kinetic.v1.Widget"
                          }
                        }
                      }
                    },
                    "201": {
                      "description": "Created",
                      "content": {
                        "application/json": {
                          "schema": {
                            "$ref": "#/components/schemas/dev.kinetic.v1.Widget"
                          }
                        },
                        "application/yaml": {
                          "schema": {
                            "$ref": "#/components/schemas/dev.kinetic.v1.Widget"
                          }
                        }
                      }
                    },
                    "401": {
                      "description": "Unauthorized"
                    }
                  },
                  "x-kubernetes-action": "patch",
                  "x-kubernetes-group-version-kind": {
                    "group": "kinetic.dev",
                    "kind": "Widget",
                    "version": "v1"
                  }
                }"##]],
        );
    }
}

/// The media type kubectl (client-go's `OpenAPISchema`) asks `/openapi/v2` for.
pub const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// The `/openapi/v2` document in the protobuf form kubectl asks for (gnostic's
/// `openapi_v2.Document`): `swagger: "2.0"`, `info` and an empty `paths`, without definitions.
///
/// kubectl 1.27+ validates and patches served kinds from `/openapi/v3`; it falls back to v2
/// only for a group-version that v3 does not list, that is, a kind the server does not serve.
/// Upstream's full document lets kubectl find no schema for it and go on to report `no matches
/// for kind`; an empty document does the same. Answering 406 instead (as before, issue 18)
/// made kubectl stop at "failed to download openapi".
pub fn v2_protobuf(version: &str) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
        // Length-delimited wire type (2); field numbers below 16 fit in one tag byte.
        out.push(number << 3 | 2);
        let mut len = bytes.len();
        while len >= 0x80 {
            out.push(u8::try_from(len & 0x7f).unwrap_or(0) | 0x80);
            len >>= 7;
        }
        out.push(u8::try_from(len).unwrap_or(0));
        out.extend_from_slice(bytes);
    }
    let mut info = Vec::new();
    field(&mut info, 1, b"Kubernetes");
    field(&mut info, 2, version.as_bytes());
    let mut doc = Vec::new();
    field(&mut doc, 1, b"2.0");
    field(&mut doc, 2, &info);
    field(&mut doc, 8, &[]);
    doc
}

#[cfg(test)]
mod v2_protobuf_tests {
    #[test]
    fn the_protobuf_v2_document_is_gnostics_swagger_info_and_empty_paths() {
        let doc = super::v2_protobuf("v1.35.0");
        let mut want = vec![0x0a, 3];
        want.extend_from_slice(b"2.0");
        want.extend_from_slice(&[0x12, 2 + 10 + 2 + 7, 0x0a, 10]);
        want.extend_from_slice(b"Kubernetes");
        want.extend_from_slice(&[0x12, 7]);
        want.extend_from_slice(b"v1.35.0");
        want.extend_from_slice(&[0x42, 0]);
        assert_eq!(doc, want);
    }
}
