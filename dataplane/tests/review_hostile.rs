//! Review: robustness against buggy or malicious peers (members holding the keys, or anyone
//! in checksum mode, where xxh3 is an integrity check, not a MAC).
//!
//! Run the proofs with:
//! `cargo test -p vsync-dataplane --test review_hostile -- --ignored --nocapture`
//!
//! Each test here proved a bug found in the data-plane review; the bugs are fixed and the
//! tests stay as regression tests (their doc comments describe the original failure).

#[path = "review_harness.rs"]
mod harness;

use std::time::Duration;

use harness::{forge, from, id, Net, Sink, G};
use vsync_dataplane::config::ProtocolConfig;
use vsync_dataplane::protocol::{DeliveryKind, Endpoint, GroupSpec, Protocol};
use vsync_dataplane::wire::{DropReason, Keys, NakRange, PacketKind};
use vsync_dataplane::{GroupId, MemberId, Timestamp, ViewId};

/// The replay table is keyed by sender only and is updated *before* the group, view and
/// sender-membership checks. With group keys (no system key), a member X of group G2 can seal
/// a G2 datagram claiming to come from Y (a member of another group G1 that X is not in) with
/// a huge packet number: R accepts it into Y's replay window, then drops it as
/// `unknown_sender` — but from then on every genuine datagram of Y, in every group, is more
/// than 1024 behind "Y's highest" and is dropped as `replayed`. Permanent, cross-group.
#[test]
fn other_group_member_cannot_blackhole_a_sender() {
    let (g1, g2) = (GroupId(1), GroupId(2));
    let (k1, k2) = ([1u8; 32], [2u8; 32]);
    let (r, y, x) = (
        MemberId::new(1, 1),
        MemberId::new(2, 1),
        MemberId::new(3, 1),
    );
    let cfg = ProtocolConfig::default();
    let mut rx = Endpoint::new(cfg.clone(), r, 1, 1, Sink::default());
    rx.join(
        g1,
        GroupSpec {
            view: ViewId(1),
            members: vec![r, y],
            multicast: true,
            key: Some(k1),
        },
    );
    rx.join(
        g2,
        GroupSpec {
            view: ViewId(1),
            members: vec![r, x],
            multicast: true,
            key: Some(k2),
        },
    );
    let mut ys = Endpoint::new(cfg.clone(), y, 1_000_000, 2, Sink::default());
    ys.join(
        g1,
        GroupSpec {
            view: ViewId(1),
            members: vec![r, y],
            multicast: true,
            key: Some(k1),
        },
    );

    // X holds only K2. It forges a G2 datagram "from Y" with a far-future packet number.
    let mut x_keys = Keys::default();
    x_keys.set_group_key(g2, Some(&k2));
    let mut forged = forge(
        &x_keys,
        PacketKind::Group,
        g2,
        ViewId(1),
        y,
        u64::MAX / 2,
        1472,
        |w| {
            assert!(w.push_high(false, 1, 1));
        },
    );
    let now = Timestamp::from_nanos(1_000_000);
    rx.handle_datagram(now, from(), &mut forged);
    println!(
        "forged datagram dropped as unknown_sender: {}",
        rx.drops().get(DropReason::UnknownSender)
    );

    // Y now sends a genuine message in G1.
    ys.try_send(now, g1, b"hello from Y").unwrap();
    let mut buf = vec![0u8; 1472];
    while let Some(t) = ys.poll_transmit(now, &mut buf) {
        rx.handle_datagram(now, from(), &mut buf[..t.len]);
    }
    println!(
        "genuine G1 datagrams of Y dropped as replayed: {}; delivered: {}",
        rx.drops().get(DropReason::Replayed),
        rx.sink().log.len()
    );
    assert_eq!(
        rx.sink().log.len(),
        1,
        "Y's genuine message in G1 was blackholed"
    );
}

/// A HIGH frame with `next_seq` far beyond anything sent (a buggy peer, or a forged datagram
/// in checksum mode) raises the receiver's `high` for good: `has_gap()` stays true, and the
/// receiver NAKs the impossible range every `nak_retry` for ever (the sender clips it to
/// nothing). Nothing bounds `high` by the receive window, as data frames are.
#[test]
fn absurd_high_is_dropped() {
    let mut net = Net::new(2, ProtocolConfig::default(), true);
    net.nodes[1].try_send(net.now, G, b"x").unwrap();
    net.run_for(Duration::from_millis(20));
    let keys = Keys::default();
    let bytes = forge(
        &keys,
        PacketKind::Group,
        G,
        ViewId(1),
        id(1),
        1 << 40,
        1472,
        |w| {
            assert!(w.push_high(false, u64::MAX - 1, 1));
        },
    );
    net.inject(0, bytes);
    let before = net.nodes[0].stats().naks_sent;
    net.run_for(Duration::from_secs(1));
    let naks = net.nodes[0].stats().naks_sent - before;
    println!(
        "NAKs sent by the receiver in the second after one bogus HIGH: {naks}; sender retransmitted {}",
        net.nodes[1].stats().frames_retransmitted
    );
    assert!(naks < 5, "{naks} NAKs for a gap that cannot exist");
}

/// NAK amplification: the sender retransmits whatever range a NAK names (clipped only to what
/// it retains and sent), even from a member whose own receipt report says it holds all of it.
/// While one slow member keeps the window retained, one small NAK datagram from another
/// member makes the sender multicast the whole retained window; repeated every
/// `retransmit_linger` it is a traffic amplifier (any host can do it in checksum mode).
#[test]
fn one_nak_cannot_retransmit_the_whole_window() {
    let cfg = ProtocolConfig::default();
    let mut net = Net::new(3, cfg, true);
    // Member 2's application is stalled, so member 0 retains its window.
    net.nodes[2].sink_mut().accept = false;
    for _ in 0..500 {
        net.nodes[0].try_send(net.now, G, &[5u8; 1000]).unwrap();
    }
    net.run_for(Duration::from_millis(30));
    let before = net.nodes[0].stats().frames_retransmitted;
    let sent_before = net.sent_by[0];
    println!(
        "member 1 delivered {} and reported; sender stats {:?}",
        net.delivered(1, id(0), DeliveryKind::Send).len(),
        net.nodes[0].group_stats(G)
    );
    // Member 1 (holds everything, said so) sends one 80-byte NAK for [1, 2^63).
    let keys = Keys::default();
    let nak = forge(
        &keys,
        PacketKind::Direct,
        G,
        ViewId(1),
        id(1),
        1 << 40,
        1472,
        |w| {
            assert_eq!(
                w.push_nak(
                    false,
                    id(0),
                    &[NakRange {
                        start: 1,
                        end: 1 << 63
                    }]
                ),
                1
            );
        },
    );
    let nak_len = nak.len();
    net.inject(0, nak);
    net.run_for(Duration::from_millis(1));
    let frames = net.nodes[0].stats().frames_retransmitted - before;
    let datagrams = net.sent_by[0] - sent_before;
    println!("one {nak_len}-byte NAK from a member that holds everything -> {frames} frames retransmitted in {datagrams} datagrams (~{} KB)", frames);
    assert_eq!(
        frames, 0,
        "retransmitted frames the NAKer had already acknowledged"
    );
}

/// Not a bug, a guard: ACK `received`/`consumed` far beyond what was sent, and floors above
/// next_seq, are clamped; sequence numbers near u64::MAX are out of window. No panic, no
/// retention freed early.
#[test]
fn hostile_positions_are_clamped() {
    let mut net = Net::new(3, ProtocolConfig::default(), true);
    net.nodes[2].sink_mut().accept = false;
    for _ in 0..10 {
        net.nodes[0].try_send(net.now, G, b"m").unwrap();
    }
    net.run_for(Duration::from_millis(5));
    let keys = Keys::default();
    let ack = forge(
        &keys,
        PacketKind::Group,
        G,
        ViewId(1),
        id(2),
        1 << 40,
        1472,
        |w| {
            w.push_ack(
                false,
                &[vsync_dataplane::wire::AckEntry {
                    sender: id(0),
                    received: u64::MAX,
                    consumed: u64::MAX,
                }],
            );
            w.push_msg(false, false, u64::MAX, b"far");
            w.push_frag(false, u64::MAX, 1, 2, 10, b"f");
        },
    );
    net.inject(0, ack);
    net.run_for(Duration::from_millis(5));
    // Clamped to next_new: member 2 "consumed" what was sent (its frames are held locally, so
    // nothing is lost when its application resumes).
    let s = net.nodes[0].group_stats(G).unwrap();
    assert_eq!((s.next_seq, s.next_unsent), (11, 11));
    net.nodes[2].sink_mut().accept = true;
    assert!(net.nodes[0].try_send(net.now, G, b"ok").is_ok());
    assert!(net.run_until(Duration::from_millis(50), |n| n
        .delivered(2, id(0), DeliveryKind::Send)
        .len()
        == 11));
    let _ = Timestamp::ZERO;
}
