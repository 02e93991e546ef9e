//! The byte level: [`Writer`] (an append-only buffer), [`Reader`] (a bounds-checked cursor
//! with [`Limits`] against hostile input), LEB128 varints, and [`CodeSink`], the target of
//! type codes.
//!
//! Unsigned integers wider than a byte are LEB128 varints in their shortest form (a decoder
//! rejects overlong and overflowing encodings, so every value has exactly one encoding);
//! signed integers are zigzag-mapped first.

use super::error::MarshalError;

/// Decoding limits. The defaults suit untrusted network input.
///
/// ```
/// use vsync::marshal::{Encode, Limits, Marshal, MarshalError, Reader};
///
/// let bytes = vec![1u8; 100].to_bytes();
/// let mut r = Reader::with_limits(&bytes, Limits { max_len: 10, ..Limits::default() });
/// assert!(matches!(Vec::<u8>::decode(&mut r), Err(MarshalError::LengthLimit { .. })));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest declared length of a string, byte vector or collection (elements).
    pub max_len: usize,
    /// Deepest nesting of user types (recursive types nest by data, not by type).
    pub max_depth: u32,
    /// Most collection elements that may decode from zero bytes (unit-like values) in one
    /// input; every other element consumes at least one input byte.
    pub max_empty_elements: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_len: 1 << 28,
            max_depth: 100,
            max_empty_elements: 1 << 16,
        }
    }
}

/// An append-only encoding buffer.
///
/// ```
/// use vsync::marshal::{Encode, Marshal, Writer};
///
/// let mut w = Writer::new();
/// 300u32.encode(&mut w);
/// "hi".encode(&mut w);
/// assert_eq!(w.as_bytes(), &[0xac, 0x02, 2, b'h', b'i']);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    ///
    /// ```
    /// use vsync::marshal::Writer;
    /// let w = Writer::new();
    /// assert!(w.is_empty());
    /// ```
    pub fn new() -> Self {
        Writer { buf: Vec::new() }
    }

    /// An empty writer with room for `n` bytes.
    ///
    /// ```
    /// use vsync::marshal::Writer;
    /// let mut w = Writer::with_capacity(64);
    /// w.put_bytes(&[0; 64]);
    /// assert_eq!(w.len(), 64);
    /// ```
    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }

    /// A writer that appends to `buf` (reuse a buffer across messages).
    ///
    /// ```
    /// use vsync::marshal::Writer;
    /// let mut w = Writer::from_vec(b"hdr".to_vec());
    /// w.put_u8(1);
    /// assert_eq!(w.into_vec(), b"hdr\x01");
    /// ```
    pub fn from_vec(buf: Vec<u8>) -> Self {
        Writer { buf }
    }

    /// Appends one byte.
    ///
    /// ```
    /// use vsync::marshal::Writer;
    /// let mut w = Writer::new();
    /// w.put_u8(0xff);
    /// assert_eq!(w.as_bytes(), &[0xff]);
    /// ```
    #[inline]
    pub fn put_u8(&mut self, b: u8) {
        self.buf.push(b);
    }

    /// Appends raw bytes.
    ///
    /// ```
    /// use vsync::marshal::Writer;
    /// let mut w = Writer::new();
    /// w.put_bytes(b"raw");
    /// assert_eq!(w.as_bytes(), b"raw");
    /// ```
    #[inline]
    pub fn put_bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// Appends a LEB128 varint.
    ///
    /// ```
    /// use vsync::marshal::Writer;
    /// let mut w = Writer::new();
    /// w.put_varint(300);
    /// assert_eq!(w.as_bytes(), &[0xac, 0x02]);
    /// ```
    #[inline]
    pub fn put_varint(&mut self, v: u64) {
        put_varint(&mut self.buf, v);
    }

    /// Appends a 128-bit LEB128 varint.
    ///
    /// ```
    /// use vsync::marshal::{Reader, Writer};
    /// let mut w = Writer::new();
    /// w.put_varint128(u128::MAX);
    /// assert_eq!(Reader::new(w.as_bytes()).get_varint128().unwrap(), u128::MAX);
    /// ```
    pub fn put_varint128(&mut self, mut v: u128) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    /// Appends a length (as a varint).
    ///
    /// ```
    /// use vsync::marshal::Writer;
    /// let mut w = Writer::new();
    /// w.put_len(3);
    /// assert_eq!(w.as_bytes(), &[3]);
    /// ```
    #[inline]
    pub fn put_len(&mut self, n: usize) {
        self.put_varint(n as u64);
    }

    /// Bytes written so far.
    ///
    /// ```
    /// use vsync::marshal::Writer;
    /// let mut w = Writer::new();
    /// w.put_varint(1 << 14);
    /// assert_eq!(w.len(), 3);
    /// ```
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True if nothing was written.
    ///
    /// ```
    /// use vsync::marshal::Writer;
    /// let mut w = Writer::new();
    /// assert!(w.is_empty());
    /// w.put_u8(0);
    /// assert!(!w.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes written so far.
    ///
    /// ```
    /// use vsync::marshal::Writer;
    /// let mut w = Writer::new();
    /// w.put_bytes(&[1, 2]);
    /// assert_eq!(w.as_bytes(), &[1, 2]);
    /// ```
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Takes the buffer.
    ///
    /// ```
    /// use vsync::marshal::Writer;
    /// let mut w = Writer::new();
    /// w.put_u8(9);
    /// let bytes: Vec<u8> = w.into_vec();
    /// assert_eq!(bytes, [9]);
    /// ```
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }

    /// Forgets everything written, keeping the allocation.
    ///
    /// ```
    /// use vsync::marshal::Writer;
    /// let mut w = Writer::new();
    /// w.put_bytes(b"first message");
    /// w.clear();
    /// assert!(w.is_empty());
    /// ```
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    pub(crate) fn vec_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

#[inline]
pub(crate) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    if v < 0x80 {
        buf.push(v as u8);
        return;
    }
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// A bounds-checked decoding cursor over a byte slice.
///
/// ```
/// use vsync::marshal::{Marshal, Reader};
///
/// let mut r = Reader::new(&[0xac, 0x02, 2, b'h', b'i']);
/// assert_eq!(u32::decode(&mut r).unwrap(), 300);
/// assert_eq!(String::decode(&mut r).unwrap(), "hi");
/// r.finish().unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    depth: u32,
    empty_elements: u64,
    limits: Limits,
}

impl<'a> Reader<'a> {
    /// A reader over `buf` with default [`Limits`].
    ///
    /// ```
    /// use vsync::marshal::Reader;
    /// let mut r = Reader::new(&[7]);
    /// assert_eq!(r.get_u8().unwrap(), 7);
    /// ```
    pub fn new(buf: &'a [u8]) -> Self {
        Self::with_limits(buf, Limits::default())
    }

    /// A reader over `buf` with the given limits.
    ///
    /// ```
    /// use vsync::marshal::{Limits, MarshalError, Reader};
    /// let mut r = Reader::with_limits(&[200, 1], Limits { max_len: 100, ..Limits::default() });
    /// assert!(matches!(r.get_len(), Err(MarshalError::LengthLimit { .. })));
    /// ```
    pub fn with_limits(buf: &'a [u8], limits: Limits) -> Self {
        Reader {
            buf,
            pos: 0,
            depth: 0,
            empty_elements: 0,
            limits,
        }
    }

    /// The limits in force.
    ///
    /// ```
    /// use vsync::marshal::{Limits, Reader};
    /// assert_eq!(Reader::new(&[]).limits(), &Limits::default());
    /// ```
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Bytes not yet consumed.
    ///
    /// ```
    /// use vsync::marshal::Reader;
    /// let mut r = Reader::new(&[1, 2, 3]);
    /// r.get_u8().unwrap();
    /// assert_eq!(r.remaining(), 2);
    /// ```
    #[inline]
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Bytes consumed so far.
    ///
    /// ```
    /// use vsync::marshal::Reader;
    /// let mut r = Reader::new(&[1, 2, 3]);
    /// r.take(2).unwrap();
    /// assert_eq!(r.position(), 2);
    /// ```
    #[inline]
    pub fn position(&self) -> usize {
        self.pos
    }

    /// True when every byte was consumed.
    ///
    /// ```
    /// use vsync::marshal::Reader;
    /// let mut r = Reader::new(&[1]);
    /// r.get_u8().unwrap();
    /// assert!(r.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The unconsumed bytes.
    ///
    /// ```
    /// use vsync::marshal::Reader;
    /// let mut r = Reader::new(b"\x01tail");
    /// r.get_u8().unwrap();
    /// assert_eq!(r.rest(), b"tail");
    /// ```
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Succeeds if every byte was consumed.
    ///
    /// ```
    /// use vsync::marshal::{MarshalError, Reader};
    /// let mut r = Reader::new(&[1, 2]);
    /// r.get_u8().unwrap();
    /// assert_eq!(r.finish(), Err(MarshalError::TrailingBytes(1)));
    /// ```
    pub fn finish(&self) -> Result<(), MarshalError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(MarshalError::TrailingBytes(n)),
        }
    }

    /// Reads one byte.
    ///
    /// ```
    /// use vsync::marshal::Reader;
    /// let mut r = Reader::new(&[5]);
    /// assert_eq!(r.get_u8().unwrap(), 5);
    /// assert!(r.get_u8().is_err()); // truncated
    /// ```
    #[inline]
    pub fn get_u8(&mut self) -> Result<u8, MarshalError> {
        match self.buf.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(self.truncated(1)),
        }
    }

    /// Reads `n` raw bytes (never allocates).
    ///
    /// ```
    /// use vsync::marshal::Reader;
    /// let mut r = Reader::new(b"abcd");
    /// assert_eq!(r.take(3).unwrap(), b"abc");
    /// assert!(r.take(2).is_err());
    /// ```
    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], MarshalError> {
        if n > self.remaining() {
            return Err(self.truncated(n));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Reads exactly `N` raw bytes.
    ///
    /// ```
    /// use vsync::marshal::Reader;
    /// let mut r = Reader::new(&[1, 0, 0, 0]);
    /// assert_eq!(u32::from_le_bytes(r.take_array().unwrap()), 1);
    /// ```
    #[inline]
    pub fn take_array<const N: usize>(&mut self) -> Result<[u8; N], MarshalError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// Reads a LEB128 varint of at most 64 bits in its shortest form.
    ///
    /// ```
    /// use vsync::marshal::Reader;
    /// assert_eq!(Reader::new(&[0xac, 0x02]).get_varint().unwrap(), 300);
    /// assert!(Reader::new(&[0x80, 0x00]).get_varint().is_err()); // not the shortest form
    /// ```
    #[inline]
    pub fn get_varint(&mut self) -> Result<u64, MarshalError> {
        // Fast path: one byte.
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(b as u64);
            }
        }
        let mut v: u64 = 0;
        for i in 0..10u32 {
            let b = self.get_u8()?;
            let bits = (b & 0x7f) as u64;
            if i == 9 && b > 0x01 {
                return Err(MarshalError::BadVarint);
            }
            v |= bits << (7 * i);
            if b < 0x80 {
                if b == 0 && i > 0 {
                    return Err(MarshalError::BadVarint);
                }
                return Ok(v);
            }
        }
        Err(MarshalError::BadVarint)
    }

    /// Reads a LEB128 varint of at most 128 bits in its shortest form.
    ///
    /// ```
    /// use vsync::marshal::Reader;
    /// assert_eq!(Reader::new(&[0x7f]).get_varint128().unwrap(), 127);
    /// ```
    pub fn get_varint128(&mut self) -> Result<u128, MarshalError> {
        let mut v: u128 = 0;
        for i in 0..19u32 {
            let b = self.get_u8()?;
            if i == 18 && b > 0x03 {
                return Err(MarshalError::BadVarint);
            }
            v |= ((b & 0x7f) as u128) << (7 * i);
            if b < 0x80 {
                if b == 0 && i > 0 {
                    return Err(MarshalError::BadVarint);
                }
                return Ok(v);
            }
        }
        Err(MarshalError::BadVarint)
    }

    /// Reads a length and checks it against [`Limits::max_len`].
    ///
    /// ```
    /// use vsync::marshal::Reader;
    /// assert_eq!(Reader::new(&[3]).get_len().unwrap(), 3);
    /// ```
    #[inline]
    pub fn get_len(&mut self) -> Result<usize, MarshalError> {
        let n = self.get_varint()?;
        if n > self.limits.max_len as u64 {
            return Err(MarshalError::LengthLimit {
                len: n,
                limit: self.limits.max_len,
            });
        }
        Ok(n as usize)
    }

    /// Runs `f` one nesting level deeper, failing with [`MarshalError::DepthLimit`] beyond
    /// [`Limits::max_depth`]. Decoders of (possibly recursive) user types wrap their body in it.
    ///
    /// ```
    /// use vsync::marshal::{Limits, MarshalError, Reader};
    /// let mut r = Reader::with_limits(&[], Limits { max_depth: 1, ..Limits::default() });
    /// let inner = r.nested(|r| r.nested(|_| Ok(())));
    /// assert_eq!(inner, Err(MarshalError::DepthLimit(1)));
    /// ```
    pub fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, MarshalError>,
    ) -> Result<T, MarshalError> {
        if self.depth >= self.limits.max_depth {
            return Err(MarshalError::DepthLimit(self.limits.max_depth));
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    /// Records that a collection element decoded from zero bytes; fails beyond
    /// [`Limits::max_empty_elements`]. This bounds the work of a hostile length claim over
    /// unit-like elements (every other element consumes input).
    ///
    /// ```
    /// use vsync::marshal::{Limits, MarshalError, Reader};
    /// let mut r = Reader::with_limits(&[], Limits { max_empty_elements: 1, ..Limits::default() });
    /// r.charge_empty_element().unwrap();
    /// assert_eq!(r.charge_empty_element(), Err(MarshalError::WorkLimit(1)));
    /// ```
    #[inline]
    pub fn charge_empty_element(&mut self) -> Result<(), MarshalError> {
        self.empty_elements += 1;
        if self.empty_elements > self.limits.max_empty_elements {
            return Err(MarshalError::WorkLimit(self.limits.max_empty_elements));
        }
        Ok(())
    }

    /// A safe initial capacity for a collection of `n` elements of type `T`: never more
    /// than the remaining input could fill nor more than 64 KiB up front.
    ///
    /// ```
    /// use vsync::marshal::Reader;
    /// let r = Reader::new(&[0; 10]);
    /// assert_eq!(r.prealloc::<u64>(1_000_000), 10); // a length claim cannot reserve more
    /// ```
    #[inline]
    pub fn prealloc<T>(&self, n: usize) -> usize {
        let by_bytes = (64 * 1024) / std::mem::size_of::<T>().max(1);
        n.min(self.remaining()).min(by_bytes)
    }

    #[cold]
    fn truncated(&self, needed: usize) -> MarshalError {
        MarshalError::Truncated {
            needed,
            remaining: self.remaining(),
        }
    }
}

/// Where type codes are written: a `Vec<u8>`, or a matcher that compares them with the codes
/// a message carries without allocating.
///
/// ```
/// use vsync::marshal::{ArgList, Args, CodeSink};
/// let mut code: Vec<u8> = Vec::new();
/// <(i32, String)>::write_signature_code(&mut code);
/// assert_eq!(code, ArgList::new(&(0i32, "")).signature_code());
/// code.put_varint(300); // a sink takes varints too
/// ```
pub trait CodeSink {
    /// Takes one byte of a type code.
    ///
    /// ```
    /// use vsync::marshal::CodeSink;
    /// let mut code = Vec::new();
    /// code.put(7);
    /// assert_eq!(code, [7]);
    /// ```
    fn put(&mut self, byte: u8);

    /// Takes a varint.
    ///
    /// ```
    /// use vsync::marshal::CodeSink;
    /// let mut code = Vec::new();
    /// code.put_varint(300);
    /// assert_eq!(code, [0xac, 0x02]);
    /// ```
    fn put_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.put((v as u8) | 0x80);
            v >>= 7;
        }
        self.put(v as u8);
    }
}

impl CodeSink for Vec<u8> {
    #[inline]
    fn put(&mut self, byte: u8) {
        self.push(byte);
    }
}

/// Compares type codes as they are produced with the bytes a message carries.
pub(crate) struct CodeMatcher<'a> {
    bytes: &'a [u8],
    pos: usize,
    ok: bool,
}

impl<'a> CodeMatcher<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        CodeMatcher {
            bytes,
            pos: 0,
            ok: true,
        }
    }

    /// True if everything put so far matched and exactly all bytes were consumed.
    pub(crate) fn matched_all(&self) -> bool {
        self.ok && self.pos == self.bytes.len()
    }
}

impl CodeSink for CodeMatcher<'_> {
    #[inline]
    fn put(&mut self, byte: u8) {
        if self.ok {
            if self.bytes.get(self.pos) == Some(&byte) {
                self.pos += 1;
            } else {
                self.ok = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_and_canonical() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16383,
            16384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut w = Writer::new();
            w.put_varint(v);
            let mut r = Reader::new(w.as_bytes());
            assert_eq!(r.get_varint().unwrap(), v);
            r.finish().unwrap();
        }
        // Overlong zero.
        assert_eq!(
            Reader::new(&[0x80, 0x00]).get_varint(),
            Err(MarshalError::BadVarint)
        );
        // 11 bytes / overflow in the 10th byte.
        assert_eq!(
            Reader::new(&[0xff; 11]).get_varint(),
            Err(MarshalError::BadVarint)
        );
        let mut over = vec![0xffu8; 9];
        over.push(0x02);
        assert_eq!(
            Reader::new(&over).get_varint(),
            Err(MarshalError::BadVarint)
        );
        assert!(matches!(
            Reader::new(&[0x80]).get_varint(),
            Err(MarshalError::Truncated { .. })
        ));
    }

    #[test]
    fn varint128_round_trip() {
        for v in [0u128, 1, 1 << 64, u128::MAX, u128::MAX - 1] {
            let mut w = Writer::new();
            w.put_varint128(v);
            let mut r = Reader::new(w.as_bytes());
            assert_eq!(r.get_varint128().unwrap(), v);
            r.finish().unwrap();
        }
        assert_eq!(
            Reader::new(&[0xff; 20]).get_varint128(),
            Err(MarshalError::BadVarint)
        );
    }

    #[test]
    fn depth_and_work_limits() {
        let limits = Limits {
            max_depth: 2,
            max_empty_elements: 1,
            ..Limits::default()
        };
        let mut r = Reader::with_limits(&[], limits);
        let res = r.nested(|r| r.nested(|r| r.nested(|_| Ok(()))));
        assert_eq!(res, Err(MarshalError::DepthLimit(2)));
        assert!(r.charge_empty_element().is_ok());
        assert_eq!(r.charge_empty_element(), Err(MarshalError::WorkLimit(1)));
    }

    #[test]
    fn matcher() {
        let mut m = CodeMatcher::new(&[1, 2, 3]);
        m.put(1);
        m.put(2);
        assert!(!m.matched_all());
        m.put(3);
        assert!(m.matched_all());
        let mut m = CodeMatcher::new(&[1, 2]);
        m.put(2);
        m.put(2);
        assert!(!m.matched_all());
    }
}
