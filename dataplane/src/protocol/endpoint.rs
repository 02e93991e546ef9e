//! [`Endpoint`]: one member's sans-IO reliable-multicast state for every group it is in.
//!
//! Per group the endpoint owns the member's outgoing group stream, one incoming group stream
//! per peer, a point-to-point stream pair per peer, the raw (unreliable) queue, the rate
//! limiter and the timers that drive receipt reports, NAKs and heartbeats. See the module
//! docs of [`crate::protocol`] for the driving loop and `ARCHITECTURE.md` for the protocol.
//!
//! # View change (data-plane half)
//!
//! The control plane decides views; the endpoint executes them per group:
//!
//! 1. [`Endpoint::wedge`]: group multicasts are refused ([`SendError::Wedged`]); every incoming
//!    group stream is limited to what it holds contiguously; the [`WedgeReport`] gives, per
//!    member, the last frame held (for itself, the last frame admitted).
//! 2. [`Endpoint::flush`] with a cut (per sender: `through` and a `holder`): limits become the
//!    cut; missing frames are requested with RELAY_REQ from the holder, which answers with RELAY
//!    frames from its retention (its own send stream, or the frames each incoming group stream
//!    keeps until all-stable — `VSYNC_RETAIN_BYTES` per stream); re-requested every
//!    `nak_retry`. [`Endpoint::flushed`] says when every cut frame is held and delivered.
//! 3. [`Endpoint::install`]: group streams restart at sequence 1 under the new view;
//!    point-to-point streams of members present in both views keep their state.
//!
//! # Relay tree (large unicast groups)
//!
//! A group without an IP-multicast address whose view has more than
//! `ProtocolConfig::relay_threshold` members sends the first transmission of each group-stream
//! data datagram only to its `relay_fanout` children in a k-ary tree over the view's ranks
//! rooted at the sender ([`crate::protocol::tree`]); the header's `fanout` field marks such a
//! datagram. A member that finds at least one fresh (first-seen, accepted) data frame in one
//! forwards the identical sealed bytes — copied before opening, never re-sealed, so no AES-GCM
//! nonce is ever used for a second plaintext and the origin's packet number keeps working for
//! replay protection — to its own children in the sender's tree. Repairs (unicast answers to
//! NAKs), receipt reports, heartbeats, raw sends and flush relays stay direct, so a dead or slow
//! relay costs its subtree a NAK round trip, never a message.

use std::collections::VecDeque;

use crate::config::ProtocolConfig;
use crate::protocol::rate_limit::{RateLimit, RateLimiter};
use crate::protocol::recv_stream::{FragInfo, RecvLimits, RecvStream};
use crate::protocol::send_stream::{Admission, ByteStore, SendStream};
use crate::protocol::tree;
use crate::protocol::{Destination, Protocol, Transmit};
use crate::rng::Rng;
use crate::wire::header::{peek_fanout, set_fanout, FLAG_AUTH};
use crate::wire::replay::ReplayTable;
use crate::wire::{
    AckEntry, DropCounters, DropReason, Frame, FrameReader, Keys, NakRange, PacketKind,
    PacketWriter, SealMode, Sealer,
};
use crate::{GroupId, MemberId, Timestamp, ViewId};
use zerocopy::FromBytes;

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
    /// The group is wedged for a view change: multicasts in this view are refused until the
    /// next view is installed (backpressure; retry after `install`).
    Wedged(GroupId),
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
            SendError::Wedged(g) => write!(
                f,
                "group {g} is wedged for a view change: multicasts wait for the next view"
            ),
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

/// One entry of a flush cut: every survivor must hold `sender`'s group-stream frames
/// `1..=through` of the wedged view; `holder` (a survivor) has them and relays them on request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CutEntry {
    /// Whose group stream.
    pub sender: MemberId,
    /// The last frame every survivor must hold (0 = none).
    pub through: u64,
    /// A survivor holding frames `1..=through` (may be `sender` itself).
    pub holder: MemberId,
}

/// What a wedged member reports: for every member of the view (itself included, in view
/// order) the last frame sequence number of that member's group stream it holds contiguously
/// (0 = none); for itself, the last frame it admitted (and self-delivered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WedgeReport {
    /// The wedged view.
    pub view: ViewId,
    /// `(member, last contiguous frame)` for every member of the view.
    pub positions: Vec<(MemberId, u64)>,
}

/// Why a view-change call ([`Endpoint::wedge`], [`Endpoint::flush`], [`Endpoint::install`])
/// was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewChangeError {
    /// This endpoint is not in the group.
    UnknownGroup(GroupId),
    /// The call names a view other than the expected one (wedge/flush: the current view;
    /// install: a view greater than the current one).
    WrongView {
        /// The group's current view.
        current: ViewId,
        /// The view the call named.
        asked: ViewId,
    },
    /// Flush or install on a group that is not wedged.
    NotWedged,
    /// Install before the flush completed (no cut set, or [`Endpoint::flushed`] is false).
    NotFlushed,
    /// The cut is inconsistent with this member's state; the string says how.
    BadCut(String),
    /// The new view does not include this member.
    NotAMember(MemberId),
}

impl std::fmt::Display for ViewChangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ViewChangeError::UnknownGroup(g) => write!(f, "not a member of group {g}"),
            ViewChangeError::WrongView { current, asked } => write!(
                f,
                "wrong view: the group is in view {} and the call named view {}",
                current.0, asked.0
            ),
            ViewChangeError::NotWedged => {
                write!(f, "the group is not wedged (call wedge first)")
            }
            ViewChangeError::NotFlushed => write!(
                f,
                "the flush is not complete: some cut frames are missing or undelivered"
            ),
            ViewChangeError::BadCut(why) => write!(f, "bad flush cut: {why}"),
            ViewChangeError::NotAMember(m) => {
                write!(f, "the new view does not include this member {m}")
            }
        }
    }
}

impl std::error::Error for ViewChangeError {}

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
    /// RELAY_REQ frames sent (flush).
    pub relay_requests_sent: u64,
    /// RELAY_REQ frames received and served (flush).
    pub relay_requests_received: u64,
    /// RELAY frames sent (flush).
    pub relay_frames_sent: u64,
    /// RELAY frames received (flush; duplicates included).
    pub relay_frames_received: u64,
    /// Data datagrams of this member's own group stream sent down the relay tree (each sealed
    /// once and sent to at most `relay_fanout` children).
    pub tree_datagrams_sent: u64,
    /// Copies of other members' relay-tree datagrams forwarded to this member's children.
    pub relayed_datagrams: u64,
    /// Relay-tree datagrams not forwarded because the forwarding queue was full or the
    /// datagram exceeded this member's MTU (the children recover the frames by NAK).
    pub relay_overflow: u64,
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
    /// Bytes the incoming group streams retain until all-stable (to relay them in a flush).
    pub relay_retained_bytes: usize,
    /// The group is wedged for a view change.
    pub wedged: bool,
}

/// The result of feeding a data frame to a stream.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Outcome {
    pub duplicate: bool,
    pub new_gap: bool,
    pub drop: Option<DropReason>,
    pub delivered: u32,
    pub malformed: u32,
    pub retention_full: u32,
}

#[derive(Debug)]
struct Peer {
    id: MemberId,
    recv: RecvStream,
    /// Per reporter (indexed like `Group::peers`): the `received` position it reported for this
    /// peer's group stream; `u64::MAX` at this peer's own index (not a reporter of itself).
    reports: Vec<u64>,
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

/// A relay answer in progress: frames `next..=end` of `origin`'s stream to `to`.
#[derive(Debug, Clone, Copy)]
struct RelayJob {
    to: MemberId,
    origin: MemberId,
    next: u64,
    end: u64,
}

/// One cut entry and the last frame requested for it.
#[derive(Debug, Clone, Copy)]
struct CutState {
    entry: CutEntry,
    requested: u64,
}

/// A wedged group's view-change state.
#[derive(Debug, Default)]
struct Wedge {
    /// The flush cut, once set.
    cut: Option<Vec<CutState>>,
    /// Relay requests should be (re)built now.
    relay_due: bool,
    /// When the relay requests are re-sent if frames are still missing.
    relay_at: Option<Timestamp>,
    /// Built requests not yet transmitted: (holder, origin, from, to).
    req_out: VecDeque<(MemberId, MemberId, u64, u64)>,
    /// Next periodic receipt report while wedged (stability knowledge must converge even when
    /// no sender heartbeats).
    report_at: Timestamp,
}

/// Most frames one relay request is answered with.
const RELAY_BATCH: u64 = 256;

/// Bytes of relay-tree datagrams one group may queue for its children (lazily backed).
const TREE_QUEUE_BYTES: usize = 512 << 10;

/// One relay-tree datagram (sealed, as received or as this member sent it) still to be copied
/// to the children with relative ranks `next..end` of the tree rooted at view rank `root`.
#[derive(Debug, Clone, Copy)]
struct TreeJob {
    offset: usize,
    len: usize,
    root: usize,
    next: usize,
    end: usize,
    /// This member's own first transmission (not counted as relayed).
    own: bool,
}

/// The relay-tree forwarding queue of a group: a FIFO byte ring plus the jobs over it.
#[derive(Debug)]
struct TreeQueue {
    store: ByteStore,
    jobs: VecDeque<TreeJob>,
}

impl TreeQueue {
    fn new() -> Self {
        TreeQueue {
            store: ByteStore::new(TREE_QUEUE_BYTES),
            jobs: VecDeque::new(),
        }
    }

    /// Queues a copy of `bytes` for the children `children` of the tree rooted at `root`;
    /// false if the ring is full.
    fn push(
        &mut self,
        bytes: &[u8],
        root: usize,
        children: std::ops::Range<usize>,
        own: bool,
    ) -> bool {
        let Some(offset) = self.store.alloc(bytes.len()) else {
            return false;
        };
        self.store
            .slice_mut(offset, bytes.len())
            .copy_from_slice(bytes);
        self.jobs.push_back(TreeJob {
            offset,
            len: bytes.len(),
            root,
            next: children.start,
            end: children.end,
            own,
        });
        true
    }

    fn clear(&mut self) {
        while let Some(j) = self.jobs.pop_front() {
            self.store.free_front(j.offset, j.len);
        }
    }
}

/// The relay-tree fanout a group uses, if any: unicast groups larger than the threshold.
fn tree_fanout(cfg: &ProtocolConfig, multicast: bool, members: usize) -> Option<u16> {
    (!multicast && cfg.relay_threshold != 0 && members > cfg.relay_threshold)
        .then_some(cfg.relay_fanout as u16)
}

#[derive(Debug)]
struct Group {
    id: GroupId,
    view: ViewId,
    /// The view's members in view order (this endpoint included).
    members: Vec<MemberId>,
    /// The view before this one, if installed by a view change (P2P datagrams of it are
    /// still accepted).
    prev_view: Option<ViewId>,
    wedge: Option<Wedge>,
    relay_out: VecDeque<RelayJob>,
    multicast: bool,
    /// The relay-tree fanout this member uses for its own data (`None`: flat fan-out or
    /// IP multicast).
    tree: Option<u16>,
    /// This member's rank (index in `members`).
    rank: usize,
    /// Relay-tree datagrams waiting to be copied to this member's children.
    tree_out: TreeQueue,
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

    fn is_flushing(&self) -> bool {
        self.wedge.as_ref().is_some_and(|w| w.cut.is_some())
    }

    /// This member's children in `sender`'s relay tree of fanout `fanout` (relative ranks) and
    /// the sender's rank; `None` if the sender is not in the view.
    fn tree_children(
        &self,
        sender: MemberId,
        fanout: usize,
    ) -> Option<(usize, std::ops::Range<usize>)> {
        let n = self.members.len();
        let root = self.members.iter().position(|m| *m == sender)?;
        let rel = tree::relative(self.rank, root, n);
        Some((root, tree::children(rel, fanout, n)))
    }
}

/// A peer with fresh streams; `index` is its position in `peers` of `n` peers.
fn new_peer(cfg: &ProtocolConfig, id: MemberId, index: usize, n: usize) -> Peer {
    let max_frames = cfg.window_frames * 4;
    let p2p_bytes = (cfg.send_buffer_bytes / P2P_BUFFER_DIVISOR).max(cfg.max_message_bytes);
    let mut reports = vec![1; n];
    reports[index] = u64::MAX;
    Peer {
        id,
        recv: RecvStream::new(1, cfg.retain_bytes, n >= 2),
        reports,
        p2p_send: SendStream::new(p2p_bytes, max_frames, &[id], false),
        p2p_recv: RecvStream::new(1, 0, false),
        p2p_ack_dirty: false,
        p2p_ack_due: false,
        last_p2p_ack: Timestamp::ZERO,
        p2p_heartbeat_due: false,
        last_p2p_tx: Timestamp::ZERO,
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
    /// The datagram being handled, as received (sealed), when it may have to be forwarded
    /// down a relay tree.
    tree_scratch: Vec<u8>,
    /// The datagram being handled carried at least one fresh group-stream data frame.
    tree_fresh: bool,
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
            tree_scratch: Vec::new(),
            tree_fresh: false,
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
        let peers = peers_ids
            .iter()
            .enumerate()
            .map(|(i, id)| new_peer(cfg, *id, i, peers_ids.len()))
            .collect();
        self.keys.set_group_key(group, spec.key.as_ref());
        let mut members = spec.members.clone();
        if !members.contains(&self.me) {
            members.push(self.me);
        }
        let rank = members.iter().position(|m| *m == self.me).unwrap_or(0);
        self.groups.push(Group {
            id: group,
            view: spec.view,
            tree: tree_fanout(cfg, spec.multicast, members.len()),
            rank,
            tree_out: TreeQueue::new(),
            members,
            prev_view: None,
            wedge: None,
            relay_out: VecDeque::new(),
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
        if self.groups[gi].wedge.is_some() {
            return Err(SendError::Wedged(group));
        }
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
        } else if g.wedge.is_some() {
            return Err(SendError::Wedged(group));
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
            relay_retained_bytes: g.peers.iter().map(|p| p.recv.retention.bytes()).sum(),
            wedged: g.wedge.is_some(),
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
        match frame {
            Frame::Ack {
                p2p: false,
                entries,
            } => return self.on_group_ack(gi, pi, entries),
            Frame::RelayReq { origin, from, to } => {
                return self.on_relay_req(gi, pi, kind, origin, from, to)
            }
            Frame::Relay {
                origin,
                seq,
                index,
                count,
                total_len,
                payload,
            } => {
                let frag = (count > 1).then_some(FragInfo {
                    index,
                    count,
                    total_len,
                });
                return self.on_relay(gi, kind, origin, seq, frag, payload);
            }
            _ => {}
        }
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
            tree_fresh,
            ..
        } = self;
        let g = &mut groups[gi];
        let (gid, view, multicast) = (g.id, g.view, g.multicast);
        // While wedged, group-stream gaps are filled by relays from the cut's holders, not NAKs.
        let wedged = g.wedge.is_some();
        let p = &mut g.peers[pi];
        let sender = p.id;
        match frame {
            Frame::RelayReq { .. } | Frame::Relay { .. } => {}
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
                let from = (gid, view, sender, dkind);
                let o = feed_stream(
                    stream,
                    (seq, frag, payload),
                    from,
                    limits,
                    sink,
                    stats,
                    drops,
                );
                // Fresh: first seen and accepted into the stream (an oversized message's frames
                // still advance it). Only such frames make a relay-tree datagram worth forwarding.
                if !p2p
                    && !o.duplicate
                    && o.retention_full == 0
                    && matches!(o.drop, None | Some(DropReason::Oversized))
                {
                    *tree_fresh = true;
                }
                if o.new_gap && stream.nak_at.is_none() && (p2p || !wedged) {
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
                // Group reports were handled by `on_group_ack`.
                debug_assert!(p2p);
                for e in entries.filter(|e| e.sender == *me) {
                    p.p2p_send.on_ack(sender, e.received, e.consumed);
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
                if o.new_gap && stream.nak_at.is_none() && (p2p || !wedged) {
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

    /// A multicast receipt report from peer `pi`: its positions for this member's stream feed
    /// flow control and stability; its positions for other peers' streams feed their
    /// all-stable points (which free receiver retention).
    fn on_group_ack(&mut self, gi: usize, pi: usize, entries: crate::wire::frame::AckEntries<'_>) {
        let me = self.me;
        let g = &mut self.groups[gi];
        let reporter = g.peers[pi].id;
        for e in entries {
            if e.sender == me {
                g.send.on_ack(reporter, e.received, e.consumed);
                continue;
            }
            let Some(xi) = g.peer_index(e.sender) else {
                continue;
            };
            if xi == pi {
                continue;
            }
            let x = &mut g.peers[xi];
            let old = x.reports[pi];
            if e.received <= old {
                continue;
            }
            x.reports[pi] = e.received;
            // Only a report that was (one of) the lowest can move the all-stable point.
            if old <= x.recv.retention.stable() {
                let stable = x.reports.iter().copied().min().unwrap_or(u64::MAX);
                x.recv.release_stable(stable);
            }
        }
    }

    /// A flush relay request from peer `pi`: queue an answer from this member's retention.
    fn on_relay_req(
        &mut self,
        gi: usize,
        pi: usize,
        kind: PacketKind,
        origin: MemberId,
        from: u64,
        to: u64,
    ) {
        if kind != PacketKind::Direct {
            self.drops.count(DropReason::MalformedFrame);
            return;
        }
        let me = self.me;
        let g = &mut self.groups[gi];
        if origin != me && g.peer_index(origin).is_none() {
            self.drops.count(DropReason::UnknownSender);
            return;
        }
        let requester = g.peers[pi].id;
        let end = to.min(from.saturating_add(RELAY_BATCH - 1));
        self.stats.relay_requests_received += 1;
        // A new request from the same requester for the same stream supersedes the old one,
        // so the queue stays bounded by peers × members.
        if let Some(j) = g
            .relay_out
            .iter_mut()
            .find(|j| j.to == requester && j.origin == origin)
        {
            j.next = from;
            j.end = end;
        } else {
            g.relay_out.push_back(RelayJob {
                to: requester,
                origin,
                next: from,
                end,
            });
        }
    }

    /// A relayed frame of `origin`'s stream: fed to that stream like MSG/FRAG while flushing.
    fn on_relay(
        &mut self,
        gi: usize,
        kind: PacketKind,
        origin: MemberId,
        seq: u64,
        frag: Option<FragInfo>,
        payload: &[u8],
    ) {
        if kind != PacketKind::Direct {
            self.drops.count(DropReason::MalformedFrame);
            return;
        }
        let Endpoint {
            groups,
            sink,
            stats,
            drops,
            limits,
            me,
            ..
        } = self;
        let g = &mut groups[gi];
        if !g.is_flushing() || origin == *me {
            drops.count(DropReason::Wedged);
            return;
        }
        let Some(xi) = g.peer_index(origin) else {
            drops.count(DropReason::UnknownSender);
            return;
        };
        stats.relay_frames_received += 1;
        let (gid, view) = (g.id, g.view);
        let stream = &mut g.peers[xi].recv;
        let from = (gid, view, origin, DeliveryKind::Send);
        feed_stream(
            stream,
            (seq, frag, payload),
            from,
            limits,
            sink,
            stats,
            drops,
        );
        let received = stream.received;
        g.ack_dirty = true;
        // Everything requested for this stream arrived: ask for the next batch at once.
        if let Some(w) = g.wedge.as_mut() {
            if let Some(c) = w
                .cut
                .as_ref()
                .and_then(|cut| cut.iter().find(|c| c.entry.sender == origin))
            {
                if received > c.requested && received <= c.entry.through {
                    w.relay_due = true;
                }
            }
        }
    }

    // ---- view change ---------------------------------------------------------------------

    fn vc_group(&self, group: GroupId) -> Result<usize, ViewChangeError> {
        self.groups
            .iter()
            .position(|g| g.id == group)
            .ok_or(ViewChangeError::UnknownGroup(group))
    }

    /// Wedges the group's view `view` for a view change: group sends (`try_send`, and
    /// `try_send_raw` to the group) are refused with [`SendError::Wedged`]; each incoming group
    /// stream stops accepting frames beyond its current contiguous position (its limit; frames
    /// above are dropped as [`DropReason::Wedged`]). This member's own stream keeps
    /// transmitting frames it already admitted and keeps serving NAKs; point-to-point traffic
    /// continues. Calling it again (a new flush round) re-freezes every stream at what it
    /// holds then, drops the previous round's cut and relay requests, and reports those
    /// positions; until the next [`Endpoint::flush`] nothing beyond them is accepted.
    pub fn wedge(&mut self, group: GroupId, view: ViewId) -> Result<WedgeReport, ViewChangeError> {
        let gi = self.vc_group(group)?;
        let me = self.me;
        let g = &mut self.groups[gi];
        if view != g.view {
            return Err(ViewChangeError::WrongView {
                current: g.view,
                asked: view,
            });
        }
        // Every call (a new flush round included) freezes each incoming stream at what it
        // holds now and forgets any previous round's cut and relay requests: frames relayed
        // after this report would otherwise be delivered beyond the next cut, which is
        // computed from these positions.
        let report_at = g.wedge.as_ref().map(|w| w.report_at);
        g.wedge = Some(Wedge {
            report_at: report_at.unwrap_or_default(),
            ..Wedge::default()
        });
        for p in g.peers.iter_mut() {
            let pos = p.recv.received - 1;
            p.recv.set_limit(pos);
            p.recv.nak_at = None;
            p.recv.nak_due = false;
        }
        let positions = g
            .members
            .iter()
            .map(|m| {
                let pos = if *m == me {
                    g.send.next_seq - 1
                } else {
                    g.peer_index(*m).map_or(0, |i| g.peers[i].recv.received - 1)
                };
                (*m, pos)
            })
            .collect();
        Ok(WedgeReport { view, positions })
    }

    /// Whether the group is wedged.
    pub fn is_wedged(&self, group: GroupId) -> bool {
        self.group(group).is_some_and(|g| g.wedge.is_some())
    }

    /// Sets the flush cut of the wedged view `view`: each incoming stream's limit becomes the
    /// cut's `through` for its sender (a cut below what this member already holds is
    /// [`ViewChangeError::BadCut`], and so is a cut of this member's own stream other than what
    /// it admitted). Missing frames are requested from the entry's `holder` with RELAY_REQ and
    /// re-requested every `nak_retry` until held. Calling it again with the same cut is a
    /// no-op; a different cut (a restarted flush round, e.g. after a holder failed) replaces
    /// it. Senders not in the cut keep the limit of the wedge.
    pub fn flush(
        &mut self,
        group: GroupId,
        view: ViewId,
        cut: &[CutEntry],
    ) -> Result<(), ViewChangeError> {
        let gi = self.vc_group(group)?;
        let me = self.me;
        let g = &mut self.groups[gi];
        if view != g.view {
            return Err(ViewChangeError::WrongView {
                current: g.view,
                asked: view,
            });
        }
        let Some(w) = g.wedge.as_ref() else {
            return Err(ViewChangeError::NotWedged);
        };
        if let Some(old) = &w.cut {
            if old.len() == cut.len() && old.iter().zip(cut).all(|(o, c)| o.entry == *c) {
                return Ok(());
            }
        }
        for (i, e) in cut.iter().enumerate() {
            if cut[..i].iter().any(|x| x.sender == e.sender) {
                return Err(ViewChangeError::BadCut(format!(
                    "{} appears twice",
                    e.sender
                )));
            }
            for m in [e.sender, e.holder] {
                if !g.members.contains(&m) {
                    return Err(ViewChangeError::BadCut(format!(
                        "{m} is not a member of view {}",
                        g.view.0
                    )));
                }
            }
            if e.through >= u64::MAX / 2 {
                return Err(ViewChangeError::BadCut(format!(
                    "implausible position {} for {}",
                    e.through, e.sender
                )));
            }
            if e.sender == me {
                let admitted = g.send.next_seq - 1;
                if e.through != admitted {
                    return Err(ViewChangeError::BadCut(format!(
                        "this member's own stream is cut at {} but it admitted (and \
                         self-delivered) through {admitted}",
                        e.through
                    )));
                }
                continue;
            }
            let Some(xi) = g.peer_index(e.sender) else {
                return Err(ViewChangeError::BadCut(format!(
                    "unknown sender {}",
                    e.sender
                )));
            };
            let held = g.peers[xi].recv.received - 1;
            if e.through < held {
                return Err(ViewChangeError::BadCut(format!(
                    "{}'s stream is cut at {} below the {held} frames this member holds",
                    e.sender, e.through
                )));
            }
            if e.through > held && e.holder == me {
                return Err(ViewChangeError::BadCut(format!(
                    "this member is named holder of {}'s frames through {} but holds only {held}",
                    e.sender, e.through
                )));
            }
        }
        for e in cut.iter().filter(|e| e.sender != me) {
            if let Some(xi) = g.peer_index(e.sender) {
                let recv = &mut g.peers[xi].recv;
                recv.set_limit(e.through);
                // Frames up to the cut must be accepted even if stale reports of failed members
                // pin the retention ring (bounded by the cut).
                recv.retention.overflow = true;
            }
        }
        let w = g.wedge.as_mut().expect("checked above");
        w.cut = Some(
            cut.iter()
                .map(|e| CutState {
                    entry: *e,
                    requested: 0,
                })
                .collect(),
        );
        w.relay_due = true;
        w.relay_at = None;
        w.req_out.clear();
        Ok(())
    }

    /// True once a cut is set and, for every sender in it, the stream holds frames
    /// `1..=through` and the application took every message in them (and this member
    /// self-delivered everything it admitted).
    pub fn flushed(&self, group: GroupId) -> bool {
        let Some(g) = self.group(group) else {
            return false;
        };
        let Some(cut) = g.wedge.as_ref().and_then(|w| w.cut.as_ref()) else {
            return false;
        };
        if g.send.self_cursor.is_some_and(|c| c < g.send.next_seq) {
            return false;
        }
        cut.iter().all(|c| {
            c.entry.sender == self.me
                || g.peer_index(c.entry.sender)
                    .is_some_and(|i| g.peers[i].recv.flushed_through(c.entry.through))
        })
    }

    /// Installs the next view `spec` after a completed flush: `spec.view` must be greater than
    /// the current view ([`ViewChangeError::WrongView`]), the group wedged
    /// ([`ViewChangeError::NotWedged`]) and [`Endpoint::flushed`]
    /// ([`ViewChangeError::NotFlushed`]). Group streams restart from sequence 1 under the new
    /// view (datagrams of the old view become `wrong_view` drops, except point-to-point data and
    /// reports in Direct packets of the immediately previous view from current members).
    /// Point-to-point streams of members present in both views keep their state; those of
    /// departed members are discarded; joiners get fresh ones. Queued raw messages are
    /// discarded. Un-wedges.
    pub fn install(&mut self, group: GroupId, spec: GroupSpec) -> Result<(), ViewChangeError> {
        let gi = self.vc_group(group)?;
        let me = self.me;
        let g = &self.groups[gi];
        if spec.view <= g.view {
            return Err(ViewChangeError::WrongView {
                current: g.view,
                asked: spec.view,
            });
        }
        if g.wedge.is_none() {
            return Err(ViewChangeError::NotWedged);
        }
        if !self.flushed(group) {
            return Err(ViewChangeError::NotFlushed);
        }
        if !spec.members.contains(&me) {
            return Err(ViewChangeError::NotAMember(me));
        }
        let peer_ids: Vec<MemberId> = spec.members.iter().copied().filter(|m| *m != me).collect();
        let cfg = &self.cfg;
        let max_frames = cfg.window_frames * 4;
        let g = &mut self.groups[gi];
        let mut old: Vec<Peer> = std::mem::take(&mut g.peers);
        let n = peer_ids.len();
        g.peers = peer_ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let mut p = new_peer(cfg, *id, i, n);
                if let Some(k) = old.iter().position(|o| o.id == *id) {
                    let o = old.swap_remove(k);
                    p.p2p_send = o.p2p_send;
                    p.p2p_recv = o.p2p_recv;
                    p.p2p_ack_dirty = o.p2p_ack_dirty;
                    p.p2p_ack_due = o.p2p_ack_due;
                    p.last_p2p_ack = o.last_p2p_ack;
                    p.p2p_heartbeat_due = o.p2p_heartbeat_due;
                    p.last_p2p_tx = o.last_p2p_tx;
                }
                p
            })
            .collect();
        g.send = SendStream::new(
            cfg.send_buffer_bytes,
            max_frames,
            &peer_ids,
            cfg.self_delivery,
        );
        g.prev_view = Some(g.view);
        g.view = spec.view;
        g.members = spec.members.clone();
        g.rank = g.members.iter().position(|m| *m == me).unwrap_or(0);
        g.multicast = spec.multicast;
        g.tree = tree_fanout(cfg, spec.multicast, g.members.len());
        // Queued copies belong to the old view (and its ranks); receivers would drop them.
        g.tree_out.clear();
        g.wedge = None;
        g.relay_out.clear();
        g.raw_out.clear();
        g.raw_store = ByteStore::new(RAW_QUEUE_BYTES);
        g.ack_dirty = false;
        g.ack_due = false;
        g.ack_cursor = 0;
        g.heartbeat_due = false;
        g.p2p_rr = 0;
        self.keys.set_group_key(group, spec.key.as_ref());
        Ok(())
    }

    /// Builds the relay requests of a flushing group: for every cut stream still short of its
    /// `through`, one RELAY_REQ for the next batch from its first missing frame.
    fn build_relay_requests(&mut self, gi: usize, now: Timestamp) {
        let retry = self.cfg.nak_retry;
        let g = &mut self.groups[gi];
        let Some(w) = g.wedge.as_mut() else {
            return;
        };
        w.relay_due = false;
        w.relay_at = None;
        w.req_out.clear();
        let Some(cut) = w.cut.as_mut() else {
            return;
        };
        for c in cut.iter_mut() {
            let Some(xi) = g.peers.iter().position(|p| p.id == c.entry.sender) else {
                continue;
            };
            let recv = &g.peers[xi].recv;
            if recv.received > c.entry.through {
                continue;
            }
            let from = recv.received;
            let to = c.entry.through.min(from + RELAY_BATCH - 1);
            c.requested = to;
            w.req_out
                .push_back((c.entry.holder, c.entry.sender, from, to));
        }
        if !w.req_out.is_empty() {
            w.relay_at = Some(now + retry);
            w.req_out.make_contiguous().sort_by_key(|r| r.0);
        }
    }

    /// One datagram of relay requests to one holder.
    fn transmit_relay_requests(
        &mut self,
        gi: usize,
        now: Timestamp,
        buf: &mut [u8],
        mode: SealMode,
    ) -> Option<Transmit> {
        if self.groups[gi].wedge.as_ref()?.relay_due {
            self.build_relay_requests(gi, now);
        }
        let w = self.groups[gi].wedge.as_mut()?;
        let holder = w.req_out.front()?.0;
        let mut pw = PacketWriter::new(buf, self.cfg.mtu, mode.trailer_len());
        while let Some(&(h, origin, from, to)) = w.req_out.front() {
            if h != holder || !pw.push_relay_req(origin, from, to) {
                break;
            }
            w.req_out.pop_front();
            self.stats.relay_requests_sent += 1;
        }
        let mut len = 0;
        self.seal(pw, PacketKind::Direct, gi, mode, &mut len);
        Some(self.finish(buf, len, mode, Destination::Member(holder)))
    }

    /// One datagram of relayed frames to one requester, from this member's retention.
    fn transmit_relay(&mut self, gi: usize, buf: &mut [u8], mode: SealMode) -> Option<Transmit> {
        let me = self.me;
        let (mtu, trailer) = (self.cfg.mtu, mode.trailer_len());
        loop {
            let g = &mut self.groups[gi];
            let dest = g.relay_out.front()?.to;
            let mut w = PacketWriter::new(buf, mtu, trailer);
            let mut full = false;
            while let Some(job) = g.relay_out.front_mut() {
                if job.to != dest {
                    break;
                }
                let xi = g.peers.iter().position(|p| p.id == job.origin);
                let mut done = false;
                while !done {
                    let frame = if job.origin == me {
                        g.send.meta(job.next).map(|m| {
                            (
                                (m.index, m.count, m.total_len),
                                g.send.bytes(m),
                                g.send.floor(),
                            )
                        })
                    } else {
                        xi.and_then(|xi| {
                            let r = &g.peers[xi].recv.retention;
                            r.get(job.next)
                                .map(|(f, b)| ((f.index, f.count, f.total_len), b, r.floor()))
                        })
                    };
                    let Some(((index, count, total_len), bytes, _)) = frame else {
                        // Not retained: below the floor (skip to it) or never held (done).
                        let floor = if job.origin == me {
                            g.send.floor()
                        } else {
                            xi.map_or(u64::MAX, |xi| g.peers[xi].recv.retention.floor())
                        };
                        if job.next < floor && floor <= job.end {
                            job.next = floor;
                            continue;
                        }
                        break;
                    };
                    if w.push_relay(job.origin, job.next, index, count, total_len, bytes) {
                        self.stats.relay_frames_sent += 1;
                    } else if !w.is_empty() {
                        full = true;
                        break;
                    }
                    // (A frame that can never fit — a peer with a larger MTU — is skipped.)
                    done = job.next >= job.end;
                    job.next = job.next.saturating_add(1);
                }
                if full {
                    break;
                }
                g.relay_out.pop_front();
            }
            if !w.is_empty() {
                let mut len = 0;
                self.seal(w, PacketKind::Direct, gi, mode, &mut len);
                return Some(self.finish(buf, len, mode, Destination::Member(dest)));
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

        // 0. Relay-tree copies: this member's own first transmissions to its remaining
        //    children, and fresh datagrams of other senders to its children in their trees
        //    (whole subtrees wait for them).
        if let Some(t) = self.transmit_tree(gi, buf) {
            return Some(t);
        }

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
        // 3b. Flush relays (same priority as repairs): answers, then requests.
        if !self.groups[gi].relay_out.is_empty() {
            if let Some(t) = self.transmit_relay(gi, buf, mode) {
                return Some(t);
            }
        }
        if self.groups[gi].wedge.is_some() {
            if let Some(t) = self.transmit_relay_requests(gi, now, buf, mode) {
                return Some(t);
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
                let tree = g.tree;
                let mut len = 0;
                self.seal(w, PacketKind::Group, gi, mode, &mut len);
                if let Some(k) = tree {
                    set_fanout(buf, k);
                    return Some(self.send_down_tree(gi, buf, len, mode, k as usize));
                }
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

    /// Seals this member's own relay-tree datagram (`buf[..len]`, header finished with the
    /// fanout), queues it for its children after the first, and sends it to the first.
    fn send_down_tree(
        &mut self,
        gi: usize,
        buf: &mut [u8],
        len: usize,
        mode: SealMode,
        fanout: usize,
    ) -> Transmit {
        let len = Sealer::seal(&self.keys, mode, buf, len);
        self.stats.datagrams_sent += 1;
        self.stats.tree_datagrams_sent += 1;
        let g = &mut self.groups[gi];
        let n = g.members.len();
        let children = tree::children(0, fanout, n);
        debug_assert!(!children.is_empty(), "a tree group has peers");
        let first = tree::absolute(children.start, g.rank, n);
        if children.len() > 1
            && !g
                .tree_out
                .push(&buf[..len], g.rank, children.start + 1..children.end, true)
        {
            // Cannot happen while the queue is drained before new data; the children would
            // recover by NAK.
            self.stats.relay_overflow += 1;
        }
        Transmit {
            destination: Destination::Member(g.members[first]),
            len,
        }
    }

    /// The next queued relay-tree copy, if any.
    fn transmit_tree(&mut self, gi: usize, buf: &mut [u8]) -> Option<Transmit> {
        let g = &mut self.groups[gi];
        let n = g.members.len();
        let job = g.tree_out.jobs.front_mut()?;
        let to = g.members[tree::absolute(job.next, job.root, n)];
        job.next += 1;
        let j = *job;
        buf[..j.len].copy_from_slice(g.tree_out.store.slice(j.offset, j.len));
        if j.next >= j.end {
            g.tree_out.jobs.pop_front();
            g.tree_out.store.free_front(j.offset, j.len);
        }
        self.stats.datagrams_sent += 1;
        if !j.own {
            self.stats.relayed_datagrams += 1;
        }
        Some(Transmit {
            destination: Destination::Member(to),
            len: j.len,
        })
    }

    /// For a received datagram announcing relay-tree `fanout`: the sender's rank and this
    /// member's children in its tree, if the group is known, the sender a member of its view,
    /// and this member has children. Read from the (not yet authenticated) header. A datagram
    /// longer than this member's MTU is not forwarded (drivers' transmit buffers hold one MTU;
    /// the children recover its frames by NAK).
    fn tree_target(
        &mut self,
        datagram: &[u8],
        fanout: usize,
    ) -> Option<(usize, std::ops::Range<usize>)> {
        if datagram.len() > self.cfg.mtu {
            self.stats.relay_overflow += 1;
            return None;
        }
        let (h, _) = crate::wire::PacketHeader::read_from_prefix(datagram).ok()?;
        let g = self.groups.iter().find(|g| g.id.0 == h.group_id.get())?;
        if h.view_id.get() != g.view.0 || h.kind != PacketKind::Group as u8 {
            return None;
        }
        let (root, children) = g.tree_children(MemberId(h.sender.get()), fanout)?;
        (!children.is_empty() && root != g.rank).then_some((root, children))
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

/// A frame of a reliable point-to-point stream (data, report, NAK or heartbeat).
fn is_reliable_p2p(f: &Frame<'_>) -> bool {
    matches!(
        f,
        Frame::Msg { p2p: true, .. }
            | Frame::Frag { p2p: true, .. }
            | Frame::Ack { p2p: true, .. }
            | Frame::Nak { p2p: true, .. }
            | Frame::High { p2p: true, .. }
    )
}

/// Feeds one data frame (`(seq, fragment info, payload)`) of `from = (group, view, sender,
/// kind)` to an incoming stream, delivering through `sink` and counting deliveries,
/// duplicates and drops. The one path for MSG/FRAG frames and relayed frames.
fn feed_stream<S: DeliverySink>(
    stream: &mut RecvStream,
    (seq, frag, payload): (u64, Option<FragInfo>, &[u8]),
    (group, view, sender, kind): (GroupId, ViewId, MemberId, DeliveryKind),
    limits: &RecvLimits,
    sink: &mut S,
    stats: &mut EndpointStats,
    drops: &mut DropCounters,
) -> Outcome {
    let mut o = Outcome::default();
    let mut deliver = |seq: u64, payload: &[u8]| {
        let ok = sink.deliver(&Delivery {
            group,
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
    for _ in 0..o.retention_full {
        drops.count(DropReason::RetentionFull);
    }
    o
}

impl<S: DeliverySink> Protocol for Endpoint<S> {
    fn handle_datagram(
        &mut self,
        now: Timestamp,
        _from: std::net::SocketAddr,
        datagram: &mut [u8],
    ) {
        self.stats.datagrams_received += 1;
        // A relay-tree datagram is kept as received (sealed) before opening (which decrypts in
        // place) if this member has children in its sender's tree: it may be forwarded.
        // The header is read unauthenticated here; opening authenticates these same bytes.
        let fanout = peek_fanout(datagram) as usize;
        let mut forward = None;
        if fanout != 0 {
            forward = self.tree_target(datagram, fanout);
            if forward.is_some() {
                self.tree_scratch.clear();
                self.tree_scratch.extend_from_slice(datagram);
            }
        }
        self.tree_fresh = false;
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
        if fanout != 0 && kind != PacketKind::Group {
            // Only group datagrams travel down a relay tree.
            self.drops.count(DropReason::MalformedFrame);
            return;
        }
        let group = GroupId(header.group_id.get());
        let Some(gi) = self.groups.iter().position(|g| g.id == group) else {
            self.drops.count(DropReason::UnknownGroup);
            return;
        };
        let view = header.view_id.get();
        // Point-to-point streams survive view changes: their Direct datagrams of the previous
        // view are still accepted (their other frames are `wrong_view`).
        let previous_view = view != self.groups[gi].view.0;
        if previous_view
            && (kind != PacketKind::Direct || self.groups[gi].prev_view != Some(ViewId(view)))
        {
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
                Ok(f) if previous_view && !is_reliable_p2p(&f) => {
                    self.drops.count(DropReason::WrongView);
                }
                Ok(f) => self.on_frame(gi, pi, kind, f, now),
                Err(reason) => {
                    self.drops.count(reason);
                    break;
                }
            }
        }
        if let (true, false, Some((root, children))) = (self.tree_fresh, previous_view, forward) {
            let g = &mut self.groups[gi];
            let bytes = &self.tree_scratch;
            if !g.tree_out.push(bytes, root, children, false) {
                self.stats.relay_overflow += 1;
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
            if let Some(w) = &g.wedge {
                if !g.peers.is_empty() {
                    consider(w.report_at);
                }
                if let (Some(t), false) = (w.relay_at, w.relay_due) {
                    consider(t);
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
            let wedged = g.wedge.is_some();
            if let Some(w) = g.wedge.as_mut() {
                if now >= w.report_at && !g.peers.is_empty() {
                    // Wedged members keep reporting, so every member's all-stable knowledge
                    // converges even when no sender heartbeats.
                    w.report_at = now + cfg.heartbeat_interval;
                    g.ack_dirty = true;
                    g.ack_due = true;
                }
                if w.relay_at.is_some_and(|t| t <= now) {
                    w.relay_at = None;
                    w.relay_due = true;
                }
            }
            for p in g.peers.iter_mut() {
                if wedged {
                    // Group-stream gaps of a wedged view are filled by relays, not NAKs.
                    p.recv.nak_at = None;
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    const G: GroupId = GroupId(7);
    type Log = Rc<RefCell<Vec<(MemberId, DeliveryKind, ViewId, Vec<u8>)>>>;
    type Sink = Box<dyn FnMut(&Delivery<'_>) -> bool>;

    fn m(i: u32) -> MemberId {
        MemberId::new(i, 1)
    }

    fn spec(view: u32, members: &[u32]) -> GroupSpec {
        GroupSpec {
            view: ViewId(view),
            members: members.iter().map(|i| m(*i)).collect(),
            multicast: true,
            key: None,
        }
    }

    fn cfg() -> ProtocolConfig {
        ProtocolConfig {
            mtu: 900,
            max_message_bytes: 1 << 16,
            window_bytes: 1 << 16,
            window_frames: 64,
            send_buffer_bytes: 1 << 18,
            retain_bytes: 1 << 16,
            nak_delay: std::time::Duration::ZERO,
            ..ProtocolConfig::default()
        }
    }

    fn node(i: u32, members: &[u32]) -> (Endpoint<Sink>, Log) {
        let log: Log = Rc::default();
        let l = log.clone();
        let sink: Sink = Box::new(move |d: &Delivery<'_>| {
            l.borrow_mut()
                .push((d.sender, d.kind, d.view, d.payload.to_vec()));
            true
        });
        let mut e = Endpoint::new(cfg(), m(i), 1, i as u64, sink);
        e.join(G, spec(1, members));
        (e, log)
    }

    /// Datagrams produced by `from`, with their destination.
    fn drain(e: &mut Endpoint<Sink>, now: Timestamp) -> Vec<(Destination, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 900];
        while let Some(t) = e.poll_transmit(now, &mut buf) {
            out.push((t.destination, buf[..t.len].to_vec()));
        }
        out
    }

    fn addr() -> std::net::SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    /// Runs a perfect network among `nodes` (indices with `alive`) for `rounds`.
    fn pump(nodes: &mut [Endpoint<Sink>], alive: &[bool], mut now: Timestamp, rounds: usize) {
        for _ in 0..rounds {
            now = now + std::time::Duration::from_micros(500);
            for n in nodes.iter_mut() {
                n.handle_timeout(now);
            }
            for i in 0..nodes.len() {
                if !alive[i] {
                    continue;
                }
                for (dest, mut d) in drain(&mut nodes[i], now) {
                    for j in 0..nodes.len() {
                        let to = match dest {
                            Destination::Group(_) => j != i,
                            Destination::Member(x) => nodes[j].me() == x,
                        };
                        if to && alive[j] {
                            nodes[j].handle_datagram(now, addr(), &mut d.clone());
                        }
                    }
                    d.clear();
                }
            }
        }
    }

    #[test]
    fn wedge_refuses_sends_and_is_idempotent() {
        let (mut a, _) = node(1, &[1, 2, 3]);
        let now = Timestamp::ZERO;
        a.try_send(now, G, b"x").unwrap();
        assert_eq!(
            a.wedge(G, ViewId(2)),
            Err(ViewChangeError::WrongView {
                current: ViewId(1),
                asked: ViewId(2)
            })
        );
        assert_eq!(
            a.wedge(GroupId(99), ViewId(1)),
            Err(ViewChangeError::UnknownGroup(GroupId(99)))
        );
        let r = a.wedge(G, ViewId(1)).unwrap();
        assert_eq!(r.positions, vec![(m(1), 1), (m(2), 0), (m(3), 0)]);
        assert!(a.is_wedged(G));
        assert_eq!(a.try_send(now, G, b"y"), Err(SendError::Wedged(G)));
        assert_eq!(
            a.try_send_raw(now, G, None, b"y"),
            Err(SendError::Wedged(G))
        );
        assert!(a.try_send_raw(now, G, Some(m(2)), b"y").is_ok());
        assert!(a.try_send_p2p(now, G, m(2), b"p").is_ok());
        assert_eq!(a.wedge(G, ViewId(1)).unwrap(), r);
        assert!(a.group_stats(G).unwrap().wedged);
        assert!(!a.flushed(G), "no cut yet");
        assert_eq!(
            a.install(G, spec(2, &[1, 2])),
            Err(ViewChangeError::NotFlushed)
        );
        assert!(!SendError::Wedged(G).to_string().is_empty());
    }

    #[test]
    fn bad_cuts_are_refused() {
        let (mut a, _) = node(1, &[1, 2, 3]);
        let (mut b, _) = node(2, &[1, 2, 3]);
        let now = Timestamp::ZERO;
        b.try_send(now, G, b"one").unwrap();
        b.try_send(now, G, b"two").unwrap();
        for (_, mut d) in drain(&mut b, now) {
            a.handle_datagram(now, addr(), &mut d);
        }
        let cut = |a: u64, b: u64, c: u64| {
            vec![
                CutEntry {
                    sender: m(1),
                    through: a,
                    holder: m(1),
                },
                CutEntry {
                    sender: m(2),
                    through: b,
                    holder: m(2),
                },
                CutEntry {
                    sender: m(3),
                    through: c,
                    holder: m(3),
                },
            ]
        };
        assert_eq!(
            a.flush(G, ViewId(1), &cut(0, 2, 0)),
            Err(ViewChangeError::NotWedged)
        );
        let r = a.wedge(G, ViewId(1)).unwrap();
        assert_eq!(r.positions, vec![(m(1), 0), (m(2), 2), (m(3), 0)]);
        let bad = |e: Result<(), ViewChangeError>| matches!(e, Err(ViewChangeError::BadCut(_)));
        assert!(bad(a.flush(G, ViewId(1), &cut(0, 1, 0))), "below held");
        assert!(bad(a.flush(G, ViewId(1), &cut(1, 2, 0))), "own stream");
        let mut c = cut(0, 2, 5);
        c[2].holder = m(1);
        assert!(bad(a.flush(G, ViewId(1), &c)), "holder lacks");
        c[2].holder = m(9);
        assert!(bad(a.flush(G, ViewId(1), &c)), "holder not a member");
        let mut c = cut(0, 2, 0);
        c.push(c[0]);
        assert!(bad(a.flush(G, ViewId(1), &c)), "duplicate sender");
        assert!(matches!(
            a.flush(G, ViewId(3), &cut(0, 2, 0)),
            Err(ViewChangeError::WrongView { .. })
        ));
        a.flush(G, ViewId(1), &cut(0, 2, 0)).unwrap();
        assert!(a.flushed(G));
        assert!(matches!(
            a.install(G, spec(1, &[1, 2])),
            Err(ViewChangeError::WrongView { .. })
        ));
        assert_eq!(
            a.install(G, spec(2, &[2, 3])),
            Err(ViewChangeError::NotAMember(m(1)))
        );
        a.install(G, spec(2, &[1, 2])).unwrap();
        assert!(!a.is_wedged(G));
        assert_eq!(
            a.install(G, spec(3, &[1, 2])),
            Err(ViewChangeError::NotWedged)
        );
        for e in [
            ViewChangeError::NotWedged,
            ViewChangeError::NotFlushed,
            ViewChangeError::BadCut("x".into()),
            ViewChangeError::UnknownGroup(G),
            ViewChangeError::NotAMember(m(1)),
            ViewChangeError::WrongView {
                current: ViewId(1),
                asked: ViewId(1),
            },
        ] {
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn a_crashed_senders_messages_are_relayed_by_a_survivor() {
        let members = [1, 2, 3];
        let (mut a, _) = node(1, &members);
        let (b, lb) = node(2, &members);
        let (c, lc) = node(3, &members);
        let now = Timestamp::ZERO;
        let big: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        a.try_send(now, G, b"first").unwrap();
        a.try_send(now, G, &big).unwrap(); // fragmented
        a.try_send(now, G, b"third").unwrap();
        // Only b receives a's datagrams; then a crashes.
        let mut nodes = [a, b, c];
        for (_, mut d) in drain(&mut nodes[0], now) {
            nodes[1].handle_datagram(now, addr(), &mut d);
        }
        assert_eq!(lb.borrow().len(), 3);
        assert!(lc.borrow().is_empty());
        let alive = [false, true, true];
        // b retains a's frames: c has not reported holding them.
        pump(&mut nodes, &alive, now, 4);
        assert!(nodes[1].group_stats(G).unwrap().relay_retained_bytes >= 3000);
        let rb = nodes[1].wedge(G, ViewId(1)).unwrap();
        let rc = nodes[2].wedge(G, ViewId(1)).unwrap();
        let a_frames = rb.positions[0].1;
        assert!(a_frames >= 4, "{rb:?}");
        assert_eq!(rc.positions[0], (m(1), 0));
        let cut = [
            CutEntry {
                sender: m(1),
                through: a_frames,
                holder: m(2),
            },
            CutEntry {
                sender: m(2),
                through: 0,
                holder: m(2),
            },
            CutEntry {
                sender: m(3),
                through: 0,
                holder: m(3),
            },
        ];
        for n in &mut nodes[1..] {
            n.flush(G, ViewId(1), &cut).unwrap();
        }
        assert!(nodes[1].flushed(G));
        assert!(!nodes[2].flushed(G));
        pump(&mut nodes, &alive, now, 10);
        assert!(nodes[2].flushed(G));
        assert_eq!(*lb.borrow(), *lc.borrow());
        assert_eq!(lc.borrow()[1].3, big);
        assert!(nodes[2].stats().relay_frames_received >= a_frames);
        // Install view 2 with b and c; group streams restart; new sends flow.
        for n in &mut nodes[1..] {
            n.install(G, spec(2, &[2, 3])).unwrap();
        }
        let t = Timestamp::from_nanos(1_000_000_000);
        assert_eq!(nodes[1].try_send(t, G, b"new view").unwrap(), 1);
        pump(&mut nodes, &alive, t, 4);
        let last = lc.borrow().last().cloned().unwrap();
        assert_eq!(
            last,
            (m(2), DeliveryKind::Send, ViewId(2), b"new view".to_vec())
        );
        // Retention is freed once every other member reported holding the frames.
        assert_eq!(nodes[2].group_stats(G).unwrap().relay_retained_bytes, 0);
    }

    #[test]
    fn relay_frames_outside_a_flush_are_dropped() {
        let (mut a, _) = node(1, &[1, 2, 3]);
        let mut buf = vec![0u8; 900];
        let mut w = PacketWriter::new(&mut buf, 900, 8);
        assert!(w.push_relay(m(3), 1, 0, 1, 1, b"x"));
        let len = w.finish(PacketKind::Direct, ViewId(1), G, m(2), 5, 0);
        let len = Sealer::seal(&Keys::default(), SealMode::Checksum, &mut buf, len);
        a.handle_datagram(Timestamp::ZERO, addr(), &mut buf[..len]);
        assert_eq!(a.drops().get(DropReason::Wedged), 1);
        assert_eq!(a.stats().messages_delivered, 0);
        // Requests at the edge of the sequence space, for every origin, in a Group packet.
        for (pn, (kind, origin)) in (6..).zip([
            (PacketKind::Direct, m(1)),
            (PacketKind::Direct, m(3)),
            (PacketKind::Direct, m(9)),
            (PacketKind::Group, m(1)),
        ]) {
            let mut w = PacketWriter::new(&mut buf, 900, 8);
            assert!(w.push_relay_req(origin, u64::MAX - 1, u64::MAX));
            assert!(w.push_relay_req(origin, 1, u64::MAX));
            let len = w.finish(kind, ViewId(1), G, m(2), pn, 0);
            let len = Sealer::seal(&Keys::default(), SealMode::Checksum, &mut buf, len);
            a.handle_datagram(Timestamp::ZERO, addr(), &mut buf[..len]);
        }
        assert_eq!(a.drops().get(DropReason::UnknownSender), 2);
        assert_eq!(
            a.drops().get(DropReason::MalformedFrame),
            2,
            "one per frame"
        );
        a.try_send_raw(Timestamp::ZERO, G, Some(m(2)), b"x")
            .unwrap();
        let out = drain(&mut a, Timestamp::ZERO);
        assert!(!out.is_empty());
        assert_eq!(
            a.stats().relay_frames_sent,
            0,
            "nothing retained, nothing relayed"
        );
        a.wedge(G, ViewId(1)).unwrap();
        let cut = [CutEntry {
            sender: m(2),
            through: u64::MAX,
            holder: m(2),
        }];
        assert!(matches!(
            a.flush(G, ViewId(1), &cut),
            Err(ViewChangeError::BadCut(_))
        ));
    }

    #[test]
    fn p2p_survives_the_view_change_and_old_view_p2p_is_accepted() {
        let members = [1, 2, 3];
        let (a, _) = node(1, &members);
        let (b, lb) = node(2, &members);
        let (c, _) = node(3, &members);
        let mut nodes = [a, b, c];
        let now = Timestamp::ZERO;
        nodes[0].try_send_p2p(now, G, m(2), b"p2p before").unwrap();
        nodes[0].try_send(now, G, b"group before").unwrap();
        // Captured but not delivered until after the install.
        let held: Vec<_> = drain(&mut nodes[0], now);
        let alive = [true, true, true];
        let cut: Vec<CutEntry> = (1..=3)
            .map(|i| CutEntry {
                sender: m(i),
                through: if i == 1 { 1 } else { 0 },
                holder: m(1),
            })
            .collect();
        for n in nodes.iter_mut() {
            n.wedge(G, ViewId(1)).unwrap();
            n.flush(G, ViewId(1), &cut).unwrap();
        }
        pump(&mut nodes, &alive, now, 10);
        assert!(nodes.iter().all(|n| n.flushed(G)));
        let before = lb.borrow().len();
        for n in nodes.iter_mut() {
            n.install(G, spec(2, &members)).unwrap();
        }
        let wrong = nodes[1].drops().get(DropReason::WrongView);
        let dups = nodes[1].stats().duplicates;
        assert_eq!(held.len(), 2, "one group and one P2P datagram");
        for (_, mut d) in held {
            nodes[1].handle_datagram(now, addr(), &mut d);
        }
        // The old view's group datagram is refused; its P2P datagram is accepted (here a
        // duplicate: the P2P stream already recovered the message during the wedge).
        assert_eq!(nodes[1].drops().get(DropReason::WrongView), wrong + 1);
        assert_eq!(nodes[1].stats().duplicates, dups + 1);
        let p2p: Vec<_> = lb
            .borrow()
            .iter()
            .filter(|x| x.1 == DeliveryKind::P2p)
            .cloned()
            .collect();
        assert_eq!(p2p.len(), 1, "delivered exactly once");
        assert_eq!(p2p[0].3, b"p2p before");
        assert!(lb.borrow().len() >= before);
        nodes[0]
            .try_send_p2p(Timestamp::from_nanos(1), G, m(2), b"p2p after")
            .unwrap();
        pump(&mut nodes, &alive, Timestamp::from_nanos(1_000_000), 6);
        let p2p: Vec<_> = lb
            .borrow()
            .iter()
            .filter(|x| x.1 == DeliveryKind::P2p)
            .map(|x| x.3.clone())
            .collect();
        assert_eq!(p2p, vec![b"p2p before".to_vec(), b"p2p after".to_vec()]);
    }

    /// A member of a 7-member unicast group with a relay tree of fanout 2, optionally keyed.
    fn tree_node(i: u32, key: Option<[u8; 32]>) -> (Endpoint<Sink>, Log) {
        let log: Log = Rc::default();
        let l = log.clone();
        let sink: Sink = Box::new(move |d: &Delivery<'_>| {
            l.borrow_mut()
                .push((d.sender, d.kind, d.view, d.payload.to_vec()));
            true
        });
        let c = ProtocolConfig {
            relay_threshold: 2,
            relay_fanout: 2,
            ..cfg()
        };
        let mut e = Endpoint::new(c, m(i), 1, i as u64, sink);
        e.join(
            G,
            GroupSpec {
                view: ViewId(1),
                members: (1..=7).map(m).collect(),
                multicast: false,
                key,
            },
        );
        (e, log)
    }

    #[test]
    fn relay_tree_forwards_identical_sealed_bytes_once() {
        let key = Some([5u8; 32]);
        // Sender m3 has rank 2: relative ranks 1, 2 are m4, m5; m4's children (relative 3, 4)
        // are m6, m7; m5's (relative 5, 6) are m1, m2 (the rotation wraps).
        let (mut s, _) = tree_node(3, key);
        let (mut r4, l4) = tree_node(4, key);
        let (mut r6, l6) = tree_node(6, key);
        let now = Timestamp::ZERO;
        s.try_send(now, G, b"down the tree").unwrap();
        let out = drain(&mut s, now);
        let dests: Vec<Destination> = out.iter().map(|(d, _)| *d).collect();
        assert_eq!(
            dests,
            vec![Destination::Member(m(4)), Destination::Member(m(5))]
        );
        assert_eq!(out[0].1, out[1].1, "one sealed datagram, two copies");
        assert_eq!(crate::wire::header::peek_fanout(&out[0].1), 2);
        assert_eq!(s.stats().tree_datagrams_sent, 1);
        assert_eq!(s.stats().relayed_datagrams, 0);
        let original = out[0].1.clone();

        r4.handle_datagram(now, addr(), &mut original.clone());
        assert_eq!(l4.borrow().len(), 1);
        let fwd = drain(&mut r4, now);
        let dests: Vec<Destination> = fwd.iter().map(|(d, _)| *d).collect();
        assert_eq!(
            dests,
            vec![Destination::Member(m(6)), Destination::Member(m(7))]
        );
        assert!(
            fwd.iter().all(|(_, b)| *b == original),
            "forwarded unchanged, never re-sealed"
        );
        assert_eq!(r4.stats().relayed_datagrams, 2);
        // A duplicate carries nothing fresh: not forwarded again.
        r4.handle_datagram(now, addr(), &mut original.clone());
        assert!(drain(&mut r4, now).is_empty());
        assert_eq!(r4.stats().relayed_datagrams, 2);
        assert_eq!(l4.borrow().len(), 1);
        // A leaf delivers the relayed copy and forwards nothing.
        r6.handle_datagram(now, addr(), &mut fwd[0].1.clone());
        assert_eq!(l6.borrow()[0].3, b"down the tree");
        assert!(drain(&mut r6, now).is_empty());
        assert_eq!(r6.drops().nonzero().count(), 0);
    }

    #[test]
    fn relay_tree_marks_are_checked() {
        let (mut r, log) = tree_node(4, None);
        let mut buf = vec![0u8; 900];
        // A Direct packet claiming a fanout is malformed.
        let mut w = PacketWriter::new(&mut buf, 900, 8);
        assert!(w.push_msg(false, false, 1, b"x"));
        let len = w.finish(PacketKind::Direct, ViewId(1), G, m(3), 5, 0);
        crate::wire::header::set_fanout(&mut buf, 2);
        let len = Sealer::seal(&Keys::default(), SealMode::Checksum, &mut buf, len);
        r.handle_datagram(Timestamp::ZERO, addr(), &mut buf[..len]);
        assert_eq!(r.drops().get(DropReason::MalformedFrame), 1);
        assert!(log.borrow().is_empty());
        // An absurd fanout is harmless: delivered, and no children to forward to.
        let mut w = PacketWriter::new(&mut buf, 900, 8);
        assert!(w.push_msg(false, false, 1, b"y"));
        let len = w.finish(PacketKind::Group, ViewId(1), G, m(3), 6, 0);
        crate::wire::header::set_fanout(&mut buf, u16::MAX);
        let len = Sealer::seal(&Keys::default(), SealMode::Checksum, &mut buf, len);
        r.handle_datagram(Timestamp::ZERO, addr(), &mut buf[..len]);
        assert_eq!(log.borrow().len(), 1);
        assert!(drain(&mut r, Timestamp::ZERO).is_empty());
        // A relay-tree datagram longer than this member's MTU is delivered, never forwarded.
        let mut big = vec![0u8; 1400];
        let mut w = PacketWriter::new(&mut big, 1400, 8);
        assert!(w.push_msg(false, false, 2, &[7u8; 1200]));
        let len = w.finish(PacketKind::Group, ViewId(1), G, m(3), 8, 0);
        crate::wire::header::set_fanout(&mut big, 1);
        let len = Sealer::seal(&Keys::default(), SealMode::Checksum, &mut big, len);
        assert!(len > 900);
        r.handle_datagram(Timestamp::ZERO, addr(), &mut big[..len]);
        assert_eq!(log.borrow().len(), 2);
        assert!(drain(&mut r, Timestamp::ZERO).is_empty());
        assert_eq!(r.stats().relay_overflow, 1);
        // A fanout of 1 (a chain) from a sender of another view rank is followed: m4 is relative
        // rank 1 of m3's chain, so it forwards to relative rank 2 (m5).
        let mut w = PacketWriter::new(&mut buf, 900, 8);
        assert!(w.push_msg(false, false, 3, b"z"));
        let len = w.finish(PacketKind::Group, ViewId(1), G, m(3), 9, 0);
        crate::wire::header::set_fanout(&mut buf, 1);
        let len = Sealer::seal(&Keys::default(), SealMode::Checksum, &mut buf, len);
        let sent = buf[..len].to_vec();
        r.handle_datagram(Timestamp::ZERO, addr(), &mut buf[..len]);
        let fwd = drain(&mut r, Timestamp::ZERO);
        assert_eq!(fwd.len(), 1);
        assert_eq!(fwd[0], (Destination::Member(m(5)), sent));
    }
}
