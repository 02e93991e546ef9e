//! [`Group`]: an Isis² process group — typed handlers, views, the Send / OrderedSend / P2P
//! multicasts, Query / OrderedQuery, Flush and state transfer.
//!
//! # Threads and order
//!
//! Every group has two delivery threads, as in Isis²: one runs, in delivery order, the view
//! callbacks ([`Group::on_view`]), the request handlers ([`Group::on`]) of every multicast
//! and multicast query, and the checkpoint callbacks; the other runs the handlers of
//! point-to-point messages and queries and of client requests, in their senders' order, so
//! they do not wait behind queued multicasts. Every upcall holds the group's lock, so
//! handlers of one group never run concurrently. Sends from inside
//! a handler never block on the delivery thread (they go through a channel to the system's
//! driver thread), so they cannot deadlock; a *query* from inside a handler can, if the
//! members it waits for are themselves blocked in handlers of the same group (as in Isis²).
//!
//! # Wire format (inside the agent's payload)
//!
//! ```text
//! message:  0x01 code:u32-LE arglist
//! query:    0x02 qid:u64-LE code:u32-LE arglist          (multicast, Send or OrderedSend)
//! reply:    0x03 qid:u64-LE kind:u8 (0 value | 1 null | 2 abort) bytes   (P2P to the caller)
//! leaving:  0x04                                          (Send, just before a Leave)
//! causal:   0x20 stamp message|query                      (Send; see system::flavours)
//! safe:     0x10 / 0x11 / 0x12                            (SafeSend, accept, done: see crate::safe)
//! ```
//!
//! RawSend / RawP2PSend carry `message` and `query` payloads unreliably; a query that arrived
//! raw is answered by a raw `reply` when it fits one datagram.
//!
//! SafeSend handlers see [`Group::message_kind`] = `Ordered` and their tag in
//! [`Group::completion_tag`].
//!
//! ```no_run
//! use vsync::{Group, System, NReplies, Timeout};
//!
//! const UPDATE: u32 = 0;
//! const LOOKUP: u32 = 1;
//! let sys = System::start()?;
//! let g = Group::new(&sys, "foo")?;
//! let db = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(i32, i32)>::new()));
//! let d = db.clone();
//! g.on(UPDATE, move |rank: i32, n: i32| d.lock().unwrap().push((rank, n)))?;
//! let d = db.clone();
//! g.on(LOOKUP, move |rank: i32| {
//!     d.lock().unwrap().iter().filter(|t| t.0 == rank).map(|t| t.1).collect::<Vec<i32>>()
//! })?;
//! g.on_view(|v| println!("New View: {v}"))?;
//! g.join()?;
//! g.ordered_send(UPDATE, (0i32, 1i32))?;
//! let replies = g.ordered_query(NReplies::All, Timeout::default(), LOOKUP, (0i32,))?;
//! let lists: Vec<Vec<i32>> = replies.decode()?;
//! # Ok::<(), vsync::VsyncError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use vsync_control::agent::MsgKind;
use vsync_control::oracle::{Signature as OracleSignature, View as OracleView};
use vsync_dataplane::{GroupId, MemberId, ViewId};

use crate::checkpoint_file::CheckpointFile;
use crate::durability::{CompletionTag, Durability};
use crate::error::VsyncError;
use crate::marshal::{
    Address, ArgList, Args, ArgsRef, DispatchError, Encode, Handler, Handlers, IntoReply, Marshal,
    Reader, Reply, RequestCode, Signature, SignatureSet, TypeRegistry, Writer,
};
use crate::persistent::{InitFn, LoadFn, MakeFn, Persistence};
use crate::query::{NReplies, Replies, ReplyKind, Timeout};
use crate::safe::SafeLocal;
use crate::system::{gid_of, Cmd, JoinMode, System};
use crate::watch::{WatchEvent, WatchId, Watches};

mod flavours;

pub(crate) const K_MSG: u8 = 1;
pub(crate) const K_QUERY: u8 = 2;
pub(crate) const K_REPLY: u8 = 3;
pub(crate) const K_LEAVING: u8 = 4;

/// Most bytes of the human-readable signature text sent to the oracle.
const MAX_SIG_TEXT: usize = 960;

/// Longest group name the oracle accepts, in bytes.
const MAX_GROUP_NAME: usize = 256;

/// Something the delivery thread must run.
pub(crate) enum Upcall {
    View {
        view: View,
        join_done: Option<Sender<Result<(), VsyncError>>>,
    },
    Message {
        sender: Address,
        kind: MsgKind,
        code: RequestCode,
        args: Vec<u8>,
        query: Option<u64>,
    },
    MakeCheckpoint {
        view: ViewId,
    },
    LoadCheckpoint {
        state: Vec<u8>,
    },
    /// Write the persistent checkpoint now (at rank 0); `done` gets whether it was written.
    Persist {
        done: Option<Sender<Result<bool, VsyncError>>>,
    },
    /// Re-read settings (the checkpoint interval changed).
    Wake,
    /// A non-member client's request (see [`crate::client`]); answered only if the code is
    /// allowed by [`Group::allow_client_requests`].
    ClientRequest {
        sender: Address,
        code: RequestCode,
        args: Vec<u8>,
        qid: u64,
    },
    /// A SafeSend (or SafeQuery when `query` is set) whose acceptors logged it.
    Safe {
        sender: Address,
        tag: CompletionTag,
        code: RequestCode,
        args: Vec<u8>,
        query: Option<u64>,
    },
    Gone,
}

pub(crate) fn encode_msg(code: RequestCode, args: &ArgList) -> Vec<u8> {
    let mut v = Vec::with_capacity(args.as_bytes().len() + 5);
    v.push(K_MSG);
    v.extend_from_slice(&code.to_le_bytes());
    v.extend_from_slice(args.as_bytes());
    v
}

pub(crate) fn decode_msg(p: &[u8]) -> Option<(RequestCode, Vec<u8>)> {
    if p.len() < 5 || p[0] != K_MSG {
        return None;
    }
    let code = u32::from_le_bytes(p[1..5].try_into().ok()?);
    Some((code, p[5..].to_vec()))
}

/// `body` is `code:u32-LE arglist`.
pub(crate) fn encode_query(qid: u64, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + 9);
    v.push(K_QUERY);
    v.extend_from_slice(&qid.to_le_bytes());
    v.extend_from_slice(body);
    v
}

pub(crate) fn decode_query(p: &[u8]) -> Option<(u64, RequestCode, Vec<u8>)> {
    if p.len() < 13 || p[0] != K_QUERY {
        return None;
    }
    let qid = u64::from_le_bytes(p[1..9].try_into().ok()?);
    let code = u32::from_le_bytes(p[9..13].try_into().ok()?);
    Some((qid, code, p[13..].to_vec()))
}

pub(crate) fn encode_reply(qid: u64, r: &ReplyKind) -> Vec<u8> {
    encode_tagged_reply(K_REPLY, qid, r)
}

/// `tag id:u64-LE kind:u8 (0 value | 1 null | 2 abort) bytes`: a group reply (`K_REPLY`) or
/// a client reply frame.
pub(crate) fn encode_tagged_reply(tag: u8, id: u64, r: &ReplyKind) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&id.to_le_bytes());
    match r {
        ReplyKind::Value(b) => {
            v.push(0);
            v.extend_from_slice(b);
        }
        ReplyKind::Null => v.push(1),
        ReplyKind::Abort(s) => {
            v.push(2);
            v.extend_from_slice(s.as_bytes());
        }
    }
    v
}

pub(crate) fn decode_reply(p: &[u8]) -> Option<(u64, ReplyKind)> {
    if p.len() < 10 || p[0] != K_REPLY {
        return None;
    }
    let qid = u64::from_le_bytes(p[1..9].try_into().ok()?);
    let body = &p[10..];
    let kind = match p[9] {
        0 => ReplyKind::Value(body.to_vec()),
        1 => ReplyKind::Null,
        2 => ReplyKind::Abort(String::from_utf8_lossy(body).into_owned()),
        _ => return None,
    };
    Some((qid, kind))
}

pub(crate) fn encode_checkpoint(chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut w = Writer::new();
    chunks.to_vec().encode(&mut w);
    w.into_vec()
}

fn decode_checkpoint(b: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut r = Reader::new(b);
    let v = Vec::<Vec<u8>>::decode(&mut r).ok()?;
    r.finish().ok()?;
    Some(v)
}

/// A membership view as the application sees it (Isis² `View`): the members in rank order,
/// who joined, who left gracefully and who failed since the previous view.
///
/// ```
/// use vsync::marshal::Address;
/// use vsync::View;
/// let (a, b) = (Address::new(1, 1), Address::new(2, 1));
/// let v = View {
///     group: "foo".into(), id: 2, members: vec![a, b], joined: vec![b],
///     left: vec![], failed: vec![], me: b,
/// };
/// assert_eq!(v.my_rank(), Some(1));
/// assert!(!v.i_am_leader());
/// assert_eq!(v.to_string(), "View[gname=<foo>, viewid=2; 2 members={ [M1.1, M2.1]}, joining={ [M2.1]}, leaving={ []}, IamLeader = False]");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// The group's name.
    pub group: String,
    /// The view number (1 for the group's first view, then +1 per view).
    pub id: u32,
    /// The members in rank order (oldest first).
    pub members: Vec<Address>,
    /// Members added by this view.
    pub joined: Vec<Address>,
    /// Members that left gracefully (called `leave` or shut down) since the previous view.
    pub left: Vec<Address>,
    /// Members excluded without leaving (crashed, timed out, reported failed).
    pub failed: Vec<Address>,
    /// This member.
    pub me: Address,
}

impl View {
    pub(crate) fn from_oracle(
        name: &str,
        v: &OracleView,
        me: MemberId,
        announced: &BTreeSet<MemberId>,
    ) -> View {
        let conv = |l: &[MemberId]| l.iter().map(|m| Address::from(*m)).collect::<Vec<_>>();
        let (left, failed): (Vec<MemberId>, Vec<MemberId>) =
            v.left.iter().partition(|m| announced.contains(m));
        View {
            group: name.to_string(),
            id: v.id.0,
            members: conv(&v.members),
            joined: conv(&v.joined),
            left: conv(&left),
            failed: conv(&failed),
            me: Address::from(me),
        }
    }

    /// The rank of `who` (its index in `members`).
    ///
    /// ```
    /// # use vsync::{marshal::Address, View};
    /// let (a, b) = (Address::new(1, 1), Address::new(2, 1));
    /// let v = View { group: "g".into(), id: 1, members: vec![a, b], joined: vec![],
    ///     left: vec![], failed: vec![], me: a };
    /// assert_eq!(v.rank_of(b), Some(1));
    /// assert_eq!(v.rank_of(Address::new(3, 1)), None);
    /// ```
    pub fn rank_of(&self, who: Address) -> Option<usize> {
        self.members.iter().position(|m| *m == who)
    }

    /// This member's rank (Isis² `GetMyRank`).
    ///
    /// ```
    /// # use vsync::{marshal::Address, View};
    /// let (a, b) = (Address::new(1, 1), Address::new(2, 1));
    /// let v = View { group: "g".into(), id: 1, members: vec![a, b], joined: vec![],
    ///     left: vec![], failed: vec![], me: b };
    /// assert_eq!(v.my_rank(), Some(1));
    /// ```
    pub fn my_rank(&self) -> Option<usize> {
        self.rank_of(self.me)
    }

    /// True if this member has rank 0.
    ///
    /// ```
    /// # use vsync::{marshal::Address, View};
    /// let a = Address::new(1, 1);
    /// let v = View { group: "g".into(), id: 1, members: vec![a], joined: vec![a],
    ///     left: vec![], failed: vec![], me: a };
    /// assert!(v.i_am_leader());
    /// ```
    pub fn i_am_leader(&self) -> bool {
        self.members.first() == Some(&self.me)
    }

    /// The number of members.
    ///
    /// ```
    /// # use vsync::{marshal::Address, View};
    /// let (a, b) = (Address::new(1, 1), Address::new(2, 1));
    /// let v = View { group: "g".into(), id: 1, members: vec![a, b], joined: vec![],
    ///     left: vec![], failed: vec![], me: a };
    /// assert_eq!(v.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True if there are no members.
    ///
    /// ```
    /// # use vsync::{marshal::Address, View};
    /// let a = Address::new(1, 1);
    /// let v = View { group: "g".into(), id: 3, members: vec![], joined: vec![],
    ///     left: vec![a], failed: vec![], me: a };
    /// assert!(v.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// True if `who` is a member.
    ///
    /// ```
    /// # use vsync::{marshal::Address, View};
    /// let (a, b) = (Address::new(1, 1), Address::new(2, 1));
    /// let v = View { group: "g".into(), id: 2, members: vec![a], joined: vec![],
    ///     left: vec![], failed: vec![b], me: a };
    /// assert!(v.contains(a) && !v.contains(b));
    /// ```
    pub fn contains(&self, who: Address) -> bool {
        self.rank_of(who).is_some()
    }

    /// Everyone removed by this view (Isis² `leaving`: left and failed).
    ///
    /// ```
    /// # use vsync::{marshal::Address, View};
    /// let (a, b, c) = (Address::new(1, 1), Address::new(2, 1), Address::new(3, 1));
    /// let v = View { group: "g".into(), id: 4, members: vec![a], joined: vec![],
    ///     left: vec![b], failed: vec![c], me: a };
    /// assert_eq!(v.leaving(), vec![b, c]);
    /// ```
    pub fn leaving(&self) -> Vec<Address> {
        self.left.iter().chain(&self.failed).copied().collect()
    }

    /// The marshallable form (for sending a view in a message).
    ///
    /// ```
    /// # use vsync::{marshal::Address, View};
    /// let (a, b) = (Address::new(1, 1), Address::new(2, 1));
    /// let v = View { group: "g".into(), id: 2, members: vec![a], joined: vec![],
    ///     left: vec![b], failed: vec![], me: a };
    /// let m = v.to_marshal();
    /// assert_eq!((m.id, m.members, m.left), (2, vec![a], vec![b]));
    /// ```
    pub fn to_marshal(&self) -> crate::marshal::View {
        crate::marshal::View {
            group: gid_of(&self.group).0,
            id: self.id,
            members: self.members.clone(),
            joined: self.joined.clone(),
            left: self.leaving(),
        }
    }
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |l: &[Address]| {
            l.iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        write!(
            f,
            "View[gname=<{}>, viewid={}; {} members={{ [{}]}}, joining={{ [{}]}}, leaving={{ [{}]}}, IamLeader = {}]",
            self.group,
            self.id,
            self.members.len(),
            list(&self.members),
            list(&self.joined),
            list(&self.leaving()),
            if self.i_am_leader() { "True" } else { "False" }
        )
    }
}

/// Arguments for a send or query: a tuple of [`Encode`] values (`(rank, n)`, `(n,)`, `()`),
/// or a prebuilt [`ArgList`] (for example from [`args!`](crate::args)).
///
/// ```
/// use vsync::IntoArgs;
/// let a = (7i32, String::from("x")).into_arg_list();
/// assert_eq!(a.signature().to_string(), "(i32, String)");
/// ```
pub trait IntoArgs {
    /// The marshalled argument list.
    ///
    /// ```
    /// use vsync::IntoArgs;
    /// let a = (1u8, true).into_arg_list();
    /// assert_eq!(a.decode::<(u8, bool)>().unwrap(), (1, true));
    /// ```
    fn into_arg_list(self) -> ArgList;
}

impl<A: Args> IntoArgs for A {
    fn into_arg_list(self) -> ArgList {
        ArgList::new(&self)
    }
}

impl IntoArgs for ArgList {
    fn into_arg_list(self) -> ArgList {
        self
    }
}

impl IntoArgs for &ArgList {
    fn into_arg_list(self) -> ArgList {
        self.clone()
    }
}

type ViewFn = Box<dyn FnMut(&View) + Send>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Fresh,
    Joining,
    Joined,
    Left,
}

/// What the delivery thread takes at join.
struct Callbacks {
    handlers: Handlers,
    views: Vec<ViewFn>,
    make: Option<MakeFn>,
    load: Option<LoadFn>,
    initializers: Vec<InitFn>,
}

struct Local {
    phase: Phase,
    callbacks: Option<Callbacks>,
    registry: TypeRegistry,
    /// code → (signature code, signature): the sender-side check after join.
    table: BTreeMap<RequestCode, Vec<(Vec<u8>, Signature)>>,
    /// The persistent checkpoint file (`Persistent(path)`), if any.
    persistent: Option<CheckpointFile>,
    /// `SetSecure`: `Some(Some(key))` with the application's key, `Some(None)` for a random
    /// key shared through the persistent file's `.key` companion.
    secure: Option<Option<[u8; 32]>>,
}

struct GroupInner {
    system: System,
    name: String,
    gid: GroupId,
    local: Mutex<Local>,
    view: Mutex<Option<View>>,
    /// The sender and primitive of the message whose handlers are running.
    current: Mutex<Option<(Address, MsgKind)>>,
    /// The delivery thread's queue (for checkpoint requests), while joined.
    upcalls: Mutex<Option<Sender<Upcall>>>,
    /// The delivery threads, while they run (calls from a handler must not wait for them).
    delivery_thread: Mutex<Vec<ThreadId>>,
    /// `SetCheckpointInterval`, in milliseconds; 0 = manual checkpoints only.
    checkpoint_interval_ms: AtomicU64,
    /// Watches on members.
    watches: Mutex<Watches>,
    /// Request codes non-member clients may call (`AllowClientRequests`).
    client_codes: Mutex<BTreeSet<RequestCode>>,
    /// When the running upcall started (read by the system's watchdog).
    clock: Arc<crate::watchdog::DeliveryClock>,
    /// The running query's reply route, until answered or taken by `defer_reply`.
    reply_slot: Mutex<Option<ReplyRoute>>,
    /// SafeSend: threshold, durability method, the running SafeSend's tag.
    safe: SafeLocal,
}

/// An Isis² process group. Cheap to clone (clones are the same group object); handlers may
/// capture a clone to send or query from inside an upcall. See the [module docs](self).
///
/// ```no_run
/// # use vsync::{Group, System};
/// # let sys = System::start()?;
/// let g = Group::new(&sys, "foo")?;
/// let h = g.clone();
/// g.on(0, move |n: i32| println!("{n} from {:?}", h.sender()))?;
/// g.join()?;
/// # Ok::<(), vsync::VsyncError>(())
/// ```
#[derive(Clone)]
pub struct Group {
    inner: Arc<GroupInner>,
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.inner.name)
            .field("view", &self.view())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Group {
    /// A group object for `name` (1..=256 bytes) in `system`; nothing is sent until
    /// [`Group::join`].
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// let g = Group::new(&sys, "foo")?;
    /// assert!(Group::new(&sys, "").is_err());
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn new(system: &System, name: &str) -> Result<Group, VsyncError> {
        system.check()?;
        if name.is_empty() || name.len() > MAX_GROUP_NAME {
            return Err(VsyncError::Config(format!(
                "group name of {} bytes: expected 1..={MAX_GROUP_NAME} bytes",
                name.len()
            )));
        }
        Ok(Group {
            inner: Arc::new(GroupInner {
                system: system.clone(),
                name: name.to_string(),
                gid: gid_of(name),
                local: Mutex::new(Local {
                    phase: Phase::Fresh,
                    callbacks: Some(Callbacks {
                        handlers: Handlers::new(),
                        views: Vec::new(),
                        make: None,
                        load: None,
                        initializers: Vec::new(),
                    }),
                    registry: TypeRegistry::new(),
                    table: BTreeMap::new(),
                    persistent: None,
                    secure: None,
                }),
                view: Mutex::new(None),
                current: Mutex::new(None),
                upcalls: Mutex::new(None),
                delivery_thread: Mutex::new(Vec::new()),
                checkpoint_interval_ms: AtomicU64::new(0),
                watches: Mutex::new(Watches::default()),
                client_codes: Mutex::new(BTreeSet::new()),
                clock: Arc::new(crate::watchdog::DeliveryClock::new()),
                reply_slot: Mutex::new(None),
                safe: SafeLocal::default(),
            }),
        })
    }

    /// The group's name.
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// let g = Group::new(&sys, "foo")?;
    /// assert_eq!(g.name(), "foo");
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The system this group belongs to.
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// let g = Group::new(&sys, "foo")?;
    /// println!("I am {}", g.system().my_address());
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn system(&self) -> &System {
        &self.inner.system
    }

    fn before_join<T>(&self, f: impl FnOnce(&mut Callbacks) -> T) -> Result<T, VsyncError> {
        self.inner.system.check()?;
        let mut l = lock(&self.inner.local);
        let fresh = l.phase == Phase::Fresh;
        match (fresh, l.callbacks.as_mut()) {
            (true, Some(cb)) => Ok(f(cb)),
            _ => Err(VsyncError::AlreadyJoined {
                group: self.inner.name.clone(),
            }),
        }
    }

    /// Registers a request handler for `code` (Isis² `g.Handlers[code] += ...`). Its argument
    /// types are its signature; several handlers may share a code when their signatures
    /// differ (a message runs the ones whose signature matches). A handler returns `()`
    /// (no reply: `NullReply` to a query), a value (the reply), or a [`Reply`]
    /// (`Reply::abort(..)` is `AbortReply`). Only before joining.
    ///
    /// ```no_run
    /// # use vsync::{Group, System, Reply};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "foo")?;
    /// g.on(0, |name: String, n: i32| println!("{name}: {n}"))?; // a message handler
    /// g.on(1, |n: i32| n * 2)?; // a query handler replying with a value
    /// g.on(1, |_s: String| Reply::abort("strings not supported"))?; // same code, other signature
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn on<A, R, H: Handler<A, R>>(
        &self,
        code: RequestCode,
        handler: H,
    ) -> Result<&Self, VsyncError> {
        self.before_join(|cb| {
            cb.handlers.on(code, handler);
        })?;
        Ok(self)
    }

    /// Registers a view callback (Isis² `ViewHandlers`), run on the delivery thread for every
    /// new view, in order with the messages. Only before joining.
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "foo")?;
    /// g.on_view(|v| println!("view {} with {} members, rank {:?}", v.id, v.len(), v.my_rank()))?;
    /// g.join()?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn on_view(&self, f: impl FnMut(&View) + Send + 'static) -> Result<&Self, VsyncError> {
        self.before_join(|cb| cb.views.push(Box::new(f)))?;
        Ok(self)
    }

    /// Registers the state-transfer maker (Isis² `MakeChkpt`): called at the rank-0 member
    /// when a view adds joiners; its chunks reach every joiner of that view. Only before
    /// joining.
    ///
    /// ```no_run
    /// # use std::sync::{Arc, Mutex};
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "foo")?;
    /// let state = Arc::new(Mutex::new(vec![1u8, 2, 3]));
    /// let s = state.clone();
    /// g.make_checkpoint(move || vec![s.lock().unwrap().clone()])?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn make_checkpoint(
        &self,
        f: impl FnMut() -> Vec<Vec<u8>> + Send + 'static,
    ) -> Result<&Self, VsyncError> {
        self.before_join(|cb| cb.make = Some(Box::new(f)))?;
        Ok(self)
    }

    /// Registers the state-transfer loader (Isis² `LoadChkpt`): called at a joiner, before
    /// its first view callback, with the chunks rank 0 made. Only before joining.
    ///
    /// ```no_run
    /// # use std::sync::{Arc, Mutex};
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "foo")?;
    /// let state = Arc::new(Mutex::new(Vec::<u8>::new()));
    /// let s = state.clone();
    /// g.load_checkpoint(move |chunks| *s.lock().unwrap() = chunks.concat())?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn load_checkpoint(
        &self,
        f: impl FnMut(Vec<Vec<u8>>) + Send + 'static,
    ) -> Result<&Self, VsyncError> {
        self.before_join(|cb| cb.load = Some(Box::new(f)))?;
        Ok(self)
    }

    /// Registers an initializer (Isis² `g.Initializer += ...`): runs on the delivery thread,
    /// before the first view callback, at a member that creates the group — only when no
    /// other member is running (otherwise a state transfer is done) and no persistent
    /// checkpoint exists (otherwise it is loaded). Only before joining.
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// let g = Group::new(&sys, "accounts")?;
    /// g.initializer(|| println!("accounts is starting from scratch"))?;
    /// g.join()?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn initializer(&self, f: impl FnMut() + Send + 'static) -> Result<&Self, VsyncError> {
        self.before_join(|cb| cb.initializers.push(Box::new(f)))?;
        Ok(self)
    }

    /// Isis² `Persistent(path)`: associates the group with a checkpoint file so its state
    /// survives periods when every member has exited. Every member calls it (all must reach
    /// the same file; only the rank-0 member writes it). The checkpoint is the state-transfer
    /// maker's chunks ([`Group::make_checkpoint`]), loaded with the loader
    /// ([`Group::load_checkpoint`]); both must be registered. A member creating the group
    /// loads the file if it holds a checkpoint (the initializer then does not run), or runs
    /// the initializer and writes the first checkpoint. Writes go to `{path}.tmp`, are
    /// fsynced and renamed over `path`, keeping the previous checkpoint as `{path}.bak`. A
    /// corrupt file fails [`Group::join`] with [`VsyncError::Checkpoint`] and leaves `.bak`
    /// intact. Only before joining.
    ///
    /// ```no_run
    /// # use std::sync::{Arc, Mutex};
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// let counter = Arc::new(Mutex::new(0u64));
    /// let g = Group::new(&sys, "counter")?;
    /// let c = counter.clone();
    /// g.make_checkpoint(move || vec![c.lock().unwrap().to_le_bytes().to_vec()])?;
    /// let c = counter.clone();
    /// g.load_checkpoint(move |chunks| {
    ///     *c.lock().unwrap() = u64::from_le_bytes(chunks[0][..8].try_into().unwrap())
    /// })?;
    /// g.persistent("/var/lib/myapp/counter.ckpt")?;
    /// g.join()?;
    /// g.set_checkpoint_interval(Some(std::time::Duration::from_secs(30)))?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn persistent(&self, path: impl Into<PathBuf>) -> Result<&Self, VsyncError> {
        let path = path.into();
        if path.as_os_str().is_empty() || path.file_name().is_none() {
            return Err(VsyncError::Config(format!(
                "Persistent({}): expected a file path",
                path.display()
            )));
        }
        self.inner.system.check()?;
        let mut l = lock(&self.inner.local);
        if l.phase != Phase::Fresh {
            return Err(VsyncError::AlreadyJoined {
                group: self.inner.name.clone(),
            });
        }
        l.persistent = Some(CheckpointFile::new(path));
        Ok(self)
    }

    /// Isis² `SetSecure()` / `SetSecure(key)`: every datagram of the group is encrypted and
    /// authenticated with an AES-256-GCM group key, and members with a different key (or
    /// none) are refused at join with an error saying the keys differ.
    ///
    /// * `Some(key)`: the application supplies the key (and must get it to every member,
    ///   e.g. from a certificate store); it is never written anywhere, and a persistent
    ///   group's checkpoint file is encrypted with it.
    /// * `None`: a random key, which requires [`Group::persistent`]: the first member
    ///   creates `{path}.key` (mode 0600) beside the checkpoint and later members read it, so
    ///   access to the group is governed by file permissions (the manual's first mode); the
    ///   checkpoint itself is not encrypted.
    ///
    /// Only before joining.
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// let key = [0x42u8; 32]; // from a key store, in real use
    /// let g = Group::new(&sys, "payroll")?;
    /// g.on(0, |amount: u64| println!("{amount}"))?;
    /// g.set_secure(Some(key))?;
    /// g.join()?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn set_secure(&self, key: Option<[u8; 32]>) -> Result<&Self, VsyncError> {
        self.inner.system.check()?;
        let mut l = lock(&self.inner.local);
        if l.phase != Phase::Fresh {
            return Err(VsyncError::AlreadyJoined {
                group: self.inner.name.clone(),
            });
        }
        l.secure = Some(key);
        Ok(self)
    }

    /// Isis² `MakeCheckpoint()`: at the rank-0 member of a persistent group, writes a
    /// checkpoint now, after the messages already delivered; returns `true` if this member
    /// wrote it (`false` at other members and for groups that are not persistent). Called
    /// from inside a handler of this group, the checkpoint is queued behind the running
    /// handler and the call returns `true` at rank 0 without waiting.
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "counter")?;
    /// # g.join()?;
    /// if g.checkpoint_now()? {
    ///     println!("checkpoint written");
    /// }
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn checkpoint_now(&self) -> Result<bool, VsyncError> {
        self.joined()?;
        let Some(tx) = lock(&self.inner.upcalls).clone() else {
            return Err(VsyncError::NotJoined {
                group: self.inner.name.clone(),
            });
        };
        let on_delivery_thread =
            lock(&self.inner.delivery_thread).contains(&std::thread::current().id());
        if on_delivery_thread {
            let rank0 = self.my_rank() == Some(0);
            let _ = tx.send(Upcall::Persist { done: None });
            return Ok(rank0 && lock(&self.inner.local).persistent.is_some());
        }
        let (done, rx) = mpsc::channel();
        tx.send(Upcall::Persist { done: Some(done) })
            .map_err(|_| VsyncError::NotJoined {
                group: self.inner.name.clone(),
            })?;
        let sys = &self.inner.system;
        sys.wait(&rx, Some(sys.inner.join_timeout), "the checkpoint")
    }

    /// Isis² `SetCheckpointInterval(s)`: the rank-0 member of a persistent group writes a
    /// checkpoint every `interval` (`None`, like `SetCheckpointInterval(-1)`, returns to
    /// manual checkpoints). May be called before or after joining; every member may call it
    /// (whoever is rank 0 acts on it).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "foo")?;
    /// g.set_checkpoint_interval(Some(Duration::from_secs(60)))?;
    /// g.set_checkpoint_interval(None)?; // back to manual checkpoints
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn set_checkpoint_interval(&self, interval: Option<Duration>) -> Result<(), VsyncError> {
        self.inner.system.check()?;
        let ms = match interval {
            None => 0,
            Some(d) if d.is_zero() => {
                return Err(VsyncError::Config(
                    "SetCheckpointInterval: the interval must be positive (None for manual)".into(),
                ))
            }
            Some(d) => d.as_millis().clamp(1, u64::MAX as u128) as u64,
        };
        self.inner
            .checkpoint_interval_ms
            .store(ms, Ordering::Relaxed);
        if let Some(tx) = lock(&self.inner.upcalls).as_ref() {
            let _ = tx.send(Upcall::Wake);
        }
        Ok(())
    }

    /// Isis² `Watch[who] += f`: `f(who, event)` runs on the delivery thread, in order with
    /// the views, whenever a later view shows `who` joining or leaving (gracefully or by
    /// failure). Returns an id for [`Group::cancel_watch`] (`Watch[who] -= f`). May be
    /// called at any time.
    ///
    /// ```no_run
    /// # use vsync::{Group, System, WatchEvent};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "foo")?;
    /// # g.join()?;
    /// let who = g.view().unwrap().members[0];
    /// let id = g.watch(who, |who, ev| match ev {
    ///     WatchEvent::Join => println!("{who} joined"),
    ///     WatchEvent::Leave { failed } => println!("{who} left (failed: {failed})"),
    /// })?;
    /// g.cancel_watch(id);
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn watch(
        &self,
        who: Address,
        f: impl FnMut(Address, WatchEvent) + Send + 'static,
    ) -> Result<WatchId, VsyncError> {
        self.inner.system.check()?;
        Ok(lock(&self.inner.watches).add(who, Box::new(f)))
    }

    /// Cancels a watch; false if it was already cancelled.
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "foo")?;
    /// let id = g.watch(sys.my_address(), |who, ev| println!("{who}: {ev:?}"))?;
    /// assert!(g.cancel_watch(id));
    /// assert!(!g.cancel_watch(id));
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn cancel_watch(&self, id: WatchId) -> bool {
        lock(&self.inner.watches).cancel(id)
    }

    /// Isis² `SetReplyThread`: inside a query handler, takes over the reply so another
    /// thread can send it later ([`DeferredReply::send`]); the handler's own return value is
    /// then not sent. Dropping the handle without sending answers with a `NullReply`, so a
    /// forgotten reply cannot leave the caller waiting. Errors outside a query handler or when
    /// the reply was already taken.
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// let g = Group::new(&sys, "slow-answers")?;
    /// let me = g.clone();
    /// g.on(0, move |n: u64| {
    ///     let reply = me.defer_reply().expect("inside a query");
    ///     std::thread::spawn(move || reply.send(n * 2)); // the delivery thread goes on
    /// })?;
    /// g.join()?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn defer_reply(&self) -> Result<DeferredReply, VsyncError> {
        match lock(&self.inner.reply_slot).take() {
            Some(route) => Ok(DeferredReply {
                sys: self.inner.system.clone(),
                route: Some(route),
            }),
            None => Err(VsyncError::Config(
                "defer_reply: only inside a query handler, and only once per query".into(),
            )),
        }
    }

    /// Isis² `AllowClientRequests(code)`: lets non-member [`Client`](crate::Client)s call the
    /// handlers of `code` at this member when it is their representative. Requests for other
    /// codes get an `AbortReply` ("The group has not enabled client requests to request-code
    /// k"). May be called at any time; every member that may represent clients calls it.
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// let g = Group::new(&sys, "directory")?;
    /// g.on(0, |name: String| name.len() as u32)?;
    /// g.allow_client_requests(0)?;
    /// g.join()?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn allow_client_requests(&self, code: RequestCode) -> Result<&Self, VsyncError> {
        self.inner.system.check()?;
        lock(&self.inner.client_codes).insert(code);
        Ok(self)
    }

    /// Isis² `RedirectClient(client, newRep)`: tells a client this member represents to use
    /// `new_rep` (a member of the current view) from now on. Requests already on their way
    /// may still arrive here.
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "directory")?;
    /// # g.join()?;
    /// # let client = sys.my_address();
    /// let other = g.view().unwrap().members[1];
    /// g.redirect_client(client, other)?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn redirect_client(&self, client: Address, new_rep: Address) -> Result<(), VsyncError> {
        self.joined()?;
        if !self.view().is_some_and(|v| v.contains(new_rep)) {
            return Err(VsyncError::NotMember { member: new_rep });
        }
        let gid = self.inner.gid;
        let limit = self.inner.system.inner.join_timeout;
        self.submit_and_wait(limit, "the redirect", |done| Cmd::RedirectClient {
            gid,
            client: client.member_id(),
            new_rep: new_rep.member_id(),
            done,
        })
    }

    /// Isis² `HasFailed(who)`: reports a member of the current view as failed; the oracle
    /// excludes it and a new view follows (use with care: the member is poisoned). Only for
    /// a current member of a group this process belongs to.
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "foo")?;
    /// # g.join()?;
    /// let suspect = g.view().unwrap().members[1];
    /// g.has_failed(suspect)?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn has_failed(&self, who: Address) -> Result<(), VsyncError> {
        self.joined()?;
        if !self.view().is_some_and(|v| v.contains(who)) {
            return Err(VsyncError::NotMember { member: who });
        }
        self.inner.system.submit(Cmd::HasFailed {
            gid: self.inner.gid,
            who: who.member_id(),
        })
    }

    /// Isis² `Terminate()`: ends the group for every member. Each member's delivery thread
    /// stops after the messages delivered before the end; afterwards the group is not
    /// joined anywhere, and its name may be created again (a persistent group then restarts
    /// from its checkpoint file).
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "scratch")?;
    /// # g.join()?;
    /// g.terminate()?;
    /// assert!(!g.is_joined());
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn terminate(&self) -> Result<(), VsyncError> {
        self.joined()?;
        let sys = &self.inner.system;
        let gid = self.inner.gid;
        self.submit_and_wait(sys.inner.join_timeout, "the group to terminate", |done| {
            Cmd::Terminate { gid, done }
        })?;
        // Called from one of this group's handlers: the delivery thread is this thread, so
        // it cannot see the end before the handler returns (waiting would stall it for the
        // join timeout, and the watchdog could poison the process). The end is queued
        // behind the running handler.
        if lock(&self.inner.delivery_thread).contains(&std::thread::current().id()) {
            lock(&self.inner.local).phase = Phase::Left;
            return Ok(());
        }
        // The oracle has ended the group; wait (bounded) for this member to see it.
        let t = Instant::now();
        while lock(&self.inner.local).phase == Phase::Joined && t.elapsed() < sys.inner.join_timeout
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        lock(&self.inner.local).phase = Phase::Left;
        Ok(())
    }

    /// Registers a user type (Isis² `Msg.RegisterType`) whose definition becomes part of the
    /// group signature. Types used by handler signatures are registered automatically.
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "foo")?;
    /// g.register_type::<Vec<(String, u64)>>()?;
    /// g.join()?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn register_type<T: Encode + ?Sized>(&self) -> Result<&Self, VsyncError> {
        self.inner.system.check()?;
        let mut l = lock(&self.inner.local);
        if l.phase != Phase::Fresh {
            return Err(VsyncError::AlreadyJoined {
                group: self.inner.name.clone(),
            });
        }
        l.registry.register::<T>()?;
        Ok(self)
    }

    /// Isis² `Join()`: joins the group, creating it if it does not exist. Returns once this
    /// member's first view has been delivered (after its checkpoint is loaded).
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// let g = Group::new(&sys, "foo")?;
    /// g.join()?;
    /// assert!(g.is_joined());
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn join(&self) -> Result<(), VsyncError> {
        self.do_join(JoinMode::JoinOrCreate)
    }

    /// Creates the group with this member as its only member; fails if it exists.
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// let g = Group::new(&sys, "fresh-group")?;
    /// g.create()?; // an error if "fresh-group" already has members
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn create(&self) -> Result<(), VsyncError> {
        self.do_join(JoinMode::Create)
    }

    /// Joins an existing group; fails (the oracle's "unknown group") if it does not exist.
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// let g = Group::new(&sys, "foo")?;
    /// if g.join_existing().is_err() {
    ///     println!("nobody runs foo yet");
    /// }
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn join_existing(&self) -> Result<(), VsyncError> {
        self.do_join(JoinMode::JoinExisting)
    }

    fn do_join(&self, mode: JoinMode) -> Result<(), VsyncError> {
        let sys = &self.inner.system;
        sys.check()?;
        let (callbacks, signature, persistent, key) = {
            let mut l = lock(&self.inner.local);
            if l.phase != Phase::Fresh {
                return Err(VsyncError::AlreadyJoined {
                    group: self.inner.name.clone(),
                });
            }
            let Some(cb) = l.callbacks.as_ref() else {
                return Err(VsyncError::AlreadyJoined {
                    group: self.inner.name.clone(),
                });
            };
            let mut registry = l.registry.clone();
            let mut table: BTreeMap<RequestCode, Vec<(Vec<u8>, Signature)>> = BTreeMap::new();
            for (code, sig) in cb.handlers.iter() {
                for t in sig.types() {
                    registry.register_desc(t)?;
                }
                table
                    .entry(code)
                    .or_default()
                    .push((sig.code(), sig.clone()));
            }
            if l.persistent.is_some() && (cb.make.is_none() || cb.load.is_none()) {
                return Err(VsyncError::Config(format!(
                    "group {:?} is Persistent: register make_checkpoint and load_checkpoint \
                     before joining (the checkpoint is the state transfer's)",
                    self.inner.name
                )));
            }
            let set = SignatureSet::from_handlers(&cb.handlers, &registry)?;
            let key = match l.secure {
                None => None,
                Some(Some(k)) => Some(k),
                Some(None) => {
                    let Some(file) = l.persistent.as_ref() else {
                        return Err(VsyncError::Config(format!(
                            "group {:?}: set_secure(None) draws a random key that members share \
                             through the persistent checkpoint's directory: call persistent(path) \
                             too, or supply the key with set_secure(Some(key))",
                            self.inner.name
                        )));
                    };
                    let mut kp = file.path().as_os_str().to_owned();
                    kp.push(".key");
                    let kp = PathBuf::from(kp);
                    Some(crate::secure::load_or_create_key_file(&kp).map_err(|e| {
                        VsyncError::Config(format!("group key file {}: {e}", kp.display()))
                    })?)
                }
            };
            if let Some(Some(k)) = l.secure {
                l.persistent = l.persistent.take().map(|file| file.with_key(k));
            }
            let mut signature =
                crate::safe::sign(oracle_signature(&set), self.inner.safe.threshold());
            if let Some(k) = &key {
                let kcv = crate::secure::check_value(k);
                signature.hash ^= kcv.rotate_left(17) | 1;
                signature.text = format!("{}; secure group (key check {kcv:016x})", signature.text);
            }
            l.registry = registry;
            l.table = table;
            l.phase = Phase::Joining;
            (l.callbacks.take(), signature, l.persistent.clone(), key)
        };
        let Some(callbacks) = callbacks else {
            return Err(VsyncError::AlreadyJoined {
                group: self.inner.name.clone(),
            });
        };
        let mut callbacks = callbacks;
        let handlers = Arc::new(Mutex::new(std::mem::replace(
            &mut callbacks.handlers,
            Handlers::new(),
        )));
        let (main_tx, main_rx) = mpsc::channel::<Upcall>();
        let (p2p_tx, p2p_rx) = mpsc::channel::<Upcall>();
        let up_tx = UpcallTx {
            main: main_tx.clone(),
            p2p: p2p_tx,
        };
        *lock(&self.inner.upcalls) = Some(main_tx);
        let inner = self.inner.clone();
        let persistence = Persistence::new(persistent);
        let h = handlers.clone();
        let thread = std::thread::Builder::new()
            .name(format!("vsync-deliver-{}", self.inner.name))
            .spawn(move || delivery_loop(inner, main_rx, callbacks, h, persistence))
            .map_err(|e| VsyncError::Start(format!("delivery thread: {e}")))?;
        let inner = self.inner.clone();
        let p2p_thread = std::thread::Builder::new()
            .name(format!("vsync-p2p-{}", self.inner.name))
            .spawn(move || p2p_loop(inner, p2p_rx, handlers))
            .map_err(|e| VsyncError::Start(format!("P2P delivery thread: {e}")))?;
        *lock(&self.inner.delivery_thread) = vec![thread.thread().id(), p2p_thread.thread().id()];
        let (done, rx) = mpsc::channel();
        let r = sys
            .submit(Cmd::SafeConfig {
                gid: self.inner.gid,
                threshold: self.inner.safe.threshold(),
                durability: self.inner.safe.durability(),
                log_failures: self.inner.safe.log_failures(),
            })
            .and_then(|()| {
                sys.submit(Cmd::Join {
                    gid: self.inner.gid,
                    name: self.inner.name.clone(),
                    signature,
                    mode,
                    upcalls: up_tx,
                    key,
                    clock: self.inner.clock.clone(),
                    done,
                })
            })
            .and_then(|()| sys.wait(&rx, Some(sys.inner.join_timeout), "the first view"));
        let mut l = lock(&self.inner.local);
        match &r {
            Ok(()) => l.phase = Phase::Joined,
            Err(_) => {
                l.phase = Phase::Left;
                drop(l);
                // No view will come: let the delivery thread end (it holds the group, and
                // the group held the thread's only other sender, so it waited forever).
                *lock(&self.inner.upcalls) = None;
                if matches!(
                    r,
                    Err(VsyncError::Timeout(_)) | Err(VsyncError::Checkpoint(_))
                ) {
                    let (done, _rx) = mpsc::channel();
                    let _ = sys.submit(Cmd::Leave {
                        gid: self.inner.gid,
                        done,
                    });
                }
            }
        }
        r
    }

    /// Leaves the group gracefully: the others see this member in [`View::left`] (not
    /// [`View::failed`]). Returns once the member is out of the group.
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "foo")?;
    /// g.join()?;
    /// g.leave()?;
    /// assert!(!g.is_joined() && g.view().is_none());
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn leave(&self) -> Result<(), VsyncError> {
        self.joined()?;
        let gid = self.inner.gid;
        let limit = self.inner.system.inner.join_timeout;
        let r = self.submit_and_wait(limit, "the leave to complete", |done| Cmd::Leave {
            gid,
            done,
        });
        if r.is_ok() {
            lock(&self.inner.local).phase = Phase::Left;
        }
        r
    }

    /// The current view, as the delivery thread last delivered it (so inside a handler it is
    /// the view the message is delivered in). `None` before joining and after leaving.
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "foo")?;
    /// g.join()?;
    /// let v = g.view().expect("joined");
    /// println!("{} members, leader {}", v.len(), v.members[0]);
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn view(&self) -> Option<View> {
        lock(&self.inner.view).clone()
    }

    /// Inside a handler: the sender of the message being delivered (Isis² `GetSender`-style
    /// context); `None` outside handlers.
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "foo")?;
    /// let h = g.clone();
    /// g.on(0, move |n: i32| println!("{n} from {}", h.sender().unwrap()))?;
    /// assert_eq!(g.sender(), None); // outside a handler
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn sender(&self) -> Option<Address> {
        lock(&self.inner.current).map(|(a, _)| a)
    }

    /// Inside a handler: whether the message came by Send, OrderedSend, P2P, CausalSend,
    /// RawSend or RawP2PSend.
    ///
    /// ```no_run
    /// # use vsync::{Group, MsgKind, System};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "foo")?;
    /// let h = g.clone();
    /// g.on(0, move |n: i32| {
    ///     if h.message_kind() == Some(MsgKind::Ordered) {
    ///         println!("{n} arrived in the total order");
    ///     }
    /// })?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn message_kind(&self) -> Option<MsgKind> {
        lock(&self.inner.current).map(|(_, k)| k)
    }

    /// This member's rank in [`Group::view`].
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "foo")?;
    /// g.join()?;
    /// if g.my_rank() == Some(0) {
    ///     println!("I am the leader");
    /// }
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn my_rank(&self) -> Option<usize> {
        self.view().and_then(|v| v.my_rank())
    }

    /// True between a successful join and leaving (or shutdown).
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// let g = Group::new(&sys, "foo")?;
    /// assert!(!g.is_joined());
    /// g.join()?;
    /// assert!(g.is_joined());
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn is_joined(&self) -> bool {
        self.inner.system.is_active() && lock(&self.inner.local).phase == Phase::Joined
    }

    fn joined(&self) -> Result<(), VsyncError> {
        self.inner.system.check()?;
        if lock(&self.inner.local).phase != Phase::Joined {
            return Err(VsyncError::NotJoined {
                group: self.inner.name.clone(),
            });
        }
        Ok(())
    }

    /// The sender-side check: some handler of `code` takes these arguments. The error names
    /// the signatures expected.
    fn check_args(&self, code: RequestCode, args: &ArgList) -> Result<(), VsyncError> {
        let l = lock(&self.inner.local);
        let Some(list) = l.table.get(&code) else {
            return Err(VsyncError::Signature(DispatchError::UnknownCode {
                code,
                known: l.table.keys().copied().collect(),
            }));
        };
        if list.iter().any(|(c, _)| c == args.signature_code()) {
            return Ok(());
        }
        let expected: Vec<Signature> = list.iter().map(|(_, s)| s.clone()).collect();
        let actual = args.signature().with_names_from(expected.iter());
        Err(VsyncError::Signature(DispatchError::NoMatchingSignature {
            code,
            actual,
            expected,
        }))
    }

    fn prepare(&self, code: RequestCode, args: impl IntoArgs) -> Result<ArgList, VsyncError> {
        self.joined()?;
        let args = args.into_arg_list();
        self.check_args(code, &args)?;
        let max = self.inner.system.inner.max_message;
        if args.as_bytes().len() > max {
            return Err(VsyncError::Send(format!(
                "message of {} bytes exceeds the limit of {max} bytes",
                args.as_bytes().len()
            )));
        }
        Ok(args)
    }

    fn multicast(
        &self,
        ordered: bool,
        code: RequestCode,
        args: impl IntoArgs,
    ) -> Result<(), VsyncError> {
        let args = self.prepare(code, args)?;
        self.inner.system.submit(Cmd::Multicast {
            gid: self.inner.gid,
            ordered,
            payload: encode_msg(code, &args),
        })
    }

    /// Isis² `Send`: FIFO multicast to the current view (sender order is kept; different
    /// senders' messages may interleave differently at different members). Returns once
    /// queued; the handlers of `code` whose signature matches run at every member.
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "foo")?;
    /// g.on(0, |name: String, n: i32| println!("{name} = {n}"))?;
    /// g.join()?;
    /// g.send(0, ("x".to_string(), 1i32))?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn send(&self, code: RequestCode, args: impl IntoArgs) -> Result<(), VsyncError> {
        self.multicast(false, code, args)
    }

    /// Isis² `OrderedSend`: totally ordered multicast (every member delivers all OrderedSends
    /// in the same order).
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "foo")?;
    /// g.on(0, |n: i64| println!("deposit {n}"))?;
    /// g.join()?;
    /// g.ordered_send(0, (100i64,))?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn ordered_send(&self, code: RequestCode, args: impl IntoArgs) -> Result<(), VsyncError> {
        self.multicast(true, code, args)
    }

    /// Isis² `P2PSend`: a reliable FIFO message to one member of the current view.
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "foo")?;
    /// g.on(0, |msg: String| println!("{msg}"))?;
    /// g.join()?;
    /// let leader = g.view().unwrap().members[0];
    /// g.p2p_send(leader, 0, ("hello leader".to_string(),))?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn p2p_send(
        &self,
        to: Address,
        code: RequestCode,
        args: impl IntoArgs,
    ) -> Result<(), VsyncError> {
        let args = self.prepare(code, args)?;
        if !self.view().is_some_and(|v| v.contains(to)) {
            return Err(VsyncError::NotMember { member: to });
        }
        self.inner.system.submit(Cmd::P2p {
            gid: self.inner.gid,
            to: to.member_id(),
            payload: encode_msg(code, &args),
        })
    }

    fn do_query(
        &self,
        ordered: bool,
        want: NReplies,
        timeout: Timeout,
        code: RequestCode,
        args: impl IntoArgs,
    ) -> Result<Replies, VsyncError> {
        let body = self.query_body(code, args)?;
        let gid = self.inner.gid;
        self.await_replies(timeout, "query replies", |done| Cmd::Query {
            gid,
            ordered,
            want,
            timeout,
            body,
            done,
        })
    }

    /// Submits a query's command, built around its reply channel, and waits for the replies.
    /// The collector enforces `timeout`; the extra margin only guards against a stall.
    fn await_replies(
        &self,
        timeout: Timeout,
        what: &str,
        cmd: impl FnOnce(crate::system::Done<Replies>) -> Cmd,
    ) -> Result<Replies, VsyncError> {
        let limit = timeout.after.saturating_add(Duration::from_secs(30));
        self.submit_and_wait(limit, what, cmd)
    }

    /// Submits a command built around its answer channel and waits up to `limit` for the
    /// answer (`what` names it in the timeout error).
    fn submit_and_wait<T>(
        &self,
        limit: Duration,
        what: &str,
        cmd: impl FnOnce(crate::system::Done<T>) -> Cmd,
    ) -> Result<T, VsyncError> {
        let sys = &self.inner.system;
        let (done, rx) = mpsc::channel();
        sys.submit(cmd(done))?;
        sys.wait(&rx, Some(limit), what)
    }

    /// Isis² `Query`: a Send-ordered multicast whose handlers reply; waits for `want`
    /// replies (members that fail or send `NullReply` are not waited for) or the timeout.
    /// An `AbortReply` fails the call with [`VsyncError::Query`].
    ///
    /// ```no_run
    /// # use vsync::{Group, NReplies, System, Timeout};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "foo")?;
    /// g.on(0, |n: i32| n + 1)?;
    /// g.join()?;
    /// let replies = g.query(NReplies::All, Timeout::default(), 0, (41i32,))?;
    /// let answers: Vec<i32> = replies.decode()?;
    /// assert!(answers.iter().all(|a| *a == 42));
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn query(
        &self,
        want: NReplies,
        timeout: Timeout,
        code: RequestCode,
        args: impl IntoArgs,
    ) -> Result<Replies, VsyncError> {
        self.do_query(false, want, timeout, code, args)
    }

    /// Isis² `OrderedQuery`: like [`Group::query`] with OrderedSend delivery order, so every
    /// member answers in the same state.
    ///
    /// ```no_run
    /// # use vsync::{Group, NReplies, System, Timeout};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "foo")?;
    /// g.on(0, |key: String| key.len() as u64)?;
    /// g.join()?;
    /// let r = g.ordered_query(NReplies::Count(1), Timeout::default(), 0, ("k".to_string(),))?;
    /// let lens: Vec<u64> = r.decode()?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn ordered_query(
        &self,
        want: NReplies,
        timeout: Timeout,
        code: RequestCode,
        args: impl IntoArgs,
    ) -> Result<Replies, VsyncError> {
        self.do_query(true, want, timeout, code, args)
    }

    /// Isis² `Flush`: returns once every multicast this member sent to the group is held by
    /// every other member (all-stable).
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "foo")?;
    /// # g.join()?;
    /// g.send(0, (1i32,))?;
    /// g.flush()?; // every member now holds the send
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn flush(&self) -> Result<(), VsyncError> {
        self.do_flush(None)
    }

    /// Isis² `Flush(k)`: returns once this member's multicasts are held by at least `k`
    /// other members (capped at the group's size).
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "foo")?;
    /// # g.join()?;
    /// g.send(0, (1i32,))?;
    /// g.flush_k(2)?; // at least two other members hold it
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn flush_k(&self, k: usize) -> Result<(), VsyncError> {
        self.do_flush(Some(k))
    }

    fn do_flush(&self, k: Option<usize>) -> Result<(), VsyncError> {
        self.joined()?;
        let gid = self.inner.gid;
        let limit = self.inner.system.inner.join_timeout;
        self.submit_and_wait(limit, "the flush", |done| Cmd::Flush { gid, k, done })
    }
}

/// SafeSend and SafeQuery: durable, totally ordered multicast (Isis²'s Paxos). See
/// [`crate::safe`] for the protocol.
impl Group {
    fn before_join_safe(&self) -> Result<(), VsyncError> {
        self.inner.system.check()?;
        if lock(&self.inner.local).phase != Phase::Fresh {
            return Err(VsyncError::AlreadyJoined {
                group: self.inner.name.clone(),
            });
        }
        Ok(())
    }

    /// Isis² `SetSafeSendThreshold(Φ)`: the `Φ` lowest-ranked members of each view are the
    /// acceptors, and a SafeSend is delivered once `min(Φ, view size)` of them logged it. The
    /// default is every member. Only before joining, and every member must set the same value
    /// (it is part of the group signature, so a member with another `Φ` is refused). `0` is
    /// [`SafeError::ZeroThreshold`](crate::safe::SafeError::ZeroThreshold).
    ///
    /// ```no_run
    /// use vsync::{Group, System};
    /// let sys = System::start()?;
    /// let g = Group::new(&sys, "accounts")?;
    /// g.on(0, |amount: i64| println!("debit {amount}"))?;
    /// g.set_safe_send_threshold(3)?; // three acceptors (Paxos' acceptor set)
    /// g.join()?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn set_safe_send_threshold(&self, phi: usize) -> Result<&Self, VsyncError> {
        self.before_join_safe()?;
        self.inner.safe.set_threshold(phi)?;
        Ok(self)
    }

    /// Isis² `SetDurabilityMethod(..)`: how acceptors log SafeSends. The default is an
    /// in-memory [`MemoryLogger`](crate::durability::MemoryLogger); a
    /// [`DiskLogger`](crate::durability::DiskLogger) forces each message to disk before the
    /// member accepts it, and after a total failure the member that re-creates the group
    /// replays the messages its log still holds as pending. Only before joining.
    ///
    /// ```no_run
    /// use vsync::durability::DiskLogger;
    /// use vsync::{Group, System};
    /// let sys = System::start()?;
    /// let g = Group::new(&sys, "accounts")?;
    /// g.on(0, |amount: i64| println!("debit {amount}"))?;
    /// // This member's log is /var/lib/app/accounts-log1.dat.
    /// let log = DiskLogger::open("/var/lib/app/accounts-log", 1).expect("log opens");
    /// g.set_durability_method(log)?;
    /// g.join()?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn set_durability_method(
        &self,
        method: impl Durability + Send + 'static,
    ) -> Result<&Self, VsyncError> {
        self.before_join_safe()?;
        self.inner.safe.set_durability(Box::new(method));
        Ok(self)
    }

    /// Isis² `SafeSend`: a totally ordered multicast (one order with OrderedSend) that no
    /// member delivers before the view's acceptors logged it, so if any member delivers it,
    /// every surviving member does. Returns the message's completion tag once queued.
    ///
    /// ```no_run
    /// use vsync::{Group, System};
    /// let sys = System::start()?;
    /// let g = Group::new(&sys, "accounts")?;
    /// let h = g.clone();
    /// g.on(0, move |amount: i64| {
    ///     let tag = h.completion_tag().expect("inside a SafeSend handler");
    ///     println!("debit {amount}, tag {tag}");
    /// })?;
    /// g.join()?;
    /// let tag = g.safe_send(0, (25i64,))?;
    /// # let _ = tag;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn safe_send(
        &self,
        code: RequestCode,
        args: impl IntoArgs,
    ) -> Result<CompletionTag, VsyncError> {
        let args = self.prepare(code, args)?;
        let tag = self.next_safe_tag();
        let mut body = Vec::with_capacity(args.as_bytes().len() + 4);
        body.extend_from_slice(&code.to_le_bytes());
        body.extend_from_slice(args.as_bytes());
        self.inner.system.submit(Cmd::Multicast {
            gid: self.inner.gid,
            ordered: true,
            payload: crate::safe::encode_safe(&tag, 0, &body),
        })?;
        Ok(tag)
    }

    fn next_safe_tag(&self) -> CompletionTag {
        let view = self.view().map_or(0, |v| u64::from(v.id));
        self.inner
            .safe
            .next_tag(self.inner.system.my_address(), view)
    }

    /// Isis² `SafeQuery`: like [`Group::query`], with the request delivered by SafeSend.
    ///
    /// ```no_run
    /// use vsync::{Group, NReplies, System, Timeout};
    /// let sys = System::start()?;
    /// let g = Group::new(&sys, "accounts")?;
    /// g.on(1, |account: i32| account * 10)?;
    /// g.join()?;
    /// let balances: Vec<i32> = g.safe_query(NReplies::All, Timeout::default(), 1, (7i32,))?.decode()?;
    /// # let _ = balances;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn safe_query(
        &self,
        want: NReplies,
        timeout: Timeout,
        code: RequestCode,
        args: impl IntoArgs,
    ) -> Result<Replies, VsyncError> {
        let body = self.query_body(code, args)?;
        let tag = self.next_safe_tag();
        let gid = self.inner.gid;
        self.await_replies(timeout, "safe query replies", |done| Cmd::SafeQuery {
            gid,
            tag,
            want,
            timeout,
            body,
            done,
        })
    }

    /// Inside a SafeSend (or SafeQuery) handler: the message's completion tag (Isis²
    /// `GetCompletionTag`). The same tag comes back when the message is replayed after a
    /// total failure, so handlers can recognise duplicates. `None` elsewhere.
    ///
    /// ```no_run
    /// use std::collections::HashSet;
    /// use std::sync::{Arc, Mutex};
    /// use vsync::{Group, System};
    /// let sys = System::start()?;
    /// let g = Group::new(&sys, "accounts")?;
    /// let seen = Arc::new(Mutex::new(HashSet::new())); // persisted by a real application
    /// let h = g.clone();
    /// g.on(0, move |amount: i64| {
    ///     if seen.lock().unwrap().insert(h.completion_tag().unwrap()) {
    ///         println!("apply {amount}");
    ///     }
    /// })?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn completion_tag(&self) -> Option<CompletionTag> {
        self.inner.safe.current()
    }

    /// Isis² `BeginAsyncUpdate(ct)`: called inside a SafeSend handler whose update continues
    /// after the handler returns (on another thread). The message then stays pending in the
    /// durability log until [`Group::done`] is called with the returned tag (otherwise it is
    /// done when the handler returns). Outside a SafeSend handler it is
    /// [`SafeError::NotInSafeHandler`](crate::safe::SafeError::NotInSafeHandler).
    ///
    /// ```no_run
    /// use vsync::{Group, System};
    /// let sys = System::start()?;
    /// let g = Group::new(&sys, "accounts")?;
    /// let h = g.clone();
    /// g.on(0, move |amount: i64| {
    ///     let tag = h.begin_async_update().expect("in a SafeSend handler");
    ///     let h = h.clone();
    ///     std::thread::spawn(move || {
    ///         println!("slow update of {amount}");
    ///         h.done(tag).expect("pending update");
    ///     });
    /// })?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn begin_async_update(&self) -> Result<CompletionTag, VsyncError> {
        Ok(self.inner.safe.begin_async()?)
    }

    /// Isis² `Done(ct)`: the asynchronous update begun for `tag` is complete. The acceptors
    /// garbage-collect the message's log entry (in delivery order) once every member that
    /// delivered it is done. A tag with no pending asynchronous update
    /// is [`SafeError::UnknownTag`](crate::safe::SafeError::UnknownTag).
    ///
    /// ```no_run
    /// # use vsync::{Group, System};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "foo")?;
    /// let h = g.clone();
    /// g.on(0, move |_n: i64| {
    ///     let tag = h.begin_async_update().unwrap();
    ///     h.done(tag).unwrap(); // the update finished
    /// })?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn done(&self, tag: CompletionTag) -> Result<(), VsyncError> {
        self.inner.safe.done(tag)?;
        self.inner.system.submit_internal(Cmd::SafeDone {
            gid: self.inner.gid,
            tag,
        })
    }

    /// SafeSends this member, as an acceptor, failed to log (its durability method returned
    /// an error, for example a full disk). It did not accept them: they wait for the next
    /// view's acceptors.
    ///
    /// ```no_run
    /// use vsync::{Group, System};
    /// let sys = System::start()?;
    /// let g = Group::new(&sys, "accounts")?;
    /// assert_eq!(g.safe_log_failures(), 0);
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn safe_log_failures(&self) -> u64 {
        self.inner
            .safe
            .log_failures()
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The group signature the oracle compares: the [`SignatureSet`] digest, with a readable
/// rendering of the handler signatures for its error messages.
fn oracle_signature(set: &SignatureSet) -> OracleSignature {
    let mut text = String::new();
    for code in set.codes() {
        if !text.is_empty() {
            text.push_str("; ");
        }
        let sigs: Vec<String> = set.signatures(code).iter().map(|s| s.to_string()).collect();
        text.push_str(&format!("{code}: {}", sigs.join(" | ")));
    }
    if text.len() > MAX_SIG_TEXT {
        let mut cut = MAX_SIG_TEXT - 3;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    OracleSignature {
        hash: set.digest(),
        text,
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "handler panicked".into()
    }
}

/// Where a query's reply goes: the caller, reliably or (for a query that came raw) raw.
#[derive(Clone, Copy, Debug)]
struct ReplyRoute {
    gid: GroupId,
    to: MemberId,
    qid: u64,
    raw: bool,
}

impl ReplyRoute {
    fn send(self, sys: &System, reply: ReplyKind) {
        let ReplyRoute { gid, to, qid, raw } = self;
        let cmd = if raw {
            Cmd::Flav(crate::system::flavours::FlavCmd::RawReply {
                gid,
                to,
                qid,
                reply,
            })
        } else {
            Cmd::Reply {
                gid,
                to,
                qid,
                reply,
            }
        };
        let _ = sys.submit_internal(cmd);
    }
}

/// Runs the handlers of a message or query; a query is answered with the handlers' outcome
/// unless a handler took the reply with [`Group::defer_reply`].
#[allow(clippy::too_many_arguments)]
fn serve(
    inner: &GroupInner,
    sys: &System,
    handlers: &mut Handlers,
    sender: Address,
    kind: MsgKind,
    code: RequestCode,
    args: &[u8],
    route: Option<ReplyRoute>,
) {
    *lock(&inner.current) = Some((sender, kind));
    *lock(&inner.reply_slot) = route;
    let reply = run_handlers(handlers, code, args);
    *lock(&inner.current) = None;
    if let Some(route) = lock(&inner.reply_slot).take() {
        route.send(sys, reply);
    }
}

/// A query's reply handed to another thread (Isis² `SetReplyThread`): see
/// [`Group::defer_reply`]. Dropping it without replying sends a `NullReply`.
///
/// ```no_run
/// # use vsync::{Group, System};
/// # let sys = System::start()?;
/// # let g = Group::new(&sys, "foo")?;
/// let h = g.clone();
/// g.on(0, move |n: i32| {
///     let r = h.defer_reply().unwrap();
///     std::thread::spawn(move || r.send(n * 2));
/// })?;
/// # Ok::<(), vsync::VsyncError>(())
/// ```
#[derive(Debug)]
pub struct DeferredReply {
    sys: System,
    route: Option<ReplyRoute>,
}

impl DeferredReply {
    /// Sends the reply: a value (`Reply::value(&v)` or any `Encode` value), `()` / `Reply::None`
    /// for a `NullReply`, or `Reply::abort(reason)` for an `AbortReply`.
    ///
    /// ```no_run
    /// # use vsync::{Group, Reply, System};
    /// # let sys = System::start()?;
    /// # let g = Group::new(&sys, "foo")?;
    /// let h = g.clone();
    /// g.on(0, move |n: i32| {
    ///     let r = h.defer_reply().unwrap();
    ///     if n < 0 {
    ///         r.send(Reply::abort("negative"));
    ///     } else {
    ///         r.send(n.to_string());
    ///     }
    /// })?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn send(mut self, reply: impl IntoReply) {
        if let Some(route) = self.route.take() {
            route.send(&self.sys, reply_kind(Ok(reply.into_reply())));
        }
    }
}

impl Drop for DeferredReply {
    fn drop(&mut self) {
        if let Some(route) = self.route.take() {
            route.send(&self.sys, ReplyKind::Null);
        }
    }
}

fn reply_kind(result: Result<Reply, DispatchError>) -> ReplyKind {
    match result {
        Ok(Reply::Value(v)) => ReplyKind::Value(v.into_bytes()),
        Ok(Reply::None) => ReplyKind::Null,
        Ok(Reply::Abort(s)) => ReplyKind::Abort(s),
        Err(e) => ReplyKind::Abort(e.to_string()),
    }
}

/// Runs the handlers of `code` on `args` and turns the outcome into a reply.
fn run_handlers(handlers: &mut Handlers, code: RequestCode, args: &[u8]) -> ReplyKind {
    let result = match ArgsRef::parse(args) {
        Ok(a) => catch_unwind(AssertUnwindSafe(|| handlers.dispatch(code, a)))
            .unwrap_or_else(|p| Ok(Reply::Abort(panic_text(p)))),
        Err(e) => Ok(Reply::Abort(format!("malformed arguments: {e}"))),
    };
    reply_kind(result)
}

/// One upcall in progress: holds the group lock (the handlers; Isis² takes the group's lock
/// for every upcall, so handlers of a group never run concurrently) and stamps the
/// watchdog's clock while held.
struct Running<'a> {
    clock: &'a crate::watchdog::DeliveryClock,
    handlers: MutexGuard<'a, Handlers>,
}

impl<'a> Running<'a> {
    fn enter(inner: &'a GroupInner, handlers: &'a Mutex<Handlers>, up: Option<&Upcall>) -> Self {
        let handlers = lock(handlers);
        inner.clock.begin(match up {
            Some(
                Upcall::Message { code, .. }
                | Upcall::ClientRequest { code, .. }
                | Upcall::Safe { code, .. },
            ) => *code,
            _ => crate::watchdog::NOT_A_MESSAGE,
        });
        Running {
            clock: &inner.clock,
            handlers,
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        // Before the lock is released (fields drop after this): the other thread's stamp is
        // never cleared by this one.
        self.clock.end();
    }
}

/// A message, query or client request: runs its handlers and answers a query.
fn serve_upcall(inner: &GroupInner, sys: &System, handlers: &mut Handlers, up: Upcall) {
    match up {
        Upcall::Message {
            sender,
            kind,
            code,
            args,
            query,
        } => {
            let route = query.map(|qid| ReplyRoute {
                gid: inner.gid,
                to: sender.member_id(),
                qid,
                // A query that came raw is answered raw (Isis² RawReply).
                raw: matches!(kind, MsgKind::Raw | MsgKind::RawP2p),
            });
            serve(inner, sys, handlers, sender, kind, code, &args, route);
        }
        Upcall::ClientRequest {
            sender,
            code,
            args,
            qid,
        } => {
            let route = ReplyRoute {
                gid: inner.gid,
                to: sender.member_id(),
                qid,
                raw: false,
            };
            if lock(&inner.client_codes).contains(&code) {
                let kind = MsgKind::P2p;
                serve(inner, sys, handlers, sender, kind, code, &args, Some(route));
            } else {
                route.send(
                    sys,
                    ReplyKind::Abort(format!(
                        "The group has not enabled client requests to request-code {code}"
                    )),
                );
            }
        }
        _ => {}
    }
}

/// The two delivery queues of a group (the manual's "Threads"): multicasts, views and
/// checkpoints in delivery order on one thread; point-to-point messages and client requests,
/// in their senders' order, on the other.
#[derive(Clone, Debug)]
pub(crate) struct UpcallTx {
    main: Sender<Upcall>,
    p2p: Sender<Upcall>,
}

/// The delivery threads are gone (the group was left).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DeliveryClosed;

impl UpcallTx {
    /// Queues an upcall on the thread that runs its kind.
    pub(crate) fn send(&self, up: Upcall) -> Result<(), DeliveryClosed> {
        let sent = match &up {
            Upcall::Message {
                kind: MsgKind::P2p | MsgKind::RawP2p,
                ..
            }
            | Upcall::ClientRequest { .. } => self.p2p.send(up),
            Upcall::Gone => {
                let _ = self.p2p.send(Upcall::Gone);
                self.main.send(up)
            }
            _ => self.main.send(up),
        };
        sent.map_err(|_| DeliveryClosed)
    }
}

/// The P2P delivery thread: point-to-point messages, queries and client requests, under the
/// same group lock as the main delivery thread.
fn p2p_loop(inner: Arc<GroupInner>, rx: mpsc::Receiver<Upcall>, handlers: Arc<Mutex<Handlers>>) {
    let sys = inner.system.clone();
    for up in rx {
        if matches!(up, Upcall::Gone) {
            break;
        }
        let mut running = Running::enter(&inner, &handlers, Some(&up));
        serve_upcall(&inner, &sys, &mut running.handlers, up);
    }
}

/// The delivery thread: runs upcalls in order until the group is gone.
fn delivery_loop(
    inner: Arc<GroupInner>,
    rx: mpsc::Receiver<Upcall>,
    mut cb: Callbacks,
    handlers: Arc<Mutex<Handlers>>,
    mut persistence: Persistence,
) {
    let sys = inner.system.clone();
    loop {
        let interval = match inner.checkpoint_interval_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        };
        // A periodic checkpoint that fell due while upcalls kept coming: write it now (the
        // timeout below never fires while the queue is never empty).
        if persistence.wait_budget(interval, Instant::now()) == Some(Duration::ZERO)
            && persistence.take_due(interval, Instant::now())
        {
            let _running = Running::enter(&inner, &handlers, None);
            if lock(&inner.view).as_ref().and_then(|v| v.my_rank()) == Some(0) {
                let _ = persistence.write(cb.make.as_mut());
            }
            continue;
        }
        let up = match persistence.wait_budget(interval, Instant::now()) {
            None => match rx.recv() {
                Ok(up) => up,
                Err(_) => break,
            },
            Some(budget) => match rx.recv_timeout(budget) {
                Ok(up) => up,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _running = Running::enter(&inner, &handlers, None);
                    if persistence.take_due(interval, Instant::now())
                        && lock(&inner.view).as_ref().and_then(|v| v.my_rank()) == Some(0)
                    {
                        let _ = persistence.write(cb.make.as_mut());
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
        };
        // The group lock for the whole upcall (shared with the P2P delivery thread).
        let mut running = Running::enter(&inner, &handlers, Some(&up));
        match up {
            Upcall::View { view, join_done } => {
                if let Some(d) = join_done.as_ref() {
                    // This member's first view: with no other member there is no state
                    // transfer, so load the persistent checkpoint or run the initializers.
                    if view.members == [view.me] {
                        let started = persistence.on_create(
                            cb.load.as_mut(),
                            cb.make.as_mut(),
                            &mut cb.initializers,
                        );
                        if let Err(e) = started {
                            let _ = d.send(Err(e));
                            continue;
                        }
                    }
                }
                *lock(&inner.view) = Some(view.clone());
                for f in cb.views.iter_mut() {
                    let _ = catch_unwind(AssertUnwindSafe(|| f(&view)));
                }
                let triggered = lock(&inner.watches).triggered(&view);
                crate::watch::run(triggered);
                if let Some(d) = join_done {
                    // Mark joined before answering so `join()` returning implies is_joined.
                    lock(&inner.local).phase = Phase::Joined;
                    let _ = d.send(Ok(()));
                }
            }
            up @ (Upcall::Message { .. } | Upcall::ClientRequest { .. }) => {
                serve_upcall(&inner, &sys, &mut running.handlers, up);
            }
            Upcall::MakeCheckpoint { view } => {
                let chunks = match cb.make.as_mut() {
                    Some(f) => catch_unwind(AssertUnwindSafe(f)).unwrap_or_default(),
                    None => Vec::new(),
                };
                let _ = sys.submit_internal(Cmd::Checkpoint {
                    gid: inner.gid,
                    view,
                    state: encode_checkpoint(&chunks),
                });
            }
            Upcall::LoadCheckpoint { state } => {
                if let (Some(f), Some(chunks)) = (cb.load.as_mut(), decode_checkpoint(&state)) {
                    let _ = catch_unwind(AssertUnwindSafe(|| f(chunks)));
                }
            }
            Upcall::Persist { done } => {
                let rank0 = lock(&inner.view).as_ref().and_then(|v| v.my_rank()) == Some(0);
                let r = if rank0 && persistence.is_persistent() {
                    persistence.write(cb.make.as_mut())
                } else {
                    Ok(false)
                };
                if let Some(d) = done {
                    let _ = d.send(r);
                }
            }
            Upcall::Wake => {}
            Upcall::Safe {
                sender,
                tag,
                code,
                args,
                query,
            } => {
                inner.safe.enter(tag);
                let route = query.map(|qid| ReplyRoute {
                    gid: inner.gid,
                    to: sender.member_id(),
                    qid,
                    raw: false,
                });
                let kind = MsgKind::Ordered;
                serve(
                    &inner,
                    &sys,
                    &mut running.handlers,
                    sender,
                    kind,
                    code,
                    &args,
                    route,
                );
                if let Some(tag) = inner.safe.leave() {
                    let _ = sys.submit_internal(Cmd::SafeDone {
                        gid: inner.gid,
                        tag,
                    });
                }
            }
            Upcall::Gone => break,
        }
    }
    *lock(&inner.view) = None;
    *lock(&inner.upcalls) = None;
    lock(&inner.delivery_thread).clear();
    let mut l = lock(&inner.local);
    if l.phase == Phase::Joined {
        l.phase = Phase::Left;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trips_and_rejects_garbage() {
        let a = ArgList::new(&(1i32, 2i32));
        let m = encode_msg(7, &a);
        assert_eq!(decode_msg(&m), Some((7, a.as_bytes().to_vec())));
        let mut body = 9u32.to_le_bytes().to_vec();
        body.extend_from_slice(a.as_bytes());
        let q = encode_query(42, &body);
        assert_eq!(decode_query(&q), Some((42, 9, a.as_bytes().to_vec())));
        for r in [
            ReplyKind::Value(vec![1, 2, 3]),
            ReplyKind::Null,
            ReplyKind::Abort("no".into()),
        ] {
            assert_eq!(decode_reply(&encode_reply(5, &r)), Some((5, r)));
        }
        for bad in [
            &b""[..],
            b"\x01",
            b"\x02\x00",
            b"\x03\x01\x02",
            b"\x03\0\0\0\0\0\0\0\0\x09",
        ] {
            assert!(decode_msg(bad).is_none());
            assert!(decode_query(bad).is_none());
            assert!(decode_reply(bad).is_none());
        }
        let c = vec![b"ab".to_vec(), vec![], vec![9; 300]];
        assert_eq!(decode_checkpoint(&encode_checkpoint(&c)), Some(c));
        assert_eq!(decode_checkpoint(&[0xff, 0xff]), None);
    }

    #[test]
    fn signature_text_fits_the_oracle_limit() {
        let mut h = Handlers::new();
        for c in 0..200u32 {
            h.on(c, |_a: i32, _b: String, _c: Vec<u64>| {});
        }
        let set = h.signature_set(&TypeRegistry::new()).unwrap();
        let s = oracle_signature(&set);
        assert!(s.text.len() <= MAX_SIG_TEXT, "{}", s.text.len());
        assert_eq!(s.hash, set.digest());
    }
}
