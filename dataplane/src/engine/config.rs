//! Engine configuration: [`EngineConfig`], its enums, environment parsing and validation.
//!
//! Environment variables (read by [`EngineConfig::from_env`], or through any lookup function by
//! [`EngineConfig::from_lookup`], which tests use to avoid mutating the process environment):
//!
//! | variable       | values                     | field                                |
//! |----------------|----------------------------|--------------------------------------|
//! | `VSYNC_ENGINE` | `auto`, `uring`, `portable` | [`EngineConfig::backend`]           |
//! | `VSYNC_TTL`    | `0`..=`255`                | [`EngineConfig::multicast_ttl`]      |
//! | `VSYNC_IDLE`   | `spin`, `yield`, `park`    | [`EngineConfig::idle`]               |
//!
//! Unset or empty variables keep the defaults of [`EngineConfig::default`].

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Which I/O backend an engine asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// io_uring when it can be set up (the ring builds with
    /// `SINGLE_ISSUER | DEFER_TASKRUN | COOP_TASKRUN`, multishot `RecvMsg` is supported and a
    /// provided-buffer ring registers), otherwise the portable backend.
    #[default]
    Auto,
    /// io_uring or an error: [`crate::engine::Engine::new`] fails with
    /// [`crate::engine::EngineError::IoUringUnavailable`] rather than falling back.
    IoUring,
    /// `recvmmsg`/`sendmmsg` on non-blocking sockets and `ppoll(2)` for waiting.
    Portable,
}

/// The backend an engine actually runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// One io_uring per engine: multishot `RecvMsg` with a provided-buffer ring, `SendMsg` SQEs.
    IoUring,
    /// `recvmmsg`/`sendmmsg` + `ppoll(2)`.
    Portable,
}

/// What [`crate::engine::Engine::poll`] does when a duty cycle found no work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IdleStrategy {
    /// Return at once; the caller spins. Lowest latency, burns the core.
    Spin,
    /// Call `std::thread::yield_now()` and return; never blocks in the kernel.
    Yield,
    /// Block in the kernel until a datagram arrives, the [`crate::engine::Waker`] fires, the
    /// protocol deadline passes or `max_wait` elapses.
    #[default]
    Park,
}

/// Everything an [`crate::engine::Engine`] needs to open its sockets and size its batches.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// Which backend to run (env `VSYNC_ENGINE`).
    pub backend: BackendChoice,
    /// Address of the unicast socket, which also sends all multicast. Default `127.0.0.1:0`.
    pub unicast_bind: SocketAddrV4,
    /// Interface for multicast: always applied with `IP_MULTICAST_IF` on the sending socket and
    /// used for every join, so no multicast can leave through the default route. Default
    /// `127.0.0.1`.
    pub multicast_interface: Ipv4Addr,
    /// `IP_MULTICAST_TTL` (env `VSYNC_TTL`). Default 1: never beyond the local link.
    pub multicast_ttl: u32,
    /// `IP_MULTICAST_LOOP`: deliver our own multicast to sockets on this host (same-host
    /// members). Default `true`.
    pub multicast_loop: bool,
    /// Requested `SO_RCVBUF`/`SO_SNDBUF` in bytes. `SO_*BUFFORCE` is tried first (needs
    /// `CAP_NET_ADMIN`), then the plain option; the effective size is recorded in
    /// [`crate::engine::EngineStats`] and a clamp is reported once on stderr. Default 8 MiB.
    pub socket_buffer_bytes: usize,
    /// Largest datagram the protocol writes, 576..=65507. Default 1472.
    pub mtu: usize,
    /// Coalesce consecutive equal-length datagrams to one destination into `UDP_SEGMENT` sends.
    /// Disabled silently (and recorded) where the kernel refuses. Default `true`.
    pub gso: bool,
    /// Receive coalesced `UDP_GRO` trains and split them. Disabled silently (and recorded) where
    /// the kernel refuses. Default `true`.
    pub gro: bool,
    /// What an idle duty cycle does (env `VSYNC_IDLE`).
    pub idle: IdleStrategy,
    /// Most datagrams per receive or transmit batch, 1..=1024. Default 64.
    pub batch: usize,
    /// Receive buffers: provided-buffer ring entries (io_uring). A power of two, 8..=32768.
    /// Each buffer holds one datagram, or one GRO train when `gro` is on (≈ 64 KiB each).
    /// Default 128.
    pub recv_buffers: usize,
    /// Test and benchmark aid: drop this fraction (0.0..=1.0) of received datagrams before the
    /// protocol sees them, like a lossy network (Aeron's loss interceptor). 0 in production.
    /// Env `VSYNC_RX_LOSS_PCT` (percent).
    pub rx_loss: f64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            backend: BackendChoice::Auto,
            unicast_bind: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            multicast_interface: Ipv4Addr::LOCALHOST,
            multicast_ttl: 1,
            multicast_loop: true,
            socket_buffer_bytes: 8 << 20,
            mtu: 1472,
            gso: true,
            gro: true,
            idle: IdleStrategy::Park,
            batch: 64,
            recv_buffers: 128,
            rx_loss: 0.0,
        }
    }
}

/// A malformed engine environment variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable's name, e.g. `VSYNC_ENGINE`.
    pub variable: &'static str,
    /// The value found.
    pub value: String,
    /// What would have been accepted, e.g. `one of auto, uring, portable`.
    pub expected: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={}: expected {}",
            self.variable, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

impl EngineConfig {
    /// The defaults overridden by `VSYNC_ENGINE`, `VSYNC_TTL` and `VSYNC_IDLE` from the process
    /// environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`EngineConfig::from_env`], reading variables through `lookup` (returns `None` for
    /// an unset variable). Values are trimmed and case-insensitive; empty means unset.
    pub fn from_lookup<F>(lookup: F) -> Result<Self, ConfigError>
    where
        F: Fn(&str) -> Option<String>,
    {
        let mut config = EngineConfig::default();
        let get = |name: &'static str| {
            lookup(name).and_then(|raw| {
                let value = raw.trim().to_ascii_lowercase();
                (!value.is_empty()).then_some((name, raw, value))
            })
        };
        if let Some((variable, raw, value)) = get("VSYNC_ENGINE") {
            config.backend = match value.as_str() {
                "auto" => BackendChoice::Auto,
                "uring" | "io_uring" | "iouring" => BackendChoice::IoUring,
                "portable" => BackendChoice::Portable,
                _ => {
                    return Err(ConfigError {
                        variable,
                        value: raw,
                        expected: "one of auto, uring, portable",
                    })
                }
            };
        }
        if let Some((variable, raw, value)) = get("VSYNC_TTL") {
            config.multicast_ttl = match value.parse::<u32>() {
                Ok(ttl) if ttl <= 255 => ttl,
                _ => {
                    return Err(ConfigError {
                        variable,
                        value: raw,
                        expected: "an integer in 0..=255",
                    })
                }
            };
        }
        if let Some((variable, raw, value)) = get("VSYNC_IDLE") {
            config.idle = match value.as_str() {
                "spin" => IdleStrategy::Spin,
                "yield" => IdleStrategy::Yield,
                "park" => IdleStrategy::Park,
                _ => {
                    return Err(ConfigError {
                        variable,
                        value: raw,
                        expected: "one of spin, yield, park",
                    })
                }
            };
        }
        if let Some((variable, raw, value)) = get("VSYNC_RX_LOSS_PCT") {
            config.rx_loss = match value.parse::<f64>() {
                Ok(pct) if (0.0..=100.0).contains(&pct) => pct / 100.0,
                _ => {
                    return Err(ConfigError {
                        variable,
                        value: raw,
                        expected: "a percentage in 0..=100",
                    })
                }
            };
        }
        Ok(config)
    }

    /// Checks ranges; the message names the field, its value and the accepted range.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.rx_loss) {
            return Err(format!(
                "rx_loss={}: expected a fraction in 0..=1",
                self.rx_loss
            ));
        }
        if !(576..=65507).contains(&self.mtu) {
            return Err(format!("mtu={}: expected 576..=65507", self.mtu));
        }
        if !(1..=1024).contains(&self.batch) {
            return Err(format!("batch={}: expected 1..=1024", self.batch));
        }
        if self.multicast_ttl > 255 {
            return Err(format!(
                "multicast_ttl={}: expected 0..=255",
                self.multicast_ttl
            ));
        }
        if !(8..=32768).contains(&self.recv_buffers) || !self.recv_buffers.is_power_of_two() {
            return Err(format!(
                "recv_buffers={}: expected a power of two in 8..=32768",
                self.recv_buffers
            ));
        }
        if self.multicast_interface.is_unspecified() || self.multicast_interface.is_multicast() {
            return Err(format!(
                "multicast_interface={}: expected a unicast interface address",
                self.multicast_interface
            ));
        }
        Ok(())
    }
}
