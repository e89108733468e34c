//! Every acknowledged write survives `kill -9` of the server at any moment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn acknowledged_writes_survive_kill_9_during_a_write_storm() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::free_port();
    let mut server = crate::start("apiserver", dir.path(), port).await;
    let client = kinetic_testkit::client_from_kubeconfig(&server.kubeconfig).await.unwrap();
    let acked: Arc<Mutex<HashMap<String, (String, String)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..16 {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let cm: ConfigMap =
                    serde_json::from_value(json!({"metadata": {"name": format!("w{w}-{i}")}, "data": {"i": i.to_string()}}))
                        .unwrap();
                match cms.create(&PostParams::default(), &cm).await {
                    Ok(c) => {
                        let md = c.metadata;
                        acked.lock().unwrap().insert(md.name.unwrap(), (md.resource_version.unwrap(), md.uid.unwrap()));
                    }
                    Err(_) => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.child.start_kill().unwrap();
    server.child.wait().await.unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 100, "the storm wrote only {} objects", acked.len());

    let server = crate::start("apiserver", dir.path(), port).await;
    let client = kinetic_testkit::client_from_kubeconfig(&server.kubeconfig).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let stored: HashMap<String, (String, String)> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| {
            let md = c.metadata;
            (md.name.unwrap(), (md.resource_version.unwrap(), md.uid.unwrap()))
        })
        .collect();
    for (name, v) in &acked {
        assert_eq!(stored.get(name), Some(v), "acknowledged write {name} lost or changed");
    }
    let max_acked = acked.values().map(|(rv, _)| rv.parse::<u64>().unwrap()).max().unwrap();
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "after"}})).unwrap();
    let after = cms.create(&PostParams::default(), &cm).await.unwrap();
    assert!(after.metadata.resource_version.unwrap().parse::<u64>().unwrap() > max_acked);
}

#[tokio::test]
async fn a_watch_resumes_after_kill_9_from_the_version_seen_before() {
    use futures::{StreamExt as _, TryStreamExt as _};
    use kube::api::{WatchEvent, WatchParams};

    let dir = tempfile::tempdir().unwrap();
    let port = crate::free_port();
    let mut server = crate::start("apiserver", dir.path(), port).await;
    let client = kinetic_testkit::client_from_kubeconfig(&server.kubeconfig).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm = |n: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": n}})).unwrap()
    };
    let seen = cms.create(&PostParams::default(), &cm("a")).await.unwrap();
    let rv = seen.metadata.resource_version.unwrap();
    cms.create(&PostParams::default(), &cm("b")).await.unwrap();
    cms.delete("a", &Default::default()).await.unwrap();
    server.child.start_kill().unwrap();
    server.child.wait().await.unwrap();

    let server = crate::start("apiserver", dir.path(), port).await;
    let client = kinetic_testkit::client_from_kubeconfig(&server.kubeconfig).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut stream = cms.watch(&WatchParams::default().timeout(5), &rv).await.unwrap().boxed();
    let mut events = Vec::new();
    while let Some(ev) = stream.try_next().await.unwrap() {
        events.push(match ev {
            WatchEvent::Added(o) => format!("ADDED {}", o.metadata.name.unwrap()),
            WatchEvent::Modified(o) => format!("MODIFIED {}", o.metadata.name.unwrap()),
            WatchEvent::Deleted(o) => format!("DELETED {}", o.metadata.name.unwrap()),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => panic!("the history did not survive kill -9: {e:?}"),
        });
        if events.len() == 2 {
            break;
        }
    }
    assert_eq!(events, vec!["ADDED b", "DELETED a"]);
}
