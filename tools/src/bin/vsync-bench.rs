//! `vsync-bench` — multicast throughput / latency benchmark.
//!
//! * `vsync-bench [--mode raw|reliable] [--members N] [--senders K|all] [--size B] …` —
//!   all members as threads on loopback (the default topology).
//! * `vsync-bench member --index I --members a1,a2,… --group G:P --iface A …` — one
//!   member in this process; prints its result as one JSON line.
//! * `vsync-bench lab --hosts N --modes raw,reliable --sizes 64,1024 --senders 1,all …` —
//!   builds a namespace lab and runs one member process per host for each configuration.
//! * `vsync-bench ordered --hosts 3 --sizes 64,1024 --senders 1,all` — OrderedSend and Send
//!   through the full stack vs. raw UDP and the data plane's Send, in one run.
//!
//! Progress lines go to stderr; results (text tables, or JSON with `--json`) to stdout.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use vsync_tools::cli::{Cli, Cmd};
use vsync_tools::{lab_run, loopback, ordered_bench, signals};

fn real_main(cli: Cli) -> io::Result<i32> {
    match cli.cmd {
        None if cli.loopback.compare => compare(cli.loopback),
        None => {
            let args = cli.loopback;
            let report = loopback::run_loopback(&args)?;
            let mut out = io::stdout().lock();
            if args.opts.json {
                writeln!(out, "{}", report.to_json())?;
            } else {
                report.write_text(&mut out)?;
            }
            Ok(if signals::stop_requested() { 130 } else { 0 })
        }
        Some(Cmd::Member(args)) => {
            let r = lab_run::run_member_process(&args)?;
            println!("{}", r.to_json());
            Ok(0)
        }
        Some(Cmd::Lab(args)) => lab_run::run_lab(&args),
        Some(Cmd::Ordered(args)) => ordered_bench::run_ordered(&args),
    }
}

/// `--compare`: raw then reliable, same options, then the ratios.
fn compare(mut args: vsync_tools::cli::LoopbackArgs) -> io::Result<i32> {
    use vsync_tools::transport::Mode;
    if args.opts.rate == 0.0 {
        // Both unpaced: raw as fast as its sockets go, reliable as fast as flow control allows.
        args.opts.line_rate_mbps = 0.0;
    }
    let mut out = io::stdout().lock();
    let mut figures = Vec::new();
    for mode in [Mode::Raw, Mode::Reliable] {
        args.mode = mode;
        let report = loopback::run_loopback(&args)?;
        if args.opts.json {
            writeln!(out, "{}", report.to_json())?;
        } else {
            report.write_text(&mut out)?;
            writeln!(out)?;
        }
        let a = report.aggregate();
        let n = a.receivers.max(1) as f64;
        figures.push((
            a.msgs_per_s / n,
            a.mb_per_s_per_receiver,
            a.loss_pct,
            a.latency.p50_us,
        ));
        if signals::stop_requested() {
            return Ok(130);
        }
    }
    if !args.opts.json {
        let (raw, rel) = (figures[0], figures[1]);
        writeln!(
            out,
            "compare (per receiver): raw {:.0} msgs/s {:.2} MB/s loss {:.3}% | reliable {:.0} msgs/s {:.2} MB/s loss {:.3}% | reliable/raw goodput {:.2}x",
            raw.0,
            raw.1,
            raw.2,
            rel.0,
            rel.1,
            rel.2,
            if raw.1 > 0.0 { rel.1 / raw.1 } else { f64::NAN }
        )?;
    }
    Ok(0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = signals::install() {
        eprintln!("vsync-bench: cannot install signal handlers: {e}");
    }
    match real_main(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("vsync-bench: error: {e}");
            ExitCode::from(if e.kind() == io::ErrorKind::InvalidInput {
                2
            } else {
                1
            })
        }
    }
}
