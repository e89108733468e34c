//! The Job spec rules of `podFailurePolicy`, `backoffLimitPerIndex`/`maxFailedIndexes` and
//! `successPolicy` (upstream `pkg/apis/batch/validation/validation.go`, v1.35,
//! `validateJobSpec`, `validatePodFailurePolicy*`, `validateSuccessPolicy*`,
//! `validateIndexesFormat`), with upstream's limits and wording. Shared by a Job's `spec` and a
//! CronJob's `spec.jobTemplate.spec`.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::error::Cause;

const MAX_PARALLELISM_FOR_INDEXED_JOB: i64 = 100_000;
const MAX_FAILED_INDEXES_FOR_INDEXED_JOB: i64 = 100_000;
const COMPLETIONS_SOFT_LIMIT: i64 = 100_000;
const PARALLELISM_LIMIT_FOR_HIGH_COMPLETIONS: i64 = 10_000;
const MAX_FAILED_INDEXES_LIMIT_FOR_HIGH_COMPLETIONS: i64 = 10_000;
const MAX_POD_FAILURE_POLICY_RULES: usize = 20;
const MAX_ON_EXIT_CODES_VALUES: usize = 255;
const MAX_ON_POD_CONDITIONS_PATTERNS: usize = 20;
const MAX_SUCCEEDED_INDEXES_LEN: usize = 64 * 1024;
const MAX_SUCCESS_POLICY_RULES: usize = 20;

fn int(spec: &Value, key: &str) -> Option<i64> {
    spec.get(key).and_then(Value::as_i64)
}

fn set(spec: &Value, key: &str) -> bool {
    spec.get(key).is_some_and(|v| !v.is_null())
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// `field.Invalid` with `field.OmitValueType{}`: the value is not printed.
fn omitted(field: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".to_owned(),
        message: format!("Invalid value: {detail}"),
        field: field.to_owned(),
    }
}

/// `field.Duplicate`.
fn duplicate(field: &str, v: i64) -> Cause {
    Cause {
        reason: "FieldValueDuplicate".to_owned(),
        message: format!("Duplicate value: {v}"),
        field: field.to_owned(),
    }
}

/// The per-index and policy rules of `validateJobSpec` for the spec at `path`.
pub(super) fn validate(spec: &Value, path: &str, c: &mut Vec<Cause>) {
    let f = |k: &str| format!("{path}.{k}");
    for key in ["backoffLimitPerIndex", "maxFailedIndexes"] {
        super::nonnegative(spec, key, path, c);
    }
    let per_index = set(spec, "backoffLimitPerIndex");
    let max_failed = int(spec, "maxFailedIndexes");
    if set(spec, "maxFailedIndexes") && !per_index {
        c.push(Cause::required(&f("backoffLimitPerIndex"), "when maxFailedIndexes is specified"));
    }
    let indexed = spec.get("completionMode").and_then(Value::as_str) == Some("Indexed");
    let completions = int(spec, "completions");
    let parallelism = int(spec, "parallelism");
    if indexed {
        if let Some(p) = parallelism.filter(|p| *p > MAX_PARALLELISM_FOR_INDEXED_JOB) {
            let msg = format!(
                "must be less than or equal to {MAX_PARALLELISM_FOR_INDEXED_JOB} when completion mode is Indexed"
            );
            c.push(Cause::invalid(&f("parallelism"), &json!(p), &msg));
        }
        if let (Some(cm), Some(m)) = (completions, max_failed)
            && m > cm
        {
            let msg = "must be less than or equal to completions";
            c.push(Cause::invalid(&f("maxFailedIndexes"), &json!(m), msg));
        }
        if let Some(m) = max_failed.filter(|m| *m > MAX_FAILED_INDEXES_FOR_INDEXED_JOB) {
            let msg = format!("must be less than or equal to {MAX_FAILED_INDEXES_FOR_INDEXED_JOB}");
            c.push(Cause::invalid(&f("maxFailedIndexes"), &json!(m), &msg));
        }
        if completions.is_some_and(|cm| cm > COMPLETIONS_SOFT_LIMIT) && per_index {
            let high = format!(
                "when completions are above {COMPLETIONS_SOFT_LIMIT} and used with backoff limit per index"
            );
            if max_failed.is_none() {
                let msg =
                    format!("must be specified when completions is above {COMPLETIONS_SOFT_LIMIT}");
                c.push(Cause::required(&f("maxFailedIndexes"), &msg));
            }
            if let Some(p) = parallelism.filter(|p| *p > PARALLELISM_LIMIT_FOR_HIGH_COMPLETIONS) {
                let msg = format!(
                    "must be less than or equal to {PARALLELISM_LIMIT_FOR_HIGH_COMPLETIONS} {high}"
                );
                c.push(Cause::invalid(&f("parallelism"), &json!(p), &msg));
            }
            if let Some(m) =
                max_failed.filter(|m| *m > MAX_FAILED_INDEXES_LIMIT_FOR_HIGH_COMPLETIONS)
            {
                let msg = format!(
                    "must be less than or equal to {MAX_FAILED_INDEXES_LIMIT_FOR_HIGH_COMPLETIONS} {high}"
                );
                c.push(Cause::invalid(&f("maxFailedIndexes"), &json!(m), &msg));
            }
        }
    } else {
        for key in ["backoffLimitPerIndex", "maxFailedIndexes"] {
            if let Some(v) = spec.get(key).filter(|v| !v.is_null()) {
                c.push(Cause::invalid(&f(key), v, "requires indexed completion mode"));
            }
        }
    }
    if let Some(pfp) = spec.get("podFailurePolicy").filter(|v| !v.is_null()) {
        pod_failure_policy(spec, pfp, &f("podFailurePolicy"), c);
    }
    if let Some(sp) = spec.get("successPolicy").filter(|v| !v.is_null()) {
        if indexed {
            success_policy(sp, completions.unwrap_or(0), &f("successPolicy"), c);
        } else {
            c.push(Cause::invalid(&f("successPolicy"), sp, "requires indexed completion mode"));
        }
    }
    if let Some(rp) = spec.get("podReplacementPolicy").and_then(Value::as_str) {
        let field = f("podReplacementPolicy");
        if set(spec, "podFailurePolicy") {
            if rp != "Failed" {
                c.push(Cause::not_supported(&field, &json!(rp), &strings(&["Failed"])));
            }
        } else if !matches!(rp, "Failed" | "TerminatingOrFailed") {
            let supported = strings(&["Failed", "TerminatingOrFailed"]);
            c.push(Cause::not_supported(&field, &json!(rp), &supported));
        }
    }
}

/// `validatePodFailurePolicy` and its rules.
fn pod_failure_policy(spec: &Value, pfp: &Value, path: &str, c: &mut Vec<Cause>) {
    let rules = pfp.get("rules").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let rules_path = format!("{path}.rules");
    if rules.len() > MAX_POD_FAILURE_POLICY_RULES {
        let max = MAX_POD_FAILURE_POLICY_RULES as u64;
        c.push(Cause::too_many(&rules_path, rules.len() as u64, Some(max)));
    }
    let names: BTreeSet<&str> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec.pointer(&format!("/template/spec/{k}")).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    let actions = strings(&["Count", "FailIndex", "FailJob", "Ignore"]);
    for (i, rule) in rules.iter().enumerate() {
        let rp = format!("{rules_path}[{i}]");
        let action_path = format!("{rp}.action");
        match rule.get("action").and_then(Value::as_str).unwrap_or("") {
            "" => c.push(Cause::required(
                &action_path,
                &format!("valid values: {}", go_list(&actions)),
            )),
            "FailIndex" if !set(spec, "backoffLimitPerIndex") => c.push(Cause::invalid(
                &action_path,
                &json!("FailIndex"),
                "requires the backoffLimitPerIndex to be set",
            )),
            a if !actions.iter().any(|x| x == a) => {
                c.push(Cause::not_supported(&action_path, &json!(a), &actions));
            }
            _ => {}
        }
        let exit = rule.get("onExitCodes").filter(|v| !v.is_null());
        let conds = rule.get("onPodConditions").and_then(Value::as_array).filter(|a| !a.is_empty());
        if let Some(e) = exit {
            on_exit_codes(e, &format!("{rp}.onExitCodes"), &names, c);
        }
        if let Some(p) = conds {
            on_pod_conditions(p, &format!("{rp}.onPodConditions"), c);
        }
        match (exit.is_some(), conds.is_some()) {
            (true, true) => {
                c.push(omitted(
                    &rp,
                    "specifying both OnExitCodes and OnPodConditions is not supported",
                ));
            }
            (false, false) => {
                c.push(omitted(
                    &rp,
                    "specifying one of OnExitCodes and OnPodConditions is required",
                ));
            }
            _ => {}
        }
    }
}

/// Go's `%q` of a sorted string list: `["A" "B"]`.
fn go_list(v: &[String]) -> String {
    let q: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", q.join(" "))
}

/// `validatePodFailurePolicyRuleOnExitCodes`.
fn on_exit_codes(req: &Value, path: &str, names: &BTreeSet<&str>, c: &mut Vec<Cause>) {
    let ops = strings(&["In", "NotIn"]);
    let op = req.get("operator").and_then(Value::as_str).unwrap_or("");
    let op_path = format!("{path}.operator");
    if op.is_empty() {
        c.push(Cause::required(&op_path, &format!("valid values: {}", go_list(&ops))));
    } else if !ops.iter().any(|o| o == op) {
        c.push(Cause::not_supported(&op_path, &json!(op), &ops));
    }
    if let Some(name) = req.get("containerName").and_then(Value::as_str)
        && !names.contains(name)
    {
        c.push(Cause::invalid(
            &format!("{path}.containerName"),
            &json!(name),
            "must be one of the container or initContainer names in the pod template",
        ));
    }
    let values_path = format!("{path}.values");
    let raw = req.get("values").cloned().unwrap_or(json!([]));
    let values: Vec<i64> = raw.as_array().into_iter().flatten().filter_map(Value::as_i64).collect();
    if values.is_empty() {
        c.push(Cause::invalid(&values_path, &raw, "at least one value is required"));
    } else if values.len() > MAX_ON_EXIT_CODES_VALUES {
        let max = MAX_ON_EXIT_CODES_VALUES as u64;
        c.push(Cause::too_many(&values_path, values.len() as u64, Some(max)));
    }
    let mut seen = BTreeSet::new();
    for (j, v) in values.iter().enumerate() {
        let vp = format!("{values_path}[{j}]");
        if op == "In" && *v == 0 {
            c.push(Cause::invalid(&vp, &json!(v), "must not be 0 for the In operator"));
        }
        if !seen.insert(*v) {
            c.push(duplicate(&vp, *v));
        }
    }
    if values.windows(2).any(|w| w[0] > w[1]) {
        c.push(Cause::invalid(&values_path, &raw, "must be ordered"));
    }
}

/// `validatePodFailurePolicyRuleOnPodConditions`.
fn on_pod_conditions(patterns: &[Value], path: &str, c: &mut Vec<Cause>) {
    if patterns.len() > MAX_ON_POD_CONDITIONS_PATTERNS {
        let max = MAX_ON_POD_CONDITIONS_PATTERNS as u64;
        c.push(Cause::too_many(path, patterns.len() as u64, Some(max)));
    }
    let statuses = strings(&["False", "True", "Unknown"]);
    for (j, p) in patterns.iter().enumerate() {
        let pp = format!("{path}[{j}]");
        let t = p.get("type").and_then(Value::as_str).unwrap_or("");
        if let Some(e) = kinetic_machinery::selector::qualified_name_error(t) {
            c.push(Cause::invalid(&format!("{pp}.type"), &json!(t), &e));
        }
        let sp = format!("{pp}.status");
        match p.get("status").and_then(Value::as_str).unwrap_or("") {
            "" => c.push(Cause::required(&sp, &format!("valid values: {}", go_list(&statuses)))),
            s if !statuses.iter().any(|x| x == s) => {
                c.push(Cause::not_supported(&sp, &json!(s), &statuses));
            }
            _ => {}
        }
    }
}

/// `validateSuccessPolicy` and its rules.
fn success_policy(sp: &Value, completions: i64, path: &str, c: &mut Vec<Cause>) {
    let rules = sp.get("rules").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let rules_path = format!("{path}.rules");
    if rules.is_empty() {
        c.push(Cause::required(
            &rules_path,
            "at least one rules must be specified when the successPolicy is specified",
        ));
    }
    if rules.len() > MAX_SUCCESS_POLICY_RULES {
        let max = MAX_SUCCESS_POLICY_RULES as u64;
        c.push(Cause::too_many(&rules_path, rules.len() as u64, Some(max)));
    }
    for (i, rule) in rules.iter().enumerate() {
        let rp = format!("{rules_path}[{i}]");
        let indexes = rule.get("succeededIndexes").and_then(Value::as_str);
        let count = rule.get("succeededCount").and_then(Value::as_i64);
        if indexes.is_none() && count.is_none() {
            c.push(Cause::required(
                &rp,
                "at least one of succeededCount or succeededIndexes must be specified",
            ));
        }
        let mut total = 0;
        if let Some(s) = indexes {
            let ip = format!("{rp}.succeededIndexes");
            if s.len() > MAX_SUCCEEDED_INDEXES_LEN {
                c.push(Cause::too_long(&ip, MAX_SUCCEEDED_INDEXES_LEN as u64));
            }
            match indexes_format(s, completions) {
                Ok(n) => total = n,
                Err(e) => c.push(Cause::invalid(
                    &ip,
                    &json!(s),
                    &format!("error parsing succeededIndexes: {e}"),
                )),
            }
        }
        if let Some(n) = count {
            let cp = format!("{rp}.succeededCount");
            super::nonnegative(rule, "succeededCount", &rp, c);
            if n > completions {
                let msg = format!(
                    "must be less than or equal to {completions} (the number of specified completions)"
                );
                c.push(Cause::invalid(&cp, &json!(n), &msg));
            }
            if indexes.is_some() && n > total {
                let msg = format!(
                    "must be less than or equal to {total} (the number of indexes in the specified succeededIndexes field)"
                );
                c.push(Cause::invalid(&cp, &json!(n), &msg));
            }
        }
    }
}

/// `validateIndexesFormat`: how many indexes `s` names, or why it is not ordered intervals
/// below `completions`.
pub(super) fn indexes_format(s: &str, completions: i64) -> Result<i64, String> {
    if s.is_empty() {
        return Ok(0);
    }
    let mut last: Option<i64> = None;
    let mut total = 0;
    for interval in s.split(',') {
        let parts: Vec<&str> = interval.split('-').collect();
        if parts.len() > 2 {
            return Err(format!(
                "the fragment {interval:?} violates the requirement that an index interval can have at most two parts separated by '-'"
            ));
        }
        let num = |p: &str| {
            p.parse::<i64>()
                .map_err(|_| format!("cannot convert string to integer for index: {p:?}"))
        };
        let x = num(parts[0])?;
        if x >= completions {
            return Err(format!("too large index: {:?}", parts[0]));
        }
        let y = match parts.get(1) {
            Some(p) => {
                let y = num(p)?;
                if y >= completions {
                    return Err(format!("too large index: {p:?}"));
                }
                if x >= y {
                    return Err(format!("non-increasing order, previous: {x}, current: {y}"));
                }
                y
            }
            None => x,
        };
        if let Some(l) = last
            && l >= x
        {
            return Err(format!("non-increasing order, previous: {l}, current: {x}"));
        }
        total += y - x + 1;
        last = Some(y);
    }
    Ok(total)
}
