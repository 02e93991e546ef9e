//! Dr. Multicast address switches on real sockets (issue #3): the oracle moves the single
//! IP-multicast address between two groups while members stream Sends and OrderedSends, and
//! nothing is lost, duplicated or reordered.
//!
//! One embedded oracle (`max_addrs = 1`, a small 239.255.x.y range, remap every 200 ms) and
//! seven [`MemberRuntime`]s on 127.0.0.1, each on its own thread. Members 1–3 (the senders)
//! are in both groups A and B; members 4–5 are in A only and 6–7 in B only. The extra members
//! are needed: with identical member sets the two groups would *share* the one address
//! (Dr. Multicast merges groups whose receivers overlap with Jaccard ≥ ½, `drmc::assign`
//! step 5), so the address would never move; here |A ∩ B| / |A ∪ B| = 3/7. Members 5 and 6
//! are sluggish (a 20 ms nap per duty cycle): they see each remap late, after the senders
//! already send to an address they have not joined, so the switch really costs them
//! datagrams that NAK repair must bring back. Members 2, 4, 6 run the portable engine
//! backend, the others io_uring (when available).
//!
//! Member 3 reaches the oracle through a proxy that drops the first status announcing each
//! remap to it (a lost UDP datagram): it must learn the mapping from the oracle's answers to
//! its later heartbeats (regression: the oracle used to re-send a status only for a view or
//! flush step the member was behind in, so member 3 kept a stale route until the next view).
//!
//! Phase 1: the senders stream into A (B gets a trickle) → A holds the address. Phase 2: the
//! stream moves to B (A keeps a trickle) → the address moves to B and A falls back to unicast
//! fan-out. Phase 3: back to A. Every phase lasts past the 2 s leave grace, so old addresses
//! are really left and the phase-3 address is joined again. A sniffer socket joined to every
//! address of the range counts the datagrams that actually travel on each address.
//!
//! Checked: the address moved A → B → A at every member (routes, joins, leaves), every
//! member delivered every message of every sender exactly once in FIFO order per sender, and
//! the OrderedSends of a group in one identical order at all its members.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use vsync_control::agent::{AgentError, AgentEvent, MsgKind};
use vsync_control::drmc::McParams;
use vsync_control::oracle::{group_id, Signature};
use vsync_control::proto::FromOracle;
use vsync_control::runtime::{MemberRuntime, OracleNode, RuntimeConfig, RuntimeStats};
use vsync_control::service::ServiceConfig;
use vsync_dataplane::engine::{BackendChoice, BackendKind};
use vsync_dataplane::protocol::SendError;
use vsync_dataplane::{GroupId, MemberId, ViewId};

/// Members (threads); members 0..SENDERS are in both groups and send.
const MEMBERS: usize = 7;
const SENDERS: usize = 3;
const A: usize = 0;
const B: usize = 1;
const NAMES: [&str; 2] = ["drmc-switch-A", "drmc-switch-B"];
/// Messages per second per sender into the hot group, and into the cold one.
const HOT_RATE: f64 = 500.0;
const COLD_RATE: f64 = 15.0;
/// Every ORDERED_EVERY-th message of a sender in a group is an OrderedSend.
const ORDERED_EVERY: u64 = 8;
/// How long each phase streams after every member saw its mapping (past the 2 s grace).
const HOLD: Duration = Duration::from_millis(2600);
/// Addresses in the test's range.
const RANGE: u8 = 4;
/// Sluggish members (one per group, receivers only): they sleep this long between duty
/// cycles, so they see each remap up to that much later than the senders, who meanwhile send
/// to an address these members have not joined yet. Those datagrams are lost for them and
/// must come back through NAK repair.
const SLUGGISH: [usize; 2] = [4, 5];
const SLUGGISH_NAP: Duration = Duration::from_millis(20);
/// The member whose oracle link loses the first status of every remap (see the module docs).
const LOSSY: usize = 2;

const SETUP: u8 = 0;
const STOP: u8 = 4;
const EXIT: u8 = 5;

const SEND: usize = 0;
const ORDERED: usize = 1;

fn in_group(member: usize, group: usize) -> bool {
    member < SENDERS || (group == A && (3..5).contains(&member)) || (group == B && member >= 5)
}

/// The group the senders stream into in `phase` (1..=3).
fn hot(phase: u8) -> usize {
    if phase == 2 {
        B
    } else {
        A
    }
}

fn group_size(group: usize) -> usize {
    (0..MEMBERS).filter(|m| in_group(*m, group)).count()
}

/// State shared by the member threads and the conductor (the test's main thread).
struct Shared {
    phase: AtomicU8,
    abort: AtomicBool,
    ready: Vec<AtomicBool>,
    /// Set by a sender once it saw `STOP` (it sends nothing after).
    stopped: Vec<AtomicBool>,
    /// Per member: the multicast route of A and of B.
    routes: Mutex<Vec<[Option<SocketAddrV4>; 2]>>,
    /// Messages sent: index `sent_index(sender, group, kind)`.
    sent: Vec<AtomicU64>,
    /// Deliveries per member.
    delivered: Vec<AtomicU64>,
}

fn sent_index(sender: usize, group: usize, kind: usize) -> usize {
    (sender * 2 + group) * 2 + kind
}

impl Shared {
    fn new() -> Self {
        Shared {
            phase: AtomicU8::new(SETUP),
            abort: AtomicBool::new(false),
            ready: (0..MEMBERS).map(|_| AtomicBool::new(false)).collect(),
            stopped: (0..MEMBERS).map(|_| AtomicBool::new(false)).collect(),
            routes: Mutex::new(vec![[None, None]; MEMBERS]),
            sent: (0..SENDERS * 4).map(|_| AtomicU64::new(0)).collect(),
            delivered: (0..MEMBERS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn sent(&self, sender: usize, group: usize, kind: usize) -> u64 {
        self.sent[sent_index(sender, group, kind)].load(Ordering::SeqCst)
    }
}

/// What one member saw.
#[derive(Debug, Default)]
struct MemberLog {
    /// (group, sender) → Send sequence numbers in delivery order.
    fifo: BTreeMap<(usize, usize), Vec<u64>>,
    /// Per group: the OrderedSends (sender, seq) in delivery order.
    ordered: [Vec<(usize, u64)>; 2],
    /// Views installed: (group, view id, size).
    views: Vec<(usize, ViewId, usize)>,
    /// Views in which messages were delivered, per group.
    delivery_views: [Vec<ViewId>; 2],
    /// Route changes: (time since start, [route of A, route of B]).
    routes: Vec<(Duration, [Option<SocketAddrV4>; 2])>,
    stats: RuntimeStats,
    backend: Option<BackendKind>,
    naks_sent: u64,
    retransmitted: u64,
    duplicates: u64,
    drops: Vec<(&'static str, u64)>,
}

/// Payload: group, kind, sender, seq, then `len` filler bytes derived from the seq.
fn encode(group: usize, kind: usize, sender: usize, seq: u64) -> Vec<u8> {
    let len = (seq % 97) as usize + 8;
    let mut p = Vec::with_capacity(11 + len);
    p.extend_from_slice(&[group as u8, kind as u8, sender as u8]);
    p.extend_from_slice(&seq.to_le_bytes());
    p.extend((0..len).map(|i| (seq as u8).wrapping_add(i as u8)));
    p
}

fn decode(p: &[u8]) -> Result<(usize, usize, usize, u64), String> {
    if p.len() < 11 {
        return Err(format!("short payload {p:?}"));
    }
    let seq = u64::from_le_bytes(p[3..11].try_into().unwrap());
    let (group, kind, sender) = (p[0] as usize, p[1] as usize, p[2] as usize);
    if encode(group, kind, sender, seq) != p {
        return Err(format!("corrupt payload {p:?}"));
    }
    Ok((group, kind, sender, seq))
}

fn run_member(
    me: usize,
    oracle: SocketAddr,
    mcast_port: u16,
    sh: Arc<Shared>,
    t0: Instant,
) -> Result<MemberLog, String> {
    let mut cfg = RuntimeConfig::new(
        MemberId::new(me as u32 + 1, 1),
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
        vec![(1, oracle)],
    );
    cfg.engine.socket_buffer_bytes = 2 << 20;
    // Both engine backends take part: members 2, 4, 6 on the portable one, the others on
    // io_uring where the kernel offers it (`Auto`).
    if me % 2 == 1 {
        cfg.engine.backend = BackendChoice::Portable;
    }
    cfg.multicast_port = Some(mcast_port);
    cfg.oracle_poll = Duration::from_millis(2);
    let mut rt = MemberRuntime::new(cfg).map_err(|e| format!("member {me}: {e}"))?;
    let gids: [GroupId; 2] = [group_id(NAMES[A]), group_id(NAMES[B])];
    let mine: Vec<usize> = (0..2).filter(|g| in_group(me, *g)).collect();
    let mut log = MemberLog {
        backend: Some(rt.engine().backend_kind()),
        ..MemberLog::default()
    };
    let mut events = Vec::new();
    // Membership requests: group → (request seq, when sent); retried after a refusal.
    let mut pending: BTreeMap<usize, u64> = BTreeMap::new();
    let mut retry_at: [Option<Instant>; 2] = [Some(t0); 2];
    let mut last_routes = [None, None];
    // Sending state.
    let mut phase_seen = SETUP;
    let mut phase_start = Instant::now();
    let mut phase_sent = [0u64; 2];
    let mut sent = [[0u64; 2]; 2]; // [group][kind]
    loop {
        if sh.abort.load(Ordering::SeqCst) {
            return Err(format!("member {me}: aborted"));
        }
        let phase = sh.phase.load(Ordering::SeqCst);
        if phase == EXIT {
            break;
        }
        events.clear();
        if SLUGGISH.contains(&me) && phase != SETUP {
            std::thread::sleep(SLUGGISH_NAP);
        }
        rt.step(Duration::from_millis(1), &mut events)
            .map_err(|e| format!("member {me}: step: {e}"))?;
        for e in events.drain(..) {
            match e {
                AgentEvent::Deliver {
                    group,
                    view,
                    sender,
                    kind,
                    payload,
                } => {
                    let (g, k, s, seq) =
                        decode(&payload).map_err(|e| format!("member {me}: {e}"))?;
                    let expect_kind = if k == ORDERED {
                        MsgKind::Ordered
                    } else {
                        MsgKind::Send
                    };
                    if g > 1
                        || gids[g] != group
                        || !in_group(me, g)
                        || s >= SENDERS
                        || sender != MemberId::new(s as u32 + 1, 1)
                        || kind != expect_kind
                    {
                        return Err(format!(
                            "member {me}: delivery does not match its payload: group {group} \
                             sender {sender} kind {kind:?} payload ({g}, {k}, {s}, {seq})"
                        ));
                    }
                    if log.delivery_views[g].last() != Some(&view) {
                        log.delivery_views[g].push(view);
                    }
                    if k == ORDERED {
                        log.ordered[g].push((s, seq));
                    } else {
                        log.fifo.entry((g, s)).or_default().push(seq);
                    }
                    sh.delivered[me].fetch_add(1, Ordering::SeqCst);
                }
                AgentEvent::View(v) => {
                    let g = gids.iter().position(|x| *x == v.group).unwrap_or(9);
                    log.views.push((g, v.id, v.members.len()));
                }
                AgentEvent::MakeCheckpoint { group, view } => {
                    rt.agent_mut().send_checkpoint(group, view, b"state");
                }
                AgentEvent::Reply { seq, result } => {
                    let Some((&g, _)) = pending.iter().find(|(_, s)| **s == seq) else {
                        continue;
                    };
                    pending.remove(&g);
                    if let Err(why) = result {
                        if me == 0 {
                            return Err(format!("member {me}: create {}: {why}", NAMES[g]));
                        }
                        // The group does not exist yet: ask again a little later.
                        retry_at[g] = Some(Instant::now() + Duration::from_millis(100));
                    }
                }
                AgentEvent::Gone { group } => {
                    return Err(format!("member {me}: removed from {group}"));
                }
                AgentEvent::Poisoned(why) => return Err(format!("member {me}: poisoned: {why:?}")),
                _ => {}
            }
        }

        // Membership: member 0 creates both groups, the others join theirs.
        if rt.agent().is_registered() {
            for &g in &mine {
                if rt.agent().view(gids[g]).is_none()
                    && !pending.contains_key(&g)
                    && retry_at[g].is_some_and(|t| Instant::now() >= t)
                {
                    let sig = Signature::from_text(NAMES[g]);
                    let seq = if me == 0 {
                        rt.agent_mut().create(NAMES[g], sig)
                    } else {
                        rt.agent_mut().join(NAMES[g], sig)
                    };
                    pending.insert(g, seq);
                    retry_at[g] = None;
                }
            }
        }
        let ready = mine.iter().all(|g| {
            rt.agent()
                .view(gids[*g])
                .is_some_and(|v| v.members.len() == group_size(*g))
        });
        sh.ready[me].store(ready, Ordering::SeqCst);

        // Routes as the address book has them.
        let routes = [rt.multicast_route(gids[A]), rt.multicast_route(gids[B])];
        if routes != last_routes {
            last_routes = routes;
            log.routes.push((t0.elapsed(), routes));
            sh.routes.lock().unwrap()[me] = routes;
        }

        // Streaming.
        if me >= SENDERS {
            continue;
        }
        if phase != phase_seen {
            phase_seen = phase;
            phase_start = Instant::now();
            phase_sent = [0; 2];
            if phase >= STOP {
                sh.stopped[me].store(true, Ordering::SeqCst);
            }
        }
        if !(1..STOP).contains(&phase) {
            continue;
        }
        for g in [A, B] {
            let rate = if hot(phase) == g { HOT_RATE } else { COLD_RATE };
            let due = (phase_start.elapsed().as_secs_f64() * rate) as u64 + 1;
            let mut budget = 32;
            while phase_sent[g] < due && budget > 0 {
                budget -= 1;
                let count = sent[g][SEND] + sent[g][ORDERED];
                let kind = if count % ORDERED_EVERY == ORDERED_EVERY - 1 {
                    ORDERED
                } else {
                    SEND
                };
                let seq = sent[g][kind] + 1;
                let payload = encode(g, kind, me, seq);
                let a = rt.agent_mut();
                let r = if kind == ORDERED {
                    a.ordered_send(gids[g], &payload)
                } else {
                    a.send(gids[g], &payload)
                };
                match r {
                    Ok(()) => {
                        sent[g][kind] = seq;
                        phase_sent[g] += 1;
                        sh.sent[sent_index(me, g, kind)].store(seq, Ordering::SeqCst);
                    }
                    Err(AgentError::Send(SendError::WouldBlock)) => break,
                    Err(e) => return Err(format!("member {me}: send in {}: {e}", NAMES[g])),
                }
            }
        }
    }
    log.stats = *rt.stats();
    let es = rt.agent().endpoint().stats();
    log.naks_sent = es.naks_sent;
    log.retransmitted = es.frames_retransmitted;
    log.duplicates = es.duplicates;
    log.drops = rt.agent().endpoint().drops().nonzero().collect();
    Ok(log)
}

/// A UDP relay between one member and the oracle that drops the first status of every remap
/// within a view (a status whose address differs from the last one relayed for that view).
/// Returns the number of statuses dropped.
fn lossy_proxy(oracle: SocketAddr, sh: Arc<Shared>, tx: mpsc::Sender<SocketAddr>) -> u64 {
    let front = UdpSocket::bind("127.0.0.1:0").unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").unwrap();
    front.set_nonblocking(true).unwrap();
    back.set_nonblocking(true).unwrap();
    tx.send(front.local_addr().unwrap()).unwrap();
    let mut member: Option<SocketAddr> = None;
    let mut relayed: BTreeMap<GroupId, (ViewId, Option<Ipv4Addr>)> = BTreeMap::new();
    let mut dropped: BTreeSet<(GroupId, ViewId, Option<Ipv4Addr>)> = BTreeSet::new();
    let mut buf = vec![0u8; 65536];
    while sh.phase.load(Ordering::SeqCst) != EXIT && !sh.abort.load(Ordering::SeqCst) {
        let mut idle = true;
        while let Ok((n, from)) = front.recv_from(&mut buf) {
            idle = false;
            member = Some(from);
            let _ = back.send_to(&buf[..n], oracle);
        }
        while let Ok((n, _)) = back.recv_from(&mut buf) {
            idle = false;
            if let Ok(FromOracle::Status(st)) = FromOracle::decode(&buf[..n]) {
                let key = (st.installed.group, st.installed.id, st.mcast);
                let remap = relayed
                    .get(&st.installed.group)
                    .is_some_and(|(v, a)| *v == st.installed.id && *a != st.mcast);
                if remap && dropped.insert(key) {
                    continue;
                }
                relayed.insert(st.installed.group, (st.installed.id, st.mcast));
            }
            if let Some(m) = member {
                let _ = front.send_to(&buf[..n], m);
            }
        }
        if idle {
            std::thread::sleep(Duration::from_micros(300));
        }
    }
    dropped.len() as u64
}

/// A socket that receives everything sent to one multicast address of the range, the way a
/// member's receive socket does (bound to the address, `IP_MULTICAST_ALL` off).
fn sniffer(addr: SocketAddrV4) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_multicast_all_v4(false)?;
    s.bind(&SocketAddr::V4(addr).into())?;
    s.join_multicast_v4(addr.ip(), &Ipv4Addr::LOCALHOST)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

struct Conductor {
    sh: Arc<Shared>,
    handles: Vec<JoinHandle<Result<MemberLog, String>>>,
    oracle: Option<JoinHandle<Result<(), String>>>,
    sniffers: Vec<(SocketAddrV4, Socket)>,
    /// (phase, address) → datagrams seen.
    seen: BTreeMap<(u8, Ipv4Addr), u64>,
    buf: Vec<std::mem::MaybeUninit<u8>>,
}

impl Conductor {
    fn sniff(&mut self) {
        let phase = self.sh.phase.load(Ordering::SeqCst);
        for (addr, s) in &self.sniffers {
            while s.recv(&mut self.buf).is_ok() {
                *self.seen.entry((phase, *addr.ip())).or_default() += 1;
            }
        }
    }

    /// Runs the sniffers until `cond` holds; fails after `limit` or if a thread ended early.
    fn wait(&mut self, what: &str, limit: Duration, mut cond: impl FnMut(&Shared) -> bool) {
        let t = Instant::now();
        loop {
            self.sniff();
            if cond(&self.sh) {
                return;
            }
            let dead = self.handles.iter().any(|h| h.is_finished())
                || self.oracle.as_ref().is_some_and(|h| h.is_finished());
            if dead || t.elapsed() > limit {
                self.sh.abort.store(true, Ordering::SeqCst);
                let mut why = Vec::new();
                for (i, h) in self.handles.drain(..).enumerate() {
                    match h.join() {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => why.push(e),
                        Err(_) => why.push(format!("member {i} panicked")),
                    }
                }
                if let Some(h) = self.oracle.take() {
                    match h.join() {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => why.push(e),
                        Err(_) => why.push("oracle panicked".into()),
                    }
                }
                panic!(
                    "waiting for {what}: {} after {:?}; routes {:?}; threads: {why:?}",
                    if dead { "a thread ended" } else { "timed out" },
                    t.elapsed(),
                    self.sh.routes.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Streams for `d` (sniffing).
    fn hold(&mut self, d: Duration) {
        let until = Instant::now() + d;
        self.wait("the hold", d + Duration::from_secs(5), |_| {
            Instant::now() >= until
        });
    }
}

/// True when every member of `hot` routes it to one multicast address and every member of
/// the other group routes that one by unicast fan-out; returns the address.
fn mapped_to(sh: &Shared, hot: usize) -> Option<SocketAddrV4> {
    let routes = sh.routes.lock().unwrap();
    let mut addr = None;
    for (m, r) in routes.iter().enumerate() {
        for g in [A, B] {
            if !in_group(m, g) {
                continue;
            }
            match (g == hot, r[g]) {
                (true, Some(a)) if addr.is_none_or(|x| x == a) => addr = Some(a),
                (false, None) => {}
                _ => return None,
            }
        }
    }
    addr
}

/// The group holding the address in a route pair: A, B, or neither/both (in transition).
fn holder(r: &[Option<SocketAddrV4>; 2]) -> Option<usize> {
    match r {
        [Some(_), None] => Some(A),
        [None, Some(_)] => Some(B),
        _ => None,
    }
}

#[test]
fn address_switch_loses_and_duplicates_nothing() {
    let t0 = Instant::now();
    let pid = std::process::id();
    // A range of its own per test process (other checkouts may run this test concurrently):
    // 239.255.(200 + pid % 50).(1 + 8k) ..= +RANGE-1, port: one free on this host.
    let third = 200 + (pid % 50) as u8;
    let fourth = 1 + ((pid / 50) % 30) as u8 * 8;
    let range_low = Ipv4Addr::new(239, 255, third, fourth);
    let range_high = Ipv4Addr::new(239, 255, third, fourth + RANGE - 1);
    let mcast_port = std::net::UdpSocket::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let params = McParams {
        range_low,
        range_high,
        max_addrs: 1,
        unicast_only: false,
    };

    let sh = Arc::new(Shared::new());

    // The oracle, on a port the kernel picks.
    let (tx, rx) = mpsc::channel();
    let osh = sh.clone();
    let oracle = std::thread::spawn(move || -> Result<(), String> {
        let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        let cfg = ServiceConfig {
            multicast: Some(params),
            remap_interval: Duration::from_millis(200),
            ..ServiceConfig::default()
        };
        let mut node =
            OracleNode::new(1, listen, vec![(1, listen)], cfg, 1).map_err(|e| e.to_string())?;
        tx.send(node.local_addr().map_err(|e| e.to_string())?)
            .unwrap();
        while osh.phase.load(Ordering::SeqCst) != EXIT && !osh.abort.load(Ordering::SeqCst) {
            node.step(Duration::from_millis(2))
                .map_err(|e| format!("oracle: {e}"))?;
        }
        Ok(())
    });
    let oracle_addr = rx.recv().expect("the oracle starts");
    let (tx, rx) = mpsc::channel();
    let psh = sh.clone();
    let proxy = std::thread::spawn(move || lossy_proxy(oracle_addr, psh, tx));
    let proxy_addr = rx.recv().expect("the proxy starts");

    let sniffers = (0..RANGE)
        .map(|i| {
            let a = SocketAddrV4::new(
                Ipv4Addr::from(u32::from(range_low) + u32::from(i)),
                mcast_port,
            );
            (a, sniffer(a).expect("a multicast socket on loopback"))
        })
        .collect();

    let handles = (0..MEMBERS)
        .map(|m| {
            let sh = sh.clone();
            std::thread::Builder::new()
                .name(format!("member-{}", m + 1))
                .spawn(move || {
                    let oracle = if m == LOSSY { proxy_addr } else { oracle_addr };
                    run_member(m, oracle, mcast_port, sh, t0)
                })
                .unwrap()
        })
        .collect();
    let mut c = Conductor {
        sh: sh.clone(),
        handles,
        oracle: Some(oracle),
        sniffers,
        seen: BTreeMap::new(),
        buf: vec![std::mem::MaybeUninit::new(0); 65536],
    };

    c.wait(
        "every member in both views",
        Duration::from_secs(20),
        |sh| sh.ready.iter().all(|r| r.load(Ordering::SeqCst)),
    );
    let t_ready = t0.elapsed();

    // The three phases: A hot, B hot, A hot.
    let mut phase_addr = Vec::new();
    let mut switch_latency = Vec::new();
    for phase in 1..=3u8 {
        sh.phase.store(phase, Ordering::SeqCst);
        let t = Instant::now();
        let g = hot(phase);
        c.wait(
            &format!("phase {phase}: the address mapped to {}", NAMES[g]),
            Duration::from_secs(15),
            |sh| mapped_to(sh, g).is_some(),
        );
        switch_latency.push(t.elapsed());
        phase_addr.push(mapped_to(&sh, g).unwrap());
        c.hold(HOLD);
    }

    // Stop, then wait until every member delivered everything sent in its groups.
    sh.phase.store(STOP, Ordering::SeqCst);
    c.wait("the senders to stop", Duration::from_secs(5), |sh| {
        sh.stopped[..SENDERS]
            .iter()
            .all(|s| s.load(Ordering::SeqCst))
    });
    let expected: Vec<u64> = (0..MEMBERS)
        .map(|m| {
            let mut n = 0;
            for g in [A, B] {
                if in_group(m, g) {
                    for s in 0..SENDERS {
                        n += sh.sent(s, g, SEND) + sh.sent(s, g, ORDERED);
                    }
                }
            }
            n
        })
        .collect();
    c.wait("every delivery", Duration::from_secs(20), |sh| {
        (0..MEMBERS).all(|m| sh.delivered[m].load(Ordering::SeqCst) >= expected[m])
    });
    // A little longer: anything delivered twice would show up now.
    c.hold(Duration::from_millis(300));
    sh.phase.store(EXIT, Ordering::SeqCst);
    let logs: Vec<MemberLog> = std::mem::take(&mut c.handles)
        .into_iter()
        .enumerate()
        .map(|(m, h)| match h.join() {
            Ok(Ok(log)) => log,
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => panic!("member {m} panicked"),
        })
        .collect();
    c.oracle
        .take()
        .unwrap()
        .join()
        .expect("oracle thread")
        .expect("oracle");
    let statuses_dropped = proxy.join().expect("proxy thread");
    let elapsed = t0.elapsed();

    // ---- Report ----
    let total_sent: u64 = (0..SENDERS)
        .flat_map(|s| [A, B].map(|g| (s, g)))
        .map(|(s, g)| sh.sent(s, g, SEND) + sh.sent(s, g, ORDERED))
        .sum();
    eprintln!(
        "drmc_switch: ready after {t_ready:?}, total {elapsed:?}; {total_sent} messages sent \
         ({} ordered); switch latencies {switch_latency:?}; addresses per phase {phase_addr:?}",
        (0..SENDERS)
            .flat_map(|s| [A, B].map(|g| (s, g)))
            .map(|(s, g)| sh.sent(s, g, ORDERED))
            .sum::<u64>()
    );
    for s in 0..SENDERS {
        eprintln!(
            "  sender {}: A send={} ordered={}, B send={} ordered={}",
            s + 1,
            sh.sent(s, A, SEND),
            sh.sent(s, A, ORDERED),
            sh.sent(s, B, SEND),
            sh.sent(s, B, ORDERED)
        );
    }
    eprintln!("  datagrams seen per (phase, address): {:?}", c.seen);
    eprintln!(
        "  remap statuses dropped on member {}'s oracle link: {statuses_dropped}",
        LOSSY + 1
    );
    for (m, log) in logs.iter().enumerate() {
        let holders: Vec<Option<usize>> = log.routes.iter().map(|(_, r)| holder(r)).collect();
        eprintln!(
            "  member {} ({:?}): delivered {} joins {} leaves {} refreshes {} naks {} retransmitted {} \
             duplicates {} drops {:?} views {:?}\n    routes {:?} holders {holders:?}",
            m + 1,
            log.backend,
            sh.delivered[m].load(Ordering::SeqCst),
            log.stats.multicast_joins,
            log.stats.multicast_leaves,
            log.stats.refreshes,
            log.naks_sent,
            log.retransmitted,
            log.duplicates,
            log.drops,
            log.views,
            log.routes,
        );
    }

    // ---- (1) The address really moved, A → B → A, at every member. ----
    assert_ne!(
        phase_addr[0], phase_addr[1],
        "B got A's old address at once"
    );
    for (m, log) in logs.iter().enumerate() {
        let mut seq: Vec<usize> = Vec::new();
        for (_, r) in &log.routes {
            let h = match (in_group(m, A), in_group(m, B)) {
                (true, true) => holder(r),
                // A member of one group sees only that group's route.
                (true, false) => Some(if r[A].is_some() { A } else { B }),
                _ => Some(if r[B].is_some() { B } else { A }),
            };
            if let Some(h) = h {
                if seq.last() != Some(&h) {
                    seq.push(h);
                }
            }
        }
        // (Setup may map B first, and once the senders stop the idle groups tie and the
        // address may move once more.)
        let switches = seq.len().saturating_sub(1);
        assert!(
            switches >= 2 && seq.windows(3).any(|w| w == [A, B, A]),
            "member {}: holders {seq:?}",
            m + 1
        );
        // Joined the phase-1 address, the phase-2 one (senders and B's members) and the
        // phase-1 address again after leaving it in phase 2 (its grace ran out).
        let (min_joins, min_leaves) = match (in_group(m, A), in_group(m, B)) {
            (true, true) => (3, 2),
            (true, false) => (2, 1),
            _ => (1, 0),
        };
        assert!(
            log.stats.multicast_joins >= min_joins && log.stats.multicast_leaves >= min_leaves,
            "member {}: joins {} leaves {}",
            m + 1,
            log.stats.multicast_joins,
            log.stats.multicast_leaves
        );
        assert_eq!(log.stats.malformed, 0);
    }
    // Traffic really travelled on the addresses in the phase that mapped them.
    for (i, phase) in (1..=3u8).enumerate() {
        let n = c
            .seen
            .get(&(phase, *phase_addr[i].ip()))
            .copied()
            .unwrap_or(0);
        assert!(
            n > 100,
            "phase {phase}: only {n} datagrams on {}",
            phase_addr[i]
        );
    }

    // Member 3 lost the first status of (at least) the three phase remaps, and still followed.
    assert!(statuses_dropped >= 3, "{statuses_dropped} statuses dropped");

    // ---- (2) Exactly once, FIFO per sender, one order of OrderedSends. ----
    for (m, log) in logs.iter().enumerate() {
        for g in [A, B] {
            if !in_group(m, g) {
                assert!(log.ordered[g].is_empty());
                continue;
            }
            assert!(
                log.delivery_views[g].len() == 1,
                "member {}: deliveries of {} in several views {:?}",
                m + 1,
                NAMES[g],
                log.delivery_views[g]
            );
            for s in 0..SENDERS {
                let want: Vec<u64> = (1..=sh.sent(s, g, SEND)).collect();
                let got = log.fifo.get(&(g, s)).cloned().unwrap_or_default();
                if got != want {
                    let missing = want.iter().filter(|x| !got.contains(x)).count();
                    panic!(
                        "member {}: Sends of sender {} in {}: {} delivered, {} sent, {} missing, \
                         first difference at {:?}",
                        m + 1,
                        s + 1,
                        NAMES[g],
                        got.len(),
                        want.len(),
                        missing,
                        got.iter().zip(&want).position(|(a, b)| a != b)
                    );
                }
                let ordered: Vec<u64> = log.ordered[g]
                    .iter()
                    .filter(|(x, _)| *x == s)
                    .map(|(_, q)| *q)
                    .collect();
                let want: Vec<u64> = (1..=sh.sent(s, g, ORDERED)).collect();
                assert_eq!(
                    ordered,
                    want,
                    "member {}: OrderedSends of sender {} in {}",
                    m + 1,
                    s + 1,
                    NAMES[g]
                );
            }
        }
        assert_eq!(sh.delivered[m].load(Ordering::SeqCst), expected[m]);
    }
    for g in [A, B] {
        let members: Vec<usize> = (0..MEMBERS).filter(|m| in_group(*m, g)).collect();
        for m in &members[1..] {
            assert!(
                logs[*m].ordered[g] == logs[members[0]].ordered[g],
                "members {} and {} ordered {} differently",
                members[0] + 1,
                m + 1,
                NAMES[g]
            );
        }
    }
    // ---- (3) In time. ----
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
}
