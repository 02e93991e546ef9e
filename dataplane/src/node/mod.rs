//! One member's data plane, embeddable in-process: an engine thread driving an
//! [`Endpoint`](crate::protocol::Endpoint), connected to application threads by SPSC rings.
//!
//! This module owns the node's public API ([`Node`], [`EmbeddedNode`], [`GroupHandle`] and
//! their configuration, error and statistics types), the engine-thread duty cycle (`cycle.rs`)
//! and the application-side ring protocol (`handle.rs`).
//!
//! # Shape
//!
//! ```text
//!  app thread(s)                       engine thread (Node) / caller of EmbeddedNode::poll
//!  GroupHandle ── submit ring ───────▶ drain → Endpoint::try_send* ─┐
//!      ▲                                                            ├─ Engine::poll (sockets)
//!      └──────── delivery ring ◀─────── NodeSink (DeliverySink) ◀───┘
//!  Node::join/leave/stats/shutdown ── ArrayQueue<Command> + Waker ──▶ handled between cycles
//! ```
//!
//! Per joined group there are two rings of [`NodeConfig::ring_bytes`] each (default: the larger
//! of 64 MiB and the next power of two ≥ 2 × (max message + 32 bytes of headers)). Ring memory
//! is an anonymous mapping, resident only as records reach its pages.
//!
//! * **Sending** is zero copy for the application: it claims ring space
//!   ([`GroupHandle::try_claim`]) and writes the message in place (or [`GroupHandle::try_send`]
//!   copies it in once). The engine copies it once more, into the protocol's retention buffer.
//! * **Delivering** is one copy: the endpoint's sink writes each message from the received
//!   datagram (or the reassembly buffer) straight into the group's delivery ring; the
//!   application reads it in place ([`GroupHandle::try_recv`], [`GroupHandle::recv_batch`]) and
//!   releases it by dropping it.
//!
//! # Duty cycle
//!
//! 1. `Engine::poll(endpoint, wait)`: receive → protocol timers → transmit; `wait` is zero if
//!    the previous cycle moved records, else the engine first announces it may sleep, re-checks
//!    the rings (pending submissions, refused deliveries that now fit, queued commands) and
//!    parks for up to 100 ms (or until a datagram, a protocol deadline or a wake-up).
//! 2. Drain each group's submit ring into the endpoint (up to 1024 records per group per cycle)
//!    until it says WouldBlock; that record stays in the ring ([`crate::ring::Record::unread`]).
//! 3. `Endpoint::poll_delivery()`: retry deliveries the sink refused, and self-deliveries.
//! 4. Flush the audit log if 100 ms passed; then (thread mode) handle queued commands.
//!
//! No allocation per message on the engine thread.
//!
//! # Backpressure, end to end
//!
//! A receiver's application stops reading → its delivery ring fills → the sink refuses → the
//! endpoint keeps the message and stops consuming that sender's stream (bounded by the receive
//! window) → its receipt reports stop advancing → the sender's flow-control window closes and
//! its retention buffer (`VSYNC_SEND_BUFFER_BYTES`) fills → `Endpoint::try_send` says
//! WouldBlock → the engine leaves the record in the submit ring → the ring fills → the sending
//! application's [`GroupHandle::try_send`] returns [`SendError::WouldBlock`]. Nothing is dropped
//! and no queue grows without bound. When the reader resumes, releasing records wakes a parked
//! engine (only while a delivery is actually waiting for room).
//!
//! # Wake-ups
//!
//! Application threads never make a system call on the fast path. After committing a submit
//! record (or releasing delivery records while a delivery waits for room) a handle issues one
//! fence and reads one shared flag; only if the engine has announced that it may park does it
//! write the engine's eventfd [`crate::engine::Waker`]. The engine sets the flag, fences and
//! re-checks the rings before parking, so no wake-up is lost.
//!
//! # Failure
//!
//! Nothing here panics on bad input. A dead engine thread (I/O error, panic) closes every ring:
//! handle calls return [`SendError::Closed`] / [`RecvError::Closed`], and [`Node`] calls return
//! [`NodeError::EngineGone`] with the reason.

mod cycle;
mod handle;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

pub use handle::{GroupHandle, Message, MessageRef, RecvError, SendClaim, SendError};

use crate::config::{ConfigError, ProtocolConfig};
use crate::engine::{pin_current_thread, BackendKind, EngineConfig, EngineError, EngineStats};
use crate::protocol::{EndpointStats, GroupStats, RateLimit};
use crate::{GroupId, MemberId, ViewId};
use cycle::Core;
use handle::{NodeShared, DELIVERY_HEADER, SUBMIT_HEADER};

/// How long a parked engine thread sleeps at most when nothing is due.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// How long [`Node::shutdown`] waits for everything sent to become stable.
pub const SHUTDOWN_FLUSH_LIMIT: Duration = Duration::from_secs(2);
/// Commands that may be queued to an engine thread at once.
const COMMAND_QUEUE: usize = 64;

/// Everything a node needs to start.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    /// This member.
    pub me: MemberId,
    /// Protocol limits and timers.
    pub protocol: ProtocolConfig,
    /// Sockets, backend and idle strategy. `engine.mtu` must be at least `protocol.mtu`.
    pub engine: EngineConfig,
    /// The system key (env `VSYNC_AESKEY`, 64 hex digits): every datagram is authenticated and
    /// encrypted with AES-256-GCM, and unauthenticated ones are dropped.
    pub system_key: Option<[u8; 32]>,
    /// Pin the engine thread to this CPU ([`Node::spawn`]) or the calling thread
    /// ([`EmbeddedNode::new`]).
    pub core: Option<usize>,
    /// Bytes of each ring (per group and direction), rounded up to a power of two. 0 = the
    /// default, [`NodeConfig::default_ring_bytes`]. Must be at least
    /// [`NodeConfig::min_ring_bytes`] so the largest message fits.
    pub ring_bytes: usize,
    /// Write the delivery audit log here (env `VSYNC_AUDIT_LOG`); see [`crate::audit`].
    pub audit_log: Option<PathBuf>,
    /// Seed of the protocol's randomness (NAK jitter).
    pub seed: u64,
}

impl NodeConfig {
    /// Defaults for member `me`: default protocol and engine configuration (loopback, TTL 1),
    /// no keys, no pinning, default rings, no audit log.
    pub fn new(me: MemberId) -> Self {
        NodeConfig {
            me,
            protocol: ProtocolConfig::default(),
            engine: EngineConfig::default(),
            system_key: None,
            core: None,
            ring_bytes: 0,
            audit_log: None,
            seed: me.0,
        }
    }

    /// The smallest ring that holds a message of `max_message` bytes: the next power of two ≥
    /// 2 × (`max_message` + headers) (a ring record may be at most half the ring).
    pub fn min_ring_bytes(max_message: usize) -> usize {
        let headers = DELIVERY_HEADER.max(SUBMIT_HEADER) + crate::ring::RECORD_HEADER;
        max_message
            .saturating_add(headers)
            .saturating_mul(2)
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX)
    }

    /// The default ring size: the larger of 64 MiB and [`NodeConfig::min_ring_bytes`].
    pub fn default_ring_bytes(max_message: usize) -> usize {
        Self::min_ring_bytes(max_message).max(64 << 20)
    }

    /// The ring size in use: [`NodeConfig::ring_bytes`] rounded up to a power of two, or the
    /// default when it is 0.
    pub fn effective_ring_bytes(&self) -> usize {
        match self.ring_bytes {
            0 => Self::default_ring_bytes(self.protocol.max_message_bytes),
            n => n.checked_next_power_of_two().unwrap_or(usize::MAX),
        }
    }

    /// The defaults overridden by the process environment: [`ProtocolConfig::from_env`]
    /// (`VSYNC_MTU`, `VSYNC_MAXMSGLEN`, ...), [`EngineConfig::from_env`] (`VSYNC_ENGINE`,
    /// `VSYNC_TTL`, `VSYNC_IDLE`), `VSYNC_AESKEY` (64 hex digits: the system key) and
    /// `VSYNC_AUDIT_LOG` (a path). The engine MTU follows `VSYNC_MTU`. Errors name the variable.
    pub fn from_env(me: MemberId) -> Result<Self, ConfigError> {
        Self::from_lookup(me, &|k| std::env::var(k).ok())
    }

    /// Like [`NodeConfig::from_env`], reading variables through `lookup`.
    pub fn from_lookup(
        me: MemberId,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let protocol = ProtocolConfig::from_lookup(lookup)?;
        let mut engine = EngineConfig::from_lookup(lookup).map_err(|e| ConfigError {
            name: e.variable.to_string(),
            value: e.value,
            expected: e.expected.to_string(),
        })?;
        engine.mtu = protocol.mtu;
        let set = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let system_key = match set("VSYNC_AESKEY") {
            None => None,
            Some(v) => Some(parse_key(v.trim()).ok_or_else(|| ConfigError {
                name: "VSYNC_AESKEY".into(),
                // Never echo (what may be) key material into logs.
                value: format!("<{} characters, not shown>", v.trim().len()),
                expected: "64 hexadecimal digits (a 256-bit key)".into(),
            })?),
        };
        let audit_log = set("VSYNC_AUDIT_LOG").map(|v| PathBuf::from(v.trim()));
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Ok(NodeConfig {
            protocol,
            engine,
            system_key,
            audit_log,
            seed: clock ^ me.0,
            ..NodeConfig::new(me)
        })
    }

    /// Checks the configuration; the error names the field and what is accepted.
    pub fn validate(&self) -> Result<(), NodeError> {
        self.protocol
            .validate()
            .map_err(|e| NodeError::Config(e.to_string()))?;
        self.engine.validate().map_err(NodeError::Config)?;
        if self.engine.mtu < self.protocol.mtu {
            return Err(NodeError::Config(format!(
                "engine.mtu={} is below protocol.mtu={}: expected engine.mtu >= protocol.mtu",
                self.engine.mtu, self.protocol.mtu
            )));
        }
        let min = Self::min_ring_bytes(self.protocol.max_message_bytes);
        let ring = self.effective_ring_bytes();
        if ring < min || ring > crate::ring::MAX_CAPACITY {
            return Err(NodeError::Config(format!(
                "ring_bytes={}: expected 0 (default) or {min}..={} for VSYNC_MAXMSGLEN={}",
                self.ring_bytes,
                crate::ring::MAX_CAPACITY,
                self.protocol.max_message_bytes
            )));
        }
        Ok(())
    }
}

/// Parses 64 hex digits into a key.
fn parse_key(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

/// How to join one group (static membership; the control plane installs new views by leaving
/// and joining again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// The group.
    pub group: GroupId,
    /// Its current view.
    pub view: ViewId,
    /// Every member, this node included, with the unicast address peers reach it at (its
    /// [`Node::local_addr`]). IPv4 only.
    pub members: Vec<(MemberId, SocketAddr)>,
    /// The group's IP-multicast address, or `None` for UDP unicast fan-out.
    pub multicast: Option<SocketAddrV4>,
    /// The group key (AES-256-GCM).
    pub key: Option<[u8; 32]>,
    /// A leaky-bucket rate limit on this member's multicasts.
    pub rate_limit: Option<RateLimit>,
}

/// Why a node operation failed.
#[derive(Debug)]
pub enum NodeError {
    /// Invalid configuration; the message names the field or variable and what is accepted.
    Config(String),
    /// The engine could not be created or failed.
    Engine(EngineError),
    /// A system call failed.
    Io {
        /// What the node was doing.
        context: String,
        /// The error.
        source: io::Error,
    },
    /// The group is not joined on this node.
    UnknownGroup(GroupId),
    /// The group is already joined on this node (leave it first to install a new view).
    AlreadyJoined(GroupId),
    /// The engine thread is not running any more; the message says why.
    EngineGone(String),
    /// Too many commands are queued to the engine thread; retry.
    Busy,
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::Config(msg) => write!(f, "invalid node configuration: {msg}"),
            NodeError::Engine(e) => write!(f, "engine: {e}"),
            NodeError::Io { context, source } => write!(f, "{context}: {source}"),
            NodeError::UnknownGroup(g) => write!(f, "group {g} is not joined on this node"),
            NodeError::AlreadyJoined(g) => write!(f, "group {g} is already joined on this node"),
            NodeError::EngineGone(why) => write!(f, "the engine thread is gone: {why}"),
            NodeError::Busy => f.write_str("the engine thread's command queue is full; retry"),
        }
    }
}

impl std::error::Error for NodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NodeError::Engine(e) => Some(e),
            NodeError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Counters of one joined group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeGroupStats {
    /// The group.
    pub group: GroupId,
    /// Its view.
    pub view: ViewId,
    /// The protocol's view of the group (retained / held bytes, positions).
    pub protocol: Option<GroupStats>,
    /// Every message this member multicast is held by every peer.
    pub all_stable: bool,
    /// Capacity of each of the group's two rings.
    pub ring_bytes: usize,
    /// Bytes waiting in the submit ring.
    pub submit_pending_bytes: usize,
    /// Bytes of delivered messages the application has not released yet.
    pub delivery_pending_bytes: usize,
    /// Records moved from the submit ring into the protocol.
    pub submitted: u64,
    /// Times the protocol refused a submit record with WouldBlock (it stayed in the ring).
    pub submit_would_block: u64,
    /// Submit records the protocol rejected for good (should stay 0: handles check first).
    pub submit_rejected: u64,
    /// Messages written into the delivery ring.
    pub delivered: u64,
    /// Times the delivery ring was full (reliable messages are retried, raw ones dropped).
    pub delivery_refusals: u64,
    /// Deliveries discarded because the application dropped its handle.
    pub discarded: u64,
}

/// A snapshot of a node's counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStats {
    /// This member.
    pub me: MemberId,
    /// The unicast address.
    pub local_addr: SocketAddrV4,
    /// The engine backend in use.
    pub backend: BackendKind,
    /// Protocol counters.
    pub endpoint: EndpointStats,
    /// Dropped input by reason name (every reason, zeros included; see
    /// [`crate::wire::DropReason::name`]).
    pub drops: BTreeMap<&'static str, u64>,
    /// Socket counters.
    pub engine: EngineStats,
    /// Per joined group.
    pub groups: Vec<NodeGroupStats>,
    /// Audit log lines written.
    pub audit_lines: u64,
    /// The I/O error that stopped the audit log, if any.
    pub audit_error: Option<String>,
    /// Everything submitted was sent and is stable at every peer (for the stats returned by
    /// `shutdown`: the flush completed within [`SHUTDOWN_FLUSH_LIMIT`]).
    pub flushed: bool,
}

impl NodeStats {
    /// The drop counter named `reason` (e.g. `"auth_failed"`); 0 for an unknown name.
    pub fn drop_count(&self, reason: &str) -> u64 {
        self.drops.get(reason).copied().unwrap_or(0)
    }

    /// The stats of `group`, if joined.
    pub fn group(&self, group: GroupId) -> Option<&NodeGroupStats> {
        self.groups.iter().find(|g| g.group == group)
    }
}

/// A request to the engine thread, with the channel for its reply.
enum Command {
    Join(Box<GroupConfig>, SyncSender<Result<GroupHandle, NodeError>>),
    Leave(GroupId, SyncSender<Result<(), NodeError>>),
    Stats(SyncSender<NodeStats>),
    Shutdown {
        flush: bool,
        reply: SyncSender<Result<NodeStats, NodeError>>,
    },
}

/// What the engine thread shares with its [`Node`].
struct ThreadState {
    alive: AtomicBool,
    failure: Mutex<Option<String>>,
}

/// Marks the engine thread dead when it ends (also by panic) and drops queued commands, so
/// their callers get an error instead of waiting.
struct ExitGuard {
    state: Arc<ThreadState>,
    commands: Arc<ArrayQueue<Command>>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(mut f) = self.state.failure.lock() {
                f.get_or_insert_with(|| "the engine thread panicked".into());
            }
        }
        self.state.alive.store(false, Ordering::Release);
        while self.commands.pop().is_some() {}
    }
}

/// One member's data plane on its own engine thread (thread-per-core: pin it with
/// [`NodeConfig::core`]; the engine parks when idle unless `engine.idle` says otherwise).
/// `Send + Sync`: commands can come from any thread.
pub struct Node {
    commands: Arc<ArrayQueue<Command>>,
    shared: Arc<NodeShared>,
    state: Arc<ThreadState>,
    thread: Option<JoinHandle<()>>,
    local_addr: SocketAddrV4,
    backend: BackendKind,
    me: MemberId,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("me", &self.me)
            .field("local_addr", &self.local_addr)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Validates `cfg`, starts the engine thread (pinned if `cfg.core` is set), opens the
    /// sockets there and waits until it runs.
    pub fn spawn(cfg: NodeConfig) -> Result<Node, NodeError> {
        cfg.validate()?;
        let commands = Arc::new(ArrayQueue::new(COMMAND_QUEUE));
        let state = Arc::new(ThreadState {
            alive: AtomicBool::new(true),
            failure: Mutex::new(None),
        });
        let (init_tx, init_rx) = sync_channel(1);
        let me = cfg.me;
        let (thread_commands, thread_state) = (Arc::clone(&commands), Arc::clone(&state));
        let thread = std::thread::Builder::new()
            .name(format!(
                "vsync-engine-{}.{}",
                me.process(),
                me.incarnation()
            ))
            .spawn(move || {
                let guard = ExitGuard {
                    state: thread_state,
                    commands: thread_commands,
                };
                engine_thread(cfg, &guard, init_tx);
            })
            .map_err(|source| NodeError::Io {
                context: "spawning the engine thread".into(),
                source,
            })?;
        let (shared, local_addr, backend) = match init_rx.recv() {
            Ok(Ok(init)) => init,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(NodeError::EngineGone(
                    "the engine thread exited during start-up".into(),
                ));
            }
        };
        Ok(Node {
            commands,
            shared,
            state,
            thread: Some(thread),
            local_addr,
            backend,
            me,
        })
    }

    /// The unicast address peers must use for this member.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local_addr
    }

    /// The engine backend in use.
    pub fn backend(&self) -> BackendKind {
        self.backend
    }

    /// This member.
    pub fn me(&self) -> MemberId {
        self.me
    }

    fn gone(&self) -> NodeError {
        let why = self.state.failure.lock().ok().and_then(|f| f.clone());
        NodeError::EngineGone(why.unwrap_or_else(|| "the engine thread stopped".into()))
    }

    /// Queues a command, wakes the engine and waits for the reply (or the thread's end).
    fn call<T>(&self, make: impl FnOnce(SyncSender<T>) -> Command) -> Result<T, NodeError> {
        if !self.state.alive.load(Ordering::Acquire) {
            return Err(self.gone());
        }
        let (tx, rx) = sync_channel(1);
        self.commands.push(make(tx)).map_err(|_| NodeError::Busy)?;
        self.shared.waker.wake();
        loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(v) => return Ok(v),
                Err(RecvTimeoutError::Disconnected) => return Err(self.gone()),
                Err(RecvTimeoutError::Timeout) => {
                    if !self.state.alive.load(Ordering::Acquire) {
                        return rx.try_recv().map_err(|_| self.gone());
                    }
                }
            }
        }
    }

    /// Joins a group on the engine thread and returns the handle to use it.
    pub fn join(&self, cfg: GroupConfig) -> Result<GroupHandle, NodeError> {
        self.call(|reply| Command::Join(Box::new(cfg), reply))?
    }

    /// Leaves a group: its protocol state and rings are dropped (its handle reports
    /// `Closed`).
    pub fn leave(&self, group: GroupId) -> Result<(), NodeError> {
        self.call(|reply| Command::Leave(group, reply))?
    }

    /// A snapshot of every counter.
    pub fn stats(&self) -> Result<NodeStats, NodeError> {
        self.call(Command::Stats)
    }

    /// Stops the engine thread after flushing: runs until every group's submit ring is empty
    /// and everything sent is stable at every peer, or [`SHUTDOWN_FLUSH_LIMIT`] passed
    /// (`flushed` in the result says which), flushes the audit log and returns the final stats.
    pub fn shutdown(mut self) -> Result<NodeStats, NodeError> {
        let result = self.call(|reply| Command::Shutdown { flush: true, reply });
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        result?
    }
}

impl Drop for Node {
    /// Stops the engine thread without flushing (use [`Node::shutdown`] to flush).
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let (reply, _rx) = sync_channel(1);
            let _ = self.commands.push(Command::Shutdown {
                flush: false,
                reply,
            });
            self.shared.waker.wake();
            let _ = t.join();
        }
    }
}

type Init = (Arc<NodeShared>, SocketAddrV4, BackendKind);

fn engine_thread(cfg: NodeConfig, guard: &ExitGuard, init: SyncSender<Result<Init, NodeError>>) {
    let fail = |why: String| {
        if let Ok(mut f) = guard.state.failure.lock() {
            *f = Some(why);
        }
    };
    if let Some(core) = cfg.core {
        if let Err(e) = pin_current_thread(core) {
            let _ = init.send(Err(NodeError::Engine(e)));
            return;
        }
    }
    let mut core = match Core::new(&cfg) {
        Ok(core) => core,
        Err(e) => {
            let _ = init.send(Err(e));
            return;
        }
    };
    let backend = core.stats().backend;
    if init
        .send(Ok((Arc::clone(core.shared()), core.local_addr(), backend)))
        .is_err()
    {
        return;
    }
    drop(init);
    let commands = &guard.commands;
    loop {
        if let Err(e) = core.poll(IDLE_WAIT, &|| !commands.is_empty()) {
            fail(e.to_string());
            core.flush_audit();
            return;
        }
        while let Some(cmd) = commands.pop() {
            match cmd {
                Command::Join(cfg, reply) => {
                    let _ = reply.send(core.join(*cfg));
                }
                Command::Leave(group, reply) => {
                    let _ = reply.send(core.leave(group));
                }
                Command::Stats(reply) => {
                    let _ = reply.send(core.stats());
                }
                Command::Shutdown { flush, reply } => {
                    let result = if flush {
                        core.flush(SHUTDOWN_FLUSH_LIMIT)
                    } else {
                        Ok(false)
                    };
                    core.flush_audit();
                    let result = result.map(|flushed| NodeStats {
                        flushed,
                        ..core.stats()
                    });
                    fail("the node was shut down".into());
                    let _ = reply.send(result);
                    return;
                }
            }
        }
    }
}

/// The same data plane without a thread of its own, for boxes with few cores: the
/// application calls [`EmbeddedNode::poll`] (one cooperative duty cycle) itself. Must stay on
/// the thread that created it (`!Send`: it owns the engine); its [`GroupHandle`]s may move to
/// other threads, whose sends wake a parked `poll`.
pub struct EmbeddedNode {
    core: Core,
}

impl fmt::Debug for EmbeddedNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedNode")
            .field("local_addr", &self.core.local_addr())
            .finish_non_exhaustive()
    }
}

impl EmbeddedNode {
    /// Validates `cfg` and opens the engine on the calling thread (pinning it if `cfg.core` is
    /// set).
    pub fn new(cfg: NodeConfig) -> Result<EmbeddedNode, NodeError> {
        cfg.validate()?;
        if let Some(core) = cfg.core {
            pin_current_thread(core)?;
        }
        Ok(EmbeddedNode {
            core: Core::new(&cfg)?,
        })
    }

    /// The unicast address peers must use for this member.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.core.local_addr()
    }

    /// Joins a group and returns the handle to use it.
    pub fn join(&mut self, cfg: GroupConfig) -> Result<GroupHandle, NodeError> {
        self.core.join(cfg)
    }

    /// Leaves a group (its handle reports `Closed`).
    pub fn leave(&mut self, group: GroupId) -> Result<(), NodeError> {
        self.core.leave(group)
    }

    /// One duty cycle (see the module docs); parks for at most `max_wait` when there is
    /// nothing to do (with the `Park` idle strategy). Returns the work done (0 = idle).
    pub fn poll(&mut self, max_wait: Duration) -> Result<usize, NodeError> {
        self.core.poll(max_wait, &|| false)
    }

    /// A snapshot of every counter.
    pub fn stats(&self) -> NodeStats {
        self.core.stats()
    }

    /// Flushes like [`Node::shutdown`] (driving the duty cycle itself), then closes the node.
    pub fn shutdown(mut self) -> Result<NodeStats, NodeError> {
        let flushed = self.core.flush(SHUTDOWN_FLUSH_LIMIT)?;
        self.core.flush_audit();
        Ok(NodeStats {
            flushed,
            ..self.core.stats()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_lookup_names_variables() {
        let me = MemberId::new(1, 1);
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = NodeConfig::from_lookup(me, &vars(&[])).unwrap();
        assert_eq!(c.system_key, None);
        assert_eq!(c.effective_ring_bytes(), 64 << 20);
        c.validate().unwrap();

        const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let c = NodeConfig::from_lookup(
            me,
            &vars(&[
                ("VSYNC_AESKEY", KEY),
                ("VSYNC_AUDIT_LOG", "/tmp/x.log"),
                ("VSYNC_MTU", "1400"),
            ]),
        )
        .unwrap();
        assert_eq!(c.system_key.unwrap()[1], 0x11);
        assert_eq!(c.system_key.unwrap()[31], 0xff);
        assert_eq!(c.audit_log, Some(PathBuf::from("/tmp/x.log")));
        assert_eq!((c.protocol.mtu, c.engine.mtu), (1400, 1400));

        let e = NodeConfig::from_lookup(me, &vars(&[("VSYNC_AESKEY", "abc")])).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "VSYNC_AESKEY=<3 characters, not shown>: expected 64 hexadecimal digits"
            ),
            "{e}"
        );
        let e = NodeConfig::from_lookup(me, &vars(&[("VSYNC_ENGINE", "bogus")])).unwrap_err();
        assert!(e.to_string().starts_with("VSYNC_ENGINE=bogus"), "{e}");
        let e = NodeConfig::from_lookup(me, &vars(&[("VSYNC_MAXMSGLEN", "x")])).unwrap_err();
        assert!(e.to_string().starts_with("VSYNC_MAXMSGLEN=x"), "{e}");
    }

    #[test]
    fn ring_sizing() {
        assert_eq!(NodeConfig::min_ring_bytes(1 << 20), 4 << 20);
        assert_eq!(NodeConfig::default_ring_bytes(1 << 20), 64 << 20);
        assert_eq!(NodeConfig::default_ring_bytes(64 << 20), 256 << 20);
        let mut c = NodeConfig::new(MemberId::new(1, 1));
        c.protocol.max_message_bytes = 1 << 20;
        c.protocol.send_buffer_bytes = 4 << 20;
        c.ring_bytes = 1 << 20;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("ring_bytes=1048576") && e.contains("4194304"),
            "{e}"
        );
        c.ring_bytes = 3 << 20;
        c.validate().unwrap();
        assert_eq!(c.effective_ring_bytes(), 4 << 20);
        c.engine.mtu = 1000;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("engine.mtu=1000"));
    }
}
