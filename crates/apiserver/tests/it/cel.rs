//! Issue 15 part 5: `x-kubernetes-validations` CEL rules of a CRD, enforced on create, update
//! and status writes as kube-apiserver does, through the real kubectl and `kube` client.

use kinetic_testkit::TestServer;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: scalers.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: scalers, kind: Scaler}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - rule: self.minReplicas <= self.replicas
              message: replicas must be at least minReplicas
            - rule: self.replicas <= 10
              messageExpression: "'replicas ' + string(self.replicas) + ' is over 10'"
              reason: FieldValueForbidden
              fieldPath: .replicas
            properties:
              replicas: {type: integer}
              minReplicas: {type: integer}
              mode:
                type: string
                x-kubernetes-validations:
                - {rule: self == oldSelf, message: mode is immutable}
          status:
            type: object
            x-kubernetes-validations:
            - rule: "!has(oldSelf.ready) || self.ready >= oldSelf.ready"
              message: ready never goes down
            properties:
              ready: {type: integer, x-kubernetes-validations: [{rule: self <= 5}]}
"#;

fn scaler(name: &str, replicas: i64, min: i64, mode: &str) -> String {
    format!(
        "apiVersion: example.com/v1\nkind: Scaler\nmetadata: {{name: {name}, namespace: default}}\n\
         spec: {{replicas: {replicas}, minReplicas: {min}, mode: {mode}}}\n"
    )
}

#[tokio::test]
async fn crd_validation_rules_refuse_invalid_objects_on_create_update_and_status() {
    let t = TestServer::start().await.unwrap();
    t.kubectl_stdin_ok(&["apply", "-f", "-"], CRD).await.unwrap();
    t.kubectl_stdin_ok(&["apply", "-f", "-"], &scaler("s1", 3, 1, "a")).await.unwrap();

    // A plain rule, with its message, on create (kubectl).
    let out = t.kubectl_stdin(&["apply", "-f", "-"], Some(&scaler("s2", 1, 2, "a"))).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "The Scaler \"s2\" is invalid: spec: Invalid value: \"object\": replicas must be at least minReplicas"
        ),
        "{err}"
    );

    // messageExpression, reason and fieldPath (kube client): 422 with the cause's field.
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Scaler"),
        "scalers",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(t.client().await.unwrap(), "default", &ar);
    let mut s3 = DynamicObject::new("s3", &ar);
    s3.data = json!({"spec": {"replicas": 11, "minReplicas": 1, "mode": "a"}});
    let e = api.create(&PostParams::default(), &s3).await.unwrap_err();
    match &e {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
            assert!(
                s.message.contains("spec.replicas: Forbidden: replicas 11 is over 10"),
                "{}",
                s.message
            );
        }
        other => panic!("{other:?}"),
    }

    // A transition rule: an immutable field may not change on update...
    let out = t.kubectl_stdin(&["apply", "-f", "-"], Some(&scaler("s1", 3, 1, "b"))).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("spec.mode: Invalid value: \"string\": mode is immutable"), "{err}");
    // ...while other fields may, and a new object may pick any value (no oldSelf on create).
    t.kubectl_stdin_ok(&["apply", "-f", "-"], &scaler("s1", 4, 1, "a")).await.unwrap();
    t.kubectl_stdin_ok(&["apply", "-f", "-"], &scaler("s4", 4, 1, "b")).await.unwrap();

    // Status writes are checked too, with transition rules against the stored status.
    let status = |ready: i64| Patch::Merge(json!({"status": {"ready": ready}}));
    api.patch_status("s1", &PatchParams::default(), &status(3)).await.unwrap();
    let e = api.patch_status("s1", &PatchParams::default(), &status(7)).await.unwrap_err();
    assert!(
        matches!(&e, kube::Error::Api(s) if s.code == 422
            && s.message.contains("status.ready: Invalid value: \"integer\": failed rule: self <= 5")),
        "{e:?}"
    );
    let e = api.patch_status("s1", &PatchParams::default(), &status(2)).await.unwrap_err();
    assert!(
        matches!(&e, kube::Error::Api(s) if s.code == 422
            && s.message.contains("status: Invalid value: \"object\": ready never goes down")),
        "{e:?}"
    );
    let got = api.get("s1").await.unwrap();
    assert_eq!(got.data["status"]["ready"], 3);
}

#[tokio::test]
async fn a_crd_whose_rule_does_not_compile_is_refused() {
    let t = TestServer::start().await.unwrap();
    let bad = CRD.replace("rule: self.replicas <= 10", "rule: self.replicas <=");
    let out = t.kubectl_stdin(&["apply", "-f", "-"], Some(&bad)).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[1].rule: Invalid value"
        ) && err.contains("compilation failed"),
        "{err}"
    );
    let out = t.kubectl(&["get", "crd", "scalers.example.com"]).await.unwrap();
    assert!(!out.status.success(), "the CRD was not stored");
}

#[tokio::test]
async fn a_rule_over_upstreams_cost_limit_is_refused_instead_of_run() {
    let t = TestServer::start().await.unwrap();
    let crd = CRD.replace(
        "            properties:\n              replicas: {type: integer}",
        "            - rule: self.tags.all(x, self.tags.all(y, x == y || x != y))\n              \
         message: tags are compared\n            \
         properties:\n              tags: {type: array, items: {type: integer}}\n              \
         replicas: {type: integer}",
    );
    t.kubectl_stdin_ok(&["apply", "-f", "-"], &crd).await.unwrap();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Scaler"),
        "scalers",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(t.client().await.unwrap(), "default", &ar);
    let obj = |name: &str, n: i64| -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Scaler",
            "metadata": {"name": name},
            "spec": {"replicas": 1, "minReplicas": 1, "tags": (0..n).collect::<Vec<_>>()}}))
        .unwrap()
    };
    api.create(&PostParams::default(), &obj("small", 10)).await.unwrap();
    // 3,000 tags: some 9,000,000 comparisons, far past upstream's per-rule limit of 1,000,000.
    let err = api.create(&PostParams::default(), &obj("big", 3000)).await.unwrap_err();
    let kube::Error::Api(status) = err else { panic!("{err:?}") };
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status.message.contains(
            "spec: Invalid value: \"object\": 'operation cancelled: actual cost limit exceeded': \
             no further validation rules will be run due to call cost exceeds limit for rule: \
             tags are compared"
        ),
        "{}",
        status.message
    );
}
