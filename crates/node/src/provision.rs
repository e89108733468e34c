//! The local-path provisioner (`kinetic.dev/local-path`), in the node agent because the volume
//! is a directory on this node (like rancher's local-path-provisioner, which runs a helper pod
//! on the node for the same reason).
//!
//! Level-triggered over watches of claims and volumes, one pass after each batch of changes and
//! every few seconds:
//!
//! - A claim without a volume whose `volume.kubernetes.io/storage-provisioner` is ours (set by
//!   the volume controller when no existing volume fits) and whose
//!   `volume.kubernetes.io/selected-node` is this node gets a directory
//!   `<data dir>/storage/pvc-<uid>_<namespace>_<name>` and a PersistentVolume `pvc-<claim uid>`:
//!   a `local` source, node affinity to this node's `kubernetes.io/hostname`, `claimRef` to the
//!   claim (the volume controller then binds both), the class's reclaim policy and
//!   `pv.kubernetes.io/provisioned-by`. A claim of an `Immediate` class has no selected node:
//!   the first agent to set it to itself (a patch with a resourceVersion precondition) takes it.
//! - A `Released` volume this provisioner made for this node with reclaim policy `Delete` loses
//!   its directory, then the PersistentVolume object.
//!
//! Creating the PersistentVolume is idempotent (its name comes from the claim's UID, so a
//! second pass gets AlreadyExists), and the directory is created before the volume, so a crash
//! in between leaves at most an empty directory that the next pass reuses.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kinetic_api::storage::{
    ANN_PROVISIONED_BY, ANN_SELECTED_NODE, ANN_STORAGE_PROVISIONER, LOCAL_PATH_PROVISIONER,
    provisioned_volume_name,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher;
use kube::{Client, ResourceExt as _};
use serde_json::json;

const RESYNC: Duration = Duration::from_secs(5);

/// Where this node keeps provisioned volumes.
pub fn storage_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("storage")
}

fn upsert<K: kube::Resource>(map: &mut HashMap<String, K>, ev: watcher::Event<K>) {
    let key = |o: &K| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
    match ev {
        watcher::Event::Init => map.clear(),
        watcher::Event::InitApply(o) | watcher::Event::Apply(o) => {
            map.insert(key(&o), o);
        }
        watcher::Event::InitDone => {}
        watcher::Event::Delete(o) => {
            map.remove(&key(&o));
        }
    }
}

/// Runs the provisioner for `node` until the task is aborted.
pub async fn run(client: Client, node: String, data_dir: PathBuf) {
    let dir = storage_dir(&data_dir);
    let mut claims_w = std::pin::pin!(
        watcher(Api::<PersistentVolumeClaim>::all(client.clone()), watcher::Config::default())
            .default_backoff()
    );
    let mut volumes_w = std::pin::pin!(
        watcher(Api::<PersistentVolume>::all(client.clone()), watcher::Config::default())
            .default_backoff()
    );
    let mut claims = HashMap::new();
    let mut volumes = HashMap::new();
    let mut deadline = tokio::time::Instant::now() + RESYNC;
    let mut dirty = false;
    loop {
        tokio::select! {
            ev = claims_w.next() => {
                if let Some(Ok(ev)) = ev { upsert(&mut claims, ev); }
                if !dirty { dirty = true; deadline = tokio::time::Instant::now() + Duration::from_millis(20); }
            }
            ev = volumes_w.next() => {
                if let Some(Ok(ev)) = ev { upsert(&mut volumes, ev); }
                if !dirty { dirty = true; deadline = tokio::time::Instant::now() + Duration::from_millis(20); }
            }
            () = tokio::time::sleep_until(deadline) => {
                dirty = false;
                deadline = tokio::time::Instant::now() + RESYNC;
                for c in claims.values() {
                    if let Err(error) = provision(&client, &node, &dir, c, &volumes).await {
                        tracing::warn!(claim = %c.name_any(), %error, "provisioning failed, will retry");
                    }
                }
                for v in volumes.values() {
                    if let Err(error) = reclaim(&client, &dir, v).await {
                        tracing::warn!(volume = %v.name_any(), %error, "deleting the volume failed, will retry");
                    }
                }
            }
        }
    }
}

fn is_ours(pvc: &PersistentVolumeClaim) -> bool {
    pvc.annotations().get(ANN_STORAGE_PROVISIONER).map(String::as_str)
        == Some(LOCAL_PATH_PROVISIONER)
}

async fn provision(
    client: &Client,
    node: &str,
    dir: &Path,
    pvc: &PersistentVolumeClaim,
    volumes: &HashMap<String, PersistentVolume>,
) -> Result<(), kube::Error> {
    let spec = pvc.spec.clone().unwrap_or_default();
    if pvc.metadata.deletion_timestamp.is_some()
        || spec.volume_name.as_deref().is_some_and(|v| !v.is_empty())
        || !is_ours(pvc)
    {
        return Ok(());
    }
    let uid = pvc.uid().unwrap_or_default();
    let pv_name = provisioned_volume_name(&uid);
    if volumes.contains_key(&format!("/{pv_name}")) {
        return Ok(());
    }
    let ns = pvc.namespace().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    match pvc.annotations().get(ANN_SELECTED_NODE) {
        Some(n) if n == node => {}
        Some(_) => return Ok(()),
        None => {
            // An Immediate claim: take it for this node unless another agent was faster.
            let patch = json!({"metadata": {
                "resourceVersion": pvc.resource_version(),
                "annotations": {ANN_SELECTED_NODE: node},
            }});
            match claims
                .patch(&pvc.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
    let class_name = spec.storage_class_name.clone().unwrap_or_default();
    let class = Api::<StorageClass>::all(client.clone()).get_opt(&class_name).await?;
    let reclaim = class.and_then(|c| c.reclaim_policy).unwrap_or_else(|| "Delete".to_owned());
    let path = dir.join(format!("{pv_name}_{ns}_{}", pvc.name_any()));
    if let Err(e) = std::fs::create_dir_all(&path).and_then(|()| {
        use std::os::unix::fs::PermissionsExt as _;
        // local-path-provisioner makes the directory writable by any pod user.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
    }) {
        tracing::warn!(path = %path.display(), error = %e, "creating the volume directory failed");
        return Ok(());
    }
    let storage = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_default();
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {
            "name": pv_name,
            "annotations": {ANN_PROVISIONED_BY: LOCAL_PATH_PROVISIONER},
        },
        "spec": {
            "capacity": {"storage": storage},
            "accessModes": spec.access_modes.clone().unwrap_or_default(),
            "persistentVolumeReclaimPolicy": reclaim,
            "storageClassName": class_name,
            "volumeMode": "Filesystem",
            "claimRef": {
                "kind": "PersistentVolumeClaim",
                "apiVersion": "v1",
                "namespace": ns,
                "name": pvc.name_any(),
                "uid": uid,
                "resourceVersion": pvc.resource_version(),
            },
            "local": {"path": path.to_string_lossy()},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
            ]}]}},
        },
    }))
    .map_err(kube::Error::SerdeError)?;
    match Api::<PersistentVolume>::all(client.clone()).create(&PostParams::default(), &pv).await {
        Ok(_) => {
            tracing::info!(claim = %format!("{ns}/{}", pvc.name_any()), volume = %pv_name,
                path = %path.display(), "volume provisioned");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether `path` is a volume directory this node's provisioner made: a `pvc-…` entry directly
/// in `dir`. Another node's volume has its path under that node's data directory, and a path
/// with `..` components (`<dir>/..` has `<dir>` as its parent too) is never removed.
fn made_here(dir: &Path, path: &Path) -> bool {
    use std::path::Component;
    let last = path.components().next_back();
    matches!(last, Some(Component::Normal(n)) if n.to_string_lossy().starts_with("pvc-"))
        && path.parent() == Some(dir)
        && path.components().all(|c| !matches!(c, Component::ParentDir))
}

/// Deletes a Released `Delete` volume this node provisioned: directory first, then the object.
async fn reclaim(client: &Client, dir: &Path, pv: &PersistentVolume) -> Result<(), kube::Error> {
    let Some(spec) = &pv.spec else { return Ok(()) };
    if pv.annotations().get(ANN_PROVISIONED_BY).map(String::as_str) != Some(LOCAL_PATH_PROVISIONER)
        || pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Released")
        || spec.persistent_volume_reclaim_policy.as_deref() != Some("Delete")
        || pv.metadata.deletion_timestamp.is_some()
    {
        return Ok(());
    }
    let Some(path) = spec.local.as_ref().map(|l| PathBuf::from(&l.path)) else { return Ok(()) };
    if !made_here(dir, &path) {
        return Ok(());
    }
    match std::fs::remove_dir_all(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "removing the volume directory failed");
            return Ok(());
        }
    }
    match Api::<PersistentVolume>::all(client.clone())
        .delete(&pv.name_any(), &DeleteParams::default())
        .await
    {
        Ok(_) => {
            tracing::info!(volume = %pv.name_any(), path = %path.display(), "volume deleted");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_its_own_volume_directories_are_removed() {
        let dir = Path::new("/var/lib/kinetic/node/storage");
        assert!(made_here(dir, &dir.join("pvc-1234_default_data")));
        assert!(!made_here(dir, &dir.join("..")), "the parent of the data directory");
        // `.` in the middle names the same directory (components() drops it).
        assert!(made_here(dir, Path::new("/var/lib/kinetic/node/storage/./pvc-x")));
        assert!(!made_here(dir, &dir.join("other")));
        assert!(!made_here(dir, Path::new("/other/storage/pvc-1")), "another node's volume");
        assert!(!made_here(dir, Path::new("/")));
    }
}
