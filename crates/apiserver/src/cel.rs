//! CRD validation rules: the `x-kubernetes-validations` CEL rules of a CRD version's schema
//! (apiextensions' `pkg/apiserver/schema/cel`), enforced on create, update and status writes of
//! the custom resources it serves.
//!
//! A version's rules are compiled once, when the CRD is served ([`Rules::compile`], called from
//! [`crate::crd::resources`]), into a tree that mirrors the schema nodes that carry rules;
//! [`Validated`] wraps the kind's strategy and evaluates them after its validation. The CEL
//! implementation is the `cel` crate (cel-rust), with its `strings` and `lists` extensions.
//!
//! What follows upstream: rules at any node (object, property, `additionalProperties`, array
//! items), `self`, `oldSelf` (a transition rule is only evaluated on update, where an old value
//! exists at the same path: object properties and map values are correlated by name, the items
//! of `x-kubernetes-list-type: map` lists by their keys, other array items not at all), validation
//! ratcheting (an unchanged value passes its rules without `oldSelf` on update), `message`,
//! `messageExpression`
//! (a non-string, empty or failing result falls back to `message`, then to `failed rule:
//! <rule>`), `reason` (`FieldValueInvalid` by default, `FieldValueForbidden`,
//! `FieldValueRequired`, `FieldValueDuplicate`) and `fieldPath` (appended to the node's path).
//! A rule or message expression that does not parse refuses the CRD, with the cause on its
//! field as upstream's.
//!
//! Cost: upstream interrupts a rule whose runtime cost passes `PerCallLimit` (1,000,000) and
//! stops an object's rules once together they pass `RuntimeCELCostBudget` (10,000,000).
//! cel-rust counts no cost and cannot interrupt an evaluation, so each rule's cost is
//! computed *before* it runs, on the object itself ([`runtime_cost`]): one unit per node
//! evaluated, and a comprehension (`all`, `exists`, `map`, `filter`, ...) costs its body once
//! per item of the list or map it actually ranges over (without short-circuiting, so an upper
//! bound of what upstream would count). A rule over the limit is not run: the object is refused
//! with upstream's "call cost exceeds limit" cause and no further rule runs; past the budget,
//! upstream's "running out of cost budget" cause. So `self.all(x, self.all(y, x != y))` is
//! refused on a list of thousands instead of running for seconds. Computing the cost itself
//! stays within the limit: it walks the items of a comprehension only when a nested
//! comprehension ranges over the item, and stops as soon as the limit is passed.
//!
//! What differs: cel-rust only parses, it has no type checker, so a rule naming a field the
//! schema does not have is refused by upstream when the CRD is written but fails here only when
//! it is evaluated (as an evaluation error on the object). Upstream also *estimates* each rule's
//! cost when the CRD is written, from the schema's `maxLength`/`maxItems`; without types we
//! bound rules by size there instead: a rule or message expression longer than
//! [`MAX_RULE_LEN`] bytes, or nesting more than [`MAX_COMPREHENSION_DEPTH`] comprehensions, is
//! refused when the CRD is written. String functions are charged as one unit, not by length as
//! upstream does. An object whose rules together take longer than [`EVAL_BUDGET`] of wall time
//! is refused as out of budget too (a backstop, checked between rules).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cel::common::ast::{EntryExpr, Expr};
use cel::{Context, Env, IdedExpr, Program};
use serde_json::Value;

use crate::error::Cause;
use crate::registry::Registry;
use crate::strategy::{Admission, Cleanup, Strategy};

/// The longest rule (or message expression) we compile, in bytes.
pub const MAX_RULE_LEN: usize = 4096;
/// How deeply comprehension macros may nest in one rule.
pub const MAX_COMPREHENSION_DEPTH: usize = 2;
/// How long the rules of one object may take to evaluate, all together.
pub const EVAL_BUDGET: Duration = Duration::from_millis(500);
/// Upstream's runtime cost limit of one rule (`celconfig.PerCallLimit`).
pub const PER_CALL_LIMIT: u64 = 1_000_000;
/// Upstream's runtime cost budget of all the rules of one object
/// (`celconfig.RuntimeCELCostBudget`).
pub const RUNTIME_COST_BUDGET: u64 = 10_000_000;

const REASONS: [&str; 4] =
    ["FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"];
const MACROS: [&str; 6] = ["all(", "exists(", "exists_one(", "map(", "filter(", "existsOne("];

pub(crate) fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        // Kubernetes' CEL environment has the strings and lists libraries.
        for ext in [cel::extensions::strings, cel::extensions::lists] {
            if let Err(e) = env.add_extension(ext) {
                tracing::error!(error = ?e, "CEL extension not loaded");
            }
        }
        Arc::new(env)
    })
    .clone()
}

/// One compiled `x-kubernetes-validations` entry.
#[derive(Debug)]
struct Rule {
    source: String,
    program: Program,
    message: Option<String>,
    message_expression: Option<Program>,
    reason: String,
    field_path: Option<String>,
    /// References `oldSelf`: evaluated only on update with an old value.
    transition: bool,
}

/// The rules of one schema node and of the nodes below it that have any.
#[derive(Debug, Default)]
struct Node {
    /// The schema's `type` (what upstream prints as the invalid value: `"object"`).
    ty: String,
    rules: Vec<Rule>,
    properties: Vec<(String, Node)>,
    additional: Option<Box<Node>>,
    items: Option<Box<Node>>,
    /// `x-kubernetes-list-map-keys` of a `x-kubernetes-list-type: map` array: how its items are
    /// correlated with the old list's.
    map_keys: Option<Vec<String>>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.rules.is_empty()
            && self.properties.is_empty()
            && self.additional.is_none()
            && self.items.is_none()
    }
}

/// The compiled rules of one CRD version's schema.
#[derive(Debug)]
pub struct Rules {
    root: Node,
}

fn compile_one(source: &str, field: &str, causes: &mut Vec<Cause>) -> Option<Program> {
    if source.len() > MAX_RULE_LEN {
        causes.push(Cause::too_long(field, MAX_RULE_LEN as u64));
        return None;
    }
    if comprehension_depth(source) > MAX_COMPREHENSION_DEPTH {
        causes.push(crate::error::invalid(
            field,
            source,
            &format!(
                "estimated rule cost exceeds budget: more than {MAX_COMPREHENSION_DEPTH} nested \
                 comprehensions"
            ),
        ));
        return None;
    }
    match env().compile(source) {
        Ok(p) => Some(p),
        Err(e) => {
            causes.push(crate::error::invalid(field, source, &format!("compilation failed: {e}")));
            None
        }
    }
}

/// How deeply comprehension macros nest, from the source: the depth of parentheses at which
/// each macro call opens (strings are skipped).
fn comprehension_depth(source: &str) -> usize {
    let mut stack: Vec<bool> = Vec::new();
    let mut max = 0;
    let mut quote: Option<char> = None;
    let mut prev = '\0';
    for (i, c) in source.char_indices() {
        if let Some(q) = quote {
            if c == q && prev != '\\' {
                quote = None;
            }
        } else if c == '"' || c == '\'' {
            quote = Some(c);
        } else if c == '(' {
            let head = &source[..=i];
            let is_macro = MACROS
                .iter()
                .any(|m| head.ends_with(m) && head[..head.len() - m.len()].ends_with(['.', ' ']));
            stack.push(is_macro);
            max = max.max(stack.iter().filter(|m| **m).count());
        } else if c == ')' {
            stack.pop();
        }
        prev = c;
    }
    max
}

impl Rules {
    /// Compiles the rules of a version's `openAPIV3Schema`; `None` if it has none. `base` is the
    /// schema's field path in the CRD, for the causes.
    ///
    /// # Errors
    /// The causes of rules that do not compile, or that are refused by the cost bounds.
    pub fn compile(schema: &Value, base: &str) -> Result<Option<Arc<Rules>>, Vec<Cause>> {
        let mut causes = Vec::new();
        let root = compile_node(schema, base, &mut causes);
        if !causes.is_empty() {
            return Err(causes);
        }
        Ok((!root.is_empty()).then(|| Arc::new(Rules { root })))
    }

    /// Evaluates the rules against `obj` (and `old` on update): upstream's causes, one per
    /// failed rule.
    pub fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut causes = Vec::new();
        let mut budget = Budget {
            remaining: RUNTIME_COST_BUDGET,
            deadline: Instant::now() + EVAL_BUDGET,
            stopped: false,
        };
        walk(&self.root, obj, old, "", &mut causes, &mut budget);
        causes
    }
}

fn compile_node(schema: &Value, path: &str, causes: &mut Vec<Cause>) -> Node {
    let mut node = Node {
        ty: schema.get("type").and_then(Value::as_str).unwrap_or("").to_owned(),
        ..Node::default()
    };
    let vpath = format!("{path}.x-kubernetes-validations");
    for (i, r) in schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("{vpath}[{i}]");
        let source = r.get("rule").and_then(Value::as_str).unwrap_or("");
        if source.trim().is_empty() {
            causes.push(Cause::required(&format!("{at}.rule"), ""));
            continue;
        }
        let program = compile_one(source, &format!("{at}.rule"), causes);
        let message_expression = r
            .get("messageExpression")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .and_then(|s| compile_one(s, &format!("{at}.messageExpression"), causes));
        let reason = match r.get("reason").and_then(Value::as_str) {
            None => "FieldValueInvalid".to_owned(),
            Some(x) if REASONS.contains(&x) => x.to_owned(),
            Some(x) => {
                let supported: Vec<String> = REASONS.iter().map(|s| (*s).to_owned()).collect();
                causes.push(Cause::not_supported(
                    &format!("{at}.reason"),
                    &Value::String(x.to_owned()),
                    &supported,
                ));
                continue;
            }
        };
        let field_path = r.get("fieldPath").and_then(Value::as_str).map(str::to_owned);
        if let Some(fp) = &field_path
            && !valid_field_path(fp)
        {
            causes.push(crate::error::invalid(
                &format!("{at}.fieldPath"),
                fp,
                "fieldPath must be a valid path",
            ));
            continue;
        }
        if let Some(program) = program {
            let transition = program.references().has_variable("oldSelf");
            node.rules.push(Rule {
                source: source.to_owned(),
                program,
                message: r.get("message").and_then(Value::as_str).map(str::to_owned),
                message_expression,
                reason,
                field_path,
                transition,
            });
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            let child = compile_node(sub, &format!("{path}.properties[{name}]"), causes);
            if !child.is_empty() {
                node.properties.push((name.clone(), child));
            }
        }
    }
    if let Some(sub) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        let child = compile_node(sub, &format!("{path}.additionalProperties"), causes);
        if !child.is_empty() {
            node.additional = Some(Box::new(child));
        }
    }
    if let Some(sub) = schema.get("items").filter(|v| v.is_object()) {
        let child = compile_node(sub, &format!("{path}.items"), causes);
        if !child.is_empty() {
            node.items = Some(Box::new(child));
        }
    }
    if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
        node.map_keys = schema
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|keys| keys.iter().filter_map(Value::as_str).map(str::to_owned).collect());
    }
    node
}

/// A `fieldPath` as upstream accepts it: `.a.b`, `.a['b.c']`, `.a[0]` segments.
fn valid_field_path(fp: &str) -> bool {
    fp.starts_with('.') || fp.starts_with('[')
}

/// Appends a rule's `fieldPath` (`.spec.replicas`, `['a.b']`) to the node's path.
fn join_path(base: &str, fp: &str) -> String {
    let rel = fp.trim_start_matches('.');
    if base.is_empty() {
        rel.to_owned()
    } else if rel.starts_with('[') {
        format!("{base}{rel}")
    } else {
        format!("{base}.{rel}")
    }
}

fn child_path(base: &str, name: &str) -> String {
    if base.is_empty() { name.to_owned() } else { format!("{base}.{name}") }
}

/// What is left of one object's evaluation budget.
struct Budget {
    /// Cost units (upstream's `RuntimeCELCostBudget` less what the rules so far cost).
    remaining: u64,
    /// The wall-time backstop.
    deadline: Instant,
    /// A limit was hit: as upstream, no further rule runs.
    stopped: bool,
}

fn walk(
    node: &Node,
    v: &Value,
    old: Option<&Value>,
    path: &str,
    causes: &mut Vec<Cause>,
    budget: &mut Budget,
) {
    if v.is_null() || budget.stopped {
        return;
    }
    if !node.rules.is_empty() {
        eval_rules(node, v, old, path, causes, budget);
    }
    if let Some(m) = v.as_object() {
        for (name, child) in &node.properties {
            if let Some(cv) = m.get(name) {
                let co = old.and_then(|o| o.get(name));
                walk(child, cv, co, &child_path(path, name), causes, budget);
            }
        }
        if let Some(child) = &node.additional {
            for (k, cv) in m {
                let co = old.and_then(|o| o.get(k));
                walk(child, cv, co, &child_path(path, k), causes, budget);
            }
        }
    }
    if let (Some(items), Some(a)) = (&node.items, v.as_array()) {
        // As upstream, only the items of a `x-kubernetes-list-type: map` list are correlated
        // with the old list's (by their keys); other items have no old value, so their
        // transition rules do not run and they are not ratcheted.
        let old_items = old.and_then(Value::as_array);
        for (i, cv) in a.iter().enumerate() {
            let co = match (&node.map_keys, old_items) {
                (Some(keys), Some(olds)) => olds
                    .iter()
                    .find(|o| keys.iter().all(|k| o.get(k).is_some() && o.get(k) == cv.get(k))),
                _ => None,
            };
            walk(items, cv, co, &format!("{path}[{i}]"), causes, budget);
        }
    }
}

fn eval_rules(
    node: &Node,
    v: &Value,
    old: Option<&Value>,
    path: &str,
    causes: &mut Vec<Cause>,
    budget: &mut Budget,
) {
    // Upstream's path of the root is a nil `field.Path`, printed `<nil>`.
    let shown = if path.is_empty() { "<nil>" } else { path };
    let ty = Value::String(node.ty.clone());
    let this = match cel::to_value(v) {
        Ok(x) => x,
        Err(e) => {
            causes.push(Cause::invalid(shown, &ty, &format!("converting to CEL: {e}")));
            return;
        }
    };
    let old_cel = old.filter(|o| !o.is_null()).and_then(|o| cel::to_value(o).ok());
    let mut ctx = Context::with_env(env());
    ctx.add_variable_from_value("self", this);
    if let Some(o) = &old_cel {
        ctx.add_variable_from_value("oldSelf", o.clone());
    }
    // Validation ratcheting (upstream's CRDValidationRatcheting, GA in 1.33): on update, a value
    // equal to its correlated old value passes the rules without `oldSelf`, so an object stored
    // before a rule was added can still be written (its status, say) without fixing it first.
    let unchanged = old == Some(v);
    for rule in &node.rules {
        if (rule.transition && old_cel.is_none()) || (!rule.transition && unchanged) {
            continue;
        }
        if budget.stopped {
            return;
        }
        let out_of_budget = |causes: &mut Vec<Cause>, budget: &mut Budget| {
            // Upstream's wording when an object's runtime cost budget is spent.
            causes.push(Cause::invalid(
                shown,
                &ty,
                "validation failed due to running out of cost budget, no further validation rules \
                 will be run",
            ));
            budget.stopped = true;
        };
        if Instant::now() > budget.deadline {
            out_of_budget(causes, budget);
            return;
        }
        let field = match &rule.field_path {
            Some(fp) => join_path(path, fp),
            None => shown.to_owned(),
        };
        // The rule's cost on this object, before running it (cel-rust cannot interrupt it).
        match runtime_cost(rule.program.expression(), &ctx, PER_CALL_LIMIT) {
            None => {
                causes.push(Cause::invalid(
                    &field,
                    &ty,
                    &format!(
                        "'operation cancelled: actual cost limit exceeded': no further \
                         validation rules will be run due to call cost exceeds limit for rule: \
                         {}",
                        rule_error_string(rule)
                    ),
                ));
                budget.stopped = true;
                return;
            }
            Some(cost) if cost > budget.remaining => {
                out_of_budget(causes, budget);
                return;
            }
            Some(cost) => budget.remaining -= cost,
        }
        match rule.program.execute(&ctx) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => {
                let detail = message(rule, &ctx);
                causes.push(match rule.reason.as_str() {
                    "FieldValueForbidden" => Cause::forbidden(&field, &detail),
                    "FieldValueRequired" => Cause::required(&field, &detail),
                    "FieldValueDuplicate" => Cause {
                        reason: "FieldValueDuplicate".into(),
                        message: format!("Duplicate value: {}", go_quote(&node.ty)),
                        field,
                    },
                    _ => Cause::invalid(&field, &ty, &detail),
                });
            }
            Ok(other) => causes.push(Cause::invalid(
                &field,
                &ty,
                &format!(
                    "rule did not evaluate to a bool: {other:?} evaluating rule: {}",
                    rule.source
                ),
            )),
            Err(e) => causes.push(Cause::invalid(
                &field,
                &ty,
                &format!("{e} evaluating rule: {}", rule.source),
            )),
        }
    }
}

/// Upstream's `ruleErrorString`: the rule's message, else its source.
fn rule_error_string(rule: &Rule) -> &str {
    match &rule.message {
        Some(m) if !m.trim().is_empty() => m.trim(),
        _ => rule.source.trim(),
    }
}

/// The runtime cost of evaluating `e` in `ctx`, as upstream's CEL runtime counts it (one unit
/// per node evaluated; a comprehension's loop condition and step once per item of the list or
/// map it ranges over), or `None` once it passes `limit`. Short-circuits are not taken, so this
/// bounds the cost from above. The ranges are evaluated (on the object) to learn their sizes,
/// each only after its own cost was found within the limit.
pub fn runtime_cost(e: &IdedExpr, ctx: &Context<'_, '_>, limit: u64) -> Option<u64> {
    let mut spent = 0u64;
    charge(e, ctx, &mut spent, limit).then_some(spent)
}

fn charge(e: &IdedExpr, ctx: &Context<'_, '_>, spent: &mut u64, limit: u64) -> bool {
    *spent += 1;
    if *spent > limit {
        return false;
    }
    match &e.expr {
        Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => true,
        Expr::Select(s) => charge(&s.operand, ctx, spent, limit),
        Expr::Call(c) => {
            c.target.as_deref().is_none_or(|t| charge(t, ctx, spent, limit))
                && c.args.iter().all(|a| charge(a, ctx, spent, limit))
        }
        Expr::List(l) => l.elements.iter().all(|x| charge(x, ctx, spent, limit)),
        Expr::Map(m) => entries_cost(&m.entries, ctx, spent, limit),
        Expr::Struct(s) => entries_cost(&s.entries, ctx, spent, limit),
        Expr::Comprehension(c) => {
            if !charge(&c.iter_range, ctx, spent, limit) || !charge(&c.accu_init, ctx, spent, limit)
            {
                return false;
            }
            // The items the loop binds: a range that does not evaluate here (it names the
            // accumulator, say) counts as empty; evaluating the rule reports its error.
            let items: Vec<(cel::Value, Option<cel::Value>)> = match ctx.resolve(&c.iter_range) {
                Ok(cel::Value::List(l)) => l
                    .iter()
                    .enumerate()
                    .map(|(i, x)| match c.iter_var2 {
                        Some(_) => {
                            (cel::Value::Int(i64::try_from(i).unwrap_or(i64::MAX)), Some(x.clone()))
                        }
                        None => (x.clone(), None),
                    })
                    .collect(),
                Ok(cel::Value::Map(m)) => m
                    .map
                    .iter()
                    .map(|(k, v)| (cel::Value::from(k), c.iter_var2.as_ref().map(|_| v.clone())))
                    .collect(),
                _ => Vec::new(),
            };
            let step = |item: &(cel::Value, Option<cel::Value>), spent: &mut u64| {
                let mut inner = ctx.new_inner_scope();
                inner.add_variable_from_value(c.iter_var.as_str(), item.0.clone());
                if let (Some(v2), Some(x)) = (&c.iter_var2, &item.1) {
                    inner.add_variable_from_value(v2.as_str(), x.clone());
                }
                charge(&c.loop_cond, &inner, spent, limit)
                    && charge(&c.loop_step, &inner, spent, limit)
            };
            let per_item = [&c.loop_cond, &c.loop_step].into_iter().any(|x| {
                ranges_over(x, &c.iter_var)
                    || c.iter_var2.as_ref().is_some_and(|v| ranges_over(x, v))
            });
            if per_item {
                // A nested loop over the item: its cost depends on the item.
                if !items.iter().all(|item| step(item, spent)) {
                    return false;
                }
            } else if let Some(first) = items.first() {
                let before = *spent;
                if !step(first, spent) {
                    return false;
                }
                let each = *spent - before;
                *spent = spent.saturating_add(each.saturating_mul(items.len() as u64 - 1));
                if *spent > limit {
                    return false;
                }
            }
            charge(&c.result, ctx, spent, limit)
        }
    }
}

fn entries_cost(
    entries: &[cel::common::ast::IdedEntryExpr],
    ctx: &Context<'_, '_>,
    spent: &mut u64,
    limit: u64,
) -> bool {
    entries.iter().all(|en| match &en.expr {
        EntryExpr::StructField(f) => charge(&f.value, ctx, spent, limit),
        EntryExpr::MapEntry(m) => {
            charge(&m.key, ctx, spent, limit) && charge(&m.value, ctx, spent, limit)
        }
    })
}

/// Whether a comprehension inside `e` ranges over an expression naming `var`.
fn ranges_over(e: &IdedExpr, var: &str) -> bool {
    match &e.expr {
        Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => false,
        Expr::Select(s) => ranges_over(&s.operand, var),
        Expr::Call(c) => {
            c.target.as_deref().is_some_and(|t| ranges_over(t, var))
                || c.args.iter().any(|a| ranges_over(a, var))
        }
        Expr::List(l) => l.elements.iter().any(|x| ranges_over(x, var)),
        Expr::Map(m) => entries_range_over(&m.entries, var),
        Expr::Struct(s) => entries_range_over(&s.entries, var),
        Expr::Comprehension(c) => {
            names(&c.iter_range, var)
                || [&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result]
                    .into_iter()
                    .any(|x| ranges_over(x, var))
        }
    }
}

fn entries_range_over(entries: &[cel::common::ast::IdedEntryExpr], var: &str) -> bool {
    entries.iter().any(|en| match &en.expr {
        EntryExpr::StructField(f) => ranges_over(&f.value, var),
        EntryExpr::MapEntry(m) => ranges_over(&m.key, var) || ranges_over(&m.value, var),
    })
}

/// Whether `e` names the variable `var` anywhere.
fn names(e: &IdedExpr, var: &str) -> bool {
    match &e.expr {
        Expr::Ident(n) => n == var,
        Expr::Unspecified | Expr::Literal(_) => false,
        Expr::Select(s) => names(&s.operand, var),
        Expr::Call(c) => {
            c.target.as_deref().is_some_and(|t| names(t, var))
                || c.args.iter().any(|a| names(a, var))
        }
        Expr::List(l) => l.elements.iter().any(|x| names(x, var)),
        Expr::Map(m) => m.entries.iter().any(|en| entry_names(en, var)),
        Expr::Struct(s) => s.entries.iter().any(|en| entry_names(en, var)),
        Expr::Comprehension(c) => {
            [&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result]
                .into_iter()
                .any(|x| names(x, var))
        }
    }
}

fn entry_names(en: &cel::common::ast::IdedEntryExpr, var: &str) -> bool {
    match &en.expr {
        EntryExpr::StructField(f) => names(&f.value, var),
        EntryExpr::MapEntry(m) => names(&m.key, var) || names(&m.value, var),
    }
}

/// Upstream's message of a failed rule: `messageExpression`'s string if it gives a non-empty
/// one (within the cost limit), else `message`, else `failed rule: <rule>`.
fn message(rule: &Rule, ctx: &Context<'_, '_>) -> String {
    if let Some(p) = &rule.message_expression
        && runtime_cost(p.expression(), ctx, PER_CALL_LIMIT).is_some()
        && let Ok(cel::Value::String(s)) = p.execute(ctx)
        && !s.trim().is_empty()
    {
        return s.to_string();
    }
    match &rule.message {
        Some(m) if !m.is_empty() => m.clone(),
        _ => format!("failed rule: {}", rule.source),
    }
}

fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// A CRD-served kind's strategy with its version's validation rules, evaluated after the
/// kind's own validation; everything else is the wrapped strategy's.
#[derive(Debug)]
pub struct Validated {
    pub inner: Arc<dyn Strategy>,
    pub rules: Arc<Rules>,
}

impl Strategy for Validated {
    fn tracks_generation(&self) -> bool {
        self.inner.tracks_generation()
    }
    fn validate_name(&self, name: &str, causes: &mut Vec<Cause>) {
        self.inner.validate_name(name, causes);
    }
    fn default(&self, obj: &mut Value) {
        self.inner.default(obj);
    }
    fn prepare_create(&self, adm: &Admission<'_>, obj: &mut Value) {
        self.inner.prepare_create(adm, obj);
    }
    fn prepare_update(&self, new: &mut Value, old: &Value) {
        self.inner.prepare_update(new, old);
    }
    fn status_keeps_metadata(&self) -> &'static [&'static str] {
        self.inner.status_keeps_metadata()
    }
    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut causes = self.inner.validate(obj, old);
        causes.extend(self.rules.validate(obj, old));
        causes
    }
    fn admit(&self, adm: &Admission<'_>, obj: &mut Value, old: Option<&Value>) -> Vec<Cause> {
        self.inner.admit(adm, obj, old)
    }
    fn authorize_write(
        &self,
        adm: &Admission<'_>,
        obj: &Value,
        old: Option<&Value>,
    ) -> Result<(), String> {
        self.inner.authorize_write(adm, obj, old)
    }
    fn validate_admission(
        &self,
        adm: &Admission<'_>,
        obj: &Value,
        old: Option<&Value>,
    ) -> Result<(), String> {
        self.inner.validate_admission(adm, obj, old)
    }
    fn quota(&self) -> crate::quota::Evaluator {
        self.inner.quota()
    }
    fn subresources(&self) -> &'static [&'static str] {
        self.inner.subresources()
    }
    fn deletes_collections(&self) -> bool {
        self.inner.deletes_collections()
    }
    fn forbids_delete(&self, name: &str) -> Option<String> {
        self.inner.forbids_delete(name)
    }
    fn grace_period(&self, obj: &Value, requested: Option<i64>) -> i64 {
        self.inner.grace_period(obj, requested)
    }
    fn begin_deletion(&self, obj: &mut Value) {
        self.inner.begin_deletion(obj);
    }
    fn holds_deletion(&self, obj: &Value) -> bool {
        self.inner.holds_deletion(obj)
    }
    fn awaits_termination(&self, obj: &Value) -> bool {
        self.inner.awaits_termination(obj)
    }
    fn cleanup(&self) -> Cleanup {
        self.inner.cleanup()
    }
    fn after_commit(&self, registry: &Registry, obj: &crate::store::Stored) {
        self.inner.after_commit(registry, obj);
    }
    fn after_delete(&self, registry: &Registry, obj: &crate::store::Stored) {
        self.inner.after_delete(registry, obj);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object",
                "x-kubernetes-validations": [
                    {"rule": "self.minReplicas <= self.replicas",
                     "message": "replicas must be at least minReplicas"},
                    {"rule": "self.replicas <= 10", "reason": "FieldValueForbidden",
                     "fieldPath": ".replicas",
                     "messageExpression": "'replicas ' + string(self.replicas) + ' is over 10'"}],
                "properties": {
                    "replicas": {"type": "integer"}, "minReplicas": {"type": "integer"},
                    "mode": {"type": "string", "x-kubernetes-validations": [
                        {"rule": "self == oldSelf", "message": "mode is immutable"}]},
                    "tags": {"type": "array", "items": {"type": "string",
                        "x-kubernetes-validations": [{"rule": "self.startsWith('t-')"}]}}}}}})
    }

    fn causes(obj: Value, old: Option<Value>) -> Vec<(String, String, String)> {
        let rules = Rules::compile(&schema(), "s").unwrap().unwrap();
        rules
            .validate(&obj, old.as_ref())
            .into_iter()
            .map(|c| (c.reason, c.field, c.message))
            .collect()
    }

    #[test]
    fn rules_refuse_with_their_message_reason_and_field_path() {
        let ok = json!({"spec": {"replicas": 3, "minReplicas": 1, "tags": ["t-a"]}});
        assert_eq!(causes(ok, None), vec![]);
        let bad = json!({"spec": {"replicas": 11, "minReplicas": 12, "tags": ["t-a", "b"]}});
        expect_test::expect![[r#"
            [
                (
                    "FieldValueInvalid",
                    "spec",
                    "Invalid value: \"object\": replicas must be at least minReplicas",
                ),
                (
                    "FieldValueForbidden",
                    "spec.replicas",
                    "Forbidden: replicas 11 is over 10",
                ),
                (
                    "FieldValueInvalid",
                    "spec.tags[1]",
                    "Invalid value: \"string\": failed rule: self.startsWith('t-')",
                ),
            ]
        "#]]
        .assert_debug_eq(&causes(bad, None));
    }

    #[test]
    fn transition_rules_run_only_on_update_with_an_old_value() {
        let new = json!({"spec": {"replicas": 1, "minReplicas": 1, "mode": "b"}});
        assert_eq!(causes(new.clone(), None), vec![]);
        let same = json!({"spec": {"replicas": 2, "minReplicas": 1, "mode": "b"}});
        assert_eq!(causes(new.clone(), Some(same)), vec![]);
        let unset = json!({"spec": {"replicas": 1, "minReplicas": 1}});
        assert_eq!(causes(new.clone(), Some(unset)), vec![]);
        let old = json!({"spec": {"replicas": 1, "minReplicas": 1, "mode": "a"}});
        assert_eq!(
            causes(new, Some(old)),
            vec![(
                "FieldValueInvalid".to_owned(),
                "spec.mode".to_owned(),
                "Invalid value: \"string\": mode is immutable".to_owned()
            )]
        );
    }

    #[test]
    fn unchanged_values_are_ratcheted_on_update() {
        // Stored before the rule existed: an update that leaves spec alone passes.
        let invalid = json!({"spec": {"replicas": 1, "minReplicas": 2}});
        let mut updated = invalid.clone();
        updated["status"] = json!({"ready": 1});
        assert_eq!(causes(updated, Some(invalid.clone())), vec![]);
        let mut changed = invalid.clone();
        changed["spec"]["replicas"] = json!(0);
        assert_eq!(causes(changed, Some(invalid)).len(), 1);
    }

    #[test]
    fn items_of_map_lists_are_correlated_by_key_for_transition_rules() {
        let s = json!({"type": "object", "properties": {"ports": {"type": "array",
            "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
            "items": {"type": "object", "x-kubernetes-validations": [
                {"rule": "self.port == oldSelf.port", "message": "port is immutable"}]}}}});
        let rules = Rules::compile(&s, "s").unwrap().unwrap();
        let old = json!({"ports": [{"name": "a", "port": 1}, {"name": "b", "port": 2}]});
        let new = json!({"ports": [{"name": "b", "port": 2}, {"name": "c", "port": 9},
                                   {"name": "a", "port": 3}]});
        let fields: Vec<String> =
            rules.validate(&new, Some(&old)).into_iter().map(|c| c.field).collect();
        assert_eq!(fields, vec!["ports[2]"]);
    }

    #[test]
    fn a_missing_field_is_an_evaluation_error_of_the_rule() {
        let c = causes(json!({"spec": {"replicas": 1}}), None);
        assert_eq!(c.len(), 1, "{c:?}");
        assert!(c[0].2.contains("evaluating rule: self.minReplicas <= self.replicas"), "{c:?}");
    }

    #[test]
    fn rules_that_do_not_compile_or_cost_too_much_are_refused_with_their_field() {
        let s = json!({"type": "object", "x-kubernetes-validations": [
            {"rule": "self.replicas >"},
            {"rule": "true", "messageExpression": "'a' +"},
            {"rule": "self.a.all(x, self.b.all(y, self.c.all(z, x == y && y == z)))"},
            {"rule": "true", "reason": "Nope"}]});
        let fields: Vec<String> =
            Rules::compile(&s, "r").unwrap_err().into_iter().map(|c| c.field).collect();
        assert_eq!(
            fields,
            vec![
                "r.x-kubernetes-validations[0].rule",
                "r.x-kubernetes-validations[1].messageExpression",
                "r.x-kubernetes-validations[2].rule",
                "r.x-kubernetes-validations[3].reason",
            ]
        );
        assert!(Rules::compile(&json!({"type": "object"}), "r").unwrap().is_none());
    }

    fn cost(rule: &str, this: Value) -> Option<u64> {
        let program = env().compile(rule).unwrap();
        let mut ctx = Context::with_env(env());
        ctx.add_variable_from_value("self", cel::to_value(&this).unwrap());
        runtime_cost(program.expression(), &ctx, PER_CALL_LIMIT)
    }

    #[test]
    fn the_cost_of_a_rule_grows_with_the_items_its_comprehensions_range_over() {
        let list = |n: usize| json!((0..n).collect::<Vec<_>>());
        assert_eq!(cost("self.size() > 0", list(3)), Some(4), "one per node");
        let one = cost("self.all(x, x >= 0)", list(10)).unwrap();
        let two = cost("self.all(x, x >= 0)", list(20)).unwrap();
        assert_eq!(two - one, one - cost("self.all(x, x >= 0)", list(0)).unwrap(), "linear");
        let nested = "self.all(x, self.all(y, x != y || x == y))";
        let small = cost(nested, list(10)).unwrap();
        assert!(small > 10 * 10 && small < 10_000, "{small}");
        assert_eq!(cost(nested, list(1000)), None, "over upstream's per-call limit");
        // A nested loop over each item's own list costs what the items hold.
        let per_item = "self.all(x, x.all(y, y >= 0))";
        let rows = |n: usize| json!((0..n).map(|_| (0..n).collect::<Vec<_>>()).collect::<Vec<_>>());
        assert!(cost(per_item, rows(10)).unwrap() > 100);
        assert_eq!(cost(per_item, rows(1000)), None);
        // A map is ranged over by its keys.
        let m = json!({"a": 1, "b": 2, "c": 3});
        assert!(cost("self.all(k, self[k] > 0)", m).unwrap() > 3);
    }

    #[test]
    fn a_rule_over_the_cost_limit_is_refused_without_running_and_stops_the_others() {
        let s = json!({"type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.items.all(x, self.items.all(y, x == y || x != y))",
                 "message": "items are compared"},
                {"rule": "false", "message": "never reached"}],
            "properties": {"items": {"type": "array", "items": {"type": "integer"}}}});
        let rules = Rules::compile(&s, "s").unwrap().unwrap();
        let small = json!({"items": (0..10).collect::<Vec<_>>()});
        assert_eq!(rules.validate(&small, None).len(), 1, "only the false rule");
        let big = json!({"items": (0..5000).collect::<Vec<_>>()});
        let started = Instant::now();
        let causes = rules.validate(&big, None);
        assert!(started.elapsed() < Duration::from_secs(2), "the rule was not run");
        expect_test::expect![[r#"
            [
                (
                    "<nil>",
                    "Invalid value: \"object\": 'operation cancelled: actual cost limit exceeded': no further validation rules will be run due to call cost exceeds limit for rule: items are compared",
                ),
            ]
        "#]]
        .assert_debug_eq(&causes.into_iter().map(|c| (c.field, c.message)).collect::<Vec<_>>());
    }

    #[test]
    fn comprehension_depth_ignores_strings_and_plain_calls() {
        assert_eq!(comprehension_depth("size(self) > 0"), 0);
        assert_eq!(comprehension_depth("self.all(x, x.exists(y, y == 'all('))"), 2);
        assert_eq!(comprehension_depth("self.map(x, x).filter(y, y > 1)"), 1);
    }
}
