//! `vsync-oracle` — one ORACLE membership-service replica on one UDP socket.
//!
//! ```text
//! vsync-oracle --id 1 --listen 10.77.1.1:7100 \
//!              --peers 1=10.77.1.1:7100,2=10.77.1.2:7100,3=10.77.1.3:7100 \
//!              [--fd-interval-ms 100] [--fd-timeout-ms 1000] [--tick-ms 100] [--status-ms 1000]
//!              [--seed N] [--exit-after-ms 0]
//!              [--unicast-only] [--mc-range 239.255.0.1-239.255.255.254] [--max-ipmc-addrs 25]
//!              [--remap-interval-s 60] [--data-dir DIR]
//! ```
//!
//! Datagrams: `'R'` + sender replica id (u64 LE) + raft bytes between replicas, `'M'` +
//! `ToOracle` from members; answers to a member go to the source of its latest datagram (see
//! `vsync_control::runtime`). Defaults for the timing come from `VSYNC_FD_INTERVAL_MS`,
//! `VSYNC_FD_TIMEOUT_MS` and `VSYNC_ORACLE_TICK_MS`; flags override them. A status line
//! (`vsync-oracle id=.. leader=.. term=.. applied=..`) goes to stderr every `--status-ms`.
//! SIGTERM / SIGINT (or `--exit-after-ms`) end it cleanly (exit 0).
//!
//! Dr. Multicast is on by default: the leader maps groups onto IP-multicast addresses with the
//! parameters of `VSYNC_MCRANGE_LOW` / `VSYNC_MCRANGE_HIGH`, `VSYNC_MAXIPMCADDRS`,
//! `VSYNC_UNICAST_ONLY` and `VSYNC_REMAP_INTERVAL_S` (see `vsync_control::config`);
//! `--mc-range`, `--max-ipmc-addrs`, `--unicast-only` and `--remap-interval-s` override them.
//! `--unicast-only` means every group uses unicast fan-out (the replicas are listed explicitly
//! with `--peers`, so `VSYNC_HOSTS` is not needed for it). The mapping announces only an IPv4
//! address; members add the conventional port (`vsync-member --mcast-port`).
//!
//! Without `--data-dir` storage is in memory: a replica that was killed must not be restarted
//! under the same id (it would rejoin with an empty log and could vote twice in a term); with
//! three replicas the other two keep a majority. With `--data-dir DIR` the replica's raft
//! state (hard state, log, snapshot) is written to DIR before raft relies on it
//! (`vsync_control::oracle::durable`), and a replica started on an existing DIR restarts from
//! it, so a killed replica may be restarted under the same id with the same DIR. If a write to
//! DIR fails the replica stops working and the process exits with an error.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use vsync_control::config::ControlConfig;
use vsync_control::fd::FdConfig;
use vsync_control::runtime::OracleNode;
use vsync_control::service::ServiceConfig;
use vsync_tools::signals;
use vsync_tools::vsync_lab::parse_replicas;

#[derive(Parser, Debug)]
#[command(name = "vsync-oracle", about = "One vsync ORACLE replica over UDP")]
struct Args {
    /// This replica's id (must appear in --peers).
    #[arg(long)]
    id: u64,
    /// Address to listen on (IP:PORT).
    #[arg(long)]
    listen: SocketAddr,
    /// Every replica, this one included: `1=IP:PORT,2=IP:PORT,3=IP:PORT`.
    #[arg(long)]
    peers: String,
    /// Member heartbeat interval the failure detector expects (ms).
    #[arg(long)]
    fd_interval_ms: Option<u64>,
    /// Member silence before it is declared failed (ms).
    #[arg(long)]
    fd_timeout_ms: Option<u64>,
    /// Raft tick (ms): leader heartbeats every 2 ticks, elections after 10–20.
    #[arg(long)]
    tick_ms: Option<u64>,
    /// Status line period on stderr (ms; 0 = never).
    #[arg(long, default_value_t = 1000)]
    status_ms: u64,
    /// Seed of the replica's election timeouts (default: the id).
    #[arg(long)]
    seed: Option<u64>,
    /// Exit after this long (ms; 0 = run until a signal). A safety net for labs.
    #[arg(long, default_value_t = 0)]
    exit_after_ms: u64,
    /// No IP-multicast mapping: every group uses unicast fan-out (overrides
    /// `VSYNC_UNICAST_ONLY`).
    #[arg(long)]
    unicast_only: bool,
    /// Physical multicast address range `LOW-HIGH`, inclusive (overrides `VSYNC_MCRANGE_*`).
    #[arg(long)]
    mc_range: Option<String>,
    /// Most physical multicast addresses in use (overrides `VSYNC_MAXIPMCADDRS`).
    #[arg(long)]
    max_ipmc_addrs: Option<u32>,
    /// Periodic Dr. Multicast recomputation, seconds (also on every membership change;
    /// overrides `VSYNC_REMAP_INTERVAL_S`).
    #[arg(long)]
    remap_interval_s: Option<u64>,
    /// Keep this replica's raft state durable in DIR (created if missing; restarted from if
    /// present). Without it the state is in memory only.
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
}

/// `LOW-HIGH` (dotted IPv4 multicast addresses).
fn parse_mc_range(s: &str) -> Result<(Ipv4Addr, Ipv4Addr), String> {
    let bad = || format!("--mc-range {s:?}: expected LOW-HIGH, e.g. 239.255.0.1-239.255.0.8");
    let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
    let lo: Ipv4Addr = lo.trim().parse().map_err(|_| bad())?;
    let hi: Ipv4Addr = hi.trim().parse().map_err(|_| bad())?;
    Ok((lo, hi))
}

/// The service configuration: `VSYNC_*` through `ControlConfig`, then the flags.
fn service_config(control: &ControlConfig, args: &Args) -> Result<ServiceConfig, String> {
    let mut cfg = ServiceConfig::from_control(control);
    let mut mc = control.multicast;
    if args.unicast_only {
        mc.unicast_only = true;
    }
    if let Some(r) = &args.mc_range {
        (mc.range_low, mc.range_high) = parse_mc_range(r)?;
    }
    if let Some(n) = args.max_ipmc_addrs {
        mc.max_addrs = n;
    }
    mc.validate()
        .map_err(|e| format!("multicast parameters: {e}"))?;
    cfg.multicast = Some(mc);
    if let Some(s) = args.remap_interval_s {
        if s == 0 {
            return Err("--remap-interval-s must be positive".into());
        }
        cfg.remap_interval = Duration::from_secs(s);
    }
    Ok(cfg)
}

fn run(args: Args) -> Result<(), String> {
    let control = ControlConfig::from_env().map_err(|e| e.to_string())?;
    let peers = parse_replicas(&args.peers)?;
    match peers.iter().find(|(id, _)| *id == args.id) {
        None => return Err(format!("--id {} is not listed in --peers", args.id)),
        Some((_, addr)) if *addr != args.listen => eprintln!(
            "vsync-oracle: note: --listen {} differs from this replica's --peers entry {addr}",
            args.listen
        ),
        _ => {}
    }
    let fd = FdConfig {
        interval: args
            .fd_interval_ms
            .map_or(control.fd.interval, Duration::from_millis),
        timeout: args
            .fd_timeout_ms
            .map_or(control.fd.timeout, Duration::from_millis),
    };
    if fd.interval.is_zero() || fd.timeout < fd.interval * 2 {
        return Err(format!(
            "failure detection: timeout {:?} must be at least twice the interval {:?} (> 0)",
            fd.timeout, fd.interval
        ));
    }
    let tick = args
        .tick_ms
        .map_or(control.oracle_tick, Duration::from_millis);
    if tick.is_zero() {
        return Err("--tick-ms must be positive".into());
    }
    let svc = service_config(&control, &args)?;
    signals::install().map_err(|e| format!("signal handlers: {e}"))?;
    let mut node = OracleNode::with_data_dir(
        args.id,
        args.listen,
        peers.clone(),
        ServiceConfig { fd, tick, ..svc },
        args.seed.unwrap_or(args.id),
        args.data_dir.as_deref(),
    )
    .map_err(|e| format!("replica {}: {e}", args.id))?;
    if let Some(dir) = &args.data_dir {
        let r = node.service().replica();
        eprintln!(
            "vsync-oracle: replica {} durable in {} (boot {}, term {}, commit {}, snapshot {})",
            args.id,
            dir.display(),
            r.storage().boots(),
            r.term(),
            r.commit_index(),
            r.storage().snapshot_index()
        );
    }
    eprintln!(
        "vsync-oracle: replica {} of {:?} listening on {} (fd {:?}/{:?}, tick {:?}, {}, remap \
         every {:?})",
        args.id,
        peers.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        args.listen,
        fd.interval,
        fd.timeout,
        tick,
        match svc.multicast {
            Some(m) if !m.unicast_only && m.max_addrs > 0 => format!(
                "multicast {}-{} (at most {})",
                m.range_low, m.range_high, m.max_addrs
            ),
            _ => "unicast only".to_string(),
        },
        svc.remap_interval
    );
    let period = Duration::from_millis(args.status_ms);
    let mut next_status = Instant::now();
    let started = Instant::now();
    let lifetime = (args.exit_after_ms > 0).then(|| Duration::from_millis(args.exit_after_ms));
    while !signals::stop_requested() && lifetime.is_none_or(|l| started.elapsed() < l) {
        node.step(Duration::from_millis(20))
            .map_err(|e| format!("socket: {e}"))?;
        if node.service().replica().is_broken() {
            // E.g. a failed write to --data-dir: nothing more may be promised to peers.
            eprintln!("{}", node.status());
            return Err(format!(
                "replica {} stopped after an internal error (see above); restart it",
                args.id
            ));
        }
        if !period.is_zero() && Instant::now() >= next_status {
            next_status = Instant::now() + period;
            eprintln!("{}", node.status());
        }
    }
    eprintln!("{}", node.status());
    eprintln!(
        "vsync-oracle: replica {} stopping (signal {:?})",
        args.id,
        signals::last_signal()
    );
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vsync-oracle: {e}");
            ExitCode::FAILURE
        }
    }
}
