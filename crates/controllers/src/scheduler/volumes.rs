//! kube-scheduler's VolumeBinding plugin for the scheduler: the claims, volumes and classes a
//! pod's `persistentVolumeClaim` volumes depend on, kept in memory from watches.
//!
//! PreFilter ([`Volumes::prefilter`]): a missing claim, a claim being deleted, or an unbound claim
//! of an `Immediate` class makes the pod unschedulable on every node with upstream's message.
//! Filter ([`PodVolumes::filter`]): a bound claim's volume node affinity must admit the node;
//! an unbound `WaitForFirstConsumer` claim needs an available matching volume on the node unless
//! its class has a provisioner (then any node will do: the provisioner follows the pod). PreBind
//! (in the scheduler's bind task): the unbound `WaitForFirstConsumer` claims get
//! `volume.kubernetes.io/selected-node`.
//!
//! Deliberate difference: upstream's PreBind waits until the claims are bound before binding the
//! pod; Kinetic binds the pod at once and the node agent waits for the claims to be bound before
//! it mounts them, which keeps the bind path free of waits (the scheduler never blocks).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt as _;
use kube::runtime::watcher;

use super::fit::NodeInfo;
use crate::volume::{affinity_admits, claim_class, volume_fits, waits_for_first_consumer};

/// Upstream's `ErrReasonNodeConflict`.
pub const REASON_NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
/// Upstream's `ErrReasonBindConflict`.
pub const REASON_BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";

/// One watched kind, keyed `namespace/name`.
#[derive(Debug)]
pub struct Watched<K> {
    pub items: HashMap<String, K>,
    relist: Option<HashMap<String, K>>,
    pub synced: bool,
}

impl<K> Default for Watched<K> {
    fn default() -> Self {
        Self { items: HashMap::new(), relist: None, synced: false }
    }
}

impl<K: kube::Resource> Watched<K> {
    /// Applies a watch event; true when the visible state changed.
    pub fn on(&mut self, ev: watcher::Event<K>) -> bool {
        let key = |o: &K| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
        match ev {
            watcher::Event::Init => {
                self.relist = Some(HashMap::new());
                false
            }
            watcher::Event::InitApply(o) => {
                if let Some(r) = &mut self.relist {
                    r.insert(key(&o), o);
                }
                false
            }
            watcher::Event::InitDone => {
                self.items = self.relist.take().unwrap_or_default();
                self.synced = true;
                true
            }
            watcher::Event::Apply(o) => {
                self.items.insert(key(&o), o);
                true
            }
            watcher::Event::Delete(o) => {
                self.items.remove(&key(&o));
                true
            }
        }
    }
}

/// The claims, volumes and classes the scheduler watches.
#[derive(Debug, Default)]
pub struct Volumes {
    pub claims: Watched<PersistentVolumeClaim>,
    pub volumes: Watched<PersistentVolume>,
    pub classes: Watched<StorageClass>,
}

/// What a pod's claims require of a node, from [`Volumes::prefilter`].
#[derive(Debug, Default)]
pub struct PodVolumes {
    /// Volumes of bound claims.
    pub bound: Vec<PersistentVolume>,
    /// Unbound `WaitForFirstConsumer` claims with whether their class provisions.
    pub unbound: Vec<(PersistentVolumeClaim, bool)>,
}

impl Volumes {
    pub fn synced(&self) -> bool {
        self.claims.synced && self.volumes.synced && self.classes.synced
    }

    /// The pod's claims, or upstream's PreFilter message when no node can take the pod.
    pub fn prefilter(&self, pod: &Pod) -> Result<PodVolumes, String> {
        let ns = pod.namespace().unwrap_or_default();
        let mut out = PodVolumes::default();
        let claims = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|v| v.persistent_volume_claim.as_ref());
        for c in claims {
            let name = &c.claim_name;
            let Some(pvc) = self.claims.items.get(&format!("{ns}/{name}")) else {
                return Err(format!("persistentvolumeclaim \"{name}\" not found"));
            };
            if pvc.metadata.deletion_timestamp.is_some() {
                return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
            }
            let volume = pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()).unwrap_or("");
            if !volume.is_empty() {
                match self.volumes.items.get(&format!("/{volume}")) {
                    Some(pv) => out.bound.push(pv.clone()),
                    None => {
                        return Err(format!(
                            "pvc {ns}/{name} is bound to non-existent pv {volume}"
                        ));
                    }
                }
                continue;
            }
            let class = self.classes.items.get(&format!("/{}", claim_class(pvc)));
            if !waits_for_first_consumer(class) {
                return Err("pod has unbound immediate PersistentVolumeClaims".to_owned());
            }
            let provisions = class.is_some_and(|c| {
                !c.provisioner.is_empty() && c.provisioner != "kubernetes.io/no-provisioner"
            });
            out.unbound.push((pvc.clone(), provisions));
        }
        Ok(out)
    }

    /// Upstream's VolumeBinding Filter for one node.
    pub fn filter(&self, pv: &PodVolumes, node: &NodeInfo) -> Option<&'static str> {
        if pv.bound.iter().any(|v| !affinity_admits(v, node)) {
            return Some(REASON_NODE_CONFLICT);
        }
        for (claim, provisions) in &pv.unbound {
            if *provisions {
                continue;
            }
            let available = self.volumes.items.values().any(|v| {
                v.spec.as_ref().is_some_and(|s| s.claim_ref.is_none())
                    && v.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Available")
                    && volume_fits(v, claim, Some(node))
            });
            if !available {
                return Some(REASON_BIND_CONFLICT);
            }
        }
        None
    }
}
