//! One oracle replica ([`Replica`]): the [`OracleState`] machine replicated with raft
//! (the `raft` crate's sans-IO [`RawNode`]), behind a small sans-IO surface.
//!
//! # Driving a replica
//!
//! The replica has no sockets, threads or clocks. Its driver:
//!
//! 1. calls [`Replica::tick`] every tick interval (`VSYNC_ORACLE_TICK_MS`, default 100 ms:
//!    leader heartbeats every [`ReplicaConfig::heartbeat_tick`] = 2 ticks, elections after
//!    a per-replica timeout in `election_tick .. 2 × election_tick` = 1–2 s);
//! 2. passes every raft datagram received from a peer replica to [`Replica::step`];
//! 3. submits commands with [`Replica::propose`] / [`Replica::propose_request`] (only the
//!    leader accepts them; others answer [`ProposeError::NotLeader`] with a hint);
//! 4. after any of these, takes [`Replica::ready`]: raft messages to send to peers, and the
//!    committed commands in log order, each with its result and, for this replica's own
//!    proposals, the [`ProposalId`] it returned.
//!
//! # Storage ordering
//!
//! Each raft `Ready` is handled in the order the crate documents: leader messages go out at
//! once; committed entries (already durable) are applied; new entries and then the
//! `HardState` are written to [`OracleStorage`]; only then are the "persisted" messages
//! (votes, append responses) released; after `advance` the new commit index is stored before
//! the entries it covers are applied. Because this all happens inside one call, a replica that
//! crashes between calls restarts ([`Replica::restart`]) from a consistent store.
//!
//! # Determinism
//!
//! raft 0.7 draws its randomized election timeout from `rand::thread_rng()` whenever it resets
//! its election timer. After every call into raft, while the timer is freshly reset (elapsed
//! 0), the replica overrides that draw with one from its own seeded [`Rng`] in
//! `election_tick .. 2 × election_tick` (no tick happens in between, so raft's own draw is
//! never used). A fresh draw per election also breaks ties: fixed per-replica timeouts let
//! two replicas with equal timeouts split the vote forever. The crate's own maps use a
//! fixed-seed hasher, so given the same seeds and the same sequence of calls a replica
//! behaves identically.
//!
//! # Safety properties
//!
//! `pre_vote` and `check_quorum` are on: a replica cut off from the majority cannot disrupt
//! it when it returns, and a leader that loses its quorum steps down within an election
//! timeout. A side without a majority can commit nothing, so there is never a split brain;
//! losing any minority of replicas loses no committed command.
//!
//! # Log compaction
//!
//! Every [`ReplicaConfig::snapshot_interval`] applied entries the replica stores the encoded
//! state machine as a raft snapshot and drops the entries it covers. A follower too far
//! behind (or a replacement replica with empty storage) is sent the snapshot; installing it
//! replaces the follower's state machine, which [`Output::snapshot`] reports (the entries it
//! covers are then not reported one by one). A restarted replica starts from its stored
//! snapshot and replays the entries after it. raft-rs pauses a follower while a snapshot is
//! in flight until told the outcome; since datagrams can be lost silently, the leader
//! reports a snapshot as failed (and so resends) if the follower is still waiting for it
//! after two election timeouts.
//!
//! # Hostile input
//!
//! [`Replica::step`] caps the datagram size, counts and refuses unparsable bytes, messages not
//! addressed to this replica or not from a configured peer, snapshots whose configuration is
//! not this cluster's or whose state does not decode, and heartbeats claiming a commit index
//! beyond the local log. raft panics on some internally inconsistent messages; as a last line
//! of defence the step runs under `catch_unwind`, and a replica that caught a panic refuses
//! all further calls ([`StepError::Broken`]) rather than run on corrupt state. Raft traffic is
//! meant to travel only over the authenticated control channel (see the research note on the
//! protobuf 2 advisory): these checks are defence in depth, not authentication.

use std::panic::{catch_unwind, AssertUnwindSafe};

use protobuf::Message as _;
use std::collections::BTreeMap;

use raft::eraftpb::{Entry, EntryType, Message, MessageType};
use raft::{Config, ProgressState, RawNode, SnapshotStatus, StateRole};
use vsync_dataplane::rng::Rng;

use super::command::{Command, CommandError, Event, Request, MAX_REQUEST_BYTES};
use super::state::OracleState;
use super::storage::OracleStorage;

/// Default [`ReplicaConfig::snapshot_interval`]: compact every 10 000 applied entries.
pub const DEFAULT_SNAPSHOT_INTERVAL: u64 = 10_000;

/// Default cap on one raft datagram accepted by [`Replica::step`] (bytes).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Configuration of one replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// This replica's id (1-based, unique in the cluster).
    pub id: u64,
    /// Every replica's id, this one included.
    pub peers: Vec<u64>,
    /// Leader heartbeat interval in ticks.
    pub heartbeat_tick: usize,
    /// Base election timeout in ticks; each replica's timeout is drawn from
    /// `election_tick .. 2 × election_tick`.
    pub election_tick: usize,
    /// Seed of the replica's random choices (its election timeout).
    pub seed: u64,
    /// Largest raft datagram [`Replica::step`] accepts.
    pub max_message_bytes: usize,
    /// Largest batch of entries raft puts in one append message (bytes).
    pub max_append_bytes: u64,
    /// Most append messages in flight per follower.
    pub max_inflight_msgs: usize,
    /// Compact the log into a snapshot every this many applied entries (0 = never).
    pub snapshot_interval: u64,
}

impl ReplicaConfig {
    /// A replica of a cluster of `peers` with defaults for a data centre (ticks of 100 ms:
    /// heartbeats every 200 ms, elections after 1–2 s).
    pub fn new(id: u64, peers: Vec<u64>, seed: u64) -> Self {
        ReplicaConfig {
            id,
            peers,
            heartbeat_tick: 2,
            election_tick: 10,
            seed,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_append_bytes: 1 << 20,
            max_inflight_msgs: 256,
            snapshot_interval: DEFAULT_SNAPSHOT_INTERVAL,
        }
    }

    /// The embedded default: a single replica (id 1) that commits every proposal at once.
    pub fn single() -> Self {
        Self::new(1, vec![1], 0)
    }

    /// The election timeout this replica uses, in ticks (deterministic in the seed and id).
    pub fn election_timeout(&self) -> usize {
        let base = self.election_tick.max(self.heartbeat_tick + 1);
        let mut rng = Rng::new(self.seed ^ self.id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        base + rng.below(base as u64) as usize
    }

    fn raft_config(&self) -> Config {
        let base = self.election_tick.max(self.heartbeat_tick + 1);
        Config {
            id: self.id,
            heartbeat_tick: self.heartbeat_tick,
            election_tick: base,
            min_election_tick: base,
            // Raft's own draw is replaced by a seeded one (see the module docs).
            max_election_tick: 2 * base,
            pre_vote: true,
            check_quorum: true,
            max_size_per_msg: self.max_append_bytes,
            max_inflight_msgs: self.max_inflight_msgs,
            applied: 0,
            ..Default::default()
        }
    }
}

/// Identifies a proposal made through one replica, so its result can be matched when the
/// command commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProposalId {
    /// The replica that accepted it.
    pub replica: u64,
    /// That replica's boot number (restarts make earlier ids unambiguous).
    pub boot: u64,
    /// Sequence number within the boot.
    pub seq: u64,
}

impl ProposalId {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(24);
        v.extend_from_slice(&self.replica.to_le_bytes());
        v.extend_from_slice(&self.boot.to_le_bytes());
        v.extend_from_slice(&self.seq.to_le_bytes());
        v
    }

    fn decode(b: &[u8]) -> Option<ProposalId> {
        if b.len() != 24 {
            return None;
        }
        let word = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i * 8..i * 8 + 8]);
            u64::from_le_bytes(a)
        };
        Some(ProposalId {
            replica: word(0),
            boot: word(1),
            seq: word(2),
        })
    }
}

/// Why a replica could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaError {
    /// The configuration is unusable.
    Config(String),
}

impl std::fmt::Display for ReplicaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplicaError::Config(s) => write!(f, "bad oracle replica configuration: {s}"),
        }
    }
}

impl std::error::Error for ReplicaError {}

/// Why a proposal was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// This replica is not the leader; try `leader_hint` (if known) or another replica.
    NotLeader {
        /// The replica this one believes leads.
        leader_hint: Option<u64>,
    },
    /// The encoded command exceeds [`MAX_REQUEST_BYTES`].
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// raft dropped the proposal (e.g. leadership is being transferred).
    Dropped,
    /// The replica caught an internal panic earlier and refuses all work.
    Broken,
}

impl std::fmt::Display for ProposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProposeError::NotLeader {
                leader_hint: Some(l),
            } => {
                write!(f, "not the oracle leader; replica {l} is")
            }
            ProposeError::NotLeader { leader_hint: None } => {
                write!(f, "not the oracle leader; no leader known")
            }
            ProposeError::TooLarge { bytes, max } => {
                write!(f, "command of {bytes} bytes exceeds the {max}-byte limit")
            }
            ProposeError::Dropped => write!(f, "proposal dropped by raft; retry"),
            ProposeError::Broken => write!(f, "replica stopped after an internal error"),
        }
    }
}

impl std::error::Error for ProposeError {}

/// Why a datagram passed to [`Replica::step`] was refused (each is also counted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepError {
    /// Larger than [`ReplicaConfig::max_message_bytes`].
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// Not a raft message.
    Parse(String),
    /// Addressed to another replica, or from an id not in the cluster.
    Misrouted {
        /// Claimed sender.
        from: u64,
        /// Claimed recipient.
        to: u64,
    },
    /// Well-formed but inconsistent with this replica (refused to protect raft).
    Rejected(&'static str),
    /// raft refused it.
    Raft(String),
    /// The replica caught an internal panic and refuses all work.
    Broken,
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::TooLarge { bytes, max } => {
                write!(f, "raft datagram of {bytes} bytes exceeds {max}")
            }
            StepError::Parse(e) => write!(f, "not a raft message: {e}"),
            StepError::Misrouted { from, to } => {
                write!(
                    f,
                    "raft message from {from} to {to} is not for this replica"
                )
            }
            StepError::Rejected(why) => write!(f, "raft message rejected: {why}"),
            StepError::Raft(e) => write!(f, "raft refused the message: {e}"),
            StepError::Broken => write!(f, "replica stopped after an internal error"),
        }
    }
}

impl std::error::Error for StepError {}

/// One committed log entry as applied by this replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// Its raft log index.
    pub index: u64,
    /// Its raft term.
    pub term: u64,
    /// The id [`Replica::propose`] returned, if this replica (in this boot) proposed it.
    pub proposal: Option<ProposalId>,
    /// The decoded request (`None` if the entry did not decode).
    pub request: Option<Request>,
    /// The state machine's answer.
    pub result: Result<Vec<Event>, CommandError>,
}

/// What a replica has for its driver.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Raft datagrams: `(to replica, bytes)`.
    pub messages: Vec<(u64, Vec<u8>)>,
    /// Commands committed and applied since the last call, in log order (after
    /// `snapshot`, if both are present).
    pub committed: Vec<Committed>,
    /// The state machine was replaced by a snapshot covering the log up to this index
    /// (installed from the leader, or loaded at restart); entries up to it are not reported.
    pub snapshot: Option<u64>,
}

/// Counters of a replica (hostile or broken input never goes unnoticed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    /// Datagrams handed to raft.
    pub stepped: u64,
    /// Datagrams over the size cap.
    pub oversize: u64,
    /// Datagrams that were not raft messages.
    pub parse_errors: u64,
    /// Datagrams misrouted or rejected before raft saw them.
    pub rejected: u64,
    /// Messages raft itself refused.
    pub raft_errors: u64,
    /// Proposals accepted.
    pub proposals: u64,
    /// Proposals refused (not leader, too large, dropped).
    pub proposals_refused: u64,
    /// Committed entries applied (including leader no-op entries).
    pub entries_applied: u64,
    /// Committed entries whose bytes did not decode.
    pub malformed_entries: u64,
    /// Internal panics caught (the replica is then broken).
    pub panics: u64,
    /// Snapshots taken (log compactions).
    pub snapshots_taken: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Snapshot transfers reported failed (and so retried) after a timeout.
    pub snapshot_retries: u64,
}

/// One oracle replica. See the module docs for how to drive it.
pub struct Replica {
    config: ReplicaConfig,
    node: RawNode<OracleStorage>,
    state: OracleState,
    boot: u64,
    next_proposal: u64,
    applied_index: u64,
    pending: Output,
    stats: ReplicaStats,
    broken: bool,
    /// Ticks since start.
    ticks: u64,
    /// Peers sent a snapshot, with the tick it was sent at.
    snapshot_sent: BTreeMap<u64, u64>,
    /// Draws election timeouts (see the module docs on determinism).
    election_rng: Rng,
    /// Per peer: the tick of the last raft message accepted from it.
    peer_heard: BTreeMap<u64, u64>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("id", &self.config.id)
            .field("term", &self.term())
            .field("leader", &self.leader_hint())
            .field("applied_index", &self.applied_index)
            .field("broken", &self.broken)
            .finish()
    }
}

impl Replica {
    /// A replica with fresh storage. A single-replica cluster elects itself at once, so its
    /// proposals commit within the same call.
    pub fn new(config: ReplicaConfig) -> Result<Replica, ReplicaError> {
        let storage = OracleStorage::new(&config.peers);
        Self::restart(config, storage)
    }

    /// A replica restarted on the storage a previous instance left (its durable state): the
    /// committed log is replayed into a fresh state machine (reported again by the next
    /// [`Replica::ready`], with `proposal: None`).
    pub fn restart(
        config: ReplicaConfig,
        mut storage: OracleStorage,
    ) -> Result<Replica, ReplicaError> {
        if config.id == 0 || !config.peers.contains(&config.id) {
            return Err(ReplicaError::Config(format!(
                "replica id {} must be non-zero and listed in peers {:?}",
                config.id, config.peers
            )));
        }
        let mut sorted = config.peers.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != config.peers.len() || sorted.contains(&0) {
            return Err(ReplicaError::Config(format!(
                "peers {:?} must be distinct non-zero ids",
                config.peers
            )));
        }
        let mut stored = storage.voters().to_vec();
        stored.sort_unstable();
        if stored != sorted {
            return Err(ReplicaError::Config(format!(
                "storage belongs to voters {stored:?}, configuration lists {sorted:?}"
            )));
        }
        let raft_config = config.raft_config();
        raft_config
            .validate()
            .map_err(|e| ReplicaError::Config(e.to_string()))?;
        let boot = storage.next_boot();
        let (state, applied_index) = match storage.snapshot_data() {
            None => (OracleState::new(), 0),
            Some(data) => (
                OracleState::decode_snapshot(data).map_err(|e| {
                    ReplicaError::Config(format!("stored snapshot does not decode: {e}"))
                })?,
                storage.snapshot_index(),
            ),
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let node = RawNode::new(&raft_config, storage, &logger)
            .map_err(|e| ReplicaError::Config(e.to_string()))?;
        let election_rng = Rng::new(
            config.seed ^ config.id.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ boot.rotate_left(32),
        );
        let mut replica = Replica {
            config,
            node,
            state,
            boot,
            next_proposal: 0,
            applied_index,
            pending: Output {
                snapshot: (applied_index > 0).then_some(applied_index),
                ..Output::default()
            },
            stats: ReplicaStats::default(),
            broken: false,
            ticks: 0,
            snapshot_sent: BTreeMap::new(),
            election_rng,
            peer_heard: BTreeMap::new(),
        };
        if replica.config.peers.len() == 1 {
            // Sole voter: elect ourselves now rather than after an election timeout.
            let _ = replica.guarded(|r| r.node.campaign().map_err(|e| e.to_string()));
        }
        replica
            .guarded(|r| {
                r.drive();
                Ok(())
            })
            .ok();
        Ok(replica)
    }

    /// Stops the replica, returning its durable state for a later [`Replica::restart`].
    pub fn into_storage(mut self) -> OracleStorage {
        std::mem::take(self.node.mut_store())
    }

    /// This replica's id.
    pub fn id(&self) -> u64 {
        self.config.id
    }

    /// Its configuration.
    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    /// The replicated state as of the last applied command.
    pub fn state(&self) -> &OracleState {
        &self.state
    }

    /// Log index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Its counters.
    pub fn stats(&self) -> &ReplicaStats {
        &self.stats
    }

    /// The durable store (read-only).
    pub fn storage(&self) -> &OracleStorage {
        self.node.store()
    }

    /// Highest log index this replica knows to be committed.
    pub fn commit_index(&self) -> u64 {
        self.node.raft.raft_log.committed
    }

    /// Current raft term.
    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    /// True while this replica is the raft leader (the only one that accepts proposals).
    pub fn is_leader(&self) -> bool {
        !self.broken && self.node.raft.state == StateRole::Leader
    }

    /// The replica this one believes leads, if any.
    pub fn leader_hint(&self) -> Option<u64> {
        match self.node.raft.leader_id {
            0 => None,
            id => Some(id),
        }
    }

    /// True after an internal panic was caught; the replica then refuses all work.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Proposes a command without duplicate suppression (client 0).
    pub fn propose(&mut self, command: Command) -> Result<ProposalId, ProposeError> {
        self.propose_request(&Request {
            client: 0,
            seq: 0,
            command,
        })
    }

    /// Proposes a request; its `(client, seq)` makes retries through other replicas safe.
    pub fn propose_request(&mut self, request: &Request) -> Result<ProposalId, ProposeError> {
        if self.broken {
            return Err(ProposeError::Broken);
        }
        if !self.is_leader() {
            self.stats.proposals_refused += 1;
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader_hint().filter(|l| *l != self.config.id),
            });
        }
        let data = request.encode();
        if data.len() > MAX_REQUEST_BYTES {
            self.stats.proposals_refused += 1;
            return Err(ProposeError::TooLarge {
                bytes: data.len(),
                max: MAX_REQUEST_BYTES,
            });
        }
        self.next_proposal += 1;
        let id = ProposalId {
            replica: self.config.id,
            boot: self.boot,
            seq: self.next_proposal,
        };
        let ctx = id.encode();
        match self.guarded(|r| {
            r.node.propose(ctx, data).map_err(|e| e.to_string())?;
            r.drive();
            Ok(())
        }) {
            Ok(()) => {
                self.stats.proposals += 1;
                Ok(id)
            }
            Err(_) if self.broken => Err(ProposeError::Broken),
            Err(_) => {
                self.stats.proposals_refused += 1;
                Err(ProposeError::Dropped)
            }
        }
    }

    /// True if this replica heard from a majority of the cluster (itself included) within the
    /// last `ticks` ticks. A leader that cannot say so may already be deposed on the other
    /// side of a partition, so it must not vouch for anything (e.g. renew member leases).
    pub fn quorum_heard_within(&self, ticks: u64) -> bool {
        let others = self
            .config
            .peers
            .iter()
            .filter(|p| **p != self.config.id)
            .filter(|p| {
                self.peer_heard
                    .get(p)
                    .is_some_and(|t| self.ticks.saturating_sub(*t) <= ticks)
            })
            .count();
        (others + 1) * 2 > self.config.peers.len()
    }

    /// Advances raft's logical clock by one tick (heartbeats, elections, quorum checks).
    pub fn tick(&mut self) {
        if self.broken {
            return;
        }
        self.ticks += 1;
        let _ = self.guarded(|r| {
            r.node.tick();
            r.retry_lost_snapshots();
            r.drive();
            Ok(())
        });
    }

    /// Reports snapshots still unacknowledged after two election timeouts as failed, so raft
    /// resends them instead of pausing the follower forever.
    fn retry_lost_snapshots(&mut self) {
        if self.snapshot_sent.is_empty() {
            return;
        }
        let patience = 2 * self.config.election_timeout() as u64;
        let sent = std::mem::take(&mut self.snapshot_sent);
        for (peer, at) in sent {
            let waiting = self.node.raft.state == StateRole::Leader
                && self
                    .node
                    .raft
                    .prs()
                    .get(peer)
                    .is_some_and(|pr| pr.state == ProgressState::Snapshot);
            if !waiting {
                continue;
            }
            if self.ticks.saturating_sub(at) >= patience {
                self.stats.snapshot_retries += 1;
                self.node.report_snapshot(peer, SnapshotStatus::Failure);
            } else {
                self.snapshot_sent.insert(peer, at);
            }
        }
    }

    /// Handles one raft datagram from a peer replica. Never panics; refusals are counted.
    pub fn step(&mut self, bytes: &[u8]) -> Result<(), StepError> {
        if self.broken {
            return Err(StepError::Broken);
        }
        if bytes.len() > self.config.max_message_bytes {
            self.stats.oversize += 1;
            return Err(StepError::TooLarge {
                bytes: bytes.len(),
                max: self.config.max_message_bytes,
            });
        }
        let msg = match Message::parse_from_bytes(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.stats.parse_errors += 1;
                return Err(StepError::Parse(e.to_string()));
            }
        };
        if let Err(e) = self.check_message(&msg) {
            self.stats.rejected += 1;
            return Err(e);
        }
        self.stats.stepped += 1;
        self.peer_heard.insert(msg.from, self.ticks);
        match self.guarded(|r| {
            r.node.step(msg).map_err(|e| e.to_string())?;
            r.drive();
            Ok(())
        }) {
            Ok(()) => Ok(()),
            Err(_) if self.broken => Err(StepError::Broken),
            Err(e) => {
                self.stats.raft_errors += 1;
                Err(StepError::Raft(e))
            }
        }
    }

    /// Takes the messages to send and the commands committed since the last call.
    pub fn ready(&mut self) -> Output {
        if !self.broken {
            let _ = self.guarded(|r| {
                r.drive();
                Ok(())
            });
        }
        std::mem::take(&mut self.pending)
    }

    /// Cheap sanity checks that keep raft away from messages it would panic on.
    fn check_message(&self, msg: &Message) -> Result<(), StepError> {
        if msg.to != self.config.id
            || msg.from == self.config.id
            || !self.config.peers.contains(&msg.from)
        {
            return Err(StepError::Misrouted {
                from: msg.from,
                to: msg.to,
            });
        }
        if msg.term == 0 {
            // raft-rs treats term 0 as a local message; answering one from a peer panics.
            return Err(StepError::Rejected("term 0 is reserved for local messages"));
        }
        match msg.get_msg_type() {
            MessageType::MsgHup
            | MessageType::MsgBeat
            | MessageType::MsgPropose
            | MessageType::MsgUnreachable
            | MessageType::MsgSnapStatus
            | MessageType::MsgCheckQuorum
            | MessageType::MsgReadIndex
            | MessageType::MsgReadIndexResp
            // The oracle never transfers leadership; a peer-sent MsgTransferLeader even
            // panics raft-rs 0.7 on a follower (found by the fuzz test below).
            | MessageType::MsgTransferLeader
            | MessageType::MsgTimeoutNow => {
                return Err(StepError::Rejected("local-only or unused message type"))
            }
            MessageType::MsgSnapshot => {
                let snap = msg.get_snapshot();
                let mut voters = snap.get_metadata().get_conf_state().voters.clone();
                voters.sort_unstable();
                let mut peers = self.config.peers.clone();
                peers.sort_unstable();
                if voters != peers || !snap.get_metadata().get_conf_state().learners.is_empty() {
                    return Err(StepError::Rejected(
                        "snapshot of another cluster configuration",
                    ));
                }
                let meta = snap.get_metadata();
                if meta.index == 0 || meta.term == 0 || meta.term > msg.term {
                    return Err(StepError::Rejected("snapshot metadata inconsistent"));
                }
                if OracleState::decode_snapshot(&snap.data).is_err() {
                    return Err(StepError::Rejected("snapshot state does not decode"));
                }
            }
            MessageType::MsgHeartbeat if msg.commit > self.node.raft.raft_log.last_index() => {
                return Err(StepError::Rejected("heartbeat commit beyond the local log"));
            }
            MessageType::MsgAppend => {
                // The entry before the batch exists (index > 0) exactly when it has a term;
                // terms never exceed the sender's and never decrease along the log.
                if (msg.index == 0) != (msg.log_term == 0) || msg.log_term > msg.term {
                    return Err(StepError::Rejected("append with inconsistent previous entry"));
                }
                let mut expect = msg.index;
                let mut last_term = msg.log_term;
                for e in msg.entries.iter() {
                    expect = expect.wrapping_add(1);
                    if e.index != expect || e.term < last_term.max(1) || e.term > msg.term {
                        return Err(StepError::Rejected("append entries not contiguous"));
                    }
                    last_term = e.term;
                }
            }
            // A leader trusts a follower's claimed match index; one beyond its own log would
            // make it slice past the end later (a raft-rs panic).
            MessageType::MsgAppendResponse
                if !msg.reject && msg.index > self.node.raft.raft_log.last_index() =>
            {
                return Err(StepError::Rejected("append response beyond the local log"));
            }
            _ => {}
        }
        Ok(())
    }

    /// Runs `f` catching panics from raft; a panic breaks the replica for good.
    fn guarded(&mut self, f: impl FnOnce(&mut Self) -> Result<(), String>) -> Result<(), String> {
        match catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(r) => {
                self.redraw_election_timeout();
                r
            }
            Err(_) => {
                self.broken = true;
                self.stats.panics += 1;
                Err("internal panic".into())
            }
        }
    }

    /// Replaces raft's thread_rng election timeout with a seeded draw while the election timer
    /// is freshly reset.
    fn redraw_election_timeout(&mut self) {
        let raft = &mut self.node.raft;
        if raft.election_elapsed == 0 {
            let base = self
                .config
                .election_tick
                .max(self.config.heartbeat_tick + 1);
            let t = base + self.election_rng.below(base as u64) as usize;
            raft.set_randomized_election_timeout(t);
        }
    }

    /// Handles every pending raft `Ready`, in the crate's required order.
    fn drive(&mut self) {
        while self.node.has_ready() {
            let mut rd = self.node.ready();
            // 1. A leader may send at once (replication in parallel with its own write).
            let msgs = rd.take_messages();
            self.queue(msgs);
            // 2. A snapshot from the leader replaces the state machine and the log.
            if !rd.snapshot().is_empty() {
                let snap = rd.snapshot().clone();
                let index = snap.get_metadata().index;
                match OracleState::decode_snapshot(&snap.data) {
                    Ok(state) => {
                        self.state = state;
                        self.applied_index = index;
                        self.pending.snapshot = Some(index);
                        // Entries reported before the snapshot was installed are covered
                        // by it; the driver is told via `snapshot`.
                        self.pending.committed.retain(|c| c.index > index);
                        self.stats.snapshots_installed += 1;
                        let _ = self.node.mut_store().apply_snapshot(snap);
                    }
                    // Validated in `step`; failing here would mean corrupt memory.
                    Err(_) => {
                        self.broken = true;
                        return;
                    }
                }
            }
            // 3. Committed entries are already durable here: apply them.
            let committed = rd.take_committed_entries();
            self.apply(committed);
            // 4. Persist new entries, then 5. the hard state ...
            if !rd.entries().is_empty() {
                // raft hands contiguous entries; an error here would mean a raft bug.
                let _ = self.node.mut_store().append(rd.entries());
            }
            if let Some(hs) = rd.hs() {
                self.node.mut_store().set_hard_state(hs.clone());
            }
            // 6. ... and only then release messages that promise persistence (votes, acks).
            let persisted = rd.take_persisted_messages();
            self.queue(persisted);
            let mut light = self.node.advance(rd);
            // 7. Store the new commit index before applying what it covers.
            if let Some(commit) = light.commit_index() {
                self.node.mut_store().set_commit(commit);
            }
            let msgs = light.take_messages();
            self.queue(msgs);
            let committed = light.take_committed_entries();
            self.apply(committed);
            self.node.advance_apply();
        }
        self.maybe_compact();
    }

    /// Takes a snapshot of the applied state and drops the entries it covers, every
    /// `snapshot_interval` entries.
    fn maybe_compact(&mut self) {
        let interval = self.config.snapshot_interval;
        let base = self.node.store().snapshot_index();
        if interval == 0 || self.applied_index < base.saturating_add(interval) {
            return;
        }
        let data = self.state.encode_snapshot();
        if self
            .node
            .mut_store()
            .compact(self.applied_index, data)
            .is_ok()
        {
            self.stats.snapshots_taken += 1;
        }
    }

    fn queue(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.snapshot_sent.insert(m.to, self.ticks);
            }
            if let Ok(bytes) = m.write_to_bytes() {
                self.pending.messages.push((m.to, bytes));
            }
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        for e in entries {
            self.applied_index = e.index;
            self.stats.entries_applied += 1;
            if e.get_entry_type() != EntryType::EntryNormal || e.data.is_empty() {
                // Leader no-op entries (and conf changes, which the oracle does not use).
                continue;
            }
            let proposal = ProposalId::decode(&e.context)
                .filter(|p| p.replica == self.config.id && p.boot == self.boot);
            let (request, result) = match Request::decode(&e.data) {
                Ok(req) => {
                    let result = self.state.apply_request(&req);
                    (Some(req), result)
                }
                Err(err) => {
                    self.stats.malformed_entries += 1;
                    (
                        None,
                        Err(CommandError::Malformed {
                            reason: err.to_string(),
                        }),
                    )
                }
            };
            self.pending.committed.push(Committed {
                index: e.index,
                term: e.term,
                proposal,
                request,
                result,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drmc::McPolicy;
    use crate::oracle::command::Signature;
    use proptest::prelude::*;
    use vsync_dataplane::MemberId;

    #[test]
    fn single_replica_commits_within_the_call() {
        let mut r = Replica::new(ReplicaConfig::single()).unwrap();
        assert!(r.is_leader());
        let _ = r.ready();
        let id = r
            .propose(Command::RegisterProcess {
                member: MemberId::new(1, 1),
                addr: None,
            })
            .unwrap();
        let out = r.ready();
        assert!(out.messages.is_empty());
        assert_eq!(out.committed.len(), 1);
        assert_eq!(out.committed[0].proposal, Some(id));
        assert!(out.committed[0].result.is_ok());
        let id2 = r
            .propose(Command::CreateGroup {
                name: "g".into(),
                signature: Signature::from_text("s"),
                policy: McPolicy::Auto,
                creator: MemberId::new(1, 1),
            })
            .unwrap();
        let out = r.ready();
        assert_eq!(out.committed[0].proposal, Some(id2));
        assert_eq!(r.state().groups().count(), 1);
    }

    #[test]
    fn restart_replays_the_log() {
        let mut r = Replica::new(ReplicaConfig::single()).unwrap();
        for p in 1..=5 {
            r.propose(Command::RegisterProcess {
                member: MemberId::new(p, 1),
                addr: None,
            })
            .unwrap();
        }
        let _ = r.ready();
        let state = r.state().clone();
        let storage = r.into_storage();
        let mut r2 = Replica::restart(ReplicaConfig::single(), storage).unwrap();
        let out = r2.ready();
        assert_eq!(out.committed.len(), 5);
        assert!(out.committed.iter().all(|c| c.proposal.is_none()));
        assert_eq!(r2.state(), &state);
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(Replica::new(ReplicaConfig::new(4, vec![1, 2, 3], 0)).is_err());
        assert!(Replica::new(ReplicaConfig::new(1, vec![1, 1, 2], 0)).is_err());
        let s = OracleStorage::new(&[1, 2, 3]);
        assert!(Replica::restart(ReplicaConfig::new(1, vec![1, 2], 0), s).is_err());
    }

    #[test]
    fn election_timeouts_are_deterministic_and_in_range() {
        for id in 1..=5 {
            let c = ReplicaConfig::new(id, vec![1, 2, 3, 4, 5], 42);
            let t = c.election_timeout();
            assert_eq!(t, c.election_timeout());
            assert!((10..20).contains(&t));
            c.raft_config().validate().unwrap();
        }
    }

    #[test]
    fn follower_refuses_proposals_with_hint() {
        let mut r = Replica::new(ReplicaConfig::new(1, vec![1, 2, 3], 0)).unwrap();
        let err = r
            .propose(Command::Terminate {
                group: vsync_dataplane::GroupId(1),
            })
            .unwrap_err();
        assert_eq!(err, ProposeError::NotLeader { leader_hint: None });
    }

    fn three() -> Vec<Replica> {
        (1..=3)
            .map(|id| Replica::new(ReplicaConfig::new(id, vec![1, 2, 3], 7)).unwrap())
            .collect()
    }

    /// Delivers all messages until quiet; returns committed outputs per replica.
    fn pump(rs: &mut [Replica]) -> Vec<Vec<Committed>> {
        let mut committed = vec![Vec::new(); rs.len()];
        loop {
            let mut any = false;
            for i in 0..rs.len() {
                let out = rs[i].ready();
                committed[i].extend(out.committed);
                for (to, bytes) in out.messages {
                    any = true;
                    let _ = rs[(to - 1) as usize].step(&bytes);
                }
            }
            if !any {
                return committed;
            }
        }
    }

    #[test]
    fn three_replicas_elect_and_commit() {
        let mut rs = three();
        let mut ticks = 0;
        while !rs.iter().any(Replica::is_leader) {
            for r in rs.iter_mut() {
                r.tick();
            }
            pump(&mut rs);
            ticks += 1;
            assert!(ticks < 100, "no leader elected");
        }
        let leader = rs.iter().position(Replica::is_leader).unwrap();
        rs[leader]
            .propose(Command::RegisterProcess {
                member: MemberId::new(1, 1),
                addr: None,
            })
            .unwrap();
        let c = pump(&mut rs);
        // Followers learn the commit on the next heartbeat/append.
        for r in rs.iter_mut() {
            r.tick();
            r.tick();
        }
        let c2 = pump(&mut rs);
        for i in 0..3 {
            let n = c[i].len() + c2[i].len();
            assert_eq!(n, 1, "replica {i} applied {n}");
            assert!(rs[i].state().process(1).is_some());
        }
    }

    /// Delivers messages until quiet, dropping those between `cut` and the rest.
    fn pump_cut(rs: &mut [Replica], cut: usize) -> Vec<Vec<Committed>> {
        let mut committed = vec![Vec::new(); rs.len()];
        loop {
            let mut any = false;
            for i in 0..rs.len() {
                let out = rs[i].ready();
                committed[i].extend(out.committed);
                for (to, bytes) in out.messages {
                    let to = (to - 1) as usize;
                    if (i == cut) != (to == cut) {
                        continue;
                    }
                    any = true;
                    let _ = rs[to].step(&bytes);
                }
            }
            if !any {
                return committed;
            }
        }
    }

    #[test]
    fn isolated_leader_commits_nothing_and_majority_moves_on() {
        let mut rs = three();
        while !rs.iter().any(Replica::is_leader) {
            for r in rs.iter_mut() {
                r.tick();
            }
            pump(&mut rs);
        }
        let old = rs.iter().position(Replica::is_leader).unwrap();
        let reg = |p| Command::RegisterProcess {
            member: MemberId::new(p, 1),
            addr: None,
        };
        // Cut the leader off; it still accepts a proposal but can never commit it.
        let lost = rs[old].propose(reg(1)).unwrap();
        let mut old_commits = Vec::new();
        let mut ticks = 0;
        while rs
            .iter()
            .enumerate()
            .all(|(i, r)| i == old || !r.is_leader())
        {
            for r in rs.iter_mut() {
                r.tick();
            }
            old_commits.extend(pump_cut(&mut rs, old).swap_remove(old));
            ticks += 1;
            assert!(ticks < 200, "majority elected no leader");
        }
        assert!(old_commits.is_empty(), "minority committed {old_commits:?}");
        // Cut off for that long, the old leader no longer claims a recent quorum (it must not
        // renew member leases), while the new leader does.
        assert!(!rs[old].quorum_heard_within(5));
        let new = (0..rs.len())
            .find(|i| *i != old && rs[*i].is_leader())
            .unwrap();
        assert!(rs[new].quorum_heard_within(5));
        // check_quorum: the old leader steps down within an election timeout.
        for _ in 0..40 {
            for r in rs.iter_mut() {
                r.tick();
            }
            old_commits.extend(pump_cut(&mut rs, old).swap_remove(old));
        }
        assert!(!rs[old].is_leader());
        assert!(old_commits.is_empty());
        let new = rs.iter().position(Replica::is_leader).unwrap();
        rs[new].propose(reg(2)).unwrap();
        pump_cut(&mut rs, old);
        // Heal: the old leader's uncommitted entry is discarded; everyone converges.
        let mut healed = vec![Vec::new(); 3];
        for _ in 0..20 {
            for r in rs.iter_mut() {
                r.tick();
            }
            for (i, c) in pump(&mut rs).into_iter().enumerate() {
                healed[i].extend(c);
            }
        }
        assert!(healed[old].iter().all(|c| c.proposal != Some(lost)));
        for r in &rs {
            assert!(r.state().process(2).is_some());
            assert!(
                r.state().process(1).is_none(),
                "the cut-off proposal never commits"
            );
            assert_eq!(r.state(), rs[new].state());
        }
    }

    #[test]
    fn step_refuses_garbage_and_misrouted() {
        let mut r = Replica::new(ReplicaConfig::new(1, vec![1, 2, 3], 0)).unwrap();
        assert!(matches!(
            r.step(&[0xff, 0xff, 0xff]),
            Err(StepError::Parse(_))
        ));
        let m = Message {
            msg_type: MessageType::MsgHeartbeat,
            to: 2,
            from: 3,
            ..Default::default()
        };
        assert!(matches!(
            r.step(&m.write_to_bytes().unwrap()),
            Err(StepError::Misrouted { .. })
        ));
        let m = Message {
            msg_type: MessageType::MsgHeartbeat,
            to: 1,
            from: 3,
            term: 5,
            commit: 99,
            ..Default::default()
        };
        assert!(matches!(
            r.step(&m.write_to_bytes().unwrap()),
            Err(StepError::Rejected(_))
        ));
        let big = vec![0u8; DEFAULT_MAX_MESSAGE_BYTES + 1];
        assert!(matches!(r.step(&big), Err(StepError::TooLarge { .. })));
        assert_eq!(r.stats().parse_errors, 1);
        assert_eq!(r.stats().rejected, 2);
        assert_eq!(r.stats().oversize, 1);
    }

    #[test]
    fn raft_internal_panic_is_contained_and_breaks_the_replica() {
        let mut r = Replica::new(ReplicaConfig::new(1, vec![1, 2, 3], 0)).unwrap();
        // raft-rs panics ("to_commit is out of range") on a heartbeat whose commit index is
        // beyond the local log. `step` refuses it before raft sees it ...
        let m = Message {
            msg_type: MessageType::MsgHeartbeat,
            to: 1,
            from: 2,
            term: 1,
            commit: 5,
            ..Default::default()
        };
        assert!(matches!(
            r.step(&m.write_to_bytes().unwrap()),
            Err(StepError::Rejected(_))
        ));
        assert!(!r.is_broken());
        // ... and were it to get through, the guard contains the panic and stops the replica.
        let result = r.guarded(|r| r.node.step(m.clone()).map_err(|e| e.to_string()));
        assert!(result.is_err());
        assert!(r.is_broken());
        assert_eq!(r.stats().panics, 1);
        assert_eq!(r.step(&m.write_to_bytes().unwrap()), Err(StepError::Broken));
        assert!(matches!(
            r.propose(Command::Terminate {
                group: vsync_dataplane::GroupId(1)
            }),
            Err(ProposeError::Broken)
        ));
        r.tick();
        assert_eq!(r.ready(), Output::default());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn step_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut r = Replica::new(ReplicaConfig::new(1, vec![1, 2, 3], 0)).unwrap();
            let _ = r.step(&bytes);
            let _ = r.ready();
        }

        #[test]
        fn step_arbitrary_messages_never_panics(
            ty in 0i32..20, from in 0u64..5, term in 0u64..5, index in 0u64..5,
            log_term in 0u64..5, commit in 0u64..5, n in 0usize..3, reject in any::<bool>(),
        ) {
            let mut r = Replica::new(ReplicaConfig::new(1, vec![1, 2, 3], 0)).unwrap();
            let msg_type = <MessageType as protobuf::ProtobufEnum>::from_i32(ty).unwrap_or_default();
            let entries: Vec<Entry> = (0..n as u64)
                .map(|i| Entry { index: index + 1 + i, term, ..Default::default() })
                .collect();
            let m = Message {
                msg_type, to: 1, from, term, index, log_term, commit, reject,
                entries: entries.into(),
                ..Default::default()
            };
            let _ = r.step(&m.write_to_bytes().unwrap());
            let _ = r.ready();
            r.tick();
            prop_assert!(!r.is_broken() || r.stats().panics == 1);
        }
    }

    proptest! {
        // Default case count (256); PROPTEST_CASES=N fuzzes longer.
        /// Random messages (all types, plausible field values) against a live leader and a
        /// follower with committed entries: the filters keep raft from panicking.
        #[test]
        fn random_messages_do_not_break_a_live_cluster(
            msgs in proptest::collection::vec(
                (0i32..20, 1u64..4, 0u64..8, 0u64..12, 0u64..8, 0u64..14, 0usize..3, any::<bool>(), any::<bool>()),
                1..12),
        ) {
            let mut rs = three();
            let mut ticks = 0;
            while !rs.iter().any(Replica::is_leader) && ticks < 200 {
                for r in rs.iter_mut() {
                    r.tick();
                }
                pump(&mut rs);
                ticks += 1;
            }
            let leader = rs.iter().position(Replica::is_leader).unwrap();
            for p in 1..=4 {
                rs[leader].propose(Command::RegisterProcess { member: MemberId::new(p, 1), addr: None }).unwrap();
            }
            pump(&mut rs);
            for (ty, from, term, index, log_term, commit, n, reject, to_leader) in msgs {
                let target = if to_leader { leader } else { (leader + 1) % 3 };
                let to = target as u64 + 1;
                let msg_type = <MessageType as protobuf::ProtobufEnum>::from_i32(ty).unwrap_or_default();
                let entries: Vec<Entry> = (0..n as u64)
                    .map(|i| Entry { index: index + 1 + i, term: log_term.max(1), ..Default::default() })
                    .collect();
                let m = Message {
                    msg_type, to, from, term, index, log_term, commit, reject,
                    entries: entries.into(),
                    ..Default::default()
                };
                let _ = rs[target].step(&m.write_to_bytes().unwrap());
                let _ = rs[target].ready();
                rs[target].tick();
                prop_assert!(!rs[target].is_broken(), "raft panicked on {:?}", m);
            }
        }
    }
}
