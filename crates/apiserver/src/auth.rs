//! Who is asking, and may they: the seam between HTTP and the authenticators and authorisers.
//!
//! Data flow for every request past the public endpoints (`/healthz`, `/version`):
//! 1. [`Authenticator::authenticate`] turns the connection's client certificate and the
//!    request's `Authorization` header into a [`UserInfo`], or none (401). The admin token is
//!    always one source; service-account tokens and client certificates plug in as
//!    [`TokenAuthenticator`]s and the certificate check.
//! 2. `http` builds the request's [`Attributes`] (upstream's `authorizer.Attributes`: verb,
//!    group, resource, subresource, namespace, name, or the non-resource path).
//! 3. The [`Authorizer`] decides. Upstream chains authorisers (Node, then RBAC) and the first
//!    `Allow` or `Deny` wins; [`Chain`] does the same. A request nobody allows is 403 with
//!    upstream's message ([`forbidden`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{HeaderMap, header};

use crate::error::ApiError;

/// The authenticated user (upstream's `user.Info`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The admin of `kinetic up`: upstream's kubeadm admin is in `system:masters`, which RBAC
/// allows everything without a binding.
pub const ADMIN_USER: &str = "kubernetes-admin";
pub const MASTERS_GROUP: &str = "system:masters";
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

impl UserInfo {
    #[must_use]
    pub fn admin() -> Self {
        Self {
            name: ADMIN_USER.to_owned(),
            groups: vec![MASTERS_GROUP.to_owned(), AUTHENTICATED_GROUP.to_owned()],
            ..Self::default()
        }
    }
}

/// One source of bearer-token identities (service-account JWTs, bootstrap tokens, ...).
pub trait TokenAuthenticator: Send + Sync {
    /// `None` when the token is not one of this source's; a token of this source that is
    /// expired, revoked or bound to a deleted object is also `None` (401), as upstream answers.
    fn authenticate_token(&self, token: &str) -> Option<UserInfo>;
}

/// What a connection carries besides its requests.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub addr: Option<std::net::SocketAddr>,
    /// The verified client certificate chain's leaf, DER, when the client presented one.
    pub client_cert: Option<Arc<Vec<u8>>>,
}

/// Turns a client certificate into a user (CN is the name, each O a group), once the TLS layer
/// verified it against the cluster CA.
pub trait CertAuthenticator: Send + Sync {
    fn authenticate_cert(&self, der: &[u8]) -> Option<UserInfo>;
}

/// The authenticators of one server.
pub struct Authenticator {
    admin_token: String,
    tokens: Vec<Arc<dyn TokenAuthenticator>>,
    cert: Option<Arc<dyn CertAuthenticator>>,
}

impl Authenticator {
    #[must_use]
    pub fn new(admin_token: String) -> Self {
        Self { admin_token, tokens: Vec::new(), cert: None }
    }

    #[must_use]
    pub fn with_token_source(mut self, source: Arc<dyn TokenAuthenticator>) -> Self {
        self.tokens.push(source);
        self
    }

    #[must_use]
    pub fn with_cert_source(mut self, source: Arc<dyn CertAuthenticator>) -> Self {
        self.cert = Some(source);
        self
    }

    /// The request's user, or `None` (401). A bearer token is tried first, as upstream's union
    /// authenticator orders the request header before the certificate does not matter: a
    /// request carries one or the other in practice.
    #[must_use]
    pub fn authenticate(&self, peer: &Peer, headers: &HeaderMap) -> Option<UserInfo> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if let Some(token) = bearer {
            if token_matches(token, &self.admin_token) {
                return Some(UserInfo::admin());
            }
            return self
                .tokens
                .iter()
                .find_map(|s| s.authenticate_token(token))
                .map(with_authenticated);
        }
        let der = peer.client_cert.as_ref()?;
        self.cert.as_ref()?.authenticate_cert(der).map(with_authenticated)
    }
}

/// Every authenticated user is in `system:authenticated`, as upstream's authenticator adds it.
fn with_authenticated(mut u: UserInfo) -> UserInfo {
    if !u.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
        u.groups.push(AUTHENTICATED_GROUP.to_owned());
    }
    u
}

/// Constant-time comparison, so a token cannot be guessed byte by byte from timings.
fn token_matches(given: &str, want: &str) -> bool {
    let (a, b) = (given.as_bytes(), want.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a request wants to do (upstream's `authorizer.AttributesRecord`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub user: UserInfo,
    /// Upstream's lower-case verbs: get, list, watch, create, update, patch, delete,
    /// deletecollection; for non-resource requests the HTTP method in lower case.
    pub verb: String,
    /// True for `/api/...` and `/apis/...` requests naming a resource.
    pub resource_request: bool,
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The request path, for non-resource requests (`/metrics`, `/apis`, `/openapi/v2`).
    pub path: String,
    /// The raw `fieldSelector` of a list or watch (upstream's `GetFieldSelector`, KEP-4601):
    /// the Node authoriser lets a node list and watch the pods of `spec.nodeName=` itself.
    pub field_selector: String,
}

impl Attributes {
    /// The value the field selector requires `field` to equal exactly (`f=v` or `f==v`), as
    /// upstream's `RequiresExactMatch`.
    #[must_use]
    pub fn field_requires(&self, field: &str) -> Option<&str> {
        self.field_selector.split(',').find_map(|term| {
            let (k, v) = term.split_once("==").or_else(|| term.split_once('='))?;
            (k.trim() == field && !k.ends_with('!')).then_some(v.trim())
        })
    }
}

/// An authoriser's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused with a reason; no later authoriser is asked.
    Deny(String),
    /// This authoriser has nothing to say; the next one is asked.
    NoOpinion(String),
}

pub trait Authorizer: Send + Sync {
    fn authorize(&self, attrs: &Attributes) -> Decision;
}

/// Allows everything: the behaviour before RBAC, kept for servers started without it.
pub struct AlwaysAllow;

impl Authorizer for AlwaysAllow {
    fn authorize(&self, _: &Attributes) -> Decision {
        Decision::Allow
    }
}

/// Upstream's union authoriser: the first `Allow` or `Deny` wins; `system:masters` is always
/// allowed first, as kube-apiserver's privileged-group authoriser does.
pub struct Chain(pub Vec<Arc<dyn Authorizer>>);

impl Authorizer for Chain {
    fn authorize(&self, attrs: &Attributes) -> Decision {
        if attrs.user.groups.iter().any(|g| g == MASTERS_GROUP) {
            return Decision::Allow;
        }
        let mut reasons = Vec::new();
        for a in &self.0 {
            match a.authorize(attrs) {
                Decision::NoOpinion(r) => {
                    if !r.is_empty() {
                        reasons.push(r);
                    }
                }
                d => return d,
            }
        }
        Decision::NoOpinion(reasons.join(", "))
    }
}

/// Upstream's 403 for a request no authoriser allowed (`responsewriters.forbiddenMessage`).
#[must_use]
pub fn forbidden(attrs: &Attributes, reason: &str) -> ApiError {
    let user = &attrs.user.name;
    let mut msg = if !attrs.resource_request {
        format!("forbidden: User \"{user}\" cannot {} path \"{}\"", attrs.verb, attrs.path)
    } else {
        let resource = if attrs.subresource.is_empty() {
            attrs.resource.clone()
        } else {
            format!("{}/{}", attrs.resource, attrs.subresource)
        };
        let what = if attrs.name.is_empty() {
            resource.clone()
        } else {
            format!("{resource} \"{}\"", attrs.name)
        };
        let mut m = format!(
            "{what} is forbidden: User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\"",
            attrs.verb, attrs.api_group
        );
        if attrs.namespace.is_empty() {
            m.push_str(" at the cluster scope");
        } else {
            m.push_str(&format!(" in the namespace \"{}\"", attrs.namespace));
        }
        m
    };
    if !reason.is_empty() {
        msg.push_str(": ");
        msg.push_str(reason);
    }
    let mut e = ApiError::forbidden(msg);
    if attrs.resource_request {
        e.details = Some(crate::error::details(&attrs.api_group, &attrs.resource, &attrs.name));
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(verb: &str, resource: &str, ns: &str, name: &str) -> Attributes {
        Attributes {
            user: UserInfo { name: "alice".into(), ..UserInfo::default() },
            verb: verb.into(),
            resource_request: true,
            api_version: "v1".into(),
            resource: resource.into(),
            namespace: ns.into(),
            name: name.into(),
            ..Attributes::default()
        }
    }

    #[test]
    fn forbidden_messages_read_as_upstreams() {
        let e = forbidden(&attrs("list", "secrets", "default", ""), "");
        assert_eq!(
            e.message,
            "secrets is forbidden: User \"alice\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\""
        );
        let e = forbidden(&attrs("get", "nodes", "", "n1"), "");
        assert_eq!(
            e.message,
            "nodes \"n1\" is forbidden: User \"alice\" cannot get resource \"nodes\" in API group \"\" at the cluster scope"
        );
        let mut a = attrs("get", "", "", "");
        a.resource_request = false;
        a.path = "/metrics".into();
        assert_eq!(
            forbidden(&a, "").message,
            "forbidden: User \"alice\" cannot get path \"/metrics\""
        );
    }

    #[test]
    fn masters_are_allowed_before_any_authoriser_and_the_first_opinion_wins() {
        struct Deny;
        impl Authorizer for Deny {
            fn authorize(&self, _: &Attributes) -> Decision {
                Decision::Deny("no".into())
            }
        }
        let chain = Chain(vec![Arc::new(Deny)]);
        let mut a = attrs("get", "pods", "default", "p");
        assert_eq!(chain.authorize(&a), Decision::Deny("no".into()));
        a.user = UserInfo::admin();
        assert_eq!(chain.authorize(&a), Decision::Allow);
        assert_eq!(
            Chain(vec![]).authorize(&attrs("get", "pods", "", "")),
            Decision::NoOpinion(String::new())
        );
    }

    #[test]
    fn the_admin_token_is_the_admin_and_unknown_tokens_are_nobody() {
        let authn = Authenticator::new("secret".into());
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer secret".parse().unwrap());
        assert_eq!(authn.authenticate(&Peer::default(), &h), Some(UserInfo::admin()));
        h.insert(header::AUTHORIZATION, "Bearer other".parse().unwrap());
        assert_eq!(authn.authenticate(&Peer::default(), &h), None);
        assert_eq!(authn.authenticate(&Peer::default(), &HeaderMap::new()), None);
    }
}
