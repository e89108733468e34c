//! The Knative Serving ConfigMaps Kinetic reads, with their names, keys and defaults:
//! `config-domain` and `config-network` (routing, knative/serving
//! `pkg/reconciler/route/config/domain.go` and knative/networking `pkg/config`),
//! `config-defaults` (`pkg/apis/config/defaults.go`, read by the webhook defaults) and the name
//! and keys of `config-autoscaler` (parsed by `kinetic-autoscale`).
//!
//! They live in the control plane's namespace (upstream's `knative-serving`).

use std::collections::BTreeMap;

use super::{VISIBILITY_CLUSTER_LOCAL, VISIBILITY_LABEL, VISIBILITY_LABEL_LEGACY};

/// The namespace upstream keeps these ConfigMaps in.
pub const SYSTEM_NAMESPACE: &str = "knative-serving";
/// The cluster's DNS domain (`network.GetClusterDomainName`).
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Why a ConfigMap was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The `config-domain` ConfigMap: each key is a domain, each value an optional label selector
/// (`selector:` then `key: value` lines) choosing the Routes that use it.
pub mod domain {
    /// The ConfigMap's name.
    pub const CONFIG_NAME: &str = "config-domain";
    /// The domain used when no key without a selector is configured (`DefaultDomain`); the
    /// template upstream ships only has an `_example` key, so this is the effective default.
    pub const DEFAULT_DOMAIN: &str = "svc.cluster.local";
    /// The key of the documentation block every Knative ConfigMap ships, ignored.
    pub const EXAMPLE_KEY: &str = "_example";
}

/// Parsed `config-domain`: domain → label selector (empty = matches every Route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// Each domain with the labels a Route must carry to use it.
    pub domains: BTreeMap<String, BTreeMap<String, String>>,
}

impl Default for Domain {
    /// The configuration of an empty ConfigMap: every Route under `svc.cluster.local`.
    fn default() -> Self {
        Self { domains: BTreeMap::from([(domain::DEFAULT_DOMAIN.to_owned(), BTreeMap::new())]) }
    }
}

impl Domain {
    /// Reads the data map (`NewDomainFromConfigMap`). A default domain (`svc.cluster.local`) is
    /// added when no key comes without a selector.
    ///
    /// # Errors
    ///
    /// A value that is neither empty nor a `selector:` map of `key: value` lines.
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut domains = BTreeMap::new();
        let mut has_default = false;
        for (k, v) in data {
            if k == domain::EXAMPLE_KEY {
                continue;
            }
            let selector = parse_selector(v).ok_or_else(|| {
                ConfigError(format!("failed to parse the selector of domain {k:?}: {v:?}"))
            })?;
            has_default |= selector.is_empty();
            domains.insert(k.clone(), selector);
        }
        if !has_default {
            domains.insert(domain::DEFAULT_DOMAIN.to_owned(), BTreeMap::new());
        }
        Ok(Self { domains })
    }

    /// The domain of a Route with these labels (`LookupDomainForLabels`): the cluster domain
    /// for `cluster-local` visibility, else the matching domain with the most specific selector
    /// (ties to the alphabetically first).
    pub fn lookup(&self, labels: &BTreeMap<String, String>) -> String {
        let local = |k: &str| labels.get(k).is_some_and(|v| v == VISIBILITY_CLUSTER_LOCAL);
        if local(VISIBILITY_LABEL) || local(VISIBILITY_LABEL_LEGACY) {
            return format!("svc.{CLUSTER_DOMAIN}");
        }
        let mut best: Option<(&str, usize)> = None;
        // BTreeMap order is alphabetical, so the first of equally specific matches wins.
        for (name, selector) in &self.domains {
            if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                continue;
            }
            if best.is_none_or(|(_, n)| selector.len() > n) {
                best = Some((name, selector.len()));
            }
        }
        best.map(|(name, _)| name.to_owned()).unwrap_or_default()
    }
}

/// Reads `""` or `selector:\n  key: value\n ...` (the shapes Knative documents). `None` for
/// anything else.
fn parse_selector(v: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut in_selector = false;
    for line in v.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if !line.starts_with([' ', '\t']) {
            match trimmed {
                "selector:" => in_selector = true,
                "selector: {}" => in_selector = false,
                _ => return None,
            }
            continue;
        }
        if !in_selector {
            return None;
        }
        let (k, val) = trimmed.split_once(':')?;
        let unquote = |s: &str| s.trim().trim_matches(|c| c == '"' || c == '\'').to_owned();
        out.insert(unquote(k), unquote(val));
    }
    Some(out)
}

/// The `config-network` ConfigMap (knative/networking `pkg/config`).
pub mod network {
    /// The ConfigMap's name.
    pub const CONFIG_NAME: &str = "config-network";
    /// Go template of a Route's host name.
    pub const DOMAIN_TEMPLATE_KEY: &str = "domain-template";
    /// Default of [`DOMAIN_TEMPLATE_KEY`].
    pub const DEFAULT_DOMAIN_TEMPLATE: &str = "{{.Name}}.{{.Namespace}}.{{.Domain}}";
    /// Go template of a tagged target's name (then put through the domain template).
    pub const TAG_TEMPLATE_KEY: &str = "tag-template";
    /// Default of [`TAG_TEMPLATE_KEY`].
    pub const DEFAULT_TAG_TEMPLATE: &str = "{{.Tag}}-{{.Name}}";
    /// The ingress implementation.
    pub const INGRESS_CLASS_KEY: &str = "ingress-class";
    /// Kinetic's own gateway as the ingress class.
    pub const DEFAULT_INGRESS_CLASS: &str = "gateway.kinetic.dev";
    /// Scheme of the URLs in status (`http` unless TLS is set up).
    pub const DEFAULT_EXTERNAL_SCHEME_KEY: &str = "default-external-scheme";
    /// Default of [`DEFAULT_EXTERNAL_SCHEME_KEY`].
    pub const DEFAULT_EXTERNAL_SCHEME: &str = "http";
    /// Seconds over which a Route shifts traffic to a new latest revision (0 = at once).
    pub const ROLLOUT_DURATION_KEY: &str = "rollout-duration";
    /// `Enabled` (default), `Redirected` or `Disabled` plain HTTP.
    pub const HTTP_PROTOCOL_KEY: &str = "http-protocol";
}

/// Parsed `config-network`, the keys Kinetic's gateway and route controller use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// [`network::DOMAIN_TEMPLATE_KEY`].
    pub domain_template: String,
    /// [`network::TAG_TEMPLATE_KEY`].
    pub tag_template: String,
    /// [`network::INGRESS_CLASS_KEY`].
    pub ingress_class: String,
    /// [`network::DEFAULT_EXTERNAL_SCHEME_KEY`].
    pub default_external_scheme: String,
    /// [`network::ROLLOUT_DURATION_KEY`], in seconds.
    pub rollout_duration_secs: u64,
    /// [`network::HTTP_PROTOCOL_KEY`].
    pub http_protocol: String,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            domain_template: network::DEFAULT_DOMAIN_TEMPLATE.to_owned(),
            tag_template: network::DEFAULT_TAG_TEMPLATE.to_owned(),
            ingress_class: network::DEFAULT_INGRESS_CLASS.to_owned(),
            default_external_scheme: network::DEFAULT_EXTERNAL_SCHEME.to_owned(),
            rollout_duration_secs: 0,
            http_protocol: "Enabled".to_owned(),
        }
    }
}

impl Network {
    /// Reads the data map over the defaults.
    ///
    /// # Errors
    ///
    /// A template that uses other fields than `.Name`, `.Namespace`, `.Domain` (and `.Tag` in
    /// the tag template) or renders to an empty host or one with a path, a rollout duration
    /// that is not a whole number of seconds, an unknown `http-protocol`.
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut n = Self::default();
        if let Some(t) = data.get(network::DOMAIN_TEMPLATE_KEY) {
            let host = render(t, &[("Name", "foo"), ("Namespace", "bar"), ("Domain", "baz.com")])
                .ok_or_else(|| ConfigError(format!("invalid domain-template {t:?}")))?;
            if host.is_empty() || host.contains('/') {
                return Err(ConfigError(format!(
                    "invalid domain-template {t:?}: {host:?} is not a host name"
                )));
            }
            t.clone_into(&mut n.domain_template);
        }
        if let Some(t) = data.get(network::TAG_TEMPLATE_KEY) {
            render(t, &[("Tag", "foo"), ("Name", "bar")])
                .ok_or_else(|| ConfigError(format!("invalid tag-template {t:?}")))?;
            t.clone_into(&mut n.tag_template);
        }
        if let Some(v) = data.get(network::INGRESS_CLASS_KEY) {
            v.clone_into(&mut n.ingress_class);
        }
        if let Some(v) = data.get(network::DEFAULT_EXTERNAL_SCHEME_KEY) {
            v.clone_into(&mut n.default_external_scheme);
        }
        if let Some(v) = data.get(network::ROLLOUT_DURATION_KEY) {
            n.rollout_duration_secs = v.parse().map_err(|_| {
                ConfigError(format!(
                    "rollout-duration = {v:?}, must be a non-negative number of seconds"
                ))
            })?;
        }
        if let Some(v) = data.get(network::HTTP_PROTOCOL_KEY) {
            if !["Enabled", "Redirected", "Disabled"].iter().any(|p| p.eq_ignore_ascii_case(v)) {
                return Err(ConfigError(format!(
                    "http-protocol {v} in config-network ConfigMap is not supported"
                )));
            }
            v.clone_into(&mut n.http_protocol);
        }
        Ok(n)
    }

    /// A Route's host: the domain template over its name, namespace and domain
    /// (`hello.default.example.com` by default).
    pub fn host(&self, name: &str, namespace: &str, domain: &str) -> String {
        render(
            &self.domain_template,
            &[("Name", name), ("Namespace", namespace), ("Domain", domain)],
        )
        .unwrap_or_else(|| format!("{name}.{namespace}.{domain}"))
    }

    /// A tagged target's host: the tag template's name through the domain template
    /// (`canary-hello.default.example.com` by default).
    pub fn tag_host(&self, tag: &str, name: &str, namespace: &str, domain: &str) -> String {
        let tagged = render(&self.tag_template, &[("Tag", tag), ("Name", name)])
            .unwrap_or_else(|| format!("{tag}-{name}"));
        self.host(&tagged, namespace, domain)
    }

    /// `{scheme}://{host}`, with the configured external scheme.
    pub fn url(&self, host: &str) -> String {
        format!("{}://{host}", self.default_external_scheme)
    }
}

/// Renders a Go template that only uses `{{.Field}}` placeholders; `None` when it uses
/// anything else or is malformed.
fn render(template: &str, fields: &[(&str, &str)]) -> Option<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}")?;
        let field = after[..end].trim().strip_prefix('.')?;
        let (_, value) = fields.iter().find(|(k, _)| *k == field)?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    if rest.contains("}}") {
        return None;
    }
    out.push_str(rest);
    Some(out)
}

/// The `config-defaults` ConfigMap (`pkg/apis/config/defaults.go`): what the webhook fills in.
pub mod defaults {
    /// The ConfigMap's name.
    pub const CONFIG_NAME: &str = "config-defaults";
    /// Default `timeoutSeconds`.
    pub const REVISION_TIMEOUT_SECONDS_KEY: &str = "revision-timeout-seconds";
    /// Upper bound of `timeoutSeconds`.
    pub const MAX_REVISION_TIMEOUT_SECONDS_KEY: &str = "max-revision-timeout-seconds";
    /// Default `responseStartTimeoutSeconds` (0 = none).
    pub const REVISION_RESPONSE_START_TIMEOUT_SECONDS_KEY: &str =
        "revision-response-start-timeout-seconds";
    /// Default `idleTimeoutSeconds` (0 = none).
    pub const REVISION_IDLE_TIMEOUT_SECONDS_KEY: &str = "revision-idle-timeout-seconds";
    /// Default `containerConcurrency`.
    pub const CONTAINER_CONCURRENCY_KEY: &str = "container-concurrency";
    /// Upper bound of `containerConcurrency`.
    pub const CONTAINER_CONCURRENCY_MAX_LIMIT_KEY: &str = "container-concurrency-max-limit";
    /// Name given to an unnamed container.
    pub const CONTAINER_NAME_TEMPLATE_KEY: &str = "container-name-template";
    /// Name given to an unnamed init container.
    pub const INIT_CONTAINER_NAME_TEMPLATE_KEY: &str = "init-container-name-template";
    /// Default `enableServiceLinks` (`false` upstream).
    pub const ENABLE_SERVICE_LINKS_KEY: &str = "enable-service-links";
    /// Default of [`CONTAINER_NAME_TEMPLATE_KEY`].
    pub const DEFAULT_CONTAINER_NAME: &str = "user-container";
    /// Default of [`INIT_CONTAINER_NAME_TEMPLATE_KEY`].
    pub const DEFAULT_INIT_CONTAINER_NAME: &str = "init-container";
}

/// Parsed `config-defaults`, with Knative's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// [`defaults::REVISION_TIMEOUT_SECONDS_KEY`] (300).
    pub revision_timeout_seconds: i64,
    /// [`defaults::MAX_REVISION_TIMEOUT_SECONDS_KEY`] (600).
    pub max_revision_timeout_seconds: i64,
    /// [`defaults::REVISION_RESPONSE_START_TIMEOUT_SECONDS_KEY`] (0).
    pub revision_response_start_timeout_seconds: i64,
    /// [`defaults::REVISION_IDLE_TIMEOUT_SECONDS_KEY`] (0).
    pub revision_idle_timeout_seconds: i64,
    /// [`defaults::CONTAINER_CONCURRENCY_KEY`] (0).
    pub container_concurrency: i64,
    /// [`defaults::CONTAINER_CONCURRENCY_MAX_LIMIT_KEY`] (1000).
    pub container_concurrency_max_limit: i64,
    /// [`defaults::CONTAINER_NAME_TEMPLATE_KEY`] (`user-container`).
    pub user_container_name: String,
    /// [`defaults::INIT_CONTAINER_NAME_TEMPLATE_KEY`] (`init-container`).
    pub init_container_name: String,
    /// [`defaults::ENABLE_SERVICE_LINKS_KEY`] (false).
    pub enable_service_links: Option<bool>,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            revision_timeout_seconds: 300,
            max_revision_timeout_seconds: 600,
            revision_response_start_timeout_seconds: 0,
            revision_idle_timeout_seconds: 0,
            container_concurrency: 0,
            container_concurrency_max_limit: 1000,
            user_container_name: defaults::DEFAULT_CONTAINER_NAME.to_owned(),
            init_container_name: defaults::DEFAULT_INIT_CONTAINER_NAME.to_owned(),
            enable_service_links: Some(false),
        }
    }
}

impl Defaults {
    /// Reads the data map over the defaults (`NewDefaultsConfigFromMap`).
    ///
    /// # Errors
    ///
    /// A value that is not an integer, a default timeout above the maximum, a concurrency
    /// limit below 1 or a default concurrency outside `0 ..= limit`; Knative's messages.
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut d = Self::default();
        let int = |key: &str, target: &mut i64| -> Result<(), ConfigError> {
            if let Some(v) = data.get(key) {
                *target = v.parse().map_err(|_| {
                    ConfigError(format!(
                        "failed to parse data: failed to parse {key:?}: strconv.ParseInt: parsing {v:?}: invalid syntax"
                    ))
                })?;
            }
            Ok(())
        };
        int(defaults::REVISION_TIMEOUT_SECONDS_KEY, &mut d.revision_timeout_seconds)?;
        int(defaults::MAX_REVISION_TIMEOUT_SECONDS_KEY, &mut d.max_revision_timeout_seconds)?;
        int(
            defaults::REVISION_RESPONSE_START_TIMEOUT_SECONDS_KEY,
            &mut d.revision_response_start_timeout_seconds,
        )?;
        int(defaults::REVISION_IDLE_TIMEOUT_SECONDS_KEY, &mut d.revision_idle_timeout_seconds)?;
        int(defaults::CONTAINER_CONCURRENCY_KEY, &mut d.container_concurrency)?;
        int(defaults::CONTAINER_CONCURRENCY_MAX_LIMIT_KEY, &mut d.container_concurrency_max_limit)?;
        if let Some(v) = data.get(defaults::CONTAINER_NAME_TEMPLATE_KEY) {
            v.clone_into(&mut d.user_container_name);
        }
        if let Some(v) = data.get(defaults::INIT_CONTAINER_NAME_TEMPLATE_KEY) {
            v.clone_into(&mut d.init_container_name);
        }
        if let Some(v) = data.get(defaults::ENABLE_SERVICE_LINKS_KEY) {
            d.enable_service_links = match v.as_str() {
                "true" => Some(true),
                "false" => Some(false),
                // Upstream: "default" leaves the field unset (Kubernetes' own default).
                _ => None,
            };
        }
        if d.revision_timeout_seconds > d.max_revision_timeout_seconds {
            return Err(ConfigError(format!(
                "revision-timeout-seconds ({}) cannot be greater than max-revision-timeout-seconds ({})",
                d.revision_timeout_seconds, d.max_revision_timeout_seconds
            )));
        }
        if d.container_concurrency_max_limit < 1 {
            return Err(ConfigError(format!(
                "expected 1 <= {} <= 2147483647: container-concurrency-max-limit",
                d.container_concurrency_max_limit
            )));
        }
        if d.container_concurrency < 0
            || d.container_concurrency > d.container_concurrency_max_limit
        {
            return Err(ConfigError(format!(
                "expected 0 <= {} <= {}: container-concurrency",
                d.container_concurrency, d.container_concurrency_max_limit
            )));
        }
        Ok(d)
    }
}

/// The `config-autoscaler` ConfigMap's name and keys; `kinetic-autoscale` parses it.
pub mod autoscaler {
    /// The ConfigMap's name.
    pub const CONFIG_NAME: &str = "config-autoscaler";
    /// Every key Knative reads from it.
    pub const KEYS: [&str; 21] = [
        "container-concurrency-target-default",
        "container-concurrency-target-percentage",
        "requests-per-second-target-default",
        "target-burst-capacity",
        "stable-window",
        "panic-window-percentage",
        "panic-threshold-percentage",
        "max-scale-up-rate",
        "max-scale-down-rate",
        "enable-scale-to-zero",
        "scale-to-zero-grace-period",
        "scale-to-zero-pod-retention-period",
        "pod-autoscaler-class",
        "activator-capacity",
        "initial-scale",
        "allow-zero-initial-scale",
        "min-scale",
        "max-scale",
        "max-scale-limit",
        "scale-down-delay",
        "tick-interval",
    ];
}
