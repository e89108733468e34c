//! `kinetic controller` and the controllers inside `kinetic up`: one wiring of the workload
//! controllers (CloneSet with image pre-download, ImagePullJob, NodeImage,
//! Deployment/ReplicaSet, Endpoints/EndpointSlices) and the volume controller (claim binding,
//! release, protection finalizers) for both homes.

/// The default StorageClass of `kinetic up`: local directories on the node of the claim's first
/// pod, made by the node agent's provisioner (like kind's `standard` class).
pub async fn ensure_local_path_class(client: &kube::Client) -> anyhow::Result<()> {
    use kinetic_api::storage::{ANN_DEFAULT_CLASS, LOCAL_PATH_CLASS, LOCAL_PATH_PROVISIONER};
    let class: k8s_openapi::api::storage::v1::StorageClass =
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": LOCAL_PATH_CLASS, "annotations": {ANN_DEFAULT_CLASS: "true"}},
            "provisioner": LOCAL_PATH_PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer",
        }))?;
    let api: kube::Api<k8s_openapi::api::storage::v1::StorageClass> =
        kube::Api::all(client.clone());
    match api.create(&kube::api::PostParams::default(), &class).await {
        Ok(_) => Ok(()),
        // Already there (a restart): a user's changes to it are kept.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e).context("creating the local-path StorageClass"),
    }
}

use std::path::PathBuf;

use anyhow::Context as _;
use tokio::sync::watch;

/// Options of `kinetic controller`.
#[derive(clap::Args, Clone)]
pub struct ControllerArgs {
    /// The cluster [default: $KUBECONFIG, then ~/.kube/config, then kinetic's data dir]
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the leader-election Lease
    #[arg(long, default_value = "kube-system")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease [default: host name and process id]
    #[arg(long)]
    pub identity: Option<String>,
    /// Run without leader election (only ever one replica)
    #[arg(long)]
    pub no_leader_elect: bool,
}

/// Installs the CRDs, then runs every controller until `stop` turns true. Returns when they
/// have all stopped.
pub async fn run_all(client: kube::Client, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    kinetic_controllers::crds::install(&client, &kinetic_controllers::cloneset::crds())
        .await
        .context("installing the CloneSet CRD")?;
    kinetic_controllers::crds::install(&client, &kinetic_controllers::imagepulljob::crds())
        .await
        .context("installing the ImagePullJob and NodeImage CRDs")?;
    let until = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let cloneset = kinetic_controllers::cloneset::run(client.clone(), until(stop.clone()));
    let volumes = kinetic_controllers::volume::run(client.clone(), until(stop.clone()));
    let pulljobs = kinetic_controllers::imagepulljob::run(client.clone(), until(stop.clone()));
    let nodeimages = kinetic_controllers::nodeimage::run(client.clone(), until(stop.clone()));
    let workloads = kinetic_workloads::run(client, until(stop));
    let (a, b, c, d, e) = tokio::join!(cloneset, workloads, volumes, pulljobs, nodeimages);
    a.context("the CloneSet controller stopped")?;
    b.context("the workload controllers stopped")?;
    c.context("the volume controller stopped")?;
    d.context("the ImagePullJob controller stopped")?;
    e.context("the NodeImage controller stopped")?;
    Ok(())
}

/// `kinetic controller`: leader election, then all controllers until a signal or the loss of
/// leadership (then it exits non-zero, as kube-controller-manager does, for its supervisor to
/// restart it as a candidate).
pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    let client = crate::client_from(args.kubeconfig.as_deref()).await?;
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("{}_{}", crate::hostname(), std::process::id()));
    let leadership = if args.no_leader_elect {
        None
    } else {
        let cfg = kinetic_controllers::leader::LeaseConfig::new(
            &args.lease_namespace,
            "kinetic-controller",
            &identity,
        );
        tracing::info!(identity = %identity, "waiting to become the leader");
        Some(kinetic_controllers::leader::acquire(client.clone(), cfg).await)
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut controllers = tokio::spawn(run_all(client, stop_rx));
    #[allow(clippy::print_stdout)]
    {
        println!("kinetic controller {identity} is running the workload controllers");
    }
    let lost = async {
        match &leadership {
            Some(l) => l.lost().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        r = crate::wait_for_signal() => r.map(|()| true),
        () = lost => Ok(false),
        r = &mut controllers => {
            r.context("the controllers panicked")??;
            anyhow::bail!("the controllers stopped on their own");
        }
    };
    let _ = stop_tx.send(true);
    let _ = controllers.await;
    match outcome? {
        true => {
            if let Some(l) = leadership {
                l.release().await;
            }
            Ok(())
        }
        false => anyhow::bail!("lost leadership of kube-system/kinetic-controller"),
    }
}
