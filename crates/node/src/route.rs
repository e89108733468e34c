//! The start-up check that the node's pod range is not already routed through another
//! interface than the agent's bridge.
//!
//! Why: a stale bridge (an earlier agent's, with another name, or anything else) holding a
//! route for the same range wins the kernel's route lookup, so the host's packets to pod IPs
//! leave through it and every readiness probe times out while the pods themselves look fine.
//! Refusing to start, naming the interface, turns that into a one-line fix.
//!
//! The routing table is read from `/proc/net/route` rather than over netlink: it is the main
//! table, IPv4, one line per route, which is exactly what the check needs, with no socket and
//! no new dependency. Limits: IPv6 pod ranges and policy-routing tables other than `main` are
//! not looked at (the agent's pod range is IPv4 and its bridge route is in `main`).

use std::net::Ipv4Addr;

use crate::{Error, Result};

const ROUTES: &str = "/proc/net/route";

/// An IPv4 range, `addr/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    pub addr: Ipv4Addr,
    pub len: u32,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, l) = s.split_once('/')?;
        let len: u32 = l.parse().ok().filter(|l| *l <= 32)?;
        Some(Cidr { addr: a.parse().ok()?, len })
    }

    fn mask(len: u32) -> u32 {
        if len == 0 { 0 } else { u32::MAX << (32 - len) }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let m = Self::mask(self.len);
        u32::from(ip) & m == u32::from(self.addr) & m
    }

    /// The range's first address: the bridge's (gateway) address in both network modes (the
    /// CNI bridge plugin's default gateway with host-local, and native networking's).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from((u32::from(self.addr) & Self::mask(self.len)).wrapping_add(1))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// One route of the main table: the interface and its destination range.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    iface: String,
    dst: Cidr,
}

/// Parses `/proc/net/route`: a header line, then tab-separated fields with the destination and
/// mask as hexadecimal numbers in the kernel's (network) byte order read as a host-order
/// (little-endian) integer.
fn parse_routes(text: &str) -> Vec<Route> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let iface = (*f.first()?).to_owned();
            let ip =
                |s: &str| u32::from_str_radix(s, 16).ok().map(|v| Ipv4Addr::from(v.to_le_bytes()));
            let dst = ip(f.get(1)?)?;
            let mask = u32::from(ip(f.get(7)?)?);
            Some(Route { iface, dst: Cidr { addr: dst, len: mask.count_ones() } })
        })
        .collect()
}

/// The first route that sends (part of) `range` elsewhere than `bridge`: a route at least as
/// specific as the range, inside it, through another interface. Less specific routes (the
/// default route) do not count: the bridge's own route is more specific and wins.
fn conflict<'a>(routes: &'a [Route], bridge: &str, range: Cidr) -> Option<&'a Route> {
    routes
        .iter()
        .find(|r| r.iface != bridge && r.dst.len >= range.len && range.contains(r.dst.addr))
}

/// Checks that the pod range `cidr` is not routed through another interface than `bridge`.
///
/// # Errors
/// [`Error::RouteConflict`] naming the interface that holds a route into the range;
/// [`Error::Config`] for a range that is not an IPv4 CIDR or an unreadable routing table.
pub(crate) fn check_pod_range(bridge: &str, cidr: &str) -> Result<()> {
    let range = Cidr::parse(cidr)
        .ok_or_else(|| Error::Config(format!("pod CIDR {cidr:?} is not an IPv4 range")))?;
    let text = std::fs::read_to_string(ROUTES)
        .map_err(|e| Error::Config(format!("reading the routing table ({ROUTES}): {e}")))?;
    match conflict(&parse_routes(&text), bridge, range) {
        Some(r) => Err(Error::RouteConflict {
            cidr: range.to_string(),
            interface: r.iface.clone(),
            route: r.dst.to_string(),
            bridge: bridge.to_owned(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_is_the_ranges_first_address() {
        let gw = |c: &str| Cidr::parse(c).map(|c| c.gateway().to_string());
        assert_eq!(gw("10.88.0.0/16").as_deref(), Some("10.88.0.1"));
        assert_eq!(gw("10.201.7.9/24").as_deref(), Some("10.201.7.1"));
        assert_eq!(crate::pod_gateway("fd00::/64"), None);
    }

    const TABLE: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
        eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
        old0\t0000580A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";

    #[test]
    fn finds_the_interface_routing_the_pod_range() {
        let routes = parse_routes(TABLE);
        assert_eq!(routes.len(), 3);
        assert_eq!(routes[1].dst, Cidr::parse("192.0.2.0/24").unwrap());
        let range = Cidr::parse("10.88.0.0/16").unwrap();
        assert_eq!(conflict(&routes, "kinetic0", range).map(|r| r.iface.as_str()), Some("old0"));
        // Its own bridge's route is no conflict, nor is the default route.
        assert_eq!(conflict(&routes, "old0", range), None);
        // A more specific route inside the range is one; a disjoint range is not affected.
        assert!(conflict(&routes, "kinetic0", Cidr::parse("10.0.0.0/8").unwrap()).is_some());
        assert_eq!(conflict(&routes, "kinetic0", Cidr::parse("10.89.0.0/16").unwrap()), None);
    }
}
