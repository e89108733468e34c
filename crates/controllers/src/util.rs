//! Helpers shared by the controllers ([`crate::apps`], [`crate::network`], the pool and the
//! EHPA): label selectors, owner references, semantic equality, the error of one reconcile,
//! running several controllers under one shutdown signal, and a pod's start-up time.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kinetic_machinery::selector::LabelSelector as Selector;
use kube::Resource;
use serde_json::Value;

pub(crate) type Labels = BTreeMap<String, String>;

/// A `metav1.LabelSelector` as [`kinetic_machinery::selector::LabelSelector`], as upstream's
/// `metav1.LabelSelectorAsSelector`: `None` (or a selector the API would have refused) matches
/// nothing, an empty one everything.
pub(crate) fn selector_of(sel: Option<&LabelSelector>) -> Selector {
    let nothing = || Selector::from_label_selector(&Value::Null).unwrap_or_default();
    match sel.map(serde_json::to_value) {
        Some(Ok(v)) => Selector::from_label_selector(&v).unwrap_or_else(|_| nothing()),
        _ => nothing(),
    }
}

/// Whether `selector` selects an object with `labels` (upstream's `Selector.Matches`).
pub(crate) fn matches(selector: &Selector, labels: Option<&Labels>) -> bool {
    let labels: Option<serde_json::Map<String, Value>> =
        labels.map(|l| l.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect());
    selector.matches(labels.as_ref())
}

/// Whether a selector has no requirement at all (upstream refuses to act on those).
pub(crate) fn selector_is_empty(sel: Option<&LabelSelector>) -> bool {
    sel.is_none_or(|s| {
        s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
            && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
    })
}

/// The ownerReference with `controller: true`, if any.
pub(crate) fn controller_of<K: Resource>(obj: &K) -> Option<&OwnerReference> {
    obj.meta().owner_references.iter().flatten().find(|r| r.controller == Some(true))
}

/// A controller reference to `owner` with `controller` and `blockOwnerDeletion` set, as
/// upstream's `metav1.NewControllerRef`.
pub(crate) fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

pub(crate) fn name_of<K: Resource>(obj: &K) -> &str {
    obj.meta().name.as_deref().unwrap_or_default()
}

pub(crate) fn ns_of<K: Resource>(obj: &K) -> &str {
    obj.meta().namespace.as_deref().unwrap_or_default()
}

pub(crate) fn uid_of<K: Resource>(obj: &K) -> &str {
    obj.meta().uid.as_deref().unwrap_or_default()
}

pub(crate) fn is_deleting<K: Resource>(obj: &K) -> bool {
    obj.meta().deletion_timestamp.is_some()
}

pub(crate) fn now() -> Time {
    Time(Timestamp::now())
}

/// Drops nulls, empty lists, empty objects and (when `zeros`) zero numbers, recursively: what
/// Go's `omitempty` and apimachinery's semantic equality (nil == empty) do not tell apart.
pub(crate) fn normalize(v: Value, zeros: bool) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, normalize(v, zeros)))
                .filter(|(_, v)| !is_empty(v, zeros))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(|v| normalize(v, zeros)).collect()),
        v => v,
    }
}

fn is_empty(v: &Value, zeros: bool) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::Number(n) => zeros && n.as_f64() == Some(0.0),
        _ => false,
    }
}

/// Semantic equality of two serializable values (nil == empty; with `zeros`, 0 == absent).
pub(crate) fn sem_eq<T: serde::Serialize>(a: &T, b: &T, zeros: bool) -> bool {
    match (serde_json::to_value(a), serde_json::to_value(b)) {
        (Ok(a), Ok(b)) => normalize(a, zeros) == normalize(b, zeros),
        _ => false,
    }
}

/// The failure of one reconcile: logged, and the object is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SyncError {
    #[error("api request failed: {what}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl SyncError {
    pub(crate) fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| SyncError::Api { what, source }
    }
}

/// One shutdown signal for several controllers: each [`Stop::wait`] completes once the
/// shutdown future given to [`run_together`] has.
#[derive(Clone)]
pub(crate) struct Stop(tokio::sync::watch::Receiver<bool>);

impl Stop {
    pub(crate) fn wait(&self) -> impl std::future::Future<Output = ()> + Send + Sync + 'static {
        let mut rx = self.0.clone();
        async move {
            // The sender lives until `run_together` returns; a closed channel means stop too.
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
}

/// Runs `work` (controllers joined with `try_join!`, so the first failure stops the others)
/// until `shutdown` completes, then signals [`Stop`] and lets `work` finish.
pub(crate) async fn run_together<F>(
    shutdown: impl std::future::Future<Output = ()>,
    work: impl FnOnce(Stop) -> F,
) -> crate::Result<()>
where
    F: std::future::Future<Output = crate::Result<()>>,
{
    let (tx, rx) = tokio::sync::watch::channel(false);
    let work = work(Stop(rx));
    let mut work = std::pin::pin!(work);
    tokio::select! {
        result = &mut work => {
            if let Err(error) = &result {
                tracing::error!(%error, "controller stopped");
            }
            return result;
        }
        () = shutdown => {}
    }
    let _ = tx.send(true);
    work.await
}

/// A reflector of every `K` for a `Controller::watches_stream`, which also yields what a
/// kube-runtime trigger never sees: the previous version of an object whose labels or owner
/// references changed (so the owner or Service that selected it before is reconciled too, as
/// client-go's update handlers do with `old`), and on a relist the objects that did not come
/// back (deleted while the watch was away, which client-go reports as deletions).
pub(crate) fn reflect_changes<K>(
    client: &kube::Client,
    config: kube::runtime::watcher::Config,
) -> (
    kube::runtime::reflector::Store<K>,
    impl futures::Stream<Item = Result<K, kube::runtime::watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    use futures::TryStreamExt as _;
    use kube::runtime::WatchStreamExt as _;
    use kube::runtime::reflector::{self, ObjectRef};
    use kube::runtime::watcher::{self, Event};

    let (reader, mut writer) = reflector::store::<K>();
    let store = reader.clone();
    // During a relist: the objects before it, and those the relist brought back so far.
    type Relist<K> = (Vec<std::sync::Arc<K>>, std::collections::HashSet<ObjectRef<K>>);
    let mut relist: Option<Relist<K>> = None;
    let moved = |old: &K, new: &K| {
        old.meta().labels != new.meta().labels
            || old.meta().owner_references != new.meta().owner_references
    };
    let stream = watcher::watcher(kube::Api::<K>::all(client.clone()), config)
        .default_backoff()
        .map_ok(move |event| {
            let mut out: Vec<K> = Vec::new();
            match &event {
                Event::Apply(obj) | Event::InitApply(obj) => {
                    let key = ObjectRef::from_obj(obj);
                    if let Some(old) = store.get(&key).filter(|old| moved(old, obj)) {
                        out.push((*old).clone());
                    }
                    if let (Event::InitApply(_), Some((_, seen))) = (&event, relist.as_mut()) {
                        seen.insert(key);
                    }
                    out.push(obj.clone());
                }
                Event::Delete(obj) => out.push(obj.clone()),
                Event::Init => relist = Some((store.state(), Default::default())),
                Event::InitDone => {
                    if let Some((before, seen)) = relist.take() {
                        out.extend(
                            before
                                .iter()
                                .filter(|o| !seen.contains(&ObjectRef::from_obj(&***o)))
                                .map(|o| (**o).clone()),
                        );
                    }
                }
            }
            writer.apply_watcher_event(&event);
            futures::stream::iter(out.into_iter().map(Ok::<K, watcher::Error>))
        })
        .try_flatten();
    (reader, stream)
}

/// How long `p` took to start (the pool's sizing and the EHPA's lead time read it): its timeline (first sight to Ready), else creation to the Ready
/// condition's transition (one-second resolution). `None` while not Ready.
pub(crate) fn startup_of(p: &k8s_openapi::api::core::v1::Pod) -> Option<std::time::Duration> {
    let ann = p.metadata.annotations.as_ref();
    if let Some(tl) = ann
        .and_then(|a| a.get(kinetic_api::timeline::ANNOTATION))
        .and_then(|s| serde_json::from_str::<kinetic_api::timeline::Timeline>(s).ok())
    {
        let created = tl.created.or_else(|| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        if let (Some(c), Some(r)) = (created, tl.ready) {
            return std::time::Duration::try_from(r.duration_since(c)).ok();
        }
    }
    let created = p.metadata.creation_timestamp.as_ref()?.0;
    let ready = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?
        .last_transition_time
        .as_ref()?
        .0;
    std::time::Duration::try_from(ready.duration_since(created)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn selector_matches(sel: Option<&LabelSelector>, labels: Option<&Labels>) -> bool {
        matches(&selector_of(sel), labels)
    }

    #[test]
    fn selectors_match_like_upstream() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
        };
        assert!(selector_matches(Some(&sel), Some(&labels(&[("app", "web")]))));
        assert!(!selector_matches(Some(&sel), Some(&labels(&[("app", "web"), ("tier", "db")]))));
        assert!(!selector_matches(Some(&sel), None));
        assert!(!selector_matches(None, Some(&labels(&[("app", "web")]))));
        assert!(selector_matches(Some(&LabelSelector::default()), None));
        assert!(selector_is_empty(Some(&LabelSelector::default())));
    }

    #[test]
    fn normalize_treats_nil_as_empty() {
        let a = serde_json::json!({"a": [], "b": {"c": null}, "d": 0, "e": 1});
        assert_eq!(normalize(a.clone(), true), serde_json::json!({"e": 1}));
        assert_eq!(normalize(a, false), serde_json::json!({"d": 0, "e": 1}));
    }
}
