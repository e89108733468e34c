//! Registry credentials: `kubernetes.io/dockerconfigjson` secrets, and the `WWW-Authenticate`
//! challenges of the distribution token flow
//! (<https://distribution.github.io/distribution/spec/auth/token/>).

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;

use crate::reference::DOCKER_HUB;
use crate::{Error, Result};

/// A user name and password (or token) for one registry.
///
/// An identity token (a dockerconfigjson `identitytoken`, an OAuth2 refresh token) is carried as
/// docker's credential helpers carry it: `username` is `<token>` and `password` is the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// Registry host (`docker.io`, `127.0.0.1:5000`); a URL such as
    /// `https://index.docker.io/v1/` is accepted and reduced to its host.
    pub registry: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Credential")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The `username` that marks `password` as an identity (refresh) token.
pub const IDENTITY_TOKEN_USER: &str = "<token>";

impl Credential {
    pub(crate) fn is_identity_token(&self) -> bool {
        self.username == IDENTITY_TOKEN_USER
    }

    pub(crate) fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

/// Reduces a dockerconfigjson key (`https://index.docker.io/v1/`, `registry:5000`,
/// `http://host/path`) to the registry host references use.
pub fn normalize_registry(key: &str) -> String {
    let s = key.trim();
    let s = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")).unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_owned()
        }
        _ => host,
    }
}

/// The credential for `registry` (already normalized), the first one given wins.
pub(crate) fn find<'a>(creds: &'a [Credential], registry: &str) -> Option<&'a Credential> {
    creds.iter().find(|c| normalize_registry(&c.registry) == registry)
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize, Default)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// Parses a `kubernetes.io/dockerconfigjson` secret's `.dockerconfigjson` (the same format as
/// `~/.docker/config.json`): `{"auths": {host: {"auth": base64(user:pass)} | {"username",
/// "password"} | {"identitytoken"}}}`.
///
/// # Errors
/// The JSON does not parse, or an `auth` field is not base64 of `user:password`.
pub fn parse_docker_config_json(bytes: &[u8]) -> Result<Vec<Credential>> {
    let cfg: DockerConfig = serde_json::from_slice(bytes)
        .map_err(|source| Error::Json { what: "docker config json".to_owned(), source })?;
    let mut out = Vec::new();
    for (key, a) in cfg.auths {
        let registry = normalize_registry(&key);
        if let Some(token) = a.identitytoken.filter(|t| !t.is_empty()) {
            out.push(Credential {
                registry,
                username: IDENTITY_TOKEN_USER.to_owned(),
                password: token,
            });
            continue;
        }
        let (username, password) = match (a.username, a.password, a.auth) {
            (Some(u), Some(p), _) if !u.is_empty() => (u, p),
            (_, _, Some(auth)) if !auth.is_empty() => {
                let bad = |reason: &'static str| Error::InvalidCredential {
                    registry: key.clone(),
                    reason,
                };
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|_| bad("auth is not base64"))?;
                let raw = String::from_utf8(raw).map_err(|_| bad("auth is not UTF-8"))?;
                let (u, p) =
                    raw.split_once(':').ok_or(bad("auth is not base64 of username:password"))?;
                (u.to_owned(), p.to_owned())
            }
            _ => continue,
        };
        out.push(Credential { registry, username, password });
    }
    Ok(out)
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

/// Parses the first Basic or Bearer challenge of a `WWW-Authenticate` value.
pub(crate) fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    let get =
        |k: &str| params.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone());
    Some(Challenge::Bearer { realm: get("realm")?, service: get("service"), scope: get("scope") })
}

/// `k="v", k2=v2` with quoted values that may hold commas and `\"`.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next().is_none() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            val.push(n);
                        }
                    }
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        out.push((key.trim().to_owned(), val.trim().to_owned()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerconfigjson() {
        let json = br#"{"auths":{
            "https://index.docker.io/v1/":{"auth":"dXNlcjpwYTpzcw=="},
            "127.0.0.1:5000":{"username":"u","password":"p"},
            "ghcr.io":{"identitytoken":"tok"},
            "empty.example":{}
        }}"#;
        let creds = parse_docker_config_json(json).unwrap();
        let got: Vec<_> = creds
            .iter()
            .map(|c| (c.registry.as_str(), c.username.as_str(), c.password.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("127.0.0.1:5000", "u", "p"),
                ("ghcr.io", "<token>", "tok"),
                ("docker.io", "user", "pa:ss")
            ]
        );
        assert!(find(&creds, "docker.io").is_some());
        assert!(parse_docker_config_json(br#"{"auths":{"x":{"auth":"!!"}}}"#).is_err());
        assert!(parse_docker_config_json(b"nope").is_err());
        assert!(!format!("{:?}", creds[0]).contains("\"p\""));
    }

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge(r#"Basic realm="registry""#), Some(Challenge::Basic));
        assert_eq!(
            parse_challenge("bearer realm=http://h/t"),
            Some(Challenge::Bearer { realm: "http://h/t".into(), service: None, scope: None })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }
}
