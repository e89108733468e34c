//! Container logs, what kubelet serves for `kubectl logs`: the API server proxies `pods/log` to
//! `GET /containerLogs/{namespace}/{pod}/{container}` of the kubelet API (`server`).
//!
//! Each container run's log (`pods/<uid>/logs/<container>/<attempt>.log`) is written by its
//! shim (`shim`) in the CRI log format, one record per line: `<RFC 3339 time> <stdout|stderr>
//! <F|P> <content>`. This module reads them as kubelet's `kuberuntime/logs` does: the prefix is
//! stripped (and the time put back, fixed to nine digits, with `timestamps`), `P` records are
//! joined with what follows, `sinceSeconds`/`sinceTime` skip older records, `tailLines` counts
//! records from the end, `limitBytes` cuts the output, `follow` streams new records until the
//! run ends, `previous` reads the run before, `stream` (`Stdout`, `Stderr`; upstream's
//! `PodLogsQuerySplitStreams`) keeps one stream. Not done: rotated files (there is no rotation).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use jiff::Timestamp;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use crate::server::{Body, text};

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub uid: String,
    pub dir: PathBuf,
    /// container → (current attempt, running).
    pub containers: BTreeMap<String, (u32, bool)>,
}

/// Where each pod's logs are, kept current by the pod workers.
#[derive(Debug, Clone, Default)]
pub struct LogIndex(Arc<Mutex<HashMap<(String, String), Entry>>>);

impl Entry {
    /// The bundle directory of a container attempt (`worker`'s layout: `logs/` and
    /// `containers/` side by side in the pod's directory).
    pub(crate) fn bundle(&self, container: &str, attempt: u32) -> PathBuf {
        let pod_dir = self.dir.parent().unwrap_or(&self.dir);
        pod_dir.join("containers").join(container).join(attempt.to_string())
    }
}

impl LogIndex {
    pub fn set(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
        dir: PathBuf,
        containers: BTreeMap<String, (u32, bool)>,
    ) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(
                (ns.to_owned(), name.to_owned()),
                Entry { uid: uid.to_owned(), dir, containers },
            );
        }
    }

    pub fn remove(&self, ns: &str, name: &str, uid: &str) {
        if let Ok(mut m) = self.0.lock()
            && m.get(&(ns.to_owned(), name.to_owned())).is_some_and(|e| e.uid == uid)
        {
            m.remove(&(ns.to_owned(), name.to_owned()));
        }
    }

    pub(crate) fn get(&self, ns: &str, name: &str) -> Option<Entry> {
        self.0.lock().ok()?.get(&(ns.to_owned(), name.to_owned())).cloned()
    }
}

/// What the query asks for (kubelet's `logOptions`, from `PodLogOptions`).
#[derive(Debug, Clone, Default)]
struct Options {
    timestamps: bool,
    /// Records older than this are skipped (`sinceSeconds`, `sinceTime`: the later of both).
    since: Option<Timestamp>,
    tail: Option<usize>,
    limit: Option<usize>,
    /// `stream`: only stderr (`Some(true)`) or only stdout (`Some(false)`); `None` for `All`.
    stderr_only: Option<bool>,
}

impl Options {
    fn from_query(q: &HashMap<String, String>, now: Timestamp) -> Result<Self, String> {
        let flag = |k: &str| {
            q.get(k).is_some_and(|v| {
                matches!(v.as_str(), "" | "1" | "t" | "T" | "true" | "True" | "TRUE")
            })
        };
        let num = |k: &str| -> Result<Option<i64>, String> {
            q.get(k)
                .map(|v| v.parse::<i64>().map_err(|_| format!("{k}: invalid value {v:?}")))
                .transpose()
        };
        let mut since = None;
        if let Some(s) = num("sinceSeconds")? {
            if s < 1 {
                return Err("sinceSeconds: must be greater than 0".into());
            }
            since = now.checked_sub(jiff::SignedDuration::from_secs(s)).ok();
        }
        if let Some(t) = q.get("sinceTime") {
            let t: Timestamp =
                t.parse().map_err(|_| format!("sinceTime: {t:?} is not an RFC 3339 time"))?;
            since = Some(since.map_or(t, |s: Timestamp| s.max(t)));
        }
        let tail = num("tailLines")?.map(|n| usize::try_from(n.max(0)).unwrap_or(0));
        let limit = match num("limitBytes")? {
            Some(n) if n < 1 => return Err("limitBytes: must be greater than 0".into()),
            n => n.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        };
        // Upstream's `PodLogsQuerySplitStreams`: one stream, and then no tailLines.
        let stderr_only = match q.get("stream").map(String::as_str) {
            None | Some("All") => None,
            Some("Stdout") => Some(false),
            Some("Stderr") => Some(true),
            Some(other) => {
                return Err(format!("stream: unsupported value {other:?}: All, Stdout or Stderr"));
            }
        };
        if stderr_only.is_some() && tail.is_some() {
            return Err("tailLines: may not be specified when stream is not All".into());
        }
        Ok(Options { timestamps: flag("timestamps"), since, tail, limit, stderr_only })
    }
}

/// One record of a log file.
#[derive(Debug, PartialEq)]
struct Record<'a> {
    /// `None` for a line not in the CRI format (written raw by an agent before the shim).
    ts: Option<Timestamp>,
    stderr: bool,
    partial: bool,
    content: &'a [u8],
}

/// Parses one line (without its newline) of a CRI log file: `<RFC 3339 time> <stdout|stderr>
/// <F|P>[:more tags] <content>` (kubelet's `parseCRILog`). Anything else is content as it is.
fn parse(line: &[u8]) -> Record<'_> {
    let raw = Record { ts: None, stderr: false, partial: false, content: line };
    let mut parts = line.splitn(4, |b| *b == b' ');
    let (Some(ts), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
        return raw;
    };
    let Some(ts) = std::str::from_utf8(ts).ok().and_then(|t| t.parse::<Timestamp>().ok()) else {
        return raw;
    };
    if stream != b"stdout" && stream != b"stderr" {
        return raw;
    }
    let partial = tag.split(|b| *b == b':').next() == Some(b"P");
    let stderr = stream == b"stderr";
    Record { ts: Some(ts), stderr, partial, content: parts.next().unwrap_or_default() }
}

/// Turns records into what kubelet sends (its `logWriter`): the content, a newline after a full
/// line, the timestamp before each line with `timestamps` (not before the rest of a partial
/// one), nothing older than `since`, and no more than `limitBytes` in all.
struct Writer {
    opts: Options,
    at_line_start: bool,
    remain: Option<usize>,
}

impl Writer {
    fn new(opts: Options) -> Self {
        let remain = opts.limit;
        Writer { opts, at_line_start: true, remain }
    }

    /// Appends the output of `rec` to `out`; false once the byte limit is reached.
    fn write(&mut self, rec: &Record<'_>, out: &mut Vec<u8>) -> bool {
        let starts_line = std::mem::replace(&mut self.at_line_start, !rec.partial);
        if let (Some(since), Some(ts)) = (self.opts.since, rec.ts)
            && ts < since
        {
            return true;
        }
        if self.opts.stderr_only.is_some_and(|e| e != rec.stderr) {
            return true;
        }
        let mark = out.len();
        if self.opts.timestamps
            && starts_line
            && let Some(ts) = rec.ts
        {
            out.extend_from_slice(format!("{ts:.9} ").as_bytes());
        }
        out.extend_from_slice(rec.content);
        if !rec.partial {
            out.push(b'\n');
        }
        if let Some(remain) = self.remain.as_mut() {
            let written = out.len() - mark;
            if written >= *remain {
                out.truncate(mark + *remain);
                *remain = 0;
                return false;
            }
            *remain -= written;
        }
        true
    }

    /// Writes the complete lines of `data`; returns how many bytes were used (up to the last
    /// newline) and whether the limit still allows more.
    fn write_lines(&mut self, data: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let used = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let Some(lines) = data[..used].strip_suffix(b"\n") else { return (0, true) };
        for line in lines.split(|b| *b == b'\n') {
            if !self.write(&parse(line), out) {
                return (used, false);
            }
        }
        (used, true)
    }
}

/// `GET /containerLogs/{ns}/{pod}/{container}`: the container's log as kubelet serves it
/// (`follow`, `previous`, `timestamps`, `sinceSeconds`, `sinceTime`, `tailLines`,
/// `limitBytes`); with `follow`, new output as it is written until the container run ends.
pub(crate) async fn handle(
    index: LogIndex,
    ns: &str,
    pod: &str,
    container: &str,
    query: &[(String, String)],
) -> Response<Body> {
    let q: HashMap<String, String> = query.iter().cloned().collect();
    let flag = |k: &str| q.get(k).is_some_and(|v| v.is_empty() || v == "true" || v == "1");
    let opts = match Options::from_query(&q, Timestamp::now()) {
        Ok(o) => o,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    let Some(entry) = index.get(ns, pod) else {
        return text(StatusCode::NOT_FOUND, format!("pod {ns}/{pod} not found on this node"));
    };
    let Some(&(attempt, running)) = entry.containers.get(container) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("container {container} is not valid for pod {pod}"),
        );
    };
    let previous = flag("previous");
    let attempt = if previous { attempt.saturating_sub(1) } else { attempt };
    let file = entry.dir.join(container).join(format!("{attempt}.log"));
    if attempt == 0 || !file.exists() {
        let msg = if previous {
            format!("previous terminated container \"{container}\" in pod \"{pod}\" not found")
        } else {
            format!(
                "container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
            )
        };
        return text(StatusCode::BAD_REQUEST, msg);
    }
    let data = match tokio::fs::read(&file).await {
        Ok(d) => d,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("reading logs: {e}")),
    };
    let follow = flag("follow") && running && !previous;
    let start = opts.tail.map_or(0, |n| tail_lines(&data, n));
    let mut w = Writer::new(opts);
    let mut first = Vec::new();
    let (used, more) = w.write_lines(&data[start..], &mut first);
    let offset = (start + used) as u64;
    if !follow || !more {
        // Kubelet also sends a last line without its newline (a write in progress).
        if more && start + used < data.len() {
            w.write(&parse(&data[start + used..]), &mut first);
        }
        return Response::new(
            Full::new(Bytes::from(first)).map_err(|e: Infallible| match e {}).boxed(),
        );
    }
    // Follow: send what is there, then new output until this container run ends.
    let state = Follow {
        index,
        ns: ns.to_owned(),
        pod: pod.to_owned(),
        container: container.to_owned(),
        attempt,
        file,
        offset,
        first: Some(first),
        writer: w,
        done: false,
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        if let Some(first) = s.first.take() {
            return Some((Ok(Frame::data(Bytes::from(first))), s));
        }
        if s.done {
            return None;
        }
        loop {
            match s.read_more().await {
                Ok(Some(chunk)) => return Some((Ok(Frame::data(Bytes::from(chunk))), s)),
                Ok(None) if s.done => return None,
                Ok(None) => {
                    if !s.still_running() {
                        // One last read for output written just before the exit.
                        s.done = true;
                        return match s.read_more().await {
                            Ok(Some(chunk)) => Some((Ok(Frame::data(Bytes::from(chunk))), s)),
                            _ => None,
                        };
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Some((Err(e), s)),
            }
        }
    });
    Response::new(BodyExt::boxed(StreamBody::new(stream)))
}

struct Follow {
    index: LogIndex,
    ns: String,
    pod: String,
    container: String,
    attempt: u32,
    file: PathBuf,
    /// Where the next unread line starts.
    offset: u64,
    first: Option<Vec<u8>>,
    writer: Writer,
    done: bool,
}

impl Follow {
    /// The output of the complete lines written since the last read, if any.
    async fn read_more(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut f = tokio::fs::File::open(&self.file).await?;
        f.seek(std::io::SeekFrom::Start(self.offset)).await?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).await?;
        let mut out = Vec::new();
        let (used, more) = self.writer.write_lines(&buf, &mut out);
        self.offset += used as u64;
        if !more {
            // The byte limit is reached: this is the end.
            self.done = true;
        }
        Ok((!out.is_empty()).then_some(out))
    }

    fn still_running(&self) -> bool {
        self.index
            .get(&self.ns, &self.pod)
            .and_then(|e| e.containers.get(&self.container).copied())
            .is_some_and(|(a, running)| a == self.attempt && running)
    }
}

/// Where the last `n` lines (records) of `data` start, as kubelet's
/// `tail.FindTailLineStartIndex` counts them: a partial record is a line of its own.
fn tail_lines(data: &[u8], n: usize) -> usize {
    if n == 0 {
        return data.len();
    }
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let mut count = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            count += 1;
            if count == n {
                return i + 1;
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(data: &str, opts: Options) -> String {
        let start = opts.tail.map_or(0, |n| tail_lines(data.as_bytes(), n));
        let mut w = Writer::new(opts);
        let mut out = Vec::new();
        w.write_lines(&data.as_bytes()[start..], &mut out);
        String::from_utf8(out).unwrap()
    }

    const LOG: &str = "2026-12-06T22:00:00.100000000Z stdout F one\n\
                       2026-12-06T22:00:01.2Z stderr F two\n\
                       2026-12-06T22:00:02.000000300Z stdout P thr\n\
                       2026-12-06T22:00:03.000000000Z stdout F ee\n";

    #[test]
    fn tails_lines() {
        assert_eq!(tail_lines(b"a\nb\nc\n", 2), 2);
        assert_eq!(tail_lines(b"a\nb\nc", 1), 4);
        assert_eq!(tail_lines(b"a\n", 5), 0);
        assert_eq!(tail_lines(b"a\n", 0), 2);
    }

    #[test]
    fn cri_prefixes_are_stripped_and_partial_lines_joined() {
        assert_eq!(render(LOG, Options::default()), "one\ntwo\nthree\n");
    }

    #[test]
    fn timestamps_are_fixed_width_and_only_at_line_starts() {
        let opts = Options { timestamps: true, ..Default::default() };
        assert_eq!(
            render(LOG, opts),
            "2026-12-06T22:00:00.100000000Z one\n\
             2026-12-06T22:00:01.200000000Z two\n\
             2026-12-06T22:00:02.000000300Z three\n"
        );
    }

    #[test]
    fn since_tail_and_limit_follow_kubelet() {
        let since = "2026-12-06T22:00:01Z".parse().ok();
        assert_eq!(render(LOG, Options { since, ..Default::default() }), "two\nthree\n");
        assert_eq!(render(LOG, Options { tail: Some(1), ..Default::default() }), "ee\n");
        assert_eq!(render(LOG, Options { limit: Some(6), ..Default::default() }), "one\ntw");
        let stderr = Options { stderr_only: Some(true), ..Default::default() };
        assert_eq!(render(LOG, stderr), "two\n");
        let stdout = Options { stderr_only: Some(false), ..Default::default() };
        assert_eq!(render(LOG, stdout), "one\nthree\n");
    }

    #[test]
    fn lines_outside_the_cri_format_pass_through() {
        assert_eq!(render("plain text\n", Options::default()), "plain text\n");
        assert_eq!(parse(b"x stdout F y").ts, None);
    }

    #[test]
    fn query_options_are_checked() {
        let now: Timestamp = "2026-12-06T22:00:10Z".parse().unwrap();
        let q = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        let o =
            Options::from_query(&q(&[("sinceSeconds", "5"), ("timestamps", "true")]), now).unwrap();
        assert_eq!(o.since, "2026-12-06T22:00:05Z".parse().ok());
        assert!(o.timestamps);
        let o = Options::from_query(
            &q(&[("sinceSeconds", "5"), ("sinceTime", "2026-12-06T22:00:08Z")]),
            now,
        )
        .unwrap();
        assert_eq!(o.since, "2026-12-06T22:00:08Z".parse().ok());
        assert!(Options::from_query(&q(&[("sinceTime", "yesterday")]), now).is_err());
        assert!(Options::from_query(&q(&[("limitBytes", "0")]), now).is_err());
        let o = Options::from_query(&q(&[("stream", "Stderr")]), now).unwrap();
        assert_eq!(o.stderr_only, Some(true));
        assert!(Options::from_query(&q(&[("stream", "Stderr"), ("tailLines", "1")]), now).is_err());
        assert!(Options::from_query(&q(&[("stream", "stdout")]), now).is_err());
    }
}
