//! The Service controller (knative/serving `pkg/reconciler/service`): a Service owns a
//! Configuration and a Route of its own name and mirrors their status.
//!
//! The Configuration gets the Service's `spec.template`; the Route its `spec.traffic` (the
//! webhook defaults it to 100 % `latestRevision`), each entry without a `revisionName` aimed at
//! the Service's Configuration. Both carry the Service's labels plus
//! `serving.knative.dev/service`. The Service's status: `ConfigurationsReady` and `RoutesReady`
//! from their `Ready` (Unknown `OutOfDate` while they have not observed their latest spec, or
//! while the Route does not yet send its `latestRevision` traffic to the latest ready
//! revision), `Ready` from both, and the URL, address, revision names and traffic.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt as _;
use kinetic_api::knative::configuration::{Configuration, ConfigurationSpec};
use kinetic_api::knative::route::{Route, RouteSpec};
use kinetic_api::knative::service::{Service, ServiceStatus};
use kinetic_api::knative::{SERVICE_LABEL, SERVICE_UID_LABEL, TrafficTarget, condition};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource as _, ResourceExt as _};

use crate::events::{EventReq, EventSink};

use super::{
    ReconcileError, cond_of, controlled_by, controller_ref, key, set_condition, status_patch,
};

struct Ctx {
    client: Client,
    backoff: crate::backoff::Backoff,
    events: EventSink,
}

/// Runs the Service controller until `shutdown` resolves.
///
/// # Errors
/// None so far: API errors are retried per Service with back-off.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> crate::Result<()> {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        backoff: crate::backoff::Backoff::default(),
        events: EventSink::spawn(client.clone(), "service-controller".to_owned()),
    });
    Controller::new(Api::<Service>::all(client.clone()), watcher::Config::default())
        .owns(Api::<Configuration>::all(client.clone()), watcher::Config::default())
        .owns(Api::<Route>::all(client), watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(crate::log_reconcile("service"))
        .await;
    Ok(())
}

fn error_policy(svc: Arc<Service>, e: &ReconcileError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&*svc, e)
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    ctx.backoff
        .reconcile(&*svc, async {
            if svc.meta().deletion_timestamp.is_none() {
                reconcile_pass(&svc, &ctx).await?;
            }
            Ok(Action::await_change())
        })
        .await
}

/// kubectl's copy of the last applied manifest, which children do not inherit.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The metadata of the Service's Configuration and Route.
fn child_meta(svc: &Service) -> ObjectMeta {
    let mut labels: BTreeMap<String, String> = svc.labels().clone();
    labels.insert(SERVICE_LABEL.into(), svc.name_any());
    labels.insert(SERVICE_UID_LABEL.into(), svc.uid().unwrap_or_default());
    // Upstream's `MakeConfiguration`/`MakeRoute`: the Service's annotations (among them its
    // `creator` and `lastModifier`) but kubectl's last-applied copy.
    let mut annotations = svc.annotations().clone();
    annotations.remove(LAST_APPLIED_ANNOTATION);
    ObjectMeta {
        name: Some(svc.name_any()),
        namespace: svc.namespace(),
        labels: Some(labels),
        annotations: (!annotations.is_empty()).then_some(annotations),
        owner_references: Some(vec![controller_ref(svc)]),
        ..ObjectMeta::default()
    }
}

/// The Route's traffic: the Service's, entries without a revision aimed at its Configuration.
pub fn route_traffic(svc: &Service) -> Vec<TrafficTarget> {
    let traffic = svc.spec.traffic.clone().filter(|t| !t.is_empty()).unwrap_or_else(|| {
        vec![TrafficTarget {
            percent: Some(100),
            latest_revision: Some(true),
            ..TrafficTarget::default()
        }]
    });
    traffic
        .into_iter()
        .map(|mut t| {
            if t.revision_name.as_deref().is_none_or(str::is_empty) {
                t.configuration_name = Some(svc.name_any());
            }
            t
        })
        .collect()
}

/// Creates `obj` or brings the stored one's spec and labels to it.
async fn ensure<K>(
    api: &Api<K>,
    events: &EventSink,
    svc: &Service,
    obj: K,
    same: impl Fn(&K, &K) -> bool,
    copy_spec: impl Fn(&mut K, &K),
) -> Result<K, ReconcileError>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let name = obj.name_any();
    let Some(mut cur) = api.get_opt(&name).await? else {
        return match api.create(&PostParams::default(), &obj).await {
            Ok(o) => {
                tracing::info!(service = %key(svc), kind = %K::kind(&()), "created");
                let msg = format!("Created {} {name:?}", K::kind(&()));
                events.send(EventReq::for_object(svc, "Normal", "Created", msg));
                Ok(o)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(api.get(&name).await?),
            Err(e) => Err(e.into()),
        };
    };
    if !controlled_by(&cur, svc) {
        // Upstream: NotOwned; leave another owner's object alone.
        return Ok(cur);
    }
    if same(&cur, &obj) && cur.labels() == obj.labels() && cur.annotations() == obj.annotations() {
        return Ok(cur);
    }
    copy_spec(&mut cur, &obj);
    cur.meta_mut().labels = obj.meta().labels.clone();
    cur.meta_mut().annotations = obj.meta().annotations.clone();
    Ok(api.replace(&name, &PostParams::default(), &cur).await?)
}

async fn reconcile_pass(svc: &Service, ctx: &Ctx) -> Result<(), ReconcileError> {
    let ns = svc.namespace().unwrap_or_default();
    let cfgs: Api<Configuration> = Api::namespaced(ctx.client.clone(), &ns);
    let routes: Api<Route> = Api::namespaced(ctx.client.clone(), &ns);
    let want_cfg = Configuration {
        metadata: child_meta(svc),
        spec: ConfigurationSpec { template: svc.spec.template.clone() },
        status: None,
    };
    let cfg = ensure(
        &cfgs,
        &ctx.events,
        svc,
        want_cfg,
        |a, b| a.spec == b.spec,
        |a, b| a.spec = b.spec.clone(),
    )
    .await?;
    let want_route = Route {
        metadata: child_meta(svc),
        spec: RouteSpec { traffic: Some(route_traffic(svc)) },
        status: None,
    };
    // The webhook defaults the stored Route's targets; compare what the user can set.
    let route = ensure(
        &routes,
        &ctx.events,
        svc,
        want_route,
        |a, b| {
            let norm = |r: &Route| {
                let mut t = r.spec.traffic.clone();
                kinetic_api::knative::webhook::set_traffic_defaults(&mut t, false);
                t
            };
            norm(a) == norm(b)
        },
        |a, b| a.spec = b.spec.clone(),
    )
    .await?;

    let old = svc.status.clone().unwrap_or_default();
    let old_conds = old.status.conditions.clone().unwrap_or_default();
    let mut conds = Vec::new();
    let cs = cfg.status.clone().unwrap_or_default();
    let rs = route.status.clone().unwrap_or_default();
    let out_of_date = |kind: &str| {
        (
            "Unknown".to_owned(),
            condition::reason::OUT_OF_DATE.to_owned(),
            format!("The {kind} is still working to reflect the latest desired specification."),
        )
    };
    let cfg_cond = if cs.status.observed_generation != cfg.meta().generation {
        out_of_date("Configuration")
    } else {
        cond_of(cs.status.condition(condition::READY))
    };
    let mut route_cond = if rs.status.observed_generation != route.meta().generation {
        out_of_date("Route")
    } else {
        cond_of(rs.status.condition(condition::READY))
    };
    // Upstream's checkRoutesNotReady: a Ready Route whose latestRevision traffic does not go to
    // the latest ready revision yet is out of date.
    let latest_ready = cs.fields.latest_ready_revision_name.clone();
    if route_cond.0 == "True"
        && rs
            .fields
            .traffic
            .iter()
            .flatten()
            .any(|t| t.latest_revision == Some(true) && t.revision_name != latest_ready)
    {
        route_cond = out_of_date("Route");
    }
    set_condition(
        &mut conds,
        &old_conds,
        condition::CONFIGURATIONS_READY,
        &cfg_cond.0,
        &cfg_cond.1,
        &cfg_cond.2,
    );
    set_condition(
        &mut conds,
        &old_conds,
        condition::ROUTES_READY,
        &route_cond.0,
        &route_cond.1,
        &route_cond.2,
    );
    let ready = [&cfg_cond, &route_cond]
        .into_iter()
        .find(|c| c.0 == "False")
        .or_else(|| [&cfg_cond, &route_cond].into_iter().find(|c| c.0 == "Unknown"))
        .cloned()
        .unwrap_or(("True".to_owned(), String::new(), String::new()));
    set_condition(&mut conds, &old_conds, condition::READY, &ready.0, &ready.1, &ready.2);

    let mut st = ServiceStatus::default();
    st.status.observed_generation = svc.meta().generation;
    st.status.annotations = old.status.annotations.clone();
    st.status.conditions = Some(conds);
    st.configuration = cs.fields.clone();
    st.route = rs.fields.clone();
    if svc.status.as_ref() != Some(&st) {
        let api: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(
            &svc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(status_patch(&st)?),
        )
        .await?;
    }
    Ok(())
}
