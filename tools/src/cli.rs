//! Command-line definitions of `vsync-bench` (clap derive) and their value parsers.
//!
//! Three entry points share [`RunOpts`]:
//! * no subcommand — every member is a thread of this process on loopback
//!   ([`crate::loopback`]);
//! * `member` — one member in this process, result printed as one JSON line
//!   ([`crate::lab_run::run_member_process`]);
//! * `lab` — a coordinator that builds a [`crate::netlab`] lab and runs one `member`
//!   process per host for every configuration ([`crate::lab_run::run_lab`]).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;

use clap::{Args, Parser, Subcommand};

use crate::member::MemberSpec;
use crate::payload::{HEADER_LEN, MAX_SIZE};
use crate::transport::Mode;

/// `vsync-bench`: multicast throughput / latency benchmark (raw UDP baseline vs. vsync).
#[derive(Parser, Debug)]
#[command(
    name = "vsync-bench",
    version,
    about = "Multicast throughput and latency benchmark: raw UDP/IP multicast baseline vs. the \
             vsync reliable data plane",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// `member` or `lab`; without one, all members run as threads on loopback.
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    /// Loopback (threads) options.
    #[command(flatten)]
    pub loopback: LoopbackArgs,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run one member in this process (e.g. inside a lab namespace); prints one JSON line.
    Member(MemberArgs),
    /// Build a namespace lab and run one member process per host for each configuration.
    Lab(LabArgs),
    /// OrderedSend and Send through the full stack (agent + oracle processes) against raw
    /// UDP and the data plane's Send, one and all senders, in one run on one topology
    /// (namespace lab when root, else loopback processes).
    Ordered(OrderedArgs),
}

/// Options shared by every topology.
#[derive(Args, Debug, Clone)]
pub struct RunOpts {
    /// Measured window, seconds.
    #[arg(long, default_value = "5", value_parser = parse_duration)]
    pub duration: f64,
    /// Warm-up before the measured window, seconds.
    #[arg(long, default_value = "0", value_parser = parse_warmup)]
    pub warmup: f64,
    /// Offered rate per sender, messages/s. 0 = as fast as the transport allows; the raw
    /// sender is then paced at --line-rate-mbps so it does not just overrun receivers.
    #[arg(long, default_value = "0", value_parser = parse_rate)]
    pub rate: f64,
    /// Raw mode with --rate 0: pace the senders at this many Mbit/s of IP traffic in total
    /// (payload + 28 B IPv4/UDP headers, times the copies in unicast mode; split evenly
    /// among the senders). 0 = unpaced.
    #[arg(long, default_value = "1000", value_parser = parse_rate)]
    pub line_rate_mbps: f64,
    /// Token-bucket burst in messages (0 = automatic: 2 ms of rate, 32..4096).
    #[arg(long, default_value = "0", value_parser = parse_rate)]
    pub burst: f64,
    /// Longest drain after sending stops, ms.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub drain_ms: u64,
    /// Drain ends after this many ms without deliveries.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub idle_ms: u64,
    /// SO_RCVBUF / SO_SNDBUF request in bytes (forced past rmem_max when root).
    #[arg(long, default_value_t = 8 << 20, value_parser = clap::value_parser!(u64).range(4096..=(1 << 30)))]
    pub socket_buffer: u64,
    /// Messages per sendmmsg / recvmmsg batch.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub batch: u64,
    /// Unicast fan-out (one datagram per other member) instead of IP multicast.
    #[arg(long)]
    pub unicast: bool,
    /// Latency mode: two members, one message in flight, RTT histogram.
    #[arg(long)]
    pub pingpong: bool,
    /// Ping-pong: a ping without reply after this many ms counts as lost.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub ping_timeout_ms: u64,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

impl RunOpts {
    /// The offered rate per sender (msgs/s, 0 = unpaced) and a description of its origin.
    /// `copies` is the number of datagrams per message on the sender's link (1 for
    /// multicast, members - 1 for unicast fan-out). Raw line-rate pacing shares the line
    /// rate among the `senders`, so every receiver is offered at most the line rate in
    /// total (as on one shared segment).
    pub fn offered_rate(
        &self,
        mode: Mode,
        size: usize,
        copies: u32,
        senders: u32,
    ) -> (f64, String) {
        if self.pingpong {
            (0.0, "ping-pong: one message in flight".to_string())
        } else if self.rate > 0.0 {
            (self.rate, "--rate".to_string())
        } else if mode == Mode::Raw && self.line_rate_mbps > 0.0 {
            let wire = (size + 28) as f64 * f64::from(copies.max(1)) * f64::from(senders.max(1));
            (
                self.line_rate_mbps * 1e6 / 8.0 / wire,
                format!(
                    "raw line-rate pacing: {} Mb/s shared by {senders} sender(s)",
                    self.line_rate_mbps
                ),
            )
        } else {
            (0.0, "unpaced: transport flow control".to_string())
        }
    }

    /// The [`MemberSpec`] for member `index` of a run.
    #[allow(clippy::too_many_arguments)]
    pub fn member_spec(
        &self,
        index: u32,
        members: u32,
        senders: u32,
        size: usize,
        rate: f64,
        start_ns: u64,
        tag: u32,
    ) -> MemberSpec {
        MemberSpec {
            index,
            members,
            senders: if self.pingpong { 1 } else { senders },
            size,
            rate,
            burst: self.burst,
            start_ns,
            warmup_ns: (self.warmup * 1e9) as u64,
            duration_ns: (self.duration * 1e9) as u64,
            drain_ns: self.drain_ms * 1_000_000,
            idle_ns: self.idle_ms * 1_000_000,
            tag,
            pingpong: self.pingpong,
            ping_timeout_ns: self.ping_timeout_ms * 1_000_000,
        }
    }
}

/// Loopback topology: N member threads, multicast on 127.0.0.1.
#[derive(Args, Debug, Clone)]
pub struct LoopbackArgs {
    /// Transport: raw (UDP multicast baseline) or reliable (vsync data plane).
    #[arg(long, default_value = "raw")]
    pub mode: Mode,
    /// Number of member threads.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub members: u32,
    /// Number of senders (members 0..K), or `all`.
    #[arg(long, default_value = "1")]
    pub senders: Senders,
    /// Message size in bytes (≥ 24: the header).
    #[arg(long, default_value = "1024", value_parser = parse_size)]
    pub size: usize,
    /// In-process receive loss to inject, percent.
    #[arg(long, default_value = "0", value_parser = parse_pct)]
    pub loss: f64,
    /// Multicast group (default 239.255.x.y:port derived from the pid).
    #[arg(long)]
    pub group: Option<SocketAddrV4>,
    /// Pin member thread i to CPU i mod ncpus.
    #[arg(long)]
    pub pin: bool,
    /// Run the raw baseline and then the reliable data plane with the same options (both
    /// unpaced unless --rate is given) and print the reliable/raw ratios.
    #[arg(long)]
    pub compare: bool,
    /// Shared options.
    #[command(flatten)]
    pub opts: RunOpts,
}

/// One member in this process.
#[derive(Args, Debug, Clone)]
pub struct MemberArgs {
    /// Transport.
    #[arg(long, default_value = "raw")]
    pub mode: Mode,
    /// This member's index (0-based) in --members.
    #[arg(long)]
    pub index: u32,
    /// Every member's address, comma-separated: `ip` or `ip:port` (unicast port defaults
    /// to group port + 1 + index).
    #[arg(long, value_delimiter = ',', required = true)]
    pub members: Vec<String>,
    /// Multicast group address:port.
    #[arg(long)]
    pub group: SocketAddrV4,
    /// Local interface address (IP_MULTICAST_IF, join interface).
    #[arg(long)]
    pub iface: Ipv4Addr,
    /// Number of senders (members 0..K), or `all`.
    #[arg(long, default_value = "1")]
    pub senders: Senders,
    /// Message size in bytes (≥ 24).
    #[arg(long, default_value = "1024", value_parser = parse_size)]
    pub size: usize,
    /// In-process receive loss to inject, percent.
    #[arg(long, default_value = "0", value_parser = parse_pct)]
    pub loss: f64,
    /// Start sending at this CLOCK_MONOTONIC time in ns (default: now + 500 ms).
    #[arg(long)]
    pub start_at_ns: Option<u64>,
    /// Run tag shared by all members of a run.
    #[arg(long, default_value_t = 0x7673_796e)]
    pub tag: u32,
    /// Print `@progress <ms> <sent> <delivered> <bytes>` lines to stderr every second.
    #[arg(long)]
    pub progress: bool,
    /// Shared options.
    #[command(flatten)]
    pub opts: RunOpts,
}

/// The lab coordinator.
#[derive(Args, Debug, Clone)]
pub struct LabArgs {
    /// Number of hosts (one member process each).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=64))]
    pub hosts: u32,
    /// Modes to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "raw")]
    pub modes: Vec<Mode>,
    /// Message sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "64,1024,8192", value_parser = parse_size)]
    pub sizes: Vec<usize>,
    /// Sender counts, comma-separated (numbers or `all`).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub senders: Vec<Senders>,
    /// Network loss towards every host, percent (netlab, per receiver).
    #[arg(long, default_value = "0", value_parser = parse_pct)]
    pub loss: f64,
    /// Namespace prefix (default `vb<pid>`).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Time given to member processes to start before sending begins, ms.
    #[arg(long, default_value_t = 800, value_parser = clap::value_parser!(u64).range(100..=30_000))]
    pub startup_ms: u64,
    /// Also print every configuration's full per-receiver report.
    #[arg(long)]
    pub detail: bool,
    /// Shared options.
    #[command(flatten)]
    pub opts: RunOpts,
}

/// `vsync-bench ordered` (see [`crate::ordered_bench`]).
#[derive(Args, Debug, Clone)]
pub struct OrderedArgs {
    /// Hosts (namespace hosts, or processes on loopback): one member each; the oracle runs
    /// on host 0 beside its member.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=16))]
    pub hosts: u32,
    /// Modes, comma-separated: raw, raw-ucast, reliable, send, ordered, ordered-r0.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "raw,reliable,send,ordered"
    )]
    pub modes: Vec<crate::ordered_bench::BenchMode>,
    /// Message sizes, comma-separated (24..=60000).
    #[arg(long, value_delimiter = ',', default_value = "64,1024", value_parser = parse_size)]
    pub sizes: Vec<usize>,
    /// Sender counts, comma-separated (numbers or `all`).
    #[arg(long, value_delimiter = ',', default_value = "1,all")]
    pub senders: Vec<Senders>,
    /// Measured window per row, seconds.
    #[arg(long, default_value = "3", value_parser = parse_duration)]
    pub duration: f64,
    /// Warm-up before the window, seconds.
    #[arg(long, default_value = "0.5", value_parser = parse_warmup)]
    pub warmup: f64,
    /// Offered rate per sender, msgs/s (0 = unpaced: as fast as backpressure allows).
    #[arg(long, default_value = "0", value_parser = parse_rate)]
    pub rate: f64,
    /// Raw modes with --rate 0: pace the raw senders at this many Mbit/s in total
    /// (0 = unpaced, the default: raw senders then overrun receivers and lose messages).
    #[arg(long, default_value = "0", value_parser = parse_rate)]
    pub line_rate_mbps: f64,
    /// Longest drain after sending stops, ms.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub drain_ms: u64,
    /// Drain ends after this many ms without deliveries.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub idle_ms: u64,
    /// SO_RCVBUF / SO_SNDBUF request in bytes.
    #[arg(long, default_value_t = 8 << 20, value_parser = clap::value_parser!(u64).range(4096..=(1 << 30)))]
    pub socket_buffer: u64,
    /// Raw / reliable: messages per sendmmsg / recvmmsg batch.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub batch: u64,
    /// Raw / reliable: time given to member processes to start, ms.
    #[arg(long, default_value_t = 800, value_parser = clap::value_parser!(u64).range(100..=30_000))]
    pub startup_ms: u64,
    /// Full stack: longest wait for the group to form, seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub startup_timeout_s: u64,
    /// Full stack: the oracle's failure-detection timeout, ms (generous: 2 cores serve every
    /// process, and a member starved past it would be excluded mid-run). Members' lease is half.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(400..=600_000))]
    pub fd_timeout_ms: u64,
    /// Full stack: the agent's bound on OrderedSend bytes held waiting for their order, MiB
    /// (0 = the agent's default, 64 MiB).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=65_536))]
    pub max_ordered_mb: u64,
    /// Run on 127.0.0.1 even when a namespace lab could be built.
    #[arg(long)]
    pub loopback: bool,
    /// Namespace prefix (default `vo<pid>`).
    #[arg(long)]
    pub prefix: Option<String>,
    /// `vsync-member` binary (default: beside this executable).
    #[arg(long)]
    pub member_bin: Option<std::path::PathBuf>,
    /// `vsync-oracle` binary (default: beside this executable).
    #[arg(long)]
    pub oracle_bin: Option<std::path::PathBuf>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// `--senders`: a count or every member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Senders {
    /// Members `0..K`.
    Count(u32),
    /// Every member.
    All,
}

impl Senders {
    /// The number of senders among `members`, or an error naming the limit.
    pub fn resolve(self, members: u32) -> Result<u32, String> {
        match self {
            Senders::All => Ok(members),
            Senders::Count(k) if k <= members => Ok(k),
            Senders::Count(k) => Err(format!("--senders {k} is more than the {members} members")),
        }
    }
}

impl FromStr for Senders {
    type Err = String;
    fn from_str(s: &str) -> Result<Senders, String> {
        if s == "all" {
            return Ok(Senders::All);
        }
        match s.parse::<u32>() {
            Ok(0) => Err("must be at least 1 (or `all`)".to_string()),
            Ok(k) => Ok(Senders::Count(k)),
            Err(_) => Err(format!("expected a number of senders or `all`, got {s:?}")),
        }
    }
}

impl fmt::Display for Senders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Senders::All => f.write_str("all"),
            Senders::Count(k) => write!(f, "{k}"),
        }
    }
}

/// `--size`: HEADER_LEN ..= MAX_SIZE bytes.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let v: usize = s
        .parse()
        .map_err(|_| format!("expected a size in bytes, got {s:?}"))?;
    if v < HEADER_LEN {
        return Err(format!(
            "must be at least {HEADER_LEN} bytes (the message header: sender u32 + sequence \
             u64 + timestamp u64 + run tag u32); got {v}"
        ));
    }
    if v > MAX_SIZE {
        return Err(format!(
            "must be at most {MAX_SIZE} bytes (largest UDP payload over IPv4); got {v}"
        ));
    }
    Ok(v)
}

fn parse_f64_in(s: &str, lo: f64, hi: f64, what: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("expected a number ({what}), got {s:?}"))?;
    if !(lo..=hi).contains(&v) {
        return Err(format!("{what} must be within {lo}..={hi}; got {v}"));
    }
    Ok(v)
}

/// `--duration`: (0, 3600] seconds.
pub fn parse_duration(s: &str) -> Result<f64, String> {
    let v = parse_f64_in(s, 0.0, 3600.0, "seconds")?;
    if v <= 0.0 {
        return Err("duration must be more than 0 seconds".to_string());
    }
    Ok(v)
}

/// `--warmup`: [0, 600] seconds.
pub fn parse_warmup(s: &str) -> Result<f64, String> {
    parse_f64_in(s, 0.0, 600.0, "seconds")
}

/// Non-negative rates.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    parse_f64_in(s, 0.0, 1e9, "a non-negative rate")
}

/// Percentages.
pub fn parse_pct(s: &str) -> Result<f64, String> {
    parse_f64_in(s, 0.0, 100.0, "percent")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parsers() {
        assert!(parse_size("5").unwrap_err().contains("at least 24"));
        assert_eq!(parse_size("24"), Ok(24));
        assert!(parse_size("70000").is_err());
        assert_eq!("all".parse::<Senders>(), Ok(Senders::All));
        assert_eq!("3".parse::<Senders>(), Ok(Senders::Count(3)));
        assert!("0".parse::<Senders>().is_err());
        assert_eq!(Senders::All.resolve(4), Ok(4));
        assert!(Senders::Count(5).resolve(4).is_err());
        assert!(parse_duration("0").is_err());
        assert!(parse_pct("101").is_err());
    }
}
