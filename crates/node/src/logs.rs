//! Container logs, what kubelet serves for `kubectl logs`: the API server proxies `pods/log` to
//! `GET /containerLogs/{namespace}/{pod}/{container}` of the kubelet API (`server`). Supported
//! parameters: `follow`, `previous`, `tailLines`, `limitBytes` (`timestamps` and `sinceSeconds`
//! are ignored: the log files hold the raw output, without kubelet's CRI log timestamps).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
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

/// `GET /containerLogs/{ns}/{pod}/{container}`: the container's log, or new output as it comes
/// with `follow`.
pub(crate) async fn handle(
    index: LogIndex,
    ns: &str,
    pod: &str,
    container: &str,
    query: &[(String, String)],
) -> Response<Body> {
    let q: HashMap<String, String> = query.iter().cloned().collect();
    let flag = |k: &str| q.get(k).is_some_and(|v| v.is_empty() || v == "true" || v == "1");
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
    let mut data = match tokio::fs::read(&file).await {
        Ok(d) => d,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("reading logs: {e}")),
    };
    let offset = data.len() as u64;
    if let Some(n) = q.get("tailLines").and_then(|v| v.parse::<usize>().ok()) {
        data = tail_lines(&data, n).to_vec();
    }
    let limit = q.get("limitBytes").and_then(|v| v.parse::<usize>().ok());
    if let Some(l) = limit {
        data.truncate(l);
    }
    let follow = flag("follow") && running && !previous && limit.is_none();
    if !follow {
        return Response::new(
            Full::new(Bytes::from(data)).map_err(|e: Infallible| match e {}).boxed(),
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
        first: Some(data),
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
    offset: u64,
    first: Option<Vec<u8>>,
    done: bool,
}

impl Follow {
    async fn read_more(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut f = tokio::fs::File::open(&self.file).await?;
        f.seek(std::io::SeekFrom::Start(self.offset)).await?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).await?;
        if buf.is_empty() {
            return Ok(None);
        }
        self.offset += buf.len() as u64;
        Ok(Some(buf))
    }

    fn still_running(&self) -> bool {
        self.index
            .get(&self.ns, &self.pod)
            .and_then(|e| e.containers.get(&self.container).copied())
            .is_some_and(|(a, running)| a == self.attempt && running)
    }
}

fn tail_lines(data: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &[];
    }
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let mut count = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            count += 1;
            if count == n {
                return &data[i + 1..];
            }
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_lines() {
        assert_eq!(tail_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail_lines(b"a\nb\nc", 1), b"c");
        assert_eq!(tail_lines(b"a\n", 5), b"a\n");
        assert_eq!(tail_lines(b"a\n", 0), b"");
    }
}
