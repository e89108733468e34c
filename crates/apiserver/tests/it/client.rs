//! The typed `kube` client against the embedded server: CRUD, concurrency, subresources,
//! selectors, pagination, garbage collection.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kinetic_testkit::TestServer;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use serde_json::json;

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()},
        "data": {"k": "v"},
    }))
    .unwrap()
}

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}}
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn create_get_update_conflict_and_delete() {
    let t = TestServer::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(t.client().await.unwrap(), "default");
    let created = cms.create(&PostParams::default(), &cm("a", &[])).await.unwrap();
    let md = &created.metadata;
    assert!(md.uid.is_some() && md.creation_timestamp.is_some());
    let rv1: u64 = md.resource_version.as_deref().unwrap().parse().unwrap();

    let err = cms.create(&PostParams::default(), &cm("a", &[])).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{err:?}"
    );

    let mut first = cms.get("a").await.unwrap();
    let mut second = first.clone();
    first.data = Some(BTreeMap::from([("k".into(), "first".into())]));
    let updated = cms.replace("a", &PostParams::default(), &first).await.unwrap();
    let rv2: u64 = updated.metadata.resource_version.as_deref().unwrap().parse().unwrap();
    assert!(rv2 > rv1);
    // The second writer holds the old version: a lost update must be refused.
    second.data = Some(BTreeMap::from([("k".into(), "second".into())]));
    let err = cms.replace("a", &PostParams::default(), &second).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"),
        "{err:?}"
    );
    assert_eq!(cms.get("a").await.unwrap().data.unwrap()["k"], "first");

    cms.delete("a", &DeleteParams::default()).await.unwrap();
    let err = cms.get("a").await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound"),
        "{err:?}"
    );
}

#[tokio::test]
async fn generate_name_and_defaults() {
    let t = TestServer::start().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(t.client().await.unwrap(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"generateName": "web-"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap();
    let p = pods.create(&PostParams::default(), &pod).await.unwrap();
    let name = p.metadata.name.unwrap();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    let spec = p.spec.unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(spec.termination_grace_period_seconds, Some(30));
    assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
    assert_eq!(spec.containers[0].image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Pending"));
}

#[tokio::test]
async fn status_and_spec_writes_are_split_and_generation_tracks_spec() {
    let t = TestServer::start().await.unwrap();
    let deps: Api<Deployment> = Api::namespaced(t.client().await.unwrap(), "default");
    let d = deps.create(&PostParams::default(), &deployment("web")).await.unwrap();
    assert_eq!(d.metadata.generation, Some(1));

    // A status write changes status only, and not the generation.
    // As upstream's deploymentStatusStrategy: annotations come from the request, labels not.
    let st = json!({"status": {"replicas": 3, "observedGeneration": 1}, "spec": {"replicas": 9},
                    "metadata": {"annotations": {"note": "from status"}, "labels": {"x": "y"}}});
    let d = deps.patch_status("web", &PatchParams::default(), &Patch::Merge(&st)).await.unwrap();
    assert_eq!(d.status.as_ref().unwrap().replicas, Some(3));
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(1));
    assert_eq!(d.metadata.generation, Some(1));
    assert_eq!(d.metadata.annotations.as_ref().unwrap()["note"], "from status");
    assert!(d.metadata.labels.as_ref().is_none_or(|l| !l.contains_key("x")));

    // A spec write ignores status and bumps the generation.
    let sp = json!({"spec": {"replicas": 2}, "status": {"replicas": 0}});
    let d = deps.patch("web", &PatchParams::default(), &Patch::Merge(&sp)).await.unwrap();
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(2));
    assert_eq!(d.status.as_ref().unwrap().replicas, Some(3));
    assert_eq!(d.metadata.generation, Some(2));

    // A label change is metadata: no generation bump.
    let lb = json!({"metadata": {"labels": {"tier": "web"}}});
    let d = deps.patch("web", &PatchParams::default(), &Patch::Merge(&lb)).await.unwrap();
    assert_eq!(d.metadata.generation, Some(2));

    // The scale subresource reads and writes spec.replicas.
    let s = deps.get_scale("web").await.unwrap();
    assert_eq!(s.spec.unwrap().replicas, Some(2));
    assert_eq!(s.status.unwrap().selector.as_deref(), Some("app=web"));
    let sp = json!({"spec": {"replicas": 5}});
    deps.patch_scale("web", &PatchParams::default(), &Patch::Merge(&sp)).await.unwrap();
    assert_eq!(deps.get("web").await.unwrap().spec.unwrap().replicas, Some(5));
}

#[tokio::test]
async fn pod_status_writes_keep_labels_and_annotations_but_not_owner_references() {
    // Upstream's podStatusStrategy resets only spec, deletionTimestamp and ownerReferences on a
    // pods/status write; kruise-daemon writes an annotation that way.
    let t = TestServer::start().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(t.client().await.unwrap(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "labels": {"app": "a"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let body = json!({
        "metadata": {
            "annotations": {"apps.kruise.io/runtime-containers-meta": "{}"},
            "labels": {"tier": "web"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "u"}],
        },
        "spec": {"nodeName": "elsewhere"},
        "status": {"phase": "Running"},
    });
    let p = pods.patch_status("p", &PatchParams::default(), &Patch::Merge(&body)).await.unwrap();
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Running"));
    let ann = p.metadata.annotations.unwrap_or_default();
    assert_eq!(ann.get("apps.kruise.io/runtime-containers-meta").map(String::as_str), Some("{}"));
    let labels = p.metadata.labels.unwrap_or_default();
    assert_eq!((labels["app"].as_str(), labels["tier"].as_str()), ("a", "web"));
    assert!(p.metadata.owner_references.is_none(), "ownerReferences are not a status write's");
    assert!(p.spec.unwrap().node_name.is_none(), "nor is the spec");
}

#[tokio::test]
async fn strategic_merge_patch_merges_containers_by_name() {
    let t = TestServer::start().await.unwrap();
    let deps: Api<Deployment> = Api::namespaced(t.client().await.unwrap(), "default");
    let mut d = deployment("two");
    let spec = d.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    let mut side = spec.containers[0].clone();
    side.name = "side".into();
    side.image = Some("busybox:1".into());
    spec.containers.push(side);
    deps.create(&PostParams::default(), &d).await.unwrap();
    let p = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}});
    let d = deps.patch("two", &PatchParams::default(), &Patch::Strategic(&p)).await.unwrap();
    let cs = d.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(cs.len(), 2, "the other container must stay");
    assert_eq!(cs[0].image.as_deref(), Some("nginx:1.27"));
    assert_eq!(cs[1].image.as_deref(), Some("busybox:1"));
}

#[tokio::test]
async fn list_with_selectors_and_pagination() {
    let t = TestServer::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(t.client().await.unwrap(), "default");
    for i in 0..10 {
        let tier = if i % 2 == 0 { "web" } else { "db" };
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), &[("tier", tier)])).await.unwrap();
    }
    let names = |l: kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        l.items.into_iter().map(|c| c.metadata.name.unwrap()).collect()
    };
    let web = cms.list(&ListParams::default().labels("tier=web")).await.unwrap();
    assert_eq!(names(web), vec!["c0", "c2", "c4", "c6", "c8"]);
    let set =
        cms.list(&ListParams::default().labels("tier in (db),tier notin (web)")).await.unwrap();
    assert_eq!(set.items.len(), 5);
    let one = cms.list(&ListParams::default().fields("metadata.name=c3")).await.unwrap();
    assert_eq!(names(one), vec!["c3"]);

    let mut seen = Vec::new();
    let mut lp = ListParams::default().limit(3);
    loop {
        let page = cms.list(&lp).await.unwrap();
        let token = page.metadata.continue_.clone();
        assert!(page.items.len() <= 3);
        seen.extend(names(page));
        match token {
            Some(tok) if !tok.is_empty() => {
                lp = ListParams::default().limit(3).continue_token(&tok)
            }
            _ => break,
        }
    }
    let want: Vec<String> = {
        let mut v: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
        // Every namespace has the root CA's ConfigMap, as on a real cluster.
        v.push("kube-root-ca.crt".to_owned());
        v.sort();
        v
    };
    assert_eq!(seen, want);
}

#[tokio::test]
async fn garbage_collection_follows_propagation_policy() {
    let t = TestServer::start().await.unwrap();
    let client = t.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let owner = |o: &ConfigMap| json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": o.metadata.name, "uid": o.metadata.uid}]);
    let wait_gone = |name: &'static str| {
        let cms = cms.clone();
        async move {
            for _ in 0..100 {
                if cms.get_opt(name).await.unwrap().is_none() {
                    return true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            false
        }
    };

    // Background: the owner goes at once, the dependent after it.
    let o = cms.create(&PostParams::default(), &cm("owner-bg", &[])).await.unwrap();
    let mut dep = cm("dep-bg", &[]);
    dep.metadata.owner_references = serde_json::from_value(owner(&o)).unwrap();
    cms.create(&PostParams::default(), &dep).await.unwrap();
    cms.delete("owner-bg", &DeleteParams::background()).await.unwrap();
    assert!(wait_gone("dep-bg").await, "dependent of a deleted owner must be collected");

    // Orphan: the dependent stays without its owner reference.
    let o = cms.create(&PostParams::default(), &cm("owner-or", &[])).await.unwrap();
    let mut dep = cm("dep-or", &[]);
    dep.metadata.owner_references = serde_json::from_value(owner(&o)).unwrap();
    cms.create(&PostParams::default(), &dep).await.unwrap();
    cms.delete("owner-or", &DeleteParams::orphan()).await.unwrap();
    assert!(wait_gone("owner-or").await);
    let d = cms.get("dep-or").await.unwrap();
    assert!(d.metadata.owner_references.unwrap_or_default().is_empty());

    // Foreground: the owner waits (with a deletionTimestamp) until its dependents are gone.
    let o = cms.create(&PostParams::default(), &cm("owner-fg", &[])).await.unwrap();
    let mut dep = cm("dep-fg", &[]);
    dep.metadata.owner_references = serde_json::from_value(owner(&o)).unwrap();
    dep.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &dep).await.unwrap();
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..Default::default()
    };
    cms.delete("owner-fg", &dp).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let held = cms.get("owner-fg").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(held.metadata.finalizers.unwrap().contains(&"foregroundDeletion".to_string()));
    // Releasing the dependent's finalizer lets both go.
    let release = json!({"metadata": {"finalizers": null}});
    cms.patch("dep-fg", &PatchParams::default(), &Patch::Merge(&release)).await.unwrap();
    assert!(wait_gone("dep-fg").await);
    assert!(wait_gone("owner-fg").await);
}

#[tokio::test]
async fn namespace_deletion_removes_its_contents() {
    let t = TestServer::start().await.unwrap();
    let client = t.client().await.unwrap();
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap();
    nss.create(&PostParams::default(), &ns).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    for i in 0..5 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), &[])).await.unwrap();
    }
    nss.delete("team", &DeleteParams::default()).await.unwrap();
    let mut gone = false;
    for _ in 0..100 {
        if nss.get_opt("team").await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(gone, "the namespace must go once empty");
    let all: Api<ConfigMap> = Api::all(client);
    let left = all.list(&ListParams::default().fields("metadata.namespace=team")).await.unwrap();
    assert!(left.items.is_empty());
    // Writing into a namespace that does not exist is NotFound.
    let err = cms.create(&PostParams::default(), &cm("late", &[])).await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 404), "{err:?}");
}

#[tokio::test]
async fn pods_delete_gracefully_once_bound() {
    let t = TestServer::start().await.unwrap();
    let client = t.client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    // Bind through the binding subresource, as a scheduler does.
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}});
    let req = http::Request::post("/api/v1/namespaces/default/pods/p/binding")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&binding).unwrap())
        .unwrap();
    client.request_text(req).await.unwrap();
    let p = pods.get("p").await.unwrap();
    assert_eq!(p.spec.as_ref().unwrap().node_name.as_deref(), Some("node-1"));
    let conds = p.status.unwrap().conditions.unwrap();
    assert!(conds.iter().any(|c| c.type_ == "PodScheduled" && c.status == "True"));

    // A bound pod waits for its node agent: it only gets a deletion timestamp.
    pods.delete("p", &DeleteParams::default()).await.unwrap();
    let p = pods.get("p").await.unwrap();
    assert!(p.metadata.deletion_timestamp.is_some());
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(30));
    // The agent confirms with grace 0.
    pods.delete("p", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
        .await
        .unwrap();
    assert!(pods.get_opt("p").await.unwrap().is_none());
}

#[tokio::test]
async fn state_survives_a_restart_with_increasing_versions() {
    let mut t = TestServer::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(t.client().await.unwrap(), "default");
    let a = cms.create(&PostParams::default(), &cm("keep", &[])).await.unwrap();
    let b = cms.create(&PostParams::default(), &cm("drop", &[])).await.unwrap();
    cms.delete("drop", &DeleteParams::default()).await.unwrap();
    t.restart().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(t.client().await.unwrap(), "default");
    let again = cms.get("keep").await.unwrap();
    assert_eq!(again.metadata.resource_version, a.metadata.resource_version);
    assert_eq!(again.metadata.uid, a.metadata.uid);
    let c = cms.create(&PostParams::default(), &cm("new", &[])).await.unwrap();
    let rv =
        |m: &ConfigMap| m.metadata.resource_version.as_deref().unwrap().parse::<u64>().unwrap();
    assert!(rv(&c) > rv(&b) + 1, "versions never go back, even after deleting the newest");
}

#[tokio::test]
async fn delete_collection_and_dry_run() {
    let t = TestServer::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(t.client().await.unwrap(), "default");
    for i in 0..6 {
        let tier = if i < 4 { "a" } else { "b" };
        cms.create(&PostParams::default(), &cm(&format!("d{i}"), &[("tier", tier)])).await.unwrap();
    }
    let dry = PostParams { dry_run: true, ..Default::default() };
    let ghost = cms.create(&dry, &cm("ghost", &[])).await.unwrap();
    assert!(ghost.metadata.uid.is_some());
    assert!(cms.get_opt("ghost").await.unwrap().is_none(), "a dry run stores nothing");
    cms.delete_collection(&DeleteParams::default(), &ListParams::default().labels("tier=a"))
        .await
        .unwrap();
    let left: Vec<String> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| c.metadata.name.unwrap())
        .collect();
    assert_eq!(left, vec!["d4", "d5", "kube-root-ca.crt"]);
}

/// Namespaces have no collection delete upstream (discovery lists no `deletecollection`), so
/// `DELETE /api/v1/namespaces` is 405 and deletes nothing.
#[tokio::test]
async fn namespaces_refuse_delete_collection_with_405() {
    use k8s_openapi::api::core::v1::Namespace;
    let t = TestServer::start().await.unwrap();
    let nss: Api<Namespace> = Api::all(t.client().await.unwrap());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "keep-me"}})).unwrap();
    nss.create(&PostParams::default(), &ns).await.unwrap();
    let err =
        nss.delete_collection(&DeleteParams::default(), &ListParams::default()).await.unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (405, "MethodNotAllowed"), "{s:?}")
        }
        other => panic!("{other}"),
    }
    let ns = nss.get("keep-me").await.unwrap();
    assert!(ns.metadata.deletion_timestamp.is_none());
}

#[tokio::test]
async fn deleting_a_crd_removes_its_objects_and_endpoints() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::DynamicObject;
    use kube::core::{ApiResource, GroupVersionKind};
    let t = TestServer::start().await.unwrap();
    let client = t.client().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "gadgets.example.com"},
        "spec": {"group": "example.com", "scope": "Cluster",
            "names": {"plural": "gadgets", "kind": "Gadget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))
    .unwrap();
    let created = crds.create(&PostParams::default(), &crd).await.unwrap();
    let established = created.status.unwrap().conditions.unwrap();
    assert!(established.iter().any(|c| c.type_ == "Established" && c.status == "True"));
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Gadget"),
        "gadgets",
    );
    let gadgets: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let mut g = DynamicObject::new("g1", &ar);
    g.data = json!({"spec": {"anything": [1, 2]}});
    gadgets.create(&PostParams::default(), &g).await.unwrap();
    crds.delete("gadgets.example.com", &DeleteParams::default()).await.unwrap();
    let mut gone = false;
    for _ in 0..100 {
        if crds.get_opt("gadgets.example.com").await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(gone, "the CRD goes once its objects are gone");
    let err = gadgets.list(&ListParams::default()).await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 404), "{err:?}");
}

/// Issue 15, part 2: a continued list read the current state, so objects created, changed or
/// deleted between pages showed up (or went missing) in one list; upstream reads the first
/// page's version for every page.
#[tokio::test]
async fn a_continued_list_read_the_current_state_instead_of_the_first_pages_snapshot() {
    let t = TestServer::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(t.client().await.unwrap(), "default");
    for i in 1..=6 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), &[])).await.unwrap();
    }
    let first = cms.list(&ListParams::default().limit(2)).await.unwrap();
    let names = |l: &kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        l.items.iter().map(|c| c.metadata.name.clone().unwrap()).collect()
    };
    assert_eq!(names(&first), ["c1", "c2"]);
    // Writes between the pages: a new object after the first page's keys, a deletion and a
    // change of objects not listed yet.
    cms.create(&PostParams::default(), &cm("c35", &[])).await.unwrap();
    cms.delete("c4", &DeleteParams::default()).await.unwrap();
    let patch = json!({"data": {"k": "changed"}});
    cms.patch("c5", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let token = first.metadata.continue_.clone().unwrap();
    let rest = cms.list(&ListParams::default().continue_token(&token)).await.unwrap();
    // (`kube-root-ca.crt` is in every namespace, as on a real cluster.)
    assert_eq!(
        names(&rest),
        ["c3", "c4", "c5", "c6", "kube-root-ca.crt"],
        "the first page's state"
    );
    assert_eq!(rest.items[2].data.as_ref().unwrap()["k"], "v", "c5 as it was");
    assert_eq!(rest.metadata.resource_version, first.metadata.resource_version);
    // A new list sees the writes.
    let now = cms.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&now), ["c1", "c2", "c3", "c35", "c5", "c6", "kube-root-ca.crt"]);
}

/// Once the watch history no longer reaches back to the first page, a continue token is 410
/// Expired, as upstream answers once etcd compacted the first page's revision.
#[tokio::test]
async fn a_continue_token_older_than_the_history_is_expired() {
    let t = TestServer::start_with(|c| c.history = 5).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(t.client().await.unwrap(), "default");
    for i in 1..=4 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), &[])).await.unwrap();
    }
    let first = cms.list(&ListParams::default().limit(2)).await.unwrap();
    for i in 0..10 {
        cms.create(&PostParams::default(), &cm(&format!("later{i}"), &[])).await.unwrap();
    }
    let token = first.metadata.continue_.unwrap();
    let err = cms.list(&ListParams::default().continue_token(&token)).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 410 && s.reason == "Expired"),
        "{err:?}"
    );
}
