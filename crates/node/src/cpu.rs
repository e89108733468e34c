//! CPU accounting of pod starts (issue 14, part 4): what the agent's own threads spend on one
//! task, measured around each poll of its future.
//!
//! Why per poll: the agent is one multi-threaded process running many pods' tasks at once, so
//! its process-wide CPU cannot be split by pod; a task's polls, though, run on one thread each,
//! and the thread's CPU clock read before and after a poll is that poll's cost. The figure
//! covers the task's own code only: work it hands to other tasks (the API client's connection,
//! `spawn_blocking`) or the kernel does on its behalf elsewhere is not in it. Child processes
//! are measured where they run (`cni::run_measured`, the shim's report).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// A future that adds up the calling threads' CPU time spent polling `inner`.
pub(crate) struct Metered<F> {
    inner: Pin<Box<F>>,
    spent: Duration,
}

/// Runs `f`, returning its output with the CPU time the agent's threads spent polling it.
pub(crate) fn metered<F: Future>(f: F) -> Metered<F> {
    Metered { inner: Box::pin(f), spent: Duration::ZERO }
}

impl<F: Future> Future for Metered<F> {
    type Output = (F::Output, Duration);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let t0 = kinetic_sys::thread_cpu();
        let r = self.inner.as_mut().poll(cx);
        let spent = kinetic_sys::thread_cpu().saturating_sub(t0);
        self.spent += spent;
        r.map(|v| (v, self.spent))
    }
}

/// Whole microseconds, saturating.
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_the_polls_work_not_the_waiting() {
        let (n, spent) = metered(async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let mut x = 0u64;
            for i in 0..3_000_000u64 {
                x = std::hint::black_box(x.wrapping_add(i));
            }
            x
        })
        .await;
        assert!(n > 0);
        // Busy work counts; the 30 ms asleep do not.
        assert!(spent > Duration::from_micros(200), "{spent:?}");
        assert!(spent < Duration::from_millis(30) + Duration::from_millis(500), "{spent:?}");
    }
}
