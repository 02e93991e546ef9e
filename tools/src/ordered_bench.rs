//! `vsync-bench ordered`: OrderedSend and Send through the full stack (data plane + member
//! agent + oracle, real processes) against the raw UDP baseline and #2's data-plane Send, in
//! one invocation and on one topology.
//!
//! # Member side ([`AgentTransport`], [`run_agent_bench`])
//!
//! A `vsync-member --bench-secs S` process wraps its [`MemberRuntime`] in an
//! [`AgentTransport`] — a [`BenchTransport`] whose `try_send` is the agent's `send` or
//! `ordered_send` and whose deliveries are the agent's [`AgentEvent::Deliver`]s — and runs the
//! ordinary benchmark loop ([`crate::member::run_member`]) over it. So every mode is measured by
//! the same code: the same message header (send timestamp inside), the same window (messages
//! *sent* inside it), the same per-receiver accounting (peers' messages only; self-delivery is
//! counted apart) and the same JSON result line. Unpaced (`--rate 0`) means as fast as the
//! agent accepts: `WouldBlock` and `Wedged` are backpressure and the message is offered again.
//!
//! The member creates or joins the group, waits until its installed view has `--bench-members`
//! members, says `@ready <process>` on stderr, and waits for `start <ns>` on stdin (or starts
//! on its own one second later without `--bench-control`). After its result line it keeps
//! serving the group (acks, ORDER messages, repairs for slower peers) until stdin says `stop`
//! or closes, so nobody leaves — and forces a view change — while others still drain.
//!
//! # Coordinator ([`run_ordered`])
//!
//! For each size × sender count × mode: fresh processes on `--hosts` namespace hosts (root) or
//! on 127.0.0.1 (otherwise, or `--loopback`). `raw`/`raw-ucast`/`reliable` rows run `vsync-bench
//! member` processes (exactly the `lab` subcommand's members); `send`/`ordered` rows run one
//! `vsync-oracle` (single embedded replica, host 0) and one `vsync-member` per host. The
//! group's creator — rank 0, OrderedSend's sequencer — is the *last* host, so with one sender
//! (host 0) every OrderedSend takes the slow path (the sequencer's ORDER message); mode
//! `ordered-r0` makes host 0 the creator, i.e. the lone sender is the sequencer (fast path: its
//! own stream order is the total order). Every process is reaped and the lab removed on every
//! path.
//!
//! Loss for `send`/`ordered` means "sent but not delivered when the receiver's drain ended"
//! (`--drain-ms`, `--idle-ms`): Send and OrderedSend are reliable, so a non-zero figure is a
//! stall. `--max-ordered-mb` sets the agent's bound on OrderedSend bytes held awaiting their
//! order (at the default 64 MiB, unpaced 1 KiB OrderedSends from every member stall: the agent
//! then refuses every delivery, including the sequencer's ORDER messages that would drain it).

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use vsync_control::agent::{AgentError, AgentEvent, MsgKind};
use vsync_control::oracle::{group_id, Signature};
use vsync_control::runtime::MemberRuntime;
use vsync_dataplane::protocol::SendError;
use vsync_dataplane::{GroupId, MemberId};

use crate::cli::OrderedArgs;
use crate::json::Json;
use crate::member::{run_member, MemberResult, MemberSpec, Progress};
use crate::netlab::{self, Lab, LabConfig};
use crate::payload::{now_ns, random_u32};
use crate::report::{Aggregate, Report, RunInfo};
use crate::signals;
use crate::transport::{BenchTransport, Mode, SendOutcome};

// ---------------------------------------------------------------------------------------------
// Member side
// ---------------------------------------------------------------------------------------------

fn other(e: impl fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The full member stack (engine + agent + oracle link) as a benchmark transport: member
/// index `i` is process `i + 1`.
pub struct AgentTransport {
    rt: MemberRuntime,
    group: GroupId,
    kind: MsgKind,
    me: MemberId,
    events: Vec<AgentEvent>,
    counters: BTreeMap<&'static str, u64>,
    failed: Option<String>,
}

impl fmt::Debug for AgentTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentTransport")
            .field("me", &self.me)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl AgentTransport {
    /// Wraps a runtime whose agent is (or will be) in `group`; `kind` is what `try_send`
    /// uses (`Send` or `Ordered`).
    pub fn new(rt: MemberRuntime, group: GroupId, kind: MsgKind) -> AgentTransport {
        let me = rt.agent().me();
        AgentTransport {
            rt,
            group,
            kind,
            me,
            events: Vec::new(),
            counters: BTreeMap::new(),
            failed: None,
        }
    }

    /// The runtime.
    pub fn runtime(&self) -> &MemberRuntime {
        &self.rt
    }

    fn bump(&mut self, k: &'static str) {
        *self.counters.entry(k).or_insert(0) += 1;
    }

    /// One runtime step (events are kept for [`BenchTransport::poll`]).
    fn step(&mut self, wait: Duration) -> io::Result<()> {
        self.rt.step(wait, &mut self.events).map_err(other)?;
        Ok(())
    }

    /// Handles the queued events: deliveries to `on_delivery` (peers' messages of this group
    /// only), checkpoint requests answered (the benchmark has no state), views counted.
    fn drain(&mut self, on_delivery: &mut dyn FnMut(u32, &[u8])) -> io::Result<usize> {
        let mut n = 0;
        let mut events = std::mem::take(&mut self.events);
        for e in events.drain(..) {
            match e {
                AgentEvent::Deliver {
                    group,
                    sender,
                    kind,
                    payload,
                    ..
                } if group == self.group => {
                    if sender == self.me {
                        self.bump("self_deliveries");
                        continue;
                    }
                    if kind != self.kind {
                        self.bump("wrong_kind");
                    }
                    on_delivery(sender.process().saturating_sub(1), &payload);
                    n += 1;
                }
                AgentEvent::Deliver { .. } => self.bump("other_group"),
                AgentEvent::View(v) if v.group == self.group => self.bump("views_installed"),
                AgentEvent::View(_) => {}
                AgentEvent::MakeCheckpoint { group, view } => {
                    self.rt.agent_mut().send_checkpoint(group, view, &[]);
                }
                AgentEvent::Gone { group } if group == self.group => {
                    self.failed = Some("excluded from the group".into());
                }
                AgentEvent::Poisoned(r) => self.failed = Some(format!("poisoned: {r}")),
                // Checkpoints to load (the benchmark has no state), replies, other groups.
                _ => self.bump("other_events"),
            }
        }
        // Keep the allocation.
        self.events = events;
        match &self.failed {
            Some(why) => Err(other(why)),
            None => Ok(n),
        }
    }
}

impl BenchTransport for AgentTransport {
    fn try_send(&mut self, payload: &[u8]) -> io::Result<SendOutcome> {
        let g = self.group;
        let a = self.rt.agent_mut();
        let r = match self.kind {
            MsgKind::Ordered => a.ordered_send(g, payload),
            _ => a.send(g, payload),
        };
        match r {
            Ok(()) => Ok(SendOutcome::Sent),
            Err(AgentError::Send(SendError::WouldBlock)) => Ok(SendOutcome::WouldBlock),
            Err(AgentError::Send(SendError::Wedged(_))) | Err(AgentError::NoView(_)) => {
                self.bump("send_wedged");
                Ok(SendOutcome::WouldBlock)
            }
            Err(e) => Err(other(e)),
        }
    }

    fn flush(&mut self) -> io::Result<SendOutcome> {
        // The next `poll` runs the engine, which sends what the agent accepted.
        Ok(SendOutcome::Sent)
    }

    fn poll(&mut self, on_delivery: &mut dyn FnMut(u32, &[u8])) -> io::Result<usize> {
        self.step(Duration::ZERO)?;
        self.drain(on_delivery)
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        self.step(timeout)
    }

    fn pending(&self) -> usize {
        usize::from(!self.rt.agent().endpoint().all_stable(self.group))
    }

    fn counters(&self) -> BTreeMap<String, u64> {
        let mut c: BTreeMap<String, u64> = self
            .counters
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let a = self.rt.agent();
        let e = a.endpoint().stats();
        for (k, v) in [
            ("datagrams_sent", e.datagrams_sent),
            ("datagrams_received", e.datagrams_received),
            ("frames_sent", e.frames_sent),
            ("frames_retransmitted", e.frames_retransmitted),
            ("naks_sent", e.naks_sent),
            ("acks_sent", e.acks_sent),
            ("duplicates", e.duplicates),
            ("would_block", e.would_block),
            ("agent_views", a.stats().views),
            ("agent_flushes", a.stats().flushes),
            ("agent_pauses", a.stats().pauses),
            ("agent_malformed", a.stats().malformed),
            ("oracle_in", self.rt.stats().oracle_in),
            ("oracle_out", self.rt.stats().oracle_out),
        ] {
            c.insert(k.to_string(), v);
        }
        let g = self.rt.engine().stats();
        for (k, v) in [
            ("send_syscalls", g.send_syscalls),
            ("recv_syscalls", g.recv_syscalls),
            ("gso_batches", g.gso_batches),
            ("gro_batches", g.gro_batches),
            ("send_errors", g.send_errors),
        ] {
            c.insert(k.to_string(), v);
        }
        c
    }
}

/// How a benchmark member learns when to start and when to leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartControl {
    /// `start <ns>` / `stop` lines on stdin (EOF = stop): the coordinator's protocol.
    Stdin,
    /// Start one second after the full view; linger this long after the result.
    Auto {
        /// Linger after printing the result (keeps serving peers that still drain).
        linger: Duration,
    },
}

/// What [`run_agent_bench`] needs besides the runtime.
#[derive(Debug, Clone)]
pub struct AgentBenchOpts {
    /// Group name.
    pub group: String,
    /// Create (rank 0) rather than join.
    pub create: bool,
    /// `Send` or `Ordered`.
    pub kind: MsgKind,
    /// Members to wait for (and the group size of the run).
    pub members: u32,
    /// Processes `1..=senders` send.
    pub senders: u32,
    /// Message size (≥ the 24-byte benchmark header).
    pub size: usize,
    /// Offered rate per sender (0 = unpaced, backpressure only).
    pub rate: f64,
    /// Warm-up before the window.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Longest drain after sending stops.
    pub drain: Duration,
    /// Drain ends after this long without deliveries.
    pub idle: Duration,
    /// Run tag shared by the run's members.
    pub tag: u32,
    /// How the start is triggered.
    pub control: StartControl,
    /// Longest wait for the full view.
    pub view_timeout: Duration,
}

/// Stdin protocol state, shared with the reader thread.
#[derive(Debug, Default)]
struct Control {
    start_ns: AtomicU64,
    stop: AtomicBool,
}

fn spawn_stdin_reader() -> Arc<Control> {
    let c = Arc::new(Control::default());
    let c2 = c.clone();
    // Ends with stdin (EOF), at the latest when the process exits.
    thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let mut w = line.split_whitespace();
            match (w.next(), w.next().and_then(|v| v.parse::<u64>().ok())) {
                (Some("start"), Some(ns)) => c2.start_ns.store(ns.max(1), Ordering::SeqCst),
                (Some("stop"), _) => break,
                _ => {}
            }
        }
        c2.stop.store(true, Ordering::SeqCst);
    });
    c
}

/// Runs one benchmark member over `rt` (see the module docs): create/join, wait for the full
/// view, `@ready`, start, [`run_member`], print the result line on stdout, linger.
pub fn run_agent_bench(rt: MemberRuntime, o: &AgentBenchOpts) -> Result<(), String> {
    let me = rt.agent().me();
    let index = me.process().saturating_sub(1);
    if index >= o.members || o.senders > o.members {
        return Err(format!(
            "process {} / {} senders do not fit --bench-members {}",
            me.process(),
            o.senders,
            o.members
        ));
    }
    let g = group_id(&o.group);
    let sig = Signature::from_text(&o.group);
    let mut t = AgentTransport::new(rt, g, o.kind);
    let control = match o.control {
        StartControl::Stdin => Some(spawn_stdin_reader()),
        StartControl::Auto { .. } => None,
    };
    let stop = signals::flag();

    // Create / join until the view is complete.
    let deadline = now_ns() + o.view_timeout.as_nanos() as u64;
    let mut requested = false;
    let mut retry_at = 0u64;
    let mut full = false;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted while forming the group".into());
        }
        if now_ns() > deadline {
            let have = t.rt.agent().view(g).map_or(0, |v| v.members.len());
            return Err(format!(
                "timed out waiting for a view of {} members (have {have})",
                o.members
            ));
        }
        let a = t.rt.agent_mut();
        if !requested && now_ns() >= retry_at && a.is_registered() && a.view(g).is_none() {
            if o.create {
                a.create(&o.group, sig.clone());
            } else {
                a.join(&o.group, sig.clone());
            }
            requested = true;
        }
        if full {
            break;
        }
        t.rt.step(Duration::from_millis(5), &mut t.events)
            .map_err(|e| e.to_string())?;
        let events = std::mem::take(&mut t.events);
        for e in events {
            match e {
                // The event, not `agent.view()`: a joiner's first view event waits for its
                // checkpoint, and only then is it really in.
                AgentEvent::View(v) if v.group == g => {
                    full = v.members.len() as u32 >= o.members;
                }
                AgentEvent::Reply { result: Err(_), .. } if t.rt.agent().view(g).is_none() => {
                    // Joined before the creation committed: ask again shortly.
                    requested = false;
                    retry_at = now_ns() + 50_000_000;
                }
                AgentEvent::MakeCheckpoint { group, view } => {
                    t.rt.agent_mut().send_checkpoint(group, view, &[]);
                }
                AgentEvent::Poisoned(r) => return Err(format!("poisoned: {r}")),
                _ => {}
            }
        }
    }
    eprintln!("@ready {}", me.process());

    // Wait for the start time, serving the group meanwhile.
    let auto_start = now_ns() + 1_000_000_000;
    let start_ns = loop {
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted before the start".into());
        }
        let s = match &control {
            Some(c) if c.stop.load(Ordering::Relaxed) => {
                return Err("stdin closed before the start".into())
            }
            Some(c) => c.start_ns.load(Ordering::Relaxed),
            None => auto_start,
        };
        if s != 0 && now_ns() >= s {
            break s;
        }
        let left = s.saturating_sub(now_ns()).clamp(1, 2_000_000);
        t.wait(Duration::from_nanos(if s == 0 { 2_000_000 } else { left }))
            .map_err(|e| e.to_string())?;
        // A faster peer may start first: keep its deliveries for the measuring loop.
        let (keep, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut t.events)
            .into_iter()
            .partition(|e| matches!(e, AgentEvent::Deliver { .. }));
        t.events = rest;
        t.drain(&mut |_, _| {}).map_err(|e| e.to_string())?;
        t.events = keep;
        if now_ns() > deadline + 60_000_000_000 {
            return Err("no start command".into());
        }
    };

    // Count only what happens from here on.
    t.counters.clear();
    let spec = MemberSpec {
        index,
        members: o.members,
        senders: o.senders,
        size: o.size,
        rate: o.rate,
        burst: 0.0,
        start_ns,
        warmup_ns: o.warmup.as_nanos() as u64,
        duration_ns: o.duration.as_nanos() as u64,
        drain_ns: o.drain.as_nanos() as u64,
        idle_ns: o.idle.as_nanos() as u64,
        tag: o.tag,
        pingpong: false,
        ping_timeout_ns: 0,
    };
    let result =
        run_member(&mut t, &spec, stop, &Progress::default()).map_err(|e| e.to_string())?;
    {
        let mut out = io::stdout().lock();
        writeln!(out, "{}", result.to_json()).map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }

    // Linger: keep acking / ordering / repairing for peers until told to go.
    let linger_end = match o.control {
        StartControl::Auto { linger } => now_ns() + linger.as_nanos() as u64,
        StartControl::Stdin => now_ns() + 120_000_000_000,
    };
    while !stop.load(Ordering::Relaxed)
        && !control
            .as_ref()
            .is_some_and(|c| c.stop.load(Ordering::Relaxed))
        && now_ns() < linger_end
    {
        t.wait(Duration::from_millis(5))
            .map_err(|e| e.to_string())?;
        // A member excluded after its result changes nothing measured.
        if t.drain(&mut |_, _| {}).is_err() {
            break;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Coordinator
// ---------------------------------------------------------------------------------------------

/// What one row of the benchmark measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BenchMode {
    /// Plain UDP/IP multicast, one datagram per message (the baseline).
    Raw,
    /// Plain UDP, one unicast datagram per other member (what the full stack does today).
    RawUnicast,
    /// #2's Send: the data plane alone, static membership (`EmbeddedNode`), IP multicast.
    Reliable,
    /// Send through the full stack (agent + oracle).
    Send,
    /// OrderedSend through the full stack; the lone sender is not the sequencer.
    Ordered,
    /// OrderedSend; host 0 (the lone sender) is rank 0, the sequencer.
    OrderedRank0,
}

impl BenchMode {
    /// Every mode, in table order.
    pub const ALL: [BenchMode; 6] = [
        BenchMode::Raw,
        BenchMode::RawUnicast,
        BenchMode::Reliable,
        BenchMode::Send,
        BenchMode::Ordered,
        BenchMode::OrderedRank0,
    ];

    /// Command-line name.
    pub fn name(self) -> &'static str {
        match self {
            BenchMode::Raw => "raw",
            BenchMode::RawUnicast => "raw-ucast",
            BenchMode::Reliable => "reliable",
            BenchMode::Send => "send",
            BenchMode::Ordered => "ordered",
            BenchMode::OrderedRank0 => "ordered-r0",
        }
    }

    /// True for the full-stack modes (oracle + `vsync-member`).
    pub fn full_stack(self) -> bool {
        matches!(
            self,
            BenchMode::Send | BenchMode::Ordered | BenchMode::OrderedRank0
        )
    }
}

impl fmt::Display for BenchMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BenchMode {
    type Err = String;
    fn from_str(s: &str) -> Result<BenchMode, String> {
        BenchMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown mode {s:?} (expected one of {})",
                    BenchMode::ALL.map(BenchMode::name).join(", ")
                )
            })
    }
}

/// One finished (or failed) row.
#[derive(Debug, Clone)]
pub struct RowResult {
    /// Mode.
    pub mode: BenchMode,
    /// Message size.
    pub size: usize,
    /// Senders (resolved).
    pub senders: u32,
    /// The report, or why the row failed.
    pub report: Result<Report, String>,
}

impl RowResult {
    fn aggregate(&self) -> Option<Aggregate> {
        self.report.as_ref().ok().map(Report::aggregate)
    }

    /// Messages per second per receiver.
    pub fn msgs_per_rx(&self) -> Option<f64> {
        self.aggregate()
            .map(|a| a.msgs_per_s / a.receivers.max(1) as f64)
    }

    /// Views installed during the measured run, summed over members (0 = stable group).
    pub fn view_changes(&self) -> u64 {
        self.report.as_ref().map_or(0, |r| {
            r.results
                .iter()
                .map(|m| m.counters.get("views_installed").copied().unwrap_or(0))
                .sum()
        })
    }
}

/// Where the processes run.
enum Topo {
    Lab(Lab),
    Loopback { hosts: usize },
}

impl Topo {
    fn hosts(&self) -> usize {
        match self {
            Topo::Lab(l) => l.host_count(),
            Topo::Loopback { hosts } => *hosts,
        }
    }

    fn addr(&self, i: usize) -> Ipv4Addr {
        match self {
            Topo::Lab(l) => l.host_addr(i),
            Topo::Loopback { .. } => Ipv4Addr::LOCALHOST,
        }
    }

    fn command(&self, i: usize, program: &Path) -> Command {
        match self {
            Topo::Lab(l) => l.command(i, program),
            Topo::Loopback { .. } => Command::new(program),
        }
    }

    fn name(&self) -> String {
        match self {
            Topo::Lab(l) => format!(
                "lab {}: {} namespace hosts on a bridge (10.77.{}.0/24)",
                l.prefix(),
                l.host_count(),
                l.lab_id()
            ),
            Topo::Loopback { hosts } => format!("loopback: {hosts} processes on 127.0.0.1"),
        }
    }
}

/// A free UDP port on 127.0.0.1 (bind, read, release).
fn free_port() -> io::Result<u16> {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(s.local_addr()?.port())
}

#[derive(Debug)]
enum Line {
    Out(usize, String),
    Err(usize, String),
}

struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
}

/// Every process of one row; dropping it kills and reaps whatever still runs.
struct Procs {
    procs: Vec<Proc>,
    tx: Sender<Line>,
    rx: Receiver<Line>,
}

impl Procs {
    fn new() -> Procs {
        let (tx, rx) = mpsc::channel();
        Procs {
            procs: Vec::new(),
            tx,
            rx,
        }
    }

    /// Spawns `cmd`; its stdout / stderr lines arrive on the channel tagged with its index.
    fn spawn(&mut self, name: String, mut cmd: Command) -> Result<usize, String> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        crate::lab_run::die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| format!("spawning {name}: {e}"))?;
        let k = self.procs.len();
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        let tx = self.tx.clone();
        thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(Line::Out(k, l));
            }
        });
        let tx = self.tx.clone();
        thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(Line::Err(k, l));
            }
        });
        let stdin = child.stdin.take();
        self.procs.push(Proc { name, child, stdin });
        Ok(k)
    }

    fn signal(&mut self, k: usize, sig: i32) {
        let c = &mut self.procs[k].child;
        if let Ok(None) = c.try_wait() {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(c.id() as libc::pid_t, sig) };
        }
    }

    fn running(&mut self, k: usize) -> bool {
        matches!(self.procs[k].child.try_wait(), Ok(None))
    }

    /// Closes stdin (the members' "stop"), waits up to `grace`, then SIGTERM, then SIGKILL.
    fn stop(&mut self, ks: &[usize], grace: Duration) {
        for &k in ks {
            self.procs[k].stdin = None;
        }
        let wait_for = |p: &mut Procs, d: Duration| {
            let end = now_ns() + d.as_nanos() as u64;
            while ks.iter().any(|&k| p.running(k)) && now_ns() < end {
                thread::sleep(Duration::from_millis(10));
            }
        };
        wait_for(self, grace);
        for &k in ks {
            self.signal(k, libc::SIGTERM);
        }
        wait_for(self, Duration::from_secs(2));
        for &k in ks {
            self.signal(k, libc::SIGKILL);
            let _ = self.procs[k].child.wait();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// Collects result lines and readiness from the channel until `done` or the deadline.
struct Collector {
    results: BTreeMap<usize, String>,
    ready: Vec<usize>,
    errors: BTreeMap<usize, Vec<String>>,
}

impl Collector {
    fn new() -> Collector {
        Collector {
            results: BTreeMap::new(),
            ready: Vec::new(),
            errors: BTreeMap::new(),
        }
    }

    /// Takes lines until `done(self)` or `deadline_ns`; false on timeout / signal / a
    /// member process that exited early.
    fn run(
        &mut self,
        procs: &mut Procs,
        watch: &[usize],
        deadline_ns: u64,
        done: impl Fn(&Collector) -> bool,
    ) -> Result<(), String> {
        while !done(self) {
            if signals::stop_requested() {
                return Err("interrupted".into());
            }
            if now_ns() > deadline_ns {
                return Err("timed out".into());
            }
            match procs.rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Line::Out(k, l)) => {
                    if l.trim_start().starts_with('{') {
                        self.results.insert(k, l);
                    }
                }
                Ok(Line::Err(k, l)) => {
                    if l.starts_with("@ready") {
                        self.ready.push(k);
                    } else if !l.starts_with("@progress") {
                        let e = self.errors.entry(k).or_default();
                        if e.len() < 20 {
                            e.push(l);
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    for &k in watch {
                        if !procs.running(k) && !self.results.contains_key(&k) {
                            // Let its last lines arrive first.
                            thread::sleep(Duration::from_millis(100));
                            while let Ok(line) = procs.rx.try_recv() {
                                match line {
                                    Line::Out(j, l) if l.trim_start().starts_with('{') => {
                                        self.results.insert(j, l);
                                    }
                                    Line::Err(j, l) => {
                                        self.errors.entry(j).or_default().push(l);
                                    }
                                    _ => {}
                                }
                            }
                            if !self.results.contains_key(&k) {
                                let name = procs.procs[k].name.clone();
                                let why = self
                                    .errors
                                    .get(&k)
                                    .and_then(|e| e.last().cloned())
                                    .unwrap_or_else(|| "no output".into());
                                return Err(format!("{name} exited early: {why}"));
                            }
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Err("channel closed".into()),
            }
        }
        Ok(())
    }
}

/// The binaries a run needs (siblings of this executable unless overridden).
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `vsync-bench` itself (raw / reliable members).
    pub bench: PathBuf,
    /// `vsync-member`.
    pub member: PathBuf,
    /// `vsync-oracle`.
    pub oracle: PathBuf,
}

impl Binaries {
    /// This executable and its siblings.
    pub fn beside_current_exe() -> io::Result<Binaries> {
        let bench = std::env::current_exe()?;
        let dir = bench.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(Binaries {
            member: dir.join("vsync-member"),
            oracle: dir.join("vsync-oracle"),
            bench,
        })
    }
}

struct RowPlan {
    mode: BenchMode,
    size: usize,
    senders: u32,
}

fn run_row(
    topo: &Topo,
    args: &OrderedArgs,
    bins: &Binaries,
    row: &RowPlan,
    port_base: u16,
) -> Result<Report, String> {
    let hosts = topo.hosts();
    let tag = random_u32();
    let mut procs = Procs::new();
    let mut c = Collector::new();
    let window_ns = ((args.warmup + args.duration) * 1e9) as u64;
    let members: Vec<usize>;
    if row.mode.full_stack() {
        let oracle_addr = match topo {
            Topo::Lab(_) => SocketAddrV4::new(topo.addr(0), port_base),
            Topo::Loopback { .. } => {
                SocketAddrV4::new(Ipv4Addr::LOCALHOST, free_port().map_err(|e| e.to_string())?)
            }
        };
        let mut cmd = topo.command(0, &bins.oracle);
        cmd.args(["--id", "1", "--listen", &oracle_addr.to_string()])
            .args(["--peers", &format!("1={oracle_addr}")])
            .args(["--fd-timeout-ms", &args.fd_timeout_ms.to_string()])
            .args(["--status-ms", "0"])
            .args([
                "--exit-after-ms",
                &(window_ns / 1_000_000 + args.drain_ms + 180_000).to_string(),
            ]);
        let oracle = procs.spawn("oracle".into(), cmd)?;
        let creator = match row.mode {
            BenchMode::OrderedRank0 => 0,
            _ => hosts - 1,
        };
        let kind = match row.mode {
            BenchMode::Send => "send",
            _ => "ordered",
        };
        let lease = (args.fd_timeout_ms / 2).max(200);
        let mut ks = Vec::new();
        for i in 0..hosts {
            let mut cmd = topo.command(i, &bins.member);
            cmd.args(["--process", &(i + 1).to_string()])
                .args(["--listen", &SocketAddrV4::new(topo.addr(i), 0).to_string()])
                .args(["--oracle", &format!("1={oracle_addr}")])
                .args(["--group", "bench"])
                .arg(if i == creator { "--create" } else { "--join" })
                .args(["--bench-secs", &args.duration.to_string()])
                .args(["--bench-warmup-secs", &args.warmup.to_string()])
                .args(["--kind", kind])
                .args(["--bench-members", &hosts.to_string()])
                .args(["--bench-senders", &row.senders.to_string()])
                .args(["--bench-tag", &tag.to_string()])
                .arg("--bench-control")
                .args(["--size", &row.size.to_string()])
                .args(["--rate", &args.rate.to_string()])
                .args(["--drain-ms", &args.drain_ms.to_string()])
                .args(["--idle-ms", &args.idle_ms.to_string()])
                .args(["--socket-buffer", &args.socket_buffer.to_string()])
                .args(["--lease-ms", &lease.to_string()])
                .args(["--max-ordered-mb", &args.max_ordered_mb.to_string()]);
            ks.push(procs.spawn(format!("member h{}", i + 1), cmd)?);
        }
        members = ks;
        let n = hosts;
        let view_deadline = now_ns() + args.startup_timeout_s * 1_000_000_000;
        c.run(&mut procs, &members, view_deadline, |c| c.ready.len() >= n)
            .map_err(|e| format!("forming the group: {e}{}", detail(&c, &procs)))?;
        let start = now_ns() + 300_000_000;
        for &k in &members {
            if let Some(s) = procs.procs[k].stdin.as_mut() {
                writeln!(s, "start {start}")
                    .and_then(|_| s.flush())
                    .map_err(|e| format!("start command: {e}"))?;
            }
        }
        let deadline = start + window_ns + args.drain_ms * 1_000_000 + 20_000_000_000;
        let r = c.run(&mut procs, &members, deadline, |c| c.results.len() >= n);
        procs.stop(&members, Duration::from_secs(3));
        procs.stop(&[oracle], Duration::ZERO);
        r.map_err(|e| format!("{e}{}", detail(&c, &procs)))?;
    } else {
        let unicast = row.mode == BenchMode::RawUnicast;
        let mode = if row.mode == BenchMode::Reliable {
            Mode::Reliable
        } else {
            Mode::Raw
        };
        let (group, addrs): (SocketAddrV4, Vec<String>) = match topo {
            Topo::Lab(l) => (
                SocketAddrV4::new(l.group_addr(1), port_base),
                (0..hosts).map(|i| topo.addr(i).to_string()).collect(),
            ),
            Topo::Loopback { .. } => {
                let g = crate::loopback::default_group();
                let p = free_port().map_err(|e| e.to_string())?;
                let group = SocketAddrV4::new(*g.ip(), p);
                let addrs = (0..hosts)
                    .map(|_| free_port().map(|q| format!("127.0.0.1:{q}")))
                    .collect::<io::Result<Vec<_>>>()
                    .map_err(|e| e.to_string())?;
                (group, addrs)
            }
        };
        let start = now_ns() + args.startup_ms * 1_000_000;
        let mut ks = Vec::new();
        for i in 0..hosts {
            let mut cmd = topo.command(i, &bins.bench);
            cmd.arg("member")
                .args(["--mode", mode.name()])
                .args(["--index", &i.to_string()])
                .args(["--members", &addrs.join(",")])
                .args(["--group", &group.to_string()])
                .args(["--iface", &topo.addr(i).to_string()])
                .args(["--senders", &row.senders.to_string()])
                .args(["--size", &row.size.to_string()])
                .args(["--start-at-ns", &start.to_string()])
                .args(["--tag", &tag.to_string()])
                .args(["--duration", &args.duration.to_string()])
                .args(["--warmup", &args.warmup.to_string()])
                .args(["--rate", &args.rate.to_string()])
                .args(["--line-rate-mbps", &args.line_rate_mbps.to_string()])
                .args(["--drain-ms", &args.drain_ms.to_string()])
                .args(["--idle-ms", &args.idle_ms.to_string()])
                .args(["--socket-buffer", &args.socket_buffer.to_string()])
                .args(["--batch", &args.batch.to_string()]);
            if unicast {
                cmd.arg("--unicast");
            }
            ks.push(procs.spawn(format!("member h{}", i + 1), cmd)?);
        }
        members = ks;
        let n = hosts;
        let deadline = start + window_ns + args.drain_ms * 1_000_000 + 20_000_000_000;
        let r = c.run(&mut procs, &members, deadline, |c| c.results.len() >= n);
        procs.stop(&members, Duration::from_secs(3));
        r.map_err(|e| format!("{e}{}", detail(&c, &procs)))?;
    }
    let mut results = Vec::new();
    let dump = std::env::var_os("VSYNC_BENCH_DUMP").is_some();
    for k in &members {
        let line = &c.results[k];
        if dump {
            eprintln!("[{}] {line}", procs.procs[*k].name);
        }
        let j =
            Json::parse(line).map_err(|e| format!("result of {}: {e}", procs.procs[*k].name))?;
        results.push(MemberResult::from_json(&j)?);
    }
    let (rate, pacing) = if args.rate > 0.0 {
        (args.rate, "--rate".to_string())
    } else if matches!(row.mode, BenchMode::Raw | BenchMode::RawUnicast)
        && args.line_rate_mbps > 0.0
    {
        (0.0, format!("raw line-rate {} Mb/s", args.line_rate_mbps))
    } else {
        (0.0, "unpaced: backpressure only".to_string())
    };
    Ok(Report {
        info: RunInfo {
            mode: if row.mode == BenchMode::Raw || row.mode == BenchMode::RawUnicast {
                Mode::Raw
            } else {
                Mode::Reliable
            },
            topology: match topo {
                Topo::Lab(_) => "lab".into(),
                Topo::Loopback { .. } => "loopback-processes".into(),
            },
            transport: match row.mode {
                BenchMode::Raw | BenchMode::Reliable => "multicast",
                _ => "unicast",
            }
            .into(),
            group: "bench".into(),
            members: hosts as u32,
            senders: row.senders,
            size: row.size,
            duration_s: args.duration,
            warmup_s: args.warmup,
            rate: args.rate,
            offered_rate: rate,
            pacing,
            loss_pct: 0.0,
            pingpong: false,
        },
        results,
    })
}

fn detail(c: &Collector, procs: &Procs) -> String {
    let mut s = String::new();
    for (k, lines) in &c.errors {
        if let Some(l) = lines.last() {
            s.push_str(&format!("; {}: {l}", procs.procs[*k].name));
        }
    }
    s
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.2}x"))
}

fn round2(v: f64) -> Json {
    Json::Num((v * 100.0).round() / 100.0)
}

/// The text table of all rows, then the ratios per size × senders.
pub fn write_table(out: &mut dyn Write, rows: &[RowResult], hosts: usize) -> io::Result<()> {
    writeln!(
        out,
        "{:<10} {:>6} {:>7} {:>3} {:>11} {:>8} {:>8} {:>8} {:>9} {:>9} {:>6}",
        "mode",
        "size",
        "senders",
        "rx",
        "msgs/s/rx",
        "MB/s/rx",
        "loss%",
        "lost",
        "p50 µs",
        "p99 µs",
        "views"
    )?;
    for r in rows {
        let s = if r.senders as usize == hosts {
            format!("all {}", r.senders)
        } else {
            r.senders.to_string()
        };
        match &r.report {
            Ok(rep) => {
                let a = rep.aggregate();
                writeln!(
                    out,
                    "{:<10} {:>6} {:>7} {:>3} {:>11.0} {:>8.2} {:>8.3} {:>8} {:>9.1} {:>9.1} {:>6}",
                    r.mode.name(),
                    r.size,
                    s,
                    a.receivers,
                    a.msgs_per_s / a.receivers.max(1) as f64,
                    a.mb_per_s_per_receiver,
                    a.loss_pct,
                    a.lost,
                    a.latency.p50_us,
                    a.latency.p99_us,
                    r.view_changes()
                )?;
            }
            Err(e) => writeln!(
                out,
                "{:<10} {:>6} {:>7} error: {e}",
                r.mode.name(),
                r.size,
                s
            )?,
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "ratios of msgs/s per receiver (same run, same topology):"
    )?;
    writeln!(
        out,
        "{:>6} {:>7} {:>12} {:>13} {:>15} {:>10} {:>14} {:>11}",
        "size",
        "senders",
        "ordered/raw",
        "ordered/send",
        "ordered/reliab",
        "send/raw",
        "send/reliable",
        "ordered-r0/send"
    )?;
    let mut keys: Vec<(usize, u32)> = rows.iter().map(|r| (r.size, r.senders)).collect();
    keys.dedup();
    for (size, senders) in keys {
        let get = |m: BenchMode| {
            rows.iter()
                .find(|r| r.mode == m && r.size == size && r.senders == senders)
                .and_then(RowResult::msgs_per_rx)
        };
        let (raw, rel, send, ord, ord0) = (
            get(BenchMode::Raw),
            get(BenchMode::Reliable),
            get(BenchMode::Send),
            get(BenchMode::Ordered),
            get(BenchMode::OrderedRank0),
        );
        writeln!(
            out,
            "{:>6} {:>7} {:>12} {:>13} {:>15} {:>10} {:>14} {:>11}",
            size,
            if senders as usize == hosts {
                "all".to_string()
            } else {
                senders.to_string()
            },
            fmt_ratio(ratio(ord, raw)),
            fmt_ratio(ratio(ord, send)),
            fmt_ratio(ratio(ord, rel)),
            fmt_ratio(ratio(send, raw)),
            fmt_ratio(ratio(send, rel)),
            fmt_ratio(ratio(ord0, send)),
        )?;
    }
    Ok(())
}

/// All rows as one JSON object.
pub fn rows_json(topology: &str, hosts: usize, args: &OrderedArgs, rows: &[RowResult]) -> Json {
    let runs: Vec<Json> = rows
        .iter()
        .map(|r| {
            let j = Json::obj()
                .with("mode", r.mode.name())
                .with("size", r.size)
                .with("senders", r.senders);
            match &r.report {
                Ok(rep) => {
                    let a = rep.aggregate();
                    let n = a.receivers.max(1) as f64;
                    let per_rx: Vec<Json> = rep
                        .receivers()
                        .iter()
                        .map(|x| {
                            Json::obj()
                                .with("index", x.index)
                                .with("msgs_per_s", round2(x.msgs_per_s))
                                .with("expected", x.expected)
                                .with("delivered", x.delivered)
                                .with("lost", x.lost)
                                .with("max_gap_us", round2(x.max_gap_us))
                        })
                        .collect();
                    let per_tx: Vec<Json> = rep
                        .senders()
                        .iter()
                        .map(crate::report::SenderRow::to_json)
                        .collect();
                    j.with("receivers", a.receivers)
                        .with("msgs_per_s_per_rx", round2(a.msgs_per_s / n))
                        .with("mb_per_s_per_rx", round2(a.mb_per_s_per_receiver))
                        .with("expected", a.expected)
                        .with("delivered", a.delivered)
                        .with("lost", a.lost)
                        .with("loss_pct", round2(a.loss_pct))
                        .with("duplicate", a.duplicate)
                        .with("out_of_order", a.out_of_order)
                        .with("latency_us", a.latency.to_json())
                        .with("view_changes", r.view_changes())
                        .with("receivers_detail", per_rx)
                        .with("senders_detail", per_tx)
                        .with("sent", rep.results.iter().map(|m| m.sent).sum::<u64>())
                        .with(
                            "would_block",
                            rep.results.iter().map(|m| m.would_block).sum::<u64>(),
                        )
                }
                Err(e) => j.with("error", e.as_str()),
            }
        })
        .collect();
    Json::obj()
        .with("topology", topology)
        .with("hosts", hosts)
        .with("duration_s", args.duration)
        .with("warmup_s", args.warmup)
        .with("rate", args.rate)
        .with("line_rate_mbps", args.line_rate_mbps)
        .with("max_ordered_mb", args.max_ordered_mb)
        .with("runs", runs)
}

fn can_lab() -> bool {
    netlab::is_root()
        && Command::new("ip")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// The `ordered` subcommand. Returns the exit code (0 = every row ran).
pub fn run_ordered(args: &OrderedArgs) -> io::Result<i32> {
    let hosts = args.hosts as usize;
    let bins = match (&args.member_bin, &args.oracle_bin) {
        (Some(m), Some(o)) => Binaries {
            bench: std::env::current_exe()?,
            member: m.clone(),
            oracle: o.clone(),
        },
        _ => {
            let mut b = Binaries::beside_current_exe()?;
            if let Some(m) = &args.member_bin {
                b.member = m.clone();
            }
            if let Some(o) = &args.oracle_bin {
                b.oracle = o.clone();
            }
            b
        }
    };
    for m in &args.modes {
        if m.full_stack() {
            for p in [&bins.member, &bins.oracle] {
                if !p.exists() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "{} not found (build it: cargo build -p vsync-tools --bins)",
                            p.display()
                        ),
                    ));
                }
            }
        }
    }
    let mut plan = Vec::new();
    for &size in &args.sizes {
        if !(crate::payload::HEADER_LEN..=60_000).contains(&size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("--sizes: {size} is outside 24..=60000"),
            ));
        }
        for &s in &args.senders {
            let senders = s
                .resolve(args.hosts)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            for &mode in &args.modes {
                if mode == BenchMode::OrderedRank0 && senders as usize == hosts {
                    continue; // identical to `ordered` when everyone sends
                }
                plan.push(RowPlan {
                    mode,
                    size,
                    senders,
                });
            }
        }
    }
    let use_lab = !args.loopback && can_lab();
    let topo = if use_lab {
        let prefix = args
            .prefix
            .clone()
            .unwrap_or_else(|| format!("vo{}", std::process::id() % 100_000));
        Topo::Lab(Lab::create(LabConfig::new(prefix, hosts))?)
    } else {
        if !args.loopback {
            eprintln!("vsync-bench ordered: not root or no iproute2: running on loopback");
        }
        Topo::Loopback { hosts }
    };
    let json = args.json;
    let header = format!(
        "{}; {} s per row (+{} s warm-up), {}; the full stack uses unicast fan-out",
        topo.name(),
        args.duration,
        args.warmup,
        if args.rate > 0.0 {
            format!("{} msgs/s per sender", args.rate)
        } else {
            "unpaced".to_string()
        }
    );
    if !json {
        println!("{header}");
    }
    let mut rows = Vec::new();
    for (k, p) in plan.iter().enumerate() {
        if signals::stop_requested() {
            break;
        }
        eprintln!(
            "vsync-bench ordered: [{}/{}] {} {} B, {} sender(s)",
            k + 1,
            plan.len(),
            p.mode,
            p.size,
            p.senders
        );
        let port = 7700 + (k as u16 % 200) * 2;
        let report = run_row(&topo, args, &bins, p, port);
        if let Err(e) = &report {
            eprintln!("vsync-bench ordered: {} {} B: {e}", p.mode, p.size);
        }
        rows.push(RowResult {
            mode: p.mode,
            size: p.size,
            senders: p.senders,
            report,
        });
    }
    let mut out = io::stdout().lock();
    if json {
        let t = match &topo {
            Topo::Lab(_) => "lab",
            Topo::Loopback { .. } => "loopback",
        };
        writeln!(out, "{}", rows_json(t, hosts, args, &rows))?;
    } else {
        write_table(&mut out, &rows, hosts)?;
    }
    drop(out);
    let interrupted = signals::stop_requested();
    if let Topo::Lab(lab) = topo {
        lab.destroy()?;
    }
    if interrupted {
        return Ok(130);
    }
    Ok(if rows.iter().any(|r| r.report.is_err()) {
        1
    } else {
        0
    })
}

/// Parses `--kind`.
pub fn parse_kind(s: &str) -> Result<MsgKind, String> {
    match s {
        "ordered" => Ok(MsgKind::Ordered),
        "send" => Ok(MsgKind::Send),
        _ => Err(format!("--kind: expected ordered or send, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        for m in BenchMode::ALL {
            assert_eq!(m.name().parse::<BenchMode>(), Ok(m));
        }
        assert!("bogus".parse::<BenchMode>().is_err());
        assert!(BenchMode::Ordered.full_stack() && !BenchMode::Raw.full_stack());
        assert_eq!(parse_kind("send"), Ok(MsgKind::Send));
        assert!(parse_kind("x").is_err());
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(Some(2.0), Some(4.0)), Some(0.5));
        assert_eq!(ratio(Some(2.0), Some(0.0)), None);
        assert_eq!(fmt_ratio(None), "-");
    }
}
