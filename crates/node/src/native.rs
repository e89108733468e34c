//! Native pod networking (issue 14, part 2): what the CNI `bridge` + `host-local` + `loopback`
//! plugins do for the agent (`cni`), done over rtnetlink from the agent's own process.
//!
//! The same wiring as the CNI configuration in `cni` (so either mode gives pods the same
//! network): a bridge with the range's first address (`isGateway`), IP forwarding on, one veth
//! pair per pod with the host end on the bridge in hairpin mode and the pod end `eth0` in the
//! pod's namespace with an address from the range, a default route via the bridge's address,
//! `lo` up; no masquerading (`ipMasq: false`). Addresses come from [`Ipam`], persisted before
//! use. The namespace is pinned where `ip netns add` pins it (a bind mount under
//! /var/run/netns), so both modes share its path and its lifetime rules, but made from the
//! agent: the wiring thread unshares its network namespace and bind-mounts it (`make_netns`),
//! which saves the `ip` process per start and per delete (measured: see `docs/benchmarks.md`,
//! "Pod start").
//!
//! Where it runs: the host side over a netlink socket in the agent's namespace; the pod side on
//! a thread of its own that enters the pod's namespace (`setns` moves only the calling thread)
//! and ends afterwards, so no thread of the runtime ever runs in a pod's namespace. That
//! thread's CPU time is the network step's figure in the pod's timeline.
//!
//! The host end of a pod's veth is named from its namespace name (`veth` + 11 hex digits of a
//! hash), so teardown finds it without any state.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::cni::Network as Cni;
use crate::ipam::Ipam;
use crate::route::Cidr;
use crate::{Error, Result};

/// The pod end of the veth pair, as the CNI runtime names it (`CNI_IFNAME`).
const POD_IF: &str = "eth0";

/// Native networking for one bridge and pod range.
#[derive(Debug, Clone)]
pub struct Network {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    bridge: String,
    ipam: Ipam,
    /// The bridge's interface index once it is known to exist.
    bridge_index: Mutex<Option<u32>>,
}

impl Network {
    /// Opens the IPAM state in `state_dir` for `cidr`, keeping the addresses of `known`
    /// (namespace name, IP) and of allocations whose namespace still exists.
    ///
    /// # Errors
    /// `cidr` is not an IPv4 range with room for pods, or the IPAM state cannot be written.
    pub fn new(
        bridge: &str,
        cidr: &str,
        state_dir: &Path,
        known: impl IntoIterator<Item = (String, Ipv4Addr)>,
    ) -> Result<Self> {
        let range = Cidr::parse(cidr)
            .ok_or_else(|| Error::Config(format!("pod CIDR {cidr:?} is not an IPv4 range")))?;
        let ipam = Ipam::open(state_dir, range, known, |ns| Cni::netns_path(ns).exists())?;
        Ok(Self {
            inner: Arc::new(Inner {
                bridge: bridge.to_owned(),
                ipam,
                bridge_index: Mutex::new(None),
            }),
        })
    }

    /// Creates the bridge with the gateway address if it does not exist and turns IP
    /// forwarding on (the bridge plugin's `isGateway`).
    ///
    /// # Errors
    /// A netlink request fails.
    pub async fn prepare(&self) -> Result<()> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut nl = Netlink::open().map_err(|e| net_err("netlink socket", e))?;
            inner.bridge(&mut nl).map(drop)
        })
        .await
    }

    /// Creates the namespace `name` and wires it; returns the pod IP and the CPU time spent
    /// (the wiring thread's, namespace included).
    ///
    /// # Errors
    /// A step fails; what was set up is torn down again.
    pub async fn setup(&self, name: &str) -> Result<(IpAddr, Duration)> {
        if Cni::netns_path(name).exists() {
            // Left over from an interrupted set-up: start clean (its address is released).
            self.teardown(name).await?;
        }
        let mut cpu = Duration::ZERO;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let inner = self.inner.clone();
        let ns = name.to_owned();
        std::thread::Builder::new()
            .name("kinetic-netns".into())
            .spawn(move || {
                let r = inner.wire(&ns);
                let _ = tx.send((r, kinetic_sys::thread_cpu()));
            })
            .map_err(|e| net_err("spawning the wiring thread", e))?;
        let result = match rx.await {
            Ok((r, spent)) => {
                cpu += spent;
                r
            }
            Err(_) => Err(net_err("wiring thread", io::Error::other("it ended without a result"))),
        };
        match result {
            Ok(ip) => Ok((IpAddr::V4(ip), cpu)),
            Err(e) => {
                let _ = self.teardown(name).await;
                Err(e)
            }
        }
    }

    /// Tears down every allocation's namespace that is not in `live` (see
    /// `net::Network::release_unknown`).
    /// Ready sandboxes and the pods that claimed one (`sandboxes::PREFIX`) are the pool's and
    /// the pod records' to clean up, never this.
    pub async fn release_unknown(&self, live: &std::collections::HashSet<String>) {
        let unknown = |ns: &String| !live.contains(ns) && !ns.starts_with(crate::sandboxes::PREFIX);
        for ns in self.inner.ipam.allocations().into_keys().filter(unknown) {
            tracing::info!(netns = %ns, "releasing the network of a pod that no longer exists");
            if let Err(e) = self.teardown(&ns).await {
                tracing::warn!(netns = %ns, error = %crate::report(&e), "network teardown failed");
            }
        }
    }

    /// The bridge's name.
    pub(crate) fn bridge(&self) -> &str {
        &self.inner.bridge
    }

    /// The IP allocations, by namespace name.
    pub(crate) fn allocations(&self) -> std::collections::BTreeMap<String, Ipv4Addr> {
        self.inner.ipam.allocations()
    }

    /// Removes the pod's veth, releases its IP and deletes the namespace. Idempotent.
    ///
    /// # Errors
    /// The veth cannot be deleted, the release cannot be persisted, or the namespace cannot
    /// be unmounted or removed.
    pub async fn teardown(&self, name: &str) -> Result<()> {
        let inner = self.inner.clone();
        let ns = name.to_owned();
        blocking(move || {
            let mut nl = Netlink::open().map_err(|e| net_err("netlink socket", e))?;
            del_link(&mut nl, &host_veth(&ns))?;
            inner.ipam.release(&ns)
        })
        .await?;
        let path = Cni::netns_path(name);
        if path.exists() {
            blocking(move || remove_netns(&path)).await?;
        }
        Ok(())
    }
}

impl Inner {
    /// The bridge's index, creating it (with the gateway address) when missing.
    fn bridge(&self, nl: &mut Netlink) -> Result<u32> {
        let mut cached =
            self.bridge_index.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = *cached {
            return Ok(i);
        }
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(self.bridge.clone()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
        match nl.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc_eexist()) => {}
            Err(e) => return Err(net_err(&format!("creating bridge {}", self.bridge), e)),
        }
        let index = link_index(nl, &self.bridge)?;
        // An existing bridge may be down (made by someone else, or set down).
        let mut up = LinkMessage::default();
        up.header.index = index;
        up.header.flags = LinkFlags::Up;
        up.header.change_mask = LinkFlags::Up;
        nl.request(RouteNetlinkMessage::SetLink(up), 0)
            .map_err(|e| net_err(&format!("setting bridge {} up", self.bridge), e))?;
        let gw = self.ipam.gateway();
        match nl.request(
            RouteNetlinkMessage::NewAddress(address(index, gw, self.ipam.prefix_len())),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc_eexist()) => {}
            Err(e) => {
                return Err(net_err(&format!("adding {gw} to bridge {}", self.bridge), e));
            }
        }
        // The bridge plugin turns forwarding on for a gateway bridge (ip.EnableIP4Forward).
        let fwd = Path::new("/proc/sys/net/ipv4/ip_forward");
        if std::fs::read(fwd).map(|v| v.first() != Some(&b'1')).unwrap_or(true) {
            std::fs::write(fwd, b"1").map_err(|e| Error::io(fwd, e))?;
        }
        *cached = Some(index);
        Ok(index)
    }

    fn forget_bridge(&self) {
        *self.bridge_index.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// Allocates the pod's address and wires its namespace. Runs on a thread of its own,
    /// which it moves into the pod's namespace half-way.
    fn wire(&self, ns: &str) -> Result<Ipv4Addr> {
        let ip = self.ipam.allocate(ns)?;
        let path = Cni::netns_path(ns);
        // The host side's socket and bridge first: a netlink socket stays in the namespace it
        // was opened in, and this thread leaves the host's for the pod's next.
        let mut nl = Netlink::open().map_err(|e| net_err("netlink socket", e))?;
        self.bridge(&mut nl)?;
        make_netns(&path)?;
        let nsfile = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        let host = host_veth(ns);
        let mut tries = 0;
        loop {
            let br = self.bridge(&mut nl)?;
            // The pod end cannot be set up here: the kernel configures it before the pair is
            // linked, and a veth without its peer refuses to open (ENOTCONN).
            let mut peer = LinkMessage::default();
            peer.attributes.push(LinkAttribute::IfName(POD_IF.into()));
            peer.attributes.push(LinkAttribute::NetNsFd(nsfile.as_raw_fd()));
            let mut msg = LinkMessage::default();
            msg.header.flags = LinkFlags::Up;
            msg.header.change_mask = LinkFlags::Up;
            msg.attributes.push(LinkAttribute::IfName(host.clone()));
            msg.attributes.push(LinkAttribute::Controller(br));
            msg.attributes.push(LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
            ]));
            match nl.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL) {
                Ok(_) => break,
                Err(e) if tries == 0 => {
                    tries += 1;
                    // A leftover veth of the same name, or a bridge deleted and made again
                    // (a stale index): clear both and try once more.
                    tracing::debug!(veth = %host, error = %e, "creating the veth failed; retrying");
                    del_link(&mut nl, &host)?;
                    self.forget_bridge();
                }
                Err(e) => return Err(net_err(&format!("creating veth {host}"), e)),
            }
        }
        // Hairpin mode on the bridge port (the bridge plugin's `hairpinMode: true`): a pod
        // reaches itself through a service address that leads back to it.
        let mut port = LinkMessage::default();
        port.header.index = link_index(&mut nl, &host)?;
        port.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(true)])),
        ]));
        nl.request(RouteNetlinkMessage::NewLink(port), 0)
            .map_err(|e| net_err(&format!("setting hairpin mode on {host}"), e))?;
        drop(nl);

        // The pod's side, from inside its namespace (this thread only, and it ends after).
        rustix::thread::move_into_link_name_space(
            nsfile.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(|e| net_err(&format!("entering network namespace {ns}"), e.into()))?;
        let mut nl = Netlink::open().map_err(|e| net_err("netlink socket in the pod", e))?;
        let mut lo = LinkMessage::default();
        lo.header.index = link_index(&mut nl, "lo")?;
        lo.header.flags = LinkFlags::Up;
        lo.header.change_mask = LinkFlags::Up;
        nl.request(RouteNetlinkMessage::SetLink(lo), 0).map_err(|e| net_err("setting lo up", e))?;
        let eth0 = link_index(&mut nl, POD_IF)?;
        let mut up = LinkMessage::default();
        up.header.index = eth0;
        up.header.flags = LinkFlags::Up;
        up.header.change_mask = LinkFlags::Up;
        nl.request(RouteNetlinkMessage::SetLink(up), 0)
            .map_err(|e| net_err(&format!("setting {POD_IF} up"), e))?;
        let prefix = self.ipam.prefix_len();
        nl.request(RouteNetlinkMessage::NewAddress(address(eth0, ip, prefix)), NLM_F_CREATE)
            .map_err(|e| net_err(&format!("adding {ip}/{prefix} to {POD_IF}"), e))?;
        let gw = self.ipam.gateway();
        let mut route = RouteMessage::default();
        route.header.address_family = AddressFamily::Inet;
        route.header.table = RouteHeader::RT_TABLE_MAIN;
        route.header.protocol = RouteProtocol::Boot;
        route.header.scope = RouteScope::Universe;
        route.header.kind = RouteType::Unicast;
        route.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        route.attributes.push(RouteAttribute::Oif(eth0));
        nl.request(RouteNetlinkMessage::NewRoute(route), NLM_F_CREATE)
            .map_err(|e| net_err(&format!("adding the default route via {gw}"), e))?;
        Ok(ip)
    }
}

/// `ip`/`prefix` on interface `index`, with the broadcast address (as `ip addr add … brd +`
/// and the bridge plugin set it).
fn address(index: u32, ip: Ipv4Addr, prefix: u8) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.prefix_len = prefix;
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
    m.attributes.push(AddressAttribute::Address(IpAddr::V4(ip)));
    if prefix < 31 {
        let brd = u32::from(ip) | (u32::MAX >> prefix);
        m.attributes.push(AddressAttribute::Broadcast(Ipv4Addr::from(brd)));
    }
    m
}

/// The host end of the veth of namespace `ns`: `veth` and 11 hex digits of its FNV-1a hash
/// (15 bytes, the longest interface name Linux takes).
pub(crate) fn host_veth(ns: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ns.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("veth{:011x}", h >> 20)
}

/// Deletes interface `name` (the bridge, when the node stops for good). Idempotent.
///
/// # Errors
/// The netlink request fails.
pub(crate) async fn remove_link(name: &str) -> Result<()> {
    let name = name.to_owned();
    blocking(move || {
        let mut nl = Netlink::open().map_err(|e| net_err("netlink socket", e))?;
        del_link(&mut nl, &name)
    })
    .await
}

/// Creates the network namespace pinned at `path` (under [`crate::cni::NETNS_DIR`]) as
/// `ip netns add` does, without its process: the calling thread moves into a new namespace
/// (`unshare(CLONE_NEWNET)`, this thread only) and bind-mounts it on an empty file. The
/// calling thread stays in the new namespace: call it on a thread of its own.
///
/// # Errors
/// The directory cannot be prepared, the file exists, or unshare or the mount fail (the file
/// is removed again).
fn make_netns(path: &Path) -> Result<()> {
    shared_netns_dir()?;
    let err = |what: &str, e: io::Error| net_err(&format!("{what} {}", path.display()), e);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| err("creating", e))?;
    let made = kinetic_sys::unshare_net_thread()
        .map_err(|e| err("a new network namespace for", e))
        .and_then(|()| {
            rustix::mount::mount_bind("/proc/thread-self/ns/net", path)
                .map_err(|e| err("bind-mounting the namespace on", e.into()))
        });
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Unmounts and removes a namespace pinned at `path`, as `ip netns delete` does (lazily:
/// the namespace goes with its last user). A file whose mount never happened just goes.
fn remove_netns(path: &Path) -> Result<()> {
    match rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(net_err(&format!("unmounting {}", path.display()), e.into())),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Makes [`crate::cni::NETNS_DIR`] a shared mount point once per process, as `ip netns`
/// does, so a namespace's bind mount and its removal propagate to mount namespaces made
/// from the host's (with `MS_REC` for the mounts already in it).
fn shared_netns_dir() -> Result<()> {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if DONE.get().is_some() {
        return Ok(());
    }
    use rustix::mount::{MountPropagationFlags as P, mount_bind, mount_change};
    let dir = Path::new(crate::cni::NETNS_DIR);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let shared = || mount_change(dir, P::SHARED | P::REC);
    match shared() {
        Ok(()) => {}
        // Not a mount point yet: make it one (bind it on itself), as `ip` does.
        Err(rustix::io::Errno::INVAL) => {
            mount_bind(dir, dir).and_then(|()| shared()).map_err(|e| {
                net_err(&format!("making {} a shared mount", dir.display()), e.into())
            })?;
        }
        Err(e) => {
            return Err(net_err(&format!("making {} a shared mount", dir.display()), e.into()));
        }
    }
    let _ = DONE.set(());
    Ok(())
}

fn libc_eexist() -> i32 {
    rustix::io::Errno::EXIST.raw_os_error()
}

fn net_err(op: &str, source: io::Error) -> Error {
    Error::Netlink { op: op.to_owned(), source }
}

/// The index of interface `name`.
fn link_index(nl: &mut Netlink, name: &str) -> Result<u32> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
    let replies = nl
        .request(RouteNetlinkMessage::GetLink(msg), 0)
        .map_err(|e| net_err(&format!("looking up interface {name}"), e))?;
    replies
        .into_iter()
        .find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
            _ => None,
        })
        .ok_or_else(|| {
            net_err(&format!("looking up interface {name}"), io::Error::other("no answer"))
        })
}

/// Deletes interface `name`; one that does not exist is no error.
fn del_link(nl: &mut Netlink, name: &str) -> Result<()> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
    match nl.request(RouteNetlinkMessage::DelLink(msg), 0) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NODEV.raw_os_error()) => Ok(()),
        Err(e) => Err(net_err(&format!("deleting interface {name}"), e)),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| net_err("netlink task", io::Error::other(e.to_string())))?
}

/// A route netlink socket in the calling thread's network namespace, one request at a time.
struct Netlink {
    sock: netlink_sys::Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    fn open() -> io::Result<Netlink> {
        let mut sock = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        Ok(Netlink { sock, seq: 0, buf: Vec::with_capacity(64 * 1024) })
    }

    /// Sends `msg` with `NLM_F_REQUEST | NLM_F_ACK | flags` and returns the replies before the
    /// acknowledgement; a negative acknowledgement is its errno.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        req.header.sequence_number = self.seq;
        req.finalize();
        let mut out = vec![0u8; req.buffer_len()];
        req.serialize(&mut out);
        self.sock.send(&out, 0)?;
        let mut replies = Vec::new();
        loop {
            self.buf.clear();
            let n = self.sock.recv(&mut self.buf, 0)?;
            let mut off = 0;
            while off < n {
                let Some(rest) = self.buf.get(off..n) else { break };
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = usize::try_from(m.header.length).unwrap_or(usize::MAX);
                if len == 0 {
                    break;
                }
                off = off.saturating_add(len.div_ceil(4) * 4);
                if m.header.sequence_number != self.seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                            None => Ok(replies),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(m) => replies.push(m),
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn host_veth_names_fit_and_differ() {
        let a = host_veth("kinetic-0b5e2f0c-1111-4a4a-9c9c-000000000001");
        let b = host_veth("kinetic-0b5e2f0c-1111-4a4a-9c9c-000000000002");
        assert_eq!(a.len(), 15, "{a}");
        assert!(a.starts_with("veth"));
        assert_ne!(a, b);
        assert_eq!(a, host_veth("kinetic-0b5e2f0c-1111-4a4a-9c9c-000000000001"));
    }

    /// A namespace made from the agent (`make_netns`) is a new one, pinned where `ip netns`
    /// pins it, and goes with `remove_netns`. Prints the CPU of 100 of them against 100
    /// `ip netns add` + `delete` (the figure in docs/benchmarks.md "Pod start").
    #[test]
    fn an_in_process_namespace_is_new_pinned_and_removed() {
        let n = 100;
        let names: Vec<String> =
            (0..n).map(|i| format!("kinetic-nstest-{}-{i}", std::process::id())).collect();
        let host = std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).unwrap();
        let ours = names.clone();
        let (inodes, spent) = std::thread::spawn(move || {
            let mut inodes = Vec::new();
            for name in &ours {
                // One thread per namespace, as the wiring does (the thread stays in it).
                let path = Cni::netns_path(name);
                let p = path.clone();
                let cpu = std::thread::spawn(move || {
                    let t = kinetic_sys::thread_cpu();
                    make_netns(&p).unwrap();
                    kinetic_sys::thread_cpu() - t
                })
                .join()
                .unwrap();
                inodes.push((std::fs::metadata(&path).unwrap().ino(), cpu));
            }
            let t0 = kinetic_sys::thread_cpu();
            for name in &ours {
                remove_netns(&Cni::netns_path(name)).unwrap();
            }
            (inodes, kinetic_sys::thread_cpu() - t0)
        })
        .join()
        .unwrap();
        let made: Duration = inodes.iter().map(|(_, c)| *c).sum();
        assert!(inodes.iter().all(|(ino, _)| *ino != host), "not a new namespace");
        let distinct: std::collections::HashSet<u64> = inodes.iter().map(|(i, _)| *i).collect();
        assert_eq!(distinct.len(), n);
        assert!(names.iter().all(|n| !Cni::netns_path(n).exists()), "a namespace file is left");
        let c0 = kinetic_sys::children_cpu();
        for name in &names {
            let ok = std::process::Command::new("ip").args(["netns", "add", name]).status();
            assert!(ok.unwrap().success());
        }
        let c1 = kinetic_sys::children_cpu();
        for name in &names {
            let ok = std::process::Command::new("ip").args(["netns", "delete", name]).status();
            assert!(ok.unwrap().success());
        }
        let c2 = kinetic_sys::children_cpu();
        eprintln!(
            "CPU per namespace: in-process make {:.2} ms, remove {:.2} ms; ip netns add {:.2} ms, delete {:.2} ms",
            made.as_secs_f64() * 1e3 / n as f64,
            spent.as_secs_f64() * 1e3 / n as f64,
            (c1 - c0).as_secs_f64() * 1e3 / n as f64,
            (c2 - c1).as_secs_f64() * 1e3 / n as f64,
        );
    }

    #[test]
    fn addresses_carry_the_broadcast() {
        let m = address(3, Ipv4Addr::new(10, 201, 7, 9), 24);
        assert!(
            m.attributes.contains(&AddressAttribute::Broadcast(Ipv4Addr::new(10, 201, 7, 255)))
        );
    }
}
