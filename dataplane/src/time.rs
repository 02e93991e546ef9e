//! Protocol time: [`Timestamp`], nanoseconds since a driver-chosen epoch.
//!
//! The protocol core never reads a clock. Drivers (the engine, the simulator) pass the current
//! [`Timestamp`] into every call, which is what makes simulation deterministic.

use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in protocol time: nanoseconds since the driver's epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The driver's epoch.
    pub const ZERO: Timestamp = Timestamp(0);
    /// A time later than any the protocol will reach; used as "no deadline".
    pub const NEVER: Timestamp = Timestamp(u64::MAX);

    /// Builds a timestamp from nanoseconds since the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed since `earlier`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, rhs: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

impl Sub<Timestamp> for Timestamp {
    type Output = Duration;
    fn sub(self, rhs: Timestamp) -> Duration {
        self.saturating_since(rhs)
    }
}

/// A monotonic wall clock for real drivers: maps `std::time::Instant` onto [`Timestamp`].
#[derive(Clone, Copy, Debug)]
pub struct MonotonicClock {
    epoch: std::time::Instant,
}

impl MonotonicClock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        MonotonicClock {
            epoch: std::time::Instant::now(),
        }
    }

    /// The current time on this clock.
    pub fn now(&self) -> Timestamp {
        Timestamp(u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// Converts a protocol deadline back into a `std::time::Instant`.
    pub fn instant_of(&self, t: Timestamp) -> std::time::Instant {
        self.epoch + Duration::from_nanos(t.0)
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}
