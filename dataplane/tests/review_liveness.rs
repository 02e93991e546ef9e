//! Review: liveness bugs in the sans-IO core, proven with in-memory endpoints.
//!
//! Run the proofs with:
//! `cargo test -p vsync-dataplane --test review_liveness -- --ignored --nocapture`
//!
//! Each test here proved a bug found in the data-plane review; the bugs are fixed and the
//! tests stay as regression tests (their doc comments describe the original failure).

#[path = "review_harness.rs"]
mod harness;

use std::time::Duration;

use harness::{id, Net, F, G};
use vsync_dataplane::config::ProtocolConfig;
use vsync_dataplane::protocol::{
    DeliveryKind, Destination, Endpoint, GroupSpec, Protocol, SendError,
};
use vsync_dataplane::{MemberId, Timestamp, ViewId};

/// A group larger than one ACK frame can describe: `push_group_ack` writes only the entries
/// that fit (21 at MTU 576, 58 at MTU 1472) and never the rest, so senders listed after them
/// never get receipt reports from anybody: their window closes for good. And because
/// `ack_dirty` stays set while `last_ack` is not advanced, the ack timer is always overdue:
/// every driver iteration sends another (truncated) ACK (a busy loop).
#[test]
fn large_group_reports_reach_every_sender() {
    let cfg = ProtocolConfig {
        mtu: 576,
        window_frames: 64,
        max_message_bytes: 64 << 10,
        ..ProtocolConfig::default()
    };
    let n = 24;
    let mut net = Net::new(n, cfg, true);
    let sender = n - 1;
    let mut sent = 0;
    let total = 200;
    // Feed the sender as backpressure allows, for 100 ms of virtual time.
    let end = net.now + Duration::from_millis(100);
    while net.now < end {
        while sent < total && net.nodes[sender].try_send(net.now, G, &[7u8; 32]).is_ok() {
            sent += 1;
        }
        net.step();
    }
    let delivered: Vec<usize> = (0..n - 1)
        .map(|r| net.delivered(r, id(sender), DeliveryKind::Send).len())
        .collect();
    // `acks_sent` only counts complete reports, so it stays 0: count datagrams instead. The
    // receivers send nothing but receipt reports here.
    let acks: Vec<u64> = net.sent_by[..n - 1].to_vec();
    let counted: Vec<u64> = net.nodes.iter().map(|e| e.stats().acks_sent).collect();
    println!("admitted {sent}/{total}; delivered per receiver {delivered:?}");
    println!(
        "datagrams sent per receiver in 100 ms (ack interval 1 ms, 10 µs driver steps): {acks:?}"
    );
    println!("EndpointStats::acks_sent per member: {counted:?}");
    println!(
        "sender all_stable={} group stats={:?}",
        net.nodes[sender].all_stable(G),
        net.nodes[sender].group_stats(G)
    );
    // A 1 ms ack interval allows ~100 reports in 100 ms; the busy loop sends one per 10 µs step.
    let max_acks = *acks.iter().max().unwrap();
    assert!(
        delivered.iter().all(|d| *d == total)
            && net.nodes[sender].all_stable(G)
            && max_acks < 1_000,
        "stream of the 24th member stalled and/or ACK storm (max {max_acks} ACKs)"
    );
}

/// A group whose only member is this endpoint (how every Isis² group starts). Retention is
/// collected only from `on_ack` (no peers: never) and `self_delivered` (which runs at
/// admission, before the frames are transmitted, so `collect` stops at `next_new`). Once a
/// burst fills the retention buffer nothing ever frees it: WouldBlock for ever.
#[test]
fn singleton_group_frees_retention_after_a_burst() {
    let cfg = ProtocolConfig {
        max_message_bytes: 16 << 10,
        send_buffer_bytes: 64 << 10,
        ..ProtocolConfig::default()
    };
    let me = MemberId::new(1, 1);
    let mut e = Endpoint::new(
        cfg,
        me,
        1,
        1,
        |_: &vsync_dataplane::protocol::Delivery<'_>| true,
    );
    e.join(
        G,
        GroupSpec {
            view: ViewId(1),
            members: vec![me],
            multicast: true,
            key: None,
        },
    );
    let mut now = Timestamp::ZERO;
    let mut buf = vec![0u8; 1472];
    // A burst, as the node's drain loop does (up to 1024 records between transmissions).
    let mut admitted = 0;
    while admitted < 10_000 && e.try_send(now, G, &[1u8; 1000]).is_ok() {
        admitted += 1;
    }
    println!("burst admitted {admitted} messages, then WouldBlock");
    // Now drive the endpoint for a simulated second: transmit, timers, delivery retries.
    for _ in 0..1000 {
        now = now + Duration::from_millis(1);
        while e.poll_transmit(now, &mut buf).is_some() {}
        if e.poll_timeout().is_some_and(|t| t <= now) {
            e.handle_timeout(now);
        }
        e.poll_delivery();
    }
    let s = e.group_stats(G).unwrap();
    println!("after 1 s: {s:?}");
    assert_eq!(
        e.try_send(now, G, &[1u8; 1000]),
        Ok(s.next_seq),
        "everything was transmitted and self-delivered, yet retention is never freed"
    );
}

/// Same, with `self_delivery = false`: retention is never freed at all, even one message at a
/// time with transmissions in between.
#[test]
fn singleton_group_without_self_delivery_frees_retention() {
    let cfg = ProtocolConfig {
        max_message_bytes: 16 << 10,
        send_buffer_bytes: 64 << 10,
        self_delivery: false,
        ..ProtocolConfig::default()
    };
    let me = MemberId::new(1, 1);
    let mut e = Endpoint::new(
        cfg,
        me,
        1,
        1,
        |_: &vsync_dataplane::protocol::Delivery<'_>| true,
    );
    e.join(
        G,
        GroupSpec {
            view: ViewId(1),
            members: vec![me],
            multicast: true,
            key: None,
        },
    );
    let mut now = Timestamp::ZERO;
    let mut buf = vec![0u8; 1472];
    let mut ok = 0;
    for _ in 0..1000 {
        now = now + Duration::from_millis(1);
        if e.try_send(now, G, &[1u8; 1000]).is_ok() {
            ok += 1;
        }
        while e.poll_transmit(now, &mut buf).is_some() {}
        if e.poll_timeout().is_some_and(|t| t <= now) {
            e.handle_timeout(now);
        }
    }
    println!(
        "admitted {ok} of 1000 paced sends; stats {:?}",
        e.group_stats(G)
    );
    assert_eq!(ok, 1000);
}

/// `SendStream::push` refuses a message of more than `max_frames = 4 × VSYNC_WINDOW_FRAMES`
/// frames with `Admission::Full`, mapped to WouldBlock, although nothing is retained and it
/// never can fit. `ProtocolConfig::validate` accepts VSYNC_WINDOW_FRAMES=64 with the default
/// 16 MiB VSYNC_MAXMSGLEN, so every message above 256 fragments (~356 KB at MTU 1472) blocks
/// the group (and, in a node, its whole submit ring) for ever.
#[test]
fn unadmittable_message_is_refused_not_blocked() {
    // Fixed by validation: such a configuration is refused at start with a clear message...
    let bad = ProtocolConfig {
        window_frames: 64,
        ..ProtocolConfig::default()
    };
    let e = bad
        .validate()
        .expect_err("64 frames cannot carry a 16 MiB message");
    assert!(e.to_string().starts_with("VSYNC_WINDOW_FRAMES=64"), "{e}");
    // ...and a message that can never be admitted is TooLarge, not WouldBlock.
    let cfg = ProtocolConfig {
        window_frames: 64,
        max_message_bytes: 256 << 10,
        ..ProtocolConfig::default()
    };
    cfg.validate().expect("the configuration validates");
    let mut net = Net::new(2, cfg, true);
    let big = vec![3u8; 1 << 20];
    let r = net.nodes[0].try_send(net.now, G, &big);
    assert!(matches!(r, Err(SendError::TooLarge { .. })), "{r:?}");
}

/// Unicast fan-out (no IP multicast): repairs go to the member that asked, but the
/// `retransmit_linger` suppression is per frame, not per destination. When two receivers lose
/// the same frame and NAK together, the first gets the repair and the second's NAK is dropped
/// as "recently retransmitted": it waits a whole `nak_retry` more (k receivers: k rounds).
#[test]
fn unicast_repairs_reach_every_requester() {
    let cfg = ProtocolConfig {
        nak_delay: Duration::ZERO,
        nak_retry: Duration::from_millis(5),
        heartbeat_interval: Duration::from_millis(1),
        ..ProtocolConfig::default()
    };
    let nak_retry = cfg.nak_retry;
    let mut net = Net::new(3, cfg, false);
    // Lose the first transmission of frame 1 to both receivers.
    let mut dropped = 0;
    net.filter = Box::new(move |p| {
        let first = p.from == 0
            && matches!(p.destination, Destination::Group(_))
            && p.frames.iter().any(|f| matches!(f, F::Data { seq: 1, .. }));
        if first && dropped < 2 {
            dropped += 1;
            return true;
        }
        false
    });
    net.nodes[0].try_send(net.now, G, b"one").unwrap();
    net.step();
    net.nodes[0].try_send(net.now, G, b"two").unwrap();
    let ok = net.run_until(Duration::from_millis(100), |n| {
        (1..3).all(|r| n.delivered(r, id(0), DeliveryKind::Send).len() == 2)
    });
    assert!(ok);
    let t1 = net.delivered(1, id(0), DeliveryKind::Send)[0].at;
    let t2 = net.delivered(2, id(0), DeliveryKind::Send)[0].at;
    let gap = if t1 > t2 {
        t1.saturating_since(t2)
    } else {
        t2.saturating_since(t1)
    };
    println!(
        "repair of frame 1: member 1 at {:?}, member 2 at {:?} (difference {gap:?}, nak_retry {nak_retry:?}); retransmitted {}",
        Duration::from_nanos(t1.as_nanos()),
        Duration::from_nanos(t2.as_nanos()),
        net.nodes[0].stats().frames_retransmitted
    );
    assert!(
        gap < nak_retry,
        "second requester waited an extra NAK round ({gap:?})"
    );
}
