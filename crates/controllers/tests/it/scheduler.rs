use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kinetic_controllers::{SchedulerConfig, run_scheduler};
use kinetic_testkit::TestServer;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(10);

/// An API server with the scheduler running against it.
struct Env {
    server: TestServer,
    client: Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<kinetic_controllers::Result<()>>>,
}

impl Env {
    async fn start() -> Self {
        let server = TestServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(run_scheduler(client.clone(), SchedulerConfig::default(), async {
            let _ = rx.await;
        }));
        Self { server, client, stop: Some(stop), task: Some(task) }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
        self.server.shutdown().await;
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Creates a Ready node with the given allocatable; `extra` is merged into the Node.
    async fn node(&self, name: &str, cpu: &str, memory: &str, pods: &str, extra: Value) {
        let api: Api<Node> = Api::all(self.client.clone());
        let mut n = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
        });
        let mut status = json!({
            "allocatable": {"cpu": cpu, "memory": memory, "pods": pods},
            "capacity": {"cpu": cpu, "memory": memory, "pods": pods},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        });
        if let Some(s) = extra.get("status") {
            merge(&mut status, s.clone());
        }
        let mut extra = extra;
        if let Some(o) = extra.as_object_mut() {
            o.remove("status");
        }
        merge(&mut n, extra);
        api.create(&PostParams::default(), &serde_json::from_value(n).unwrap()).await.unwrap();
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(json!({"status": status})))
            .await
            .unwrap();
    }

    /// Creates a pod with one container requesting `cpu`/`memory`; `spec` is merged in.
    async fn pod(&self, name: &str, cpu: &str, memory: &str, spec: Value) -> Pod {
        let mut s = json!({"containers": [{
            "name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": cpu, "memory": memory}},
        }]});
        merge(&mut s, spec);
        let p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": s});
        self.pods()
            .create(&PostParams::default(), &serde_json::from_value(p).unwrap())
            .await
            .unwrap()
    }

    async fn bound(&self, name: &str) -> Pod {
        let cond = |p: Option<&Pod>| p.is_some_and(|p| !node_of(p).is_empty());
        tokio::time::timeout(WAIT, await_condition(self.pods(), name, cond))
            .await
            .unwrap_or_else(|_| panic!("pod {name} was not bound within {WAIT:?}"))
            .unwrap()
            .unwrap()
    }

    /// Waits for `PodScheduled=False` and returns its reason and message.
    async fn unschedulable(&self, name: &str) -> (String, String) {
        let cond = |p: Option<&Pod>| p.is_some_and(|p| scheduled_condition(p).0 == "False");
        let p = tokio::time::timeout(WAIT, await_condition(self.pods(), name, cond))
            .await
            .unwrap_or_else(|_| panic!("pod {name} did not become unschedulable"))
            .unwrap()
            .unwrap();
        assert!(node_of(&p).is_empty());
        let (_, reason, message) = scheduled_condition(&p);
        (reason, message)
    }

    /// Waits for an Event about the pod with this reason and returns it.
    async fn event(&self, pod: &str, reason: &str, min_count: i32) -> Event {
        let api: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let list = api.list(&ListParams::default()).await.unwrap();
            if let Some(e) = list.items.into_iter().find(|e| {
                e.involved_object.name.as_deref() == Some(pod)
                    && e.reason.as_deref() == Some(reason)
                    && e.count.unwrap_or(1) >= min_count
            }) {
                return e;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {reason} event (count >= {min_count}) for {pod}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn node_of(p: &Pod) -> String {
    p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default()
}

fn scheduled_condition(p: &Pod) -> (String, String, String) {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
        .unwrap_or_default()
}

fn requests(cpu: &str) -> Value {
    json!({"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": cpu}}}]})
}

#[tokio::test]
async fn binds_to_the_only_fitting_node_with_timeline_annotations_and_an_event() {
    let env = Env::start().await;
    env.node("small", "1", "1Gi", "10", json!({})).await;
    env.node("big", "4", "8Gi", "10", json!({})).await;
    env.pod("web", "2", "1Gi", json!({})).await;
    let p = env.bound("web").await;
    assert_eq!(node_of(&p), "big");
    assert_eq!(scheduled_condition(&p).0, "True");

    let ann = p.annotations();
    let queued: jiff::Timestamp = ann[kinetic_api::timeline::QUEUED_AT].parse().unwrap();
    let scheduled: jiff::Timestamp = ann[kinetic_api::timeline::SCHEDULED_AT].parse().unwrap();
    for key in [kinetic_api::timeline::QUEUED_AT, kinetic_api::timeline::SCHEDULED_AT] {
        let frac = ann[key].split('.').nth(1).unwrap();
        assert_eq!(frac.len(), "123456Z".len(), "{key} = {}", ann[key]);
    }
    assert!(queued <= scheduled, "{queued} > {scheduled}");
    // Bound within a watch delivery of being seen: generous for a loaded 2-core machine.
    let took = scheduled.duration_since(queued);
    assert!(took < jiff::SignedDuration::from_millis(500), "scheduling took {took:?}");

    let ev = env.event("web", "Scheduled", 1).await;
    assert_eq!(ev.message.as_deref(), Some("Successfully assigned default/web to big"));
    assert_eq!(ev.type_.as_deref(), Some("Normal"));
    assert_eq!(ev.source.as_ref().and_then(|s| s.component.as_deref()), Some("default-scheduler"));
    assert_eq!(ev.involved_object.kind.as_deref(), Some("Pod"));
    assert_eq!(ev.involved_object.uid, p.metadata.uid);
    assert!(ev.first_timestamp.is_some() && ev.last_timestamp.is_some());
    env.stop().await;
}

#[tokio::test]
async fn respects_allocatable_cpu_memory_and_pods_across_many_pods() {
    let env = Env::start().await;
    // Each pod asks 300m and 100Mi: "cpu" fits 3 by cpu, "mem" 2 by memory, "few" 2 by pods.
    env.node("cpu", "1", "10Gi", "110", json!({})).await;
    env.node("mem", "10", "256Mi", "110", json!({})).await;
    env.node("few", "10", "10Gi", "2", json!({})).await;
    let names: Vec<String> = (0..9).map(|i| format!("p{i}")).collect();
    // Created concurrently, so the scheduler sees them in quick succession and must count
    // the pods it has just bound before the watch confirms them.
    futures::future::join_all(names.iter().map(|n| env.pod(n, "300m", "100Mi", json!({})))).await;

    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    let mut pending = Vec::new();
    for n in &names {
        let cond = |p: Option<&Pod>| {
            p.is_some_and(|p| !node_of(p).is_empty() || scheduled_condition(p).0 == "False")
        };
        let p = tokio::time::timeout(WAIT, await_condition(env.pods(), n, cond))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match node_of(&p).as_str() {
            "" => pending.push(scheduled_condition(&p)),
            node => *per_node.entry(node.to_owned()).or_default() += 1,
        }
    }
    assert_eq!(per_node, BTreeMap::from([("cpu".into(), 3), ("few".into(), 2), ("mem".into(), 2)]));
    assert_eq!(pending.len(), 2);
    for (status, reason, message) in pending {
        assert_eq!((status.as_str(), reason.as_str()), ("False", "Unschedulable"));
        assert_eq!(
            message,
            "0/3 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 1 Too many pods."
        );
    }
    env.stop().await;
}

#[tokio::test]
async fn node_selector_and_required_node_affinity() {
    let env = Env::start().await;
    env.node("a", "4", "4Gi", "10", json!({"metadata": {"labels": {"zone": "a", "gen": "3"}}}))
        .await;
    env.node(
        "b",
        "4",
        "4Gi",
        "10",
        json!({"metadata": {"labels": {"zone": "b", "gen": "5", "ssd": ""}}}),
    )
    .await;
    let affinity = |terms: Value| json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}});
    let expr = |key: &str, op: &str, values: Value| {
        affinity(json!([{"matchExpressions": [{"key": key, "operator": op, "values": values}]}]))
    };
    let cases = [
        ("sel-a", json!({"nodeSelector": {"zone": "a"}}), "a"),
        ("sel-b", json!({"nodeSelector": {"zone": "b", "gen": "5"}}), "b"),
        ("in", expr("zone", "In", json!(["b", "c"])), "b"),
        ("notin", expr("zone", "NotIn", json!(["b"])), "a"),
        ("exists", expr("ssd", "Exists", json!([])), "b"),
        ("doesnotexist", expr("ssd", "DoesNotExist", json!([])), "a"),
        ("gt", expr("gen", "Gt", json!(["4"])), "b"),
        ("lt", expr("gen", "Lt", json!(["4"])), "a"),
        (
            "fields",
            affinity(
                json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}]}]),
            ),
            "a",
        ),
        (
            "or-terms",
            affinity(json!([
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["x"]}]},
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}, {"key": "gen", "operator": "Gt", "values": ["1"]}]},
            ])),
            "b",
        ),
    ];
    for (name, spec, _) in &cases {
        env.pod(name, "100m", "10Mi", spec.clone()).await;
    }
    for (name, _, node) in &cases {
        assert_eq!(node_of(&env.bound(name).await), *node, "pod {name}");
    }

    env.pod("nowhere", "100m", "10Mi", json!({"nodeSelector": {"zone": "c"}})).await;
    let (reason, message) = env.unschedulable("nowhere").await;
    assert_eq!(reason, "Unschedulable");
    assert_eq!(
        message,
        "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    );
    // Labelling a node retries the pod at once.
    let nodes: Api<Node> = Api::all(env.client.clone());
    nodes
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"zone": "c"}}})),
        )
        .await
        .unwrap();
    assert_eq!(node_of(&env.bound("nowhere").await), "a");
    env.stop().await;
}

#[tokio::test]
async fn taints_and_tolerations() {
    let env = Env::start().await;
    let taints = json!({"spec": {"taints": [
        {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
        {"key": "evict", "effect": "NoExecute"},
        {"key": "soft", "effect": "PreferNoSchedule"},
    ]}});
    env.node("tainted", "4", "4Gi", "10", taints).await;

    env.pod("plain", "100m", "10Mi", json!({})).await;
    let (_, message) = env.unschedulable("plain").await;
    assert_eq!(
        message,
        "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}."
    );

    env.pod(
        "only-one",
        "100m",
        "10Mi",
        json!({"tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
        ]}),
    )
    .await;
    let (_, message) = env.unschedulable("only-one").await;
    assert_eq!(message, "0/1 nodes are available: 1 node(s) had untolerated taint {evict: }.");

    env.pod(
        "wrong-value",
        "100m",
        "10Mi",
        json!({"tolerations": [
            {"key": "dedicated", "value": "cpu"},
            {"key": "evict", "operator": "Exists"},
        ]}),
    )
    .await;
    let (_, message) = env.unschedulable("wrong-value").await;
    assert_eq!(
        message,
        "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}."
    );

    env.pod(
        "both",
        "100m",
        "10Mi",
        json!({"tolerations": [
            {"key": "dedicated", "value": "gpu"},
            {"key": "evict", "operator": "Exists", "effect": "NoExecute"},
        ]}),
    )
    .await;
    env.pod("everything", "100m", "10Mi", json!({"tolerations": [{"operator": "Exists"}]})).await;
    assert_eq!(node_of(&env.bound("both").await), "tainted");
    assert_eq!(node_of(&env.bound("everything").await), "tainted");

    // A node that is not Ready carries the not-ready taint, as the node lifecycle controller
    // would put on it.
    env.node(
        "notready",
        "4",
        "4Gi",
        "10",
        json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "KubeletNotReady"},
        ]}}),
    )
    .await;
    env.pod("plain-2", "100m", "10Mi", json!({})).await;
    let (_, message) = env.unschedulable("plain-2").await;
    assert_eq!(
        message,
        "0/2 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }."
    );
    env.stop().await;
}

#[tokio::test]
async fn unschedulable_node_is_skipped_until_uncordoned() {
    let env = Env::start().await;
    env.node("cordoned", "4", "4Gi", "10", json!({"spec": {"unschedulable": true}})).await;
    env.pod("p", "100m", "10Mi", json!({})).await;
    let (_, message) = env.unschedulable("p").await;
    assert_eq!(message, "0/1 nodes are available: 1 node(s) were unschedulable.");

    env.pod("tolerant", "100m", "10Mi", json!({"tolerations": [
        {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
    ]}))
    .await;
    assert_eq!(node_of(&env.bound("tolerant").await), "cordoned");

    let nodes: Api<Node> = Api::all(env.client.clone());
    nodes
        .patch(
            "cordoned",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": false}})),
        )
        .await
        .unwrap();
    assert_eq!(node_of(&env.bound("p").await), "cordoned");
    env.stop().await;
}

#[tokio::test]
async fn failure_sets_the_condition_and_an_event_then_a_new_node_binds_at_once() {
    let env = Env::start().await;
    env.node("small", "500m", "1Gi", "10", json!({})).await;
    env.pod("big", "2", "100Mi", json!({})).await;
    let (reason, message) = env.unschedulable("big").await;
    assert_eq!(reason, "Unschedulable");
    assert_eq!(message, "0/1 nodes are available: 1 Insufficient cpu.");
    let ev = env.event("big", "FailedScheduling", 1).await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert_eq!(ev.message.as_deref(), Some(message.as_str()));
    assert_eq!(ev.source.as_ref().and_then(|s| s.component.as_deref()), Some("default-scheduler"));

    // The retry after the first back-off (1 s) fails again and bumps the same Event; the next
    // one is 2 s later, so a bind well before that proves the node's arrival retried it.
    env.event("big", "FailedScheduling", 2).await;
    let t = std::time::Instant::now();
    env.node("large", "4", "4Gi", "10", json!({})).await;
    assert_eq!(node_of(&env.bound("big").await), "large");
    assert!(t.elapsed() < Duration::from_millis(1500), "took {:?}", t.elapsed());
    env.stop().await;
}

#[tokio::test]
async fn deleting_a_pod_frees_its_capacity_at_once() {
    let env = Env::start().await;
    env.node("one", "4", "4Gi", "1", json!({})).await;
    env.pod("first", "100m", "10Mi", json!({})).await;
    env.bound("first").await;
    env.pod("second", "100m", "10Mi", json!({})).await;
    let (_, message) = env.unschedulable("second").await;
    assert_eq!(message, "0/1 nodes are available: 1 Too many pods.");
    env.event("second", "FailedScheduling", 2).await;

    let t = std::time::Instant::now();
    env.pods()
        .delete("first", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(node_of(&env.bound("second").await), "one");
    assert!(t.elapsed() < Duration::from_millis(1500), "took {:?}", t.elapsed());
    env.stop().await;
}

#[tokio::test]
async fn no_nodes_then_a_node_appears() {
    let env = Env::start().await;
    env.pod("early", "100m", "10Mi", json!({})).await;
    let (_, message) = env.unschedulable("early").await;
    assert_eq!(message, "no nodes available to schedule pods");
    env.node("n", "1", "1Gi", "10", json!({})).await;
    assert_eq!(node_of(&env.bound("early").await), "n");
    env.stop().await;
}

#[tokio::test]
async fn other_scheduler_names_are_ignored() {
    let env = Env::start().await;
    env.node("n", "4", "4Gi", "10", json!({})).await;
    env.pod("mine-not", "100m", "10Mi", json!({"schedulerName": "someone-else"})).await;
    env.pod("mine", "100m", "10Mi", json!({})).await;
    env.bound("mine").await;
    // Both pods were in the same watch stream; give a stray bind time to land.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let other = env.pods().get("mine-not").await.unwrap();
    assert_eq!(node_of(&other), "");
    assert_eq!(scheduled_condition(&other).0, "");
    env.stop().await;
}

#[tokio::test]
async fn pods_bound_before_the_scheduler_starts_count() {
    let server = TestServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    let env = Env { server, client, stop: None, task: None };
    env.node("n", "1", "1Gi", "10", json!({})).await;
    // Bound directly by nodeName, as a user (or another scheduler) may do.
    env.pod("preset", "800m", "10Mi", json!({"nodeName": "n"})).await;
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(run_scheduler(env.client.clone(), SchedulerConfig::default(), async {
        let _ = rx.await;
    }));
    let env = Env { stop: Some(stop), task: Some(task), ..env };
    env.pod("late", "300m", "10Mi", requests("300m")).await;
    let (_, message) = env.unschedulable("late").await;
    assert_eq!(message, "0/1 nodes are available: 1 Insufficient cpu.");
    env.stop().await;
}
