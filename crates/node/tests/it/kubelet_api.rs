//! The kubelet API of the agent (issue 10, item 9): HTTPS with client-certificate or token
//! authentication, and `kubectl logs -f`, `exec` (with and without a TTY, exit codes),
//! `attach` and `port-forward` through the embedded API server's proxy.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

use crate::Cluster;

/// Accepts the agent's self-signed certificate (as API servers do by default) but checks the
/// handshake signatures.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `GET path` on the agent's kubelet API over TLS, with an optional bearer token and client
/// certificate (PEM cert, PEM key); returns the whole HTTP/1.0 response, or the TLS error.
pub async fn kubelet_get(
    c: &Cluster,
    path: &str,
    token: Option<&str>,
    client_cert: Option<(&str, &str)>,
) -> Result<String, String> {
    let addr = c.agent.as_ref().unwrap().log_addr();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)));
    let cfg = match client_cert {
        Some((cert, key)) => {
            let certs = rustls_pemfile::certs(&mut cert.as_bytes()).map(Result::unwrap).collect();
            let key = rustls_pemfile::private_key(&mut key.as_bytes()).unwrap().unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.0\r\n{auth}\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    // A server that refuses the certificate ends the connection with an alert.
    s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A client certificate signed by a CA the cluster does not know.
fn foreign_cert() -> (String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(ca_cert.der(), ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
    p.distinguished_name.push(rcgen::DnType::OrganizationName, "system:masters");
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

async fn running_pod(c: &Cluster, name: &str, container: serde_json::Value) {
    let image = kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
    let mut spec = json!({"name": "app", "image": image});
    json_patch::merge(&mut spec, &container);
    c.create(name, json!({"containers": [spec]})).await;
    c.wait(name, 30, "Running", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
}

/// kubectl as a process, for commands that stream.
fn kubectl_cmd(c: &Cluster, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(kinetic_testkit::kubectl_bin());
    cmd.args(args)
        .env("KUBECONFIG", c.server.kubeconfig())
        .env("HOME", c.server.data_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_api_refuses_callers_without_a_valid_client_cert_or_token() {
    let c = Cluster::start().await;
    running_pod(&c, "quiet", json!({"command": ["sh", "-c", "echo hi; sleep 600"]})).await;
    let path = "/containerLogs/default/quiet/app";
    let none = kubelet_get(&c, path, None, None).await.unwrap();
    assert!(none.starts_with("HTTP/1.0 401"), "{none}");
    let wrong = kubelet_get(&c, path, Some("not-the-token"), None).await.unwrap();
    assert!(wrong.starts_with("HTTP/1.0 401"), "{wrong}");
    let (cert, key) = foreign_cert();
    let foreign = kubelet_get(&c, path, None, Some((&cert, &key))).await;
    assert!(
        foreign.as_ref().is_err() || foreign.as_ref().is_ok_and(|r| r.is_empty()),
        "{foreign:?}"
    );
    // The server's own client certificate, as the API server's proxy presents it.
    let pki = c.server.data_dir().join("pki");
    let cert = std::fs::read_to_string(pki.join("apiserver-kubelet-client.crt")).unwrap();
    let key = std::fs::read_to_string(pki.join("apiserver-kubelet-client.key")).unwrap();
    let by_cert = kubelet_get(&c, path, None, Some((&cert, &key))).await.unwrap();
    assert!(by_cert.starts_with("HTTP/1.0 200") && by_cert.ends_with("hi\n"), "{by_cert}");
    let token = c.cfg.auth_token.clone().unwrap();
    let by_token = kubelet_get(&c, path, Some(&token), None).await.unwrap();
    assert!(by_token.starts_with("HTTP/1.0 200"), "{by_token}");
    c.pods().delete("quiet", &Default::default()).await.unwrap();
    c.wait_gone("quiet", 20).await;
}

/// Issue 10, item 9: kube-apiserver dialled the agent over HTTPS and got "server gave HTTP
/// response to HTTPS client". The kubelet API speaks TLS only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_gave_http_response_to_https_client_kubelet_api_is_https() {
    let c = Cluster::start().await;
    let token = c.cfg.auth_token.clone().unwrap();
    let addr = c.agent.as_ref().unwrap().log_addr();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET /healthz HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut plain = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut plain)).await;
    assert!(!plain.starts_with(b"HTTP/"), "{}", String::from_utf8_lossy(&plain));
    let tls = kubelet_get(&c, "/healthz", Some(&token), None).await.unwrap();
    assert!(tls.starts_with("HTTP/1.0 200") && tls.ends_with("ok"), "{tls}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_follow_streams_new_lines() {
    let c = Cluster::start().await;
    running_pod(
        &c,
        "ticker",
        json!({"command": ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.5; done"]}),
    )
    .await;
    let mut child = kubectl_cmd(&c, &["logs", "-f", "ticker"]).spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let started = Instant::now();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("a new line within 20 s")
            .unwrap()
            .expect("kubectl logs -f ended");
        seen.push(line);
    }
    // Lines arrive as they are written (one every half second), not all at the end.
    assert!(started.elapsed() >= Duration::from_millis(900), "{seen:?}");
    assert!(seen.iter().all(|l| l.starts_with("tick ")), "{seen:?}");
    let _ = child.kill().await;
    c.pods().delete("ticker", &Default::default()).await.unwrap();
    c.wait_gone("ticker", 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_runs_commands_and_reports_exit_codes() {
    let c = Cluster::start().await;
    running_pod(&c, "shell", json!({"command": ["sleep", "600"]})).await;
    let out = c
        .server
        .kubectl_ok(&["exec", "shell", "--", "sh", "-c", "echo out; echo err >&2"])
        .await
        .unwrap();
    assert_eq!(out, "out\n");
    let failed =
        c.server.kubectl(&["exec", "shell", "--", "sh", "-c", "echo bye; exit 3"]).await.unwrap();
    assert_eq!(failed.status.code(), Some(3), "{failed:?}");
    assert_eq!(String::from_utf8_lossy(&failed.stdout), "bye\n");
    let missing = c.server.kubectl(&["exec", "shell", "--", "no-such-command"]).await.unwrap();
    assert!(!missing.status.success(), "{missing:?}");
    // stdin reaches the command and its end is the command's end of input.
    let echoed = c
        .server
        .kubectl_stdin_ok(
            &["exec", "-i", "shell", "--", "sh", "-c", "cat; echo done"],
            "one\ntwo\n",
        )
        .await
        .unwrap();
    assert_eq!(echoed, "one\ntwo\ndone\n");
    // Without a terminal, the command has none either.
    let tty = c.server.kubectl(&["exec", "shell", "--", "sh", "-c", "tty"]).await.unwrap();
    assert_eq!(tty.status.code(), Some(1), "{tty:?}");
    c.pods().delete("shell", &Default::default()).await.unwrap();
    c.wait_gone("shell", 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_it_gets_a_terminal_that_follows_resizes() {
    let c = Cluster::start().await;
    running_pod(&c, "term", json!({"command": ["sleep", "600"]})).await;
    // `script` gives kubectl a terminal (kubectl -t needs one), of a known size. runc sizes the
    // container's terminal just after the process starts, so the command polls for the size.
    let kubectl = format!(
        "stty cols 91 rows 27; KUBECONFIG={} HOME={} {} exec -it term -- sh -c 'tty; for i in $(seq 50); do [ \"$(stty size)\" = \"27 91\" ] && break; sleep 0.1; done; stty size; exit 4'",
        c.server.kubeconfig().display(),
        c.server.data_dir().display(),
        kinetic_testkit::kubectl_bin()
    );
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("script")
            .args(["-qec", &kubectl, "/dev/null"])
            .stdin(Stdio::piped())
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("27 91"), "the terminal has kubectl's size: {text}");
    assert_eq!(out.status.code(), Some(4), "{text}");
    c.pods().delete("term", &Default::default()).await.unwrap();
    c.wait_gone("term", 20).await;
}

/// Starts `kubectl port-forward` and returns it with the local port it listens on.
async fn port_forward(
    c: &Cluster,
    pod: &str,
    remote: u16,
    websockets: bool,
) -> (tokio::process::Child, u16) {
    let mut cmd = kubectl_cmd(c, &["port-forward", &format!("pod/{pod}"), &format!(":{remote}")]);
    // kubectl 1.31+ tunnels SPDY over WebSocket unless told not to; without it, plain SPDY.
    cmd.env("KUBECTL_PORT_FORWARD_WEBSOCKETS", if websockets { "true" } else { "false" });
    let mut child = cmd.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("kubectl port-forward printed nothing within 30 s")
        .unwrap()
        .unwrap_or_default();
    // "Forwarding from 127.0.0.1:40123 -> 8080"
    let port = line
        .split_once("127.0.0.1:")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected kubectl output: {line}"));
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            eprintln!("kubectl port-forward: {l}");
        }
    });
    (child, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_reaches_the_pods_port() {
    let c = Cluster::start().await;
    let image = kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
    c.create(
        "web",
        json!({"containers": [{"name": "web", "image": image,
            "command": ["sh", "-c",
                "httpd -f -p 127.0.0.1:8081 -h /www & exec httpd -f -p 8080 -h /www"],
            "ports": [{"containerPort": 8080}]}]}),
    )
    .await;
    c.wait_ready("web").await;
    // The pod's port, over both transports, and a port only the pod's loopback listens on
    // (kubelet dials localhost inside the pod).
    for (remote, websockets) in [(8080, true), (8080, false), (8081, true)] {
        let (mut child, port) = port_forward(&c, "web", remote, websockets).await;
        // Two connections in a row through the same port-forward session.
        for _ in 0..2 {
            let page = match Cluster::http_get("127.0.0.1", port, "/index.html").await {
                Ok(p) => p,
                Err(e) => {
                    let _ = child.kill().await;
                    let mut err = String::new();
                    let _ = child.stderr.take().unwrap().read_to_string(&mut err).await;
                    panic!("{remote} websockets={websockets}: {e}; kubectl: {err}");
                }
            };
            assert!(
                page.starts_with("HTTP/1.") && page.contains("hello from kinetic"),
                "{remote} websockets={websockets}: {page}"
            );
        }
        let _ = child.kill().await;
    }
    c.pods().delete("web", &Default::default()).await.unwrap();
    c.wait_gone("web", 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_over_spdy_as_kube_apiserver_speaks_to_kubelets() {
    let c = Cluster::start().await;
    running_pod(&c, "spdy", json!({"command": ["sleep", "600"]})).await;
    // kubectl falls back to SPDY when told not to use WebSockets; kube-apiserver (1.30+)
    // translates WebSocket exec into SPDY towards kubelets the same way.
    let run = |args: &'static [&'static str], stdin: Option<&'static str>| {
        let mut cmd = kubectl_cmd(&c, args);
        cmd.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        async move {
            let mut child = cmd.spawn().unwrap();
            if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
                pipe.write_all(input.as_bytes()).await.unwrap();
            }
            tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
                .await
                .unwrap()
                .unwrap()
        }
    };
    let out =
        run(&["exec", "spdy", "--", "sh", "-c", "echo out; echo err >&2; exit 3"], None).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err"), "{out:?}");
    let echoed =
        run(&["exec", "-i", "spdy", "--", "sh", "-c", "cat; echo done"], Some("a\nb\n")).await;
    assert!(echoed.status.success(), "{echoed:?}");
    assert_eq!(String::from_utf8_lossy(&echoed.stdout), "a\nb\ndone\n");
    let kubectl = format!(
        "stty cols 77 rows 21; KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false KUBECONFIG={} HOME={} {} exec -it spdy -- sh -c 'tty; for i in $(seq 50); do [ \"$(stty size)\" = \"21 77\" ] && break; sleep 0.1; done; stty size'",
        c.server.kubeconfig().display(),
        c.server.data_dir().display(),
        kinetic_testkit::kubectl_bin()
    );
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("script")
            .args(["-qec", &kubectl, "/dev/null"])
            .stdin(Stdio::piped())
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert!(text.contains("/dev/pts/") && text.contains("21 77"), "{text}");
    assert!(out.status.success(), "{text}");
    c.pods().delete("spdy", &Default::default()).await.unwrap();
    c.wait_gone("spdy", 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_attach_feeds_stdin_and_relays_output() {
    let c = Cluster::start().await;
    running_pod(
        &c,
        "reader",
        json!({"stdin": true,
            "command": ["sh", "-c", "echo ready; while read l; do echo got $l; done"]}),
    )
    .await;
    for websockets in [true, false] {
        let mut cmd = kubectl_cmd(&c, &["attach", "-i", "reader"]);
        cmd.stdin(Stdio::piped())
            .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", if websockets { "true" } else { "false" });
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let word = if websockets { "websocket" } else { "spdy" };
        // Attach relays output from when it starts: keep writing until the echo comes back.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        'wait: loop {
            assert!(Instant::now() < deadline, "no echo through attach: {seen:?}");
            stdin.write_all(format!("{word}\n").as_bytes()).await.unwrap();
            while let Ok(Ok(Some(l))) =
                tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await
            {
                if l == format!("got {word}") {
                    break 'wait;
                }
                seen.push(l);
            }
        }
        let _ = child.kill().await;
    }
    // A container without stdin refuses attach -i.
    running_pod(&c, "deaf", json!({"command": ["sleep", "600"]})).await;
    let out = c.server.kubectl(&["attach", "-i", "deaf"]).await.unwrap();
    assert!(!out.status.success(), "{out:?}");
    for p in ["reader", "deaf"] {
        c.pods().delete(p, &Default::default()).await.unwrap();
        c.wait_gone(p, 20).await;
    }
}

/// `tick N` lines of `kubectl logs` output (with `--timestamps`: `(time, N)`).
fn ticks(out: &str) -> Vec<(Option<jiff::Timestamp>, u32)> {
    out.lines()
        .filter_map(|l| {
            let (ts, rest) = match l.split_once(' ') {
                Some((t, r)) if t.ends_with('Z') => (Some(t.parse().expect("RFC 3339 time")), r),
                _ => (None, l),
            };
            Some((ts, rest.strip_prefix("tick ")?.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_timestamps_and_since_and_follow_across_an_agent_restart() {
    let mut c = Cluster::start().await;
    running_pod(
        &c,
        "ticker",
        json!({"command": ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"]}),
    )
    .await;
    // Timestamps: kubelet's fixed-width RFC3339Nano, one per line, increasing.
    let deadline = Instant::now() + Duration::from_secs(30);
    let stamped = loop {
        let out = c.server.kubectl_ok(&["logs", "--timestamps", "ticker"]).await.unwrap();
        let t = ticks(&out);
        if t.len() >= 15 {
            assert!(
                out.lines().all(|l| l.len() > 31 && l.as_bytes()[29] == b'Z' && &l[30..31] == " "),
                "{out}"
            );
            break t;
        }
        assert!(Instant::now() < deadline, "no 15 ticks in 30 s: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let times: Vec<jiff::Timestamp> = stamped.iter().map(|(t, _)| t.unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{stamped:?}");
    assert!(stamped.iter().map(|(_, n)| *n).eq(1..=stamped.len() as u32), "{stamped:?}");
    // Without --timestamps the CRI prefix is gone: the container's own lines.
    let plain = c.server.kubectl_ok(&["logs", "--tail=2", "ticker"]).await.unwrap();
    assert!(plain.lines().all(|l| l.starts_with("tick ")), "{plain}");
    assert_eq!(plain.lines().count(), 2, "{plain}");
    // --since-time: nothing older than that time. The API carries it in whole seconds
    // (`metav1.Time`), so the test picks the first whole second after the first line.
    let boundary = jiff::Timestamp::from_second(times[0].as_second() + 1).unwrap();
    let expect = stamped.iter().find(|(t, _)| t.unwrap() >= boundary).map(|(_, n)| *n);
    let since = c.server.kubectl_ok(&["logs", &format!("--since-time={boundary}"), "ticker"]).await;
    let since = ticks(&since.unwrap());
    assert!(expect.is_some_and(|n| n > 1), "{stamped:?}");
    assert_eq!(since.first().map(|(_, n)| *n), expect, "{since:?}");
    // --since=1s: the last second only (kubectl sends sinceSeconds).
    let recent = c.server.kubectl_ok(&["logs", "--since=1s", "--timestamps", "ticker"]).await;
    let recent = ticks(&recent.unwrap());
    let floor = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(3);
    assert!(!recent.is_empty() && recent.len() < stamped.len(), "{recent:?}");
    assert!(recent.iter().all(|(t, _)| t.unwrap() > floor), "{recent:?}");

    // The agent restarts; the shim keeps logging meanwhile and `logs -f` of the new agent
    // streams on.
    c.stop_agent().await;
    let before = ticks(&c.server.kubectl_ok(&["logs", "ticker"]).await.unwrap_or_default());
    let last_before = before.last().map_or(0, |(_, n)| *n);
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.start_agent().await;
    let mut child = kubectl_cmd(&c, &["logs", "-f", "ticker"]).spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("a line within 30 s")
            .unwrap()
            .expect("kubectl logs -f ended");
        let n: u32 = line.strip_prefix("tick ").and_then(|n| n.parse().ok()).expect("a tick");
        seen.push(n);
        if n > last_before + 10 {
            break;
        }
    }
    let _ = child.kill().await;
    // Every line is there, including those written while no agent ran.
    assert_eq!(seen, (1..=*seen.last().unwrap()).collect::<Vec<_>>());
    c.pods().delete("ticker", &Default::default()).await.unwrap();
    c.wait_gone("ticker", 20).await;
}

/// kubectl on a terminal of our own (a pseudo-terminal the test holds), so `-t` works and the
/// terminal can be resized while kubectl runs.
struct TtySession {
    primary: std::os::fd::OwnedFd,
    input: tokio::fs::File,
    output: Arc<std::sync::Mutex<String>>,
    child: tokio::process::Child,
}

impl TtySession {
    fn start(c: &Cluster, args: &[&str], websockets: bool, cols: u16, rows: u16) -> TtySession {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let primary = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
        grantpt(&primary).unwrap();
        unlockpt(&primary).unwrap();
        let name = ptsname(&primary, Vec::new()).unwrap();
        let replica = rustix::fs::open(
            name.as_c_str(),
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let ws =
            rustix::termios::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        rustix::termios::tcsetwinsize(&primary, ws).unwrap();
        let mut cmd = kubectl_cmd(c, args);
        cmd.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", if websockets { "true" } else { "false" });
        cmd.stdin(Stdio::from(replica.try_clone().unwrap()))
            .stdout(Stdio::from(replica.try_clone().unwrap()))
            .stderr(Stdio::from(replica));
        let child = cmd.spawn().unwrap();
        let output = Arc::new(std::sync::Mutex::new(String::new()));
        let mut rd = tokio::fs::File::from_std(std::fs::File::from(primary.try_clone().unwrap()));
        let out = output.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = rd.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                out.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let input = tokio::fs::File::from_std(std::fs::File::from(primary.try_clone().unwrap()));
        TtySession { primary, input, output, child }
    }

    async fn type_line(&mut self, line: &str) {
        self.input.write_all(format!("{line}\r").as_bytes()).await.unwrap();
        self.input.flush().await.unwrap();
    }

    /// Types `line` every second until the output holds `want` after what was there before.
    async fn until(&mut self, line: &str, want: &str) {
        let from = self.output.lock().unwrap().len();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.type_line(line).await;
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if self.output.lock().unwrap()[from..].contains(want) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no {want:?} within 30 s: {:?}",
                self.output.lock().unwrap()
            );
        }
    }

    /// Resizes the terminal and tells kubectl, as the terminal would (SIGWINCH).
    fn resize(&self, cols: u16, rows: u16) {
        let ws =
            rustix::termios::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        rustix::termios::tcsetwinsize(&self.primary, ws).unwrap();
        let pid = rustix::process::Pid::from_raw(self.child.id().unwrap() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::WINCH).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_attach_to_a_tty_container_echoes_input_and_follows_resizes() {
    tty_attach_and_exec_follow_resizes(None).await;
}

/// The same on runc, whose terminals come through its console socket to the shim (`runc run
/// --console-socket`) and `runc exec --tty` (the suite's default runtime is the native one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_attach_and_exec_get_runc_terminals_that_follow_resizes() {
    tty_attach_and_exec_follow_resizes(Some(kinetic_node::runtime::Kind::Runc)).await;
}

/// `kubectl attach -it` and `exec -it` over both protocols, on `runtime` (the suite's when
/// `None`).
async fn tty_attach_and_exec_follow_resizes(runtime: Option<kinetic_node::runtime::Kind>) {
    let c = Cluster::start_with(|cfg| cfg.runtime = runtime.unwrap_or(cfg.runtime)).await;
    running_pod(
        &c,
        "term",
        json!({"stdin": true, "tty": true,
            "command": ["sh", "-c", "while read l; do echo \"got $l\"; stty size; done"]}),
    )
    .await;
    for websockets in [true, false] {
        let mut s = TtySession::start(&c, &["attach", "-it", "term"], websockets, 91, 27);
        // The container's terminal echoes what is typed; its program answers.
        s.until(&format!("hello-{websockets}"), &format!("got hello-{websockets}")).await;
        s.until("size", "27 91").await;
        s.resize(120, 33);
        s.until("again", "33 120").await;
        let _ = s.child.kill().await;
    }
    // exec -it follows a resize in the middle of the session too, over both protocols.
    for websockets in [true, false] {
        let mut s = TtySession::start(
            &c,
            &["exec", "-it", "term", "--", "sh", "-c", "while read l; do stty size; done"],
            websockets,
            80,
            24,
        );
        s.until("x", "24 80").await;
        s.resize(101, 31);
        s.until("y", "31 101").await;
        let _ = s.child.kill().await;
    }
    c.pods().delete("term", &Default::default()).await.unwrap();
    c.wait_gone("term", 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_attach_without_a_tty_streams_output_and_stdin_once_ends_stdin() {
    let c = Cluster::start().await;
    running_pod(
        &c,
        "ticker",
        json!({"command": ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; echo err $i >&2; sleep 0.2; done"]}),
    )
    .await;
    for websockets in ["true", "false"] {
        let mut cmd = kubectl_cmd(&c, &["attach", "ticker"]);
        cmd.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets);
        let mut child = cmd.spawn().unwrap();
        let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut err = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        for _ in 0..3 {
            let l = tokio::time::timeout(Duration::from_secs(20), out.next_line()).await;
            let l = l.expect("output within 20 s").unwrap().expect("attach ended");
            assert!(l.starts_with("tick "), "{l}");
        }
        // stderr arrives on its own stream.
        loop {
            let l = tokio::time::timeout(Duration::from_secs(20), err.next_line()).await;
            let l = l.expect("stderr within 20 s").unwrap().expect("attach ended");
            if l.starts_with("err ") {
                break;
            }
        }
        let _ = child.kill().await;
    }
    // stdinOnce: the container's stdin ends with the first attach's.
    running_pod(
        &c,
        "once",
        json!({"stdin": true, "stdinOnce": true,
            "command": ["sh", "-c", "while read l; do echo \"got $l\"; done; echo eof; sleep 600"]}),
    )
    .await;
    let mut cmd = kubectl_cmd(&c, &["attach", "-i", "once"]);
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    'echo: loop {
        assert!(Instant::now() < deadline, "no echo through attach");
        stdin.write_all(b"one\n").await.unwrap();
        while let Ok(Ok(Some(l))) =
            tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await
        {
            if l == "got one" {
                break 'echo;
            }
        }
    }
    drop(stdin);
    loop {
        let l = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await;
        let l = l.expect("eof within 20 s").unwrap();
        if l.as_deref() == Some("eof") {
            break;
        }
        assert!(l.is_some(), "attach ended before the container saw the end of stdin");
    }
    let _ = child.kill().await;
    for p in ["ticker", "once"] {
        c.pods().delete(p, &Default::default()).await.unwrap();
        c.wait_gone(p, 20).await;
    }
}
