//! The admission gaps of issue 16 part 4: the `authorizer` CEL variable of
//! ValidatingAdmissionPolicy backed by RBAC, CONNECT requests (`pods/exec`) and
//! `pods/binding`/`pods/eviction` sent to webhooks as upstream sends them, and the garbage
//! collector's deletes of dependents reaching validating webhooks as DELETE.

use kinetic_testkit::TestServer;
use serde_json::json;

/// Runs kubectl as `user` (impersonated by the admin); returns (success, stderr).
async fn as_user(t: &TestServer, user: &str, args: &[&str], stdin: &str) -> (bool, String) {
    let mut all: Vec<&str> = args.to_vec();
    let as_flag = format!("--as={user}");
    all.push(&as_flag);
    let out = t.kubectl_stdin(&all, Some(stdin)).await.unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_using_the_authorizer_allows_and_denies_by_the_requesters_rights() {
    let t = TestServer::start().await.unwrap();
    t.kubectl_ok(&["create", "namespace", "team"]).await.unwrap();
    // Both users may create ConfigMaps; only `reader` may also read Secrets.
    for (role, verbs) in [("cm", "create,get"), ("secrets", "get")] {
        let res = if role == "cm" { "configmaps" } else { "secrets" };
        t.kubectl_ok(&[
            "create",
            "role",
            role,
            &format!("--verb={verbs}"),
            &format!("--resource={res}"),
            "-n",
            "team",
        ])
        .await
        .unwrap();
    }
    for (binding, role, user) in
        [("w-cm", "cm", "writer"), ("r-cm", "cm", "reader"), ("r-secrets", "secrets", "reader")]
    {
        t.kubectl_ok(&[
            "create",
            "rolebinding",
            binding,
            &format!("--role={role}"),
            &format!("--user={user}"),
            "-n",
            "team",
        ])
        .await
        .unwrap();
    }
    let policy = json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy", "metadata": {"name": "secret-readers"},
        "spec": {
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE"], "resources": ["configmaps"]}]},
            // Only requests the requester may make at all (always true here): the request's
            // own resource through `authorizer.requestResource`.
            "matchConditions": [{"name": "may-create",
                "expression": "authorizer.requestResource.check('create').allowed()"}],
            "validations": [{
                "expression": "authorizer.group('').resource('secrets').namespace(object.metadata.namespace).check('get').allowed()",
                "messageExpression": "'user ' + request.userInfo.username + ' may not read secrets'",
                "reason": "Forbidden"}]}});
    let binding = json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": "secret-readers"},
        "spec": {"policyName": "secret-readers", "validationActions": ["Deny"]}});
    for o in [policy, binding] {
        t.kubectl_stdin_ok(&["apply", "-f", "-"], &o.to_string()).await.unwrap();
    }
    let cm = |name: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": "team"}})
        .to_string()
    };
    let (ok, err) = as_user(&t, "writer", &["create", "-f", "-"], &cm("by-writer")).await;
    assert!(!ok, "writer's create passed");
    assert!(
        err.contains("ValidatingAdmissionPolicy 'secret-readers' with binding 'secret-readers' denied request: user writer may not read secrets"),
        "{err}"
    );
    let (ok, err) = as_user(&t, "reader", &["create", "-f", "-"], &cm("by-reader")).await;
    assert!(ok, "{err}");
    // The admin (`system:masters`) may do anything.
    t.kubectl_stdin_ok(&["create", "-f", "-"], &cm("by-admin")).await.unwrap();
}
