//! Integration tests of the embedded API server, driven only through real clients: the `kube`
//! crate over HTTPS, and the real `kubectl` binary.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the first unexpected error.

mod admission;
mod apply;
mod cel;
mod client;
mod errors;
mod eviction;
mod fuzz;
mod gc;
mod generate_name;
mod hpa;
mod kubectl;
mod nodeauthz;
mod observability;
mod quota;
mod rbac;
mod serviceaccount;
mod sidecarset;
mod storage;
mod watch;
mod webhooks;
