//! The pod network seam: the CNI plugins (`cni`) or the agent's own netlink wiring (`native`),
//! chosen by [`NetworkMode`]. Both create the pod's namespace under /var/run/netns with the
//! same name, so a worker never needs to know which one wired it.

use std::net::IpAddr;
use std::time::Duration;

use crate::{Result, cni, native};

/// Who wires pods into the node's bridge (`kinetic node --network`).
///
/// Native is the default since the node suite passes on it unchanged (issue 14: "the default
/// once it passes the same tests"); `KINETIC_TEST_NETWORK=cni` runs that suite on the plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// The CNI `bridge` + `host-local` + `loopback` plugins, one process each per pod, for
    /// clusters whose network needs them.
    Cni,
    /// The same bridge, veth pairs, addresses and routes over netlink from the agent, with
    /// its own persisted IP allocation.
    #[default]
    Native,
}

/// The node's pod network in either mode.
#[derive(Debug, Clone)]
pub(crate) enum Network {
    Cni(cni::Network),
    Native(native::Network),
}

impl Network {
    /// See [`cni::Network::setup`] and [`native::Network::setup`].
    pub async fn setup(&self, name: &str) -> Result<(IpAddr, Duration)> {
        match self {
            Network::Cni(n) => n.setup(name).await,
            Network::Native(n) => n.setup(name).await,
        }
    }

    /// Releases the network of every namespace native networking holds an address for that is
    /// not in `live` (the namespaces of the pods bound to this node). It catches a pod wired
    /// just before an agent was killed, before its record was saved, and deleted while the
    /// agent was down: no record names it, so nothing else would free its IP and namespace.
    /// The CNI plugins keep their allocations by namespace name in host-local's directory,
    /// which this does not read; a namespace of another agent on the same host is never in
    /// this agent's allocations, so it is never touched.
    pub async fn release_unknown(&self, live: &std::collections::HashSet<String>) {
        if let Network::Native(n) = self {
            n.release_unknown(live).await;
        }
    }

    /// See [`cni::Network::teardown`] and [`native::Network::teardown`].
    pub async fn teardown(&self, name: &str) -> Result<()> {
        match self {
            Network::Cni(n) => n.teardown(name).await,
            Network::Native(n) => n.teardown(name).await,
        }
    }
}
