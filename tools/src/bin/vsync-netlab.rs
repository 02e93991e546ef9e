//! `vsync-netlab` — build, inspect, impair and tear down namespace network labs.
//!
//! Host numbers on this command line are 1-based and match the namespace names
//! (`--host 2` is `<prefix>-h2`, address `10.77.<lab>.2`). See `vsync_tools::netlab` for
//! the topology. Needs root and iproute2.

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Child, ExitCode};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use vsync_tools::netlab::{self, Direction, Impairment, Lab, LabConfig};
use vsync_tools::signals;

#[derive(Parser, Debug)]
#[command(
    name = "vsync-netlab",
    about = "Namespace network labs for vsync multicast tests (needs root + iproute2)",
    long_about = "Builds N hosts as network namespaces <prefix>-h1..hN, each with one veth \
                  whose peer sits on a bridge in its own namespace <prefix>-br. Addresses are \
                  10.77.<lab>.<n>/24, multicast is routed to the veth, bridge multicast \
                  snooping is off. Nothing is created in the root namespace."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a lab and leave it running (remove it with `down`).
    Up {
        #[command(flatten)]
        lab: LabArgs,
    },
    /// Delete every namespace of a lab.
    Down {
        /// Lab prefix.
        #[arg(long)]
        prefix: String,
    },
    /// Run a command inside one host of an existing lab.
    Exec {
        /// Lab prefix.
        #[arg(long)]
        prefix: String,
        /// Host number (1-based).
        #[arg(long)]
        host: usize,
        /// Command and arguments.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Create a lab, run a command once per host in parallel, tear down, exit with the
    /// worst status. Placeholders in the command: {host} (namespace), {addr}, {index}
    /// (0-based), {num} (1-based), {hosts} (count), {addrs} (comma-separated), {iface},
    /// {group} (239.77.LAB.1), {prefix}.
    Run {
        #[command(flatten)]
        lab: LabArgs,
        /// Kill the commands after this many seconds (exit status 124).
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Command template.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// List labs present on this machine.
    List,
    /// Check an existing lab: ICMP from host 1 to every host, multicast from host 1.
    Check {
        /// Lab prefix.
        #[arg(long)]
        prefix: String,
    },
    /// Set loss/delay on one host's link in an existing lab (0 0 clears).
    Impair {
        /// Lab prefix.
        #[arg(long)]
        prefix: String,
        /// Host number (1-based).
        #[arg(long)]
        host: usize,
        /// Loss in percent.
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// One-way delay in ms (needs sch_netem in the kernel).
        #[arg(long, default_value_t = 0.0)]
        delay: f64,
        /// Which traffic: `to` the host (per-receiver) or `from` it (correlated).
        #[arg(long, value_enum, default_value_t = Dir::To)]
        direction: Dir,
    },
    /// Partition: one host is cut off from all; several hosts form their own segment.
    Isolate {
        /// Lab prefix.
        #[arg(long)]
        prefix: String,
        /// Host number(s), 1-based, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        host: Vec<usize>,
    },
    /// Undo partitions: the given hosts (default: all) go back onto the main bridge.
    Heal {
        /// Lab prefix.
        #[arg(long)]
        prefix: String,
        /// Host number(s), 1-based, comma-separated; default all.
        #[arg(long, value_delimiter = ',')]
        host: Vec<usize>,
    },
    /// Diagnostic: send multicast probe datagrams (run it inside a host with `exec`).
    McastSend {
        /// Group address and port.
        #[arg(long)]
        group: SocketAddrV4,
        /// Local interface address (IP_MULTICAST_IF).
        #[arg(long)]
        iface: Ipv4Addr,
        /// Number of datagrams.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        count: u32,
        /// Pause between datagrams, ms.
        #[arg(long, default_value_t = 10)]
        interval_ms: u64,
        /// Tag at the start of each datagram.
        #[arg(long, default_value = "probe")]
        tag: String,
    },
    /// Diagnostic: receive multicast probe datagrams; exit 0 if at least --count arrived.
    McastRecv {
        /// Group address and port.
        #[arg(long)]
        group: SocketAddrV4,
        /// Local interface address to join on.
        #[arg(long)]
        iface: Ipv4Addr,
        /// Datagrams wanted.
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// Give up after this many ms.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
        /// Only count datagrams starting with this tag.
        #[arg(long, default_value = "probe")]
        tag: String,
        /// Keep receiving until the timeout even after --count arrived (to count them all).
        #[arg(long)]
        all: bool,
    },
}

#[derive(clap::Args, Debug)]
struct LabArgs {
    /// Namespace prefix ([a-z0-9-], starts with a letter). `run` defaults to vnlPID.
    #[arg(long)]
    prefix: Option<String>,
    /// Number of hosts.
    #[arg(long, default_value_t = 3)]
    hosts: usize,
    /// Loss in percent on traffic delivered to each host.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// One-way delay in ms towards each host (needs sch_netem).
    #[arg(long, default_value_t = 0.0)]
    delay: f64,
    /// Skip the multicast check at creation.
    #[arg(long)]
    no_verify: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Dir {
    To,
    From,
}

impl LabArgs {
    fn config(&self, default_prefix: Option<String>) -> io::Result<LabConfig> {
        let prefix =
            self.prefix.clone().or(default_prefix).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "--prefix is required")
            })?;
        let mut cfg = LabConfig::new(prefix, self.hosts);
        cfg.loss_pct = self.loss;
        cfg.delay_ms = self.delay;
        cfg.verify_multicast = !self.no_verify;
        Ok(cfg)
    }
}

fn host_index(lab: &Lab, host: usize) -> io::Result<usize> {
    if host == 0 || host > lab.host_count() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "--host {host}: hosts are numbered 1..={} in lab '{}'",
                lab.host_count(),
                lab.prefix()
            ),
        ));
    }
    Ok(host - 1)
}

fn describe_lab(lab: &Lab) -> String {
    let mut s = format!(
        "lab '{}': {} hosts, bridge namespace {}\n",
        lab.prefix(),
        lab.host_count(),
        lab.bridge_namespace()
    );
    for i in 0..lab.host_count() {
        s += &format!(
            "  {:<16} {:<8} {}/24\n",
            lab.host_name(i),
            lab.interface(i),
            lab.host_addr(i)
        );
    }
    s
}

fn substitute(template: &str, lab: &Lab, i: usize) -> String {
    let addrs: Vec<String> = (0..lab.host_count())
        .map(|j| lab.host_addr(j).to_string())
        .collect();
    template
        .replace("{host}", &lab.host_name(i))
        .replace("{addr}", &lab.host_addr(i).to_string())
        .replace("{index}", &i.to_string())
        .replace("{num}", &(i + 1).to_string())
        .replace("{hosts}", &lab.host_count().to_string())
        .replace("{addrs}", &addrs.join(","))
        .replace("{iface}", &lab.interface(i))
        .replace("{group}", &lab.group_addr(1).to_string())
        .replace("{prefix}", lab.prefix())
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn kill_all(children: &mut [(usize, Child)], sig: i32) {
    for (_, c) in children.iter_mut() {
        if let Ok(None) = c.try_wait() {
            // SAFETY: sending a signal to our own child's pid.
            unsafe { libc::kill(c.id() as libc::pid_t, sig) };
        }
    }
}

/// Waits for all children; kills them on a stop signal or at `deadline`.
fn wait_all(children: &mut Vec<(usize, Child)>, deadline: Instant) -> Vec<(usize, i32)> {
    let mut done = Vec::new();
    let mut killed_at: Option<Instant> = None;
    let mut timed_out = false;
    while !children.is_empty() {
        children.retain_mut(|(i, c)| match c.try_wait() {
            Ok(Some(st)) => {
                done.push((*i, exit_code(st)));
                false
            }
            Ok(None) => true,
            Err(_) => {
                done.push((*i, 255));
                false
            }
        });
        if children.is_empty() {
            break;
        }
        let now = Instant::now();
        if killed_at.is_none() && (signals::stop_requested() || now >= deadline) {
            timed_out = now >= deadline;
            eprintln!(
                "vsync-netlab: {}; stopping {} command(s)",
                if timed_out {
                    "timeout"
                } else {
                    "signal received"
                },
                children.len()
            );
            kill_all(children, libc::SIGTERM);
            killed_at = Some(now);
        }
        if let Some(t) = killed_at {
            if now.duration_since(t) > Duration::from_secs(3) {
                kill_all(children, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if timed_out {
        for d in &mut done {
            d.1 = d.1.max(124);
        }
    }
    done
}

fn real_main(cli: Cli) -> io::Result<i32> {
    match cli.cmd {
        Cmd::Up { lab } => {
            let lab = Lab::create(lab.config(None)?)?;
            let text = format!(
                "{}remove with: vsync-netlab down --prefix {}\n",
                describe_lab(&lab),
                lab.prefix()
            );
            // Keep the lab first: a closed stdout must not tear it down.
            lab.persist();
            let _ = io::stdout().write_all(text.as_bytes());
            Ok(0)
        }
        Cmd::Down { prefix } => {
            let n = netlab::remove_lab(&prefix)?;
            println!("removed {n} namespace(s) of lab '{prefix}'");
            Ok(0)
        }
        Cmd::Exec { prefix, host, cmd } => {
            let lab = Lab::attach(&prefix)?;
            let i = host_index(&lab, host)?;
            let status = lab.command(i, &cmd[0]).args(&cmd[1..]).status()?;
            Ok(exit_code(status))
        }
        Cmd::Run { lab, timeout, cmd } => {
            let cfg = lab.config(Some(format!("vnl{}", std::process::id())))?;
            let lab = Lab::create(cfg)?;
            eprintln!(
                "vsync-netlab: lab '{}' up with {} hosts",
                lab.prefix(),
                lab.host_count()
            );
            let mut children = Vec::new();
            let mut spawn_err = None;
            for i in 0..lab.host_count() {
                let args: Vec<String> = cmd.iter().map(|a| substitute(a, &lab, i)).collect();
                match lab.command(i, &args[0]).args(&args[1..]).spawn() {
                    Ok(c) => children.push((i, c)),
                    Err(e) => {
                        spawn_err = Some(io::Error::new(
                            e.kind(),
                            format!("spawning {:?} in {}: {e}", args[0], lab.host_name(i)),
                        ));
                        break;
                    }
                }
            }
            if spawn_err.is_some() {
                signals::request_stop();
            }
            let deadline = Instant::now() + Duration::from_secs(timeout);
            let mut results = wait_all(&mut children, deadline);
            results.sort();
            let mut worst = 0;
            for (i, code) in &results {
                if *code != 0 {
                    eprintln!("vsync-netlab: {} exited with {code}", lab.host_name(*i));
                }
                worst = worst.max(*code);
            }
            lab.destroy()?;
            if let Some(e) = spawn_err {
                return Err(e);
            }
            Ok(worst)
        }
        Cmd::List => {
            let labs = netlab::list_labs()?;
            if labs.is_empty() {
                println!("no labs");
            }
            for l in labs {
                println!("{:<24} {} hosts", l.prefix, l.hosts);
            }
            Ok(0)
        }
        Cmd::Check { prefix } => {
            let lab = Lab::attach(&prefix)?;
            let mut ok = true;
            for j in 1..lab.host_count() {
                match lab.ping(0, j, Duration::from_secs(1))? {
                    Some(rtt) => println!("ping h1 -> h{}: {:?}", j + 1, rtt),
                    None => {
                        println!("ping h1 -> h{}: no reply", j + 1);
                        ok = false;
                    }
                }
            }
            match lab.verify_multicast(0, Duration::from_secs(2)) {
                Ok(()) => println!("multicast from h1 reached every host on its segment"),
                Err(e) => {
                    println!("{e}");
                    ok = false;
                }
            }
            Ok(if ok { 0 } else { 1 })
        }
        Cmd::Impair {
            prefix,
            host,
            loss,
            delay,
            direction,
        } => {
            let mut lab = Lab::attach(&prefix)?;
            let i = host_index(&lab, host)?;
            let dir = match direction {
                Dir::To => Direction::ToHost,
                Dir::From => Direction::FromHost,
            };
            // The attached handle does not know earlier state: clear first, then set.
            let _ = clear_link(&lab, i, dir);
            lab.set_impairment(
                i,
                dir,
                Impairment {
                    loss_pct: loss,
                    delay_ms: delay,
                },
            )?;
            Ok(0)
        }
        Cmd::Isolate { prefix, host } => {
            let mut lab = Lab::attach(&prefix)?;
            let idx: Vec<usize> = host
                .iter()
                .map(|&h| host_index(&lab, h))
                .collect::<io::Result<_>>()?;
            if idx.len() == 1 {
                lab.isolate(idx[0])?;
                println!("{} isolated", lab.host_name(idx[0]));
            } else {
                // Segment names must not clash with an earlier `isolate` run's.
                let seg = lab.isolate_group(&idx)?;
                println!("hosts {host:?} moved to bridge {seg}");
            }
            Ok(0)
        }
        Cmd::Heal { prefix, host } => {
            let mut lab = Lab::attach(&prefix)?;
            let idx: Vec<usize> = if host.is_empty() {
                (0..lab.host_count()).collect()
            } else {
                host.iter()
                    .map(|&h| host_index(&lab, h))
                    .collect::<io::Result<_>>()?
            };
            for i in idx {
                lab.heal(i)?;
            }
            Ok(0)
        }
        Cmd::McastSend {
            group,
            iface,
            count,
            interval_ms,
            tag,
        } => {
            netlab::mcast_send(
                group,
                iface,
                &tag,
                count as usize,
                Duration::from_millis(interval_ms),
            )?;
            Ok(0)
        }
        Cmd::McastRecv {
            group,
            iface,
            count,
            timeout_ms,
            tag,
            all,
        } => {
            let want = if all { usize::MAX } else { count };
            let (got, from) = netlab::mcast_recv(
                group,
                iface,
                &tag,
                want,
                Duration::from_millis(timeout_ms),
                || {
                    println!("joined {group} on {iface}");
                },
            )?;
            let from: Vec<String> = from.iter().map(ToString::to_string).collect();
            println!("received {got} from {}", from.join(","));
            Ok(if got >= count { 0 } else { 1 })
        }
    }
}

/// Removes any loss filter / netem on a link whose state this handle doesn't know.
fn clear_link(lab: &Lab, i: usize, dir: Direction) -> io::Result<()> {
    let (ns, dev) = match dir {
        Direction::ToHost => (lab.bridge_namespace(), lab.port_name(i)),
        Direction::FromHost => (lab.host_name(i), lab.interface(i)),
    };
    let _ = netlab::run_tool("tc", &["-n", &ns, "qdisc", "del", "dev", &dev, "root"]);
    netlab::run_tool("tc", &["-n", &ns, "qdisc", "del", "dev", &dev, "clsact"]).map(|_| ())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = signals::install() {
        eprintln!("vsync-netlab: cannot install signal handlers: {e}");
    }
    match real_main(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("vsync-netlab: error: {e}");
            ExitCode::from(1)
        }
    }
}
