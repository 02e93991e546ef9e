//! The drivers that connect a sans-IO [`Protocol`] to real UDP sockets.
//!
//! An [`Engine`] owns one unicast socket (which also sends all multicast), one receive socket
//! per joined multicast group, an [`AddressBook`] that turns protocol [`Destination`]s into
//! addresses, a preallocated transmit batch, a [`Waker`] and one of two backends:
//!
//! * **io_uring** ([`BackendKind::IoUring`]): one ring per engine with `SINGLE_ISSUER |
//!   DEFER_TASKRUN | COOP_TASKRUN`, multishot `RecvMsg` on every socket fed by a provided-buffer
//!   ring, `SendMsg` SQEs, `EXT_ARG` timeouts for parking, no SQPOLL (see `uring.rs`).
//! * **portable** ([`BackendKind::Portable`]): non-blocking sockets, `recvmmsg`/`sendmmsg`,
//!   `ppoll` on the sockets and the waker's eventfd (see `portable.rs`).
//!
//! Both share socket set-up (`socket.rs`), destination resolution, GSO coalescing and send
//! bookkeeping (`batch.rs`), and GRO splitting, so they behave identically.
//!
//! One call to [`Engine::poll`] is one cooperative duty cycle (Aeron's `INVOKER` mode): receive
//! → timers → transmit → park when idle. The engine never spawns threads.
//!
//! [`Destination`]: crate::protocol::Destination

mod address_book;
mod batch;
mod config;
mod portable;
mod socket;
mod stats;
mod uring;
mod waker;

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddrV4;
use std::time::Duration;

pub use address_book::AddressBook;
pub use config::{BackendChoice, BackendKind, ConfigError, EngineConfig, IdleStrategy};
pub use stats::EngineStats;
pub use waker::Waker;

use crate::protocol::Protocol;
use crate::time::MonotonicClock;
use batch::TxBatch;
use portable::PortableBackend;
use socket::{SocketSet, GRO_PAYLOAD_CAPACITY};
use uring::UringBackend;

/// Why an engine could not be created or driven.
#[derive(Debug)]
pub enum EngineError {
    /// A configuration value is out of range; the message names field, value and range.
    InvalidConfig(String),
    /// [`BackendChoice::IoUring`] was requested and io_uring could not be set up; the message
    /// says which step failed.
    IoUringUnavailable(String),
    /// A system call failed.
    Io {
        /// What the engine was doing.
        context: &'static str,
        /// The kernel's error.
        source: io::Error,
    },
    /// The kernel did not complete io_uring sends in time; the engine is unusable from now on
    /// (its transmit buffers may still be referenced by the kernel).
    Stalled(String),
    /// [`pin_current_thread`] failed.
    Pin(String),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::InvalidConfig(msg) => write!(f, "invalid engine configuration: {msg}"),
            EngineError::IoUringUnavailable(msg) => write!(f, "io_uring unavailable: {msg}"),
            EngineError::Io { context, source } => write!(f, "{context}: {source}"),
            EngineError::Stalled(msg) => write!(f, "engine stalled: {msg}"),
            EngineError::Pin(msg) => write!(f, "cannot pin thread: {msg}"),
        }
    }
}

impl std::error::Error for EngineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EngineError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

enum Backend {
    Uring(Box<UringBackend>),
    Portable(Box<PortableBackend>),
}

/// One member's socket driver; see the module docs.
///
/// An engine is bound to the thread that created it (it is `!Send`): the io_uring backend uses
/// a `SINGLE_ISSUER` ring, which only its creating thread may submit to. Create it on the
/// thread (ideally pinned with [`pin_current_thread`]) that will call [`Engine::poll`].
pub struct Engine {
    // Declared first so it is dropped (requests cancelled) before the sockets close.
    backend: Backend,
    sockets: SocketSet,
    config: EngineConfig,
    book: AddressBook,
    clock: MonotonicClock,
    waker: Waker,
    tx: TxBatch,
    stats: EngineStats,
    local_addr: SocketAddrV4,
    uring_fallback: Option<String>,
    stalled: Option<String>,
    loss_rng: crate::rng::Rng,
    _single_thread: PhantomData<*mut ()>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("backend", &self.backend_kind())
            .field("local_addr", &self.local_addr)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens the sockets and sets up the backend. Must be called on the thread that will drive
    /// the engine (see the type docs).
    pub fn new(config: EngineConfig) -> Result<Engine, EngineError> {
        config.validate().map_err(EngineError::InvalidConfig)?;
        let io = |context| move |source| EngineError::Io { context, source };
        let (unicast, features) = socket::open_unicast(&config).map_err(io("unicast socket"))?;
        let local_addr = match unicast.local_addr().map_err(io("getsockname"))?.as_socket() {
            Some(std::net::SocketAddr::V4(addr)) => addr,
            _ => {
                return Err(EngineError::InvalidConfig(
                    "unicast socket is not IPv4".into(),
                ))
            }
        };
        let sockets = SocketSet::new(unicast);
        let waker = Waker::new().map_err(io("eventfd"))?;
        let payload_capacity = if features.gro {
            GRO_PAYLOAD_CAPACITY
        } else {
            config.mtu
        };
        let try_uring = |sockets: &SocketSet| {
            UringBackend::new(
                sockets,
                waker.clone(),
                config.recv_buffers,
                payload_capacity,
                features.gro,
                config.batch,
            )
        };
        let portable = || {
            Backend::Portable(Box::new(PortableBackend::new(
                config.batch,
                payload_capacity,
                features.gro,
                waker.clone(),
            )))
        };
        let mut uring_fallback = None;
        let backend = match config.backend {
            BackendChoice::Portable => portable(),
            BackendChoice::IoUring => Backend::Uring(Box::new(
                try_uring(&sockets).map_err(EngineError::IoUringUnavailable)?,
            )),
            BackendChoice::Auto => match try_uring(&sockets) {
                Ok(uring) => Backend::Uring(Box::new(uring)),
                Err(reason) => {
                    uring_fallback = Some(reason);
                    portable()
                }
            },
        };
        let stats = EngineStats {
            gso_enabled: features.gso,
            gro_enabled: features.gro,
            recv_buffer_bytes: features.recv_buffer_bytes,
            send_buffer_bytes: features.send_buffer_bytes,
            ..EngineStats::default()
        };
        Ok(Engine {
            backend,
            sockets,
            tx: TxBatch::new(config.batch, config.mtu, features.gso),
            config,
            book: AddressBook::new(),
            clock: MonotonicClock::new(),
            waker,
            stats,
            local_addr,
            uring_fallback,
            stalled: None,
            loss_rng: crate::rng::Rng::new(u64::from(local_addr.port()) ^ 0x1055),
            _single_thread: PhantomData,
        })
    }

    /// The backend in use.
    pub fn backend_kind(&self) -> BackendKind {
        match self.backend {
            Backend::Uring(_) => BackendKind::IoUring,
            Backend::Portable(_) => BackendKind::Portable,
        }
    }

    /// Why [`BackendChoice::Auto`] fell back to the portable backend (the io_uring set-up step
    /// that failed), if it did.
    pub fn io_uring_fallback_reason(&self) -> Option<&str> {
        self.uring_fallback.as_deref()
    }

    /// The bound unicast address, with the port resolved.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local_addr
    }

    /// The configuration the engine was built with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Starts receiving `group` (a multicast address and port): opens a socket bound to it with
    /// `SO_REUSEADDR` + `SO_REUSEPORT` and `IP_MULTICAST_ALL` off, joined on the configured
    /// interface, so several members on one host each receive every datagram. Idempotent.
    pub fn join_multicast(&mut self, group: SocketAddrV4) -> io::Result<()> {
        if self.sockets.find_group(group).is_some() {
            return Ok(());
        }
        let socket = socket::open_multicast(&self.config, group, self.stats.gro_enabled)?;
        self.sockets.insert(socket, group);
        // The io_uring backend arms the new socket's receive at the start of the next cycle;
        // the portable one polls every socket in the set anyway.
        Ok(())
    }

    /// Stops receiving `group`: drops the membership and closes its socket. Idempotent.
    pub fn leave_multicast(&mut self, group: SocketAddrV4) -> io::Result<()> {
        let Some(index) = self.sockets.find_group(group) else {
            return Ok(());
        };
        if let Some(slot) = self.sockets.get(index) {
            socket::leave_group(&slot.socket, group, self.config.multicast_interface);
            if let Backend::Uring(uring) = &mut self.backend {
                uring.remove_socket(index, slot.generation);
            }
        }
        self.sockets.remove(index);
        Ok(())
    }

    /// The routing table for protocol destinations.
    pub fn address_book(&mut self) -> &mut AddressBook {
        &mut self.book
    }

    /// The clock whose [`crate::Timestamp`]s the engine passes to the protocol.
    pub fn clock(&self) -> &MonotonicClock {
        &self.clock
    }

    /// A handle that makes a parked [`Engine::poll`] return promptly, from any thread.
    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// Counters and the socket features in use.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// One cooperative duty cycle: collect completed receives (feeding each datagram to
    /// `protocol.handle_datagram`; GRO super-buffers are split into segments), run
    /// `handle_timeout` if due, drain `poll_transmit` into the preallocated batch (`batch ×
    /// mtu` arena, no allocation per datagram) and send it (io_uring `SendMsg` SQEs /
    /// `sendmmsg`; consecutive equal-length datagrams to the same destination coalesced into
    /// one `UDP_SEGMENT` send; plain sends after `EIO`, remembered), then — if nothing was done
    /// and the idle strategy is [`IdleStrategy::Park`] — wait until a datagram arrives, the
    /// [`Waker`] fires, the protocol deadline passes or `max_wait` elapses, and run one more
    /// cycle to handle what woke it.
    ///
    /// Returns how many datagrams were received plus sent (0 = idle). Datagrams a full socket
    /// buffer refused are kept and sent first on a later cycle (no new ones are drawn from the
    /// protocol meanwhile).
    pub fn poll<P: Protocol>(
        &mut self,
        protocol: &mut P,
        max_wait: Duration,
    ) -> Result<usize, EngineError> {
        if let Some(reason) = &self.stalled {
            return Err(EngineError::Stalled(reason.clone()));
        }
        let (count, progress) = self.cycle(protocol)?;
        if progress {
            return Ok(count);
        }
        match self.config.idle {
            IdleStrategy::Spin => return Ok(count),
            IdleStrategy::Yield => {
                std::thread::yield_now();
                return Ok(count);
            }
            IdleStrategy::Park => {}
        }
        if max_wait.is_zero() {
            return Ok(count);
        }
        let mut wait = max_wait;
        if let Some(deadline) = protocol.poll_timeout() {
            let now = self.clock.now();
            if deadline <= now {
                let (more, _) = self.cycle(protocol)?;
                return Ok(count + more);
            }
            wait = wait.min(deadline - now);
        }
        let want_writable = self.tx.is_pending();
        match &mut self.backend {
            Backend::Uring(b) => b.park(&self.sockets, wait, want_writable, &mut self.stats)?,
            Backend::Portable(b) => b.park(&self.sockets, wait, want_writable, &mut self.stats)?,
        }
        let (more, _) = self.cycle(protocol)?;
        Ok(count + more)
    }

    /// Receive, timers, transmit. Returns (datagrams received + sent, whether anything
    /// happened at all).
    fn cycle<P: Protocol>(&mut self, protocol: &mut P) -> Result<(usize, bool), EngineError> {
        let now = self.clock.now();
        let loss = self.config.rx_loss;
        let rng = &mut self.loss_rng;
        let mut injected = 0u64;
        let mut sink = |from, datagram: &mut [u8]| {
            if loss > 0.0 && rng.chance(loss) {
                injected += 1;
                return;
            }
            protocol.handle_datagram(now, from, datagram)
        };
        let received = match &mut self.backend {
            Backend::Uring(b) => b.receive(&self.sockets, &mut self.stats, &mut sink)?,
            Backend::Portable(b) => b.receive(&self.sockets, &mut self.stats, &mut sink)?,
        };
        self.stats.injected_drops += injected;
        let now = self.clock.now();
        let mut fired = false;
        if protocol
            .poll_timeout()
            .is_some_and(|deadline| deadline <= now)
        {
            protocol.handle_timeout(now);
            self.stats.timeouts += 1;
            fired = true;
        }
        let sent_before = self.stats.datagrams_sent;
        let produced = self.tx.fill(protocol, now, &self.book, &mut self.stats);
        self.transmit()?;
        let sent = (self.stats.datagrams_sent - sent_before) as usize;
        let backlog = match &mut self.backend {
            Backend::Uring(b) => b.take_woken() || b.has_backlog(),
            Backend::Portable(_) => false,
        };
        Ok((
            received + sent,
            received > 0 || produced > 0 || sent > 0 || fired || backlog,
        ))
    }

    /// Sends the batch's pending ops; at most a few rounds (a GSO fallback re-sends once).
    fn transmit(&mut self) -> Result<(), EngineError> {
        for _ in 0..3 {
            if !self.tx.is_pending() {
                break;
            }
            self.tx.prepare();
            match &mut self.backend {
                Backend::Uring(b) => {
                    if let Err(e) = b.send(&self.sockets, &mut self.tx, &mut self.stats) {
                        // Some SendMsg SQEs may still reference the batch: never reuse it.
                        self.stalled = Some(e.to_string());
                        return Err(e);
                    }
                }
                Backend::Portable(b) => b.send(&self.sockets, &mut self.tx, &mut self.stats),
            }
            if !self.tx.complete(&mut self.stats) {
                break;
            }
        }
        Ok(())
    }
}

/// Pins the calling thread to CPU `core`. Reads the allowed set (`sched_getaffinity`, via
/// `core_affinity::get_core_ids`) first and fails if `core` is not in it or the kernel refuses.
/// Note that once a thread is pinned its allowed set is that one core.
pub fn pin_current_thread(core: usize) -> Result<(), EngineError> {
    let ids = core_affinity::get_core_ids()
        .ok_or_else(|| EngineError::Pin("cannot read this thread's CPU affinity".into()))?;
    let Some(id) = ids.iter().copied().find(|id| id.id == core) else {
        let allowed: Vec<usize> = ids.iter().map(|id| id.id).collect();
        return Err(EngineError::Pin(format!(
            "core {core} is not in the allowed set {allowed:?}"
        )));
    };
    if core_affinity::set_for_current(id) {
        Ok(())
    } else {
        Err(EngineError::Pin(format!(
            "the kernel refused to pin to core {core}"
        )))
    }
}
