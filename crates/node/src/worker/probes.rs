//! Probes and lifecycle hooks of a worker's containers.

use super::*;

impl Worker {
    pub(super) fn start_probes(
        &self,
        spec: &CSpec,
        attempt: u32,
        id: &str,
    ) -> Option<JoinHandle<()>> {
        if spec.startup_probe.is_none()
            && spec.readiness_probe.is_none()
            && spec.liveness_probe.is_none()
        {
            return None;
        }
        let target = Target {
            pod_ip: self.rec.ip.clone().unwrap_or_default(),
            runtime: self.ctx.runtime.clone(),
            container_id: id.to_owned(),
        };
        Some(tokio::spawn(probe_loop(spec.clone(), target, attempt, self.itx.clone())))
    }

    pub(super) async fn run_hook(
        &self,
        spec: &CSpec,
        h: &LifecycleHandler,
        timeout: Duration,
    ) -> Result<(), String> {
        let Some(r) = self.running.get(&spec.name) else { return Ok(()) };
        let target = Target {
            pod_ip: self.rec.ip.clone().unwrap_or_default(),
            runtime: self.ctx.runtime.clone(),
            container_id: r.id.clone(),
        };
        let handler = if let Some(e) = &h.exec {
            Handler::Exec(e.command.as_deref().unwrap_or_default())
        } else if let Some(g) = &h.http_get {
            Handler::Http(g)
        } else if let Some(s) = &h.sleep {
            tokio::time::sleep(
                Duration::from_secs(u64::try_from(s.seconds.max(0)).unwrap_or(0)).min(timeout),
            )
            .await;
            return Ok(());
        } else {
            Handler::Unsupported("tcpSocket lifecycle handlers are deprecated and not supported")
        };
        probe::run(&handler, spec, &target, timeout).await
    }

    pub(super) fn mark_ready(&mut self, name: &str) {
        let attempt = self.running.get(name).map(|r| r.attempt);
        self.restart_step(name, |r| {
            if Some(r.attempt) == attempt {
                r.ready.get_or_insert_with(ts_now);
            }
        });
        if self.rec.timeline_written {
            return;
        }
        if let Some(t) = self.rec.timeline.containers.iter_mut().find(|t| t.name == name) {
            t.ready.get_or_insert_with(ts_now);
        }
    }
}

/// The first retry of a readiness probe that has not succeeded yet (see `probe_loop`). 5 ms
/// (25 ms before issue 14): a restarted container's server typically listens a few
/// milliseconds after its start, and the first probe, at the start, finds it not yet
/// listening; a refused connection costs the agent well under a millisecond.
pub(super) const FIRST_READINESS_RETRY: Duration = Duration::from_millis(5);

/// When the readiness probe runs next after one at `now` that has not succeeded yet, and the
/// retry after that: `eager` doubling up to the probe's period.
pub(super) fn next_eager(now: Instant, eager: Duration, period: Duration) -> (Instant, Duration) {
    if eager >= period { (now + period, period) } else { (now + eager, eager * 2) }
}

/// Runs a container's probes: the startup probe first, then readiness and liveness on their
/// own periods. Sends a message when a result changes (readiness) or a threshold is crossed.
pub(super) async fn probe_loop(
    spec: CSpec,
    target: Target,
    attempt: u32,
    tx: mpsc::UnboundedSender<Internal>,
) {
    let name = spec.name.clone();
    let send = |kind, ok, message: String| {
        let _ = tx.send(Internal::Probe { name: name.clone(), attempt, kind, ok, message });
    };
    if let Some(p) = &spec.startup_probe {
        let t = probe::timing(p);
        tokio::time::sleep(t.initial_delay).await;
        let mut failures = 0;
        loop {
            match probe::run(&probe::of_probe(p), &spec, &target, t.timeout).await {
                Ok(()) => {
                    send(ProbeKind::Startup, true, String::new());
                    break;
                }
                Err(m) => {
                    failures += 1;
                    if failures >= t.failure_threshold {
                        send(ProbeKind::Startup, false, m);
                        return;
                    }
                }
            }
            tokio::time::sleep(t.period).await;
        }
    }
    let start = Instant::now();
    let mut r = spec
        .readiness_probe
        .as_ref()
        .map(|p| (p, probe::timing(p), start + probe::timing(p).initial_delay, 0, 0, None::<bool>));
    // Deliberate deviation from kubelet: until the container's first successful readiness
    // probe, probe again after 5 ms, doubling up to periodSeconds, instead of waiting a whole
    // period after a first probe that ran before the process listened (Knative's queue-proxy
    // probes as eagerly, for the same reason: time to Ready is what users wait for). After the
    // first success the probe runs every periodSeconds, as kubelet's.
    let mut eager = FIRST_READINESS_RETRY;
    let mut l = spec
        .liveness_probe
        .as_ref()
        .map(|p| (p, probe::timing(p), start + probe::timing(p).initial_delay, 0));
    if r.is_none() && l.is_none() {
        return;
    }
    loop {
        let next = [r.as_ref().map(|x| x.2), l.as_ref().map(|x| x.2)].into_iter().flatten().min();
        let Some(next) = next else { return };
        tokio::time::sleep_until(next.into()).await;
        let now = Instant::now();
        if let Some((p, t, due, succ, fail, last)) = r.as_mut()
            && *due <= now
        {
            (*due, eager) = next_eager(now, eager, t.period);
            match probe::run(&probe::of_probe(p), &spec, &target, t.timeout).await {
                Ok(()) => {
                    *succ += 1;
                    *fail = 0;
                    // From the first success on, probes keep the period.
                    eager = t.period;
                    if *succ >= t.success_threshold && *last != Some(true) {
                        *last = Some(true);
                        send(ProbeKind::Readiness, true, String::new());
                    }
                }
                Err(m) => {
                    *fail += 1;
                    *succ = 0;
                    if *fail >= t.failure_threshold && *last != Some(false) {
                        *last = Some(false);
                        send(ProbeKind::Readiness, false, m);
                    } else if last.is_none() {
                        // Until the first success the container is not ready; say why once.
                        *last = Some(false);
                        send(ProbeKind::Readiness, false, m);
                    }
                }
            }
        }
        if let Some((p, t, due, fail)) = l.as_mut()
            && *due <= now
        {
            *due = now + t.period;
            match probe::run(&probe::of_probe(p), &spec, &target, t.timeout).await {
                Ok(()) => *fail = 0,
                Err(m) => {
                    *fail += 1;
                    if *fail >= t.failure_threshold {
                        send(ProbeKind::Liveness, false, m);
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unready_container_is_probed_after_5_ms_then_doubling_until_the_period() {
        let t0 = Instant::now();
        let period = Duration::from_secs(1);
        let (mut at, mut eager) = (t0, FIRST_READINESS_RETRY);
        let mut offsets = Vec::new();
        for _ in 0..10 {
            (at, eager) = next_eager(at, eager, period);
            offsets.push((at - t0).as_millis());
        }
        assert_eq!(offsets, [5, 15, 35, 75, 155, 315, 635, 1275, 2275, 3275]);
    }
}
