//! Per-revision runtime state (Knative's activator `Throttler`/`revisionThrottler`): the
//! endpoints with their in-flight counts, the FIFO queue of held requests, and the
//! time-weighted concurrency the autoscaler is fed.
//!
//! A request first takes an [`Admission`] (it counts towards the revision's concurrency from
//! then on, held or not), then waits for a [`Slot`]: one unit of an endpoint's
//! `containerConcurrency`. Slots are handed out under the revision's lock, so the limit holds
//! exactly; a released slot goes straight to the oldest live waiter.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kinetic_autoscale::Stat;
use tokio::sync::oneshot;

use crate::table::{Protocol, Revision, RevisionKey};

/// One ready endpoint and its requests in flight (changed only under the revision's lock).
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    in_flight: AtomicUsize,
}

impl Endpoint {
    fn load(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// The limits of a revision as last pushed by `set_routes`.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) container_concurrency: usize,
    pub(crate) timeout: Duration,
    pub(crate) response_start_timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) protocol: Protocol,
}

#[derive(Debug)]
struct State {
    limits: Limits,
    endpoints: Vec<Arc<Endpoint>>,
    /// Where the next tie-break scan starts, so equal loads rotate over the endpoints.
    next: usize,
    waiters: VecDeque<oneshot::Sender<Slot>>,
    /// Endpoints that refused a connection, and until when they get no new requests.
    quarantined: HashMap<SocketAddr, Instant>,
    // Metrics since `window_start`: the integral of `concurrency` over time, and arrivals.
    concurrency: usize,
    last_change: Instant,
    area: f64,
    requests: u64,
    window_start: Instant,
}

/// The runtime state of one revision; shared by the routing table and every request to it,
/// and kept across table swaps so that counts and queues survive them.
#[derive(Debug)]
pub(crate) struct Throttler {
    pub(crate) key: RevisionKey,
    state: Mutex<State>,
}

/// Why a request got no slot.
#[derive(Debug)]
pub(crate) enum Rejection {
    /// `queue_depth` requests were already waiting.
    QueueFull(usize),
    /// The deadline passed while held; `at_zero` says whether there was no endpoint at all.
    Timeout { at_zero: bool },
}

impl Throttler {
    pub(crate) fn new(key: RevisionKey, rev: &Revision) -> Arc<Self> {
        let now = Instant::now();
        let t = Arc::new(Self {
            key,
            state: Mutex::new(State {
                limits: limits(rev),
                endpoints: Vec::new(),
                next: 0,
                waiters: VecDeque::new(),
                quarantined: HashMap::new(),
                concurrency: 0,
                last_change: now,
                area: 0.0,
                requests: 0,
                window_start: now,
            }),
        });
        // A new throttler has no endpoints before this and nothing held.
        let _ = t.update(rev);
        t
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves counts that are still consistent enough
        // to serve; poisoning would turn one bug into an outage.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn limits(&self) -> Limits {
        self.lock().limits.clone()
    }

    /// Applies a new table entry: limits and endpoints (an endpoint kept by address keeps its
    /// in-flight count), then hands out whatever capacity appeared to the held requests.
    /// Returns whether the revision just lost its last endpoint while requests are held: the
    /// caller then calls the on-demand hook, as no new arrival may come to do it.
    #[must_use]
    pub(crate) fn update(self: &Arc<Self>, rev: &Revision) -> bool {
        let (failed, lost_last) = {
            let mut st = self.lock();
            st.limits = limits(rev);
            let old = std::mem::take(&mut st.endpoints);
            st.endpoints = rev
                .endpoints
                .iter()
                .map(|addr| {
                    old.iter().find(|e| e.addr == *addr).cloned().unwrap_or_else(|| {
                        Arc::new(Endpoint { addr: *addr, in_flight: AtomicUsize::new(0) })
                    })
                })
                .collect();
            let present: Vec<SocketAddr> = st.endpoints.iter().map(|e| e.addr).collect();
            st.quarantined.retain(|addr, _| present.contains(addr));
            let lost_last = !old.is_empty()
                && st.endpoints.is_empty()
                && st.waiters.iter().any(|w| !w.is_closed());
            (self.dispatch(&mut st), lost_last)
        };
        drop(failed);
        lost_last
    }

    /// Leaves `addr` out of new picks for `period` (it refused a connection), then hands
    /// whatever it can take to held requests again.
    pub(crate) fn quarantine(self: &Arc<Self>, addr: SocketAddr, period: Duration) {
        self.lock().quarantined.insert(addr, Instant::now() + period);
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(period).await;
            if let Some(t) = this.upgrade() {
                let failed = {
                    let mut st = t.lock();
                    let now = Instant::now();
                    st.quarantined.retain(|_, until| *until > now);
                    t.dispatch(&mut st)
                };
                drop(failed);
            }
        });
    }

    /// Counts a request towards the revision's concurrency and request rate until the
    /// returned guard is dropped.
    pub(crate) fn admit(self: &Arc<Self>) -> Admission {
        let mut st = self.lock();
        st.advance(Instant::now());
        st.concurrency += 1;
        st.requests += 1;
        Admission { throttler: self.clone() }
    }

    /// Waits for a slot on an endpoint until `deadline`, holding the request in FIFO order
    /// behind earlier ones. `on_demand` is called (outside the lock) when this request is the
    /// first one held while the revision has no endpoint.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        deadline: tokio::time::Instant,
        queue_depth: usize,
        on_demand: impl FnOnce(&RevisionKey),
    ) -> Result<Slot, Rejection> {
        let (rx, first_at_zero, failed) = {
            let mut st = self.lock();
            st.waiters.retain(|w| !w.is_closed());
            if st.waiters.is_empty()
                && let Some(ep) = st.pick()
            {
                ep.in_flight.fetch_add(1, Ordering::Relaxed);
                return Ok(Slot { throttler: self.clone(), endpoint: ep });
            }
            if st.waiters.len() >= queue_depth {
                return Err(Rejection::QueueFull(queue_depth));
            }
            let first_at_zero = st.endpoints.is_empty() && st.waiters.is_empty();
            let (tx, rx) = oneshot::channel();
            st.waiters.push_back(tx);
            // Dispatch runs on every release and update, so live waiters and free capacity
            // should not coexist here; run it anyway so a missed hand-out cannot strand us.
            let failed = self.dispatch(&mut st);
            (rx, first_at_zero, failed)
        };
        drop(failed);
        if first_at_zero {
            on_demand(&self.key);
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(slot)) => Ok(slot),
            // The sender is only dropped unsent when the throttler itself goes away, which
            // cannot happen while this request holds it; treat it as a timeout anyway.
            Ok(Err(_)) | Err(_) => {
                Err(Rejection::Timeout { at_zero: self.lock().endpoints.is_empty() })
            }
        }
    }

    /// Hands free capacity to the oldest live waiters. Returns the slots whose waiter went
    /// away between the liveness check and the send: the caller drops them after unlocking
    /// (dropping a slot takes the lock).
    fn dispatch(self: &Arc<Self>, st: &mut State) -> Vec<Slot> {
        let mut failed = Vec::new();
        while let Some(front) = st.waiters.front() {
            if front.is_closed() {
                st.waiters.pop_front();
                continue;
            }
            let Some(ep) = st.pick() else { break };
            let Some(tx) = st.waiters.pop_front() else { break };
            ep.in_flight.fetch_add(1, Ordering::Relaxed);
            if let Err(slot) = tx.send(Slot { throttler: self.clone(), endpoint: ep }) {
                failed.push(slot);
            }
        }
        failed
    }

    /// This revision's report since the last one, and the start of a new window.
    pub(crate) fn take_stat(&self, now: Instant) -> Stat {
        let mut st = self.lock();
        st.advance(now);
        let secs = now.saturating_duration_since(st.window_start).as_secs_f64();
        let concurrency = if secs > 0.0 { st.area / secs } else { st.concurrency as f64 };
        let stat = Stat { concurrency, requests: st.requests as f64 };
        st.area = 0.0;
        st.requests = 0;
        st.window_start = now;
        stat
    }

    /// Requests admitted (in flight or held) and requests held, right now.
    pub(crate) fn load(&self) -> (usize, usize) {
        let st = self.lock();
        (st.concurrency, st.waiters.iter().filter(|w| !w.is_closed()).count())
    }

    /// Whether nothing is in flight or held (a throttler no longer routed can then go).
    pub(crate) fn is_idle(&self) -> bool {
        self.lock().concurrency == 0
    }
}

impl State {
    /// The least-loaded endpoint with room under `containerConcurrency` (Knative's activator
    /// balances by load when the concurrency is limited; we do so for unlimited too, which
    /// Knative approximates with a random choice of two). Ties rotate.
    fn pick(&mut self) -> Option<Arc<Endpoint>> {
        let n = self.endpoints.len();
        let cc = self.limits.container_concurrency;
        let mut best: Option<&Arc<Endpoint>> = None;
        let now = Instant::now();
        for i in 0..n {
            let ep = &self.endpoints[(self.next + i) % n];
            let load = ep.load();
            if cc != 0 && load >= cc {
                continue;
            }
            if self.quarantined.get(&ep.addr).is_some_and(|until| *until > now) {
                continue;
            }
            if best.is_none_or(|b| load < b.load()) {
                best = Some(ep);
            }
        }
        let best = best.cloned();
        if best.is_some() {
            self.next = (self.next + 1) % n.max(1);
        }
        best
    }

    fn advance(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last_change).as_secs_f64();
        self.area += dt * self.concurrency as f64;
        self.last_change = self.last_change.max(now);
    }
}

fn limits(rev: &Revision) -> Limits {
    Limits {
        container_concurrency: rev.container_concurrency as usize,
        timeout: rev.timeout,
        response_start_timeout: rev.response_start_timeout,
        idle_timeout: rev.idle_timeout,
        protocol: rev.protocol,
    }
}

/// A request counted in its revision's concurrency; dropped when the response is done.
#[derive(Debug)]
pub(crate) struct Admission {
    throttler: Arc<Throttler>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut st = self.throttler.lock();
        st.advance(Instant::now());
        st.concurrency = st.concurrency.saturating_sub(1);
    }
}

/// One unit of an endpoint's concurrency; released (and handed to the next waiter) on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    throttler: Arc<Throttler>,
    endpoint: Arc<Endpoint>,
}

impl Slot {
    pub(crate) fn addr(&self) -> SocketAddr {
        self.endpoint.addr
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let failed = {
            let mut st = self.throttler.lock();
            self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
            self.throttler.dispatch(&mut st)
        };
        drop(failed);
    }
}
