//! Real-process drivers of the control plane over UDP: [`MemberRuntime`] (one member
//! process: data-plane [`Engine`] + [`MemberAgent`] + an oracle socket) and [`OracleNode`]
//! (one oracle replica: [`OracleService`] + one UDP socket for peers and members).
//!
//! # Oracle datagrams
//!
//! ```text
//! to an oracle replica:  'R' sender-replica-id:u64-LE raft-bytes    (replica → replica)
//!                        'M' ToOracle::encode()                      (member → replica)
//! to a member:           FromOracle::encode()                        (replica → member)
//! ```
//!
//! A replica answers a member at the source address of that member's latest datagram (so a
//! member's oracle socket may use any port). Malformed datagrams are counted and dropped on
//! both sides; nothing here panics on input bytes.
//!
//! # Clocks
//!
//! The member side uses the engine's monotonic clock for every timestamp it passes to the
//! agent (data plane and oracle messages alike); the oracle node has its own monotonic clock.
//! Timestamps never cross a process boundary.
//!
//! # Waiting
//!
//! [`MemberRuntime::step`] parks in the engine (datagrams, protocol deadlines) for at most
//! [`RuntimeConfig::oracle_poll`], because the engine does not watch the oracle socket: oracle
//! messages therefore wait at most that long (default 5 ms, far below the 100 ms heartbeat).
//!
//! # IP multicast (Dr. Multicast)
//!
//! The oracle's Dr. Multicast mapping announces, per group, at most an IPv4 multicast address
//! (`GroupStatus.mcast`); the port is a convention shared by every member of a deployment:
//! [`RuntimeConfig::multicast_port`], which the `vsync-member` tool sets to
//! [`DEFAULT_MULTICAST_PORT`] (7300) unless told otherwise. With a port set, a member joins
//! the group's address on its data interface and the engine's address book sends the group's
//! traffic there (one datagram per message instead of one per member). When a remap moves the
//! group (the agent's `generation()` changes), the member joins the new address at once,
//! routes the group there, and leaves the old one two seconds later (peers that have not seen
//! the remap yet still send there) unless another of its groups still uses it (Dr. Multicast
//! may map several groups to one address). Without a port (the library default) every group uses unicast
//! fan-out whatever the oracle maps.
//!
//! # Oracle replica restarts
//!
//! Oracle storage is in memory. A killed replica loses its raft log and must not rejoin
//! under the same id with empty storage (it could vote twice in a term or forget entries it
//! acknowledged). With three replicas the remaining two keep a majority; a killed replica is
//! simply not restarted (replacing it needs a membership change, which is not implemented).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use vsync_dataplane::config::ProtocolConfig;
use vsync_dataplane::engine::{Engine, EngineConfig, EngineError};
use vsync_dataplane::time::MonotonicClock;
use vsync_dataplane::{GroupId, MemberId, Timestamp};

use crate::agent::{AgentConfig, AgentEvent, MemberAgent};
use crate::oracle::{Replica, ReplicaConfig};
use crate::proto::{FromOracle, ToOracle};
use crate::service::{OracleService, ServiceConfig, ServiceOutput};

/// Frame kind of a raft datagram between replicas.
pub const FRAME_RAFT: u8 = b'R';
/// Frame kind of a member's datagram to a replica.
pub const FRAME_MEMBER: u8 = b'M';
/// Frame kind of a client-request datagram between two member processes' control sockets
/// (Isis² `Client` requests, replies and redirects; the body is the application's).
pub const FRAME_CLIENT: u8 = b'C';

/// Most client-request datagrams queued before the application takes them; more are
/// dropped and counted (`RuntimeStats::client_dropped`).
const MAX_CLIENT_QUEUE: usize = 4096;

/// The conventional port of the groups' IP-multicast addresses (see the module docs).
pub const DEFAULT_MULTICAST_PORT: u16 = 7300;

/// How long a member stays joined to a multicast address after a remap moved its groups
/// away, so datagrams peers still send there (before they see the remap) are received.
const MULTICAST_LEAVE_GRACE: Duration = Duration::from_secs(2);

/// Largest oracle datagram handled (UDP's limit).
const MAX_DATAGRAM: usize = 65536;

/// One datagram received by an oracle replica, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OracleFrame<'a> {
    /// Raft bytes from replica `from`.
    Raft {
        /// The sending replica.
        from: u64,
        /// Its raft message.
        bytes: &'a [u8],
    },
    /// A member's message.
    Member(ToOracle),
}

/// Frames a member message for a replica.
pub fn encode_member_frame(msg: &ToOracle) -> Vec<u8> {
    let body = msg.encode();
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(FRAME_MEMBER);
    out.extend_from_slice(&body);
    out
}

/// Frames a raft message from replica `from`.
pub fn encode_raft_frame(from: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 9);
    out.push(FRAME_RAFT);
    out.extend_from_slice(&from.to_le_bytes());
    out.extend_from_slice(bytes);
    out
}

/// Decodes a datagram received by a replica; the error says why it is malformed.
pub fn decode_oracle_frame(datagram: &[u8]) -> Result<OracleFrame<'_>, String> {
    match datagram.split_first() {
        Some((&FRAME_RAFT, rest)) if rest.len() >= 8 => {
            let (id, bytes) = rest.split_at(8);
            let from = u64::from_le_bytes(id.try_into().map_err(|_| "short id".to_string())?);
            Ok(OracleFrame::Raft { from, bytes })
        }
        Some((&FRAME_RAFT, _)) => Err("raft frame shorter than its sender id".into()),
        Some((&FRAME_MEMBER, rest)) => ToOracle::decode(rest)
            .map(OracleFrame::Member)
            .map_err(|e| format!("member frame: {e}")),
        Some((k, _)) => Err(format!("unknown frame kind {k:#04x}")),
        None => Err("empty datagram".into()),
    }
}

/// Why a runtime could not be created or driven.
#[derive(Debug)]
pub enum RuntimeError {
    /// The data-plane engine failed.
    Engine(EngineError),
    /// A socket operation failed.
    Io(io::Error),
    /// The configuration is unusable; the message says why.
    Config(String),
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeError::Engine(e) => write!(f, "engine: {e}"),
            RuntimeError::Io(e) => write!(f, "oracle socket: {e}"),
            RuntimeError::Config(m) => write!(f, "configuration: {m}"),
        }
    }
}

impl std::error::Error for RuntimeError {}

impl From<EngineError> for RuntimeError {
    fn from(e: EngineError) -> Self {
        RuntimeError::Engine(e)
    }
}

impl From<io::Error> for RuntimeError {
    fn from(e: io::Error) -> Self {
        RuntimeError::Io(e)
    }
}

/// Everything a [`MemberRuntime`] needs.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// This incarnation.
    pub me: MemberId,
    /// The data plane's unicast address (a specific IPv4 address, never `0.0.0.0`: it is also
    /// the multicast interface). Port 0 picks a free one.
    pub data_addr: SocketAddrV4,
    /// The oracle replicas: id and address.
    pub replicas: Vec<(u64, SocketAddr)>,
    /// Agent timing (heartbeat, lease) and bounds.
    pub agent: AgentConfig,
    /// Data-plane protocol parameters.
    pub protocol: ProtocolConfig,
    /// Engine parameters; `unicast_bind` and `multicast_interface` are overridden from
    /// `data_addr`.
    pub engine: EngineConfig,
    /// Port of the groups' IP-multicast addresses. `None` (the default): always unicast
    /// fan-out, even when the oracle maps a group to a multicast address.
    pub multicast_port: Option<u16>,
    /// Seed of the endpoint's random choices.
    pub seed: u64,
    /// Longest one [`MemberRuntime::step`] parks in the engine before looking at the oracle
    /// socket again.
    pub oracle_poll: Duration,
}

impl RuntimeConfig {
    /// Defaults for incarnation `me` at `data_addr` with the oracle `replicas`.
    pub fn new(me: MemberId, data_addr: SocketAddrV4, replicas: Vec<(u64, SocketAddr)>) -> Self {
        RuntimeConfig {
            me,
            data_addr,
            replicas,
            agent: AgentConfig::default(),
            protocol: ProtocolConfig::default(),
            engine: EngineConfig::default(),
            multicast_port: None,
            seed: me.0 ^ 0x6d65_6d62_6572,
            oracle_poll: Duration::from_millis(5),
        }
    }
}

/// Counters of a runtime's oracle link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuntimeStats {
    /// Datagrams received on the oracle socket.
    pub oracle_in: u64,
    /// Datagrams sent to replicas.
    pub oracle_out: u64,
    /// Received datagrams that did not decode as [`FromOracle`].
    pub malformed: u64,
    /// Received datagrams from an address that is not a replica's.
    pub unknown_source: u64,
    /// Client-request datagrams received (see [`FRAME_CLIENT`]).
    pub client_in: u64,
    /// Client-request datagrams dropped because the queue was full.
    pub client_dropped: u64,
    /// Messages for a replica id with no configured address.
    pub no_route: u64,
    /// Oracle sends the kernel refused.
    pub send_errors: u64,
    /// Address-book refreshes.
    pub refreshes: u64,
    /// IP-multicast addresses joined (each join of a new address counts once).
    pub multicast_joins: u64,
    /// IP-multicast addresses left (remapped away or no group uses them any more).
    pub multicast_leaves: u64,
}

/// A member process's driver. See the module docs.
pub struct MemberRuntime {
    engine: Engine,
    agent: MemberAgent,
    oracle: UdpSocket,
    replicas: BTreeMap<u64, SocketAddr>,
    replica_addrs: BTreeSet<SocketAddr>,
    multicast_port: Option<u16>,
    oracle_poll: Duration,
    seen_generation: Option<u64>,
    routed: BTreeMap<GroupId, Option<SocketAddrV4>>,
    leaving: BTreeMap<SocketAddrV4, Timestamp>,
    buf: Vec<u8>,
    stats: RuntimeStats,
    /// Client-request datagrams received, oldest first: (source, body).
    client_in: VecDeque<(SocketAddr, Vec<u8>)>,
}

impl fmt::Debug for MemberRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemberRuntime")
            .field("agent", &self.agent)
            .field("engine", &self.engine)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl MemberRuntime {
    /// Opens the engine (bound to `cfg.data_addr`) and the oracle socket (same IP, any port)
    /// and creates the agent. Must be called on the thread that will call
    /// [`MemberRuntime::step`] (the engine is thread-bound).
    pub fn new(cfg: RuntimeConfig) -> Result<MemberRuntime, RuntimeError> {
        let ip = *cfg.data_addr.ip();
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(RuntimeError::Config(format!(
                "data address {} must be a specific unicast IPv4 address",
                cfg.data_addr
            )));
        }
        if cfg.replicas.is_empty() {
            return Err(RuntimeError::Config("no oracle replica addresses".into()));
        }
        let mut engine_cfg = cfg.engine.clone();
        engine_cfg.unicast_bind = cfg.data_addr;
        engine_cfg.multicast_interface = ip;
        let engine = Engine::new(engine_cfg)?;
        let oracle = UdpSocket::bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
        oracle.set_nonblocking(true)?;
        let local = SocketAddr::V4(engine.local_addr());
        let now = engine.clock().now();
        let agent = MemberAgent::new(
            cfg.me,
            Some(local),
            cfg.agent,
            cfg.protocol,
            cfg.seed,
            cfg.replicas.iter().map(|(id, _)| *id).collect(),
            now,
        );
        let replicas: BTreeMap<u64, SocketAddr> = cfg.replicas.iter().copied().collect();
        let replica_addrs = replicas.values().copied().collect();
        Ok(MemberRuntime {
            engine,
            agent,
            oracle,
            replicas,
            replica_addrs,
            multicast_port: cfg.multicast_port,
            oracle_poll: cfg.oracle_poll.max(Duration::from_micros(100)),
            seen_generation: None,
            routed: BTreeMap::new(),
            leaving: BTreeMap::new(),
            buf: vec![0u8; MAX_DATAGRAM],
            stats: RuntimeStats::default(),
            client_in: VecDeque::new(),
        })
    }

    /// The agent (application API: create, join, send, ordered_send, ...).
    pub fn agent(&self) -> &MemberAgent {
        &self.agent
    }

    /// The agent, mutably (application API).
    pub fn agent_mut(&mut self) -> &mut MemberAgent {
        &mut self.agent
    }

    /// The engine (stats, local address).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The data plane's bound address.
    pub fn data_addr(&self) -> SocketAddrV4 {
        self.engine.local_addr()
    }

    /// The oracle socket's bound address.
    pub fn oracle_addr(&self) -> io::Result<SocketAddr> {
        self.oracle.local_addr()
    }

    /// The current time on the clock the agent runs on.
    pub fn now(&self) -> Timestamp {
        self.engine.clock().now()
    }

    /// Oracle-link counters.
    pub fn stats(&self) -> &RuntimeStats {
        &self.stats
    }

    /// The IP-multicast address (and port) the address book currently sends `group`'s traffic
    /// to; `None` when the group uses unicast fan-out or is not routed.
    pub fn multicast_route(&self, group: GroupId) -> Option<SocketAddrV4> {
        self.routed.get(&group).copied().flatten()
    }

    /// One duty cycle: oracle datagrams in, address book refreshed, one engine cycle (parking
    /// at most `max_wait`, capped by [`RuntimeConfig::oracle_poll`]), oracle messages out,
    /// and the agent's events appended to `events`. Returns the datagrams moved.
    pub fn step(
        &mut self,
        max_wait: Duration,
        events: &mut Vec<AgentEvent>,
    ) -> Result<usize, RuntimeError> {
        let mut work = self.receive_oracle();
        self.send_oracle();
        self.refresh_book()?;
        work += self
            .engine
            .poll(&mut self.agent, max_wait.min(self.oracle_poll))?;
        work += self.send_oracle();
        self.refresh_book()?;
        while let Some(e) = self.agent.poll_event() {
            events.push(e);
        }
        Ok(work)
    }

    fn receive_oracle(&mut self) -> usize {
        let mut n = 0;
        let mut errors = 0;
        loop {
            match self.oracle.recv_from(&mut self.buf) {
                Ok((len, from)) => {
                    n += 1;
                    self.stats.oracle_in += 1;
                    if !self.replica_addrs.contains(&from) {
                        if len > 1 && self.buf[0] == FRAME_CLIENT {
                            self.stats.client_in += 1;
                            if self.client_in.len() >= MAX_CLIENT_QUEUE {
                                self.stats.client_dropped += 1;
                            } else {
                                self.client_in.push_back((from, self.buf[1..len].to_vec()));
                            }
                        } else {
                            self.stats.unknown_source += 1;
                        }
                        continue;
                    }
                    match FromOracle::decode(&self.buf[..len]) {
                        Ok(msg) => {
                            let now = self.engine.clock().now();
                            self.agent.handle_oracle(now, msg);
                        }
                        Err(_) => self.stats.malformed += 1,
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP errors (port unreachable of a dead replica) surface here on Linux.
                Err(_) => {
                    self.stats.send_errors += 1;
                    errors += 1;
                    if errors > 64 {
                        break;
                    }
                }
            }
        }
        n
    }

    fn send_oracle(&mut self) -> usize {
        let mut n = 0;
        while let Some((replica, msg)) = self.agent.poll_oracle() {
            let Some(addr) = self.replicas.get(&replica) else {
                self.stats.no_route += 1;
                continue;
            };
            match self.oracle.send_to(&encode_member_frame(&msg), addr) {
                Ok(_) => {
                    n += 1;
                    self.stats.oracle_out += 1;
                }
                Err(_) => self.stats.send_errors += 1,
            }
        }
        n
    }

    /// The next client-request datagram received on the control socket: (source, body).
    pub fn poll_client(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.client_in.pop_front()
    }

    /// Sends a client-request datagram (`body` framed as [`FRAME_CLIENT`]) from the control
    /// socket to another process's control socket.
    pub fn send_client(&mut self, to: SocketAddr, body: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(body.len() + 1);
        frame.push(FRAME_CLIENT);
        frame.extend_from_slice(body);
        self.oracle.send_to(&frame, to).map(|_| ())
    }

    /// Leaves the multicast addresses whose grace period ended.
    fn expire_leaves(&mut self) {
        if self.leaving.is_empty() {
            return;
        }
        let now = self.engine.clock().now();
        let due: Vec<SocketAddrV4> = self
            .leaving
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(a, _)| *a)
            .collect();
        for addr in due {
            self.leaving.remove(&addr);
            let _ = self.engine.leave_multicast(addr);
            self.stats.multicast_leaves += 1;
        }
    }

    /// Mirrors the agent's addresses and views into the engine's address book when its
    /// generation moved.
    fn refresh_book(&mut self) -> Result<(), RuntimeError> {
        self.expire_leaves();
        let generation = self.agent.generation();
        if self.seen_generation == Some(generation) {
            return Ok(());
        }
        self.seen_generation = Some(generation);
        self.stats.refreshes += 1;
        let me = self.agent.me();
        let mut routes: BTreeMap<GroupId, (Option<SocketAddrV4>, Vec<MemberId>)> = BTreeMap::new();
        for (g, v) in self.agent.views() {
            let mcast = match (self.agent.multicast_addr(g), self.multicast_port) {
                (Some(ip), Some(port)) => Some(SocketAddrV4::new(ip, port)),
                _ => None,
            };
            routes.insert(g, (mcast, v.members.clone()));
        }
        let book = self.engine.address_book();
        book.set_local(me);
        for (m, a) in self.agent.addresses() {
            book.set_member(*m, *a);
        }
        // Every address routed before this refresh (groups gone included).
        let mapped: BTreeSet<SocketAddrV4> = self.routed.values().flatten().copied().collect();
        // Groups no longer here: forget the route.
        let gone: Vec<GroupId> = self
            .routed
            .keys()
            .filter(|g| !routes.contains_key(g))
            .copied()
            .collect();
        for g in gone {
            self.routed.remove(&g);
            self.engine.address_book().remove_group(g);
        }
        let before: BTreeSet<SocketAddrV4> = mapped
            .union(&self.leaving.keys().copied().collect())
            .copied()
            .collect();
        let wanted: BTreeSet<SocketAddrV4> =
            routes.values().filter_map(|(mcast, _)| *mcast).collect();
        // Join new addresses before routing to them (so nothing sent there is missed by us).
        for addr in wanted.difference(&before) {
            // (An address still in its leave grace period is joined already.)
            self.engine.join_multicast(*addr)?;
            self.stats.multicast_joins += 1;
        }
        for (g, (mcast, members)) in routes {
            self.routed.insert(g, mcast);
            match mcast {
                Some(addr) => self.engine.address_book().set_group_multicast(g, addr),
                None => self.engine.address_book().set_group_unicast(g, members),
            }
        }
        // Addresses none of our groups maps to any more (a shared address stays) are left after
        // a grace period: peers that have not seen the remap yet still send there.
        let now = self.engine.clock().now();
        for addr in mapped.difference(&wanted) {
            self.leaving.insert(*addr, now + MULTICAST_LEAVE_GRACE);
        }
        for addr in &wanted {
            self.leaving.remove(addr);
        }
        Ok(())
    }
}

/// Counters of an oracle node's socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OracleNodeStats {
    /// Datagrams received.
    pub received: u64,
    /// Datagrams sent.
    pub sent: u64,
    /// Received datagrams that did not decode.
    pub malformed: u64,
    /// Raft frames from an unknown replica id or address.
    pub unknown_peer: u64,
    /// Messages to a member whose address is not known yet (it never wrote to this replica).
    pub unknown_member: u64,
    /// Sends the kernel refused.
    pub send_errors: u64,
}

/// A one-line snapshot of an oracle node, for status output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OracleStatus {
    /// Replica id.
    pub id: u64,
    /// Whether it leads.
    pub leader: bool,
    /// The leader it believes in.
    pub leader_hint: Option<u64>,
    /// Raft term.
    pub term: u64,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Members it has an address for.
    pub members: usize,
    /// Socket counters.
    pub stats: OracleNodeStats,
}

impl fmt::Display for OracleStatus {
    /// `vsync-oracle id=1 leader=true leader_hint=1 term=2 commit=40 applied=40 members=5
    /// malformed=0 unknown_member=0 send_errors=0`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "vsync-oracle id={} leader={} leader_hint={} term={} commit={} applied={} members={} \
             received={} sent={} malformed={} unknown_member={} send_errors={}",
            self.id,
            self.leader,
            self.leader_hint.map_or(0, |l| l),
            self.term,
            self.commit,
            self.applied,
            self.members,
            self.stats.received,
            self.stats.sent,
            self.stats.malformed,
            self.stats.unknown_member,
            self.stats.send_errors
        )
    }
}

/// One oracle replica on a UDP socket. See the module docs.
pub struct OracleNode {
    id: u64,
    service: OracleService,
    socket: UdpSocket,
    peers: BTreeMap<u64, SocketAddr>,
    members: BTreeMap<MemberId, SocketAddr>,
    clock: MonotonicClock,
    blocking: bool,
    buf: Vec<u8>,
    stats: OracleNodeStats,
}

impl fmt::Debug for OracleNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OracleNode")
            .field("id", &self.id)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl OracleNode {
    /// Replica `id` of the cluster `peers` (every replica's id and address, this one included;
    /// a single entry = the embedded one-replica oracle), listening on `listen`.
    pub fn new(
        id: u64,
        listen: SocketAddr,
        peers: Vec<(u64, SocketAddr)>,
        cfg: ServiceConfig,
        seed: u64,
    ) -> Result<OracleNode, RuntimeError> {
        Self::with_data_dir(id, listen, peers, cfg, seed, None)
    }

    /// Like [`OracleNode::new`], but with `data_dir` the replica's raft state is durable in
    /// that directory ([`crate::oracle::durable`]): created if missing, restarted from if
    /// present, so a killed replica can be restarted under the same id.
    pub fn with_data_dir(
        id: u64,
        listen: SocketAddr,
        peers: Vec<(u64, SocketAddr)>,
        cfg: ServiceConfig,
        seed: u64,
        data_dir: Option<&std::path::Path>,
    ) -> Result<OracleNode, RuntimeError> {
        let ids: Vec<u64> = peers.iter().map(|(i, _)| *i).collect();
        let rcfg = if ids.len() == 1 && ids[0] == id && id == 1 {
            ReplicaConfig::single()
        } else {
            ReplicaConfig::new(id, ids, seed)
        };
        let replica = match data_dir {
            None => Replica::new(rcfg).map_err(|e| RuntimeError::Config(format!("{e:?}")))?,
            Some(dir) => crate::oracle::durable::open_replica(rcfg, dir)
                .map_err(|e| RuntimeError::Config(e.to_string()))?,
        };
        let socket = UdpSocket::bind(listen)?;
        socket.set_nonblocking(true)?;
        let clock = MonotonicClock::new();
        let service = OracleService::new(replica, cfg, clock.now());
        Ok(OracleNode {
            id,
            service,
            socket,
            peers: peers.into_iter().filter(|(i, _)| *i != id).collect(),
            members: BTreeMap::new(),
            clock,
            blocking: false,
            buf: vec![0u8; MAX_DATAGRAM],
            stats: OracleNodeStats::default(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The service (state, raft status).
    pub fn service(&self) -> &OracleService {
        &self.service
    }

    /// A status snapshot.
    pub fn status(&self) -> OracleStatus {
        let r = self.service.replica();
        OracleStatus {
            id: self.id,
            leader: self.service.is_leader(),
            leader_hint: r.leader_hint(),
            term: r.term(),
            commit: r.commit_index(),
            applied: r.applied_index(),
            members: self.members.len(),
            stats: self.stats,
        }
    }

    /// One cycle: waits up to `max_wait` (less if a timer is due) for a datagram, handles
    /// every datagram queued, runs due timers, sends all output. Returns datagrams handled.
    pub fn step(&mut self, max_wait: Duration) -> io::Result<usize> {
        let now = self.clock.now();
        let due = self.service.poll_timeout();
        let wait = max_wait.min(due.saturating_since(now));
        let mut n = 0;
        if !wait.is_zero() {
            // One blocking receive with a timeout, then drain without blocking.
            self.set_blocking(true)?;
            self.socket.set_read_timeout(Some(wait))?;
            n += self.receive_one()?;
        }
        self.set_blocking(false)?;
        loop {
            let got = self.receive_one()?;
            if got == 0 {
                break;
            }
            n += got;
            if n >= 4096 {
                break;
            }
        }
        let now = self.clock.now();
        if self.service.poll_timeout() <= now {
            self.service.handle_timeout(now);
        }
        self.flush();
        Ok(n)
    }

    fn set_blocking(&mut self, blocking: bool) -> io::Result<()> {
        if self.blocking != blocking {
            self.socket.set_nonblocking(!blocking)?;
            self.blocking = blocking;
        }
        Ok(())
    }

    /// Receives and handles at most one datagram; 0 when none arrived.
    fn receive_one(&mut self) -> io::Result<usize> {
        let (len, from) = match self.socket.recv_from(&mut self.buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(0)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(0),
            // ICMP errors from earlier sends (a dead peer or member) surface here: not fatal.
            Err(_) => {
                self.stats.send_errors += 1;
                return Ok(1);
            }
        };
        self.stats.received += 1;
        let now = self.clock.now();
        match decode_oracle_frame(&self.buf[..len]) {
            Ok(OracleFrame::Raft { from: peer, bytes }) => {
                if self.peers.get(&peer) == Some(&from) {
                    self.service.handle_peer(now, bytes);
                } else {
                    self.stats.unknown_peer += 1;
                }
            }
            Ok(OracleFrame::Member(ToOracle::Lookup { member, group })) => {
                // A client's lookup: answered here, where the members' control-socket
                // addresses (their client-request endpoints) are known. The answer goes
                // back to `from`; the claimed `member` is not recorded: any process may look
                // a group up, and recording it would let a lookup naming a member divert that
                // member's oracle traffic (and clients' requests) to the asker, and let
                // lookups with made-up ids grow this map without bound.
                let _ = member;
                let (view, members) = match self.service.replica().state().view(group) {
                    Some(v) => (
                        v.id,
                        v.members
                            .iter()
                            .filter_map(|m| self.members.get(m).map(|a| (*m, *a)))
                            .collect(),
                    ),
                    None => (vsync_dataplane::ViewId(0), Vec::new()),
                };
                let reply = FromOracle::Members {
                    group,
                    view,
                    members,
                };
                match self.socket.send_to(&reply.encode(), from) {
                    Ok(_) => self.stats.sent += 1,
                    Err(_) => self.stats.send_errors += 1,
                }
            }
            Ok(OracleFrame::Member(msg)) => {
                self.members.insert(msg.member(), from);
                self.service.handle_member(now, msg);
            }
            Err(_) => self.stats.malformed += 1,
        }
        self.flush();
        Ok(1)
    }

    fn flush(&mut self) {
        while let Some(out) = self.service.poll_output() {
            let (bytes, to) = match out {
                ServiceOutput::ToReplica(peer, bytes) => {
                    let Some(addr) = self.peers.get(&peer) else {
                        self.stats.unknown_peer += 1;
                        continue;
                    };
                    (encode_raft_frame(self.id, &bytes), *addr)
                }
                ServiceOutput::ToMember(m, msg) => {
                    let Some(addr) = self.members.get(&m) else {
                        self.stats.unknown_member += 1;
                        continue;
                    };
                    (msg.encode(), *addr)
                }
            };
            match self.socket.send_to(&bytes, to) {
                Ok(_) => self.stats.sent += 1,
                Err(_) => self.stats.send_errors += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle::{group_id, Signature};
    use std::net::Ipv4Addr;
    use std::time::Instant;

    #[test]
    fn frames_round_trip_and_reject_garbage() {
        let msg = ToOracle::Hello {
            member: MemberId::new(3, 1),
            addr: Some("127.0.0.1:9".parse().unwrap()),
        };
        let f = encode_member_frame(&msg);
        assert_eq!(decode_oracle_frame(&f), Ok(OracleFrame::Member(msg)));
        let r = encode_raft_frame(7, b"xyz");
        assert_eq!(
            decode_oracle_frame(&r),
            Ok(OracleFrame::Raft {
                from: 7,
                bytes: b"xyz"
            })
        );
        // A heartbeat with the smallest possible entry (12 bytes).
        let hb = ToOracle::Heartbeat {
            member: MemberId::new(1, 1),
            groups: vec![crate::proto::GroupProgress {
                group: GroupId(u64::MAX),
                view: vsync_dataplane::ViewId(1),
                round: 0,
                phase: crate::proto::FlushPhase::Idle,
                sent: 0,
                awaiting_state: false,
                mcast: None,
            }],
        };
        assert_eq!(
            decode_oracle_frame(&encode_member_frame(&hb)),
            Ok(OracleFrame::Member(hb))
        );
        for bad in [
            &b""[..],
            b"R123",
            b"Q",
            b"M",
            b"M\x01\xff\xff",
            b"M\x01\x02\x01\x05",
        ] {
            assert!(decode_oracle_frame(bad).is_err(), "{bad:?}");
        }
    }

    /// Review: a lookup (which any process may send) used to record its claimed member id
    /// with the asker's address, redirecting that member's oracle traffic to the asker.
    #[test]
    fn lookups_do_not_rebind_member_addresses() {
        let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        let probe = UdpSocket::bind(any).unwrap();
        let oracle_addr = probe.local_addr().unwrap();
        drop(probe);
        let mut oracle = OracleNode::new(
            1,
            oracle_addr,
            vec![(1, oracle_addr)],
            ServiceConfig::default(),
            1,
        )
        .unwrap();
        let asker = UdpSocket::bind(any).unwrap();
        asker
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        for p in 1..=50u32 {
            let lookup = ToOracle::Lookup {
                member: MemberId::new(p, 1),
                group: group_id("svc"),
            };
            asker
                .send_to(&encode_member_frame(&lookup), oracle_addr)
                .unwrap();
        }
        let mut answers = 0;
        let t = Instant::now();
        while answers < 50 && t.elapsed() < Duration::from_secs(10) {
            oracle.step(Duration::from_millis(5)).unwrap();
            let mut b = [0u8; 512];
            while let Ok(n) = asker.recv(&mut b) {
                if matches!(FromOracle::decode(&b[..n]), Ok(FromOracle::Members { .. })) {
                    answers += 1;
                }
            }
        }
        assert_eq!(answers, 50, "every lookup is answered");
        assert_eq!(oracle.status().members, 0, "lookups registered members");
    }

    /// One embedded oracle and three members on 127.0.0.1, all driven from this thread:
    /// create, join, OrderedSends, one total order.
    #[test]
    fn loopback_group_delivers_in_one_order() {
        let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        let probe = UdpSocket::bind(any).unwrap();
        let oracle_addr = probe.local_addr().unwrap();
        drop(probe);
        let mut oracle = OracleNode::new(
            1,
            oracle_addr,
            vec![(1, oracle_addr)],
            ServiceConfig::default(),
            1,
        )
        .unwrap();
        let mut members: Vec<MemberRuntime> = (1..=3u32)
            .map(|p| {
                let mut cfg = RuntimeConfig::new(
                    MemberId::new(p, 1),
                    SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
                    vec![(1, oracle_addr)],
                );
                cfg.engine.backend = vsync_dataplane::engine::BackendChoice::Portable;
                cfg.engine.socket_buffer_bytes = 1 << 20;
                cfg.oracle_poll = Duration::from_millis(1);
                MemberRuntime::new(cfg).unwrap()
            })
            .collect();
        let g = group_id("rt");
        let sig = Signature::from_text("rt");
        let mut asked = [false; 3];
        let mut sent = [0u64; 3];
        let mut orders: Vec<Vec<(u32, u64)>> = vec![Vec::new(); 3];
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let per = 20u64;
        while std::time::Instant::now() < deadline {
            oracle.step(Duration::ZERO).unwrap();
            for (i, m) in members.iter_mut().enumerate() {
                let mut ev = Vec::new();
                m.step(Duration::ZERO, &mut ev).unwrap();
                for e in ev {
                    match e {
                        AgentEvent::Deliver { payload, .. } => {
                            let p = u32::from_le_bytes(payload[..4].try_into().unwrap());
                            let c = u64::from_le_bytes(payload[4..12].try_into().unwrap());
                            orders[i].push((p, c));
                        }
                        AgentEvent::MakeCheckpoint { group, view } => {
                            m.agent_mut().send_checkpoint(group, view, &[0u8; 8]);
                        }
                        AgentEvent::Reply { result: Err(_), .. } => asked[i] = false,
                        _ => {}
                    }
                }
                let a = m.agent_mut();
                if !asked[i] && a.is_registered() && (i == 0 || asked[0]) {
                    asked[i] = true;
                    if i == 0 {
                        a.create("rt", sig.clone());
                    } else {
                        a.join("rt", sig.clone());
                    }
                }
                let all_in = a.view(g).is_some_and(|v| v.members.len() == 3);
                if all_in && sent[i] < per {
                    let mut payload = vec![0u8; 40];
                    payload[..4].copy_from_slice(&(i as u32 + 1).to_le_bytes());
                    payload[4..12].copy_from_slice(&(sent[i] + 1).to_le_bytes());
                    if a.ordered_send(g, &payload).is_ok() {
                        sent[i] += 1;
                    }
                }
            }
            if orders.iter().all(|o| o.len() as u64 == 3 * per) {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        for (i, o) in orders.iter().enumerate() {
            assert_eq!(o.len() as u64, 3 * per, "member {} delivered {o:?}", i + 1);
        }
        assert_eq!(orders[0], orders[1]);
        assert_eq!(orders[0], orders[2]);
        for m in &members {
            assert_eq!(m.stats().malformed, 0);
        }
    }
}
