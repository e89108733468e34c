//! `kinetic serve status ksvc/NAME`: one Knative Service at a glance (issue 11, part 7): its
//! URL and readiness, and per revision its traffic share and tag, ready/desired pods (the
//! PodAutoscaler's `actualScale`/`desiredScale`, else the Revision's replicas), the requests in
//! flight at the gateways right now (and how many of them are held), and the autoscaler's mode
//! and reason (the PodAutoscaler's `status.decider`).
//!
//! The in-flight counts come from the gateways' stats endpoints (registered in
//! `knative-serving`); when none answers, the column shows `-` and the header says so. The
//! table is a pure function of the objects ([`render`]), tested with a snapshot.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context as _, bail};
use kinetic_api::knative::SERVICE_LABEL;
use kinetic_api::knative::podautoscaler::PodAutoscaler;
use kinetic_api::knative::revision::Revision;
use kinetic_api::knative::service::Service;
use kinetic_controllers::serving_autoscaler::{GatewayRevision, Load, gateway_load};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt as _};

#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum ServeCmd {
    /// Show a Knative Service: URL, each revision's traffic, pods, requests in flight and the
    /// autoscaler's mode
    Status {
        /// `ksvc/NAME` (or `kservice/NAME`, `service/NAME`, or just NAME)
        target: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
}

/// The Service's name from `ksvc/NAME` and its synonyms.
fn parse_target(target: &str) -> anyhow::Result<String> {
    let name = match target.split_once('/') {
        None => target,
        Some((
            "ksvc" | "kservice" | "service" | "services" | "services.serving.knative.dev",
            name,
        )) => name,
        Some((kind, _)) => bail!("{kind:?} is not a Knative Service: use ksvc/NAME"),
    };
    if name.is_empty() {
        bail!("no Service name in {target:?}: use ksvc/NAME");
    }
    Ok(name.to_owned())
}

/// What the gateways said.
pub struct Gateways {
    pub load: BTreeMap<GatewayRevision, Load>,
    pub answered: usize,
    pub registered: usize,
}

/// Prints the status of the Service `target` in `namespace`.
pub async fn run(client: Client, cmd: ServeCmd) -> anyhow::Result<()> {
    let ServeCmd::Status { target, namespace } = cmd;
    let name = parse_target(&target)?;
    let svc = Api::<Service>::namespaced(client.clone(), &namespace)
        .get_opt(&name)
        .await
        .with_context(|| format!("getting ksvc {namespace}/{name}"))?;
    let Some(svc) = svc else {
        bail!("ksvc {name:?} not found in namespace {namespace:?}");
    };
    let revisions = Api::<Revision>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default().labels(&format!("{SERVICE_LABEL}={name}")))
        .await
        .context("listing the Service's revisions")?
        .items;
    let pas: BTreeMap<String, PodAutoscaler> =
        Api::<PodAutoscaler>::namespaced(client.clone(), &namespace)
            .list(&ListParams::default().labels(&format!("{SERVICE_LABEL}={name}")))
            .await
            // A cluster without the PodAutoscaler CRD: the Revisions' own counts are shown.
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.name_any(), p))
            .collect();
    let gateways = match gateway_load(&client).await {
        Ok((load, answered, registered)) => Gateways { load, answered, registered },
        Err(e) => {
            tracing::debug!(error = %e, "listing the gateways");
            Gateways { load: BTreeMap::new(), answered: 0, registered: 0 }
        }
    };
    let out = render(&svc, &revisions, &pas, &gateways);
    #[allow(clippy::print_stdout)]
    {
        print!("{out}");
    }
    Ok(())
}

fn ready_of(conds: Option<&Vec<kinetic_api::knative::Condition>>) -> (String, String) {
    conds
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
        .unwrap_or_else(|| ("Unknown".into(), String::new()))
}

/// Aligns `rows` (the first is the header) in columns two spaces apart; the last column is not
/// padded.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|i| rows.iter().map(|r| r.get(i).map_or(0, |c| c.chars().count())).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<w$}  ", w = width[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The status as printed: a header block and one row per revision (routed ones first, in
/// the Route's order, then the others newest first).
pub fn render(
    svc: &Service,
    revisions: &[Revision],
    pas: &BTreeMap<String, PodAutoscaler>,
    gateways: &Gateways,
) -> String {
    let ns = svc.namespace().unwrap_or_default();
    let st = svc.status.clone().unwrap_or_default();
    let (ready, reason) = ready_of(st.status.conditions.as_ref());
    let mut out = String::new();
    let _ = writeln!(out, "Service:  {}/{}", ns, svc.name_any());
    let _ = writeln!(out, "URL:      {}", st.route.url.as_deref().unwrap_or("-"));
    let ready_line = if reason.is_empty() { ready } else { format!("{ready} ({reason})") };
    let _ = writeln!(out, "Ready:    {ready_line}");
    let gw = if gateways.registered == 0 {
        "none registered: in-flight requests unknown".to_owned()
    } else {
        format!("{} of {} answered", gateways.answered, gateways.registered)
    };
    let _ = writeln!(out, "Gateways: {gw}");
    out.push('\n');

    // (revision, percent, tags)
    let mut order: Vec<(String, i64, Vec<String>)> = Vec::new();
    for t in st.route.traffic.iter().flatten() {
        let Some(name) = t.revision_name.clone() else { continue };
        let pct = t.percent.unwrap_or(0);
        match order.iter_mut().find(|(n, _, _)| *n == name) {
            Some(e) => {
                e.1 += pct;
                e.2.extend(t.tag.clone());
            }
            None => order.push((name, pct, t.tag.iter().cloned().collect())),
        }
    }
    let mut rest: Vec<&Revision> =
        revisions.iter().filter(|r| !order.iter().any(|(n, _, _)| *n == r.name_any())).collect();
    rest.sort_by_key(|r| std::cmp::Reverse(r.name_any()));
    order.extend(rest.into_iter().map(|r| (r.name_any(), 0, Vec::new())));

    let mut rows = vec![
        ["REVISION", "TRAFFIC", "TAGS", "READY", "PODS", "IN-FLIGHT", "MODE", "REASON"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for (name, pct, tags) in order {
        let rev = revisions.iter().find(|r| r.name_any() == name);
        let rst = rev.and_then(|r| r.status.clone()).unwrap_or_default();
        let (rready, rreason) = ready_of(rst.status.conditions.as_ref());
        let pa = pas.get(&name).and_then(|p| p.status.clone());
        let show = |v: Option<i32>| v.filter(|v| *v >= 0).map_or("-".to_owned(), |v| v.to_string());
        let (actual, desired) = match &pa {
            Some(p) if p.desired_scale.is_some() => (p.actual_scale, p.desired_scale),
            _ => (rst.actual_replicas, rst.desired_replicas),
        };
        let pods = format!("{}/{}", show(actual), show(desired));
        let key = GatewayRevision::new(ns.clone(), name.clone());
        let inflight = if gateways.answered == 0 {
            "-".to_owned()
        } else {
            let l = gateways.load.get(&key).copied().unwrap_or_default();
            if l.held > 0 {
                format!("{} ({} held)", l.requests, l.held)
            } else {
                l.requests.to_string()
            }
        };
        let decider = pa.as_ref().and_then(|p| p.decider.clone());
        let (mode, why) = match decider {
            Some(d) => (d.mode, d.reason),
            None => {
                ("-".to_owned(), if rreason.is_empty() { String::new() } else { rreason.clone() })
            }
        };
        let tags = if tags.is_empty() { "-".to_owned() } else { tags.join(",") };
        rows.push(vec![
            name,
            format!("{pct}%"),
            tags,
            rready,
            pods,
            inflight,
            mode,
            if why.is_empty() { "-".to_owned() } else { why },
        ]);
    }
    out.push_str(&table(&rows));
    out
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use serde_json::json;

    use super::*;

    #[test]
    fn targets_name_a_knative_service() {
        assert_eq!(parse_target("ksvc/hello").unwrap(), "hello");
        assert_eq!(parse_target("hello").unwrap(), "hello");
        assert_eq!(parse_target("services.serving.knative.dev/hello").unwrap(), "hello");
        let e = parse_target("deploy/hello").unwrap_err().to_string();
        assert_eq!(e, "\"deploy\" is not a Knative Service: use ksvc/NAME");
        assert!(parse_target("ksvc/").is_err());
    }

    #[test]
    fn the_table_shows_traffic_pods_load_and_the_autoscalers_mode() {
        let svc: Service = serde_json::from_value(json!({
            "apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": "hello", "namespace": "default"},
            "spec": {"template": {"spec": {"containers": [{"image": "x"}]}}},
            "status": {
                "url": "http://hello.default.example.com",
                "conditions": [{"type": "Ready", "status": "True"}],
                "traffic": [
                    {"revisionName": "hello-00002", "percent": 80, "latestRevision": true},
                    {"revisionName": "hello-00001", "percent": 20, "tag": "old"},
                ],
            },
        }))
        .unwrap();
        let rev = |name: &str, actual: i32, desired: i32| -> Revision {
            serde_json::from_value(json!({
                "apiVersion": "serving.knative.dev/v1", "kind": "Revision",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"containers": [{"image": "x"}]},
                "status": {"conditions": [{"type": "Ready", "status": "True"}],
                    "actualReplicas": actual, "desiredReplicas": desired},
            }))
            .unwrap()
        };
        let pa: PodAutoscaler = serde_json::from_value(json!({
            "apiVersion": "autoscaling.internal.knative.dev/v1alpha1", "kind": "PodAutoscaler",
            "metadata": {"name": "hello-00002", "namespace": "default"},
            "spec": {"scaleTargetRef": {"name": "hello-00002-deployment"}, "protocolType": "http1"},
            "status": {"desiredScale": 3, "actualScale": 2, "decider": {
                "mode": "Panic", "reason": "panic: 9.0 concurrent requests over the last 6s need 3 pods, at least 200% of the 1 ready",
                "metric": "concurrency", "target": 3.0, "observedStableValue": 2.0,
                "observedPanicValue": 9.0, "excessBurstCapacity": -200, "gateways": 2}},
        }))
        .unwrap();
        let revisions =
            [rev("hello-00001", 1, 1), rev("hello-00002", 2, 3), rev("hello-00003", 0, 0)];
        let pas = BTreeMap::from([("hello-00002".to_owned(), pa)]);
        let load = BTreeMap::from([(
            GatewayRevision::new("default", "hello-00002"),
            Load { requests: 9, held: 4 },
        )]);
        let gateways = Gateways { load, answered: 2, registered: 2 };
        expect![[r#"
            Service:  default/hello
            URL:      http://hello.default.example.com
            Ready:    True
            Gateways: 2 of 2 answered

            REVISION     TRAFFIC  TAGS  READY  PODS  IN-FLIGHT   MODE   REASON
            hello-00002  80%      -     True   2/3   9 (4 held)  Panic  panic: 9.0 concurrent requests over the last 6s need 3 pods, at least 200% of the 1 ready
            hello-00001  20%      old   True   1/1   0           -      -
            hello-00003  0%       -     True   0/0   0           -      -
        "#]].assert_eq(&render(&svc, &revisions, &pas, &gateways));
    }
}
