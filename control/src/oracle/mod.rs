//! The ORACLE: the membership service that decides who is alive and computes every group's
//! views, replicated with raft.
//!
//! * [`command`] — the vocabulary: commands (in a compact binary log format), events, views,
//!   typed errors.
//! * [`state`] — the deterministic replicated state machine ([`OracleState`]).
//! * [`storage`] — the raft log store of one replica.
//! * [`replica`] — one replica: raft (`RawNode`) + state machine behind a sans-IO surface.
//! * [`sim`] — a seeded deterministic simulation of a replica cluster over a faulty network,
//!   with the checker that the tests run over thousands of seeds.
//!
//! The embedded default is a single replica ([`ReplicaConfig::single`]) that commits every
//! proposal within the call; production runs three (or five) replicas.

pub mod command;
pub mod replica;
pub mod sim;
pub mod state;
pub mod storage;

pub use command::{
    group_id, Command, CommandError, Event, FailureReason, GroupJoin, GroupLeave, Request,
    Signature, View,
};
pub use replica::{
    Committed, Output, ProposalId, ProposeError, Replica, ReplicaConfig, ReplicaError,
    ReplicaStats, StepError,
};
pub use state::{GroupRecord, MemberStatus, OracleState, ProcessRecord, ProcessStatus};
pub use storage::OracleStorage;
