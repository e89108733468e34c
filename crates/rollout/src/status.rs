//! The pod counts of a CloneSet's status (`pkg/controller/cloneset/cloneset_status.go`,
//! `calculateStatus`, as v1.9 computes them).

use crate::diffs::SyncInput;
use crate::pod;

/// The counted part of `CloneSetStatus`; the controller adds observedGeneration, the revisions'
/// names, collisionCount, conditions and the label selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusCounts {
    /// Pods owned.
    pub replicas: i32,
    /// Running, Ready, and `InPlaceUpdateReady` not False (lifecycle state does not matter).
    pub ready_replicas: i32,
    /// Update-ready for minReadySeconds and in lifecycle state Normal (or none).
    pub available_replicas: i32,
    /// At the update revision.
    pub updated_replicas: i32,
    /// At the update revision and ready.
    pub updated_ready_replicas: i32,
    /// At the update revision and available.
    pub updated_available_replicas: i32,
    /// replicas − partition, or all replicas once the current revision is the update revision.
    pub expected_updated_replicas: i32,
    /// The new `status.currentRevision`: the update revision once every pod is at it and there
    /// are exactly `spec.replicas` pods, else the input's current revision.
    pub current_revision: String,
}

/// Counts `input.pods` for the CloneSet's status.
pub fn status_counts(input: &SyncInput<'_>) -> StatusCounts {
    let s = &input.strategy;
    let mut c = StatusCounts::default();
    for p in input.pods {
        let ready = pod::is_update_ready(p, 0, input.now);
        let available = input.is_available(p);
        c.replicas += 1;
        c.ready_replicas += i32::from(ready);
        c.available_replicas += i32::from(available);
        if pod::matches_revision(p, input.update_revision) {
            c.updated_replicas += 1;
            c.updated_ready_replicas += i32::from(ready);
            c.updated_available_replicas += i32::from(available);
        }
    }
    c.current_revision = if c.updated_replicas == c.replicas && c.replicas == s.replicas {
        input.update_revision.to_owned()
    } else {
        input.current_revision.to_owned()
    };
    c.expected_updated_replicas = if c.current_revision == input.update_revision {
        s.replicas
    } else {
        s.replicas - s.partition
    };
    c
}
