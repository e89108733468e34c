//! The `CloneSet` custom resource (`apps.kruise.io/v1alpha1`), field for field as OpenKruise
//! v1.9 serves it (`apis/apps/v1alpha1/cloneset_types.go`, with `progressDeadlineSeconds`,
//! the `OnDelete` type, `updatedAvailableReplicas` and conditions' `lastUpdateTime`).
//!
//! [`CloneSet::crd`] (from [`kube_core::CustomResourceExt`]) generates the
//! CustomResourceDefinition. Its schema differs from the kubebuilder one upstream ships in
//! two deliberate ways:
//!
//! - The defaults of `apis/apps/defaults/v1alpha1.go` (`SetDefaultsCloneSet`) that are plain
//!   values are schema `default`s, because Kinetic has no mutating webhook:
//!   `replicas: 1`, `revisionHistoryLimit: 10`, and under `updateStrategy` (itself defaulted to
//!   `{}` so that its fields get theirs) `type: ReCreate`, `partition: 0`,
//!   `maxUnavailable: "20%"`, `maxSurge: 0`.
//! - `updateStrategy.type` is an enum in the schema (upstream's webhook rejects other values).
//!
//! Upstream defaults that a schema cannot express, which the controller applies itself:
//!
//! - `inPlaceUpdateStrategy: {}` when the type is InPlaceIfPossible or InPlaceOnly (it depends
//!   on another field's value); it has no observable effect because every field of it is
//!   optional with a zero default.
//! - The pod template defaults (`SetDefaultPodSpec`: the core/v1 defaults of containers,
//!   probes, volumes, ...) and the PersistentVolumeClaim defaults of `volumeClaimTemplates`:
//!   both fields are schemaless (`x-kubernetes-preserve-unknown-fields`), as upstream, and the
//!   API server applies the core/v1 defaults when the controller creates the pods and PVCs. A
//!   revision hash over the undefaulted template therefore differs from upstream's for the same
//!   manifest; it is stable, which is all the controller needs.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{InPlaceUpdateStrategy, Lifecycle, UpdatePriorityStrategy};

/// Default of `updateStrategy.maxUnavailable` (`DefaultCloneSetMaxUnavailable`).
pub const DEFAULT_MAX_UNAVAILABLE: &str = "20%";
/// Default of `spec.revisionHistoryLimit`.
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;
/// Length of the random instance id in pod names `{cloneset}-{id}` (`LengthOfInstanceID`).
pub const INSTANCE_ID_LEN: usize = 5;

/// The desired state of a CloneSet.
// Clippy reads the repeated `priority = 1` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "CloneSet",
    namespaced,
    status = "CloneSetStatus",
    derive = "PartialEq",
    shortname = "clone",
    doc = "CloneSet is the Schema for the clonesets API",
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
        name = "UPDATED",
        type_ = "integer",
        json_path = ".status.updatedReplicas",
        description = "The number of pods updated."
    ),
    printcolumn(
        name = "UPDATED_READY",
        type_ = "integer",
        json_path = ".status.updatedReadyReplicas",
        description = "The number of pods updated and ready."
    ),
    printcolumn(
        name = "UPDATED_AVAILABLE",
        type_ = "integer",
        json_path = ".status.updatedAvailableReplicas",
        description = "The number of pods updated and available."
    ),
    printcolumn(
        name = "READY",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "The number of pods ready."
    ),
    printcolumn(
        name = "TOTAL",
        type_ = "integer",
        json_path = ".status.replicas",
        description = "The number of currently all pods."
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
        description = "The containers of currently cloneset."
    ),
    printcolumn(
        name = "IMAGES",
        type_ = "string",
        priority = 1,
        json_path = ".spec.template.spec.containers[*].image",
        description = "The images of currently cloneset."
    ),
    printcolumn(
        name = "SELECTOR",
        type_ = "string",
        priority = 1,
        json_path = ".status.labelSelector",
        description = "The selector of currently cloneset."
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CloneSetSpec {
    /// The desired number of pods; defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 1))]
    pub replicas: Option<i32>,

    /// Selects the pods the CloneSet owns; it must match the template's labels.
    pub selector: LabelSelector,

    /// The pods to create. Schemaless in the CRD, as upstream
    /// (`+kubebuilder:validation:Schemaless`, `+kubebuilder:pruning:PreserveUnknownFields`).
    #[schemars(schema_with = "preserved_object")]
    pub template: PodTemplateSpec,

    /// Claims each pod gets its own copy of, named `{claim}-{cloneset}-{instance id}`; the
    /// items are schemaless, as upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_object_list")]
    pub volume_claim_templates: Option<Vec<PersistentVolumeClaim>>,

    /// How pods are created and deleted.
    #[serde(default)]
    pub scale_strategy: CloneSetScaleStrategy,

    /// How pods are updated to a new template.
    #[serde(default)]
    pub update_strategy: CloneSetUpdateStrategy,

    /// How many old ControllerRevisions to keep; defaults to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 10))]
    pub revision_history_limit: Option<i32>,

    /// Seconds a pod must have been ready to count as available; defaults to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,

    /// Hooks before a pod becomes Normal, before deletion and around in-place updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,

    /// Seconds the rollout may go without progress before the `Progressing` condition turns
    /// False with reason ProgressDeadlineExceeded (v1.9); unset means no deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<i32>,
}

/// How a CloneSet creates and deletes pods.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloneSetScaleStrategy {
    /// Names of pods to delete (and replace, unless replicas drop too); the controller drops
    /// names of pods that no longer exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods_to_delete: Option<Vec<String>>,
    /// Caps creations while this many pods (number or percentage of replicas) are unavailable;
    /// only scale-up is limited. Unset means no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// Do not give a replacement pod the instance id (and so the PVCs) of a pod deleted
    /// outside the controller.
    #[serde(rename = "disablePVCReuse", default, skip_serializing_if = "Option::is_none")]
    pub disable_pvc_reuse: Option<bool>,
}

/// How a CloneSet updates pods to a new revision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloneSetUpdateStrategy {
    /// ReCreate (default), InPlaceIfPossible, InPlaceOnly or OnDelete.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "ReCreate"))]
    pub type_: Option<CloneSetUpdateStrategyType>,
    /// How many pods (number, or percentage of replicas rounded up) stay at old revisions;
    /// defaults to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 0))]
    pub partition: Option<IntOrString>,
    /// How many pods may be unavailable during an update or scale (number, or percentage of
    /// replicas rounded up, or down when maxSurge > 0); defaults to 20%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "20%"))]
    pub max_unavailable: Option<IntOrString>,
    /// How many pods may exist above replicas during an update or specified delete (number,
    /// or percentage rounded up); defaults to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 0))]
    pub max_surge: Option<IntOrString>,
    /// Stop updating pods (scaling continues).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// The order in which pods are updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_strategy: Option<UpdatePriorityStrategy>,
    /// Spread pods carrying these labels over the update batches; applied after the priority
    /// order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scatter_strategy: Option<Vec<UpdateScatterTerm>>,
    /// In-place update tuning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_place_update_strategy: Option<InPlaceUpdateStrategy>,
}

/// How pods are updated: ReCreate (default), InPlaceIfPossible, InPlaceOnly or OnDelete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum CloneSetUpdateStrategyType {
    /// Delete old pods and create new ones.
    #[default]
    ReCreate,
    /// Update in place when only images (and template labels/annotations) changed, else
    /// recreate.
    InPlaceIfPossible,
    /// Only update in place; other changes are refused.
    InPlaceOnly,
    /// Do not update running pods; pods get the new revision only when recreated (v1.9).
    OnDelete,
}

/// One scatter term: pods with label `key=value` are spread over the update order
/// (`apis/apps/v1alpha1/scatter_strategy.go`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateScatterTerm {
    /// Label key.
    pub key: String,
    /// Label value.
    pub value: String,
}

/// The observed state of a CloneSet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloneSetStatus {
    /// The generation this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods owned by the CloneSet.
    pub replicas: i32,
    /// Owned pods that are ready (Ready and `InPlaceUpdateReady` not False).
    pub ready_replicas: i32,
    /// Owned pods ready for minReadySeconds and in lifecycle state Normal.
    pub available_replicas: i32,
    /// Owned pods at the update revision.
    pub updated_replicas: i32,
    /// Owned pods at the update revision that are ready.
    pub updated_ready_replicas: i32,
    /// Owned pods at the update revision that are available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_available_replicas: Option<i32>,
    /// replicas - partition: how many pods the rollout should update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_updated_replicas: Option<i32>,
    /// The ControllerRevision name of the current template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,
    /// The ControllerRevision all pods were at when the last rollout completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    /// Hash collisions met while naming the newest ControllerRevision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collision_count: Option<i32>,
    /// The latest observations of the CloneSet's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<CloneSetCondition>>,
    /// The selector in string form, for the scale subresource (HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
}

/// Condition types of a CloneSet.
pub mod condition {
    /// Creating or deleting pods or PVCs failed.
    pub const FAILED_SCALE: &str = "FailedScale";
    /// Updating pods failed.
    pub const FAILED_UPDATE: &str = "FailedUpdate";
    /// Rollout progress, when `progressDeadlineSeconds` is set (v1.9).
    pub const PROGRESSING: &str = "Progressing";

    /// Reasons of the `Progressing` condition.
    pub mod reason {
        /// The rollout is going on (True).
        pub const UPDATED: &str = "CloneSetUpdated";
        /// Every pod is updated and available (True).
        pub const AVAILABLE: &str = "CloneSetAvailable";
        /// The update is paused (True).
        pub const PAUSED: &str = "CloneSetProgressPaused";
        /// The pods outside the partition are updated and available (True).
        pub const PARTITION_AVAILABLE: &str = "CloneSetProgressPartitionAvailable";
        /// No progress within `progressDeadlineSeconds` (False).
        pub const DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
    }
}

/// One condition of a CloneSet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloneSetCondition {
    /// FailedScale, FailedUpdate or Progressing (the constants in [`condition`]).
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// Last time the condition was updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    /// Last time the condition changed status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Machine-readable reason of the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Schema of a schemaless object field: any object, kept as it is.
pub(crate) fn preserved_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
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
    use kube_core::CustomResourceExt;
    use serde_json::{Value, json};

    use super::*;

    fn crd_json() -> Value {
        serde_json::to_value(CloneSet::crd()).expect("the CRD serialises")
    }

    fn schema_of(crd: &Value) -> &Value {
        crd.pointer("/spec/versions/0/schema/openAPIV3Schema").expect("the CRD has a schema")
    }

    /// The generated CRD, as YAML, so every schema change shows in review.
    #[test]
    fn crd_snapshot() {
        let yaml = serde_yaml::to_string(&CloneSet::crd()).expect("the CRD serialises to YAML");
        expect_test::expect_file!["cloneset.crd.yaml"].assert_eq(&yaml);
    }

    /// Our API server accepts only structural schemas; this is the check it runs on create.
    #[test]
    fn crd_schema_is_structural() {
        let crd = crd_json();
        let causes =
            Schema::check_structural(schema_of(&crd), "spec.versions[0].schema.openAPIV3Schema");
        assert!(causes.is_empty(), "{causes:#?}");
    }

    /// A minimal CloneSet gets upstream's webhook defaults from the schema alone, and a
    /// defaulted object reads back into the Rust types.
    #[test]
    fn schema_applies_upstream_defaults() {
        let crd = crd_json();
        let schema = Schema::from_json(schema_of(&crd), None).expect("the schema compiles");
        let mut obj = json!({
            "apiVersion": "apps.kruise.io/v1alpha1",
            "kind": "CloneSet",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1", "x-unknown": 1}]},
                },
            },
        });
        assert_eq!(schema.prune(&mut obj), Vec::<String>::new());
        schema.default(&mut obj);
        assert_eq!(schema.validate(&obj), vec![]);
        assert_eq!(obj["spec"]["replicas"], json!(1));
        assert_eq!(obj["spec"]["revisionHistoryLimit"], json!(10));
        assert_eq!(obj["spec"]["scaleStrategy"], json!({}));
        assert_eq!(
            obj["spec"]["updateStrategy"],
            json!({"type": "ReCreate", "partition": 0, "maxUnavailable": "20%", "maxSurge": 0})
        );
        // The template is schemaless: unknown fields in it survive pruning.
        assert_eq!(obj["spec"]["template"]["spec"]["containers"][0]["x-unknown"], json!(1));

        let cs: CloneSet = serde_json::from_value(obj).expect("a defaulted CloneSet deserialises");
        assert_eq!(cs.spec.replicas, Some(1));
        assert_eq!(cs.spec.update_strategy.type_, Some(CloneSetUpdateStrategyType::ReCreate));
        assert_eq!(
            cs.spec.update_strategy.max_unavailable,
            Some(IntOrString::String(DEFAULT_MAX_UNAVAILABLE.into()))
        );
    }

    /// Values the schema must refuse: an unknown update type, a non-int-or-string partition.
    #[test]
    fn schema_rejects_bad_strategy() {
        let crd = crd_json();
        let schema = Schema::from_json(schema_of(&crd), None).expect("the schema compiles");
        let mut obj = json!({
            "apiVersion": "apps.kruise.io/v1alpha1",
            "kind": "CloneSet",
            "metadata": {"name": "web"},
            "spec": {
                "selector": {},
                "template": {},
                "updateStrategy": {"type": "Rolling", "partition": true},
            },
        });
        schema.default(&mut obj);
        let mut fields: Vec<String> = schema.validate(&obj).into_iter().map(|c| c.field).collect();
        fields.sort();
        assert_eq!(fields, ["spec.updateStrategy.partition", "spec.updateStrategy.type"]);
    }

    #[test]
    fn status_and_scale_subresources() {
        let crd = crd_json();
        assert_eq!(
            crd.pointer("/spec/versions/0/subresources"),
            Some(&json!({
                "scale": {
                    "labelSelectorPath": ".status.labelSelector",
                    "specReplicasPath": ".spec.replicas",
                    "statusReplicasPath": ".status.replicas",
                },
                "status": {},
            }))
        );
        assert_eq!(crd.pointer("/spec/names/shortNames"), Some(&json!(["clone"])));
    }
}
