//! The `ImagePullJob` custom resource: pre-pull one image on a set of nodes, field for field as
//! OpenKruise v1.9 serves it (`apis/apps/v1alpha1/imagepulljob_types.go`), and the
//! `CompletionPolicy` it shares with BroadcastJob (`broadcastjob_types.go`).
//!
//! OpenKruise v1.9 serves ImagePullJob as `v1alpha1` and `v1beta1` with one schema;
//! [`ImagePullJob::crd_all_versions`] serves both from one CRD (conversion `None`), with
//! `v1alpha1` as the storage version because that is the version upstream's CRD marks
//! `storage: true` (clients of either version read the same objects).
//!
//! The schema carries upstream's webhook defaults as `default`s (Kinetic has no mutating
//! webhook): `parallelism: 1`, `pullPolicy: {timeoutSeconds: 600, backoffLimit: 3}`,
//! `completionPolicy: {type: Always}`, `imagePullPolicy: IfNotPresent`; `image` is required and
//! the two policy types are enums, so bad input is refused with `Invalid` and field causes.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default per-try pull timeout (`pullPolicy.timeoutSeconds`).
pub const DEFAULT_TIMEOUT_SECONDS: i32 = 600;
/// Default number of retries (`pullPolicy.backoffLimit`).
pub const DEFAULT_BACKOFF_LIMIT: i32 = 3;

/// The desired state of an ImagePullJob.
// Clippy reads the repeated `type_ = "integer"` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "ImagePullJob",
    namespaced,
    status = "ImagePullJobStatus",
    derive = "PartialEq",
    doc = "ImagePullJob is the Schema for the imagepulljobs API",
    printcolumn(
        name = "TOTAL",
        type_ = "integer",
        json_path = ".status.desired",
        description = "Number of all nodes matched by this job"
    ),
    printcolumn(
        name = "ACTIVE",
        type_ = "integer",
        json_path = ".status.active",
        description = "Number of image pull task active"
    ),
    printcolumn(
        name = "SUCCEED",
        type_ = "integer",
        json_path = ".status.succeeded",
        description = "Number of image pull task succeeded"
    ),
    printcolumn(
        name = "FAILED",
        type_ = "integer",
        json_path = ".status.failed",
        description = "Number of image pull tasks failed"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC."
    ),
    printcolumn(
        name = "MESSAGE",
        type_ = "string",
        json_path = ".status.message",
        description = "Summary of status when job is failed"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ImagePullJobSpec {
    /// The image to pull, `repository:tag` or `repository@digest`.
    #[schemars(length(min = 1))]
    pub image: String,
    /// The rest of the job, inlined (`#[serde(flatten)]`: the fields stay at `spec` level).
    #[serde(flatten)]
    pub template: ImagePullJobTemplate,
}

/// What an ImagePullJob and an ImageListPullJob share: every ImagePullJob field but `image`
/// (upstream's `ImagePullJobTemplate`, inlined into both specs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePullJobTemplate {
    /// Names of `kubernetes.io/dockerconfigjson` Secrets in the job's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_secrets: Option<Vec<String>>,
    /// The nodes to pull on (names and/or node labels); exclusive with `podSelector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<ImagePullJobNodeSelector>,
    /// Pull on the nodes of the pods (in the job's namespace) these labels select; exclusive
    /// with `selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<ImagePullJobPodSelector>,
    /// How many nodes pull at once (number or percentage of the target nodes); 0 pauses the
    /// job. Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 1))]
    pub parallelism: Option<IntOrString>,
    /// Per-node retry and timeout of the pull.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = {}))]
    pub pull_policy: Option<PullPolicy>,
    /// When the job ends and how long it stays afterwards.
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub completion_policy: CompletionPolicy,
    /// Labels and annotations upstream passes to CRI `PullImage` as the sandbox config; kept
    /// for compatibility (Kinetic's puller has no sandbox to attach them to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_config: Option<SandboxConfig>,
    /// `Always` pulls even when the image is present; `IfNotPresent` (default) does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "IfNotPresent"))]
    pub image_pull_policy: Option<ImagePullPolicy>,
}

/// Which nodes an ImagePullJob targets: by name, by label, or both (a node must match both).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePullJobNodeSelector {
    /// Node names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// Node labels that must match (inline `metav1.LabelSelector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<std::collections::BTreeMap<String, String>>,
    /// Node label requirements (inline `metav1.LabelSelector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
}

/// Pods whose nodes an ImagePullJob targets (inline `metav1.LabelSelector`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePullJobPodSelector {
    /// Pod labels that must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<std::collections::BTreeMap<String, String>>,
    /// Pod label requirements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
}

/// Per-node pull parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PullPolicy {
    /// Seconds one try may take; defaults to 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 600))]
    pub timeout_seconds: Option<i32>,
    /// Retries before the node's pull fails; defaults to 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 3))]
    pub backoff_limit: Option<i32>,
}

/// When a job is complete, shared with BroadcastJob.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompletionPolicy {
    /// `Always` (default): the job ends when every target node finished (or the deadline
    /// passed). `Never`: the job keeps running and new matching nodes pull too.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Always"))]
    pub type_: Option<CompletionPolicyType>,
    /// Seconds after `startTime` at which an `Always` job that has not finished fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    /// Seconds after completion at which an `Always` job is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i32>,
}

/// `completionPolicy.type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CompletionPolicyType {
    /// The job completes.
    #[default]
    Always,
    /// The job never completes.
    Never,
}

/// `imagePullPolicy` of ImagePullJob and NodeImage tags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ImagePullPolicy {
    /// Pull even when the image is present (a moving tag gets its newest digest).
    Always,
    /// Pull only when the image is absent.
    #[default]
    IfNotPresent,
}

/// Metadata upstream hands to CRI `PullImage`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxConfig {
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

/// The observed state of an ImagePullJob, computed from the NodeImages' statuses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePullJobStatus {
    /// When the controller first acted on the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the job completed (every node finished, or the deadline passed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Target nodes.
    pub desired: i32,
    /// Nodes pulling now.
    pub active: i32,
    /// Nodes that pulled the image.
    pub succeeded: i32,
    /// Nodes whose pull failed.
    pub failed: i32,
    /// A summary, e.g. why the job failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The nodes whose pull failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_nodes: Option<Vec<String>>,
}

impl ImagePullJob {
    /// The CRD serving `v1alpha1` (storage) and `v1beta1` with the same schema, printer columns
    /// and status subresource, as OpenKruise v1.9 does.
    pub fn crd_all_versions() -> CustomResourceDefinition {
        super::with_v1beta1(<Self as kube_core::CustomResourceExt>::crd())
    }
}

impl ImagePullJobTemplate {
    /// `completionPolicy.type`, defaulted.
    pub fn completion_type(&self) -> CompletionPolicyType {
        self.completion_policy.type_.unwrap_or_default()
    }

    /// `pullPolicy.timeoutSeconds`, defaulted.
    pub fn timeout_seconds(&self) -> i32 {
        self.pull_policy.as_ref().and_then(|p| p.timeout_seconds).unwrap_or(DEFAULT_TIMEOUT_SECONDS)
    }

    /// `pullPolicy.backoffLimit`, defaulted.
    pub fn backoff_limit(&self) -> i32 {
        self.pull_policy.as_ref().and_then(|p| p.backoff_limit).unwrap_or(DEFAULT_BACKOFF_LIMIT)
    }
}

impl ImagePullJobSpec {
    /// `completionPolicy.type`, defaulted.
    pub fn completion_type(&self) -> CompletionPolicyType {
        self.template.completion_type()
    }

    /// `pullPolicy.timeoutSeconds`, defaulted.
    pub fn timeout_seconds(&self) -> i32 {
        self.template.timeout_seconds()
    }

    /// `pullPolicy.backoffLimit`, defaulted.
    pub fn backoff_limit(&self) -> i32 {
        self.template.backoff_limit()
    }
}
