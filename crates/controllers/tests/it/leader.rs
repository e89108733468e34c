//! Leader election between two candidates on one Lease.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kinetic_controllers::leader::{LeaseConfig, acquire};
use kinetic_testkit::TestServer;
use kube::api::Api;

fn cfg(id: &str) -> LeaseConfig {
    let mut c = LeaseConfig::new("kube-system", "kinetic-controller", id);
    c.lease_duration = Duration::from_secs(2);
    c.renew_deadline = Duration::from_millis(1500);
    c.retry_period = Duration::from_millis(200);
    c
}

async fn holder(api: &Api<Lease>) -> Option<String> {
    api.get("kinetic-controller").await.unwrap().spec.unwrap().holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_hand_over_on_release_or_expiry() {
    let server = TestServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-system");

    let a = acquire(client.clone(), cfg("a")).await;
    assert_eq!(holder(&api).await.as_deref(), Some("a"));

    // b waits while a renews: well past a lease duration, b has still not won.
    let b = tokio::spawn(acquire(client.clone(), cfg("b")));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!b.is_finished(), "b became leader while a was renewing");
    assert_eq!(holder(&api).await.as_deref(), Some("a"));

    // A clean release hands over within a retry period or two, not a lease duration.
    let released = Instant::now();
    a.release().await;
    let b = tokio::time::timeout(Duration::from_secs(5), b).await.unwrap().unwrap();
    assert!(released.elapsed() < Duration::from_millis(1500), "{:?}", released.elapsed());
    let lease = api.get("kinetic-controller").await.unwrap().spec.unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("b"));
    assert_eq!(lease.lease_transitions, Some(1));

    // A leader that dies without releasing (dropped: renewals stop) loses the lease once it
    // expires; the next candidate takes it then, and not before.
    drop(b);
    let died = Instant::now();
    let c = acquire(client.clone(), cfg("c")).await;
    let waited = died.elapsed();
    assert!(waited >= Duration::from_millis(1800), "took over an unexpired lease after {waited:?}");
    assert!(waited < Duration::from_secs(6), "{waited:?}");
    assert_eq!(holder(&api).await.as_deref(), Some("c"));

    // Someone else overwriting the lease makes the leader notice it lost.
    let mut l = api.get("kinetic-controller").await.unwrap();
    let spec = l.spec.as_mut().unwrap();
    spec.holder_identity = Some("intruder".into());
    spec.lease_duration_seconds = Some(60);
    api.replace("kinetic-controller", &Default::default(), &l).await.unwrap();
    tokio::time::timeout(Duration::from_secs(3), c.lost()).await.unwrap();
    server.shutdown().await;
}
