//! The seam between the benchmark harness and the thing being measured.
//!
//! The harness ([`crate::member`]) drives one [`BenchTransport`] per member through a
//! non-blocking event loop: it offers messages with [`BenchTransport::try_send`] (paced
//! by its token bucket), pushes them out with [`BenchTransport::flush`], collects
//! deliveries with [`BenchTransport::poll`], and sleeps in [`BenchTransport::wait`] when
//! there is nothing to do. Each mode has a constructor; [`open`] picks it.
//!
//! * [`Mode::Raw`] — [`crate::raw::RawTransport`]: plain UDP/IP multicast (or unicast
//!   fan-out), one datagram per message, no recovery; loss is only counted.
//! * [`Mode::Reliable`] — the vsync data plane, [`crate::reliable::ReliableTransport`]: one
//!   embedded node per member, driven by the member's thread.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;
use std::time::Duration;

/// Which transport to benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// Plain UDP/IP multicast, the baseline.
    Raw,
    /// The vsync reliable-multicast data plane.
    Reliable,
}

impl Mode {
    /// The mode's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Raw => "raw",
            Mode::Reliable => "reliable",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "raw" => Ok(Mode::Raw),
            "reliable" => Ok(Mode::Reliable),
            other => Err(format!("unknown mode {other:?} (expected raw or reliable)")),
        }
    }
}

/// Result of offering one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// The transport accepted the message (it may still sit in a batch until `flush`).
    Sent,
    /// Not accepted now (socket full / flow control); offer it again later.
    WouldBlock,
}

/// Everything a transport needs to join the benchmark group as one member.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportConfig {
    /// This member's index in `members`.
    pub index: u32,
    /// Every member's unicast address (index order); used for `unicast` fan-out and by
    /// transports that need point-to-point paths (NAKs, acks).
    pub members: Vec<SocketAddrV4>,
    /// The multicast group and port.
    pub group: SocketAddrV4,
    /// Local interface address: IP_MULTICAST_IF and the interface to join on.
    pub iface: Ipv4Addr,
    /// Send one unicast copy to every other member instead of multicasting.
    pub unicast: bool,
    /// IP_MULTICAST_LOOP (needed when several members share one host, e.g. loopback).
    pub multicast_loop: bool,
    /// Largest payload that will be offered (= `--size`).
    pub max_payload: usize,
    /// In-process receive loss to inject, percent (loopback `--loss`).
    pub rx_loss_pct: f64,
    /// Seed for anything random in the transport (loss injection).
    pub seed: u64,
    /// Requested SO_RCVBUF / SO_SNDBUF in bytes (forced past `rmem_max` when root).
    pub socket_buffer: usize,
    /// Messages per `sendmmsg` / `recvmmsg` batch.
    pub batch: usize,
}

/// One member's view of the transport under test. All calls are non-blocking except
/// [`BenchTransport::wait`].
pub trait BenchTransport {
    /// Offers one message (the full benchmark payload). `Sent` means accepted.
    fn try_send(&mut self, payload: &[u8]) -> io::Result<SendOutcome>;

    /// Pushes accepted-but-batched messages towards the network. `WouldBlock` if some
    /// could not go out yet (they stay queued).
    fn flush(&mut self) -> io::Result<SendOutcome>;

    /// Delivers everything that is ready: `on_delivery(sender_index, payload)` per message,
    /// in delivery order. Returns the number of messages delivered.
    fn poll(&mut self, on_delivery: &mut dyn FnMut(u32, &[u8])) -> io::Result<usize>;

    /// Blocks until the transport may have work (readable input, writable output after a
    /// `WouldBlock`, an internal timer) or `timeout` elapses.
    fn wait(&mut self, timeout: Duration) -> io::Result<()>;

    /// Messages accepted by `try_send` whose fate is not settled yet (still batched,
    /// unacknowledged, …). The harness drains until this is 0 or the drain timeout.
    fn pending(&self) -> usize {
        0
    }

    /// Transport counters (NAKs, retransmissions, drops, syscalls, …) by name.
    fn counters(&self) -> BTreeMap<String, u64>;
}

/// Checks, without opening sockets, whether `mode` can run in this build.
pub fn available(mode: Mode) -> io::Result<()> {
    match mode {
        Mode::Raw => Ok(()),
        Mode::Reliable => Ok(()),
    }
}

/// Opens the transport for `mode` as member `cfg.index`.
pub fn open(mode: Mode, cfg: &TransportConfig) -> io::Result<Box<dyn BenchTransport>> {
    match mode {
        Mode::Raw => Ok(Box::new(crate::raw::RawTransport::open(cfg)?)),
        Mode::Reliable => open_reliable(cfg),
    }
}

/// Constructor for [`Mode::Reliable`]: the vsync data plane ([`crate::reliable`]).
pub fn open_reliable(cfg: &TransportConfig) -> io::Result<Box<dyn BenchTransport>> {
    Ok(Box::new(crate::reliable::ReliableTransport::open(cfg)?))
}
