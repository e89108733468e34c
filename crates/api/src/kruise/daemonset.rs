//! OpenKruise's Advanced DaemonSet (`apps.kruise.io/v1alpha1` `DaemonSet`), field for field as
//! OpenKruise v1.9 serves it (`apis/apps/v1alpha1/daemonset_types.go`): the `apps/v1`
//! DaemonSet plus `rollingUpdate.{rollingUpdateType, selector, partition, paused}`,
//! `burstReplicas` and `lifecycle` (only `preDelete` is used upstream).
//!
//! [`DaemonSet::crd`] generates the CustomResourceDefinition. Like the CloneSet's, its schema
//! carries the plain-value defaults of upstream's `SetDefaultsDaemonSet`
//! (`revisionHistoryLimit: 10`, `burstReplicas: 250`, `updateStrategy.type: RollingUpdate`);
//! the defaults that depend on other fields (`rollingUpdate` only for RollingUpdate,
//! `maxUnavailable: 1` only when `maxSurge` is unset) are applied by the embedded server's
//! Kruise admission and, on a real cluster without the webhook, read the same way by the
//! controller.

use k8s_openapi::api::apps::v1::DaemonSetCondition;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Lifecycle;

/// Label on DaemonSet pods with the DaemonSet's `metadata.generation` at their creation
/// (upstream's `pod-template-generation`, `extensions.DaemonSetTemplateGenerationKey`).
pub const POD_TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
/// Default of `spec.burstReplicas`: at most this many pods are created per pass.
pub const DEFAULT_BURST_REPLICAS: i32 = 250;
/// Default of `spec.revisionHistoryLimit`.
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;

/// The desired state of an Advanced DaemonSet.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "DaemonSet",
    namespaced,
    status = "DaemonSetStatus",
    derive = "PartialEq",
    shortname = "daemon",
    shortname = "ads",
    doc = "DaemonSet is the Schema for the daemonsets API",
    printcolumn(
        name = "DESIRED",
        type_ = "integer",
        json_path = ".status.desiredNumberScheduled",
        description = "The desired number of pods."
    ),
    printcolumn(
        name = "CURRENT",
        type_ = "integer",
        json_path = ".status.currentNumberScheduled",
        description = "The current number of pods."
    ),
    printcolumn(
        name = "READY",
        type_ = "integer",
        json_path = ".status.numberReady",
        description = "The ready number of pods."
    ),
    printcolumn(
        name = "UP-TO-DATE",
        type_ = "integer",
        json_path = ".status.updatedNumberScheduled",
        description = "The updated number of pods."
    ),
    printcolumn(
        name = "AVAILABLE",
        type_ = "integer",
        json_path = ".status.numberAvailable",
        description = "The updated number of pods."
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
        description = "The containers of currently  daemonset."
    ),
    printcolumn(
        name = "IMAGES",
        type_ = "string",
        priority = 1,
        json_path = ".spec.template.spec.containers[*].image",
        description = "The images of currently advanced daemonset."
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetSpec {
    /// Selects the pods the DaemonSet owns; it must match the template's labels.
    pub selector: LabelSelector,
    /// The pod to run on every eligible node. Schemaless in the CRD, as upstream.
    #[schemars(schema_with = "preserved_object")]
    pub template: PodTemplateSpec,
    /// How pods are replaced by new ones.
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub update_strategy: DaemonSetUpdateStrategy,
    /// Seconds a new pod must be ready to count as available; defaults to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
    /// At most this many pods (number, or percentage of the desired number) are created per
    /// pass; defaults to 250.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 250))]
    pub burst_replicas: Option<IntOrString>,
    /// How many old ControllerRevisions to keep; defaults to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 10))]
    pub revision_history_limit: Option<i32>,
    /// Lifecycle hooks; Advanced DaemonSet uses `preDelete` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
}

/// How a DaemonSet replaces its pods.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetUpdateStrategy {
    /// RollingUpdate (default) or OnDelete.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "RollingUpdate", "enum" = ["RollingUpdate", "OnDelete"]))]
    pub type_: Option<String>,
    /// Parameters of RollingUpdate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdateDaemonSet>,
}

/// The rolling update of an Advanced DaemonSet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdateDaemonSet {
    /// Standard (recreate, default), InPlaceIfPossible, or the deprecated alias Surging.
    #[serde(rename = "rollingUpdateType", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Standard", "InPlaceIfPossible", "Surging"]))]
    pub rolling_update_type: Option<String>,
    /// Nodes whose pod may be unavailable at once (number, or percentage of the desired number
    /// rounded up); 1 when neither this nor maxSurge is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// Nodes that may run an old and a new pod at once (number, or percentage rounded up);
    /// defaults to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
    /// Only pods on nodes with these labels are updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// How many nodes keep the old revision; defaults to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// Stop updating pods (pods are still created and deleted as nodes come and go).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

/// The observed state of an Advanced DaemonSet (the `apps/v1` status plus `daemonSetHash`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetStatus {
    /// Nodes running at least one daemon pod that should run it.
    pub current_number_scheduled: i32,
    /// Nodes running the daemon pod that should not run it.
    pub number_misscheduled: i32,
    /// Nodes that should run the daemon pod.
    pub desired_number_scheduled: i32,
    /// Nodes that should run the daemon pod and have one running and ready.
    pub number_ready: i32,
    /// The generation this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Nodes running an updated daemon pod.
    pub updated_number_scheduled: i32,
    /// Nodes that should run the daemon pod and have one available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_available: Option<i32>,
    /// Nodes that should run the daemon pod and have none available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_unavailable: Option<i32>,
    /// Hash collisions met while naming the newest ControllerRevision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collision_count: Option<i32>,
    /// The latest observations of the DaemonSet's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<DaemonSetCondition>>,
    /// The `controller-revision-hash` of the current template.
    #[serde(default)]
    pub daemon_set_hash: String,
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
        serde_json::to_value(DaemonSet::crd()).expect("the CRD serialises")
    }

    fn schema_of(crd: &Value) -> &Value {
        crd.pointer("/spec/versions/0/schema/openAPIV3Schema").expect("the CRD has a schema")
    }

    /// The generated CRD, as YAML, so every schema change shows in review.
    #[test]
    fn crd_snapshot() {
        let yaml = serde_yaml::to_string(&DaemonSet::crd()).expect("the CRD serialises to YAML");
        expect_test::expect_file!["daemonset.crd.yaml"].assert_eq(&yaml);
    }

    #[test]
    fn crd_schema_is_structural() {
        let crd = crd_json();
        let causes =
            Schema::check_structural(schema_of(&crd), "spec.versions[0].schema.openAPIV3Schema");
        assert!(causes.is_empty(), "{causes:#?}");
    }

    /// A minimal Advanced DaemonSet gets the plain-value defaults from the schema alone and
    /// reads back into the Rust types; the names are upstream's.
    #[test]
    fn schema_defaults_and_names() {
        let crd = crd_json();
        assert_eq!(crd.pointer("/spec/names/shortNames"), Some(&json!(["daemon", "ads"])));
        assert_eq!(
            crd.pointer("/spec/versions/0/subresources"),
            Some(&json!({"status": {}})),
            "status only, no scale"
        );
        let schema = Schema::from_json(schema_of(&crd), None).expect("the schema compiles");
        let mut obj = json!({
            "apiVersion": "apps.kruise.io/v1alpha1",
            "kind": "DaemonSet",
            "metadata": {"name": "ds", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "d"}},
                "template": {"metadata": {"labels": {"app": "d"}},
                             "spec": {"containers": [{"name": "c", "image": "i"}]}},
                "updateStrategy": {"rollingUpdate": {"rollingUpdateType": "InPlaceIfPossible",
                                                     "partition": 1}},
            },
        });
        assert_eq!(schema.prune(&mut obj), Vec::<String>::new());
        schema.default(&mut obj);
        assert_eq!(schema.validate(&obj), vec![]);
        assert_eq!(obj["spec"]["revisionHistoryLimit"], json!(10));
        assert_eq!(obj["spec"]["burstReplicas"], json!(250));
        assert_eq!(obj["spec"]["updateStrategy"]["type"], json!("RollingUpdate"));
        let ds: DaemonSet = serde_json::from_value(obj).expect("a defaulted DaemonSet reads");
        let ru = ds.spec.update_strategy.rolling_update.expect("rollingUpdate");
        assert_eq!(ru.rolling_update_type.as_deref(), Some("InPlaceIfPossible"));
        assert_eq!(ru.partition, Some(1));
    }
}
