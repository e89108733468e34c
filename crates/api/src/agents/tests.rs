use expect_test::expect_file;
use kinetic_machinery::schema::Schema;
use kube_core::CustomResourceExt as _;
use serde_json::{Value, json};

use super::*;

fn schema_of(crd: &CustomResourceDefinition, version: usize) -> Schema {
    let crd = serde_json::to_value(crd).expect("the CRD serialises");
    let s =
        crd.pointer(&format!("/spec/versions/{version}/schema/openAPIV3Schema")).expect("a schema");
    assert!(Schema::check_structural(s, "schema").is_empty(), "structural");
    Schema::from_json(s, None).expect("the schema compiles")
}

#[test]
fn crd_snapshots() {
    let all: Vec<String> =
        crds().iter().map(|c| serde_yaml::to_string(c).expect("the CRD serialises")).collect();
    expect_file!["agents.crd.yaml"].assert_eq(&all.join("---\n"));
}

#[test]
fn sandbox_is_served_as_v1alpha1_and_v1beta1_with_one_schema() {
    let crd = Sandbox::crd_all_versions();
    let v: Vec<(&str, bool, bool)> =
        crd.spec.versions.iter().map(|v| (v.name.as_str(), v.served, v.storage)).collect();
    assert_eq!(v, [("v1alpha1", true, true), ("v1beta1", true, false)]);
    assert_eq!(crd.spec.names.short_names, Some(vec!["sandbox".to_owned()]));
    assert_eq!(crd.spec.versions[0].schema, crd.spec.versions[1].schema);
}

#[test]
fn sandbox_schema_takes_both_versions_fields_and_defaults_the_shutdown_policy() {
    let s = schema_of(&Sandbox::crd_all_versions(), 0);
    let mut obj = json!({
        "apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
        "metadata": {"name": "s", "namespace": "default"},
        "spec": {"podTemplate": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}},
                 "operatingMode": "Suspended", "service": true, "replicas": 1},
    });
    s.default(&mut obj);
    assert_eq!(s.validate(&obj), vec![]);
    assert_eq!(obj["spec"]["shutdownPolicy"], json!("Retain"));
    let sb: Sandbox = serde_json::from_value(obj.clone()).expect("deserialises");
    assert!(!sb.is_running());
    obj["spec"]["replicas"] = json!(2);
    obj["spec"]["operatingMode"] = json!("Paused");
    let mut fields: Vec<String> = s.validate(&obj).into_iter().map(|c| c.field).collect();
    fields.sort();
    assert_eq!(fields, ["spec.operatingMode", "spec.replicas"]);
}

#[test]
fn claim_defaults_warmpool_and_retain_and_status_uses_upstream_names() {
    let s = schema_of(&SandboxClaim::crd(), 0);
    let mut obj = json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxClaim",
        "metadata": {"name": "c", "namespace": "default"},
        "spec": {"sandboxTemplateRef": {"name": "t"}, "lifecycle": {}},
    });
    s.default(&mut obj);
    assert_eq!(s.validate(&obj), vec![]);
    assert_eq!(obj["spec"]["warmpool"], json!("default"));
    assert_eq!(obj["spec"]["lifecycle"]["shutdownPolicy"], json!("Retain"));
    let st = SandboxClaimStatus {
        conditions: vec![],
        sandbox: ClaimedSandbox { name: "c".into(), pod_ips: vec!["10.0.0.2".into()] },
    };
    assert_eq!(
        serde_json::to_value(&st).expect("serialises"),
        json!({"sandbox": {"name": "c", "podIPs": ["10.0.0.2"]}})
    );
    let st = SandboxStatus { service_fqdn: "a.b.svc.cluster.local".into(), ..Default::default() };
    let v: Value = serde_json::to_value(&st).expect("serialises");
    assert_eq!(v, json!({"serviceFQDN": "a.b.svc.cluster.local", "replicas": 0}));
}

#[test]
fn warm_pool_refuses_negative_replicas_and_has_upstream_columns() {
    let crd = SandboxWarmPool::crd();
    let cols: Vec<&str> = crd.spec.versions[0]
        .additional_printer_columns
        .as_ref()
        .expect("columns")
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(cols, ["Ready", "Age"]);
    let s = schema_of(&crd, 0);
    let obj = json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxWarmPool",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"replicas": -1, "sandboxTemplateRef": {"name": "t"}},
    });
    let fields: Vec<String> = s.validate(&obj).into_iter().map(|c| c.field).collect();
    assert_eq!(fields, ["spec.replicas"]);
}

#[test]
fn extensions_are_served_as_v1alpha1_and_v1beta1_and_take_v1beta1_fields() {
    for crd in [
        both_versions(SandboxTemplate::crd()),
        both_versions(SandboxWarmPool::crd()),
        SandboxClaim::crd_all_versions(),
    ] {
        let v: Vec<(&str, bool, bool)> =
            crd.spec.versions.iter().map(|v| (v.name.as_str(), v.served, v.storage)).collect();
        assert_eq!(
            v,
            [("v1alpha1", true, true), ("v1beta1", true, false)],
            "{}",
            crd.spec.names.kind
        );
    }
    // Upstream's examples/claimed-sandbox-service/claims.yaml, as served.
    let s = schema_of(&SandboxClaim::crd_all_versions(), 1);
    let mut obj = json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxClaim",
        "metadata": {"name": "serving-a", "namespace": "default"},
        "spec": {"warmPoolRef": {"name": "serving-pool"},
                 "additionalPodMetadata": {"labels": {"sandbox.users.io/serving-group": "demo"}},
                 "lifecycle": {"shutdownPolicy": "Delete", "ttlSecondsAfterFinished": 5},
                 "env": [{"name": "A", "value": "1", "containerName": "app"}],
                 "safeToEvict": "false"},
    });
    s.default(&mut obj);
    assert_eq!(s.validate(&obj), vec![]);
    let c: SandboxClaim = serde_json::from_value(obj.clone()).expect("deserialises");
    assert_eq!(c.spec.warm_pool_ref_name(), Some("serving-pool"));
    assert_eq!(c.spec.template_name(), None);
    assert_eq!(c.spec.env[0].container_name, "app");
    // Bad input names its fields.
    obj["spec"]["additionalPodMetadata"]["labels"]["x"] = json!("a".repeat(64));
    obj["spec"]["safeToEvict"] = json!("maybe");
    obj["spec"]["lifecycle"]["ttlSecondsAfterFinished"] = json!(-1);
    obj["spec"]["env"] = json!([{"value": "1"}]);
    let mut fields: Vec<String> = s.validate(&obj).into_iter().map(|c| c.field).collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "spec.additionalPodMetadata.labels.x",
            "spec.env[0].name",
            "spec.lifecycle.ttlSecondsAfterFinished",
            "spec.safeToEvict"
        ]
    );
    // The CEL rule requiring a template or a warm pool is on `spec` of both versions.
    let crd = serde_json::to_value(SandboxClaim::crd_all_versions()).expect("serialises");
    for v in 0..2 {
        let rule = crd
            .pointer(&format!(
                "/spec/versions/{v}/schema/openAPIV3Schema/properties/spec/x-kubernetes-validations/0/rule"
            ))
            .and_then(Value::as_str)
            .expect("a rule");
        assert!(rule.contains("warmPoolRef"), "{rule}");
    }
}

#[test]
fn v1beta1_warm_pool_defaults_one_replica_and_template_takes_policies() {
    let s = schema_of(&both_versions(SandboxWarmPool::crd()), 1);
    let mut obj = json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxWarmPool",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"sandboxTemplateRef": {"name": "t"}, "updateStrategy": {"type": "Recreate"}},
    });
    s.default(&mut obj);
    assert_eq!(s.validate(&obj), vec![]);
    assert_eq!(obj["spec"]["replicas"], json!(1));
    let s = schema_of(&both_versions(SandboxTemplate::crd()), 1);
    let mut obj = json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxTemplate",
        "metadata": {"name": "t", "namespace": "default"},
        "spec": {"podTemplate": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
                 "networkPolicyManagement": "Managed", "networkPolicy": {"egress": []},
                 "envVarsInjectionPolicy": "Overrides", "service": false},
    });
    s.default(&mut obj);
    assert_eq!(s.validate(&obj), vec![]);
    obj["spec"]["envVarsInjectionPolicy"] = json!("Sometimes");
    let fields: Vec<String> = s.validate(&obj).into_iter().map(|c| c.field).collect();
    assert_eq!(fields, ["spec.envVarsInjectionPolicy"]);
}
