//! Why a received datagram (or one frame in it) was dropped, and per-reason counters.

use std::fmt;

/// A reason for dropping received input. Every drop is counted under exactly one reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than a header plus the smallest trailer.
    TooShort = 0,
    /// The magic number is not vsync's.
    BadMagic,
    /// A protocol version this build does not speak.
    BadVersion,
    /// The header's body length disagrees with the datagram length.
    BadLength,
    /// The xxh3 checksum does not match (corruption).
    BadChecksum,
    /// Not authenticated although a key is configured (or authenticated with no key here).
    Unauthenticated,
    /// The AES-GCM tag did not verify (forged, corrupted or wrong key).
    AuthFailed,
    /// An authenticated packet number seen before or older than the replay window.
    Replayed,
    /// A group this endpoint is not in.
    UnknownGroup,
    /// A sender that is not a member of the group's current view.
    UnknownSender,
    /// A view id other than the group's current one.
    WrongView,
    /// A frame whose kind, length or fields are invalid.
    MalformedFrame,
    /// A fragmented message announcing a total length above the configured maximum.
    Oversized,
    /// A datagram the endpoint itself sent (multicast loopback).
    OwnPacket,
    /// A data frame outside the receive window (sender ignored flow control, or stale).
    OutOfWindow,
    /// Raw (unreliable) traffic dropped because the delivery queue was full.
    RawOverflow,
    /// A group data frame above a wedged stream's limit (view change in progress), or a relay
    /// frame arriving when the group is not flushing.
    Wedged,
    /// A data frame that would have become contiguous but the receiver's retention ring (the
    /// frames it keeps until all-stable, to relay them in a flush) is full; it is treated as
    /// lost and recovered by NAK later.
    RetentionFull,
}

impl DropReason {
    /// Number of reasons.
    pub const COUNT: usize = 18;
    /// All reasons, in counter order.
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::TooShort,
        DropReason::BadMagic,
        DropReason::BadVersion,
        DropReason::BadLength,
        DropReason::BadChecksum,
        DropReason::Unauthenticated,
        DropReason::AuthFailed,
        DropReason::Replayed,
        DropReason::UnknownGroup,
        DropReason::UnknownSender,
        DropReason::WrongView,
        DropReason::MalformedFrame,
        DropReason::Oversized,
        DropReason::OwnPacket,
        DropReason::OutOfWindow,
        DropReason::RawOverflow,
        DropReason::Wedged,
        DropReason::RetentionFull,
    ];

    /// A short snake_case name for reports.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::BadMagic => "bad_magic",
            DropReason::BadVersion => "bad_version",
            DropReason::BadLength => "bad_length",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::Unauthenticated => "unauthenticated",
            DropReason::AuthFailed => "auth_failed",
            DropReason::Replayed => "replayed",
            DropReason::UnknownGroup => "unknown_group",
            DropReason::UnknownSender => "unknown_sender",
            DropReason::WrongView => "wrong_view",
            DropReason::MalformedFrame => "malformed_frame",
            DropReason::Oversized => "oversized",
            DropReason::OwnPacket => "own_packet",
            DropReason::OutOfWindow => "out_of_window",
            DropReason::RawOverflow => "raw_overflow",
            DropReason::Wedged => "wedged",
            DropReason::RetentionFull => "retention_full",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One counter per [`DropReason`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    counts: [u64; DropReason::COUNT],
}

impl DropCounters {
    /// Counts one drop.
    pub fn count(&mut self, reason: DropReason) {
        self.counts[reason as usize] += 1;
    }
    /// How many drops for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason as usize]
    }
    /// Total drops over all reasons.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
    /// Non-zero counters as (name, count) pairs.
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|r| (r.name(), self.get(*r)))
            .filter(|(_, n)| *n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_discriminant_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let mut c = DropCounters::default();
        c.count(DropReason::Replayed);
        c.count(DropReason::Replayed);
        assert_eq!(c.get(DropReason::Replayed), 2);
        assert_eq!(c.total(), 2);
        assert_eq!(c.nonzero().collect::<Vec<_>>(), vec![("replayed", 2)]);
    }
}
