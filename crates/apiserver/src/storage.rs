//! PersistentVolumeClaims, PersistentVolumes and StorageClasses: upstream's defaults
//! (`pkg/apis/core/v1/defaults.go`, `pkg/apis/storage/v1/defaults.go`), the validation of
//! `pkg/apis/core/validation` and `pkg/apis/storage/validation` that matters for binding and
//! mounting, and two admission plugins: `DefaultStorageClass` (a claim without
//! `spec.storageClassName` gets the default class) and `StorageObjectInUseProtection` (claims
//! get the `kubernetes.io/pvc-protection` finalizer and volumes `kubernetes.io/pv-protection`;
//! the volume controller in `kinetic-controllers` removes them once nothing uses the object).
//!
//! Not done: the `dataSource`/`dataSourceRef` checks, `selector` validation of claims, volume
//! attributes classes, and the per-volume-type validation beyond `local`, `hostPath` and `csi`
//! (other sources are accepted as they are; nothing on a Kinetic node mounts them).

use kinetic_machinery::quantity::Quantity;
use serde_json::{Map, Value, json};

use crate::builtin::{obj_mut, set_default};
use crate::error::{Cause, invalid};
use crate::store::Store;
use crate::strategy::{Admission, Strategy};

/// The annotation that marks the default StorageClass (`storageutil.IsDefaultAnnotation`).
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
/// The finalizer `StorageObjectInUseProtection` puts on every claim.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The finalizer `StorageObjectInUseProtection` puts on every volume.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

const ACCESS_MODES: [&str; 4] =
    ["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"];

/// The volume sources of a PersistentVolumeSpec (`PersistentVolumeSource`'s fields).
const PV_SOURCES: &[&str] = &[
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "csi",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "glusterfs",
    "hostPath",
    "iscsi",
    "local",
    "nfs",
    "photonPersistentDisk",
    "portworxVolume",
    "quobyte",
    "rbd",
    "scaleIO",
    "storageos",
    "vsphereVolume",
];

/// `core/v1` PersistentVolumeClaims.
#[derive(Debug)]
pub struct ClaimStrategy;

/// `core/v1` PersistentVolumes.
#[derive(Debug)]
pub struct VolumeStrategy;

/// `storage.k8s.io/v1` StorageClasses.
#[derive(Debug)]
pub struct ClassStrategy;

// Each kind's strategy names its own defaults, admission and validation: no kind names are
// compared here (issue 15 part 1).
impl Strategy for ClaimStrategy {
    fn default(&self, obj: &mut Value) {
        if let Some(spec) = obj_mut(obj, "spec") {
            set_default(spec, "volumeMode", json!("Filesystem"));
        }
        if let Some(status) = obj_mut(obj, "status") {
            set_default(status, "phase", json!("Pending"));
        }
    }
    /// `StorageObjectInUseProtection`, then `DefaultStorageClass`: a claim whose
    /// `spec.storageClassName` is unset gets the default class; an explicit `""` means "no
    /// class" and is kept, as upstream.
    fn prepare_create(&self, adm: &Admission<'_>, obj: &mut Value) {
        protect(obj, PVC_PROTECTION);
        if obj.pointer("/spec/storageClassName").is_none_or(Value::is_null)
            && let Some(class) = default_class(adm.store)
            && let Some(spec) = obj_mut(obj, "spec")
        {
            spec.insert("storageClassName".into(), json!(class));
        }
    }
    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut causes = Vec::new();
        validate_claim_spec(obj.get("spec"), &mut causes);
        if let Some(old) = old {
            validate_claim_update(obj, old, &mut causes);
        }
        causes
    }

    /// LimitRanger's `PersistentVolumeClaim` bounds on the storage request, on create and
    /// update (not once the claim is being deleted, as upstream).
    fn validate_admission(
        &self,
        adm: &Admission<'_>,
        obj: &Value,
        old: Option<&Value>,
    ) -> Result<(), String> {
        if old.is_some_and(|o| o.pointer("/metadata/deletionTimestamp").is_some()) {
            return Ok(());
        }
        let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
        crate::quota::limits::validate_claim(&crate::quota::limit_ranges(adm.store, ns), obj)
    }

    fn quota(&self) -> crate::quota::Evaluator {
        crate::quota::Evaluator::Claim
    }
}

impl Strategy for VolumeStrategy {
    fn default(&self, obj: &mut Value) {
        if let Some(spec) = obj_mut(obj, "spec") {
            set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
            set_default(spec, "volumeMode", json!("Filesystem"));
        }
        if let Some(status) = obj_mut(obj, "status") {
            set_default(status, "phase", json!("Pending"));
        }
    }
    /// `StorageObjectInUseProtection`.
    fn prepare_create(&self, _adm: &Admission<'_>, obj: &mut Value) {
        protect(obj, PV_PROTECTION);
    }
    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut causes = Vec::new();
        validate_volume_spec(obj.get("spec"), &mut causes);
        if let Some(old) = old {
            validate_volume_update(obj, old, &mut causes);
        }
        causes
    }
}

impl Strategy for ClassStrategy {
    fn default(&self, obj: &mut Value) {
        if let Some(m) = obj.as_object_mut() {
            set_default(m, "reclaimPolicy", json!("Delete"));
            set_default(m, "volumeBindingMode", json!("Immediate"));
        }
    }
    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut causes = Vec::new();
        validate_class(obj, old, &mut causes);
        causes
    }
}

fn validate_access_modes(modes: Option<&Value>, path: &str, what: &str, causes: &mut Vec<Cause>) {
    let modes = modes.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if modes.is_empty() {
        causes.push(Cause::required(path, &format!("at least 1 access mode is required{what}")));
        return;
    }
    let supported: Vec<String> = ACCESS_MODES.iter().map(|s| (*s).to_owned()).collect();
    for m in modes {
        if !m.as_str().is_some_and(|s| ACCESS_MODES.contains(&s)) {
            causes.push(Cause::not_supported(path, m, &supported));
        }
    }
    // Upstream: ReadWriteOncePod must be the only mode.
    if modes.len() > 1 && modes.iter().any(|m| m == "ReadWriteOncePod") {
        causes.push(Cause::forbidden(path, "may not use ReadWriteOncePod with other access modes"));
    }
}

/// A positive quantity at `path`; `None` when absent.
fn check_quantity(v: Option<&Value>, path: &str, causes: &mut Vec<Cause>) -> Option<Quantity> {
    let v = v?;
    let s = v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
    match Quantity::parse(&s) {
        Ok(q) if q.value() <= 0 && q.milli_value() <= 0 => {
            causes.push(invalid(path, &s, "must be greater than zero"));
            None
        }
        Ok(q) => Some(q),
        Err(_) => {
            causes.push(invalid(
                path,
                &s,
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            ));
            None
        }
    }
}

fn validate_volume_mode(spec: &Value, causes: &mut Vec<Cause>) {
    if let Some(m) = spec.get("volumeMode")
        && !matches!(m.as_str(), Some("Block" | "Filesystem"))
    {
        causes.push(Cause::not_supported(
            "spec.volumeMode",
            m,
            &["Block".to_owned(), "Filesystem".to_owned()],
        ));
    }
}

fn validate_class_name(spec: &Value, causes: &mut Vec<Cause>) {
    if let Some(c) = spec.get("storageClassName").and_then(Value::as_str)
        && !c.is_empty()
        && !crate::validation::is_dns1123_subdomain(c)
    {
        causes.push(invalid(
            "spec.storageClassName",
            c,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        ));
    }
}

/// `ValidatePersistentVolumeClaimSpec`: access modes, the storage request, volume mode, class.
fn validate_claim_spec(spec: Option<&Value>, causes: &mut Vec<Cause>) {
    let Some(spec) = spec else {
        causes.push(Cause::required("spec", ""));
        return;
    };
    validate_access_modes(spec.get("accessModes"), "spec.accessModes", "", causes);
    let storage = spec.pointer("/resources/requests/storage");
    if storage.is_none() {
        causes.push(Cause::required("spec.resources[storage]", ""));
    }
    check_quantity(storage, "spec.resources.requests[storage]", causes);
    validate_volume_mode(spec, causes);
    validate_class_name(spec, causes);
}

fn storage_of(v: &Value, pointer: &str) -> Option<Quantity> {
    v.pointer(pointer).and_then(Value::as_str).and_then(|s| Quantity::parse(s).ok())
}

/// `ValidatePersistentVolumeClaimUpdate`: the spec is immutable except `resources.requests`
/// (only growing, only for bound claims), `volumeName` (set once: binding), and
/// `storageClassName` (set once when it was unset, the retroactive default class).
fn validate_claim_update(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    let (Some(new_spec), Some(old_spec)) = (new.get("spec"), old.get("spec")) else { return };
    let mut n = new_spec.clone();
    let mut o = old_spec.clone();
    let (Some(nm), Some(om)) = (n.as_object_mut(), o.as_object_mut()) else { return };
    if om.get("volumeName").and_then(Value::as_str).is_none_or(str::is_empty) {
        nm.remove("volumeName");
        om.remove("volumeName");
    }
    if om.get("storageClassName").is_none_or(Value::is_null) {
        nm.remove("storageClassName");
        om.remove("storageClassName");
    }
    let bound = old.pointer("/status/phase").and_then(Value::as_str) == Some("Bound");
    if bound {
        for m in [&mut *nm, &mut *om] {
            if let Some(r) = m.get_mut("resources").and_then(Value::as_object_mut) {
                r.remove("requests");
            }
        }
    }
    if nm != om {
        causes.push(Cause::forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
        return;
    }
    if bound
        && let (Some(new_q), Some(old_q)) = (
            storage_of(new, "/spec/resources/requests/storage"),
            storage_of(old, "/spec/resources/requests/storage"),
        )
        && new_q.value() < old_q.value()
    {
        causes.push(Cause::forbidden(
            "spec.resources.requests.storage",
            "field can not be less than status.capacity",
        ));
    }
}

/// `ValidatePersistentVolumeSpec` for what Kinetic uses: capacity, access modes, reclaim
/// policy, volume mode, exactly one source, and the `local`/`hostPath` rules.
fn validate_volume_spec(spec: Option<&Value>, causes: &mut Vec<Cause>) {
    let Some(spec) = spec else {
        causes.push(Cause::required("spec", ""));
        return;
    };
    validate_access_modes(spec.get("accessModes"), "spec.accessModes", "", causes);
    match spec.get("capacity").and_then(Value::as_object) {
        None => causes.push(Cause::required("spec.capacity", "")),
        Some(c) if c.is_empty() => causes.push(Cause::required("spec.capacity", "")),
        Some(c) => {
            if !c.contains_key("storage") || c.len() > 1 {
                causes.push(Cause::not_supported(
                    "spec.capacity",
                    &Value::Object(c.clone()),
                    &["storage".to_owned()],
                ));
            }
            check_quantity(c.get("storage"), "spec.capacity[storage]", causes);
        }
    }
    if let Some(p) = spec.get("persistentVolumeReclaimPolicy")
        && !matches!(p.as_str(), Some("Delete" | "Recycle" | "Retain"))
    {
        causes.push(Cause::not_supported(
            "spec.persistentVolumeReclaimPolicy",
            p,
            &["Delete".to_owned(), "Recycle".to_owned(), "Retain".to_owned()],
        ));
    }
    validate_volume_mode(spec, causes);
    validate_class_name(spec, causes);
    let sources: Vec<&str> =
        PV_SOURCES.iter().copied().filter(|s| spec.get(*s).is_some_and(|v| !v.is_null())).collect();
    match sources.as_slice() {
        [] => causes.push(Cause::required("spec", "must specify a volume type")),
        [_] => {}
        [_, rest @ ..] => {
            for s in rest {
                causes.push(Cause::forbidden(
                    &format!("spec.{s}"),
                    "may not specify more than 1 volume type",
                ));
            }
        }
    }
    if let Some(hp) = spec.get("hostPath") {
        let path = hp.get("path").and_then(Value::as_str).unwrap_or("");
        if path.is_empty() {
            causes.push(Cause::required("spec.hostPath.path", ""));
        }
    }
    if let Some(l) = spec.get("local") {
        let path = l.get("path").and_then(Value::as_str).unwrap_or("");
        if path.is_empty() {
            causes.push(Cause::required("spec.local.path", ""));
        }
        if spec.pointer("/nodeAffinity/required").is_none() {
            causes
                .push(Cause::required("spec.nodeAffinity", "Local volume requires node affinity"));
        }
    }
    if let Some(c) = spec.get("claimRef")
        && c.get("name").and_then(Value::as_str).is_none_or(str::is_empty)
    {
        causes.push(Cause::required("spec.claimRef.name", ""));
    }
}

/// `ValidatePersistentVolumeUpdate`: the volume source and volume mode never change; node
/// affinity may only be set when it was unset.
fn validate_volume_update(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    let source = |v: &Value| -> Map<String, Value> {
        PV_SOURCES
            .iter()
            .filter_map(|s| v.pointer(&format!("/spec/{s}")).map(|x| ((*s).to_owned(), x.clone())))
            .collect()
    };
    if source(new) != source(old) {
        causes.push(Cause::forbidden(
            "spec.persistentvolumesource",
            "spec.persistentvolumesource is immutable after creation",
        ));
    }
    if new.pointer("/spec/volumeMode") != old.pointer("/spec/volumeMode") {
        causes.push(invalid(
            "spec.volumeMode",
            new.pointer("/spec/volumeMode").and_then(Value::as_str).unwrap_or(""),
            "field is immutable",
        ));
    }
    if let Some(o) = old.pointer("/spec/nodeAffinity")
        && new.pointer("/spec/nodeAffinity") != Some(o)
    {
        causes.push(Cause::forbidden("spec.nodeAffinity", "field is immutable"));
    }
}

/// `ValidateStorageClass` and `ValidateStorageClassUpdate`.
fn validate_class(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    if obj.get("provisioner").and_then(Value::as_str).is_none_or(str::is_empty) {
        causes.push(Cause::required("provisioner", ""));
    }
    if let Some(p) = obj.get("reclaimPolicy")
        && !matches!(p.as_str(), Some("Delete" | "Retain"))
    {
        causes.push(Cause::not_supported(
            "reclaimPolicy",
            p,
            &["Delete".to_owned(), "Retain".to_owned()],
        ));
    }
    if let Some(m) = obj.get("volumeBindingMode")
        && !matches!(m.as_str(), Some("Immediate" | "WaitForFirstConsumer"))
    {
        causes.push(Cause::not_supported(
            "volumeBindingMode",
            m,
            &["Immediate".to_owned(), "WaitForFirstConsumer".to_owned()],
        ));
    }
    let Some(old) = old else { return };
    let empty = || json!({});
    let params = |v: &Value| v.get("parameters").cloned().unwrap_or_else(empty);
    if params(obj) != params(old) {
        causes.push(Cause::forbidden("parameters", "updates to parameters are forbidden."));
    }
    for (field, msg) in [
        ("provisioner", "updates to provisioner are forbidden."),
        ("reclaimPolicy", "updates to reclaimPolicy are forbidden."),
    ] {
        if obj.get(field) != old.get(field) {
            causes.push(Cause::forbidden(field, msg));
        }
    }
    if obj.get("volumeBindingMode") != old.get("volumeBindingMode") {
        causes.push(Cause::forbidden("volumeBindingMode", "field is immutable"));
    }
}

/// `StorageObjectInUseProtection` on create: the kind's protection finalizer, which a
/// controller outside the server removes, as kube-controller-manager does upstream.
fn protect(obj: &mut Value, finalizer: &str) {
    if let Some(md) = obj_mut(obj, "metadata") {
        let f = md.entry("finalizers").or_insert_with(|| json!([]));
        if let Some(a) = f.as_array_mut()
            && !a.iter().any(|x| x == finalizer)
        {
            a.push(json!(finalizer));
        }
    }
}

/// The default StorageClass: of several marked default, the newest (by creationTimestamp, then
/// name), as upstream since 1.26.
pub fn default_class(store: &Store) -> Option<String> {
    let st = store.read();
    let key = crate::registry::storage_key("storage.k8s.io", "storageclasses");
    let mut best: Option<(String, String)> = None;
    for (_, s) in st.list(&key, None, None) {
        let v = s.value();
        let md = &v["metadata"];
        if md.pointer(&format!("/annotations/{}", DEFAULT_CLASS_ANNOTATION.replace('/', "~1")))
            != Some(&json!("true"))
        {
            continue;
        }
        let created = md["creationTimestamp"].as_str().unwrap_or("").to_owned();
        let name = md["name"].as_str().unwrap_or("").to_owned();
        if best.as_ref().is_none_or(|(c, n)| (&created, &name) > (c, n)) {
            best = Some((created, name));
        }
    }
    best.map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(c: &[Cause]) -> Vec<String> {
        c.iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn claim_defaults_and_required_fields() {
        let mut pvc = json!({"spec": {}});
        ClaimStrategy.default(&mut pvc);
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pvc["status"]["phase"], "Pending");
        let causes = ClaimStrategy.validate(&pvc, None);
        assert_eq!(
            fields(&causes),
            [
                "spec.accessModes: Required value: at least 1 access mode is required",
                "spec.resources[storage]: Required value"
            ]
        );
        let bad = json!({"spec": {"accessModes": ["ReadWriteSometimes"],
            "resources": {"requests": {"storage": "0"}}}});
        let causes = ClaimStrategy.validate(&bad, None);
        assert_eq!(causes.len(), 2, "{causes:?}");
        assert_eq!(causes[0].reason, "FieldValueNotSupported");
        assert_eq!(causes[1].field, "spec.resources.requests[storage]");
    }

    #[test]
    fn claim_spec_is_immutable_but_binds_and_grows() {
        let old = json!({"spec": {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}, "status": {"phase": "Pending"}});
        let mut bound = old.clone();
        bound["spec"]["volumeName"] = json!("pv1");
        assert!(ClaimStrategy.validate(&bound, Some(&old)).is_empty());
        let mut modes = old.clone();
        modes["spec"]["accessModes"] = json!(["ReadWriteMany"]);
        assert_eq!(ClaimStrategy.validate(&modes, Some(&old))[0].field, "spec");
        let mut grown = old.clone();
        grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        // Expansion only for bound claims.
        assert_eq!(ClaimStrategy.validate(&grown, Some(&old)).len(), 1);
        let mut old_bound = bound.clone();
        old_bound["status"]["phase"] = json!("Bound");
        let mut grown_bound = old_bound.clone();
        grown_bound["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        assert!(ClaimStrategy.validate(&grown_bound, Some(&old_bound)).is_empty());
        let mut shrunk = old_bound.clone();
        shrunk["spec"]["resources"]["requests"]["storage"] = json!("512Mi");
        let causes = ClaimStrategy.validate(&shrunk, Some(&old_bound));
        assert_eq!(causes[0].field, "spec.resources.requests.storage");
    }

    #[test]
    fn volume_needs_exactly_one_source() {
        let base =
            json!({"spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}});
        let causes = VolumeStrategy.validate(&base, None);
        assert_eq!(fields(&causes), ["spec: Required value: must specify a volume type"]);
        let mut two = base.clone();
        two["spec"]["hostPath"] = json!({"path": "/x"});
        two["spec"]["nfs"] = json!({"server": "s", "path": "/"});
        assert_eq!(
            fields(&VolumeStrategy.validate(&two, None)),
            ["spec.nfs: Forbidden: may not specify more than 1 volume type"]
        );
        let mut local = base.clone();
        local["spec"]["local"] = json!({"path": "/x"});
        assert_eq!(VolumeStrategy.validate(&local, None)[0].field, "spec.nodeAffinity");
        let mut pv = base;
        pv["spec"]["hostPath"] = json!({"path": "/x"});
        VolumeStrategy.default(&mut pv);
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert!(VolumeStrategy.validate(&pv, None).is_empty());
    }

    #[test]
    fn class_defaults_and_immutability() {
        let mut sc = json!({"provisioner": "p"});
        ClassStrategy.default(&mut sc);
        assert_eq!(sc["reclaimPolicy"], "Delete");
        assert_eq!(sc["volumeBindingMode"], "Immediate");
        let mut changed = sc.clone();
        changed["provisioner"] = json!("q");
        changed["volumeBindingMode"] = json!("WaitForFirstConsumer");
        assert_eq!(
            fields(&ClassStrategy.validate(&changed, Some(&sc))),
            [
                "provisioner: Forbidden: updates to provisioner are forbidden.",
                "volumeBindingMode: Forbidden: field is immutable"
            ]
        );
    }
}
