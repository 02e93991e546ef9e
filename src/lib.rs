//! # vsync
//!
//! A Rust implementation of the Isis² group-communication model. This crate is the public
//! library: [`System`] (start, find or start the oracle, shut down) and [`Group`] (typed
//! request handlers, views, Send, OrderedSend, P2PSend, Query/OrderedQuery, SafeSend /
//! SafeQuery with [`durability`] methods ([`safe`]), Flush, state transfer), typed
//! marshalling ([`marshal`]), sans-IO building blocks still to be wired into `Group`
//! ([`causal`], [`checkpoint_file`]), and the data plane ([`dataplane`]). The control plane (oracle, view change) is the `vsync-control` crate.

#![deny(missing_docs)]

pub use vsync_dataplane as dataplane;

pub mod causal;
pub mod checkpoint_file;
pub mod durability;
pub mod error;
pub mod group;
pub mod marshal;
pub mod query;
pub mod safe;
pub mod system;

pub use error::VsyncError;
pub use group::{Group, IntoArgs, View};
pub use marshal::{Address, Reply};
pub use query::{NReplies, Replies, Timeout, TimeoutAction};
pub use system::{System, SystemBuilder, DEFAULT_ORACLE_PORT};
pub use vsync_control::agent::MsgKind;
