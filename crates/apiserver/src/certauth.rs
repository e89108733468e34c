//! Client-certificate authentication, as kube-apiserver's `--client-ca-file` x509
//! authenticator: the TLS layer requests (does not require) a client certificate and verifies
//! it against the cluster CA (see `tls_config` in the crate root); [`CommonNameAuthenticator`]
//! then makes the certificate's subject the user: the Common Name is the user name and each
//! Organization a group (upstream's `CommonNameUserConversion`).
//!
//! Certificates for a name and groups are issued by [`crate::pki::issue_client`] (node agents:
//! `system:node:NAME` in `system:nodes`; the controllers: `system:kube-controller-manager`).

use crate::auth::{CertAuthenticator, UserInfo};

/// CN → user name, O → groups.
#[derive(Debug, Default)]
pub struct CommonNameAuthenticator;

impl CertAuthenticator for CommonNameAuthenticator {
    fn authenticate_cert(&self, der: &[u8]) -> Option<UserInfo> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject();
        let name = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
        // Upstream refuses a certificate without a common name (empty user).
        if name.is_empty() {
            return None;
        }
        let groups = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok())
            .map(str::to_owned)
            .collect();
        Some(UserInfo { name, groups, ..UserInfo::default() })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_common_name_is_the_user_and_organizations_are_groups() {
        let dir = tempfile::tempdir().unwrap();
        crate::pki::ensure(dir.path(), &["127.0.0.1".to_owned()]).unwrap();
        let (cert, _key) =
            crate::pki::issue_client(dir.path(), "system:node:n1", &["system:nodes"]).unwrap();
        let der = rustls_pemfile::certs(&mut cert.as_bytes()).next().unwrap().unwrap();
        let u = CommonNameAuthenticator.authenticate_cert(der.as_ref()).unwrap();
        assert_eq!(u.name, "system:node:n1");
        assert_eq!(u.groups, ["system:nodes"]);
        assert!(CommonNameAuthenticator.authenticate_cert(b"not a certificate").is_none());
    }
}
