//! The ConfigMaps and Secrets a pod refers to (env, envFrom, volumes), fetched once per
//! container start. A missing object is remembered as missing so `optional` can be honoured.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use kube::Api;

use crate::Result;

type Data = BTreeMap<String, Vec<u8>>;

/// Fetched ConfigMaps and Secrets by name (`None`: does not exist).
#[derive(Debug, Default)]
pub struct Refs {
    config_maps: BTreeMap<String, Option<Data>>,
    secrets: BTreeMap<String, Option<Data>>,
    /// `persistentVolumeClaim` volumes by claim name: the bound volume's directory, or why the
    /// claim cannot be mounted yet.
    claims: BTreeMap<String, Result<std::path::PathBuf, String>>,
    /// `serviceAccountToken` sources of projected volumes by (volume, path): the issued token,
    /// or kubelet's reason the volume cannot be set up.
    tokens: BTreeMap<(String, String), Result<crate::token::Issued, String>>,
}

impl Refs {
    pub fn config_map(&self, name: &str) -> Option<&Data> {
        self.config_maps.get(name).and_then(Option::as_ref)
    }

    pub fn secret(&self, name: &str) -> Option<&Data> {
        self.secrets.get(name).and_then(Option::as_ref)
    }

    /// The directory of a bound claim, or kubelet's reason it cannot be mounted.
    pub fn claim(&self, name: &str) -> Result<&std::path::Path, String> {
        match self.claims.get(name) {
            Some(Ok(p)) => Ok(p),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!("persistentvolumeclaim \"{name}\" not found")),
        }
    }

    /// The first claim that cannot be mounted, with the reason.
    pub fn claim_problem(&self) -> Option<String> {
        self.claims.values().find_map(|c| c.as_ref().err().cloned())
    }

    /// The token issued for projected volume `volume`'s source at `path`.
    pub fn token(&self, volume: &str, path: &str) -> Option<&crate::token::Issued> {
        self.tokens.get(&(volume.to_owned(), path.to_owned())).and_then(|t| t.as_ref().ok())
    }

    /// The first volume that cannot be set up (a claim not bound, a token not issued), with
    /// kubelet's wording.
    pub fn mount_problem(&self) -> Option<String> {
        self.claim_problem().or_else(|| {
            self.tokens.iter().find_map(|((volume, _), t)| {
                t.as_ref().err().map(|e| {
                    format!("MountVolume.SetUp failed for volume \"{volume}\" : failed to fetch token: {e}")
                })
            })
        })
    }

    /// Fetches everything `pod` refers to, in its namespace.
    ///
    /// # Errors
    /// The API fails for a reason other than NotFound.
    pub async fn fetch(client: &kube::Client, pod: &Pod) -> Result<Refs> {
        Self::fetch_scoped(client, pod, true).await
    }

    /// What a container's environment refers to (`env`, `envFrom`), nothing for volumes: a
    /// restart in a pod whose volumes are set up needs no more (kubelet resolves env per
    /// container start, volumes once in its volume manager). Issue 14: the pod's projected
    /// `kube-root-ca.crt` was read from the API on every in-place restart.
    ///
    /// # Errors
    /// The API fails for a reason other than NotFound.
    pub async fn fetch_env(client: &kube::Client, pod: &Pod) -> Result<Refs> {
        Self::fetch_scoped(client, pod, false).await
    }

    async fn fetch_scoped(client: &kube::Client, pod: &Pod, volumes: bool) -> Result<Refs> {
        let (cms, secrets) = referenced(pod, volumes);
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut refs = Refs::default();
        if !cms.is_empty() {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
            for name in cms {
                let data = api.get_opt(&name).await?.map(|cm| {
                    let mut d: Data = cm
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect();
                    d.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
                    d
                });
                refs.config_maps.insert(name, data);
            }
        }
        if !secrets.is_empty() {
            let api: Api<Secret> = Api::namespaced(client.clone(), ns);
            for name in secrets {
                let data = api.get_opt(&name).await?.map(|s| {
                    let mut d: Data =
                        s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
                    d.extend(
                        s.string_data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.into_bytes())),
                    );
                    d
                });
                refs.secrets.insert(name, data);
            }
        }
        let claims: Vec<String> = pod
            .spec
            .iter()
            .filter(|_| volumes)
            .flat_map(|s| s.volumes.iter().flatten())
            .filter_map(|v| v.persistent_volume_claim.as_ref().map(|c| c.claim_name.clone()))
            .collect();
        if !claims.is_empty() {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
            let pvs: Api<PersistentVolume> = Api::all(client.clone());
            for name in claims {
                let state = match api.get_opt(&name).await? {
                    None => Err(format!("persistentvolumeclaim \"{name}\" not found")),
                    Some(pvc) => {
                        let volume = pvc.spec.and_then(|s| s.volume_name).unwrap_or_default();
                        let phase = pvc.status.and_then(|s| s.phase).unwrap_or_default();
                        if volume.is_empty() || phase != "Bound" {
                            Err(format!(
                                "persistentvolumeclaim \"{name}\" is not bound (phase {phase:?})"
                            ))
                        } else {
                            match pvs.get_opt(&volume).await? {
                                None => Err(format!(
                                    "persistentvolume \"{volume}\" of claim \"{name}\" not found"
                                )),
                                Some(pv) => volume_path(&pv).ok_or_else(|| {
                                    format!(
                                        "persistentvolume \"{volume}\": only local and hostPath volumes are supported by the kinetic node agent"
                                    )
                                }),
                            }
                        }
                    }
                };
                refs.claims.insert(name, state);
            }
        }
        Ok(refs)
    }

    /// Requests the service account tokens of `pod`'s projected volumes (TokenRequest). Only
    /// needed when the volumes are set up: the refresher keeps them fresh afterwards.
    pub async fn fetch_tokens(&mut self, client: &kube::Client, pod: &Pod) {
        use crate::token::Issuer as _;
        let issuer = crate::token::ApiIssuer(client.clone());
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
                if let Some(t) = &src.service_account_token {
                    let issued = issuer.issue(pod, t).await;
                    self.tokens.insert((v.name.clone(), t.path.clone()), issued);
                }
            }
        }
    }
}

/// The directory of a `local` or `hostPath` PersistentVolume.
fn volume_path(pv: &PersistentVolume) -> Option<std::path::PathBuf> {
    let spec = pv.spec.as_ref()?;
    spec.local
        .as_ref()
        .map(|l| l.path.clone())
        .or_else(|| spec.host_path.as_ref().map(|h| h.path.clone()))
        .map(std::path::PathBuf::from)
}

/// Names of the ConfigMaps and Secrets `pod` refers to.
/// The ConfigMaps and Secrets `pod` names: its containers' env, and with `volumes` its volumes
/// and image pull secrets too.
fn referenced(pod: &Pod, volumes: bool) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut cms = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let Some(spec) = &pod.spec else { return (cms, secrets) };
    for c in spec.init_containers.iter().flatten().chain(&spec.containers) {
        for f in c.env_from.iter().flatten() {
            if let Some(r) = &f.config_map_ref {
                cms.insert(r.name.clone());
            }
            if let Some(r) = &f.secret_ref {
                secrets.insert(r.name.clone());
            }
        }
        for e in c.env.iter().flatten() {
            let Some(src) = &e.value_from else { continue };
            if let Some(r) = &src.config_map_key_ref {
                cms.insert(r.name.clone());
            }
            if let Some(r) = &src.secret_key_ref {
                secrets.insert(r.name.clone());
            }
        }
    }
    if !volumes {
        return (cms, secrets);
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(c) = &v.config_map {
            cms.insert(c.name.clone());
        }
        if let Some(s) = &v.secret {
            secrets.insert(s.secret_name.clone().unwrap_or_default());
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &src.config_map {
                cms.insert(c.name.clone());
            }
            if let Some(s) = &src.secret {
                secrets.insert(s.name.clone());
            }
        }
    }
    for s in spec.image_pull_secrets.iter().flatten() {
        secrets.insert(s.name.clone());
    }
    (cms, secrets)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_restart_reads_only_what_the_environment_names() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "imagePullSecrets": [{"name": "pull"}],
                "containers": [{"name": "c",
                    "envFrom": [{"configMapRef": {"name": "env-cm"}}, {"secretRef": {"name": "env-secret"}}],
                    "env": [{"name": "K", "valueFrom": {"configMapKeyRef": {"name": "key-cm", "key": "k"}}}]}],
                "volumes": [
                    {"name": "v", "configMap": {"name": "vol-cm"}},
                    {"name": "s", "secret": {"secretName": "vol-secret"}},
                    {"name": "kube-api-access", "projected": {"sources": [
                        {"configMap": {"name": "kube-root-ca.crt"}}]}},
                ],
            },
        }))
        .unwrap();
        let names = |s: BTreeSet<String>| s.into_iter().collect::<Vec<_>>();
        let (cms, secrets) = referenced(&pod, false);
        assert_eq!(names(cms), ["env-cm", "key-cm"]);
        assert_eq!(names(secrets), ["env-secret"]);
        let (cms, secrets) = referenced(&pod, true);
        assert_eq!(names(cms), ["env-cm", "key-cm", "kube-root-ca.crt", "vol-cm"]);
        assert_eq!(names(secrets), ["env-secret", "pull", "vol-secret"]);
    }
}
