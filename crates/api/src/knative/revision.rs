//! The `Revision` custom resource (`serving.knative.dev/v1`): an immutable snapshot of code
//! and configuration (`pkg/apis/serving/v1/revision_types.go`), and `RevisionTemplateSpec`,
//! the template Configurations and Services stamp revisions from.
//!
//! The pod-spec part of [`RevisionSpec`] lists the `PodSpec` fields Knative accepts (with its
//! default feature flags plus the ones commonly enabled); like Kruise's templates here, the
//! containers, volumes and other Kubernetes-typed fields are schemaless in the CRD
//! (`x-kubernetes-preserve-unknown-fields`) and typed in Rust. Knative's own fields
//! (`containerConcurrency`, the timeouts) are typed in the schema. Defaults and validation are
//! Knative's webhook's, in [`super::webhook`], because they depend on `config-defaults`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, HostAlias, LocalObjectReference, PodDNSConfig, PodSecurityContext,
    PodSpec, Toleration, TopologySpreadConstraint, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Status, preserved_object, preserved_object_list};

/// The desired state of a Revision: a pod spec and how requests reach it.
// Clippy reads the repeated `type_ = "string"` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "serving.knative.dev",
    version = "v1",
    kind = "Revision",
    namespaced,
    status = "RevisionStatus",
    derive = "PartialEq",
    shortname = "rev",
    category = "all",
    category = "knative",
    category = "serving",
    label("knative.dev/crd-install", "true"),
    doc = "Revision is an immutable snapshot of code and configuration.  A revision references a container image. Revisions are created by updates to a Configuration.",
    printcolumn(
        name = "Config Name",
        type_ = "string",
        json_path = ".metadata.labels['serving\\.knative\\.dev/configuration']"
    ),
    printcolumn(
        name = "Generation",
        type_ = "string",
        json_path = ".metadata.labels['serving\\.knative\\.dev/configurationGeneration']"
    ),
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
    printcolumn(name = "Actual Replicas", type_ = "integer", json_path = ".status.actualReplicas"),
    printcolumn(
        name = "Desired Replicas",
        type_ = "integer",
        json_path = ".status.desiredReplicas"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RevisionSpec {
    /// Maximum requests in flight per container; 0 (the default from `config-defaults`) means
    /// unlimited and lets the autoscaler pick the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_concurrency: Option<i64>,
    /// Longest time a request may take, in seconds (default 300, at most 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    /// Longest time until the first byte of the response, in seconds (at most
    /// `timeoutSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_start_timeout_seconds: Option<i64>,
    /// Longest time a request may go without a byte of response, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<i64>,

    /// The containers; exactly one of them serves requests (the only one, or the one with a
    /// port).
    #[schemars(schema_with = "preserved_object_list")]
    pub containers: Vec<Container>,
    /// Containers run to completion before the others start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_object_list")]
    pub init_containers: Option<Vec<Container>>,
    /// Volumes the containers may mount (Knative accepts secret, configMap, projected,
    /// emptyDir and persistentVolumeClaim ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_object_list")]
    pub volumes: Option<Vec<Volume>>,
    /// The service account the pods run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Whether the service account token is mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automount_service_account_token: Option<bool>,
    /// Secrets for pulling the images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_object_list")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    /// Whether Service environment variables are injected (Knative defaults it to false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_service_links: Option<bool>,
    /// Node labels the pods must land on (`kubernetes.podspec-nodeselector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints the pods tolerate (`kubernetes.podspec-tolerations`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_object_list")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Scheduling constraints (`kubernetes.podspec-affinity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_object")]
    pub affinity: Option<Affinity>,
    /// Spreading over topology domains (`kubernetes.podspec-topologyspreadconstraints`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_object_list")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// Pod-level security settings (`kubernetes.podspec-securitycontext`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_object")]
    pub security_context: Option<PodSecurityContext>,
    /// The runtime class (`kubernetes.podspec-runtimeclassname`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    /// The priority class (`kubernetes.podspec-priorityclassname`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// The scheduler (`kubernetes.podspec-schedulername`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_name: Option<String>,
    /// Extra `/etc/hosts` entries (`kubernetes.podspec-hostaliases`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_object_list")]
    pub host_aliases: Option<Vec<HostAlias>>,
    /// DNS policy (`kubernetes.podspec-dnspolicy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_policy: Option<String>,
    /// DNS settings (`kubernetes.podspec-dnsconfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_object")]
    pub dns_config: Option<PodDNSConfig>,
}

impl RevisionSpec {
    /// The Kubernetes pod spec of the revision's pods, before the serving controller adds the
    /// `PORT` and `K_*` variables and its own labels.
    pub fn pod_spec(&self) -> PodSpec {
        PodSpec {
            containers: self.containers.clone(),
            init_containers: self.init_containers.clone(),
            volumes: self.volumes.clone(),
            service_account_name: self.service_account_name.clone(),
            automount_service_account_token: self.automount_service_account_token,
            image_pull_secrets: self.image_pull_secrets.clone(),
            enable_service_links: self.enable_service_links,
            node_selector: self.node_selector.clone(),
            tolerations: self.tolerations.clone(),
            affinity: self.affinity.clone(),
            topology_spread_constraints: self.topology_spread_constraints.clone(),
            security_context: self.security_context.clone(),
            runtime_class_name: self.runtime_class_name.clone(),
            priority_class_name: self.priority_class_name.clone(),
            scheduler_name: self.scheduler_name.clone(),
            host_aliases: self.host_aliases.clone(),
            dns_policy: self.dns_policy.clone(),
            dns_config: self.dns_config.clone(),
            // Knative: the grace period covers the longest request.
            termination_grace_period_seconds: self.timeout_seconds,
            ..PodSpec::default()
        }
    }
}

/// The template a Configuration (or a Service) stamps Revisions from: their metadata (labels,
/// annotations such as `autoscaling.knative.dev/*`, and optionally the revision's own name)
/// and spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionTemplateSpec {
    /// Labels and annotations copied to the Revision; `name` names it (it must start with
    /// `{configuration}-`).
    #[serde(default)]
    #[schemars(schema_with = "preserved_object")]
    pub metadata: ObjectMeta,
    /// The Revision's spec.
    pub spec: RevisionSpec,
}

/// The observed state of a Revision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionStatus {
    /// Conditions `Ready`, `ResourcesAvailable`, `ContainerHealthy`, `Active`.
    #[serde(flatten)]
    pub status: Status,
    /// A URL to the revision's logs, from `config-observability`.
    #[serde(rename = "logUrl", default, skip_serializing_if = "Option::is_none")]
    pub log_url: Option<String>,
    /// The containers' images resolved to digests when the revision was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_statuses: Option<Vec<ContainerStatus>>,
    /// The init containers' images resolved to digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_container_statuses: Option<Vec<ContainerStatus>>,
    /// Ready pods of the revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_replicas: Option<i32>,
    /// Pods the autoscaler wants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
}

/// A container's image resolved to its digest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    /// The container's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `repository@sha256:...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
}
