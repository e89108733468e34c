//! In-place updates: whether a template change can be applied to running pods, the patch that
//! applies it, and whether a pod has finished it (`pkg/util/inplaceupdate/
//! inplace_update_defaults.go`: `defaultCalculateInPlaceUpdateSpec`,
//! `DefaultCheckInPlaceUpdateCompleted`), including container priority batches
//! (`defaultPatchUpdateSpecToPod`'s `containersToUpdate` and `nextContainerImages`).

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kinetic_api::kruise::{
    CONTROLLER_REVISION_HASH_LABEL, INPLACE_UPDATE_GRACE_ANNOTATION,
    INPLACE_UPDATE_STATE_ANNOTATION, InPlaceUpdateContainerBatch, InPlaceUpdateContainerStatus,
    InPlaceUpdatePreCheckBeforeNext, InPlaceUpdateState, LIFECYCLE_STATE_LABEL, LifecycleState,
    POD_TEMPLATE_HASH_LABEL, container_priority,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InPlaceOptions {
    /// Accept label/annotation changes that containers read into env through `fieldRef`
    /// (upstream's `InPlaceUpdateEnvFromMetadata` gate, on by default): the node agent restarts
    /// a container in place when the env it derives from pod metadata changed, as
    /// kruise-daemon does. Off, such changes need a recreate.
    pub env_from_metadata: bool,
}

impl Default for InPlaceOptions {
    fn default() -> Self {
        Self { env_from_metadata: true }
    }
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
/// image id and restart count of each container patched in the first batch (the restart count
/// is a Kinetic addition, see [`check_update_completed`]), and the images of lower-priority
/// containers left for later batches.
///
/// Batches follow upstream's `defaultPatchUpdateSpecToPod`: containers with a launch priority
/// ([`container_priority`]: `KRUISE_CONTAINER_PRIORITY`, or the pod's
/// `apps.kruise.io/container-launch-priority: Ordered`) are patched highest priority first,
/// one priority per batch, and the next batch waits until the previous one is updated and
/// ready ([`ready_for_next_batch`], [`next_batch`]); containers without a priority go in the
/// first batch. Unlike upstream, every container whose env reads changed metadata is in the
/// first batch too: the labels and annotations are patched once, for the whole pod.
pub fn new_update_state(
    p: &Pod,
    spec: &UpdateSpec,
    revision: &str,
    now: Timestamp,
) -> InPlaceUpdateState {
    let (batch, next) = split_batch(p, &spec.container_images, &spec.env_from_metadata);
    let mut state = InPlaceUpdateState {
        revision: revision.to_owned(),
        update_timestamp: Time(now),
        last_container_statuses: BTreeMap::new(),
        update_env_from_metadata: !spec.env_from_metadata.is_empty(),
        update_resources: false,
        update_images: !spec.container_images.is_empty(),
        vertical_update_only: false,
        next_container_images: BTreeMap::new(),
        next_container_ref_metadata: BTreeMap::new(),
        next_container_resources: BTreeMap::new(),
        pre_check_before_next: None,
        container_batches_record: Vec::new(),
    };
    record_batch(p, &mut state, batch, next, now);
    state
}

/// Splits the containers to update into the batch to patch now and the images left for later
/// (upstream's `containersToUpdate` and `NextContainerImages`).
fn split_batch(
    p: &Pod,
    images: &BTreeMap<String, String>,
    env_from_metadata: &BTreeSet<String>,
) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let containers = p.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    let mut now = BTreeSet::new();
    let mut prioritised: Vec<(i32, &str)> = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        let (image, env) = (images.contains_key(&c.name), env_from_metadata.contains(&c.name));
        if !image && !env {
            continue;
        }
        match container_priority(p, i) {
            Some(prio) if !env => prioritised.push((prio, &c.name)),
            _ => {
                now.insert(c.name.clone());
            }
        }
    }
    // Images of containers the pod does not have stay with the first batch; the API server
    // refuses the patch, as it would upstream.
    now.extend(images.keys().filter(|n| !containers.iter().any(|c| &c.name == *n)).cloned());
    let highest = prioritised.iter().map(|(prio, _)| *prio).max();
    let mut next = BTreeMap::new();
    for (prio, name) in prioritised {
        if Some(prio) == highest {
            now.insert(name.to_owned());
        } else if let Some(image) = images.get(name) {
            next.insert(name.to_owned(), image.clone());
        }
    }
    (now, next)
}

/// Records `batch` in `state`: the containers' status before the patch, the images left for
/// later, what the next batch waits for, and the batch itself.
fn record_batch(
    p: &Pod,
    state: &mut InPlaceUpdateState,
    batch: BTreeSet<String>,
    next: BTreeMap<String, String>,
    now: Timestamp,
) {
    let statuses = p.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    for c in statuses.into_iter().flatten().filter(|c| batch.contains(&c.name)) {
        let status = InPlaceUpdateContainerStatus {
            image_id: c.image_id.clone(),
            restart_count: Some(c.restart_count),
            ..Default::default()
        };
        state.last_container_statuses.insert(c.name.clone(), status);
    }
    state.pre_check_before_next = (!next.is_empty()).then(|| InPlaceUpdatePreCheckBeforeNext {
        containers_required_ready: batch.iter().cloned().collect(),
    });
    state.next_container_images = next;
    state.container_batches_record.push(InPlaceUpdateContainerBatch {
        timestamp: Time(now),
        containers: batch.into_iter().collect(),
    });
}

/// The images [`update_patch`] sets now: those of `spec` not left for a later batch.
pub fn batch_images(spec: &UpdateSpec, state: &InPlaceUpdateState) -> BTreeMap<String, String> {
    let mut images = spec.container_images.clone();
    images.retain(|name, _| !state.next_container_images.contains_key(name));
    images
}

/// The strategic merge patch that updates `p` in place to `revision` (a ControllerRevision
/// name) without a grace period: the first batch's images ([`batch_images`]), the template's
/// label/annotation changes, the revision labels, lifecycle state `Updating`, and `state` in
/// `apps.kruise.io/inplace-update-state` (upstream's `updatePodInPlace` with
/// `defaultPatchUpdateSpecToPod`).
///
/// # Errors
/// `state` does not serialise (it always does; the error is passed on rather than hidden).
pub fn update_patch(
    p: &Pod,
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
    labels.insert(CONTROLLER_REVISION_HASH_LABEL.to_owned(), json!(pod::revision_label(revision)));
    labels.insert(POD_TEMPLATE_HASH_LABEL.to_owned(), json!(pod::short_hash(revision)));
    labels.insert(LIFECYCLE_STATE_LABEL.to_owned(), json!(LifecycleState::Updating.as_str()));
    annotations.insert(
        INPLACE_UPDATE_STATE_ANNOTATION.to_owned(),
        Value::String(serde_json::to_string(state)?),
    );
    let mut patch = json!({ "metadata": { "labels": labels, "annotations": annotations } });
    let images = batch_images(spec, state);
    if !images.is_empty() {
        patch["spec"] = containers_patch(p, &images);
    }
    Ok(patch)
}

/// The `spec` of a strategic merge patch that sets `images` (by container name) on `p`: the
/// containers listed in the pod's own order, with `$setElementOrder/containers` naming all of
/// the pod's containers, as `kubectl apply` sends it.
///
/// The order matters: a strategic merge patch orders a merged list by the patch's order
/// (upstream `mergeSlice` → `normalizeElementOrder`, test case "preserve the order from the
/// patch in a merging list"), and pod update validation refuses a reordered `containers`
/// list. Listing two containers in any other order than the pod's is refused (issue 18).
pub fn containers_patch(p: &Pod, images: &BTreeMap<String, String>) -> Value {
    let names: Vec<&str> =
        p.spec.iter().flat_map(|s| s.containers.iter()).map(|c| c.name.as_str()).collect();
    let mut containers: Vec<Value> = names
        .iter()
        .filter_map(|n| images.get(*n).map(|image| json!({ "name": n, "image": image })))
        .collect();
    // Names the pod lacks go last (the API server then refuses the patch, as it would
    // upstream), so nothing is silently dropped.
    containers.extend(
        images
            .iter()
            .filter(|(n, _)| !names.contains(&n.as_str()))
            .map(|(n, image)| json!({ "name": n, "image": image })),
    );
    let mut order: Vec<Value> = names.iter().map(|n| json!({ "name": n })).collect();
    order.extend(
        images.keys().filter(|n| !names.contains(&n.as_str())).map(|n| json!({ "name": n })),
    );
    json!({ "$setElementOrder/containers": order, "containers": containers })
}

/// Whether the next priority batch of the update in `state` may be patched: the batches so far
/// are updated ([`check_containers_updated`]) and the containers of the last one are ready
/// (upstream's `doPreCheckBeforeNext` with `containersRequiredReady`).
///
/// # Errors
/// [`NotCompleted`] says what is still awaited; [`NotCompleted::NotReady`] for a container
/// that is updated but not ready yet.
pub fn ready_for_next_batch(p: &Pod, state: &InPlaceUpdateState) -> Result<(), NotCompleted> {
    if pod::annotation(p, INPLACE_UPDATE_GRACE_ANNOTATION).is_some() {
        return Err(NotCompleted::InGrace);
    }
    check_containers_updated(p, state)?;
    let required = state.pre_check_before_next.iter().flat_map(|c| &c.containers_required_ready);
    let statuses = p.status.as_ref().and_then(|s| s.container_statuses.as_deref());
    for name in required {
        let ready = statuses.unwrap_or_default().iter().any(|c| &c.name == name && c.ready);
        if !ready {
            return Err(NotCompleted::NotReady(name.clone()));
        }
    }
    Ok(())
}

/// The strategic merge patch of the next priority batch of the update in `state` (upstream's
/// `updateNextBatch`), or `None` when no batch is left. Call it once
/// [`ready_for_next_batch`] holds.
///
/// # Errors
/// The new state does not serialise (it always does).
pub fn next_batch(
    p: &Pod,
    state: &InPlaceUpdateState,
    now: Timestamp,
) -> Result<Option<Value>, serde_json::Error> {
    if state.next_container_images.is_empty() {
        return Ok(None);
    }
    let (batch, next) = split_batch(p, &state.next_container_images, &BTreeSet::new());
    let images: BTreeMap<String, String> = state
        .next_container_images
        .iter()
        .filter(|(n, _)| batch.contains(*n))
        .map(|(n, i)| (n.clone(), i.clone()))
        .collect();
    let mut state = state.clone();
    record_batch(p, &mut state, batch, next, now);
    let annotation = serde_json::to_string(&state)?;
    Ok(Some(json!({
        "metadata": { "annotations": { INPLACE_UPDATE_STATE_ANNOTATION: annotation } },
        "spec": containers_patch(p, &images),
    })))
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
    /// A container of the last batch is updated but not ready, so the next batch waits.
    #[error("container {0} is not ready yet")]
    NotReady(String),
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

/// Whether the in-place update recorded in `state` has finished on `p`: no grace period and
/// no later batch left, and every patched container updated ([`check_containers_updated`]).
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
    check_containers_updated(p, state)
}

/// Whether every container patched so far (the keys of `lastContainerStatuses`) is updated
/// (upstream's `defaultCheckContainersInPlaceUpdateCompleted`).
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
/// A container whose env reads changed metadata is recorded with its restart count like an
/// image change, so it is done once the node agent restarted it (the agent restarts a
/// container when the env it derives from pod metadata changed). Upstream compares
/// kruise-daemon's env hashes in `apps.kruise.io/runtime-containers-meta` instead.
///
/// # Errors
/// [`NotCompleted`] says what is still awaited.
pub fn check_containers_updated(p: &Pod, state: &InPlaceUpdateState) -> Result<(), NotCompleted> {
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
