//! Which webhooks a request is sent to: upstream's rule matcher
//! (`k8s.io/apiserver/pkg/admission/plugin/webhook/predicates/rules/rules.go`) and its
//! namespace and object selectors (`.../predicates/namespace`, `.../predicates/object`).
//! Pure functions over JSON, table-tested after upstream's `rules_test.go`.

use kinetic_machinery::selector::LabelSelector;
use serde_json::{Map, Value};

/// What a request is, as the rules see it (upstream's `admission.Attributes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attrs<'a> {
    pub operation: &'a str,
    pub group: &'a str,
    pub version: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    /// Whether the resource is namespaced (a Namespace itself is cluster-scoped, so upstream's
    /// special case of `namespaces` falls out of the resource's scope).
    pub namespaced: bool,
}

fn strings(v: &Value, field: &str) -> Vec<String> {
    v.get(field)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Whether one `RuleWithOperations` matches: scope, operation, group, version and resource
/// (`Matcher.Matches`).
pub fn rule_matches(rule: &Value, a: &Attrs<'_>) -> bool {
    let any = |field: &str, want: &str| strings(rule, field).iter().any(|s| s == "*" || s == want);
    let scope = match rule.get("scope").and_then(Value::as_str).unwrap_or("*") {
        "Cluster" => !a.namespaced,
        "Namespaced" => a.namespaced,
        _ => true,
    };
    scope
        && any("operations", a.operation)
        && any("apiGroups", a.group)
        && any("apiVersions", a.version)
        && strings(rule, "resources").iter().any(|r| {
            // `pods` is the resource alone, `pods/status` one subresource, `*/*` everything,
            // `*` every resource but no subresource (upstream's `splitResource`).
            let (res, sub) = r.split_once('/').unwrap_or((r.as_str(), ""));
            (res == "*" || res == a.resource) && (sub == "*" || sub == a.subresource)
        })
}

/// Whether any of a webhook's `rules` matches.
pub fn rules_match(webhook: &Value, a: &Attrs<'_>) -> bool {
    webhook
        .get("rules")
        .and_then(Value::as_array)
        .is_some_and(|rules| rules.iter().any(|r| rule_matches(r, a)))
}

fn labels(obj: Option<&Value>) -> Option<&Map<String, Value>> {
    obj?.pointer("/metadata/labels")?.as_object()
}

/// The webhook's selector at `field` (`{}`, matching everything, when unset as upstream
/// defaults it); a selector that does not parse matches nothing (validation refuses it).
fn selector(webhook: &Value, field: &str) -> Option<LabelSelector> {
    match webhook.get(field) {
        None | Some(Value::Null) => Some(LabelSelector::default()),
        Some(v) => LabelSelector::from_label_selector(v).ok(),
    }
}

/// `objectSelector`: an empty selector matches every request; otherwise the new or the old
/// object must match (upstream's `MatchObjectSelector`); a missing object never does.
pub fn object_selector_matches(webhook: &Value, obj: Option<&Value>, old: Option<&Value>) -> bool {
    let Some(sel) = selector(webhook, "objectSelector") else { return false };
    if sel.is_empty() {
        return true;
    }
    let one = |o: Option<&Value>| o.is_some_and(|o| sel.matches(labels(Some(o))));
    one(obj) || one(old)
}

/// `namespaceSelector` on the labels of the request's namespace: `ns_labels` is `None` for
/// cluster-scoped requests other than a Namespace, which always match (upstream's
/// `MatchNamespaceSelector`); for a Namespace the caller passes the object's own labels.
pub fn namespace_selector_matches(
    webhook: &Value,
    ns_labels: Option<Option<&Map<String, Value>>>,
) -> bool {
    let Some(sel) = selector(webhook, "namespaceSelector") else { return false };
    match ns_labels {
        None => true,
        Some(l) => sel.is_empty() || sel.matches(l),
    }
}

/// Whether a request with this resource is exempt from webhooks: upstream never sends its
/// own configuration to webhooks (`IsExemptAdmissionConfigurationResource`), so a broken
/// webhook can always be removed.
pub fn exempt(group: &str) -> bool {
    group == super::GROUP
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn attrs<'a>(op: &'a str, gvr: (&'a str, &'a str, &'a str), sub: &'a str) -> Attrs<'a> {
        Attrs {
            operation: op,
            group: gvr.0,
            version: gvr.1,
            resource: gvr.2,
            subresource: sub,
            namespaced: gvr.2 != "namespaces" && gvr.2 != "nodes",
        }
    }

    /// After upstream's `TestGroup`, `TestVersion`, `TestOperation`, `TestResource`, `TestScope`.
    #[test]
    fn rules_match_as_upstreams() {
        let pods = ("", "v1", "pods");
        let deploy = ("apps", "v1", "deployments");
        let rule = |ops: &[&str], groups: &[&str], versions: &[&str], res: &[&str]| json!({"operations": ops, "apiGroups": groups, "apiVersions": versions, "resources": res});
        let cases: Vec<(&str, Value, Attrs<'_>, bool)> = vec![
            (
                "wildcard group",
                rule(&["*"], &["*"], &["*"], &["*"]),
                attrs("CREATE", deploy, ""),
                true,
            ),
            (
                "exact group",
                rule(&["*"], &["apps"], &["*"], &["*"]),
                attrs("CREATE", deploy, ""),
                true,
            ),
            (
                "other group",
                rule(&["*"], &["batch"], &["*"], &["*"]),
                attrs("CREATE", deploy, ""),
                false,
            ),
            (
                "core group",
                rule(&["*"], &[""], &["v1"], &["pods"]),
                attrs("CREATE", pods, ""),
                true,
            ),
            (
                "core is not apps",
                rule(&["*"], &[""], &["v1"], &["*"]),
                attrs("CREATE", deploy, ""),
                false,
            ),
            (
                "version",
                rule(&["*"], &["*"], &["v1beta1"], &["*"]),
                attrs("CREATE", deploy, ""),
                false,
            ),
            (
                "operation",
                rule(&["CREATE"], &["*"], &["*"], &["*"]),
                attrs("UPDATE", pods, ""),
                false,
            ),
            (
                "operations",
                rule(&["CREATE", "UPDATE"], &["*"], &["*"], &["*"]),
                attrs("UPDATE", pods, ""),
                true,
            ),
            ("delete", rule(&["DELETE"], &["*"], &["*"], &["*"]), attrs("DELETE", pods, ""), true),
            (
                "star is no subresource",
                rule(&["*"], &["*"], &["*"], &["*"]),
                attrs("UPDATE", pods, "status"),
                false,
            ),
            (
                "star star",
                rule(&["*"], &["*"], &["*"], &["*/*"]),
                attrs("UPDATE", pods, "status"),
                true,
            ),
            (
                "res/sub",
                rule(&["*"], &["*"], &["*"], &["pods/status"]),
                attrs("UPDATE", pods, "status"),
                true,
            ),
            (
                "res/sub not main",
                rule(&["*"], &["*"], &["*"], &["pods/status"]),
                attrs("UPDATE", pods, ""),
                false,
            ),
            (
                "other sub",
                rule(&["*"], &["*"], &["*"], &["pods/status"]),
                attrs("CREATE", pods, "binding"),
                false,
            ),
            (
                "star/sub",
                rule(&["*"], &["*"], &["*"], &["*/scale"]),
                attrs("UPDATE", deploy, "scale"),
                true,
            ),
            (
                "res/star",
                rule(&["*"], &["*"], &["*"], &["deployments/*"]),
                attrs("UPDATE", deploy, "scale"),
                true,
            ),
            // `sub == "*"` matches an empty subresource too in upstream's `resource()`.
            (
                "res/star main",
                rule(&["*"], &["*"], &["*"], &["deployments/*"]),
                attrs("UPDATE", deploy, ""),
                true,
            ),
            (
                "one of",
                rule(&["*"], &["*"], &["*"], &["services", "pods"]),
                attrs("CREATE", pods, ""),
                true,
            ),
            ("no operations", rule(&[], &["*"], &["*"], &["*"]), attrs("CREATE", pods, ""), false),
        ];
        for (name, rule, a, want) in cases {
            assert_eq!(rule_matches(&rule, &a), want, "{name}");
        }
        let scoped = |scope: &str| {
            json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"],
                   "resources": ["*"], "scope": scope})
        };
        let ns = attrs("CREATE", ("", "v1", "namespaces"), "");
        let pod = attrs("CREATE", pods, "");
        assert!(rule_matches(&scoped("Cluster"), &ns), "namespaces are cluster-scoped");
        assert!(!rule_matches(&scoped("Namespaced"), &ns));
        assert!(rule_matches(&scoped("Namespaced"), &pod));
        assert!(!rule_matches(&scoped("Cluster"), &pod));
        assert!(rule_matches(&scoped("*"), &pod) && rule_matches(&scoped("*"), &ns));
    }

    #[test]
    fn selectors_match_old_or_new_object_and_the_namespace() {
        let hook = json!({"objectSelector": {"matchLabels": {"inject": "true"}},
                          "namespaceSelector": {"matchExpressions": [
                              {"key": "env", "operator": "In", "values": ["prod"]}]}});
        let with = json!({"metadata": {"labels": {"inject": "true"}}});
        let without = json!({"metadata": {}});
        assert!(object_selector_matches(&hook, Some(&with), None));
        assert!(object_selector_matches(&hook, Some(&without), Some(&with)), "old object");
        assert!(object_selector_matches(&hook, None, Some(&with)), "delete");
        assert!(!object_selector_matches(&hook, Some(&without), None));
        assert!(object_selector_matches(&json!({}), None, None), "unset matches everything");
        assert!(object_selector_matches(&json!({"objectSelector": {}}), None, None));
        let prod = json!({"env": "prod"});
        let dev = json!({"env": "dev"});
        assert!(namespace_selector_matches(&hook, Some(prod.as_object())));
        assert!(!namespace_selector_matches(&hook, Some(dev.as_object())));
        assert!(!namespace_selector_matches(&hook, Some(None)), "namespace without labels");
        assert!(namespace_selector_matches(&hook, None), "cluster-scoped");
    }

    #[test]
    fn admission_configuration_is_exempt() {
        assert!(exempt("admissionregistration.k8s.io"));
        assert!(!exempt("apps"));
    }
}
