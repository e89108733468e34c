//! The pod network: one network namespace per pod, wired by the standard CNI plugins
//! (`bridge` with `host-local` IPAM, and `loopback`) from Debian's containernetworking-plugins.
//!
//! The namespace is created with `ip netns add` (a bind mount under /var/run/netns keeps it
//! alive without any process in it), so containers of a pod join it through its path and the
//! pod keeps its IP across container restarts and in-place updates.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{Error, Result};

/// Where `ip netns add` puts namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";

/// CNI configuration for the node's pods.
#[derive(Debug, Clone)]
pub struct Network {
    bin_dir: PathBuf,
    conf: Value,
}

impl Network {
    /// A bridge network named `bridge` with pod IPs from `cidr`; IPAM state lives in `state_dir`.
    pub fn new(bin_dir: PathBuf, bridge: &str, cidr: &str, state_dir: &Path) -> Self {
        let conf = json!({
            "cniVersion": "1.0.0",
            "name": "kinetic",
            "type": "bridge",
            "bridge": bridge,
            "isGateway": true,
            // Pods reach each other and the node; no NAT to the outside world is set up.
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": cidr}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": state_dir.join("ipam"),
            },
        });
        Self { bin_dir, conf }
    }

    pub fn netns_path(name: &str) -> PathBuf {
        Path::new(NETNS_DIR).join(name)
    }

    /// Creates the namespace `name` and attaches it; returns the pod IP and the CPU time the
    /// processes run for it (`ip`, the plugins) used.
    ///
    /// # Errors
    /// `ip netns add` or a plugin fails; what was set up is torn down again.
    pub async fn setup(&self, name: &str) -> Result<(IpAddr, Duration)> {
        if Self::netns_path(name).exists() {
            // Left over from an interrupted set-up: start clean so IPAM does not see a
            // duplicate allocation for the same container id.
            self.teardown(name).await?;
        }
        let mut cpu = run_ip(&["netns", "add", name]).await?;
        let result = async {
            let (_, lo) = self.plugin("loopback", "ADD", name, "lo", &loopback_conf()).await?;
            cpu += lo;
            let (out, br) = self.plugin("bridge", "ADD", name, "eth0", &self.conf).await?;
            cpu += br;
            Ok::<_, Error>(out)
        }
        .await;
        match result {
            Ok(out) => parse_ip(&out).map(|ip| (ip, cpu)).ok_or_else(|| Error::Cni {
                plugin: "bridge".into(),
                message: format!("no IP address in the plugin result: {out}"),
            }),
            Err(e) => {
                let _ = self.teardown(name).await;
                Err(e)
            }
        }
    }

    /// Releases the pod's IP, removes its veth and deletes the namespace. Idempotent.
    ///
    /// # Errors
    /// The bridge plugin cannot release the address or the namespace cannot be removed.
    pub async fn teardown(&self, name: &str) -> Result<()> {
        // DEL must succeed even when the namespace is already gone (CNI spec), and releases
        // the host-local allocation by container id.
        self.plugin("bridge", "DEL", name, "eth0", &self.conf).await?;
        if Self::netns_path(name).exists() {
            run_ip(&["netns", "delete", name]).await?;
        }
        Ok(())
    }

    async fn plugin(
        &self,
        plugin: &str,
        command: &str,
        netns: &str,
        ifname: &str,
        conf: &Value,
    ) -> Result<(String, Duration)> {
        let bin = self.bin_dir.join(plugin);
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", netns)
            .env("CNI_NETNS", Self::netns_path(netns))
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", &self.bin_dir)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let body = serde_json::to_vec(conf).unwrap_or_default();
        let (out, cpu) = run_measured(cmd, Some(body)).await.map_err(|e| Error::io(&bin, e))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            // Plugins report errors as a JSON object on stdout ({"code", "msg", "details"}).
            let msg = serde_json::from_str::<Value>(&stdout)
                .ok()
                .and_then(|v| {
                    let msg = v.get("msg")?.as_str()?.to_owned();
                    let details = v.get("details").and_then(Value::as_str).unwrap_or_default();
                    Some(if details.is_empty() { msg } else { format!("{msg}: {details}") })
                })
                .unwrap_or_else(|| format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)));
            return Err(Error::Cni { plugin: format!("{plugin} {command}"), message: msg });
        }
        Ok((stdout, cpu))
    }
}

fn loopback_conf() -> Value {
    json!({"cniVersion": "1.0.0", "name": "kinetic-lo", "type": "loopback"})
}

fn parse_ip(result: &str) -> Option<IpAddr> {
    let v: Value = serde_json::from_str(result).ok()?;
    let addr = v.get("ips")?.as_array()?.first()?.get("address")?.as_str()?;
    addr.split('/').next()?.parse().ok()
}

/// Runs `cmd` (its stdio set up by the caller) to its end, writing `input` to its stdin, and
/// returns its output with the CPU time it used: read once it has exited and before it is
/// reaped (a zombie keeps its figure), so it is this process's alone, not its reaped children's
/// (the plugins and `ip` start none).
async fn run_measured(
    mut cmd: tokio::process::Command,
    input: Option<Vec<u8>>,
) -> std::io::Result<(std::process::Output, Duration)> {
    if input.is_none() {
        cmd.stdin(Stdio::null());
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    if let (Some(mut stdin), Some(body)) = (child.stdin.take(), input) {
        stdin.write_all(&body).await?;
    }
    let (mut so, mut se) = (child.stdout.take(), child.stderr.take());
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let read_out = async {
        match so.as_mut() {
            Some(s) => s.read_to_end(&mut stdout).await.map(drop),
            None => Ok(()),
        }
    };
    let read_err = async {
        match se.as_mut() {
            Some(s) => s.read_to_end(&mut stderr).await.map(drop),
            None => Ok(()),
        }
    };
    let (a, b) = tokio::join!(read_out, read_err);
    a?;
    b?;
    kinetic_sys::wait_exit(pid).await?;
    let cpu =
        if pid > 0 { kinetic_sys::process_cpu(pid).unwrap_or_default() } else { Duration::ZERO };
    let status = child.wait().await?;
    Ok((std::process::Output { status, stdout, stderr }, cpu))
}

pub(crate) async fn run_ip(args: &[&str]) -> Result<Duration> {
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(args);
    let (out, cpu) = run_measured(cmd, None).await.map_err(|e| Error::io(Path::new("ip"), e))?;
    if out.status.success() {
        return Ok(cpu);
    }
    Err(Error::Cni {
        plugin: format!("ip {}", args.join(" ")),
        message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_ip_of_a_bridge_result() {
        let out = r#"{"cniVersion":"1.0.0","ips":[{"interface":2,"address":"10.88.0.2/16","gateway":"10.88.0.1"}]}"#;
        assert_eq!(parse_ip(out), Some("10.88.0.2".parse().unwrap()));
        assert_eq!(parse_ip("{}"), None);
    }
}
