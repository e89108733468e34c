//! Specialisation by code of a claimed pool pod (issue 12 part 3): the pod already runs a
//! language runtime speaking Fission's environment protocol; the agent puts the claimant's code
//! into the pod's volume and asks the runtime to load it. Fission's environment images work
//! unchanged.
//!
//! The claim (`kinetic_controllers::podpool::claim_for_code`) writes a
//! [`CodeRequest`] in [`SPECIALIZE_CODE_ANNOTATION`] and leaves the spec alone (the runtime keeps
//! running). The worker calls [`run`] once per claim, at the end of a sync:
//! 1. record `observed` in the timeline and persist the record before anything else;
//! 2. pull the code image through the node's image store (what a container's image gets:
//!    the pod's pull secrets, the node's insecure registries, the cache);
//! 3. copy its unpacked layers, bottom first, into the volume's directory on the host
//!    (`<pod dir>/volumes/<volume>/<subPath>`, the emptyDir the runtime has mounted), applying
//!    whiteouts; record `unpacked`;
//! 4. `POST` the specialise call to the runtime at the pod's IP and port (`/specialize` for
//!    interface v1, `/v2/specialize` with Fission's `FunctionLoadRequest` otherwise); a 2xx
//!    answer records `specialized`, anything else (or the request's `timeoutSeconds` passing)
//!    records `failed` with the reason.
//!
//! `crate::specialize::report` then labels the pod `specialized` once it is Ready (the
//! timeline's `ready`) or `failed` (the pool deletes it), from [`outcome`].
//!
//! # Guarantees
//! An agent restart neither repeats nor forgets a specialisation: the record is persisted with
//! `observed` before the work starts, so a new agent that finds `observed` without `specialized`
//! or `failed` knows the work was interrupted and fails the pod (the runtime may have half
//! loaded the code; a fresh pool pod is cheaper than guessing), and one that finds
//! `specialized` only reports it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kinetic_api::pool::{
    CLAIMED_AT_ANNOTATION, CodeRequest, POOL_STATE_LABEL, SPECIALIZE_CODE_ANNOTATION, state,
};
use kinetic_api::timeline::Specialization;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::specialize::Outcome;
use crate::state::PodRecord;

/// The code specialisation `pod` asks for: `None` without the annotation, `Some(Err(why))` when
/// the annotation cannot be read.
pub fn request(pod: &Pod) -> Option<Result<CodeRequest, String>> {
    let raw = pod.metadata.annotations.as_ref()?.get(SPECIALIZE_CODE_ANNOTATION)?;
    Some(
        serde_json::from_str::<CodeRequest>(raw)
            .map_err(|e| format!("annotation {SPECIALIZE_CODE_ANNOTATION}: {e}"))
            .and_then(|r| {
                let bad = r.image.is_empty()
                    || r.sub_path.split('/').any(|c| c == "..")
                    || Path::new(&r.sub_path).is_absolute()
                    || r.volume.is_empty()
                    || r.volume.contains('/')
                    || !(1..=65535).contains(&r.port);
                if bad {
                    Err(format!("annotation {SPECIALIZE_CODE_ANNOTATION}: invalid request {raw}"))
                } else {
                    Ok(r)
                }
            }),
    )
}

/// What the worker should do about a code claim now.
#[derive(Debug, PartialEq)]
pub enum Due {
    /// Nothing: no code claim, or it has been done (or failed) already.
    Nothing,
    /// Start it (first sight of the claim).
    Start(CodeRequest),
    /// The annotation is unusable, or an earlier agent started and did not finish: fail.
    Fail(String),
}

/// Decides [`Due`] from the pod and the persisted record.
pub fn due(pod: &Pod, rec: &PodRecord) -> Due {
    let Some(req) = request(pod) else { return Due::Nothing };
    let s = rec.timeline.specialization.as_ref();
    if s.is_some_and(|s| s.specialized.is_some() || s.failed.is_some()) {
        return Due::Nothing;
    }
    // Reported already (by this agent before its record was lost, say): never again.
    let label = pod.metadata.labels.as_ref().and_then(|l| l.get(POOL_STATE_LABEL));
    if label.is_some_and(|l| l == state::SPECIALIZED || l == state::FAILED) {
        return Due::Nothing;
    }
    match req {
        Err(why) => Due::Fail(why),
        Ok(_) if s.is_some_and(|s| s.observed.is_some()) => Due::Fail(
            "the node agent restarted during the specialisation; the runtime's state is unknown"
                .to_owned(),
        ),
        Ok(r) => Due::Start(r),
    }
}

/// Records the claim's first sight (claim time, code image) in the timeline.
pub fn observe(pod: &Pod, rec: &mut PodRecord, image: &str) {
    let s = rec.timeline.specialization.get_or_insert_with(Specialization::default);
    s.observed = Some(Timestamp::now());
    let ann = pod.metadata.annotations.as_ref();
    s.claimed = ann.and_then(|a| a.get(CLAIMED_AT_ANNOTATION)).and_then(|t| t.parse().ok());
    image.clone_into(&mut s.image);
}

/// Records a failure (reported by [`outcome`]).
pub fn fail(rec: &mut PodRecord, why: String) {
    let s = rec.timeline.specialization.get_or_insert_with(Specialization::default);
    s.failed = Some(why);
}

/// How a code specialisation ended, for `crate::specialize::report` to report: `Failed`
/// until the pod carries the `failed` label, `Ready` once the runtime took the code and the pod
/// is Ready.
pub fn outcome(pod: &Pod, rec: &PodRecord, pod_ready: bool) -> Option<Outcome> {
    let _ = request(pod)?;
    let s = rec.timeline.specialization.as_ref()?;
    let label =
        pod.metadata.labels.as_ref().and_then(|l| l.get(POOL_STATE_LABEL)).map(String::as_str);
    if let Some(why) = &s.failed {
        return (label != Some(state::FAILED)).then(|| Outcome::Failed(why.clone()));
    }
    (s.specialized.is_some() && s.ready.is_none() && pod_ready).then_some(Outcome::Ready)
}

/// Does the work of a [`Due::Start`]: pull, unpack, specialise, bounded by the request's
/// `timeoutSeconds`; records `unpacked` and `specialized`, or `failed`.
pub async fn run(
    images: &kinetic_image::Store,
    opts: &kinetic_image::PullOptions,
    volumes_dir: &Path,
    pod_ip: Option<&str>,
    req: &CodeRequest,
    rec: &mut PodRecord,
) {
    let limit = Duration::from_secs(u64::try_from(req.timeout_seconds.max(1)).unwrap_or(1));
    let work = async {
        let image = match images.local(&req.image).filter(|_| !pulls_always(&req.image)) {
            Some(img) => img,
            None => images
                .pull(&req.image, opts, &kinetic_image::NoProgress)
                .await
                .map_err(|e| format!("ErrImagePull: {}", crate::report(&e)))?,
        };
        let target = volumes_dir.join(&req.volume).join(&req.sub_path);
        let layers = image.layers.clone();
        tokio::task::spawn_blocking(move || unpack(&layers, &target))
            .await
            .map_err(|e| format!("unpacking the code: {e}"))?
            .map_err(|e| format!("unpacking the code image {:?}: {e}", req.image))?;
        let unpacked = Timestamp::now();
        let ip = pod_ip.ok_or_else(|| "the pod has no IP".to_owned())?;
        call(ip, req).await.map(|()| unpacked)
    };
    let result = match tokio::time::timeout(limit, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("the specialisation did not end within {}s", limit.as_secs())),
    };
    let s = rec.timeline.specialization.get_or_insert_with(Specialization::default);
    match result {
        Ok(unpacked) => {
            s.unpacked = Some(unpacked);
            s.specialized = Some(Timestamp::now());
        }
        Err(why) => s.failed = Some(why),
    }
}

/// Whether an image reference is pulled at every use (`:latest` or no tag), as kubelet's
/// default pull policy says.
fn pulls_always(reference: &str) -> bool {
    !reference.contains('@') && {
        let last = reference.rsplit('/').next().unwrap_or(reference);
        !last.contains(':') || last.ends_with(":latest")
    }
}

/// Copies the unpacked layer directories (bottom first) into `target`: files, directories and
/// symlinks; an overlayfs whiteout (a 0/0 character device) removes what lower layers put at
/// its path.
///
/// # Errors
/// A read or write failed.
pub fn unpack(layers: &[PathBuf], target: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(target)?;
    for layer in layers {
        copy_tree(layer, target)?;
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt as _;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ft = e.file_type()?;
        if ft.is_char_device() {
            remove(&dst)?;
        } else if ft.is_dir() {
            if dst.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
                remove(&dst)?;
            }
            std::fs::create_dir_all(&dst)?;
            std::fs::set_permissions(&dst, e.metadata()?.permissions())?;
            copy_tree(&src, &dst)?;
        } else if ft.is_symlink() {
            remove(&dst)?;
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if ft.is_file() {
            if dst.symlink_metadata().is_ok_and(|m| !m.is_file()) {
                remove(&dst)?;
            }
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

fn remove(p: &Path) -> std::io::Result<()> {
    match p.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The specialise call's HTTP/1.1 request to the runtime at `ip`.
pub fn http_request(ip: &str, req: &CodeRequest) -> Vec<u8> {
    let body = req.body().map(|b| b.to_string()).unwrap_or_default();
    let mut out = format!(
        "POST {} HTTP/1.1\r\nHost: {ip}:{}\r\nUser-Agent: kinetic-node\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        req.path(),
        req.port,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// The status code and body of an HTTP/1.x answer (the body as far as it was read).
pub fn parse_response(raw: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .lines()
        .next()
        .filter(|l| l.starts_with("HTTP/1."))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("malformed HTTP answer {:?}", head.lines().next().unwrap_or("")))?;
    Ok((status, body.trim().to_owned()))
}

/// The most of an answer read: a specialise call answers briefly; more is not needed to say
/// why it failed.
const MAX_ANSWER: usize = 16 * 1024;

/// POSTs the specialise call; a connection refused is retried every 50 ms (the runtime may be
/// restarting) until the caller's bound.
async fn call(ip: &str, req: &CodeRequest) -> Result<(), String> {
    let port = u16::try_from(req.port).map_err(|_| format!("invalid port {}", req.port))?;
    let url = format!("http://{ip}:{port}{}", req.path());
    let mut s = loop {
        match tokio::net::TcpStream::connect((ip, port)).await {
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(format!("Post {url:?}: {e}")),
        }
    };
    let _ = s.set_nodelay(true);
    s.write_all(&http_request(ip, req)).await.map_err(|e| format!("Post {url:?}: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while raw.len() < MAX_ANSWER {
        let n = s.read(&mut buf).await.map_err(|e| format!("Post {url:?}: {e}"))?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let (status, body) = parse_response(&raw).map_err(|e| format!("Post {url:?}: {e}"))?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("the runtime answered {url} with {status}: {body}"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn req(version: i32) -> CodeRequest {
        CodeRequest {
            image: "reg/app:v1".into(),
            function_name: "main.handler".into(),
            url: "/".into(),
            volume: "userfunc".into(),
            sub_path: if version == 1 { String::new() } else { "uid".into() },
            filepath: if version == 1 { "/userfunc/user".into() } else { "/userfunc/uid".into() },
            port: 8888,
            version,
            timeout_seconds: 5,
        }
    }

    fn pod(ann: Option<String>, label: &str) -> Pod {
        let mut p = json!({"metadata": {"name": "p",
            "labels": {"kinetic.dev/pool-state": label},
            "annotations": {CLAIMED_AT_ANNOTATION: "2026-12-07T01:00:00.5Z"}}});
        if let Some(a) = ann {
            p["metadata"]["annotations"][SPECIALIZE_CODE_ANNOTATION] = json!(a);
        }
        serde_json::from_value(p).unwrap()
    }

    #[test]
    fn the_v2_call_is_fissions_load_request_and_v1_has_no_body() {
        let v2 = String::from_utf8(http_request("10.0.0.5", &req(2))).unwrap();
        expect_test::expect![[r#"
            POST /v2/specialize HTTP/1.1
            Host: 10.0.0.5:8888
            User-Agent: kinetic-node
            Content-Type: application/json
            Content-Length: 83
            Connection: close

            {"filepath":"/userfunc/uid","functionName":"main.handler","url":"/","envVersion":2}"#]]
        .assert_eq(&v2.replace("\r\n", "\n"));
        let v1 = String::from_utf8(http_request("10.0.0.5", &req(1))).unwrap();
        assert!(v1.starts_with("POST /specialize HTTP/1.1\r\n"), "{v1}");
        assert!(v1.ends_with("Content-Length: 0\r\nConnection: close\r\n\r\n"), "{v1}");
    }

    #[test]
    fn answers_parse_to_status_and_body() {
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"),
            Ok((200, "ok".into()))
        );
        assert_eq!(
            parse_response(b"HTTP/1.0 500 Internal Server Error\r\n\r\nspecialize failed: boom"),
            Ok((500, "specialize failed: boom".into()))
        );
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_response(b"").is_err());
    }

    #[test]
    fn due_starts_once_fails_a_restart_mid_way_and_a_bad_annotation() {
        let ann = serde_json::to_string(&req(2)).unwrap();
        let p = pod(Some(ann.clone()), "claimed");
        let mut rec = PodRecord::new("u", "default", "p");
        assert_eq!(due(&pod(None, "ready"), &rec), Due::Nothing);
        assert_eq!(due(&p, &rec), Due::Start(req(2)));
        observe(&p, &mut rec, "reg/app:v1");
        let s = rec.timeline.specialization.clone().unwrap();
        assert_eq!(s.claimed, Some("2026-12-07T01:00:00.5Z".parse().unwrap()));
        assert_eq!(s.image, "reg/app:v1");
        // Persisted with `observed` and found again by a new agent: interrupted.
        assert!(matches!(due(&p, &rec), Due::Fail(_)));
        // Done: nothing more, and Ready is reported once the pod is Ready.
        rec.timeline.specialization.as_mut().unwrap().specialized = Some(Timestamp::now());
        assert_eq!(due(&p, &rec), Due::Nothing);
        assert_eq!(outcome(&p, &rec, false), None);
        assert_eq!(outcome(&p, &rec, true), Some(Outcome::Ready));

        assert!(matches!(due(&pod(Some("{".into()), "claimed"), &rec_new()), Due::Fail(_)));
        // A pod labelled already is never specialised again, even without its record.
        assert_eq!(due(&pod(Some(ann.clone()), "specialized"), &rec_new()), Due::Nothing);
        assert_eq!(due(&pod(Some(ann), "failed"), &rec_new()), Due::Nothing);
        let escape = CodeRequest { sub_path: "../../etc".into(), ..req(2) };
        let p = pod(Some(serde_json::to_string(&escape).unwrap()), "claimed");
        assert!(matches!(due(&p, &rec_new()), Due::Fail(_)));
    }

    fn rec_new() -> PodRecord {
        PodRecord::new("u", "default", "p")
    }

    #[test]
    fn a_failure_is_reported_until_the_pod_is_labelled_failed() {
        let ann = serde_json::to_string(&req(2)).unwrap();
        let mut rec = rec_new();
        fail(&mut rec, "the runtime answered 500".into());
        let claimed = pod(Some(ann.clone()), "claimed");
        assert_eq!(
            outcome(&claimed, &rec, true),
            Some(Outcome::Failed("the runtime answered 500".into()))
        );
        assert_eq!(outcome(&pod(Some(ann), "failed"), &rec, true), None);
        assert_eq!(outcome(&pod(None, "claimed"), &rec, true), None);
    }

    #[test]
    fn layers_are_copied_bottom_first_with_whiteouts() {
        let d = tempfile::tempdir().unwrap();
        let (l1, l2, out) = (d.path().join("l1"), d.path().join("l2"), d.path().join("out/uid"));
        std::fs::create_dir_all(l1.join("pkg")).unwrap();
        std::fs::write(l1.join("main.py"), "v1").unwrap();
        std::fs::write(l1.join("pkg/old.py"), "old").unwrap();
        std::fs::write(l1.join("gone.py"), "x").unwrap();
        std::fs::create_dir_all(l2.join("pkg")).unwrap();
        std::fs::write(l2.join("main.py"), "v2").unwrap();
        std::os::unix::fs::symlink("main.py", l2.join("link.py")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            l2.join("gone.py"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0),
            0,
        )
        .expect("mknod (the node agent's tests run as root)");
        unpack(&[l1, l2], &out).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("main.py")).unwrap(), "v2");
        assert_eq!(std::fs::read_to_string(out.join("pkg/old.py")).unwrap(), "old");
        assert_eq!(std::fs::read_link(out.join("link.py")).unwrap(), Path::new("main.py"));
        assert!(!out.join("gone.py").exists());
    }
}
