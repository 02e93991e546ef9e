//! # vsync-control
//!
//! The control plane of vsync: the ORACLE membership service, failure detection and
//! Dr. Multicast address mapping, as sans-IO state machines (no sockets, threads or clocks
//! inside; time, seeds and bytes come in, bytes and decisions go out).
//!
//! * [`oracle`] — the replicated membership service: commands, the deterministic state
//!   machine that computes views, raft replication (`raft` crate `RawNode`), and a seeded
//!   simulation of a replica cluster.
//! * [`fd`] — the heartbeat failure detector (plus application-reported failures).
//! * [`drmc`] — Dr. Multicast: the mapping of logical groups onto at most
//!   `VSYNC_MAXIPMCADDRS` physical IP-multicast addresses.
//! * [`config`] — control-plane configuration from `VSYNC_*` variables, with validation.
//! * [`codec`] — the binary encoding primitives used by the oracle's log entries.
//!
//! Not here yet: the data-plane view change (wedge, flush, install) that turns an oracle
//! decision into a view members deliver in.

#![deny(missing_docs)]

pub mod agent;
pub mod codec;
pub mod config;
pub mod drmc;
pub mod fd;
pub mod oracle;
pub mod proto;
pub mod runtime;
pub mod service;
pub mod system_sim;
