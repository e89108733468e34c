//! Watch semantics through `kube`: exact resumption, 410 Gone, the runtime's `watcher`,
//! `reflector` and a `Controller` reconciling a toy custom resource.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kinetic_testkit::TestServer;
use kube::api::{
    Api, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{Controller, WatchStreamExt as _, controller::Action, reflector, watcher};
use serde_json::json;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"w": "1"}}})).unwrap()
}

#[tokio::test]
async fn watch_resumes_exactly_after_a_version() {
    let t = TestServer::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(t.client().await.unwrap(), "default");
    let first = cms.create(&PostParams::default(), &cm("a")).await.unwrap();
    let rv = first.metadata.resource_version.clone().unwrap();
    cms.create(&PostParams::default(), &cm("b")).await.unwrap();
    let lb = json!({"metadata": {"labels": {"x": "y"}}});
    cms.patch("a", &PatchParams::default(), &Patch::Merge(&lb)).await.unwrap();
    cms.delete("b", &Default::default()).await.unwrap();

    let mut stream = cms.watch(&WatchParams::default().timeout(5), &rv).await.unwrap().boxed();
    let mut seen = Vec::new();
    while let Some(ev) = stream.try_next().await.unwrap() {
        match ev {
            WatchEvent::Added(o) => seen.push(format!("ADDED {}", o.metadata.name.unwrap())),
            WatchEvent::Modified(o) => seen.push(format!("MODIFIED {}", o.metadata.name.unwrap())),
            WatchEvent::Deleted(o) => seen.push(format!("DELETED {}", o.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
        if seen.len() == 3 {
            break;
        }
    }
    assert_eq!(seen, vec!["ADDED b", "MODIFIED a", "DELETED b"]);
}

/// The events a watch from `rv` receives until `n` arrived (or the 5 s watch ends).
async fn events_after(cms: &Api<ConfigMap>, rv: &str, n: usize) -> Vec<String> {
    let mut stream = cms.watch(&WatchParams::default().timeout(5), rv).await.unwrap().boxed();
    let mut seen = Vec::new();
    while let Some(ev) = stream.try_next().await.unwrap() {
        match ev {
            WatchEvent::Added(o) => seen.push(format!("ADDED {}", o.metadata.name.unwrap())),
            WatchEvent::Modified(o) => seen.push(format!("MODIFIED {}", o.metadata.name.unwrap())),
            WatchEvent::Deleted(o) => seen.push(format!("DELETED {}", o.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => seen.push(format!("ERROR {} {}", e.code, e.message)),
        }
        if seen.len() == n {
            break;
        }
    }
    seen
}

#[tokio::test]
async fn a_watch_resumes_after_a_restart_from_a_version_seen_before_it() {
    let mut t = TestServer::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(t.client().await.unwrap(), "default");
    let a = cms.create(&PostParams::default(), &cm("a")).await.unwrap();
    let rv = a.metadata.resource_version.unwrap();
    cms.create(&PostParams::default(), &cm("b")).await.unwrap();
    let lb = json!({"metadata": {"labels": {"x": "y"}}});
    cms.patch("a", &PatchParams::default(), &Patch::Merge(&lb)).await.unwrap();
    cms.delete("b", &Default::default()).await.unwrap();
    // The history is durable (written with the objects): a client that saw `rv` before the
    // restart resumes from it, as it would from etcd, instead of getting 410 and re-listing.
    t.restart().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(t.client().await.unwrap(), "default");
    cms.create(&PostParams::default(), &cm("c")).await.unwrap();
    assert_eq!(
        events_after(&cms, &rv, 4).await,
        vec!["ADDED b", "MODIFIED a", "DELETED b", "ADDED c"]
    );
    // A selector sees `a` enter the selection at the patch, from the state before it.
    let sel: Api<ConfigMap> = Api::namespaced(t.client().await.unwrap(), "default");
    let mut stream =
        sel.watch(&WatchParams::default().labels("x=y").timeout(5), &rv).await.unwrap().boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Added(o)) => assert_eq!(o.metadata.name.as_deref(), Some("a")),
        other => panic!("expected a entering the selection, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_from_a_version_older_than_the_history_is_gone() {
    let t = TestServer::start_with(|c| c.history = 3).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(t.client().await.unwrap(), "default");
    let a = cms.create(&PostParams::default(), &cm("a")).await.unwrap();
    let mut last = 0;
    for n in ["b", "c", "d", "e"] {
        let o = cms.create(&PostParams::default(), &cm(n)).await.unwrap();
        last = o.metadata.resource_version.unwrap().parse::<u64>().unwrap();
    }
    let rv = a.metadata.resource_version.unwrap();
    let mut stream = cms.watch(&WatchParams::default().timeout(5), &rv).await.unwrap().boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"), "{e:?}");
            // Upstream's watch cache names the oldest version it still serves from: at least
            // the fourth newest, as the history keeps three events.
            let floor = e
                .message
                .strip_prefix(&format!("too old resource version: {rv} ("))
                .and_then(|m| m.strip_suffix(')'))
                .and_then(|f| f.parse::<u64>().ok());
            assert!(floor.is_some_and(|f| f >= last - 3), "{}", e.message);
        }
        other => panic!("expected a 410 error event, got {other:?}"),
    }
}

#[tokio::test]
async fn label_selected_watch_sees_objects_enter_and_leave() {
    let t = TestServer::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(t.client().await.unwrap(), "default");
    let c = cms.create(&PostParams::default(), &cm("a")).await.unwrap();
    let rv = c.metadata.resource_version.unwrap();
    let mut stream =
        cms.watch(&WatchParams::default().labels("w=2").timeout(5), &rv).await.unwrap().boxed();
    let set = |v: &str| json!({"metadata": {"labels": {"w": v}}});
    cms.patch("a", &PatchParams::default(), &Patch::Merge(&set("2"))).await.unwrap();
    cms.patch("a", &PatchParams::default(), &Patch::Merge(&set("3"))).await.unwrap();
    let mut kinds = Vec::new();
    while let Some(ev) = stream.try_next().await.unwrap() {
        kinds.push(match ev {
            WatchEvent::Added(_) => "ADDED",
            WatchEvent::Modified(_) => "MODIFIED",
            WatchEvent::Deleted(_) => "DELETED",
            _ => continue,
        });
        if kinds.len() == 2 {
            break;
        }
    }
    assert_eq!(kinds, vec!["ADDED", "DELETED"]);
}

#[tokio::test]
async fn reflector_store_converges() {
    let t = TestServer::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(t.client().await.unwrap(), "default");
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector(writer, watcher(cms.clone(), watcher::Config::default()));
    let task = tokio::spawn(stream.applied_objects().for_each(|_| async {}));
    for i in 0..20 {
        cms.create(&PostParams::default(), &cm(&format!("r{i}"))).await.unwrap();
    }
    for i in 0..5 {
        cms.delete(&format!("r{i}"), &Default::default()).await.unwrap();
    }
    // 15 left, and `kube-root-ca.crt`, which every namespace has.
    let mut n = 0;
    for _ in 0..100 {
        n = reader.state().len();
        if n == 16 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    assert_eq!(n, 16);
}

const CRD: &str = r#"{
  "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
  "metadata": {"name": "widgets.example.com"},
  "spec": {"group": "example.com", "scope": "Namespaced",
    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
    "versions": [{"name": "v1", "served": true, "storage": true,
      "subresources": {"status": {}},
      "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
      "schema": {"openAPIV3Schema": {"type": "object", "properties": {
        "spec": {"type": "object", "properties": {
          "size": {"type": "integer", "minimum": 1},
          "color": {"type": "string", "default": "blue"}}},
        "status": {"type": "object", "properties": {"seen": {"type": "integer"}}}}}}}]}
}"#;

#[tokio::test]
async fn a_controller_reconciles_a_custom_resource() {
    let t = TestServer::start().await.unwrap();
    let client = t.client().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_str(CRD).unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let gvk = GroupVersionKind::gvk("example.com", "v1", "Widget");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);

    let mut w = DynamicObject::new("w1", &ar);
    w.data = json!({"spec": {"size": 3}});
    let created = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(created.data["spec"]["color"], "blue", "schema defaults apply");

    // The controller writes status.seen = spec.size through the status subresource.
    let ctx = Arc::new(widgets.clone());
    let ctrl = Controller::new_with(widgets.clone(), watcher::Config::default(), ar.clone())
        .run(
            |obj: Arc<DynamicObject>, api: Arc<Api<DynamicObject>>| async move {
                let size = obj.data["spec"]["size"].clone();
                let name = obj.metadata.name.clone().unwrap_or_default();
                let st = json!({"status": {"seen": size}});
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&st)).await?;
                Ok::<_, kube::Error>(Action::await_change())
            },
            |_, _: &kube::Error, _| Action::requeue(Duration::from_millis(200)),
            ctx,
        )
        .for_each(|_| async {});
    let task = tokio::spawn(ctrl);
    let mut seen = json!(null);
    for _ in 0..100 {
        seen = widgets.get("w1").await.unwrap().data["status"]["seen"].clone();
        if seen == json!(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    assert_eq!(seen, json!(3));

    // Schema validation rejects a bad value with a field cause.
    let mut bad = DynamicObject::new("bad", &ar);
    bad.data = json!({"spec": {"size": 0}});
    let err = widgets.create(&PostParams::default(), &bad).await.unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"), "{s:?}");
            assert!(s.message.contains("spec.size"), "{}", s.message);
        }
        other => panic!("{other:?}"),
    }
    let list = widgets.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
}

#[tokio::test]
async fn bookmarks_carry_the_latest_version() {
    let t = TestServer::start().await.unwrap();
    let client = t.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let c = cms.create(&PostParams::default(), &cm("a")).await.unwrap();
    let rv = c.metadata.resource_version.unwrap();
    let mut stream = cms.watch(&WatchParams::default().timeout(8), &rv).await.unwrap().boxed();
    // A write elsewhere advances the version without an event for this watch.
    let other: Api<ConfigMap> = Api::namespaced(client, "kube-system");
    let o = other.create(&PostParams::default(), &cm("elsewhere")).await.unwrap();
    let want = o.metadata.resource_version.unwrap();
    let mut got = None;
    while let Some(ev) = stream.try_next().await.unwrap() {
        if let WatchEvent::Bookmark(b) = ev {
            got = Some(b.metadata.resource_version);
            break;
        }
    }
    assert_eq!(got.as_deref(), Some(want.as_str()));
}

/// Issue 15, part 2: a watcher that does not read is cut off once it is a whole event buffer
/// behind (here 256 events), and the watchers that keep up receive every event meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_is_cut_off_without_holding_back_the_others() {
    use futures::StreamExt as _;
    use http_body_util::BodyExt as _;
    let t = kinetic_testkit::TestServer::start_with(|c| c.event_buffer = 256).await.unwrap();
    let client = t.client().await.unwrap();
    let path =
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=1&timeoutSeconds=120";
    // The slow one: its response is taken but its body is not read until the writes are done.
    let req = http::Request::get(path).body(Vec::new()).unwrap();
    let slow = client.send(req.map(kube::client::Body::from)).await.unwrap();
    assert_eq!(slow.status(), 200);
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), "default");
    let fast = cms.watch(&kube::api::WatchParams::default().timeout(120), "1").await.unwrap();
    let api = t.server().api().clone();
    let res = api.registry.get("", "v1", "configmaps").unwrap();
    // Enough bytes that socket buffers cannot hold them all for the slow watcher.
    let data = "x".repeat(16 * 1024);
    const WRITES: usize = 1500;
    let writer = tokio::spawn(async move {
        for i in 0..WRITES {
            let body =
                serde_json::json!({"metadata": {"name": format!("c{i}")}, "data": {"k": data}});
            let opts = kinetic_apiserver::rest::WriteOptions::default();
            api.create(&res, "default", body, &opts).await.unwrap();
        }
    });
    let mut fast = Box::pin(fast);
    let mut seen = 0;
    while seen < WRITES {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(30), fast.next())
            .await
            .expect("the reading watcher keeps receiving")
            .expect("and its stream does not end")
            .unwrap();
        if matches!(ev, kube::api::WatchEvent::Added(_)) {
            seen += 1;
        }
    }
    writer.await.unwrap();
    // The slow watcher's stream ends (the server closed it) before it delivered every event.
    let mut body = slow.into_body();
    let mut lines = 0;
    let read_all = async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                lines += data.iter().filter(|b| **b == b'\n').count();
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), read_all)
        .await
        .expect("the slow watch is ended by the server, not by its timeout");
    assert!(lines < WRITES, "the slow watcher was cut off ({lines} of {WRITES} events)");
}
