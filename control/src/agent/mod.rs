//! [`MemberAgent`]: one member process's side of the control plane, sans-IO.
//!
//! It owns the process's data-plane [`Endpoint`] and, per group, the installed view, the
//! member's part in the view change, OrderedSend's total order and state transfer:
//!
//! * **Oracle link.** `Hello` until registered, then a heartbeat every
//!   [`AgentConfig::heartbeat`] listing each group's installed view and flush progress;
//!   requests, flush reports and completions are repeated until the oracle's state shows
//!   them. Silence from the leader for two heartbeats moves to the next replica; a
//!   `Redirect` names the leader.
//! * **Lease.** After [`AgentConfig::lease`] without hearing from the oracle the agent stops
//!   delivering (the endpoint holds messages): a member cut off from the oracle's majority is
//!   about to be excluded and must not deliver what the majority will not. If the oracle then
//!   says it was poisoned, it stops for good ([`AgentEvent::Poisoned`]).
//! * **View change.** On a `Wedge` status it wedges the endpoint and reports what it holds; on
//!   the cut it lets the endpoint fetch missing frames from their holders; once everything up
//!   to the cut is delivered it reports done; on the next installed view it delivers the
//!   OrderedSends the flush left unordered, installs the view in the endpoint, and emits
//!   [`AgentEvent::View`].
//! * **State transfer.** A joiner holds its events until the rank-0 member's checkpoint
//!   arrives (P2P inside the view change), then emits [`AgentEvent::LoadCheckpoint`] before
//!   its first view. Rank 0 is asked for it with [`AgentEvent::MakeCheckpoint`] right after
//!   the view event, so the checkpoint reflects exactly the old view's deliveries.
//!
//! Messages carry a one-byte class tag ahead of the application's bytes: Send, OrderedSend,
//! ORDER (rank 0's order announcements), checkpoint, P2P, RAW (RawSend and RawP2PSend; the
//! endpoint's delivery kind tells which).
//!
//! **Raw sends** ([`MemberAgent::raw_send`], [`MemberAgent::raw_p2p_send`]) are unreliable:
//! one datagram at most ([`MemberAgent::max_raw_payload`]), transmitted once, no
//! acknowledgement, no self-delivery. Raw datagrams from non-members or of another view are
//! dropped by the endpoint (its `UnknownSender` / `WrongView` drop counters); one delivered
//! while this member's view of the group is not the datagram's is counted in
//! [`AgentStats::stale_status`].

mod inbox;
mod ordered;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use vsync_dataplane::config::ProtocolConfig;
use vsync_dataplane::protocol::{
    CutEntry, DeliveryKind, Endpoint, GroupSpec, Protocol, SendError, Transmit,
};
use vsync_dataplane::{GroupId, MemberId, Timestamp, ViewId};

pub use inbox::Inbox;
use ordered::OrderedQueue;

use crate::oracle::{group_id, Command, FailureReason, Signature, View};
use crate::proto::{FlushPhase, FromOracle, GroupProgress, GroupStatus, ToOracle};

const TAG_SEND: u8 = 0;
const TAG_ORDERED: u8 = 1;
const TAG_ORDER: u8 = 2;
const TAG_CHECKPOINT: u8 = 3;
const TAG_P2P: u8 = 4;
const TAG_RAW: u8 = 5;

/// Largest number of entries in one ORDER message (keeps it within one datagram's worth).
const MAX_ORDER_ENTRIES: usize = 64;

/// Timing and bounds of a member agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// Heartbeat (and retry) interval towards the oracle.
    pub heartbeat: Duration,
    /// Silence from the oracle after which the agent stops delivering. Must be below the
    /// oracle's failure-detection timeout (half of it by default).
    pub lease: Duration,
    /// Most application events queued before deliveries push back.
    pub max_events: usize,
    /// Bound on OrderedSend bytes waiting for their order at any member: each member may
    /// have at most this divided by the group size of its own OrderedSends not yet ordered
    /// (further `ordered_send`s are `WouldBlock`), so every member's holdback stays below it.
    pub max_ordered_bytes: usize,
}

impl Default for AgentConfig {
    /// Heartbeats every 100 ms, lease 500 ms (the failure detector's timeout is 1 s).
    fn default() -> Self {
        AgentConfig {
            heartbeat: Duration::from_millis(100),
            lease: Duration::from_millis(500),
            max_events: 65536,
            max_ordered_bytes: 64 << 20,
        }
    }
}

/// Which primitive delivered a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MsgKind {
    /// FIFO multicast (Send).
    Send,
    /// Totally ordered multicast (OrderedSend).
    Ordered,
    /// Point-to-point (P2PSend).
    P2p,
    /// Unreliable multicast (RawSend): at most once, unordered, never self-delivered by the
    /// agent.
    Raw,
    /// Unreliable point-to-point message (RawP2PSend).
    RawP2p,
    /// Causal multicast (CausalSend). The agent never emits it: CausalSend travels as a Send
    /// and the `vsync` layer above orders it and reports this kind to handlers.
    Causal,
}

/// Something the application must see or do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentEvent {
    /// The answer to [`MemberAgent::lookup`]: a group's members in rank order and their
    /// client-request endpoints (empty: no such group).
    Members {
        /// The group.
        group: GroupId,
        /// Its installed view id.
        view: ViewId,
        /// Members and endpoints.
        members: Vec<(MemberId, SocketAddr)>,
    },
    /// A new view of a group is installed at this member.
    View(View),
    /// A message delivered in a group's current view.
    Deliver {
        /// The group.
        group: GroupId,
        /// The view it is delivered in.
        view: ViewId,
        /// Its sender.
        sender: MemberId,
        /// The primitive.
        kind: MsgKind,
        /// Its bytes.
        payload: Vec<u8>,
    },
    /// This member is rank 0 of a view with joiners: call
    /// [`MemberAgent::send_checkpoint`] with the group's state now (before handling more
    /// events).
    MakeCheckpoint {
        /// The group.
        group: GroupId,
        /// The view just installed.
        view: ViewId,
    },
    /// A joiner's state: load it; the group's first view follows.
    LoadCheckpoint {
        /// The group.
        group: GroupId,
        /// The view the checkpoint was made at.
        view: ViewId,
        /// The state bytes.
        state: Vec<u8>,
    },
    /// The result of a membership request.
    Reply {
        /// The request number [`MemberAgent::request`] returned.
        seq: u64,
        /// Accepted, or why not.
        result: Result<(), String>,
    },
    /// This member is no longer in the group (left, excluded, or the group ended).
    Gone {
        /// The group.
        group: GroupId,
    },
    /// This incarnation was excluded for good; restart under a new incarnation.
    Poisoned(FailureReason),
    /// This member joined, but every member holding the group's state failed before passing
    /// it on: the group's state starts afresh here (the Isis² initializer case). The view
    /// `view` follows.
    StateLost {
        /// The group.
        group: GroupId,
        /// The view from which the state starts afresh.
        view: ViewId,
    },
}

/// Why an agent call was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentError {
    /// The member has no installed view of the group.
    NoView(GroupId),
    /// The data plane refused (backpressure, wedged view, too large...).
    Send(SendError),
    /// This incarnation was poisoned.
    Poisoned,
}

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentError::NoView(g) => write!(f, "no installed view of group {g}"),
            AgentError::Send(e) => write!(f, "{e}"),
            AgentError::Poisoned => write!(f, "this process was poisoned: restart it"),
        }
    }
}

impl std::error::Error for AgentError {}

/// Counters of an agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentStats {
    /// Views installed.
    pub views: u64,
    /// Flush rounds taken part in.
    pub flushes: u64,
    /// Messages with an unknown class tag or a malformed ORDER / checkpoint.
    pub malformed: u64,
    /// Statuses ignored as stale or unusable.
    pub stale_status: u64,
    /// Times deliveries were paused for lack of oracle contact.
    pub pauses: u64,
}

#[derive(Debug)]
struct Slot {
    view: View,
    mcast: Option<std::net::Ipv4Addr>,
    round: u32,
    phase: FlushPhase,
    report: Vec<(MemberId, u64)>,
    ordered: OrderedQueue,
    /// Joiner: waiting for a checkpoint covering views from this id.
    awaiting: Option<ViewId>,
    held: Vec<AgentEvent>,
    /// Rank 0: per view installed, the members its checkpoint goes to (until the
    /// application answers that view's [`AgentEvent::MakeCheckpoint`]).
    checkpoint_to: BTreeMap<ViewId, Vec<MemberId>>,
    /// Multicasts sent in the group (reported for Dr. Multicast's traffic estimate).
    sent: u64,
    /// Bytes of this member's OrderedSends not yet delivered in the total order here.
    ordered_unordered: usize,
}

/// One member process's control-plane agent. See the module docs.
pub struct MemberAgent {
    me: MemberId,
    addr: Option<SocketAddr>,
    cfg: AgentConfig,
    endpoint: Endpoint<Inbox>,
    groups: BTreeMap<GroupId, Slot>,
    replicas: Vec<u64>,
    leader: usize,
    registered: bool,
    poisoned: Option<FailureReason>,
    paused: bool,
    last_heard: Timestamp,
    last_switch: Timestamp,
    next_heartbeat: Timestamp,
    to_oracle: VecDeque<(u64, ToOracle)>,
    events: VecDeque<AgentEvent>,
    next_seq: u64,
    requests: BTreeMap<u64, Command>,
    /// P2P messages waiting for room: (group, to, framed bytes).
    p2p_out: VecDeque<(GroupId, MemberId, Vec<u8>)>,
    scratch: Vec<u8>,
    stats: AgentStats,
    /// The latest time the driver passed in.
    now: Timestamp,
    /// Data-plane addresses of peers, as the oracle reported them.
    addrs: BTreeMap<MemberId, SocketAddr>,
    /// Bumped whenever views, multicast addresses or peer addresses change.
    generation: u64,
    /// Groups this member left (or was removed from): the last view it held. A late or
    /// duplicated status naming that view or an older one must not re-install it.
    departed: BTreeMap<GroupId, ViewId>,
    /// Secure groups' AES-256-GCM keys (see [`MemberAgent::set_group_key`]).
    group_keys: BTreeMap<GroupId, [u8; 32]>,
}

impl std::fmt::Debug for MemberAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberAgent")
            .field("me", &self.me)
            .field("groups", &self.groups.keys().collect::<Vec<_>>())
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl MemberAgent {
    /// An agent for incarnation `me` talking to the oracle replicas `replicas` (ids), with a
    /// fresh endpoint (`protocol`, `seed`). `addr` is its data-plane address, if any.
    pub fn new(
        me: MemberId,
        addr: Option<SocketAddr>,
        cfg: AgentConfig,
        protocol: ProtocolConfig,
        seed: u64,
        replicas: Vec<u64>,
        now: Timestamp,
    ) -> Self {
        let inbox = Inbox {
            open: true,
            room: cfg.max_events,
            ..Inbox::default()
        };
        MemberAgent {
            me,
            addr,
            cfg,
            endpoint: Endpoint::new(protocol, me, now.0.max(1), seed, inbox),
            now,
            addrs: BTreeMap::new(),
            generation: 0,
            departed: BTreeMap::new(),
            group_keys: BTreeMap::new(),
            groups: BTreeMap::new(),
            leader: 0,
            replicas,
            registered: false,
            poisoned: None,
            paused: false,
            last_heard: now,
            last_switch: now,
            next_heartbeat: now,
            to_oracle: VecDeque::new(),
            events: VecDeque::new(),
            next_seq: 0,
            requests: BTreeMap::new(),
            p2p_out: VecDeque::new(),
            scratch: Vec::new(),
            stats: AgentStats::default(),
        }
    }

    /// This incarnation.
    pub fn me(&self) -> MemberId {
        self.me
    }

    /// The data-plane endpoint (stats, drops).
    pub fn endpoint(&self) -> &Endpoint<Inbox> {
        &self.endpoint
    }

    /// Counters.
    pub fn stats(&self) -> &AgentStats {
        &self.stats
    }

    /// The installed view of `group` at this member.
    pub fn view(&self, group: GroupId) -> Option<&View> {
        self.groups.get(&group).map(|s| &s.view)
    }

    /// Bytes of OrderedSends held here waiting for their order (bounded by
    /// [`AgentConfig::max_ordered_bytes`] through the senders' credit).
    pub fn ordered_held_bytes(&self, group: GroupId) -> usize {
        self.groups
            .get(&group)
            .map_or(0, |s| s.ordered.held_bytes())
    }

    /// True while this member joined `group` and still waits for its state.
    pub fn is_awaiting_state(&self, group: GroupId) -> bool {
        self.groups
            .get(&group)
            .is_some_and(|s| s.awaiting.is_some())
    }

    /// Every group with an installed view here, and that view.
    pub fn views(&self) -> impl Iterator<Item = (GroupId, &View)> {
        self.groups.iter().map(|(g, s)| (*g, &s.view))
    }

    /// The physical IP-multicast address of `group` (`None`: unicast fan-out).
    pub fn multicast_addr(&self, group: GroupId) -> Option<std::net::Ipv4Addr> {
        self.groups.get(&group).and_then(|s| s.mcast)
    }

    /// Data-plane addresses of peers, as the oracle reported them.
    pub fn addresses(&self) -> &BTreeMap<MemberId, SocketAddr> {
        &self.addrs
    }

    /// A counter bumped whenever views, multicast addresses or peer addresses change: a
    /// driver refreshes its address book when it moves.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Why this incarnation was poisoned, if it was.
    pub fn poisoned(&self) -> Option<FailureReason> {
        self.poisoned
    }

    /// True while deliveries are paused for lack of oracle contact.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// True once the oracle knows this incarnation.
    pub fn is_registered(&self) -> bool {
        self.registered
    }

    // ----- application side -----

    /// Sends a membership command to the oracle; the answer comes as [`AgentEvent::Reply`]
    /// with the returned number.
    pub fn request(&mut self, command: Command) -> u64 {
        self.next_seq += 1;
        let seq = self.next_seq;
        self.requests.insert(seq, command.clone());
        self.oracle_send(ToOracle::Request {
            member: self.me,
            seq,
            command,
        });
        seq
    }

    /// Creates group `name` with this member as its first member.
    pub fn create(&mut self, name: &str, signature: Signature) -> u64 {
        self.request(Command::CreateGroup {
            name: name.to_string(),
            signature,
            policy: crate::drmc::McPolicy::Auto,
            creator: self.me,
        })
    }

    /// Joins group `name`.
    pub fn join(&mut self, name: &str, signature: Signature) -> u64 {
        self.request(Command::Join {
            group: group_id(name),
            member: self.me,
            signature,
        })
    }

    /// Leaves `group` (the member takes part in the flush, then sees [`AgentEvent::Gone`]).
    pub fn leave(&mut self, group: GroupId) -> u64 {
        self.request(Command::Leave {
            group,
            member: self.me,
        })
    }

    /// Sets (or with `None` clears) the system key (`VSYNC_AESKEY`): every datagram of this
    /// member is then authenticated (AES-256-GCM GMAC) and unauthenticated ones are dropped.
    /// Every process of the system must hold the same key.
    pub fn set_system_key(&mut self, key: Option<&[u8; 32]>) {
        self.endpoint.set_system_key(key);
    }

    /// Sets (or with `None` clears) a secure group's AES-256-GCM key: the data plane seals
    /// and opens every datagram of `group` with it from the next view installed here (set
    /// it before joining). Every member must hold the same key.
    pub fn set_group_key(&mut self, group: GroupId, key: Option<[u8; 32]>) {
        match key {
            Some(k) => {
                self.group_keys.insert(group, k);
            }
            None => {
                self.group_keys.remove(&group);
            }
        }
    }

    /// Asks the oracle who is in `group` and at which client-request endpoints (for a
    /// non-member `Client`); the answer comes as [`AgentEvent::Members`].
    pub fn lookup(&mut self, group: GroupId) {
        self.oracle_send(ToOracle::Lookup {
            member: self.me,
            group,
        });
    }

    /// Reports `who` as failed (Isis² `HasFailed`).
    pub fn has_failed(&mut self, who: MemberId) {
        self.oracle_send(ToOracle::Suspect {
            member: self.me,
            suspect: who,
        });
    }

    /// Send: FIFO multicast to the group's current view.
    pub fn send(&mut self, group: GroupId, payload: &[u8]) -> Result<(), AgentError> {
        self.multicast(group, TAG_SEND, payload)
    }

    /// OrderedSend: totally ordered multicast.
    ///
    /// Flow control: a member's OrderedSends not yet delivered in the total order at itself
    /// may hold at most `max_ordered_bytes / members` bytes (one message always fits); beyond
    /// that the call is `WouldBlock` until the sequencer's order catches up. This bounds the
    /// holdback at every member without ever refusing deliveries (which could block the
    /// sequencer's own order announcements).
    pub fn ordered_send(&mut self, group: GroupId, payload: &[u8]) -> Result<(), AgentError> {
        if let Some(slot) = self.groups.get(&group) {
            let credit = self.cfg.max_ordered_bytes / slot.view.members.len().max(1);
            if slot.ordered_unordered > 0 && slot.ordered_unordered + payload.len() > credit {
                return Err(AgentError::Send(SendError::WouldBlock));
            }
        }
        // Counted before sending: the sender's own copy may be delivered (and so uncounted)
        // during the call.
        if let Some(slot) = self.groups.get_mut(&group) {
            slot.ordered_unordered += payload.len();
        }
        let r = self.multicast(group, TAG_ORDERED, payload);
        if r.is_err() {
            if let Some(slot) = self.groups.get_mut(&group) {
                slot.ordered_unordered = slot.ordered_unordered.saturating_sub(payload.len());
            }
        }
        r
    }

    /// P2PSend: reliable FIFO message to one member of the group.
    pub fn p2p_send(
        &mut self,
        group: GroupId,
        to: MemberId,
        payload: &[u8],
    ) -> Result<(), AgentError> {
        self.check_sendable(group)?;
        self.scratch.clear();
        self.scratch.push(TAG_P2P);
        self.scratch.extend_from_slice(payload);
        self.endpoint
            .try_send_p2p(self.now, group, to, &self.scratch)
            .map(|_| ())
            .map_err(AgentError::Send)
    }

    /// RawSend: an unreliable multicast to the group's current view — one datagram, sent
    /// once, no acknowledgement, no retransmission and no self-delivery. Errors:
    /// [`SendError::TooLarge`] above [`MemberAgent::max_raw_payload`], [`SendError::Wedged`]
    /// during a view change, [`SendError::WouldBlock`] when the raw queue is full.
    pub fn raw_send(&mut self, group: GroupId, payload: &[u8]) -> Result<(), AgentError> {
        self.raw(group, None, payload)
    }

    /// RawP2PSend: an unreliable message to one member of the group (see
    /// [`MemberAgent::raw_send`]); [`SendError::UnknownMember`] if `to` is not in the view.
    pub fn raw_p2p_send(
        &mut self,
        group: GroupId,
        to: MemberId,
        payload: &[u8],
    ) -> Result<(), AgentError> {
        self.raw(group, Some(to), payload)
    }

    /// The largest payload [`MemberAgent::raw_send`] and [`MemberAgent::raw_p2p_send`] take
    /// (one datagram's frame, less the agent's tag byte).
    pub fn max_raw_payload(&self) -> usize {
        Self::max_raw_payload_for(self.endpoint.config())
    }

    /// [`MemberAgent::max_raw_payload`] for an endpoint configured with `protocol`.
    pub fn max_raw_payload_for(protocol: &ProtocolConfig) -> usize {
        protocol.max_frame_payload().saturating_sub(1)
    }

    fn raw(
        &mut self,
        group: GroupId,
        to: Option<MemberId>,
        payload: &[u8],
    ) -> Result<(), AgentError> {
        self.check_sendable(group)?;
        self.scratch.clear();
        self.scratch.push(TAG_RAW);
        self.scratch.extend_from_slice(payload);
        self.endpoint
            .try_send_raw(self.now, group, to, &self.scratch)
            .map(|_| ())
            .map_err(AgentError::Send)
    }

    /// Rank 0's answer to [`AgentEvent::MakeCheckpoint`] for `view`: the group's state as of
    /// that event, sent to every member that awaited it at that view (and is still a member).
    pub fn send_checkpoint(&mut self, group: GroupId, view: ViewId, state: &[u8]) {
        let Some(slot) = self.groups.get_mut(&group) else {
            return;
        };
        let mut targets = slot.checkpoint_to.remove(&view).unwrap_or_default();
        targets.retain(|m| slot.view.members.contains(m));
        let mut framed = Vec::with_capacity(state.len() + 5);
        framed.push(TAG_CHECKPOINT);
        framed.extend_from_slice(&view.0.to_le_bytes());
        framed.extend_from_slice(state);
        for to in targets {
            self.p2p_out.push_back((group, to, framed.clone()));
        }
        self.flush_p2p();
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<AgentEvent> {
        let e = self.events.pop_front();
        if e.is_some() {
            self.endpoint.sink_mut().room = self.room();
        }
        e
    }

    fn room(&self) -> usize {
        self.cfg.max_events.saturating_sub(self.events.len())
    }

    fn check_sendable(&self, group: GroupId) -> Result<(), AgentError> {
        if self.poisoned.is_some() {
            return Err(AgentError::Poisoned);
        }
        if !self.groups.contains_key(&group) {
            return Err(AgentError::NoView(group));
        }
        Ok(())
    }

    fn multicast(&mut self, group: GroupId, tag: u8, payload: &[u8]) -> Result<(), AgentError> {
        self.check_sendable(group)?;
        self.scratch.clear();
        self.scratch.push(tag);
        self.scratch.extend_from_slice(payload);
        let r = self.endpoint.try_send(self.now, group, &self.scratch);
        if r.is_ok() {
            if let Some(slot) = self.groups.get_mut(&group) {
                slot.sent += 1;
            }
        }
        self.process_inbox();
        r.map(|_| ()).map_err(AgentError::Send)
    }

    // ----- network side -----

    /// A data-plane datagram.
    pub fn handle_datagram(&mut self, now: Timestamp, from: SocketAddr, datagram: &mut [u8]) {
        self.now = self.now.max(now);
        self.endpoint.handle_datagram(now, from, datagram);
        self.after_io();
    }

    /// The next data-plane datagram to send.
    pub fn poll_transmit(&mut self, now: Timestamp, buf: &mut [u8]) -> Option<Transmit> {
        self.endpoint.poll_transmit(now, buf)
    }

    /// The next message for the oracle: `(replica id, message)`.
    pub fn poll_oracle(&mut self) -> Option<(u64, ToOracle)> {
        self.to_oracle.pop_front()
    }

    /// The next time [`MemberAgent::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Timestamp {
        if self.poisoned.is_some() {
            return Timestamp::NEVER;
        }
        let mut t = self.next_heartbeat;
        if let Some(e) = self.endpoint.poll_timeout() {
            t = t.min(e);
        }
        if !self.paused && self.registered {
            t = t.min(self.last_heard + self.cfg.lease);
        }
        t
    }

    /// Runs timers: the data plane's, heartbeats and retries to the oracle, the lease.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
        if self.poisoned.is_some() {
            return;
        }
        self.endpoint.handle_timeout(now);
        if self.registered
            && !self.paused
            && now.saturating_since(self.last_heard) >= self.cfg.lease
        {
            self.paused = true;
            self.stats.pauses += 1;
            self.endpoint.sink_mut().open = false;
        }
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.cfg.heartbeat;
            let silent = now.saturating_since(self.last_heard.max(self.last_switch));
            if silent >= self.cfg.heartbeat * 2 && self.replicas.len() > 1 {
                self.leader = (self.leader + 1) % self.replicas.len();
                self.last_switch = now;
            }
            self.heartbeat();
        }
        self.after_io();
    }

    /// A message from the oracle.
    pub fn handle_oracle(&mut self, now: Timestamp, msg: FromOracle) {
        self.now = self.now.max(now);
        if self.poisoned.is_some() {
            return;
        }
        match msg {
            FromOracle::Redirect { leader } => {
                if let Some(i) = leader.and_then(|l| self.replicas.iter().position(|r| *r == l)) {
                    if i != self.leader {
                        self.leader = i;
                        self.last_switch = now;
                        self.heartbeat();
                    }
                }
                return;
            }
            FromOracle::Poisoned { member, reason } if member == self.me => {
                self.poison(reason);
                return;
            }
            FromOracle::Poisoned { .. } => return,
            _ => {}
        }
        self.last_heard = now;
        if self.paused {
            self.paused = false;
            self.endpoint.sink_mut().open = true;
        }
        match msg {
            FromOracle::Welcome { member } if member == self.me => self.registered = true,
            FromOracle::Welcome { .. } => {}
            FromOracle::Reply { seq, result } => {
                if self.requests.remove(&seq).is_some() {
                    self.events.push_back(AgentEvent::Reply { seq, result });
                }
            }
            FromOracle::Gone { group, view } => {
                // A notice stamped with a view this member already holds (or an older one) is
                // a late duplicate from before it joined again: ignore it.
                let current = self.groups.get(&group).map(|s| s.view.id);
                if let Some(slot) = current
                    .filter(|c| c.0 < view.0)
                    .and_then(|_| self.groups.remove(&group))
                {
                    self.departed.insert(group, slot.view.id);
                    self.endpoint.leave(group);
                    self.generation += 1;
                    self.events.push_back(AgentEvent::Gone { group });
                }
            }
            FromOracle::Status(st) => self.on_status(st),
            FromOracle::Members {
                group,
                view,
                members,
            } => self.events.push_back(AgentEvent::Members {
                group,
                view,
                members,
            }),
            FromOracle::Redirect { .. } | FromOracle::Poisoned { .. } => {}
        }
        self.after_io();
    }

    fn poison(&mut self, reason: FailureReason) {
        if self.poisoned.is_none() {
            self.poisoned = Some(reason);
            self.endpoint.sink_mut().open = false;
            for g in std::mem::take(&mut self.groups).into_keys() {
                self.endpoint.leave(g);
            }
            self.events.push_back(AgentEvent::Poisoned(reason));
        }
    }

    fn oracle_send(&mut self, msg: ToOracle) {
        if let Some(r) = self.replicas.get(self.leader) {
            self.to_oracle.push_back((*r, msg));
        }
    }

    fn heartbeat(&mut self) {
        if !self.registered {
            self.oracle_send(ToOracle::Hello {
                member: self.me,
                addr: self.addr,
            });
        } else {
            let groups = self
                .groups
                .iter()
                .map(|(g, s)| GroupProgress {
                    group: *g,
                    view: s.view.id,
                    round: s.round,
                    phase: s.phase,
                    sent: s.sent,
                    awaiting_state: s.awaiting.is_some(),
                    mcast: s.mcast,
                })
                .collect();
            self.oracle_send(ToOracle::Heartbeat {
                member: self.me,
                groups,
            });
        }
        // Repeat what the oracle may have lost.
        let requests: Vec<(u64, Command)> =
            self.requests.iter().map(|(s, c)| (*s, c.clone())).collect();
        for (seq, command) in requests {
            self.oracle_send(ToOracle::Request {
                member: self.me,
                seq,
                command,
            });
        }
        let flush: Vec<ToOracle> = self
            .groups
            .iter()
            .filter_map(|(g, s)| match s.phase {
                FlushPhase::Reported => Some(ToOracle::FlushReport {
                    member: self.me,
                    group: *g,
                    view: s.view.id,
                    round: s.round,
                    positions: s.report.clone(),
                }),
                FlushPhase::Done => Some(ToOracle::FlushDone {
                    member: self.me,
                    group: *g,
                    view: s.view.id,
                    round: s.round,
                }),
                _ => None,
            })
            .collect();
        for m in flush {
            self.oracle_send(m);
        }
    }

    fn spec(&self, st: &GroupStatus) -> GroupSpec {
        // Note: a multicast remap within a view keeps the endpoint's repair mode until the
        // next view (repairs to the requester are correct either way).
        GroupSpec {
            view: st.installed.id,
            members: st.installed.members.clone(),
            multicast: st.mcast.is_some(),
            key: self.group_keys.get(&st.installed.group).copied(),
        }
    }

    fn on_status(&mut self, st: GroupStatus) {
        let group = st.installed.group;
        for (m, a) in &st.addrs {
            if self.addrs.insert(*m, *a) != Some(*a) {
                self.generation += 1;
            }
        }
        if let Some(slot) = self.groups.get_mut(&group) {
            if st.installed.id == slot.view.id && slot.mcast != st.mcast {
                // A Dr. Multicast remap within the view: the driver moves the address.
                slot.mcast = st.mcast;
                self.generation += 1;
            }
        }
        let me = self.me;
        let Some(slot) = self.groups.get_mut(&group) else {
            // No view yet: install the first one if it names us (and is newer than any view of
            // this group we held before leaving it).
            let stale = self
                .departed
                .get(&group)
                .is_some_and(|v| st.installed.id.0 <= v.0);
            if stale || !st.installed.members.contains(&me) {
                self.stats.stale_status += 1;
                return;
            }
            let spec = self.spec(&st);
            self.endpoint.join(group, spec);
            let v = st.installed.clone();
            let awaiting =
                (v.joined.contains(&me) && v.members.len() > v.joined.len()).then_some(v.id);
            self.groups.insert(
                group,
                Slot {
                    view: v.clone(),
                    mcast: st.mcast,
                    round: st.flush.as_ref().map_or(0, |f| f.round.saturating_sub(1)),
                    phase: FlushPhase::Idle,
                    report: Vec::new(),
                    ordered: OrderedQueue::default(),
                    awaiting,
                    held: Vec::new(),
                    checkpoint_to: BTreeMap::new(),
                    sent: 0,
                    ordered_unordered: 0,
                },
            );
            self.stats.views += 1;
            self.generation += 1;
            self.emit(group, AgentEvent::View(v));
            // A flush may already be running on this view.
            if st.flush.is_some() {
                self.on_status(st);
            }
            return;
        };
        let current = slot.view.id;
        if st.installed.id.0 == current.0.wrapping_add(1) {
            if slot.phase != FlushPhase::Done && !self.endpoint.flushed(group) {
                self.stats.stale_status += 1;
                return;
            }
            self.install_next(group, &st);
            // The status may already carry the next flush.
            if st.flush.is_some() {
                self.on_status(st);
            }
            return;
        }
        if st.installed.id != current {
            self.stats.stale_status += 1;
            return;
        }
        let Some(flush) = st.flush else {
            return;
        };
        if flush.round > slot.round {
            match self.endpoint.wedge(group, current) {
                Ok(report) => {
                    let slot = self.groups.get_mut(&group).expect("present");
                    slot.round = flush.round;
                    slot.phase = FlushPhase::Reported;
                    slot.report = report.positions;
                    self.stats.flushes += 1;
                    let msg = ToOracle::FlushReport {
                        member: me,
                        group,
                        view: current,
                        round: flush.round,
                        positions: slot.report.clone(),
                    };
                    self.oracle_send(msg);
                }
                Err(_) => {
                    self.stats.stale_status += 1;
                    return;
                }
            }
        }
        let slot = self.groups.get_mut(&group).expect("present");
        if flush.round == slot.round && slot.phase == FlushPhase::Reported {
            if let Some(cut) = flush.cut {
                let entries: Vec<CutEntry> = cut
                    .iter()
                    .map(|c| CutEntry {
                        sender: c.sender,
                        through: c.through,
                        holder: c.holder,
                    })
                    .collect();
                if self.endpoint.flush(group, current, &entries).is_ok() {
                    self.groups.get_mut(&group).expect("present").phase = FlushPhase::Flushing;
                } else {
                    self.stats.stale_status += 1;
                }
            }
        }
    }

    /// Delivers what the flush left of the old view, installs `st.installed`.
    fn install_next(&mut self, group: GroupId, st: &GroupStatus) {
        let me = self.me;
        let v = st.installed.clone();
        let leaving = !v.members.contains(&me);
        if !leaving {
            let spec = self.spec(st);
            if self.endpoint.install(group, spec).is_err() {
                // Not flushed after all: wait for the next status.
                self.stats.stale_status += 1;
                return;
            }
        }
        let slot = self.groups.get_mut(&group).expect("present");
        let old = slot.view.clone();
        let leftovers = slot.ordered.finish_view(&old.members);
        slot.ordered_unordered = 0;
        for (sender, _, payload) in leftovers {
            self.emit(
                group,
                AgentEvent::Deliver {
                    group,
                    view: old.id,
                    sender,
                    kind: MsgKind::Ordered,
                    payload,
                },
            );
        }
        if leaving {
            self.departed.insert(group, v.id);
            if let Some(slot) = self.groups.remove(&group) {
                // A member leaving while still awaiting its state never saw the group.
                if slot.awaiting.is_none() {
                    self.events.extend(slot.held);
                }
            }
            self.endpoint.leave(group);
            self.generation += 1;
            self.events.push_back(AgentEvent::Gone { group });
            return;
        }
        let slot = self.groups.get_mut(&group).expect("present");
        slot.view = v.clone();
        slot.mcast = st.mcast;
        slot.phase = FlushPhase::Idle;
        slot.report.clear();
        self.stats.views += 1;
        self.generation += 1;
        // State transfer. Members awaiting their state: this view's joiners (when the view has
        // older members), the previous view's joiners if its rank 0 is gone (it may have died
        // before serving them), and whoever told the oracle it still waits (e.g. two rank 0s
        // in a row died). The server is the lowest-ranked member not awaiting; with none, all
        // holders of the group's state failed before passing it on and the lowest-ranked
        // member restarts the group's state from scratch.
        let mut awaiting: Vec<MemberId> = if v.members.len() > v.joined.len() {
            v.joined.clone()
        } else {
            Vec::new()
        };
        if old.members.first() != v.members.first() {
            awaiting.extend(old.joined.iter().copied());
        }
        awaiting.extend(st.awaiting.iter().copied());
        // This member knows its own case exactly.
        if slot.awaiting.is_some() {
            awaiting.push(me);
        } else {
            awaiting.retain(|m| *m != me);
        }
        awaiting.retain(|m| v.members.contains(m));
        awaiting.sort_unstable();
        awaiting.dedup();
        let mut server = v
            .members
            .iter()
            .copied()
            .find(|m| awaiting.binary_search(m).is_err());
        if server.is_none() && v.members[0] == me && slot.awaiting.is_some() {
            // The restarted state is then served to the other members awaiting it.
            server = Some(me);
            slot.awaiting = None;
            let held = std::mem::take(&mut slot.held);
            self.events
                .push_back(AgentEvent::StateLost { group, view: v.id });
            // Events of earlier views are dropped with the state they would have built on.
            self.events.extend(held.into_iter().filter(|e| match e {
                AgentEvent::View(x) => x.id.0 >= v.id.0,
                AgentEvent::Deliver { view, .. } => view.0 >= v.id.0,
                _ => true,
            }));
        }
        self.emit(group, AgentEvent::View(v.clone()));
        if server == Some(me) {
            let targets: Vec<MemberId> = awaiting.into_iter().filter(|m| *m != me).collect();
            if !targets.is_empty() {
                self.groups
                    .get_mut(&group)
                    .expect("present")
                    .checkpoint_to
                    .insert(v.id, targets);
                self.emit(group, AgentEvent::MakeCheckpoint { group, view: v.id });
            }
        }
    }

    /// Queues an event, or holds it while the member awaits its checkpoint.
    fn emit(&mut self, group: GroupId, e: AgentEvent) {
        match self.groups.get_mut(&group) {
            Some(slot) if slot.awaiting.is_some() => slot.held.push(e),
            _ => self.events.push_back(e),
        }
    }

    /// After any input: drain deliveries, progress flushes, send announcements and P2P.
    fn after_io(&mut self) {
        if self.poisoned.is_some() {
            return;
        }
        self.process_inbox();
        let sink = self.endpoint.sink();
        if sink.refused && sink.open && sink.room > 0 {
            // Deliveries refused earlier (full or paused) go now; the retry scans every
            // stream, so it runs only after a refusal, not on every datagram.
            self.endpoint.sink_mut().refused = false;
            self.endpoint.poll_delivery();
            self.process_inbox();
        }
        // Flush completion.
        let done: Vec<(GroupId, ViewId, u32)> = self
            .groups
            .iter()
            .filter(|(g, s)| s.phase == FlushPhase::Flushing && self.endpoint.flushed(**g))
            .map(|(g, s)| (*g, s.view.id, s.round))
            .collect();
        for (group, view, round) in done {
            self.groups.get_mut(&group).expect("present").phase = FlushPhase::Done;
            self.oracle_send(ToOracle::FlushDone {
                member: self.me,
                group,
                view,
                round,
            });
        }
        self.announce_order();
        self.flush_p2p();
    }

    /// At rank 0: multicasts the order of OrderedSends received since the last ORDER.
    fn announce_order(&mut self) {
        let me = self.me;
        let groups: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, s)| s.view.members.first() == Some(&me) && s.phase == FlushPhase::Idle)
            .map(|(g, _)| *g)
            .collect();
        for group in groups {
            loop {
                let slot = self.groups.get_mut(&group).expect("present");
                let mut entries = slot.ordered.take_announcements();
                if entries.is_empty() {
                    break;
                }
                let rest = if entries.len() > MAX_ORDER_ENTRIES {
                    entries.split_off(MAX_ORDER_ENTRIES)
                } else {
                    Vec::new()
                };
                self.scratch.clear();
                self.scratch.push(TAG_ORDER);
                for (s, q) in &entries {
                    self.scratch.extend_from_slice(&s.0.to_le_bytes());
                    self.scratch.extend_from_slice(&q.to_le_bytes());
                }
                let ok = self
                    .endpoint
                    .try_send(self.now, group, &self.scratch)
                    .is_ok();
                let slot = self.groups.get_mut(&group).expect("present");
                if !ok {
                    entries.extend(rest);
                    slot.ordered.restore_announcements(entries);
                    break;
                }
                slot.ordered.restore_announcements(rest);
                self.process_inbox();
            }
        }
    }

    fn flush_p2p(&mut self) {
        while let Some((group, to, bytes)) = self.p2p_out.pop_front() {
            if !self.groups.contains_key(&group) {
                continue;
            }
            match self.endpoint.try_send_p2p(self.now, group, to, &bytes) {
                Ok(_) => {}
                Err(SendError::WouldBlock) => {
                    self.p2p_out.push_front((group, to, bytes));
                    break;
                }
                Err(_) => {} // the joiner left or failed
            }
        }
    }

    /// Turns the endpoint's deliveries into events.
    fn process_inbox(&mut self) {
        let mut inbox = std::mem::take(self.endpoint.sink_mut());
        for rec in &inbox.recs {
            let payload = inbox.payload(rec);
            let Some((&tag, body)) = payload.split_first() else {
                self.stats.malformed += 1;
                continue;
            };
            let Some(slot) = self.groups.get_mut(&rec.group) else {
                continue;
            };
            if slot.view.id != rec.view {
                self.stats.stale_status += 1;
                continue;
            }
            let rank0 = slot.view.members[0];
            let view = rec.view;
            let group = rec.group;
            match (rec.kind, tag) {
                (DeliveryKind::Send, TAG_SEND) => self.emit(
                    group,
                    AgentEvent::Deliver {
                        group,
                        view,
                        sender: rec.sender,
                        kind: MsgKind::Send,
                        payload: body.to_vec(),
                    },
                ),
                (DeliveryKind::Send, TAG_ORDERED) => {
                    slot.ordered
                        .on_message(self.me, rank0, rec.sender, rec.seq, body.to_vec());
                    self.deliver_ordered(group);
                }
                (DeliveryKind::Send, TAG_ORDER) if rec.sender == rank0 && body.len() % 16 == 0 => {
                    let entries = body.chunks_exact(16).map(|c| {
                        let s = u64::from_le_bytes(c[..8].try_into().expect("8 bytes"));
                        let q = u64::from_le_bytes(c[8..].try_into().expect("8 bytes"));
                        (MemberId(s), q)
                    });
                    slot.ordered.on_order(entries);
                    self.deliver_ordered(group);
                }
                (DeliveryKind::P2p, TAG_P2P) => self.emit(
                    group,
                    AgentEvent::Deliver {
                        group,
                        view,
                        sender: rec.sender,
                        kind: MsgKind::P2p,
                        payload: body.to_vec(),
                    },
                ),
                (DeliveryKind::Raw, TAG_RAW) | (DeliveryKind::RawP2p, TAG_RAW) => {
                    let kind = if rec.kind == DeliveryKind::Raw {
                        MsgKind::Raw
                    } else {
                        MsgKind::RawP2p
                    };
                    self.emit(
                        group,
                        AgentEvent::Deliver {
                            group,
                            view,
                            sender: rec.sender,
                            kind,
                            payload: body.to_vec(),
                        },
                    )
                }
                (DeliveryKind::P2p, TAG_CHECKPOINT) if body.len() >= 4 => {
                    let at = ViewId(u32::from_le_bytes(body[..4].try_into().expect("4 bytes")));
                    self.on_checkpoint(group, at, body[4..].to_vec());
                }
                _ => self.stats.malformed += 1,
            }
        }
        inbox.clear();
        inbox.room = self.room();
        let open = inbox.open;
        *self.endpoint.sink_mut() = inbox;
        self.endpoint.sink_mut().open = open;
    }

    fn deliver_ordered(&mut self, group: GroupId) {
        loop {
            let slot = self.groups.get_mut(&group).expect("present");
            let rank0 = slot.view.members[0];
            let view = slot.view.id;
            let Some((sender, _, payload)) = slot.ordered.poll(rank0) else {
                break;
            };
            if sender == self.me {
                slot.ordered_unordered = slot.ordered_unordered.saturating_sub(payload.len());
            }
            self.emit(
                group,
                AgentEvent::Deliver {
                    group,
                    view,
                    sender,
                    kind: MsgKind::Ordered,
                    payload,
                },
            );
        }
    }

    fn on_checkpoint(&mut self, group: GroupId, at: ViewId, state: Vec<u8>) {
        let Some(slot) = self.groups.get_mut(&group) else {
            return;
        };
        let Some(first) = slot.awaiting else {
            return; // a duplicate or late checkpoint
        };
        if at.0 < first.0 {
            self.stats.malformed += 1;
            return;
        }
        slot.awaiting = None;
        let held = std::mem::take(&mut slot.held);
        self.events.push_back(AgentEvent::LoadCheckpoint {
            group,
            view: at,
            state,
        });
        // Events of views the checkpoint already covers are dropped.
        let covered = |e: &AgentEvent| match e {
            AgentEvent::View(v) => v.id.0 < at.0,
            AgentEvent::Deliver { view, .. } => view.0 < at.0,
            _ => false,
        };
        self.events.extend(held.into_iter().filter(|e| !covered(e)));
    }
}

/// Lets any data-plane driver ([`vsync_dataplane::engine::Engine`], the simulator) run the
/// agent like a bare endpoint; oracle messages travel separately
/// ([`MemberAgent::poll_oracle`], [`MemberAgent::handle_oracle`]).
impl Protocol for MemberAgent {
    fn handle_datagram(&mut self, now: Timestamp, from: SocketAddr, datagram: &mut [u8]) {
        MemberAgent::handle_datagram(self, now, from, datagram);
    }

    fn poll_transmit(&mut self, now: Timestamp, buf: &mut [u8]) -> Option<Transmit> {
        MemberAgent::poll_transmit(self, now, buf)
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        Some(MemberAgent::poll_timeout(self))
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        MemberAgent::handle_timeout(self, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_sends_need_a_view_and_fit_one_datagram() {
        let protocol = ProtocolConfig::default();
        let mut a = MemberAgent::new(
            MemberId::new(1, 1),
            None,
            AgentConfig::default(),
            protocol.clone(),
            7,
            vec![1],
            Timestamp::ZERO,
        );
        let max = a.max_raw_payload();
        assert_eq!(max, protocol.max_frame_payload() - 1);
        assert_eq!(max, MemberAgent::max_raw_payload_for(&protocol));
        let g = group_id("g");
        assert_eq!(a.raw_send(g, b"x"), Err(AgentError::NoView(g)));
        assert_eq!(
            a.raw_p2p_send(g, MemberId::new(2, 1), b"x"),
            Err(AgentError::NoView(g))
        );
        // Joined (a one-member view): one datagram is the limit, checked before anything is
        // queued.
        a.endpoint.join(
            g,
            GroupSpec {
                view: ViewId(1),
                members: vec![MemberId::new(1, 1)],
                multicast: false,
                key: None,
            },
        );
        a.groups.insert(
            g,
            Slot {
                view: View {
                    group: g,
                    id: ViewId(1),
                    members: vec![MemberId::new(1, 1)],
                    joined: vec![MemberId::new(1, 1)],
                    left: Vec::new(),
                },
                mcast: None,
                round: 0,
                phase: FlushPhase::Idle,
                report: Vec::new(),
                ordered: OrderedQueue::default(),
                awaiting: None,
                held: Vec::new(),
                checkpoint_to: BTreeMap::new(),
                sent: 0,
                ordered_unordered: 0,
            },
        );
        assert_eq!(a.raw_send(g, &vec![0; max]), Ok(()));
        assert!(matches!(
            a.raw_send(g, &vec![0; max + 1]),
            Err(AgentError::Send(SendError::TooLarge { .. }))
        ));
        assert_eq!(
            a.raw_p2p_send(g, MemberId::new(9, 1), b"x"),
            Err(AgentError::Send(SendError::UnknownMember(MemberId::new(
                9, 1
            ))))
        );
        assert_eq!(a.endpoint().stats().raw_sent, 1);
    }
}
