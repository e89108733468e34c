//! Role-based access control: `rbac.authorization.k8s.io/v1` served and enforced as upstream's
//! RBAC authoriser (`plugin/pkg/auth/authorizer/rbac`).
//!
//! - [`Rbac`] keeps an in-memory index of the Roles, ClusterRoles and their bindings, refreshed
//!   key by key from the store after each committed write (the kinds' strategies'
//!   `after_commit`/`after_delete`) and by [`run`], which follows the store's events of the four
//!   kinds (so deletions by the garbage collector or namespace cleanup are seen too). A request
//!   is decided from the index; nothing is listed per request.
//! - [`Rbac`] is an [`Authorizer`]: the first rule of a binding that applies to the user and
//!   allows the request allows it; otherwise it has no opinion (upstream's 403 follows).
//! - The kinds' strategies refuse privilege escalation as upstream's `policybased` storages:
//!   a Role or ClusterRole may only grant rules its writer holds (or has `escalate` on it), a
//!   binding may only refer to a role whose rules its writer holds (or has `bind` on it).
//! - [`policy`] bootstraps upstream's default ClusterRoles and ClusterRoleBindings and runs
//!   ClusterRole aggregation; [`review`] serves the `authorization.k8s.io` reviews (`kubectl auth
//!   can-i`) and impersonation.
//!
//! - [`node`] is upstream's Node authoriser (asked before RBAC) and NodeRestriction admission:
//!   a node agent reaches its own Node, Lease and pods and what those pods reference.
//!
//! Not done: `system:anonymous` (unauthenticated requests are 401, as with
//! `--anonymous-auth=false`).

pub mod node;
pub mod policy;
pub mod review;
pub mod rules;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use kinetic_machinery::schema::{Schema, SchemaError};
use serde_json::{Map, Value, json};

use crate::auth::{Attributes, Authorizer, Decision, MASTERS_GROUP, UserInfo};
use crate::error::Cause;
use crate::registry::{Printer, Registry, Resource, storage_key};
use crate::store::{ObjKey, Store, Stored};
use crate::strategy::{Admission, Strategy};
pub use rules::PolicyRule;

pub const GROUP: &str = "rbac.authorization.k8s.io";
/// The annotation that lets an administrator stop the bootstrap from reconciling a default role.
pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

/// The four kinds, by plural.
const ROLES: &str = "roles";
const CLUSTER_ROLES: &str = "clusterroles";
const BINDINGS: &str = "rolebindings";
const CLUSTER_BINDINGS: &str = "clusterrolebindings";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Subject {
    kind: String,
    name: String,
    namespace: String,
}

#[derive(Debug, Clone)]
struct Binding {
    role_kind: String,
    role_name: String,
    subjects: Vec<Subject>,
}

impl Binding {
    fn from_json(v: &Value) -> Self {
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let role = v.get("roleRef").cloned().unwrap_or(Value::Null);
        Self {
            role_kind: s(&role, "kind"),
            role_name: s(&role, "name"),
            subjects: v
                .get("subjects")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|x| Subject {
                            kind: s(x, "kind"),
                            name: s(x, "name"),
                            namespace: s(x, "namespace"),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Whether the binding (in `ns`, empty for a ClusterRoleBinding) names the user (upstream's
    /// `appliesToUser`).
    fn applies_to(&self, user: &UserInfo, ns: &str) -> bool {
        self.subjects.iter().any(|s| match s.kind.as_str() {
            "User" => user.name == s.name,
            "Group" => user.groups.contains(&s.name),
            "ServiceAccount" => {
                let sa_ns = if s.namespace.is_empty() { ns } else { &s.namespace };
                !sa_ns.is_empty()
                    && user.name == format!("system:serviceaccount:{sa_ns}:{}", s.name)
            }
            _ => false,
        })
    }
}

/// The compiled policy.
#[derive(Default)]
struct Index {
    cluster_roles: HashMap<String, Arc<Vec<PolicyRule>>>,
    roles: HashMap<(String, String), Arc<Vec<PolicyRule>>>,
    cluster_bindings: BTreeMap<String, Binding>,
    /// namespace → name → binding
    bindings: HashMap<String, BTreeMap<String, Binding>>,
}

/// The RBAC policy of one server and its authoriser.
pub struct Rbac {
    store: Store,
    index: RwLock<Index>,
}

/// Where a role reference leads: its rules, or why none.
enum RoleRules {
    Found(Arc<Vec<PolicyRule>>),
    Missing(String),
}

impl Rbac {
    /// An index over `store`, loaded from its current state.
    #[must_use]
    pub fn new(store: Store) -> Arc<Self> {
        let rbac = Arc::new(Self { store, index: RwLock::default() });
        rbac.reload();
        rbac
    }

    fn key(plural: &str) -> Arc<str> {
        storage_key(GROUP, plural)
    }

    /// Rebuilds the whole index from the store (at start, and when events were missed).
    pub fn reload(&self) {
        let mut idx = Index::default();
        {
            let state = self.store.read();
            for plural in [ROLES, CLUSTER_ROLES, BINDINGS, CLUSTER_BINDINGS] {
                for ((ns, name), s) in state.list(&Self::key(plural), None, None) {
                    idx.put(plural, ns, name, Some(&s.value()));
                }
            }
        }
        *self.index.write().unwrap_or_else(std::sync::PoisonError::into_inner) = idx;
    }

    /// Re-reads one object of the four kinds from the store into the index.
    pub fn refresh(&self, key: &ObjKey) {
        let Some(plural) = key.resource.strip_prefix(GROUP).and_then(|p| p.strip_prefix('/'))
        else {
            return;
        };
        // Read the store and write the index under the index lock, so two refreshes of one key
        // cannot apply an older read after a newer one.
        let mut idx = self.index.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.store.get(key);
        idx.put(plural, &key.namespace, &key.name, current.map(|s| s.value()).as_ref());
    }

    fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Calls `f` with every rule that applies to `user` in `ns` (cluster-wide bindings first,
    /// then the namespace's, as upstream's `VisitRulesFor`) until it returns true.
    fn visit(&self, user: &UserInfo, ns: &str, mut f: impl FnMut(&PolicyRule) -> bool) -> bool {
        let idx = self.index();
        for b in idx.cluster_bindings.values() {
            if b.role_kind != "ClusterRole" || !b.applies_to(user, "") {
                continue;
            }
            if let Some(rules) = idx.cluster_roles.get(&b.role_name)
                && rules.iter().any(&mut f)
            {
                return true;
            }
        }
        if ns.is_empty() {
            return false;
        }
        for b in idx.bindings.get(ns).into_iter().flat_map(BTreeMap::values) {
            if !b.applies_to(user, ns) {
                continue;
            }
            if let RoleRules::Found(rules) = idx.role_rules(&b.role_kind, &b.role_name, ns)
                && rules.iter().any(&mut f)
            {
                return true;
            }
        }
        false
    }

    /// Every rule `user` holds in `ns` (cluster-wide ones included), as upstream's `RulesFor`.
    #[must_use]
    pub fn rules_for(&self, user: &UserInfo, ns: &str) -> Vec<PolicyRule> {
        let mut out = Vec::new();
        self.visit(user, ns, |r| {
            out.push(r.clone());
            false
        });
        out
    }

    /// Whether `user` may do `verb` on the RBAC resource `plural` named `name` in `ns` (the
    /// `escalate` and `bind` checks).
    fn may(&self, user: &UserInfo, verb: &str, plural: &str, ns: &str, name: &str) -> bool {
        let a = Attributes {
            user: user.clone(),
            verb: verb.to_owned(),
            resource_request: true,
            api_group: GROUP.to_owned(),
            api_version: "v1".to_owned(),
            resource: plural.to_owned(),
            namespace: ns.to_owned(),
            name: name.to_owned(),
            ..Attributes::default()
        };
        self.authorize(&a) == Decision::Allow
    }

    /// Upstream's `ConfirmNoEscalation`: `Err` names the rules `user` would grant without
    /// holding them.
    fn confirm_no_escalation(
        &self,
        user: &UserInfo,
        ns: &str,
        rules: &[PolicyRule],
    ) -> Result<(), String> {
        let owner = self.rules_for(user, ns);
        let missing = rules::uncovered(&owner, rules);
        if missing.is_empty() {
            return Ok(());
        }
        let mut lines: Vec<String> =
            rules::compact(missing).iter().map(rules::compact_string).collect();
        lines.sort();
        lines.dedup();
        Err(format!(
            "user {} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
            serde_json::to_string(&user.name).unwrap_or_default(),
            rules::go_quoted(&user.groups),
            lines.join("\n")
        ))
    }
}

impl Index {
    fn put(&mut self, plural: &str, ns: &str, name: &str, obj: Option<&Value>) {
        match plural {
            CLUSTER_ROLES => match obj {
                Some(v) => {
                    self.cluster_roles.insert(name.to_owned(), Arc::new(PolicyRule::list_from(v)));
                }
                None => {
                    self.cluster_roles.remove(name);
                }
            },
            ROLES => {
                let k = (ns.to_owned(), name.to_owned());
                match obj {
                    Some(v) => {
                        self.roles.insert(k, Arc::new(PolicyRule::list_from(v)));
                    }
                    None => {
                        self.roles.remove(&k);
                    }
                }
            }
            CLUSTER_BINDINGS => match obj {
                Some(v) => {
                    self.cluster_bindings.insert(name.to_owned(), Binding::from_json(v));
                }
                None => {
                    self.cluster_bindings.remove(name);
                }
            },
            BINDINGS => match obj {
                Some(v) => {
                    self.bindings
                        .entry(ns.to_owned())
                        .or_default()
                        .insert(name.to_owned(), Binding::from_json(v));
                }
                None => {
                    if let Some(m) = self.bindings.get_mut(ns) {
                        m.remove(name);
                        if m.is_empty() {
                            self.bindings.remove(ns);
                        }
                    }
                }
            },
            _ => {}
        }
    }

    /// The rules a role reference of a binding in `ns` leads to (upstream's
    /// `GetRoleReferenceRules`).
    fn role_rules(&self, kind: &str, name: &str, ns: &str) -> RoleRules {
        let found = match kind {
            "ClusterRole" => self.cluster_roles.get(name),
            "Role" => self.roles.get(&(ns.to_owned(), name.to_owned())),
            other => {
                return RoleRules::Missing(format!("unsupported role reference kind: {other:?}"));
            }
        };
        match found {
            Some(r) => RoleRules::Found(r.clone()),
            None => {
                let plural = if kind == "ClusterRole" { CLUSTER_ROLES } else { ROLES };
                RoleRules::Missing(format!("{plural}.{GROUP} \"{name}\" not found"))
            }
        }
    }
}

impl Authorizer for Rbac {
    fn authorize(&self, attrs: &Attributes) -> Decision {
        if self.visit(&attrs.user, &attrs.namespace, |r| r.allows(attrs)) {
            Decision::Allow
        } else {
            Decision::NoOpinion(String::new())
        }
    }
}

/// Whether the writer may skip the escalation checks: the server itself, or `system:masters`
/// (upstream's `EscalationAllowed`).
fn escalation_allowed(user: Option<&UserInfo>) -> bool {
    user.is_none_or(|u| u.groups.iter().any(|g| g == MASTERS_GROUP))
}

/// Whether an update changes nothing but what the garbage collector writes (upstream's
/// `IsOnlyMutatingGCFields`): such updates pass without the escalation checks.
fn only_gc_fields_change(new: &Value, old: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(md) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in ["ownerReferences", "finalizers", "resourceVersion", "managedFields"] {
                md.remove(k);
            }
        }
        v
    };
    strip(new) == strip(old)
}

fn meta_str<'a>(v: &'a Value, k: &str) -> &'a str {
    v.pointer(&format!("/metadata/{k}")).and_then(Value::as_str).unwrap_or("")
}

/// Roles and ClusterRoles (upstream `pkg/registry/rbac/{role,clusterrole}`).
#[derive(Debug)]
struct RoleStrategy {
    rbac: Arc<RbacHandle>,
    cluster: bool,
}

/// RoleBindings and ClusterRoleBindings (upstream `pkg/registry/rbac/{role,clusterrole}binding`).
#[derive(Debug)]
struct BindingStrategy {
    rbac: Arc<RbacHandle>,
    cluster: bool,
}

/// The strategies' reference to the policy (Debug for the `Strategy` bound).
struct RbacHandle(Arc<Rbac>);

impl std::fmt::Debug for RbacHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rbac")
    }
}

fn refresh_from(rbac: &Rbac, plural: &str, obj: &Value) {
    let key = ObjKey::new(&Rbac::key(plural), meta_str(obj, "namespace"), meta_str(obj, "name"));
    rbac.refresh(&key);
}

/// Upstream's `ValidateRBACName` (`path.IsValidPathSegmentName`): names like
/// `system:node` are valid.
fn validate_rbac_name(name: &str, causes: &mut Vec<Cause>) {
    let why = match name {
        "." => Some("may not be '.'"),
        ".." => Some("may not be '..'"),
        n if n.contains('/') => Some("may not contain '/'"),
        n if n.contains('%') => Some("may not contain '%'"),
        _ => None,
    };
    if let Some(why) = why {
        causes.push(crate::error::invalid("metadata.name", name, why));
    }
}

/// Upstream's `ValidatePolicyRule`.
fn validate_rules(obj: &Value, namespaced: bool, causes: &mut Vec<Cause>) {
    let Some(rules) = obj.get("rules").and_then(Value::as_array) else { return };
    for (i, raw) in rules.iter().enumerate() {
        let r = PolicyRule::from_json(raw);
        let f = |c: &str| format!("rules[{i}].{c}");
        if r.verbs.is_empty() {
            causes.push(Cause::required(&f("verbs"), "verbs must contain at least one value"));
        }
        if !r.non_resource_urls.is_empty() {
            let urls = json!(r.non_resource_urls);
            if namespaced {
                causes.push(Cause::invalid(
                    &f("nonResourceURLs"),
                    &urls,
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !r.api_groups.is_empty() || !r.resources.is_empty() || !r.resource_names.is_empty() {
                causes.push(Cause::invalid(
                    &f("nonResourceURLs"),
                    &urls,
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if r.api_groups.is_empty() {
            causes.push(Cause::required(
                &f("apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if r.resources.is_empty() {
            causes.push(Cause::required(
                &f("resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
}

impl Strategy for RoleStrategy {
    fn validate_name(&self, name: &str, causes: &mut Vec<Cause>) {
        validate_rbac_name(name, causes);
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
        let mut causes = Vec::new();
        validate_rules(obj, !self.cluster, &mut causes);
        causes
    }

    /// Upstream's role storages: the writer must hold every rule it grants, or have `escalate`
    /// on the role; only such writers may give a ClusterRole an `aggregationRule`.
    fn authorize_write(
        &self,
        adm: &Admission<'_>,
        obj: &Value,
        old: Option<&Value>,
    ) -> Result<(), String> {
        let Some(user) = adm.user.filter(|u| !escalation_allowed(Some(u))) else { return Ok(()) };
        if old.is_some_and(|o| only_gc_fields_change(obj, o)) {
            return Ok(());
        }
        let rbac = &self.rbac.0;
        let (plural, ns) =
            if self.cluster { (CLUSTER_ROLES, "") } else { (ROLES, meta_str(obj, "namespace")) };
        if rbac.may(user, "escalate", plural, ns, meta_str(obj, "name")) {
            return Ok(());
        }
        if self.cluster && obj.get("aggregationRule").is_some_and(|a| !a.is_null()) {
            return Err("must have cluster-admin privileges to use the aggregationRule".to_owned());
        }
        rbac.confirm_no_escalation(user, ns, &PolicyRule::list_from(obj))
    }

    fn after_commit(&self, _registry: &Registry, obj: &Stored) {
        refresh_from(&self.rbac.0, if self.cluster { CLUSTER_ROLES } else { ROLES }, &obj.value());
    }

    fn after_delete(&self, _registry: &Registry, obj: &Stored) {
        refresh_from(&self.rbac.0, if self.cluster { CLUSTER_ROLES } else { ROLES }, &obj.value());
    }
}

impl Strategy for BindingStrategy {
    fn validate_name(&self, name: &str, causes: &mut Vec<Cause>) {
        validate_rbac_name(name, causes);
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut causes = Vec::new();
        let role = obj.get("roleRef").cloned().unwrap_or(Value::Null);
        let kind = role.get("kind").and_then(Value::as_str).unwrap_or("");
        let kinds: &[&str] = if self.cluster { &["ClusterRole"] } else { &["Role", "ClusterRole"] };
        if !kinds.contains(&kind) {
            causes.push(Cause::not_supported(
                "roleRef.kind",
                &json!(kind),
                &kinds.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>(),
            ));
        }
        if role.get("apiGroup").and_then(Value::as_str) != Some(GROUP) {
            causes.push(Cause::not_supported(
                "roleRef.apiGroup",
                role.get("apiGroup").unwrap_or(&Value::Null),
                &[GROUP.to_owned()],
            ));
        }
        if role.get("name").and_then(Value::as_str).unwrap_or("").is_empty() {
            causes.push(Cause::required("roleRef.name", ""));
        }
        if let Some(old) = old
            && old.get("roleRef") != obj.get("roleRef")
        {
            causes.push(Cause::invalid("roleRef", &role, "cannot change roleRef"));
        }
        for (i, s) in
            obj.get("subjects").and_then(Value::as_array).into_iter().flatten().enumerate()
        {
            let kind = s.get("kind").and_then(Value::as_str).unwrap_or("");
            let supported = ["ServiceAccount", "User", "Group"];
            if !supported.contains(&kind) {
                causes.push(Cause::not_supported(
                    &format!("subjects[{i}].kind"),
                    &json!(kind),
                    &supported.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>(),
                ));
            }
            if s.get("name").and_then(Value::as_str).unwrap_or("").is_empty() {
                causes.push(Cause::required(&format!("subjects[{i}].name"), ""));
            }
            if kind == "ServiceAccount"
                && self.cluster
                && s.get("namespace").and_then(Value::as_str).unwrap_or("").is_empty()
            {
                causes.push(Cause::required(&format!("subjects[{i}].namespace"), ""));
            }
        }
        causes
    }

    /// Upstream's binding storages: the writer must have `bind` on the referenced role, or
    /// hold every rule of it.
    fn authorize_write(
        &self,
        adm: &Admission<'_>,
        obj: &Value,
        old: Option<&Value>,
    ) -> Result<(), String> {
        let Some(user) = adm.user.filter(|u| !escalation_allowed(Some(u))) else { return Ok(()) };
        if old.is_some_and(|o| only_gc_fields_change(obj, o)) {
            return Ok(());
        }
        let rbac = &self.rbac.0;
        let ns = if self.cluster { "" } else { meta_str(obj, "namespace") };
        let b = Binding::from_json(obj);
        let plural = if b.role_kind == "ClusterRole" { CLUSTER_ROLES } else { ROLES };
        if rbac.may(user, "bind", plural, ns, &b.role_name) {
            return Ok(());
        }
        let found = rbac.index().role_rules(&b.role_kind, &b.role_name, ns);
        match found {
            RoleRules::Found(rules) => rbac.confirm_no_escalation(user, ns, &rules),
            RoleRules::Missing(why) => Err(why),
        }
    }

    fn after_commit(&self, _registry: &Registry, obj: &Stored) {
        refresh_from(
            &self.rbac.0,
            if self.cluster { CLUSTER_BINDINGS } else { BINDINGS },
            &obj.value(),
        );
    }

    fn after_delete(&self, _registry: &Registry, obj: &Stored) {
        refresh_from(
            &self.rbac.0,
            if self.cluster { CLUSTER_BINDINGS } else { BINDINGS },
            &obj.value(),
        );
    }
}

/// Registers the four kinds and adds their schema definitions to the built-in ones (call after
/// [`crate::builtin::register`]).
///
/// # Errors
/// A generated schema is not structural (a bug, reported at start).
pub fn register(registry: &Registry, rbac: &Arc<Rbac>) -> Result<(), SchemaError> {
    use k8s_openapi::api::rbac::v1 as r;
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    generator.subschema_for::<r::Role>();
    generator.subschema_for::<r::ClusterRole>();
    generator.subschema_for::<r::RoleBinding>();
    generator.subschema_for::<r::ClusterRoleBinding>();
    let mut defs: Map<String, Value> = (*registry.builtin_defs()).clone();
    for (k, v) in generator.take_definitions(true) {
        defs.entry(k).or_insert(v);
    }
    let handle = Arc::new(RbacHandle(rbac.clone()));
    let kinds: [(&str, &str, bool, Arc<dyn Strategy>); 4] = [
        ("Role", ROLES, true, Arc::new(RoleStrategy { rbac: handle.clone(), cluster: false })),
        (
            "ClusterRole",
            CLUSTER_ROLES,
            false,
            Arc::new(RoleStrategy { rbac: handle.clone(), cluster: true }),
        ),
        (
            "RoleBinding",
            BINDINGS,
            true,
            Arc::new(BindingStrategy { rbac: handle.clone(), cluster: false }),
        ),
        (
            "ClusterRoleBinding",
            CLUSTER_BINDINGS,
            false,
            Arc::new(BindingStrategy { rbac: handle, cluster: true }),
        ),
    ];
    for (kind, plural, namespaced, strategy) in kinds {
        let schema_name = format!("io.k8s.api.rbac.v1.{kind}");
        let root = json!({"$ref": format!("#/$defs/{schema_name}")});
        let schema = Schema::from_json(&root, Some(&defs))?;
        registry.add(Resource {
            group: GROUP.to_owned(),
            version: "v1".to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            singular: kind.to_lowercase(),
            short_names: vec![],
            categories: vec![],
            namespaced,
            status: false,
            scale: None,
            builtin: true,
            schema: Some(Arc::new(schema)),
            schema_name,
            printer: Printer::Builtin,
            storage: storage_key(GROUP, plural),
            field_selectors: vec![],
            strategy,
        });
    }
    registry.set_builtin_defs(defs);
    Ok(())
}

/// Keeps the index current from the store's events of the four kinds (deletions by the garbage
/// collector and namespace cleanup included) and aggregates ClusterRoles when one changes.
pub async fn run(
    api: Arc<crate::rest::Api>,
    rbac: Arc<Rbac>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let subscribe = || {
        let state = api.store.read();
        [ROLES, CLUSTER_ROLES, BINDINGS, CLUSTER_BINDINGS]
            .map(|p| state.subscribe_resource(&Rbac::key(p)))
    };
    let [mut roles, mut croles, mut bindings, mut cbindings] = subscribe();
    rbac.reload();
    policy::aggregate(&api).await;
    loop {
        let ev = tokio::select! {
            e = roles.recv() => e,
            e = croles.recv() => e,
            e = bindings.recv() => e,
            e = cbindings.recv() => e,
            _ = stop.changed() => return,
        };
        match ev {
            Ok(ev) => {
                rbac.refresh(&ev.key);
                if ev.key.resource == Rbac::key(CLUSTER_ROLES) {
                    policy::aggregate(&api).await;
                }
            }
            Err(RecvError::Lagged(_)) => {
                [roles, croles, bindings, cbindings] = subscribe();
                rbac.reload();
                policy::aggregate(&api).await;
            }
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests;
