//! The `kinetic.dev/v1alpha1` `PodPool` custom resource: a pool of ready, generic pods that
//! consumers claim instead of creating pods (issue 12 parts 1 and 2).
//!
//! The pool controller (`kinetic_controllers::podpool`) keeps `status.learnedSize` unclaimed
//! pods made from `spec.template`, labelled [`POOL_LABEL`]`=NAME` and
//! [`POOL_STATE_LABEL`]`=`[`state::READY`] and owned by the pool. A claim (one conditional write
//! under the pod's resourceVersion) relabels a pod [`state::CLAIMED`], records the claimant in
//! [`CLAIMED_BY_ANNOTATION`] and [`CLAIMED_AT_ANNOTATION`] and moves the ownerReference from
//! the pool to the claimant; the consumer then specialises it and sets
//! [`state::SPECIALIZED`]. A pod left claimed longer than `spec.specializationTimeoutSeconds` is
//! deleted by the pool controller.
//!
//! # Specialisation by image
//! A claim may carry the claimant's container ([`SPECIALIZE_ANNOTATION`]); the node agent then
//! replaces the pool pod's first app container in place by it: the placeholder is killed (no
//! grace: it serves nothing), the claimant's container starts in the same pod, with the same
//! node, IP and network namespace, and the agent sets [`state::SPECIALIZED`] once the pod is
//! Ready as the claimant's, or [`state::FAILED`] when it cannot be (the pool then deletes the
//! pod at once). The pod's start-up timeline gets a `specialization` section (claimed,
//! specialised, ready).
//!
//! How the pod spec stays truthful: upstream validation lets a pod's update change only its
//! containers' images (and a few scheduling fields), and the embedded server enforces it. So
//! the claim's one conditional write sets `spec.containers[0].image` to the claimant's image
//! (the spec and `status.containerStatuses[].image` name what runs) and puts the whole
//! claimant container (command, args, env, ports, probes, ...) in [`SPECIALIZE_ANNOTATION`];
//! the container keeps the pool pod's container name (names are immutable). What the
//! annotation says wins over the spec for that container, except the name and image. Until the
//! pod is labelled [`state::SPECIALIZED`] its Ready condition may still be the placeholder's:
//! a consumer waits for the label, not for Ready.
//!
//! # Specialisation by code
//! A pool whose `spec.code` is set holds pods that already run a language runtime speaking
//! Fission's environment protocol (Fission's environment images work unchanged). A claim by
//! code puts a [`CodeRequest`] in [`SPECIALIZE_CODE_ANNOTATION`]; the node agent pulls the
//! code image with its image store, unpacks its layers into the pod's `spec.code.volume`
//! (an emptyDir mounted in the runtime container, Fission's `userfunc` at `/userfunc`) and
//! calls the runtime at the pod's IP and `spec.code.port` (Fission's 8888):
//! - `version: 1`: `POST /specialize` with no body; the runtime loads `<mount>/user` (so the
//!   code image holds a file `user` at its root, unpacked at the volume's root);
//! - `version: 2` (the default) or `3`: `POST /v2/specialize` with Fission's
//!   `FunctionLoadRequest` JSON `{"filepath", "functionName", "url"}`; the code is unpacked into
//!   `<mount>/<claimant uid>` (Fission's fetcher uses the function's UID) and `filepath` names
//!   that directory as the runtime sees it.
//!
//! The pod spec stays truthful: the container keeps running the runtime image; the code is
//! data in a volume. A consumer's container maps to code as follows (see [`CodeRequest::of`]):
//! the container's image IS the code image, and its first `args` entry, when there is one, is
//! the function name (Fission's `--entrypoint`, such as `main.main`; empty lets the runtime
//! choose its default). The same container therefore also runs as a plain pod from a
//! self-contained image (runtime and code) that takes the entrypoint as its argument.
//!
//! # When a code pool is empty
//! A consumer's container of a code pool names a code image, which holds no runtime and
//! cannot run as a pod of its own. So when a code pool has no ready pod to claim, its consumer
//! does not create a pod of its template: it creates one from the **pool's** template, claimed
//! from the start (owned by the consumer, [`POOL_STATE_LABEL`]`=`[`state::CLAIMED`], the
//! [`CodeRequest`] in [`SPECIALIZE_CODE_ANNOTATION`], [`CREATED_CLAIMED_ANNOTATION`]); the node
//! agent specialises it once its runtime is ready. A request during a burst is then only as
//! slow as a runtime's start, never failed. Fission's pool manager waits for its pool's
//! ReplicaSet to bring a new generic pod and retries the claim with back-off (`choosePod` in
//! `pkg/executor/executortype/poolmgr/gp.go`); a pod made for the claimant at once gets the
//! same generic pod without queueing a burst behind the pool's size.
//!
//! # Field names
//! Kubernetes' API conventions name a count of pods in some state after the state:
//! PodDisruptionBudget's `spec.minAvailable`/`maxUnavailable`, Job's `status.active`/`ready`.
//! So the bounds are `spec.minReady`/`spec.maxReady` and the counts `status.ready`,
//! `status.claimed`, `status.starting`. `specializationTimeoutSeconds` follows the
//! `...Seconds` suffix of durations (`progressDeadlineSeconds`) and Fission's name for the same
//! limit (`specializationTimeout`). American spelling in API names, as Kubernetes spells them.
//!
//! # Validation
//! The schema enforces `minReady ≥ 0`, `maxReady ≥ 0` and a timeout ≥ 1 s. `minReady ≤
//! maxReady` needs a CEL rule, which the embedded server does not evaluate, so the controller
//! checks it: an invalid pool gets `Ready=False` with reason [`reason::INVALID_SPEC`] and a
//! Warning Event, and is not acted on until fixed.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime};
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of Kinetic's own resources.
pub const GROUP: &str = "kinetic.dev";
/// The served (and stored) version.
pub const VERSION: &str = "v1alpha1";

/// Label with the name of the pool a pod was made by (kept after a claim, so the pool can
/// time the claim out; a consumer may remove it once the pod is specialised).
pub const POOL_LABEL: &str = "kinetic.dev/pool";
/// Label with the pod's place in the pool's life cycle: one of [`state`].
pub const POOL_STATE_LABEL: &str = "kinetic.dev/pool-state";
/// Label with a hash of the template a pool pod was made from; pods of an older template are
/// replaced.
pub const TEMPLATE_HASH_LABEL: &str = "kinetic.dev/pool-template-hash";
/// Annotation naming the claimant of a claimed pod: `Kind/name` (same namespace).
pub const CLAIMED_BY_ANNOTATION: &str = "kinetic.dev/claimed-by";
/// Annotation with the RFC 3339 instant (microseconds) of the claim.
pub const CLAIMED_AT_ANNOTATION: &str = "kinetic.dev/claimed-at";
/// Annotation (`"true"`) on a pod a consumer of a code pool created claimed, from the pool's
/// template, because the pool had no ready pod to give (see "When a code pool is empty"
/// below). Its specialisation timeout runs from its runtime's Ready, not from its creation: it
/// first starts like any created pod, and a created pod that never becomes ready is not
/// deleted by its controller either.
pub const CREATED_CLAIMED_ANNOTATION: &str = "kinetic.dev/created-claimed";
/// Annotation with the claimant's container (JSON of a core/v1 `Container`) that a claim by
/// image asks the node agent to run in place of the pool pod's first app container (issue 12
/// part 3). See "Specialisation by image" above.
pub const SPECIALIZE_ANNOTATION: &str = "kinetic.dev/specialize";
/// Annotation with the claimant's code that a claim by code asks the node agent to inject:
/// JSON of a [`CodeRequest`]. See "Specialisation by code" above.
pub const SPECIALIZE_CODE_ANNOTATION: &str = "kinetic.dev/specialize-code";
/// Kubernetes' pod deletion cost annotation; pool pods carry [`POOL_POD_DELETION_COST`].
pub const POD_DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";
/// The deletion cost of unclaimed pool pods: lower than any pod's default (0), so a workload
/// that scales down pods it shares a controller with, or a descheduler honouring the cost,
/// takes pool pods first.
pub const POOL_POD_DELETION_COST: &str = "-1000";

/// Annotation on a consumer (a Knative Revision or Service template, a CloneSet) naming the
/// PodPool in its namespace to claim pods from before creating any (issue 12 part 4).
pub const POD_POOL_ANNOTATION: &str = "kinetic.dev/pod-pool";

/// Whether a pod's Ready condition may be believed as its claimant's: `false` while it is
/// claimed but not yet specialised (its Ready condition is still the placeholder's until the
/// node agent replaces the container) and once its specialisation failed. Everything that
/// routes to pods or counts them ready for a workload (the gateway's endpoints, CloneSet
/// status and scaling) asks this first: a claimed pod is a starting pod.
pub fn ready_as_claimant(labels: Option<&std::collections::BTreeMap<String, String>>) -> bool {
    !matches!(
        labels.and_then(|l| l.get(POOL_STATE_LABEL)).map(String::as_str),
        Some(state::CLAIMED | state::FAILED)
    )
}

/// Values of [`POOL_STATE_LABEL`].
pub mod state {
    /// The pool's own, unclaimed pod (a claim takes only those whose Ready condition is True;
    /// the others are counted as starting).
    pub const READY: &str = "ready";
    /// Claimed, not yet specialised: the pool deletes it after the specialisation timeout.
    pub const CLAIMED: &str = "claimed";
    /// Specialised by its consumer: no longer the pool's concern.
    pub const SPECIALIZED: &str = "specialized";
    /// The node agent could not specialise the claimed pod (its image could not be had, its
    /// container failed to start or exited before it was ready): the pool deletes it at once.
    pub const FAILED: &str = "failed";
}

/// Condition types of a PodPool.
pub mod condition {
    /// The pool holds its learned size of ready pods (False while it fills, or when the spec
    /// is invalid).
    pub const READY: &str = "Ready";
}

/// Reasons of the `Ready` condition and of Events.
pub mod reason {
    /// Every pod the pool should hold is ready.
    pub const FULL: &str = "Full";
    /// Pods are being created or are starting.
    pub const FILLING: &str = "Filling";
    /// `minReady > maxReady` or an empty template: the pool is not acted on.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Event: a claimed pod was not specialised in time and was deleted.
    pub const SPECIALIZATION_TIMEOUT: &str = "SpecializationTimeout";
    /// Event: the node agent could not specialise a claimed pod, which was deleted.
    pub const SPECIALIZATION_FAILED: &str = "SpecializationFailed";
    /// Event: the learned size changed.
    pub const RESIZED: &str = "Resized";
}

/// Default of `spec.specializationTimeoutSeconds`.
pub const DEFAULT_SPECIALIZATION_TIMEOUT_SECONDS: i32 = 30;
/// How many claims `status.claimHistory` keeps (oldest dropped first).
pub const MAX_CLAIM_HISTORY: usize = 128;
/// How many start-up measurements `status.startupHistory` keeps.
pub const MAX_STARTUP_HISTORY: usize = 32;

/// A pool of ready pods made from one template.
// Clippy reads the repeated `type_ = "integer"` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "kinetic.dev",
    version = "v1alpha1",
    kind = "PodPool",
    namespaced,
    status = "PodPoolStatus",
    derive = "PartialEq",
    derive = "Default",
    category = "kinetic",
    doc = "PodPool keeps ready pods made from a template for consumers to claim and specialise",
    printcolumn(name = "READY", type_ = "integer", json_path = ".status.ready"),
    printcolumn(name = "CLAIMED", type_ = "integer", json_path = ".status.claimed"),
    printcolumn(name = "STARTING", type_ = "integer", json_path = ".status.starting"),
    printcolumn(name = "SIZE", type_ = "integer", json_path = ".status.learnedSize"),
    printcolumn(name = "AGE", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "MIN", type_ = "integer", json_path = ".spec.minReady", priority = 1),
    printcolumn(name = "MAX", type_ = "integer", json_path = ".spec.maxReady", priority = 1),
    printcolumn(name = "WHY", type_ = "string", json_path = ".status.sizeReason", priority = 1)
)]
#[serde(rename_all = "camelCase")]
pub struct PodPoolSpec {
    /// The pods of the pool (schemaless, as Kruise and Knative keep pod templates).
    #[schemars(schema_with = "preserved_object")]
    pub template: PodTemplateSpec,
    /// Ready pods kept even when no claims came (default 1).
    #[serde(default = "default_min_ready")]
    #[schemars(range(min = 0), default = "default_min_ready")]
    pub min_ready: i32,
    /// Ready pods kept at most, however many claims came (default 10).
    #[serde(default = "default_max_ready")]
    #[schemars(range(min = 0), default = "default_max_ready")]
    pub max_ready: i32,
    /// Seconds a claimed pod may stay unspecialised before the pool deletes it (default 30).
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1), default = "default_timeout")]
    pub specialization_timeout_seconds: i32,
    /// Set when the pool's pods run a language runtime that claims specialise by code
    /// (Fission's environment protocol); unset, claims specialise by image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeSpec>,
}

/// How the pods of a pool specialise by code: Fission's environment protocol, with Fission's
/// names and defaults (`userfunc`, 8888, interface version 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CodeSpec {
    /// The template's volume the code is unpacked into: an `emptyDir` mounted in the first
    /// container (the runtime), as Fission's `userfunc` volume at `/userfunc`.
    #[serde(default = "default_code_volume")]
    #[schemars(default = "default_code_volume")]
    pub volume: String,
    /// The runtime's port for the specialise request (Fission's 8888).
    #[serde(default = "default_code_port")]
    #[schemars(range(min = 1, max = 65535), default = "default_code_port")]
    pub port: i32,
    /// Fission's environment interface version (`Environment.spec.version`): 1 calls
    /// `POST /specialize`, 2 and 3 call `POST /v2/specialize` with a `FunctionLoadRequest`.
    #[serde(default = "default_code_version")]
    #[schemars(range(min = 1, max = 3), default = "default_code_version")]
    pub version: i32,
}

impl Default for CodeSpec {
    fn default() -> Self {
        CodeSpec {
            volume: default_code_volume(),
            port: default_code_port(),
            version: default_code_version(),
        }
    }
}

/// Fission's name of the code volume.
pub const DEFAULT_CODE_VOLUME: &str = "userfunc";
/// Fission's runtime port.
pub const DEFAULT_CODE_PORT: i32 = 8888;
/// Fission's current environment interface version.
pub const DEFAULT_CODE_VERSION: i32 = 2;

fn default_code_volume() -> String {
    DEFAULT_CODE_VOLUME.to_owned()
}
fn default_code_port() -> i32 {
    DEFAULT_CODE_PORT
}
fn default_code_version() -> i32 {
    DEFAULT_CODE_VERSION
}

/// What a claim by code asks the node agent to do (the JSON of
/// [`SPECIALIZE_CODE_ANNOTATION`]); made by [`CodeRequest::new`] from the pool's spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeRequest {
    /// The code image: its layers are unpacked into the volume.
    pub image: String,
    /// Fission's `functionName` (the entrypoint, `module.function`); empty for the runtime's
    /// default.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub function_name: String,
    /// Fission's `url` (the path the function is exposed at; Fission's default `/`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// The volume the code goes into.
    pub volume: String,
    /// The directory inside the volume the layers are unpacked into (empty: its root).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sub_path: String,
    /// Fission's `filepath`: where the runtime sees the code.
    pub filepath: String,
    /// The runtime's port.
    pub port: i32,
    /// Fission's interface version (1: `/specialize`; 2, 3: `/v2/specialize`).
    pub version: i32,
    /// The bound of the whole specialisation on the node (pull, unpack, specialise call): the
    /// pool's `specializationTimeoutSeconds`.
    pub timeout_seconds: i32,
}

/// Why a pool cannot specialise by code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodeSpecError {
    #[error("spec.code.volume: Not found: {0:?}: no such volume in spec.template.spec.volumes")]
    NoVolume(String),
    #[error("spec.code.volume: Invalid value: {0:?}: must be an emptyDir volume")]
    NotEmptyDir(String),
    #[error(
        "spec.code.volume: Invalid value: {0:?}: must be mounted in the first container of spec.template.spec.containers"
    )]
    NotMounted(String),
    #[error("spec.code: Required value: the pool specialises by image, not by code")]
    NotACodePool,
}

impl CodeSpec {
    /// Where the runtime (the template's first container) sees the code volume: its mount
    /// path.
    ///
    /// # Errors
    /// The volume is missing, is no emptyDir, or is not mounted in the first container.
    pub fn mount_path(&self, template: &PodTemplateSpec) -> Result<String, CodeSpecError> {
        let spec = template.spec.as_ref();
        let vol = spec
            .and_then(|s| s.volumes.as_ref())
            .and_then(|v| v.iter().find(|v| v.name == self.volume))
            .ok_or_else(|| CodeSpecError::NoVolume(self.volume.clone()))?;
        if vol.empty_dir.is_none() {
            return Err(CodeSpecError::NotEmptyDir(self.volume.clone()));
        }
        spec.and_then(|s| s.containers.first())
            .and_then(|c| c.volume_mounts.as_ref())
            .and_then(|m| m.iter().find(|m| m.name == self.volume && m.sub_path.is_none()))
            .map(|m| m.mount_path.clone())
            .ok_or_else(|| CodeSpecError::NotMounted(self.volume.clone()))
    }
}

impl CodeRequest {
    /// The request for code `image` with `function_name`, for a claimant with `claimant_uid`,
    /// on pool `spec` (which has `code` set).
    ///
    /// # Errors
    /// The pool does not specialise by code, or its code volume is unusable.
    pub fn new(
        spec: &PodPoolSpec,
        image: &str,
        function_name: &str,
        claimant_uid: &str,
    ) -> Result<CodeRequest, CodeSpecError> {
        let code = spec.code.clone().unwrap_or_default();
        let mount = code.mount_path(&spec.template)?;
        // Fission's fetcher: v1 environments load `<userfunc>/user`, a file the code image
        // carries at its root; later versions get the package in a directory named after the
        // function's UID (here the claimant's) and its path in `filepath`.
        let sub_path = if code.version == 1 {
            String::new()
        } else if claimant_uid.is_empty() {
            "code".to_owned()
        } else {
            claimant_uid.to_owned()
        };
        let base = mount.trim_end_matches('/');
        let filepath = match (code.version, sub_path.as_str()) {
            (1, _) => format!("{base}/user"),
            (_, sub) => format!("{base}/{sub}"),
        };
        Ok(CodeRequest {
            image: image.to_owned(),
            function_name: function_name.to_owned(),
            url: "/".to_owned(),
            volume: code.volume,
            sub_path,
            filepath,
            port: code.port,
            version: code.version,
            timeout_seconds: spec.specialization_timeout_seconds,
        })
    }

    /// The code of a consumer's container: its image is the code image, its first `args`
    /// entry (if any) the function name. `(image, function name)`.
    pub fn of(container: &k8s_openapi::api::core::v1::Container) -> (String, String) {
        let image = container.image.clone().unwrap_or_default();
        let function = container.args.as_ref().and_then(|a| a.first()).cloned().unwrap_or_default();
        (image, function)
    }

    /// The path of the specialise call.
    pub fn path(&self) -> &'static str {
        if self.version == 1 { "/specialize" } else { "/v2/specialize" }
    }

    /// The body of the specialise call: none for v1, Fission's `FunctionLoadRequest` for v2
    /// and later (`envVersion` as Fission's executor sends it).
    pub fn body(&self) -> Option<serde_json::Value> {
        (self.version != 1).then(|| {
            serde_json::json!({
                "filepath": self.filepath,
                "functionName": self.function_name,
                "url": self.url,
                "envVersion": self.version,
            })
        })
    }
}

fn default_min_ready() -> i32 {
    1
}
fn default_max_ready() -> i32 {
    10
}
fn default_timeout() -> i32 {
    DEFAULT_SPECIALIZATION_TIMEOUT_SECONDS
}

/// What the pool holds and why it holds that many.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodPoolStatus {
    /// The generation this status is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Unclaimed pods whose Ready condition is True.
    #[serde(default)]
    pub ready: i32,
    /// Claimed pods not yet specialised.
    #[serde(default)]
    pub claimed: i32,
    /// Unclaimed pods not yet ready.
    #[serde(default)]
    pub starting: i32,
    /// The ready pods the pool keeps: learned from the claim history, within
    /// `[minReady, maxReady]`.
    #[serde(default)]
    pub learned_size: i32,
    /// Why `learnedSize` is what it is, in a sentence.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub size_reason: String,
    /// Recent claims, oldest first, at most [`MAX_CLAIM_HISTORY`] (kept in the status so a
    /// restarted controller still knows them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claim_history: Vec<ClaimRecord>,
    /// Recent pool pods' start-up durations, at most [`MAX_STARTUP_HISTORY`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub startup_history: Vec<StartupRecord>,
    /// `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One claim of a pool pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRecord {
    /// The claimed pod.
    pub pod: String,
    /// When it was claimed (RFC 3339, microseconds).
    pub claimed_at: MicroTime,
}

/// How long one pool pod took from creation to Ready.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StartupRecord {
    /// The pod.
    pub pod: String,
    /// Creation (or the scheduler's first sight of it) to Ready, in milliseconds.
    pub millis: i64,
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
    use expect_test::{expect, expect_file};
    use kinetic_machinery::schema::Schema;
    use kube_core::CustomResourceExt as _;
    use serde_json::{Value, json};

    use super::*;

    fn crd_json() -> Value {
        serde_json::to_value(PodPool::crd()).expect("the CRD serialises")
    }

    fn schema(crd: &Value) -> Schema {
        let s = crd.pointer("/spec/versions/0/schema/openAPIV3Schema").expect("a schema");
        Schema::from_json(s, None).expect("the schema compiles")
    }

    #[test]
    fn crd_snapshot() {
        let yaml = serde_yaml::to_string(&PodPool::crd()).expect("the CRD serialises");
        expect_file!["podpool.crd.yaml"].assert_eq(&yaml);
    }

    #[test]
    fn crd_schema_is_structural() {
        let crd = crd_json();
        let s = crd.pointer("/spec/versions/0/schema/openAPIV3Schema").expect("a schema");
        let causes = Schema::check_structural(s, "schema");
        assert!(causes.is_empty(), "{causes:#?}");
    }

    #[test]
    fn printer_columns_are_ready_claimed_starting_size_age() {
        let crd = crd_json();
        let cols: Vec<String> = crd["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| format!("{} {} {}", c["name"], c["jsonPath"], c["priority"]))
            .collect();
        expect![[r#"
            "READY" ".status.ready" null
            "CLAIMED" ".status.claimed" null
            "STARTING" ".status.starting" null
            "SIZE" ".status.learnedSize" null
            "AGE" ".metadata.creationTimestamp" null
            "MIN" ".spec.minReady" 1
            "MAX" ".spec.maxReady" 1
            "WHY" ".status.sizeReason" 1"#]]
        .assert_eq(&cols.join("\n"));
    }

    #[test]
    fn schema_defaults_the_bounds_and_timeout_and_refuses_negatives() {
        let crd = crd_json();
        let s = schema(&crd);
        let mut obj = json!({
            "apiVersion": "kinetic.dev/v1alpha1", "kind": "PodPool",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
        });
        s.default(&mut obj);
        assert_eq!(s.validate(&obj), vec![]);
        assert_eq!(obj["spec"]["minReady"], json!(1));
        assert_eq!(obj["spec"]["maxReady"], json!(10));
        assert_eq!(obj["spec"]["specializationTimeoutSeconds"], json!(30));
        let pool: PodPool = serde_json::from_value(obj.clone()).expect("deserialises");
        assert_eq!(pool.spec.max_ready, 10);

        obj["spec"]["minReady"] = json!(-1);
        obj["spec"]["specializationTimeoutSeconds"] = json!(0);
        let mut fields: Vec<String> = s.validate(&obj).into_iter().map(|c| c.field).collect();
        fields.sort();
        assert_eq!(fields, ["spec.minReady", "spec.specializationTimeoutSeconds"]);
    }

    fn code_pool(version: i32) -> PodPoolSpec {
        serde_json::from_value(json!({
            "template": {"spec": {
                "containers": [{"name": "runtime", "image": "python-env",
                                "volumeMounts": [{"name": "userfunc", "mountPath": "/userfunc/"}]}],
                "volumes": [{"name": "userfunc", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}],
            }},
            "specializationTimeoutSeconds": 12,
            "code": {"version": version},
        }))
        .expect("a pool spec")
    }

    #[test]
    fn schema_defaults_code_to_fissions_userfunc_8888_v2_and_bounds_port_and_version() {
        let crd = crd_json();
        let s = schema(&crd);
        let mut obj = json!({
            "apiVersion": "kinetic.dev/v1alpha1", "kind": "PodPool",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}},
                     "code": {}},
        });
        s.default(&mut obj);
        assert_eq!(s.validate(&obj), vec![]);
        assert_eq!(obj["spec"]["code"], json!({"volume": "userfunc", "port": 8888, "version": 2}));
        obj["spec"]["code"] = json!({"port": 0, "version": 4});
        let mut fields: Vec<String> = s.validate(&obj).into_iter().map(|c| c.field).collect();
        fields.sort();
        assert_eq!(fields, ["spec.code.port", "spec.code.version"]);
        // Without `code` the pool specialises by image, and serialises without it.
        let pool: PodPoolSpec = serde_json::from_value(json!({"template": {}})).expect("spec");
        assert_eq!(pool.code, None);
        assert!(serde_json::to_value(&pool).expect("json").get("code").is_none());
    }

    #[test]
    fn a_code_request_follows_fissions_fetcher_for_v1_and_v2() {
        let v2 = CodeRequest::new(&code_pool(2), "reg/app:v1", "main.handler", "uid-1")
            .expect("a request");
        assert_eq!((v2.sub_path.as_str(), v2.filepath.as_str()), ("uid-1", "/userfunc/uid-1"));
        assert_eq!((v2.port, v2.timeout_seconds, v2.path()), (8888, 12, "/v2/specialize"));
        expect![[r#"{"filepath":"/userfunc/uid-1","functionName":"main.handler","url":"/","envVersion":2}"#]]
            .assert_eq(&v2.body().expect("a body").to_string());
        // The annotation round-trips.
        let back: CodeRequest =
            serde_json::from_str(&serde_json::to_string(&v2).expect("json")).expect("parses");
        assert_eq!(back, v2);

        let v1 = CodeRequest::new(&code_pool(1), "reg/app:v1", "", "uid-1").expect("a request");
        assert_eq!((v1.sub_path.as_str(), v1.filepath.as_str()), ("", "/userfunc/user"));
        assert_eq!((v1.path(), v1.body()), ("/specialize", None));
    }

    #[test]
    fn a_code_volume_must_be_an_empty_dir_mounted_in_the_runtime() {
        let mut spec = code_pool(2);
        let code = |v: &str| CodeSpec { volume: v.into(), ..CodeSpec::default() };
        assert_eq!(code("userfunc").mount_path(&spec.template), Ok("/userfunc/".into()));
        assert_eq!(
            code("nope").mount_path(&spec.template),
            Err(CodeSpecError::NoVolume("nope".into()))
        );
        assert_eq!(
            code("cfg").mount_path(&spec.template),
            Err(CodeSpecError::NotEmptyDir("cfg".into()))
        );
        if let Some(p) = spec.template.spec.as_mut() {
            p.containers[0].volume_mounts = None;
        }
        let err = code("userfunc").mount_path(&spec.template).expect_err("not mounted");
        assert_eq!(err, CodeSpecError::NotMounted("userfunc".into()));
        assert!(CodeRequest::new(&spec, "i", "", "u").is_err());
    }

    #[test]
    fn a_consumers_container_image_is_the_code_and_its_first_arg_the_function() {
        let c: k8s_openapi::api::core::v1::Container = serde_json::from_value(
            json!({"name": "c", "image": "reg/app:v1", "args": ["main.main", "x"]}),
        )
        .expect("a container");
        assert_eq!(CodeRequest::of(&c), ("reg/app:v1".into(), "main.main".into()));
        let c = k8s_openapi::api::core::v1::Container { args: None, ..c };
        assert_eq!(CodeRequest::of(&c), ("reg/app:v1".into(), String::new()));
    }
}
