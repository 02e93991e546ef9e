//! A network lab of N hosts built from Linux network namespaces, for multicast tests.
//!
//! ```text
//!   <prefix>-h1            <prefix>-h2                 <prefix>-hN      (one netns per host)
//!   lab1 10.77.L.1/24      lab2 10.77.L.2/24    ...    labN 10.77.L.N/24
//!     |  veth                |                           |
//!   port1                  port2                       portN
//!   +-------------------- br0 (bridge) -------------------+            netns <prefix>-br
//! ```
//!
//! * **Nothing lives in the root namespace.** Every veth pair is created from inside a host
//!   namespace (`ip -n <host> link add name labI type veth peer name portI netns <br>`), so
//!   both ends are born in lab namespaces; the bridge lives in its own namespace
//!   `<prefix>-br`. Deleting a namespace destroys the veth ends in it, so [`Lab`]'s `Drop`
//!   (which also runs on panic) only has to delete the namespaces it created.
//! * **Multicast** crosses the bridge: every bridge has `mcast_snooping 0` (it floods
//!   multicast like broadcast, so IGMP state cannot hide traffic) and `stp_state 0` (ports
//!   forward immediately), and every host has `224.0.0.0/4 dev labI`. [`Lab::create`]
//!   verifies this by sending probe datagrams from host 0 and requiring every other host to
//!   receive one ([`Lab::verify_multicast`]).
//! * **Impairments** ([`Lab::set_impairment`], [`Lab::set_netem`]) are applied on the
//!   egress of the veth end nearest the traffic's source: [`Direction::ToHost`] on the
//!   bridge port `portI` (so multicast loss is independent per receiver, as on a real
//!   switch), [`Direction::FromHost`] on the host's `labI` (one drop loses the datagram for
//!   every receiver). *Loss* uses a classic-BPF `tc` filter in direct-action mode on a
//!   `clsact` qdisc (`ld rand; jge #T` → `TC_ACT_SHOT`), for IPv4 packets only (`protocol
//!   ip`: ARP is never dropped, as on a real lossy link where neighbour resolution is not what
//!   is being tested; a lost ARP costs a 1 s kernel retry), which needs only `cls_bpf` +
//!   `sch_ingress`, not `sch_netem` (many minimal kernels, including this project's CI
//!   kernel, lack netem). *Delay* needs `sch_netem` (`tc qdisc replace … root netem delay`);
//!   on kernels without it, a non-zero delay is a clear error.
//! * **Partitions** move bridge ports between bridges inside `<prefix>-br`:
//!   [`Lab::isolate`] detaches a host's port from every bridge (`nomaster`; its link stays
//!   up, it just reaches nobody), [`Lab::isolate_group`] moves a set of hosts onto a fresh
//!   bridge `segK` (they reach each other but nobody else), [`Lab::heal`] /
//!   [`Lab::heal_all`] move ports back onto `br0`. Link state never changes, so a partition
//!   looks like silent loss to the hosts, not like a cable pull.
//!
//! Host indices in this API are 0-based; host `i` is namespace `<prefix>-h{i+1}` with
//! address `10.77.<lab_id>.{i+1}` on interface `lab{i+1}`. Everything shells out to
//! iproute2 (`ip`, `tc`); failures carry the command line and its stderr. Needs root.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read as _};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Largest supported number of hosts (addresses are `.1` ..= `.200` of a /24).
pub const MAX_HOSTS: usize = 200;

/// Name of the main bridge inside `<prefix>-br`.
pub const MAIN_BRIDGE: &str = "br0";

/// Port used by [`Lab::verify_multicast`]'s probe datagrams.
pub const PROBE_PORT: u16 = 7999;

/// What to build.
#[derive(Debug, Clone, PartialEq)]
pub struct LabConfig {
    /// Namespace name prefix: `[a-z0-9-]`, 1..=24 characters, starting with a letter.
    pub prefix: String,
    /// Number of hosts, 1..=[`MAX_HOSTS`].
    pub hosts: usize,
    /// Initial loss (percent, 0..=100) towards every host ([`Direction::ToHost`]).
    pub loss_pct: f64,
    /// Initial one-way delay (ms) towards every host; needs `sch_netem`.
    pub delay_ms: f64,
    /// Third octet of the addresses; `None` derives it from a hash of the prefix.
    pub lab_id: Option<u8>,
    /// Check at creation (before impairments) that multicast from host 0 reaches all hosts.
    pub verify_multicast: bool,
}

impl LabConfig {
    /// A lab of `hosts` hosts with no impairments and multicast verification on.
    pub fn new(prefix: impl Into<String>, hosts: usize) -> LabConfig {
        LabConfig {
            prefix: prefix.into(),
            hosts,
            loss_pct: 0.0,
            delay_ms: 0.0,
            lab_id: None,
            verify_multicast: true,
        }
    }
}

/// Which traffic an impairment applies to, relative to one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Packets delivered to the host (egress of its bridge port): independent per receiver.
    ToHost,
    /// Packets sent by the host (egress of its own veth): correlated across receivers.
    FromHost,
}

/// Loss and delay applied to one direction of one host's link.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Impairment {
    /// Drop probability in percent, 0..=100.
    pub loss_pct: f64,
    /// Added one-way delay in milliseconds (needs `sch_netem`).
    pub delay_ms: f64,
}

#[derive(Debug, Clone, Default)]
struct LinkState {
    clsact: bool,
    filter: bool,
    netem: bool,
    current: Impairment,
}

/// A running lab. Dropping it deletes every namespace it created (unless [`Lab::persist`]).
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    lab_id: u8,
    hosts: usize,
    created: Vec<String>,
    owned: bool,
    links: Vec<[LinkState; 2]>,
    /// Bridge each host's port is attached to; `None` = isolated.
    attached: Vec<Option<String>>,
    segments: Vec<String>,
}

/// One lab found by [`list_labs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabSummary {
    /// The prefix.
    pub prefix: String,
    /// Number of host namespaces `<prefix>-hN` present.
    pub hosts: usize,
    /// Whether `<prefix>-br` is present.
    pub has_bridge: bool,
}

fn tool_error(program: &str, args: &[&str], detail: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("`{program} {}` failed: {detail}", args.join(" ")))
}

/// Runs `program args…`, returning stdout; on failure the error names the command line,
/// its exit status and its stderr.
pub fn run_tool(program: &str, args: &[&str]) -> io::Result<String> {
    let out = Command::new(program).args(args).output().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            io::Error::new(
                e.kind(),
                format!("`{program}` not found on PATH (install iproute2): {e}"),
            )
        } else {
            tool_error(program, args, e)
        }
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(tool_error(
            program,
            args,
            format_args!("{} — {}", out.status, stderr.trim()),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> io::Result<String> {
    run_tool("ip", args)
}

fn tc(args: &[&str]) -> io::Result<String> {
    run_tool("tc", args)
}

/// True when running as root (euid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Checks that `prefix` is a usable namespace prefix.
pub fn validate_prefix(prefix: &str) -> io::Result<()> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 24
        && prefix.starts_with(|c: char| c.is_ascii_lowercase())
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "bad lab prefix {prefix:?}: use 1-24 characters [a-z0-9-], starting with a letter"
            ),
        ))
    }
}

/// Names of all network namespaces (`ip netns list`).
pub fn namespaces() -> io::Result<Vec<String>> {
    let out = ip(&["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Classifies a namespace name: `Some((prefix, None))` for `<prefix>-br`,
/// `Some((prefix, Some(n)))` for `<prefix>-hN`.
fn classify(ns: &str) -> Option<(&str, Option<usize>)> {
    if let Some(p) = ns.strip_suffix("-br") {
        return validate_prefix(p).ok().map(|_| (p, None));
    }
    let (p, tail) = ns.rsplit_once("-h")?;
    if tail.is_empty() || !tail.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    validate_prefix(p).ok()?;
    Some((p, Some(tail.parse().ok()?)))
}

/// The namespaces that belong to the lab `prefix` (hosts and bridge), hosts first.
pub fn lab_namespaces(prefix: &str) -> io::Result<Vec<String>> {
    let mut hosts = Vec::new();
    let mut bridge = Vec::new();
    for ns in namespaces()? {
        match classify(&ns) {
            Some((p, Some(n))) if p == prefix => hosts.push((n, ns)),
            Some((p, None)) if p == prefix => bridge.push(ns),
            _ => {}
        }
    }
    hosts.sort();
    Ok(hosts.into_iter().map(|(_, ns)| ns).chain(bridge).collect())
}

/// Deletes every namespace of the lab `prefix` (left over or live). Returns how many.
pub fn remove_lab(prefix: &str) -> io::Result<usize> {
    validate_prefix(prefix)?;
    let list = lab_namespaces(prefix)?;
    let mut first_err = None;
    for ns in &list {
        if let Err(e) = ip(&["netns", "delete", ns]) {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(list.len()),
    }
}

/// All labs present on this machine (grouped by prefix).
pub fn list_labs() -> io::Result<Vec<LabSummary>> {
    let mut map: BTreeMap<String, LabSummary> = BTreeMap::new();
    for ns in namespaces()? {
        if let Some((p, kind)) = classify(&ns) {
            let e = map.entry(p.to_string()).or_insert_with(|| LabSummary {
                prefix: p.to_string(),
                hosts: 0,
                has_bridge: false,
            });
            match kind {
                Some(_) => e.hosts += 1,
                None => e.has_bridge = true,
            }
        }
    }
    // A lone `x-h1` without `x-br` is probably not ours; only report labs with a bridge.
    Ok(map.into_values().filter(|s| s.has_bridge).collect())
}

fn derive_lab_id(prefix: &str) -> u8 {
    // FNV-1a, folded into 1..=250.
    let mut h: u32 = 0x811c_9dc5;
    for b in prefix.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % 250 + 1) as u8
}

/// The classic-BPF program (iproute2 `bytecode` syntax) that drops with probability `p`.
pub fn loss_bytecode(loss_pct: f64) -> String {
    if loss_pct >= 100.0 {
        return "1,6 0 0 2".to_string(); // ret TC_ACT_SHOT
    }
    let threshold = ((loss_pct / 100.0) * 4_294_967_296.0).round() as u64;
    let threshold = threshold.min(u64::from(u32::MAX)) as u32;
    // ld rand (SKF_AD_OFF + SKF_AD_RANDOM = -4096 + 56); jge #T → pass else drop.
    format!("4,32 0 0 4294963256,53 0 1 {threshold},6 0 0 0,6 0 0 2")
}

/// Runs `f` on a new thread that has joined the network namespace `ns`
/// (`/run/netns/<ns>`). Sockets created by `f` live in that namespace.
pub fn spawn_in_netns<T, F>(ns: &str, f: F) -> io::Result<thread::JoinHandle<io::Result<T>>>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open {path}: {e}")))?;
    let name = ns.to_string();
    thread::Builder::new()
        .name(format!("netns-{ns}"))
        .spawn(move || {
            // SAFETY: setns on a valid netns fd affects only the calling thread's
            // network namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(e.kind(), format!("setns({name}): {e}")));
            }
            drop(file);
            f()
        })
}

/// [`spawn_in_netns`] and wait for the result.
pub fn run_in_netns<T, F>(ns: &str, f: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    spawn_in_netns(ns, f)?
        .join()
        .map_err(|_| io::Error::other(format!("thread in netns {ns} panicked")))?
}

/// Multicast probe: sends `count` datagrams `"<tag> <seq>"` to `group` via the interface
/// with address `iface` (IP_MULTICAST_IF, TTL 1), `interval` apart.
pub fn mcast_send(
    group: SocketAddrV4,
    iface: Ipv4Addr,
    tag: &str,
    count: usize,
    interval: Duration,
) -> io::Result<()> {
    let sock = UdpSocket::bind(SocketAddrV4::new(iface, 0))?;
    socket2::SockRef::from(&sock).set_multicast_if_v4(&iface)?;
    sock.set_multicast_ttl_v4(1)?;
    sock.set_multicast_loop_v4(false)?;
    for seq in 0..count {
        sock.send_to(format!("{tag} {seq}").as_bytes(), group)?;
        if seq + 1 < count {
            thread::sleep(interval);
        }
    }
    Ok(())
}

/// Opens a UDP socket bound to `group` and joined on the interface with address `iface`
/// (IP_MULTICAST_ALL off, so it sees only this group).
pub fn mcast_listener(group: SocketAddrV4, iface: Ipv4Addr) -> io::Result<UdpSocket> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_address(true)?;
    // Room for a few thousand probes even if the reader is descheduled for a while.
    crate::raw::set_socket_buffers(&sock, 4 << 20)?;
    sock.bind(&SockAddr::from(group))?;
    sock.join_multicast_v4(group.ip(), &iface)?;
    sock.set_multicast_all_v4(false)?;
    Ok(sock.into())
}

/// Multicast probe receiver: joins `group` on `iface`, calls `ready` once joined, then
/// counts datagrams starting with `tag` until `want` arrived or `timeout` passed.
/// Returns the count and the distinct source addresses.
pub fn mcast_recv(
    group: SocketAddrV4,
    iface: Ipv4Addr,
    tag: &str,
    want: usize,
    timeout: Duration,
    ready: impl FnOnce(),
) -> io::Result<(usize, Vec<Ipv4Addr>)> {
    let sock = mcast_listener(group, iface)?;
    sock.set_read_timeout(Some(Duration::from_millis(20)))?;
    ready();
    let deadline = Instant::now() + timeout;
    let mut got = 0;
    let mut from = Vec::new();
    let mut buf = [0u8; 2048];
    while got < want && Instant::now() < deadline {
        match sock.recv_from(&mut buf) {
            Ok((n, src)) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                if text.split(' ').next() == Some(tag) {
                    got += 1;
                    if let std::net::SocketAddr::V4(a) = src {
                        if !from.contains(a.ip()) {
                            from.push(*a.ip());
                        }
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((got, from))
}

fn icmp_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends one ICMP echo request to `dst` (raw socket; run inside the source namespace,
/// e.g. via [`run_in_netns`]) and waits up to `timeout` for the reply. Returns the RTT,
/// or `None` on timeout.
pub fn icmp_ping(dst: Ipv4Addr, timeout: Duration) -> io::Result<Option<Duration>> {
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
    let id = (std::process::id() as u16) ^ (crate::payload::now_ns() as u16);
    let seq: u16 = 1;
    let mut pkt = vec![8u8, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend_from_slice(b"vsync-netlab-ping");
    let ck = icmp_checksum(&pkt);
    pkt[2..4].copy_from_slice(&ck.to_be_bytes());
    let start = Instant::now();
    sock.send_to(&pkt, &SockAddr::from(SocketAddrV4::new(dst, 0)))?;
    let deadline = start + timeout;
    let mut buf = [0u8; 1500];
    let mut sock = sock;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        let n = match sock.read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        if n < 20 {
            continue;
        }
        let ihl = usize::from(buf[0] & 0x0f) * 4;
        let src = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
        if n < ihl + 8 || src != dst {
            continue;
        }
        let icmp = &buf[ihl..n];
        if icmp[0] == 0
            && u16::from_be_bytes([icmp[4], icmp[5]]) == id
            && u16::from_be_bytes([icmp[6], icmp[7]]) == seq
        {
            return Ok(Some(start.elapsed()));
        }
    }
}

impl Lab {
    /// Builds the lab described by `cfg`: first deletes leftovers with the same prefix (a
    /// crashed earlier run), then creates the bridge namespace, the host namespaces, veths,
    /// addresses and multicast routes, verifies multicast (if configured) and applies the
    /// initial impairments. On any error everything created so far is deleted again.
    pub fn create(cfg: LabConfig) -> io::Result<Lab> {
        validate_prefix(&cfg.prefix)?;
        if cfg.hosts == 0 || cfg.hosts > MAX_HOSTS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("hosts must be 1..={MAX_HOSTS}, got {}", cfg.hosts),
            ));
        }
        check_impairment(&Impairment {
            loss_pct: cfg.loss_pct,
            delay_ms: cfg.delay_ms,
        })?;
        if !is_root() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the network lab needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN for `ip netns`)",
            ));
        }
        let stale = remove_lab(&cfg.prefix)?;
        if stale > 0 {
            eprintln!(
                "netlab: removed {stale} leftover namespace(s) of lab '{}'",
                cfg.prefix
            );
        }
        let mut lab = Lab {
            prefix: cfg.prefix.clone(),
            lab_id: cfg.lab_id.unwrap_or_else(|| derive_lab_id(&cfg.prefix)),
            hosts: cfg.hosts,
            created: Vec::new(),
            owned: true,
            links: vec![Default::default(); cfg.hosts],
            attached: vec![Some(MAIN_BRIDGE.to_string()); cfg.hosts],
            segments: Vec::new(),
        };
        // If anything below fails, `lab` is dropped and deletes what was created.
        lab.build()?;
        if cfg.verify_multicast && cfg.hosts > 1 {
            lab.verify_multicast(0, Duration::from_secs(3))?;
        }
        if cfg.loss_pct > 0.0 || cfg.delay_ms > 0.0 {
            for i in 0..cfg.hosts {
                lab.set_netem(i, cfg.loss_pct, cfg.delay_ms)?;
            }
        }
        Ok(lab)
    }

    fn add_netns(&mut self, ns: &str) -> io::Result<()> {
        ip(&["netns", "add", ns])?;
        self.created.push(ns.to_string());
        ip(&["-n", ns, "link", "set", "dev", "lo", "up"])?;
        Ok(())
    }

    fn add_bridge(&self, name: &str) -> io::Result<()> {
        let br = self.bridge_namespace();
        ip(&[
            "-n",
            &br,
            "link",
            "add",
            "name",
            name,
            "type",
            "bridge",
            "stp_state",
            "0",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", &br, "link", "set", "dev", name, "up"])?;
        Ok(())
    }

    fn build(&mut self) -> io::Result<()> {
        let br = self.bridge_namespace();
        self.add_netns(&br)?;
        self.add_bridge(MAIN_BRIDGE)?;
        for i in 0..self.hosts {
            let ns = self.host_name(i);
            let dev = self.interface(i);
            let port = self.port_name(i);
            let addr = format!("{}/24", self.host_addr(i));
            self.add_netns(&ns)?;
            ip(&[
                "-n", &ns, "link", "add", "name", &dev, "type", "veth", "peer", "name", &port,
                "netns", &br,
            ])?;
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &dev])?;
            ip(&["-n", &ns, "link", "set", "dev", &dev, "up"])?;
            ip(&[
                "-n",
                &br,
                "link",
                "set",
                "dev",
                &port,
                "master",
                MAIN_BRIDGE,
            ])?;
            ip(&["-n", &br, "link", "set", "dev", &port, "up"])?;
            ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", &dev])?;
        }
        Ok(())
    }

    /// Re-opens an existing lab (e.g. made by `vsync-netlab up`) without taking ownership:
    /// dropping the returned handle deletes nothing. Addresses are read back from the hosts.
    pub fn attach(prefix: &str) -> io::Result<Lab> {
        validate_prefix(prefix)?;
        let list = lab_namespaces(prefix)?;
        let hosts = list
            .iter()
            .filter(|ns| matches!(classify(ns), Some((_, Some(_)))))
            .count();
        if hosts == 0 || !list.iter().any(|ns| ns == &format!("{prefix}-br")) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no lab with prefix '{prefix}' (see `vsync-netlab list`)"),
            ));
        }
        let ns = format!("{prefix}-h1");
        let out = ip(&["-n", &ns, "-4", "-o", "addr", "show", "dev", "lab1"])?;
        let lab_id = out
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse::<Ipv4Addr>().ok())
            .map(|a| a.octets()[2])
            .ok_or_else(|| io::Error::other(format!("cannot read lab1's address in {ns}")))?;
        Ok(Lab {
            prefix: prefix.to_string(),
            lab_id,
            hosts,
            created: Vec::new(),
            owned: false,
            links: vec![Default::default(); hosts],
            attached: vec![Some(MAIN_BRIDGE.to_string()); hosts],
            segments: Vec::new(),
        })
    }

    /// Keeps the namespaces after this handle is dropped (used by `vsync-netlab up`).
    pub fn persist(mut self) {
        self.owned = false;
    }

    /// Deletes the lab now, reporting errors (`Drop` does the same but can only log).
    pub fn destroy(mut self) -> io::Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> io::Result<()> {
        let mut first_err = None;
        // Hosts first (their veths die with them), the bridge namespace last.
        while let Some(ns) = self.created.pop() {
            if ns.ends_with("-br") && !self.created.is_empty() {
                self.created.insert(0, ns);
                continue;
            }
            if let Err(e) = ip(&["netns", "delete", &ns]) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The lab's prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The third address octet (`10.77.<lab_id>.x`).
    pub fn lab_id(&self) -> u8 {
        self.lab_id
    }

    /// Number of hosts.
    pub fn host_count(&self) -> usize {
        self.hosts
    }

    /// Network namespace of host `i` (0-based): `<prefix>-h{i+1}`.
    pub fn host_name(&self, i: usize) -> String {
        format!("{}-h{}", self.prefix, i + 1)
    }

    /// Address of host `i`: `10.77.<lab_id>.{i+1}`.
    pub fn host_addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.lab_id, (i + 1) as u8)
    }

    /// The lab interface inside host `i`'s namespace: `lab{i+1}`.
    pub fn interface(&self, i: usize) -> String {
        format!("lab{}", i + 1)
    }

    /// Name of host `i`'s bridge-side veth end (in the bridge namespace): `port{i+1}`.
    pub fn port_name(&self, i: usize) -> String {
        format!("port{}", i + 1)
    }

    /// The namespace that holds the bridge(s): `<prefix>-br`.
    pub fn bridge_namespace(&self) -> String {
        format!("{}-br", self.prefix)
    }

    /// A multicast group private to this lab: `239.77.<lab_id>.<n>`.
    pub fn group_addr(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(239, 77, self.lab_id, n)
    }

    /// A command that runs `program` inside host `i`'s namespace (`ip netns exec`).
    pub fn command(&self, i: usize, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.arg("netns")
            .arg("exec")
            .arg(self.host_name(i))
            .arg(program);
        c
    }

    /// Runs `f` on a thread inside host `i`'s namespace (see [`spawn_in_netns`]).
    pub fn spawn_in<T, F>(&self, i: usize, f: F) -> io::Result<thread::JoinHandle<io::Result<T>>>
    where
        F: FnOnce() -> io::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.check_host(i)?;
        spawn_in_netns(&self.host_name(i), f)
    }

    fn check_host(&self, i: usize) -> io::Result<()> {
        if i < self.hosts {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("host index {i} out of range (lab has {} hosts)", self.hosts),
            ))
        }
    }

    /// ICMP echo from host `from` to host `to`; `Some(rtt)` if answered within `timeout`.
    pub fn ping(&self, from: usize, to: usize, timeout: Duration) -> io::Result<Option<Duration>> {
        self.check_host(to)?;
        let dst = self.host_addr(to);
        self.spawn_in(from, move || icmp_ping(dst, timeout))?
            .join()
            .map_err(|_| io::Error::other("ping thread panicked"))?
    }

    /// Sends multicast probes from host `from` and checks that every other host that is on
    /// the same bridge segment receives at least one within `timeout`. Names the hosts that
    /// did not.
    pub fn verify_multicast(&self, from: usize, timeout: Duration) -> io::Result<()> {
        self.check_host(from)?;
        let group = SocketAddrV4::new(self.group_addr(250), PROBE_PORT);
        let tag = format!("probe-{}-{}", std::process::id(), crate::payload::now_ns());
        let receivers: Vec<usize> = (0..self.hosts)
            .filter(|&i| i != from && self.attached[i].is_some())
            .filter(|&i| self.attached[i] == self.attached[from])
            .collect();
        let (ready_tx, ready_rx) = mpsc::channel();
        let remaining = Arc::new(AtomicUsize::new(receivers.len()));
        let mut handles = Vec::new();
        for &i in &receivers {
            let (tag, iface, ready_tx) = (tag.clone(), self.host_addr(i), ready_tx.clone());
            let remaining = remaining.clone();
            handles.push((
                i,
                self.spawn_in(i, move || {
                    let r = mcast_recv(group, iface, &tag, 1, timeout, || {
                        let _ = ready_tx.send(());
                    });
                    remaining.fetch_sub(1, Ordering::SeqCst);
                    r
                })?,
            ));
        }
        drop(ready_tx);
        let ready_deadline = Instant::now() + Duration::from_secs(2);
        for _ in &receivers {
            let left = ready_deadline.saturating_duration_since(Instant::now());
            if ready_rx.recv_timeout(left).is_err() {
                break; // a receiver failed to start; its join below reports why
            }
        }
        let iface = self.host_addr(from);
        let count = (timeout.as_millis() / 50).clamp(1, 100) as usize;
        let send_tag = tag.clone();
        let left = remaining.clone();
        let sender = self.spawn_in(from, move || {
            // One probe every 25 ms until every receiver is done (or `count` probes).
            for _ in 0..count {
                if left.load(Ordering::SeqCst) == 0 {
                    break;
                }
                mcast_send(group, iface, &send_tag, 1, Duration::ZERO)?;
                thread::sleep(Duration::from_millis(25));
            }
            Ok(())
        })?;
        let mut missing = Vec::new();
        let mut errors = Vec::new();
        for (i, h) in handles {
            match h.join() {
                Ok(Ok((n, _))) if n > 0 => {}
                Ok(Ok(_)) => missing.push(self.host_name(i)),
                Ok(Err(e)) => errors.push(format!("{}: {e}", self.host_name(i))),
                Err(_) => errors.push(format!("{}: receiver panicked", self.host_name(i))),
            }
        }
        match sender.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(format!("sender {}: {e}", self.host_name(from))),
            Err(_) => errors.push("sender panicked".to_string()),
        }
        if !errors.is_empty() {
            return Err(io::Error::other(format!(
                "multicast check failed: {}",
                errors.join("; ")
            )));
        }
        if !missing.is_empty() {
            return Err(io::Error::other(format!(
                "multicast from {} to {group} did not reach: {}",
                self.host_name(from),
                missing.join(", ")
            )));
        }
        Ok(())
    }

    /// Sets loss/delay on traffic delivered *to* host `i` (its bridge port's egress), so
    /// every receiver of a multicast datagram loses it independently. `0, 0` clears.
    pub fn set_netem(&mut self, i: usize, loss_pct: f64, delay_ms: f64) -> io::Result<()> {
        self.set_impairment(i, Direction::ToHost, Impairment { loss_pct, delay_ms })
    }

    /// The impairment currently set on host `i` in direction `dir`.
    pub fn impairment(&self, i: usize, dir: Direction) -> Impairment {
        self.links[i][dir as usize].current
    }

    /// Sets loss/delay on one direction of host `i`'s link (see the module docs for where
    /// each direction is applied and which kernel features it needs).
    pub fn set_impairment(&mut self, i: usize, dir: Direction, imp: Impairment) -> io::Result<()> {
        self.check_host(i)?;
        check_impairment(&imp)?;
        let (ns, dev) = match dir {
            Direction::ToHost => (self.bridge_namespace(), self.port_name(i)),
            Direction::FromHost => (self.host_name(i), self.interface(i)),
        };
        let st = &mut self.links[i][dir as usize];
        if imp.loss_pct > 0.0 {
            if !st.clsact {
                tc(&["-n", &ns, "qdisc", "add", "dev", &dev, "clsact"])?;
                st.clsact = true;
            }
            let prog = loss_bytecode(imp.loss_pct);
            tc(&[
                "-n", &ns, "filter", "replace", "dev", &dev, "egress", "pref", "10", "protocol",
                "ip", "handle", "1", "bpf", "da", "bytecode", &prog,
            ])?;
            st.filter = true;
        } else if st.filter {
            tc(&[
                "-n", &ns, "filter", "del", "dev", &dev, "egress", "pref", "10",
            ])?;
            st.filter = false;
        }
        if imp.delay_ms > 0.0 {
            let d = format!("{}us", (imp.delay_ms * 1000.0).round() as u64);
            let args = [
                "-n", &ns, "qdisc", "replace", "dev", &dev, "root", "netem", "delay", &d,
            ];
            tc(&args).map_err(|e| {
                io::Error::other(format!(
                    "{e}\n(delay needs the sch_netem qdisc; this kernel may be built without \
                     CONFIG_NET_SCH_NETEM — loss works without it)"
                ))
            })?;
            st.netem = true;
        } else if st.netem {
            tc(&["-n", &ns, "qdisc", "del", "dev", &dev, "root"])?;
            st.netem = false;
        }
        st.current = imp;
        Ok(())
    }

    /// Cuts host `i` off from everyone: its bridge port is detached from every bridge
    /// (`nomaster`). Link state stays up; the host just reaches nobody.
    pub fn isolate(&mut self, i: usize) -> io::Result<()> {
        self.check_host(i)?;
        let br = self.bridge_namespace();
        ip(&[
            "-n",
            &br,
            "link",
            "set",
            "dev",
            &self.port_name(i),
            "nomaster",
        ])?;
        self.attached[i] = None;
        Ok(())
    }

    /// Puts host `i` back onto the main bridge (undoes [`Lab::isolate`] / a group move).
    pub fn heal(&mut self, i: usize) -> io::Result<()> {
        self.check_host(i)?;
        let br = self.bridge_namespace();
        ip(&[
            "-n",
            &br,
            "link",
            "set",
            "dev",
            &self.port_name(i),
            "master",
            MAIN_BRIDGE,
        ])?;
        self.attached[i] = Some(MAIN_BRIDGE.to_string());
        Ok(())
    }

    /// Partitions `hosts` from the rest: their ports move onto a new bridge `segK`, so they
    /// reach each other but no host outside the set. Returns the new bridge's name.
    pub fn isolate_group(&mut self, hosts: &[usize]) -> io::Result<String> {
        for &i in hosts {
            self.check_host(i)?;
        }
        let br = self.bridge_namespace();
        let mut name = String::new();
        for k in 1..=1000 {
            let candidate = format!("seg{k}");
            let exists = self.segments.contains(&candidate)
                || ip(&["-n", &br, "link", "show", "dev", &candidate]).is_ok();
            if !exists {
                name = candidate;
                break;
            }
        }
        if name.is_empty() {
            return Err(io::Error::other("no free segment bridge name"));
        }
        self.add_bridge(&name)?;
        self.segments.push(name.clone());
        for &i in hosts {
            ip(&[
                "-n",
                &br,
                "link",
                "set",
                "dev",
                &self.port_name(i),
                "master",
                &name,
            ])?;
            self.attached[i] = Some(name.clone());
        }
        Ok(name)
    }

    /// Undoes every partition: all ports back on `br0`, segment bridges deleted.
    pub fn heal_all(&mut self) -> io::Result<()> {
        for i in 0..self.hosts {
            if self.attached[i].as_deref() != Some(MAIN_BRIDGE) {
                self.heal(i)?;
            }
        }
        let br = self.bridge_namespace();
        for seg in std::mem::take(&mut self.segments) {
            ip(&["-n", &br, "link", "delete", "dev", &seg])?;
        }
        Ok(())
    }

    /// The bridge host `i` is attached to (`None` when isolated).
    pub fn segment_of(&self, i: usize) -> Option<&str> {
        self.attached.get(i)?.as_deref()
    }
}

fn check_impairment(imp: &Impairment) -> io::Result<()> {
    if !(0.0..=100.0).contains(&imp.loss_pct) || !(0.0..=60_000.0).contains(&imp.delay_ms) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "impairment out of range: loss {}% (0..=100), delay {} ms (0..=60000)",
                imp.loss_pct, imp.delay_ms
            ),
        ));
    }
    Ok(())
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.owned {
            if let Err(e) = self.teardown() {
                eprintln!("netlab: cleanup of lab '{}' incomplete: {e}", self.prefix);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_names() {
        assert_eq!(classify("abc-br"), Some(("abc", None)));
        assert_eq!(classify("abc-h12"), Some(("abc", Some(12))));
        assert_eq!(classify("a-b-h3"), Some(("a-b", Some(3))));
        assert_eq!(classify("abc-h"), None);
        assert_eq!(classify("abc-hx"), None);
        assert_eq!(classify("ABC-br"), None);
        assert_eq!(classify("random"), None);
    }

    #[test]
    fn prefixes() {
        assert!(validate_prefix("vl-1").is_ok());
        for bad in ["", "1abc", "Abc", "a b", "a/b", &"x".repeat(25)] {
            assert!(validate_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bytecode() {
        assert_eq!(loss_bytecode(100.0), "1,6 0 0 2");
        assert!(loss_bytecode(50.0).contains(" 2147483648,"));
        assert!(loss_bytecode(0.001).starts_with("4,32 0 0 4294963256,53 0 1 "));
    }

    #[test]
    fn checksum() {
        // RFC 1071 example words.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(icmp_checksum(&data), !0xddf2);
    }
}
