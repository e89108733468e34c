//! The pod's status and timeline, written to the API.

use super::*;

impl Worker {
    /// Writes the pod status (strategic merge patch on `pods/status`) when it changed, and the
    /// timeline annotation once the pod is Ready.
    pub(super) async fn flush_status(&mut self) {
        let st = status::build(
            &self.pod,
            &self.rec,
            &self.ctx.cfg.node_ip.to_string(),
            self.ctx.runtime.kind(),
        );
        let ready = status::is_ready(&st);
        if ready && !self.rec.timeline_written {
            self.rec.timeline.ready = Some(ts_now());
        }
        // Another writer (a CloneSet controller marking a pod not ready before an in-place
        // update) may have changed a condition kubelet owns since our last write: write again.
        // A specialisation that ended goes into the same write ([`crate::specialize::report`]).
        let report = crate::specialize::report(&self.pod, &self.rec, ready);
        if self.last_status.as_ref() != Some(&st)
            || conditions_drifted(&self.pod, &st)
            || report.is_some()
        {
            let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.subject.namespace);
            let mut meta = json!({"uid": self.subject.uid});
            if let Some(r) = &report {
                meta["labels"] = r.metadata["labels"].clone();
                meta["annotations"] = r.metadata["annotations"].clone();
            }
            let body = json!({"metadata": meta, "status": st});
            match api
                .patch_status(&self.subject.name, &PatchParams::default(), &Patch::Strategic(body))
                .await
            {
                Ok(p) => {
                    self.last_status = Some(st);
                    self.pod = Arc::new(p);
                    if let Some(r) = report {
                        crate::specialize::reported(
                            &self.ctx.events,
                            &self.subject,
                            &mut self.rec,
                            r,
                        );
                    }
                    // After the specialisation's report is in the record: the restart record's
                    // write carries the whole timeline, and one taken before would overwrite the
                    // `specialization.ready` this write just stored.
                    self.restart_after_status();
                }
                Err(kube::Error::Api(s)) if s.code == 404 => self.gone = true,
                Err(e) => {
                    tracing::warn!(pod = %self.key(), error = %e, "status update failed; retrying");
                    self.wake_in(Duration::from_millis(500));
                }
            }
        }
        let failed_start = self.rec.containers.values().any(|c| matches!(&c.state, CState::Waiting { reason, .. } if reason != "ContainerCreating" && reason != "PodInitializing"));
        if (ready || failed_start) && !self.rec.timeline_written {
            self.write_timeline().await;
        }
    }

    pub(super) async fn write_timeline(&mut self) {
        let tl = self.annotated_timeline();
        let body = json!({"metadata": {"annotations": {timeline::ANNOTATION: serde_json::to_string(&tl).unwrap_or_default()}}});
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.subject.namespace);
        match api.patch(&self.subject.name, &PatchParams::default(), &Patch::Merge(body)).await {
            Ok(p) => {
                self.pod = Arc::new(p);
                self.rec.timeline = tl;
                self.rec.timeline_written = true;
            }
            Err(e) => tracing::debug!(pod = %self.key(), error = %e, "timeline not written"),
        }
    }

    /// The record's timeline with the scheduler's instants from the pod's annotations.
    pub(super) fn annotated_timeline(&self) -> timeline::Timeline {
        let mut tl = self.rec.timeline.clone();
        let annotations = self.pod.metadata.annotations.clone().unwrap_or_default();
        let parse = |k: &str| annotations.get(k).and_then(|v| v.parse::<Timestamp>().ok());
        tl.created = parse(timeline::QUEUED_AT)
            .or_else(|| self.pod.metadata.creation_timestamp.as_ref().map(|t| t.0));
        tl.scheduled = parse(timeline::SCHEDULED_AT).or_else(|| {
            self.pod
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "PodScheduled")?
                .last_transition_time
                .as_ref()
                .map(|t| t.0)
        });
        tl
    }
}
