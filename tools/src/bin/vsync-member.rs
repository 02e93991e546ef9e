//! `vsync-member` — one group member process for labs and demos.
//!
//! ```text
//! vsync-member --process 2 --listen 10.77.1.2:7200 \
//!              --oracle 1=10.77.1.1:7100,2=10.77.1.2:7100,3=10.77.1.3:7100 \
//!              --group lab (--create | --join) --ordered 500 --sends 0 --rate 50 --size 64 \
//!              --log /tmp/m2.jsonl [--incarnation 1] [--heartbeat-ms 100] [--lease-ms 500]
//!              [--exit-after-ms 0] [--mcast-port 7300]
//! ```
//!
//! It registers with the oracle, creates or joins the group (retrying a refused join), then
//! streams `--ordered` OrderedSends and `--sends` Sends interleaved at `--rate` messages per
//! second. Each payload starts with the 12-byte id `process u32 LE | counter u64 LE` (one
//! counter over both kinds), like the whole-system simulator's. Its state is the simulator's
//! hash chain over the OrderedSends delivered; rank 0 hands it to joiners (MakeCheckpoint →
//! `send_checkpoint`) and joiners load it (LoadCheckpoint).
//!
//! Everything it observes goes to the JSON-lines `--log` (see `vsync_tools::vsync_lab`),
//! flushed every cycle. It runs until SIGTERM/SIGINT, until poisoned or excluded from the
//! group (logged, exit 0), or until `--exit-after-ms` (if non-zero). Exit 1 on errors.
//!
//! IP multicast: when the oracle's Dr. Multicast maps the group to an address, the member
//! joins `address:--mcast-port` (default `vsync_control::runtime::DEFAULT_MULTICAST_PORT`,
//! 7300; `0` = always unicast fan-out) and sends the group's traffic there; each change of the
//! group's route is logged as an `mcast` line (and on stderr).
//!
//! # Throughput benchmark (`--bench-secs S`)
//!
//! ```text
//! vsync-member --process 2 --listen 10.77.1.2:0 --oracle 1=10.77.1.1:7100 --join \
//!              --bench-secs 3 --kind ordered|send --size 1024 --rate 0 \
//!              --bench-members 3 [--bench-senders K] [--bench-control] [--bench-tag T]
//! ```
//!
//! Instead of logging every message: wait until the view has `--bench-members` members, then
//! stream `--kind` messages for S seconds (processes `1..=K` send; `--rate 0` = unpaced, a
//! refused send — backpressure or a wedged view — is retried) and print ONE JSON line on stdout:
//! the benchmark harness's member result (per-sender delivery counts, messages and bytes
//! delivered inside the window, one-way latency histogram from the send timestamp in the
//! payload — same-machine clocks only). See `vsync_tools::ordered_bench` for the start/stop
//! protocol (`@ready` on stderr, `start <ns>` / `stop` on stdin with `--bench-control`).
//! `--log` is not used in this mode.

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use vsync_control::agent::{AgentConfig, AgentEvent, MsgKind};
use vsync_control::oracle::{group_id, Signature};
use vsync_control::runtime::{MemberRuntime, RuntimeConfig, DEFAULT_MULTICAST_PORT};
use vsync_dataplane::config::ProtocolConfig;
use vsync_dataplane::engine::EngineConfig;
use vsync_dataplane::MemberId;
use vsync_tools::json::Json;
use vsync_tools::ordered_bench::{self, AgentBenchOpts, StartControl};
use vsync_tools::signals;
use vsync_tools::vsync_lab::{parse_replicas, state_step, MemberLogWriter};

#[derive(Parser, Debug)]
#[command(name = "vsync-member", about = "One vsync group member (lab / demo)")]
struct Args {
    /// Process number (≥ 1; unique per process).
    #[arg(long)]
    process: u32,
    /// Incarnation (bump it when restarting a process).
    #[arg(long, default_value_t = 1)]
    incarnation: u32,
    /// Data-plane address (a specific IPv4 address; port 0 = any).
    #[arg(long)]
    listen: SocketAddrV4,
    /// Oracle replicas: `1=IP:PORT,2=IP:PORT,...`.
    #[arg(long)]
    oracle: String,
    /// Group name.
    #[arg(long, default_value = "lab")]
    group: String,
    /// Create the group (exactly one member does).
    #[arg(long, conflicts_with = "join")]
    create: bool,
    /// Join the group.
    #[arg(long)]
    join: bool,
    /// OrderedSends to stream.
    #[arg(long, default_value_t = 100)]
    ordered: u64,
    /// Sends (FIFO) to stream, interleaved with the OrderedSends.
    #[arg(long, default_value_t = 0)]
    sends: u64,
    /// Messages per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Payload bytes (≥ 12).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// JSON-lines log of views, states, deliveries and sends (required unless --bench-secs).
    #[arg(long)]
    log: Option<PathBuf>,
    /// Heartbeat interval towards the oracle (ms).
    #[arg(long, default_value_t = 100)]
    heartbeat_ms: u64,
    /// Oracle silence after which deliveries pause (ms); keep it below the oracle's
    /// failure-detection timeout.
    #[arg(long, default_value_t = 500)]
    lease_ms: u64,
    /// Exit after this long (ms; 0 = run until a signal).
    #[arg(long, default_value_t = 0)]
    exit_after_ms: u64,
    /// Port of the groups' IP-multicast addresses (the oracle maps only the address; every
    /// member of a deployment must use the same port). 0 = never use IP multicast.
    #[arg(long, default_value_t = DEFAULT_MULTICAST_PORT)]
    mcast_port: u16,
    /// Throughput benchmark: measured window in seconds (0 = off; see the module docs).
    #[arg(long, default_value_t = 0.0)]
    bench_secs: f64,
    /// Benchmark: warm-up before the window, seconds.
    #[arg(long, default_value_t = 0.5)]
    bench_warmup_secs: f64,
    /// Benchmark: `ordered` (OrderedSend) or `send` (Send).
    #[arg(long, default_value = "ordered", value_parser = ordered_bench::parse_kind)]
    kind: MsgKind,
    /// Benchmark: group size to wait for before starting.
    #[arg(long, default_value_t = 2)]
    bench_members: u32,
    /// Benchmark: processes 1..=K send (default: all members).
    #[arg(long)]
    bench_senders: Option<u32>,
    /// Benchmark: run tag shared by the run's members.
    #[arg(long, default_value_t = 0x7673_796e)]
    bench_tag: u32,
    /// Benchmark: take `start <ns>` / `stop` from stdin (else start 1 s after the view forms).
    #[arg(long)]
    bench_control: bool,
    /// Benchmark without --bench-control: keep serving the group this long after the result.
    #[arg(long, default_value_t = 3000)]
    bench_linger_ms: u64,
    /// Benchmark: longest drain after sending stops (ms).
    #[arg(long, default_value_t = 5000)]
    drain_ms: u64,
    /// Benchmark: the drain ends after this long without deliveries (ms).
    #[arg(long, default_value_t = 300)]
    idle_ms: u64,
    /// Agent bound on OrderedSend bytes held waiting for their order, MiB (0 = the agent's
    /// default); past it the agent refuses deliveries (backpressure).
    #[arg(long, default_value_t = 0)]
    max_ordered_mb: usize,
    /// Benchmark: SO_RCVBUF / SO_SNDBUF request (bytes).
    #[arg(long, default_value_t = 8 << 20)]
    socket_buffer: usize,
}

fn protocol_config() -> ProtocolConfig {
    ProtocolConfig {
        send_buffer_bytes: 4 << 20,
        window_bytes: 1 << 20,
        window_frames: 2048,
        max_message_bytes: 64 << 10,
        ..ProtocolConfig::default()
    }
}

fn io_err(e: std::io::Error) -> String {
    format!("log: {e}")
}

/// `--bench-secs`: the data plane as #2's reliable benchmark configures it (protocol defaults
/// from `VSYNC_*`, messages capped at 64 KiB, the benchmark's socket buffers).
fn run_bench(args: Args) -> Result<(), String> {
    if args.size < vsync_tools::payload::HEADER_LEN || args.size > 60_000 {
        return Err("--size must be 24..=60000 with --bench-secs".into());
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        return Err("--rate must be 0 (unpaced) or positive".into());
    }
    if !(args.bench_secs.is_finite() && (0.0..=3600.0).contains(&args.bench_warmup_secs)) {
        return Err("bad --bench-secs / --bench-warmup-secs".into());
    }
    let replicas = parse_replicas(&args.oracle)?;
    let me = MemberId::new(args.process, args.incarnation);
    signals::install().map_err(|e| format!("signal handlers: {e}"))?;
    let mut cfg = RuntimeConfig::new(me, args.listen, replicas);
    cfg.agent = AgentConfig {
        heartbeat: Duration::from_millis(args.heartbeat_ms.max(1)),
        lease: Duration::from_millis(args.lease_ms.max(1)),
        ..AgentConfig::default()
    };
    if args.max_ordered_mb > 0 {
        cfg.agent.max_ordered_bytes = args.max_ordered_mb << 20;
    }
    let mut protocol = ProtocolConfig::from_env().map_err(|e| e.to_string())?;
    if std::env::var_os("VSYNC_MAXMSGLEN").is_none() {
        protocol.max_message_bytes = protocol.max_message_bytes.min(64 << 10);
    }
    cfg.protocol = protocol;
    cfg.engine = EngineConfig::from_env().map_err(|e| e.to_string())?;
    cfg.engine.socket_buffer_bytes = args.socket_buffer;
    cfg.multicast_port = (args.mcast_port != 0).then_some(args.mcast_port);
    let rt = MemberRuntime::new(cfg).map_err(|e| e.to_string())?;
    let opts = AgentBenchOpts {
        group: args.group.clone(),
        create: args.create,
        kind: args.kind,
        members: args.bench_members,
        senders: args.bench_senders.unwrap_or(args.bench_members),
        size: args.size,
        rate: args.rate,
        warmup: Duration::from_secs_f64(args.bench_warmup_secs),
        duration: Duration::from_secs_f64(args.bench_secs),
        drain: Duration::from_millis(args.drain_ms),
        idle: Duration::from_millis(args.idle_ms.max(1)),
        tag: args.bench_tag,
        control: if args.bench_control {
            StartControl::Stdin
        } else {
            StartControl::Auto {
                linger: Duration::from_millis(args.bench_linger_ms),
            }
        },
        view_timeout: Duration::from_secs(60),
    };
    ordered_bench::run_agent_bench(rt, &opts)
}

fn run(args: Args) -> Result<(), String> {
    if !args.create && !args.join {
        return Err("one of --create or --join is required".into());
    }
    if args.process == 0 || args.incarnation == 0 {
        return Err("--process and --incarnation start at 1".into());
    }
    if args.bench_secs > 0.0 {
        return run_bench(args);
    }
    let Some(log_path) = args.log.clone() else {
        return Err("--log is required (unless --bench-secs)".into());
    };
    if args.size < 12 || args.size > 60_000 {
        return Err("--size must be 12..=60000".into());
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        return Err("--rate must be positive".into());
    }
    let replicas = parse_replicas(&args.oracle)?;
    let me = MemberId::new(args.process, args.incarnation);
    signals::install().map_err(|e| format!("signal handlers: {e}"))?;
    let mut cfg = RuntimeConfig::new(me, args.listen, replicas);
    cfg.agent = AgentConfig {
        heartbeat: Duration::from_millis(args.heartbeat_ms.max(1)),
        lease: Duration::from_millis(args.lease_ms.max(1)),
        ..AgentConfig::default()
    };
    cfg.protocol = protocol_config();
    cfg.engine = EngineConfig::from_env().map_err(|e| e.to_string())?;
    cfg.multicast_port = (args.mcast_port != 0).then_some(args.mcast_port);
    let mut rt = MemberRuntime::new(cfg).map_err(|e| e.to_string())?;
    let mut log = MemberLogWriter::create(&log_path).map_err(io_err)?;
    log.start(me, &rt.data_addr().to_string()).map_err(io_err)?;
    log.flush().map_err(io_err)?;

    let g = group_id(&args.group);
    let sig = Signature::from_text(&args.group);
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let total = args.ordered + args.sends;
    let mut state: u64 = 0;
    let mut requested = false;
    let mut retry_at: Option<Instant> = None;
    let mut ordered_sent = 0u64;
    let mut plain_sent = 0u64;
    let mut next_send = Instant::now();
    let mut done_logged = false;
    let mut payload = vec![0x5au8; args.size];
    let mut events = Vec::new();
    // The group's data-plane route last logged: None = not routed yet.
    let mut logged_route: Option<Option<SocketAddrV4>> = None;
    let exit_reason: String = loop {
        if signals::stop_requested() {
            break format!("signal {:?}", signals::last_signal());
        }
        if args.exit_after_ms > 0 && started.elapsed() >= Duration::from_millis(args.exit_after_ms)
        {
            break "exit-after".into();
        }
        // Create / join once registered; retry after a refusal.
        let agent = rt.agent_mut();
        if !requested
            && retry_at.is_none_or(|t| Instant::now() >= t)
            && agent.is_registered()
            && agent.view(g).is_none()
        {
            if args.create {
                agent.create(&args.group, sig.clone());
            } else {
                agent.join(&args.group, sig.clone());
            }
            requested = true;
        }
        // Stream.
        let sent_so_far = ordered_sent + plain_sent;
        let now = Instant::now();
        if sent_so_far < total && now >= next_send {
            if let Some(view) = agent.view(g).map(|v| v.id) {
                // Bresenham-style interleaving of the two kinds.
                let ordered = ordered_sent < args.ordered
                    && (plain_sent >= args.sends
                        || ordered_sent * total <= sent_so_far * args.ordered);
                let counter = sent_so_far + 1;
                payload[..4].copy_from_slice(&args.process.to_le_bytes());
                payload[4..12].copy_from_slice(&counter.to_le_bytes());
                let r = if ordered {
                    agent.ordered_send(g, &payload)
                } else {
                    agent.send(g, &payload)
                };
                if r.is_ok() {
                    let kind = if ordered {
                        ordered_sent += 1;
                        MsgKind::Ordered
                    } else {
                        plain_sent += 1;
                        MsgKind::Send
                    };
                    log.sent(view, kind, counter).map_err(io_err)?;
                    // Catch up after a stall, but never burst more than a few.
                    next_send = (next_send + interval).max(now - interval * 4);
                }
            }
        }
        if !done_logged && ordered_sent + plain_sent == total {
            done_logged = true;
            log.event("done_sending", Json::obj().with("count", total))
                .map_err(io_err)?;
        }
        let wait = if ordered_sent + plain_sent < total {
            next_send
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(5))
        } else {
            Duration::from_millis(5)
        };
        rt.step(wait, &mut events).map_err(|e| e.to_string())?;
        if let Some(view) = rt.agent().view(g).map(|v| v.id) {
            let route = rt.multicast_route(g);
            if logged_route != Some(route) {
                logged_route = Some(route);
                let text = route.map_or_else(|| "unicast".to_string(), |a| a.to_string());
                eprintln!(
                    "vsync-member: group {} view {}: route {text}",
                    args.group, view.0
                );
                log.event(
                    "mcast",
                    Json::obj()
                        .with("view", view.0)
                        .with("route", text.as_str()),
                )
                .map_err(io_err)?;
            }
        }
        let mut finished: Option<String> = None;
        for e in events.drain(..) {
            match e {
                AgentEvent::View(v) if v.group == g => {
                    log.view(v.id, &v.members, state).map_err(io_err)?;
                }
                AgentEvent::View(_) | AgentEvent::Members { .. } => {}
                AgentEvent::Deliver {
                    group,
                    view,
                    sender,
                    kind,
                    payload,
                } => {
                    if group != g || payload.len() < 12 {
                        continue;
                    }
                    let id = (
                        u32::from_le_bytes(payload[..4].try_into().expect("4 bytes")),
                        u64::from_le_bytes(payload[4..12].try_into().expect("8 bytes")),
                    );
                    if id.0 != sender.process() {
                        log.event(
                            "mismatch",
                            Json::obj()
                                .with("sender", sender.process())
                                .with("claimed", id.0),
                        )
                        .map_err(io_err)?;
                    }
                    if kind == MsgKind::Ordered {
                        state = state_step(state, id);
                    }
                    log.deliver(view, kind, id).map_err(io_err)?;
                }
                AgentEvent::MakeCheckpoint { group, view } => {
                    rt.agent_mut()
                        .send_checkpoint(group, view, &state.to_le_bytes());
                }
                AgentEvent::LoadCheckpoint {
                    view, state: bytes, ..
                } => {
                    if let Ok(b) = <[u8; 8]>::try_from(bytes.as_slice()) {
                        state = u64::from_le_bytes(b);
                        log.load(view, state).map_err(io_err)?;
                    }
                }
                AgentEvent::Reply { result, .. } => {
                    if let Err(why) = &result {
                        log.event("refused", Json::obj().with("why", why.as_str()))
                            .map_err(io_err)?;
                        if rt.agent().view(g).is_none() {
                            // e.g. joined before the creation committed: retry shortly.
                            requested = false;
                            retry_at = Some(Instant::now() + Duration::from_millis(50));
                        }
                    }
                }
                AgentEvent::Gone { group } if group == g => {
                    log.event("gone", Json::obj()).map_err(io_err)?;
                    finished = Some("gone".into());
                }
                AgentEvent::Gone { .. } => {}
                AgentEvent::StateLost { .. } => state = 0,
                AgentEvent::Poisoned(reason) => {
                    log.event("poisoned", Json::obj().with("reason", reason.to_string()))
                        .map_err(io_err)?;
                    finished = Some("poisoned".into());
                }
            }
        }
        log.flush().map_err(io_err)?;
        if let Some(r) = finished {
            break r;
        }
    };
    let a = rt.agent();
    let ast = a.stats();
    let rst = rt.stats();
    let est = rt.engine().stats();
    log.event(
        "stats",
        Json::obj()
            .with("views", ast.views)
            .with("flushes", ast.flushes)
            .with("pauses", ast.pauses)
            .with("agent_malformed", ast.malformed)
            .with("oracle_in", rst.oracle_in)
            .with("oracle_out", rst.oracle_out)
            .with("oracle_malformed", rst.malformed)
            .with("oracle_send_errors", rst.send_errors)
            .with("multicast_joins", rst.multicast_joins)
            .with("multicast_leaves", rst.multicast_leaves)
            .with("datagrams_sent", est.datagrams_sent)
            .with("datagrams_received", est.datagrams_received)
            .with("send_errors", est.send_errors)
            .with("no_route", est.no_route),
    )
    .map_err(io_err)?;
    log.event("exit", Json::obj().with("reason", exit_reason.as_str()))
        .map_err(io_err)?;
    log.flush().map_err(io_err)?;
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vsync-member: {e}");
            ExitCode::FAILURE
        }
    }
}
