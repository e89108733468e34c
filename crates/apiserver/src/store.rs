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
//! - The history of recent events is kept in memory for watches and continued lists, and
//!   **durably** in an `events` table written in the same transaction as the objects, so a
//!   client that resumes a watch from a version it saw just before a restart (`kill -9`
//!   included) gets the events since then, as it would from etcd's history. The table is
//!   compacted as etcd is: events older than the window are deleted in batches, except those
//!   still needed as the previous state of a newer event (what selectors and continued lists
//!   read). A watch from a version older than the window gets `410 Gone` and clients re-list.

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
/// The durable event log may run this far past the history window (in events, at least
/// [`MIN_TRIM_SLACK`]) before the writer compacts it, so compaction runs once per that many
/// events rather than at every commit.
const TRIM_SLACK_DIVISOR: usize = 8;
const MIN_TRIM_SLACK: u64 = 256;

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
    /// Not applied: another op of the same all-or-nothing write ([`Store::write_all`]) failed.
    #[error("object {0} not written: another write of its transaction failed")]
    Aborted(ObjKey),
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

/// One stored object: its JSON bytes (with `metadata.resourceVersion` set), which lists, gets
/// and watches write out as they are, and the few attributes read on every event or list item
/// (uid, `apiVersion`, labels, the fields selectors use most), taken out once when the object
/// is stored. The parsed tree is not kept: it cost about five times the JSON in memory (issue
/// 15's memory-per-object target is 3x), so readers that need more decode with [`Stored::value`].
#[derive(Debug)]
pub struct Stored {
    pub rv: u64,
    pub json: Bytes,
    attrs: Attrs,
}

/// A label key and its value (`None`: not a JSON string).
type Label = (Box<str>, Option<Box<str>>);

/// What [`Stored`] keeps besides the JSON: read by selectors, watch encoding and GC without
/// decoding the object.
#[derive(Debug, Default)]
struct Attrs {
    uid: Box<str>,
    api_version: Box<str>,
    /// `metadata.labels`; a value that is not a JSON string is kept as `None` (it never equals
    /// a selector value but the key exists).
    labels: Box<[Label]>,
    /// The values of [`INDEXED_FIELDS`] the object has, as a field selector compares them.
    fields: Box<[(&'static str, Box<str>)]>,
    /// The uids of `metadata.ownerReferences` (the garbage collector reads them on every event).
    owners: Box<[Box<str>]>,
    /// Whether `metadata.deletionTimestamp` is set.
    deleting: bool,
}

/// Field labels whose values are kept beside the JSON, because watchers select on them on every
/// event (node agents on `spec.nodeName`, controllers on `status.phase`, `metadata.name` for
/// single-object watches). Any other field label decodes the object.
pub const INDEXED_FIELDS: [&str; 4] =
    ["metadata.name", "metadata.namespace", "spec.nodeName", "status.phase"];

impl Attrs {
    fn of(value: &Value) -> Self {
        let meta = value.get("metadata");
        let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").into();
        let labels = meta
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .map(|l| {
                l.iter().map(|(k, v)| (k.as_str().into(), v.as_str().map(Into::into))).collect()
            })
            .unwrap_or_default();
        let fields = INDEXED_FIELDS
            .iter()
            .filter_map(|f| {
                let mut cur = value;
                for part in f.split('.') {
                    cur = cur.get(part)?;
                }
                cur.as_str().map(|v| (*f, v.into()))
            })
            .collect();
        let owners = meta
            .and_then(|m| m.get("ownerReferences"))
            .and_then(Value::as_array)
            .map(|refs| {
                refs.iter().filter_map(|r| r.get("uid")?.as_str()).map(Into::into).collect()
            })
            .unwrap_or_default();
        Attrs {
            uid: s(meta.and_then(|m| m.get("uid"))),
            api_version: s(value.get("apiVersion")),
            labels,
            fields,
            owners,
            deleting: meta.and_then(|m| m.get("deletionTimestamp")).is_some_and(|t| !t.is_null()),
        }
    }
}

impl Stored {
    /// A stored object from its value and the JSON encoding of that same value.
    pub fn new(rv: u64, value: &Value, json: Bytes) -> Self {
        Stored { rv, json, attrs: Attrs::of(value) }
    }

    /// A stored object from JSON bytes alone (loading, history).
    ///
    /// # Errors
    /// The bytes are not JSON.
    pub fn from_json(rv: u64, json: Bytes) -> serde_json::Result<Self> {
        let value: Value = serde_json::from_slice(&json)?;
        Ok(Stored::new(rv, &value, json))
    }

    /// The object, decoded from its JSON. Every call decodes: read [`Self::uid`],
    /// [`Self::api_version`], [`Self::label`] or [`Self::field`] where they suffice.
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or_else(|e| {
            // Only this module writes `json`, always from a `Value`.
            tracing::error!(error = %e, "a stored object does not decode");
            Value::Null
        })
    }

    pub fn uid(&self) -> &str {
        &self.attrs.uid
    }

    pub fn api_version(&self) -> &str {
        &self.attrs.api_version
    }

    /// The uids `metadata.ownerReferences` names, in order.
    pub fn owner_uids(&self) -> impl Iterator<Item = &str> {
        self.attrs.owners.iter().map(|o| &**o)
    }

    /// Whether the object has a `metadata.deletionTimestamp`.
    pub fn deleting(&self) -> bool {
        self.attrs.deleting
    }

    /// `metadata.labels[key]`: `None` when absent, `Some(None)` when not a string.
    pub fn label(&self, key: &str) -> Option<Option<&str>> {
        self.attrs.labels.iter().find(|(k, _)| &**k == key).map(|(_, v)| v.as_deref())
    }

    /// The value of an indexed field label (see [`INDEXED_FIELDS`]): `Some("")` when the
    /// object lacks it, `None` when the field is not indexed.
    pub fn field(&self, field: &str) -> Option<&str> {
        if !INDEXED_FIELDS.contains(&field) {
            return None;
        }
        Some(self.attrs.fields.iter().find(|(f, _)| *f == field).map_or("", |(_, v)| &**v))
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
#[derive(Debug, Clone)]
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

    /// The newest version whose events are no longer all kept: a watch from a version below
    /// it is answered `410 Gone` (upstream's `oldest-1` in "too old resource version").
    pub fn history_floor(&self) -> u64 {
        self.history_floor
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
    /// All ops apply or none does ([`Store::write_all`]).
    atomic: bool,
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
        // `events` is the durable watch history: one row per committed change, the object as
        // the event carries it and the version of the state it replaced (`prev_rv`), whose
        // JSON is in the row of that version or, when that row was compacted away before this
        // event was written, in `prev_data`. A store created before the table existed starts
        // its window at its current version.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS objects (
                 resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
                 rv INTEGER NOT NULL, data BLOB NOT NULL,
                 PRIMARY KEY (resource, namespace, name)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT OR IGNORE INTO meta (key, value) VALUES ('rv', 0);
             CREATE TABLE IF NOT EXISTS events (
                 rv INTEGER PRIMARY KEY, type INTEGER NOT NULL,
                 resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
                 prev_rv INTEGER, prev_data BLOB, data BLOB NOT NULL);
             INSERT OR IGNORE INTO meta (key, value)
                 SELECT 'history_floor', value FROM meta WHERE key = 'rv';",
        )
        .map_err(sqlite)?;
        let meta = |key: &str| {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get::<_, i64>(0))
                .map(|v| u64::try_from(v).unwrap_or(0))
                .map_err(sqlite)
        };
        let rv = meta("rv")?;
        let durable_floor = meta("history_floor")?;
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
                let stored = Stored::from_json(orv.try_into().unwrap_or(0), data.into())
                    .map_err(|e| StoreError::Decode(key.clone(), e))?;
                let stored = Arc::new(stored);
                objects.entry(resource).or_default().insert((key.namespace, key.name), stored);
            }
        }
        let history_cap = history_cap.max(1);
        let (history, history_floor) =
            load_history(&conn, path, &objects, rv, durable_floor, history_cap)?;
        let (events, _) = broadcast::channel(event_buffer.max(1));
        let state = Arc::new(RwLock::new(State {
            objects,
            rv,
            history,
            history_floor,
            history_cap,
            events,
            by_resource: Mutex::default(),
            event_buffer: event_buffer.max(1),
        }));
        let (tx, rx) = std::sync::mpsc::sync_channel::<Request>(8192);
        let writer_state = state.clone();
        let log = Log { floor: durable_floor, cap: history_cap as u64 };
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("kinetic-store-writer".into())
            .spawn(move || writer_loop(conn, path, writer_state, rx, log))
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
        self.send(ops, false).await
    }

    /// Applies several ops in one transaction, all or none: when one op's precondition fails,
    /// no op is applied and the answer is that op's index and error. The ops apply in order
    /// (a later op sees an earlier one's result); their events carry consecutive versions.
    /// Quota admission charges a quota's `status.used` and writes the object this way
    /// ([`crate::quota`]), so a charge never outlives a failed write.
    ///
    /// # Errors
    /// `(index, error)` of the first op that failed; `(0, Stopped)` when the writer is gone.
    pub async fn write_all(&self, ops: Vec<Op>) -> Result<Vec<Arc<Stored>>, (usize, StoreError)> {
        let results = self.send(ops, true).await.map_err(|e| (0, e))?;
        let mut out = Vec::with_capacity(results.len());
        let mut first_err = None;
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(s) => out.push(s),
                Err(StoreError::Aborted(_)) => {}
                Err(e) => {
                    first_err.get_or_insert((i, e));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    async fn send(&self, ops: Vec<Op>, atomic: bool) -> Result<Vec<Result<Arc<Stored>>>> {
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.clone();
        let req = Request { ops, atomic, reply };
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
    mut log: Log,
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
        commit_batch(&mut conn, &path, &state, batch, &mut log);
    }
    tracing::debug!("store writer stopped");
}

/// Checks, writes and publishes one batch. See the module docs for the ordering guarantees.
fn commit_batch(
    conn: &mut rusqlite::Connection,
    path: &Path,
    state: &Arc<RwLock<State>>,
    batch: Vec<Request>,
    log: &mut Log,
) {
    let mut rv = state.read().unwrap_or_else(|e| e.into_inner()).rv;
    // Objects changed earlier in this batch, so later ops check against them.
    let mut overlay: HashMap<ObjKey, Option<Arc<Stored>>> = HashMap::new();
    let mut results: Vec<Vec<Result<Arc<Stored>>>> = Vec::with_capacity(batch.len());
    let mut events: Vec<Event> = Vec::new();
    let trim;
    {
        let st = state.read().unwrap_or_else(|e| e.into_inner());
        for req in &batch {
            if req.atomic {
                results.push(prepare_all(&req.ops, &st, &mut overlay, &mut events, &mut rv));
                continue;
            }
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
        trim = log.trim(&st, &events, rv);
    }
    if !events.is_empty()
        && let Err(source) = persist(conn, &events, rv, log.floor, trim.as_ref())
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
    if let Some(t) = &trim
        && !events.is_empty()
    {
        log.floor = t.floor;
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

/// Checks and prepares the ops of an all-or-nothing request: either every op's event is added
/// to `events` (and `overlay`), or none is and `rv` is left as it was.
fn prepare_all(
    ops: &[Op],
    st: &State,
    overlay: &mut HashMap<ObjKey, Option<Arc<Stored>>>,
    events: &mut Vec<Event>,
    rv: &mut u64,
) -> Vec<Result<Arc<Stored>>> {
    let start_rv = *rv;
    let mut local: HashMap<ObjKey, Option<Arc<Stored>>> = HashMap::new();
    let mut local_events = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let key = op.key();
        let current = match local.get(key).or_else(|| overlay.get(key)) {
            Some(v) => v.clone(),
            None => st.get(key),
        };
        match check_and_prepare(op, current, rv) {
            Ok(ev) => {
                local.insert(
                    ev.key.clone(),
                    (ev.kind != EventType::Deleted).then(|| ev.obj.clone()),
                );
                local_events.push(ev);
            }
            Err(e) => {
                *rv = start_rv;
                let mut failure = Some(e);
                return ops
                    .iter()
                    .enumerate()
                    .map(|(j, op)| match failure.take_if(|_| j == i) {
                        Some(e) => Err(e),
                        None => Err(StoreError::Aborted(op.key().clone())),
                    })
                    .collect();
            }
        }
    }
    let out = local_events.iter().map(|ev| Ok(ev.obj.clone())).collect();
    overlay.extend(local);
    events.extend(local_events);
    out
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
            let obj = encode(key, cur.value(), *rv)?;
            Ok(Event::new(*rv, EventType::Deleted, key, obj, Some(cur)))
        }
    }
}

fn encode(key: &ObjKey, mut value: Value, rv: u64) -> Result<Arc<Stored>> {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
    let json = serde_json::to_vec(&value).map_err(|e| StoreError::Encode(key.clone(), e))?;
    Ok(Arc::new(Stored::new(rv, &value, json.into())))
}

fn event_type_code(kind: EventType) -> i64 {
    match kind {
        EventType::Added => 0,
        EventType::Modified => 1,
        EventType::Deleted => 2,
    }
}

fn persist(
    conn: &mut rusqlite::Connection,
    events: &[Event],
    rv: u64,
    log_floor: u64,
    trim: Option<&Trim>,
) -> rusqlite::Result<()> {
    let sql_rv = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let tx = conn.transaction()?;
    {
        let mut put = tx.prepare_cached(
            "INSERT OR REPLACE INTO objects (resource, namespace, name, rv, data)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut del = tx.prepare_cached(
            "DELETE FROM objects WHERE resource = ?1 AND namespace = ?2 AND name = ?3",
        )?;
        let mut log = tx.prepare_cached(
            "INSERT OR REPLACE INTO events
                 (rv, type, resource, namespace, name, prev_rv, prev_data, data)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
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
                        sql_rv(ev.rv),
                        &ev.obj.json[..],
                    ))?;
                }
            }
            log.execute((
                sql_rv(ev.rv),
                event_type_code(ev.kind),
                &*k.resource,
                &k.namespace,
                &k.name,
                ev.prev.as_ref().map(|p| sql_rv(p.rv)),
                // The replaced state's own row may be compacted away already.
                ev.prev.as_ref().filter(|p| p.rv <= log_floor).map(|p| &p.json[..]),
                &ev.obj.json[..],
            ))?;
        }
        tx.execute("UPDATE meta SET value = ?1 WHERE key = 'rv'", [sql_rv(rv)])?;
        if let Some(t) = trim {
            // Delete the events at or below the new floor between the ones still needed as a
            // newer event's previous state.
            let mut gap = tx.prepare_cached("DELETE FROM events WHERE rv > ?1 AND rv < ?2")?;
            let mut lower = -1i64;
            for &k in &t.keep {
                gap.execute([lower, sql_rv(k)])?;
                lower = sql_rv(k);
            }
            gap.execute([lower, sql_rv(t.floor).saturating_add(1)])?;
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'history_floor'",
                [sql_rv(t.floor)],
            )?;
        }
    }
    tx.commit()
}

/// The writer's view of the durable event log.
struct Log {
    /// Every event above this version is in the `events` table.
    floor: u64,
    /// The history window, in events.
    cap: u64,
}

/// One compaction of the event log, done in the transaction of a batch.
struct Trim {
    /// The new floor: events at or below it are deleted...
    floor: u64,
    /// ...except these (ascending), the previous states of events above it.
    keep: Vec<u64>,
}

impl Log {
    /// A compaction to run with the batch `events` (committing up to `rv`), when the log has
    /// run the slack past the window. The floor moves to `rv - cap`, which the in-memory
    /// history (`st`, at most `cap` events before this batch) and the batch cover, so every
    /// event above the floor, and so every previous state to keep, is seen here.
    fn trim(&self, st: &State, events: &[Event], rv: u64) -> Option<Trim> {
        let slack = (self.cap / TRIM_SLACK_DIVISOR as u64).max(MIN_TRIM_SLACK);
        let floor = rv.checked_sub(self.cap)?;
        if floor < self.floor.saturating_add(slack) {
            return None;
        }
        let prev_of = |e: &Event| e.prev.as_ref().map(|p| p.rv).filter(|&p| p <= floor);
        let mut keep: Vec<u64> = st
            .history
            .iter()
            .filter(|e| e.rv > floor)
            .filter_map(|e| prev_of(e))
            .chain(events.iter().filter_map(prev_of))
            .collect();
        keep.sort_unstable();
        keep.dedup();
        Some(Trim { floor, keep })
    }
}

/// One row of the durable event log, as read back.
struct LogRow {
    rv: u64,
    kind: EventType,
    key: ObjKey,
    prev_rv: Option<u64>,
    prev_data: Option<Vec<u8>>,
    data: Vec<u8>,
}

/// Rebuilds the in-memory history from the durable event log at start: the newest `cap`
/// events above the durable floor, each with its previous state. Returns the history and its
/// floor (versions at or above it are served). Should the log not reach back that far (a gap,
/// or a missing previous state), the floor moves up past it rather than serving a wrong
/// history.
fn load_history(
    conn: &rusqlite::Connection,
    path: &Path,
    objects: &HashMap<Arc<str>, Objects>,
    rv: u64,
    durable_floor: u64,
    cap: usize,
) -> Result<(VecDeque<Arc<Event>>, u64)> {
    let sqlite = |source| StoreError::Sqlite { path: path.to_owned(), source };
    let mut floor = durable_floor.max(rv.saturating_sub(cap as u64));
    let mut rows = Vec::new();
    {
        let mut stmt = conn
            .prepare(
                "SELECT rv, type, resource, namespace, name, prev_rv, prev_data, data
                 FROM events ORDER BY rv",
            )
            .map_err(sqlite)?;
        let mut q = stmt.query([]).map_err(sqlite)?;
        let mut resources: HashMap<String, Arc<str>> = HashMap::new();
        while let Some(row) = q.next().map_err(sqlite)? {
            let erv: i64 = row.get(0).map_err(sqlite)?;
            let kind = match row.get::<_, i64>(1).map_err(sqlite)? {
                0 => EventType::Added,
                1 => EventType::Modified,
                _ => EventType::Deleted,
            };
            let resource: String = row.get(2).map_err(sqlite)?;
            let resource = resources.entry(resource).or_insert_with_key(|r| {
                objects
                    .get_key_value(r.as_str())
                    .map_or_else(|| Arc::from(r.as_str()), |(k, _)| k.clone())
            });
            let key = ObjKey {
                resource: resource.clone(),
                namespace: row.get(3).map_err(sqlite)?,
                name: row.get(4).map_err(sqlite)?,
            };
            let prev_rv: Option<i64> = row.get(5).map_err(sqlite)?;
            rows.push(LogRow {
                rv: erv.try_into().unwrap_or(0),
                kind,
                key,
                prev_rv: prev_rv.map(|p| p.try_into().unwrap_or(0)),
                prev_data: row.get(6).map_err(sqlite)?,
                data: row.get(7).map_err(sqlite)?,
            });
        }
    }
    // The stored states events refer to, by version; the current objects are shared with
    // the object map rather than decoded twice.
    let needed: std::collections::HashSet<u64> = rows
        .iter()
        .filter(|r| r.rv > floor)
        .flat_map(|r| [Some(r.rv), r.prev_rv])
        .flatten()
        .collect();
    let mut by_rv: HashMap<u64, Arc<Stored>> = HashMap::with_capacity(needed.len());
    for r in &mut rows {
        if !needed.contains(&r.rv) {
            continue;
        }
        let current = objects
            .get(&r.key.resource)
            .and_then(|m| m.get(&(r.key.namespace.clone(), r.key.name.clone())))
            .filter(|s| s.rv == r.rv && r.kind != EventType::Deleted);
        let stored = match current {
            Some(s) => s.clone(),
            None => {
                let data = std::mem::take(&mut r.data);
                let stored = Stored::from_json(r.rv, data.into())
                    .map_err(|e| StoreError::Decode(r.key.clone(), e))?;
                Arc::new(stored)
            }
        };
        by_rv.insert(r.rv, stored);
    }
    let mut history: VecDeque<Arc<Event>> = VecDeque::new();
    for r in rows {
        if r.rv <= floor {
            continue;
        }
        let expected = history.back().map_or(floor, |e| e.rv) + 1;
        if r.rv != expected {
            tracing::warn!(rv = r.rv, expected, "the durable watch history has a gap");
            history.clear();
            floor = r.rv - 1;
        }
        let prev = match (r.prev_rv, &r.prev_data) {
            (None, _) => None,
            (Some(p), _) if by_rv.contains_key(&p) => by_rv.get(&p).cloned(),
            (Some(p), Some(data)) => {
                let stored = Stored::from_json(p, data.clone().into())
                    .map_err(|e| StoreError::Decode(r.key.clone(), e))?;
                Some(Arc::new(stored))
            }
            (Some(p), None) => {
                tracing::warn!(rv = r.rv, prev = p, "the durable watch history lost a state");
                None
            }
        };
        let obj = by_rv.get(&r.rv).cloned();
        match (obj, r.prev_rv.is_some() == prev.is_some()) {
            (Some(obj), true) => {
                history.push_back(Arc::new(Event::new(r.rv, r.kind, &r.key, obj, prev)));
            }
            // Serve only what follows a state that cannot be rebuilt.
            _ => {
                history.clear();
                floor = r.rv;
            }
        }
    }
    if history.back().map_or(floor, |e| e.rv) != rv {
        tracing::warn!(rv, "the durable watch history ends before the store's version");
        history.clear();
        floor = rv;
    }
    Ok((history, floor))
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
        assert_eq!(a.value()["metadata"]["resourceVersion"], "1");
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
    async fn an_all_or_nothing_write_applies_nothing_when_one_op_fails() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), 10).unwrap();
        let q = store.write(Op::Create { key: key("q"), value: cm("q") }).await.unwrap();
        let charge = |rv| Op::Update { key: key("q"), value: cm("q"), expected_rv: Some(rv) };
        // The charge commits with the object.
        let both = store
            .write_all(vec![charge(q.rv), Op::Create { key: key("a"), value: cm("a") }])
            .await
            .unwrap();
        assert_eq!(both.iter().map(|s| s.rv).collect::<Vec<_>>(), [2, 3]);
        // A stale charge: nothing is written, the failing op's index and error come back.
        let (i, err) = store
            .write_all(vec![charge(q.rv), Op::Create { key: key("b"), value: cm("b") }])
            .await
            .unwrap_err();
        assert_eq!(i, 0);
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
        // The object's own failure leaves the charge out too.
        let (i, err) = store
            .write_all(vec![charge(2), Op::Create { key: key("a"), value: cm("a") }])
            .await
            .unwrap_err();
        assert_eq!(i, 1);
        assert!(matches!(err, StoreError::AlreadyExists(_)), "{err}");
        assert!(store.get(&key("b")).is_none());
        assert_eq!(store.get(&key("q")).unwrap().rv, 2);
        assert_eq!(store.read().rv(), 3);
        let evs = store.read().events_since(0).unwrap();
        assert_eq!(evs.iter().map(|e| e.rv).collect::<Vec<_>>(), vec![1, 2, 3]);
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

    /// (version, type, name, version of the previous state) of each event.
    type Seen = (u64, &'static str, String, Option<u64>);

    fn history_of(store: &Store, rv: u64) -> Option<Vec<Seen>> {
        let evs = store.read().events_since(rv)?;
        Some(
            evs.iter()
                .map(|e| (e.rv, e.kind.as_str(), e.key.name.clone(), e.prev.as_ref().map(|p| p.rv)))
                .collect(),
        )
    }

    #[tokio::test]
    async fn the_watch_history_survives_a_reopen_with_previous_states() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let before;
        {
            let store = Store::open(&path, 100).unwrap();
            store.write(Op::Create { key: key("a"), value: cm("a") }).await.unwrap();
            store.write(Op::Create { key: key("b"), value: cm("b") }).await.unwrap();
            store
                .write(Op::Update { key: key("a"), value: cm("a"), expected_rv: None })
                .await
                .unwrap();
            store
                .write(Op::Delete { key: key("b"), expected_rv: None, expected_uid: None })
                .await
                .unwrap();
            before = history_of(&store, 1).unwrap();
        }
        let store = Store::open(&path, 100).unwrap();
        let after = history_of(&store, 1).unwrap();
        assert_eq!(after, before);
        assert_eq!(
            after,
            vec![
                (2, "ADDED", "b".to_owned(), None),
                (3, "MODIFIED", "a".to_owned(), Some(1)),
                (4, "DELETED", "b".to_owned(), Some(2)),
            ]
        );
        let evs = store.read().events_since(0).unwrap();
        assert_eq!(
            evs[3].obj.value()["metadata"]["resourceVersion"],
            "4",
            "deleted at its version"
        );
        // The newest state of a live object is shared with the object map, not decoded twice.
        assert!(Arc::ptr_eq(&evs[2].obj, &store.get(&key("a")).unwrap()));
    }

    #[tokio::test]
    async fn the_durable_history_is_compacted_but_keeps_the_states_newer_events_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let cap = 300;
        {
            let store = Store::open(&path, cap).unwrap();
            let create = |n: &str| Op::Create { key: key(n), value: cm(n) };
            let update = |n: &str| Op::Update { key: key(n), value: cm(n), expected_rv: None };
            // "keep" is written once, early: its row is compacted away long before it is
            // updated, so the update carries the state it replaced itself. "k2"'s row is still
            // in the log when it is updated, and kept by the next compaction for that update.
            store.write(create("keep")).await.unwrap();
            for i in 0..1000 {
                store.write(create(&format!("x{i}"))).await.unwrap();
            }
            store.write(create("k2")).await.unwrap();
            for i in 0..200 {
                store.write(create(&format!("z{i}"))).await.unwrap();
            }
            store.write(update("k2")).await.unwrap();
            store.write(update("keep")).await.unwrap();
            for i in 0..250 {
                store.write(create(&format!("w{i}"))).await.unwrap();
            }
        }
        let rows: i64 = rusqlite::Connection::open(&path)
            .unwrap()
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert!(rows <= (cap as i64) + 256 + 2, "the log is compacted: {rows} rows");
        let store = Store::open(&path, cap).unwrap();
        let rv = store.read().rv();
        assert_eq!(rv, 1454);
        assert_eq!(store.read().history_floor(), rv - cap as u64);
        assert!(history_of(&store, rv - cap as u64 - 1).is_none(), "below the window: 410");
        let evs = history_of(&store, rv - cap as u64).unwrap();
        assert_eq!(evs.len(), cap);
        let prev = |n: &str| evs.iter().find(|e| e.2 == n).unwrap().3;
        assert_eq!(prev("keep"), Some(1), "the replaced state written with its update");
        assert_eq!(prev("k2"), Some(1002), "the replaced state kept by the compaction");
    }

    #[tokio::test]
    async fn the_history_survives_a_writer_that_never_closed_its_database() {
        // As after `kill -9`: the first store is never dropped (no checkpoint, no clean close).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let first = Store::open(&path, 100).unwrap();
        first.write(Op::Create { key: key("a"), value: cm("a") }).await.unwrap();
        first
            .write(Op::Delete { key: key("a"), expected_rv: None, expected_uid: None })
            .await
            .unwrap();
        std::mem::forget(first);
        let store = Store::open(&path, 100).unwrap();
        assert_eq!(history_of(&store, 1).unwrap(), vec![(2, "DELETED", "a".to_owned(), Some(1))]);
    }
}
