//! The `UnitedDeployment` custom resource (`apps.kruise.io/v1alpha1`), field for field as
//! OpenKruise v1.9 serves it (`apis/apps/v1alpha1/uniteddeployment_types.go`): one application
//! spread over topology subsets, each subset one workload (CloneSet, Deployment, StatefulSet or
//! Advanced StatefulSet) made from `spec.template` with the subset's node selector term,
//! tolerations and patch, and the replicas the allocator gives it.
//!
//! The workload templates are schemaless (`metadata` and `spec` both keep unknown fields), as
//! upstream marks their metadata and the apps/v1 specs: the workload itself is defaulted and
//! validated by the API server when the controller creates it. The defaults of upstream's
//! mutating webhook (`SetDefaultsUnitedDeployment`) that are plain values are schema
//! `default`s, because Kinetic has no mutating webhook: `replicas: 1`,
//! `revisionHistoryLimit: 10`, `updateStrategy.type: Manual`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorTerm, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Label on subset workloads (and their pod templates) with the subset's name
/// (`SubSetNameLabelKey`).
pub const SUBSET_NAME_LABEL: &str = "apps.kruise.io/subset-name";
/// Label on subset workloads (and their pod templates) with the UnitedDeployment's
/// ControllerRevision name (`apps.kruise.io/controller-revision-hash`, Kruise's own key, not
/// Kubernetes' `controller-revision-hash` that CloneSet pods carry).
pub const REVISION_LABEL: &str = "apps.kruise.io/controller-revision-hash";
/// Annotation on subset workloads with the raw JSON of the subset's `patch`
/// (`AnnotationSubsetPatchKey`); empty when there is none.
pub const SUBSET_PATCH_ANNOTATION: &str = "apps.kruise.io/subset-patch";
/// Default of `spec.revisionHistoryLimit`.
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;
/// Default of `topology.scheduleStrategy.adaptive.rescheduleCriticalSeconds`.
pub const DEFAULT_RESCHEDULE_CRITICAL_SECONDS: i32 = 30;
/// Default of `topology.scheduleStrategy.adaptive.unschedulableLastSeconds`.
pub const DEFAULT_UNSCHEDULABLE_LAST_SECONDS: i32 = 300;

/// The desired state of a UnitedDeployment.
// Clippy reads the repeated `type_ = "integer"` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "UnitedDeployment",
    namespaced,
    status = "UnitedDeploymentStatus",
    derive = "PartialEq",
    shortname = "ud",
    doc = "UnitedDeployment is the Schema for the uniteddeployments API",
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
    )
)]
#[serde(rename_all = "camelCase")]
pub struct UnitedDeploymentSpec {
    /// The total desired replicas of all subsets; defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 1))]
    pub replicas: Option<i32>,

    /// Selects the pods of all subsets; it must match the template's labels.
    pub selector: LabelSelector,

    /// The workload every subset is made from (exactly one of the four).
    #[serde(default)]
    pub template: SubsetTemplate,

    /// The subsets and how replicas are scheduled between them.
    #[serde(default)]
    pub topology: Topology,

    /// How a template change reaches the subsets.
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub update_strategy: UnitedDeploymentUpdateStrategy,

    /// How many old ControllerRevisions to keep; defaults to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 10))]
    pub revision_history_limit: Option<i32>,
}

/// The workload template of the subsets; exactly one is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubsetTemplate {
    /// An `apps/v1` StatefulSet per subset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stateful_set_template: Option<WorkloadTemplate>,
    /// An `apps.kruise.io/v1beta1` (Advanced) StatefulSet per subset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advanced_stateful_set_template: Option<WorkloadTemplate>,
    /// An `apps.kruise.io/v1alpha1` CloneSet per subset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_set_template: Option<WorkloadTemplate>,
    /// An `apps/v1` Deployment per subset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_template: Option<WorkloadTemplate>,
}

/// The kind of workload a [`SubsetTemplate`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubsetKind {
    StatefulSet,
    AdvancedStatefulSet,
    CloneSet,
    Deployment,
}

impl SubsetKind {
    /// Every kind, in upstream's order of precedence (`getSubsetControls`).
    pub const ALL: [SubsetKind; 4] = [
        SubsetKind::StatefulSet,
        SubsetKind::AdvancedStatefulSet,
        SubsetKind::CloneSet,
        SubsetKind::Deployment,
    ];

    /// `(apiVersion, kind, plural)` of the workload.
    pub fn gvk(self) -> (&'static str, &'static str, &'static str) {
        match self {
            SubsetKind::StatefulSet => ("apps/v1", "StatefulSet", "statefulsets"),
            SubsetKind::AdvancedStatefulSet => {
                ("apps.kruise.io/v1beta1", "StatefulSet", "statefulsets")
            }
            SubsetKind::CloneSet => ("apps.kruise.io/v1alpha1", "CloneSet", "clonesets"),
            SubsetKind::Deployment => ("apps/v1", "Deployment", "deployments"),
        }
    }

    /// The template field's name in `spec.template`.
    pub fn field(self) -> &'static str {
        match self {
            SubsetKind::StatefulSet => "statefulSetTemplate",
            SubsetKind::AdvancedStatefulSet => "advancedStatefulSetTemplate",
            SubsetKind::CloneSet => "cloneSetTemplate",
            SubsetKind::Deployment => "deploymentTemplate",
        }
    }

    /// Whether the workload has a partition the subset's `manualUpdate` partition maps to
    /// (upstream's Deployment adapter has none).
    pub fn has_partition(self) -> bool {
        self != SubsetKind::Deployment
    }
}

impl SubsetTemplate {
    /// The template in use and its kind, in upstream's order of precedence.
    pub fn get(&self) -> Option<(SubsetKind, &WorkloadTemplate)> {
        [
            (SubsetKind::StatefulSet, &self.stateful_set_template),
            (SubsetKind::AdvancedStatefulSet, &self.advanced_stateful_set_template),
            (SubsetKind::CloneSet, &self.clone_set_template),
            (SubsetKind::Deployment, &self.deployment_template),
        ]
        .into_iter()
        .find_map(|(k, t)| t.as_ref().map(|t| (k, t)))
    }
}

/// A workload template: its metadata and spec, both schemaless.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkloadTemplate {
    /// Labels and annotations the workload gets.
    #[serde(default)]
    #[schemars(schema_with = "preserved_object")]
    pub metadata: ObjectMeta,
    /// The workload's spec (its `replicas`, `selector` and partition are the controller's).
    #[serde(default)]
    #[schemars(schema_with = "preserved_object")]
    pub spec: Value,
}

/// How a template change reaches the subsets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnitedDeploymentUpdateStrategy {
    /// `Manual` (the only type, and the default).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Manual"))]
    pub type_: Option<String>,
    /// The partitions of a Manual update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual_update: Option<ManualUpdate>,
}

/// Per-subset partitions: pods of the subset kept at the old revision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManualUpdate {
    /// Subset name → partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<BTreeMap<String, i32>>,
}

/// The subsets and the scheduling strategy between them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Topology {
    /// One workload per subset, named `{unitedDeployment}-{subset}-{random}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
    /// Fixed (default) or Adaptive.
    #[serde(default, skip_serializing_if = "ScheduleStrategy::is_empty")]
    pub schedule_strategy: ScheduleStrategy,
}

/// One subset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subset {
    /// A DNS label, unique among the subsets.
    pub name: String,
    /// Added to every term of the pods' required node affinity; immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector_term: Option<NodeSelectorTerm>,
    /// Added to the pods' tolerations; immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// A fixed number or a percentage of `spec.replicas` (rounded half up); exclusive with
    /// min/max.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<IntOrString>,
    /// Elastic lower bound, satisfied first in subset order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<IntOrString>,
    /// Elastic upper bound; unset means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<IntOrString>,
    /// A strategic merge patch applied to the subset's pod template (schemaless).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_object")]
    pub patch: Option<Value>,
}

/// Fixed or Adaptive scheduling between subsets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStrategy {
    /// `Fixed` (default, also when empty) or `Adaptive`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Adaptive", "Fixed", ""]))]
    pub type_: Option<String>,
    /// The Adaptive parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<AdaptiveStrategy>,
}

impl ScheduleStrategy {
    fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Whether the type is `Adaptive`.
    pub fn is_adaptive(&self) -> bool {
        self.type_.as_deref() == Some("Adaptive")
    }

    /// `rescheduleCriticalSeconds`, 30 by default.
    pub fn reschedule_critical_seconds(&self) -> i32 {
        self.adaptive
            .as_ref()
            .and_then(|a| a.reschedule_critical_seconds)
            .unwrap_or(DEFAULT_RESCHEDULE_CRITICAL_SECONDS)
    }

    /// `unschedulableLastSeconds`, 300 by default.
    pub fn unschedulable_last_seconds(&self) -> i32 {
        self.adaptive
            .as_ref()
            .and_then(|a| a.unschedulable_last_seconds)
            .unwrap_or(DEFAULT_UNSCHEDULABLE_LAST_SECONDS)
    }
}

/// Adaptive scheduling parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdaptiveStrategy {
    /// A pod that failed to schedule and is still Pending this long after its creation makes
    /// its subset unschedulable, and its replica moves to the next subsets; default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reschedule_critical_seconds: Option<i32>,
    /// How long a subset stays unschedulable before it is tried again; default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unschedulable_last_seconds: Option<i32>,
}

/// The observed state of a UnitedDeployment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnitedDeploymentStatus {
    /// The generation this status was computed for.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub observed_generation: i64,
    /// Ready pods of all subsets.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ready_replicas: i32,
    /// Pods of all subsets.
    #[serde(default)]
    pub replicas: i32,
    /// Pods at the updated revision.
    #[serde(default)]
    pub updated_replicas: i32,
    /// Ready pods at the updated revision.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub updated_ready_replicas: i32,
    /// Hash collisions met while naming the newest ControllerRevision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collision_count: Option<i32>,
    /// The revision every pod was at when the last update completed.
    #[serde(default)]
    pub current_revision: String,
    /// The replicas the allocator gave each subset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset_replicas: Option<BTreeMap<String, i32>>,
    /// Per-subset conditions (`Schedulable`, for the Adaptive strategy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset_statuses: Option<Vec<SubsetStatus>>,
    /// SubsetProvisioned, SubsetUpdated, SubsetFailure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<UnitedDeploymentCondition>>,
    /// The update's revision and partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_status: Option<UpdateStatus>,
    /// The selector in string form, for the scale subresource (HPA).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label_selector: String,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

/// Condition types of a UnitedDeployment.
pub mod condition {
    /// Every subset of the topology exists and no other does.
    pub const SUBSET_PROVISIONED: &str = "SubsetProvisioned";
    /// Every subset was updated to the revision, replicas and partition wanted.
    pub const SUBSET_UPDATED: &str = "SubsetUpdated";
    /// A subset reports a failure.
    pub const SUBSET_FAILURE: &str = "SubsetFailure";
    /// Per-subset condition: new pods of the subset can be scheduled.
    pub const SCHEDULABLE: &str = "Schedulable";
}

/// One condition of a UnitedDeployment (or of a subset, in `subsetStatuses`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnitedDeploymentCondition {
    /// The constants in [`condition`].
    #[serde(rename = "type", default)]
    pub type_: String,
    /// True, False or Unknown.
    #[serde(default)]
    pub status: String,
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

/// The update's progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStatus {
    /// The revision the subsets are being updated to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub updated_revision: String,
    /// The partition each subset was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_partitions: Option<BTreeMap<String, i32>>,
}

/// The status of one subset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubsetStatus {
    /// The subset's name.
    #[serde(default)]
    pub name: String,
    /// Unused upstream.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replicas: i32,
    /// Unused upstream.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub partition: i32,
    /// `Schedulable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<UnitedDeploymentCondition>>,
}

/// Schema of a schemaless object field: any object, kept as it is.
fn preserved_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

#[cfg(test)]
mod tests {
    use kinetic_machinery::schema::Schema;
    use kube_core::CustomResourceExt;
    use serde_json::{Value, json};

    use super::*;

    fn crd_json() -> Value {
        serde_json::to_value(UnitedDeployment::crd()).expect("the CRD serialises")
    }

    fn schema_of(crd: &Value) -> &Value {
        crd.pointer("/spec/versions/0/schema/openAPIV3Schema").expect("the CRD has a schema")
    }

    /// The generated CRD, as YAML, so every schema change shows in review.
    #[test]
    fn crd_snapshot() {
        let yaml =
            serde_yaml::to_string(&UnitedDeployment::crd()).expect("the CRD serialises to YAML");
        expect_test::expect_file!["uniteddeployment.crd.yaml"].assert_eq(&yaml);
    }

    #[test]
    fn crd_schema_is_structural() {
        let crd = crd_json();
        let causes =
            Schema::check_structural(schema_of(&crd), "spec.versions[0].schema.openAPIV3Schema");
        assert!(causes.is_empty(), "{causes:#?}");
        assert_eq!(crd.pointer("/spec/names/shortNames"), Some(&json!(["ud"])));
    }

    /// The manual's example (a StatefulSet template, three subsets, fixed and percentage
    /// replicas, Manual partitions) survives pruning unchanged and gets upstream's defaults.
    #[test]
    fn manual_example_defaults_and_reads_back() {
        let crd = crd_json();
        let schema = Schema::from_json(schema_of(&crd), None).expect("the schema compiles");
        let mut obj = json!({
            "apiVersion": "apps.kruise.io/v1alpha1",
            "kind": "UnitedDeployment",
            "metadata": {"name": "sample-ud", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "sample"}},
                "template": {"statefulSetTemplate": {
                    "metadata": {"labels": {"app": "sample"}},
                    "spec": {"selector": {"matchLabels": {"app": "sample"}},
                             "template": {"metadata": {"labels": {"app": "sample"}},
                                          "spec": {"containers": [{"image": "nginx:alpine", "name": "nginx"}]}}},
                }},
                "topology": {"subsets": [
                    {"name": "subset-a", "replicas": 1, "nodeSelectorTerm": {"matchExpressions": [
                        {"key": "node", "operator": "In", "values": ["zone-a"]}]}},
                    {"name": "subset-b", "replicas": "50%", "patch": {"metadata": {"labels": {"x": "y"}}}},
                    {"name": "subset-c"},
                ]},
                "updateStrategy": {"manualUpdate": {"partitions": {"subset-a": 0}}},
            },
        });
        let before = obj.clone();
        assert_eq!(schema.prune(&mut obj), Vec::<String>::new());
        assert_eq!(obj, before);
        schema.default(&mut obj);
        assert_eq!(schema.validate(&obj), vec![]);
        assert_eq!(obj["spec"]["replicas"], json!(1));
        assert_eq!(obj["spec"]["revisionHistoryLimit"], json!(10));
        assert_eq!(obj["spec"]["updateStrategy"]["type"], json!("Manual"));
        let ud: UnitedDeployment = serde_json::from_value(obj).expect("it deserialises");
        let (kind, t) = ud.spec.template.get().expect("a template");
        assert_eq!(kind, SubsetKind::StatefulSet);
        assert_eq!(t.spec["template"]["spec"]["containers"][0]["name"], json!("nginx"));
        assert_eq!(ud.spec.topology.subsets[1].replicas, Some(IntOrString::String("50%".into())));
    }

    #[test]
    fn schema_rejects_unknown_schedule_type() {
        let crd = crd_json();
        let schema = Schema::from_json(schema_of(&crd), None).expect("the schema compiles");
        let mut obj = json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "UnitedDeployment",
            "metadata": {"name": "u"},
            "spec": {"selector": {}, "topology": {"scheduleStrategy": {"type": "Sometimes"}}},
        });
        schema.default(&mut obj);
        let fields: Vec<String> = schema.validate(&obj).into_iter().map(|c| c.field).collect();
        assert_eq!(fields, ["spec.topology.scheduleStrategy.type"]);
    }
}
