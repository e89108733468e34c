//! The `kubernetes` Service in `default` and its Endpoints, as kube-apiserver's controlplane
//! endpoint reconciler keeps them: a ClusterIP Service (the first address of the service range,
//! port 443 `https`) without a selector, whose Endpoints name the address and port the API
//! server serves on. In-cluster clients find the API through it (and kubelet's
//! `KUBERNETES_SERVICE_HOST/PORT`).
//!
//! Caveat: Kinetic's nodes do not route cluster IPs (there is no kube-proxy), and `kinetic up`'s
//! server listens on loopback by default, which a pod's network namespace cannot reach; the
//! Service is there for clients and tools that look it up. Pods reach the server through their
//! node agent's API relay on the bridge gateway instead, which their `KUBERNETES_SERVICE_HOST`
//! and `KUBERNETES_SERVICE_PORT` name (`kinetic-node`'s `relay` and `svcenv`); the serving
//! certificate names that gateway (`Config::tls_sans`) as well as this Service's cluster IP and
//! DNS names.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::rest::{Api, WriteOptions};

/// The Service's cluster IP: the first address of the service range (`10.96.0.0/16`), as
/// upstream reserves it.
pub const CLUSTER_IP: &str = "10.96.0.1";
pub const NAME: &str = "kubernetes";
/// The Service's DNS names, which upstream's serving certificate carries.
pub const DNS_NAMES: &[&str] = &[
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// Creates the Service when it is missing and points its Endpoints at `addr` (an unspecified
/// listen address is published as 127.0.0.1). Failures are logged, not fatal: the API works
/// without them.
pub async fn reconcile(api: &Api, addr: SocketAddr) {
    let opts = WriteOptions::default();
    let ip =
        if addr.ip().is_unspecified() { "127.0.0.1".to_owned() } else { addr.ip().to_string() };
    let port = addr.port();
    if let Some(res) = api.registry.get("", "v1", "services")
        && api.get(&res, "default", NAME).is_err()
    {
        let svc = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": NAME, "namespace": "default",
                "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": CLUSTER_IP, "sessionAffinity": "None",
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}});
        if let Err(e) = api.create(&res, "default", svc, &opts).await
            && e.code != 409
        {
            tracing::warn!(error = %e.message, "creating the kubernetes service failed");
        }
    }
    let Some(res) = api.registry.get("", "v1", "endpoints") else { return };
    let subsets = json!([{"addresses": [{"ip": ip}],
                          "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]);
    let r = match api.get(&res, "default", NAME) {
        Ok(cur) if cur.value().get("subsets") == Some(&subsets) => Ok(()),
        Ok(_) => {
            let want = subsets.clone();
            api.update_with(&res, "default", NAME, None, &opts, move |cur| {
                let mut n: Value = cur.clone();
                n["subsets"] = want.clone();
                Ok(n)
            })
            .await
            .map(|_| ())
        }
        Err(_) => {
            let ep = json!({"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": NAME, "namespace": "default",
                    "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                "subsets": subsets});
            api.create(&res, "default", ep, &opts).await.map(|_| ())
        }
    };
    if let Err(e) = r {
        tracing::warn!(error = %e.message, "writing the kubernetes endpoints failed");
    }
}
