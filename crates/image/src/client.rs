//! The OCI distribution API over HTTP/1.1: one [`Session`] per repository, which authenticates
//! once (anonymous, Basic, or the bearer-token flow) and retries transient failures.
//!
//! <https://github.com/opencontainers/distribution-spec/blob/main/spec.md>

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::auth::{self, Challenge, Credential};
use crate::reference::Reference;
use crate::{Error, Result};

type Http = HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Attempts for one request on connection errors, 5xx and 429.
const ATTEMPTS: u32 = 4;
/// First back-off; doubled per attempt.
const BACKOFF: Duration = Duration::from_millis(200);
/// Redirects followed for one request (blob GETs redirect to storage backends).
const MAX_REDIRECTS: usize = 5;
/// Largest manifest or token response read into memory (containerd's limit for manifests).
pub(crate) const MAX_DOCUMENT: usize = 4 << 20;

/// The HTTP client shared by every pull of a store: one connection pool, TLS roots loaded once.
#[derive(Clone, Default)]
pub(crate) struct Transport {
    http: Arc<OnceLock<Http>>,
}

impl Transport {
    fn http(&self) -> &Http {
        self.http.get_or_init(build_http)
    }
}

fn build_http() -> Http {
    use hyper_rustls::ConfigBuilderExt as _;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| match b.clone().with_native_roots() {
            Ok(b) => b.with_no_client_auth(),
            Err(e) => {
                // A node without CA certificates can still pull over http from loopback or
                // insecure registries; https pulls then fail with a certificate error.
                tracing::warn!(error = %e, "no system CA certificates: https registries will fail");
                b.with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth()
            }
        })
        // ring supports the default protocol versions, so this does not fail in practice.
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "building the TLS client configuration");
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        });
    let mut conn = HttpConnector::new();
    conn.enforce_http(false);
    conn.set_nodelay(true);
    conn.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(conn);
    HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https)
}

/// Whether plain http is allowed for `registry` (`host` or `host:port`): loopback hosts always,
/// others only when listed in `insecure` (by host or by host:port).
pub(crate) fn plain_http_allowed(registry: &str, insecure: &[String]) -> bool {
    let host = host_of(registry);
    if host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
        return true;
    }
    insecure.iter().any(|i| {
        let i = auth::normalize_registry(i);
        i == registry || i == host
    })
}

/// The host of `host:port`, `[v6]:port` or `host`, without brackets.
fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match registry.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    }
}

/// One repository on one registry, with the authorization it earned.
pub(crate) struct Session {
    transport: Transport,
    /// `http` or `https`.
    scheme: &'static str,
    /// Where the API answers (`registry-1.docker.io` for Docker Hub).
    host: String,
    /// The registry as references name it, for credentials and messages.
    registry: String,
    repository: String,
    credential: Option<Credential>,
    /// `pull` or `pull,push`.
    actions: &'static str,
    /// The Authorization header that worked last, reused for every later request.
    authorization: Mutex<Option<HeaderValue>>,
}

/// A response with its final URL (after redirects), for messages.
pub(crate) struct Fetched {
    pub response: Response<Incoming>,
    pub url: String,
}

impl Session {
    pub(crate) fn new(
        transport: &Transport,
        reference: &Reference,
        credentials: &[Credential],
        insecure: &[String],
        push: bool,
    ) -> Session {
        let scheme =
            if plain_http_allowed(&reference.registry, insecure) { "http" } else { "https" };
        Session {
            transport: transport.clone(),
            scheme,
            host: reference.api_host().to_owned(),
            registry: reference.registry.clone(),
            repository: reference.repository.clone(),
            credential: auth::find(credentials, &reference.registry).cloned(),
            actions: if push { "pull,push" } else { "pull" },
            authorization: Mutex::new(None),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}://{}/v2/{}/{path}", self.scheme, self.host, self.repository)
    }

    /// Sends a request to the registry (a path under `/v2/<repository>/` or an absolute URL it
    /// returned), authenticating on a 401 challenge, retrying transient failures and following
    /// redirects. Returns any final status; callers decide what is an error.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(http::HeaderName, &str)],
        body: Bytes,
    ) -> Result<Fetched> {
        let mut authenticated = false;
        loop {
            let auth = self.authorization.lock().await.clone();
            let fetched = self.send_following(&method, url, headers, &body, auth.as_ref()).await?;
            if fetched.response.status() != StatusCode::UNAUTHORIZED || authenticated {
                return Ok(fetched);
            }
            // One authentication round per request: a second 401 means the credentials (or
            // their absence) are not good enough, which the caller reports.
            authenticated = true;
            let challenge = fetched
                .response
                .headers()
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(auth::parse_challenge);
            let Some(challenge) = challenge else {
                return Ok(fetched);
            };
            let header = match challenge {
                Challenge::Basic => match &self.credential {
                    Some(c) if !c.is_identity_token() => c.basic_header(),
                    _ => return Ok(fetched),
                },
                Challenge::Bearer { realm, service, scope } => {
                    let scope = scope.unwrap_or_else(|| {
                        format!("repository:{}:{}", self.repository, self.actions)
                    });
                    let token = self.fetch_token(&realm, service.as_deref(), &scope).await?;
                    format!("Bearer {token}")
                }
            };
            let header = HeaderValue::from_str(&header).map_err(|_| Error::Unauthorized {
                registry: self.registry.clone(),
                repository: self.repository.clone(),
                detail: "the credentials or token are not valid in an HTTP header".to_owned(),
            })?;
            *self.authorization.lock().await = Some(header);
        }
    }

    /// [`Session::send`]'s redirect and retry loop for one authorization.
    async fn send_following(
        &self,
        method: &Method,
        url: &str,
        headers: &[(http::HeaderName, &str)],
        body: &Bytes,
        auth: Option<&HeaderValue>,
    ) -> Result<Fetched> {
        let mut url = url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let uri: Uri = url.parse().map_err(|_| Error::InvalidUrl { url: url.clone() })?;
            // Credentials go only to the registry itself, never to the storage backend a blob
            // redirects to (which authorizes through its signed URL).
            let same_host = uri.authority().is_some_and(|a| a.as_str() == self.host);
            let response =
                self.send_retrying(method, &uri, headers, body, auth.filter(|_| same_host)).await?;
            if response.status().is_redirection()
                && let Some(loc) = response.headers().get(LOCATION).and_then(|l| l.to_str().ok())
            {
                url = resolve(&uri, loc);
                continue;
            }
            return Ok(Fetched { response, url });
        }
        Err(Error::TooManyRedirects { url })
    }

    async fn send_retrying(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &[(http::HeaderName, &str)],
        body: &Bytes,
        auth: Option<&HeaderValue>,
    ) -> Result<Response<Incoming>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = Request::builder().method(method.clone()).uri(uri.clone());
            for (k, v) in headers {
                req = req.header(k, *v);
            }
            if let Some(a) = auth {
                req = req.header(AUTHORIZATION, a.clone());
            }
            req = req.header(http::header::USER_AGENT, "kinetic");
            let req = req
                .body(Full::new(body.clone()))
                .map_err(|_| Error::InvalidUrl { url: uri.to_string() })?;
            let result = self.transport.http().request(req).await;
            let retry = match &result {
                Err(e) => {
                    tracing::debug!(url = %uri, attempt, error = %e, "registry request failed");
                    true
                }
                Ok(r) => {
                    r.status().is_server_error() || r.status() == StatusCode::TOO_MANY_REQUESTS
                }
            };
            if !retry || attempt >= ATTEMPTS {
                return result.map_err(|source| Error::Http {
                    method: method.to_string(),
                    url: uri.to_string(),
                    source: Box::new(source),
                });
            }
            tokio::time::sleep(BACKOFF * 2u32.pow(attempt - 1)).await;
        }
    }

    /// The token flow: GET `realm?service=&scope=` with Basic credentials when there are any
    /// (or POST a refresh token for an identity token, as docker does).
    async fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<String> {
        let realm_uri: Uri =
            realm.parse().map_err(|_| Error::InvalidUrl { url: realm.to_owned() })?;
        // Never send a password over plain http to a host that was not allowed plain http.
        let realm_host = realm_uri.authority().map(|a| a.as_str().to_owned()).unwrap_or_default();
        let secure = realm_uri.scheme_str() == Some("https")
            || plain_http_allowed(&realm_host, &[])
            || (self.scheme == "http" && realm_host == self.host);
        let credential = self.credential.as_ref().filter(|_| secure);
        let mut params = Vec::new();
        if let Some(s) = service {
            params.push(("service", s));
        }
        params.push(("scope", scope));
        let (method, url, body, headers) = match credential {
            Some(c) if c.is_identity_token() => {
                params.extend([
                    ("grant_type", "refresh_token"),
                    ("client_id", "kinetic"),
                    ("refresh_token", c.password.as_str()),
                ]);
                let form = encode_query(&params);
                (
                    Method::POST,
                    realm.to_owned(),
                    Bytes::from(form),
                    vec![(CONTENT_TYPE, "application/x-www-form-urlencoded".to_owned())],
                )
            }
            _ => {
                let sep = if realm.contains('?') { '&' } else { '?' };
                let mut headers = Vec::new();
                if let Some(c) = credential {
                    headers.push((AUTHORIZATION, c.basic_header()));
                }
                (
                    Method::GET,
                    format!("{realm}{sep}{}", encode_query(&params)),
                    Bytes::new(),
                    headers,
                )
            }
        };
        let uri: Uri = url.parse().map_err(|_| Error::InvalidUrl { url: url.clone() })?;
        let headers: Vec<(http::HeaderName, &str)> =
            headers.iter().map(|(k, v)| (k.clone(), v.as_str())).collect();
        let response = self.send_retrying(&method, &uri, &headers, &body, None).await?;
        let status = response.status();
        let bytes = read_limited(response, &url, MAX_DOCUMENT).await?;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Error::Unauthorized {
                registry: self.registry.clone(),
                repository: self.repository.clone(),
                detail: format!(
                    "the token service at {realm} refused {} ({status})",
                    if credential.is_some() { "the credentials" } else { "anonymous access" }
                ),
            });
        }
        if !status.is_success() {
            return Err(Error::Status {
                method: method.to_string(),
                url: realm.to_owned(),
                status: status.as_u16(),
                detail: error_detail(&bytes),
            });
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let t: TokenResponse = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            what: format!("token response from {realm}"),
            source,
        })?;
        t.token.or(t.access_token).filter(|t| !t.is_empty()).ok_or_else(|| Error::Unauthorized {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            detail: format!("the token service at {realm} returned no token"),
        })
    }

    /// GETs a manifest (by tag or digest) and returns its bytes and Content-Type.
    pub(crate) async fn get_manifest(&self, reference: &str) -> Result<(Bytes, Option<String>)> {
        let url = self.url(&format!("manifests/{reference}"));
        let f = self
            .send(Method::GET, &url, &[(ACCEPT, crate::manifest::MANIFEST_ACCEPT)], Bytes::new())
            .await?;
        let f = self.check(f, "GET", &format!("manifest {reference}")).await?;
        let ct = f
            .response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or(s).trim().to_owned());
        let bytes = read_limited(f.response, &f.url, MAX_DOCUMENT).await?;
        Ok((bytes, ct))
    }

    /// GETs a blob; the caller streams and verifies the body.
    pub(crate) async fn get_blob(&self, digest: &str) -> Result<Fetched> {
        let url = self.url(&format!("blobs/{digest}"));
        let f = self.send(Method::GET, &url, &[], Bytes::new()).await?;
        self.check(f, "GET", &format!("blob {digest}")).await
    }

    /// GETs bytes `start..=end` of a blob with a `Range` header. The registry may answer 206
    /// with just that part, or 200 with the whole blob when it does not do ranges; the caller
    /// looks at the status.
    pub(crate) async fn get_blob_range(
        &self,
        digest: &str,
        start: u64,
        end: u64,
    ) -> Result<Fetched> {
        let url = self.url(&format!("blobs/{digest}"));
        let range = format!("bytes={start}-{end}");
        let f =
            self.send(Method::GET, &url, &[(http::header::RANGE, &range)], Bytes::new()).await?;
        self.check(f, "GET", &format!("blob {digest}")).await
    }

    /// Turns error statuses into errors that say what was asked for.
    pub(crate) async fn check(&self, f: Fetched, method: &str, what: &str) -> Result<Fetched> {
        let status = f.response.status();
        if status.is_success() {
            return Ok(f);
        }
        let url = f.url.clone();
        let body = read_limited(f.response, &url, 64 << 10).await.unwrap_or_default();
        let detail = error_detail(&body);
        Err(match status {
            StatusCode::NOT_FOUND => Error::NotFound {
                what: what.to_owned(),
                repository: format!("{}/{}", self.registry, self.repository),
                detail,
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::Unauthorized {
                registry: self.registry.clone(),
                repository: self.repository.clone(),
                detail: format!(
                    "{status} for {what} {}",
                    if self.credential.is_some() {
                        "with the given credentials"
                    } else {
                        "without credentials"
                    }
                ) + &detail,
            },
            _ => Error::Status { method: method.to_owned(), url, status: status.as_u16(), detail },
        })
    }
}

/// Reads a whole (small) body, refusing more than `limit` bytes.
pub(crate) async fn read_limited(r: Response<Incoming>, url: &str, limit: usize) -> Result<Bytes> {
    match Limited::new(r.into_body(), limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                Err(Error::TooLarge { url: url.to_owned(), limit: limit as u64 })
            } else {
                Err(Error::Body { url: url.to_owned(), source: e })
            }
        }
    }
}

/// `: message` from a distribution error body (`{"errors":[{"code","message"}]}`), or nothing.
fn error_detail(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Errors>(body) {
        Ok(e) if !e.errors.is_empty() => {
            let parts: Vec<String> =
                e.errors.iter().map(|i| format!("{} ({})", i.message, i.code)).collect();
            format!(": {}", parts.join("; "))
        }
        _ => String::new(),
    }
}

/// Resolves a Location header against the URL that returned it.
pub(crate) fn resolve(base: &Uri, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let scheme = base.scheme_str().unwrap_or("https");
    let authority = base.authority().map_or("", |a| a.as_str());
    if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{scheme}://{authority}{dir}{location}")
    }
}

/// `application/x-www-form-urlencoded` / query encoding.
pub(crate) fn encode_query(params: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    };
    params.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_loopback_or_listed() {
        assert!(plain_http_allowed("127.0.0.1:5000", &[]));
        assert!(plain_http_allowed("127.3.2.1", &[]));
        assert!(plain_http_allowed("localhost:5000", &[]));
        assert!(plain_http_allowed("[::1]:5000", &[]));
        assert!(!plain_http_allowed("docker.io", &[]));
        assert!(!plain_http_allowed("10.0.0.1:5000", &[]));
        assert!(plain_http_allowed("10.0.0.1:5000", &["10.0.0.1".into()]));
        assert!(plain_http_allowed("reg.lan:5000", &["reg.lan:5000".into()]));
        assert!(!plain_http_allowed("reg.lan:5000", &["reg.lan:5001".into()]));
    }

    #[test]
    fn locations() {
        let base: Uri = "http://h:1/v2/r/blobs/uploads/".parse().unwrap();
        assert_eq!(
            resolve(&base, "/v2/r/blobs/uploads/x?a=b"),
            "http://h:1/v2/r/blobs/uploads/x?a=b"
        );
        assert_eq!(resolve(&base, "https://s3/x"), "https://s3/x");
        assert_eq!(resolve(&base, "x"), "http://h:1/v2/r/blobs/uploads/x");
        assert_eq!(
            encode_query(&[("scope", "repository:a/b:pull")]),
            "scope=repository%3Aa%2Fb%3Apull"
        );
    }
}
