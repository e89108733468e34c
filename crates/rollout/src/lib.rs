//! CloneSet's sync algorithm as pure functions: what to create, delete and update in one pass.
//!
//! A port, in our own code, of OpenKruise's CloneSet decisions (`pkg/controller/cloneset/` in
//! openkruise/kruise, v1.9): the controller in `kinetic-controllers` lists a CloneSet's pods and
//! revisions, calls these functions, and turns their answers into API calls. Everything here is
//! a function of its arguments (the time is an argument, randomness comes from the caller's
//! `Rng`): no client, no I/O, no async.
//!
//! The flow of one pass, in upstream's order:
//!
//! 1. [`revision`]: the update revision's name from the template (data, FNV hash, name).
//! 2. [`SyncInput::new`] resolves the CloneSet's strategy ([`Strategy`]: partition, maxSurge,
//!    maxUnavailable with upstream's rounding) and holds the pods and revisions.
//! 3. [`plan_scale`] decides the one scale action of the pass ([`ScaleAction`]: create so many
//!    pods per revision, delete these pods, or take pods out of PreparingDelete), from
//!    [`calculate_diffs`]. If it does something, the pass ends.
//! 4. [`plan_update`] picks the pods to update now, in order, for the target revision; for
//!    each, [`inplace::update_spec`] of the pod's and the target template says whether to patch
//!    it in place ([`inplace::update_patch`]) or to recreate it (label it `specified-delete`, and
//!    the next scale pass replaces it).
//! 5. [`inplace::check_update_completed`] tells when a pod's in-place update is done, so the
//!    controller sets `InPlaceUpdateReady` back to True; with container priorities
//!    (`KRUISE_CONTAINER_PRIORITY`) the update goes in batches, and
//!    [`inplace::ready_for_next_batch`] and [`inplace::next_batch`] patch the next one.
//! 6. [`status_counts`] counts the pods for the status and says when `currentRevision` moves.
//!
//! What it does not do: the API calls, expectations, events and status; pod state refresh
//! (lifecycle transitions, grace periods) beyond the predicates in [`lifecycle`] and
//! [`inplace`]; in-place resource resize and image
//! pre-download. The CloneSet's own validation rules (Kruise's webhook, minus the pod template
//! and the update rules) are in [`validation`], shared by the embedded API server and the
//! controller.
//!
//! Deviations from upstream are deliberate and documented where they live: in-place before
//! surge ([`DiffOptions::in_place_update`]), stable priority sort ([`update::sort_update_indexes`]),
//! stricter in-place completion ([`inplace::check_update_completed`]) and metadata rules
//! ([`inplace::update_spec`]), invalid int-or-strings as errors ([`Strategy::from_cloneset`]).

pub mod diffs;
pub mod inplace;
pub mod lifecycle;
pub mod pod;
pub mod revision;
pub mod scale;
pub mod sidecarset;
pub mod status;
pub mod strategy;
pub mod united;
pub mod update;
pub mod validation;

pub use diffs::{DiffOptions, Diffs, SyncInput, calculate_diffs};
pub use scale::{PodDeletion, ScaleAction, ScalePlan, plan_scale};
pub use status::{StatusCounts, status_counts};
pub use strategy::Strategy;
pub use update::{UpdatePlan, plan_update};

/// Why a CloneSet cannot be synced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An int-or-string field holds a string that is not a percentage such as `"20%"`.
    #[error("invalid value {value:?} for {field}: must be an integer or a percentage")]
    InvalidIntOrString {
        /// The field, such as `spec.updateStrategy.partition`.
        field: &'static str,
        /// The value found.
        value: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
