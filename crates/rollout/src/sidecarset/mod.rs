//! SidecarSet's decisions as pure functions: injection on pod create ([`inject`]), the hashes and
//! ControllerRevisions of a SidecarSet (here), and which injected pods to upgrade in place and
//! how ([`upgrade`]), ported from OpenKruise's `pkg/control/sidecarcontrol` and
//! `pkg/controller/sidecarset` (v1.9).
//!
//! The embedded API server calls [`inject`] from the pod strategy's admission, `kinetic
//! controller` from its mutating webhook; the SidecarSet controller calls [`upgrade`] and, for
//! `HotUpgrade` sidecars, [`hotupgrade`].

pub mod hotupgrade;
pub mod inject;
pub mod upgrade;

use k8s_openapi::api::apps::v1::ControllerRevision;
use kinetic_api::kruise::sidecarset::{SIDECARSET_CUSTOM_VERSION_LABEL, SidecarSet};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::revision::{go_json, revision_hash, revision_name, safe_encode};

/// The SidecarSet's name.
pub fn set_name(ss: &SidecarSet) -> &str {
    ss.metadata.name.as_deref().unwrap_or("")
}

/// Upstream's `SidecarSetHash`: sha256 (hex) of `{"containers": spec.containers}`, mapped
/// through `SafeEncodeString`. Serialised from the typed containers (sorted keys), so the API
/// server and the controller compute the same hash for the same object.
pub fn hash(ss: &SidecarSet) -> String {
    hash_containers(&serde_json::to_value(&ss.spec.containers).unwrap_or(Value::Null))
}

/// Upstream's `SidecarSetHashWithoutImage`: the same with every container's image blanked.
pub fn hash_without_image(ss: &SidecarSet) -> String {
    let mut v = serde_json::to_value(&ss.spec.containers).unwrap_or(Value::Null);
    for c in v.as_array_mut().into_iter().flatten() {
        if let Some(o) = c.as_object_mut() {
            o.insert("image".into(), json!(""));
        }
    }
    hash_containers(&v)
}

fn hash_containers(containers: &Value) -> String {
    let encoded = go_json(&json!({ "containers": containers }));
    let digest = Sha256::digest(encoded.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    safe_encode(&hex)
}

/// The pair a HotUpgrade container becomes: `{name}-1` (working at injection) and `{name}-2`.
pub fn hot_upgrade_names(name: &str) -> (String, String) {
    (format!("{name}-1"), format!("{name}-2"))
}

/// The data of a SidecarSet's ControllerRevision: the fields a pinned revision restores
/// (upstream's `getPatch`: containers, initContainers, volumes, imagePullSecrets,
/// patchPodMetadata, with `$patch: replace`).
pub fn revision_data(ss: &SidecarSet) -> Value {
    let spec = serde_json::to_value(&ss.spec).unwrap_or(Value::Null);
    let mut out = serde_json::Map::new();
    for f in ["containers", "initContainers", "volumes", "imagePullSecrets", "patchPodMetadata"] {
        if let Some(v) = spec.get(f) {
            out.insert(f.into(), v.clone());
        }
    }
    out.insert("$patch".into(), json!("replace"));
    json!({ "spec": out })
}

/// `{sidecarset}-{hash}` of the revision data, as CloneSet's names.
pub fn revision_name_of(ss: &SidecarSet, collision_count: Option<i32>) -> String {
    revision_name(set_name(ss), &revision_hash(&revision_data(ss), collision_count))
}

/// The revision `injectionStrategy.revision` pins, among `revisions` (this SidecarSet's):
/// `revisionName` exactly, else the newest (highest `revision`) labelled with
/// `customVersion`. `None` when nothing is pinned or the pin matches nothing (then the
/// current spec is injected, as upstream falls back).
pub fn pinned_revision<'a>(
    ss: &SidecarSet,
    revisions: &'a [ControllerRevision],
) -> Option<&'a ControllerRevision> {
    let pin = ss.spec.injection_strategy.revision.as_ref()?;
    if let Some(name) = pin.revision_name.as_deref().filter(|n| !n.is_empty()) {
        return revisions.iter().find(|r| r.metadata.name.as_deref() == Some(name));
    }
    let version = pin.custom_version.as_deref().filter(|v| !v.is_empty())?;
    revisions
        .iter()
        .filter(|r| {
            r.metadata.labels.as_ref().and_then(|l| l.get(SIDECARSET_CUSTOM_VERSION_LABEL))
                == Some(&version.to_owned())
        })
        .max_by_key(|r| r.revision)
}

/// `ss` with the pinned fields of a revision's `data` put back.
pub fn apply_revision(ss: &SidecarSet, data: &Value) -> SidecarSet {
    let mut v = serde_json::to_value(ss).unwrap_or(Value::Null);
    let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) else { return ss.clone() };
    for f in ["containers", "initContainers", "volumes", "imagePullSecrets", "patchPodMetadata"] {
        match data.pointer(&format!("/spec/{f}")) {
            Some(x) => spec.insert(f.into(), x.clone()),
            None => spec.remove(f),
        };
    }
    serde_json::from_value(v).unwrap_or_else(|_| ss.clone())
}

/// [`inject::Resolved`] for `ss`: the pinned revision applied, if any.
pub fn resolve(ss: &SidecarSet, revisions: &[ControllerRevision]) -> inject::Resolved {
    match pinned_revision(ss, revisions) {
        Some(r) => inject::Resolved {
            set: r.data.as_ref().map_or_else(|| ss.clone(), |d| apply_revision(ss, &d.0)),
            revision: r.metadata.name.clone(),
        },
        None => inject::Resolved { set: ss.clone(), revision: None },
    }
}

#[cfg(test)]
mod tests;
