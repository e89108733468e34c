//! The server's own controllers: the ownerReference garbage collector, the namespace lifecycle
//! (emptying a terminating namespace), and CRD cleanup. Upstream runs these in
//! kube-controller-manager and apiextensions-apiserver; an embedded server must run them itself
//! or deletions never finish.
//!
//! They follow the store's event stream and act through [`crate::rest::Api`], the same code the
//! HTTP handlers use, so every rule (finalizers, preconditions, conflicts) applies to them too.
//! Each step is level-triggered: a key is (re)examined against the current state, so a missed or
//! repeated event only costs a redundant check.
//!
//! Admission: the deletes of dependents and of a terminating namespace's contents are DELETE
//! requests of upstream's controllers (as `system:serviceaccount:kube-system:
//! generic-garbage-collector` and `...:namespace-controller`), so they reach admission webhooks
//! and policies here too (a `Fail` webhook refusing them stalls the deletion, as upstream). Not
//! admitted yet, though upstream's are API writes: the collector's patches of ownerReferences and
//! finalizers, the namespace `finalize` write, and the CRD cleanup's deletes are sent as the
//! collector's.
//!
//! # Caveats
//! Dependents are deleted with `Background` propagation, also under a `Foreground` owner
//! (upstream deletes blocking dependents in foreground too); the owner still waits for all of
//! them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Value, json};
use std::sync::atomic::Ordering;

use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::crd::CLEANUP_FINALIZER;
use crate::registry::Resource;
use crate::rest::{Api, DeleteOptions, ListOptions, WriteOptions, finalizers};
use crate::store::{Event, EventType, ObjKey, Stored};
use crate::strategy::Cleanup;

#[derive(Default)]
struct Index {
    /// owner uid → dependents
    dependents: HashMap<String, HashSet<ObjKey>>,
    /// dependent → its owners' uids
    owners: HashMap<ObjKey, Vec<String>>,
    /// every live object's uid
    uids: HashMap<String, ObjKey>,
}

impl Index {
    fn put(&mut self, key: &ObjKey, s: &Stored) {
        self.remove(key, None);
        let uid = s.uid();
        if !uid.is_empty() {
            self.uids.insert(uid.to_owned(), key.clone());
        }
        let owners: Vec<String> = s.owner_uids().map(str::to_owned).collect();
        for o in &owners {
            self.dependents.entry(o.clone()).or_default().insert(key.clone());
        }
        if !owners.is_empty() {
            self.owners.insert(key.clone(), owners);
        }
    }

    fn remove(&mut self, key: &ObjKey, uid: Option<&str>) {
        if let Some(uid) = uid
            && self.uids.get(uid) == Some(key)
        {
            self.uids.remove(uid);
        }
        if let Some(owners) = self.owners.remove(key) {
            for o in owners {
                if let Some(d) = self.dependents.get_mut(&o) {
                    d.remove(key);
                    if d.is_empty() {
                        self.dependents.remove(&o);
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Work {
    /// An object being deleted: run its finalizer duties.
    Finalize(ObjKey),
    /// A dependent whose owner went away.
    Orphaned(ObjKey),
}

/// Reads every object into a fresh index and queues what it calls for. Also forgets served
/// versions of CRDs that are gone (their Deleted event may be among those a lagged collector
/// missed).
fn rebuild(api: &Api) -> (Receiver<Arc<Event>>, Index, BTreeSet<Work>) {
    let st = api.store.read();
    let rx = st.subscribe();
    let mut index = Index::default();
    let mut queue = BTreeSet::new();
    for r in st.resources().cloned().collect::<Vec<_>>() {
        for ((ns, name), s) in st.list(&r, None, None) {
            let key = ObjKey::new(&r, ns, name);
            index.put(&key, s);
            if s.deleting() {
                queue.insert(Work::Finalize(key));
            }
        }
    }
    for (key, owners) in &index.owners {
        if owners.iter().any(|o| !index.uids.contains_key(o)) {
            queue.insert(Work::Orphaned(key.clone()));
        }
    }
    let crds = crate::registry::storage_key("apiextensions.k8s.io", "customresourcedefinitions");
    for r in api.registry.all() {
        let crd = ObjKey::new(&crds, "", &format!("{}.{}", r.plural, r.group));
        if !r.builtin && st.get(&crd).is_none() {
            api.registry.remove(&r.group, &r.plural);
        }
    }
    (rx, index, queue)
}

/// Runs until the store stops.
///
/// # Guarantees
/// No decision is taken on an index that missed events: when the event stream reports that the
/// collector fell behind, the index is rebuilt from the store before the next step. And a step
/// that deletes a dependent first looks every owner it names up in the store (see
/// [`owner_present`]), so even a stale index can only delay a deletion, never cause a wrong one.
pub async fn run(api: Arc<Api>) {
    'rebuild: loop {
        let (mut rx, mut index, mut queue) = rebuild(&api);
        loop {
            while let Some(w) = queue.pop_first() {
                // Fold in events that arrived meanwhile so decisions see fresh state.
                loop {
                    match rx.try_recv() {
                        Ok(ev) => observe(&api, &ev, &mut index, &mut queue),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Lagged(n)) => {
                            lagged(&api, n);
                            continue 'rebuild;
                        }
                        Err(TryRecvError::Closed) => return,
                    }
                }
                if let Err(e) = step(&api, &index, &w).await {
                    tracing::warn!(work = ?w, error = %e, "garbage collection step failed; retrying later");
                    // Retry after a pause (a conflict or a transient store failure).
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    queue.insert(w);
                }
            }
            match rx.recv().await {
                Ok(ev) => observe(&api, &ev, &mut index, &mut queue),
                Err(RecvError::Lagged(n)) => {
                    lagged(&api, n);
                    continue 'rebuild;
                }
                Err(RecvError::Closed) => return,
            }
        }
    }
}

fn lagged(api: &Api, missed: u64) {
    api.metrics.gc_rebuilds.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(missed, "garbage collector fell behind; rebuilding its index");
}

fn observe(api: &Api, ev: &Event, index: &mut Index, queue: &mut BTreeSet<Work>) {
    match ev.kind {
        EventType::Added | EventType::Modified => {
            index.put(&ev.key, &ev.obj);
            if ev.obj.deleting() {
                queue.insert(Work::Finalize(ev.key.clone()));
            }
            if ev.obj.owner_uids().any(|o| !index.uids.contains_key(o)) {
                queue.insert(Work::Orphaned(ev.key.clone()));
            }
        }
        EventType::Deleted => {
            let uid = ev.obj.uid().to_owned();
            let owners = index.owners.get(&ev.key).cloned().unwrap_or_default();
            index.remove(&ev.key, Some(&uid));
            if let Some(deps) = index.dependents.get(&uid) {
                queue.extend(deps.iter().cloned().map(Work::Orphaned));
            }
            // An owner in foreground deletion may be waiting for this dependent.
            for o in owners {
                if let Some(k) = index.uids.get(&o) {
                    queue.insert(Work::Finalize(k.clone()));
                }
            }
            if !ev.key.namespace.is_empty() {
                queue.insert(Work::Finalize(ObjKey::new(
                    &crate::registry::storage_key("", "namespaces"),
                    "",
                    &ev.key.namespace,
                )));
            }
            if let Some(res) = api.registry.for_storage(&ev.key.resource) {
                res.strategy.after_delete(&api.registry, &ev.obj);
            }
        }
    }
}

fn resource_for(api: &Api, storage: &str) -> Option<Arc<Resource>> {
    api.registry.for_storage(storage)
}

fn name_of(v: &Value) -> (String, String) {
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("").to_owned();
    (s("/metadata/namespace"), s("/metadata/name"))
}

type StepResult = Result<(), crate::error::ApiError>;

/// An object that is already gone needs nothing more: NotFound counts as done.
fn gone_is_done<T>(r: Result<T, crate::error::ApiError>) -> StepResult {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn step(api: &Api, index: &Index, w: &Work) -> StepResult {
    match w {
        Work::Finalize(key) => finalize(api, index, key).await,
        Work::Orphaned(key) => orphaned(api, key).await,
    }
}

/// Removes one finalizer from an object (through the normal update path, which deletes the
/// object when it was the last one).
async fn remove_finalizer(
    api: &Api,
    res: &Resource,
    ns: &str,
    name: &str,
    fin: &str,
) -> StepResult {
    let r = api
        .update_with(res, ns, name, None, &WriteOptions::default(), |cur| {
            let mut new = cur.clone();
            let fins: Vec<String> = finalizers(cur).into_iter().filter(|f| f != fin).collect();
            new["metadata"]["finalizers"] = json!(fins);
            Ok(new)
        })
        .await;
    gone_is_done(r)
}

async fn finalize(api: &Api, index: &Index, key: &ObjKey) -> StepResult {
    let Some(cur) = api.store.get(key) else { return Ok(()) };
    if !cur.deleting() {
        return Ok(());
    }
    let Some(res) = resource_for(api, &key.resource) else { return Ok(()) };
    let cur_v = cur.value();
    let (ns, name) = name_of(&cur_v);
    let fins = finalizers(&cur_v);
    let deps: Vec<ObjKey> =
        index.dependents.get(cur.uid()).map(|d| d.iter().cloned().collect()).unwrap_or_default();
    if fins.iter().any(|f| f == "orphan") {
        for d in &deps {
            drop_owner_ref(api, d, cur.uid()).await?;
        }
        remove_finalizer(api, &res, &ns, &name, "orphan").await?;
        return Ok(());
    }
    if fins.iter().any(|f| f == "foregroundDeletion") {
        if deps.is_empty() {
            remove_finalizer(api, &res, &ns, &name, "foregroundDeletion").await?;
        } else {
            for d in &deps {
                delete_key(api, d).await?;
            }
        }
        return Ok(());
    }
    match res.strategy.cleanup() {
        Cleanup::None => Ok(()),
        Cleanup::NamespaceContents => finalize_namespace(api, &res, &name).await,
        Cleanup::CustomResources if fins.iter().any(|f| f == CLEANUP_FINALIZER) => {
            finalize_custom_resources(api, &res, &cur_v, &name).await
        }
        Cleanup::CustomResources => Ok(()),
    }
}

/// Deletes every instance of the kind a deleting CRD defines, then removes the CRD's cleanup
/// finalizer (apiextensions' finalizer controller).
async fn finalize_custom_resources(
    api: &Api,
    res: &Resource,
    crd: &Value,
    name: &str,
) -> StepResult {
    let group = crd.pointer("/spec/group").and_then(Value::as_str).unwrap_or("");
    let plural = crd.pointer("/spec/names/plural").and_then(Value::as_str).unwrap_or("");
    let storage = crate::registry::storage_key(group, plural);
    let keys: Vec<ObjKey> = {
        let st = api.store.read();
        st.list(&storage, None, None).map(|((ns, n), _)| ObjKey::new(&storage, ns, n)).collect()
    };
    for k in &keys {
        delete_key(api, k).await?;
    }
    let remaining = api.store.read().list(&storage, None, None).count();
    if remaining == 0 {
        remove_finalizer(api, res, "", name, CLEANUP_FINALIZER).await?;
    }
    Ok(())
}

/// Deletes everything in a terminating namespace, then clears `spec.finalizers` so the namespace
/// itself goes (upstream's namespace controller and its `finalize` subresource).
async fn finalize_namespace(api: &Api, res: &Resource, name: &str) -> StepResult {
    let mut remaining = 0;
    for r in api.registry.storage_resources() {
        if !r.namespaced {
            continue;
        }
        let items = api.list(&r, Some(name), &ListOptions::default())?.items;
        remaining += items.len();
        for s in items {
            if s.deleting() {
                continue;
            }
            let ns = s.field("metadata.namespace").unwrap_or_default();
            let n = s.field("metadata.name").unwrap_or_default();
            // Upstream's namespace controller deletes the contents through the API.
            let opts = DeleteOptions {
                user: Some(controller_user("namespace-controller")),
                ..Default::default()
            };
            match api.delete(&r, ns, n, &opts).await {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    if remaining > 0 {
        // The Deleted events of the contents re-queue this namespace.
        return Ok(());
    }
    let r = api
        .update_with(res, "", name, None, &WriteOptions::default(), |cur| {
            let mut new = cur.clone();
            new["spec"]["finalizers"] = json!([]);
            Ok(new)
        })
        .await;
    gone_is_done(r)
}

/// The identity of an in-process controller whose deletes upstream's controller-manager makes
/// through the API as the controller's service account (`--use-service-account-credentials`),
/// so admission webhooks and policies see them as that user's DELETE requests.
fn controller_user(name: &str) -> std::sync::Arc<crate::auth::UserInfo> {
    let mut u = crate::admission::authz::service_account_user("kube-system", name);
    u.groups.push("system:authenticated".to_owned());
    std::sync::Arc::new(u)
}

/// Deletes of dependents are the garbage collector's DELETE requests upstream
/// (`attemptToDeleteItem`), admitted like any client's.
fn gc_delete() -> DeleteOptions {
    DeleteOptions { user: Some(controller_user("generic-garbage-collector")), ..Default::default() }
}

async fn delete_key(api: &Api, key: &ObjKey) -> StepResult {
    let Some(res) = resource_for(api, &key.resource) else { return Ok(()) };
    gone_is_done(api.delete(&res, &key.namespace, &key.name, &gc_delete()).await)
}

async fn drop_owner_ref(api: &Api, key: &ObjKey, owner_uid: &str) -> StepResult {
    let Some(res) = resource_for(api, &key.resource) else { return Ok(()) };
    let r = api
        .update_with(&res, &key.namespace, &key.name, None, &WriteOptions::default(), |cur| {
            let mut new = cur.clone();
            if let Some(refs) =
                new.pointer_mut("/metadata/ownerReferences").and_then(Value::as_array_mut)
            {
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid));
            }
            Ok(new)
        })
        .await;
    gone_is_done(r)
}

/// Whether the owner an ownerReference names is in the store: the kind resolved through the
/// registry, looked up by name in the dependent's namespace (cluster-scoped owners without one),
/// and its uid equal to the reference's. Upstream's `attemptToDeleteItem` asks the API the same
/// way (`isDangling`) before it deletes, instead of trusting its graph. A kind the server does
/// not serve counts as present: upstream cannot resolve it either and retries rather than
/// deleting.
fn owner_present(api: &Api, dependent: &ObjKey, owner: &Value) -> bool {
    let s = |f: &str| owner.get(f).and_then(Value::as_str).unwrap_or("");
    let (group, version) = match s("apiVersion").split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", s("apiVersion")),
    };
    let Some(res) = api.registry.for_kind(group, version, s("kind")) else { return true };
    let ns = if res.namespaced { dependent.namespace.as_str() } else { "" };
    api.store.get(&ObjKey::new(&res.storage, ns, s("name"))).is_some_and(|o| o.uid() == s("uid"))
}

/// A dependent with an owner that no longer exists: deleted when no owner is left, otherwise
/// the dangling reference is dropped (upstream's attemptToDeleteItem). The index only says
/// which dependents to look at; whether an owner is gone is decided by the store.
async fn orphaned(api: &Api, key: &ObjKey) -> StepResult {
    let Some(cur) = api.store.get(key) else { return Ok(()) };
    let refs: Vec<Value> = cur
        .value()
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let (alive, dead): (Vec<_>, Vec<_>) = refs.iter().partition(|r| owner_present(api, key, r));
    if dead.is_empty() {
        return Ok(());
    }
    if alive.is_empty() {
        // The uid precondition keeps a dependent recreated under the same name meanwhile.
        let Some(res) = resource_for(api, &key.resource) else { return Ok(()) };
        let opts = DeleteOptions { precondition_uid: Some(cur.uid().to_owned()), ..gc_delete() };
        return match api.delete(&res, &key.namespace, &key.name, &opts).await {
            Ok(_) => Ok(()),
            Err(e) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e),
        };
    }
    for d in dead {
        if let Some(uid) = d.get("uid").and_then(Value::as_str) {
            drop_owner_ref(api, key, uid).await?;
        }
    }
    Ok(())
}
