//! A Sandbox's `volumeClaimTemplates` (upstream `SandboxBlueprint.volumeClaimTemplates`): each
//! template becomes a PersistentVolumeClaim `{template name}-{sandbox name}` owned by the
//! Sandbox (so it goes with it), and the pod gets a volume of the template's name bound to it
//! unless its spec already has a volume of that name — the StatefulSet convention upstream's
//! Sandbox controller follows. Kinetic's volume controller binds the claims (local-path
//! provisioning) and the node agent mounts them.

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, PodSpec, Volume,
};
use kinetic_api::agents::Sandbox;
use kube::ResourceExt as _;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use super::{ReconcileError, owner_ref};

/// The name of a volume claim template (`metadata.name`), empty when it has none.
fn template_name(t: &Value) -> &str {
    t.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
}

/// The claim sandbox `sandbox` gets from template `template` (StatefulSet naming).
#[must_use]
pub fn claim_name(template: &str, sandbox: &str) -> String {
    format!("{template}-{sandbox}")
}

/// `spec` with a volume per named claim template that it does not define itself.
#[must_use]
pub fn with_claim_volumes(mut spec: PodSpec, templates: &[Value], sandbox: &str) -> PodSpec {
    for t in templates {
        let name = template_name(t);
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        if name.is_empty() || volumes.iter().any(|v| v.name == name) {
            continue;
        }
        volumes.push(Volume {
            name: name.to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(name, sandbox),
                read_only: None,
            }),
            ..Volume::default()
        });
    }
    spec
}

/// Creates the claims of `sb`'s templates that do not exist yet.
///
/// # Errors
/// A template is no valid claim, or a create failed otherwise than by a 409.
pub(super) async fn ensure_claims(
    api: &Api<PersistentVolumeClaim>,
    sb: &Sandbox,
) -> Result<(), ReconcileError> {
    for t in &sb.spec.volume_claim_templates {
        let name = template_name(t);
        if name.is_empty() {
            continue;
        }
        let mut meta = t.get("metadata").cloned().unwrap_or_else(|| json!({}));
        meta["name"] = json!(claim_name(name, &sb.name_any()));
        meta["namespace"] = json!(sb.namespace());
        meta["ownerReferences"] = json!([owner_ref(sb)]);
        let pvc: PersistentVolumeClaim = serde_json::from_value(
            json!({"metadata": meta, "spec": t.get("spec").cloned().unwrap_or_default()}),
        )?;
        match api.create(&PostParams::default(), &pvc).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_named_template_gets_a_volume_unless_the_pod_has_one() {
        let spec: PodSpec = serde_json::from_value(json!({
            "containers": [{"name": "c"}],
            "volumes": [{"name": "own", "emptyDir": {}}],
        }))
        .unwrap();
        let templates = [
            json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}),
            json!({"metadata": {"name": "own"}, "spec": {}}),
            json!({"spec": {}}),
        ];
        let out = with_claim_volumes(spec, &templates, "sb");
        let v = serde_json::to_value(out.volumes).unwrap();
        assert_eq!(
            v,
            json!([{"name": "own", "emptyDir": {}},
                   {"name": "data", "persistentVolumeClaim": {"claimName": "data-sb"}}])
        );
    }
}
