//! Policy rules: how one rule matches a request, and when one set of rules covers another (the
//! escalation check). Upstream: `plugin/pkg/auth/authorizer/rbac/rbac.go` (`RuleAllows`) and
//! `pkg/apis/rbac/v1/evaluation_helpers.go` for matching, `pkg/registry/rbac/validation/
//! policy_comparator.go` for covering, `pkg/apis/rbac/v1/helpers.go` for `CompactString`.

use serde_json::{Value, json};

use crate::auth::Attributes;

pub const VERB_ALL: &str = "*";
pub const GROUP_ALL: &str = "*";
pub const RESOURCE_ALL: &str = "*";
pub const URL_ALL: &str = "*";

/// One `rbac.authorization.k8s.io/v1` PolicyRule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PolicyRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strs(v: &Value, field: &str) -> Vec<String> {
    v.get(field)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

impl PolicyRule {
    /// Reads a rule from its JSON form (missing or null lists are empty, as Go decodes them).
    #[must_use]
    pub fn from_json(v: &Value) -> Self {
        Self {
            verbs: strs(v, "verbs"),
            api_groups: strs(v, "apiGroups"),
            resources: strs(v, "resources"),
            resource_names: strs(v, "resourceNames"),
            non_resource_urls: strs(v, "nonResourceURLs"),
        }
    }

    /// The rules of a Role or ClusterRole object.
    #[must_use]
    pub fn list_from(obj: &Value) -> Vec<Self> {
        obj.get("rules")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(Self::from_json).collect())
            .unwrap_or_default()
    }

    /// The JSON form, omitting empty lists as upstream's `omitempty` does.
    #[must_use]
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("verbs".into(), json!(self.verbs));
        for (k, v) in [
            ("apiGroups", &self.api_groups),
            ("resources", &self.resources),
            ("resourceNames", &self.resource_names),
            ("nonResourceURLs", &self.non_resource_urls),
        ] {
            if !v.is_empty() {
                m.insert(k.into(), json!(v));
            }
        }
        Value::Object(m)
    }

    /// Whether the rule allows the request (upstream's `RuleAllows`).
    #[must_use]
    pub fn allows(&self, a: &Attributes) -> bool {
        if a.resource_request {
            let combined = if a.subresource.is_empty() {
                a.resource.clone()
            } else {
                format!("{}/{}", a.resource, a.subresource)
            };
            verb_matches(self, &a.verb)
                && group_matches(self, &a.api_group)
                && resource_matches(self, &combined, &a.subresource)
                && name_matches(self, &a.name)
        } else {
            verb_matches(self, &a.verb) && url_matches(self, &a.path)
        }
    }
}

fn has(set: &[String], s: &str) -> bool {
    set.iter().any(|x| x == s)
}

fn verb_matches(r: &PolicyRule, verb: &str) -> bool {
    r.verbs.iter().any(|v| v == VERB_ALL || v == verb)
}

fn group_matches(r: &PolicyRule, group: &str) -> bool {
    r.api_groups.iter().any(|g| g == GROUP_ALL || g == group)
}

/// `*` matches everything; `resource/sub` matches exactly; `*/sub` matches any resource's
/// subresource `sub` (upstream's `ResourceMatches`).
fn resource_matches(r: &PolicyRule, combined: &str, sub: &str) -> bool {
    r.resources.iter().any(|res| {
        res == RESOURCE_ALL
            || res == combined
            || (!sub.is_empty() && res.strip_prefix("*/").is_some_and(|s| s == sub))
    })
}

/// No names in the rule means every name (upstream's `ResourceNameMatches`).
fn name_matches(r: &PolicyRule, name: &str) -> bool {
    r.resource_names.is_empty() || has(&r.resource_names, name)
}

/// `*` matches every path, a trailing `*` a prefix (upstream's `NonResourceURLMatches`).
fn url_matches(r: &PolicyRule, path: &str) -> bool {
    r.non_resource_urls.iter().any(|u| {
        u == URL_ALL || u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
    })
}

/// Splits a rule into rules of one verb, group, resource (and name), or one verb and URL
/// (upstream's `BreakdownRule`), in upstream's order: group, resource, verb, name.
#[must_use]
pub fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    for group in &rule.api_groups {
        for resource in &rule.resources {
            for verb in &rule.verbs {
                let one = |names: Vec<String>| PolicyRule {
                    verbs: vec![verb.clone()],
                    api_groups: vec![group.clone()],
                    resources: vec![resource.clone()],
                    resource_names: names,
                    non_resource_urls: vec![],
                };
                if rule.resource_names.is_empty() {
                    out.push(one(vec![]));
                } else {
                    out.extend(rule.resource_names.iter().map(|n| one(vec![n.clone()])));
                }
            }
        }
    }
    for url in &rule.non_resource_urls {
        for verb in &rule.verbs {
            out.push(PolicyRule {
                verbs: vec![verb.clone()],
                non_resource_urls: vec![url.clone()],
                ..PolicyRule::default()
            });
        }
    }
    out
}

fn has_all(set: &[String], want: &[String]) -> bool {
    want.iter().all(|w| has(set, w))
}

fn resource_covers_all(set: &[String], covers: &[String]) -> bool {
    if has(set, RESOURCE_ALL) || has_all(set, covers) {
        return true;
    }
    covers.iter().all(|path| {
        has(set, path) || path.split_once('/').is_some_and(|(_, sub)| has(set, &format!("*/{sub}")))
    })
}

fn url_covers(owner: &str, sub: &str) -> bool {
    owner == sub || owner.strip_suffix('*').is_some_and(|p| sub.starts_with(p))
}

/// Whether `owner` grants everything `sub` does (upstream's `ruleCovers`).
fn rule_covers(owner: &PolicyRule, sub: &PolicyRule) -> bool {
    let verbs = has(&owner.verbs, VERB_ALL) || has_all(&owner.verbs, &sub.verbs);
    let groups = has(&owner.api_groups, GROUP_ALL) || has_all(&owner.api_groups, &sub.api_groups);
    let resources = resource_covers_all(&owner.resources, &sub.resources);
    let urls = sub
        .non_resource_urls
        .iter()
        .all(|p| owner.non_resource_urls.iter().any(|o| url_covers(o, p)));
    let names = if sub.resource_names.is_empty() {
        owner.resource_names.is_empty()
    } else {
        owner.resource_names.is_empty() || has_all(&owner.resource_names, &sub.resource_names)
    };
    verbs && groups && resources && names && urls
}

/// The parts of `servant` that no rule of `owner` covers (empty: `owner` covers all of it),
/// as upstream's `Covers`.
#[must_use]
pub fn uncovered(owner: &[PolicyRule], servant: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut missing = Vec::new();
    for rule in servant {
        for sub in breakdown(rule) {
            if !owner.iter().any(|o| rule_covers(o, &sub)) {
                missing.push(sub);
            }
        }
    }
    missing
}

/// Merges broken-down rules that differ only in their verb (upstream's `CompactRules`: simple
/// resource rules of one group and one resource, without names).
#[must_use]
pub fn compact(rules: Vec<PolicyRule>) -> Vec<PolicyRule> {
    let mut out: Vec<PolicyRule> = Vec::new();
    let mut simple: Vec<(String, String, usize)> = Vec::new();
    for r in rules {
        let is_simple = r.api_groups.len() == 1
            && r.resources.len() == 1
            && r.resource_names.is_empty()
            && r.non_resource_urls.is_empty();
        if is_simple {
            let (g, res) = (r.api_groups[0].clone(), r.resources[0].clone());
            if let Some((_, _, i)) = simple.iter().find(|(sg, sr, _)| *sg == g && *sr == res) {
                let existing = &mut out[*i];
                for v in r.verbs {
                    if !has(&existing.verbs, &v) {
                        existing.verbs.push(v);
                    }
                }
                continue;
            }
            simple.push((g, res, out.len()));
        }
        out.push(r);
    }
    out
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
#[must_use]
pub fn go_quoted(list: &[String]) -> String {
    let items: Vec<String> =
        list.iter().map(|s| serde_json::to_string(s).unwrap_or_default()).collect();
    format!("[{}]", items.join(" "))
}

/// Upstream's `CompactString`: `{APIGroups:[""], Resources:["pods"], Verbs:["get"]}`.
#[must_use]
pub fn compact_string(r: &PolicyRule) -> String {
    let mut parts = Vec::new();
    for (label, list) in [
        ("APIGroups", &r.api_groups),
        ("Resources", &r.resources),
        ("NonResourceURLs", &r.non_resource_urls),
        ("ResourceNames", &r.resource_names),
        ("Verbs", &r.verbs),
    ] {
        if !list.is_empty() {
            parts.push(format!("{label}:{}", go_quoted(list)));
        }
    }
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::UserInfo;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> PolicyRule {
        let v = |x: &[&str]| x.iter().map(|s| (*s).to_owned()).collect();
        PolicyRule {
            verbs: v(verbs),
            api_groups: v(groups),
            resources: v(resources),
            resource_names: v(names),
            non_resource_urls: vec![],
        }
    }

    fn url_rule(verbs: &[&str], urls: &[&str]) -> PolicyRule {
        let v = |x: &[&str]| x.iter().map(|s| (*s).to_owned()).collect();
        PolicyRule { verbs: v(verbs), non_resource_urls: v(urls), ..PolicyRule::default() }
    }

    fn res(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            user: UserInfo::default(),
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            ..Attributes::default()
        }
    }

    fn path(verb: &str, p: &str) -> Attributes {
        Attributes { verb: verb.into(), path: p.into(), ..Attributes::default() }
    }

    /// Upstream's `TestRuleMatches` (plugin/pkg/auth/authorizer/rbac/rbac_test.go), case by case.
    #[test]
    fn rules_match_as_upstreams_table() {
        type Case = (&'static str, PolicyRule, Vec<(Attributes, bool)>);
        let cases: Vec<Case> = vec![
            (
                "star verb, exact match other",
                rule(&["*"], &["group1"], &["resource1"], &[]),
                vec![
                    (res("get", "group1", "resource1", "", ""), true),
                    (res("get", "group2", "resource1", "", ""), false),
                    (res("get", "group1", "resource2", "", ""), false),
                    (res("get", "group1", "resource1", "sub", ""), false),
                    (res("update", "group1", "resource1", "", ""), true),
                ],
            ),
            (
                "star group, exact match other",
                rule(&["get"], &["*"], &["resource1"], &[]),
                vec![
                    (res("get", "group1", "resource1", "", ""), true),
                    (res("get", "group2", "resource1", "", ""), true),
                    (res("get", "group1", "resource2", "", ""), false),
                    (res("update", "group1", "resource1", "", ""), false),
                ],
            ),
            (
                "star resource, exact match other",
                rule(&["get"], &["group1"], &["*"], &[]),
                vec![
                    (res("get", "group1", "resource1", "", ""), true),
                    (res("get", "group1", "resource2", "", ""), true),
                    (res("get", "group1", "resource1", "sub", ""), true),
                    (res("get", "group2", "resource1", "", ""), false),
                ],
            ),
            (
                "tuple expansion",
                rule(&["get", "update"], &["group1", "group2"], &["resource1", "resource2"], &[]),
                vec![
                    (res("get", "group1", "resource1", "", ""), true),
                    (res("get", "group2", "resource2", "", ""), true),
                    (res("update", "group2", "resource1", "", ""), true),
                    (res("delete", "group1", "resource1", "", ""), false),
                    (res("get", "group3", "resource1", "", ""), false),
                ],
            ),
            (
                "subresource expansion",
                rule(&["*"], &["*"], &["resource1/subresource1"], &[]),
                vec![
                    (res("get", "group1", "resource1", "subresource1", ""), true),
                    (res("get", "group1", "resource1", "subresource2", ""), false),
                    (res("get", "group1", "resource1", "", ""), false),
                    (res("get", "group1", "resource2", "subresource1", ""), false),
                ],
            ),
            (
                "star subresource",
                rule(&["get"], &[""], &["*/status"], &[]),
                vec![
                    (res("get", "", "pods", "status", ""), true),
                    (res("get", "", "nodes", "status", ""), true),
                    (res("get", "", "pods", "log", ""), false),
                    (res("get", "", "pods", "", ""), false),
                ],
            ),
            (
                "resource names",
                rule(&["get"], &[""], &["configmaps"], &["a", "b"]),
                vec![
                    (res("get", "", "configmaps", "", "a"), true),
                    (res("get", "", "configmaps", "", "b"), true),
                    (res("get", "", "configmaps", "", "c"), false),
                    // A list names nothing, so a rule with names never allows it.
                    (res("list", "", "configmaps", "", ""), false),
                ],
            ),
            (
                "non-resource urls",
                url_rule(&["get"], &["/foo", "/bar/*"]),
                vec![
                    (path("get", "/foo"), true),
                    (path("get", "/foo/"), false),
                    (path("get", "/bar/baz"), true),
                    (path("get", "/bar/"), true),
                    (path("get", "/bar"), false),
                    (path("post", "/foo"), false),
                    (res("get", "", "foo", "", ""), false),
                ],
            ),
            (
                "star url",
                url_rule(&["*"], &["*"]),
                vec![(path("get", "/anything"), true), (path("put", "/"), true)],
            ),
        ];
        for (name, r, checks) in cases {
            for (a, want) in checks {
                assert_eq!(r.allows(&a), want, "{name}: {a:?}");
            }
        }
    }

    /// Upstream's `TestCoversExactMatch` and friends (pkg/registry/rbac/validation/
    /// policy_comparator_test.go).
    #[test]
    fn covering_follows_upstreams_comparator() {
        let covers = |owner: Vec<PolicyRule>, servant: Vec<PolicyRule>| {
            uncovered(&owner, &servant).is_empty()
        };
        let r = |v: &[&str], g: &[&str], res: &[&str]| rule(v, g, res, &[]);
        assert!(covers(
            vec![r(&["get"], &["v1"], &["builds"])],
            vec![r(&["get"], &["v1"], &["builds"])]
        ));
        assert!(!covers(
            vec![r(&["get"], &["v1"], &["builds"])],
            vec![r(&["get", "list"], &["v1"], &["builds"])]
        ));
        assert!(covers(
            vec![r(&["*"], &["*"], &["*"])],
            vec![r(&["get", "delete"], &["v1", "v2"], &["builds", "pods"])]
        ));
        assert!(covers(
            vec![r(&["get"], &["v1"], &["builds"]), r(&["list"], &["v1"], &["builds"])],
            vec![r(&["get", "list"], &["v1"], &["builds"])]
        ));
        // A star resource covers subresources; `*/scale` covers every resource's scale only.
        assert!(covers(vec![r(&["get"], &[""], &["*"])], vec![r(&["get"], &[""], &["pods/log"])]));
        assert!(covers(
            vec![r(&["get"], &[""], &["*/scale"])],
            vec![r(&["get"], &[""], &["deployments/scale"])]
        ));
        assert!(!covers(
            vec![r(&["get"], &[""], &["*/scale"])],
            vec![r(&["get"], &[""], &["deployments"])]
        ));
        assert!(!covers(
            vec![r(&["get"], &[""], &["pods"])],
            vec![r(&["get"], &[""], &["pods/log"])]
        ));
        // Names: an unnamed owner covers names; a named owner covers only its names and never
        // an unnamed servant.
        assert!(covers(
            vec![r(&["get"], &[""], &["pods"])],
            vec![rule(&["get"], &[""], &["pods"], &["a"])]
        ));
        assert!(covers(
            vec![rule(&["get"], &[""], &["pods"], &["a", "b"])],
            vec![rule(&["get"], &[""], &["pods"], &["a"])]
        ));
        assert!(!covers(
            vec![rule(&["get"], &[""], &["pods"], &["a"])],
            vec![r(&["get"], &[""], &["pods"])]
        ));
        // URLs, with prefix stars.
        assert!(covers(
            vec![url_rule(&["get"], &["/api/*"])],
            vec![url_rule(&["get"], &["/api/v1"])]
        ));
        assert!(covers(vec![url_rule(&["*"], &["*"])], vec![url_rule(&["get", "post"], &["/x"])]));
        assert!(!covers(vec![url_rule(&["get"], &["/api"])], vec![url_rule(&["get"], &["/apis"])]));
        assert!(!covers(vec![r(&["*"], &["*"], &["*"])], vec![url_rule(&["get"], &["/healthz"])]));
    }

    #[test]
    fn missing_rights_read_as_upstreams_message() {
        let owner = vec![rule(&["get"], &[""], &["pods"], &[])];
        let servant = vec![rule(&["get", "list"], &[""], &["secrets", "pods"], &[])];
        let missing: Vec<String> =
            compact(uncovered(&owner, &servant)).iter().map(compact_string).collect();
        assert_eq!(
            missing,
            vec![
                "{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\" \"list\"]}",
                "{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"list\"]}",
            ]
        );
        assert_eq!(
            compact_string(&url_rule(&["get"], &["/metrics"])),
            "{NonResourceURLs:[\"/metrics\"], Verbs:[\"get\"]}"
        );
    }
}
