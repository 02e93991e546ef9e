//! The ORACLE: the membership service that decides who is alive and computes every group's
//! views, replicated with raft.
//!
//! * [`command`] — the vocabulary: commands (in a compact binary log format), events, views,
//!   typed errors.
//! * [`state`] — the deterministic replicated state machine ([`OracleState`]).
//! * [`storage`] — the raft log store of one replica (with snapshot-based compaction).
//! * [`durable`] — the same store written through to a directory, for restarts.
//! * [`replica`] — one replica: raft (`RawNode`) + state machine behind a sans-IO surface;
//!   pre-vote, check-quorum, deterministic election timeouts, log compaction, hostile-input
//!   filters.
//! * [`sim`] — a seeded deterministic simulation of a replica cluster over a faulty network,
//!   with the checker that the tests run over thousands of seeds.
//!
//! The embedded default is a single replica ([`ReplicaConfig::single`]) that commits every
//! proposal within the call; production runs three (or five) replicas.
//!
//! ```
//! use vsync_control::oracle::{Command, Replica, ReplicaConfig};
//! use vsync_dataplane::MemberId;
//!
//! let mut oracle = Replica::new(ReplicaConfig::single()).unwrap();
//! let id = oracle
//!     .propose(Command::RegisterProcess { member: MemberId::new(7, 1), addr: None })
//!     .unwrap();
//! let out = oracle.ready();
//! assert_eq!(out.committed[0].proposal, Some(id));
//! assert!(out.messages.is_empty(), "a single replica sends nothing");
//! ```
//!
//! Not here yet: turning committed events into installed views in the data plane (wedge,
//! flush, install), the transport between replicas, and oracle membership changes (adding or
//! replacing a replica, which raft supports through configuration changes).

pub mod command;
pub mod durable;
pub mod replica;
pub mod sim;
pub mod state;
pub mod storage;

pub use command::{
    group_id, Command, CommandError, CutPoint, Event, FailureReason, GroupJoin, GroupLeave,
    Request, Signature, View,
};
pub use replica::{
    Committed, Output, ProposalId, ProposeError, Replica, ReplicaConfig, ReplicaError,
    ReplicaStats, StepError,
};
pub use state::{FlushRound, GroupRecord, MemberStatus, OracleState, ProcessRecord, ProcessStatus};
pub use storage::OracleStorage;
