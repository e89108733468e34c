//! The REST semantics of the Kubernetes API, independent of HTTP: create, get, list, update,
//! patch, delete, and the subresources (`status`, `scale`, `binding`), each following upstream's
//! generic registry (`k8s.io/apiserver/pkg/registry/generic/registry/store.go`) and the kinds'
//! strategies. The HTTP layer ([`crate::http`]) decodes requests into these calls; the garbage
//! collector ([`crate::gc`]) calls the same functions, so both paths share every rule.

use std::sync::Arc;

use bytes::Bytes;
use kinetic_machinery::selector::{FieldSelector, LabelSelector};
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult, Cause, from_store};
use crate::registry::{Registry, Resource};
use crate::store::{ObjKey, Op, Store, Stored};
use crate::strategy::Admission;

/// How unknown fields in a request body are treated (`?fieldValidation=`), as upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    /// Unknown fields are dropped and reported as warnings (upstream's default).
    #[default]
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(s: &str) -> ApiResult<Self> {
        match s {
            "" | "Warn" => Ok(Self::Warn),
            "Ignore" => Ok(Self::Ignore),
            "Strict" => Ok(Self::Strict),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other}; supported values: Ignore, Warn, Strict"
            ))),
        }
    }
}

/// Options shared by writes.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    /// The field manager recorded in `managedFields` (see [`crate::managed::manager_for`]);
    /// `None` for the server's own writes.
    pub manager: Option<String>,
    /// Who writes, for the checks that depend on it (RBAC escalation); `None` for the
    /// server's own writes.
    pub user: Option<Arc<crate::auth::UserInfo>>,
}

impl WriteOptions {
    fn manager(&self) -> &str {
        self.manager.as_deref().unwrap_or("kinetic-apiserver")
    }
}

/// `DeleteOptions`, from the body or the query.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
    /// Whether the delete is a client's request, which admission checks as upstream's
    /// webhooks do ([`crate::unavailable`]); the server's own deletes (garbage collection,
    /// namespace cleanup, the delete of an eviction that was admitted already) are not.
    pub admit: bool,
    /// Who deletes, for admission webhooks; `None` for the server's own deletes.
    pub user: Option<Arc<crate::auth::UserInfo>>,
}

impl DeleteOptions {
    /// Reads a `DeleteOptions` body; fields in it win over the query (upstream: the body is
    /// decoded over the query parameters).
    pub fn merge_body(&mut self, body: &Value) -> ApiResult<()> {
        if let Some(g) = body.get("gracePeriodSeconds").filter(|v| !v.is_null()) {
            self.grace_period_seconds =
                Some(g.as_i64().ok_or_else(|| {
                    ApiError::bad_request("gracePeriodSeconds must be an integer")
                })?);
        }
        if let Some(p) = body.get("propagationPolicy").and_then(Value::as_str) {
            self.propagation_policy = Some(p.to_owned());
        }
        if body.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
            self.propagation_policy.get_or_insert_with(|| "Orphan".to_owned());
        }
        if let Some(pre) = body.get("preconditions") {
            if let Some(u) = pre.get("uid").and_then(Value::as_str) {
                self.precondition_uid = Some(u.to_owned());
            }
            if let Some(r) = pre.get("resourceVersion").and_then(Value::as_str) {
                self.precondition_rv = Some(r.to_owned());
            }
        }
        if body.get("dryRun").and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
            self.dry_run = true;
        }
        Ok(())
    }
}

/// A write's answer: the object and the warnings to send as `Warning` headers.
#[derive(Debug)]
pub struct Written {
    pub obj: Arc<Stored>,
    pub warnings: Vec<String>,
}

/// What a delete did.
#[derive(Debug)]
pub enum Deleted {
    /// The object is gone; this was its last state.
    Gone(Arc<Stored>),
    /// The object remains (finalizers or a grace period); this is its new state.
    Pending(Arc<Stored>),
}

/// Parameters of list and watch.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub label_selector: LabelSelector,
    pub field_selector: Option<FieldSelector>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

pub struct ListPage {
    pub rv: u64,
    pub items: Vec<Arc<Stored>>,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

/// How many times a patch or internal update retries on a concurrent write before answering
/// Conflict (upstream's GuaranteedUpdate retries until its context ends).
const MAX_RETRIES: usize = 16;

/// How many names a create with `generateName` tries before it answers AlreadyExists
/// (upstream's `maxNameGenerationCreateAttempts`, KEP-4420: the first name and 7 retries).
const NAME_GENERATION_ATTEMPTS: usize = 8;

/// Where the random suffixes of generated names come from (a seam for tests).
pub type SuffixSource = Arc<dyn Fn() -> String + Send + Sync>;

/// The API's state: the store and the served resources.
pub struct Api {
    pub store: Store,
    pub registry: Arc<Registry>,
    /// The 5-character suffix of each generated name.
    suffixes: SuffixSource,
    /// Whether `apps.kruise.io` objects get Kruise's webhook rules ([`crate::kruise`]).
    kruise_webhook: bool,
    /// Counters and histograms `/metrics` reports.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The server's authoriser, set once at start: admission's `authorizer` CEL variable asks
    /// it ([`crate::admission::authz`]).
    pub authz: std::sync::OnceLock<Arc<dyn crate::auth::Authorizer>>,
}

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn random_suffix(n: usize) -> String {
    use rand::Rng as _;
    // Upstream's alphabet (k8s.io/apimachinery/pkg/util/rand): no vowels, no confusable digits.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..n).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

fn meta(v: &Value) -> Option<&Map<String, Value>> {
    v.get("metadata").and_then(Value::as_object)
}

fn meta_mut(v: &mut Value) -> ApiResult<&mut Map<String, Value>> {
    let m =
        v.as_object_mut().ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    let md = m.entry("metadata").or_insert_with(|| json!({}));
    if md.is_null() {
        *md = json!({});
    }
    md.as_object_mut().ok_or_else(|| ApiError::bad_request("metadata must be an object"))
}

fn meta_str<'a>(v: &'a Value, field: &str) -> &'a str {
    meta(v).and_then(|m| m.get(field)).and_then(Value::as_str).unwrap_or("")
}

pub fn finalizers(v: &Value) -> Vec<String> {
    meta(v)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn is_deleting(v: &Value) -> bool {
    meta(v).is_some_and(|m| m.get("deletionTimestamp").is_some_and(|t| !t.is_null()))
}

/// The object without metadata and (when it is a subresource) status: what a generation tracks.
fn spec_part(res: &Resource, v: &Value) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if res.status || res.builtin {
            m.remove("status");
        }
    }
    c
}

impl Api {
    pub fn new(store: Store, registry: Arc<Registry>) -> Self {
        Self {
            store,
            registry,
            suffixes: Arc::new(|| random_suffix(5)),
            kruise_webhook: true,
            metrics: Arc::default(),
            authz: std::sync::OnceLock::new(),
        }
    }

    /// Turns Kruise's webhook rules off, as on a real cluster without OpenKruise's webhook
    /// (tests of the controllers' own validation use it).
    pub fn with_kruise_webhook(mut self, on: bool) -> Self {
        self.kruise_webhook = on;
        self
    }

    /// Whether OpenKruise's webhook rules are on (see [`Api::with_kruise_webhook`]).
    pub fn kruise_webhook(&self) -> bool {
        self.kruise_webhook
    }

    /// Replaces the source of generated-name suffixes (tests force collisions with it).
    pub fn with_suffixes(mut self, suffixes: SuffixSource) -> Self {
        self.suffixes = suffixes;
        self
    }

    pub fn key(&self, res: &Resource, ns: &str, name: &str) -> ObjKey {
        ObjKey::new(&res.storage, if res.namespaced { ns } else { "" }, name)
    }

    /// The stored object as the requested version serves it (CRD versions differ only in
    /// `apiVersion`: conversion strategy `None`).
    pub fn served_json(&self, res: &Resource, s: &Stored) -> Bytes {
        if res.strategy.stored_api_version().is_some()
            && let Some(v) = res.strategy.to_served(&s.value())
        {
            return serde_json::to_vec(&v).map(Bytes::from).unwrap_or_else(|_| s.json.clone());
        }
        if s.api_version() == res.api_version() {
            return s.json.clone();
        }
        let mut v = s.value();
        v["apiVersion"] = Value::String(res.api_version());
        serde_json::to_vec(&v).map(Bytes::from).unwrap_or_else(|_| s.json.clone())
    }

    pub fn served_value(&self, res: &Resource, s: &Stored) -> Value {
        let mut v = s.value();
        if res.strategy.stored_api_version().is_some()
            && let Some(served) = res.strategy.to_served(&v)
        {
            return served;
        }
        if let Some(m) = v.as_object_mut() {
            m.insert("apiVersion".into(), Value::String(res.api_version()));
        }
        v
    }

    pub fn get(&self, res: &Resource, ns: &str, name: &str) -> ApiResult<Arc<Stored>> {
        self.store
            .get(&self.key(res, ns, name))
            .ok_or_else(|| ApiError::not_found(&res.group, &res.plural, name))
    }

    /// How many objects are stored per group-resource (`apiserver_storage_objects`).
    pub fn object_counts(&self) -> std::collections::BTreeMap<String, usize> {
        let st = self.store.read();
        self.registry
            .storage_resources()
            .iter()
            .map(|r| (r.group_resource(), st.list(&r.storage, None, None).count()))
            .collect()
    }

    /// Checks the field selector's labels against what the kind supports.
    pub fn check_field_selector(&self, res: &Resource, fs: &FieldSelector) -> ApiResult<()> {
        for f in fs.fields() {
            let ok = matches!(f, "metadata.name" | "metadata.namespace")
                || res.field_selectors.iter().any(|x| x == f);
            if !ok {
                return Err(ApiError::bad_request(format!("field label not supported: {f}")));
            }
        }
        Ok(())
    }

    pub fn matches(opts: &ListOptions, v: &Value) -> bool {
        let labels = meta(v).and_then(|m| m.get("labels")).and_then(Value::as_object);
        opts.label_selector.matches(labels)
            && opts.field_selector.as_ref().is_none_or(|f| f.matches(v))
    }

    /// [`Self::matches`] on a stored object: labels and the indexed fields are read from what
    /// the store keeps beside the JSON; only a field selector on another field decodes it.
    pub fn matches_stored(opts: &ListOptions, s: &Stored) -> bool {
        opts.label_selector.matches_with(|k| s.label(k))
            && opts.field_selector.as_ref().is_none_or(|f| {
                f.matches_with(|k| s.field(k)).unwrap_or_else(|| f.matches(&s.value()))
            })
    }

    /// Lists one page. A continue token carries the last key and the resourceVersion of the
    /// first page, and a continued list reads the state at that version, as upstream reads
    /// the first page's etcd revision: objects created, changed or deleted meanwhile appear as
    /// they were. The state is rebuilt from the current objects and the watch history; once
    /// the history no longer reaches back that far the answer is 410 Expired, as upstream's
    /// once etcd compacted the revision.
    pub fn list(
        &self,
        res: &Resource,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> ApiResult<ListPage> {
        let (after, at) = match &opts.continue_token {
            Some(t) if !t.is_empty() => {
                let (key, rv) = decode_continue(t)?;
                (Some(key), rv)
            }
            _ => (None, None),
        };
        let st = self.store.read();
        let now = st.rv();
        let (rv, snapshot) = match at {
            Some(at) if at < now => (at, Some(snapshot_at(&st, res, ns, at)?)),
            _ => (now, None),
        };
        let objects: Box<dyn Iterator<Item = Entry<'_>>> = match &snapshot {
            Some(snap) => {
                let lower = match &after {
                    Some(k) => std::ops::Bound::Excluded(k.clone()),
                    None => std::ops::Bound::Unbounded,
                };
                Box::new(snap.range((lower, std::ops::Bound::Unbounded)))
            }
            None => Box::new(st.list(&res.storage, ns, after.as_ref())),
        };
        let mut items = Vec::new();
        let mut last_key = None;
        let mut remaining = 0usize;
        let mut full = false;
        for (k, s) in objects {
            if !Self::matches_stored(opts, s) {
                continue;
            }
            if full {
                remaining += 1;
                continue;
            }
            items.push(s.clone());
            last_key = Some(k.clone());
            if opts.limit.is_some_and(|l| l > 0 && items.len() >= l) {
                full = true;
            }
        }
        drop(st);
        let (continue_token, remaining) = if full && remaining > 0 {
            (last_key.map(|k| encode_continue(&k, rv)), Some(remaining))
        } else {
            (None, None)
        };
        Ok(ListPage { rv, items, continue_token, remaining })
    }

    /// Everything a new object gets from the server before validation.
    fn prepare_create(&self, res: &Resource, ns: &str, body: &mut Value) -> ApiResult<()> {
        let api_version = res.api_version();
        check_type(res, body)?;
        let m = body
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
        m.insert("apiVersion".into(), Value::String(api_version));
        m.insert("kind".into(), Value::String(res.kind.clone()));
        let md = meta_mut(body)?;
        if md.get("resourceVersion").and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let name = md.get("name").and_then(Value::as_str).unwrap_or("").to_owned();
        if name.is_empty() {
            let gen_name = md.get("generateName").and_then(Value::as_str).unwrap_or("");
            if gen_name.is_empty() {
                return Err(ApiError::invalid(
                    &res.kind,
                    &res.group,
                    "",
                    vec![Cause::required("metadata.name", "name or generateName is required")],
                ));
            }
            md.insert("name".into(), Value::String(self.generated_name(gen_name)));
        }
        if res.namespaced {
            let body_ns = md.get("namespace").and_then(Value::as_str).unwrap_or("");
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            md.insert("namespace".into(), Value::String(ns.to_owned()));
        } else {
            md.remove("namespace");
        }
        md.insert("uid".into(), Value::String(uuid::Uuid::new_v4().to_string()));
        md.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
        md.remove("deletionTimestamp");
        md.remove("deletionGracePeriodSeconds");
        md.remove("managedFields");
        md.remove("selfLink");
        if res.strategy.tracks_generation() {
            md.insert("generation".into(), json!(1));
        } else {
            md.remove("generation");
        }
        if res.status
            && let Some(m) = body.as_object_mut()
        {
            // Status is the controllers' to write: dropped on create, as upstream's strategies do.
            m.remove("status");
        }
        Ok(())
    }

    /// A name for `generateName` (upstream keeps the prefix at most 58 characters so the name
    /// fits 63).
    fn generated_name(&self, gen_name: &str) -> String {
        let prefix: String = gen_name.chars().take(58).collect();
        format!("{prefix}{}", (self.suffixes)())
    }

    /// Defaults, prunes and validates `obj` (new state) against the kind; `old` on update;
    /// `sub` the subresource written through.
    fn admit(
        &self,
        res: &Resource,
        sub: Option<&str>,
        obj: &mut Value,
        old: Option<&Value>,
        opts: &WriteOptions,
    ) -> ApiResult<Vec<String>> {
        let warnings = self.defaults(res, obj, opts)?;
        self.check(res, sub, obj, old, opts)?;
        Ok(warnings)
    }

    /// [`Api::admit`] with dynamic admission around the kind's validation, as upstream's
    /// admission chain runs: defaults, mutating webhooks (whose changes are defaulted again),
    /// validation, validating webhooks ([`crate::admission`]). Only clients' writes
    /// (`opts.user`) go to webhooks.
    #[allow(clippy::too_many_arguments)]
    async fn admit_with_webhooks(
        &self,
        res: &Resource,
        sub: Option<&str>,
        operation: &'static str,
        ns: &str,
        obj: &mut Value,
        old: Option<&Value>,
        opts: &WriteOptions,
    ) -> ApiResult<Vec<String>> {
        let mut warnings = self.defaults(res, obj, opts)?;
        let Some(user) = opts.user.clone() else {
            self.check(res, sub, obj, old, opts)?;
            return Ok(warnings);
        };
        let name = meta_str(obj, "name").to_owned();
        let mut options = json!({
            "kind": if operation == "CREATE" { "CreateOptions" } else { "UpdateOptions" },
            "apiVersion": "meta.k8s.io/v1",
        });
        if let Some(m) = &opts.manager {
            options["fieldManager"] = json!(m);
        }
        if opts.dry_run {
            options["dryRun"] = json!(["All"]);
        }
        let req = crate::admission::Request {
            res,
            sub: sub.unwrap_or(""),
            operation,
            namespace: if res.namespaced { ns } else { "" },
            name: &name,
            user: &user,
            dry_run: opts.dry_run,
            options,
            authorizer: self.authz.get().cloned(),
            request_kind: None,
        };
        let view = Served { api: self, sub };
        let (w, changed) =
            crate::admission::mutate(&self.store, &self.registry, &req, &view, Some(obj), old)
                .await?;
        warnings.extend(w);
        if changed {
            // What a webhook added beyond the schema is dropped silently, as upstream's decoding
            // of the patched object does.
            let quiet = WriteOptions { field_validation: FieldValidation::Ignore, ..opts.clone() };
            self.defaults(res, obj, &quiet)?;
        }
        self.check(res, sub, obj, old, opts)?;
        let policies = crate::admission::policy::validate(
            &self.store,
            &self.registry,
            &req,
            &view,
            Some(obj),
            old,
        )?;
        warnings.extend(policies);
        let w =
            crate::admission::validate(&self.store, &self.registry, &req, &view, Some(obj), old)
                .await?;
        warnings.extend(w);
        Ok(warnings)
    }

    /// Prunes unknown fields (reported as `opts` asks) and applies the schema's and the kind's
    /// defaults.
    fn defaults(
        &self,
        res: &Resource,
        obj: &mut Value,
        opts: &WriteOptions,
    ) -> ApiResult<Vec<String>> {
        let mut warnings = Vec::new();
        if let Some(schema) = &res.schema {
            let unknown = schema.prune(obj);
            if !unknown.is_empty() {
                match opts.field_validation {
                    FieldValidation::Strict => {
                        let list: Vec<String> = unknown
                            .iter()
                            .map(|f| format!("unknown field \"{}\"", f.trim_start_matches('.')))
                            .collect();
                        return Err(ApiError::bad_request(format!(
                            "strict decoding error: {}",
                            list.join(", ")
                        )));
                    }
                    FieldValidation::Warn => warnings.extend(
                        unknown
                            .iter()
                            .map(|f| format!("unknown field \"{}\"", f.trim_start_matches('.'))),
                    ),
                    FieldValidation::Ignore => {}
                }
            }
            // Drops nulls (Go decodes them to zero values, which it omits) and applies CRD
            // defaults; the built-in schemas carry no defaults.
            schema.default(obj);
        }
        res.strategy.default(obj);
        Ok(warnings)
    }

    /// The kind's validation and the admission that reads the store, on a defaulted object.
    fn check(
        &self,
        res: &Resource,
        sub: Option<&str>,
        obj: &mut Value,
        old: Option<&Value>,
        opts: &WriteOptions,
    ) -> ApiResult<()> {
        let name = meta_str(obj, "name").to_owned();
        let strategy = &res.strategy;
        let mut causes: Vec<Cause> = Vec::new();
        if old.is_none() {
            strategy.validate_name(&name, &mut causes);
        }
        validate_meta(obj, &mut causes);
        if let Some(schema) = &res.schema {
            causes.extend(schema.validate(obj));
        }
        let adm = Admission { user: opts.user.as_deref(), ..self.admission() };
        let node_restriction = match opts.user.as_deref() {
            Some(u) => crate::rbac::node::admit(u, &res.group, &res.plural, obj, old),
            None => Ok(()),
        };
        node_restriction
            .and_then(|()| strategy.authorize_write(&adm, obj, old))
            .map_err(|why| forbidden(res, &name, &why))?;
        causes.extend(strategy.admit(&adm, obj, old));
        causes.extend(strategy.validate(obj, old));
        if !causes.is_empty() {
            return Err(ApiError::invalid(&res.kind, &res.group, &name, causes));
        }
        // Upstream's LimitRanger ignores subresource writes (a claim's status, a pod's binding).
        if sub.is_none() {
            strategy
                .validate_admission(&adm, obj, old)
                .map_err(|why| forbidden(res, &name, &why))?;
        }
        Ok(())
    }

    /// ResourceQuota admission of `obj` (`old` on update): the quota status updates to commit
    /// with it ([`crate::quota::charges`]), or upstream's 403.
    fn quota_charges(
        &self,
        res: &Resource,
        ns: &str,
        obj: &Value,
        old: Option<&Value>,
    ) -> ApiResult<Vec<Op>> {
        crate::quota::charges(&self.store, res, ns, obj, old)
            .map_err(|why| forbidden(res, meta_str(obj, "name"), &why))
    }

    /// Writes a create or update with its quota charges in one all-or-nothing store write
    /// (upstream's ResourceQuota admission, the last plugin of the chain; see [`crate::quota`]
    /// for why this is safe under concurrent writes). When a charged quota changed since it was
    /// read, the write is evaluated again against the new usage.
    async fn write_charged(
        &self,
        res: &Resource,
        ns: &str,
        op: Op,
        old: Option<&Value>,
    ) -> ApiResult<Arc<Stored>> {
        let obj = match &op {
            Op::Create { value, .. } | Op::Update { value, .. } => value,
            Op::Delete { .. } => return self.write(res, op).await.map_err(|e| from_store(res, e)),
        };
        for _ in 0..MAX_RETRIES {
            let mut ops = self.quota_charges(res, ns, obj, old)?;
            if ops.is_empty() {
                return self.write(res, op).await.map_err(|e| from_store(res, e));
            }
            let charged = ops.len();
            ops.push(op.clone());
            let started = std::time::Instant::now();
            let r = self.store.write_all(ops).await;
            self.metrics.storage("update", "resourcequotas", started.elapsed());
            match r {
                Ok(mut written) => {
                    return written.pop().ok_or_else(|| ApiError::internal("empty store answer"));
                }
                // A quota changed or went away since it was read: evaluate again.
                Err((i, _)) if i < charged => {}
                Err((_, e)) => return Err(from_store(res, e)),
            }
        }
        Err(ApiError::conflict(
            &res.group,
            &res.plural,
            meta_str(obj, "name"),
            "the namespace's resource quotas kept changing; please apply your changes again",
        ))
    }

    /// Creates an object in `ns` (ignored for cluster-scoped kinds).
    pub async fn create(
        &self,
        res: &Resource,
        ns: &str,
        body: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        self.create_inner(res, ns, body, opts, false).await
    }

    /// [`Api::create`]; `applied`: `body` is the result of a server-side apply and carries its
    /// `managedFields`.
    async fn create_inner(
        &self,
        res: &Resource,
        ns: &str,
        mut body: Value,
        opts: &WriteOptions,
        applied: bool,
    ) -> ApiResult<Written> {
        let applied_fields =
            applied.then(|| body.pointer("/metadata/managedFields").cloned()).flatten();
        let generate_from = meta(&body)
            .filter(|m| m.get("name").and_then(Value::as_str).is_none_or(str::is_empty))
            .and_then(|m| m.get("generateName"))
            .and_then(Value::as_str)
            .filter(|g| !g.is_empty())
            .map(str::to_owned);
        self.prepare_create(res, ns, &mut body)?;
        res.strategy.to_stored(&mut body);
        if res.namespaced {
            self.check_namespace_open(ns)?;
        }
        res.strategy.prepare_create(&self.admission(), &mut body);
        let warnings =
            self.admit_with_webhooks(res, None, "CREATE", ns, &mut body, None, opts).await?;
        match applied_fields {
            Some(fields) => {
                meta_mut(&mut body)?.insert("managedFields".into(), fields);
            }
            None if applied => {}
            None => crate::managed::on_create(res, &mut body, opts.manager()),
        }
        // A generated name that is taken is generated again, up to upstream's limit (KEP-4420,
        // `RetryGenerateName`, on by default since 1.31), so generateName creates do not fail
        // with AlreadyExists on a collision.
        let mut attempt = 1;
        let obj = loop {
            let name = meta_str(&body, "name").to_owned();
            let key = self.key(res, ns, &name);
            let retry = generate_from.is_some() && attempt < NAME_GENERATION_ATTEMPTS;
            let taken = if opts.dry_run {
                if self.store.get(&key).is_none() {
                    // Dry runs are checked against quotas but charge nothing, as upstream.
                    self.quota_charges(res, ns, &body, None)?;
                    let json =
                        serde_json::to_vec(&body).map_err(|e| ApiError::internal(e.to_string()))?;
                    return Ok(Written {
                        obj: Arc::new(Stored::new(0, &body, json.into())),
                        warnings,
                    });
                }
                ApiError::already_exists(&res.group, &res.plural, &name)
            } else {
                let value = if retry { body.clone() } else { std::mem::take(&mut body) };
                match self.write_charged(res, ns, Op::Create { key, value }, None).await {
                    Ok(obj) => break obj,
                    Err(e) if e.reason == "AlreadyExists" => e,
                    Err(e) => return Err(e),
                }
            };
            match generate_from.as_deref() {
                Some(g) if retry => {
                    let name = self.generated_name(g);
                    meta_mut(&mut body)?.insert("name".into(), Value::String(name));
                    attempt += 1;
                }
                _ => return Err(taken),
            }
        };
        res.strategy.after_commit(&self.registry, &obj);
        Ok(Written { obj, warnings })
    }

    /// One durable write, timed for `etcd_request_duration_seconds`.
    async fn write(&self, res: &Resource, op: Op) -> Result<Arc<Stored>, crate::store::StoreError> {
        let operation = match &op {
            Op::Create { .. } => "create",
            Op::Update { .. } => "update",
            Op::Delete { .. } => "delete",
        };
        let started = std::time::Instant::now();
        let r = self.store.write(op).await;
        self.metrics.storage(operation, &res.group_resource(), started.elapsed());
        r
    }

    /// What strategies may read while they admit a write.
    fn admission(&self) -> Admission<'_> {
        Admission { store: &self.store, webhooks: self.kruise_webhook, user: None }
    }

    fn check_namespace_open(&self, ns: &str) -> ApiResult<()> {
        let key = ObjKey::new(&crate::registry::storage_key("", "namespaces"), "", ns);
        match self.store.get(&key) {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(n) if is_deleting(&n.value()) => Err(ApiError::forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Replaces an object (`PUT`), or its status with `sub = Some("status")`.
    pub async fn update(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        mut body: Value,
        sub: Option<&str>,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        check_type(res, &body)?;
        let body_name = meta_str(&body, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_ns = meta_str(&body, "namespace");
        if res.namespaced && !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let expected = match meta_str(&body, "resourceVersion") {
            "" => None,
            s => Some(s.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("invalid resourceVersion {s:?}: must be an integer"))
            })?),
        };
        let old = self.get(res, ns, name)?;
        if let Some(exp) = expected
            && exp != old.rv
        {
            return Err(ApiError::stale(&res.group, &res.plural, name));
        }
        meta_mut(&mut body)?;
        self.commit_update(res, ns, name, &old, body, sub, opts, false).await
    }

    /// Applies `f` to the current object and writes the result, retrying on conflicts. `f` gets
    /// the object as stored and returns the new full object. Used by patch and by internal
    /// updates (GC, namespace cleanup).
    pub async fn update_with<F>(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        sub: Option<&str>,
        opts: &WriteOptions,
        mut f: F,
    ) -> ApiResult<Written>
    where
        F: FnMut(&Value) -> ApiResult<Value>,
    {
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let old = self.get(res, ns, name)?;
            let new = f(&self.served_value(res, &old))?;
            // A patch may carry a resourceVersion precondition.
            match meta_str(&new, "resourceVersion") {
                "" => {}
                s if s == old.rv.to_string() => {}
                _ => return Err(ApiError::stale(&res.group, &res.plural, name)),
            }
            match self.commit_update(res, ns, name, &old, new, sub, opts, false).await {
                Err(e) if e.reason == "Conflict" && e.code == 409 => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| ApiError::stale(&res.group, &res.plural, name)))
    }

    /// Server-side apply (`PATCH` with `application/apply-patch+yaml`) of `config` by the
    /// options' field manager: merged into the live object by [`crate::managed::apply`], which
    /// also records the manager's fields, then admitted and written as any update; or created
    /// when the object does not exist (upstream's create-on-apply, not through a subresource).
    /// Returns whether the object was created.
    ///
    /// # Errors
    /// 400 BadRequest for a configuration that is not an object of this kind and name or that
    /// sets `managedFields`; 409 Conflict with `FieldManagerConflict` causes for fields other
    /// managers own (unless `force`); everything create and update answer.
    #[allow(clippy::too_many_arguments)]
    pub async fn apply(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        sub: Option<&str>,
        mut config: Value,
        force: bool,
        opts: &WriteOptions,
    ) -> ApiResult<(Written, bool)> {
        check_type(res, &config)?;
        for field in ["apiVersion", "kind"] {
            if config.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(ApiError::bad_request(format!(
                    "Object '{}' is missing in '{config}'",
                    if field == "kind" { "Kind" } else { field }
                )));
            }
        }
        let md = meta_mut(&mut config)?;
        if md.get("managedFields").is_some_and(|m| !m.is_null()) {
            return Err(ApiError::bad_request("metadata.managedFields must be nil"));
        }
        match md.get("name").and_then(Value::as_str).unwrap_or("") {
            "" => {
                md.insert("name".into(), Value::String(name.to_owned()));
            }
            n if n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            _ => {}
        }
        let manager = opts.manager();
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let old = match self.get(res, ns, name) {
                Ok(old) => old,
                Err(e) if e.code == 404 && sub.is_none() => {
                    let obj = crate::managed::apply(res, None, &config, manager, None, force)?;
                    match self.create_inner(res, ns, obj, opts, true).await {
                        Err(e) if e.reason == "AlreadyExists" => {
                            last = Some(e);
                            continue;
                        }
                        other => return other.map(|w| (w, true)),
                    }
                }
                Err(e) => return Err(e),
            };
            let live = self.served_value(res, &old);
            let new = crate::managed::apply(res, Some(&live), &config, manager, sub, force)?;
            match meta_str(&new, "resourceVersion") {
                "" => {}
                s if s == old.rv.to_string() => {}
                _ => return Err(ApiError::stale(&res.group, &res.plural, name)),
            }
            match self.commit_update(res, ns, name, &old, new, sub, opts, true).await {
                Err(e) if e.reason == "Conflict" && e.code == 409 => last = Some(e),
                other => return other.map(|w| (w, false)),
            }
        }
        Err(last.unwrap_or_else(|| ApiError::stale(&res.group, &res.plural, name)))
    }

    /// The shared tail of update and patch: merge with the old object per the subresource, keep
    /// immutable metadata, admit, and write with the old version as precondition.
    #[allow(clippy::too_many_arguments)]
    async fn commit_update(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        old: &Arc<Stored>,
        mut new: Value,
        sub: Option<&str>,
        opts: &WriteOptions,
        applied: bool,
    ) -> ApiResult<Written> {
        // A server-side apply computed the object's managers with it; any other write of the
        // main resource may set them itself (kubectl's upgrade of client-side-apply managers
        // to server-side apply, or `[{}]` to reset them), as upstream's field manager allows.
        res.strategy.to_stored(&mut new);
        let applied_fields =
            applied.then(|| new.pointer("/metadata/managedFields").cloned()).flatten();
        let requested_fields = (!applied && sub.is_none())
            .then(|| new.pointer("/metadata/managedFields").cloned())
            .flatten();
        let old_v = &old.value();
        if sub == Some("status") {
            // Status writes change only status (upstream ResetObjectMetaForStatus + strategies),
            // except for the metadata some upstream status strategies keep from the request.
            let status = new.get("status").cloned();
            let kept = res.strategy.status_keeps_metadata();
            let kept_meta: Option<Vec<(&str, Option<Value>)>> = (!kept.is_empty()).then(|| {
                kept.iter().map(|k| (*k, new.pointer(&format!("/metadata/{k}")).cloned())).collect()
            });
            new = old_v.clone();
            match status {
                Some(s) => new["status"] = s,
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            if let Some(fields) = kept_meta
                && let Some(md) = new.get_mut("metadata").and_then(Value::as_object_mut)
            {
                for (k, v) in fields {
                    match v {
                        Some(v) if !v.is_null() => {
                            md.insert(k.to_owned(), v);
                        }
                        _ => {
                            md.remove(k);
                        }
                    }
                }
            }
        } else if res.status || res.builtin {
            // Spec writes ignore status.
            let old_status = old_v.get("status").cloned();
            if let Some(m) = new.as_object_mut() {
                match old_status {
                    Some(s) => {
                        m.insert("status".into(), s);
                    }
                    None => {
                        m.remove("status");
                    }
                }
            }
        }
        {
            let m = new
                .as_object_mut()
                .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
            let api_version =
                res.strategy.stored_api_version().map_or_else(|| res.api_version(), str::to_owned);
            m.insert("apiVersion".into(), Value::String(api_version));
            m.insert("kind".into(), Value::String(res.kind.clone()));
        }
        let old_meta = meta(old_v).cloned().unwrap_or_default();
        let md = meta_mut(&mut new)?;
        for k in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old_meta.get(k) {
                Some(v) => {
                    md.insert(k.into(), v.clone());
                }
                None => {
                    md.remove(k);
                }
            }
        }
        md.remove("managedFields");
        md.remove("selfLink");
        md.remove("resourceVersion");
        if is_deleting(old_v) {
            let old_f = finalizers(old_v);
            let added: Vec<String> =
                finalizers(&new).into_iter().filter(|f| !old_f.contains(f)).collect();
            if !added.is_empty() {
                return Err(ApiError::invalid(
                    &res.kind,
                    &res.group,
                    name,
                    vec![Cause {
                        reason: "FieldValueForbidden".into(),
                        message: format!(
                            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                        ),
                        field: "metadata.finalizers".into(),
                    }],
                ));
            }
        }
        if sub != Some("status") {
            res.strategy.prepare_update(&mut new, old_v);
        }
        if sub.is_none()
            && res.strategy.guards_disruption()
            && crate::unavailable::changes_availability(old_v, &new)
        {
            use kinetic_api::kruise::podunavailablebudget::Operation;
            crate::unavailable::admit(self, old_v, Operation::Update, opts.dry_run).await?;
        }
        let warnings =
            self.admit_with_webhooks(res, sub, "UPDATE", ns, &mut new, Some(old_v), opts).await?;
        if res.strategy.tracks_generation()
            && sub != Some("status")
            && spec_part(res, &new) != spec_part(res, old_v)
        {
            let g = old_meta.get("generation").and_then(Value::as_i64).unwrap_or(0) + 1;
            meta_mut(&mut new)?.insert("generation".into(), json!(g));
        }
        // The last finalizer removed from an object being deleted: the object goes away.
        if is_deleting(&new)
            && finalizers(&new).is_empty()
            && !res.strategy.awaits_termination(&new)
            && !res.strategy.holds_deletion(&new)
        {
            if opts.dry_run {
                return Ok(Written { obj: old.clone(), warnings });
            }
            let key = self.key(res, ns, name);
            let op = Op::Delete { key, expected_rv: Some(old.rv), expected_uid: None };
            let obj = self.write(res, op).await.map_err(|e| from_store(res, e))?;
            return Ok(Written { obj, warnings });
        }
        match applied_fields {
            Some(fields) => {
                meta_mut(&mut new)?.insert("managedFields".into(), fields);
            }
            None if applied => {}
            None => crate::managed::on_update(
                res,
                &mut new,
                old_v,
                requested_fields.as_ref(),
                opts.manager(),
                sub,
            ),
        }
        // A write that changes nothing is not a write (upstream skips the etcd update too), so
        // idempotent controllers do not wake each other up.
        let mut cmp = old_v.clone();
        if let Some(m) = cmp.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        if cmp == new {
            return Ok(Written { obj: old.clone(), warnings });
        }
        // Upstream's quota admission ignores subresource writes (`status`, `scale`).
        if opts.dry_run {
            if sub.is_none() {
                self.quota_charges(res, ns, &new, Some(old_v))?;
            }
            let json = serde_json::to_vec(&new).map_err(|e| ApiError::internal(e.to_string()))?;
            return Ok(Written { obj: Arc::new(Stored::new(old.rv, &new, json.into())), warnings });
        }
        let key = self.key(res, ns, name);
        let op = Op::Update { key, value: new, expected_rv: Some(old.rv) };
        let obj = if sub.is_none() {
            self.write_charged(res, ns, op, Some(old_v)).await?
        } else {
            self.write(res, op).await.map_err(|e| from_store(res, e))?
        };
        res.strategy.after_commit(&self.registry, &obj);
        Ok(Written { obj, warnings })
    }

    /// Deletes an object following upstream's graceful deletion, finalizers and propagation.
    pub async fn delete(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<Deleted> {
        let policy = opts.propagation_policy.as_deref().unwrap_or("Background");
        if !matches!(policy, "Background" | "Foreground" | "Orphan") {
            return Err(ApiError::invalid(
                "DeleteOptions",
                "",
                "",
                vec![Cause {
                    reason: "FieldValueNotSupported".into(),
                    message: format!(
                        "Unsupported value: \"{policy}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
                    ),
                    field: "propagationPolicy".into(),
                }],
            ));
        }
        if let Some(why) = res.strategy.forbids_delete(name) {
            return Err(ApiError::forbidden(why));
        }
        if let Some(user) = &opts.user {
            self.delete_webhooks(res, ns, name, user, policy, opts).await?;
        }
        for _ in 0..MAX_RETRIES {
            let cur = self.get(res, ns, name)?;
            if let Some(uid) = &opts.precondition_uid
                && uid != cur.uid()
            {
                return Err(from_store(
                    res,
                    crate::store::StoreError::UidMismatch {
                        key: self.key(res, ns, name),
                        expected: uid.clone(),
                        actual: cur.uid().to_owned(),
                    },
                ));
            }
            if let Some(rv) = &opts.precondition_rv
                && *rv != cur.rv.to_string()
            {
                return Err(ApiError::conflict(
                    &res.group,
                    &res.plural,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        cur.rv
                    ),
                ));
            }
            if opts.admit && !is_deleting(&cur.value()) && res.strategy.guards_disruption() {
                use kinetic_api::kruise::podunavailablebudget::Operation;
                crate::unavailable::admit(self, &cur.value(), Operation::Delete, opts.dry_run)
                    .await?;
            }
            let mut new = cur.value();
            let mut fins = finalizers(&new);
            let stored_fins = fins.clone();
            match policy {
                "Orphan" if !fins.iter().any(|f| f == "orphan") => fins.push("orphan".into()),
                "Foreground" if !fins.iter().any(|f| f == "foregroundDeletion") => {
                    fins.push("foregroundDeletion".into())
                }
                _ => {}
            }
            // `new` is still the stored object here.
            let grace = res.strategy.grace_period(&new, opts.grace_period_seconds);
            let holds = res.strategy.holds_deletion(&new);
            let deleting = is_deleting(&new);
            if fins.is_empty() && grace == 0 && !holds {
                if opts.dry_run {
                    return Ok(Deleted::Gone(cur));
                }
                let op = Op::Delete {
                    key: self.key(res, ns, name),
                    expected_rv: Some(cur.rv),
                    expected_uid: None,
                };
                match self.write(res, op).await {
                    Ok(s) => return Ok(Deleted::Gone(s)),
                    Err(crate::store::StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(from_store(res, e)),
                }
            }
            let md = meta_mut(&mut new)?;
            if !fins.is_empty() {
                md.insert("finalizers".into(), json!(fins));
            }
            let existing_grace = md.get("deletionGracePeriodSeconds").and_then(Value::as_i64);
            // A second delete may shorten a grace period, never lengthen it (upstream
            // BeforeDelete), and never restarts the clock otherwise.
            if !deleting || existing_grace.is_some_and(|g| grace < g) {
                let ts = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
                md.insert(
                    "deletionTimestamp".into(),
                    json!(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                );
                md.insert("deletionGracePeriodSeconds".into(), json!(grace));
            } else if deleting && fins == stored_fins {
                return Ok(Deleted::Pending(cur));
            }
            res.strategy.begin_deletion(&mut new);
            if opts.dry_run {
                let json =
                    serde_json::to_vec(&new).map_err(|e| ApiError::internal(e.to_string()))?;
                return Ok(Deleted::Pending(Arc::new(Stored::new(cur.rv, &new, json.into()))));
            }
            let op =
                Op::Update { key: self.key(res, ns, name), value: new, expected_rv: Some(cur.rv) };
            match self.write(res, op).await {
                Ok(s) => return Ok(Deleted::Pending(s)),
                Err(crate::store::StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(from_store(res, e)),
            }
        }
        Err(ApiError::stale(&res.group, &res.plural, name))
    }

    /// Sends a client's delete to the webhooks whose rules name it (mutating, which can only
    /// refuse a deletion, then validating), with the object as `oldObject`.
    async fn delete_webhooks(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        user: &crate::auth::UserInfo,
        policy: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<()> {
        let cur = self.get(res, ns, name)?;
        let mut options = json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1",
                                 "propagationPolicy": policy});
        if let Some(g) = opts.grace_period_seconds {
            options["gracePeriodSeconds"] = json!(g);
        }
        if opts.dry_run {
            options["dryRun"] = json!(["All"]);
        }
        let req = crate::admission::Request {
            res,
            sub: "",
            operation: "DELETE",
            namespace: if res.namespaced { ns } else { "" },
            name,
            user,
            dry_run: opts.dry_run,
            options,
            authorizer: self.authz.get().cloned(),
            request_kind: None,
        };
        let view = Served { api: self, sub: None };
        let cur_v = cur.value();
        let old = Some(&cur_v);
        crate::admission::mutate(&self.store, &self.registry, &req, &view, None, old).await?;
        crate::admission::policy::validate(&self.store, &self.registry, &req, &view, None, old)?;
        crate::admission::validate(&self.store, &self.registry, &req, &view, None, old).await?;
        Ok(())
    }

    /// `deletecollection`: deletes every matching object, each as a single delete would.
    pub async fn delete_collection(
        &self,
        res: &Resource,
        ns: Option<&str>,
        list: &ListOptions,
        opts: &DeleteOptions,
    ) -> ApiResult<Vec<Arc<Stored>>> {
        // Upstream registers no collection deleter for these kinds (Namespaces): the route
        // does not exist, 405 as kube-apiserver answers `DELETE /api/v1/namespaces`.
        if !res.strategy.deletes_collections() {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
        let page =
            self.list(res, ns, &ListOptions { limit: None, continue_token: None, ..list.clone() })?;
        let mut out = Vec::new();
        for s in page.items {
            let ns = s.field("metadata.namespace").unwrap_or_default().to_owned();
            let name = s.field("metadata.name").unwrap_or_default().to_owned();
            match self.delete(res, &ns, &name, opts).await {
                Ok(Deleted::Gone(s) | Deleted::Pending(s)) => out.push(s),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The object and its Node, for a subresource its node serves (a pod's `log`, `exec`,
    /// `attach`, `portforward`; see [`crate::logs`]).
    ///
    /// # Errors
    /// NotFound for a missing object; BadRequest for one not scheduled to a node yet.
    pub fn node_of(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        sub: &str,
    ) -> ApiResult<(Arc<Stored>, Option<Value>)> {
        let obj = self.get(res, ns, name)?;
        let node = obj.field("spec.nodeName").unwrap_or_default();
        if node.is_empty() {
            return Err(ApiError::bad_request(format!(
                "pod {name} is not scheduled to a node yet, so it has no {sub}"
            )));
        }
        let key = ObjKey::new(&crate::registry::storage_key("", "nodes"), "", node);
        let node_obj = self.store.get(&key).map(|o| o.value());
        Ok((obj, node_obj))
    }

    /// `PUT namespaces/NAME/finalize`: replaces `spec.finalizers` only (upstream's
    /// FinalizeREST), which is how a namespace's deletion is let go.
    ///
    /// # Errors
    /// As [`Api::update_with`].
    pub async fn finalize(
        &self,
        res: &Resource,
        name: &str,
        body: &Value,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        let fins = body.pointer("/spec/finalizers").cloned().unwrap_or_else(|| json!([]));
        self.update_with(res, "", name, None, opts, |cur| {
            let mut n = cur.clone();
            n["spec"]["finalizers"] = fins.clone();
            Ok(n)
        })
        .await
    }

    /// `POST pods/NAME/binding`: assigns the pod to a node once, as upstream's BindingREST.
    pub async fn bind(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        binding: &Value,
    ) -> ApiResult<Written> {
        let node = binding
            .pointer("/target/name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ApiError::invalid("Binding", "", name, vec![Cause::required("target.name", "")])
            })?
            .to_owned();
        let opts = WriteOptions::default();
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let cur = self.get(res, ns, name)?;
            let mut pod = cur.value();
            if is_deleting(&pod) {
                return Err(ApiError::conflict(
                    &res.group,
                    &res.plural,
                    name,
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            if let Some(n) =
                pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty())
            {
                return Err(ApiError::conflict(
                    &res.group,
                    &res.plural,
                    name,
                    &format!("pod {name} is already assigned to node \"{n}\""),
                ));
            }
            pod["spec"]["nodeName"] = json!(node);
            // Upstream copies the Binding's annotations onto the pod (setPodHostAndAnnotations);
            // the embedded scheduler uses this to record when it queued and bound the pod.
            if let Some(annotations) =
                binding.pointer("/metadata/annotations").and_then(Value::as_object)
            {
                for (k, v) in annotations {
                    if let Some(v) = v.as_str() {
                        pod["metadata"]["annotations"][k] = json!(v);
                    }
                }
            }
            set_condition(&mut pod, "PodScheduled", "True", "", "");
            let key = self.key(res, ns, name);
            // Binding bypasses the pod update rules (nodeName is otherwise immutable).
            let mut admitted = pod;
            self.admit(res, Some("binding"), &mut admitted, Some(&cur.value()), &opts)?;
            let op = Op::Update { key, value: admitted, expected_rv: Some(cur.rv) };
            match self.write(res, op).await {
                Ok(obj) => return Ok(Written { obj, warnings: vec![] }),
                Err(e @ crate::store::StoreError::Conflict { .. }) => {
                    last = Some(from_store(res, e))
                }
                Err(e) => return Err(from_store(res, e)),
            }
        }
        Err(last.unwrap_or_else(|| ApiError::stale(&res.group, &res.plural, name)))
    }

    /// The `autoscaling/v1` Scale of an object with a scale subresource.
    pub fn scale_of(&self, res: &Resource, obj: &Value) -> ApiResult<Value> {
        let paths = res.scale.as_ref().ok_or_else(ApiError::page_not_found)?;
        let spec = json_path(obj, &paths.spec_replicas).and_then(Value::as_i64).unwrap_or(0);
        let status = json_path(obj, &paths.status_replicas).and_then(Value::as_i64).unwrap_or(0);
        let selector = match &paths.label_selector {
            Some(p) => json_path(obj, p).and_then(Value::as_str).unwrap_or("").to_owned(),
            None => obj
                .pointer("/spec/selector")
                .map(|s| {
                    LabelSelector::from_label_selector(s).map(|l| l.to_string()).unwrap_or_default()
                })
                .unwrap_or_default(),
        };
        let m = meta(obj).cloned().unwrap_or_default();
        let mut md = Map::new();
        for k in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] {
            if let Some(v) = m.get(k) {
                md.insert(k.into(), v.clone());
            }
        }
        Ok(json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": md,
            "spec": {"replicas": spec},
            "status": {"replicas": status, "selector": selector},
        }))
    }

    /// Writes `spec.replicas` from a new Scale (PUT or the result of a PATCH on the Scale).
    pub async fn set_scale(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        scale_of_new: impl Fn(Value) -> ApiResult<Value>,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let paths = res.scale.clone().ok_or_else(ApiError::page_not_found)?;
        let written = self
            .update_with(res, ns, name, Some("scale"), opts, |cur| {
                let scale = scale_of_new(self.scale_of(res, cur)?)?;
                let replicas = scale.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
                if replicas < 0 {
                    return Err(ApiError::invalid(
                        "Scale",
                        "autoscaling",
                        name,
                        vec![crate::error::invalid(
                            "spec.replicas",
                            &replicas.to_string(),
                            "must be greater than or equal to 0",
                        )],
                    ));
                }
                let mut new = cur.clone();
                set_json_path(&mut new, &paths.spec_replicas, json!(replicas))?;
                if let Some(rv) = scale.pointer("/metadata/resourceVersion").and_then(Value::as_str)
                {
                    meta_mut(&mut new)?.insert("resourceVersion".into(), json!(rv));
                }
                Ok(new)
            })
            .await?;
        self.scale_of(res, &self.served_value(res, &written.obj))
    }
}

/// The stored object as the version of `res` serves it.
fn served_of(res: &Resource, v: &Value) -> Value {
    if let Some(v) = res.strategy.to_served(v) {
        return v;
    }
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), Value::String(res.api_version()));
    }
    v
}

/// How webhooks see the object of a write: as the matched version serves it, or its Scale
/// for a `scale` write (upstream sends `autoscaling/v1` Scale objects for it).
struct Served<'a> {
    api: &'a Api,
    sub: Option<&'a str>,
}

impl crate::admission::View for Served<'_> {
    fn kind(&self, res: &Resource) -> (String, String, String) {
        if self.sub == Some("scale") {
            return ("autoscaling".into(), "v1".into(), "Scale".into());
        }
        (res.group.clone(), res.version.clone(), res.kind.clone())
    }

    fn view(&self, res: &Resource, stored: &Value) -> ApiResult<Value> {
        let v = served_of(res, stored);
        if self.sub == Some("scale") { self.api.scale_of(res, &v) } else { Ok(v) }
    }

    fn unview(&self, res: &Resource, target: &mut Value, view: Value) -> ApiResult<()> {
        if self.sub == Some("scale") {
            let paths = res.scale.as_ref().ok_or_else(ApiError::page_not_found)?;
            let replicas = view.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
            return set_json_path(target, &paths.spec_replicas, replicas);
        }
        let api_version = target.get("apiVersion").cloned();
        let mut v = view;
        res.strategy.to_stored(&mut v);
        if res.strategy.stored_api_version().is_none()
            && let (Some(av), Some(m)) = (api_version, v.as_object_mut())
        {
            m.insert("apiVersion".into(), av);
        }
        *target = v;
        Ok(())
    }
}

/// Rejects a body whose apiVersion/kind name a different type than the endpoint.
/// An admission refusal: 403 `<resource> "<name>" is forbidden: <why>` with the object's
/// details, as upstream's `admission.NewForbidden`.
fn forbidden(res: &Resource, name: &str, why: &str) -> ApiError {
    let mut e =
        ApiError::forbidden(format!("{} \"{name}\" is forbidden: {why}", res.group_resource()));
    e.details = Some(crate::error::details(&res.group, &res.plural, name));
    e
}

fn check_type(res: &Resource, body: &Value) -> ApiResult<()> {
    if !body.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let av = body.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or("");
    let want_av = res.api_version();
    // Another served version of the same group is fine (conversion strategy None).
    let same_group = av.rsplit_once('/').map(|(g, _)| g).unwrap_or("") == res.group;
    if !av.is_empty() && av != want_av && (res.builtin || !same_group) {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({want_av})"
        )));
    }
    if !kind.is_empty() && kind != res.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            res.kind
        )));
    }
    Ok(())
}

fn validate_meta(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(md) = meta(obj) else { return };
    for field in ["labels", "annotations"] {
        if let Some(m) = md.get(field) {
            match m.as_object() {
                Some(m) => {
                    for (k, v) in m {
                        if !v.is_string() {
                            causes.push(crate::error::invalid(
                                &format!("metadata.{field}"),
                                &v.to_string(),
                                "values must be strings",
                            ));
                        } else if field == "labels" {
                            let val = v.as_str().unwrap_or("");
                            if LabelSelector::parse(&format!("{k}={val}")).is_err() {
                                causes.push(crate::error::invalid(
                                    "metadata.labels",
                                    &format!("{k}={val}"),
                                    "label keys and values must be valid label syntax (63 characters or less, alphanumeric, '-', '_' or '.', with an optional DNS prefix)",
                                ));
                            }
                        }
                    }
                }
                None if m.is_null() => {}
                None => causes.push(crate::error::invalid(
                    &format!("metadata.{field}"),
                    &m.to_string(),
                    "must be an object",
                )),
            }
        }
    }
    if let Some(refs) = md.get("ownerReferences").and_then(Value::as_array) {
        for (i, r) in refs.iter().enumerate() {
            for f in ["apiVersion", "kind", "name", "uid"] {
                if r.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                    causes.push(Cause::required(&format!("metadata.ownerReferences[{i}].{f}"), ""));
                }
            }
        }
    }
}

/// Sets (or adds) a status condition, updating `lastTransitionTime` only on a status change.
pub fn set_condition(obj: &mut Value, ty: &str, status: &str, reason: &str, message: &str) {
    let now = now_rfc3339();
    let Some(o) = obj.as_object_mut() else { return };
    let st = o.entry("status").or_insert_with(|| json!({}));
    if !st.is_object() {
        *st = json!({});
    }
    let conds = st.as_object_mut().map(|m| m.entry("conditions").or_insert_with(|| json!([])));
    let Some(conds) = conds.and_then(Value::as_array_mut) else { return };
    let mut c =
        json!({"type": ty, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
    if !reason.is_empty() {
        c["reason"] = json!(reason);
    }
    if !message.is_empty() {
        c["message"] = json!(message);
    }
    match conds.iter_mut().find(|c| c.get("type").and_then(Value::as_str) == Some(ty)) {
        Some(existing) => {
            if existing.get("status").and_then(Value::as_str) == Some(status) {
                c["lastTransitionTime"] = existing
                    .get("lastTransitionTime")
                    .cloned()
                    .unwrap_or(c["lastTransitionTime"].take());
            }
            *existing = c;
        }
        None => conds.push(c),
    }
}

/// Reads a simple JSON path (`.spec.replicas`).
pub fn json_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for part in path.trim_start_matches('.').split('.').filter(|p| !p.is_empty()) {
        cur = cur.get(part)?;
    }
    Some(cur)
}

fn set_json_path(v: &mut Value, path: &str, new: Value) -> ApiResult<()> {
    let parts: Vec<&str> =
        path.trim_start_matches('.').split('.').filter(|p| !p.is_empty()).collect();
    let mut cur = v;
    for (i, part) in parts.iter().enumerate() {
        let m = cur
            .as_object_mut()
            .ok_or_else(|| ApiError::internal(format!("{path} does not lead to an object")))?;
        if i + 1 == parts.len() {
            m.insert((*part).to_owned(), new);
            return Ok(());
        }
        cur = m.entry(*part).or_insert_with(|| json!({}));
    }
    Ok(())
}

/// One object of a listing: its (namespace, name) and its stored state.
type Entry<'a> = (&'a (String, String), &'a Arc<Stored>);

fn encode_continue(k: &(String, String), rv: u64) -> String {
    use base64::Engine as _;
    let raw = serde_json::to_vec(&json!({"v": "kinetic/1", "ns": k.0, "name": k.1, "rv": rv}))
        .unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// The last key of the previous page and the version the list reads (absent in tokens of
/// older servers, which continue at the current state).
fn decode_continue(t: &str) -> ApiResult<((String, String), Option<u64>)> {
    use base64::Engine as _;
    let bad = || ApiError::bad_request(format!("continue key is not valid: {t:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let ns = v.get("ns").and_then(Value::as_str).ok_or_else(bad)?;
    let name = v.get("name").and_then(Value::as_str).ok_or_else(bad)?;
    Ok(((ns.to_owned(), name.to_owned()), v.get("rv").and_then(Value::as_u64)))
}

/// The objects of `res` (in `ns`) as they were at version `at`: the current ones with the
/// history's later events undone, newest first.
fn snapshot_at(
    st: &crate::store::State,
    res: &Resource,
    ns: Option<&str>,
    at: u64,
) -> ApiResult<std::collections::BTreeMap<(String, String), Arc<Stored>>> {
    let later = st.events_since(at).ok_or_else(|| {
        ApiError::gone(
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        )
    })?;
    let mut snap: std::collections::BTreeMap<(String, String), Arc<Stored>> =
        st.list(&res.storage, ns, None).map(|(k, s)| (k.clone(), s.clone())).collect();
    for ev in later.iter().rev() {
        if ev.key.resource != res.storage || ns.is_some_and(|n| n != ev.key.namespace) {
            continue;
        }
        let k = (ev.key.namespace.clone(), ev.key.name.clone());
        match (ev.kind, &ev.prev) {
            (crate::store::EventType::Added, _) | (_, None) => {
                snap.remove(&k);
            }
            (_, Some(prev)) => {
                snap.insert(k, prev.clone());
            }
        }
    }
    Ok(snap)
}
