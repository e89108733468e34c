//! What the node agent does next for one ContainerRecreateRequest: pure, from the request, the
//! pod's container statuses and what the agent itself has asked for, as kruise-daemon's
//! `getCurrentCRRContainersRecreateStates` and `manage` decide
//! (`pkg/daemon/containerrecreate/crr_daemon_util.go`, `crr_daemon_controller.go`).
//!
//! Per container, a state that reached Succeeded or Failed stays. Otherwise: not in the pod's
//! status → Pending ("not found container on Node"); not running → Recreating (it is being
//! restarted); `forceRecreate` and not killed yet → Pending (to be killed whatever it did
//! since); a different container ID, a higher restart count or a start after the request →
//! Recreating, and Succeeded once it is ready and has run `minStartedSeconds`; else Pending.
//! One difference: a container this request already killed whose new run the pod's status does
//! not show yet is Recreating, not Pending, so it is never killed twice (upstream relies on its
//! kill being synchronous and on resourceVersion expectations).
//!
//! Then at most one Pending container is killed per pass, in spec order; with
//! `orderedRecreate` only once every earlier container Succeeded. The request completes when
//! every container Succeeded or Failed, or at the first Failed one under `failurePolicy: Fail`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use jiff::Timestamp;
use kinetic_api::kruise::containerrecreaterequest::{
    ContainerRecreateRequestSpec, ContainerRecreateState, FailurePolicy, Phase,
};

/// One container as the pod's status shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub id: String,
    pub restart_count: i32,
    pub running: bool,
    pub started_at: Option<Timestamp>,
    pub ready: bool,
}

/// What the agent knows beyond the API objects: kills it sent (by container name) and kills
/// the pod's worker refused, with why.
#[derive(Debug, Default)]
pub struct Memory<'a> {
    pub killed: HashSet<&'a str>,
    pub kill_errors: HashMap<&'a str, &'a str>,
}

/// The decision of one pass.
#[derive(Debug, PartialEq)]
pub struct Plan {
    /// The containers' states to write.
    pub states: Vec<ContainerRecreateState>,
    /// The container to stop now (the pod's restart policy brings it back).
    pub kill: Option<String>,
    /// The request is finished.
    pub complete: bool,
    /// When to look again though nothing changes (`minStartedSeconds`).
    pub wake: Option<Duration>,
}

/// Decides one pass; `prev` is `status.containerRecreateStates`, `created` the request's
/// creation time.
pub fn plan(
    spec: &ContainerRecreateRequestSpec,
    prev: &[ContainerRecreateState],
    created: Timestamp,
    observed: &HashMap<String, Observed>,
    mem: &Memory<'_>,
    now: Timestamp,
) -> Plan {
    let min_started = jiff::SignedDuration::from_secs(spec.min_started_seconds());
    let mut wake: Option<Duration> = None;
    let mut states = Vec::new();
    for c in &spec.containers {
        let before = prev.iter().find(|s| s.name == c.name);
        if let Some(b) = before.filter(|b| matches!(b.phase, Phase::Succeeded | Phase::Failed)) {
            states.push(b.clone());
            continue;
        }
        let killed = before.is_some_and(|b| b.is_killed) || mem.killed.contains(c.name.as_str());
        let state = |phase, message: Option<&str>| ContainerRecreateState {
            name: c.name.clone(),
            phase,
            message: message.map(str::to_owned),
            is_killed: killed,
        };
        if let Some(e) = mem.kill_errors.get(c.name.as_str()) {
            states.push(state(Phase::Failed, Some(&format!("kill container error: {e}"))));
            continue;
        }
        let Some(o) = observed.get(&c.name) else {
            states.push(state(Phase::Pending, Some("not found container on Node")));
            continue;
        };
        let ctx = c.status_context.as_ref();
        let same_run = ctx
            .is_some_and(|x| x.container_id == o.id && o.restart_count <= x.restart_count)
            && o.started_at.is_none_or(|s| s <= created);
        if !o.running {
            states.push(state(Phase::Recreating, None));
        } else if spec.force() && !killed {
            states.push(state(Phase::Pending, None));
        } else if !same_run || killed {
            let mut s = state(Phase::Recreating, None);
            if !same_run && o.ready {
                let done_at = o.started_at.map(|t| t + min_started);
                match done_at {
                    Some(t) if t > now => {
                        let left = Duration::try_from(t.duration_since(now)).unwrap_or_default();
                        wake = Some(wake.map_or(left, |w| w.min(left)));
                    }
                    _ => s.phase = Phase::Succeeded,
                }
            }
            states.push(s);
        } else {
            states.push(state(Phase::Pending, None));
        }
    }
    let mut kill = None;
    let mut complete_now = false;
    for s in &mut states {
        match s.phase {
            Phase::Succeeded => continue,
            Phase::Failed if spec.failure_policy() == FailurePolicy::Ignore => continue,
            Phase::Failed => {
                complete_now = true;
                break;
            }
            Phase::Recreating if spec.ordered() => break,
            Phase::Recreating | Phase::Completed => continue,
            Phase::Pending => {}
        }
        if !observed.contains_key(&s.name) {
            break;
        }
        kill = Some(s.name.clone());
        s.phase = Phase::Recreating;
        s.is_killed = true;
        s.message = None;
        break;
    }
    let finished = states.iter().all(|s| matches!(s.phase, Phase::Succeeded | Phase::Failed));
    Plan { states, kill, complete: complete_now || finished, wake }
}

#[cfg(test)]
mod tests {
    use kinetic_api::kruise::containerrecreaterequest::{
        ContainerRecreateRequestContainer, ContainerRecreateRequestContainerContext,
        ContainerRecreateRequestStrategy,
    };

    use super::*;

    const CREATED: i64 = 1_000;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("valid")
    }

    fn spec(
        ordered: bool,
        force: bool,
        policy: FailurePolicy,
        min_started: i32,
    ) -> ContainerRecreateRequestSpec {
        let c = |name: &str| ContainerRecreateRequestContainer {
            name: name.into(),
            status_context: Some(ContainerRecreateRequestContainerContext {
                container_id: format!("runc://{name}-1"),
                restart_count: 0,
            }),
            ..Default::default()
        };
        ContainerRecreateRequestSpec {
            pod_name: "p".into(),
            containers: vec![c("a"), c("b")],
            strategy: Some(ContainerRecreateRequestStrategy {
                failure_policy: Some(policy),
                ordered_recreate: Some(ordered),
                force_recreate: Some(force),
                min_started_seconds: Some(min_started),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// `a`/`b` as first started (run 1) or restarted (run 2, started at 1010, ready or not).
    fn obs(a: u8, b: u8) -> HashMap<String, Observed> {
        let one = |name: &str, run: u8| match run {
            0 => None,
            1 => Some(Observed {
                id: format!("runc://{name}-1"),
                restart_count: 0,
                running: true,
                started_at: Some(ts(900)),
                ready: true,
            }),
            2 => Some(Observed {
                id: format!("runc://{name}-2"),
                restart_count: 1,
                running: true,
                started_at: Some(ts(1010)),
                ready: false,
            }),
            3 => Some(Observed {
                id: format!("runc://{name}-2"),
                restart_count: 1,
                running: true,
                started_at: Some(ts(1010)),
                ready: true,
            }),
            _ => Some(Observed {
                id: format!("runc://{name}-1"),
                restart_count: 0,
                running: false,
                started_at: None,
                ready: false,
            }),
        };
        [("a", a), ("b", b)]
            .into_iter()
            .filter_map(|(n, r)| one(n, r).map(|o| (n.to_owned(), o)))
            .collect()
    }

    fn st(name: &str, phase: Phase, killed: bool) -> ContainerRecreateState {
        ContainerRecreateState { name: name.into(), phase, message: None, is_killed: killed }
    }

    fn summary(p: &Plan) -> String {
        let states: Vec<String> = p
            .states
            .iter()
            .map(|s| format!("{}={:?}{}", s.name, s.phase, if s.is_killed { "*" } else { "" }))
            .collect();
        format!("{} kill={:?} complete={} wake={:?}", states.join(","), p.kill, p.complete, p.wake)
    }

    /// What, the spec, the previous states, the pod's containers, the agent's memory, now, and
    /// the expected plan.
    type Case<'a> = (
        &'a str,
        ContainerRecreateRequestSpec,
        Vec<ContainerRecreateState>,
        HashMap<String, Observed>,
        &'a Memory<'a>,
        i64,
        &'a str,
    );

    #[test]
    fn decisions() {
        use Phase::*;
        let fail = FailurePolicy::Fail;
        let none = Memory::default();
        let killed_a = Memory { killed: ["a"].into(), ..Default::default() };
        let cases: Vec<Case<'_>> = vec![
            (
                "first pass kills the first container",
                spec(false, false, fail, 0),
                vec![],
                obs(1, 1),
                &none,
                1001,
                "a=Recreating*,b=Pending kill=Some(\"a\") complete=false wake=None",
            ),
            (
                "unordered: the next is killed while the first restarts",
                spec(false, false, fail, 0),
                vec![st("a", Recreating, true), st("b", Pending, false)],
                obs(4, 1),
                &none,
                1002,
                "a=Recreating*,b=Recreating* kill=Some(\"b\") complete=false wake=None",
            ),
            (
                "ordered: the next waits for the first to succeed",
                spec(true, false, fail, 0),
                vec![st("a", Recreating, true), st("b", Pending, false)],
                obs(2, 1),
                &none,
                1011,
                "a=Recreating*,b=Pending kill=None complete=false wake=None",
            ),
            (
                "ordered: a ready new run succeeds and the next is killed",
                spec(true, false, fail, 0),
                vec![st("a", Recreating, true), st("b", Pending, false)],
                obs(3, 1),
                &none,
                1011,
                "a=Succeeded*,b=Recreating* kill=Some(\"b\") complete=false wake=None",
            ),
            (
                "minStartedSeconds holds success back and asks to look again",
                spec(true, false, fail, 10),
                vec![st("a", Recreating, true), st("b", Pending, false)],
                obs(3, 1),
                &none,
                1015,
                "a=Recreating*,b=Pending kill=None complete=false wake=Some(5s)",
            ),
            (
                "both succeeded: complete",
                spec(false, false, fail, 0),
                vec![st("a", Recreating, true), st("b", Recreating, true)],
                obs(3, 3),
                &none,
                1020,
                "a=Succeeded*,b=Succeeded* kill=None complete=true wake=None",
            ),
            (
                "a kill sent but not yet seen is not sent again",
                spec(false, false, fail, 0),
                vec![],
                obs(1, 1),
                &killed_a,
                1001,
                "a=Recreating*,b=Recreating* kill=Some(\"b\") complete=false wake=None",
            ),
            (
                "a container missing from the status waits",
                spec(false, false, fail, 0),
                vec![],
                obs(0, 1),
                &none,
                1001,
                "a=Pending,b=Pending kill=None complete=false wake=None",
            ),
            (
                "forceRecreate kills a container restarted since the request",
                spec(false, true, fail, 0),
                vec![],
                obs(3, 1),
                &none,
                1011,
                "a=Recreating*,b=Pending kill=Some(\"a\") complete=false wake=None",
            ),
            (
                "without force a container restarted since the request counts as recreated",
                spec(false, false, fail, 0),
                vec![],
                obs(3, 3),
                &none,
                1011,
                "a=Succeeded,b=Succeeded kill=None complete=true wake=None",
            ),
        ];
        for (what, spec, prev, observed, mem, now, want) in cases {
            let p = plan(&spec, &prev, ts(CREATED), &observed, mem, ts(now));
            assert_eq!(summary(&p), want, "{what}");
        }
    }

    #[test]
    fn a_refused_kill_fails_the_container_and_the_policy_decides() {
        let mem = Memory {
            kill_errors: [("a", "container a is not running")].into(),
            ..Default::default()
        };
        let p = plan(
            &spec(false, false, FailurePolicy::Fail, 0),
            &[],
            ts(CREATED),
            &obs(1, 1),
            &mem,
            ts(1001),
        );
        assert_eq!(p.states[0].phase, Phase::Failed);
        assert_eq!(
            p.states[0].message.as_deref(),
            Some("kill container error: container a is not running")
        );
        assert!(p.complete);
        assert_eq!(p.kill, None);
        let p = plan(
            &spec(false, false, FailurePolicy::Ignore, 0),
            &[],
            ts(CREATED),
            &obs(1, 1),
            &mem,
            ts(1001),
        );
        assert!(!p.complete);
        assert_eq!(p.kill.as_deref(), Some("b"));
    }
}
