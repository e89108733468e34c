//! Docker image references, parsed and normalized the way docker and containerd do
//! (`github.com/distribution/reference`): a name without a registry is on `docker.io`, a
//! one-component name on Docker Hub is under `library/`, and a reference without a tag or a
//! digest means `:latest`.
//!
//! The first path component is a registry host when it contains `.` or `:` or is `localhost`
//! (so `127.0.0.1:5000/busybox` and `localhost/x` name registries, `foo/bar` does not).

use std::fmt;

use crate::{Error, Result};

/// The registry of references that name none.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API actually answers.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed, normalized image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host, with the port when one was given: `docker.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path inside the registry: `library/nginx`.
    pub repository: String,
    /// The tag; `latest` when neither a tag nor a digest was given.
    pub tag: Option<String>,
    /// The manifest digest (`sha256:<64 hex>`) when the reference pins one.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalizes a reference.
    ///
    /// # Errors
    /// [`Error::InvalidReference`] saying which part is malformed.
    pub fn parse(input: &str) -> Result<Reference> {
        let bad =
            |reason: &'static str| Error::InvalidReference { reference: input.to_owned(), reason };
        if input.is_empty() {
            return Err(bad("empty reference"));
        }
        if input.len() > 4096 {
            return Err(bad("reference longer than 4096 characters"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((n, d)) => {
                validate_digest(d).map_err(bad)?;
                (n, Some(d.to_owned()))
            }
            None => (input, None),
        };
        // A tag is after the last ':' that follows the last '/', so "host:5000/x" has none.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                validate_tag(tag).map_err(bad)?;
                (&rest[..last_slash + i], Some(tag.to_owned()))
            }
            None => (rest, None),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                validate_host(first).map_err(bad)?;
                let registry = match first {
                    "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_owned(),
                    _ => first.to_owned(),
                };
                (registry, path.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        validate_repository(&repository).map_err(bad)?;
        let tag = if tag.is_none() && digest.is_none() { Some("latest".to_owned()) } else { tag };
        Ok(Reference { registry, repository, tag, digest })
    }

    /// `registry/repository`, what kubelet puts before `@` in an imageID.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The host the registry API is reached at (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB { DOCKER_HUB_API } else { &self.registry }
    }

    /// What to ask the manifests endpoint for: the digest when pinned, else the tag.
    pub fn manifest_ref(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }

    /// The same repository pinned at `digest` (no tag).
    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference { digest: Some(digest.to_owned()), tag: None, ..self.clone() }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Reference> {
        Reference::parse(s)
    }
}

/// Checks `sha256:<64 lowercase hex>`, the only digest algorithm registries use in practice.
pub(crate) fn validate_digest(d: &str) -> Result<(), &'static str> {
    let Some(hex) = d.strip_prefix("sha256:") else {
        return Err("digest must be sha256:<64 hex digits>");
    };
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err("digest must be sha256:<64 hex digits>");
    }
    Ok(())
}

fn validate_tag(t: &str) -> Result<(), &'static str> {
    // [\w][\w.-]{0,127}
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok { Ok(()) } else { Err("tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}") }
}

fn validate_host(h: &str) -> Result<(), &'static str> {
    let (host, port) = if let Some(rest) = h.strip_prefix('[') {
        // [ipv6]:port
        match rest.split_once(']') {
            Some((ip, port)) => (ip, port.strip_prefix(':')),
            None => return Err("unterminated [ in registry host"),
        }
    } else {
        match h.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (h, None),
        }
    };
    if host.is_empty()
        || !host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
    {
        return Err("registry host must be a hostname or IP address with an optional :port");
    }
    if let Some(p) = port
        && p.parse::<u16>().is_err()
    {
        return Err("registry port must be a number from 0 to 65535");
    }
    Ok(())
}

fn validate_repository(r: &str) -> Result<(), &'static str> {
    const MSG: &str = "repository path components must be lowercase letters, digits and \
                       separators (., _, __, -) between them";
    if r.len() > 255 {
        return Err("repository name longer than 255 characters");
    }
    for comp in r.split('/') {
        let b = comp.as_bytes();
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return Err(MSG);
        }
        if !b.iter().all(|&c| alnum(c) || matches!(c, b'.' | b'_' | b'-')) {
            return Err(MSG);
        }
        if comp.contains("..") || comp.contains("___") || comp.contains("._") || comp.contains("_.")
        {
            return Err(MSG);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        match Reference::parse(s) {
            Ok(r) => r.to_string(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn normalizes_like_docker() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let cases = [
            ("nginx", "docker.io/library/nginx:latest".to_owned()),
            ("nginx:1.25", "docker.io/library/nginx:1.25".to_owned()),
            ("bitnami/nginx", "docker.io/bitnami/nginx:latest".to_owned()),
            ("docker.io/nginx", "docker.io/library/nginx:latest".to_owned()),
            ("index.docker.io/library/nginx:1", "docker.io/library/nginx:1".to_owned()),
            ("127.0.0.1:5000/busybox:v1", "127.0.0.1:5000/busybox:v1".to_owned()),
            ("localhost/a/b", "localhost/a/b:latest".to_owned()),
            ("localhost:5000/a", "localhost:5000/a:latest".to_owned()),
            ("ghcr.io/o/r/x:t-1.2_3", "ghcr.io/o/r/x:t-1.2_3".to_owned()),
            (&*format!("nginx@{d}"), format!("docker.io/library/nginx@{d}")),
            (&*format!("nginx:1@{d}"), format!("docker.io/library/nginx:1@{d}")),
            ("[::1]:5000/x:y", "[::1]:5000/x:y".to_owned()),
        ];
        for (input, want) in cases {
            assert_eq!(norm(input), want, "{input}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "Nginx",
            "nginx:",
            "nginx:-x",
            "nginx@sha256:abc",
            "nginx@md5:0123",
            "a//b",
            "host:port/x",
            "-a/b",
            "a/b-",
            "a..b",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn parts() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.name(), "docker.io/library/busybox");
        assert_eq!(r.manifest_ref(), "latest");
        let r = Reference::parse("127.0.0.1:5000/x/y:v2").unwrap();
        assert_eq!(r.api_host(), "127.0.0.1:5000");
        assert_eq!(r.repository, "x/y");
        assert_eq!(r.manifest_ref(), "v2");
    }
}
