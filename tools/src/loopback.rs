//! The default topology: every member is a thread of this process, talking over the
//! loopback interface (multicast group 239.255.x.y with IP_MULTICAST_IF 127.0.0.1, or
//! unicast fan-out to 127.0.0.1:port+1+i). Nothing outside 127.0.0.0/8 is touched and no
//! system setting is changed.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use crate::cli::LoopbackArgs;
use crate::member::{run_member, MemberResult, Progress};
use crate::payload::{now_ns, random_u32};
use crate::report::{Report, RunInfo};
use crate::signals;
use crate::transport::{self, TransportConfig};

/// Default group for this process: `239.255.<pid-derived>.<pid-derived>`, port 20000..40000,
/// so concurrent runs (e.g. parallel tests) do not share a group.
pub fn default_group() -> SocketAddrV4 {
    let pid = std::process::id();
    let b = (pid % 65_536) as u16;
    SocketAddrV4::new(
        Ipv4Addr::new(239, 255, (b >> 8) as u8, (b & 0xff) as u8),
        20_000 + (pid % 20_000) as u16,
    )
}

/// Prints one progress line per second to stderr until `done` (or `until_ns`), and
/// forwards a termination signal ([`signals::stop_requested`]) into `stop`.
pub(crate) fn progress_printer(
    start_ns: u64,
    until_ns: u64,
    sample: impl Fn() -> (u64, u64, u64),
    done: &AtomicBool,
    stop: &AtomicBool,
) {
    let mut next = start_ns + 1_000_000_000;
    let mut last = (0, 0, 0);
    let mut last_t = start_ns;
    // Bounded by `until_ns` (end of drain) and by `done`.
    while !done.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(50));
        if signals::stop_requested() {
            stop.store(true, Ordering::SeqCst);
        }
        let now = now_ns();
        if now > until_ns {
            break;
        }
        if now < next {
            continue;
        }
        let (sent, delivered, bytes) = sample();
        let dt = (now - last_t) as f64 / 1e9;
        eprintln!(
            "[{:6.1}s] sent {:>9.0} msg/s | delivered {:>10.0} msg/s, {:>8.2} MB/s (all receivers) | total delivered {}",
            (now - start_ns) as f64 / 1e9,
            (sent - last.0) as f64 / dt,
            (delivered - last.1) as f64 / dt,
            (bytes - last.2) as f64 / dt / 1e6,
            delivered
        );
        last = (sent, delivered, bytes);
        last_t = now;
        next += 1_000_000_000;
    }
}

/// Runs the loopback benchmark described by `args`.
pub fn run_loopback(args: &LoopbackArgs) -> io::Result<Report> {
    let o = &args.opts;
    let members = if o.pingpong { 2 } else { args.members };
    if members < 2 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--members must be at least 2 (someone has to receive)",
        ));
    }
    let senders = args
        .senders
        .resolve(members)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    transport::available(args.mode)?;
    let group = args.group.unwrap_or_else(default_group);
    let lo = Ipv4Addr::LOCALHOST;
    let addrs: Vec<SocketAddrV4> = (0..members)
        .map(|i| SocketAddrV4::new(lo, group.port().wrapping_add(1 + i as u16)))
        .collect();
    let copies = if o.unicast { members - 1 } else { 1 };
    let (rate, pacing) = o.offered_rate(args.mode, args.size, copies, senders);
    let tag = random_u32();
    let cores = if args.pin {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    };

    let ready = Arc::new(Barrier::new(members as usize + 1));
    let go = Arc::new(Barrier::new(members as usize + 1));
    let start = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for i in 0..members {
        let cfg = TransportConfig {
            index: i,
            members: addrs.clone(),
            group,
            iface: lo,
            unicast: o.unicast,
            multicast_loop: true,
            max_payload: args.size,
            rx_loss_pct: args.loss,
            seed: u64::from(random_u32()) << 32 | u64::from(i),
            socket_buffer: o.socket_buffer as usize,
            batch: o.batch as usize,
        };
        let (ready, go, start, progress, stop) = (
            ready.clone(),
            go.clone(),
            start.clone(),
            progress.clone(),
            stop.clone(),
        );
        let (mode, opts, size) = (args.mode, o.clone(), args.size);
        let core = (!cores.is_empty()).then(|| cores[i as usize % cores.len()]);
        let h = thread::Builder::new().name(format!("member-{i}")).spawn(
            move || -> io::Result<MemberResult> {
                if let Some(c) = core {
                    core_affinity::set_for_current(c);
                }
                let opened = transport::open(mode, &cfg);
                ready.wait();
                go.wait();
                let mut t = match opened {
                    Ok(t) => t,
                    Err(e) => {
                        stop.store(true, Ordering::SeqCst);
                        let msg = format!("member {i}: opening transport: {e}");
                        return Err(io::Error::new(e.kind(), msg));
                    }
                };
                let spec = opts.member_spec(
                    i,
                    members,
                    senders,
                    size,
                    rate,
                    start.load(Ordering::SeqCst),
                    tag,
                );
                let r = run_member(t.as_mut(), &spec, &stop, &progress);
                if r.is_err() {
                    stop.store(true, Ordering::SeqCst);
                }
                r
            },
        )?;
        handles.push(h);
    }
    ready.wait();
    let start_ns = now_ns() + 20_000_000;
    start.store(start_ns, Ordering::SeqCst);
    go.wait();

    let spec0 = o.member_spec(0, members, senders, args.size, rate, start_ns, tag);
    let until = spec0.send_end() + spec0.drain_ns + 1_000_000_000;
    let done = AtomicBool::new(false);
    let mut results = Vec::new();
    let mut first_err = None;
    thread::scope(|s| {
        let p = progress.clone();
        let (done, stop) = (&done, &*stop);
        s.spawn(move || {
            progress_printer(
                start_ns,
                until,
                || {
                    (
                        p.sent.load(Ordering::Relaxed),
                        p.delivered.load(Ordering::Relaxed),
                        p.bytes.load(Ordering::Relaxed),
                    )
                },
                done,
                stop,
            )
        });
        for h in handles {
            match h.join() {
                Ok(Ok(r)) => results.push(r),
                Ok(Err(e)) => {
                    stop.store(true, Ordering::SeqCst);
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    stop.store(true, Ordering::SeqCst);
                    first_err.get_or_insert(io::Error::other("member thread panicked"));
                }
            }
        }
        done.store(true, Ordering::Relaxed);
    });
    if let Some(e) = first_err {
        return Err(e);
    }
    if stop.load(Ordering::SeqCst) {
        eprintln!("vsync-bench: interrupted; results are partial");
    }
    Ok(Report {
        info: RunInfo {
            mode: args.mode,
            topology: "loopback".to_string(),
            transport: if o.unicast { "unicast" } else { "multicast" }.to_string(),
            group: if o.unicast {
                format!(
                    "127.0.0.1:{}..{}",
                    addrs[0].port(),
                    addrs[addrs.len() - 1].port()
                )
            } else {
                group.to_string()
            },
            members,
            senders: spec0.senders,
            size: args.size,
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
