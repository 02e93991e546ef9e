//! One outgoing reliable FIFO stream (a member's group stream, or a point-to-point stream to
//! one peer): admission into the retention buffer, frame bookkeeping, per-receiver receipt
//! state, flow-control window, retransmission requests and garbage collection.
//!
//! Frames are numbered from 1. A message becomes one MSG frame or `count` FRAG frames with
//! consecutive sequence numbers; its bytes are stored contiguously in the [`ByteStore`], so a
//! fragment is a sub-slice and a whole message (for self-delivery) is one slice.

use std::collections::VecDeque;

use crate::protocol::Destination;
use crate::{MemberId, Timestamp};

/// A FIFO ring of byte allocations with a fixed capacity. Allocations are contiguous; when one
/// does not fit before the end, the tail is skipped (and accounted as used until freed).
#[derive(Debug)]
pub(crate) struct ByteStore {
    buf: Vec<u8>,
    capacity: usize,
    head: usize,
    tail: usize,
    used: usize,
}

impl ByteStore {
    pub(crate) fn new(capacity: usize) -> Self {
        // Allocated on first use; zeroed allocations are lazily backed by the OS.
        ByteStore {
            buf: Vec::new(),
            capacity,
            head: 0,
            tail: 0,
            used: 0,
        }
    }

    /// Reserves `len` contiguous bytes; returns their offset.
    pub(crate) fn alloc(&mut self, len: usize) -> Option<usize> {
        if len > self.capacity {
            return None;
        }
        if self.buf.is_empty() && self.capacity > 0 {
            self.buf = vec![0u8; self.capacity];
        }
        if self.used == 0 {
            self.head = 0;
            self.tail = 0;
        }
        let wrapped = self.head < self.tail || (self.head == self.tail && self.used > 0);
        let offset = if !wrapped {
            if self.capacity - self.head >= len {
                self.head
            } else if self.tail >= len {
                // Skip the end of the buffer; the skipped bytes count as used.
                self.used += self.capacity - self.head;
                0
            } else {
                return None;
            }
        } else if self.tail - self.head >= len {
            self.head
        } else {
            return None;
        };
        self.head = offset + len;
        self.used += len;
        debug_assert!(self.used <= self.capacity);
        Some(offset)
    }

    /// Frees the oldest allocation, which must be `offset..offset+len`.
    pub(crate) fn free_front(&mut self, offset: usize, len: usize) {
        if len == 0 {
            // Zero-length allocations occupy nothing; freeing them is a no-op.
            return;
        }
        if offset != self.tail {
            // The allocation wrapped: the skipped end of the buffer is freed with it.
            debug_assert_eq!(offset, 0);
            self.used -= self.capacity - self.tail;
        }
        self.used -= len;
        self.tail = offset + len;
        if self.used == 0 {
            self.head = 0;
            self.tail = 0;
        }
    }

    pub(crate) fn slice(&self, offset: usize, len: usize) -> &[u8] {
        &self.buf[offset..offset + len]
    }

    pub(crate) fn slice_mut(&mut self, offset: usize, len: usize) -> &mut [u8] {
        &mut self.buf[offset..offset + len]
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn used(&self) -> usize {
        self.used
    }
}

/// Bookkeeping of one retained frame.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrameMeta {
    /// Offset of this frame's bytes in the store.
    pub offset: usize,
    /// Bytes of this frame.
    pub len: u32,
    /// Fragment index (0 for a whole message).
    pub index: u32,
    /// Fragments in the message (1 = unfragmented MSG frame).
    pub count: u32,
    /// Whole message length.
    pub total_len: u32,
    /// Cumulative payload bytes of the stream through this frame.
    pub cum_end: u64,
    /// Last retransmission (ZERO = never retransmitted).
    pub retransmitted_at: Timestamp,
}

/// What one receiver has reported about this stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReceiverState {
    pub member: MemberId,
    /// All frames below this are held by the receiver.
    pub received: u64,
    /// All frames below this were handed to the receiver's application.
    pub consumed: u64,
}

/// Why a message could not be admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Retention buffer full until receivers catch up.
    Full,
    /// The message can never be admitted: more frames than the stream may retain, or more
    /// bytes than its buffer holds.
    TooLarge,
}

#[derive(Debug)]
pub(crate) struct SendStream {
    /// Next sequence number to assign.
    pub next_seq: u64,
    /// First sequence number never transmitted.
    pub next_new: u64,
    /// First retained sequence number.
    floor: u64,
    /// Cumulative bytes of all frames below `floor`.
    floor_cum: u64,
    frames: VecDeque<FrameMeta>,
    store: ByteStore,
    max_frames: usize,
    /// Per receiving member.
    pub receivers: Vec<ReceiverState>,
    /// Retransmissions requested: (destination, start, end).
    pub retransmit: VecDeque<(Destination, u64, u64)>,
    /// Next frame to deliver to the local member (self-delivery), if enabled.
    pub self_cursor: Option<u64>,
}

impl SendStream {
    pub(crate) fn new(
        buffer_bytes: usize,
        max_frames: usize,
        receivers: &[MemberId],
        self_delivery: bool,
    ) -> Self {
        SendStream {
            next_seq: 1,
            next_new: 1,
            floor: 1,
            floor_cum: 0,
            frames: VecDeque::new(),
            store: ByteStore::new(buffer_bytes),
            max_frames,
            receivers: receivers
                .iter()
                .map(|m| ReceiverState {
                    member: *m,
                    received: 1,
                    consumed: 1,
                })
                .collect(),
            retransmit: VecDeque::new(),
            self_cursor: self_delivery.then_some(1),
        }
    }

    /// Admits one message, split into frames of at most `frag_payload` bytes unless it fits in
    /// one frame of `whole_payload`. Returns the first frame's sequence number.
    pub(crate) fn push(
        &mut self,
        payload: &[u8],
        whole_payload: usize,
        frag_payload: usize,
    ) -> Result<u64, Admission> {
        let count = if payload.len() <= whole_payload {
            1
        } else {
            payload.len().div_ceil(frag_payload)
        };
        if count > self.max_frames || payload.len() > self.store.capacity() {
            return Err(Admission::TooLarge);
        }
        if self.frames.len() + count > self.max_frames {
            return Err(Admission::Full);
        }
        let offset = self.store.alloc(payload.len()).ok_or(Admission::Full)?;
        self.store
            .slice_mut(offset, payload.len())
            .copy_from_slice(payload);
        let first = self.next_seq;
        let mut cum = self.frames.back().map_or(self.floor_cum, |f| f.cum_end);
        for index in 0..count {
            let start = if count == 1 { 0 } else { index * frag_payload };
            let len = if count == 1 {
                payload.len()
            } else {
                frag_payload.min(payload.len() - start)
            };
            cum += len as u64;
            self.frames.push_back(FrameMeta {
                offset: offset + start,
                len: len as u32,
                index: index as u32,
                count: count as u32,
                total_len: payload.len() as u32,
                cum_end: cum,
                retransmitted_at: Timestamp::ZERO,
            });
        }
        self.next_seq += count as u64;
        debug_assert_eq!(self.floor + self.frames.len() as u64, self.next_seq);
        if self.receivers.is_empty() {
            // Nobody to transmit to (a group of one): free what self-delivery allows now.
            self.collect();
        }
        Ok(first)
    }

    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }

    pub(crate) fn meta(&self, seq: u64) -> Option<&FrameMeta> {
        seq.checked_sub(self.floor)
            .and_then(|i| self.frames.get(i as usize))
    }

    pub(crate) fn meta_mut(&mut self, seq: u64) -> Option<&mut FrameMeta> {
        seq.checked_sub(self.floor)
            .and_then(|i| self.frames.get_mut(i as usize))
    }

    pub(crate) fn bytes(&self, meta: &FrameMeta) -> &[u8] {
        self.store.slice(meta.offset, meta.len as usize)
    }

    /// The whole message whose first frame is `first` (for self-delivery).
    pub(crate) fn message(&self, first: u64) -> Option<(&[u8], u32)> {
        let m = self.meta(first)?;
        debug_assert_eq!(m.index, 0);
        Some((self.store.slice(m.offset, m.total_len as usize), m.count))
    }

    /// Lowest consumed position over receivers (and the local member, for self-delivery).
    pub(crate) fn min_consumed(&self) -> u64 {
        let r = self
            .receivers
            .iter()
            .map(|r| r.consumed)
            .min()
            .unwrap_or(self.next_new);
        self.self_cursor.map_or(r, |s| r.min(s))
    }

    /// True while some receiver has not reported consuming everything transmitted: the sender
    /// then heartbeats so that a lost receipt report cannot stall retention or the window.
    pub(crate) fn awaiting_reports(&self) -> bool {
        self.receivers.iter().any(|r| r.consumed < self.next_new)
    }

    /// Lowest received position over receivers.
    pub(crate) fn min_received(&self) -> u64 {
        self.receivers
            .iter()
            .map(|r| r.received)
            .min()
            .unwrap_or(self.next_new)
    }

    /// May frame `next_new` be transmitted under the window?
    pub(crate) fn window_open(&self, window_frames: usize, window_bytes: usize) -> bool {
        if self.next_new >= self.next_seq {
            return false;
        }
        let base = self
            .receivers
            .iter()
            .map(|r| r.consumed)
            .min()
            .unwrap_or(self.next_new)
            .max(self.floor);
        let frames_in_flight = self.next_new - base;
        if frames_in_flight >= window_frames as u64 {
            return false;
        }
        let cum_base = if base == self.floor {
            self.floor_cum
        } else {
            self.meta(base - 1).map_or(self.floor_cum, |m| m.cum_end)
        };
        let cum_sent = if self.next_new == self.floor {
            self.floor_cum
        } else {
            self.meta(self.next_new - 1)
                .map_or(self.floor_cum, |m| m.cum_end)
        };
        // Always allow one frame so a message larger than the window can still progress.
        frames_in_flight == 0 || cum_sent - cum_base < window_bytes as u64
    }

    /// Records a receipt report from `member`. Returns true if anything advanced.
    pub(crate) fn on_ack(&mut self, member: MemberId, received: u64, consumed: u64) -> bool {
        let next_new = self.next_new;
        let Some(r) = self.receivers.iter_mut().find(|r| r.member == member) else {
            return false;
        };
        // A receiver cannot hold what was never sent; clamp forged or confused reports.
        let received = received.min(next_new);
        let consumed = consumed.min(received);
        let advanced = received > r.received || consumed > r.consumed;
        r.received = r.received.max(received);
        r.consumed = r.consumed.max(consumed);
        if advanced {
            self.collect();
        }
        advanced
    }

    /// Queues retransmission of `[start, end)` to `dest` for `requester`, clipped to what is
    /// retained and sent and to what the requester has not already reported receiving (so one
    /// NAK cannot make the sender resend a whole window).
    pub(crate) fn on_nak(
        &mut self,
        requester: MemberId,
        dest: Destination,
        start: u64,
        end: u64,
    ) -> bool {
        let held = self
            .receivers
            .iter()
            .find(|r| r.member == requester)
            .map_or(self.floor, |r| r.received);
        let start = start.max(self.floor).max(held);
        let end = end.min(self.next_new);
        if start >= end {
            return false;
        }
        if let Some(last) = self.retransmit.back_mut() {
            if last.0 == dest && last.1 <= start && start <= last.2 {
                last.2 = last.2.max(end);
                return true;
            }
        }
        if self.retransmit.len() >= 1024 {
            return false;
        }
        self.retransmit.push_back((dest, start, end));
        true
    }

    /// Advances the self-delivery cursor past the message starting at `first`.
    pub(crate) fn self_delivered(&mut self, first: u64, count: u32) {
        debug_assert_eq!(self.self_cursor, Some(first));
        self.self_cursor = Some(first + count as u64);
        self.collect();
    }

    /// Frees frames every receiver (and self-delivery) has consumed.
    pub(crate) fn collect(&mut self) {
        if self.receivers.is_empty() {
            // A stream with no receivers has nothing to transmit: everything counts as sent.
            self.next_new = self.next_seq;
        }
        let upto = self.min_consumed().min(self.next_new);
        while self.floor < upto {
            let Some(m) = self.frames.pop_front() else {
                break;
            };
            self.store.free_front(m.offset, m.len as usize);
            self.floor_cum = m.cum_end;
            self.floor += 1;
        }
    }

    /// Bytes retained.
    pub(crate) fn retained_bytes(&self) -> usize {
        self.store.used()
    }

    /// Frames retained.
    pub(crate) fn retained_frames(&self) -> usize {
        self.frames.len()
    }

    /// Number of frames held by at least `k` receivers, as a position: every frame below the
    /// returned sequence number is held by at least `k` of the receivers.
    pub(crate) fn stable_through(&self, k: usize) -> u64 {
        if k == 0 {
            return self.next_seq;
        }
        let mut v: Vec<u64> = self.receivers.iter().map(|r| r.received).collect();
        if k > v.len() {
            return 1;
        }
        v.sort_unstable_by(|a, b| b.cmp(a));
        v[k - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_store_wraps_and_frees_in_order() {
        let mut s = ByteStore::new(100);
        let a = s.alloc(40).unwrap();
        let b = s.alloc(40).unwrap();
        assert_eq!((a, b), (0, 40));
        assert!(s.alloc(30).is_none());
        s.free_front(a, 40);
        let c = s.alloc(30).unwrap(); // wraps; 20 bytes at the end skipped
        assert_eq!(c, 0);
        assert_eq!(s.used(), 40 + 20 + 30);
        s.free_front(b, 40);
        s.free_front(c, 30);
        assert_eq!(s.used(), 0);
    }

    #[test]
    fn fragments_stream_and_collect() {
        let peers = [MemberId(2), MemberId(3)];
        let mut s = SendStream::new(1 << 16, 1024, &peers, false);
        let payload: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let first = s.push(&payload, 1000, 1000).unwrap();
        assert_eq!(first, 1);
        assert_eq!(s.next_seq, 4);
        let m = *s.meta(3).unwrap();
        assert_eq!((m.index, m.count, m.len, m.total_len), (2, 3, 500, 2500));
        assert_eq!(s.bytes(&m), &payload[2000..]);
        s.next_new = 4;
        assert!(s.on_ack(MemberId(2), 4, 4));
        assert_eq!(s.floor(), 1);
        assert!(s.on_ack(MemberId(3), 4, 2));
        assert_eq!(s.floor(), 2);
        assert_eq!(s.stable_through(2), 4);
        assert_eq!(s.min_received(), 4);
    }

    #[test]
    fn window_limits_frames_in_flight() {
        let mut s = SendStream::new(1 << 16, 1024, &[MemberId(2)], false);
        for _ in 0..10 {
            s.push(&[0u8; 10], 100, 100).unwrap();
        }
        let mut sent = 0;
        while s.window_open(4, 1 << 20) {
            s.next_new += 1;
            sent += 1;
        }
        assert_eq!(sent, 4);
        s.on_ack(MemberId(2), 3, 3);
        assert!(s.window_open(4, 1 << 20));
    }

    #[test]
    fn admission_fails_when_full_and_recovers() {
        let mut s = SendStream::new(100, 1024, &[MemberId(2)], false);
        s.push(&[1u8; 60], 1000, 1000).unwrap();
        assert_eq!(s.push(&[1u8; 60], 1000, 1000), Err(Admission::Full));
        s.next_new = 2;
        s.on_ack(MemberId(2), 2, 2);
        assert!(s.push(&[1u8; 60], 1000, 1000).is_ok());
    }
}
