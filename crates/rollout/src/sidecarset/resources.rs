//! A sidecar's `resourcesPolicy`: its resources computed at injection from the app containers'
//! (OpenKruise v1.9, `pkg/webhook/pod/mutating/sidecarset_resources_policy.go`
//! `applyResourcesPolicy`, and the expression calculator `pkg/util/calculator`; proposal
//! `docs/proposals/20250913-sidecarset-dynamic-resources-when-creating.md`).
//!
//! The target containers are the pod's containers and native sidecars (init containers with
//! `restartPolicy: Always`) whose names match `targetContainersNameRegex`, without the
//! containers SidecarSets inject. Their resources are aggregated per `targetContainersMode`:
//! `sum` or `max`; a limit only when every target has one (else unlimited), requests with a
//! missing one counted as zero. Each expression of `resourcesExpr` is then evaluated with the
//! aggregate bound to `cpu` (or `memory`, when the expression names it): a limit only when the
//! aggregate limit exists, a request always.
//!
//! Expressions: `+ - * /`, parentheses, `max(..)`/`min(..)`, numbers (`0.5`), percentages
//! (`50%` = 0.5) and quantities (`50m`, `100Mi`). As upstream: `+`/`-` with a quantity give a
//! quantity (a number counts as that many units), a quantity may only be multiplied or divided
//! by a number, `max`/`min` compare values and keep the chosen operand, a negative result is an
//! error; a number result is cores for cpu (truncated to millicores) and bytes for memory.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kinetic_api::kruise::sidecarset::{ResourcesPolicy, TargetContainersMode};

/// Why a `resourcesPolicy` cannot be applied (upstream refuses the pod).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourcesError {
    #[error("invalid regex pattern {pattern:?}: {message}")]
    Regex { pattern: String, message: String },
    #[error("no containers match the regex pattern {0:?}")]
    NoTarget(String),
    #[error("failed to parse expression {expr:?}: {message}")]
    Expr { expr: String, message: String },
}

/// A value of an expression: a plain number or a quantity (in base units: cores, bytes),
/// remembering whether the quantity was written with a binary suffix (for its format).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Val {
    Num(f64),
    Qty(f64, bool),
}

impl Val {
    fn value(self) -> f64 {
        match self {
            Val::Num(v) | Val::Qty(v, _) => v,
        }
    }
}

const DECIMAL: &[(&str, f64)] =
    &[("m", 1e-3), ("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12), ("P", 1e15), ("E", 1e18)];
const BINARY: &[(&str, f64)] = &[
    ("Ki", 1024.0),
    ("Mi", 1_048_576.0),
    ("Gi", 1_073_741_824.0),
    ("Ti", 1_099_511_627_776.0),
    ("Pi", 1_125_899_906_842_624.0),
    ("Ei", 1_152_921_504_606_846_976.0),
];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Val(Val),
    Ident(String),
    Op(char),
}

fn lex(expr: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || c == '.' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            let n: f64 = text.parse().map_err(|_| format!("invalid number {text:?}"))?;
            let suffix_start = i;
            while i < chars.len() && chars[i].is_ascii_alphabetic() {
                i += 1;
            }
            let suffix: String = chars[suffix_start..i].iter().collect();
            if suffix.is_empty() {
                if chars.get(i) == Some(&'%') {
                    i += 1;
                    out.push(Tok::Val(Val::Num(n / 100.0)));
                } else {
                    out.push(Tok::Val(Val::Num(n)));
                }
            } else if let Some((_, f)) = BINARY.iter().find(|(s, _)| *s == suffix) {
                out.push(Tok::Val(Val::Qty(n * f, true)));
            } else if let Some((_, f)) = DECIMAL.iter().find(|(s, _)| *s == suffix) {
                out.push(Tok::Val(Val::Qty(n * f, false)));
            } else {
                return Err(format!("unknown quantity suffix {suffix:?}"));
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else if "+-*/(),".contains(c) {
            out.push(Tok::Op(c));
            i += 1;
        } else {
            return Err(format!("unexpected character {c:?}"));
        }
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    vars: &'a BTreeMap<&'a str, Val>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn eat(&mut self, op: char) -> bool {
        if self.peek() == Some(&Tok::Op(op)) {
            self.pos += 1;
            return true;
        }
        false
    }

    fn expr(&mut self) -> Result<Val, String> {
        let mut left = self.term()?;
        loop {
            if self.eat('+') {
                left = add(left, self.term()?, 1.0);
            } else if self.eat('-') {
                left = add(left, self.term()?, -1.0);
            } else {
                return Ok(left);
            }
        }
    }

    fn term(&mut self) -> Result<Val, String> {
        let mut left = self.factor()?;
        loop {
            if self.eat('*') {
                let right = self.factor()?;
                left = match (left, right) {
                    (Val::Qty(..), Val::Qty(..)) => {
                        return Err("multiplication of two quantities".into());
                    }
                    (Val::Qty(a, b), Val::Num(n)) | (Val::Num(n), Val::Qty(a, b)) => {
                        Val::Qty(a * n, b)
                    }
                    (Val::Num(a), Val::Num(n)) => Val::Num(a * n),
                };
            } else if self.eat('/') {
                let right = self.factor()?;
                let Val::Num(d) = right else { return Err("division by quantity".into()) };
                if d == 0.0 {
                    return Err("division by zero".into());
                }
                left = match left {
                    Val::Qty(a, b) => Val::Qty(a / d, b),
                    Val::Num(a) => Val::Num(a / d),
                };
            } else {
                return Ok(left);
            }
        }
    }

    fn factor(&mut self) -> Result<Val, String> {
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Val(v)) => {
                self.pos += 1;
                Ok(v)
            }
            Some(Tok::Op('(')) => {
                self.pos += 1;
                let v = self.expr()?;
                if !self.eat(')') {
                    return Err("missing ')'".into());
                }
                Ok(v)
            }
            Some(Tok::Ident(name)) => {
                self.pos += 1;
                if self.eat('(') {
                    let mut args = vec![self.expr()?];
                    while self.eat(',') {
                        args.push(self.expr()?);
                    }
                    if !self.eat(')') {
                        return Err("missing ')'".into());
                    }
                    let pick = |better: fn(f64, f64) -> bool| {
                        args.iter()
                            .copied()
                            .reduce(|a, b| if better(b.value(), a.value()) { b } else { a })
                    };
                    let v = match name.as_str() {
                        "max" => pick(|b, a| b > a),
                        "min" => pick(|b, a| b < a),
                        _ => return Err(format!("unknown function: {name}")),
                    };
                    v.ok_or_else(|| format!("{name} needs an argument"))
                } else {
                    self.vars
                        .get(name.as_str())
                        .copied()
                        .ok_or(format!("undefined variable: {name}"))
                }
            }
            Some(Tok::Op(c)) => Err(format!("unexpected {c:?}")),
            None => Err("unexpected end of expression".into()),
        }
    }
}

fn add(a: Val, b: Val, sign: f64) -> Val {
    match (a, b) {
        (Val::Num(x), Val::Num(y)) => Val::Num(x + sign * y),
        (Val::Qty(_, bin), _) | (_, Val::Qty(_, bin)) => {
            Val::Qty(a.value() + sign * b.value(), bin)
        }
    }
}

/// Evaluates `expr` with `vars` bound (upstream's calculator).
fn evaluate(expr: &str, vars: &BTreeMap<&str, Val>) -> Result<Val, String> {
    let toks = lex(expr)?;
    let mut p = Parser { toks, pos: 0, vars };
    let v = p.expr()?;
    if p.pos != p.toks.len() {
        return Err(format!("unexpected {:?}", p.toks[p.pos]));
    }
    if v.value() < 0.0 {
        return Err("calculation result is negative".into());
    }
    Ok(v)
}

/// A quantity in Kubernetes' canonical form: binary suffixes for a binary quantity that is a
/// whole multiple of 1Ki, else decimal ones with millis at most.
fn format_quantity(v: f64, binary: bool) -> String {
    if binary
        && v.fract() == 0.0
        && v >= 1024.0
        && let Some((s, f)) = BINARY.iter().rev().find(|(_, f)| (v / f).fract() == 0.0)
    {
        return format!("{}{s}", (v / f) as i64);
    }
    let millis = (v * 1000.0).round() as i64;
    if millis % 1000 != 0 {
        return format!("{millis}m");
    }
    let n = millis / 1000;
    if n == 0 {
        return "0".into();
    }
    for (s, f) in DECIMAL.iter().skip(1).rev() {
        let f = *f as i64;
        if n % f == 0 {
            return format!("{}{s}", n / f);
        }
    }
    n.to_string()
}

/// The value of quantity `q` in base units (0 for one that does not parse: the API server
/// has validated the pod's resources already).
fn base(q: &Quantity) -> f64 {
    kinetic_machinery::quantity::Quantity::parse(&q.0)
        .map_or(0.0, |q| q.milli_value() as f64 / 1000.0)
}

fn is_binary(q: &Quantity) -> bool {
    q.0.ends_with('i')
}

/// Aggregated `(limits, requests)` of `targets` for `resource` (`aggregateResources`).
fn aggregate(
    targets: &[&Container],
    resource: &str,
    mode: TargetContainersMode,
) -> (Option<Val>, Val) {
    let combine = |acc: f64, v: f64| match mode {
        TargetContainersMode::Sum => acc + v,
        TargetContainersMode::Max => acc.max(v),
    };
    let mut limit = Some((0.0, false));
    let mut request = (0.0, false);
    for c in targets {
        let r = c.resources.as_ref();
        match r.and_then(|r| r.limits.as_ref()).and_then(|l| l.get(resource)) {
            Some(q) => {
                limit = limit.map(|(acc, bin)| (combine(acc, base(q)), bin || is_binary(q)));
            }
            None => limit = None,
        }
        if let Some(q) = r.and_then(|r| r.requests.as_ref()).and_then(|l| l.get(resource)) {
            request = (combine(request.0, base(q)), request.1 || is_binary(q));
        }
    }
    (limit.map(|(v, b)| Val::Qty(v, b)), Val::Qty(request.0, request.1))
}

/// One resource's expression evaluated on its aggregate (`evaluateResourceExpression`).
fn resolve(expr: &str, resource: &str, aggregate: Val) -> Result<Quantity, ResourcesError> {
    let words: Vec<&str> = expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).collect();
    let var = if words.contains(&"memory") { "memory" } else { "cpu" };
    let vars = BTreeMap::from([(var, aggregate)]);
    let v = evaluate(expr, &vars)
        .map_err(|message| ResourcesError::Expr { expr: expr.to_owned(), message })?;
    Ok(Quantity(match v {
        Val::Qty(v, bin) => format_quantity(v, bin),
        Val::Num(n) if resource == "cpu" => format_quantity((n * 1000.0).trunc() / 1000.0, false),
        Val::Num(n) => format_quantity(n.trunc(), false),
    }))
}

/// The resources `policy` gives a sidecar in a pod with `containers` and `init_containers`,
/// leaving out the containers named in `kruise_sidecars` (those SidecarSets inject).
///
/// # Errors
/// The regex does not compile, nothing matches it, or an expression does not evaluate.
pub fn apply(
    policy: &ResourcesPolicy,
    containers: &[Container],
    init_containers: &[Container],
    kruise_sidecars: &BTreeSet<String>,
) -> Result<ResourceRequirements, ResourcesError> {
    let pattern = &policy.target_containers_name_regex;
    let re = regex::Regex::new(pattern)
        .map_err(|e| ResourcesError::Regex { pattern: pattern.clone(), message: e.to_string() })?;
    let native = init_containers.iter().filter(|c| c.restart_policy.as_deref() == Some("Always"));
    let targets: Vec<&Container> = native
        .chain(containers.iter())
        .filter(|c| !kruise_sidecars.contains(&c.name) && re.is_match(&c.name))
        .collect();
    if targets.is_empty() {
        return Err(ResourcesError::NoTarget(pattern.clone()));
    }
    let mode = policy.target_containers_mode.unwrap_or_default();
    let mut out = ResourceRequirements::default();
    let expr = &policy.resources_expr;
    for (resource, limit, request) in [
        ("cpu", expr.limits.as_ref().map(|l| &l.cpu), expr.requests.as_ref().map(|r| &r.cpu)),
        (
            "memory",
            expr.limits.as_ref().map(|l| &l.memory),
            expr.requests.as_ref().map(|r| &r.memory),
        ),
    ] {
        let (agg_limit, agg_request) = aggregate(&targets, resource, mode);
        if let (Some(e), Some(agg)) =
            (limit.and_then(|e| e.as_deref()).filter(|e| !e.is_empty()), agg_limit)
        {
            let q = resolve(e, resource, agg)?;
            out.limits.get_or_insert_with(BTreeMap::new).insert(resource.into(), q);
        }
        if let Some(e) = request.and_then(|e| e.as_deref()) {
            let q = if e.is_empty() {
                Quantity("0".into())
            } else {
                resolve(e, resource, agg_request)?
            };
            out.requests.get_or_insert_with(BTreeMap::new).insert(resource.into(), q);
        }
    }
    Ok(out)
}

/// Upstream's `validateResourcesPolicy` for a SidecarSet container (`has_resources`: it sets
/// `resources` too): `(field under resourcesPolicy, message, required)` for each problem; the
/// field is empty for the policy itself. Expressions must parse (evaluated on sample values).
pub fn validate(policy: &ResourcesPolicy, has_resources: bool) -> Vec<(String, String, bool)> {
    if has_resources {
        return vec![(
            String::new(),
            "resourcesPolicy and resources cannot be configured together".into(),
            false,
        )];
    }
    let mut out = Vec::new();
    let pattern = &policy.target_containers_name_regex;
    if pattern.is_empty() {
        out.push(("targetContainersNameRegex".into(), "invalid empty regex".into(), true));
    } else if let Err(e) = regex::Regex::new(pattern) {
        out.push((
            "targetContainersNameRegex".into(),
            format!("invalid regex pattern: {e}"),
            false,
        ));
    }
    let vars = BTreeMap::from([("cpu", Val::Qty(1.0, false)), ("memory", Val::Qty(1.0, true))]);
    let e = &policy.resources_expr;
    for (kind, list) in [("limits", &e.limits), ("requests", &e.requests)] {
        let Some(list) = list else { continue };
        for (res, expr) in [("cpu", &list.cpu), ("memory", &list.memory)] {
            let Some(expr) = expr.as_deref().filter(|x| !x.is_empty()) else { continue };
            match evaluate(expr, &vars) {
                Err(m) if m != "calculation result is negative" => out.push((
                    format!("resourcesExpr.{kind}.{res}"),
                    format!("invalid expression {expr:?}: {m}"),
                    false,
                )),
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calculator_as_upstreams_readme() {
        let vars = BTreeMap::from([
            ("cpu", Val::Qty(0.2, false)),
            ("memory", Val::Qty(536_870_912.0, true)),
        ]);
        let cases = [
            ("2 + 3 * 4", Ok("14")),
            ("50% * 200", Ok("100")),
            ("max(10, 20)", Ok("20")),
            ("100m + 50m", Ok("150m")),
            ("100m - 50m", Ok("50m")),
            ("40m * 2", Ok("80m")),
            ("100m / 2", Ok("50m")),
            ("max(40m, 20)", Ok("20")),
            ("max(cpu*50%, 50m)", Ok("100m")),
            ("max(memory*50%, 100Mi)", Ok("256Mi")),
            ("min(max(max(max(0.5,0.5*cpu),cpu-1.0),cpu-1.0),3.0)", Ok("500m")),
            ("10 / 0", Err("division by zero")),
            ("40m * 2m", Err("multiplication of two quantities")),
            ("1 / 2m", Err("division by quantity")),
            ("50m - 1", Err("calculation result is negative")),
            ("avg(1, 2)", Err("unknown function: avg")),
            ("gpu * 2", Err("undefined variable: gpu")),
        ];
        for (expr, want) in cases {
            let got = evaluate(expr, &vars).map(|v| match v {
                Val::Qty(v, b) => format_quantity(v, b),
                // Numbers shown as cores.
                Val::Num(n) => format_quantity(n, false),
            });
            assert_eq!(got.as_deref().map_err(String::as_str), want, "{expr}");
        }
    }

    /// A container `name` with `(cpu, memory)` limits and requests ("" = unset).
    fn c(name: &str, limits: (&str, &str), requests: (&str, &str)) -> Container {
        let list = |(cpu, mem): (&str, &str)| {
            let mut m = BTreeMap::new();
            if !cpu.is_empty() {
                m.insert("cpu".to_owned(), Quantity(cpu.into()));
            }
            if !mem.is_empty() {
                m.insert("memory".to_owned(), Quantity(mem.into()));
            }
            (!m.is_empty()).then_some(m)
        };
        Container {
            name: name.into(),
            resources: Some(ResourceRequirements {
                limits: list(limits),
                requests: list(requests),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn policy(
        mode: &str,
        regex: &str,
        limits: (&str, &str),
        requests: (&str, &str),
    ) -> ResourcesPolicy {
        serde_json::from_value(serde_json::json!({
            "targetContainerMode": mode, "targetContainersNameRegex": regex,
            "resourceExpr": {"limits": {"cpu": limits.0, "memory": limits.1},
                             "requests": {"cpu": requests.0, "memory": requests.1}},
        }))
        .expect("a policy")
    }

    /// `(cpu limit, memory limit, cpu request, memory request)`, "-" when unset.
    fn got(r: &ResourceRequirements) -> [String; 4] {
        let get = |l: &Option<BTreeMap<String, Quantity>>, k: &str| {
            l.as_ref().and_then(|l| l.get(k)).map_or("-".to_owned(), |q| q.0.clone())
        };
        [
            get(&r.limits, "cpu"),
            get(&r.limits, "memory"),
            get(&r.requests, "cpu"),
            get(&r.requests, "memory"),
        ]
    }

    /// Upstream's `TestApplyResourcesPolicy` cases.
    #[test]
    fn apply_as_upstreams_cases() {
        let engines = vec![
            c("large.engine.v4", ("200m", "200Mi"), ("50m", "100Mi")),
            c("large.engine.v8", ("400m", "400Mi"), ("100m", "200Mi")),
        ];
        let apps = vec![
            c("app1", ("200m", "200Mi"), ("50m", "100Mi")),
            c("app2", ("400m", "400Mi"), ("100m", "200Mi")),
        ];
        let const_exprs = (("max(cpu*50%, 50m)", "200Mi"), ("max(cpu*50%, 50m)", "100Mi"));
        let none = BTreeSet::new();
        // (case, policy, containers, init containers, want)
        type Case<'a> = (&'a str, ResourcesPolicy, Vec<Container>, Vec<Container>, [&'a str; 4]);
        let cases: Vec<Case<'_>> = vec![
            (
                "sum mode with expression",
                policy("sum", ".*", ("cpu*50%", "200Mi"), ("cpu*50%", "100Mi")),
                apps.clone(),
                vec![],
                ["300m", "200Mi", "75m", "100Mi"],
            ),
            (
                "max mode with expression",
                policy("max", "^large.engine.v.*$", const_exprs.0, const_exprs.1),
                engines.clone(),
                vec![],
                ["200m", "200Mi", "50m", "100Mi"],
            ),
            (
                "regex filter - specific container",
                policy("sum", "^large.engine.v4$", const_exprs.0, const_exprs.1),
                engines.clone(),
                vec![],
                ["100m", "200Mi", "50m", "100Mi"],
            ),
            (
                "sum mode - one container without CPU limit (unlimited)",
                policy("sum", ".*", ("cpu*50%", "memory*30%"), ("cpu*30%", "memory*20%")),
                vec![
                    c("app1", ("200m", "200Mi"), ("100m", "100Mi")),
                    c("app2", ("", "400Mi"), ("50m", "200Mi")),
                ],
                vec![],
                ["-", "180Mi", "45m", "60Mi"],
            ),
            (
                "max mode - one container without Memory limit (unlimited)",
                policy("max", ".*", ("cpu*40%", "memory*30%"), ("cpu*25%", "memory*20%")),
                vec![
                    c("app1", ("200m", "200Mi"), ("100m", "100Mi")),
                    c("app2", ("400m", ""), ("200m", "")),
                ],
                vec![],
                ["160m", "-", "50m", "20Mi"],
            ),
            (
                "sum mode - container without requests (treated as 0)",
                policy("sum", ".*", ("cpu*50%", "memory*30%"), ("cpu*30%", "memory*20%")),
                vec![
                    c("app1", ("200m", "200Mi"), ("100m", "100Mi")),
                    c("app2", ("400m", "400Mi"), ("", "")),
                ],
                vec![],
                ["300m", "180Mi", "30m", "20Mi"],
            ),
            (
                "init-container with resource policy (native sidecar)",
                policy(
                    "sum",
                    "^app.*$",
                    ("max(cpu*30%, 50m)", "max(memory*25%, 100Mi)"),
                    ("cpu*20%", "memory*15%"),
                ),
                vec![c("app2", ("600m", "1200Mi"), ("300m", "600Mi"))],
                vec![
                    Container {
                        restart_policy: Some("Always".into()),
                        ..c("app1", ("400m", "800Mi"), ("200m", "400Mi"))
                    },
                    // A plain init container is no target.
                    c("app2", ("400m", "800Mi"), ("200m", "400Mi")),
                ],
                ["300m", "500Mi", "100m", "150Mi"],
            ),
        ];
        for (case, p, containers, inits, want) in cases {
            let r = apply(&p, &containers, &inits, &none).expect(case);
            assert_eq!(got(&r), want.map(str::to_owned), "{case}");
        }
        // No target: an error (upstream refuses the pod); the SidecarSets' own containers are
        // never targets.
        let p = policy("sum", "^nonexistent$", ("cpu*50%", ""), ("", ""));
        assert_eq!(
            apply(&p, &apps, &[], &none),
            Err(ResourcesError::NoTarget("^nonexistent$".into()))
        );
        let p = policy("sum", "^app1$", ("cpu*50%", ""), ("", ""));
        let kruise = BTreeSet::from(["app1".to_owned()]);
        assert!(matches!(apply(&p, &apps, &[], &kruise), Err(ResourcesError::NoTarget(_))));
        let p = policy("sum", "(", ("cpu", ""), ("", ""));
        assert!(matches!(apply(&p, &apps, &[], &none), Err(ResourcesError::Regex { .. })));
    }
}
