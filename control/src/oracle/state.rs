//! The oracle's replicated state machine ([`OracleState`]): processes with their incarnations
//! and liveness, groups with their stable ids, signatures, policies and current views, and
//! the Dr. Multicast mapping.
//!
//! Every replica applies the same [`Request`]s in the same (log) order and therefore holds the
//! same state and emits the same [`Event`]s. To keep that true the state machine is
//! deterministic by construction: ordered maps only (`BTreeMap`/`BTreeSet`), no clocks, no
//! randomness, no hashing with per-process seeds, and a refused command changes nothing
//! (every command is validated completely before anything is mutated).
//!
//! # View rules
//!
//! * A group's first view has id 1 and holds its creator. Each membership change decides
//!   **one** next view per affected group per command (a batch of joins and leaves is one
//!   view), with id = installed + 1.
//! * `members` lists survivors in their previous order followed by joiners in request order,
//!   so rank (the index) is join order and a member's rank never increases.
//! * A group whose last member leaves or fails terminates; its last view id is remembered so
//!   a later group of the same name continues the view numbering (no stale view is ever
//!   confused with a new one).
//! * **Decided vs installed.** A command's view is *decided* at once ([`Event::NewView`]):
//!   the next view, id = installed + 1, relative to the installed view (survivors in their
//!   order, then joiners). While a flush is pending, a further decision *replaces* the pending
//!   next view (Isis² batches membership changes that arrive during a view change), so
//!   members install one view per flush and view ids stay consecutive. Members install the
//!   next view after a flush of the installed one (virtual synchrony): [`Event::Wedge`] asks every live member of the
//!   installed view to wedge and report what it holds ([`Command::FlushReport`]); when all
//!   did, [`Event::FlushCut`] fixes, per sender, the maximum any reporter holds and who holds
//!   it; when every reporter holds and delivered its cut ([`Command::FlushDone`]), the next
//!   decided view is [`Event::Installed`]. A reporter failing after the cut restarts the
//!   flush in a new round (a dead holder may have been needed); before the cut its report is
//!   simply ignored. With no live reporter the next view installs at once.
//! * A failed or superseded incarnation is removed from every group and stays excluded
//!   forever: any later request naming it is refused as [`CommandError::Poisoned`] /
//!   [`CommandError::StaleIncarnation`], and [`OracleState::member_status`] tells a driver to
//!   answer its packets with a poison notice.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};

use vsync_dataplane::{GroupId, MemberId, ViewId};

use super::command::{
    get_group, get_ipv4, get_params, get_policy, get_reason, get_signature, get_sockaddr,
    get_view_body, group_id, put_group, put_ipv4, put_params, put_policy, put_reason,
    put_signature, put_sockaddr, put_view_body, Command, CommandError, CutPoint, Event,
    FailureReason, GroupJoin, GroupLeave, Request, Signature, View, MAX_GROUP_NAME,
};
use crate::codec::{DecodeError, Reader, Writer};
use crate::drmc::{self, GroupLoad, McParams, McPolicy};

/// Liveness of a registered process incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessStatus {
    /// Alive and allowed in groups.
    Alive,
    /// Declared failed; excluded for good.
    Failed(FailureReason),
}

/// What the oracle knows about one process (by process number).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessRecord {
    /// The current (latest registered) incarnation.
    pub incarnation: u32,
    /// Its liveness.
    pub status: ProcessStatus,
    /// Its data-plane address, if registered with one.
    pub addr: Option<SocketAddr>,
    /// Groups the current incarnation belongs to.
    pub groups: BTreeSet<GroupId>,
}

impl ProcessRecord {
    /// The current incarnation as a member address.
    pub fn member(&self, process: u32) -> MemberId {
        MemberId::new(process, self.incarnation)
    }
}

/// What the oracle knows about one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRecord {
    /// The group's name (its id is the hash of it).
    pub name: String,
    /// The signature joiners must match.
    pub signature: Signature,
    /// IP-multicast preference.
    pub policy: McPolicy,
    /// The latest decided view (the base of the next membership change).
    pub view: View,
    /// Last reported traffic rate (messages/s).
    pub traffic: u64,
    /// Physical IP-multicast address, `None` for unicast fan-out.
    pub mcast: Option<Ipv4Addr>,
    /// The view its members have installed (all live ones flushed into it).
    pub installed: View,
    /// Decided views not installed yet, in order (the first is being flushed into).
    pub pending: Vec<View>,
    /// The flush of `installed` toward `pending[0]`.
    pub flush: FlushRound,
}

/// Progress of one group's flush (view change) from its installed view to the next decided
/// one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlushRound {
    /// The round number (per group, increasing; 0 = none yet).
    pub round: u32,
    /// True while a round is announced and running.
    pub active: bool,
    /// Reports received this round: reporter → `(sender, last frame held)`.
    pub reports: BTreeMap<MemberId, Vec<(MemberId, u64)>>,
    /// The cut, once every live reporter reported.
    pub cut: Option<Vec<CutPoint>>,
    /// Reporters that reached and delivered the cut.
    pub done: BTreeSet<MemberId>,
}

/// How the oracle regards a member address that sent something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberStatus {
    /// The current, live incarnation.
    Alive,
    /// Excluded: it must be told it was poisoned and restart under a new incarnation.
    Poisoned(FailureReason),
    /// An incarnation older than the current one (also to be poisoned).
    Stale {
        /// The current incarnation.
        current: MemberId,
    },
    /// Never registered (or a newer incarnation not yet registered).
    Unknown,
}

/// The replicated membership state. See the module docs for its rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OracleState {
    processes: BTreeMap<u32, ProcessRecord>,
    groups: BTreeMap<GroupId, GroupRecord>,
    /// Last view id of terminated groups, so a re-created group continues the numbering.
    retired: BTreeMap<GroupId, ViewId>,
    /// Last applied request number per client (duplicate suppression).
    clients: BTreeMap<u64, (u64, Option<String>)>,
    /// Dr. Multicast parameters, once set.
    mc_params: Option<McParams>,
    /// Requests applied (accepted or refused).
    applied: u64,
    /// Groups with decided views not installed yet.
    flushing: BTreeSet<GroupId>,
}

/// Membership test over a view's members: a linear scan for a few probes, a sorted copy
/// (binary search) when a batch probes many times.
enum MemberSet<'a> {
    Scan(&'a [MemberId]),
    Sorted(Vec<MemberId>),
}

impl<'a> MemberSet<'a> {
    fn new(members: &'a [MemberId], probes: usize) -> Self {
        if probes <= 8 {
            MemberSet::Scan(members)
        } else {
            let mut v = members.to_vec();
            v.sort_unstable();
            MemberSet::Sorted(v)
        }
    }

    fn contains(&self, m: &MemberId) -> bool {
        match self {
            MemberSet::Scan(s) => s.contains(m),
            MemberSet::Sorted(v) => v.binary_search(m).is_ok(),
        }
    }
}

/// Pending membership change of one group within one command.
#[derive(Default)]
struct Delta {
    joined: Vec<MemberId>,
    left: BTreeSet<MemberId>,
}

impl OracleState {
    /// An empty state: no processes, no groups, no multicast mapping.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests applied so far (accepted or refused).
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// A group's record.
    pub fn group(&self, group: GroupId) -> Option<&GroupRecord> {
        self.groups.get(&group)
    }

    /// The view a "you are not in this group" notice is stamped with: the installed view, or
    /// one past the last view of a terminated group (`u32::MAX` if the group is unknown). A
    /// member holding that view or a newer one of the group ignores the notice as stale.
    pub fn departure_view(&self, group: GroupId) -> ViewId {
        match (self.groups.get(&group), self.retired.get(&group)) {
            (Some(rec), _) => rec.installed.id,
            (None, Some(last)) => ViewId(last.0.saturating_add(1)),
            (None, None) => ViewId(u32::MAX),
        }
    }

    /// A group's current view.
    pub fn view(&self, group: GroupId) -> Option<&View> {
        self.groups.get(&group).map(|g| &g.view)
    }

    /// All groups, in id order.
    pub fn groups(&self) -> impl Iterator<Item = (&GroupId, &GroupRecord)> {
        self.groups.iter()
    }

    /// A process's record.
    pub fn process(&self, process: u32) -> Option<&ProcessRecord> {
        self.processes.get(&process)
    }

    /// All processes, in process-number order.
    pub fn processes(&self) -> impl Iterator<Item = (&u32, &ProcessRecord)> {
        self.processes.iter()
    }

    /// The Dr. Multicast parameters in force, if set.
    pub fn mc_params(&self) -> Option<&McParams> {
        self.mc_params.as_ref()
    }

    /// How the oracle regards `member` (e.g. to answer a heartbeat with a poison notice).
    pub fn member_status(&self, member: MemberId) -> MemberStatus {
        let Some(rec) = self.processes.get(&member.process()) else {
            return MemberStatus::Unknown;
        };
        match member.incarnation().cmp(&rec.incarnation) {
            std::cmp::Ordering::Less => MemberStatus::Stale {
                current: rec.member(member.process()),
            },
            std::cmp::Ordering::Greater => MemberStatus::Unknown,
            std::cmp::Ordering::Equal => match rec.status {
                ProcessStatus::Alive => MemberStatus::Alive,
                ProcessStatus::Failed(reason) => MemberStatus::Poisoned(reason),
            },
        }
    }

    /// Applies one logged request: duplicate suppression by `(client, seq)`, then
    /// [`OracleState::apply`]. The request counts as decided (its `seq` is recorded) whether
    /// the command was accepted or refused.
    pub fn apply_request(&mut self, req: &Request) -> Result<Vec<Event>, CommandError> {
        self.applied += 1;
        if req.client != 0 {
            let (last, refused) = self.clients.get(&req.client).cloned().unwrap_or((0, None));
            if req.seq <= last {
                return Err(CommandError::Duplicate {
                    client: req.client,
                    seq: req.seq,
                    last,
                    refused: if req.seq == last { refused } else { None },
                });
            }
            let result = self.apply_command(&req.command);
            let refused = result.as_ref().err().map(|e| e.to_string());
            self.clients.insert(req.client, (req.seq, refused));
            return result;
        }
        self.apply_command(&req.command)
    }

    /// Applies one command. On error nothing changed.
    pub fn apply(&mut self, cmd: &Command) -> Result<Vec<Event>, CommandError> {
        self.applied += 1;
        self.apply_command(cmd)
    }

    fn apply_command(&mut self, cmd: &Command) -> Result<Vec<Event>, CommandError> {
        let mut events = Vec::new();
        let mut deltas: BTreeMap<GroupId, Delta> = BTreeMap::new();
        let mut membership_changed = false;
        match cmd {
            Command::RegisterProcess { member, addr } => {
                let process = member.process();
                match self.processes.get(&process) {
                    Some(rec) if rec.incarnation == member.incarnation() => {
                        return match rec.status {
                            // Re-registration of the live incarnation: idempotent.
                            ProcessStatus::Alive => Ok(events),
                            ProcessStatus::Failed(reason) => Err(CommandError::Poisoned {
                                member: *member,
                                reason,
                            }),
                        };
                    }
                    Some(rec) if rec.incarnation > member.incarnation() => {
                        return Err(CommandError::StaleIncarnation {
                            member: *member,
                            current: rec.member(process),
                        });
                    }
                    // A newer incarnation supersedes a live older one.
                    Some(rec) if rec.status == ProcessStatus::Alive => {
                        let old = rec.member(process);
                        let reason = FailureReason::Superseded { by: *member };
                        for g in &rec.groups {
                            deltas.entry(*g).or_default().left.insert(old);
                        }
                        events.push(Event::Poisoned {
                            member: old,
                            reason,
                        });
                    }
                    // No record, or an older incarnation already excluded.
                    _ => {}
                }
                self.commit_deltas(std::mem::take(&mut deltas), &mut events);
                membership_changed = true;
                self.processes.insert(
                    process,
                    ProcessRecord {
                        incarnation: member.incarnation(),
                        status: ProcessStatus::Alive,
                        addr: *addr,
                        groups: BTreeSet::new(),
                    },
                );
                events.push(Event::ProcessRegistered { member: *member });
            }
            Command::CreateGroup {
                name,
                signature,
                policy,
                creator,
            } => {
                if name.is_empty() || name.len() > MAX_GROUP_NAME {
                    return Err(CommandError::InvalidName { len: name.len() });
                }
                let group = group_id(name);
                if let Some(existing) = self.groups.get(&group) {
                    return Err(if existing.name == *name {
                        CommandError::GroupExists {
                            group,
                            name: name.clone(),
                        }
                    } else {
                        CommandError::NameCollision {
                            group,
                            existing: existing.name.clone(),
                            requested: name.clone(),
                        }
                    });
                }
                self.check_alive(*creator)?;
                let id = self
                    .retired
                    .remove(&group)
                    .map_or(ViewId(1), |last| ViewId(last.0.wrapping_add(1)));
                let view = View {
                    group,
                    id,
                    members: vec![*creator],
                    joined: vec![*creator],
                    left: Vec::new(),
                };
                self.groups.insert(
                    group,
                    GroupRecord {
                        name: name.clone(),
                        signature: signature.clone(),
                        policy: *policy,
                        view: view.clone(),
                        traffic: 0,
                        mcast: None,
                        installed: view.clone(),
                        pending: Vec::new(),
                        flush: FlushRound::default(),
                    },
                );
                if let Some(p) = self.processes.get_mut(&creator.process()) {
                    p.groups.insert(group);
                }
                events.push(Event::NewView(view.clone()));
                events.push(Event::Installed(view));
                membership_changed = true;
            }
            Command::Join {
                group,
                member,
                signature,
            } => {
                let join = GroupJoin {
                    group: *group,
                    signature: signature.clone(),
                    members: vec![*member],
                };
                self.validate_join(&join)?;
                deltas.entry(*group).or_default().joined.push(*member);
            }
            Command::Leave { group, member } => {
                let leave = GroupLeave {
                    group: *group,
                    members: vec![*member],
                };
                self.validate_leave(&leave)?;
                deltas.entry(*group).or_default().left.insert(*member);
            }
            Command::Terminate { group } => {
                if !self.groups.contains_key(group) {
                    return Err(CommandError::UnknownGroup { group: *group });
                }
                self.terminate(*group, &mut events);
                membership_changed = true;
            }
            Command::MultiJoin { joins } => {
                validate_batch("MultiJoin", joins, |j| j.group, |j| self.validate_join(j))?;
                for join in joins {
                    deltas
                        .entry(join.group)
                        .or_default()
                        .joined
                        .extend_from_slice(&join.members);
                }
            }
            Command::MultiLeave { leaves } => {
                validate_batch(
                    "MultiLeave",
                    leaves,
                    |l| l.group,
                    |l| self.validate_leave(l),
                )?;
                for leave in leaves {
                    deltas
                        .entry(leave.group)
                        .or_default()
                        .left
                        .extend(leave.members.iter().copied());
                }
            }
            Command::ProcessFailed { member, reason } => {
                match self.member_status(*member) {
                    MemberStatus::Unknown => {
                        return Err(CommandError::NotRegistered { member: *member })
                    }
                    MemberStatus::Stale { current } => {
                        return Err(CommandError::StaleIncarnation {
                            member: *member,
                            current,
                        })
                    }
                    // Already excluded: further reports change nothing.
                    MemberStatus::Poisoned(_) => return Ok(events),
                    MemberStatus::Alive => {}
                }
                if let Some(rec) = self.processes.get_mut(&member.process()) {
                    rec.status = ProcessStatus::Failed(*reason);
                    for g in &rec.groups {
                        deltas.entry(*g).or_default().left.insert(*member);
                    }
                }
                events.push(Event::Poisoned {
                    member: *member,
                    reason: *reason,
                });
            }
            Command::SetPolicy { group, policy } => {
                let rec = self
                    .groups
                    .get_mut(group)
                    .ok_or(CommandError::UnknownGroup { group: *group })?;
                rec.policy = *policy;
                membership_changed = true;
            }
            Command::SetTraffic { rates } => {
                for (group, rate) in rates {
                    if let Some(rec) = self.groups.get_mut(group) {
                        rec.traffic = *rate;
                    }
                }
            }
            Command::RemapMulticast { params } => {
                params.validate().map_err(|e| CommandError::BadParams {
                    reason: e.to_string(),
                })?;
                self.mc_params = Some(*params);
                membership_changed = true;
            }
            Command::FlushReport {
                group,
                view,
                round,
                member,
                positions,
            } => {
                self.check_flush(*group, *view, *round, *member, false)?;
                let rec = self.groups.get_mut(group).expect("checked");
                let positions = positions
                    .iter()
                    .filter(|(s, _)| rec.installed.members.contains(s))
                    .copied()
                    .collect();
                rec.flush.reports.insert(*member, positions);
                self.advance_flush(*group, &mut events);
            }
            Command::FlushDone {
                group,
                view,
                round,
                member,
            } => {
                self.check_flush(*group, *view, *round, *member, true)?;
                let rec = self.groups.get_mut(group).expect("checked");
                rec.flush.done.insert(*member);
                self.advance_flush(*group, &mut events);
            }
        }
        if !deltas.is_empty() {
            self.commit_deltas(deltas, &mut events);
            membership_changed = true;
        }
        if matches!(
            cmd,
            Command::ProcessFailed { .. } | Command::RegisterProcess { .. }
        ) {
            self.restart_flushes_after_failure(&mut events);
        }
        if membership_changed {
            self.remap(&mut events);
        }
        Ok(events)
    }

    /// The member must be the current, live incarnation of a registered process.
    fn check_alive(&self, member: MemberId) -> Result<(), CommandError> {
        match self.member_status(member) {
            MemberStatus::Alive => Ok(()),
            MemberStatus::Unknown => Err(CommandError::NotRegistered { member }),
            MemberStatus::Stale { current } => {
                Err(CommandError::StaleIncarnation { member, current })
            }
            MemberStatus::Poisoned(reason) => Err(CommandError::Poisoned { member, reason }),
        }
    }

    fn validate_join(&self, join: &GroupJoin) -> Result<(), CommandError> {
        let rec = self
            .groups
            .get(&join.group)
            .ok_or(CommandError::UnknownGroup { group: join.group })?;
        if rec.signature.hash != join.signature.hash {
            return Err(CommandError::SignatureMismatch {
                group: join.group,
                group_signature: rec.signature.clone(),
                joiner_signature: join.signature.clone(),
            });
        }
        if join.members.is_empty() {
            return Err(CommandError::BadBatch {
                reason: format!("no members listed for {}", join.group),
            });
        }
        let mut seen = BTreeSet::new();
        let current = MemberSet::new(&rec.view.members, join.members.len());
        for m in &join.members {
            self.check_alive(*m)?;
            if current.contains(m) {
                return Err(CommandError::AlreadyMember {
                    group: join.group,
                    member: *m,
                });
            }
            if !seen.insert(*m) {
                return Err(CommandError::BadBatch {
                    reason: format!("{m} listed twice for {}", join.group),
                });
            }
        }
        Ok(())
    }

    fn validate_leave(&self, leave: &GroupLeave) -> Result<(), CommandError> {
        let rec = self
            .groups
            .get(&leave.group)
            .ok_or(CommandError::UnknownGroup { group: leave.group })?;
        if leave.members.is_empty() {
            return Err(CommandError::BadBatch {
                reason: format!("no members listed for {}", leave.group),
            });
        }
        let mut seen = BTreeSet::new();
        let current = MemberSet::new(&rec.view.members, leave.members.len());
        for m in &leave.members {
            if !current.contains(m) {
                return Err(CommandError::NotMember {
                    group: leave.group,
                    member: *m,
                });
            }
            if !seen.insert(*m) {
                return Err(CommandError::BadBatch {
                    reason: format!("{m} listed twice for {}", leave.group),
                });
            }
        }
        Ok(())
    }

    /// Installs one new view per group in `deltas` (terminating groups left empty).
    fn commit_deltas(&mut self, deltas: BTreeMap<GroupId, Delta>, events: &mut Vec<Event>) {
        for (group, delta) in deltas {
            let Some(rec) = self.groups.get_mut(&group) else {
                continue;
            };
            // Survivors keep their order; only members actually present count as having left
            // (listed in rank order).
            let (mut members, gone): (Vec<MemberId>, Vec<MemberId>) = if delta.left.is_empty() {
                (rec.view.members.clone(), Vec::new())
            } else {
                let leaving: Vec<MemberId> = delta.left.iter().copied().collect(); // sorted
                rec.view
                    .members
                    .iter()
                    .partition(|m| leaving.binary_search(m).is_err())
            };
            members.extend_from_slice(&delta.joined);
            for m in &gone {
                if let Some(p) = self.processes.get_mut(&m.process()) {
                    if p.incarnation == m.incarnation() {
                        p.groups.remove(&group);
                    }
                }
            }
            if members.is_empty() {
                self.terminate(group, events);
                continue;
            }
            for m in &delta.joined {
                if let Some(p) = self.processes.get_mut(&m.process()) {
                    p.groups.insert(group);
                }
            }
            // The next view, relative to the installed one: survivors of the installed view in
            // their order, then everyone else in decision order. While a flush is pending, a
            // new decision replaces the pending next view (Isis² batches membership changes
            // that arrive during a view change), so members install one view per flush.
            let installed = &rec.installed;
            let in_next = MemberSet::new(&members, installed.members.len());
            let mut ordered: Vec<MemberId> = installed
                .members
                .iter()
                .copied()
                .filter(|m| in_next.contains(m))
                .collect();
            let in_installed = MemberSet::new(&installed.members, members.len());
            let joined: Vec<MemberId> = members
                .iter()
                .copied()
                .filter(|m| !in_installed.contains(m))
                .collect();
            ordered.extend_from_slice(&joined);
            let left: Vec<MemberId> = installed
                .members
                .iter()
                .copied()
                .filter(|m| !in_next.contains(m))
                .collect();
            let view = View {
                group,
                id: ViewId(installed.id.0.wrapping_add(1)),
                members: ordered,
                joined,
                left,
            };
            rec.view = view.clone();
            rec.pending.clear();
            rec.pending.push(view.clone());
            self.flushing.insert(group);
            events.push(Event::NewView(view));
            self.advance_flush(group, events);
        }
    }

    /// True if a flush report (`done` false) or completion from `member` would change the
    /// state now: it matches the flush in progress and was not recorded yet. The oracle
    /// leader uses it to drop repeats before proposing them.
    pub fn flush_message_is_new(
        &self,
        group: GroupId,
        view: ViewId,
        round: u32,
        member: MemberId,
        done: bool,
    ) -> bool {
        self.check_flush(group, view, round, member, done).is_ok()
            && self.groups.get(&group).is_some_and(|g| {
                if done {
                    !g.flush.done.contains(&member)
                } else {
                    !g.flush.reports.contains_key(&member)
                }
            })
    }

    /// True if `member` is the live current incarnation of its process.
    fn is_alive(&self, member: MemberId) -> bool {
        self.member_status(member) == MemberStatus::Alive
    }

    /// Validates a flush report (`done` false) or completion against the group's flush.
    fn check_flush(
        &self,
        group: GroupId,
        view: ViewId,
        round: u32,
        member: MemberId,
        done: bool,
    ) -> Result<(), CommandError> {
        let rec = self
            .groups
            .get(&group)
            .ok_or(CommandError::UnknownGroup { group })?;
        let stale = |reason: String| Err(CommandError::StaleFlush { group, reason });
        if !rec.flush.active {
            return stale("no flush in progress".into());
        }
        if view != rec.installed.id || round != rec.flush.round {
            return stale(format!(
                "for view {} round {round}; the flush is of view {} round {}",
                view.0, rec.installed.id.0, rec.flush.round
            ));
        }
        if !rec.installed.members.contains(&member) || !self.is_alive(member) {
            return stale(format!("{member} is not a live member of view {}", view.0));
        }
        match (done, rec.flush.cut.is_some()) {
            (false, true) => stale("the cut of this round is already decided".into()),
            (true, false) => stale("no cut decided yet in this round".into()),
            _ => Ok(()),
        }
    }

    /// After a process failed (or was superseded): a flush whose cut is decided restarts if
    /// one of its reporters died (a dead holder may have been needed); any flush may now be
    /// able to progress without the dead reporter.
    fn restart_flushes_after_failure(&mut self, events: &mut Vec<Event>) {
        let flushing: Vec<GroupId> = self.flushing.iter().copied().collect();
        for group in flushing {
            let Some(rec) = self.groups.get(&group) else {
                continue;
            };
            let dead_reporter = rec
                .flush
                .reports
                .keys()
                .any(|m| self.member_status(*m) != MemberStatus::Alive);
            if rec.flush.active && rec.flush.cut.is_some() && dead_reporter {
                let rec = self.groups.get_mut(&group).expect("present");
                rec.flush.active = false;
            }
            self.advance_flush(group, events);
        }
    }

    /// Moves a group's flush forward as far as its state allows: announces a round, decides
    /// the cut, installs the next view (repeatedly, while possible).
    fn advance_flush(&mut self, group: GroupId, events: &mut Vec<Event>) {
        loop {
            let Some(rec) = self.groups.get(&group) else {
                self.flushing.remove(&group);
                return;
            };
            if rec.pending.is_empty() {
                self.flushing.remove(&group);
                return;
            }
            let reporters: Vec<MemberId> = rec
                .installed
                .members
                .iter()
                .copied()
                .filter(|m| self.is_alive(*m))
                .collect();
            let all_done =
                rec.flush.cut.is_some() && reporters.iter().all(|m| rec.flush.done.contains(m));
            if reporters.is_empty() || (rec.flush.active && all_done) {
                let rec = self.groups.get_mut(&group).expect("present");
                let next = rec.pending.remove(0);
                rec.installed = next.clone();
                rec.flush.active = false;
                rec.flush.reports.clear();
                rec.flush.cut = None;
                rec.flush.done.clear();
                events.push(Event::Installed(next));
                continue;
            }
            if !rec.flush.active {
                let rec = self.groups.get_mut(&group).expect("present");
                rec.flush.round = rec.flush.round.wrapping_add(1);
                rec.flush.active = true;
                rec.flush.reports.clear();
                rec.flush.cut = None;
                rec.flush.done.clear();
                events.push(Event::Wedge {
                    group,
                    view: rec.installed.id,
                    round: rec.flush.round,
                });
                continue;
            }
            if rec.flush.cut.is_none()
                && reporters.iter().all(|m| rec.flush.reports.contains_key(m))
            {
                let mut cut = Vec::new();
                let position = |r: &MemberId, sender: &MemberId| {
                    rec.flush.reports[r]
                        .iter()
                        .find(|(s, _)| s == sender)
                        .map_or(0, |(_, p)| *p)
                };
                for sender in &rec.installed.members {
                    // Nobody can hold more of a stream than its sender admitted: a live
                    // sender's own report caps the others' (a buggy report cannot stall the
                    // flush waiting for frames that never existed).
                    let cap = if reporters.contains(sender) {
                        position(sender, sender)
                    } else {
                        u64::MAX
                    };
                    let mut best: Option<(u64, MemberId)> = None;
                    for r in &reporters {
                        let pos = position(r, sender).min(cap);
                        if pos > best.map_or(0, |b| b.0) {
                            best = Some((pos, *r));
                        }
                    }
                    if let Some((through, mut holder)) = best {
                        // A live sender holds all of its own stream: prefer it as the source.
                        if cap == through {
                            holder = *sender;
                        }
                        cut.push(CutPoint {
                            sender: *sender,
                            through,
                            holder,
                        });
                    }
                }
                let rec = self.groups.get_mut(&group).expect("present");
                // Only the live reporters' reports make the cut: drop the others, so a later
                // failure restarts the round only if it hits a participant of this cut.
                rec.flush.reports.retain(|m, _| reporters.contains(m));
                rec.flush.cut = Some(cut.clone());
                events.push(Event::FlushCut {
                    group,
                    view: rec.installed.id,
                    round: rec.flush.round,
                    cut,
                });
            }
            return;
        }
    }

    fn terminate(&mut self, group: GroupId, events: &mut Vec<Event>) {
        if let Some(rec) = self.groups.remove(&group) {
            for m in &rec.view.members {
                if let Some(p) = self.processes.get_mut(&m.process()) {
                    if p.incarnation == m.incarnation() {
                        p.groups.remove(&group);
                    }
                }
            }
            self.retired.insert(group, rec.view.id);
            self.flushing.remove(&group);
            events.push(Event::GroupTerminated {
                group,
                last_view: rec.view.id,
            });
        }
    }

    /// Recomputes the Dr. Multicast mapping (if parameters are set) and reports changes.
    fn remap(&mut self, events: &mut Vec<Event>) {
        let Some(params) = self.mc_params else {
            return;
        };
        let loads: Vec<GroupLoad<'_>> = self
            .groups
            .iter()
            .map(|(g, rec)| GroupLoad {
                group: *g,
                members: &rec.view.members,
                traffic: rec.traffic,
                policy: rec.policy,
            })
            .collect();
        let previous: BTreeMap<GroupId, Ipv4Addr> = self
            .groups
            .iter()
            .filter_map(|(g, rec)| rec.mcast.map(|a| (*g, a)))
            .collect();
        let next = drmc::assign(&loads, &params, &previous);
        for (group, addr) in next {
            if let Some(rec) = self.groups.get_mut(&group) {
                if rec.mcast != addr {
                    rec.mcast = addr;
                    events.push(Event::McastAddress { group, addr });
                }
            }
        }
    }
}

/// Format version of [`OracleState::encode_snapshot`].
pub const SNAPSHOT_VERSION: u8 = 2;

fn put_flush(w: &mut Writer, f: &FlushRound) {
    w.varint(u64::from(f.round));
    w.bool(f.active);
    w.varint(f.reports.len() as u64);
    for (m, ps) in &f.reports {
        w.varint(m.0);
        w.varint(ps.len() as u64);
        for (s, p) in ps {
            w.varint(s.0);
            w.varint(*p);
        }
    }
    match &f.cut {
        None => w.u8(0),
        Some(cut) => {
            w.u8(1);
            w.varint(cut.len() as u64);
            for c in cut {
                w.varint(c.sender.0);
                w.varint(c.through);
                w.varint(c.holder.0);
            }
        }
    }
    w.varint(f.done.len() as u64);
    for m in &f.done {
        w.varint(m.0);
    }
}

fn get_flush(r: &mut Reader<'_>) -> Result<FlushRound, DecodeError> {
    let mut f = FlushRound {
        round: r.varint_u32("flush round")?,
        active: r.bool("flush active")?,
        ..FlushRound::default()
    };
    let n = r.count(usize::MAX, 2, "flush reports")?;
    for _ in 0..n {
        let m = MemberId(r.varint("reporter")?);
        let k = r.count(usize::MAX, 2, "report positions")?;
        let mut ps = Vec::with_capacity(k);
        for _ in 0..k {
            ps.push((MemberId(r.varint("sender")?), r.varint("position")?));
        }
        f.reports.insert(m, ps);
    }
    f.cut = match r.u8("cut flag")? {
        0 => None,
        1 => {
            let k = r.count(usize::MAX, 3, "cut")?;
            let mut cut = Vec::with_capacity(k);
            for _ in 0..k {
                cut.push(CutPoint {
                    sender: MemberId(r.varint("cut sender")?),
                    through: r.varint("cut through")?,
                    holder: MemberId(r.varint("cut holder")?),
                });
            }
            Some(cut)
        }
        tag => {
            return Err(DecodeError::BadTag {
                what: "cut flag",
                tag,
            })
        }
    };
    let n = r.count(usize::MAX, 1, "flush done")?;
    for _ in 0..n {
        f.done.insert(MemberId(r.varint("done member")?));
    }
    Ok(f)
}

impl OracleState {
    /// The whole state in the compact binary form carried by raft snapshots (log
    /// compaction, catching up a lagging or replaced replica). Canonical: equal states encode
    /// to equal bytes.
    ///
    /// ```text
    /// version:u8(=1) applied:varint
    /// processes: count { process:varint incarnation:varint status addr groups:count{group} }
    /// groups:    count { group name signature policy view traffic:varint mcast }
    /// retired:   count { group view:varint }     clients: count { client:varint seq:varint (0 | 1 error:str) }
    /// params:    0 | 1 params                    status = 0 | 1 reason
    /// view = id:varint members joined left       mcast = 0 | 1 ipv4
    /// ```
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(SNAPSHOT_VERSION);
        w.varint(self.applied);
        w.varint(self.processes.len() as u64);
        for (p, rec) in &self.processes {
            w.varint(u64::from(*p));
            w.varint(u64::from(rec.incarnation));
            match &rec.status {
                ProcessStatus::Alive => w.u8(0),
                ProcessStatus::Failed(reason) => {
                    w.u8(1);
                    put_reason(&mut w, reason);
                }
            }
            put_sockaddr(&mut w, &rec.addr);
            w.varint(rec.groups.len() as u64);
            for g in &rec.groups {
                put_group(&mut w, *g);
            }
        }
        w.varint(self.groups.len() as u64);
        for (g, rec) in &self.groups {
            put_group(&mut w, *g);
            w.str(&rec.name);
            put_signature(&mut w, &rec.signature);
            put_policy(&mut w, rec.policy);
            put_view_body(&mut w, &rec.view);
            w.varint(rec.traffic);
            match rec.mcast {
                None => w.u8(0),
                Some(a) => {
                    w.u8(1);
                    put_ipv4(&mut w, a);
                }
            }
            put_view_body(&mut w, &rec.installed);
            w.varint(rec.pending.len() as u64);
            for v in &rec.pending {
                put_view_body(&mut w, v);
            }
            put_flush(&mut w, &rec.flush);
        }
        w.varint(self.retired.len() as u64);
        for (g, v) in &self.retired {
            put_group(&mut w, *g);
            w.varint(u64::from(v.0));
        }
        w.varint(self.clients.len() as u64);
        for (c, (s, refused)) in &self.clients {
            w.varint(*c);
            w.varint(*s);
            match refused {
                None => w.u8(0),
                Some(e) => {
                    w.u8(1);
                    w.str(e);
                }
            }
        }
        match &self.mc_params {
            None => w.u8(0),
            Some(p) => {
                w.u8(1);
                put_params(&mut w, p);
            }
        }
        w.into_bytes()
    }

    /// Decodes [`OracleState::encode_snapshot`] output. Never panics; refuses trailing bytes,
    /// unknown versions and out-of-order keys (so a decoded state re-encodes identically).
    pub fn decode_snapshot(bytes: &[u8]) -> Result<OracleState, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("snapshot version")?;
        if version != SNAPSHOT_VERSION {
            return Err(DecodeError::BadTag {
                what: "snapshot version",
                tag: version,
            });
        }
        let mut st = OracleState {
            applied: r.varint("applied")?,
            ..OracleState::default()
        };
        let n = r.count(usize::MAX, 4, "processes")?;
        for _ in 0..n {
            let p = r.varint_u32("process")?;
            let incarnation = r.varint_u32("incarnation")?;
            let status = match r.u8("process status")? {
                0 => ProcessStatus::Alive,
                1 => ProcessStatus::Failed(get_reason(&mut r)?),
                tag => {
                    return Err(DecodeError::BadTag {
                        what: "process status",
                        tag,
                    })
                }
            };
            let addr = get_sockaddr(&mut r)?;
            let k = r.count(usize::MAX, 8, "process groups")?;
            let mut groups = BTreeSet::new();
            for _ in 0..k {
                groups.insert(get_group(&mut r)?);
            }
            let rec = ProcessRecord {
                incarnation,
                status,
                addr,
                groups,
            };
            if st.processes.last_key_value().is_some_and(|(k, _)| *k >= p) {
                return Err(DecodeError::Invalid {
                    what: "process order",
                });
            }
            st.processes.insert(p, rec);
        }
        let n = r.count(usize::MAX, 20, "groups")?;
        for _ in 0..n {
            let group = get_group(&mut r)?;
            let name = r.string(MAX_GROUP_NAME, "group name")?;
            let signature = get_signature(&mut r)?;
            let policy = get_policy(&mut r)?;
            let view = get_view_body(&mut r, group)?;
            let traffic = r.varint("traffic")?;
            let mcast = match r.u8("mcast")? {
                0 => None,
                1 => Some(get_ipv4(&mut r, "mcast address")?),
                tag => return Err(DecodeError::BadTag { what: "mcast", tag }),
            };
            let installed = get_view_body(&mut r, group)?;
            let k = r.count(usize::MAX, 4, "pending views")?;
            let mut pending = Vec::with_capacity(k);
            for _ in 0..k {
                pending.push(get_view_body(&mut r, group)?);
            }
            let flush = get_flush(&mut r)?;
            if !pending.is_empty() {
                st.flushing.insert(group);
            }
            if st.groups.last_key_value().is_some_and(|(k, _)| *k >= group) {
                return Err(DecodeError::Invalid {
                    what: "group order",
                });
            }
            st.groups.insert(
                group,
                GroupRecord {
                    name,
                    signature,
                    policy,
                    view,
                    traffic,
                    mcast,
                    installed,
                    pending,
                    flush,
                },
            );
        }
        let n = r.count(usize::MAX, 9, "retired groups")?;
        for _ in 0..n {
            let g = get_group(&mut r)?;
            let v = ViewId(r.varint_u32("retired view")?);
            if st.retired.last_key_value().is_some_and(|(k, _)| *k >= g) {
                return Err(DecodeError::Invalid {
                    what: "retired order",
                });
            }
            st.retired.insert(g, v);
        }
        let n = r.count(usize::MAX, 2, "clients")?;
        for _ in 0..n {
            let c = r.varint("client")?;
            let s = r.varint("client seq")?;
            let refused = match r.u8("client result")? {
                0 => None,
                1 => Some(r.string(1 << 16, "client error")?),
                tag => {
                    return Err(DecodeError::BadTag {
                        what: "client result",
                        tag,
                    })
                }
            };
            if st.clients.last_key_value().is_some_and(|(k, _)| *k >= c) {
                return Err(DecodeError::Invalid {
                    what: "client order",
                });
            }
            st.clients.insert(c, (s, refused));
        }
        st.mc_params = match r.u8("params flag")? {
            0 => None,
            1 => Some(get_params(&mut r)?),
            tag => {
                return Err(DecodeError::BadTag {
                    what: "params flag",
                    tag,
                })
            }
        };
        r.finish()?;
        Ok(st)
    }
}

/// Checks a batch all-or-nothing: not empty, no group listed twice, every entry valid; the
/// error names the failing entry's index.
fn validate_batch<T>(
    what: &str,
    items: &[T],
    group_of: impl Fn(&T) -> GroupId,
    validate: impl Fn(&T) -> Result<(), CommandError>,
) -> Result<(), CommandError> {
    if items.is_empty() {
        return Err(CommandError::BadBatch {
            reason: format!("{what} lists no groups"),
        });
    }
    let mut seen = BTreeSet::new();
    for (index, item) in items.iter().enumerate() {
        let group = group_of(item);
        let result = if seen.insert(group) {
            validate(item)
        } else {
            Err(CommandError::BadBatch {
                reason: format!("group {group} listed twice"),
            })
        };
        result.map_err(|error| CommandError::InBatch {
            index,
            error: Box::new(error),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle::command::tests::arb_command;
    use proptest::prelude::*;

    fn m(p: u32, i: u32) -> MemberId {
        MemberId::new(p, i)
    }

    fn sig(s: &str) -> Signature {
        Signature::from_text(s)
    }

    fn register(st: &mut OracleState, member: MemberId) {
        st.apply(&Command::RegisterProcess { member, addr: None })
            .unwrap();
    }

    fn create(st: &mut OracleState, name: &str, creator: MemberId) -> GroupId {
        st.apply(&Command::CreateGroup {
            name: name.into(),
            signature: sig("S"),
            policy: McPolicy::Auto,
            creator,
        })
        .unwrap();
        group_id(name)
    }

    fn views(events: &[Event]) -> Vec<&View> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::NewView(v) => Some(v),
                _ => None,
            })
            .collect()
    }

    fn flush_events(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Wedge { view, round, .. } => Some(format!("wedge v{} r{round}", view.0)),
                Event::FlushCut {
                    view, round, cut, ..
                } => Some(format!(
                    "cut v{} r{round} {:?}",
                    view.0,
                    cut.iter()
                        .map(|c| (c.sender.process(), c.through, c.holder.process()))
                        .collect::<Vec<_>>()
                )),
                Event::Installed(v) => Some(format!(
                    "installed v{} {:?}",
                    v.id.0,
                    v.members.iter().map(|m| m.process()).collect::<Vec<_>>()
                )),
                _ => None,
            })
            .collect()
    }

    fn report(
        st: &mut OracleState,
        g: GroupId,
        view: u32,
        round: u32,
        who: MemberId,
        pos: &[(MemberId, u64)],
    ) -> Result<Vec<Event>, CommandError> {
        st.apply(&Command::FlushReport {
            group: g,
            view: ViewId(view),
            round,
            member: who,
            positions: pos.to_vec(),
        })
    }

    fn done(
        st: &mut OracleState,
        g: GroupId,
        view: u32,
        round: u32,
        who: MemberId,
    ) -> Result<Vec<Event>, CommandError> {
        st.apply(&Command::FlushDone {
            group: g,
            view: ViewId(view),
            round,
            member: who,
        })
    }

    #[test]
    fn a_join_is_installed_after_the_flush_of_the_old_view() {
        let mut st = OracleState::new();
        register(&mut st, m(1, 1));
        register(&mut st, m(2, 1));
        let g = create(&mut st, "g", m(1, 1));
        assert_eq!(st.group(g).unwrap().installed.id, ViewId(1));
        let ev = st
            .apply(&Command::Join {
                group: g,
                member: m(2, 1),
                signature: sig("S"),
            })
            .unwrap();
        assert_eq!(flush_events(&ev), vec!["wedge v1 r1"]);
        assert_eq!(st.group(g).unwrap().installed.id, ViewId(1));
        // A joiner does not report; a stale round is refused.
        assert!(matches!(
            report(&mut st, g, 1, 1, m(2, 1), &[]),
            Err(CommandError::StaleFlush { .. })
        ));
        assert!(matches!(
            report(&mut st, g, 1, 7, m(1, 1), &[]),
            Err(CommandError::StaleFlush { .. })
        ));
        assert!(matches!(
            done(&mut st, g, 1, 1, m(1, 1)),
            Err(CommandError::StaleFlush { .. })
        ));
        let ev = report(&mut st, g, 1, 1, m(1, 1), &[(m(1, 1), 5)]).unwrap();
        assert_eq!(flush_events(&ev), vec!["cut v1 r1 [(1, 5, 1)]"]);
        let ev = done(&mut st, g, 1, 1, m(1, 1)).unwrap();
        assert_eq!(flush_events(&ev), vec!["installed v2 [1, 2]"]);
        assert!(st.flushing.is_empty());
    }

    #[test]
    fn the_cut_takes_the_maximum_and_a_dead_holder_restarts_the_round() {
        let mut st = OracleState::new();
        for p in 1..=3 {
            register(&mut st, m(p, 1));
        }
        let g = create(&mut st, "g", m(1, 1));
        st.apply(&Command::MultiJoin {
            joins: vec![GroupJoin {
                group: g,
                signature: sig("S"),
                members: vec![m(2, 1), m(3, 1)],
            }],
        })
        .unwrap();
        report(&mut st, g, 1, 1, m(1, 1), &[]).unwrap();
        done(&mut st, g, 1, 1, m(1, 1)).unwrap();
        assert_eq!(st.group(g).unwrap().installed.members.len(), 3);
        let (a, b, c) = (m(1, 1), m(2, 1), m(3, 1));
        let ev = st
            .apply(&Command::ProcessFailed {
                member: c,
                reason: FailureReason::HeartbeatTimeout,
            })
            .unwrap();
        assert_eq!(flush_events(&ev), vec!["wedge v2 r2"]);
        report(&mut st, g, 2, 2, a, &[(a, 4), (b, 2), (c, 1)]).unwrap();
        let ev = report(&mut st, g, 2, 2, b, &[(a, 3), (b, 6), (c, 9)]).unwrap();
        assert_eq!(
            flush_events(&ev),
            vec!["cut v2 r2 [(1, 4, 1), (2, 6, 2), (3, 9, 2)]"]
        );
        // b (the only holder of c's frames 2..=9) dies after the cut: a new round.
        let ev = st
            .apply(&Command::ProcessFailed {
                member: b,
                reason: FailureReason::HeartbeatTimeout,
            })
            .unwrap();
        assert_eq!(flush_events(&ev), vec!["wedge v2 r3"]);
        let ev = report(&mut st, g, 2, 3, a, &[(a, 4), (b, 5), (c, 3)]).unwrap();
        assert_eq!(
            flush_events(&ev),
            vec!["cut v2 r3 [(1, 4, 1), (2, 5, 1), (3, 3, 1)]"]
        );
        let snap = st.encode_snapshot();
        assert_eq!(OracleState::decode_snapshot(&snap).unwrap(), st);
        let ev = done(&mut st, g, 2, 3, a).unwrap();
        // b's failure was merged into the pending next view: one install, v3 = {a}.
        assert_eq!(flush_events(&ev), vec!["installed v3 [1]"]);
        assert!(st.flushing.is_empty());
    }

    #[test]
    fn a_live_senders_own_report_caps_the_cut() {
        let mut st = OracleState::new();
        let (a, b, c) = (m(1, 1), m(2, 1), m(3, 1));
        for x in [a, b, c] {
            register(&mut st, x);
        }
        let g = create(&mut st, "g", a);
        st.apply(&Command::Join {
            group: g,
            member: b,
            signature: sig("S"),
        })
        .unwrap();
        report(&mut st, g, 1, 1, a, &[]).unwrap();
        done(&mut st, g, 1, 1, a).unwrap();
        st.apply(&Command::Join {
            group: g,
            member: c,
            signature: sig("S"),
        })
        .unwrap();
        report(&mut st, g, 2, 2, a, &[(a, 3), (b, 1_000_000)]).unwrap();
        let ev = report(&mut st, g, 2, 2, b, &[(a, 3), (b, 5)]).unwrap();
        assert_eq!(flush_events(&ev), vec!["cut v2 r2 [(1, 3, 1), (2, 5, 2)]"]);
    }

    #[test]
    fn with_no_live_reporter_the_next_view_installs_at_once() {
        let mut st = OracleState::new();
        register(&mut st, m(1, 1));
        register(&mut st, m(2, 1));
        let g = create(&mut st, "g", m(1, 1));
        st.apply(&Command::Join {
            group: g,
            member: m(2, 1),
            signature: sig("S"),
        })
        .unwrap();
        let ev = st
            .apply(&Command::ProcessFailed {
                member: m(1, 1),
                reason: FailureReason::HeartbeatTimeout,
            })
            .unwrap();
        // The pending v2 now holds only the joiner, and v1 has no live member to flush it.
        assert_eq!(flush_events(&ev), vec!["installed v2 [2]"]);
    }

    #[test]
    fn join_leave_views_follow_join_order() {
        let mut st = OracleState::new();
        for p in 1..=4 {
            register(&mut st, m(p, 1));
        }
        let g = create(&mut st, "g", m(1, 1));
        assert_eq!(st.view(g).unwrap().id, ViewId(1));
        for p in 2..=4 {
            st.apply(&Command::Join {
                group: g,
                member: m(p, 1),
                signature: sig("S"),
            })
            .unwrap();
        }
        // No flush completed: the three joins are batched into one next view.
        let v = st.view(g).unwrap();
        assert_eq!(v.id, ViewId(2));
        assert_eq!(v.members, vec![m(1, 1), m(2, 1), m(3, 1), m(4, 1)]);
        assert_eq!(v.joined, vec![m(2, 1), m(3, 1), m(4, 1)]);
        let ev = st
            .apply(&Command::Leave {
                group: g,
                member: m(2, 1),
            })
            .unwrap();
        let v = views(&ev)[0];
        assert_eq!(v.id, ViewId(2));
        assert_eq!(v.members, vec![m(1, 1), m(3, 1), m(4, 1)]);
        assert_eq!(v.joined, vec![m(3, 1), m(4, 1)]);
        assert!(v.left.is_empty(), "m2 was never installed");
        assert_eq!(v.rank_of(m(3, 1)), Some(1));
        // Once installed, a leave is relative to the installed view.
        report(&mut st, g, 1, 1, m(1, 1), &[]).unwrap();
        let ev = done(&mut st, g, 1, 1, m(1, 1)).unwrap();
        assert_eq!(flush_events(&ev), vec!["installed v2 [1, 3, 4]"]);
        let ev = st
            .apply(&Command::Leave {
                group: g,
                member: m(3, 1),
            })
            .unwrap();
        let v = views(&ev)[0];
        assert_eq!((v.id, v.left.clone()), (ViewId(3), vec![m(3, 1)]));
    }

    #[test]
    fn signature_mismatch_is_refused_with_both_signatures() {
        let mut st = OracleState::new();
        register(&mut st, m(1, 1));
        register(&mut st, m(2, 1));
        let g = create(&mut st, "g", m(1, 1));
        let err = st
            .apply(&Command::Join {
                group: g,
                member: m(2, 1),
                signature: sig("T"),
            })
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, CommandError::SignatureMismatch { .. }));
        assert!(text.contains("\"S\"") && text.contains("\"T\""), "{text}");
        assert_eq!(
            st.view(g).unwrap().members,
            vec![m(1, 1)],
            "nothing changed"
        );
    }

    #[test]
    fn multijoin_is_one_view_per_group_and_all_or_nothing() {
        let mut st = OracleState::new();
        for p in 1..=10 {
            register(&mut st, m(p, 1));
        }
        let a = create(&mut st, "a", m(1, 1));
        let b = create(&mut st, "b", m(1, 1));
        let joiners: Vec<MemberId> = (2..=10).map(|p| m(p, 1)).collect();
        let ev = st
            .apply(&Command::MultiJoin {
                joins: vec![
                    GroupJoin {
                        group: a,
                        signature: sig("S"),
                        members: joiners.clone(),
                    },
                    GroupJoin {
                        group: b,
                        signature: sig("S"),
                        members: joiners.clone(),
                    },
                ],
            })
            .unwrap();
        let vs = views(&ev);
        assert_eq!(vs.len(), 2);
        assert!(vs
            .iter()
            .all(|v| v.id == ViewId(2) && v.members.len() == 10));
        // A batch with one bad entry changes nothing.
        register(&mut st, m(11, 1));
        let before = st.clone();
        let err = st
            .apply(&Command::MultiJoin {
                joins: vec![
                    GroupJoin {
                        group: a,
                        signature: sig("S"),
                        members: vec![m(11, 1)],
                    },
                    GroupJoin {
                        group: GroupId(12345),
                        signature: sig("S"),
                        members: vec![m(11, 1)],
                    },
                ],
            })
            .unwrap_err();
        assert!(
            matches!(err, CommandError::InBatch { index: 1, .. }),
            "{err}"
        );
        let mut after = st.clone();
        after.applied = before.applied;
        assert_eq!(after, before);
    }

    #[test]
    fn failure_excludes_everywhere_and_poisons() {
        let mut st = OracleState::new();
        for p in 1..=3 {
            register(&mut st, m(p, 1));
        }
        let a = create(&mut st, "a", m(1, 1));
        let b = create(&mut st, "b", m(2, 1));
        st.apply(&Command::Join {
            group: a,
            member: m(3, 1),
            signature: sig("S"),
        })
        .unwrap();
        st.apply(&Command::Join {
            group: b,
            member: m(3, 1),
            signature: sig("S"),
        })
        .unwrap();
        let ev = st
            .apply(&Command::ProcessFailed {
                member: m(3, 1),
                reason: FailureReason::HeartbeatTimeout,
            })
            .unwrap();
        assert_eq!(views(&ev).len(), 2);
        assert!(ev.contains(&Event::Poisoned {
            member: m(3, 1),
            reason: FailureReason::HeartbeatTimeout
        }));
        assert_eq!(
            st.member_status(m(3, 1)),
            MemberStatus::Poisoned(FailureReason::HeartbeatTimeout)
        );
        // It cannot come back under the same incarnation ...
        let err = st
            .apply(&Command::RegisterProcess {
                member: m(3, 1),
                addr: None,
            })
            .unwrap_err();
        assert!(
            err.to_string().contains("restart under a new incarnation"),
            "{err}"
        );
        // ... but can under a new one.
        register(&mut st, m(3, 2));
        st.apply(&Command::Join {
            group: a,
            member: m(3, 2),
            signature: sig("S"),
        })
        .unwrap();
        assert_eq!(st.view(a).unwrap().members, vec![m(1, 1), m(3, 2)]);
    }

    #[test]
    fn new_incarnation_supersedes_old() {
        let mut st = OracleState::new();
        register(&mut st, m(1, 1));
        register(&mut st, m(2, 1));
        let a = create(&mut st, "a", m(1, 1));
        st.apply(&Command::Join {
            group: a,
            member: m(2, 1),
            signature: sig("S"),
        })
        .unwrap();
        let ev = st
            .apply(&Command::RegisterProcess {
                member: m(2, 5),
                addr: None,
            })
            .unwrap();
        // m2.1 had joined only the pending view: it simply disappears from it.
        assert_eq!(views(&ev)[0].members, vec![m(1, 1)]);
        assert!(matches!(
            st.apply(&Command::RegisterProcess {
                member: m(2, 3),
                addr: None
            }),
            Err(CommandError::StaleIncarnation { .. })
        ));
        assert_eq!(
            st.member_status(m(2, 1)),
            MemberStatus::Stale { current: m(2, 5) }
        );
    }

    #[test]
    fn empty_group_terminates_and_numbering_continues() {
        let mut st = OracleState::new();
        register(&mut st, m(1, 1));
        let a = create(&mut st, "a", m(1, 1));
        let ev = st
            .apply(&Command::Leave {
                group: a,
                member: m(1, 1),
            })
            .unwrap();
        assert_eq!(
            ev,
            vec![Event::GroupTerminated {
                group: a,
                last_view: ViewId(1)
            }]
        );
        assert!(st.view(a).is_none());
        create(&mut st, "a", m(1, 1));
        assert_eq!(st.view(a).unwrap().id, ViewId(2));
    }

    #[test]
    fn duplicates_are_suppressed_per_client() {
        let mut st = OracleState::new();
        let req = Request {
            client: 9,
            seq: 1,
            command: Command::RegisterProcess {
                member: m(1, 1),
                addr: None,
            },
        };
        st.apply_request(&req).unwrap();
        assert!(matches!(
            st.apply_request(&req),
            Err(CommandError::Duplicate { last: 1, .. })
        ));
    }

    #[test]
    fn multicast_mapping_follows_membership() {
        let mut st = OracleState::new();
        for p in 1..=3 {
            register(&mut st, m(p, 1));
        }
        let a = create(&mut st, "a", m(1, 1));
        let ev = st
            .apply(&Command::RemapMulticast {
                params: McParams::default(),
            })
            .unwrap();
        assert!(ev.is_empty(), "one-member group gets no address");
        let ev = st
            .apply(&Command::Join {
                group: a,
                member: m(2, 1),
                signature: sig("S"),
            })
            .unwrap();
        assert!(ev
            .iter()
            .any(|e| matches!(e, Event::McastAddress { addr: Some(_), .. })));
        let ev = st
            .apply(&Command::SetPolicy {
                group: a,
                policy: McPolicy::UseUnicast,
            })
            .unwrap();
        assert_eq!(
            ev,
            vec![Event::McastAddress {
                group: a,
                addr: None
            }]
        );
        let bad = McParams {
            max_addrs: 99_999,
            ..McParams::default()
        };
        let err = st
            .apply(&Command::RemapMulticast { params: bad })
            .unwrap_err();
        assert!(err.to_string().contains("VSYNC_MAXIPMCADDRS"));
    }

    #[test]
    fn snapshot_round_trips_a_populated_state() {
        let mut st = OracleState::new();
        for p in 1..=4 {
            st.apply(&Command::RegisterProcess {
                member: m(p, 1),
                addr: Some("10.0.0.1:7000".parse().unwrap()),
            })
            .unwrap();
        }
        let a = create(&mut st, "a", m(1, 1));
        st.apply(&Command::Join {
            group: a,
            member: m(2, 1),
            signature: sig("S"),
        })
        .unwrap();
        st.apply(&Command::RemapMulticast {
            params: McParams::default(),
        })
        .unwrap();
        st.apply(&Command::SetTraffic {
            rates: vec![(a, 77)],
        })
        .unwrap();
        st.apply(&Command::ProcessFailed {
            member: m(3, 1),
            reason: FailureReason::Reported { by: m(1, 1) },
        })
        .unwrap();
        let b = create(&mut st, "b", m(4, 1));
        st.apply(&Command::Terminate { group: b }).unwrap();
        st.apply_request(&Request {
            client: 5,
            seq: 9,
            command: Command::Terminate { group: a },
        })
        .unwrap();
        let bytes = st.encode_snapshot();
        let back = OracleState::decode_snapshot(&bytes).unwrap();
        assert_eq!(back, st);
        assert_eq!(back.encode_snapshot(), bytes);
        assert!(OracleState::decode_snapshot(&bytes[..bytes.len() - 1]).is_err());
    }

    proptest! {
        #[test]
        fn snapshot_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = OracleState::decode_snapshot(&bytes);
        }

        #[test]
        fn mutated_snapshots_never_panic(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            let mut st = OracleState::new();
            for p in 1..=3 {
                register(&mut st, m(p, 1));
            }
            let a = create(&mut st, "a", m(1, 1));
            st.apply(&Command::Join { group: a, member: m(2, 1), signature: sig("S") }).unwrap();
            st.apply(&Command::RemapMulticast { params: McParams::default() }).unwrap();
            let mut bytes = st.encode_snapshot();
            for (i, b) in flips {
                let n = bytes.len();
                bytes[i % n] ^= b;
            }
            let cut = cut % (bytes.len() + 1);
            let _ = OracleState::decode_snapshot(&bytes[..cut]);
            if let Ok(decoded) = OracleState::decode_snapshot(&bytes) {
                // Whatever decodes is usable without panicking.
                let mut decoded = decoded;
                let _ = decoded.apply(&Command::ProcessFailed {
                    member: m(2, 1),
                    reason: FailureReason::HeartbeatTimeout,
                });
                let _ = decoded.apply(&Command::Terminate { group: a });
            }
        }

        #[test]
        fn snapshot_round_trips_after_random_commands(cmds in proptest::collection::vec(arb_command(), 0..40)) {
            let mut st = OracleState::new();
            for c in &cmds {
                let _ = st.apply(c);
            }
            let bytes = st.encode_snapshot();
            prop_assert_eq!(OracleState::decode_snapshot(&bytes).unwrap(), st);
        }

        /// Random command sequences: refused commands change nothing; views keep their rules.
        #[test]
        fn random_commands_keep_invariants(cmds in proptest::collection::vec(arb_command(), 0..60)) {
            let mut st = OracleState::new();
            for c in &cmds {
                let before = st.clone();
                match st.apply(c) {
                    Err(_) => {
                        let mut after = st.clone();
                        after.applied = before.applied;
                        prop_assert_eq!(&after, &before);
                    }
                    Ok(events) => {
                        for e in &events {
                            if let Event::NewView(v) = e {
                                if let Some(old) = before.view(v.group) {
                                    prop_assert_eq!(v.id.0, old.id.0 + 1);
                                    let mut expect: Vec<MemberId> = old.members.iter().copied()
                                        .filter(|x| !v.left.contains(x)).collect();
                                    expect.extend_from_slice(&v.joined);
                                    prop_assert_eq!(&v.members, &expect);
                                }
                            }
                        }
                    }
                }
                // Every member of every group is a live current incarnation.
                for (_, g) in st.groups() {
                    for mem in &g.view.members {
                        prop_assert_eq!(st.member_status(*mem), MemberStatus::Alive);
                    }
                }
            }
        }
    }
}
