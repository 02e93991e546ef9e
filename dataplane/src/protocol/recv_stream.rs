//! One incoming reliable FIFO stream: in-order delivery with early delivery of whatever is
//! contiguous, buffering of out-of-order frames within the window, reassembly of fragmented
//! messages, gap detection for NAKs, and the received/consumed positions that receipt reports
//! carry.
//!
//! Positions (all frame sequence numbers, starting at 1):
//! `cursor <= received <= high`. Frames below `cursor` were handed to the delivery path;
//! frames in `[cursor, received)` are held (the application pushed back); frames in
//! `[received, high)` are partly held and partly missing (the gaps NAKs ask for).
//!
//! Retention (group streams of groups with at least three members): every frame that becomes
//! contiguous is also copied into a bounded FIFO ring ([`Retention`]) and kept until it is
//! all-stable (every other member reported holding it), so this member can relay it to a
//! survivor that lacks it in a view-change flush. `retention.floor() <= received` and the ring
//! holds exactly the frames `[retention.floor(), received)`.
//!
//! Wedging (view change): `limit` caps the frames the stream accepts; nothing above it is held.

use std::collections::{BTreeMap, VecDeque};

use crate::protocol::endpoint::Outcome;
use crate::protocol::send_stream::ByteStore;
use crate::wire::{DropReason, NakRange};
use crate::Timestamp;

/// Fragment information of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FragInfo {
    pub index: u32,
    pub count: u32,
    pub total_len: u32,
}

#[derive(Debug)]
struct Held {
    frag: Option<FragInfo>,
    data: Vec<u8>,
}

#[derive(Debug, Default)]
struct Assembly {
    active: bool,
    first_seq: u64,
    count: u32,
    total_len: u32,
    next_index: u32,
    /// Bytes are being discarded (oversized or inconsistent message).
    discarding: bool,
    /// Complete and waiting for the application to take it.
    complete: bool,
    buf: Vec<u8>,
}

/// Bookkeeping of one retained frame.
#[derive(Clone, Debug)]
pub(crate) struct RetainedFrame {
    offset: usize,
    len: u32,
    pub index: u32,
    pub count: u32,
    pub total_len: u32,
    /// The bytes, when kept outside the ring (flush overflow, see [`Retention::overflow`]).
    spilled: Option<Vec<u8>>,
}

/// The frames of an incoming stream kept until all-stable, in a lazily backed FIFO byte ring.
#[derive(Debug)]
pub(crate) struct Retention {
    enabled: bool,
    /// Sequence number of `frames[0]`.
    floor: u64,
    /// The all-stable point: frames below it are held by every other member and are not kept.
    stable: u64,
    frames: VecDeque<RetainedFrame>,
    store: ByteStore,
    /// During a flush, frames up to the cut must be accepted even when the ring is full
    /// (stale reports of failed members may pin it): they spill to the heap, bounded by the
    /// cut. Never set outside a flush.
    pub overflow: bool,
    spilled_bytes: usize,
}

impl Retention {
    /// A retention of `capacity` bytes starting at `start`; disabled keeps nothing (a group of
    /// two has nobody to relay to).
    pub(crate) fn new(start: u64, capacity: usize, enabled: bool) -> Self {
        Retention {
            enabled,
            floor: start,
            stable: start,
            frames: VecDeque::new(),
            store: ByteStore::new(if enabled { capacity } else { 0 }),
            overflow: false,
            spilled_bytes: 0,
        }
    }

    /// Appends frame `seq` (which must be the next one); false if the ring is full.
    fn push(&mut self, seq: u64, frag: Option<FragInfo>, payload: &[u8]) -> bool {
        debug_assert_eq!(seq, self.floor + self.frames.len() as u64);
        if !self.enabled || seq < self.stable {
            // Nobody can need it from us: not kept (and no copy).
            debug_assert!(self.frames.is_empty());
            self.floor = seq + 1;
            return true;
        }
        let (offset, spilled) = match self.store.alloc(payload.len()) {
            Some(offset) => {
                self.store
                    .slice_mut(offset, payload.len())
                    .copy_from_slice(payload);
                (offset, None)
            }
            None if self.overflow => {
                self.spilled_bytes += payload.len();
                (0, Some(payload.to_vec()))
            }
            None => return false,
        };
        let f = frag.unwrap_or(FragInfo {
            index: 0,
            count: 1,
            total_len: payload.len() as u32,
        });
        self.frames.push_back(RetainedFrame {
            offset,
            len: payload.len() as u32,
            index: f.index,
            count: f.count,
            total_len: f.total_len,
            spilled,
        });
        true
    }

    /// Records the all-stable point (it only grows) and frees every frame below it.
    pub(crate) fn release(&mut self, point: u64) {
        self.stable = self.stable.max(point);
        while self.floor < self.stable {
            let Some(f) = self.frames.pop_front() else {
                break;
            };
            match f.spilled {
                Some(v) => self.spilled_bytes -= v.len(),
                None => self.store.free_front(f.offset, f.len as usize),
            }
            self.floor += 1;
        }
    }

    /// Frame `seq` with its bytes, if retained.
    pub(crate) fn get(&self, seq: u64) -> Option<(&RetainedFrame, &[u8])> {
        let f = seq
            .checked_sub(self.floor)
            .and_then(|i| self.frames.get(i as usize))?;
        let bytes = match &f.spilled {
            Some(v) => &v[..],
            None => self.store.slice(f.offset, f.len as usize),
        };
        Some((f, bytes))
    }

    /// The all-stable point known so far.
    pub(crate) fn stable(&self) -> u64 {
        self.stable
    }

    /// First retained sequence number (everything below was freed).
    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }

    /// Bytes in use (ring and flush overflow).
    pub(crate) fn bytes(&self) -> usize {
        self.store.used() + self.spilled_bytes
    }
}

/// Limits applied to one stream.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecvLimits {
    pub window_frames: u64,
    pub window_bytes: usize,
    pub max_message: usize,
}

#[derive(Debug)]
pub(crate) struct RecvStream {
    pub cursor: u64,
    pub received: u64,
    pub high: u64,
    held: BTreeMap<u64, Held>,
    held_bytes: usize,
    assembly: Assembly,
    pool: Vec<Vec<u8>>,
    /// When the next NAK for this stream is due.
    pub nak_at: Option<Timestamp>,
    /// A NAK should be sent now.
    pub nak_due: bool,
    /// Positions last reported in a receipt report.
    pub reported_received: u64,
    pub reported_consumed: u64,
    /// Frames kept until all-stable (for relaying in a flush).
    pub retention: Retention,
    /// Wedged: the last frame this stream may accept (inclusive); `None` when not wedged.
    pub limit: Option<u64>,
}

/// Where a data frame went.
pub(crate) type DeliverFn<'a> = dyn FnMut(u64, &[u8]) -> bool + 'a;

impl RecvStream {
    pub(crate) fn new(start: u64, retain_bytes: usize, retain: bool) -> Self {
        RecvStream {
            retention: Retention::new(start, retain_bytes, retain),
            limit: None,
            cursor: start,
            received: start,
            high: start,
            held: BTreeMap::new(),
            held_bytes: 0,
            assembly: Assembly::default(),
            pool: Vec::new(),
            nak_at: None,
            nak_due: false,
            reported_received: start,
            reported_consumed: start,
        }
    }

    /// The consumed position for receipt reports and flow control: frames below the cursor
    /// were delivered or moved into the reassembly buffer (whose size is bounded by the maximum
    /// message length), so they no longer occupy the receive window. Counting reassembled
    /// fragments as consumed is what lets a message larger than the window make progress.
    pub(crate) fn consumed(&self) -> u64 {
        self.cursor
    }

    /// True if there is a gap below `high`.
    pub(crate) fn has_gap(&self) -> bool {
        self.received < self.high
    }

    /// True if data is held because the application pushed back.
    pub(crate) fn has_backlog(&self) -> bool {
        self.cursor < self.received || self.assembly.complete
    }

    /// Handles one data frame. `deliver(first_seq, message)` hands a complete message to the
    /// application and returns false if it cannot take it now.
    pub(crate) fn on_data(
        &mut self,
        seq: u64,
        frag: Option<FragInfo>,
        payload: &[u8],
        limits: &RecvLimits,
        deliver: &mut DeliverFn<'_>,
        outcome: &mut Outcome,
    ) {
        if seq < self.cursor || (seq < self.received) || self.held.contains_key(&seq) {
            outcome.duplicate = true;
            return;
        }
        if self.limit.is_some_and(|l| seq > l) {
            outcome.drop = Some(DropReason::Wedged);
            return;
        }
        if seq >= self.cursor + limits.window_frames
            || self.held_bytes + payload.len() > limits.window_bytes
        {
            outcome.drop = Some(DropReason::OutOfWindow);
            return;
        }
        if seq + 1 > self.high {
            if seq > self.high {
                outcome.new_gap = true;
            }
            self.high = seq + 1;
        }
        if seq == self.received && self.cursor == self.received && !self.assembly.complete {
            // Fast path: the next frame in order, nothing backlogged: deliver from the datagram.
            if !self.retention.push(seq, frag, payload) {
                // Treated as lost: the gap is NAKed and the frame retransmitted later.
                outcome.retention_full += 1;
                outcome.new_gap = true;
                return;
            }
            self.received += 1;
            self.consume(seq, frag, payload, limits, deliver, outcome);
            if !self.held.is_empty() {
                self.advance_received(outcome);
                self.pump(limits, deliver, outcome);
            }
            return;
        }
        let mut data = self.pool.pop().unwrap_or_default();
        data.clear();
        data.extend_from_slice(payload);
        self.held_bytes += data.len();
        self.held.insert(seq, Held { frag, data });
        if seq == self.received {
            self.advance_received(outcome);
            self.pump(limits, deliver, outcome);
        }
    }

    /// Moves `received` over held frames, retaining each; a frame the retention cannot take is
    /// discarded (treated as lost).
    fn advance_received(&mut self, outcome: &mut Outcome) {
        while let Some(h) = self.held.get(&self.received) {
            if !self.retention.push(self.received, h.frag, &h.data) {
                if let Some(h) = self.held.remove(&self.received) {
                    self.held_bytes -= h.data.len();
                    self.recycle(h.data);
                }
                outcome.retention_full += 1;
                outcome.new_gap = true;
                break;
            }
            self.received += 1;
        }
    }

    /// Hands held frames at the cursor to the application while it takes them.
    pub(crate) fn pump(
        &mut self,
        limits: &RecvLimits,
        deliver: &mut DeliverFn<'_>,
        outcome: &mut Outcome,
    ) {
        loop {
            if self.assembly.complete {
                if !deliver(self.assembly.first_seq, &self.assembly.buf) {
                    return;
                }
                outcome.delivered += 1;
                self.finish_assembly();
            }
            if self.cursor >= self.received {
                return;
            }
            let seq = self.cursor;
            let Some(held) = self.held.remove(&seq) else {
                debug_assert!(false, "frame {seq} below received must be held");
                return;
            };
            self.held_bytes -= held.data.len();
            if held.frag.is_none() && !self.assembly.active {
                if !deliver(seq, &held.data) {
                    self.held_bytes += held.data.len();
                    self.held.insert(seq, held);
                    return;
                }
                outcome.delivered += 1;
                self.cursor += 1;
            } else {
                self.consume(seq, held.frag, &held.data, limits, deliver, outcome);
            }
            self.recycle(held.data);
        }
    }

    fn recycle(&mut self, v: Vec<u8>) {
        if self.pool.len() < 64 && v.capacity() <= 65536 {
            self.pool.push(v);
        }
    }

    /// Consumes frame `seq == cursor` (advancing the cursor): a whole message is delivered
    /// (or held if refused), a fragment is appended to the assembly.
    fn consume(
        &mut self,
        seq: u64,
        frag: Option<FragInfo>,
        payload: &[u8],
        limits: &RecvLimits,
        deliver: &mut DeliverFn<'_>,
        outcome: &mut Outcome,
    ) {
        debug_assert_eq!(seq, self.cursor);
        let Some(f) = frag else {
            if self.assembly.active {
                // A whole message inside an unfinished fragmented one: the sender is broken.
                outcome.malformed += 1;
                self.finish_assembly();
            }
            if deliver(seq, payload) {
                outcome.delivered += 1;
                self.cursor += 1;
            } else {
                let mut data = self.pool.pop().unwrap_or_default();
                data.clear();
                data.extend_from_slice(payload);
                self.held_bytes += data.len();
                self.held.insert(seq, Held { frag: None, data });
            }
            return;
        };
        self.cursor += 1;
        let a = &mut self.assembly;
        if f.index == 0 {
            if a.active {
                outcome.malformed += 1;
            }
            a.active = true;
            a.first_seq = seq;
            a.count = f.count;
            a.total_len = f.total_len;
            a.next_index = 0;
            a.complete = false;
            a.buf.clear();
            a.discarding = f.total_len as usize > limits.max_message;
            if a.discarding {
                outcome.drop = Some(DropReason::Oversized);
            } else {
                a.buf.reserve(f.total_len as usize);
            }
        } else if !a.active
            || a.first_seq + f.index as u64 != seq
            || a.count != f.count
            || a.total_len != f.total_len
        {
            outcome.malformed += 1;
            if !a.active || f.index == f.count - 1 {
                if a.active {
                    self.finish_assembly();
                }
                return;
            }
            a.discarding = true;
        }
        let a = &mut self.assembly;
        a.next_index = f.index + 1;
        if !a.discarding {
            if a.buf.len() + payload.len() > a.total_len as usize {
                outcome.malformed += 1;
                a.discarding = true;
            } else {
                a.buf.extend_from_slice(payload);
            }
        }
        if f.index + 1 == f.count {
            if a.discarding || a.buf.len() != a.total_len as usize {
                if !a.discarding {
                    outcome.malformed += 1;
                }
                self.finish_assembly();
                return;
            }
            a.complete = true;
            if deliver(a.first_seq, &a.buf) {
                outcome.delivered += 1;
                self.finish_assembly();
            }
        }
    }

    fn finish_assembly(&mut self) {
        let a = &mut self.assembly;
        a.active = false;
        a.complete = false;
        a.discarding = false;
        if a.buf.capacity() > 4 << 20 {
            // Do not pin a huge buffer after a rare huge message.
            a.buf = Vec::new();
        }
        a.buf.clear();
    }

    /// A sender heartbeat: the stream extends to `next_seq`. A claim beyond the receive window
    /// is impossible for a sender that obeys flow control and is dropped, so a forged heartbeat
    /// cannot create a gap that is never repaired.
    pub(crate) fn on_high(&mut self, next_seq: u64, limits: &RecvLimits, outcome: &mut Outcome) {
        if next_seq > self.cursor + limits.window_frames {
            outcome.drop = Some(DropReason::OutOfWindow);
            return;
        }
        // A wedged stream never waits for frames above its limit.
        let next_seq = self.limit.map_or(next_seq, |l| next_seq.min(l + 1));
        if next_seq > self.high {
            self.high = next_seq;
            outcome.new_gap = true;
        }
    }

    /// Writes the missing ranges below `high` (at most `max`) into `out`.
    pub(crate) fn missing(&self, out: &mut Vec<NakRange>, max: usize) {
        out.clear();
        let mut next = self.received;
        for (&seq, _) in self.held.range(self.received..) {
            if out.len() >= max {
                return;
            }
            if seq > next {
                out.push(NakRange {
                    start: next,
                    end: seq,
                });
            }
            next = seq + 1;
        }
        if next < self.high && out.len() < max {
            out.push(NakRange {
                start: next,
                end: self.high,
            });
        }
    }

    /// Bytes held (out of order or refused by the application).
    pub(crate) fn held_bytes(&self) -> usize {
        self.held_bytes + self.assembly.buf.len()
    }

    /// Wedges (or re-limits) the stream: it accepts no frame above `limit` (inclusive), which
    /// must not be below what it holds contiguously. Held frames above it are discarded.
    pub(crate) fn set_limit(&mut self, limit: u64) {
        debug_assert!(limit + 1 >= self.received);
        self.limit = Some(limit);
        let above: Vec<u64> = self.held.range(limit + 1..).map(|(k, _)| *k).collect();
        for k in above {
            if let Some(h) = self.held.remove(&k) {
                self.held_bytes -= h.data.len();
                self.recycle(h.data);
            }
        }
        self.high = self.high.min(limit + 1).max(self.received);
        self.debug_check();
    }

    /// Frees retained frames below the all-stable `point`; frames that arrive later below it
    /// are not retained at all.
    pub(crate) fn release_stable(&mut self, point: u64) {
        self.retention.release(point);
        self.debug_check();
    }

    /// True when frames `1..=through` are held and every message in them was taken by the
    /// application (a message cut in the middle by `through` is never delivered).
    pub(crate) fn flushed_through(&self, through: u64) -> bool {
        self.received > through && self.cursor > through && !self.assembly.complete
    }

    fn debug_check(&self) {
        debug_assert!(self.cursor <= self.received && self.received <= self.high);
        debug_assert!(self.retention.floor() <= self.received);
        debug_assert!(
            !self.retention.enabled
                || self.retention.floor() + self.retention.frames.len() as u64 == self.received
        );
        debug_assert!(self
            .limit
            .is_none_or(|l| self.held.range(l + 1..).next().is_none()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RecvLimits = RecvLimits {
        window_frames: 1000,
        window_bytes: 1 << 20,
        max_message: 1 << 20,
    };

    fn feed(
        s: &mut RecvStream,
        seq: u64,
        frag: Option<FragInfo>,
        p: &[u8],
        out: &mut Vec<(u64, Vec<u8>)>,
        accept: bool,
    ) -> Outcome {
        let mut o = Outcome::default();
        s.on_data(
            seq,
            frag,
            p,
            &LIMITS,
            &mut |q, m| {
                if accept {
                    out.push((q, m.to_vec()));
                }
                accept
            },
            &mut o,
        );
        o
    }

    #[test]
    fn in_order_out_of_order_and_duplicates() {
        let mut s = RecvStream::new(1, 1 << 16, true);
        let mut out = vec![];
        feed(&mut s, 1, None, b"a", &mut out, true);
        let o = feed(&mut s, 3, None, b"c", &mut out, true);
        assert!(o.new_gap);
        let mut m = vec![];
        s.missing(&mut m, 10);
        assert_eq!(m, vec![NakRange { start: 2, end: 3 }]);
        feed(&mut s, 2, None, b"b", &mut out, true);
        assert!(feed(&mut s, 2, None, b"b", &mut out, true).duplicate);
        assert_eq!(
            out.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>(),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!((s.cursor, s.received, s.high), (4, 4, 4));
    }

    #[test]
    fn fragments_reassemble_out_of_order() {
        let mut s = RecvStream::new(1, 1 << 16, true);
        let mut out = vec![];
        let f = |i| {
            Some(FragInfo {
                index: i,
                count: 3,
                total_len: 7,
            })
        };
        feed(&mut s, 3, f(2), b"g", &mut out, true);
        feed(&mut s, 1, f(0), b"abc", &mut out, true);
        assert!(out.is_empty());
        feed(&mut s, 2, f(1), b"def", &mut out, true);
        assert_eq!(out, vec![(1, b"abcdefg".to_vec())]);
    }

    #[test]
    fn refusal_holds_and_pump_delivers_later() {
        let mut s = RecvStream::new(1, 1 << 16, true);
        let mut out = vec![];
        feed(&mut s, 1, None, b"a", &mut out, false);
        feed(&mut s, 2, None, b"b", &mut out, false);
        assert_eq!(s.consumed(), 1);
        assert_eq!(s.received, 3);
        assert_eq!(s.cursor, 1);
        assert!(s.has_backlog());
        let mut o = Outcome::default();
        s.pump(
            &LIMITS,
            &mut |q, m| {
                out.push((q, m.to_vec()));
                true
            },
            &mut o,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(s.consumed(), 3);
    }

    #[test]
    fn oversized_message_is_discarded_but_stream_continues() {
        let mut s = RecvStream::new(1, 1 << 16, true);
        let mut out = vec![];
        let big = |i| {
            Some(FragInfo {
                index: i,
                count: 2,
                total_len: (2 << 20) as u32,
            })
        };
        let o = feed(&mut s, 1, big(0), b"x", &mut out, true);
        assert_eq!(o.drop, Some(DropReason::Oversized));
        feed(&mut s, 2, big(1), b"y", &mut out, true);
        feed(&mut s, 3, None, b"next", &mut out, true);
        assert_eq!(out, vec![(3, b"next".to_vec())]);
    }

    #[test]
    fn window_is_enforced() {
        let mut s = RecvStream::new(1, 1 << 16, true);
        let mut out = vec![];
        let o = feed(&mut s, 5000, None, b"far", &mut out, true);
        assert_eq!(o.drop, Some(DropReason::OutOfWindow));
    }

    #[test]
    fn retention_keeps_contiguous_frames_until_released() {
        let mut s = RecvStream::new(1, 1 << 16, true);
        let mut out = vec![];
        feed(&mut s, 1, None, b"a", &mut out, true);
        feed(&mut s, 3, None, b"ccc", &mut out, true);
        assert_eq!(
            s.retention.bytes(),
            1,
            "out-of-order frames are retained once contiguous"
        );
        feed(&mut s, 2, None, b"bb", &mut out, true);
        assert_eq!(s.retention.bytes(), 6);
        let (f, b) = s.retention.get(3).unwrap();
        assert_eq!((f.index, f.count, f.total_len, b), (0, 1, 3, &b"ccc"[..]));
        s.release_stable(3);
        assert_eq!(s.retention.floor(), 3);
        assert!(s.retention.get(2).is_none());
        assert_eq!(s.retention.bytes(), 3);
        s.release_stable(100); // others are ahead: nothing below 100 is kept any more
        assert_eq!(s.retention.floor(), 4);
        assert_eq!(s.retention.bytes(), 0);
        feed(&mut s, 4, None, b"dddd", &mut out, true);
        assert_eq!((s.retention.bytes(), s.retention.floor()), (0, 5));
    }

    #[test]
    fn full_retention_treats_the_frame_as_lost() {
        let mut s = RecvStream::new(1, 8, true);
        let mut out = vec![];
        feed(&mut s, 1, None, b"12345", &mut out, true);
        let o = feed(&mut s, 2, None, b"6789", &mut out, true);
        assert_eq!(o.retention_full, 1);
        assert!(o.new_gap);
        assert_eq!((s.received, out.len()), (2, 1));
        let mut m = vec![];
        s.missing(&mut m, 4);
        assert_eq!(m, vec![NakRange { start: 2, end: 3 }]);
        s.release_stable(2);
        feed(&mut s, 2, None, b"6789", &mut out, true);
        assert_eq!((s.received, out.len()), (3, 2));
        // Out of order: the held frame is discarded when it cannot be retained.
        feed(&mut s, 4, None, b"xxxx", &mut out, true);
        let o = feed(&mut s, 3, None, b"yyyy", &mut out, true);
        assert_eq!(o.retention_full, 1, "{o:?}");
        assert_eq!(s.received, 4);
        assert_eq!(s.held_bytes(), 0);
    }

    #[test]
    fn disabled_retention_keeps_nothing() {
        let mut s = RecvStream::new(1, 8, false);
        let mut out = vec![];
        for q in 1..10 {
            feed(&mut s, q, None, b"0123456789", &mut out, true);
        }
        assert_eq!(
            (s.received, s.retention.bytes(), s.retention.floor()),
            (10, 0, 10)
        );
    }

    #[test]
    fn limit_drops_frames_above_and_flush_raises_it() {
        let mut s = RecvStream::new(1, 1 << 16, true);
        let mut out = vec![];
        feed(&mut s, 1, None, b"a", &mut out, true);
        feed(&mut s, 3, None, b"c", &mut out, true);
        feed(&mut s, 5, None, b"e", &mut out, true);
        s.set_limit(s.received - 1);
        assert_eq!((s.limit, s.high, s.held_bytes()), (Some(1), 2, 0));
        assert!(!s.has_gap());
        let o = feed(&mut s, 2, None, b"b", &mut out, true);
        assert_eq!(o.drop, Some(DropReason::Wedged));
        let mut o = Outcome::default();
        s.on_high(9, &LIMITS, &mut o);
        assert!(
            !s.has_gap(),
            "a heartbeat cannot move a wedged stream past its limit"
        );
        assert!(s.flushed_through(1));
        s.set_limit(3);
        feed(&mut s, 3, None, b"c", &mut out, true);
        assert!(!s.flushed_through(3));
        feed(&mut s, 2, None, b"b", &mut out, true);
        assert!(s.flushed_through(3));
        assert_eq!(out.len(), 3);
        assert_eq!(
            feed(&mut s, 4, None, b"d", &mut out, true).drop,
            Some(DropReason::Wedged)
        );
    }

    #[test]
    fn a_cut_inside_a_fragmented_message_never_delivers_it() {
        let mut s = RecvStream::new(1, 1 << 16, true);
        let mut out = vec![];
        let f = |i| {
            Some(FragInfo {
                index: i,
                count: 3,
                total_len: 3,
            })
        };
        feed(&mut s, 1, f(0), b"a", &mut out, true);
        feed(&mut s, 2, f(1), b"b", &mut out, true);
        s.set_limit(2);
        assert!(s.flushed_through(2));
        assert!(out.is_empty());
    }
}
