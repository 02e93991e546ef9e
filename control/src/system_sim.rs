//! The whole-system deterministic simulator: oracle replicas ([`OracleService`] over raft),
//! member processes ([`MemberAgent`] with their real data-plane endpoints) and a faulty
//! network, all driven in virtual time from one seed, followed by a checker of the
//! virtual-synchrony invariants.
//!
//! Faults: loss, duplication, reordering (random delay), member crashes, oracle-leader
//! crashes and restarts, a partition cutting a minority of members (and possibly oracle
//! replicas) off and healing it, late joiners and graceful leaves. Workload: every member
//! streams Sends and OrderedSends (some fragmented) once it has a view; rank 0 hands joiners
//! its state (a hash chain of the OrderedSends it delivered).
//!
//! [`check`] verifies: identical view sequences (same id ⇒ same members); the same message
//! set per view among members that install the next view; FIFO per sender; one total order
//! of OrderedSends across all members and views; no duplicates; self-delivery; every message
//! accepted from a member alive at the end delivered to every member alive at the end that
//! was in its view; nothing delivered by a poisoned or minority member after its exclusion;
//! joiners' state equals the group's at every view; and that the system converged after the
//! faults stopped. The same seed replays the same run exactly.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use vsync_dataplane::config::ProtocolConfig;
use vsync_dataplane::protocol::{Destination, Protocol};
use vsync_dataplane::rng::Rng;
use vsync_dataplane::{MemberId, Timestamp, ViewId};

use crate::agent::{AgentConfig, AgentEvent, MemberAgent, MsgKind};
use crate::fd::FdConfig;
use crate::oracle::{group_id, OracleStorage, Replica, ReplicaConfig, Signature};
use crate::proto::{FromOracle, ToOracle};
use crate::service::{OracleService, ServiceConfig, ServiceOutput};

/// The simulated group's name.
pub const GROUP: &str = "sim";

/// One simulated run's parameters (all derived from the seed by [`SimConfig::swarm`]).
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed of everything.
    pub seed: u64,
    /// Oracle replicas (1 = embedded, 3 = production).
    pub replicas: usize,
    /// Member processes.
    pub members: usize,
    /// Members that join only after the start.
    pub late_joiners: usize,
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Probability a datagram is duplicated.
    pub dup: f64,
    /// Largest extra delay (reordering), microseconds.
    pub jitter_us: u64,
    /// Members crashed during the run.
    pub crashes: usize,
    /// Crash the oracle leader once (and restart it later).
    pub crash_leader: bool,
    /// Cut a minority of members (and one replica) off for a while, then heal.
    pub partition: bool,
    /// Members that leave gracefully.
    pub leaves: usize,
    /// Messages each member tries to send.
    pub messages: usize,
    /// Probability a message is an OrderedSend (else a Send).
    pub ordered_share: f64,
    /// Probability a message is large (fragmented).
    pub large_share: f64,
    /// Faults happen in `[0, active)`; afterwards the network heals and the run must converge.
    pub active: Duration,
    /// One-way network latency before jitter, microseconds.
    pub latency_us: u64,
    /// Failure detection, lease and raft timing.
    pub timing: SimTiming,
    /// If set, exactly this member crashes at this time (benchmarks), instead of the random
    /// crash plan.
    pub planned_crash: Option<(u32, Duration)>,
    /// Dr. Multicast on: the oracle maps the group onto an IP-multicast address (repairs are
    /// then multicast) and remaps every 100 ms from measured traffic.
    pub multicast: bool,
}

/// Timing of the control plane inside a simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimTiming {
    /// Member heartbeats to the oracle, and the oracle's failure detector.
    pub fd: FdConfig,
    /// Member lease (silence from the oracle before pausing deliveries).
    pub lease: Duration,
    /// Raft tick.
    pub tick: Duration,
}

impl SimTiming {
    /// Scaled-down timing so a run covers several failure detections in about a virtual
    /// second: heartbeats 20 ms, timeout 200 ms, lease 100 ms, raft tick 10 ms.
    pub fn fast() -> Self {
        SimTiming {
            fd: FdConfig {
                interval: ms(20),
                timeout: ms(200),
            },
            lease: ms(100),
            tick: ms(10),
        }
    }

    /// The data-centre defaults: heartbeats 100 ms, timeout 1 s, lease 500 ms, raft tick 50 ms.
    pub fn defaults() -> Self {
        SimTiming {
            fd: FdConfig::default(),
            lease: AgentConfig::default().lease,
            tick: ServiceConfig::default().tick,
        }
    }
}

impl SimConfig {
    /// A random configuration drawn from `seed`.
    pub fn swarm(seed: u64) -> Self {
        let mut r = Rng::new(seed ^ 0x005e_ed0f_5157);
        let members = 3 + r.below(3) as usize; // 3..=5
        let replicas = if r.chance(0.5) { 1 } else { 3 };
        let crashes = r.below(if members >= 4 { 3 } else { 2 }) as usize;
        SimConfig {
            seed,
            replicas,
            members,
            late_joiners: r.below(2) as usize,
            loss: [0.0, 0.01, 0.05][r.below(3) as usize],
            dup: [0.0, 0.01][r.below(2) as usize],
            jitter_us: [0, 200, 2000][r.below(3) as usize],
            crashes,
            crash_leader: replicas == 3 && r.chance(0.3),
            partition: members >= 4 && r.chance(0.3),
            leaves: usize::from(r.chance(0.2)),
            messages: 10 + r.below(30) as usize,
            ordered_share: [0.0, 0.5, 1.0][r.below(3) as usize],
            large_share: [0.0, 0.05][r.below(2) as usize],
            active: Duration::from_millis(400 + r.below(600)),
            latency_us: 30,
            timing: SimTiming::fast(),
            planned_crash: None,
            multicast: r.chance(0.5),
        }
    }
}

/// What one run produced (for the checker and for reports).
#[derive(Clone, Debug, Default)]
pub struct SimOutcome {
    /// Per member process: everything it observed, in order.
    pub logs: BTreeMap<u32, MemberLog>,
    /// Virtual time at the end.
    pub end: Duration,
    /// Human-readable notes of the faults injected.
    pub notes: Vec<String>,
    /// Views installed per process (for reports).
    pub views_installed: u64,
    /// Messages delivered in total.
    pub delivered: u64,
    /// Per crashed or excluded process: when the oracle first decided it failed.
    pub decided: BTreeMap<u32, Duration>,
}

/// One member's observations.
#[derive(Clone, Debug, Default)]
pub struct MemberLog {
    /// `(time, view)` of each view installed.
    pub views: Vec<(Duration, ViewId, Vec<MemberId>)>,
    /// State digest at each view installed (after a checkpoint load for joiners).
    pub states: Vec<(ViewId, u64)>,
    /// Deliveries: `(time, view, kind, message id)`.
    pub delivered: Vec<(Duration, ViewId, MsgKind, MsgId)>,
    /// Messages accepted by the data plane: `(view, kind, id)`.
    pub sent: Vec<(ViewId, MsgKind, MsgId)>,
    /// Crashed (stopped) at this time.
    pub crashed: Option<Duration>,
    /// Told it was poisoned at this time.
    pub poisoned: Option<Duration>,
    /// Left gracefully (saw `Gone`) at this time.
    pub gone: Option<Duration>,
    /// The view from which this member holds the group's state, if it joined an existing
    /// group (loaded a checkpoint made at that view, or restarted the state there).
    pub state_from: Option<ViewId>,
    /// When and at which view this member restarted the group's state because every holder
    /// had failed (`AgentEvent::StateLost`).
    pub state_lost: Option<(Duration, ViewId)>,
    /// Its incarnation.
    pub member: MemberId,
}

/// A message's identity: `(sender process, per-sender counter)`.
pub type MsgId = (u32, u64);

#[derive(Clone, Debug)]
enum Packet {
    Data { from: MemberId, bytes: Vec<u8> },
    Oracle(ToOracle),
    Member(FromOracle),
    Raft(Vec<u8>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    Replica(u64),
    Process(u32),
}

struct Member {
    agent: Option<MemberAgent>,
    /// Create the group on the next attempt (it does not exist) rather than join it.
    create_next: bool,
    state: u64,
    next_msg: u64,
    next_send: Timestamp,
    joined_requested: bool,
    join_at: Timestamp,
    leave_at: Option<Timestamp>,
    crash_at: Option<Timestamp>,
    side_b: bool,
}

struct ReplicaSlot {
    service: Option<OracleService>,
    storage: Option<OracleStorage>,
    config: ReplicaConfig,
    restart_at: Option<Timestamp>,
    side_b: bool,
}

struct Sim {
    cfg: SimConfig,
    rng: Rng,
    now: Timestamp,
    queue: BinaryHeap<Reverse<(Timestamp, u64, Node)>>,
    payloads: BTreeMap<u64, Packet>,
    next_id: u64,
    members: BTreeMap<u32, Member>,
    replicas: BTreeMap<u64, ReplicaSlot>,
    partitioned: bool,
    partition_at: Option<Timestamp>,
    heal_at: Option<Timestamp>,
    leader_crash_at: Option<Timestamp>,
    out: SimOutcome,
    buf: Vec<u8>,
}

fn ms(t: u64) -> Duration {
    Duration::from_millis(t)
}

fn addr_of(p: u32) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 10_000 + p as u16))
}

fn state_step(state: u64, id: MsgId) -> u64 {
    let mut b = [0u8; 20];
    b[..8].copy_from_slice(&state.to_le_bytes());
    b[8..12].copy_from_slice(&id.0.to_le_bytes());
    b[12..].copy_from_slice(&id.1.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&b)
}

fn agent_config(t: &SimTiming) -> AgentConfig {
    AgentConfig {
        heartbeat: t.fd.interval,
        lease: t.lease,
        // Small enough that OrderedSend's sender credit (WouldBlock) is exercised.
        max_ordered_bytes: 16 << 10,
        ..AgentConfig::default()
    }
}

fn service_config(t: &SimTiming, multicast: bool) -> ServiceConfig {
    ServiceConfig {
        fd: t.fd,
        tick: t.tick,
        multicast: multicast.then(crate::drmc::McParams::default),
        remap_interval: ms(100),
    }
}

fn protocol_config() -> ProtocolConfig {
    ProtocolConfig {
        send_buffer_bytes: 1 << 20,
        window_bytes: 256 << 10,
        window_frames: 512,
        retain_bytes: 512 << 10,
        max_message_bytes: 64 << 10,
        // Unicast groups of 4–5 members send their data down a relay tree of fanout 2 (the
        // default threshold, 16, is above these groups), so view changes, OrderedSend and
        // state transfer are also checked over relay trees.
        relay_threshold: 3,
        relay_fanout: 2,
        ..ProtocolConfig::default()
    }
}

impl Sim {
    fn new(cfg: SimConfig) -> Self {
        let mut rng = Rng::new(cfg.seed);
        let replica_ids: Vec<u64> = (1..=cfg.replicas as u64).collect();
        let mut replicas = BTreeMap::new();
        for id in &replica_ids {
            let config = if cfg.replicas == 1 {
                ReplicaConfig::single()
            } else {
                ReplicaConfig::new(*id, replica_ids.clone(), cfg.seed)
            };
            let r = Replica::new(config.clone()).expect("valid replica config");
            replicas.insert(
                *id,
                ReplicaSlot {
                    service: Some(OracleService::new(
                        r,
                        service_config(&cfg.timing, cfg.multicast),
                        Timestamp::ZERO,
                    )),
                    storage: None,
                    config,
                    restart_at: None,
                    side_b: false,
                },
            );
        }
        let active = cfg.active.as_nanos() as u64;
        let mut members = BTreeMap::new();
        let n = cfg.members as u32;
        // Fault plan.
        // Process 1 (the creator, rank 0 for most of the run) is a possible victim in some runs,
        // so sequencer fail-over and state transfer from a new rank 0 are exercised.
        let first = if rng.chance(0.3) { 1 } else { 2 };
        let mut crash_victims: Vec<u32> = (first..=n).collect();
        let mut victims = BTreeSet::new();
        for _ in 0..cfg.crashes.min(crash_victims.len()) {
            let i = rng.below(crash_victims.len() as u64) as usize;
            victims.insert(crash_victims.swap_remove(i));
        }
        let mut leavers = BTreeSet::new();
        for _ in 0..cfg.leaves.min(crash_victims.len()) {
            let i = rng.below(crash_victims.len() as u64) as usize;
            leavers.insert(crash_victims.swap_remove(i));
        }
        let minority = (n as usize - 1) / 2;
        let side_b: BTreeSet<u32> = if cfg.partition {
            (n - minority as u32 + 1..=n).collect()
        } else {
            BTreeSet::new()
        };
        for p in 1..=n {
            let me = MemberId::new(p, 1);
            let late = p > n - cfg.late_joiners as u32 && p > 1;
            let join_at = if p == 1 {
                Timestamp::ZERO
            } else if late {
                Timestamp(active / 4 + rng.below(active / 2))
            } else {
                Timestamp(ms(2).as_nanos() as u64 + rng.below(10_000_000))
            };
            let agent = MemberAgent::new(
                me,
                Some(addr_of(p)),
                agent_config(&cfg.timing),
                protocol_config(),
                cfg.seed ^ u64::from(p),
                replica_ids.clone(),
                Timestamp::ZERO,
            );
            members.insert(
                p,
                Member {
                    agent: Some(agent),
                    create_next: p == 1,
                    state: 0,
                    next_msg: 0,
                    next_send: Timestamp::ZERO,
                    joined_requested: false,
                    join_at,
                    leave_at: leavers
                        .contains(&p)
                        .then(|| Timestamp(active / 3 + rng.below(active / 2))),
                    crash_at: match cfg.planned_crash {
                        Some((victim, at)) => {
                            (victim == p).then_some(Timestamp(at.as_nanos() as u64))
                        }
                        None => victims
                            .contains(&p)
                            .then(|| Timestamp(active / 5 + rng.below(active * 3 / 4))),
                    },
                    side_b: side_b.contains(&p),
                },
            );
        }
        if cfg.partition && cfg.replicas == 3 {
            if let Some(r) = replicas.get_mut(&3) {
                r.side_b = true;
            }
        }
        let partition_at = cfg
            .partition
            .then(|| Timestamp(active / 4 + rng.below(active / 4)));
        let heal_at = partition_at.map(|t| t + ms(300 + rng.below(300)));
        let leader_crash_at = cfg
            .crash_leader
            .then(|| Timestamp(active / 5 + rng.below(active / 2)));
        let mut out = SimOutcome::default();
        for p in members.keys() {
            out.logs.insert(
                *p,
                MemberLog {
                    member: MemberId::new(*p, 1),
                    ..MemberLog::default()
                },
            );
        }
        Sim {
            cfg,
            rng,
            now: Timestamp::ZERO,
            queue: BinaryHeap::new(),
            payloads: BTreeMap::new(),
            next_id: 0,
            members,
            replicas,
            partitioned: false,
            partition_at,
            heal_at,
            leader_crash_at,
            out,
            buf: vec![0u8; 65536],
        }
    }

    fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.now.0)
    }

    fn note(&mut self, s: String) {
        let t = self.elapsed().as_micros();
        self.out.notes.push(format!("{t:>9} µs {s}"));
    }

    fn side_b(&self, n: Node) -> bool {
        match n {
            Node::Replica(r) => self.replicas.get(&r).is_some_and(|s| s.side_b),
            Node::Process(p) => self.members.get(&p).is_some_and(|m| m.side_b),
        }
    }

    fn send(&mut self, from: Node, to: Node, packet: Packet) {
        if self.partitioned && self.side_b(from) != self.side_b(to) {
            return;
        }
        if self.cfg.loss > 0.0 && self.rng.chance(self.cfg.loss) {
            return;
        }
        let copies = if self.cfg.dup > 0.0 && self.rng.chance(self.cfg.dup) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.cfg.latency_us * 1000 + self.rng.below(self.cfg.jitter_us * 1000 + 1);
            let id = self.next_id;
            self.next_id += 1;
            self.payloads.insert(id, packet.clone());
            self.queue
                .push(Reverse((self.now + Duration::from_nanos(delay), id, to)));
        }
    }

    fn active_end(&self) -> Timestamp {
        Timestamp(self.cfg.active.as_nanos() as u64)
    }

    /// Drains every node's outputs into the network.
    fn drain_outputs(&mut self) {
        let now = self.now;
        let procs: Vec<u32> = self.members.keys().copied().collect();
        for p in procs {
            while let Some(agent) = self.members.get_mut(&p).and_then(|m| m.agent.as_mut()) {
                let mut out = Vec::new();
                while let Some(t) = agent.poll_transmit(now, &mut self.buf) {
                    let bytes = self.buf[..t.len].to_vec();
                    let from = agent.me();
                    let targets: Vec<MemberId> = match t.destination {
                        Destination::Member(m) => vec![m],
                        Destination::Group(g) => agent
                            .view(g)
                            .map(|v| v.members.iter().copied().filter(|m| *m != from).collect())
                            .unwrap_or_default(),
                    };
                    out.push((from, targets, bytes));
                }
                let mut oracle = Vec::new();
                while let Some(m) = agent.poll_oracle() {
                    oracle.push(m);
                }
                if out.is_empty() && oracle.is_empty() {
                    break;
                }
                for (from, targets, bytes) in out {
                    for t in targets {
                        self.send(
                            Node::Process(p),
                            Node::Process(t.process()),
                            Packet::Data {
                                from,
                                bytes: bytes.clone(),
                            },
                        );
                    }
                }
                for (r, m) in oracle {
                    self.send(Node::Process(p), Node::Replica(r), Packet::Oracle(m));
                }
            }
        }
        let reps: Vec<u64> = self.replicas.keys().copied().collect();
        for r in reps {
            let mut outs = Vec::new();
            if let Some(s) = self.replicas.get_mut(&r).and_then(|s| s.service.as_mut()) {
                while let Some(o) = s.poll_output() {
                    outs.push(o);
                }
            }
            for o in outs {
                match o {
                    ServiceOutput::ToReplica(to, bytes) => {
                        self.send(Node::Replica(r), Node::Replica(to), Packet::Raft(bytes))
                    }
                    ServiceOutput::ToMember(m, msg) => {
                        // Only the live incarnation's process exists here.
                        self.send(
                            Node::Replica(r),
                            Node::Process(m.process()),
                            Packet::Member(msg),
                        )
                    }
                }
            }
        }
    }

    fn deliver(&mut self, id: u64, to: Node) {
        let Some(packet) = self.payloads.remove(&id) else {
            return;
        };
        let now = self.now;
        match (to, packet) {
            (Node::Process(p), Packet::Data { from, mut bytes }) => {
                if let Some(a) = self.members.get_mut(&p).and_then(|m| m.agent.as_mut()) {
                    a.handle_datagram(now, addr_of(from.process()), &mut bytes);
                }
            }
            (Node::Process(p), Packet::Member(msg)) => {
                if let Some(a) = self.members.get_mut(&p).and_then(|m| m.agent.as_mut()) {
                    a.handle_oracle(now, msg);
                }
            }
            (Node::Replica(r), Packet::Oracle(msg)) => {
                if let Some(s) = self.replicas.get_mut(&r).and_then(|s| s.service.as_mut()) {
                    s.handle_member(now, msg);
                }
            }
            (Node::Replica(r), Packet::Raft(bytes)) => {
                if let Some(s) = self.replicas.get_mut(&r).and_then(|s| s.service.as_mut()) {
                    s.handle_peer(now, &bytes);
                }
            }
            _ => {}
        }
    }

    /// Application behaviour: joins, sends, leaves, crash plans, event recording.
    fn workload(&mut self) {
        let now = self.now;
        let t = self.elapsed();
        let g = group_id(GROUP);
        let procs: Vec<u32> = self.members.keys().copied().collect();
        for p in procs {
            let m = self.members.get_mut(&p).expect("present");
            let Some(agent) = m.agent.as_mut() else {
                continue;
            };
            if m.crash_at.is_some_and(|c| now >= c) {
                m.agent = None;
                m.crash_at = None;
                self.out.logs.get_mut(&p).expect("log").crashed = Some(t);
                self.note(format!("crash member {p}"));
                continue;
            }
            if !m.joined_requested && now >= m.join_at && agent.is_registered() {
                m.joined_requested = true;
                if m.create_next {
                    agent.create(GROUP, Signature::from_text("sim"));
                } else {
                    agent.join(GROUP, Signature::from_text("sim"));
                }
            }
            if let Some(l) = m.leave_at {
                if now >= l && agent.view(g).is_some() {
                    m.leave_at = None;
                    agent.leave(g);
                    let _ = agent;
                    self.note(format!("member {p} leaves"));
                    continue;
                }
            }
            // Events.
            let log = self.out.logs.get_mut(&p).expect("log");
            while let Some(e) = agent.poll_event() {
                match e {
                    AgentEvent::View(v) => {
                        log.views.push((t, v.id, v.members.clone()));
                        log.states.push((v.id, m.state));
                        self.out.views_installed += 1;
                    }
                    AgentEvent::Deliver {
                        view,
                        sender,
                        kind,
                        payload,
                        ..
                    } => {
                        if payload.len() < 12 {
                            continue;
                        }
                        let id = (
                            u32::from_le_bytes(payload[..4].try_into().expect("4")),
                            u64::from_le_bytes(payload[4..12].try_into().expect("8")),
                        );
                        debug_assert_eq!(id.0, sender.process());
                        if kind == MsgKind::Ordered {
                            m.state = state_step(m.state, id);
                        }
                        log.delivered.push((t, view, kind, id));
                        self.out.delivered += 1;
                    }
                    AgentEvent::MakeCheckpoint { group, view } => {
                        agent.send_checkpoint(group, view, &m.state.to_le_bytes());
                    }
                    AgentEvent::StateLost { view, .. } => {
                        // A new lineage of the group's state.
                        m.state = state_step(0, (u32::MAX, u64::from(view.0)));
                        log.state_from = Some(view);
                        log.state_lost = Some((t, view));
                    }
                    AgentEvent::LoadCheckpoint { state, view, .. } => {
                        log.state_from = Some(view);
                        if state.len() == 8 {
                            m.state = u64::from_le_bytes(state[..8].try_into().expect("8"));
                        }
                    }
                    AgentEvent::Reply { result: Err(e), .. } => {
                        if agent.view(g).is_none() {
                            // Joined before the group's creation committed, or after all its
                            // members were gone (then create it, like Isis²'s Join), or created
                            // it concurrently with another member: retry.
                            m.create_next = e.contains("unknown group");
                            m.joined_requested = false;
                            m.join_at = now + ms(20);
                        }
                    }
                    AgentEvent::Reply { .. } | AgentEvent::Members { .. } => {}
                    AgentEvent::Gone { .. } => {
                        log.gone.get_or_insert(t);
                    }
                    AgentEvent::Poisoned(_) => {
                        log.poisoned.get_or_insert(t);
                    }
                }
            }
            // Sends.
            if m.next_msg < self.cfg.messages as u64
                && now >= m.next_send
                && agent.view(g).is_some()
                && m.leave_at.is_none_or(|l| now < l)
                && log.gone.is_none()
            {
                let id: MsgId = (p, m.next_msg + 1);
                let large = self.rng.chance(self.cfg.large_share);
                let len = if large {
                    5000 + self.rng.below(10_000)
                } else {
                    12 + self.rng.below(200)
                };
                let mut payload = vec![(id.1 as u8) ^ 0x5a; len as usize];
                payload[..4].copy_from_slice(&id.0.to_le_bytes());
                payload[4..12].copy_from_slice(&id.1.to_le_bytes());
                let ordered = self.rng.chance(self.cfg.ordered_share);
                let view = agent.view(g).expect("checked").id;
                let r = if ordered {
                    agent.ordered_send(g, &payload)
                } else {
                    agent.send(g, &payload)
                };
                if r.is_ok() {
                    m.next_msg += 1;
                    log.sent.push((
                        view,
                        if ordered {
                            MsgKind::Ordered
                        } else {
                            MsgKind::Send
                        },
                        id,
                    ));
                }
                m.next_send = now + Duration::from_micros(500 + self.rng.below(5000));
            }
        }
    }

    fn faults(&mut self) {
        let now = self.now;
        if self.partition_at.is_some_and(|t| now >= t) {
            self.partition_at = None;
            self.partitioned = true;
            self.note("partition: minority cut off".into());
        }
        if self.heal_at.is_some_and(|t| now >= t) || (self.partitioned && now >= self.active_end())
        {
            self.heal_at = None;
            if self.partitioned {
                self.partitioned = false;
                self.note("partition healed".into());
            }
        }
        if self.leader_crash_at.is_some_and(|t| now >= t) {
            self.leader_crash_at = None;
            let leader = self
                .replicas
                .iter()
                .find(|(_, s)| s.service.as_ref().is_some_and(|x| x.is_leader()))
                .map(|(id, _)| *id);
            if let Some(id) = leader {
                let slot = self.replicas.get_mut(&id).expect("present");
                let svc = slot.service.take().expect("leader is up");
                slot.storage = Some(svc.into_replica().into_storage());
                slot.restart_at = Some(now + ms(200 + self.rng.below(300)));
                self.note(format!("crash oracle leader {id}"));
            }
        }
        let ids: Vec<u64> = self.replicas.keys().copied().collect();
        for id in ids {
            let slot = self.replicas.get_mut(&id).expect("present");
            if slot.restart_at.is_some_and(|t| now >= t) {
                slot.restart_at = None;
                let storage = slot.storage.take().expect("crashed replica keeps storage");
                let r = Replica::restart(slot.config.clone(), storage).expect("restart");
                slot.service = Some(OracleService::new(
                    r,
                    service_config(&self.cfg.timing, self.cfg.multicast),
                    now,
                ));
                self.note(format!("restart oracle replica {id}"));
            }
        }
    }

    fn next_time(&self) -> Timestamp {
        let mut t = Timestamp::NEVER;
        if let Some(Reverse((at, _, _))) = self.queue.peek() {
            t = t.min(*at);
        }
        for m in self.members.values() {
            if let Some(a) = &m.agent {
                t = t.min(a.poll_timeout());
                if m.next_msg < self.cfg.messages as u64 {
                    t = t.min(m.next_send.max(self.now + Duration::from_micros(500)));
                }
            }
            for x in [m.crash_at, m.leave_at, Some(m.join_at)]
                .into_iter()
                .flatten()
            {
                if x > self.now {
                    t = t.min(x);
                }
            }
        }
        for s in self.replicas.values() {
            if let Some(svc) = &s.service {
                t = t.min(svc.poll_timeout());
            }
            if let Some(r) = s.restart_at {
                t = t.min(r);
            }
        }
        for x in [self.partition_at, self.heal_at, self.leader_crash_at]
            .into_iter()
            .flatten()
        {
            t = t.min(x);
        }
        t.max(self.now)
    }

    /// Notes when the oracle first marks a crashed or cut-off process failed.
    fn record_decisions(&mut self) {
        let t = self.elapsed();
        for (p, log) in &self.out.logs {
            if self.out.decided.contains_key(p) || (log.crashed.is_none() && !self.partitioned) {
                continue;
            }
            let failed = self.replicas.values().any(|s| {
                s.service.as_ref().is_some_and(|svc| {
                    matches!(
                        svc.replica().state().member_status(log.member),
                        crate::oracle::MemberStatus::Poisoned(_)
                    )
                })
            });
            if failed {
                self.out.decided.insert(*p, t);
            }
        }
    }

    /// True when every live, unexcluded member sent everything, all are in the same view,
    /// nobody is flushing, and nothing is in flight.
    fn converged(&self) -> bool {
        let g = group_id(GROUP);
        let mut view = None;
        for (p, m) in &self.members {
            let Some(a) = &m.agent else { continue };
            let log = &self.out.logs[p];
            if a.poisoned().is_some() || log.gone.is_some() {
                continue;
            }
            if m.next_msg < self.cfg.messages as u64 || m.leave_at.is_some() {
                return false;
            }
            let Some(v) = a.view(g) else { return false };
            if a.endpoint().is_wedged(g) || !a.endpoint().all_stable(g) || a.is_awaiting_state(g) {
                return false;
            }
            match view {
                None => view = Some(v.id),
                Some(id) if id != v.id => return false,
                _ => {}
            }
        }
        // With no live member left (all crashed, excluded or gone) there is nothing to wait for.
        view.is_some()
            || self.members.iter().all(|(p, m)| {
                let log = &self.out.logs[p];
                m.agent.as_ref().is_none_or(|a| a.poisoned().is_some()) || log.gone.is_some()
            })
    }

    fn run(mut self) -> Result<SimOutcome, String> {
        let deadline = self.active_end() + ms(15_000);
        let mut steps: u64 = 0;
        let mut converged_at: Option<Timestamp> = None;
        let mut same_time = 0u64;
        loop {
            let t = self.next_time();
            if t == Timestamp::NEVER || t > deadline {
                break;
            }
            if t == self.now {
                same_time += 1;
                if same_time > 100_000 {
                    let due: Vec<String> = self
                        .members
                        .iter()
                        .filter_map(|(p, m)| {
                            m.agent
                                .as_ref()
                                .map(|a| (p, a.poll_timeout(), a.endpoint().poll_timeout()))
                        })
                        .map(|(p, a, e)| format!("member {p}: agent {a:?} endpoint {e:?}"))
                        .collect();
                    return Err(format!(
                        "time stuck at {:?}: {}",
                        self.elapsed(),
                        due.join("; ")
                    ));
                }
            } else {
                same_time = 0;
            }
            self.now = t;
            steps += 1;
            if steps > 20_000_000 {
                return Err("simulation step budget exhausted".into());
            }
            self.faults();
            while let Some(Reverse((at, id, to))) = self.queue.peek().copied() {
                if at > self.now {
                    break;
                }
                self.queue.pop();
                self.deliver(id, to);
            }
            let now = self.now;
            for m in self.members.values_mut() {
                if let Some(a) = m.agent.as_mut() {
                    if a.poll_timeout() <= now {
                        a.handle_timeout(now);
                    }
                }
            }
            for s in self.replicas.values_mut() {
                if let Some(svc) = s.service.as_mut() {
                    if svc.poll_timeout() <= now {
                        svc.handle_timeout(now);
                    }
                }
            }
            self.workload();
            self.drain_outputs();
            self.record_decisions();
            if self.now > self.active_end() + ms(200) && self.converged() {
                // Let the last deliveries settle, then stop.
                let settle = *converged_at.get_or_insert(self.now + ms(50));
                if self.now >= settle {
                    break;
                }
            } else {
                converged_at = None;
            }
        }
        if !self.converged() {
            let mut why = Vec::new();
            let g = group_id(GROUP);
            for (p, m) in &self.members {
                if let Some(a) = &m.agent {
                    why.push(format!(
                        "member {p}: view {:?} wedged {} awaiting {} stable {} sent {}/{} poisoned {:?} paused {} gone {:?}",
                        a.view(g).map(|v| (v.id.0, v.members.iter().map(|m| m.process()).collect::<Vec<_>>())),
                        a.endpoint().is_wedged(g),
                        a.is_awaiting_state(g),
                        a.endpoint().all_stable(g),
                        m.next_msg,
                        self.cfg.messages,
                        a.poisoned(),
                        a.is_paused(),
                        self.out.logs[p].gone,
                    ));
                    why.push(format!(
                        "    agent {:?}\n    endpoint {:?}\n    drops {:?}",
                        a.stats(),
                        a.endpoint().stats(),
                        a.endpoint().drops()
                    ));
                }
            }
            for (id, s) in &self.replicas {
                if let Some(svc) = &s.service {
                    let st = svc.replica().state();
                    why.push(format!(
                        "replica {id}: leader {} term {} hint {:?} stats {:?} group {:?}",
                        svc.is_leader(),
                        svc.replica().term(),
                        svc.replica().leader_hint(),
                        svc.replica().stats(),
                        st.group(g).map(|r| (
                            r.installed.id.0,
                            r.pending.iter().map(|v| v.id.0).collect::<Vec<_>>(),
                            r.flush.round,
                            r.flush.active,
                            r.flush
                                .reports
                                .keys()
                                .map(|m| m.process())
                                .collect::<Vec<_>>(),
                            r.flush.cut.is_some(),
                            r.flush.done.iter().map(|m| m.process()).collect::<Vec<_>>(),
                        ))
                    ));
                }
            }
            return Err(format!(
                "did not converge by {:?}:\n  {}\n{}",
                self.elapsed(),
                why.join("\n  "),
                describe(&self.out)
            ));
        }
        self.out.end = self.elapsed();
        Ok(self.out)
    }
}

/// Runs one simulation.
pub fn run(cfg: SimConfig) -> Result<SimOutcome, String> {
    Sim::new(cfg).run()
}

/// Runs one simulation and checks it; the error explains the first violation.
pub fn run_and_check(cfg: SimConfig) -> Result<SimOutcome, String> {
    let out = run(cfg)?;
    if let Err(e) = check(&out) {
        return Err(format!("{e}\n{}", describe(&out)));
    }
    Ok(out)
}

/// The fault log and each member's view history, for a failure report.
fn describe(out: &SimOutcome) -> String {
    let mut s = String::from("faults:\n");
    for n in &out.notes {
        s.push_str(&format!("  {n}\n"));
    }
    for (p, l) in &out.logs {
        let views: Vec<String> = l
            .views
            .iter()
            .map(|(t, id, m)| {
                let ms: Vec<u32> = m.iter().map(|x| x.process()).collect();
                format!("v{}@{}ms{:?}", id.0, t.as_millis(), ms)
            })
            .collect();
        s.push_str(&format!(
            "  member {p}: {} deliveries, crashed {:?} poisoned {:?} gone {:?}, views {}\n",
            l.delivered.len(),
            l.crashed,
            l.poisoned,
            l.gone,
            views.join(" ")
        ));
    }
    s
}

/// Verifies the virtual-synchrony invariants over one run's logs (see the module docs).
pub fn check(out: &SimOutcome) -> Result<(), String> {
    // Identical view sequences: the same id always has the same members; each member's ids
    // are consecutive.
    let mut views: BTreeMap<ViewId, &Vec<MemberId>> = BTreeMap::new();
    for (p, log) in &out.logs {
        for w in log.views.windows(2) {
            if w[1].1 .0 != w[0].1 .0 + 1 {
                return Err(format!(
                    "member {p} skipped from view {} to {}",
                    w[0].1 .0, w[1].1 .0
                ));
            }
        }
        for (_, id, members) in &log.views {
            if let Some(prev) = views.insert(*id, members) {
                if prev != members {
                    return Err(format!(
                        "view {} differs: {prev:?} vs {members:?} at {p}",
                        id.0
                    ));
                }
            }
            if !members.contains(&log.member) {
                return Err(format!(
                    "member {p} installed view {} without being in it",
                    id.0
                ));
            }
        }
    }
    // Every delivery happens in a view the member installed; every member alive at the end
    // installed every view that lists it (a joiner stuck without its state would not).
    let alive_at_end =
        |l: &MemberLog| l.crashed.is_none() && l.poisoned.is_none() && l.gone.is_none();
    for (p, log) in &out.logs {
        let mine: BTreeSet<ViewId> = log.views.iter().map(|v| v.1).collect();
        if let Some(d) = log.delivered.iter().find(|d| !mine.contains(&d.1)) {
            return Err(format!(
                "member {p} delivered {:?} in view {} it never installed",
                d.3, d.1 .0
            ));
        }
        if alive_at_end(log) {
            // Views before the one its state comes from are covered by that state.
            let from = log.state_from.map_or(0, |v| v.0);
            for (id, members) in &views {
                if id.0 >= from && members.contains(&log.member) && !mine.contains(id) {
                    return Err(format!(
                        "member {p} is listed in view {} but never installed it",
                        id.0
                    ));
                }
            }
        }
    }
    // A member restarts the group's state only if no other member of that view held it.
    for (p, log) in &out.logs {
        let Some((t, v)) = log.state_lost else {
            continue;
        };
        let members = views
            .get(&v)
            .ok_or(format!("member {p} lost state in unknown view"))?;
        for (q, other) in &out.logs {
            if q != p
                && members.contains(&other.member)
                && other.crashed.is_none_or(|c| c > t)
                && other.views.iter().any(|(tq, _, _)| *tq <= t)
            {
                return Err(format!(
                    "member {p} restarted the state at view {} although member {q} held it",
                    v.0
                ));
            }
        }
    }
    // Poisoned / crashed / gone members: time of their exclusion = first install anywhere of
    // a view without them after they were in one.
    let mut exclusion: BTreeMap<u32, Duration> = BTreeMap::new();
    for (p, log) in &out.logs {
        let Some(last) = log.views.last() else {
            continue;
        };
        let mut first: Option<Duration> = None;
        for l in out.logs.values() {
            for (t, id, members) in &l.views {
                if id.0 > last.1 .0 && !members.contains(&log.member) {
                    first = Some(first.map_or(*t, |f| f.min(*t)));
                }
            }
        }
        if let Some(t) = first {
            exclusion.insert(*p, t);
        }
    }
    // No duplicates; FIFO per sender and kind; nothing after exclusion.
    for (p, log) in &out.logs {
        let mut seen = BTreeSet::new();
        let mut last: BTreeMap<(u32, bool), u64> = BTreeMap::new();
        for (t, view, kind, id) in &log.delivered {
            if !seen.insert(*id) {
                return Err(format!("member {p} delivered {id:?} twice"));
            }
            let k = (id.0, *kind == MsgKind::Ordered);
            if let Some(prev) = last.insert(k, id.1) {
                if prev > id.1 {
                    return Err(format!(
                        "member {p}: FIFO violated for sender {}: {} after {prev}",
                        id.0, id.1
                    ));
                }
            }
            if let Some(x) = exclusion.get(p) {
                if t > x && log.poisoned.is_some() {
                    return Err(format!(
                        "member {p} delivered {id:?} in view {} at {t:?}, after its exclusion at {x:?}",
                        view.0
                    ));
                }
            }
        }
    }
    // Same message set per view among members that installed the next view.
    let mut per_view: BTreeMap<ViewId, BTreeMap<u32, BTreeSet<MsgId>>> = BTreeMap::new();
    for (p, log) in &out.logs {
        let installed: BTreeSet<ViewId> = log.views.iter().map(|v| v.1).collect();
        for (id, _, _) in log.views.iter().map(|v| (v.1, 0, 0)) {
            if installed.contains(&ViewId(id.0 + 1)) {
                per_view.entry(id).or_default().insert(*p, BTreeSet::new());
            }
        }
        for (_, view, _, id) in &log.delivered {
            if let Some(s) = per_view.get_mut(view).and_then(|m| m.get_mut(p)) {
                s.insert(*id);
            }
        }
    }
    for (view, sets) in &per_view {
        let mut it = sets.iter();
        if let Some((p0, s0)) = it.next() {
            for (p, s) in it {
                if s != s0 {
                    let only0: Vec<_> = s0.difference(s).take(5).collect();
                    let only1: Vec<_> = s.difference(s0).take(5).collect();
                    return Err(format!(
                        "view {}: members {p0} and {p} delivered different sets (only at {p0}: {only0:?}; only at {p}: {only1:?})",
                        view.0
                    ));
                }
            }
        }
    }
    // One total order for OrderedSends: pairwise, common messages in the same order.
    let orders: Vec<(u32, Vec<MsgId>)> = out
        .logs
        .iter()
        .map(|(p, l)| {
            (
                *p,
                l.delivered
                    .iter()
                    .filter(|d| d.2 == MsgKind::Ordered)
                    .map(|d| d.3)
                    .collect(),
            )
        })
        .collect();
    for i in 0..orders.len() {
        for j in i + 1..orders.len() {
            let (pa, a) = &orders[i];
            let (pb, b) = &orders[j];
            let pos_b: BTreeMap<MsgId, usize> =
                b.iter().enumerate().map(|(k, id)| (*id, k)).collect();
            let mut last = None;
            for id in a {
                if let Some(k) = pos_b.get(id) {
                    if last.is_some_and(|l| l > *k) {
                        return Err(format!(
                            "total order differs between members {pa} and {pb} at {id:?}"
                        ));
                    }
                    last = Some(*k);
                }
            }
        }
    }
    // Joiners' state equals the group's at every view.
    let mut states: BTreeMap<ViewId, (u32, u64)> = BTreeMap::new();
    for (p, log) in &out.logs {
        for (view, st) in &log.states {
            if let Some((q, s)) = states.insert(*view, (*p, *st)) {
                if s != *st {
                    return Err(format!(
                        "state at view {} differs: member {q} has {s:016x}, member {p} has {st:016x}",
                        view.0
                    ));
                }
            }
        }
    }
    // Reliability and self-delivery: a message accepted by a member alive at the end is
    // delivered by every member alive at the end that installed its view.
    let alive = |l: &MemberLog| l.crashed.is_none() && l.poisoned.is_none() && l.gone.is_none();
    for (p, log) in &out.logs {
        if !alive(log) {
            continue;
        }
        for (view, _, id) in &log.sent {
            for (q, other) in &out.logs {
                if !alive(other) || !other.views.iter().any(|v| v.1 == *view) {
                    continue;
                }
                if !other.delivered.iter().any(|d| d.3 == *id) {
                    return Err(format!(
                        "message {id:?} sent by {p} in view {} never delivered at member {q}",
                        view.0
                    ));
                }
            }
        }
    }
    Ok(())
}

/// One view-change measurement, in virtual time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViewChangeSample {
    /// From the crash to the oracle's failure decision (failure detection).
    pub crash_to_decision: Duration,
    /// From the decision to the new view installed at every survivor (the flush).
    pub decision_to_view: Duration,
    /// From the crash to the new view installed at every survivor.
    pub crash_to_view: Duration,
}

/// Measures one view change: `members` members and `replicas` oracle replicas (no loss,
/// one-way latency `latency_us`) stream Sends and OrderedSends; the last member
/// crashes at `crash_at`; returns when the oracle decided and when every survivor installed
/// the view without it. The run is also checked like any simulation.
pub fn measure_view_change(
    members: usize,
    replicas: usize,
    timing: SimTiming,
    latency_us: u64,
    crash_at: Duration,
    seed: u64,
) -> Result<ViewChangeSample, String> {
    let victim = members as u32;
    let cfg = SimConfig {
        seed,
        replicas,
        members,
        late_joiners: 0,
        loss: 0.0,
        dup: 0.0,
        jitter_us: 0,
        crashes: 0,
        crash_leader: false,
        partition: false,
        leaves: 0,
        messages: 30,
        ordered_share: 0.5,
        large_share: 0.0,
        active: crash_at + timing.fd.timeout,
        latency_us,
        timing,
        planned_crash: Some((victim, crash_at)),
        multicast: false,
    };
    let out = run_and_check(cfg)?;
    let log = &out.logs[&victim];
    let crashed = log
        .crashed
        .ok_or("the victim did not crash (no view yet?)")?;
    let decided = *out.decided.get(&victim).ok_or("no failure decision")?;
    let mut installed = Duration::ZERO;
    for (p, l) in &out.logs {
        if *p == victim {
            continue;
        }
        let t = l
            .views
            .iter()
            .find(|(t, _, m)| *t >= crashed && !m.contains(&log.member))
            .map(|(t, _, _)| *t)
            .ok_or_else(|| format!("member {p} never installed a view without {victim}"))?;
        installed = installed.max(t);
    }
    Ok(ViewChangeSample {
        crash_to_decision: decided - crashed,
        decision_to_view: installed - decided,
        crash_to_view: installed - crashed,
    })
}
