//! Time as a value, never read from the OS by the core.
//!
//! Every state machine in the core takes `now` as an argument, so tests can
//! drive aging and timeouts with explicit times instead of sleeping. The
//! daemon converts the monotonic clock into this type once per batch.

use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time, in microseconds since an arbitrary epoch (the daemon's
/// start). Cheap to copy and compare; deliberately not `std::time::Instant`,
/// which cannot be constructed at a chosen value in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant {
    micros: u64,
}

impl Instant {
    /// The epoch.
    pub const ZERO: Instant = Instant { micros: 0 };

    /// An instant `micros` microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Instant { micros }
    }

    /// An instant `millis` milliseconds after the epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Instant {
            micros: millis * 1000,
        }
    }

    /// An instant `secs` seconds after the epoch.
    pub const fn from_secs(secs: u64) -> Self {
        Instant {
            micros: secs * 1_000_000,
        }
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.micros
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.micros.saturating_sub(earlier.micros))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        let add = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Instant {
            micros: self.micros.saturating_add(add),
        }
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_since(earlier)
    }
}

/// Converts the OS monotonic clock into core [`Instant`]s relative to the
/// moment the clock was created. Lives here so the daemon and tests share one
/// conversion; the core itself never calls it.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    start: std::time::Instant,
}

impl MonotonicClock {
    /// Starts the epoch now.
    pub fn new() -> Self {
        MonotonicClock {
            start: std::time::Instant::now(),
        }
    }

    /// The current time as a core instant.
    pub fn now(&self) -> Instant {
        let micros = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        Instant::from_micros(micros)
    }

    /// How long from now until `deadline` (zero if it has passed).
    pub fn until(&self, deadline: Instant) -> Duration {
        deadline.saturating_since(self.now())
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_secs(5);
        assert_eq!(t + Duration::from_millis(1500), Instant::from_millis(6500));
        assert_eq!(Instant::from_secs(1) - t, Duration::ZERO);
        assert_eq!(t - Instant::from_secs(1), Duration::from_secs(4));
        assert_eq!(t + Duration::MAX, Instant::from_micros(u64::MAX));
    }
}
