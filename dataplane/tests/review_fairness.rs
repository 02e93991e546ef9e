//! Review: transmit scheduling. `Protocol::poll_transmit` sets `self.rr = gi` (the group that
//! just produced a datagram) instead of advancing past it, and inside a group new group data
//! (step 4) always comes before point-to-point data and heartbeats (step 6) and raw (step 7).
//! A driver that draws a bounded batch per cycle (the engine: 64 datagrams) therefore serves
//! one bulk stream only, for as long as it has data and window.
//!
//! Run the proofs with:
//! `cargo test -p vsync-dataplane --test review_fairness -- --ignored --nocapture`
//!
//! Each test here proved a bug found in the data-plane review; the bugs are fixed and the
//! tests stay as regression tests (their doc comments describe the original failure).

#[path = "review_harness.rs"]
mod harness;

use std::collections::VecDeque;
use std::time::Duration;

use harness::{from, Sink};
use vsync_dataplane::config::ProtocolConfig;
use vsync_dataplane::protocol::{DeliveryKind, Destination, Endpoint, GroupSpec, Protocol};
use vsync_dataplane::{GroupId, MemberId, Timestamp, ViewId};

const G0: GroupId = GroupId(10);
const G1: GroupId = GroupId(11);
const BATCH: usize = 64;

struct World {
    eps: Vec<Endpoint<Sink>>,
    ids: Vec<MemberId>,
    groups: Vec<(GroupId, Vec<usize>)>,
    queue: VecDeque<(Timestamp, usize, Vec<u8>)>,
    now: Timestamp,
}

impl World {
    /// A (0) is in G0 with B (1) and in G1 with C (2).
    fn new() -> World {
        let ids: Vec<MemberId> = (1..=3).map(|p| MemberId::new(p, 1)).collect();
        let groups = vec![(G0, vec![0, 1]), (G1, vec![0, 2])];
        let cfg = ProtocolConfig::default();
        let mut eps: Vec<Endpoint<Sink>> = ids
            .iter()
            .enumerate()
            .map(|(i, m)| {
                Endpoint::new(
                    cfg.clone(),
                    *m,
                    1 + i as u64 * 1_000_000,
                    i as u64,
                    Sink::default(),
                )
            })
            .collect();
        for (g, members) in &groups {
            for &i in members {
                eps[i].join(
                    *g,
                    GroupSpec {
                        view: ViewId(1),
                        members: members.iter().map(|&j| ids[j]).collect(),
                        multicast: true,
                        key: None,
                    },
                );
            }
        }
        World {
            eps,
            ids,
            groups,
            queue: VecDeque::new(),
            now: Timestamp::ZERO,
        }
    }

    /// One engine-like cycle: receive what is due, timers, then at most BATCH datagrams each.
    fn cycle(&mut self) {
        let now = self.now;
        for e in self.eps.iter_mut() {
            e.sink_mut().now = now;
        }
        while self.queue.front().is_some_and(|(at, _, _)| *at <= now) {
            let (_, to, mut b) = self.queue.pop_front().unwrap();
            self.eps[to].handle_datagram(now, from(), &mut b);
        }
        let mut buf = vec![0u8; 1472];
        for i in 0..self.eps.len() {
            if self.eps[i].poll_timeout().is_some_and(|t| t <= now) {
                self.eps[i].handle_timeout(now);
            }
            for _ in 0..BATCH {
                let Some(t) = self.eps[i].poll_transmit(now, &mut buf) else {
                    break;
                };
                let targets: Vec<usize> = match t.destination {
                    Destination::Group(g) => self
                        .groups
                        .iter()
                        .find(|x| x.0 == g)
                        .unwrap()
                        .1
                        .iter()
                        .copied()
                        .filter(|&j| j != i)
                        .collect(),
                    Destination::Member(m) => vec![self.ids.iter().position(|x| *x == m).unwrap()],
                };
                for to in targets {
                    self.queue.push_back((
                        now + Duration::from_micros(50),
                        to,
                        buf[..t.len].to_vec(),
                    ));
                }
            }
            self.eps[i].poll_delivery();
        }
        // 64 datagrams per 200 µs: ~320k datagrams/s (~3.8 Gbit/s of 1472-byte datagrams).
        self.now = self.now + Duration::from_micros(200);
    }
}

/// A bulk sender in G0 (kept topped up, as an application streaming as fast as backpressure
/// allows does) starves everything A has to send in G1: a single 10-byte message in G1 does
/// not leave A within 400 ms.
#[test]
fn bulk_group_does_not_starve_another_group() {
    let mut w = World::new();
    let payload = vec![9u8; 1000];
    while w.eps[0].try_send(w.now, G0, &payload).is_ok() {}
    w.eps[0].try_send(w.now, G1, b"small one").unwrap();
    let mut got_at = None;
    for _ in 0..2_000 {
        while w.eps[0].try_send(w.now, G0, &payload).is_ok() {}
        w.cycle();
        if got_at.is_none()
            && w.eps[2]
                .sink()
                .log
                .iter()
                .any(|r| r.kind == DeliveryKind::Send)
        {
            got_at = Some(w.now);
        }
    }
    let b = w.eps[1].sink().log.len();
    println!("G0 delivered at B in 400 ms: {b} messages; G1's message reached C at: {got_at:?}");
    assert!(
        got_at.is_some_and(|t| t < Timestamp::from_nanos(5_000_000)),
        "G1 starved"
    );
}

/// Inside one group: a point-to-point message from A to B waits behind A's whole group
/// backlog (step 4 before step 6), for as long as the group stream has window.
#[test]
fn bulk_group_data_does_not_starve_p2p() {
    let mut w = World::new();
    let payload = vec![9u8; 1000];
    while w.eps[0].try_send(w.now, G0, &payload).is_ok() {}
    w.eps[0].try_send_p2p(w.now, G0, w.ids[1], b"p2p").unwrap();
    let mut got_at = None;
    for _ in 0..2_000 {
        while w.eps[0].try_send(w.now, G0, &payload).is_ok() {}
        w.cycle();
        if got_at.is_none()
            && w.eps[1]
                .sink()
                .log
                .iter()
                .any(|r| r.kind == DeliveryKind::P2p)
        {
            got_at = Some(w.now);
        }
    }
    let b = w.eps[1].sink().log.len();
    println!("B delivered {b} messages in 400 ms; the P2P message reached B at: {got_at:?}");
    assert!(
        got_at.is_some_and(|t| t < Timestamp::from_nanos(5_000_000)),
        "P2P starved"
    );
}
