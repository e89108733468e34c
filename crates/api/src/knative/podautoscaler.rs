//! The `PodAutoscaler` custom resource (`autoscaling.internal.knative.dev/v1alpha1`, short name
//! `kpa`): one per Revision, of the same name and owned by it, through which the KPA autoscaler
//! shows its decision (knative/serving `pkg/apis/autoscaling/v1alpha1/pa_types.go`,
//! `config/core/300-resources/podautoscaler.yaml`).
//!
//! The Revision controller creates it (`spec`: the CloneSet to scale, `containerConcurrency`,
//! the protocol); the autoscaler writes `spec.reachability` and the `status` subresource
//! (`desiredScale`, `actualScale`, the `Active`, `ScaleTargetInitialized`, `SKSReady` and `Ready`
//! conditions), and the Revision mirrors `desiredScale`/`actualScale` and `Active`.
//!
//! Kinetic's addition: [`DeciderStatus`] in `status.decider`. Upstream keeps the decider's state
//! in memory (`scaling.Decider.Status`) and exports panic mode, the stable and panic averages and
//! the excess burst capacity only as Prometheus metrics (`panic_mode`,
//! `stable_request_concurrency`, `panic_request_concurrency`, `excess_burst_capacity`); there is
//! no field for them in the PodAutoscaler, so they go into this extra status field, which
//! `kubectl get kpa -o wide` prints.

use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Status;

/// API group of Knative's internal autoscaling resources.
pub const GROUP: &str = "autoscaling.internal.knative.dev";
/// The served (and stored) version.
pub const VERSION: &str = "v1alpha1";
/// `autoscaling.knative.dev/class` value of the KPA (the default class).
pub const KPA_CLASS: &str = "kpa.autoscaling.knative.dev";
/// Annotation with the autoscaler class.
pub const CLASS_ANNOTATION: &str = "autoscaling.knative.dev/class";
/// Annotation with the metric scaled on.
pub const METRIC_ANNOTATION: &str = "autoscaling.knative.dev/metric";

/// Condition types of a PodAutoscaler (`pa_lifecycle.go`): `Ready` follows the other three.
pub mod condition {
    /// All the others are True.
    pub const READY: &str = "Ready";
    /// The target receives traffic (False `NoTraffic` at zero, Unknown `Queued` while requests
    /// wait for pods).
    pub const ACTIVE: &str = "Active";
    /// The target reached its initial scale once.
    pub const SCALE_TARGET_INITIALIZED: &str = "ScaleTargetInitialized";
    /// The ServerlessService (here: the gateway, which is always in the path) is ready.
    pub const SKS_READY: &str = "SKSReady";
}

/// Values of `spec.reachability`.
pub mod reachability {
    /// A Route sends the target traffic.
    pub const REACHABLE: &str = "Reachable";
    /// No Route does: `min-scale` no longer holds.
    pub const UNREACHABLE: &str = "Unreachable";
}

/// The desired state of a PodAutoscaler.
// Clippy reads the repeated `type_ = "string"` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "autoscaling.internal.knative.dev",
    version = "v1alpha1",
    kind = "PodAutoscaler",
    namespaced,
    status = "PodAutoscalerStatus",
    derive = "PartialEq",
    shortname = "kpa",
    shortname = "pa",
    category = "knative-internal",
    category = "autoscaling",
    label("knative.dev/crd-install", "true"),
    doc = "PodAutoscaler is a Knative abstraction that encapsulates the interface by which Knative components instantiate autoscalers.  This definition is an abstraction that may be backed by multiple definitions.  For more information, see the Knative Pluggability presentation: https://docs.google.com/presentation/d/10KWynvAJYuOEWy69VBa6bHJVCqIsz1TNdEKosNvcpPY/edit",
    printcolumn(name = "DesiredScale", type_ = "integer", json_path = ".status.desiredScale"),
    printcolumn(name = "ActualScale", type_ = "integer", json_path = ".status.actualScale"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Ready')].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Ready')].reason"
    ),
    printcolumn(name = "Mode", type_ = "string", json_path = ".status.decider.mode", priority = 1),
    printcolumn(
        name = "Stable",
        type_ = "number",
        json_path = ".status.decider.observedStableValue",
        priority = 1
    ),
    printcolumn(
        name = "Panic",
        type_ = "number",
        json_path = ".status.decider.observedPanicValue",
        priority = 1
    ),
    printcolumn(
        name = "EBC",
        type_ = "integer",
        json_path = ".status.decider.excessBurstCapacity",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PodAutoscalerSpec {
    /// The Revision's `containerConcurrency` (0 = unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_concurrency: Option<i64>,
    /// The scalable resource this PodAutoscaler sizes: the Revision's CloneSet.
    pub scale_target_ref: ScaleTargetRef,
    /// `Reachable`, `Unreachable` or empty (unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachability: Option<String>,
    /// `http1` or `h2c`, from the serving container's port name.
    pub protocol_type: String,
}

/// The scaled resource (upstream's `corev1.ObjectReference`, of which it uses these three).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTargetRef {
    /// API version of the referent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the referent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the referent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The observed state of a PodAutoscaler.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodAutoscalerStatus {
    /// Conditions `Ready`, `Active`, `ScaleTargetInitialized`, `SKSReady`.
    #[serde(flatten)]
    pub status: Status,
    /// The Service that serves the revision (upstream: the SKS's public Service). Kinetic's
    /// gateway serves every revision itself, so this stays empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// The Service that provides the revision's metrics (upstream: the SKS's private
    /// Service). Empty here: the autoscaler reads the gateways, not the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_service_name: Option<String>,
    /// Pods the autoscaler wants (-1 while it does not know yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_scale: Option<i32>,
    /// Ready pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_scale: Option<i32>,
    /// Kinetic's addition (no upstream field, see the module doc): the decider's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decider: Option<DeciderStatus>,
}

/// The decider's state as of its last decision (Kinetic's addition to the status).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeciderStatus {
    /// `Stable` or `Panic`.
    pub mode: String,
    /// Why the decider is in this mode and wants this scale, in a sentence.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The metric scaled on: `concurrency` or `rps`.
    pub metric: String,
    /// The per-pod value aimed at (`target × utilisation`).
    pub target: f64,
    /// The metric averaged over the stable window (all gateways summed).
    pub observed_stable_value: f64,
    /// The metric averaged over the panic window.
    pub observed_panic_value: f64,
    /// Spare capacity beyond the target burst capacity, in requests (negative: the gateway
    /// holds and spreads requests, upstream's Proxy mode).
    pub excess_burst_capacity: i32,
    /// The gateways whose stats the last decision summed.
    #[serde(default)]
    pub gateways: i32,
}

/// `Stable` or `Panic` for [`DeciderStatus::mode`].
pub mod mode {
    /// Deciding on the stable window.
    pub const STABLE: &str = "Stable";
    /// Deciding on the panic window, never scaling down.
    pub const PANIC: &str = "Panic";
}

#[cfg(test)]
mod tests {
    use expect_test::{expect, expect_file};
    use kube_core::CustomResourceExt as _;

    use super::*;

    #[test]
    fn crd_snapshot() {
        let yaml = serde_yaml::to_string(&PodAutoscaler::crd()).expect("the CRD serialises");
        expect_file!["podautoscaler.crd.yaml"].assert_eq(&yaml);
    }

    #[test]
    fn crd_schema_is_structural() {
        let crd = serde_json::to_value(PodAutoscaler::crd()).expect("the CRD serialises");
        let schema = crd.pointer("/spec/versions/0/schema/openAPIV3Schema").expect("a schema");
        let causes = kinetic_machinery::schema::Schema::check_structural(schema, "schema");
        assert!(causes.is_empty(), "{causes:#?}");
    }

    /// Names and the columns `kubectl get kpa` prints, as upstream's CRD has them (the
    /// priority-1 columns are Kinetic's, printed with `-o wide`).
    #[test]
    fn names_and_printer_columns_are_knatives() {
        let crd = serde_json::to_value(PodAutoscaler::crd()).expect("the CRD serialises");
        let v = &crd["spec"]["versions"][0];
        let cols: Vec<String> = v["additionalPrinterColumns"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| format!("{} {} {}", c["name"], c["jsonPath"], c["priority"]))
            .collect();
        let out = format!(
            "{} {} {}\n{}",
            crd["metadata"]["name"],
            crd["spec"]["names"],
            v["subresources"],
            cols.join("\n")
        );
        expect![[r#"
            "podautoscalers.autoscaling.internal.knative.dev" {"categories":["knative-internal","autoscaling"],"kind":"PodAutoscaler","plural":"podautoscalers","shortNames":["kpa","pa"],"singular":"podautoscaler"} {"status":{}}
            "DesiredScale" ".status.desiredScale" null
            "ActualScale" ".status.actualScale" null
            "Ready" ".status.conditions[?(@.type=='Ready')].status" null
            "Reason" ".status.conditions[?(@.type=='Ready')].reason" null
            "Mode" ".status.decider.mode" 1
            "Stable" ".status.decider.observedStableValue" 1
            "Panic" ".status.decider.observedPanicValue" 1
            "EBC" ".status.decider.excessBurstCapacity" 1"#]].assert_eq(&out);
    }
}
