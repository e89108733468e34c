//! SidecarSet injection into a pod being created, as a pure function: OpenKruise's pod mutating
//! webhook, SidecarSet part (`pkg/webhook/pod/mutating/sidecarset.go`, `buildSidecars`,
//! `pkg/control/sidecarcontrol/util.go`).
//!
//! The pod is JSON (what the API server admits, unknown fields kept); the SidecarSets are typed.
//! What is done, in upstream's order, for each matching SidecarSet (sorted by name):
//!
//! - matching: `spec.namespace`, `namespaceSelector` (on the namespace's labels), `selector`
//!   (on the pod's labels; no selector matches nothing); `injectionStrategy.paused` skips it;
//! - a SidecarSet already in `kruise.io/sidecarset-injected-list` is skipped, so injection is
//!   idempotent (Kinetic: a pod admitted by the embedded server and then by `kinetic
//!   controller`'s webhook is injected once);
//! - a pinned revision (`injectionStrategy.revision`) replaces the spec's containers, init
//!   containers, volumes, pull secrets and metadata patches by the revision's;
//! - init containers (also native sidecars, `restartPolicy: Always`) sorted by name, appended
//!   after the pod's; containers `BeforeAppContainer` before the app containers,
//!   `AfterAppContainer` after them; a container whose name the pod already has is skipped;
//! - each injected container gets env `IS_INJECTED=true` first, the app containers' mounts
//!   when `shareVolumePolicy` is enabled (not those whose name or path it has), their devices
//!   with `shareVolumeDevicePolicy`, and `transferEnv` copies;
//! - HotUpgrade containers become the pair `{name}-1` (working) and `{name}-2` (the empty
//!   image), with `kruise.io/sidecarset-working-hotupgrade-container`, the version annotations
//!   and env `SIDECARSET_VERSION`/`_ALT` ([`super::hotupgrade`]);
//! - volumes and `imagePullSecrets` the pod lacks (by name), `patchPodMetadata`;
//! - the `kruise.io/sidecarset-hash`, `-hash-without-image` and `-injected-list` annotations.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar, EnvVarSource, ObjectFieldSelector};
use kinetic_api::kruise::sidecarset::{
    SIDECAR_ENV_KEY, SIDECARSET_HASH_ANNOTATION, SIDECARSET_HASH_WITHOUT_IMAGE_ANNOTATION,
    SIDECARSET_INJECTED_LIST_ANNOTATION, SIDECARSET_WORKING_HOT_UPGRADE_CONTAINER,
    SidecarContainer, SidecarSet,
};
use kinetic_machinery::selector::LabelSelector;
use serde_json::{Map, Value, json};

use super::{hash, hash_without_image, hot_upgrade_names, hotupgrade, set_name};

/// What injection needs besides the pod and the SidecarSets.
pub struct InjectContext<'a> {
    /// Labels of the pod's namespace (for `namespaceSelector`).
    pub namespace_labels: &'a BTreeMap<String, String>,
    /// The time written into the hash annotations (RFC 3339).
    pub now: &'a str,
}

/// A SidecarSet to inject, with the pinned revision it resolved to (if any): `spec` is the
/// SidecarSet with the revision's fields applied, `revision` the ControllerRevision's name.
pub struct Resolved {
    pub set: SidecarSet,
    pub revision: Option<String>,
}

/// Whether `ss` selects a pod with `labels` in namespace `ns` (labels `ns_labels`), as
/// upstream's `PodMatchedSidecarSet`: a SidecarSet without selector matches nothing.
pub fn matches(
    ss: &SidecarSet,
    ns: &str,
    labels: Option<&Map<String, Value>>,
    ns_labels: &BTreeMap<String, String>,
) -> bool {
    if ss.spec.namespace.as_deref().is_some_and(|n| !n.is_empty() && n != ns) {
        return false;
    }
    if let Some(nsel) = &ss.spec.namespace_selector {
        let labels: Map<String, Value> =
            ns_labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        if !selector_matches(nsel, Some(&labels)) {
            return false;
        }
    }
    ss.spec.selector.as_ref().is_some_and(|s| selector_matches(s, labels))
}

fn selector_matches(
    sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: Option<&Map<String, Value>>,
) -> bool {
    serde_json::to_value(sel)
        .ok()
        .and_then(|v| LabelSelector::from_label_selector(&v).ok())
        .is_some_and(|s| s.matches(labels))
}

/// The names in the pod's `kruise.io/sidecarset-injected-list`.
pub fn injected_list(pod: &Value) -> Vec<String> {
    pod.pointer("/metadata/annotations")
        .and_then(|a| a.get(SIDECARSET_INJECTED_LIST_ANNOTATION))
        .and_then(Value::as_str)
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The SidecarSets (of `all`) that injection would apply to `pod`: matching, not paused, not
/// injected already; sorted by name.
pub fn to_inject<'a>(
    pod: &Value,
    all: &'a [SidecarSet],
    ns_labels: &BTreeMap<String, String>,
) -> Vec<&'a SidecarSet> {
    let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
    let labels = pod.pointer("/metadata/labels").and_then(Value::as_object);
    let done = injected_list(pod);
    let mut out: Vec<&SidecarSet> = all
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .filter(|s| !s.spec.injection_strategy.paused)
        .filter(|s| !done.iter().any(|d| d == set_name(s)))
        .filter(|s| matches(s, ns, labels, ns_labels))
        .collect();
    out.sort_by(|a, b| set_name(a).cmp(set_name(b)));
    out
}

/// Injects `sets` (already chosen by [`to_inject`] and resolved to their pinned revisions) into
/// `pod`. Returns the names injected (empty: the pod is unchanged).
pub fn inject(pod: &mut Value, sets: &[Resolved], cx: &InjectContext<'_>) -> Vec<String> {
    let done = injected_list(pod);
    let sets: Vec<&Resolved> =
        sets.iter().filter(|r| !done.iter().any(|d| d == set_name(&r.set))).collect();
    if sets.is_empty() || !pod.is_object() {
        return Vec::new();
    }
    let meta_labels = pod.pointer("/metadata/labels").cloned().unwrap_or(Value::Null);
    let meta_annotations = pod.pointer("/metadata/annotations").cloned().unwrap_or(Value::Null);
    let Some(spec) = ensure_object(pod, "spec") else { return Vec::new() };
    let app: Vec<Value> =
        spec.get("containers").and_then(Value::as_array).cloned().unwrap_or_default();
    let has_name = |list: &[Value], name: &str| {
        list.iter().any(|c| c.get("name").and_then(Value::as_str) == Some(name))
    };
    let init_existing: Vec<Value> =
        spec.get("initContainers").and_then(Value::as_array).cloned().unwrap_or_default();

    let mut before: Vec<Value> = Vec::new();
    let mut after: Vec<Value> = Vec::new();
    let mut inits: Vec<(String, Value)> = Vec::new();
    let mut volumes: Vec<Value> = Vec::new();
    let mut secrets: Vec<Value> = Vec::new();
    let mut hot: Map<String, Value> = Map::new();
    let mut versions: Vec<(String, &str)> = Vec::new();
    let mut names = Vec::new();
    let mut hashes: Vec<(String, Value, Value)> = Vec::new();
    let mut patches = Vec::new();
    for r in &sets {
        let ss = &r.set;
        let name = set_name(ss).to_owned();
        for ic in &ss.spec.init_containers {
            let n = &ic.container.name;
            if has_name(&init_existing, n) || inits.iter().any(|(m, _)| m == n) {
                continue;
            }
            let c = with_injected_env(ic.container.clone());
            inits.push((n.clone(), to_json(&c)));
        }
        let mut list = Vec::new();
        for sc in &ss.spec.containers {
            let built = build_container(sc, &app, &meta_labels, &meta_annotations);
            if sc.is_hot_upgrade() {
                let (working, idle) = hot_upgrade_names(&sc.container.name);
                let empty = sc
                    .upgrade_strategy
                    .as_ref()
                    .and_then(|u| u.hot_upgrade_empty_image.clone())
                    .unwrap_or_default();
                let mut w = built.clone();
                w.name = working.clone();
                with_version_env(&mut w);
                let mut i = built;
                i.name = idle.clone();
                i.image = Some(empty);
                with_version_env(&mut i);
                // "1": injected working, "0": the empty twin (`injectHotUpgradeContainers`).
                for (c, v, alt) in [(&working, "1", "0"), (&idle, "0", "1")] {
                    versions.push((hotupgrade::version_annotation(c), v));
                    versions.push((hotupgrade::version_alt_annotation(c), alt));
                }
                hot.insert(sc.container.name.clone(), json!(working));
                list.push((sc, w));
                list.push((sc, i));
            } else {
                list.push((sc, built));
            }
        }
        let mut container_names = Vec::new();
        for (sc, c) in list {
            if has_name(&app, &c.name) || has_name(&before, &c.name) || has_name(&after, &c.name) {
                continue;
            }
            container_names.push(c.name.clone());
            match sc.inject_policy() {
                kinetic_api::kruise::sidecarset::PodInjectPolicy::BeforeAppContainer => {
                    before.push(to_json(&c));
                }
                kinetic_api::kruise::sidecarset::PodInjectPolicy::AfterAppContainer => {
                    after.push(to_json(&c));
                }
            }
        }
        for v in &ss.spec.volumes {
            volumes.push(to_json(v));
        }
        for s in &ss.spec.image_pull_secrets {
            secrets.push(to_json(s));
        }
        let spec_of = |h: String| {
            let mut v = json!({
                "updateTimestamp": cx.now,
                "hash": h,
                "sidecarSetName": name,
                "sidecarList": ss.spec.containers.iter().map(|c| c.container.name.clone()).collect::<Vec<_>>(),
            });
            if let Some(rev) = &r.revision {
                v["controllerRevision"] = json!(rev);
            }
            v
        };
        hashes.push((name.clone(), spec_of(hash(ss)), spec_of(hash_without_image(ss))));
        patches.extend(ss.spec.patch_pod_metadata.iter().cloned());
        names.push(name);
    }

    // Containers: before, the pod's, after.
    if !before.is_empty() || !after.is_empty() {
        let mut all = before;
        all.extend(app);
        all.extend(after);
        spec.insert("containers".into(), Value::Array(all));
    }
    if !inits.is_empty() {
        inits.sort_by(|a, b| a.0.cmp(&b.0));
        let mut all = init_existing;
        all.extend(inits.into_iter().map(|(_, c)| c));
        spec.insert("initContainers".into(), Value::Array(all));
    }
    merge_by_name(spec, "volumes", volumes);
    merge_by_name(spec, "imagePullSecrets", secrets);

    let Some(ann) = ensure_object(pod, "metadata").and_then(|m| ensure_object_in(m, "annotations"))
    else {
        return Vec::new();
    };
    for p in &patches {
        let policy = p.patch_policy.as_deref().unwrap_or("Retain");
        for (k, v) in &p.annotations {
            match policy {
                "Overwrite" => {
                    ann.insert(k.clone(), json!(v));
                }
                "MergePatchJson" => {
                    let mut cur: Value = ann
                        .get(k)
                        .and_then(Value::as_str)
                        .and_then(|s| serde_json::from_str(s).ok())
                        .unwrap_or_else(|| json!({}));
                    if let Ok(patch) = serde_json::from_str::<Value>(v) {
                        json_patch::merge(&mut cur, &patch);
                        ann.insert(k.clone(), json!(cur.to_string()));
                    }
                }
                _ => {
                    ann.entry(k.clone()).or_insert_with(|| json!(v));
                }
            }
        }
    }
    for (key, idx) in
        [(SIDECARSET_HASH_ANNOTATION, 1), (SIDECARSET_HASH_WITHOUT_IMAGE_ANNOTATION, 2)]
    {
        let mut cur: Map<String, Value> = ann
            .get(key)
            .and_then(Value::as_str)
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        for h in &hashes {
            cur.insert(h.0.clone(), if idx == 1 { h.1.clone() } else { h.2.clone() });
        }
        ann.insert(key.into(), json!(Value::Object(cur).to_string()));
    }
    let mut list = done;
    list.extend(names.iter().cloned());
    ann.insert(SIDECARSET_INJECTED_LIST_ANNOTATION.into(), json!(list.join(",")));
    if !hot.is_empty() {
        let mut cur: Map<String, Value> = ann
            .get(SIDECARSET_WORKING_HOT_UPGRADE_CONTAINER)
            .and_then(Value::as_str)
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        cur.extend(hot);
        ann.insert(
            SIDECARSET_WORKING_HOT_UPGRADE_CONTAINER.into(),
            json!(Value::Object(cur).to_string()),
        );
    }
    for (k, v) in versions {
        ann.insert(k, json!(v));
    }
    names
}

/// The container as injected: `IS_INJECTED` first, shared mounts and devices, transferred env.
fn build_container(
    sc: &SidecarContainer,
    app: &[Value],
    labels: &Value,
    annotations: &Value,
) -> Container {
    let mut c = with_injected_env(sc.container.clone());
    let apps: Vec<Container> =
        app.iter().filter_map(|a| serde_json::from_value(a.clone()).ok()).collect();
    if sc.shares_volumes() {
        let mounts = c.volume_mounts.get_or_insert_with(Vec::new);
        for a in &apps {
            for m in a.volume_mounts.iter().flatten() {
                if mounts.iter().any(|x| x.name == m.name || x.mount_path == m.mount_path) {
                    continue;
                }
                mounts.push(m.clone());
            }
        }
        if mounts.is_empty() {
            c.volume_mounts = None;
        }
    }
    if sc.shares_volume_devices() {
        let devices = c.volume_devices.get_or_insert_with(Vec::new);
        for a in &apps {
            for d in a.volume_devices.iter().flatten() {
                if devices.iter().any(|x| x.name == d.name || x.device_path == d.device_path) {
                    continue;
                }
                devices.push(d.clone());
            }
        }
        if devices.is_empty() {
            c.volume_devices = None;
        }
    }
    for t in &sc.transfer_env {
        let source = match (&t.source_container_name, &t.source_container_name_from) {
            (Some(n), _) if !n.is_empty() => Some(n.clone()),
            (_, Some(from)) => from
                .field_ref
                .as_ref()
                .and_then(|f| field_value(&f.field_path, labels, annotations)),
            _ => None,
        };
        let Some(src) = source.and_then(|n| apps.iter().find(|a| a.name == n)) else { continue };
        let wanted: Vec<&String> = t.env_name.iter().chain(t.env_names.iter()).collect();
        let env = c.env.get_or_insert_with(Vec::new);
        for e in src.env.iter().flatten().filter(|e| wanted.contains(&&e.name)) {
            if !env.iter().any(|x| x.name == e.name) {
                env.push(e.clone());
            }
        }
    }
    c
}

/// `metadata.labels['k']` or `metadata.annotations['k']` of the pod.
fn field_value(path: &str, labels: &Value, annotations: &Value) -> Option<String> {
    let (map, rest) = if let Some(r) = path.strip_prefix("metadata.labels[") {
        (labels, r)
    } else if let Some(r) = path.strip_prefix("metadata.annotations[") {
        (annotations, r)
    } else {
        return None;
    };
    let key = rest.strip_suffix(']')?.trim_matches(|c| c == '\'' || c == '"');
    map.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Env `SIDECARSET_VERSION` and `SIDECARSET_VERSION_ALT` of a hot twin, read from its version
/// annotations (`setSidecarContainerVersionEnv`), so the process can tell whether it is the
/// new or the old one of a switch.
fn with_version_env(c: &mut Container) {
    let env = c.env.get_or_insert_with(Vec::new);
    env.retain(|e| e.name != hotupgrade::VERSION_ENV && e.name != hotupgrade::VERSION_ALT_ENV);
    for (name, key) in [
        (hotupgrade::VERSION_ENV, hotupgrade::version_annotation(&c.name)),
        (hotupgrade::VERSION_ALT_ENV, hotupgrade::version_alt_annotation(&c.name)),
    ] {
        env.push(EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: format!("metadata.annotations['{key}']"),
                }),
                ..Default::default()
            }),
        });
    }
}

fn with_injected_env(mut c: Container) -> Container {
    let mut env =
        vec![EnvVar { name: SIDECAR_ENV_KEY.into(), value: Some("true".into()), value_from: None }];
    env.extend(c.env.take().unwrap_or_default().into_iter().filter(|e| e.name != SIDECAR_ENV_KEY));
    c.env = Some(env);
    c
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn merge_by_name(spec: &mut Map<String, Value>, field: &str, add: Vec<Value>) {
    if add.is_empty() {
        return;
    }
    let mut cur: Vec<Value> =
        spec.get(field).and_then(Value::as_array).cloned().unwrap_or_default();
    for v in add {
        let name = v.get("name").cloned();
        if !cur.iter().any(|c| c.get("name") == name.as_ref()) {
            cur.push(v);
        }
    }
    spec.insert(field.into(), Value::Array(cur));
}

fn ensure_object<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    ensure_object_in(v.as_object_mut()?, key)
}

fn ensure_object_in<'a>(
    obj: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    let slot = obj.entry(key.to_owned()).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    slot.as_object_mut()
}
