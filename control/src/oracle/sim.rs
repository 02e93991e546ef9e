//! A seeded, deterministic simulation of an oracle replica cluster ([`run`]) and the checker
//! that judges it.
//!
//! # World
//!
//! `n` replicas (3 or 5) exchange raft datagrams over an in-memory network that loses,
//! duplicates and delays (hence reorders) them, and is sometimes partitioned into two sides.
//! Replicas crash and later restart from their storage, as if it had been persisted. Clients
//! submit random membership commands (many of them invalid on purpose) to whichever replica
//! they believe leads, follow `NotLeader` hints, and retry through other replicas after a
//! timeout with the same `(client, seq)`, so the state machine's duplicate suppression is
//! exercised. Virtual time advances in milliseconds; every replica ticks every
//! [`SimConfig::tick_ms`]. Everything random comes from one seeded [`Rng`], so a seed
//! replays exactly.
//!
//! After [`SimConfig::active_ms`] faults stop: the partition heals, crashed replicas restart,
//! and the run continues until the cluster has converged (or fails after
//! [`SimConfig::max_quiet_ms`]).
//!
//! # Checked properties
//!
//! 1. **One log**: every replica incarnation's applied sequence (index, term, request,
//!    result) is a prefix of one common sequence.
//! 2. **Identical views**: results — hence every view event — are part of that sequence;
//!    replaying it through a fresh [`OracleState`] yields the same results, and its views obey
//!    the rules: ids increase by one per group (continuing after a termination), members are
//!    the previous members minus `left` in order followed by `joined` (rank = join order).
//! 3. **No split brain**: while partitioned, a replica on the side without a majority applies
//!    nothing beyond the highest commit index any replica knew when the partition began.
//! 4. **Convergence**: after healing, every replica applies the same log, every client's
//!    requests complete, and every replica's state equals the replayed state.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use vsync_dataplane::rng::Rng;
use vsync_dataplane::{GroupId, MemberId, ViewId};

use super::command::{
    group_id, Command, CommandError, Event, FailureReason, GroupJoin, GroupLeave, Request,
    Signature, View,
};
use super::replica::{Committed, Output, ProposeError, Replica, ReplicaConfig};
use super::state::{OracleState, ProcessStatus};
use super::storage::OracleStorage;
use crate::drmc::{McParams, McPolicy};

/// Parameters of one simulated run.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// The seed everything random derives from.
    pub seed: u64,
    /// Oracle replicas (3 or 5 typically).
    pub replicas: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Longest pause between a client's requests (ms); clients issue requests throughout
    /// the fault period and finish their last one after it.
    pub max_think_ms: u64,
    /// Virtual milliseconds per raft tick.
    pub tick_ms: u64,
    /// Virtual milliseconds during which faults are injected.
    pub active_ms: u64,
    /// Longest the healed cluster may take to converge before the run fails.
    pub max_quiet_ms: u64,
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Probability a datagram is delivered twice.
    pub duplicate: f64,
    /// Largest one-way delay (ms); delays are uniform in `1..=max_delay_ms`.
    pub max_delay_ms: u64,
    /// Per-millisecond probability that a live replica crashes.
    pub crash_rate: f64,
    /// Per-millisecond probability that a partition starts (when none is active).
    pub partition_rate: f64,
    /// Replicas compact their log every this many applied entries (0 = never), so lagging
    /// and restarted replicas are caught up by snapshot.
    pub snapshot_interval: u64,
    /// Keep a human-readable trace of notable events.
    pub trace: bool,
}

impl SimConfig {
    /// A swarm-randomised configuration for `seed`: replica count (3, or 5 for one seed in
    /// four), loss, duplication, delay, crash and partition rates all vary with the seed.
    pub fn for_seed(seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x05EE_D0F0_AC1E);
        SimConfig {
            seed,
            replicas: if seed % 4 == 3 { 5 } else { 3 },
            clients: 3,
            max_think_ms: 20,
            tick_ms: 10,
            active_ms: 3000,
            max_quiet_ms: 30_000,
            loss: [0.0, 0.01, 0.05, 0.15][rng.below(4) as usize],
            duplicate: [0.0, 0.02, 0.1][rng.below(3) as usize],
            max_delay_ms: [1, 5, 15, 40][rng.below(4) as usize],
            crash_rate: [0.0, 1.0 / 1000.0, 1.0 / 300.0][rng.below(3) as usize],
            partition_rate: [0.0, 1.0 / 1000.0, 1.0 / 300.0][rng.below(3) as usize],
            snapshot_interval: [0, 10, 40, 10_000][rng.below(4) as usize],
            trace: false,
        }
    }
}

/// What a successful run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Replicas simulated.
    pub replicas: usize,
    /// Commands in the common log.
    pub committed: usize,
    /// Client requests completed.
    pub requests: u64,
    /// Of which the state machine accepted.
    pub accepted: usize,
    /// Views installed (in the common log).
    pub views: usize,
    /// Replica crashes injected.
    pub crashes: u64,
    /// Snapshots installed or restored (and checked).
    pub snapshots: u64,
    /// Of which sent by a leader (summed replica counters), and transfers retried.
    pub snapshot_transfers: (u64, u64),
    /// Partitions injected.
    pub partitions: u64,
    /// Highest raft term reached.
    pub max_term: u64,
    /// Datagrams sent / lost (loss, crash or partition).
    pub messages: (u64, u64),
    /// Virtual time at which the cluster had converged (ms).
    pub converged_at_ms: u64,
    /// Digest of the common log (equal digests = identical runs).
    pub digest: u64,
    /// Notable events, if [`SimConfig::trace`] was set.
    pub trace: Vec<String>,
}

/// A violated property: what, when, and the trace so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimFailure {
    /// The seed that reproduces it.
    pub seed: u64,
    /// Virtual time (ms).
    pub at_ms: u64,
    /// The violation.
    pub message: String,
    /// Notable events up to the failure (if tracing).
    pub trace: Vec<String>,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "oracle sim seed={} failed at {} ms: {} (replay with VSYNC_ORACLE_SEED={})",
            self.seed, self.at_ms, self.message, self.seed
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct LogEntry {
    index: u64,
    term: u64,
    request: Option<Request>,
    result: Result<Vec<Event>, CommandError>,
}

struct Node {
    config: ReplicaConfig,
    replica: Option<Replica>,
    storage: Option<OracleStorage>,
    restart_at: u64,
    /// Entries of the common log this incarnation has applied.
    position: usize,
}

/// Running checks of the common log as it grows.
struct Reference {
    state: OracleState,
    views: BTreeMap<GroupId, ViewTrack>,
    retired: BTreeMap<GroupId, ViewId>,
}

/// A datagram in flight: (delivery time, tie-breaking sequence, from, to, bytes).
type InFlight = (u64, u64, usize, usize, Vec<u8>);

struct Client {
    id: u64,
    home: usize,
    seq: u64,
    done: usize,
    current: Option<Request>,
    deadline: u64,
    next_try: u64,
    leader_guess: Option<usize>,
}

struct Partition {
    /// `side[i]`: which side replica `i` is on.
    side: Vec<bool>,
    /// The side holding a majority.
    majority: bool,
    until: u64,
    /// Highest commit index any replica knew when it began.
    commit_bound: u64,
    /// Entries `(index, term)` beyond `commit_bound` that, when it began, were already
    /// stored by at least `quorum − |minority|` majority-side replicas: the minority side
    /// alone can complete a quorum for these (the majority-side part of it acted before the
    /// partition), so it may still commit them; it can commit nothing else.
    quorum_stored: BTreeSet<(u64, u64)>,
}

struct World {
    config: SimConfig,
    rng: Rng,
    now: u64,
    nodes: Vec<Node>,
    clients: Vec<Client>,
    network: BinaryHeap<Reverse<InFlight>>,
    next_msg: u64,
    partition: Option<Partition>,
    log: Vec<LogEntry>,
    reference: Reference,
    report: SimReport,
    trace: Vec<String>,
}

/// Runs one simulation; `Ok` only if every property held.
pub fn run(config: &SimConfig) -> Result<SimReport, SimFailure> {
    let mut w = World::new(config.clone());
    match w.run() {
        Ok(()) => {
            let mut report = std::mem::take(&mut w.report);
            report.trace = std::mem::take(&mut w.trace);
            Ok(report)
        }
        Err(message) => Err(SimFailure {
            seed: config.seed,
            at_ms: w.now,
            message,
            trace: std::mem::take(&mut w.trace),
        }),
    }
}

const GROUPS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
const PROCESSES: u32 = 8;

impl World {
    fn new(config: SimConfig) -> World {
        let n = config.replicas.max(1);
        let peers: Vec<u64> = (1..=n as u64).collect();
        let nodes = peers
            .iter()
            .map(|&id| {
                let rc = ReplicaConfig {
                    snapshot_interval: config.snapshot_interval,
                    ..ReplicaConfig::new(id, peers.clone(), config.seed)
                };
                Node {
                    replica: None,
                    storage: Some(OracleStorage::new(&peers)),
                    config: rc,
                    restart_at: 0,
                    position: 0,
                }
            })
            .collect();
        let clients = (0..config.clients)
            .map(|i| Client {
                id: 1000 + i as u64,
                home: i % n,
                seq: 0,
                done: 0,
                current: None,
                deadline: 0,
                next_try: 0,
                leader_guess: None,
            })
            .collect();
        World {
            rng: Rng::new(config.seed),
            report: SimReport {
                seed: config.seed,
                replicas: n,
                ..Default::default()
            },
            config,
            now: 0,
            nodes,
            clients,
            network: BinaryHeap::new(),
            next_msg: 0,
            partition: None,
            log: Vec::new(),
            reference: Reference {
                state: OracleState::new(),
                views: BTreeMap::new(),
                retired: BTreeMap::new(),
            },
            trace: Vec::new(),
        }
    }

    fn note(&mut self, f: impl FnOnce() -> String) {
        if self.config.trace {
            let s = f();
            self.trace.push(format!("{:>6} ms  {s}", self.now));
        }
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        self.partition
            .as_ref()
            .is_none_or(|p| p.side[a] == p.side[b])
    }

    fn run(&mut self) -> Result<(), String> {
        let end = self.config.active_ms + self.config.max_quiet_ms;
        while self.now <= end {
            let active = self.now < self.config.active_ms;
            if active {
                self.inject_faults()?;
            } else if self.now == self.config.active_ms {
                self.heal();
            }
            self.restart_due()?;
            self.deliver()?;
            if self.now.is_multiple_of(self.config.tick_ms) {
                for i in 0..self.nodes.len() {
                    if let Some(r) = self.nodes[i].replica.as_mut() {
                        r.tick();
                        let out = r.ready();
                        self.handle_output(i, out)?;
                    }
                }
            }
            self.drive_clients()?;
            if !active && self.converged() {
                self.report.converged_at_ms = self.now;
                return self.final_check();
            }
            self.now += 1;
        }
        let applied: Vec<Option<u64>> = self
            .nodes
            .iter()
            .map(|n| n.replica.as_ref().map(Replica::applied_index))
            .collect();
        let done: Vec<usize> = self.clients.iter().map(|c| c.done).collect();
        Err(format!(
            "no convergence {} ms after healing: applied indices {applied:?}, log length {}, \
             client progress {done:?}",
            self.config.max_quiet_ms,
            self.log.len()
        ))
    }

    fn inject_faults(&mut self) -> Result<(), String> {
        let n = self.nodes.len();
        if self.config.crash_rate > 0.0 {
            for i in 0..n {
                if self.nodes[i].replica.is_some() && self.rng.chance(self.config.crash_rate) {
                    let r = self.nodes[i].replica.take().expect("checked");
                    self.report.snapshot_transfers.0 += r.stats().snapshots_installed;
                    self.report.snapshot_transfers.1 += r.stats().snapshot_retries;
                    self.nodes[i].storage = Some(r.into_storage());
                    self.nodes[i].restart_at = self.now + 20 + self.rng.below(400);
                    self.report.crashes += 1;
                    let until = self.nodes[i].restart_at;
                    self.note(|| format!("crash replica {} until {until}", i + 1));
                }
            }
        }
        match &self.partition {
            Some(p) if self.now >= p.until => self.heal(),
            None if n > 1 && self.rng.chance(self.config.partition_rate) => {
                let mut side: Vec<bool> = (0..n).map(|_| self.rng.chance(0.5)).collect();
                if side.iter().all(|s| *s) || side.iter().all(|s| !*s) {
                    let k = self.rng.below(n as u64) as usize;
                    side[k] = !side[k];
                }
                let trues = side.iter().filter(|s| **s).count();
                let majority = trues * 2 > n;
                let commit_bound = self
                    .nodes
                    .iter()
                    .map(|nd| match (&nd.replica, &nd.storage) {
                        (Some(r), _) => r.storage().hard_state().commit,
                        (None, Some(s)) => s.hard_state().commit,
                        (None, None) => 0,
                    })
                    .max()
                    .unwrap_or(0);
                let quorum_stored = self.completable_beyond(commit_bound, &side, majority);
                let until = self.now + 50 + self.rng.below(800);
                self.report.partitions += 1;
                let sides = side.clone();
                let commits: Vec<(u64, u64, bool)> = self
                    .nodes
                    .iter()
                    .map(|nd| {
                        nd.replica.as_ref().map_or((0, 0, false), |r| {
                            (
                                r.storage().hard_state().commit,
                                r.commit_index(),
                                r.is_leader(),
                            )
                        })
                    })
                    .collect();
                self.note(|| {
                    format!(
                        "partition {sides:?} majority={majority} until {until} commits {commits:?}"
                    )
                });
                self.partition = Some(Partition {
                    side,
                    majority,
                    until,
                    commit_bound,
                    quorum_stored,
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// `(index, term)` pairs above `from` that the minority side could still commit on its
    /// own: stored by at least `quorum − |minority|` majority-side replicas.
    fn completable_beyond(&self, from: u64, side: &[bool], majority: bool) -> BTreeSet<(u64, u64)> {
        use raft::Storage as _;
        let minority = side.iter().filter(|s| **s != majority).count();
        let need = (self.nodes.len() / 2 + 1).saturating_sub(minority);
        let stores: Vec<&OracleStorage> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| side[*i] == majority)
            .filter_map(|(_, nd)| {
                nd.replica
                    .as_ref()
                    .map(Replica::storage)
                    .or(nd.storage.as_ref())
            })
            .collect();
        let quorum = need.max(1);
        let mut counts: BTreeMap<(u64, u64), usize> = BTreeMap::new();
        for st in &stores {
            let last = st.last_index().unwrap_or(0);
            for idx in from + 1..=last {
                if let Ok(term) = st.term(idx) {
                    *counts.entry((idx, term)).or_default() += 1;
                }
            }
        }
        counts
            .into_iter()
            .filter(|(_, n)| *n >= quorum)
            .map(|(k, _)| k)
            .collect()
    }

    fn heal(&mut self) {
        if self.partition.take().is_some() {
            self.note(|| "partition healed".into());
        }
        if self.now >= self.config.active_ms {
            for nd in &mut self.nodes {
                nd.restart_at = nd.restart_at.min(self.now);
            }
        }
    }

    fn restart_due(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].replica.is_none() && self.now >= self.nodes[i].restart_at {
                let storage = self.nodes[i].storage.take().unwrap_or_default();
                let r = Replica::restart(self.nodes[i].config.clone(), storage)
                    .map_err(|e| format!("restart of replica {} failed: {e}", i + 1))?;
                self.nodes[i].replica = Some(r);
                self.nodes[i].position = 0;
                self.note(|| format!("restart replica {}", i + 1));
                let out = self.nodes[i].replica.as_mut().expect("just set").ready();
                self.handle_output(i, out)?;
            }
        }
        Ok(())
    }

    fn deliver(&mut self) -> Result<(), String> {
        while let Some(Reverse((at, _, _, _, _))) = self.network.peek() {
            if *at > self.now {
                break;
            }
            let Some(Reverse((_, _, from, to, bytes))) = self.network.pop() else {
                break;
            };
            if !self.connected(from, to) || self.nodes[to].replica.is_none() {
                self.report.messages.1 += 1;
                continue;
            }
            let r = self.nodes[to].replica.as_mut().expect("checked");
            if self.config.trace {
                use protobuf::Message as _;
                if let Ok(m) = raft::eraftpb::Message::parse_from_bytes(&bytes) {
                    let line = format!(
                        "{:>6} ms  deliver {}->{} {:?} term {} index {} commit {} entries {} reject {}",
                        self.now, from + 1, to + 1, m.get_msg_type(), m.term, m.index, m.commit,
                        m.entries.len(), m.reject
                    );
                    self.trace.push(line);
                }
            }
            if let Err(e) = r.step(&bytes) {
                // Legitimate traffic may be refused (e.g. a stale response), but never a
                // parse error or a panic.
                if matches!(
                    e,
                    super::replica::StepError::Parse(_) | super::replica::StepError::Broken
                ) {
                    return Err(format!("replica {} refused a peer datagram: {e}", to + 1));
                }
            }
            let out = r.ready();
            self.handle_output(to, out)?;
        }
        Ok(())
    }

    fn handle_output(&mut self, i: usize, out: Output) -> Result<(), String> {
        for (to, bytes) in out.messages {
            self.report.messages.0 += 1;
            let to = (to as usize).wrapping_sub(1);
            if to >= self.nodes.len() || self.rng.chance(self.config.loss) {
                self.report.messages.1 += 1;
                continue;
            }
            let copies = if self.rng.chance(self.config.duplicate) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let at = self.now + 1 + self.rng.below(self.config.max_delay_ms.max(1));
                self.next_msg += 1;
                self.network
                    .push(Reverse((at, self.next_msg, i, to, bytes.clone())));
            }
        }
        if let Some(r) = &self.nodes[i].replica {
            self.report.max_term = self.report.max_term.max(r.term());
        }
        if let Some(index) = out.snapshot {
            self.install_snapshot(i, index)?;
        }
        for c in out.committed {
            self.record(i, c)?;
        }
        if out.snapshot.is_some() {
            self.check_state_after_snapshot(i)?;
        }
        Ok(())
    }

    /// After a snapshot (plus the entries applied after it), the replica's state must equal
    /// the replay of the common log up to its position.
    fn check_state_after_snapshot(&self, i: usize) -> Result<(), String> {
        let position = self.nodes[i].position;
        let mut replay = OracleState::new();
        for e in &self.log[..position] {
            if let Some(req) = &e.request {
                let _ = replay.apply_request(req);
            }
        }
        let r = self.nodes[i]
            .replica
            .as_ref()
            .ok_or("snapshot from a down replica")?;
        if r.state() != &replay {
            return Err(format!(
                "replica {} state after a snapshot differs from the replayed log (position \
                 {position})",
                i + 1
            ));
        }
        Ok(())
    }

    /// Checks a snapshot a replica installed (or restarted from): it must cover a prefix of
    /// the common log and, during a partition, not carry a minority replica past what it may
    /// commit. (Its state is checked by `check_state_after_snapshot` once the entries after
    /// it in the same output are applied.)
    fn install_snapshot(&mut self, i: usize, index: u64) -> Result<(), String> {
        self.report.snapshots += 1;
        if let Some(p) = &self.partition {
            let completable = p.quorum_stored.iter().map(|(i, _)| *i).max().unwrap_or(0);
            if p.side[i] != p.majority && index > p.commit_bound.max(completable) {
                return Err(format!(
                    "split brain: replica {} on the minority side installed a snapshot at {index}",
                    i + 1
                ));
            }
        }
        let position = self.log.partition_point(|e| e.index <= index);
        self.note(|| {
            format!(
                "replica {} snapshot at {index} (position {position})",
                i + 1
            )
        });
        self.nodes[i].position = position;
        Ok(())
    }

    /// Checks a committed entry against the common log (property 1) and the partition rule
    /// (property 3); completes the client request it answers.
    fn record(&mut self, i: usize, c: Committed) -> Result<(), String> {
        if let Some(p) = &self.partition {
            if p.side[i] != p.majority
                && c.index > p.commit_bound
                && !p.quorum_stored.contains(&(c.index, c.term))
            {
                return Err(format!(
                    "split brain: replica {} on the minority side applied index {} (term {}), \
                     which was neither committed ({}) nor stored by a quorum when the \
                     partition began",
                    i + 1,
                    c.index,
                    c.term,
                    p.commit_bound
                ));
            }
        }
        let entry = LogEntry {
            index: c.index,
            term: c.term,
            request: c.request,
            result: c.result,
        };
        let pos = self.nodes[i].position;
        if pos < self.log.len() {
            if self.log[pos] != entry {
                return Err(format!(
                    "divergence: replica {} applied {:?} at position {pos}, common log has {:?}",
                    i + 1,
                    entry,
                    self.log[pos]
                ));
            }
        } else {
            if let Some(last) = self.log.last() {
                if entry.index <= last.index {
                    return Err(format!(
                        "log index went backwards: {} after {}",
                        entry.index, last.index
                    ));
                }
            }
            let idx = entry.index;
            let kind = entry.request.as_ref().map_or("?", |r| r.command.kind());
            let ok = entry.result.is_ok();
            self.note(|| {
                format!(
                    "commit #{idx} {kind} ok={ok} (first seen at replica {})",
                    i + 1
                )
            });
            self.check_new_entry(&entry)?;
            self.log.push(entry.clone());
        }
        self.nodes[i].position += 1;
        if let Some(req) = &entry.request {
            for cl in &mut self.clients {
                if cl.id == req.client && cl.current.as_ref().is_some_and(|r| r.seq == req.seq) {
                    let reachable = self
                        .partition
                        .as_ref()
                        .is_none_or(|p| p.side[cl.home] == p.side[i]);
                    if reachable {
                        cl.current = None;
                        cl.done += 1;
                        cl.next_try = self.now + self.rng.below(self.config.max_think_ms + 1);
                        self.report.requests += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// A member: usually a live registered one, sometimes a stale, failed or unknown one.
    fn pick_member(&mut self) -> MemberId {
        let roll = self.rng.below(10);
        if roll < 8 {
            let live: Vec<MemberId> = self
                .reference
                .state
                .processes()
                .filter(|(_, r)| r.status == ProcessStatus::Alive)
                .map(|(p, r)| r.member(*p))
                .collect();
            if !live.is_empty() {
                return live[self.rng.below(live.len() as u64) as usize];
            }
        }
        MemberId::new(
            1 + self.rng.below(u64::from(PROCESSES)) as u32,
            1 + self.rng.below(3) as u32,
        )
    }

    /// A group: usually an existing one.
    fn pick_group(&mut self) -> GroupId {
        let existing: Vec<GroupId> = self.reference.state.groups().map(|(g, _)| *g).collect();
        if !existing.is_empty() && self.rng.chance(0.85) {
            return existing[self.rng.below(existing.len() as u64) as usize];
        }
        group_id(GROUPS[self.rng.below(GROUPS.len() as u64) as usize])
    }

    /// A member of `group` if it has any (else any member).
    fn pick_member_of(&mut self, group: GroupId) -> MemberId {
        let members = self
            .reference
            .state
            .view(group)
            .map(|v| v.members.clone())
            .unwrap_or_default();
        if !members.is_empty() && self.rng.chance(0.85) {
            return members[self.rng.below(members.len() as u64) as usize];
        }
        self.pick_member()
    }

    fn signature(&mut self) -> Signature {
        if self.rng.chance(0.05) {
            Signature::from_text("Update(string)")
        } else {
            Signature::from_text("Update(int)")
        }
    }

    /// A random command, mostly valid against the current common state (the clients' view
    /// of the world), sometimes deliberately invalid.
    fn random_command(&mut self) -> Command {
        match self.rng.below(20) {
            0..=3 => {
                // A new process, or a restart (new incarnation) of a known one.
                let p = 1 + self.rng.below(u64::from(PROCESSES)) as u32;
                let inc = self
                    .reference
                    .state
                    .process(p)
                    .map_or(1, |r| r.incarnation + u32::from(self.rng.chance(0.7)));
                Command::RegisterProcess {
                    member: MemberId::new(p, inc),
                    addr: None,
                }
            }
            4..=5 => Command::CreateGroup {
                name: GROUPS[self.rng.below(GROUPS.len() as u64) as usize].into(),
                signature: Signature::from_text("Update(int)"),
                policy: McPolicy::Auto,
                creator: self.pick_member(),
            },
            6..=9 => Command::Join {
                group: self.pick_group(),
                member: self.pick_member(),
                signature: self.signature(),
            },
            10..=11 => {
                let group = self.pick_group();
                Command::Leave {
                    group,
                    member: self.pick_member_of(group),
                }
            }
            12..=13 => {
                let mut groups: Vec<GroupId> = (0..1 + self.rng.below(2))
                    .map(|_| self.pick_group())
                    .collect();
                groups.dedup();
                let joins = groups
                    .into_iter()
                    .map(|group| {
                        let mut members: Vec<MemberId> = (0..1 + self.rng.below(3))
                            .map(|_| self.pick_member())
                            .collect();
                        members.sort_unstable();
                        members.dedup();
                        GroupJoin {
                            group,
                            signature: Signature::from_text("Update(int)"),
                            members,
                        }
                    })
                    .collect();
                Command::MultiJoin { joins }
            }
            14 => {
                let group = self.pick_group();
                Command::MultiLeave {
                    leaves: vec![GroupLeave {
                        group,
                        members: vec![self.pick_member_of(group)],
                    }],
                }
            }
            15 => Command::ProcessFailed {
                member: self.pick_member(),
                reason: if self.rng.chance(0.5) {
                    FailureReason::HeartbeatTimeout
                } else {
                    FailureReason::Reported {
                        by: self.pick_member(),
                    }
                },
            },
            16 if self.rng.chance(0.3) => Command::Terminate {
                group: self.pick_group(),
            },
            16 => Command::SetTraffic {
                rates: vec![(self.pick_group(), self.rng.below(1000))],
            },
            17 => Command::SetTraffic {
                rates: vec![(self.pick_group(), self.rng.below(1000))],
            },
            18 => Command::SetPolicy {
                group: self.pick_group(),
                policy: [McPolicy::Auto, McPolicy::UseUnicast, McPolicy::UseIpmc]
                    [self.rng.below(3) as usize],
            },
            _ => Command::RemapMulticast {
                params: McParams {
                    range_low: Ipv4Addr::new(239, 1, 0, 1),
                    range_high: Ipv4Addr::new(239, 1, 0, 9),
                    max_addrs: self.rng.below(4) as u32,
                    unicast_only: self.rng.chance(0.1),
                },
            },
        }
    }

    fn drive_clients(&mut self) -> Result<(), String> {
        let n = self.nodes.len();
        for ci in 0..self.clients.len() {
            let cl = &self.clients[ci];
            if self.now < cl.next_try || (cl.current.is_some() && self.now < cl.deadline) {
                continue;
            }
            if self.clients[ci].current.is_none() {
                if self.now >= self.config.active_ms {
                    continue; // the workload ends with the fault period
                }
                let command = self.random_command();
                let cl = &mut self.clients[ci];
                cl.seq += 1;
                cl.current = Some(Request {
                    client: cl.id,
                    seq: cl.seq,
                    command,
                });
            }
            // Choose a replica reachable from the client's side: the believed leader, else
            // a random one.
            let home = self.clients[ci].home;
            let reachable: Vec<usize> = (0..n)
                .filter(|&j| self.connected(home, j) && self.nodes[j].replica.is_some())
                .collect();
            if reachable.is_empty() {
                self.clients[ci].next_try = self.now + 10;
                continue;
            }
            let target = match self.clients[ci].leader_guess {
                Some(g) if reachable.contains(&g) => g,
                _ => reachable[self.rng.below(reachable.len() as u64) as usize],
            };
            let req = self.clients[ci].current.clone().expect("set above");
            let r = self.nodes[target]
                .replica
                .as_mut()
                .expect("reachable is live");
            let result = r.propose_request(&req);
            let out = r.ready();
            match result {
                Ok(_) => {
                    let cl = &mut self.clients[ci];
                    cl.leader_guess = Some(target);
                    cl.deadline = self.now + 300;
                }
                Err(ProposeError::NotLeader { leader_hint }) => {
                    let cl = &mut self.clients[ci];
                    cl.leader_guess = leader_hint.map(|l| (l as usize).wrapping_sub(1));
                    cl.deadline = self.now;
                    cl.next_try = self.now + 5;
                }
                Err(e) => {
                    let cl = &mut self.clients[ci];
                    cl.leader_guess = None;
                    cl.deadline = self.now;
                    cl.next_try = self.now + 20;
                    if matches!(e, ProposeError::Broken | ProposeError::TooLarge { .. }) {
                        return Err(format!("proposal refused: {e}"));
                    }
                }
            }
            self.handle_output(target, out)?;
        }
        Ok(())
    }

    fn converged(&self) -> bool {
        if self.partition.is_some() || self.clients.iter().any(|c| c.current.is_some()) {
            return false;
        }
        let mut applied = None;
        for nd in &self.nodes {
            let Some(r) = &nd.replica else { return false };
            if r.storage().hard_state().commit != r.applied_index() || nd.position != self.log.len()
            {
                return false;
            }
            match applied {
                None => applied = Some(r.applied_index()),
                Some(a) if a != r.applied_index() => return false,
                _ => {}
            }
        }
        true
    }

    /// Property 2 for an entry about to join the common log: the reference state machine,
    /// fed the common log so far, gives the same result, and its views obey the rules.
    fn check_new_entry(&mut self, e: &LogEntry) -> Result<(), String> {
        let result = match &e.request {
            Some(req) => self.reference.state.apply_request(req),
            None => return Err(format!("undecodable entry at index {}", e.index)),
        };
        if result != e.result {
            return Err(format!(
                "replay of index {} gave {result:?}, replicas gave {:?}",
                e.index, e.result
            ));
        }
        if let Ok(events) = &e.result {
            self.report.accepted += 1;
            for ev in events {
                check_view_rules(ev, &mut self.reference.views, &mut self.reference.retired)
                    .map_err(|s| format!("index {}: {s}", e.index))?;
                if matches!(ev, Event::NewView(_)) {
                    self.report.views += 1;
                }
            }
        }
        Ok(())
    }

    /// The end of property 4: every replica holds the reference state; digest the log.
    fn final_check(&mut self) -> Result<(), String> {
        for (i, nd) in self.nodes.iter().enumerate() {
            let r = nd.replica.as_ref().ok_or("replica down at the end")?;
            if r.state() != &self.reference.state {
                return Err(format!(
                    "replica {} state differs from the replayed state",
                    i + 1
                ));
            }
        }
        for (g, t) in &self.reference.views {
            let rec = self.reference.state.group(*g);
            let decided = t.decided.as_ref().unwrap_or(&t.installed);
            if rec.map(|r| &r.view) != Some(decided)
                || rec.map(|r| &r.installed) != Some(&t.installed)
            {
                return Err(format!("final view of {g} differs from the replayed state"));
            }
        }
        let mut digest = xxhash_rust::xxh3::Xxh3::new();
        for e in &self.log {
            let mut line = String::new();
            let _ = write!(
                line,
                "{} {} {:?} {:?};",
                e.index, e.term, e.request, e.result
            );
            digest.update(line.as_bytes());
        }
        self.report.committed = self.log.len();
        self.report.digest = digest.digest();
        for nd in &self.nodes {
            if let Some(r) = &nd.replica {
                self.report.snapshot_transfers.0 += r.stats().snapshots_installed;
                self.report.snapshot_transfers.1 += r.stats().snapshot_retries;
            }
        }
        Ok(())
    }
}

/// Per group: the installed view and the next view decided since (if any).
#[derive(Clone, Debug, PartialEq, Eq)]
struct ViewTrack {
    installed: View,
    decided: Option<View>,
}

/// Checks one event against the running per-group view history: a decided next view is the
/// installed view's survivors in order plus joiners, with id = installed + 1 (a later decision
/// before the install replaces it); an installed view is the last decided one, with
/// consecutive ids; a group's first view (creation) has id 1 or one past a retired group's.
fn check_view_rules(
    ev: &Event,
    views: &mut BTreeMap<GroupId, ViewTrack>,
    retired: &mut BTreeMap<GroupId, ViewId>,
) -> Result<(), String> {
    match ev {
        Event::NewView(v) => {
            if v.members.is_empty() {
                return Err(format!("{}: empty view decided", v.group));
            }
            match views.get_mut(&v.group) {
                Some(track) => {
                    let prev = &track.installed;
                    if v.id.0 != prev.id.0 + 1 {
                        return Err(format!(
                            "{}: view {:?} decided after installed {:?}",
                            v.group, v.id, prev.id
                        ));
                    }
                    if v.left.iter().any(|m| !prev.members.contains(m))
                        || v.joined.iter().any(|m| prev.members.contains(m))
                    {
                        return Err(format!("{}: joined/left inconsistent", v.group));
                    }
                    let mut expect: Vec<MemberId> = prev
                        .members
                        .iter()
                        .copied()
                        .filter(|m| !v.left.contains(m))
                        .collect();
                    expect.extend_from_slice(&v.joined);
                    if expect != v.members {
                        return Err(format!("{}: members not in join order", v.group));
                    }
                    track.decided = Some(v.clone());
                }
                None => {
                    let first = retired.get(&v.group).map_or(1, |r| r.0 + 1);
                    if v.id.0 != first || !v.left.is_empty() || v.members != v.joined {
                        return Err(format!("{}: bad first view {v:?}", v.group));
                    }
                    views.insert(
                        v.group,
                        ViewTrack {
                            installed: v.clone(),
                            decided: Some(v.clone()),
                        },
                    );
                }
            }
        }
        Event::Installed(v) => {
            let track = views
                .get_mut(&v.group)
                .ok_or_else(|| format!("{}: installed but never decided", v.group))?;
            if track.decided.as_ref() != Some(v) {
                return Err(format!(
                    "{}: installed {v:?}, last decided {:?}",
                    v.group, track.decided
                ));
            }
            if v.id != track.installed.id && v.id.0 != track.installed.id.0 + 1 {
                return Err(format!(
                    "{}: installed {:?} after {:?}",
                    v.group, v.id, track.installed.id
                ));
            }
            track.installed = v.clone();
            track.decided = None;
        }
        Event::GroupTerminated { group, last_view } => {
            let track = views
                .remove(group)
                .ok_or_else(|| format!("{group}: terminated but unknown"))?;
            let prev = track.decided.unwrap_or(track.installed);
            if prev.id != *last_view {
                return Err(format!(
                    "{group}: terminated at {last_view:?}, last view {:?}",
                    prev.id
                ));
            }
            retired.insert(*group, *last_view);
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_identically() {
        let mut c = SimConfig::for_seed(11);
        c.crash_rate = 1.0 / 300.0;
        c.partition_rate = 1.0 / 300.0;
        let a = run(&c).unwrap();
        let b = run(&c).unwrap();
        assert_eq!(a, b);
        assert!(a.requests > 0 && a.views > 0, "{a:?}");
    }

    #[test]
    fn five_replicas_with_heavy_faults() {
        let mut c = SimConfig::for_seed(3);
        c.replicas = 5;
        c.loss = 0.15;
        c.duplicate = 0.1;
        c.max_delay_ms = 40;
        c.crash_rate = 1.0 / 300.0;
        c.partition_rate = 1.0 / 300.0;
        let r = run(&c).unwrap_or_else(|f| panic!("{f}"));
        assert!(r.accepted > 0);
    }

    #[test]
    fn single_replica_needs_no_network() {
        let mut c = SimConfig::for_seed(1);
        c.replicas = 1;
        let r = run(&c).unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(r.messages.0, 0);
    }

    #[test]
    fn view_rules_catch_a_bad_view() {
        let g = GroupId(1);
        let m = |p| MemberId::new(p, 1);
        let mut views = BTreeMap::new();
        let mut retired = BTreeMap::new();
        let v1 = View {
            group: g,
            id: ViewId(1),
            members: vec![m(1)],
            joined: vec![m(1)],
            left: vec![],
        };
        check_view_rules(&Event::NewView(v1.clone()), &mut views, &mut retired).unwrap();
        check_view_rules(&Event::Installed(v1), &mut views, &mut retired).unwrap();
        let bad = View {
            group: g,
            id: ViewId(2),
            members: vec![m(2), m(1)],
            joined: vec![m(2)],
            left: vec![],
        };
        assert!(check_view_rules(&Event::NewView(bad), &mut views, &mut retired).is_err());
        let skip = View {
            group: g,
            id: ViewId(3),
            members: vec![m(1), m(2)],
            joined: vec![m(2)],
            left: vec![],
        };
        assert!(check_view_rules(&Event::NewView(skip), &mut views, &mut retired).is_err());
    }
}
