//! The application side of a joined group: [`GroupHandle`] (submit ring producer + delivery
//! ring consumer), the zero-copy views [`SendClaim`], [`Message`] and [`MessageRef`], the
//! record layouts both rings use, and the cheap engine wake-up checks.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::engine::Waker;
use crate::protocol::DeliveryKind;
use crate::ring::{self, Consumer, Producer, RingError};
use crate::{GroupId, MemberId, ViewId};

/// Bytes before the payload in a submit-ring record: op (u8), 7 zero bytes, destination (u64).
pub(super) const SUBMIT_HEADER: usize = 16;
/// Bytes before the payload in a delivery-ring record: sender (u64), seq (u64), view (u32),
/// kind (u8), 3 zero bytes. A multiple of 8, so payloads stay 8-byte aligned.
pub(super) const DELIVERY_HEADER: usize = 24;

/// What a submit-ring record asks the engine to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Send = 1,
    P2p = 2,
    Raw = 3,
    RawP2p = 4,
}

impl Op {
    fn from_u8(b: u8) -> Option<Op> {
        Some(match b {
            1 => Op::Send,
            2 => Op::P2p,
            3 => Op::Raw,
            4 => Op::RawP2p,
            _ => return None,
        })
    }
}

fn write_submit_header(buf: &mut [u8], op: Op, to: MemberId) {
    buf[0] = op as u8;
    buf[1..8].fill(0);
    buf[8..16].copy_from_slice(&to.0.to_le_bytes());
}

/// Splits a submit record into (op, destination, payload); `None` if malformed.
pub(super) fn decode_submit(rec: &[u8]) -> Option<(Op, MemberId, &[u8])> {
    let header = rec.get(..SUBMIT_HEADER)?;
    let op = Op::from_u8(header[0])?;
    let to = MemberId(u64::from_le_bytes(header[8..16].try_into().ok()?));
    Some((op, to, &rec[SUBMIT_HEADER..]))
}

fn kind_to_u8(kind: DeliveryKind) -> u8 {
    match kind {
        DeliveryKind::Send => 1,
        DeliveryKind::P2p => 2,
        DeliveryKind::Raw => 3,
        DeliveryKind::RawP2p => 4,
    }
}

fn kind_from_u8(b: u8) -> DeliveryKind {
    match b {
        2 => DeliveryKind::P2p,
        3 => DeliveryKind::Raw,
        4 => DeliveryKind::RawP2p,
        _ => DeliveryKind::Send,
    }
}

/// Writes a delivery-ring header.
pub(super) fn write_delivery_header(
    buf: &mut [u8],
    sender: MemberId,
    seq: u64,
    view: ViewId,
    kind: DeliveryKind,
) {
    buf[0..8].copy_from_slice(&sender.0.to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
    buf[16..20].copy_from_slice(&view.0.to_le_bytes());
    buf[20] = kind_to_u8(kind);
    buf[21..24].fill(0);
}

/// Decodes a delivery record. Only the engine writes these rings, so the record is well formed;
/// a short one still decodes (as an empty message) rather than panicking.
fn decode_delivery(rec: &[u8]) -> MessageRef<'_> {
    let Some(h) = rec.get(..DELIVERY_HEADER) else {
        debug_assert!(false, "short delivery record");
        return MessageRef {
            sender: MemberId(0),
            kind: DeliveryKind::Send,
            view: ViewId(0),
            seq: 0,
            payload: &[],
        };
    };
    let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
    MessageRef {
        sender: MemberId(u64_at(0)),
        seq: u64_at(8),
        view: ViewId(u32::from_le_bytes(h[16..20].try_into().expect("4 bytes"))),
        kind: kind_from_u8(h[20]),
        payload: &rec[DELIVERY_HEADER..],
    }
}

/// State shared by one node's engine and every handle: the wake-up signal.
#[derive(Debug)]
pub(super) struct NodeShared {
    /// Set by the engine just before it may park (then it re-checks the rings); an application
    /// thread that published work and sees it set wakes the engine.
    pub sleeping: AtomicBool,
    pub waker: Waker,
}

impl NodeShared {
    /// After publishing a submit record: wake a parked engine. One fence and one load of a
    /// read-mostly line when the engine is busy.
    #[inline]
    fn notify_submit(&self) {
        // Pairs with the engine's fence between `sleeping = true` and its re-check of the
        // rings: either it sees our record, or we see `sleeping`.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::Relaxed) {
            self.waker.wake();
        }
    }
}

/// State shared by one group's engine side and its handle.
#[derive(Debug, Default)]
pub(super) struct GroupShared {
    /// Set by the engine when it refuses a reliable delivery for lack of room in the delivery
    /// ring; cleared by the engine once a retry pass refuses nothing. Read (never written) by
    /// the handle after releasing records.
    pub delivery_blocked: AtomicBool,
}

/// Why a send through a [`GroupHandle`] was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The submit ring is full (the engine is behind, or the protocol's send window / buffer is
    /// closed because a receiver is behind): backpressure, retry later.
    WouldBlock,
    /// The message is larger than the limit: `VSYNC_MAXMSGLEN` for reliable sends, one
    /// datagram's payload for raw sends.
    TooLarge {
        /// The message length.
        len: usize,
        /// The limit it exceeds.
        max: usize,
        /// Which limit: `"VSYNC_MAXMSGLEN"` or `"raw datagram payload"`.
        limit: &'static str,
    },
    /// The destination is not another member of the group.
    UnknownMember(MemberId),
    /// The engine no longer serves this group: it left the group, or the engine thread
    /// stopped (see [`crate::node::Node::stats`] for why).
    Closed,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::WouldBlock => {
                f.write_str("would block: the group's submit ring is full (receivers are behind)")
            }
            SendError::TooLarge { len, max, limit } => {
                write!(
                    f,
                    "message of {len} bytes exceeds the {limit} limit of {max} bytes"
                )
            }
            SendError::UnknownMember(m) => write!(f, "{m} is not another member of the group"),
            SendError::Closed => f.write_str(
                "closed: the engine no longer serves this group (left, or engine stopped)",
            ),
        }
    }
}

impl std::error::Error for SendError {}

/// Why a blocking receive returned without a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvError {
    /// The timeout expired with nothing delivered.
    Timeout,
    /// The engine no longer serves this group and every delivered message was read.
    Closed,
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Timeout => f.write_str("timed out waiting for a delivery"),
            RecvError::Closed => f.write_str("closed: the engine no longer serves this group"),
        }
    }
}

impl std::error::Error for RecvError {}

/// One joined group, from the application's side: sends go into the group's submit ring,
/// deliveries come out of its delivery ring, both in place (zero copy).
///
/// `Send` (move it to the thread that uses the group) but not `Sync`: each ring has exactly
/// one producer and one consumer. Dropping the handle does not leave the group (use
/// [`crate::node::Node::leave`]); the engine then discards the group's deliveries.
pub struct GroupHandle {
    group: GroupId,
    view: ViewId,
    me: MemberId,
    /// Everyone but me, sorted.
    peers: Vec<MemberId>,
    max_message: usize,
    max_raw: usize,
    submit: Producer,
    deliveries: Consumer,
    node: Arc<NodeShared>,
    shared: Arc<GroupShared>,
}

impl fmt::Debug for GroupHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupHandle")
            .field("group", &self.group)
            .field("view", &self.view)
            .field("me", &self.me)
            .field("submit", &self.submit)
            .field("deliveries", &self.deliveries)
            .finish_non_exhaustive()
    }
}

pub(super) struct HandleParts {
    pub group: GroupId,
    pub view: ViewId,
    pub me: MemberId,
    pub members: Vec<MemberId>,
    pub max_message: usize,
    pub max_raw: usize,
    pub submit: Producer,
    pub deliveries: Consumer,
    pub node: Arc<NodeShared>,
    pub shared: Arc<GroupShared>,
}

fn map_ring(e: RingError, len: usize, max: usize, limit: &'static str) -> SendError {
    match e {
        RingError::WouldBlock => SendError::WouldBlock,
        RingError::Closed => SendError::Closed,
        // Rings are sized for the largest message, so this only restates the message limit.
        RingError::TooLarge { .. } => SendError::TooLarge { len, max, limit },
    }
}

impl GroupHandle {
    pub(super) fn new(p: HandleParts) -> Self {
        let mut peers: Vec<MemberId> = p.members.into_iter().filter(|m| *m != p.me).collect();
        peers.sort_unstable();
        peers.dedup();
        GroupHandle {
            group: p.group,
            view: p.view,
            me: p.me,
            peers,
            max_message: p.max_message,
            max_raw: p.max_raw,
            submit: p.submit,
            deliveries: p.deliveries,
            node: p.node,
            shared: p.shared,
        }
    }

    /// The group.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The view the group was joined in.
    pub fn view(&self) -> ViewId {
        self.view
    }

    /// This member.
    pub fn me(&self) -> MemberId {
        self.me
    }

    /// The largest reliable message (`VSYNC_MAXMSGLEN`).
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// The largest raw message (one datagram's payload).
    pub fn max_raw_message(&self) -> usize {
        self.max_raw
    }

    /// Whether the engine stopped serving this group (left, or the engine thread ended).
    pub fn is_closed(&self) -> bool {
        self.submit.is_closed()
    }

    fn check(&self, op: Op, to: MemberId, len: usize) -> Result<(), SendError> {
        let (max, limit) = match op {
            Op::Send | Op::P2p => (self.max_message, "VSYNC_MAXMSGLEN"),
            Op::Raw | Op::RawP2p => (self.max_raw, "raw datagram payload"),
        };
        if len > max {
            return Err(SendError::TooLarge { len, max, limit });
        }
        if matches!(op, Op::P2p | Op::RawP2p) && self.peers.binary_search(&to).is_err() {
            return Err(SendError::UnknownMember(to));
        }
        Ok(())
    }

    fn push(&mut self, op: Op, to: MemberId, payload: &[u8]) -> Result<(), SendError> {
        self.check(op, to, payload.len())?;
        let (max, limit) = (self.max_message, "VSYNC_MAXMSGLEN");
        let mut claim = self
            .submit
            .try_claim(SUBMIT_HEADER + payload.len())
            .map_err(|e| map_ring(e, payload.len(), max, limit))?;
        write_submit_header(&mut claim[..SUBMIT_HEADER], op, to);
        claim[SUBMIT_HEADER..].copy_from_slice(payload);
        claim.commit();
        self.node.notify_submit();
        Ok(())
    }

    /// Reliable FIFO multicast to the group (delivered to every member, this one included when
    /// self-delivery is on). Copies `payload` into the submit ring once; see
    /// [`try_claim`](Self::try_claim) to build it in place instead. Never blocks:
    /// [`SendError::WouldBlock`] when the ring is full.
    pub fn try_send(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.push(Op::Send, MemberId(0), payload)
    }

    /// Like [`try_send`](Self::try_send), but waits while the ring is full (spin → yield →
    /// sleeps of at most 1 ms), up to `timeout` (`None` = for ever, or until the engine stops
    /// serving the group); [`SendError::WouldBlock`] on timeout.
    pub fn send(&mut self, payload: &[u8], timeout: Option<Duration>) -> Result<(), SendError> {
        let mut claim = self.claim(payload.len(), timeout)?;
        claim.copy_from_slice(payload);
        claim.commit();
        Ok(())
    }

    /// Zero-copy reliable multicast: claims `len` bytes in the submit ring to write the message
    /// into; [`SendClaim::commit`] sends it (or [`SendClaim::commit_len`] a shorter prefix),
    /// dropping the claim abandons it.
    pub fn try_claim(&mut self, len: usize) -> Result<SendClaim<'_>, SendError> {
        self.check(Op::Send, MemberId(0), len)?;
        let (max, node) = (self.max_message, &*self.node);
        let mut claim = self
            .submit
            .try_claim(SUBMIT_HEADER + len)
            .map_err(|e| map_ring(e, len, max, "VSYNC_MAXMSGLEN"))?;
        write_submit_header(&mut claim[..SUBMIT_HEADER], Op::Send, MemberId(0));
        Ok(SendClaim { claim, node })
    }

    /// Like [`try_claim`](Self::try_claim), waiting up to `timeout` for room (`None` = for
    /// ever, or until the engine stops serving the group).
    pub fn claim(
        &mut self,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<SendClaim<'_>, SendError> {
        self.check(Op::Send, MemberId(0), len)?;
        let (max, node) = (self.max_message, &*self.node);
        let mut claim = self
            .submit
            .claim_blocking(SUBMIT_HEADER + len, timeout)
            .map_err(|e| map_ring(e, len, max, "VSYNC_MAXMSGLEN"))?;
        write_submit_header(&mut claim[..SUBMIT_HEADER], Op::Send, MemberId(0));
        Ok(SendClaim { claim, node })
    }

    /// Reliable FIFO point-to-point send to `to`, another member of the group.
    pub fn try_send_p2p(&mut self, to: MemberId, payload: &[u8]) -> Result<(), SendError> {
        self.push(Op::P2p, to, payload)
    }

    /// Unreliable send of at most one datagram's payload: to the group when `to` is `None`
    /// (not delivered to this member), else to that member. May be lost; never retransmitted.
    pub fn try_send_raw(&mut self, to: Option<MemberId>, payload: &[u8]) -> Result<(), SendError> {
        match to {
            None => self.push(Op::Raw, MemberId(0), payload),
            Some(m) => self.push(Op::RawP2p, m, payload),
        }
    }

    /// The next delivered message, in place in the delivery ring, or `None` if nothing is
    /// waiting (check [`is_closed`](Self::is_closed) to tell "nothing yet" from "never
    /// again"). The message's ring space is released when it is dropped.
    #[must_use = "dropping the message releases it unread"]
    pub fn try_recv(&mut self) -> Option<Message<'_>> {
        let GroupHandle {
            deliveries,
            node,
            shared,
            ..
        } = self;
        let record = deliveries.try_read()?;
        Some(Message::new(record, node, shared))
    }

    /// Like [`try_recv`](Self::try_recv), waiting up to `timeout` (`None` = for ever) with a
    /// spin → yield → ≤1 ms sleep back-off. [`RecvError::Closed`] once the engine stopped
    /// serving the group and everything was read.
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Message<'_>, RecvError> {
        let GroupHandle {
            deliveries,
            node,
            shared,
            ..
        } = self;
        match deliveries.read_blocking(timeout) {
            Ok(record) => Ok(Message::new(record, node, shared)),
            Err(RingError::Closed) => Err(RecvError::Closed),
            Err(_) => Err(RecvError::Timeout),
        }
    }

    /// Reads up to `max` delivered messages in place, calling `f` on each in order, then
    /// releases them all at once (one ring update). Returns how many were read.
    pub fn recv_batch(&mut self, max: usize, mut f: impl FnMut(MessageRef<'_>)) -> usize {
        let n = self
            .deliveries
            .read_batch(max, |rec| f(decode_delivery(rec)));
        if n > 0 {
            notify_release(&self.node, &self.shared);
        }
        n
    }

    /// Bytes of delivered messages waiting in the delivery ring (headers included; a
    /// snapshot).
    pub fn pending_delivery_bytes(&self) -> usize {
        self.deliveries.pending_hint()
    }
}

/// After releasing delivery records: if the engine is waiting for room, wake it.
#[inline]
fn notify_release(node: &NodeShared, group: &GroupShared) {
    // Pairs with the engine's fence between `sleeping = true` and its delivery retry: either
    // it sees the room we made, or we see both flags.
    fence(Ordering::SeqCst);
    if group.delivery_blocked.load(Ordering::Relaxed)
        && node.sleeping.load(Ordering::Relaxed)
        && node.sleeping.swap(false, Ordering::Relaxed)
    {
        node.waker.wake();
    }
}

/// Claimed space in a group's submit ring for one reliable multicast, written in place.
/// Derefs to exactly the claimed payload bytes (stale contents, not zeros).
#[must_use = "a claim dropped without commit() sends nothing"]
pub struct SendClaim<'a> {
    claim: ring::Claim<'a>,
    node: &'a NodeShared,
}

impl SendClaim<'_> {
    /// Sends the whole claimed payload.
    pub fn commit(self) {
        self.claim.commit();
        self.node.notify_submit();
    }

    /// Sends only the first `len` bytes. Panics if `len` exceeds the claimed length.
    pub fn commit_len(self, len: usize) {
        let claimed = self.claim.len() - SUBMIT_HEADER;
        assert!(
            len <= claimed,
            "commit_len({len}) exceeds the claimed length {claimed}"
        );
        self.claim.commit_len(SUBMIT_HEADER + len);
        self.node.notify_submit();
    }

    /// Abandons the claim (same as dropping it): nothing is sent.
    pub fn abandon(self) {}
}

impl Deref for SendClaim<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.claim[SUBMIT_HEADER..]
    }
}

impl DerefMut for SendClaim<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.claim[SUBMIT_HEADER..]
    }
}

impl fmt::Debug for SendClaim<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendClaim")
            .field("len", &self.len())
            .finish()
    }
}

/// A delivered message viewed in place (inside [`GroupHandle::recv_batch`], or borrowed from a
/// [`Message`]).
#[derive(Clone, Copy, Debug)]
pub struct MessageRef<'a> {
    /// Who sent it.
    pub sender: MemberId,
    /// Which primitive delivered it.
    pub kind: DeliveryKind,
    /// The view it was delivered in.
    pub view: ViewId,
    /// Its sequence number in the sender's stream (increasing per sender and kind).
    pub seq: u64,
    /// Its bytes (8-byte aligned).
    pub payload: &'a [u8],
}

/// One delivered message, in place in the group's delivery ring; derefs to its payload. Its
/// ring space is released (and a waiting engine woken) when it is dropped.
pub struct Message<'a> {
    /// Who sent it.
    pub sender: MemberId,
    /// Which primitive delivered it.
    pub kind: DeliveryKind,
    /// The view it was delivered in.
    pub view: ViewId,
    /// Its sequence number in the sender's stream (increasing per sender and kind).
    pub seq: u64,
    record: Option<ring::Record<'a>>,
    node: &'a NodeShared,
    group: &'a GroupShared,
}

impl<'a> Message<'a> {
    fn new(record: ring::Record<'a>, node: &'a NodeShared, group: &'a GroupShared) -> Self {
        let m = decode_delivery(&record);
        let (sender, kind, view, seq) = (m.sender, m.kind, m.view, m.seq);
        Message {
            sender,
            kind,
            view,
            seq,
            record: Some(record),
            node,
            group,
        }
    }

    /// The payload (8-byte aligned), valid while the message lives.
    pub fn payload(&self) -> &[u8] {
        match &self.record {
            Some(r) => r.get(DELIVERY_HEADER..).unwrap_or(&[]),
            None => &[],
        }
    }

    /// The message as a plain view.
    pub fn as_message_ref(&self) -> MessageRef<'_> {
        MessageRef {
            sender: self.sender,
            kind: self.kind,
            view: self.view,
            seq: self.seq,
            payload: self.payload(),
        }
    }

    /// Releases the message's ring space (same as dropping it).
    pub fn release(self) {}
}

impl Deref for Message<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.payload()
    }
}

impl Drop for Message<'_> {
    fn drop(&mut self) {
        drop(self.record.take());
        notify_release(self.node, self.group);
    }
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("sender", &self.sender)
            .field("kind", &self.kind)
            .field("view", &self.view)
            .field("seq", &self.seq)
            .field("len", &self.payload().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_roundtrip() {
        let mut buf = [0xFFu8; SUBMIT_HEADER + 3];
        write_submit_header(&mut buf, Op::RawP2p, MemberId::new(4, 2));
        buf[SUBMIT_HEADER..].copy_from_slice(b"abc");
        assert_eq!(
            decode_submit(&buf),
            Some((Op::RawP2p, MemberId::new(4, 2), &b"abc"[..]))
        );
        assert_eq!(decode_submit(&buf[..8]), None);
        buf[0] = 9;
        assert_eq!(decode_submit(&buf), None);

        let mut d = [0xFFu8; DELIVERY_HEADER + 2];
        write_delivery_header(
            &mut d,
            MemberId::new(1, 9),
            77,
            ViewId(5),
            DeliveryKind::P2p,
        );
        d[DELIVERY_HEADER..].copy_from_slice(b"hi");
        let m = decode_delivery(&d);
        assert_eq!(
            (m.sender, m.seq, m.view, m.kind, m.payload),
            (
                MemberId::new(1, 9),
                77,
                ViewId(5),
                DeliveryKind::P2p,
                &b"hi"[..]
            )
        );
    }

    #[test]
    fn handle_is_send_and_node_is_send_sync() {
        fn assert_send<T: Send>() {}
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send::<GroupHandle>();
        assert_send_sync::<crate::node::Node>();
    }
}
