//! `core/v1` ResourceQuota and LimitRange, served as built-in kinds and enforced at admission as
//! upstream does:
//!
//! - [`limits`] is the LimitRanger plugin: the pod strategy's mutating admission applies the
//!   `Container` defaults, and the pod and claim strategies' validating admission
//!   ([`crate::strategy::Strategy::validate_admission`]) refuses what is outside the bounds
//!   with 403 Forbidden.
//! - [`admit`] is the ResourceQuota plugin, the last of the chain (after the validating
//!   webhooks, as upstream orders it): every namespaced create, and the updates an
//!   [`Evaluator`] says can change a charge, is checked against every quota of its namespace,
//!   with the kind's evaluator ([`evaluate`]; `count/<resource>.<group>` for any kind).
//! - [`controller`] keeps `status.hard` (mirrored from `spec.hard`) and `status.used`
//!   (recalculated from the objects) as kube-controller-manager's resource quota controller.
//!
//! **Concurrency.** Upstream charges `status.used` with an update of the quota conditional on
//! its resourceVersion before the object is stored, and retries on conflict. Here the charge
//! and the object's write are one all-or-nothing store write ([`crate::store::Store::write_all`]:
//! the quota's update carries the resourceVersion admission read as its precondition). Two
//! concurrent creates that both read the quota at the same version cannot both commit: the
//! second fails its precondition, reads the quota again and is evaluated against the new
//! usage, so no more than the quota is ever admitted; and since the charge commits only with
//! the object, a write that fails (name taken, a precondition) leaves no charge behind, which
//! upstream leaves for its controller's next resync. The store's single writer applies the
//! pair in one transaction, so readers see both or neither.
//!
//! What it does not do: the admission configuration's `limitedResources`, the
//! `VolumeAttributesClass` scope, charging in-place pod resizes (`pods/resize` is not served),
//! pod status resources.

pub mod admit;
pub mod amount;
pub mod controller;
pub mod evaluate;
pub mod limits;
pub mod resources;

use std::sync::Arc;

use kinetic_machinery::schema::{Schema, SchemaError};
use serde_json::{Map, Value, json};

pub use evaluate::{Evaluator, Operation};

use crate::error::Cause;
use crate::registry::{Printer, Registry, Resource, storage_key};
use crate::store::{ObjKey, Op, Store};
use crate::strategy::Strategy;

/// Registers `resourcequotas` (short name `quota`) and `limitranges` (`limits`) and adds their
/// schema definitions to the built-in ones (call after [`crate::builtin::register`]).
///
/// # Errors
/// A generated schema is not structural (a bug, reported at start).
pub fn register(registry: &Registry) -> Result<(), SchemaError> {
    use k8s_openapi::api::core::v1;
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    generator.subschema_for::<v1::ResourceQuota>();
    generator.subschema_for::<v1::LimitRange>();
    let mut defs: Map<String, Value> = (*registry.builtin_defs()).clone();
    for (k, v) in generator.take_definitions(true) {
        defs.entry(k).or_insert(v);
    }
    // (kind, plural, short name, status subresource, strategy)
    type Kind = (&'static str, &'static str, &'static str, bool, Arc<dyn Strategy>);
    let kinds: [Kind; 2] = [
        ("ResourceQuota", "resourcequotas", "quota", true, Arc::new(QuotaStrategy)),
        ("LimitRange", "limitranges", "limits", false, Arc::new(LimitRangeStrategy)),
    ];
    for (kind, plural, short, status, strategy) in kinds {
        let schema_name = format!("io.k8s.api.core.v1.{kind}");
        let root = json!({"$ref": format!("#/$defs/{schema_name}")});
        let schema = Schema::from_json(&root, Some(&defs))?;
        registry.add(Resource {
            group: String::new(),
            version: "v1".to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            singular: kind.to_lowercase(),
            short_names: vec![short.to_owned()],
            categories: vec![],
            namespaced: true,
            status,
            scale: None,
            builtin: true,
            schema: Some(Arc::new(schema)),
            schema_name,
            printer: Printer::Builtin,
            storage: storage_key("", plural),
            field_selectors: vec![],
            strategy,
        });
    }
    registry.set_builtin_defs(defs);
    Ok(())
}

/// `core/v1` ResourceQuota (upstream `pkg/registry/core/resourcequota`): status is written by
/// [`controller`] and by admission's charges; quotas count themselves (`resourcequotas`).
#[derive(Debug)]
struct QuotaStrategy;

impl Strategy for QuotaStrategy {
    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
        validate_quota(obj)
    }

    fn quota(&self) -> Evaluator {
        Evaluator::Count { legacy_name: true }
    }
}

/// `core/v1` LimitRange (upstream `pkg/registry/core/limitrange`).
#[derive(Debug)]
struct LimitRangeStrategy;

impl Strategy for LimitRangeStrategy {
    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
        validate_limit_range(obj)
    }
}

/// The standard quota resource names upstream's `IsStandardQuotaResourceName` accepts, beside
/// qualified names, `count/...`, `requests.`/`limits.`-prefixed and hugepages names.
const STANDARD_QUOTA: &[&str] = &[
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.storage",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "services.nodeports",
    "services.loadbalancers",
];

const SCOPES: &[&str] = &[
    "Terminating",
    "NotTerminating",
    "BestEffort",
    "NotBestEffort",
    "PriorityClass",
    "CrossNamespacePodAffinity",
    "VolumeAttributesClass",
];

fn quota_name_ok(name: &str) -> bool {
    STANDARD_QUOTA.contains(&name)
        || name.contains('/')
        || name.starts_with("count/")
        || name.starts_with("requests.")
        || name.starts_with("limits.")
        || name.starts_with("hugepages-")
}

/// Upstream `ValidateResourceQuota` for the fields that matter here: resource names, values
/// (parse, not negative) in `spec.hard` and status, scope names and operators.
fn validate_quota(obj: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    for path in ["spec.hard", "status.hard", "status.used"] {
        let ptr = format!("/{}", path.replace('.', "/"));
        for (k, v) in obj.pointer(&ptr).and_then(Value::as_object).into_iter().flatten() {
            let field = format!("{path}[{k}]");
            if !quota_name_ok(k) {
                c.push(Cause::invalid(&field, &json!(k), "must be a standard resource for quota"));
            }
            match resources::amount_of(v) {
                None => c.push(Cause::invalid(&field, v, amount::FORMAT_WRONG)),
                Some(q) if q.sign() < 0 => {
                    c.push(Cause::invalid(&field, v, "must be greater than or equal to 0"));
                }
                Some(_) => {}
            }
        }
    }
    let scopes = obj.pointer("/spec/scopes").and_then(Value::as_array);
    for (i, s) in scopes.into_iter().flatten().enumerate() {
        if !s.as_str().is_some_and(|s| SCOPES.contains(&s)) {
            let allowed: Vec<String> = SCOPES.iter().map(|s| (*s).to_owned()).collect();
            c.push(Cause::not_supported(&format!("spec.scopes[{i}]"), s, &allowed));
        }
    }
    let exprs = obj.pointer("/spec/scopeSelector/matchExpressions").and_then(Value::as_array);
    for (i, e) in exprs.into_iter().flatten().enumerate() {
        let op = e.get("operator").cloned().unwrap_or(Value::Null);
        let ops = ["In", "NotIn", "Exists", "DoesNotExist"];
        if !op.as_str().is_some_and(|o| ops.contains(&o)) {
            let allowed: Vec<String> = ops.iter().map(|s| (*s).to_owned()).collect();
            let field = format!("spec.scopeSelector.matchExpressions[{i}].operator");
            c.push(Cause::not_supported(&field, &op, &allowed));
        }
        let name = e.get("scopeName").cloned().unwrap_or(Value::Null);
        if !name.as_str().is_some_and(|s| SCOPES.contains(&s)) {
            let allowed: Vec<String> = SCOPES.iter().map(|s| (*s).to_owned()).collect();
            let field = format!("spec.scopeSelector.matchExpressions[{i}].scopeName");
            c.push(Cause::not_supported(&field, &name, &allowed));
        }
    }
    c
}

/// Upstream `ValidateLimitRange`: the types, defaults not for `Pod`, claims bounded on storage,
/// and `min <= defaultRequest <= default <= max`, `maxLimitRequestRatio >= 1`, with upstream's
/// messages.
fn validate_limit_range(obj: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    let items = obj.pointer("/spec/limits").and_then(Value::as_array);
    for (i, l) in items.into_iter().flatten().enumerate() {
        let path = format!("spec.limits[{i}]");
        let ty = l.get("type").and_then(Value::as_str).unwrap_or_default();
        if !["Pod", "Container", "PersistentVolumeClaim"].contains(&ty) {
            let allowed = ["Container".to_owned(), "PersistentVolumeClaim".into(), "Pod".into()];
            c.push(Cause::not_supported(&format!("{path}.type"), &json!(ty), &allowed));
        }
        let list = |k: &str| resources::list_of(l.get(k));
        let (min, max, def, def_req, ratio) = (
            list("min"),
            list("max"),
            list("default"),
            list("defaultRequest"),
            list("maxLimitRequestRatio"),
        );
        for k in ["min", "max", "default", "defaultRequest", "maxLimitRequestRatio"] {
            for (name, v) in l.get(k).and_then(Value::as_object).into_iter().flatten() {
                if resources::amount_of(v).is_none() {
                    c.push(Cause::invalid(&format!("{path}.{k}[{name}]"), v, amount::FORMAT_WRONG));
                }
            }
        }
        if ty == "Pod" {
            for k in ["default", "defaultRequest"] {
                if l.get(k).and_then(Value::as_object).is_some_and(|m| !m.is_empty()) {
                    c.push(Cause {
                        reason: "FieldValueForbidden".into(),
                        message: "Forbidden: may not be specified when `type` is 'Pod'".into(),
                        field: format!("{path}.{k}"),
                    });
                }
            }
        }
        if ty == "PersistentVolumeClaim"
            && !min.contains_key("storage")
            && !max.contains_key("storage")
        {
            c.push(Cause::required(
                &format!("{path}.limits"),
                "either minimum or maximum storage value is required, but neither was provided",
            ));
        }
        let mut keys: std::collections::BTreeSet<&String> = min.keys().collect();
        keys.extend(max.keys());
        keys.extend(def.keys());
        keys.extend(def_req.keys());
        keys.extend(ratio.keys());
        for k in keys {
            let (mn, mx, d, dr, r) =
                (min.get(k), max.get(k), def.get(k), def_req.get(k), ratio.get(k));
            let mut bad = |field: &str, v: &amount::Amount, msg: String| {
                c.push(Cause::invalid(
                    &format!("{path}.{field}[{k}]"),
                    &json!(v.to_string()),
                    &msg,
                ));
            };
            if let (Some(mn), Some(mx)) = (mn, mx)
                && mn > mx
            {
                bad("min", mn, format!("min value {mn} is greater than max value {mx}"));
            }
            if let (Some(dr), Some(mn)) = (dr, mn)
                && mn > dr
            {
                bad(
                    "defaultRequest",
                    dr,
                    format!("min value {mn} is greater than default request value {dr}"),
                );
            }
            if let (Some(dr), Some(mx)) = (dr, mx)
                && dr > mx
            {
                bad(
                    "defaultRequest",
                    dr,
                    format!("default request value {dr} is greater than max value {mx}"),
                );
            }
            if let (Some(dr), Some(d)) = (dr, d)
                && dr > d
            {
                bad(
                    "defaultRequest",
                    dr,
                    format!("default request value {dr} is greater than default limit value {d}"),
                );
            }
            if let (Some(d), Some(mn)) = (d, mn)
                && mn > d
            {
                bad("default", mn, format!("min value {mn} is greater than default value {d}"));
            }
            if let (Some(d), Some(mx)) = (d, mx)
                && d > mx
            {
                bad("default", mx, format!("default value {d} is greater than max value {mx}"));
            }
            if let Some(r) = r
                && *r < amount::Amount::from_int(1)
            {
                bad("maxLimitRequestRatio", r, format!("ratio {r} is less than 1"));
            }
        }
    }
    c
}

/// The LimitRanges of a namespace, in name order.
pub fn limit_ranges(store: &Store, ns: &str) -> Vec<Value> {
    let key = storage_key("", "limitranges");
    store.read().list(&key, Some(ns), None).map(|(_, s)| s.value()).collect()
}

/// The object count resource name of a served resource (upstream
/// `ObjectCountQuotaResourceNameFor`): `count/pods`, `count/deployments.apps`.
pub fn count_name(res: &Resource) -> String {
    if res.group.is_empty() {
        format!("count/{}", res.plural)
    } else {
        format!("count/{}.{}", res.plural, res.group)
    }
}

/// Quota admission of a write of `obj` (`old`: the stored object on update) to `res` in `ns`:
/// the quota status updates to commit with it (each conditional on the quota's version as
/// read here), or the reason of upstream's 403.
///
/// # Errors
/// The write does not fit a quota of the namespace.
pub fn charges(
    store: &Store,
    res: &Resource,
    ns: &str,
    obj: &Value,
    old: Option<&Value>,
) -> Result<Vec<Op>, String> {
    let ev = res.strategy.quota();
    if !res.namespaced || ev == Evaluator::Ignored {
        return Ok(Vec::new());
    }
    let key = storage_key("", "resourcequotas");
    let stored: Vec<_> = store.read().list(&key, Some(ns), None).map(|(_, s)| s.clone()).collect();
    if stored.is_empty() {
        return Ok(Vec::new());
    }
    let values: Vec<Value> = stored.iter().map(|s| s.value()).collect();
    let views: Vec<admit::QuotaView> = values.iter().map(admit::QuotaView::of).collect();
    let op = if old.is_some() { Operation::Update } else { Operation::Create };
    let charged = admit::check(&views, ev, &count_name(res), op, obj, old, jiff::Timestamp::now())?;
    Ok(charged
        .into_iter()
        .filter_map(|(i, used)| {
            let mut value = values.get(i)?.clone();
            let status =
                value.as_object_mut().and_then(|m| resources::object_entry(m, "status"))?;
            status.insert("used".into(), resources::to_json(&used));
            let name = views.get(i)?.name.clone();
            Some(Op::Update {
                key: ObjKey::new(&key, ns, &name),
                value,
                expected_rv: Some(stored.get(i)?.rv),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(c: Vec<Cause>) -> Vec<String> {
        c.into_iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn quota_validation_follows_upstream() {
        assert!(validate_quota(&json!({"spec": {"hard": {"pods": "2", "requests.cpu": "1", "count/deployments.apps": 3}}})).is_empty());
        let f = fields(validate_quota(
            &json!({"spec": {"hard": {"cpu": "x", "pods": "-1"}, "scopes": ["Sometimes"]}}),
        ));
        assert_eq!(f.len(), 3, "{f:?}");
        assert!(
            f[0].starts_with("spec.hard[cpu]: Invalid value: \"x\": quantities must match"),
            "{f:?}"
        );
        assert_eq!(
            f[1],
            "spec.hard[pods]: Invalid value: \"-1\": must be greater than or equal to 0"
        );
        assert!(f[2].starts_with("spec.scopes[0]: Unsupported value: \"Sometimes\""), "{f:?}");
    }

    #[test]
    fn limit_range_validation_follows_upstream() {
        let ok = json!({"spec": {"limits": [{"type": "Container", "min": {"cpu": "100m"}, "max": {"cpu": "2"},
            "default": {"cpu": "1"}, "defaultRequest": {"cpu": "500m"}, "maxLimitRequestRatio": {"cpu": "4"}}]}});
        assert!(validate_limit_range(&ok).is_empty());
        let bad = json!({"spec": {"limits": [
            {"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}},
            {"type": "Pod", "default": {"cpu": "1"}},
            {"type": "PersistentVolumeClaim", "max": {"cpu": "1"}}]}});
        let f = fields(validate_limit_range(&bad));
        assert_eq!(
            f,
            [
                "spec.limits[0].min[cpu]: Invalid value: \"2\": min value 2 is greater than max value 1",
                "spec.limits[1].default: Forbidden: may not be specified when `type` is 'Pod'",
                "spec.limits[2].limits: Required value: either minimum or maximum storage value is required, but neither was provided",
            ]
        );
    }
}
