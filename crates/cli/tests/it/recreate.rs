//! OpenKruise's ContainerRecreateRequest on `kinetic up` with real containers (issue 17, part
//! 7), through kubectl:
//! - a request for one container of a two-container pod restarts just that one (its
//!   restartCount + 1, the other's unchanged, same pod UID and IP), completes with its
//!   container's state Succeeded, and is deleted after `ttlSecondsAfterFinished`;
//! - `orderedRecreate` with `minStartedSeconds` restarts the second container only once the
//!   first has run that long;
//! - a request naming a container the pod does not have, or a pod that does not exist, is
//!   refused with the webhook's message.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kinetic_api::kruise::containerrecreaterequest::{ContainerRecreateRequest, Phase};
use kinetic_testkit::net::NetSlot;
use kinetic_testkit::registry::Registry;
use kube::ResourceExt as _;
use kube::api::Api;

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: two
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: IMAGE
    command: [sh, -c, exec httpd -f -p 8080 -h /www]
  - name: side
    image: IMAGE
    command: [sh, -c, exec httpd -f -p 8081 -h /www]
";

fn status_of<'a>(p: &'a Pod, name: &str) -> &'a ContainerStatus {
    let statuses = p.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    statuses.into_iter().flatten().find(|c| c.name == name).unwrap()
}

fn started_at(p: &Pod, name: &str) -> jiff::Timestamp {
    let running = status_of(p, name).state.as_ref().and_then(|s| s.running.as_ref());
    running.and_then(|r| r.started_at.as_ref()).unwrap().0
}

fn ip_of(p: &Pod) -> String {
    p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default()
}

/// Waits until `pod` is Ready and returns it.
async fn ready(pods: &Api<Pod>, name: &str) -> Pod {
    for i in 0.. {
        if let Some(p) = pods.get_opt(name).await.unwrap()
            && crate::workloads::is_ready(&p)
        {
            return p;
        }
        assert!(i < 600, "pod {name} did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

/// Waits until the request `name` completed and returns it.
async fn completed(crrs: &Api<ContainerRecreateRequest>, name: &str) -> ContainerRecreateRequest {
    for i in 0.. {
        let c = crrs.get(name).await.unwrap();
        if c.status.as_ref().and_then(|s| s.phase) == Some(Phase::Completed) {
            return c;
        }
        assert!(i < 600, "request {name} did not complete: {:?}", c.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

fn states(c: &ContainerRecreateRequest) -> Vec<(String, Phase)> {
    let st =
        c.status.as_ref().and_then(|s| s.container_recreate_states.clone()).unwrap_or_default();
    st.into_iter().map(|s| (s.name, s.phase)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_recreate_requests_restart_chosen_containers_in_place() {
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let image =
        kinetic_testkit::images::busybox(&registry, "crr", "v1", &[("www/index.html", "crr\n")])
            .await
            .unwrap();
    let (up, _dir) = crate::up_with_node("node-crr", &slot).await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let client = kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let crrs: Api<ContainerRecreateRequest> = Api::namespaced(client, "default");

    crate::kubectl_in(&up, h, &["apply", "-f", "-"], Some(&POD.replace("IMAGE", &image))).await;
    let before = ready(&pods, "two").await;

    // -- Refusals: an unknown container, a missing pod. ---------------------------------------
    let refused = |name: &str, pod: &str, container: &str| {
        format!(
            "apiVersion: apps.kruise.io/v1alpha1
kind: ContainerRecreateRequest
metadata:
  name: {name}
spec:
  podName: {pod}
  containers:
  - name: {container}
"
        )
    };
    for (manifest, want) in [
        (refused("bad", "two", "nope"), "container nope not found in Pod"),
        (refused("ghost", "ghost", "app"), "no found Pod named ghost"),
    ] {
        let mut out = None;
        for _ in 0..100 {
            let o =
                kinetic_testkit::kubectl(&up.kubeconfig, h, &["apply", "-f", "-"], Some(&manifest))
                    .await
                    .unwrap();
            let err = String::from_utf8_lossy(&o.stderr).into_owned();
            // The CRD may not be served yet right after start.
            if err.contains("no matches for kind") || err.contains("the server could not find") {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            out = Some((o.status.success(), err));
            break;
        }
        let (ok, err) = out.unwrap();
        assert!(!ok, "{manifest} was accepted");
        assert!(err.contains(want), "{err}");
    }

    // -- One container, then the request goes after its TTL. ----------------------------------
    let one = "apiVersion: apps.kruise.io/v1alpha1
kind: ContainerRecreateRequest
metadata:
  name: one
spec:
  podName: two
  containers:
  - name: app
  ttlSecondsAfterFinished: 2
";
    crate::apply_when_served(&up, h, one).await;
    let admitted = crrs.get("one").await.unwrap();
    let labels = admitted.labels();
    assert_eq!(labels.get("crr.apps.kruise.io/pod-name").map(String::as_str), Some("two"));
    assert_eq!(labels.get("crr.apps.kruise.io/node-name").map(String::as_str), Some("node-crr"));
    assert_eq!(labels.get("crr.apps.kruise.io/pod-uid"), before.uid().as_ref());
    let ctx = admitted.spec.containers[0].status_context.clone().unwrap();
    assert_eq!(Some(ctx.container_id), status_of(&before, "app").container_id.clone());
    let done = completed(&crrs, "one").await;
    assert_eq!(states(&done), [("app".to_owned(), Phase::Succeeded)]);
    assert_eq!(done.status.as_ref().and_then(|s| s.message.clone()), None);
    let after = ready(&pods, "two").await;
    assert_eq!((after.uid(), ip_of(&after)), (before.uid(), ip_of(&before)), "same pod, same IP");
    assert_eq!(status_of(&after, "app").restart_count, 1);
    assert_eq!(status_of(&after, "side").restart_count, 0, "the other container is untouched");
    assert_eq!(started_at(&after, "side"), started_at(&before, "side"));
    assert_ne!(status_of(&after, "app").container_id, status_of(&before, "app").container_id);
    let events =
        crate::kubectl(&up, h, &["get", "events", "--field-selector", "involvedObject.name=two"])
            .await;
    assert!(events.contains("Stopping container app by ContainerRecreateRequest one"), "{events}");
    for i in 0.. {
        if crrs.get_opt("one").await.unwrap().is_none() {
            break;
        }
        assert!(i < 200, "the finished request was not deleted after its TTL");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // -- Ordered: side first, app once side has run minStartedSeconds. ------------------------
    let ordered = "apiVersion: apps.kruise.io/v1alpha1
kind: ContainerRecreateRequest
metadata:
  name: both
spec:
  podName: two
  containers:
  - name: side
  - name: app
  strategy:
    orderedRecreate: true
    minStartedSeconds: 2
";
    crate::kubectl_in(&up, h, &["apply", "-f", "-"], Some(ordered)).await;
    let done = completed(&crrs, "both").await;
    assert_eq!(
        states(&done),
        [("side".to_owned(), Phase::Succeeded), ("app".to_owned(), Phase::Succeeded)]
    );
    let after2 = ready(&pods, "two").await;
    assert_eq!(after2.uid(), before.uid());
    assert_eq!(status_of(&after2, "side").restart_count, 1);
    assert_eq!(status_of(&after2, "app").restart_count, 2);
    let gap = started_at(&after2, "app").duration_since(started_at(&after2, "side"));
    assert!(gap.as_secs() >= 2, "app restarted {gap:?} after side, before minStartedSeconds");
    let table = crate::kubectl(&up, h, &["get", "crr"]).await;
    assert!(
        table.contains("PHASE") && table.contains("Completed") && table.contains("node-crr"),
        "{table}"
    );

    // Containers outlive a killed agent by design: delete the pod before stopping `kinetic up`.
    crate::kubectl(&up, h, &["delete", "pod", "two", "--wait=true"]).await;
}
