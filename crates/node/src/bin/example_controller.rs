//! `kinetic-example-controller`: a small kube-runtime controller that runs in a pod with the
//! `kube` client's in-cluster config (`KUBERNETES_SERVICE_HOST/PORT`, the service-account token
//! and `ca.crt`), for the node crate's tests (issue 16: "a real controller runs as a pod").
//!
//! It reconciles the ConfigMaps of its namespace labelled `kinetic.dev/echo`: each gets
//! `data.echo` (its `data.in` in upper case) and `data.reconciled-by` (this pod's name). Before
//! that it tries two things a Role on ConfigMaps does not allow — listing the namespace's
//! Secrets and the ConfigMaps of `default` — and prints each answer's code and message, so a
//! test can read from the container log that the API refused them.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt as _};

struct Ctx {
    client: Client,
    me: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let host = std::env::var("KUBERNETES_SERVICE_HOST").unwrap_or_default();
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_default();
    println!("api: {host}:{port}");
    let client = match kube::Config::incluster()
        .map_err(|e| e.to_string())
        .and_then(|c| Client::try_from(c).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("no in-cluster client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ns = client.default_namespace().to_owned();
    let lp = ListParams::default();
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns).list(&lp).await.map(|_| ());
    let elsewhere = Api::<ConfigMap>::namespaced(client.clone(), "default").list(&lp).await;
    for (what, r) in [("secrets", secrets), ("default configmaps", elsewhere.map(|_| ()))] {
        match r {
            Ok(()) => println!("{what}: allowed"),
            Err(kube::Error::Api(s)) => println!("{what}: {} {}", s.code, s.message),
            Err(e) => println!("{what}: failed: {e}"),
        }
    }
    let me = std::env::var("HOSTNAME").unwrap_or_default();
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let ctx = Arc::new(Ctx { client, me });
    Controller::new(cms, watcher::Config::default().labels("kinetic.dev/echo"))
        .run(reconcile, |_, _, _| Action::requeue(Duration::from_secs(1)), ctx)
        .for_each(|r| async move {
            match r {
                Ok((o, _)) => println!("reconciled {}", o.name),
                Err(e) => eprintln!("reconcile failed: {e}"),
            }
        })
        .await;
    ExitCode::SUCCESS
}

/// Level-triggered and idempotent: patches only when the ConfigMap differs from what it should
/// hold.
async fn reconcile(cm: Arc<ConfigMap>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    let data = cm.data.clone().unwrap_or_default();
    let echo = data.get("in").map(|s| s.to_uppercase()).unwrap_or_default();
    if data.get("echo") != Some(&echo) || data.get("reconciled-by") != Some(&ctx.me) {
        let ns = cm.namespace().unwrap_or_default();
        let api = Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({"data": {"echo": echo, "reconciled-by": ctx.me}});
        api.patch(&cm.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    Ok(Action::await_change())
}
