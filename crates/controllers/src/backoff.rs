//! Per-object back-off for failed reconciles (client-go's `ItemExponentialFailureRateLimiter`:
//! 5 ms doubled on every consecutive failure; capped at 60 s here, where client-go caps at
//! 1,000 s).
//!
//! kube-runtime's `error_policy` only picks the next requeue; a watch event on an object the
//! controller owns still triggers a reconcile at once. When a failing reconcile itself causes
//! such an event (a pod write before the write that fails), the pair spins at API speed — the
//! 100 % CPU loop of issue 18. So the back-off also gates the reconcile: while an object is
//! backing off and its spec (`metadata.generation`) is unchanged since the failure, the
//! reconcile returns the rest of the wait instead of acting. A spec change by the user ends the
//! wait at once, as a fix should.
//!
//! Every kube-runtime reconciler goes through [`Backoff::reconcile`] (the gate, and success
//! clearing the count) and [`Backoff::retry`] (its `error_policy`), so the rule lives here once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::Resource;
use kube::runtime::controller::Action;

const BASE_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Failing {
    failures: u32,
    generation: Option<i64>,
    until: Instant,
}

/// Consecutive failures per object key.
#[derive(Debug, Default)]
pub struct Backoff {
    failing: Mutex<HashMap<String, Failing>>,
}

impl Backoff {
    /// Records a failed reconcile of `key` at `generation`; returns how long to wait before
    /// the next attempt.
    pub fn failed(&self, key: &str, generation: Option<i64>) -> Duration {
        self.failed_at(key, generation, Instant::now())
    }

    fn failed_at(&self, key: &str, generation: Option<i64>, now: Instant) -> Duration {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        let entry = failing.entry(key.to_owned()).or_insert(Failing {
            failures: 0,
            generation,
            until: now,
        });
        if entry.generation != generation {
            entry.failures = 0;
            entry.generation = generation;
        }
        let delay = BASE_DELAY.saturating_mul(1 << entry.failures.min(20)).min(MAX_DELAY);
        entry.failures = entry.failures.saturating_add(1);
        entry.until = now + delay;
        delay
    }

    /// Records a successful reconcile of `key`: its next failure starts from the base delay.
    pub fn succeeded(&self, key: &str) {
        self.failing.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// The rest of `key`'s wait when it is backing off at the same `generation`; `None` when a
    /// reconcile may act now.
    pub fn waiting(&self, key: &str, generation: Option<i64>) -> Option<Duration> {
        self.waiting_at(key, generation, Instant::now())
    }

    fn waiting_at(&self, key: &str, generation: Option<i64>, now: Instant) -> Option<Duration> {
        let failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        let entry = failing.get(key)?;
        (entry.generation == generation && entry.until > now).then(|| entry.until - now)
    }

    /// One reconcile of `obj`: skipped, with the rest of the wait as the requeue, while `obj`
    /// backs off at its current generation; otherwise `pass` runs, and its success clears the
    /// failure count.
    ///
    /// # Errors
    /// `pass`'s error; hand it to [`Backoff::retry`] in the controller's `error_policy`.
    pub async fn reconcile<K, E>(
        &self,
        obj: &K,
        pass: impl Future<Output = Result<Action, E>>,
    ) -> Result<Action, E>
    where
        K: Resource,
    {
        let key = object_key(obj);
        if let Some(wait) = self.waiting(&key, obj.meta().generation) {
            return Ok(Action::requeue(wait));
        }
        let action = pass.await?;
        self.succeeded(&key);
        Ok(action)
    }

    /// A controller's `error_policy`: counts the failure of `obj` and requeues it after its
    /// back-off. Conflicts (409) are normal under concurrent writers and logged at debug level
    /// only; anything else is a warning naming the object and the whole error chain.
    pub fn retry<K>(&self, obj: &K, error: &(dyn std::error::Error + 'static)) -> Action
    where
        K: Resource<DynamicType = ()>,
    {
        let key = object_key(obj);
        let wait = self.failed(&key, obj.meta().generation);
        let kind = K::kind(&());
        if is_conflict(error) {
            tracing::debug!(%kind, object = %key, ?wait, "conflict; retrying");
        } else {
            let error = crate::report(error);
            tracing::warn!(%kind, object = %key, %error, ?wait, "reconcile failed");
        }
        Action::requeue(wait)
    }
}

/// `namespace/name` (or `name` for cluster-scoped objects).
fn object_key<K: Resource>(obj: &K) -> String {
    match obj.meta().namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", obj.meta().name.as_deref().unwrap_or_default()),
        None => obj.meta().name.clone().unwrap_or_default(),
    }
}

/// Whether `error` or one of its causes is an API conflict (409).
fn is_conflict(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(error);
    while let Some(e) = cur {
        if let Some(kube::Error::Api(s)) = e.downcast_ref::<kube::Error>() {
            return s.code == 409;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_failures_double_the_wait_up_to_the_cap() {
        let b = Backoff::default();
        let now = Instant::now();
        let waits: Vec<Duration> = (0..4).map(|_| b.failed_at("ns/a", Some(1), now)).collect();
        assert_eq!(
            waits,
            [5, 10, 20, 40].map(Duration::from_millis).to_vec(),
            "client-go's 5 ms base, doubled"
        );
        for _ in 0..40 {
            b.failed_at("ns/a", Some(1), now);
        }
        assert_eq!(b.failed_at("ns/a", Some(1), now), MAX_DELAY);
    }

    #[test]
    fn a_backing_off_object_is_gated_until_its_wait_ends() {
        let b = Backoff::default();
        let now = Instant::now();
        let wait = b.failed_at("ns/a", Some(3), now);
        assert_eq!(b.waiting_at("ns/a", Some(3), now), Some(wait));
        assert_eq!(b.waiting_at("ns/a", Some(3), now + wait), None, "the wait is over");
        assert_eq!(b.waiting_at("ns/b", Some(3), now), None, "other objects are not gated");
    }

    #[test]
    fn a_spec_change_ends_the_wait_and_restarts_the_count() {
        let b = Backoff::default();
        let now = Instant::now();
        for _ in 0..10 {
            b.failed_at("ns/a", Some(1), now);
        }
        assert_eq!(b.waiting_at("ns/a", Some(2), now), None, "the user changed the spec");
        assert_eq!(b.failed_at("ns/a", Some(2), now), BASE_DELAY);
    }

    #[derive(Debug, thiserror::Error)]
    #[error("API request failed")]
    struct Wrapped(#[source] kube::Error);

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status::failure("refused", "Test").with_code(code)))
    }

    #[test]
    fn a_conflict_anywhere_in_the_chain_is_a_conflict() {
        assert!(is_conflict(&Wrapped(api_error(409))));
        assert!(is_conflict(&api_error(409)));
        assert!(!is_conflict(&Wrapped(api_error(422))));
    }

    #[test]
    fn success_resets_the_count() {
        let b = Backoff::default();
        let now = Instant::now();
        for _ in 0..10 {
            b.failed_at("ns/a", Some(1), now);
        }
        b.succeeded("ns/a");
        assert_eq!(b.waiting_at("ns/a", Some(1), now), None);
        assert_eq!(b.failed_at("ns/a", Some(1), now), BASE_DELAY);
    }
}
