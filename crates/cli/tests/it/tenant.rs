//! Least-privilege identities and tenants (issue 16, parts 2 and 6), through the real binary and
//! the real kubectl: `kinetic controller --print-rbac` applies with kubectl and grants what it
//! says; `kinetic up` runs its controllers as `system:kinetic-controller`; two tenants cannot see,
//! change, guess or watch each other's objects and cannot escalate through a binding.

use std::path::Path;
use std::time::Duration;

use crate::Kinetic;

/// Runs kubectl with `kubeconfig`: (success, stdout, stderr).
async fn kubectl_as(kubeconfig: &Path, home: &Path, args: &[&str]) -> (bool, String, String) {
    let out = kinetic_testkit::kubectl(kubeconfig, home, args, None).await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kinetic ARGS`, asserting success; its stdout.
fn kinetic(args: &[&str]) -> String {
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_kinetic")).args(args).output().unwrap();
    assert!(out.status.success(), "kinetic {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn can_i(up: &Kinetic, args: &[&str]) -> String {
    let out = std::process::Command::new(kinetic_testkit::kubectl_bin())
        .arg("--kubeconfig")
        .arg(&up.kubeconfig)
        .args(["auth", "can-i"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn print_rbac_applies_with_kubectl_and_grants_the_controllers_no_more() {
    let dir = tempfile::tempdir().unwrap();
    // `kinetic apiserver` alone does not apply them: kubectl does.
    let api = crate::start("apiserver", dir.path(), crate::free_port()).await;
    let yaml = kinetic(&["controller", "--print-rbac"]);
    let home = tempfile::tempdir().unwrap();
    let out = crate::kubectl_in(&api, home.path(), &["apply", "-f", "-"], Some(&yaml)).await;
    assert!(
        out.contains("clusterrole.rbac.authorization.k8s.io/system:kinetic-controller created"),
        "{out}"
    );
    let ctl = "--as=system:kinetic-controller";
    assert_eq!(can_i(&api, &["create", "pods", "-n", "x", ctl]), "yes");
    assert_eq!(can_i(&api, &["update", "deployments.apps", "-n", "x", ctl]), "yes");
    assert_eq!(can_i(&api, &["create", "customresourcedefinitions", ctl]), "yes");
    assert_eq!(can_i(&api, &["get", "secrets", "-n", "x", ctl]), "no");
    assert_eq!(can_i(&api, &["create", "clusterrolebindings", ctl]), "no");
    let node = ["--as=system:node:n1", "--as-group=system:nodes"];
    assert_eq!(can_i(&api, &["create", "persistentvolumes", node[0], node[1]]), "yes");
    assert!(can_i(&api, &["get", "secrets", "-n", "x", node[0], node[1]]).starts_with("no"));
}

#[tokio::test]
async fn kinetic_up_runs_its_controllers_as_their_own_least_privileged_user() {
    let dir = tempfile::tempdir().unwrap();
    let up = crate::start_with("up", dir.path(), crate::free_port(), &["--no-node"]).await;
    let home = tempfile::tempdir().unwrap();
    let kc = dir.path().join("controller.kubeconfig");
    // Written after the admin's kubeconfig, before the controllers start.
    for i in 0.. {
        if kc.exists() {
            break;
        }
        assert!(i < 200, "no controller.kubeconfig");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, out, err) = kubectl_as(
        &kc,
        home.path(),
        &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
    )
    .await;
    assert!(ok && out == "system:kinetic-controller", "{out} {err}");
    let (ok, _, err) = kubectl_as(&kc, home.path(), &["get", "secrets", "-A"]).await;
    assert!(
        !ok && err.contains("User \"system:kinetic-controller\" cannot list resource \"secrets\""),
        "{err}"
    );
    // Its ReplicaSet controller still makes the Deployment's pods under those rights.
    crate::kubectl(
        &up,
        home.path(),
        &["create", "deployment", "web", "--image=busybox", "--replicas=2"],
    )
    .await;
    for i in 0.. {
        let pods =
            crate::kubectl(&up, home.path(), &["get", "pods", "-l", "app=web", "-o", "name"]).await;
        if pods.lines().count() == 2 {
            break;
        }
        assert!(i < 200, "the Deployment's pods were not created: {pods}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn tenants_cannot_see_change_guess_or_watch_each_others_objects_nor_escalate() {
    let dir = tempfile::tempdir().unwrap();
    let up = crate::start_with("up", dir.path(), crate::free_port(), &["--no-node"]).await;
    let home = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let out = kinetic(&[
        "tenant",
        "create",
        "a",
        "--namespaces",
        "a1,a2",
        "--quota",
        "pods=10,requests.cpu=4",
        "--data-dir",
        data,
    ]);
    assert!(out.contains("tenant a created"), "{out}");
    kinetic(&["tenant", "create", "b", "--data-dir", data]);
    let a = dir.path().join("tenants/a.kubeconfig");
    let b = dir.path().join("tenants/b.kubeconfig");
    let ls = kinetic(&["tenant", "ls", "--data-dir", data]);
    let rows: Vec<Vec<&str>> = ls.lines().map(|l| l.split_whitespace().collect()).collect();
    assert!(rows.contains(&vec!["a", "a1,a2"]) && rows.contains(&vec!["b", "b"]), "{ls}");
    // The quota object is there (its enforcement is the quota admission's).
    let hard = crate::kubectl(
        &up,
        home.path(),
        &["get", "resourcequota", "kinetic-tenant", "-n", "a1", "-o", "jsonpath={.spec.hard.pods}"],
    )
    .await;
    assert_eq!(hard, "10");

    // Each tenant works in its own namespaces.
    for (kc, ns) in [(&a, "a1"), (&b, "b")] {
        let (ok, _, err) = kubectl_as(
            kc,
            home.path(),
            &["create", "configmap", "c", "-n", ns, "--from-literal=k=v"],
        )
        .await;
        assert!(ok, "{err}");
        let (ok, _, err) = kubectl_as(kc, home.path(), &["get", "ns", ns]).await;
        assert!(ok, "{err}");
    }
    // Not in the other's: get (existing or not) is 403, never 404; so are lists, writes and watches.
    for name in ["c", "no-such-thing"] {
        let (ok, _, err) =
            kubectl_as(&a, home.path(), &["get", "configmap", name, "-n", "b"]).await;
        assert!(!ok, "a read b/{name}");
        assert!(
            err.contains(&format!("Error from server (Forbidden): configmaps \"{name}\" is forbidden: User \"tenant:a\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"b\"")),
            "{err}"
        );
    }
    for (kc, other) in [(&a, "b"), (&b, "a1")] {
        let watch = format!("/api/v1/namespaces/{other}/configmaps?watch=true");
        let refused: [&[&str]; 9] = [
            &["get", "configmaps", "-n", other],
            &["delete", "configmap", "c", "-n", other],
            &["create", "configmap", "x", "-n", other],
            &["get", "--raw", &watch],
            &["get", "ns", other],
            &["get", "namespaces"],
            &["get", "nodes"],
            &["get", "clusterroles"],
            &["get", "pods", "-A"],
        ];
        for args in refused {
            let (ok, out, err) = kubectl_as(kc, home.path(), args).await;
            assert!(!ok && out.is_empty(), "{kc:?} may not {args:?}: {out}");
            assert!(err.contains("forbidden: User \"tenant:"), "{args:?}: {err}");
        }
    }
    // No escalation through a binding: not to cluster-admin, not into the other's namespace.
    let (ok, _, err) = kubectl_as(
        &a,
        home.path(),
        &[
            "create",
            "rolebinding",
            "up",
            "--clusterrole=cluster-admin",
            "--user=tenant:a",
            "-n",
            "a1",
        ],
    )
    .await;
    assert!(
        !ok && err.contains("is attempting to grant RBAC permissions not currently held"),
        "{err}"
    );
    let (ok, _, err) = kubectl_as(
        &a,
        home.path(),
        &["create", "clusterrolebinding", "up", "--clusterrole=cluster-admin", "--user=tenant:a"],
    )
    .await;
    assert!(!ok && err.contains("is forbidden: User \"tenant:a\""), "{err}");
    let (ok, _, err) = kubectl_as(
        &a,
        home.path(),
        &["create", "rolebinding", "in-b", "--clusterrole=admin", "--user=tenant:a", "-n", "b"],
    )
    .await;
    assert!(!ok && err.contains("is forbidden: User \"tenant:a\""), "{err}");
    // Creating a tenant over another's namespace is refused.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kinetic"))
        .args(["tenant", "create", "c", "--namespaces", "b", "--data-dir", data])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("namespace b exists and belongs to tenant b")
    );

    // Delete: its namespaces go, the other's stay.
    kinetic(&["tenant", "delete", "a", "--data-dir", data]);
    assert!(!a.exists());
    for i in 0.. {
        let ls = kinetic(&["tenant", "ls", "--data-dir", data]);
        if !ls.contains("a1") {
            assert!(ls.lines().any(|l| l.split_whitespace().eq(["b", "b"])), "{ls}");
            break;
        }
        assert!(i < 300, "tenant a's namespaces were not deleted: {ls}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
