//! The benchmark message layout, shared by every mode, and the shared clock.
//!
//! ```text
//!  offset  size  field
//!       0     4  sender index        (u32, little endian)
//!       4     8  sequence number     (u64, LE; per sender, from 0)
//!      12     8  send timestamp      (u64, LE; ns of CLOCK_MONOTONIC)
//!      20     4  run tag             (u32, LE; random per run — stray datagrams from
//!                                     another run on the same group are rejected)
//!      24     …  padding up to --size (zeros)
//! ```
//!
//! Timestamps come from `clock_gettime(CLOCK_MONOTONIC)`, which is one clock for the whole
//! machine: processes in different network namespaces (the lab) read the same clock, so
//! one-way latency can be measured across them.

/// Bytes of header in every message; also the minimum `--size`.
pub const HEADER_LEN: usize = 24;

/// Largest message: the largest UDP payload over IPv4.
pub const MAX_SIZE: usize = 65_507;

/// The fields of a benchmark message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Index of the sending member.
    pub sender: u32,
    /// Per-sender sequence number, starting at 0.
    pub seq: u64,
    /// [`now_ns`] when the message was handed to the transport.
    pub send_ns: u64,
    /// Run tag.
    pub tag: u32,
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `buf`.
    ///
    /// # Panics
    /// If `buf` is shorter than [`HEADER_LEN`].
    pub fn write(&self, buf: &mut [u8]) {
        buf[0..4].copy_from_slice(&self.sender.to_le_bytes());
        buf[4..12].copy_from_slice(&self.seq.to_le_bytes());
        buf[12..20].copy_from_slice(&self.send_ns.to_le_bytes());
        buf[20..24].copy_from_slice(&self.tag.to_le_bytes());
    }

    /// Reads a header; `None` if `buf` is too short.
    pub fn read(buf: &[u8]) -> Option<Header> {
        if buf.len() < HEADER_LEN {
            return None;
        }
        let u32_at = |o: usize| u32::from_le_bytes(buf[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(buf[o..o + 8].try_into().unwrap());
        Some(Header {
            sender: u32_at(0),
            seq: u64_at(4),
            send_ns: u64_at(12),
            tag: u32_at(20),
        })
    }

    /// Reads only the sender index (what a transport needs to attribute a datagram).
    pub fn sender_of(buf: &[u8]) -> Option<u32> {
        buf.get(0..4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    }
}

/// Nanoseconds of `CLOCK_MONOTONIC` (shared by all processes on the machine).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until `deadline_ns` on the [`now_ns`] clock (returns at once if it passed).
pub fn sleep_until_ns(deadline_ns: u64) {
    let now = now_ns();
    if deadline_ns > now {
        std::thread::sleep(std::time::Duration::from_nanos(deadline_ns - now));
    }
}

/// A random-ish 32-bit value from the clock, pid and a counter (run tags, seeds).
pub fn random_u32() -> u32 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CTR: AtomicU64 = AtomicU64::new(0);
    let mut x = now_ns()
        ^ (u64::from(std::process::id()) << 32)
        ^ CTR.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (x ^ (x >> 31)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header {
            sender: 7,
            seq: 1 << 40,
            send_ns: 123_456_789_012,
            tag: 0xdead_beef,
        };
        let mut buf = [0u8; 64];
        h.write(&mut buf);
        assert_eq!(Header::read(&buf), Some(h));
        assert_eq!(Header::sender_of(&buf), Some(7));
        assert_eq!(Header::read(&buf[..23]), None);
    }

    #[test]
    fn clock_moves() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a && a > 0);
        assert_ne!(random_u32(), random_u32());
    }
}
