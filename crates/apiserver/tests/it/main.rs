//! Integration tests of the embedded API server, driven only through real clients: the `kube`
//! crate over HTTPS, and the real `kubectl` binary.

mod client;
mod errors;
mod kubectl;
mod watch;
