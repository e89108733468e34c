//! How many ready pods a pool keeps, learned from its claim history (issue 12 part 2): a pure
//! function of claim instants and measured start-up durations.
//!
//! A claimed pod is replaced at once, and the replacement is ready one start-up later. So the
//! claims that must be answered from the pool are those that arrive within one start-up of
//! each other: the pool needs as many ready pods as claims fall into a window of the start-up
//! time. The window is the 95th percentile of the measured start-ups (a slow start is what
//! empties a pool); the count is the 95th percentile (nearest rank) over the windows that open
//! at each recent claim, so one outlier burst does not keep a large pool forever, while a
//! burst that recurs does. The result is clamped to `[minReady, maxReady]`. Claims older than
//! [`LOOKBACK`] are forgotten, so an idle pool shrinks back to `minReady`.
//!
//! # Bursts: concurrent claims, not the pool's answers
//! The window count is what makes a burst visible: claims arriving within one replacement
//! start-up of each other are concurrent, and the pool needs one ready pod for each. But the
//! count is only as good as the history. A history of the pool's own pods claimed can never
//! show more concurrent claims than the pool held (a burst of 50 on a pool of 4 shows 4: the
//! other 46 consumers found it empty and made their pods otherwise), so the learned size
//! would never grow past its current value (`kinetic bench coldstart`'s burst, issue 12). So a
//! claim the pool could not answer counts too: an empty code pool's consumer makes a pod of the
//! pool's runtime, labelled with the pool and stamped with the claim time
//! (`kinetic_api::pool::CREATED_CLAIMED_ANNOTATION`), and the pool controller reads it into the
//! history like any claimed pod. (An image pool's consumer creates a pod of its own template,
//! which the pool does not see: its bursts are still under-counted.)

use std::time::Duration;

use jiff::Timestamp;

/// Claims considered: the last ten minutes.
pub const LOOKBACK: Duration = Duration::from_secs(600);
/// The quantile of start-ups (the window) and of per-window claim counts (the demand).
pub const QUANTILE: f64 = 0.95;
/// The start-up assumed before any pool pod was measured.
pub const DEFAULT_STARTUP: Duration = Duration::from_secs(2);

/// The size and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sizing {
    /// Ready pods to keep.
    pub size: i32,
    /// Why, in a sentence, for `status.sizeReason`.
    pub reason: String,
    /// When the answer changes by itself (the oldest recent claim leaves the look-back).
    pub recheck: Option<Duration>,
}

/// The nearest-rank `q` quantile of `sorted` (ascending, not empty).
fn quantile<T: Copy>(sorted: &[T], q: f64) -> T {
    let n = sorted.len();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    sorted[rank - 1]
}

fn human(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The pool size for `claims` (any order) and measured `startups`, at `now`, within
/// `[min, max]` (`min ≤ max`; the controller refuses other pools before asking).
pub fn size(
    claims: &[Timestamp],
    startups: &[Duration],
    now: Timestamp,
    min: i32,
    max: i32,
) -> Sizing {
    let mut st: Vec<Duration> = startups.to_vec();
    st.sort_unstable();
    let (window, measured) = match st.is_empty() {
        true => (DEFAULT_STARTUP, format!("assumed start-up {}", human(DEFAULT_STARTUP))),
        false => {
            let w = quantile(&st, QUANTILE);
            (w, format!("start-up p95 {} of {} pods", human(w), st.len()))
        }
    };
    let lookback = jiff::SignedDuration::try_from(LOOKBACK).unwrap_or_default();
    let since = now.checked_sub(lookback).unwrap_or(now);
    let mut recent: Vec<Timestamp> =
        claims.iter().copied().filter(|t| *t > since && *t <= now).collect();
    recent.sort_unstable();
    let clamp = |demand: i32, why: String| {
        let size = demand.clamp(min, max.max(min));
        let bound = if size > demand {
            format!("; raised to minReady {min}")
        } else if size < demand {
            format!("; capped at maxReady {max}")
        } else {
            String::new()
        };
        (size, format!("{why}{bound}"))
    };
    let Some(oldest) = recent.first().copied() else {
        let (size, reason) =
            clamp(0, format!("no claims in the last {}m", LOOKBACK.as_secs() / 60));
        return Sizing { size, reason, recheck: None };
    };
    let w = jiff::SignedDuration::try_from(window).unwrap_or_default();
    // For each claim, the claims in [its instant, its instant + window).
    let mut counts = Vec::with_capacity(recent.len());
    let mut end = 0;
    for (i, t) in recent.iter().enumerate() {
        let until = t.checked_add(w).unwrap_or(*t);
        end = end.max(i);
        while end < recent.len() && recent[end] < until {
            end += 1;
        }
        counts.push(i32::try_from(end - i).unwrap_or(i32::MAX));
    }
    counts.sort_unstable();
    let demand = quantile(&counts, QUANTILE);
    let busiest = counts.last().copied().unwrap_or(0);
    let (size, reason) = clamp(
        demand,
        format!(
            "{demand} claims arrive within one replacement's start-up {} (p95 over {} claims; \
             busiest {busiest} at once; {measured}; last {}m)",
            human(window),
            recent.len(),
            LOOKBACK.as_secs() / 60
        ),
    );
    let leaves = oldest.checked_add(lookback).unwrap_or(now);
    let recheck = Duration::try_from(leaves.duration_since(now)).ok();
    Sizing { size, reason, recheck }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: f64) -> Timestamp {
        #[allow(clippy::cast_possible_truncation)]
        let ns = (secs * 1e9) as i128;
        Timestamp::from_nanosecond(1_800_000_000_000_000_000 + ns).unwrap()
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// One replayed history: claims at these seconds, start-ups of these seconds, sized at
    /// `now` within `[min, max]`.
    struct Case {
        name: &'static str,
        claims: Vec<f64>,
        startups: Vec<f64>,
        now: f64,
        min: i32,
        max: i32,
        want: i32,
    }

    fn every(start: f64, step: f64, n: usize) -> Vec<f64> {
        (0..n).map(|i| start + step * i as f64).collect()
    }

    #[test]
    fn replayed_claim_histories() {
        let cases = vec![
            Case {
                name: "a_new_pool_without_claims_keeps_min_ready",
                claims: vec![],
                startups: vec![],
                now: 0.0,
                min: 2,
                max: 10,
                want: 2,
            },
            Case {
                name: "claims_slower_than_a_start_up_need_one_pod",
                claims: every(0.0, 10.0, 30),
                startups: vec![1.0, 1.2, 0.9],
                now: 300.0,
                min: 0,
                max: 10,
                want: 1,
            },
            Case {
                name: "a_steady_rate_needs_rate_times_start_up",
                // 4 claims a second, 1.5 s start-up: 6 claims arrive while one is replaced.
                claims: every(0.0, 0.25, 400),
                startups: vec![1.5; 10],
                now: 100.0,
                min: 1,
                max: 20,
                want: 6,
            },
            Case {
                name: "a_slow_start_up_tail_widens_the_window",
                // Most pods start in 0.5 s but the p95 is 3 s: 3 claims a second need 9.
                claims: every(0.0, 1.0 / 3.0, 300),
                startups: [vec![0.5; 18], vec![3.0; 2]].concat(),
                now: 100.0,
                min: 1,
                max: 20,
                want: 9,
            },
            Case {
                name: "a_single_outlier_burst_is_not_the_size",
                // 100 lone claims and one burst of 5 at once: 95 % of the windows hold one claim.
                claims: [every(0.0, 5.0, 100), vec![502.5; 5]].concat(),
                startups: vec![1.0],
                now: 590.0,
                min: 1,
                max: 20,
                want: 1,
            },
            Case {
                name: "a_recurring_burst_is_covered",
                // A burst of 8 every 20 s: most claims belong to a burst.
                claims: (0..20).flat_map(|b| vec![f64::from(b) * 20.0; 8]).collect(),
                startups: vec![2.0],
                now: 400.0,
                min: 1,
                max: 20,
                want: 8,
            },
            Case {
                name: "a_burst_seen_only_through_the_pools_own_pods_never_grows_the_pool",
                // Bursts of 12 every 30 s on a pool of 4: only its 4 pods' claims recorded.
                claims: (0..10).flat_map(|b| vec![f64::from(b) * 30.0; 4]).collect(),
                startups: vec![1.5],
                now: 300.0,
                min: 1,
                max: 20,
                want: 4,
            },
            Case {
                name: "a_burst_with_the_claims_the_pool_could_not_answer_is_covered",
                // The same bursts with the 8 pods made claimed for the rest of each.
                claims: (0..10).flat_map(|b| vec![f64::from(b) * 30.0; 12]).collect(),
                startups: vec![1.5],
                now: 300.0,
                min: 1,
                max: 20,
                want: 12,
            },
            Case {
                name: "a_burst_spread_over_more_than_a_start_up_needs_only_the_concurrent_part",
                // 12 claims 0.5 s apart with a 1.5 s start-up: at most 3 arrive within one
                // replacement's start, each replaced before the fourth comes.
                claims: (0..10).flat_map(|b| every(f64::from(b) * 30.0, 0.5, 12)).collect(),
                startups: vec![1.5],
                now: 300.0,
                min: 1,
                max: 20,
                want: 3,
            },
            Case {
                name: "demand_is_capped_at_max_ready",
                claims: every(0.0, 0.1, 1000),
                startups: vec![2.0],
                now: 100.0,
                min: 1,
                max: 5,
                want: 5,
            },
            Case {
                name: "claims_older_than_the_lookback_are_forgotten",
                claims: every(0.0, 0.1, 1000),
                startups: vec![2.0],
                now: 100.0 + 601.0,
                min: 1,
                max: 50,
                want: 1,
            },
            Case {
                name: "without_measurements_the_default_start_up_is_assumed",
                // 2 claims a second over the default 2 s start-up.
                claims: every(0.0, 0.5, 100),
                startups: vec![],
                now: 50.0,
                min: 0,
                max: 20,
                want: 4,
            },
        ];
        let mut failures = Vec::new();
        for c in cases {
            let claims: Vec<Timestamp> = c.claims.iter().map(|s| at(*s)).collect();
            let startups: Vec<Duration> = c.startups.iter().map(|s| secs(*s)).collect();
            let got = size(&claims, &startups, at(c.now), c.min, c.max);
            if got.size != c.want {
                failures.push(format!(
                    "{}: want {}, got {} ({})",
                    c.name, c.want, got.size, got.reason
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn the_reason_says_what_the_size_came_from() {
        let claims: Vec<Timestamp> = every(0.0, 0.25, 400).into_iter().map(at).collect();
        let got = size(&claims, &[secs(1.5)], at(100.0), 1, 4);
        expect_test::expect![[r#"
            Sizing {
                size: 4,
                reason: "6 claims arrive within one replacement's start-up 1.5s (p95 over 400 claims; busiest 6 at once; start-up p95 1.5s of 1 pods; last 10m); capped at maxReady 4",
                recheck: Some(
                    500s,
                ),
            }
        "#]]
        .assert_debug_eq(&got);
        let none = size(&[], &[], at(0.0), 3, 5);
        assert_eq!(none.reason, "no claims in the last 10m; raised to minReady 3");
    }
}
