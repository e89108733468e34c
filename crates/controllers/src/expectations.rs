//! Expectations: what a controller has asked the API server to do and has not yet seen in its
//! watch cache, as upstream's `ControllerExpectations` and Kruise's scale / resourceVersion
//! expectations.
//!
//! A reconcile that runs on a cache older than its own writes would count pods it already
//! created as missing and create them again. So every create, delete and update is recorded
//! here before the next reconcile, and the reconcile does nothing (it requeues) until the
//! cache shows all of them: a created name present, a deleted UID gone (or terminating), an
//! updated object at or past the resourceVersion the write returned. Entries older than
//! [`TIMEOUT`] are dropped so a lost watch event cannot block a controller forever (the leak
//! that Kruise issue #1765 describes), which is safe because the next reconcile reads the
//! cache again.
//!
//! Expectations are in memory: after a restart the controller starts from a fresh list, which
//! already shows everything acknowledged, so nothing is created twice.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an unobserved write blocks its owner (upstream: 5 minutes; shorter here because
/// the embedded watch delivers in milliseconds and a stuck rollout is worse than a re-check).
pub const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Pending {
    /// Names of created objects not yet in the cache.
    created: HashMap<String, Instant>,
    /// UIDs of deleted objects still in the cache.
    deleted: HashMap<String, Instant>,
    /// Updated objects by name: the resourceVersion the write returned.
    updated: HashMap<String, (u64, Instant)>,
}

/// What one object in the cache looks like to the expectations.
pub struct Seen<'a> {
    pub name: &'a str,
    pub uid: &'a str,
    pub resource_version: &'a str,
    pub terminating: bool,
}

/// Expectations per owner key (`namespace/name`).
#[derive(Default)]
pub struct Expectations {
    by_owner: Mutex<HashMap<String, Pending>>,
}

fn rv(s: &str) -> Option<u64> {
    s.parse().ok()
}

impl Expectations {
    fn with<R>(&self, owner: &str, f: impl FnOnce(&mut Pending) -> R) -> R {
        let mut map = self.by_owner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(map.entry(owner.to_owned()).or_default())
    }

    pub fn expect_create(&self, owner: &str, name: &str) {
        self.with(owner, |p| p.created.insert(name.to_owned(), Instant::now()));
    }

    /// The watch showed an object named `name` (from an event hook, for a creation the cache
    /// may no longer show by the next reconcile: created and deleted again in between).
    pub fn creation_observed(&self, owner: &str, name: &str) {
        let mut map = self.by_owner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = map.get_mut(owner) {
            p.created.remove(name);
        }
    }

    /// Forgets an expected creation whose request failed.
    pub fn create_failed(&self, owner: &str, name: &str) {
        self.with(owner, |p| p.created.remove(name));
    }

    pub fn expect_delete(&self, owner: &str, uid: &str) {
        self.with(owner, |p| p.deleted.insert(uid.to_owned(), Instant::now()));
    }

    pub fn delete_failed(&self, owner: &str, uid: &str) {
        self.with(owner, |p| p.deleted.remove(uid));
    }

    /// Records an update whose answer carried `resource_version`. Of several writes to one
    /// object (concurrent ones may answer in any order) the newest version is awaited.
    pub fn expect_update(&self, owner: &str, name: &str, resource_version: &str) {
        if let Some(v) = rv(resource_version) {
            self.with(owner, |p| {
                let e = p.updated.entry(name.to_owned()).or_insert((v, Instant::now()));
                if e.0 <= v {
                    *e = (v, Instant::now());
                }
            });
        }
    }

    /// Drops what `objects` (the cache's view of the owner's objects) shows done and what timed
    /// out; answers whether nothing is pending any more.
    pub fn satisfied<'a>(&self, owner: &str, objects: impl IntoIterator<Item = Seen<'a>>) -> bool {
        let objects: Vec<Seen<'a>> = objects.into_iter().collect();
        let mut map = self.by_owner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(p) = map.get_mut(owner) else { return true };
        let now = Instant::now();
        p.created.retain(|name, at| {
            now.duration_since(*at) < TIMEOUT && !objects.iter().any(|o| o.name == name)
        });
        p.deleted.retain(|uid, at| {
            now.duration_since(*at) < TIMEOUT
                && objects.iter().any(|o| o.uid == uid && !o.terminating)
        });
        p.updated.retain(|name, (want, at)| {
            now.duration_since(*at) < TIMEOUT
                && objects
                    .iter()
                    .find(|o| o.name == name)
                    .is_some_and(|o| rv(o.resource_version).is_some_and(|have| have < *want))
        });
        let done = p.created.is_empty() && p.deleted.is_empty() && p.updated.is_empty();
        if done {
            // Nothing pending: drop the entry (under the same lock), so owners deleted
            // meanwhile leave nothing behind.
            map.remove(owner);
        }
        done
    }

    /// Forgets an owner that was deleted.
    pub fn forget(&self, owner: &str) {
        let mut map = self.by_owner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.remove(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen<'a>(name: &'a str, uid: &'a str, rv: &'a str) -> Seen<'a> {
        Seen { name, uid, resource_version: rv, terminating: false }
    }

    #[test]
    fn waits_until_the_cache_shows_every_write() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/a", []));
        e.expect_create("ns/a", "a-x");
        e.expect_delete("ns/a", "u1");
        e.expect_update("ns/a", "a-y", "10");
        // The cache still shows the deleted pod and the old version of the updated one.
        let stale = || [seen("a-old", "u1", "3"), seen("a-y", "u2", "9")];
        assert!(!e.satisfied("ns/a", stale()));
        // The created pod appears, the deleted one is terminating, the update arrived.
        let fresh = [
            seen("a-x", "u3", "11"),
            Seen { name: "a-old", uid: "u1", resource_version: "12", terminating: true },
            seen("a-y", "u2", "10"),
        ];
        assert!(e.satisfied("ns/a", fresh));
        // Two writes answered out of order: the newer version is the one awaited.
        e.expect_update("ns/a", "a-y", "20");
        e.expect_update("ns/a", "a-y", "19");
        assert!(!e.satisfied("ns/a", [seen("a-y", "u2", "19")]));
        assert!(e.satisfied("ns/a", [seen("a-y", "u2", "20")]));
        // Other owners are independent.
        e.expect_create("ns/b", "b-x");
        assert!(!e.satisfied("ns/b", []));
        e.create_failed("ns/b", "b-x");
        assert!(e.satisfied("ns/b", []));
    }
}
