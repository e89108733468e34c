//! In-place updates: whether a template change can be applied to running pods, the patch that
//! applies it, and whether a pod has finished it (`pkg/util/inplaceupdate/
//! inplace_update_defaults.go`: `defaultCalculateInPlaceUpdateSpec`,
//! `DefaultCheckInPlaceUpdateCompleted`).

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kinetic_api::kruise::{
    CONTROLLER_REVISION_HASH_LABEL, INPLACE_UPDATE_GRACE_ANNOTATION,
    INPLACE_UPDATE_STATE_ANNOTATION, InPlaceUpdateContainerBatch, InPlaceUpdateContainerStatus,
    InPlaceUpdateState, LIFECYCLE_STATE_LABEL, LifecycleState, POD_TEMPLATE_HASH_LABEL,
};
use serde_json::{Map, Value, json};

use crate::pod;

/// What an in-place update changes on a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateSpec {
    /// New images, by container name (app containers only).
    pub container_images: BTreeMap<String, String>,
    /// A patch of the pod's labels and annotations, `{"metadata":{"labels":{..},
    /// "annotations":{..}}}` with `null` for removed keys: valid both as a strategic merge patch
    /// and as a JSON merge patch. `None` when the template metadata did not change.
    pub metadata_patch: Option<Value>,
    /// Containers whose env reads (`fieldRef`) a label or annotation that changes; only
    /// non-empty when [`InPlaceOptions::env_from_metadata`] allowed it.
    pub env_from_metadata: BTreeSet<String>,
}

/// Switches of the in-place decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InPlaceOptions {
    /// Accept label/annotation changes that containers read into env through `fieldRef`
    /// (upstream's `InPlaceUpdateEnvFromMetadata` gate, which relies on kruise-daemon restarting
    /// those containers). Kinetic's node agent does not refresh env in place, so leave it off:
    /// such changes then need a recreate.
    pub env_from_metadata: bool,
}

/// The pod template inside a ControllerRevision's data (`{"spec":{"template":{..}}}`).
pub fn template_of_revision(data: &Value) -> Option<&Value> {
    data.get("spec")?.get("template")
}

/// Decides whether the change from `old` to `new` (pod templates as JSON, such as
/// [`template_of_revision`] of two ControllerRevisions) can be done in place.
///
/// In place means the RFC 6902 diff of the two templates only replaces images of app containers
/// (`/spec/containers/N/image`) and changes labels or annotations of the template. Anything else
/// (env, command, ports, resources, volumes, init containers, adding or removing containers,
/// other metadata) returns `None`: recreate under InPlaceIfPossible, refuse under InPlaceOnly.
///
/// Upstream accepts any `/metadata/` change and patches it with a strategic merge patch; we
/// accept only labels and annotations, the only template metadata a pod can take in place.
pub fn update_spec(old: &Value, new: &Value, opts: InPlaceOptions) -> Option<UpdateSpec> {
    let patch = serde_json::to_value(json_patch::diff(old, new)).ok()?;
    let mut spec = UpdateSpec::default();
    let mut metadata_changed = false;
    for op in patch.as_array()? {
        let path = op.get("path")?.as_str()?;
        let kind = op.get("op")?.as_str()?;
        if path == "/metadata" || path.starts_with("/metadata/") {
            metadata_changed = true;
            continue;
        }
        let idx: usize =
            path.strip_prefix("/spec/containers/")?.strip_suffix("/image")?.parse().ok()?;
        if kind != "replace" {
            return None;
        }
        let name = old.pointer(&format!("/spec/containers/{idx}/name"))?.as_str()?;
        let image = op.get("value")?.as_str()?;
        spec.container_images.insert(name.to_owned(), image.to_owned());
    }
    if metadata_changed {
        let (old_meta, new_meta) = (metadata_rest(old), metadata_rest(new));
        if old_meta != new_meta {
            return None;
        }
        let mut patch = Map::new();
        let mut changed_keys: Vec<(&str, String)> = Vec::new();
        for field in ["labels", "annotations"] {
            let (o, n) = (string_map(old, field), string_map(new, field));
            let mut m = Map::new();
            for (k, v) in &n {
                if o.get(k) != Some(v) {
                    m.insert(k.clone(), Value::String(v.clone()));
                    changed_keys.push((field, k.clone()));
                }
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                m.insert(k.clone(), Value::Null);
            }
            if !m.is_empty() {
                patch.insert(field.to_owned(), Value::Object(m));
            }
        }
        for (field, key) in &changed_keys {
            spec.env_from_metadata.extend(containers_reading(new, field, key));
        }
        if !spec.env_from_metadata.is_empty() && !opts.env_from_metadata {
            return None;
        }
        if !patch.is_empty() {
            spec.metadata_patch = Some(json!({ "metadata": patch }));
        }
    }
    Some(spec)
}

/// A template's metadata without labels and annotations.
fn metadata_rest(template: &Value) -> Value {
    let mut meta = template.get("metadata").cloned().unwrap_or_else(|| json!({}));
    if let Some(m) = meta.as_object_mut() {
        m.remove("labels");
        m.remove("annotations");
    }
    meta
}

fn string_map(template: &Value, field: &str) -> BTreeMap<String, String> {
    template
        .get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
        .unwrap_or_default()
}

/// Names of the containers in `template` whose env has a `fieldRef` to
/// `metadata.{field}['key']` (upstream's `IsContainerReferenceToMeta`).
fn containers_reading(template: &Value, field: &str, key: &str) -> Vec<String> {
    let wanted = [format!("metadata.{field}['{key}']"), format!("metadata.{field}[\"{key}\"]")];
    let containers = template.pointer("/spec/containers").and_then(Value::as_array);
    containers
        .into_iter()
        .flatten()
        .filter(|c| {
            c.get("env").and_then(Value::as_array).into_iter().flatten().any(|e| {
                e.pointer("/valueFrom/fieldRef/fieldPath")
                    .and_then(Value::as_str)
                    .is_some_and(|p| wanted.iter().any(|w| w == p))
            })
        })
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// The `apps.kruise.io/inplace-update-state` of a pod: `None` without the annotation.
pub fn update_state(p: &Pod) -> Option<Result<InPlaceUpdateState, serde_json::Error>> {
    pod::annotation(p, INPLACE_UPDATE_STATE_ANNOTATION).map(serde_json::from_str)
}

/// The state to record when starting the in-place update of `p` to `revision` at `now`: the
/// image id and restart count of each container whose image changes (the restart count is a
/// Kinetic addition, see [`check_update_completed`]).
///
/// All containers are patched in one batch: `KRUISE_CONTAINER_PRIORITY` batches are not
/// supported.
pub fn new_update_state(
    p: &Pod,
    spec: &UpdateSpec,
    revision: &str,
    now: Timestamp,
) -> InPlaceUpdateState {
    let statuses = p.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    let last_container_statuses = statuses
        .into_iter()
        .flatten()
        .filter(|c| spec.container_images.contains_key(&c.name))
        .map(|c| {
            let status = InPlaceUpdateContainerStatus {
                image_id: c.image_id.clone(),
                restart_count: Some(c.restart_count),
                ..Default::default()
            };
            (c.name.clone(), status)
        })
        .collect();
    let mut containers: BTreeSet<String> = spec.container_images.keys().cloned().collect();
    containers.extend(spec.env_from_metadata.iter().cloned());
    InPlaceUpdateState {
        revision: revision.to_owned(),
        update_timestamp: Time(now),
        last_container_statuses,
        update_env_from_metadata: !spec.env_from_metadata.is_empty(),
        update_resources: false,
        update_images: !spec.container_images.is_empty(),
        vertical_update_only: false,
        next_container_images: BTreeMap::new(),
        next_container_ref_metadata: BTreeMap::new(),
        next_container_resources: BTreeMap::new(),
        pre_check_before_next: None,
        container_batches_record: vec![InPlaceUpdateContainerBatch {
            timestamp: Time(now),
            containers: containers.into_iter().collect(),
        }],
    }
}

/// The strategic merge patch that updates `p` in place to `revision` (a ControllerRevision
/// name) without a grace period: new images, the template's label/annotation changes, the
/// revision labels, lifecycle state `Updating`, and `state` in
/// `apps.kruise.io/inplace-update-state` (upstream's `updatePodInPlace` with
/// `defaultPatchUpdateSpecToPod`).
///
/// # Errors
/// `state` does not serialise (it always does; the error is passed on rather than hidden).
pub fn update_patch(
    spec: &UpdateSpec,
    state: &InPlaceUpdateState,
    revision: &str,
) -> Result<Value, serde_json::Error> {
    let mut labels = Map::new();
    let mut annotations = Map::new();
    if let Some(meta) = spec.metadata_patch.as_ref().and_then(|p| p.get("metadata")) {
        if let Some(l) = meta.get("labels").and_then(Value::as_object) {
            labels.extend(l.clone());
        }
        if let Some(a) = meta.get("annotations").and_then(Value::as_object) {
            annotations.extend(a.clone());
        }
    }
    labels.insert(CONTROLLER_REVISION_HASH_LABEL.to_owned(), json!(revision));
    labels.insert(POD_TEMPLATE_HASH_LABEL.to_owned(), json!(pod::short_hash(revision)));
    labels.insert(LIFECYCLE_STATE_LABEL.to_owned(), json!(LifecycleState::Updating.as_str()));
    annotations.insert(
        INPLACE_UPDATE_STATE_ANNOTATION.to_owned(),
        Value::String(serde_json::to_string(state)?),
    );
    let containers: Vec<Value> = spec
        .container_images
        .iter()
        .map(|(name, image)| json!({ "name": name, "image": image }))
        .collect();
    let mut patch = json!({ "metadata": { "labels": labels, "annotations": annotations } });
    if !containers.is_empty() {
        patch["spec"] = json!({ "containers": containers });
    }
    Ok(patch)
}

/// Why an in-place update is not finished yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotCompleted {
    /// The pod still waits out the grace period before its spec is patched.
    #[error("still in the grace period of the in-place update")]
    InGrace,
    /// Lower-priority containers are still to be updated in a later batch.
    #[error("containers remain to be updated in later batches")]
    NextBatches,
    /// Env from changed metadata needs a runtime that reports container hashes
    /// (kruise-daemon's `apps.kruise.io/runtime-containers-meta`), which Kinetic does not have.
    #[error("waiting for containers to pick up env from changed metadata")]
    EnvFromMetadata,
    /// The container has not been restarted since the update started.
    #[error("container {0} has not restarted yet")]
    NotRestarted(String),
    /// The container still runs the old image.
    #[error("container {0} still runs the old image")]
    OldImage(String),
    /// Containers that were updated have no status (yet).
    #[error("no status for containers {0:?}")]
    MissingStatus(Vec<String>),
}

/// Whether the in-place update recorded in `state` has finished on `p`.
///
/// A container is done when its status shows the update took: its `imageID` differs from the
/// one recorded before the update, or its status `image` already equals the spec image (so
/// re-tagging an image with the same digest does not hang, upstream issues #635/#644). Kinetic
/// adds one condition: when the state recorded the container's restart count (states that
/// [`new_update_state`] wrote do), the restart count must have grown, so a status written
/// before the kubelet acted is not mistaken for completion. Images are compared after
/// normalising references (`nginx` = `docker.io/library/nginx:latest`), where upstream only
/// appends `:latest`.
///
/// # Errors
/// [`NotCompleted`] says what is still awaited.
pub fn check_update_completed(p: &Pod, state: &InPlaceUpdateState) -> Result<(), NotCompleted> {
    if pod::annotation(p, INPLACE_UPDATE_GRACE_ANNOTATION).is_some() {
        return Err(NotCompleted::InGrace);
    }
    if !state.next_container_images.is_empty() || !state.next_container_ref_metadata.is_empty() {
        return Err(NotCompleted::NextBatches);
    }
    if state.update_env_from_metadata {
        return Err(NotCompleted::EnvFromMetadata);
    }
    let spec_images: BTreeMap<&str, &str> = p
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| (c.name.as_str(), c.image.as_deref().unwrap_or("")))
        .collect();
    let mut pending: BTreeSet<&str> =
        state.last_container_statuses.keys().map(String::as_str).collect();
    let statuses = p.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    for cs in statuses.into_iter().flatten() {
        let Some(before) = state.last_container_statuses.get(&cs.name) else { continue };
        if before.restart_count.is_some_and(|n| cs.restart_count <= n) {
            return Err(NotCompleted::NotRestarted(cs.name.clone()));
        }
        if before.image_id == cs.image_id {
            let spec_image = spec_images.get(cs.name.as_str()).copied().unwrap_or("");
            if normalize_image(spec_image) != normalize_image(&cs.image) {
                return Err(NotCompleted::OldImage(cs.name.clone()));
            }
        }
        pending.remove(cs.name.as_str());
    }
    if pending.is_empty() {
        Ok(())
    } else {
        Err(NotCompleted::MissingStatus(pending.into_iter().map(str::to_owned).collect()))
    }
}

/// A docker reference in full form: registry (default `docker.io`, with `library/` for
/// single-name images) and tag (default `latest` unless there is a digest).
pub fn normalize_image(image: &str) -> String {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    let (name, tag) = match last.rsplit_once(':') {
        Some((_, t)) => (&name[..name.len() - t.len() - 1], Some(t)),
        None => (name, None),
    };
    let mut parts: Vec<&str> = name.split('/').collect();
    let has_registry = parts.len() > 1
        && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost");
    let mut full = String::new();
    if !has_registry {
        full.push_str("docker.io/");
        if parts.len() == 1 {
            full.push_str("library/");
        }
    } else if parts[0] == "index.docker.io" {
        parts[0] = "docker.io";
    }
    full.push_str(&parts.join("/"));
    match (tag, digest) {
        (Some(t), _) => {
            full.push(':');
            full.push_str(t);
        }
        (None, None) => full.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        full.push('@');
        full.push_str(d);
    }
    full
}
