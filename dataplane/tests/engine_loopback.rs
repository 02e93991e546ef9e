//! Loopback tests of `vsync_dataplane::engine`, every one run for both backends.
//!
//! Everything is sent to 127.0.0.1 or to 239.255.77.x joined on 127.0.0.1 with TTL 1. The io_uring
//! case must not silently fall back: this machine supports io_uring, so failing to set it up is
//! a test failure.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use vsync_dataplane::engine::{
    BackendChoice, BackendKind, Engine, EngineConfig, EngineStats, IdleStrategy,
};
use vsync_dataplane::protocol::{Destination, Protocol, Transmit};
use vsync_dataplane::{GroupId, MemberId, Timestamp};

const DATA: u8 = 1;
const ACK: u8 = 2;
const HEADER: usize = 13; // kind u8, sender tag u32, sequence u64

/// Runs `test` once per backend, io_uring first.
fn for_each_backend(test: impl Fn(BackendChoice)) {
    for choice in [BackendChoice::IoUring, BackendChoice::Portable] {
        eprintln!("--- backend {choice:?}");
        test(choice);
    }
}

fn config(choice: BackendChoice) -> EngineConfig {
    EngineConfig {
        backend: choice,
        ..EngineConfig::default()
    }
}

/// Creates an engine and checks it runs the requested backend (never a silent fallback).
fn engine(config: EngineConfig) -> Engine {
    let choice = config.backend;
    let engine = Engine::new(config).unwrap_or_else(|e| panic!("Engine::new({choice:?}): {e}"));
    let expected = match choice {
        BackendChoice::IoUring => BackendKind::IoUring,
        BackendChoice::Portable => BackendKind::Portable,
        BackendChoice::Auto => engine.backend_kind(),
    };
    assert_eq!(engine.backend_kind(), expected, "backend for {choice:?}");
    engine
}

fn pattern(tag: u32, seq: u64, i: usize) -> u8 {
    (seq as u8).wrapping_add(i as u8) ^ (tag as u8).wrapping_mul(31)
}

/// The test protocol: sends `total` numbered, patterned datagrams of `len(seq)` bytes to `dest`
/// (at most `window` beyond the last acknowledgement), and records every data datagram it
/// receives (per sender: unique, duplicates, corrupt), acknowledging to `ack_to` every
/// `ack_every` datagrams or after 5 ms. An optional one-shot timer records when it fired.
struct Counter {
    tag: u32,
    dest: Option<Destination>,
    total: u64,
    next: u64,
    len: fn(u64) -> usize,
    window: u64,
    acked: u64,
    seen: HashMap<u32, Vec<bool>>,
    unique: u64,
    dupes: u64,
    corrupt: u64,
    ack_to: Option<Destination>,
    ack_every: u64,
    unacked: u64,
    ack_due: bool,
    ack_timer: Option<Timestamp>,
    timer: Option<Timestamp>,
    fired_at: Option<Timestamp>,
}

impl Counter {
    fn new(tag: u32) -> Self {
        Counter {
            tag,
            dest: None,
            total: 0,
            next: 0,
            len: |_| 100,
            window: u64::MAX,
            acked: 0,
            seen: HashMap::new(),
            unique: 0,
            dupes: 0,
            corrupt: 0,
            ack_to: None,
            ack_every: 256,
            unacked: 0,
            ack_due: false,
            ack_timer: None,
            timer: None,
            fired_at: None,
        }
    }

    fn sending(mut self, dest: Destination, total: u64, len: fn(u64) -> usize) -> Self {
        self.dest = Some(dest);
        self.total = total;
        self.len = len;
        self
    }
}

impl Protocol for Counter {
    fn handle_datagram(&mut self, now: Timestamp, _from: SocketAddr, d: &mut [u8]) {
        if d.len() < HEADER {
            self.corrupt += 1;
            return;
        }
        let tag = u32::from_le_bytes(d[1..5].try_into().unwrap());
        let seq = u64::from_le_bytes(d[5..13].try_into().unwrap());
        match d[0] {
            ACK => self.acked = self.acked.max(seq),
            DATA => {
                if d[HEADER..]
                    .iter()
                    .enumerate()
                    .any(|(i, &b)| b != pattern(tag, seq, i))
                {
                    self.corrupt += 1;
                    return;
                }
                let seen = self.seen.entry(tag).or_default();
                if seen.len() <= seq as usize {
                    seen.resize(seq as usize + 1, false);
                }
                if std::mem::replace(&mut seen[seq as usize], true) {
                    self.dupes += 1;
                    return;
                }
                self.unique += 1;
                if self.ack_to.is_some() {
                    self.unacked += 1;
                    if self.unacked >= self.ack_every {
                        self.ack_due = true;
                    } else if self.ack_timer.is_none() {
                        self.ack_timer = Some(now + Duration::from_millis(5));
                    }
                }
            }
            _ => self.corrupt += 1,
        }
    }

    fn poll_transmit(&mut self, _now: Timestamp, buf: &mut [u8]) -> Option<Transmit> {
        if self.ack_due {
            if let Some(destination) = self.ack_to {
                self.ack_due = false;
                self.unacked = 0;
                self.ack_timer = None;
                buf[0] = ACK;
                buf[1..5].copy_from_slice(&self.tag.to_le_bytes());
                buf[5..13].copy_from_slice(&self.unique.to_le_bytes());
                return Some(Transmit {
                    destination,
                    len: HEADER,
                });
            }
        }
        let destination = self.dest?;
        if self.next >= self.total || self.next - self.acked >= self.window {
            return None;
        }
        let seq = self.next;
        self.next += 1;
        let len = (self.len)(seq).max(HEADER);
        buf[0] = DATA;
        buf[1..5].copy_from_slice(&self.tag.to_le_bytes());
        buf[5..13].copy_from_slice(&seq.to_le_bytes());
        for (i, b) in buf[HEADER..len].iter_mut().enumerate() {
            *b = pattern(self.tag, seq, i);
        }
        Some(Transmit { destination, len })
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        match (self.ack_timer, self.timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if self.ack_timer.is_some_and(|t| t <= now) {
            self.ack_due = true;
            self.ack_timer = None;
        }
        if self.timer.is_some_and(|t| t <= now) {
            self.timer = None;
            self.fired_at = Some(now);
        }
    }
}

/// Polls every (engine, protocol) pair in turn, without parking, until `done` or `limit`.
fn run_until(
    nodes: &mut [(Engine, Counter)],
    limit: Duration,
    mut done: impl FnMut(&[(Engine, Counter)]) -> bool,
) {
    let start = Instant::now();
    while !done(nodes) {
        assert!(start.elapsed() < limit, "timed out after {limit:?}");
        for (engine, protocol) in nodes.iter_mut() {
            engine.poll(protocol, Duration::ZERO).expect("poll");
        }
    }
}

fn member(i: u32) -> MemberId {
    MemberId::new(i, 1)
}

fn addr(engine: &Engine) -> SocketAddr {
    engine.local_addr().into()
}

fn check_clean(who: &str, p: &Counter, stats: &EngineStats) {
    assert_eq!(p.dupes, 0, "{who}: duplicates; {stats:?}");
    assert_eq!(p.corrupt, 0, "{who}: corrupt datagrams; {stats:?}");
    assert_eq!(stats.send_errors, 0, "{who}: send errors; {stats:?}");
    assert_eq!(stats.recv_errors, 0, "{who}: recv errors; {stats:?}");
    assert_eq!(stats.truncated, 0, "{who}: truncated; {stats:?}");
}

/// Two engines on their own threads (parking idle strategy) exchange 20 000 datagrams, once
/// one datagram per send and once with GSO/GRO; the receiver acknowledges so the sender never
/// overruns the socket buffer (loopback drops silently when the receiver falls behind).
#[test]
fn unicast_20k_between_threads() {
    for_each_backend(|choice| {
        for offload in [false, true] {
            let cfg = EngineConfig {
                gso: offload,
                gro: offload,
                ..config(choice)
            };
            unicast_20k(cfg);
        }
    });
}

fn unicast_20k(cfg: EngineConfig) {
    const TOTAL: u64 = 20_000;
    {
        let done = Arc::new(AtomicBool::new(false));
        let (addr_tx, addr_rx) = mpsc::channel::<SocketAddr>();
        let (peer_tx, peer_rx) = mpsc::channel::<SocketAddr>();
        let receiver_done = done.clone();
        let receiver_cfg = cfg.clone();
        let receiver = std::thread::spawn(move || {
            let mut engine = engine(receiver_cfg);
            addr_tx.send(addr(&engine)).unwrap();
            let sender_addr = peer_rx.recv().unwrap();
            engine.address_book().set_member(member(1), sender_addr);
            let mut p = Counter::new(2);
            p.ack_to = Some(Destination::Member(member(1)));
            let start = Instant::now();
            while p.unique < TOTAL && start.elapsed() < Duration::from_secs(15) {
                engine
                    .poll(&mut p, Duration::from_millis(50))
                    .expect("receiver poll");
            }
            receiver_done.store(true, Ordering::Release);
            (p, engine.stats().clone())
        });
        let receiver_addr = addr_rx.recv().unwrap();
        let mut engine = engine(cfg);
        peer_tx.send(addr(&engine)).unwrap();
        engine.address_book().set_member(member(2), receiver_addr);
        let mut p = Counter::new(1).sending(Destination::Member(member(2)), TOTAL, |s| {
            40 + (s % 7 == 0) as usize * 60
        });
        p.window = 2048;
        let start = Instant::now();
        while !done.load(Ordering::Acquire) && start.elapsed() < Duration::from_secs(16) {
            engine
                .poll(&mut p, Duration::from_millis(20))
                .expect("sender poll");
        }
        let (rp, rstats) = receiver.join().expect("receiver thread");
        let stats = engine.stats();
        eprintln!("sender {stats:?}\nreceiver {rstats:?}");
        assert_eq!(rp.unique, TOTAL, "receiver got {} of {TOTAL}", rp.unique);
        check_clean("receiver", &rp, &rstats);
        check_clean("sender", &p, stats);
        assert!(stats.datagrams_sent >= TOTAL);
        assert!(p.acked > 0 && rstats.datagrams_sent > 0, "acks flowed back");
        assert_eq!(stats.gso_batches > 0, stats.gso_enabled);
    }
}

/// A multicast group (239.255.77.x, port) unique to this process and backend, so concurrent
/// runs of this test binary (other checkouts on the same host) cannot hear each other.
fn test_group(choice: BackendChoice) -> SocketAddrV4 {
    let pid = std::process::id();
    let backend = u16::from(choice == BackendChoice::Portable);
    let octet = (pid % 250) as u8 + 1;
    let port = 20_000 + ((pid / 250) % 20_000) as u16 * 2 + backend;
    SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, octet), port)
}

/// One sender, two receivers joined to 239.255.77.x on 127.0.0.1; both get every datagram once.
/// Then one receiver leaves and stops receiving while the other keeps going.
#[test]
fn multicast_two_receivers_and_leave() {
    for_each_backend(|choice| {
        let group = test_group(choice);
        let mut nodes: Vec<(Engine, Counter)> = Vec::new();
        for tag in 1..=3 {
            nodes.push((engine(config(choice)), Counter::new(tag)));
        }
        for (engine, _) in &mut nodes[1..] {
            engine.join_multicast(group).expect("join");
            engine.join_multicast(group).expect("join is idempotent");
        }
        nodes[0]
            .0
            .address_book()
            .set_group_multicast(GroupId(9), group);
        nodes[0].1 = Counter::new(1).sending(Destination::Group(GroupId(9)), 500, |s| {
            20 + (s % 50) as usize
        });
        run_until(&mut nodes, Duration::from_secs(10), |n| {
            n[1].1.unique == 500 && n[2].1.unique == 500
        });

        nodes[2].0.leave_multicast(group).expect("leave");
        nodes[2]
            .0
            .leave_multicast(group)
            .expect("leave is idempotent");
        nodes[0].1.total = 800;
        run_until(&mut nodes, Duration::from_secs(10), |n| {
            n[1].1.unique == 800
        });
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_millis(50) {
            for (engine, p) in nodes.iter_mut() {
                engine.poll(p, Duration::ZERO).unwrap();
            }
        }
        for (i, (engine, p)) in nodes.iter().enumerate() {
            check_clean(&format!("node {i}"), p, engine.stats());
        }
        assert_eq!(nodes[2].1.unique, 500, "left member kept receiving");
        assert_eq!(nodes[0].1.unique, 0, "sender is not a member");
        assert_eq!(nodes[0].0.stats().no_route, 0);
    });
}

/// `Destination::Group` with a unicast member list: one send per member, minus the local one;
/// a member without an address counts as `no_route`. Receivers use the yield idle strategy.
#[test]
fn unicast_fan_out_to_three() {
    for_each_backend(|choice| {
        let mut nodes: Vec<(Engine, Counter)> = Vec::new();
        for tag in 0..4 {
            let idle = if tag == 0 {
                IdleStrategy::Park
            } else {
                IdleStrategy::Yield
            };
            nodes.push((
                engine(EngineConfig {
                    idle,
                    ..config(choice)
                }),
                Counter::new(tag),
            ));
        }
        let addrs: Vec<SocketAddr> = nodes.iter().map(|(e, _)| addr(e)).collect();
        let book = nodes[0].0.address_book();
        book.set_local(member(0));
        for (i, a) in addrs.iter().enumerate() {
            book.set_member(member(i as u32), *a);
        }
        let everyone = (0..5).map(member).collect(); // member 4 has no address
        book.set_group_unicast(GroupId(3), everyone);
        nodes[0].1 = Counter::new(0).sending(Destination::Group(GroupId(3)), 300, |s| {
            30 + (s % 3) as usize
        });
        run_until(&mut nodes, Duration::from_secs(10), |n| {
            n[1..].iter().all(|(_, p)| p.unique == 300)
        });
        for (i, (engine, p)) in nodes.iter().enumerate() {
            check_clean(&format!("node {i}"), p, engine.stats());
        }
        let stats = nodes[0].0.stats();
        assert_eq!(nodes[0].1.unique, 0, "fan-out must skip the local member");
        assert_eq!(stats.datagrams_sent, 900, "{stats:?}");
        assert_eq!(stats.no_route, 300, "{stats:?}");
    });
}

/// Many equal-size datagrams to one member go out as `UDP_SEGMENT` trains and arrive intact,
/// both to a GRO receiver (which splits coalesced buffers) and to a non-GRO receiver.
#[test]
fn gso_coalescing_and_gro_split() {
    for_each_backend(|choice| {
        for receiver_gro in [true, false] {
            let mut nodes = vec![
                (engine(config(choice)), Counter::new(1)),
                (
                    engine(EngineConfig {
                        gro: receiver_gro,
                        ..config(choice)
                    }),
                    Counter::new(2),
                ),
            ];
            let to = addr(&nodes[1].0);
            nodes[0].0.address_book().set_member(member(2), to);
            // Runs of equal lengths, with a shorter datagram closing every 10th train.
            nodes[0].1 = Counter::new(1).sending(Destination::Member(member(2)), 3000, |s| {
                if s % 10 == 9 {
                    300
                } else {
                    1000
                }
            });
            run_until(&mut nodes, Duration::from_secs(10), |n| {
                n[1].1.unique == 3000
            });
            let (sender, receiver) = (nodes[0].0.stats(), nodes[1].0.stats());
            eprintln!("gro={receiver_gro}\nsender {sender:?}\nreceiver {receiver:?}");
            assert!(sender.gso_enabled, "GSO should work on loopback");
            assert!(sender.gso_batches > 0, "{sender:?}");
            assert!(
                sender.send_syscalls < sender.datagrams_sent / 4,
                "{sender:?}"
            );
            assert_eq!(receiver.gro_enabled, receiver_gro);
            if receiver_gro {
                assert!(receiver.gro_batches > 0, "{receiver:?}");
            } else {
                assert_eq!(receiver.gro_batches, 0);
            }
            check_clean("sender", &nodes[0].1, sender);
            check_clean("receiver", &nodes[1].1, receiver);
        }
    });
}

/// Datagrams of exactly `mtu` bytes (default and jumbo) arrive intact; a datagram longer than
/// the receiver's buffer is counted as truncated and never reaches the protocol.
#[test]
fn mtu_sized_datagrams_and_truncation() {
    for_each_backend(|choice| {
        for mtu in [1472usize, 9000] {
            let cfg = EngineConfig {
                mtu,
                ..config(choice)
            };
            let mut nodes = vec![
                (engine(cfg.clone()), Counter::new(1)),
                (engine(cfg), Counter::new(2)),
            ];
            let to = addr(&nodes[1].0);
            nodes[0].0.address_book().set_member(member(2), to);
            let len: fn(u64) -> usize = if mtu == 1472 { |_| 1472 } else { |_| 9000 };
            nodes[0].1 = Counter::new(1).sending(Destination::Member(member(2)), 400, len);
            run_until(&mut nodes, Duration::from_secs(10), |n| {
                n[1].1.unique == 400
            });
            assert_eq!(nodes[1].0.stats().bytes_received, 400 * mtu as u64);
            check_clean("receiver", &nodes[1].1, nodes[1].0.stats());
        }
        // Receiver without GRO and a 600-byte MTU gets 1472-byte datagrams: truncated, dropped.
        let small = EngineConfig {
            mtu: 600,
            gro: false,
            ..config(choice)
        };
        let mut nodes = vec![
            (engine(config(choice)), Counter::new(1)),
            (engine(small), Counter::new(2)),
        ];
        let to = addr(&nodes[1].0);
        nodes[0].0.address_book().set_member(member(2), to);
        nodes[0].1 = Counter::new(1).sending(Destination::Member(member(2)), 10, |_| 1472);
        run_until(&mut nodes, Duration::from_secs(5), |n| {
            n[1].0.stats().truncated == 10
        });
        assert_eq!(nodes[1].1.unique, 0);
        assert_eq!(nodes[1].0.stats().datagrams_received, 0);
    });
}

/// A parked poll returns promptly when the waker fires from another thread, and returns at the
/// protocol deadline (running the timer) when nothing else happens.
#[test]
fn park_wakes_on_waker_and_deadline() {
    for_each_backend(|choice| {
        let mut engine = engine(config(choice));
        let mut p = Counter::new(1);
        let waker = engine.waker();
        let start = Instant::now();
        let helper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            waker.wake();
        });
        let n = engine.poll(&mut p, Duration::from_secs(10)).unwrap();
        let waited = start.elapsed();
        helper.join().unwrap();
        assert_eq!(n, 0);
        assert!(
            waited >= Duration::from_millis(90),
            "returned early: {waited:?}"
        );
        assert!(
            waited < Duration::from_secs(2),
            "waker did not unpark: {waited:?}"
        );
        assert!(engine.stats().wakeups >= 1, "{:?}", engine.stats());

        // A wake-up before parking is not lost.
        engine.waker().wake();
        let start = Instant::now();
        engine.poll(&mut p, Duration::from_secs(10)).unwrap();
        assert!(start.elapsed() < Duration::from_secs(2));

        let deadline = engine.clock().now() + Duration::from_millis(150);
        p.timer = Some(deadline);
        let start = Instant::now();
        engine.poll(&mut p, Duration::from_secs(10)).unwrap();
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(140),
            "returned early: {waited:?}"
        );
        assert!(
            waited < Duration::from_secs(2),
            "deadline did not unpark: {waited:?}"
        );
        let fired = p.fired_at.expect("handle_timeout ran in the same poll");
        assert!(fired >= deadline);
        assert!(engine.stats().timeouts >= 1);

        // max_wait bounds the park when there is no deadline.
        let start = Instant::now();
        engine.poll(&mut p, Duration::from_millis(60)).unwrap();
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(50) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
    });
}

/// A tiny provided-buffer ring (8 buffers) runs dry on every burst: io_uring re-arms the
/// multishot receive after `ENOBUFS` and nothing is lost (the datagrams wait in the socket).
#[test]
fn small_receive_ring_rearms_after_enobufs() {
    for_each_backend(|choice| {
        let small = EngineConfig {
            recv_buffers: 8,
            gro: false,
            ..config(choice)
        };
        let mut nodes = vec![
            (engine(config(choice)), Counter::new(1)),
            (engine(small), Counter::new(2)),
        ];
        let to = addr(&nodes[1].0);
        nodes[0].0.address_book().set_member(member(2), to);
        nodes[0].1 = Counter::new(1).sending(Destination::Member(member(2)), 2000, |_| 64);
        run_until(&mut nodes, Duration::from_secs(10), |n| {
            n[1].1.unique == 2000
        });
        let stats = nodes[1].0.stats();
        check_clean("receiver", &nodes[1].1, stats);
        if choice == BackendChoice::IoUring {
            assert!(stats.enobufs_rearms > 0, "{stats:?}");
            assert!(stats.recv_rearms >= stats.enobufs_rearms, "{stats:?}");
        }
    });
}

/// Unknown destinations are counted, not sent, and never stall the engine.
#[test]
fn unknown_destinations_count_as_no_route() {
    for_each_backend(|choice| {
        let mut engine = engine(config(choice));
        let mut p = Counter::new(1).sending(Destination::Member(member(42)), 100, |_| 50);
        let start = Instant::now();
        while p.next < 100 {
            assert!(start.elapsed() < Duration::from_secs(5));
            engine.poll(&mut p, Duration::ZERO).unwrap();
        }
        p.dest = Some(Destination::Group(GroupId(77)));
        p.total = 150;
        while p.next < 150 {
            assert!(start.elapsed() < Duration::from_secs(5));
            engine.poll(&mut p, Duration::ZERO).unwrap();
        }
        assert_eq!(engine.stats().no_route, 150);
        assert_eq!(engine.stats().datagrams_sent, 0);
    });
}

#[test]
fn config_from_lookup() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    let err = EngineConfig::from_lookup(env(&[("VSYNC_ENGINE", "bogus")])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "VSYNC_ENGINE=bogus: expected one of auto, uring, portable"
    );
    let err = EngineConfig::from_lookup(env(&[("VSYNC_TTL", "300")])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "VSYNC_TTL=300: expected an integer in 0..=255"
    );
    let err = EngineConfig::from_lookup(env(&[("VSYNC_IDLE", "nap")])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "VSYNC_IDLE=nap: expected one of spin, yield, park"
    );

    let cfg = EngineConfig::from_lookup(env(&[
        ("VSYNC_ENGINE", "Portable"),
        ("VSYNC_TTL", "4"),
        ("VSYNC_IDLE", "spin"),
    ]))
    .unwrap();
    assert_eq!(cfg.backend, BackendChoice::Portable);
    assert_eq!(cfg.multicast_ttl, 4);
    assert_eq!(cfg.idle, IdleStrategy::Spin);
    let cfg =
        EngineConfig::from_lookup(env(&[("VSYNC_ENGINE", "uring"), ("VSYNC_IDLE", "")])).unwrap();
    assert_eq!(cfg.backend, BackendChoice::IoUring);
    assert_eq!(cfg.idle, IdleStrategy::Park);

    let defaults = EngineConfig::from_lookup(|_| None).unwrap();
    assert_eq!(defaults, EngineConfig::default());
    assert_eq!(defaults.multicast_interface, Ipv4Addr::LOCALHOST);
    assert_eq!(defaults.multicast_ttl, 1);

    let bad = EngineConfig {
        mtu: 100,
        ..EngineConfig::default()
    };
    let err = Engine::new(bad).unwrap_err().to_string();
    assert!(err.contains("mtu=100"), "{err}");
}

/// `Auto` picks io_uring on this machine, and sockets are sized as asked (we run as root here,
/// so `SO_RCVBUFFORCE` works; elsewhere the size is only recorded).
#[test]
fn auto_backend_and_socket_setup() {
    let engine = engine(EngineConfig::default());
    assert_eq!(engine.backend_kind(), BackendKind::IoUring);
    let local = engine.local_addr();
    assert_eq!(*local.ip(), Ipv4Addr::LOCALHOST);
    assert_ne!(local.port(), 0);
    let stats = engine.stats();
    assert!(stats.recv_buffer_bytes > 0 && stats.send_buffer_bytes > 0);
    assert!(stats.gso_enabled && stats.gro_enabled, "{stats:?}");
}

#[test]
fn pin_current_thread_checks_the_allowed_set() {
    std::thread::spawn(|| {
        let cores = core_ids();
        vsync_dataplane::engine::pin_current_thread(cores[0]).expect("pin to an allowed core");
        let err = vsync_dataplane::engine::pin_current_thread(100_000).unwrap_err();
        assert!(err.to_string().contains("100000"), "{err}");
    })
    .join()
    .unwrap();
}

fn core_ids() -> Vec<usize> {
    let ids: Vec<usize> = core_affinity::get_core_ids()
        .expect("affinity")
        .iter()
        .map(|c| c.id)
        .collect();
    assert!(!ids.is_empty());
    ids
}
