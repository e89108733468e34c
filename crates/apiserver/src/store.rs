//! The durable object store: SQLite on disk, every object in memory, and the watch history.
//!
//! # Design
//! - One **writer thread** owns the SQLite connection. Requests hand it [`Op`]s and wait; the
//!   writer drains everything queued, checks each op against the current state (plus the ops
//!   before it in the same batch), writes the whole batch in **one transaction** (group commit),
//!   and only after `COMMIT` returns applies the batch to memory, appends it to the watch history
//!   and answers the callers. A caller that got an answer therefore holds a durable write
//!   (`synchronous=FULL` in WAL mode: the WAL is fsynced at every commit), and a failed commit
//!   changes nothing anywhere.
//! - **resourceVersion** is one global counter, like etcd's revision. Every op gets the next
//!   number; the counter itself is written in the same transaction, so it never goes back after a
//!   restart even when the newest object was deleted.
//! - Readers (get, list, watch start) take a read lock on [`State`]; the writer takes the write
//!   lock only to apply a committed batch and publish its events, so a reader always sees a
//!   consistent state at one resourceVersion, and a watch registered under the lock sees exactly
//!   the events after it.
//! - The history of recent events lives in memory only. A watch from a version older than the
//!   history (or from before the last restart) gets `410 Gone`, and clients re-list, as they do
//!   after etcd compaction.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{broadcast, oneshot};

/// How many events the watch history keeps before the oldest are dropped.
pub const DEFAULT_HISTORY: usize = 100_000;

/// How many published events a subscriber (a watch, the garbage collector) may fall behind
/// before its receiver lags.
pub const DEFAULT_EVENT_BUFFER: usize = 16 * 1024;
/// The most ops one transaction carries; more wait for the next commit.
const MAX_BATCH: usize = 1024;

/// Store failures. Conflicts and missing objects are ordinary answers the API maps to `Status`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {0} already exists")]
    AlreadyExists(ObjKey),
    #[error("object {0} not found")]
    NotFound(ObjKey),
    #[error("object {key} was modified: expected resourceVersion {expected}, have {actual}")]
    Conflict { key: ObjKey, expected: u64, actual: u64 },
    #[error("object {key} has uid {actual}, not {expected}")]
    UidMismatch { key: ObjKey, expected: String, actual: String },
    #[error("sqlite store at {path}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("encoding object {0}")]
    Encode(ObjKey, #[source] serde_json::Error),
    #[error("decoding stored object {0}")]
    Decode(ObjKey, #[source] serde_json::Error),
    #[error("the store writer has stopped")]
    Stopped,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Identifies one object: its resource (`"apps/deployments"`, `"/pods"` for the core group), its
/// namespace (empty for cluster-scoped objects) and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjKey {
    pub resource: Arc<str>,
    pub namespace: String,
    pub name: String,
}

impl ObjKey {
    pub fn new(resource: &Arc<str>, namespace: &str, name: &str) -> Self {
        Self { resource: resource.clone(), namespace: namespace.to_owned(), name: name.to_owned() }
    }
}

impl std::fmt::Display for ObjKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.resource, self.name)
        } else {
            write!(f, "{}/{}/{}", self.resource, self.namespace, self.name)
        }
    }
}

/// One stored object: its parsed value (with `metadata.resourceVersion` set) and its JSON bytes,
/// kept side by side so lists write bytes without encoding and selectors read values without
/// decoding.
#[derive(Debug)]
pub struct Stored {
    pub rv: u64,
    pub value: Value,
    pub json: Bytes,
}

impl Stored {
    pub fn uid(&self) -> &str {
        self.value.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A committed change. `obj` is the new object (for deletions: the last state, with the
/// deletion's resourceVersion, as the Kubernetes API reports it).
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub kind: EventType,
    pub key: ObjKey,
    pub obj: Arc<Stored>,
    pub prev: Option<Arc<Stored>>,
    /// The watch line of this event, per watch event type (ADDED, MODIFIED, DELETED), encoded
    /// by the first watcher that sends it and shared by every other.
    lines: [OnceLock<Bytes>; 3],
}

impl Event {
    fn new(
        rv: u64,
        kind: EventType,
        key: &ObjKey,
        obj: Arc<Stored>,
        prev: Option<Arc<Stored>>,
    ) -> Self {
        Self { rv, kind, key: key.clone(), obj, prev, lines: Default::default() }
    }

    /// `{"type":TY,"object":OBJECT}` and a newline, with the stored JSON as the object: the
    /// same bytes for every watcher that receives the event as `ty` (serialised once).
    pub fn watch_line(&self, ty: &'static str) -> Bytes {
        let slot = match ty {
            "ADDED" => &self.lines[0],
            "MODIFIED" => &self.lines[1],
            _ => &self.lines[2],
        };
        slot.get_or_init(|| watch_line(ty, &self.obj.json)).clone()
    }
}

/// Frames one watch event around an object's JSON.
pub fn watch_line(ty: &str, json: &[u8]) -> Bytes {
    let mut line = Vec::with_capacity(json.len() + ty.len() + 24);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(ty.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(json);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

/// A write. Preconditions are checked by the writer, atomically with the write.
#[derive(Debug)]
pub enum Op {
    /// Fails with `AlreadyExists` when the key is taken.
    Create { key: ObjKey, value: Value },
    /// Fails with `NotFound`, or `Conflict` when `expected_rv` is given and is not current.
    Update { key: ObjKey, value: Value, expected_rv: Option<u64> },
    /// Fails with `NotFound`, `Conflict` or `UidMismatch` when a precondition does not hold.
    Delete { key: ObjKey, expected_rv: Option<u64>, expected_uid: Option<String> },
}

impl Op {
    fn key(&self) -> &ObjKey {
        match self {
            Op::Create { key, .. } | Op::Update { key, .. } | Op::Delete { key, .. } => key,
        }
    }
}

/// Objects of one resource by (namespace, name).
type Objects = BTreeMap<(String, String), Arc<Stored>>;

/// The in-memory state readers see.
pub struct State {
    objects: HashMap<Arc<str>, Objects>,
    rv: u64,
    history: VecDeque<Arc<Event>>,
    /// Every event with a version above this is in `history`.
    history_floor: u64,
    history_cap: usize,
    /// Every event (the garbage collector reads this).
    events: broadcast::Sender<Arc<Event>>,
    /// The events of one resource: a watcher is woken only by events of the resource it
    /// watches, not by every Lease renewal and Event of the cluster.
    by_resource: Mutex<HashMap<Arc<str>, broadcast::Sender<Arc<Event>>>>,
    event_buffer: usize,
}

impl State {
    /// The resourceVersion of the newest committed write.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, key: &ObjKey) -> Option<Arc<Stored>> {
        self.objects.get(&key.resource)?.get(&(key.namespace.clone(), key.name.clone())).cloned()
    }

    /// Objects of one resource in key order (namespace, name), optionally in one namespace,
    /// starting after `after` (for pagination).
    pub fn list<'a>(
        &'a self,
        resource: &str,
        namespace: Option<&'a str>,
        after: Option<&(String, String)>,
    ) -> impl Iterator<Item = (&'a (String, String), &'a Arc<Stored>)> + 'a {
        use std::ops::Bound;
        let map = self.objects.get(resource);
        let lower = match (after, namespace) {
            (Some(a), _) => Bound::Excluded(a.clone()),
            (None, Some(ns)) => Bound::Included((ns.to_owned(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        map.into_iter()
            .flat_map(move |m| m.range((lower.clone(), Bound::Unbounded)))
            .take_while(move |((ns, _), _)| namespace.is_none_or(|want| ns == want))
    }

    /// Resources that currently hold at least one object.
    pub fn resources(&self) -> impl Iterator<Item = &Arc<str>> {
        self.objects.iter().filter(|(_, m)| !m.is_empty()).map(|(r, _)| r)
    }

    /// Events after `rv`, or `None` when some of them are no longer kept (the caller answers
    /// 410 Gone).
    pub fn events_since(&self, rv: u64) -> Option<Vec<Arc<Event>>> {
        if rv < self.history_floor {
            return None;
        }
        let start = self.history.partition_point(|e| e.rv <= rv);
        Some(self.history.range(start..).cloned().collect())
    }

    /// A receiver of every event committed after this call (hold the read lock while calling
    /// [`State::events_since`] and this, so nothing falls between them).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// A receiver of the events of one resource committed after this call (the same rules as
    /// [`State::subscribe`]). A receiver more than the event buffer behind lags.
    pub fn subscribe_resource(&self, resource: &Arc<str>) -> broadcast::Receiver<Arc<Event>> {
        let mut m = self.by_resource.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        m.entry(resource.clone())
            .or_insert_with(|| broadcast::channel(self.event_buffer).0)
            .subscribe()
    }

    fn apply(&mut self, ev: Event) {
        let ev = Arc::new(ev);
        let map = self.objects.entry(ev.key.resource.clone()).or_default();
        let k = (ev.key.namespace.clone(), ev.key.name.clone());
        match ev.kind {
            EventType::Deleted => {
                map.remove(&k);
            }
            EventType::Added | EventType::Modified => {
                map.insert(k, ev.obj.clone());
            }
        }
        self.rv = ev.rv;
        self.history.push_back(ev.clone());
        while self.history.len() > self.history_cap {
            if let Some(old) = self.history.pop_front() {
                self.history_floor = old.rv;
            }
        }
        // No receivers is fine: nobody watches.
        {
            let m = self.by_resource.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(tx) = m.get(&ev.key.resource) {
                let _ = tx.send(ev.clone());
            }
        }
        let _ = self.events.send(ev);
    }
}

struct Request {
    ops: Vec<Op>,
    reply: oneshot::Sender<Vec<Result<Arc<Stored>>>>,
}

/// The store handle: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Store {
    state: Arc<RwLock<State>>,
    tx: std::sync::mpsc::SyncSender<Request>,
}

impl Store {
    /// Opens (or creates) the database at `path`, loads every object into memory and starts the
    /// writer thread.
    ///
    /// # Errors
    /// The database cannot be opened, its schema created, or a stored object decoded.
    pub fn open(path: &Path, history_cap: usize) -> Result<Self> {
        Self::open_with(path, history_cap, DEFAULT_EVENT_BUFFER)
    }

    /// [`Store::open`] with the number of events a subscriber may fall behind before it lags
    /// (its receiver then reports how many it missed and must resynchronise).
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_with(path: &Path, history_cap: usize, event_buffer: usize) -> Result<Self> {
        let sqlite = |source| StoreError::Sqlite { path: path.to_owned(), source };
        let conn = rusqlite::Connection::open(path).map_err(sqlite)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS objects (
                 resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
                 rv INTEGER NOT NULL, data BLOB NOT NULL,
                 PRIMARY KEY (resource, namespace, name)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT OR IGNORE INTO meta (key, value) VALUES ('rv', 0);",
        )
        .map_err(sqlite)?;
        let rv: u64 = conn
            .query_row("SELECT value FROM meta WHERE key = 'rv'", [], |r| r.get::<_, i64>(0))
            .map_err(sqlite)?
            .try_into()
            .unwrap_or(0);
        let mut objects: HashMap<Arc<str>, Objects> = HashMap::new();
        {
            let mut stmt = conn
                .prepare("SELECT resource, namespace, name, rv, data FROM objects")
                .map_err(sqlite)?;
            let mut rows = stmt.query([]).map_err(sqlite)?;
            while let Some(row) = rows.next().map_err(sqlite)? {
                let resource: String = row.get(0).map_err(sqlite)?;
                let namespace: String = row.get(1).map_err(sqlite)?;
                let name: String = row.get(2).map_err(sqlite)?;
                let orv: i64 = row.get(3).map_err(sqlite)?;
                let data: Vec<u8> = row.get(4).map_err(sqlite)?;
                let resource: Arc<str> = match objects.get_key_value(resource.as_str()) {
                    Some((k, _)) => k.clone(),
                    None => resource.into(),
                };
                let key = ObjKey { resource: resource.clone(), namespace, name };
                let value: Value = serde_json::from_slice(&data)
                    .map_err(|e| StoreError::Decode(key.clone(), e))?;
                let stored =
                    Arc::new(Stored { rv: orv.try_into().unwrap_or(0), value, json: data.into() });
                objects.entry(resource).or_default().insert((key.namespace, key.name), stored);
            }
        }
        let (events, _) = broadcast::channel(event_buffer.max(1));
        let state = Arc::new(RwLock::new(State {
            objects,
            rv,
            history: VecDeque::new(),
            history_floor: rv,
            history_cap: history_cap.max(1),
            events,
            by_resource: Mutex::default(),
            event_buffer: event_buffer.max(1),
        }));
        let (tx, rx) = std::sync::mpsc::sync_channel::<Request>(8192);
        let writer_state = state.clone();
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("kinetic-store-writer".into())
            .spawn(move || writer_loop(conn, path, writer_state, rx))
            .map_err(|_| StoreError::Stopped)?;
        Ok(Self { state, tx })
    }

    /// A consistent view of every object at one resourceVersion. Hold it briefly.
    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        // A writer that panicked mid-apply would poison the lock; the state it left is still the
        // last committed one, so reading on is right.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &ObjKey) -> Option<Arc<Stored>> {
        self.read().get(key)
    }

    /// Applies one op durably and returns the stored result.
    pub async fn write(&self, op: Op) -> Result<Arc<Stored>> {
        let mut out = self.write_many(vec![op]).await?;
        out.pop().unwrap_or(Err(StoreError::Stopped))
    }

    /// Applies several ops in one transaction; each succeeds or fails on its own preconditions.
    pub async fn write_many(&self, ops: Vec<Op>) -> Result<Vec<Result<Arc<Stored>>>> {
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.clone();
        let req = Request { ops, reply };
        // The queue is bounded; a full queue blocks this task's thread briefly, so hand the
        // send to the blocking pool instead of stalling the runtime.
        match tx.try_send(req) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(req)) => {
                tokio::task::spawn_blocking(move || tx.send(req))
                    .await
                    .map_err(|_| StoreError::Stopped)?
                    .map_err(|_| StoreError::Stopped)?;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Err(StoreError::Stopped),
        }
        rx.await.map_err(|_| StoreError::Stopped)
    }
}

fn writer_loop(
    mut conn: rusqlite::Connection,
    path: PathBuf,
    state: Arc<RwLock<State>>,
    rx: std::sync::mpsc::Receiver<Request>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        let mut n = batch[0].ops.len();
        while n < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => {
                    n += r.ops.len();
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
        commit_batch(&mut conn, &path, &state, batch);
    }
    tracing::debug!("store writer stopped");
}

/// Checks, writes and publishes one batch. See the module docs for the ordering guarantees.
fn commit_batch(
    conn: &mut rusqlite::Connection,
    path: &Path,
    state: &Arc<RwLock<State>>,
    batch: Vec<Request>,
) {
    let mut rv = state.read().unwrap_or_else(|e| e.into_inner()).rv;
    // Objects changed earlier in this batch, so later ops check against them.
    let mut overlay: HashMap<ObjKey, Option<Arc<Stored>>> = HashMap::new();
    let mut results: Vec<Vec<Result<Arc<Stored>>>> = Vec::with_capacity(batch.len());
    let mut events: Vec<Event> = Vec::new();
    {
        let st = state.read().unwrap_or_else(|e| e.into_inner());
        for req in &batch {
            let mut res = Vec::with_capacity(req.ops.len());
            for op in &req.ops {
                let key = op.key();
                let current = match overlay.get(key) {
                    Some(v) => v.clone(),
                    None => st.get(key),
                };
                res.push(check_and_prepare(op, current, &mut rv).map(|ev| {
                    overlay.insert(
                        ev.key.clone(),
                        (ev.kind != EventType::Deleted).then(|| ev.obj.clone()),
                    );
                    let obj = ev.obj.clone();
                    events.push(ev);
                    obj
                }));
            }
            results.push(res);
        }
    }
    if !events.is_empty()
        && let Err(source) = persist(conn, &events, rv)
    {
        tracing::error!(error = %source, "store commit failed; the batch is rejected");
        for req in batch {
            let n = req.ops.len();
            let errs = (0..n)
                .map(|_| {
                    Err(StoreError::Sqlite {
                        path: path.to_owned(),
                        source: rusqlite::Error::SqliteFailure(
                            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                            Some(source.to_string()),
                        ),
                    })
                })
                .collect();
            let _ = req.reply.send(errs);
        }
        return;
    }
    {
        let mut st = state.write().unwrap_or_else(|e| e.into_inner());
        for ev in events {
            st.apply(ev);
        }
    }
    for (req, res) in batch.into_iter().zip(results) {
        // The caller may have gone away (client disconnected); the write stands regardless.
        let _ = req.reply.send(res);
    }
}

/// The current object, checked against the caller's expected version.
fn existing_at(
    key: &ObjKey,
    current: Option<Arc<Stored>>,
    expected_rv: Option<u64>,
) -> Result<Arc<Stored>> {
    let cur = current.ok_or_else(|| StoreError::NotFound(key.clone()))?;
    match expected_rv {
        Some(exp) if exp != cur.rv => {
            Err(StoreError::Conflict { key: key.clone(), expected: exp, actual: cur.rv })
        }
        _ => Ok(cur),
    }
}

fn check_and_prepare(op: &Op, current: Option<Arc<Stored>>, rv: &mut u64) -> Result<Event> {
    match op {
        Op::Create { key, value } => {
            if current.is_some() {
                return Err(StoreError::AlreadyExists(key.clone()));
            }
            *rv += 1;
            let obj = encode(key, value.clone(), *rv)?;
            Ok(Event::new(*rv, EventType::Added, key, obj, None))
        }
        Op::Update { key, value, expected_rv } => {
            let cur = existing_at(key, current, *expected_rv)?;
            *rv += 1;
            let obj = encode(key, value.clone(), *rv)?;
            Ok(Event::new(*rv, EventType::Modified, key, obj, Some(cur)))
        }
        Op::Delete { key, expected_rv, expected_uid } => {
            let cur = existing_at(key, current, *expected_rv)?;
            if let Some(uid) = expected_uid
                && uid != cur.uid()
            {
                return Err(StoreError::UidMismatch {
                    key: key.clone(),
                    expected: uid.clone(),
                    actual: cur.uid().to_owned(),
                });
            }
            *rv += 1;
            // Watchers see the deleted object at the deletion's version, as upstream reports.
            let obj = encode(key, cur.value.clone(), *rv)?;
            Ok(Event::new(*rv, EventType::Deleted, key, obj, Some(cur)))
        }
    }
}

fn encode(key: &ObjKey, mut value: Value, rv: u64) -> Result<Arc<Stored>> {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
    let json = serde_json::to_vec(&value).map_err(|e| StoreError::Encode(key.clone(), e))?;
    Ok(Arc::new(Stored { rv, value, json: json.into() }))
}

fn persist(conn: &mut rusqlite::Connection, events: &[Event], rv: u64) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut put = tx.prepare_cached(
            "INSERT OR REPLACE INTO objects (resource, namespace, name, rv, data)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut del = tx.prepare_cached(
            "DELETE FROM objects WHERE resource = ?1 AND namespace = ?2 AND name = ?3",
        )?;
        for ev in events {
            let k = &ev.key;
            match ev.kind {
                EventType::Deleted => {
                    del.execute((&*k.resource, &k.namespace, &k.name))?;
                }
                EventType::Added | EventType::Modified => {
                    put.execute((
                        &*k.resource,
                        &k.namespace,
                        &k.name,
                        i64::try_from(ev.rv).unwrap_or(i64::MAX),
                        &ev.obj.json[..],
                    ))?;
                }
            }
        }
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'rv'",
            [i64::try_from(rv).unwrap_or(i64::MAX)],
        )?;
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(name: &str) -> ObjKey {
        ObjKey::new(&Arc::from("/configmaps"), "default", name)
    }

    fn cm(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default", "uid": name}})
    }

    #[tokio::test]
    async fn writes_survive_reopen_and_versions_keep_increasing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let store = Store::open(&path, 10).unwrap();
            store.write(Op::Create { key: key("a"), value: cm("a") }).await.unwrap();
            store.write(Op::Create { key: key("b"), value: cm("b") }).await.unwrap();
            let d = Op::Delete { key: key("b"), expected_rv: None, expected_uid: None };
            store.write(d).await.unwrap();
            assert_eq!(store.read().rv(), 3);
        }
        let store = Store::open(&path, 10).unwrap();
        assert_eq!(store.read().rv(), 3, "the counter must not go back after deleting the newest");
        let a = store.get(&key("a")).unwrap();
        assert_eq!(a.rv, 1);
        assert_eq!(a.value["metadata"]["resourceVersion"], "1");
        assert!(store.get(&key("b")).is_none());
        let c = store.write(Op::Create { key: key("c"), value: cm("c") }).await.unwrap();
        assert_eq!(c.rv, 4);
    }

    #[tokio::test]
    async fn stale_update_conflicts_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), 10).unwrap();
        let a = store.write(Op::Create { key: key("a"), value: cm("a") }).await.unwrap();
        let up = |rv| Op::Update { key: key("a"), value: cm("a"), expected_rv: Some(rv) };
        store.write(up(a.rv)).await.unwrap();
        let err = store.write(up(a.rv)).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict { expected: 1, actual: 2, .. }), "{err}");
        assert_eq!(store.read().rv(), 2);
    }

    #[tokio::test]
    async fn batch_ops_see_each_other_and_history_is_gapless() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), 3).unwrap();
        let res = store
            .write_many(vec![
                Op::Create { key: key("a"), value: cm("a") },
                Op::Create { key: key("a"), value: cm("a") },
                Op::Update { key: key("a"), value: cm("a"), expected_rv: Some(1) },
            ])
            .await
            .unwrap();
        assert!(res[0].is_ok());
        assert!(matches!(res[1], Err(StoreError::AlreadyExists(_))));
        assert_eq!(res[2].as_ref().unwrap().rv, 2);
        let evs = store.read().events_since(0).unwrap();
        assert_eq!(evs.iter().map(|e| e.rv).collect::<Vec<_>>(), vec![1, 2]);
        for n in ["b", "c", "d"] {
            store.write(Op::Create { key: key(n), value: cm(n) }).await.unwrap();
        }
        assert!(store.read().events_since(1).is_none(), "history of 3 no longer has rv 2");
        let evs = store.read().events_since(2).unwrap();
        assert_eq!(evs.iter().map(|e| e.rv).collect::<Vec<_>>(), vec![3, 4, 5]);
    }

    #[tokio::test]
    async fn a_resource_subscriber_is_woken_only_by_its_resource_and_lines_are_encoded_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), 10).unwrap();
        let cms: Arc<str> = Arc::from("/configmaps");
        let mut rx = store.read().subscribe_resource(&cms);
        let lease = ObjKey::new(&Arc::from("coordination.k8s.io/leases"), "default", "l");
        store.write(Op::Create { key: lease, value: cm("l") }).await.unwrap();
        store.write(Op::Create { key: key("a"), value: cm("a") }).await.unwrap();
        let ev = rx.try_recv().unwrap();
        assert_eq!(ev.key.name, "a", "the Lease write is not this subscriber's");
        assert!(rx.try_recv().is_err());
        let (one, two) = (ev.watch_line("ADDED"), ev.watch_line("ADDED"));
        assert_eq!(one.as_ptr(), two.as_ptr(), "one encoding shared by every watcher");
        let line: Value = serde_json::from_slice(&one).unwrap();
        assert_eq!(
            (line["type"].as_str(), line["object"]["metadata"]["name"].as_str()),
            (Some("ADDED"), Some("a"))
        );
        assert!(one.ends_with(b"\n"));
    }
}
