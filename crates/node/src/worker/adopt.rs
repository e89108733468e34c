//! Re-attaching to the containers an earlier agent recorded, and watching exits.

use super::*;

impl Worker {
    /// Re-attaches to containers recorded by an earlier agent.
    pub(super) fn adopt(&mut self) {
        let names: Vec<String> = self.rec.containers.keys().cloned().collect();
        for name in names {
            let Some(c) = self.rec.containers.get(&name).cloned() else { continue };
            let Some(pid) = c.running_pid() else { continue };
            let id = container_id(&self.rec.uid, &name, c.attempt);
            let cdir = self.dir.join("containers").join(&name).join(c.attempt.to_string());
            // A container that ended while no agent ran is adopted too when its shim recorded
            // the exit: the exit is then seen at once, with its code.
            if alive(pid) || crate::shim::known(&cdir, &id) {
                tracing::info!(pod = %self.key(), container = %name, pid, "adopted running container");
                let exit = self.watch_exit(&name, c.attempt, &cdir, &id, pid);
                let probes =
                    self.spec_of(&name).and_then(|spec| self.start_probes(&spec, c.attempt, &id));
                self.running.insert(
                    name.clone(),
                    Running { attempt: c.attempt, id, dir: cdir, exit, probes, stopping: None },
                );
            } else if let Some(rc) = self.rec.containers.get_mut(&name) {
                // It ended while no agent watched: its exit code is lost.
                rc.state = CState::Terminated(Terminated {
                    exit_code: 137,
                    reason: "ContainerStatusUnknown".into(),
                    message: "The container could not be located when the node agent restarted"
                        .into(),
                    started_at: None,
                    finished_at: ts_now(),
                    container_id: self.ctx.runtime.kind().container_id(&id),
                });
                rc.ready = false;
            }
        }
        if !self.running.is_empty() {
            // The tokens in the adopted containers' volumes were issued by the previous agent;
            // a fresh one now, then every 80 % of its lifetime.
            self.tokens = crate::token::spawn_refresher(
                crate::token::ApiIssuer(self.ctx.client.clone()),
                self.pod.clone(),
                crate::volumes::token_files(&self.pod, &self.dir.join("volumes"), None),
            );
        }
    }

    pub(super) fn watch_exit(
        &self,
        name: &str,
        attempt: u32,
        dir: &std::path::Path,
        id: &str,
        pid: i32,
    ) -> watch::Receiver<Option<Exit>> {
        let (tx, rx) = watch::channel(None);
        let itx = self.itx.clone();
        let name = name.to_owned();
        let (dir, id) = (dir.to_path_buf(), id.to_owned());
        tokio::spawn(async move {
            let e = crate::shim::wait_exit(&dir, &id, pid).await;
            let _ = tx.send(Some(e));
            let _ = itx.send(Internal::Exited { name, attempt });
        });
        rx
    }
}
