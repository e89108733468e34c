//! The resource quota controller (upstream `pkg/controller/resourcequota`): keeps every quota's
//! `status.hard` equal to `spec.hard` and its `status.used` equal to the usage of the objects
//! in its namespace, so usage falls when objects go away or pods finish (admission only ever
//! adds to it) and `kubectl describe quota` shows upstream's figures.
//!
//! It follows the store's events: a change in a namespace that has quotas (or to a quota)
//! marks the namespace; marked namespaces are recalculated from one store snapshot, and a
//! quota whose status differs is written with the snapshot's quota version as precondition,
//! so a charge admission committed in between is never overwritten (the write fails, the
//! namespace is marked again). Every minute all quota namespaces are recalculated, as upstream's
//! resync does (a pod stuck terminating past its grace period stops being charged then).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::admit::scopes_of;
use super::resources::{ResourceList, add, equals, list_of, mask, to_json};
use crate::registry::{Registry, storage_key};
use crate::rest::Api;
use crate::store::{ObjKey, Op, State, StoreError};

/// How often every quota is recalculated regardless of events.
const RESYNC: Duration = Duration::from_secs(60);

/// Runs until the store closes.
pub async fn run(api: Arc<Api>) {
    let quota_key = storage_key("", "resourcequotas");
    let mut rx = api.store.read().subscribe();
    let mut with_quotas = quota_namespaces(&api.store.read(), &quota_key);
    let mut dirty: BTreeSet<String> = with_quotas.iter().cloned().collect();
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        for ns in std::mem::take(&mut dirty) {
            if let Err(e) = sync_namespace(&api, &ns).await {
                tracing::debug!(namespace = %ns, error = %e, "quota status write failed; retrying");
                dirty.insert(ns);
            }
        }
        let first = tokio::select! {
            r = rx.recv() => r,
            _ = resync.tick() => {
                dirty.extend(with_quotas.iter().cloned());
                continue;
            }
        };
        let mut next = Some(first);
        while let Some(r) = next.take() {
            match r {
                Ok(ev) => {
                    let ns = &ev.key.namespace;
                    if ns.is_empty() {
                    } else if ev.key.resource == quota_key {
                        let any =
                            api.store.read().list(&quota_key, Some(ns), None).next().is_some();
                        if any {
                            with_quotas.insert(ns.clone());
                            dirty.insert(ns.clone());
                        } else {
                            with_quotas.remove(ns);
                        }
                    } else if with_quotas.contains(ns) {
                        dirty.insert(ns.clone());
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    rx = api.store.read().subscribe();
                    with_quotas = quota_namespaces(&api.store.read(), &quota_key);
                    dirty.extend(with_quotas.iter().cloned());
                }
                Err(RecvError::Closed) => return,
            }
            // Take what else is queued, so a burst of events costs one recalculation.
            next = match rx.try_recv() {
                Ok(ev) => Some(Ok(ev)),
                Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
                Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
                Err(TryRecvError::Empty) => None,
            };
        }
    }
}

fn quota_namespaces(st: &State, quota_key: &str) -> HashSet<String> {
    st.list(quota_key, None, None).map(|((ns, _), _)| ns.clone()).collect()
}

/// Recalculates the quotas of `ns` and writes those whose status changed.
///
/// # Errors
/// A write failed (a concurrent change of the quota: the caller tries again).
async fn sync_namespace(api: &Api, ns: &str) -> Result<(), StoreError> {
    let quota_key = storage_key("", "resourcequotas");
    let now = jiff::Timestamp::now();
    let writes: Vec<Op> = {
        let st = api.store.read();
        st.list(&quota_key, Some(ns), None)
            .filter_map(|((_, name), stored)| {
                let quota = stored.value();
                let status = desired_status(&st, &api.registry, ns, &quota, now)?;
                let mut value = quota;
                value.as_object_mut()?.insert("status".into(), status);
                Some(Op::Update {
                    key: ObjKey::new(&quota_key, ns, name),
                    value,
                    expected_rv: Some(stored.rv),
                })
            })
            .collect()
    };
    for op in writes {
        match api.store.write(op).await {
            Ok(_) | Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The quota's status as it should be, or `None` when it already is (upstream
/// `syncResourceQuota`: usage of the resources the quota names, past observations kept for
/// names no evaluator charges).
fn desired_status(
    st: &State,
    registry: &Registry,
    ns: &str,
    quota: &Value,
    now: jiff::Timestamp,
) -> Option<Value> {
    let hard = list_of(quota.pointer("/spec/hard"));
    let hard_names: Vec<String> = hard.keys().cloned().collect();
    let old_hard = quota.pointer("/status/hard");
    let old_used = quota.pointer("/status/used");
    let mut used = list_of(old_used);
    used.extend(calculate_usage(st, registry, ns, &hard_names, &scopes_of(quota), now));
    let used = mask(&used, &hard_names);
    let same = old_hard.is_some()
        && old_used.is_some()
        && equals(&list_of(old_hard), &hard)
        && equals(&list_of(old_used), &used);
    (!same).then(|| serde_json::json!({"hard": to_json(&hard), "used": to_json(&used)}))
}

/// Upstream `quota.CalculateUsage`: for every served kind whose evaluator charges a resource the
/// quota names, the sum over the namespace's objects in the quota's scopes (zero when none).
pub fn calculate_usage(
    st: &State,
    registry: &Registry,
    ns: &str,
    hard: &[String],
    scopes: &[super::evaluate::Scope],
    now: jiff::Timestamp,
) -> ResourceList {
    let mut out = ResourceList::new();
    for res in registry.storage_resources().into_iter().filter(|r| r.namespaced) {
        let ev = res.strategy.quota();
        let count = super::count_name(&res);
        let matched = ev.matching_resources(&count, hard);
        if matched.is_empty() {
            continue;
        }
        let mut total: ResourceList =
            matched.iter().map(|m| (m.clone(), super::amount::Amount::zero())).collect();
        for (_, s) in st.list(&res.storage, Some(ns), None) {
            let v = s.value();
            if scopes.iter().all(|sc| ev.matches_scope(sc, &v)) {
                total = add(&total, &mask(&ev.usage(&count, &v, now), &matched));
            }
        }
        out.extend(total);
    }
    out
}
