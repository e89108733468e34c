//! Predictive autoscaling's decisions as pure functions (no I/O, no clock, no dependencies),
//! beside `kinetic-autoscale`'s reactive ones (issue 13, part 3). A controller keeps a metric's
//! history at a fixed step and asks, each tick:
//!
//! ```text
//! samples (Option<f64> per step, None = missing)
//!   └─ clean::clean        gaps interpolated, isolated outliers replaced (Hampel filter)
//!        └─ period::detect  periods scored by seasonal strength after a one-period moving-
//!                           average detrend (robust to level shifts and slow trends);
//!                           several periods found one after another on the residual
//!             └─ forecast::forecast  a high quantile of the load over [now, now + lead time],
//!                           from the same phase of past cycles re-levelled to the current
//!                           level; `None` (fall back to reactive) without a period or with
//!                           fewer than two cycles of history
//! ```
//!
//! [`Explanation`] carries what the status shows: the periods found (with their strength), the
//! forecast, the lead time and why a forecast was not made.
//!
//! Where this follows published work: the seasonal strength is STL's `F_s` (Wang, Smith &
//! Hyndman 2006; Hyndman's *fpp3* §4.3), the outlier filter Hampel's (median ± k·MAD), the
//! "largest forecast within the window" Crane's EHPA metric adapter; the candidate periods
//! include Crane's fixed daily and weekly ones plus the autocorrelation's peaks (AHPA's
//! RobustPeriod finds several periods; this is a simpler stand-in).

pub mod clean;
pub mod decide;
pub mod forecast;
pub mod nowcast;
pub mod percentile;
pub mod period;

pub use decide::{Decision, Input, decide, decide_percentile, startup_p95};
pub use forecast::{Explanation, Forecast, Model, NoModel, fit, forecast, replicas};
pub use nowcast::{Margin, Nowcast};
pub use period::{Period, detect};

#[cfg(test)]
mod tests;
