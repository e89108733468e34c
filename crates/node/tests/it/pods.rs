//! A pod's life on the node: start, serve, log, delete.

use serde_json::json;

use crate::harness::{Cluster, container_status, pod_ip};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_pod_runs_answers_http_logs_and_deletes_cleanly() {
    let c = Cluster::start().await;
    let image = kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
    c.create(
        "web",
        json!({"containers": [{
            "name": "web", "image": image,
            "command": ["sh", "-c", "echo serving; exec httpd -f -v -p 8080 -h /www"],
            "ports": [{"containerPort": 8080}],
        }]}),
    )
    .await;
    let pod = c.wait_ready("web").await;
    let ip = pod_ip(&pod);
    assert!(ip.starts_with("10.201."), "pod IP {ip} is not in the node's pod CIDR");
    let st = pod.status.clone().unwrap();
    assert_eq!(st.phase.as_deref(), Some("Running"));
    assert_eq!(st.host_ip.as_deref(), Some("127.0.0.1"));
    let cs = container_status(&pod, "web");
    assert!(cs.ready);
    assert_eq!(cs.restart_count, 0);
    assert!(cs.image_id.contains("@sha256:"), "imageID {}", cs.image_id);
    // `<runtime>://<id>`, the scheme of the Node's containerRuntimeVersion (as kubelet's).
    let scheme = c.cfg.runtime.scheme();
    assert!(cs.container_id.unwrap_or_default().starts_with(&format!("{scheme}://")));
    let node: k8s_openapi::api::core::v1::Node =
        kube::Api::all(c.client.clone()).get(crate::harness::NODE).await.unwrap();
    let version = node.status.unwrap().node_info.unwrap().container_runtime_version;
    assert!(version.starts_with(&format!("{scheme}://")), "{version}");
    assert!(cs.state.unwrap().running.is_some());

    let page = Cluster::http_get(&ip, 8080, "/index.html").await.unwrap();
    assert!(page.starts_with("HTTP/1.") && page.contains("hello from kinetic"), "{page}");

    // The timeline annotation and kubelet's events.
    let pod = c
        .wait("web", 10, "timeline annotation", |p| {
            p.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(kinetic_api::timeline::ANNOTATION))
        })
        .await;
    let tl: kinetic_api::timeline::Timeline =
        serde_json::from_str(&pod.metadata.annotations.unwrap()[kinetic_api::timeline::ANNOTATION])
            .unwrap();
    assert!(tl.observed.is_some() && tl.sandbox_ready.is_some() && tl.ready.is_some(), "{tl:?}");
    let web = &tl.containers[0];
    assert!(!web.cache_hit && web.pull_bytes > 0 && web.started.is_some(), "{web:?}");
    // Issue 14: the CPU each step of the start cost, by process.
    let sandbox = tl.sandbox_cpu.unwrap();
    assert!(sandbox.agent_us > 0 && sandbox.network_us > 0, "{sandbox:?}");
    let cpu = web.cpu.unwrap();
    assert!(cpu.agent_us > 0 && cpu.shim_us > 0 && cpu.init_us > 0, "{cpu:?}");
    // runc's processes are children of the shim; the native runtime runs inside the shim.
    let native = c.cfg.runtime == kinetic_node::runtime::Kind::Native;
    assert_eq!(cpu.runc_us > 0, !native, "{cpu:?}");
    // Sane bounds: more than the bare exec of a process, less than a few seconds.
    assert!((1_000..5_000_000).contains(&cpu.children_us()), "{cpu:?}");
    for reason in ["Pulling", "Pulled", "Created", "Started"] {
        c.wait_event("web", &format!("{reason}: "), 10).await;
    }
    // A pull that downloaded something says how much and how fast.
    let pulled = c.wait_event("web", "Pulled: ", 10).await;
    assert!(pulled.contains("bytes.") && pulled.contains("MB/s"), "{pulled}");

    // Logs from the node's endpoint (what the API server proxies).
    let logs = node_logs(&c, "web", "web", "").await;
    assert!(logs.contains("serving"), "{logs}");

    c.pods().delete("web", &Default::default()).await.unwrap();
    c.wait_gone("web", 20).await;
    let left = c.settled_leftovers(10).await;
    assert!(left.is_empty(), "left behind: {left:#?}");
}

pub async fn node_logs(c: &Cluster, pod: &str, container: &str, query: &str) -> String {
    let token = c.cfg.auth_token.clone().unwrap();
    let path = format!("/containerLogs/default/{pod}/{container}?{query}");
    crate::kubelet_api::kubelet_get(c, &path, Some(&token), None).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_streams_until_the_container_exits() {
    let c = Cluster::start().await;
    let image = kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
    c.create(
        "talker",
        json!({"restartPolicy": "Never", "containers": [{"name": "app", "image": image,
            "command": ["sh", "-c", "for i in 1 2 3 4 5; do echo line $i; sleep 0.3; done"]}]}),
    )
    .await;
    c.wait("talker", 20, "Running", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
    let started = std::time::Instant::now();
    let out = node_logs(&c, "talker", "app", "follow=true").await;
    // The stream ends by itself when the container does, with every line in it.
    assert!(out.contains("line 1") && out.contains("line 5"), "{out}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let tail = node_logs(&c, "talker", "app", "tailLines=2").await;
    let body = tail.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert_eq!(body, "line 4\nline 5\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_secrets_authenticate_to_a_private_registry() {
    let c = Cluster::start().await;
    let private = kinetic_testkit::registry::Registry::start_with_htpasswd("alice", "wonderland")
        .await
        .unwrap();
    let reference = format!("{}/private:v1", private.addr());
    let layer = kinetic_testkit::images::busybox_layer().unwrap();
    let spec = kinetic_image::push::ImageSpec {
        config: kinetic_testkit::images::busybox_config(),
        layers: vec![layer],
        ..Default::default()
    };
    let creds = kinetic_image::Credential {
        registry: private.addr().to_owned(),
        username: "alice".into(),
        password: "wonderland".into(),
    };
    let opts = kinetic_image::PullOptions { credentials: vec![creds], ..Default::default() };
    kinetic_image::push::Pusher::new(&reference, &opts).unwrap().push_image(&spec).await.unwrap();

    // Without the secret the pull is refused; with it the pod runs.
    c.create(
        "nosecret",
        json!({"containers": [{"name": "app", "image": reference, "command": ["sleep", "100"]}]}),
    )
    .await;
    let ev = c.wait_event("nosecret", "Failed: Failed to pull image", 20).await;
    assert!(ev.to_lowercase().contains("unauthorized") || ev.contains("401"), "{ev}");
    let auth =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b"alice:wonderland");
    let config = json!({"auths": {private.addr(): {"auth": auth}}}).to_string();
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(c.client.clone(), "default");
    let secret = serde_json::from_value(json!({
        "metadata": {"name": "regcred"}, "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": config},
    }))
    .unwrap();
    secrets.create(&Default::default(), &secret).await.unwrap();
    c.create(
        "withsecret",
        json!({"imagePullSecrets": [{"name": "regcred"}], "containers": [{"name": "app", "image": reference, "command": ["sleep", "100"]}]}),
    )
    .await;
    c.wait_ready("withsecret").await;
}
