//! Kubelet behaviours: probes, restarts and back-off, init containers, configuration sources,
//! graceful deletion, readiness gates, in-place image updates, agent restarts, image errors.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kinetic_node::runtime::Kind;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::harness::{Cluster, container_status, is_ready, pod_ip, waiting_reason};
use crate::pods::node_logs;

/// The container's restart count, -1 before it has a status.
fn restarts(p: &k8s_openapi::api::core::v1::Pod, name: &str) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == name))
        .map_or(-1, |c| c.restart_count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_probe_gates_ready_and_liveness_failure_restarts() {
    let c = Cluster::start().await;
    let image = kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
    c.create(
        "probed",
        json!({"containers": [{
            "name": "web", "image": image,
            // Serves after 2 s; /tmp/alive exists for the first run only, so the liveness
            // probe fails once the file is removed and the container restarts.
            "command": ["sh", "-c", "if [ ! -f /www/restarted ]; then touch /tmp/alive; fi; sleep 2; (sleep 3; rm -f /tmp/alive) & exec httpd -f -p 8080 -h /www"],
            "readinessProbe": {"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1},
            "livenessProbe": {"exec": {"command": ["test", "-f", "/tmp/alive"]}, "initialDelaySeconds": 1, "periodSeconds": 1, "failureThreshold": 2},
        }]}),
    )
    .await;
    let running = c
        .wait("probed", 20, "Running", |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .await;
    assert!(!is_ready(&running), "ready before the readiness probe passed");
    let started = Instant::now();
    c.wait_ready("probed").await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let p = c.wait("probed", 30, "a liveness restart", |p| restarts(p, "web") >= 1).await;
    let cs = container_status(&p, "web");
    assert!(cs.last_state.unwrap().terminated.is_some(), "lastState shows the killed run");
    c.wait_event("probed", "failed liveness probe, will be restarted", 5).await;
    c.wait_event("probed", "Unhealthy: Liveness probe failed", 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_container_backs_off_and_never_policy_fails_the_pod() {
    let c = Cluster::start().await;
    let image = kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
    c.create("crash", json!({"containers": [{"name": "app", "image": image, "command": ["sh", "-c", "echo dying; exit 3"]}]})).await;
    c.create(
        "once",
        json!({"restartPolicy": "Never", "containers": [{"name": "app", "image": image, "command": ["sh", "-c", "echo bye > /dev/termination-log; exit 1"]}]}),
    )
    .await;
    c.create("done", json!({"restartPolicy": "OnFailure", "containers": [{"name": "app", "image": image, "command": ["true"]}]})).await;
    let p = c
        .wait("crash", 30, "two restarts and CrashLoopBackOff", |p| {
            restarts(p, "app") >= 2
                && waiting_reason(p, "app").as_deref() == Some("CrashLoopBackOff")
        })
        .await;
    let last = container_status(&p, "app").last_state.unwrap().terminated.unwrap();
    assert_eq!(last.exit_code, 3);
    assert_eq!(last.reason.as_deref(), Some("Error"));
    c.wait_event("crash", "BackOff: Back-off restarting failed container", 5).await;
    // --previous reads the last run's output.
    let prev = node_logs(&c, "crash", "app", "previous=true").await;
    assert!(prev.contains("dying"), "{prev}");

    let p = c
        .wait("once", 20, "Failed", |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
        })
        .await;
    let t = container_status(&p, "app").state.unwrap().terminated.unwrap();
    assert_eq!((t.exit_code, t.message.as_deref()), (1, Some("bye")));
    assert_eq!(restarts(&p, "app"), 0);
    c.wait("done", 20, "Succeeded", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_run_in_order_and_env_comes_from_configmaps_secrets_and_the_pod() {
    let c = Cluster::start().await;
    let image = kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    cms.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"greeting": "hello", "file.txt": "from a configmap"}})).unwrap()).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "creds"}, "stringData": {"password": "s3cret"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    c.create(
        "init",
        json!({
            "volumes": [
                {"name": "work", "emptyDir": {}},
                {"name": "cfg", "configMap": {"name": "cfg"}},
                {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
            ],
            "initContainers": [
                {"name": "first", "image": image, "command": ["sh", "-c", "echo first >> /work/order"], "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
                {"name": "second", "image": image, "command": ["sh", "-c", "echo second >> /work/order"], "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
            ],
            "containers": [{
                "name": "app", "image": image,
                "command": ["sh", "-c", "cat /work/order; echo G=$GREETING P=$PASSWORD N=$POD_NAME IP=$POD_IP X=$EXPANDED; cat /cfg/file.txt; echo; cat /info/labels; echo; sleep 1000"],
                "env": [
                    {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "EXPANDED", "value": "$(GREETING)-world"},
                ],
                "volumeMounts": [{"name": "work", "mountPath": "/work"}, {"name": "cfg", "mountPath": "/cfg"}, {"name": "info", "mountPath": "/info"}],
            }],
        }),
    )
    .await;
    let p = c.wait_ready("init").await;
    let ip = pod_ip(&p);
    let inits = p.status.as_ref().unwrap().init_container_statuses.clone().unwrap();
    assert!(
        inits.iter().all(|s| s.state.as_ref().unwrap().terminated.as_ref().unwrap().exit_code == 0)
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let logs = loop {
        let l = node_logs(&c, "init", "app", "").await;
        if l.contains("app=\"init\"") || Instant::now() > deadline {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(logs.contains("first\nsecond\n"), "{logs}");
    assert!(logs.contains(&format!("G=hello P=s3cret N=init IP={ip} X=hello-world")), "{logs}");
    assert!(logs.contains("from a configmap"), "{logs}");
    assert!(logs.contains("app=\"init\""), "{logs}");

    // A missing key is a CreateContainerConfigError with the reason kubelet gives.
    c.create(
        "badenv",
        json!({"containers": [{"name": "app", "image": image, "command": ["true"],
            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope"}}}]}]}),
    )
    .await;
    let p = c
        .wait("badenv", 20, "CreateContainerConfigError", |p| {
            waiting_reason(p, "app").as_deref() == Some("CreateContainerConfigError")
        })
        .await;
    let msg = container_status(&p, "app").state.unwrap().waiting.unwrap().message.unwrap();
    assert_eq!(msg, "couldn't find key nope in ConfigMap default/cfg");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_delete_kills_a_sigterm_ignoring_process_at_the_deadline() {
    let c = Cluster::start().await;
    let image = kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
    c.create(
        "stubborn",
        json!({"terminationGracePeriodSeconds": 2, "containers": [{"name": "app", "image": image,
            "command": ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]}]}),
    )
    .await;
    // Pid 1 of a pid namespace ignores signals it has no handler for, so the polite process
    // handles TERM itself.
    c.create(
        "polite",
        json!({"terminationGracePeriodSeconds": 30, "containers": [{"name": "app", "image": image,
            "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"]}]}),
    )
    .await;
    c.wait_ready("stubborn").await;
    c.wait_ready("polite").await;
    let t = Instant::now();
    c.pods().delete("stubborn", &Default::default()).await.unwrap();
    c.pods().delete("polite", &Default::default()).await.unwrap();
    c.wait_gone("polite", 10).await;
    assert!(t.elapsed() < Duration::from_secs(2), "polite pod took {:?}", t.elapsed());
    c.wait_gone("stubborn", 15).await;
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
        "stubborn pod took {took:?}"
    );
    c.wait_event("stubborn", "Killing: Stopping container app", 5).await;
    let left = c.settled_leftovers(10).await;
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_gates_hold_ready_until_their_condition_is_true() {
    let c = Cluster::start().await;
    let image = kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
    c.create(
        "gated",
        json!({"readinessGates": [{"conditionType": "apps.kruise.io/InPlaceUpdateReady"}],
               "containers": [{"name": "app", "image": image, "command": ["sleep", "1000"]}]}),
    )
    .await;
    let p = c
        .wait("gated", 20, "containers ready", |p| {
            p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
                cs.iter().any(|c| c.type_ == "ContainersReady" && c.status == "True")
            })
        })
        .await;
    let ready =
        p.status.unwrap().conditions.unwrap().into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason.as_deref(), Some("ReadinessGatesNotReady"));
    let patch = json!({"status": {"conditions": [{"type": "apps.kruise.io/InPlaceUpdateReady", "status": "True"}]}});
    c.pods()
        .patch_status("gated", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    c.wait_ready("gated").await;
    let patch = json!({"status": {"conditions": [{"type": "apps.kruise.io/InPlaceUpdateReady", "status": "False"}]}});
    c.pods()
        .patch_status("gated", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    c.wait("gated", 10, "not Ready", |p| !is_ready(p)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_change_updates_one_container_in_place() {
    let c = Cluster::start().await;
    let v1 = kinetic_testkit::images::busybox(&c.registry, "app", "v1", &[("www/version", "v1\n")])
        .await
        .unwrap();
    let v2 = kinetic_testkit::images::busybox(&c.registry, "app", "v2", &[("www/version", "v2\n")])
        .await
        .unwrap();
    let cmd = json!(["httpd", "-f", "-p", "8080", "-h", "/www"]);
    c.create(
        "inplace",
        json!({"containers": [
            {"name": "web", "image": v1, "command": cmd},
            {"name": "sidecar", "image": v1, "command": ["sleep", "1000"]},
        ]}),
    )
    .await;
    let before = c.wait_ready("inplace").await;
    let ip = pod_ip(&before);
    assert!(Cluster::http_get(&ip, 8080, "/version").await.unwrap().contains("v1"));
    let web1 = container_status(&before, "web");
    let side1 = container_status(&before, "sidecar");

    // Metadata changes restart nothing.
    let patch = json!({"metadata": {"labels": {"extra": "yes"}, "annotations": {"note": "x"}}});
    c.pods().patch("inplace", &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let same = c.pods().get("inplace").await.unwrap();
    assert_eq!(container_status(&same, "web").container_id, web1.container_id);

    let patch = json!({"spec": {"containers": [{"name": "web", "image": v2}]}});
    c.pods().patch("inplace", &PatchParams::default(), &Patch::Strategic(patch)).await.unwrap();
    let after = c
        .wait("inplace", 30, "web restarted on v2 and ready", |p| {
            let cs = container_status(p, "web");
            restarts(p, "web") == 1 && cs.image_id != web1.image_id && is_ready(p)
        })
        .await;
    assert_eq!(after.metadata.uid, before.metadata.uid);
    assert_eq!(pod_ip(&after), ip, "the pod kept its IP");
    let side2 = container_status(&after, "sidecar");
    assert_eq!(
        (side2.restart_count, &side2.container_id),
        (0, &side1.container_id),
        "sidecar untouched"
    );
    let web2 = container_status(&after, "web");
    assert_eq!(web2.image, v2);
    // Without a readiness probe a started container is Ready (as with kubelet), which can be
    // a moment before httpd listens: give it a second.
    let mut page = Err(std::io::Error::other("not tried"));
    for _ in 0..50 {
        page = Cluster::http_get(&ip, 8080, "/version").await;
        if page.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(page.unwrap().contains("v2"));
    c.wait_event("inplace", "definition changed, will be restarted", 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_restart_keeps_containers_running_and_adopts_them() {
    adopts_across_an_agent_restart(None).await;
}

/// The same on runc, whose containers the next agent finds with `runc list` in its state root
/// (the suite's default runtime is the native one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_restart_keeps_runc_containers_running_and_adopts_them() {
    adopts_across_an_agent_restart(Some(Kind::Runc)).await;
}

/// A running container outlives its agent and the next one adopts it, on `runtime` (the
/// suite's when `None`).
async fn adopts_across_an_agent_restart(runtime: Option<Kind>) {
    let mut c = Cluster::start_with(|cfg| cfg.runtime = runtime.unwrap_or(cfg.runtime)).await;
    let image = kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
    c.create("kept", json!({"containers": [{"name": "web", "image": image, "command": ["httpd", "-f", "-p", "8080", "-h", "/www"]}]})).await;
    let before = c.wait_ready("kept").await;
    let ip = pod_ip(&before);
    c.stop_agent().await;
    assert!(Cluster::http_get(&ip, 8080, "/").await.is_ok(), "container stopped with the agent");
    c.start_agent().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = c.wait_ready("kept").await;
    let (a, b) = (container_status(&before, "web"), container_status(&after, "web"));
    assert_eq!((a.container_id, a.restart_count), (b.container_id, b.restart_count));
    assert!(Cluster::http_get(&ip, 8080, "/").await.is_ok());
    // The adopted container is still managed: deletion stops it and cleans up.
    c.pods().delete("kept", &Default::default()).await.unwrap();
    c.wait_gone("kept", 15).await;
    let left = c.settled_leftovers(10).await;
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_missing_images_give_kubelets_waiting_reasons() {
    let c = Cluster::start().await;
    c.create(
        "badref",
        json!({"containers": [{"name": "app", "image": "127.0.0.1:5000/UPPER::bad"}]}),
    )
    .await;
    let missing = format!("{}/nosuch:v1", c.registry.addr());
    c.create("missing", json!({"containers": [{"name": "app", "image": missing}]})).await;
    c.create("never", json!({"containers": [{"name": "app", "image": format!("{}/x:v1", c.registry.addr()), "imagePullPolicy": "Never"}]})).await;
    c.wait("badref", 20, "InvalidImageName", |p| {
        waiting_reason(p, "app").as_deref() == Some("InvalidImageName")
    })
    .await;
    c.wait("never", 20, "ErrImageNeverPull", |p| {
        waiting_reason(p, "app").as_deref() == Some("ErrImageNeverPull")
    })
    .await;
    c.wait("missing", 20, "ErrImagePull", |p| {
        waiting_reason(p, "app").as_deref() == Some("ErrImagePull")
    })
    .await;
    let ev = c.wait_event("missing", "Failed: Failed to pull image", 5).await;
    assert!(ev.contains("nosuch"), "{ev}");
    c.wait("missing", 20, "ImagePullBackOff", |p| {
        waiting_reason(p, "app").as_deref() == Some("ImagePullBackOff")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_leaks_after_200_create_delete_cycles() {
    let c = Cluster::start().await;
    let image = kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
    // Pull once so the cycles measure the pod path only.
    c.create(
        "warm",
        json!({"containers": [{"name": "app", "image": image, "command": ["sleep", "1000"]}]}),
    )
    .await;
    c.wait_ready("warm").await;
    let rounds = 20;
    let per_round = 10;
    let mut uids = Vec::new();
    for r in 0..rounds {
        for i in 0..per_round {
            let p = c.create(&format!("cycle-{r}-{i}"), json!({"terminationGracePeriodSeconds": 0, "containers": [{"name": "app", "image": image, "command": ["sleep", "1000"]}]})).await;
            uids.push(p.metadata.uid.unwrap());
        }
        for i in 0..per_round {
            c.wait_ready(&format!("cycle-{r}-{i}")).await;
        }
        for i in 0..per_round {
            c.pods().delete(&format!("cycle-{r}-{i}"), &Default::default()).await.unwrap();
        }
        for i in 0..per_round {
            c.wait_gone(&format!("cycle-{r}-{i}"), 20).await;
        }
    }
    c.pods().delete("warm", &Default::default()).await.unwrap();
    c.wait_gone("warm", 20).await;
    let left = c.settled_leftovers(10).await;
    assert!(left.is_empty(), "left behind after {} cycles: {left:#?}", rounds * per_round);
    let veths = std::process::Command::new("ip")
        .args(["-o", "link", "show", "master", &c.cfg.bridge])
        .output()
        .unwrap();
    let veths = String::from_utf8_lossy(&veths.stdout).lines().count();
    assert_eq!(veths, 0, "veths still attached to the bridge");
    // Container cgroups (named by runc id, which starts with the pod UID) are gone too.
    let cgroups: Vec<String> = std::fs::read_dir("/sys/fs/cgroup/memory/kinetic")
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let ours: Vec<&String> =
        cgroups.iter().filter(|n| uids.iter().any(|u| n.starts_with(u.as_str()))).collect();
    assert!(ours.is_empty(), "cgroups left behind: {ours:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_users_hooks_tcp_and_startup_probes_and_more_volume_types() {
    let c = Cluster::start().await;
    let image = kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "tls"}, "stringData": {"key.pem": "secret bytes"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let host = tempfile::tempdir().unwrap();
    // The hook runs as the container's user (65534).
    std::fs::set_permissions(host.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .unwrap();
    let hostdir = host.path().to_str().unwrap().to_owned();
    c.create(
        "rich",
        json!({
            "volumes": [
                {"name": "tls", "secret": {"secretName": "tls", "defaultMode": 0o444}},
                {"name": "host", "hostPath": {"path": hostdir, "type": "Directory"}},
            ],
            "containers": [{
                "name": "app", "image": image,
                "securityContext": {"runAsUser": 65534, "runAsGroup": 65534},
                "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}, "requests": {"cpu": "250m"}},
                "command": ["sh", "-c", "echo uid=$(id -u) gid=$(id -g); cat /tls/key.pem; echo; stat -c mode=%a /tls/key.pem; sleep 2; exec httpd -f -p 9000 -h /tmp"],
                "volumeMounts": [{"name": "tls", "mountPath": "/tls"}, {"name": "host", "mountPath": "/host"}],
                "startupProbe": {"exec": {"command": ["test", "-f", "/tmp/started"]}, "periodSeconds": 1, "failureThreshold": 30},
                "readinessProbe": {"tcpSocket": {"port": 9000}, "periodSeconds": 1},
                "lifecycle": {
                    "postStart": {"exec": {"command": ["sh", "-c", "touch /tmp/started"]}},
                    "preStop": {"exec": {"command": ["sh", "-c", "echo stopping > /host/prestop"]}},
                },
            }],
        }),
    )
    .await;
    let p = c.wait_ready("rich").await;
    assert!(container_status(&p, "app").started.unwrap_or(false));
    let logs = node_logs(&c, "rich", "app", "").await;
    assert!(logs.contains("uid=65534 gid=65534"), "{logs}");
    assert!(logs.contains("secret bytes") && logs.contains("mode=444"), "{logs}");
    // resources → cgroup v1 limits of the container's cgroup (named by its runc id).
    let id =
        container_status(&p, "app").container_id.unwrap().split_once("://").unwrap().1.to_owned();
    let read = |f: &str| std::fs::read_to_string(f).unwrap().trim().to_owned();
    assert_eq!(
        read(&format!("/sys/fs/cgroup/memory/kinetic/{id}/memory.limit_in_bytes")),
        (64u64 << 20).to_string()
    );
    assert_eq!(read(&format!("/sys/fs/cgroup/cpu/kinetic/{id}/cpu.cfs_quota_us")), "50000");
    assert_eq!(read(&format!("/sys/fs/cgroup/cpu/kinetic/{id}/cpu.shares")), "256");
    // The preStop hook runs before the container is stopped.
    c.pods().delete("rich", &Default::default()).await.unwrap();
    c.wait_gone("rich", 20).await;
    assert_eq!(std::fs::read_to_string(host.path().join("prestop")).unwrap(), "stopping\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_probed_eagerly_until_the_first_success() {
    let c = Cluster::start().await;
    let image = kinetic_testkit::images::busybox(&c.registry, "eager", "v1", &[]).await.unwrap();
    // The server listens 300 ms after start; the probe period is 10 s. kubelet would find it
    // ready only at the second probe, 10 s in; the agent retries after 5 ms, 10 ms, ...
    c.create(
        "eager",
        json!({"containers": [{"name": "web", "image": image,
            "command": ["sh", "-c", "sleep 0.3; exec httpd -f -p 8080 -h /www"],
            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 10}}]}),
    )
    .await;
    let started = Instant::now();
    let p = c.wait("eager", 5, "Ready within 5 s", is_ready).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    // Ready because the probe succeeded: the server answers.
    let ip = pod_ip(&p);
    assert!(Cluster::http_get(&ip, 8080, "/").await.is_ok());
}

/// OpenKruise's `InPlaceUpdateEnvFromMetadata` on the node: a container whose env reads a label
/// is recreated with the new value, in the same pod, once the label changed during an in-place
/// update (`InPlaceUpdateReady` False, as kruise-daemon requires); relabelling the pod outside
/// an update restarts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_from_a_changed_label_restarts_the_container_only_during_an_in_place_update() {
    let c = Cluster::start().await;
    let v1 = kinetic_testkit::images::busybox(&c.registry, "envmeta", "v1", &[]).await.unwrap();
    let v2 = kinetic_testkit::images::busybox(&c.registry, "envmeta", "v2", &[("www/x", "2\n")])
        .await
        .unwrap();
    let serve = "mkdir -p /srv && echo \"$TRACK\" > /srv/track && exec httpd -f -p 8080 -h /srv";
    let pod = c
        .create(
            "envmeta",
            json!({"containers": [
                {"name": "main", "image": v1, "command": ["sh", "-c", serve],
                 "env": [{"name": "TRACK", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['track']"}}}],
                 "readinessProbe": {"httpGet": {"path": "/track", "port": 8080}, "periodSeconds": 1}},
                {"name": "sidecar", "image": v1, "command": ["sleep", "1000"]},
            ]}),
        )
        .await;
    let label = |track: &str| json!({"metadata": {"labels": {"track": track}}});
    c.pods()
        .patch("envmeta", &PatchParams::default(), &Patch::Merge(label("stable")))
        .await
        .unwrap();
    // The container started before the label existed: relabelling outside an update does not
    // restart it. The sidecar's new image, in the same write, proves the agent acted on it.
    let by_hand = json!({"metadata": {"labels": {"track": "manual"}},
                         "spec": {"containers": [{"name": "sidecar", "image": v2}]}});
    c.wait_ready("envmeta").await;
    c.pods().patch("envmeta", &PatchParams::default(), &Patch::Strategic(by_hand)).await.unwrap();
    let p = c.wait("envmeta", 30, "sidecar on v2", |p| restarts(p, "sidecar") == 1).await;
    assert_eq!(restarts(&p, "main"), 0, "relabelling by hand restarts nothing");
    let ip = pod_ip(&p);

    // During an in-place update the new value restarts `main`, in the same pod.
    let not_ready = json!({"status": {"conditions": [
        {"type": "InPlaceUpdateReady", "status": "False", "reason": "StartInPlaceUpdate"}]}});
    c.pods()
        .patch_status("envmeta", &PatchParams::default(), &Patch::Strategic(not_ready))
        .await
        .unwrap();
    c.pods()
        .patch("envmeta", &PatchParams::default(), &Patch::Merge(label("canary")))
        .await
        .unwrap();
    let p = c
        .wait("envmeta", 30, "main restarted and ready", |p| {
            restarts(p, "main") == 1 && container_status(p, "main").ready
        })
        .await;
    assert_eq!(p.metadata.uid, pod.metadata.uid);
    assert_eq!(pod_ip(&p), ip, "same pod, same IP");
    let page = Cluster::http_get(&ip, 8080, "/track").await.unwrap();
    assert!(page.contains(" 200 ") && page.trim_end().ends_with("\r\n\r\ncanary"), "{page}");
    assert_eq!(restarts(&p, "sidecar"), 1, "the sidecar reads no label");
    c.wait_event("envmeta", "definition changed, will be restarted", 5).await;
}

/// Before the shim, a container that ended while no agent ran was reported as
/// `ContainerStatusUnknown` with exit code 137: its code was lost with the agent. Its shim
/// reaps it and records the code, which the next agent reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_status_unknown_no_more_exit_code_survives_an_agent_restart() {
    let mut c = Cluster::start().await;
    let image = kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
    c.create(
        "ender",
        json!({"restartPolicy": "Never",
               "containers": [{"name": "app", "image": image,
                               "command": ["sh", "-c", "sleep 2; echo bye; exit 7"]}]}),
    )
    .await;
    c.wait("ender", 30, "Running", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
    c.stop_agent().await;
    // The container ends while no agent runs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.start_agent().await;
    let p = c
        .wait("ender", 30, "Failed", |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
        })
        .await;
    let st = container_status(&p, "app");
    let t = st.state.and_then(|s| s.terminated).expect("terminated");
    assert_eq!((t.exit_code, t.reason.as_deref()), (7, Some("Error")), "{t:?}");
    let logs = c.server.kubectl_ok(&["logs", "ender"]).await.unwrap();
    assert_eq!(logs, "bye\n");
    c.pods().delete("ender", &Default::default()).await.unwrap();
    c.wait_gone("ender", 15).await;
    let left = c.settled_leftovers(10).await;
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// The shims of one pod (processes running `__shim` for its uid).
fn shims_of(uid: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("__shim") && cmd.contains(uid) {
                out.push(cmd);
            }
        }
    }
    out
}

/// An agent that crashed after starting a container but before recording it starts that
/// attempt again: the unrecorded container, its shim and its output go first, so the pod has
/// one container, one shim and one log, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_the_crashed_agent_did_not_record_is_replaced_not_doubled() {
    let mut c = Cluster::start().await;
    let image = kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
    let pod = c
        .create(
            "twice",
            json!({"containers": [{"name": "app", "image": image,
                                   "command": ["sh", "-c", "echo started; exec sleep 600"]}]}),
        )
        .await;
    let uid = pod.metadata.uid.clone().unwrap();
    c.wait_ready("twice").await;
    c.stop_agent().await;
    // What a crash between the shim's start and the record leaves: a running container the
    // record does not know.
    let state = c.data_dir().join("pods").join(&uid).join("state.json");
    let mut rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    rec["containers"]["app"]["attempt"] = json!(0);
    rec["containers"]["app"]["state"] =
        json!({"state": "Waiting", "reason": "ContainerCreating", "message": ""});
    std::fs::write(&state, serde_json::to_vec(&rec).unwrap()).unwrap();
    assert_eq!(shims_of(&uid).len(), 1);
    c.start_agent().await;
    // The new agent serves the pod's logs once it runs attempt 1 again: one `started`.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = c.server.kubectl(&["logs", "twice"]).await.unwrap();
        let logs = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && logs == "started\n" {
            break;
        }
        assert!(Instant::now() < deadline && !logs.contains("started\nstarted"), "{out:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.wait_ready("twice").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while shims_of(&uid).len() != 1 {
        assert!(Instant::now() < deadline, "shims: {:#?}", shims_of(&uid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = c.containers();
    let ids = all.iter().filter(|l| l.contains(&uid)).count();
    assert_eq!(ids, 1, "{all:?}");
    c.pods().delete("twice", &Default::default()).await.unwrap();
    c.wait_gone("twice", 15).await;
    let left = c.settled_leftovers(10).await;
    assert!(left.is_empty(), "left behind: {left:#?}");
    assert!(shims_of(&uid).is_empty());
}

/// The runtime's own error reaches the container's status and a `Failed` Event through the
/// shim (the native runtime reports it from the shim itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_failure_under_the_shim_says_why() {
    runtime_failure_says_why(None).await;
}

/// The same through runc, which writes its error on the container's stderr pipe, which the
/// shim reads (the suite's default runtime is the native one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runc_failure_under_the_shim_says_why() {
    runtime_failure_says_why(Some(Kind::Runc)).await;
}

/// A missing entrypoint, with and without a terminal, on `runtime` (the suite's when `None`).
async fn runtime_failure_says_why(runtime: Option<Kind>) {
    let c = Cluster::start_with(|cfg| cfg.runtime = runtime.unwrap_or(cfg.runtime)).await;
    let image = kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
    c.create(
        "nocmd",
        json!({"restartPolicy": "Never",
               "containers": [{"name": "app", "image": image, "command": ["/no/such/binary"]}]}),
    )
    .await;
    // With a terminal, runc's stderr is a pipe of the shim's own (runc), or the shim reports
    // it (native).
    c.create(
        "nocmd-tty",
        json!({"restartPolicy": "Never",
               "containers": [{"name": "app", "image": image, "tty": true, "stdin": true,
                               "command": ["/no/such/binary"]}]}),
    )
    .await;
    for pod in ["nocmd", "nocmd-tty"] {
        let event = c.wait_event(pod, "/no/such/binary", 30).await;
        let runtime = c.cfg.runtime;
        assert!(
            event.starts_with(&format!("Failed: Error: {runtime} run of container")),
            "{event}"
        );
        assert!(event.contains("no such file or directory"), "{event}");
        c.pods().delete(pod, &Default::default()).await.unwrap();
        c.wait_gone(pod, 15).await;
    }
    let left = c.settled_leftovers(10).await;
    assert!(left.is_empty(), "left behind: {left:#?}");
}
