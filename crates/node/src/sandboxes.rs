//! Ready pod sandboxes (issue 14, part 3): network namespaces made ahead of their pods, so a
//! new pod claims one and only starts its containers.
//!
//! A ready sandbox is what `native::Network::setup` makes for a pod — the namespace, its veth
//! pair on the bridge in hairpin mode, `eth0` with an address from `ipam` (persisted under the
//! sandbox's name before use), the default route, `lo` up — under a name of its own
//! (`kinetic-rs-<bridge>-<time>-<n>`: [`PREFIX`], the node's bridge, which no other agent on
//! the host has, and a unique suffix). A pod that claims it keeps that name as its record's
//! `netns`, so everything keyed by the namespace name (the IPAM entry, the host veth's name,
//! the teardown) carries over without a rename, an IPAM write or an fsync on the start path.
//! The pod's hostname and /etc files are still its own (the worker writes them after the
//! claim). Containers get their cgroups per container (`/kinetic/<id>`), so there is no pod
//! cgroup to make ahead.
//!
//! How many: [`sandbox_demand::target`] of the starts in the last window, refilled by a
//! background task off the start path (at most two made at once) and trimmed one at a time
//! when the rate falls (to `min` once nothing started for a window).
//!
//! # Persistence and restarts
//! Each sandbox has a marker in `<data>/network/ready/`: `<name>.making` is written before its
//! namespace exists, `<name>.ready` (with its IP) once it is complete. A claim saves the pod's
//! record (naming the namespace) first, then removes the marker. So after a kill -9 at any
//! point, [`Pool::open`] finds: a `.making` marker — half made, torn down; a `.ready` marker
//! that a pod record names — claimed, the marker goes; a `.ready` marker whose namespace, veth
//! and IPAM entry all exist — adopted; anything else of ours (a marker with missing parts, an
//! IPAM entry under [`PREFIX`] that no marker or record names) — torn down. The IPAM entry is
//! persisted before the address is used, so no restart hands an IP out twice.

use std::collections::{HashSet, VecDeque};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::native;
use crate::sandbox_demand::{self, ReadySandboxes};

/// The namespace name prefix of ready sandboxes (and of the pods that claimed one).
pub(crate) const PREFIX: &str = "kinetic-rs-";

/// Sandboxes made at once by the refill.
const PARALLEL_MAKES: usize = 2;

/// One ready sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sandbox {
    pub netns: String,
    pub ip: Ipv4Addr,
}

/// The node's ready sandboxes.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    net: native::Network,
    dir: PathBuf,
    bounds: ReadySandboxes,
    st: Mutex<St>,
    kick: Notify,
}

#[derive(Debug)]
struct St {
    ready: VecDeque<Sandbox>,
    making: usize,
    /// Pod starts (claims asked for) in the last window.
    starts: VecDeque<Instant>,
    /// A moving average of the wall time one sandbox takes to make.
    make_time: Duration,
    /// No make before this (after a failure).
    pause_until: Option<Instant>,
    seq: u64,
}

/// The marker directory under the agent's data directory.
pub(crate) fn marker_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("network").join("ready")
}

impl Pool {
    /// Opens the pool in `dir`, adopting the complete ready sandboxes a previous agent left and
    /// tearing down the rest (see the module documentation); `claimed` are the namespace names
    /// the pod records hold. With `bounds.max == 0` nothing is adopted.
    pub async fn open(
        net: native::Network,
        dir: PathBuf,
        bounds: ReadySandboxes,
        claimed: &HashSet<String>,
    ) -> crate::Result<Pool> {
        std::fs::create_dir_all(&dir).map_err(|e| crate::Error::io(&dir, e))?;
        let mut adopted = VecDeque::new();
        let mut seen = HashSet::new();
        let mut names: Vec<(String, bool)> = std::fs::read_dir(&dir)
            .map_err(|e| crate::Error::io(&dir, e))?
            .flatten()
            .filter_map(|e| {
                let f = e.file_name().to_string_lossy().into_owned();
                if let Some(n) = f.strip_suffix(".ready") {
                    Some((n.to_owned(), true))
                } else {
                    f.strip_suffix(".making").map(|n| (n.to_owned(), false))
                }
            })
            .collect();
        // A complete marker after its `.making` one: the pair means the make was interrupted
        // between the two writes, and the sandbox is complete.
        names.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let allocations = net.allocations();
        for (name, complete) in names {
            if !name.starts_with(PREFIX) || !seen.insert(name.clone()) {
                let _ = std::fs::remove_file(dir.join(format!("{name}.making")));
                continue;
            }
            let ready = dir.join(format!("{name}.ready"));
            let making = dir.join(format!("{name}.making"));
            if claimed.contains(&name) {
                let _ = std::fs::remove_file(&ready);
                let _ = std::fs::remove_file(&making);
                continue;
            }
            let ip = complete
                .then(|| std::fs::read_to_string(&ready).ok())
                .flatten()
                .and_then(|s| s.trim().parse::<Ipv4Addr>().ok());
            let whole = ip.is_some_and(|ip| {
                allocations.get(&name) == Some(&ip)
                    && crate::cni::Network::netns_path(&name).exists()
                    && Path::new("/sys/class/net").join(native::host_veth(&name)).exists()
            });
            match ip {
                Some(ip) if whole && bounds.max > 0 => {
                    let _ = std::fs::remove_file(&making);
                    tracing::info!(netns = %name, %ip, "adopting a ready sandbox");
                    adopted.push_back(Sandbox { netns: name, ip });
                }
                _ => {
                    tracing::info!(netns = %name, "removing a ready sandbox");
                    if let Err(e) = net.teardown(&name).await {
                        tracing::warn!(netns = %name, error = %crate::report(&e), "ready sandbox teardown failed");
                        continue;
                    }
                    let _ = std::fs::remove_file(&ready);
                    let _ = std::fs::remove_file(&making);
                }
            }
        }
        // An address under our prefix that neither a marker nor a record names (a marker lost
        // with the machine's page cache; its namespace is then gone too).
        for name in allocations.into_keys() {
            if name.starts_with(PREFIX) && !seen.contains(&name) && !claimed.contains(&name) {
                let _ = net.teardown(&name).await;
            }
        }
        Ok(Pool {
            inner: Arc::new(Inner {
                net,
                dir,
                bounds,
                st: Mutex::new(St {
                    ready: adopted,
                    making: 0,
                    starts: VecDeque::new(),
                    make_time: Duration::from_millis(20),
                    pause_until: None,
                    seq: 0,
                }),
                kick: Notify::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, St> {
        self.inner.st.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a pod start and hands out a ready sandbox, if one is ready. The caller saves the
    /// pod's record naming `netns` and then calls [`Pool::claimed`].
    pub fn claim(&self) -> Option<Sandbox> {
        let sb = {
            let mut st = self.lock();
            st.starts.push_back(Instant::now());
            st.ready.pop_front()
        };
        self.inner.kick.notify_one();
        sb
    }

    /// The pod's record names `netns` now: the sandbox is the pod's.
    pub fn claimed(&self, netns: &str) {
        let _ = std::fs::remove_file(self.inner.dir.join(format!("{netns}.ready")));
    }

    /// Keeps the pool at its target until the task is aborted.
    pub async fn run(self) {
        loop {
            enum Step {
                Make(String),
                Trim(Sandbox),
                Wait,
            }
            let step = {
                let mut st = self.lock();
                let now = Instant::now();
                let window = self.inner.bounds.window;
                while st.starts.front().is_some_and(|t| now.duration_since(*t) > window) {
                    st.starts.pop_front();
                }
                let target =
                    sandbox_demand::target(st.starts.len(), st.make_time, &self.inner.bounds);
                let paused = st.pause_until.is_some_and(|t| t > now);
                if st.ready.len() + st.making < target && st.making < PARALLEL_MAKES && !paused {
                    st.making += 1;
                    st.seq += 1;
                    let epoch = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_micros())
                        .unwrap_or_default();
                    let bridge = self.inner.net.bridge();
                    Step::Make(format!("{PREFIX}{bridge}-{epoch:x}-{}", st.seq))
                } else if st.ready.len() > target {
                    st.ready.pop_back().map_or(Step::Wait, Step::Trim)
                } else {
                    Step::Wait
                }
            };
            match step {
                Step::Make(name) => {
                    let pool = self.clone();
                    tokio::spawn(async move { pool.make(name).await });
                }
                Step::Trim(sb) => {
                    tracing::debug!(netns = %sb.netns, "trimming a ready sandbox");
                    self.remove(&sb.netns).await;
                }
                Step::Wait => {
                    // Also wakes up to trim once the window has passed without starts.
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), self.inner.kick.notified())
                            .await;
                }
            }
        }
    }

    async fn make(&self, name: String) {
        let dir = &self.inner.dir;
        let making = dir.join(format!("{name}.making"));
        let t0 = Instant::now();
        let made = match std::fs::write(&making, b"") {
            Ok(()) => self.inner.net.setup(&name).await,
            Err(e) => Err(crate::Error::io(&making, e)),
        };
        let elapsed = t0.elapsed();
        let made = match made {
            Ok((std::net::IpAddr::V4(ip), _)) => {
                let ready = dir.join(format!("{name}.ready"));
                match std::fs::write(&ready, ip.to_string()) {
                    Ok(()) => {
                        let _ = std::fs::remove_file(&making);
                        Some(Sandbox { netns: name.clone(), ip })
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "writing a ready sandbox's marker");
                        self.remove(&name).await;
                        None
                    }
                }
            }
            Ok(_) => {
                self.remove(&name).await;
                None
            }
            Err(e) => {
                tracing::warn!(netns = %name, error = %crate::report(&e), "making a ready sandbox failed");
                self.remove(&name).await;
                None
            }
        };
        {
            let mut st = self.lock();
            st.making = st.making.saturating_sub(1);
            match made {
                Some(sb) => {
                    // Exponential moving average, a quarter weight on the newest.
                    st.make_time = (st.make_time * 3 + elapsed) / 4;
                    st.ready.push_back(sb);
                }
                None => st.pause_until = Some(Instant::now() + Duration::from_secs(1)),
            }
        }
        self.inner.kick.notify_one();
    }

    /// Tears a sandbox down and removes its markers.
    async fn remove(&self, name: &str) {
        if let Err(e) = self.inner.net.teardown(name).await {
            tracing::warn!(netns = %name, error = %crate::report(&e), "ready sandbox teardown failed");
            return;
        }
        let _ = std::fs::remove_file(self.inner.dir.join(format!("{name}.ready")));
        let _ = std::fs::remove_file(self.inner.dir.join(format!("{name}.making")));
    }
}
