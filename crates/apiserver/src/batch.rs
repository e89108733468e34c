//! `batch/v1` Job and CronJob, served as built-in kinds: schemas generated from `k8s-openapi`,
//! upstream's defaults (`pkg/apis/batch/v1/defaults.go`), the Job's generated selector
//! (`pkg/registry/batch/job/strategy.go`, `generateSelector`), validation
//! (`pkg/apis/batch/validation`; `podFailurePolicy`, `backoffLimitPerIndex` and
//! `successPolicy` in `policy`) and `status` subresources. The controllers that act on them
//! live in `kinetic-controllers` (`job`, `cronjob`). Table columns are machinery's printers.

use std::sync::Arc;

use kinetic_machinery::schema::{Schema, SchemaError};
use serde_json::{Map, Value, json};

use crate::builtin::obj_mut;
use crate::error::Cause;
use crate::registry::{Printer, Registry, Resource, storage_key};
use crate::strategy::Strategy;

mod cronjob;
mod job;
mod policy;

pub const GROUP: &str = "batch";

/// Registers `batch/v1` `jobs` and `cronjobs` (call after [`crate::builtin::register`]).
///
/// # Errors
/// A generated schema is not structural (a bug, reported at start).
pub fn register(registry: &Registry) -> Result<(), SchemaError> {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    generator.subschema_for::<k8s_openapi::api::batch::v1::Job>();
    generator.subschema_for::<k8s_openapi::api::batch::v1::CronJob>();
    let mut defs: Map<String, Value> = (*registry.builtin_defs()).clone();
    for (k, v) in generator.take_definitions(true) {
        defs.entry(k).or_insert(v);
    }
    type Kind = (&'static str, &'static str, &'static [&'static str], Arc<dyn Strategy>);
    let kinds: [Kind; 2] = [
        ("Job", "jobs", &[], Arc::new(job::JobStrategy)),
        ("CronJob", "cronjobs", &["cj"], Arc::new(cronjob::CronJobStrategy)),
    ];
    for (kind, plural, short, strategy) in kinds {
        let schema_name = format!("io.k8s.api.batch.v1.{kind}");
        let root = json!({"$ref": format!("#/$defs/{schema_name}")});
        let schema = Schema::from_json(&root, Some(&defs))?;
        registry.add(Resource {
            group: GROUP.to_owned(),
            version: "v1".to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            singular: kind.to_lowercase(),
            short_names: short.iter().map(|s| (*s).to_owned()).collect(),
            categories: vec!["all".to_owned()],
            namespaced: true,
            status: true,
            scale: None,
            builtin: true,
            schema: Some(Arc::new(schema)),
            schema_name,
            printer: Printer::Builtin,
            storage: storage_key(GROUP, plural),
            field_selectors: if kind == "Job" { vec!["status.successful".into()] } else { vec![] },
            strategy,
        });
    }
    registry.set_builtin_defs(defs);
    Ok(())
}

/// `ValidateNonnegativeField`.
fn nonnegative(spec: &Value, key: &str, path: &str, c: &mut Vec<Cause>) {
    if let Some(v) = spec.get(key).and_then(Value::as_i64)
        && v < 0
    {
        c.push(Cause::invalid(
            &format!("{path}.{key}"),
            &json!(v),
            "must be greater than or equal to 0",
        ));
    }
}

/// The pod template rules a Job and a CronJob's job template share: upstream's
/// `ValidatePodTemplateSpec` (here the pod spec checks Kinetic does) and a restart policy of
/// `OnFailure` or `Never` (`spec.template.spec.restartPolicy`).
fn validate_job_template(spec: &Value, path: &str, c: &mut Vec<Cause>) {
    crate::validation::validate_pod_spec(
        spec.pointer("/template/spec"),
        &format!("{path}.template.spec"),
        c,
    );
    let rp = spec.pointer("/template/spec/restartPolicy").and_then(Value::as_str).unwrap_or("");
    if !matches!(rp, "OnFailure" | "Never") {
        c.retain(|x| x.field != format!("{path}.template.spec.restartPolicy"));
        c.push(Cause::not_supported(
            &format!("{path}.template.spec.restartPolicy"),
            &json!(rp),
            &["OnFailure".to_owned(), "Never".to_owned()],
        ));
    }
    for key in ["parallelism", "completions", "activeDeadlineSeconds", "backoffLimit"] {
        nonnegative(spec, key, path, c);
    }
    nonnegative(spec, "ttlSecondsAfterFinished", path, c);
    if let Some(mode) = spec.get("completionMode").and_then(Value::as_str) {
        if !matches!(mode, "NonIndexed" | "Indexed") {
            c.push(Cause::not_supported(
                &format!("{path}.completionMode"),
                &json!(mode),
                &["NonIndexed".to_owned(), "Indexed".to_owned()],
            ));
        }
        if mode == "Indexed" && spec.get("completions").is_none_or(Value::is_null) {
            c.push(Cause::required(
                &format!("{path}.completions"),
                "when completion mode is Indexed",
            ));
        }
    }
    policy::validate(spec, path, c);
    if spec.get("podFailurePolicy").is_some_and(|p| !p.is_null()) && rp == "OnFailure" {
        c.push(Cause::invalid(
            &format!("{path}.template.spec.restartPolicy"),
            &json!(rp),
            "only \"Never\" is supported when podFailurePolicy is specified",
        ));
    }
}

/// Upstream's job defaults shared with the pod template defaults of the built-in kinds.
fn default_template(spec: &mut Map<String, Value>) {
    if let Some(ps) = spec.get_mut("template").and_then(|t| obj_mut(t, "spec")) {
        crate::builtin::default_pod_spec(ps);
    }
}

#[cfg(test)]
mod tests;
