//! Non-member clients of a group (the manual's "Non-Member Clients of a Group"): [`Client`]
//! and the request/reply protocol between a client and its representative.
//!
//! A [`Client`] is a process that has not joined the group. It asks the oracle who the
//! members are (a lookup that returns each member's *client-request endpoint*: the control
//! socket it talks to the oracle from), picks a **representative** — spread over the members
//! by the client's identity, so clients are assigned round-robin-like — and sends it
//! point-to-point queries. The representative runs the group's handler for the request code
//! only if the members allowed it ([`Group::allow_client_requests`](crate::Group::allow_client_requests));
//! otherwise the client gets an `AbortReply` error ("The group has not enabled client requests
//! to request-code k"). The client has no group key and cannot multicast: a representative
//! relays on its behalf if the application wants that.
//!
//! **Re-homing.** The client retransmits an unanswered request every
//! [`RETRY_EVERY`]; after [`REHOME_AFTER`] without an answer (the representative left,
//! failed or is partitioned away) it asks the oracle again and moves to the next member, and
//! reissues the request there. As the manual warns, a request may therefore run more than
//! once when the representative fails while handling it: make client requests idempotent.
//! A representative may move a client with
//! [`Group::redirect_client`](crate::Group::redirect_client).
//!
//! **Duplicates.** A representative remembers the replies of the last [`REPLY_CACHE`]
//! requests (per process) and answers a retransmission from the cache instead of running the
//! handler again.
//!
//! # Wire format (the body of a runtime `FRAME_CLIENT` datagram)
//!
//! ```text
//! request:   1 client:u64 req:u64 group:u64 code:u32 arglist      (client → representative)
//! reply:     2 req:u64 kind:u8 (0 value | 1 null | 2 abort) bytes (representative → client)
//! redirect:  3 group:u64 new_rep:u64                              (representative → client)
//! elsewhere: 4 group:u64 req:u64                                  (representative → client)
//! ```
//!
//! `elsewhere` answers a request sent to a process that is not (or no longer, or not yet)
//! a member of the group — say its representative left the group but its process lives on:
//! the client re-homes at once, as if the representative had failed.
//!
//! Malformed frames are dropped and counted ([`ClientStats`]).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vsync_control::runtime::MemberRuntime;
use vsync_dataplane::{GroupId, MemberId};

use crate::error::VsyncError;
use crate::group::IntoArgs;
use crate::marshal::{Address, RequestCode};
#[cfg(test)]
use crate::query::TimeoutAction;
use crate::query::{Replies, ReplyCollector, ReplyKind, Timeout};
use crate::system::{gid_of, Cmd, Done, System};

/// How often an unanswered client request is retransmitted to the same representative.
///
/// ```
/// use vsync::client::{REHOME_AFTER, RETRY_EVERY};
/// assert!(RETRY_EVERY < REHOME_AFTER); // several retries before re-homing
/// ```
pub const RETRY_EVERY: Duration = Duration::from_millis(100);
/// How long a client waits for its representative before re-homing to another member.
///
/// ```
/// use vsync::{client::REHOME_AFTER, Timeout};
/// assert!(REHOME_AFTER < Timeout::default().after);
/// ```
pub const REHOME_AFTER: Duration = Duration::from_millis(1000);
/// Replies a representative keeps to answer retransmitted requests.
///
/// ```
/// assert!(vsync::client::REPLY_CACHE >= 1);
/// ```
pub const REPLY_CACHE: usize = 4096;
/// Client requests a representative runs (or has queued for its handlers) at once; more are
/// dropped and counted ([`ClientStats::busy_dropped`]) — the clients retransmit. Bounds the
/// memory remote clients can make a member hold.
///
/// ```
/// assert!(vsync::client::MAX_SERVING >= 1);
/// ```
pub const MAX_SERVING: usize = 4096;
/// Client return addresses a representative remembers (for redirects); the oldest
/// forgotten first.
const MAX_CLIENT_ADDRS: usize = 4096;

const F_REQUEST: u8 = 1;
const F_REPLY: u8 = 2;
const F_REDIRECT: u8 = 3;
const F_ELSEWHERE: u8 = 4;
/// Query ids of client requests at the representative (disjoint from group query ids).
const CLIENT_QID_BIT: u64 = 1 << 63;

/// Counters of the client protocol, for tests and diagnostics.
///
/// ```no_run
/// # let sys = vsync::System::start()?;
/// let s: vsync::client::ClientStats = sys.client_stats()?;
/// println!("{} requests served, {} from the cache", s.requests_in, s.answered_from_cache);
/// # Ok::<(), vsync::VsyncError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests received as representative (retransmissions included).
    pub requests_in: u64,
    /// Retransmitted requests answered from the reply cache.
    pub answered_from_cache: u64,
    /// Requests for groups this process is not a member of (answered with an abort).
    pub not_member: u64,
    /// Malformed client frames dropped.
    pub malformed: u64,
    /// Requests sent as a client (retransmissions included).
    pub requests_out: u64,
    /// Times a client moved to another representative (re-homing and redirects).
    pub rehomed: u64,
    /// Requests dropped because [`MAX_SERVING`] requests were already in progress here.
    pub busy_dropped: u64,
    /// Ignored frames that claimed another process's identity: retransmissions of a request
    /// in progress or answered here from another address than the request's, and replies to
    /// this client's requests from a process that is not a member of the group.
    pub spoofed: u64,
}

fn encode_request(client: MemberId, req: u64, group: GroupId, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(25 + body.len());
    v.push(F_REQUEST);
    v.extend_from_slice(&client.0.to_le_bytes());
    v.extend_from_slice(&req.to_le_bytes());
    v.extend_from_slice(&group.0.to_le_bytes());
    v.extend_from_slice(body);
    v
}

fn encode_reply(req: u64, r: &ReplyKind) -> Vec<u8> {
    crate::group::encode_tagged_reply(F_REPLY, req, r)
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A decoded client frame.
#[derive(Debug, PartialEq, Eq)]
enum Frame<'a> {
    Request {
        client: MemberId,
        req: u64,
        group: GroupId,
        code: RequestCode,
        args: &'a [u8],
    },
    Reply {
        req: u64,
        reply: ReplyKind,
    },
    Redirect {
        group: GroupId,
        new_rep: MemberId,
    },
    Elsewhere {
        group: GroupId,
        req: u64,
    },
}

fn encode_elsewhere(group: GroupId, req: u64) -> Vec<u8> {
    let mut v = vec![F_ELSEWHERE];
    v.extend_from_slice(&group.0.to_le_bytes());
    v.extend_from_slice(&req.to_le_bytes());
    v
}

fn decode(b: &[u8]) -> Option<Frame<'_>> {
    match *b.first()? {
        F_REQUEST if b.len() >= 29 => Some(Frame::Request {
            client: MemberId(u64_at(b, 1)?),
            req: u64_at(b, 9)?,
            group: GroupId(u64_at(b, 17)?),
            code: u32::from_le_bytes(b.get(25..29)?.try_into().ok()?),
            args: &b[29..],
        }),
        F_REPLY if b.len() >= 10 => {
            let body = &b[10..];
            let reply = match b[9] {
                0 => ReplyKind::Value(body.to_vec()),
                1 if body.is_empty() => ReplyKind::Null,
                2 => ReplyKind::Abort(String::from_utf8_lossy(body).into_owned()),
                _ => return None,
            };
            Some(Frame::Reply {
                req: u64_at(b, 1)?,
                reply,
            })
        }
        F_REDIRECT if b.len() == 17 => Some(Frame::Redirect {
            group: GroupId(u64_at(b, 1)?),
            new_rep: MemberId(u64_at(b, 9)?),
        }),
        F_ELSEWHERE if b.len() == 17 => Some(Frame::Elsewhere {
            group: GroupId(u64_at(b, 1)?),
            req: u64_at(b, 9)?,
        }),
        _ => None,
    }
}

/// A client request the driver must hand to a local group's delivery thread.
pub(crate) struct ClientDelivery {
    pub(crate) group: GroupId,
    pub(crate) client: MemberId,
    pub(crate) code: RequestCode,
    pub(crate) args: Vec<u8>,
    pub(crate) qid: u64,
}

/// A request this process is serving as representative.
struct Serving {
    from: SocketAddr,
    req: u64,
    group: GroupId,
    client: MemberId,
}

/// One outstanding request of a local [`Client`].
struct Outgoing {
    group: GroupId,
    frame: Vec<u8>,
    timeout: Timeout,
    deadline: Instant,
    last_sent: Instant,
    since_rep: Instant,
    done: Done<Replies>,
}

/// What a local client knows of a group.
#[derive(Default)]
struct Membership {
    members: Vec<(MemberId, SocketAddr)>,
    rep: Option<usize>,
    looked_up: Option<Instant>,
}

/// The client protocol, both roles, driven by the system's driver thread.
pub(crate) struct ClientDriver {
    me: MemberId,
    next_qid: u64,
    next_req: u64,
    serving: BTreeMap<u64, Serving>,
    /// (client, req) → (the client's address, reply), for retransmissions; oldest evicted
    /// first. Only a retransmission from the same address is answered: client ids are not
    /// secret, and request numbers are small counters.
    cache: BTreeMap<(MemberId, u64), (SocketAddr, Vec<u8>)>,
    cache_order: VecDeque<(MemberId, u64)>,
    /// (client, req) of requests in progress here, so a retransmission is not run twice.
    in_progress: BTreeMap<(MemberId, u64), u64>,
    /// Last address each client was heard from (for redirects), at most
    /// [`MAX_CLIENT_ADDRS`]; `client_order` is their insertion order.
    client_addrs: BTreeMap<MemberId, SocketAddr>,
    client_order: VecDeque<MemberId>,
    outgoing: BTreeMap<u64, Outgoing>,
    groups: BTreeMap<GroupId, Membership>,
    stats: ClientStats,
}

impl ClientDriver {
    pub(crate) fn new(me: MemberId) -> Self {
        ClientDriver {
            me,
            next_qid: 0,
            next_req: 0,
            serving: BTreeMap::new(),
            cache: BTreeMap::new(),
            cache_order: VecDeque::new(),
            in_progress: BTreeMap::new(),
            client_addrs: BTreeMap::new(),
            client_order: VecDeque::new(),
            outgoing: BTreeMap::new(),
            groups: BTreeMap::new(),
            stats: ClientStats::default(),
        }
    }

    pub(crate) fn stats(&self) -> ClientStats {
        self.stats
    }

    /// A client frame from `from`. Requests for a joined group (`is_member`) come back as a
    /// [`ClientDelivery`]; everything else is answered or applied here.
    pub(crate) fn on_frame(
        &mut self,
        rt: &mut MemberRuntime,
        from: SocketAddr,
        body: &[u8],
        is_member: impl Fn(GroupId) -> bool,
    ) -> Option<ClientDelivery> {
        let Some(frame) = decode(body) else {
            self.stats.malformed += 1;
            return None;
        };
        match frame {
            Frame::Request {
                client,
                req,
                group,
                code,
                args,
            } => {
                self.stats.requests_in += 1;
                if let Some((addr, cached)) = self.cache.get(&(client, req)) {
                    // Another process claiming this client's id gets nothing: the reply
                    // is the client's.
                    if *addr == from {
                        self.stats.answered_from_cache += 1;
                        let _ = rt.send_client(from, cached);
                    } else {
                        self.stats.spoofed += 1;
                    }
                    return None;
                }
                if let Some(qid) = self.in_progress.get(&(client, req)) {
                    // Still running: the reply goes where the request came from (a
                    // retransmission from elsewhere must not divert it).
                    if self.serving.get(qid).is_some_and(|s| s.from != from) {
                        self.stats.spoofed += 1;
                    }
                    return None;
                }
                if !is_member(group) {
                    // Not a member (left, or not joined yet): the client must re-home, not
                    // fail the request.
                    self.stats.not_member += 1;
                    let _ = rt.send_client(from, &encode_elsewhere(group, req));
                    return None;
                }
                if self.serving.len() >= MAX_SERVING {
                    // Overloaded: the client retransmits (or re-homes).
                    self.stats.busy_dropped += 1;
                    return None;
                }
                self.remember_client(client, from);
                self.next_qid += 1;
                let qid = CLIENT_QID_BIT | self.next_qid;
                self.serving.insert(
                    qid,
                    Serving {
                        from,
                        req,
                        group,
                        client,
                    },
                );
                self.in_progress.insert((client, req), qid);
                Some(ClientDelivery {
                    group,
                    client,
                    code,
                    args: args.to_vec(),
                    qid,
                })
            }
            Frame::Reply { req, reply } => {
                // Only a member of the group (as last looked up) answers: anyone could send
                // a reply frame, and request numbers are small counters.
                let from_member = self.outgoing.get(&req).is_some_and(|o| {
                    self.groups
                        .get(&o.group)
                        .is_some_and(|m| m.members.iter().any(|(_, a)| *a == from))
                });
                if !from_member {
                    if self.outgoing.contains_key(&req) {
                        self.stats.spoofed += 1;
                    }
                    return None;
                }
                if let Some(o) = self.outgoing.remove(&req) {
                    let rep = self
                        .groups
                        .get(&o.group)
                        .and_then(|m| m.rep.and_then(|i| m.members.get(i)))
                        .map(|(m, _)| *m)
                        .unwrap_or(MemberId(0));
                    let _ = o.done.send(finish_one(req, rep, o.timeout, Some(reply)));
                }
                None
            }
            Frame::Redirect { group, new_rep } => {
                if let Some(m) = self.groups.get_mut(&group) {
                    if let Some(i) = m.members.iter().position(|(id, _)| *id == new_rep) {
                        m.rep = Some(i);
                        self.stats.rehomed += 1;
                        for o in self.outgoing.values_mut().filter(|o| o.group == group) {
                            o.since_rep = Instant::now();
                        }
                    } else {
                        // A member this client has not seen yet: look the group up again.
                        m.looked_up = None;
                    }
                }
                None
            }
            Frame::Elsewhere { group, req } => {
                // Only an answer to a request of ours, from the member it went to.
                if self.outgoing.get(&req).is_none_or(|o| o.group != group) {
                    return None;
                }
                let m = self.groups.get_mut(&group)?;
                let rep_addr = m.rep.and_then(|i| m.members.get(i)).map(|(_, a)| *a);
                // That process is not a member (any more): forget it, look the group up
                // again, and reissue this group's requests at the next member at once.
                m.members.retain(|(_, a)| *a != from);
                m.looked_up = None;
                if rep_addr == Some(from) {
                    m.rep = match m.members.len() {
                        0 => None,
                        n => Some(m.rep.unwrap_or(0) % n),
                    };
                    self.stats.rehomed += 1;
                    let now = Instant::now();
                    for o in self.outgoing.values_mut().filter(|o| o.group == group) {
                        o.since_rep = now;
                        o.last_sent = now - RETRY_EVERY;
                    }
                } else if let Some(a) = rep_addr {
                    m.rep = m.members.iter().position(|(_, x)| *x == a);
                }
                None
            }
        }
    }

    /// Records where `client` was last heard from, forgetting the oldest client beyond
    /// [`MAX_CLIENT_ADDRS`].
    fn remember_client(&mut self, client: MemberId, from: SocketAddr) {
        if self.client_addrs.insert(client, from).is_none() {
            self.client_order.push_back(client);
            while self.client_order.len() > MAX_CLIENT_ADDRS {
                if let Some(old) = self.client_order.pop_front() {
                    self.client_addrs.remove(&old);
                }
            }
        }
    }

    /// The group is gone here: requests still queued for its handlers will never be
    /// answered, so forget them (their clients re-home).
    pub(crate) fn forget_group(&mut self, group: GroupId) {
        let in_progress = &mut self.in_progress;
        self.serving.retain(|_, s| {
            let keep = s.group != group;
            if !keep {
                in_progress.remove(&(s.client, s.req));
            }
            keep
        });
    }

    /// The handler's reply to a client request (`qid` from a [`ClientDelivery`]); false if
    /// `qid` is not a client request.
    pub(crate) fn on_handler_reply(
        &mut self,
        rt: &mut MemberRuntime,
        client: MemberId,
        qid: u64,
        reply: &ReplyKind,
    ) -> bool {
        if qid & CLIENT_QID_BIT == 0 {
            return false;
        }
        let Some(s) = self.serving.remove(&qid) else {
            return true;
        };
        self.in_progress.remove(&(client, s.req));
        let frame = encode_reply(s.req, reply);
        let _ = rt.send_client(s.from, &frame);
        if self.cache_order.len() >= REPLY_CACHE {
            if let Some(old) = self.cache_order.pop_front() {
                self.cache.remove(&old);
            }
        }
        self.cache_order.push_back((client, s.req));
        self.cache.insert((client, s.req), (s.from, frame));
        true
    }

    /// `RedirectClient`: tells `client` to use `new_rep` for `group`.
    pub(crate) fn redirect(
        &mut self,
        rt: &mut MemberRuntime,
        group: GroupId,
        client: MemberId,
        new_rep: MemberId,
    ) -> Result<(), VsyncError> {
        let Some(addr) = self.client_addrs.get(&client) else {
            return Err(VsyncError::NotMember {
                member: Address::from(client),
            });
        };
        let mut v = vec![F_REDIRECT];
        v.extend_from_slice(&group.0.to_le_bytes());
        v.extend_from_slice(&new_rep.0.to_le_bytes());
        rt.send_client(*addr, &v)
            .map_err(|e| VsyncError::Send(format!("redirect: {e}")))
    }

    /// The oracle's answer to a lookup.
    pub(crate) fn on_members(&mut self, group: GroupId, members: Vec<(MemberId, SocketAddr)>) {
        let Some(m) = self.groups.get_mut(&group) else {
            return;
        };
        let old_rep = m.rep.and_then(|i| m.members.get(i)).map(|(id, _)| *id);
        m.members = members;
        m.rep = match old_rep.and_then(|r| m.members.iter().position(|(id, _)| *id == r)) {
            Some(i) => Some(i),
            None if m.members.is_empty() => None,
            None => {
                if old_rep.is_some() {
                    self.stats.rehomed += 1;
                }
                // Spread clients over the members by their identity.
                Some((self.me.process() as usize) % m.members.len())
            }
        };
    }

    /// A local client's P2P query.
    pub(crate) fn query(
        &mut self,
        rt: &mut MemberRuntime,
        group: GroupId,
        timeout: Timeout,
        body: Vec<u8>,
        done: Done<Replies>,
    ) {
        self.next_req += 1;
        let req = self.next_req;
        let now = Instant::now();
        let frame = encode_request(self.me, req, group, &body);
        let m = self.groups.entry(group).or_default();
        if m.looked_up.is_none() {
            rt.agent_mut().lookup(group);
            m.looked_up = Some(now);
        }
        self.outgoing.insert(
            req,
            Outgoing {
                group,
                frame,
                timeout,
                deadline: now + timeout.after,
                // Send at the next tick once a representative is known.
                last_sent: now - RETRY_EVERY,
                since_rep: now,
                done,
            },
        );
        self.tick(rt);
    }

    /// Retransmissions, re-homing and timeouts.
    pub(crate) fn tick(&mut self, rt: &mut MemberRuntime) {
        if self.outgoing.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut finished = Vec::new();
        for (req, o) in self.outgoing.iter_mut() {
            if now >= o.deadline {
                finished.push(*req);
                continue;
            }
            let Some(m) = self.groups.get_mut(&o.group) else {
                continue;
            };
            if now.duration_since(o.since_rep) >= REHOME_AFTER && !m.members.is_empty() {
                // The representative is silent: move to the next member and look again.
                let next = m.rep.map_or(0, |i| i + 1) % m.members.len();
                m.rep = Some(next);
                m.looked_up = None;
                self.stats.rehomed += 1;
                o.since_rep = now;
                o.last_sent = now - RETRY_EVERY;
            }
            if m.looked_up
                .is_none_or(|t| now.duration_since(t) >= REHOME_AFTER)
            {
                rt.agent_mut().lookup(o.group);
                m.looked_up = Some(now);
            }
            let Some((_, addr)) = m.rep.and_then(|i| m.members.get(i)) else {
                continue;
            };
            if now.duration_since(o.last_sent) >= RETRY_EVERY {
                o.last_sent = now;
                self.stats.requests_out += 1;
                let _ = rt.send_client(*addr, &o.frame);
            }
        }
        for req in finished {
            if let Some(o) = self.outgoing.remove(&req) {
                let rep = self
                    .groups
                    .get(&o.group)
                    .and_then(|m| m.rep.and_then(|i| m.members.get(i)))
                    .map_or(MemberId(0), |(id, _)| *id);
                let _ = o.done.send(finish_one(req, rep, o.timeout, None));
            }
        }
    }

    /// At shutdown: every outstanding client request fails.
    pub(crate) fn fail_all(&mut self, e: impl Fn() -> VsyncError) {
        for (_, o) in std::mem::take(&mut self.outgoing) {
            let _ = o.done.send(Err(e()));
        }
    }
}

/// The [`Replies`] of a P2P client query: its reply, or the timeout's outcome.
fn finish_one(
    req: u64,
    rep: MemberId,
    timeout: Timeout,
    reply: Option<ReplyKind>,
) -> Result<Replies, VsyncError> {
    let who = Address::from(rep);
    let mut c = ReplyCollector::p2p(req, who, timeout, Duration::ZERO);
    match reply {
        Some(r) => {
            c.on_reply(who, r).map_err(VsyncError::Query)?;
        }
        None => {
            c.on_timeout(timeout.after);
        }
    }
    c.finish().map_err(VsyncError::Query)
}

impl System {
    /// Counters of the client protocol at this process, as a client and as a representative
    /// (see [`ClientStats`]).
    ///
    /// ```no_run
    /// # let sys = vsync::System::start()?;
    /// println!("re-homed {} times", sys.client_stats()?.rehomed);
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn client_stats(&self) -> Result<ClientStats, VsyncError> {
        let (done, rx) = mpsc::channel();
        self.submit(Cmd::ClientStats { done })?;
        self.wait(&rx, Some(Duration::from_secs(10)), "client statistics")
    }
}

/// Isis² `Client`: a non-member's handle on a group, for point-to-point queries to a
/// representative member (see the [module docs](self)).
///
/// ```no_run
/// use vsync::{Client, Group, System, Timeout};
///
/// const LOOKUP: u32 = 0;
/// // In a member process:
/// let sys = System::start()?;
/// let g = Group::new(&sys, "directory")?;
/// g.on(LOOKUP, |name: String| format!("{name}: room 4120"))?;
/// g.allow_client_requests(LOOKUP)?;
/// g.join()?;
///
/// // In a client process:
/// let csys = System::start()?;
/// let c = Client::new(&csys, "directory")?;
/// let answer: Vec<String> = c
///     .p2p_query(Timeout::default(), LOOKUP, ("Ken".to_string(),))?
///     .decode()?;
/// # Ok::<(), vsync::VsyncError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    system: System,
    name: String,
    gid: GroupId,
}

impl Client {
    /// A client of group `name` (nothing is sent until the first query).
    ///
    /// ```no_run
    /// # use vsync::{Client, System};
    /// # let sys = System::start()?;
    /// let c = Client::new(&sys, "directory")?;
    /// assert!(Client::new(&sys, "").is_err());
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn new(system: &System, name: &str) -> Result<Client, VsyncError> {
        system.check()?;
        if name.is_empty() || name.len() > 256 {
            return Err(VsyncError::Config(format!(
                "group name of {} bytes: expected 1..=256 bytes",
                name.len()
            )));
        }
        Ok(Client {
            system: system.clone(),
            name: name.to_string(),
            gid: gid_of(name),
        })
    }

    /// The group's name.
    ///
    /// ```no_run
    /// # use vsync::{Client, System};
    /// # let sys = System::start()?;
    /// let c = Client::new(&sys, "directory")?;
    /// assert_eq!(c.name(), "directory");
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Isis² `Client.P2PQuery`: sends `code(args)` to the representative and waits for its
    /// reply (at most one; none if the timeout passes with `Failure` or `NullReply`, an error
    /// with `Abort`). An `AbortReply` — including "not enabled for clients" — is a
    /// [`VsyncError::Query`]. Reissued at another member if the representative fails.
    ///
    /// ```no_run
    /// # use vsync::{Client, System, Timeout, TimeoutAction};
    /// # let sys = System::start()?;
    /// let c = Client::new(&sys, "directory")?;
    /// let r = c.p2p_query(Timeout::millis(2000, TimeoutAction::Abort), 1, ("Ken".to_string(),))?;
    /// let numbers: Vec<String> = r.decode()?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn p2p_query(
        &self,
        timeout: Timeout,
        code: RequestCode,
        args: impl IntoArgs,
    ) -> Result<Replies, VsyncError> {
        self.system.check()?;
        let args = args.into_arg_list();
        let mut body = Vec::with_capacity(args.as_bytes().len() + 4);
        body.extend_from_slice(&code.to_le_bytes());
        body.extend_from_slice(args.as_bytes());
        let (done, rx) = mpsc::channel();
        self.system.submit(Cmd::ClientQuery {
            gid: self.gid,
            timeout,
            body,
            done,
        })?;
        let limit = timeout.after.saturating_add(Duration::from_secs(30));
        self.system
            .wait(&rx, Some(limit), "the representative's reply")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_garbage_is_refused() {
        let f = encode_request(MemberId(7), 3, GroupId(9), &[1, 0, 0, 0, 5, 6]);
        assert_eq!(
            decode(&f),
            Some(Frame::Request {
                client: MemberId(7),
                req: 3,
                group: GroupId(9),
                code: 1,
                args: &[5, 6]
            })
        );
        for r in [
            ReplyKind::Value(vec![1]),
            ReplyKind::Null,
            ReplyKind::Abort("no".into()),
        ] {
            assert_eq!(
                decode(&encode_reply(4, &r)),
                Some(Frame::Reply { req: 4, reply: r })
            );
        }
        let mut red = vec![F_REDIRECT];
        red.extend_from_slice(&5u64.to_le_bytes());
        red.extend_from_slice(&6u64.to_le_bytes());
        assert_eq!(
            decode(&red),
            Some(Frame::Redirect {
                group: GroupId(5),
                new_rep: MemberId(6)
            })
        );
        for bad in [
            &b""[..],
            b"\x01\x02",
            b"\x02\0\0\0\0\0\0\0\0\x09",
            b"\x03\0",
            b"\x09",
        ] {
            assert_eq!(decode(bad), None);
        }
    }

    fn runtime() -> MemberRuntime {
        use vsync_control::runtime::RuntimeConfig;
        use vsync_dataplane::engine::BackendChoice;
        let me = MemberId::new(0x51, 1);
        let mut cfg = RuntimeConfig::new(
            me,
            "127.0.0.1:0".parse().unwrap(),
            vec![(1, "127.0.0.1:9".parse().unwrap())],
        );
        cfg.engine.backend = BackendChoice::Portable;
        MemberRuntime::new(cfg).expect("runtime on loopback")
    }

    /// Review: every request from a new (claimed) client id used to add a return address
    /// for good, and every request was queued for the handlers with no limit, so a remote
    /// sender could grow a representative's memory without bound.
    #[test]
    fn remote_requests_cannot_grow_a_representative_without_bound() {
        let mut rt = runtime();
        let mut d = ClientDriver::new(MemberId::new(0x52, 1));
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let n = (MAX_SERVING + MAX_CLIENT_ADDRS) as u64 + 100;
        let mut delivered = 0;
        for i in 0..n {
            let f = encode_request(
                MemberId::new(1000 + i as u32, 1),
                1,
                GroupId(7),
                &[0, 0, 0, 0],
            );
            delivered += usize::from(d.on_frame(&mut rt, from, &f, |_| true).is_some());
        }
        assert_eq!(delivered, MAX_SERVING, "requests in progress are bounded");
        assert!(d.serving.len() <= MAX_SERVING && d.in_progress.len() <= MAX_SERVING);
        assert!(d.client_addrs.len() <= MAX_CLIENT_ADDRS);
        assert_eq!(d.stats().busy_dropped, n - MAX_SERVING as u64);
        // The group goes away with requests still queued: they are forgotten.
        d.forget_group(GroupId(7));
        assert!(d.serving.is_empty() && d.in_progress.is_empty());
        // A request for a group this process is not in is answered "elsewhere", not served.
        let f = encode_request(MemberId::new(9, 1), 2, GroupId(8), &[0, 0, 0, 0]);
        assert!(d.on_frame(&mut rt, from, &f, |_| false).is_none());
        assert_eq!(d.stats().not_member, 1);
    }

    /// Review: a retransmission was answered from the reply cache (and an in-progress
    /// request's reply was redirected) to whatever address sent it, so any process could
    /// read another client's replies by claiming its id (request numbers count from 1).
    #[test]
    fn replies_go_only_to_the_client_that_asked() {
        let mut rt = runtime();
        let mut d = ClientDriver::new(MemberId::new(0x52, 1));
        let sock = || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            s
        };
        let (client, thief) = (sock(), sock());
        let (ca, ta) = (client.local_addr().unwrap(), thief.local_addr().unwrap());
        let victim = MemberId::new(77, 1);
        let recv = |s: &std::net::UdpSocket| {
            let mut b = [0u8; 256];
            s.recv(&mut b).ok().map(|n| b[..n].to_vec())
        };
        let req = |n: u64| encode_request(victim, n, GroupId(7), &[0, 0, 0, 0]);
        // Request 1: in progress; the thief's copy must not divert the reply.
        let del = d.on_frame(&mut rt, ca, &req(1), |_| true).expect("served");
        assert!(d.on_frame(&mut rt, ta, &req(1), |_| true).is_none());
        let secret = ReplyKind::Value(b"secret".to_vec());
        assert!(d.on_handler_reply(&mut rt, victim, del.qid, &secret));
        let got = recv(&client).expect("the client gets its reply");
        assert_eq!(
            decode(&got[1..]),
            Some(Frame::Reply {
                req: 1,
                reply: secret.clone()
            })
        );
        assert_eq!(recv(&thief), None, "the thief got the in-progress reply");
        // Answered: the thief asks again for the cached reply.
        assert!(d.on_frame(&mut rt, ta, &req(1), |_| true).is_none());
        assert_eq!(recv(&thief), None, "the thief got the cached reply");
        // The real client's retransmission is still answered from the cache.
        assert!(d.on_frame(&mut rt, ca, &req(1), |_| true).is_none());
        assert!(recv(&client).is_some());
        assert_eq!(d.stats().spoofed, 2);

        // As a client: a reply from a process that is not a member is not taken.
        let (done, rx) = mpsc::channel();
        let t = Timeout::millis(60_000, TimeoutAction::Failure);
        d.query(&mut rt, GroupId(9), t, vec![0, 0, 0, 0], done);
        d.on_members(GroupId(9), vec![(MemberId::new(5, 1), ca)]);
        let forged = encode_reply(1, &ReplyKind::Value(b"forged".to_vec()));
        assert!(d.on_frame(&mut rt, ta, &forged, |_| true).is_none());
        assert!(rx.try_recv().is_err(), "a forged reply completed the query");
        assert_eq!(d.stats().spoofed, 3);
        let real = encode_reply(1, &ReplyKind::Value(b"real".to_vec()));
        assert!(d.on_frame(&mut rt, ca, &real, |_| true).is_none());
        assert_eq!(rx.try_recv().unwrap().unwrap().len(), 1);
    }

    #[test]
    fn elsewhere_frames_round_trip() {
        assert_eq!(
            decode(&encode_elsewhere(GroupId(5), 6)),
            Some(Frame::Elsewhere {
                group: GroupId(5),
                req: 6
            })
        );
        assert_eq!(decode(&encode_elsewhere(GroupId(5), 6)[..16]), None);
    }

    #[test]
    fn timeouts_follow_the_action() {
        let t = |a| Timeout::millis(10, a);
        let r = finish_one(1, MemberId(2), t(TimeoutAction::Failure), None).unwrap();
        assert!(r.is_empty());
        assert!(finish_one(1, MemberId(2), t(TimeoutAction::Abort), None).is_err());
        let r = finish_one(
            1,
            MemberId(2),
            t(TimeoutAction::Failure),
            Some(ReplyKind::Value(vec![9])),
        )
        .unwrap();
        assert_eq!(r.len(), 1);
        assert!(matches!(
            finish_one(
                1,
                MemberId(2),
                t(TimeoutAction::Failure),
                Some(ReplyKind::Abort("x".into()))
            ),
            Err(VsyncError::Query(_))
        ));
    }
}
