//! Credentials of the embedded server: a CA, a serving certificate signed by it, the client
//! certificate it shows node agents (kubeadm's `apiserver-kubelet-client`), and the admin
//! bearer token. Created on first start in `DATA/pki` and reused afterwards, so kubeconfigs keep
//! working across restarts. Private keys and the token are written with mode 0600.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use rand::RngCore as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("reading or writing {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("generating or loading certificates in {path}")]
    Cert {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
}

/// The PEM material the server and its kubeconfig need.
#[derive(Clone)]
pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// The client certificate and key the server authenticates with to node agents (kubelet
    /// API), signed by the CA, which the server also publishes as its client CA.
    pub kubelet_client_cert_pem: String,
    pub kubelet_client_key_pem: String,
    pub token: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io { path: path.to_owned(), source }
}

/// Writes `contents` to `path` atomically (temporary file + rename), with `mode`.
pub fn write_private(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    // `mode` only applies when the file is created; make sure a stale file gets it too.
    f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(io(&tmp))?;
    f.write_all(contents).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn read_opt(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// Loads the credentials in `dir`, creating what is missing. The serving certificate is reissued
/// (by the same CA) when it was made for other names than `sans`.
///
/// # Errors
/// The directory cannot be written, or stored PEM files do not parse.
pub fn ensure(dir: &Path, sans: &[String]) -> Result<Pki, PkiError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let cert_err = |source| PkiError::Cert { path: dir.to_owned(), source };
    let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    let (ca_pem, ca_key_pem) = match (read_opt(&ca_crt)?, read_opt(&ca_key)?) {
        (Some(c), Some(k)) => (c, k),
        _ => {
            let key = KeyPair::generate().map_err(cert_err)?;
            let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "kinetic-ca");
            params.distinguished_name = dn;
            params.not_after = rcgen::date_time_ymd(2125, 1, 1);
            let cert = params.self_signed(&key).map_err(cert_err)?;
            write_private(&ca_key, key.serialize_pem().as_bytes(), 0o600)?;
            write_private(&ca_crt, cert.pem().as_bytes(), 0o644)?;
            // A new CA invalidates any certificate issued by an old one.
            let _ = std::fs::remove_file(dir.join("apiserver.sans"));
            let _ = std::fs::remove_file(dir.join("apiserver-kubelet-client.crt"));
            (cert.pem(), key.serialize_pem())
        }
    };
    let (crt, key_path, sans_path) =
        (dir.join("apiserver.crt"), dir.join("apiserver.key"), dir.join("apiserver.sans"));
    let wanted = sans.join("\n");
    let (cert_pem, key_pem) = match (read_opt(&crt)?, read_opt(&key_path)?, read_opt(&sans_path)?) {
        (Some(c), Some(k), Some(s)) if s == wanted => (c, k),
        _ => {
            let ca_signing = KeyPair::from_pem(&ca_key_pem).map_err(cert_err)?;
            let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_signing).map_err(cert_err)?;
            let key = KeyPair::generate().map_err(cert_err)?;
            let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
            for s in sans {
                params.subject_alt_names.push(match s.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(s.clone().try_into().map_err(cert_err)?),
                });
            }
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "kinetic-apiserver");
            params.distinguished_name = dn;
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.not_after = rcgen::date_time_ymd(2125, 1, 1);
            let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;
            write_private(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_private(&crt, cert.pem().as_bytes(), 0o644)?;
            write_private(&sans_path, wanted.as_bytes(), 0o644)?;
            (cert.pem(), key.serialize_pem())
        }
    };
    let (kc_crt, kc_key) =
        (dir.join("apiserver-kubelet-client.crt"), dir.join("apiserver-kubelet-client.key"));
    let (kubelet_client_cert_pem, kubelet_client_key_pem) =
        match (read_opt(&kc_crt)?, read_opt(&kc_key)?) {
            (Some(c), Some(k)) => (c, k),
            _ => {
                let ca_signing = KeyPair::from_pem(&ca_key_pem).map_err(cert_err)?;
                let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_signing).map_err(cert_err)?;
                let key = KeyPair::generate().map_err(cert_err)?;
                let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
                // kubeadm's name and group for this certificate: kubelets authorise the
                // server as a member of system:masters.
                let mut dn = DistinguishedName::new();
                dn.push(DnType::CommonName, "kube-apiserver-kubelet-client");
                dn.push(DnType::OrganizationName, "system:masters");
                params.distinguished_name = dn;
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                params.not_after = rcgen::date_time_ymd(2125, 1, 1);
                let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;
                write_private(&kc_key, key.serialize_pem().as_bytes(), 0o600)?;
                write_private(&kc_crt, cert.pem().as_bytes(), 0o644)?;
                (cert.pem(), key.serialize_pem())
            }
        };
    let token_path = dir.join("admin.token");
    let token = match read_opt(&token_path)? {
        Some(t) if !t.trim().is_empty() => t.trim().to_owned(),
        _ => {
            let mut b = [0u8; 32];
            rand::rng().fill_bytes(&mut b);
            let t: String = b.iter().map(|x| format!("{x:02x}")).collect();
            write_private(&token_path, t.as_bytes(), 0o600)?;
            t
        }
    };
    Ok(Pki { ca_pem, cert_pem, key_pem, kubelet_client_cert_pem, kubelet_client_key_pem, token })
}

/// Issues a client certificate (and its key) for user `name` in `groups`, signed by the CA in
/// `dir` (created by [`ensure`]): the certificate's Common Name is the user and each
/// Organization a group, as kube-apiserver's client-certificate authenticator reads them
/// ([`crate::certauth`]). Valid for a year.
///
/// # Errors
/// The CA in `dir` cannot be read or used.
pub fn issue_client(dir: &Path, name: &str, groups: &[&str]) -> Result<(String, String), PkiError> {
    let cert_err = |source| PkiError::Cert { path: dir.to_owned(), source };
    let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    let ca_pem = std::fs::read_to_string(&ca_crt).map_err(io(&ca_crt))?;
    let ca_key_pem = std::fs::read_to_string(&ca_key).map_err(io(&ca_key))?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca_pem, KeyPair::from_pem(&ca_key_pem).map_err(cert_err)?)
            .map_err(cert_err)?;
    let key = KeyPair::generate().map_err(cert_err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    for g in groups {
        dn.push(DnType::OrganizationName, *g);
    }
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let today = jiff::Zoned::now().with_time_zone(jiff::tz::TimeZone::UTC).date();
    let (y, m, d) = (i32::from(today.year()), today.month() as u8, today.day() as u8);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    // The 29th of February has no twin next year; the 28th then.
    params.not_after = rcgen::date_time_ymd(y + 1, m, d.min(28));
    let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_reused_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let sans = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let a = ensure(dir.path(), &sans).unwrap();
        let b = ensure(dir.path(), &sans).unwrap();
        assert_eq!(a.token, b.token);
        assert_eq!(a.cert_pem, b.cert_pem);
        assert_eq!(a.kubelet_client_cert_pem, b.kubelet_client_cert_pem);
        for f in ["ca.key", "apiserver.key", "apiserver-kubelet-client.key", "admin.token"] {
            let mode = std::fs::metadata(dir.path().join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let c = ensure(dir.path(), &["10.0.0.1".to_owned()]).unwrap();
        assert_ne!(a.cert_pem, c.cert_pem, "new names need a new serving certificate");
        assert_eq!(a.ca_pem, c.ca_pem, "from the same CA");
    }
}
