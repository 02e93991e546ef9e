//! The oracle's vocabulary: the [`Command`]s that travel in the replicated log (wrapped in a
//! [`Request`]), the [`Event`]s that applying them produces, the [`View`]s those events
//! carry, and the typed [`CommandError`]s that refuse bad input.
//!
//! Commands are encoded in a compact hand-written binary form ([`Request::encode`] /
//! [`Request::decode`]) because every command is a raft log entry replicated to every oracle
//! replica. Decoding never panics and never allocates beyond what the input can back.
//!
//! ```text
//! request  = version:u8(=1) client:varint seq:varint command
//! command  = tag:u8 fields...         (see `encode_command`)
//! member   = varint (MemberId: process << 32 | incarnation)
//! group    = u64 little-endian (GroupId: xxh3 of the name, uniformly random bits)
//! string   = varint length, UTF-8 bytes       list = varint count, items
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use vsync_dataplane::{GroupId, MemberId, ViewId};

use crate::codec::{DecodeError, Reader, Writer};
use crate::drmc::{McParams, McPolicy};

/// Encoding format version written first in every [`Request`].
pub const FORMAT_VERSION: u8 = 1;
/// Longest group name, in bytes.
pub const MAX_GROUP_NAME: usize = 256;
/// Longest human-readable signature description, in bytes.
pub const MAX_SIGNATURE_TEXT: usize = 1024;
/// Most items in any list inside one command (members of a batch, groups of a batch, rates).
pub const MAX_LIST: usize = 1 << 20;
/// Largest encoded request accepted for proposal (bytes).
pub const MAX_REQUEST_BYTES: usize = 8 << 20;

/// A group's stable identifier derived from its name: xxh3-64 of the UTF-8 bytes. The same
/// name always yields the same id, on every process and across incarnations.
pub fn group_id(name: &str) -> GroupId {
    GroupId(xxhash_rust::xxh3::xxh3_64(name.as_bytes()))
}

/// A group's type signature: members must agree on it to join (Isis² checks that the
/// handlers and types a joiner registered match the group's).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Signature {
    /// Hash of the signature (what is compared).
    pub hash: u64,
    /// Human-readable description used only in error messages (may be empty).
    pub text: String,
}

impl Signature {
    /// A signature whose hash is xxh3 of `text`.
    pub fn from_text(text: &str) -> Self {
        Signature {
            hash: xxhash_rust::xxh3::xxh3_64(text.as_bytes()),
            text: text.to_owned(),
        }
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.text.is_empty() {
            write!(f, "{:016x}", self.hash)
        } else {
            write!(f, "{:016x} ({:?})", self.hash, self.text)
        }
    }
}

/// Why a process incarnation was excluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The failure detector saw no heartbeat within the timeout.
    HeartbeatTimeout,
    /// Another member reported it (Isis² `HasFailed`).
    Reported {
        /// The reporter.
        by: MemberId,
    },
    /// The same process registered a newer incarnation.
    Superseded {
        /// The new incarnation.
        by: MemberId,
    },
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureReason::HeartbeatTimeout => write!(f, "heartbeat timeout"),
            FailureReason::Reported { by } => write!(f, "reported failed by {by}"),
            FailureReason::Superseded { by } => write!(f, "superseded by incarnation {by}"),
        }
    }
}

/// One group's part of a [`Command::MultiJoin`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupJoin {
    /// The group joined.
    pub group: GroupId,
    /// The joiners' signature for it.
    pub signature: Signature,
    /// The joiners, in the order they will be ranked.
    pub members: Vec<MemberId>,
}

/// One group's part of a [`Command::MultiLeave`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupLeave {
    /// The group left.
    pub group: GroupId,
    /// The members leaving.
    pub members: Vec<MemberId>,
}

/// A membership operation, decided by the oracle and applied by every replica in log order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// A process (incarnation) announces itself. A live older incarnation of the same process
    /// is excluded (superseded); an older or already-failed incarnation is refused.
    RegisterProcess {
        /// The process address with its incarnation.
        member: MemberId,
        /// Where it can be reached (data plane address), if known.
        addr: Option<SocketAddr>,
    },
    /// Creates a group with `creator` as its only member (view 1, or one past the view of a
    /// terminated group of the same name).
    CreateGroup {
        /// The group's name; its id is [`group_id`] of it.
        name: String,
        /// The group's signature; joiners must match it.
        signature: Signature,
        /// IP-multicast preference.
        policy: McPolicy,
        /// The first member.
        creator: MemberId,
    },
    /// One process joins one group.
    Join {
        /// The group.
        group: GroupId,
        /// The joiner.
        member: MemberId,
        /// The joiner's signature for the group.
        signature: Signature,
    },
    /// One member leaves one group.
    Leave {
        /// The group.
        group: GroupId,
        /// The member.
        member: MemberId,
    },
    /// Ends a group; its members are told and its id may be created again later.
    Terminate {
        /// The group.
        group: GroupId,
    },
    /// Many processes join many groups in one decision: all or nothing, one new view per
    /// group.
    MultiJoin {
        /// Per group: who joins.
        joins: Vec<GroupJoin>,
    },
    /// Many members leave many groups in one decision: all or nothing, one new view per group.
    MultiLeave {
        /// Per group: who leaves.
        leaves: Vec<GroupLeave>,
    },
    /// A process incarnation is declared failed: it leaves every group (one new view per
    /// group) and is poisoned should it reappear.
    ProcessFailed {
        /// The failed incarnation.
        member: MemberId,
        /// Who decided and why.
        reason: FailureReason,
    },
    /// Changes a group's IP-multicast preference (Isis² `UseUnicast()` / `UseIPMC()`).
    SetPolicy {
        /// The group.
        group: GroupId,
        /// The new preference.
        policy: McPolicy,
    },
    /// Reports aggregated traffic rates (messages/s) for Dr. Multicast. Unknown groups are
    /// skipped (they may have just terminated).
    SetTraffic {
        /// `(group, rate)` pairs.
        rates: Vec<(GroupId, u64)>,
    },
    /// Sets the Dr. Multicast parameters and recomputes the mapping now. After the first
    /// one, the mapping is also recomputed on every membership change.
    RemapMulticast {
        /// Range, cap and global unicast-only mode.
        params: McParams,
    },
    /// A wedged member reports, for the flush of its group's installed view `view` in round
    /// `round`, the last frame it holds contiguously of every member's group stream.
    FlushReport {
        /// The group.
        group: GroupId,
        /// The installed view being flushed.
        view: ViewId,
        /// The flush round (a round restarts when a reporter fails after the cut).
        round: u32,
        /// The reporter.
        member: MemberId,
        /// `(sender, last frame held contiguously)` per member of the view.
        positions: Vec<(MemberId, u64)>,
    },
    /// A member holds and delivered everything up to the round's cut.
    FlushDone {
        /// The group.
        group: GroupId,
        /// The installed view being flushed.
        view: ViewId,
        /// The flush round.
        round: u32,
        /// The member.
        member: MemberId,
    },
}

impl Command {
    /// A short name of the command kind (for logs and counters).
    pub fn kind(&self) -> &'static str {
        match self {
            Command::RegisterProcess { .. } => "RegisterProcess",
            Command::CreateGroup { .. } => "CreateGroup",
            Command::Join { .. } => "Join",
            Command::Leave { .. } => "Leave",
            Command::Terminate { .. } => "Terminate",
            Command::MultiJoin { .. } => "MultiJoin",
            Command::MultiLeave { .. } => "MultiLeave",
            Command::ProcessFailed { .. } => "ProcessFailed",
            Command::SetPolicy { .. } => "SetPolicy",
            Command::SetTraffic { .. } => "SetTraffic",
            Command::RemapMulticast { .. } => "RemapMulticast",
            Command::FlushReport { .. } => "FlushReport",
            Command::FlushDone { .. } => "FlushDone",
        }
    }
}

/// A command as it travels in the log: who asked (for duplicate suppression) and what.
///
/// `client` 0 means "no duplicate suppression". Otherwise `seq` must increase per client; a
/// request whose `seq` is not above the last applied one of its client is refused as
/// [`CommandError::Duplicate`], so a client may safely retry through another replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The client (any id unique among clients; 0 = anonymous).
    pub client: u64,
    /// The client's request number.
    pub seq: u64,
    /// The command.
    pub command: Command,
}

/// One group's membership at one moment: the unit every member of the group agrees on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct View {
    /// The group.
    pub group: GroupId,
    /// The view number: 1 for the first view of a group, then +1 per view.
    pub id: ViewId,
    /// Members in join order; a member's rank is its index.
    pub members: Vec<MemberId>,
    /// Members added by this view (in rank order).
    pub joined: Vec<MemberId>,
    /// Members removed by this view.
    pub left: Vec<MemberId>,
}

impl View {
    /// The rank of `member` (its index), if it is a member.
    pub fn rank_of(&self, member: MemberId) -> Option<usize> {
        self.members.iter().position(|m| *m == member)
    }
}

/// One sender's entry of a flush cut: every survivor must hold and deliver `sender`'s group
/// stream frames `1..=through` of the flushed view; `holder` (a reporter) holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CutPoint {
    /// The stream's sender.
    pub sender: MemberId,
    /// Last frame of the stream every survivor delivers in the flushed view.
    pub through: u64,
    /// A reporter holding frames `1..=through` (the relay source).
    pub holder: MemberId,
}

/// What applying a command produced; every replica produces the identical sequence.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// A process incarnation is registered (alive).
    ProcessRegistered {
        /// The new incarnation.
        member: MemberId,
    },
    /// A group's membership decision: the next view (one per affected group per command).
    /// Members install decided views in order, each after a flush of the previous one
    /// ([`Event::Wedge`], [`Event::FlushCut`], [`Event::Installed`]).
    NewView(View),
    /// The flush of the installed view `view` starts (or restarts in a new round): every live
    /// member of it wedges and sends a [`Command::FlushReport`].
    Wedge {
        /// The group.
        group: GroupId,
        /// The installed view being flushed.
        view: ViewId,
        /// The round.
        round: u32,
    },
    /// Every reporter reported: the cut each survivor must reach before the next view.
    FlushCut {
        /// The group.
        group: GroupId,
        /// The installed view being flushed.
        view: ViewId,
        /// The round.
        round: u32,
        /// Per sender (rank order), senders with nothing to deliver omitted.
        cut: Vec<CutPoint>,
    },
    /// Every reporter reached the cut: the next decided view is installed.
    Installed(View),
    /// A group ended (terminated, or its last member left or failed).
    GroupTerminated {
        /// The group.
        group: GroupId,
        /// Its last view id; a re-created group continues after it.
        last_view: ViewId,
    },
    /// A process incarnation was excluded for good. If it reappears it must be told it was
    /// poisoned and must restart under a new incarnation.
    Poisoned {
        /// The excluded incarnation.
        member: MemberId,
        /// Why.
        reason: FailureReason,
    },
    /// A group's physical IP-multicast address changed (`None` = unicast fan-out).
    McastAddress {
        /// The group.
        group: GroupId,
        /// Its new physical address.
        addr: Option<Ipv4Addr>,
    },
}

/// Why a command was refused. A refused command changes nothing (all or nothing); every
/// replica refuses it identically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// No such group.
    UnknownGroup {
        /// The group.
        group: GroupId,
    },
    /// The group name is empty or longer than [`MAX_GROUP_NAME`] bytes.
    InvalidName {
        /// The name's length in bytes.
        len: usize,
    },
    /// The group already exists.
    GroupExists {
        /// The group.
        group: GroupId,
        /// Its name.
        name: String,
    },
    /// Two different names hash to the same group id.
    NameCollision {
        /// The id.
        group: GroupId,
        /// The name that holds it.
        existing: String,
        /// The name asked for.
        requested: String,
    },
    /// The joiner's signature differs from the group's.
    SignatureMismatch {
        /// The group.
        group: GroupId,
        /// The group's signature (what the members registered).
        group_signature: Signature,
        /// The joiner's signature.
        joiner_signature: Signature,
    },
    /// The process was never registered.
    NotRegistered {
        /// The member.
        member: MemberId,
    },
    /// The incarnation is not the process's current one.
    StaleIncarnation {
        /// The incarnation named.
        member: MemberId,
        /// The current incarnation.
        current: MemberId,
    },
    /// The incarnation was declared failed; it must restart under a new incarnation.
    Poisoned {
        /// The member.
        member: MemberId,
        /// Why it was excluded.
        reason: FailureReason,
    },
    /// Already a member of the group.
    AlreadyMember {
        /// The group.
        group: GroupId,
        /// The member.
        member: MemberId,
    },
    /// Not a member of the group.
    NotMember {
        /// The group.
        group: GroupId,
        /// The member.
        member: MemberId,
    },
    /// A batch lists the same group or the same member of a group twice, or is empty.
    BadBatch {
        /// What is wrong.
        reason: String,
    },
    /// Entry `index` of a batch was refused (and with it the whole batch).
    InBatch {
        /// The entry.
        index: usize,
        /// Why.
        error: Box<CommandError>,
    },
    /// A retry of a request already applied (or older than one applied).
    Duplicate {
        /// The client.
        client: u64,
        /// The refused sequence number.
        seq: u64,
        /// The last applied one.
        last: u64,
        /// When `seq` repeats the last applied request and that one was refused: why (so a
        /// retried request gets its original answer).
        refused: Option<String>,
    },
    /// Invalid Dr. Multicast parameters.
    BadParams {
        /// What is wrong (names the variable).
        reason: String,
    },
    /// A flush report or completion that does not match the group's flush in progress
    /// (stale view or round, not a reporter, no flush). Harmless: members retry on the
    /// current state.
    StaleFlush {
        /// The group.
        group: GroupId,
        /// What did not match.
        reason: String,
    },
    /// The log entry did not decode (only possible from a buggy or hostile proposer).
    Malformed {
        /// The decoder's complaint.
        reason: String,
    },
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::UnknownGroup { group } => write!(f, "unknown group {group}"),
            CommandError::InvalidName { len } => write!(
                f,
                "group name of {len} bytes: expected 1..={MAX_GROUP_NAME} bytes of UTF-8"
            ),
            CommandError::GroupExists { group, name } => {
                write!(f, "group {name:?} ({group}) already exists")
            }
            CommandError::NameCollision { group, existing, requested } => write!(
                f,
                "group name {requested:?} hashes to {group}, already used by {existing:?}; choose another name"
            ),
            CommandError::SignatureMismatch { group, group_signature, joiner_signature } => write!(
                f,
                "signature mismatch joining {group}: the group's members have {group_signature}, \
                 the joiner has {joiner_signature}"
            ),
            CommandError::NotRegistered { member } => {
                write!(f, "process {member} is not registered with the oracle")
            }
            CommandError::StaleIncarnation { member, current } => write!(
                f,
                "{member} is a stale incarnation: the process's current incarnation is {current}"
            ),
            CommandError::Poisoned { member, reason } => write!(
                f,
                "{member} has been poisoned ({reason}): restart under a new incarnation"
            ),
            CommandError::AlreadyMember { group, member } => {
                write!(f, "{member} is already a member of {group}")
            }
            CommandError::NotMember { group, member } => {
                write!(f, "{member} is not a member of {group}")
            }
            CommandError::BadBatch { reason } => write!(f, "bad batch: {reason}"),
            CommandError::InBatch { index, error } => {
                write!(f, "batch entry {index} refused (whole batch refused): {error}")
            }
            CommandError::Duplicate { client, seq, last, .. } => write!(
                f,
                "duplicate request: client {client} seq {seq} is not above the last applied seq {last}"
            ),
            CommandError::BadParams { reason } => write!(f, "bad Dr. Multicast parameters: {reason}"),
            CommandError::StaleFlush { group, reason } => {
                write!(f, "stale flush message for {group}: {reason}")
            }
            CommandError::Malformed { reason } => write!(f, "malformed log entry: {reason}"),
        }
    }
}

impl std::error::Error for CommandError {}

// ----- encoding -----

const T_REGISTER: u8 = 1;
const T_CREATE: u8 = 2;
const T_JOIN: u8 = 3;
const T_LEAVE: u8 = 4;
const T_TERMINATE: u8 = 5;
const T_MULTIJOIN: u8 = 6;
const T_MULTILEAVE: u8 = 7;
const T_FAILED: u8 = 8;
const T_SETPOLICY: u8 = 9;
const T_SETTRAFFIC: u8 = 10;
const T_REMAP: u8 = 11;
const T_FLUSH_REPORT: u8 = 12;
const T_FLUSH_DONE: u8 = 13;

impl Request {
    /// The compact binary form (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(FORMAT_VERSION);
        w.varint(self.client);
        w.varint(self.seq);
        encode_command(&mut w, &self.command);
        w.into_bytes()
    }

    /// Decodes a request; any input, however malformed, yields an error rather than a panic.
    pub fn decode(bytes: &[u8]) -> Result<Request, DecodeError> {
        if bytes.len() > MAX_REQUEST_BYTES {
            return Err(DecodeError::TooLong {
                what: "request",
                len: bytes.len() as u64,
                max: MAX_REQUEST_BYTES as u64,
            });
        }
        let mut r = Reader::new(bytes);
        let version = r.u8("format version")?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::BadTag {
                what: "format version",
                tag: version,
            });
        }
        let client = r.varint("client")?;
        let seq = r.varint("seq")?;
        let command = decode_command(&mut r)?;
        r.finish()?;
        Ok(Request {
            client,
            seq,
            command,
        })
    }
}

pub(crate) fn put_member(w: &mut Writer, m: MemberId) {
    w.varint(m.0);
}
pub(crate) fn get_member(r: &mut Reader<'_>, what: &'static str) -> Result<MemberId, DecodeError> {
    Ok(MemberId(r.varint(what)?))
}
pub(crate) fn put_group(w: &mut Writer, g: GroupId) {
    w.u64_fixed(g.0);
}
pub(crate) fn get_group(r: &mut Reader<'_>) -> Result<GroupId, DecodeError> {
    Ok(GroupId(r.u64_fixed("group id")?))
}
pub(crate) fn put_members(w: &mut Writer, ms: &[MemberId]) {
    w.varint(ms.len() as u64);
    for m in ms {
        put_member(w, *m);
    }
}
pub(crate) fn get_members(r: &mut Reader<'_>) -> Result<Vec<MemberId>, DecodeError> {
    let n = r.count(MAX_LIST, 1, "member list")?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(get_member(r, "member")?);
    }
    Ok(v)
}
/// Writes a view without its group (the reader knows it): `id members joined left`.
pub(crate) fn put_view_body(w: &mut Writer, v: &View) {
    w.varint(u64::from(v.id.0));
    put_members(w, &v.members);
    put_members(w, &v.joined);
    put_members(w, &v.left);
}

/// Reads [`put_view_body`] output for `group`.
pub(crate) fn get_view_body(r: &mut Reader<'_>, group: GroupId) -> Result<View, DecodeError> {
    Ok(View {
        group,
        id: ViewId(r.varint_u32("view id")?),
        members: get_members(r)?,
        joined: get_members(r)?,
        left: get_members(r)?,
    })
}

pub(crate) fn put_signature(w: &mut Writer, s: &Signature) {
    w.u64_fixed(s.hash);
    w.str(&s.text);
}
pub(crate) fn get_signature(r: &mut Reader<'_>) -> Result<Signature, DecodeError> {
    Ok(Signature {
        hash: r.u64_fixed("signature hash")?,
        text: r.string(MAX_SIGNATURE_TEXT, "signature text")?,
    })
}
pub(crate) fn put_policy(w: &mut Writer, p: McPolicy) {
    w.u8(match p {
        McPolicy::Auto => 0,
        McPolicy::UseUnicast => 1,
        McPolicy::UseIpmc => 2,
    });
}
pub(crate) fn get_policy(r: &mut Reader<'_>) -> Result<McPolicy, DecodeError> {
    match r.u8("policy")? {
        0 => Ok(McPolicy::Auto),
        1 => Ok(McPolicy::UseUnicast),
        2 => Ok(McPolicy::UseIpmc),
        tag => Err(DecodeError::BadTag {
            what: "policy",
            tag,
        }),
    }
}
pub(crate) fn put_reason(w: &mut Writer, reason: &FailureReason) {
    match reason {
        FailureReason::HeartbeatTimeout => w.u8(0),
        FailureReason::Reported { by } => {
            w.u8(1);
            put_member(w, *by);
        }
        FailureReason::Superseded { by } => {
            w.u8(2);
            put_member(w, *by);
        }
    }
}
pub(crate) fn get_reason(r: &mut Reader<'_>) -> Result<FailureReason, DecodeError> {
    match r.u8("failure reason")? {
        0 => Ok(FailureReason::HeartbeatTimeout),
        1 => Ok(FailureReason::Reported {
            by: get_member(r, "reporter")?,
        }),
        2 => Ok(FailureReason::Superseded {
            by: get_member(r, "successor")?,
        }),
        tag => Err(DecodeError::BadTag {
            what: "failure reason",
            tag,
        }),
    }
}
pub(crate) fn put_ipv4(w: &mut Writer, a: Ipv4Addr) {
    w.raw(&a.octets());
}
pub(crate) fn get_ipv4(r: &mut Reader<'_>, what: &'static str) -> Result<Ipv4Addr, DecodeError> {
    let b = r.raw(4, what)?;
    Ok(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
}
pub(crate) fn put_sockaddr(w: &mut Writer, a: &Option<SocketAddr>) {
    match a {
        None => w.u8(0),
        Some(SocketAddr::V4(a)) => {
            w.u8(4);
            put_ipv4(w, *a.ip());
            w.raw(&a.port().to_le_bytes());
        }
        Some(SocketAddr::V6(a)) => {
            w.u8(6);
            w.raw(&a.ip().octets());
            w.raw(&a.port().to_le_bytes());
        }
    }
}
pub(crate) fn get_sockaddr(r: &mut Reader<'_>) -> Result<Option<SocketAddr>, DecodeError> {
    let ip = match r.u8("address family")? {
        0 => return Ok(None),
        4 => IpAddr::V4(get_ipv4(r, "ipv4 address")?),
        6 => {
            let b = r.raw(16, "ipv6 address")?;
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            IpAddr::V6(Ipv6Addr::from(a))
        }
        tag => {
            return Err(DecodeError::BadTag {
                what: "address family",
                tag,
            })
        }
    };
    let p = r.raw(2, "port")?;
    Ok(Some(SocketAddr::new(ip, u16::from_le_bytes([p[0], p[1]]))))
}

pub(crate) fn put_params(w: &mut Writer, params: &McParams) {
    put_ipv4(w, params.range_low);
    put_ipv4(w, params.range_high);
    w.varint(u64::from(params.max_addrs));
    w.bool(params.unicast_only);
}
pub(crate) fn get_params(r: &mut Reader<'_>) -> Result<McParams, DecodeError> {
    Ok(McParams {
        range_low: get_ipv4(r, "range low")?,
        range_high: get_ipv4(r, "range high")?,
        max_addrs: r.varint_u32("max addrs")?,
        unicast_only: r.bool("unicast only")?,
    })
}

/// Writes one command (tag + fields).
pub(crate) fn encode_command(w: &mut Writer, c: &Command) {
    match c {
        Command::RegisterProcess { member, addr } => {
            w.u8(T_REGISTER);
            put_member(w, *member);
            put_sockaddr(w, addr);
        }
        Command::CreateGroup {
            name,
            signature,
            policy,
            creator,
        } => {
            w.u8(T_CREATE);
            w.str(name);
            put_signature(w, signature);
            put_policy(w, *policy);
            put_member(w, *creator);
        }
        Command::Join {
            group,
            member,
            signature,
        } => {
            w.u8(T_JOIN);
            put_group(w, *group);
            put_member(w, *member);
            put_signature(w, signature);
        }
        Command::Leave { group, member } => {
            w.u8(T_LEAVE);
            put_group(w, *group);
            put_member(w, *member);
        }
        Command::Terminate { group } => {
            w.u8(T_TERMINATE);
            put_group(w, *group);
        }
        Command::MultiJoin { joins } => {
            w.u8(T_MULTIJOIN);
            w.varint(joins.len() as u64);
            for j in joins {
                put_group(w, j.group);
                put_signature(w, &j.signature);
                put_members(w, &j.members);
            }
        }
        Command::MultiLeave { leaves } => {
            w.u8(T_MULTILEAVE);
            w.varint(leaves.len() as u64);
            for l in leaves {
                put_group(w, l.group);
                put_members(w, &l.members);
            }
        }
        Command::ProcessFailed { member, reason } => {
            w.u8(T_FAILED);
            put_member(w, *member);
            put_reason(w, reason);
        }
        Command::SetPolicy { group, policy } => {
            w.u8(T_SETPOLICY);
            put_group(w, *group);
            put_policy(w, *policy);
        }
        Command::SetTraffic { rates } => {
            w.u8(T_SETTRAFFIC);
            w.varint(rates.len() as u64);
            for (g, r) in rates {
                put_group(w, *g);
                w.varint(*r);
            }
        }
        Command::RemapMulticast { params } => {
            w.u8(T_REMAP);
            put_params(w, params);
        }
        Command::FlushReport {
            group,
            view,
            round,
            member,
            positions,
        } => {
            w.u8(T_FLUSH_REPORT);
            put_group(w, *group);
            w.varint(u64::from(view.0));
            w.varint(u64::from(*round));
            put_member(w, *member);
            w.varint(positions.len() as u64);
            for (m, p) in positions {
                put_member(w, *m);
                w.varint(*p);
            }
        }
        Command::FlushDone {
            group,
            view,
            round,
            member,
        } => {
            w.u8(T_FLUSH_DONE);
            put_group(w, *group);
            w.varint(u64::from(view.0));
            w.varint(u64::from(*round));
            put_member(w, *member);
        }
    }
}

/// Reads one command (tag + fields).
pub(crate) fn decode_command(r: &mut Reader<'_>) -> Result<Command, DecodeError> {
    Ok(match r.u8("command tag")? {
        T_REGISTER => Command::RegisterProcess {
            member: get_member(r, "member")?,
            addr: get_sockaddr(r)?,
        },
        T_CREATE => Command::CreateGroup {
            name: r.string(MAX_GROUP_NAME, "group name")?,
            signature: get_signature(r)?,
            policy: get_policy(r)?,
            creator: get_member(r, "creator")?,
        },
        T_JOIN => Command::Join {
            group: get_group(r)?,
            member: get_member(r, "member")?,
            signature: get_signature(r)?,
        },
        T_LEAVE => Command::Leave {
            group: get_group(r)?,
            member: get_member(r, "member")?,
        },
        T_TERMINATE => Command::Terminate {
            group: get_group(r)?,
        },
        T_MULTIJOIN => {
            // group (8) + signature (8 + 1) + member count (1)
            let n = r.count(MAX_LIST, 18, "multijoin groups")?;
            let mut joins = Vec::with_capacity(n);
            for _ in 0..n {
                joins.push(GroupJoin {
                    group: get_group(r)?,
                    signature: get_signature(r)?,
                    members: get_members(r)?,
                });
            }
            Command::MultiJoin { joins }
        }
        T_MULTILEAVE => {
            let n = r.count(MAX_LIST, 9, "multileave groups")?;
            let mut leaves = Vec::with_capacity(n);
            for _ in 0..n {
                leaves.push(GroupLeave {
                    group: get_group(r)?,
                    members: get_members(r)?,
                });
            }
            Command::MultiLeave { leaves }
        }
        T_FAILED => Command::ProcessFailed {
            member: get_member(r, "member")?,
            reason: get_reason(r)?,
        },
        T_SETPOLICY => Command::SetPolicy {
            group: get_group(r)?,
            policy: get_policy(r)?,
        },
        T_SETTRAFFIC => {
            let n = r.count(MAX_LIST, 9, "traffic rates")?;
            let mut rates = Vec::with_capacity(n);
            for _ in 0..n {
                rates.push((get_group(r)?, r.varint("rate")?));
            }
            Command::SetTraffic { rates }
        }
        T_REMAP => Command::RemapMulticast {
            params: get_params(r)?,
        },
        T_FLUSH_REPORT => {
            let group = get_group(r)?;
            let view = ViewId(r.varint_u32("view id")?);
            let round = r.varint_u32("flush round")?;
            let member = get_member(r, "member")?;
            let n = r.count(MAX_LIST, 2, "flush positions")?;
            let mut positions = Vec::with_capacity(n);
            for _ in 0..n {
                positions.push((get_member(r, "sender")?, r.varint("position")?));
            }
            Command::FlushReport {
                group,
                view,
                round,
                member,
                positions,
            }
        }
        T_FLUSH_DONE => Command::FlushDone {
            group: get_group(r)?,
            view: ViewId(r.varint_u32("view id")?),
            round: r.varint_u32("flush round")?,
            member: get_member(r, "member")?,
        },
        tag => {
            return Err(DecodeError::BadTag {
                what: "command tag",
                tag,
            })
        }
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn arb_member() -> impl Strategy<Value = MemberId> + Clone {
        (0u32..50, 0u32..4).prop_map(|(p, i)| MemberId::new(p, i))
    }

    fn arb_sig() -> impl Strategy<Value = Signature> {
        (any::<u64>(), "[a-z]{0,8}").prop_map(|(hash, text)| Signature { hash, text })
    }

    fn arb_policy() -> impl Strategy<Value = McPolicy> {
        prop_oneof![
            Just(McPolicy::Auto),
            Just(McPolicy::UseUnicast),
            Just(McPolicy::UseIpmc)
        ]
    }

    fn arb_reason() -> impl Strategy<Value = FailureReason> {
        prop_oneof![
            Just(FailureReason::HeartbeatTimeout),
            arb_member().prop_map(|by| FailureReason::Reported { by }),
            arb_member().prop_map(|by| FailureReason::Superseded { by }),
        ]
    }

    fn arb_addr() -> impl Strategy<Value = Option<SocketAddr>> {
        prop_oneof![
            Just(None),
            (any::<u32>(), any::<u16>())
                .prop_map(|(a, p)| Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), p))),
            (any::<u128>(), any::<u16>())
                .prop_map(|(a, p)| Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), p))),
        ]
    }

    pub(crate) fn arb_command() -> impl Strategy<Value = Command> {
        let group = any::<u64>().prop_map(GroupId);
        let members = proptest::collection::vec(arb_member(), 0..5);
        prop_oneof![
            (arb_member(), arb_addr())
                .prop_map(|(member, addr)| Command::RegisterProcess { member, addr }),
            ("[a-z]{0,12}", arb_sig(), arb_policy(), arb_member()).prop_map(
                |(name, signature, policy, creator)| Command::CreateGroup {
                    name,
                    signature,
                    policy,
                    creator
                }
            ),
            (group.clone(), arb_member(), arb_sig()).prop_map(|(group, member, signature)| {
                Command::Join {
                    group,
                    member,
                    signature,
                }
            }),
            (group.clone(), arb_member())
                .prop_map(|(group, member)| Command::Leave { group, member }),
            group.clone().prop_map(|group| Command::Terminate { group }),
            proptest::collection::vec((group.clone(), arb_sig(), members.clone()), 0..4).prop_map(
                |v| Command::MultiJoin {
                    joins: v
                        .into_iter()
                        .map(|(group, signature, members)| GroupJoin {
                            group,
                            signature,
                            members
                        })
                        .collect()
                }
            ),
            proptest::collection::vec((group.clone(), members), 0..4).prop_map(|v| {
                Command::MultiLeave {
                    leaves: v
                        .into_iter()
                        .map(|(group, members)| GroupLeave { group, members })
                        .collect(),
                }
            }),
            (arb_member(), arb_reason())
                .prop_map(|(member, reason)| Command::ProcessFailed { member, reason }),
            (group.clone(), arb_policy())
                .prop_map(|(group, policy)| Command::SetPolicy { group, policy }),
            proptest::collection::vec((group.clone(), any::<u64>()), 0..4)
                .prop_map(|rates| Command::SetTraffic { rates }),
            (any::<u32>(), any::<u32>(), any::<u32>(), any::<bool>()).prop_map(
                |(lo, hi, max_addrs, unicast_only)| Command::RemapMulticast {
                    params: McParams {
                        range_low: Ipv4Addr::from(lo),
                        range_high: Ipv4Addr::from(hi),
                        max_addrs,
                        unicast_only
                    }
                }
            ),
            (
                group.clone(),
                any::<u32>(),
                any::<u32>(),
                arb_member(),
                proptest::collection::vec((arb_member(), any::<u64>()), 0..4)
            )
                .prop_map(|(group, view, round, member, positions)| {
                    Command::FlushReport {
                        group,
                        view: ViewId(view),
                        round,
                        member,
                        positions,
                    }
                }),
            (group.clone(), any::<u32>(), any::<u32>(), arb_member()).prop_map(
                |(group, view, round, member)| Command::FlushDone {
                    group,
                    view: ViewId(view),
                    round,
                    member
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn request_round_trips(client in any::<u64>(), seq in any::<u64>(), command in arb_command()) {
            let req = Request { client, seq, command };
            let bytes = req.encode();
            prop_assert_eq!(Request::decode(&bytes).unwrap(), req);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Request::decode(&bytes);
        }

        #[test]
        fn decoding_mutated_requests_never_panics(
            command in arb_command(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            let mut bytes = Request { client: 7, seq: 9, command }.encode();
            for (i, b) in flips {
                let n = bytes.len();
                bytes[i % n] ^= b;
            }
            let cut = cut % (bytes.len() + 1);
            let _ = Request::decode(&bytes[..cut]);
            let _ = Request::decode(&bytes);
        }
    }

    #[test]
    fn huge_counts_are_refused_without_allocating() {
        let mut w = Writer::new();
        w.u8(FORMAT_VERSION);
        w.varint(0);
        w.varint(0);
        w.u8(T_MULTIJOIN);
        w.varint(u64::MAX / 2);
        let err = Request::decode(&w.into_bytes()).unwrap_err();
        assert!(matches!(err, DecodeError::TooLong { .. }), "{err}");
    }

    #[test]
    fn group_ids_are_stable_and_distinct() {
        assert_eq!(group_id("alpha"), group_id("alpha"));
        assert_ne!(group_id("alpha"), group_id("beta"));
    }

    #[test]
    fn signature_mismatch_message_names_both_sides() {
        let e = CommandError::SignatureMismatch {
            group: GroupId(0xab),
            group_signature: Signature::from_text("Update(int)"),
            joiner_signature: Signature::from_text("Update(string)"),
        };
        let s = e.to_string();
        assert!(
            s.contains("Update(int)") && s.contains("Update(string)"),
            "{s}"
        );
        assert!(s.contains(&format!(
            "{:016x}",
            Signature::from_text("Update(int)").hash
        )));
    }
}
