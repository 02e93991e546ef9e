//! Messages between a member process and the oracle ([`ToOracle`], [`FromOracle`]).
//!
//! Every message is idempotent, so either side may repeat or lose any of them: a member
//! repeats its heartbeat (which lists the views it installed and how far it is in a flush),
//! its flush report or completion, and its requests (suppressed by `(member, seq)`); the
//! oracle leader answers each heartbeat with the [`GroupStatus`] of every group where the
//! member is behind, and pushes statuses as soon as a flush step commits.

use std::net::SocketAddr;

use vsync_dataplane::{GroupId, MemberId, ViewId};

use crate::oracle::{Command, CutPoint, FailureReason, View};

/// How far a member is in the flush of its installed view (carried by heartbeats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FlushPhase {
    /// No flush in progress at this member.
    #[default]
    Idle,
    /// Wedged and reported its positions for the round.
    Reported,
    /// Received the cut and is fetching / delivering up to it.
    Flushing,
    /// Holds and delivered everything up to the cut.
    Done,
}

/// One entry of a heartbeat: where the member is in one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupProgress {
    /// The group.
    pub group: GroupId,
    /// The view the member installed.
    pub view: ViewId,
    /// The flush round the member is in (0 = none yet).
    pub round: u32,
    /// How far in that round.
    pub phase: FlushPhase,
    /// Multicasts this member sent in the group so far (Dr. Multicast traffic estimate).
    pub sent: u64,
    /// The member joined and still waits for its state (checkpoint) from a rank 0.
    pub awaiting_state: bool,
    /// The IP-multicast address the member maps the group to (`None`: unicast fan-out). The
    /// oracle re-sends the group's status while it differs from the mapping in force, so a
    /// lost or reordered remap status is repaired like any other.
    pub mcast: Option<std::net::Ipv4Addr>,
}

/// A member's message to the oracle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToOracle {
    /// Announces (registers) this incarnation; repeated until the oracle knows it.
    Hello {
        /// The incarnation.
        member: MemberId,
        /// Its data-plane address, if any.
        addr: Option<SocketAddr>,
    },
    /// Liveness plus the member's progress in each of its groups.
    Heartbeat {
        /// The member.
        member: MemberId,
        /// One entry per group it installed a view of.
        groups: Vec<GroupProgress>,
    },
    /// A membership request (create, join, leave, terminate...), suppressed by `seq`.
    Request {
        /// The requester.
        member: MemberId,
        /// Its request number (increasing).
        seq: u64,
        /// The command.
        command: Command,
    },
    /// Flush report: positions held when wedged (see [`Command::FlushReport`]).
    FlushReport {
        /// The reporter.
        member: MemberId,
        /// The group.
        group: GroupId,
        /// The installed view being flushed.
        view: ViewId,
        /// The round.
        round: u32,
        /// `(sender, last frame held contiguously)`.
        positions: Vec<(MemberId, u64)>,
    },
    /// Flush completion (see [`Command::FlushDone`]).
    FlushDone {
        /// The member.
        member: MemberId,
        /// The group.
        group: GroupId,
        /// The installed view being flushed.
        view: ViewId,
        /// The round.
        round: u32,
    },
    /// The application reports a failure (Isis² `HasFailed`).
    Suspect {
        /// The reporter.
        member: MemberId,
        /// The process it believes failed.
        suspect: MemberId,
    },
    /// A non-member client asks who is in a group and where to reach them (Isis² `Client`).
    /// Answered by the replica that receives it, from its applied state.
    Lookup {
        /// The asker.
        member: MemberId,
        /// The group.
        group: GroupId,
    },
}

impl ToOracle {
    /// The member that sent it.
    pub fn member(&self) -> MemberId {
        match self {
            ToOracle::Hello { member, .. }
            | ToOracle::Heartbeat { member, .. }
            | ToOracle::Request { member, .. }
            | ToOracle::FlushReport { member, .. }
            | ToOracle::FlushDone { member, .. }
            | ToOracle::Suspect { member, .. }
            | ToOracle::Lookup { member, .. } => *member,
        }
    }
}

/// The flush part of a [`GroupStatus`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlushStatus {
    /// The round.
    pub round: u32,
    /// The cut, once decided.
    pub cut: Option<Vec<CutPoint>>,
}

/// What a member needs to know about one group: the installed view and the flush in
/// progress, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStatus {
    /// The installed view.
    pub installed: View,
    /// The group's physical IP-multicast address, if mapped (`None` = unicast fan-out).
    pub mcast: Option<std::net::Ipv4Addr>,
    /// The flush of `installed` in progress, if any.
    pub flush: Option<FlushStatus>,
    /// Data-plane addresses of the installed view's members, where registered.
    pub addrs: Vec<(MemberId, SocketAddr)>,
    /// Members of the installed view that say they still wait for their state: the rank 0 of
    /// the next view sends them a checkpoint (so a joiner whose rank 0 died is served).
    pub awaiting: Vec<MemberId>,
}

/// The oracle's message to a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FromOracle {
    /// The result of a [`ToOracle::Request`].
    Reply {
        /// The request number.
        seq: u64,
        /// Accepted, or refused with the reason.
        result: Result<(), String>,
    },
    /// A group's state.
    Status(GroupStatus),
    /// The member is no longer in the group (it left, was excluded, or the group ended).
    Gone {
        /// The group.
        group: GroupId,
        /// The view the oracle had installed (or one past a terminated group's last): a member
        /// holding this view or a newer one ignores the notice (a late duplicate after it
        /// joined again).
        view: ViewId,
    },
    /// This incarnation was excluded for good: the process must restart under a new one.
    Poisoned {
        /// The excluded incarnation.
        member: MemberId,
        /// Why.
        reason: FailureReason,
    },
    /// The member is registered and alive (answer to `Hello` and to every heartbeat; it
    /// renews the member's lease).
    Welcome {
        /// The incarnation.
        member: MemberId,
    },
    /// This replica is not the leader; try `leader` (if known) instead.
    Redirect {
        /// The leader's replica id, if known.
        leader: Option<u64>,
    },
    /// The answer to a [`ToOracle::Lookup`]: the group's installed view id and its members in
    /// rank order with the address each member's control socket talks to the oracle from
    /// (its client-request endpoint). No members: the group does not exist.
    Members {
        /// The group.
        group: GroupId,
        /// Its installed view id (0 when unknown).
        view: ViewId,
        /// Members in rank order and their client-request endpoints.
        members: Vec<(MemberId, SocketAddr)>,
    },
}

// ----- wire form -----
//
// ```text
// message   = version:u8(=1) tag:u8 fields
// ToOracle:   1 Hello member addr | 2 Heartbeat member count{group view round phase:u8 sent [mcast]}
//             (phase bit 7: the member still awaits its state; bit 6: an mcast ipv4 follows)
//             3 Request member seq:varint command | 4 FlushReport member group view round count{member pos}
//             5 FlushDone member group view round | 6 Suspect member member
//             7 Lookup member group
// FromOracle: 16 Reply seq ok:u8 [error:str] | 17 Status view mcast flush addrs awaiting
//             | 18 Gone group view
//             19 Poisoned member reason | 20 Welcome member | 21 Redirect 0|1 leader:varint
//             | 22 Members group view count{member sockaddr}
// view      = group id:varint members joined left
// flush     = 0 | 1 round:varint (0 | 1 count{sender through holder})
// ```

use crate::codec::{DecodeError, Reader, Writer};
use crate::oracle::command::{
    decode_command, encode_command, get_group, get_ipv4, get_member, get_reason, get_sockaddr,
    get_view_body, put_group, put_ipv4, put_member, put_reason, put_sockaddr, put_view_body,
    MAX_LIST,
};

/// Wire-format version of member ↔ oracle messages.
pub const PROTO_VERSION: u8 = 1;
/// Longest error text carried in a reply.
const MAX_ERROR: usize = 4096;

fn phase_code(p: FlushPhase) -> u8 {
    match p {
        FlushPhase::Idle => 0,
        FlushPhase::Reported => 1,
        FlushPhase::Flushing => 2,
        FlushPhase::Done => 3,
    }
}

fn put_view(w: &mut Writer, v: &View) {
    put_group(w, v.group);
    put_view_body(w, v);
}

fn get_view(r: &mut Reader<'_>) -> Result<View, DecodeError> {
    let group = get_group(r)?;
    get_view_body(r, group)
}

impl ToOracle {
    /// The binary wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(PROTO_VERSION);
        match self {
            ToOracle::Hello { member, addr } => {
                w.u8(1);
                put_member(&mut w, *member);
                put_sockaddr(&mut w, addr);
            }
            ToOracle::Heartbeat { member, groups } => {
                w.u8(2);
                put_member(&mut w, *member);
                w.varint(groups.len() as u64);
                for g in groups {
                    put_group(&mut w, g.group);
                    w.varint(u64::from(g.view.0));
                    w.varint(u64::from(g.round));
                    w.u8(phase_code(g.phase)
                        | if g.awaiting_state { 0x80 } else { 0 }
                        | if g.mcast.is_some() { 0x40 } else { 0 });
                    w.varint(g.sent);
                    if let Some(a) = g.mcast {
                        put_ipv4(&mut w, a);
                    }
                }
            }
            ToOracle::Request {
                member,
                seq,
                command,
            } => {
                w.u8(3);
                put_member(&mut w, *member);
                w.varint(*seq);
                encode_command(&mut w, command);
            }
            ToOracle::FlushReport {
                member,
                group,
                view,
                round,
                positions,
            } => {
                w.u8(4);
                put_member(&mut w, *member);
                put_group(&mut w, *group);
                w.varint(u64::from(view.0));
                w.varint(u64::from(*round));
                w.varint(positions.len() as u64);
                for (m, p) in positions {
                    put_member(&mut w, *m);
                    w.varint(*p);
                }
            }
            ToOracle::FlushDone {
                member,
                group,
                view,
                round,
            } => {
                w.u8(5);
                put_member(&mut w, *member);
                put_group(&mut w, *group);
                w.varint(u64::from(view.0));
                w.varint(u64::from(*round));
            }
            ToOracle::Suspect { member, suspect } => {
                w.u8(6);
                put_member(&mut w, *member);
                put_member(&mut w, *suspect);
            }
            ToOracle::Lookup { member, group } => {
                w.u8(7);
                put_member(&mut w, *member);
                put_group(&mut w, *group);
            }
        }
        w.into_bytes()
    }

    /// Decodes [`ToOracle::encode`] output; never panics, refuses trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<ToOracle, DecodeError> {
        let mut r = Reader::new(bytes);
        check_version(&mut r)?;
        let msg = match r.u8("message tag")? {
            1 => ToOracle::Hello {
                member: get_member(&mut r, "member")?,
                addr: get_sockaddr(&mut r)?,
            },
            2 => {
                let member = get_member(&mut r, "member")?;
                let n = r.count(MAX_LIST, 12, "heartbeat groups")?;
                let mut groups = Vec::with_capacity(n);
                for _ in 0..n {
                    let group = get_group(&mut r)?;
                    let view = ViewId(r.varint_u32("view id")?);
                    let round = r.varint_u32("round")?;
                    let phase = r.u8("phase")?;
                    groups.push(GroupProgress {
                        group,
                        view,
                        round,
                        phase: match phase & 0x3f {
                            0 => FlushPhase::Idle,
                            1 => FlushPhase::Reported,
                            2 => FlushPhase::Flushing,
                            3 => FlushPhase::Done,
                            tag => return Err(DecodeError::BadTag { what: "phase", tag }),
                        },
                        sent: r.varint("sent")?,
                        awaiting_state: phase & 0x80 != 0,
                        mcast: if phase & 0x40 != 0 {
                            Some(get_ipv4(&mut r, "heartbeat mcast")?)
                        } else {
                            None
                        },
                    });
                }
                ToOracle::Heartbeat { member, groups }
            }
            3 => ToOracle::Request {
                member: get_member(&mut r, "member")?,
                seq: r.varint("seq")?,
                command: decode_command(&mut r)?,
            },
            4 => {
                let member = get_member(&mut r, "member")?;
                let group = get_group(&mut r)?;
                let view = ViewId(r.varint_u32("view id")?);
                let round = r.varint_u32("round")?;
                let n = r.count(MAX_LIST, 2, "positions")?;
                let mut positions = Vec::with_capacity(n);
                for _ in 0..n {
                    positions.push((get_member(&mut r, "sender")?, r.varint("position")?));
                }
                ToOracle::FlushReport {
                    member,
                    group,
                    view,
                    round,
                    positions,
                }
            }
            5 => ToOracle::FlushDone {
                member: get_member(&mut r, "member")?,
                group: get_group(&mut r)?,
                view: ViewId(r.varint_u32("view id")?),
                round: r.varint_u32("round")?,
            },
            6 => ToOracle::Suspect {
                member: get_member(&mut r, "member")?,
                suspect: get_member(&mut r, "suspect")?,
            },
            7 => ToOracle::Lookup {
                member: get_member(&mut r, "member")?,
                group: get_group(&mut r)?,
            },
            tag => {
                return Err(DecodeError::BadTag {
                    what: "to-oracle message",
                    tag,
                })
            }
        };
        r.finish()?;
        Ok(msg)
    }
}

fn check_version(r: &mut Reader<'_>) -> Result<(), DecodeError> {
    match r.u8("version")? {
        PROTO_VERSION => Ok(()),
        tag => Err(DecodeError::BadTag {
            what: "protocol version",
            tag,
        }),
    }
}

impl FromOracle {
    /// The binary wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(PROTO_VERSION);
        match self {
            FromOracle::Reply { seq, result } => {
                w.u8(16);
                w.varint(*seq);
                match result {
                    Ok(()) => w.u8(1),
                    Err(e) => {
                        w.u8(0);
                        let mut end = e.len().min(MAX_ERROR);
                        while !e.is_char_boundary(end) {
                            end -= 1;
                        }
                        w.str(&e[..end]);
                    }
                }
            }
            FromOracle::Status(st) => {
                w.u8(17);
                put_view(&mut w, &st.installed);
                match st.mcast {
                    None => w.u8(0),
                    Some(a) => {
                        w.u8(1);
                        put_ipv4(&mut w, a);
                    }
                }
                match &st.flush {
                    None => w.u8(0),
                    Some(f) => {
                        w.u8(1);
                        w.varint(u64::from(f.round));
                        match &f.cut {
                            None => w.u8(0),
                            Some(cut) => {
                                w.u8(1);
                                w.varint(cut.len() as u64);
                                for c in cut {
                                    put_member(&mut w, c.sender);
                                    w.varint(c.through);
                                    put_member(&mut w, c.holder);
                                }
                            }
                        }
                    }
                }
                w.varint(st.addrs.len() as u64);
                for (m, a) in &st.addrs {
                    put_member(&mut w, *m);
                    put_sockaddr(&mut w, &Some(*a));
                }
                w.varint(st.awaiting.len() as u64);
                for m in &st.awaiting {
                    put_member(&mut w, *m);
                }
            }
            FromOracle::Gone { group, view } => {
                w.u8(18);
                put_group(&mut w, *group);
                w.varint(u64::from(view.0));
            }
            FromOracle::Poisoned { member, reason } => {
                w.u8(19);
                put_member(&mut w, *member);
                put_reason(&mut w, reason);
            }
            FromOracle::Welcome { member } => {
                w.u8(20);
                put_member(&mut w, *member);
            }
            FromOracle::Redirect { leader } => {
                w.u8(21);
                match leader {
                    None => w.u8(0),
                    Some(l) => {
                        w.u8(1);
                        w.varint(*l);
                    }
                }
            }
            FromOracle::Members {
                group,
                view,
                members,
            } => {
                w.u8(22);
                put_group(&mut w, *group);
                w.varint(u64::from(view.0));
                w.varint(members.len() as u64);
                for (m, a) in members {
                    put_member(&mut w, *m);
                    put_sockaddr(&mut w, &Some(*a));
                }
            }
        }
        w.into_bytes()
    }

    /// Decodes [`FromOracle::encode`] output; never panics, refuses trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<FromOracle, DecodeError> {
        let mut r = Reader::new(bytes);
        check_version(&mut r)?;
        let msg = match r.u8("message tag")? {
            16 => {
                let seq = r.varint("seq")?;
                let result = match r.u8("reply flag")? {
                    1 => Ok(()),
                    0 => Err(r.string(MAX_ERROR, "error text")?),
                    tag => {
                        return Err(DecodeError::BadTag {
                            what: "reply flag",
                            tag,
                        })
                    }
                };
                FromOracle::Reply { seq, result }
            }
            17 => {
                let installed = get_view(&mut r)?;
                let mcast = match r.u8("mcast flag")? {
                    0 => None,
                    1 => Some(get_ipv4(&mut r, "mcast address")?),
                    tag => {
                        return Err(DecodeError::BadTag {
                            what: "mcast flag",
                            tag,
                        })
                    }
                };
                let flush = match r.u8("flush flag")? {
                    0 => None,
                    1 => {
                        let round = r.varint_u32("round")?;
                        let cut = match r.u8("cut flag")? {
                            0 => None,
                            1 => {
                                let n = r.count(MAX_LIST, 3, "cut")?;
                                let mut cut = Vec::with_capacity(n);
                                for _ in 0..n {
                                    cut.push(CutPoint {
                                        sender: get_member(&mut r, "cut sender")?,
                                        through: r.varint("cut through")?,
                                        holder: get_member(&mut r, "cut holder")?,
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
                        Some(FlushStatus { round, cut })
                    }
                    tag => {
                        return Err(DecodeError::BadTag {
                            what: "flush flag",
                            tag,
                        })
                    }
                };
                let n = r.count(MAX_LIST, 2, "addresses")?;
                let mut addrs = Vec::with_capacity(n);
                for _ in 0..n {
                    let m = get_member(&mut r, "member")?;
                    match get_sockaddr(&mut r)? {
                        Some(a) => addrs.push((m, a)),
                        None => {
                            return Err(DecodeError::Invalid {
                                what: "member address",
                            })
                        }
                    }
                }
                let n = r.count(MAX_LIST, 1, "awaiting members")?;
                let mut awaiting = Vec::with_capacity(n);
                for _ in 0..n {
                    awaiting.push(get_member(&mut r, "awaiting member")?);
                }
                FromOracle::Status(GroupStatus {
                    installed,
                    mcast,
                    flush,
                    addrs,
                    awaiting,
                })
            }
            18 => FromOracle::Gone {
                group: get_group(&mut r)?,
                view: ViewId(r.varint_u32("view id")?),
            },
            19 => FromOracle::Poisoned {
                member: get_member(&mut r, "member")?,
                reason: get_reason(&mut r)?,
            },
            20 => FromOracle::Welcome {
                member: get_member(&mut r, "member")?,
            },
            21 => FromOracle::Redirect {
                leader: match r.u8("leader flag")? {
                    0 => None,
                    1 => Some(r.varint("leader")?),
                    tag => {
                        return Err(DecodeError::BadTag {
                            what: "leader flag",
                            tag,
                        })
                    }
                },
            },
            22 => {
                let group = get_group(&mut r)?;
                let view = ViewId(r.varint_u32("view id")?);
                let n = r.count(MAX_LIST, 2, "members")?;
                let mut members = Vec::with_capacity(n);
                for _ in 0..n {
                    let m = get_member(&mut r, "member")?;
                    let a = get_sockaddr(&mut r)?.ok_or(DecodeError::Invalid {
                        what: "member address",
                    })?;
                    members.push((m, a));
                }
                FromOracle::Members {
                    group,
                    view,
                    members,
                }
            }
            tag => {
                return Err(DecodeError::BadTag {
                    what: "from-oracle message",
                    tag,
                })
            }
        };
        r.finish()?;
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle::command::tests::{arb_command, arb_member};
    use proptest::prelude::*;

    fn arb_view() -> impl Strategy<Value = View> {
        let ms = proptest::collection::vec(arb_member(), 0..4);
        (any::<u64>(), any::<u32>(), ms.clone(), ms.clone(), ms).prop_map(
            |(g, id, members, joined, left)| View {
                group: GroupId(g),
                id: ViewId(id),
                members,
                joined,
                left,
            },
        )
    }

    fn arb_to() -> impl Strategy<Value = ToOracle> {
        let g = any::<u64>().prop_map(GroupId);
        prop_oneof![
            arb_member().prop_map(|member| ToOracle::Hello {
                member,
                addr: Some("127.0.0.1:9".parse().unwrap())
            }),
            (
                arb_member(),
                proptest::collection::vec((g.clone(), any::<u32>(), any::<u32>(), 0u8..4), 0..4)
            )
                .prop_map(|(member, gs)| ToOracle::Heartbeat {
                    member,
                    groups: gs
                        .into_iter()
                        .map(|(group, v, round, p)| GroupProgress {
                            group,
                            view: ViewId(v),
                            round,
                            phase: [
                                FlushPhase::Idle,
                                FlushPhase::Reported,
                                FlushPhase::Flushing,
                                FlushPhase::Done
                            ][p as usize],
                            sent: u64::from(round) * 3,
                            awaiting_state: round % 2 == 1,
                            mcast: (v % 3 == 1).then(|| std::net::Ipv4Addr::from(v | 0xe000_0000)),
                        })
                        .collect(),
                }),
            (arb_member(), any::<u64>(), arb_command()).prop_map(|(member, seq, command)| {
                ToOracle::Request {
                    member,
                    seq,
                    command,
                }
            }),
            (
                arb_member(),
                g.clone(),
                any::<u32>(),
                any::<u32>(),
                proptest::collection::vec((arb_member(), any::<u64>()), 0..4)
            )
                .prop_map(|(member, group, v, round, positions)| {
                    ToOracle::FlushReport {
                        member,
                        group,
                        view: ViewId(v),
                        round,
                        positions,
                    }
                }),
            (arb_member(), g, any::<u32>(), any::<u32>()).prop_map(|(member, group, v, round)| {
                ToOracle::FlushDone {
                    member,
                    group,
                    view: ViewId(v),
                    round,
                }
            }),
            (arb_member(), arb_member())
                .prop_map(|(member, suspect)| ToOracle::Suspect { member, suspect }),
            (arb_member(), any::<u64>()).prop_map(|(member, g)| ToOracle::Lookup {
                member,
                group: GroupId(g)
            }),
        ]
    }

    fn arb_from() -> impl Strategy<Value = FromOracle> {
        let cut = proptest::option::of(proptest::collection::vec(
            (arb_member(), any::<u64>(), arb_member()),
            0..3,
        ));
        prop_oneof![
            (any::<u64>(), proptest::option::of("[a-z ]{0,20}")).prop_map(|(seq, e)| {
                FromOracle::Reply {
                    seq,
                    result: e.map_or(Ok(()), Err),
                }
            }),
            (
                arb_view(),
                proptest::option::of(any::<u32>()),
                proptest::option::of((any::<u32>(), cut))
            )
                .prop_map(|(installed, mc, flush)| FromOracle::Status(GroupStatus {
                    installed,
                    mcast: mc.map(std::net::Ipv4Addr::from),
                    flush: flush.map(|(round, cut)| FlushStatus {
                        round,
                        cut: cut.map(|c| c
                            .into_iter()
                            .map(|(sender, through, holder)| CutPoint {
                                sender,
                                through,
                                holder
                            })
                            .collect())
                    }),
                    addrs: vec![(MemberId(3), "127.0.0.1:7".parse().unwrap())],
                    awaiting: vec![MemberId(9)],
                })),
            (any::<u64>(), any::<u32>()).prop_map(|(g, v)| FromOracle::Gone {
                group: GroupId(g),
                view: ViewId(v)
            }),
            arb_member().prop_map(|member| FromOracle::Poisoned {
                member,
                reason: FailureReason::HeartbeatTimeout
            }),
            arb_member().prop_map(|member| FromOracle::Welcome { member }),
            proptest::option::of(any::<u64>()).prop_map(|leader| FromOracle::Redirect { leader }),
            (
                any::<u64>(),
                any::<u32>(),
                proptest::collection::vec(arb_member(), 0..4)
            )
                .prop_map(|(g, v, ms)| FromOracle::Members {
                    group: GroupId(g),
                    view: ViewId(v),
                    members: ms
                        .into_iter()
                        .map(|m| (m, "10.0.0.1:7301".parse().unwrap()))
                        .collect(),
                }),
        ]
    }

    #[test]
    fn smallest_heartbeat_entries_decode() {
        let m = ToOracle::Heartbeat {
            member: MemberId::new(1, 1),
            groups: vec![
                GroupProgress {
                    group: GroupId(7),
                    view: ViewId(1),
                    round: 0,
                    phase: FlushPhase::Idle,
                    sent: 0,
                    awaiting_state: false,
                    mcast: None,
                };
                3
            ],
        };
        assert_eq!(ToOracle::decode(&m.encode()).unwrap(), m);
    }

    proptest! {
        #[test]
        fn to_oracle_round_trips(m in arb_to()) {
            prop_assert_eq!(ToOracle::decode(&m.encode()).unwrap(), m);
        }

        #[test]
        fn from_oracle_round_trips(m in arb_from()) {
            prop_assert_eq!(FromOracle::decode(&m.encode()).unwrap(), m);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ToOracle::decode(&bytes);
            let _ = FromOracle::decode(&bytes);
        }

        #[test]
        fn mutated_messages_never_panic(m in arb_to(), f in arb_from(), flip in any::<(usize, u8)>(), cut in any::<usize>()) {
            for mut b in [m.encode(), f.encode()] {
                let n = b.len();
                b[flip.0 % n] ^= flip.1;
                let _ = ToOracle::decode(&b[..cut % (n + 1)]);
                let _ = FromOracle::decode(&b);
            }
        }
    }
}
