//! Issue 12 part 5 end to end: a Knative Service's image-only revision takes over its
//! predecessor's pods in place (same UIDs and IPs, no new pod, requests answered throughout),
//! a rollback does the reverse (here in steps over `rollout-duration`), and an env change
//! still makes new pods.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};

use crate::serving_traffic::{Env, catch, get, host_of, ready, traffic};

/// httpd as PID 1 would ignore SIGTERM (see `serving.rs`).
const COMMAND: &str = r#"[sh, -c, "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"]"#;

/// The Service at `image`, two pods held by min/max-scale; `env` extra container YAML.
fn ksvc(image: &str, env: &str) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: handoff
  namespace: default
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/min-scale: \"2\"
        autoscaling.knative.dev/max-scale: \"2\"
    spec:
      containers:
      - image: {image}
        command: {COMMAND}
{env}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_only_revision_takes_over_its_predecessors_pods_in_place_and_a_rollback_does_the_reverse()
 {
    let env = Env::start("node-handoff").await;
    let outcome = catch(handoff(&env)).await;
    env.finish(outcome).await;
}

/// `(uid, ip)` of the ready pods of `revision`, and how many pods it has at all.
async fn pods_of(pods: &Api<Pod>, revision: &str) -> (BTreeSet<(String, String)>, usize) {
    let lp = ListParams::default().labels(&format!("serving.knative.dev/revision={revision}"));
    let all = pods.list(&lp).await.unwrap().items;
    let ready = all
        .iter()
        .filter(|p| {
            let conds = p.status.as_ref().and_then(|s| s.conditions.as_ref());
            conds.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .map(|p| {
            let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default();
            (p.uid().unwrap_or_default(), ip)
        })
        .collect();
    (ready, all.len())
}

/// Waits (120 s at most) until `revision` has exactly two ready pods and `gone` has none.
async fn wait_pods(
    env: &Env,
    pods: &Api<Pod>,
    revision: &str,
    gone: Option<&str>,
) -> BTreeSet<(String, String)> {
    for i in 0.. {
        let (ready, total) = pods_of(pods, revision).await;
        let left = match gone {
            Some(g) => pods_of(pods, g).await.1,
            None => 0,
        };
        if ready.len() == 2 && total == 2 && left == 0 {
            return ready;
        }
        if i > 1200 {
            let all = env.kubectl(&["get", "ksvc,route,rev,cloneset,pods", "-o", "yaml"]).await;
            panic!("{revision}: {ready:?} of {total} ready, {left} left in {gone:?}\n{all}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

/// Applies `manifest` and waits until `revision` is Ready with all the traffic and its pods
/// (and only its) serve; the time that took.
async fn release(
    env: &Env,
    pods: &Api<Pod>,
    manifest: &str,
    revision: &str,
    gone: &str,
) -> (BTreeSet<(String, String)>, Duration) {
    let start = Instant::now();
    env.apply(manifest).await;
    env.wait_ksvc("handoff", &format!("{revision} with all traffic"), |s| {
        ready(s) && traffic(s).iter().map(|t| (t.0.as_str(), t.1)).eq([(revision, 100)])
    })
    .await;
    let pods = wait_pods(env, pods, revision, Some(gone)).await;
    (pods, start.elapsed())
}

async fn handoff(env: &Env) {
    let v1 = env.image("handoff", "v1").await;
    let v2 = env.image("handoff", "v2").await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    env.apply(&ksvc(&v1, "")).await;
    let svc = env.wait_ksvc("handoff", "handoff-00001 Ready", ready).await;
    let host = host_of(svc.status.unwrap().route.url.as_deref().unwrap());
    let first = wait_pods(env, &pods, "handoff-00001", None).await;
    for _ in 0..5 {
        assert_eq!(get(&env.gateway, &host, "/").await, (200, "v1\n".to_owned()));
    }

    // Steady load through the gateway during both handoffs.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (gateway, host, stop) = (env.gateway.clone(), host.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let (code, body) = get(&gateway, &host, "/").await;
                    answers.push((code, body, t.elapsed()));
                }
                answers
            })
        })
        .collect();

    // v1 → v2, image only, no rollout duration: the same two pods, all at once.
    let (second, took) =
        release(env, &pods, &ksvc(&v2, ""), "handoff-00002", "handoff-00001").await;
    eprintln!("handoff v1 -> v2 (all at once): {took:?} from apply to all traffic on the pods");
    assert_eq!(second, first, "the new revision's pods are the old revision's, in place");
    for _ in 0..5 {
        assert_eq!(get(&env.gateway, &host, "/").await, (200, "v2\n".to_owned()));
    }

    // The rollback, v2 → v1 as a new revision, in steps over a 6 s rollout duration.
    env.apply(
        "apiVersion: v1
kind: Namespace
metadata:
  name: knative-serving
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: config-network
  namespace: knative-serving
data:
  rollout-duration: \"6\"
",
    )
    .await;
    let (third, took) = release(env, &pods, &ksvc(&v1, ""), "handoff-00003", "handoff-00002").await;
    eprintln!("rollback v2 -> v1 (rollout-duration 6s): {took:?} from apply to all traffic");
    assert_eq!(third, first, "the rollback takes the same pods back");
    for _ in 0..5 {
        assert_eq!(get(&env.gateway, &host, "/").await, (200, "v1\n".to_owned()));
    }

    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for c in clients {
        answers.extend(c.await.unwrap());
    }
    let count = |b: &str| answers.iter().filter(|a| a.0 == 200 && a.1 == b).count();
    let failed: Vec<_> = answers.iter().filter(|a| a.0 != 200).collect();
    let mut took: Vec<Duration> = answers.iter().map(|a| a.2).collect();
    took.sort();
    let pct = |q: f64| took[((took.len() - 1) as f64 * q) as usize];
    eprintln!(
        "under load: {} requests, {} v1, {} v2, {} failed; latency p50 {:?} p99 {:?} max {:?}",
        answers.len(),
        count("v1\n"),
        count("v2\n"),
        failed.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    assert!(failed.is_empty(), "{} of {} failed: {failed:?}", failed.len(), answers.len());
    assert!(count("v2\n") > 0, "v2 served during the load");

    // An env change is not image-only: new pods, as before.
    let env_change = "        env:\n        - {name: GREETING, value: hi}\n";
    let (fourth, _) =
        release(env, &pods, &ksvc(&v1, env_change), "handoff-00004", "handoff-00004-none").await;
    assert!(
        fourth.iter().all(|(uid, _)| !first.iter().any(|(u, _)| u == uid)),
        "an env change made new pods: {fourth:?} vs {first:?}"
    );
}
