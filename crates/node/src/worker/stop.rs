//! Stopping containers (preStop, SIGTERM, SIGKILL at the grace deadline), recording their
//! end, removing their runtime state, and the pod's termination and sandbox teardown.

use super::*;

impl Worker {
    /// Stops a running container: preStop hook, SIGTERM, then SIGKILL at the grace deadline.
    pub(super) async fn stop(&mut self, name: &str, grace: Duration, why: &'static str) {
        let Some(r) = self.running.get_mut(name) else { return };
        r.stopping = Some(why);
        if let Some(p) = r.probes.take() {
            p.abort();
        }
        let id = r.id.clone();
        let mut exit = r.exit.clone();
        let deadline = Instant::now() + grace;
        if let Some(c) = self.rec.containers.get_mut(name) {
            c.ready = false;
        }
        if grace > Duration::ZERO {
            if let Some(spec) = self.spec_of(name)
                && let Some(h) = spec.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref())
                && let Err(msg) = self.run_hook(&spec, h, grace).await
            {
                self.ctx.events.emit(&self.subject, Some(name), true, "FailedPreStopHook", msg);
            }
            self.restart_step(name, |r| r.signalled = Some(ts_now()));
            self.signal(name, &id, rustix::process::Signal::TERM).await;
            self.wait_exits(vec![exit.clone()], deadline, why == "delete").await;
        }
        if exit.borrow().is_none() {
            self.restart_step(name, |r| {
                r.signalled.get_or_insert_with(ts_now);
            });
            self.signal(name, &id, rustix::process::Signal::KILL).await;
            let _ =
                tokio::time::timeout(Duration::from_secs(10), exit.wait_for(Option::is_some)).await;
        }
        self.restart_step(name, |r| r.exited = Some(ts_now()));
        self.finish(name).await;
    }

    /// Waits until every container in `exits` has exited or `deadline` has passed.
    ///
    /// With `follow_deletion` (the pod is being deleted) it keeps taking the dispatcher's
    /// messages meanwhile: a newer, shorter `deletionGracePeriodSeconds` (a second `kubectl
    /// delete --grace-period=N`, `kubectl drain --grace-period=N`) brings the deadline forward
    /// to now + that grace, and the pod's removal from the API to now + 2 s, as kubelet's
    /// `killPod` does when it is called again with a shorter grace period. The deadline never
    /// moves later.
    pub(super) async fn wait_exits(
        &mut self,
        exits: Vec<watch::Receiver<Option<Exit>>>,
        mut deadline: Instant,
        mut follow_deletion: bool,
    ) {
        let all = futures::future::join_all(exits.into_iter().map(|mut rx| async move {
            let _ = rx.wait_for(Option::is_some).await;
        }));
        tokio::pin!(all);
        loop {
            tokio::select! {
                _ = &mut all => return,
                () = tokio::time::sleep_until(deadline.into()) => return,
                m = self.rx.recv(), if follow_deletion => {
                    self.on_msg(m);
                    let now = Instant::now();
                    if self.gone {
                        // The channel is closed or the pod left the API: nothing more to read.
                        follow_deletion = false;
                        deadline = deadline.min(now + Duration::from_secs(2));
                    } else if let Some(s) = self.pod.metadata.deletion_grace_period_seconds {
                        let grace = Duration::from_secs(u64::try_from(s.max(0)).unwrap_or(0));
                        if now + grace < deadline {
                            tracing::info!(
                                pod = %self.key(),
                                grace_seconds = s,
                                "shorter grace period; stopping sooner"
                            );
                            deadline = now + grace;
                        }
                    }
                }
            }
        }
    }

    /// Sends `sig` to the container's init process directly (what `runc kill` does, without
    /// starting a runc process: an in-place restart waits for this), falling back to `runc
    /// kill` when the pid is unknown or the signal fails. The pid cannot have been reused: the
    /// container's exit watch reaps it, and a reaped container is no longer `Running`.
    pub(super) async fn signal(&self, name: &str, id: &str, sig: rustix::process::Signal) {
        let pid = match self.rec.containers.get(name).map(|c| &c.state) {
            Some(CState::Running { pid, .. }) => rustix::process::Pid::from_raw(*pid),
            _ => None,
        };
        let exited = self.running.get(name).is_none_or(|r| r.exit.borrow().is_some());
        if let Some(pid) = pid
            && !exited
            && rustix::process::kill_process(pid, sig).is_ok()
        {
            return;
        }
        let _ = self.ctx.runtime.kill(id, sig).await;
    }

    /// Records the end of a container run and removes its runtime state (not its logs).
    pub(super) async fn finish(&mut self, name: &str) {
        let Some(mut r) = self.running.remove(name) else { return };
        if let Some(p) = r.probes.take() {
            p.abort();
        }
        let exit = *r.exit.borrow();
        let message = std::fs::read_to_string(r.dir.join("termination-log")).unwrap_or_default();
        // Each attempt has its own runc id, cgroup and rootfs directory, so a restarted
        // container does not wait for the old one's removal.
        // A specialised pool pod's placeholder waits for the claimant's start: `runc delete` is
        // a process of its own and would compete with `runc run` for the CPU (issue 12).
        if r.stopping == Some(SPECIALIZE) {
            self.release_held_cleanup();
            self.held_cleanup = Some((r.id.clone(), r.dir.clone()));
        } else {
            self.spawn_cleanup(r.id.clone(), r.dir.clone());
        }
        let now = ts_now();
        let Some(c) = self.rec.containers.get_mut(name) else { return };
        let started_at = match c.state {
            CState::Running { started_at, .. } => Some(started_at),
            _ => None,
        };
        let (exit_code, reason) = match exit {
            Some(Exit::Code(0)) => (0, "Completed"),
            Some(Exit::Code(n)) => (n, "Error"),
            Some(Exit::Unknown) | None => (137, "ContainerStatusUnknown"),
        };
        // A run that lasted long enough resets the crash back-off (kubelet: 2 × the maximum).
        if let Some(s) = started_at {
            let ran = now.duration_since(s).as_secs();
            let reset =
                i64::try_from(self.ctx.cfg.crash_backoff.as_secs() * 60).unwrap_or(i64::MAX);
            if ran >= reset {
                c.backoff_secs = 0;
            }
        }
        if c.backoff_secs > 0 && r.stopping.is_none() {
            let until = now
                .checked_add(jiff::SignedDuration::from_secs(
                    i64::try_from(c.backoff_secs).unwrap_or(300),
                ))
                .ok();
            c.backoff_until = until;
        }
        c.state = CState::Terminated(Terminated {
            exit_code,
            reason: reason.into(),
            message: message.trim_end().to_owned(),
            started_at,
            finished_at: now,
            container_id: self.ctx.runtime.kind().container_id(&r.id),
        });
        c.ready = false;
    }

    pub(super) fn spawn_cleanup(&mut self, id: String, dir: PathBuf) {
        let runtime = self.ctx.runtime.clone();
        self.cleanups.retain(|h| !h.is_finished());
        self.cleanups.push(tokio::spawn(async move {
            let _ = runtime.delete(&id).await;
            crate::mount::remove(&dir);
        }));
    }

    /// Starts the removal held back by [`Worker::finish`] for a specialised placeholder.
    pub(super) fn release_held_cleanup(&mut self) {
        if let Some((id, dir)) = self.held_cleanup.take() {
            self.spawn_cleanup(id, dir);
        }
    }

    /// Stops every container, app containers in parallel would be faster; kubelet also stops
    /// them concurrently, each with the pod's grace period.
    pub(super) async fn terminate(&mut self, grace: Duration) {
        let names: Vec<String> = self.running.keys().cloned().collect();
        if names.is_empty() {
            return;
        }
        if names.len() == 1 {
            self.ctx.events.emit(
                &self.subject,
                Some(&names[0]),
                false,
                "Killing",
                format!("Stopping container {}", names[0]),
            );
            self.stop(&names[0], grace, "delete").await;
            return;
        }
        // Several containers: signal all, then wait for all, within one grace period.
        let deadline = Instant::now() + grace;
        for n in &names {
            self.ctx.events.emit(
                &self.subject,
                Some(n),
                false,
                "Killing",
                format!("Stopping container {n}"),
            );
        }
        let mut pre = Vec::new();
        for n in &names {
            if let (Some(spec), Some(r)) = (self.spec_of(n), self.running.get(n))
                && let Some(h) = spec.lifecycle.as_ref().and_then(|l| l.pre_stop.clone())
            {
                pre.push((spec, h, r.id.clone()));
            }
        }
        let hooks = pre.iter().map(|(spec, h, _)| self.run_hook(spec, h, grace));
        let _ = futures::future::join_all(hooks).await;
        for n in &names {
            if let Some(r) = self.running.get_mut(n) {
                r.stopping = Some("delete");
                let _ = self.ctx.runtime.kill(&r.id, rustix::process::Signal::TERM).await;
            }
        }
        let exits = names.iter().filter_map(|n| self.running.get(n)).map(|r| r.exit.clone());
        self.wait_exits(exits.collect(), deadline, true).await;
        for n in names {
            self.stop(&n, Duration::ZERO, "delete").await;
        }
    }

    /// Removes everything the pod had on the node except its record: network, volumes.
    pub(super) async fn teardown(&mut self) -> crate::Result<()> {
        self.release_held_cleanup();
        for h in self.cleanups.drain(..) {
            let _ = h.await;
        }
        self.ctx.net.teardown(&self.rec.netns).await?;
        self.rec.ip = None;
        let containers = self.dir.join("containers");
        crate::mount::unmount_all_under(&containers);
        let _ = std::fs::remove_dir_all(containers);
        Ok(())
    }
}
