//! The controllers against the embedded API server, through the real `kube` client.
//! There is no node agent here: the tests create Node objects themselves.
#![allow(clippy::unwrap_used)]

mod cloneset;
mod daemonset;
mod ehpa;
mod hpa;
mod imagepulljob;
mod leader;
mod podpool;
mod scheduler;
mod selector;
mod serving;
mod workloads;
