//! The work queue of a controller, with client-go's guarantees: a key is queued at most once,
//! never reconciled by two workers at once (a key added while it is being reconciled is
//! reconciled again afterwards), delayed requeues, and per-key exponential back-off on
//! failures (5 ms doubling to 60 s; conflicts are ordinary failures, as upstream).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::util::SyncError;

const BASE_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_secs(60);
/// How long a stopping controller waits for its running reconciles.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The keys waiting for a reconcile.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    ready: VecDeque<String>,
    queued: HashSet<String>,
    processing: HashSet<String>,
    dirty: HashSet<String>,
    delayed: HashMap<String, Instant>,
    failures: HashMap<String, u32>,
}

impl Queue {
    pub(crate) fn add(&mut self, key: String) {
        if self.processing.contains(&key) {
            self.dirty.insert(key);
        } else if self.queued.insert(key.clone()) {
            self.ready.push_back(key);
        }
    }

    pub(crate) fn extend(&mut self, keys: impl IntoIterator<Item = String>) {
        for key in keys {
            self.add(key);
        }
    }

    /// Adds `key` after `delay` (the earliest of several requested delays wins).
    pub(crate) fn add_after(&mut self, key: String, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let at = Instant::now() + delay;
        let slot = self.delayed.entry(key).or_insert(at);
        if at < *slot {
            *slot = at;
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.delayed.values().min().copied()
    }

    fn promote(&mut self, now: Instant) {
        let due: Vec<String> =
            self.delayed.iter().filter(|(_, at)| **at <= now).map(|(k, _)| k.clone()).collect();
        for key in due {
            self.delayed.remove(&key);
            self.add(key);
        }
    }

    fn pop(&mut self) -> Option<String> {
        let key = self.ready.pop_front()?;
        self.queued.remove(&key);
        self.processing.insert(key.clone());
        Some(key)
    }

    fn done(&mut self, key: &str) {
        self.processing.remove(key);
        if self.dirty.remove(key) {
            self.add(key.to_owned());
        }
    }

    fn backoff(&mut self, key: &str) -> Duration {
        let n = self.failures.entry(key.to_owned()).or_insert(0);
        let delay = BASE_DELAY.saturating_mul(1 << (*n).min(20)).min(MAX_DELAY);
        *n += 1;
        delay
    }
}

/// What a reconcile asks for next: nothing, or another look after a while.
pub(crate) type Outcome = Result<Option<Duration>, SyncError>;

/// A controller's reconcile function.
pub(crate) trait Reconcile: Send + Sync + 'static {
    const NAME: &'static str;
    fn reconcile(self: Arc<Self>, key: String) -> impl Future<Output = Outcome> + Send;
}

/// The queue and the running reconciles of one controller.
pub(crate) struct Workers<R> {
    pub(crate) queue: Queue,
    tasks: JoinSet<(String, Outcome)>,
    ctx: Arc<R>,
    max: usize,
}

impl<R: Reconcile> Workers<R> {
    pub(crate) fn new(ctx: Arc<R>, max: usize) -> Self {
        Self { queue: Queue::default(), tasks: JoinSet::new(), ctx, max }
    }

    /// Starts reconciles for ready keys, up to the worker limit.
    pub(crate) fn start(&mut self) {
        while self.tasks.len() < self.max {
            let Some(key) = self.queue.pop() else { break };
            let ctx = self.ctx.clone();
            self.tasks.spawn(async move {
                let out = ctx.reconcile(key.clone()).await;
                (key, out)
            });
        }
    }

    /// Lets the running reconciles finish (at most [`DRAIN_TIMEOUT`]), then aborts what is
    /// left. A stopped controller has then no create or delete in flight that a successor's
    /// first list could miss (which would make it create a pod twice).
    pub(crate) async fn drain(&mut self) {
        let running = self.tasks.len();
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                controller = R::NAME,
                running,
                "reconciles still running at shutdown, aborted"
            );
            self.tasks.abort_all();
        }
    }

    /// Waits for a reconcile to finish or a delayed key to come due, and updates the queue.
    /// Pending forever when there is nothing to wait for.
    pub(crate) async fn tick(&mut self) {
        let deadline = self.queue.next_deadline();
        let timer = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(done) = self.tasks.join_next() => match done {
                Ok((key, out)) => self.finish(key, out),
                Err(error) => tracing::error!(controller = R::NAME, %error, "reconcile task failed"),
            },
            () = timer => self.queue.promote(Instant::now()),
        }
    }

    fn finish(&mut self, key: String, out: Outcome) {
        self.queue.done(&key);
        match out {
            Ok(after) => {
                self.queue.failures.remove(&key);
                if let Some(after) = after {
                    self.queue.add_after(key, after);
                }
            }
            Err(error) => {
                let delay = self.queue.backoff(&key);
                if error.is_conflict() {
                    tracing::debug!(controller = R::NAME, %key, ?delay, "conflict, requeued");
                } else {
                    tracing::warn!(
                        controller = R::NAME,
                        %key,
                        ?delay,
                        error = %error,
                        source = ?std::error::Error::source(&error).map(ToString::to_string),
                        "reconcile failed, requeued"
                    );
                }
                self.queue.add_after(key, delay);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_added_while_processing_is_processed_again_once() {
        let mut q = Queue::default();
        q.add("a".into());
        q.add("a".into());
        assert_eq!(q.pop().as_deref(), Some("a"));
        assert_eq!(q.pop(), None);
        q.add("a".into());
        q.add("a".into());
        assert_eq!(q.pop(), None, "not twice at once");
        q.done("a");
        assert_eq!(q.pop().as_deref(), Some("a"));
        q.done("a");
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let mut q = Queue::default();
        let d: Vec<_> = (0..3).map(|_| q.backoff("k")).collect();
        assert_eq!(d, [BASE_DELAY, BASE_DELAY * 2, BASE_DELAY * 4]);
        for _ in 0..30 {
            q.backoff("k");
        }
        assert_eq!(q.backoff("k"), MAX_DELAY);
    }
}
