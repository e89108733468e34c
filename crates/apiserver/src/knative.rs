//! Admission of `serving.knative.dev` objects as Knative Serving's webhook does it (issue 11):
//! its defaults (the mutating webhook: container names, the default readiness probe,
//! `timeoutSeconds`, `containerConcurrency`, traffic defaults) and its validation (the
//! validating webhook: `Invalid` with one field cause per path; Revisions immutable), both from
//! [`kinetic_api::knative::webhook`], run by the embedded server in place of the webhooks.
//!
//! The defaults read `config-defaults` in `knative-serving` when it exists (upstream's webhook
//! watches the same ConfigMap). The `creator`/`lastModifier` annotations need the requesting
//! user; the embedded server authenticates one bearer token and knows no user name, so they are
//! not set here (upstream skips them too when the request carries no user info).
//!
//! Only `spec` (and, for the user annotations, nothing else) is written back: the typed
//! round trip would otherwise drop fields of `metadata` and `status` the types do not list.

use std::collections::BTreeMap;

use kinetic_api::knative::config::{Defaults, SYSTEM_NAMESPACE, defaults};
use kinetic_api::knative::configuration::Configuration;
use kinetic_api::knative::revision::Revision;
use kinetic_api::knative::route::Route;
use kinetic_api::knative::service::Service;
use kinetic_api::knative::webhook::{self, FieldError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::Cause;

pub use kinetic_api::knative::GROUP;

/// Defaults and validates a new (`old` = None) or updated object of kind `kind`. `configmap`
/// reads a ConfigMap's `data` from `knative-serving` by name.
pub fn admit(
    kind: &str,
    obj: &mut Value,
    old: Option<&Value>,
    configmap: impl Fn(&str, &str) -> Option<Value>,
) -> Vec<Cause> {
    let d = configmap(SYSTEM_NAMESPACE, defaults::CONFIG_NAME)
        .and_then(|cm| cm.get("data").cloned())
        .and_then(|data| serde_json::from_value::<BTreeMap<String, String>>(data).ok())
        .and_then(|data| Defaults::from_data(&data).ok())
        .unwrap_or_default();
    match kind {
        "Service" => run::<Service>(obj, old, |new, old| {
            webhook::set_service_defaults(new, &d, None, old);
            webhook::validate_service(new, &d)
        }),
        "Configuration" => run::<Configuration>(obj, old, |new, old| {
            webhook::set_configuration_defaults(new, &d, None, old);
            webhook::validate_configuration(new, &d)
        }),
        "Route" => run::<Route>(obj, old, |new, old| {
            webhook::set_route_defaults(new, None, old);
            webhook::validate_route(new)
        }),
        "Revision" => run::<Revision>(obj, old, |new, old| {
            webhook::set_revision_defaults(new, &d, old.is_none());
            webhook::validate_revision(new, old, &d)
        }),
        _ => Vec::new(),
    }
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
    if let (Ok(Value::Object(new)), Some(m)) = (serde_json::to_value(&typed), obj.as_object_mut())
        && let Some(spec) = new.get("spec")
    {
        m.insert("spec".into(), spec.clone());
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
}
