//! View-change latency of the real protocol code (oracle, member agents, data-plane endpoints)
//! in the deterministic simulator, in virtual time: from a member's crash to the oracle's
//! failure decision, and from the decision to the new view installed at every survivor, for
//! 3, 16 and 64 members while all members stream Sends and OrderedSends.
//!
//! The network is modelled as 25 µs one-way (half the lab's measured raw UDP ping-pong p50),
//! no loss. Virtual time measures protocol latency — round trips and timers — not CPU time.
//!
//! Run: `cargo run --release -p vsync-control --example view_change_latency`

use std::time::Duration;

use vsync_control::system_sim::{measure_view_change, SimTiming};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn main() {
    let runs: u64 = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    println!("view change, virtual time, one-way latency 25 µs, {runs} seeds per row");
    println!(
        "{:<26} {:>8} {:>7} {:>12} {:>12} {:>12} {:>12}",
        "timing", "replicas", "members", "decide→view", "p99", "crash→view", "p99"
    );
    for (name, timing, crash_at) in [(
        "defaults (100 ms / 1 s)",
        SimTiming::defaults(),
        Duration::from_secs(3),
    )] {
        for (replicas, members) in [(1usize, 3usize), (1, 16), (1, 64), (3, 3), (3, 16), (3, 64)] {
            let mut to_view = Vec::new();
            let mut crash_to_view = Vec::new();
            for seed in 0..runs {
                // Crash at a different phase of the heartbeat period each run.
                let at = crash_at + Duration::from_micros(seed * 7_919 % 100_000);
                match measure_view_change(members, replicas, timing, 25, at, seed) {
                    Ok(s) => {
                        to_view.push(s.decision_to_view);
                        crash_to_view.push(s.crash_to_view);
                    }
                    Err(e) => eprintln!("{members} members seed {seed}: {e}"),
                }
            }
            if to_view.is_empty() {
                continue;
            }
            println!(
                "{:<26} {:>8} {:>7} {:>12?} {:>12?} {:>12?} {:>12?}",
                name,
                replicas,
                members,
                pct(&mut to_view, 0.5),
                pct(&mut to_view, 0.99),
                pct(&mut crash_to_view, 0.5),
                pct(&mut crash_to_view, 0.99),
            );
        }
    }
}
