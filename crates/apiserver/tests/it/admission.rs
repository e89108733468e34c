//! The admission gaps of issue 16 part 4: the `authorizer` CEL variable of
//! ValidatingAdmissionPolicy backed by RBAC, CONNECT requests (`pods/exec`) and
//! `pods/binding`/`pods/eviction` sent to webhooks as upstream sends them, and the garbage
//! collector's deletes of dependents reaching validating webhooks as DELETE.

use kinetic_testkit::TestServer;
use serde_json::json;

use crate::webhooks::{Hooks, configure, hook};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_sees_connect_for_exec_with_the_options_object_and_create_for_binding_and_eviction()
 {
    let t = TestServer::start().await.unwrap();
    let hooks = Hooks::start(&["127.0.0.1"]).await;
    let url = json!({"url": hooks.url("/deny"), "caBundle": hooks.ca_bundle});
    let rules = json!([
        {"operations": ["CONNECT"], "apiGroups": [""], "apiVersions": ["v1"],
         "resources": ["pods/exec"]},
        {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
         "resources": ["pods/binding", "pods/eviction"]},
    ]);
    let h = hook("connect.example.com", url, json!({"rules": rules}));
    configure(&t, "ValidatingWebhookConfiguration", "connect", vec![h]).await;
    // On a node (none runs: the request is refused before it would be proxied).
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bad-exec", "namespace": "default"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}});
    t.kubectl_stdin_ok(&["create", "-f", "-"], &pod.to_string()).await.unwrap();
    let out = t.kubectl(&["exec", "bad-exec", "-c", "c", "--", "ls", "-l"]).await.unwrap();
    assert!(!out.status.success());
    let reviews = hooks.reviews("/deny");
    let exec = reviews.first().expect("the webhook saw the exec");
    assert_eq!(exec["operation"], "CONNECT");
    assert_eq!(exec["subResource"], "exec");
    assert_eq!(exec["resource"], json!({"group": "", "version": "v1", "resource": "pods"}));
    assert_eq!(exec["kind"], json!({"group": "", "version": "v1", "kind": "PodExecOptions"}));
    assert_eq!(exec["object"]["kind"], "PodExecOptions");
    assert_eq!(exec["object"]["command"], json!(["ls", "-l"]));
    assert_eq!(exec["object"]["container"], "c");
    assert_eq!(exec["name"], "bad-exec");
    assert_eq!(exec["namespace"], "default");
    assert!(exec["oldObject"].is_null());

    // A binding is a CREATE of pods/binding with the Binding; the webhook refuses this one.
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bad-bind", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    t.kubectl_stdin_ok(&["create", "-f", "-"], &pod.to_string()).await.unwrap();
    let binding = json!({"apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": "bad-bind", "namespace": "default"}, "target": {"name": "n1"}});
    let client = t.client().await.unwrap();
    let req = http::Request::post("/api/v1/namespaces/default/pods/bad-bind/binding")
        .header("content-type", "application/json")
        .body(binding.to_string().into_bytes())
        .unwrap();
    let err = client.request_text(req).await.unwrap_err().to_string();
    assert!(err.contains("pods named bad-bind are not allowed"), "{err}");
    let reviews = hooks.reviews("/deny");
    let bind = reviews.iter().find(|r| r["subResource"] == "binding").expect("binding seen");
    assert_eq!(bind["operation"], "CREATE");
    assert_eq!(bind["kind"], json!({"group": "", "version": "v1", "kind": "Binding"}));
    assert_eq!(bind["object"]["target"]["name"], "n1");
    assert_eq!(bind["options"]["kind"], "CreateOptions");

    // An eviction is a CREATE of pods/eviction with the policy/v1 Eviction.
    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": "bad-bind", "namespace": "default"}});
    let req = http::Request::post("/api/v1/namespaces/default/pods/bad-bind/eviction")
        .header("content-type", "application/json")
        .body(eviction.to_string().into_bytes())
        .unwrap();
    let err = client.request_text(req).await.unwrap_err().to_string();
    assert!(err.contains("pods named bad-bind are not allowed"), "{err}");
    let reviews = hooks.reviews("/deny");
    let evict = reviews.iter().find(|r| r["subResource"] == "eviction").expect("eviction seen");
    assert_eq!(evict["operation"], "CREATE");
    assert_eq!(evict["kind"], json!({"group": "policy", "version": "v1", "kind": "Eviction"}));
    assert_eq!(evict["resource"], json!({"group": "", "version": "v1", "resource": "pods"}));
    // The pod is still there: the refusal came before the eviction was acted on.
    t.kubectl_ok(&["get", "pod", "bad-bind"]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gc_delete_of_a_dependent_is_seen_by_a_validating_webhook_for_delete() {
    let t = TestServer::start().await.unwrap();
    let hooks = Hooks::start(&["127.0.0.1"]).await;
    let url = json!({"url": hooks.url("/allow"), "caBundle": hooks.ca_bundle});
    let rules = json!([{"operations": ["DELETE"], "apiGroups": [""], "apiVersions": ["v1"],
                        "resources": ["configmaps"]}]);
    let h = hook("deletes.example.com", url, json!({"rules": rules}));
    configure(&t, "ValidatingWebhookConfiguration", "deletes", vec![h]).await;
    t.kubectl_ok(&["create", "configmap", "owner"]).await.unwrap();
    let uid = t
        .kubectl_ok(&["get", "configmap", "owner", "-o", "jsonpath={.metadata.uid}"])
        .await
        .unwrap();
    let dep = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "dep", "namespace": "default", "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid.trim()}]}});
    t.kubectl_stdin_ok(&["create", "-f", "-"], &dep.to_string()).await.unwrap();
    t.kubectl_ok(&["delete", "configmap", "owner", "--wait=false"]).await.unwrap();
    // The collector deletes the dependent; wait (bounded) until the webhook saw it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let review = loop {
        let seen = hooks.reviews("/allow");
        if let Some(r) = seen.iter().find(|r| r["name"] == "dep") {
            break r.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no DELETE of dep reached the webhook");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(review["operation"], "DELETE");
    assert_eq!(
        review["userInfo"]["username"],
        "system:serviceaccount:kube-system:generic-garbage-collector"
    );
    assert_eq!(review["oldObject"]["metadata"]["name"], "dep");
    assert_eq!(review["options"]["kind"], "DeleteOptions");
    // The client's own delete of the owner went to the webhook too, as the admin.
    let owner = hooks.reviews("/allow");
    let owner = owner.iter().find(|r| r["name"] == "owner").expect("owner delete seen");
    assert_ne!(owner["userInfo"]["username"], review["userInfo"]["username"]);
}
