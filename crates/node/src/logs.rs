//! The node's log endpoint, what kubelet serves on its port 10250 for `kubectl logs`: the API
//! server proxies `pods/log` to `GET /containerLogs/{namespace}/{pod}/{container}` here.
//!
//! Requests must carry the bearer token the agent was configured with (on one machine, the
//! token of the kubeconfig it uses, which the embedded API server also holds). Supported
//! parameters: `follow`, `previous`, `tailLines`, `limitBytes`.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

type Body = BoxBody<Bytes, std::io::Error>;

#[derive(Debug, Clone)]
struct Entry {
    uid: String,
    dir: PathBuf,
    /// container → (current attempt, running).
    containers: BTreeMap<String, (u32, bool)>,
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

    fn get(&self, ns: &str, name: &str) -> Option<Entry> {
        self.0.lock().ok()?.get(&(ns.to_owned(), name.to_owned())).cloned()
    }
}

fn text(code: StatusCode, msg: String) -> Response<Body> {
    let mut r =
        Response::new(Full::new(Bytes::from(msg)).map_err(|e: Infallible| match e {}).boxed());
    *r.status_mut() = code;
    r
}

/// Serves one request.
pub async fn handle(
    index: LogIndex,
    token: Option<Arc<str>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let authorized = token.as_deref().is_some_and(|t| {
        req.headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|v| v == t)
    });
    if !authorized {
        return Ok(text(StatusCode::UNAUTHORIZED, "Unauthorized".into()));
    }
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["containerLogs", ns, pod, container] = parts.as_slice() else {
        return Ok(text(StatusCode::NOT_FOUND, format!("no handler for {path}")));
    };
    let q: HashMap<String, String> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let flag = |k: &str| q.get(k).is_some_and(|v| v.is_empty() || v == "true" || v == "1");
    let Some(entry) = index.get(ns, pod) else {
        return Ok(text(StatusCode::NOT_FOUND, format!("pod {ns}/{pod} not found on this node")));
    };
    let Some(&(attempt, running)) = entry.containers.get(*container) else {
        return Ok(text(
            StatusCode::BAD_REQUEST,
            format!("container {container} is not valid for pod {pod}"),
        ));
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
        return Ok(text(StatusCode::BAD_REQUEST, msg));
    }
    let mut data = match tokio::fs::read(&file).await {
        Ok(d) => d,
        Err(e) => return Ok(text(StatusCode::INTERNAL_SERVER_ERROR, format!("reading logs: {e}"))),
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
        return Ok(Response::new(
            Full::new(Bytes::from(data)).map_err(|e: Infallible| match e {}).boxed(),
        ));
    }
    // Follow: send what is there, then new output until this container run ends.
    let state = Follow {
        index,
        ns: (*ns).to_owned(),
        pod: (*pod).to_owned(),
        container: (*container).to_owned(),
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
    Ok(Response::new(BodyExt::boxed(StreamBody::new(stream))))
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

/// Accepts connections on `listener` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, index: LogIndex, token: Option<Arc<str>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let index = index.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req| handle(index.clone(), token.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
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
