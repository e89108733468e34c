//! In-place container restarts (issue 14): the restart's steps in the pod's timeline, the new
//! run's shim started ahead of it (one shim left per container afterwards), and the service
//! variables of a restart read from the node's Service cache.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use kinetic_api::timeline::{ANNOTATION, RestartTimeline, Timeline};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::harness::{Cluster, container_status, is_ready};
use crate::pods::node_logs;

fn restart_record(p: &Pod) -> Option<RestartTimeline> {
    let a = p.metadata.annotations.as_ref()?.get(ANNOTATION)?;
    serde_json::from_str::<Timeline>(a).ok()?.restart
}

/// Processes whose command line names the `__shim` subcommand and `needle` (a pod's uid).
fn shims_of(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
        let text = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if text.contains(" __shim ") && text.contains(needle) {
            out.push(text);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_restart_records_its_steps_reads_new_services_and_leaves_one_shim() {
    let c = Cluster::start().await;
    let v1 = kinetic_testkit::images::busybox(&c.registry, "app", "v1", &[]).await.unwrap();
    let v2 = kinetic_testkit::images::busybox(&c.registry, "app", "v2", &[]).await.unwrap();
    let script =
        "env | grep _SERVICE_HOST | sort; trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait";
    c.create(
        "restarted",
        json!({"terminationGracePeriodSeconds": 5, "containers": [{
            "name": "web", "image": v1, "command": ["sh", "-c", script],
            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
        }]}),
    )
    .await;
    let before = c.wait_ready("restarted").await;
    let uid = before.metadata.uid.clone().unwrap();
    assert_eq!(restart_record(&before), None, "a first start is no restart");
    // A Service made after the first start: the restart's variables name it (from the cache,
    // which a watch fills; kubelet's informer likewise).
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "late", "namespace": "default"},
        "spec": {"ports": [{"port": 80}], "selector": {"app": "none"}},
    }))
    .unwrap();
    Api::<Service>::namespaced(c.client.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // the watch's delivery

    let patch = json!({"spec": {"containers": [{"name": "web", "image": v2}]}});
    c.pods().patch("restarted", &PatchParams::default(), &Patch::Strategic(patch)).await.unwrap();
    let after = c
        .wait("restarted", 30, "restarted on v2, ready, its restart recorded", |p| {
            container_status(p, "web").image == v2
                && is_ready(p)
                && restart_record(p).is_some_and(|r| r.ready.is_some())
        })
        .await;
    assert_eq!(after.metadata.uid.as_deref(), Some(uid.as_str()));
    let r = restart_record(&after).unwrap();
    assert_eq!((r.container.as_str(), r.attempt), ("web", 2));
    let steps = [
        ("observed", r.observed),
        ("signalled", r.signalled),
        ("exited", r.exited),
        ("configured", r.configured),
        ("rootfs", r.rootfs),
        ("bundle", r.bundle),
        ("started", r.started),
        ("ready", r.ready),
    ];
    for w in steps.windows(2) {
        let ((a, ta), (b, tb)) = (w[0], w[1]);
        let (ta, tb) = (ta.unwrap_or_else(|| panic!("{a} missing: {r:?}")), tb.unwrap());
        assert!(ta <= tb, "{a} after {b}: {r:?}");
    }
    assert!(r.reported.is_some_and(|t| t >= r.started.unwrap()), "{r:?}");
    assert!(r.cpu.is_some_and(|c| c.total_us() > 0), "{r:?}");

    let logs = node_logs(&c, "restarted", "web", "").await;
    assert!(logs.contains("LATE_SERVICE_HOST="), "{logs}");

    // The early shim became the new run's shim, and the old run's shim is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shims = shims_of(&uid);
        if shims.len() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "shims of the pod: {shims:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.pods().delete("restarted", &Default::default()).await.unwrap();
    c.wait_gone("restarted", 30).await;
    assert!(shims_of(&uid).is_empty());
    let left = c.settled_leftovers(10).await;
    assert!(left.is_empty(), "{left:?}");
}
