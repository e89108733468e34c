//! Knative Serving-compatible wire types (`serving.knative.dev/v1`), as Knative Serving 1.x
//! serves them (knative/serving `pkg/apis/serving/v1`, `config/core/300-resources/*.yaml`).
//!
//! Users write Knative `Service` manifests and run `kubectl get ksvc,configuration,revision,route`
//! against Kinetic, so the JSON shapes, short names, categories, printer columns, labels and
//! annotations here are Knative's field for field. The four custom resources are in
//! [`service`], [`configuration`], [`revision`] and [`route`]; the types they share (traffic
//! targets, conditions, addresses) are here. [`webhook`] holds Knative's webhook defaults and
//! validation as pure functions, [`config`] the `config-domain`, `config-network`,
//! `config-defaults` and `config-autoscaler` ConfigMap names, keys and defaults.
//!
//! # How the pieces will be used (issue 11)
//!
//! - The API server serves the CRDs (`Service::crd()` from `kube_core::CustomResourceExt`, and
//!   its siblings; installed by `kinetic controller`) and runs
//!   [`webhook::set_service_defaults`] and [`webhook::validate_service`] (and their siblings) on create and update, turning the
//!   [`webhook::FieldError`]s into `Invalid` causes; the per-revision
//!   `autoscaling.knative.dev/*` annotations are validated by `kinetic-autoscale`.
//! - The serving controllers (not written yet) reconcile Service → Configuration + Route,
//!   Configuration → Revision (named by [`webhook::revision_name`]), Revision → CloneSet
//!   `{revision}-deployment` with the [`SERVICE_LABEL`], [`CONFIGURATION_LABEL`] and
//!   [`REVISION_LABEL`] labels, using [`webhook::user_port`] for the `PORT` variable and the
//!   readiness probe, and write the statuses with Knative's condition types and reasons.
//! - The gateway routes `{route}.{namespace}.{domain}` ([`config::Domain::lookup`],
//!   [`config::Network::host`]) per the Route's `status.traffic`, and reports per-revision
//!   concurrency to the autoscaler (`kinetic-autoscale`).
//!
//! Nothing here does I/O or decides anything beyond Knative's defaulting and validation.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod config;
pub mod configuration;
pub mod podautoscaler;
pub mod revision;
pub mod route;
pub mod service;
pub mod webhook;

/// API group of Knative Serving's resources.
pub const GROUP: &str = "serving.knative.dev";
/// The served (and stored) version.
pub const VERSION: &str = "v1";

/// Label with the name of the Service a Configuration, Route, Revision or pod belongs to.
pub const SERVICE_LABEL: &str = "serving.knative.dev/service";
/// Label with the name of the Configuration a Revision or pod belongs to.
pub const CONFIGURATION_LABEL: &str = "serving.knative.dev/configuration";
/// Label with the name of the Revision a pod belongs to.
pub const REVISION_LABEL: &str = "serving.knative.dev/revision";
/// Label with the name of the Route that routes to a Revision or Configuration.
pub const ROUTE_LABEL: &str = "serving.knative.dev/route";
/// Label with the Configuration's `metadata.generation` a Revision was stamped from (printed
/// as the Revision's GENERATION column).
pub const CONFIGURATION_GENERATION_LABEL: &str = "serving.knative.dev/configurationGeneration";
/// Label on Revisions: `active` while a Route references it, `reserve` otherwise (`pending`
/// before it is known).
pub const ROUTING_STATE_LABEL: &str = "serving.knative.dev/routingState";
/// Label with the UID of the Configuration or Service owning a resource.
pub const CONFIGURATION_UID_LABEL: &str = "serving.knative.dev/configurationUID";
/// Label with the UID of the Service owning a resource.
pub const SERVICE_UID_LABEL: &str = "serving.knative.dev/serviceUID";
/// Annotation with the user who created the resource (set by the webhook on create).
pub const CREATOR_ANNOTATION: &str = "serving.knative.dev/creator";
/// Annotation with the user who last changed the resource's spec.
pub const LAST_MODIFIER_ANNOTATION: &str = "serving.knative.dev/lastModifier";
/// Annotation with the time a Revision's routing state last changed.
pub const ROUTING_STATE_MODIFIED_ANNOTATION: &str = "serving.knative.dev/routingStateModified";
/// Annotation on a Revision with the comma-separated Routes that reference it.
pub const ROUTES_ANNOTATION: &str = "serving.knative.dev/routes";
/// Annotation on a Service or Route: shift traffic to a new revision gradually over this
/// duration (for example `"380s"`).
pub const ROLLOUT_DURATION_ANNOTATION: &str = "serving.knative.dev/rollout-duration";
/// Legacy label key for a Route's visibility (`serving.knative.dev/visibility`).
pub const VISIBILITY_LABEL_LEGACY: &str = "serving.knative.dev/visibility";
/// Label on a Service or Route making it reachable only inside the cluster when set to
/// [`VISIBILITY_CLUSTER_LOCAL`].
pub const VISIBILITY_LABEL: &str = "networking.knative.dev/visibility";
/// The one value of [`VISIBILITY_LABEL`]: the URL uses the cluster domain (`svc.cluster.local`).
pub const VISIBILITY_CLUSTER_LOCAL: &str = "cluster-local";

/// Values of [`ROUTING_STATE_LABEL`].
pub mod routing_state {
    /// A Route references the Revision.
    pub const ACTIVE: &str = "active";
    /// No Route references it: it may be scaled to zero and garbage collected.
    pub const RESERVE: &str = "reserve";
    /// Not yet decided.
    pub const PENDING: &str = "pending";
}

/// The variables Knative's runtime contract gives every user container.
pub mod env {
    /// The port the container must listen on.
    pub const PORT: &str = "PORT";
    /// The Service's name (the Configuration's when there is no Service).
    pub const K_SERVICE: &str = "K_SERVICE";
    /// The Configuration's name.
    pub const K_CONFIGURATION: &str = "K_CONFIGURATION";
    /// The Revision's name.
    pub const K_REVISION: &str = "K_REVISION";
}

/// Condition types and reasons of the four resources
/// (`pkg/apis/serving/v1/*_lifecycle.go`).
pub mod condition {
    /// Every resource: the resource is ready.
    pub const READY: &str = "Ready";
    /// Service: its Configuration is ready.
    pub const CONFIGURATIONS_READY: &str = "ConfigurationsReady";
    /// Service: its Route is ready.
    pub const ROUTES_READY: &str = "RoutesReady";
    /// Revision: the workload, pods and networking exist.
    pub const RESOURCES_AVAILABLE: &str = "ResourcesAvailable";
    /// Revision: the user container started and passes its readiness probe.
    pub const CONTAINER_HEALTHY: &str = "ContainerHealthy";
    /// Revision: the revision has pods (False with reason NoTraffic when scaled to zero).
    pub const ACTIVE: &str = "Active";
    /// Route: every traffic target exists and is ready.
    pub const ALL_TRAFFIC_ASSIGNED: &str = "AllTrafficAssigned";
    /// Route: the ingress is ready.
    pub const INGRESS_READY: &str = "IngressReady";
    /// Route: TLS certificates are provisioned (or not needed).
    pub const CERTIFICATE_PROVISIONED: &str = "CertificateProvisioned";

    /// Reasons Knative writes.
    pub mod reason {
        /// Revision Active=False: scaled to zero for lack of traffic.
        pub const NO_TRAFFIC: &str = "NoTraffic";
        /// Revision Active=Unknown: requests wait for pods.
        pub const QUEUED: &str = "Queued";
        /// Revision Active=False: activation gave up.
        pub const TIMED_OUT: &str = "TimedOut";
        /// Revision Ready=Unknown while the pods come up.
        pub const DEPLOYING: &str = "Deploying";
        /// Revision ContainerHealthy=False / Ready=False: the container exited.
        pub const EXIT_CODE: &str = "ExitCode";
        /// Revision Ready=False: the image could not be pulled (Kubernetes' waiting reason).
        pub const IMAGE_PULL_BACK_OFF: &str = "ImagePullBackOff";
        /// Revision Ready=False: the digest of the image could not be resolved.
        pub const CONTAINER_MISSING: &str = "ContainerMissing";
        /// Revision Ready=False: the workload did not progress within its deadline.
        pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
        /// Configuration Ready=False: the latest created revision failed.
        pub const REVISION_FAILED: &str = "RevisionFailed";
        /// Configuration Ready=Unknown: the latest created revision is not ready yet.
        pub const REVISION_MISSING: &str = "RevisionMissing";
        /// Route AllTrafficAssigned=False / Service RoutesReady=False: a target is missing.
        pub const CONFIGURATION_MISSING: &str = "ConfigurationMissing";
        /// Service Ready=False: the Route does not route to the latest ready revision yet.
        pub const OUT_OF_DATE: &str = "OutOfDate";
    }
}

/// One traffic target of a Route (or a Service's inline route): a revision, or the latest
/// ready revision of a configuration, with its share and optional tag.
// Upstream: `pkg/apis/serving/v1/route_types.go`, `TrafficTarget`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficTarget {
    /// Exposes the target at its own URL `{tag}-{route}.{namespace}.{domain}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// A specific revision. Mutually exclusive with `configurationName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_name: Option<String>,
    /// A configuration whose latest ready revision gets this share; never set in status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_name: Option<String>,
    /// Follow the latest ready revision; must be true when `revisionName` is empty and false
    /// when it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_revision: Option<bool>,
    /// Share of the traffic, 0 ..= 100; the targets sum to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i64>,
    /// The tag's URL; status only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// One status condition: type, status, severity, reason, message and transition time.
// Upstream: knative.dev/pkg's `apis.Condition` (a severity, no `observedGeneration`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition type, for example Ready.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// `Error` (empty, the default) or `Warning`/`Info` for non-terminal conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// When the condition last changed status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Machine-readable reason of the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An address a resource can be reached at (`duckv1.Addressable`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Addressable {
    /// The address's name, when a resource has several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The URL, for example `http://hello.default.svc.cluster.local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// PEM CA certificates for an `https` URL.
    #[serde(rename = "CACerts", default, skip_serializing_if = "Option::is_none")]
    pub ca_certs: Option<String>,
    /// The audience of OIDC tokens for the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// Status fields every Knative resource has (`duckv1.Status`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The generation this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The latest observations of the resource's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// Extra state the reconciler conveys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Status {
    /// The condition of the given type, if any.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.as_deref()?.iter().find(|c| c.type_ == type_)
    }
}

/// Schema of a schemaless object field: any object, kept as it is.
fn preserved_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Schema of a list of schemaless objects.
fn preserved_object_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
        },
    })
}

#[cfg(test)]
mod tests;
