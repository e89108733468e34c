//! Which injected pods a SidecarSet upgrades now, and the patch that upgrades one in place
//! (`pkg/controller/sidecarset/sidecarset_strategy.go`, `GetNextUpgradePods` and
//! `calculateUpgradeCount`; `sidecarset_processor.go`; `pkg/control/sidecarcontrol`).
//!
//! A pod is *updated* when its `kruise.io/sidecarset-hash` entry for the SidecarSet has the
//! SidecarSet's current hash, and *upgradable* in place when its `-hash-without-image` entry
//! equals the current one (only images changed; upstream #1272: any other change reaches new
//! pods only). A pod is *ready* when its Ready condition is True and each of the SidecarSet's
//! containers runs the image its spec names (upstream's `IsPodStateConsistent`) and no hot
//! switch is under way ([`super::hotupgrade`]).
//!
//! The pods to upgrade: not updated, selected by `updateStrategy.selector` (canary),
//! upgradable; ordered unready first
//! (CloneSet's ActivePods order), then `priorityStrategy`, then `scatterStrategy`; the last
//! `partition` of them stay; then at most as many as keep the unready pods at or below
//! `maxUnavailable` (default 1; upgrading an unready pod costs nothing). Nothing while
//! `paused` or with type `NotUpdate`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kinetic_api::kruise::sidecarset::{
    SIDECARSET_HASH_ANNOTATION, SIDECARSET_HASH_WITHOUT_IMAGE_ANNOTATION,
    SIDECARSET_WORKING_HOT_UPGRADE_CONTAINER, SidecarSet, SidecarSetUpdateStrategyType,
};
use kinetic_machinery::selector::LabelSelector;
use serde_json::{Map, Value, json};

use super::{hash, hash_without_image, hotupgrade, set_name};
use crate::inplace::{containers_patch, normalize_image};
use crate::pod;
use crate::strategy::scaled_value;
use crate::update::{active_pods_cmp, scatter_sort, sort_by_priority};

/// The entry of annotation `key` (a JSON object keyed by SidecarSet name) for `set`.
fn entry(p: &Pod, key: &str, set: &str) -> Option<Value> {
    let raw = pod::annotation(p, key)?;
    let map: Map<String, Value> = serde_json::from_str(raw).ok()?;
    map.get(set).cloned()
}

/// The hash recorded for `set` under annotation `key`.
fn recorded_hash(p: &Pod, key: &str, set: &str) -> Option<String> {
    entry(p, key, set)?.get("hash").and_then(Value::as_str).map(str::to_owned)
}

/// Whether `set` is in the pod's injected list.
pub fn is_injected(p: &Pod, set: &str) -> bool {
    pod::annotation(p, kinetic_api::kruise::sidecarset::SIDECARSET_INJECTED_LIST_ANNOTATION)
        .unwrap_or("")
        .split(',')
        .any(|s| s == set)
}

/// The pod runs the SidecarSet's current sidecars (by hash).
pub fn is_updated(p: &Pod, ss: &SidecarSet) -> bool {
    recorded_hash(p, SIDECARSET_HASH_ANNOTATION, set_name(ss)).as_deref() == Some(&hash(ss))
}

/// Only images differ between the pod's sidecars and the SidecarSet's.
pub fn can_upgrade(p: &Pod, ss: &SidecarSet) -> bool {
    recorded_hash(p, SIDECARSET_HASH_WITHOUT_IMAGE_ANNOTATION, set_name(ss)).as_deref()
        == Some(&hash_without_image(ss))
}

/// Every container of the SidecarSet that the pod has (both twins of a hot sidecar) runs the
/// image its spec names and is ready (upstream's `IsPodStateConsistent`), and each hot
/// sidecar's non-working twin is on the empty image: a switch still under way is not done
/// (upstream's `IsPodReady`).
pub fn is_consistent(p: &Pod, ss: &SidecarSet) -> bool {
    let spec: BTreeMap<&str, &str> = p
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| (c.name.as_str(), c.image.as_deref().unwrap_or("")))
        .collect();
    let statuses = p.status.as_ref().and_then(|s| s.container_statuses.as_deref()).unwrap_or(&[]);
    let images_run = hotupgrade::sidecar_containers_in_pod(ss).iter().all(|name| {
        let Some(image) = spec.get(name.as_str()) else { return true };
        statuses.iter().any(|s| {
            s.name == *name && normalize_image(&s.image) == normalize_image(image) && s.ready
        })
    });
    images_run
        && hotupgrade::other_containers(ss, p)
            .iter()
            .all(|(name, empty)| spec.get(name.as_str()).is_none_or(|i| i == empty))
}

/// Ready and consistent.
pub fn is_ready(p: &Pod, ss: &SidecarSet) -> bool {
    pod::is_ready(p) && is_consistent(p, ss)
}

/// The counts of a SidecarSet's status over the pods it was injected into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub matched: i32,
    pub updated: i32,
    pub ready: i32,
    pub updated_ready: i32,
}

/// Counts `pods` (the active pods injected with `ss`).
pub fn counts(ss: &SidecarSet, pods: &[Pod]) -> Counts {
    let mut c = Counts::default();
    for p in pods {
        c.matched += 1;
        let updated = is_updated(p, ss);
        let ready = is_ready(p, ss);
        c.updated += i32::from(updated);
        c.ready += i32::from(ready);
        c.updated_ready += i32::from(updated && ready);
    }
    c
}

fn canary_selected(ss: &SidecarSet, p: &Pod) -> bool {
    let Some(sel) = &ss.spec.update_strategy.selector else { return true };
    let labels: Map<String, Value> =
        p.metadata.labels.iter().flatten().map(|(k, v)| (k.clone(), json!(v))).collect();
    serde_json::to_value(sel)
        .ok()
        .and_then(|v| LabelSelector::from_label_selector(&v).ok())
        .is_some_and(|s| s.matches(Some(&labels)))
}

/// The indexes (into `pods`, the active pods injected with `ss`) of the pods to upgrade now,
/// in order.
///
/// # Errors
/// A partition or maxUnavailable string that is not a percentage.
pub fn plan(ss: &SidecarSet, pods: &[Pod]) -> crate::Result<Vec<usize>> {
    let st = &ss.spec.update_strategy;
    if st.paused || st.type_.unwrap_or_default() == SidecarSetUpdateStrategyType::NotUpdate {
        return Ok(Vec::new());
    }
    let total = i32::try_from(pods.len()).unwrap_or(i32::MAX);
    let mut wait: Vec<usize> = (0..pods.len())
        .filter(|&i| {
            let p = &pods[i];
            !is_updated(p, ss) && canary_selected(ss, p) && can_upgrade(p, ss)
        })
        .collect();
    wait.sort_by(|&a, &b| active_pods_cmp(&pods[a], &pods[b]));
    if let Some(pr) = &st.priority_strategy {
        wait = sort_by_priority(pr, pods, wait);
    }
    if !st.scatter_strategy.is_empty() {
        wait = scatter_sort(&st.scatter_strategy, pods, wait);
    }
    let partition = match &st.partition {
        Some(v) => scaled_value(v, total, false, "spec.updateStrategy.partition")?.max(0),
        None => 0,
    };
    let keep = usize::try_from(partition).unwrap_or(0);
    if wait.len() <= keep {
        return Ok(Vec::new());
    }
    wait.truncate(wait.len() - keep);
    let max_unavailable = scaled_value(
        st.max_unavailable.as_ref().unwrap_or(&IntOrString::Int(1)),
        total,
        false,
        "spec.updateStrategy.maxUnavailable",
    )?;
    let mut not_ready = pods.iter().filter(|p| !is_ready(p, ss)).count();
    let max = usize::try_from(max_unavailable).unwrap_or(0);
    let mut out = Vec::new();
    for i in wait {
        if !is_ready(&pods[i], ss) {
            out.push(i);
            continue;
        }
        if not_ready >= max {
            break;
        }
        not_ready += 1;
        out.push(i);
    }
    Ok(out)
}

/// The strategic merge patch that upgrades `p` to `ss`'s images in place: the containers'
/// images (in the pod's order, as CloneSet's in-place patch) and the two hash annotations.
/// A hot sidecar's new image goes into the twin [`hotupgrade::container_to_upgrade`] picks,
/// which becomes the working one, with the version annotations rotated (upstream's
/// `updatePodSidecarContainer`). `revision` is the SidecarSet's latest ControllerRevision;
/// `now` the RFC 3339 time.
pub fn patch(p: &Pod, ss: &SidecarSet, revision: Option<&str>, now: &str) -> Value {
    let names: Vec<&str> =
        p.spec.iter().flat_map(|s| s.containers.iter()).map(|c| c.name.as_str()).collect();
    let mut images: BTreeMap<String, String> = BTreeMap::new();
    let mut working: BTreeMap<String, String> = BTreeMap::new();
    let mut extra: BTreeMap<String, String> = BTreeMap::new();
    let resource_version = ss.metadata.resource_version.as_deref().unwrap_or("");
    for sc in &ss.spec.containers {
        let image = sc.container.image.clone().unwrap_or_default();
        if sc.is_hot_upgrade() {
            let (upgraded, older) = hotupgrade::container_to_upgrade(sc, p);
            // Upstream compares with the twin's image: the working one already runs it.
            if !names.contains(&upgraded.as_str()) || hotupgrade::spec_image(p, &older) == image {
                continue;
            }
            extra.extend(hotupgrade::upgrade_annotations(p, &upgraded, &older, resource_version));
            working.insert(sc.container.name.clone(), upgraded.clone());
            images.insert(upgraded, image);
        } else if names.contains(&sc.container.name.as_str()) {
            images.insert(sc.container.name.clone(), image);
        }
    }
    let name = set_name(ss);
    let annotate = |key: &str, h: String| {
        let mut map: Map<String, Value> =
            pod::annotation(p, key).and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
        let mut e = json!({
            "updateTimestamp": now,
            "hash": h,
            "sidecarSetName": name,
            "sidecarList": ss.spec.containers.iter().map(|c| c.container.name.clone()).collect::<Vec<_>>(),
        });
        if let Some(r) = revision {
            e["controllerRevision"] = json!(r);
        }
        map.insert(name.to_owned(), e);
        Value::Object(map).to_string()
    };
    let mut annotations = Map::new();
    annotations.insert(
        SIDECARSET_HASH_ANNOTATION.into(),
        json!(annotate(SIDECARSET_HASH_ANNOTATION, hash(ss))),
    );
    annotations.insert(
        SIDECARSET_HASH_WITHOUT_IMAGE_ANNOTATION.into(),
        json!(annotate(SIDECARSET_HASH_WITHOUT_IMAGE_ANNOTATION, hash_without_image(ss))),
    );
    if !working.is_empty() {
        annotations.insert(
            SIDECARSET_WORKING_HOT_UPGRADE_CONTAINER.into(),
            json!(hotupgrade::working_annotation(p, &working)),
        );
    }
    annotations.extend(extra.into_iter().map(|(k, v)| (k, json!(v))));
    json!({
        "metadata": {"annotations": annotations},
        "spec": containers_patch(p, &images),
    })
}
