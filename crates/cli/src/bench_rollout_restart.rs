//! The per-step breakdown of the in-place restarts of `kinetic bench rollout`, from the pods'
//! timelines (`Timeline::restart`, written by the node agent after each in-place restart), and
//! the side-by-side table of the node paths measured in one run.

use std::time::Duration;

use jiff::Timestamp;
use kinetic_api::timeline::RestartTimeline;

use crate::bench::{ms, percentile};

/// Mean duration of each step of an in-place restart in the agent, over the restarts that
/// recorded every step, and the distribution of the whole restart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Breakdown {
    pub(crate) restarts: usize,
    /// Seen → SIGTERM sent (preStop hooks, probes stopped).
    pub(crate) kill: Duration,
    /// SIGTERM → the old run's exit seen.
    pub(crate) wait_exit: Duration,
    /// Exit → image found and configuration resolved (objects, service variables, env).
    pub(crate) configure: Duration,
    /// → the new overlay rootfs mounted.
    pub(crate) rootfs: Duration,
    /// → `config.json` written.
    pub(crate) bundle: Duration,
    /// → the runtime reported the new init process started (shim, create, start).
    pub(crate) create_start: Duration,
    /// Seen → started: the restart in the agent, mean, p50 and p99.
    pub(crate) restart_mean: Duration,
    pub(crate) restart_p50: Duration,
    pub(crate) restart_p99: Duration,
    /// Started → the Running state written to the pod status.
    pub(crate) report: Duration,
    /// Started → ready (the first successful readiness probe).
    pub(crate) ready: Duration,
    /// Mean CPU of the new run's start, all processes, in ms.
    pub(crate) cpu_ms: f64,
}

fn between(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Duration> {
    let d = b?.duration_since(a?);
    Some(Duration::try_from(d).unwrap_or_default())
}

/// The breakdown of `restarts`; `None` when none recorded every step to its start.
pub(crate) fn breakdown(restarts: &[RestartTimeline]) -> Option<Breakdown> {
    let rows: Vec<[Duration; 9]> = restarts
        .iter()
        .filter_map(|r| {
            Some([
                between(r.observed, r.signalled)?,
                between(r.signalled, r.exited)?,
                between(r.exited, r.configured)?,
                between(r.configured, r.rootfs)?,
                between(r.rootfs, r.bundle)?,
                between(r.bundle, r.started)?,
                between(r.observed, r.started)?,
                between(r.started, r.reported).unwrap_or_default(),
                between(r.started, r.ready).unwrap_or_default(),
            ])
        })
        .collect();
    if rows.is_empty() {
        return None;
    }
    let n = u32::try_from(rows.len()).unwrap_or(u32::MAX);
    let mean = |i: usize| rows.iter().map(|r| r[i]).sum::<Duration>() / n;
    let mut whole: Vec<Duration> = rows.iter().map(|r| r[6]).collect();
    whole.sort();
    let cpu: Vec<u64> = restarts.iter().filter_map(|r| r.cpu.map(|c| c.total_us())).collect();
    let cpu_ms = if cpu.is_empty() {
        0.0
    } else {
        cpu.iter().sum::<u64>() as f64 / cpu.len() as f64 / 1000.0
    };
    Some(Breakdown {
        restarts: rows.len(),
        kill: mean(0),
        wait_exit: mean(1),
        configure: mean(2),
        rootfs: mean(3),
        bundle: mean(4),
        create_start: mean(5),
        restart_mean: mean(6),
        restart_p50: percentile(&whole, 0.5),
        restart_p99: percentile(&whole, 0.99),
        report: mean(7),
        ready: mean(8),
        cpu_ms,
    })
}

/// One node path's figures for the side-by-side table.
pub(crate) struct Column {
    /// `runtime+network`.
    pub(crate) path: String,
    /// (label, value) in the order printed; every column has the same labels.
    pub(crate) cells: Vec<(String, String)>,
}

/// The rows of a column for one in-place restart breakdown.
pub(crate) fn breakdown_cells(b: Option<&Breakdown>) -> Vec<(String, String)> {
    let f = |d: Duration| format!("{:.1} ms", ms(d));
    let labels = [
        "in-place restarts with a full timeline",
        "  restart in the agent (seen → started), p50",
        "  restart in the agent (seen → started), p99",
        "  restart in the agent, mean",
        "    seen → SIGTERM sent",
        "    SIGTERM → old run's exit seen",
        "    → image + config (objects, service env)",
        "    → overlay rootfs mounted",
        "    → config.json written",
        "    → new init started (shim, create, start)",
        "  started → Running written to the status",
        "  started → ready (first readiness success)",
        "  CPU of the new run's start, all processes",
    ];
    let values: Vec<String> = match b {
        None => vec!["-".to_owned(); labels.len()],
        Some(b) => vec![
            b.restarts.to_string(),
            f(b.restart_p50),
            f(b.restart_p99),
            f(b.restart_mean),
            f(b.kill),
            f(b.wait_exit),
            f(b.configure),
            f(b.rootfs),
            f(b.bundle),
            f(b.create_start),
            f(b.report),
            f(b.ready),
            format!("{:.1} ms", b.cpu_ms),
        ],
    };
    labels.iter().map(|l| (*l).to_owned()).zip(values).collect()
}

/// Prints the columns side by side (same run, same machine).
#[allow(clippy::print_stdout)] // the benchmark's report is its output
pub(crate) fn print_side_by_side(cols: &[Column]) {
    let Some(first) = cols.first() else { return };
    let w = first.cells.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(0).max(10);
    println!();
    println!("release paths side by side (runtime+network; same run, same machine)");
    print!("{:<w$}", "");
    for c in cols {
        print!("  {:>18}", c.path);
    }
    println!();
    for (i, (label, _)) in first.cells.iter().enumerate() {
        print!("{label:<w$}");
        for c in cols {
            print!("  {:>18}", c.cells.get(i).map_or("-", |(_, v)| v.as_str()));
        }
        println!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Option<Timestamp> {
        Some(Timestamp::from_millisecond(1_800_000_000_000 + ms).unwrap())
    }

    fn restart(offset: i64, exit: i64, start: i64) -> RestartTimeline {
        RestartTimeline {
            container: "main".into(),
            attempt: 2,
            observed: at(offset),
            signalled: at(offset + 1),
            exited: at(offset + 1 + exit),
            configured: at(offset + 2 + exit),
            rootfs: at(offset + 4 + exit),
            bundle: at(offset + 5 + exit),
            started: at(offset + 5 + exit + start),
            reported: at(offset + 8 + exit + start),
            ready: at(offset + 20 + exit + start),
            cpu: Some(kinetic_api::timeline::CpuTime {
                agent_us: 1_000,
                shim_us: 3_000,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn breakdown_means_each_step_over_complete_restarts() {
        let mut partial = restart(0, 2, 10);
        partial.started = None; // a start that failed: not counted
        let b = breakdown(&[restart(0, 2, 10), restart(100, 4, 20), partial]).unwrap();
        assert_eq!(b.restarts, 2);
        assert_eq!(b.kill, Duration::from_millis(1));
        assert_eq!(b.wait_exit, Duration::from_millis(3));
        assert_eq!(b.configure, Duration::from_millis(1));
        assert_eq!(b.rootfs, Duration::from_millis(2));
        assert_eq!(b.bundle, Duration::from_millis(1));
        assert_eq!(b.create_start, Duration::from_millis(15));
        assert_eq!(b.restart_mean, Duration::from_millis(23));
        assert_eq!(b.restart_p50, Duration::from_millis(17));
        assert_eq!(b.restart_p99, Duration::from_millis(29));
        assert_eq!(b.report, Duration::from_millis(3));
        assert_eq!(b.ready, Duration::from_millis(15));
        assert!((b.cpu_ms - 4.0).abs() < 1e-9);
    }

    #[test]
    fn no_complete_restart_gives_no_breakdown_and_dashes() {
        assert_eq!(breakdown(&[]), None);
        let cells = breakdown_cells(None);
        assert!(cells.iter().all(|(_, v)| v == "-"));
        assert_eq!(cells.len(), breakdown_cells(breakdown(&[restart(0, 1, 1)]).as_ref()).len());
    }
}
