//! The in-place decision from a template diff, the patch, and completion.

use expect_test::{Expect, expect};
use k8s_openapi::api::core::v1::Pod;
use kinetic_api::kruise::InPlaceUpdateState;
use kinetic_rollout::inplace::{
    InPlaceOptions, NotCompleted, check_update_completed, new_update_state, next_batch,
    normalize_image, ready_for_next_batch, template_of_revision, update_patch, update_spec,
};
use kinetic_rollout::revision::revision_data;
use serde_json::{Value, json};

use crate::support::now;

fn template() -> Value {
    json!({
        "metadata": {"labels": {"app": "web", "track": "stable"}, "annotations": {"note": "a"}},
        "spec": {
            "initContainers": [{"name": "init", "image": "busybox:1"}],
            "containers": [
                {"name": "web", "image": "web:v1", "env": [{"name": "TRACK", "valueFrom":
                    {"fieldRef": {"fieldPath": "metadata.labels['track']"}}}]},
                {"name": "sidecar", "image": "proxy:v1"},
            ],
        },
    })
}

fn with(change: impl FnOnce(&mut Value)) -> Value {
    let mut t = template();
    change(&mut t);
    t
}

fn check(new: Value, opts: InPlaceOptions, want: Expect) {
    let got = match update_spec(&template(), &new, opts) {
        None => "recreate".to_owned(),
        Some(spec) => format!(
            "in place: images {:?} metadata {} env-from-metadata {:?}",
            spec.container_images,
            spec.metadata_patch.map_or("-".to_owned(), |p| p.to_string()),
            spec.env_from_metadata,
        ),
    };
    want.assert_eq(&got);
}

#[test]
fn decision_table() {
    let plain = InPlaceOptions::default();
    check(template(), plain, expect![[r#"in place: images {} metadata - env-from-metadata {}"#]]);
    check(
        with(|t| t["spec"]["containers"][1]["image"] = json!("proxy:v2")),
        plain,
        expect![[r#"in place: images {"sidecar": "proxy:v2"} metadata - env-from-metadata {}"#]],
    );
    check(
        with(|t| {
            t["spec"]["containers"][0]["image"] = json!("web:v2");
            t["spec"]["containers"][1]["image"] = json!("proxy:v2");
        }),
        plain,
        expect![[
            r#"in place: images {"sidecar": "proxy:v2", "web": "web:v2"} metadata - env-from-metadata {}"#
        ]],
    );
    check(
        with(|t| t["spec"]["containers"][1]["env"] = json!([{"name": "A", "value": "1"}])),
        plain,
        expect!["recreate"],
    );
    check(
        with(|t| t["spec"]["containers"][0]["env"][0]["name"] = json!("TRACK2")),
        plain,
        expect!["recreate"],
    );
    check(
        with(|t| {
            t["metadata"]["labels"]["version"] = json!("2");
            t["metadata"]["annotations"] = json!({"new": "x"});
        }),
        plain,
        expect![[
            r#"in place: images {} metadata {"metadata":{"labels":{"version":"2"},"annotations":{"new":"x","note":null}}} env-from-metadata {}"#
        ]],
    );
    check(
        with(|t| t["spec"]["initContainers"][0]["image"] = json!("busybox:2")),
        plain,
        expect!["recreate"],
    );
    check(
        with(|t| {
            t["spec"]["containers"]
                .as_array_mut()
                .into_iter()
                .for_each(|c| c.push(json!({"name": "x", "image": "x"})))
        }),
        plain,
        expect!["recreate"],
    );
    check(
        with(|t| t["spec"]["containers"][0]["resources"] = json!({"limits": {"cpu": "1"}})),
        plain,
        expect!["recreate"],
    );
    check(with(|t| t["metadata"]["name"] = json!("other")), plain, expect!["recreate"]);
    // A label a container reads into its env: in place by default (upstream's default-on
    // `InPlaceUpdateEnvFromMetadata`), recreate with the option off.
    let track = with(|t| t["metadata"]["labels"]["track"] = json!("canary"));
    check(
        track.clone(),
        plain,
        expect![[
            r#"in place: images {} metadata {"metadata":{"labels":{"track":"canary"}}} env-from-metadata {"web"}"#
        ]],
    );
    check(track, InPlaceOptions { env_from_metadata: false }, expect!["recreate"]);
}

/// Templates taken from ControllerRevision data compare the same (the `$patch` marker is in
/// both).
#[test]
fn from_revision_data() {
    let old = revision_data(&template());
    let new = revision_data(&with(|t| t["spec"]["containers"][0]["image"] = json!("web:v2")));
    let spec = update_spec(
        template_of_revision(&old).expect("a template"),
        template_of_revision(&new).expect("a template"),
        InPlaceOptions::default(),
    )
    .expect("an image change is in place");
    assert_eq!(spec.container_images.get("web").map(String::as_str), Some("web:v2"));
}

fn running_pod(image: &str, image_id: &str, restarts: i32) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "cs-abcde", "labels": {"controller-revision-hash": "cs-old"}},
        "spec": {"containers": [{"name": "web", "image": image}, {"name": "sidecar", "image": "proxy:v1"}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "web", "image": image, "imageID": image_id, "ready": true, "restartCount": restarts},
            {"name": "sidecar", "image": "proxy:v1", "imageID": "sha256:proxy", "ready": true, "restartCount": 0},
        ]},
    }))
    .expect("a valid pod")
}

#[test]
fn patch_and_state() {
    let pod = running_pod("web:v1", "sha256:one", 0);
    let new = with(|t| {
        t["spec"]["containers"][0]["image"] = json!("web:v2");
        t["metadata"]["annotations"] = json!({});
    });
    let spec = update_spec(&template(), &new, InPlaceOptions::default()).expect("in place");
    let state = new_update_state(&pod, &spec, "cs-new", now());
    let patch = update_patch(&pod, &spec, &state, "cs-new").expect("serialises");
    expect![[r#"
        {
          "metadata": {
            "labels": {
              "controller-revision-hash": "cs-new",
              "pod-template-hash": "new",
              "lifecycle.apps.kruise.io/state": "Updating"
            },
            "annotations": {
              "note": null,
              "apps.kruise.io/inplace-update-state": "{\"revision\":\"cs-new\",\"updateTimestamp\":\"2026-01-01T00:00:00Z\",\"lastContainerStatuses\":{\"web\":{\"imageID\":\"sha256:one\",\"resources\":{},\"restartCount\":0}},\"updateImages\":true,\"verticalUpdateOnly\":false,\"containerBatchesRecord\":[{\"timestamp\":\"2026-01-01T00:00:00Z\",\"containers\":[\"web\"]}]}"
            }
          },
          "spec": {
            "$setElementOrder/containers": [
              {
                "name": "web"
              },
              {
                "name": "sidecar"
              }
            ],
            "containers": [
              {
                "name": "web",
                "image": "web:v2"
              }
            ]
          }
        }"#]].assert_eq(&serde_json::to_string_pretty(&patch).expect("JSON"));
}

fn state_for(pod: &Pod) -> InPlaceUpdateState {
    let new = with(|t| t["spec"]["containers"][0]["image"] = json!("web:v2"));
    let spec = update_spec(&template(), &new, InPlaceOptions::default()).expect("in place");
    new_update_state(pod, &spec, "cs-new", now())
}

#[test]
fn completion() {
    let before = running_pod("web:v1", "sha256:one", 0);
    let state = state_for(&before);
    let cases: Vec<(&str, Pod, Result<(), NotCompleted>)> = vec![
        (
            "spec patched, kubelet not yet acted",
            running_pod("web:v2", "sha256:one", 0),
            Err(NotCompleted::NotRestarted("web".into())),
        ),
        ("restarted with the new image", running_pod("web:v2", "sha256:two", 1), Ok(())),
        // A retag: the new tag has the old digest. The status image shows the new tag.
        (
            "restarted, same digest, status shows the new tag",
            running_pod("web:v2", "sha256:one", 1),
            Ok(()),
        ),
        (
            "crash restart of the old image",
            {
                let mut p = running_pod("web:v2", "sha256:one", 1);
                if let Some(cs) = p.status.as_mut().and_then(|s| s.container_statuses.as_mut()) {
                    cs[0].image = "web:v1".into();
                }
                p
            },
            Err(NotCompleted::OldImage("web".into())),
        ),
        (
            "status missing",
            {
                let mut p = running_pod("web:v2", "sha256:two", 1);
                if let Some(cs) = p.status.as_mut().and_then(|s| s.container_statuses.as_mut()) {
                    cs.remove(0);
                }
                p
            },
            Err(NotCompleted::MissingStatus(vec!["web".into()])),
        ),
        (
            "in grace",
            {
                let mut p = running_pod("web:v1", "sha256:one", 0);
                p.metadata.annotations = Some(
                    [("apps.kruise.io/inplace-update-grace".to_owned(), "{}".to_owned())].into(),
                );
                p
            },
            Err(NotCompleted::InGrace),
        ),
    ];
    for (name, pod, want) in cases {
        assert_eq!(check_update_completed(&pod, &state), want, "{name}");
    }

    // A state written by upstream has no restart counts: upstream's rule alone applies.
    let mut upstream_state = state.clone();
    for s in upstream_state.last_container_statuses.values_mut() {
        s.restart_count = None;
    }
    assert_eq!(
        check_update_completed(&running_pod("web:v2", "sha256:one", 0), &upstream_state),
        Ok(())
    );
    let mut not_yet = running_pod("web:v2", "sha256:one", 0);
    if let Some(cs) = not_yet.status.as_mut().and_then(|s| s.container_statuses.as_mut()) {
        cs[0].image = "web:v1".into();
    }
    assert_eq!(
        check_update_completed(&not_yet, &upstream_state),
        Err(NotCompleted::OldImage("web".into()))
    );
}

#[test]
fn image_normalisation() {
    let out: Vec<String> = [
        "nginx",
        "nginx:1.25",
        "library/nginx",
        "docker.io/library/nginx:latest",
        "127.0.0.1:15000/web:v2",
        "localhost/app",
        "ghcr.io/org/app@sha256:abc",
        "app:v1@sha256:abc",
    ]
    .iter()
    .map(|i| format!("{i} -> {}", normalize_image(i)))
    .collect();
    expect![[r#"
        nginx -> docker.io/library/nginx:latest
        nginx:1.25 -> docker.io/library/nginx:1.25
        library/nginx -> docker.io/library/nginx:latest
        docker.io/library/nginx:latest -> docker.io/library/nginx:latest
        127.0.0.1:15000/web:v2 -> 127.0.0.1:15000/web:v2
        localhost/app -> localhost/app:latest
        ghcr.io/org/app@sha256:abc -> ghcr.io/org/app@sha256:abc
        app:v1@sha256:abc -> docker.io/library/app:v1@sha256:abc"#]]
    .assert_eq(&out.join("\n"));
}

/// A pod whose containers are not in name order, as in OpenKruise's manual (`sidecar`, then
/// `main`), with `env` on each container and `annotations` on the pod.
fn sidecar_main_pod(env: [Value; 2], annotations: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "cs-abcde", "annotations": annotations},
        "spec": {"containers": [
            {"name": "sidecar", "image": "side:v1", "env": env[0]},
            {"name": "main", "image": "main:v1", "env": env[1]},
        ]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "main", "image": "main:v1", "imageID": "sha256:m1", "ready": true, "restartCount": 0},
            {"name": "sidecar", "image": "side:v1", "imageID": "sha256:s1", "ready": true, "restartCount": 0},
        ]},
    }))
    .expect("a valid pod")
}

fn both_images() -> kinetic_rollout::inplace::UpdateSpec {
    kinetic_rollout::inplace::UpdateSpec {
        container_images: [("main", "main:v2"), ("sidecar", "side:v2")]
            .map(|(n, i)| (n.to_owned(), i.to_owned()))
            .into(),
        ..Default::default()
    }
}

/// Issue 18: the patch listed containers in name order (`main`, `sidecar`) on a pod whose
/// containers are `[sidecar, main]`; the strategic merge patch reorders the list by the patch
/// (as upstream's does) and pod validation refused it, so the update retried forever.
#[test]
fn multi_container_patch_keeps_the_pods_container_order() {
    let pod = sidecar_main_pod([json!([]), json!([])], json!({}));
    let spec = both_images();
    let state = new_update_state(&pod, &spec, "cs-new", now());
    let patch = update_patch(&pod, &spec, &state, "cs-new").expect("serialises");
    expect![[r#"{"$setElementOrder/containers":[{"name":"sidecar"},{"name":"main"}],"containers":[{"name":"sidecar","image":"side:v2"},{"name":"main","image":"main:v2"}]}"#]]
        .assert_eq(&patch["spec"].to_string());
    // Applied as the API server applies it, the order and every other field stay.
    let merged = kinetic_machinery::patch::strategic_merge_patch(
        &serde_json::to_value(&pod).expect("JSON"),
        &patch,
    )
    .expect("the patch applies");
    let names: Vec<&str> = merged["spec"]["containers"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["sidecar", "main"]);
    assert_eq!(merged["spec"]["containers"][1]["image"], "main:v2");
}

/// Container priorities split an in-place update into batches, highest first
/// (`KRUISE_CONTAINER_PRIORITY`, or `container-launch-priority: Ordered`).
#[test]
fn priority_batches() {
    let prio = |v: &str| json!([{"name": "KRUISE_CONTAINER_PRIORITY", "value": v}]);
    let describe = |pod: &Pod| {
        let spec = both_images();
        let state = new_update_state(pod, &spec, "cs-new", now());
        let patch = update_patch(pod, &spec, &state, "cs-new").expect("serialises");
        format!(
            "now {} next {:?} required-ready {:?}",
            patch["spec"]["containers"],
            state.next_container_images,
            state.pre_check_before_next.map(|c| c.containers_required_ready),
        )
    };
    let cases = [
        ("no priority", sidecar_main_pod([json!([]), json!([])], json!({}))),
        ("main higher", sidecar_main_pod([prio("1"), prio("10")], json!({}))),
        ("sidecar higher", sidecar_main_pod([prio("10"), prio("-1")], json!({}))),
        ("same priority", sidecar_main_pod([prio("5"), prio("5")], json!({}))),
        ("only one has a priority", sidecar_main_pod([json!([]), prio("1")], json!({}))),
        (
            "Ordered: first container first",
            sidecar_main_pod(
                [json!([]), json!([])],
                json!({"apps.kruise.io/container-launch-priority": "Ordered"}),
            ),
        ),
    ];
    let out: Vec<String> =
        cases.iter().map(|(name, pod)| format!("{name}: {}", describe(pod))).collect();
    expect![[r#"
        no priority: now [{"name":"sidecar","image":"side:v2"},{"name":"main","image":"main:v2"}] next {} required-ready None
        main higher: now [{"name":"main","image":"main:v2"}] next {"sidecar": "side:v2"} required-ready Some(["main"])
        sidecar higher: now [{"name":"sidecar","image":"side:v2"}] next {"main": "main:v2"} required-ready Some(["sidecar"])
        same priority: now [{"name":"sidecar","image":"side:v2"},{"name":"main","image":"main:v2"}] next {} required-ready None
        only one has a priority: now [{"name":"sidecar","image":"side:v2"},{"name":"main","image":"main:v2"}] next {} required-ready None
        Ordered: first container first: now [{"name":"sidecar","image":"side:v2"}] next {"main": "main:v2"} required-ready Some(["sidecar"])"#]]
    .assert_eq(&out.join("\n"));
}

/// The second batch waits for the first to be updated and ready, then patches the rest.
#[test]
fn next_batch_after_the_first_is_ready() {
    let prio = |v: &str| json!([{"name": "KRUISE_CONTAINER_PRIORITY", "value": v}]);
    let mut pod = sidecar_main_pod([prio("1"), prio("10")], json!({}));
    let state = new_update_state(&pod, &both_images(), "cs-new", now());
    assert_eq!(check_update_completed(&pod, &state), Err(NotCompleted::NextBatches));
    assert_eq!(ready_for_next_batch(&pod, &state), Err(NotCompleted::NotRestarted("main".into())));
    // `main` restarted on its new image but is not ready yet.
    {
        let spec = pod.spec.as_mut().expect("spec");
        spec.containers[1].image = Some("main:v2".into());
        let cs = pod.status.as_mut().and_then(|s| s.container_statuses.as_mut()).expect("status");
        cs[0].image = "main:v2".into();
        cs[0].image_id = "sha256:m2".into();
        cs[0].restart_count = 1;
        cs[0].ready = false;
    }
    assert_eq!(ready_for_next_batch(&pod, &state), Err(NotCompleted::NotReady("main".into())));
    if let Some(cs) = pod.status.as_mut().and_then(|s| s.container_statuses.as_mut()) {
        cs[0].ready = true;
    }
    assert_eq!(ready_for_next_batch(&pod, &state), Ok(()));
    let patch = next_batch(&pod, &state, now()).expect("serialises").expect("a batch is left");
    expect![[r#"{"$setElementOrder/containers":[{"name":"sidecar"},{"name":"main"}],"containers":[{"name":"sidecar","image":"side:v2"}]}"#]]
        .assert_eq(&patch["spec"].to_string());
    let annotation = patch["metadata"]["annotations"]["apps.kruise.io/inplace-update-state"]
        .as_str()
        .expect("the state");
    let next: InPlaceUpdateState = serde_json::from_str(annotation).expect("a state");
    assert!(next.next_container_images.is_empty());
    assert_eq!(next.container_batches_record.len(), 2);
    assert_eq!(next.container_batches_record[1].containers, ["sidecar"]);
    assert!(next.last_container_statuses.contains_key("sidecar"));
    // Not complete until the sidecar restarted too.
    assert_eq!(
        check_update_completed(&pod, &next),
        Err(NotCompleted::NotRestarted("sidecar".into()))
    );
    assert_eq!(next_batch(&pod, &next, now()).expect("serialises"), None);
}

/// A container whose env reads a changed label is done once it restarted (the node agent
/// restarts it with the new env).
#[test]
fn env_from_metadata_completes_on_restart() {
    let pod = running_pod("web:v1", "sha256:one", 0);
    let new = with(|t| t["metadata"]["labels"]["track"] = json!("canary"));
    let spec = update_spec(&template(), &new, InPlaceOptions::default()).expect("in place");
    let state = new_update_state(&pod, &spec, "cs-new", now());
    assert!(state.update_env_from_metadata);
    assert_eq!(check_update_completed(&pod, &state), Err(NotCompleted::NotRestarted("web".into())));
    assert_eq!(check_update_completed(&running_pod("web:v1", "sha256:one", 1), &state), Ok(()));
}
