//! # vsync
//!
//! A Rust implementation of the Isis² group-communication model. This crate is the public
//! library: [`System`] (start, find or start the oracle, shut down) and [`Group`] (typed
//! request handlers, views, watches, Send, OrderedSend, CausalSend, SafeSend, RawSend,
//! P2PSend, RawP2PSend, Query/OrderedQuery/CausalQuery/SafeQuery/RawQuery,
//! P2PQuery/RawP2PQuery, Flush, state transfer, the initializer, persistent and secure groups,
//! HasFailed, Terminate), SafeSend's protocol ([`safe`]) and [`durability`] methods,
//! non-member [`Client`]s, the delivery [`watchdog`], typed marshalling ([`marshal`]), sans-IO
//! building blocks ([`causal`], [`checkpoint_file`]), and the data plane ([`dataplane`]). The
//! control plane (oracle, view change) is the `vsync-control` crate.

#![deny(missing_docs)]

pub use vsync_dataplane as dataplane;

pub mod causal;
pub mod checkpoint_file;
pub mod client;
pub mod durability;
pub mod error;
pub mod group;
pub mod marshal;
mod persistent;
pub mod query;
pub mod safe;
mod secure;
pub mod system;
pub mod watch;
pub mod watchdog;

pub use client::Client;
pub use error::VsyncError;
pub use group::{DeferredReply, Group, IntoArgs, View};
pub use marshal::{Address, Reply};
pub use query::{NReplies, Replies, Timeout, TimeoutAction};
pub use system::flavours::FlavourStats;
pub use system::{System, SystemBuilder, DEFAULT_ORACLE_PORT};
pub use vsync_control::agent::MsgKind;
pub use watch::{WatchEvent, WatchId};
pub use watchdog::ReportSink;
