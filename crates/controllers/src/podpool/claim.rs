//! Claiming a pool pod: one conditional write per attempt (issue 12 part 2).
//!
//! # Guarantees
//! - A pod is given to at most one claimant: the write carries the resourceVersion the pod was
//!   listed at, so of two claimants of one pod the second gets 409 Conflict and moves on.
//! - The write moves everything at once: `pool-state=claimed`, the claimant and claim time in
//!   annotations, the pool's ownerReference replaced by the claimant's, the negative deletion
//!   cost removed. There is no moment at which the pod has two owners or none.
//! - A claimant that dies after the write leaves a claimed pod, which the pool controller
//!   deletes once `specializationTimeoutSeconds` pass without [`super::mark_specialized`].
//!
//! # Which claim
//! [`claim`] only claims; [`claim_for_image`] and [`claim_for_code`] also ask the node agent to
//! specialise the pod (by image, or by code with Fission's environment protocol), in the same
//! write. Consumers (Knative revisions, CloneSets) call [`claim_for`], which picks by the
//! pool's spec: a pool with `spec.code` specialises by code (the container's image is the code
//! image, its first `args` entry the function name: `kinetic_api::pool::CodeRequest::of`),
//! any other by image.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kinetic_api::pool::{
    CLAIMED_AT_ANNOTATION, CLAIMED_BY_ANNOTATION, CREATED_CLAIMED_ANNOTATION, CodeRequest,
    CodeSpecError, POD_DELETION_COST_ANNOTATION, POOL_LABEL, POOL_STATE_LABEL, PodPool,
    SPECIALIZE_ANNOTATION, SPECIALIZE_CODE_ANNOTATION, state,
};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource as _, ResourceExt as _};
use rand::seq::SliceRandom as _;
use serde_json::json;

/// Labels and annotations a consumer puts on the pod in the claim's one write, so the pod
/// is the consumer's in every respect at once: its selector, revision and routing labels
/// (a CloneSet's `controller-revision-hash` and instance id, Knative's
/// `serving.knative.dev/revision`). The pool's own keys ([`POOL_LABEL`],
/// [`POOL_STATE_LABEL`], the claim annotations) are not overridden.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClaimMeta {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// Why a claim gave no pod.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// No ready, unclaimed pod was left (or every one was taken by another claimant first):
    /// the caller creates its own pod instead.
    #[error("pool {namespace}/{pool} has no ready pod to claim")]
    PoolEmpty { namespace: String, pool: String },
    /// A claim by image named a container without an image.
    #[error("container {container:?} to specialise into has no image")]
    NoImage { container: String },
    /// A claim by code on a pool whose code volume is unusable (the pool reports the same
    /// problem in its `Ready` condition).
    #[error("pool {namespace}/{pool} cannot specialise by code")]
    BadCodeSpec {
        namespace: String,
        pool: String,
        #[source]
        source: CodeSpecError,
    },
    /// The API refused or failed a request for another reason than a lost race.
    #[error("claiming a pod of pool {namespace}/{pool}")]
    Api {
        namespace: String,
        pool: String,
        #[source]
        source: kube::Error,
    },
}

/// Whether `pod`'s Ready condition is True.
pub(crate) fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Claims one ready pod of pool `pool` in `namespace` for `claimant` (an object in the same
/// namespace, which becomes the pod's owner: when it goes, the garbage collector takes the pod).
///
/// Candidates are tried in random order, so concurrent claimants spread over the pool instead
/// of all racing for its first pod.
///
/// # Errors
/// [`ClaimError::PoolEmpty`] when no candidate could be had; [`ClaimError::Api`] when listing
/// or a write failed otherwise than by a conflict or a vanished pod.
pub async fn claim(
    client: &Client,
    namespace: &str,
    pool: &str,
    claimant: &OwnerReference,
) -> Result<Pod, ClaimError> {
    claim_with(client, namespace, pool, claimant, How::Nothing, &ClaimMeta::default()).await
}

/// [`claim`] and, in the same conditional write, ask the node agent to specialise the pod by
/// image into `container` (see `kinetic_api::pool`, "Specialisation by image"): the pool pod's
/// first app container gets `container`'s image in the spec, and the whole of `container` goes
/// into the `kinetic.dev/specialize` annotation. The agent labels the pod `specialized` once
/// it is Ready as `container`, or `failed`.
///
/// # Errors
/// As [`claim`]; [`ClaimError::NoImage`] when `container` has no image.
pub async fn claim_for_image(
    client: &Client,
    namespace: &str,
    pool: &str,
    claimant: &OwnerReference,
    container: &Container,
) -> Result<Pod, ClaimError> {
    if container.image.as_deref().is_none_or(str::is_empty) {
        return Err(ClaimError::NoImage { container: container.name.clone() });
    }
    claim_with(client, namespace, pool, claimant, How::Image(container), &ClaimMeta::default())
        .await
}

/// [`claim`] and, in the same conditional write, ask the node agent to specialise the pod by
/// code (see `kinetic_api::pool`, "Specialisation by code"): the `kinetic.dev/specialize-code`
/// annotation gets the [`CodeRequest`] for code image `image` and Fission's `function_name`
/// (empty for the runtime's default), made from `pool`'s spec. The pod spec is not changed
/// (the runtime keeps running; the code is data in a volume). The agent labels the pod
/// `specialized` once the runtime accepted the code, or `failed`.
///
/// # Errors
/// As [`claim`]; [`ClaimError::NoImage`] when `image` is empty; [`ClaimError::BadCodeSpec`]
/// when the pool's code volume is unusable (or the pool has no `spec.code`: its default
/// `userfunc` volume is then looked for).
pub async fn claim_for_code(
    client: &Client,
    pool: &PodPool,
    claimant: &OwnerReference,
    image: &str,
    function_name: &str,
) -> Result<Pod, ClaimError> {
    claim_for_code_with(client, pool, claimant, image, function_name, &ClaimMeta::default()).await
}

async fn claim_for_code_with(
    client: &Client,
    pool: &PodPool,
    claimant: &OwnerReference,
    image: &str,
    function_name: &str,
    meta: &ClaimMeta,
) -> Result<Pod, ClaimError> {
    let namespace = pool.namespace().unwrap_or_default();
    let name = pool.name_any();
    if image.is_empty() {
        return Err(ClaimError::NoImage { container: String::new() });
    }
    let req =
        CodeRequest::new(&pool.spec, image, function_name, &claimant.uid).map_err(|source| {
            ClaimError::BadCodeSpec { namespace: namespace.clone(), pool: name.clone(), source }
        })?;
    claim_with(client, &namespace, &name, claimant, How::Code(&req), meta).await
}

/// The claim a consumer makes: by code when `pool` has `spec.code` (the container's image is
/// the code image and its first `args` entry the function name), else by image (the pod
/// becomes `container`). The claimed pod is owned by `claimant`, in `pool`'s namespace.
///
/// # Errors
/// As [`claim_for_image`] or [`claim_for_code`]; [`ClaimError::PoolEmpty`] is the consumer's
/// cue to create its own pod.
pub async fn claim_for(
    client: &Client,
    pool: &PodPool,
    claimant: &OwnerReference,
    container: &Container,
) -> Result<Pod, ClaimError> {
    claim_for_with(client, pool, claimant, container, &ClaimMeta::default()).await
}

/// [`claim_for`] that also sets `meta`'s labels and annotations in the same write (a
/// consumer's selector and routing labels: see [`ClaimMeta`]).
///
/// # Errors
/// As [`claim_for`].
pub async fn claim_for_with(
    client: &Client,
    pool: &PodPool,
    claimant: &OwnerReference,
    container: &Container,
    meta: &ClaimMeta,
) -> Result<Pod, ClaimError> {
    if pool.spec.code.is_some() {
        let (image, function) = CodeRequest::of(container);
        if image.is_empty() {
            return Err(ClaimError::NoImage { container: container.name.clone() });
        }
        claim_for_code_with(client, pool, claimant, &image, &function, meta).await
    } else {
        if container.image.as_deref().is_none_or(str::is_empty) {
            return Err(ClaimError::NoImage { container: container.name.clone() });
        }
        let namespace = pool.namespace().unwrap_or_default();
        let how = How::Image(container);
        claim_with(client, &namespace, &pool.name_any(), claimant, how, meta).await
    }
}

/// The pod a consumer of a code pool creates when the pool has no ready pod to give
/// (`kinetic_api::pool`, "When a code pool is empty"): `pool`'s template (its runtime), named
/// `name`, owned by `claimant` alone, with `meta`'s labels and annotations and everything a
/// claim by code writes (`pool-state=claimed`, the claimant and claim time, the
/// [`CodeRequest`] for `container`), so the node agent specialises it once the runtime is
/// ready and every reader treats it as a claimed pool pod. A code image has no runtime of its
/// own: a pod of the consumer's template would never serve (the cause of the failed requests
/// of `kinetic bench coldstart`'s burst, issue 12).
///
/// # Errors
/// [`ClaimError::NoImage`] when `container` names no code image; [`ClaimError::BadCodeSpec`]
/// when `pool` has no `spec.code` or its code volume is unusable.
pub fn created_claimed(
    pool: &PodPool,
    claimant: &OwnerReference,
    container: &Container,
    meta: &ClaimMeta,
    name: &str,
    now: jiff::Timestamp,
) -> Result<Pod, ClaimError> {
    let namespace = pool.namespace().unwrap_or_default();
    let pool_name = pool.name_any();
    let bad = |source| ClaimError::BadCodeSpec {
        namespace: namespace.clone(),
        pool: pool_name.clone(),
        source,
    };
    if pool.spec.code.is_none() {
        return Err(bad(CodeSpecError::NotACodePool));
    }
    let (image, function) = CodeRequest::of(container);
    if image.is_empty() {
        return Err(ClaimError::NoImage { container: container.name.clone() });
    }
    let req = CodeRequest::new(&pool.spec, &image, &function, &claimant.uid).map_err(bad)?;
    let mut m = pool.spec.template.metadata.clone().unwrap_or_default();
    let labels = m.labels.get_or_insert_with(BTreeMap::new);
    labels.extend(meta.labels.clone());
    labels.insert(POOL_LABEL.to_owned(), pool_name.clone());
    labels.insert(POOL_STATE_LABEL.to_owned(), state::CLAIMED.to_owned());
    let ann = m.annotations.get_or_insert_with(BTreeMap::new);
    ann.extend(meta.annotations.clone());
    ann.insert(CLAIMED_BY_ANNOTATION.to_owned(), format!("{}/{}", claimant.kind, claimant.name));
    ann.insert(
        CLAIMED_AT_ANNOTATION.to_owned(),
        now.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
    );
    ann.insert(CREATED_CLAIMED_ANNOTATION.to_owned(), "true".to_owned());
    ann.insert(
        SPECIALIZE_CODE_ANNOTATION.to_owned(),
        serde_json::to_string(&req).unwrap_or_default(),
    );
    m.name = Some(name.to_owned());
    m.generate_name = None;
    m.namespace = Some(namespace);
    m.owner_references = Some(vec![claimant.clone()]);
    Ok(Pod { metadata: m, spec: pool.spec.template.spec.clone(), status: None })
}

/// Creates [`created_claimed`]'s pod.
///
/// # Errors
/// As [`created_claimed`]; [`ClaimError::Api`] when the create fails.
pub async fn create_claimed(
    client: &Client,
    pool: &PodPool,
    claimant: &OwnerReference,
    container: &Container,
    meta: &ClaimMeta,
    name: &str,
) -> Result<Pod, ClaimError> {
    let pod = created_claimed(pool, claimant, container, meta, name, jiff::Timestamp::now())?;
    let namespace = pool.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    api.create(&PostParams::default(), &pod).await.map_err(|source| ClaimError::Api {
        namespace,
        pool: pool.name_any(),
        source,
    })
}

/// What a claim asks the node agent to do besides.
#[derive(Clone, Copy)]
enum How<'a> {
    Nothing,
    Image(&'a Container),
    Code(&'a CodeRequest),
}

/// [`claim`] among `listed`, pods the caller listed itself (for instance every pool's ready
/// pods of a namespace, beside its other reads, to save a round trip): only the Ready,
/// unclaimed pods of `pool` it holds are candidates, and the one conditional write per attempt
/// makes a stale list safe (a pod taken meanwhile answers 409 and the next is tried).
///
/// # Errors
/// As [`claim`].
pub async fn claim_among(
    client: &Client,
    namespace: &str,
    pool: &str,
    claimant: &OwnerReference,
    listed: Vec<Pod>,
) -> Result<Pod, ClaimError> {
    take(client, namespace, pool, claimant, How::Nothing, &ClaimMeta::default(), listed).await
}

async fn claim_with(
    client: &Client,
    namespace: &str,
    pool: &str,
    claimant: &OwnerReference,
    how: How<'_>,
    meta: &ClaimMeta,
) -> Result<Pod, ClaimError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let api_err =
        |source| ClaimError::Api { namespace: namespace.to_owned(), pool: pool.to_owned(), source };
    let selector = format!("{POOL_LABEL}={pool},{POOL_STATE_LABEL}={}", state::READY);
    let listed = api.list(&ListParams::default().labels(&selector)).await.map_err(api_err)?;
    take(client, namespace, pool, claimant, how, meta, listed.items).await
}

/// Tries the candidates among `listed` in random order, one conditional write each.
async fn take(
    client: &Client,
    namespace: &str,
    pool: &str,
    claimant: &OwnerReference,
    how: How<'_>,
    meta: &ClaimMeta,
    listed: Vec<Pod>,
) -> Result<Pod, ClaimError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let api_err =
        |source| ClaimError::Api { namespace: namespace.to_owned(), pool: pool.to_owned(), source };
    let pool_kind = PodPool::kind(&());
    let mut candidates: Vec<Pod> = listed
        .into_iter()
        .filter(|p| {
            p.labels().get(POOL_LABEL).is_some_and(|l| l == pool)
                && p.labels().get(POOL_STATE_LABEL).is_some_and(|s| s == state::READY)
        })
        .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
        .filter(|p| {
            p.owner_references().iter().any(|o| o.kind == pool_kind && o.controller == Some(true))
        })
        .collect();
    candidates.shuffle(&mut rand::rng());
    for pod in candidates {
        let refs: Vec<OwnerReference> = pod
            .owner_references()
            .iter()
            .filter(|o| o.kind != pool_kind)
            .cloned()
            .chain(std::iter::once(claimant.clone()))
            .collect();
        let now = jiff::Timestamp::now();
        let mut labels = json!(meta.labels);
        labels[POOL_STATE_LABEL] = json!(state::CLAIMED);
        labels[POOL_LABEL] = json!(pool);
        let mut annotations = json!(meta.annotations);
        annotations[CLAIMED_BY_ANNOTATION] = json!(format!("{}/{}", claimant.kind, claimant.name));
        annotations[CLAIMED_AT_ANNOTATION] =
            json!(now.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string());
        annotations[POD_DELETION_COST_ANNOTATION] = json!(null);
        let mut body = json!({"metadata": {
            "resourceVersion": pod.resource_version(),
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": refs,
        }});
        // A strategic merge patch, so the container list merges by name (a JSON merge patch
        // would replace it); both carry the same metadata and the resourceVersion condition.
        let target = pod.spec.as_ref().and_then(|s| s.containers.first()).map(|c| c.name.clone());
        if let How::Code(req) = how {
            body["metadata"]["annotations"][SPECIALIZE_CODE_ANNOTATION] =
                json!(serde_json::to_string(req).unwrap_or_default());
        }
        let patch = match (how, target) {
            (How::Image(c), Some(target)) => {
                let spec = serde_json::to_string(c).unwrap_or_default();
                body["metadata"]["annotations"][SPECIALIZE_ANNOTATION] = json!(spec);
                body["spec"] = json!({"containers": [{"name": target, "image": c.image}]});
                // Owner references merge by uid in a strategic merge patch: replace the list,
                // or the pool would stay a second controller.
                let mut owners = refs.iter().map(|r| json!(r)).collect::<Vec<_>>();
                owners.push(json!({"$patch": "replace"}));
                body["metadata"]["ownerReferences"] = json!(owners);
                Patch::Strategic(&body)
            }
            _ => Patch::Merge(&body),
        };
        match api.patch(&pod.name_any(), &PatchParams::default(), &patch).await {
            Ok(p) => {
                tracing::debug!(pool, pod = %p.name_any(), claimant = %claimant.name, "claimed");
                return Ok(p);
            }
            // Another claimant (or the pool controller) wrote it first, or it is gone.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
            Err(e) => return Err(api_err(e)),
        }
    }
    Err(ClaimError::PoolEmpty { namespace: namespace.to_owned(), pool: pool.to_owned() })
}

/// Marks a claimed pod specialised (`pool-state=specialized`), under the resourceVersion the
/// caller read, so the pool controller no longer times it out. A consumer calls this once the
/// pod serves as its own.
///
/// # Errors
/// The write failed; a 409 means the pod changed meanwhile (perhaps deleted by the timeout).
pub async fn mark_specialized(client: &Client, pod: &Pod) -> Result<Pod, kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let body = json!({"metadata": {
        "resourceVersion": pod.resource_version(),
        "labels": {POOL_STATE_LABEL: state::SPECIALIZED},
    }});
    api.patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&body)).await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn code_pool() -> PodPool {
        serde_json::from_value(json!({
            "apiVersion": "kinetic.dev/v1alpha1", "kind": "PodPool",
            "metadata": {"name": "py", "namespace": "fn", "uid": "pool-uid"},
            "spec": {"code": {"volume": "userfunc", "port": 8888},
                     "template": {"metadata": {"labels": {"app": "py"}},
                                  "spec": {"containers": [{"name": "runtime", "image": "runtime:v1",
                                             "volumeMounts": [{"name": "userfunc", "mountPath": "/userfunc"}]}],
                                           "volumes": [{"name": "userfunc", "emptyDir": {}}]}}},
        }))
        .unwrap()
    }

    fn owner() -> OwnerReference {
        serde_json::from_value(json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
            "name": "fn-00001-deployment", "uid": "cs-uid", "controller": true,
            "blockOwnerDeletion": true}))
        .unwrap()
    }

    #[test]
    fn a_pod_made_claimed_runs_the_pools_runtime_and_asks_for_the_consumers_code() {
        let container: Container =
            serde_json::from_value(json!({"name": "user-container", "image": "code:v1",
                                          "args": ["main.main"]}))
            .unwrap();
        let meta = ClaimMeta {
            labels: [("serving.knative.dev/revision".to_owned(), "fn-00001".to_owned())].into(),
            annotations: [("a".to_owned(), "b".to_owned())].into(),
        };
        let now: jiff::Timestamp = "2026-12-07T10:00:00Z".parse().unwrap();
        let p = created_claimed(
            &code_pool(),
            &owner(),
            &container,
            &meta,
            "fn-00001-deployment-abcde",
            now,
        )
        .unwrap();
        assert_eq!(p.metadata.name.as_deref(), Some("fn-00001-deployment-abcde"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("fn"));
        assert_eq!(p.metadata.owner_references, Some(vec![owner()]), "the consumer's alone");
        let images: Vec<_> =
            p.spec.as_ref().unwrap().containers.iter().map(|c| c.image.clone().unwrap()).collect();
        assert_eq!(images, ["runtime:v1"], "the pool's runtime, never the code image");
        let l = p.metadata.labels.unwrap();
        assert_eq!(
            (l[POOL_LABEL].as_str(), l[POOL_STATE_LABEL].as_str(), l["app"].as_str()),
            ("py", state::CLAIMED, "py")
        );
        assert_eq!(l["serving.knative.dev/revision"], "fn-00001");
        let a = p.metadata.annotations.unwrap();
        assert_eq!(a[CLAIMED_BY_ANNOTATION], "CloneSet/fn-00001-deployment");
        assert_eq!(a[CLAIMED_AT_ANNOTATION], "2026-12-07T10:00:00.000000Z");
        assert_eq!(a[CREATED_CLAIMED_ANNOTATION], "true");
        assert_eq!(a["a"], "b");
        let req: CodeRequest = serde_json::from_str(&a[SPECIALIZE_CODE_ANNOTATION]).unwrap();
        assert_eq!((req.image.as_str(), req.function_name.as_str()), ("code:v1", "main.main"));
        assert!(!a.contains_key(POD_DELETION_COST_ANNOTATION));
    }

    #[test]
    fn only_a_code_pool_and_a_code_image_make_a_claimed_pod() {
        let now = jiff::Timestamp::now();
        let no_image: Container = serde_json::from_value(json!({"name": "c"})).unwrap();
        let e = created_claimed(&code_pool(), &owner(), &no_image, &ClaimMeta::default(), "x", now);
        assert!(matches!(e, Err(ClaimError::NoImage { .. })), "{e:?}");
        let mut image_pool = code_pool();
        image_pool.spec.code = None;
        let c: Container = serde_json::from_value(json!({"name": "c", "image": "i"})).unwrap();
        let e = created_claimed(&image_pool, &owner(), &c, &ClaimMeta::default(), "x", now);
        assert!(
            matches!(e, Err(ClaimError::BadCodeSpec { source: CodeSpecError::NotACodePool, .. })),
            "{e:?}"
        );
    }
}
