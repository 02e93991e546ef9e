//! # vsync
//!
//! A Rust implementation of the Isis² group-communication model. This crate is the public
//! library; today it re-exports the data plane ([`dataplane`]); the group programming model
//! (System, Group, View, the Send and Query families) is built on top of it.

pub use vsync_dataplane as dataplane;

pub mod causal;
pub mod checkpoint_file;
pub mod durability;
pub mod error;
pub mod group;
pub mod marshal;
pub mod query;
pub mod system;

pub use error::VsyncError;
pub use group::{Group, IntoArgs, View};
pub use marshal::{Address, Reply};
pub use query::{NReplies, Replies, Timeout, TimeoutAction};
pub use system::{System, SystemBuilder, DEFAULT_ORACLE_PORT};
pub use vsync_control::agent::MsgKind;
