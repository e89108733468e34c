//! Crane's `autoscaling.crane.io/v1alpha1` `EffectiveHorizontalPodAutoscaler` (short name
//! `ehpa`), in the shape of gocrane/api `autoscaling/v1alpha1/ehpa_types.go` and
//! `prediction/v1alpha1/types.go`, so a Crane user's manifest applies as it is (issue 13 part 3).
//!
//! `spec` is Crane's: the target (`scaleTargetRef`, any kind with a `scale` subresource), the
//! bounds, `scaleStrategy` `Auto` or `Preview` (with an optional `specificReplicas`), the
//! HorizontalPodAutoscaler's `metrics` and `behavior` (Crane embeds `autoscaling/v2beta2`'s,
//! whose shape is `autoscaling/v2`'s) and `prediction` (`predictionWindowSeconds`, the
//! algorithm `dsp` or `percentile` with its parameters). Kinetic's controller
//! (`kinetic_controllers::ehpa`) reads `dsp.sampleInterval` as its history step and
//! `dsp.historyLength` as the history it keeps; with `dsp` Kinetic's own predictor
//! (`kinetic_predict`) forecasts (the DSP estimators are accepted and shown but not used), with
//! `percentile` Crane's percentile algorithm (`kinetic_predict::percentile`) with the
//! `percentile` settings.
//!
//! `status` is Crane's (`currentReplicas`, `expectReplicas`, `lastScaleTime`, `conditions`
//! `Ready` and `PredictionReady`) plus Kinetic's [`PredictionStatus`] in `status.prediction`:
//! what the last decision rested on (periods found, forecast, lead time, the reactive
//! recommendation). Crane has no such field; its metric adapter shows the forecast only as the
//! `crane_pod_cpu_usage` metric.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscalerBehavior, MetricSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of Crane's autoscaling resources.
pub const GROUP: &str = "autoscaling.crane.io";
/// The served (and stored) version.
pub const VERSION: &str = "v1alpha1";

/// Values of `spec.scaleStrategy`.
pub mod strategy {
    /// Scale the target on the metrics (and the prediction).
    pub const AUTO: &str = "Auto";
    /// Compute and show the recommendation only; with `specificReplicas`, hold the target at
    /// that count (Crane's behaviour).
    pub const PREVIEW: &str = "Preview";
}

/// Values of `spec.prediction.predictionAlgorithm.algorithmType`.
pub mod algorithm {
    /// Crane's DSP (FFT period detection) predictor.
    pub const DSP: &str = "dsp";
    /// Crane's percentile predictor.
    pub const PERCENTILE: &str = "percentile";
}

/// Condition types (Crane's `ConditionType`).
pub mod condition {
    /// The whole autoscaling works as expected.
    pub const READY: &str = "Ready";
    /// The prediction is ready (only with `spec.prediction`).
    pub const PREDICTION_READY: &str = "PredictionReady";
}

/// Default of `spec.prediction.predictionWindowSeconds` (Crane's).
pub const DEFAULT_PREDICTION_WINDOW_SECONDS: i32 = 3600;
/// Default history step when `dsp.sampleInterval` is not set (Crane's `1m`).
pub const DEFAULT_SAMPLE_INTERVAL: &str = "1m";
/// Default history kept when `dsp.historyLength` is not set (Crane's documented `3d`).
pub const DEFAULT_HISTORY_LENGTH: &str = "3d";

/// The desired behaviour of an EffectiveHorizontalPodAutoscaler.
// Clippy reads the repeated `type_ = "integer"` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "autoscaling.crane.io",
    version = "v1alpha1",
    kind = "EffectiveHorizontalPodAutoscaler",
    namespaced,
    shortname = "ehpa",
    status = "EffectiveHorizontalPodAutoscalerStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "EffectiveHorizontalPodAutoscaler scales a target on its metrics and on a forecast of them",
    printcolumn(name = "STRATEGY", type_ = "string", json_path = ".spec.scaleStrategy"),
    printcolumn(name = "MINPODS", type_ = "integer", json_path = ".spec.minReplicas"),
    printcolumn(name = "MAXPODS", type_ = "integer", json_path = ".spec.maxReplicas"),
    printcolumn(name = "SPECIFICPODS", type_ = "integer", json_path = ".spec.specificReplicas"),
    printcolumn(name = "REPLICAS", type_ = "integer", json_path = ".status.expectReplicas"),
    printcolumn(name = "AGE", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "PERIOD",
        type_ = "integer",
        json_path = ".status.prediction.periodSeconds",
        priority = 1
    ),
    printcolumn(
        name = "LEAD",
        type_ = "integer",
        json_path = ".status.prediction.leadTimeSeconds",
        priority = 1
    ),
    printcolumn(
        name = "PREDICTED",
        type_ = "integer",
        json_path = ".status.prediction.predictedReplicas",
        priority = 1
    ),
    printcolumn(
        name = "REACTIVE",
        type_ = "integer",
        json_path = ".status.prediction.reactiveReplicas",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveHorizontalPodAutoscalerSpec {
    /// The workload to scale, through its `scale` subresource.
    pub scale_target_ref: CrossVersionObjectReference,
    /// The fewest replicas (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(default = "default_min")]
    pub min_replicas: Option<i32>,
    /// The most replicas; not less than `minReplicas`.
    pub max_replicas: i32,
    /// `Auto` (default) or `Preview`.
    #[serde(default = "default_strategy")]
    #[schemars(default = "default_strategy", schema_with = "strategy_schema")]
    pub scale_strategy: String,
    /// With `Preview`: the replicas to hold the target at; unset, `Preview` does not scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specific_replicas: Option<i32>,
    /// The HorizontalPodAutoscaler's metrics (the largest recommendation wins); unset, 80 %
    /// average CPU utilisation, as upstream's HPA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_object_list")]
    pub metrics: Option<Vec<MetricSpec>>,
    /// The HorizontalPodAutoscaler's behavior (policies, stabilisation windows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_object")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
    /// Prediction; unset, the autoscaler is reactive only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<Prediction>,
}

fn default_min() -> Option<i32> {
    Some(1)
}

fn default_strategy() -> String {
    strategy::AUTO.to_owned()
}

/// `spec.prediction`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Prediction {
    /// How far ahead Crane's metric adapter looks for the largest forecast (default 3600).
    /// Kinetic forecasts over the lead time instead (start-up p95 + control delay), capped by
    /// this window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(default = "default_window")]
    pub prediction_window_seconds: Option<i32>,
    /// The algorithm and its parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction_algorithm: Option<PredictionAlgorithm>,
}

fn default_window() -> Option<i32> {
    Some(DEFAULT_PREDICTION_WINDOW_SECONDS)
}

/// `spec.prediction.predictionAlgorithm`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PredictionAlgorithm {
    /// `dsp` or `percentile`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub algorithm_type: String,
    /// DSP parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsp: Option<Dsp>,
    /// Percentile parameters (Crane's: `sampleInterval`, `histogram`, `minSampleWeight`,
    /// `marginFraction`, `percentile`; all numbers as strings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_object")]
    pub percentile: Option<serde_json::Value>,
}

/// Crane's `DSP` parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dsp {
    /// The history's step, a Go duration (`15s`, `1m`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sample_interval: String,
    /// How much history to keep, a duration with Crane's units (`30m`, `3d`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub history_length: String,
    /// Crane's estimators (`maxValue`, `fft`; accepted, not used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_object")]
    pub estimators: Option<serde_json::Value>,
}

/// What the autoscaler did and why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveHorizontalPodAutoscalerStatus {
    /// The replicas the autoscaler wants the target to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_replicas: Option<i32>,
    /// The target's replicas when last observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_replicas: Option<i32>,
    /// When the target was last scaled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// `Ready`, `PredictionReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Kinetic's explanation of the last decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<PredictionStatus>,
}

/// The last decision's inputs and result (Kinetic's addition).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PredictionStatus {
    /// The metric forecast (`cpu`, an External metric's name, …).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metric: String,
    /// Periods found in the history, in seconds, shortest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub periods_seconds: Vec<i64>,
    /// The period the forecast used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i64>,
    /// The forecast: the high quantile of the metric's total over the lead time (a quantity
    /// string, milli-units as the metric's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<String>,
    /// The lead time forecast over: the target's pods' start-up p95 plus the control delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_time_seconds: Option<i64>,
    /// The start-up p95 of the target's pods, from their timelines, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_p95_millis: Option<i64>,
    /// Samples of the metric kept (at `dsp.sampleInterval`).
    #[serde(default)]
    pub history_samples: i64,
    /// The replicas the forecast needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_replicas: Option<i32>,
    /// The reactive (HorizontalPodAutoscaler) recommendation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reactive_replicas: Option<i32>,
    /// Why the decision is what it is, in a sentence (the fall-back's reason when reactive).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

fn strategy_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": [strategy::AUTO, strategy::PREVIEW],
        "default": strategy::AUTO,
    })
}

/// Schema of a schemaless object field: any object, kept as it is (the HPA's `behavior` and
/// Crane's estimator settings are checked by the controller, not the schema).
fn preserved_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Schema of a list of schemaless objects (the HPA's `metrics`).
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
    use expect_test::expect_file;
    use kinetic_machinery::schema::Schema;
    use kube_core::CustomResourceExt as _;
    use serde_json::{Value, json};

    use super::*;

    fn crd_json() -> Value {
        serde_json::to_value(EffectiveHorizontalPodAutoscaler::crd()).expect("the CRD serialises")
    }

    #[test]
    fn crd_snapshot() {
        let yaml =
            serde_yaml::to_string(&EffectiveHorizontalPodAutoscaler::crd()).expect("serialises");
        expect_file!["ehpa.crd.yaml"].assert_eq(&yaml);
    }

    #[test]
    fn crd_schema_is_structural() {
        let crd = crd_json();
        let s = crd.pointer("/spec/versions/0/schema/openAPIV3Schema").expect("a schema");
        let causes = Schema::check_structural(s, "schema");
        assert!(causes.is_empty(), "{causes:#?}");
    }

    /// Crane's own sample (`examples/autoscaling/effective-hpa.yaml`, as its docs show it)
    /// validates, defaults and reads back.
    #[test]
    fn cranes_sample_manifest_applies() {
        let crd = crd_json();
        let s = crd.pointer("/spec/versions/0/schema/openAPIV3Schema").expect("a schema");
        let s = Schema::from_json(s, None).expect("the schema compiles");
        let mut obj = json!({
            "apiVersion": "autoscaling.crane.io/v1alpha1",
            "kind": "EffectiveHorizontalPodAutoscaler",
            "metadata": {"name": "php-apache", "namespace": "default"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                   "name": "php-apache"},
                "minReplicas": 1, "maxReplicas": 10, "scaleStrategy": "Auto",
                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 50}}}],
                "prediction": {"predictionWindowSeconds": 3600,
                    "predictionAlgorithm": {"algorithmType": "dsp", "dsp": {
                        "sampleInterval": "60s", "historyLength": "3d",
                        "estimators": {"maxValue": [{"marginFraction": "0.1"}]}}}},
            },
        });
        s.default(&mut obj);
        assert_eq!(s.validate(&obj), vec![]);
        let e: EffectiveHorizontalPodAutoscaler = serde_json::from_value(obj).expect("reads");
        assert_eq!(e.spec.max_replicas, 10);
        assert_eq!(e.spec.metrics.as_ref().map(Vec::len), Some(1));
        let dsp = e.spec.prediction.and_then(|p| p.prediction_algorithm).and_then(|a| a.dsp);
        assert_eq!(dsp.map(|d| d.sample_interval), Some("60s".to_owned()));

        let mut bad = json!({
            "apiVersion": "autoscaling.crane.io/v1alpha1",
            "kind": "EffectiveHorizontalPodAutoscaler",
            "metadata": {"name": "x", "namespace": "default"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 3,
                     "scaleStrategy": "Manual"},
        });
        s.default(&mut bad);
        let fields: Vec<String> = s.validate(&bad).into_iter().map(|c| c.field).collect();
        assert_eq!(fields, ["spec.scaleStrategy"]);
    }

    #[test]
    fn strategy_defaults_to_auto() {
        let e: EffectiveHorizontalPodAutoscalerSpec = serde_json::from_value(json!({
            "scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 3,
        }))
        .expect("reads");
        assert_eq!(e.scale_strategy, strategy::AUTO);
    }
}
