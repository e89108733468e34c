//! Kubernetes SIG Apps' agent-sandbox API (kubernetes-sigs/agent-sandbox; issue 12 part 6):
//! `agents.x-k8s.io` [`Sandbox`] and `extensions.agents.x-k8s.io/v1alpha1`
//! [`SandboxTemplate`], [`SandboxWarmPool`] and [`SandboxClaim`], with upstream's field names,
//! defaults, short names and the labels and annotations its controllers put on what they make.
//!
//! # Versions
//! Upstream serves `Sandbox` as `v1alpha1` and `v1beta1` (`api/v1alpha1/sandbox_types.go`,
//! `api/v1beta1/sandbox_types.go`; its CRD converts between them with a webhook: `v1alpha1`'s
//! `spec.replicas` 0/1 is `v1beta1`'s `spec.operatingMode` Suspended/Running). The embedded API
//! server converts no versions, so both are served here with one schema holding the fields of
//! both (`replicas`, `operatingMode`, `service`): a manifest of either version applies
//! unchanged, and the controller reads a Sandbox as suspended when `replicas` is 0 *or*
//! `operatingMode` is `Suspended`. The extensions are served the same way, as `v1alpha1`
//! (storage) and `v1beta1` with one schema each (upstream `extensions/api/v1beta1`, converted
//! there by a webhook): a SandboxClaim takes `v1alpha1`'s `sandboxTemplateRef` + `warmpool`
//! or `v1beta1`'s `warmPoolRef` (a CEL rule requires one of them), plus `v1beta1`'s `env`,
//! `additionalPodMetadata`, `safeToEvict` and `lifecycle.ttlSecondsAfterFinished`; a
//! SandboxTemplate takes `v1beta1`'s `service`, `networkPolicyManagement`,
//! `envVarsInjectionPolicy`, `volumeClaimTemplatesPolicy` and `generatedSecrets`; a
//! SandboxWarmPool `v1beta1`'s `updateStrategy`. Enum fields only one version has carry no
//! schema default (it would fill the other version's objects); the controllers read "unset"
//! as upstream's default.
//!
//! # On Kinetic
//! A SandboxWarmPool is served by a `kinetic.dev` [`crate::pool::PodPool`] of the same name
//! (see `kinetic_controllers::sandbox`), so the pool pods are the sandbox template's pods and a
//! claim takes one with the pool engine's one conditional write.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, ValidationRule,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of `Sandbox`.
pub const GROUP: &str = "agents.x-k8s.io";
/// API group of the template, warm pool and claim.
pub const EXTENSIONS_GROUP: &str = "extensions.agents.x-k8s.io";

/// Label on a sandbox's pod with a hash of the sandbox's name: the Service's and
/// `status.selector`'s selector (upstream `SandboxNameHashLabel`).
pub const SANDBOX_NAME_HASH_LABEL: &str = "agents.x-k8s.io/sandbox-name-hash";
/// Annotation on a Sandbox naming the pod it runs in when that pod was adopted from a warm
/// pool (upstream `SandboxPodNameAnnotation`).
pub const POD_NAME_ANNOTATION: &str = "agents.x-k8s.io/pod-name";
/// Annotation on a claim's Sandbox naming its SandboxTemplate (upstream
/// `SandboxTemplateRefAnnotation`).
pub const TEMPLATE_REF_ANNOTATION: &str = "agents.x-k8s.io/sandbox-template-ref";
/// Label on a claim's Sandbox: [`launch_type::WARM`] or [`launch_type::COLD`] (upstream
/// `SandboxLaunchTypeLabel`).
pub const LAUNCH_TYPE_LABEL: &str = "agents.x-k8s.io/launch-type";
/// Label on a claim's pod with the claim's UID (upstream `SandboxIDLabel`).
pub const CLAIM_UID_LABEL: &str = "agents.x-k8s.io/claim-uid";
/// Annotation on a claim naming the Sandbox it got (upstream v1beta1
/// `AssignedSandboxNameAnnotation`).
pub const ASSIGNED_SANDBOX_ANNOTATION: &str = "agents.x-k8s.io/sandbox-name";
/// The pod annotation a claim's `safeToEvict` sets (Cluster Autoscaler's).
pub const SAFE_TO_EVICT_ANNOTATION: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";

/// Values of [`LAUNCH_TYPE_LABEL`].
pub mod launch_type {
    /// The pod was created for the sandbox.
    pub const COLD: &str = "cold";
    /// The pod came from a warm pool.
    pub const WARM: &str = "warm";
}

/// Condition types.
pub mod condition {
    /// Sandbox, claim and warm pool readiness.
    pub const READY: &str = "Ready";
    /// Sandbox (and, mirrored, claim): the pod reached a terminal phase (upstream v1beta1).
    pub const FINISHED: &str = "Finished";
}

/// Reasons of the `Ready` conditions, as upstream's controllers write them.
pub mod reason {
    /// Sandbox: its pod is Ready and its Service exists (upstream v1beta1 constants).
    pub const DEPENDENCIES_READY: &str = "DependenciesReady";
    /// Sandbox: its pod or Service is missing or not ready yet.
    pub const DEPENDENCIES_NOT_READY: &str = "DependenciesNotReady";
    /// Sandbox: `replicas: 0` or `operatingMode: Suspended`.
    pub const SUSPENDED: &str = "SandboxSuspended";
    /// Sandbox past `shutdownTime` with `shutdownPolicy: Retain`.
    pub const EXPIRED: &str = "SandboxExpired";
    /// Sandbox: the pod it names is another controller's (Kinetic's; upstream logs it).
    pub const POD_NOT_OWNED: &str = "PodNotOwned";
    /// Claim or warm pool: the SandboxTemplate it names does not exist.
    pub const TEMPLATE_NOT_FOUND: &str = "TemplateNotFound";
    /// Claim: the Sandbox is not (yet) Ready.
    pub const SANDBOX_NOT_READY: &str = "SandboxNotReady";
    /// Claim: a Sandbox of the claim's name exists and is not the claim's.
    pub const SANDBOX_NOT_OWNED: &str = "SandboxNotOwned";
    /// Claim past its `lifecycle.shutdownTime` with `shutdownPolicy: Retain`.
    pub const CLAIM_EXPIRED: &str = "ClaimExpired";
    /// Claim, warm pool: an API request failed.
    pub const RECONCILER_ERROR: &str = "ReconcilerError";
    /// Warm pool: every sandbox of the pool is ready.
    pub const POOL_READY: &str = "WarmPoolReady";
    /// Warm pool: pods are starting.
    pub const POOL_NOT_READY: &str = "WarmPoolNotReady";
    /// Warm pool: a PodPool of its name exists that is not the warm pool's.
    pub const POD_POOL_CONFLICT: &str = "PodPoolConflict";
    /// Claim (`v1beta1`): the SandboxWarmPool its `warmPoolRef` names does not exist.
    pub const WARM_POOL_NOT_FOUND: &str = "WarmPoolNotFound";
    /// Claim: its `env` is refused by the template's `envVarsInjectionPolicy`.
    pub const ENV_INJECTION_REFUSED: &str = "EnvVarsInjectionNotAllowed";
    /// Sandbox `Finished`: the pod succeeded.
    pub const POD_SUCCEEDED: &str = "PodSucceeded";
    /// Sandbox `Finished`: the pod failed.
    pub const POD_FAILED: &str = "PodFailed";
}

/// A sandbox's pod metadata: only labels and annotations are used (upstream `PodMetadata`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PodMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The pod a sandbox runs (upstream `PodTemplate`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PodTemplate {
    /// The pod's spec (schemaless, as Kinetic keeps every embedded pod spec).
    #[schemars(schema_with = "preserved_object")]
    pub spec: PodSpec,
    #[serde(default)]
    pub metadata: PodMetadata,
}

/// The desired state of a Sandbox: the fields of `v1alpha1` and `v1beta1` (see "Versions").
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "agents.x-k8s.io",
    version = "v1alpha1",
    kind = "Sandbox",
    namespaced,
    status = "SandboxStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "sandbox",
    doc = "Sandbox is the Schema for the sandboxes API",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxSpec {
    /// The pod of the sandbox.
    pub pod_template: PodTemplate,
    /// Claims the sandbox's pod may reference (schemaless PersistentVolumeClaim templates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "preserved_objects")]
    pub volume_claim_templates: Vec<serde_json::Value>,
    /// When the sandbox expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_time: Option<Time>,
    /// Whether the Sandbox itself is deleted when it expires (`Delete`) or kept (`Retain`,
    /// the default); its pod and Service are deleted either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "sandbox_shutdown_policy")]
    pub shutdown_policy: Option<String>,
    /// `v1alpha1`: 1 (default) runs the sandbox, 0 suspends it (deletes its pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub replicas: Option<i32>,
    /// `v1beta1`: `Running` (default) or `Suspended`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "operating_mode")]
    pub operating_mode: Option<String>,
    /// `v1beta1`: whether a headless Service is kept for the sandbox (Kinetic keeps one unless
    /// this is `false`, as `v1alpha1` always did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<bool>,
}

/// The observed state of a Sandbox (upstream `SandboxStatus`, both versions).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxStatus {
    /// `{service}.{namespace}.svc.cluster.local`.
    #[serde(rename = "serviceFQDN", default, skip_serializing_if = "String::is_empty")]
    pub service_fqdn: String,
    /// The headless Service's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
    /// `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Pods running the sandbox: 0 or 1.
    #[serde(default)]
    pub replicas: i32,
    /// The label selector of the sandbox's pod (the scale subresource's).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    /// The pod's IPs.
    #[serde(rename = "podIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub pod_ips: Vec<String>,
    /// The pod's node.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
}

impl Sandbox {
    /// The CRD serving `v1alpha1` (storage) and `v1beta1` with one schema (see "Versions").
    #[must_use]
    pub fn crd_all_versions() -> CustomResourceDefinition {
        both_versions(<Self as kube_core::CustomResourceExt>::crd())
    }

    /// Whether the sandbox should run: neither `replicas: 0` nor `operatingMode: Suspended`.
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.spec.replicas != Some(0) && self.spec.operating_mode.as_deref() != Some("Suspended")
    }
}

/// Pod template and claims of the sandboxes made from it (upstream `SandboxTemplateSpec`).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "extensions.agents.x-k8s.io",
    version = "v1alpha1",
    kind = "SandboxTemplate",
    namespaced,
    status = "SandboxTemplateStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "sandboxtemplate",
    doc = "SandboxTemplate is the Schema for the sandbox template API"
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxTemplateSpec {
    /// The pod of the sandboxes. `automountServiceAccountToken` defaults to false, as
    /// upstream's claim and warm pool controllers default it.
    pub pod_template: PodTemplate,
    /// PersistentVolumeClaim templates (schemaless): each sandbox gets a claim of each,
    /// named `{template name}-{sandbox name}`, as a StatefulSet's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "preserved_objects")]
    pub volume_claim_templates: Vec<serde_json::Value>,
    /// Ingress and egress rules of the sandboxes' NetworkPolicy (schemaless; Kinetic serves
    /// no NetworkPolicy API, so none is written and nothing is enforced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_object")]
    pub network_policy: Option<serde_json::Value>,
    /// `v1beta1`: `Managed` (upstream's default) or `Unmanaged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "network_policy_management")]
    pub network_policy_management: Option<String>,
    /// `v1beta1`: whether a claim's `env` may add (`Allowed`) or also override (`Overrides`)
    /// the template's environment variables; `Disallowed` (the default) refuses claims with
    /// `env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "injection_policy")]
    pub env_vars_injection_policy: Option<String>,
    /// `v1beta1`: the same for a claim's volume claim templates (which Kinetic's claims do not
    /// carry yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "injection_policy")]
    pub volume_claim_templates_policy: Option<String>,
    /// `v1beta1`: Secrets generated per sandbox (schemaless; not generated by Kinetic).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "preserved_objects")]
    pub generated_secrets: Vec<serde_json::Value>,
    /// `v1beta1`: whether the sandboxes get a headless Service (Kinetic keeps one unless this
    /// is `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<bool>,
}

/// Upstream's SandboxTemplate has an empty status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SandboxTemplateStatus {}

/// A reference to a SandboxTemplate in the same namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SandboxTemplateRef {
    /// The template's name.
    #[serde(default)]
    pub name: String,
}

/// A number of ready sandboxes made from a template (upstream `SandboxWarmPoolSpec`).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "extensions.agents.x-k8s.io",
    version = "v1alpha1",
    kind = "SandboxWarmPool",
    namespaced,
    status = "SandboxWarmPoolStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "swp",
    doc = "SandboxWarmPool is the Schema for the sandboxwarmpools API",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxWarmPoolSpec {
    /// Ready sandboxes to keep (default 1, as upstream's `v1beta1`).
    #[serde(default = "one")]
    #[schemars(range(min = 0), default = "one")]
    pub replicas: i32,
    /// The template of the pool's sandboxes.
    #[serde(default)]
    pub sandbox_template_ref: SandboxTemplateRef,
    /// `v1beta1`: how pods of an older template are replaced. Kinetic's pool replaces them at
    /// once whatever the type (upstream's `Recreate`; its default `OnReplenish` waits until
    /// they are claimed or deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<WarmPoolUpdateStrategy>,
}

/// A warm pool's update strategy (upstream `SandboxWarmPoolUpdateStrategy`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WarmPoolUpdateStrategy {
    /// `Recreate` or `OnReplenish`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "update_strategy_type")]
    pub type_: Option<String>,
}

/// The observed state of a warm pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxWarmPoolStatus {
    /// Unclaimed sandboxes, ready or starting.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replicas: i32,
    /// Unclaimed sandboxes that are ready.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ready_replicas: i32,
    /// The label selector of the pool's unclaimed pods.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    /// `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// When and how a claim ends (upstream claim `Lifecycle`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimLifecycle {
    /// When the claim expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_time: Option<Time>,
    /// `Delete`, `DeleteForeground` or `Retain` (default).
    #[serde(default = "retain")]
    #[schemars(schema_with = "claim_shutdown_policy")]
    pub shutdown_policy: String,
    /// `v1beta1`: seconds a claim is kept after its sandbox finished (its pod reached a
    /// terminal phase), counted from the mirrored `Finished` condition's transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,
}

/// A reference to a SandboxWarmPool in the same namespace (upstream `v1beta1`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SandboxWarmPoolRef {
    /// The warm pool's name.
    pub name: String,
}

/// An environment variable a claim sets in its sandbox (upstream `v1beta1` `EnvVar`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimEnvVar {
    pub name: String,
    pub value: String,
    /// The container; the template's first when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container_name: String,
}

/// A request for a sandbox from a template (upstream `SandboxClaimSpec`).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "extensions.agents.x-k8s.io",
    version = "v1alpha1",
    kind = "SandboxClaim",
    namespaced,
    status = "SandboxClaimStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "sandboxclaim",
    doc = "SandboxClaim is the Schema for the sandbox Claim API"
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxClaimSpec {
    /// `v1alpha1`: the template of the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_template_ref: Option<SandboxTemplateRef>,
    /// `v1beta1`: the warm pool to check a sandbox out from (its template makes the sandbox
    /// when the pool has no ready one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_pool_ref: Option<SandboxWarmPoolRef>,
    /// When and how the claim ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<ClaimLifecycle>,
    /// `none` (always a new pod), `default` (any warm pool of the template; the default) or
    /// the name of one warm pool.
    #[serde(default = "default_policy", rename = "warmpool")]
    #[schemars(default = "default_policy")]
    pub warm_pool: String,
    /// `v1beta1`: labels and annotations added to the sandbox's pod.
    #[serde(default, skip_serializing_if = "is_empty_meta")]
    #[schemars(schema_with = "additional_pod_metadata")]
    pub additional_pod_metadata: PodMetadata,
    /// `v1beta1`: the pod's `cluster-autoscaler.kubernetes.io/safe-to-evict` annotation
    /// (`on-completion`, `"true"`, `"false"`); the template's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "safe_to_evict")]
    pub safe_to_evict: Option<String>,
    /// `v1beta1`: environment variables set in the sandbox (as the template's
    /// `envVarsInjectionPolicy` allows). A claim with `env` always gets a new pod, as upstream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<ClaimEnvVar>,
}

impl SandboxClaimSpec {
    /// The template named by `v1alpha1`'s `sandboxTemplateRef`, if any.
    #[must_use]
    pub fn template_name(&self) -> Option<&str> {
        self.sandbox_template_ref.as_ref().map(|r| r.name.as_str()).filter(|n| !n.is_empty())
    }

    /// The warm pool named by `v1beta1`'s `warmPoolRef`, if any.
    #[must_use]
    pub fn warm_pool_ref_name(&self) -> Option<&str> {
        self.warm_pool_ref.as_ref().map(|r| r.name.as_str()).filter(|n| !n.is_empty())
    }
}

/// The observed state of a claim (upstream `SandboxClaimStatus`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SandboxClaimStatus {
    /// `Ready`, forwarded from the Sandbox's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The claim's Sandbox.
    #[serde(default)]
    pub sandbox: ClaimedSandbox,
}

/// The Sandbox a claim got.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClaimedSandbox {
    /// The Sandbox's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Its pod's IPs.
    #[serde(rename = "podIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub pod_ips: Vec<String>,
}

impl SandboxClaim {
    /// The CRD serving `v1alpha1` (storage) and `v1beta1` with one schema (see "Versions"),
    /// whose `spec` must name a template (`v1alpha1`) or a warm pool (`v1beta1`).
    #[must_use]
    pub fn crd_all_versions() -> CustomResourceDefinition {
        let mut crd = both_versions(<Self as kube_core::CustomResourceExt>::crd());
        for v in &mut crd.spec.versions {
            let spec = v
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
                .and_then(|s| s.properties.as_mut())
                .and_then(|p| p.get_mut("spec"));
            if let Some(spec) = spec {
                spec.x_kubernetes_validations = Some(vec![ValidationRule {
                    rule: "(has(self.sandboxTemplateRef) && self.sandboxTemplateRef.name != '') \
                           || (has(self.warmPoolRef) && self.warmPoolRef.name != '')"
                        .to_owned(),
                    message: Some(
                        "one of sandboxTemplateRef.name (v1alpha1) or warmPoolRef.name \
                         (v1beta1) is required"
                            .to_owned(),
                    ),
                    reason: Some("FieldValueRequired".to_owned()),
                    ..ValidationRule::default()
                }]);
            }
        }
        crd
    }
}

/// `crd` (one `v1alpha1` version) also served as `v1beta1` with the same schema.
fn both_versions(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    if let Some(v1alpha1) = crd.spec.versions.first().cloned() {
        let mut v1beta1 = v1alpha1;
        v1beta1.name = "v1beta1".to_owned();
        v1beta1.storage = false;
        crd.spec.versions.push(v1beta1);
    }
    crd
}

/// Values of a claim's `spec.warmpool` besides a pool name.
pub mod warm_pool_policy {
    /// Never a warm pool.
    pub const NONE: &str = "none";
    /// Any warm pool of the claim's template.
    pub const DEFAULT: &str = "default";
}

fn default_policy() -> String {
    warm_pool_policy::DEFAULT.to_owned()
}

fn retain() -> String {
    "Retain".to_owned()
}

fn one() -> i32 {
    1
}

fn is_empty_meta(m: &PodMetadata) -> bool {
    m.labels.is_empty() && m.annotations.is_empty()
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// Every CRD of the API, for the installer.
#[must_use]
pub fn crds() -> Vec<CustomResourceDefinition> {
    use kube_core::CustomResourceExt as _;
    vec![
        Sandbox::crd_all_versions(),
        both_versions(SandboxTemplate::crd()),
        both_versions(SandboxWarmPool::crd()),
        SandboxClaim::crd_all_versions(),
    ]
}

fn enum_schema(values: &[&str], default: Option<&str>) -> schemars::Schema {
    match default {
        Some(d) => schemars::json_schema!({"type": "string", "enum": values, "default": d}),
        None => schemars::json_schema!({"type": "string", "enum": values}),
    }
}

fn sandbox_shutdown_policy(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    enum_schema(&["Delete", "Retain"], Some("Retain"))
}

fn claim_shutdown_policy(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    enum_schema(&["Delete", "DeleteForeground", "Retain"], Some("Retain"))
}

fn network_policy_management(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    enum_schema(&["Managed", "Unmanaged"], None)
}

fn injection_policy(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    enum_schema(&["Allowed", "Overrides", "Disallowed"], None)
}

fn update_strategy_type(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    enum_schema(&["Recreate", "OnReplenish"], None)
}

fn safe_to_evict(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    enum_schema(&["on-completion", "true", "false"], None)
}

/// Upstream: "Label values are limited to 63 characters and must match Kubernetes label
/// value patterns".
fn additional_pod_metadata(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "properties": {
            "labels": {"type": "object", "additionalProperties": {
                "type": "string", "maxLength": 63,
                "pattern": "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$",
            }},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    })
}

fn operating_mode(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    // No schema default: a default would also fill `v1alpha1` objects, which have no such
    // field; the controller reads "unset" as upstream's default `Running`.
    enum_schema(&["Running", "Suspended"], None)
}

/// Schema of a schemaless object field: any object, kept as it is.
fn preserved_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

fn preserved_objects(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
    })
}

#[cfg(test)]
mod tests;
