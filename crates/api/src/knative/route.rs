//! The `Route` custom resource (`serving.knative.dev/v1`): a named endpoint splitting traffic
//! over revisions (`pkg/apis/serving/v1/route_types.go`).

use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Addressable, Status, TrafficTarget};

/// The desired state of a Route.
// Clippy reads the repeated `type_ = "string"` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "serving.knative.dev",
    version = "v1",
    kind = "Route",
    namespaced,
    status = "RouteStatus",
    derive = "PartialEq",
    shortname = "rt",
    category = "all",
    category = "knative",
    category = "serving",
    label("knative.dev/crd-install", "true"),
    label("duck.knative.dev/addressable", "true"),
    doc = "Route is responsible for configuring ingress over a collection of Revisions. Some of the Revisions a Route distributes traffic over may be specified by referencing the Configuration responsible for creating them; in these cases the Route is additionally responsible for monitoring the Configuration for \"latest ready revision\" changes, and smoothly rolling out latest revisions.",
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Ready')].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Ready')].reason"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// How traffic is split over revisions and configurations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Vec<TrafficTarget>>,
}

/// The URL, address and resolved traffic a Route (or a Service) reports
/// (`RouteStatusFields`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatusFields {
    /// `http[s]://{route}.{namespace}.{domain}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The cluster-internal address, `http://{route}.{namespace}.svc.cluster.local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Addressable>,
    /// The traffic as routed: every entry names a revision (configuration targets resolved to
    /// their latest ready revision) and tagged entries carry their URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Vec<TrafficTarget>>,
}

/// The observed state of a Route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// Conditions `Ready`, `AllTrafficAssigned`, `IngressReady`, `CertificateProvisioned`.
    #[serde(flatten)]
    pub status: Status,
    /// URL, address and traffic.
    #[serde(flatten)]
    pub fields: RouteStatusFields,
}
