//! Knative Serving's admission webhook as pure functions: the defaults it fills in
//! (`pkg/apis/serving/v1/*_defaults.go`) and the validation it runs
//! (`pkg/apis/serving/v1/*_validation.go`, `pkg/apis/serving/k8s_validation.go`), with
//! knative.dev/pkg's `apis.FieldError` messages so `Invalid` answers read as Knative's.
//!
//! Paths in the errors are relative to the object (`spec.template.spec.containerConcurrency`),
//! ready to become the causes of a Kubernetes `Status`. The per-revision autoscaling
//! annotations are validated by `kinetic-autoscale` (they need `config-autoscaler`).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Container, Probe, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::Defaults;
use super::configuration::{Configuration, ConfigurationSpec};
use super::env;
use super::revision::{Revision, RevisionSpec, RevisionTemplateSpec};
use super::route::{Route, RouteSpec};
use super::service::Service;
use super::{CREATOR_ANNOTATION, LAST_MODIFIER_ANNOTATION, TrafficTarget};

/// The port a user container listens on when it declares none (`DefaultUserPort`).
pub const DEFAULT_USER_PORT: i32 = 8080;
/// Port names Knative accepts: empty, `h2c` (HTTP/2 without TLS) or `http1`.
pub const PORT_NAMES: [&str; 3] = ["", "h2c", "http1"];
/// Ports the queue-proxy and the activator use upstream; a user container may not take them
/// (`reservedPorts`).
pub const RESERVED_PORTS: [i32; 6] = [8012, 8013, 8022, 8008, 9090, 9091];
/// Variables the runtime sets; a container may not set them (`reservedEnvVars`).
pub const RESERVED_ENV_VARS: [&str; 4] =
    [env::PORT, env::K_SERVICE, env::K_CONFIGURATION, env::K_REVISION];

/// One validation failure (knative.dev/pkg's `apis.FieldError`): a message, the fields it is
/// about, optional details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// What is wrong.
    pub message: String,
    /// The fields, from the object's root once the error left its function.
    pub paths: Vec<String>,
    /// More explanation (Kubernetes' validation messages, a diff).
    pub details: String,
}

impl FieldError {
    fn new(message: impl Into<String>, paths: &[&str]) -> Self {
        Self {
            message: message.into(),
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            details: String::new(),
        }
    }

    /// `apis.ErrMissingField`.
    pub fn missing_field(paths: &[&str]) -> Self {
        Self::new("missing field(s)", paths)
    }

    /// `apis.ErrDisallowedFields`.
    pub fn disallowed_fields(paths: &[&str]) -> Self {
        Self::new("must not set the field(s)", paths)
    }

    /// `apis.ErrMultipleOneOf`.
    pub fn multiple_one_of(paths: &[&str]) -> Self {
        Self::new("expected exactly one, got both", paths)
    }

    /// `apis.ErrMissingOneOf`.
    pub fn missing_one_of(paths: &[&str]) -> Self {
        Self::new("expected exactly one, got neither", paths)
    }

    /// `apis.ErrInvalidValue`.
    pub fn invalid_value(value: impl fmt::Display, path: &str) -> Self {
        Self::new(format!("invalid value: {value}"), &[path])
    }

    /// `apis.ErrOutOfBoundsValue`.
    pub fn out_of_bounds(value: i64, lo: i64, hi: i64, path: &str) -> Self {
        Self::new(format!("expected {lo} <= {value} <= {hi}"), &[path])
    }

    /// `apis.ErrInvalidKeyName`.
    pub fn invalid_key_name(value: &str, path: &str, details: &str) -> Self {
        Self {
            details: details.to_owned(),
            ..Self::new(format!("invalid key name {value:?}"), &[path])
        }
    }

    /// The same error with details.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The error under a parent field (`ViaField`).
    pub fn via(mut self, field: &str) -> Self {
        for p in &mut self.paths {
            *p = if p.is_empty() {
                field.to_owned()
            } else if p.starts_with('[') {
                format!("{field}{p}")
            } else {
                format!("{field}.{p}")
            };
        }
        self
    }

    /// The error under an element of a list field (`ViaFieldIndex`).
    pub fn via_index(self, field: &str, index: usize) -> Self {
        self.via(&format!("{field}[{index}]"))
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.message, self.paths.join(", "))?;
        if !self.details.is_empty() {
            write!(f, "\n{}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldError {}

/// Formats errors as knative.dev/pkg does for a webhook denial: errors with the same message
/// and details merged (their paths sorted and joined), sorted by message, one per line.
pub fn format_errors(errs: &[FieldError]) -> String {
    let mut merged: Vec<FieldError> = Vec::new();
    for e in errs {
        match merged.iter_mut().find(|m| m.message == e.message && m.details == e.details) {
            Some(m) => {
                for p in &e.paths {
                    if !m.paths.contains(p) {
                        m.paths.push(p.clone());
                    }
                }
            }
            None => merged.push(e.clone()),
        }
    }
    for m in &mut merged {
        m.paths.sort();
    }
    merged.sort_by(|a, b| a.message.cmp(&b.message));
    merged.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

fn via_all(errs: Vec<FieldError>, field: &str) -> impl Iterator<Item = FieldError> + use<'_> {
    errs.into_iter().map(move |e| e.via(field))
}

// ----------------------------------------------------------------------------------------
// Names and ports.

/// The name of the `generation`-th Revision of a Configuration: `{configuration}-00001`
/// (`kmeta.ChildName(config, fmt.Sprintf("-%05d", generation))`). Upstream shortens names
/// longer than 63 characters with an MD5 of the parent; Kinetic refuses such Configuration
/// names instead (see [`validate_configuration`]), so this is the plain concatenation.
pub fn revision_name(configuration: &str, generation: i64) -> String {
    format!("{configuration}-{generation:05}")
}

/// The container that serves requests: the only one, or the one that declares a port.
pub fn serving_container(spec: &RevisionSpec) -> Option<&Container> {
    match spec.containers.as_slice() {
        [only] => Some(only),
        many => many.iter().find(|c| c.ports.as_ref().is_some_and(|p| !p.is_empty())),
    }
}

/// The port the serving container listens on: its declared port, else 8080. The pods get it as
/// `PORT` and the default readiness probe checks it.
pub fn user_port(container: &Container) -> i32 {
    container
        .ports
        .as_deref()
        .and_then(|p| p.first())
        .map_or(DEFAULT_USER_PORT, |p| p.container_port)
}

/// The readiness probe of the serving container in the pod: the revision's probe with an
/// unset (0) TCP or HTTP port pointed at the user port. Upstream's queue-proxy probes on the
/// container's behalf; Kinetic's node agent probes the container directly.
pub fn pod_readiness_probe(container: &Container) -> Option<Probe> {
    let mut probe = container.readiness_probe.clone()?;
    let port = IntOrString::Int(user_port(container));
    if let Some(tcp) = &mut probe.tcp_socket
        && tcp.port == IntOrString::Int(0)
    {
        tcp.port = port.clone();
    }
    if let Some(http) = &mut probe.http_get
        && http.port == IntOrString::Int(0)
    {
        http.port = port;
    }
    Some(probe)
}

/// A DNS-1123 label: at most 63 lowercase alphanumerics or `-`, starting and ending with an
/// alphanumeric.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A DNS-1035 label: a DNS-1123 label that starts with a letter.
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

const DNS1123_LABEL_DETAILS: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_LABEL_DETAILS: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_DETAILS: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

/// Kubernetes' `IsQualifiedName` for names without a prefix.
fn is_qualified_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

// ----------------------------------------------------------------------------------------
// Defaults.

/// `RevisionSpec.SetDefaults`: timeouts and concurrency from `config-defaults`, container
/// names (`user-container`, numbered when several), the default TCP readiness probe of the
/// serving container, probe thresholds, `enableServiceLinks` on create, read-only mounts of
/// volumes other than emptyDir and PVCs.
pub fn set_revision_spec_defaults(spec: &mut RevisionSpec, d: &Defaults, is_create: bool) {
    if spec.timeout_seconds.is_none_or(|t| t == 0) {
        spec.timeout_seconds = Some(d.revision_timeout_seconds);
    }
    let timeout = spec.timeout_seconds.unwrap_or(d.revision_timeout_seconds);
    if spec.idle_timeout_seconds.is_none_or(|t| t == 0)
        && d.revision_idle_timeout_seconds != 0
        && d.revision_idle_timeout_seconds <= timeout
    {
        spec.idle_timeout_seconds = Some(d.revision_idle_timeout_seconds);
    }
    if spec.response_start_timeout_seconds.is_none_or(|t| t == 0)
        && d.revision_response_start_timeout_seconds != 0
        && d.revision_response_start_timeout_seconds <= timeout
    {
        spec.response_start_timeout_seconds = Some(d.revision_response_start_timeout_seconds);
    }
    if spec.container_concurrency.is_none() {
        spec.container_concurrency = Some(d.container_concurrency);
    }

    let mut names: Vec<String> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(|c| c.name.clone())
        .collect();
    default_container_names(&mut spec.containers, &mut names, &d.user_container_name);
    if let Some(init) = &mut spec.init_containers {
        default_container_names(init, &mut names, &d.init_container_name);
    }

    let single = spec.containers.len() == 1;
    let writable: Vec<String> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.empty_dir.is_some() || v.persistent_volume_claim.is_some())
        .map(|v| v.name.clone())
        .collect();
    for c in &mut spec.containers {
        // The serving container (the only one, or the one with a port) gets a TCP probe when
        // it has none; sidecars keep none.
        if single || c.ports.as_ref().is_some_and(|p| !p.is_empty()) {
            let probe = c.readiness_probe.get_or_insert_with(Probe::default);
            if probe.tcp_socket.is_none()
                && probe.http_get.is_none()
                && probe.exec.is_none()
                && probe.grpc.is_none()
            {
                probe.tcp_socket = Some(TCPSocketAction::default());
            }
        }
        if let Some(probe) = &mut c.readiness_probe {
            if probe.success_threshold.is_none_or(|t| t == 0) {
                probe.success_threshold = Some(1);
            }
            if probe.period_seconds.is_some_and(|p| p != 0) {
                if probe.failure_threshold.is_none_or(|t| t == 0) {
                    probe.failure_threshold = Some(3);
                }
                if probe.timeout_seconds.is_none_or(|t| t == 0) {
                    probe.timeout_seconds = Some(1);
                }
            }
        }
        for m in c.volume_mounts.iter_mut().flatten() {
            if !writable.contains(&m.name) {
                m.read_only = Some(true);
            }
        }
    }
    if spec.enable_service_links.is_none() && is_create {
        spec.enable_service_links = d.enable_service_links;
    }
}

/// `applyDefaultContainerNames`: unnamed containers get the template name, numbered
/// (`user-container-0`, ...) when there are several or the name is taken.
fn default_container_names(containers: &mut [Container], taken: &mut Vec<String>, base: &str) {
    let several = containers.len() > 1;
    let mut next = 0;
    for c in containers.iter_mut().filter(|c| c.name.is_empty()) {
        let mut name = base.to_owned();
        if several || taken.contains(&name) {
            loop {
                name = format!("{base}-{next}");
                next += 1;
                if !taken.contains(&name) {
                    break;
                }
            }
        }
        taken.push(name.clone());
        c.name = name;
    }
}

/// `RouteSpec.SetDefaults` and `TrafficTarget.SetDefaults`. A Service's inline route
/// (`default_configuration`) with no traffic sends 100 % to its latest revision; every target
/// gets `latestRevision` (true unless it names a revision) and `percent` (0).
pub fn set_traffic_defaults(traffic: &mut Option<Vec<TrafficTarget>>, default_configuration: bool) {
    if traffic.as_ref().is_none_or(Vec::is_empty) && default_configuration {
        *traffic = Some(vec![TrafficTarget {
            percent: Some(100),
            latest_revision: Some(true),
            ..TrafficTarget::default()
        }]);
    }
    for t in traffic.iter_mut().flatten() {
        if t.latest_revision.is_none() {
            t.latest_revision = Some(t.revision_name.as_deref().unwrap_or("").is_empty());
        }
        if t.percent.is_none() {
            t.percent = Some(0);
        }
    }
}

/// `serving.SetUserInfo`: on create both the creator and last-modifier annotations name the
/// requesting user; on update (`spec_changed` is `Some`) the last modifier changes only when
/// the spec did.
pub fn set_user_info(meta: &mut ObjectMeta, user: &str, spec_changed: Option<bool>) {
    if spec_changed == Some(false) {
        return;
    }
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    if spec_changed.is_none() {
        annotations.insert(CREATOR_ANNOTATION.to_owned(), user.to_owned());
    }
    annotations.insert(LAST_MODIFIER_ANNOTATION.to_owned(), user.to_owned());
}

/// `Service.SetDefaults`: the template's and the inline route's defaults, and the user
/// annotations when the request's user is known (`old` is the stored object on update).
pub fn set_service_defaults(
    svc: &mut Service,
    d: &Defaults,
    user: Option<&str>,
    old: Option<&Service>,
) {
    set_revision_spec_defaults(&mut svc.spec.template.spec, d, old.is_none());
    set_traffic_defaults(&mut svc.spec.traffic, true);
    if let Some(user) = user {
        set_user_info(&mut svc.metadata, user, old.map(|o| o.spec != svc.spec));
    }
}

/// `Configuration.SetDefaults`.
pub fn set_configuration_defaults(
    cfg: &mut Configuration,
    d: &Defaults,
    user: Option<&str>,
    old: Option<&Configuration>,
) {
    set_revision_spec_defaults(&mut cfg.spec.template.spec, d, old.is_none());
    if let Some(user) = user {
        set_user_info(&mut cfg.metadata, user, old.map(|o| o.spec != cfg.spec));
    }
}

/// `Route.SetDefaults` (a Route alone gets no default traffic).
pub fn set_route_defaults(route: &mut Route, user: Option<&str>, old: Option<&Route>) {
    set_traffic_defaults(&mut route.spec.traffic, false);
    if let Some(user) = user {
        set_user_info(&mut route.metadata, user, old.map(|o| o.spec != route.spec));
    }
}

/// `Revision.SetDefaults`.
pub fn set_revision_defaults(rev: &mut Revision, d: &Defaults, is_create: bool) {
    set_revision_spec_defaults(&mut rev.spec, d, is_create);
}

// ----------------------------------------------------------------------------------------
// Validation.

/// `RevisionSpec.Validate` (paths relative to the spec): at least one container, exactly one
/// serving container with at most one port, containers' images, names, environment and
/// ports, `containerConcurrency` in `0 ..= limit`, `timeoutSeconds` in `0 ..= max`, the other
/// timeouts within it.
pub fn validate_revision_spec(spec: &RevisionSpec, d: &Defaults) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if spec.containers.is_empty() {
        errs.push(FieldError::missing_field(&["containers"]));
    }
    let with_ports =
        spec.containers.iter().filter(|c| c.ports.as_ref().is_some_and(|p| !p.is_empty())).count();
    if spec.containers.len() > 1 && with_ports != 1 {
        if with_ports == 0 {
            errs.push(
                FieldError::missing_field(&["containers"])
                    .with_details("exactly one container must specify a port (the serving container) when there are several"),
            );
        } else {
            errs.push(
                FieldError::new("more than one container port is set", &["containers"])
                    .with_details("Only a single port is allowed across all containers"),
            );
        }
    }
    let mut seen = Vec::new();
    for (i, c) in spec.containers.iter().enumerate() {
        errs.extend(
            validate_container(c, &mut seen).into_iter().map(|e| e.via_index("containers", i)),
        );
    }
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        errs.extend(
            validate_container(c, &mut seen).into_iter().map(|e| e.via_index("initContainers", i)),
        );
    }
    if let Some(cc) = spec.container_concurrency
        && !(0..=d.container_concurrency_max_limit).contains(&cc)
    {
        errs.push(FieldError::out_of_bounds(
            cc,
            0,
            d.container_concurrency_max_limit,
            "containerConcurrency",
        ));
    }
    let max = d.max_revision_timeout_seconds;
    if let Some(t) = spec.timeout_seconds
        && !(0..=max).contains(&t)
    {
        errs.push(FieldError::out_of_bounds(t, 0, max, "timeoutSeconds"));
    }
    let timeout = spec.timeout_seconds.unwrap_or(d.revision_timeout_seconds);
    if let Some(t) = spec.response_start_timeout_seconds
        && !(0..=timeout).contains(&t)
    {
        errs.push(FieldError::out_of_bounds(t, 0, timeout, "responseStartTimeoutSeconds"));
    }
    if let Some(t) = spec.idle_timeout_seconds
        && !(0..=max).contains(&t)
    {
        errs.push(FieldError::out_of_bounds(t, 0, max, "idleTimeoutSeconds"));
    }
    errs
}

fn validate_container(c: &Container, seen: &mut Vec<String>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if c.image.as_deref().is_none_or(str::is_empty) {
        errs.push(FieldError::missing_field(&["image"]));
    }
    if !c.name.is_empty() {
        if !is_dns1123_label(&c.name) {
            errs.push(
                FieldError::invalid_value(&c.name, "name").with_details(DNS1123_LABEL_DETAILS),
            );
        } else if seen.contains(&c.name) {
            errs.push(FieldError::new(format!("duplicate container name {:?}", c.name), &["name"]));
        }
        seen.push(c.name.clone());
    }
    for (j, e) in c.env.iter().flatten().enumerate() {
        if e.name.is_empty() {
            errs.push(FieldError::missing_field(&["name"]).via_index("env", j));
        } else if RESERVED_ENV_VARS.contains(&e.name.as_str()) {
            errs.push(
                FieldError::new(
                    format!("{:?} is a reserved environment variable", e.name),
                    &["name"],
                )
                .via_index("env", j),
            );
        }
    }
    let ports = c.ports.as_deref().unwrap_or_default();
    if ports.len() > 1 {
        errs.push(
            FieldError::new("more than one container port is set", &["ports"])
                .with_details("Only a single port is allowed across all containers"),
        );
    }
    if let Some(p) = ports.first() {
        let mut perrs = Vec::new();
        if p.protocol.as_deref().is_some_and(|proto| !proto.is_empty() && proto != "TCP") {
            perrs.push(FieldError::invalid_value(
                p.protocol.as_deref().unwrap_or_default(),
                "protocol",
            ));
        }
        if p.host_ip.as_deref().is_some_and(|h| !h.is_empty()) {
            perrs.push(FieldError::disallowed_fields(&["hostIP"]));
        }
        if p.host_port.is_some_and(|h| h != 0) {
            perrs.push(FieldError::disallowed_fields(&["hostPort"]));
        }
        if !(0..=65535).contains(&p.container_port) {
            perrs.push(FieldError::out_of_bounds(
                i64::from(p.container_port),
                0,
                65535,
                "containerPort",
            ));
        }
        if RESERVED_PORTS.contains(&p.container_port) {
            perrs.push(FieldError::new(
                format!("port {} is reserved", p.container_port),
                &["containerPort"],
            ));
        }
        let name = p.name.as_deref().unwrap_or("");
        if !PORT_NAMES.contains(&name) {
            perrs.push(
                FieldError::new(format!("Port name {name} is not allowed"), &[""])
                    .with_details("Name must be empty, or one of: 'h2c', 'http1'"),
            );
        }
        errs.extend(perrs.into_iter().map(|e| e.via_index("ports", 0)));
    }
    errs
}

/// The template's name: a DNS-1035 label starting with `{parent}-` (`validateRevisionName`,
/// "bring your own revision name").
pub fn validate_template_name(template: &RevisionTemplateSpec, parent: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(g) = template.metadata.generate_name.as_deref().filter(|g| !g.is_empty()) {
        let trimmed = g.trim_end_matches('-');
        if !trimmed.is_empty() && !is_dns1035_label(trimmed) {
            errs.push(
                FieldError::invalid_value("not a DNS 1035 label prefix", "metadata.generateName")
                    .with_details(DNS1035_LABEL_DETAILS),
            );
        }
    }
    if let Some(name) = template.metadata.name.as_deref().filter(|n| !n.is_empty()) {
        let prefix = format!("{parent}-");
        if !is_dns1035_label(name) {
            errs.push(
                FieldError::invalid_value("not a DNS 1035 label", "metadata.name")
                    .with_details(DNS1035_LABEL_DETAILS),
            );
        } else if !parent.is_empty() && !name.starts_with(&prefix) {
            errs.push(FieldError::invalid_value(
                format!("{name:?} must have prefix {prefix:?}"),
                "metadata.name",
            ));
        }
    }
    errs
}

/// Where a traffic list is validated: a Route's spec, a Service's inline route (its targets
/// may not name a configuration), or a status (every target names a revision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrafficContext {
    /// `Route.spec.traffic`.
    RouteSpec,
    /// `Service.spec.traffic`: the configuration is the Service's own.
    ServiceSpec,
    /// `status.traffic`.
    Status,
}

/// `RouteSpec.Validate` over a traffic list (paths relative to the owner of `traffic`): each
/// target (`latestRevision` agreeing with `revisionName`, one of revision or configuration,
/// valid names, percent in `0 ..= 100`, tags as DNS labels, `url` only in status and only
/// with a tag), no duplicate tags, and percents summing to 100.
pub fn validate_traffic(traffic: &[TrafficTarget], ctx: TrafficContext) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut tags: BTreeMap<&str, usize> = BTreeMap::new();
    let mut sum: i64 = 0;
    for (i, t) in traffic.iter().enumerate() {
        errs.extend(validate_target(t, ctx).into_iter().map(|e| e.via_index("traffic", i)));
        sum += t.percent.unwrap_or(0);
        let Some(tag) = t.tag.as_deref().filter(|t| !t.is_empty()) else { continue };
        match tags.get(tag) {
            Some(&first) => errs.push(FieldError::multiple_one_of(&[
                &format!("traffic[{first}].tag"),
                &format!("traffic[{i}].tag"),
            ])),
            None => {
                tags.insert(tag, i);
            }
        }
    }
    if sum != 100 {
        errs.push(FieldError::new(format!("Traffic targets sum to {sum}, want 100"), &["traffic"]));
    }
    errs
}

fn validate_target(t: &TrafficTarget, ctx: TrafficContext) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let revision = t.revision_name.as_deref().unwrap_or("");
    let configuration = t.configuration_name.as_deref().unwrap_or("");
    let tag = t.tag.as_deref().unwrap_or("");
    if let Some(latest) = t.latest_revision {
        let pinned = !revision.is_empty();
        if pinned == latest {
            errs.push(FieldError::new(
                format!("may not set revisionName {revision:?} when latestRevision is {latest}"),
                &["latestRevision"],
            ));
        }
    }
    let default_configuration = ctx == TrafficContext::ServiceSpec;
    if default_configuration && !configuration.is_empty() {
        errs.push(FieldError::disallowed_fields(&["configurationName"]));
    } else if !revision.is_empty() && !configuration.is_empty() {
        errs.push(FieldError::multiple_one_of(&["revisionName", "configurationName"]));
    } else if !revision.is_empty() {
        if !is_qualified_name(revision) {
            errs.push(FieldError::invalid_key_name(
                revision,
                "revisionName",
                QUALIFIED_NAME_DETAILS,
            ));
        }
    } else if ctx == TrafficContext::Status {
        errs.push(FieldError::missing_field(&["revisionName"]));
    } else if !configuration.is_empty() {
        if !is_qualified_name(configuration) {
            errs.push(FieldError::invalid_key_name(
                configuration,
                "configurationName",
                QUALIFIED_NAME_DETAILS,
            ));
        }
    } else if !default_configuration {
        errs.push(FieldError::missing_one_of(&["revisionName", "configurationName"]));
    }
    if let Some(p) = t.percent
        && !(0..=100).contains(&p)
    {
        errs.push(FieldError::out_of_bounds(p, 0, 100, "percent"));
    }
    if !tag.is_empty() && !is_dns1123_label(tag) {
        errs.push(FieldError::invalid_value(tag, "tag").with_details(DNS1123_LABEL_DETAILS));
    }
    if t.url.as_deref().is_some_and(|u| !u.is_empty()) {
        if ctx != TrafficContext::Status || tag.is_empty() {
            errs.push(FieldError::disallowed_fields(&["url"]));
        }
    } else if !tag.is_empty() && ctx == TrafficContext::Status {
        errs.push(FieldError::missing_field(&["url"]));
    }
    errs
}

/// The name of a Service, Configuration or Route: a DNS-1035 label (its host name label
/// and its revisions' prefix), short enough that `{name}-00001` stays a label.
fn validate_object_name(meta: &ObjectMeta) -> Vec<FieldError> {
    let Some(name) = meta.name.as_deref().filter(|n| !n.is_empty()) else { return Vec::new() };
    if !is_dns1035_label(name) {
        return vec![
            FieldError::invalid_value("not a DNS 1035 label", "metadata.name")
                .with_details(DNS1035_LABEL_DETAILS),
        ];
    }
    // Kinetic: upstream hashes longer names into revision names; refusing them keeps
    // `{name}-00001` a valid label.
    if name.len() > 63 - 6 {
        return vec![FieldError::invalid_value(
            format!(
                "{name:?} is longer than 57 characters, so its revision names would not be DNS labels"
            ),
            "metadata.name",
        )];
    }
    Vec::new()
}

fn validate_template(
    template: &RevisionTemplateSpec,
    parent: &str,
    d: &Defaults,
) -> Vec<FieldError> {
    let mut errs = validate_template_name(template, parent);
    errs.extend(via_all(validate_revision_spec(&template.spec, d), "spec"));
    errs
}

/// `Service.Validate` on create or update: the name, the template (name prefix and spec)
/// under `spec.template`, the inline traffic under `spec`.
pub fn validate_service(svc: &Service, d: &Defaults) -> Vec<FieldError> {
    let name = svc.metadata.name.as_deref().unwrap_or("");
    let mut errs = validate_object_name(&svc.metadata);
    errs.extend(via_all(validate_template(&svc.spec.template, name, d), "spec.template"));
    if let Some(traffic) = &svc.spec.traffic {
        errs.extend(via_all(validate_traffic(traffic, TrafficContext::ServiceSpec), "spec"));
    }
    errs
}

/// `Configuration.Validate`.
pub fn validate_configuration(cfg: &Configuration, d: &Defaults) -> Vec<FieldError> {
    let name = cfg.metadata.name.as_deref().unwrap_or("");
    let mut errs = validate_object_name(&cfg.metadata);
    errs.extend(via_all(validate_configuration_spec(&cfg.spec, name, d), "spec"));
    errs
}

fn validate_configuration_spec(
    spec: &ConfigurationSpec,
    name: &str,
    d: &Defaults,
) -> Vec<FieldError> {
    via_all(validate_template(&spec.template, name, d), "template").collect()
}

/// `Route.Validate`.
pub fn validate_route(route: &Route) -> Vec<FieldError> {
    let mut errs = validate_object_name(&route.metadata);
    let RouteSpec { traffic } = &route.spec;
    errs.extend(via_all(
        validate_traffic(traffic.as_deref().unwrap_or_default(), TrafficContext::RouteSpec),
        "spec",
    ));
    errs
}

/// `Revision.Validate` on create; on update (`old` is the stored Revision) the spec may not
/// change at all: Revisions are immutable.
pub fn validate_revision(rev: &Revision, old: Option<&Revision>, d: &Defaults) -> Vec<FieldError> {
    if let Some(old) = old {
        if old.spec != rev.spec {
            let details = immutable_diff(&old.spec, &rev.spec);
            return vec![
                FieldError::new("Immutable fields changed (-old +new)", &["spec"])
                    .with_details(details),
            ];
        }
        return Vec::new();
    }
    via_all(validate_revision_spec(&rev.spec, d), "spec").collect()
}

/// The top-level spec fields that differ, as `-old +new` lines of JSON.
fn immutable_diff(old: &RevisionSpec, new: &RevisionSpec) -> String {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return String::new();
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = String::from("{v1.RevisionSpec}:\n");
    for k in keys {
        let (x, y) = (a.get(k), b.get(k));
        if x != y {
            out.push_str(&format!(
                "\t{k}:\n\t\t-: {}\n\t\t+: {}\n",
                x.map_or("<none>".to_owned(), ToString::to_string),
                y.map_or("<none>".to_owned(), ToString::to_string)
            ));
        }
    }
    out
}
