//! The step-by-step record of an in-place container restart (`Timeline::restart`, issue 14):
//! stamped as the restart goes (seen, old run signalled and exited, new run configured, rootfs,
//! bundle, started, reported, ready) and written to the pod's timeline annotation once the
//! container is ready again, off the restart's path.

use kinetic_api::timeline::RestartTimeline;

use super::*;

/// A restart being recorded, until it is written.
pub(super) struct Pending {
    pub(super) rec: RestartTimeline,
}

impl Worker {
    /// Begins the record of an in-place restart of `name`, seen at `observed`.
    pub(super) fn restart_begin(&mut self, name: &str, observed: Timestamp) {
        let attempt = self.rec.containers.get(name).map_or(0, |c| c.attempt) + 1;
        self.restart = Some(Pending {
            rec: RestartTimeline {
                container: name.to_owned(),
                attempt,
                observed: Some(observed),
                ..Default::default()
            },
        });
    }

    /// Stamps a step of the restart of `name` being recorded (none when there is none).
    pub(super) fn restart_step(&mut self, name: &str, step: impl FnOnce(&mut RestartTimeline)) {
        if let Some(p) = self.restart.as_mut()
            && p.rec.container == name
        {
            step(&mut p.rec);
        }
    }

    /// After a status write: stamps `reported` once the new run's Running state is written,
    /// and writes the record when the write carried its readiness too. The write is a task of
    /// its own, so the pod's next step does not wait for it.
    pub(super) fn restart_after_status(&mut self) {
        let Some(p) = self.restart.as_mut() else { return };
        let name = p.rec.container.clone();
        let current = self.running.get(&name).is_some_and(|r| r.attempt == p.rec.attempt);
        if !current {
            // Not started yet (a status write during an image pull), or failed to start (the
            // next restart replaces the record), or already replaced by a later run.
            if self.running.get(&name).is_some_and(|r| r.attempt > p.rec.attempt) {
                self.restart = None;
            }
            return;
        }
        p.rec.reported.get_or_insert_with(ts_now);
        if p.rec.ready.is_none() {
            return;
        }
        let Some(p) = self.restart.take() else { return };
        self.rec.timeline.restart = Some(p.rec.clone());
        let body = json!({"metadata": {"annotations": {
            timeline::ANNOTATION: serde_json::to_string(&self.annotated_timeline()).unwrap_or_default(),
        }}});
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.subject.namespace);
        let (name, key) = (self.subject.name.clone(), self.key());
        tokio::spawn(async move {
            if let Err(e) = api.patch(&name, &PatchParams::default(), &Patch::Merge(body)).await {
                tracing::debug!(pod = %key, error = %e, "restart timeline not written");
            }
        });
    }
}
