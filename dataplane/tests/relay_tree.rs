//! Relay-tree fan-out for large unicast groups, in the seeded simulator (`vsync_dataplane::sim`):
//! groups of 24–64 members without an IP-multicast address, so each sender's data goes down a
//! k-ary tree rooted at it, over a network that loses, duplicates and reorders datagrams.
//!
//! The simulator's checker verifies that every member delivers every Send exactly once, in FIFO
//! order, with the bytes sent (plus P2P, raw integrity, quiescence, bounded memory); these tests
//! add that a sender puts exactly `min(k, n − 1)` copies of each first transmission on the
//! network itself (not `n − 1`), that members other than the sender do the rest, and that on a
//! clean network the tree reaches everyone with no repair at all.
//!
//! * `VSYNC_TREE_SEEDS=N` — seeds of the sweep (default 10).
//! * `VSYNC_TREE_SEED=S` — replay one seed (prints its configuration and report).

use std::time::Duration;

use vsync_dataplane::config::ProtocolConfig;
use vsync_dataplane::rng::Rng;
use vsync_dataplane::sim::{run, SimConfig, SimReport};

/// A large unicast group with a relay tree, derived from `seed`.
fn tree_config(seed: u64) -> SimConfig {
    let mut r = Rng::new(seed ^ 0x7ee0_5eed);
    let mut c = SimConfig::swarm(seed);
    c.members = [24, 24, 32, 40, 48, 64][r.below(6) as usize];
    c.senders = 1 + r.below(3) as usize;
    c.messages_per_sender = 10 + r.below(30) as usize;
    c.max_message = [200, 2000, 6000][r.below(3) as usize];
    c.p2p_per_member = r.below(3) as usize;
    c.raw_per_member = r.below(2) as usize;
    c.loss = [0.0, 0.01, 0.03][r.below(3) as usize];
    c.duplicate = [0.0, 0.02, 0.05][r.below(3) as usize];
    c.corrupt = if r.chance(0.2) { 0.005 } else { 0.0 };
    c.delay_min = Duration::from_micros(10 + r.below(50));
    c.delay_max = c.delay_min + Duration::from_micros(r.below(800));
    c.multicast = false;
    c.partition = None;
    c.rate_limit = None;
    c.sink_capacity = [16, 100_000][r.below(2) as usize];
    c.drain_interval = Duration::from_micros([50, 500][r.below(2) as usize]);
    c.protocol = ProtocolConfig {
        mtu: [900, 1472][r.below(2) as usize],
        max_message_bytes: 64 << 10,
        window_bytes: 1 << 20,
        window_frames: 1024,
        send_buffer_bytes: 1 << 20,
        relay_threshold: 16,
        relay_fanout: 2 + r.below(5) as usize,
        ..c.protocol
    };
    c.time_limit = Duration::from_secs(60);
    c
}

fn seeds() -> u64 {
    std::env::var("VSYNC_TREE_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// Every sender put exactly `min(k, n − 1)` copies of each first-transmission datagram on the
/// network itself.
fn check_sender_copies(cfg: &SimConfig, r: &SimReport, per_datagram: u64) -> Result<(), String> {
    for m in 0..cfg.members {
        let (d, c) = (r.first_tx_datagrams[m], r.first_tx_copies[m]);
        if m < cfg.senders && d == 0 {
            return Err(format!("sender {m} sent no first transmission"));
        }
        if c != per_datagram * d {
            return Err(format!(
                "member {m}: {c} first-transmission copies for {d} datagrams, expected {per_datagram} each"
            ));
        }
    }
    Ok(())
}

#[test]
fn large_unicast_groups_deliver_everything_over_the_tree() {
    if std::env::var("VSYNC_TREE_SEED").is_ok() {
        return;
    }
    let (mut relayed, mut lost, mut retransmitted) = (0, 0, 0);
    for seed in 0..seeds() {
        let cfg = tree_config(seed);
        let r = run(&cfg).unwrap_or_else(|f| panic!("{f}\nconfig: {cfg:?}"));
        let k = cfg.protocol.relay_fanout.min(cfg.members - 1) as u64;
        check_sender_copies(&cfg, &r, k)
            .unwrap_or_else(|e| panic!("seed {seed}: {e} (replay: VSYNC_TREE_SEED={seed})"));
        assert!(
            r.relayed_copies > 0,
            "seed {seed}: members below the first level were reached without relays"
        );
        relayed += r.relayed_copies;
        lost += r.lost;
        retransmitted += r.retransmitted;
    }
    println!("{relayed} relayed copies, {lost} lost copies, {retransmitted} frames retransmitted");
    assert!(
        lost > 0 && retransmitted > 0,
        "the fault mix must exercise NAK repair under the tree"
    );
}

#[test]
fn sender_egress_is_the_fanout_not_the_group() {
    let mut cfg = tree_config(3);
    cfg.members = 32;
    cfg.senders = 1;
    cfg.messages_per_sender = 60;
    cfg.loss = 0.02;
    let tree = run(&cfg).unwrap_or_else(|f| panic!("{f}"));
    check_sender_copies(&cfg, &tree, cfg.protocol.relay_fanout as u64).unwrap();
    // Same workload, tree off: flat unicast fan-out, n − 1 copies per datagram.
    cfg.protocol.relay_threshold = 0;
    let flat = run(&cfg).unwrap_or_else(|f| panic!("{f}"));
    check_sender_copies(&cfg, &flat, 31).unwrap();
    assert_eq!(flat.relayed_copies, 0);
    assert!(tree.first_tx_copies[0] * 4 < flat.first_tx_copies[0]);
}

#[test]
fn clean_network_tree_reaches_everyone_without_repair() {
    for seed in 0..4 {
        let mut cfg = tree_config(100 + seed);
        cfg.loss = 0.0;
        cfg.duplicate = 0.0;
        cfg.corrupt = 0.0;
        cfg.delay_max = cfg.delay_min; // FIFO links: nothing reorders
        let r = run(&cfg).unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(
            r.retransmitted, 0,
            "seed {seed}: the tree must reach every member once with no NAK"
        );
        assert!(r.relayed_copies > 0);
        // (A full application queue may refuse raw messages; nothing else is dropped.)
        assert!(
            r.drops.keys().all(|k| *k == "raw_overflow"),
            "seed {seed}: drops {:?}",
            r.drops
        );
    }
}

#[test]
fn replay() {
    let Some(seed) = std::env::var("VSYNC_TREE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    else {
        return;
    };
    let cfg = tree_config(seed);
    println!("{cfg:#?}");
    match run(&cfg) {
        Ok(r) => println!("{r:#?}"),
        Err(f) => panic!("{f}"),
    }
}
