//! The `NodeImage` custom resource: the images one node should hold and how its pulls went,
//! field for field as OpenKruise v1.9 serves it (`apis/apps/v1alpha1/nodeimage_types.go`).
//!
//! Cluster-scoped, one per node, named after the node. The ImagePullJob controller writes
//! `spec.images` (a tag per job, owner-referencing the job); the node agent writes only the
//! status. Served as `v1alpha1` (storage) and `v1beta1` from one CRD, like
//! [`super::imagepulljob`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::imagepulljob::{ImagePullPolicy, SandboxConfig};

/// The images to pull on this node.
// Clippy reads the repeated `type_ = "integer"` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "NodeImage",
    status = "NodeImageStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "NodeImage is the Schema for the nodeimages API",
    printcolumn(
        name = "DESIRED",
        type_ = "integer",
        json_path = ".status.desired",
        description = "Number of all images on this node"
    ),
    printcolumn(
        name = "PULLING",
        type_ = "integer",
        json_path = ".status.pulling",
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
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NodeImageSpec {
    /// Images by name (`registry/repository`, no tag), at most 256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<BTreeMap<String, ImageSpec>>,
}

/// The tags of one image to pull.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// `kubernetes.io/dockerconfigjson` Secrets, by namespace and name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_secrets: Option<Vec<ReferenceObject>>,
    /// The tags (or `sha256:` digests) to pull.
    pub tags: Vec<ImageTagSpec>,
    /// Passed to CRI `PullImage` upstream; kept for compatibility.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_config: Option<SandboxConfig>,
}

/// A namespaced object name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceObject {
    /// The Secret's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Secret's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One tag to pull and who asked for it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageTagSpec {
    /// The tag, or a `sha256:` digest.
    pub tag: String,
    /// When the tag was first asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
    /// Retry and timeout of the pull.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<ImageTagPullPolicy>,
    /// The ImagePullJobs that want this tag; the tag goes when the last one lets go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_references: Option<Vec<ObjectReference>>,
    /// Bumped when the tag must be pulled again (the node compares it with the status'
    /// version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// `Always` or `IfNotPresent` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,
}

/// A tag's `pullPolicy.ttlSecondsAfterFinished` when its job sets none (upstream's default).
pub const DEFAULT_TAG_TTL_SECONDS: i32 = 300;

/// Pull parameters of one tag.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageTagPullPolicy {
    /// Seconds one try may take; defaults to 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    /// Retries before the pull fails; defaults to 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_limit: Option<i32>,
    /// Seconds after the pull finished at which the tag may be removed from the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i32>,
    /// Seconds after the pull started at which it is given up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
}

/// What the node's pulls did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeImageStatus {
    /// Tags in the spec.
    pub desired: i32,
    /// Tags pulled.
    #[serde(default)]
    pub succeeded: i32,
    /// Tags whose pull failed.
    #[serde(default)]
    pub failed: i32,
    /// Tags being pulled.
    #[serde(default)]
    pub pulling: i32,
    /// Tags waiting for a pull slot.
    #[serde(default)]
    pub waiting: i32,
    /// Per image name, the status of each tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_statuses: Option<BTreeMap<String, ImageStatus>>,
    /// When the node first finished all its pulls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_sync_status: Option<SyncStatus>,
}

/// The tags of one image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageStatus {
    /// One entry per tag in the spec.
    pub tags: Vec<ImageTagStatus>,
}

/// How the pull of one tag went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageTagStatus {
    /// The tag.
    pub tag: String,
    /// Waiting, Pulling, Succeeded or Failed (the constants in [`phase`]).
    pub phase: String,
    /// 0-100; may go back when a try is repeated.
    #[serde(default)]
    pub progress: i32,
    /// When the node began the pull.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the pull finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The spec version this status is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// The image ID (`registry/repository@sha256:…`, the manifest digest) once pulled.
    #[serde(rename = "imageID", default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Why the pull failed, or a progress note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `status.firstSyncStatus`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// When it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_at: Option<Time>,
    /// `Succeeded` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Phases of [`ImageTagStatus::phase`].
pub mod phase {
    /// Accepted, waiting for a pull slot.
    pub const WAITING: &str = "Waiting";
    /// Being pulled.
    pub const PULLING: &str = "Pulling";
    /// Pulled.
    pub const SUCCEEDED: &str = "Succeeded";
    /// Given up after the retries.
    pub const FAILED: &str = "Failed";
}

impl NodeImage {
    /// The CRD serving `v1alpha1` (storage) and `v1beta1`, as OpenKruise v1.9 does.
    pub fn crd_all_versions() -> CustomResourceDefinition {
        super::with_v1beta1(<Self as kube_core::CustomResourceExt>::crd())
    }

    /// The ImagePullJobs that own this NodeImage's tags (a job may appear once per tag).
    pub fn job_owners(&self) -> impl Iterator<Item = &ObjectReference> {
        self.spec
            .images
            .iter()
            .flat_map(|m| m.values())
            .flat_map(|i| &i.tags)
            .flat_map(|t| t.owner_references.iter().flatten())
            .filter(|o| o.kind.as_deref() == Some("ImagePullJob"))
    }

    /// The status of `tag` of image `name`, if the node reported one.
    pub fn tag_status(&self, name: &str, tag: &str) -> Option<&ImageTagStatus> {
        self.status.as_ref()?.image_statuses.as_ref()?.get(name)?.tags.iter().find(|t| t.tag == tag)
    }
}

/// Splits an image reference into the NodeImage key (`registry/repository`, as written) and
/// the tag: `repo:tag` → (`repo`, `tag`), `repo@sha256:…` → (`repo`, `sha256:…`), `repo` →
/// (`repo`, `latest`), as upstream's `daemonutil.NormalizeImageRefToNameTag`.
pub fn split_image(image: &str) -> (String, String) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name.to_owned(), digest.to_owned());
    }
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[slash..].rfind(':') {
        Some(i) => (image[..slash + i].to_owned(), image[slash + i + 1..].to_owned()),
        None => (image.to_owned(), "latest".to_owned()),
    }
}

/// The reference that pulls `tag` of image `name` (inverse of [`split_image`]).
pub fn join_image(name: &str, tag: &str) -> String {
    if tag.starts_with("sha256:") { format!("{name}@{tag}") } else { format!("{name}:{tag}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_join_images() {
        for (image, name, tag) in [
            ("127.0.0.1:5000/busybox:v1", "127.0.0.1:5000/busybox", "v1"),
            ("127.0.0.1:5000/busybox", "127.0.0.1:5000/busybox", "latest"),
            ("nginx@sha256:abc", "nginx", "sha256:abc"),
            ("docker.io/library/nginx:1.25", "docker.io/library/nginx", "1.25"),
        ] {
            assert_eq!(split_image(image), (name.to_owned(), tag.to_owned()), "{image}");
        }
        assert_eq!(join_image("a/b", "v1"), "a/b:v1");
        assert_eq!(join_image("a/b", "sha256:ff"), "a/b@sha256:ff");
    }
}
