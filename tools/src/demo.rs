//! The main job (`vsync-demo`): a local multi-member demo and benchmark of the whole stack on
//! the embedded default — N members in one process (one [`System`] each, with its own engine
//! and sockets), the first of which hosts the in-process oracle on loopback.
//!
//! 1. **Demo** (the slides' program): the members join group `demo` one by one (every member
//!    prints every view), OrderedSend five `(rank, n)` tuples each, check that every
//!    database holds the same tuples in the same order, run one rank-partitioned
//!    OrderedQuery per rank (answers `0..4`, each tuple scanned once), and the last member
//!    leaves gracefully (the others see a *leave*, not a failure).
//! 2. **Benchmark** over group `bench` (all N members): member 0 streams `--size`-byte Sends,
//!    then OrderedSends, through the public `Group` API for `--duration` seconds each, with at
//!    most `--window` messages not yet delivered everywhere; every member counts deliveries
//!    and one-way latency. The baseline is raw UDP (`vsync-bench --mode raw`) with the same
//!    members, sender count and size, run just before in the same process.
//!
//! Exit status 0 only if the demo's checks held and every benchmark message was delivered
//! exactly once, in order, to every member.

use std::io::{self, Write};
use std::net::UdpSocket;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use vsync::{Group, NReplies, System, Timeout, VsyncError};

use crate::cli::Cli;
use crate::loopback;

/// Request code of the demo's tuple update (the slides' `UPDATE`).
const UPDATE: u32 = 0;
/// Request code of the demo's rank-partitioned lookup (the slides' `LOOKUP`).
const LOOKUP: u32 = 1;
/// Request code of the benchmark's Send messages.
const BENCH_SEND: u32 = 10;
/// Request code of the benchmark's OrderedSend messages.
const BENCH_ORDERED: u32 = 11;

/// `vsync-demo` options.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "vsync-demo",
    about = "Local multi-member demo and benchmark of vsync on the embedded oracle (loopback)"
)]
pub struct DemoArgs {
    /// Members (one System each, in this process).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=16))]
    pub members: u32,
    /// Seconds per benchmark row.
    #[arg(long, default_value_t = 3.0)]
    pub duration: f64,
    /// Benchmark message size in bytes (marshalled arguments).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(24..=60_000))]
    pub size: u64,
    /// Most benchmark messages in flight (sent, not yet delivered at every member).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub window: u64,
    /// Oracle port (default: a free loopback port).
    #[arg(long)]
    pub oracle_port: Option<u16>,
    /// Run only the demo, not the benchmark.
    #[arg(long)]
    pub no_bench: bool,
}

fn say(line: impl AsRef<str>) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

fn other<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> io::Error + '_ {
    move |e| io::Error::other(format!("{what}: {e}"))
}

/// One demo member's replicated state.
#[derive(Default)]
struct DemoState {
    rank: usize,
    database: Vec<(i32, i32)>,
}

type Shared<T> = Arc<(Mutex<T>, Condvar)>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits up to `limit` for `cond` on `s`; false on timeout.
fn wait_until<T>(s: &Shared<T>, limit: Duration, cond: impl Fn(&T) -> bool) -> bool {
    let (m, cv) = &**s;
    let deadline = Instant::now() + limit;
    let mut g = lock(m);
    while !cond(&g) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        g = cv
            .wait_timeout(g, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    true
}

/// One member's benchmark counters.
struct BenchSink {
    /// Messages delivered (both rows).
    delivered: AtomicU64,
    /// Row, next expected sequence number, out-of-order count and latency histogram (ns).
    row: Mutex<SinkRow>,
}

struct SinkRow {
    code: u32,
    next: u64,
    bad_order: u64,
    latency: Histogram<u64>,
}

impl BenchSink {
    fn new() -> Self {
        BenchSink {
            delivered: AtomicU64::new(0),
            row: Mutex::new(SinkRow {
                code: BENCH_SEND,
                next: 0,
                bad_order: 0,
                latency: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("bounds"),
            }),
        }
    }

    fn on_message(&self, code: u32, seq: u64, sent_ns: u64, epoch: Instant) {
        let now = epoch.elapsed().as_nanos() as u64;
        let mut r = lock(&self.row);
        if r.code != code || seq != r.next {
            r.bad_order += 1;
        }
        r.next = seq + 1;
        let _ = r.latency.record(now.saturating_sub(sent_ns).max(1));
        drop(r);
        self.delivered.fetch_add(1, Ordering::Release);
    }
}

/// Throughput and latency of one benchmark row, per receiver.
struct RowResult {
    label: &'static str,
    msgs_per_s: f64,
    mb_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    loss_pct: f64,
    ok: bool,
}

fn free_loopback_port() -> io::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Runs the demo and the benchmark; returns the process exit code.
pub fn run_demo(args: &DemoArgs) -> io::Result<i32> {
    let port = match args.oracle_port {
        Some(p) => p,
        None => free_loopback_port()?,
    };
    let n = args.members as usize;
    say(format!(
        "vsync demo: {n} members in this process, embedded oracle on 127.0.0.1:{port}"
    ));
    let mut systems = Vec::with_capacity(n);
    for i in 0..n {
        let sys = System::builder()
            .oracle_port(port)
            .start()
            .map_err(other("starting a member"))?;
        say(format!(
            "member {i}: {} at {}{}",
            sys.my_address(),
            sys.data_addr(),
            if i == 0 && sys.hosts_oracle() {
                " (its System started the in-process ORACLE)"
            } else {
                ""
            }
        ));
        systems.push(sys);
    }
    let demo_ok = match run_slides(&systems) {
        Ok(ok) => ok,
        Err(e) => {
            say(format!("demo failed: {e}"));
            false
        }
    };
    let bench_ok = if args.no_bench || !demo_ok {
        true
    } else {
        run_bench(args, &systems)?
    };
    // Shut down the oracle's host last, so the others' leaves complete.
    for sys in systems.iter().rev() {
        if let Err(e) = sys.shutdown() {
            say(format!("shutdown of {}: {e}", sys.my_address()));
        }
    }
    let ok = demo_ok && bench_ok;
    say(if ok {
        "vsync demo: all checks passed"
    } else {
        "vsync demo: CHECKS FAILED"
    });
    Ok(if ok { 0 } else { 1 })
}

/// The slides' program over `systems`; true if every check held.
fn run_slides(systems: &[System]) -> Result<bool, VsyncError> {
    let n = systems.len();
    say(format!(
        "\n== demo: group \"demo\", {n} members, OrderedSend + OrderedQuery =="
    ));
    let mut groups = Vec::with_capacity(n);
    let mut states: Vec<Shared<DemoState>> = Vec::with_capacity(n);
    for (i, sys) in systems.iter().enumerate() {
        let g = Group::new(sys, "demo")?;
        let s: Shared<DemoState> = Arc::default();
        let st = s.clone();
        g.on_view(move |v| {
            say(format!("member {i}: New View: {v}"));
            let (m, cv) = &*st;
            lock(m).rank = v.my_rank().unwrap_or(0);
            cv.notify_all();
        })?;
        let st = s.clone();
        g.on(UPDATE, move |rank: i32, value: i32| {
            let (m, cv) = &*st;
            lock(m).database.push((rank, value));
            cv.notify_all();
        })?;
        let st = s.clone();
        g.on(LOOKUP, move |wanted: i32| -> Vec<i32> {
            let st = lock(&st.0);
            st.database
                .iter()
                .enumerate()
                .filter(|(index, (rank, _))| index % n == st.rank && *rank == wanted)
                .map(|(_, (_, value))| *value)
                .collect()
        })?;
        g.join()?;
        groups.push(g);
        states.push(s);
    }
    let full = |g: &Group| g.view().is_some_and(|v| v.len() == n);
    let t = Instant::now();
    while !groups.iter().all(full) {
        if t.elapsed() > Duration::from_secs(20) {
            say("demo: the view never reached every member");
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for (g, s) in groups.iter().zip(&states) {
        let rank = lock(&s.0).rank as i32;
        for value in 0..5 {
            g.ordered_send(UPDATE, (rank, value))?;
        }
    }
    let want = 5 * n;
    let mut ok = true;
    for (i, s) in states.iter().enumerate() {
        if !wait_until(s, Duration::from_secs(20), |st| st.database.len() >= want) {
            say(format!("member {i}: database incomplete"));
            ok = false;
        }
    }
    let first = lock(&states[0].0).database.clone();
    let identical = states.iter().all(|s| lock(&s.0).database == first);
    say(format!(
        "databases: {} tuples each, identical order at every member: {identical}",
        first.len()
    ));
    say(format!("database: {first:?}"));
    ok &= identical && first.len() == want;
    for rank in 0..n as i32 {
        let answers: Vec<Vec<i32>> = groups[n.min(2) - 1]
            .ordered_query(NReplies::All, Timeout::default(), LOOKUP, (rank,))?
            .decode()?;
        let mut values: Vec<i32> = answers.into_iter().flatten().collect();
        values.sort_unstable();
        let good = values == (0..5).collect::<Vec<i32>>();
        say(format!(
            "OrderedQuery LOOKUP({rank}) over {n} rank-partitioned scans: {values:?}{}",
            if good {
                ""
            } else {
                "  <-- expected [0, 1, 2, 3, 4]"
            }
        ));
        ok &= good;
    }
    let leaver = groups.last().expect("at least two members");
    leaver.leave()?;
    let t = Instant::now();
    let shrunk = |g: &Group| g.view().is_some_and(|v| v.len() == n - 1);
    while !groups[..n - 1].iter().all(shrunk) {
        if t.elapsed() > Duration::from_secs(20) {
            say("demo: the leave never completed");
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let v = groups[0].view().expect("member 0 is in the group");
    let graceful = v.failed.is_empty() && v.left.len() == 1;
    say(format!(
        "member {} left gracefully: the others see left={:?} failed={:?}",
        n - 1,
        v.left,
        v.failed
    ));
    ok &= graceful;
    Ok(ok)
}

/// The benchmark rows; true if every message was delivered exactly once and in order.
fn run_bench(args: &DemoArgs, systems: &[System]) -> io::Result<bool> {
    let n = systems.len();
    say(format!(
        "\n== benchmark: {n} members on loopback, 1 sender, {} B messages, {} s per row ==",
        args.size, args.duration
    ));
    let mut rows = Vec::new();
    rows.push(raw_baseline(args)?);
    let epoch = Instant::now();
    let mut groups = Vec::with_capacity(n);
    let mut sinks = Vec::with_capacity(n);
    for sys in systems {
        let g = Group::new(sys, "bench").map_err(other("bench group"))?;
        let sink = Arc::new(BenchSink::new());
        for code in [BENCH_SEND, BENCH_ORDERED] {
            let s = sink.clone();
            g.on(code, move |seq: u64, sent_ns: u64, _pad: Vec<u8>| {
                s.on_message(code, seq, sent_ns, epoch)
            })
            .map_err(other("bench handler"))?;
        }
        g.join().map_err(other("joining bench"))?;
        groups.push(g);
        sinks.push(sink);
    }
    let t = Instant::now();
    while !groups
        .iter()
        .all(|g| g.view().is_some_and(|v| v.len() == n))
    {
        if t.elapsed() > Duration::from_secs(20) {
            return Err(io::Error::other(
                "bench: the view never reached every member",
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for (label, code) in [("Send", BENCH_SEND), ("OrderedSend", BENCH_ORDERED)] {
        rows.push(bench_row(args, label, code, &groups, &sinks, epoch)?);
    }
    for g in &groups {
        let _ = g.leave();
    }
    let raw = rows[0].msgs_per_s;
    say(format!(
        "{:<12} {:>12} {:>9} {:>9} {:>9} {:>7} {:>8}",
        "row", "msgs/s/rx", "MB/s/rx", "p50 µs", "p99 µs", "loss %", "× raw"
    ));
    for r in &rows {
        say(format!(
            "{:<12} {:>12.0} {:>9.2} {:>9.1} {:>9.1} {:>7.2} {:>8.2}",
            r.label,
            r.msgs_per_s,
            r.mb_per_s,
            r.p50_us,
            r.p99_us,
            r.loss_pct,
            if raw > 0.0 {
                r.msgs_per_s / raw
            } else {
                f64::NAN
            }
        ));
    }
    say("(raw = unreliable UDP multicast on 127.0.0.1, unpaced: its loss is part of the baseline)");
    Ok(rows[1..].iter().all(|r| r.ok))
}

/// Raw UDP with the same members, one sender and the same size (`vsync-bench --mode raw`).
fn raw_baseline(args: &DemoArgs) -> io::Result<RowResult> {
    let argv = [
        "vsync-bench".to_string(),
        "--mode".into(),
        "raw".into(),
        "--members".into(),
        args.members.to_string(),
        "--senders".into(),
        "1".into(),
        "--size".into(),
        args.size.to_string(),
        "--duration".into(),
        args.duration.to_string(),
        "--line-rate-mbps".into(),
        "0".into(),
        "--drain-ms".into(),
        "500".into(),
    ];
    let cli = Cli::try_parse_from(argv).map_err(|e| io::Error::other(e.to_string()))?;
    let report = loopback::run_loopback(&cli.loopback)?;
    let a = report.aggregate();
    let rx = a.receivers.max(1) as f64;
    Ok(RowResult {
        label: "raw UDP",
        msgs_per_s: a.msgs_per_s / rx,
        mb_per_s: a.mb_per_s_per_receiver,
        p50_us: a.latency.p50_us,
        p99_us: a.latency.p99_us,
        loss_pct: a.loss_pct,
        ok: true,
    })
}

/// One full-stack row: member 0 streams for `args.duration` with a bounded window.
fn bench_row(
    args: &DemoArgs,
    label: &'static str,
    code: u32,
    groups: &[Group],
    sinks: &[Arc<BenchSink>],
    epoch: Instant,
) -> io::Result<RowResult> {
    for s in sinks {
        let mut r = lock(&s.row);
        r.code = code;
        r.next = 0;
        r.bad_order = 0;
        r.latency.reset();
    }
    let base: Vec<u64> = sinks
        .iter()
        .map(|s| s.delivered.load(Ordering::Acquire))
        .collect();
    let delivered_min = || {
        sinks
            .iter()
            .zip(&base)
            .map(|(s, b)| s.delivered.load(Ordering::Acquire) - b)
            .min()
            .unwrap_or(0)
    };
    let pad = vec![0u8; (args.size as usize).saturating_sub(24)];
    let sender = &groups[0];
    let run_for = Duration::from_secs_f64(args.duration);
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < run_for {
        if sent - delivered_min() >= args.window {
            std::thread::yield_now();
            continue;
        }
        let now = epoch.elapsed().as_nanos() as u64;
        let r = if code == BENCH_ORDERED {
            sender.ordered_send(code, (sent, now, pad.clone()))
        } else {
            sender.send(code, (sent, now, pad.clone()))
        };
        r.map_err(other("bench send"))?;
        sent += 1;
    }
    let drain = Instant::now();
    while delivered_min() < sent && drain.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    let mut bad_order = 0;
    let mut total = 0u64;
    for (s, b) in sinks.iter().zip(&base).skip(1) {
        let r = lock(&s.row);
        let _ = hist.add(&r.latency);
        bad_order += r.bad_order;
        total += s.delivered.load(Ordering::Acquire) - b;
    }
    let receivers = (sinks.len() - 1) as u64;
    let missing = (sent * receivers).saturating_sub(total);
    let extra = total.saturating_sub(sent * receivers);
    let ok = missing == 0 && extra == 0 && bad_order == 0;
    if !ok {
        say(format!(
            "{label}: sent {sent}, missing {missing}, extra {extra}, out of order {bad_order}"
        ));
    }
    let per_rx = total as f64 / receivers as f64 / elapsed;
    Ok(RowResult {
        label,
        msgs_per_s: per_rx,
        mb_per_s: per_rx * args.size as f64 / 1e6,
        p50_us: hist.value_at_quantile(0.5) as f64 / 1e3,
        p99_us: hist.value_at_quantile(0.99) as f64 / 1e3,
        loss_pct: if sent == 0 {
            0.0
        } else {
            missing as f64 * 100.0 / (sent * receivers) as f64
        },
        ok,
    })
}
