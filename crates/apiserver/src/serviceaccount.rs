//! Service-account identities: signed, expiring, bound tokens and the `authentication.k8s.io`
//! API, as upstream's `pkg/serviceaccount` (JWT issue and validation), the `serviceaccounts/token`
//! subresource (`pkg/registry/core/serviceaccount/storage/token.go`), TokenReview and
//! SelfSubjectReview do.
//!
//! - [`Tokens`] holds the signing key (`DATA/pki/sa.key`, ECDSA P-256, ES256 tokens, kept across
//!   restarts so issued tokens stay valid). [`Tokens::token_request`] issues a token for a
//!   service account, optionally bound to a Pod or Secret; as a [`TokenAuthenticator`] it turns
//!   a token whose audience is the API's into upstream's service-account user. A token whose
//!   service account or bound object is gone, or was recreated with another uid, no longer
//!   authenticates (401), exactly as upstream's validator looks the objects up on every request.
//! - [`serve_group`] answers `authentication.k8s.io/v1` (discovery, `tokenreviews`,
//!   `selfsubjectreviews`); `http` routes `serviceaccounts/NAME/token` to
//!   [`Tokens::token_request`].
//! - [`run`] is upstream's serviceaccounts-controller and root-ca-cert-publisher: every active
//!   namespace gets the `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap (which the
//!   node agent's `kube-api-access-*` volumes read `ca.crt` from).
//!
//! What it does not do: legacy Secret-based tokens (upstream stopped creating them in 1.24),
//! Node-bound tokens, the `--service-account-extend-token-expiration` year-long kubelet tokens
//! (the node agent refreshes at 80 % of the lifetime instead), OIDC discovery of the issuer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use http::Method;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde_json::{Map, Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::auth::{Authenticator, Peer, TokenAuthenticator, UserInfo};
use crate::error::{ApiError, ApiResult, Cause};
use crate::rest::{Api, WriteOptions};
use crate::store::EventType;
use crate::strategy::Strategy;

/// The API group of TokenRequest, TokenReview and SelfSubjectReview.
pub const GROUP: &str = "authentication.k8s.io";
pub const VERSION: &str = "v1";
/// The issuer (`iss`) of every token, and the API's audience: kubeadm's default
/// `--service-account-issuer`, whose audience `--api-audiences` defaults to.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Upstream's user name prefix and groups of service accounts.
pub const USER_PREFIX: &str = "system:serviceaccount:";
pub const ALL_GROUP: &str = "system:serviceaccounts";
/// TokenRequest's default and bounds of `expirationSeconds` (upstream's validation).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
/// How long a token bound to a pod that is being deleted keeps working past the pod's deletion
/// time (upstream's validator allows the same 60 s for the kubelet to finish).
const DELETION_GRACE_SECONDS: i64 = 60;
/// The ConfigMap the root-CA publisher writes into every namespace.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// Extra keys of a service-account user (upstream `serviceaccount.*Key`).
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
pub const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";
pub const EXTRA_NODE_UID: &str = "authentication.kubernetes.io/node-uid";
pub const EXTRA_CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

/// Failures to load or create the signing key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading or writing {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: crate::pki::PkiError,
    },
    #[error("the service-account signing key {path} is not a PKCS#8 ECDSA P-256 key: {reason}")]
    Key { path: PathBuf, reason: String },
}

/// The user name of a service account.
#[must_use]
pub fn user_name(namespace: &str, name: &str) -> String {
    format!("{USER_PREFIX}{namespace}:{name}")
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()
}

/// Issues and validates service-account tokens.
pub struct Tokens {
    key: EcdsaKeyPair,
    kid: String,
    rng: SystemRandom,
    api: Arc<Api>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// Why a token does not authenticate (TokenReview's `status.error`).
type Invalid = String;

impl Tokens {
    /// Loads the signing key `DIR/sa.key` (kubeadm's name), creating it on first start.
    ///
    /// # Errors
    /// The key cannot be read, written or parsed.
    pub fn load(pki_dir: &Path, api: Arc<Api>) -> Result<Self, KeyError> {
        let path = pki_dir.join("sa.key");
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let der = match std::fs::read_to_string(&path) {
            Ok(pem) => {
                let mut r = pem.as_bytes();
                match rustls_pemfile::private_key(&mut r) {
                    Ok(Some(rustls::pki_types::PrivateKeyDer::Pkcs8(k))) => {
                        k.secret_pkcs8_der().to_vec()
                    }
                    Ok(_) => {
                        return Err(KeyError::Key { path, reason: "no PKCS#8 key in it".into() });
                    }
                    Err(source) => return Err(KeyError::Io { path, source }),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = EcdsaKeyPair::generate_pkcs8(alg, &rng)
                    .map_err(|e| KeyError::Key { path: path.clone(), reason: e.to_string() })?;
                let pem = format!(
                    "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                    base64::engine::general_purpose::STANDARD
                        .encode(doc.as_ref())
                        .as_bytes()
                        .chunks(64)
                        .map(|c| String::from_utf8_lossy(c).into_owned())
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                crate::pki::write_private(&path, pem.as_bytes(), 0o600)
                    .map_err(|source| KeyError::Write { path: path.clone(), source })?;
                doc.as_ref().to_vec()
            }
            Err(source) => return Err(KeyError::Io { path, source }),
        };
        let key = EcdsaKeyPair::from_pkcs8(alg, &der, &rng)
            .map_err(|e| KeyError::Key { path: path.clone(), reason: e.to_string() })?;
        // Upstream's key id: the URL-safe SHA-256 of the public key.
        let kid =
            b64(ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref()).as_ref());
        Ok(Self { key, kid, rng, api })
    }

    /// Signs `claims` as a compact JWS (ES256).
    fn sign(&self, claims: &Value) -> ApiResult<String> {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self
            .key
            .sign(&self.rng, input.as_bytes())
            .map_err(|e| ApiError::internal(format!("signing a service account token: {e}")))?;
        Ok(format!("{input}.{}", b64(sig.as_ref())))
    }

    /// The claims of a token this server signed, or why not.
    fn verify(&self, token: &str) -> Result<Map<String, Value>, Invalid> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a JWT".into());
        };
        let header: Value = unb64(h)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("the token header is not base64url JSON")?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return Err("the token is not signed with ES256".into());
        }
        let sig = unb64(s).ok_or("the token signature is not base64url")?;
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        );
        let signed = &token[..h.len() + 1 + p.len()];
        public
            .verify(signed.as_bytes(), &sig)
            .map_err(|_| "the token signature is invalid".to_owned())?;
        let claims: Map<String, Value> = unb64(p)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("the token claims are not base64url JSON")?;
        if claims.get("iss").and_then(Value::as_str) != Some(ISSUER) {
            return Err("the token was issued by another issuer".into());
        }
        Ok(claims)
    }

    /// The user of `token` when it is valid for one of `audiences`, with the audiences it is
    /// valid for; otherwise why it does not authenticate (upstream's `validator.Validate`).
    ///
    /// # Errors
    /// The token is not this server's, is expired or not yet valid, is not for any of
    /// `audiences`, or its service account or bound object is gone or was recreated.
    pub fn authenticate_for(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<(UserInfo, Vec<String>), Invalid> {
        let claims = self.verify(token)?;
        let now = jiff::Timestamp::now().as_second();
        let num = |k: &str| claims.get(k).and_then(Value::as_i64);
        match num("exp") {
            Some(exp) if exp >= now => {}
            Some(_) => return Err("service account token has expired".into()),
            None => return Err("the token has no expiry".into()),
        }
        // Upstream allows one minute of clock skew on nbf.
        if num("nbf").is_some_and(|nbf| nbf > now + 60) {
            return Err("service account token is not valid yet".into());
        }
        let token_aud: Vec<String> = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => {
                a.iter().filter_map(Value::as_str).map(str::to_owned).collect()
            }
            _ => Vec::new(),
        };
        let matched: Vec<String> =
            audiences.iter().filter(|a| token_aud.contains(a)).cloned().collect();
        if matched.is_empty() {
            return Err("token audiences don't match the requested audiences".into());
        }
        let k8s = claims.get("kubernetes.io").ok_or("the token has no kubernetes.io claim")?;
        let s = |p: &str| k8s.pointer(p).and_then(Value::as_str).unwrap_or("");
        let (ns, sa, sa_uid) =
            (s("/namespace"), s("/serviceaccount/name"), s("/serviceaccount/uid"));
        if ns.is_empty() || sa.is_empty() {
            return Err("the token names no service account".into());
        }
        let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
        if sub != user_name(ns, sa) {
            return Err("the token's subject is not its service account".into());
        }
        let live = |plural: &str, name: &str, uid: &str, what: &str| -> Result<Value, Invalid> {
            let res = self.api.registry.get("", "v1", plural).ok_or("no such resource")?;
            let obj = self
                .api
                .get(&res, ns, name)
                .map_err(|_| format!("{what} {ns}/{name} has been deleted"))?;
            if !uid.is_empty() && obj.uid() != uid {
                return Err(format!("{what} UID ({}) does not match claim ({uid})", obj.uid()));
            }
            Ok(obj.value())
        };
        live("serviceaccounts", sa, sa_uid, "service account")?;
        let mut user = UserInfo {
            name: user_name(ns, sa),
            uid: sa_uid.to_owned(),
            groups: vec![ALL_GROUP.to_owned(), format!("{ALL_GROUP}:{ns}")],
            ..UserInfo::default()
        };
        if let Some(pod) = k8s.get("pod") {
            let (name, uid) = (s("/pod/name"), s("/pod/uid"));
            let obj = live("pods", name, uid, "pod")?;
            if let Some(ts) = obj
                .pointer("/metadata/deletionTimestamp")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                && ts.as_second() + DELETION_GRACE_SECONDS < now
            {
                return Err(format!(
                    "pod {ns}/{name} has been deleted: token has been invalidated"
                ));
            }
            let _ = pod;
            user.extra.insert(EXTRA_POD_NAME.into(), vec![name.to_owned()]);
            user.extra.insert(EXTRA_POD_UID.into(), vec![uid.to_owned()]);
        }
        if k8s.get("secret").is_some() {
            live("secrets", s("/secret/name"), s("/secret/uid"), "secret")?;
        }
        if k8s.get("node").is_some() {
            user.extra.insert(EXTRA_NODE_NAME.into(), vec![s("/node/name").to_owned()]);
            user.extra.insert(EXTRA_NODE_UID.into(), vec![s("/node/uid").to_owned()]);
        }
        if let Some(jti) = claims.get("jti").and_then(Value::as_str) {
            user.extra.insert(EXTRA_CREDENTIAL_ID.into(), vec![format!("JTI={jti}")]);
        }
        Ok((user, matched))
    }

    /// `POST .../serviceaccounts/NAME/token`: a TokenRequest answered with its `status`
    /// (upstream's `TokenREST.Create`).
    ///
    /// # Errors
    /// The service account or bound object does not exist (404), the bound object has another
    /// uid (409) or kind or service account (400), `expirationSeconds` is out of bounds (422).
    pub fn token_request(&self, ns: &str, name: &str, mut req: Value) -> ApiResult<Value> {
        let api = &self.api;
        let res = |plural: &str| {
            api.registry
                .get("", "v1", plural)
                .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))
        };
        let sa = api.get(&*res("serviceaccounts")?, ns, name)?;
        let spec = req.get("spec").cloned().unwrap_or_else(|| json!({}));
        let seconds = spec
            .get("expirationSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
        let field = "spec.expirationSeconds";
        let bad = |msg: &str| {
            ApiError::invalid(
                "TokenRequest",
                GROUP,
                name,
                vec![Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!("Invalid value: {seconds}: {msg}"),
                    field: field.into(),
                }],
            )
        };
        if seconds < MIN_EXPIRATION_SECONDS {
            return Err(bad("may not specify a duration less than 10 minutes"));
        }
        if seconds > MAX_EXPIRATION_SECONDS {
            return Err(bad("may not specify a duration larger than 2^32 seconds"));
        }
        let mut audiences: Vec<String> = spec
            .get("audiences")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        if audiences.is_empty() {
            audiences = vec![ISSUER.to_owned()];
        }
        let mut k8s = json!({
            "namespace": ns,
            "serviceaccount": {"name": name, "uid": sa.uid()},
        });
        if let Some(bound) = spec.get("boundObjectRef").filter(|b| !b.is_null()) {
            let kind = bound.get("kind").and_then(Value::as_str).unwrap_or("");
            let version = bound.get("apiVersion").and_then(Value::as_str).unwrap_or("v1");
            let bname = bound.get("name").and_then(Value::as_str).unwrap_or("");
            let buid = bound.get("uid").and_then(Value::as_str).unwrap_or("");
            let plural = match (version, kind) {
                ("v1", "Pod") => "pods",
                ("v1", "Secret") => "secrets",
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "cannot bind token for serviceaccount {name:?} to object of type {version}, Kind={kind}"
                    )));
                }
            };
            let obj = api.get(&*res(plural)?, ns, bname)?;
            if !buid.is_empty() && obj.uid() != buid {
                return Err(ApiError::conflict(
                    "",
                    kind,
                    bname,
                    &format!(
                        "the UID in the bound object reference ({buid}) does not match the UID in record. The object might have been deleted and then recreated"
                    ),
                ));
            }
            let r = json!({"name": bname, "uid": obj.uid()});
            if plural == "pods" {
                let obj_v = obj.value();
                let pod_sa = obj_v
                    .pointer("/spec/serviceAccountName")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .unwrap_or("default");
                if pod_sa != name {
                    return Err(ApiError::bad_request(format!(
                        "cannot bind token for serviceaccount {name:?} to pod running with different serviceaccount name."
                    )));
                }
                k8s["pod"] = r;
                // Upstream (1.30+) also records the pod's node in pod-bound tokens.
                if let Some(node) = obj.field("spec.nodeName").filter(|n| !n.is_empty())
                    && let Ok(n) = api.get(&*res("nodes")?, "", node)
                {
                    k8s["node"] = json!({"name": node, "uid": n.uid()});
                }
            } else {
                k8s["secret"] = r;
            }
            if let Some(o) = req.pointer_mut("/spec/boundObjectRef").and_then(Value::as_object_mut)
            {
                o.insert("uid".into(), json!(obj.uid()));
            }
        }
        let now = jiff::Timestamp::now();
        let exp = now.as_second() + seconds;
        let claims = json!({
            "aud": audiences,
            "exp": exp,
            "iat": now.as_second(),
            "nbf": now.as_second(),
            "iss": ISSUER,
            "jti": uuid::Uuid::new_v4().to_string(),
            "sub": user_name(ns, name),
            "kubernetes.io": k8s,
        });
        let token = self.sign(&claims)?;
        let expires = jiff::Timestamp::from_second(exp)
            .map_err(|e| ApiError::internal(format!("token expiry: {e}")))?;
        req["apiVersion"] = json!(format!("{GROUP}/{VERSION}"));
        req["kind"] = json!("TokenRequest");
        req["metadata"] = json!({
            "name": name,
            "namespace": ns,
            "creationTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        });
        req["spec"]["audiences"] = json!(audiences);
        req["spec"]["expirationSeconds"] = json!(seconds);
        req["status"] = json!({
            "token": token,
            "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        });
        Ok(req)
    }
}

impl TokenAuthenticator for Tokens {
    fn authenticate_token(&self, token: &str) -> Option<UserInfo> {
        match self.authenticate_for(token, &[ISSUER.to_owned()]) {
            Ok((u, _)) => Some(u),
            Err(why) => {
                tracing::debug!(error = %why, "service account token refused");
                None
            }
        }
    }
}

/// The `serviceaccounts` strategy: the `token` subresource (TokenRequest).
#[derive(Debug)]
pub struct ServiceAccountStrategy;

impl Strategy for ServiceAccountStrategy {
    fn subresources(&self) -> &'static [&'static str] {
        &["token"]
    }
}

/// The group as the `/apis` list shows it.
#[must_use]
pub fn group() -> Value {
    let gv = json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION});
    json!({"name": GROUP, "versions": [gv], "preferredVersion": gv})
}

fn user_json(u: &UserInfo) -> Value {
    let mut v = json!({"username": u.name, "groups": u.groups});
    if !u.uid.is_empty() {
        v["uid"] = json!(u.uid);
    }
    if !u.extra.is_empty() {
        v["extra"] = json!(u.extra);
    }
    v
}

/// `/apis/authentication.k8s.io/...` after the group: discovery, and the create-only
/// TokenReview and SelfSubjectReview. Answers the status code and body.
///
/// # Errors
/// An unknown path (404), a verb other than create (405), a TokenReview without a token (400).
pub fn serve_group(
    tokens: &Tokens,
    authn: &Authenticator,
    user: &UserInfo,
    method: &Method,
    rest: &[&str],
    body: Option<Value>,
) -> ApiResult<(u16, Value)> {
    let gv = format!("{GROUP}/{VERSION}");
    match (method, rest) {
        (&Method::GET, []) => {
            let mut g = group();
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            Ok((200, g))
        }
        (&Method::GET, [VERSION]) => {
            let r = |name: &str, kind: &str| {
                json!({"name": name, "singularName": "", "namespaced": false, "kind": kind,
                       "verbs": ["create"]})
            };
            Ok((
                200,
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                   "resources": [r("selfsubjectreviews", "SelfSubjectReview"),
                                 r("tokenreviews", "TokenReview")]}),
            ))
        }
        (&Method::POST, [VERSION, "selfsubjectreviews"]) => Ok((
            201,
            json!({"kind": "SelfSubjectReview", "apiVersion": gv,
                   "metadata": {"creationTimestamp": null},
                   "status": {"userInfo": user_json(user)}}),
        )),
        (&Method::POST, [VERSION, "tokenreviews"]) => {
            let mut review = body.unwrap_or_else(|| json!({}));
            let token = review.pointer("/spec/token").and_then(Value::as_str).unwrap_or("");
            if token.is_empty() {
                return Err(ApiError::bad_request(
                    "token is required for TokenReview in authentication",
                ));
            }
            let wanted: Vec<String> = review
                .pointer("/spec/audiences")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default();
            let api_audiences = vec![ISSUER.to_owned()];
            // Upstream: without audiences in the spec the API's are meant; the admin token is
            // not audience-bound, so it answers only for the API's audiences.
            let status = if wanted.is_empty() || wanted == api_audiences {
                let mut h = http::HeaderMap::new();
                let answer =
                    http::HeaderValue::from_str(&format!("Bearer {token}")).ok().and_then(|v| {
                        h.insert(http::header::AUTHORIZATION, v);
                        authn.authenticate(&Peer::default(), &h)
                    });
                match answer {
                    Some(u) => json!({"authenticated": true, "user": user_json(&u),
                                      "audiences": api_audiences}),
                    None => {
                        let why = tokens
                            .authenticate_for(token, &api_audiences)
                            .err()
                            .unwrap_or_else(|| "invalid bearer token".to_owned());
                        json!({"user": {}, "error": format!("[invalid bearer token, {why}]")})
                    }
                }
            } else {
                match tokens.authenticate_for(token, &wanted) {
                    Ok((mut u, aud)) => {
                        u.groups.push(crate::auth::AUTHENTICATED_GROUP.to_owned());
                        json!({"authenticated": true, "user": user_json(&u), "audiences": aud})
                    }
                    Err(why) => {
                        json!({"user": {}, "error": format!("[invalid bearer token, {why}]")})
                    }
                }
            };
            review["apiVersion"] = json!(gv);
            review["kind"] = json!("TokenReview");
            review["metadata"] = json!({"creationTimestamp": null});
            review["status"] = status;
            Ok((201, review))
        }
        (_, [VERSION, "selfsubjectreviews" | "tokenreviews"]) => Err(ApiError::method_not_allowed(
            format!("the server does not allow this method on the requested resource ({method})"),
        )),
        _ => Err(ApiError::page_not_found()),
    }
}

/// Upstream's serviceaccounts-controller and root-ca-cert-publisher in one loop: every active
/// namespace has the `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap with
/// `ca_pem`; either is put back when deleted or changed. Runs until the store stops.
pub async fn run(api: Arc<Api>, ca_pem: String) {
    loop {
        let mut rx = api.store.read().subscribe();
        for ns in active_namespaces(&api) {
            ensure_namespace(&api, &ns, &ca_pem).await;
        }
        loop {
            let ev = match rx.recv().await {
                Ok(ev) => ev,
                Err(RecvError::Lagged(_)) => break,
                Err(RecvError::Closed) => return,
            };
            let (res, ns, name) = (&*ev.key.resource, &ev.key.namespace, &ev.key.name);
            let again = match (res, ev.kind) {
                ("/namespaces", EventType::Added | EventType::Modified) => {
                    (!deleting(&ev.obj.value())).then(|| name.clone())
                }
                ("/serviceaccounts", EventType::Deleted) if name == "default" => Some(ns.clone()),
                ("/configmaps", EventType::Deleted) if name == ROOT_CA_CONFIGMAP => {
                    Some(ns.clone())
                }
                ("/configmaps", EventType::Modified)
                    if name == ROOT_CA_CONFIGMAP
                        && ev.obj.value().pointer("/data/ca.crt").and_then(Value::as_str)
                            != Some(ca_pem.as_str()) =>
                {
                    Some(ns.clone())
                }
                _ => None,
            };
            if let Some(ns) = again {
                ensure_namespace(&api, &ns, &ca_pem).await;
            }
        }
    }
}

fn deleting(v: &Value) -> bool {
    v.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

fn active_namespaces(api: &Api) -> Vec<String> {
    let Some(res) = api.registry.get("", "v1", "namespaces") else { return Vec::new() };
    let st = api.store.read();
    st.list(&res.storage, None, None)
        .filter(|(_, s)| !deleting(&s.value()))
        .map(|((_, name), _)| name.clone())
        .collect()
}

/// Creates what `ns` lacks (the `default` ServiceAccount, `kube-root-ca.crt`). Failures are
/// logged: a namespace that started terminating meanwhile refuses new content, which is right.
pub async fn ensure_namespace(api: &Api, ns: &str, ca_pem: &str) {
    let opts = WriteOptions::default();
    let alive = |api: &Api| {
        api.registry
            .get("", "v1", "namespaces")
            .and_then(|r| api.get(&r, "", ns).ok())
            .is_some_and(|n| !deleting(&n.value()))
    };
    if let Some(res) = api.registry.get("", "v1", "serviceaccounts")
        && api.get(&res, ns, "default").is_err()
        && alive(api)
    {
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                        "metadata": {"name": "default", "namespace": ns}});
        if let Err(e) = api.create(&res, ns, sa, &opts).await
            && e.code != 409
        {
            tracing::debug!(namespace = ns, error = %e.message, "creating the default service account failed");
        }
    }
    let Some(res) = api.registry.get("", "v1", "configmaps") else { return };
    match api.get(&res, ns, ROOT_CA_CONFIGMAP) {
        Ok(cur) if cur.value().pointer("/data/ca.crt").and_then(Value::as_str) == Some(ca_pem) => {}
        Ok(_) => {
            let ca = ca_pem.to_owned();
            let r = api
                .update_with(&res, ns, ROOT_CA_CONFIGMAP, None, &opts, move |cur| {
                    let mut n = cur.clone();
                    n["data"] = json!({"ca.crt": ca});
                    Ok(n)
                })
                .await;
            if let Err(e) = r {
                tracing::debug!(namespace = ns, error = %e.message, "updating kube-root-ca.crt failed");
            }
        }
        Err(_) if alive(api) => {
            let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": ROOT_CA_CONFIGMAP, "namespace": ns,
                    "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION}},
                "data": {"ca.crt": ca_pem}});
            if let Err(e) = api.create(&res, ns, cm, &opts).await
                && e.code != 409
            {
                tracing::debug!(namespace = ns, error = %e.message, "creating kube-root-ca.crt failed");
            }
        }
        Err(_) => {}
    }
}

/// Where the `kube-api-access-*` volume is mounted in every container (upstream's
/// `DefaultAPITokenMountPath`, where in-cluster clients look).
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The lifetime the admission plugin asks for (upstream's 3607 s, one hour plus a margin that
/// marks kubelet's tokens).
const PROJECTED_EXPIRATION_SECONDS: i64 = 3607;

/// Upstream's ServiceAccount admission plugin on pod create: `spec.serviceAccountName`
/// defaults to `default`, and unless the pod or its service account sets
/// `automountServiceAccountToken: false` (the pod's choice wins), every container mounts a
/// projected `kube-api-access-XXXXX` volume (a pod-bound token, `ca.crt` from
/// `kube-root-ca.crt`, the namespace) at [`TOKEN_MOUNT_PATH`], except containers that already
/// mount something there.
///
/// Upstream refuses a pod whose service account does not exist yet (403). Kinetic admits it:
/// the `default` account of a namespace created a moment ago may still be on its way, and the
/// node agent's TokenRequest for the volume fails (FailedMount, retried) until it exists, so
/// such a pod never runs without its identity either.
pub fn admit_pod(store: &crate::store::Store, obj: &mut Value) {
    let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").to_owned();
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let sa_name = match spec.get("serviceAccountName").and_then(Value::as_str) {
        Some(s) if !s.is_empty() => s.to_owned(),
        _ => {
            // The deprecated `serviceAccount` field names it when the new one is unset.
            let old = spec
                .get("serviceAccount")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or("default")
                .to_owned();
            spec.insert("serviceAccountName".into(), json!(old));
            old
        }
    };
    spec.insert("serviceAccount".into(), json!(sa_name));
    let sa_automount = {
        let key = crate::store::ObjKey::new(
            &crate::registry::storage_key("", "serviceaccounts"),
            &ns,
            &sa_name,
        );
        store
            .get(&key)
            .and_then(|s| s.value().get("automountServiceAccountToken").and_then(Value::as_bool))
    };
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or(sa_automount)
        .unwrap_or(true);
    if !automount {
        return;
    }
    let existing = spec.get("volumes").and_then(Value::as_array).and_then(|vs| {
        vs.iter()
            .filter_map(|v| v.get("name").and_then(Value::as_str))
            .find(|n| n.starts_with("kube-api-access-"))
            .map(str::to_owned)
    });
    let volume = existing.clone().unwrap_or_else(|| {
        use rand::Rng as _;
        // Upstream's name generator alphabet (no vowels, no confusable digits).
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut rng = rand::rng();
        let suffix: String =
            (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
        format!("kube-api-access-{suffix}")
    });
    let mount = json!({"name": volume, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        for c in spec.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
            let Some(c) = c.as_object_mut() else { continue };
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            let Some(mounts) = mounts.as_array_mut() else { continue };
            if mounts
                .iter()
                .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH))
            {
                continue;
            }
            mounts.push(mount.clone());
            needed = true;
        }
    }
    if needed && existing.is_none() {
        let v = json!({"name": volume, "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": PROJECTED_EXPIRATION_SECONDS, "path": "token"}},
            {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace",
                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ]}});
        match spec.entry("volumes").or_insert_with(|| json!([])).as_array_mut() {
            Some(vs) => vs.push(v),
            None => {
                spec.insert("volumes".into(), json!([v]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn store() -> (tempfile::TempDir, crate::store::Store) {
        let dir = tempfile::tempdir().unwrap();
        let s =
            crate::store::Store::open(&dir.path().join("state.db"), crate::store::DEFAULT_HISTORY)
                .unwrap();
        (dir, s)
    }

    #[test]
    fn pods_get_the_default_account_and_the_api_access_volume_in_every_container() {
        let (_d, st) = store();
        let mut pod = json!({"metadata": {"namespace": "ns"}, "spec": {
            "initContainers": [{"name": "i"}],
            "containers": [{"name": "a"}, {"name": "b", "volumeMounts": [
                {"name": "mine", "mountPath": TOKEN_MOUNT_PATH}]}]}});
        admit_pod(&st, &mut pod);
        let spec = &pod["spec"];
        assert_eq!(spec["serviceAccountName"], "default");
        assert_eq!(spec["serviceAccount"], "default");
        let vol = spec["volumes"][0]["name"].as_str().unwrap();
        assert!(vol.starts_with("kube-api-access-") && vol.len() == 21, "{vol}");
        assert_eq!(spec["initContainers"][0]["volumeMounts"][0]["name"], vol);
        assert_eq!(spec["containers"][0]["volumeMounts"][0]["mountPath"], TOKEN_MOUNT_PATH);
        assert_eq!(spec["containers"][1]["volumeMounts"].as_array().unwrap().len(), 1);
        let sources = &spec["volumes"][0]["projected"]["sources"];
        assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
        // Admitting again (a pod that has the volume) adds nothing.
        let before = pod.clone();
        admit_pod(&st, &mut pod);
        assert_eq!(pod, before);
    }

    /// A server's token issuer with the `default` ServiceAccount in `default`.
    async fn issuer() -> (tempfile::TempDir, Tokens) {
        let dir = tempfile::tempdir().unwrap();
        let st = crate::store::Store::open(&dir.path().join("state.db"), 100).unwrap();
        let registry = Arc::new(crate::registry::Registry::default());
        crate::builtin::register(&registry).unwrap();
        let api = Arc::new(Api::new(st, registry.clone()));
        let ns = registry.get("", "v1", "namespaces").unwrap();
        let body =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
        api.create(&ns, "", body, &WriteOptions::default()).await.unwrap();
        ensure_namespace(&api, "default", "CA").await;
        let t = Tokens::load(dir.path(), api).unwrap();
        (dir, t)
    }

    fn api_aud() -> Vec<String> {
        vec![ISSUER.to_owned()]
    }

    #[tokio::test]
    async fn expired_foreign_unsigned_and_tampered_tokens_are_refused() {
        let (_d, t) = issuer().await;
        let req = json!({"spec": {}});
        let token = t.token_request("default", "default", req).unwrap()["status"]["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let (u, aud) = t.authenticate_for(&token, &api_aud()).unwrap();
        assert_eq!(u.name, "system:serviceaccount:default:default");
        assert_eq!(aud, api_aud());
        let parts: Vec<&str> = token.split('.').collect();
        let claims: Value = serde_json::from_slice(&unb64(parts[1]).unwrap()).unwrap();
        let resign = |f: &dyn Fn(&mut Value)| {
            let mut c = claims.clone();
            f(&mut c);
            t.sign(&c).unwrap()
        };
        let expired = resign(&|c| c["exp"] = json!(jiff::Timestamp::now().as_second() - 1));
        assert_eq!(
            t.authenticate_for(&expired, &api_aud()).unwrap_err(),
            "service account token has expired"
        );
        let other_issuer = resign(&|c| c["iss"] = json!("https://elsewhere"));
        assert!(t.authenticate_for(&other_issuer, &api_aud()).is_err());
        let other_sub = resign(&|c| c["sub"] = json!("system:serviceaccount:default:admin"));
        assert!(t.authenticate_for(&other_sub, &api_aud()).is_err());
        assert!(t.authenticate_for(&token, &["vault".to_owned()]).is_err());
        // `alg: none` with the same claims and no signature.
        let none = format!("{}.{}.", b64(br#"{"alg":"none"}"#), parts[1]);
        assert!(t.authenticate_for(&none, &api_aud()).is_err());
        // Another key's signature (a second server's token).
        let (_d2, other) = issuer().await;
        assert!(other.authenticate_for(&token, &api_aud()).is_err());
    }

    /// Token parsing fuzzed from a seed: random strings and one-character mutations of a valid
    /// token never authenticate (unless the mutation decodes to the same bytes, which base64's
    /// unused low bits of a last character allow) and never panic.
    #[tokio::test]
    async fn fuzzed_tokens_never_authenticate() {
        use rand::{Rng as _, SeedableRng as _};
        let (_d, t) = issuer().await;
        let token =
            t.token_request("default", "default", json!({"spec": {}})).unwrap()["status"]["token"]
                .as_str()
                .unwrap()
                .to_owned();
        let decoded = |tok: &str| -> Vec<Option<Vec<u8>>> { tok.split('.').map(unb64).collect() };
        let seed = 16;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let alphabet: Vec<char> =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ "
                .chars()
                .collect();
        for i in 0..3000 {
            let mut chars: Vec<char> = token.chars().collect();
            let at = rng.random_range(0..chars.len());
            chars[at] = alphabet[rng.random_range(0..alphabet.len())];
            let mutated: String = chars.into_iter().collect();
            if t.authenticate_for(&mutated, &api_aud()).is_ok() {
                assert_eq!(decoded(&mutated), decoded(&token), "seed {seed}, case {i}: {mutated}");
            }
            let len = rng.random_range(0..200);
            let random: String =
                (0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect();
            assert!(t.authenticate_for(&random, &api_aud()).is_err(), "seed {seed}, case {i}");
        }
    }

    #[test]
    fn automount_false_on_the_pod_mounts_nothing() {
        let (_d, st) = store();
        let mut pod = json!({"metadata": {"namespace": "ns"}, "spec": {
            "serviceAccountName": "robot", "automountServiceAccountToken": false,
            "containers": [{"name": "a"}]}});
        admit_pod(&st, &mut pod);
        assert!(pod["spec"].get("volumes").is_none(), "{pod}");
        assert_eq!(pod["spec"]["serviceAccount"], "robot");
    }
}
