//! The `ImageListPullJob` custom resource: pre-pull a list of images on a set of nodes, field
//! for field as OpenKruise v1.9 serves it (`apis/apps/v1alpha1/imagelistpulljob_types.go`):
//! `images` plus the ImagePullJob template (every ImagePullJob field but `image`), served as
//! `v1alpha1` (storage) and `v1beta1` with one schema and the same defaults.
//!
//! The controller (`kinetic-controllers::imagelistpulljob`) turns it into one ImagePullJob
//! per image and sums their statuses.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::imagepulljob::{ImagePullJobSpec, ImagePullJobTemplate};

/// The desired state of an ImageListPullJob.
// Clippy reads the repeated `type_ = "integer"` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "ImageListPullJob",
    namespaced,
    status = "ImageListPullJobStatus",
    derive = "PartialEq",
    doc = "ImageListPullJob is the Schema for the imagelistpulljobs API",
    printcolumn(
        name = "TOTAL",
        type_ = "integer",
        json_path = ".status.desired",
        description = "Number of ImagePullJobs which are desired"
    ),
    printcolumn(
        name = "SUCCEEDED",
        type_ = "integer",
        json_path = ".status.succeeded",
        description = "Number of ImagePullJobs which are succeeded"
    ),
    printcolumn(
        name = "COMPLETED",
        type_ = "integer",
        json_path = ".status.completed",
        description = "Number of ImagePullJobs which are completed"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC."
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ImageListPullJobSpec {
    /// The images to pull, each `repository:tag` or `repository@digest`.
    #[schemars(length(min = 1))]
    pub images: Vec<String>,
    /// The ImagePullJob template every image's job is made from, inlined.
    #[serde(flatten)]
    pub template: ImagePullJobTemplate,
}

/// An image whose ImagePullJob did not pull it everywhere.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedImageStatus {
    /// The ImagePullJob of the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_job: Option<String>,
    /// The image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Why, from the ImagePullJob's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What the ImagePullJobs of the list did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageListPullJobStatus {
    /// When the controller first acted on the list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When every image's job completed (`Always` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Images (ImagePullJobs) desired.
    pub desired: i32,
    /// ImagePullJobs still running.
    #[serde(default)]
    pub active: i32,
    /// ImagePullJobs completed.
    #[serde(default)]
    pub completed: i32,
    /// ImagePullJobs that pulled their image on every target node.
    #[serde(default)]
    pub succeeded: i32,
    /// The images that failed somewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_image_statuses: Option<Vec<FailedImageStatus>>,
}

impl ImageListPullJob {
    /// The CRD serving `v1alpha1` (storage) and `v1beta1` with one schema, as OpenKruise v1.9.
    pub fn crd_all_versions() -> CustomResourceDefinition {
        super::with_v1beta1(<Self as kube_core::CustomResourceExt>::crd())
    }
}

impl ImageListPullJobSpec {
    /// The spec of the ImagePullJob that pulls `image`: the template's fields, without a TTL
    /// (the list's own TTL governs; a child deleted by its TTL would only be created again).
    pub fn job_spec(&self, image: &str) -> ImagePullJobSpec {
        let mut template = self.template.clone();
        template.completion_policy.ttl_seconds_after_finished = None;
        ImagePullJobSpec { image: image.to_owned(), template }
    }
}
