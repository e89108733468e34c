//! Specialisation by image of a claimed pool pod (issue 12 part 3): the pool pod's first app
//! container is replaced in place by its claimant's container, in the same pod (node, IP,
//! network namespace, volumes and `/etc` files stay).
//!
//! The claim (`kinetic_controllers::podpool::claim_for_image`) sets the container's image in the
//! pod spec and puts the whole claimant container in [`SPECIALIZE_ANNOTATION`]; the spec names
//! the image that runs, the annotation the rest (command, args, env, ports, probes), as
//! `kinetic_api::pool` explains. The worker asks this module:
//! - [`effective`]: the container to run for a spec container (the annotation's, under the
//!   spec's name and image, for the target container);
//! - [`pending`]: whether the container still runs the placeholder and must be replaced (the
//!   worker then kills the placeholder without grace and starts the claimant's container);
//! - [`started`]: records the start of the claimant's container;
//! - [`report`]: once the pod is Ready as the claimant's, what labels it
//!   `kinetic.dev/pool-state=specialized` and writes the timeline (the worker sends it in the
//!   status write that makes the pod Ready, [`reported`] records it); when the claimant's
//!   container cannot start or ends before it is ready, labels it `failed` (the pool controller
//!   then deletes it at once). A specialisation that never ends either way is the pool
//!   controller's to time out (`specializationTimeoutSeconds`).
//!
//! Each step is recorded in the pod record's `timeline.specialization` (persisted with the
//! record, so an agent restart neither repeats nor forgets a specialisation).
//!
//! Specialisation by code is `crate::specialize_code`'s; [`report`] reports both.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container as CSpec, Pod};
use kinetic_api::pool::{CLAIMED_AT_ANNOTATION, POOL_STATE_LABEL, SPECIALIZE_ANNOTATION, state};
use kinetic_api::timeline::{self, Specialization};
use serde_json::json;

use crate::events::{Recorder, Subject};
use crate::state::{CState, PodRecord};

/// What a pod's [`SPECIALIZE_ANNOTATION`] asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The pod's container that is replaced (its first app container).
    pub target: String,
    /// The claimant's container, under `target`'s name and the spec's image.
    pub container: CSpec,
}

/// The specialisation `pod` asks for: `None` without the annotation, `Some(Err(why))` when it
/// cannot be read or the pod has no app container.
pub fn request(pod: &Pod) -> Option<Result<Request, String>> {
    let raw = pod.metadata.annotations.as_ref()?.get(SPECIALIZE_ANNOTATION)?;
    let Some(target) = pod.spec.as_ref().and_then(|s| s.containers.first()) else {
        return Some(Err("the pod has no container to specialise".to_owned()));
    };
    let mut container: CSpec = match serde_json::from_str(raw) {
        Ok(c) => c,
        Err(e) => return Some(Err(format!("annotation {SPECIALIZE_ANNOTATION}: {e}"))),
    };
    // The spec's name (container names are immutable) and image (what the spec says runs).
    container.name.clone_from(&target.name);
    container.image.clone_from(&target.image);
    Some(Ok(Request { target: target.name.clone(), container }))
}

/// The container to run for the spec container `c` of `pod`.
pub fn effective(pod: &Pod, c: CSpec) -> CSpec {
    match request(pod) {
        Some(Ok(r)) if r.target == c.name => r.container,
        _ => c,
    }
}

/// Whether container `name` of `pod` still has to be replaced by the claimant's.
pub fn pending(pod: &Pod, rec: &PodRecord, name: &str) -> bool {
    let asked = matches!(request(pod), Some(Ok(r)) if r.target == name);
    let s = rec.timeline.specialization.as_ref();
    asked && s.is_none_or(|s| s.specialized.is_none() && s.failed.is_none())
}

/// Records that the agent saw the claim (once).
pub fn observe(pod: &Pod, rec: &mut PodRecord) {
    let s = rec.timeline.specialization.get_or_insert_with(Specialization::default);
    if s.observed.is_some() {
        return;
    }
    s.observed = Some(Timestamp::now());
    let ann = pod.metadata.annotations.as_ref();
    s.claimed = ann.and_then(|a| a.get(CLAIMED_AT_ANNOTATION)).and_then(|t| t.parse().ok());
    if let Some(Ok(r)) = request(pod) {
        s.image = r.container.image.unwrap_or_default();
    }
}

/// Records the start of the claimant's container `name`, when that is what just started.
pub fn started(pod: &Pod, rec: &mut PodRecord, name: &str) {
    if !pending(pod, rec, name) {
        return;
    }
    let at = match rec.containers.get(name).map(|c| &c.state) {
        Some(CState::Running { started_at, .. }) => *started_at,
        _ => return,
    };
    observe(pod, rec);
    if let Some(s) = rec.timeline.specialization.as_mut() {
        s.specialized = Some(at);
    }
}

/// How a specialisation under way ended, if it did.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    Ready,
    Failed(String),
}

/// Waiting reasons that mean the container will not start without a change.
const FAILED_START: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "RunContainerError",
];

fn outcome(pod: &Pod, rec: &PodRecord, pod_ready: bool) -> Option<Outcome> {
    if crate::specialize_code::request(pod).is_some() {
        return crate::specialize_code::outcome(pod, rec, pod_ready);
    }
    let s = rec.timeline.specialization.as_ref();
    if s.is_some_and(|s| s.ready.is_some() || s.failed.is_some()) {
        return None;
    }
    let r = match request(pod)? {
        Ok(r) => r,
        Err(why) => return Some(Outcome::Failed(why)),
    };
    let c = rec.containers.get(&r.target)?;
    let specialized = s.and_then(|s| s.specialized);
    match &c.state {
        CState::Waiting { reason, message } if FAILED_START.contains(&reason.as_str()) => {
            Some(Outcome::Failed(format!("{reason}: {message}")))
        }
        CState::Waiting { reason, .. } if specialized.is_some() && reason == "CrashLoopBackOff" => {
            Some(Outcome::Failed("the container exited before it was ready".to_owned()))
        }
        CState::Terminated(t) if specialized.is_some() => Some(Outcome::Failed(format!(
            "the container exited ({}, code {}) before it was ready",
            t.reason, t.exit_code
        ))),
        CState::Running { .. } if specialized.is_some() && pod_ready => Some(Outcome::Ready),
        _ => None,
    }
}

/// The end of a specialisation under way, to be written to the pod: its pool state label
/// (`specialized` or `failed`) and the timeline, as the `metadata` of a patch.
pub struct Report {
    out: Outcome,
    timeline: timeline::Timeline,
    at: Timestamp,
    /// Specialised by code (`crate::specialize_code`), not by image.
    code: bool,
    /// `{"labels": {..}, "annotations": {..}}`, for the patch's `metadata`.
    pub metadata: serde_json::Value,
}

/// What to write about a specialisation that ended, if one did. The worker puts it into the
/// same `pods/status` patch that makes the pod Ready (upstream's pod status strategy takes
/// labels and annotations from the request), so a consumer sees the claimant's Ready and the
/// `specialized` label at once, one API round trip after the probe instead of two (issue 12).
pub fn report(pod: &Pod, rec: &PodRecord, pod_ready: bool) -> Option<Report> {
    let out = outcome(pod, rec, pod_ready)?;
    let mut tl = rec.timeline.clone();
    let s = tl.specialization.get_or_insert_with(Specialization::default);
    let at = Timestamp::now();
    let label = match &out {
        Outcome::Ready => {
            s.ready = Some(at);
            state::SPECIALIZED
        }
        Outcome::Failed(why) => {
            s.failed = Some(why.clone());
            state::FAILED
        }
    };
    let metadata = json!({
        "labels": {POOL_STATE_LABEL: label},
        "annotations": {timeline::ANNOTATION: serde_json::to_string(&tl).unwrap_or_default()},
    });
    let code = crate::specialize_code::request(pod).is_some();
    Some(Report { out, timeline: tl, at, code, metadata })
}

/// Records a [`Report`] the API accepted: the timeline in the pod record, and the Event.
pub fn reported(events: &Recorder, subject: &Subject, rec: &mut PodRecord, r: Report) {
    rec.timeline = r.timeline;
    let s = rec.timeline.specialization.as_ref();
    match r.out {
        Outcome::Ready => {
            let took = s
                .and_then(|s| Some(r.at.duration_since(s.claimed.or(s.observed)?)))
                .map_or_else(String::new, |d| format!(" {} ms after the claim", d.as_millis()));
            let image = s.map(|s| s.image.clone()).unwrap_or_default();
            events.emit(
                subject,
                None,
                false,
                "Specialized",
                if r.code {
                    format!("Pool pod specialised with the code of image {image:?}, Ready{took}")
                } else {
                    format!("Pool pod specialised into image {image:?}, Ready{took}")
                },
            );
        }
        Outcome::Failed(why) => events.emit(
            subject,
            None,
            true,
            kinetic_api::pool::reason::SPECIALIZATION_FAILED,
            format!("Pool pod could not be specialised: {why}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::state::Container;

    fn pod(ann: Option<&str>) -> Pod {
        let mut p = json!({
            "metadata": {"name": "p", "annotations": {CLAIMED_AT_ANNOTATION: "2026-12-07T01:00:00.5Z"}},
            "spec": {"containers": [{"name": "placeholder", "image": "app:v1", "command": ["sleep", "1d"]}]},
        });
        if let Some(a) = ann {
            p["metadata"]["annotations"][SPECIALIZE_ANNOTATION] = json!(a);
        }
        serde_json::from_value(p).unwrap()
    }

    fn running(rec: &mut PodRecord) {
        let mut c = Container::new(false, "app:v1");
        c.state = CState::Running { started_at: Timestamp::now(), pid: 1 };
        rec.containers.insert("placeholder".into(), c);
    }

    #[test]
    fn the_annotation_gives_command_env_and_probes_under_the_spec_name_and_image() {
        let ann = json!({"name": "web", "image": "other:v9", "command": ["httpd"],
                         "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 8080}],
                         "readinessProbe": {"httpGet": {"port": 8080}}})
        .to_string();
        let p = pod(Some(&ann));
        let spec = p.spec.as_ref().unwrap().containers[0].clone();
        let c = effective(&p, spec.clone());
        assert_eq!(c.name, "placeholder");
        assert_eq!(c.image.as_deref(), Some("app:v1"));
        assert_eq!(c.command, Some(vec!["httpd".to_owned()]));
        assert!(c.readiness_probe.is_some() && c.env.is_some() && c.ports.is_some());
        // Without the annotation the spec is what runs.
        assert_eq!(effective(&pod(None), spec.clone()), spec);
    }

    #[test]
    fn pending_until_the_claimants_container_started_then_ready_is_reported() {
        let p = pod(Some(r#"{"name": "web", "image": "app:v1"}"#));
        let mut rec = PodRecord::new("u", "default", "p");
        running(&mut rec);
        assert!(pending(&p, &rec, "placeholder"));
        assert!(!pending(&pod(None), &rec, "placeholder"));
        // The placeholder, still running and Ready, is not the outcome.
        assert_eq!(outcome(&p, &rec, true), None);
        started(&p, &mut rec, "placeholder");
        let s = rec.timeline.specialization.clone().unwrap();
        assert!(s.specialized.is_some() && s.observed.is_some());
        assert_eq!(s.claimed, Some("2026-12-07T01:00:00.5Z".parse().unwrap()));
        assert!(!pending(&p, &rec, "placeholder"));
        assert_eq!(outcome(&p, &rec, false), None);
        assert_eq!(outcome(&p, &rec, true), Some(Outcome::Ready));
    }

    #[test]
    fn a_bad_annotation_a_failed_pull_or_an_early_exit_fail_the_specialisation() {
        let mut rec = PodRecord::new("u", "default", "p");
        running(&mut rec);
        let bad = pod(Some("{not json"));
        assert!(matches!(outcome(&bad, &rec, true), Some(Outcome::Failed(_))));
        assert!(!pending(&bad, &rec, "placeholder"));

        let p = pod(Some(r#"{"name": "web", "image": "app:v1"}"#));
        if let Some(c) = rec.containers.get_mut("placeholder") {
            c.state = CState::Waiting { reason: "ErrImagePull".into(), message: "404".into() };
        }
        assert_eq!(outcome(&p, &rec, false), Some(Outcome::Failed("ErrImagePull: 404".into())));

        rec.timeline.specialization =
            Some(Specialization { specialized: Some(Timestamp::now()), ..Default::default() });
        if let Some(c) = rec.containers.get_mut("placeholder") {
            c.state = CState::Waiting { reason: "CrashLoopBackOff".into(), message: String::new() };
        }
        assert!(matches!(outcome(&p, &rec, false), Some(Outcome::Failed(_))));
    }
}
