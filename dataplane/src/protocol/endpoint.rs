//! [`Endpoint`]: one member's sans-IO reliable-multicast state for every group it is in.
//!
//! Per group the endpoint owns the member's outgoing group stream, one incoming group stream
//! per peer, a point-to-point stream pair per peer, the raw (unreliable) queue, the rate
//! limiter and the timers that drive receipt reports, NAKs and heartbeats. See the module
//! docs of [`crate::protocol`] for the driving loop and `ARCHITECTURE.md` for the protocol.

use std::collections::VecDeque;

use crate::config::ProtocolConfig;
use crate::protocol::rate_limit::{RateLimit, RateLimiter};
use crate::protocol::recv_stream::{FragInfo, RecvLimits, RecvStream};
use crate::protocol::send_stream::{Admission, ByteStore, SendStream};
use crate::protocol::{Destination, Protocol, Transmit};
use crate::rng::Rng;
use crate::wire::header::FLAG_AUTH;
use crate::wire::replay::ReplayTable;
use crate::wire::{
    AckEntry, DropCounters, DropReason, Frame, FrameReader, Keys, NakRange, PacketKind,
    PacketWriter, SealMode, Sealer,
};
use crate::{GroupId, MemberId, Timestamp, ViewId};

/// Which primitive delivered a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryKind {
    /// A reliable FIFO multicast (Send).
    Send,
    /// A reliable FIFO point-to-point message (P2PSend).
    P2p,
    /// An unreliable multicast (RawSend).
    Raw,
    /// An unreliable point-to-point message (RawP2PSend).
    RawP2p,
}

/// A message handed to the application, borrowing its bytes from the endpoint or the datagram.
#[derive(Clone, Copy, Debug)]
pub struct Delivery<'a> {
    /// The group.
    pub group: GroupId,
    /// The view it was delivered in.
    pub view: ViewId,
    /// Who sent it.
    pub sender: MemberId,
    /// Which primitive.
    pub kind: DeliveryKind,
    /// Its sequence number in the sender's stream (first frame's), increasing per stream.
    pub seq: u64,
    /// Its bytes.
    pub payload: &'a [u8],
}

/// Where deliveries go. Returning false means "full, try again later": the endpoint keeps the
/// message (reliable kinds) and stops consuming, which becomes backpressure at the senders.
pub trait DeliverySink {
    /// Offers one message; true if taken.
    fn deliver(&mut self, delivery: &Delivery<'_>) -> bool;
}

impl<F: FnMut(&Delivery<'_>) -> bool> DeliverySink for F {
    fn deliver(&mut self, delivery: &Delivery<'_>) -> bool {
        self(delivery)
    }
}

/// Why a send was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The send buffer is full until receivers catch up (backpressure); retry later.
    WouldBlock,
    /// The message exceeds the limit (`VSYNC_MAXMSGLEN`, or one datagram for raw sends).
    TooLarge {
        /// The message length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// This endpoint is not in the group.
    UnknownGroup(GroupId),
    /// The destination is not a member of the group.
    UnknownMember(MemberId),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::WouldBlock => {
                write!(f, "would block: send buffer full (receivers are behind)")
            }
            SendError::TooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds the limit of {max} bytes")
            }
            SendError::UnknownGroup(g) => write!(f, "not a member of group {g}"),
            SendError::UnknownMember(m) => write!(f, "{m} is not a member of the group"),
        }
    }
}

impl std::error::Error for SendError {}

/// How a group is set up on this endpoint (static membership; the control plane changes it).
#[derive(Clone, Debug)]
pub struct GroupSpec {
    /// The group's current view id.
    pub view: ViewId,
    /// All members, this endpoint included.
    pub members: Vec<MemberId>,
    /// True if the group has an IP-multicast address (repairs are multicast); false for unicast
    /// fan-out (repairs go to the member that asked).
    pub multicast: bool,
    /// The group key (AES-256-GCM: authenticates and encrypts the group's datagrams).
    pub key: Option<[u8; 32]>,
}

/// Endpoint-wide counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Datagrams produced by `poll_transmit`.
    pub datagrams_sent: u64,
    /// Datagrams given to `handle_datagram`.
    pub datagrams_received: u64,
    /// Messages admitted by reliable sends.
    pub messages_sent: u64,
    /// Frames transmitted for the first time.
    pub frames_sent: u64,
    /// Frames retransmitted after NAKs.
    pub frames_retransmitted: u64,
    /// NAK frames sent.
    pub naks_sent: u64,
    /// NAK frames received.
    pub naks_received: u64,
    /// Receipt reports sent (standalone or piggybacked).
    pub acks_sent: u64,
    /// Heartbeats sent.
    pub heartbeats_sent: u64,
    /// Messages delivered to the application (all kinds, self-delivery included).
    pub messages_delivered: u64,
    /// Payload bytes delivered.
    pub bytes_delivered: u64,
    /// Duplicate data frames received (and ignored).
    pub duplicates: u64,
    /// Raw messages sent.
    pub raw_sent: u64,
    /// Sends refused with WouldBlock.
    pub would_block: u64,
}

/// A snapshot of one group's state, for tools and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStats {
    /// Next sequence number this member will assign in its group stream.
    pub next_seq: u64,
    /// First frame not yet transmitted.
    pub next_unsent: u64,
    /// Bytes retained until consumed everywhere.
    pub retained_bytes: usize,
    /// Frames retained.
    pub retained_frames: usize,
    /// Lowest received position reported by the peers.
    pub min_received: u64,
    /// Bytes held by incoming streams (out of order or refused by the application).
    pub held_bytes: usize,
    /// Bytes retained by this member's point-to-point streams.
    pub p2p_retained_bytes: usize,
    /// Raw messages waiting for transmission.
    pub raw_queued: usize,
}

/// The result of feeding a data frame to a stream.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Outcome {
    pub duplicate: bool,
    pub new_gap: bool,
    pub drop: Option<DropReason>,
    pub delivered: u32,
    pub malformed: u32,
}

#[derive(Debug)]
struct Peer {
    id: MemberId,
    recv: RecvStream,
    p2p_send: SendStream,
    p2p_recv: RecvStream,
    p2p_ack_dirty: bool,
    p2p_ack_due: bool,
    last_p2p_ack: Timestamp,
    p2p_heartbeat_due: bool,
    last_p2p_tx: Timestamp,
}

#[derive(Debug, Clone, Copy)]
struct RawMsg {
    to: Option<MemberId>,
    seq: u64,
    offset: usize,
    len: usize,
}

#[derive(Debug)]
struct Group {
    id: GroupId,
    view: ViewId,
    multicast: bool,
    peers: Vec<Peer>,
    send: SendStream,
    rate: Option<RateLimiter>,
    rate_blocked: bool,
    raw_out: VecDeque<RawMsg>,
    raw_store: ByteStore,
    raw_seq: u64,
    ack_dirty: bool,
    ack_due: bool,
    last_ack: Timestamp,
    heartbeat_due: bool,
    last_data_tx: Timestamp,
    p2p_rr: usize,
    /// Next point-to-point data before the next group data (turn taking).
    p2p_turn: bool,
    /// Where the next chunk of a multi-datagram receipt report starts.
    ack_cursor: usize,
}

impl Group {
    fn peer_index(&self, m: MemberId) -> Option<usize> {
        self.peers.iter().position(|p| p.id == m)
    }

    fn gap_deadline(&self) -> Option<Timestamp> {
        self.peers
            .iter()
            .flat_map(|p| [p.recv.nak_at, p.p2p_recv.nak_at])
            .flatten()
            .min()
    }
}

/// One member's reliable-multicast protocol state. `S` receives deliveries.
pub struct Endpoint<S: DeliverySink> {
    cfg: ProtocolConfig,
    me: MemberId,
    keys: Keys,
    replay: ReplayTable,
    rng: Rng,
    sink: S,
    packet_number: u64,
    groups: Vec<Group>,
    rr: usize,
    drops: DropCounters,
    stats: EndpointStats,
    nak_scratch: Vec<NakRange>,
    ack_scratch: Vec<AckEntry>,
    limits: RecvLimits,
}

impl<S: DeliverySink> std::fmt::Debug for Endpoint<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("me", &self.me)
            .field("groups", &self.groups.len())
            .finish()
    }
}

/// Frames a point-to-point stream reserves per peer; small, since P2P is not the bulk path.
const P2P_BUFFER_DIVISOR: usize = 4;
/// Raw (unreliable) messages queued for transmission, in bytes.
const RAW_QUEUE_BYTES: usize = 1 << 20;

impl<S: DeliverySink> Endpoint<S> {
    /// A new endpoint for member `me`. `initial_packet_number` must not repeat across restarts of
    /// the same process (use the wall clock in nanoseconds); `seed` drives NAK jitter.
    ///
    /// # Panics
    /// If `cfg` does not validate (drivers validate configuration at start-up).
    pub fn new(
        cfg: ProtocolConfig,
        me: MemberId,
        initial_packet_number: u64,
        seed: u64,
        sink: S,
    ) -> Self {
        cfg.validate()
            .expect("protocol configuration must be validated before use");
        let limits = RecvLimits {
            window_frames: 2 * cfg.window_frames as u64,
            window_bytes: 2 * cfg.window_bytes + cfg.max_message_bytes,
            max_message: cfg.max_message_bytes,
        };
        Endpoint {
            replay: ReplayTable::new(cfg.max_senders),
            cfg,
            me,
            keys: Keys::default(),
            rng: Rng::new(seed),
            sink,
            packet_number: initial_packet_number.max(1),
            groups: Vec::new(),
            rr: 0,
            drops: DropCounters::default(),
            stats: EndpointStats::default(),
            nak_scratch: Vec::new(),
            ack_scratch: Vec::new(),
            limits,
        }
    }

    /// This member.
    pub fn me(&self) -> MemberId {
        self.me
    }

    /// The configuration.
    pub fn config(&self) -> &ProtocolConfig {
        &self.cfg
    }

    /// The delivery sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// The delivery sink, mutably.
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// Sets (or clears) the system key: every datagram is then authenticated and unauthenticated
    /// ones are dropped.
    pub fn set_system_key(&mut self, key: Option<&[u8; 32]>) {
        self.keys.set_system_key(key);
    }

    /// Counters.
    pub fn stats(&self) -> &EndpointStats {
        &self.stats
    }

    /// Drop counters by reason.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// Joins `group` with a static membership. Replaces any previous state for the group.
    pub fn join(&mut self, group: GroupId, spec: GroupSpec) {
        self.leave(group);
        let peers_ids: Vec<MemberId> = spec
            .members
            .iter()
            .copied()
            .filter(|m| *m != self.me)
            .collect();
        let cfg = &self.cfg;
        let max_frames = cfg.window_frames * 4;
        let p2p_bytes = (cfg.send_buffer_bytes / P2P_BUFFER_DIVISOR).max(cfg.max_message_bytes);
        let peers = peers_ids
            .iter()
            .map(|id| Peer {
                id: *id,
                recv: RecvStream::new(1),
                p2p_send: SendStream::new(p2p_bytes, max_frames, &[*id], false),
                p2p_recv: RecvStream::new(1),
                p2p_ack_dirty: false,
                p2p_ack_due: false,
                last_p2p_ack: Timestamp::ZERO,
                p2p_heartbeat_due: false,
                last_p2p_tx: Timestamp::ZERO,
            })
            .collect();
        self.keys.set_group_key(group, spec.key.as_ref());
        self.groups.push(Group {
            id: group,
            view: spec.view,
            multicast: spec.multicast,
            peers,
            send: SendStream::new(
                cfg.send_buffer_bytes,
                max_frames,
                &peers_ids,
                cfg.self_delivery,
            ),
            rate: None,
            rate_blocked: false,
            raw_out: VecDeque::new(),
            raw_store: ByteStore::new(RAW_QUEUE_BYTES),
            raw_seq: 0,
            ack_dirty: false,
            ack_due: false,
            last_ack: Timestamp::ZERO,
            heartbeat_due: false,
            last_data_tx: Timestamp::ZERO,
            p2p_rr: 0,
            p2p_turn: false,
            ack_cursor: 0,
        });
    }

    /// Leaves `group`, discarding its state.
    pub fn leave(&mut self, group: GroupId) {
        self.groups.retain(|g| g.id != group);
        self.keys.set_group_key(group, None);
    }

    /// Sets or clears the leaky-bucket rate limit of this member's multicasts in `group`.
    pub fn set_rate_limit(
        &mut self,
        now: Timestamp,
        group: GroupId,
        limit: Option<RateLimit>,
    ) -> Result<(), String> {
        if let Some(l) = &limit {
            l.validate()?;
        }
        let g = self.group_mut(group).map_err(|e| e.to_string())?;
        g.rate = limit.map(|l| RateLimiter::new(l, now));
        g.rate_blocked = false;
        Ok(())
    }

    fn group_mut(&mut self, group: GroupId) -> Result<&mut Group, SendError> {
        self.groups
            .iter_mut()
            .find(|g| g.id == group)
            .ok_or(SendError::UnknownGroup(group))
    }

    fn group(&self, group: GroupId) -> Option<&Group> {
        self.groups.iter().find(|g| g.id == group)
    }

    /// The members of `group` other than this one.
    pub fn peers(&self, group: GroupId) -> Vec<MemberId> {
        self.group(group)
            .map(|g| g.peers.iter().map(|p| p.id).collect())
            .unwrap_or_default()
    }

    /// Reliable FIFO multicast (Send): admits `payload` into the group stream. Returns its
    /// sequence number. `WouldBlock` is backpressure.
    pub fn try_send(
        &mut self,
        _now: Timestamp,
        group: GroupId,
        payload: &[u8],
    ) -> Result<u64, SendError> {
        let gi = self.group_index(group)?;
        self.admit(gi, None, payload)
    }

    /// Reliable FIFO point-to-point send (P2PSend) to `to`, a member of `group`.
    pub fn try_send_p2p(
        &mut self,
        _now: Timestamp,
        group: GroupId,
        to: MemberId,
        payload: &[u8],
    ) -> Result<u64, SendError> {
        let gi = self.group_index(group)?;
        let pi = self.groups[gi]
            .peer_index(to)
            .ok_or(SendError::UnknownMember(to))?;
        self.admit(gi, Some(pi), payload)
    }

    fn group_index(&self, group: GroupId) -> Result<usize, SendError> {
        self.groups
            .iter()
            .position(|g| g.id == group)
            .ok_or(SendError::UnknownGroup(group))
    }

    /// Admits a reliable message into the group stream (`pi` = `None`) or the point-to-point
    /// stream to peer `pi`, self-delivering group messages.
    fn admit(&mut self, gi: usize, pi: Option<usize>, payload: &[u8]) -> Result<u64, SendError> {
        let max = self.cfg.max_message_bytes;
        if payload.len() > max {
            return Err(SendError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let (whole, frag) = (self.cfg.max_frame_payload(), self.cfg.fragment_payload());
        let g = &mut self.groups[gi];
        let stream = match pi {
            Some(pi) => &mut g.peers[pi].p2p_send,
            None => &mut g.send,
        };
        match stream.push(payload, whole, frag) {
            Ok(seq) => {
                self.stats.messages_sent += 1;
                if pi.is_none() {
                    self.self_deliver(gi);
                }
                Ok(seq)
            }
            Err(Admission::TooLarge) => Err(SendError::TooLarge {
                len: payload.len(),
                max: max.min(self.cfg.window_frames * 4 * frag),
            }),
            Err(Admission::Full) => {
                self.stats.would_block += 1;
                Err(SendError::WouldBlock)
            }
        }
    }

    /// Unreliable send (RawSend to the group when `to` is `None`, RawP2PSend otherwise): no
    /// acknowledgement, no retransmission, no self-delivery. At most one datagram of payload.
    pub fn try_send_raw(
        &mut self,
        _now: Timestamp,
        group: GroupId,
        to: Option<MemberId>,
        payload: &[u8],
    ) -> Result<u64, SendError> {
        let max = self.cfg.max_frame_payload();
        if payload.len() > max {
            return Err(SendError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let g = self.group_mut(group)?;
        if let Some(m) = to {
            g.peer_index(m).ok_or(SendError::UnknownMember(m))?;
        }
        let Some(offset) = g.raw_store.alloc(payload.len()) else {
            self.stats.would_block += 1;
            return Err(SendError::WouldBlock);
        };
        g.raw_store
            .slice_mut(offset, payload.len())
            .copy_from_slice(payload);
        g.raw_seq += 1;
        let seq = g.raw_seq;
        g.raw_out.push_back(RawMsg {
            to,
            seq,
            offset,
            len: payload.len(),
        });
        self.stats.raw_sent += 1;
        Ok(seq)
    }

    /// Retries deliveries the sink refused earlier (and self-deliveries). Call after the
    /// application made room. Returns the number of messages delivered.
    pub fn poll_delivery(&mut self) -> usize {
        let before = self.stats.messages_delivered;
        for gi in 0..self.groups.len() {
            self.self_deliver(gi);
            let Endpoint {
                groups,
                sink,
                stats,
                limits,
                ..
            } = self;
            let g = &mut groups[gi];
            let (gid, view) = (g.id, g.view);
            for p in g.peers.iter_mut() {
                for (stream, kind) in [
                    (&mut p.recv, DeliveryKind::Send),
                    (&mut p.p2p_recv, DeliveryKind::P2p),
                ] {
                    if !stream.has_backlog() {
                        continue;
                    }
                    let mut o = Outcome::default();
                    let sender = p.id;
                    let mut deliver = |seq: u64, payload: &[u8]| {
                        let ok = sink.deliver(&Delivery {
                            group: gid,
                            view,
                            sender,
                            kind,
                            seq,
                            payload,
                        });
                        if ok {
                            stats.bytes_delivered += payload.len() as u64;
                        }
                        ok
                    };
                    stream.pump(limits, &mut deliver, &mut o);
                    stats.messages_delivered += o.delivered as u64;
                    if o.delivered > 0 {
                        if kind == DeliveryKind::Send {
                            g.ack_dirty = true;
                        } else {
                            p.p2p_ack_dirty = true;
                        }
                    }
                }
            }
        }
        (self.stats.messages_delivered - before) as usize
    }

    fn self_deliver(&mut self, gi: usize) {
        let Endpoint {
            groups,
            sink,
            stats,
            me,
            ..
        } = self;
        let g = &mut groups[gi];
        while let Some(cursor) = g.send.self_cursor {
            if cursor >= g.send.next_seq {
                break;
            }
            let Some((payload, count)) = g.send.message(cursor) else {
                break;
            };
            let d = Delivery {
                group: g.id,
                view: g.view,
                sender: *me,
                kind: DeliveryKind::Send,
                seq: cursor,
                payload,
            };
            if !sink.deliver(&d) {
                break;
            }
            stats.messages_delivered += 1;
            stats.bytes_delivered += payload.len() as u64;
            g.send.self_delivered(cursor, count);
        }
    }

    /// Every frame of this member's group stream below the returned sequence number is held by
    /// at least `k` peers (k-stable); `k` = number of peers gives all-stable.
    pub fn stable_through(&self, group: GroupId, k: usize) -> Option<u64> {
        self.group(group).map(|g| g.send.stable_through(k))
    }

    /// True if every message this member sent to `group` is held by every peer.
    pub fn all_stable(&self, group: GroupId) -> bool {
        self.group(group)
            .is_none_or(|g| g.send.min_received() >= g.send.next_seq)
    }

    /// A snapshot of the group's state.
    pub fn group_stats(&self, group: GroupId) -> Option<GroupStats> {
        self.group(group).map(|g| GroupStats {
            next_seq: g.send.next_seq,
            next_unsent: g.send.next_new,
            retained_bytes: g.send.retained_bytes(),
            retained_frames: g.send.retained_frames(),
            min_received: g.send.min_received(),
            held_bytes: g
                .peers
                .iter()
                .map(|p| p.recv.held_bytes() + p.p2p_recv.held_bytes())
                .sum(),
            p2p_retained_bytes: g.peers.iter().map(|p| p.p2p_send.retained_bytes()).sum(),
            raw_queued: g.raw_out.len(),
        })
    }

    fn next_packet_number(&mut self) -> u64 {
        let pn = self.packet_number;
        self.packet_number += 1;
        pn
    }

    fn ack_threshold(&self) -> u64 {
        let by_bytes = (self.cfg.window_bytes / 4 / self.cfg.mtu) as u64;
        (self.cfg.window_frames as u64 / 4).min(by_bytes).max(1)
    }

    fn on_frame(
        &mut self,
        gi: usize,
        pi: usize,
        kind: PacketKind,
        frame: Frame<'_>,
        now: Timestamp,
    ) {
        let threshold = self.ack_threshold();
        let nak_delay = self.cfg.nak_delay.as_nanos() as u64;
        let Endpoint {
            groups,
            sink,
            stats,
            drops,
            limits,
            rng,
            me,
            ..
        } = self;
        let g = &mut groups[gi];
        let (gid, view, multicast) = (g.id, g.view, g.multicast);
        let p = &mut g.peers[pi];
        let sender = p.id;
        match frame {
            Frame::Raw { p2p, seq, payload } => {
                if p2p && kind != PacketKind::Direct {
                    drops.count(DropReason::MalformedFrame);
                    return;
                }
                let kind = if p2p {
                    DeliveryKind::RawP2p
                } else {
                    DeliveryKind::Raw
                };
                if sink.deliver(&Delivery {
                    group: gid,
                    view,
                    sender,
                    kind,
                    seq,
                    payload,
                }) {
                    stats.messages_delivered += 1;
                    stats.bytes_delivered += payload.len() as u64;
                } else {
                    drops.count(DropReason::RawOverflow);
                }
            }
            Frame::Msg { .. } | Frame::Frag { .. } => {
                let (p2p, seq, frag, payload) = match frame {
                    Frame::Msg { p2p, seq, payload } => (p2p, seq, None, payload),
                    Frame::Frag {
                        p2p,
                        seq,
                        index,
                        count,
                        total_len,
                        payload,
                    } => (
                        p2p,
                        seq,
                        Some(FragInfo {
                            index,
                            count,
                            total_len,
                        }),
                        payload,
                    ),
                    _ => unreachable!("matched above"),
                };
                if p2p && kind != PacketKind::Direct {
                    drops.count(DropReason::MalformedFrame);
                    return;
                }
                let dkind = if p2p {
                    DeliveryKind::P2p
                } else {
                    DeliveryKind::Send
                };
                let stream = if p2p { &mut p.p2p_recv } else { &mut p.recv };
                let mut o = Outcome::default();
                let mut deliver = |seq: u64, payload: &[u8]| {
                    let ok = sink.deliver(&Delivery {
                        group: gid,
                        view,
                        sender,
                        kind: dkind,
                        seq,
                        payload,
                    });
                    if ok {
                        stats.bytes_delivered += payload.len() as u64;
                    }
                    ok
                };
                stream.on_data(seq, frag, payload, limits, &mut deliver, &mut o);
                stats.messages_delivered += o.delivered as u64;
                if o.duplicate {
                    stats.duplicates += 1;
                }
                if let Some(r) = o.drop {
                    drops.count(r);
                }
                for _ in 0..o.malformed {
                    drops.count(DropReason::MalformedFrame);
                }
                if o.new_gap && stream.nak_at.is_none() {
                    let jitter = if nak_delay == 0 {
                        0
                    } else {
                        rng.below(nak_delay + 1)
                    };
                    stream.nak_at = Some(Timestamp(now.0 + jitter));
                }
                let urgent = stream.consumed() >= stream.reported_consumed + threshold;
                // A duplicate suggests our last report was lost: report again, on the timer.
                if p2p {
                    p.p2p_ack_dirty = true;
                    p.p2p_ack_due |= urgent;
                } else {
                    g.ack_dirty = true;
                    g.ack_due |= urgent;
                }
            }
            Frame::Ack { p2p, entries } => {
                for e in entries.filter(|e| e.sender == *me) {
                    if p2p {
                        p.p2p_send.on_ack(sender, e.received, e.consumed);
                    } else {
                        g.send.on_ack(sender, e.received, e.consumed);
                    }
                }
            }
            Frame::Nak {
                p2p,
                target,
                ranges,
            } => {
                if target != *me {
                    return;
                }
                stats.naks_received += 1;
                for r in ranges {
                    if p2p {
                        p.p2p_send
                            .on_nak(sender, Destination::Member(sender), r.start, r.end);
                    } else {
                        let dest = if multicast {
                            Destination::Group(gid)
                        } else {
                            Destination::Member(sender)
                        };
                        g.send.on_nak(sender, dest, r.start, r.end);
                    }
                }
            }
            Frame::High {
                p2p,
                next_seq,
                floor: _,
            } => {
                let mut o = Outcome::default();
                let stream = if p2p { &mut p.p2p_recv } else { &mut p.recv };
                stream.on_high(next_seq, limits, &mut o);
                if let Some(r) = o.drop {
                    drops.count(r);
                }
                if o.new_gap && stream.nak_at.is_none() {
                    let jitter = if nak_delay == 0 {
                        0
                    } else {
                        rng.below(nak_delay + 1)
                    };
                    stream.nak_at = Some(Timestamp(now.0 + jitter));
                }
                // A heartbeat means the sender misses a report: send one within the ack
                // interval (not at once: two heartbeating peers must not ping-pong).
                if p2p {
                    p.p2p_ack_dirty = true;
                } else {
                    g.ack_dirty = true;
                }
            }
        }
    }

    // ---- transmission ------------------------------------------------------------------

    fn seal(
        &mut self,
        w: PacketWriter<'_>,
        kind: PacketKind,
        gi: usize,
        mode: SealMode,
        buf_len: &mut usize,
    ) {
        let pn = self.next_packet_number();
        let g = &self.groups[gi];
        *buf_len = w.finish(kind, g.view, g.id, self.me, pn, mode.flags());
    }

    fn transmit_group(&mut self, gi: usize, now: Timestamp, buf: &mut [u8]) -> Option<Transmit> {
        let mode = self.keys.mode_for(self.groups[gi].id);
        let mtu = self.cfg.mtu;
        let trailer = mode.trailer_len();
        let gid = self.groups[gi].id;

        // 1. NAKs, unicast to the stream's sender.
        for pi in 0..self.groups[gi].peers.len() {
            let p = &self.groups[gi].peers[pi];
            if !p.recv.nak_due && !p.p2p_recv.nak_due {
                continue;
            }
            let target = p.id;
            let mut w = PacketWriter::new(buf, mtu, trailer);
            let mut naks = std::mem::take(&mut self.nak_scratch);
            let p = &mut self.groups[gi].peers[pi];
            for (p2p, stream) in [(false, &mut p.recv), (true, &mut p.p2p_recv)] {
                if stream.nak_due {
                    stream.nak_due = false;
                    stream.missing(&mut naks, 64);
                    if !naks.is_empty() && w.push_nak(p2p, target, &naks) > 0 {
                        self.stats.naks_sent += 1;
                    }
                }
            }
            self.nak_scratch = naks;
            if w.is_empty() {
                continue;
            }
            let mut len = 0;
            self.seal(w, PacketKind::Direct, gi, mode, &mut len);
            return Some(self.finish(buf, len, mode, Destination::Member(target)));
        }

        // 2. Point-to-point receipt reports.
        for pi in 0..self.groups[gi].peers.len() {
            let p = &mut self.groups[gi].peers[pi];
            if !p.p2p_ack_due {
                continue;
            }
            let entry = AckEntry {
                sender: p.id,
                received: p.p2p_recv.received,
                consumed: p.p2p_recv.consumed(),
            };
            p.p2p_ack_due = false;
            p.p2p_ack_dirty = false;
            p.last_p2p_ack = now;
            p.p2p_recv.reported_received = entry.received;
            p.p2p_recv.reported_consumed = entry.consumed;
            let target = p.id;
            let mut w = PacketWriter::new(buf, mtu, trailer);
            w.push_ack(true, &[entry]);
            if p.p2p_send.awaiting_reports() {
                w.push_high(true, p.p2p_send.next_new, p.p2p_send.floor());
            }
            self.stats.acks_sent += 1;
            let mut len = 0;
            self.seal(w, PacketKind::Direct, gi, mode, &mut len);
            return Some(self.finish(buf, len, mode, Destination::Member(target)));
        }

        // 3. Retransmissions (group stream, then point-to-point streams).
        let linger = self.cfg.retransmit_linger;
        if let Some(t) = self.retransmit(gi, None, now, buf, mode, linger) {
            return Some(t);
        }
        for pi in 0..self.groups[gi].peers.len() {
            if !self.groups[gi].peers[pi].p2p_send.retransmit.is_empty() {
                if let Some(t) = self.retransmit(gi, Some(pi), now, buf, mode, linger) {
                    return Some(t);
                }
            }
        }

        // 4. Receipt reports and heartbeats that are due go before new data, so a busy
        //    stream cannot starve its peers' windows.
        let g = &self.groups[gi];
        if (g.ack_due && g.ack_dirty) || g.heartbeat_due {
            let mut w = PacketWriter::new(buf, mtu, trailer);
            if self.groups[gi].ack_dirty {
                self.push_group_ack(gi, now, &mut w, false);
            }
            let g = &mut self.groups[gi];
            if g.heartbeat_due {
                g.heartbeat_due = false;
                if w.push_high(false, g.send.next_new, g.send.floor()) {
                    g.last_data_tx = now;
                    self.stats.heartbeats_sent += 1;
                }
            }
            if !w.is_empty() {
                let mut len = 0;
                self.seal(w, PacketKind::Group, gi, mode, &mut len);
                return Some(self.finish(buf, len, mode, Destination::Group(gid)));
            }
        }

        // 5. New data: group and point-to-point streams take turns.
        if self.groups[gi].p2p_turn {
            self.groups[gi].p2p_turn = false;
            if let Some(t) = self.transmit_p2p(gi, now, buf, mode) {
                return Some(t);
            }
        }
        if self.sendable(gi, None, now) {
            let mut w = PacketWriter::new(buf, mtu, trailer);
            self.pack_new(gi, None, now, &mut w);
            if !w.is_empty() {
                if self.groups[gi].ack_dirty {
                    self.push_group_ack(gi, now, &mut w, true);
                }
                let g = &mut self.groups[gi];
                g.last_data_tx = now;
                g.p2p_turn = true;
                let mut len = 0;
                self.seal(w, PacketKind::Group, gi, mode, &mut len);
                return Some(self.finish(buf, len, mode, Destination::Group(gid)));
            }
        }

        // 6. Point-to-point data and heartbeats.
        if let Some(t) = self.transmit_p2p(gi, now, buf, mode) {
            return Some(t);
        }

        // 7. Raw messages: consecutive ones to the same destination share a datagram.
        let g = &mut self.groups[gi];
        if let Some(first) = g.raw_out.front().copied() {
            let mut w = PacketWriter::new(buf, mtu, trailer);
            while let Some(m) = g.raw_out.front().copied() {
                if m.to != first.to {
                    break;
                }
                let bytes = g.raw_store.slice(m.offset, m.len);
                if !w.push_msg(true, m.to.is_some(), m.seq, bytes) {
                    break;
                }
                g.raw_store.free_front(m.offset, m.len);
                g.raw_out.pop_front();
            }
            let (kind, dest) = match first.to {
                Some(m) => (PacketKind::Direct, Destination::Member(m)),
                None => (PacketKind::Group, Destination::Group(gid)),
            };
            let mut len = 0;
            self.seal(w, kind, gi, mode, &mut len);
            return Some(self.finish(buf, len, mode, dest));
        }
        None
    }

    fn finish(
        &mut self,
        buf: &mut [u8],
        len: usize,
        mode: SealMode,
        destination: Destination,
    ) -> Transmit {
        let len = Sealer::seal(&self.keys, mode, buf, len);
        debug_assert!(len <= self.cfg.mtu);
        self.stats.datagrams_sent += 1;
        Transmit { destination, len }
    }

    /// One datagram of point-to-point data and/or heartbeat, round-robin over peers.
    fn transmit_p2p(
        &mut self,
        gi: usize,
        now: Timestamp,
        buf: &mut [u8],
        mode: SealMode,
    ) -> Option<Transmit> {
        let (mtu, trailer) = (self.cfg.mtu, mode.trailer_len());
        let n = self.groups[gi].peers.len();
        for k in 0..n {
            let pi = (self.groups[gi].p2p_rr + k) % n;
            let mut w = PacketWriter::new(buf, mtu, trailer);
            if self.sendable(gi, Some(pi), now) {
                self.pack_new(gi, Some(pi), now, &mut w);
            }
            let p = &mut self.groups[gi].peers[pi];
            if p.p2p_heartbeat_due {
                p.p2p_heartbeat_due = false;
                if w.push_high(true, p.p2p_send.next_new, p.p2p_send.floor()) {
                    self.stats.heartbeats_sent += 1;
                }
            }
            if w.is_empty() {
                continue;
            }
            let p = &mut self.groups[gi].peers[pi];
            p.last_p2p_tx = now;
            let target = p.id;
            self.groups[gi].p2p_rr = (pi + 1) % n;
            let mut len = 0;
            self.seal(w, PacketKind::Direct, gi, mode, &mut len);
            return Some(self.finish(buf, len, mode, Destination::Member(target)));
        }
        None
    }

    fn push_group_ack(
        &mut self,
        gi: usize,
        now: Timestamp,
        w: &mut PacketWriter<'_>,
        piggyback: bool,
    ) {
        let g = &mut self.groups[gi];
        let mut entries = std::mem::take(&mut self.ack_scratch);
        entries.clear();
        // A report larger than one datagram goes out in chunks, resuming at `ack_cursor`.
        let start = g.ack_cursor.min(g.peers.len());
        entries.extend(g.peers[start..].iter().map(|p| AckEntry {
            sender: p.id,
            received: p.recv.received,
            consumed: p.recv.consumed(),
        }));
        if entries.is_empty() {
            g.ack_dirty = false;
            g.ack_due = false;
            g.ack_cursor = 0;
            self.ack_scratch = entries;
            return;
        }
        if piggyback && (start > 0 || w.room() < entries.len() * crate::wire::ACK_ENTRY_LEN) {
            self.ack_scratch = entries;
            return;
        }
        let written = w.push_ack(false, &entries);
        if written > 0 {
            for p in g.peers[start..start + written].iter_mut() {
                p.recv.reported_received = p.recv.received;
                p.recv.reported_consumed = p.recv.consumed();
            }
            g.last_ack = now;
            self.stats.acks_sent += 1;
            if written == entries.len() {
                g.ack_dirty = false;
                g.ack_due = false;
                g.ack_cursor = 0;
            } else {
                // More chunks follow at once (the report stays due).
                g.ack_cursor = start + written;
                g.ack_due = true;
            }
        }
        self.ack_scratch = entries;
    }

    fn sendable(&mut self, gi: usize, pi: Option<usize>, now: Timestamp) -> bool {
        let (wf, wb) = (self.cfg.window_frames, self.cfg.window_bytes);
        let g = &mut self.groups[gi];
        match pi {
            Some(pi) => g.peers[pi].p2p_send.window_open(wf, wb),
            None => {
                if !g.send.window_open(wf, wb) {
                    return false;
                }
                if g.rate_blocked {
                    match &g.rate {
                        Some(r) if now < r.next_refill() => return false,
                        _ => g.rate_blocked = false,
                    }
                }
                true
            }
        }
    }

    /// Packs frames never transmitted into `w`, within window and rate limit.
    fn pack_new(&mut self, gi: usize, pi: Option<usize>, now: Timestamp, w: &mut PacketWriter<'_>) {
        let (wf, wb) = (self.cfg.window_frames, self.cfg.window_bytes);
        let g = &mut self.groups[gi];
        let (stream, rate) = match pi {
            Some(pi) => (&mut g.peers[pi].p2p_send, None),
            None => (&mut g.send, g.rate.as_mut()),
        };
        let p2p = pi.is_some();
        let mut rate = rate;
        while stream.window_open(wf, wb) {
            let seq = stream.next_new;
            let m = *stream.meta(seq).expect("next_new is retained");
            if PacketWriter::data_frame_len(m.count, m.len as usize) > w.room() {
                break;
            }
            // The rate limiter charges a message once, when its first frame goes out.
            if m.index == 0 {
                if let Some(r) = rate.as_deref_mut() {
                    if !r.try_take(now, m.total_len as usize) {
                        g.rate_blocked = true;
                        break;
                    }
                }
            }
            let written = w.push_data(p2p, seq, m.index, m.count, m.total_len, stream.bytes(&m));
            debug_assert!(written, "room was checked");
            stream.next_new += 1;
            self.stats.frames_sent += 1;
        }
    }

    fn retransmit(
        &mut self,
        gi: usize,
        pi: Option<usize>,
        now: Timestamp,
        buf: &mut [u8],
        mode: SealMode,
        linger: std::time::Duration,
    ) -> Option<Transmit> {
        let mtu = self.cfg.mtu;
        let mut w = PacketWriter::new(buf, mtu, mode.trailer_len());
        let g = &mut self.groups[gi];
        let p2p = pi.is_some();
        let stream = match pi {
            Some(pi) => &mut g.peers[pi].p2p_send,
            None => &mut g.send,
        };
        let mut dest = None;
        while let Some(&(d, start, end)) = stream.retransmit.front() {
            if dest.is_some_and(|x| x != d) {
                break;
            }
            let mut seq = start.max(stream.floor());
            let mut full = false;
            while seq < end {
                let Some(m) = stream.meta(seq).copied() else {
                    break;
                };
                // Suppression applies to multicast repairs only: a unicast repair to one member
                // does not help another member that asked for the same frame.
                let recently = matches!(d, Destination::Group(_))
                    && m.retransmitted_at != Timestamp::ZERO
                    && now.saturating_since(m.retransmitted_at) < linger;
                if !recently {
                    if !w.push_data(p2p, seq, m.index, m.count, m.total_len, stream.bytes(&m)) {
                        full = true;
                        break;
                    }
                    dest = Some(d);
                    self.stats.frames_retransmitted += 1;
                    if let Some(mm) = stream.meta_mut(seq) {
                        mm.retransmitted_at = now;
                    }
                }
                seq += 1;
            }
            if full {
                if let Some(front) = stream.retransmit.front_mut() {
                    front.1 = seq;
                }
                break;
            }
            stream.retransmit.pop_front();
        }
        let dest = dest?;
        let kind = match dest {
            Destination::Group(_) => PacketKind::Group,
            Destination::Member(_) => PacketKind::Direct,
        };
        let mut len = 0;
        self.seal(w, kind, gi, mode, &mut len);
        Some(self.finish(buf, len, mode, dest))
    }
}

impl<S: DeliverySink> Protocol for Endpoint<S> {
    fn handle_datagram(
        &mut self,
        now: Timestamp,
        _from: std::net::SocketAddr,
        datagram: &mut [u8],
    ) {
        self.stats.datagrams_received += 1;
        let (header, body) = match Sealer::open(&self.keys, datagram) {
            Ok(x) => x,
            Err(reason) => {
                self.drops.count(reason);
                return;
            }
        };
        let sender = MemberId(header.sender.get());
        if sender == self.me {
            self.drops.count(DropReason::OwnPacket);
            return;
        }
        let Some(kind) = PacketKind::from_u8(header.kind) else {
            self.drops.count(DropReason::MalformedFrame);
            return;
        };
        let group = GroupId(header.group_id.get());
        let Some(gi) = self.groups.iter().position(|g| g.id == group) else {
            self.drops.count(DropReason::UnknownGroup);
            return;
        };
        if header.view_id.get() != self.groups[gi].view.0 {
            self.drops.count(DropReason::WrongView);
            return;
        }
        let Some(pi) = self.groups[gi].peer_index(sender) else {
            self.drops.count(DropReason::UnknownSender);
            return;
        };
        // Replay check only after the group, view and membership checks, and per (group,
        // sender): a datagram a member could not legitimately send must not move any window.
        if header.flags & FLAG_AUTH != 0
            && !self
                .replay
                .accept(group, sender, header.packet_number.get())
        {
            self.drops.count(DropReason::Replayed);
            return;
        }
        for frame in FrameReader::new(&datagram[body], header.frame_count) {
            match frame {
                Ok(f) => self.on_frame(gi, pi, kind, f, now),
                Err(reason) => {
                    self.drops.count(reason);
                    break;
                }
            }
        }
    }

    fn poll_transmit(&mut self, now: Timestamp, buf: &mut [u8]) -> Option<Transmit> {
        let n = self.groups.len();
        for k in 0..n {
            let gi = (self.rr + k) % n;
            if let Some(t) = self.transmit_group(gi, now, buf) {
                self.rr = (gi + 1) % n;
                return Some(t);
            }
        }
        None
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        let mut next: Option<Timestamp> = None;
        let mut consider = |t: Timestamp| next = Some(next.map_or(t, |n: Timestamp| n.min(t)));
        for g in &self.groups {
            if let Some(t) = g.gap_deadline() {
                consider(t);
            }
            if g.ack_dirty && !g.ack_due {
                consider(g.last_ack + self.cfg.ack_interval);
            }
            if g.send.awaiting_reports() && !g.heartbeat_due {
                consider(g.last_data_tx + self.cfg.heartbeat_interval);
            }
            if g.rate_blocked {
                if let Some(r) = &g.rate {
                    consider(r.next_refill());
                }
            }
            for p in &g.peers {
                if p.p2p_ack_dirty && !p.p2p_ack_due {
                    consider(p.last_p2p_ack + self.cfg.ack_interval);
                }
                if p.p2p_send.awaiting_reports() && !p.p2p_heartbeat_due {
                    consider(p.last_p2p_tx + self.cfg.heartbeat_interval);
                }
            }
        }
        next
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        let cfg = &self.cfg;
        for g in self.groups.iter_mut() {
            for p in g.peers.iter_mut() {
                for s in [&mut p.recv, &mut p.p2p_recv] {
                    if let Some(t) = s.nak_at {
                        if t <= now {
                            if s.has_gap() {
                                s.nak_due = true;
                                s.nak_at = Some(now + cfg.nak_retry);
                            } else {
                                s.nak_at = None;
                            }
                        }
                    }
                }
                if p.p2p_ack_dirty && now >= p.last_p2p_ack + cfg.ack_interval {
                    p.p2p_ack_due = true;
                }
                if p.p2p_send.awaiting_reports() && now >= p.last_p2p_tx + cfg.heartbeat_interval {
                    p.p2p_heartbeat_due = true;
                    p.last_p2p_tx = now;
                }
            }
            if g.ack_dirty && now >= g.last_ack + cfg.ack_interval {
                g.ack_due = true;
            }
            if g.send.awaiting_reports() && now >= g.last_data_tx + cfg.heartbeat_interval {
                g.heartbeat_due = true;
            }
            if g.rate_blocked && g.rate.as_ref().is_some_and(|r| now >= r.next_refill()) {
                g.rate_blocked = false;
            }
        }
    }
}
