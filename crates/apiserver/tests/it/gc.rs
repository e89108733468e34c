//! The garbage collector under a write storm (issue 15, part 3). It used to keep deciding from
//! an index that had missed events when it fell behind the event stream, and deleted a
//! dependent whose owner was merely missing from that index: live objects were deleted. The
//! event buffer is made tiny here so that a few thousand writes make it fall behind for sure.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kinetic_apiserver::registry::Resource;
use kinetic_apiserver::rest::{Api, DeleteOptions, WriteOptions};
use kinetic_testkit::TestServer;
use serde_json::{Value, json};

async fn create(api: &Api, res: &Resource, name: &str, owner: Option<&Value>) -> Value {
    let mut body = json!({"metadata": {"name": name}, "data": {"k": "v"}});
    if let Some(o) = owner {
        body["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "v1", "kind": "ConfigMap",
            "name": o["metadata"]["name"], "uid": o["metadata"]["uid"],
        }]);
    }
    api.create(res, "default", body, &WriteOptions::default()).await.unwrap().obj.value()
}

async fn delete(api: &Api, res: &Resource, name: &str) {
    api.delete(res, "default", name, &DeleteOptions::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_fell_behind_and_deleted_live_dependents_of_owners_created_during_a_storm() {
    let t = TestServer::start_with(|c| c.event_buffer = 8).await.unwrap();
    let api = t.server().api().clone();
    let res = api.registry.get("", "v1", "configmaps").unwrap();

    // Owners from before the storm, each with a dependent; they are deleted during it.
    for i in 0..100 {
        let o = create(&api, &res, &format!("old-{i}"), None).await;
        create(&api, &res, &format!("old-{i}-dep"), Some(&o)).await;
    }

    // The storm: writers create owner/dependent pairs (every third owner is deleted again at
    // once), while another task deletes the old owners.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (api, res) = (api.clone(), res.clone());
            tokio::spawn(async move {
                for j in 0..120 {
                    let o = create(&api, &res, &format!("new-{w}-{j}"), None).await;
                    create(&api, &res, &format!("new-{w}-{j}-dep"), Some(&o)).await;
                    if j % 3 == 0 {
                        delete(&api, &res, &format!("new-{w}-{j}")).await;
                    }
                }
            })
        })
        .collect();
    let deleter = {
        let (api, res) = (api.clone(), res.clone());
        tokio::spawn(async move {
            for i in 0..100 {
                delete(&api, &res, &format!("old-{i}")).await;
                tokio::task::yield_now().await;
            }
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    deleter.await.unwrap();
    let end = Instant::now();
    assert!(
        api.metrics.gc_rebuilds.load(Ordering::Relaxed) > 0,
        "the storm must make the collector fall behind, or this test proves nothing"
    );

    let exists = |name: &str| api.get(&res, "default", name).is_ok();
    // No live object was deleted: every dependent of a live owner is there.
    for w in 0..8 {
        for j in (0..120).filter(|j| j % 3 != 0) {
            let name = format!("new-{w}-{j}-dep");
            assert!(exists(&name), "{name} has a live owner and was deleted");
        }
    }
    // The dependents of owners deleted during the storm are gone within seconds of its end.
    let orphans: Vec<String> = (0..100)
        .map(|i| format!("old-{i}-dep"))
        .chain((0..8).flat_map(|w| (0..120).step_by(3).map(move |j| format!("new-{w}-{j}-dep"))))
        .collect();
    while orphans.iter().any(|n| exists(n)) {
        let left = orphans.iter().filter(|n| exists(n)).count();
        assert!(end.elapsed() < Duration::from_secs(10), "{left} orphans left 10 s after");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And still none of the live ones.
    for w in 0..8 {
        for j in (0..120).filter(|j| j % 3 != 0) {
            assert!(exists(&format!("new-{w}-{j}-dep")));
        }
    }
}
