//! Node agent integration tests: the embedded API server on an ephemeral port, a real
//! docker-registry on 127.0.0.1 with images built from busybox-static, the real `kube` client
//! and real containers in their own network namespaces. They need root, runc, the CNI plugins
//! and docker-registry (the README's test command installs them) and fail when one is missing.
//!
//! The suite runs on the node's defaults, as `kinetic up` and `kinetic node`: the native
//! runtime and native pod networking (issue 14), so it is their conformance suite. Two
//! variables run it on the other ones instead:
//!
//! - `KINETIC_TEST_RUNTIME=runc` (or `native`): the containers' runtime;
//! - `KINETIC_TEST_NETWORK=cni` (or `native`): who wires pods into the bridge.
//!
//! runc and the CNI plugins stay covered without them: `runtimes` runs its table of OCI config
//! cases under both runtimes, and the tests of paths only runc or CNI has pin their cluster's
//! runtime or network.
#![allow(clippy::unwrap_used)]

mod claims;
mod harness;
mod incluster;
mod inplace;
mod kubelet_api;
mod lifecycle;
mod native_net;
mod network;
mod pods;
mod runtimes;
mod stats;

pub use harness::Cluster;
