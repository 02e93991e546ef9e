//! # vsync-dataplane
//!
//! The data plane of vsync: everything between "an application handed us bytes for a group"
//! and "a member's application reads those bytes, in order, exactly once".
//!
//! * [`wire`] — the datagram format (zerocopy headers, frames, xxh3 / AES-256-GCM sealing,
//!   replay windows, drop counters). Decoding never panics.
//! * [`protocol`] — the sans-IO reliable-multicast core ([`protocol::Endpoint`]): FIFO streams
//!   per sender, packing, fragmentation, NAK recovery, receipt reports and stability, flow
//!   control, leaky-bucket rate limiting, raw sends and point-to-point streams. No sockets,
//!   clocks or randomness of its own: time and a seed come in, datagrams and deliveries go out.
//! * [`engine`] — the drivers that connect an endpoint to real sockets: an io_uring backend
//!   and a portable `recvmmsg`/`sendmmsg` + `poll` backend, plus socket set-up.
//! * [`ring`] — lock-free single-producer/single-consumer byte rings, the zero-copy in-process
//!   API between application threads and engine threads.
//! * [`node`] — one member's engine thread: endpoint + engine + rings, the thing applications
//!   embed.
//! * [`sim`] — the seeded deterministic network simulator that drives the same protocol code.
//! * [`audit`] — the optional JSON-lines delivery audit log.

#![deny(missing_docs)]

pub mod audit;
pub mod config;
pub mod engine;
pub mod ids;
pub mod node;
pub mod protocol;
pub mod ring;
pub mod rng;
pub mod sim;
pub mod time;
pub mod wire;

pub use ids::{GroupId, MemberId, ViewId};
pub use protocol::{CutEntry, ViewChangeError, WedgeReport};
pub use time::Timestamp;
