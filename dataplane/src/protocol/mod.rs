//! The sans-IO reliable-multicast core.
//!
//! [`Endpoint`] is one member's protocol state for all the groups it belongs to. Drivers feed it
//! received datagrams and the current time, and pull out datagrams to transmit, deliveries and
//! the next deadline. Every driver (the io_uring engine, the portable engine, the simulator)
//! implements the same loop through the [`Protocol`] trait:
//!
//! ```text
//! loop {
//!     for each received datagram: protocol.handle_datagram(now, from, &mut bytes)
//!     if now >= protocol.poll_timeout(): protocol.handle_timeout(now)
//!     while let Some(t) = protocol.poll_transmit(now, &mut buf): send buf[..t.len] to t.destination
//!     deliver what the endpoint has ready (Endpoint::poll_delivery)
//!     sleep until the next datagram or protocol.poll_timeout()
//! }
//! ```

use std::net::SocketAddr;

use crate::{GroupId, MemberId, Timestamp};

mod endpoint;
mod rate_limit;
mod recv_stream;
mod send_stream;
pub mod tree;

pub use endpoint::{
    CutEntry, Delivery, DeliveryKind, DeliverySink, Endpoint, EndpointStats, GroupSpec, GroupStats,
    SendError, ViewChangeError, WedgeReport,
};
pub use rate_limit::{RateLimit, RateLimiter, MIN_PERIOD};

/// Where a datagram produced by [`Protocol::poll_transmit`] must go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Destination {
    /// Every member of the group: the group's IP-multicast address, or unicast fan-out to each
    /// member other than the sender when the group has no multicast address.
    Group(GroupId),
    /// One member, by unicast.
    Member(MemberId),
}

/// A datagram the protocol wants sent: the bytes are `buf[..len]` of the buffer passed to
/// [`Protocol::poll_transmit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: Destination,
    /// Its length in bytes (never more than the configured MTU).
    pub len: usize,
}

/// The interface every driver uses to run a sans-IO protocol core.
pub trait Protocol {
    /// Processes one received datagram. The buffer may be modified (decrypted in place).
    /// Malformed or unauthenticated input is dropped and counted, never a panic.
    fn handle_datagram(&mut self, now: Timestamp, from: SocketAddr, datagram: &mut [u8]);
    /// Writes the next datagram to send into `buf` (at least the configured MTU long) and says
    /// where it goes; `None` when there is nothing to send now.
    fn poll_transmit(&mut self, now: Timestamp, buf: &mut [u8]) -> Option<Transmit>;
    /// The next time [`Protocol::handle_timeout`] must be called, if any.
    fn poll_timeout(&self) -> Option<Timestamp>;
    /// Runs timers that are due at `now` (NAK, retransmission, receipt reports, rate buckets).
    fn handle_timeout(&mut self, now: Timestamp);
}
