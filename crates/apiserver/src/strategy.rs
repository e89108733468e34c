//! One strategy per kind: everything in which one kind's REST semantics differ from another's,
//! as upstream's registry strategies (`pkg/registry/*/strategy.go`: `PrepareForCreate`,
//! `PrepareForUpdate`, `Validate`, `ValidateUpdate`, `ResetFieldsFor`, `CheckGracefulDelete`) and
//! the admission plugins that act on one kind.
//!
//! [`crate::rest::Api`] runs the generic rules (metadata, preconditions, finalizers, schemas,
//! generation, dry run) and asks the [`Resource`]'s strategy at each point where a kind may
//! differ, so `rest` never compares kind names. The built-in kinds' strategies live in
//! [`crate::builtin`] and [`crate::storage`]; the strategies of CRD-served kinds in
//! [`crate::crd`], which plugs OpenKruise's and Knative's webhook rules ([`crate::kruise`],
//! [`crate::knative`]) into the kinds of their groups.
//!
//! [`Resource`]: crate::registry::Resource

use serde_json::Value;

use crate::error::Cause;
use crate::registry::Registry;
use crate::store::{Store, Stored};

/// What a strategy may read while it admits a write: the store, whether the webhooks of
/// OpenKruise and Knative are on ([`crate::Config::kruise_webhook`]), and who writes (`None`
/// for the server's own writes).
pub struct Admission<'a> {
    pub store: &'a Store,
    pub webhooks: bool,
    pub user: Option<&'a crate::auth::UserInfo>,
}

/// What the server's own controllers ([`crate::gc`]) must do before an object of the kind
/// that is being deleted may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    /// Nothing beyond finalizers and dependents.
    None,
    /// Empty the namespace, then clear `spec.finalizers` (upstream's namespace controller).
    NamespaceContents,
    /// Delete every instance of the defined kind (apiextensions' CRD finalizer).
    CustomResources,
}

/// How objects of one kind are created, updated, admitted and deleted. Every method has the
/// behaviour of a kind without special rules (a ConfigMap) as its default.
pub trait Strategy: std::fmt::Debug + Send + Sync {
    /// Whether spec writes bump `metadata.generation` (kinds with a spec, as upstream's
    /// strategies do; every custom resource).
    fn tracks_generation(&self) -> bool {
        false
    }

    /// Checks `metadata.name` on create (upstream: a DNS-1123 subdomain for most kinds).
    fn validate_name(&self, name: &str, causes: &mut Vec<Cause>) {
        if !crate::validation::is_dns1123_subdomain(name) {
            causes.push(crate::error::invalid(
                "metadata.name",
                name,
                crate::validation::DNS1123_SUBDOMAIN_MSG,
            ));
        }
    }

    /// Upstream's defaults, applied on create and update after the schema's.
    fn default(&self, _obj: &mut Value) {}

    /// Mutating admission on create, after defaults of the request and before validation (a
    /// Service's cluster IP, a claim's default class, a CRD's finalizer and status).
    fn prepare_create(&self, _adm: &Admission<'_>, _obj: &mut Value) {}

    /// Resets what a write of the main resource may not change, from the stored object (a
    /// pod's `spec.nodeName`, which only `binding` sets). Status is handled generically.
    fn prepare_update(&self, _new: &mut Value, _old: &Value) {}

    /// The metadata fields a `status` write takes from the request instead of the stored
    /// object (upstream's status strategies that do not reset all of metadata).
    fn status_keeps_metadata(&self) -> &'static [&'static str] {
        &[]
    }

    /// The kind's validation of a defaulted object; `old` is the stored object on update.
    fn validate(&self, _obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
        Vec::new()
    }

    /// Admission that may read other objects and default the object in place, after the
    /// kind's validation (the webhooks of OpenKruise and Knative).
    fn admit(&self, _adm: &Admission<'_>, _obj: &mut Value, _old: Option<&Value>) -> Vec<Cause> {
        Vec::new()
    }

    /// Whether the writer ([`Admission::user`]) may write this object beyond the verb the
    /// authoriser already allowed: upstream's RBAC escalation and bind checks. `Err` is the
    /// reason of a 403 (`<resource> "<name>" is forbidden: <reason>`); `old` is the stored
    /// object on update.
    fn authorize_write(
        &self,
        _adm: &Admission<'_>,
        _obj: &Value,
        _old: Option<&Value>,
    ) -> Result<(), String> {
        Ok(())
    }

    /// Validating admission that reads the store and refuses with 403 Forbidden, after the
    /// kind's validation (upstream's LimitRanger, [`crate::quota::limits`]). `Err` is the
    /// reason (`<resource> "<name>" is forbidden: <reason>`); `old` is the stored object on
    /// update.
    fn validate_admission(
        &self,
        _adm: &Admission<'_>,
        _obj: &Value,
        _old: Option<&Value>,
    ) -> Result<(), String> {
        Ok(())
    }

    /// How ResourceQuota admission and the quota controller charge the kind's objects
    /// ([`crate::quota::evaluate`]); by default `count/<resource>.<group>`.
    fn quota(&self) -> crate::quota::Evaluator {
        crate::quota::Evaluator::Count { legacy_name: false }
    }

    /// Whether deletes, evictions and spec updates of the kind's objects are checked against
    /// OpenKruise's PodUnavailableBudgets ([`crate::unavailable`]; pods).
    fn guards_disruption(&self) -> bool {
        false
    }

    /// Subresources beyond `status` and `scale` (which the resource's definition gives).
    fn subresources(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether discovery lists the `deletecollection` verb (upstream's storage of the kind
    /// implements `rest.CollectionDeleter`).
    fn deletes_collections(&self) -> bool {
        true
    }

    /// Why an object may never be deleted (answered 403 Forbidden), if so.
    fn forbids_delete(&self, _name: &str) -> Option<String> {
        None
    }

    /// The grace period of a deletion (upstream's `CheckGracefulDelete`); 0 deletes at once
    /// when no finalizer holds the object.
    fn grace_period(&self, _obj: &Value, _requested: Option<i64>) -> i64 {
        0
    }

    /// Marks an object whose deletion starts (a namespace's `Terminating` phase).
    fn begin_deletion(&self, _obj: &mut Value) {}

    /// Whether a deleting object without finalizers must still stay (a namespace until its
    /// `spec.finalizers` are cleared).
    fn holds_deletion(&self, _obj: &Value) -> bool {
        false
    }

    /// Whether a deleting object waits for an agent outside the server to finish a graceful
    /// deletion (a pod on a node: its agent deletes it with grace 0).
    fn awaits_termination(&self, _obj: &Value) -> bool {
        false
    }

    /// What the server's controllers do for a deleting object of this kind.
    fn cleanup(&self) -> Cleanup {
        Cleanup::None
    }

    /// Runs after a create or update of the object was committed.
    fn after_commit(&self, _registry: &Registry, _obj: &Stored) {}

    /// For a version served beside the one stored (upstream's conversion between a group's
    /// versions): the stored object as this version serves it. `None`: versions differ only in
    /// `apiVersion` (CRDs' conversion strategy `None`, and every kind served once).
    fn to_served(&self, _stored: &Value) -> Option<Value> {
        None
    }

    /// For a version served beside the one stored: `obj`, written through this version, in
    /// the stored version's shape (a no-op when it already is). Called before any rule sees
    /// the object, so defaults, validation and status handling work on the stored shape.
    fn to_stored(&self, _obj: &mut Value) {}

    /// The `apiVersion` objects written through this version are stored under, when it is not
    /// this version's own.
    fn stored_api_version(&self) -> Option<&'static str> {
        None
    }

    /// Runs after the object was deleted (seen in the event stream, whichever path deleted it).
    fn after_delete(&self, _registry: &Registry, _obj: &Stored) {}
}

/// A kind without special rules.
#[derive(Debug, Default)]
pub struct Plain;

impl Strategy for Plain {}

/// A kind served from a CustomResourceDefinition (apiextensions' `customResourceStrategy`):
/// generation tracking; the CRD's schema and defaults are applied generically.
#[derive(Debug, Default)]
pub struct Custom;

impl Strategy for Custom {
    fn tracks_generation(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::builtin::{NamespaceStrategy, PodStrategy};

    #[test]
    fn plain_kinds_have_no_special_rules() {
        let p = Plain;
        assert!(!p.tracks_generation());
        assert_eq!(p.grace_period(&json!({}), Some(30)), 0);
        assert!(p.forbids_delete("default").is_none());
        assert!(!p.holds_deletion(&json!({"spec": {"finalizers": ["kubernetes"]}})));
        assert_eq!(p.cleanup(), Cleanup::None);
    }

    #[test]
    fn namespaces_hold_their_deletion_until_finalized() {
        let ns = NamespaceStrategy;
        assert!(ns.forbids_delete("kube-system").is_some());
        assert!(ns.holds_deletion(&json!({"spec": {"finalizers": ["kubernetes"]}})));
        assert!(!ns.holds_deletion(&json!({"spec": {"finalizers": []}})));
        let mut v = json!({"status": {"phase": "Active"}});
        ns.begin_deletion(&mut v);
        assert_eq!(v["status"]["phase"], "Terminating");
        assert_eq!(ns.cleanup(), Cleanup::NamespaceContents);
    }

    #[test]
    fn pods_have_upstreams_grace_and_keep_their_node() {
        let pod = PodStrategy;
        let running = json!({"spec": {"nodeName": "n", "terminationGracePeriodSeconds": 5},
                             "status": {"phase": "Running"}});
        assert_eq!(pod.grace_period(&running, None), 5);
        assert_eq!(pod.grace_period(&running, Some(0)), 0);
        assert_eq!(pod.grace_period(&json!({"spec": {}}), Some(30)), 0, "unscheduled");
        assert_eq!(pod.grace_period(&running, Some(i64::MAX)), 100 * 365 * 24 * 3600);
        let mut new = json!({"spec": {"nodeName": "other"}});
        pod.prepare_update(&mut new, &running);
        assert_eq!(new["spec"]["nodeName"], "n");
    }
}
