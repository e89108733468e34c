//! Pod IP allocation for native networking (`native`): the CNI `host-local` plugin's behaviour
//! with its state in one file.
//!
//! Like host-local: addresses come from the pod range less its network address, the gateway
//! (the first address, on the bridge) and the broadcast address; allocation is round-robin
//! from the last address handed out, so a released IP is not reused at once (a peer that still
//! has it cached does not reach the wrong pod); one allocation per key (the pod's network
//! namespace name), and allocating again for the same key returns the same address.
//!
//! # Guarantees
//! The state file (`<data>/network/ipam.json`) is written atomically — temporary file, fsync,
//! rename, fsync of the directory — before [`Ipam::allocate`] returns the address, and before
//! the allocation is visible to anyone, so an agent killed at any point restarts with every
//! address it may have handed out still taken: a restart never hands out an IP twice. A
//! release is persisted the same way. [`Ipam::open`] also takes the addresses recorded in the
//! pod records it is given (pods wired before the file existed, for example by the CNI
//! plugins) and drops allocations whose network namespace no longer exists (their pods are
//! gone and were torn down).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::route::Cidr;
use crate::{Error, Result};

/// The persisted state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct State {
    /// The range the allocations come from (a changed range starts afresh).
    range: String,
    /// The last address handed out (host-local's `last_reserved_ip`).
    last: Option<Ipv4Addr>,
    /// Address by key (the pod's network namespace name).
    allocations: BTreeMap<String, Ipv4Addr>,
}

/// A persisted allocator for one pod range.
#[derive(Debug)]
pub(crate) struct Ipam {
    path: PathBuf,
    range: Cidr,
    state: Mutex<State>,
}

impl Ipam {
    /// Opens (or creates) the state in `dir` for `range`. `known` are allocations recorded
    /// elsewhere (key, address) that must stay taken; `exists(key)` tells whether the key's
    /// network namespace still exists.
    ///
    /// # Errors
    /// The range is too small for pods, or the state cannot be written.
    pub fn open(
        dir: &Path,
        range: Cidr,
        known: impl IntoIterator<Item = (String, Ipv4Addr)>,
        exists: impl Fn(&str) -> bool,
    ) -> Result<Ipam> {
        if range.len > 30 {
            return Err(Error::Config(format!(
                "pod CIDR {range} has no room for pods (at most /30 is accepted)"
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join("ipam.json");
        let mut state = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice::<State>(&b).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e,
                    "unreadable IPAM state; rebuilding it from the pod records");
                State::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(Error::io(&path, e)),
        };
        if state.range != range.to_string() {
            state = State { range: range.to_string(), ..State::default() };
        }
        for (key, ip) in known {
            if range.contains(ip) {
                state.allocations.entry(key).or_insert(ip);
            }
        }
        state.allocations.retain(|key, _| exists(key));
        let ipam = Ipam { path, range, state: Mutex::new(State::default()) };
        ipam.persist(&state)?;
        *ipam.lock() = state;
        Ok(ipam)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The gateway: the range's first address, on the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network() + 1)
    }

    pub fn prefix_len(&self) -> u8 {
        u8::try_from(self.range.len).unwrap_or(32)
    }

    fn network(&self) -> u32 {
        let mask = if self.range.len == 0 { 0 } else { u32::MAX << (32 - self.range.len) };
        u32::from(self.range.addr) & mask
    }

    /// The first and last address pods may get.
    fn bounds(&self) -> (u32, u32) {
        let size = 1u64 << (32 - self.range.len);
        let last = u64::from(self.network()) + size - 2;
        (self.network() + 2, u32::try_from(last).unwrap_or(u32::MAX))
    }

    /// The address of `key`: its existing allocation, else the next free one after the last
    /// handed out, persisted before it is returned.
    ///
    /// # Errors
    /// The range is full, or the state cannot be written (nothing is allocated then).
    pub fn allocate(&self, key: &str) -> Result<Ipv4Addr> {
        let mut st = self.lock();
        if let Some(ip) = st.allocations.get(key) {
            return Ok(*ip);
        }
        let (first, last) = self.bounds();
        let used: std::collections::HashSet<u32> =
            st.allocations.values().map(|ip| u32::from(*ip)).collect();
        let start = st.last.map(u32::from).filter(|l| (first..=last).contains(l)).unwrap_or(last);
        let n = last - first + 1;
        let ip = (1..=n)
            .map(|i| first + (start - first + i) % n)
            .find(|c| !used.contains(c))
            .map(Ipv4Addr::from)
            .ok_or_else(|| {
                Error::Config(format!("no free IP address left in pod range {}", self.range))
            })?;
        let mut next = st.clone();
        next.allocations.insert(key.to_owned(), ip);
        next.last = Some(ip);
        self.persist(&next)?;
        *st = next;
        Ok(ip)
    }

    /// Frees `key`'s address. Idempotent.
    ///
    /// # Errors
    /// The state cannot be written (the address stays allocated then).
    pub fn release(&self, key: &str) -> Result<()> {
        let mut st = self.lock();
        if !st.allocations.contains_key(key) {
            return Ok(());
        }
        let mut next = st.clone();
        next.allocations.remove(key);
        self.persist(&next)?;
        *st = next;
        Ok(())
    }

    /// The allocations, by key.
    pub fn allocations(&self) -> BTreeMap<String, Ipv4Addr> {
        self.lock().allocations.clone()
    }

    /// Writes `st` atomically: a temporary file, fsync, rename over the state, fsync of the
    /// directory (so the rename itself survives a crash of the machine).
    fn persist(&self, st: &State) -> Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let io = |e| Error::io(&self.path, e);
        let body = serde_json::to_vec(st).map_err(|e| io(std::io::Error::other(e)))?;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&body).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, known: Vec<(String, Ipv4Addr)>, exists: &[&str]) -> Ipam {
        let exists: Vec<String> = exists.iter().map(|s| (*s).to_owned()).collect();
        Ipam::open(dir, Cidr::parse("10.9.0.0/29").unwrap(), known, |k| {
            exists.iter().any(|e| e == k)
        })
        .unwrap()
    }

    #[test]
    fn hands_out_round_robin_and_never_the_gateway_or_broadcast() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = open(dir.path(), vec![], &[]);
        assert_eq!(ipam.gateway(), Ipv4Addr::new(10, 9, 0, 1));
        let ips: Vec<Ipv4Addr> = (0..5).map(|i| ipam.allocate(&format!("p{i}")).unwrap()).collect();
        let want: Vec<Ipv4Addr> = (2..=6).map(|i| Ipv4Addr::new(10, 9, 0, i)).collect();
        assert_eq!(ips, want);
        assert!(ipam.allocate("p5").is_err(), "a /29 has five pod addresses");
        assert_eq!(ipam.allocate("p2").unwrap(), Ipv4Addr::new(10, 9, 0, 4), "idempotent");
        ipam.release("p1").unwrap();
        ipam.release("p1").unwrap();
        assert_eq!(ipam.allocate("q").unwrap(), Ipv4Addr::new(10, 9, 0, 3));
    }

    #[test]
    fn a_released_address_is_not_reused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = open(dir.path(), vec![], &[]);
        let a = ipam.allocate("a").unwrap();
        ipam.release("a").unwrap();
        assert_ne!(ipam.allocate("b").unwrap(), a);
    }

    #[test]
    fn a_reopened_state_keeps_live_allocations_and_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = open(dir.path(), vec![], &[]);
        let a = ipam.allocate("a").unwrap();
        ipam.allocate("gone").unwrap();
        drop(ipam);
        // "gone"'s namespace no longer exists; "rec" was wired by someone else (a record).
        let rec = Ipv4Addr::new(10, 9, 0, 5);
        let ipam = open(dir.path(), vec![("rec".into(), rec)], &["a", "rec"]);
        let all = ipam.allocations();
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(all.get("a"), Some(&a));
        assert_eq!(all.get("rec"), Some(&rec));
        let next = ipam.allocate("b").unwrap();
        assert!(next != a && next != rec, "{next}");
    }

    #[test]
    fn an_unreadable_state_is_rebuilt_from_the_records() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ipam.json"), b"{not json").unwrap();
        let rec = Ipv4Addr::new(10, 9, 0, 2);
        let ipam = open(dir.path(), vec![("rec".into(), rec)], &["rec"]);
        assert_ne!(ipam.allocate("b").unwrap(), rec);
    }
}
