//! Warm pod pools specialised by code with real containers on `kinetic up` (issue 12 part 3):
//! a PodPool of Kinetic's Python runtime (Fission's environment protocol) pods; a claim by code
//! makes the node agent pull the code image, unpack it into the pod's `userfunc` volume and
//! call the runtime's `/v2/specialize` (or `/specialize` for interface v1); the pod then
//! answers from the injected code with the same UID and IP. A specialisation the runtime
//! refuses (500) or whose code image does not exist labels the pod `failed`; the pool deletes
//! it and refills.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use kinetic_api::pool::{PodPool, state};
use kinetic_api::timeline::Timeline;
use kinetic_controllers::podpool;
use kinetic_testkit::net::NetSlot;
use kinetic_testkit::python;
use kinetic_testkit::registry::Registry;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

use crate::podpool::{claimant, get, ip_of, pool_state, wait_full, wait_pod};

fn code_container(image: &str) -> Container {
    serde_json::from_value(json!({
        "name": "user-container", "image": image, "args": [python::APP_FUNCTION],
    }))
    .unwrap()
}

/// Polls `ip:8888/` until it answers 200 with the app's answer; the time it took from `since`.
async fn first_answer(ip: &str, since: Instant) -> Duration {
    for i in 0.. {
        if let Ok(body) = get(ip, python::PORT, "/").await {
            assert_eq!(body, python::APP_ANSWER);
            return since.elapsed();
        }
        assert!(i < 12_000, "{ip} did not answer from the injected code in 60 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    unreachable!()
}

async fn pool(client: &kube::Client, name: &str) -> PodPool {
    Api::<PodPool>::namespaced(client.clone(), "default").get(name).await.unwrap()
}

/// Deletes the pools and every pod, and waits for the pods to be gone (containers outlive a
/// killed agent by design, so they go before `kinetic up` stops).
async fn clean(up: &crate::Kinetic, home: &std::path::Path, pods: &Api<Pod>) {
    crate::kubectl(up, home, &["delete", "podpool", "--all", "--wait=true"]).await;
    let dp = DeleteParams::default().grace_period(0);
    let _ = pods.delete_collection(&dp, &ListParams::default()).await.unwrap();
    for i in 0.. {
        if pods.list(&ListParams::default()).await.unwrap().items.is_empty() {
            break;
        }
        assert!(i < 300, "pods left after deleting the pools and their pods");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_by_code_injects_python_code_into_a_runtime_pod_in_place() {
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let runtime = python::runtime(&registry, "v1").await.unwrap();
    let code = python::app_code(&registry, "v1").await.unwrap();
    let broken =
        python::code(&registry, "broken-code", "v1", &[("main.py", "raise ImportError('boom')\n")])
            .await
            .unwrap();
    let (up, _dir) = crate::up_with_node("node-code", &slot).await;
    let home = tempfile::tempdir().unwrap();
    let client = kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    crate::apply_when_served(&up, home.path(), &python::pool_manifest("py", &runtime, 2, 2)).await;
    crate::apply_when_served(&up, home.path(), &python::pool_manifest("py1", &runtime, 1, 1)).await;
    wait_full(&pods, "py", 2).await;
    wait_full(&pods, "py1", 1).await;

    // -- v2: the container's image is the code, its argument the function. ------------------
    let owner = claimant(&client, "fn1").await;
    let began = Instant::now();
    let claimed =
        podpool::claim_for(&client, &pool(&client, "py").await, &owner, &code_container(&code))
            .await
            .unwrap();
    let (name, uid, ip) = (claimed.name_any(), claimed.uid().unwrap(), ip_of(&claimed));
    let took = first_answer(&ip, began).await;
    eprintln!("code pool (v2): claim to first answer {} ms", took.as_millis());
    wait_pod(&pods, &name, "specialized", |p| {
        p.is_some_and(|p| pool_state(p) == state::SPECIALIZED && crate::workloads::is_ready(p))
    })
    .await;
    let p = pods.get(&name).await.unwrap();
    assert_eq!((p.uid().unwrap(), ip_of(&p)), (uid, ip.clone()), "same pod, same IP");
    let c = &p.spec.as_ref().unwrap().containers[0];
    assert_eq!(c.image.as_deref(), Some(runtime.as_str()), "the runtime keeps running");
    let tl: Timeline =
        serde_json::from_str(&p.annotations()[kinetic_api::timeline::ANNOTATION]).unwrap();
    let s = tl.specialization.unwrap();
    let steps = [s.claimed, s.observed, s.unpacked, s.specialized, s.ready].map(Option::unwrap);
    assert!(steps.windows(2).all(|w| w[0] <= w[1]), "timeline out of order: {steps:?}");
    let after = |t: jiff::Timestamp| t.duration_since(steps[0]).as_millis();
    eprintln!(
        "timeline after the claim: observed {} ms, unpacked {} ms, specialized {} ms, ready {} ms",
        after(steps[1]),
        after(steps[2]),
        after(steps[3]),
        after(steps[4])
    );
    assert_eq!(s.image, code);
    wait_full(&pods, "py", 2).await;

    // -- v1: `/specialize` loads `/userfunc/user`. --------------------------------------------
    let owner = claimant(&client, "fn2").await;
    let began = Instant::now();
    let claimed =
        podpool::claim_for(&client, &pool(&client, "py1").await, &owner, &code_container(&code))
            .await
            .unwrap();
    let took = first_answer(&ip_of(&claimed), began).await;
    eprintln!("code pool (v1): claim to first answer {} ms", took.as_millis());
    wait_pod(&pods, &claimed.name_any(), "specialized", |p| {
        p.is_some_and(|p| pool_state(p) == state::SPECIALIZED)
    })
    .await;

    // -- Failures: the runtime answers 500; the code image does not exist. ---------------------
    let missing = format!("{}/missing-code:v1", registry.addr());
    for (i, image) in [broken, missing].iter().enumerate() {
        let owner = claimant(&client, &format!("bad{i}")).await;
        let claimed =
            podpool::claim_for(&client, &pool(&client, "py").await, &owner, &code_container(image))
                .await
                .unwrap();
        wait_pod(&pods, &claimed.name_any(), "deleted after a failed specialisation", |p| {
            p.is_none_or(|p| p.metadata.deletion_timestamp.is_some())
        })
        .await;
        let refilled = wait_full(&pods, "py", 2).await;
        assert!(!refilled.contains(&claimed.name_any()));
    }
    let events = crate::kubectl(&up, home.path(), &["get", "events"]).await;
    assert!(events.contains("answered") && events.contains("500"), "{events}");
    assert!(events.contains("ErrImagePull"), "{events}");
    assert!(events.contains("Specialized"), "{events}");
    clean(&up, home.path(), &pods).await;
}

/// Claim → first answer of the Python app from a code pool, against creating a plain pod of the
/// same app as a self-contained image (its image already on the node), a few runs each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_app_answers_sooner_from_a_code_pool_than_from_a_new_pod() {
    const RUNS: usize = 3;
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let runtime = python::runtime(&registry, "v1").await.unwrap();
    let code = python::app_code(&registry, "v1").await.unwrap();
    let app = python::app(&registry, "v1").await.unwrap();
    let (up, _dir) = crate::up_with_node("node-code-bench", &slot).await;
    let home = tempfile::tempdir().unwrap();
    let client = kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    crate::apply_when_served(&up, home.path(), &python::pool_manifest("py", &runtime, 1, 2)).await;

    let mut pooled = Vec::new();
    for run in 0..=RUNS {
        wait_full(&pods, "py", 1).await;
        let owner = claimant(&client, &format!("pooled{run}")).await;
        let began = Instant::now();
        let claimed =
            podpool::claim_for(&client, &pool(&client, "py").await, &owner, &code_container(&code))
                .await
                .unwrap();
        let took = first_answer(&ip_of(&claimed), began).await;
        // The first run pulls the code image; the others find it cached, as a busy node does.
        if run > 0 {
            pooled.push(took);
        }
    }
    let mut plain = Vec::new();
    for run in 0..=RUNS {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("plain{run}")},
            "spec": {"terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "app", "image": app, "args": [python::APP_FUNCTION]}]},
        }))
        .unwrap();
        let began = Instant::now();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        let ip = loop {
            let p = pods.get(&format!("plain{run}")).await.unwrap();
            if !ip_of(&p).is_empty() {
                break ip_of(&p);
            }
            assert!(began.elapsed() < Duration::from_secs(60), "plain{run} got no IP");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let took = first_answer(&ip, began).await;
        // The first run pulls the app's own layer.
        if run > 0 {
            plain.push(took);
        }
    }
    let ms = |v: &[Duration]| v.iter().map(|d| d.as_millis().to_string()).collect::<Vec<_>>();
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    eprintln!(
        "python app, claim/create to first answer: code pool {:?} ms, plain pod {:?} ms",
        ms(&pooled),
        ms(&plain)
    );
    let (p, n) = (median(&mut pooled), median(&mut plain));
    eprintln!(
        "medians: code pool {} ms, plain pod {} ms ({:.1}x)",
        p.as_millis(),
        n.as_millis(),
        n.as_secs_f64() / p.as_secs_f64()
    );
    assert!(p < n, "the code pool ({p:?}) was not faster than a plain pod ({n:?})");
    clean(&up, home.path(), &pods).await;
}
