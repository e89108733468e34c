//! The Route controller (knative/serving `pkg/reconciler/route`): the Route's traffic resolved
//! to revision names, its URLs, and a core Service named after it.
//!
//! The domain comes from `config-domain` and the host names from `config-network`'s templates
//! (both in `knative-serving`; absent, Knative's defaults): `http://{route}.{namespace}.{domain}`,
//! and `http://{tag}-{route}.{namespace}.{domain}` for a tagged target. A target naming a
//! Configuration gets its `latestReadyRevisionName`. When a target cannot be resolved
//! (`AllTrafficAssigned` False or Unknown), `status.traffic` keeps what it was, so traffic stays
//! where it was routed (upstream's behaviour).
//!
//! The core Service is ClusterIP and selector-less; the gateway answers for the Route. It also
//! carries the gateway's word that it routes the Route ([`ROUTED_ANNOTATION`], set by
//! `serving_gateway` after its table swap): `IngressReady` is True only when that digest
//! matches the status written here (else Unknown `IngressNotConfigured`, upstream's reason),
//! and `Ready` needs it, so the first request after Ready is answered.
//!
//! A target that names a revision gets its share only once that revision is Ready. With a
//! rollout duration (the Route's `serving.knative.dev/rollout-duration`, else
//! `config-network`'s `rollout-duration`), a Configuration target's new revision takes its
//! share gradually ([`rollout`], upstream's `traffic.Rollout`): the state is kept in the
//! status annotation `networking.internal.knative.dev/rollout` and the Route is requeued when
//! the next step is due; mid-rollout the older revisions appear in `status.traffic` with
//! `latestRevision: false` before the newest.
//!
//! The labeler (upstream's v2) runs after each pass: Revisions and Configurations the Route
//! references list it in `serving.knative.dev/routes`, and a Revision's
//! `serving.knative.dev/routingState` is `active` while some Route lists it and `reserve` once
//! none does.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Service as CoreService};
use kinetic_api::knative::config::{
    CLUSTER_DOMAIN, Domain, Network, SYSTEM_NAMESPACE, domain, network,
};
use kinetic_api::knative::configuration::Configuration;
use kinetic_api::knative::revision::Revision;
use kinetic_api::knative::route::{Route, RouteStatus};
use kinetic_api::knative::{
    Addressable, ROLLOUT_DURATION_ANNOTATION, ROUTES_ANNOTATION, ROUTING_STATE_LABEL,
    ROUTING_STATE_MODIFIED_ANNOTATION, TrafficTarget, condition, routing_state,
};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource as _, ResourceExt as _};
use serde_json::json;

use crate::events::{EventReq, EventSink};
use crate::serving_gateway::{ROUTED_ANNOTATION, route_hosts, routed_digest};
use rollout::{ConfigurationRollout, ROLLOUT_ANNOTATION, RevisionRollout, Rollout, RolloutParams};

use super::{ReconcileError, cond_of, controller_ref, set_condition, status_patch};

/// Upstream's reason and message while the Ingress has not caught up with the Route
/// (`RouteStatus.MarkIngressNotConfigured`).
const INGRESS_NOT_CONFIGURED: &str = "IngressNotConfigured";
const INGRESS_NOT_CONFIGURED_MESSAGE: &str = "Ingress has not yet been reconciled.";

mod rollout;

struct Ctx {
    client: Client,
    backoff: crate::backoff::Backoff,
    events: EventSink,
}

/// Runs the Route controller until `shutdown` resolves.
///
/// # Errors
/// None so far: API errors are retried per Route with back-off.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> crate::Result<()> {
    let (routes, writer) = reflector::store::<Route>();
    let route_stream = reflector::reflector(
        writer,
        watcher(Api::<Route>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        backoff: crate::backoff::Backoff::default(),
        events: EventSink::spawn(client.clone(), "route-controller".to_owned()),
    });
    // A Revision or Configuration change (readiness, latest ready revision) requeues the Routes
    // of its namespace that name it.
    let by_revision = routes.clone();
    let by_configuration = routes.clone();
    // A change of `config-domain` or `config-network` requeues every Route (upstream's
    // reconcilers re-run on a config change too).
    let all = routes.clone();
    let configs = Api::<ConfigMap>::namespaced(client.clone(), SYSTEM_NAMESPACE);
    Controller::for_stream(route_stream, routes)
        .owns(Api::<CoreService>::all(client.clone()), watcher::Config::default())
        .watches(Api::<Revision>::all(client.clone()), watcher::Config::default(), move |r| {
            referring(&by_revision, &r.namespace().unwrap_or_default(), |t| {
                t.revision_name.as_deref() == Some(r.name_any().as_str())
            })
        })
        .watches(Api::<Configuration>::all(client), watcher::Config::default(), move |c| {
            referring(&by_configuration, &c.namespace().unwrap_or_default(), |t| {
                t.configuration_name.as_deref() == Some(c.name_any().as_str())
            })
        })
        .watches(configs, watcher::Config::default(), move |cm| {
            let name = cm.name_any();
            let ours = name == domain::CONFIG_NAME || name == network::CONFIG_NAME;
            let routes = if ours { all.state() } else { Vec::new() };
            routes.into_iter().map(|r| ObjectRef::from_obj(&*r)).collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(crate::log_reconcile("route"))
        .await;
    Ok(())
}

/// The Routes in `ns` with a spec target matching `pred`, or whose status routes to it.
fn referring(
    routes: &Store<Route>,
    ns: &str,
    pred: impl Fn(&TrafficTarget) -> bool,
) -> Vec<ObjectRef<Route>> {
    routes
        .state()
        .into_iter()
        .filter(|r| r.namespace().as_deref() == Some(ns))
        .filter(|r| {
            let spec = r.spec.traffic.iter().flatten();
            let status = r.status.iter().flat_map(|s| s.fields.traffic.iter().flatten());
            spec.chain(status).any(&pred)
        })
        .map(|r| ObjectRef::from_obj(&*r))
        .collect()
}

fn error_policy(route: Arc<Route>, e: &ReconcileError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&*route, e)
}

async fn reconcile(route: Arc<Route>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    ctx.backoff
        .reconcile(&*route, async {
            if route.meta().deletion_timestamp.is_none() {
                return match reconcile_pass(&route, &ctx).await {
                    // The Route (or a Revision being labelled) went away meanwhile: the
                    // deletion's own events bring what is left to do.
                    Err(ReconcileError::Kube(kube::Error::Api(s))) if s.code == 404 => {
                        Ok(Action::await_change())
                    }
                    other => other,
                };
            }
            Ok(Action::await_change())
        })
        .await
}

/// A ConfigMap's data in `knative-serving`, empty when it does not exist.
async fn config_data(client: &Client, name: &str) -> kube::Result<BTreeMap<String, String>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    Ok(api.get_opt(name).await?.and_then(|c| c.data).unwrap_or_default())
}

/// `config-network`, Knative's defaults where it is missing or does not parse.
pub(crate) async fn network(client: &Client) -> kube::Result<Network> {
    Ok(Network::from_data(&config_data(client, network::CONFIG_NAME).await?).unwrap_or_default())
}

/// Why a target could not be assigned: Unknown (waiting) or False (failed), reason, message.
struct Unassigned {
    status: &'static str,
    reason: &'static str,
    message: String,
}

/// One pass; requeued when a rollout step is due.
async fn reconcile_pass(route: &Route, ctx: &Ctx) -> Result<Action, ReconcileError> {
    let ns = route.namespace().unwrap_or_default();
    let name = route.name_any();
    // A ConfigMap that does not parse leaves Knative's defaults (upstream refuses it at its
    // webhook; Kinetic's server validates no ConfigMap).
    let domains = Domain::from_data(&config_data(&ctx.client, domain::CONFIG_NAME).await?)
        .unwrap_or_default();
    let net = Network::from_data(&config_data(&ctx.client, network::CONFIG_NAME).await?)
        .unwrap_or_default();
    let dom = domains.lookup(route.labels());
    let url = |host: String| net.url(&host);

    // The core Service named after the Route (upstream: an ExternalName Service pointing at the
    // ingress; here ClusterIP without a selector until the gateway exists).
    let services: Api<CoreService> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = services.get_opt(&name).await?;
    // What the gateway last said it routes for this Route (see `ROUTED_ANNOTATION`).
    let routed = existing
        .as_ref()
        .and_then(|s| s.annotations().get(ROUTED_ANNOTATION).cloned())
        .unwrap_or_default();
    if existing.is_none() {
        let svc: CoreService = serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": {kinetic_api::knative::ROUTE_LABEL: name},
                "ownerReferences": [controller_ref(route)],
            },
            "spec": {
                "type": "ClusterIP",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
            },
        }))
        .map_err(|source| ReconcileError::Encode { what: "a Service", source })?;
        match services.create(&PostParams::default(), &svc).await {
            Ok(_) => {
                let msg = format!("Created placeholder service {name:?}");
                ctx.events.send(EventReq::for_object(route, "Normal", "Created", msg));
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }

    // Resolve every target to a revision.
    let revs: Api<Revision> = Api::namespaced(ctx.client.clone(), &ns);
    let cfgs: Api<Configuration> = Api::namespaced(ctx.client.clone(), &ns);
    let mut resolved = Vec::new();
    // The Configuration each resolved target follows (None for a named revision).
    let mut followed: Vec<Option<String>> = Vec::new();
    let mut problem: Option<Unassigned> = None;
    let mut all_ready = true;
    // What the labeler marks as this Route's (upstream's labeler v2).
    let mut labeled = Labeled::default();
    for t in route.spec.traffic.iter().flatten() {
        let revision = match (t.revision_name.as_deref(), t.configuration_name.as_deref()) {
            (Some(r), _) if !r.is_empty() => r.to_owned(),
            (_, Some(c)) if !c.is_empty() => {
                let Some(cfg) = cfgs.get_opt(c).await? else {
                    problem.get_or_insert(Unassigned {
                        status: "False",
                        reason: condition::reason::CONFIGURATION_MISSING,
                        message: format!("Configuration {c:?} referenced in traffic not found."),
                    });
                    continue;
                };
                let st = cfg.status.clone().unwrap_or_default();
                labeled.configurations.insert(c.to_owned());
                // The latest created revision too, so it is already active when it turns
                // Ready and takes the traffic (upstream: "a smooth transition").
                if let Some(r) = st.fields.latest_created_revision_name.clone() {
                    labeled.revisions.insert(r);
                }
                match st.fields.latest_ready_revision_name.filter(|n| !n.is_empty()) {
                    Some(r) => r,
                    None => {
                        let (s, _, _) = cond_of(st.status.condition(condition::READY));
                        problem.get_or_insert(if s == "False" {
                            Unassigned {
                                status: "False",
                                reason: condition::reason::REVISION_FAILED,
                                message: format!(
                                    "Configuration {c:?} does not have any ready Revision."
                                ),
                            }
                        } else {
                            Unassigned {
                                status: "Unknown",
                                reason: condition::reason::REVISION_MISSING,
                                message: format!(
                                    "Configuration {c:?} is waiting for a Revision to become ready."
                                ),
                            }
                        });
                        continue;
                    }
                }
            }
            _ => continue,
        };
        match revs.get_opt(&revision).await? {
            None => {
                problem.get_or_insert(Unassigned {
                    status: "False",
                    reason: condition::reason::REVISION_MISSING,
                    message: format!("Revision {revision:?} referenced in traffic not found."),
                });
            }
            Some(rev) => {
                labeled.revisions.insert(revision.clone());
                let owner = rev.owner_references().iter().find(|o| o.controller == Some(true));
                if let Some(o) = owner.filter(|o| o.kind == "Configuration") {
                    labeled.configurations.insert(o.name.clone());
                }
                let (s, _, _) = cond_of(
                    rev.status.as_ref().and_then(|st| st.status.condition(condition::READY)),
                );
                // A revision gets its share only once Ready: until then the traffic stays
                // where it was (upstream's unreadyRevisionError, MarkRevisionNotReady).
                if s == "False" {
                    problem.get_or_insert(Unassigned {
                        status: "False",
                        reason: condition::reason::REVISION_FAILED,
                        message: format!("Revision {revision:?} failed to become ready."),
                    });
                } else if s != "True" {
                    problem.get_or_insert(Unassigned {
                        status: "Unknown",
                        reason: condition::reason::REVISION_MISSING,
                        message: format!("Revision {revision:?} is not yet ready."),
                    });
                }
                all_ready &= s == "True";
            }
        }
        let tag = t.tag.clone().filter(|t| !t.is_empty());
        followed.push(
            t.configuration_name
                .clone()
                .filter(|c| !c.is_empty() && t.revision_name.as_deref().is_none_or(str::is_empty)),
        );
        resolved.push(TrafficTarget {
            url: tag.as_deref().map(|tag| url(net.tag_host(tag, &name, &ns, &dom))),
            tag,
            revision_name: Some(revision),
            configuration_name: None,
            latest_revision: Some(t.revision_name.as_deref().is_none_or(str::is_empty)),
            percent: t.percent,
        });
    }

    let rollout_secs = rollout_duration(route, &net);
    let now = Timestamp::now().as_nanosecond() as i64;
    let mut next_step = 0;
    let mut rollout: Option<Rollout> = None;
    let old = route.status.clone().unwrap_or_default();
    let old_conds = old.status.conditions.clone().unwrap_or_default();
    let mut st = RouteStatus::default();
    st.status.observed_generation = route.meta().generation;
    st.status.annotations = old.status.annotations.clone();
    st.fields.url = Some(url(net.host(&name, &ns, &dom)));
    st.fields.address = Some(Addressable {
        url: Some(format!("http://{name}.{ns}.svc.{CLUSTER_DOMAIN}")),
        ..Addressable::default()
    });
    let mut conds = Vec::new();
    set_condition(
        &mut conds,
        &old_conds,
        condition::CERTIFICATE_PROVISIONED,
        "True",
        "TLSNotEnabled",
        "autoTLS is not enabled",
    );
    match &problem {
        Some(p) => {
            // Traffic stays where it was routed.
            st.fields.traffic = old.fields.traffic.clone();
            for t in [condition::ALL_TRAFFIC_ASSIGNED, condition::READY] {
                set_condition(&mut conds, &old_conds, t, p.status, p.reason, &p.message);
            }
        }
        None => {
            // With a rollout duration, a Configuration's new revision takes its share
            // gradually (upstream's traffic.Rollout): the shape to route now.
            let desired = desired_rollout(&resolved, &followed);
            let prev = old.status.annotations.as_ref().and_then(|a| a.get(ROLLOUT_ANNOTATION));
            let prev = prev.and_then(|p| Rollout::parse(p));
            let (effective, next) =
                if rollout_secs > 0.0 { desired.step(prev.as_ref(), now) } else { (desired, 0) };
            next_step = next;
            st.fields.traffic = Some(apply_rollout(resolved, &followed, &effective));
            rollout = Some(effective);
            set_condition(&mut conds, &old_conds, condition::ALL_TRAFFIC_ASSIGNED, "True", "", "");
        }
    }
    // IngressReady: the gateway routes exactly what this status says (upstream propagates
    // its Ingress's Ready, and marks it IngressNotConfigured while the Ingress has not caught
    // up with the Route).
    let hosts = route_hosts(&name, &ns, &st.fields);
    let ingress_ready = !hosts.is_empty() && routed == routed_digest(&hosts);
    if let Some(mut ro) = rollout {
        // The gateway routes the rollout's first 1 %: the step timing follows from that.
        if ingress_ready && !ro.done() {
            ro.observe_ready(now, rollout_secs);
            let due = ro.configurations.iter().map(|c| c.step_params.next_step_time);
            if let Some(due) = due.filter(|t| *t > 0).min() {
                next_step = if next_step > 0 { next_step.min(due) } else { due };
            }
        }
        let annotations = st.status.annotations.get_or_insert_with(BTreeMap::new);
        if rollout_secs > 0.0 && !ro.configurations.is_empty() {
            let text = serde_json::to_string(&ro)
                .map_err(|source| ReconcileError::Encode { what: "a rollout", source })?;
            annotations.insert(ROLLOUT_ANNOTATION.to_owned(), text);
        } else {
            annotations.remove(ROLLOUT_ANNOTATION);
        }
        if annotations.is_empty() {
            st.status.annotations = None;
        }
    }
    if ingress_ready {
        set_condition(&mut conds, &old_conds, condition::INGRESS_READY, "True", "", "");
    } else {
        set_condition(
            &mut conds,
            &old_conds,
            condition::INGRESS_READY,
            "Unknown",
            INGRESS_NOT_CONFIGURED,
            INGRESS_NOT_CONFIGURED_MESSAGE,
        );
    }
    // Ready: every target assigned to a Ready revision, and the gateway routes them, so the
    // first request after Ready succeeds.
    if problem.is_none() {
        if !all_ready {
            set_condition(
                &mut conds,
                &old_conds,
                condition::READY,
                "Unknown",
                condition::reason::REVISION_MISSING,
                "A Revision referenced in traffic is not ready yet.",
            );
        } else if !ingress_ready {
            set_condition(
                &mut conds,
                &old_conds,
                condition::READY,
                "Unknown",
                INGRESS_NOT_CONFIGURED,
                INGRESS_NOT_CONFIGURED_MESSAGE,
            );
        } else {
            set_condition(&mut conds, &old_conds, condition::READY, "True", "", "");
        }
    }
    st.status.conditions = Some(conds);
    if route.status.as_ref() != Some(&st) {
        let api: Api<Route> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status_patch(&st)?)).await?;
    }
    // Every revision the status routes is this Route's too (mid-rollout: the older ones).
    for t in st.fields.traffic.iter().flatten() {
        labeled.revisions.extend(t.revision_name.clone());
    }
    sync_labels(&revs, &cfgs, &name, &labeled).await?;
    Ok(match u64::try_from(next_step - now) {
        Ok(wait) if next_step > 0 => Action::requeue(Duration::from_nanos(wait.max(1_000_000))),
        _ => Action::await_change(),
    })
}

/// The rollout duration in seconds: the Route's `serving.knative.dev/rollout-duration`
/// annotation (a duration such as `120s`, `2m`; upstream's webhook validates it), else
/// `config-network`'s `rollout-duration`.
pub(crate) fn rollout_duration(route: &Route, net: &Network) -> f64 {
    let parse = |v: &str| -> Option<f64> {
        let v = v.trim();
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
        let n: f64 = num.parse().ok()?;
        let scale = match unit {
            "" | "s" => 1.0,
            "ms" => 0.001,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        Some(n * scale).filter(|d| *d >= 0.0)
    };
    route
        .annotations()
        .get(ROLLOUT_DURATION_ANNOTATION)
        .and_then(|v| parse(v))
        .unwrap_or(net.rollout_duration_secs as f64)
}

/// Each Configuration target with its latest ready revision alone at its share: the shape a
/// rollout moves towards.
fn desired_rollout(resolved: &[TrafficTarget], followed: &[Option<String>]) -> Rollout {
    let mut configurations: Vec<ConfigurationRollout> = resolved
        .iter()
        .zip(followed)
        .filter_map(|(t, c)| {
            let percent = t.percent.unwrap_or(0);
            Some(ConfigurationRollout {
                configuration_name: c.clone()?,
                tag: t.tag.clone().unwrap_or_default(),
                percent,
                revisions: t
                    .revision_name
                    .clone()
                    .filter(|_| percent > 0)
                    .map(|revision_name| RevisionRollout { revision_name, percent })
                    .into_iter()
                    .collect(),
                step_params: RolloutParams::default(),
            })
        })
        .collect();
    configurations
        .sort_by(|a, b| (&a.tag, &a.configuration_name).cmp(&(&b.tag, &b.configuration_name)));
    Rollout { configurations }
}

/// The traffic with each Configuration target split as `rollout` says: older revisions
/// (`latestRevision: false`, untagged) first, the newest last with the tag.
fn apply_rollout(
    resolved: Vec<TrafficTarget>,
    followed: &[Option<String>],
    rollout: &Rollout,
) -> Vec<TrafficTarget> {
    let mut out = Vec::new();
    for (t, c) in resolved.into_iter().zip(followed) {
        let tag = t.tag.clone().unwrap_or_default();
        let ro = c.as_ref().and_then(|c| {
            rollout.configurations.iter().find(|r| &r.configuration_name == c && r.tag == tag)
        });
        match ro {
            Some(ro) if ro.revisions.len() > 1 => {
                let n = ro.revisions.len();
                for (i, r) in ro.revisions.iter().enumerate() {
                    let newest = i == n - 1;
                    out.push(TrafficTarget {
                        tag: if newest { t.tag.clone() } else { None },
                        url: if newest { t.url.clone() } else { None },
                        revision_name: Some(r.revision_name.clone()),
                        configuration_name: None,
                        latest_revision: Some(newest),
                        percent: Some(r.percent),
                    });
                }
            }
            _ => out.push(t),
        }
    }
    out
}

/// The Revisions and Configurations a Route references (its spec and status traffic, and
/// each followed Configuration's latest created revision).
#[derive(Debug, Default)]
struct Labeled {
    revisions: BTreeSet<String>,
    configurations: BTreeSet<String>,
}

/// Upstream's labeler v2 (`pkg/reconciler/labeler`): every Revision and Configuration the
/// Route references lists it in its `serving.knative.dev/routes` annotation (sorted,
/// comma-separated), and those that no longer are lose it. A Revision's
/// `serving.knative.dev/routingState` label follows: `active` while some Route lists it,
/// `reserve` once none does (the autoscaler may then scale it to zero), with
/// `serving.knative.dev/routingStateModified` set at each change. (`pending`, for a revision
/// no Route has referenced yet, is the Configuration controller's to set at creation.)
/// A deleted Route's names are not cleaned up: upstream does that in a finalizer.
async fn sync_labels(
    revs: &Api<Revision>,
    cfgs: &Api<Configuration>,
    route: &str,
    want: &Labeled,
) -> Result<(), ReconcileError> {
    for rev in revs.list(&ListParams::default()).await?.items {
        if let Some(patch) =
            label_patch(&rev, route, want.revisions.contains(&rev.name_any()), true)
        {
            revs.patch(&rev.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
    }
    for cfg in cfgs.list(&ListParams::default()).await?.items {
        let listed = want.configurations.contains(&cfg.name_any());
        if let Some(patch) = label_patch(&cfg, route, listed, false) {
            cfgs.patch(&cfg.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
    }
    Ok(())
}

/// The merge patch that makes `obj` list `route` in its routes annotation (or not), and, with
/// `routing_state`, sets its routing state to match; `None` when nothing changes
/// (upstream's `makeMetadataPatch`).
fn label_patch<K: kube::Resource>(
    obj: &K,
    route: &str,
    listed: bool,
    routing_state: bool,
) -> Option<serde_json::Value> {
    let mut routes: BTreeSet<&str> = obj
        .annotations()
        .get(ROUTES_ANNOTATION)
        .map(|v| v.split(',').filter(|r| !r.is_empty()).collect())
        .unwrap_or_default();
    let changed = if listed { routes.insert(route) } else { routes.remove(route) };
    let mut labels = serde_json::Map::new();
    let mut annotations = serde_json::Map::new();
    if changed {
        let value =
            (!routes.is_empty()).then(|| routes.iter().copied().collect::<Vec<_>>().join(","));
        annotations.insert(ROUTES_ANNOTATION.to_owned(), json!(value));
    }
    if routing_state {
        let want = if routes.is_empty() { routing_state::RESERVE } else { routing_state::ACTIVE };
        if obj.labels().get(ROUTING_STATE_LABEL).map(String::as_str) != Some(want) {
            labels.insert(ROUTING_STATE_LABEL.to_owned(), json!(want));
            // RFC 3339 in UTC, seconds (upstream's RoutingStateModifiedString).
            let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
            annotations.insert(ROUTING_STATE_MODIFIED_ANNOTATION.to_owned(), json!(now));
        }
    }
    if labels.is_empty() && annotations.is_empty() {
        return None;
    }
    let mut meta = serde_json::Map::new();
    if !labels.is_empty() {
        meta.insert("labels".to_owned(), labels.into());
    }
    if !annotations.is_empty() {
        meta.insert("annotations".to_owned(), annotations.into());
    }
    Some(json!({ "metadata": meta }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(labels: serde_json::Value, annotations: serde_json::Value) -> Revision {
        serde_json::from_value(json!({
            "apiVersion": "serving.knative.dev/v1", "kind": "Revision",
            "metadata": {"name": "r", "namespace": "default", "labels": labels,
                         "annotations": annotations},
            "spec": {"containers": [{"image": "a"}]},
        }))
        .unwrap()
    }

    #[test]
    fn a_routed_revision_becomes_active_and_reserve_once_no_route_lists_it() {
        // New to the Route: listed, active.
        let pending = revision(json!({ROUTING_STATE_LABEL: "pending"}), json!({}));
        let p = label_patch(&pending, "hello", true, true).unwrap();
        assert_eq!(p["metadata"]["labels"][ROUTING_STATE_LABEL], "active");
        assert_eq!(p["metadata"]["annotations"][ROUTES_ANNOTATION], "hello");
        assert!(p["metadata"]["annotations"][ROUTING_STATE_MODIFIED_ANNOTATION].is_string());
        // Already so: nothing to patch.
        let active = revision(
            json!({ROUTING_STATE_LABEL: "active"}),
            json!({ROUTES_ANNOTATION: "hello,other"}),
        );
        assert_eq!(label_patch(&active, "hello", true, true), None);
        // Dropped by one of two Routes: still active, the list shrinks.
        let p = label_patch(&active, "hello", false, true).unwrap();
        assert_eq!(p, json!({"metadata": {"annotations": {ROUTES_ANNOTATION: "other"}}}));
        // Dropped by the last: the annotation goes, reserve.
        let last =
            revision(json!({ROUTING_STATE_LABEL: "active"}), json!({ROUTES_ANNOTATION: "hello"}));
        let p = label_patch(&last, "hello", false, true).unwrap();
        assert_eq!(p["metadata"]["annotations"][ROUTES_ANNOTATION], serde_json::Value::Null);
        assert_eq!(p["metadata"]["labels"][ROUTING_STATE_LABEL], "reserve");
        // Never listed and not wanted: untouched (a pending revision stays pending).
        assert_eq!(label_patch(&pending, "hello", false, false), None);
        // Configurations get the annotation only.
        let p = label_patch(&pending, "hello", true, false).unwrap();
        assert_eq!(p, json!({"metadata": {"annotations": {ROUTES_ANNOTATION: "hello"}}}));
    }

    #[test]
    fn a_rollout_splits_a_configuration_target_and_leaves_named_revisions_alone() {
        let t = |rev: &str, percent, tag: Option<&str>| TrafficTarget {
            tag: tag.map(Into::into),
            revision_name: Some(rev.into()),
            configuration_name: None,
            latest_revision: Some(tag.is_none()),
            percent: Some(percent),
            url: tag.map(|t| format!("http://{t}-hello.default.example.com")),
        };
        let resolved = vec![t("hello-00003", 80, None), t("pinned", 20, Some("old"))];
        let followed = vec![Some("hello".to_owned()), None];
        let desired = desired_rollout(&resolved, &followed);
        assert_eq!(desired.configurations.len(), 1);
        let mut ro = desired.clone();
        ro.configurations[0].revisions = vec![
            RevisionRollout { revision_name: "hello-00002".into(), percent: 79 },
            RevisionRollout { revision_name: "hello-00003".into(), percent: 1 },
        ];
        let out = apply_rollout(resolved.clone(), &followed, &ro);
        let got: Vec<_> = out
            .iter()
            .map(|t| (t.revision_name.as_deref().unwrap(), t.percent, t.latest_revision))
            .collect();
        assert_eq!(
            got,
            [
                ("hello-00002", Some(79), Some(false)),
                ("hello-00003", Some(1), Some(true)),
                ("pinned", Some(20), Some(false))
            ]
        );
        assert_eq!(apply_rollout(resolved.clone(), &followed, &desired), resolved);
    }

    #[test]
    fn the_rollout_duration_annotation_takes_go_durations_over_config_network() {
        let route = |v: Option<&str>| -> Route {
            let mut r: Route = serde_json::from_value(json!({
                "apiVersion": "serving.knative.dev/v1", "kind": "Route",
                "metadata": {"name": "hello", "namespace": "default"}, "spec": {},
            }))
            .unwrap();
            if let Some(v) = v {
                r.annotations_mut().insert(ROLLOUT_DURATION_ANNOTATION.into(), v.into());
            }
            r
        };
        let net = Network { rollout_duration_secs: 30, ..Network::default() };
        assert_eq!(rollout_duration(&route(None), &net), 30.0);
        assert_eq!(rollout_duration(&route(Some("380s")), &net), 380.0);
        assert_eq!(rollout_duration(&route(Some("2m")), &net), 120.0);
        assert_eq!(rollout_duration(&route(Some("0")), &net), 0.0);
        assert_eq!(rollout_duration(&route(Some("soon")), &net), 30.0);
    }
}
