//! The resources the server serves: the built-in kinds (fixed at start) and the kinds defined by
//! CustomResourceDefinitions (added and removed as CRDs come and go).
//!
//! A [`Resource`] is one served group/version/plural. Several served versions of one CRD share one
//! storage key (`group/plural`), so an object written through `v1` is read through `v2` with only
//! its `apiVersion` rewritten (the CRD conversion strategy `None`, the only one we support).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use kinetic_machinery::printers::Column;
use kinetic_machinery::schema::Schema;
use serde_json::{Map, Value};

use crate::strategy::Strategy;

/// Where a resource's `scale` subresource reads and writes, as JSON paths like `.spec.replicas`.
#[derive(Debug, Clone)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Printer {
    /// Columns from `kinetic_machinery::printers::columns` for the built-in kind.
    Builtin,
    /// A CRD's `additionalPrinterColumns`.
    Custom(Vec<Column>),
}

#[derive(Debug, Clone)]
pub struct Resource {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    /// Has a `status` subresource: writes to the main resource ignore `.status` and writes to
    /// `/status` change only `.status`.
    pub status: bool,
    pub scale: Option<ScalePaths>,
    /// Built-in kinds accept strategic merge patch; custom resources do not (as upstream).
    pub builtin: bool,
    pub schema: Option<Arc<Schema>>,
    /// The OpenAPI definition name, e.g. `io.k8s.api.core.v1.Pod`.
    pub schema_name: String,
    pub printer: Printer,
    /// The store's resource key: `group/plural` (`/pods` for the core group).
    pub storage: Arc<str>,
    /// Extra field selectors this kind supports beyond `metadata.name`/`metadata.namespace`.
    pub field_selectors: Vec<String>,
    /// Everything in which this kind's REST semantics differ from another's.
    pub strategy: Arc<dyn Strategy>,
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The `group/resource` string upstream puts in `Status.details` and messages
    /// (`deployments.apps`, `pods`).
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn subresources(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.status {
            out.push("status".to_owned());
        }
        if self.scale.is_some() {
            out.push("scale".to_owned());
        }
        out.extend(self.strategy.subresources().iter().map(|s| (*s).to_owned()));
        out
    }

    /// Whether `sub` is one of the resource's subresources.
    pub fn has_subresource(&self, sub: &str) -> bool {
        match sub {
            "status" => self.status,
            "scale" => self.scale.is_some(),
            _ => self.strategy.subresources().contains(&sub),
        }
    }
}

pub fn storage_key(group: &str, plural: &str) -> Arc<str> {
    Arc::from(format!("{group}/{plural}"))
}

/// The set of served resources. Reads are frequent and cheap; CRD changes replace entries.
#[derive(Default)]
pub struct Registry {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    /// (group, version, plural) → resource
    by_path: HashMap<(String, String, String), Arc<Resource>>,
    /// Order of registration, for stable discovery output.
    order: Vec<(String, String, String)>,
    /// OpenAPI definitions of the built-in kinds (and everything they reference).
    builtin_defs: Arc<Map<String, Value>>,
}

impl Registry {
    pub fn add(&self, r: Resource) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let k = (r.group.clone(), r.version.clone(), r.plural.clone());
        if !inner.by_path.contains_key(&k) {
            inner.order.push(k.clone());
        }
        inner.by_path.insert(k, Arc::new(r));
    }

    /// Removes every served version of a group/plural (a deleted CRD).
    pub fn remove(&self, group: &str, plural: &str) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.by_path.retain(|(g, _, p), _| !(g == group && p == plural));
        inner.order.retain(|(g, _, p)| !(g == group && p == plural));
    }

    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<Resource>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.by_path.get(&(group.to_owned(), version.to_owned(), plural.to_owned())).cloned()
    }

    /// Every served resource in registration order.
    pub fn all(&self) -> Vec<Arc<Resource>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.order.iter().filter_map(|k| inner.by_path.get(k).cloned()).collect()
    }

    /// One served resource per storage key (the first registered version): what the garbage
    /// collector and namespace cleanup iterate over.
    pub fn storage_resources(&self) -> Vec<Arc<Resource>> {
        let mut seen = std::collections::HashSet::new();
        self.all().into_iter().filter(|r| seen.insert(r.storage.clone())).collect()
    }

    /// The served resource of a group, version and kind, or of the group and kind in another
    /// version (how an ownerReference's `apiVersion` and `kind` are resolved, as upstream's
    /// REST mapper does).
    pub fn for_kind(&self, group: &str, version: &str, kind: &str) -> Option<Arc<Resource>> {
        let all = self.all();
        let exact = all.iter().find(|r| r.group == group && r.version == version && r.kind == kind);
        exact.or_else(|| all.iter().find(|r| r.group == group && r.kind == kind)).cloned()
    }

    /// The served resource stored under `storage` (the first registered version).
    pub fn for_storage(&self, storage: &str) -> Option<Arc<Resource>> {
        self.all().into_iter().find(|r| &*r.storage == storage)
    }

    pub fn set_builtin_defs(&self, defs: Map<String, Value>) {
        self.inner.write().unwrap_or_else(|e| e.into_inner()).builtin_defs = Arc::new(defs);
    }

    pub fn builtin_defs(&self) -> Arc<Map<String, Value>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).builtin_defs.clone()
    }
}
