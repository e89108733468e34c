//! How many ready pod sandboxes to keep (`sandboxes`): a pure function of the recent pod start
//! rate, table-tested.
//!
//! No upstream has this (kubelet makes every sandbox on the start path); the shape follows the
//! warm pools of serverless runtimes (ASK/ECI's "pre-warmed" ENIs, Firecracker snapshot pools):
//! keep about as many as will be asked for while one more is being made, so a start finds one
//! ready as long as the refill keeps up, and none when nothing starts.

use std::time::Duration;

/// The pool's bounds (`kinetic node --ready-sandboxes`, `--ready-sandboxes-min`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadySandboxes {
    /// Kept even when idle (0 or 1 are the sensible values).
    pub min: usize,
    /// Never more than this; 0 turns ready sandboxes off.
    pub max: usize,
    /// How far back starts count for the rate; after this long without a start the pool is
    /// trimmed to `min`.
    pub window: Duration,
}

impl Default for ReadySandboxes {
    /// Off: every sandbox is made on its pod's start path, as before.
    fn default() -> Self {
        Self { min: 0, max: 0, window: Duration::from_secs(10) }
    }
}

/// Headroom over the mean: starts come in clumps (a burst's creates land together) and the
/// refill runs on a loaded machine, where making one takes several times its own CPU time.
pub const HEADROOM: f64 = 4.0;

/// The number of ready sandboxes to keep: the starts expected while one sandbox is made
/// (`starts` in the last `window` × `make_time` / `window`) times [`HEADROOM`], rounded up, at
/// least 1 while anything started in the window, bounded by `min` and `max`.
pub fn target(starts: usize, make_time: Duration, b: &ReadySandboxes) -> usize {
    let want = if starts == 0 || b.window.is_zero() {
        0
    } else {
        let rate = starts as f64 / b.window.as_secs_f64();
        let n = (rate * make_time.as_secs_f64() * HEADROOM).ceil();
        // `n` is finite and non-negative here; the cast saturates.
        (n as usize).max(1)
    };
    want.max(b.min).min(b.max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_follows_the_start_rate_within_bounds() {
        let ms = Duration::from_millis;
        let b = |min, max| ReadySandboxes { min, max, window: Duration::from_secs(10) };
        // (starts in 10 s, time to make one, min, max, want)
        let table: &[(usize, Duration, usize, usize, usize)] = &[
            (0, ms(20), 0, 8, 0),     // idle: trimmed to min
            (0, ms(20), 1, 8, 1),     // idle, min 1
            (1, ms(20), 0, 8, 1),     // anything started: at least one
            (100, ms(20), 0, 8, 1),   // 10/s × 20 ms × 4 = 0.8
            (200, ms(20), 0, 8, 2),   // 20/s × 20 ms × 4 = 1.6
            (500, ms(50), 0, 8, 8),   // 50/s × 50 ms × 4 = 10, capped
            (500, ms(50), 0, 16, 10), // uncapped
            (500, ms(50), 0, 0, 0),   // max 0: off whatever the rate
            (5, ms(20), 3, 8, 3),     // min above the rate's figure
            (10, Duration::ZERO, 0, 8, 1),
        ];
        for &(starts, make, min, max, want) in table {
            assert_eq!(target(starts, make, &b(min, max)), want, "{starts} starts, {make:?}");
        }
    }

    #[test]
    fn a_zero_window_keeps_only_the_minimum() {
        let b = ReadySandboxes { min: 1, max: 4, window: Duration::ZERO };
        assert_eq!(target(1000, Duration::from_millis(20), &b), 1);
    }
}
