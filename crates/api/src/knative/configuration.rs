//! The `Configuration` custom resource (`serving.knative.dev/v1`): the latest desired state of
//! a workload; each change of its template stamps a new Revision
//! (`pkg/apis/serving/v1/configuration_types.go`).

use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Status;
use super::revision::RevisionTemplateSpec;

/// The desired state of a Configuration.
// Clippy reads the repeated `type_ = "string"` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "serving.knative.dev",
    version = "v1",
    kind = "Configuration",
    namespaced,
    status = "ConfigurationStatus",
    derive = "PartialEq",
    shortname = "config",
    shortname = "cfg",
    category = "all",
    category = "knative",
    category = "serving",
    label("knative.dev/crd-install", "true"),
    label("duck.knative.dev/podspecable", "true"),
    doc = "Configuration represents the \"floating HEAD\" of a linear history of Revisions. Users create new Revisions by updating the Configuration's spec. The \"latest created\" revision's name is available under status, as is the \"latest ready\" revision's name.",
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
pub struct ConfigurationSpec {
    /// The template of the Revisions this Configuration stamps.
    #[serde(default)]
    pub template: RevisionTemplateSpec,
}

/// The revision names a Configuration (or a Service) reports (`ConfigurationStatusFields`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationStatusFields {
    /// The newest Revision stamped from this Configuration that became ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_ready_revision_name: Option<String>,
    /// The newest Revision stamped from this Configuration, ready or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_created_revision_name: Option<String>,
}

/// The observed state of a Configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationStatus {
    /// Condition `Ready`.
    #[serde(flatten)]
    pub status: Status,
    /// The latest created and latest ready revisions.
    #[serde(flatten)]
    pub fields: ConfigurationStatusFields,
}
