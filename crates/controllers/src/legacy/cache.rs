//! The informer cache: the objects of one watch in memory, and the changes each watch event
//! makes to them (with the old object, which the event handlers need to see what moved).
//!
//! A relist (`Init` … `InitDone`, after a start or a `410 Gone`) is applied as one replacement
//! at `InitDone`, like client-go's `Replace`: objects that did not come back are reported
//! deleted, so no deletion is missed while the watch was away.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use kube::Resource;
use kube::runtime::watcher;

/// What one watch event changed.
#[derive(Debug, Clone)]
pub enum Change<K> {
    Added(Arc<K>),
    Updated { old: Arc<K>, new: Arc<K> },
    Deleted(Arc<K>),
}

type Map<K> = HashMap<String, Arc<K>>;

/// The `namespace/name` key of an object (`name` for cluster-scoped ones).
pub fn key_of<K: Resource>(obj: &K) -> String {
    let m = obj.meta();
    match m.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", m.name.as_deref().unwrap_or_default()),
        _ => m.name.clone().unwrap_or_default(),
    }
}

/// The writing side, owned by the controller's event loop.
#[derive(Debug)]
pub struct Cache<K> {
    map: Arc<RwLock<Map<K>>>,
    relist: Option<Map<K>>,
    synced: bool,
}

/// A cheap, cloneable read handle for reconciles.
#[derive(Debug)]
pub struct Reader<K> {
    map: Arc<RwLock<Map<K>>>,
}

impl<K> Clone for Reader<K> {
    fn clone(&self) -> Self {
        Self { map: self.map.clone() }
    }
}

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Self { map: Arc::default(), relist: None, synced: false }
    }
}

impl<K: Resource + Clone> Cache<K> {
    pub fn reader(&self) -> Reader<K> {
        Reader { map: self.map.clone() }
    }

    /// The watch has listed everything at least once.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// What a controller's `select!` loop does with the next item of a watch stream: applies an
    /// event and returns what changed, logs a failed attempt (kube's watcher retries it with
    /// back-off) and returns nothing, and fails when the stream ended, which the watcher never
    /// does while it can retry.
    ///
    /// # Errors
    /// [`crate::Error::WatchEnded`] for `resource` when `next` is `None`.
    pub(crate) fn next_changes(
        &mut self,
        next: Option<Result<watcher::Event<K>, watcher::Error>>,
        resource: &'static str,
    ) -> crate::Result<Vec<Change<K>>> {
        match next {
            Some(Ok(ev)) => Ok(self.apply(ev)),
            Some(Err(error)) => {
                tracing::warn!(%error, resource, "watch failed, retrying");
                Ok(Vec::new())
            }
            None => Err(crate::Error::WatchEnded { resource }),
        }
    }

    /// Applies one watch event and returns what changed.
    pub fn apply(&mut self, event: watcher::Event<K>) -> Vec<Change<K>> {
        match event {
            watcher::Event::Apply(obj) => {
                let new = Arc::new(obj);
                let old = write(&self.map).insert(key_of(&*new), new.clone());
                vec![changed(old, new)]
            }
            watcher::Event::Delete(obj) => {
                let old = write(&self.map).remove(&key_of(&obj));
                vec![Change::Deleted(old.unwrap_or_else(|| Arc::new(obj)))]
            }
            watcher::Event::Init => {
                self.relist = Some(Map::new());
                Vec::new()
            }
            watcher::Event::InitApply(obj) => {
                self.relist.get_or_insert_with(Map::new).insert(key_of(&obj), Arc::new(obj));
                Vec::new()
            }
            watcher::Event::InitDone => {
                let new = self.relist.take().unwrap_or_default();
                let mut old = std::mem::replace(&mut *write(&self.map), new.clone());
                self.synced = true;
                let mut changes: Vec<Change<K>> =
                    new.into_iter().map(|(k, obj)| changed(old.remove(&k), obj)).collect();
                changes.extend(old.into_values().map(Change::Deleted));
                changes
            }
        }
    }
}

fn changed<K: Resource>(old: Option<Arc<K>>, new: Arc<K>) -> Change<K> {
    match old {
        Some(old) => Change::Updated { old, new },
        None => Change::Added(new),
    }
}

fn write<K>(map: &RwLock<Map<K>>) -> std::sync::RwLockWriteGuard<'_, Map<K>> {
    // A panic while the lock was held cannot leave the map half-written (single inserts).
    map.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<K: Resource> Reader<K> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Map<K>> {
        self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The object with this `namespace/name` key.
    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        self.read().get(key).cloned()
    }

    /// The objects of a namespace.
    pub fn in_namespace(&self, ns: &str) -> Vec<Arc<K>> {
        self.read()
            .values()
            .filter(|o| o.meta().namespace.as_deref() == Some(ns))
            .cloned()
            .collect()
    }
}
