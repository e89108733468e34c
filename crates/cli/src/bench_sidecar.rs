//! The sidecar part of `kinetic bench rollout` (issue 17): a new sidecar image for an app of
//! `n` pods, released two ways in one run on one node, with the new image already on the node
//! and the same maxUnavailable:
//! - a Deployment whose template carries the sidecar, rolled by recreating its pods;
//! - a SidecarSet injected into the pods of a Deployment, upgraded in place.
//!
//! Measured from the spec change until every pod runs the new sidecar and is Ready: the time,
//! the app containers restarted (in place: restartCount growth; recreate: app containers of
//! replaced pods) and the pods whose (UID, IP) changed.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use kube::{Client, ResourceExt as _};
use serde_json::json;
use tokio::time::Instant;

use crate::bench::{Row, ms};
use crate::bench_pods::is_ready;

/// One release's figures.
pub struct Outcome {
    pub took: Duration,
    pub app_restarts: usize,
    pub ip_changes: usize,
}

fn sidecar(image: &str) -> serde_json::Value {
    json!({
        "name": "side",
        "image": image,
        "command": ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p 8081 -h /www & wait"],
        "readinessProbe": {"httpGet": {"path": "/", "port": 8081}, "periodSeconds": 1},
    })
}

fn app(image: &str) -> serde_json::Value {
    json!({
        "name": "app",
        "image": image,
        "command": ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"],
        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
    })
}

fn deployment(
    name: &str,
    n: u32,
    max_unavailable: &str,
    containers: serde_json::Value,
) -> anyhow::Result<DynamicObject> {
    let obj = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": n, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": containers}},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxUnavailable": max_unavailable, "maxSurge": 0}},
        },
    });
    Ok(serde_json::from_value(obj)?)
}

fn deploy_ar() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"))
}

fn sidecarset_ar() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("apps.kruise.io", "v1alpha1", "SidecarSet"))
}

fn side_image(p: &Pod) -> Option<(&str, bool)> {
    let spec = p.spec.as_ref()?.containers.iter().find(|c| c.name == "side")?;
    let status =
        p.status.as_ref()?.container_statuses.as_ref()?.iter().find(|c| c.name == "side")?;
    let image = spec.image.as_deref()?;
    Some((image, status.image == image && status.ready))
}

fn app_restarts(p: &Pod) -> i32 {
    let s = p.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    s.into_iter().flatten().find(|c| c.name == "app").map_or(0, |c| c.restart_count)
}

/// Live pods of `app` by UID: (IP, app restarts).
async fn snapshot(pods: &Api<Pod>, app: &str) -> anyhow::Result<BTreeMap<String, (String, i32)>> {
    Ok(pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default();
            (p.uid().unwrap_or_default(), (ip, app_restarts(p)))
        })
        .collect())
}

/// Waits until `app` has exactly `n` pods, all Ready, with sidecar `image` running.
async fn settled(
    pods: &Api<Pod>,
    app: &str,
    n: usize,
    image: &str,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let all = pods.list(&ListParams::default().labels(&format!("app={app}"))).await?.items;
        if all.len() == n
            && all.iter().all(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && is_ready(p)
                    && side_image(p) == Some((image, true))
            })
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{app}: {n} ready pods with sidecar {image} not reached within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn compare(
    before: &BTreeMap<String, (String, i32)>,
    after: &BTreeMap<String, (String, i32)>,
) -> (usize, usize) {
    let mut restarts = 0;
    let mut ip_changes = 0;
    for (uid, (ip, r)) in after {
        match before.get(uid) {
            Some((ip0, r0)) => {
                restarts += usize::try_from(r - r0).unwrap_or(0);
                ip_changes += usize::from(ip0 != ip);
            }
            // A new pod: its IP is new, and the app container it replaced was stopped.
            None => {
                restarts += 1;
                ip_changes += 1;
            }
        }
    }
    (restarts, ip_changes)
}

async fn clean(client: &Client, pods: &Api<Pod>, app: &str) -> anyhow::Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &deploy_ar());
    api.delete(app, &DeleteParams::foreground()).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pods.list(&ListParams::default().labels(&format!("app={app}"))).await?.items.is_empty() {
        if Instant::now() > deadline {
            bail!("{app}: pods were not deleted within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The sidecar in the Deployment's template, released by recreating the pods.
pub async fn recreate(
    client: &Client,
    pods: &Api<Pod>,
    n: u32,
    max_unavailable: &str,
    images: (&str, &str, &str),
) -> anyhow::Result<Outcome> {
    let (app_image, v1, v2) = images;
    let name = "sc-recreate";
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &deploy_ar());
    let obj = deployment(name, n, max_unavailable, json!([sidecar(v1), app(app_image)]))?;
    api.create(&Default::default(), &obj).await.with_context(|| format!("creating {name}"))?;
    settled(pods, name, n as usize, v1, Duration::from_secs(300)).await?;
    let before = snapshot(pods, name).await?;
    let started = Instant::now();
    let patch =
        json!([{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": v2}]);
    api.patch(name, &PatchParams::default(), &Patch::Json::<()>(serde_json::from_value(patch)?))
        .await?;
    settled(pods, name, n as usize, v2, Duration::from_secs(300)).await?;
    let took = started.elapsed();
    let (app_restarts, ip_changes) = compare(&before, &snapshot(pods, name).await?);
    clean(client, pods, name).await?;
    Ok(Outcome { took, app_restarts, ip_changes })
}

/// A SidecarSet injected into a Deployment's pods, upgraded in place.
pub async fn in_place(
    client: &Client,
    pods: &Api<Pod>,
    n: u32,
    max_unavailable: &str,
    images: (&str, &str, &str),
) -> anyhow::Result<Outcome> {
    let (app_image, v1, v2) = images;
    let name = "sc-inplace";
    let sets: Api<DynamicObject> = Api::all_with(client.clone(), &sidecarset_ar());
    let deadline = Instant::now() + Duration::from_secs(30);
    while sets.list(&ListParams::default()).await.is_err() {
        if Instant::now() > deadline {
            bail!("the SidecarSet CRD was not served within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let max: serde_json::Value =
        max_unavailable.parse::<i64>().map_or_else(|_| json!(max_unavailable), |i| json!(i));
    let ss: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1alpha1", "kind": "SidecarSet",
        "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}}, "containers": [sidecar(v1)],
                 "updateStrategy": {"maxUnavailable": max}},
    }))?;
    sets.create(&Default::default(), &ss).await.context("creating the SidecarSet")?;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &deploy_ar());
    let obj = deployment(name, n, max_unavailable, json!([app(app_image)]))?;
    api.create(&Default::default(), &obj).await.with_context(|| format!("creating {name}"))?;
    settled(pods, name, n as usize, v1, Duration::from_secs(300)).await?;
    let before = snapshot(pods, name).await?;
    let started = Instant::now();
    let patch = json!([{"op": "replace", "path": "/spec/containers/0/image", "value": v2}]);
    sets.patch(name, &PatchParams::default(), &Patch::Json::<()>(serde_json::from_value(patch)?))
        .await?;
    settled(pods, name, n as usize, v2, Duration::from_secs(300)).await?;
    let took = started.elapsed();
    let (app_restarts, ip_changes) = compare(&before, &snapshot(pods, name).await?);
    clean(client, pods, name).await?;
    sets.delete(name, &DeleteParams::default()).await?;
    Ok(Outcome { took, app_restarts, ip_changes })
}

/// The table rows of the two releases.
pub fn rows(n: u32, recreate: &Outcome, in_place: &Outcome) -> Vec<Row> {
    let line = |o: &Outcome| {
        format!(
            "{:.0} ms; app containers restarted {}; IP changes {}",
            ms(o.took),
            o.app_restarts,
            o.ip_changes
        )
    };
    let speedup = ms(recreate.took) / ms(in_place.took).max(1e-9);
    vec![
        Row::new(
            format!("{n} pods, new sidecar image on the node: Deployment recreating the pods"),
            line(recreate),
            "",
            None,
        ),
        Row::new(
            format!("{n} pods, new sidecar image on the node: SidecarSet in place"),
            line(in_place),
            "",
            None,
        ),
        Row::new(
            "  SidecarSet speed-up over recreating the pods".into(),
            format!(
                "{speedup:.1}× with {} app restarts and {} IP changes",
                in_place.app_restarts, in_place.ip_changes
            ),
            "≥ 5×, 0 app restarts, 0 IP changes",
            Some(speedup >= 5.0 && in_place.app_restarts == 0 && in_place.ip_changes == 0),
        ),
    ]
}

/// Both releases, on a running platform, the new sidecar images pulled onto the node first.
pub async fn run(
    platform: &crate::platform::Platform,
    n: u32,
    max_unavailable: &str,
) -> anyhow::Result<(Outcome, Outcome)> {
    let client = platform.client.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let image = |repo: &'static str, tag: &'static str| {
        let page = format!("{repo} {tag}\n");
        async move {
            kinetic_testkit::images::busybox(
                &platform.registry,
                repo,
                tag,
                &[("www/index.html", &page)],
            )
            .await
        }
    };
    let app_image = image("sc-app", "v1").await?;
    let (r1, r2) = (image("sc-side", "recreate-v1").await?, image("sc-side", "recreate-v2").await?);
    let (i1, i2) = (image("sc-side", "inplace-v1").await?, image("sc-side", "inplace-v2").await?);
    for v2 in [&r2, &i2] {
        crate::bench_rollout::preload(&pods, v2).await?;
    }
    let r = recreate(&client, &pods, n, max_unavailable, (&app_image, &r1, &r2)).await?;
    eprintln!(
        "{:<36} {:>9.0} ms  app restarts {:>3}  ip changes {:>3}",
        "sidecar: Deployment recreate",
        ms(r.took),
        r.app_restarts,
        r.ip_changes
    );
    let i = in_place(&client, &pods, n, max_unavailable, (&app_image, &i1, &i2)).await?;
    eprintln!(
        "{:<36} {:>9.0} ms  app restarts {:>3}  ip changes {:>3}",
        "sidecar: SidecarSet in place",
        ms(i.took),
        i.app_restarts,
        i.ip_changes
    );
    Ok((r, i))
}
