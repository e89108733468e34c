//! Service environment variables, as kubelet sets them (`getServiceEnvVarMap` in
//! `pkg/kubelet/kubelet_pods.go`, `FromServices` in `pkg/kubelet/envvars`): for the `kubernetes`
//! Service of `default` always, and for every Service of the pod's namespace with a cluster IP
//! when `enableServiceLinks` is true (the default): `NAME_SERVICE_HOST`, `NAME_SERVICE_PORT`,
//! `NAME_SERVICE_PORT_<PORTNAME>` and Docker's link variables (`NAME_PORT`,
//! `NAME_PORT_<port>_<PROTO>{,_PROTO,_PORT,_ADDR}`). A container's own `env`/`envFrom` win over
//! them, and `$(VAR)` references in `env` values and `command`/`args` may name them.
//!
//! Where Kinetic differs: with the API relay running ([`crate::relay`]), the `kubernetes`
//! variables name the relay (the node's bridge gateway and the relay's port) instead of the
//! Service's cluster IP, because no kube-proxy routes cluster IPs here; that is the address
//! in-cluster clients can reach and the API server's certificate names. Other Services' variables
//! carry their cluster IPs as upstream does (reachable only where something routes them).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use kube::Api;
use kube::api::ListParams;

/// The namespace and name of the API's own Service (upstream's "master services").
const MASTER_NAMESPACE: &str = "default";
const MASTER_NAME: &str = "kubernetes";

/// The variables of `services` for a pod in `namespace`.
///
/// `local` are the Services of the pod's namespace (pass none when `enableServiceLinks` is
/// false); `master` is `default/kubernetes`; `relay`, when set, replaces the master Service's
/// address and port.
pub fn service_env(
    namespace: &str,
    local: &[Service],
    master: Option<&Service>,
    relay: Option<SocketAddr>,
) -> BTreeMap<String, String> {
    let mut chosen: BTreeMap<String, (String, Vec<ServicePort>)> = BTreeMap::new();
    if let Some(addr) = relay {
        let port = ServicePort {
            name: Some("https".into()),
            port: i32::from(addr.port()),
            protocol: Some("TCP".into()),
            ..ServicePort::default()
        };
        chosen.insert(MASTER_NAME.into(), (addr.ip().to_string(), vec![port]));
    } else if let Some((ip, ports)) = master.and_then(address) {
        chosen.insert(MASTER_NAME.into(), (ip, ports));
    }
    for s in local {
        let name = s.metadata.name.clone().unwrap_or_default();
        // The master Service itself (a pod in `default`) keeps the master's values; another
        // namespace's `kubernetes` Service replaces them, as upstream's map does.
        if namespace == MASTER_NAMESPACE && name == MASTER_NAME {
            continue;
        }
        if let Some(a) = address(s) {
            chosen.insert(name, a);
        }
    }
    let mut out = BTreeMap::new();
    for (name, (ip, ports)) in chosen {
        let Some(first) = ports.first() else { continue };
        let prefix = var_name(&name);
        out.insert(format!("{prefix}_SERVICE_HOST"), ip.clone());
        out.insert(format!("{prefix}_SERVICE_PORT"), first.port.to_string());
        for p in &ports {
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.insert(format!("{prefix}_SERVICE_PORT_{}", var_name(pn)), p.port.to_string());
            }
        }
        for (i, p) in ports.iter().enumerate() {
            let proto = p.protocol.as_deref().filter(|p| !p.is_empty()).unwrap_or("TCP");
            let lower = proto.to_ascii_lowercase();
            let host_port = SocketAddr::new(
                ip.parse().unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
                u16::try_from(p.port).unwrap_or(0),
            );
            let url = format!("{lower}://{host_port}");
            if i == 0 {
                out.insert(format!("{prefix}_PORT"), url.clone());
            }
            let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_ascii_uppercase());
            out.insert(format!("{pp}_PROTO"), lower);
            out.insert(format!("{pp}_PORT"), p.port.to_string());
            out.insert(format!("{pp}_ADDR"), ip.clone());
            out.insert(pp, url);
        }
    }
    out
}

/// The cluster IP and ports of a Service that has a cluster IP (not headless).
fn address(s: &Service) -> Option<(String, Vec<ServicePort>)> {
    let spec = s.spec.as_ref()?;
    let ip = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty() && *ip != "None")?;
    ip.parse::<std::net::IpAddr>().ok()?;
    let ports = spec.ports.clone().unwrap_or_default();
    (!ports.is_empty()).then(|| (ip.to_owned(), ports))
}

/// Upstream's `makeEnvVariableName`: upper case, `-` becomes `_`.
fn var_name(s: &str) -> String {
    s.to_ascii_uppercase().replace('-', "_")
}

/// Reads the Services `pod`'s variables come from (from `cache` when given and filled) and
/// returns the variables. A node that may
/// not list Services (403) gets only the relay's variables, with a warning: a least-privilege
/// node still runs its pods.
///
/// # Errors
/// The API fails otherwise (the container start is retried, as for a missing ConfigMap).
pub async fn fetch(
    client: &kube::Client,
    cache: Option<&ServiceCache>,
    pod: &Pod,
    relay: Option<SocketAddr>,
) -> Result<BTreeMap<String, String>, kube::Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
    if let Some(cached) = cache.and_then(|c| c.env(ns, links, relay)) {
        return Ok(cached);
    }
    let local = if links {
        let api: Api<Service> = Api::namespaced(client.clone(), ns);
        forbidden(api.list(&ListParams::default()).await.map(|l| l.items), ns, "services")?
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let master = if relay.is_none() {
        let api: Api<Service> = Api::namespaced(client.clone(), MASTER_NAMESPACE);
        forbidden(api.get_opt(MASTER_NAME).await, ns, "the kubernetes service")?.flatten()
    } else {
        None
    };
    Ok(service_env(ns, &local, master.as_ref(), relay))
}

/// The node's copy of every Service, kept by a watch, as kubelet's service informer
/// (`serviceLister` in `pkg/kubelet/kubelet.go`): a container start reads its service
/// variables from memory instead of listing the namespace's Services on the API (issue 14: a
/// list per start, in-place restarts included, was most of a restart's configuration step).
/// Until the first list arrived, or when the node may not watch Services, [`fetch`] asks the
/// API as before. The worker reads it for restarts only: a pod's first start still lists the
/// Services, so a Service created just before its pod is never missed for want of a watch
/// event that has not arrived yet (upstream has that race; the node's tests rely on its absence).
#[derive(Clone)]
pub struct ServiceCache {
    store: kube::runtime::reflector::Store<Service>,
    synced: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl ServiceCache {
    /// The cache and the task that keeps it (to be aborted with the agent).
    pub fn start(client: kube::Client) -> (Self, tokio::task::JoinHandle<()>) {
        use futures::StreamExt as _;
        use kube::runtime::WatchStreamExt as _;
        use kube::runtime::watcher::{self, Event};
        let (store, writer) = kube::runtime::reflector::store();
        let synced = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = synced.clone();
        let api: Api<Service> = Api::all(client);
        let task = tokio::spawn(async move {
            let stream =
                kube::runtime::reflector(writer, watcher::watcher(api, watcher::Config::default()))
                    .default_backoff();
            futures::pin_mut!(stream);
            let mut warned = false;
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(Event::InitDone) => flag.store(true, std::sync::atomic::Ordering::Release),
                    Ok(_) => {}
                    Err(e) if !warned => {
                        warned = true;
                        tracing::warn!(error = %e, "watching Services (service variables come from the API meanwhile)");
                    }
                    Err(e) => tracing::debug!(error = %e, "watching Services"),
                }
            }
        });
        (Self { store, synced }, task)
    }

    /// The variables from the cache, when it has been filled.
    fn env(
        &self,
        ns: &str,
        links: bool,
        relay: Option<SocketAddr>,
    ) -> Option<BTreeMap<String, String>> {
        if !self.synced.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let all = self.store.state();
        let in_ns =
            |s: &&std::sync::Arc<Service>, n: &str| s.metadata.namespace.as_deref() == Some(n);
        let local: Vec<Service> = if links {
            all.iter().filter(|s| in_ns(s, ns)).map(|s| (**s).clone()).collect()
        } else {
            Vec::new()
        };
        let master = if relay.is_none() {
            all.iter()
                .filter(|s| in_ns(s, MASTER_NAMESPACE))
                .find(|s| s.metadata.name.as_deref() == Some(MASTER_NAME))
                .map(|s| (**s).clone())
        } else {
            None
        };
        Some(service_env(ns, &local, master.as_ref(), relay))
    }
}

/// `Ok(None)` (with a warning) for a 403, the answer otherwise.
fn forbidden<T>(r: Result<T, kube::Error>, ns: &str, what: &str) -> Result<Option<T>, kube::Error> {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 => {
            tracing::warn!(namespace = %ns, error = %s.message, "cannot read {what}: pods get no variables for them");
            Ok(None)
        }
        r => r.map(Some),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_cache_answers_only_once_filled_and_with_the_namespace_services() {
        use kube::runtime::watcher::Event;
        let (store, mut writer) = kube::runtime::reflector::store();
        let cache = ServiceCache { store, synced: std::sync::Arc::default() };
        let relay: Option<SocketAddr> = Some("10.9.0.1:443".parse().unwrap());
        assert_eq!(cache.env("default", true, relay), None, "not filled yet: ask the API");
        for s in [
            svc("default", "web", "10.96.0.10", serde_json::json!([{"port": 80}])),
            svc("other", "db", "10.96.0.11", serde_json::json!([{"port": 5432}])),
        ] {
            writer.apply_watcher_event(&Event::Apply(s));
        }
        cache.synced.store(true, std::sync::atomic::Ordering::Release);
        let env = cache.env("default", true, relay).unwrap();
        let local = [svc("default", "web", "10.96.0.10", serde_json::json!([{"port": 80}]))];
        assert_eq!(env, service_env("default", &local, None, relay));
        assert!(!env.contains_key("DB_SERVICE_HOST"), "{env:?}");
        let env = cache.env("default", false, relay).unwrap();
        assert_eq!(env, service_env("default", &[], None, relay), "enableServiceLinks false");
    }

    fn svc(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": ports}}))
        .unwrap()
    }

    fn lines(m: &BTreeMap<String, String>) -> String {
        m.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    }

    /// The variables of upstream's `TestMakeEnvironmentVariables` for a Service with a named
    /// and an unnamed port, and the master Service of `default`.
    #[test]
    fn services_give_kubelets_variables() {
        let master = svc(
            "default",
            "kubernetes",
            "10.96.0.1",
            serde_json::json!([
            {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]),
        );
        let local = [
            svc(
                "ns",
                "my-svc",
                "1.2.3.4",
                serde_json::json!([
                {"port": 8080, "protocol": "TCP"},
                {"name": "metrics", "port": 9090, "protocol": "UDP"}]),
            ),
            svc("ns", "headless", "None", serde_json::json!([{"port": 80}])),
        ];
        let env = service_env("ns", &local, Some(&master), None);
        assert_eq!(
            lines(&env),
            "KUBERNETES_PORT=tcp://10.96.0.1:443
KUBERNETES_PORT_443_TCP=tcp://10.96.0.1:443
KUBERNETES_PORT_443_TCP_ADDR=10.96.0.1
KUBERNETES_PORT_443_TCP_PORT=443
KUBERNETES_PORT_443_TCP_PROTO=tcp
KUBERNETES_SERVICE_HOST=10.96.0.1
KUBERNETES_SERVICE_PORT=443
KUBERNETES_SERVICE_PORT_HTTPS=443
MY_SVC_PORT=tcp://1.2.3.4:8080
MY_SVC_PORT_8080_TCP=tcp://1.2.3.4:8080
MY_SVC_PORT_8080_TCP_ADDR=1.2.3.4
MY_SVC_PORT_8080_TCP_PORT=8080
MY_SVC_PORT_8080_TCP_PROTO=tcp
MY_SVC_PORT_9090_UDP=udp://1.2.3.4:9090
MY_SVC_PORT_9090_UDP_ADDR=1.2.3.4
MY_SVC_PORT_9090_UDP_PORT=9090
MY_SVC_PORT_9090_UDP_PROTO=udp
MY_SVC_SERVICE_HOST=1.2.3.4
MY_SVC_SERVICE_PORT=8080
MY_SVC_SERVICE_PORT_METRICS=9090
"
        );
    }

    /// The relay replaces the master Service's address, also for a pod in `default` whose
    /// namespace list holds that Service; without links only the master's variables remain.
    #[test]
    fn the_relay_replaces_the_kubernetes_service_address() {
        let relay: SocketAddr = "10.201.3.1:443".parse().unwrap();
        let master = svc(
            "default",
            "kubernetes",
            "10.96.0.1",
            serde_json::json!([
            {"name": "https", "port": 443}]),
        );
        let env = service_env("default", std::slice::from_ref(&master), Some(&master), Some(relay));
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.201.3.1");
        assert_eq!(env["KUBERNETES_SERVICE_PORT"], "443");
        assert_eq!(env["KUBERNETES_PORT"], "tcp://10.201.3.1:443");
        let env = service_env("ns", &[], None, Some("10.0.0.1:40000".parse().unwrap()));
        assert_eq!(env["KUBERNETES_SERVICE_PORT_HTTPS"], "40000");
        assert_eq!(env.len(), 8, "{env:#?}");
        assert!(service_env("ns", &[], None, None).is_empty());
    }

    /// Upstream lets a namespace's own `kubernetes` Service replace the master's variables.
    #[test]
    fn a_namespace_kubernetes_service_wins_over_the_master() {
        let own = svc("ns", "kubernetes", "10.0.0.9", serde_json::json!([{"port": 80}]));
        let env = service_env("ns", &[own], None, Some("10.201.3.1:443".parse().unwrap()));
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.0.0.9");
    }
}
