//! [`System`]: one vsync member process (Isis² `IsisSystem`): finds or starts the oracle,
//! registers with it, and runs the member runtime on a driver thread.
//!
//! # Threads
//!
//! * **Driver** (one per `System`): owns the [`MemberRuntime`] (data-plane engine, member
//!   agent, oracle socket) and runs its loop. Application calls reach it through a channel
//!   plus the engine's [`Waker`]; it never blocks on the application.
//! * **Delivery** (two per joined [`Group`](crate::Group)): the group's handlers, view
//!   callbacks and checkpoint callbacks in delivery order, and its P2P / client handlers,
//!   serialized by the group's lock (see [`crate::group`]).
//! * **Embedded oracle** (at most one per process, in the process that started first): a
//!   single-replica [`OracleNode`]. It lives as long as the process: like an Isis² ORACLE
//!   member, the process that hosts it should outlive the others.
//!
//! # Finding the oracle
//!
//! * Explicit replicas ([`SystemBuilder::oracle_replicas`]) are used as given.
//! * Otherwise, `VSYNC_HOSTS` (see [`ControlConfig`]): replica *i* runs on the *i*-th host at
//!   the oracle port.
//! * Otherwise the embedded default: the process tries to bind `127.0.0.1:<oracle port>`
//!   (`VSYNC_ORACLE_PORT`, default [`DEFAULT_ORACLE_PORT`]). The first process that binds it
//!   runs the oracle; later processes use it.
//!
//! ```no_run
//! use vsync::System;
//! let sys = System::builder().oracle_port(40111).start()?;
//! println!("I am {}", sys.my_address());
//! sys.shutdown()?;
//! # Ok::<(), vsync::VsyncError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vsync_control::agent::{AgentConfig, AgentError, AgentEvent, MsgKind};
use vsync_control::config::ControlConfig;
use vsync_control::oracle::{group_id, Command, Signature as OracleSignature, View as OracleView};
use vsync_control::runtime::{MemberRuntime, OracleNode, RuntimeConfig, RuntimeError};
use vsync_control::service::ServiceConfig;
use vsync_dataplane::config::ProtocolConfig;
use vsync_dataplane::engine::{BackendChoice, EngineConfig, Waker};
use vsync_dataplane::protocol::SendError;
use vsync_dataplane::{GroupId, MemberId, ViewId};

use crate::client::ClientDriver;
use crate::error::VsyncError;
use crate::group::{self, Upcall, View};
use crate::marshal::Address;
use crate::query::{NReplies, Replies, ReplyCollector, ReplyKind, Timeout};
use crate::safe::{SafeGroup, SafeOut, SharedDurability};
use crate::watchdog::{DeliveryClock, Watchdog};

pub(crate) mod flavours;

/// The embedded oracle's default loopback port (`VSYNC_ORACLE_PORT` overrides it).
///
/// ```no_run
/// use vsync::{System, DEFAULT_ORACLE_PORT};
/// let sys = System::builder().oracle_port(DEFAULT_ORACLE_PORT + 1).start()?;
/// # Ok::<(), vsync::VsyncError>(())
/// ```
pub const DEFAULT_ORACLE_PORT: u16 = 37731;

const STATUS_ACTIVE: u8 = 0;
const STATUS_SHUTDOWN: u8 = 1;
const STATUS_POISONED: u8 = 2;

/// A result sender (one answer).
pub(crate) type Done<T> = Sender<Result<T, VsyncError>>;

/// How a join request treats a missing or existing group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JoinMode {
    /// Isis² `Join()`: join, creating the group if it does not exist.
    JoinOrCreate,
    /// Create; fails if the group exists.
    Create,
    /// Join; fails if the group does not exist.
    JoinExisting,
}

/// An application request to the driver.
pub(crate) enum Cmd {
    Join {
        gid: GroupId,
        name: String,
        signature: OracleSignature,
        mode: JoinMode,
        upcalls: group::UpcallTx,
        /// A secure group's key.
        key: Option<[u8; 32]>,
        /// The delivery thread's clock (for the watchdog).
        clock: Arc<DeliveryClock>,
        done: Done<()>,
    },
    Leave {
        gid: GroupId,
        done: Done<()>,
    },
    Multicast {
        gid: GroupId,
        ordered: bool,
        payload: Vec<u8>,
    },
    P2p {
        gid: GroupId,
        to: MemberId,
        payload: Vec<u8>,
    },
    Query {
        gid: GroupId,
        ordered: bool,
        want: NReplies,
        timeout: Timeout,
        body: Vec<u8>,
        done: Done<Replies>,
    },
    Reply {
        gid: GroupId,
        to: MemberId,
        qid: u64,
        reply: ReplyKind,
    },
    Checkpoint {
        gid: GroupId,
        view: ViewId,
        state: Vec<u8>,
    },
    Flush {
        gid: GroupId,
        k: Option<usize>,
        done: Done<()>,
    },
    Shutdown {
        done: Done<()>,
    },
    /// Isis² `Terminate`: end the group for every member.
    Terminate {
        gid: GroupId,
        done: Done<()>,
    },
    /// Isis² `HasFailed`: report a member of the group as failed.
    HasFailed {
        gid: GroupId,
        who: MemberId,
    },
    /// A non-member client's P2P query to its representative (see [`crate::client`]).
    ClientQuery {
        gid: GroupId,
        timeout: Timeout,
        body: Vec<u8>,
        done: Done<Replies>,
    },
    /// Test aid: stop at once without leaving any group (a crash, as the others see it).
    Crash {
        done: Done<()>,
    },
    /// SafeSend configuration of a group; submitted just before its `Join`.
    SafeConfig {
        gid: GroupId,
        threshold: Option<usize>,
        durability: SharedDurability,
        log_failures: Arc<AtomicU64>,
    },
    /// SafeQuery: like `Query`, sent as a SafeSend with this tag.
    SafeQuery {
        gid: GroupId,
        tag: crate::durability::CompletionTag,
        want: NReplies,
        timeout: Timeout,
        body: Vec<u8>,
        done: Done<Replies>,
    },
    /// The client protocol's counters.
    ClientStats {
        done: Done<crate::client::ClientStats>,
    },
    /// Isis² `RedirectClient`.
    RedirectClient {
        gid: GroupId,
        client: MemberId,
        new_rep: MemberId,
        done: Done<()>,
    },
    /// CausalSend, the raw sends and the query flavours ([`flavours`]).
    Flav(flavours::FlavCmd),
    /// This member finished its update for a SafeSend (handler returned, or `Group::done`).
    SafeDone {
        gid: GroupId,
        tag: crate::durability::CompletionTag,
    },
    /// The group's logger thread logged these SafeSends for `view`: accept them.
    SafeLogged {
        gid: GroupId,
        view: u64,
        tags: Vec<crate::durability::CompletionTag>,
    },
}

/// Where the oracle replicas are.
#[derive(Clone, Debug)]
enum OracleChoice {
    /// From the environment / [`ControlConfig`] (hosts, or embedded on the oracle port).
    Auto,
    /// These replicas (ids 1..).
    Explicit(Vec<SocketAddr>),
}

/// Configures and starts a [`System`].
///
/// ```no_run
/// use std::time::Duration;
/// use vsync::System;
/// let sys = System::builder()
///     .oracle_port(40112)
///     .join_timeout(Duration::from_secs(10))
///     .start()?;
/// # Ok::<(), vsync::VsyncError>(())
/// ```
#[derive(Clone, Debug)]
pub struct SystemBuilder {
    oracle: OracleChoice,
    oracle_port: u16,
    control: ControlConfig,
    protocol: ProtocolConfig,
    engine: EngineConfig,
    agent: AgentConfig,
    join_timeout: Duration,
    shutdown_timeout: Duration,
    handler_warn: Duration,
    stall_limit: Option<Duration>,
    system_key: Option<[u8; 32]>,
    reports: crate::watchdog::ReportSink,
    bind_ip: Ipv4Addr,
}

impl Default for SystemBuilder {
    fn default() -> Self {
        let protocol = ProtocolConfig {
            max_message_bytes: 1 << 20,
            send_buffer_bytes: 8 << 20,
            window_bytes: 2 << 20,
            window_frames: 4096,
            retain_bytes: 4 << 20,
            ..ProtocolConfig::default()
        };
        let engine = EngineConfig {
            backend: BackendChoice::Portable,
            socket_buffer_bytes: 1 << 20,
            ..EngineConfig::default()
        };
        SystemBuilder {
            oracle: OracleChoice::Auto,
            oracle_port: DEFAULT_ORACLE_PORT,
            control: ControlConfig::default(),
            protocol,
            engine,
            agent: AgentConfig::default(),
            join_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(5),
            handler_warn: Duration::from_millis(1000),
            stall_limit: Some(Duration::from_millis(60_000)),
            system_key: None,
            reports: crate::watchdog::ReportSink::Stderr,
            bind_ip: Ipv4Addr::LOCALHOST,
        }
    }
}

impl SystemBuilder {
    /// The loopback port of the embedded oracle (default [`DEFAULT_ORACLE_PORT`]).
    ///
    /// ```no_run
    /// let sys = vsync::System::builder().oracle_port(40100).start()?;
    /// assert!(sys.oracle_addrs()[0].to_string().ends_with(":40100"));
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn oracle_port(mut self, port: u16) -> Self {
        self.oracle_port = port;
        self
    }

    /// Uses these oracle replicas (replica ids 1, 2, ... in this order) instead of the
    /// environment's or the embedded one.
    ///
    /// ```
    /// let replicas = vec!["10.0.0.1:37731".parse().unwrap(), "10.0.0.2:37731".parse().unwrap()];
    /// let builder = vsync::System::builder().oracle_replicas(replicas);
    /// # let _ = builder;
    /// ```
    pub fn oracle_replicas(mut self, replicas: Vec<SocketAddr>) -> Self {
        self.oracle = OracleChoice::Explicit(replicas);
        self
    }

    /// The control-plane configuration (oracle hosts, failure detection, raft tick).
    ///
    /// ```
    /// use vsync_control::config::ControlConfig;
    /// let mut control = ControlConfig::default();
    /// control.hosts = vec!["10.0.0.1".into(), "10.0.0.2".into()];
    /// let builder = vsync::System::builder().control(control);
    /// # let _ = builder;
    /// ```
    pub fn control(mut self, control: ControlConfig) -> Self {
        self.control = control;
        self
    }

    /// Data-plane protocol parameters.
    ///
    /// ```
    /// use vsync::dataplane::config::ProtocolConfig;
    /// let mut protocol = ProtocolConfig::default();
    /// protocol.max_message_bytes = 4 << 20;
    /// let builder = vsync::System::builder().protocol(protocol);
    /// # let _ = builder;
    /// ```
    pub fn protocol(mut self, protocol: ProtocolConfig) -> Self {
        self.protocol = protocol;
        self
    }

    /// The IPv4 address this member's data and control sockets bind (ephemeral ports) and
    /// its multicast interface (Isis² `ISIS_NETWORK_INTERFACES`; env `VSYNC_BIND_IP`):
    /// 127.0.0.1 by default; a host's own address for members on several hosts.
    ///
    /// ```
    /// use std::net::Ipv4Addr;
    /// let builder = vsync::System::builder().bind_ip(Ipv4Addr::new(10, 0, 0, 5));
    /// # let _ = builder;
    /// ```
    pub fn bind_ip(mut self, ip: Ipv4Addr) -> Self {
        self.bind_ip = ip;
        self
    }

    /// Engine parameters (backend, socket buffers). The bind address comes from
    /// [`SystemBuilder::bind_ip`], with an ephemeral port.
    ///
    /// ```
    /// use vsync::dataplane::engine::EngineConfig;
    /// let mut engine = EngineConfig::default();
    /// engine.socket_buffer_bytes = 4 << 20;
    /// let builder = vsync::System::builder().engine(engine);
    /// # let _ = builder;
    /// ```
    pub fn engine(mut self, engine: EngineConfig) -> Self {
        self.engine = engine;
        self
    }

    /// Member agent timing (oracle heartbeat and lease).
    ///
    /// ```
    /// use std::time::Duration;
    /// use vsync_control::agent::AgentConfig;
    /// let mut agent = AgentConfig::default();
    /// agent.heartbeat = Duration::from_millis(50);
    /// let builder = vsync::System::builder().agent(agent);
    /// # let _ = builder;
    /// ```
    pub fn agent(mut self, agent: AgentConfig) -> Self {
        self.agent = agent;
        self
    }

    /// How long `Group::join` waits for its first view (default 60 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = vsync::System::builder().join_timeout(Duration::from_secs(10));
    /// # let _ = builder;
    /// ```
    pub fn join_timeout(mut self, t: Duration) -> Self {
        self.join_timeout = t;
        self
    }

    /// A handler (or view / checkpoint callback) running longer than this is reported on
    /// stderr and counted (default 1 s; `VSYNC_HANDLER_WARN_MS`). See [`crate::watchdog`].
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = vsync::System::builder().handler_warning(Duration::from_millis(200));
    /// # let _ = builder;
    /// ```
    pub fn handler_warning(mut self, t: Duration) -> Self {
        self.handler_warn = t;
        self
    }

    /// A handler blocking its group's deliveries longer than this poisons the process, so
    /// the group excludes it and goes on (default 60 s; `None` = never;
    /// `VSYNC_STALL_LIMIT_MS`, 0 = never). See [`crate::watchdog`].
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = vsync::System::builder().delivery_stall_limit(Some(Duration::from_secs(10)));
    /// # let _ = builder;
    /// ```
    pub fn delivery_stall_limit(mut self, t: Option<Duration>) -> Self {
        self.stall_limit = t;
        self
    }

    /// The system key (Isis² `ISIS_AESKEY`; env `VSYNC_AESKEY`, 64 hex digits): every
    /// datagram is authenticated with AES-256-GCM and forged or unkeyed ones are dropped.
    /// Every process of the system must use the same key.
    ///
    /// ```
    /// let key = [7u8; 32]; // the same at every process of the system
    /// let builder = vsync::System::builder().system_key(Some(key));
    /// # let _ = builder;
    /// ```
    pub fn system_key(mut self, key: Option<[u8; 32]>) -> Self {
        self.system_key = key;
        self
    }

    /// Where the library's own reports (blocked handlers, poison pills) go (Isis²
    /// `ISIS_LOGDIR` / `ISIS_MUTE`; env `VSYNC_LOGDIR`, `VSYNC_MUTE`): stderr by default,
    /// `vsync-<pid>.log` in a directory, or nowhere.
    ///
    /// ```
    /// use vsync::ReportSink;
    /// let builder = vsync::System::builder().reports(ReportSink::Dir("/var/log/myapp".into()));
    /// # let _ = builder;
    /// ```
    pub fn reports(mut self, sink: crate::watchdog::ReportSink) -> Self {
        self.reports = sink;
        self
    }

    /// How long [`System::shutdown`] waits for the groups to be left (default 5 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = vsync::System::builder().shutdown_timeout(Duration::from_secs(1));
    /// # let _ = builder;
    /// ```
    pub fn shutdown_timeout(mut self, t: Duration) -> Self {
        self.shutdown_timeout = t;
        self
    }

    /// Starts the system: finds or starts the oracle, opens the data plane on the bind address
    /// (ephemeral port), starts the driver thread and waits until the oracle knows this
    /// process.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let sys = vsync::System::builder().join_timeout(Duration::from_secs(10)).start()?;
    /// assert!(sys.is_active());
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn start(self) -> Result<System, VsyncError> {
        System::start_with(self)
    }
}

/// Shared between the application handles and the driver.
pub(crate) struct SysInner {
    tx: Mutex<Sender<Cmd>>,
    waker: Waker,
    status: AtomicU8,
    poison: Mutex<Option<String>>,
    me: MemberId,
    data_addr: SocketAddrV4,
    replicas: Vec<SocketAddr>,
    hosts_oracle: bool,
    pub(crate) join_timeout: Duration,
    shutdown_timeout: Duration,
    pub(crate) max_message: usize,
    /// The largest group payload a raw send carries (one datagram).
    pub(crate) max_raw: usize,
    handler_warn: Duration,
    stall_limit: Option<Duration>,
    reports: crate::watchdog::ReportSink,
    blocked_reports: AtomicU64,
    finished: Mutex<bool>,
    finished_cv: Condvar,
    driver: Mutex<Option<JoinHandle<()>>>,
}

/// One vsync member process (Isis² `IsisSystem`). Cheap to clone; every clone is the same
/// member. See the [module docs](self).
///
/// ```no_run
/// use vsync::{Group, System};
/// let sys = System::start()?; // VSYNC_* variables, embedded oracle by default
/// let g = Group::new(&sys, "foo")?;
/// g.join()?;
/// sys.shutdown()?;
/// # Ok::<(), vsync::VsyncError>(())
/// ```
#[derive(Clone)]
pub struct System {
    pub(crate) inner: Arc<SysInner>,
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("me", &self.my_address())
            .field("data_addr", &self.inner.data_addr)
            .field("oracle", &self.inner.replicas)
            .finish()
    }
}

static EMBEDDED: Mutex<Vec<(u16, JoinHandle<()>)>> = Mutex::new(Vec::new());
static SYSTEMS: AtomicU64 = AtomicU64::new(0);

impl System {
    /// A builder with the defaults (embedded oracle on [`DEFAULT_ORACLE_PORT`]).
    ///
    /// ```no_run
    /// let sys = vsync::System::builder().oracle_port(40100).start()?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn builder() -> SystemBuilder {
        SystemBuilder::default()
    }

    /// A builder configured from the `VSYNC_*` environment: [`ControlConfig::from_env`]
    /// (`VSYNC_HOSTS`, failure detection, ...), `VSYNC_ORACLE_PORT`, and the engine's
    /// `VSYNC_ENGINE` / `VSYNC_TTL` / `VSYNC_IDLE`. Errors name the variable.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// // VSYNC_* variables first, then overrides in code
    /// let sys = vsync::System::from_env()?.join_timeout(Duration::from_secs(5)).start()?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn from_env() -> Result<SystemBuilder, VsyncError> {
        let mut b = SystemBuilder {
            control: ControlConfig::from_env().map_err(|e| VsyncError::Config(e.to_string()))?,
            ..SystemBuilder::default()
        };
        if let Ok(v) = std::env::var("VSYNC_ORACLE_PORT") {
            b.oracle_port = v
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| {
                    VsyncError::Config(format!(
                        "VSYNC_ORACLE_PORT={v}: expected a port number in 1..=65535"
                    ))
                })?;
        }
        let ms = |name: &str| -> Result<Option<u64>, VsyncError> {
            match std::env::var(name) {
                Err(_) => Ok(None),
                Ok(v) => v.trim().parse::<u64>().map(Some).map_err(|_| {
                    VsyncError::Config(format!("{name}={v}: expected milliseconds (an integer)"))
                }),
            }
        };
        if let Some(v) = ms("VSYNC_HANDLER_WARN_MS")? {
            b.handler_warn = Duration::from_millis(v);
        }
        if let Some(v) = ms("VSYNC_STALL_LIMIT_MS")? {
            b.stall_limit = (v > 0).then(|| Duration::from_millis(v));
        }
        // The data plane's VSYNC_* variables, over this builder's defaults (which differ
        // from the data plane's for buffers and the engine).
        let d = SystemBuilder::default();
        let overlay = |k: &str| -> Option<String> {
            std::env::var(k).ok().or_else(|| match k {
                "VSYNC_MAXMSGLEN" => Some(d.protocol.max_message_bytes.to_string()),
                "VSYNC_SEND_BUFFER_BYTES" => Some(d.protocol.send_buffer_bytes.to_string()),
                "VSYNC_WINDOW_BYTES" => Some(d.protocol.window_bytes.to_string()),
                "VSYNC_WINDOW_FRAMES" => Some(d.protocol.window_frames.to_string()),
                "VSYNC_ENGINE" => Some("portable".into()),
                _ => None,
            })
        };
        b.protocol =
            ProtocolConfig::from_lookup(&overlay).map_err(|e| VsyncError::Config(e.to_string()))?;
        let mut e =
            EngineConfig::from_lookup(overlay).map_err(|e| VsyncError::Config(e.to_string()))?;
        e.socket_buffer_bytes = d.engine.socket_buffer_bytes;
        e.mtu = b.protocol.mtu;
        b.engine = e;
        if let Ok(v) = std::env::var("VSYNC_BIND_IP") {
            b.bind_ip = v
                .trim()
                .parse::<Ipv4Addr>()
                .ok()
                .filter(|ip| !ip.is_unspecified() && !ip.is_multicast() && !ip.is_broadcast())
                .ok_or_else(|| {
                    VsyncError::Config(format!(
                        "VSYNC_BIND_IP={v}: expected this host's unicast IPv4 address"
                    ))
                })?;
        }
        if let Ok(v) = std::env::var("VSYNC_AESKEY") {
            if !v.trim().is_empty() {
                b.system_key = Some(crate::secure::parse_hex_key(v.trim()).ok_or_else(|| {
                    VsyncError::Config(format!(
                        "VSYNC_AESKEY=<{} characters, not shown>: expected 64 hexadecimal digits \
                         (a 256-bit key)",
                        v.trim().len()
                    ))
                })?);
            }
        }
        let mute = match std::env::var("VSYNC_MUTE").as_deref().map(str::trim) {
            Err(_) | Ok("") | Ok("0") | Ok("false") => false,
            Ok("1") | Ok("true") => true,
            Ok(v) => {
                return Err(VsyncError::Config(format!(
                    "VSYNC_MUTE={v}: expected true, false, 1 or 0"
                )))
            }
        };
        b.reports = match (mute, std::env::var("VSYNC_LOGDIR")) {
            (true, _) => crate::watchdog::ReportSink::Mute,
            (false, Ok(dir)) if !dir.trim().is_empty() => {
                let dir = std::path::PathBuf::from(dir.trim());
                if !dir.is_dir() {
                    return Err(VsyncError::Config(format!(
                        "VSYNC_LOGDIR={}: not a directory",
                        dir.display()
                    )));
                }
                crate::watchdog::ReportSink::Dir(dir)
            }
            _ => crate::watchdog::ReportSink::Stderr,
        };
        Ok(b)
    }

    /// Isis² `IsisSystem.Start()`: [`System::from_env`] then [`SystemBuilder::start`].
    ///
    /// ```no_run
    /// let sys = vsync::System::start()?;
    /// println!("member {} (oracle here: {})", sys.my_address(), sys.hosts_oracle());
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn start() -> Result<System, VsyncError> {
        System::from_env()?.start()
    }

    fn start_with(b: SystemBuilder) -> Result<System, VsyncError> {
        let (replicas, hosts_oracle) = resolve_oracle(&b)?;
        let me = fresh_member_id();
        let mut cfg = RuntimeConfig::new(
            me,
            SocketAddrV4::new(b.bind_ip, 0),
            replicas
                .iter()
                .enumerate()
                .map(|(i, a)| (i as u64 + 1, *a))
                .collect(),
        );
        cfg.agent = b.agent;
        cfg.protocol = b.protocol.clone();
        cfg.engine = b.engine.clone();
        cfg.oracle_poll = Duration::from_millis(2);
        let system_key = b.system_key;
        let (tx, rx) = mpsc::channel::<Cmd>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(Waker, SocketAddrV4), VsyncError>>();
        let (inner_tx, inner_rx) = mpsc::channel::<Arc<SysInner>>();
        let handle = std::thread::Builder::new()
            .name(format!("vsync-driver-{}", me.process()))
            .spawn(move || {
                let mut rt = match MemberRuntime::new(cfg) {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(VsyncError::Start(e.to_string())));
                        return;
                    }
                };
                rt.agent_mut().set_system_key(system_key.as_ref());
                let _ = ready_tx.send(Ok((rt.engine().waker(), rt.data_addr())));
                let Ok(inner) = inner_rx.recv() else { return };
                Driver::new(rt, rx, inner).run();
            })
            .map_err(|e| VsyncError::Start(format!("driver thread: {e}")))?;
        let (waker, data_addr) = match ready_rx.recv() {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(VsyncError::Start("the driver thread died".into())),
        };
        let inner = Arc::new(SysInner {
            tx: Mutex::new(tx),
            waker,
            status: AtomicU8::new(STATUS_ACTIVE),
            poison: Mutex::new(None),
            me,
            data_addr,
            replicas,
            hosts_oracle,
            join_timeout: b.join_timeout,
            shutdown_timeout: b.shutdown_timeout,
            max_message: b.protocol.max_message_bytes.saturating_sub(64),
            max_raw: vsync_control::agent::MemberAgent::max_raw_payload_for(&b.protocol),
            handler_warn: b.handler_warn,
            stall_limit: b.stall_limit,
            reports: b.reports.clone(),
            blocked_reports: AtomicU64::new(0),
            finished: Mutex::new(false),
            finished_cv: Condvar::new(),
            driver: Mutex::new(Some(handle)),
        });
        if inner_tx.send(inner.clone()).is_err() {
            return Err(VsyncError::Start("the driver thread died".into()));
        }
        Ok(System { inner })
    }

    /// This member's address (process and incarnation).
    ///
    /// ```no_run
    /// # let sys = vsync::System::start()?;
    /// let me: vsync::Address = sys.my_address();
    /// println!("I am {me}");
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn my_address(&self) -> Address {
        Address::from(self.inner.me)
    }

    /// The data plane's bound address (the bind address, ephemeral port).
    ///
    /// ```no_run
    /// # let sys = vsync::System::start()?;
    /// assert!(sys.data_addr().ip().is_loopback()); // the default bind address
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn data_addr(&self) -> SocketAddrV4 {
        self.inner.data_addr
    }

    /// The oracle replicas this member talks to.
    ///
    /// ```no_run
    /// # let sys = vsync::System::start()?;
    /// for replica in sys.oracle_addrs() {
    ///     println!("oracle replica at {replica}");
    /// }
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn oracle_addrs(&self) -> &[SocketAddr] {
        &self.inner.replicas
    }

    /// True if this process runs the embedded oracle (it started first on this host).
    ///
    /// ```no_run
    /// # let sys = vsync::System::start()?;
    /// if sys.hosts_oracle() {
    ///     println!("this process runs the embedded oracle: keep it up");
    /// }
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn hosts_oracle(&self) -> bool {
        self.inner.hosts_oracle
    }

    /// How many times a handler of this process ran longer than the warning threshold
    /// ([`SystemBuilder::handler_warning`]); each is also reported on stderr.
    ///
    /// ```no_run
    /// # let sys = vsync::System::start()?;
    /// assert_eq!(sys.blocked_handler_reports(), 0); // no handler has run long yet
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn blocked_handler_reports(&self) -> u64 {
        self.inner.blocked_reports.load(Ordering::Relaxed)
    }

    /// True until [`System::shutdown`] or poisoning.
    ///
    /// ```no_run
    /// let sys = vsync::System::start()?;
    /// assert!(sys.is_active());
    /// sys.shutdown()?;
    /// assert!(!sys.is_active());
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn is_active(&self) -> bool {
        self.inner.status.load(Ordering::Acquire) == STATUS_ACTIVE
    }

    /// Graceful shutdown: leaves every joined group (the others see a leave, not a failure),
    /// then stops the driver. Later calls on this system and its groups fail with
    /// [`VsyncError::ShutDown`]. Calling it again returns `Err(ShutDown)`.
    ///
    /// ```no_run
    /// use vsync::VsyncError;
    /// let sys = vsync::System::start()?;
    /// sys.shutdown()?;
    /// assert!(matches!(sys.shutdown(), Err(VsyncError::ShutDown)));
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn shutdown(&self) -> Result<(), VsyncError> {
        self.check()?;
        self.inner.status.store(STATUS_SHUTDOWN, Ordering::Release);
        let (done, rx) = mpsc::channel();
        if self.submit_internal(Cmd::Shutdown { done }).is_err() {
            return Ok(());
        }
        let _ = rx.recv_timeout(self.inner.shutdown_timeout + Duration::from_secs(2));
        let handle = self.inner.driver.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
        Ok(())
    }

    /// Test aid: stops this member abruptly, as if its process crashed: no group is left, the
    /// others see it in [`View::failed`](crate::View::failed) once the failure detector
    /// notices. Not for production use.
    ///
    /// ```no_run
    /// let sys = vsync::System::builder().oracle_port(40113).start()?;
    /// sys.crash_for_testing();
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    #[doc(hidden)]
    pub fn crash_for_testing(&self) {
        if self.check().is_err() {
            return;
        }
        self.inner.status.store(STATUS_SHUTDOWN, Ordering::Release);
        let (done, rx) = mpsc::channel();
        if self.submit_internal(Cmd::Crash { done }).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(5));
        }
        let handle = self.inner.driver.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }

    /// Isis² `WaitForever()`: blocks until the system is shut down (by another thread) or
    /// poisoned; returns why.
    ///
    /// ```no_run
    /// let sys = vsync::System::start()?;
    /// let s = sys.clone();
    /// std::thread::spawn(move || {
    ///     std::thread::sleep(std::time::Duration::from_secs(60));
    ///     s.shutdown()
    /// });
    /// let why = sys.wait_forever(); // VsyncError::ShutDown after a minute
    /// println!("stopped: {why}");
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn wait_forever(&self) -> VsyncError {
        let mut fin = match self.inner.finished.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        while !*fin {
            fin = match self.inner.finished_cv.wait(fin) {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
        }
        self.status_error()
    }

    /// The error calls fail with now (ShutDown or Poisoned).
    pub(crate) fn status_error(&self) -> VsyncError {
        match self.inner.status.load(Ordering::Acquire) {
            STATUS_POISONED => VsyncError::Poisoned(
                self.inner
                    .poison
                    .lock()
                    .ok()
                    .and_then(|p| p.clone())
                    .unwrap_or_else(|| "excluded by the oracle".into()),
            ),
            _ => VsyncError::ShutDown,
        }
    }

    /// Ok while active, else the status error.
    pub(crate) fn check(&self) -> Result<(), VsyncError> {
        if self.is_active() {
            Ok(())
        } else {
            Err(self.status_error())
        }
    }

    /// Sends an application command (refused after shutdown / poisoning).
    pub(crate) fn submit(&self, cmd: Cmd) -> Result<(), VsyncError> {
        self.check()?;
        self.submit_internal(cmd)
    }

    /// Sends a command even while shutting down (replies, checkpoints).
    pub(crate) fn submit_internal(&self, cmd: Cmd) -> Result<(), VsyncError> {
        let tx = self.inner.tx.lock().map_err(|_| self.status_error())?;
        tx.send(cmd).map_err(|_| self.status_error())?;
        drop(tx);
        self.inner.waker.wake();
        Ok(())
    }

    /// Waits for one answer; a dropped sender means the driver stopped.
    pub(crate) fn wait<T>(
        &self,
        rx: &Receiver<Result<T, VsyncError>>,
        limit: Option<Duration>,
        what: &str,
    ) -> Result<T, VsyncError> {
        match limit {
            Some(d) => match rx.recv_timeout(d) {
                Ok(r) => r,
                Err(mpsc::RecvTimeoutError::Timeout) => Err(VsyncError::Timeout(what.to_string())),
                Err(mpsc::RecvTimeoutError::Disconnected) => Err(self.status_error()),
            },
            None => rx.recv().unwrap_or_else(|_| Err(self.status_error())),
        }
    }
}

/// A process id unique among concurrent processes on this host (pid and a per-process
/// counter, hashed) and an incarnation from the clock (a reused pid gets a new one).
fn fresh_member_id() -> MemberId {
    let n = SYSTEMS.fetch_add(1, Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut seed = [0u8; 24];
    seed[..4].copy_from_slice(&std::process::id().to_le_bytes());
    seed[4..12].copy_from_slice(&n.to_le_bytes());
    seed[12..24].copy_from_slice(&now.as_nanos().to_le_bytes()[..12]);
    let h = xxhash_rust::xxh3::xxh3_64(&seed);
    let process = ((h >> 32) as u32).max(1);
    let incarnation = (now.as_secs() as u32).max(1);
    MemberId::new(process, incarnation)
}

/// The oracle replicas to use, and whether this process hosts the embedded one.
fn resolve_oracle(b: &SystemBuilder) -> Result<(Vec<SocketAddr>, bool), VsyncError> {
    if let OracleChoice::Explicit(r) = &b.oracle {
        if r.is_empty() {
            return Err(VsyncError::Config(
                "no oracle replica addresses given".into(),
            ));
        }
        return Ok((r.clone(), false));
    }
    if !b.control.hosts.is_empty() {
        let mut out = Vec::new();
        for h in b.control.hosts.iter().take(b.control.oracle_replicas) {
            let addr = (h.as_str(), b.oracle_port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut it| it.find(SocketAddr::is_ipv4))
                .ok_or_else(|| {
                    VsyncError::Config(format!(
                        "VSYNC_HOSTS: host {h:?} does not resolve to an IPv4 address"
                    ))
                })?;
            out.push(addr);
        }
        return Ok((out, false));
    }
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, b.oracle_port));
    let mut embedded = EMBEDDED
        .lock()
        .map_err(|_| VsyncError::Start("lock".into()))?;
    if embedded.iter().any(|(p, _)| *p == b.oracle_port) {
        return Ok((vec![addr], true));
    }
    let svc = ServiceConfig {
        multicast: None,
        ..ServiceConfig::from_control(&b.control)
    };
    match OracleNode::new(1, addr, vec![(1, addr)], svc, u64::from(std::process::id())) {
        Ok(mut node) => {
            let h = std::thread::Builder::new()
                .name(format!("vsync-oracle-{}", b.oracle_port))
                .spawn(move || loop {
                    if node.step(Duration::from_millis(20)).is_err() {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
                .map_err(|e| VsyncError::Start(format!("oracle thread: {e}")))?;
            embedded.push((b.oracle_port, h));
            Ok((vec![addr], true))
        }
        Err(RuntimeError::Io(e)) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Ok((vec![addr], false))
        }
        Err(e) => Err(VsyncError::Start(format!("embedded oracle on {addr}: {e}"))),
    }
}

// ------------------------------------------------------------------------------------------
// The driver.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReqKind {
    Join,
    Create,
    Leave,
    Terminate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the oracle to know this process.
    Unregistered,
    /// Join or create requested.
    Requested,
    /// A view is installed.
    Active,
    /// Leave requested.
    Leaving,
}

enum Out {
    Multicast {
        ordered: bool,
        payload: Vec<u8>,
    },
    P2p {
        to: MemberId,
        payload: Vec<u8>,
    },
    Query {
        qid: u64,
        ordered: bool,
        payload: Vec<u8>,
        want: NReplies,
        timeout: Timeout,
        done: Done<Replies>,
    },
    Leave,
    /// A CausalSend or P2PQuery request ([`flavours`]).
    Flav(flavours::FlavOut),
}

struct PendingQuery {
    collector: ReplyCollector,
    done: Done<Replies>,
}

struct GState {
    name: String,
    signature: OracleSignature,
    mode: JoinMode,
    attempts: u32,
    phase: Phase,
    upcalls: group::UpcallTx,
    clock: Arc<DeliveryClock>,
    join_done: Option<Done<()>>,
    leave_done: Vec<Done<()>>,
    out: VecDeque<Out>,
    queries: BTreeMap<u64, PendingQuery>,
    flushes: Vec<(Option<usize>, Done<()>)>,
    announced: BTreeSet<MemberId>,
    flav: flavours::FlavState,
}

struct Driver {
    rt: MemberRuntime,
    rx: Receiver<Cmd>,
    inner: Arc<SysInner>,
    groups: BTreeMap<GroupId, GState>,
    requests: BTreeMap<u64, (GroupId, ReqKind)>,
    origin: Instant,
    next_qid: u64,
    shutdown: Option<(Instant, Vec<Done<()>>)>,
    /// Terminate requests in flight, by request number.
    terminations: BTreeMap<u64, Done<()>>,
    /// The client protocol (as a client and as a representative).
    clients: ClientDriver,
    /// Reports and poisons on blocked handlers.
    watchdog: Watchdog,
    flav_stats: flavours::FlavourStats,
    /// SafeSend state per group (see [`crate::safe`]).
    safe: BTreeMap<GroupId, SafeGroup>,
}

impl Driver {
    fn new(rt: MemberRuntime, rx: Receiver<Cmd>, inner: Arc<SysInner>) -> Self {
        let me = rt.agent().me();
        let watchdog = Watchdog::new(inner.handler_warn, inner.stall_limit, inner.reports.clone());
        Driver {
            rt,
            rx,
            inner,
            groups: BTreeMap::new(),
            requests: BTreeMap::new(),
            origin: Instant::now(),
            next_qid: 0,
            shutdown: None,
            terminations: BTreeMap::new(),
            clients: ClientDriver::new(me),
            watchdog,
            flav_stats: flavours::FlavourStats::default(),
            safe: BTreeMap::new(),
        }
    }

    fn me(&self) -> MemberId {
        self.inner.me
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn run(mut self) {
        let mut events = Vec::new();
        loop {
            loop {
                match self.rx.try_recv() {
                    Ok(cmd) => self.on_cmd(cmd),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        if self.shutdown.is_none() {
                            self.begin_shutdown(Vec::new());
                        }
                        break;
                    }
                }
            }
            if self.finished() {
                break;
            }
            self.start_joins();
            self.report_safe_dones();
            let gids: Vec<GroupId> = self.groups.keys().copied().collect();
            for g in &gids {
                self.pump(*g);
            }
            self.check_flushes();
            self.check_query_timeouts();
            match self.rt.step(Duration::from_millis(5), &mut events) {
                Ok(_) => {}
                Err(e) => {
                    self.poison(format!("member runtime failed: {e}"));
                    break;
                }
            }
            let mut stop = false;
            for e in events.drain(..) {
                stop |= self.on_event(e);
            }
            self.serve_clients();
            if let Err(why) = self.check_delivery_threads() {
                self.poison(why);
                break;
            }
            if stop {
                break;
            }
        }
        // Whatever is still pending fails with the status error (senders dropped).
        if self.inner.status.load(Ordering::Acquire) == STATUS_ACTIVE {
            self.inner.status.store(STATUS_SHUTDOWN, Ordering::Release);
        }
        self.clients.fail_all(|| VsyncError::ShutDown);
        if let Some((_, dones)) = self.shutdown.take() {
            for d in dones {
                let _ = d.send(Ok(()));
            }
        }
        for (_, gs) in std::mem::take(&mut self.groups) {
            let _ = gs.upcalls.send(Upcall::Gone);
        }
        if let Ok(mut f) = self.inner.finished.lock() {
            *f = true;
        }
        self.inner.finished_cv.notify_all();
    }

    /// The watchdog over the groups' delivery threads.
    fn check_delivery_threads(&mut self) -> Result<(), String> {
        for (g, gs) in &self.groups {
            if self.watchdog.check(*g, &gs.name, &gs.clock)? {
                self.inner.blocked_reports.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Client frames received on the control socket, and the client's own timers.
    fn serve_clients(&mut self) {
        while let Some((from, body)) = self.rt.poll_client() {
            let groups = &self.groups;
            let delivery = self.clients.on_frame(&mut self.rt, from, &body, |g| {
                groups.get(&g).is_some_and(|s| s.phase == Phase::Active)
            });
            if let Some(d) = delivery {
                if let Some(gs) = self.groups.get(&d.group) {
                    let _ = gs.upcalls.send(Upcall::ClientRequest {
                        sender: Address::from(d.client),
                        code: d.code,
                        args: d.args,
                        qid: d.qid,
                    });
                }
            }
        }
        self.clients.tick(&mut self.rt);
    }

    fn finished(&mut self) -> bool {
        let Some((deadline, _)) = &self.shutdown else {
            return false;
        };
        self.groups.is_empty() || Instant::now() >= *deadline
    }

    fn begin_shutdown(&mut self, dones: Vec<Done<()>>) {
        if let Some((_, d)) = &mut self.shutdown {
            d.extend(dones);
            return;
        }
        self.shutdown = Some((Instant::now() + self.inner.shutdown_timeout, dones));
        let gids: Vec<GroupId> = self.groups.keys().copied().collect();
        for g in gids {
            let phase = self.groups[&g].phase;
            match phase {
                Phase::Active => self.request_leave(g, None),
                Phase::Leaving => {}
                Phase::Unregistered | Phase::Requested => {
                    if let Some(gs) = self.groups.remove(&g) {
                        if let Some(d) = gs.join_done {
                            let _ = d.send(Err(VsyncError::ShutDown));
                        }
                    }
                }
            }
        }
    }

    fn poison(&mut self, why: String) {
        if let Ok(mut p) = self.inner.poison.lock() {
            *p = Some(why);
        }
        self.inner.status.store(STATUS_POISONED, Ordering::Release);
    }

    fn request_leave(&mut self, g: GroupId, done: Option<Done<()>>) {
        let Some(gs) = self.groups.get_mut(&g) else {
            return;
        };
        if let Some(d) = done {
            gs.leave_done.push(d);
        }
        if gs.phase == Phase::Active {
            gs.phase = Phase::Leaving;
            gs.out.push_back(Out::Multicast {
                ordered: false,
                payload: vec![group::K_LEAVING],
            });
            gs.out.push_back(Out::Leave);
        }
    }

    fn not_joined(&self, g: GroupId) -> VsyncError {
        VsyncError::NotJoined {
            group: self
                .groups
                .get(&g)
                .map_or_else(|| format!("{g}"), |s| s.name.clone()),
        }
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Join {
                gid,
                name,
                signature,
                mode,
                upcalls,
                key,
                clock,
                done,
            } => {
                if self.shutdown.is_some() {
                    let _ = done.send(Err(VsyncError::ShutDown));
                    return;
                }
                if self.groups.contains_key(&gid) {
                    let _ = done.send(Err(VsyncError::AlreadyJoined { group: name }));
                    return;
                }
                self.rt.agent_mut().set_group_key(gid, key);
                self.groups.insert(
                    gid,
                    GState {
                        name,
                        signature,
                        mode,
                        attempts: 0,
                        phase: Phase::Unregistered,
                        upcalls,
                        clock,
                        join_done: Some(done),
                        leave_done: Vec::new(),
                        out: VecDeque::new(),
                        queries: BTreeMap::new(),
                        flushes: Vec::new(),
                        announced: BTreeSet::new(),
                        flav: flavours::FlavState::default(),
                    },
                );
            }
            Cmd::Leave { gid, done } => match self.groups.get(&gid).map(|s| s.phase) {
                Some(Phase::Active) | Some(Phase::Leaving) => self.request_leave(gid, Some(done)),
                _ => {
                    let _ = done.send(Err(self.not_joined(gid)));
                }
            },
            Cmd::Multicast {
                gid,
                ordered,
                payload,
            } => {
                if let Some(gs) = self.groups.get_mut(&gid) {
                    if gs.phase == Phase::Active {
                        gs.out.push_back(Out::Multicast { ordered, payload });
                    }
                }
            }
            Cmd::P2p { gid, to, payload } => {
                if let Some(gs) = self.groups.get_mut(&gid) {
                    if gs.phase == Phase::Active {
                        gs.out.push_back(Out::P2p { to, payload });
                    }
                }
            }
            Cmd::Query {
                gid,
                ordered,
                want,
                timeout,
                body,
                done,
            } => {
                let active = self.groups.get(&gid).map(|s| s.phase) == Some(Phase::Active);
                if !active {
                    let _ = done.send(Err(self.not_joined(gid)));
                    return;
                }
                self.next_qid += 1;
                let qid = self.next_qid;
                let payload = group::encode_query(qid, &body);
                if let Some(gs) = self.groups.get_mut(&gid) {
                    gs.out.push_back(Out::Query {
                        qid,
                        ordered,
                        payload,
                        want,
                        timeout,
                        done,
                    });
                }
            }
            Cmd::Reply {
                gid,
                to,
                qid,
                reply,
            } => {
                if self.clients.on_handler_reply(&mut self.rt, to, qid, &reply) {
                    // A client request's reply went to the client.
                } else if to == self.me() {
                    self.on_reply(gid, self.me(), qid, reply);
                } else if let Some(gs) = self.groups.get_mut(&gid) {
                    gs.out.push_back(Out::P2p {
                        to,
                        payload: group::encode_reply(qid, &reply),
                    });
                }
            }
            Cmd::Checkpoint { gid, view, state } => {
                let state = match self.safe.get_mut(&gid) {
                    Some(sg) => sg.wrap(view.0, state),
                    None => state,
                };
                self.rt.agent_mut().send_checkpoint(gid, view, &state);
            }
            Cmd::Flush { gid, k, done } => match self.groups.get_mut(&gid) {
                Some(gs) if gs.phase == Phase::Active => gs.flushes.push((k, done)),
                _ => {
                    let _ = done.send(Err(self.not_joined(gid)));
                }
            },
            Cmd::Shutdown { done } => self.begin_shutdown(vec![done]),
            Cmd::Terminate { gid, done } => match self.groups.get(&gid).map(|s| s.phase) {
                Some(Phase::Active) => {
                    let seq = self
                        .rt
                        .agent_mut()
                        .request(Command::Terminate { group: gid });
                    self.requests.insert(seq, (gid, ReqKind::Terminate));
                    self.terminations.insert(seq, done);
                }
                _ => {
                    let _ = done.send(Err(self.not_joined(gid)));
                }
            },
            Cmd::ClientQuery {
                gid,
                timeout,
                body,
                done,
            } => self.clients.query(&mut self.rt, gid, timeout, body, done),
            Cmd::ClientStats { done } => {
                let _ = done.send(Ok(self.clients.stats()));
            }
            Cmd::RedirectClient {
                gid,
                client,
                new_rep,
                done,
            } => {
                let _ = done.send(self.clients.redirect(&mut self.rt, gid, client, new_rep));
            }
            Cmd::HasFailed { gid, who } => {
                if self
                    .groups
                    .get(&gid)
                    .is_some_and(|s| s.phase == Phase::Active)
                {
                    self.rt.agent_mut().has_failed(who);
                }
            }
            Cmd::Flav(c) => self.on_flav_cmd(c),
            Cmd::Crash { done } => {
                // Stop at the next loop check, leaving nothing: the oracle's failure detector
                // excludes this member once its heartbeats stop.
                self.shutdown = Some((Instant::now(), vec![done]));
            }
            Cmd::SafeConfig {
                gid,
                threshold,
                durability,
                log_failures,
            } => {
                // A second Group object for a group this process is in already: its Join
                // (next) is refused; the joined group's SafeSend state must stay.
                if self.groups.contains_key(&gid) {
                    return;
                }
                let sg = SafeGroup::new(
                    gid,
                    Address::from(self.me()),
                    threshold,
                    durability,
                    log_failures,
                    Arc::downgrade(&self.inner),
                );
                self.safe.insert(gid, sg);
            }
            Cmd::SafeQuery {
                gid,
                tag,
                want,
                timeout,
                body,
                done,
            } => {
                let active = self.groups.get(&gid).map(|s| s.phase) == Some(Phase::Active);
                if !active {
                    let _ = done.send(Err(self.not_joined(gid)));
                    return;
                }
                self.next_qid += 1;
                let qid = self.next_qid;
                let payload = crate::safe::encode_safe(&tag, qid, &body);
                if let Some(gs) = self.groups.get_mut(&gid) {
                    gs.out.push_back(Out::Query {
                        qid,
                        ordered: true,
                        payload,
                        want,
                        timeout,
                        done,
                    });
                }
            }
            Cmd::SafeDone { gid, tag } => {
                if let Some(sg) = self.safe.get_mut(&gid) {
                    sg.local_done(tag);
                }
            }
            Cmd::SafeLogged { gid, view, tags } => {
                if let Some(sg) = self.safe.get_mut(&gid) {
                    sg.on_logged(view, &tags);
                }
                self.run_safe(gid);
            }
        }
    }

    /// Multicasts the SafeSend completions reported since the last iteration (one batch per
    /// group), for the acceptors' garbage collection.
    fn report_safe_dones(&mut self) {
        let now = Instant::now();
        for (g, sg) in self.safe.iter_mut() {
            let reports = sg.take_done_reports(now);
            if let Some(gs) = self.groups.get_mut(g) {
                for payload in reports {
                    gs.out.push_back(Out::Multicast {
                        ordered: false,
                        payload,
                    });
                }
            }
        }
    }

    /// Carries out what the group's SafeSend core decided, in order.
    fn run_safe(&mut self, g: GroupId) {
        while let Some(out) = self.safe.get_mut(&g).and_then(|s| s.next()) {
            match out {
                SafeOut::Ordered { sender, payload } => {
                    self.on_deliver_now(g, sender.member_id(), MsgKind::Ordered, payload)
                }
                SafeOut::Safe {
                    sender,
                    tag,
                    qid,
                    code,
                    args,
                } => {
                    if let Some(gs) = self.groups.get(&g) {
                        let _ = gs.upcalls.send(Upcall::Safe {
                            sender,
                            tag,
                            code,
                            args,
                            query: (qid != 0).then_some(qid),
                        });
                    }
                }
                SafeOut::Multicast(payload) => {
                    if let Some(gs) = self.groups.get_mut(&g) {
                        gs.out.push_back(Out::Multicast {
                            ordered: false,
                            payload,
                        });
                    }
                }
            }
        }
    }

    fn start_joins(&mut self) {
        if !self.rt.agent().is_registered() {
            return;
        }
        let waiting: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, s)| s.phase == Phase::Unregistered)
            .map(|(g, _)| *g)
            .collect();
        for g in waiting {
            let mode = self.groups[&g].mode;
            let kind = if mode == JoinMode::Create {
                ReqKind::Create
            } else {
                ReqKind::Join
            };
            self.issue(g, kind);
        }
    }

    fn issue(&mut self, g: GroupId, kind: ReqKind) {
        let Some(gs) = self.groups.get_mut(&g) else {
            return;
        };
        gs.phase = Phase::Requested;
        gs.attempts += 1;
        let (name, sig) = (gs.name.clone(), gs.signature.clone());
        let agent = self.rt.agent_mut();
        let seq = match kind {
            ReqKind::Join => agent.join(&name, sig),
            ReqKind::Create => agent.create(&name, sig),
            ReqKind::Leave => agent.leave(g),
            ReqKind::Terminate => agent.request(Command::Terminate { group: g }),
        };
        self.requests.insert(seq, (g, kind));
    }

    /// Moves queued sends into the data plane, in order, until one must wait.
    fn pump(&mut self, g: GroupId) {
        let me = self.me();
        loop {
            let Some(gs) = self.groups.get_mut(&g) else {
                return;
            };
            let Some(front) = gs.out.front() else {
                return;
            };
            if matches!(front, Out::Flav(_)) {
                if !self.pump_flav(g) {
                    return;
                }
                continue;
            }
            let agent = self.rt.agent_mut();
            let r: Result<(), AgentError> = match front {
                Out::Multicast { ordered, payload } => {
                    if *ordered {
                        agent.ordered_send(g, payload)
                    } else {
                        agent.send(g, payload)
                    }
                }
                Out::P2p { to, payload } if *to == me => {
                    // A P2P message to oneself: delivered locally.
                    if let Some((code, args)) = group::decode_msg(payload) {
                        let _ = gs.upcalls.send(Upcall::Message {
                            sender: Address::from(me),
                            kind: MsgKind::P2p,
                            code,
                            args,
                            query: None,
                        });
                    }
                    Ok(())
                }
                Out::P2p { to, payload } => agent.p2p_send(g, *to, payload),
                Out::Query {
                    ordered, payload, ..
                } => {
                    if *ordered {
                        agent.ordered_send(g, payload)
                    } else {
                        agent.send(g, payload)
                    }
                }
                Out::Leave | Out::Flav(_) => Ok(()),
            };
            match r {
                Err(AgentError::Send(SendError::WouldBlock))
                | Err(AgentError::Send(SendError::Wedged(_))) => return,
                _ => {}
            }
            let Some(item) = gs.out.pop_front() else {
                return;
            };
            match (item, r) {
                (Out::Leave, _) => {
                    let seq = agent.leave(g);
                    self.requests.insert(seq, (g, ReqKind::Leave));
                }
                (
                    Out::Query {
                        qid,
                        want,
                        timeout,
                        done,
                        ..
                    },
                    Ok(()),
                ) => {
                    let members: Vec<Address> = self
                        .rt
                        .agent()
                        .view(g)
                        .map(|v| v.members.iter().map(|m| Address::from(*m)).collect())
                        .unwrap_or_default();
                    let collector = ReplyCollector::new(qid, &members, want, timeout, self.now());
                    let pq = PendingQuery { collector, done };
                    if pq.collector.is_done() {
                        self.finish_query(pq);
                    } else if let Some(gs) = self.groups.get_mut(&g) {
                        gs.queries.insert(qid, pq);
                    }
                }
                (Out::Query { done, .. }, Err(e)) => {
                    let _ = done.send(Err(VsyncError::Send(e.to_string())));
                }
                _ => {}
            }
        }
    }

    fn finish_query(&mut self, pq: PendingQuery) {
        let result = pq.collector.finish();
        if let Ok(r) = &result {
            for a in r.failed() {
                self.rt.agent_mut().has_failed(a.member_id());
            }
        }
        let _ = pq.done.send(result.map_err(VsyncError::Query));
    }

    fn on_reply(&mut self, g: GroupId, from: MemberId, qid: u64, reply: ReplyKind) {
        let Some(gs) = self.groups.get_mut(&g) else {
            return;
        };
        let Some(pq) = gs.queries.get_mut(&qid) else {
            return;
        };
        let _ = pq.collector.on_reply(Address::from(from), reply);
        if pq.collector.is_done() {
            if let Some(pq) = gs.queries.remove(&qid) {
                self.finish_query(pq);
            }
        }
    }

    fn check_query_timeouts(&mut self) {
        let now = self.now();
        let mut finished = Vec::new();
        for gs in self.groups.values_mut() {
            let due: Vec<u64> = gs
                .queries
                .iter_mut()
                .filter_map(|(q, pq)| {
                    (pq.collector.on_timeout(now) || pq.collector.is_done()).then_some(*q)
                })
                .collect();
            for q in due {
                if let Some(pq) = gs.queries.remove(&q) {
                    finished.push(pq);
                }
            }
        }
        for pq in finished {
            self.finish_query(pq);
        }
    }

    fn check_flushes(&mut self) {
        let endpoint = self.rt.agent().endpoint();
        for (g, gs) in self.groups.iter_mut() {
            if gs.flushes.is_empty() || !gs.out.is_empty() {
                continue;
            }
            let peers = endpoint.peers(*g).len();
            let next = endpoint.group_stats(*g).map(|s| s.next_seq);
            gs.flushes.retain(|(k, done)| {
                let stable = match (k, next) {
                    (_, None) => true,
                    (None, Some(_)) => endpoint.all_stable(*g),
                    (Some(k), Some(next)) => endpoint
                        .stable_through(*g, (*k).min(peers))
                        .is_none_or(|s| s >= next),
                };
                if stable {
                    let _ = done.send(Ok(()));
                }
                !stable
            });
        }
    }

    /// Handles one agent event; true when the driver must stop.
    fn on_event(&mut self, e: AgentEvent) -> bool {
        match e {
            AgentEvent::View(v) => self.on_view(v),
            AgentEvent::Deliver {
                group,
                view,
                sender,
                kind,
                payload,
            } => {
                if flavours::is_flavoured(kind, &payload) {
                    self.on_flav_deliver(group, view, sender, kind, payload);
                } else {
                    self.on_deliver(group, sender, kind, payload);
                }
            }
            AgentEvent::MakeCheckpoint { group, view } => {
                if let Some(sg) = self.safe.get_mut(&group) {
                    sg.take_snapshot(view.0);
                }
                if let Some(gs) = self.groups.get(&group) {
                    if gs.upcalls.send(Upcall::MakeCheckpoint { view }).is_err() {
                        // Nobody to make it: send an empty state so joiners are not stuck.
                        let state = group::encode_checkpoint(&[]);
                        self.rt.agent_mut().send_checkpoint(group, view, &state);
                    }
                } else {
                    let state = group::encode_checkpoint(&[]);
                    self.rt.agent_mut().send_checkpoint(group, view, &state);
                }
            }
            AgentEvent::LoadCheckpoint { group, state, .. } => {
                let (snapshot, state) = crate::safe::unwrap_checkpoint(state);
                if let (Some(snap), Some(sg)) = (snapshot, self.safe.get_mut(&group)) {
                    let _ = sg.core.restore(&snap);
                }
                if let Some(gs) = self.groups.get(&group) {
                    let _ = gs.upcalls.send(Upcall::LoadCheckpoint { state });
                }
            }
            AgentEvent::Reply { seq, result } => self.on_request_reply(seq, result),
            AgentEvent::Gone { group } => self.on_gone(group),
            // Every holder of the group's state failed before passing it on: the group's
            // state starts afresh at this member (its view follows; no checkpoint is loaded).
            AgentEvent::StateLost { .. } => {}
            AgentEvent::Members { group, members, .. } => {
                self.clients.on_members(group, members);
            }
            AgentEvent::Poisoned(reason) => {
                self.poison(reason.to_string());
                return true;
            }
        }
        false
    }

    fn on_view(&mut self, v: OracleView) {
        let me = self.me();
        let g = v.group;
        let Some(gs) = self.groups.get_mut(&g) else {
            return;
        };
        let view = View::from_oracle(&gs.name, &v, me, &gs.announced);
        for m in &v.left {
            gs.announced.remove(m);
        }
        // Held CausalSends of the old view go before the view callback.
        flavours::on_view(gs, &v, me, &mut self.flav_stats);
        let join_done = if gs.phase == Phase::Requested {
            gs.phase = Phase::Active;
            gs.join_done.take()
        } else {
            None
        };
        let first = join_done.is_some();
        let _ = gs.upcalls.send(Upcall::View { view, join_done });
        self.on_safe_view(&v, first);
        let Some(gs) = self.groups.get_mut(&g) else {
            return;
        };
        let mut finished = Vec::new();
        for m in &v.left {
            let a = Address::from(*m);
            let done: Vec<u64> = gs
                .queries
                .iter_mut()
                .filter_map(|(q, pq)| pq.collector.on_member_failed(a).then_some(*q))
                .collect();
            for q in done {
                if let Some(pq) = gs.queries.remove(&q) {
                    finished.push(pq);
                }
            }
        }
        for pq in finished {
            self.finish_query(pq);
        }
    }

    fn on_deliver(&mut self, g: GroupId, sender: MemberId, kind: MsgKind, payload: Vec<u8>) {
        // SafeSend: its messages, its accepts, and OrderedSends held behind a SafeSend.
        if let Some(sg) = self.safe.get_mut(&g) {
            if sg.on_deliver(Address::from(sender), kind == MsgKind::Ordered, &payload) {
                self.run_safe(g);
                return;
            }
        }
        self.on_deliver_now(g, sender, kind, payload);
    }

    fn on_deliver_now(&mut self, g: GroupId, sender: MemberId, kind: MsgKind, payload: Vec<u8>) {
        let Some(gs) = self.groups.get_mut(&g) else {
            return;
        };
        let Some(&tag) = payload.first() else {
            return;
        };
        match tag {
            group::K_MSG => {
                if let Some((code, args)) = group::decode_msg(&payload) {
                    let _ = gs.upcalls.send(Upcall::Message {
                        sender: Address::from(sender),
                        kind,
                        code,
                        args,
                        query: None,
                    });
                }
            }
            group::K_QUERY => {
                if let Some((qid, code, args)) = group::decode_query(&payload) {
                    let _ = gs.upcalls.send(Upcall::Message {
                        sender: Address::from(sender),
                        kind,
                        code,
                        args,
                        query: Some(qid),
                    });
                }
            }
            group::K_REPLY if kind == MsgKind::P2p => {
                if let Some((qid, reply)) = group::decode_reply(&payload) {
                    self.on_reply(g, sender, qid, reply);
                }
            }
            group::K_LEAVING => {
                gs.announced.insert(sender);
            }
            _ => {}
        }
    }

    /// SafeSend at a view install: re-accept held messages; after a total failure (this
    /// member creates the group alone) replay the durability log's pending messages first.
    fn on_safe_view(&mut self, v: &OracleView, first: bool) {
        let me = self.me();
        let g = v.group;
        let Some(sg) = self.safe.get_mut(&g) else {
            return;
        };
        let members: Vec<Address> = v.members.iter().map(|m| Address::from(*m)).collect();
        sg.install(u64::from(v.id.0), &members);
        let replay = if first && v.members == [me] {
            sg.replay()
        } else {
            Vec::new()
        };
        if let Some(gs) = self.groups.get_mut(&g) {
            for payload in replay.into_iter().rev() {
                gs.out.push_front(Out::Multicast {
                    ordered: true,
                    payload,
                });
            }
        }
        self.run_safe(g);
    }

    fn on_request_reply(&mut self, seq: u64, result: Result<(), String>) {
        let Some((g, kind)) = self.requests.remove(&seq) else {
            return;
        };
        if let Some(done) = self.terminations.remove(&seq) {
            let name = self
                .groups
                .get(&g)
                .map(|s| s.name.clone())
                .unwrap_or_default();
            let _ = done.send(result.map_err(|reason| VsyncError::Refused {
                group: name,
                reason,
            }));
            return;
        }
        let Err(reason) = result else {
            return; // accepted: the view (or Gone) follows
        };
        let Some(gs) = self.groups.get_mut(&g) else {
            return;
        };
        match kind {
            ReqKind::Leave => {
                let name = gs.name.clone();
                for d in gs.leave_done.drain(..) {
                    let _ = d.send(Err(VsyncError::Refused {
                        group: name.clone(),
                        reason: reason.clone(),
                    }));
                }
            }
            ReqKind::Terminate => {}
            ReqKind::Join | ReqKind::Create => {
                if gs.phase != Phase::Requested {
                    return;
                }
                let retry = gs.mode == JoinMode::JoinOrCreate && gs.attempts < 20;
                if retry && kind == ReqKind::Join && reason.starts_with("unknown group") {
                    self.issue(g, ReqKind::Create);
                    return;
                }
                if retry && kind == ReqKind::Create && reason.contains("already exists") {
                    self.issue(g, ReqKind::Join);
                    return;
                }
                self.safe.remove(&g);
                if let Some(gs) = self.groups.remove(&g) {
                    if let Some(d) = gs.join_done {
                        let _ = d.send(Err(VsyncError::Refused {
                            group: gs.name,
                            reason,
                        }));
                    }
                }
            }
        }
    }

    fn on_gone(&mut self, g: GroupId) {
        self.watchdog.forget(g);
        self.safe.remove(&g);
        self.clients.forget_group(g);
        let Some(mut gs) = self.groups.remove(&g) else {
            return;
        };
        flavours::release_causal(&mut gs, &mut self.flav_stats);
        let _ = gs.upcalls.send(Upcall::Gone);
        for d in gs.leave_done {
            let _ = d.send(Ok(()));
        }
        for (_, d) in gs.flushes {
            let _ = d.send(Ok(()));
        }
        for (_, pq) in gs.queries {
            let _ = pq.done.send(Err(VsyncError::NotJoined {
                group: gs.name.clone(),
            }));
        }
        if let Some(d) = gs.join_done {
            let _ = d.send(Err(VsyncError::NotJoined { group: gs.name }));
        }
    }
}

/// The group id of a group name (xxh3 of the name, as the oracle computes it).
pub(crate) fn gid_of(name: &str) -> GroupId {
    group_id(name)
}
