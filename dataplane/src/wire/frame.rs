//! Frames: the units packed into a datagram body, their encoder ([`PacketWriter`]) and their
//! checked decoder ([`FrameReader`]).
//!
//! Every frame starts with a 4-byte prefix, then a kind-specific sub-header and payload:
//!
//! ```text
//! prefix:  kind u8 | flags u8 | len u16 (bytes after the prefix)
//! MSG  1:  seq u64 | payload                                   whole message
//! FRAG 2:  seq u64 | index u32 | count u32 | total_len u32 | payload   one fragment
//! RAW  3:  seq u64 | payload                                   unreliable message
//! ACK  4:  n × { sender u64 | received u64 | consumed u64 }     receipt report
//! NAK  5:  target u64 | n × { start u64 | end u64 }             missing [start, end)
//! HIGH 6:  next_seq u64 | floor u64                             sender heartbeat
//! RELAY_REQ 7: origin u64 | from u64 | to u64                  flush: ask for origin's frames
//! RELAY 8: origin u64 | seq u64 | index u32 | count u32 | total_len u32 | payload
//!                                                              flush: one frame of origin's stream
//! ```
//! Flag bit 0 (`P2P`) says the frame belongs to the point-to-point stream between the packet's
//! sender and its addressee rather than to the group stream. Sequence numbers count frames: a
//! message fragmented into `count` pieces uses `count` consecutive sequence numbers, the
//! first being `seq - index`.

use crate::wire::header::{PacketHeader, PacketKind, HEADER_LEN, MAGIC, VERSION};
use crate::wire::DropReason;
use crate::{GroupId, MemberId, ViewId};
use zerocopy::byteorder::network_endian::{U16, U32, U64};
use zerocopy::IntoBytes;

/// Bytes of the common frame prefix.
pub const FRAME_PREFIX_LEN: usize = 4;
/// Sub-header bytes of MSG and RAW frames.
pub const MSG_SUBHEADER_LEN: usize = 8;
/// Sub-header bytes of FRAG frames.
pub const FRAG_SUBHEADER_LEN: usize = 20;
/// Sub-header bytes of RELAY frames (the largest data sub-header: every data frame's payload is
/// sized so that it can later be relayed in one RELAY frame).
pub const RELAY_SUBHEADER_LEN: usize = 28;
/// Content bytes of a RELAY_REQ frame.
pub const RELAY_REQ_LEN: usize = 24;
/// Bytes of one ACK entry.
pub const ACK_ENTRY_LEN: usize = 24;
/// Bytes of one NAK range.
pub const NAK_RANGE_LEN: usize = 16;
/// Most frames in one datagram (the header counts them in a byte).
pub const MAX_FRAMES: usize = 255;

const KIND_MSG: u8 = 1;
const KIND_FRAG: u8 = 2;
const KIND_RAW: u8 = 3;
const KIND_ACK: u8 = 4;
const KIND_NAK: u8 = 5;
const KIND_HIGH: u8 = 6;
const KIND_RELAY_REQ: u8 = 7;
const KIND_RELAY: u8 = 8;
const FLAG_P2P: u8 = 1;

/// One receipt-report entry: what the reporter holds of `sender`'s stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckEntry {
    /// Whose stream.
    pub sender: MemberId,
    /// Every frame with a sequence number below this has been received.
    pub received: u64,
    /// Every frame below this has been handed to the application (flow control).
    pub consumed: u64,
}

/// A missing range `[start, end)` of sequence numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NakRange {
    /// First missing sequence number.
    pub start: u64,
    /// One past the last missing sequence number.
    pub end: u64,
}

/// A decoded frame borrowing from the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole message.
    Msg {
        /// Point-to-point stream rather than the group stream.
        p2p: bool,
        /// Its sequence number.
        seq: u64,
        /// Its bytes.
        payload: &'a [u8],
    },
    /// One fragment of a large message.
    Frag {
        /// Point-to-point stream rather than the group stream.
        p2p: bool,
        /// This fragment's sequence number.
        seq: u64,
        /// Its index within the message (0-based).
        index: u32,
        /// Number of fragments of the message.
        count: u32,
        /// The whole message's length in bytes.
        total_len: u32,
        /// This fragment's bytes.
        payload: &'a [u8],
    },
    /// An unreliable message.
    Raw {
        /// Sent point-to-point rather than to the group.
        p2p: bool,
        /// Sender's raw counter (for audit and duplicate detection only).
        seq: u64,
        /// Its bytes.
        payload: &'a [u8],
    },
    /// A receipt report.
    Ack {
        /// About point-to-point streams to the reporter rather than group streams.
        p2p: bool,
        /// The entries, decoded lazily.
        entries: AckEntries<'a>,
    },
    /// A negative acknowledgement.
    Nak {
        /// About the target's point-to-point stream to the NAKer.
        p2p: bool,
        /// Whose stream has the gaps.
        target: MemberId,
        /// The missing ranges, decoded lazily.
        ranges: NakRanges<'a>,
    },
    /// A sender heartbeat announcing its stream's extent.
    High {
        /// About the point-to-point stream to the addressee.
        p2p: bool,
        /// The next sequence number the sender will assign.
        next_seq: u64,
        /// The sender no longer holds anything below this.
        floor: u64,
    },
    /// A flush relay request: send me `origin`'s group-stream frames `from..=to` of this view.
    RelayReq {
        /// Whose group stream.
        origin: MemberId,
        /// First frame wanted (≥ 1).
        from: u64,
        /// Last frame wanted (≥ `from`).
        to: u64,
    },
    /// One frame of `origin`'s group stream, relayed during a flush.
    Relay {
        /// Whose group stream the frame belongs to.
        origin: MemberId,
        /// The frame's sequence number.
        seq: u64,
        /// Fragment index (0 for a whole message).
        index: u32,
        /// Fragments of the message (1 = a whole message).
        count: u32,
        /// The whole message's length.
        total_len: u32,
        /// The frame's bytes.
        payload: &'a [u8],
    },
}

/// Lazily decoded ACK entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckEntries<'a> {
    bytes: &'a [u8],
}

impl<'a> Iterator for AckEntries<'a> {
    type Item = AckEntry;
    fn next(&mut self) -> Option<AckEntry> {
        if self.bytes.len() < ACK_ENTRY_LEN {
            return None;
        }
        let (e, rest) = self.bytes.split_at(ACK_ENTRY_LEN);
        self.bytes = rest;
        Some(AckEntry {
            sender: MemberId(read_u64(&e[0..8])),
            received: read_u64(&e[8..16]),
            consumed: read_u64(&e[16..24]),
        })
    }
}

/// Lazily decoded NAK ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NakRanges<'a> {
    bytes: &'a [u8],
}

impl<'a> Iterator for NakRanges<'a> {
    type Item = NakRange;
    fn next(&mut self) -> Option<NakRange> {
        if self.bytes.len() < NAK_RANGE_LEN {
            return None;
        }
        let (e, rest) = self.bytes.split_at(NAK_RANGE_LEN);
        self.bytes = rest;
        Some(NakRange {
            start: read_u64(&e[0..8]),
            end: read_u64(&e[8..16]),
        })
    }
}

fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn read_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

/// Iterates over the frames of an opened datagram body, validating each one.
///
/// A malformed frame yields `Err(DropReason::MalformedFrame)` once and ends the iteration (the
/// rest of the body cannot be trusted to be framed correctly).
#[derive(Clone, Debug)]
pub struct FrameReader<'a> {
    body: &'a [u8],
    remaining_frames: u8,
    failed: bool,
}

impl<'a> FrameReader<'a> {
    /// A reader over `body` that expects `frame_count` frames filling it exactly.
    pub fn new(body: &'a [u8], frame_count: u8) -> Self {
        FrameReader {
            body,
            remaining_frames: frame_count,
            failed: false,
        }
    }

    fn fail(&mut self) -> Option<Result<Frame<'a>, DropReason>> {
        self.failed = true;
        Some(Err(DropReason::MalformedFrame))
    }
}

impl<'a> Iterator for FrameReader<'a> {
    type Item = Result<Frame<'a>, DropReason>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.remaining_frames == 0 {
            // The body must be consumed exactly by the announced frames.
            return if self.body.is_empty() {
                None
            } else {
                self.fail()
            };
        }
        if self.body.len() < FRAME_PREFIX_LEN {
            return self.fail();
        }
        let kind = self.body[0];
        let flags = self.body[1];
        let len = u16::from_be_bytes([self.body[2], self.body[3]]) as usize;
        if flags & !FLAG_P2P != 0 || self.body.len() < FRAME_PREFIX_LEN + len {
            return self.fail();
        }
        let p2p = flags & FLAG_P2P != 0;
        let content = &self.body[FRAME_PREFIX_LEN..FRAME_PREFIX_LEN + len];
        self.body = &self.body[FRAME_PREFIX_LEN + len..];
        self.remaining_frames -= 1;
        let frame = match kind {
            KIND_MSG | KIND_RAW => {
                if len < MSG_SUBHEADER_LEN {
                    return self.fail();
                }
                let seq = read_u64(content);
                if seq == 0 {
                    return self.fail();
                }
                let payload = &content[MSG_SUBHEADER_LEN..];
                if kind == KIND_MSG {
                    Frame::Msg { p2p, seq, payload }
                } else {
                    Frame::Raw { p2p, seq, payload }
                }
            }
            KIND_FRAG => {
                if len <= FRAG_SUBHEADER_LEN {
                    return self.fail();
                }
                let seq = read_u64(content);
                let index = read_u32(&content[8..]);
                let count = read_u32(&content[12..]);
                let total_len = read_u32(&content[16..]);
                let payload = &content[FRAG_SUBHEADER_LEN..];
                let valid = count >= 2
                    && index < count
                    && seq > index as u64
                    && (total_len as u64) >= count as u64
                    && payload.len() <= total_len as usize;
                if !valid {
                    return self.fail();
                }
                Frame::Frag {
                    p2p,
                    seq,
                    index,
                    count,
                    total_len,
                    payload,
                }
            }
            KIND_ACK => {
                if len == 0 || !len.is_multiple_of(ACK_ENTRY_LEN) {
                    return self.fail();
                }
                Frame::Ack {
                    p2p,
                    entries: AckEntries { bytes: content },
                }
            }
            KIND_NAK => {
                if len < 8 + NAK_RANGE_LEN || !(len - 8).is_multiple_of(NAK_RANGE_LEN) {
                    return self.fail();
                }
                let ranges = NakRanges {
                    bytes: &content[8..],
                };
                if ranges.clone().any(|r| r.start == 0 || r.start >= r.end) {
                    return self.fail();
                }
                Frame::Nak {
                    p2p,
                    target: MemberId(read_u64(content)),
                    ranges,
                }
            }
            KIND_HIGH => {
                if len != 16 {
                    return self.fail();
                }
                let next_seq = read_u64(content);
                let floor = read_u64(&content[8..]);
                if next_seq == 0 || floor > next_seq {
                    return self.fail();
                }
                Frame::High {
                    p2p,
                    next_seq,
                    floor,
                }
            }
            KIND_RELAY_REQ => {
                if len != RELAY_REQ_LEN || p2p {
                    return self.fail();
                }
                let origin = MemberId(read_u64(content));
                let from = read_u64(&content[8..]);
                let to = read_u64(&content[16..]);
                if from == 0 || from > to {
                    return self.fail();
                }
                Frame::RelayReq { origin, from, to }
            }
            KIND_RELAY => {
                if len < RELAY_SUBHEADER_LEN || p2p {
                    return self.fail();
                }
                let origin = MemberId(read_u64(content));
                let seq = read_u64(&content[8..]);
                let index = read_u32(&content[16..]);
                let count = read_u32(&content[20..]);
                let total_len = read_u32(&content[24..]);
                let payload = &content[RELAY_SUBHEADER_LEN..];
                let valid = if count == 1 {
                    seq >= 1 && index == 0 && total_len as usize == payload.len()
                } else {
                    count >= 2
                        && index < count
                        && seq > index as u64
                        && (total_len as u64) >= count as u64
                        && payload.len() <= total_len as usize
                };
                if !valid {
                    return self.fail();
                }
                Frame::Relay {
                    origin,
                    seq,
                    index,
                    count,
                    total_len,
                    payload,
                }
            }
            _ => return self.fail(),
        };
        Some(Ok(frame))
    }
}

/// Builds one datagram in a caller-provided buffer: header, then frames, then (on
/// [`PacketWriter::finish`]) the header fields are filled in. Sealing is done afterwards by
/// [`crate::wire::seal::Sealer::seal`], which appends the trailer.
#[derive(Debug)]
pub struct PacketWriter<'a> {
    buf: &'a mut [u8],
    pos: usize,
    limit: usize,
    frames: usize,
}

impl<'a> PacketWriter<'a> {
    /// Starts a datagram of at most `mtu` bytes (trailer included; `trailer_len` is reserved).
    ///
    /// # Panics
    /// If `buf` is shorter than `mtu` or `mtu` cannot hold a header and trailer: both are
    /// configuration errors caught at start-up.
    pub fn new(buf: &'a mut [u8], mtu: usize, trailer_len: usize) -> Self {
        assert!(buf.len() >= mtu && mtu >= HEADER_LEN + trailer_len + 64);
        PacketWriter {
            buf,
            pos: HEADER_LEN,
            limit: mtu - trailer_len,
            frames: 0,
        }
    }

    /// Bytes of frame content (after a frame prefix) that still fit.
    pub fn room(&self) -> usize {
        if self.frames >= MAX_FRAMES {
            return 0;
        }
        self.limit
            .saturating_sub(self.pos + FRAME_PREFIX_LEN)
            .min(u16::MAX as usize)
    }

    /// Number of frames written so far.
    pub fn frame_count(&self) -> usize {
        self.frames
    }

    /// True when no frame was written.
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    fn prefix(&mut self, kind: u8, p2p: bool, len: usize) {
        debug_assert!(len <= self.room());
        let b = &mut self.buf[self.pos..];
        b[0] = kind;
        b[1] = if p2p { FLAG_P2P } else { 0 };
        b[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        self.pos += FRAME_PREFIX_LEN;
        self.frames += 1;
    }

    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }

    /// Appends a MSG (or RAW when `raw`) frame; false (nothing written) if it does not fit.
    pub fn push_msg(&mut self, raw: bool, p2p: bool, seq: u64, payload: &[u8]) -> bool {
        let len = MSG_SUBHEADER_LEN + payload.len();
        if len > self.room() {
            return false;
        }
        debug_assert!(seq > 0);
        self.prefix(if raw { KIND_RAW } else { KIND_MSG }, p2p, len);
        self.put(&seq.to_be_bytes());
        self.put(payload);
        true
    }

    /// Appends a FRAG frame; false (nothing written) if it does not fit.
    pub fn push_frag(
        &mut self,
        p2p: bool,
        seq: u64,
        index: u32,
        count: u32,
        total_len: u32,
        payload: &[u8],
    ) -> bool {
        let len = FRAG_SUBHEADER_LEN + payload.len();
        if len > self.room() {
            return false;
        }
        debug_assert!(index < count && seq > index as u64);
        self.prefix(KIND_FRAG, p2p, len);
        self.put(&seq.to_be_bytes());
        self.put(&index.to_be_bytes());
        self.put(&count.to_be_bytes());
        self.put(&total_len.to_be_bytes());
        self.put(payload);
        true
    }

    /// Content bytes a reliable data frame of `len` payload bytes needs: a MSG frame when the
    /// message is not fragmented (`count == 1`), else a FRAG frame.
    pub fn data_frame_len(count: u32, len: usize) -> usize {
        len + if count == 1 {
            MSG_SUBHEADER_LEN
        } else {
            FRAG_SUBHEADER_LEN
        }
    }

    /// Appends one reliable data frame: MSG when `count == 1`, FRAG otherwise. False (nothing
    /// written) if it does not fit.
    pub fn push_data(
        &mut self,
        p2p: bool,
        seq: u64,
        index: u32,
        count: u32,
        total_len: u32,
        payload: &[u8],
    ) -> bool {
        if count == 1 {
            self.push_msg(false, p2p, seq, payload)
        } else {
            self.push_frag(p2p, seq, index, count, total_len, payload)
        }
    }

    /// Appends an ACK frame with as many of `entries` as fit; returns how many were written.
    pub fn push_ack(&mut self, p2p: bool, entries: &[AckEntry]) -> usize {
        let n = entries.len().min(self.room() / ACK_ENTRY_LEN);
        if n == 0 {
            return 0;
        }
        self.prefix(KIND_ACK, p2p, n * ACK_ENTRY_LEN);
        for e in &entries[..n] {
            self.put(&e.sender.0.to_be_bytes());
            self.put(&e.received.to_be_bytes());
            self.put(&e.consumed.to_be_bytes());
        }
        n
    }

    /// Appends a NAK frame with as many of `ranges` as fit; returns how many were written.
    pub fn push_nak(&mut self, p2p: bool, target: MemberId, ranges: &[NakRange]) -> usize {
        let n = ranges
            .len()
            .min(self.room().saturating_sub(8) / NAK_RANGE_LEN);
        if n == 0 {
            return 0;
        }
        self.prefix(KIND_NAK, p2p, 8 + n * NAK_RANGE_LEN);
        self.put(&target.0.to_be_bytes());
        for r in &ranges[..n] {
            debug_assert!(r.start > 0 && r.start < r.end);
            self.put(&r.start.to_be_bytes());
            self.put(&r.end.to_be_bytes());
        }
        n
    }

    /// Appends a HIGH frame; false if it does not fit.
    pub fn push_high(&mut self, p2p: bool, next_seq: u64, floor: u64) -> bool {
        if self.room() < 16 {
            return false;
        }
        debug_assert!(next_seq > 0 && floor <= next_seq);
        self.prefix(KIND_HIGH, p2p, 16);
        self.put(&next_seq.to_be_bytes());
        self.put(&floor.to_be_bytes());
        true
    }

    /// Appends a RELAY_REQ frame (`from ≥ 1`, `from ≤ to`); false if it does not fit.
    pub fn push_relay_req(&mut self, origin: MemberId, from: u64, to: u64) -> bool {
        if self.room() < RELAY_REQ_LEN {
            return false;
        }
        debug_assert!(from >= 1 && from <= to);
        self.prefix(KIND_RELAY_REQ, false, RELAY_REQ_LEN);
        self.put(&origin.0.to_be_bytes());
        self.put(&from.to_be_bytes());
        self.put(&to.to_be_bytes());
        true
    }

    /// Appends a RELAY frame carrying one frame of `origin`'s stream (`count == 1` for a whole
    /// message); false (nothing written) if it does not fit.
    #[allow(clippy::too_many_arguments)]
    pub fn push_relay(
        &mut self,
        origin: MemberId,
        seq: u64,
        index: u32,
        count: u32,
        total_len: u32,
        payload: &[u8],
    ) -> bool {
        let len = RELAY_SUBHEADER_LEN + payload.len();
        if len > self.room() {
            return false;
        }
        debug_assert!(seq >= 1 && index < count);
        self.prefix(KIND_RELAY, false, len);
        self.put(&origin.0.to_be_bytes());
        self.put(&seq.to_be_bytes());
        self.put(&index.to_be_bytes());
        self.put(&count.to_be_bytes());
        self.put(&total_len.to_be_bytes());
        self.put(payload);
        true
    }

    /// Writes the header and returns the length of header + body (the trailer is added by
    /// sealing). `flags` are the seal flags chosen by the sealer.
    #[allow(clippy::too_many_arguments)]
    pub fn finish(
        self,
        kind: PacketKind,
        view: ViewId,
        group: GroupId,
        sender: MemberId,
        packet_number: u64,
        flags: u8,
    ) -> usize {
        let body_len = self.pos - HEADER_LEN;
        debug_assert!(self.frames <= MAX_FRAMES && body_len <= u16::MAX as usize);
        let header = PacketHeader {
            magic: U32::new(MAGIC),
            version: VERSION,
            kind: kind as u8,
            flags,
            frame_count: self.frames as u8,
            body_len: U16::new(body_len as u16),
            fanout: U16::new(0),
            view_id: U32::new(view.0),
            group_id: U64::new(group.0),
            sender: U64::new(sender.0),
            packet_number: U64::new(packet_number),
        };
        self.buf[..HEADER_LEN].copy_from_slice(header.as_bytes());
        self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(buf: &[u8], len: usize) -> (&[u8], u8) {
        (&buf[HEADER_LEN..len], buf[7])
    }

    #[test]
    fn round_trip_every_kind() {
        let mut buf = vec![0u8; 1500];
        let mut w = PacketWriter::new(&mut buf, 1500, 8);
        assert!(w.push_msg(false, false, 7, b"hello"));
        assert!(w.push_frag(true, 12, 2, 5, 5000, &[9u8; 100]));
        assert!(w.push_msg(true, false, 3, b"raw"));
        let acks = [AckEntry {
            sender: MemberId(5),
            received: 10,
            consumed: 9,
        }];
        assert_eq!(w.push_ack(false, &acks), 1);
        let naks = [
            NakRange { start: 3, end: 5 },
            NakRange { start: 9, end: 10 },
        ];
        assert_eq!(w.push_nak(true, MemberId(4), &naks), 2);
        assert!(w.push_high(false, 20, 4));
        let len = w.finish(PacketKind::Group, ViewId(1), GroupId(2), MemberId(3), 99, 0);
        let (body, count) = body_of(&buf, len);
        assert_eq!(count, 6);
        let frames: Vec<_> = FrameReader::new(body, count)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            frames[0],
            Frame::Msg {
                p2p: false,
                seq: 7,
                payload: b"hello"
            }
        );
        match frames[1] {
            Frame::Frag {
                p2p,
                seq,
                index,
                count,
                total_len,
                payload,
            } => {
                assert!(p2p);
                assert_eq!(
                    (seq, index, count, total_len, payload.len()),
                    (12, 2, 5, 5000, 100)
                );
            }
            f => panic!("{f:?}"),
        }
        assert_eq!(
            frames[2],
            Frame::Raw {
                p2p: false,
                seq: 3,
                payload: b"raw"
            }
        );
        match frames[3] {
            Frame::Ack { entries, .. } => assert_eq!(entries.collect::<Vec<_>>(), acks.to_vec()),
            f => panic!("{f:?}"),
        }
        match frames[4] {
            Frame::Nak {
                p2p,
                target,
                ranges,
            } => {
                assert!(p2p);
                assert_eq!(target, MemberId(4));
                assert_eq!(ranges.collect::<Vec<_>>(), naks.to_vec());
            }
            f => panic!("{f:?}"),
        }
        assert_eq!(
            frames[5],
            Frame::High {
                p2p: false,
                next_seq: 20,
                floor: 4
            }
        );
    }

    #[test]
    fn writer_respects_the_limit() {
        let mut buf = vec![0u8; 200];
        let mut w = PacketWriter::new(&mut buf, 200, 8);
        let room = w.room();
        assert!(!w.push_msg(false, false, 1, &vec![0u8; room]));
        assert!(w.push_msg(false, false, 1, &vec![0u8; room - MSG_SUBHEADER_LEN]));
        assert_eq!(w.room(), 0);
        let len = w.finish(PacketKind::Group, ViewId(0), GroupId(0), MemberId(0), 1, 0);
        assert_eq!(len, 192);
    }

    #[test]
    fn trailing_garbage_is_malformed() {
        let body = [1u8, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1, 0xff];
        let r: Vec<_> = FrameReader::new(&body, 1).collect();
        assert_eq!(r.len(), 2);
        assert!(r[0].is_ok());
        assert_eq!(r[1], Err(DropReason::MalformedFrame));
    }

    #[test]
    fn relay_frames_round_trip_and_validate() {
        let mut buf = vec![0u8; 1500];
        let mut w = PacketWriter::new(&mut buf, 1500, 8);
        assert!(w.push_relay_req(MemberId(9), 3, 40));
        assert!(w.push_relay(MemberId(9), 5, 0, 1, 3, b"abc"));
        assert!(w.push_relay(MemberId(9), 7, 1, 3, 5000, &[4u8; 100]));
        assert!(w.push_relay(MemberId(9), 8, 0, 1, 0, b""));
        let len = w.finish(PacketKind::Direct, ViewId(1), GroupId(2), MemberId(3), 9, 0);
        let (body, count) = body_of(&buf, len);
        let frames: Vec<_> = FrameReader::new(body, count)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            frames[0],
            Frame::RelayReq {
                origin: MemberId(9),
                from: 3,
                to: 40
            }
        );
        assert_eq!(
            frames[1],
            Frame::Relay {
                origin: MemberId(9),
                seq: 5,
                index: 0,
                count: 1,
                total_len: 3,
                payload: b"abc"
            }
        );
        match frames[2] {
            Frame::Relay {
                seq,
                index,
                count,
                total_len,
                payload,
                ..
            } => assert_eq!(
                (seq, index, count, total_len, payload.len()),
                (7, 1, 3, 5000, 100)
            ),
            f => panic!("{f:?}"),
        }
        assert!(matches!(frames[3], Frame::Relay { seq: 8, .. }));
        // Invalid fields are malformed.
        let bad = |kind: u8, flags: u8, content: &[u8]| {
            let mut b = vec![kind, flags];
            b.extend_from_slice(&(content.len() as u16).to_be_bytes());
            b.extend_from_slice(content);
            FrameReader::new(&b, 1).next().map(|r| r.map(|_| ()))
        };
        let req = |o: u64, f: u64, t: u64| {
            let mut c = o.to_be_bytes().to_vec();
            c.extend_from_slice(&f.to_be_bytes());
            c.extend_from_slice(&t.to_be_bytes());
            c
        };
        assert!(matches!(bad(7, 0, &req(1, 2, 2)), Some(Ok(_))));
        assert_eq!(
            bad(7, 0, &req(1, 0, 2)),
            Some(Err(DropReason::MalformedFrame))
        );
        assert_eq!(
            bad(7, 0, &req(1, 3, 2)),
            Some(Err(DropReason::MalformedFrame))
        );
        assert_eq!(
            bad(7, 1, &req(1, 1, 2)),
            Some(Err(DropReason::MalformedFrame))
        );
        assert_eq!(
            bad(7, 0, &req(1, 1, 2)[..23]),
            Some(Err(DropReason::MalformedFrame))
        );
        let relay = |seq: u64, index: u32, count: u32, total: u32, payload: &[u8]| {
            let mut c = 1u64.to_be_bytes().to_vec();
            c.extend_from_slice(&seq.to_be_bytes());
            c.extend_from_slice(&index.to_be_bytes());
            c.extend_from_slice(&count.to_be_bytes());
            c.extend_from_slice(&total.to_be_bytes());
            c.extend_from_slice(payload);
            c
        };
        assert!(matches!(bad(8, 0, &relay(1, 0, 1, 2, b"ab")), Some(Ok(_))));
        for c in [
            relay(0, 0, 1, 2, b"ab"),   // seq 0
            relay(1, 0, 1, 3, b"ab"),   // whole message with a wrong length
            relay(1, 1, 1, 2, b"ab"),   // index ≥ count
            relay(1, 0, 0, 2, b"ab"),   // count 0
            relay(2, 2, 3, 100, b"ab"), // seq ≤ index
            relay(5, 1, 3, 2, b"ab"),   // total below count
            relay(5, 1, 3, 3, b"abcd"), // payload above total
        ] {
            assert_eq!(
                bad(8, 0, &c),
                Some(Err(DropReason::MalformedFrame)),
                "{c:?}"
            );
        }
        assert_eq!(
            bad(8, 1, &relay(1, 0, 1, 2, b"ab")),
            Some(Err(DropReason::MalformedFrame))
        );
    }

    proptest::proptest! {
        #[test]
        fn relay_decoders_never_panic(content in proptest::collection::vec(proptest::num::u8::ANY, 0..80), kind in 7u8..9, flags in 0u8..2) {
            let mut b = vec![kind, flags];
            b.extend_from_slice(&(content.len() as u16).to_be_bytes());
            b.extend_from_slice(&content);
            for f in FrameReader::new(&b, 1) {
                if let Ok(Frame::Relay { payload, count, index, total_len, .. }) = f {
                    proptest::prop_assert!(index < count);
                    proptest::prop_assert!(payload.len() <= total_len as usize);
                }
                if let Ok(Frame::RelayReq { from, to, .. }) = f {
                    proptest::prop_assert!(from >= 1 && from <= to);
                }
            }
        }

        #[test]
        fn reader_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..400), n in 0u8..20) {
            for f in FrameReader::new(&body, n) {
                if let Ok(Frame::Ack { entries, .. }) = f { entries.count(); }
                if let Ok(Frame::Nak { ranges, .. }) = f { ranges.count(); }
            }
        }
    }
}
