//! What the server counts about itself, served at `/metrics` in the Prometheus text format
//! (version 0.0.4) under kube-apiserver's metric names and labels, so dashboards and alerts
//! written for a real cluster read it:
//!
//! - `apiserver_request_total{verb,dry_run,group,version,resource,subresource,scope,component,code}`
//!   (counter; `verb` as upstream's `cleanVerb` reports it: GET, LIST, WATCH, POST, PUT, PATCH,
//!   DELETE, CONNECT; non-resource paths have empty group/version/resource and scope).
//! - `apiserver_request_duration_seconds{verb,dry_run,group,version,resource,subresource,scope,component}`
//!   (histogram, upstream's buckets). Long-running requests (WATCH, CONNECT) are not observed:
//!   their duration is the client's choice.
//! - `apiserver_longrunning_requests{verb,group,version,resource,subresource,scope,component}`
//!   (gauge): the watches and streamed responses open now.
//! - `apiserver_watch_events_total{group,version,resource}` (counter): events sent to watchers.
//! - `etcd_request_duration_seconds{operation,type}` (histogram): the latency of the durable
//!   store's writes, from submission to group commit, under the name kube-apiserver gives its
//!   storage latency (`operation` create/update/delete, `type` the group-resource).
//! - `apiserver_storage_objects{resource}` (gauge): objects stored per group-resource.
//! - `kinetic_gc_index_rebuilds_total` (counter, no upstream equivalent): how often the garbage
//!   collector fell behind the event stream and rebuilt its index.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upstream's buckets for request and storage latency (seconds).
const BUCKETS: [f64; 23] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

/// The labels of a request, as upstream's `RequestInfo` and `cleanVerb` give them.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestLabels {
    pub verb: &'static str,
    pub dry_run: bool,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    /// `resource` (one named object), `namespace`, `cluster`, or empty for non-resource paths.
    pub scope: &'static str,
}

impl RequestLabels {
    fn render(&self, with_dry_run: bool) -> String {
        let dry = if with_dry_run {
            format!("dry_run=\"{}\",", if self.dry_run { "All" } else { "" })
        } else {
            String::new()
        };
        format!(
            "verb=\"{}\",{dry}group=\"{}\",version=\"{}\",resource=\"{}\",subresource=\"{}\",scope=\"{}\",component=\"apiserver\"",
            self.verb,
            escape(&self.group),
            escape(&self.version),
            escape(&self.resource),
            escape(&self.subresource),
            self.scope
        )
    }
}

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Cumulative counts per bucket of [`BUCKETS`].
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (b, c) in BUCKETS.iter().zip(self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// The server's counters; one per [`crate::rest::Api`].
#[derive(Debug, Default)]
pub struct Metrics {
    /// How often the garbage collector fell behind the event stream and rebuilt its index.
    pub gc_rebuilds: AtomicU64,
    requests: Mutex<BTreeMap<RequestLabels, BTreeMap<u16, u64>>>,
    durations: Mutex<BTreeMap<RequestLabels, Histogram>>,
    longrunning: Mutex<BTreeMap<RequestLabels, Arc<AtomicI64>>>,
    watch_events: Mutex<BTreeMap<(String, String, String), Arc<AtomicU64>>>,
    storage: Mutex<BTreeMap<(&'static str, String), Histogram>>,
}

/// Decrements `apiserver_longrunning_requests` when the request's response ends.
#[derive(Debug)]
pub struct LongRunning(Arc<AtomicI64>);

impl Drop for LongRunning {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    /// Counts a finished request, and its duration unless it is long-running.
    pub fn request(&self, labels: &RequestLabels, code: u16, took: Option<Duration>) {
        // Looked up by reference first: the labels are cloned once per series, not per request.
        {
            let mut m = lock(&self.requests);
            match m.get_mut(labels) {
                Some(codes) => *codes.entry(code).or_default() += 1,
                None => {
                    m.insert(labels.clone(), BTreeMap::from([(code, 1)]));
                }
            }
        }
        if let Some(took) = took {
            let mut m = lock(&self.durations);
            match m.get_mut(labels) {
                Some(h) => h.observe(took.as_secs_f64()),
                None => m.entry(labels.clone()).or_default().observe(took.as_secs_f64()),
            }
        }
    }

    /// Counts a long-running request as open until the returned guard is dropped.
    pub fn long_running(&self, labels: &RequestLabels) -> LongRunning {
        let mut l = labels.clone();
        l.dry_run = false;
        let g = lock(&self.longrunning).entry(l).or_default().clone();
        g.fetch_add(1, Ordering::Relaxed);
        LongRunning(g)
    }

    /// The counter of watch events of one resource (taken once per watch, bumped per event).
    pub fn watch_events(&self, group: &str, version: &str, resource: &str) -> Arc<AtomicU64> {
        let key = (group.to_owned(), version.to_owned(), resource.to_owned());
        lock(&self.watch_events).entry(key).or_default().clone()
    }

    /// Observes one durable write of the store.
    pub fn storage(&self, operation: &'static str, ty: &str, took: Duration) {
        lock(&self.storage)
            .entry((operation, ty.to_owned()))
            .or_default()
            .observe(took.as_secs_f64());
    }

    /// The text exposition; `objects` are the stored objects per group-resource.
    pub fn render(&self, objects: &BTreeMap<String, usize>) -> String {
        let mut out = String::new();
        out.push_str("# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.\n# TYPE apiserver_request_total counter\n");
        for (l, codes) in lock(&self.requests).iter() {
            let labels = l.render(true);
            for (code, n) in codes {
                let _ = writeln!(out, "apiserver_request_total{{{labels},code=\"{code}\"}} {n}");
            }
        }
        out.push_str("# HELP apiserver_request_duration_seconds Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component.\n# TYPE apiserver_request_duration_seconds histogram\n");
        for (l, h) in lock(&self.durations).iter() {
            h.render(&mut out, "apiserver_request_duration_seconds", &l.render(true));
        }
        out.push_str("# HELP apiserver_longrunning_requests Gauge of all active long-running apiserver requests broken out by verb, group, version, resource, scope and component.\n# TYPE apiserver_longrunning_requests gauge\n");
        for (l, g) in lock(&self.longrunning).iter() {
            let n = g.load(Ordering::Relaxed);
            let _ = writeln!(out, "apiserver_longrunning_requests{{{}}} {n}", l.render(false));
        }
        out.push_str("# HELP apiserver_watch_events_total Number of events sent in watch clients\n# TYPE apiserver_watch_events_total counter\n");
        for ((g, v, r), n) in lock(&self.watch_events).iter() {
            let n = n.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "apiserver_watch_events_total{{group=\"{}\",version=\"{}\",resource=\"{}\"}} {n}",
                escape(g),
                escape(v),
                escape(r)
            );
        }
        out.push_str("# HELP etcd_request_duration_seconds Storage request latency in seconds for each operation and object type.\n# TYPE etcd_request_duration_seconds histogram\n");
        for ((op, ty), h) in lock(&self.storage).iter() {
            let labels = format!("operation=\"{op}\",type=\"{}\"", escape(ty));
            h.render(&mut out, "etcd_request_duration_seconds", &labels);
        }
        out.push_str("# HELP apiserver_storage_objects Number of stored objects at the time of last check split by kind.\n# TYPE apiserver_storage_objects gauge\n");
        for (r, n) in objects {
            let _ = writeln!(out, "apiserver_storage_objects{{resource=\"{}\"}} {n}", escape(r));
        }
        out.push_str("# HELP kinetic_gc_index_rebuilds_total Times the garbage collector fell behind the event stream and rebuilt its index.\n# TYPE kinetic_gc_index_rebuilds_total counter\n");
        let _ = writeln!(
            out,
            "kinetic_gc_index_rebuilds_total {}",
            self.gc_rebuilds.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_metrics_render_in_prometheus_text_format() {
        let m = Metrics::default();
        let l = RequestLabels {
            verb: "LIST",
            resource: "pods".into(),
            version: "v1".into(),
            scope: "namespace",
            ..Default::default()
        };
        m.request(&l, 200, Some(Duration::from_millis(30)));
        m.request(&l, 200, Some(Duration::from_millis(3)));
        let guard = m.long_running(&RequestLabels { verb: "WATCH", ..l.clone() });
        let text = m.render(&BTreeMap::from([("pods".to_owned(), 2)]));
        let labels = "verb=\"LIST\",dry_run=\"\",group=\"\",version=\"v1\",resource=\"pods\",subresource=\"\",scope=\"namespace\",component=\"apiserver\"";
        assert!(text.contains(&format!("apiserver_request_total{{{labels},code=\"200\"}} 2")));
        assert!(text.contains(&format!(
            "apiserver_request_duration_seconds_bucket{{{labels},le=\"0.005\"}} 1"
        )));
        assert!(text.contains(&format!(
            "apiserver_request_duration_seconds_bucket{{{labels},le=\"0.05\"}} 2"
        )));
        assert!(text.contains("apiserver_longrunning_requests{verb=\"WATCH\",group=\"\""));
        assert!(text.contains("scope=\"namespace\",component=\"apiserver\"} 1\n"));
        drop(guard);
        let text = m.render(&BTreeMap::new());
        assert!(text.contains("scope=\"namespace\",component=\"apiserver\"} 0\n"));
    }
}
