//! [`OracleService`]: one oracle replica as members see it, sans-IO.
//!
//! It wraps a [`Replica`] (the raft-replicated [`crate::oracle::OracleState`]) and, while
//! that replica leads, a [`FailureDetector`] over every registered process: it turns member
//! messages ([`ToOracle`]) into proposals (registrations, membership requests, flush reports
//! and completions, failure decisions), answers heartbeats with the [`GroupStatus`] of every
//! group where the member is behind, and pushes statuses when a flush step commits. A
//! follower answers members with [`FromOracle::Redirect`]. The driver passes time in, feeds
//! peer datagrams and member messages, and sends whatever [`OracleService::poll_output`]
//! yields.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use vsync_dataplane::{GroupId, MemberId, Timestamp};

use crate::drmc::McParams;
use crate::fd::{FailureDetector, FdConfig, SuspectReason};
use crate::oracle::{
    Command, CommandError, Event, FailureReason, MemberStatus, ProposalId, Replica, Request,
};
use crate::proto::{FlushPhase, FlushStatus, FromOracle, GroupProgress, GroupStatus, ToOracle};

/// Timing of an oracle service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Failure detection of member processes (heartbeat interval and timeout).
    pub fd: FdConfig,
    /// Length of one raft tick (elections take 10–20 ticks, leader heartbeats every 2).
    pub tick: Duration,
    /// Dr. Multicast parameters the leader installs (`None`: no IP multicast mapping, every
    /// group uses unicast fan-out).
    pub multicast: Option<McParams>,
    /// How often the leader reports measured traffic and recomputes the mapping.
    pub remap_interval: Duration,
}

impl Default for ServiceConfig {
    /// Data-centre defaults: the failure detector's 100 ms / 1 s and raft ticks of 100 ms
    /// (elections after 1–2 s), as [`crate::config::ControlConfig`]'s defaults.
    fn default() -> Self {
        ServiceConfig {
            fd: FdConfig::default(),
            tick: Duration::from_millis(100),
            multicast: None,
            remap_interval: Duration::from_secs(60),
        }
    }
}

impl ServiceConfig {
    /// The service settings of a validated control-plane configuration (`VSYNC_FD_*`,
    /// `VSYNC_ORACLE_TICK_MS`, Dr. Multicast range, cap and unicast-only mode,
    /// `VSYNC_REMAP_INTERVAL_S`).
    pub fn from_control(c: &crate::config::ControlConfig) -> Self {
        ServiceConfig {
            fd: c.fd,
            tick: c.oracle_tick,
            multicast: Some(c.multicast),
            remap_interval: c.remap_interval,
        }
    }
}

/// Something the service wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceOutput {
    /// A raft datagram to another replica.
    ToReplica(u64, Vec<u8>),
    /// A message to a member process.
    ToMember(MemberId, FromOracle),
}

/// Counters of a service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Member messages handled.
    pub member_messages: u64,
    /// Proposals made.
    pub proposals: u64,
    /// Proposals refused by the replica (not leader, dropped).
    pub proposals_refused: u64,
    /// Failure decisions proposed.
    pub failures_proposed: u64,
    /// Flush messages dropped before proposing because the state already had them.
    pub flush_duplicates: u64,
}

/// One oracle replica serving members. See the module docs.
pub struct OracleService {
    replica: Replica,
    cfg: ServiceConfig,
    fd: FailureDetector,
    leading: bool,
    next_tick: Timestamp,
    out: VecDeque<ServiceOutput>,
    /// Member requests awaiting their commit: proposal → (member, seq).
    requests: BTreeMap<ProposalId, (MemberId, u64)>,
    /// Failures already proposed (not proposed twice while in flight).
    proposed_failures: BTreeSet<MemberId>,
    stats: ServiceStats,
    /// Per group, per member: the last reported send counter and when it was heard.
    traffic: BTreeMap<GroupId, BTreeMap<MemberId, (u64, Timestamp)>>,
    /// Per group: messages/s summed over members since the last remap.
    rates: BTreeMap<GroupId, u64>,
    /// Per group: members that say (in heartbeats) they still await their state.
    awaiting: BTreeMap<GroupId, BTreeSet<MemberId>>,
    next_remap: Timestamp,
}

impl std::fmt::Debug for OracleService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OracleService")
            .field("replica", &self.replica)
            .field("leading", &self.leading)
            .finish()
    }
}

impl OracleService {
    /// A service around `replica`, starting at `now`.
    pub fn new(replica: Replica, cfg: ServiceConfig, now: Timestamp) -> Self {
        let mut s = OracleService {
            replica,
            cfg,
            fd: FailureDetector::new(cfg.fd),
            leading: false,
            next_tick: now + cfg.tick,
            out: VecDeque::new(),
            requests: BTreeMap::new(),
            proposed_failures: BTreeSet::new(),
            stats: ServiceStats::default(),
            traffic: BTreeMap::new(),
            rates: BTreeMap::new(),
            awaiting: BTreeMap::new(),
            next_remap: now + cfg.remap_interval,
        };
        s.drain(now);
        s
    }

    /// The replica (state, raft status).
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// Gives the replica back (e.g. to keep its storage across a simulated crash).
    pub fn into_replica(self) -> Replica {
        self.replica
    }

    /// Counters.
    pub fn stats(&self) -> &ServiceStats {
        &self.stats
    }

    /// True while this replica leads (and so serves members).
    pub fn is_leader(&self) -> bool {
        self.replica.is_leader()
    }

    /// A raft datagram from another replica.
    pub fn handle_peer(&mut self, now: Timestamp, bytes: &[u8]) {
        let _ = self.replica.step(bytes);
        self.drain(now);
    }

    /// The next time [`OracleService::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Timestamp {
        let fd = if self.leading {
            self.fd.poll_timeout()
        } else {
            None
        };
        let t = fd.map_or(self.next_tick, |t| t.min(self.next_tick));
        if self.leading && self.cfg.multicast.is_some() {
            t.min(self.next_remap)
        } else {
            t
        }
    }

    /// Runs raft ticks and, while leading, failure detection.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while now >= self.next_tick {
            self.replica.tick();
            self.next_tick = self.next_tick + self.cfg.tick;
        }
        self.drain(now);
        if self.leading {
            // The oracle sends no heartbeats of its own; this only moves the detector's
            // send schedule so its deadline reflects expiries.
            let _ = self.fd.heartbeat_due(now);
            if now >= self.next_remap {
                self.next_remap = now + self.cfg.remap_interval;
                self.remap(now);
            }
            for s in self.fd.on_timeout(now) {
                let reason = match s.reason {
                    SuspectReason::Timeout { .. } => FailureReason::HeartbeatTimeout,
                    SuspectReason::Reported { by } => FailureReason::Reported { by },
                    SuspectReason::Restarted { new } => FailureReason::Superseded { by: new },
                };
                if self.proposed_failures.insert(s.member) {
                    self.stats.failures_proposed += 1;
                    self.propose(
                        now,
                        Command::ProcessFailed {
                            member: s.member,
                            reason,
                        },
                    );
                }
            }
        }
    }

    /// The next output to send.
    pub fn poll_output(&mut self) -> Option<ServiceOutput> {
        self.out.pop_front()
    }

    /// A message from a member process.
    pub fn handle_member(&mut self, now: Timestamp, msg: ToOracle) {
        self.stats.member_messages += 1;
        let member = msg.member();
        if !self.replica.is_leader() {
            let leader = self
                .replica
                .leader_hint()
                .filter(|l| *l != self.replica.id());
            self.send(member, FromOracle::Redirect { leader });
            return;
        }
        let status = self.replica.state().member_status(member);
        match status {
            MemberStatus::Poisoned(reason) => {
                self.send(member, FromOracle::Poisoned { member, reason });
                return;
            }
            MemberStatus::Stale { .. } => {
                self.send(
                    member,
                    FromOracle::Poisoned {
                        member,
                        reason: FailureReason::HeartbeatTimeout,
                    },
                );
                return;
            }
            MemberStatus::Unknown => {
                if let ToOracle::Hello { addr, .. } = msg {
                    self.propose(now, Command::RegisterProcess { member, addr });
                }
                // Anything else from an unregistered process waits for its Hello.
                return;
            }
            MemberStatus::Alive => {
                self.fd.on_heartbeat(now, member);
            }
        }
        match msg {
            // Answered by the replica's node, which knows the members' addresses.
            ToOracle::Lookup { .. } => {}
            ToOracle::Hello { .. } => {
                self.send(member, FromOracle::Welcome { member });
                self.answer_heartbeat(member, &[]);
            }
            ToOracle::Heartbeat { groups, .. } => {
                self.note_traffic(now, member, &groups);
                if !self.quorum_fresh() {
                    // Possibly deposed on the minority side of a partition: do not renew the
                    // member's lease (it must stop delivering before the majority excludes it).
                    return;
                }
                // Answered: the member's lease depends on hearing from us.
                self.send(member, FromOracle::Welcome { member });
                self.answer_heartbeat(member, &groups);
            }
            ToOracle::Request { seq, command, .. } => {
                let req = Request {
                    client: member.0,
                    seq,
                    command,
                };
                match self.replica.propose_request(&req) {
                    Ok(id) => {
                        self.stats.proposals += 1;
                        self.requests.insert(id, (member, seq));
                    }
                    Err(e) => {
                        self.stats.proposals_refused += 1;
                        self.send(
                            member,
                            FromOracle::Reply {
                                seq,
                                result: Err(e.to_string()),
                            },
                        );
                    }
                }
            }
            ToOracle::FlushReport {
                group,
                view,
                round,
                positions,
                ..
            } => {
                let state = self.replica.state();
                if state.flush_message_is_new(group, view, round, member, false) {
                    self.propose(
                        now,
                        Command::FlushReport {
                            group,
                            view,
                            round,
                            member,
                            positions,
                        },
                    );
                } else {
                    self.stats.flush_duplicates += 1;
                    self.push_status(group, Some(member));
                }
            }
            ToOracle::FlushDone {
                group, view, round, ..
            } => {
                let state = self.replica.state();
                if state.flush_message_is_new(group, view, round, member, true) {
                    self.propose(
                        now,
                        Command::FlushDone {
                            group,
                            view,
                            round,
                            member,
                        },
                    );
                } else {
                    self.stats.flush_duplicates += 1;
                    self.push_status(group, Some(member));
                }
            }
            ToOracle::Suspect { suspect, .. } => {
                self.fd.report_failed(suspect, member);
            }
        }
        self.drain(now);
    }

    /// Folds a heartbeat's send counters into the per-group rate estimate.
    fn note_traffic(&mut self, now: Timestamp, member: MemberId, groups: &[GroupProgress]) {
        for p in groups {
            let waiting = self.awaiting.entry(p.group).or_default();
            if p.awaiting_state {
                waiting.insert(member);
            } else {
                waiting.remove(&member);
            }
            let per = self.traffic.entry(p.group).or_default();
            if let Some((count, at)) = per.insert(member, (p.sent, now)) {
                let secs = now.saturating_since(at).as_secs_f64();
                if secs > 0.0 && p.sent >= count {
                    let rate = ((p.sent - count) as f64 / secs) as u64;
                    let r = self.rates.entry(p.group).or_default();
                    // Keep the largest per-member sample of the period, summed lazily below.
                    *r = (*r).max(rate);
                }
            }
        }
    }

    /// Dr. Multicast: reports the measured rates and recomputes the mapping (leader only).
    fn remap(&mut self, now: Timestamp) {
        let Some(params) = self.cfg.multicast else {
            return;
        };
        let rates: Vec<(GroupId, u64)> = std::mem::take(&mut self.rates).into_iter().collect();
        if !rates.is_empty() {
            self.propose(now, Command::SetTraffic { rates });
        }
        self.propose(now, Command::RemapMulticast { params });
    }

    /// True if the leader heard from a majority of replicas within half the failure-detection
    /// timeout (the member lease): members it answers cannot be excluded on the other side of
    /// a partition before their lease runs out. Always true for a single replica.
    fn quorum_fresh(&self) -> bool {
        let lease = self.cfg.fd.timeout / 2;
        let ticks = (lease.as_nanos() / self.cfg.tick.as_nanos().max(1)) as u64;
        self.replica.quorum_heard_within(ticks.max(2))
    }

    fn propose(&mut self, now: Timestamp, command: Command) {
        match self.replica.propose(command) {
            Ok(_) => self.stats.proposals += 1,
            Err(_) => self.stats.proposals_refused += 1,
        }
        self.drain(now);
    }

    fn send(&mut self, member: MemberId, msg: FromOracle) {
        self.out.push_back(ServiceOutput::ToMember(member, msg));
    }

    /// The status of `group` for a member (None if the group is gone).
    fn status(&self, group: GroupId) -> Option<GroupStatus> {
        let state = self.replica.state();
        let rec = state.group(group)?;
        let addrs = rec
            .installed
            .members
            .iter()
            .filter_map(|m| {
                state
                    .process(m.process())
                    .filter(|p| p.incarnation == m.incarnation())
                    .and_then(|p| p.addr)
                    .map(|a| (*m, a))
            })
            .collect();
        let awaiting = self
            .awaiting
            .get(&group)
            .map(|w| {
                w.iter()
                    .copied()
                    .filter(|m| rec.installed.members.contains(m))
                    .collect()
            })
            .unwrap_or_default();
        Some(GroupStatus {
            awaiting,
            installed: rec.installed.clone(),
            mcast: rec.mcast,
            flush: rec.flush.active.then(|| FlushStatus {
                round: rec.flush.round,
                cut: rec.flush.cut.clone(),
            }),
            addrs,
        })
    }

    /// Sends `group`'s status to `only`, or to every member of its installed view and of
    /// the next decided one.
    fn push_status(&mut self, group: GroupId, only: Option<MemberId>) {
        let Some(status) = self.status(group) else {
            if let Some(m) = only {
                let view = self.replica.state().departure_view(group);
                self.send(m, FromOracle::Gone { group, view });
            }
            return;
        };
        let targets: Vec<MemberId> = match only {
            Some(m) => vec![m],
            None => {
                let rec = self.replica.state().group(group).expect("status exists");
                let mut t: BTreeSet<MemberId> = rec.installed.members.iter().copied().collect();
                if let Some(next) = rec.pending.first() {
                    t.extend(next.members.iter().copied());
                }
                t.into_iter().collect()
            }
        };
        for m in targets {
            self.send(m, FromOracle::Status(status.clone()));
        }
    }

    fn answer_heartbeat(&mut self, member: MemberId, groups: &[GroupProgress]) {
        let mut listed = BTreeSet::new();
        for p in groups {
            listed.insert(p.group);
            let state = self.replica.state();
            let view = state.departure_view(p.group);
            let Some(rec) = state.group(p.group) else {
                self.send(
                    member,
                    FromOracle::Gone {
                        group: p.group,
                        view,
                    },
                );
                continue;
            };
            let in_installed = rec.installed.members.contains(&member);
            let in_pending = rec.pending.iter().any(|v| v.members.contains(&member));
            if !in_installed && !in_pending {
                self.send(
                    member,
                    FromOracle::Gone {
                        group: p.group,
                        view,
                    },
                );
                continue;
            }
            // Behind: another view, a flush step not taken, or (in the installed view) another
            // multicast mapping — the pushed remap status was lost or overtaken.
            let behind = p.view != rec.installed.id
                || p.mcast != rec.mcast
                || (rec.flush.active
                    && (p.round != rec.flush.round
                        || (rec.flush.cut.is_some() && p.phase < FlushPhase::Flushing)));
            if behind {
                self.push_status(p.group, Some(member));
            }
        }
        // Groups the member belongs to (or is joining) but did not list: it has no view yet.
        let joining: Vec<GroupId> = self
            .replica
            .state()
            .process(member.process())
            .map(|p| {
                p.groups
                    .iter()
                    .copied()
                    .filter(|g| !listed.contains(g))
                    .collect()
            })
            .unwrap_or_default();
        for g in joining {
            let ready = self
                .replica
                .state()
                .group(g)
                .is_some_and(|r| r.installed.members.contains(&member));
            if ready {
                self.push_status(g, Some(member));
            }
        }
    }

    /// Moves raft output out, reacts to leadership changes and committed entries.
    fn drain(&mut self, now: Timestamp) {
        loop {
            let output = self.replica.ready();
            let idle = output.messages.is_empty()
                && output.committed.is_empty()
                && output.snapshot.is_none();
            for (to, bytes) in output.messages {
                self.out.push_back(ServiceOutput::ToReplica(to, bytes));
            }
            if output.snapshot.is_some() {
                self.requests.clear();
            }
            for c in output.committed {
                let result = c.result;
                if let Some((member, seq)) = c.proposal.and_then(|p| self.requests.remove(&p)) {
                    let reply = match &result {
                        Ok(_) | Err(CommandError::Duplicate { refused: None, .. }) => Ok(()),
                        Err(CommandError::Duplicate {
                            refused: Some(e), ..
                        }) => Err(e.clone()),
                        Err(e) => Err(e.to_string()),
                    };
                    self.send(member, FromOracle::Reply { seq, result: reply });
                }
                if let Ok(events) = result {
                    self.on_events(now, &events);
                }
            }
            let leading = self.replica.is_leader();
            if leading && !self.leading {
                // New leader: monitor every live process with a full timeout of grace.
                self.fd = FailureDetector::new(self.cfg.fd);
                self.proposed_failures.clear();
                let live: Vec<MemberId> = self
                    .replica
                    .state()
                    .processes()
                    .filter(|(_, p)| p.status == crate::oracle::ProcessStatus::Alive)
                    .map(|(n, p)| p.member(*n))
                    .collect();
                for m in live {
                    self.fd.monitor(now, m);
                }
                // Install the configured Dr. Multicast parameters if the state lacks them.
                if let Some(params) = self.cfg.multicast {
                    if self.replica.state().mc_params() != Some(&params) {
                        let _ = self.replica.propose(Command::RemapMulticast { params });
                    }
                }
                self.next_remap = now + self.cfg.remap_interval;
            }
            if !leading {
                self.requests.clear();
            }
            self.leading = leading;
            if idle {
                break;
            }
        }
    }

    fn on_events(&mut self, now: Timestamp, events: &[Event]) {
        let mut touched = BTreeSet::new();
        for e in events {
            match e {
                Event::ProcessRegistered { member } => {
                    self.fd.monitor(now, *member);
                    if self.replica.is_leader() {
                        self.send(*member, FromOracle::Welcome { member: *member });
                    }
                }
                Event::Poisoned { member, reason } => {
                    self.fd.unmonitor(*member);
                    if self.replica.is_leader() {
                        self.send(
                            *member,
                            FromOracle::Poisoned {
                                member: *member,
                                reason: *reason,
                            },
                        );
                    }
                }
                Event::Wedge { group, .. }
                | Event::FlushCut { group, .. }
                | Event::McastAddress { group, .. } => {
                    touched.insert(*group);
                }
                Event::Installed(v) => {
                    touched.insert(v.group);
                }
                Event::NewView(_) | Event::GroupTerminated { .. } => {}
            }
        }
        if self.replica.is_leader() {
            for g in touched {
                self.push_status(g, None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle::{ReplicaConfig, Signature};

    fn drain(s: &mut OracleService) -> Vec<FromOracle> {
        let mut v = Vec::new();
        while let Some(o) = s.poll_output() {
            if let ServiceOutput::ToMember(_, m) = o {
                v.push(m);
            }
        }
        v
    }

    /// A one-replica service with Dr. Multicast on, and member 1.1 said hello.
    fn multicast_service_with_member() -> (OracleService, Timestamp, MemberId) {
        let cfg = ServiceConfig {
            multicast: Some(McParams::default()),
            ..ServiceConfig::default()
        };
        let t0 = Timestamp::from_nanos(1);
        let mut s = OracleService::new(Replica::new(ReplicaConfig::single()).unwrap(), cfg, t0);
        let me = MemberId::new(1, 1);
        s.handle_member(
            t0,
            ToOracle::Hello {
                member: me,
                addr: None,
            },
        );
        (s, t0, me)
    }

    #[test]
    fn embedded_service_registers_creates_and_maps_multicast() {
        let (mut s, t0, me) = multicast_service_with_member();
        assert!(drain(&mut s).contains(&FromOracle::Welcome { member: me }));
        s.handle_member(
            t0,
            ToOracle::Request {
                member: me,
                seq: 1,
                command: Command::CreateGroup {
                    name: "g".into(),
                    signature: Signature::from_text("S"),
                    // Auto maps only groups of two or more; UseIpmc asks for an address now.
                    policy: crate::drmc::McPolicy::UseIpmc,
                    creator: me,
                },
            },
        );
        let out = drain(&mut s);
        assert!(
            out.contains(&FromOracle::Reply {
                seq: 1,
                result: Ok(())
            }),
            "{out:?}"
        );
        let status = out
            .iter()
            .rev()
            .find_map(|m| match m {
                FromOracle::Status(st) => Some(st.clone()),
                _ => None,
            })
            .expect("a status");
        assert_eq!(status.installed.members, vec![me]);
        assert!(
            status.mcast.is_some(),
            "Dr. Multicast maps the group: {status:?}"
        );
        // A retried request gets its original answer, a refused one its original error.
        s.handle_member(
            t0,
            ToOracle::Request {
                member: me,
                seq: 2,
                command: Command::Leave {
                    group: crate::oracle::group_id("nope"),
                    member: me,
                },
            },
        );
        let first = drain(&mut s);
        s.handle_member(
            t0,
            ToOracle::Request {
                member: me,
                seq: 2,
                command: Command::Leave {
                    group: crate::oracle::group_id("nope"),
                    member: me,
                },
            },
        );
        let again = drain(&mut s);
        let err = |v: &[FromOracle]| {
            v.iter().find_map(|m| match m {
                FromOracle::Reply { seq: 2, result } => Some(result.clone()),
                _ => None,
            })
        };
        assert!(err(&first).unwrap().is_err());
        assert_eq!(err(&first), err(&again));
    }

    /// Regression (issue #3): a remap within a view is pushed once; if that status is lost
    /// (or overtaken by an older one), the member's heartbeat shows the stale mapping and
    /// the oracle sends the status again. Before, only views and flush steps counted as
    /// "behind", so such a member kept the old route until the next view: its sends went
    /// to an address its peers had left, or it never joined the group's new address.
    #[test]
    fn a_member_with_a_stale_multicast_mapping_gets_the_status_again() {
        let (mut s, t0, me) = multicast_service_with_member();
        s.handle_member(
            t0,
            ToOracle::Request {
                member: me,
                seq: 1,
                command: Command::CreateGroup {
                    name: "g".into(),
                    signature: Signature::from_text("S"),
                    policy: crate::drmc::McPolicy::UseIpmc,
                    creator: me,
                },
            },
        );
        let status = |out: &[FromOracle]| {
            out.iter().find_map(|m| match m {
                FromOracle::Status(st) => Some(st.clone()),
                _ => None,
            })
        };
        let st = status(&drain(&mut s)).expect("the group's status");
        let mapped = st.mcast.expect("UseIpmc maps the group");
        let heartbeat = |mcast| ToOracle::Heartbeat {
            member: me,
            groups: vec![GroupProgress {
                group: st.installed.group,
                view: st.installed.id,
                round: 0,
                phase: FlushPhase::Idle,
                sent: 0,
                awaiting_state: false,
                mcast,
            }],
        };
        // The member missed the status that mapped the group: it is sent again, per heartbeat.
        for _ in 0..2 {
            s.handle_member(t0, heartbeat(None));
            let again = status(&drain(&mut s)).expect("the status again");
            assert_eq!(again.mcast, Some(mapped));
        }
        // A member in step gets no status.
        s.handle_member(t0, heartbeat(Some(mapped)));
        assert_eq!(status(&drain(&mut s)), None);
    }

    #[test]
    fn a_silent_member_is_excluded_and_told_it_was_poisoned() {
        let cfg = ServiceConfig::default();
        let t0 = Timestamp::from_nanos(1);
        let mut s = OracleService::new(Replica::new(ReplicaConfig::single()).unwrap(), cfg, t0);
        let me = MemberId::new(1, 1);
        s.handle_member(
            t0,
            ToOracle::Hello {
                member: me,
                addr: None,
            },
        );
        drain(&mut s);
        let later = t0 + Duration::from_secs(2);
        s.handle_timeout(later);
        s.handle_timeout(later + Duration::from_millis(1));
        let out = drain(&mut s);
        assert!(
            out.iter()
                .any(|m| matches!(m, FromOracle::Poisoned { member, .. } if *member == me)),
            "{out:?}"
        );
        s.handle_member(
            later,
            ToOracle::Heartbeat {
                member: me,
                groups: vec![],
            },
        );
        assert!(matches!(drain(&mut s)[..], [FromOracle::Poisoned { .. }]));
    }
}
