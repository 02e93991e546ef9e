//! The seeded deterministic simulator: real [`Endpoint`]s, a fake clock and a fake network that
//! loses, duplicates, corrupts, delays (and so reorders) and partitions datagrams, applications
//! that send as fast as backpressure allows and drain their delivery queues at their own pace,
//! and a checker of the data-plane invariants.
//!
//! Everything — topology, workload, fault mix — derives from one `u64` seed ([`SimConfig::swarm`]),
//! so a failing seed replays exactly: `VSYNC_SIM_SEED=<seed> cargo test -p vsync-dataplane --test simulation replay -- --nocapture`.
//!
//! Invariants checked after every run (static membership):
//! * every member delivers every Send of every member (itself included) exactly once, in the
//!   sender's order, with identical bytes;
//! * every P2PSend is delivered exactly once, in order, at its addressee only;
//! * raw deliveries are uncorrupted copies of raw sends (loss and duplication allowed);
//! * the run quiesces: all data delivered, no gap left, before a virtual-time limit;
//! * memory stays bounded: retained bytes never exceed the send buffer, held bytes never exceed
//!   the receive limits.
//!
//! Unicast groups of some seeds use a relay tree (`relay_threshold` 2, fanout 2–3); the report
//! counts each member's first-transmission copies and relayed copies, and — with
//! [`SimConfig::egress_bytes_per_sec`] — models each member's NIC serialization, so flat
//! fan-out and the relay tree can be compared (`examples/relay_fanout.rs`).

use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use crate::config::ProtocolConfig;
use crate::protocol::{
    Delivery, DeliveryKind, DeliverySink, Destination, Endpoint, GroupSpec, Protocol, RateLimit,
};
use crate::rng::Rng;
use crate::{GroupId, MemberId, Timestamp, ViewId};

/// The group every simulated member joins.
pub const SIM_GROUP: GroupId = GroupId(0x5157);

/// One simulation's parameters.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed everything else was derived from (and that drives the run).
    pub seed: u64,
    /// Number of members.
    pub members: usize,
    /// How many of them send multicasts.
    pub senders: usize,
    /// Multicasts per sender.
    pub messages_per_sender: usize,
    /// Largest message (bytes); sizes are drawn from 0..=this, with a bias to small ones.
    pub max_message: usize,
    /// Point-to-point messages per member (to random peers).
    pub p2p_per_member: usize,
    /// Raw messages per member.
    pub raw_per_member: usize,
    /// Probability a datagram copy is lost.
    pub loss: f64,
    /// Probability a datagram copy is duplicated.
    pub duplicate: f64,
    /// Probability a datagram copy has one byte flipped.
    pub corrupt: f64,
    /// Minimum one-way delay.
    pub delay_min: Duration,
    /// Maximum one-way delay (delays are uniform, so copies reorder).
    pub delay_max: Duration,
    /// IP-multicast group (repairs multicast) or unicast fan-out.
    pub multicast: bool,
    /// Authenticate with a system key.
    pub system_key: bool,
    /// Encrypt with a group key.
    pub group_key: bool,
    /// Messages an application's delivery queue holds before it pushes back.
    pub sink_capacity: usize,
    /// How often applications drain their delivery queues.
    pub drain_interval: Duration,
    /// A partition: from `start` to `end`, members with index < `split` cannot reach the others.
    pub partition: Option<(Duration, Duration, usize)>,
    /// A leaky-bucket limit for every sender.
    pub rate_limit: Option<RateLimit>,
    /// Protocol configuration (small windows and MTU to exercise fragmentation and flow control).
    pub protocol: ProtocolConfig,
    /// Virtual-time limit after which a run that has not quiesced fails.
    pub time_limit: Duration,
    /// Each member's egress link rate (bytes per second): copies leave one after another, each
    /// taking `len / rate`, so fanning a datagram out to many members costs the sender time.
    /// `None`: infinitely fast links.
    pub egress_bytes_per_sec: Option<u64>,
}

impl SimConfig {
    /// A random mix of topology, workload and faults derived from `seed` (swarm testing).
    pub fn swarm(seed: u64) -> SimConfig {
        let mut r = Rng::new(seed ^ 0x5eed_5eed);
        let members = 2 + r.below(4) as usize;
        let mtu = [576, 900, 1472][r.below(3) as usize];
        let protocol = ProtocolConfig {
            mtu,
            max_message_bytes: 64 << 10,
            window_bytes: [65536, 131072, 1 << 20][r.below(3) as usize],
            window_frames: [64, 256, 4096][r.below(3) as usize],
            send_buffer_bytes: [64 << 10, 256 << 10][r.below(2) as usize],
            nak_delay: Duration::from_micros(r.below(500)),
            nak_retry: Duration::from_micros(500 + r.below(3000)),
            ack_interval: Duration::from_micros(200 + r.below(2000)),
            heartbeat_interval: Duration::from_micros(500 + r.below(3000)),
            ..ProtocolConfig::default()
        };
        let faulty = r.chance(0.8);
        let jitter_span = if r.chance(0.5) { 3000 } else { 300 };
        // Relay-tree settings come from their own generator, so the rest of a seed's
        // configuration is what it was before the tree existed.
        let mut t = Rng::new(seed ^ 0x7e1a_7ee5);
        let protocol = if t.chance(0.4) {
            ProtocolConfig {
                relay_threshold: 2,
                relay_fanout: 2 + t.below(2) as usize,
                ..protocol
            }
        } else {
            protocol
        };
        SimConfig {
            seed,
            members,
            senders: 1 + r.below(members as u64) as usize,
            messages_per_sender: 20 + r.below(120) as usize,
            max_message: [200, 2000, 20_000, 60_000][r.below(4) as usize],
            p2p_per_member: r.below(10) as usize,
            raw_per_member: r.below(10) as usize,
            loss: if faulty {
                [0.0, 0.01, 0.05, 0.1, 0.3][r.below(5) as usize]
            } else {
                0.0
            },
            duplicate: if faulty {
                [0.0, 0.02, 0.1][r.below(3) as usize]
            } else {
                0.0
            },
            corrupt: if faulty && r.chance(0.3) { 0.01 } else { 0.0 },
            delay_min: Duration::from_micros(10 + r.below(100)),
            delay_max: Duration::from_micros(100 + r.below(jitter_span)),
            multicast: r.chance(0.5),
            system_key: r.chance(0.2),
            group_key: r.chance(0.2),
            sink_capacity: [4, 64, 100_000][r.below(3) as usize],
            drain_interval: Duration::from_micros([50, 500, 5000][r.below(3) as usize]),
            partition: (faulty && r.chance(0.2)).then(|| {
                let start = Duration::from_micros(r.below(20_000));
                (
                    start,
                    start + Duration::from_micros(1000 + r.below(50_000)),
                    1 + r.below(members as u64 - 1) as usize,
                )
            }),
            rate_limit: r.chance(0.1).then(|| RateLimit {
                messages: Some(200 + r.below(2000)),
                bytes: r.chance(0.5).then(|| 100_000 + r.below(1_000_000)),
                period: Duration::from_millis(50),
            }),
            protocol,
            time_limit: Duration::from_secs(120),
            egress_bytes_per_sec: None,
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// Messages delivered over all members and kinds.
    pub delivered: u64,
    /// Datagrams put on the simulated network.
    pub datagrams: u64,
    /// Datagram copies lost.
    pub lost: u64,
    /// Frames retransmitted over all members.
    pub retransmitted: u64,
    /// Virtual time until quiescence.
    pub virtual_time: Duration,
    /// Longest virtual time any member waited between two deliveries of one sender's stream
    /// while that stream still had data in flight (a stall measure).
    pub max_stall: Duration,
    /// Most bytes any member retained at once.
    pub max_retained: usize,
    /// Datagrams dropped by receivers, by reason name.
    pub drops: BTreeMap<&'static str, u64>,
    /// Per member: distinct datagrams carrying first transmissions of its own group stream.
    pub first_tx_datagrams: Vec<u64>,
    /// Per member: copies of those datagrams it put on the network itself (flat fan-out:
    /// members − 1 per datagram; relay tree: at most the fanout).
    pub first_tx_copies: Vec<u64>,
    /// Per member: every datagram copy it put on the network.
    pub egress: Vec<u64>,
    /// Copies of relay-tree datagrams forwarded by members other than their origin.
    pub relayed_copies: u64,
    /// Mean over Sends of the time from admission to delivery at the last member.
    pub latency_mean: Duration,
    /// Largest such time.
    pub latency_max: Duration,
}

/// A run that broke an invariant; `Display` includes the seed to replay.
#[derive(Clone, Debug)]
pub struct SimFailure {
    /// The seed.
    pub seed: u64,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "simulation seed={} failed: {} (replay: VSYNC_SIM_SEED={})",
            self.seed, self.message, self.seed
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    sender: MemberId,
    kind: DeliveryKind,
    seq: u64,
    len: usize,
    hash: u64,
    at: Timestamp,
}

/// A bounded application delivery queue that records what it was given (and when: the driver
/// keeps `now` current).
#[derive(Debug, Default)]
pub struct RecordingSink {
    queue: VecDeque<Record>,
    capacity: usize,
    log: Vec<Record>,
    now: Timestamp,
}

impl DeliverySink for RecordingSink {
    fn deliver(&mut self, d: &Delivery<'_>) -> bool {
        if self.queue.len() >= self.capacity {
            return false;
        }
        self.queue.push_back(Record {
            sender: d.sender,
            kind: d.kind,
            seq: d.seq,
            len: d.payload.len(),
            hash: xxhash_rust::xxh3::xxh3_64(d.payload),
            at: self.now,
        });
        true
    }
}

#[derive(PartialEq, Eq)]
struct InFlight {
    at: Timestamp,
    order: u64,
    to: usize,
    bytes: Vec<u8>,
}

impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

fn payload_for(seed: u64, sender: usize, kind: u8, index: usize, len: usize) -> Vec<u8> {
    let mut r = Rng::new(seed ^ ((sender as u64) << 40) ^ ((kind as u64) << 32) ^ index as u64);
    (0..len).map(|_| r.next_u64() as u8).collect()
}

/// One planned send: kind (0 Send, 1 P2P, 2 raw), destination index, payload.
type PlannedSend = (u8, Option<usize>, Vec<u8>);

fn member_id(i: usize) -> MemberId {
    MemberId::new(i as u32 + 1, 1)
}

/// Runs one simulation and checks its invariants.
pub fn run(cfg: &SimConfig) -> Result<SimReport, SimFailure> {
    let fail = |message: String| SimFailure {
        seed: cfg.seed,
        message,
    };
    let mut rng = Rng::new(cfg.seed);
    let ids: Vec<MemberId> = (0..cfg.members).map(member_id).collect();
    let mut nodes: Vec<Endpoint<RecordingSink>> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let sink = RecordingSink {
                capacity: cfg.sink_capacity,
                ..Default::default()
            };
            let mut e = Endpoint::new(
                cfg.protocol.clone(),
                *id,
                1000 + i as u64 * 7,
                cfg.seed.wrapping_add(i as u64),
                sink,
            );
            if cfg.system_key {
                e.set_system_key(Some(&[7u8; 32]));
            }
            e.join(
                SIM_GROUP,
                GroupSpec {
                    view: ViewId(1),
                    members: ids.clone(),
                    multicast: cfg.multicast,
                    key: cfg.group_key.then_some([9u8; 32]),
                },
            );
            if let Some(l) = cfg.rate_limit {
                e.set_rate_limit(Timestamp::ZERO, SIM_GROUP, Some(l))
                    .expect("valid limit");
            }
            e
        })
        .collect();

    // Workload: what each member will send, as (kind, destination index, payload).
    let mut plan: Vec<VecDeque<PlannedSend>> = vec![VecDeque::new(); cfg.members];
    let mut expected_send: Vec<Vec<(usize, u64)>> = vec![Vec::new(); cfg.members];
    let mut expected_p2p: BTreeMap<(usize, usize), Vec<(usize, u64)>> = BTreeMap::new();
    let mut raw_hashes: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for (m, queue) in plan.iter_mut().enumerate() {
        let mut items = Vec::new();
        if m < cfg.senders {
            for i in 0..cfg.messages_per_sender {
                let len = if rng.chance(0.7) {
                    rng.below(200) as usize
                } else {
                    rng.below(cfg.max_message as u64 + 1) as usize
                };
                items.push((0u8, None, payload_for(cfg.seed, m, 0, i, len)));
            }
        }
        for i in 0..cfg.p2p_per_member {
            let mut to = rng.below(cfg.members as u64 - 1) as usize;
            if to >= m {
                to += 1;
            }
            let len = rng.below(cfg.max_message.min(5000) as u64 + 1) as usize;
            items.push((1u8, Some(to), payload_for(cfg.seed, m, 1, i, len)));
        }
        for i in 0..cfg.raw_per_member {
            let len = rng.below(cfg.protocol.max_frame_payload() as u64 + 1) as usize;
            let to = rng.chance(0.5).then(|| (m + 1) % cfg.members);
            items.push((2u8, to, payload_for(cfg.seed, m, 2, i, len)));
        }
        // Interleave kinds deterministically, keeping each kind's own order.
        let mut by_kind: [VecDeque<_>; 3] = Default::default();
        for it in items {
            by_kind[it.0 as usize].push_back(it);
        }
        while by_kind.iter().any(|q| !q.is_empty()) {
            let k = rng.below(3) as usize;
            if let Some(it) = by_kind[k].pop_front() {
                match it.0 {
                    0 => expected_send[m].push((it.2.len(), xxhash_rust::xxh3::xxh3_64(&it.2))),
                    1 => expected_p2p
                        .entry((m, it.1.unwrap()))
                        .or_default()
                        .push((it.2.len(), xxhash_rust::xxh3::xxh3_64(&it.2))),
                    _ => raw_hashes
                        .entry(m)
                        .or_default()
                        .push(xxhash_rust::xxh3::xxh3_64(&it.2)),
                }
                queue.push_back(it);
            }
        }
    }

    let mut report = SimReport {
        first_tx_datagrams: vec![0; cfg.members],
        first_tx_copies: vec![0; cfg.members],
        egress: vec![0; cfg.members],
        ..SimReport::default()
    };
    // Per sender: admission time of each Send, in order.
    let mut admitted_at: Vec<Vec<Timestamp>> = vec![Vec::new(); cfg.members];
    // Per member: when its egress link is free again.
    let mut link_free = vec![Timestamp::ZERO; cfg.members];
    let mut net: BinaryHeap<InFlight> = BinaryHeap::new();
    let mut order = 0u64;
    let mut now = Timestamp::ZERO;
    let app_tick = Duration::from_micros(50);
    let mut next_app = Timestamp::ZERO;
    let mut next_drain = Timestamp::ZERO;
    let mut buf = vec![0u8; cfg.protocol.mtu];
    let from = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1));
    let limit = Timestamp::ZERO + cfg.time_limit;
    let mut last_progress = vec![Timestamp::ZERO; cfg.members];
    let mut stall_start: Vec<Option<Timestamp>> = vec![None; cfg.members];
    let partitioned = |a: usize, b: usize, t: Timestamp| {
        cfg.partition.is_some_and(|(s, e, split)| {
            t >= Timestamp::ZERO + s && t < Timestamp::ZERO + e && ((a < split) != (b < split))
        })
    };

    let mut iterations = 0u64;
    loop {
        iterations += 1;
        if iterations > 5_000_000 {
            let timeouts: Vec<_> = nodes.iter().map(|n| n.poll_timeout()).collect();
            return Err(fail(format!(
                "simulator made no progress: 5M steps by virtual time {:?}; timeouts {:?}; next_app {:?}; in flight {}",
                now, timeouts, next_app, net.len()
            )));
        }
        for node in nodes.iter_mut() {
            node.sink_mut().now = now;
        }
        // Applications: send what backpressure allows, then drain delivery queues.
        if now >= next_app {
            next_app = now + app_tick;
            for (m, node) in nodes.iter_mut().enumerate() {
                while let Some((kind, to, payload)) = plan[m].front() {
                    let r = match kind {
                        0 => node.try_send(now, SIM_GROUP, payload),
                        1 => node.try_send_p2p(now, SIM_GROUP, ids[to.unwrap()], payload),
                        _ => node.try_send_raw(now, SIM_GROUP, to.map(|t| ids[t]), payload),
                    };
                    match r {
                        Ok(_) => {
                            if *kind == 0 {
                                admitted_at[m].push(now);
                            }
                            plan[m].pop_front();
                        }
                        Err(crate::protocol::SendError::WouldBlock) => break,
                        Err(e) => {
                            return Err(fail(format!("member {m}: unexpected send error {e}")))
                        }
                    }
                }
            }
        }
        if now >= next_drain {
            next_drain = now + cfg.drain_interval;
            for (m, node) in nodes.iter_mut().enumerate() {
                let sink = node.sink_mut();
                if !sink.queue.is_empty() {
                    last_progress[m] = now;
                }
                let drained: Vec<Record> = sink.queue.drain(..).collect();
                sink.log.extend(drained);
                node.poll_delivery();
            }
        }
        // Network: deliver everything due.
        while net.peek().is_some_and(|p| p.at <= now) {
            let mut p = net.pop().expect("peeked");
            nodes[p.to].handle_datagram(now, from, &mut p.bytes);
        }
        // Timers.
        for node in nodes.iter_mut() {
            if node.poll_timeout().is_some_and(|t| t <= now) {
                node.handle_timeout(now);
            }
        }
        // Transmissions.
        for (m, node) in nodes.iter_mut().enumerate() {
            loop {
                let frames_before = node.stats().frames_sent;
                let Some(t) = node.poll_transmit(now, &mut buf) else {
                    break;
                };
                if t.len > cfg.protocol.mtu {
                    return Err(fail(format!(
                        "member {m} produced a {}-byte datagram above the MTU",
                        t.len
                    )));
                }
                report.datagrams += 1;
                let targets: Vec<usize> = match t.destination {
                    Destination::Group(_) => (0..cfg.members).filter(|x| *x != m).collect(),
                    Destination::Member(id) => {
                        ids.iter().position(|x| *x == id).into_iter().collect()
                    }
                };
                // Classify from the clear header: a relay-tree datagram has a fanout; its
                // origin is the header's sender. New frames in a group datagram are a flat
                // first transmission.
                let fanout = crate::wire::header::peek_fanout(&buf[..t.len]);
                let origin = buf
                    .get(24..32)
                    .map(|b| MemberId(u64::from_be_bytes(b.try_into().expect("8 bytes"))));
                let new_frames = node.stats().frames_sent > frames_before;
                let group_dest = matches!(t.destination, Destination::Group(_));
                if new_frames && (group_dest || fanout != 0) {
                    report.first_tx_datagrams[m] += 1;
                }
                if (new_frames && group_dest) || (fanout != 0 && origin == Some(ids[m])) {
                    report.first_tx_copies[m] += targets.len() as u64;
                }
                if fanout != 0 && origin != Some(ids[m]) {
                    report.relayed_copies += targets.len() as u64;
                }
                report.egress[m] += targets.len() as u64;
                for to in targets {
                    // The copy leaves when the sender's link is free (if links are modelled).
                    let depart = match cfg.egress_bytes_per_sec {
                        Some(rate) => {
                            let start = link_free[m].max(now);
                            let ns = (t.len as u128 * 1_000_000_000 / rate.max(1) as u128) as u64;
                            link_free[m] = start + Duration::from_nanos(ns.max(1));
                            link_free[m]
                        }
                        None => now,
                    };
                    if partitioned(m, to, now) || rng.chance(cfg.loss) {
                        report.lost += 1;
                        continue;
                    }
                    let copies = if rng.chance(cfg.duplicate) { 2 } else { 1 };
                    for _ in 0..copies {
                        let span = (cfg.delay_max.saturating_sub(cfg.delay_min)).as_nanos() as u64;
                        let at = depart
                            + cfg.delay_min
                            + Duration::from_nanos(if span == 0 { 0 } else { rng.below(span) });
                        let mut bytes = buf[..t.len].to_vec();
                        if rng.chance(cfg.corrupt) {
                            let i = rng.below(bytes.len() as u64) as usize;
                            bytes[i] ^= 1 << rng.below(8);
                        }
                        order += 1;
                        net.push(InFlight {
                            at,
                            order,
                            to,
                            bytes,
                        });
                    }
                }
            }
            if let Some(s) = node.group_stats(SIM_GROUP) {
                report.max_retained = report.max_retained.max(s.retained_bytes);
                if s.retained_bytes > cfg.protocol.send_buffer_bytes {
                    return Err(fail(format!(
                        "member {m} retains {} bytes above the send buffer",
                        s.retained_bytes
                    )));
                }
                let held_limit = 2 * cfg.protocol.window_bytes + cfg.protocol.max_message_bytes;
                if s.held_bytes > held_limit * cfg.members * 2 {
                    return Err(fail(format!(
                        "member {m} holds {} bytes, above the receive limits",
                        s.held_bytes
                    )));
                }
            }
        }
        // Stall accounting: time a member with data in flight towards it went without delivering.
        let waiting = nodes.iter().any(|n| {
            n.group_stats(SIM_GROUP)
                .is_some_and(|s| s.min_received < s.next_unsent)
        });
        for m in 0..cfg.members {
            if waiting && nodes[m].sink().queue.is_empty() {
                let start = *stall_start[m].get_or_insert(last_progress[m].max(now));
                if cfg.partition.is_none() && cfg.loss == 0.0 {
                    report.max_stall = report.max_stall.max(now.saturating_since(start));
                }
            } else {
                stall_start[m] = None;
            }
        }

        // Quiescence?
        let sends_done = plan.iter().all(|q| q.is_empty());
        if sends_done && net.is_empty() {
            let all_delivered = nodes.iter().enumerate().all(|(m, n)| {
                let expected = expected_send.iter().map(|v| v.len()).sum::<usize>()
                    + expected_p2p
                        .iter()
                        .filter(|((_, to), _)| *to == m)
                        .map(|(_, v)| v.len())
                        .sum::<usize>();
                let got = n
                    .sink()
                    .log
                    .iter()
                    .filter(|r| r.kind != DeliveryKind::Raw && r.kind != DeliveryKind::RawP2p)
                    .count()
                    + n.sink()
                        .queue
                        .iter()
                        .filter(|r| r.kind != DeliveryKind::Raw && r.kind != DeliveryKind::RawP2p)
                        .count();
                got >= expected
            });
            let all_stable = nodes.iter().all(|n| n.all_stable(SIM_GROUP));
            if all_delivered && all_stable && nodes.iter().all(|n| n.sink().queue.is_empty()) {
                break;
            }
        }
        // Advance virtual time to the next event.
        let mut next = next_app.min(next_drain);
        if let Some(p) = net.peek() {
            next = next.min(p.at);
        }
        for node in &nodes {
            if let Some(t) = node.poll_timeout() {
                next = next.min(t.max(now + Duration::from_nanos(1)));
            }
        }
        now = next.max(now + Duration::from_nanos(1));
        if now > limit {
            let progress: Vec<String> = nodes
                .iter()
                .enumerate()
                .map(|(m, n)| {
                    let s = n.group_stats(SIM_GROUP).expect("joined");
                    format!(
                        "m{m}: retained={}/{} plan_left={} next_kind={:?} p2p_retained={} raw_queued={} log={} next_seq={} unsent={} min_recv={} held={} drops={:?} stats={:?}",
                        s.retained_bytes,
                        s.retained_frames,
                        plan[m].len(),
                        plan[m].front().map(|p| (p.0, p.1, p.2.len())),
                        s.p2p_retained_bytes,
                        s.raw_queued,
                        n.sink().log.len(),
                        s.next_seq,
                        s.next_unsent,
                        s.min_received,
                        s.held_bytes,
                        n.drops().nonzero().collect::<Vec<_>>(),
                        n.stats()
                    )
                })
                .collect();
            return Err(fail(format!(
                "no quiescence within {:?}: {}",
                cfg.time_limit,
                progress.join("; ")
            )));
        }
    }
    report.virtual_time = now.saturating_since(Timestamp::ZERO);

    // Per Send (sender, index): the last delivery time over members.
    let mut completed: Vec<Vec<Timestamp>> = admitted_at
        .iter()
        .map(|v| vec![Timestamp::ZERO; v.len()])
        .collect();
    // Check the invariants.
    for (r, node) in nodes.iter().enumerate() {
        let log = &node.sink().log;
        for (s, expected) in expected_send.iter().enumerate() {
            let got: Vec<&Record> = log
                .iter()
                .filter(|x| x.sender == ids[s] && x.kind == DeliveryKind::Send)
                .collect();
            if got.len() != expected.len() {
                return Err(fail(format!(
                    "member {r} delivered {} Sends from {s}, expected {}",
                    got.len(),
                    expected.len()
                )));
            }
            let mut last_seq = 0;
            for (i, g) in got.iter().enumerate() {
                if let Some(c) = completed[s].get_mut(i) {
                    *c = (*c).max(g.at);
                }
            }
            for (i, (g, e)) in got.iter().zip(expected).enumerate() {
                if g.seq <= last_seq {
                    return Err(fail(format!("member {r}: Send {i} from {s} out of order or duplicated (seq {} after {last_seq})", g.seq)));
                }
                last_seq = g.seq;
                if (g.len, g.hash) != *e {
                    return Err(fail(format!(
                        "member {r}: Send {i} from {s} has different bytes (len {} vs {})",
                        g.len, e.0
                    )));
                }
            }
        }
        for (s, sender_id) in ids.iter().enumerate() {
            let expected = expected_p2p.get(&(s, r)).cloned().unwrap_or_default();
            let got: Vec<(usize, u64)> = log
                .iter()
                .filter(|x| x.sender == *sender_id && x.kind == DeliveryKind::P2p)
                .map(|x| (x.len, x.hash))
                .collect();
            if got != expected {
                return Err(fail(format!("member {r}: P2P from {s}: got {} messages, expected {} (or different order/bytes)", got.len(), expected.len())));
            }
        }
        for x in log
            .iter()
            .filter(|x| x.kind == DeliveryKind::Raw || x.kind == DeliveryKind::RawP2p)
        {
            let s = ids
                .iter()
                .position(|i| *i == x.sender)
                .expect("known sender");
            if !raw_hashes.get(&s).is_some_and(|v| v.contains(&x.hash)) {
                return Err(fail(format!(
                    "member {r}: raw message from {s} does not match any raw send"
                )));
            }
        }
        report.delivered += log.len() as u64;
        report.retransmitted += node.stats().frames_retransmitted;
        for (name, n) in node.drops().nonzero() {
            *report.drops.entry(name).or_default() += n;
        }
    }
    let mut total = Duration::ZERO;
    let mut count = 0u32;
    for (sent, done) in admitted_at.iter().zip(&completed) {
        for (a, d) in sent.iter().zip(done) {
            let l = d.saturating_since(*a);
            total += l;
            count += 1;
            report.latency_max = report.latency_max.max(l);
        }
    }
    if count > 0 {
        report.latency_mean = total / count;
    }
    Ok(report)
}
