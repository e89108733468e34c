//! Admission of `serving.knative.dev` objects as Knative Serving's webhook does it (issue 11):
//! its defaults (the mutating webhook: container names, the default readiness probe,
//! `timeoutSeconds`, `containerConcurrency`, traffic defaults) and its validation (the
//! validating webhook: `Invalid` with one field cause per path; Revisions immutable), both from
//! [`kinetic_api::knative::webhook`], run by the embedded server in place of the webhooks.
//!
//! The defaults read `config-defaults` in `knative-serving` when it exists (upstream's webhook
//! watches the same ConfigMap).
//!
//! The `serving.knative.dev/creator` and `lastModifier` annotations name the requesting user,
//! as upstream's `serving.SetUserInfo` sets them: both on create, `lastModifier` on an update
//! that changes the spec; on a Configuration or Route only when nothing owns it (a Service's
//! Configuration and Route get the Service's annotations from its controller). On update they
//! are validated as upstream's `apis.ValidateCreatorAndModifier` does (the creator never
//! changes; the last modifier only with the spec), again only for objects nothing owns. The
//! embedded server authenticates exactly one bearer token, the admin's, which its kubeconfig
//! names [`ADMIN_USER`]: every request it admits is that user's, so [`admit`] passes that name
//! ([`admit_as`] takes another, for a server that knows more users). One deliberate leniency:
//! a creator may be added to an object that has none (objects stored before this existed).
//!
//! Only `spec` and those two annotations are written back: the typed round trip would
//! otherwise drop fields of `metadata` and `status` the types do not list.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kinetic_api::knative::config::{Defaults, SYSTEM_NAMESPACE, defaults};
use kinetic_api::knative::configuration::Configuration;
use kinetic_api::knative::revision::Revision;
use kinetic_api::knative::route::Route;
use kinetic_api::knative::service::Service;
use kinetic_api::knative::webhook::{self, FieldError};
use kinetic_api::knative::{CREATOR_ANNOTATION, LAST_MODIFIER_ANNOTATION};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::Cause;

pub use kinetic_api::knative::GROUP;

/// The one user of the embedded server: the holder of its admin token (its kubeconfig's user).
pub const ADMIN_USER: &str = "kinetic-admin";

/// Defaults and validates a new (`old` = None) or updated object of kind `kind`, requested by
/// [`ADMIN_USER`]. `configmap` reads a ConfigMap's `data` from `knative-serving` by name.
pub fn admit(
    kind: &str,
    obj: &mut Value,
    old: Option<&Value>,
    configmap: impl Fn(&str, &str) -> Option<Value>,
) -> Vec<Cause> {
    admit_as(kind, obj, old, Some(ADMIN_USER), configmap)
}

/// [`admit`] for a request by `user` (`None`: unknown, the user annotations are left alone).
pub fn admit_as(
    kind: &str,
    obj: &mut Value,
    old: Option<&Value>,
    user: Option<&str>,
    configmap: impl Fn(&str, &str) -> Option<Value>,
) -> Vec<Cause> {
    let d = configmap(SYSTEM_NAMESPACE, defaults::CONFIG_NAME)
        .and_then(|cm| cm.get("data").cloned())
        .and_then(|data| serde_json::from_value::<BTreeMap<String, String>>(data).ok())
        .and_then(|data| Defaults::from_data(&data).ok())
        .unwrap_or_default();
    // Upstream sets and checks the user annotations of a Configuration or Route only when
    // nothing owns it (`c.GetOwnerReferences() == nil`).
    let unowned = |m: &ObjectMeta| m.owner_references.as_ref().is_none_or(Vec::is_empty);
    match kind {
        "Service" => run::<Service>(obj, old, |new, old| {
            webhook::set_service_defaults(new, &d, user, old);
            let mut errs = webhook::validate_service(new, &d);
            if let Some(o) = old {
                errs.extend(creator_and_modifier(&o.metadata, &new.metadata, o.spec == new.spec));
            }
            errs
        }),
        "Configuration" => run::<Configuration>(obj, old, |new, old| {
            let mine = unowned(&new.metadata);
            webhook::set_configuration_defaults(new, &d, user.filter(|_| mine), old);
            let mut errs = webhook::validate_configuration(new, &d);
            if let Some(o) = old.filter(|_| mine) {
                errs.extend(creator_and_modifier(&o.metadata, &new.metadata, o.spec == new.spec));
            }
            errs
        }),
        "Route" => run::<Route>(obj, old, |new, old| {
            let mine = unowned(&new.metadata);
            webhook::set_route_defaults(new, user.filter(|_| mine), old);
            let mut errs = webhook::validate_route(new);
            if let Some(o) = old.filter(|_| mine) {
                errs.extend(creator_and_modifier(&o.metadata, &new.metadata, o.spec == new.spec));
            }
            errs
        }),
        "Revision" => run::<Revision>(obj, old, |new, old| {
            webhook::set_revision_defaults(new, &d, old.is_none());
            webhook::validate_revision(new, old, &d)
        }),
        _ => Vec::new(),
    }
}

/// `apis.ValidateCreatorAndModifier` under `metadata.annotations`: the creator is immutable
/// (once set), the last modifier changes only with the spec.
fn creator_and_modifier(old: &ObjectMeta, new: &ObjectMeta, same_spec: bool) -> Vec<FieldError> {
    let get = |m: &ObjectMeta, k: &str| m.annotations.as_ref().and_then(|a| a.get(k)).cloned();
    let mut errs = Vec::new();
    let immutable = |key: &str| FieldError {
        message: "annotation value is immutable".into(),
        paths: vec![format!("metadata.annotations.{key}")],
        details: String::new(),
    };
    let old_creator = get(old, CREATOR_ANNOTATION);
    if old_creator.is_some() && old_creator != get(new, CREATOR_ANNOTATION) {
        errs.push(immutable(CREATOR_ANNOTATION));
    }
    if same_spec && get(old, LAST_MODIFIER_ANNOTATION) != get(new, LAST_MODIFIER_ANNOTATION) {
        errs.push(immutable(LAST_MODIFIER_ANNOTATION));
    }
    errs
}

/// Decodes `obj` (and `old`), runs `f` on the typed object and writes its `spec` back.
fn run<K>(
    obj: &mut Value,
    old: Option<&Value>,
    f: impl FnOnce(&mut K, Option<&K>) -> Vec<FieldError>,
) -> Vec<Cause>
where
    K: DeserializeOwned + Serialize,
{
    let mut typed: K = match serde_json::from_value(obj.clone()) {
        Ok(t) => t,
        Err(e) => return vec![crate::error::invalid("spec", "", &e.to_string())],
    };
    let old: Option<K> = old.and_then(|o| serde_json::from_value(o.clone()).ok());
    let errs = f(&mut typed, old.as_ref());
    if let (Ok(Value::Object(new)), Some(m)) = (serde_json::to_value(&typed), obj.as_object_mut()) {
        if let Some(spec) = new.get("spec") {
            m.insert("spec".into(), spec.clone());
        }
        // The user annotations the defaults set (and nothing else of metadata).
        for key in [CREATOR_ANNOTATION, LAST_MODIFIER_ANNOTATION] {
            let Some(v) =
                new.get("metadata").and_then(|md| md.get("annotations")).and_then(|a| a.get(key))
            else {
                continue;
            };
            let md = m.entry("metadata").or_insert_with(|| Value::Object(Default::default()));
            if let Some(md) = md.as_object_mut() {
                let ann =
                    md.entry("annotations").or_insert_with(|| Value::Object(Default::default()));
                if let Some(ann) = ann.as_object_mut() {
                    ann.insert(key.into(), v.clone());
                }
            }
        }
    }
    causes(&errs)
}

/// One `FieldValueInvalid` cause per path of each error, with Knative's message and details.
fn causes(errs: &[FieldError]) -> Vec<Cause> {
    let mut out = Vec::new();
    for e in errs {
        let message = if e.details.is_empty() {
            e.message.clone()
        } else {
            format!("{}: {}", e.message, e.details)
        };
        for p in &e.paths {
            out.push(Cause {
                reason: "FieldValueInvalid".into(),
                message: message.clone(),
                field: p.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn none(_: &str, _: &str) -> Option<Value> {
        None
    }

    #[test]
    fn defaults_then_validates_a_service() {
        let mut svc = json!({
            "apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": "hello", "namespace": "default"},
            "spec": {"template": {"spec": {"containers": [{"image": "x"}]}}},
        });
        assert!(admit("Service", &mut svc, None, none).is_empty());
        let c = &svc["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["name"], "user-container");
        assert_eq!(svc["spec"]["template"]["spec"]["timeoutSeconds"], 300);
        assert_eq!(svc["spec"]["traffic"][0]["percent"], 100);
        assert_eq!(svc["metadata"]["name"], "hello");

        svc["spec"]["template"]["spec"]["containerConcurrency"] = json!(-1);
        let c = admit("Service", &mut svc, None, none);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].field, "spec.template.spec.containerConcurrency");
    }

    #[test]
    fn the_user_annotations_follow_upstreams_set_user_info_and_its_validation() {
        let new = || {
            json!({
                "apiVersion": "serving.knative.dev/v1", "kind": "Route",
                "metadata": {"name": "r", "namespace": "default"},
                "spec": {"traffic": [{"revisionName": "r-00001", "percent": 100}]},
            })
        };
        let mut created = new();
        assert!(admit_as("Route", &mut created, None, Some("alice"), none).is_empty());
        let ann = &created["metadata"]["annotations"];
        assert_eq!(
            (&ann[CREATOR_ANNOTATION], &ann[LAST_MODIFIER_ANNOTATION]),
            (&json!("alice"), &json!("alice"))
        );
        // A spec change by bob: he is the last modifier, alice stays the creator.
        let mut changed = created.clone();
        changed["spec"]["traffic"][0]["tag"] = json!("t");
        assert!(admit_as("Route", &mut changed, Some(&created), Some("bob"), none).is_empty());
        let ann = &changed["metadata"]["annotations"];
        assert_eq!(
            (&ann[CREATOR_ANNOTATION], &ann[LAST_MODIFIER_ANNOTATION]),
            (&json!("alice"), &json!("bob"))
        );
        // No spec change: nothing moves; forging either annotation is refused.
        let mut same = changed.clone();
        assert!(admit_as("Route", &mut same, Some(&changed), Some("carol"), none).is_empty());
        assert_eq!(same["metadata"]["annotations"][LAST_MODIFIER_ANNOTATION], "bob");
        let mut forged = changed.clone();
        forged["metadata"]["annotations"][CREATOR_ANNOTATION] = json!("mallory");
        forged["metadata"]["annotations"][LAST_MODIFIER_ANNOTATION] = json!("mallory");
        let c = admit_as("Route", &mut forged, Some(&changed), Some("mallory"), none);
        let fields: Vec<&str> = c.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "metadata.annotations.serving.knative.dev/creator",
                "metadata.annotations.serving.knative.dev/lastModifier"
            ]
        );
        assert_eq!(c[0].message, "annotation value is immutable");
        // An owned Route (a Service's) is left to its owner's controller.
        let mut owned = new();
        owned["metadata"]["ownerReferences"] = json!([{"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "r",
                    "uid": "u", "controller": true}]);
        assert!(admit_as("Route", &mut owned, None, Some("alice"), none).is_empty());
        assert!(owned["metadata"].get("annotations").is_none());
    }
}
