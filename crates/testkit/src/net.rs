//! Network slots for tests that run node agents in parallel on one machine: each slot is a
//! bridge name and a /24 pod subnet, held with an exclusive file lock for the test's life so
//! two agents never share a bridge or hand out the same IPs.

use std::os::fd::AsFd as _;
use std::path::Path;
use std::time::Duration;

/// One slot; the bridge is deleted when it is dropped.
pub struct NetSlot {
    pub index: u32,
    /// `ktest<index>`.
    pub bridge: String,
    /// `10.201.<index>.0/24`.
    pub cidr: String,
    _lock: std::fs::File,
}

impl NetSlot {
    /// Waits for a free slot (there are 200).
    ///
    /// # Panics
    /// The lock directory under /run cannot be created (the tests run as root).
    pub fn take() -> NetSlot {
        let dir = Path::new("/run/kinetic-test-slots");
        std::fs::create_dir_all(dir).expect("creating /run/kinetic-test-slots (tests run as root)");
        loop {
            for i in 0..200u32 {
                let Ok(f) = std::fs::File::create(dir.join(i.to_string())) else { continue };
                let op = rustix::fs::FlockOperation::NonBlockingLockExclusive;
                if rustix::fs::flock(f.as_fd(), op).is_ok() {
                    let slot = NetSlot {
                        index: i,
                        bridge: format!("ktest{i}"),
                        cidr: format!("10.201.{i}.0/24"),
                        _lock: f,
                    };
                    // A crashed earlier run may have left this slot's bridge behind.
                    slot.delete_bridge();
                    return slot;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn delete_bridge(&self) {
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            let _ =
                std::process::Command::new("ip").args(["link", "delete", &self.bridge]).output();
        }
    }
}

impl Drop for NetSlot {
    fn drop(&mut self) {
        self.delete_bridge();
    }
}
