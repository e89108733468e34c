//! `kinetic trace`: where the milliseconds of a pod's start went, read back from the
//! [`Timeline`] the node agent keeps in the `kinetic.dev/timeline` annotation (and, before it
//! has written one, from the scheduler's queued-at/scheduled-at annotations).
//!
//! The rendering functions are pure (`Timeline` in, text out) so they are tested with
//! snapshots; [`run`] only fetches pods and prints.

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::Context as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kinetic_api::timeline::{self, Timeline};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt as _};

/// Width of the waterfall chart, labels included.
const WIDTH: usize = 80;

#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum TraceCmd {
    /// Show where one pod's start-up time went: a table of phases and a waterfall
    Pod {
        /// The pod's name
        name: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// Summarise the start-up phases of many pods: p50/p90/p99/max per phase
    Pods {
        /// Label selector, as kubectl's -l (for example app=web,tier!=cache)
        #[arg(short = 'l', long)]
        selector: Option<String>,
        #[arg(short = 'n', long, default_value = "default", conflicts_with = "all_namespaces")]
        namespace: String,
        /// Pods of every namespace
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
}

/// Runs `kinetic trace …` and prints the result.
///
/// # Errors
/// The API cannot be reached, the pod does not exist, or its timeline annotation is not JSON.
pub async fn run(client: Client, cmd: TraceCmd) -> anyhow::Result<()> {
    let out = match cmd {
        TraceCmd::Pod { name, namespace } => {
            let api: Api<Pod> = Api::namespaced(client, &namespace);
            let pod = match api.get(&name).await {
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    anyhow::bail!("pod {namespace}/{name} not found")
                }
                r => r.with_context(|| format!("getting pod {namespace}/{name}"))?,
            };
            let tl = timeline_of(&pod)?;
            format!("pod {namespace}/{name}\n\n{}", render_pod(&tl))
        }
        TraceCmd::Pods { selector, namespace, all_namespaces } => {
            let api: Api<Pod> =
                if all_namespaces { Api::all(client) } else { Api::namespaced(client, &namespace) };
            let mut lp = ListParams::default();
            if let Some(s) = &selector {
                lp = lp.labels(s);
            }
            let pods = api.list(&lp).await.context("listing pods")?;
            let timelines =
                pods.items.iter().map(timeline_of).collect::<anyhow::Result<Vec<_>>>()?;
            render_summary(&timelines)
        }
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes()).context("writing to stdout")?;
    Ok(())
}

/// The pod's timeline: the node agent's annotation when present, completed with what the
/// scheduler recorded and the pod's creation time.
///
/// # Errors
/// The annotation is not a timeline.
pub fn timeline_of(pod: &Pod) -> anyhow::Result<Timeline> {
    let ann = pod.annotations();
    let mut tl: Timeline = match ann.get(timeline::ANNOTATION) {
        Some(s) => serde_json::from_str(s).with_context(|| {
            format!(
                "pod {}/{}: bad {} annotation",
                pod.namespace().unwrap_or_default(),
                pod.name_any(),
                timeline::ANNOTATION
            )
        })?,
        None => Timeline::default(),
    };
    let stamp = |key: &str| ann.get(key).and_then(|s| s.parse::<Timestamp>().ok());
    tl.created = tl
        .created
        .or_else(|| stamp(timeline::QUEUED_AT))
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0));
    tl.scheduled = tl.scheduled.or_else(|| stamp(timeline::SCHEDULED_AT));
    Ok(tl)
}

/// One row of the per-pod breakdown: a span between two instants (either may be unknown).
struct Phase {
    label: String,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    detail: String,
}

fn phases(tl: &Timeline) -> Vec<Phase> {
    let phase =
        |label: &str, from, to| Phase { label: label.to_owned(), from, to, detail: String::new() };
    let mut out = vec![
        phase("schedule", tl.created, tl.scheduled),
        phase("node pickup", tl.scheduled, tl.observed),
        Phase {
            label: "sandbox".to_owned(),
            from: tl.observed,
            to: tl.sandbox_ready,
            detail: if tl.ready_sandbox { "ready sandbox".to_owned() } else { String::new() },
        },
    ];
    for c in &tl.containers {
        let name = if c.init { format!("{} (init)", c.name) } else { c.name.clone() };
        let detail = if c.cache_hit {
            "cached".to_owned()
        } else {
            // The download rate over the whole pull (issue 5: bytes and rate in the timeline).
            let secs = match (c.pull_started, c.pull_finished) {
                (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
                _ => 0.0,
            };
            if secs > 0.0 && c.pull_bytes > 0 {
                let rate = (c.pull_bytes as f64 / secs) as u64;
                format!("{} pulled at {}/s", bytes(c.pull_bytes), bytes(rate))
            } else {
                format!("{} pulled", bytes(c.pull_bytes))
            }
        };
        if c.pull_started.is_some() || c.pull_finished.is_some() {
            out.push(Phase {
                label: format!("{name}: pull"),
                from: c.pull_started,
                to: c.pull_finished,
                detail,
            });
        }
        out.push(phase(&format!("{name}: create"), create_from(c, tl), c.created));
        out.push(phase(&format!("{name}: start"), c.created, c.started));
        let ready = if c.init { "done" } else { "ready" };
        out.push(phase(&format!("{name}: {ready}"), c.started, c.ready));
    }
    out
}

/// Creation starts once the image is there; with no pull recorded, once the sandbox is.
fn create_from(c: &timeline::ContainerTimeline, tl: &Timeline) -> Option<Timestamp> {
    match (c.pull_started, c.pull_finished) {
        (_, Some(done)) => Some(done),
        (Some(_), None) => None,
        (None, None) => tl.sandbox_ready,
    }
}

fn ms(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64() * 1000.0
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

/// The breakdown of one pod: a table of phases (start offset and duration in ms since the pod
/// was created) and a waterfall chart of the same phases.
pub fn render_pod(tl: &Timeline) -> String {
    let mut out = String::new();
    let Some(created) = tl.created else {
        return "no timeline: the pod has no creation time or scheduler annotations\n".to_owned();
    };
    let mut ph = phases(tl);
    ph.push(Phase {
        label: "total".to_owned(),
        from: tl.created,
        to: tl.ready,
        detail: String::new(),
    });
    let rows: Vec<Vec<String>> = ph
        .iter()
        .map(|p| {
            vec![
                p.label.clone(),
                fmt_ms(p.from.map(|f| ms(created, f))),
                fmt_ms(p.from.zip(p.to).map(|(f, t)| ms(f, t))),
                p.detail.clone(),
            ]
        })
        .collect();
    out +=
        &table(&["PHASE", "START ms", "DURATION ms", "DETAIL"], &[false, true, true, false], &rows);
    if tl.ready.is_none() {
        let waiting = if tl.scheduled.is_none() {
            "it is not scheduled"
        } else if tl.observed.is_none() {
            "its node has not picked it up"
        } else if tl.sandbox_ready.is_none() {
            "its sandbox is not ready"
        } else {
            "its containers are not all ready"
        };
        let _ = writeln!(
            out,
            "\nthe pod is not ready yet: {waiting} (phases without a duration have not ended)"
        );
    }

    out += &render_cpu(tl);
    out += &render_restart(tl);

    // The waterfall: every phase with both ends, on one time axis.
    let bars: Vec<(&str, f64, f64)> = ph
        .iter()
        .filter_map(|p| Some((p.label.as_str(), ms(created, p.from?), ms(created, p.to?))))
        .collect();
    let end = bars.iter().map(|b| b.2).fold(0.0_f64, f64::max);
    if bars.is_empty() || end <= 0.0 {
        return out;
    }
    let label_w = bars.iter().map(|b| b.0.chars().count()).max().unwrap_or(0);
    let chart_w = WIDTH.saturating_sub(label_w + 2).max(10);
    let col = |v: f64| ((v / end) * chart_w as f64).round().clamp(0.0, chart_w as f64) as usize;
    out += "\n";
    let axis_end = format!("{end:.1} ms");
    let _ = writeln!(out, "{:label_w$}  0 ms{:>w$}", "", axis_end, w = chart_w.saturating_sub(4));
    for (label, from, to) in &bars {
        let (a, b) = (col(*from), col(*to).max(col(*from)));
        let bar = if b > a { "#".repeat(b - a) } else { "|".to_owned() };
        let _ = writeln!(out, "{label:label_w$}  {}{bar}", " ".repeat(a.min(chart_w - 1)));
    }
    out
}

/// The pod's latest in-place container restart, step by step in the agent (issue 14); empty
/// when it had none.
fn render_restart(tl: &Timeline) -> String {
    let Some(r) = &tl.restart else { return String::new() };
    let Some(seen) = r.observed else { return String::new() };
    let steps = [
        ("SIGTERM sent", r.signalled),
        ("old run's exit seen", r.exited),
        ("image + config", r.configured),
        ("rootfs mounted", r.rootfs),
        ("config.json written", r.bundle),
        ("new init started", r.started),
        ("Running written", r.reported),
        ("ready", r.ready),
    ];
    let mut prev = seen;
    let mut rows = Vec::new();
    for (label, at) in steps {
        let Some(at) = at else { continue };
        // `Running written` and `ready` both follow the start; each is timed from it.
        let from = if matches!(label, "Running written" | "ready") {
            r.started.unwrap_or(prev)
        } else {
            prev
        };
        rows.push(vec![label.to_owned(), fmt_ms(Some(ms(seen, at))), fmt_ms(Some(ms(from, at)))]);
        if !matches!(label, "Running written" | "ready") {
            prev = at;
        }
    }
    let mut out = format!(
        "\nlatest in-place restart: container {} (run {}), seen at {seen}{}\n",
        r.container,
        r.attempt,
        r.started
            .map(|s| format!("; {:.1} ms in the agent to its start", ms(seen, s)))
            .unwrap_or_default()
    );
    out += &table(&["STEP", "AT ms", "STEP ms"], &[false, true, true], &rows);
    out
}

/// The CPU time the start cost, by step and by process (issue 14: the agent's own threads,
/// the network plugins, each container's shim, `runc run` and the container's init up to the
/// report that it runs); empty when the agent recorded none.
fn render_cpu(tl: &Timeline) -> String {
    let mut rows: Vec<(String, timeline::CpuTime)> = Vec::new();
    if let Some(c) = tl.sandbox_cpu {
        rows.push(("sandbox".to_owned(), c));
    }
    for c in &tl.containers {
        if let Some(cpu) = c.cpu {
            let name = if c.init { format!("{} (init)", c.name) } else { c.name.clone() };
            rows.push((format!("{name}: start"), cpu));
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    let total = rows.iter().fold(timeline::CpuTime::default(), |a, (_, c)| timeline::CpuTime {
        agent_us: a.agent_us + c.agent_us,
        network_us: a.network_us + c.network_us,
        shim_us: a.shim_us + c.shim_us,
        runc_us: a.runc_us + c.runc_us,
        init_us: a.init_us + c.init_us,
    });
    rows.push(("total".to_owned(), total));
    let cell =
        |us: u64| if us == 0 { "-".to_owned() } else { format!("{:.1}", us as f64 / 1000.0) };
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|(label, c)| {
            vec![
                label.clone(),
                cell(c.agent_us),
                cell(c.network_us),
                cell(c.shim_us),
                cell(c.runc_us),
                cell(c.init_us),
                cell(c.total_us()),
            ]
        })
        .collect();
    let mut out = "\n".to_owned();
    out += &table(
        &["CPU ms", "AGENT", "NETWORK", "SHIM", "RUNC", "INIT", "ALL"],
        &[false, true, true, true, true, true, true],
        &rows,
    );
    out
}

/// The phases summarised across pods. Container phases add up the pod's containers; the last
/// row is the CPU time of the start (all processes, sandbox and containers), not a duration.
const SUMMARY_PHASES: [&str; 9] = [
    "schedule",
    "node pickup",
    "sandbox",
    "pull",
    "create",
    "start",
    "ready",
    "total",
    "cpu (all processes)",
];

/// Per pod, the duration of each summary phase in ms (`None` when not known).
fn summary_durations(tl: &Timeline) -> [Option<f64>; 9] {
    let span = |a: Option<Timestamp>, b: Option<Timestamp>| a.zip(b).map(|(a, b)| ms(a, b));
    let sum = |f: &dyn Fn(&timeline::ContainerTimeline) -> Option<f64>| {
        let v: Vec<f64> = tl.containers.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| v.iter().sum())
    };
    let last_started = tl.containers.iter().filter(|c| !c.init).filter_map(|c| c.started).max();
    [
        span(tl.created, tl.scheduled),
        span(tl.scheduled, tl.observed),
        span(tl.observed, tl.sandbox_ready),
        sum(&|c| span(c.pull_started, c.pull_finished)),
        sum(&|c| span(create_from(c, tl), c.created)),
        sum(&|c| span(c.created, c.started)),
        // From the last app container's start to the pod's Ready: probes and readiness gates.
        span(last_started, tl.ready),
        span(tl.created, tl.ready),
        cpu_ms(tl),
    ]
}

/// The CPU time of the pod's start in ms, when the agent recorded one.
fn cpu_ms(tl: &Timeline) -> Option<f64> {
    let parts: Vec<u64> = tl
        .sandbox_cpu
        .iter()
        .chain(tl.containers.iter().filter_map(|c| c.cpu.as_ref()))
        .map(timeline::CpuTime::total_us)
        .collect();
    (!parts.is_empty()).then(|| parts.iter().sum::<u64>() as f64 / 1000.0)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50/p90/p99/max of each phase across the pods, with how many pods each figure covers.
pub fn render_summary(tls: &[Timeline]) -> String {
    let ready = tls.iter().filter(|t| t.ready.is_some()).count();
    let mut out = format!("{} pods, {ready} ready\n", tls.len());
    if tls.is_empty() {
        return out;
    }
    out += "\n";
    let per_pod: Vec<[Option<f64>; 9]> = tls.iter().map(summary_durations).collect();
    let rows: Vec<Vec<String>> = SUMMARY_PHASES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut v: Vec<f64> = per_pod.iter().filter_map(|d| d[i]).collect();
            v.sort_by(f64::total_cmp);
            let mut row = vec![(*name).to_owned(), v.len().to_string()];
            if v.is_empty() {
                row.extend(["-", "-", "-", "-"].map(str::to_owned));
            } else {
                for p in [50.0, 90.0, 99.0, 100.0] {
                    row.push(format!("{:.1}", percentile(&v, p)));
                }
            }
            row
        })
        .collect();
    out += &table(
        &["PHASE (ms)", "PODS", "P50", "P90", "P99", "MAX"],
        &[false, true, true, true, true, true],
        &rows,
    );
    out
}

/// Columns separated by three spaces, numbers right-aligned; no trailing spaces.
fn table(headers: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for r in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(&widths).enumerate() {
            if i > 0 {
                line += "   ";
            }
            if right.get(i).copied().unwrap_or(false) {
                let _ = write!(line, "{c:>w$}");
            } else {
                let _ = write!(line, "{c:<w$}");
            }
        }
        out += line.trim_end();
        out += "\n";
    }
    out
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use expect_test::expect;
    use kinetic_api::timeline::ContainerTimeline;

    use super::*;

    fn at(ms: u32) -> Option<Timestamp> {
        let base: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        Some(base + jiff::SignedDuration::from_micros(i64::from(ms) * 100))
    }

    /// A pod with an init container pulling a fresh image and a cached app container;
    /// offsets in tenths of a millisecond.
    #[test]
    fn a_pod_shows_its_latest_in_place_restart_step_by_step() {
        let mut tl = full();
        assert!(!render_pod(&tl).contains("in-place restart"));
        tl.restart = Some(timeline::RestartTimeline {
            container: "web".into(),
            attempt: 2,
            observed: at(10_000),
            signalled: at(10_001),
            exited: at(10_004),
            configured: at(10_005),
            rootfs: at(10_006),
            bundle: at(10_007),
            started: at(10_015),
            reported: at(10_018),
            ready: at(10_020),
            cpu: None,
        });
        let out = render_pod(&tl);
        assert!(out.contains("latest in-place restart: container web (run 2)"), "{out}");
        assert!(out.contains("1.5 ms in the agent to its start"), "{out}");
        let line = |step: &str| out.lines().find(|l| l.starts_with(step)).unwrap().to_owned();
        assert!(
            line("old run's exit seen")
                .split_whitespace()
                .eq(["old", "run's", "exit", "seen", "0.4", "0.3"]),
            "{out}"
        );
        assert!(line("ready").split_whitespace().eq(["ready", "2.0", "0.5"]), "{out}");
    }

    fn full() -> Timeline {
        Timeline {
            created: at(0),
            scheduled: at(4),
            observed: at(21),
            sandbox_ready: at(412),
            sandbox_cpu: Some(timeline::CpuTime {
                agent_us: 420,
                network_us: 9_150,
                ..Default::default()
            }),
            containers: vec![
                ContainerTimeline {
                    name: "setup".into(),
                    init: true,
                    pull_started: at(412),
                    pull_finished: at(1_012),
                    pull_bytes: 3_500_000,
                    cache_hit: false,
                    created: at(1_100),
                    started: at(1_180),
                    ready: at(1_400),
                    cpu: Some(timeline::CpuTime {
                        agent_us: 2_310,
                        shim_us: 2_900,
                        runc_us: 8_080,
                        init_us: 3_950,
                        ..Default::default()
                    }),
                },
                ContainerTimeline {
                    name: "web".into(),
                    pull_started: at(1_400),
                    pull_finished: at(1_405),
                    cache_hit: true,
                    created: at(1_480),
                    started: at(1_560),
                    ready: at(2_100),
                    ..Default::default()
                },
            ],
            ready: at(2_150),
            ..Default::default()
        }
    }

    #[test]
    fn one_pod() {
        expect![[r#"
            PHASE                  START ms   DURATION ms   DETAIL
            schedule                    0.0           0.4
            node pickup                 0.4           1.7
            sandbox                     2.1          39.1
            setup (init): pull         41.2          60.0   3.3 MiB pulled at 55.6 MiB/s
            setup (init): create      101.2           8.8
            setup (init): start       110.0           8.0
            setup (init): done        118.0          22.0
            web: pull                 140.0           0.5   cached
            web: create               140.5           7.5
            web: start                148.0           8.0
            web: ready                156.0          54.0
            total                       0.0         215.0

            CPU ms                AGENT   NETWORK   SHIM   RUNC   INIT    ALL
            sandbox                 0.4       9.2      -      -      -    9.6
            setup (init): start     2.3         -    2.9    8.1    4.0   17.2
            total                   2.7       9.2    2.9    8.1    4.0   26.8

                                  0 ms                                              215.0 ms
            schedule              |
            node pickup           #
            sandbox                ##########
            setup (init): pull               ################
            setup (init): create                             ###
            setup (init): start                                 ##
            setup (init): done                                    ######
            web: pull                                                   |
            web: create                                                 ##
            web: start                                                    ##
            web: ready                                                      ###############
            total                 ##########################################################
        "#]]
        .assert_eq(&render_pod(&full()));
    }

    #[test]
    fn a_pod_that_is_not_ready_yet() {
        let tl =
            Timeline { created: at(0), scheduled: at(3), observed: at(25), ..Default::default() };
        expect![[r#"
            PHASE         START ms   DURATION ms   DETAIL
            schedule           0.0           0.3
            node pickup        0.3           2.2
            sandbox            2.5             -
            total              0.0             -

            the pod is not ready yet: its sandbox is not ready (phases without a duration have not ended)

                         0 ms                                                         2.5 ms
            schedule     ########
            node pickup          ###########################################################
        "#]]
        .assert_eq(&render_pod(&tl));
        expect![[r#"
            no timeline: the pod has no creation time or scheduler annotations
        "#]]
        .assert_eq(&render_pod(&Timeline::default()));
    }

    #[test]
    fn summary() {
        let mut tls = Vec::new();
        for i in 0..10u32 {
            let mut tl = full();
            tl.ready = at(2_150 + i * 100);
            tls.push(tl);
        }
        tls.push(Timeline { created: at(0), scheduled: at(9), ..Default::default() });
        expect![[r#"
            11 pods, 10 ready

            PHASE (ms)            PODS     P50     P90     P99     MAX
            schedule                11     0.4     0.4     0.9     0.9
            node pickup             10     1.7     1.7     1.7     1.7
            sandbox                 10    39.1    39.1    39.1    39.1
            pull                    10    60.5    60.5    60.5    60.5
            create                  10    16.3    16.3    16.3    16.3
            start                   10    16.0    16.0    16.0    16.0
            ready                   10    99.0   139.0   149.0   149.0
            total                   10   255.0   295.0   305.0   305.0
            cpu (all processes)     10    26.8    26.8    26.8    26.8
        "#]]
        .assert_eq(&render_summary(&tls));
        expect![[r#"
            0 pods, 0 ready
        "#]]
        .assert_eq(&render_summary(&[]));
    }

    #[test]
    fn reads_the_scheduler_annotations_before_the_agent_writes_a_timeline() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "p",
                "creationTimestamp": "2026-11-22T10:00:00Z",
                "annotations": {
                    "kinetic.dev/queued-at": "2026-11-22T10:00:00.000300Z",
                    "kinetic.dev/scheduled-at": "2026-11-22T10:00:00.000800Z",
                },
            },
        }))
        .unwrap();
        let tl = timeline_of(&pod).unwrap();
        expect![[
            r#"{"created":"2026-11-22T10:00:00.0003Z","scheduled":"2026-11-22T10:00:00.0008Z"}"#
        ]]
        .assert_eq(&serde_json::to_string(&tl).unwrap());
        let mut pod = pod;
        pod.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(timeline::ANNOTATION.into(), "{not json".into());
        expect![
            "pod /p: bad kinetic.dev/timeline annotation: key must be a string at line 1 column 2"
        ]
        .assert_eq(&format!("{:#}", timeline_of(&pod).unwrap_err()));
    }

    #[test]
    fn sizes() {
        expect!["0 B 1023 B 3.3 MiB 5.0 GiB"].assert_eq(&format!(
            "{} {} {} {}",
            bytes(0),
            bytes(1023),
            bytes(3_500_000),
            bytes(5 << 30)
        ));
    }
}
