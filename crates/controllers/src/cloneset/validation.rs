//! The controller's own check of a CloneSet against Kruise's webhook rules
//! ([`kinetic_rollout::validation`], the same code the embedded API server runs at admission).
//!
//! On a real cluster no Kruise webhook runs, so a CloneSet the webhook would refuse is stored
//! anyway. Acting on one can do harm: a selector that does not match the template's labels
//! made the controller create a pod, release it as not matching, and create the next one —
//! one orphan a minute, forever, left behind when the CloneSet was deleted (issue 10, item 6).
//! So the controller does nothing with an invalid CloneSet but say why: the `FailedScale`
//! condition with reason `InvalidSpec`, and a Warning Event of the same reason, once per
//! message. When the user fixes it (the template's labels may change, the selector may not),
//! the condition goes and the controller acts again.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kinetic_api::kruise::cloneset::condition::FAILED_SCALE;
use kinetic_api::kruise::cloneset::{CloneSet, CloneSetCondition};
use kube::ResourceExt as _;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use super::{Ctx, ReconcileError, key};
use crate::events::EventReq;

/// The reason of the condition and the Event.
pub const INVALID_SPEC: &str = "InvalidSpec";

/// What is wrong with `cs` (`field: message`, joined by `; `), or `None` when it is valid.
pub fn problems(cs: &CloneSet) -> Option<String> {
    let obj = match serde_json::to_value(cs) {
        Ok(v) => v,
        Err(e) => return Some(format!("the CloneSet cannot be encoded: {e}")),
    };
    let causes = kinetic_rollout::validation::cloneset(&obj);
    let lines: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
    (!lines.is_empty()).then(|| lines.join("; "))
}

fn invalid_condition(cs: &CloneSet) -> Option<&CloneSetCondition> {
    let conds = cs.status.as_ref().and_then(|s| s.conditions.as_ref());
    conds?.iter().find(|c| c.type_ == FAILED_SCALE && c.reason.as_deref() == Some(INVALID_SPEC))
}

fn other_conditions(cs: &CloneSet) -> Vec<CloneSetCondition> {
    let conds = cs.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    conds
        .into_iter()
        .filter(|c| !(c.type_ == FAILED_SCALE && c.reason.as_deref() == Some(INVALID_SPEC)))
        .collect()
}

/// Says on `cs` why the controller does not act on it: the condition, and a Warning Event
/// when the reason is new.
pub async fn refuse(ctx: &Ctx, cs: &CloneSet, why: &str) -> Result<(), ReconcileError> {
    if invalid_condition(cs).and_then(|c| c.message.as_deref()) == Some(why) {
        return Ok(());
    }
    tracing::warn!(cloneset = %key(cs), problems = why, "invalid CloneSet: not acting on it");
    let now = Time(Timestamp::now());
    let mut conds = other_conditions(cs);
    conds.push(CloneSetCondition {
        type_: FAILED_SCALE.to_owned(),
        status: "True".to_owned(),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
        reason: Some(INVALID_SPEC.to_owned()),
        message: Some(why.to_owned()),
    });
    write_conditions(ctx, cs, &conds).await?;
    ctx.events.send(EventReq::for_object(
        cs,
        "Warning",
        INVALID_SPEC,
        format!("the controller does not act on this CloneSet until it is fixed: {why}"),
    ));
    Ok(())
}

/// Removes the condition [`refuse`] set from a CloneSet that is valid again; whether there was
/// one (then this pass ends: the next one starts from the updated object).
pub async fn clear(ctx: &Ctx, cs: &CloneSet) -> Result<bool, ReconcileError> {
    if invalid_condition(cs).is_none() {
        return Ok(false);
    }
    tracing::info!(cloneset = %key(cs), "the CloneSet is valid again");
    write_conditions(ctx, cs, &other_conditions(cs)).await?;
    Ok(true)
}

async fn write_conditions(
    ctx: &Ctx,
    cs: &CloneSet,
    conds: &[CloneSetCondition],
) -> Result<(), ReconcileError> {
    let api: Api<CloneSet> =
        Api::namespaced(ctx.client.clone(), &cs.namespace().unwrap_or_default());
    // The whole status (a CloneSet never reconciled has none, and the schema requires its
    // counters); the resourceVersion makes a stale pass fail with 409 instead of dropping a
    // condition another pass wrote.
    // `null` removes the last condition (a merge patch keeps a field it does not mention).
    let status = cs.status.clone().unwrap_or_default();
    let mut body = json!({
        "metadata": {"resourceVersion": cs.resource_version()},
        "status": status,
    });
    body["status"]["conditions"] = if conds.is_empty() { Value::Null } else { json!(conds) };
    api.patch_status(&cs.name_any(), &PatchParams::default(), &Patch::Merge(body)).await?;
    Ok(())
}
