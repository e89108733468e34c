//! The Revision controller (knative/serving `pkg/reconciler/revision`): each Revision runs as an
//! OpenKruise CloneSet `{revision}-deployment` it owns, and its conditions come from that
//! CloneSet and its pods.
//!
//! The CloneSet is created once, with `autoscaling.knative.dev/initial-scale` replicas (at
//! least `min-scale`, default 1); afterwards its replica count belongs to the autoscaler and
//! this controller never writes it. The pods carry the `serving.knative.dev/revision`,
//! `/configuration` and `/service` labels; the serving container (`user-container` by default)
//! gets `PORT`, `K_SERVICE`, `K_CONFIGURATION` and `K_REVISION` and the readiness probe on the
//! user port (upstream's queue-proxy probes on its behalf; Kinetic's node agent probes the
//! container directly).
//!
//! Conditions, with upstream's reasons: `ResourcesAvailable` False with the pods' waiting
//! reason (`ImagePullBackOff`, `ErrImagePull`, ...) or `ProgressDeadlineExceeded`,
//! `ContainerHealthy` False `ExitCode{n}` when a container exited, both True once a pod is
//! ready (and they stay True when the autoscaler scales to zero), `Ready` from the two, and
//! `Active` True while pods are ready, False `NoTraffic` at zero replicas. One deliberate
//! difference: upstream reports a waiting reason only after the deployment's progress deadline;
//! here an image pull failure is reported at once, since it will not heal without a new image.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Container, ContainerPort, EnvVar, Pod};
use kinetic_api::knative::config::Defaults;
use kinetic_api::knative::podautoscaler::{self as pa, PodAutoscaler};
use kinetic_api::knative::revision::{ContainerStatus, Revision, RevisionSpec, RevisionStatus};
use kinetic_api::knative::{
    CONFIGURATION_LABEL, REVISION_LABEL, SERVICE_LABEL, condition, env, webhook,
};
use kinetic_api::kruise::cloneset::{CloneSet, condition as cs_condition};
use kinetic_api::pool::{POD_POOL_ANNOTATION, SPECIALIZE_ANNOTATION};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource as _, ResourceExt as _};
use serde_json::json;

use super::{ReconcileError, controller_ref, key, set_condition, status_patch};

/// Annotation with the replicas a new Revision starts with.
pub const INITIAL_SCALE_ANNOTATION: &str = "autoscaling.knative.dev/initial-scale";
/// Annotation with the fewest replicas the autoscaler may leave.
pub const MIN_SCALE_ANNOTATION: &str = "autoscaling.knative.dev/min-scale";
/// Knative's `progress-deadline` default (`config-deployment`), in seconds.
pub const PROGRESS_DEADLINE_SECONDS: i32 = 600;

/// Pod waiting reasons that mean the revision's resources cannot come up.
const FAILING_WAITING_REASONS: [&str; 6] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
];

struct Ctx {
    client: Client,
    backoff: crate::backoff::Backoff,
}

/// Runs the Revision controller until `shutdown` resolves.
///
/// # Errors
/// None so far: API errors are retried per Revision with back-off.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> crate::Result<()> {
    let ctx = Arc::new(Ctx { client: client.clone(), backoff: crate::backoff::Backoff::default() });
    let pods = watcher::Config::default().labels(REVISION_LABEL);
    Controller::new(Api::<Revision>::all(client.clone()), watcher::Config::default())
        .owns(Api::<CloneSet>::all(client.clone()), watcher::Config::default())
        .owns(Api::<PodAutoscaler>::all(client.clone()), watcher::Config::default())
        .watches(Api::<Pod>::all(client), pods, |p| {
            let rev = p.labels().get(REVISION_LABEL)?;
            Some(ObjectRef::<Revision>::new(rev).within(&p.namespace()?))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(crate::log_reconcile("revision"))
        .await;
    Ok(())
}

fn error_policy(rev: Arc<Revision>, e: &ReconcileError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&*rev, e)
}

async fn reconcile(rev: Arc<Revision>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    ctx.backoff
        .reconcile(&*rev, async {
            if rev.meta().deletion_timestamp.is_none() {
                reconcile_pass(&rev, &ctx).await?;
            }
            Ok(Action::await_change())
        })
        .await
}

/// The name of a Revision's CloneSet.
pub fn workload_name(revision: &str) -> String {
    format!("{revision}-deployment")
}

/// The replicas a new Revision starts with: `initial-scale` (default 1), at least `min-scale`.
pub fn initial_replicas(rev: &Revision) -> i32 {
    let ann = |k: &str| rev.annotations().get(k).and_then(|v| v.trim().parse::<i32>().ok());
    let initial = ann(INITIAL_SCALE_ANNOTATION).filter(|n| *n >= 0).unwrap_or(1);
    initial.max(ann(MIN_SCALE_ANNOTATION).unwrap_or(0))
}

/// The serving container as the pods run it: the runtime contract's variables, the user port
/// declared, the readiness probe on it.
fn serving_container(c: &Container, rev: &Revision) -> Container {
    let mut c = c.clone();
    let port = webhook::user_port(&c);
    c.readiness_probe = webhook::pod_readiness_probe(&c);
    if c.ports.as_ref().is_none_or(Vec::is_empty) {
        c.ports = Some(vec![ContainerPort {
            name: Some("user-port".into()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]);
    }
    let labels = rev.labels();
    let configuration = labels.get(CONFIGURATION_LABEL).cloned().unwrap_or_default();
    // K_SERVICE: the Service's name, the Configuration's when there is no Service.
    let service = labels.get(SERVICE_LABEL).cloned().unwrap_or_else(|| configuration.clone());
    let vars = [
        (env::PORT, port.to_string()),
        (env::K_REVISION, rev.name_any()),
        (env::K_CONFIGURATION, configuration),
        (env::K_SERVICE, service),
    ];
    let list = c.env.get_or_insert_with(Vec::new);
    for (name, value) in vars {
        list.retain(|e| e.name != name);
        list.push(EnvVar { name: name.into(), value: Some(value), value_from: None });
    }
    c
}

/// The Revision's spec with Knative's webhook defaults: on a real cluster no Knative webhook
/// defaulted it (a no-op on the embedded server, which already did, with `config-defaults`).
fn defaulted(rev: &Revision) -> RevisionSpec {
    let mut spec = rev.spec.clone();
    webhook::set_revision_spec_defaults(&mut spec, &Defaults::default(), false);
    spec
}

/// The CloneSet a new Revision runs as.
pub fn make_cloneset(rev: &Revision) -> Result<CloneSet, ReconcileError> {
    let name = rev.name_any();
    let spec = defaulted(rev);
    let mut pod = spec.pod_spec();
    let serving = webhook::serving_container(&spec).map(|c| c.name.clone());
    for c in &mut pod.containers {
        if Some(&c.name) == serving.as_ref() {
            *c = serving_container(c, rev);
        }
    }
    let mut labels: BTreeMap<String, String> = rev.labels().clone();
    labels.insert(REVISION_LABEL.into(), name.clone());
    // Upstream: pods get `app: {revision}` unless the user labelled them otherwise.
    labels.entry("app".into()).or_insert_with(|| name.clone());
    // A pod pool (issue 12 part 4) is the CloneSet's to claim from: it scales the pods.
    let pool: BTreeMap<&str, &String> = rev
        .annotations()
        .get(POD_POOL_ANNOTATION)
        .map(|p| (POD_POOL_ANNOTATION, p))
        .into_iter()
        .collect();
    let cs = json!({
        "apiVersion": "apps.kruise.io/v1alpha1",
        "kind": "CloneSet",
        "metadata": {
            "name": workload_name(&name),
            "namespace": rev.namespace(),
            "labels": labels,
            "annotations": pool,
            "ownerReferences": [controller_ref(rev)],
        },
        "spec": {
            "replicas": initial_replicas(rev),
            "selector": {"matchLabels": {REVISION_LABEL: name}},
            "progressDeadlineSeconds": PROGRESS_DEADLINE_SECONDS,
            "template": {
                "metadata": {"labels": labels, "annotations": rev.annotations()},
                "spec": pod,
            },
        },
    });
    serde_json::from_value(cs)
        .map_err(|source| ReconcileError::Encode { what: "a CloneSet", source })
}

/// The PodAutoscaler of a Revision (upstream's `resources.MakePA`): same name, owned by it,
/// its labels and annotations (the `autoscaling.knative.dev/*` settings) with the class and
/// metric defaulted, scaling the Revision's CloneSet. `reachability` is left unknown: the
/// autoscaler, which reads the Routes, writes it (upstream's Revision reconciler derives it
/// from the `routingState` label, which Kinetic's Route reconciler does not write yet).
pub fn make_pa(rev: &Revision) -> Result<PodAutoscaler, ReconcileError> {
    let name = rev.name_any();
    let spec = defaulted(rev);
    let mut labels: BTreeMap<String, String> = rev.labels().clone();
    labels.insert(REVISION_LABEL.into(), name.clone());
    let mut annotations = rev.annotations().clone();
    annotations.entry(pa::CLASS_ANNOTATION.into()).or_insert_with(|| pa::KPA_CLASS.into());
    annotations.entry(pa::METRIC_ANNOTATION.into()).or_insert_with(|| "concurrency".into());
    let h2c = webhook::serving_container(&spec)
        .and_then(|c| c.ports.as_deref())
        .and_then(|p| p.first())
        .and_then(|p| p.name.as_deref())
        == Some("h2c");
    let obj = json!({
        "apiVersion": format!("{}/{}", pa::GROUP, pa::VERSION),
        "kind": "PodAutoscaler",
        "metadata": {
            "name": name,
            "namespace": rev.namespace(),
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [controller_ref(rev)],
        },
        "spec": {
            "containerConcurrency": spec.container_concurrency.unwrap_or(0),
            "scaleTargetRef": {
                "apiVersion": "apps.kruise.io/v1alpha1",
                "kind": "CloneSet",
                "name": workload_name(&name),
            },
            "protocolType": if h2c { "h2c" } else { "http1" },
        },
    });
    serde_json::from_value(obj)
        .map_err(|source| ReconcileError::Encode { what: "a PodAutoscaler", source })
}

/// A condition's reason and message.
type Why = (String, String);

/// What the pods say about the revision: the first waiting failure and the first exit.
fn pod_failures(pods: &[Pod]) -> (Option<Why>, Option<Why>) {
    let mut waiting = None;
    let mut exited = None;
    for p in pods {
        let Some(s) = p.status.as_ref() else { continue };
        let placeholder_until = placeholder_until(p);
        for c in s.container_statuses.iter().flatten() {
            let state = c.state.as_ref();
            if let Some(w) = state.and_then(|s| s.waiting.as_ref())
                && let Some(r) = w.reason.as_deref().filter(|r| FAILING_WAITING_REASONS.contains(r))
            {
                waiting.get_or_insert((r.to_owned(), w.message.clone().unwrap_or_default()));
            }
            let term = state
                .and_then(|s| s.terminated.as_ref())
                .or_else(|| c.last_state.as_ref().and_then(|s| s.terminated.as_ref()))
                // A pool pod's placeholder, killed to make room for the revision's container.
                .filter(|t| {
                    placeholder_until.is_none_or(|until| {
                        t.finished_at.as_ref().is_some_and(|f| until.is_some_and(|u| f.0 > u))
                    })
                });
            if let Some(t) = term {
                let msg = match t.message.as_deref().filter(|m| !m.is_empty()) {
                    Some(m) => m.to_owned(),
                    None if t.exit_code == 0 => "container exited with no error".to_owned(),
                    None => t.reason.clone().unwrap_or_default(),
                };
                exited.get_or_insert((
                    format!("ExitCode{}", t.exit_code),
                    format!("Container failed with: {msg}"),
                ));
            }
        }
    }
    (waiting, exited)
}

/// For a pool pod (issue 12): `Some(None)` while it is claimed and not yet specialised (every
/// exit is its placeholder's), `Some(Some(t))` once specialised (exits up to `t`, when the
/// revision's container started, are the placeholder's); `None` for any other pod.
fn placeholder_until(pod: &Pod) -> Option<Option<jiff::Timestamp>> {
    match pod.labels().get(kinetic_api::pool::POOL_STATE_LABEL).map(String::as_str) {
        Some(kinetic_api::pool::state::CLAIMED) => Some(None),
        Some(kinetic_api::pool::state::SPECIALIZED) => Some(
            pod.annotations()
                .get(kinetic_api::timeline::ANNOTATION)
                .and_then(|a| serde_json::from_str::<kinetic_api::timeline::Timeline>(a).ok())
                .and_then(|t| t.specialization?.specialized),
        ),
        _ => None,
    }
}

/// The revision's name for container `name` of `pod`: a pool pod claimed by image keeps the
/// pool's container name, and its `kinetic.dev/specialize` annotation has the revision's.
fn claimant_name(pod: &Pod, name: &str) -> String {
    let target = pod.spec.as_ref().and_then(|s| s.containers.first()).map(|c| c.name.as_str());
    let claimant = pod
        .annotations()
        .get(SPECIALIZE_ANNOTATION)
        .and_then(|a| serde_json::from_str::<Container>(a).ok())
        .map(|c| c.name);
    match claimant {
        Some(c) if target == Some(name) => c,
        _ => name.to_owned(),
    }
}

/// `repository@sha256:…` of `image` from a kubelet `imageID`.
fn digest_of(image: &str, image_id: &str) -> Option<String> {
    let id = image_id.trim_start_matches("docker-pullable://");
    if id.contains('@') {
        return Some(id.to_owned());
    }
    let hex = id.strip_prefix("sha256:")?;
    let repo = image.split('@').next().unwrap_or(image);
    // Strip a tag (after the last `/`, a `:`), not a registry port.
    let repo = match repo.rfind(':') {
        Some(i) if !repo[i..].contains('/') => &repo[..i],
        _ => repo,
    };
    Some(format!("{repo}@sha256:{hex}"))
}

async fn reconcile_pass(rev: &Revision, ctx: &Ctx) -> Result<(), ReconcileError> {
    let ns = rev.namespace().unwrap_or_default();
    let name = rev.name_any();
    let sets: Api<CloneSet> = Api::namespaced(ctx.client.clone(), &ns);
    let cs = match sets.get_opt(&workload_name(&name)).await? {
        Some(cs) => cs,
        None => {
            let mut cs = make_cloneset(rev)?;
            // An image-only successor of the serving revision takes over its pods in place.
            super::handoff::prepare(&ctx.client, rev, &mut cs).await?;
            match sets.create(&PostParams::default(), &cs).await {
                Ok(cs) => {
                    tracing::info!(revision = %key(rev), "CloneSet created");
                    cs
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    sets.get(&workload_name(&name)).await?
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let pas: Api<PodAutoscaler> = Api::namespaced(ctx.client.clone(), &ns);
    let kpa = match pas.get_opt(&name).await? {
        Some(p) => Some(p),
        None => match pas.create(&PostParams::default(), &make_pa(rev)?).await {
            Ok(p) => Some(p),
            Err(kube::Error::Api(s)) if s.code == 409 => pas.get_opt(&name).await?,
            // A cluster without the PodAutoscaler CRD (an older `kinetic controller` installed
            // the others): the Revision still runs, its Active condition from the CloneSet.
            Err(kube::Error::Api(s)) if s.code == 404 => None,
            Err(e) => return Err(e.into()),
        },
    };
    // The autoscaler's view, once it wrote one (upstream's `PropagateAutoscalerStatus`).
    let kpa_status =
        kpa.and_then(|p| p.status).filter(|s| s.status.condition(pa::condition::ACTIVE).is_some());
    let pods: Vec<Pod> = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default().labels(&format!("{REVISION_LABEL}={name}")))
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();

    let old = rev.status.clone().unwrap_or_default();
    let old_conds = old.status.conditions.clone().unwrap_or_default();
    let was_true = |t: &str| old.status.condition(t).is_some_and(|c| c.status == "True");
    let cs_status = cs.status.clone().unwrap_or_default();
    let ready = cs_status.ready_replicas;
    let desired = cs.spec.replicas.unwrap_or(0);
    let deadline = cs_status.conditions.iter().flatten().find(|c| {
        c.type_ == cs_condition::PROGRESSING
            && c.status == "False"
            && c.reason.as_deref() == Some(cs_condition::reason::DEADLINE_EXCEEDED)
    });
    let (waiting, exited) = pod_failures(&pods);

    let mut conds = Vec::new();
    let deploying = condition::reason::DEPLOYING;
    let resources = if ready > 0 {
        ("True".to_owned(), String::new(), String::new())
    } else if let Some((r, m)) = waiting {
        ("False".to_owned(), r, m)
    } else if let Some(d) = deadline {
        (
            "False".to_owned(),
            condition::reason::PROGRESS_DEADLINE_EXCEEDED.to_owned(),
            d.message.clone().unwrap_or_default(),
        )
    } else if was_true(condition::RESOURCES_AVAILABLE) {
        ("True".to_owned(), String::new(), String::new())
    } else {
        ("Unknown".to_owned(), deploying.to_owned(), String::new())
    };
    let healthy = if ready > 0 {
        ("True".to_owned(), String::new(), String::new())
    } else if let Some((r, m)) = exited {
        ("False".to_owned(), r, m)
    } else if was_true(condition::CONTAINER_HEALTHY) {
        ("True".to_owned(), String::new(), String::new())
    } else {
        ("Unknown".to_owned(), deploying.to_owned(), String::new())
    };
    // Ready follows the first dependent that is not True (knative.dev/pkg's living condition
    // set: False wins over Unknown).
    let ready_cond = [&resources, &healthy]
        .into_iter()
        .find(|c| c.0 == "False")
        .or_else(|| [&resources, &healthy].into_iter().find(|c| c.0 == "Unknown"))
        .cloned()
        .unwrap_or(("True".to_owned(), String::new(), String::new()));
    for (t, c) in [
        (condition::RESOURCES_AVAILABLE, &resources),
        (condition::CONTAINER_HEALTHY, &healthy),
        (condition::READY, &ready_cond),
    ] {
        set_condition(&mut conds, &old_conds, t, &c.0, &c.1, &c.2);
    }
    let (active, reason, message) = if let Some(a) =
        kpa_status.as_ref().and_then(|s| s.status.condition(pa::condition::ACTIVE))
    {
        (
            a.status.clone(),
            a.reason.clone().unwrap_or_default(),
            a.message.clone().unwrap_or_default(),
        )
    } else if ready > 0 {
        ("True".to_owned(), String::new(), String::new())
    } else if desired == 0 {
        (
            "False".to_owned(),
            condition::reason::NO_TRAFFIC.to_owned(),
            "The target is not receiving traffic.".to_owned(),
        )
    } else {
        ("Unknown".to_owned(), deploying.to_owned(), String::new())
    };
    set_condition(&mut conds, &old_conds, condition::ACTIVE, &active, &reason, &message);
    // The replica counts are the autoscaler's when it reports them (a negative desired scale
    // means "not known yet" and is not shown), the CloneSet's otherwise.
    let nonneg = |v: Option<i32>| v.filter(|v| *v >= 0);
    let (actual_replicas, desired_replicas) = match &kpa_status {
        Some(s) => (nonneg(s.actual_scale), nonneg(s.desired_scale)),
        None => (Some(ready), Some(desired)),
    };

    let mut st = RevisionStatus {
        log_url: old.log_url.clone(),
        container_statuses: old.container_statuses.clone(),
        init_container_statuses: old.init_container_statuses.clone(),
        actual_replicas,
        desired_replicas,
        ..RevisionStatus::default()
    };
    st.status.observed_generation = rev.meta().generation;
    st.status.annotations = old.status.annotations.clone();
    st.status.conditions = Some(conds);
    if st.container_statuses.is_none() {
        // The digests the pods resolved the images to (upstream resolves them before creating
        // the deployment; here the node agent's imageID is the source).
        // Not from a claimed pool pod before it is specialised: its image is the placeholder's.
        let ids: BTreeMap<String, String> = pods
            .iter()
            .filter(|p| kinetic_api::pool::ready_as_claimant(p.metadata.labels.as_ref()))
            .flat_map(|p| {
                let st = p.status.iter().flat_map(|s| s.container_statuses.iter().flatten());
                st.filter(|c| !c.image_id.is_empty())
                    .map(|c| (claimant_name(p, &c.name), c.image_id.clone()))
            })
            .collect();
        let resolved: Option<Vec<ContainerStatus>> = defaulted(rev)
            .containers
            .iter()
            .map(|c| {
                let id = ids.get(&c.name)?;
                Some(ContainerStatus {
                    name: Some(c.name.clone()),
                    image_digest: digest_of(c.image.as_deref().unwrap_or(""), id),
                })
            })
            .collect();
        st.container_statuses = resolved;
    }
    if rev.status.as_ref() != Some(&st) {
        let api: Api<Revision> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status_patch(&st)?)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_pool_pods_container_status_is_known_by_the_revisions_container_name() {
        let pod = |ann: Option<&str>| -> Pod {
            let mut v = serde_json::json!({"metadata": {"name": "warm-x"},
                "spec": {"containers": [{"name": "placeholder"}, {"name": "side"}]}});
            if let Some(a) = ann {
                v["metadata"]["annotations"] = serde_json::json!({SPECIALIZE_ANNOTATION: a});
            }
            serde_json::from_value(v).unwrap()
        };
        let claimed = pod(Some(r#"{"name":"user-container","image":"app"}"#));
        assert_eq!(claimant_name(&claimed, "placeholder"), "user-container");
        assert_eq!(claimant_name(&claimed, "side"), "side");
        assert_eq!(claimant_name(&pod(None), "placeholder"), "placeholder");
        assert_eq!(claimant_name(&pod(Some("not json")), "placeholder"), "placeholder");
    }

    #[test]
    fn a_pool_pods_placeholder_exit_is_no_container_failure() {
        let pod = |state: &str, specialized: &str, finished: &str| -> Pod {
            let tl = serde_json::json!({"specialization": {"specialized": specialized}});
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "warm-x",
                    "labels": {kinetic_api::pool::POOL_STATE_LABEL: state},
                    "annotations": {kinetic_api::timeline::ANNOTATION: tl.to_string()}},
                "status": {"containerStatuses": [{"name": "placeholder", "image": "i",
                    "imageID": "", "ready": true, "restartCount": 1,
                    "lastState": {"terminated": {"exitCode": 137, "finishedAt": finished}}}]},
            }))
            .unwrap()
        };
        let (t0, t1, t2) = ("2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z");
        let exited = |p: Pod| pod_failures(&[p]).1.map(|w| w.0);
        assert_eq!(exited(pod("claimed", t1, t0)), None, "claimed: the placeholder's");
        assert_eq!(exited(pod("specialized", t1, t0)), None, "before the revision's start");
        assert_eq!(exited(pod("specialized", t1, t2)).as_deref(), Some("ExitCode137"));
        assert_eq!(exited(pod("ready", t1, t0)).as_deref(), Some("ExitCode137"), "not a claim");
    }

    #[test]
    fn digests_from_image_ids() {
        assert_eq!(
            digest_of("ghcr.io/knative/helloworld-go:latest", "sha256:ab").as_deref(),
            Some("ghcr.io/knative/helloworld-go@sha256:ab")
        );
        assert_eq!(
            digest_of("localhost:5000/x", "sha256:ab").as_deref(),
            Some("localhost:5000/x@sha256:ab")
        );
        assert_eq!(
            digest_of("x", "docker.io/library/x@sha256:cd").as_deref(),
            Some("docker.io/library/x@sha256:cd")
        );
        assert_eq!(digest_of("x", "fake"), None);
    }

    #[test]
    fn initial_scale_defaults_to_one_and_respects_min_scale() {
        let mut rev = Revision::new("r", Default::default());
        assert_eq!(initial_replicas(&rev), 1);
        rev.metadata.annotations = Some(BTreeMap::from([
            (INITIAL_SCALE_ANNOTATION.to_owned(), "0".to_owned()),
            (MIN_SCALE_ANNOTATION.to_owned(), "2".to_owned()),
        ]));
        assert_eq!(initial_replicas(&rev), 2);
    }
}
