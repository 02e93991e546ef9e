//! Query round-trip benchmark: `Query` and `OrderedQuery` with ALL replies, for 3 and 8
//! members, through the public API (one `System` per member in this process, embedded
//! oracle, loopback). One query at a time from the rank-0 member, one `i32` reply per
//! member; prints p50 / p99 / mean RTT and queries per second. The baseline, in the same
//! run: raw UDP scatter-gather with the same members (one datagram to each other member's
//! echo thread, wait for every echo) — the floor for a one-to-all, all-to-one exchange.
//!
//! ```text
//! cargo run --release -p vsync --example query_rtt [-- QUERIES]
//! ```

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use vsync::{Group, NReplies, System, Timeout, VsyncError};

/// The query's request code.
const ASK: u32 = 0;

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(40777)
}

/// Raw UDP scatter-gather RTT with `members - 1` echo threads; returns (p50, p99, mean) µs.
fn raw_row(members: usize, queries: usize) -> std::io::Result<()> {
    use std::net::UdpSocket;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut peers = Vec::new();
    let mut threads = Vec::new();
    for _ in 1..members {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
        peers.push(s.local_addr()?);
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            }
        }));
    }
    let me = UdpSocket::bind("127.0.0.1:0")?;
    me.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut buf = [0u8; 64];
    for i in 0..queries + queries / 10 {
        let msg = (i as u64).to_le_bytes();
        let t0 = Instant::now();
        for p in &peers {
            me.send_to(&msg, p)?;
        }
        let mut got = 0;
        while got < peers.len() {
            let (n, _) = me.recv_from(&mut buf)?;
            if buf[..n] == msg {
                got += 1;
            }
        }
        if i >= queries / 10 {
            let _ = hist.record(t0.elapsed().as_micros().max(1) as u64);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    println!(
        "{members:>2} members  {:<13} p50 {:>6} µs  p99 {:>6} µs  mean {:>7.1} µs",
        "raw UDP",
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.mean()
    );
    Ok(())
}

fn row(members: usize, queries: usize) -> Result<(), VsyncError> {
    raw_row(members, queries).map_err(|e| VsyncError::Start(format!("raw baseline: {e}")))?;
    let port = free_port();
    let mut systems = Vec::new();
    let mut groups = Vec::new();
    for _ in 0..members {
        let sys = System::builder().oracle_port(port).start()?;
        let g = Group::new(&sys, "rtt")?;
        let me = g.clone();
        g.on(ASK, move |x: i32| -> i32 {
            x + me.my_rank().unwrap_or(0) as i32
        })?;
        g.join()?;
        systems.push(sys);
        groups.push(g);
    }
    let t = Instant::now();
    while groups
        .iter()
        .any(|g| g.view().is_none_or(|v| v.len() < members))
    {
        if t.elapsed() > Duration::from_secs(30) {
            return Err(VsyncError::Timeout("the full view".into()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let g = &groups[0];
    for (label, ordered) in [("Query", false), ("OrderedQuery", true)] {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        let warmup = queries / 10;
        let mut timed = Duration::ZERO;
        for i in 0..queries + warmup {
            let t0 = Instant::now();
            let r = if ordered {
                g.ordered_query(NReplies::All, Timeout::default(), ASK, (i as i32,))?
            } else {
                g.query(NReplies::All, Timeout::default(), ASK, (i as i32,))?
            };
            let rtt = t0.elapsed();
            let answers: Vec<i32> = r.decode()?;
            assert_eq!(answers.len(), members, "every member replies");
            if i >= warmup {
                let _ = hist.record(rtt.as_micros().max(1) as u64);
                timed += rtt;
            }
        }
        println!(
            "{members:>2} members  {label:<13} p50 {:>6} µs  p99 {:>6} µs  mean {:>7.1} µs  {:>7.0} queries/s",
            hist.value_at_quantile(0.5),
            hist.value_at_quantile(0.99),
            hist.mean(),
            queries as f64 / timed.as_secs_f64()
        );
    }
    for s in systems.iter().rev() {
        let _ = s.shutdown();
    }
    Ok(())
}

fn main() -> Result<(), VsyncError> {
    let queries: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    for members in [3, 8] {
        row(members, queries)?;
    }
    Ok(())
}
