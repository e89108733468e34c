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

// ---- hot upgrade (upstream's `sidecarset_hotupgrade_test.go`, `util_hotupgrade.go`) ----

fn hot_set(image: &str) -> SidecarSet {
    let mut s = ss(
        "test-sidecarset",
        json!({"selector": {"matchLabels": {"app": "nginx"}}, "containers": [{
            "name": "test-sidecar", "image": image,
            "upgradeStrategy": {"upgradeType": "HotUpgrade", "hotUpgradeEmptyImage": "hotupgrade:empty"}}]}),
    );
    s.metadata.resource_version = Some("22".into());
    s
}

/// Applies a patch of `upgrade::patch`/`hotupgrade::flip_patch` as the API server would
/// (annotations merged, container images set).
fn apply(p: &Pod, patch: &Value) -> Pod {
    let mut v = serde_json::to_value(p).expect("json");
    json_patch::merge(&mut v["metadata"], &patch["metadata"]);
    for c in patch["spec"]["containers"].as_array().into_iter().flatten() {
        for pc in v["spec"]["containers"].as_array_mut().into_iter().flatten() {
            if pc["name"] == c["name"] {
                pc["image"] = c["image"].clone();
            }
        }
    }
    serde_json::from_value(v).expect("pod")
}

/// The node agent ran the spec: every container's status image is its spec image, ready.
fn run_spec(p: &Pod) -> Pod {
    let mut v = serde_json::to_value(p).expect("json");
    let images: Vec<(Value, Value)> = v["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| (c["name"].clone(), c["image"].clone()))
        .collect();
    for s in v["status"]["containerStatuses"].as_array_mut().into_iter().flatten() {
        if let Some((_, i)) = images.iter().find(|(n, _)| *n == s["name"]) {
            s["image"] = i.clone();
        }
    }
    serde_json::from_value(v).expect("pod")
}

fn image_of(p: &Pod, name: &str) -> String {
    hotupgrade::spec_image(p, name).to_owned()
}

fn ann(p: &Pod, key: &str) -> String {
    crate::pod::annotation(p, key).unwrap_or("").to_owned()
}

#[test]
fn hot_upgrade_injection_sets_versions_and_version_env() {
    let mut p = app_pod();
    let set = hot_set("test-image:v1");
    run(&mut p, &[set], &BTreeMap::new());
    let a = &p["metadata"]["annotations"];
    for (k, v) in [
        ("version.sidecarset.kruise.io/test-sidecar-1", "1"),
        ("versionalt.sidecarset.kruise.io/test-sidecar-1", "0"),
        ("version.sidecarset.kruise.io/test-sidecar-2", "0"),
        ("versionalt.sidecarset.kruise.io/test-sidecar-2", "1"),
    ] {
        assert_eq!(a[k], v, "{k}");
    }
    let env = &container(&p, "test-sidecar-2")["env"];
    assert_eq!(env[0]["name"], SIDECAR_ENV_KEY);
    assert_eq!(env[1]["name"], "SIDECARSET_VERSION");
    assert_eq!(
        env[1]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.annotations['version.sidecarset.kruise.io/test-sidecar-2']"
    );
    assert_eq!(
        env[2]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.annotations['versionalt.sidecarset.kruise.io/test-sidecar-2']"
    );
}

#[test]
fn hot_upgrade_switches_to_the_empty_twin_then_resets_the_old_one() {
    let v1 = hot_set("test-image:v1");
    let v2 = hot_set("test-image:v2");
    let pods = injected_pods(&v1, 1);
    let c = |p: &Pod| {
        let c = upgrade::counts(&v2, std::slice::from_ref(p));
        (c.matched, c.updated, c.ready, c.updated_ready)
    };
    let p = pods[0].clone();
    assert_eq!(c(&p), (1, 0, 1, 0));
    assert!(!hotupgrade::ready_to_flip(&v2, &p));

    // 1. The empty twin gets v2 and works from now on; the old twin keeps v1.
    assert_eq!(upgrade::plan(&v2, &pods).expect("plan"), [0]);
    let patch = upgrade::patch(&p, &v2, Some("rev"), "now");
    let p = apply(&p, &patch);
    assert_eq!(image_of(&p, "test-sidecar-1"), "test-image:v1");
    assert_eq!(image_of(&p, "test-sidecar-2"), "test-image:v2");
    assert_eq!(
        hotupgrade::pair("test-sidecar", &p),
        ("test-sidecar-2".into(), "test-sidecar-1".into())
    );
    assert_eq!(ann(&p, "version.sidecarset.kruise.io/test-sidecar-2"), "22");
    assert_eq!(ann(&p, "versionalt.sidecarset.kruise.io/test-sidecar-2"), "1");
    assert_eq!(ann(&p, "versionalt.sidecarset.kruise.io/test-sidecar-1"), "22");
    assert_eq!(nginx_image(&p), "nginx:1.15.1", "the app container is untouched");
    // Updated, but not ready for the SidecarSet while both twins run; nothing to flip yet
    // (the node agent has not started v2).
    assert_eq!(c(&p), (1, 1, 0, 0));
    assert!(!hotupgrade::ready_to_flip(&v2, &p));
    assert!(upgrade::plan(&v2, std::slice::from_ref(&p)).expect("plan").is_empty());

    // 2. test-sidecar-2 runs v2 and is ready: the old twin goes to the empty image.
    let p = run_spec(&p);
    assert!(hotupgrade::ready_to_flip(&v2, &p));
    let flip = hotupgrade::flip_patch(&v2, &p).expect("a flip");
    assert_eq!(
        flip["spec"]["containers"],
        json!([{"name": "test-sidecar-1", "image": "hotupgrade:empty"}])
    );
    let p = apply(&p, &flip);
    assert_eq!(ann(&p, "version.sidecarset.kruise.io/test-sidecar-1"), "0");
    assert_eq!(ann(&p, "versionalt.sidecarset.kruise.io/test-sidecar-2"), "0");
    assert_eq!(c(&p), (1, 1, 0, 0), "the reset is not applied by the node yet");
    assert!(!hotupgrade::ready_to_flip(&v2, &p), "a flip is written once");

    // 3. Done.
    let p = run_spec(&p);
    assert_eq!(c(&p), (1, 1, 1, 1));
    assert!(hotupgrade::flip_patch(&v2, &p).is_none());

    // The next version goes into test-sidecar-1, the empty twin again.
    let mut v3 = hot_set("test-image:v3");
    v3.metadata.resource_version = Some("30".into());
    let p = apply(&p, &upgrade::patch(&p, &v3, None, "now"));
    assert_eq!(image_of(&p, "test-sidecar-1"), "test-image:v3");
    assert_eq!(image_of(&p, "test-sidecar-2"), "test-image:v2");
    assert_eq!(hotupgrade::pair("test-sidecar", &p).0, "test-sidecar-1");
    assert_eq!(ann(&p, "versionalt.sidecarset.kruise.io/test-sidecar-1"), "22");
}

fn nginx_image(p: &Pod) -> String {
    image_of(p, "nginx")
}

#[test]
fn hot_upgrade_waits_for_the_new_twin_to_be_ready() {
    let v1 = hot_set("test-image:v1");
    let v2 = hot_set("test-image:v2");
    let p = injected_pods(&v1, 1).remove(0);
    let p = run_spec(&apply(&p, &upgrade::patch(&p, &v2, None, "now")));
    let mut v = serde_json::to_value(&p).expect("json");
    v["status"]["conditions"][0]["status"] = json!("False");
    for s in v["status"]["containerStatuses"].as_array_mut().into_iter().flatten() {
        if s["name"] == "test-sidecar-2" {
            s["ready"] = json!(false);
        }
    }
    let unready: Pod = serde_json::from_value(v).expect("pod");
    assert!(!hotupgrade::ready_to_flip(&v2, &unready));
    // The old twin's readiness does not matter (`isHotUpgradingReady`).
    let mut v = serde_json::to_value(&p).expect("json");
    v["status"]["conditions"][0]["status"] = json!("False");
    for s in v["status"]["containerStatuses"].as_array_mut().into_iter().flatten() {
        if s["name"] == "test-sidecar-1" {
            s["ready"] = json!(false);
        }
    }
    let old_unready: Pod = serde_json::from_value(v).expect("pod");
    assert!(hotupgrade::ready_to_flip(&v2, &old_unready));
}

#[test]
fn container_to_upgrade_prefers_empty_then_unready_then_older() {
    // (case, images of -1 and -2, ready of -1 and -2, working, want upgraded)
    type Case<'a> = (&'a str, (&'a str, &'a str), (bool, bool), &'a str, &'a str);
    let cases: Vec<Case<'_>> = vec![
        ("-1 on the empty image", ("hotupgrade:empty", "v1"), (true, true), "-2", "-1"),
        ("-2 on the empty image", ("v1", "hotupgrade:empty"), (true, true), "-1", "-2"),
        ("-2 not ready", ("v1", "v2"), (true, false), "-1", "-2"),
        ("-1 not ready", ("v1", "v2"), (false, true), "-2", "-1"),
        ("both ready: the older", ("v1", "v2"), (true, true), "-2", "-1"),
        ("neither ready: the older", ("v1", "v2"), (false, false), "-1", "-2"),
    ];
    let set = hot_set("test-image:v3");
    let sc = &set.spec.containers[0];
    for (case, (i1, i2), (r1, r2), working, want) in cases {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "annotations": {
                SIDECARSET_WORKING_HOT_UPGRADE_CONTAINER: format!("{{\"test-sidecar\":\"test-sidecar{working}\"}}")}},
            "spec": {"containers": [
                {"name": "test-sidecar-1", "image": i1}, {"name": "test-sidecar-2", "image": i2}]},
            "status": {"containerStatuses": [
                {"name": "test-sidecar-1", "image": i1, "imageID": "", "ready": r1, "restartCount": 0},
                {"name": "test-sidecar-2", "image": i2, "imageID": "", "ready": r2, "restartCount": 0}]},
        }))
        .expect("pod");
        let (upgraded, _) = hotupgrade::container_to_upgrade(sc, &p);
        assert_eq!(upgraded, format!("test-sidecar{want}"), "{case}");
    }
}
