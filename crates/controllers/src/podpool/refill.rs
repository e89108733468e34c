//! When a pool creates the replacements of claimed pods (issue 12): not while a pod claimed
//! from it moments ago is being specialised.
//!
//! A claim is a cold start someone is waiting for: the node agent kills the placeholder and
//! starts the claimant's container (`runc run`, the app's own start, the readiness probe). A
//! replacement created at the same instant walks the whole create path at the same time — the
//! API writes and watch fan-out, scheduling, and on the node a sandbox and a `runc run` of its
//! own — and competes with the claimant for the CPU. `kinetic bench coldstart` measured it on
//! the 2-core development machine: with the refill made at once, a claimed pod's container
//! start took about twice a fresh pod's and claiming was slower than creating (0.5–0.8×); with
//! the refill held until the claimed pod was specialised, claiming beat creating (1.3×, same
//! run, same load).
//!
//! So the refill waits until every pod claimed less than [`HOLD`] ago is specialised (or failed,
//! or gone): the node agent's relabelling of the claimed pod is a watch event that reconciles
//! the pool at once, so the usual wait is the specialisation itself (about 100 ms), and a claim
//! whose specialisation stalls holds the refill at most [`HOLD`]. The sizing already expects a
//! replacement to be ready one start-up after the claim; this adds at most [`HOLD`] to it.
//! Knative's and Fission's pools have no such rule (Fission's pool manager replaces a
//! specialised pod from its ReplicaSet at once); it is ours, for a node where the pool's pods
//! and the claimant share the CPU.

use std::time::Duration;

use jiff::Timestamp;

/// The longest a claim under specialisation holds its pool's refill.
pub const HOLD: Duration = Duration::from_secs(1);

/// How long the refill waits, given when the pool's pods still under specialisation (state
/// `claimed`) were claimed: `None` to refill now, else the time until the youngest of them
/// passes [`HOLD`] (the pool is looked at again then, or earlier when one is specialised).
pub fn hold(claimed_at: &[Timestamp], now: Timestamp) -> Option<Duration> {
    claimed_at
        .iter()
        .filter_map(|t| {
            let age = Duration::try_from(now.duration_since(*t)).unwrap_or(Duration::ZERO);
            HOLD.checked_sub(age).filter(|left| !left.is_zero())
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(1_765_000_000_000 + ms).unwrap()
    }

    #[test]
    fn the_refill_waits_for_recent_claims_under_specialisation_only() {
        let now = at(10_000);
        let cases: &[(&str, &[i64], Option<u64>)] = &[
            ("no claim under way: refill now", &[], None),
            ("claimed 100 ms ago: wait the rest of the hold", &[9_900], Some(900)),
            ("the youngest claim decides", &[9_200, 9_900], Some(900)),
            ("claimed exactly HOLD ago: refill now", &[9_000], None),
            ("a stalled specialisation holds no longer than HOLD", &[5_000], None),
            (
                "a claim stamped in the future (clock skew) holds at most HOLD",
                &[10_500],
                Some(1000),
            ),
        ];
        for (why, claims, want) in cases {
            let claims: Vec<Timestamp> = claims.iter().map(|m| at(*m)).collect();
            let got = hold(&claims, now).map(|d| u64::try_from(d.as_millis()).unwrap());
            assert_eq!(got, *want, "{why}");
        }
    }
}
