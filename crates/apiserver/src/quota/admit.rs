//! ResourceQuota admission: whether a write fits every quota of its namespace, and the
//! quotas' new `status.used` when it does (upstream `CheckRequest` in
//! `k8s.io/apiserver/pkg/admission/plugin/resourcequota/controller.go`, with its messages).
//!
//! Pure: the caller reads the quotas from one store snapshot and writes the charged statuses
//! with the object in one all-or-nothing store write (see [`crate::quota`]).

use serde_json::Value;

use super::evaluate::{Evaluator, Operation, Scope};
use super::resources::{
    ResourceList, add, less_than_or_equal, list_of, mask, negative_names, pretty, remove_zeros,
    subtract_non_negative,
};

/// A quota as admission reads it: its name, `status.hard`, `status.used` and scopes.
#[derive(Debug, Clone)]
pub struct QuotaView {
    pub name: String,
    pub hard: ResourceList,
    pub used: ResourceList,
    pub scopes: Vec<Scope>,
}

impl QuotaView {
    pub fn of(quota: &Value) -> Self {
        Self {
            name: quota
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            hard: list_of(quota.pointer("/status/hard")),
            used: list_of(quota.pointer("/status/used")),
            scopes: scopes_of(quota),
        }
    }

    fn hard_names(&self) -> Vec<String> {
        self.hard.keys().cloned().collect()
    }
}

/// A quota's scope requirements: `spec.scopes` (as `Exists`) and
/// `spec.scopeSelector.matchExpressions` (upstream `getScopeSelectorsFromQuota`).
pub fn scopes_of(quota: &Value) -> Vec<Scope> {
    let mut out: Vec<Scope> = quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| Scope { name: s.to_owned(), operator: "Exists".into(), values: vec![] })
        .collect();
    let exprs = quota.pointer("/spec/scopeSelector/matchExpressions").and_then(Value::as_array);
    for e in exprs.into_iter().flatten() {
        let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        let values = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        out.push(Scope { name: s("scopeName"), operator: s("operator"), values });
    }
    out
}

/// What the write needs: `(index into quotas, new status.used)` for every quota it charges.
/// `Err` is the reason of upstream's 403 (`exceeded quota: ...`, `failed quota: ...`).
///
/// # Errors
/// The write does not fit, or a quota that covers it has no usage yet.
pub fn check(
    quotas: &[QuotaView],
    ev: Evaluator,
    count_name: &str,
    op: Operation,
    obj: &Value,
    old: Option<&Value>,
    now: jiff::Timestamp,
) -> Result<Vec<(usize, ResourceList)>, String> {
    if quotas.is_empty() || !ev.handles(op, obj, old) {
        return Ok(Vec::new());
    }
    let mut interesting = Vec::new();
    for (i, q) in quotas.iter().enumerate() {
        let hard = q.hard_names();
        if !ev.matches(count_name, &hard, &q.scopes, obj) {
            continue;
        }
        let restricted = ev.matching_resources(count_name, &hard);
        ev.constraints(&restricted, obj).map_err(|e| format!("failed quota: {}: {e}", q.name))?;
        let mut unknown: Vec<&String> =
            restricted.iter().filter(|r| !q.used.contains_key(*r)).collect();
        if !unknown.is_empty() {
            unknown.sort();
            let names: Vec<&str> = unknown.iter().map(|s| s.as_str()).collect();
            return Err(format!(
                "status unknown for quota: {}, resources: {}",
                q.name,
                names.join(",")
            ));
        }
        interesting.push(i);
    }
    if interesting.is_empty() {
        return Ok(Vec::new());
    }
    let input = ev.usage(count_name, obj, now);
    let negative = negative_names(&input);
    if !negative.is_empty() {
        return Err(format!("quota usage is negative for resource(s): {}", negative.join(",")));
    }
    let mut deltas: Vec<(usize, ResourceList)> =
        interesting.iter().map(|i| (*i, input.clone())).collect();
    if op == Operation::Update
        && let Some(old) = old
    {
        let delta = subtract_non_negative(&input, &ev.usage(count_name, old, now));
        for (i, d) in &mut deltas {
            let q = &quotas[*i];
            if ev.matches(count_name, &q.hard_names(), &q.scopes, old) {
                *d = delta.clone();
            }
        }
    }
    let mut out = Vec::new();
    for (i, delta) in deltas {
        let delta = remove_zeros(&delta);
        if delta.is_empty() {
            continue;
        }
        let q = &quotas[i];
        let requested = mask(&delta, q.hard.keys());
        let new_used = add(&q.used, &requested);
        let (allowed, exceeded) = less_than_or_equal(&mask(&new_used, requested.keys()), &q.hard);
        if !allowed {
            return Err(format!(
                "exceeded quota: {}, requested: {}, used: {}, limited: {}",
                q.name,
                pretty(&mask(&requested, &exceeded)),
                pretty(&mask(&q.used, &exceeded)),
                pretty(&mask(&q.hard, &exceeded)),
            ));
        }
        out.push((i, new_used));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn now() -> jiff::Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn quota(name: &str, hard: Value, used: Value) -> QuotaView {
        QuotaView::of(&json!({"metadata": {"name": name}, "status": {"hard": hard, "used": used}}))
    }

    fn pod(cpu: &str, mem: &str) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "resources": {
            "requests": {"cpu": cpu, "memory": mem}, "limits": {"cpu": cpu, "memory": mem}}}]}})
    }

    fn run(quotas: &[QuotaView], obj: &Value) -> Result<Vec<String>, String> {
        check(quotas, Evaluator::Pod, "count/pods", Operation::Create, obj, None, now()).map(|v| {
            v.into_iter().map(|(i, u)| format!("{}: {}", quotas[i].name, pretty(&u))).collect()
        })
    }

    /// Ported from upstream `admission_test.go` (`TestAdmitBelowQuotaLimit`,
    /// `TestAdmitExceedQuotaLimit`, `TestAdmitEnforceQuotaConstraints`,
    /// `TestAdmitBelowBestEffortQuotaLimit`, ...), with upstream's messages.
    #[test]
    fn admission_follows_upstream() {
        let q = quota(
            "quota",
            json!({"cpu": "3", "memory": "100Gi", "pods": "5"}),
            json!({"cpu": "1", "memory": "50Gi", "pods": "3"}),
        );
        assert_eq!(
            run(std::slice::from_ref(&q), &pod("100m", "2Gi")).unwrap(),
            ["quota: cpu=1100m,memory=52Gi,pods=4"]
        );
        assert_eq!(
            run(std::slice::from_ref(&q), &pod("3", "2Gi")).unwrap_err(),
            "exceeded quota: quota, requested: cpu=3, used: cpu=1, limited: cpu=3"
        );
        let full = quota("pods", json!({"pods": "2"}), json!({"pods": "2"}));
        assert_eq!(
            run(&[full], &pod("1", "1Gi")).unwrap_err(),
            "exceeded quota: pods, requested: pods=1, used: pods=2, limited: pods=2"
        );
        let limits = quota(
            "compute",
            json!({"limits.cpu": "2", "requests.memory": "1Gi"}),
            json!({"limits.cpu": "0", "requests.memory": "0"}),
        );
        let bare = json!({"spec": {"containers": [{"name": "app"}]}});
        assert_eq!(
            run(&[limits], &bare).unwrap_err(),
            "failed quota: compute: must specify limits.cpu for: app; requests.memory for: app"
        );
        let unsynced = quota("new", json!({"pods": "2"}), json!({}));
        assert_eq!(
            run(&[unsynced], &pod("1", "1Gi")).unwrap_err(),
            "status unknown for quota: new, resources: pods"
        );
        let best =
            QuotaView::of(&json!({"metadata": {"name": "be"}, "spec": {"scopes": ["BestEffort"]},
            "status": {"hard": {"pods": "1"}, "used": {"pods": "1"}}}));
        assert_eq!(
            run(std::slice::from_ref(&best), &pod("1", "1Gi")).unwrap(),
            Vec::<String>::new(),
            "not best effort: not charged"
        );
        assert!(run(&[best], &bare).unwrap_err().starts_with("exceeded quota: be"));
        let two = [
            quota("a", json!({"pods": "10"}), json!({"pods": "1"})),
            quota(
                "b",
                json!({"count/pods": "10", "requests.cpu": "4"}),
                json!({"count/pods": "0", "requests.cpu": "0"}),
            ),
            quota("c", json!({"secrets": "1"}), json!({"secrets": "0"})),
        ];
        assert_eq!(
            run(&two, &pod("1", "1Gi")).unwrap(),
            ["a: pods=2", "b: count/pods=1,requests.cpu=1"]
        );
        let negative = pod("-1", "1Gi");
        assert_eq!(
            run(&[quota("n", json!({"cpu": "10"}), json!({"cpu": "0"}))], &negative).unwrap_err(),
            "quota usage is negative for resource(s): cpu,limits.cpu,requests.cpu"
        );
    }

    #[test]
    fn updates_charge_the_difference() {
        let q =
            [quota("s", json!({"requests.storage": "10Gi"}), json!({"requests.storage": "5Gi"}))];
        let claim = |s: &str| json!({"spec": {"resources": {"requests": {"storage": s}}}});
        let grow = check(
            &q,
            Evaluator::Claim,
            "count/persistentvolumeclaims",
            Operation::Update,
            &claim("8Gi"),
            Some(&claim("5Gi")),
            now(),
        )
        .unwrap();
        assert_eq!(pretty(&grow[0].1), "requests.storage=8Gi");
        let shrink = check(
            &q,
            Evaluator::Claim,
            "count/persistentvolumeclaims",
            Operation::Update,
            &claim("1Gi"),
            Some(&claim("5Gi")),
            now(),
        )
        .unwrap();
        assert!(shrink.is_empty());
        let secret = Evaluator::Count { legacy_name: true };
        let qs = [quota("c", json!({"secrets": "1"}), json!({"secrets": "1"}))];
        assert!(
            check(
                &qs,
                secret,
                "count/secrets",
                Operation::Update,
                &json!({}),
                Some(&json!({})),
                now()
            )
            .unwrap()
            .is_empty()
        );
        assert_eq!(
            check(&qs, secret, "count/secrets", Operation::Create, &json!({}), None, now())
                .unwrap_err(),
            "exceeded quota: c, requested: secrets=1, used: secrets=1, limited: secrets=1"
        );
    }
}
