//! Compact binary encoding primitives shared by the oracle's commands and snapshots:
//! LEB128 varints, length-prefixed byte strings and bounded lists.
//!
//! The [`Reader`] never panics and never allocates more than the input could describe: every
//! length or count is checked against the bytes that remain before anything is reserved, so a
//! hostile "one billion items" prefix in a ten-byte buffer is an error, not an allocation.

use std::fmt;

/// Why bytes could not be decoded. Says where and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended at byte `at` while `what` was being read.
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Offset where the input ended.
        at: usize,
    },
    /// A tag byte had no meaning for `what`.
    BadTag {
        /// What was being read.
        what: &'static str,
        /// The tag found.
        tag: u8,
    },
    /// A length or count exceeded its limit (or the bytes that remain).
    TooLong {
        /// What was being read.
        what: &'static str,
        /// The declared length or count.
        len: u64,
        /// The limit in force.
        max: u64,
    },
    /// A varint was longer than 10 bytes or overflowed its type.
    BadVarint {
        /// What was being read.
        what: &'static str,
    },
    /// A string was not UTF-8.
    BadUtf8 {
        /// What was being read.
        what: &'static str,
    },
    /// The value decoded but is not valid (e.g. an unknown format version).
    Invalid {
        /// What is wrong.
        what: &'static str,
    },
    /// Bytes remained after a complete value.
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { what, at } => {
                write!(f, "input ends at byte {at} inside {what}")
            }
            DecodeError::BadTag { what, tag } => write!(f, "unknown tag {tag} for {what}"),
            DecodeError::TooLong { what, len, max } => {
                write!(f, "{what} declares length {len}, limit {max}")
            }
            DecodeError::BadVarint { what } => write!(f, "malformed varint in {what}"),
            DecodeError::BadUtf8 { what } => write!(f, "{what} is not UTF-8"),
            DecodeError::Invalid { what } => write!(f, "invalid {what}"),
            DecodeError::TrailingBytes { count } => write!(f, "{count} trailing bytes"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Appends encoded values to a byte vector.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Writer { buf: Vec::new() }
    }

    /// The bytes written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// One raw byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// A boolean as one byte (0 or 1).
    pub fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    /// An unsigned LEB128 varint.
    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    /// A fixed 8-byte little-endian integer (hashes, ids whose bits are uniformly random).
    pub fn u64_fixed(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Raw bytes without a length prefix.
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// A varint length followed by the bytes.
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.varint(bytes.len() as u64);
        self.buf.extend_from_slice(bytes);
    }

    /// A UTF-8 string, length-prefixed.
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
}

/// Reads encoded values from a byte slice; every method returns an error rather than panic.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Succeeds only if every byte has been read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { count }),
        }
    }

    /// One raw byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(DecodeError::Truncated { what, at: self.pos })?;
        self.pos += 1;
        Ok(b)
    }

    /// A boolean byte; anything but 0 or 1 is an error.
    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::BadTag { what, tag }),
        }
    }

    /// An unsigned LEB128 varint of at most 10 bytes that fits in 64 bits.
    pub fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10u32 {
            let b = self.u8(what)?;
            let part = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                return Err(DecodeError::BadVarint { what });
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::BadVarint { what })
    }

    /// A varint that must fit in 32 bits.
    pub fn varint_u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        u32::try_from(self.varint(what)?).map_err(|_| DecodeError::BadVarint { what })
    }

    /// A fixed 8-byte little-endian integer.
    pub fn u64_fixed(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let bytes = self.raw(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(a))
    }

    /// `len` raw bytes.
    pub fn raw(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if len > self.remaining() {
            return Err(DecodeError::Truncated {
                what,
                at: self.buf.len(),
            });
        }
        let s = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(s)
    }

    /// A length-prefixed byte string of at most `max` bytes.
    pub fn bytes(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.varint(what)?;
        if len > max as u64 {
            return Err(DecodeError::TooLong {
                what,
                len,
                max: max as u64,
            });
        }
        self.raw(len as usize, what)
    }

    /// A length-prefixed UTF-8 string of at most `max` bytes.
    pub fn string(&mut self, max: usize, what: &'static str) -> Result<String, DecodeError> {
        let b = self.bytes(max, what)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::BadUtf8 { what })
    }

    /// A list count of at most `max` items, each at least `min_item_bytes` long: the count is
    /// also checked against the bytes that remain, so a count can never cause a large
    /// allocation the input cannot back.
    pub fn count(
        &mut self,
        max: usize,
        min_item_bytes: usize,
        what: &'static str,
    ) -> Result<usize, DecodeError> {
        let n = self.varint(what)?;
        let by_bytes = (self.remaining() / min_item_bytes.max(1)) as u64;
        let limit = (max as u64).min(by_bytes);
        if n > limit {
            return Err(DecodeError::TooLong {
                what,
                len: n,
                max: limit,
            });
        }
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varint_round_trip_edges() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut w = Writer::new();
            w.varint(v);
            let b = w.into_bytes();
            let mut r = Reader::new(&b);
            assert_eq!(r.varint("v").unwrap(), v);
            r.finish().unwrap();
        }
    }

    #[test]
    fn overlong_varint_is_rejected() {
        let b = [0xffu8; 11];
        assert!(matches!(
            Reader::new(&b).varint("v"),
            Err(DecodeError::BadVarint { .. })
        ));
        // 10th byte may carry only the top bit of a u64.
        let mut b = [0xffu8; 10];
        b[9] = 0x02;
        assert!(Reader::new(&b).varint("v").is_err());
    }

    #[test]
    fn count_is_bounded_by_remaining_bytes() {
        let mut w = Writer::new();
        w.varint(1_000_000_000);
        w.raw(&[0; 4]);
        let b = w.into_bytes();
        let err = Reader::new(&b).count(usize::MAX, 1, "list").unwrap_err();
        assert!(matches!(err, DecodeError::TooLong { max: 4, .. }), "{err}");
    }

    proptest! {
        #[test]
        fn reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&bytes);
            let _ = r.varint("a");
            let _ = r.string(16, "b");
            let _ = r.count(8, 2, "c");
            let _ = r.u64_fixed("d");
            let _ = r.bool("e");
        }

        #[test]
        fn varint_round_trips(v in any::<u64>()) {
            let mut w = Writer::new();
            w.varint(v);
            let b = w.into_bytes();
            prop_assert!(b.len() <= 10);
            prop_assert_eq!(Reader::new(&b).varint("v").unwrap(), v);
        }
    }
}
