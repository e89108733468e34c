//! The Configuration controller (knative/serving `pkg/reconciler/configuration`): one Revision
//! per template change, and the Configuration's status from its latest created Revision.
//!
//! The Revision of generation `g` is the template's own `metadata.name` or
//! `{configuration}-{g:05}`, labelled with the Configuration, its generation and UID, and the
//! owning Service when there is one. `latestReadyRevisionName` moves to the latest created
//! Revision only once it is Ready, so traffic that follows the Configuration stays on the last
//! good Revision while a new one comes up or fails (upstream's behaviour).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt as _;
use kinetic_api::knative::configuration::{Configuration, ConfigurationStatus};
use kinetic_api::knative::revision::Revision;
use kinetic_api::knative::{
    CONFIGURATION_GENERATION_LABEL, CONFIGURATION_LABEL, CONFIGURATION_UID_LABEL,
    CREATOR_ANNOTATION, LAST_MODIFIER_ANNOTATION, SERVICE_LABEL, SERVICE_UID_LABEL, condition,
    webhook,
};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource as _, ResourceExt as _};

use crate::events::{EventReq, EventSink};

use super::{ReconcileError, cond_of, controller_ref, key, set_condition, status_patch};

struct Ctx {
    client: Client,
    backoff: crate::backoff::Backoff,
    events: EventSink,
}

/// Runs the Configuration controller until `shutdown` resolves.
///
/// # Errors
/// None so far: API errors are retried per Configuration with back-off.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> crate::Result<()> {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        backoff: crate::backoff::Backoff::default(),
        events: EventSink::spawn(client.clone(), "configuration-controller".to_owned()),
    });
    Controller::new(Api::<Configuration>::all(client.clone()), watcher::Config::default())
        .owns(Api::<Revision>::all(client), watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(crate::log_reconcile("configuration"))
        .await;
    Ok(())
}

fn error_policy(cfg: Arc<Configuration>, e: &ReconcileError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&*cfg, e)
}

async fn reconcile(cfg: Arc<Configuration>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    ctx.backoff
        .reconcile(&*cfg, async {
            if cfg.meta().deletion_timestamp.is_none() {
                reconcile_pass(&cfg, &ctx).await?;
            }
            Ok(Action::await_change())
        })
        .await
}

/// The name of the Revision stamped from the Configuration's current template.
pub fn latest_revision_name(cfg: &Configuration) -> String {
    match cfg.spec.template.metadata.name.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => n.to_owned(),
        None => webhook::revision_name(&cfg.name_any(), cfg.meta().generation.unwrap_or(1)),
    }
}

/// The Revision of the current template, as `{configuration}-{generation}` would stamp it.
fn make_revision(cfg: &Configuration, name: &str) -> Revision {
    let generation = cfg.meta().generation.unwrap_or(1);
    let tmpl = &cfg.spec.template;
    let mut labels: BTreeMap<String, String> = tmpl.metadata.labels.clone().unwrap_or_default();
    labels.insert(CONFIGURATION_LABEL.into(), cfg.name_any());
    labels.insert(CONFIGURATION_GENERATION_LABEL.into(), generation.to_string());
    labels.insert(CONFIGURATION_UID_LABEL.into(), cfg.uid().unwrap_or_default());
    // A Configuration owned by a Service carries the Service's labels (service.rs).
    for l in [SERVICE_LABEL, SERVICE_UID_LABEL] {
        if let Some(v) = cfg.labels().get(l) {
            labels.insert(l.into(), v.clone());
        }
    }
    let mut annotations = tmpl.metadata.annotations.clone().unwrap_or_default();
    // Upstream's `updateRevisionAnnotations`: the Revision's creator is whoever last changed
    // the Configuration.
    if let Some(by) = cfg.annotations().get(LAST_MODIFIER_ANNOTATION) {
        annotations.insert(CREATOR_ANNOTATION.into(), by.clone());
    }
    Revision {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: cfg.namespace(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![controller_ref(cfg)]),
            ..ObjectMeta::default()
        },
        spec: tmpl.spec.clone(),
        status: None,
    }
}

async fn reconcile_pass(cfg: &Configuration, ctx: &Ctx) -> Result<(), ReconcileError> {
    let ns = cfg.namespace().unwrap_or_default();
    let revs: Api<Revision> = Api::namespaced(ctx.client.clone(), &ns);
    let name = latest_revision_name(cfg);
    let rev = match revs.get_opt(&name).await? {
        Some(r) => r,
        None => {
            let r = make_revision(cfg, &name);
            match revs.create(&PostParams::default(), &r).await {
                Ok(r) => {
                    tracing::info!(configuration = %key(cfg), revision = %name, "Revision created");
                    let msg = format!("Created Revision {name:?}");
                    ctx.events.send(EventReq::for_object(cfg, "Normal", "Created", msg));
                    r
                }
                Err(kube::Error::Api(s)) if s.code == 409 => revs.get(&name).await?,
                Err(e) => return Err(e.into()),
            }
        }
    };

    let old = cfg.status.clone().unwrap_or_default();
    let old_conds = old.status.conditions.clone().unwrap_or_default();
    let mut st = ConfigurationStatus::default();
    st.status.observed_generation = cfg.meta().generation;
    st.status.annotations = old.status.annotations.clone();
    st.fields.latest_created_revision_name = Some(name.clone());
    st.fields.latest_ready_revision_name = old.fields.latest_ready_revision_name.clone();
    let mut conds = Vec::new();
    let (status, _, message) =
        cond_of(rev.status.as_ref().and_then(|s| s.status.condition(condition::READY)));
    if !super::controlled_by(&rev, cfg) {
        // Upstream: a Revision of that name that this Configuration does not own is an error.
        set_condition(
            &mut conds,
            &old_conds,
            condition::READY,
            "False",
            condition::reason::REVISION_FAILED,
            &format!("Revision {name:?} exists and is not owned by this Configuration"),
        );
    } else {
        match status.as_str() {
            "True" => {
                st.fields.latest_ready_revision_name = Some(name.clone());
                set_condition(&mut conds, &old_conds, condition::READY, "True", "", "");
            }
            "False" => set_condition(
                &mut conds,
                &old_conds,
                condition::READY,
                "False",
                condition::reason::REVISION_FAILED,
                &format!("Revision {name:?} failed with message: {message}."),
            ),
            // Upstream marks Ready Unknown with no reason while the latest revision comes up.
            _ => set_condition(&mut conds, &old_conds, condition::READY, "Unknown", "", ""),
        }
    }
    st.status.conditions = Some(conds);
    if cfg.status.as_ref() != Some(&st) {
        let api: Api<Configuration> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(
            &cfg.name_any(),
            &PatchParams::default(),
            &Patch::Merge(status_patch(&st)?),
        )
        .await?;
    }
    Ok(())
}
