//! The annotations and names of persistent volume binding and provisioning that the scheduler,
//! the volume controller (`kinetic-controllers`) and the node agent's local-path provisioner
//! (`kinetic-node`) agree on. Upstream names where upstream has them.

/// Set by the scheduler on an unbound `WaitForFirstConsumer` claim: the node of its first pod
/// (kube-scheduler's VolumeBinding plugin).
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// Set by the volume controller on a claim no existing volume satisfies: the provisioner
/// expected to provision it.
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The beta form of [`ANN_STORAGE_PROVISIONER`], still read by external provisioners.
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// Set by a provisioner on the volumes it creates.
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// The default class marker (`storageutil.IsDefaultAnnotation`).
pub const ANN_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// The finalizer of claims (`StorageObjectInUseProtection`).
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The finalizer of volumes (`StorageObjectInUseProtection`).
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// The provisioner of the node agent's local volumes, and of the `local-path` class
/// `kinetic up` creates.
pub const LOCAL_PATH_PROVISIONER: &str = "kinetic.dev/local-path";
/// The name of the default class `kinetic up` creates.
pub const LOCAL_PATH_CLASS: &str = "local-path";

/// The name of the volume provisioned for a claim: `pvc-<claim uid>`, as external-provisioner.
pub fn provisioned_volume_name(claim_uid: &str) -> String {
    format!("pvc-{claim_uid}")
}
