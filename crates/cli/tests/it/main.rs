//! Integration tests of the `kinetic` binary: `kinetic up` as users run it, and durability of
//! acknowledged writes across `kill -9`.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the first unexpected error.

mod controller;
mod durability;
mod node;
mod preheat;
mod storage;
mod up;
mod workloads;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// A `kinetic` child process that is SIGKILLed when dropped.
pub struct Kinetic {
    pub child: tokio::process::Child,
    pub kubeconfig: PathBuf,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `kinetic SUBCOMMAND --data-dir DIR --listen 127.0.0.1:PORT` and waits until it
/// answers `/readyz`.
pub async fn start(sub: &str, dir: &Path, port: u16) -> Kinetic {
    start_with(sub, dir, port, &[]).await
}

/// [`start`] with more arguments.
pub async fn start_with(sub: &str, dir: &Path, port: u16, extra: &[&str]) -> Kinetic {
    let kubeconfig = dir.join("kubeconfig");
    let _ = std::fs::remove_file(&kubeconfig);
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kinetic"))
        .args([sub, "--data-dir", dir.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env("KINETIC_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if kubeconfig.exists()
            && let Ok(c) = kinetic_testkit::client_from_kubeconfig(&kubeconfig).await
            && c.request_text(http::Request::get("/readyz").body(Vec::new()).unwrap()).await.is_ok()
        {
            return Kinetic { child, kubeconfig };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("kinetic {sub} did not become ready");
}
