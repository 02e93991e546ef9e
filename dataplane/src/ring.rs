//! Lock-free single-producer / single-consumer byte rings: the zero-copy in-process API
//! between application threads and engine threads.
//!
//! This module owns the ring memory layout, the two halves ([`Producer`], [`Consumer`]), the
//! in-place views of one record ([`Claim`] on the sending side, [`Record`] on the receiving
//! side) and the error type [`RingError`].
//!
//! # Usage
//!
//! ```
//! use vsync_dataplane::ring;
//!
//! let (mut tx, mut rx) = ring::channel(64 * 1024).unwrap();
//! let mut claim = tx.try_claim(5).unwrap(); // space inside the ring, no copy
//! claim.copy_from_slice(b"hello");
//! claim.commit(); // publishes the record
//!
//! let record = rx.try_read().unwrap(); // the payload, in place
//! assert_eq!(&record[..], b"hello");
//! record.release(); // frees its space for the producer
//! assert!(rx.try_read().is_none());
//! ```
//!
//! A full ring is backpressure: [`Producer::try_claim`] returns [`RingError::WouldBlock`]
//! and nothing is ever dropped or overwritten. [`Producer::claim_blocking`] and
//! [`Consumer::read_blocking`] wait with a spin → yield → short-sleep back-off (no wakers,
//! no locks); an engine thread instead polls [`Consumer::try_read`] /
//! [`Consumer::read_batch`] in its duty cycle.
//!
//! # Layout
//!
//! The ring is one power-of-two buffer (at least [`MIN_CAPACITY`] bytes, page aligned,
//! mapped once in [`channel`] as anonymous memory: zero filled lazily by the kernel, so a
//! large ring costs resident memory only for the pages records have actually reached). Two monotonically increasing byte
//! positions, `tail` (written only by the producer) and `head` (written only by the
//! consumer), each live on their own cache line; the bytes in `[head, tail)` are committed
//! and not yet released, `tail - head <= capacity` always. Each half keeps a private cached
//! copy of the other half's position and only reloads it (one `Acquire` load of the other
//! side's cache line) when the cached value says "full" / "empty".
//!
//! Every record is an 8-byte header followed by the payload padded up to a multiple of 8, so
//! headers and payloads are always 8-byte aligned:
//!
//! ```text
//! header (native endian u64):  bits 0..32 = payload length, bits 32..64 = tag (RECORD | PAD)
//! record:                      [header][payload][0..7 bytes of padding]
//! ```
//!
//! A record never wraps: if it does not fit between `tail` and the end of the buffer, the
//! producer writes a PAD header covering the rest of the buffer and places the record at
//! offset 0 (the PAD and the record are published by the same `tail` store, so the consumer
//! never sees a PAD without the record after it). Because of that, a record can take up to
//! twice its size in ring space, which is why [`Producer::max_record_len`] is
//! `capacity / 2 - 8`: a record of that size always fits into an empty ring, wherever the
//! positions are.
//!
//! # Memory ordering
//!
//! * The producer writes header and payload with plain stores, then publishes them with a
//!   `Release` store of `tail`; the consumer `Acquire`-loads `tail` before reading anything
//!   in `[head, tail)`. So every published byte is visible to the consumer.
//! * The consumer reads payloads in place with plain loads, then frees them with a `Release`
//!   store of `head`; the producer `Acquire`-loads `head` before it hands out space below
//!   `head + capacity`. So the consumer's reads happen before the producer overwrites them.
//! * Each half's own position is never loaded from shared memory (it keeps the authoritative
//!   copy), so no other ordering is needed on the hot path. The closed flags are set with
//!   `Release` in `Drop`, after the dropping half's last position store, and are read with
//!   `Acquire` where a decision depends on seeing that final position.

use std::alloc::{self, Layout};
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Smallest ring capacity in bytes; smaller requests are rounded up to this.
pub const MIN_CAPACITY: usize = 4096;

/// Largest ring capacity in bytes (4 GiB on 64-bit targets), so that a record length always
/// fits the header's 32-bit length field.
pub const MAX_CAPACITY: usize = 1
    << (if usize::BITS >= 64 {
        32
    } else {
        usize::BITS - 2
    });

/// Size of the per-record header in bytes (also the payload alignment).
pub const RECORD_HEADER: usize = 8;

/// Alignment of the ring buffer itself (a page, so the buffer never shares a page).
/// Anonymous mappings are page aligned by construction; this is checked in [`channel`].
const BUFFER_ALIGN: usize = 4096;

const TAG_RECORD: u32 = 0x5245_4331; // "REC1"
const TAG_PAD: u32 = 0x5041_4431; // "PAD1"

/// Payload length rounded up to the 8-byte record granularity.
#[inline(always)]
const fn align8(len: usize) -> usize {
    (len + (RECORD_HEADER - 1)) & !(RECORD_HEADER - 1)
}

/// Ring bytes taken by a record with a `len`-byte payload (header + padded payload).
#[inline(always)]
const fn footprint(len: usize) -> usize {
    RECORD_HEADER + align8(len)
}

#[inline(always)]
const fn encode_header(len: usize, tag: u32) -> u64 {
    (len as u64) | ((tag as u64) << 32)
}

/// Errors of ring operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RingError {
    /// Not enough free space right now (the ring is full): backpressure, retry after the
    /// consumer releases records. Also returned by a blocking call whose timeout expired.
    WouldBlock,
    /// A size over a hard limit: a record longer than [`Producer::max_record_len`], or a
    /// ring capacity above [`MAX_CAPACITY`] in [`channel`]. Retrying cannot succeed.
    TooLarge {
        /// The requested size in bytes.
        len: usize,
        /// The limit it exceeds, in bytes.
        max: usize,
    },
    /// The other half of the ring was dropped (for a consumer: and every record was read).
    Closed,
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::WouldBlock => f.write_str(
                "ring full: not enough free space (backpressure; retry once the consumer \
                 releases records)",
            ),
            RingError::TooLarge { len, max } => write!(
                f,
                "{len} bytes is too large: the limit is {max} bytes (a record may be at most \
                 capacity/2 - {RECORD_HEADER} bytes, a ring at most {MAX_CAPACITY} bytes)"
            ),
            RingError::Closed => f.write_str("ring closed: the other half was dropped"),
        }
    }
}

impl std::error::Error for RingError {}

/// Aligns (and pads) `T` to 128 bytes: two 64-byte lines, because adjacent-line prefetchers
/// pull cache lines in pairs.
#[repr(align(128))]
struct CachePadded<T>(T);

/// State shared by the two halves.
struct Shared {
    /// End of the committed bytes; stored only by the producer (`Release`).
    tail: CachePadded<AtomicUsize>,
    /// End of the released bytes; stored only by the consumer (`Release`).
    head: CachePadded<AtomicUsize>,
    /// Read-mostly line: set once each, when a half is dropped.
    closed: CachePadded<ClosedFlags>,
    /// The anonymous mapping that backs the buffer; both halves point into it, and it is
    /// unmapped when the last half is gone.
    _memory: memmap2::MmapMut,
}

struct ClosedFlags {
    producer: AtomicBool,
    consumer: AtomicBool,
}

// `Shared` is `Send + Sync` on its own (atomics and the mapping). The buffer bytes are only
// touched through the single `Producer` (bytes in `[tail, head + cap)`) and the single
// `Consumer` (bytes in `[head, tail)`), which are disjoint and handed over with
// Release/Acquire on `tail`/`head`; see their `Send` impls.

impl Shared {
    fn layout(cap: usize) -> Layout {
        Layout::from_size_align(cap, BUFFER_ALIGN).expect("ring capacity is a valid layout")
    }
}

/// Creates a ring and returns its two halves.
///
/// `capacity_bytes` is rounded up to a power of two, at least [`MIN_CAPACITY`]. The buffer is
/// allocated once, here, as an anonymous private mapping: page aligned and zero filled
/// *lazily* (no page is touched here, so a 64 MiB ring costs resident memory only as records
/// reach its pages; each page takes one minor fault the first time the producer writes it).
/// Nothing is allocated per message afterwards.
///
/// (`std::alloc::alloc_zeroed` is not used: for a page-aligned layout the system allocator
/// falls back to `alloc` + `memset`, which touches every page.)
///
/// Errors with [`RingError::TooLarge`] if the rounded capacity would exceed
/// [`MAX_CAPACITY`]. Aborts, like `Vec`, if the memory cannot be mapped.
pub fn channel(capacity_bytes: usize) -> Result<(Producer, Consumer), RingError> {
    let too_large = RingError::TooLarge {
        len: capacity_bytes,
        max: MAX_CAPACITY,
    };
    let cap = capacity_bytes
        .max(MIN_CAPACITY)
        .checked_next_power_of_two()
        .ok_or(too_large)?;
    if cap > MAX_CAPACITY {
        return Err(too_large);
    }
    let layout = Shared::layout(cap);
    // An anonymous mapping is zero filled by the kernel on first touch: every byte reads as
    // initialized (claims hand out `&mut [u8]` over it) without being written here.
    let Ok(mut memory) = memmap2::MmapMut::map_anon(cap) else {
        alloc::handle_alloc_error(layout)
    };
    let Some(buf) = NonNull::new(memory.as_mut_ptr()) else {
        alloc::handle_alloc_error(layout)
    };
    assert!(
        (buf.as_ptr() as usize).is_multiple_of(BUFFER_ALIGN),
        "anonymous mappings are page aligned"
    );
    let shared = Arc::new(Shared {
        tail: CachePadded(AtomicUsize::new(0)),
        head: CachePadded(AtomicUsize::new(0)),
        closed: CachePadded(ClosedFlags {
            producer: AtomicBool::new(false),
            consumer: AtomicBool::new(false),
        }),
        _memory: memory,
    });
    let producer = Producer {
        shared: Arc::clone(&shared),
        buf,
        mask: cap - 1,
        tail: 0,
        cached_head: 0,
        _not_sync: PhantomData,
    };
    let consumer = Consumer {
        shared,
        buf,
        mask: cap - 1,
        head: 0,
        cached_tail: 0,
        _not_sync: PhantomData,
    };
    Ok((producer, consumer))
}

/// Space handed out by `Producer::reserve`, not yet published. Holds no borrow, so the
/// blocking loop can retry freely.
#[derive(Clone, Copy, Debug)]
struct Reservation {
    /// Ring position where the reservation starts (the producer's `tail`).
    start: usize,
    /// Bytes of PAD before the record (0 unless the record wraps to offset 0).
    pad: usize,
    /// Payload length that was claimed.
    len: usize,
}

/// The sending half of a ring. `Send`, not `Sync`: exactly one thread produces at a time.
pub struct Producer {
    shared: Arc<Shared>,
    buf: NonNull<u8>,
    mask: usize,
    /// Authoritative copy of the shared `tail`.
    tail: usize,
    /// Last `head` value loaded from the consumer; `<=` the real one.
    cached_head: usize,
    _not_sync: PhantomData<Cell<()>>,
}

// SAFETY: the producer's raw pointer is into memory owned by the `Arc<Shared>` it holds,
// and it only touches the bytes the SPSC protocol assigns to the producer; moving it to
// another thread moves that exclusive role with it.
unsafe impl Send for Producer {}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.capacity())
            .field("tail", &self.tail)
            .field("free_bytes", &self.free_bytes())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Producer {
    /// Ring capacity in bytes (a power of two).
    #[inline]
    pub fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Largest payload one record can carry: `capacity / 2 - 8` (8 being the record
    /// header). A record of this size always fits once the ring is empty, whatever the wrap
    /// position, so a claim below the limit can always eventually succeed.
    #[inline]
    pub fn max_record_len(&self) -> usize {
        self.capacity() / 2 - RECORD_HEADER
    }

    /// Bytes of ring space not holding committed, unreleased records (a snapshot). A record
    /// takes [`RECORD_HEADER`] + its length rounded up to 8, plus the rest of the buffer when
    /// it has to wrap, so a claim of `free_bytes() - 8` bytes may still block.
    pub fn free_bytes(&self) -> usize {
        let head = self.shared.head.0.load(Ordering::Acquire);
        let used = self.tail.wrapping_sub(head);
        debug_assert!(used <= self.capacity(), "ring overcommitted: {used} bytes");
        self.capacity() - used
    }

    /// Whether the consumer was dropped. Claims then fail with [`RingError::Closed`].
    pub fn is_closed(&self) -> bool {
        self.shared.closed.0.consumer.load(Ordering::Acquire)
    }

    /// Claims `len` bytes of ring space to write a record into, in place.
    ///
    /// The returned [`Claim`] derefs to exactly `len` bytes (holding stale data, not zeros);
    /// [`Claim::commit`] publishes them, dropping the claim abandons it. Errors:
    /// [`RingError::TooLarge`] when `len > max_record_len()` (checked first),
    /// [`RingError::Closed`] when the consumer was dropped, [`RingError::WouldBlock`] when the
    /// ring lacks space right now.
    #[inline]
    pub fn try_claim(&mut self, len: usize) -> Result<Claim<'_>, RingError> {
        let res = self.reserve(len)?;
        Ok(Claim {
            producer: self,
            res,
        })
    }

    /// Convenience for small messages already in a buffer: claims `data.len()` bytes, copies
    /// `data` in and commits (one copy; use [`try_claim`](Self::try_claim) to build the
    /// payload in place instead). Same errors as `try_claim`; on error nothing is published.
    #[inline]
    pub fn try_push(&mut self, data: &[u8]) -> Result<(), RingError> {
        let mut claim = self.try_claim(data.len())?;
        claim.copy_from_slice(data);
        claim.commit();
        Ok(())
    }

    /// Like [`try_claim`](Self::try_claim), but waits while the ring is full: spinning
    /// briefly, then yielding, then sleeping 50 µs → 1 ms between attempts. `timeout: None`
    /// waits for ever (until space frees up or the consumer is dropped); on timeout it
    /// returns [`RingError::WouldBlock`]. `TooLarge` and `Closed` return immediately.
    pub fn claim_blocking(
        &mut self,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<Claim<'_>, RingError> {
        let mut backoff = Backoff::new(timeout);
        loop {
            match self.reserve(len) {
                Ok(res) => {
                    return Ok(Claim {
                        producer: self,
                        res,
                    })
                }
                Err(RingError::WouldBlock) => {
                    if !backoff.wait() {
                        return Err(RingError::WouldBlock);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Finds room for a `len`-byte record at `tail` (or at offset 0 after a PAD).
    #[inline]
    fn reserve(&mut self, len: usize) -> Result<Reservation, RingError> {
        let max = self.max_record_len();
        if len > max {
            return Err(RingError::TooLarge { len, max });
        }
        // Relaxed: only the flag's value matters here, no data is handed over with it.
        if self.shared.closed.0.consumer.load(Ordering::Relaxed) {
            return Err(RingError::Closed);
        }
        let cap = self.capacity();
        let need = footprint(len);
        let to_end = cap - (self.tail & self.mask);
        let pad = if need <= to_end { 0 } else { to_end };
        let total = pad + need;
        if cap - self.tail.wrapping_sub(self.cached_head) < total {
            // Looks full with the cached head: refresh it. Acquire pairs with the consumer's
            // Release store of `head`, so its reads of the freed bytes happen before our
            // writes to them.
            self.cached_head = self.shared.head.0.load(Ordering::Acquire);
            let used = self.tail.wrapping_sub(self.cached_head);
            debug_assert!(used <= cap, "ring overcommitted: {used} bytes");
            debug_assert!(used.is_multiple_of(RECORD_HEADER));
            if cap - used < total {
                return Err(RingError::WouldBlock);
            }
        }
        Ok(Reservation {
            start: self.tail,
            pad,
            len,
        })
    }

    /// Ring offset of the record header of `res`.
    #[inline(always)]
    fn record_offset(&self, res: &Reservation) -> usize {
        res.start.wrapping_add(res.pad) & self.mask
    }

    /// Writes the header(s) of `res` with payload length `len` and publishes them.
    #[inline]
    fn publish(&mut self, res: Reservation, len: usize) {
        debug_assert!(len <= res.len);
        debug_assert_eq!(res.start, self.tail, "reservation is stale");
        let rec = self.record_offset(&res);
        if res.pad > 0 {
            let pad_off = res.start & self.mask;
            debug_assert_eq!(rec, 0, "a padded record starts the buffer");
            debug_assert_eq!(pad_off + res.pad, self.capacity());
            // SAFETY: `pad_off` is 8-aligned (all positions are multiples of 8 and the buffer
            // is page aligned) and `pad_off + 8 <= cap` since `res.pad >= 8`. The bytes are in
            // the reserved, unpublished range that only the producer may touch.
            unsafe {
                self.buf
                    .as_ptr()
                    .add(pad_off)
                    .cast::<u64>()
                    .write(encode_header(res.pad - RECORD_HEADER, TAG_PAD));
            }
        }
        // SAFETY: `rec` is 8-aligned and `rec + footprint(res.len) <= cap` by construction in
        // `reserve`; the bytes are reserved and unpublished, so only the producer touches them.
        unsafe {
            self.buf
                .as_ptr()
                .add(rec)
                .cast::<u64>()
                .write(encode_header(len, TAG_RECORD));
        }
        let new_tail = res.start.wrapping_add(res.pad).wrapping_add(footprint(len));
        debug_assert!(new_tail.wrapping_sub(self.cached_head) <= self.capacity());
        self.tail = new_tail;
        // Release: the header and payload writes above become visible before the new tail.
        self.shared.tail.0.store(new_tail, Ordering::Release);
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        // Release, after the last `tail` store: a consumer that Acquire-loads the flag sees
        // the final tail and every committed record.
        self.shared.closed.0.producer.store(true, Ordering::Release);
    }
}

/// Claimed, not yet published ring space for one record: derefs to exactly the claimed
/// bytes, in place. [`commit`](Self::commit) publishes it; dropping it abandons it (nothing
/// is published and the space stays free).
#[must_use = "a claim dropped without commit() is abandoned and publishes nothing"]
pub struct Claim<'a> {
    producer: &'a mut Producer,
    res: Reservation,
}

impl Claim<'_> {
    /// Publishes the whole claimed payload to the consumer.
    #[inline]
    pub fn commit(self) {
        let len = self.res.len;
        self.commit_len(len);
    }

    /// Publishes only the first `len` bytes of the claim (the rest of the space is given
    /// back). Panics if `len` exceeds the claimed length.
    #[inline]
    pub fn commit_len(self, len: usize) {
        assert!(
            len <= self.res.len,
            "commit_len({len}) exceeds the claimed length {}",
            self.res.len
        );
        self.producer.publish(self.res, len);
    }

    /// Abandons the claim: nothing is published (same as dropping it).
    #[inline]
    pub fn abandon(self) {}
}

impl Deref for Claim<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        let off = self.producer.record_offset(&self.res) + RECORD_HEADER;
        // SAFETY: `[off, off + len)` lies inside the buffer (checked in `reserve`), in the
        // reserved range that the consumer will not read until it is published, and every
        // byte is initialized (zeroed at allocation). The borrow of `self` ties the slice to
        // the claim, which exclusively borrows the producer.
        unsafe { std::slice::from_raw_parts(self.producer.buf.as_ptr().add(off), self.res.len) }
    }
}

impl DerefMut for Claim<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        let off = self.producer.record_offset(&self.res) + RECORD_HEADER;
        // SAFETY: as in `deref`; the claim is the only access path to these bytes and `&mut
        // self` makes this slice unique.
        unsafe { std::slice::from_raw_parts_mut(self.producer.buf.as_ptr().add(off), self.res.len) }
    }
}

impl fmt::Debug for Claim<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claim")
            .field("position", &self.res.start)
            .field("len", &self.res.len)
            .finish()
    }
}

/// The receiving half of a ring. `Send`, not `Sync`: exactly one thread consumes at a time.
pub struct Consumer {
    shared: Arc<Shared>,
    buf: NonNull<u8>,
    mask: usize,
    /// Authoritative copy of the shared `head` (the first unreleased byte).
    head: usize,
    /// Last `tail` value loaded from the producer; `<=` the real one.
    cached_tail: usize,
    _not_sync: PhantomData<Cell<()>>,
}

// SAFETY: the consumer's raw pointer is into memory owned by the `Arc<Shared>` it holds,
// and it only reads the bytes the SPSC protocol assigns to the consumer; moving it to
// another thread moves that exclusive role with it.
unsafe impl Send for Consumer {}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.capacity())
            .field("head", &self.head)
            .field("pending_hint", &self.pending_hint())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Where one committed record sits: payload offset, payload length, position after it.
#[derive(Clone, Copy)]
struct Located {
    off: usize,
    len: usize,
    next: usize,
}

impl Consumer {
    /// Ring capacity in bytes (a power of two).
    #[inline]
    pub fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// The next record, in place, or `None` if nothing is committed. The record stays in the
    /// ring until the returned [`Record`] is released or dropped; forgetting it
    /// (`mem::forget`) leaves it unread, to be returned again.
    #[inline]
    #[must_use = "dropping the returned record releases it unread"]
    pub fn try_read(&mut self) -> Option<Record<'_>> {
        let loc = self.locate(self.head)?;
        Some(Record {
            consumer: self,
            loc,
        })
    }

    /// Like [`try_read`](Self::try_read), but waits while the ring is empty (spin → yield →
    /// 50 µs..1 ms sleeps). Returns [`RingError::WouldBlock`] on timeout (`None` waits for
    /// ever) and [`RingError::Closed`] once the producer was dropped and everything was read.
    pub fn read_blocking(&mut self, timeout: Option<Duration>) -> Result<Record<'_>, RingError> {
        let mut backoff = Backoff::new(timeout);
        loop {
            if let Some(loc) = self.locate(self.head) {
                return Ok(Record {
                    consumer: self,
                    loc,
                });
            }
            if self.is_closed() {
                return Err(RingError::Closed);
            }
            if !backoff.wait() {
                return Err(RingError::WouldBlock);
            }
        }
    }

    /// Reads up to `max` records in place, calling `f` on each payload in order, then releases
    /// them all with a single `head` store. Returns how many were read (0 if the ring was
    /// empty). If `f` panics, none of this batch is released: those records will be read
    /// again.
    pub fn read_batch(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> usize {
        let mut pos = self.head;
        let mut n = 0;
        while n < max {
            let Some(loc) = self.locate(pos) else { break };
            // SAFETY: `locate` returned a committed record inside `[head, tail)`; the producer
            // does not write there until `head` moves past it, which happens only below.
            f(unsafe { self.payload(&loc) });
            pos = loc.next;
            n += 1;
        }
        if n > 0 {
            self.release_to(pos);
        }
        n
    }

    /// Whether no committed record is waiting (a snapshot).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.cached_tail == self.head && self.shared.tail.0.load(Ordering::Relaxed) == self.head
    }

    /// Bytes committed by the producer and not yet released, headers and wrap padding
    /// included (a snapshot; 0 means empty). Cheap: one relaxed load. Useful for an engine
    /// deciding which ring to drain first or whether to go idle.
    #[inline]
    pub fn pending_hint(&self) -> usize {
        self.shared
            .tail
            .0
            .load(Ordering::Relaxed)
            .wrapping_sub(self.head)
    }

    /// Whether the producer was dropped and every record it committed was read and
    /// released: nothing more will ever arrive.
    pub fn is_closed(&self) -> bool {
        // Acquire on the flag, then the tail: the producer's final tail store happens before
        // its flag store, so we compare against the final tail.
        self.shared.closed.0.producer.load(Ordering::Acquire)
            && self.shared.tail.0.load(Ordering::Acquire) == self.head
    }

    /// Finds the record at position `pos` (skipping a PAD), refreshing the cached tail only
    /// when `pos` has caught up with it.
    #[inline]
    fn locate(&mut self, pos: usize) -> Option<Located> {
        if pos == self.cached_tail {
            // Acquire pairs with the producer's Release store of `tail`: everything it wrote
            // before publishing is visible below.
            self.cached_tail = self.shared.tail.0.load(Ordering::Acquire);
            if pos == self.cached_tail {
                return None;
            }
        }
        debug_assert!(self.cached_tail.wrapping_sub(pos) <= self.capacity());
        debug_assert!(pos.is_multiple_of(RECORD_HEADER));
        let mut off = pos & self.mask;
        let mut pos = pos;
        let mut header = self.header_at(off);
        if (header >> 32) as u32 == TAG_PAD {
            let skip = self.capacity() - off;
            debug_assert_eq!(
                header as u32 as usize,
                skip - RECORD_HEADER,
                "bad PAD length"
            );
            pos = pos.wrapping_add(skip);
            off = 0;
            debug_assert!(pos != self.cached_tail, "PAD published without its record");
            header = self.header_at(0);
        }
        debug_assert_eq!((header >> 32) as u32, TAG_RECORD, "corrupt record header");
        let len = header as u32 as usize;
        let next = pos.wrapping_add(footprint(len));
        debug_assert!(len <= self.capacity() / 2 - RECORD_HEADER);
        debug_assert!(
            self.cached_tail.wrapping_sub(next) <= self.capacity(),
            "record runs past tail"
        );
        Some(Located {
            off: off + RECORD_HEADER,
            len,
            next,
        })
    }

    #[inline(always)]
    fn header_at(&self, off: usize) -> u64 {
        debug_assert!(off.is_multiple_of(RECORD_HEADER) && off < self.capacity());
        // SAFETY: `off` is 8-aligned and `off + 8 <= cap`; it is a published header in
        // `[head, tail)`, visible thanks to the Acquire load of `tail`, and the producer does
        // not write there until it is released.
        unsafe { self.buf.as_ptr().add(off).cast::<u64>().read() }
    }

    /// The payload bytes of `loc`.
    ///
    /// # Safety
    /// `loc` must come from `locate` for a record not yet released, and the returned slice
    /// must not outlive that release.
    #[inline(always)]
    unsafe fn payload<'a>(&self, loc: &Located) -> &'a [u8] {
        // SAFETY: the caller guarantees `loc` is a committed, unreleased record: the bytes are
        // inside the buffer, initialized, published (Acquire on `tail`) and not written by the
        // producer until released.
        unsafe { std::slice::from_raw_parts(self.buf.as_ptr().add(loc.off), loc.len) }
    }

    /// Releases everything before position `pos` to the producer.
    #[inline]
    fn release_to(&mut self, pos: usize) {
        debug_assert!(pos.wrapping_sub(self.head) <= self.capacity());
        debug_assert!(self.cached_tail.wrapping_sub(pos) <= self.capacity());
        self.head = pos;
        // Release: our reads of the released bytes happen before the producer reuses them.
        self.shared.head.0.store(pos, Ordering::Release);
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.shared.closed.0.consumer.store(true, Ordering::Release);
    }
}

/// One delivered record, in place in the ring: derefs to its payload (8-byte aligned).
/// [`release`](Self::release) — or dropping it — frees its space for the producer.
#[must_use = "dropping a record releases it"]
pub struct Record<'a> {
    consumer: &'a mut Consumer,
    loc: Located,
}

impl Record<'_> {
    /// Frees the record's ring space (same as dropping it).
    #[inline]
    pub fn release(self) {}

    /// Leaves the record in the ring, unread: the next [`Consumer::try_read`] returns it
    /// again and its space stays taken. For a consumer that looked at a record and cannot
    /// act on it yet (an engine whose protocol said "would block"), so the ring itself
    /// carries the backpressure to the producer.
    #[inline]
    pub fn unread(self) {
        // Skipping `Drop` is exactly "do not release": the record holds only a borrow and
        // plain position data, so nothing leaks.
        let _ = ManuallyDrop::new(self);
    }
}

impl Deref for Record<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: the record is unreleased while `self` lives (release happens in `Drop`),
        // and the slice borrows `self`.
        unsafe { self.consumer.payload(&self.loc) }
    }
}

impl Drop for Record<'_> {
    #[inline]
    fn drop(&mut self) {
        self.consumer.release_to(self.loc.next);
    }
}

impl fmt::Debug for Record<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("len", &self.loc.len)
            .finish()
    }
}

/// Spin → yield → sleep back-off with an optional deadline, for the blocking calls.
struct Backoff {
    step: u32,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
}

impl Backoff {
    const SPIN_STEPS: u32 = 6;
    const YIELD_STEPS: u32 = 16;
    const MIN_SLEEP: Duration = Duration::from_micros(50);
    const MAX_SLEEP: Duration = Duration::from_millis(1);

    fn new(timeout: Option<Duration>) -> Self {
        Backoff {
            step: 0,
            timeout,
            deadline: None,
        }
    }

    /// Waits a little; returns `false` once the deadline has passed.
    fn wait(&mut self) -> bool {
        let mut remaining = None;
        if let Some(timeout) = self.timeout {
            let now = Instant::now();
            let deadline = *self.deadline.get_or_insert_with(|| {
                now.checked_add(timeout)
                    .unwrap_or(now + Duration::from_secs(86_400 * 365))
            });
            if now >= deadline {
                return false;
            }
            remaining = Some(deadline - now);
        }
        if self.step < Self::SPIN_STEPS {
            for _ in 0..(1u32 << self.step) {
                std::hint::spin_loop();
            }
        } else if self.step < Self::SPIN_STEPS + Self::YIELD_STEPS {
            std::thread::yield_now();
        } else {
            let doublings = (self.step - Self::SPIN_STEPS - Self::YIELD_STEPS).min(5);
            let mut nap = (Self::MIN_SLEEP * (1 << doublings)).min(Self::MAX_SLEEP);
            if let Some(r) = remaining {
                nap = nap.min(r);
            }
            std::thread::sleep(nap);
        }
        self.step = self.step.saturating_add(1);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn fill(buf: &mut [u8], seed: u8) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = seed.wrapping_add(i as u8);
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        let mut v = vec![0; len];
        fill(&mut v, seed);
        v
    }

    fn send(p: &mut Producer, data: &[u8]) {
        p.try_push(data).expect("room");
    }

    #[test]
    fn capacity_rounding_and_limits() {
        let (p, c) = channel(0).unwrap();
        assert_eq!(p.capacity(), MIN_CAPACITY);
        assert_eq!(c.capacity(), MIN_CAPACITY);
        assert_eq!(p.max_record_len(), MIN_CAPACITY / 2 - 8);
        let (p, _c) = channel(5000).unwrap();
        assert_eq!(p.capacity(), 8192);
        let (p, _c) = channel(65536).unwrap();
        assert_eq!(p.capacity(), 65536);
        assert_eq!(p.free_bytes(), 65536);
        assert_eq!(
            channel(MAX_CAPACITY + 1).unwrap_err(),
            RingError::TooLarge {
                len: MAX_CAPACITY + 1,
                max: MAX_CAPACITY
            }
        );
        assert!(channel(usize::MAX).is_err());
    }

    #[test]
    fn error_messages_name_the_limit() {
        let e = RingError::TooLarge {
            len: 3000,
            max: 2040,
        };
        let s = e.to_string();
        assert!(s.contains("3000") && s.contains("2040"), "{s}");
        assert!(RingError::WouldBlock.to_string().contains("full"));
        assert!(RingError::Closed.to_string().contains("closed"));
        let _: &dyn std::error::Error = &e;
    }

    #[test]
    fn roundtrip_in_place_and_aligned() {
        let (mut p, mut c) = channel(4096).unwrap();
        assert!(c.is_empty());
        assert!(c.try_read().is_none());
        for len in [0usize, 1, 7, 8, 9, 100] {
            let mut claim = p.try_claim(len).unwrap();
            assert_eq!(claim.len(), len);
            assert!((claim.as_ptr() as usize).is_multiple_of(8));
            fill(&mut claim, len as u8);
            claim.commit();
        }
        assert!(!c.is_empty());
        assert_eq!(
            c.pending_hint(),
            [0usize, 1, 7, 8, 9, 100]
                .iter()
                .map(|&l| footprint(l))
                .sum::<usize>()
        );
        for len in [0usize, 1, 7, 8, 9, 100] {
            let r = c.try_read().unwrap();
            assert!((r.as_ptr() as usize).is_multiple_of(8));
            assert_eq!(&r[..], &pattern(len, len as u8)[..]);
            r.release();
        }
        assert!(c.try_read().is_none());
        assert!(c.is_empty());
        assert_eq!(c.pending_hint(), 0);
        assert_eq!(p.free_bytes(), 4096);
    }

    #[test]
    fn abandon_publishes_nothing() {
        let (mut p, mut c) = channel(4096).unwrap();
        let mut claim = p.try_claim(64).unwrap();
        claim.fill(0xEE);
        drop(claim);
        p.try_claim(10).unwrap().abandon();
        assert!(c.try_read().is_none());
        assert_eq!(p.free_bytes(), 4096);
        send(&mut p, b"after");
        assert_eq!(&c.try_read().unwrap()[..], b"after");
    }

    #[test]
    fn commit_len_publishes_a_prefix() {
        let (mut p, mut c) = channel(4096).unwrap();
        let mut claim = p.try_claim(1000).unwrap();
        fill(&mut claim, 3);
        claim.commit_len(10);
        assert_eq!(p.free_bytes(), 4096 - footprint(10));
        assert_eq!(&c.try_read().unwrap()[..], &pattern(10, 3)[..]);
        let claim = p.try_claim(5).unwrap();
        claim.commit_len(0);
        assert_eq!(c.try_read().unwrap().len(), 0);
    }

    #[test]
    #[should_panic(expected = "exceeds the claimed length")]
    fn commit_len_over_claim_panics() {
        let (mut p, _c) = channel(4096).unwrap();
        p.try_claim(8).unwrap().commit_len(9);
    }

    #[test]
    fn too_large_exactly_over_the_limit() {
        let (mut p, mut c) = channel(4096).unwrap();
        let max = p.max_record_len();
        assert_eq!(
            p.try_claim(max + 1).unwrap_err(),
            RingError::TooLarge { len: max + 1, max }
        );
        assert!(matches!(
            p.claim_blocking(max + 1, None),
            Err(RingError::TooLarge { .. })
        ));
        // A max-size record fits into an empty ring at every wrap position.
        for step in 0..(4096 / 8) {
            send(&mut p, &pattern(max, step as u8));
            assert_eq!(&c.try_read().unwrap()[..], &pattern(max, step as u8)[..]);
            // Shift the position by 8 bytes.
            send(&mut p, &[]);
            c.try_read().unwrap().release();
        }
    }

    #[test]
    fn exactly_full_then_backpressure() {
        let (mut p, mut c) = channel(4096).unwrap();
        // 4 records of footprint 1024 fill the ring exactly.
        for i in 0..4 {
            send(&mut p, &pattern(1016, i));
        }
        assert_eq!(p.free_bytes(), 0);
        assert_eq!(p.try_claim(0).unwrap_err(), RingError::WouldBlock);
        assert_eq!(
            p.claim_blocking(0, Some(Duration::ZERO)).unwrap_err(),
            RingError::WouldBlock
        );
        assert_eq!(c.pending_hint(), 4096);
        assert_eq!(&c.try_read().unwrap()[..], &pattern(1016, 0)[..]);
        assert_eq!(p.free_bytes(), 1024);
        send(&mut p, &pattern(1016, 4));
        assert_eq!(p.try_claim(0).unwrap_err(), RingError::WouldBlock);
        for i in 1..5 {
            assert_eq!(&c.try_read().unwrap()[..], &pattern(1016, i)[..]);
        }
        assert!(c.try_read().is_none());
    }

    /// Sends and releases filler records until the producer's tail sits at buffer offset
    /// `target` (a multiple of 8), with the ring empty.
    fn advance_to(p: &mut Producer, c: &mut Consumer, target: usize) {
        while p.tail & p.mask != target {
            let dist = target.wrapping_sub(p.tail) & p.mask;
            let len = (dist - RECORD_HEADER).min(p.max_record_len());
            send(p, &pattern(len, 0xAA));
            c.try_read().unwrap().release();
        }
        assert!(c.is_empty());
        assert_eq!(p.free_bytes(), p.capacity());
    }

    #[test]
    fn wrap_inserts_pad_and_keeps_payload_contiguous() {
        let (mut p, mut c) = channel(4096).unwrap();
        advance_to(&mut p, &mut c, 4096 - 80);
        let to_end = 80;
        // Needs a PAD of `to_end` bytes, then the record at offset 0.
        let mut claim = p.try_claim(1500).unwrap();
        // SAFETY (test): pointer arithmetic inside the buffer, never dereferenced.
        let expected = unsafe { c.buf.as_ptr().add(RECORD_HEADER) };
        assert_eq!(claim.as_ptr(), expected.cast_const());
        fill(&mut claim, 9);
        claim.commit();
        assert_eq!(p.free_bytes(), 4096 - to_end - footprint(1500));
        assert_eq!(c.pending_hint(), to_end + footprint(1500));
        let r = c.try_read().unwrap();
        assert_eq!(&r[..], &pattern(1500, 9)[..]);
        drop(r);
        assert_eq!(p.free_bytes(), 4096);
        // A record that ends exactly at the end of the buffer needs no PAD.
        advance_to(&mut p, &mut c, 4096 - 80);
        send(&mut p, &pattern(72, 5));
        assert_eq!(p.tail & p.mask, 0);
        assert_eq!(p.free_bytes(), 4096 - 80);
        assert_eq!(&c.try_read().unwrap()[..], &pattern(72, 5)[..]);
    }

    #[test]
    fn unread_record_is_read_again() {
        let (mut p, mut c) = channel(4096).unwrap();
        advance_to(&mut p, &mut c, 4096 - 16);
        send(&mut p, &pattern(1200, 3)); // wraps behind a PAD
        send(&mut p, b"next");
        let r = c.try_read().unwrap();
        assert_eq!(&r[..], &pattern(1200, 3)[..]);
        r.unread();
        assert_eq!(p.free_bytes(), 4096 - 16 - footprint(1200) - footprint(4));
        assert_eq!(&c.try_read().unwrap()[..], &pattern(1200, 3)[..]);
        assert_eq!(&c.try_read().unwrap()[..], b"next");
        assert!(c.try_read().is_none());
        assert_eq!(p.free_bytes(), 4096);
    }

    #[test]
    fn large_ring_is_lazily_backed() {
        fn rss_kib() -> Option<usize> {
            let status = std::fs::read_to_string("/proc/self/status").ok()?;
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        }
        let Some(before) = rss_kib() else { return };
        let (mut p, mut c) = channel(256 << 20).unwrap();
        let after = rss_kib().unwrap();
        // Other test threads allocate concurrently, so allow generous slack; pre-faulting
        // would add 256 MiB.
        assert!(
            after < before + (64 << 10),
            "RSS grew from {before} KiB to {after} KiB"
        );
        // The memory reads as zeros and works normally.
        let claim = p.try_claim(1 << 20).unwrap();
        assert!(claim.iter().all(|&b| b == 0));
        claim.commit();
        assert_eq!(c.try_read().unwrap().len(), 1 << 20);
    }

    #[test]
    fn forgotten_record_is_read_again() {
        let (mut p, mut c) = channel(4096).unwrap();
        advance_to(&mut p, &mut c, 4096 - 16);
        send(&mut p, &pattern(1200, 2)); // wraps behind a PAD
        std::mem::forget(c.try_read().unwrap());
        assert_eq!(p.free_bytes(), 4096 - 16 - footprint(1200));
        assert_eq!(&c.try_read().unwrap()[..], &pattern(1200, 2)[..]);
        assert!(c.try_read().is_none());
        assert_eq!(p.free_bytes(), 4096);
    }

    #[test]
    fn read_batch_releases_once_at_the_end() {
        let (mut p, mut c) = channel(4096).unwrap();
        for i in 0..10u8 {
            send(&mut p, &pattern(100 + i as usize, i));
        }
        let free_before = p.free_bytes();
        let mut seen = Vec::new();
        let n = c.read_batch(4, |b| {
            // Nothing is released while the batch runs.
            assert_eq!(p.free_bytes(), free_before);
            seen.push(b.to_vec());
        });
        assert_eq!(n, 4);
        assert_eq!(
            p.free_bytes(),
            free_before + (0..4).map(|i| footprint(100 + i)).sum::<usize>()
        );
        let n = c.read_batch(usize::MAX, |b| seen.push(b.to_vec()));
        assert_eq!(n, 6);
        assert_eq!(c.read_batch(usize::MAX, |_| unreachable!()), 0);
        for (i, b) in seen.iter().enumerate() {
            assert_eq!(b, &pattern(100 + i, i as u8));
        }
        assert_eq!(p.free_bytes(), 4096);
    }

    #[test]
    fn consumer_drop_closes_producer() {
        let (mut p, c) = channel(4096).unwrap();
        assert!(!p.is_closed());
        drop(c);
        assert!(p.is_closed());
        assert_eq!(p.try_claim(1).unwrap_err(), RingError::Closed);
        assert_eq!(p.try_push(b"x").unwrap_err(), RingError::Closed);
        assert_eq!(p.claim_blocking(1, None).unwrap_err(), RingError::Closed);
        // TooLarge is reported first: it is a programming error whatever the state.
        assert!(matches!(p.try_claim(4096), Err(RingError::TooLarge { .. })));
    }

    #[test]
    fn producer_drop_closes_after_drain() {
        let (mut p, mut c) = channel(4096).unwrap();
        send(&mut p, b"one");
        send(&mut p, b"two");
        drop(p);
        assert!(!c.is_closed(), "records still pending");
        assert_eq!(&c.try_read().unwrap()[..], b"one");
        assert_eq!(&c.read_blocking(None).unwrap()[..], b"two");
        assert!(c.is_closed());
        assert!(c.try_read().is_none());
        assert_eq!(c.read_blocking(None).unwrap_err(), RingError::Closed);
    }

    #[test]
    fn blocking_calls_time_out() {
        let (mut p, mut c) = channel(4096).unwrap();
        let t = Instant::now();
        assert_eq!(
            c.read_blocking(Some(Duration::from_millis(20)))
                .unwrap_err(),
            RingError::WouldBlock
        );
        assert!(t.elapsed() >= Duration::from_millis(20));
        send(&mut p, &pattern(2040, 0));
        send(&mut p, &pattern(2040, 1));
        let t = Instant::now();
        assert_eq!(
            p.claim_blocking(0, Some(Duration::from_millis(20)))
                .unwrap_err(),
            RingError::WouldBlock
        );
        assert!(t.elapsed() >= Duration::from_millis(20));
        // A huge timeout does not overflow.
        c.try_read().unwrap().release();
        p.claim_blocking(10, Some(Duration::MAX)).unwrap().commit();
    }

    #[test]
    fn halves_are_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Producer>();
        assert_send::<Consumer>();
        let (p, c) = channel(4096).unwrap();
        assert!(format!("{p:?} {c:?}").contains("capacity: 4096"));
    }

    /// One step of the model-based property test.
    #[derive(Debug, Clone)]
    enum Op {
        /// Claim `len` bytes, fill them, then commit all, commit a prefix, or abandon.
        Claim { len: usize, seed: u8, end: End },
        /// Read one record and release it.
        Read,
        /// Read one record, and while holding it claim+commit another (disjointness).
        ReadHolding { len: usize, seed: u8 },
        /// Read one record and forget it (it must come back).
        ReadForget,
        /// Read a batch.
        Batch { max: usize },
        /// Claim+commit exactly the free space (`to_end == false`) or exactly the space
        /// left before the end of the buffer (`to_end == true`), clamped to the limit.
        Brim { to_end: bool, seed: u8 },
    }

    #[derive(Debug, Clone, Copy)]
    enum End {
        Commit,
        CommitLen(usize),
        Abandon,
    }

    const CAP: usize = 4096;
    const MAX: usize = CAP / 2 - RECORD_HEADER;

    fn len_strategy() -> impl Strategy<Value = usize> {
        prop_oneof![
            3 => 0usize..64,
            3 => 0usize..=MAX,
            2 => (MAX - 24)..=(MAX + 24),
            1 => prop_oneof![Just(1016usize), Just(1024 - 8 - 1), Just(504), Just(248)],
        ]
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        let end = prop_oneof![
            4 => Just(End::Commit),
            1 => (0usize..=MAX).prop_map(End::CommitLen),
            1 => Just(End::Abandon),
        ];
        prop_oneof![
            5 => (len_strategy(), any::<u8>(), end)
                .prop_map(|(len, seed, end)| Op::Claim { len, seed, end }),
            3 => Just(Op::Read),
            1 => (len_strategy(), any::<u8>()).prop_map(|(len, seed)| Op::ReadHolding { len, seed }),
            1 => Just(Op::ReadForget),
            1 => (0usize..6).prop_map(|max| Op::Batch { max }),
            1 => (any::<bool>(), any::<u8>()).prop_map(|(to_end, seed)| Op::Brim { to_end, seed }),
        ]
    }

    /// Independent model of the ring: a queue of payloads plus byte accounting.
    struct Model {
        queue: VecDeque<(Vec<u8>, usize)>,
        tail: usize,
        used: usize,
    }

    impl Model {
        /// Ring bytes a `len`-byte claim at the current tail needs (PAD included).
        fn needed(&self, len: usize) -> (usize, usize) {
            let rec = 8 + len.div_ceil(8) * 8;
            let to_end = CAP - self.tail % CAP;
            let pad = if rec > to_end { to_end } else { 0 };
            (pad, rec)
        }

        /// Outcome predicted for claiming `len`.
        fn predict(&self, len: usize) -> Result<(), RingError> {
            if len > MAX {
                return Err(RingError::TooLarge { len, max: MAX });
            }
            let (pad, rec) = self.needed(len);
            if pad + rec > CAP - self.used {
                return Err(RingError::WouldBlock);
            }
            Ok(())
        }

        fn push(&mut self, claimed: usize, payload: Vec<u8>) {
            let (pad, _) = self.needed(claimed);
            let rec = 8 + payload.len().div_ceil(8) * 8;
            self.tail += pad + rec;
            self.used += pad + rec;
            self.queue.push_back((payload, pad + rec));
            assert!(self.used <= CAP);
        }

        fn pop(&mut self) -> Option<Vec<u8>> {
            let (payload, size) = self.queue.pop_front()?;
            self.used -= size;
            Some(payload)
        }
    }

    fn claim_and_end(p: &mut Producer, m: &mut Model, len: usize, seed: u8, end: End) {
        let expected = m.predict(len);
        match p.try_claim(len) {
            Ok(mut claim) => {
                assert_eq!(expected, Ok(()), "claim of {len} succeeded");
                assert_eq!(claim.len(), len);
                fill(&mut claim, seed);
                match end {
                    End::Commit => {
                        claim.commit();
                        m.push(len, pattern(len, seed));
                    }
                    End::CommitLen(n) => {
                        let n = n.min(len);
                        claim.commit_len(n);
                        m.push(len, pattern(n, seed));
                    }
                    End::Abandon => drop(claim),
                }
            }
            Err(e) => assert_eq!(Err(e), expected, "claim of {len}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn ring_matches_model(ops in proptest::collection::vec(op_strategy(), 1..200)) {
            let (mut p, mut c) = channel(CAP).unwrap();
            let mut m = Model { queue: VecDeque::new(), tail: 0, used: 0 };
            for op in ops {
                match op {
                    Op::Claim { len, seed, end } => claim_and_end(&mut p, &mut m, len, seed, end),
                    Op::Brim { to_end, seed } => {
                        let room = if to_end { CAP - m.tail % CAP } else { CAP - m.used };
                        let len = room.saturating_sub(RECORD_HEADER).min(MAX);
                        claim_and_end(&mut p, &mut m, len, seed, End::Commit);
                    }
                    Op::Read => {
                        let got = c.try_read().map(|r| r.to_vec());
                        prop_assert_eq!(got, m.pop());
                    }
                    Op::ReadHolding { len, seed } => {
                        let Some(r) = c.try_read() else {
                            prop_assert!(m.queue.is_empty());
                            claim_and_end(&mut p, &mut m, len, seed, End::Commit);
                            continue;
                        };
                        let before = r.to_vec();
                        // The held record is not released yet: the model still counts it.
                        claim_and_end(&mut p, &mut m, len, seed, End::Commit);
                        prop_assert_eq!(&r[..], &before[..]);
                        drop(r);
                        prop_assert_eq!(Some(before), m.pop());
                    }
                    Op::ReadForget => {
                        if let Some(r) = c.try_read() {
                            prop_assert_eq!(&r[..], &m.queue.front().unwrap().0[..]);
                            std::mem::forget(r);
                        } else {
                            prop_assert!(m.queue.is_empty());
                        }
                    }
                    Op::Batch { max } => {
                        let mut got = Vec::new();
                        let n = c.read_batch(max, |b| got.push(b.to_vec()));
                        prop_assert_eq!(n, got.len());
                        prop_assert_eq!(n, max.min(m.queue.len()));
                        for g in got {
                            prop_assert_eq!(Some(g), m.pop());
                        }
                    }
                }
                prop_assert!(m.used <= CAP);
                prop_assert_eq!(p.free_bytes(), CAP - m.used);
                prop_assert_eq!(c.pending_hint(), m.used);
                prop_assert_eq!(c.is_empty(), m.queue.is_empty());
            }
            // Drain: everything still queued comes out, in order.
            while let Some(r) = c.try_read() {
                prop_assert_eq!(Some(r.to_vec()), m.pop());
            }
            prop_assert!(m.queue.is_empty());
            prop_assert_eq!(p.free_bytes(), CAP);
        }
    }
}
