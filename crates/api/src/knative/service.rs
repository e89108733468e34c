//! The `Service` custom resource (`serving.knative.dev/v1`, short name `ksvc`): a
//! Configuration and a Route under one name (`pkg/apis/serving/v1/service_types.go`).

use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::revision::RevisionTemplateSpec;
use super::{Status, TrafficTarget};
use super::{configuration::ConfigurationStatusFields, route::RouteStatusFields};

/// The desired state of a Service: the Configuration's template and the Route's traffic,
/// inline (`ConfigurationSpec` and `RouteSpec` embedded).
// Clippy reads the repeated `type_ = "string"` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "serving.knative.dev",
    version = "v1",
    kind = "Service",
    namespaced,
    status = "ServiceStatus",
    derive = "PartialEq",
    shortname = "kservice",
    shortname = "ksvc",
    category = "all",
    category = "knative",
    category = "serving",
    label("knative.dev/crd-install", "true"),
    label("duck.knative.dev/addressable", "true"),
    label("duck.knative.dev/podspecable", "true"),
    doc = "Service acts as a top-level container that manages a Route and Configuration which implement a network service. Service exists to provide a singular abstraction which can be access controlled, reasoned about, and which encapsulates software lifecycle decisions such as rollout policy and team resource ownership.",
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(
        name = "LatestCreated",
        type_ = "string",
        json_path = ".status.latestCreatedRevisionName"
    ),
    printcolumn(
        name = "LatestReady",
        type_ = "string",
        json_path = ".status.latestReadyRevisionName"
    ),
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
pub struct ServiceSpec {
    /// The template of the Service's Revisions.
    #[serde(default)]
    pub template: RevisionTemplateSpec,
    /// How traffic is split; defaults to 100 % to the latest ready revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Vec<TrafficTarget>>,
}

/// The observed state of a Service: its own conditions (`Ready`, `ConfigurationsReady`,
/// `RoutesReady`) and the fields of its Configuration and Route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// Conditions and observed generation.
    #[serde(flatten)]
    pub status: Status,
    /// The Configuration's latest created and ready revisions.
    #[serde(flatten)]
    pub configuration: ConfigurationStatusFields,
    /// The Route's URL, address and traffic.
    #[serde(flatten)]
    pub route: RouteStatusFields,
}
