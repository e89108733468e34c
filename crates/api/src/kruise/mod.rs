//! OpenKruise-compatible wire types (`apps.kruise.io`), as OpenKruise v1.9 serves them.
//!
//! Tools written for OpenKruise (kubectl-kruise, Kruise Rollouts, users' own lifecycle-hook
//! controllers) read and write the same custom resources, labels and annotations, so the JSON
//! shapes and the keys here follow upstream's `apis/apps/pub/*.go` and
//! `apis/apps/v1alpha1/*.go` field for field. [`cloneset`] holds the `CloneSet` custom resource;
//! this module holds the types shared by Kruise workloads (lifecycle hooks, update priorities,
//! in-place update state) and the label/annotation contract on pods.
//!
//! Nothing here does I/O or decides anything: the rollout algorithm is in `kinetic-rollout`, the
//! API calls are in `kinetic-controllers`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod broadcastjob;
pub mod cloneset;
pub mod containerrecreaterequest;
pub mod daemonset;
pub mod imagelistpulljob;
pub mod imagepulljob;
pub mod nodeimage;
pub mod sidecarset;
pub mod uniteddeployment;

/// Label set to `"true"` on a CloneSet's ControllerRevision once image pre-download jobs were
/// created for it (`ImagePreDownloadCreatedKey`, spelled as upstream spells it).
pub const IMAGE_PREDOWNLOAD_CREATED_LABEL: &str = "apps.kruise.io/pre-predownload-created";
/// Label set to `"true"` on a CloneSet's ControllerRevision when pre-download does not apply to
/// it (`ImagePreDownloadIgnoredKey`).
pub const IMAGE_PREDOWNLOAD_IGNORED_LABEL: &str = "apps.kruise.io/image-predownload-ignored";

/// Adds a `v1beta1` version (same schema, printer columns and subresources, not the storage
/// version) to a generated single-version `v1alpha1` CRD; conversion stays `None`, which is
/// right because the two versions have the same fields.
fn with_v1beta1(
    mut crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    if let Some(v1alpha1) = crd.spec.versions.first().cloned() {
        let mut v1beta1 = v1alpha1;
        v1beta1.name = "v1beta1".to_owned();
        v1beta1.storage = false;
        crd.spec.versions.push(v1beta1);
    }
    crd
}

/// API group of every OpenKruise workload.
pub const GROUP: &str = "apps.kruise.io";

/// Label (on pods and PVCs) with the instance id a CloneSet gave them; a pod and the PVCs made
/// for it from `volumeClaimTemplates` share it (`apis/apps/v1alpha1/cloneset_types.go`).
pub const CLONESET_INSTANCE_ID_LABEL: &str = "apps.kruise.io/cloneset-instance-id";

/// Label with the ControllerRevision name a pod was created from or in-place updated to. It is
/// Kubernetes' own `apps.ControllerRevisionHashLabelKey`, not the `apps.kruise.io/` one that
/// UnitedDeployment uses.
pub const CONTROLLER_REVISION_HASH_LABEL: &str = "controller-revision-hash";

/// Label with the short revision hash (the ControllerRevision name without the `{cloneset}-`
/// prefix); CloneSet sets it next to [`CONTROLLER_REVISION_HASH_LABEL`] and matching accepts
/// either (`pkg/controller/cloneset/utils/cloneset_utils.go`).
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// Label that asks the owning workload to delete (and, for CloneSet, replace) the pod; any value
/// counts (`apis/apps/v1alpha1/well_known_labels.go`). The ReCreate update path sets it to
/// `"true"` on the pods it replaces.
pub const SPECIFIED_DELETE_LABEL: &str = "apps.kruise.io/specified-delete";

/// Kubernetes' pod deletion cost annotation: an int32, lower values are deleted first.
pub const POD_DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Label on a CloneSet that makes scaling ignore pods in `PreparingDelete`
/// (`CloneSetScalingExcludePreparingDeleteKey`); v1.9 has no spec field for it in v1alpha1.
pub const SCALING_EXCLUDE_PREPARING_DELETE_LABEL: &str =
    "apps.kruise.io/cloneset-scaling-exclude-preparing-delete";

/// Label with a pod's [`LifecycleState`] (`apis/apps/pub/lifecycle.go`).
pub const LIFECYCLE_STATE_LABEL: &str = "lifecycle.apps.kruise.io/state";
/// Annotation with the RFC 3339 time the pod entered its current lifecycle state.
pub const LIFECYCLE_TIMESTAMP_ANNOTATION: &str = "lifecycle.apps.kruise.io/timestamp";

/// Annotation with the JSON [`InPlaceUpdateState`] of the last in-place update of a pod.
pub const INPLACE_UPDATE_STATE_ANNOTATION: &str = "apps.kruise.io/inplace-update-state";
/// Annotation holding the pending in-place update spec (JSON) while the pod waits out
/// `inPlaceUpdateStrategy.gracePeriodSeconds` after it was set not-ready.
pub const INPLACE_UPDATE_GRACE_ANNOTATION: &str = "apps.kruise.io/inplace-update-grace";
/// Annotation kruise-daemon writes with the runtime containers' hashes; kept here so readers
/// agree on the key (Kinetic's node agent does not write it yet).
pub const RUNTIME_CONTAINERS_META_ANNOTATION: &str = "apps.kruise.io/runtime-containers-meta";

/// Pod annotation asking for containers to start one after another in spec order (`Ordered`):
/// upstream's pod webhook turns it into [`CONTAINER_PRIORITY_ENV`] on each container, the
/// first container highest (`apis/apps/pub/container_launch_priority.go`).
pub const CONTAINER_LAUNCH_PRIORITY_ANNOTATION: &str = "apps.kruise.io/container-launch-priority";
/// Container env whose integer value is the container's launch priority: higher starts first,
/// and an in-place update patches higher-priority containers in an earlier batch.
pub const CONTAINER_PRIORITY_ENV: &str = "KRUISE_CONTAINER_PRIORITY";

/// The launch priority of `pod`'s app container number `index` (upstream's
/// `GetContainerPriority` after the webhook's injection): `-index` when the pod carries
/// [`CONTAINER_LAUNCH_PRIORITY_ANNOTATION`]` = Ordered` (which, as in upstream's webhook, wins
/// over any env), else the container's [`CONTAINER_PRIORITY_ENV`] value, else `None` (no
/// ordering).
///
/// Upstream's webhook rejects values outside -2147483647..=2147483647 and non-integers; here
/// such a value counts as no priority.
pub fn container_priority(pod: &k8s_openapi::api::core::v1::Pod, index: usize) -> Option<i32> {
    let container = pod.spec.as_ref()?.containers.get(index)?;
    let ordered = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONTAINER_LAUNCH_PRIORITY_ANNOTATION))
        .is_some_and(|v| v == "Ordered");
    if ordered {
        return Some(-i32::try_from(index).unwrap_or(i32::MAX));
    }
    let env = container.env.iter().flatten().find(|e| e.name == CONTAINER_PRIORITY_ENV)?;
    env.value.as_deref().and_then(|v| v.trim().parse().ok())
}

/// Pod readiness gate and condition type that the workload sets `False` before an in-place
/// update and `True` once it completed, so the pod is not Ready in between
/// (`apis/apps/pub/inplace_update.go`).
pub const INPLACE_UPDATE_READY_CONDITION: &str = "InPlaceUpdateReady";
/// Pod readiness gate and condition type that lifecycle hooks with `markPodNotReady` drive
/// (`apis/apps/pub/pod_readiness_gate.go`).
pub const KRUISE_POD_READY_CONDITION: &str = "KruisePodReady";

/// CloneSet annotations (v1alpha1) that tune image pre-download for in-place updates
/// (`apis/apps/v1alpha1/imagepulljob_types.go`).
pub const IMAGE_PREDOWNLOAD_PARALLELISM_ANNOTATION: &str =
    "apps.kruise.io/image-predownload-parallelism";
/// See [`IMAGE_PREDOWNLOAD_PARALLELISM_ANNOTATION`].
pub const IMAGE_PREDOWNLOAD_TIMEOUT_SECONDS_ANNOTATION: &str =
    "apps.kruise.io/image-predownload-timeout-seconds";
/// See [`IMAGE_PREDOWNLOAD_PARALLELISM_ANNOTATION`].
pub const IMAGE_PREDOWNLOAD_MIN_UPDATED_READY_PODS_ANNOTATION: &str =
    "apps.kruise.io/image-predownload-min-updated-ready-pods";

/// The states of the `lifecycle.apps.kruise.io/state` label. A pod without the label counts as
/// [`LifecycleState::Normal`] wherever upstream reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LifecycleState {
    /// Created, waiting for the `preNormal` hook (v1.9).
    PreparingNormal,
    /// Serving; the only state in which a pod counts as available.
    Normal,
    /// Chosen for an in-place update, waiting for the `inPlaceUpdate` hook to be released.
    PreparingUpdate,
    /// Being updated in place.
    Updating,
    /// Updated in place, waiting for the `inPlaceUpdate` hook to be put back.
    Updated,
    /// Chosen for deletion, waiting for the `preDelete` hook to be released.
    PreparingDelete,
}

impl LifecycleState {
    /// Every state, in lifecycle order.
    pub const ALL: [Self; 6] = [
        Self::PreparingNormal,
        Self::Normal,
        Self::PreparingUpdate,
        Self::Updating,
        Self::Updated,
        Self::PreparingDelete,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PreparingNormal => "PreparingNormal",
            Self::Normal => "Normal",
            Self::PreparingUpdate => "PreparingUpdate",
            Self::Updating => "Updating",
            Self::Updated => "Updated",
            Self::PreparingDelete => "PreparingDelete",
        }
    }

    /// Parses a label value; `None` for values upstream does not define.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

/// Lifecycle hooks of a workload's pods (`apis/apps/pub/lifecycle.go`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    /// The hook before a pod is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_delete: Option<LifecycleHook>,
    /// The hook before a pod is updated in place and after it has been.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_place_update: Option<LifecycleHook>,
    /// The hook after a pod is created and before it becomes Normal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_normal: Option<LifecycleHook>,
}

/// One lifecycle hook: the pod is "hooked" while it carries all these labels and finalizers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleHook {
    /// Labels that must all be on the pod (with these values) for the hook to hold it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels_handler: Option<BTreeMap<String, String>>,
    /// Finalizers that must all be on the pod for the hook to hold it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalizers_handler: Option<Vec<String>>,
    /// Set the pod's `KruisePodReady` condition to False while it is in PreparingDelete or
    /// PreparingUpdate (only for the inPlaceUpdate and preDelete hooks); default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark_pod_not_ready: Option<bool>,
}

/// How to order pods for an update; only one of the two lists may be set
/// (`apis/apps/pub/update_priority.go`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdatePriorityStrategy {
    /// Pods are ordered by the last integer in the value of the first of these label keys they
    /// carry; pods with an earlier key come first, higher numbers first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_priority: Option<Vec<UpdatePriorityOrderTerm>>,
    /// Pods are ordered by the sum of the weights of the terms whose selector they match,
    /// highest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_priority: Option<Vec<UpdatePriorityWeightTerm>>,
}

/// One order-priority term.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdatePriorityOrderTerm {
    /// The label key whose value (its last integer, e.g. 10 in `sts-10`) orders the pods.
    pub ordered_key: String,
}

/// One weight-priority term.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdatePriorityWeightTerm {
    /// Weight (1-100) added for pods whose labels match the selector.
    pub weight: i32,
    /// Selects pods by their labels.
    pub match_selector: LabelSelector,
}

/// In-place update tuning (`apis/apps/pub/inplace_update.go`). The image pre-download fields
/// that master added here are v1beta1-only; in v1alpha1 they are CloneSet annotations
/// ([`IMAGE_PREDOWNLOAD_PARALLELISM_ANNOTATION`] and its siblings).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InPlaceUpdateStrategy {
    /// Seconds between setting the pod not-ready and patching its spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period_seconds: Option<i32>,
}

/// The JSON in [`INPLACE_UPDATE_STATE_ANNOTATION`]: what the last in-place update of a pod
/// changed and what its containers looked like before it (`apis/apps/pub/inplace_update.go`).
///
/// Field names and omit rules follow upstream's Go struct so a pod updated by either controller
/// can be finished by the other. Upstream always writes `revision`, `updateTimestamp`,
/// `lastContainerStatuses` and `verticalUpdateOnly`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InPlaceUpdateState {
    /// The revision (ControllerRevision name) the pod is being updated to.
    #[serde(default)]
    pub revision: String,
    /// When the in-place update started.
    pub update_timestamp: Time,
    /// The containers to be updated, by name, as they were before the update.
    #[serde(default)]
    pub last_container_statuses: BTreeMap<String, InPlaceUpdateContainerStatus>,
    /// Some container env comes from labels/annotations that changed: the node agent
    /// (kruise-daemon upstream) restarts those containers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub update_env_from_metadata: bool,
    /// Some container resources are resized in place.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub update_resources: bool,
    /// Some container images are updated (newer upstream versions write it; older ones infer
    /// it from `lastContainerStatuses`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub update_images: bool,
    /// The update only resizes resources.
    #[serde(default)]
    pub vertical_update_only: bool,
    /// Images of lower-priority containers still to be updated in a later batch.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub next_container_images: BTreeMap<String, String>,
    /// Label/annotation changes for lower-priority containers still to come.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub next_container_ref_metadata: BTreeMap<String, ObjectMeta>,
    /// Resource changes for lower-priority containers still to come.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub next_container_resources: BTreeMap<String, ResourceRequirements>,
    /// What must hold before the next batch is patched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_check_before_next: Option<InPlaceUpdatePreCheckBeforeNext>,
    /// The batches already patched in this revision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_batches_record: Vec<InPlaceUpdateContainerBatch>,
}

/// A container as it was before an in-place update.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InPlaceUpdateContainerStatus {
    /// `status.containerStatuses[].imageID` before the update.
    #[serde(rename = "imageID", default, skip_serializing_if = "String::is_empty")]
    pub image_id: String,
    /// The container's resources before a resize. Go's `omitempty` never omits a struct, so
    /// upstream writes `{}` here; so do we.
    #[serde(default)]
    pub resources: ResourceRequirements,
    /// Kinetic addition: the container's restart count before the update, so completion can
    /// require a restart (`kinetic-rollout`'s `check_update_completed`). Upstream ignores the
    /// unknown key and leaves it out of states it writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<i32>,
}

/// Containers that must be ready before the next batch of an in-place update.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InPlaceUpdatePreCheckBeforeNext {
    /// Names of the containers that must be ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers_required_ready: Vec<String>,
}

/// One patched batch of an in-place update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InPlaceUpdateContainerBatch {
    /// When the batch was patched.
    pub timestamp: Time,
    /// The containers in the batch.
    #[serde(default)]
    pub containers: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An annotation as upstream's controller writes it reads back and re-serialises with the
    /// same keys (Go omits the empty optional ones).
    #[test]
    fn inplace_update_state_matches_upstream_json() {
        let upstream = r#"{"revision":"web-5d4f8b7c9","updateTimestamp":"2026-01-02T03:04:05Z","lastContainerStatuses":{"app":{"imageID":"docker.io/library/nginx@sha256:aa","resources":{}}},"updateImages":true,"verticalUpdateOnly":false,"nextContainerImages":{"sidecar":"busybox:2"}}"#;
        let state: InPlaceUpdateState = serde_json::from_str(upstream).expect("upstream JSON");
        assert_eq!(state.revision, "web-5d4f8b7c9");
        assert_eq!(
            state.last_container_statuses["app"].image_id,
            "docker.io/library/nginx@sha256:aa"
        );
        assert_eq!(state.next_container_images["sidecar"], "busybox:2");
        let back = serde_json::to_value(&state).expect("serialises");
        assert_eq!(
            back,
            serde_json::json!({
                "revision": "web-5d4f8b7c9",
                "updateTimestamp": "2026-01-02T03:04:05Z",
                "lastContainerStatuses": {
                    "app": {"imageID": "docker.io/library/nginx@sha256:aa", "resources": {}}
                },
                "updateImages": true,
                "verticalUpdateOnly": false,
                "nextContainerImages": {"sidecar": "busybox:2"},
            })
        );
    }

    fn crd_yaml(crd: &impl serde::Serialize) -> String {
        serde_yaml::to_string(crd).expect("the CRD serialises to YAML")
    }

    /// The generated preheating CRDs, as YAML, so every schema change shows in review.
    #[test]
    fn preheat_crd_snapshots() {
        expect_test::expect_file!["imagepulljob.crd.yaml"]
            .assert_eq(&crd_yaml(&imagepulljob::ImagePullJob::crd_all_versions()));
        expect_test::expect_file!["nodeimage.crd.yaml"]
            .assert_eq(&crd_yaml(&nodeimage::NodeImage::crd_all_versions()));
        expect_test::expect_file!["imagelistpulljob.crd.yaml"]
            .assert_eq(&crd_yaml(&imagelistpulljob::ImageListPullJob::crd_all_versions()));
        expect_test::expect_file!["broadcastjob.crd.yaml"]
            .assert_eq(&crd_yaml(&broadcastjob::BroadcastJob::crd_all()));
    }

    /// Both preheating CRDs serve v1alpha1 (storage) and v1beta1 with one structural schema and
    /// the status subresource; NodeImage is cluster-scoped.
    #[test]
    fn preheat_crds_serve_two_versions() {
        use kinetic_machinery::schema::Schema;
        for (crd, scope) in [
            (imagepulljob::ImagePullJob::crd_all_versions(), "Namespaced"),
            (nodeimage::NodeImage::crd_all_versions(), "Cluster"),
            (imagelistpulljob::ImageListPullJob::crd_all_versions(), "Namespaced"),
        ] {
            let v = serde_json::to_value(&crd).expect("serialises");
            assert_eq!(v["spec"]["scope"], scope);
            let versions = v["spec"]["versions"].as_array().expect("versions");
            let names: Vec<(&str, bool)> = versions
                .iter()
                .map(|x| (x["name"].as_str().unwrap_or(""), x["storage"] == true))
                .collect();
            assert_eq!(names, [("v1alpha1", true), ("v1beta1", false)]);
            assert_eq!(versions[0]["schema"], versions[1]["schema"]);
            assert_eq!(versions[1]["subresources"], serde_json::json!({"status": {}}));
            let causes = Schema::check_structural(
                &versions[0]["schema"]["openAPIV3Schema"],
                "spec.versions[0].schema.openAPIV3Schema",
            );
            assert!(causes.is_empty(), "{causes:#?}");
        }
    }

    /// A minimal ImagePullJob gets upstream's webhook defaults from the schema; a missing image
    /// and bad enums are refused with field causes.
    #[test]
    fn imagepulljob_schema_defaults_and_rejects() {
        use kinetic_machinery::schema::Schema;
        use serde_json::json;
        let crd = serde_json::to_value(imagepulljob::ImagePullJob::crd_all_versions()).unwrap();
        let schema =
            Schema::from_json(&crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], None)
                .expect("the schema compiles");
        let mut obj = json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
            "metadata": {"name": "j", "namespace": "default"},
            "spec": {"image": "nginx:1"},
        });
        schema.default(&mut obj);
        assert_eq!(schema.validate(&obj), vec![]);
        assert_eq!(
            obj["spec"],
            json!({
                "image": "nginx:1", "parallelism": 1,
                "pullPolicy": {"timeoutSeconds": 600, "backoffLimit": 3},
                "completionPolicy": {"type": "Always"}, "imagePullPolicy": "IfNotPresent",
            })
        );
        let job: imagepulljob::ImagePullJob = serde_json::from_value(obj).unwrap();
        assert_eq!(job.spec.timeout_seconds(), 600);
        let mut bad = json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
            "metadata": {"name": "j", "namespace": "default"},
            "spec": {"completionPolicy": {"type": "Sometimes"}, "imagePullPolicy": "Never"},
        });
        schema.default(&mut bad);
        let mut fields: Vec<String> = schema.validate(&bad).into_iter().map(|c| c.field).collect();
        fields.sort();
        assert_eq!(fields, ["spec.completionPolicy.type", "spec.image", "spec.imagePullPolicy"]);
    }

    #[test]
    fn lifecycle_states_round_trip() {
        for state in LifecycleState::ALL {
            assert_eq!(LifecycleState::parse(state.as_str()), Some(state));
        }
        assert_eq!(LifecycleState::parse("normal"), None);
    }
}
