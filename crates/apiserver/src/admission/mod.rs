//! Dynamic admission: `admissionregistration.k8s.io/v1` MutatingWebhookConfiguration and
//! ValidatingWebhookConfiguration, served with upstream's defaults and validation
//! ([`config`]), and called on the write path of [`crate::rest::Api`] as kube-apiserver's
//! `MutatingAdmissionWebhook` and `ValidatingAdmissionWebhook` plugins call them
//! ([`dispatch`]): mutating webhooks after the kind's defaults and built-in mutating admission,
//! then the kind's validation, then validating webhooks (in parallel), then the store write.
//!
//! ValidatingAdmissionPolicy and its bindings ([`policy`]) are evaluated in process (CEL,
//! [`expr`]) just before the validating webhooks.
//!
//! Which webhooks a request reaches is [`matching`] (rules, scope, selectors); how one is
//! reached is [`client`] (url or Service, TLS verified against `caBundle`).
//!
//! Subresource requests whose object is not the resource's (CONNECT's options, Binding,
//! Eviction) go through [`connect`].
//!
//! Differences from upstream: besides clients' requests, only the garbage collector's and the
//! namespace controller's deletes are admitted (see [`crate::gc`]); the server's other own
//! writes (bootstrap, service accounts, quota status, the collector's patches) are not.
//!
//! CEL expressions get the `authorizer` variable ([`authz`]), backed by the server's
//! authoriser.

pub mod authz;
pub mod client;
pub mod config;
pub mod connect;
pub mod dispatch;
pub mod expr;
pub mod matching;
pub mod policy;

use std::sync::Arc;

use kinetic_machinery::schema::{Schema, SchemaError};
use serde_json::{Map, Value, json};

use crate::registry::{Printer, Registry, Resource, storage_key};

pub use dispatch::{Request, View, mutate, validate};

pub const GROUP: &str = "admissionregistration.k8s.io";
pub const MUTATING: &str = "mutatingwebhookconfigurations";
pub const VALIDATING: &str = "validatingwebhookconfigurations";

/// Registers both webhook configuration kinds (call after [`crate::builtin::register`]).
///
/// # Errors
/// The generated schema is not structural (a bug, reported at start).
pub fn register(registry: &Registry) -> Result<(), SchemaError> {
    use k8s_openapi::api::admissionregistration::v1 as ar;
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    generator.subschema_for::<ar::MutatingWebhookConfiguration>();
    generator.subschema_for::<ar::ValidatingWebhookConfiguration>();
    generator.subschema_for::<ar::ValidatingAdmissionPolicy>();
    generator.subschema_for::<ar::ValidatingAdmissionPolicyBinding>();
    let mut defs: Map<String, Value> = (*registry.builtin_defs()).clone();
    for (k, v) in generator.take_definitions(true) {
        defs.entry(k).or_insert(v);
    }
    let webhooks = |mutating| -> Arc<dyn crate::strategy::Strategy> {
        Arc::new(config::WebhookConfigStrategy { mutating })
    };
    let policies = |binding| -> Arc<dyn crate::strategy::Strategy> {
        Arc::new(policy::PolicyStrategy { binding })
    };
    let kinds = [
        ("MutatingWebhookConfiguration", MUTATING, webhooks(true), false),
        ("ValidatingWebhookConfiguration", VALIDATING, webhooks(false), false),
        ("ValidatingAdmissionPolicy", policy::POLICIES, policies(false), true),
        ("ValidatingAdmissionPolicyBinding", policy::BINDINGS, policies(true), false),
    ];
    let mut resources = Vec::new();
    for (kind, plural, strategy, status) in kinds {
        let schema_name = format!("io.k8s.api.admissionregistration.v1.{kind}");
        let root = json!({"$ref": format!("#/$defs/{schema_name}")});
        let schema = Schema::from_json(&root, Some(&defs))?;
        resources.push(Resource {
            group: GROUP.to_owned(),
            version: "v1".to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            singular: kind.to_lowercase(),
            short_names: vec![],
            categories: vec!["api-extensions".to_owned()],
            namespaced: false,
            status,
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
    for r in resources {
        registry.add(r);
    }
    Ok(())
}
