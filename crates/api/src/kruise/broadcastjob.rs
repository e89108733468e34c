//! The `BroadcastJob` custom resource: one pod per eligible node, run to completion, field for
//! field as OpenKruise v1.9 serves it (`apis/apps/v1alpha1/broadcastjob_types.go`).
//!
//! The schema carries OpenKruise's webhook defaults (`SetDefaultsBroadcastJob`) as `default`s:
//! `parallelism: 1073741824` (no limit), `completionPolicy: {type: Always}`,
//! `failurePolicy: {type: FailFast}`; the pod template is schemaless, as upstream's CRD.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::imagepulljob::{CompletionPolicy, CompletionPolicyType};

/// Label with the BroadcastJob's name on its pods (`JobNameLabelKey`).
pub const JOB_NAME_LABEL: &str = "broadcastjob-name";
/// Label with the BroadcastJob's uid on its pods (`ControllerUIDLabelKey`).
pub const CONTROLLER_UID_LABEL: &str = "broadcastjob-controller-uid";
/// Upstream's default parallelism: in effect no limit.
pub const DEFAULT_PARALLELISM: i32 = 1 << 30;

/// The desired state of a BroadcastJob.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "BroadcastJob",
    namespaced,
    status = "BroadcastJobStatus",
    shortname = "bcj",
    derive = "PartialEq",
    doc = "BroadcastJob is the Schema for the broadcastjobs API",
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.desired",
        description = "The desired number of pods. This is typically equal to the number of nodes satisfied to run pods."
    ),
    printcolumn(
        name = "Active",
        type_ = "integer",
        json_path = ".status.active",
        description = "The number of actively running pods."
    ),
    printcolumn(
        name = "Succeeded",
        type_ = "integer",
        json_path = ".status.succeeded",
        description = "The number of pods which reached phase Succeeded."
    ),
    printcolumn(
        name = "Failed",
        type_ = "integer",
        json_path = ".status.failed",
        description = "The number of pods which reached phase Failed."
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC."
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BroadcastJobSpec {
    /// How many pods may run at once: a number or a percentage of the desired pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 1073741824))]
    pub parallelism: Option<IntOrString>,
    /// The pod each eligible node runs; restartPolicy `Never` or `OnFailure`.
    #[schemars(schema_with = "super::cloneset::preserved_object")]
    pub template: PodTemplateSpec,
    /// When the job is finished, and for how long it is kept afterwards.
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub completion_policy: CompletionPolicy,
    /// Stop creating pods (running ones go on).
    #[serde(default)]
    pub paused: bool,
    /// What a failed pod does to the job.
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub failure_policy: FailurePolicy,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicy {
    /// Continue, FailFast (default) or Pause.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "FailFast"))]
    pub type_: Option<FailurePolicyType>,
    /// Container restarts (restartPolicy OnFailure) after which a pod counts as failed.
    #[serde(default)]
    pub restart_limit: i32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FailurePolicyType {
    /// Failed pods are counted; the job goes on.
    Continue,
    /// The first failed pod fails the job.
    #[default]
    FailFast,
    /// The first failed pod pauses the job.
    Pause,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BroadcastJobStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<JobCondition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    #[serde(default)]
    pub active: i32,
    #[serde(default)]
    pub succeeded: i32,
    #[serde(default)]
    pub failed: i32,
    #[serde(default)]
    pub desired: i32,
    /// running, paused, completed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

/// One condition of a BroadcastJob (Kruise's `JobCondition`: Complete or Failed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The phases of `status.phase`.
pub mod phase {
    pub const RUNNING: &str = "running";
    pub const PAUSED: &str = "paused";
    pub const COMPLETED: &str = "completed";
    pub const FAILED: &str = "failed";
}

impl BroadcastJob {
    pub fn crd_all() -> CustomResourceDefinition {
        <Self as kube_core::CustomResourceExt>::crd()
    }
}
