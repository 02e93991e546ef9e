//! The driver's side of the multicast and query flavours beyond Send / OrderedSend / P2PSend:
//! CausalSend (and CausalQuery), RawSend / RawP2PSend (and RawQuery / RawP2PQuery), and
//! P2PQuery. The public calls are in [`crate::group`] (`Group::causal_send`, ...).
//!
//! # CausalSend
//!
//! A CausalSend travels as a FIFO Send carrying a [`VectorStamp`] over the members of the
//! view it is sent in (one [`CausalOrder`] per group and view, owned by the driver thread):
//!
//! ```text
//! causal:   0x20 stamp inner        (inner: a `message` or `query` payload, see crate::group)
//! ```
//!
//! * The stamp is taken when the driver hands the message to the data plane (so every causal
//!   message the driver had already handed to the application counts as delivered-before),
//!   and only if the data plane takes it; the sender's own copy goes to its delivery thread
//!   at that moment (the data plane's self-delivered copy is ignored), so nothing the sender
//!   delivers afterwards can overtake it.
//! * Receivers hold messages back until their causal predecessors were handed over, then
//!   pass them to the delivery thread in causal order.
//! * At a view change the messages still held (their missing predecessors died with a
//!   crashed sender, the view change having made everything else stable) are released, in an
//!   order that respects causality among them, *before* the view callback, and the counters
//!   restart for the new view. A member that leaves releases them before it is gone.
//! * Malformed stamps (wrong width, impossible entries, unknown sender, wrong view),
//!   duplicates and overflow of the holdback bound are counted drops
//!   ([`FlavourStats`]), never panics.
//!
//! # Raw sends
//!
//! Unreliable, unordered, one datagram, sent once (`MemberAgent::raw_send`). A group RawSend
//! is delivered to its sender locally (like Send). Raw sends refused locally (raw queue full,
//! view change in progress, destination gone) are counted in [`FlavourStats::raw_unsent`];
//! raw datagrams from non-members or other views are dropped by the endpoint and counted in
//! its drop counters (copied into [`FlavourStats`]).
//!
//! # Queries
//!
//! CausalQuery multicasts its request as a CausalSend; RawQuery as a RawSend; P2PQuery sends
//! it reliably to one member; RawP2PQuery as a RawP2PSend. A query sent raw is answered raw
//! (Isis² `RawReply`) when the reply fits one datagram, else reliably. A lost request or
//! reply is handled by the query's [`Timeout`] action. P2P queries expect exactly one reply
//! ([`ReplyCollector::p2p`]); a destination that leaves or fails while the query waits ends it
//! with no reply (the manual: "if there is no reply, the lists will be empty").

use super::*;

use vsync_dataplane::wire::DropReason;

use crate::causal::{CausalError, CausalOrder, VectorStamp};
use crate::marshal::{Reader, Writer};

/// The causal message tag (outside the range of the basic tags of [`crate::group`]).
pub(crate) const K_CAUSAL: u8 = 0x20;

/// Most causal messages one group holds back waiting for their predecessors; beyond it a
/// message is dropped and counted ([`FlavourStats::causal_overflow`]).
const MAX_CAUSAL_HELD: usize = 65_536;

/// How a flavoured query's request travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    /// CausalSend to the group.
    Causal,
    /// RawSend to the group.
    Raw,
    /// Reliable P2P to one member.
    P2p(MemberId),
    /// RawP2PSend to one member.
    RawP2p(MemberId),
}

/// Application requests of the flavours (one [`Cmd::Flav`]).
pub(crate) enum FlavCmd {
    /// CausalSend of a `message` payload.
    Causal { gid: GroupId, payload: Vec<u8> },
    /// RawSend (`to: None`) or RawP2PSend of a `message` payload.
    Raw {
        gid: GroupId,
        to: Option<MemberId>,
        payload: Vec<u8>,
    },
    /// CausalQuery, RawQuery, P2PQuery or RawP2PQuery; `body` is `code:u32-LE arglist`.
    Query {
        gid: GroupId,
        via: Via,
        want: NReplies,
        timeout: Timeout,
        body: Vec<u8>,
        done: Done<Replies>,
    },
    /// The reply to a query that arrived raw (Isis² `RawReply`).
    RawReply {
        gid: GroupId,
        to: MemberId,
        qid: u64,
        reply: ReplyKind,
    },
    /// A snapshot of the counters.
    Stats { done: Done<FlavourStats> },
}

/// What waits for a query's request to leave.
pub(crate) struct QueryWait {
    qid: u64,
    want: NReplies,
    timeout: Timeout,
    done: Done<Replies>,
}

/// Queued sends of the flavours (one [`Out::Flav`]), kept in the group's send order.
pub(crate) enum FlavOut {
    /// A CausalSend (stamped when it leaves): `inner` is a `message` or `query` payload.
    Causal {
        inner: Vec<u8>,
        query: Option<QueryWait>,
    },
    /// A P2PQuery's request (a `query` payload).
    P2pQuery {
        to: MemberId,
        payload: Vec<u8>,
        wait: QueryWait,
    },
}

/// A held causal message: its whole payload and where the inner payload starts.
type HeldMsg = (Vec<u8>, usize);

/// CausalSend state of one group in one view.
struct CausalView {
    view: ViewId,
    members: Vec<MemberId>,
    order: CausalOrder<HeldMsg>,
}

impl CausalView {
    /// The state of view `v` at member `me`; `None` if `me` is not in it.
    fn new(v: &OracleView, me: MemberId) -> Option<Self> {
        let rank = v.members.iter().position(|m| *m == me)?;
        let order = CausalOrder::new(rank, v.members.len()).ok()?;
        Some(CausalView {
            view: v.id,
            members: v.members.clone(),
            order: order.with_max_held(MAX_CAUSAL_HELD),
        })
    }

    /// Takes a `causal` payload from `sender`, delivered by the data plane in `view`, and
    /// appends to `out` what may now be delivered, in causal order. Bad input is a counted
    /// drop.
    fn receive(
        &mut self,
        view: ViewId,
        sender: MemberId,
        payload: Vec<u8>,
        stats: &mut FlavourStats,
        out: &mut Vec<(MemberId, HeldMsg)>,
    ) {
        let Some(rank) = self.members.iter().position(|m| *m == sender) else {
            stats.causal_malformed += 1;
            return;
        };
        if view != self.view || payload.first() != Some(&K_CAUSAL) {
            stats.causal_malformed += 1;
            return;
        }
        let mut r = Reader::new(&payload[1..]);
        let stamp = match VectorStamp::decode_from(&mut r, self.members.len()) {
            Ok(s) => s,
            Err(_) => {
                stats.causal_malformed += 1;
                return;
            }
        };
        let at = payload.len() - r.remaining();
        match self.order.receive(rank, stamp, (payload, at)) {
            Ok(()) => {
                // Nothing deliverable means this very message waits (were it deliverable,
                // it would come out).
                let before = out.len();
                while let Some((rank, msg)) = self.order.poll() {
                    out.push((self.members[rank], msg));
                }
                if out.len() == before {
                    stats.causal_waited += 1;
                }
            }
            Err(CausalError::Duplicate { .. }) => stats.causal_duplicates += 1,
            Err(CausalError::Full { .. }) => stats.causal_overflow += 1,
            Err(_) => stats.causal_malformed += 1,
        }
    }

    /// Ends the view: every held message, in an order that respects causality among them.
    fn release(&mut self, out: &mut Vec<(MemberId, HeldMsg)>) {
        for (rank, msg) in self.order.flush_view() {
            out.push((self.members[rank], msg));
        }
    }
}

/// Hands causal messages to the delivery thread.
fn deliver_causal(
    gs: &GState,
    msgs: Vec<(MemberId, HeldMsg)>,
    released: bool,
    stats: &mut FlavourStats,
) {
    for (sender, (payload, at)) in msgs {
        if upcall_inner(gs, Address::from(sender), MsgKind::Causal, &payload[at..]) {
            stats.causal_delivered += 1;
            stats.causal_released += u64::from(released);
        } else {
            stats.causal_malformed += 1;
        }
    }
}

/// Per-group state of the flavours.
#[derive(Default)]
pub(crate) struct FlavState {
    causal: Option<CausalView>,
}

/// Counters of CausalSend and the raw sends at one member ([`System::flavour_stats`]).
/// Drop counters of the data plane that raw traffic relies on are copied in.
///
/// ```no_run
/// # let sys = vsync::System::start()?;
/// let s: vsync::FlavourStats = sys.flavour_stats()?;
/// if s.causal_held > 0 {
///     println!("{} causal messages wait for a predecessor", s.causal_held);
/// }
/// # Ok::<(), vsync::VsyncError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlavourStats {
    /// Causal messages from other members handed to the delivery thread in causal order.
    pub causal_delivered: u64,
    /// Of those, messages released at a view change (or leave) with predecessors missing.
    pub causal_released: u64,
    /// Causal messages that arrived before one of their causal predecessors and were held
    /// back (cumulative).
    pub causal_waited: u64,
    /// Causal messages held back right now, over all groups.
    pub causal_held: u64,
    /// Causal messages dropped as malformed: undecodable or wrong-width stamp, impossible
    /// entries, unknown sender, a view other than the current one, or an inner payload that
    /// is neither a message nor a query.
    pub causal_malformed: u64,
    /// Causal messages dropped as duplicates.
    pub causal_duplicates: u64,
    /// Causal messages dropped because the holdback bound was reached.
    pub causal_overflow: u64,
    /// Raw messages delivered here (sent by others; own group RawSends excluded).
    pub raw_delivered: u64,
    /// Raw sends (and raw replies) refused locally and therefore never sent: raw queue full,
    /// view change in progress, destination not in the view.
    pub raw_unsent: u64,
    /// Raw messages received with a payload that is not a message, query or reply.
    pub raw_malformed: u64,
    /// Raw messages the data plane transmitted (endpoint counter).
    pub raw_sent: u64,
    /// Raw messages the data plane dropped for lack of room (endpoint `raw_overflow`).
    pub raw_overflow: u64,
    /// Datagrams dropped because their sender is not a member of the view (endpoint
    /// `unknown_sender`; all traffic, raw included).
    pub unknown_sender: u64,
    /// Datagrams dropped because they name another view (endpoint `wrong_view`; all
    /// traffic, raw included).
    pub wrong_view: u64,
}

impl System {
    /// Counters of CausalSend and the raw sends at this member (see [`FlavourStats`]):
    /// messages delivered, held and dropped, and why.
    ///
    /// ```no_run
    /// use vsync::System;
    /// let sys = System::builder().oracle_port(40113).start()?;
    /// let s = sys.flavour_stats()?;
    /// println!("{} causal messages held, {} malformed dropped", s.causal_held, s.causal_malformed);
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn flavour_stats(&self) -> Result<FlavourStats, VsyncError> {
        let (done, rx) = mpsc::channel();
        self.submit(Cmd::Flav(FlavCmd::Stats { done }))?;
        self.wait(&rx, Some(Duration::from_secs(10)), "the flavour counters")
    }
}

/// The `causal` payload: tag, stamp, inner payload.
fn encode_causal(stamp: &VectorStamp, inner: &[u8]) -> Vec<u8> {
    let mut w = Writer::with_capacity(inner.len() + 2 + stamp.len() * 2);
    w.put_u8(K_CAUSAL);
    stamp.encode_into(&mut w);
    w.put_bytes(inner);
    w.into_vec()
}

/// Hands an inner `message` or `query` payload to the delivery thread; false if it is
/// neither.
fn upcall_inner(gs: &GState, sender: Address, kind: MsgKind, inner: &[u8]) -> bool {
    match inner.first() {
        Some(&group::K_MSG) => {
            let Some((code, args)) = group::decode_msg(inner) else {
                return false;
            };
            let _ = gs.upcalls.send(Upcall::Message {
                sender,
                kind,
                code,
                args,
                query: None,
            });
            true
        }
        Some(&group::K_QUERY) => {
            let Some((qid, code, args)) = group::decode_query(inner) else {
                return false;
            };
            let _ = gs.upcalls.send(Upcall::Message {
                sender,
                kind,
                code,
                args,
                query: Some(qid),
            });
            true
        }
        _ => false,
    }
}

/// Releases every held causal message of the group's current view (view change or leave),
/// in an order that respects causality among them.
pub(super) fn release_causal(gs: &mut GState, stats: &mut FlavourStats) {
    let mut out = Vec::new();
    if let Some(cv) = gs.flav.causal.as_mut() {
        cv.release(&mut out);
    }
    deliver_causal(gs, out, true, stats);
}

/// At a view event, before the view callback: releases the old view's held causal messages
/// and starts the new view's counters.
pub(super) fn on_view(gs: &mut GState, v: &OracleView, me: MemberId, stats: &mut FlavourStats) {
    release_causal(gs, stats);
    gs.flav.causal = CausalView::new(v, me);
}

/// True if a delivery belongs to the flavours (raw kinds, or a causal payload).
pub(super) fn is_flavoured(kind: MsgKind, payload: &[u8]) -> bool {
    matches!(kind, MsgKind::Raw | MsgKind::RawP2p) || payload.first() == Some(&K_CAUSAL)
}

impl Driver {
    /// Handles one [`FlavCmd`].
    pub(super) fn on_flav_cmd(&mut self, cmd: FlavCmd) {
        match cmd {
            FlavCmd::Causal { gid, payload } => {
                if let Some(gs) = self.groups.get_mut(&gid) {
                    if gs.phase == Phase::Active {
                        gs.out.push_back(Out::Flav(FlavOut::Causal {
                            inner: payload,
                            query: None,
                        }));
                    }
                }
            }
            FlavCmd::Raw { gid, to, payload } => self.raw_send(gid, to, &payload),
            FlavCmd::Query {
                gid,
                via,
                want,
                timeout,
                body,
                done,
            } => self.flav_query(gid, via, want, timeout, body, done),
            FlavCmd::RawReply {
                gid,
                to,
                qid,
                reply,
            } => self.raw_reply(gid, to, qid, reply),
            FlavCmd::Stats { done } => {
                let _ = done.send(Ok(self.flavour_stats()));
            }
        }
    }

    fn flavour_stats(&self) -> FlavourStats {
        let mut s = self.flav_stats;
        s.causal_held = self
            .groups
            .values()
            .filter_map(|gs| gs.flav.causal.as_ref())
            .map(|cv| cv.order.held() as u64)
            .sum();
        let ep = self.rt.agent().endpoint();
        s.raw_sent = ep.stats().raw_sent;
        s.raw_overflow = ep.drops().get(DropReason::RawOverflow);
        s.unknown_sender = ep.drops().get(DropReason::UnknownSender);
        s.wrong_view = ep.drops().get(DropReason::WrongView);
        s
    }

    /// A raw send of `payload` (a `message` or `query` payload) to the group or to `to`; the
    /// sender's own copy is delivered locally.
    fn raw_send(&mut self, gid: GroupId, to: Option<MemberId>, payload: &[u8]) {
        let me = self.me();
        let Some(gs) = self.groups.get(&gid) else {
            return;
        };
        if gs.phase != Phase::Active {
            return;
        }
        let local = match to {
            None => Some(MsgKind::Raw),
            Some(m) if m == me => Some(MsgKind::RawP2p),
            Some(_) => None,
        };
        if let Some(kind) = local {
            let _ = upcall_inner(gs, Address::from(me), kind, payload);
        }
        if to == Some(me) {
            return;
        }
        let agent = self.rt.agent_mut();
        let r = match to {
            None => agent.raw_send(gid, payload),
            Some(m) => agent.raw_p2p_send(gid, m, payload),
        };
        if r.is_err() {
            self.flav_stats.raw_unsent += 1;
        }
    }

    fn flav_query(
        &mut self,
        gid: GroupId,
        via: Via,
        want: NReplies,
        timeout: Timeout,
        body: Vec<u8>,
        done: Done<Replies>,
    ) {
        let active = self.groups.get(&gid).map(|s| s.phase) == Some(Phase::Active);
        if !active {
            let _ = done.send(Err(self.not_joined(gid)));
            return;
        }
        self.next_qid += 1;
        let qid = self.next_qid;
        let payload = group::encode_query(qid, &body);
        let wait = QueryWait {
            qid,
            want,
            timeout,
            done,
        };
        match via {
            Via::Causal => {
                if let Some(gs) = self.groups.get_mut(&gid) {
                    gs.out.push_back(Out::Flav(FlavOut::Causal {
                        inner: payload,
                        query: Some(wait),
                    }));
                }
            }
            Via::P2p(to) => {
                if let Some(gs) = self.groups.get_mut(&gid) {
                    gs.out
                        .push_back(Out::Flav(FlavOut::P2pQuery { to, payload, wait }));
                }
            }
            Via::Raw | Via::RawP2p(_) => {
                // The collector starts first: the sender's own copy may be answered at once.
                let expected: Vec<Address> = match via {
                    Via::RawP2p(to) => vec![Address::from(to)],
                    _ => self.view_members(gid),
                };
                self.start_query(gid, &expected, wait);
                let to = match via {
                    Via::RawP2p(to) => Some(to),
                    _ => None,
                };
                self.raw_send(gid, to, &payload);
            }
        }
    }

    fn view_members(&self, gid: GroupId) -> Vec<Address> {
        self.rt
            .agent()
            .view(gid)
            .map(|v| v.members.iter().map(|m| Address::from(*m)).collect())
            .unwrap_or_default()
    }

    /// Starts collecting the replies of a query whose request left (or was given up on:
    /// its timeout action then applies).
    fn start_query(&mut self, gid: GroupId, expected: &[Address], w: QueryWait) {
        let collector = ReplyCollector::new(w.qid, expected, w.want, w.timeout, self.now());
        let pq = PendingQuery {
            collector,
            done: w.done,
        };
        if pq.collector.is_done() {
            self.finish_query(pq);
        } else if let Some(gs) = self.groups.get_mut(&gid) {
            gs.queries.insert(w.qid, pq);
        }
    }

    fn raw_reply(&mut self, gid: GroupId, to: MemberId, qid: u64, reply: ReplyKind) {
        if to == self.me() {
            self.on_reply(gid, to, qid, reply);
            return;
        }
        if !self.groups.contains_key(&gid) {
            return;
        }
        let payload = group::encode_reply(qid, &reply);
        let agent = self.rt.agent_mut();
        if payload.len() > agent.max_raw_payload() {
            // Too large for one datagram: answered reliably.
            if let Some(gs) = self.groups.get_mut(&gid) {
                gs.out.push_back(Out::P2p { to, payload });
            }
        } else if agent.raw_p2p_send(gid, to, &payload).is_err() {
            self.flav_stats.raw_unsent += 1;
        }
    }

    /// Moves the queued flavoured send at the front of `g`'s queue into the data plane.
    /// False when it must wait (backpressure, view change); it then stays queued.
    pub(super) fn pump_flav(&mut self, g: GroupId) -> bool {
        let me = self.me();
        let agent_view = self.rt.agent().view(g).map(|v| v.id);
        let Some(gs) = self.groups.get_mut(&g) else {
            return false;
        };
        let r = match gs.out.front() {
            Some(Out::Flav(FlavOut::Causal { inner, .. })) => {
                let Some(cv) = gs.flav.causal.as_ref() else {
                    return false; // no view yet
                };
                if agent_view != Some(cv.view) {
                    return false; // the next view's event has not been handled yet
                }
                let framed = encode_causal(&cv.order.peek_stamp(), inner);
                self.rt.agent_mut().send(g, &framed)
            }
            Some(Out::Flav(FlavOut::P2pQuery { to, payload, .. })) => {
                if *to == me {
                    Ok(())
                } else {
                    self.rt.agent_mut().p2p_send(g, *to, payload)
                }
            }
            _ => return false,
        };
        if matches!(
            r,
            Err(AgentError::Send(SendError::WouldBlock))
                | Err(AgentError::Send(SendError::Wedged(_)))
        ) {
            return false;
        }
        let Some(Out::Flav(item)) = gs.out.pop_front() else {
            return false;
        };
        match (item, r) {
            (FlavOut::Causal { inner, query }, Ok(())) => {
                let mut members = Vec::new();
                if let Some(cv) = gs.flav.causal.as_mut() {
                    cv.order.stamp();
                    members = cv.members.iter().map(|m| Address::from(*m)).collect();
                }
                // The sender's own copy, now: nothing it delivers later may overtake it.
                let _ = upcall_inner(gs, Address::from(me), MsgKind::Causal, &inner);
                if let Some(w) = query {
                    self.start_query(g, &members, w);
                }
            }
            (FlavOut::P2pQuery { to, payload, wait }, Ok(())) => {
                if to == me {
                    let _ = upcall_inner(gs, Address::from(me), MsgKind::P2p, &payload);
                }
                self.start_query(g, &[Address::from(to)], wait);
            }
            (FlavOut::Causal { query: Some(w), .. }, Err(e))
            | (FlavOut::P2pQuery { wait: w, .. }, Err(e)) => {
                let err = match e {
                    AgentError::Send(SendError::UnknownMember(m)) => VsyncError::NotMember {
                        member: Address::from(m),
                    },
                    e => VsyncError::Send(e.to_string()),
                };
                let _ = w.done.send(Err(err));
            }
            (FlavOut::Causal { query: None, .. }, Err(_)) => {}
        }
        true
    }

    /// A delivery [`is_flavoured`] recognised.
    pub(super) fn on_flav_deliver(
        &mut self,
        g: GroupId,
        view: ViewId,
        sender: MemberId,
        kind: MsgKind,
        payload: Vec<u8>,
    ) {
        let me = self.me();
        if kind == MsgKind::RawP2p && payload.first() == Some(&group::K_REPLY) {
            match group::decode_reply(&payload) {
                Some((qid, reply)) => {
                    self.flav_stats.raw_delivered += 1;
                    self.on_reply(g, sender, qid, reply);
                }
                None => self.flav_stats.raw_malformed += 1,
            }
            return;
        }
        let Some(gs) = self.groups.get_mut(&g) else {
            return;
        };
        let stats = &mut self.flav_stats;
        match kind {
            MsgKind::Raw | MsgKind::RawP2p => {
                if upcall_inner(gs, Address::from(sender), kind, &payload) {
                    stats.raw_delivered += 1;
                } else {
                    stats.raw_malformed += 1;
                }
            }
            MsgKind::Send if sender == me => {} // delivered when it was sent
            MsgKind::Send => {
                let Some(cv) = gs.flav.causal.as_mut() else {
                    stats.causal_malformed += 1;
                    return;
                };
                let mut out = Vec::new();
                cv.receive(view, sender, payload, stats, &mut out);
                deliver_causal(gs, out, false, stats);
            }
            _ => stats.causal_malformed += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_payload_round_trips_and_bad_stamps_are_errors() {
        let stamp = VectorStamp::from(vec![1, 0, 300]);
        let inner = group::encode_msg(7, &crate::marshal::ArgList::new(&(5i32,)));
        let p = encode_causal(&stamp, &inner);
        assert_eq!(p[0], K_CAUSAL);
        let mut r = Reader::new(&p[1..]);
        assert_eq!(VectorStamp::decode_from(&mut r, 3).unwrap(), stamp);
        assert_eq!(&p[p.len() - r.remaining()..], &inner[..]);
        // Wrong width, truncation and garbage are typed errors.
        assert!(VectorStamp::decode_from(&mut Reader::new(&p[1..]), 2).is_err());
        assert!(VectorStamp::decode_from(&mut Reader::new(&p[1..3]), 3).is_err());
        assert!(VectorStamp::decode_from(&mut Reader::new(&[0xff; 12]), 3).is_err());
        assert!(VectorStamp::decode_from(&mut Reader::new(&[]), 3).is_err());
    }

    fn view(id: u32, members: &[MemberId]) -> OracleView {
        OracleView {
            group: GroupId(1),
            id: ViewId(id),
            members: members.to_vec(),
            joined: Vec::new(),
            left: Vec::new(),
        }
    }

    fn causal(stamp: Vec<u64>, code: u32) -> Vec<u8> {
        let inner = group::encode_msg(code, &crate::marshal::ArgList::new(&()));
        encode_causal(&VectorStamp::from(stamp), &inner)
    }

    fn codes(out: &mut Vec<(MemberId, HeldMsg)>) -> Vec<(MemberId, u32)> {
        out.drain(..)
            .map(|(m, (p, at))| (m, group::decode_msg(&p[at..]).unwrap().0))
            .collect()
    }

    #[test]
    fn causal_view_orders_counts_and_never_panics() {
        let m: Vec<MemberId> = (1..=3).map(|p| MemberId::new(p, 1)).collect();
        let v = view(4, &m);
        assert!(CausalView::new(&v, MemberId::new(9, 1)).is_none());
        let mut c = CausalView::new(&v, m[2]).unwrap();
        let mut st = FlavourStats::default();
        let mut out = Vec::new();
        // m[1]'s message 1 depends on m[0]'s message 1: held until it arrives.
        c.receive(
            ViewId(4),
            m[1],
            causal(vec![1, 1, 0], 11),
            &mut st,
            &mut out,
        );
        assert!(out.is_empty());
        assert_eq!(c.order.held(), 1);
        assert_eq!(st.causal_waited, 1);
        c.receive(
            ViewId(4),
            m[0],
            causal(vec![1, 0, 0], 10),
            &mut st,
            &mut out,
        );
        assert_eq!(codes(&mut out), [(m[0], 10), (m[1], 11)]);
        // Duplicates, wrong view, unknown sender, bad widths, garbage and an impossible
        // stamp (depends on a message of ours never sent) are counted drops.
        c.receive(
            ViewId(4),
            m[0],
            causal(vec![1, 0, 0], 10),
            &mut st,
            &mut out,
        );
        assert_eq!(st.causal_duplicates, 1);
        let bad: Vec<(ViewId, MemberId, Vec<u8>)> = vec![
            (ViewId(3), m[0], causal(vec![2, 0, 0], 1)),
            (ViewId(4), MemberId::new(9, 1), causal(vec![2, 0, 0], 1)),
            (ViewId(4), m[0], causal(vec![2, 0], 1)),
            (ViewId(4), m[0], causal(vec![2, 0, 0, 0], 1)),
            (ViewId(4), m[0], vec![K_CAUSAL]),
            (ViewId(4), m[0], vec![K_CAUSAL, 3, 0xff, 0xff]),
            (
                ViewId(4),
                m[0],
                vec![K_CAUSAL, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            ),
            (ViewId(4), m[0], vec![]),
            (ViewId(4), m[0], causal(vec![2, 0, 1], 1)),
            (ViewId(4), m[0], causal(vec![0, 0, 0], 1)),
            (ViewId(4), m[2], causal(vec![0, 0, 1], 1)),
        ];
        let n = bad.len() as u64;
        for (vid, from, p) in bad {
            c.receive(vid, from, p, &mut st, &mut out);
        }
        assert!(out.is_empty());
        assert_eq!(st.causal_malformed, n);
        // A message whose predecessor never comes is released at the view change.
        c.receive(
            ViewId(4),
            m[1],
            causal(vec![3, 2, 0], 12),
            &mut st,
            &mut out,
        );
        assert!(out.is_empty());
        c.release(&mut out);
        assert_eq!(codes(&mut out), [(m[1], 12)]);
        assert_eq!(c.order.held(), 0);
    }

    #[test]
    fn flavoured_deliveries_are_recognised() {
        assert!(is_flavoured(MsgKind::Raw, &[group::K_MSG]));
        assert!(is_flavoured(MsgKind::RawP2p, &[]));
        assert!(is_flavoured(MsgKind::Send, &[K_CAUSAL, 0]));
        assert!(!is_flavoured(MsgKind::Send, &[group::K_MSG]));
        assert!(!is_flavoured(MsgKind::P2p, &[group::K_REPLY]));
    }
}
