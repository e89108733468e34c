//! OpenKruise's Advanced StatefulSet (`apps.kruise.io/v1beta1` `StatefulSet`, short name
//! `asts`), field for field as OpenKruise v1.9 serves it (`apis/apps/v1beta1/statefulset_types.go`):
//! the `apps/v1` StatefulSet spec plus in-place update (`podUpdatePolicy`), `maxUnavailable`,
//! `paused`, `minReadySeconds` under `rollingUpdate`, `reserveOrdinals`, `lifecycle`,
//! `scaleStrategy.maxUnavailable`.
//!
//! `apps/v1` StatefulSet is a strict subset of it (same JSON names), so the controller in
//! `kinetic-controllers` reads both kinds into [`StatefulSetSpec`] and runs one algorithm.
//!
//! The CRD serves `v1beta1` (storage) and `v1alpha1` with one schema, as upstream. The template
//! and `volumeClaimTemplates` are schemaless (upstream's `+kubebuilder:validation:Schemaless`).
//! Defaults that Kruise's mutating webhook sets depend on other fields (`rollingUpdate` only
//! for the RollingUpdate type), so the embedded API server applies them at admission
//! (`apiserver::kruise`) and the controller reads an unset field as its default.

use k8s_openapi::api::apps::v1::StatefulSetCondition;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PodTemplateSpec};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{InPlaceUpdateStrategy, Lifecycle, UpdatePriorityStrategy};

/// Label on pods with their name (`statefulset.kubernetes.io/pod-name`), so a Service can
/// select one replica.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// Label on pods with their ordinal (`apps.kubernetes.io/pod-index`, Kubernetes 1.28+).
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// The desired state of an Advanced StatefulSet (and, read through the same type, of an
/// `apps/v1` StatefulSet).
// Clippy reads the repeated `priority = 1` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "apps.kruise.io",
    version = "v1beta1",
    kind = "StatefulSet",
    namespaced,
    status = "StatefulSetStatus",
    derive = "PartialEq",
    shortname = "asts",
    doc = "StatefulSet is the Schema for the statefulsets API",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.labelSelector"
    ),
    printcolumn(
        name = "DESIRED",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "The desired number of pods."
    ),
    printcolumn(
        name = "CURRENT",
        type_ = "integer",
        json_path = ".status.replicas",
        description = "The number of currently all pods."
    ),
    printcolumn(
        name = "UPDATED",
        type_ = "integer",
        json_path = ".status.updatedReplicas",
        description = "The number of pods updated."
    ),
    printcolumn(
        name = "READY",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "The number of pods ready."
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC."
    ),
    printcolumn(
        name = "CONTAINERS",
        type_ = "string",
        priority = 1,
        json_path = ".spec.template.spec.containers[*].name",
        description = "The containers of currently advanced statefulset."
    ),
    printcolumn(
        name = "IMAGES",
        type_ = "string",
        priority = 1,
        json_path = ".spec.template.spec.containers[*].image",
        description = "The images of currently advanced statefulset."
    )
)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSetSpec {
    /// The desired number of pods (reserved ordinals not counted); defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Selects the pods the set owns; it must match the template's labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// The pods to create (schemaless, as upstream).
    #[schemars(schema_with = "super::cloneset::preserved_object")]
    pub template: PodTemplateSpec,
    /// Claims each pod gets its own copy of, named `{claim}-{set}-{ordinal}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::cloneset::preserved_object_list")]
    pub volume_claim_templates: Option<Vec<PersistentVolumeClaim>>,
    /// The governing Service: pods get `subdomain` = this and `hostname` = their name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// `OrderedReady` (default) or `Parallel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_management_policy: Option<PodManagementPolicy>,
    /// How pods are updated to a new template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<StatefulSetUpdateStrategy>,
    /// How many old ControllerRevisions to keep; defaults to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i32>,
    /// Seconds a pod must have been ready to count as available (apps/v1's field; Advanced
    /// StatefulSet has it under `updateStrategy.rollingUpdate` too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
    /// Ordinals to skip (integers, or ranges such as `"3-5"`); `replicas` pods are created at
    /// the other ordinals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve_ordinals: Option<Vec<IntOrString>>,
    /// Hooks before deletion and around in-place updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
    /// How pods are created and deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_strategy: Option<StatefulSetScaleStrategy>,
    /// What happens to the claims when the set is deleted or scaled down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_retention_policy: Option<PvcRetentionPolicy>,
    /// The first ordinal (`ordinals.start`, default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordinals: Option<StatefulSetOrdinals>,
}

/// `OrderedReady` or `Parallel`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PodManagementPolicy {
    /// One pod at a time, in ordinal order, each Running and Ready before the next.
    #[default]
    OrderedReady,
    /// All at once.
    Parallel,
}

/// `updateStrategy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSetUpdateStrategy {
    /// `RollingUpdate` (default) or `OnDelete`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<StatefulSetUpdateStrategyType>,
    /// Parameters of RollingUpdate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdateStatefulSetStrategy>,
}

/// `RollingUpdate` or `OnDelete`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StatefulSetUpdateStrategyType {
    /// Update pods from the highest ordinal down.
    #[default]
    RollingUpdate,
    /// Only pods deleted by someone else get the new template.
    OnDelete,
}

/// `updateStrategy.rollingUpdate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdateStatefulSetStrategy {
    /// Pods below this index keep the current revision; defaults to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// How many pods may be unavailable during the update (number or percentage of replicas,
    /// rounded down, at least 1); defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// `ReCreate` (default), `InPlaceIfPossible` or `InPlaceOnly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_update_policy: Option<PodUpdatePolicy>,
    /// Stop updating pods (scaling continues).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Update order other than by ordinal (Parallel only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unordered_update: Option<UnorderedUpdateStrategy>,
    /// In-place update tuning (grace period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_place_update_strategy: Option<InPlaceUpdateStrategy>,
    /// Seconds an updated pod must be ready before the next one is updated (0..=300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
}

/// How a pod is moved to a new revision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PodUpdatePolicy {
    /// Delete the pod; it is recreated with the same name and claims.
    #[default]
    ReCreate,
    /// In place when only images (and template labels/annotations) changed, else recreate.
    InPlaceIfPossible,
    /// Only in place; other changes are not rolled out.
    InPlaceOnly,
}

/// `rollingUpdate.unorderedUpdate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnorderedUpdateStrategy {
    /// The order in which pods are updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_strategy: Option<UpdatePriorityStrategy>,
}

/// `scaleStrategy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSetScaleStrategy {
    /// Parallel scale-up creates pods only while fewer than this many are unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

/// `persistentVolumeClaimRetentionPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcRetentionPolicy {
    /// `Retain` (default) or `Delete`: the claims when the set is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_deleted: Option<RetentionPolicyType>,
    /// `Retain` (default) or `Delete`: the claims of pods removed by a scale-down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_scaled: Option<RetentionPolicyType>,
}

/// `Retain` or `Delete`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RetentionPolicyType {
    /// Keep the claims.
    #[default]
    Retain,
    /// Delete the claims (through ownerReferences and the garbage collector).
    Delete,
}

/// `ordinals`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSetOrdinals {
    /// The first ordinal; defaults to 0.
    #[serde(default)]
    pub start: i32,
}

/// The observed state (apps/v1's fields plus Kruise's updated-ready/available counts and
/// `labelSelector` for the scale subresource).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSetStatus {
    /// The generation this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods the set owns.
    #[serde(default)]
    pub replicas: i32,
    /// Owned pods that are Ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Owned pods Ready for minReadySeconds.
    #[serde(default)]
    pub available_replicas: i32,
    /// Owned pods at `currentRevision`.
    #[serde(default)]
    pub current_replicas: i32,
    /// Owned pods at `updateRevision`.
    #[serde(default)]
    pub updated_replicas: i32,
    /// Owned pods at `updateRevision` that are Ready (Kruise only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_ready_replicas: Option<i32>,
    /// Owned pods at `updateRevision` that are available (Kruise only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_available_replicas: Option<i32>,
    /// The revision of the pods below the partition / before the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    /// The revision of the current template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,
    /// Hash collisions met while naming the newest ControllerRevision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collision_count: Option<i32>,
    /// The latest observations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<StatefulSetCondition>>,
    /// The selector in string form, for the scale subresource (Kruise only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
}

impl StatefulSet {
    /// The CRD with both served versions: `v1beta1` (storage) and `v1alpha1`, same schema.
    pub fn crd_all_versions() -> CustomResourceDefinition {
        let mut crd = <Self as kube_core::CustomResourceExt>::crd();
        if let Some(beta) = crd.spec.versions.first().cloned() {
            let mut alpha = beta;
            alpha.name = "v1alpha1".to_owned();
            alpha.storage = false;
            crd.spec.versions.push(alpha);
        }
        crd
    }
}

#[cfg(test)]
mod tests {
    use kinetic_machinery::schema::Schema;
    use serde_json::{Value, json};

    use super::*;

    fn crd_json() -> Value {
        serde_json::to_value(StatefulSet::crd_all_versions()).expect("the CRD serialises")
    }

    /// The generated CRD, as YAML, so every schema change shows in review.
    #[test]
    fn crd_snapshot() {
        let yaml = serde_yaml::to_string(&StatefulSet::crd_all_versions())
            .expect("the CRD serialises to YAML");
        expect_test::expect_file!["statefulset.crd.yaml"].assert_eq(&yaml);
    }

    #[test]
    fn crd_schema_is_structural_and_serves_both_versions() {
        let crd = crd_json();
        let schema = crd.pointer("/spec/versions/0/schema/openAPIV3Schema").expect("schema");
        let causes = Schema::check_structural(schema, "openAPIV3Schema");
        assert!(causes.is_empty(), "{causes:#?}");
        assert_eq!(crd.pointer("/spec/versions/0/name"), Some(&json!("v1beta1")));
        assert_eq!(crd.pointer("/spec/versions/1/name"), Some(&json!("v1alpha1")));
        assert_eq!(crd.pointer("/spec/names/shortNames"), Some(&json!(["asts"])));
    }

    /// An apps/v1 StatefulSet reads into the Advanced type unchanged (one controller for both).
    #[test]
    fn apps_v1_statefulset_reads_as_advanced() {
        let v1 = json!({
            "replicas": 3, "serviceName": "web", "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "c", "image": "i"}]}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1, "maxUnavailable": 2}},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"},
            "ordinals": {"start": 5},
            "minReadySeconds": 3,
        });
        let spec: StatefulSetSpec = serde_json::from_value(v1).expect("reads");
        assert_eq!(spec.pod_management_policy, Some(PodManagementPolicy::Parallel));
        assert_eq!(spec.ordinals.map(|o| o.start), Some(5));
        let ru = spec.update_strategy.and_then(|u| u.rolling_update).expect("rollingUpdate");
        assert_eq!((ru.partition, ru.max_unavailable), (Some(1), Some(IntOrString::Int(2))));
    }
}
