//! Watch semantics, next to [`crate::rest`] and independent of HTTP: where a watch starts
//! (initial events, or the history after a resourceVersion, or 410 Expired when that history is
//! gone), which store events a watcher receives and as what (`ADDED`, `MODIFIED`, `DELETED`,
//! upstream's rules for objects entering and leaving a selection), bookmarks, the end of the
//! initial events (watch-list, KEP-3157) and the timeout. [`crate::http`] only encodes the
//! [`Item`]s it gets.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::registry::Resource;
use crate::rest::{Api, ListOptions};
use crate::store::{Event, EventType, Stored};

/// How a watch starts and ends (the query parameters of a watch request, decoded).
#[derive(Debug, Clone)]
pub struct WatchParams {
    /// `resourceVersion`: `None` for "" and "0" (start from the current state).
    pub resource_version: Option<u64>,
    /// `sendInitialEvents`.
    pub send_initial_events: Option<bool>,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
    /// `timeoutSeconds`, or upstream's random 30–60 minutes.
    pub timeout: Duration,
}

/// What a watcher receives, in order.
#[derive(Debug)]
pub enum Item {
    /// An object of the initial events (`ADDED`).
    Object(&'static str, Arc<Stored>),
    /// A store event, with the watch event type this watcher receives it as; its line is
    /// encoded once for all watchers ([`Event::watch_line`]).
    Event(&'static str, Arc<Event>),
    /// A bookmark at a resourceVersion.
    Bookmark(u64),
    /// The bookmark that ends the initial events (annotated `k8s.io/initial-events-end`).
    InitialEventsEnd(u64),
    /// The watch cannot go on (410 Expired); the stream ends after it.
    Error(ApiError),
}

/// How long bookmarks are apart.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

/// Starts a watch of `res` (in `ns`, or every namespace) and returns what it sends; the watch
/// ends when the receiver is dropped, at the timeout, or when it falls more than the event
/// buffer behind the events of its resource: a slow watcher is cut off rather than slowing the
/// writers or the other watchers (upstream's cacher closes an unresponsive watcher too), and
/// its client resumes from the last resourceVersion it saw. It is woken only by events of its
/// own resource.
pub fn start(
    api: Arc<Api>,
    res: Arc<Resource>,
    ns: Option<String>,
    opts: ListOptions,
    params: WatchParams,
) -> mpsc::Receiver<Item> {
    let (tx, rx) = mpsc::channel::<Item>(256);
    let send_initial = params.send_initial_events.unwrap_or(params.resource_version.is_none());
    let (initial, backlog, mut events, mut last_rv, gone) = {
        let st = api.store.read();
        let rx = st.subscribe_resource(&res.storage);
        let cur = st.rv();
        match params.resource_version {
            Some(rv) if !send_initial => match st.events_since(rv) {
                Some(evs) => (vec![], evs, rx, rv, None),
                // Upstream's watch cache names the oldest version it can still serve from.
                None => (
                    vec![],
                    vec![],
                    rx,
                    rv,
                    Some(format!("too old resource version: {rv} ({})", st.history_floor())),
                ),
            },
            _ => {
                let initial: Vec<Arc<Stored>> = st
                    .list(&res.storage, ns.as_deref(), None)
                    .filter(|(_, s)| Api::matches_stored(&opts, s))
                    .map(|(_, s)| s.clone())
                    .collect();
                (initial, vec![], rx, cur, None)
            }
        }
    };
    let storage = res.storage.clone();
    tokio::spawn(async move {
        let send = |item: Item| {
            let tx = tx.clone();
            async move { tx.send(item).await.is_ok() }
        };
        for s in initial {
            if !send(Item::Object("ADDED", s)).await {
                return;
            }
        }
        if params.send_initial_events == Some(true) && !send(Item::InitialEventsEnd(last_rv)).await
        {
            return;
        }
        if let Some(msg) = gone {
            let _ = send(Item::Error(ApiError::gone(msg))).await;
            return;
        }
        // A timeout too large to add is as good as none.
        let deadline =
            tokio::time::Instant::now().checked_add(params.timeout).unwrap_or_else(|| {
                tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
            });
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        let mut pending = backlog.into_iter();
        loop {
            let ev = match pending.next() {
                Some(ev) => ev,
                None => tokio::select! {
                    r = events.recv() => match r {
                        Ok(ev) => ev,
                        // Too slow to keep up, or the store stopped: end the stream; the client
                        // resumes from the last version it saw.
                        Err(_) => return,
                    },
                    _ = tokio::time::sleep_until(deadline) => return,
                    _ = tick.tick(), if params.bookmarks => {
                        // With nothing of its resource queued, the watcher has seen everything
                        // up to the store's version (events are published under the write
                        // lock), so the bookmark may carry it: a client resuming from it is
                        // not sent back to events of other resources.
                        let now = {
                            let st = api.store.read();
                            events.is_empty().then(|| st.rv())
                        };
                        last_rv = last_rv.max(now.unwrap_or(last_rv));
                        if !send(Item::Bookmark(last_rv)).await {
                            return;
                        }
                        continue;
                    }
                    _ = tx.closed() => return,
                },
            };
            last_rv = ev.rv;
            if ev.key.resource != storage || ns.as_deref().is_some_and(|n| n != ev.key.namespace) {
                continue;
            }
            let Some(ty) = event_type(&opts, ev.kind, ev.prev.as_deref(), &ev.obj) else {
                continue;
            };
            if !send(Item::Event(ty, ev)).await {
                return;
            }
        }
    });
    rx
}

/// The event a watcher with `opts` receives for a change from `prev` to `obj`, if any:
/// upstream reports an object that leaves the selection as `DELETED` and one that enters it as
/// `ADDED`.
pub fn event_type(
    opts: &ListOptions,
    kind: EventType,
    prev: Option<&Stored>,
    obj: &Stored,
) -> Option<&'static str> {
    let now_matches = kind != EventType::Deleted && Api::matches_stored(opts, obj);
    let was_matching = prev.is_some_and(|p| Api::matches_stored(opts, p));
    match (kind, was_matching, now_matches) {
        (EventType::Deleted, true, _) => Some("DELETED"),
        (EventType::Deleted, false, _) => None,
        (_, false, true) => Some("ADDED"),
        (_, true, true) => Some("MODIFIED"),
        (_, true, false) => Some("DELETED"),
        (_, false, false) => None,
    }
}

#[cfg(test)]
mod tests {
    use kinetic_machinery::selector::LabelSelector;
    use serde_json::json;

    use super::*;

    fn stored(app: &str) -> Stored {
        let value = json!({"metadata": {"name": "p", "labels": {"app": app}}});
        Stored::new(1, &value, serde_json::to_vec(&value).unwrap().into())
    }

    #[test]
    fn objects_entering_and_leaving_a_selection_are_added_and_deleted() {
        let opts = ListOptions {
            label_selector: LabelSelector::parse("app=a").unwrap(),
            ..Default::default()
        };
        let (a, b) = (stored("a"), stored("b"));
        let m = EventType::Modified;
        assert_eq!(event_type(&opts, EventType::Added, None, &a), Some("ADDED"));
        assert_eq!(event_type(&opts, m, Some(&b), &a), Some("ADDED"));
        assert_eq!(event_type(&opts, m, Some(&a), &a), Some("MODIFIED"));
        assert_eq!(event_type(&opts, m, Some(&a), &b), Some("DELETED"));
        assert_eq!(event_type(&opts, m, Some(&b), &b), None);
        assert_eq!(event_type(&opts, EventType::Deleted, Some(&a), &a), Some("DELETED"));
        assert_eq!(event_type(&opts, EventType::Deleted, Some(&b), &b), None);
    }
}
