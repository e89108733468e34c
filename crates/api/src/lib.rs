//! Wire types shared by every Kinetic crate: configuration and custom resources.
//!
//! This crate does no I/O and has no async runtime; it only defines what travels over the
//! Kubernetes API (annotations, custom resource specs) so producers and consumers agree.

pub mod agents;
pub mod crane;
pub mod knative;
pub mod kruise;
pub mod pool;
pub mod storage;
pub mod timeline;
