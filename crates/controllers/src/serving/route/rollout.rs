//! Gradual rollout of a Configuration's new revision (`serving.knative.dev/rollout-duration`),
//! as knative/serving's `pkg/reconciler/route/traffic/rollout.go` does it, as pure functions.
//!
//! A Route target that follows a Configuration (`latestRevision: true`) wants all its percent
//! on the latest ready revision. With a rollout duration, when that revision changes, the new
//! one first gets 1 % (taken from the newest older revision that has traffic); once the
//! gateway routes that (`IngressReady`), the time that took (at least 1 s) sets the step
//! duration and the step size, so the rest moves in equal steps over the remaining duration
//! (`observe_ready`); each step moves the step size to the newest, taking it from the next
//! newest revisions first (`step`), until the newest has it all. The state lives, serialised as upstream's JSON, in
//! the Route's status annotation [`ROLLOUT_ANNOTATION`] (upstream keeps it on its Ingress).
//! Times are Unix nanoseconds, as upstream's.

use serde::{Deserialize, Serialize};

/// Where the rollout state is kept (upstream's `networking.internal.knative.dev/rollout`).
pub const ROLLOUT_ANNOTATION: &str = "networking.internal.knative.dev/rollout";

const NANOS_PER_SEC: f64 = 1e9;

/// The rollouts of all Configuration targets of a Route, sorted by tag, then name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configurations: Vec<ConfigurationRollout>,
}

/// The rollout of one Configuration target (per tag).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationRollout {
    pub configuration_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tag: String,
    /// The target's share of the Route; the revisions' percents add up to it.
    pub percent: i64,
    /// Oldest first; the last is the latest ready revision. One (or none) when no rollout is
    /// under way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revisions: Vec<RevisionRollout>,
    #[serde(default, skip_serializing_if = "RolloutParams::is_zero")]
    pub step_params: RolloutParams,
}

/// One revision's share during a rollout (of the whole Route, not of the target).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRollout {
    pub revision_name: String,
    pub percent: i64,
}

/// The timing of a rollout; all zero when none is under way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutParams {
    /// When the new revision got its first 1 %.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_time: i64,
    /// When the next step is due.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub next_step_time: i64,
    /// Between steps, in nanoseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub step_duration: i64,
    /// Percent moved per step.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub step_size: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl RolloutParams {
    fn is_zero(&self) -> bool {
        *self == RolloutParams::default()
    }
}

impl Rollout {
    /// Reads the state from its annotation; `None` when absent or inconsistent (upstream then
    /// starts over from the desired shape).
    pub fn parse(text: &str) -> Option<Rollout> {
        serde_json::from_str::<Rollout>(text).ok().filter(Rollout::valid)
    }

    /// Whether no configuration is mid-rollout.
    pub fn done(&self) -> bool {
        self.configurations.iter().all(|c| c.revisions.len() < 2)
    }

    /// Percents add up and stay within 0..=100, the step size within the target's share.
    fn valid(&self) -> bool {
        self.configurations.iter().all(|c| {
            c.percent <= 100
                && (0..=c.percent).contains(&c.step_params.step_size)
                && c.revisions.iter().map(|r| r.percent).sum::<i64>() == c.percent
        })
    }

    /// Once the gateway routes the first 1 % of a new rollout, its step size and duration
    /// follow from how long that took (upstream's `ObserveReady`).
    pub fn observe_ready(&mut self, now: i64, duration_secs: f64) {
        for c in &mut self.configurations {
            if c.step_params.step_duration == 0 && c.step_params.start_time > 0 {
                let took = (now - c.step_params.start_time) as f64 / NANOS_PER_SEC;
                c.compute_properties(now as f64, took.ceil().max(1.0), duration_secs);
            }
        }
    }

    /// Merges the desired shape `self` (each configuration with its latest ready revision
    /// alone) with the previous state, returning the traffic shape to apply now and when the
    /// next step is due (0: none). Without a previous state the desired shape applies at once.
    pub fn step(mut self, prev: Option<&Rollout>, now: i64) -> (Rollout, i64) {
        let Some(prev) = prev.filter(|p| !p.configurations.is_empty()) else {
            return (self, 0);
        };
        let mut out = Vec::new();
        let mut next = i64::MAX;
        for cur in self.configurations.drain(..) {
            let same = |p: &&ConfigurationRollout| {
                p.tag == cur.tag && p.configuration_name == cur.configuration_name
            };
            match prev.configurations.iter().find(same) {
                // New to this Route (or a new tag): straight to its shape.
                None => {
                    if cur.percent != 0 || !prev.configurations.iter().any(|p| p.tag == cur.tag) {
                        out.push(cur);
                    }
                }
                Some(p) if cur.percent > 1 => {
                    let c = step_config(cur, p.clone(), now);
                    if c.step_params.next_step_time > 0 {
                        next = next.min(c.step_params.next_step_time);
                    }
                    out.push(c);
                }
                // 1 %: nothing to spread (the common A/B case); 0 %: no rollout at all.
                Some(_) if cur.percent == 1 => out.push(cur),
                Some(_) => {}
            }
        }
        out.sort_by(|a, b| (&a.tag, &a.configuration_name).cmp(&(&b.tag, &b.configuration_name)));
        (Rollout { configurations: out }, if next == i64::MAX { 0 } else { next })
    }
}

impl ConfigurationRollout {
    /// Step duration and size for a rollout whose first 1 % took `min_step_secs` to be routed
    /// (upstream's `computeProperties`): as many equal steps as fit in the rest of the
    /// duration, at least 1 % each.
    fn compute_properties(&mut self, now: f64, min_step_secs: f64, duration_secs: f64) {
        let duration = (duration_secs - min_step_secs).max(1.0);
        let rem = (self.percent - 1) as f64;
        let steps = (duration / min_step_secs).max(1.0).min(rem);
        let step_size = (rem / steps).round();
        let step_duration = duration / steps * NANOS_PER_SEC;
        self.step_params.step_duration = step_duration as i64;
        self.step_params.step_size = step_size as i64;
        self.step_params.next_step_time = (now + step_duration) as i64;
    }
}

/// Upstream's `adjustPercentage`: the target's share changed; the newest revision gets a
/// rise, the oldest lose a cut first.
fn adjust_percentage(goal: i64, c: &mut ConfigurationRollout) {
    let diff = goal - c.percent;
    if goal == 0 {
        c.revisions.clear();
    } else if diff > 0 {
        if let Some(last) = c.revisions.last_mut() {
            last.percent += diff;
        }
    } else if diff < 0 {
        let mut cut = -diff;
        let mut i = 0;
        while cut > 0 && i < c.revisions.len() {
            if c.revisions[i].percent > cut {
                c.revisions[i].percent -= cut;
                break;
            }
            cut -= c.revisions[i].percent;
            i += 1;
        }
        c.revisions.drain(..i);
    }
    c.percent = goal;
}

/// Upstream's `stepRevisions`: once due, moves a step to the newest revision.
fn step_revisions(c: &mut ConfigurationRollout, now: i64) {
    if now < c.step_params.next_step_time || c.revisions.len() < 2 {
        return;
    }
    let mut remaining = c.step_params.step_size;
    let n = c.revisions.len();
    // From the revision before the newest backwards ("by design we drain newest revision
    // first"), dropping those it empties; the order stays.
    let mut write = n - 1;
    let mut read = n as i64 - 2;
    while remaining > 0 && read >= 0 {
        let r = &mut c.revisions[read as usize];
        if r.percent > remaining {
            r.percent -= remaining;
            break;
        }
        remaining -= r.percent;
        write -= 1;
        read -= 1;
    }
    c.revisions[write] = c.revisions[n - 1].clone();
    c.revisions[write].percent =
        (c.revisions[write].percent + c.step_params.step_size).min(c.percent);
    c.revisions.truncate(write + 1);
    if c.revisions.len() > 1 {
        c.step_params.next_step_time = now + c.step_params.step_duration;
    } else {
        c.step_params = RolloutParams::default();
    }
}

/// Upstream's `stepConfig`: `goal` holds the latest ready revision alone at the target's share.
fn step_config(
    goal: ConfigurationRollout,
    mut prev: ConfigurationRollout,
    now: i64,
) -> ConfigurationRollout {
    let mut ret = ConfigurationRollout { step_params: RolloutParams::default(), ..goal.clone() };
    if !prev.revisions.is_empty() {
        adjust_percentage(goal.percent, &mut prev);
    }
    let newest = goal.revisions.first().map(|r| r.revision_name.as_str());
    // No new revision since the previous state: carry on with the rollout under way, if any.
    if prev.revisions.is_empty()
        || newest == prev.revisions.last().map(|r| r.revision_name.as_str())
    {
        if prev.revisions.len() > 1 {
            ret.revisions = prev.revisions;
            ret.step_params = prev.step_params;
            // Before observe_ready there is no step size yet: stay at 1 %.
            if ret.step_params.step_size > 0 {
                step_revisions(&mut ret, now);
            }
        }
        return ret;
    }
    // A new revision: it starts at 1 %, taken from the newest older revision with traffic.
    ret.step_params.start_time = now;
    if let Some(r) = prev.revisions.iter_mut().rev().find(|r| r.percent > 0) {
        r.percent -= 1;
    }
    let mut revisions: Vec<RevisionRollout> =
        prev.revisions.into_iter().filter(|r| r.percent > 0).collect();
    if let Some(g) = goal.revisions.into_iter().next() {
        revisions.push(RevisionRollout { percent: 1, ..g });
    }
    ret.revisions = revisions;
    ret
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn cfg(name: &str, tag: &str, percent: i64, revs: &[(&str, i64)]) -> ConfigurationRollout {
        ConfigurationRollout {
            configuration_name: name.into(),
            tag: tag.into(),
            percent,
            revisions: revs
                .iter()
                .map(|(r, p)| RevisionRollout { revision_name: (*r).into(), percent: *p })
                .collect(),
            step_params: RolloutParams::default(),
        }
    }

    fn shape(r: &Rollout) -> Vec<Vec<(String, i64)>> {
        r.configurations
            .iter()
            .map(|c| c.revisions.iter().map(|r| (r.revision_name.clone(), r.percent)).collect())
            .collect()
    }

    fn one(c: ConfigurationRollout) -> Rollout {
        Rollout { configurations: vec![c] }
    }

    #[test]
    fn without_a_previous_state_the_desired_shape_applies_at_once() {
        let cur = one(cfg("c", "", 100, &[("c-2", 100)]));
        let (ro, next) = cur.clone().step(None, 10 * S);
        assert_eq!((ro, next), (cur, 0));
    }

    #[test]
    fn a_new_revision_starts_at_1_percent_taken_from_the_newest_with_traffic() {
        let prev = one(cfg("c", "", 100, &[("c-1", 100)]));
        let (ro, next) = one(cfg("c", "", 100, &[("c-2", 100)])).step(Some(&prev), 10 * S);
        assert_eq!(shape(&ro), [vec![("c-1".into(), 99), ("c-2".into(), 1)]]);
        assert_eq!(ro.configurations[0].step_params.start_time, 10 * S);
        assert_eq!(next, 0, "no step is scheduled before the gateway routes the 1 %");
        assert!(!ro.done());
    }

    #[test]
    fn routed_after_2_s_a_120_s_rollout_moves_in_59_steps_of_2_percent_every_2_s() {
        let prev = one(cfg("c", "", 100, &[("c-1", 100)]));
        let (mut ro, _) = one(cfg("c", "", 100, &[("c-2", 100)])).step(Some(&prev), 10 * S);
        ro.observe_ready(11 * S + 500_000_000, 120.0);
        let p = ro.configurations[0].step_params;
        // 1.5 s rounds up to 2 s; (120 - 2) / 2 = 59 steps; 99 % / 59 rounds to 2 %.
        assert_eq!((p.step_size, p.step_duration), (2, 2 * S));
        assert_eq!(p.next_step_time, 13 * S + 500_000_000);
        // Before the step is due nothing moves; then 2 % per step, oldest first.
        let desired = || one(cfg("c", "", 100, &[("c-2", 100)]));
        let (ro2, next) = desired().step(Some(&ro), 12 * S);
        assert_eq!(shape(&ro2), [vec![("c-1".into(), 99), ("c-2".into(), 1)]]);
        assert_eq!(next, 13 * S + 500_000_000);
        let (ro3, next) = desired().step(Some(&ro2), 14 * S);
        assert_eq!(shape(&ro3), [vec![("c-1".into(), 97), ("c-2".into(), 3)]]);
        assert_eq!(next, 16 * S);
    }

    #[test]
    fn a_rollout_slower_than_its_duration_finishes_in_one_step() {
        let prev = one(cfg("c", "", 100, &[("c-1", 100)]));
        let (mut ro, _) = one(cfg("c", "", 100, &[("c-2", 100)])).step(Some(&prev), S);
        ro.observe_ready(31 * S, 10.0);
        let p = ro.configurations[0].step_params;
        assert_eq!((p.step_size, p.step_duration), (99, S));
        let (done, next) = one(cfg("c", "", 100, &[("c-2", 100)])).step(Some(&ro), 32 * S);
        assert_eq!(shape(&done), [vec![("c-2".into(), 100)]]);
        assert_eq!(done.configurations[0].step_params, RolloutParams::default());
        assert_eq!(next, 0);
        assert!(done.done());
    }

    #[test]
    fn a_third_revision_mid_rollout_takes_its_1_percent_from_the_second_which_drains_first() {
        let mut prev = cfg("c", "", 100, &[("c-1", 60), ("c-2", 40)]);
        prev.step_params =
            RolloutParams { start_time: 1, next_step_time: 5 * S, step_duration: S, step_size: 50 };
        let (ro, _) = one(cfg("c", "", 100, &[("c-3", 100)])).step(Some(&one(prev)), 4 * S);
        assert_eq!(shape(&ro), [vec![("c-1".into(), 60), ("c-2".into(), 39), ("c-3".into(), 1)]]);
        // A step of 70 empties c-2 (39) and takes the other 31 from c-1.
        let mut mid = ro.configurations[0].clone();
        mid.step_params =
            RolloutParams { start_time: 1, next_step_time: 5 * S, step_duration: S, step_size: 70 };
        step_revisions(&mut mid, 5 * S);
        let got: Vec<_> =
            mid.revisions.iter().map(|r| (r.revision_name.as_str(), r.percent)).collect();
        assert_eq!(got, [("c-1", 29), ("c-3", 71)]);
    }

    #[test]
    fn a_smaller_share_is_cut_from_the_oldest_a_larger_one_goes_to_the_newest() {
        let mut c = cfg("c", "", 100, &[("c-1", 30), ("c-2", 70)]);
        adjust_percentage(50, &mut c);
        assert_eq!(c.revisions, cfg("", "", 0, &[("c-2", 50)]).revisions);
        adjust_percentage(80, &mut c);
        assert_eq!(c.revisions, cfg("", "", 0, &[("c-2", 80)]).revisions);
        adjust_percentage(0, &mut c);
        assert!(c.revisions.is_empty());
    }

    #[test]
    fn one_percent_targets_and_new_configurations_are_not_rolled_out() {
        let prev = Rollout {
            configurations: vec![cfg("a", "", 1, &[("a-1", 1)]), cfg("b", "", 99, &[("b-1", 99)])],
        };
        let cur = Rollout {
            configurations: vec![
                cfg("a", "", 1, &[("a-2", 1)]),
                cfg("b", "", 98, &[("b-1", 98)]),
                cfg("c", "x", 0, &[]),
            ],
        };
        let (ro, _) = cur.step(Some(&prev), S);
        assert_eq!(
            shape(&ro),
            [vec![("a-2".into(), 1)], vec![("b-1".into(), 98)], vec![]],
            "{ro:?}"
        );
    }

    #[test]
    fn the_state_round_trips_as_upstreams_json_and_inconsistent_state_is_dropped() {
        let mut c = cfg("c", "", 100, &[("c-1", 99), ("c-2", 1)]);
        c.step_params.start_time = 7;
        let text = serde_json::to_string(&one(c.clone())).unwrap();
        assert_eq!(
            text,
            r#"{"configurations":[{"configurationName":"c","percent":100,"revisions":[{"revisionName":"c-1","percent":99},{"revisionName":"c-2","percent":1}],"stepParams":{"startTime":7}}]}"#
        );
        assert_eq!(Rollout::parse(&text), Some(one(c)));
        let bad = one(cfg("c", "", 100, &[("c-1", 50)]));
        assert_eq!(Rollout::parse(&serde_json::to_string(&bad).unwrap()), None);
        assert_eq!(Rollout::parse("{"), None);
    }
}
