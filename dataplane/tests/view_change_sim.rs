//! Seeded deterministic simulation of the data-plane half of the virtual-synchrony view change.
//!
//! 3–6 real endpoints in one group stream Sends (some fragmented) and P2P messages over a
//! network that loses, duplicates and reorders datagrams. At a random time 1–2 members crash
//! (they are no longer driven and nothing reaches them). A test-side coordinator then wedges
//! every survivor, computes the cut (per sender the maximum position over the survivors'
//! reports, held by the lowest-index survivor that reported it), flushes every survivor and
//! runs until all are `flushed`. In some runs a holder named by the cut crashes right after the
//! flush started; the coordinator re-wedges the remaining survivors and computes a new cut.
//!
//! Checked: every survivor delivered, in the old view, exactly the same messages from every
//! sender (crashed senders included), each once, in FIFO order, with the bytes sent; a live
//! sender's messages are all delivered (it self-delivered them). Then view+1 is installed with
//! the survivors, new Sends flow to every survivor, and every P2P message between survivors
//! (sent before, during and after the change) is delivered exactly once, in order.
//!
//! A relay-tree variant runs groups of 24–36 members without an IP-multicast address (so every
//! sender's data goes down a k-ary relay tree) and crashes 1–3 *interior* relay nodes of the
//! first sender's tree mid-stream: their subtrees recover by NAK from the sender, and the same
//! checks hold for every survivor (then the new view, with its own trees, is checked too).
//!
//! * `VSYNC_VC_SEEDS=N` — number of seeds (default 2000).
//! * `VSYNC_VC_SEED=S` — replay one seed (prints its parameters and outcome).
//! * `VSYNC_VC_TREE_SEEDS=N` — seeds of the relay-tree variant (default 16);
//!   `VSYNC_VC_TREE_SEED=S` replays one.

use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use vsync_dataplane::config::ProtocolConfig;
use vsync_dataplane::protocol::tree;
use vsync_dataplane::protocol::{
    CutEntry, Delivery, DeliveryKind, DeliverySink, Destination, Endpoint, GroupSpec, Protocol,
    SendError, WedgeReport,
};
use vsync_dataplane::rng::Rng;
use vsync_dataplane::{GroupId, MemberId, Timestamp, ViewId};

const GROUP: GroupId = GroupId(0x7c);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rec {
    sender: MemberId,
    kind: DeliveryKind,
    view: ViewId,
    seq: u64,
    hash: u64,
}

/// A bounded application queue (pushes back when full) that logs what it took.
#[derive(Default)]
struct Sink {
    queue: VecDeque<Rec>,
    capacity: usize,
    log: Vec<Rec>,
}

impl DeliverySink for Sink {
    fn deliver(&mut self, d: &Delivery<'_>) -> bool {
        if self.queue.len() >= self.capacity {
            return false;
        }
        self.queue.push_back(Rec {
            sender: d.sender,
            kind: d.kind,
            view: d.view,
            seq: d.seq,
            hash: xxhash_rust::xxh3::xxh3_64(d.payload),
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

#[derive(Clone, Debug)]
struct Params {
    members: usize,
    crashes: usize,
    holder_crash: bool,
    msgs: usize,
    max_len: usize,
    p2p: usize,
    loss: f64,
    duplicate: f64,
    delay_min: Duration,
    delay_max: Duration,
    multicast: bool,
    system_key: bool,
    sink_capacity: usize,
    drain: Duration,
    crash_at: Duration,
    protocol: ProtocolConfig,
    /// Members with index below this send multicasts (the others only P2P).
    senders: usize,
    /// Crash interior nodes of member 0's relay tree instead of random members.
    tree_crash: bool,
}

fn params(seed: u64) -> Params {
    let mut r = Rng::new(seed ^ 0x71e7_c4a9);
    let members = 3 + r.below(4) as usize;
    let crashes = if members >= 4 && r.chance(0.4) { 2 } else { 1 };
    let protocol = ProtocolConfig {
        mtu: [576, 900, 1472][r.below(3) as usize],
        max_message_bytes: 64 << 10,
        window_bytes: [65536, 131072][r.below(2) as usize],
        window_frames: [64, 256][r.below(2) as usize],
        send_buffer_bytes: 256 << 10,
        nak_delay: Duration::from_micros(r.below(300)),
        nak_retry: Duration::from_micros(500 + r.below(2000)),
        ack_interval: Duration::from_micros(200 + r.below(1500)),
        heartbeat_interval: Duration::from_micros(500 + r.below(2000)),
        retain_bytes: [65536, 262144][r.below(2) as usize],
        ..ProtocolConfig::default()
    };
    Params {
        members,
        crashes,
        holder_crash: members - crashes >= 3 && r.chance(0.35),
        msgs: 5 + r.below(30) as usize,
        max_len: [300, 3000, 12000][r.below(3) as usize],
        p2p: r.below(6) as usize,
        loss: [0.0, 0.01, 0.05, 0.1][r.below(4) as usize],
        duplicate: [0.0, 0.02, 0.1][r.below(3) as usize],
        delay_min: Duration::from_micros(10 + r.below(80)),
        delay_max: Duration::from_micros(100 + r.below(1500)),
        multicast: r.chance(0.5),
        system_key: r.chance(0.2),
        sink_capacity: [4, 64, 100_000][r.below(3) as usize],
        drain: Duration::from_micros([50, 300, 2000][r.below(3) as usize]),
        crash_at: Duration::from_micros(r.below(12_000)),
        protocol,
        senders: members,
        tree_crash: false,
    }
}

/// The relay-tree variant: a large unicast group, interior relays of member 0's tree crash.
fn tree_params(seed: u64) -> Params {
    let mut r = Rng::new(seed ^ 0x7ee7_c4a9);
    let members = [24, 28, 36][r.below(3) as usize];
    let protocol = ProtocolConfig {
        mtu: [900, 1472][r.below(2) as usize],
        max_message_bytes: 64 << 10,
        window_bytes: 131072,
        window_frames: 256,
        send_buffer_bytes: 256 << 10,
        nak_delay: Duration::from_micros(r.below(300)),
        nak_retry: Duration::from_micros(500 + r.below(2000)),
        ack_interval: Duration::from_micros(200 + r.below(1500)),
        heartbeat_interval: Duration::from_micros(500 + r.below(2000)),
        retain_bytes: 262144,
        relay_threshold: 16,
        relay_fanout: 2 + r.below(3) as usize,
        ..ProtocolConfig::default()
    };
    let crashes = 1 + r.below(3) as usize;
    Params {
        members,
        crashes,
        holder_crash: r.chance(0.3),
        msgs: 10 + r.below(20) as usize,
        max_len: [300, 3000][r.below(2) as usize],
        p2p: r.below(3) as usize,
        loss: [0.0, 0.01, 0.03][r.below(3) as usize],
        duplicate: [0.0, 0.02][r.below(2) as usize],
        delay_min: Duration::from_micros(10 + r.below(80)),
        delay_max: Duration::from_micros(100 + r.below(1000)),
        multicast: false,
        system_key: r.chance(0.2),
        sink_capacity: [64, 100_000][r.below(2) as usize],
        drain: Duration::from_micros([50, 300][r.below(2) as usize]),
        crash_at: Duration::from_micros(300 + r.below(3000)),
        protocol,
        senders: 1 + r.below(3) as usize,
        tree_crash: true,
    }
}

fn id(i: usize) -> MemberId {
    MemberId::new(i as u32 + 1, 7)
}

fn payload(seed: u64, m: usize, kind: u64, i: usize, len: usize) -> Vec<u8> {
    let mut r = Rng::new(seed ^ ((m as u64) << 40) ^ (kind << 32) ^ i as u64);
    (0..len).map(|_| r.next_u64() as u8).collect()
}

/// What one planned message is: Send or P2P to a member index.
#[derive(Clone, Debug)]
enum Planned {
    Send(Vec<u8>),
    P2p(usize, Vec<u8>),
}

struct World {
    seed: u64,
    p: Params,
    rng: Rng,
    now: Timestamp,
    nodes: Vec<Endpoint<Sink>>,
    alive: Vec<bool>,
    net: BinaryHeap<InFlight>,
    order: u64,
    plan: Vec<VecDeque<Planned>>,
    /// Per sender, per view: (first seq, hash) of admitted Sends, in order.
    sent: BTreeMap<(usize, ViewId), Vec<(u64, u64)>>,
    /// Per (from, to): hashes of admitted P2P messages, in order.
    p2p_sent: BTreeMap<(usize, usize), Vec<u64>>,
    buf: Vec<u8>,
    next_app: Timestamp,
    next_drain: Timestamp,
    /// The view each member is in (the coordinator's knowledge).
    current_view: Vec<ViewId>,
}

fn fail<T>(seed: u64, msg: String) -> Result<T, String> {
    Err(format!(
        "view-change seed={seed} failed: {msg} (replay: VSYNC_VC_SEED={seed})"
    ))
}

impl World {
    fn new(seed: u64, p: Params) -> World {
        let mut rng = Rng::new(seed);
        let members: Vec<MemberId> = (0..p.members).map(id).collect();
        let nodes = (0..p.members)
            .map(|i| {
                let sink = Sink {
                    capacity: p.sink_capacity,
                    ..Sink::default()
                };
                let mut e =
                    Endpoint::new(p.protocol.clone(), id(i), 1 << 20, seed ^ i as u64, sink);
                if p.system_key {
                    e.set_system_key(Some(&[3u8; 32]));
                }
                e.join(
                    GROUP,
                    GroupSpec {
                        view: ViewId(1),
                        members: members.clone(),
                        multicast: p.multicast,
                        key: None,
                    },
                );
                e
            })
            .collect();
        let mut plan = vec![VecDeque::new(); p.members];
        for (m, q) in plan.iter_mut().enumerate() {
            let mut k = 0;
            for i in 0..p.msgs {
                let len = if rng.chance(0.7) {
                    rng.below(200) as usize
                } else {
                    rng.below(p.max_len as u64 + 1) as usize
                };
                if m < p.senders {
                    q.push_back(Planned::Send(payload(seed, m, 0, i, len)));
                }
                if k < p.p2p && rng.chance(0.3) {
                    let mut to = rng.below(p.members as u64 - 1) as usize;
                    if to >= m {
                        to += 1;
                    }
                    let len = rng.below(p.max_len.min(4000) as u64 + 1) as usize;
                    q.push_back(Planned::P2p(to, payload(seed, m, 1, k, len)));
                    k += 1;
                }
            }
        }
        World {
            seed,
            buf: vec![0u8; p.protocol.mtu],
            p,
            rng,
            now: Timestamp::ZERO,
            nodes,
            alive: vec![true; members.len()],
            net: BinaryHeap::new(),
            order: 0,
            plan,
            sent: BTreeMap::new(),
            p2p_sent: BTreeMap::new(),
            next_app: Timestamp::ZERO,
            next_drain: Timestamp::ZERO,
            current_view: vec![ViewId(1); members.len()],
        }
    }

    fn survivors(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| self.alive[*i]).collect()
    }

    fn send_p2p(&mut self, m: usize, to: usize, bytes: &[u8]) -> Result<bool, String> {
        match self.nodes[m].try_send_p2p(self.now, GROUP, id(to), bytes) {
            Ok(_) => {
                self.p2p_sent
                    .entry((m, to))
                    .or_default()
                    .push(xxhash_rust::xxh3::xxh3_64(bytes));
                Ok(true)
            }
            Err(SendError::WouldBlock) => Ok(false),
            // The peer left the view (a crashed member removed by the install): never sent.
            Err(SendError::UnknownMember(_)) => Ok(true),
            Err(e) => fail(self.seed, format!("member {m}: P2P send error {e}")),
        }
    }

    /// Applications send what backpressure (and wedging) allows.
    fn app(&mut self) -> Result<(), String> {
        for m in 0..self.nodes.len() {
            if !self.alive[m] {
                continue;
            }
            while let Some(item) = self.plan[m].front().cloned() {
                let ok = match &item {
                    Planned::Send(bytes) => match self.nodes[m].try_send(self.now, GROUP, bytes) {
                        Ok(seq) => {
                            let view = self.view_of(m);
                            self.sent
                                .entry((m, view))
                                .or_default()
                                .push((seq, xxhash_rust::xxh3::xxh3_64(bytes)));
                            true
                        }
                        Err(SendError::WouldBlock) | Err(SendError::Wedged(_)) => false,
                        Err(e) => return fail(self.seed, format!("member {m}: send error {e}")),
                    },
                    Planned::P2p(to, bytes) => self.send_p2p(m, *to, bytes)?,
                };
                if !ok {
                    break;
                }
                self.plan[m].pop_front();
            }
        }
        Ok(())
    }

    fn view_of(&self, m: usize) -> ViewId {
        self.current_view[m]
    }

    /// One simulation step: apps, drains, network, timers, transmissions; advances time.
    fn step(&mut self) -> Result<(), String> {
        if self.now >= self.next_app {
            self.next_app = self.now + Duration::from_micros(50);
            self.app()?;
        }
        if self.now >= self.next_drain {
            self.next_drain = self.now + self.p.drain;
            for m in 0..self.nodes.len() {
                if !self.alive[m] {
                    continue;
                }
                let sink = self.nodes[m].sink_mut();
                let drained: Vec<Rec> = sink.queue.drain(..).collect();
                sink.log.extend(drained);
                self.nodes[m].poll_delivery();
            }
        }
        let from = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1));
        while self.net.peek().is_some_and(|p| p.at <= self.now) {
            let mut p = self.net.pop().expect("peeked");
            if self.alive[p.to] {
                self.nodes[p.to].handle_datagram(self.now, from, &mut p.bytes);
            }
        }
        for m in 0..self.nodes.len() {
            if self.alive[m] && self.nodes[m].poll_timeout().is_some_and(|t| t <= self.now) {
                self.nodes[m].handle_timeout(self.now);
            }
        }
        let n = self.nodes.len();
        for m in 0..n {
            if !self.alive[m] {
                continue;
            }
            while let Some(t) = self.nodes[m].poll_transmit(self.now, &mut self.buf) {
                if t.len > self.p.protocol.mtu {
                    return fail(self.seed, format!("member {m}: datagram above the MTU"));
                }
                let targets: Vec<usize> = match t.destination {
                    Destination::Group(_) => (0..n).filter(|x| *x != m).collect(),
                    Destination::Member(to) => (0..n).filter(|x| id(*x) == to).collect(),
                };
                for to in targets {
                    if !self.alive[to] || self.rng.chance(self.p.loss) {
                        continue;
                    }
                    let copies = if self.rng.chance(self.p.duplicate) {
                        2
                    } else {
                        1
                    };
                    for _ in 0..copies {
                        let span = (self.p.delay_max - self.p.delay_min).as_nanos() as u64;
                        let at = self.now
                            + self.p.delay_min
                            + Duration::from_nanos(self.rng.below(span.max(1)));
                        self.order += 1;
                        self.net.push(InFlight {
                            at,
                            order: self.order,
                            to,
                            bytes: self.buf[..t.len].to_vec(),
                        });
                    }
                }
            }
            let s = self.nodes[m].group_stats(GROUP).expect("joined");
            if !s.wedged && s.relay_retained_bytes > self.p.protocol.retain_bytes * n {
                return fail(
                    self.seed,
                    format!(
                        "member {m} retains {} bytes for relays",
                        s.relay_retained_bytes
                    ),
                );
            }
        }
        let mut next = self.next_app.min(self.next_drain);
        if let Some(p) = self.net.peek() {
            next = next.min(p.at);
        }
        for m in 0..n {
            if self.alive[m] {
                if let Some(t) = self.nodes[m].poll_timeout() {
                    next = next.min(t);
                }
            }
        }
        self.now = next.max(self.now + Duration::from_nanos(1));
        if self.now > Timestamp::ZERO + Duration::from_secs(60) {
            return fail(self.seed, "virtual time limit (60 s) exceeded".into());
        }
        Ok(())
    }

    fn crash(&mut self, m: usize) {
        self.alive[m] = false;
    }

    /// Wedges every survivor and computes the cut: per sender the maximum position over the
    /// survivors' reports, held by the lowest-index survivor reporting it.
    fn wedge_and_cut(&mut self, view: ViewId) -> Result<Vec<CutEntry>, String> {
        let survivors = self.survivors();
        let mut reports: Vec<(usize, WedgeReport)> = Vec::new();
        for &s in &survivors {
            match self.nodes[s].wedge(GROUP, view) {
                Ok(r) => reports.push((s, r)),
                Err(e) => return fail(self.seed, format!("member {s}: wedge refused: {e}")),
            }
            if !self.nodes[s].is_wedged(GROUP) {
                return fail(self.seed, format!("member {s}: not wedged after wedge"));
            }
        }
        let mut cut = Vec::new();
        for sender in 0..self.nodes.len() {
            let mut best: Option<(u64, usize)> = None;
            for (s, r) in &reports {
                let pos = r
                    .positions
                    .iter()
                    .find(|(m, _)| *m == id(sender))
                    .map(|(_, p)| *p)
                    .unwrap_or(0);
                if best.is_none_or(|(b, _)| pos > b) {
                    best = Some((pos, *s));
                }
            }
            let (through, holder) = best.expect("survivors");
            cut.push(CutEntry {
                sender: id(sender),
                through,
                holder: id(holder),
            });
        }
        for &s in &survivors {
            if let Err(e) = self.nodes[s].flush(GROUP, view, &cut) {
                return fail(
                    self.seed,
                    format!("member {s}: flush refused: {e} (cut {cut:?})"),
                );
            }
            // Same cut again: a no-op.
            if let Err(e) = self.nodes[s].flush(GROUP, view, &cut) {
                return fail(
                    self.seed,
                    format!("member {s}: repeated flush refused: {e}"),
                );
            }
        }
        Ok(cut)
    }

    fn drain_all(&mut self) {
        for m in 0..self.nodes.len() {
            let sink = self.nodes[m].sink_mut();
            let drained: Vec<Rec> = sink.queue.drain(..).collect();
            sink.log.extend(drained);
        }
    }

    fn check_old_view(&self, view: ViewId) -> Result<(), String> {
        let survivors = self.survivors();
        for sender in 0..self.nodes.len() {
            let admitted = self.sent.get(&(sender, view)).cloned().unwrap_or_default();
            let mut agreed: Option<Vec<(u64, u64)>> = None;
            for &r in &survivors {
                let got: Vec<(u64, u64)> = self.nodes[r]
                    .sink()
                    .log
                    .iter()
                    .filter(|x| x.sender == id(sender) && x.kind == DeliveryKind::Send)
                    .filter(|x| x.view == view)
                    .map(|x| (x.seq, x.hash))
                    .collect();
                if got.len() > admitted.len() || got[..] != admitted[..got.len()] {
                    return fail(
                        self.seed,
                        format!(
                            "member {r}: Sends of {sender} in view {} are not a FIFO prefix of what it sent \
                             (got {} messages, sent {})",
                            view.0,
                            got.len(),
                            admitted.len()
                        ),
                    );
                }
                if self.alive[sender] && got.len() != admitted.len() {
                    return fail(
                        self.seed,
                        format!(
                            "member {r}: delivered {} of live sender {sender}'s {} Sends in view {}",
                            got.len(),
                            admitted.len(),
                            view.0
                        ),
                    );
                }
                match &agreed {
                    None => agreed = Some(got),
                    Some(a) if *a != got => {
                        return fail(
                            self.seed,
                            format!(
                            "survivors disagree on {sender}'s Sends in view {}: {} vs {} messages",
                            view.0,
                            a.len(),
                            got.len()
                        ),
                        )
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

struct Outcome {
    virtual_time: Duration,
    holder_crashed: bool,
    relays: u64,
    /// Relay-tree datagrams survivors forwarded to their children.
    tree_forwards: u64,
}

fn run(seed: u64, p: Params) -> Result<Outcome, String> {
    let mut w = World::new(seed, p);
    let view1 = ViewId(1);
    let view2 = ViewId(2);
    // 1. Run until the crash.
    let crash_at = Timestamp::ZERO + w.p.crash_at;
    while w.now < crash_at {
        w.step()?;
    }
    let mut r = Rng::new(seed ^ 0xc4a5);
    let mut victims = Vec::new();
    if w.p.tree_crash {
        // Interior relays of member 0's tree (member 0 has rank 0, so relative ranks are
        // ranks): the first level, every one of which has children of its own.
        let (n, k) = (w.p.members, w.p.protocol.relay_fanout);
        let interior: Vec<usize> = tree::children(0, k, n)
            .filter(|rel| !tree::children(*rel, k, n).is_empty())
            .collect();
        while victims.len() < w.p.crashes.min(interior.len()) {
            let v = interior[r.below(interior.len() as u64) as usize];
            if !victims.contains(&v) {
                victims.push(v);
            }
        }
    }
    while victims.len() < w.p.crashes {
        let v = r.below(w.p.members as u64) as usize;
        if !victims.contains(&v) {
            victims.push(v);
        }
    }
    for &v in &victims {
        w.crash(v);
    }
    // Failure detection takes a little while; traffic goes on meanwhile.
    let detect = w.now + Duration::from_micros(r.below(3000));
    while w.now < detect {
        w.step()?;
    }
    // 2. Wedge, cut, flush.
    let mut cut = w.wedge_and_cut(view1)?;
    let mut holder_crashed = false;
    if w.p.holder_crash {
        // Let the flush start, then crash a survivor named as holder.
        let t = w.now + Duration::from_micros(r.below(1500));
        while w.now < t {
            w.step()?;
        }
        let holders: Vec<usize> = w
            .survivors()
            .into_iter()
            .filter(|s| cut.iter().any(|c| c.holder == id(*s) && c.through > 0))
            .collect();
        if !holders.is_empty() && w.survivors().len() > 2 {
            let h = holders[r.below(holders.len() as u64) as usize];
            w.crash(h);
            holder_crashed = true;
            cut = w.wedge_and_cut(view1)?;
        }
    }
    let mut steps = 0u64;
    while !w.survivors().iter().all(|s| w.nodes[*s].flushed(GROUP)) {
        w.step()?;
        steps += 1;
        if steps > 3_000_000 {
            let state: Vec<String> = w
                .survivors()
                .iter()
                .map(|s| {
                    let n = &mut w.nodes[*s];
                    let r = n.wedge(GROUP, view1);
                    format!(
                        "m{s}: flushed={} positions={:?} drops={:?} stats={:?}",
                        n.flushed(GROUP),
                        r.map(|r| r.positions),
                        n.drops().nonzero().collect::<Vec<_>>(),
                        n.stats()
                    )
                })
                .collect();
            return fail(
                seed,
                format!(
                    "flush never completed (3M steps): cut {cut:?}; {}",
                    state.join("; ")
                ),
            );
        }
    }
    w.drain_all();
    w.check_old_view(view1)?;
    // 3. Install view 2 with the survivors.
    let survivors = w.survivors();
    let members: Vec<MemberId> = survivors.iter().map(|s| id(*s)).collect();
    for &s in &survivors {
        let spec = GroupSpec {
            view: view2,
            members: members.clone(),
            multicast: w.p.multicast,
            key: None,
        };
        if let Err(e) = w.nodes[s].install(GROUP, spec) {
            return fail(seed, format!("member {s}: install refused: {e}"));
        }
        if w.nodes[s].is_wedged(GROUP) {
            return fail(seed, format!("member {s}: still wedged after install"));
        }
        w.current_view[s] = view2;
    }
    // New-view workload: a few more Sends and P2P messages from every survivor.
    for &s in &survivors {
        for i in 0..5 {
            let len = r.below(w.p.max_len as u64 + 1) as usize;
            w.plan[s].push_back(Planned::Send(payload(seed, s, 2, i, len)));
            let to = survivors[r.below(survivors.len() as u64) as usize];
            if to != s {
                w.plan[s].push_back(Planned::P2p(to, payload(seed, s, 3, i, 100)));
            }
        }
    }
    // 4. Run until every survivor delivered everything expected.
    let mut steps = 0u64;
    loop {
        w.step()?;
        steps += 1;
        let plans_done = survivors.iter().all(|s| w.plan[*s].is_empty());
        if plans_done {
            w.drain_all();
            if complete(&w, &survivors, view2) {
                break;
            }
        }
        if steps > 3_000_000 {
            return fail(seed, "new view never quiesced (3M steps)".into());
        }
    }
    // Check the new view's Sends and every P2P stream between survivors.
    for &r_ in &survivors {
        let log = &w.nodes[r_].sink().log;
        for &s in &survivors {
            let want = w.sent.get(&(s, view2)).cloned().unwrap_or_default();
            let got: Vec<(u64, u64)> = log
                .iter()
                .filter(|x| x.sender == id(s) && x.kind == DeliveryKind::Send && x.view == view2)
                .map(|x| (x.seq, x.hash))
                .collect();
            if got != want {
                return fail(
                    seed,
                    format!(
                        "member {r_}: view-2 Sends of {s}: got {} expected {}",
                        got.len(),
                        want.len()
                    ),
                );
            }
            if s == r_ {
                continue;
            }
            let want = w.p2p_sent.get(&(s, r_)).cloned().unwrap_or_default();
            let got: Vec<u64> = log
                .iter()
                .filter(|x| x.sender == id(s) && x.kind == DeliveryKind::P2p)
                .map(|x| x.hash)
                .collect();
            if got != want {
                return fail(
                    seed,
                    format!(
                        "member {r_}: P2P from {s}: got {} expected {} (or different order/bytes)",
                        got.len(),
                        want.len()
                    ),
                );
            }
        }
    }
    let relays = survivors
        .iter()
        .map(|s| w.nodes[*s].stats().relay_frames_received)
        .sum();
    let tree_forwards = survivors
        .iter()
        .map(|s| w.nodes[*s].stats().relayed_datagrams)
        .sum();
    Ok(Outcome {
        virtual_time: w.now.saturating_since(Timestamp::ZERO),
        holder_crashed,
        relays,
        tree_forwards,
    })
}

fn complete(w: &World, survivors: &[usize], view2: ViewId) -> bool {
    survivors.iter().all(|&r| {
        let log = &w.nodes[r].sink().log;
        let sends: usize = survivors
            .iter()
            .map(|s| w.sent.get(&(*s, view2)).map_or(0, |v| v.len()))
            .sum();
        let got_sends = log
            .iter()
            .filter(|x| x.kind == DeliveryKind::Send && x.view == view2)
            .count();
        let p2p: usize = survivors
            .iter()
            .filter(|s| **s != r)
            .map(|s| w.p2p_sent.get(&(*s, r)).map_or(0, |v| v.len()))
            .sum();
        let got_p2p = log
            .iter()
            .filter(|x| x.kind == DeliveryKind::P2p && survivors.iter().any(|s| id(*s) == x.sender))
            .count();
        got_sends >= sends && got_p2p >= p2p
    })
}

#[test]
fn view_change_seeds() {
    if std::env::var("VSYNC_VC_SEED").is_ok() {
        return;
    }
    let n: u64 = std::env::var("VSYNC_VC_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let (mut holder_crashes, mut relays) = (0, 0);
    for seed in 0..n {
        match run(seed, params(seed)) {
            Ok(o) => {
                holder_crashes += o.holder_crashed as u64;
                relays += o.relays;
            }
            Err(e) => panic!("{e}\nparams: {:?}", params(seed)),
        }
    }
    println!("{n} seeds: {holder_crashes} with a holder crash, {relays} frames relayed");
    assert!(relays > 0, "the flush must actually relay frames");
    assert!(
        n < 50 || holder_crashes > 0,
        "the holder-crash variant must run"
    );
}

#[test]
fn replay_one_seed() {
    let Some(seed) = std::env::var("VSYNC_VC_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    else {
        return;
    };
    println!("{:#?}", params(seed));
    match run(seed, params(seed)) {
        Ok(o) => println!(
            "ok: virtual time {:?}, holder crashed {}, {} frames relayed",
            o.virtual_time, o.holder_crashed, o.relays
        ),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn relay_tree_interior_crashes() {
    if std::env::var("VSYNC_VC_TREE_SEED").is_ok() {
        return;
    }
    let n: u64 = std::env::var("VSYNC_VC_TREE_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let mut forwards = 0;
    for seed in 0..n {
        match run(seed, tree_params(seed)) {
            Ok(o) => forwards += o.tree_forwards,
            Err(e) => panic!(
                "{e} (relay-tree variant: VSYNC_VC_TREE_SEED={seed})\nparams: {:?}",
                tree_params(seed)
            ),
        }
    }
    println!("{n} relay-tree seeds: {forwards} datagrams forwarded down trees");
    assert!(
        n == 0 || forwards > 0,
        "the relay tree must actually be used"
    );
}

#[test]
fn relay_tree_replay_one_seed() {
    let Some(seed) = std::env::var("VSYNC_VC_TREE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    else {
        return;
    };
    println!("{:#?}", tree_params(seed));
    match run(seed, tree_params(seed)) {
        Ok(o) => println!(
            "ok: virtual time {:?}, holder crashed {}, {} frames relayed, {} tree forwards",
            o.virtual_time, o.holder_crashed, o.relays, o.tree_forwards
        ),
        Err(e) => panic!("{e}"),
    }
}
