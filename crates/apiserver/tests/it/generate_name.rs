//! `generateName` collisions (issue 10: 3.9 % of generated-name creates failed with 409 at 485k
//! objects, where kube-apiserver retries a taken name, KEP-4420). The suffix source is replaced
//! so that collisions happen on purpose.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kinetic_apiserver::registry::Registry;
use kinetic_apiserver::rest::{Api, SuffixSource, WriteOptions};
use kinetic_apiserver::store::Store;
use serde_json::json;

/// An `Api` over a fresh store whose suffixes are `first` for the first `repeats` names, then
/// `ccccc`; also returns how many suffixes were drawn.
fn api(dir: &tempfile::TempDir, first: &'static str, repeats: usize) -> (Api, Arc<AtomicUsize>) {
    let store = Store::open(&dir.path().join("state.db"), 1000).unwrap();
    let registry = Arc::new(Registry::default());
    kinetic_apiserver::builtin::register(&registry).unwrap();
    let drawn = Arc::new(AtomicUsize::new(0));
    let counter = drawn.clone();
    let suffixes: SuffixSource = Arc::new(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        if n < repeats { first.to_owned() } else { "ccccc".to_owned() }
    });
    (Api::new(store, registry).with_suffixes(suffixes), drawn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_name_collisions_give_409_unless_the_server_retries() {
    let dir = tempfile::tempdir().unwrap();
    let (api, drawn) = api(&dir, "bbbbb", 3);
    let res = api.registry.get("", "v1", "namespaces").unwrap();
    let opts = WriteOptions::default();
    api.create(&res, "", json!({"metadata": {"name": "gen-bbbbb"}}), &opts).await.unwrap();
    // Three taken names, then a free one: the create succeeds with it.
    let made =
        api.create(&res, "", json!({"metadata": {"generateName": "gen-"}}), &opts).await.unwrap();
    assert_eq!(made.obj.value()["metadata"]["name"], "gen-ccccc");
    assert_eq!(drawn.load(Ordering::SeqCst), 4);
    // A dry run retries the same way.
    api.create(&res, "", json!({"metadata": {"name": "dry-bbbbb"}}), &opts).await.unwrap();
    drawn.store(0, Ordering::SeqCst);
    let dry = WriteOptions { dry_run: true, ..Default::default() };
    let made =
        api.create(&res, "", json!({"metadata": {"generateName": "dry-"}}), &dry).await.unwrap();
    assert_eq!(made.obj.value()["metadata"]["name"], "dry-ccccc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_name_gives_up_after_upstreams_eight_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let (api, drawn) = api(&dir, "bbbbb", usize::MAX);
    let res = api.registry.get("", "v1", "namespaces").unwrap();
    let opts = WriteOptions::default();
    api.create(&res, "", json!({"metadata": {"name": "gen-bbbbb"}}), &opts).await.unwrap();
    drawn.store(0, Ordering::SeqCst);
    let err = api
        .create(&res, "", json!({"metadata": {"generateName": "gen-"}}), &opts)
        .await
        .unwrap_err();
    assert_eq!((err.code, err.reason), (409, "AlreadyExists"));
    assert_eq!(drawn.load(Ordering::SeqCst), 8, "the first name and 7 retries");
    // A create with an explicit name never retries.
    let err =
        api.create(&res, "", json!({"metadata": {"name": "gen-bbbbb"}}), &opts).await.unwrap_err();
    assert_eq!(err.code, 409);
    assert_eq!(drawn.load(Ordering::SeqCst), 8);
}
