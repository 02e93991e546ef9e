//! Runs the seeded oracle-cluster simulation over many seeds (3 and 5 replicas, loss,
//! duplication, reordering, partitions, crashes and restarts) and checks its properties:
//! one common log, identical views everywhere, no split brain, convergence after healing.
//!
//! * `VSYNC_ORACLE_SEEDS=N` — how many seeds (default 2000), run on two threads.
//! * `VSYNC_ORACLE_SEED=S` — replay one seed with a trace, print it and its report.

use std::time::Instant;

use vsync_control::oracle::sim::{run, SimConfig};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: expected an unsigned integer"))
    })
}

#[test]
fn oracle_cluster_simulation_over_many_seeds() {
    if let Some(seed) = env_u64("VSYNC_ORACLE_SEED") {
        let mut config = SimConfig::for_seed(seed);
        config.trace = true;
        println!("replaying {config:?}");
        match run(&config) {
            Ok(report) => {
                for line in &report.trace {
                    println!("{line}");
                }
                let mut report = report;
                report.trace.clear();
                println!("seed={seed} ok: {report:?}");
            }
            Err(failure) => {
                for line in &failure.trace {
                    println!("{line}");
                }
                panic!("{failure}");
            }
        }
        return;
    }
    let seeds = env_u64("VSYNC_ORACLE_SEEDS").unwrap_or(2000);
    let start = Instant::now();
    let threads = 2u64;
    type Totals = (u64, u64, u64, [u64; 5], Vec<String>);
    let results: Vec<Totals> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let (mut runs, mut commits, mut five, mut failures) = (0, 0, 0, Vec::new());
                    // views, snapshots installed/restored, leader transfers, partitions
                    let mut extra = [0u64; 5];
                    let mut seed = t;
                    while seed < seeds {
                        let config = SimConfig::for_seed(seed);
                        five += u64::from(config.replicas == 5);
                        match run(&config) {
                            Ok(r) => {
                                commits += r.committed as u64;
                                extra[0] += r.views as u64;
                                extra[1] += r.snapshots;
                                extra[2] += r.snapshot_transfers.0;
                                extra[3] += r.partitions;
                                extra[4] += r.snapshot_transfers.1;
                            }
                            Err(f) => failures.push(f.to_string()),
                        }
                        runs += 1;
                        seed += threads;
                    }
                    (runs, commits, five, extra, failures)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker"))
            .collect()
    });
    let runs: u64 = results.iter().map(|r| r.0).sum();
    let commits: u64 = results.iter().map(|r| r.1).sum();
    let five: u64 = results.iter().map(|r| r.2).sum();
    let failures: Vec<&String> = results.iter().flat_map(|r| r.4.iter()).collect();
    let extra = |k: usize| results.iter().map(|r| r.3[k]).sum::<u64>();
    println!(
        "oracle sim: {runs} seeds ({five} with 5 replicas), {commits} commands committed, \
         {} views, {} partitions, {} snapshots checked ({} sent by leaders, {} transfers retried), \
         {} failures, \
         {:.1} s",
        extra(0),
        extra(3),
        extra(1),
        extra(2),
        extra(4),
        failures.len(),
        start.elapsed().as_secs_f64()
    );
    for f in failures.iter().take(10) {
        println!("{f}");
    }
    assert!(
        failures.is_empty(),
        "{} seeds failed; first: {}",
        failures.len(),
        failures[0]
    );
    assert_eq!(runs, seeds);
}
