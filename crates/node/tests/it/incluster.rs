//! Pods reach the API with their own identity (issue 16): the agent's API relay on the bridge
//! gateway, the `KUBERNETES_*` variables and the service-account token volume give the `kube`
//! client's in-cluster config, TLS verified against `ca.crt`; a real kube-runtime controller
//! runs as a pod with only its Role's rights.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kinetic_image::push::{Compression, Format, ImageSpec, Layer, TarBuilder};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::Cluster;
use crate::harness::NODE;

/// Pushes an image holding `bin` as `/controller` (its entrypoint) with the shared libraries
/// `ldd` names for it, over the busybox layer.
async fn binary_image(c: &Cluster, bin: &Path, repo: &str) -> String {
    let out = std::process::Command::new("ldd").arg(bin).output().expect("running ldd");
    assert!(
        out.status.success(),
        "ldd {}: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" and "/lib64/ld-linux-x86-64.so.2 (0x…)".
    let libs: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.rsplit("=>").next()?.split_whitespace().next().map(PathBuf::from))
        .filter(|p| p.is_absolute())
        .collect();
    assert!(!libs.is_empty(), "ldd names no libraries for {}", bin.display());
    let dirs: BTreeSet<&Path> = libs
        .iter()
        .flat_map(|l| l.ancestors().skip(1))
        .filter_map(|d| d.strip_prefix("/").ok())
        .filter(|d| !d.as_os_str().is_empty())
        .collect();
    let mut t = TarBuilder::new();
    for d in dirs {
        t.dir(d.to_str().unwrap(), 0o755).unwrap();
    }
    for l in &libs {
        t.host_file(l.strip_prefix("/").unwrap().to_str().unwrap(), l).unwrap();
    }
    t.host_file("controller", bin).unwrap();
    // Uncompressed: gzip of a debug binary would cost the test seconds.
    let layer = Layer::from_tar(&t.finish().unwrap(), Compression::None, Format::Oci).unwrap();
    let config = kinetic_image::ImageConfig {
        entrypoint: vec!["/controller".to_owned()],
        cmd: Vec::new(),
        ..kinetic_testkit::images::busybox_config()
    };
    let reference = format!("{}/{repo}:v1", c.registry.addr());
    let layers = vec![kinetic_testkit::images::busybox_layer().unwrap(), layer];
    kinetic_testkit::images::push(&reference, ImageSpec { config, layers, ..ImageSpec::default() })
        .await
        .unwrap();
    reference
}

/// The container's log through the kubelet API.
async fn logs(c: &Cluster, ns: &str, pod: &str, container: &str) -> String {
    let token = c.cfg.auth_token.clone().unwrap();
    let path = format!("/containerLogs/{ns}/{pod}/{container}");
    crate::kubelet_api::kubelet_get(c, &path, Some(&token), None).await.unwrap_or_default()
}

/// Polls the container log until it contains every one of `needles`.
async fn wait_logs(c: &Cluster, ns: &str, pod: &str, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = logs(c, ns, pod, "controller").await;
        if needles.iter().all(|n| out.contains(n)) {
            return out;
        }
        assert!(Instant::now() < deadline, "{needles:?} not in the log of {ns}/{pod}: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls ConfigMap `ns/name` until `pred` holds.
async fn wait_cm(c: &Cluster, ns: &str, name: &str, what: &str, pred: impl Fn(&ConfigMap) -> bool) {
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let cm = api.get(name).await.unwrap();
        if pred(&cm) {
            return;
        }
        assert!(Instant::now() < deadline, "configmap {ns}/{name}: {what} not reached: {cm:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client of the test's API server authenticating with `token` alone.
fn token_client(c: &Cluster, token: &str) -> kube::Client {
    let mut cfg = kube::Config::new(c.server.server().url().parse().unwrap());
    cfg.root_cert = Some(
        rustls_pemfile::certs(&mut c.server.server().ca_pem().as_bytes())
            .map(|c| c.unwrap().to_vec())
            .collect(),
    );
    let bearer = http::HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    cfg.headers.push((http::header::AUTHORIZATION, bearer));
    cfg.default_retry = false;
    kube::Client::try_from(cfg).unwrap()
}

fn code<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(e) => panic!("not an API answer: {e}"),
    }
}

const RBAC: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: echo}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: echo-controller, namespace: echo}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: echo-controller, namespace: echo}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: echo-controller, namespace: echo}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: echo-controller}
subjects:
- {kind: ServiceAccount, name: echo-controller, namespace: echo}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: one, namespace: echo, labels: {kinetic.dev/echo: "true"}}
data: {in: hello}
"#;

/// Issue 16's test: a kube-runtime controller built by this crate runs as a pod with a service
/// account and a Role on ConfigMaps. It reaches the API through the node's relay with
/// `Config::incluster()` (TLS verified against the volume's `ca.crt` by the gateway address),
/// reconciles its namespace's ConfigMaps, and is refused (403) Secrets and other namespaces;
/// once the pod is deleted its token no longer authenticates (401), and once the agent stops
/// the relay's listener is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_runs_as_a_pod_with_only_its_roles_rights() {
    let mut c = Cluster::start().await;
    let relay = c.agent.as_ref().unwrap().api_relay().expect("the agent runs the API relay");
    let gateway = kinetic_node::pod_gateway(&c.cfg.pod_cidr).unwrap();
    assert_eq!(relay.ip(), std::net::IpAddr::from(gateway));
    let bin = Path::new(env!("CARGO_BIN_EXE_kinetic-example-controller"));
    let image = binary_image(&c, bin, "echo-controller").await;
    c.server.kubectl_stdin_ok(&["apply", "-f", "-"], RBAC).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "echo");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "echo-controller", "namespace": "echo"},
        "spec": {"nodeName": NODE, "serviceAccountName": "echo-controller",
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "controller", "image": image}]}}))
    .unwrap();
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();

    // It reconciles what its Role lets it read and patch, and follows changes (watch).
    wait_cm(&c, "echo", "one", "reconciled", |cm| {
        let d = cm.data.clone().unwrap_or_default();
        d.get("echo").map(String::as_str) == Some("HELLO")
            && d.get("reconciled-by").map(String::as_str) == Some("echo-controller")
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "echo");
    let change = json!({"data": {"in": "again"}});
    cms.patch("one", &PatchParams::default(), &Patch::Merge(&change)).await.unwrap();
    wait_cm(&c, "echo", "one", "reconciled again", |cm| {
        cm.data.as_ref().and_then(|d| d.get("echo")).map(String::as_str) == Some("AGAIN")
    })
    .await;

    // What the Role does not give is refused with upstream's 403 message.
    let user = "system:serviceaccount:echo:echo-controller";
    let out = wait_logs(&c, "echo", "echo-controller", &[
        &format!("api: {}:{}", relay.ip(), relay.port()),
        &format!("secrets: 403 secrets is forbidden: User \"{user}\" cannot list resource \"secrets\" in API group \"\" in the namespace \"echo\""),
        &format!("default configmaps: 403 configmaps is forbidden: User \"{user}\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"default\""),
    ])
    .await;
    assert!(!out.contains("allowed"), "{out}");

    // The pod's own token, from its volume on the node: the same rights from outside.
    let volume = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .find(|n| n.starts_with("kube-api-access-"))
        .expect("the admission plugin adds the kube-api-access volume");
    let uid = pod.metadata.uid.clone().unwrap();
    let token_path =
        c.data_dir().join("pods").join(&uid).join("volumes").join(&volume).join("token");
    let token = std::fs::read_to_string(token_path).unwrap();
    let as_pod = token_client(&c, &token);
    let lp = ListParams::default();
    assert_eq!(code(Api::<ConfigMap>::namespaced(as_pod.clone(), "echo").list(&lp).await), 200);
    assert_eq!(code(Api::<Secret>::namespaced(as_pod.clone(), "echo").list(&lp).await), 403);

    // Deleting the pod invalidates its token.
    pods.delete("echo-controller", &Default::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while pods.get_opt("echo-controller").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the pod is not gone");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(code(Api::<ConfigMap>::namespaced(as_pod, "echo").list(&lp).await), 401);
    let reviews: Api<TokenReview> = Api::all(c.client.clone());
    let review = TokenReview {
        spec: TokenReviewSpec { token: Some(token), audiences: None },
        ..Default::default()
    };
    let st = reviews.create(&PostParams::default(), &review).await.unwrap().status.unwrap();
    assert_ne!(st.authenticated, Some(true), "{st:?}");

    // The relay belongs to the agent: stopping it closes the listener.
    tokio::net::TcpStream::connect(relay).await.expect("the relay listens while the agent runs");
    c.stop_agent().await;
    let err = tokio::net::TcpStream::connect(relay).await.expect_err("the relay is gone");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    c.start_agent().await;
    let left = c.settled_leftovers(10).await;
    assert!(left.is_empty(), "{left:?}");
}

/// Kubelet's service variables: the `kubernetes` ones always (naming the relay here), the
/// namespace's Services' only with `enableServiceLinks` (the default), and a container's own
/// variable wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_service_variables_unless_service_links_are_off() {
    let c = Cluster::start().await;
    let relay = c.agent.as_ref().unwrap().api_relay().unwrap();
    let image = kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
    c.server
        .kubectl_stdin_ok(
            &["apply", "-f", "-"],
            "apiVersion: v1\nkind: Service\nmetadata: {name: my-svc, namespace: default}\n\
             spec: {ports: [{name: web, port: 8080}], selector: {app: none}}\n",
        )
        .await
        .unwrap();
    let script = "env | sort; sleep 30";
    for (name, links) in [("links", true), ("nolinks", false)] {
        c.create(
            name,
            json!({"enableServiceLinks": links, "containers": [{"name": "controller",
                "image": image, "command": ["sh", "-c", script],
                "env": [{"name": "KUBERNETES_SERVICE_PORT_HTTPS", "value": "mine"}]}]}),
        )
        .await;
    }
    let host = format!("KUBERNETES_SERVICE_HOST={}\n", relay.ip());
    let port = format!("KUBERNETES_PORT=tcp://{relay}\n");
    let out =
        wait_logs(&c, "default", "links", &[&host, &port, "MY_SVC_SERVICE_PORT_WEB=8080\n"]).await;
    assert!(out.contains("KUBERNETES_SERVICE_PORT_HTTPS=mine\n"), "{out}");
    let out = wait_logs(&c, "default", "nolinks", &[&host, "KUBERNETES_SERVICE_PORT="]).await;
    assert!(!out.contains("MY_SVC"), "{out}");
    for name in ["links", "nolinks"] {
        c.pods().delete(name, &Default::default()).await.unwrap();
    }
    for name in ["links", "nolinks"] {
        c.wait_gone(name, 30).await;
    }
    let left = c.settled_leftovers(10).await;
    assert!(left.is_empty(), "{left:?}");
}
