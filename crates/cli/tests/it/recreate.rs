//! OpenKruise's ContainerRecreateRequest on `kinetic up` with real containers (issue 17, part
//! 7), through kubectl:
//! - a request for one container of a two-container pod restarts just that one (its
//!   restartCount + 1, the other's unchanged, same pod UID and IP), completes with its
//!   container's state Succeeded, and is deleted after `ttlSecondsAfterFinished`;
//! - `orderedRecreate` with `minStartedSeconds` restarts the second container only once the
//!   first has run that long;
//! - a request naming a container the pod does not have, or a pod that does not exist, is
//!   refused with the webhook's message;
//! - `unreadyGracePeriodSeconds` takes a pod with the `KruisePodReady` readiness gate out of
//!   service (gate and Ready False) for the grace before the container stops, and gives it
//!   back after; `activeDeadlineSeconds` fails a request still waiting, with upstream's
//!   message, and restarts nothing.

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

    // -- Unready grace through the KruisePodReady gate, then a deadline. ----------------------
    crate::kubectl_in(&up, h, &["apply", "-f", "-"], Some(&GATED.replace("IMAGE", &image))).await;
    let gate_true = r#"{"status":{"conditions":[{"type":"KruisePodReady","status":"True"}]}}"#;
    for i in 0.. {
        let out = kinetic_testkit::kubectl(
            &up.kubeconfig,
            h,
            &["patch", "pod", "gated", "--subresource=status", "--type=strategic", "-p", gate_true],
            None,
        )
        .await
        .unwrap();
        if out.status.success() {
            break;
        }
        assert!(i < 100, "{}", String::from_utf8_lossy(&out.stderr));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gated = ready(&pods, "gated").await;
    crate::kubectl_in(&up, h, &["apply", "-f", "-"], Some(GRACE)).await;
    // While the grace runs the pod is out of service: its gate False, so Ready False.
    let mut saw_unready = false;
    for i in 0.. {
        let c = crrs.get("grace").await.unwrap();
        let p = pods.get("gated").await.unwrap();
        if condition(&p, "KruisePodReady")
            .is_some_and(|(s, m)| s == "False" && m.contains("default/grace"))
            && condition(&p, "Ready").is_some_and(|(s, _)| s == "False")
        {
            saw_unready = true;
        }
        if c.status.as_ref().and_then(|s| s.phase) == Some(Phase::Completed) {
            break;
        }
        assert!(i < 600, "grace did not complete: {:?}", c.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_unready, "the pod was never out of service during the unready grace");
    let done = completed(&crrs, "grace").await;
    assert_eq!(states(&done), [("app".to_owned(), Phase::Succeeded)]);
    let acquired: jiff::Timestamp =
        done.annotations()["crr.apps.kruise.io/unready-acquired"].parse().unwrap();
    let back = gate_back(&pods, &crrs, "grace").await;
    assert_eq!(status_of(&back, "app").restart_count, 1);
    let waited = started_at(&back, "app").duration_since(acquired);
    assert!(waited.as_secs() >= 2, "app restarted {waited:?} after the pod went unready");
    assert_eq!(back.uid(), gated.uid());

    crate::kubectl_in(&up, h, &["apply", "-f", "-"], Some(LATE)).await;
    let done = completed(&crrs, "late").await;
    let msg = "recreating has exceeded the activeDeadlineSeconds";
    assert_eq!(done.status.as_ref().and_then(|s| s.message.as_deref()), Some(msg));
    let st = done.status.as_ref().and_then(|s| s.container_recreate_states.clone()).unwrap();
    assert_eq!((st[0].phase, st[0].message.as_deref()), (Phase::Failed, Some(msg)));
    let back = gate_back(&pods, &crrs, "late").await;
    assert_eq!(status_of(&back, "app").restart_count, 1, "nothing restarted past the deadline");

    // Containers outlive a killed agent by design: delete the pods before stopping `kinetic up`.
    crate::kubectl(&up, h, &["delete", "pod", "two", "gated", "--wait=true"]).await;
}

const GATED: &str = "apiVersion: v1
kind: Pod
metadata:
  name: gated
spec:
  terminationGracePeriodSeconds: 1
  readinessGates:
  - conditionType: KruisePodReady
  containers:
  - name: app
    image: IMAGE
    command: [sh, -c, exec httpd -f -p 8080 -h /www]
";

const GRACE: &str = "apiVersion: apps.kruise.io/v1alpha1
kind: ContainerRecreateRequest
metadata:
  name: grace
spec:
  podName: gated
  containers:
  - name: app
  strategy:
    unreadyGracePeriodSeconds: 2
";

const LATE: &str = "apiVersion: apps.kruise.io/v1alpha1
kind: ContainerRecreateRequest
metadata:
  name: late
spec:
  podName: gated
  containers:
  - name: app
  strategy:
    unreadyGracePeriodSeconds: 60
  activeDeadlineSeconds: 3
";

/// The status and message of the pod's condition `type_`.
fn condition(p: &Pod, type_: &str) -> Option<(String, String)> {
    let conds = p.status.as_ref().and_then(|s| s.conditions.as_ref());
    conds
        .into_iter()
        .flatten()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.message.clone().unwrap_or_default()))
}

/// Waits until the request `name` gave the pod `gated` its readiness back (gate True, Ready,
/// the request's finalizer gone) and returns the pod.
async fn gate_back(pods: &Api<Pod>, crrs: &Api<ContainerRecreateRequest>, name: &str) -> Pod {
    for i in 0.. {
        let p = pods.get("gated").await.unwrap();
        let c = crrs.get(name).await.unwrap();
        if condition(&p, "KruisePodReady").is_some_and(|(s, _)| s == "True")
            && crate::workloads::is_ready(&p)
            && c.finalizers().is_empty()
        {
            return p;
        }
        assert!(
            i < 300,
            "{name} did not give readiness back: {:?} {:?}",
            p.status,
            c.metadata.finalizers
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}
