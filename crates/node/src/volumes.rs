//! Pod volumes on the node: each volume is a directory under the pod's directory (or a host
//! path), bind-mounted into the containers that mount it.
//!
//! Supported: emptyDir, configMap, secret, downwardAPI, projected (configMap, secret,
//! downwardAPI and serviceAccountToken sources; tokens in [`crate::token`]), hostPath, persistentVolumeClaim (a bound local or hostPath volume). Contents are written when the pod starts; later changes to
//! a ConfigMap or Secret are not propagated into running pods (kubelet refreshes them about
//! once a minute — not yet done here).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod};

use crate::env::{ConfigError, field};
use crate::refs::Refs;

/// A prepared volume: where it is on the host.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub path: PathBuf,
    /// Volumes whose content the node writes (configMap, secret, downwardAPI, projected) are
    /// mounted read-only, as kubelet does.
    pub read_only: bool,
}

/// Writes the pod's volumes under `dir` and returns them by name.
///
/// # Errors
/// A source is missing and not optional, an item path escapes the volume, a volume type is not
/// supported, or a write fails.
pub fn prepare(
    pod: &Pod,
    dir: &Path,
    refs: &Refs,
    pod_ip: &str,
    host_ip: &str,
) -> Result<BTreeMap<String, Prepared>, ConfigError> {
    let mut out = BTreeMap::new();
    let Some(spec) = &pod.spec else { return Ok(out) };
    for v in spec.volumes.iter().flatten() {
        let vdir = dir.join(&v.name);
        let io = |e: std::io::Error| ConfigError(format!("volume {:?}: {e}", v.name));
        let prepared = if v.empty_dir.is_some() {
            std::fs::create_dir_all(&vdir).map_err(io)?;
            set_mode(&vdir, 0o777).map_err(io)?;
            Prepared { path: vdir, read_only: false }
        } else if let Some(hp) = &v.host_path {
            let p = PathBuf::from(&hp.path);
            match hp.type_.as_deref().unwrap_or("") {
                "DirectoryOrCreate" => std::fs::create_dir_all(&p).map_err(io)?,
                "Directory" if !p.is_dir() => {
                    return Err(ConfigError(format!(
                        "hostPath type check failed: {} is not a directory",
                        hp.path
                    )));
                }
                "FileOrCreate" if !p.exists() => {
                    if let Some(parent) = p.parent() {
                        std::fs::create_dir_all(parent).map_err(io)?;
                    }
                    std::fs::File::create(&p).map_err(io)?;
                }
                "File" if !p.is_file() => {
                    return Err(ConfigError(format!(
                        "hostPath type check failed: {} is not a file",
                        hp.path
                    )));
                }
                _ => {}
            }
            Prepared { path: p, read_only: false }
        } else if let Some(c) = &v.persistent_volume_claim {
            // The volume's directory itself is mounted (kubelet bind-mounts local volumes), so
            // what the pod writes outlives the pod.
            let path = refs.claim(&c.claim_name).map_err(ConfigError)?.to_path_buf();
            if !path.is_dir() {
                return Err(ConfigError(format!(
                    "persistentvolumeclaim \"{}\": volume directory {} does not exist",
                    c.claim_name,
                    path.display()
                )));
            }
            Prepared { path, read_only: c.read_only.unwrap_or(false) }
        } else if let Some(cm) = &v.config_map {
            let data = refs.config_map(&cm.name);
            if data.is_none() && !cm.optional.unwrap_or(false) {
                return Err(ConfigError(format!("configmap \"{}\" not found", cm.name)));
            }
            fresh_dir(&vdir).map_err(io)?;
            write_keys(&vdir, data, cm.items.as_deref(), cm.default_mode, cm.optional, &cm.name)?;
            Prepared { path: vdir, read_only: true }
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let data = refs.secret(&name);
            if data.is_none() && !s.optional.unwrap_or(false) {
                return Err(ConfigError(format!("secret \"{name}\" not found")));
            }
            fresh_dir(&vdir).map_err(io)?;
            write_keys(&vdir, data, s.items.as_deref(), s.default_mode, s.optional, &name)?;
            Prepared { path: vdir, read_only: true }
        } else if let Some(d) = &v.downward_api {
            fresh_dir(&vdir).map_err(io)?;
            write_downward(&vdir, pod, d.items.as_deref(), d.default_mode, pod_ip, host_ip)?;
            Prepared { path: vdir, read_only: true }
        } else if let Some(p) = &v.projected {
            fresh_dir(&vdir).map_err(io)?;
            for src in p.sources.iter().flatten() {
                if let Some(cm) = &src.config_map {
                    let data = refs.config_map(&cm.name);
                    if data.is_none() && !cm.optional.unwrap_or(false) {
                        return Err(ConfigError(format!("configmap \"{}\" not found", cm.name)));
                    }
                    write_keys(
                        &vdir,
                        data,
                        cm.items.as_deref(),
                        p.default_mode,
                        cm.optional,
                        &cm.name,
                    )?;
                }
                if let Some(s) = &src.secret {
                    let data = refs.secret(&s.name);
                    if data.is_none() && !s.optional.unwrap_or(false) {
                        return Err(ConfigError(format!("secret \"{}\" not found", s.name)));
                    }
                    write_keys(
                        &vdir,
                        data,
                        s.items.as_deref(),
                        p.default_mode,
                        s.optional,
                        &s.name,
                    )?;
                }
                if let Some(d) = &src.downward_api {
                    write_downward(
                        &vdir,
                        pod,
                        d.items.as_deref(),
                        p.default_mode,
                        pod_ip,
                        host_ip,
                    )?;
                }
                if let Some(t) = &src.service_account_token {
                    // Issued by `Refs::fetch`; a token that could not be issued stopped the
                    // pod before this (FailedMount, see `Refs::mount_problem`).
                    let issued = refs.token(&v.name, &t.path).ok_or_else(|| {
                        ConfigError(format!("volume {:?}: no service account token", v.name))
                    })?;
                    write_file(&inside(&vdir, &t.path)?, issued.token.as_bytes(), mode_of(p))?;
                }
            }
            Prepared { path: vdir, read_only: true }
        } else {
            return Err(ConfigError(format!(
                "volume {:?}: this volume type is not supported by the kinetic node agent",
                v.name
            )));
        };
        out.insert(v.name.clone(), prepared);
    }
    Ok(out)
}

/// The file mode of a projected volume's files (`defaultMode`, 0644 by default).
fn mode_of(p: &k8s_openapi::api::core::v1::ProjectedVolumeSource) -> u32 {
    u32::try_from(p.default_mode.unwrap_or(0o644)).unwrap_or(0o644)
}

/// The service account token files of `pod`'s projected volumes under `dir` (the pod's volume
/// directory), each with the wait before its first refresh: the issued token's from `refs`, or
/// none (refresh at once) without one, as for a pod adopted after an agent restart.
pub fn token_files(
    pod: &Pod,
    dir: &Path,
    refs: Option<&Refs>,
) -> Vec<(crate::token::TokenFile, std::time::Duration)> {
    let mut out = Vec::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let Some(p) = &v.projected else { continue };
        for t in p.sources.iter().flatten().filter_map(|s| s.service_account_token.as_ref()) {
            let Ok(path) = inside(&dir.join(&v.name), &t.path) else { continue };
            let first = refs
                .and_then(|r| r.token(&v.name, &t.path))
                .map_or(std::time::Duration::ZERO, crate::token::Issued::refresh_after);
            let file = crate::token::TokenFile {
                path,
                mode: mode_of(p),
                source: t.clone(),
                volume: v.name.clone(),
            };
            out.push((file, first));
        }
    }
    out
}

fn fresh_dir(d: &Path) -> std::io::Result<()> {
    if d.exists() {
        std::fs::remove_dir_all(d)?;
    }
    std::fs::create_dir_all(d)
}

fn set_mode(p: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

/// A relative path inside a volume, refusing `..` and absolute paths (upstream validation
/// rejects them at the API; this guards the node anyway).
fn inside(dir: &Path, rel: &str) -> Result<PathBuf, ConfigError> {
    let p = Path::new(rel);
    if rel.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(ConfigError(format!("invalid volume item path {rel:?}")));
    }
    Ok(dir.join(p))
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), ConfigError> {
    let io = |e: std::io::Error| ConfigError(format!("writing {}: {e}", path.display()));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, data).map_err(io)?;
    set_mode(path, mode).map_err(io)
}

fn write_keys(
    dir: &Path,
    data: Option<&BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: Option<bool>,
    source: &str,
) -> Result<(), ConfigError> {
    let Some(data) = data else { return Ok(()) };
    let default_mode = u32::try_from(default_mode.unwrap_or(0o644)).unwrap_or(0o644);
    match items {
        Some(items) if !items.is_empty() => {
            for it in items {
                let Some(value) = data.get(&it.key) else {
                    if optional.unwrap_or(false) {
                        continue;
                    }
                    return Err(ConfigError(format!("couldn't find key {} in {source}", it.key)));
                };
                let mode = it.mode.and_then(|m| u32::try_from(m).ok()).unwrap_or(default_mode);
                write_file(&inside(dir, &it.path)?, value, mode)?;
            }
        }
        _ => {
            for (k, v) in data {
                write_file(&inside(dir, k)?, v, default_mode)?;
            }
        }
    }
    Ok(())
}

fn write_downward(
    dir: &Path,
    pod: &Pod,
    items: Option<&[DownwardAPIVolumeFile]>,
    default_mode: Option<i32>,
    pod_ip: &str,
    host_ip: &str,
) -> Result<(), ConfigError> {
    let default_mode = u32::try_from(default_mode.unwrap_or(0o644)).unwrap_or(0o644);
    for it in items.into_iter().flatten() {
        let Some(f) = &it.field_ref else {
            return Err(ConfigError(format!(
                "downwardAPI item {:?}: only fieldRef is supported",
                it.path
            )));
        };
        let value = field(pod, &f.field_path, pod_ip, host_ip)?;
        let mode = it.mode.and_then(|m| u32::try_from(m).ok()).unwrap_or(default_mode);
        write_file(&inside(dir, &it.path)?, value.as_bytes(), mode)?;
    }
    Ok(())
}
