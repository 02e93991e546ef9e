//! Multi-process runs: the `member` subcommand (one member per process, result as one JSON
//! line on stdout) and the `lab` coordinator, which builds a [`Lab`], starts one member
//! process per host (this same binary, via `ip netns exec`) for every configuration,
//! gathers their JSON lines and prints a table. The lab is always torn down: on return,
//! on error, on panic (`Lab`'s `Drop`) and on SIGINT/SIGTERM (the signal only sets a flag;
//! the coordinator kills its member processes and returns normally).
//!
//! Member processes report progress as `@progress <ms> <sent> <delivered> <bytes>` lines on
//! stderr; the coordinator sums them into its own once-a-second progress line and relays
//! every other stderr line prefixed with the host name.

use std::io::{self, BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::cli::{LabArgs, MemberArgs, Senders};
use crate::json::Json;
use crate::member::{run_member, MemberResult, Progress};
use crate::netlab::{Lab, LabConfig};
use crate::payload::{now_ns, random_u32};
use crate::report::{LatencySummary, Report, RunInfo};
use crate::signals;
use crate::transport::{self, Mode, TransportConfig};

/// Parses `--members` entries (`ip` or `ip:port`; default port = group port + 1 + index).
pub fn parse_members(list: &[String], group_port: u16) -> io::Result<Vec<SocketAddrV4>> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            if let Ok(a) = s.parse::<SocketAddrV4>() {
                return Ok(a);
            }
            s.parse::<Ipv4Addr>()
                .map(|ip| SocketAddrV4::new(ip, group_port.wrapping_add(1 + i as u16)))
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("--members entry {s:?} is not an IPv4 address[:port]"),
                    )
                })
        })
        .collect()
}

/// Runs one member in this process (the `member` subcommand).
pub fn run_member_process(args: &MemberArgs) -> io::Result<MemberResult> {
    let o = &args.opts;
    let addrs = parse_members(&args.members, args.group.port())?;
    let members = addrs.len() as u32;
    if args.index >= members {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--index {} but only {members} --members", args.index),
        ));
    }
    let senders = args
        .senders
        .resolve(members)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    transport::available(args.mode)?;
    let same_host = addrs.iter().filter(|a| *a.ip() == args.iface).count() > 1;
    let cfg = TransportConfig {
        index: args.index,
        members: addrs,
        group: args.group,
        iface: args.iface,
        unicast: o.unicast,
        multicast_loop: same_host,
        max_payload: args.size,
        rx_loss_pct: args.loss,
        seed: u64::from(random_u32()) << 32 | u64::from(args.index),
        socket_buffer: o.socket_buffer as usize,
        batch: o.batch as usize,
    };
    let copies = if o.unicast { members - 1 } else { 1 };
    let (rate, _) = o.offered_rate(args.mode, args.size, copies, senders);
    let start_ns = args.start_at_ns.unwrap_or_else(|| now_ns() + 500_000_000);
    let spec = o.member_spec(
        args.index, members, senders, args.size, rate, start_ns, args.tag,
    );
    let mut t = transport::open(args.mode, &cfg)?;
    let progress = Progress::default();
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        if args.progress {
            let (p, done) = (&progress, &done);
            s.spawn(move || {
                let mut next = start_ns + 1_000_000_000;
                // Bounded by `done`, which is set right after run_member returns.
                while !done.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(50));
                    let now = now_ns();
                    if now >= next {
                        eprintln!(
                            "@progress {} {} {} {}",
                            (now - start_ns) / 1_000_000,
                            p.sent.load(Ordering::Relaxed),
                            p.delivered.load(Ordering::Relaxed),
                            p.bytes.load(Ordering::Relaxed)
                        );
                        next += 1_000_000_000;
                    }
                }
            });
        }
        let r = run_member(t.as_mut(), &spec, signals::flag(), &progress);
        done.store(true, Ordering::Relaxed);
        r
    })
}

/// One configuration of a lab sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabConfigRow {
    /// Transport.
    pub mode: Mode,
    /// Message size.
    pub size: usize,
    /// Senders.
    pub senders: Senders,
}

struct MemberProc {
    host: usize,
    child: Child,
    stdout: thread::JoinHandle<String>,
    stderr: thread::JoinHandle<Vec<String>>,
}

fn kill(child: &mut Child, sig: i32) {
    if let Ok(None) = child.try_wait() {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    }
}

/// Runs one configuration on `lab`; returns the report or an error description.
fn run_config(lab: &Lab, args: &LabArgs, row: LabConfigRow, port: u16) -> Result<Report, String> {
    let o = &args.opts;
    transport::available(row.mode).map_err(|e| e.to_string())?;
    let hosts = if o.pingpong { 2 } else { args.hosts };
    let senders = row.senders.resolve(hosts)?;
    let group = SocketAddrV4::new(lab.group_addr(1), port);
    let addrs: Vec<String> = (0..hosts as usize)
        .map(|i| lab.host_addr(i).to_string())
        .collect();
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let tag = random_u32();
    let start_ns = now_ns() + args.startup_ms * 1_000_000;
    let copies = if o.unicast { hosts - 1 } else { 1 };
    let (rate, pacing) = o.offered_rate(row.mode, row.size, copies, senders);
    let progress: Arc<Vec<[AtomicU64; 3]>> = Arc::new(
        (0..hosts)
            .map(|_| [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)])
            .collect(),
    );

    let mut procs: Vec<MemberProc> = Vec::new();
    let mut spawn_error = None;
    for i in 0..hosts as usize {
        let mut cmd = lab.command(i, &exe);
        cmd.arg("member")
            .args(["--mode", row.mode.name()])
            .args(["--index", &i.to_string()])
            .args(["--members", &addrs.join(",")])
            .args(["--group", &group.to_string()])
            .args(["--iface", &lab.host_addr(i).to_string()])
            .args(["--senders", &senders.to_string()])
            .args(["--size", &row.size.to_string()])
            .args(["--start-at-ns", &start_ns.to_string()])
            .args(["--tag", &tag.to_string()])
            .arg("--progress")
            .args(["--duration", &o.duration.to_string()])
            .args(["--warmup", &o.warmup.to_string()])
            .args(["--rate", &o.rate.to_string()])
            .args(["--line-rate-mbps", &o.line_rate_mbps.to_string()])
            .args(["--burst", &o.burst.to_string()])
            .args(["--drain-ms", &o.drain_ms.to_string()])
            .args(["--idle-ms", &o.idle_ms.to_string()])
            .args(["--socket-buffer", &o.socket_buffer.to_string()])
            .args(["--batch", &o.batch.to_string()])
            .args(["--ping-timeout-ms", &o.ping_timeout_ms.to_string()]);
        if o.unicast {
            cmd.arg("--unicast");
        }
        if o.pingpong {
            cmd.arg("--pingpong");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                spawn_error = Some(format!("spawning member in {}: {e}", lab.host_name(i)));
                break;
            }
        };
        let mut out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        let stdout = thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let (p, name) = (progress.clone(), format!("h{}", i + 1));
        let stderr = thread::spawn(move || {
            let mut kept = Vec::new();
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("@progress ") {
                    let v: Vec<u64> = rest
                        .split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect();
                    if v.len() == 4 {
                        for k in 0..3 {
                            p[i][k].store(v[k + 1], Ordering::Relaxed);
                        }
                    }
                    continue;
                }
                eprintln!("[{name}] {line}");
                if kept.len() < 50 {
                    kept.push(line);
                }
            }
            kept
        });
        procs.push(MemberProc {
            host: i,
            child,
            stdout,
            stderr,
        });
    }

    // Wait for the members, printing a progress line per second.
    let deadline =
        start_ns + ((o.warmup + o.duration) * 1e9) as u64 + o.drain_ms * 1_000_000 + 15_000_000_000;
    // Members report at whole seconds; print a little later so their lines are in.
    let mut next = start_ns + 1_300_000_000;
    let mut last = (0u64, 0u64, 0u64, start_ns);
    let mut killed_at: Option<u64> = None;
    let mut timed_out = false;
    loop {
        let running = procs
            .iter_mut()
            .filter_map(|p| p.child.try_wait().ok())
            .filter(Option::is_none)
            .count();
        if running == 0 {
            break;
        }
        let now = now_ns();
        let abort = signals::stop_requested() || spawn_error.is_some() || now >= deadline;
        if abort && killed_at.is_none() {
            timed_out = now >= deadline;
            for p in &mut procs {
                kill(&mut p.child, libc::SIGTERM);
            }
            killed_at = Some(now);
        }
        if let Some(k) = killed_at {
            if now - k > 3_000_000_000 {
                for p in &mut procs {
                    kill(&mut p.child, libc::SIGKILL);
                }
            }
        }
        if now >= next && killed_at.is_none() {
            let sum = |k: usize| {
                progress
                    .iter()
                    .map(|a| a[k].load(Ordering::Relaxed))
                    .sum::<u64>()
            };
            let (sent, delivered, bytes) = (sum(0), sum(1), sum(2));
            let dt = ((now - last.3) as f64 / 1e9).max(0.001);
            eprintln!(
                "[{:6.1}s] {} {} B senders={}: sent {:>9.0} msg/s | delivered {:>10.0} msg/s, {:>8.2} MB/s (all receivers)",
                (next - 300_000_000 - start_ns) as f64 / 1e9,
                row.mode,
                row.size,
                row.senders,
                sent.saturating_sub(last.0) as f64 / dt,
                delivered.saturating_sub(last.1) as f64 / dt,
                bytes.saturating_sub(last.2) as f64 / dt / 1e6
            );
            last = (sent, delivered, bytes, now);
            next += 1_000_000_000;
        }
        thread::sleep(Duration::from_millis(50));
    }

    let mut results = Vec::new();
    let mut errors = Vec::new();
    for p in procs {
        let MemberProc {
            host,
            mut child,
            stdout,
            stderr,
        } = p;
        let status = child.wait().map_err(|e| e.to_string())?;
        let out = stdout.join().unwrap_or_default();
        let err_lines = stderr.join().unwrap_or_default();
        let name = lab.host_name(host);
        let parsed = out
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .ok_or_else(|| "no JSON result".to_string())
            .and_then(Json::parse)
            .and_then(|j| MemberResult::from_json(&j));
        match (status.success(), parsed) {
            (true, Ok(r)) => results.push(r),
            (ok, res) => {
                let why = err_lines.last().cloned().unwrap_or_else(|| match res {
                    Err(e) => e,
                    Ok(_) => String::new(),
                });
                errors.push(format!(
                    "{name}: {}{why}",
                    if ok {
                        String::new()
                    } else {
                        format!("{status}: ")
                    }
                ));
            }
        }
    }
    if let Some(e) = spawn_error {
        return Err(e);
    }
    if timed_out {
        errors.insert(0, "timed out".to_string());
    }
    if signals::stop_requested() {
        return Err("interrupted".to_string());
    }
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    Ok(Report {
        info: RunInfo {
            mode: row.mode,
            topology: "lab".to_string(),
            transport: if o.unicast { "unicast" } else { "multicast" }.to_string(),
            group: group.to_string(),
            members: hosts,
            senders: if o.pingpong { 1 } else { senders },
            size: row.size,
            duration_s: o.duration,
            warmup_s: o.warmup,
            rate: o.rate,
            offered_rate: rate,
            pacing,
            loss_pct: args.loss,
            pingpong: o.pingpong,
        },
        results,
    })
}

fn table_header() -> String {
    format!(
        "{:<9} {:>6} {:>7} {:>4} {:>11} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9} {:>6} {:>6} {:>8}",
        "mode",
        "size",
        "senders",
        "rx",
        "msgs/s/rx",
        "MB/s/rx",
        "MB/s all",
        "loss%",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "dup",
        "ooo",
        "stall ms"
    )
}

fn table_row(row: &LabConfigRow, r: &Report) -> String {
    if r.info.pingpong {
        let p = r.results.iter().find_map(|m| m.ping.as_ref());
        let l = p.map_or(LatencySummary::default(), |p| LatencySummary::of(&p.rtt));
        return format!(
            "{:<9} {:>6} {:>7} ping-pong RTT: {} pings, {} timeouts, p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
            row.mode.name(),
            row.size,
            "-",
            p.map_or(0, |p| p.sent),
            p.map_or(0, |p| p.timeouts),
            l.p50_us,
            l.p99_us,
            l.p999_us,
            l.max_us
        );
    }
    let a = r.aggregate();
    let n = a.receivers.max(1) as f64;
    format!(
        "{:<9} {:>6} {:>7} {:>4} {:>11.0} {:>9.2} {:>9.2} {:>8.3} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>6} {:>6} {:>8.2}",
        row.mode.name(),
        row.size,
        row.senders.to_string(),
        a.receivers,
        a.msgs_per_s / n,
        a.mb_per_s_per_receiver,
        a.mb_per_s,
        a.loss_pct,
        a.latency.p50_us,
        a.latency.p99_us,
        a.latency.p999_us,
        a.latency.max_us,
        a.duplicate,
        a.out_of_order,
        r.receivers().iter().map(|x| x.max_gap_us).fold(0.0, f64::max) / 1000.0
    )
}

/// The `lab` subcommand. Returns the process exit code (0 = every configuration ran).
pub fn run_lab(args: &LabArgs) -> io::Result<i32> {
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| format!("vb{}", std::process::id()));
    let mut rows = Vec::new();
    for &mode in &args.modes {
        for &size in &args.sizes {
            if args.opts.pingpong {
                rows.push(LabConfigRow {
                    mode,
                    size,
                    senders: Senders::Count(1),
                });
                continue;
            }
            for &senders in &args.senders {
                senders
                    .resolve(args.hosts)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                rows.push(LabConfigRow {
                    mode,
                    size,
                    senders,
                });
            }
        }
    }
    let mut cfg = LabConfig::new(prefix, args.hosts as usize);
    cfg.loss_pct = args.loss;
    eprintln!(
        "vsync-bench lab: creating {} hosts (prefix {}), {} configuration(s) of {:.1} s",
        cfg.hosts,
        cfg.prefix,
        rows.len(),
        args.opts.warmup + args.opts.duration
    );
    let lab = Lab::create(cfg)?;
    let json = args.opts.json;
    if !json {
        println!(
            "lab {}: {} hosts on a namespace bridge, 10.77.{}.0/24, loss {}% per receiver, \
             {} s per configuration (+{} s warm-up), {}",
            lab.prefix(),
            lab.host_count(),
            lab.lab_id(),
            args.loss,
            args.opts.duration,
            args.opts.warmup,
            if args.opts.unicast {
                "unicast fan-out"
            } else {
                "IP multicast"
            }
        );
        println!("{}", table_header());
    }
    let mut runs = Vec::new();
    let mut failed = 0;
    for (k, row) in rows.iter().enumerate() {
        if signals::stop_requested() {
            break;
        }
        let port = 7700 + (k as u16 % 200) * 2;
        match run_config(&lab, args, *row, port) {
            Ok(report) => {
                if json {
                    runs.push(report.to_json());
                } else {
                    println!("{}", table_row(row, &report));
                    if args.detail {
                        report.write_text(&mut io::stdout())?;
                    }
                }
            }
            Err(e) => {
                failed += 1;
                if json {
                    runs.push(
                        Json::obj()
                            .with("mode", row.mode.name())
                            .with("size", row.size)
                            .with("senders", row.senders.to_string())
                            .with("error", e),
                    );
                } else {
                    println!(
                        "{:<9} {:>6} {:>7} error: {e}",
                        row.mode.name(),
                        row.size,
                        row.senders.to_string()
                    );
                }
            }
        }
    }
    if json {
        let out = Json::obj()
            .with(
                "lab",
                Json::obj()
                    .with("prefix", lab.prefix())
                    .with("hosts", lab.host_count())
                    .with("lab_id", u64::from(lab.lab_id()))
                    .with("loss_pct", args.loss),
            )
            .with("runs", runs);
        println!("{out}");
    }
    let interrupted = signals::stop_requested();
    lab.destroy()?;
    if interrupted {
        eprintln!("vsync-bench lab: interrupted; lab removed");
        return Ok(130);
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

/// Makes the child `cmd` will spawn receive SIGTERM when the coordinator dies without cleaning
/// up (SIGKILL), so no member process outlives a lab run.
pub(crate) fn die_with_parent(cmd: &mut std::process::Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}
