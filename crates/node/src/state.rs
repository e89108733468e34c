//! What the agent knows about each pod it runs, persisted in `pods/<uid>/state.json` so a
//! restarted agent adopts running containers instead of starting them again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use kinetic_api::timeline::Timeline;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A terminated container run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Terminated {
    pub exit_code: i32,
    pub reason: String,
    #[serde(default)]
    pub message: String,
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
    pub container_id: String,
}

/// The state of a container as kubelet reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum CState {
    Waiting { reason: String, message: String },
    Running { started_at: Timestamp, pid: i32 },
    Terminated(Terminated),
}

/// One container of the pod across its restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub init: bool,
    /// Starts so far (the running or last run is `attempt`).
    pub attempt: u32,
    pub restart_count: i32,
    /// The spec image the current run was started from.
    pub image: String,
    /// The resolved image id (`repo@sha256:…`) of the current run.
    pub image_id: String,
    pub state: CState,
    pub last: Option<Terminated>,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub started: bool,
    /// Crash back-off: no restart before this instant.
    #[serde(default)]
    pub backoff_until: Option<Timestamp>,
    #[serde(default)]
    pub backoff_secs: u64,
    /// The env values the current run read from the pod's labels and annotations
    /// ([`crate::env::from_metadata`]): when they change, the container restarts in place
    /// (upstream's `InPlaceUpdateEnvFromMetadata`). `None` for a run started before the agent
    /// recorded them, which then never restarts for this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_env: Option<BTreeMap<String, String>>,
}

impl Container {
    pub fn new(init: bool, image: &str) -> Self {
        Self {
            init,
            attempt: 0,
            restart_count: 0,
            image: image.to_owned(),
            image_id: String::new(),
            state: CState::Waiting { reason: "ContainerCreating".into(), message: String::new() },
            last: None,
            ready: false,
            started: false,
            backoff_until: None,
            backoff_secs: 0,
            meta_env: None,
        }
    }

    pub fn running_pid(&self) -> Option<i32> {
        match self.state {
            CState::Running { pid, .. } => Some(pid),
            _ => None,
        }
    }
}

/// Everything persisted about one pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// Network namespace name (under /var/run/netns).
    pub netns: String,
    pub ip: Option<String>,
    pub start_time: Option<Timestamp>,
    pub containers: BTreeMap<String, Container>,
    #[serde(default)]
    pub timeline: Timeline,
    #[serde(default)]
    pub timeline_written: bool,
}

impl PodRecord {
    pub fn new(uid: &str, namespace: &str, name: &str) -> Self {
        Self {
            uid: uid.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            netns: format!("kinetic-{uid}"),
            ip: None,
            start_time: None,
            containers: BTreeMap::new(),
            timeline: Timeline::default(),
            timeline_written: false,
        }
    }

    /// Writes the record atomically (temp file, fsync, rename).
    ///
    /// # Errors
    /// The write fails.
    pub fn save(&self, dir: &Path) -> Result<()> {
        use std::io::Write as _;
        let path = dir.join("state.json");
        let tmp = dir.join("state.json.tmp");
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(&body).map_err(|e| Error::io(&tmp, e))?;
        // No fsync: the record only has to survive an agent restart, not a machine crash
        // (after a machine crash no container survives either).
        drop(f);
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    }

    /// Loads every record under `pods_dir`, skipping unreadable ones (with a warning).
    pub fn load_all(pods_dir: &Path) -> Vec<(PathBuf, PodRecord)> {
        let Ok(rd) = std::fs::read_dir(pods_dir) else { return Vec::new() };
        let mut out = Vec::new();
        for ent in rd.flatten() {
            let path = ent.path().join("state.json");
            match std::fs::read(&path).map(|b| serde_json::from_slice::<PodRecord>(&b)) {
                Ok(Ok(r)) => out.push((ent.path(), r)),
                Ok(Err(e)) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable pod state")
                }
                Err(_) => {}
            }
        }
        out
    }
}
