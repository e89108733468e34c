//! Claiming a ready sandbox (`crate::sandboxes`) instead of making one on the start path.

use super::*;

impl Worker {
    /// Takes a ready sandbox for the pod when the node keeps them: its namespace becomes the
    /// pod's (saved in the record before the pool lets go of it), then the pod's /etc files.
    /// False when there is none (or the pod has a namespace of its own to clear first).
    pub(super) fn claim_ready_sandbox(&mut self) -> bool {
        let Some(pool) = self.ctx.ready.clone() else { return false };
        if crate::cni::Network::netns_path(&self.rec.netns).exists() {
            // Its own namespace, half made by an agent killed mid-start: the usual set-up
            // clears it and its address, which a claim would leave behind.
            return false;
        }
        let t0 = kinetic_sys::thread_cpu();
        let Some(sb) = pool.claim() else { return false };
        self.rec.netns = sb.netns.clone();
        self.rec.ip = Some(sb.ip.to_string());
        self.rec.start_time.get_or_insert_with(ts_now);
        self.rec.timeline.sandbox_ready = Some(ts_now());
        self.rec.timeline.ready_sandbox = true;
        if let Err(e) = self.write_etc() {
            tracing::warn!(pod = %self.key(), error = %e, "writing /etc files");
        }
        self.rec.timeline.sandbox_cpu = Some(timeline::CpuTime {
            agent_us: crate::cpu::micros(kinetic_sys::thread_cpu().saturating_sub(t0)),
            ..Default::default()
        });
        self.save();
        pool.claimed(&sb.netns);
        true
    }
}
