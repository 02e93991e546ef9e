//! Loopback tests of `vsync_dataplane::node`, each run for both engine backends.
//!
//! Everything goes to 127.0.0.1, or to 239.255.78.x joined on 127.0.0.1 with TTL 1 (the engine
//! defaults, never overridden here). Groups, ports and log files are derived from the process
//! id and the test, so concurrent tests and concurrent runs cannot hear each other.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vsync_dataplane::audit;
use vsync_dataplane::config::ProtocolConfig;
use vsync_dataplane::engine::{BackendChoice, BackendKind, EngineConfig};
use vsync_dataplane::node::{
    EmbeddedNode, GroupConfig, GroupHandle, MessageRef, Node, NodeConfig, NodeError, NodeStats,
    RecvError, SendError,
};
use vsync_dataplane::protocol::DeliveryKind;
use vsync_dataplane::rng::Rng;
use vsync_dataplane::{GroupId, MemberId, ViewId};
use xxhash_rust::xxh3::xxh3_64;

const MAX_MESSAGE: usize = 1 << 20;
const RING_BYTES: usize = 4 << 20;
const SEND_BUFFER: usize = 4 << 20;
const WINDOW_BYTES: usize = 1 << 20;

fn for_each_backend(test: impl Fn(BackendChoice)) {
    for choice in [BackendChoice::IoUring, BackendChoice::Portable] {
        eprintln!("--- backend {choice:?}");
        let start = Instant::now();
        test(choice);
        eprintln!("--- backend {choice:?} took {:?}", start.elapsed());
    }
}

fn member(i: u32) -> MemberId {
    MemberId::new(i, 1)
}

fn protocol() -> ProtocolConfig {
    ProtocolConfig {
        max_message_bytes: MAX_MESSAGE,
        send_buffer_bytes: SEND_BUFFER,
        window_bytes: WINDOW_BYTES,
        ..ProtocolConfig::default()
    }
}

fn node_config(i: u32, backend: BackendChoice) -> NodeConfig {
    NodeConfig {
        protocol: protocol(),
        engine: EngineConfig {
            backend,
            ..EngineConfig::default()
        },
        ring_bytes: RING_BYTES,
        ..NodeConfig::new(member(i))
    }
}

fn spawn(cfg: NodeConfig) -> Node {
    let backend = cfg.engine.backend;
    let node = Node::spawn(cfg).unwrap_or_else(|e| panic!("Node::spawn({backend:?}): {e}"));
    let expected = match backend {
        BackendChoice::Portable => BackendKind::Portable,
        _ => BackendKind::IoUring,
    };
    assert_eq!(node.backend(), expected, "no silent fallback");
    node
}

/// A multicast group on 239.255.78.x unique to this process, test and backend.
fn multicast_addr(test: u16, backend: BackendChoice) -> SocketAddrV4 {
    let pid = std::process::id();
    let octet = (pid % 250) as u8 + 1;
    let port = 30_000
        + ((pid / 250) % 3000) as u16 * 10
        + test * 2
        + u16::from(backend == BackendChoice::Portable);
    SocketAddrV4::new(Ipv4Addr::new(239, 255, 78, octet), port)
}

fn group_config(
    group: u64,
    members: &[(MemberId, SocketAddrV4)],
    multicast: Option<SocketAddrV4>,
) -> GroupConfig {
    GroupConfig {
        group: GroupId(group),
        view: ViewId(1),
        members: members
            .iter()
            .map(|(m, a)| (*m, SocketAddr::V4(*a)))
            .collect(),
        multicast,
        key: None,
        rate_limit: None,
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vsync-node-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn payload(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    for chunk in v.chunks_mut(8) {
        let r = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    v
}

/// `count` messages of 0..=4000 bytes plus `big` of 100 KiB spread among them.
fn plan(seed: u64, count: usize, big: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut out: Vec<Vec<u8>> = (0..count)
        .map(|_| {
            let len = rng.below(4001) as usize;
            payload(&mut rng, len)
        })
        .collect();
    for k in 0..big {
        let at = (k + 1) * out.len() / (big + 1);
        out.insert(at, payload(&mut rng, 100 << 10));
    }
    out
}

/// What each member expects from each sender: (len, xxh3) in order.
type Expected = HashMap<MemberId, Vec<(usize, u64)>>;

fn expected(plans: &[(MemberId, Vec<Vec<u8>>)]) -> Expected {
    plans
        .iter()
        .map(|(m, p)| (*m, p.iter().map(|x| (x.len(), xxh3_64(x))).collect()))
        .collect()
}

/// Checks deliveries against `Expected`: each sender's messages in order, exactly once,
/// byte-identical (xxh3), with increasing sequence numbers.
struct Checker {
    expected: Arc<Expected>,
    next: HashMap<MemberId, usize>,
    last_seq: HashMap<MemberId, u64>,
    total: usize,
}

impl Checker {
    fn new(expected: Arc<Expected>) -> Self {
        Checker {
            expected,
            next: HashMap::new(),
            last_seq: HashMap::new(),
            total: 0,
        }
    }

    fn want(&self) -> usize {
        self.expected.values().map(Vec::len).sum()
    }

    fn done(&self) -> bool {
        self.total == self.want()
    }

    fn check(&mut self, who: MemberId, m: MessageRef<'_>) {
        assert_eq!(
            m.kind,
            DeliveryKind::Send,
            "{who}: unexpected kind from {}",
            m.sender
        );
        let list = self
            .expected
            .get(&m.sender)
            .unwrap_or_else(|| panic!("{who}: message from unknown {}", m.sender));
        let i = self.next.entry(m.sender).or_insert(0);
        assert!(
            *i < list.len(),
            "{who}: extra message from {} (seq {})",
            m.sender,
            m.seq
        );
        let (len, hash) = list[*i];
        assert_eq!(
            (m.payload.len(), xxh3_64(m.payload)),
            (len, hash),
            "{who}: message #{i} from {} (seq {}) differs",
            m.sender,
            m.seq
        );
        *i += 1;
        let last = self.last_seq.insert(m.sender, m.seq);
        assert!(
            last.is_none_or(|l| l < m.seq),
            "{who}: seq {} from {} after {last:?}",
            m.seq,
            m.sender
        );
        self.total += 1;
    }

    fn progress(&self) -> String {
        format!(
            "{:?} of {:?}",
            self.next,
            self.expected
                .iter()
                .map(|(m, l)| (*m, l.len()))
                .collect::<Vec<_>>()
        )
    }
}

/// Sends `plan` through `handle` (alternating try_claim, try_send and a briefly blocking
/// send) while receiving and checking everything, until all is sent and received. `tick(idle)`
/// runs every iteration (drives an embedded node, or naps when idle).
fn exchange(
    handle: &mut GroupHandle,
    plan: &[Vec<u8>],
    checker: &mut Checker,
    limit: Duration,
    mut tick: impl FnMut(bool),
) {
    let me = handle.me();
    let start = Instant::now();
    let mut next = 0;
    while next < plan.len() || !checker.done() {
        assert!(
            start.elapsed() < limit,
            "{me}: timed out after {limit:?}: sent {next}/{}, received {}",
            plan.len(),
            checker.progress()
        );
        let mut progress = false;
        for _ in 0..32 {
            let Some(p) = plan.get(next) else { break };
            let result = match next % 3 {
                0 => handle.try_claim(p.len()).map(|mut claim| {
                    claim.copy_from_slice(p);
                    claim.commit();
                }),
                1 => handle.try_send(p),
                _ => handle.send(p, Some(Duration::from_micros(200))),
            };
            match result {
                Ok(()) => {
                    next += 1;
                    progress = true;
                }
                Err(SendError::WouldBlock) => break,
                Err(e) => panic!("{me}: send #{next}: {e}"),
            }
        }
        if handle.recv_batch(256, |m| checker.check(me, m)) > 0 {
            progress = true;
        }
        tick(!progress);
    }
}

fn nap(idle: bool) {
    if idle {
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Shuts every node down concurrently (each waits until its sends are stable at the others).
fn shutdown_all(nodes: Vec<Node>) -> Vec<NodeStats> {
    let threads: Vec<_> = nodes
        .into_iter()
        .map(|n| std::thread::spawn(move || n.shutdown()))
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("shutdown thread").expect("shutdown"))
        .collect()
}

fn check_clean(stats: &NodeStats) {
    let who = stats.me;
    assert_eq!(stats.engine.send_errors, 0, "{who}: {stats:#?}");
    assert_eq!(stats.engine.truncated, 0, "{who}: {stats:#?}");
    for reason in [
        "bad_checksum",
        "auth_failed",
        "malformed_frame",
        "oversized",
        "unknown_sender",
        "wrong_view",
    ] {
        assert_eq!(stats.drop_count(reason), 0, "{who}: {reason}: {stats:#?}");
    }
    for g in &stats.groups {
        assert_eq!(g.submit_rejected, 0, "{who}: {g:#?}");
        assert_eq!(g.discarded, 0, "{who}: {g:#?}");
    }
}

/// Three nodes, every one sending 5 000 random messages of 0..=4000 bytes plus three of
/// 100 KiB (fragmented) to the group; everyone, the sender included, gets everything exactly
/// once in each sender's order with identical bytes; the audit logs agree.
fn three_nodes(backend: BackendChoice, multicast: Option<SocketAddrV4>, tag: &str) {
    let start = Instant::now();
    let dir = temp_dir(&format!("three-{tag}-{backend:?}"));
    let logs: Vec<PathBuf> = (1..=3).map(|i| dir.join(format!("m{i}.log"))).collect();
    let nodes: Vec<Node> = (1..=3u32)
        .map(|i| {
            spawn(NodeConfig {
                audit_log: Some(logs[i as usize - 1].clone()),
                ..node_config(i, backend)
            })
        })
        .collect();
    let members: Vec<(MemberId, SocketAddrV4)> =
        nodes.iter().map(|n| (n.me(), n.local_addr())).collect();
    let cfg = group_config(7, &members, multicast);
    let handles: Vec<GroupHandle> = nodes
        .iter()
        .map(|n| n.join(cfg.clone()).expect("join"))
        .collect();
    let plans: Vec<(MemberId, Vec<Vec<u8>>)> = (1..=3u32)
        .map(|i| (member(i), plan(u64::from(i) * 1000 + 7, 5000, 3)))
        .collect();
    let expect = Arc::new(expected(&plans));
    eprintln!("{tag}: set-up {:?}", start.elapsed());
    let threads: Vec<_> = handles
        .into_iter()
        .zip(plans)
        .map(|(mut handle, (_, plan))| {
            let expect = Arc::clone(&expect);
            std::thread::spawn(move || {
                let mut checker = Checker::new(expect);
                exchange(
                    &mut handle,
                    &plan,
                    &mut checker,
                    Duration::from_secs(60),
                    nap,
                );
                handle
            })
        })
        .collect();
    let handles: Vec<GroupHandle> = threads
        .into_iter()
        .map(|t| t.join().expect("member thread"))
        .collect();
    eprintln!("{tag}: exchange done at {:?}", start.elapsed());
    let stats = shutdown_all(nodes);
    eprintln!("{tag}: shut down at {:?}", start.elapsed());
    let per_member = 3 * 5003;
    for s in &stats {
        check_clean(s);
        assert!(s.flushed, "{}: not flushed: {s:#?}", s.me);
        let g = s.group(GroupId(7)).expect("group stats");
        assert_eq!(g.delivered, per_member as u64, "{}: {g:#?}", s.me);
        assert_eq!(s.audit_lines, per_member as u64);
        assert_eq!(s.audit_error, None);
    }
    for mut h in handles {
        assert!(h.try_recv().is_none(), "nothing beyond the plan");
        assert!(h.is_closed());
        assert_eq!(h.try_send(b"late"), Err(SendError::Closed));
        assert_eq!(h.recv(None).err(), Some(RecvError::Closed));
    }
    let report = audit::check(&logs).unwrap_or_else(|e| panic!("audit: {e}"));
    eprint!("{}", report.summary());
    assert_eq!(report.streams_checked, 3);
    for i in 1..=3 {
        assert_eq!(report.members[&member(i)].send, per_member as u64);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn three_nodes_multicast() {
    for_each_backend(|backend| three_nodes(backend, Some(multicast_addr(0, backend)), "multicast"));
}

#[test]
fn three_nodes_unicast_fan_out() {
    for_each_backend(|backend| three_nodes(backend, None, "unicast"));
}

/// A receiver that stops reading makes the sender's try_send say WouldBlock (its ring, the
/// sender's retention buffer and the receiver's window and ring fill up) with every buffer
/// within its configured limit; once it reads again everything arrives.
#[test]
fn backpressure_from_a_stalled_receiver() {
    for_each_backend(|backend| {
        let a = spawn(node_config(1, backend));
        let b = spawn(node_config(2, backend));
        let members = [(a.me(), a.local_addr()), (b.me(), b.local_addr())];
        let cfg = group_config(9, &members, Some(multicast_addr(1, backend)));
        let mut ha = a.join(cfg.clone()).unwrap();
        let mut hb = b.join(cfg).unwrap();

        // Phase 1: A sends 1000-byte messages until try_send has said WouldBlock for 300 ms
        // straight, reading its own deliveries meanwhile; B reads nothing.
        let mut sent: Vec<u64> = Vec::new();
        let mut own = 0usize;
        let start = Instant::now();
        let mut blocked_since: Option<Instant> = None;
        let mut rng = Rng::new(99);
        let mut next = payload(&mut rng, 1000);
        loop {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "never blocked: sent {}",
                sent.len()
            );
            match ha.try_send(&next) {
                Ok(()) => {
                    sent.push(xxh3_64(&next));
                    next = payload(&mut rng, 1000);
                    blocked_since = None;
                }
                Err(SendError::WouldBlock) => {
                    let since = *blocked_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_millis(300) {
                        break;
                    }
                    own += ha.recv_batch(usize::MAX, |_| {});
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
        own += ha.recv_batch(usize::MAX, |_| {});
        let blocked_after = start.elapsed();
        let sa = a.stats().unwrap();
        let sb = b.stats().unwrap();
        let (ga, gb) = (sa.group(GroupId(9)).unwrap(), sb.group(GroupId(9)).unwrap());
        let (pa, pb) = (ga.protocol.clone().unwrap(), gb.protocol.clone().unwrap());
        eprintln!(
            "blocked after {blocked_after:?}: {} sent ({} MB); A retained {} B held {} B ring {} / {}",
            sent.len(),
            sent.len() / 1000,
            pa.retained_bytes,
            pb.held_bytes,
            gb.delivery_pending_bytes,
            gb.ring_bytes
        );
        assert!(ga.submit_would_block > 0, "{ga:#?}");
        assert!(gb.delivery_refusals > 0, "{gb:#?}");
        assert!(pa.retained_bytes <= SEND_BUFFER, "{pa:#?}");
        assert!(ga.submit_pending_bytes <= ga.ring_bytes && ga.ring_bytes == RING_BYTES);
        // Per peer: group and point-to-point streams, each at most 2 windows + 1 message.
        assert!(
            pb.held_bytes <= 2 * (2 * WINDOW_BYTES + MAX_MESSAGE),
            "{pb:#?}"
        );
        assert!(gb.delivery_pending_bytes <= gb.ring_bytes);
        // Everything A accepted is somewhere bounded: B's ring and window, A's buffers.
        let bound = 2 * RING_BYTES + SEND_BUFFER + 2 * WINDOW_BYTES + MAX_MESSAGE;
        assert!(
            sent.len() * 1000 < bound,
            "{} messages accepted, bound {bound} bytes",
            sent.len()
        );

        // Phase 2: B reads again; A sends 200 more; everything arrives in order.
        let mut more: Vec<Vec<u8>> = (0..200).map(|_| payload(&mut rng, 1000)).collect();
        more.insert(0, next);
        let all: Vec<u64> = sent
            .iter()
            .copied()
            .chain(more.iter().map(|p| xxh3_64(p)))
            .collect();
        let mut got = 0usize;
        let mut more_sent = 0;
        let start = Instant::now();
        while got < all.len() || own < all.len() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "B got {got} of {}, A own {own}",
                all.len()
            );
            if more_sent < more.len() && ha.try_send(&more[more_sent]).is_ok() {
                more_sent += 1;
            }
            own += ha.recv_batch(usize::MAX, |_| {});
            let n = hb.recv_batch(4096, |m| {
                assert_eq!(m.sender, a.me());
                assert_eq!(xxh3_64(m.payload), all[got], "message {got}");
                got += 1;
            });
            if n == 0 {
                std::thread::sleep(Duration::from_micros(300));
            }
        }
        eprintln!("drained {} messages in {:?}", all.len(), start.elapsed());
        let stats = shutdown_all(vec![a, b]);
        for s in &stats {
            check_clean(s);
            assert!(s.flushed);
        }
        drop((ha, hb));
    });
}

/// Size limits, membership checks, node command errors, point-to-point and raw sends, the
/// system key, and a node with the wrong key: it gets nothing and counts `auth_failed`.
#[test]
fn limits_p2p_raw_and_system_key() {
    for_each_backend(|backend| {
        let key = [0x5au8; 32];
        let keyed = |i| NodeConfig {
            system_key: Some(key),
            ..node_config(i, backend)
        };
        let a = spawn(keyed(1));
        let b = spawn(keyed(2));
        let c = spawn(NodeConfig {
            system_key: Some([0xa5; 32]),
            ..node_config(3, backend)
        });
        let members = [
            (a.me(), a.local_addr()),
            (b.me(), b.local_addr()),
            (c.me(), c.local_addr()),
        ];
        let cfg = group_config(11, &members, None);
        let mut ha = a.join(cfg.clone()).unwrap();
        let mut hb = b.join(cfg.clone()).unwrap();
        let mut hc = c.join(cfg.clone()).unwrap();

        // Limits and membership, checked before anything reaches a ring.
        let big = vec![0u8; MAX_MESSAGE + 1];
        let e = ha.try_send(&big).unwrap_err();
        assert_eq!(
            e,
            SendError::TooLarge {
                len: MAX_MESSAGE + 1,
                max: MAX_MESSAGE,
                limit: "VSYNC_MAXMSGLEN"
            }
        );
        assert!(
            e.to_string()
                .contains("VSYNC_MAXMSGLEN limit of 1048576 bytes"),
            "{e}"
        );
        assert!(matches!(
            ha.try_claim(MAX_MESSAGE + 1),
            Err(SendError::TooLarge { .. })
        ));
        assert!(matches!(
            ha.send(&big, None),
            Err(SendError::TooLarge { .. })
        ));
        assert!(matches!(
            ha.try_send_p2p(b.me(), &big),
            Err(SendError::TooLarge { .. })
        ));
        let raw_max = ha.max_raw_message();
        let e = ha.try_send_raw(None, &big[..raw_max + 1]).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("raw datagram payload limit of {raw_max} bytes")),
            "{e}"
        );
        assert_eq!(
            ha.try_send_p2p(member(9), b"x"),
            Err(SendError::UnknownMember(member(9)))
        );
        assert_eq!(
            ha.try_send_p2p(a.me(), b"x"),
            Err(SendError::UnknownMember(a.me()))
        );

        // Node command errors.
        assert!(matches!(
            a.join(cfg.clone()),
            Err(NodeError::AlreadyJoined(GroupId(11)))
        ));
        assert!(matches!(
            a.leave(GroupId(99)),
            Err(NodeError::UnknownGroup(GroupId(99)))
        ));
        let no_me = GroupConfig {
            group: GroupId(12),
            members: vec![(b.me(), b.local_addr().into())],
            ..cfg.clone()
        };
        let e = a.join(no_me).unwrap_err().to_string();
        assert!(e.contains("must include this node"), "{e}");

        // The largest message fits (in a group of A and B only: C, which never acknowledges,
        // would hold A's window shut after WINDOW_BYTES).
        let ab = group_config(12, &members[..2], None);
        let mut ha2 = a.join(ab.clone()).unwrap();
        let mut hb2 = b.join(ab).unwrap();
        let mut claim = ha2.try_claim(MAX_MESSAGE).unwrap();
        claim.fill(7);
        claim.commit();
        for h in [&mut hb2, &mut ha2] {
            let m = h
                .recv(Some(Duration::from_secs(10)))
                .expect("1 MiB message");
            assert_eq!(
                (m.sender, m.kind, m.len()),
                (a.me(), DeliveryKind::Send, MAX_MESSAGE)
            );
            assert!(m.payload().iter().all(|&x| x == 7));
        }
        a.leave(GroupId(12)).unwrap();
        assert_eq!(ha2.try_send(b"x"), Err(SendError::Closed));
        b.leave(GroupId(12)).unwrap();

        // A and B: group sends, p2p A→B, raw A→group and A→B.
        let (n, p2p, raw) = (200usize, 50usize, 20usize);
        let mut rng = Rng::new(5);
        let msgs: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                let len = rng.below(3000) as usize;
                payload(&mut rng, len)
            })
            .collect();
        let p2ps: Vec<Vec<u8>> = (0..p2p).map(|i| payload(&mut rng, 10 + i)).collect();
        let mut b_sent = false;
        let mut seen = [0usize; 2]; // group messages from A at A and at B
        let mut from_b = [0usize; 2]; // group messages from B at A and at B
        let (mut got_p2p, mut got_raw) = (0usize, 0usize);
        let (mut i, mut j, mut k) = (0, 0, 0);
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "stuck: {seen:?} {from_b:?} p2p {got_p2p}"
            );
            if i < n && ha.try_send(&msgs[i]).is_ok() {
                i += 1;
            }
            if j < p2p && ha.try_send_p2p(b.me(), &p2ps[j]).is_ok() {
                j += 1;
            }
            if k < raw
                && ha
                    .try_send_raw(
                        if k % 2 == 0 { None } else { Some(b.me()) },
                        &[k as u8; 100],
                    )
                    .is_ok()
            {
                k += 1;
            }
            if !b_sent && hb.try_send(b"from b").is_ok() {
                b_sent = true;
            }
            for (at, h) in [(0usize, &mut ha), (1, &mut hb)] {
                h.recv_batch(usize::MAX, |m| match (m.kind, m.sender == member(1)) {
                    (DeliveryKind::Send, true) => {
                        assert_eq!(m.payload, &msgs[seen[at]][..]);
                        seen[at] += 1;
                    }
                    (DeliveryKind::Send, false) => {
                        assert_eq!(m.payload, b"from b");
                        from_b[at] += 1;
                    }
                    (DeliveryKind::P2p, true) => {
                        assert_eq!(at, 1);
                        assert_eq!(m.payload, &p2ps[got_p2p][..]);
                        got_p2p += 1;
                    }
                    (DeliveryKind::Raw | DeliveryKind::RawP2p, true) => {
                        assert_eq!(at, 1);
                        assert_eq!(m.payload.len(), 100);
                        got_raw += 1;
                    }
                    other => panic!("unexpected delivery at {at}: {other:?} {m:?}"),
                });
            }
            if seen == [n, n] && got_p2p == p2p && from_b == [1, 1] && k == raw {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        // Give stray datagrams time to reach C, then check it got nothing.
        std::thread::sleep(Duration::from_millis(200));
        assert!(hc.try_recv().is_none(), "C (wrong key) must get nothing");
        let sc = c.stats().unwrap();
        assert!(sc.drop_count("auth_failed") > 0, "{:#?}", sc.drops);
        assert_eq!(sc.group(GroupId(11)).unwrap().delivered, 0);
        assert!(got_raw <= raw);
        let sb = b.stats().unwrap();
        assert_eq!(sb.drop_count("auth_failed"), 0, "{:#?}", sb.drops);
        eprintln!(
            "raw delivered {got_raw}/{raw}; C auth_failed {}",
            sc.drop_count("auth_failed")
        );
        // C never acknowledges A and B, so they cannot flush: stop without it.
        drop((ha, hb, hc));
        drop((a, b, c));
    });
}

/// An `EmbeddedNode` driven by the test thread exchanges with a spawned `Node`; afterwards
/// the node's handle reports `Closed` instead of hanging.
#[test]
fn embedded_node_with_spawned_node() {
    for_each_backend(|backend| {
        let mut e = EmbeddedNode::new(node_config(1, backend)).expect("embedded node");
        let n = spawn(node_config(2, backend));
        let members = [(member(1), e.local_addr()), (n.me(), n.local_addr())];
        let cfg = group_config(13, &members, Some(multicast_addr(2, backend)));
        let mut he = e.join(cfg.clone()).unwrap();
        let hn = n.join(cfg).unwrap();
        let plans = vec![(member(1), plan(1, 2000, 2)), (member(2), plan(2, 2000, 2))];
        let expect = Arc::new(expected(&plans));
        let plan_n = plans[1].1.clone();
        let expect_n = Arc::clone(&expect);
        let peer = std::thread::spawn(move || {
            let mut hn = hn;
            let mut checker = Checker::new(expect_n);
            exchange(&mut hn, &plan_n, &mut checker, Duration::from_secs(30), nap);
            hn
        });
        let mut checker = Checker::new(expect);
        exchange(
            &mut he,
            &plans[0].1,
            &mut checker,
            Duration::from_secs(30),
            |idle| {
                let wait = if idle {
                    Duration::from_millis(1)
                } else {
                    Duration::ZERO
                };
                e.poll(wait).expect("embedded poll");
            },
        );
        // An embedded node only works while it is polled: keep driving it until the peer has
        // everything too.
        let limit = Instant::now() + Duration::from_secs(30);
        while !peer.is_finished() && Instant::now() < limit {
            e.poll(Duration::from_millis(1)).expect("embedded poll");
        }
        let mut hn = peer.join().expect("peer thread");
        let node_shutdown = std::thread::spawn(move || n.shutdown());
        let se = e.shutdown().expect("embedded shutdown");
        let sn = node_shutdown.join().unwrap().expect("node shutdown");
        for s in [&se, &sn] {
            check_clean(s);
            assert!(s.flushed, "{s:#?}");
            assert_eq!(s.group(GroupId(13)).unwrap().delivered, 2 * 2002);
        }
        // Both engines are gone: the handles fail fast instead of hanging.
        assert_eq!(hn.try_send(b"x"), Err(SendError::Closed));
        assert!(matches!(hn.try_claim(1), Err(SendError::Closed)));
        assert_eq!(hn.recv(None).err(), Some(RecvError::Closed));
        assert_eq!(he.send(b"x", None), Err(SendError::Closed));
        assert_eq!(
            he.recv(Some(Duration::from_secs(5))).err(),
            Some(RecvError::Closed)
        );
    });
}

/// Parked engines react at once: a send on an idle node wakes its engine (instead of waiting
/// out the 100 ms idle park), and the peer's engine wakes on the datagram.
#[test]
fn parked_engines_wake_on_send() {
    for_each_backend(|backend| {
        let a = spawn(node_config(1, backend));
        let b = spawn(node_config(2, backend));
        let members = [(a.me(), a.local_addr()), (b.me(), b.local_addr())];
        let cfg = group_config(15, &members, None);
        let mut ha = a.join(cfg.clone()).unwrap();
        let hb = b.join(cfg).unwrap();
        let echo = std::thread::spawn(move || {
            let mut hb = hb;
            let mut echoed = 0;
            while echoed < 10 {
                let ping = {
                    let m = hb.recv(Some(Duration::from_secs(10))).expect("ping");
                    (m.sender != member(2)).then(|| m.payload().to_vec())
                };
                if let Some(p) = ping {
                    hb.send(&p, Some(Duration::from_secs(5))).expect("pong");
                    echoed += 1;
                }
            }
            hb
        });
        let mut rtts = Vec::new();
        for i in 0..10u8 {
            // Let both engines go idle and park.
            std::thread::sleep(Duration::from_millis(30));
            let start = Instant::now();
            ha.try_send(&[i; 64]).unwrap();
            loop {
                let m = ha.recv(Some(Duration::from_secs(10))).expect("pong");
                if m.sender == member(2) {
                    assert_eq!(m.payload(), &[i; 64]);
                    break;
                }
            }
            rtts.push(start.elapsed());
        }
        let hb = echo.join().unwrap();
        rtts.sort();
        eprintln!(
            "round trips from parked engines: median {:?}, max {:?}",
            rtts[5], rtts[9]
        );
        // Without wake-ups each round trip would wait out idle parks (up to 100 ms each way).
        assert!(rtts[5] < Duration::from_millis(25), "{rtts:?}");
        let sa = a.stats().unwrap();
        assert!(
            sa.engine.wakeups > 0 && sa.engine.parks > 0,
            "{:#?}",
            sa.engine
        );
        drop((ha, hb));
        shutdown_all(vec![a, b]);
    });
}

/// A group of one: the member's own unread self-deliveries are backpressure too. Its sends
/// block; reading them again wakes the parked engine (which has no network traffic to wake
/// it) so the backlog drains quickly, in order.
#[test]
fn lone_member_self_delivery_backpressure() {
    for_each_backend(|backend| {
        let a = spawn(node_config(1, backend));
        let mut h = a
            .join(group_config(17, &[(a.me(), a.local_addr())], None))
            .unwrap();
        // Send until try_claim has said WouldBlock for 100 ms straight: every buffer is full.
        let mut sent = 0u32;
        let start = Instant::now();
        let mut blocked_since: Option<Instant> = None;
        loop {
            assert!(start.elapsed() < Duration::from_secs(10), "never blocked");
            match h.try_claim(1000) {
                Ok(mut claim) => {
                    claim[..4].copy_from_slice(&sent.to_le_bytes());
                    claim.commit_len(4 + (sent % 996) as usize);
                    sent += 1;
                    blocked_since = None;
                }
                Err(SendError::WouldBlock) => {
                    if blocked_since.get_or_insert_with(Instant::now).elapsed()
                        > Duration::from_millis(100)
                    {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
        let g = a.stats().unwrap().groups[0].clone();
        assert!(
            g.delivery_refusals > 0 && g.submit_would_block > 0,
            "{g:#?}"
        );
        // Let the engine park with the backlog in place (the stats command woke it).
        std::thread::sleep(Duration::from_millis(150));
        let start = Instant::now();
        let got = std::cell::Cell::new(0u32);
        let check = |m: MessageRef<'_>| {
            let i = got.get();
            assert_eq!(m.payload.len(), 4 + (i % 996) as usize);
            assert_eq!(m.payload[..4], i.to_le_bytes());
            got.set(i + 1);
        };
        // Four rounds: read 1500 messages, nap 20 ms, and find the ring refilled from the
        // backlog. The engine is parked (no traffic, no timers) when each round starts, so
        // only the release wake-up can make it refill within the nap; without it the engine
        // would sleep out its 100 ms idle park.
        let full = RING_BYTES - 8192;
        for round in 0..4 {
            assert!(
                h.pending_delivery_bytes() >= full,
                "round {round}: ring not full"
            );
            assert_eq!(h.recv_batch(1500, check), 1500);
            std::thread::sleep(Duration::from_millis(20));
            let pending = h.pending_delivery_bytes();
            assert!(
                pending >= full,
                "round {round}: not refilled ({pending} bytes)"
            );
        }
        while h.recv_batch(usize::MAX, check) > 0 || got.get() < sent {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "drained {} of {sent}",
                got.get()
            );
        }
        assert_eq!(got.get(), sent);
        eprintln!("{sent} messages blocked; drained in {:?}", start.elapsed());
        drop(h);
        assert!(a.shutdown().unwrap().flushed);
    });
}
