//! The native runtime: the agent's own OCI runtime (see the module doc of `crate::runtime`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::process::Signal;

use crate::{Error, Result};

/// The native runtime's state root and helper executable.
#[derive(Debug, Clone)]
pub struct Native {
    root: PathBuf,
    helper: PathBuf,
}

impl Native {
    pub fn new(root: PathBuf, helper: PathBuf) -> Self {
        Self { root, helper }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn kill(&self, id: &str, _sig: Signal) -> Result<()> {
        Err(unsupported(id))
    }

    pub async fn delete(&self, id: &str) -> Result<()> {
        Err(unsupported(id))
    }

    pub async fn exec(
        &self,
        id: &str,
        _argv: &[String],
        _timeout: Duration,
    ) -> Result<(i32, String)> {
        Err(unsupported(id))
    }

    pub fn exec_command(&self, _id: &str, _argv: &[String], _tty: bool) -> tokio::process::Command {
        tokio::process::Command::new(&self.helper)
    }

    pub fn list(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

fn unsupported(id: &str) -> Error {
    Error::Runc { op: "native", id: id.to_owned(), message: "not implemented yet".into() }
}
