//! Installs or upgrades the CustomResourceDefinitions the controllers serve, then waits until
//! the API server says each is `Established`, so the first watch of a custom kind cannot fail
//! with 404.
//!
//! An existing CRD is replaced only when its spec differs from ours (compared as JSON), keeping
//! its resourceVersion so a concurrent writer gets a 409 and we read and try again. Stored
//! objects are untouched: a newer schema applies to them on their next write, as upstream.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::{Error, Result};

/// Creates or updates each CRD and waits (up to 30 s) until all are Established.
///
/// # Errors
/// An API call fails for another reason than a conflict, or a CRD does not become Established.
pub async fn install(client: &Client, crds: &[CustomResourceDefinition]) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let err = |e: kube::Error| Error::Crd { name: name.clone(), source: Box::new(e) };
        for attempt in 0.. {
            let result = match api.get_opt(&name).await.map_err(err)? {
                None => api.create(&PostParams::default(), crd).await.map(|_| ()),
                Some(cur) => {
                    let same = serde_json::to_value(&cur.spec).ok()
                        == serde_json::to_value(&crd.spec).ok();
                    if same {
                        Ok(())
                    } else {
                        let mut next = crd.clone();
                        next.metadata.resource_version = cur.metadata.resource_version.clone();
                        api.replace(&name, &PostParams::default(), &next).await.map(|_| ())
                    }
                }
            };
            match result {
                Ok(()) => {
                    tracing::info!(crd = %name, "CRD installed");
                    break;
                }
                Err(kube::Error::Api(s)) if s.code == 409 && attempt < 5 => continue,
                Err(e) => return Err(err(e)),
            }
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        loop {
            let cur = api
                .get_opt(&name)
                .await
                .map_err(|e| Error::Crd { name: name.clone(), source: Box::new(e) })?;
            let established = cur
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::NotEstablished { name });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
