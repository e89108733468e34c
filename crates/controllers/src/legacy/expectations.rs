//! Upstream's `ControllerExpectations` / `UIDTrackingControllerExpectations`
//! (`pkg/controller/controller_utils.go`): what a controller has asked the API for and not yet
//! seen in its watch.
//!
//! Before creating `n` pods the ReplicaSet controller records `n` expected creations, and before
//! deleting pods the keys of those pods; the pod event handlers count creations down and strike
//! deletions off as the watch delivers them. While a controller has unfulfilled expectations it
//! does not compute a new diff from its cache (which cannot show its own writes yet), so a slow
//! watch never makes it create or delete a pod twice. A create or delete that failed is counted
//! as observed at once (nothing will show up). Expectations older than five minutes are
//! considered fulfilled, as upstream, so a lost event cannot wedge a controller forever. A
//! restarted controller starts with none: its first sync works from a complete list.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Upstream's `ExpectationsTimeout`.
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug)]
struct Expectation {
    adds: i64,
    deletes: HashSet<String>,
    at: Instant,
}

/// Expectations of one controller, keyed by the controller object's `namespace/name`.
#[derive(Debug, Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, Expectation>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expectation>> {
        // Every critical section is a single map operation: a poisoned map is still consistent.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the controller may sync from its cache: nothing is outstanding (or it expired).
    pub fn satisfied(&self, key: &str) -> bool {
        match self.lock().get(key) {
            None => true,
            Some(e) => {
                (e.adds <= 0 && e.deletes.is_empty()) || e.at.elapsed() > EXPECTATIONS_TIMEOUT
            }
        }
    }

    /// Records that `n` creations are about to be requested (replacing older expectations).
    pub fn expect_creations(&self, key: &str, n: usize) {
        let adds = i64::try_from(n).unwrap_or(i64::MAX);
        self.lock().insert(
            key.to_owned(),
            Expectation { adds, deletes: HashSet::new(), at: Instant::now() },
        );
    }

    /// Records the keys of the pods about to be deleted (replacing older expectations).
    pub fn expect_deletions(&self, key: &str, pods: impl IntoIterator<Item = String>) {
        let deletes = pods.into_iter().collect();
        self.lock().insert(key.to_owned(), Expectation { adds: 0, deletes, at: Instant::now() });
    }

    /// The watch showed one of the expected creations (or one failed or was skipped).
    pub fn creation_observed(&self, key: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            e.adds -= 1;
        }
    }

    /// The watch showed the deletion of `pod` (or its deletion failed).
    pub fn deletion_observed(&self, key: &str, pod: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            e.deletes.remove(pod);
        }
    }

    /// The controller object is gone: forget its expectations.
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_satisfied() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/rs"));
    }

    #[test]
    fn creations_are_counted_down() {
        let e = Expectations::default();
        e.expect_creations("ns/rs", 2);
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(e.satisfied("ns/rs"));
        // A late extra observation (a pod adopted meanwhile) keeps it satisfied.
        e.creation_observed("ns/rs");
        assert!(e.satisfied("ns/rs"));
    }

    #[test]
    fn deletions_are_tracked_by_pod_key() {
        let e = Expectations::default();
        e.expect_deletions("ns/rs", ["ns/a".to_owned(), "ns/b".to_owned()]);
        e.deletion_observed("ns/rs", "ns/a");
        e.deletion_observed("ns/rs", "ns/a");
        assert!(!e.satisfied("ns/rs"));
        e.deletion_observed("ns/rs", "ns/b");
        assert!(e.satisfied("ns/rs"));
    }
}
