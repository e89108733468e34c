//! Scale-out from a warm pod pool (issue 12 part 4): a CloneSet annotated
//! `kinetic.dev/pod-pool: NAME` claims ready pods of the PodPool `NAME` (same namespace) before
//! it creates any, and creates pods only for what the pool could not give. A Knative Revision
//! copies the annotation to its CloneSet, so one mechanism serves both consumers.
//!
//! A claim is the pool's one conditional write (`podpool::claim_for_with`, by image or by
//! code as the pool's spec says): the pod's
//! controller becomes the CloneSet, it gets every label a created pod would get (the
//! template's, hence the selector's and Knative's routing labels, `controller-revision-hash`,
//! `pod-template-hash`, a fresh `apps.kruise.io/cloneset-instance-id`, lifecycle `Normal`) and the
//! template's annotations, and the node agent is asked to run the template's container in
//! place of the placeholder (by image), or to load its image's code into the pool's runtime
//! (by code: the container's image is the code image, its first `args` entry the function). What differs from a created pod, and why:
//! - **Name**: a pod's name cannot change, so a claimed pod keeps the pool's name
//!   (`{pool}-xxxxx`), not `{cloneset}-{instance-id}`. Its instance id is a fresh one all the
//!   same, so ids stay unique and nothing that reads the label (volume claims, ids for new
//!   pods) sees a difference.
//! - **Readiness gates**: they cannot be added to an existing pod, so a claimed pod has no
//!   `InPlaceUpdateReady` gate. Upstream accepts gate-less pods (it adopts orphans without one
//!   and updates them in place without taking them out of service first), but a claimed pod's
//!   container is the pool's container under the pool's name, which the template's in-place
//!   patch cannot address, so a claimed pod is **recreated** on a revision change, never
//!   updated in place ([`from_pool`]; under `InPlaceOnly` it is left as it is, with the
//!   Warning Event of a pod that cannot be updated in place). Scale-in treats it like any pod.
//! - **Starting**: until the node agent labels it `kinetic.dev/pool-state=specialized`, its
//!   Ready condition is the placeholder's; `kinetic_api::pool::ready_as_claimant` makes every
//!   readiness check (status, scaling, endpoints, the gateway) count it as a starting pod.
//!   Expectations record the claim as a creation, so the next pass neither creates a
//!   replacement nor claims again before the cache shows the claimed pod as owned.
//!
//! Which templates can be claimed into ([`claimable`]): exactly one container, no init
//! containers, no volumes or volume mounts, no `volumeClaimTemplates`, no preNormal hook and no
//! `markPodNotReady` hook (its `KruisePodReady` gate cannot be added either). Anything else
//! creates pods as before, with a Warning Event saying why the pool was not used (once per
//! revision and reason, not at every scale-out: [`WarnOnce`]). The pool is read from the
//! controller's PodPool cache, never fetched per scale-out. When the
//! pool is empty (or does not exist), pods are created: a pool only ever makes scale-out
//! faster, never blocks it. A **code** pool's consumer, though, never creates a pod of its own
//! template, whose image is a code image without a runtime (`kinetic bench coldstart`'s burst
//! found such pods failing with `exec: "main.main": executable file not found`, and the
//! requests to them failing): for what an empty code pool cannot give it creates pods of the
//! pool's runtime, claimed from the start and specialised by the node agent once the runtime
//! is ready (`kinetic_api::pool`, "When a code pool is empty").

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Container, Pod};
use kinetic_api::kruise::cloneset::CloneSet;
use kinetic_api::kruise::{
    CLONESET_INSTANCE_ID_LABEL, CONTROLLER_REVISION_HASH_LABEL, LIFECYCLE_STATE_LABEL,
    LifecycleState, POD_TEMPLATE_HASH_LABEL,
};
use kinetic_api::pool::{CLAIMED_BY_ANNOTATION, POD_POOL_ANNOTATION, PodPool};
use kube::ResourceExt as _;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use serde_json::Value;

use super::revision::template_of;
use super::{Ctx, key, owner_ref, uses_kruise_pod_ready};
use crate::events::EventReq;
use crate::podpool::{ClaimError, ClaimMeta, claim_for_with, create_claimed};

/// The `PodPoolNotUsed` Warnings sent: per CloneSet (`namespace/name`), the last revision and
/// reason warned about.
#[derive(Default)]
pub struct WarnOnce(std::sync::Mutex<std::collections::HashMap<String, (String, String)>>);

impl WarnOnce {
    /// Whether the Warning for `cloneset`'s `revision` and `reason` is to be sent: the first
    /// time that pair comes up, not again until the revision or the reason changes.
    pub fn first(&self, cloneset: &str, revision: &str, reason: &str) -> bool {
        let mut sent = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = (revision.to_owned(), reason.to_owned());
        if sent.get(cloneset) == Some(&now) {
            return false;
        }
        sent.insert(cloneset.to_owned(), now);
        true
    }

    /// Forgets a deleted CloneSet.
    pub fn forget(&self, cloneset: &str) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(cloneset);
    }
}

/// The pool a CloneSet claims from: its `kinetic.dev/pod-pool` annotation, when not empty.
pub(super) fn pool_name(cs: &CloneSet) -> Option<&str> {
    cs.annotations().get(POD_POOL_ANNOTATION).map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// Whether `p` came from a pool (and so is recreated, never updated in place).
pub(super) fn from_pool(p: &Pod) -> bool {
    kinetic_rollout::pod::annotation(p, CLAIMED_BY_ANNOTATION).is_some()
}

/// The container a pool pod is specialised into for `template` (a pod template as JSON), or
/// why the template's pods cannot come from a pool.
pub(super) fn claimable(cs: &CloneSet, template: &Value) -> Result<Container, String> {
    let spec = &template["spec"];
    let nonempty = |v: &Value| v.as_array().is_some_and(|a| !a.is_empty());
    let containers = spec["containers"].as_array().map_or(0, Vec::len);
    if containers != 1 {
        return Err(format!("the template has {containers} containers, a pool pod runs one"));
    }
    if nonempty(&spec["initContainers"]) {
        return Err("the template has init containers".to_owned());
    }
    if nonempty(&spec["volumes"]) || nonempty(&spec["containers"][0]["volumeMounts"]) {
        return Err("the template has volumes, which a pool pod cannot gain".to_owned());
    }
    if cs.spec.volume_claim_templates.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err("the CloneSet has volumeClaimTemplates".to_owned());
    }
    let lifecycle = cs.spec.lifecycle.as_ref();
    if lifecycle.is_some_and(|l| l.pre_normal.is_some()) {
        return Err("the CloneSet has a preNormal hook".to_owned());
    }
    if uses_kruise_pod_ready(cs) {
        return Err(
            "a markPodNotReady hook needs the KruisePodReady gate, which a pool pod cannot gain"
                .to_owned(),
        );
    }
    let c: Container = serde_json::from_value(spec["containers"][0].clone())
        .map_err(|e| format!("the template's container does not read as one: {e}"))?;
    if c.image.as_deref().is_none_or(str::is_empty) {
        return Err("the template's container has no image".to_owned());
    }
    Ok(c)
}

/// The labels and annotations a claimed pod of revision `rev` gets in the claim's write: what
/// [`super::new_pod`] gives a created pod.
pub(super) fn claim_meta(template: &Value, rev: &ControllerRevision, id: &str) -> ClaimMeta {
    let strings = |v: &Value| -> BTreeMap<String, String> {
        v.as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect()
    };
    let mut labels = strings(&template["metadata"]["labels"]);
    let rev_name = rev.name_any();
    labels.insert(
        CONTROLLER_REVISION_HASH_LABEL.into(),
        kinetic_rollout::pod::revision_label(&rev_name).to_owned(),
    );
    labels.insert(
        POD_TEMPLATE_HASH_LABEL.into(),
        kinetic_rollout::pod::short_hash(&rev_name).to_owned(),
    );
    labels.insert(CLONESET_INSTANCE_ID_LABEL.into(), id.to_owned());
    labels.insert(LIFECYCLE_STATE_LABEL.into(), LifecycleState::Normal.as_str().to_owned());
    ClaimMeta { labels, annotations: strings(&template["metadata"]["annotations"]) }
}

/// Claims up to `which.len()` pool pods, the i-th into revision `which[i]`, concurrently.
/// Answers the claimed pods (owned by `cs` now) and the revisions of the pods still to
/// create, which the caller creates. A pool that cannot serve (empty, missing, an unclaimable
/// template, an API error) leaves the scale-out to pod creation, with a Warning Event for what
/// the user can fix; except that for an empty code pool the pods are created here, of the
/// pool's runtime and claimed ([`created_from_pool`]), and answered among the claimed.
///
/// # Errors
/// Creating a pod of an empty code pool's runtime failed (the pods made before are in the
/// expectations; the next pass retries the rest).
pub(super) async fn claim_pods(
    ctx: &Ctx,
    cs: &CloneSet,
    which: &[Arc<ControllerRevision>],
    existing: &[Pod],
) -> Result<(Vec<Pod>, Vec<Arc<ControllerRevision>>), ClaimError> {
    let Some(pool) = pool_name(cs) else { return Ok((Vec::new(), which.to_vec())) };
    let ns = cs.namespace().unwrap_or_default();
    let owner = key(cs);
    // The revision the pods are for: a Warning is sent once per (revision, reason), not at
    // every scale-out (as upstream's event correlator folds repeats; the remembered pair is
    // dropped with the CloneSet).
    let revision = which.first().map(|r| r.name_any()).unwrap_or_default();
    let not_used = |why: String| {
        if ctx.pool_warnings.first(&owner, &revision, &why) {
            ctx.events.send(EventReq::for_object(
                cs,
                "Warning",
                "PodPoolNotUsed",
                format!("pods are created, not claimed from pool {pool}: {why}"),
            ));
        }
    };
    // From the cache; only while it has not synced yet (just after a start) from the API.
    let found = if crate::cache_ready(&ctx.pools) {
        Ok(ctx.pools.get(&ObjectRef::new(pool).within(&ns)).map(|p| (*p).clone()))
    } else {
        Api::<PodPool>::namespaced(ctx.client.clone(), &ns).get_opt(pool).await
    };
    let pool_obj = match found {
        Ok(Some(p)) => p,
        Ok(None) => {
            not_used("it does not exist".to_owned());
            return Ok((Vec::new(), which.to_vec()));
        }
        Err(e) => {
            tracing::warn!(cloneset = %owner, pool, error = %e, "reading the pod pool; creating pods instead");
            return Ok((Vec::new(), which.to_vec()));
        }
    };
    let claimant = owner_ref(cs);
    let ids = {
        let mut rng = rand::rng();
        kinetic_rollout::scale::available_instance_ids(which.len(), existing, [], &mut rng)
    };
    let mut jobs = Vec::new();
    for (rev, id) in which.iter().zip(ids) {
        let Some(template) = template_of(rev) else { return Ok((Vec::new(), which.to_vec())) };
        match claimable(cs, &template) {
            Ok(c) => {
                let meta = claim_meta(&template, rev, &id);
                jobs.push((c, meta, id));
            }
            Err(why) => {
                not_used(why);
                return Ok((Vec::new(), which.to_vec()));
            }
        }
    }
    let claims =
        jobs.iter().map(|(c, meta, _)| claim_for_with(&ctx.client, &pool_obj, &claimant, c, meta));
    let mut claimed = Vec::new();
    let mut rest = Vec::new();
    let mut dry = Vec::new();
    let results = futures::future::join_all(claims).await;
    for ((r, rev), job) in results.into_iter().zip(which).zip(&jobs) {
        match r {
            Ok(p) => {
                let name = p.name_any();
                ctx.exp.expect_create(&owner, &name);
                if let Some(rv) = p.metadata.resource_version.as_deref() {
                    ctx.exp.expect_update(&owner, &name, rv);
                }
                tracing::info!(cloneset = %owner, pool, pod = %name, "pod claimed from pool");
                ctx.events.send(EventReq::for_object(
                    cs,
                    "Normal",
                    "SuccessfulClaim",
                    format!("succeed to claim pod {name} from pool {pool}"),
                ));
                claimed.push(p);
            }
            // A code pool's consumer never creates a pod of its own template (a code image
            // has no runtime): it makes one of the pool's, claimed from the start.
            Err(ClaimError::PoolEmpty { .. }) if pool_obj.spec.code.is_some() => dry.push(job),
            Err(ClaimError::PoolEmpty { .. }) => rest.push(rev.clone()),
            Err(e) => {
                tracing::warn!(cloneset = %owner, pool, error = ?e, "claim failed; creating a pod instead");
                if pool_obj.spec.code.is_some() {
                    dry.push(job);
                } else {
                    rest.push(rev.clone());
                }
            }
        }
    }
    let made = created_from_pool(ctx, cs, &pool_obj, &claimant, &dry).await;
    let (made, failed) = match made {
        Ok(m) => (m, None),
        Err((m, e)) => (m, Some(e)),
    };
    claimed.extend(made);
    match failed {
        Some(e) => Err(e),
        None => Ok((claimed, rest)),
    }
}

/// Creates, for each of `jobs` (container, claim labels, instance id), a pod of the code pool
/// `pool` claimed from the start for `cs` (`podpool::create_claimed`), named as the CloneSet
/// names the pods it creates (`{cloneset}-{instance id}`). Answers the pods made; with the
/// first error, those made before it.
async fn created_from_pool(
    ctx: &Ctx,
    cs: &CloneSet,
    pool: &PodPool,
    claimant: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    jobs: &[&(Container, ClaimMeta, String)],
) -> Result<Vec<Pod>, (Vec<Pod>, ClaimError)> {
    let owner = key(cs);
    let pool_name = pool.name_any();
    let creates =
        jobs.iter().map(|(c, meta, id)| {
            let name = format!("{}-{id}", cs.name_any());
            ctx.exp.expect_create(&owner, &name);
            async move {
                (name.clone(), create_claimed(&ctx.client, pool, claimant, c, meta, &name).await)
            }
        });
    let mut made = Vec::new();
    let mut first_err = None;
    for (name, r) in futures::future::join_all(creates).await {
        match r {
            Ok(p) => {
                tracing::info!(cloneset = %owner, pool = %pool_name, pod = %name, "pool empty: pod of the pool's runtime created claimed");
                ctx.events.send(EventReq::for_object(
                    cs,
                    "Normal",
                    "SuccessfulCreate",
                    format!(
                        "succeed to create pod {name} of pool {pool_name}'s runtime for its code (the pool had no ready pod)"
                    ),
                ));
                made.push(p);
            }
            Err(e) => {
                ctx.exp.create_failed(&owner, &name);
                ctx.events.send(EventReq::for_object(
                    cs,
                    "Warning",
                    "FailedCreate",
                    format!("failed to create pod {name} of pool {pool_name}'s runtime: {e}"),
                ));
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err((made, e)),
        None => Ok(made),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cs(extra: Value) -> CloneSet {
        let mut v = json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
            "metadata": {"name": "web", "namespace": "default",
                         "annotations": {POD_POOL_ANNOTATION: "warm"}},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        });
        if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(v).unwrap()
    }

    fn template(spec: Value) -> Value {
        json!({"metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}}, "spec": spec})
    }

    #[test]
    fn a_pool_warning_is_sent_once_per_revision_and_reason() {
        let w = WarnOnce::default();
        // (cloneset, revision, reason) → sent?
        let table = [
            ("d/web", "web-1", "it does not exist", true),
            ("d/web", "web-1", "it does not exist", false),
            ("d/web", "web-1", "it does not exist", false),
            ("d/other", "other-1", "it does not exist", true),
            ("d/web", "web-1", "the template has init containers", true),
            ("d/web", "web-2", "the template has init containers", true),
            ("d/web", "web-2", "the template has init containers", false),
        ];
        for (i, (cs, rev, why, want)) in table.into_iter().enumerate() {
            assert_eq!(w.first(cs, rev, why), want, "row {i}: {cs} {rev} {why}");
        }
        w.forget("d/web");
        assert!(w.first("d/web", "web-2", "the template has init containers"), "after forget");
    }

    #[test]
    fn pool_name_is_the_trimmed_nonempty_annotation() {
        assert_eq!(pool_name(&cs(json!({}))), Some("warm"));
        let mut c = cs(json!({}));
        c.metadata.annotations = Some([(POD_POOL_ANNOTATION.to_owned(), " ".to_owned())].into());
        assert_eq!(pool_name(&c), None);
        c.metadata.annotations = None;
        assert_eq!(pool_name(&c), None);
    }

    #[test]
    fn only_single_container_templates_without_volumes_or_hooks_are_claimable() {
        let one = json!({"containers": [{"name": "c", "image": "i"}]});
        let table: Vec<(&str, Value, Value, Option<&str>)> = vec![
            ("one container", json!({}), one.clone(), None),
            (
                "two containers",
                json!({}),
                json!({"containers": [{"name": "a", "image": "i"}, {"name": "b", "image": "i"}]}),
                Some("2 containers"),
            ),
            (
                "init containers",
                json!({}),
                json!({"containers": [{"name": "c", "image": "i"}],
                       "initContainers": [{"name": "x", "image": "i"}]}),
                Some("init containers"),
            ),
            (
                "volumes",
                json!({}),
                json!({"containers": [{"name": "c", "image": "i"}],
                       "volumes": [{"name": "v", "emptyDir": {}}]}),
                Some("volumes"),
            ),
            (
                "volume claim templates",
                json!({"volumeClaimTemplates": [{"metadata": {"name": "d"}}]}),
                one.clone(),
                Some("volumeClaimTemplates"),
            ),
            (
                "preNormal hook",
                json!({"lifecycle": {"preNormal": {"finalizersHandler": ["x/y"]}}}),
                one.clone(),
                Some("preNormal"),
            ),
            (
                "markPodNotReady",
                json!({"lifecycle": {"preDelete": {"markPodNotReady": true,
                                                    "finalizersHandler": ["x/y"]}}}),
                one.clone(),
                Some("KruisePodReady"),
            ),
            ("no image", json!({}), json!({"containers": [{"name": "c"}]}), Some("no image")),
        ];
        for (what, extra, spec, want) in table {
            let got = claimable(&cs(extra), &template(spec));
            match (want, got) {
                (None, Ok(c)) => assert_eq!(c.name, "c", "{what}"),
                (Some(w), Err(e)) => assert!(e.contains(w), "{what}: {e}"),
                (w, g) => panic!("{what}: want {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn a_claim_carries_the_labels_and_annotations_of_a_created_pod() {
        let rev: ControllerRevision = serde_json::from_value(json!({
            "metadata": {"name": "web-6d8f7c9b4"}, "revision": 1
        }))
        .unwrap();
        let meta = claim_meta(&template(json!({})), &rev, "abcde");
        let labels: Vec<String> = meta.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            labels,
            [
                "app=web",
                "apps.kruise.io/cloneset-instance-id=abcde",
                "controller-revision-hash=web-6d8f7c9b4",
                "lifecycle.apps.kruise.io/state=Normal",
                "pod-template-hash=6d8f7c9b4",
            ]
        );
        assert_eq!(meta.annotations, BTreeMap::from([("a".to_owned(), "b".to_owned())]));
    }
}
