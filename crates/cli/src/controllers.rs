//! `kinetic controller` and the controllers inside `kinetic up`: one wiring of the workload
//! controllers (CloneSet with image pre-download, SidecarSet, StatefulSet (apps/v1 and Advanced),
//! UnitedDeployment, ImagePullJob,
//! NodeImage, Deployment/ReplicaSet, DaemonSet (apps/v1 and Advanced), Endpoints/EndpointSlices,
//! Knative Serving, PodPool, agent-sandbox, HPA, Crane's EffectiveHPA, Job, CronJob, BroadcastJob) and the
//! volume controller (claim binding, release, protection finalizers) for both homes.

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

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

/// How long SIGTERM waits for the controllers to finish their running reconciles before it
/// abandons them, releases the Lease and exits (issue 10, item 3: a reconcile stuck on the API
/// server must not keep a replica holding the Lease without reconciling).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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
    /// How long a standby waits after the leader's last renewal before it takes the Lease
    /// (kube-controller-manager's flag of the same name)
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up and exits
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub leader_elect_renew_deadline: Duration,
    /// How often candidates try to take, and the leader to renew, the Lease
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub leader_elect_retry_period: Duration,
    /// Serve the SidecarSet pod-injection webhook over TLS on this address and keep its
    /// MutatingWebhookConfiguration (`kinetic-sidecarset`) in sync with the SidecarSets
    #[arg(long)]
    pub webhook_listen: Option<std::net::SocketAddr>,
    /// The URL the API server calls for the webhook [default: https://WEBHOOK_LISTEN/mutate-pod]
    #[arg(long, requires = "webhook_listen")]
    pub webhook_url: Option<String>,
    /// Print the ClusterRoles and bindings the controllers (user system:kinetic-controller or
    /// ServiceAccount kinetic-system/kinetic-controller) and node agents (group
    /// system:nodes) need, as YAML for `kubectl apply -f -`, and exit
    #[arg(long)]
    pub print_rbac: bool,
}

/// A duration as kube-controller-manager's flags take it (`15s`, `500ms`, `1m30s`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration =
        s.parse().map_err(|e| format!("{s:?} is not a duration like 15s or 500ms: {e}"))?;
    Duration::try_from(d).map_err(|_| format!("{s:?}: a duration must not be negative"))
}

/// The names of the controllers that have not returned yet, for the shutdown log.
#[derive(Clone, Default)]
pub struct Running(Arc<Mutex<BTreeSet<&'static str>>>);

impl Running {
    /// Runs `fut` as the controller `name`, listed while it runs.
    async fn track<T>(&self, name: &'static str, fut: impl Future<Output = T>) -> T {
        self.set(|s| s.insert(name));
        // Boxed: the joined future of every controller outgrew a debug build's thread stack
        // (`kinetic up` died with "stack overflow" once the DaemonSet and UnitedDeployment
        // controllers joined it).
        let out = Box::pin(fut).await;
        self.set(|s| s.remove(name));
        tracing::debug!(controller = name, "controller stopped");
        out
    }

    fn set(&self, f: impl FnOnce(&mut BTreeSet<&'static str>) -> bool) {
        if let Ok(mut s) = self.0.lock() {
            f(&mut s);
        }
    }

    /// The controllers still running, comma-separated.
    pub fn names(&self) -> String {
        self.0.lock().map(|s| s.iter().copied().collect::<Vec<_>>().join(", ")).unwrap_or_default()
    }
}

/// Installs the CRDs, then runs every controller until `stop` turns true. Returns when they
/// have all stopped.
pub async fn run_all(client: kube::Client, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    run_all_tracked(client, stop, Running::default()).await
}

/// [`run_all`], keeping in `running` the names of the controllers that have not returned.
pub async fn run_all_tracked(
    client: kube::Client,
    stop: watch::Receiver<bool>,
    running: Running,
) -> anyhow::Result<()> {
    kinetic_controllers::crds::install(&client, &kinetic_controllers::cloneset::crds())
        .await
        .context("installing the CloneSet CRD")?;
    kinetic_controllers::crds::install(&client, &kinetic_controllers::daemonset::crds())
        .await
        .context("installing the Advanced DaemonSet CRD")?;
    kinetic_controllers::crds::install(&client, &kinetic_controllers::sidecarset::crds())
        .await
        .context("installing the SidecarSet CRD")?;
    kinetic_controllers::crds::install(&client, &kinetic_controllers::statefulset::crds())
        .await
        .context("installing the Advanced StatefulSet CRD")?;
    kinetic_controllers::crds::install(&client, &kinetic_controllers::uniteddeployment::crds())
        .await
        .context("installing the UnitedDeployment CRD")?;
    kinetic_controllers::crds::install(&client, &kinetic_controllers::imagepulljob::crds())
        .await
        .context("installing the ImagePullJob, ImageListPullJob and NodeImage CRDs")?;
    kinetic_controllers::crds::install(&client, &kinetic_controllers::broadcastjob::crds())
        .await
        .context("installing the BroadcastJob CRD")?;
    kinetic_controllers::crds::install(&client, &kinetic_controllers::crr::crds())
        .await
        .context("installing the ContainerRecreateRequest CRD")?;
    kinetic_controllers::crds::install(&client, &kinetic_controllers::serving::crds())
        .await
        .context("installing the Knative Serving CRDs")?;
    kinetic_controllers::crds::install(&client, &kinetic_controllers::podpool::crds())
        .await
        .context("installing the PodPool CRD")?;
    kinetic_controllers::crds::install(&client, &kinetic_controllers::sandbox::crds())
        .await
        .context("installing the agent-sandbox CRDs")?;
    kinetic_controllers::crds::install(&client, &kinetic_controllers::ehpa::crds())
        .await
        .context("installing Crane's EffectiveHorizontalPodAutoscaler CRD")?;
    kinetic_controllers::crds::install(&client, &kinetic_controllers::podunavailablebudget::crds())
        .await
        .context("installing OpenKruise's PodUnavailableBudget CRD")?;
    let until = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let r = &running;
    let cloneset = r
        .track("cloneset", kinetic_controllers::cloneset::run(client.clone(), until(stop.clone())));
    let daemonsets = r.track(
        "daemonset",
        kinetic_controllers::daemonset::run(client.clone(), until(stop.clone())),
    );
    let sidecarsets = r.track(
        "sidecarset",
        kinetic_controllers::sidecarset::run(client.clone(), until(stop.clone())),
    );
    let statefulsets = r.track(
        "statefulset",
        kinetic_controllers::statefulset::run(client.clone(), until(stop.clone())),
    );
    let united = r.track(
        "uniteddeployment",
        kinetic_controllers::uniteddeployment::run(client.clone(), until(stop.clone())),
    );
    // The CloneSet family ends together.
    let cloneset = async {
        let (a, b) = tokio::join!(cloneset, united);
        a.and(b)
    };
    let volumes =
        r.track("volume", kinetic_controllers::volume::run(client.clone(), until(stop.clone())));
    let pulljobs = r.track(
        "imagepulljob",
        kinetic_controllers::imagepulljob::run(client.clone(), until(stop.clone())),
    );
    let nodeimages = r.track(
        "nodeimage",
        kinetic_controllers::nodeimage::run(client.clone(), until(stop.clone())),
    );
    let pulllists = r.track(
        "imagelistpulljob",
        kinetic_controllers::imagelistpulljob::run(client.clone(), until(stop.clone())),
    );
    let serving =
        r.track("serving", kinetic_controllers::serving::run(client.clone(), until(stop.clone())));
    let hpa = r.track("hpa", kinetic_controllers::hpa::run(client.clone(), until(stop.clone())));
    let ehpa = r.track("ehpa", kinetic_controllers::ehpa::run(client.clone(), until(stop.clone())));
    // The two autoscalers' controllers end together.
    let hpa = async {
        let (a, b) = tokio::join!(hpa, ehpa);
        a.and(b)
    };
    let batch = r.track("batch", {
        let (client, stop) = (client.clone(), stop.clone());
        async move {
            futures::try_join!(
                kinetic_controllers::job::run(client.clone(), until(stop.clone())),
                kinetic_controllers::cronjob::run(client.clone(), until(stop.clone())),
                kinetic_controllers::broadcastjob::run(client, until(stop)),
            )
            .map(|_| ())
        }
    });
    let podpools =
        r.track("podpool", kinetic_controllers::podpool::run(client.clone(), until(stop.clone())));
    // The disruption controller (PodDisruptionBudget) and OpenKruise's PodUnavailableBudget
    // end together.
    let budgets = r.track("disruption", {
        let (client, stop) = (client.clone(), stop.clone());
        async move {
            futures::try_join!(
                kinetic_controllers::disruption::run(client.clone(), until(stop.clone())),
                kinetic_controllers::podunavailablebudget::run(client, until(stop)),
            )
            .map(|_| ())
        }
    });
    let crr = r.track(
        "containerrecreaterequest",
        kinetic_controllers::crr::run(client.clone(), until(stop.clone())),
    );
    let sandboxes =
        r.track("sandbox", kinetic_controllers::sandbox::run(client.clone(), until(stop.clone())));
    // ContainerRecreateRequests and agent sandboxes end with the PodPools (small, per-pod
    // controllers; the sandboxes claim from the pools).
    let podpools = async {
        let (a, b, c) = tokio::join!(podpools, crr, sandboxes);
        a.and(b).and(c)
    };
    let workloads = r.track("workloads", async move {
        futures::try_join!(
            kinetic_controllers::apps::run(client.clone(), until(stop.clone())),
            kinetic_controllers::network::run(client, until(stop)),
        )
        .map(|_| ())
    });
    let (a, b, c, d, e, f, g, h, i, j, k, l, m, n) = tokio::join!(
        cloneset,
        workloads,
        volumes,
        pulljobs,
        nodeimages,
        pulllists,
        serving,
        hpa,
        podpools,
        sidecarsets,
        daemonsets,
        batch,
        statefulsets,
        budgets
    );
    a.context("the CloneSet or UnitedDeployment controller stopped")?;
    b.context("the workload controllers stopped")?;
    c.context("the volume controller stopped")?;
    d.context("the ImagePullJob controller stopped")?;
    e.context("the NodeImage controller stopped")?;
    f.context("the ImageListPullJob controller stopped")?;
    g.context("the Knative Serving controllers stopped")?;
    h.context("the (Effective)HorizontalPodAutoscaler controllers stopped")?;
    i.context("the PodPool, ContainerRecreateRequest or agent-sandbox controllers stopped")?;
    j.context("the SidecarSet controller stopped")?;
    k.context("the DaemonSet controllers stopped")?;
    l.context("the Job, CronJob and BroadcastJob controllers stopped")?;
    m.context("the StatefulSet controllers (apps/v1 and Advanced) stopped")?;
    n.context("the disruption and PodUnavailableBudget controllers stopped")?;
    Ok(())
}

/// Waits up to `grace` for the controllers' task (already told to stop) to end, then aborts
/// it: reconcilers are safe to cancel at any `.await`. Says which controllers were abandoned.
pub async fn stop_within(
    task: &mut tokio::task::JoinHandle<anyhow::Result<()>>,
    running: &Running,
    grace: Duration,
) {
    match tokio::time::timeout(grace, &mut *task).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %format!("{e:#}"), "the controllers stopped"),
        Ok(_) => {}
        Err(_) => {
            tracing::warn!(
                controllers = %running.names(),
                "controllers did not finish their reconciles within {grace:?}; abandoning them"
            );
            task.abort();
        }
    }
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How `kinetic controller` ended.
enum Ending {
    Signal,
    LostLease,
    ControllersEnded(anyhow::Result<()>),
}

/// `kinetic controller`: leader election, then all controllers until a signal or the loss of
/// leadership.
///
/// # Guarantees
/// - Loss of the Lease (not renewed within the renew deadline, or taken by another candidate)
///   ends the process at once with an error, without waiting for running reconciles, as
///   client-go's `OnStoppedLeading` does in kube-controller-manager: another replica may be
///   leading already, and the supervisor restarts this one as a candidate.
/// - SIGTERM/SIGINT stops every controller within [`SHUTDOWN_GRACE`], then releases the Lease
///   (client-go's `ReleaseOnCancel`, itself bounded by the renew deadline) so a standby takes
///   over within a retry period, and returns.
pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    if args.print_rbac {
        #[allow(clippy::print_stdout)]
        {
            print!("{}", crate::identities::yaml()?);
        }
        return Ok(());
    }
    let client = crate::client_from(args.kubeconfig.as_deref()).await?;
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("{}_{}", crate::hostname(), std::process::id()));
    let lease_name = "kinetic-controller";
    let leadership = if args.no_leader_elect {
        None
    } else {
        let mut cfg = kinetic_controllers::leader::LeaseConfig::new(
            &args.lease_namespace,
            lease_name,
            &identity,
        );
        cfg.lease_duration = args.leader_elect_lease_duration;
        cfg.renew_deadline = args.leader_elect_renew_deadline;
        cfg.retry_period = args.leader_elect_retry_period;
        anyhow::ensure!(
            cfg.renew_deadline < cfg.lease_duration && cfg.retry_period < cfg.renew_deadline,
            "--leader-elect-retry-period < --leader-elect-renew-deadline < \
             --leader-elect-lease-duration must hold (as kube-controller-manager checks)"
        );
        tracing::info!(identity = %identity, "waiting to become the leader");
        tokio::select! {
            l = kinetic_controllers::leader::acquire(client.clone(), cfg) => Some(l),
            r = crate::wait_for_signal() => return r,
        }
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let running = Running::default();
    // The SidecarSet webhook (a real cluster has no embedded injection); it ends with the
    // controllers.
    let _webhook = args.webhook_listen.map(|listen| {
        use kinetic_controllers::sidecarset::webhook;
        let url = args.webhook_url.clone().unwrap_or_else(|| format!("https://{listen}{}", webhook::PATH));
        let mut stop = stop_rx.clone();
        let client = client.clone();
        AbortOnDrop(tokio::spawn(async move {
            let until = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = webhook::run(client, listen, url, until).await {
                tracing::error!(error = %format!("{:#}", anyhow::Error::from(e)), "the SidecarSet webhook stopped");
            }
        }))
    });
    let mut controllers = tokio::spawn(run_all_tracked(client, stop_rx, running.clone()));
    #[allow(clippy::print_stdout)]
    {
        println!("kinetic controller {identity} is running the workload controllers");
    }
    let lost = leadership.as_ref().map(kinetic_controllers::leader::Leadership::on_lost);
    let lost = async move {
        match lost {
            Some(l) => l.await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(lost);
    let ending = tokio::select! {
        r = crate::wait_for_signal() => {
            r?;
            Ending::Signal
        }
        () = &mut lost => Ending::LostLease,
        r = &mut controllers => {
            Ending::ControllersEnded(r.context("the controllers panicked").and_then(|r| r))
        }
    };
    let _ = stop_tx.send(true);
    let lost_msg = || format!("lost leadership of {}/{lease_name}", args.lease_namespace);
    match ending {
        Ending::LostLease => {
            controllers.abort();
            anyhow::bail!(lost_msg());
        }
        Ending::Signal => {
            // Still the leader while the controllers finish (bounded); losing the Lease
            // meanwhile ends at once, as above.
            tokio::select! {
                () = stop_within(&mut controllers, &running, SHUTDOWN_GRACE) => {}
                () = &mut lost => {
                    controllers.abort();
                    anyhow::bail!(lost_msg());
                }
            }
            if let Some(l) = leadership {
                l.release().await;
            }
            Ok(())
        }
        Ending::ControllersEnded(r) => {
            if let Some(l) = leadership {
                l.release().await;
            }
            r?;
            anyhow::bail!("the controllers stopped on their own")
        }
    }
}
