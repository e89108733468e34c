//! Service account tokens of projected volumes (`serviceAccountToken` sources, the `token` of
//! the `kube-api-access-*` volume), as kubelet's token manager and projected volume plugin do:
//! the token is requested with TokenRequest (`serviceaccounts/<sa>/token`) for the pod's
//! service account, bound to the pod, with the projection's `audience` and
//! `expirationSeconds`, written into the volume, and requested again once 80 % of its lifetime
//! has passed (or after 24 h), replacing the file atomically while the pod runs.
//!
//! `ca.crt` and `namespace` of `kube-api-access-*` come from that volume's other sources (the
//! `kube-root-ca.crt` ConfigMap and the downward API), which [`crate::volumes`] writes.
//!
//! A server that does not serve TokenRequest (`kinetic up` until it issues tokens) gets a
//! FailedMount: the pod stays in ContainerCreating rather than starting with a volume missing
//! its token (issue 10: pods came up without `token` and in-cluster clients could not
//! authenticate).

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount, ServiceAccountTokenProjection};
use kube::Api;
use kube::api::PostParams;

/// Kubelet refreshes a token older than this whatever its lifetime.
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// The wait before another attempt when a refresh fails.
const RETRY: Duration = Duration::from_secs(10);
/// The API's default `expirationSeconds` of a projection.
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// A token the API issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    /// When it was requested (the start of its lifetime, as kubelet counts it).
    pub issued: Timestamp,
    /// `status.expirationTimestamp`.
    pub expires: Timestamp,
}

impl Issued {
    /// How long after issue kubelet asks for a new one: 80 % of its lifetime, at most 24 h.
    pub fn refresh_after(&self) -> Duration {
        let ttl = self.expires.duration_since(self.issued).unsigned_abs();
        ttl.mul_f64(0.8).min(MAX_AGE)
    }
}

/// Where tokens come from (the API server; a fake in tests).
pub trait Issuer: Send + Sync + 'static {
    /// A new token for `pod` and projection `src`, or why there is none (a message for the
    /// pod's FailedMount Event).
    fn issue(
        &self,
        pod: &Pod,
        src: &ServiceAccountTokenProjection,
    ) -> impl Future<Output = Result<Issued, String>> + Send;
}

/// TokenRequest through the API server.
#[derive(Clone)]
pub struct ApiIssuer(pub kube::Client);

impl Issuer for ApiIssuer {
    async fn issue(
        &self,
        pod: &Pod,
        src: &ServiceAccountTokenProjection,
    ) -> Result<Issued, String> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let sa = service_account(pod);
        let api: Api<ServiceAccount> = Api::namespaced(self.0.clone(), ns);
        let req = TokenRequest {
            spec: TokenRequestSpec {
                audiences: src.audience.iter().filter(|a| !a.is_empty()).cloned().collect(),
                expiration_seconds: Some(
                    src.expiration_seconds.unwrap_or(DEFAULT_EXPIRATION_SECONDS),
                ),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            },
            ..Default::default()
        };
        let issued = Timestamp::now();
        match api.create_token_request(sa, &PostParams::default(), &req).await {
            Ok(t) => {
                let st = t.status.ok_or("the TokenRequest answer has no status")?;
                Ok(Issued { token: st.token, issued, expires: st.expiration_timestamp.0 })
            }
            Err(kube::Error::Api(s)) if s.code == 404 && !self.serves_token_request().await => {
                Err("TokenRequest (serviceaccounts/token) is not served by this API server, so \
                     no service account token can be issued"
                    .to_owned())
            }
            Err(kube::Error::Api(s)) => Err(s.message),
            Err(e) => Err(crate::report(&e)),
        }
    }
}

impl ApiIssuer {
    /// Whether discovery lists `serviceaccounts/token` (a 404 then means a missing account).
    async fn serves_token_request(&self) -> bool {
        match self.0.list_core_api_resources("v1").await {
            Ok(list) => list.resources.iter().any(|r| r.name == "serviceaccounts/token"),
            Err(_) => true,
        }
    }
}

/// The pod's service account (`default` when unset, as the API defaults it).
pub fn service_account(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
}

/// One token file of a projected volume.
#[derive(Debug, Clone)]
pub struct TokenFile {
    /// The file on the host (inside the volume's directory).
    pub path: PathBuf,
    pub mode: u32,
    pub source: ServiceAccountTokenProjection,
    /// The volume, for messages.
    pub volume: String,
}

/// Writes `data` to `path` so that a reader sees the old or the new file, never a partial one
/// (a rename inside the bind-mounted volume directory).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, data)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)
}

/// Aborts the refresh task when the pod's worker drops it.
#[derive(Debug)]
pub struct Refresher(tokio::task::JoinHandle<()>);

impl Drop for Refresher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Refreshes `files` for `pod` in the background: each first after `first[i]` (the refresh
/// time of the token written at mount, or zero for a pod adopted after an agent restart).
pub fn spawn_refresher<I: Issuer>(
    issuer: I,
    pod: std::sync::Arc<Pod>,
    files: Vec<(TokenFile, Duration)>,
) -> Option<Refresher> {
    if files.is_empty() {
        return None;
    }
    Some(Refresher(tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let mut due: Vec<(TokenFile, tokio::time::Instant)> =
            files.into_iter().map(|(f, after)| (f, start + after)).collect();
        loop {
            let Some(next) = due.iter().map(|(_, at)| *at).min() else { return };
            tokio::time::sleep_until(next).await;
            let now = tokio::time::Instant::now();
            for (file, at) in due.iter_mut().filter(|(_, at)| *at <= now) {
                *at = match issuer.issue(&pod, &file.source).await {
                    Ok(t) => match write_atomic(&file.path, t.token.as_bytes(), file.mode) {
                        Ok(()) => now + t.refresh_after(),
                        Err(e) => {
                            tracing::warn!(path = %file.path.display(), error = %e, "writing a refreshed service account token failed");
                            now + RETRY
                        }
                    },
                    Err(e) => {
                        tracing::warn!(volume = %file.volume, error = %e, "refreshing a service account token failed");
                        now + RETRY
                    }
                };
            }
        }
    })))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Issues `token-N` valid for `ttl` seconds and counts the requests.
    struct Fake {
        ttl: i64,
        count: Arc<AtomicUsize>,
    }

    impl Issuer for Fake {
        async fn issue(
            &self,
            _pod: &Pod,
            src: &ServiceAccountTokenProjection,
        ) -> Result<Issued, String> {
            assert_eq!(src.audience.as_deref(), Some("vault"));
            let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
            let issued = Timestamp::now();
            let expires = issued + jiff::SignedDuration::from_secs(self.ttl);
            Ok(Issued { token: format!("token-{n}"), issued, expires })
        }
    }

    /// A fake API server: TokenRequest for `default/app` and the `kube-root-ca.crt` ConfigMap;
    /// the token requests it got are kept.
    fn fake_api(requests: Arc<std::sync::Mutex<Vec<serde_json::Value>>>) -> kube::Client {
        use http_body_util::BodyExt as _;
        let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let requests = requests.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                let path = parts.uri.path().to_owned();
                let (code, answer) = match (parts.method.as_str(), path.as_str()) {
                    ("POST", "/api/v1/namespaces/ns/serviceaccounts/app/token") => {
                        let mut req: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        requests.lock().unwrap().push(req.clone());
                        let secs = req["spec"]["expirationSeconds"].as_i64().unwrap();
                        let exp = Timestamp::now() + jiff::SignedDuration::from_secs(secs);
                        req["status"] = serde_json::json!({"token": "tok-1",
                            "expirationTimestamp": exp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()});
                        (201, req)
                    }
                    ("GET", "/api/v1/namespaces/ns/configmaps/kube-root-ca.crt") => (
                        200,
                        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": "kube-root-ca.crt"},
                            "data": {"ca.crt": "-----BEGIN CERTIFICATE-----"}}),
                    ),
                    _ => (
                        404,
                        serde_json::json!({"kind": "Status", "apiVersion": "v1",
                            "status": "Failure", "reason": "NotFound", "code": 404,
                            "message": format!("{path} not found")}),
                    ),
                };
                let resp = http::Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap();
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        kube::Client::new(svc, "default")
    }

    /// The kube-api-access volume as the ServiceAccount admission plugin adds it: the token from
    /// TokenRequest (pod-bound, with the projection's audience and lifetime), `ca.crt` and
    /// `namespace`.
    #[tokio::test]
    async fn kube_api_access_volume_gets_token_ca_and_namespace() {
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let client = fake_api(requests.clone());
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1"},
            "spec": {"serviceAccountName": "app", "containers": [{"name": "c", "image": "i"}],
                "volumes": [{"name": "kube-api-access-x", "projected": {"defaultMode": 420,
                    "sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607,
                        "audience": "vault"}},
                    {"configMap": {"name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace",
                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                ]}}]},
        }))
        .unwrap();
        let mut refs = crate::refs::Refs::fetch(&client, &pod).await.unwrap();
        refs.fetch_tokens(&client, &pod).await;
        assert_eq!(refs.mount_problem(), None);
        let dir = tempfile::tempdir().unwrap();
        crate::volumes::prepare(&pod, dir.path(), &refs, "10.0.0.2", "127.0.0.1").unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join("kube-api-access-x").join(f));
        assert_eq!(read("token").unwrap(), "tok-1");
        assert_eq!(read("ca.crt").unwrap(), "-----BEGIN CERTIFICATE-----");
        assert_eq!(read("namespace").unwrap(), "ns");
        let sent = requests.lock().unwrap().clone();
        assert_eq!(sent.len(), 1);
        assert_eq!(
            sent[0]["spec"],
            serde_json::json!({"audiences": ["vault"], "expirationSeconds": 3607,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u-1"}})
        );
        // The first refresh comes at 80 % of the lifetime (the fake's expiry has whole seconds).
        let files = crate::volumes::token_files(&pod, dir.path(), Some(&refs));
        assert_eq!(files.len(), 1);
        let after = files[0].1.as_secs();
        assert!((2884..=2886).contains(&after), "{after}");
    }

    #[test]
    fn tokens_are_refreshed_at_80_percent_of_their_lifetime_or_after_a_day() {
        let at = Timestamp::now();
        let t = |secs| Issued {
            token: String::new(),
            issued: at,
            expires: at + jiff::SignedDuration::from_secs(secs),
        };
        assert_eq!(t(3600).refresh_after(), Duration::from_secs(2880));
        assert_eq!(t(600).refresh_after(), Duration::from_secs(480));
        assert_eq!(t(7 * 24 * 3600).refresh_after(), MAX_AGE);
    }

    /// The token file is replaced before it expires, atomically, and the refresher stops with
    /// the pod.
    #[tokio::test(start_paused = true)]
    async fn service_account_token_is_refreshed_before_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kube-api-access-x/token");
        write_atomic(&path, b"token-0", 0o644).unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let source = ServiceAccountTokenProjection {
            audience: Some("vault".into()),
            expiration_seconds: Some(600),
            path: "token".into(),
        };
        let file = TokenFile { path: path.clone(), mode: 0o600, source, volume: "v".into() };
        let first = Duration::from_secs(480);
        let r = spawn_refresher(
            Fake { ttl: 600, count: count.clone() },
            Arc::new(Pod::default()),
            vec![(file, first)],
        )
        .unwrap();
        tokio::time::sleep(Duration::from_secs(479)).await;
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "token-0", "not yet at 80 %");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "token-1");
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        tokio::time::sleep(Duration::from_secs(480)).await;
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "token-2");
        drop(r);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(count.load(Ordering::SeqCst), 2, "no refresh after the pod is gone");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["token"], "no temporary file left");
    }
}
