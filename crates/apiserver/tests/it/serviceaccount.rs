//! Service-account identities (issue 16 part 1): `kubectl create token`, `kubectl auth whoami`,
//! TokenReview through the kube client, tokens bound to pods and service accounts that stop
//! working when those go, and the `default` ServiceAccount and `kube-root-ca.crt` of every
//! namespace.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kinetic_testkit::TestServer;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};

/// A kubeconfig for `t`'s server that authenticates with `token`.
fn kubeconfig_with_token(t: &TestServer, name: &str, token: &str) -> PathBuf {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(t.server().ca_pem());
    let path = t.data_dir().join(format!("{name}.kubeconfig"));
    let kc = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n",
        t.server().url()
    );
    std::fs::write(&path, kc).unwrap();
    path
}

/// `kubectl auth whoami -o json` with `token`: the userInfo, or kubectl's stderr.
async fn whoami(t: &TestServer, token: &str) -> Result<Value, String> {
    let kc = kubeconfig_with_token(t, "whoami", token);
    let out = kinetic_testkit::kubectl(&kc, &t.data_dir(), &["auth", "whoami", "-o", "json"], None)
        .await
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    Ok(v["status"]["userInfo"].clone())
}

async fn create_token(t: &TestServer, args: &[&str]) -> String {
    let mut a = vec!["create", "token"];
    a.extend_from_slice(args);
    t.kubectl_ok(&a).await.unwrap().trim().to_owned()
}

#[tokio::test]
async fn kubectl_create_token_and_whoami_as_the_service_account() {
    let t = TestServer::start().await.unwrap();
    let token = create_token(&t, &["default"]).await;
    let u = whoami(&t, &token).await.unwrap();
    assert_eq!(u["username"], "system:serviceaccount:default:default", "{u}");
    assert_eq!(
        u["groups"],
        json!(["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"])
    );
    let sa: ServiceAccount =
        Api::namespaced(t.client().await.unwrap(), "default").get("default").await.unwrap();
    assert_eq!(u["uid"], json!(sa.metadata.uid.unwrap()));
    let cred = u["extra"]["authentication.kubernetes.io/credential-id"][0].as_str().unwrap();
    assert!(cred.starts_with("JTI="), "{u}");
    // The claims are upstream's.
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap(),
    )
    .unwrap();
    assert_eq!(claims["iss"], "https://kubernetes.default.svc.cluster.local");
    assert_eq!(claims["sub"], "system:serviceaccount:default:default");
    assert_eq!(claims["aud"], json!(["https://kubernetes.default.svc.cluster.local"]));
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);
    assert_eq!(claims["kubernetes.io"]["serviceaccount"]["name"], "default");
    // The admin is who the admin token says.
    let admin = whoami(&t, t.server().token()).await.unwrap();
    assert_eq!(admin["username"], "kubernetes-admin");
    // Too short a lifetime is refused as upstream refuses it.
    let out = t.kubectl(&["create", "token", "default", "--duration", "5m"]).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("may not specify a duration less than 10 minutes"), "{err}");
    // An unknown service account is 404.
    let out = t.kubectl(&["create", "token", "nobody"]).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("serviceaccounts \"nobody\" not found"), "{err}");
    // A garbage or foreign token is nobody.
    let err = whoami(&t, "eyJhbGciOiJFUzI1NiJ9.e30.AAAA").await.unwrap_err();
    assert!(err.contains("Unauthorized"), "{err}");
}

/// Issue 16: a token bound to a pod stops working when the pod is deleted, and does not come
/// back when a pod of the same name is created again (another uid); a token of a deleted
/// service account stops working too.
#[tokio::test]
async fn token_of_a_deleted_pod_or_service_account_is_refused() {
    let t = TestServer::start().await.unwrap();
    let client = t.client().await.unwrap();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"serviceAccountName": "robot", "containers": [{"name": "c", "image": "busybox"}]}});
    t.kubectl_ok(&["create", "serviceaccount", "robot"]).await.unwrap();
    t.kubectl_stdin_ok(&["create", "-f", "-"], &pod.to_string()).await.unwrap();
    let token =
        create_token(&t, &["robot", "--bound-object-kind", "Pod", "--bound-object-name", "p"])
            .await;
    let u = whoami(&t, &token).await.unwrap();
    assert_eq!(u["username"], "system:serviceaccount:default:robot");
    assert_eq!(u["extra"]["authentication.kubernetes.io/pod-name"], json!(["p"]), "{u}");
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "default");
    let uid = pods.get("p").await.unwrap().metadata.uid.unwrap();
    assert_eq!(u["extra"]["authentication.kubernetes.io/pod-uid"], json!([uid]));
    // Binding to a pod of another service account is refused.
    let out = t
        .kubectl(&[
            "create",
            "token",
            "default",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "p",
        ])
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("to pod running with different serviceaccount name"), "{err}");
    // An unbound token of the same account, to check the account's own deletion below.
    let unbound = create_token(&t, &["robot"]).await;
    pods.delete("p", &DeleteParams::default()).await.unwrap();
    let err = whoami(&t, &token).await.unwrap_err();
    assert!(err.contains("Unauthorized"), "{err}");
    t.kubectl_stdin_ok(&["create", "-f", "-"], &pod.to_string()).await.unwrap();
    let err = whoami(&t, &token).await.unwrap_err();
    assert!(err.contains("Unauthorized"), "a new pod of the same name has another uid: {err}");
    assert!(whoami(&t, &unbound).await.is_ok());
    let sas: Api<ServiceAccount> = Api::namespaced(client, "default");
    sas.delete("robot", &DeleteParams::default()).await.unwrap();
    let err = whoami(&t, &unbound).await.unwrap_err();
    assert!(err.contains("Unauthorized"), "{err}");
}

#[tokio::test]
async fn token_review_answers_for_tokens_and_audiences() {
    let t = TestServer::start().await.unwrap();
    let client = t.client().await.unwrap();
    let reviews: Api<TokenReview> = Api::all(client);
    let review = |token: &str, audiences: Option<Vec<String>>| TokenReview {
        spec: TokenReviewSpec { token: Some(token.to_owned()), audiences },
        ..Default::default()
    };
    let token = create_token(&t, &["default"]).await;
    let r = reviews.create(&PostParams::default(), &review(&token, None)).await.unwrap();
    let st = r.status.unwrap();
    assert_eq!(st.authenticated, Some(true), "{st:?}");
    let user = st.user.unwrap();
    assert_eq!(user.username.as_deref(), Some("system:serviceaccount:default:default"));
    // A token for another audience is not good for the API, but is for its audience.
    let vault = create_token(&t, &["default", "--audience", "vault"]).await;
    let r = reviews.create(&PostParams::default(), &review(&vault, None)).await.unwrap();
    let st = r.status.unwrap();
    assert_ne!(st.authenticated, Some(true));
    assert!(st.error.unwrap().contains("audiences"));
    assert!(whoami(&t, &vault).await.is_err());
    let r = reviews
        .create(&PostParams::default(), &review(&vault, Some(vec!["vault".into()])))
        .await
        .unwrap();
    let st = r.status.unwrap();
    assert_eq!(st.authenticated, Some(true));
    assert_eq!(st.audiences, Some(vec!["vault".to_owned()]));
    let r = reviews.create(&PostParams::default(), &review("nonsense", None)).await.unwrap();
    assert_ne!(r.status.unwrap().authenticated, Some(true));
    // The key survives a restart: tokens issued before stay valid.
    let mut t = t;
    t.restart().await.unwrap();
    assert_eq!(
        whoami(&t, &token).await.unwrap()["username"],
        "system:serviceaccount:default:default"
    );
}

/// Upstream's serviceaccounts-controller and root-ca-cert-publisher: every namespace gets the
/// `default` ServiceAccount and `kube-root-ca.crt`, and they come back when deleted.
#[tokio::test]
async fn every_namespace_gets_the_default_service_account_and_the_root_ca() {
    let t = TestServer::start().await.unwrap();
    let client = t.client().await.unwrap();
    t.kubectl_ok(&["create", "namespace", "team"]).await.unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "team");
    let cms: Api<ConfigMap> = Api::namespaced(client, "team");
    let wait_both = || async {
        for _ in 0..100 {
            if let (Ok(_), Ok(cm)) = (sas.get("default").await, cms.get("kube-root-ca.crt").await) {
                return cm;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no default service account or kube-root-ca.crt in namespace team");
    };
    let cm = wait_both().await;
    assert_eq!(cm.data.unwrap()["ca.crt"], t.server().ca_pem());
    sas.delete("default", &DeleteParams::default()).await.unwrap();
    cms.delete("kube-root-ca.crt", &DeleteParams::default()).await.unwrap();
    wait_both().await;
}

/// Client certificates signed by the cluster CA authenticate their subject: CN the user, O the
/// groups (upstream's x509 authenticator); the admin's bearer token still works beside them.
#[tokio::test]
async fn client_certificates_authenticate_their_common_name_and_organizations() {
    let t = TestServer::start().await.unwrap();
    let kc = t.server().client_kubeconfig("system:node:n1", &["system:nodes"]).unwrap();
    let path = t.data_dir().join("node.kubeconfig");
    std::fs::write(&path, kc).unwrap();
    let out =
        kinetic_testkit::kubectl(&path, &t.data_dir(), &["auth", "whoami", "-o", "json"], None)
            .await
            .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"]["userInfo"]["username"], "system:node:n1");
    assert_eq!(v["status"]["userInfo"]["groups"], json!(["system:nodes", "system:authenticated"]));
    // The kube client with the same kubeconfig is the same user (whatever RBAC lets it do).
    let client = kinetic_testkit::client_from_kubeconfig(&path).await.unwrap();
    let reviews: Api<SelfSubjectReview> = Api::all(client);
    match reviews.create(&PostParams::default(), &SelfSubjectReview::default()).await {
        Ok(r) => {
            let name = r.status.unwrap().user_info.unwrap().username;
            assert_eq!(name.as_deref(), Some("system:node:n1"));
        }
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403, "{s:?}");
            assert!(s.message.contains("User \"system:node:n1\""), "{s:?}");
        }
        Err(e) => panic!("{e}"),
    }
    assert_eq!(whoami(&t, t.server().token()).await.unwrap()["username"], "kubernetes-admin");
}

/// The `kubernetes` Service in `default` (upstream's controlplane endpoint reconciler): cluster
/// IP 10.96.0.1, port 443, and Endpoints naming the address the server listens on.
#[tokio::test]
async fn the_kubernetes_service_points_at_the_api_server() {
    let t = TestServer::start().await.unwrap();
    let out = t
        .kubectl_ok(&[
            "get",
            "svc",
            "kubernetes",
            "-o",
            "jsonpath={.spec.clusterIP} {.spec.ports[0].port}",
        ])
        .await
        .unwrap();
    assert_eq!(out, "10.96.0.1 443");
    let ep = t
        .kubectl_ok(&[
            "get",
            "endpoints",
            "kubernetes",
            "-o",
            "jsonpath={.subsets[0].addresses[0].ip}:{.subsets[0].ports[0].port}",
        ])
        .await
        .unwrap();
    assert_eq!(ep, t.server().local_addr().to_string());
}
