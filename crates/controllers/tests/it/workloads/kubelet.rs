//! The tests' stand-in for a node: it writes pod status through `pods/status` as a kubelet
//! does (phase, pod IP, the `Ready` condition). This is acting as a node, not mocking the
//! controllers' API.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt as _};
use serde_json::json;
use tokio::task::JoinHandle;

static NEXT_IP: AtomicU32 = AtomicU32::new(1);

/// A fresh pod IP from 10.244.0.0/16.
pub fn next_ip() -> String {
    let n = NEXT_IP.fetch_add(1, Ordering::SeqCst);
    format!("10.244.{}.{}", n / 250, n % 250 + 1)
}

/// Sets the pod Running with `ip`, and its Ready condition to `ready`.
pub async fn set_status(client: &Client, ns: &str, name: &str, ip: &str, ready: bool) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let patch = json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{
            "type": "Ready",
            "status": if ready { "True" } else { "False" },
            "lastTransitionTime": Timestamp::now().to_string(),
        }],
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

/// Makes every pod of `ns` that `becomes_ready` accepts Running and Ready as soon as it shows
/// up (the others Running, not ready), until dropped.
pub struct AutoKubelet {
    task: JoinHandle<()>,
}

impl AutoKubelet {
    pub fn start(
        client: &Client,
        ns: &str,
        becomes_ready: impl Fn(&Pod) -> bool + Send + Sync + 'static,
    ) -> Self {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let client = client.clone();
        let ns = ns.to_owned();
        let becomes_ready = Arc::new(becomes_ready);
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(
                watcher(api, watcher::Config::default()).default_backoff().applied_objects()
            );
            while let Some(Ok(pod)) = events.next().await {
                let has_ip = pod.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some();
                if has_ip || pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let ready = becomes_ready(&pod);
                let (client, ns, name) = (client.clone(), ns.clone(), pod.name_any());
                tokio::spawn(async move {
                    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                    // The pod may be gone already; that is fine for a kubelet too.
                    if api.get_opt(&name).await.ok().flatten().is_some() {
                        let ip = next_ip();
                        let patch = json!({"status": {
                            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                                            "lastTransitionTime": Timestamp::now().to_string()}],
                        }});
                        let _ = api
                            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await;
                    }
                });
            }
        });
        Self { task }
    }
}

impl Drop for AutoKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}
