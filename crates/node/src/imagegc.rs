//! The agent's image garbage collection: kubelet's image GC manager
//! (`pkg/kubelet/images/image_gc_manager.go`) over the agent's image store.
//!
//! Every [`crate::Config::image_gc_period`] (and after each preheat pull) it calls
//! [`kinetic_image::Store::gc`] with [`crate::Config::image_gc_policy`]; the store frees
//! unused images, least recently pulled first, from the high watermark down to the low one and
//! keeps images younger than the policy's minimum age. In use are: the images of every pod
//! bound to this node (spec references and reported image IDs, so a pod's image stays even
//! while it is pulled for that pod) and the preheat pulls in flight.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use tokio::sync::Notify;

use crate::Ctx;

/// Runs the GC loop until aborted.
pub(crate) async fn run(ctx: Arc<Ctx>, pulling: Arc<Mutex<HashSet<String>>>, kick: Arc<Notify>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(ctx.cfg.image_gc_period) => {}
            () = kick.notified() => {}
        }
        let mut in_use: Vec<String> =
            pulling.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
        match pod_images(&ctx).await {
            Ok(images) => in_use.extend(images),
            Err(e) => {
                // Without the pod list nothing can be judged unused.
                tracing::warn!(error = %e, "image GC skipped: listing this node's pods failed");
                continue;
            }
        }
        match ctx.images.gc(&ctx.cfg.image_gc_policy, &in_use).await {
            Ok(r) if !r.removed_images.is_empty() => tracing::info!(
                removed = r.removed_images.len(),
                freed = r.freed_bytes,
                usage = r.usage_percent,
                "image GC removed unused images"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %crate::report(&e), "image GC"),
        }
    }
}

/// Every image reference and image ID the pods bound to this node name.
async fn pod_images(ctx: &Ctx) -> Result<Vec<String>, kube::Error> {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let lp = ListParams::default().fields(&format!("spec.nodeName={}", ctx.cfg.node_name));
    let pods = api.list(&lp).await?;
    let mut out = Vec::new();
    for p in pods.items {
        if let Some(spec) = &p.spec {
            for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
                out.extend(c.image.clone());
            }
        }
        if let Some(st) = &p.status {
            for c in st
                .container_statuses
                .iter()
                .flatten()
                .chain(st.init_container_statuses.iter().flatten())
            {
                if !c.image_id.is_empty() {
                    out.push(c.image_id.clone());
                }
            }
        }
    }
    Ok(out)
}
