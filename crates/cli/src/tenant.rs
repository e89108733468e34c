//! `kinetic tenant create|ls|delete`: tenants on one shared control plane (issue 16, part 6),
//! isolated by namespace and RBAC as Ant Group's and ASK's shared control planes are.
//!
//! A tenant NAME is the user `tenant:NAME` (group [`TENANTS_GROUP`]), authenticated by a client
//! certificate of the cluster CA (read from the data directory, so `create` runs where the
//! control plane's data lives). It owns the namespaces labelled [`TENANT_LABEL`]`=NAME`; in each
//! the RoleBinding [`BINDING`] gives it upstream's `admin` ClusterRole, and the ResourceQuota
//! [`QUOTA`] (when `--quota` is given) bounds it. Nothing grants it anything cluster-wide, so
//! lists of cluster-scoped resources (nodes, namespaces, roles) and of other namespaces are 403,
//! not empty, and a get in another tenant's namespace is 403 whether the object exists or not.
//! `admin` has no `escalate`/`bind`, so the RBAC escalation check refuses any binding that
//! would give the tenant more than it holds (cluster-admin, another tenant's namespaces).
//!
//! `delete` deletes the tenant's namespaces (and with them its bindings, quotas and objects)
//! and its kubeconfig. A client certificate cannot be revoked: it keeps authenticating
//! `tenant:NAME` until it expires (one year), with no rights left; a new tenant of the same name
//! would give them back, so tenant names should not be reused within a year.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt as _};
use serde_json::json;

pub const TENANT_LABEL: &str = "kinetic.dev/tenant";
pub const TENANT_USER_PREFIX: &str = "tenant:";
pub const TENANTS_GROUP: &str = "kinetic:tenants";
pub const BINDING: &str = "kinetic-tenant-admin";
pub const QUOTA: &str = "kinetic-tenant";
const MANAGER: &str = "kinetic-tenant";

#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum TenantCmd {
    /// Create a tenant: its namespaces, `admin` bound in each, a ResourceQuota, and a
    /// kubeconfig for user tenant:NAME (idempotent: run it again to add namespaces or change
    /// the quota)
    Create {
        /// The tenant's name (a DNS-1123 label)
        name: String,
        /// The tenant's namespaces [default: NAME]
        #[arg(long, value_delimiter = ',')]
        namespaces: Vec<String>,
        /// The ResourceQuota of each namespace, as `pods=10,requests.cpu=4`
        #[arg(long)]
        quota: Option<String>,
        /// Where to write the tenant's kubeconfig [default: DATA/tenants/NAME.kubeconfig]
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// List the tenants and their namespaces
    Ls,
    /// Delete a tenant's namespaces (and everything in them) and its kubeconfig
    Delete { name: String },
}

/// Parses `--quota` (`pods=10,requests.cpu=4`) into `spec.hard`.
///
/// # Errors
/// A term is not `RESOURCE=QUANTITY`.
pub fn parse_quota(s: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut hard = BTreeMap::new();
    for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match term.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
                hard.insert(k.trim().to_owned(), v.trim().to_owned());
            }
            _ => bail!(
                "--quota: {term:?} is not RESOURCE=QUANTITY (for example pods=10,requests.cpu=4)"
            ),
        }
    }
    if hard.is_empty() {
        bail!("--quota is empty: give RESOURCE=QUANTITY terms, for example pods=10,requests.cpu=4");
    }
    Ok(hard)
}

fn check_name(what: &str, n: &str) -> anyhow::Result<()> {
    let ok = !n.is_empty()
        && n.len() <= 63
        && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !n.starts_with('-')
        && !n.ends_with('-');
    if !ok {
        bail!(
            "{what} {n:?} is not a lowercase RFC 1123 label (lower case letters, digits and '-', at most 63)"
        );
    }
    Ok(())
}

/// A kubeconfig for `user` with a client certificate, for the cluster of `admin_kubeconfig`.
fn tenant_kubeconfig(
    admin_kubeconfig: &Path,
    user: &str,
    cert: &str,
    key: &str,
) -> anyhow::Result<String> {
    use base64::Engine as _;
    let kc = kube::config::Kubeconfig::read_from(admin_kubeconfig)
        .with_context(|| format!("reading the kubeconfig {}", admin_kubeconfig.display()))?;
    let cluster = kc
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .context("the admin kubeconfig names no cluster")?;
    let server = cluster.server.context("the admin kubeconfig's cluster has no server")?;
    let ca = cluster
        .certificate_authority_data
        .context("the admin kubeconfig's cluster has no certificate-authority-data")?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    Ok(format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kinetic\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: {user}\n  context:\n    cluster: kinetic\n    user: {user}\ncurrent-context: {user}\npreferences: {{}}\n",
        b64(cert),
        b64(key),
    ))
}

/// Runs one `kinetic tenant` command with the admin `client` of the cluster whose kubeconfig is
/// `admin_kubeconfig` and whose data (the CA) is in `data_dir`.
pub async fn run(
    client: Client,
    admin_kubeconfig: &Path,
    data_dir: &Path,
    cmd: TenantCmd,
) -> anyhow::Result<()> {
    match cmd {
        TenantCmd::Create { name, namespaces, quota, output } => {
            check_name("tenant name", &name)?;
            let namespaces = if namespaces.is_empty() { vec![name.clone()] } else { namespaces };
            for ns in &namespaces {
                check_name("namespace", ns)?;
            }
            let hard = quota.as_deref().map(parse_quota).transpose()?;
            create(&client, &name, &namespaces, hard.as_ref()).await?;
            let user = format!("{TENANT_USER_PREFIX}{name}");
            let (cert, key) =
                kinetic_apiserver::pki::issue_client(&data_dir.join("pki"), &user, &[TENANTS_GROUP])
                    .context("issuing the tenant's client certificate (run this where the control plane's data directory is)")?;
            let kc = tenant_kubeconfig(admin_kubeconfig, &user, &cert, &key)?;
            let path = output.unwrap_or_else(|| kubeconfig_path(data_dir, &name));
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            kinetic_apiserver::pki::write_private(&path, kc.as_bytes(), 0o600)
                .with_context(|| format!("writing {}", path.display()))?;
            #[allow(clippy::print_stdout)]
            {
                println!("tenant {name} created: namespaces {}", namespaces.join(","));
                println!("kubeconfig: {}", path.display());
            }
            Ok(())
        }
        TenantCmd::Ls => {
            let tenants = list(&client).await?;
            #[allow(clippy::print_stdout)]
            {
                println!("{:<20} NAMESPACES", "TENANT");
                for (t, nss) in tenants {
                    println!("{t:<20} {}", nss.join(","));
                }
            }
            Ok(())
        }
        TenantCmd::Delete { name } => {
            check_name("tenant name", &name)?;
            let nss = list(&client).await?.remove(&name).unwrap_or_default();
            if nss.is_empty() {
                bail!("tenant {name:?} not found (no namespace is labelled {TENANT_LABEL}={name})");
            }
            let api: Api<Namespace> = Api::all(client);
            for ns in &nss {
                match api.delete(ns, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e).with_context(|| format!("deleting namespace {ns}")),
                }
            }
            let path = kubeconfig_path(data_dir, &name);
            if path.exists() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
            }
            #[allow(clippy::print_stdout)]
            {
                println!("tenant {name} deleted: namespaces {} are terminating", nss.join(","));
            }
            Ok(())
        }
    }
}

fn kubeconfig_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("tenants").join(format!("{name}.kubeconfig"))
}

/// Tenant → its namespaces (sorted).
async fn list(client: &Client) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let api: Api<Namespace> = Api::all(client.clone());
    let nss = api
        .list(&ListParams::default().labels(TENANT_LABEL))
        .await
        .context("listing the tenants' namespaces")?;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ns in nss {
        if let Some(t) = ns.labels().get(TENANT_LABEL) {
            out.entry(t.clone()).or_default().push(ns.name_any());
        }
    }
    for v in out.values_mut() {
        v.sort();
    }
    Ok(out)
}

async fn create(
    client: &Client,
    name: &str,
    namespaces: &[String],
    hard: Option<&BTreeMap<String, String>>,
) -> anyhow::Result<()> {
    let pp = PatchParams::apply(MANAGER).force();
    let labels = json!({TENANT_LABEL: name, "app.kubernetes.io/managed-by": "kinetic"});
    let ns_api: Api<Namespace> = Api::all(client.clone());
    for ns in namespaces {
        // A namespace that exists and is not this tenant's is not taken over.
        if let Some(have) =
            ns_api.get_opt(ns).await.with_context(|| format!("reading namespace {ns}"))?
        {
            let owner = have.labels().get(TENANT_LABEL).cloned();
            if owner.as_deref() != Some(name) {
                bail!(
                    "namespace {ns} exists and belongs to {}; choose another namespace",
                    owner.map_or_else(|| "no tenant".to_owned(), |o| format!("tenant {o}"))
                );
            }
        }
        let body = json!({"apiVersion": "v1", "kind": "Namespace",
                          "metadata": {"name": ns, "labels": labels}});
        ns_api
            .patch(ns, &pp, &Patch::Apply(&body))
            .await
            .with_context(|| format!("creating namespace {ns}"))?;
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": BINDING, "namespace": ns, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                          "name": format!("{TENANT_USER_PREFIX}{name}")}],
        });
        Api::<RoleBinding>::namespaced(client.clone(), ns)
            .patch(BINDING, &pp, &Patch::Apply(&binding))
            .await
            .with_context(|| format!("binding admin in namespace {ns}"))?;
        if let Some(hard) = hard {
            let quota = json!({
                "apiVersion": "v1", "kind": "ResourceQuota",
                "metadata": {"name": QUOTA, "namespace": ns, "labels": labels},
                "spec": {"hard": hard},
            });
            Api::<ResourceQuota>::namespaced(client.clone(), ns)
                .patch(QUOTA, &pp, &Patch::Apply(&quota))
                .await
                .with_context(|| format!("setting the ResourceQuota of namespace {ns}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn quotas_parse_as_resource_equals_quantity() {
        let q = parse_quota("pods=10, requests.cpu=4").unwrap();
        assert_eq!(q["pods"], "10");
        assert_eq!(q["requests.cpu"], "4");
        let e = parse_quota("pods").unwrap_err().to_string();
        assert!(e.contains("\"pods\" is not RESOURCE=QUANTITY"), "{e}");
        assert!(parse_quota("").is_err());
        assert!(check_name("tenant name", "Team_A").is_err());
        assert!(check_name("tenant name", "team-a").is_ok());
    }
}
