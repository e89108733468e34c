//! The Node object and its heartbeat: capacity and allocatable read from the machine,
//! addresses, conditions and `nodeInfo` as kubelet reports them, and a Lease in
//! `kube-node-lease` renewed every 10 s (kubelet's default), so kube-scheduler and the node
//! lifecycle controller of a real cluster treat the agent like any kubelet.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::{Config, Result};

/// Lease duration kubelet uses (`nodeLeaseDurationSeconds`).
const LEASE_SECONDS: i32 = 40;

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default().trim().to_owned()
}

fn mem_total_kib() -> u64 {
    read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn os_image() -> String {
    read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| "Linux".into())
}

/// The Node's status as kubelet would post it now. A condition whose status is the one in
/// `previous` (the Node as last read or written) keeps its `lastTransitionTime`, as kubelet's
/// condition setters do: only `lastHeartbeatTime` moves on every post (issue 10: the transition
/// time was rewritten every minute).
pub fn status(cfg: &Config, port: u16, runc_version: &str, previous: Option<&Node>) -> Value {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem = format!("{}Ki", mem_total_kib());
    let disk = rustix::fs::statvfs(&cfg.data_dir)
        .map(|s| format!("{}Ki", s.f_blocks * s.f_frsize / 1024))
        .unwrap_or_else(|_| "0".into());
    let capacity = json!({
        "cpu": cpus.to_string(), "memory": mem, "pods": cfg.max_pods.to_string(),
        "ephemeral-storage": disk,
    });
    let now = crate::status::time(jiff::Timestamp::now());
    let cond = |t: &str, s: &str, reason: &str, message: &str| {
        let transition = previous
            .and_then(|n| n.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == t))
            .filter(|c| c.status == s)
            .and_then(|c| c.last_transition_time.as_ref())
            .map_or_else(|| json!(now), |t| json!(t));
        json!({"type": t, "status": s, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": transition})
    };
    let uname = rustix::system::uname();
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": cfg.node_ip.to_string()},
            {"type": "Hostname", "address": cfg.node_name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "nodeInfo": {
            "machineID": read("/etc/machine-id"),
            "systemUUID": read("/sys/class/dmi/id/product_uuid"),
            "bootID": read("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": uname.release().to_string_lossy(),
            "osImage": os_image(),
            "containerRuntimeVersion": runc_version,
            "kubeletVersion": concat!("v1.33.0-kinetic.", env!("CARGO_PKG_VERSION")),
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    })
}

/// Creates the Node, or updates its labels and status when it exists.
///
/// # Errors
/// The API refuses.
pub async fn register(
    client: &kube::Client,
    cfg: &Config,
    port: u16,
    runc_version: &str,
) -> Result<Node> {
    let api: Api<Node> = Api::all(client.clone());
    let labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", cfg.node_name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", "amd64"),
        ("node.kinetic.dev/agent", "kinetic"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": cfg.node_name, "labels": labels},
        "spec": {"podCIDR": cfg.pod_cidr, "podCIDRs": [cfg.pod_cidr]},
    }))
    .map_err(|e| crate::Error::Config(format!("node object: {e}")))?;
    let existing = match api.create(&PostParams::default(), &node).await {
        Ok(n) => n,
        Err(kube::Error::Api(s)) if s.code == 409 => {
            api.patch(
                &cfg.node_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": labels}})),
            )
            .await?
        }
        Err(e) => return Err(e.into()),
    };
    // An agent restart keeps the transition times of the conditions that did not change.
    let st = status(cfg, port, runc_version, Some(&existing));
    Ok(api
        .patch_status(&cfg.node_name, &PatchParams::default(), &Patch::Merge(json!({"status": st})))
        .await?)
}

/// Renews the node Lease every 10 s and re-posts the node status every minute (kubelet's
/// `nodeStatusReportFrequency`), until the task is aborted.
pub async fn heartbeat(
    client: kube::Client,
    cfg: Config,
    port: u16,
    runc_version: String,
    uid: String,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(client);
    let mut tick = 0u64;
    let mut last: Option<Node> = None;
    loop {
        if let Err(e) = renew(&leases, &cfg.node_name, &uid).await {
            tracing::warn!(node = %cfg.node_name, error = %e, "lease renewal failed");
        }
        if tick % 6 == 5 {
            if last.is_none() {
                last = nodes.get_opt(&cfg.node_name).await.ok().flatten();
            }
            let st = status(&cfg, port, &runc_version, last.as_ref());
            match nodes
                .patch_status(
                    &cfg.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": st})),
                )
                .await
            {
                Ok(n) => last = Some(n),
                Err(e) => {
                    // Read it again next time: someone else may have changed it.
                    last = None;
                    tracing::warn!(node = %cfg.node_name, error = %e, "node status update failed");
                }
            }
        }
        tick += 1;
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

async fn renew(api: &Api<Lease>, node: &str, uid: &str) -> Result<()> {
    let now = MicroTime(jiff::Timestamp::now());
    match api.get_opt(node).await? {
        Some(mut l) => {
            let spec = l.spec.get_or_insert_with(LeaseSpec::default);
            spec.renew_time = Some(now);
            spec.holder_identity = Some(node.to_owned());
            spec.lease_duration_seconds = Some(LEASE_SECONDS);
            api.replace(node, &PostParams::default(), &l).await?;
        }
        None => {
            let l = Lease {
                metadata: ObjectMeta {
                    name: Some(node.to_owned()),
                    namespace: Some("kube-node-lease".into()),
                    owner_references: Some(vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: node.to_owned(),
                        uid: uid.to_owned(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(node.to_owned()),
                    lease_duration_seconds: Some(LEASE_SECONDS),
                    renew_time: Some(now),
                    ..Default::default()
                }),
            };
            api.create(&PostParams::default(), &l).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn conditions(n: &Node) -> BTreeMap<String, (String, String)> {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|c| {
                let t = |x: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
                    x.map(|t| t.0.to_string()).unwrap_or_default()
                };
                (c.type_, (t(c.last_transition_time), t(c.last_heartbeat_time)))
            })
            .collect()
    }

    /// Regression (issue 10): every status post (once a minute, and at each agent start)
    /// rewrote `lastTransitionTime` of all conditions although none had changed.
    #[tokio::test(flavor = "multi_thread")]
    async fn node_condition_last_transition_time_is_rewritten_without_a_transition() {
        let server = kinetic_testkit::TestServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::new("node-t", dir.path().to_path_buf());
        register(&client, &cfg, 10250, "1.2.3").await.unwrap();
        // Pretend the conditions last changed long ago, and MemoryPressure was True then.
        let api: Api<Node> = Api::all(client.clone());
        let old = "2020-01-01T00:00:00Z";
        let mut st = status(&cfg, 10250, "1.2.3", None);
        for c in st["conditions"].as_array_mut().unwrap() {
            c["lastTransitionTime"] = json!(old);
            c["lastHeartbeatTime"] = json!(old);
            if c["type"] == "MemoryPressure" {
                c["status"] = json!("True");
            }
        }
        api.patch_status("node-t", &PatchParams::default(), &Patch::Merge(json!({"status": st})))
            .await
            .unwrap();
        let node = register(&client, &cfg, 10250, "1.2.3").await.unwrap();
        let conds = conditions(&node);
        for t in ["Ready", "DiskPressure", "PIDPressure"] {
            assert_eq!(conds[t].0, old, "{t} did not transition: {conds:?}");
            assert_ne!(conds[t].1, old, "{t}'s heartbeat moves: {conds:?}");
        }
        assert_ne!(conds["MemoryPressure"].0, old, "MemoryPressure went True -> False");
        // A later post keeps the new transition time too.
        let again = status(&cfg, 10250, "1.2.3", Some(&node));
        let mem = again["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "MemoryPressure")
            .unwrap();
        assert_eq!(mem["lastTransitionTime"].as_str().unwrap(), conds["MemoryPressure"].0);
        server.shutdown().await;
    }
}
