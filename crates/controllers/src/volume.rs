//! The PersistentVolume controller: kube-controller-manager's `persistentvolume-binder`,
//! `pvc-protection` and `pv-protection` controllers, reduced to what Kinetic's local volumes
//! need, talking to the API only through `kube`.
//!
//! One task watches claims, volumes, classes, pods and nodes into memory and, after every batch
//! of changes (and every [`RESYNC`] so failed writes are retried), makes one level-triggered
//! pass ([`State::plan`] decides, [`apply`] writes):
//!
//! - **Binding** (upstream `syncUnboundClaim`): an unbound claim of an `Immediate` class, or of a
//!   `WaitForFirstConsumer` class once the scheduler annotated
//!   `volume.kubernetes.io/selected-node`, is bound to the smallest `Available` volume that
//!   matches it ([`volume_fits`]: class, access modes, volume mode, capacity, node affinity of
//!   the selected node). Binding is two writes, as upstream: the volume's `spec.claimRef` first
//!   (with a resourceVersion precondition, so two claims never take one volume), then the claim's
//!   `spec.volumeName` and both statuses on the following passes.
//! - **Provisioning hand-off**: a claim nothing matches whose class names a provisioner gets
//!   `volume.kubernetes.io/storage-provisioner` (and the beta annotation), which is what external
//!   provisioners — here the node agent's local-path provisioner — wait for.
//! - **Completing a bind**: a volume whose `claimRef` names an existing claim (a provisioned or
//!   pre-bound volume) binds that claim; volume and claim become `Bound`.
//! - **Release**: a volume whose claim is gone becomes `Released` (upstream's
//!   `syncVolume`); the provisioner that made it deletes it when its policy is `Delete`, and a
//!   `Retain` volume stays `Released`. A claim whose volume is gone becomes `Lost`.
//! - **Protection**: a deleting claim loses `kubernetes.io/pvc-protection` once no
//!   non-terminated pod in its namespace uses it; a deleting volume loses
//!   `kubernetes.io/pv-protection` once it is not `Bound`.
//!
//! Not done: volume expansion, the `Recycle` policy, deleting manually created `Delete` volumes
//! (no in-tree deleter plugin; they stay `Released`), the retroactive default class for claims
//! created before a default class existed, label selectors on claims, and block volumes.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt as _};
use serde_json::{Value, json};

use crate::scheduler::fit::{NodeInfo, selector_matches};
use crate::scheduler::quantity;

pub use kinetic_api::storage::{
    ANN_BETA_STORAGE_PROVISIONER, ANN_PROVISIONED_BY, ANN_SELECTED_NODE, ANN_STORAGE_PROVISIONER,
    PV_PROTECTION, PVC_PROTECTION,
};

/// How often a pass runs without any change, to retry writes that failed.
pub const RESYNC: Duration = Duration::from_secs(5);

/// A claim's class: `spec.storageClassName`, `""` for none.
pub fn claim_class(pvc: &PersistentVolumeClaim) -> &str {
    pvc.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()).unwrap_or("")
}

/// Whether a class binds at once (`Immediate`, also for a missing class, as upstream) or waits
/// for the first pod.
pub fn waits_for_first_consumer(class: Option<&StorageClass>) -> bool {
    class.and_then(|c| c.volume_binding_mode.as_deref()) == Some("WaitForFirstConsumer")
}

/// The bytes a claim requests (`spec.resources.requests.storage`), 0 if unparsable.
pub fn requested_bytes(pvc: &PersistentVolumeClaim) -> i64 {
    pvc.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| quantity::value(&q.0).ok())
        .unwrap_or(0)
}

fn capacity_bytes(pv: &PersistentVolume) -> i64 {
    pv.spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| quantity::value(&q.0).ok())
        .unwrap_or(0)
}

/// Whether a volume's node affinity admits `node` (no affinity admits every node).
pub fn affinity_admits(pv: &PersistentVolume, node: &NodeInfo) -> bool {
    match pv.spec.as_ref().and_then(|s| s.node_affinity.as_ref()).and_then(|a| a.required.as_ref())
    {
        Some(sel) => selector_matches(sel, node),
        None => true,
    }
}

fn phase_of_pv(pv: &PersistentVolume) -> &str {
    pv.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn phase_of_pvc(pvc: &PersistentVolumeClaim) -> &str {
    pvc.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// Upstream's `checkVolumeSatisfyClaim` (and `findMatchingVolume`'s filters) for an available
/// volume: same class, every requested access mode, same volume mode, enough capacity, and
/// node affinity admitting the selected node when there is one.
pub fn volume_fits(
    pv: &PersistentVolume,
    pvc: &PersistentVolumeClaim,
    node: Option<&NodeInfo>,
) -> bool {
    let (Some(ps), Some(cs)) = (pv.spec.as_ref(), pvc.spec.as_ref()) else { return false };
    if ps.storage_class_name.as_deref().unwrap_or("") != claim_class(pvc) {
        return false;
    }
    let modes = ps.access_modes.as_deref().unwrap_or_default();
    if !cs.access_modes.iter().flatten().all(|m| modes.contains(m)) {
        return false;
    }
    let mode = |m: Option<&str>| m.unwrap_or("Filesystem").to_owned();
    if mode(ps.volume_mode.as_deref()) != mode(cs.volume_mode.as_deref()) {
        return false;
    }
    if capacity_bytes(pv) < requested_bytes(pvc) {
        return false;
    }
    node.is_none_or(|n| affinity_admits(pv, n))
}

fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

/// The in-memory view of one watched kind.
struct Cache<K> {
    items: HashMap<String, K>,
    buffer: HashMap<String, K>,
    synced: bool,
}

impl<K: Resource + Clone> Cache<K> {
    fn new() -> Self {
        Self { items: HashMap::new(), buffer: HashMap::new(), synced: false }
    }

    fn on(&mut self, ev: watcher::Event<K>) {
        let k = |o: &K| key(&o.namespace().unwrap_or_default(), &o.name_any());
        match ev {
            watcher::Event::Init => self.buffer.clear(),
            watcher::Event::InitApply(o) => {
                self.buffer.insert(k(&o), o);
            }
            watcher::Event::InitDone => {
                self.items = std::mem::take(&mut self.buffer);
                self.synced = true;
            }
            watcher::Event::Apply(o) => {
                self.items.insert(k(&o), o);
            }
            watcher::Event::Delete(o) => {
                self.items.remove(&k(&o));
            }
        }
    }
}

/// One write the pass decided on.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Merge patch of a volume (`status` true: of its status subresource).
    Volume { name: String, status: bool, patch: Value },
    /// Merge patch of a claim.
    Claim { ns: String, name: String, status: bool, patch: Value },
}

/// Everything the controller knows, keyed `namespace/name` (`/name` for cluster objects).
pub struct State {
    pub claims: HashMap<String, PersistentVolumeClaim>,
    pub volumes: HashMap<String, PersistentVolume>,
    pub classes: HashMap<String, StorageClass>,
    pub pods: HashMap<String, Pod>,
    pub nodes: HashMap<String, Node>,
}

fn without(list: &[String], f: &str) -> Vec<String> {
    list.iter().filter(|x| *x != f).cloned().collect()
}

fn claim_ref(pvc: &PersistentVolumeClaim) -> Value {
    json!({
        "kind": "PersistentVolumeClaim",
        "apiVersion": "v1",
        "namespace": pvc.namespace(),
        "name": pvc.name_any(),
        "uid": pvc.uid(),
        "resourceVersion": pvc.resource_version(),
    })
}

impl State {
    fn class(&self, name: &str) -> Option<&StorageClass> {
        if name.is_empty() { None } else { self.classes.get(&key("", name)) }
    }

    fn claim_in_use(&self, pvc: &PersistentVolumeClaim) -> bool {
        let ns = pvc.namespace().unwrap_or_default();
        let name = pvc.name_any();
        self.pods.values().any(|p| {
            p.namespace().as_deref() == Some(ns.as_str())
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
                && p.spec.as_ref().and_then(|s| s.volumes.as_ref()).into_iter().flatten().any(|v| {
                    v.persistent_volume_claim.as_ref().is_some_and(|c| c.claim_name == name)
                })
        })
    }

    /// The writes that move every claim and volume one step towards its desired state.
    pub fn plan(&self) -> Vec<Write> {
        let mut out = Vec::new();
        let mut taken: Vec<String> = Vec::new();
        let mut volumes: Vec<&PersistentVolume> = self.volumes.values().collect();
        volumes.sort_by_key(|v| v.name_any());
        for pv in &volumes {
            self.plan_volume(pv, &mut out, &mut taken);
        }
        let mut claims: Vec<&PersistentVolumeClaim> = self.claims.values().collect();
        claims.sort_by_key(|c| (c.metadata.creation_timestamp.clone(), c.name_any()));
        for pvc in claims {
            self.plan_claim(pvc, &volumes, &mut out, &mut taken);
        }
        out
    }

    fn plan_volume(&self, pv: &PersistentVolume, out: &mut Vec<Write>, taken: &mut Vec<String>) {
        let name = pv.name_any();
        let phase = phase_of_pv(pv);
        let status = |phase: &str| Write::Volume {
            name: name.clone(),
            status: true,
            patch: json!({"status": {"phase": phase}}),
        };
        if pv.metadata.deletion_timestamp.is_some() {
            let fins = pv.finalizers();
            if fins.iter().any(|f| f == PV_PROTECTION) && phase != "Bound" {
                out.push(Write::Volume {
                    name: name.clone(),
                    status: false,
                    patch: json!({"metadata": {
                        "finalizers": without(fins, PV_PROTECTION),
                        "resourceVersion": pv.resource_version(),
                    }}),
                });
            }
        }
        let Some(cr) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
            if !matches!(phase, "Available" | "Failed") {
                out.push(status("Available"));
            }
            return;
        };
        let ckey = key(
            cr.namespace.as_deref().unwrap_or("default"),
            cr.name.as_deref().unwrap_or_default(),
        );
        taken.push(ckey.clone());
        let claim = self.claims.get(&ckey).filter(|c| {
            cr.uid.as_deref().is_none_or(|u| u.is_empty() || c.uid().as_deref() == Some(u))
        });
        let Some(claim) = claim else {
            // Upstream: a volume bound to a claim that is gone is Released; one pre-bound to
            // a claim that does not exist yet (no uid) waits Available.
            let bound_once = cr.uid.as_deref().is_some_and(|u| !u.is_empty());
            let want = if bound_once { "Released" } else { "Available" };
            if phase != want && phase != "Failed" {
                out.push(status(want));
            }
            return;
        };
        let volume_name = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()).unwrap_or("");
        if volume_name.is_empty() {
            if claim.metadata.deletion_timestamp.is_some() {
                return;
            }
            // Finish the bind on the claim: volumeName and the completion annotations.
            out.push(Write::Claim {
                ns: claim.namespace().unwrap_or_default(),
                name: claim.name_any(),
                status: false,
                patch: json!({"metadata": {"annotations": {
                    "pv.kubernetes.io/bind-completed": "yes",
                    "pv.kubernetes.io/bound-by-controller": "yes",
                }}, "spec": {"volumeName": name}}),
            });
            return;
        }
        if volume_name != name {
            // The claim went to another volume: this one is free again (upstream unbinds a
            // volume the controller bound and releases one a user pre-bound).
            if phase != "Released" {
                out.push(status("Released"));
            }
            return;
        }
        if phase != "Bound" {
            out.push(status("Bound"));
        }
        let st = claim.status.as_ref();
        let capacity = pv.spec.as_ref().and_then(|s| s.capacity.clone());
        let modes = pv.spec.as_ref().and_then(|s| s.access_modes.clone());
        if phase_of_pvc(claim) != "Bound"
            || st.and_then(|s| s.capacity.as_ref()) != capacity.as_ref()
            || st.and_then(|s| s.access_modes.as_ref()) != modes.as_ref()
        {
            out.push(Write::Claim {
                ns: claim.namespace().unwrap_or_default(),
                name: claim.name_any(),
                status: true,
                patch: json!({"status": {"phase": "Bound", "capacity": capacity, "accessModes": modes}}),
            });
        }
    }

    fn plan_claim(
        &self,
        pvc: &PersistentVolumeClaim,
        volumes: &[&PersistentVolume],
        out: &mut Vec<Write>,
        taken: &mut Vec<String>,
    ) {
        let ns = pvc.namespace().unwrap_or_default();
        let name = pvc.name_any();
        let ckey = key(&ns, &name);
        if pvc.metadata.deletion_timestamp.is_some() {
            let fins = pvc.finalizers();
            if fins.iter().any(|f| f == PVC_PROTECTION) && !self.claim_in_use(pvc) {
                out.push(Write::Claim {
                    ns,
                    name,
                    status: false,
                    patch: json!({"metadata": {
                        "finalizers": without(fins, PVC_PROTECTION),
                        "resourceVersion": pvc.resource_version(),
                    }}),
                });
            }
            return;
        }
        let volume_name = pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()).unwrap_or("");
        if !volume_name.is_empty() {
            if !self.volumes.contains_key(&key("", volume_name)) && phase_of_pvc(pvc) == "Bound" {
                out.push(Write::Claim {
                    ns,
                    name,
                    status: true,
                    patch: json!({"status": {"phase": "Lost"}}),
                });
            }
            return;
        }
        if taken.contains(&ckey) {
            // A volume names this claim already; plan_volume finishes the bind.
            return;
        }
        let class = self.class(claim_class(pvc));
        let selected = pvc.annotations().get(ANN_SELECTED_NODE);
        if waits_for_first_consumer(class) && selected.is_none() {
            return;
        }
        let node = selected.and_then(|n| self.nodes.get(&key("", n))).map(NodeInfo::from_node);
        if selected.is_some() && node.is_none() {
            return;
        }
        let best = volumes
            .iter()
            .filter(|v| v.metadata.deletion_timestamp.is_none())
            .filter(|v| v.spec.as_ref().is_some_and(|s| s.claim_ref.is_none()))
            .filter(|v| phase_of_pv(v) == "Available")
            .filter(|v| !taken.contains(&format!("pv:{}", v.name_any())))
            .filter(|v| volume_fits(v, pvc, node.as_ref()))
            .min_by_key(|v| (capacity_bytes(v), v.name_any()));
        if let Some(pv) = best {
            taken.push(format!("pv:{}", pv.name_any()));
            taken.push(ckey);
            out.push(Write::Volume {
                name: pv.name_any(),
                status: false,
                patch: json!({"metadata": {
                    "resourceVersion": pv.resource_version(),
                    "annotations": {"pv.kubernetes.io/bound-by-controller": "yes"},
                }, "spec": {"claimRef": claim_ref(pvc)}}),
            });
            return;
        }
        if let Some(p) = class.map(|c| c.provisioner.as_str()).filter(|p| !p.is_empty())
            && p != "kubernetes.io/no-provisioner"
            && pvc.annotations().get(ANN_STORAGE_PROVISIONER).map(String::as_str) != Some(p)
        {
            out.push(Write::Claim {
                ns,
                name,
                status: false,
                patch: json!({"metadata": {"annotations": {
                    ANN_STORAGE_PROVISIONER: p,
                    ANN_BETA_STORAGE_PROVISIONER: p,
                }}}),
            });
        }
    }
}

/// Sends one write; conflicts and vanished objects are normal (the next pass re-plans).
async fn apply(client: &Client, w: Write) {
    let pp = PatchParams::default();
    let res = match &w {
        Write::Volume { name, status, patch } => {
            let api: Api<PersistentVolume> = Api::all(client.clone());
            if *status {
                api.patch_status(name, &pp, &Patch::Merge(patch)).await.map(drop)
            } else {
                api.patch(name, &pp, &Patch::Merge(patch)).await.map(drop)
            }
        }
        Write::Claim { ns, name, status, patch } => {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
            if *status {
                api.patch_status(name, &pp, &Patch::Merge(patch)).await.map(drop)
            } else {
                api.patch(name, &pp, &Patch::Merge(patch)).await.map(drop)
            }
        }
    };
    match res {
        Ok(()) => tracing::debug!(write = ?w, "volume controller wrote"),
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => {
            tracing::debug!(reason = %s.reason, "volume write skipped, will re-plan");
        }
        Err(error) => tracing::warn!(%error, write = ?w, "volume controller write failed"),
    }
}

fn mark(dirty: &mut bool, deadline: &mut tokio::time::Instant) {
    if !*dirty {
        *dirty = true;
        *deadline = tokio::time::Instant::now() + Duration::from_millis(20);
    }
}

/// Runs the volume controller until `shutdown` completes.
///
/// # Errors
/// A watch stream ends (kube's watcher retries, so this does not happen in practice).
pub async fn run(
    client: Client,
    shutdown: impl std::future::Future<Output = ()>,
) -> crate::Result<()> {
    let cfg = watcher::Config::default;
    let mut claims = std::pin::pin!(
        watcher(Api::<PersistentVolumeClaim>::all(client.clone()), cfg()).default_backoff()
    );
    let mut volumes = std::pin::pin!(
        watcher(Api::<PersistentVolume>::all(client.clone()), cfg()).default_backoff()
    );
    let mut classes =
        std::pin::pin!(watcher(Api::<StorageClass>::all(client.clone()), cfg()).default_backoff());
    let mut pods = std::pin::pin!(
        watcher(
            Api::<Pod>::all(client.clone()),
            cfg().fields("status.phase!=Succeeded,status.phase!=Failed")
        )
        .default_backoff()
    );
    let mut nodes =
        std::pin::pin!(watcher(Api::<Node>::all(client.clone()), cfg()).default_backoff());
    let mut shutdown = std::pin::pin!(shutdown);
    let (mut c, mut v, mut s, mut p, mut n) =
        (Cache::new(), Cache::new(), Cache::new(), Cache::new(), Cache::new());
    // A pass runs shortly after the first change of a batch (never postponed by later ones, so
    // a stream of pod updates cannot starve it), and every RESYNC without changes.
    let mut dirty = false;
    let mut deadline = tokio::time::Instant::now() + RESYNC;
    tracing::info!("volume controller started");
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            ev = claims.next() => match ev {
                Some(Ok(ev)) => { c.on(ev); mark(&mut dirty, &mut deadline); }
                Some(Err(error)) => tracing::warn!(%error, "claim watch failed, retrying"),
                None => return Err(crate::Error::WatchEnded { resource: "persistentvolumeclaim" }),
            },
            ev = volumes.next() => match ev {
                Some(Ok(ev)) => { v.on(ev); mark(&mut dirty, &mut deadline); }
                Some(Err(error)) => tracing::warn!(%error, "volume watch failed, retrying"),
                None => return Err(crate::Error::WatchEnded { resource: "persistentvolume" }),
            },
            ev = classes.next() => match ev {
                Some(Ok(ev)) => { s.on(ev); mark(&mut dirty, &mut deadline); }
                Some(Err(error)) => tracing::warn!(%error, "class watch failed, retrying"),
                None => return Err(crate::Error::WatchEnded { resource: "storageclass" }),
            },
            ev = pods.next() => match ev {
                Some(Ok(ev)) => { p.on(ev); mark(&mut dirty, &mut deadline); }
                Some(Err(error)) => tracing::warn!(%error, "pod watch failed, retrying"),
                None => return Err(crate::Error::WatchEnded { resource: "pod" }),
            },
            ev = nodes.next() => match ev {
                Some(Ok(ev)) => { n.on(ev); mark(&mut dirty, &mut deadline); }
                Some(Err(error)) => tracing::warn!(%error, "node watch failed, retrying"),
                None => return Err(crate::Error::WatchEnded { resource: "node" }),
            },
            () = tokio::time::sleep_until(deadline) => {
                dirty = false;
                deadline = tokio::time::Instant::now() + RESYNC;
                if !(c.synced && v.synced && s.synced && p.synced && n.synced) {
                    continue;
                }
                let state = State {
                    claims: c.items.clone(),
                    volumes: v.items.clone(),
                    classes: s.items.clone(),
                    pods: p.items.clone(),
                    nodes: n.items.clone(),
                };
                for w in state.plan() {
                    apply(&client, w).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn state(objs: Vec<Value>) -> State {
        let mut s = State {
            claims: HashMap::new(),
            volumes: HashMap::new(),
            classes: HashMap::new(),
            pods: HashMap::new(),
            nodes: HashMap::new(),
        };
        for o in objs {
            let ns = o["metadata"]["namespace"].as_str().unwrap_or("").to_owned();
            let k = key(&ns, o["metadata"]["name"].as_str().unwrap());
            match o["kind"].as_str().unwrap() {
                "PersistentVolumeClaim" => {
                    s.claims.insert(k, serde_json::from_value(o).unwrap()).map(drop)
                }
                "PersistentVolume" => {
                    s.volumes.insert(k, serde_json::from_value(o).unwrap()).map(drop)
                }
                "StorageClass" => s.classes.insert(k, serde_json::from_value(o).unwrap()).map(drop),
                "Pod" => s.pods.insert(k, serde_json::from_value(o).unwrap()).map(drop),
                "Node" => s.nodes.insert(k, serde_json::from_value(o).unwrap()).map(drop),
                other => panic!("{other}"),
            };
        }
        s
    }

    fn class(mode: &str) -> Value {
        json!({"kind": "StorageClass", "metadata": {"name": "c"}, "provisioner": "kinetic.dev/local-path",
            "volumeBindingMode": mode})
    }

    fn claim(extra: Value) -> Value {
        let mut c = json!({"kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "ns", "uid": "u1", "resourceVersion": "7",
                "finalizers": [PVC_PROTECTION]},
            "spec": {"storageClassName": "c", "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Pending"}});
        json_patch_merge(&mut c, extra);
        c
    }

    fn volume(name: &str, size: &str, extra: Value) -> Value {
        let mut v = json!({"kind": "PersistentVolume", "metadata": {"name": name, "resourceVersion": "3"},
            "spec": {"storageClassName": "c", "accessModes": ["ReadWriteOnce"],
                "capacity": {"storage": size}, "hostPath": {"path": "/x"}},
            "status": {"phase": "Available"}});
        json_patch_merge(&mut v, extra);
        v
    }

    fn json_patch_merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    json_patch_merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn plan(objs: Vec<Value>) -> Vec<String> {
        state(objs)
            .plan()
            .into_iter()
            .map(|w| match w {
                Write::Volume { name, status, patch } => {
                    format!("pv/{name} status={status} {patch}")
                }
                Write::Claim { ns, name, status, patch } => {
                    format!("pvc/{ns}/{name} status={status} {patch}")
                }
            })
            .collect()
    }

    #[test]
    fn wait_for_first_consumer_claims_wait_for_the_selected_node() {
        assert!(plan(vec![class("WaitForFirstConsumer"), claim(json!({}))]).is_empty());
        let selected = claim(json!({"metadata": {"annotations": {ANN_SELECTED_NODE: "n1"}}}));
        let node = json!({"kind": "Node", "metadata": {"name": "n1"}});
        let w = plan(vec![class("WaitForFirstConsumer"), selected, node]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains(ANN_STORAGE_PROVISIONER) && w[0].contains("kinetic.dev/local-path"),
            "{w:?}"
        );
    }

    #[test]
    fn immediate_claims_take_the_smallest_fitting_volume() {
        let w = plan(vec![
            class("Immediate"),
            claim(json!({})),
            volume("big", "10Gi", json!({})),
            volume("small", "1Gi", json!({})),
            volume("tiny", "100Mi", json!({})),
            volume("rwx", "1Gi", json!({"spec": {"accessModes": ["ReadWriteMany"]}})),
        ]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("pv/small status=false") && w[0].contains("\"uid\":\"u1\""),
            "{w:?}"
        );
    }

    #[test]
    fn a_volume_naming_a_claim_completes_the_bind() {
        let cref = json!({"spec": {"claimRef": {"namespace": "ns", "name": "data", "uid": "u1"}},
            "status": {"phase": "Pending"}});
        let w =
            plan(vec![class("Immediate"), claim(json!({})), volume("pv1", "1Gi", cref.clone())]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("pvc/ns/data status=false") && w[0].contains("\"volumeName\":\"pv1\""),
            "{w:?}"
        );
        let named = claim(json!({"spec": {"volumeName": "pv1"}}));
        let w = plan(vec![class("Immediate"), named, volume("pv1", "1Gi", cref.clone())]);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("pv/pv1 status=true") && w[0].contains("Bound"), "{w:?}");
        assert!(w[1].starts_with("pvc/ns/data status=true") && w[1].contains("Bound"), "{w:?}");
        // The claim is gone: the volume is Released.
        let w = plan(vec![volume("pv1", "1Gi", cref)]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("Released"), "{w:?}");
    }

    #[test]
    fn protection_holds_while_a_pod_uses_the_claim() {
        let deleting = claim(json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}}));
        let pod = json!({"kind": "Pod", "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [], "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]},
            "status": {"phase": "Running"}});
        assert!(plan(vec![deleting.clone(), pod]).is_empty());
        let w = plan(vec![deleting]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("\"finalizers\":[]"), "{w:?}");
    }
}
