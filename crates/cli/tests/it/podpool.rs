//! Warm pod pools with real containers on `kinetic up` (issue 12 part 3, specialisation by
//! image): a PodPool of placeholder pods (`sleep`); a claim by image turns one into an HTTP
//! app in place (same pod UID and IP, the claimant's command, env and readiness probe), the
//! timeline records claimed → specialised → ready, and the pool refills; a claim whose image
//! cannot be pulled is labelled `failed` by the node agent and deleted by the pool, which
//! refills again.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kinetic_api::pool::{POOL_LABEL, POOL_STATE_LABEL, state};
use kinetic_api::timeline::Timeline;
use kinetic_controllers::podpool;
use kinetic_testkit::net::NetSlot;
use kinetic_testkit::registry::Registry;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

const POOL: &str = "apiVersion: kinetic.dev/v1alpha1
kind: PodPool
metadata:
  name: placeholders
spec:
  minReady: 2
  maxReady: 2
  specializationTimeoutSeconds: 30
  template:
    metadata:
      labels:
        app: placeholders
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: placeholder
        image: PLACEHOLDER
        command: [sleep, '3600']
";

pub(crate) fn ip_of(p: &Pod) -> String {
    p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default()
}

pub(crate) fn pool_state(p: &Pod) -> &str {
    p.labels().get(POOL_STATE_LABEL).map_or("", String::as_str)
}

/// GET `path` on `ip:port`: the body of a 200, or why not.
pub(crate) async fn get(ip: &str, port: u16, path: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let call = async {
        let mut s = tokio::net::TcpStream::connect((ip, port)).await.map_err(|e| e.to_string())?;
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.map_err(|e| e.to_string())?;
        match out.split_once("\r\n\r\n") {
            Some((head, body)) if head.contains(" 200 ") => Ok(body.to_owned()),
            _ => Err(format!("answer {:?}", out.lines().next())),
        }
    };
    tokio::time::timeout(Duration::from_secs(2), call).await.map_err(|_| "timeout".to_owned())?
}

/// Polls `name` until `pred` holds (or it is gone and `pred(None)` holds), for up to 60 s.
pub(crate) async fn wait_pod(
    pods: &Api<Pod>,
    name: &str,
    what: &str,
    pred: impl Fn(Option<&Pod>) -> bool,
) {
    for i in 0.. {
        let p = pods.get_opt(name).await.unwrap();
        if pred(p.as_ref()) {
            return;
        }
        assert!(i < 600, "pod {name}: {what} not reached in 60 s: {p:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until pool `pool` holds `n` unclaimed Ready pods; returns their names.
pub(crate) async fn wait_full(pods: &Api<Pod>, pool: &str, n: usize) -> Vec<String> {
    let lp = ListParams::default()
        .labels(&format!("{POOL_LABEL}={pool},{POOL_STATE_LABEL}={}", state::READY));
    for i in 0.. {
        let ready: Vec<String> = pods
            .list(&lp)
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && crate::workloads::is_ready(p))
            .map(kube::ResourceExt::name_any)
            .collect();
        if ready.len() == n {
            return ready;
        }
        assert!(i < 600, "the pool did not fill to {n} ready pods in 60 s: {ready:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

/// A ConfigMap standing for the claimant (a Revision, a CloneSet): the claimed pod's owner.
pub(crate) async fn claimant(client: &kube::Client, name: &str) -> OwnerReference {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": name}, "data": {"app": name}})).unwrap();
    let cm = api.create(&PostParams::default(), &cm).await.unwrap();
    OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: name.into(),
        uid: cm.uid().unwrap(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_by_image_specialises_a_pool_pod_in_place_and_the_pool_refills() {
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let placeholder =
        kinetic_testkit::images::busybox(&registry, "placeholder", "v1", &[]).await.unwrap();
    let app =
        kinetic_testkit::images::busybox(&registry, "app", "v1", &[("www/index.html", "app v1\n")])
            .await
            .unwrap();
    let (up, _dir) = crate::up_with_node("node-pool", &slot).await;
    let home = tempfile::tempdir().unwrap();
    let client = kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    crate::apply_when_served(&up, home.path(), &POOL.replace("PLACEHOLDER", &placeholder)).await;
    wait_full(&pods, "placeholders", 2).await;

    // -- Claim by image: the claimant's command, env, port and readiness probe. -------------
    let web: Container = serde_json::from_value(json!({
        "name": "web", "image": app,
        "command": ["sh", "-c", "echo \"$GREETING\" > /www/greeting && exec httpd -f -p 8080 -h /www"],
        "env": [{"name": "GREETING", "value": "specialised"}],
        "ports": [{"containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
    }))
    .unwrap();
    let owner = claimant(&client, "app1").await;
    let claimed =
        podpool::claim_for_image(&client, "default", "placeholders", &owner, &web).await.unwrap();
    let name = claimed.name_any();
    let (uid, ip) = (claimed.uid().unwrap(), ip_of(&claimed));
    assert!(!ip.is_empty());
    wait_pod(&pods, &name, "specialized and Ready", |p| {
        p.is_some_and(|p| pool_state(p) == state::SPECIALIZED && crate::workloads::is_ready(p))
    })
    .await;
    let p = pods.get(&name).await.unwrap();
    assert_eq!((p.uid().unwrap(), ip_of(&p)), (uid, ip.clone()), "same pod, same IP");
    let c = &p.spec.as_ref().unwrap().containers[0];
    assert_eq!((c.name.as_str(), c.image.as_deref()), ("placeholder", Some(app.as_str())));
    let owners: Vec<&str> = p.owner_references().iter().map(|o| o.name.as_str()).collect();
    assert_eq!(owners, ["app1"]);
    assert_eq!(get(&ip, 8080, "/").await.unwrap(), "app v1\n");
    assert_eq!(get(&ip, 8080, "/greeting").await.unwrap(), "specialised\n");
    let tl: Timeline =
        serde_json::from_str(&p.annotations()[kinetic_api::timeline::ANNOTATION]).unwrap();
    let s = tl.specialization.unwrap();
    let (claimed_at, specialized, ready) =
        (s.claimed.unwrap(), s.specialized.unwrap(), s.ready.unwrap());
    assert!(
        claimed_at <= specialized && specialized <= ready,
        "{claimed_at} {specialized} {ready}"
    );
    assert_eq!(s.image, app);
    assert!(tl.ready.unwrap() <= claimed_at, "the pool pod's own start stays in the timeline");
    // The pool refills to two unclaimed ready pods, none of them the claimed one.
    let refilled = wait_full(&pods, "placeholders", 2).await;
    assert!(!refilled.contains(&name));

    // -- A claim whose image cannot be had: marked failed, deleted, the pool refills. --------
    let missing =
        Container { image: Some(format!("{}/missing:v1", registry.addr())), ..web.clone() };
    let owner = claimant(&client, "app2").await;
    let failed = podpool::claim_for_image(&client, "default", "placeholders", &owner, &missing)
        .await
        .unwrap();
    wait_pod(&pods, &failed.name_any(), "deleted after a failed specialisation", |p| {
        p.is_none_or(|p| p.metadata.deletion_timestamp.is_some())
    })
    .await;
    let refilled = wait_full(&pods, "placeholders", 2).await;
    assert!(!refilled.contains(&failed.name_any()));
    let events = crate::kubectl(&up, home.path(), &["get", "events"]).await;
    assert!(events.contains("SpecializationFailed"), "{events}");
    assert!(events.contains("Specialized"), "{events}");

    // Containers outlive a killed agent by design: delete the pods before stopping `kinetic up`.
    crate::kubectl(&up, home.path(), &["delete", "podpool", "placeholders", "--wait=true"]).await;
    let dp = DeleteParams::default().grace_period(0);
    let _ = pods.delete_collection(&dp, &ListParams::default()).await.unwrap();
    for i in 0.. {
        if pods.list(&ListParams::default()).await.unwrap().items.is_empty() {
            break;
        }
        assert!(i < 300, "pods left after deleting the pool and its pods");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
