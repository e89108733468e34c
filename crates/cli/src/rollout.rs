//! `kinetic rollout status cloneset/NAME`: follows a CloneSet rollout the way `kubectl rollout
//! status` follows a Deployment, with a progress bar of updated-and-ready pods, the time so far,
//! and each pod's phase in the rollout. It returns when the rollout is complete (exit 0), or
//! fails when the CloneSet reports `ProgressDeadlineExceeded` or `--timeout` passes.
//!
//! The per-pod table is a pure function of the CloneSet and its pods, tested with a snapshot.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use k8s_openapi::api::core::v1::Pod;
use kinetic_api::kruise::cloneset::CloneSet;
use kinetic_api::kruise::{
    CONTROLLER_REVISION_HASH_LABEL, INPLACE_UPDATE_GRACE_ANNOTATION,
    INPLACE_UPDATE_READY_CONDITION, POD_TEMPLATE_HASH_LABEL, SPECIFIED_DELETE_LABEL,
};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt as _};

#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum RolloutCmd {
    /// Follow a CloneSet's rollout until it completes: progress bar, per-pod phase, time so far
    Status {
        /// `cloneset/NAME` (or `clone/NAME`, or just NAME)
        target: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Print the state once instead of following it
        #[arg(long)]
        no_watch: bool,
        /// Give up after this many seconds (0: never)
        #[arg(long, default_value_t = 0)]
        timeout: u64,
    },
}

/// Where the rollout stands.
#[derive(Debug, PartialEq, Eq)]
pub struct Progress {
    pub expected: i32,
    pub updated_ready: i32,
    pub done: bool,
    /// Set when the CloneSet gave up (`ProgressDeadlineExceeded`).
    pub failed: Option<String>,
}

/// The progress of `cs` (its status must be for its current generation to count as done).
pub fn progress(cs: &CloneSet) -> Progress {
    let st = cs.status.clone().unwrap_or_default();
    let replicas = cs.spec.replicas.unwrap_or(1);
    let expected = st.expected_updated_replicas.unwrap_or(replicas);
    let observed = st.observed_generation >= cs.metadata.generation;
    let done = observed
        && st.updated_ready_replicas >= expected
        && st.replicas == replicas
        && st.ready_replicas >= replicas;
    let failed = st.conditions.iter().flatten().find_map(|c| {
        (c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
            .then(|| c.message.clone().unwrap_or_else(|| "progress deadline exceeded".into()))
    });
    Progress { expected, updated_ready: st.updated_ready_replicas, done, failed }
}

fn condition<'a>(p: &'a Pod, ty: &str) -> Option<&'a str> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == ty)
        .map(|c| c.status.as_str())
}

/// A pod's phase in the rollout, in words.
fn pod_phase(p: &Pod, update_revision: &str) -> &'static str {
    let labels = p.labels();
    let updated = labels.get(CONTROLLER_REVISION_HASH_LABEL).is_some_and(|r| r == update_revision);
    let ready = condition(p, "Ready") == Some("True");
    let gate = condition(p, INPLACE_UPDATE_READY_CONDITION);
    if p.metadata.deletion_timestamp.is_some() {
        "terminating"
    } else if labels.contains_key(SPECIFIED_DELETE_LABEL) {
        "to be recreated"
    } else if p.annotations().contains_key(INPLACE_UPDATE_GRACE_ANNOTATION) {
        "in-place: grace period"
    } else if gate == Some("False") {
        "in-place: restarting"
    } else if updated && ready {
        "updated, ready"
    } else if updated {
        "updated, starting"
    } else if ready {
        "old revision, ready"
    } else {
        "old revision, not ready"
    }
}

/// The per-pod table.
pub fn render_pods(cs: &CloneSet, pods: &[Pod]) -> String {
    let update = cs.status.as_ref().and_then(|s| s.update_revision.clone()).unwrap_or_default();
    let mut rows: Vec<[String; 5]> = pods
        .iter()
        .map(|p| {
            let st = p.status.as_ref();
            let ip = st.and_then(|s| s.pod_ip.clone()).unwrap_or_else(|| "-".into());
            let restarts: i32 = st
                .and_then(|s| s.container_statuses.as_ref())
                .map_or(0, |c| c.iter().map(|c| c.restart_count).sum());
            let rev = p.labels().get(POD_TEMPLATE_HASH_LABEL).cloned().unwrap_or_default();
            [p.name_any(), pod_phase(p, &update).to_owned(), rev, ip, restarts.to_string()]
        })
        .collect();
    rows.sort();
    let header = ["POD", "PHASE", "REVISION", "IP", "RESTARTS"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&header).chain(rows.iter()) {
        let line: Vec<String> = r.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join("   ").trim_end());
    }
    out
}

fn parse_target(target: &str) -> anyhow::Result<String> {
    match target.split_once('/') {
        None => Ok(target.to_owned()),
        Some((kind, name))
            if ["cloneset", "clonesets", "clone", "cloneset.apps.kruise.io"]
                .contains(&kind.to_ascii_lowercase().as_str()) =>
        {
            Ok(name.to_owned())
        }
        Some((kind, _)) => bail!(
            "kinetic rollout status follows CloneSets (cloneset/NAME); for a {kind} use kubectl rollout status"
        ),
    }
}

/// Runs `kinetic rollout …`.
///
/// # Errors
/// The CloneSet does not exist, the API cannot be reached, the rollout exceeded its progress
/// deadline, or the timeout passed.
pub async fn run(client: Client, cmd: RolloutCmd) -> anyhow::Result<()> {
    let RolloutCmd::Status { target, namespace, no_watch, timeout } = cmd;
    let name = parse_target(&target)?;
    let api: Api<CloneSet> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let start = tokio::time::Instant::now();
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {pos}/{len} updated and ready, {elapsed}",
        )
        .context("building the progress bar style")?
        .progress_chars("=> "),
    );
    loop {
        let cs = match api.get(&name).await {
            Err(kube::Error::Api(s)) if s.code == 404 => {
                bail!("cloneset {namespace}/{name} not found")
            }
            r => r.with_context(|| format!("getting cloneset {namespace}/{name}"))?,
        };
        let p = progress(&cs);
        let selector =
            cs.status.as_ref().and_then(|s| s.label_selector.clone()).unwrap_or_default();
        let list = pods.list(&ListParams::default().labels(&selector)).await?.items;
        bar.set_length(u64::try_from(p.expected).unwrap_or(0));
        bar.set_position(u64::try_from(p.updated_ready).unwrap_or(0));
        bar.set_message(format!("cloneset/{name}"));
        if p.done || p.failed.is_some() || no_watch {
            bar.finish_and_clear();
            #[allow(clippy::print_stdout)]
            {
                print!("{}", render_pods(&cs, &list));
                println!(
                    "{}/{} updated pods ready after {:.1} s",
                    p.updated_ready,
                    p.expected,
                    start.elapsed().as_secs_f64()
                );
            }
            if let Some(m) = p.failed {
                bail!("cloneset {namespace}/{name} exceeded its progress deadline: {m}");
            }
            #[allow(clippy::print_stdout)]
            if p.done {
                println!("cloneset \"{name}\" successfully rolled out");
            }
            return Ok(());
        }
        if timeout > 0 && start.elapsed() > Duration::from_secs(timeout) {
            bar.finish_and_clear();
            bail!(
                "timed out after {timeout} s waiting for cloneset {namespace}/{name} to roll out"
            );
        }
        bar.tick();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use serde_json::json;

    use super::*;

    fn pod(name: &str, rev: &str, ready: bool, gate: &str, ip: &str, restarts: i32) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"controller-revision-hash": format!("web-{rev}"), "pod-template-hash": rev}},
            "status": {"podIP": ip,
                       "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}},
                                      {"type": "InPlaceUpdateReady", "status": gate}],
                       "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": ready, "restartCount": restarts}]},
        }))
        .unwrap()
    }

    #[test]
    fn shows_each_pods_phase_and_knows_when_it_is_done() {
        let mut cs: CloneSet = serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": 2},
            "spec": {"replicas": 3, "selector": {}, "template": {}},
            "status": {"observedGeneration": 2, "replicas": 3, "readyReplicas": 2, "availableReplicas": 2,
                       "updatedReplicas": 2, "updatedReadyReplicas": 1, "expectedUpdatedReplicas": 3,
                       "updateRevision": "web-new"},
        }))
        .unwrap();
        let pods = [
            pod("web-aaaaa", "new", true, "True", "10.0.0.1", 1),
            pod("web-bbbbb", "new", false, "False", "10.0.0.2", 0),
            pod("web-ccccc", "old", true, "True", "10.0.0.3", 0),
        ];
        expect![[r#"
            POD         PHASE                  REVISION   IP         RESTARTS
            web-aaaaa   updated, ready         new        10.0.0.1   1
            web-bbbbb   in-place: restarting   new        10.0.0.2   0
            web-ccccc   old revision, ready    old        10.0.0.3   0
        "#]]
        .assert_eq(&render_pods(&cs, &pods));
        assert!(!progress(&cs).done);
        let st = cs.status.as_mut().unwrap();
        st.updated_ready_replicas = 3;
        st.ready_replicas = 3;
        assert!(progress(&cs).done);
        assert_eq!(parse_target("cloneset/web").unwrap(), "web");
        assert!(parse_target("deployment/web").unwrap_err().to_string().contains("kubectl"));
    }
}
