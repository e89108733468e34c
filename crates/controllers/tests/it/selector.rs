//! Issue 10, item 6: a CloneSet whose selector does not match its template leaked one orphan
//! pod a minute on a real cluster, where no Kruise webhook refuses it. The embedded server
//! refuses such workloads as kube-apiserver refuses a Deployment or ReplicaSet; the CloneSet
//! controller, on a server that stores it anyway, leaves it alone and says why.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Pod};
use kinetic_api::kruise::cloneset::CloneSet;
use kinetic_controllers::cloneset;
use kinetic_testkit::TestServer;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

fn workload(api_version: &str, kind: &str, selector: &str, label: &str) -> Value {
    json!({
        "apiVersion": api_version, "kind": kind,
        "metadata": {"name": "w", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": selector}},
            "template": {"metadata": {"labels": {"app": label}},
                         "spec": {"containers": [{"name": "c", "image": "example.invalid/c:v1"}]}},
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selector_not_matching_the_template_is_invalid_for_every_workload() {
    let server = TestServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    kinetic_controllers::crds::install(&client, &cloneset::crds()).await.unwrap();
    for (group, version, kind, plural) in [
        ("apps", "v1", "Deployment", "deployments"),
        ("apps", "v1", "ReplicaSet", "replicasets"),
        ("apps.kruise.io", "v1alpha1", "CloneSet", "clonesets"),
    ] {
        let ar = ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: format!("{group}/{version}"),
            kind: kind.into(),
            plural: plural.into(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
        let obj: DynamicObject =
            serde_json::from_value(workload(&ar.api_version, kind, "a", "b")).unwrap();
        let err = api.create(&PostParams::default(), &obj).await.unwrap_err();
        let kube::Error::Api(s) = err else { panic!("{kind}: {err}") };
        assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"), "{kind}: {s:?}");
        let causes = s.details.map(|d| d.causes).unwrap_or_default();
        assert!(
            causes.iter().any(|c| c.field == "spec.template.metadata.labels"
                && c.message.contains("`selector` does not match template `labels`")),
            "{kind}: {causes:?}"
        );
    }
    server.shutdown().await;
}

async fn until<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "{what} not reached within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloneset_whose_selector_does_not_match_its_template_is_refused_and_leaks_no_pods() {
    // Like a real cluster without OpenKruise's webhook: only the CRD schema applies.
    let server = TestServer::start_with(|c| c.kruise_webhook = false).await.unwrap();
    let client = server.client().await.unwrap();
    kinetic_controllers::crds::install(&client, &cloneset::crds()).await.unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(cloneset::run(client.clone(), async {
        let _ = rx.await;
    }));
    let sets: Api<CloneSet> = Api::namespaced(client.clone(), "default");
    let cs: CloneSet =
        serde_json::from_value(workload("apps.kruise.io/v1alpha1", "CloneSet", "a", "b")).unwrap();
    sets.create(&PostParams::default(), &cs).await.unwrap();

    let invalid = || async {
        let cs = sets.get("w").await.unwrap();
        cs.status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "FailedScale" && c.reason.as_deref() == Some("InvalidSpec"))
    };
    until("the InvalidSpec condition", || async { invalid().await.is_some() }).await;
    let cond = invalid().await.unwrap();
    assert_eq!(cond.status, "True");
    let message = cond.message.unwrap_or_default();
    assert!(
        message.contains("spec.template.metadata.labels")
            && message.contains("`selector` does not match template `labels`"),
        "{message}"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    until("a Warning Event saying why", || async {
        events.list(&ListParams::default()).await.unwrap().items.iter().any(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some("InvalidSpec")
                && e.involved_object.name.as_deref() == Some("w")
                && e.message.as_deref().is_some_and(|m| m.contains("does not match template"))
        })
    })
    .await;

    // Fixed (the template's labels may change): the condition goes and the CloneSet gets
    // exactly its two pods — none were created, and orphaned, while it was invalid.
    let fix = json!({"spec": {"template": {"metadata": {"labels": {"app": "a"}}}}});
    sets.patch("w", &PatchParams::default(), &Patch::Merge(fix)).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    until("two pods and no condition", || async {
        pods.list(&ListParams::default()).await.unwrap().items.len() == 2
            && invalid().await.is_none()
    })
    .await;
    let all = pods.list(&ListParams::default()).await.unwrap().items;
    assert!(
        all.iter().all(|p| p.metadata.labels.as_ref().and_then(|l| l.get("app"))
            == Some(&"a".to_owned())),
        "orphans of the invalid template: {all:?}"
    );

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap().unwrap();
    server.shutdown().await;
}
