//! The `SidecarSet` custom resource (`apps.kruise.io/v1alpha1`, also served as `v1beta1` with
//! the same schema; `v1alpha1` is stored), field for field as OpenKruise v1.9 serves it
//! (`apis/apps/v1alpha1/sidecarset_types.go`), and the pod annotation contract of injection
//! (`pkg/control/sidecarcontrol/util.go`).
//!
//! Cluster-scoped. The schema carries upstream's webhook defaults that are plain values
//! (`apis/apps/defaults/v1alpha1.go`, `SetDefaultsSidecarSet`): `updateStrategy: {type:
//! RollingUpdate, maxUnavailable: 1}`, `revisionHistoryLimit: 10`. The container lists and
//! volumes are schemaless (a full core/v1 Container per item, plus the sidecar fields), as
//! CloneSet's template; the API server validates them as pod containers, and the per-container
//! defaults (`podInjectPolicy: BeforeAppContainer`, `shareVolumePolicy: {type: disabled}`,
//! `upgradeStrategy: {upgradeType: ColdUpgrade}`) are read as defaults by the accessors here.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, LocalObjectReference, ObjectFieldSelector, Volume};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::UpdatePriorityStrategy;
use super::cloneset::UpdateScatterTerm;

/// Pod annotation: per SidecarSet, the hash of its containers the pod was injected or last
/// upgraded with (`SidecarSetHashAnnotation`), a JSON object keyed by SidecarSet name.
pub const SIDECARSET_HASH_ANNOTATION: &str = "kruise.io/sidecarset-hash";
/// Pod annotation: the same, over the containers with their images blanked
/// (`SidecarSetHashWithoutImageAnnotation`); an upgrade in place is possible only while it is
/// unchanged.
pub const SIDECARSET_HASH_WITHOUT_IMAGE_ANNOTATION: &str =
    "kruise.io/sidecarset-hash-without-image";
/// Pod annotation: the SidecarSets injected into the pod, comma-separated
/// (`SidecarSetListAnnotation`). Injection skips a SidecarSet already listed, so it is
/// idempotent.
pub const SIDECARSET_INJECTED_LIST_ANNOTATION: &str = "kruise.io/sidecarset-injected-list";
/// Pod annotation of hot upgrade: which container of each pair works, as JSON
/// `{"sidecar": "sidecar-1"}` (`SidecarSetWorkingHotUpgradeContainer`).
pub const SIDECARSET_WORKING_HOT_UPGRADE_CONTAINER: &str =
    "kruise.io/sidecarset-working-hotupgrade-container";
/// Env set on every injected container (`SidecarEnvKey`).
pub const SIDECAR_ENV_KEY: &str = "IS_INJECTED";
/// Label on a SidecarSet's ControllerRevisions with the SidecarSet's name
/// (`SidecarSetKindName`).
pub const SIDECARSET_NAME_LABEL: &str = "kruise.io/sidecarset-name";
/// Label on a SidecarSet (copied to its ControllerRevisions) naming a custom version that
/// `injectionStrategy.revision.customVersion` can pin (`SidecarSetCustomVersionLabel`).
pub const SIDECARSET_CUSTOM_VERSION_LABEL: &str = "apps.kruise.io/sidecarset-custom-version";
/// Namespace of SidecarSet ControllerRevisions: upstream keeps them in its own namespace
/// (`webhookutil.GetNamespace()`, `kruise-system` by default).
pub const REVISION_NAMESPACE: &str = "kruise-system";
/// Default `revisionHistoryLimit`.
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;

/// The desired state of a SidecarSet.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "SidecarSet",
    status = "SidecarSetStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "SidecarSet is the Schema for the sidecarsets API",
    printcolumn(
        name = "MATCHED",
        type_ = "integer",
        json_path = ".status.matchedPods",
        description = "The number of pods matched."
    ),
    printcolumn(
        name = "UPDATED",
        type_ = "integer",
        json_path = ".status.updatedPods",
        description = "The number of pods matched and updated."
    ),
    printcolumn(
        name = "READY",
        type_ = "integer",
        json_path = ".status.readyPods",
        description = "The number of pods matched and ready."
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC."
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSetSpec {
    /// Selects the pods to inject into (by their labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Only pods in this namespace (v1alpha1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only pods in namespaces whose labels this selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Init containers injected at creation (sorted by name; never upgraded in place).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "preserved_object_list")]
    pub init_containers: Vec<SidecarContainer>,
    /// Sidecar containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "preserved_object_list")]
    pub containers: Vec<SidecarContainer>,
    /// Volumes the sidecars need; a pod volume of the same name wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "preserved_object_list")]
    pub volumes: Vec<Volume>,
    /// How injected sidecars are upgraded.
    #[serde(default)]
    #[schemars(extend("default" = {"type": "RollingUpdate", "maxUnavailable": 1}))]
    pub update_strategy: SidecarSetUpdateStrategy,
    /// How new pods are injected.
    #[serde(default)]
    pub injection_strategy: SidecarSetInjectionStrategy,
    /// Pull secrets added to the pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "preserved_object_list")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// How many old ControllerRevisions to keep; defaults to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 10))]
    pub revision_history_limit: Option<i32>,
    /// Annotations written into injected pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patch_pod_metadata: Vec<SidecarSetPatchPodMetadata>,
}

/// A sidecar container: a core/v1 Container plus how it is injected and upgraded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarContainer {
    /// The container itself.
    #[serde(flatten)]
    #[schemars(with = "serde_json::Value")]
    pub container: Container,
    /// BeforeAppContainer (default) or AfterAppContainer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_inject_policy: Option<PodInjectPolicy>,
    /// ColdUpgrade (default) or HotUpgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_strategy: Option<SidecarContainerUpgradeStrategy>,
    /// `enabled`: mount every volumeMount of the app containers too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_volume_policy: Option<ShareVolumePolicy>,
    /// `enabled`: also get the app containers' volumeDevices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_volume_device_policy: Option<ShareVolumePolicy>,
    /// Env copied from app containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transfer_env: Vec<TransferEnvVar>,
    /// The sidecar's resources computed at injection from the app containers' (v1.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources_policy: Option<ResourcesPolicy>,
}

/// How a sidecar's resources follow the app containers' (`ResourcesPolicy`, OpenKruise v1.9).
/// Upstream's docs also spell the fields `targetContainerMode` and `resourceExpr`; both read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesPolicy {
    /// `sum` (default) or `max` of the target containers' resources.
    #[serde(default, alias = "targetContainerMode", skip_serializing_if = "Option::is_none")]
    pub target_containers_mode: Option<TargetContainersMode>,
    /// Which containers are targets (plain containers and native sidecars, not the
    /// SidecarSets' own), by name.
    #[serde(default)]
    pub target_containers_name_regex: String,
    /// The expressions of the sidecar's limits and requests.
    #[serde(default, alias = "resourceExpr")]
    pub resources_expr: ResourcesExpr,
}

/// `sum` or `max`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TargetContainersMode {
    #[default]
    Sum,
    Max,
}

/// Expressions for limits and requests, e.g. `max(cpu*50%, 50m)`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResourcesExpr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceExprs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ResourceExprs>,
}

/// The cpu and memory expressions of limits or requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceExprs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

impl SidecarContainer {
    /// `podInjectPolicy`, defaulted.
    pub fn inject_policy(&self) -> PodInjectPolicy {
        self.pod_inject_policy.unwrap_or_default()
    }
    /// Whether `shareVolumePolicy.type` is `enabled`.
    pub fn shares_volumes(&self) -> bool {
        self.share_volume_policy.as_ref().is_some_and(|p| p.type_ == ShareVolumePolicyType::Enabled)
    }
    /// Whether `shareVolumeDevicePolicy.type` is `enabled`.
    pub fn shares_volume_devices(&self) -> bool {
        self.share_volume_device_policy
            .as_ref()
            .is_some_and(|p| p.type_ == ShareVolumePolicyType::Enabled)
    }
    /// Whether the container is upgraded hot (a working and an empty container).
    pub fn is_hot_upgrade(&self) -> bool {
        self.upgrade_strategy
            .as_ref()
            .is_some_and(|u| u.upgrade_type == Some(SidecarContainerUpgradeType::HotUpgrade))
    }
}

/// Where a sidecar goes among the pod's containers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PodInjectPolicy {
    /// Before the app containers (the default).
    #[default]
    BeforeAppContainer,
    /// After them.
    AfterAppContainer,
}

/// How an injected sidecar is upgraded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarContainerUpgradeStrategy {
    /// ColdUpgrade (default) or HotUpgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_type: Option<SidecarContainerUpgradeType>,
    /// The image the idle container of a hot-upgrade pair runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hot_upgrade_empty_image: Option<String>,
}

/// ColdUpgrade (restart with the new image) or HotUpgrade (switch to the idle twin).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SidecarContainerUpgradeType {
    #[default]
    ColdUpgrade,
    HotUpgrade,
}

/// Whether a sidecar shares the app containers' volume mounts (or devices).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ShareVolumePolicy {
    /// `enabled` or `disabled` (the default).
    #[serde(rename = "type", default)]
    pub type_: ShareVolumePolicyType,
}

/// `enabled` or `disabled`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ShareVolumePolicyType {
    Enabled,
    #[default]
    Disabled,
}

/// Env copied into the sidecar from an app container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransferEnvVar {
    /// The container to copy from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_container_name: Option<String>,
    /// The container to copy from, named by a field of the pod (its labels or annotations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_container_name_from: Option<SourceContainerNameSource>,
    /// One env var to copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_name: Option<String>,
    /// Several env vars to copy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_names: Vec<String>,
}

/// A pod field naming a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceContainerNameSource {
    /// `metadata.labels['k']`, `metadata.annotations['k']`, `metadata.name`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub field_ref: Option<ObjectFieldSelector>,
}

/// How injected sidecars are upgraded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSetUpdateStrategy {
    /// RollingUpdate (default) or NotUpdate.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<SidecarSetUpdateStrategyType>,
    /// Stop upgrading pods.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Only upgrade pods this selects (canary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// How many matched pods (number or percentage) stay at the old sidecars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<IntOrString>,
    /// How many matched pods may be unavailable during the upgrade; defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// The order in which pods are upgraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_strategy: Option<UpdatePriorityStrategy>,
    /// Spread pods with these labels over the upgrade.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scatter_strategy: Vec<UpdateScatterTerm>,
}

/// RollingUpdate or NotUpdate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SidecarSetUpdateStrategyType {
    /// Injected pods keep their sidecars.
    NotUpdate,
    /// Upgrade injected sidecars in place when only images changed (the default).
    #[default]
    RollingUpdate,
}

/// How new pods are injected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSetInjectionStrategy {
    /// Inject nothing into new pods.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Inject a pinned, earlier revision instead of the current spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<SidecarSetInjectRevision>,
}

/// A pinned revision of a SidecarSet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSetInjectRevision {
    /// The revision labelled with this custom version (the newest such).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_version: Option<String>,
    /// The ControllerRevision of this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_name: Option<String>,
    /// Always (default) or Partial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// Annotations written into injected pods.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSetPatchPodMetadata {
    /// The annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Retain (default: keep the pod's value), Overwrite, or MergePatchJson (merge a JSON
    /// object into the pod's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_policy: Option<String>,
}

/// The observed state of a SidecarSet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSetStatus {
    /// The generation this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods the SidecarSet was injected into.
    #[serde(default)]
    pub matched_pods: i32,
    /// Of these, pods with the current sidecars.
    #[serde(default)]
    pub updated_pods: i32,
    /// Of these, pods ready with their sidecars running the spec's images.
    #[serde(default)]
    pub ready_pods: i32,
    /// Pods both updated and ready.
    #[serde(default)]
    pub updated_ready_pods: i32,
    /// The ControllerRevision of the current spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_revision: Option<String>,
    /// Hash collisions met while naming the newest ControllerRevision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collision_count: Option<i32>,
}

impl SidecarSet {
    /// The CRD serving v1alpha1 (storage) and v1beta1 with one schema.
    pub fn crd_all_versions() -> CustomResourceDefinition {
        super::with_v1beta1(<Self as kube_core::CustomResourceExt>::crd())
    }
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
mod tests {
    use kinetic_machinery::schema::Schema;
    use serde_json::{Value, json};

    use super::*;

    fn crd_json() -> Value {
        serde_json::to_value(SidecarSet::crd_all_versions()).expect("the CRD serialises")
    }

    #[test]
    fn crd_snapshot() {
        let yaml = serde_yaml::to_string(&SidecarSet::crd_all_versions())
            .expect("the CRD serialises to YAML");
        expect_test::expect_file!["sidecarset.crd.yaml"].assert_eq(&yaml);
    }

    #[test]
    fn crd_is_cluster_scoped_structural_and_defaults_like_the_webhook() {
        let crd = crd_json();
        assert_eq!(crd.pointer("/spec/scope"), Some(&json!("Cluster")));
        let versions: Vec<&str> = crd["spec"]["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert_eq!(versions, ["v1alpha1", "v1beta1"]);
        let schema_json = crd.pointer("/spec/versions/0/schema/openAPIV3Schema").expect("schema");
        let causes = Schema::check_structural(schema_json, "openAPIV3Schema");
        assert!(causes.is_empty(), "{causes:#?}");
        let schema = Schema::from_json(schema_json, None).expect("the schema compiles");
        let mut obj = json!({
            "apiVersion": "apps.kruise.io/v1alpha1",
            "kind": "SidecarSet",
            "metadata": {"name": "log"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "containers": [{"name": "log", "image": "busybox", "podInjectPolicy": "AfterAppContainer",
                                "shareVolumePolicy": {"type": "enabled"}}],
            },
        });
        assert_eq!(schema.prune(&mut obj), Vec::<String>::new());
        schema.default(&mut obj);
        assert_eq!(schema.validate(&obj), vec![]);
        assert_eq!(
            obj["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "maxUnavailable": 1})
        );
        assert_eq!(obj["spec"]["revisionHistoryLimit"], json!(10));
        let ss: SidecarSet = serde_json::from_value(obj).expect("a defaulted SidecarSet reads");
        assert_eq!(ss.spec.containers[0].container.name, "log");
        assert_eq!(ss.spec.containers[0].inject_policy(), PodInjectPolicy::AfterAppContainer);
        assert!(ss.spec.containers[0].shares_volumes());
        // The flattened container round-trips with the sidecar fields beside it.
        let back = serde_json::to_value(&ss.spec.containers[0]).expect("serialises");
        assert_eq!(back["podInjectPolicy"], json!("AfterAppContainer"));
        assert_eq!(back["image"], json!("busybox"));
    }
}
