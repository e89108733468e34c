//! Node agent integration tests: the embedded API server on an ephemeral port, a real
//! docker-registry on 127.0.0.1 with images built from busybox-static, the real `kube` client
//! and runc containers in their own network namespaces. They need root, runc, the CNI plugins
//! and docker-registry (the README's test command installs them) and fail when one is missing.
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
