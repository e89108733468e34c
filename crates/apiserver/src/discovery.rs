//! Discovery (`/api`, `/apis`, group and resource lists, `/version`) and the OpenAPI documents,
//! generated from the registry on each request so CRDs appear as soon as they are created.
//!
//! We serve the legacy (unaggregated) discovery documents; client-go asks for aggregated
//! discovery first and falls back when the answer's content type says it is the legacy form.

use std::collections::BTreeMap;

use kinetic_machinery::openapi::{self, ResourceDoc};
use serde_json::{Map, Value, json};

use crate::registry::{Registry, Resource};

/// The `gitVersion` we present (`/version`, the OpenAPI document's `info.version`).
pub const GIT_VERSION: &str = concat!("v1.33.0-kinetic.", env!("CARGO_PKG_VERSION"));

/// The Kubernetes version we present. kubectl warns when client and server are more than one
/// minor version apart; 1.33 is the API level of the `k8s-openapi` types we serve.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": GIT_VERSION,
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "n/a (rust)",
        "compiler": "rustc",
        "platform": concat!("linux/", "amd64"),
    })
}

pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// group → versions in registration order (the first is preferred).
fn groups(registry: &Registry) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in registry.all() {
        if r.group.is_empty() {
            continue;
        }
        let vs = out.entry(r.group.clone()).or_default();
        if !vs.contains(&r.version) {
            vs.push(r.version.clone());
        }
    }
    out
}

fn group_json(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    let preferred = vs.first().cloned().unwrap_or(Value::Null);
    json!({"name": name, "versions": vs, "preferredVersion": preferred})
}

pub fn group_list(registry: &Registry) -> Value {
    let mut groups: Vec<Value> = groups(registry).iter().map(|(g, vs)| group_json(g, vs)).collect();
    // The resource metrics API, served by `metrics_api` outside the registry.
    groups.push(crate::metrics_api::group());
    // authorization.k8s.io, served by `rbac::review` outside the registry.
    groups.push(crate::rbac::review::group());
    // authentication.k8s.io, served by `serviceaccount` outside the registry.
    groups.push(crate::serviceaccount::group());
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn group(registry: &Registry, name: &str) -> Option<Value> {
    let gs = groups(registry);
    let vs = gs.get(name)?;
    let mut g = group_json(name, vs);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

fn verbs(r: &Resource) -> Vec<&'static str> {
    vec!["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        .into_iter()
        .filter(|v| *v != "deletecollection" || r.strategy.deletes_collections())
        .collect()
}

/// `APIResourceList` of one group/version, or `None` when nothing is served there.
pub fn resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let rs: Vec<_> =
        registry.all().into_iter().filter(|r| r.group == group && r.version == version).collect();
    if rs.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for r in &rs {
        let mut main = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": verbs(r),
        });
        if !r.short_names.is_empty() {
            main["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            main["categories"] = json!(r.categories);
        }
        resources.push(main);
        for sub in r.subresources() {
            let (kind, group, version, verbs): (&str, &str, &str, Vec<&str>) = match sub.as_str() {
                "status" => (&r.kind, "", "", vec!["get", "patch", "update"]),
                "scale" => ("Scale", "autoscaling", "v1", vec!["get", "patch", "update"]),
                "binding" => ("Binding", "", "", vec!["create"]),
                // Upstream lists `pods/log` with the pod's own kind.
                "log" => (&r.kind, "", "", vec!["get"]),
                "token" => ("TokenRequest", "authentication.k8s.io", "v1", vec!["create"]),
                _ => continue,
            };
            let mut s = json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if !group.is_empty() {
                s["group"] = json!(group);
                s["version"] = json!(version);
            }
            resources.push(s);
        }
    }
    let gv = if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn docs(rs: &[std::sync::Arc<Resource>]) -> Vec<ResourceDoc> {
    rs.iter()
        .map(|r| ResourceDoc {
            group: r.group.clone(),
            version: r.version.clone(),
            kind: r.kind.clone(),
            plural: r.plural.clone(),
            namespaced: r.namespaced,
            subresources: r.subresources(),
            schema_name: r.schema_name.clone(),
            strategic_merge: r.builtin,
        })
        .collect()
}

/// The schemas a group/version's document carries: the built-in definitions, plus each CRD
/// version's `openAPIV3Schema` under its definition name.
fn schemas(
    registry: &Registry,
    store: &crate::store::Store,
    rs: &[std::sync::Arc<Resource>],
) -> Map<String, Value> {
    let mut out: Map<String, Value> = (*registry.builtin_defs()).clone();
    let crds_key =
        crate::registry::storage_key("apiextensions.k8s.io", "customresourcedefinitions");
    let st = store.read();
    for r in rs.iter().filter(|r| !r.builtin) {
        let crd = st.list(&crds_key, None, None).map(|(_, s)| s.value()).find(|c| {
            c.pointer("/spec/group").and_then(Value::as_str) == Some(&r.group)
                && c.pointer("/spec/names/plural").and_then(Value::as_str) == Some(&r.plural)
        });
        let schema = crd.as_ref().and_then(|c| {
            c.pointer("/spec/versions")?
                .as_array()?
                .iter()
                .find(|v| v.get("name").and_then(Value::as_str) == Some(&r.version))?
                .pointer("/schema/openAPIV3Schema")
                .cloned()
        });
        if let Some(mut s) = schema {
            if let Some(props) = s.get_mut("properties").and_then(Value::as_object_mut) {
                // Upstream publishes CRD schemas with the standard metadata reference.
                props.insert(
                    "metadata".into(),
                    json!({"$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}),
                );
            }
            out.insert(r.schema_name.clone(), s);
        }
    }
    out
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

pub fn openapi_v3_root(registry: &Registry) -> Value {
    let mut gvs: Vec<(String, String)> = Vec::new();
    for r in registry.all() {
        let gv = (r.group.clone(), r.version.clone());
        if !gvs.contains(&gv) {
            gvs.push(gv);
        }
    }
    // The hash only has to change when the document does; the registry's shape is a fair proxy.
    let shape: String = registry
        .all()
        .iter()
        .map(|r| format!("{}/{}/{}/{};", r.group, r.version, r.plural, r.storage))
        .collect();
    openapi::v3_root(&gvs, |p| {
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (p, &shape).hash(&mut h);
        format!("{:016X}", h.finish())
    })
}

/// The OpenAPI v3 document of `api/v1` or `apis/G/V`, or `None` when nothing is served there.
pub fn openapi_v3(registry: &Registry, store: &crate::store::Store, path: &str) -> Option<Value> {
    let rs: Vec<_> =
        registry.all().into_iter().filter(|r| gv_path(&r.group, &r.version) == path).collect();
    let first = rs.first()?;
    let (group, version) = (first.group.clone(), first.version.clone());
    let schemas = schemas(registry, store, &rs);
    Some(openapi::v3_group_version(&group, &version, &docs(&rs), &schemas))
}

pub fn openapi_v2(registry: &Registry, store: &crate::store::Store) -> Value {
    let rs = registry.all();
    let schemas = schemas(registry, store, &rs);
    openapi::v2_document(&docs(&rs), &schemas)
}
