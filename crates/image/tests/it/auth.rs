use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use kinetic_image::push::{ImageSpec, Pusher};
use kinetic_image::{Credential, NoProgress, PullOptions, parse_docker_config_json};
use kinetic_testkit::images;
use kinetic_testkit::registry::Registry;

use crate::{chain, read, store};

fn dockerconfig(registry: &str, user: &str, password: &str) -> Vec<Credential> {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let json = format!(r#"{{"auths":{{"http://{registry}/v1/":{{"auth":"{auth}"}}}}}}"#);
    parse_docker_config_json(json.as_bytes()).unwrap()
}

fn busybox_spec() -> ImageSpec {
    ImageSpec {
        config: images::busybox_config(),
        layers: vec![images::busybox_layer().unwrap()],
        ..ImageSpec::default()
    }
}

#[tokio::test]
async fn htpasswd_registry_needs_the_pull_secret() {
    let reg = Registry::start_with_htpasswd("alice", "s3cret").await.unwrap();
    let reference = format!("{}/private/busybox:v1", reg.addr());
    let good = PullOptions {
        credentials: dockerconfig(reg.addr(), "alice", "s3cret"),
        ..Default::default()
    };
    let anonymous = Pusher::new(&reference, &PullOptions::default()).unwrap();
    let e = anonymous.push_image(&busybox_spec()).await.unwrap_err();
    assert!(e.is_unauthorized(), "{}", chain(&e));
    Pusher::new(&reference, &good).unwrap().push_image(&busybox_spec()).await.unwrap();

    let (_dir, store) = store();
    let e = store.pull(&reference, &PullOptions::default(), &NoProgress).await.unwrap_err();
    assert!(e.is_unauthorized(), "{}", chain(&e));
    let msg = chain(&e);
    assert!(
        msg.contains(&format!("registry {} denied access to private/busybox", reg.addr())),
        "{msg}"
    );
    assert!(msg.contains("without credentials"), "{msg}");

    let bad = PullOptions {
        credentials: dockerconfig(reg.addr(), "alice", "wrong"),
        ..Default::default()
    };
    let e = store.pull(&reference, &bad, &NoProgress).await.unwrap_err();
    assert!(e.is_unauthorized(), "{}", chain(&e));
    assert!(chain(&e).contains("with the given credentials"), "{}", chain(&e));

    // Credentials for another registry are not sent.
    let other = PullOptions {
        credentials: dockerconfig("127.0.0.1:1", "alice", "s3cret"),
        ..Default::default()
    };
    assert!(store.pull(&reference, &other, &NoProgress).await.unwrap_err().is_unauthorized());

    let img = store.pull(&reference, &good, &NoProgress).await.unwrap();
    assert!(read(&img.layers[0].join("etc/passwd")).contains("root"));
    assert!(store.list().unwrap().len() == 1);
}

/// What the fake token service saw.
#[derive(Default)]
struct Seen {
    token_queries: Vec<String>,
    token_auth: Vec<Option<String>>,
}

const TOKEN: &str = "tok-0123456789";

/// A registry front that demands bearer tokens, as Docker Hub and most registries do: `/v2/*`
/// without `Bearer <TOKEN>` gets a 401 challenge pointing at `/token` on the same server,
/// which hands out TOKEN for Basic `bob:hunter2`; with the token, requests are proxied to the
/// real registry behind it.
async fn token_front(upstream: String) -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    // The challenge names the front's own address, known only once it listens.
    let own = Arc::new(std::sync::OnceLock::<String>::new());
    let (s, o) = (seen.clone(), own.clone());
    let addr = serve(move |req| {
        let (seen, own, client, upstream) =
            (s.clone(), o.clone(), client.clone(), upstream.clone());
        async move {
            let addr = own.get().cloned().unwrap_or_default();
            handle(req, &addr, &seen, &client, &upstream).await
        }
    })
    .await;
    own.set(addr.clone()).unwrap();
    (addr, seen)
}

async fn handle(
    req: Request<Incoming>,
    addr: &str,
    seen: &Mutex<Seen>,
    client: &HttpClient,
    upstream: &str,
) -> Response<Full<Bytes>> {
    let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    if req.uri().path() == "/token" {
        let mut s = seen.lock().unwrap();
        s.token_queries.push(req.uri().query().unwrap_or("").to_owned());
        s.token_auth.push(auth.clone());
        let want =
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("bob:hunter2"));
        return if auth.as_deref() == Some(want.as_str()) {
            Response::new(Full::new(Bytes::from(format!(
                r#"{{"token":"{TOKEN}","expires_in":300}}"#
            ))))
        } else {
            let mut r =
                Response::new(Full::new(Bytes::from_static(br#"{"details":"bad credentials"}"#)));
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            r
        };
    }
    if auth.as_deref() != Some(&*format!("Bearer {TOKEN}")) {
        let repo =
            req.uri().path().trim_start_matches("/v2/").split("/manifests/").next().unwrap_or("");
        let repo = repo.split("/blobs/").next().unwrap_or("");
        let mut r = Response::new(Full::new(Bytes::from_static(
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        )));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        r.headers_mut().insert(
            "www-authenticate",
            format!(r#"Bearer realm="http://{addr}/token",service="kinetic-test",scope="repository:{repo}:pull""#)
                .parse()
                .unwrap(),
        );
        return r;
    }
    proxy(req, client, upstream).await
}

pub(crate) type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// Forwards a GET/HEAD to the real registry and returns its answer.
pub(crate) async fn proxy(
    req: Request<Incoming>,
    client: &HttpClient,
    upstream: &str,
) -> Response<Full<Bytes>> {
    let mut fwd = Request::builder().method(req.method()).uri(format!(
        "http://{upstream}{}",
        req.uri().path_and_query().map_or("/", |p| p.as_str())
    ));
    for h in ["accept", "range"] {
        if let Some(v) = req.headers().get(h) {
            fwd = fwd.header(h, v);
        }
    }
    let resp = client.request(fwd.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let mut out = Response::new(Full::new(body));
    *out.status_mut() = parts.status;
    for h in ["content-type", "docker-content-digest", "content-length", "content-range"] {
        if let Some(v) = parts.headers.get(h) {
            out.headers_mut().insert(h, v.clone());
        }
    }
    out
}

/// Serves `handler` on a loopback port; returns `host:port`.
pub(crate) async fn serve<F, Fut>(handler: F) -> String
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else { return };
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let h = handler.clone();
                    async move { Ok::<_, Infallible>(h(req).await) }
                });
                let io = hyper_util::rt::TokioIo::new(conn);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn server_errors_are_retried_with_back_off_then_reported() {
    let reg = Registry::start().await.unwrap();
    images::busybox(&reg, "flaky", "v1", &[]).await.unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    // Every other request fails with 503 (and the first two in a row).
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (c, upstream) = (count.clone(), reg.addr().to_owned());
    let flaky = serve(move |req| {
        let (c, client, upstream) = (c.clone(), client.clone(), upstream.clone());
        async move {
            let n = c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n < 2 || n % 2 == 1 {
                let mut r = Response::new(Full::new(Bytes::from_static(b"try again")));
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                return r;
            }
            proxy(req, &client, &upstream).await
        }
    })
    .await;
    let (_dir, store) = store();
    let img = store
        .pull(&format!("{flaky}/flaky:v1"), &PullOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert!(img.layers[0].join("bin/busybox").exists());
    assert!(count.load(std::sync::atomic::Ordering::SeqCst) >= 6);

    // A registry that always fails is given up on after a bounded number of attempts.
    let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = attempts.clone();
    let down = serve(move |_req| {
        let a = a.clone();
        async move {
            a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            r
        }
    })
    .await;
    let started = std::time::Instant::now();
    let e =
        store.pull(&format!("{down}/x:y"), &PullOptions::default(), &NoProgress).await.unwrap_err();
    assert!(e.is_transient(), "{}", chain(&e));
    assert!(chain(&e).contains("registry answered 502"), "{}", chain(&e));
    let n = attempts.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=6).contains(&n), "{n} attempts");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test]
async fn bearer_token_flow_with_basic_credentials_at_the_realm() {
    let reg = Registry::start().await.unwrap();
    images::busybox(&reg, "team/app", "v1", &[("/version", "tokened")]).await.unwrap();
    let (front, seen) = token_front(reg.addr().to_owned()).await;
    let reference = format!("{front}/team/app:v1");
    let (_dir, store) = store();

    // Anonymous: the token service refuses, and the error says so.
    let e = store.pull(&reference, &PullOptions::default(), &NoProgress).await.unwrap_err();
    assert!(e.is_unauthorized(), "{}", chain(&e));
    assert!(chain(&e).contains("refused anonymous access"), "{}", chain(&e));

    let opts = PullOptions {
        credentials: vec![Credential {
            registry: front.clone(),
            username: "bob".into(),
            password: "hunter2".into(),
        }],
        ..Default::default()
    };
    let img = store.pull(&reference, &opts, &NoProgress).await.unwrap();
    assert_eq!(read(&img.layers[1].join("version")), "tokened");
    let s = seen.lock().unwrap();
    assert!(
        s.token_queries
            .iter()
            .all(|q| q == "service=kinetic-test&scope=repository%3Ateam%2Fapp%3Apull"),
        "{:?}",
        s.token_queries
    );
    // One token for the anonymous try, one for the real pull: the token is reused for the
    // manifest, config and every layer rather than fetched per request.
    assert_eq!(s.token_queries.len(), 2, "{:?}", s.token_queries);
    assert_eq!(s.token_auth[0], None);
}
