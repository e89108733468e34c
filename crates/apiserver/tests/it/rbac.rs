//! RBAC through the real kubectl: the default roles, upstream's 403 messages, `kubectl auth
//! can-i` (SelfSubjectAccessReview, `--list` through SelfSubjectRulesReview), escalation and
//! bind checks. Users are impersonated by the admin (`--as`, upstream's `Impersonate-User`),
//! which is how an administrator checks a user's rights on a real cluster too.

use kinetic_testkit::TestServer;

async fn setup(t: &TestServer, ns: &str) {
    t.kubectl_ok(&["create", "namespace", ns]).await.unwrap();
    for (role, user) in [("admin", "adam"), ("edit", "eddie"), ("view", "vera")] {
        t.kubectl_ok(&[
            "create",
            "rolebinding",
            &format!("{user}-{role}"),
            &format!("--clusterrole={role}"),
            &format!("--user={user}"),
            "-n",
            ns,
        ])
        .await
        .unwrap();
    }
}

/// A kubeconfig for `t`'s server that authenticates with `token`.
fn kubeconfig_with_token(t: &TestServer, token: &str) -> std::path::PathBuf {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(t.server().ca_pem());
    let path = t.data_dir().join("token-kubeconfig");
    let kc = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n",
        t.server().url()
    );
    std::fs::write(&path, kc).unwrap();
    path
}

/// Runs kubectl as `user` and returns (success, stdout, stderr).
async fn as_user(t: &TestServer, user: &str, args: &[&str]) -> (bool, String, String) {
    let mut all: Vec<&str> = args.to_vec();
    let as_flag = format!("--as={user}");
    all.push(&as_flag);
    let out = t.kubectl(&all).await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_view_user_cannot_read_secrets_or_create_pods() {
    let t = TestServer::start().await.unwrap();
    setup(&t, "team").await;
    t.kubectl_ok(&["create", "secret", "generic", "s", "--from-literal=k=v", "-n", "team"])
        .await
        .unwrap();
    let (ok, _, err) = as_user(&t, "vera", &["get", "pods", "-n", "team"]).await;
    assert!(ok, "{err}");
    let (ok, _, err) = as_user(&t, "vera", &["get", "secrets", "-n", "team"]).await;
    assert!(!ok);
    assert!(
        err.contains("Error from server (Forbidden): secrets is forbidden: User \"vera\" cannot list resource \"secrets\" in API group \"\" in the namespace \"team\""),
        "{err}"
    );
    let (ok, _, err) = as_user(&t, "vera", &["get", "secret", "s", "-n", "team"]).await;
    assert!(!ok);
    assert!(
        err.contains("secrets \"s\" is forbidden: User \"vera\" cannot get resource \"secrets\" in API group \"\" in the namespace \"team\""),
        "{err}"
    );
    let (ok, _, err) = as_user(&t, "vera", &["run", "p", "--image=busybox", "-n", "team"]).await;
    assert!(!ok);
    assert!(
        err.contains("pods is forbidden: User \"vera\" cannot create resource \"pods\" in API group \"\" in the namespace \"team\""),
        "{err}"
    );
    // The binding is namespaced: nothing in another namespace, nothing cluster-wide.
    let (ok, _, err) = as_user(&t, "vera", &["get", "pods", "-n", "default"]).await;
    assert!(!ok && err.contains("in the namespace \"default\""), "{err}");
    let (ok, _, err) = as_user(&t, "vera", &["get", "nodes"]).await;
    assert!(!ok && err.contains("at the cluster scope"), "{err}");
    // Discovery is everyone's (system:discovery); /metrics is not.
    let (ok, _, err) = as_user(&t, "vera", &["get", "--raw", "/api"]).await;
    assert!(ok, "{err}");
    let (ok, _, err) = as_user(&t, "vera", &["get", "--raw", "/metrics"]).await;
    assert!(!ok);
    assert!(err.contains("forbidden: User \"vera\" cannot get path \"/metrics\""), "{err}");
    // Bindings print as upstream's table: the role and, wide, the subjects.
    let table = t.kubectl_ok(&["get", "rolebindings", "-n", "team", "-o", "wide"]).await.unwrap();
    let row: Vec<&str> =
        table.lines().find(|l| l.starts_with("vera-view")).unwrap().split_whitespace().collect();
    assert_eq!((row[1], row[3]), ("ClusterRole/view", "vera"), "{table}");
    // Removing the binding removes the rights.
    t.kubectl_ok(&["delete", "rolebinding", "vera-view", "-n", "team"]).await.unwrap();
    let (ok, _, _) = as_user(&t, "vera", &["get", "pods", "-n", "team"]).await;
    assert!(!ok);
    t.shutdown().await;
}

#[tokio::test]
async fn auth_can_i_answers_for_the_default_roles() {
    let t = TestServer::start().await.unwrap();
    setup(&t, "team").await;
    // (verb, resource, admin, edit, view)
    let matrix = [
        ("get", "pods", true, true, true),
        ("list", "deployments.apps", true, true, true),
        ("create", "pods", true, true, false),
        ("delete", "deployments.apps", true, true, false),
        ("get", "pods/log", true, true, true),
        ("create", "pods/exec", true, true, false),
        ("get", "secrets", true, true, false),
        ("create", "rolebindings.rbac.authorization.k8s.io", true, false, false),
        ("create", "localsubjectaccessreviews.authorization.k8s.io", true, false, false),
        ("update", "leases.coordination.k8s.io", true, true, false),
        ("delete", "namespaces", false, false, false),
        ("list", "nodes", false, false, false),
    ];
    for (verb, resource, admin, edit, view) in matrix {
        for (user, want) in [("adam", admin), ("eddie", edit), ("vera", view)] {
            let (ok, out, err) =
                as_user(&t, user, &["auth", "can-i", verb, resource, "-n", "team"]).await;
            let expect = if want { "yes" } else { "no" };
            assert_eq!(out.trim(), expect, "{user} {verb} {resource}: {out}{err}");
            assert_eq!(ok, want, "exit code of can-i for {user} {verb} {resource}");
        }
    }
    // The admin (system:masters) may do anything anywhere.
    assert_eq!(t.kubectl_ok(&["auth", "can-i", "*", "*", "-A"]).await.unwrap().trim(), "yes");
    // Non-resource URLs.
    let (_, out, _) = as_user(&t, "vera", &["auth", "can-i", "get", "/version"]).await;
    assert_eq!(out.trim(), "yes");
    let (_, out, _) = as_user(&t, "vera", &["auth", "can-i", "get", "/metrics"]).await;
    assert_eq!(out.trim(), "no");
    // --list: the view role's resources, without secrets.
    let (ok, out, err) = as_user(&t, "vera", &["auth", "can-i", "--list", "-n", "team"]).await;
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.starts_with("pods ") && l.contains("[get list watch]")), "{out}");
    assert!(!out.lines().any(|l| l.starts_with("secrets")), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("selfsubjectaccessreviews.authorization.k8s.io")),
        "{out}"
    );
    t.shutdown().await;
}

#[tokio::test]
async fn escalation_through_roles_and_bindings_is_refused() {
    let t = TestServer::start().await.unwrap();
    setup(&t, "team").await;
    // An admin of the namespace may create roles with rights it holds...
    let (ok, _, err) = as_user(
        &t,
        "adam",
        &["create", "role", "secret-reader", "--verb=get", "--resource=secrets", "-n", "team"],
    )
    .await;
    assert!(ok, "{err}");
    // ...but not with rights it lacks.
    let (ok, _, err) = as_user(
        &t,
        "adam",
        &[
            "create",
            "role",
            "node-reader",
            "--verb=get,list",
            "--resource=nodes,pods",
            "-n",
            "team",
        ],
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("roles.rbac.authorization.k8s.io \"node-reader\" is forbidden: user \"adam\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"get\" \"list\"]}"),
        "{err}"
    );
    // Nor bind a role with more rights than it holds.
    let (ok, _, err) = as_user(
        &t,
        "adam",
        &[
            "create",
            "rolebinding",
            "me-admin",
            "--clusterrole=cluster-admin",
            "--user=adam",
            "-n",
            "team",
        ],
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("rolebindings.rbac.authorization.k8s.io \"me-admin\" is forbidden: user \"adam\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:"),
        "{err}"
    );
    // Binding a role whose rights it holds is fine (edit is inside admin).
    let (ok, _, err) = as_user(
        &t,
        "adam",
        &["create", "rolebinding", "vera-edit", "--clusterrole=edit", "--user=vera", "-n", "team"],
    )
    .await;
    assert!(ok, "{err}");
    // An edit user may not touch RBAC at all (403 from the authoriser).
    let (ok, _, err) = as_user(
        &t,
        "eddie",
        &["create", "rolebinding", "x", "--clusterrole=view", "--user=eddie", "-n", "team"],
    )
    .await;
    assert!(!ok && err.contains("cannot create resource \"rolebindings\""), "{err}");
    // `escalate` on roles and `bind` on a role lift the checks, as upstream.
    t.kubectl_ok(&[
        "create",
        "role",
        "escalator",
        "--verb=escalate,bind",
        "--resource=roles,clusterroles",
        "-n",
        "team",
    ])
    .await
    .unwrap();
    t.kubectl_ok(&[
        "create",
        "rolebinding",
        "adam-escalator",
        "--role=escalator",
        "--user=adam",
        "-n",
        "team",
    ])
    .await
    .unwrap();
    let (ok, _, err) = as_user(
        &t,
        "adam",
        &[
            "create",
            "role",
            "node-reader",
            "--verb=get,list",
            "--resource=nodes,pods",
            "-n",
            "team",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let (ok, _, err) = as_user(
        &t,
        "adam",
        &[
            "create",
            "rolebinding",
            "me-admin",
            "--clusterrole=cluster-admin",
            "--user=adam",
            "-n",
            "team",
        ],
    )
    .await;
    assert!(ok, "{err}");
    t.shutdown().await;
}

#[tokio::test]
async fn a_service_account_bound_to_a_role_gets_exactly_those_rights() {
    let t = TestServer::start().await.unwrap();
    t.kubectl_ok(&["create", "namespace", "apps"]).await.unwrap();
    t.kubectl_ok(&["create", "serviceaccount", "bot", "-n", "apps"]).await.unwrap();
    t.kubectl_ok(&[
        "create",
        "role",
        "cm",
        "--verb=get,list,watch",
        "--resource=configmaps",
        "-n",
        "apps",
    ])
    .await
    .unwrap();
    t.kubectl_ok(&[
        "create",
        "role",
        "one-secret",
        "--verb=get",
        "--resource=secrets",
        "--resource-name=bot-config",
        "-n",
        "apps",
    ])
    .await
    .unwrap();
    for role in ["cm", "one-secret"] {
        t.kubectl_ok(&[
            "create",
            "rolebinding",
            role,
            &format!("--role={role}"),
            "--serviceaccount=apps:bot",
            "-n",
            "apps",
        ])
        .await
        .unwrap();
    }
    let sa = "system:serviceaccount:apps:bot";
    let checks = [
        (&["list", "configmaps", "-n", "apps"][..], true),
        (&["watch", "configmaps", "-n", "apps"][..], true),
        (&["create", "configmaps", "-n", "apps"][..], false),
        (&["list", "configmaps", "-n", "default"][..], false),
        (&["get", "secrets/bot-config", "-n", "apps"][..], true),
        (&["get", "secrets/other", "-n", "apps"][..], false),
        (&["list", "secrets", "-n", "apps"][..], false),
        (&["list", "pods", "-n", "apps"][..], false),
    ];
    for (args, want) in checks {
        let mut a = vec!["auth", "can-i"];
        a.extend_from_slice(args);
        let (_, out, err) = as_user(&t, sa, &a).await;
        assert_eq!(out.trim(), if want { "yes" } else { "no" }, "{args:?}: {err}");
    }
    // With the service account's own token (TokenRequest), not impersonated.
    let token = t.kubectl_ok(&["create", "token", "bot", "-n", "apps"]).await.unwrap();
    let kc = kubeconfig_with_token(&t, token.trim());
    let bot = |args: &'static [&'static str]| {
        let kc = kc.clone();
        let home = t.data_dir();
        async move {
            let out = kinetic_testkit::kubectl(&kc, &home, args, None).await.unwrap();
            (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
        }
    };
    let (ok, err) = bot(&["get", "configmaps", "-n", "apps"]).await;
    assert!(ok, "{err}");
    let (ok, err) = bot(&["get", "secrets", "-n", "apps"]).await;
    assert!(!ok);
    assert!(
        err.contains("secrets is forbidden: User \"system:serviceaccount:apps:bot\" cannot list resource \"secrets\" in API group \"\" in the namespace \"apps\""),
        "{err}"
    );
    let (ok, err) = bot(&["get", "configmaps", "-n", "default"]).await;
    assert!(!ok && err.contains("in the namespace \"default\""), "{err}");
    // And the requests themselves.
    let (ok, _, err) = as_user(&t, sa, &["get", "configmaps", "-n", "apps"]).await;
    assert!(ok, "{err}");
    let (ok, _, err) = as_user(&t, sa, &["get", "pods", "-n", "apps"]).await;
    assert!(
        !ok && err
            .contains("User \"system:serviceaccount:apps:bot\" cannot list resource \"pods\""),
        "{err}"
    );
    t.shutdown().await;
}

#[tokio::test]
async fn cluster_roles_aggregate_and_default_roles_are_reconciled_not_overwritten() {
    let mut t = TestServer::start().await.unwrap();
    setup(&t, "team").await;
    // A ClusterRole labelled to aggregate into view gives view users its rights.
    let role = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: roles-view
  labels:
    rbac.authorization.k8s.io/aggregate-to-view: "true"
rules:
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles"]
  verbs: ["get", "list"]
"#;
    t.kubectl_stdin_ok(&["apply", "-f", "-"], role).await.unwrap();
    // Aggregation runs in the background: wait for it (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, out, _) = as_user(
            &t,
            "vera",
            &["auth", "can-i", "list", "roles.rbac.authorization.k8s.io", "-n", "team"],
        )
        .await;
        if out.trim() == "yes" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "view never aggregated roles-view");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Through view into edit too.
    let (_, out, _) = as_user(
        &t,
        "eddie",
        &["auth", "can-i", "get", "roles.rbac.authorization.k8s.io", "-n", "team"],
    )
    .await;
    assert_eq!(out.trim(), "yes");
    // An administrator's change to a default role survives a restart; a default role marked
    // autoupdate=false is left alone, others get their missing rules back.
    t.kubectl_ok(&[
        "annotate",
        "clusterrole",
        "system:monitoring",
        "rbac.authorization.kubernetes.io/autoupdate=false",
        "--overwrite",
    ])
    .await
    .unwrap();
    t.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:monitoring"}, "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]}"#,
    )
    .await
    .unwrap();
    t.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:basic-user"}, "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}"#,
    )
    .await
    .unwrap();
    t.restart().await.unwrap();
    let mon = t
        .kubectl_ok(&[
            "get",
            "clusterrole",
            "system:monitoring",
            "-o",
            "jsonpath={.rules[*].nonResourceURLs}",
        ])
        .await
        .unwrap();
    assert_eq!(mon, "[\"/metrics\"]", "autoupdate=false is left alone");
    let basic = t
        .kubectl_ok(&[
            "get",
            "clusterrole",
            "system:basic-user",
            "-o",
            "jsonpath={.rules[*].resources}",
        ])
        .await
        .unwrap();
    assert!(basic.contains("configmaps") && basic.contains("selfsubjectaccessreviews"), "{basic}");
    t.shutdown().await;
}
