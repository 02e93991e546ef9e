//! Deterministic simulation of the reliable-multicast core: thousands of seeded runs of real
//! endpoints over a lossy, duplicating, corrupting, reordering and partitioning network, each
//! checked for exactly-once FIFO delivery, P2P delivery, raw integrity, quiescence and bounded
//! memory.
//!
//! * `VSYNC_SIM_SEEDS=N` sets how many seeds the sweep runs (default 3000).
//! * `VSYNC_SIM_SEED=S` replays one seed (the `replay` test prints its configuration and report).

use std::time::Duration;

use proptest::prelude::*;
use vsync_dataplane::config::ProtocolConfig;
use vsync_dataplane::sim::{run, SimConfig};

fn seeds() -> u64 {
    std::env::var("VSYNC_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

#[test]
fn swarm_of_seeds_keeps_every_invariant() {
    let base: u64 = std::env::var("VSYNC_SIM_BASE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let n = seeds();
    let mut datagrams = 0;
    let mut lost = 0;
    let mut retransmitted = 0;
    for seed in base..base + n {
        match run(&SimConfig::swarm(seed)) {
            Ok(r) => {
                datagrams += r.datagrams;
                lost += r.lost;
                retransmitted += r.retransmitted;
            }
            Err(f) => panic!("{f}\nconfig: {:?}", SimConfig::swarm(seed)),
        }
    }
    println!("{n} seeds: {datagrams} datagrams, {lost} lost copies, {retransmitted} frames retransmitted");
    assert!(
        lost > 0 && retransmitted > 0,
        "the fault mix must actually exercise recovery"
    );
}

#[test]
fn replay() {
    let Some(seed) = std::env::var("VSYNC_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    else {
        return;
    };
    let cfg = SimConfig::swarm(seed);
    println!("{cfg:#?}");
    match run(&cfg) {
        Ok(r) => println!("{r:#?}"),
        Err(f) => panic!("{f}"),
    }
}

#[test]
fn same_seed_same_run() {
    for seed in [1, 17, 4242] {
        let a = run(&SimConfig::swarm(seed)).expect("run");
        let b = run(&SimConfig::swarm(seed)).expect("run");
        assert_eq!(
            (a.datagrams, a.lost, a.retransmitted, a.virtual_time),
            (b.datagrams, b.lost, b.retransmitted, b.virtual_time)
        );
    }
}

#[test]
fn clean_network_needs_no_repair() {
    for seed in 0..50 {
        let mut cfg = SimConfig::swarm(seed);
        cfg.loss = 0.0;
        cfg.duplicate = 0.0;
        cfg.corrupt = 0.0;
        cfg.partition = None;
        cfg.delay_max = cfg.delay_min; // no reordering either
        let r = run(&cfg).unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(
            r.retransmitted, 0,
            "seed {seed}: no loss or reordering, no retransmission expected"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Under any mix of loss, duplication, reordering and delay, every message is delivered
    /// exactly once, in sender order, with bounded memory (checked inside `run`).
    #[test]
    fn exactly_once_fifo_under_faults(
        seed in any::<u64>(),
        members in 2usize..5,
        loss in 0.0f64..0.35,
        duplicate in 0.0f64..0.2,
        delay_max_us in 10u64..5000,
        max_message in 0usize..30000,
        sink_capacity in 1usize..200,
        multicast: bool,
    ) {
        let mut cfg = SimConfig::swarm(seed);
        cfg.members = members;
        cfg.senders = members;
        cfg.messages_per_sender = 60;
        cfg.loss = loss;
        cfg.duplicate = duplicate;
        cfg.delay_min = Duration::from_micros(5);
        cfg.delay_max = Duration::from_micros(delay_max_us.max(6));
        cfg.max_message = max_message;
        cfg.sink_capacity = sink_capacity;
        cfg.multicast = multicast;
        cfg.partition = None;
        cfg.protocol = ProtocolConfig { mtu: 700, max_message_bytes: 64 << 10, window_bytes: 65536, window_frames: 128, send_buffer_bytes: 128 << 10, ..cfg.protocol };
        if let Err(f) = run(&cfg) {
            prop_assert!(false, "{}", f);
        }
    }
}
