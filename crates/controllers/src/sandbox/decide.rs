//! The pure decisions of the agent-sandbox controllers, with upstream's reasons and messages
//! (kubernetes-sigs/agent-sandbox `controllers/sandbox_controller.go`,
//! `extensions/controllers/sandboxclaim_controller.go`).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{EnvVar, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kinetic_api::agents::{ClaimEnvVar, condition, reason, warm_pool_policy};

/// Upstream's `NameHash`: FNV-1a (32 bit) of the name, as 8 hex digits. The value of the
/// `agents.x-k8s.io/sandbox-name-hash` label of a sandbox's pod.
#[must_use]
pub fn name_hash(name: &str) -> String {
    let h = name.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    format!("{h:08x}")
}

/// A condition's status, reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Verdict {
    fn no(reason: &'static str, message: impl Into<String>) -> Self {
        Self { ready: false, reason, message: message.into() }
    }
}

/// What a Sandbox reconcile found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SandboxState<'a> {
    /// Past `shutdownTime` (policy Retain: the Sandbox stays, its pod and Service are gone).
    Expired,
    /// `replicas: 0` or `operatingMode: Suspended`.
    Suspended,
    /// The pod the Sandbox names belongs to another controller.
    PodNotOwned(&'a str),
    /// Running: the pod (if any yet) and whether the Service is wanted and exists.
    Running { pod: Option<&'a Pod>, service_wanted: bool, service_exists: bool },
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The Sandbox's `Ready` condition. Upstream's message lists the dependencies: "Pod is Ready;
/// Service Exists" when ready, the pod's phase otherwise.
#[must_use]
pub fn sandbox_ready(state: SandboxState<'_>) -> Verdict {
    match state {
        SandboxState::Expired => Verdict::no(reason::EXPIRED, "Sandbox has expired"),
        SandboxState::Suspended => Verdict::no(reason::SUSPENDED, "Sandbox is suspended"),
        SandboxState::PodNotOwned(name) => Verdict::no(
            reason::POD_NOT_OWNED,
            format!("Pod {name:?} is controlled by another object than this Sandbox"),
        ),
        SandboxState::Running { pod, service_wanted, service_exists } => {
            let mut parts = Vec::new();
            let pod_ok = match pod {
                None => {
                    parts.push("Pod does not exist".to_owned());
                    false
                }
                Some(p) if pod_ready(p) => {
                    parts.push("Pod is Ready".to_owned());
                    true
                }
                Some(p) => {
                    let phase = p.status.as_ref().and_then(|s| s.phase.clone());
                    parts.push(format!(
                        "Pod exists with phase: {}",
                        phase.as_deref().unwrap_or("Pending")
                    ));
                    false
                }
            };
            let svc_ok = !service_wanted || service_exists;
            if service_wanted {
                parts.push(
                    if service_exists { "Service Exists" } else { "Service does not exist" }
                        .to_owned(),
                );
            }
            let message = parts.join("; ");
            if pod_ok && svc_ok {
                Verdict { ready: true, reason: reason::DEPENDENCIES_READY, message }
            } else {
                Verdict::no(reason::DEPENDENCIES_NOT_READY, message)
            }
        }
    }
}

/// What a SandboxClaim reconcile found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClaimState<'a> {
    /// Past `lifecycle.shutdownTime` with policy Retain.
    Expired,
    /// The template the claim names does not exist (and no Sandbox was made yet).
    TemplateNotFound(&'a str),
    /// A Sandbox of the claim's name exists and is not controlled by the claim.
    SandboxNotOwned(&'a str),
    /// The claim's Sandbox and its `Ready` condition, if it has one yet.
    Sandbox(Option<&'a Condition>),
    /// A `v1beta1` claim's `warmPoolRef` names no warm pool.
    WarmPoolNotFound(&'a str),
    /// The claim's `env` is refused by its template's `envVarsInjectionPolicy` (why).
    EnvRefused(&'a str),
}

/// The claim's `Ready` condition: upstream forwards the Sandbox's.
#[must_use]
pub fn claim_ready(state: ClaimState<'_>) -> Verdict {
    match state {
        ClaimState::Expired => {
            Verdict::no(reason::CLAIM_EXPIRED, "Claim expired. Sandbox resources deleted.")
        }
        ClaimState::TemplateNotFound(t) => {
            Verdict::no(reason::TEMPLATE_NOT_FOUND, format!("SandboxTemplate {t:?} not found"))
        }
        ClaimState::SandboxNotOwned(s) => Verdict::no(
            reason::SANDBOX_NOT_OWNED,
            format!("Sandbox {s:?} exists and is not controlled by this claim"),
        ),
        ClaimState::Sandbox(Some(c)) if c.status == "True" => {
            Verdict { ready: true, reason: reason::DEPENDENCIES_READY, message: c.message.clone() }
        }
        ClaimState::Sandbox(_) => Verdict::no(reason::SANDBOX_NOT_READY, "Sandbox is not ready"),
        ClaimState::WarmPoolNotFound(p) => {
            Verdict::no(reason::WARM_POOL_NOT_FOUND, format!("SandboxWarmPool {p:?} not found"))
        }
        ClaimState::EnvRefused(why) => Verdict::no(reason::ENV_INJECTION_REFUSED, why),
    }
}

/// `spec` with a claim's `env` set (upstream `v1beta1` `SandboxClaimSpec.env` and the
/// template's `envVarsInjectionPolicy`): each variable goes into the container it names, or
/// the first. `Disallowed` (also when unset, upstream's default) refuses any `env`; `Allowed`
/// adds variables but refuses one the container already sets; `Overrides` also replaces
/// those.
///
/// # Errors
/// Why the claim's `env` cannot be applied (the claim's `Ready` message).
pub fn with_claim_env(
    mut spec: PodSpec,
    env: &[ClaimEnvVar],
    policy: Option<&str>,
) -> Result<PodSpec, String> {
    if env.is_empty() {
        return Ok(spec);
    }
    let policy = policy.unwrap_or("Disallowed");
    if policy == "Disallowed" {
        return Err("the SandboxTemplate's envVarsInjectionPolicy is Disallowed: the claim may \
                    not set env"
            .to_owned());
    }
    for e in env {
        let c = if e.container_name.is_empty() {
            spec.containers.first_mut()
        } else {
            spec.containers.iter_mut().find(|c| c.name == e.container_name)
        };
        let Some(c) = c else {
            return Err(format!(
                "env {:?}: the template has no container {:?}",
                e.name, e.container_name
            ));
        };
        let vars = c.env.get_or_insert_with(Vec::new);
        match vars.iter_mut().find(|v| v.name == e.name) {
            Some(_) if policy == "Allowed" => {
                return Err(format!(
                    "env {:?}: container {:?} already sets it and the SandboxTemplate's \
                     envVarsInjectionPolicy is Allowed, not Overrides",
                    e.name, c.name
                ));
            }
            Some(v) => {
                *v =
                    EnvVar { name: e.name.clone(), value: Some(e.value.clone()), value_from: None };
            }
            None => vars.push(EnvVar {
                name: e.name.clone(),
                value: Some(e.value.clone()),
                value_from: None,
            }),
        }
    }
    Ok(spec)
}

/// The warm pools a claim may take a pod from, in order: none for `none`, the named one for a
/// pool name (if it serves the claim's template, as upstream verifies the candidate's
/// template), else every pool of the template, by name.
#[must_use]
pub fn candidate_pools(policy: &str, template: &str, pools: &[(String, String)]) -> Vec<String> {
    let serving = |p: &&(String, String)| p.1 == template;
    match policy {
        warm_pool_policy::NONE => Vec::new(),
        "" | warm_pool_policy::DEFAULT => {
            let mut v: Vec<String> = pools.iter().filter(serving).map(|p| p.0.clone()).collect();
            v.sort();
            v
        }
        name => pools.iter().filter(serving).filter(|p| p.0 == name).map(|p| p.0.clone()).collect(),
    }
}

/// Whether `shutdown` has passed at `now`; else how long until it does.
#[must_use]
pub fn expiry(shutdown: Option<&Time>, now: Timestamp) -> Option<std::time::Duration> {
    let t = shutdown?.0;
    Some(if t <= now {
        std::time::Duration::ZERO
    } else {
        std::time::Duration::try_from(t.duration_since(now)).unwrap_or_default()
    })
}

/// The Sandbox's `Finished` condition (upstream `v1beta1`), once its pod reached a terminal
/// phase: `PodSucceeded` or `PodFailed`.
#[must_use]
pub fn sandbox_finished(pod: Option<&Pod>) -> Option<Verdict> {
    let phase = pod?.status.as_ref()?.phase.as_deref()?;
    let (reason, message) = match phase {
        "Succeeded" => (reason::POD_SUCCEEDED, "Pod succeeded"),
        "Failed" => (reason::POD_FAILED, "Pod failed"),
        _ => return None,
    };
    Some(Verdict { ready: true, reason, message: message.to_owned() })
}

/// How long until a finished claim is deleted under `lifecycle.ttlSecondsAfterFinished`,
/// counted from its `Finished` condition's transition (zero once due); `None` when the claim
/// is not finished or has no TTL.
#[must_use]
pub fn finished_ttl_left(
    ttl_seconds: Option<i32>,
    conditions: &[Condition],
    now: Timestamp,
) -> Option<std::time::Duration> {
    let ttl = i64::from(ttl_seconds?.max(0));
    let c = conditions.iter().find(|c| c.type_ == condition::FINISHED && c.status == "True")?;
    let due = c.last_transition_time.0.checked_add(jiff::SignedDuration::from_secs(ttl)).ok()?;
    expiry(Some(&Time(due)), now)
}

/// `verdict` as condition `Ready` of an object at `generation`, keeping the last transition
/// time of `old` when the status did not change.
#[must_use]
pub fn condition_of(verdict: &Verdict, generation: Option<i64>, old: &[Condition]) -> Condition {
    typed_condition(condition::READY, verdict, generation, old)
}

/// [`condition_of`] for condition `type_`.
#[must_use]
pub fn typed_condition(
    type_: &str,
    verdict: &Verdict,
    generation: Option<i64>,
    old: &[Condition],
) -> Condition {
    let status = if verdict.ready { "True" } else { "False" };
    let last_transition_time = match old.iter().find(|c| c.type_ == type_) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(Timestamp::now()),
    };
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: verdict.reason.to_owned(),
        message: verdict.message.clone(),
        observed_generation: generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use serde_json::json;

    use super::*;

    #[test]
    fn name_hash_is_fnv1a_32_hex() {
        // FNV-1a of "" is the offset basis; "a" is the published test vector 0xe40c292c.
        assert_eq!(name_hash(""), "811c9dc5");
        assert_eq!(name_hash("a"), "e40c292c");
    }

    fn pod(ready: bool, phase: &str) -> Pod {
        serde_json::from_value(json!({"status": {"phase": phase, "conditions": [
            {"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
        .unwrap()
    }

    #[test]
    fn sandbox_ready_table() {
        let ready = pod(true, "Running");
        let pending = pod(false, "Pending");
        let cases = [
            SandboxState::Expired,
            SandboxState::Suspended,
            SandboxState::PodNotOwned("p"),
            SandboxState::Running { pod: None, service_wanted: true, service_exists: false },
            SandboxState::Running {
                pod: Some(&pending),
                service_wanted: true,
                service_exists: true,
            },
            SandboxState::Running {
                pod: Some(&ready),
                service_wanted: true,
                service_exists: false,
            },
            SandboxState::Running { pod: Some(&ready), service_wanted: true, service_exists: true },
            SandboxState::Running {
                pod: Some(&ready),
                service_wanted: false,
                service_exists: false,
            },
        ];
        let out: Vec<String> = cases
            .into_iter()
            .map(|s| {
                let v = sandbox_ready(s);
                format!("{} {} {}", v.ready, v.reason, v.message)
            })
            .collect();
        expect![[r#"
            false SandboxExpired Sandbox has expired
            false SandboxSuspended Sandbox is suspended
            false PodNotOwned Pod "p" is controlled by another object than this Sandbox
            false DependenciesNotReady Pod does not exist; Service does not exist
            false DependenciesNotReady Pod exists with phase: Pending; Service Exists
            false DependenciesNotReady Pod is Ready; Service does not exist
            true DependenciesReady Pod is Ready; Service Exists
            true DependenciesReady Pod is Ready"#]]
        .assert_eq(&out.join("\n"));
    }

    #[test]
    fn claim_ready_table() {
        let ready = Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "DependenciesReady".into(),
            message: "Pod is Ready; Service Exists".into(),
            observed_generation: None,
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
        };
        let not = Condition { status: "False".into(), ..ready.clone() };
        let cases = [
            ClaimState::Expired,
            ClaimState::TemplateNotFound("t"),
            ClaimState::SandboxNotOwned("s"),
            ClaimState::Sandbox(None),
            ClaimState::Sandbox(Some(&not)),
            ClaimState::Sandbox(Some(&ready)),
        ];
        let out: Vec<String> = cases
            .into_iter()
            .map(|s| {
                let v = claim_ready(s);
                format!("{} {} {}", v.ready, v.reason, v.message)
            })
            .collect();
        expect![[r#"
            false ClaimExpired Claim expired. Sandbox resources deleted.
            false TemplateNotFound SandboxTemplate "t" not found
            false SandboxNotOwned Sandbox "s" exists and is not controlled by this claim
            false SandboxNotReady Sandbox is not ready
            false SandboxNotReady Sandbox is not ready
            true DependenciesReady Pod is Ready; Service Exists"#]]
        .assert_eq(&out.join("\n"));
    }

    #[test]
    fn candidate_pools_follow_the_warmpool_policy() {
        let pools = [
            ("b".to_owned(), "t".to_owned()),
            ("a".to_owned(), "t".to_owned()),
            ("other".to_owned(), "u".to_owned()),
        ];
        assert_eq!(candidate_pools("default", "t", &pools), ["a", "b"]);
        assert_eq!(candidate_pools("", "t", &pools), ["a", "b"]);
        assert!(candidate_pools("none", "t", &pools).is_empty());
        assert_eq!(candidate_pools("b", "t", &pools), ["b"]);
        // A named pool of another template is not used: the claim falls back to a new pod.
        assert!(candidate_pools("other", "t", &pools).is_empty());
        assert!(candidate_pools("missing", "t", &pools).is_empty());
    }

    #[test]
    fn claim_env_follows_the_templates_injection_policy() {
        let spec: PodSpec = serde_json::from_value(json!({"containers": [
            {"name": "a", "env": [{"name": "KEEP", "value": "t"}]}, {"name": "b"}]}))
        .unwrap();
        let env = |n: &str, v: &str, c: &str| ClaimEnvVar {
            name: n.into(),
            value: v.into(),
            container_name: c.into(),
        };
        let out = |r: Result<PodSpec, String>| match r {
            Ok(s) => serde_json::to_string(
                &s.containers.iter().map(|c| (&c.name, &c.env)).collect::<Vec<_>>(),
            )
            .unwrap(),
            Err(e) => format!("refused: {e}"),
        };
        let cases = [
            (vec![], None),
            (vec![env("NEW", "1", "")], None),
            (vec![env("NEW", "1", "")], Some("Disallowed")),
            (vec![env("NEW", "1", ""), env("B", "2", "b")], Some("Allowed")),
            (vec![env("KEEP", "c", "")], Some("Allowed")),
            (vec![env("KEEP", "c", "")], Some("Overrides")),
            (vec![env("X", "1", "missing")], Some("Overrides")),
        ];
        let got: Vec<String> =
            cases.into_iter().map(|(e, p)| out(with_claim_env(spec.clone(), &e, p))).collect();
        expect![[r#"
            [["a",[{"name":"KEEP","value":"t"}]],["b",null]]
            refused: the SandboxTemplate's envVarsInjectionPolicy is Disallowed: the claim may not set env
            refused: the SandboxTemplate's envVarsInjectionPolicy is Disallowed: the claim may not set env
            [["a",[{"name":"KEEP","value":"t"},{"name":"NEW","value":"1"}]],["b",[{"name":"B","value":"2"}]]]
            refused: env "KEEP": container "a" already sets it and the SandboxTemplate's envVarsInjectionPolicy is Allowed, not Overrides
            [["a",[{"name":"KEEP","value":"c"}]],["b",null]]
            refused: env "X": the template has no container "missing""#]]
        .assert_eq(&got.join("\n"));
    }

    #[test]
    fn a_finished_claim_is_due_ttl_seconds_after_it_finished() {
        let finished = |status: &str| Condition {
            type_: "Finished".into(),
            status: status.into(),
            reason: "PodSucceeded".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(Timestamp::from_second(1000).unwrap()),
        };
        let at = |s| Timestamp::from_second(s).unwrap();
        let secs = std::time::Duration::from_secs;
        assert_eq!(finished_ttl_left(None, &[finished("True")], at(1000)), None);
        assert_eq!(finished_ttl_left(Some(5), &[finished("False")], at(1000)), None);
        assert_eq!(finished_ttl_left(Some(5), &[finished("True")], at(1002)), Some(secs(3)));
        assert_eq!(finished_ttl_left(Some(5), &[finished("True")], at(1005)), Some(secs(0)));
        assert_eq!(finished_ttl_left(Some(0), &[finished("True")], at(1000)), Some(secs(0)));
        let pod = |phase: &str| pod(false, phase);
        let v = |p: &str| sandbox_finished(Some(&pod(p))).map(|v| v.reason);
        assert_eq!(v("Succeeded"), Some("PodSucceeded"));
        assert_eq!(v("Failed"), Some("PodFailed"));
        assert_eq!(v("Running"), None);
    }

    #[test]
    fn expiry_is_zero_once_passed() {
        let now = Timestamp::from_second(1000).unwrap();
        let past = Time(Timestamp::from_second(999).unwrap());
        let future = Time(Timestamp::from_second(1010).unwrap());
        assert_eq!(expiry(None, now), None);
        assert_eq!(expiry(Some(&past), now), Some(std::time::Duration::ZERO));
        assert_eq!(expiry(Some(&future), now), Some(std::time::Duration::from_secs(10)));
    }
}
