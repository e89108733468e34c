//! Resource metrics of the node and its containers, read from their cgroups, served on the
//! kubelet API as kubelet serves them to metrics-server: the Summary API (`/stats/summary`,
//! `stats/v1alpha1`) and `/metrics/resource` (Prometheus text with kubelet's metric names).
//!
//! Each container runs in the cgroup `/kinetic/{runc id}` (see `worker`). CPU is the cgroup's
//! cumulative usage (v1 `cpuacct.usage`, v2 `cpu.stat usage_usec`); the rate
//! (`usageNanoCores`) is taken over a window of 10–15 s against samples a background task takes
//! every 5 s, as cAdvisor derives it from its housekeeping samples. Memory is the working set as
//! kubelet computes it: usage minus inactive file pages (v1 `memory.usage_in_bytes` −
//! `total_inactive_file`, v2 `memory.current` − `inactive_file`), never below zero.
//!
//! The cgroup layout is read from `/proc/self/mountinfo`: the v1 `cpuacct` and `memory`
//! hierarchies when they are mounted (v1 or hybrid hosts, where runc uses them), else the
//! unified v2 hierarchy. The node's own figures come from the root cgroup (v1) or `/proc/stat`
//! and `/proc/meminfo` (v2, whose root cgroup has no usage files), as cAdvisor does.
//!
//! The pods and containers are the agent's records (`pods/<uid>/state.json`), written
//! atomically by the workers, so this module shares no state with them.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::state::{CState, PodRecord};

/// How often the sampler reads every cgroup.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// The shortest window a CPU rate is computed over when an older sample exists.
const MIN_WINDOW: Duration = Duration::from_secs(10);
/// Samples older than this are dropped.
const KEEP: Duration = Duration::from_secs(60);

/// Where the controllers' hierarchies are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Layout {
    /// cgroup v1: the `cpuacct` and `memory` hierarchies.
    V1 { cpuacct: PathBuf, memory: PathBuf },
    /// cgroup v2: the unified hierarchy.
    V2 { root: PathBuf },
}

impl Layout {
    /// The layout described by a `/proc/self/mountinfo` text.
    pub(crate) fn from_mountinfo(text: &str) -> Option<Layout> {
        let (mut cpuacct, mut memory, mut unified) = (None, None, None);
        for line in text.lines() {
            // `id parent major:minor root mountpoint options [optional…] - fstype source super`
            let Some((left, right)) = line.split_once(" - ") else { continue };
            let Some(mount) = left.split_whitespace().nth(4) else { continue };
            let mut r = right.split_whitespace();
            let (fstype, _source, sup) = (r.next(), r.next(), r.next().unwrap_or(""));
            match fstype {
                Some("cgroup2") => unified = unified.or_else(|| Some(PathBuf::from(mount))),
                Some("cgroup") => {
                    let opts: Vec<&str> = sup.split(',').collect();
                    if opts.contains(&"cpuacct") && cpuacct.is_none() {
                        cpuacct = Some(PathBuf::from(mount));
                    }
                    if opts.contains(&"memory") && memory.is_none() {
                        memory = Some(PathBuf::from(mount));
                    }
                }
                _ => {}
            }
        }
        match (cpuacct, memory, unified) {
            (Some(cpuacct), Some(memory), _) => Some(Layout::V1 { cpuacct, memory }),
            (_, _, Some(root)) => Some(Layout::V2 { root }),
            _ => None,
        }
    }

    fn detect() -> Option<Layout> {
        Self::from_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").ok()?)
    }

    /// Cumulative CPU time of cgroup `path` (relative, like runc's `cgroupsPath`), ns.
    fn cpu_ns(&self, path: &str) -> Option<u64> {
        let rel = path.trim_start_matches('/');
        match self {
            Layout::V1 { cpuacct, .. } => read_u64(&cpuacct.join(rel).join("cpuacct.usage")),
            Layout::V2 { root } => {
                let stat = std::fs::read_to_string(root.join(rel).join("cpu.stat")).ok()?;
                Some(stat_value(&stat, "usage_usec")?.saturating_mul(1000))
            }
        }
    }

    /// Memory figures of cgroup `path`.
    fn memory(&self, path: &str) -> Option<Memory> {
        let rel = path.trim_start_matches('/');
        match self {
            Layout::V1 { memory, .. } => {
                let dir = memory.join(rel);
                let usage = read_u64(&dir.join("memory.usage_in_bytes"))?;
                let stat = std::fs::read_to_string(dir.join("memory.stat")).ok()?;
                let limit = read_u64(&dir.join("memory.limit_in_bytes"));
                Some(Memory::from_usage(
                    usage,
                    stat_value(&stat, "total_inactive_file").unwrap_or(0),
                    stat_value(&stat, "total_rss").unwrap_or(0),
                    stat_value(&stat, "total_pgfault").unwrap_or(0),
                    stat_value(&stat, "total_pgmajfault").unwrap_or(0),
                    limit,
                ))
            }
            Layout::V2 { root } => {
                let dir = root.join(rel);
                let usage = read_u64(&dir.join("memory.current"))?;
                let stat = std::fs::read_to_string(dir.join("memory.stat")).ok()?;
                let limit = read_u64(&dir.join("memory.max"));
                Some(Memory::from_usage(
                    usage,
                    stat_value(&stat, "inactive_file").unwrap_or(0),
                    stat_value(&stat, "anon").unwrap_or(0),
                    stat_value(&stat, "pgfault").unwrap_or(0),
                    stat_value(&stat, "pgmajfault").unwrap_or(0),
                    limit,
                ))
            }
        }
    }

    /// The node's cumulative CPU time, ns.
    fn node_cpu_ns(&self) -> Option<u64> {
        match self {
            Layout::V1 { cpuacct, .. } => read_u64(&cpuacct.join("cpuacct.usage")),
            Layout::V2 { .. } => proc_stat_busy_ns(&std::fs::read_to_string("/proc/stat").ok()?),
        }
    }

    /// The node's memory figures.
    fn node_memory(&self) -> Option<Memory> {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kib = |k: &str| meminfo_kib(&meminfo, k).map(|v| v.saturating_mul(1024));
        let total = kib("MemTotal")?;
        let mut m = match self {
            Layout::V1 { .. } => self.memory("/")?,
            Layout::V2 { .. } => {
                let usage = total.saturating_sub(kib("MemFree").unwrap_or(0));
                Memory::from_usage(
                    usage,
                    kib("Inactive(file)").unwrap_or(0),
                    kib("AnonPages").unwrap_or(0),
                    0,
                    0,
                    None,
                )
            }
        };
        // kubelet: the node's available memory is its capacity less the working set.
        m.available = Some(total.saturating_sub(m.working_set));
        Some(m)
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a `key value` per line file (`memory.stat`, `cpu.stat`).
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn meminfo_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == key).then(|| v.trim().trim_end_matches("kB").trim().parse().ok()).flatten()
    })
}

/// Busy CPU time from `/proc/stat`'s `cpu` line (user, nice, system, irq, softirq, steal), ns.
fn proc_stat_busy_ns(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let busy = [0, 1, 2, 5, 6, 7].iter().filter_map(|i| f.get(*i)).sum::<u64>();
    // USER_HZ is 100 on every Linux ABI the agent runs on.
    Some(busy.saturating_mul(10_000_000))
}

/// The node's boot time from `/proc/stat`'s `btime`.
fn boot_time() -> Option<Timestamp> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let secs: i64 = text.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    Timestamp::from_second(secs).ok()
}

/// One cgroup's memory figures, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Memory {
    pub usage: u64,
    pub working_set: u64,
    pub rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    pub available: Option<u64>,
}

impl Memory {
    /// kubelet's working set: usage less inactive file pages, not below zero; available is
    /// the limit less the working set when a limit is set.
    fn from_usage(
        usage: u64,
        inactive_file: u64,
        rss: u64,
        page_faults: u64,
        major_page_faults: u64,
        limit: Option<u64>,
    ) -> Memory {
        let working_set = usage.saturating_sub(inactive_file);
        // An unlimited v1 cgroup reports a page-rounded i64::MAX.
        let limit = limit.filter(|l| *l < (1 << 62));
        Memory {
            usage,
            working_set,
            rss,
            page_faults,
            major_page_faults,
            available: limit.map(|l| l.saturating_sub(working_set)),
        }
    }

    fn to_json(self, time: &str) -> Value {
        let mut m = json!({
            "time": time,
            "usageBytes": self.usage,
            "workingSetBytes": self.working_set,
            "rssBytes": self.rss,
            "pageFaults": self.page_faults,
            "majorPageFaults": self.major_page_faults,
        });
        if let Some(a) = self.available {
            m["availableBytes"] = json!(a);
        }
        m
    }
}

/// A cumulative CPU reading.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    cpu_ns: u64,
}

/// The CPU rate in nanocores between `now` and the newest earlier sample at least
/// [`MIN_WINDOW`] older (else the oldest one), with the window; `None` without an earlier
/// sample or when the counter went back (a new cgroup under the same name).
fn rate(history: &VecDeque<Sample>, now: Sample) -> Option<(u64, Duration)> {
    let old = history
        .iter()
        .rev()
        .find(|s| now.at.duration_since(s.at) >= MIN_WINDOW)
        .or_else(|| history.front())?;
    let window = now.at.checked_duration_since(old.at)?;
    if window < Duration::from_millis(500) || now.cpu_ns < old.cpu_ns {
        return None;
    }
    let cores = (now.cpu_ns - old.cpu_ns) as f64 / window.as_secs_f64();
    Some((cores.round() as u64, window))
}

/// One container's figures at one instant.
#[derive(Debug, Clone)]
pub(crate) struct ContainerStats {
    pub name: String,
    pub started_at: Timestamp,
    pub cpu_ns: u64,
    pub nano_cores: Option<u64>,
    pub memory: Option<Memory>,
}

/// One pod's running containers.
#[derive(Debug, Clone)]
pub(crate) struct PodStats {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub started_at: Option<Timestamp>,
    pub containers: Vec<ContainerStats>,
}

/// The node's and its containers' figures at one instant.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub time: Timestamp,
    pub node_cpu_ns: Option<u64>,
    pub node_nano_cores: Option<u64>,
    pub node_memory: Option<Memory>,
    pub pods: Vec<PodStats>,
}

/// The node's resource metrics source.
pub(crate) struct Stats {
    pods_dir: PathBuf,
    node: String,
    layout: Option<Layout>,
    /// CPU samples per cgroup path (`""` is the node).
    history: Mutex<HashMap<String, VecDeque<Sample>>>,
}

impl Stats {
    /// Starts sampling; the sampler ends when the returned value is dropped.
    pub(crate) fn start(pods_dir: PathBuf, node: &str) -> Arc<Stats> {
        let layout = Layout::detect();
        if layout.is_none() {
            tracing::warn!(
                "no cgroup hierarchy with cpuacct and memory found: no resource metrics"
            );
        }
        let stats =
            Arc::new(Stats { pods_dir, node: node.to_owned(), layout, history: Mutex::default() });
        let weak: Weak<Stats> = Arc::downgrade(&stats);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(s) = weak.upgrade() else { return };
                s.snapshot();
            }
        });
        stats
    }

    /// Reads every running container's cgroup and the node's figures, records the CPU
    /// samples and computes the rates.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let time = Timestamp::now();
        let now = Instant::now();
        let Some(layout) = &self.layout else {
            return Snapshot {
                time,
                node_cpu_ns: None,
                node_nano_cores: None,
                node_memory: None,
                pods: vec![],
            };
        };
        let mut hist = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let mut live: Vec<String> = vec![String::new()];
        let mut record = |key: &str, cpu_ns: u64| -> Option<(u64, Duration)> {
            let h = hist.entry(key.to_owned()).or_default();
            let sample = Sample { at: now, cpu_ns };
            let r = rate(h, sample);
            if h.back().is_some_and(|l| l.cpu_ns > cpu_ns) {
                h.clear();
            }
            h.push_back(sample);
            while h.front().is_some_and(|s| now.duration_since(s.at) > KEEP) {
                h.pop_front();
            }
            r
        };
        let node_cpu_ns = layout.node_cpu_ns();
        let node_nano_cores = node_cpu_ns.and_then(|c| record("", c)).map(|(r, _)| r);
        let mut pods = Vec::new();
        let mut records: Vec<PodRecord> =
            PodRecord::load_all(&self.pods_dir).into_iter().map(|(_, r)| r).collect();
        records.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        for rec in records {
            let mut containers = Vec::new();
            for (name, c) in &rec.containers {
                let CState::Running { started_at, .. } = c.state else { continue };
                if c.init {
                    continue;
                }
                let cgroup = format!("/kinetic/{}-{name}-{}", rec.uid, c.attempt);
                let Some(cpu_ns) = layout.cpu_ns(&cgroup) else { continue };
                let r = record(&cgroup, cpu_ns);
                live.push(cgroup.clone());
                containers.push(ContainerStats {
                    name: name.clone(),
                    started_at,
                    cpu_ns,
                    nano_cores: r.map(|(n, _)| n),
                    memory: layout.memory(&cgroup),
                });
            }
            if !containers.is_empty() {
                pods.push(PodStats {
                    namespace: rec.namespace.clone(),
                    name: rec.name.clone(),
                    uid: rec.uid.clone(),
                    started_at: rec.start_time,
                    containers,
                });
            }
        }
        hist.retain(|k, _| live.contains(k));
        Snapshot { time, node_cpu_ns, node_nano_cores, node_memory: layout.node_memory(), pods }
    }

    /// The Summary API document (`stats/v1alpha1` `Summary`).
    pub(crate) fn summary(&self) -> Value {
        summary_json(&self.node, boot_time(), &self.snapshot())
    }

    /// The `/metrics/resource` text.
    pub(crate) fn resource_metrics(&self) -> String {
        prometheus_text(&self.snapshot())
    }
}

/// Serves `/stats/summary` (JSON) and `/metrics/resource` (Prometheus text).
pub(crate) fn handle(stats: &Stats, parts: &[&str]) -> http::Response<crate::server::Body> {
    use http_body_util::BodyExt as _;
    let (ct, body) = match parts {
        ["stats", ..] => {
            ("application/json", serde_json::to_vec(&stats.summary()).unwrap_or_default())
        }
        _ => ("text/plain; version=0.0.4; charset=utf-8", stats.resource_metrics().into_bytes()),
    };
    let mut r = http::Response::new(
        http_body_util::Full::new(bytes::Bytes::from(body))
            .map_err(|e: std::convert::Infallible| match e {})
            .boxed(),
    );
    if let Ok(v) = http::HeaderValue::from_str(ct) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

fn cpu_json(time: &str, cpu_ns: u64, nano_cores: Option<u64>) -> Value {
    let mut c = json!({"time": time, "usageCoreNanoSeconds": cpu_ns});
    if let Some(n) = nano_cores {
        c["usageNanoCores"] = json!(n);
    }
    c
}

fn second(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second()).unwrap_or(t).to_string()
}

pub(crate) fn summary_json(node: &str, boot: Option<Timestamp>, s: &Snapshot) -> Value {
    let time = second(s.time);
    let mut n = json!({"nodeName": node, "systemContainers": []});
    if let Some(b) = boot {
        n["startTime"] = json!(second(b));
    }
    if let Some(c) = s.node_cpu_ns {
        n["cpu"] = cpu_json(&time, c, s.node_nano_cores);
    }
    if let Some(m) = s.node_memory {
        n["memory"] = m.to_json(&time);
    }
    let pods: Vec<Value> = s
        .pods
        .iter()
        .map(|p| {
            let containers: Vec<Value> = p
                .containers
                .iter()
                .map(|c| {
                    let mut v = json!({
                        "name": c.name,
                        "startTime": second(c.started_at),
                        "cpu": cpu_json(&time, c.cpu_ns, c.nano_cores),
                    });
                    if let Some(m) = c.memory {
                        v["memory"] = m.to_json(&time);
                    }
                    v
                })
                .collect();
            // The pod's figures are its containers' sums (kubelet reads the pod cgroup; the
            // agent gives each container its own).
            let cpu_ns = p.containers.iter().map(|c| c.cpu_ns).sum();
            let cores = p.containers.iter().map(|c| c.nano_cores).sum::<Option<u64>>();
            let mem = p.containers.iter().map(|c| c.memory).collect::<Option<Vec<Memory>>>();
            let mut v = json!({
                "podRef": {"name": p.name, "namespace": p.namespace, "uid": p.uid},
                "containers": containers,
                "cpu": cpu_json(&time, cpu_ns, cores),
            });
            if let Some(st) = p.started_at {
                v["startTime"] = json!(second(st));
            }
            if let Some(ms) = mem {
                let sum = |f: fn(&Memory) -> u64| ms.iter().map(f).sum::<u64>();
                v["memory"] = json!({
                    "time": time,
                    "usageBytes": sum(|m| m.usage),
                    "workingSetBytes": sum(|m| m.working_set),
                    "rssBytes": sum(|m| m.rss),
                    "pageFaults": sum(|m| m.page_faults),
                    "majorPageFaults": sum(|m| m.major_page_faults),
                });
            }
            v
        })
        .collect();
    json!({"node": n, "pods": pods})
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// kubelet's `/metrics/resource`: the metric names, help texts and labels metrics-server
/// reads, with millisecond timestamps.
pub(crate) fn prometheus_text(s: &Snapshot) -> String {
    use std::fmt::Write as _;
    let ms = s.time.as_millisecond();
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} [STABLE] {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{labels} {v} {ms}");
        }
    };
    let c_labels = |p: &PodStats, c: &ContainerStats| {
        format!(
            "{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}}",
            label(&c.name),
            label(&p.namespace),
            label(&p.name)
        )
    };
    let p_labels = |p: &PodStats| {
        format!("{{namespace=\"{}\",pod=\"{}\"}}", label(&p.namespace), label(&p.name))
    };
    let containers = || s.pods.iter().flat_map(|p| p.containers.iter().map(move |c| (p, c)));
    family(
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the container in core-seconds",
        containers().map(|(p, c)| (c_labels(p, c), c.cpu_ns as f64 / 1e9)).collect(),
    );
    family(
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set of the container in bytes",
        containers()
            .filter_map(|(p, c)| Some((c_labels(p, c), c.memory?.working_set as f64)))
            .collect(),
    );
    family(
        "container_start_time_seconds",
        "gauge",
        "Start time of the container since unix epoch in seconds",
        containers().map(|(p, c)| (c_labels(p, c), c.started_at.as_second() as f64)).collect(),
    );
    family(
        "node_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the node in core-seconds",
        s.node_cpu_ns.map(|c| (String::new(), c as f64 / 1e9)).into_iter().collect(),
    );
    family(
        "node_memory_working_set_bytes",
        "gauge",
        "Current working set of the node in bytes",
        s.node_memory.map(|m| (String::new(), m.working_set as f64)).into_iter().collect(),
    );
    family(
        "pod_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the pod in core-seconds",
        s.pods
            .iter()
            .map(|p| (p_labels(p), p.containers.iter().map(|c| c.cpu_ns).sum::<u64>() as f64 / 1e9))
            .collect(),
    );
    family(
        "pod_memory_working_set_bytes",
        "gauge",
        "Current working set of the pod in bytes",
        s.pods
            .iter()
            .map(|p| {
                let ws = p.containers.iter().filter_map(|c| c.memory).map(|m| m.working_set);
                (p_labels(p), ws.sum::<u64>() as f64)
            })
            .collect(),
    );
    let _ = writeln!(
        out,
        "# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics, 0 otherwise"
    );
    let _ = writeln!(out, "# TYPE scrape_error gauge");
    let _ = writeln!(out, "scrape_error 0");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_of_a_hybrid_host_is_v1() {
        let mi = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
            32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:7 - cgroup cgroup rw,cpu,cpuacct\n\
            35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            Layout::from_mountinfo(mi),
            Some(Layout::V1 {
                cpuacct: "/sys/fs/cgroup/cpu,cpuacct".into(),
                memory: "/sys/fs/cgroup/memory".into()
            })
        );
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(Layout::from_mountinfo(v2), Some(Layout::V2 { root: "/sys/fs/cgroup".into() }));
    }

    #[test]
    fn working_set_is_usage_less_inactive_file() {
        let m = Memory::from_usage(100, 30, 50, 7, 1, Some(1000));
        assert_eq!(m.working_set, 70);
        assert_eq!(m.available, Some(930));
        let floor = Memory::from_usage(10, 30, 0, 0, 0, Some(9_223_372_036_854_771_712));
        assert_eq!(floor.working_set, 0);
        assert_eq!(floor.available, None, "an unlimited v1 cgroup has no available figure");
    }

    #[test]
    fn cpu_rate_uses_a_window_of_at_least_ten_seconds() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let h: VecDeque<Sample> = [
            Sample { at: at(0), cpu_ns: 0 },
            Sample { at: at(5), cpu_ns: 5_000_000_000 },
            Sample { at: at(10), cpu_ns: 6_000_000_000 },
        ]
        .into();
        // From t=2 s back to t=0 (the only sample ≥ 10 s older is none, so the oldest).
        let (cores, w) = rate(&h, Sample { at: at(15), cpu_ns: 7_500_000_000 }).unwrap();
        assert_eq!(w, Duration::from_secs(10), "the newest sample at least 10 s older is t=5");
        assert_eq!(cores, 250_000_000);
        assert!(rate(&VecDeque::new(), Sample { at: at(1), cpu_ns: 1 }).is_none());
        assert!(rate(&h, Sample { at: at(20), cpu_ns: 1 }).is_none(), "a counter that went back");
    }

    #[test]
    fn proc_stat_busy_time() {
        let s = "cpu  100 5 50 1000 7 1 2 3 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\nbtime 1\n";
        assert_eq!(proc_stat_busy_ns(s), Some((100 + 5 + 50 + 1 + 2 + 3) * 10_000_000));
    }

    #[test]
    fn resource_metrics_use_kubelet_names() {
        let time = Timestamp::from_second(1_700_000_000).unwrap();
        let s = Snapshot {
            time,
            node_cpu_ns: Some(2_000_000_000),
            node_nano_cores: Some(5),
            node_memory: Some(Memory::from_usage(4096, 0, 0, 0, 0, None)),
            pods: vec![PodStats {
                namespace: "ns".into(),
                name: "p".into(),
                uid: "u".into(),
                started_at: Some(time),
                containers: vec![ContainerStats {
                    name: "c".into(),
                    started_at: time,
                    cpu_ns: 1_500_000_000,
                    nano_cores: Some(1_000_000),
                    memory: Some(Memory::from_usage(2048, 1024, 0, 0, 0, None)),
                }],
            }],
        };
        let text = prometheus_text(&s);
        assert!(text.contains(
            "container_cpu_usage_seconds_total{container=\"c\",namespace=\"ns\",pod=\"p\"} 1.5 1700000000000\n"
        ));
        assert!(text.contains(
            "container_memory_working_set_bytes{container=\"c\",namespace=\"ns\",pod=\"p\"} 1024 1700000000000\n"
        ));
        assert!(text.contains("node_cpu_usage_seconds_total 2 1700000000000\n"));
        assert!(text.contains("pod_memory_working_set_bytes{namespace=\"ns\",pod=\"p\"} 1024"));
        let sum = summary_json("n1", None, &s);
        assert_eq!(sum["pods"][0]["containers"][0]["cpu"]["usageNanoCores"], 1_000_000);
        assert_eq!(sum["pods"][0]["containers"][0]["memory"]["workingSetBytes"], 1024);
        assert_eq!(sum["pods"][0]["podRef"]["namespace"], "ns");
        assert_eq!(sum["node"]["memory"]["workingSetBytes"], 4096);
    }
}
