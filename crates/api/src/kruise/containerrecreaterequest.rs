//! The `ContainerRecreateRequest` custom resource (short name `crr`): restart chosen containers
//! of a running pod in place, field for field as OpenKruise serves it
//! (`apis/apps/v1alpha1/containerrecreaterequest_types.go`).
//!
//! Who does what, as upstream: the API server's admission (OpenKruise's mutating webhook)
//! labels a new request with its pod's name, UID and node, copies each container's `preStop`
//! (and its ports for an `httpGet` hook) and, a Kinetic addition, the container's current ID and
//! restart count (`statusContext`, which upstream's daemon fills on its first pass). The node
//! agent of that node (kruise-daemon upstream) carries it out and writes `status`; the
//! controller (kruise-manager upstream) fails it at `activeDeadlineSeconds`, takes the pod out
//! of service for `unreadyGracePeriodSeconds` through the `KruisePodReady` readiness gate and
//! deletes it `ttlSecondsAfterFinished` after completion.
//!
//! The schema carries the webhook's defaults (`strategy: {failurePolicy: Fail}`) and its bounds
//! (non-negative grace periods, `failurePolicy` one of `Fail`/`Ignore`).

use k8s_openapi::api::core::v1::{ContainerPort, ExecAction, HTTPGetAction, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Label with the name of the request's pod (immutable).
pub const POD_NAME_LABEL: &str = "crr.apps.kruise.io/pod-name";
/// Label with the UID of the request's pod (immutable).
pub const POD_UID_LABEL: &str = "crr.apps.kruise.io/pod-uid";
/// Label with the node of the request's pod (immutable); the node agent watches its own.
pub const NODE_NAME_LABEL: &str = "crr.apps.kruise.io/node-name";
/// Label `"true"` while the request is not finished; removed at completion so node agents stop
/// watching it.
pub const ACTIVE_LABEL: &str = "crr.apps.kruise.io/active";
/// Annotation (RFC 3339 time) set once the pod was taken out of service for
/// `unreadyGracePeriodSeconds`; also the finalizer that holds the request until the pod's
/// `KruisePodReady` condition is given back.
pub const UNREADY_ACQUIRED_KEY: &str = "crr.apps.kruise.io/unready-acquired";
/// Annotation upstream's manager writes with the pod's container statuses for its daemon;
/// Kinetic's node agent reads the pod itself and does not need it (kept so readers agree).
pub const SYNC_CONTAINER_STATUSES_ANNOTATION: &str = "crr.apps.kruise.io/sync-container-statuses";
/// The user agent of the request's entries in the `KruisePodReady` condition's message.
pub const READINESS_USER_AGENT: &str = "ContainerRecreateRequest";

/// The desired state of a ContainerRecreateRequest.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "ContainerRecreateRequest",
    namespaced,
    shortname = "crr",
    status = "ContainerRecreateRequestStatus",
    derive = "PartialEq",
    doc = "ContainerRecreateRequest is the Schema for the containerrecreaterequests API",
    printcolumn(
        name = "PHASE",
        type_ = "string",
        json_path = ".status.phase",
        description = "Phase of this ContainerRecreateRequest."
    ),
    printcolumn(
        name = "POD",
        type_ = "string",
        json_path = ".spec.podName",
        description = "Pod name of this ContainerRecreateRequest."
    ),
    printcolumn(
        name = "NODE",
        type_ = "string",
        json_path = ".metadata.labels.crr\\.apps\\.kruise\\.io/node-name",
        description = "Pod name of this ContainerRecreateRequest."
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC."
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecreateRequestSpec {
    /// The pod whose containers are recreated (same namespace).
    pub pod_name: String,
    /// The containers to recreate, at least one; each must exist in the pod.
    pub containers: Vec<ContainerRecreateRequestContainer>,
    /// How to recreate them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = {}))]
    pub strategy: Option<ContainerRecreateRequestStrategy>,
    /// Seconds after creation at which an unfinished request fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    /// Seconds after completion at which the request is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i32>,
}

/// One container to recreate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecreateRequestContainer {
    /// The container's name in `pod.spec.containers`.
    pub name: String,
    /// The container's preStop hook, copied from the pod at creation (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_stop: Option<ProbeHandler>,
    /// The container's ports, copied for an `httpGet` preStop hook (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<ContainerPort>>,
    /// The container's ID and restart count when the request was made (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_context: Option<ContainerRecreateRequestContainerContext>,
}

/// A preStop action (upstream's `ProbeHandler`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeHandler {
    /// Runs a command in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    /// Sends an HTTP GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HTTPGetAction>,
    /// Opens a TCP connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TCPSocketAction>,
}

/// The container as it was when the request was made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecreateRequestContainerContext {
    /// `status.containerStatuses[].containerID` (`runc://<id>` or `kinetic-native://<id>` on Kinetic's nodes).
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// `status.containerStatuses[].restartCount`.
    pub restart_count: i32,
}

/// How containers are recreated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecreateRequestStrategy {
    /// `Fail` (default): a container that fails to stop or restart ends the request.
    /// `Ignore`: the others go on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Fail"))]
    pub failure_policy: Option<FailurePolicy>,
    /// Recreate the next container only once the previous one has recreated completely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordered_recreate: Option<bool>,
    /// Kill the container even if it was restarted since the request was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_recreate: Option<bool>,
    /// Seconds the container may take to stop; defaults to the pod's
    /// `terminationGracePeriodSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub termination_grace_period_seconds: Option<i64>,
    /// Seconds the pod is not ready (through the `KruisePodReady` readiness gate) before the
    /// preStop hook runs and the container stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub unready_grace_period_seconds: Option<i64>,
    /// Seconds a new container must have been started (and ready) to count as Succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_started_seconds: Option<i32>,
}

/// `strategy.failurePolicy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FailurePolicy {
    /// Stop at the first failed container.
    #[default]
    Fail,
    /// Go on with the other containers.
    Ignore,
}

/// The observed state of a ContainerRecreateRequest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecreateRequestStatus {
    /// Pending, Recreating or Completed (upstream also defines Succeeded and Failed, used only
    /// for containers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// When the request completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Why it completed without recreating everything (deadline, pod gone, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// One state per container of the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_recreate_states: Option<Vec<ContainerRecreateState>>,
}

/// A phase of a request or of one of its containers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum Phase {
    /// Waiting (another request of the pod goes first, or the container waits its turn).
    Pending,
    /// Being recreated.
    Recreating,
    /// The container was recreated and is running (ready, for `minStartedSeconds`).
    Succeeded,
    /// The container could not be recreated.
    Failed,
    /// The request is finished.
    Completed,
}

/// The recreation state of one container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecreateState {
    /// The container's name.
    pub name: String,
    /// Pending, Recreating, Succeeded or Failed.
    pub phase: Phase,
    /// Why, when it failed or waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Whether the node agent has stopped the container for this request (upstream v1.7+).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_killed: bool,
}

impl ContainerRecreateRequestSpec {
    /// `strategy.failurePolicy`, defaulted.
    pub fn failure_policy(&self) -> FailurePolicy {
        self.strategy.as_ref().and_then(|s| s.failure_policy).unwrap_or_default()
    }

    /// `strategy.orderedRecreate`, defaulted.
    pub fn ordered(&self) -> bool {
        self.strategy.as_ref().and_then(|s| s.ordered_recreate).unwrap_or(false)
    }

    /// `strategy.forceRecreate`, defaulted.
    pub fn force(&self) -> bool {
        self.strategy.as_ref().and_then(|s| s.force_recreate).unwrap_or(false)
    }

    /// `strategy.minStartedSeconds`, defaulted.
    pub fn min_started_seconds(&self) -> i64 {
        i64::from(self.strategy.as_ref().and_then(|s| s.min_started_seconds).unwrap_or(0).max(0))
    }

    /// `strategy.unreadyGracePeriodSeconds`.
    pub fn unready_grace_seconds(&self) -> Option<i64> {
        self.strategy.as_ref().and_then(|s| s.unready_grace_period_seconds)
    }
}

#[cfg(test)]
mod tests {
    use kinetic_machinery::schema::Schema;
    use kube_core::CustomResourceExt as _;
    use serde_json::{Value, json};

    use super::*;

    fn schema() -> Schema {
        let crd = serde_json::to_value(ContainerRecreateRequest::crd()).expect("serialises");
        Schema::from_json(&crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], None)
            .expect("the schema compiles")
    }

    #[test]
    fn crd_snapshot() {
        let yaml = serde_yaml::to_string(&ContainerRecreateRequest::crd()).expect("YAML");
        expect_test::expect_file!["containerrecreaterequest.crd.yaml"].assert_eq(&yaml);
    }

    #[test]
    fn crd_is_structural_with_status_and_short_name() {
        let crd = serde_json::to_value(ContainerRecreateRequest::crd()).expect("serialises");
        let v = &crd["spec"]["versions"][0];
        let causes = Schema::check_structural(
            &v["schema"]["openAPIV3Schema"],
            "spec.versions[0].schema.openAPIV3Schema",
        );
        assert!(causes.is_empty(), "{causes:#?}");
        assert_eq!(v["subresources"], json!({"status": {}}));
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["crr"]));
    }

    /// The manual's example, as written, passes the schema and gets the webhook's defaults.
    #[test]
    fn manual_example_is_accepted_and_defaulted() {
        let schema = schema();
        let mut obj = json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "ContainerRecreateRequest",
            "metadata": {"namespace": "pod-namespace", "name": "xxx"},
            "spec": {
                "podName": "pod-name",
                "containers": [{"name": "app"}, {"name": "sidecar"}],
                "strategy": {
                    "failurePolicy": "Fail", "orderedRecreate": false,
                    "terminationGracePeriodSeconds": 30, "unreadyGracePeriodSeconds": 3,
                    "minStartedSeconds": 10,
                },
                "activeDeadlineSeconds": 300, "ttlSecondsAfterFinished": 1800,
            },
        });
        schema.default(&mut obj);
        assert_eq!(schema.validate(&obj), vec![]);
        let crr: ContainerRecreateRequest = serde_json::from_value(obj).expect("decodes");
        assert_eq!(crr.spec.min_started_seconds(), 10);
        let mut bare = json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "ContainerRecreateRequest",
            "metadata": {"namespace": "d", "name": "x"},
            "spec": {"podName": "p", "containers": [{"name": "app"}]},
        });
        schema.default(&mut bare);
        assert_eq!(bare["spec"]["strategy"], json!({"failurePolicy": "Fail"}));
    }

    #[test]
    fn schema_refuses_bad_policy_and_negative_grace() {
        let schema = schema();
        let mut obj = json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "ContainerRecreateRequest",
            "metadata": {"namespace": "d", "name": "x"},
            "spec": {"podName": "p", "containers": [{"name": "app"}],
                     "strategy": {"failurePolicy": "Sometimes", "unreadyGracePeriodSeconds": -1}},
        });
        schema.default(&mut obj);
        let mut fields: Vec<String> = schema.validate(&obj).into_iter().map(|c| c.field).collect();
        fields.sort();
        assert_eq!(
            fields,
            ["spec.strategy.failurePolicy", "spec.strategy.unreadyGracePeriodSeconds"]
        );
    }

    /// A status as upstream's daemon writes it reads back with the same keys.
    #[test]
    fn status_matches_upstream_json() {
        let upstream: Value = json!({
            "phase": "Completed", "completionTime": "2026-01-02T03:04:05Z",
            "containerRecreateStates": [
                {"name": "app", "phase": "Succeeded", "isKilled": true},
                {"name": "sidecar", "phase": "Failed", "message": "kill container error: x"},
            ],
        });
        let st: ContainerRecreateRequestStatus =
            serde_json::from_value(upstream.clone()).expect("decodes");
        assert_eq!(st.phase, Some(Phase::Completed));
        assert_eq!(serde_json::to_value(&st).expect("encodes"), upstream);
    }
}
