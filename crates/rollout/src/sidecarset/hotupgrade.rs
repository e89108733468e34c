//! Hot upgrade of a SidecarSet's `HotUpgrade` containers, as OpenKruise does it
//! (`pkg/control/sidecarcontrol/util_hotupgrade.go`, `sidecarset_control.go`
//! `UpgradeSidecarContainer`, `pkg/controller/sidecarset/sidecarset_hotupgrade.go`; proposal
//! `docs/proposals/20210305-sidecarset-hotupgrade.md`).
//!
//! A hot sidecar `NAME` is injected as the pair `NAME-1` (working, the spec's image) and
//! `NAME-2` (the `hotUpgradeEmptyImage`); annotation
//! `kruise.io/sidecarset-working-hotupgrade-container` (`{"NAME": "NAME-1"}`) says which one
//! works, and `version.sidecarset.kruise.io/{container}` / `versionalt.sidecarset.kruise.io/
//! {container}` (read by the containers through env `SIDECARSET_VERSION` /
//! `SIDECARSET_VERSION_ALT`) give each one's version and its twin's ("0": the empty image).
//!
//! An upgrade, all in place, the app containers untouched:
//! 1. [`container_to_upgrade`]: the twin running the empty image gets the new image; it is
//!    recorded as the working container at once, and the versions are rotated
//!    ([`upgrade_annotations`]). Both run now; the new one takes over from the old (upstream: its
//!    PostStartHook migrates the old one's state, e.g. its listening socket).
//! 2. Once every non-empty container of the SidecarSet runs its spec's image and is ready
//!    ([`ready_to_flip`]), the old twin is reset to the empty image ([`flip_patch`]).
//!
//! Until then the pod counts as not ready for the SidecarSet ([`super::upgrade::is_ready`]),
//! so `maxUnavailable` bounds how many pods are mid-switch.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use kinetic_api::kruise::sidecarset::{
    SIDECARSET_WORKING_HOT_UPGRADE_CONTAINER, SidecarContainer, SidecarSet,
};
use serde_json::{Map, Value, json};

use super::hot_upgrade_names;
use crate::inplace::normalize_image;
use crate::pod;

/// Env with the container's own version (`SidecarSetVersionEnvKey`).
pub const VERSION_ENV: &str = "SIDECARSET_VERSION";
/// Env with the twin's version (`SidecarSetVersionAltEnvKey`).
pub const VERSION_ALT_ENV: &str = "SIDECARSET_VERSION_ALT";

/// `version.sidecarset.kruise.io/{container}` (`GetPodSidecarSetVersionAnnotation`).
pub fn version_annotation(container: &str) -> String {
    format!("version.sidecarset.kruise.io/{container}")
}

/// `versionalt.sidecarset.kruise.io/{container}` (`GetPodSidecarSetVersionAltAnnotation`).
pub fn version_alt_annotation(container: &str) -> String {
    format!("versionalt.sidecarset.kruise.io/{container}")
}

/// The sidecar's `hotUpgradeEmptyImage` (empty when unset).
pub fn empty_image(sc: &SidecarContainer) -> &str {
    sc.upgrade_strategy.as_ref().and_then(|u| u.hot_upgrade_empty_image.as_deref()).unwrap_or("")
}

/// The working-container annotation as a map, sidecar name → pod container name
/// (`GetPodHotUpgradeInfoInAnnotations`; unparsable reads as empty, as upstream).
pub fn working_map(p: &Pod) -> BTreeMap<String, String> {
    pod::annotation(p, SIDECARSET_WORKING_HOT_UPGRADE_CONTAINER)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// `(working, other)` of sidecar `name` in the pod (`GetPodHotUpgradeContainers`): the
/// annotation's choice when it names `NAME-1`, else `NAME-2` works.
pub fn pair(name: &str, p: &Pod) -> (String, String) {
    let (one, two) = hot_upgrade_names(name);
    if working_map(p).get(name) == Some(&one) { (one, two) } else { (two, one) }
}

fn spec_container<'a>(p: &'a Pod, name: &str) -> Option<&'a Container> {
    p.spec.as_ref()?.containers.iter().find(|c| c.name == name)
}

/// The image the pod's spec gives container `name` (empty when it has no such container).
pub fn spec_image<'a>(p: &'a Pod, name: &str) -> &'a str {
    spec_container(p, name).and_then(|c| c.image.as_deref()).unwrap_or("")
}

/// Container `name` is ready and runs the image its spec names (upstream: its status Ready and
/// `IsPodStateConsistent` for it alone).
pub fn container_ready_and_consistent(p: &Pod, name: &str) -> bool {
    let want = spec_image(p, name);
    let statuses = p.status.as_ref().and_then(|s| s.container_statuses.as_deref()).unwrap_or(&[]);
    statuses
        .iter()
        .any(|s| s.name == name && s.ready && normalize_image(&s.image) == normalize_image(want))
}

/// Which twin of hot sidecar `sc` an upgrade writes the new image into, and the other one
/// (`findContainerToHotUpgrade`): the one on the empty image first; else the one not ready
/// (or not running its spec's image) while the other is; else the older one (not working).
pub fn container_to_upgrade(sc: &SidecarContainer, p: &Pod) -> (String, String) {
    let (one, two) = hot_upgrade_names(&sc.container.name);
    let empty = empty_image(sc);
    if spec_image(p, &one) == empty {
        return (one, two);
    }
    if spec_image(p, &two) == empty {
        return (two, one);
    }
    match (container_ready_and_consistent(p, &one), container_ready_and_consistent(p, &two)) {
        (true, false) => (two, one),
        (false, true) => (one, two),
        _ => {
            let (working, older) = pair(&sc.container.name, p);
            (older, working)
        }
    }
}

/// The annotations an upgrade that writes into `upgraded` (twin `older`) of a hot sidecar sets (`updatePodSidecarContainer`): `upgraded` works now; its version is the
/// SidecarSet's resourceVersion, its alt version the older twin's version, and the older
/// twin's alt version the new one.
pub fn upgrade_annotations(
    p: &Pod,
    upgraded: &str,
    older: &str,
    resource_version: &str,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert(version_annotation(upgraded), resource_version.to_owned());
    out.insert(
        version_alt_annotation(upgraded),
        pod::annotation(p, &version_annotation(older)).unwrap_or("").to_owned(),
    );
    out.insert(version_alt_annotation(older), resource_version.to_owned());
    out
}

/// The working-container annotation with `changes` (sidecar → container) merged in
/// (`RecordHotUpgradeInfoInAnnotations`), serialised as upstream (a JSON object).
pub fn working_annotation(p: &Pod, changes: &BTreeMap<String, String>) -> String {
    let mut map = working_map(p);
    map.extend(changes.iter().map(|(k, v)| (k.clone(), v.clone())));
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".into())
}

fn hot_sidecars(ss: &SidecarSet) -> impl Iterator<Item = &SidecarContainer> {
    ss.spec.containers.iter().filter(|c| c.is_hot_upgrade())
}

/// The pod containers the SidecarSet owns (`GetSidecarContainersInPod`): a cold sidecar's
/// name, both twins of a hot one.
pub fn sidecar_containers_in_pod(ss: &SidecarSet) -> Vec<String> {
    let mut out = Vec::new();
    for sc in &ss.spec.containers {
        if sc.is_hot_upgrade() {
            let (one, two) = hot_upgrade_names(&sc.container.name);
            out.push(one);
            out.push(two);
        } else {
            out.push(sc.container.name.clone());
        }
    }
    out
}

/// The twins that are not working now (the empty ones once a switch is complete), with the
/// empty image each should run.
pub fn other_containers(ss: &SidecarSet, p: &Pod) -> Vec<(String, String)> {
    hot_sidecars(ss).map(|sc| (pair(&sc.container.name, p).1, empty_image(sc).to_owned())).collect()
}

/// A switch is under way: some hot sidecar's non-working twin does not run the empty image
/// (`isPodSidecarInHotUpgrading`).
pub fn in_hot_upgrading(ss: &SidecarSet, p: &Pod) -> bool {
    other_containers(ss, p).iter().any(|(name, empty)| spec_image(p, name) != empty)
}

/// The pod is ready for the switch: Running and Ready, or every container but the
/// non-working twins ready (`isHotUpgradingReady`).
pub fn hot_upgrading_ready(ss: &SidecarSet, p: &Pod) -> bool {
    if pod::phase(p) == "Running" && pod::is_ready(p) {
        return true;
    }
    let others: Vec<String> = other_containers(ss, p).into_iter().map(|(n, _)| n).collect();
    let statuses = p.status.as_ref().and_then(|s| s.container_statuses.as_deref()).unwrap_or(&[]);
    statuses.iter().filter(|s| !others.contains(&s.name)).all(|s| s.ready)
}

/// The old twins may be reset to the empty image now (step 5 of upstream's
/// `UpdateSidecarSet`): a switch is under way, every container of the SidecarSet but the
/// non-working twins runs its spec's image, and all but those are ready.
pub fn ready_to_flip(ss: &SidecarSet, p: &Pod) -> bool {
    if !in_hot_upgrading(ss, p) {
        return false;
    }
    let others: Vec<String> = other_containers(ss, p).into_iter().map(|(n, _)| n).collect();
    let statuses = p.status.as_ref().and_then(|s| s.container_statuses.as_deref()).unwrap_or(&[]);
    let consistent = sidecar_containers_in_pod(ss)
        .iter()
        .filter(|n| !others.contains(n) && spec_container(p, n).is_some())
        .all(|n| {
            statuses.iter().any(|s| {
                s.name == *n && normalize_image(&s.image) == normalize_image(spec_image(p, n))
            })
        });
    consistent && hot_upgrading_ready(ss, p)
}

/// The strategic merge patch that resets each non-working twin not on the empty image to it,
/// with its version and the working twin's alt version set to "0" (`flipPodSidecarContainerDo`).
/// `None` when nothing is to reset.
pub fn flip_patch(ss: &SidecarSet, p: &Pod) -> Option<Value> {
    let mut images = BTreeMap::new();
    let mut annotations = Map::new();
    for sc in hot_sidecars(ss) {
        let (working, other) = pair(&sc.container.name, p);
        let empty = empty_image(sc);
        if spec_container(p, &other).is_none() || spec_image(p, &other) == empty {
            continue;
        }
        images.insert(other.clone(), empty.to_owned());
        annotations.insert(version_annotation(&other), json!("0"));
        annotations.insert(version_alt_annotation(&working), json!("0"));
    }
    if images.is_empty() {
        return None;
    }
    Some(json!({
        "metadata": {"annotations": annotations},
        "spec": crate::inplace::containers_patch(p, &images),
    }))
}
