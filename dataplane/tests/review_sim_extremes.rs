//! Review: a swarm over corners the CI swarm does not reach (more members, sink capacity 1, NAK retry shorter than the retransmit linger, tiny windows with large
//! messages, heavy loss). Every run is checked by `sim::run`'s invariant checker.
//!
//! `VSYNC_REVIEW_SEEDS=N` (default 60) and `VSYNC_REVIEW_BASE=B` (default 0);
//! `VSYNC_REVIEW_SEED=S` replays one seed and prints its configuration.

use std::time::Duration;

use vsync_dataplane::rng::Rng;
use vsync_dataplane::sim::{run, SimConfig};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn extreme(seed: u64) -> SimConfig {
    let mut c = SimConfig::swarm(seed);
    let mut r = Rng::new(seed ^ 0xfeed_beef);
    // Stay below the ACK-truncation bound (21 entries at MTU 576) so other bugs show.
    c.members = 2 + r.below(11) as usize;
    c.senders = 1 + r.below(c.members as u64) as usize;
    c.messages_per_sender = 10 + r.below(60) as usize;
    // (self-delivery stays on: the checker expects every member to deliver its own Sends.)
    let _ = r.chance(0.8);
    if r.chance(0.3) {
        c.sink_capacity = 1;
    }
    if r.chance(0.3) {
        c.protocol.nak_retry = Duration::from_micros(100 + r.below(300));
        c.protocol.retransmit_linger = Duration::from_micros(500 + r.below(2000));
    }
    if r.chance(0.3) {
        c.protocol.window_frames = 64;
        c.protocol.window_bytes = 65536;
        c.max_message = 60_000;
    }
    if r.chance(0.2) {
        c.loss = 0.4;
    }
    if r.chance(0.2) {
        c.p2p_per_member = 20 + r.below(30) as usize;
    }
    c.time_limit = Duration::from_secs(60);
    c
}

#[test]
fn extreme_swarm_keeps_every_invariant() {
    if let Ok(seed) = std::env::var("VSYNC_REVIEW_SEED") {
        let seed: u64 = seed.parse().expect("seed");
        let cfg = extreme(seed);
        println!("{cfg:#?}");
        match run(&cfg) {
            Ok(r) => println!("{r:#?}"),
            Err(f) => panic!("{f}"),
        }
        return;
    }
    let base = env("VSYNC_REVIEW_BASE", 0);
    let n = env("VSYNC_REVIEW_SEEDS", 60);
    let mut failures = Vec::new();
    for seed in base..base + n {
        if let Err(f) = run(&extreme(seed)) {
            println!(
                "FAIL seed {seed}: {}",
                f.message.chars().take(600).collect::<String>()
            );
            failures.push(seed);
        }
    }
    println!("{n} extreme seeds from {base}: failures {failures:?}");
    assert!(
        failures.is_empty(),
        "failing seeds {failures:?} (replay with VSYNC_REVIEW_SEED)"
    );
}
