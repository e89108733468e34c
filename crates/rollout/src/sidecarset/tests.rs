//! Table tests after upstream's `pkg/webhook/pod/mutating/sidecarset_test.go` and
//! `pkg/controller/sidecarset/sidecarset_strategy_test.go`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kinetic_api::kruise::sidecarset::*;
use serde_json::{Value, json};

use super::inject::{InjectContext, inject, to_inject};
use super::*;

fn ss(name: &str, spec: Value) -> SidecarSet {
    serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1alpha1", "kind": "SidecarSet",
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("a SidecarSet")
}

fn pod(labels: Value, spec: Value) -> Value {
    json!({"metadata": {"name": "p", "namespace": "default", "labels": labels}, "spec": spec})
}

fn app_pod() -> Value {
    pod(
        json!({"app": "nginx"}),
        json!({"containers": [{
            "name": "nginx", "image": "nginx:1.15.1",
            "env": [{"name": "nginx-env", "value": "value-1"}, {"name": "hello", "value": "world"}],
            "volumeMounts": [{"name": "nginx-volume", "mountPath": "/data/nginx"}],
        }], "volumes": [{"name": "nginx-volume", "emptyDir": {}}]}),
    )
}

fn run(pod: &mut Value, sets: &[SidecarSet], ns_labels: &BTreeMap<String, String>) -> Vec<String> {
    let chosen: Vec<_> =
        to_inject(pod, sets, ns_labels).into_iter().map(|s| resolve(s, &[])).collect();
    inject(
        pod,
        &chosen,
        &InjectContext { namespace_labels: ns_labels, now: "2026-12-07T04:00:00Z" },
    )
}

fn names(pod: &Value, field: &str) -> Vec<String> {
    pod["spec"][field]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["containers"]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

fn sidecar(name: &str, extra: Value) -> Value {
    let mut c = json!({"name": name, "image": format!("{name}:v1")});
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    c
}

#[test]
fn inject_policy_places_sidecars_before_or_after_the_app() {
    let set = ss(
        "s",
        json!({"selector": {"matchLabels": {"app": "nginx"}}, "containers": [
            sidecar("before", json!({})),
            sidecar("after", json!({"podInjectPolicy": "AfterAppContainer"})),
        ]}),
    );
    let mut p = app_pod();
    assert_eq!(run(&mut p, &[set], &BTreeMap::new()), ["s"]);
    assert_eq!(names(&p, "containers"), ["before", "nginx", "after"]);
    assert_eq!(container(&p, "before")["env"][0], json!({"name": "IS_INJECTED", "value": "true"}));
    assert_eq!(p["metadata"]["annotations"][SIDECARSET_INJECTED_LIST_ANNOTATION], "s");
}

#[test]
fn selection_namespace_and_paused() {
    let ns_labels: BTreeMap<String, String> = [("team".into(), "a".into())].into();
    let cases: Vec<(&str, Value, bool)> = vec![
        ("selector matches", json!({"selector": {"matchLabels": {"app": "nginx"}}}), true),
        ("selector does not", json!({"selector": {"matchLabels": {"app": "other"}}}), false),
        ("no selector matches nothing", json!({}), false),
        (
            "other namespace",
            json!({"selector": {"matchLabels": {"app": "nginx"}}, "namespace": "kube-system"}),
            false,
        ),
        (
            "same namespace",
            json!({"selector": {"matchLabels": {"app": "nginx"}}, "namespace": "default"}),
            true,
        ),
        (
            "namespaceSelector matches",
            json!({"selector": {"matchLabels": {"app": "nginx"}}, "namespaceSelector": {"matchLabels": {"team": "a"}}}),
            true,
        ),
        (
            "namespaceSelector does not",
            json!({"selector": {"matchLabels": {"app": "nginx"}}, "namespaceSelector": {"matchLabels": {"team": "b"}}}),
            false,
        ),
        (
            "injection paused",
            json!({"selector": {"matchLabels": {"app": "nginx"}}, "injectionStrategy": {"paused": true}}),
            false,
        ),
    ];
    for (case, mut spec, want) in cases {
        spec["containers"] = json!([sidecar("side", json!({}))]);
        let mut p = app_pod();
        let got = run(&mut p, &[ss("s", spec)], &ns_labels);
        assert_eq!(!got.is_empty(), want, "{case}");
        assert_eq!(names(&p, "containers").len(), if want { 2 } else { 1 }, "{case}");
    }
}

#[test]
fn injection_is_idempotent_and_skips_existing_names() {
    let set = ss(
        "s",
        json!({"selector": {"matchLabels": {"app": "nginx"}}, "containers": [
            sidecar("side", json!({})), sidecar("nginx", json!({})),
        ]}),
    );
    let mut p = app_pod();
    run(&mut p, std::slice::from_ref(&set), &BTreeMap::new());
    let once = p.clone();
    // A second admission (the embedded server and the webhook) changes nothing.
    assert!(run(&mut p, &[set], &BTreeMap::new()).is_empty());
    assert_eq!(p, once);
    // The app container of the same name is kept, not duplicated.
    assert_eq!(names(&p, "containers"), ["side", "nginx"]);
    assert_eq!(container(&p, "nginx")["image"], "nginx:1.15.1");
}

#[test]
fn several_sidecarsets_in_name_order() {
    let a = ss(
        "a",
        json!({"selector": {"matchLabels": {"app": "nginx"}}, "containers": [sidecar("a1", json!({}))]}),
    );
    let b = ss(
        "b",
        json!({"selector": {"matchLabels": {"app": "nginx"}}, "containers": [sidecar("b1", json!({}))]}),
    );
    let mut p = app_pod();
    assert_eq!(run(&mut p, &[b, a], &BTreeMap::new()), ["a", "b"]);
    assert_eq!(names(&p, "containers"), ["a1", "b1", "nginx"]);
    assert_eq!(p["metadata"]["annotations"][SIDECARSET_INJECTED_LIST_ANNOTATION], "a,b");
    let hashes: Value = serde_json::from_str(
        p["metadata"]["annotations"][SIDECARSET_HASH_ANNOTATION].as_str().unwrap_or(""),
    )
    .expect("hash annotation is JSON");
    assert_eq!(hashes["a"]["sidecarSetName"], "a");
    assert_eq!(hashes["b"]["sidecarList"], json!(["b1"]));
}

#[test]
fn volumes_share_volume_policy_and_pull_secrets() {
    let set = ss(
        "s",
        json!({"selector": {"matchLabels": {"app": "nginx"}},
            "containers": [
                sidecar("shared", json!({"shareVolumePolicy": {"type": "enabled"},
                    "volumeMounts": [{"name": "log", "mountPath": "/var/log"}]})),
                sidecar("private", json!({"shareVolumePolicy": {"type": "disabled"}})),
            ],
            "volumes": [{"name": "log", "emptyDir": {}}, {"name": "nginx-volume", "hostPath": {"path": "/x"}}],
            "imagePullSecrets": [{"name": "reg"}],
        }),
    );
    let mut p = app_pod();
    p["spec"]["imagePullSecrets"] = json!([{"name": "reg"}]);
    run(&mut p, &[set], &BTreeMap::new());
    let mounts: Vec<&str> = container(&p, "shared")["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    assert_eq!(mounts, ["/var/log", "/data/nginx"]);
    assert!(container(&p, "private").get("volumeMounts").is_none());
    // The pod's own volume of the same name wins.
    assert_eq!(names(&p, "volumes"), ["nginx-volume", "log"]);
    assert_eq!(p["spec"]["volumes"][0]["emptyDir"], json!({}));
    assert_eq!(p["spec"]["imagePullSecrets"], json!([{"name": "reg"}]));
}

#[test]
fn transfer_env_by_name_and_from_a_label() {
    let set = ss(
        "s",
        json!({"selector": {"matchLabels": {"app": "nginx"}}, "containers": [
            sidecar("side", json!({"transferEnv": [
                {"sourceContainerName": "nginx", "envName": "nginx-env"},
                {"sourceContainerNameFrom": {"fieldRef": {"fieldPath": "metadata.labels['main']"}}, "envNames": ["hello", "missing"]},
            ]})),
        ]}),
    );
    let mut p = app_pod();
    p["metadata"]["labels"]["main"] = json!("nginx");
    run(&mut p, &[set], &BTreeMap::new());
    assert_eq!(
        container(&p, "side")["env"],
        json!([
            {"name": "IS_INJECTED", "value": "true"},
            {"name": "nginx-env", "value": "value-1"},
            {"name": "hello", "value": "world"},
        ])
    );
}

#[test]
fn init_containers_sorted_and_appended_including_native_sidecars() {
    let set = ss(
        "s",
        json!({"selector": {"matchLabels": {"app": "nginx"}}, "initContainers": [
            {"name": "z-init", "image": "busybox"},
            {"name": "a-native", "image": "envoy", "restartPolicy": "Always"},
        ]}),
    );
    let mut p = app_pod();
    p["spec"]["initContainers"] = json!([{"name": "own", "image": "busybox"}]);
    run(&mut p, &[set], &BTreeMap::new());
    assert_eq!(names(&p, "initContainers"), ["own", "a-native", "z-init"]);
    assert_eq!(p["spec"]["initContainers"][1]["restartPolicy"], "Always");
    assert_eq!(p["spec"]["initContainers"][1]["env"][0]["name"], "IS_INJECTED");
}

#[test]
fn patch_pod_metadata_policies() {
    let set = ss(
        "s",
        json!({"selector": {"matchLabels": {"app": "nginx"}}, "containers": [sidecar("side", json!({}))],
        "patchPodMetadata": [
            {"annotations": {"keep": "new", "fresh": "x"}},
            {"annotations": {"over": "new"}, "patchPolicy": "Overwrite"},
            {"annotations": {"json": "{\"b\":2}"}, "patchPolicy": "MergePatchJson"},
        ]}),
    );
    let mut p = app_pod();
    p["metadata"]["annotations"] = json!({"keep": "old", "over": "old", "json": "{\"a\":1}"});
    run(&mut p, &[set], &BTreeMap::new());
    let a = &p["metadata"]["annotations"];
    assert_eq!(a["keep"], "old");
    assert_eq!(a["fresh"], "x");
    assert_eq!(a["over"], "new");
    let merged: Value = serde_json::from_str(a["json"].as_str().unwrap_or("")).expect("json");
    assert_eq!(merged, json!({"a": 1, "b": 2}));
}

#[test]
fn hot_upgrade_injects_the_working_and_empty_pair() {
    let set = ss(
        "s",
        json!({"selector": {"matchLabels": {"app": "nginx"}}, "containers": [sidecar("envoy", json!({
            "upgradeStrategy": {"upgradeType": "HotUpgrade", "hotUpgradeEmptyImage": "empty:1"}}))]}),
    );
    let mut p = app_pod();
    run(&mut p, &[set], &BTreeMap::new());
    assert_eq!(names(&p, "containers"), ["envoy-1", "envoy-2", "nginx"]);
    assert_eq!(container(&p, "envoy-1")["image"], "envoy:v1");
    assert_eq!(container(&p, "envoy-2")["image"], "empty:1");
    assert_eq!(
        p["metadata"]["annotations"][SIDECARSET_WORKING_HOT_UPGRADE_CONTAINER],
        json!("{\"envoy\":\"envoy-1\"}")
    );
}

#[test]
fn hashes_follow_images_and_other_fields() {
    let a = ss("s", json!({"containers": [sidecar("side", json!({}))]}));
    let mut b = a.clone();
    b.spec.containers[0].container.image = Some("side:v2".into());
    assert_ne!(hash(&a), hash(&b));
    assert_eq!(hash_without_image(&a), hash_without_image(&b));
    let mut c = a.clone();
    c.spec.containers[0].container.args = Some(vec!["-v".into()]);
    assert_ne!(hash_without_image(&a), hash_without_image(&c));
}

#[test]
fn pinned_revision_is_injected() {
    let v1 = ss(
        "s",
        json!({"selector": {"matchLabels": {"app": "nginx"}}, "containers": [sidecar("side", json!({}))]}),
    );
    let rev = ControllerRevision {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(revision_name_of(&v1, None)),
            labels: Some(
                [(SIDECARSET_CUSTOM_VERSION_LABEL.to_owned(), "stable".to_owned())].into(),
            ),
            ..Default::default()
        },
        data: Some(RawExtension(revision_data(&v1))),
        revision: 1,
    };
    let mut v2 = v1.clone();
    v2.spec.containers[0].container.image = Some("side:v2".into());
    for pin in [json!({"revisionName": rev.metadata.name}), json!({"customVersion": "stable"})] {
        let mut pinned = v2.clone();
        pinned.spec.injection_strategy.revision = serde_json::from_value(pin).ok();
        let r = resolve(&pinned, std::slice::from_ref(&rev));
        assert_eq!(r.revision, rev.metadata.name);
        let mut p = app_pod();
        inject(&mut p, &[r], &InjectContext { namespace_labels: &BTreeMap::new(), now: "t" });
        assert_eq!(container(&p, "side")["image"], "side:v1");
    }
    // A pin that names nothing injects the current spec.
    let mut pinned = v2.clone();
    pinned.spec.injection_strategy.revision =
        serde_json::from_value(json!({"revisionName": "gone"})).ok();
    assert_eq!(
        resolve(&pinned, &[rev]).set.spec.containers[0].container.image.as_deref(),
        Some("side:v2")
    );
}

// ---- upgrade ----

/// `n` pods injected with `v1` of the SidecarSet, ready, sidecar and app running.
fn injected_pods(set: &SidecarSet, n: usize) -> Vec<Pod> {
    (0..n)
        .map(|i| {
            let mut p = app_pod();
            p["metadata"]["name"] = json!(format!("p{i}"));
            p["metadata"]["labels"]["idx"] = json!(i.to_string());
            run(&mut p, std::slice::from_ref(set), &BTreeMap::new());
            let statuses: Vec<Value> = p["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": true, "restartCount": 0}))
                .collect();
            p["status"] = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": statuses});
            serde_json::from_value(p).expect("a pod")
        })
        .collect()
}

fn v1_v2(strategy: Value) -> (SidecarSet, SidecarSet) {
    let v1 = ss(
        "s",
        json!({"selector": {"matchLabels": {"app": "nginx"}}, "containers": [sidecar("side", json!({}))],
            "updateStrategy": strategy}),
    );
    let mut v2 = v1.clone();
    v2.spec.containers[0].container.image = Some("side:v2".into());
    (v1, v2)
}

#[test]
fn upgrade_plan_partition_max_unavailable_selector_paused() {
    let cases: Vec<(&str, Value, usize, Vec<&str>)> = vec![
        ("default maxUnavailable 1", json!({}), 5, vec!["p0"]),
        ("maxUnavailable 2", json!({"maxUnavailable": 2}), 5, vec!["p0", "p1"]),
        ("maxUnavailable 40%", json!({"maxUnavailable": "40%"}), 5, vec!["p0", "p1"]),
        ("partition keeps 4 of 5", json!({"maxUnavailable": 5, "partition": 4}), 5, vec!["p0"]),
        ("partition 60%", json!({"maxUnavailable": 5, "partition": "60%"}), 5, vec!["p0", "p1"]),
        ("paused", json!({"paused": true, "maxUnavailable": 5}), 5, vec![]),
        ("NotUpdate", json!({"type": "NotUpdate", "maxUnavailable": 5}), 5, vec![]),
        (
            "canary selector",
            json!({"maxUnavailable": 5, "selector": {"matchLabels": {"idx": "3"}}}),
            5,
            vec!["p3"],
        ),
        (
            "priority",
            json!({"maxUnavailable": 2, "priorityStrategy": {"weightPriority": [
                {"weight": 50, "matchSelector": {"matchLabels": {"idx": "4"}}}]}}),
            5,
            vec!["p4", "p0"],
        ),
    ];
    for (case, strategy, n, want) in cases {
        let (v1, v2) = v1_v2(strategy);
        let pods = injected_pods(&v1, n);
        let plan = upgrade::plan(&v2, &pods).expect("valid strategy");
        let got: Vec<&str> =
            plan.iter().map(|&i| pods[i].metadata.name.as_deref().unwrap_or("")).collect();
        assert_eq!(got, want, "{case}");
    }
}

#[test]
fn upgrade_counts_an_upgrading_pod_as_unavailable() {
    let (v1, v2) = v1_v2(json!({"maxUnavailable": 1}));
    let mut pods = injected_pods(&v1, 3);
    let patch = upgrade::patch(&pods[0], &v2, Some("s-rev"), "now");
    assert_eq!(
        patch["spec"],
        json!({"$setElementOrder/containers": [{"name": "side"}, {"name": "nginx"}],
               "containers": [{"name": "side", "image": "side:v2"}]})
    );
    // Apply the patch as the API server would (image and annotations); the node agent has not
    // restarted the sidecar yet, so the pod is updated but not ready.
    let mut v = serde_json::to_value(&pods[0]).expect("json");
    json_patch::merge(&mut v["metadata"], &patch["metadata"]);
    v["spec"]["containers"][0]["image"] = json!("side:v2");
    pods[0] = serde_json::from_value(v).expect("pod");
    assert!(upgrade::is_updated(&pods[0], &v2));
    assert!(!upgrade::is_ready(&pods[0], &v2));
    assert!(upgrade::plan(&v2, &pods).expect("plan").is_empty(), "maxUnavailable 1 is used up");
    let c = upgrade::counts(&v2, &pods);
    assert_eq!(c, upgrade::Counts { matched: 3, updated: 1, ready: 2, updated_ready: 0 });
}

#[test]
fn only_image_changes_upgrade_in_place() {
    let (v1, _) = v1_v2(json!({}));
    let pods = injected_pods(&v1, 2);
    let mut v3 = v1.clone();
    v3.spec.containers[0].container.args = Some(vec!["--new".into()]);
    assert!(!upgrade::can_upgrade(&pods[0], &v3));
    assert!(upgrade::plan(&v3, &pods).expect("plan").is_empty());
}
