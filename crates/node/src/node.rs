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

/// The Node's status as kubelet would post it now.
pub fn status(cfg: &Config, port: u16, runc_version: &str) -> Value {
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
        json!({"type": t, "status": s, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
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
            "containerRuntimeVersion": format!("runc://{runc_version}"),
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
    let st = status(cfg, port, runc_version);
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": cfg.node_name, "labels": labels},
        "spec": {"podCIDR": cfg.pod_cidr, "podCIDRs": [cfg.pod_cidr]},
    }))
    .map_err(|e| crate::Error::Config(format!("node object: {e}")))?;
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            api.patch(
                &cfg.node_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": labels}})),
            )
            .await?;
        }
        Err(e) => return Err(e.into()),
    }
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
    loop {
        if let Err(e) = renew(&leases, &cfg.node_name, &uid).await {
            tracing::warn!(node = %cfg.node_name, error = %e, "lease renewal failed");
        }
        if tick % 6 == 5 {
            let st = status(&cfg, port, &runc_version);
            if let Err(e) = nodes
                .patch_status(
                    &cfg.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": st})),
                )
                .await
            {
                tracing::warn!(node = %cfg.node_name, error = %e, "node status update failed");
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
