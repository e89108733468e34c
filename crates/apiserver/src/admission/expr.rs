//! CEL for admission: webhooks' `matchConditions` and ValidatingAdmissionPolicy expressions,
//! compiled in the same environment as CRD validation rules ([`crate::cel`]) and bounded by
//! upstream's per-call cost limit.

use cel::{Context, Program};
use serde_json::Value;

/// Compiles one expression.
///
/// # Errors
/// The expression does not parse (the message is the compiler's).
pub fn compile(src: &str) -> Result<Program, String> {
    if src.len() > crate::cel::MAX_RULE_LEN {
        return Err(format!("must have at most {} bytes", crate::cel::MAX_RULE_LEN));
    }
    crate::cel::env().compile(src).map_err(|e| e.to_string())
}

/// Evaluates `program` with `vars` bound (JSON `null` binds CEL `null`).
///
/// # Errors
/// A variable cannot be converted, the cost passes upstream's per-call limit, or evaluation
/// fails (a missing field, a type error).
pub fn eval(program: &Program, vars: &[(&str, &Value)]) -> Result<cel::Value, String> {
    eval_with(program, vars, None)
}

/// [`eval`] with the `authorizer` variable bound when `authz` is given ([`super::authz`]).
///
/// # Errors
/// As [`eval`].
pub fn eval_with(
    program: &Program,
    vars: &[(&str, &Value)],
    authz: Option<&super::authz::Authz>,
) -> Result<cel::Value, String> {
    let mut ctx = Context::with_env(crate::cel::env());
    for (name, v) in vars {
        let value = cel::to_value(v).map_err(|e| format!("converting {name} to CEL: {e}"))?;
        ctx.add_variable_from_value(*name, value);
    }
    if let Some(a) = authz {
        a.bind(&mut ctx)?;
    }
    if crate::cel::runtime_cost(program.expression(), &ctx, crate::cel::PER_CALL_LIMIT).is_none() {
        return Err("operation cancelled: actual cost limit exceeded".to_owned());
    }
    program.execute(&ctx).map_err(|e| e.to_string())
}

/// Evaluates a boolean expression.
///
/// # Errors
/// As [`eval`], or the result is not a bool.
pub fn eval_bool(program: &Program, vars: &[(&str, &Value)]) -> Result<bool, String> {
    eval_bool_with(program, vars, None)
}

/// [`eval_bool`] with the `authorizer` variable.
///
/// # Errors
/// As [`eval_bool`].
pub fn eval_bool_with(
    program: &Program,
    vars: &[(&str, &Value)],
    authz: Option<&super::authz::Authz>,
) -> Result<bool, String> {
    match eval_with(program, vars, authz)? {
        cel::Value::Bool(b) => Ok(b),
        other => Err(format!("expression must evaluate to bool, got {}", other.type_of())),
    }
}

/// A webhook's `matchConditions` on the request (`object`, `oldObject`, `request`): `Ok(false)`
/// when one is false (the webhook is skipped, whatever errors others had, as upstream's
/// matcher), `Err` when none is false and one failed.
///
/// # Errors
/// A condition does not compile or evaluate.
pub fn match_conditions(
    conds: &[Value],
    obj: &Value,
    old: &Value,
    request: &Value,
    authz: Option<&super::authz::Authz>,
) -> Result<bool, String> {
    let mut first_err = None;
    for c in conds {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        let src = c.get("expression").and_then(Value::as_str).unwrap_or("");
        let r = compile(src).and_then(|p| {
            eval_bool_with(&p, &[("object", obj), ("oldObject", old), ("request", request)], authz)
        });
        match r {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) => {
                first_err.get_or_insert(format!("expression '{name}' resulted in error: {e}"));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(true),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn match_conditions_skip_on_false_and_fail_on_errors() {
        let obj = json!({"metadata": {"name": "web", "labels": {"a": "b"}}});
        let req = json!({"operation": "CREATE", "userInfo": {"username": "alice"}});
        let cond = |e: &str| json!({"name": "c", "expression": e});
        let run = |cs: &[Value]| match_conditions(cs, &obj, &Value::Null, &req, None);
        assert_eq!(run(&[cond("object.metadata.name == 'web'")]), Ok(true));
        assert_eq!(run(&[cond("request.userInfo.username == 'bob'")]), Ok(false));
        assert_eq!(
            run(&[cond("oldObject == null"), cond("'a' in object.metadata.labels")]),
            Ok(true)
        );
        assert!(run(&[cond("object.spec.x == 1")]).is_err(), "no such key");
        assert_eq!(run(&[cond("object.spec.x == 1"), cond("false")]), Ok(false));
        assert!(run(&[cond("1")]).unwrap_err().contains("must evaluate to bool"));
    }
}
