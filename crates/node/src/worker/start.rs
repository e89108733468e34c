//! Starting a container attempt: its image (pulled per `imagePullPolicy`), configuration,
//! bundle (overlay rootfs and `config.json`) and the start under its shim through the runtime
//! seam (`crate::runtime`).

use super::*;

impl Worker {
    /// Starts (or restarts) container `spec`. Failures become the container's waiting state.
    pub(super) async fn start(&mut self, spec: &CSpec, restart: bool) {
        let name = spec.name.clone();
        let (result, agent_cpu) = crate::cpu::metered(self.try_start(spec, restart)).await;
        if result.is_ok() {
            crate::specialize::started(&self.pod, &mut self.rec, &name);
        }
        if result.is_ok() {
            let agent_us = crate::cpu::micros(agent_cpu);
            self.restart_step(&name, |r| {
                if let Some(c) = r.cpu.as_mut() {
                    c.agent_us = agent_us;
                }
            });
        }
        if result.is_ok()
            && !self.rec.timeline_written
            && let Some(tl) = self.rec.timeline.containers.iter_mut().find(|t| t.name == name)
        {
            tl.cpu.get_or_insert_with(Default::default).agent_us = crate::cpu::micros(agent_cpu);
        }
        if let Err(f) = result {
            if let Some(c) = self.rec.containers.get_mut(&name) {
                if let CState::Terminated(t) = &c.state {
                    c.last = Some(t.clone());
                }
                c.state = CState::Waiting { reason: f.reason.into(), message: f.message.clone() };
            }
            if f.reason == "ContainerCreating" {
                // Retried every second (nothing about the pod changes when its claim is
                // bound); the Event only when the reason changes, not on every retry.
                self.wake_in(Duration::from_secs(1));
                let already = self.mount_problem.as_deref() == Some(f.message.as_str());
                if !already {
                    self.mount_problem = Some(f.message.clone());
                    self.ctx.events.emit(
                        &self.subject,
                        None,
                        true,
                        "FailedMount",
                        format!("Unable to attach or mount volumes: {}", f.message),
                    );
                }
            } else if f.reason != "ImagePullBackOff" {
                self.ctx.events.emit(
                    &self.subject,
                    Some(&name),
                    true,
                    "Failed",
                    format!("Error: {}", f.message),
                );
            }
        }
    }

    pub(super) async fn try_start(
        &mut self,
        spec: &CSpec,
        restart: bool,
    ) -> Result<(), StartFailure> {
        let name = spec.name.clone();
        let init = self.rec.containers.get(&name).is_some_and(|c| c.init);
        let prev_attempt = self.rec.containers.get(&name).map_or(0, |c| c.attempt);
        // Dropped (and so exiting) when the start fails before it is used.
        let early = self.early_shim.take();
        let mut tl = ContainerTimeline { name: name.clone(), init, ..Default::default() };
        // 1. The image.
        let image = self.ensure_image(spec, &mut tl).await?;
        // 2. Configuration: referenced objects, env, volumes.
        let fail = |reason: &'static str| {
            move |e: crate::env::ConfigError| StartFailure { reason, message: e.0 }
        };
        // Volumes are set up once per pod: later starts read only what env names.
        let refs = if self.volumes.is_some() {
            crate::refs::Refs::fetch_env(&self.ctx.client, &self.pod).await
        } else {
            crate::refs::Refs::fetch(&self.ctx.client, &self.pod).await
        };
        let mut refs = refs.map_err(|e| StartFailure {
            reason: "CreateContainerConfigError",
            message: crate::report(&e),
        })?;
        let pod_ip = self.rec.ip.clone().unwrap_or_default();
        let host_ip = self.ctx.cfg.node_ip.to_string();
        // A restart reads the node's Service cache; a first start asks the API (`svcenv`).
        let cache = (restart || prev_attempt > 0).then_some(&self.ctx.services);
        let services = crate::svcenv::fetch(&self.ctx.client, cache, &self.pod, self.ctx.api_relay)
            .await
            .map_err(|e| StartFailure {
                reason: "CreateContainerConfigError",
                message: crate::report(&e),
            })?;
        let env = crate::env::build(&self.pod, spec, &pod_ip, &host_ip, &refs, &services)
            .map_err(fail("CreateContainerConfigError"))?;
        if self.volumes.is_none() {
            // Kubelet's volume manager waits for claims to be bound before anything starts;
            // the container stays in ContainerCreating with a FailedMount Event meanwhile.
            refs.fetch_tokens(&self.ctx.client, &self.pod).await;
            if let Some(message) = refs.mount_problem() {
                return Err(StartFailure { reason: "ContainerCreating", message });
            }
            let vdir = self.dir.join("volumes");
            let v = crate::volumes::prepare(&self.pod, &vdir, &refs, &pod_ip, &host_ip)
                .map_err(fail("CreateContainerConfigError"))?;
            self.volumes = Some(v);
            self.tokens = crate::token::spawn_refresher(
                crate::token::ApiIssuer(self.ctx.client.clone()),
                self.pod.clone(),
                crate::volumes::token_files(&self.pod, &vdir, Some(&refs)),
            );
        }
        self.restart_step(&name, |r| r.configured = Some(ts_now()));
        // 3. The bundle: an overlayfs rootfs over the image layers and config.json.
        let prev = self.rec.containers.get(&name).map_or(0, |c| c.attempt);
        let attempt = prev + 1;
        let id = container_id(&self.rec.uid, &name, attempt);
        let cdir = self.dir.join("containers").join(&name).join(attempt.to_string());
        let created_at = Instant::now();
        tl.created = Some(ts_now());
        let rootfs = cdir.join("rootfs");
        let run_err = |m: String| StartFailure { reason: "RunContainerError", message: m };
        if cdir.exists() || self.ctx.runtime.has_state(&id) {
            // A start of this attempt that was never recorded (the agent crashed mid-create):
            // its container, shim and rootfs go before it starts again.
            self.ctx.runtime.clear_stale(&id, &cdir).await;
            crate::mount::remove(&cdir);
        }
        crate::mount::overlay(&image.layers, &cdir).map_err(|e| run_err(crate::report(&e)))?;
        self.restart_step(&name, |r| r.rootfs = Some(ts_now()));
        let tlog = cdir.join("termination-log");
        let _ = std::fs::write(&tlog, b"");
        let netns = crate::cni::Network::netns_path(&self.rec.netns);
        let empty = BTreeMap::new();
        let inputs = crate::oci::Inputs {
            pod: &self.pod,
            container: spec,
            image: &image.config,
            rootfs: &rootfs,
            env,
            netns: &netns,
            cgroup: format!("/kinetic/{id}"),
            volumes: self.volumes.as_ref().unwrap_or(&empty),
            etc_dir: &self.dir.join("etc"),
            termination_log: &tlog,
        };
        let config = match crate::oci::config(&inputs) {
            Ok(c) => c,
            Err(e) => {
                crate::mount::remove(&cdir);
                return Err(StartFailure { reason: "CreateContainerConfigError", message: e.0 });
            }
        };
        let cfg_path = cdir.join("config.json");
        if let Err(e) = std::fs::write(&cfg_path, serde_json::to_vec(&config).unwrap_or_default()) {
            crate::mount::remove(&cdir);
            return Err(run_err(format!("writing {}: {e}", cfg_path.display())));
        }
        self.restart_step(&name, |r| r.bundle = Some(ts_now()));
        let log = self.dir.join("logs").join(&name);
        let _ = std::fs::create_dir_all(&log);
        let log = log.join(format!("{attempt}.log"));
        let created_ms = created_at.elapsed();
        self.ctx.events.emit(
            &self.subject,
            Some(&name),
            false,
            "Created",
            format!("Created container {name} in {}", fmt_dur(created_ms)),
        );
        let shim = crate::shim::Spec {
            stdin: spec.stdin == Some(true),
            stdin_once: spec.stdin_once == Some(true),
            tty: spec.tty == Some(true),
            ..self.ctx.runtime.shim_spec(&id, &cdir, &log)
        };
        let pid = match self
            .ctx
            .runtime
            .start(&self.ctx.cfg.shim, &shim, take_early(early).await)
            .await
        {
            Ok((pid, cpu)) => {
                tl.cpu = Some(cpu);
                pid
            }
            Err(e) => {
                crate::mount::remove(&cdir);
                if let Some(c) = self.rec.containers.get_mut(&name) {
                    c.attempt = attempt;
                }
                return Err(run_err(crate::report(&e)));
            }
        };
        let started_at = ts_now();
        tl.started = Some(started_at);
        self.restart_step(&name, |r| {
            if r.attempt == attempt {
                r.started = Some(started_at);
                r.cpu = tl.cpu;
            }
        });
        self.ctx.events.emit(
            &self.subject,
            Some(&name),
            false,
            "Started",
            format!("Started container {name} in {}", fmt_dur(created_at.elapsed())),
        );
        // 4. Record it, watch its exit, start its probes.
        let exit = self.watch_exit(&name, attempt, &cdir, &id, pid);
        let probes = self.start_probes(spec, attempt, &id);
        let has_startup = spec.startup_probe.is_some();
        let has_readiness = spec.readiness_probe.is_some();
        if let Some(c) = self.rec.containers.get_mut(&name) {
            if let CState::Terminated(t) = &c.state {
                c.last = Some(t.clone());
            }
            if restart && prev > 0 {
                c.restart_count += 1;
                // Kubelet's back-off: the first restart is immediate, later ones wait 10 s,
                // doubling up to 5 min.
                let base = self.ctx.cfg.crash_backoff.as_secs().max(1);
                c.backoff_secs =
                    if c.backoff_secs == 0 { base } else { (c.backoff_secs * 2).min(base * 30) };
            }
            c.attempt = attempt;
            c.image = image_of(spec).to_owned();
            c.meta_env = Some(crate::env::from_metadata(&self.pod, spec));
            c.image_id = image.image_id.clone();
            c.state = CState::Running { started_at, pid };
            c.started = !has_startup;
            c.ready = !has_startup && !has_readiness;
            c.backoff_until = None;
        }
        if !self.rec.timeline_written {
            self.rec.timeline.containers.retain(|c| c.name != name);
            self.rec.timeline.containers.push(tl);
        }
        self.running
            .insert(name.clone(), Running { attempt, id, dir: cdir, exit, probes, stopping: None });
        if self.rec.containers.get(&name).is_some_and(|c| c.ready) {
            self.mark_ready(&name);
        }
        if let Some(h) = spec.lifecycle.as_ref().and_then(|l| l.post_start.as_ref())
            && let Err(msg) = self.run_hook(spec, h, Duration::from_secs(30)).await
        {
            self.ctx.events.emit(&self.subject, Some(&name), true, "FailedPostStartHook", msg);
            let grace = self.grace_period();
            self.stop(&name, grace, "poststart").await;
        }
        Ok(())
    }

    /// Pulls or finds the container's image according to `imagePullPolicy`.
    pub(super) async fn ensure_image(
        &mut self,
        spec: &CSpec,
        tl: &mut ContainerTimeline,
    ) -> Result<kinetic_image::Image, StartFailure> {
        let reference = image_of(spec).to_owned();
        let name = spec.name.clone();
        if reference.is_empty() {
            return Err(StartFailure {
                reason: "InvalidImageName",
                message: "image is empty".into(),
            });
        }
        if let Err(e) = kinetic_image::reference::Reference::parse(&reference) {
            return Err(StartFailure {
                reason: "InvalidImageName",
                message: format!(
                    "Failed to apply default image tag {reference:?}: couldn't parse image name {reference:?}: {e}"
                ),
            });
        }
        let latest = !reference.contains('@') && {
            let last = reference.rsplit('/').next().unwrap_or(&reference);
            !last.contains(':') || last.ends_with(":latest")
        };
        let policy = spec
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| if latest { "Always".into() } else { "IfNotPresent".into() });
        if policy != "Always" {
            if let Some(img) = self.ctx.images.local(&reference) {
                tl.cache_hit = true;
                let now = ts_now();
                tl.pull_started = Some(now);
                tl.pull_finished = Some(now);
                self.ctx.events.emit(
                    &self.subject,
                    Some(&name),
                    false,
                    "Pulled",
                    format!("Container image {reference:?} already present on machine"),
                );
                return Ok(img);
            }
            if policy == "Never" {
                return Err(StartFailure {
                    reason: "ErrImageNeverPull",
                    message: format!(
                        "Container image {reference:?} is not present with pull policy of Never"
                    ),
                });
            }
        }
        if let Some((until, _)) = self.pull_backoff.get(&reference)
            && *until > Instant::now()
        {
            let left = *until - Instant::now();
            self.wake_in(left);
            return Err(StartFailure {
                reason: "ImagePullBackOff",
                message: format!("Back-off pulling image {reference:?}"),
            });
        }
        // A pull takes long enough to show ContainerCreating first.
        if let Some(c) = self.rec.containers.get_mut(&name)
            && let CState::Waiting { .. } = c.state
        {
            c.state =
                CState::Waiting { reason: "ContainerCreating".into(), message: String::new() };
        }
        self.flush_status().await;
        self.ctx.events.emit(
            &self.subject,
            Some(&name),
            false,
            "Pulling",
            format!("Pulling image {reference:?}"),
        );
        let began = Instant::now();
        tl.pull_started = Some(ts_now());
        let opts = self.pull_options().await;
        match self.ctx.images.pull(&reference, &opts, &kinetic_image::NoProgress).await {
            Ok(img) => {
                self.pull_backoff.remove(&reference);
                tl.pull_finished = Some(ts_now());
                tl.pull_bytes = img.downloaded_bytes;
                tl.cache_hit = img.cache_hit;
                self.ctx.events.emit(
                    &self.subject,
                    Some(&name),
                    false,
                    "Pulled",
                    {
                        // kubelet's message, plus the download rate (issue 5: bytes and rate in
                        // the pod's Events) when anything was downloaded.
                        let took = began.elapsed();
                        let rate = if img.downloaded_bytes > 0 {
                            format!(
                                " Downloaded at {:.1} MB/s.",
                                img.downloaded_bytes as f64 / 1e6 / took.as_secs_f64().max(1e-6)
                            )
                        } else {
                            String::new()
                        };
                        format!(
                            "Successfully pulled image {reference:?} in {}. Image size: {} bytes.{rate}",
                            fmt_dur(took),
                            img.downloaded_bytes
                        )
                    },
                );
                Ok(img)
            }
            Err(e) => {
                let base = self.ctx.cfg.crash_backoff;
                let delay = self
                    .pull_backoff
                    .get(&reference)
                    .map_or(base, |(_, d)| (*d * 2).min(base * 30));
                self.pull_backoff.insert(reference.clone(), (Instant::now() + delay, delay));
                // Like kubelet: ErrImagePull until the next sync, which (inside the back-off)
                // says ImagePullBackOff; the sync after that pulls again.
                self.wake_in(delay / 2);
                let msg = format!("Failed to pull image {reference:?}: {}", crate::report(&e));
                self.ctx.events.emit(&self.subject, Some(&name), true, "Failed", msg.clone());
                self.ctx.events.emit(
                    &self.subject,
                    Some(&name),
                    false,
                    "BackOff",
                    format!("Back-off pulling image {reference:?}"),
                );
                Err(StartFailure { reason: "ErrImagePull", message: msg })
            }
        }
    }

    /// Credentials from the pod's imagePullSecrets (dockerconfigjson), and the node's insecure
    /// registries.
    pub(super) async fn pull_options(&self) -> kinetic_image::PullOptions {
        let secrets: Vec<(String, String)> = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|s| (self.subject.namespace.clone(), s.name))
            .collect();
        crate::pull_options(&self.ctx, &secrets).await
    }
}

/// The early shim of an in-place restart, once its spawn finished (`None` when it failed).
async fn take_early(
    h: Option<JoinHandle<crate::Result<crate::shim::Early>>>,
) -> Option<crate::shim::Early> {
    match h?.await {
        Ok(Ok(e)) => Some(e),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "no early shim");
            None
        }
        Err(_) => None,
    }
}
