//! SafeSend and SafeQuery: Isis²'s Paxos-like durable, totally ordered multicast.
//!
//! # Protocol
//!
//! A SafeSend is an OrderedSend whose payload is tagged `K_SAFE` and carries its
//! [`CompletionTag`] (sender, view it was sent in, sender's message number). Every member puts
//! it in a **holdback queue** at its place in the OrderedSend total order; any later
//! OrderedSend (or SafeSend) waits behind it, so the one total order of OrderedSend and
//! SafeSend is kept.
//!
//! The **acceptors** of a view are its `Φ` lowest-ranked members, `Φ = min(threshold, view
//! size)` (the threshold is [`Group::set_safe_send_threshold`](crate::Group::set_safe_send_threshold),
//! by default every member, as in the manual). An acceptor logs the message with the group's
//! durability method ([`Durability::log`]; the `DiskLogger` forces it to disk), then multicasts
//! `K_SAFE_ACCEPT(view, tags)` with a FIFO Send (many tags per accept when logging falls
//! behind). A member delivers the message at the head of its holdback queue once it holds
//! accepts from all `Φ` acceptors **of the current view** (or the message was so accepted in an
//! earlier view).
//!
//! **View change.** Accepts are counted per view. The view change (flush with the *maximum*
//! cut) gives every survivor the same OrderedSends, in the same order, and the same FIFO
//! Sends — so the same accepts — of the ending view before the new view is installed. So at
//! install every survivor computes the same verdict for every held message: accepted by the
//! old view's acceptors, or not. The ones not accepted are logged again by the new view's
//! acceptors (a no-op for an acceptor that logged it already) and re-accepted; they are then
//! delivered in the new view, in the same order everywhere. A message some member delivered
//! in the old view was accepted by the old view, so every survivor delivers it (at the latest
//! when the view ends). Joiners get the holdback queue with the checkpoint (state transfer),
//! so they deliver the held messages too.
//!
//! **Completion and garbage collection.** Before the handlers run, the member records the
//! delivery ([`Durability::delivered`]); when they return (or, after
//! [`Group::begin_async_update`](crate::Group::begin_async_update), when the application calls
//! [`Group::done`](crate::Group::done)) it multicasts `K_SAFE_DONE(tags)` (FIFO Send, batched).
//! A member calls [`Durability::done`] for a message only once every member of the view it
//! was delivered in reported it (members that leave are no longer waited for): the manual's
//! rule that a logged message is collected only when its update is complete at every member
//! that delivered it, so a total failure replays any update some member had not finished.
//! [`DoneTracker`] is this bookkeeping, sans-IO.
//!
//! **Total failure.** A member whose durability method has [`Durability::pending`] messages
//! and that *creates* the group (its first view has it as the only member) SafeSends them
//! again, with their original tags, before anything else; handlers see the tag through
//! [`Group::completion_tag`](crate::Group::completion_tag) and filter duplicates.
//!
//! # Parts
//!
//! * [`SafeCore`]: the sans-IO holdback / accept-counting state machine (no threads, clocks
//!   or sockets): inputs are ordered deliveries, accepts, view installs and "logged"
//!   notifications; outputs are [`SafeAction`]s.
//! * [`DoneTracker`]: the sans-IO "done at every member" bookkeeping for garbage collection.
//! * The wire format of the two message kinds (below).
//! * Crate-internal glue: the driver side (`SafeGroup`: the core, the done tracker, the logger
//!   thread that runs the durability method off the network thread) and the
//!   delivery side (`SafeLocal`: the durability object, the tag of the running handler,
//!   asynchronous updates).
//!
//! # Wire format (inside the agent's payload)
//!
//! ```text
//! safe:    0x10 sender:u64 view:u64 msg_id:u64 qid:u64 code:u32 arglist   (OrderedSend; qid 0 = no reply)
//! accept:  0x11 view:u64 count:u32 (sender:u64 view:u64 msg_id:u64)*       (Send)
//! done:    0x12 0:u64    count:u32 (sender:u64 view:u64 msg_id:u64)*       (Send)
//! ```
//!
//! What is logged ([`LoggedMsg::payload`]) is `code:u32 arglist`: a replay after a total
//! failure carries `qid = 0` (the querier is gone) and logs the same bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use vsync_dataplane::GroupId;

use crate::durability::{CompletionTag, Durability, DurabilityError, LoggedMsg, MemoryLogger};
use crate::marshal::{Address, RequestCode};
use crate::system::{Cmd, SysInner, System};

/// Payload kind of a SafeSend / SafeQuery (an OrderedSend).
pub(crate) const K_SAFE: u8 = 0x10;
/// Payload kind of an acceptor's accept (a FIFO Send).
pub(crate) const K_SAFE_ACCEPT: u8 = 0x11;
/// Payload kind of a member's "done" report (a FIFO Send).
pub(crate) const K_SAFE_DONE: u8 = 0x12;

const TAG_LEN: usize = 24;
const SAFE_HDR: usize = 1 + TAG_LEN + 8 + 4;
/// Most tags in one accept message.
///
/// ```
/// assert!(vsync::safe::MAX_ACCEPT_TAGS >= 1);
/// ```
pub const MAX_ACCEPT_TAGS: usize = 1024;
/// Most accepts for messages not (yet) held that one view may buffer; more are dropped and
/// counted ([`SafeStats::early_accepts_dropped`]).
///
/// ```
/// assert!(vsync::safe::MAX_EARLY_ACCEPTS > vsync::safe::MAX_ACCEPT_TAGS);
/// ```
pub const MAX_EARLY_ACCEPTS: usize = 1 << 16;

/// The default SafeSend threshold: every member of the view is an acceptor (the manual's
/// default: "we wait until *every* member of the group has a copy").
///
/// ```
/// use vsync::{marshal::Address, safe::{SafeCore, DEFAULT_THRESHOLD}};
/// let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 1)).collect();
/// let mut core = SafeCore::new(m[0], DEFAULT_THRESHOLD);
/// core.install(1, &m);
/// assert_eq!(core.phi(), 3); // every member is an acceptor
/// ```
pub const DEFAULT_THRESHOLD: usize = usize::MAX;

/// Why a SafeSend call or a durability step failed.
///
/// ```
/// use vsync::safe::SafeError;
/// assert_eq!(SafeError::ZeroThreshold.to_string(), "the SafeSend threshold must be at least 1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SafeError {
    /// `set_safe_send_threshold(0)`: at least one acceptor is needed.
    ZeroThreshold,
    /// `begin_async_update` outside a SafeSend handler.
    NotInSafeHandler,
    /// `done(tag)` for a tag with no asynchronous update pending at this member.
    UnknownTag(CompletionTag),
    /// The durability method failed; the text is its error.
    Durability(String),
    /// A holdback snapshot (state transfer) does not decode.
    BadSnapshot(&'static str),
}

impl fmt::Display for SafeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SafeError::ZeroThreshold => f.write_str("the SafeSend threshold must be at least 1"),
            SafeError::NotInSafeHandler => {
                f.write_str("begin_async_update called outside a SafeSend handler")
            }
            SafeError::UnknownTag(t) => {
                write!(
                    f,
                    "no asynchronous SafeSend update with completion tag {t} is pending"
                )
            }
            SafeError::Durability(e) => write!(f, "durability method: {e}"),
            SafeError::BadSnapshot(why) => write!(f, "SafeSend holdback snapshot: {why}"),
        }
    }
}

impl std::error::Error for SafeError {}

// ------------------------------------------------------------------------------------------
// Wire format.

fn put_tag(v: &mut Vec<u8>, t: &CompletionTag) {
    v.extend_from_slice(&t.sender.0.to_le_bytes());
    v.extend_from_slice(&t.view.to_le_bytes());
    v.extend_from_slice(&t.msg_id.to_le_bytes());
}

fn u64_at(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?))
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

fn tag_at(b: &[u8], i: usize) -> Option<CompletionTag> {
    Some(CompletionTag {
        sender: Address(u64_at(b, i)?),
        view: u64_at(b, i + 8)?,
        msg_id: u64_at(b, i + 16)?,
    })
}

/// A SafeSend payload: `tag`, query id (`0` for SafeSend) and `body` = `code:u32 arglist`.
pub(crate) fn encode_safe(tag: &CompletionTag, qid: u64, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + TAG_LEN + 8 + body.len());
    v.push(K_SAFE);
    put_tag(&mut v, tag);
    v.extend_from_slice(&qid.to_le_bytes());
    v.extend_from_slice(body);
    v
}

/// A decoded SafeSend payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SafeMsg<'a> {
    /// The message's completion tag.
    pub tag: CompletionTag,
    /// The SafeQuery id (0: a SafeSend, no reply).
    pub qid: u64,
    /// The request code.
    pub code: RequestCode,
    /// `code:u32 arglist`: what is logged.
    pub body: &'a [u8],
}

impl SafeMsg<'_> {
    /// The marshalled arguments (the body after the code).
    pub(crate) fn args(&self) -> &[u8] {
        &self.body[4..]
    }
}

/// Decodes a SafeSend payload; `None` if it is not one or is too short.
pub(crate) fn decode_safe(p: &[u8]) -> Option<SafeMsg<'_>> {
    if p.len() < SAFE_HDR || p[0] != K_SAFE {
        return None;
    }
    Some(SafeMsg {
        tag: tag_at(p, 1)?,
        qid: u64_at(p, 1 + TAG_LEN)?,
        code: u32_at(p, 1 + TAG_LEN + 8)?,
        body: &p[1 + TAG_LEN + 8..],
    })
}

/// An accept for `tags` (at most [`MAX_ACCEPT_TAGS`] are encoded) in view `view`.
pub(crate) fn encode_accept(view: u64, tags: &[CompletionTag]) -> Vec<u8> {
    encode_tags(K_SAFE_ACCEPT, view, tags)
}

/// A done report for `tags` (at most [`MAX_ACCEPT_TAGS`]).
pub(crate) fn encode_done(tags: &[CompletionTag]) -> Vec<u8> {
    encode_tags(K_SAFE_DONE, 0, tags)
}

/// Decodes a done report; `None` if malformed.
pub(crate) fn decode_done(p: &[u8]) -> Option<Vec<CompletionTag>> {
    decode_tags(K_SAFE_DONE, p).map(|(_, t)| t)
}

fn encode_tags(kind: u8, view: u64, tags: &[CompletionTag]) -> Vec<u8> {
    let tags = &tags[..tags.len().min(MAX_ACCEPT_TAGS)];
    let mut v = Vec::with_capacity(13 + TAG_LEN * tags.len());
    v.push(kind);
    v.extend_from_slice(&view.to_le_bytes());
    v.extend_from_slice(&(tags.len() as u32).to_le_bytes());
    for t in tags {
        put_tag(&mut v, t);
    }
    v
}

/// Decodes an accept: its view and tags; `None` if malformed.
pub(crate) fn decode_accept(p: &[u8]) -> Option<(u64, Vec<CompletionTag>)> {
    decode_tags(K_SAFE_ACCEPT, p)
}

fn decode_tags(kind: u8, p: &[u8]) -> Option<(u64, Vec<CompletionTag>)> {
    if p.len() < 13 || p[0] != kind {
        return None;
    }
    let view = u64_at(p, 1)?;
    let n = u32_at(p, 9)? as usize;
    if n > MAX_ACCEPT_TAGS || p.len() != 13 + n * TAG_LEN {
        return None;
    }
    let tags = (0..n)
        .map(|i| tag_at(p, 13 + i * TAG_LEN))
        .collect::<Option<Vec<_>>>()?;
    Some((view, tags))
}

// ------------------------------------------------------------------------------------------
// The sans-IO core.

/// What [`SafeCore`] asks its driver to do, in order.
///
/// ```
/// use vsync::{durability::CompletionTag, marshal::Address, safe::{SafeAction, SafeCore}};
/// let a = Address::new(1, 1);
/// let mut core = SafeCore::new(a, 1);
/// core.install(1, &[a]);
/// let tag = CompletionTag { sender: a, view: 1, msg_id: 1 };
/// core.on_safe(a, tag, b"x".to_vec());
/// assert_eq!(
///     core.poll_action(),
///     Some(SafeAction::Log { view: 1, tag, payload: b"x".to_vec() })
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SafeAction {
    /// Deliver this plain OrderedSend (it waited behind a SafeSend, or nothing was held).
    Deliver {
        /// Its sender.
        sender: Address,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// Deliver this SafeSend: enough acceptors logged it.
    DeliverSafe {
        /// The member that multicast it.
        sender: Address,
        /// Its completion tag.
        tag: CompletionTag,
        /// Its payload (as given to [`SafeCore::on_safe`]).
        payload: Vec<u8>,
    },
    /// This member is an acceptor of `view`: log the message durably, then report it with
    /// [`SafeCore::on_logged`].
    Log {
        /// The view the accept is for.
        view: u64,
        /// The message's tag.
        tag: CompletionTag,
        /// Its payload (as given to [`SafeCore::on_safe`]).
        payload: Vec<u8>,
    },
    /// Multicast an accept (FIFO Send) for these tags in `view`.
    Accept {
        /// The view.
        view: u64,
        /// The tags logged.
        tags: Vec<CompletionTag>,
    },
}

/// Counters of inputs [`SafeCore`] ignored.
///
/// ```
/// use vsync::{marshal::Address, safe::SafeCore};
/// let (a, b) = (Address::new(1, 1), Address::new(2, 1));
/// let mut core = SafeCore::new(a, 1);
/// core.install(2, &[a, b]);
/// core.on_accept(a, 1, &[]); // stamped with an old view
/// core.on_accept(b, 2, &[]); // b is not an acceptor (Φ = 1)
/// let s = core.stats();
/// assert_eq!((s.stale_accepts, s.foreign_accepts), (1, 1));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SafeStats {
    /// Accepts stamped with another view than the current one.
    pub stale_accepts: u64,
    /// Accepts from members that are not acceptors of the current view.
    pub foreign_accepts: u64,
    /// Accepts for unknown messages dropped past [`MAX_EARLY_ACCEPTS`].
    pub early_accepts_dropped: u64,
    /// "Logged" reports for another view than the current one.
    pub stale_logged: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    sender: Address,
    payload: Vec<u8>,
    /// `Some` for a SafeSend: its tag and whether some view's acceptors all accepted it.
    safe: Option<(CompletionTag, bool)>,
}

/// The holdback queue and accept counting of one member in one group (sans-IO). See the
/// [module docs](self).
///
/// ```
/// use vsync::durability::CompletionTag;
/// use vsync::marshal::Address;
/// use vsync::safe::{SafeAction, SafeCore};
///
/// let (a, b, c) = (Address::new(1, 1), Address::new(2, 1), Address::new(3, 1));
/// let mut core = SafeCore::new(b, 2); // Φ = 2: acceptors a and b
/// core.install(1, &[a, b, c]);
/// let tag = CompletionTag { sender: c, view: 1, msg_id: 1 };
/// core.on_safe(c, tag, b"update".to_vec());
/// core.on_ordered(a, b"behind".to_vec());
/// assert!(matches!(core.poll_action(), Some(SafeAction::Log { .. })));
/// assert_eq!(core.poll_action(), None); // held: nothing delivered yet
/// core.on_accept(a, 1, &[tag]);
/// assert_eq!(core.poll_action(), None); // 1 of Φ = 2 accepts
/// core.on_logged(1, &[tag]);
/// assert_eq!(core.poll_action(), Some(SafeAction::Accept { view: 1, tags: vec![tag] }));
/// core.on_accept(b, 1, &[tag]); // our own accept, looped back
/// assert!(matches!(core.poll_action(), Some(SafeAction::DeliverSafe { .. })));
/// assert!(matches!(core.poll_action(), Some(SafeAction::Deliver { .. })));
/// ```
#[derive(Clone, Debug)]
pub struct SafeCore {
    me: Address,
    threshold: usize,
    view: u64,
    acceptors: Vec<Address>,
    queue: VecDeque<Held>,
    /// Held SafeSends per tag (normally 1).
    queued: HashMap<CompletionTag, u32>,
    /// Accepts of the current view, per tag.
    votes: HashMap<CompletionTag, BTreeSet<Address>>,
    /// Tags in `votes` not (yet) held.
    early: usize,
    actions: VecDeque<SafeAction>,
    stats: SafeStats,
}

impl SafeCore {
    /// The core of member `me` with SafeSend threshold `threshold` (≥ 1; [`DEFAULT_THRESHOLD`]
    /// for "every member"). No view yet: call [`install`](Self::install).
    ///
    /// ```
    /// use vsync::{marshal::Address, safe::SafeCore};
    /// let a = Address::new(1, 1);
    /// let core = SafeCore::new(a, 2);
    /// assert_eq!((core.view(), core.phi()), (0, 0)); // no view installed yet
    /// ```
    pub fn new(me: Address, threshold: usize) -> Self {
        SafeCore {
            me,
            threshold: threshold.max(1),
            view: 0,
            acceptors: Vec::new(),
            queue: VecDeque::new(),
            queued: HashMap::new(),
            votes: HashMap::new(),
            early: 0,
            actions: VecDeque::new(),
            stats: SafeStats::default(),
        }
    }

    /// The current view's `Φ`.
    ///
    /// ```
    /// # use vsync::{marshal::Address, safe::SafeCore};
    /// let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 1)).collect();
    /// let mut core = SafeCore::new(m[0], 5);
    /// core.install(1, &m);
    /// assert_eq!(core.phi(), 3); // min(threshold, view size)
    /// ```
    pub fn phi(&self) -> usize {
        self.acceptors.len()
    }

    /// The current view's acceptors (its `Φ` lowest-ranked members).
    ///
    /// ```
    /// # use vsync::{marshal::Address, safe::SafeCore};
    /// let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 1)).collect();
    /// let mut core = SafeCore::new(m[2], 2);
    /// core.install(1, &m);
    /// assert_eq!(core.acceptors(), &m[..2]);
    /// ```
    pub fn acceptors(&self) -> &[Address] {
        &self.acceptors
    }

    /// True if this member is an acceptor of the current view.
    ///
    /// ```
    /// # use vsync::{marshal::Address, safe::SafeCore};
    /// let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 1)).collect();
    /// let mut core = SafeCore::new(m[2], 2);
    /// core.install(1, &m);
    /// assert!(!core.is_acceptor()); // rank 2 with Φ = 2
    /// ```
    pub fn is_acceptor(&self) -> bool {
        self.acceptors.contains(&self.me)
    }

    /// The current view.
    ///
    /// ```
    /// # use vsync::{marshal::Address, safe::SafeCore};
    /// let a = Address::new(1, 1);
    /// let mut core = SafeCore::new(a, 1);
    /// core.install(7, &[a]);
    /// assert_eq!(core.view(), 7);
    /// ```
    pub fn view(&self) -> u64 {
        self.view
    }

    /// Messages held (SafeSends not yet deliverable and everything ordered behind them).
    ///
    /// ```
    /// # use vsync::{durability::CompletionTag, marshal::Address, safe::SafeCore};
    /// let (a, b) = (Address::new(1, 1), Address::new(2, 1));
    /// let mut core = SafeCore::new(b, 1);
    /// core.install(1, &[a, b]);
    /// core.on_safe(a, CompletionTag { sender: a, view: 1, msg_id: 1 }, vec![]);
    /// core.on_ordered(a, vec![]);
    /// assert_eq!(core.held(), 2); // the SafeSend waits for a's accept; the OrderedSend behind it
    /// ```
    pub fn held(&self) -> usize {
        self.queue.len()
    }

    /// True if an OrderedSend delivered now would have to wait.
    ///
    /// ```
    /// # use vsync::{marshal::Address, safe::SafeCore};
    /// let a = Address::new(1, 1);
    /// let mut core = SafeCore::new(a, 1);
    /// core.install(1, &[a]);
    /// core.on_ordered(a, b"m".to_vec());
    /// assert!(!core.is_holding()); // delivered at once
    /// ```
    pub fn is_holding(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Counters of ignored inputs.
    ///
    /// ```
    /// # use vsync::{marshal::Address, safe::SafeCore};
    /// let a = Address::new(1, 1);
    /// let mut core = SafeCore::new(a, 1);
    /// core.install(1, &[a]);
    /// core.on_logged(0, &[]); // a stale "logged" report
    /// assert_eq!(core.stats().stale_logged, 1);
    /// ```
    pub fn stats(&self) -> SafeStats {
        self.stats
    }

    /// The next action, in order.
    ///
    /// ```
    /// # use vsync::{marshal::Address, safe::{SafeAction, SafeCore}};
    /// let a = Address::new(1, 1);
    /// let mut core = SafeCore::new(a, 1);
    /// core.install(1, &[a]);
    /// core.on_ordered(a, b"m".to_vec());
    /// let m = b"m".to_vec();
    /// assert_eq!(core.poll_action(), Some(SafeAction::Deliver { sender: a, payload: m }));
    /// assert_eq!(core.poll_action(), None);
    /// ```
    pub fn poll_action(&mut self) -> Option<SafeAction> {
        self.actions.pop_front()
    }

    /// Installs a view (members in rank order). Every survivor calls this after the same
    /// deliveries of the ending view, so all reach the same verdict: held SafeSends accepted
    /// by every acceptor of the ending view stay accepted; the others are logged (if this
    /// member is a new acceptor) and accepted again in the new view.
    ///
    /// ```
    /// # use vsync::{durability::CompletionTag, marshal::Address, safe::{SafeAction, SafeCore}};
    /// let (a, b) = (Address::new(1, 1), Address::new(2, 1));
    /// let mut core = SafeCore::new(b, 1);
    /// core.install(1, &[a, b]);
    /// core.on_safe(a, CompletionTag { sender: a, view: 1, msg_id: 1 }, vec![]);
    /// core.install(2, &[b]); // a failed before accepting: b, the new acceptor, logs it
    /// assert!(matches!(core.poll_action(), Some(SafeAction::Log { view: 2, .. })));
    /// ```
    pub fn install(&mut self, view: u64, members: &[Address]) {
        let phi = self.acceptors.len();
        for h in self.queue.iter_mut() {
            if let Some((tag, accepted)) = &mut h.safe {
                if !*accepted && phi > 0 && self.votes.get(tag).is_some_and(|v| v.len() >= phi) {
                    *accepted = true;
                }
            }
        }
        self.votes.clear();
        self.early = 0;
        self.view = view;
        let phi = self.threshold.min(members.len());
        self.acceptors = members[..phi].to_vec();
        if self.is_acceptor() {
            for h in &self.queue {
                if let Some((tag, false)) = h.safe {
                    self.actions.push_back(SafeAction::Log {
                        view,
                        tag,
                        payload: h.payload.clone(),
                    });
                }
            }
        }
        self.drain();
    }

    /// A plain OrderedSend, in the total order: delivered at once if nothing is held, else
    /// queued behind the held SafeSends.
    ///
    /// ```
    /// # use vsync::{durability::CompletionTag, marshal::Address, safe::SafeCore};
    /// let (a, b) = (Address::new(1, 1), Address::new(2, 1));
    /// let mut core = SafeCore::new(b, 1);
    /// core.install(1, &[a, b]);
    /// core.on_safe(a, CompletionTag { sender: a, view: 1, msg_id: 1 }, vec![]);
    /// core.on_ordered(a, b"later".to_vec());
    /// assert_eq!(core.poll_action(), None); // queued behind the SafeSend
    /// ```
    pub fn on_ordered(&mut self, sender: Address, payload: Vec<u8>) {
        self.queue.push_back(Held {
            sender,
            payload,
            safe: None,
        });
        self.drain();
    }

    /// A SafeSend, in the total order.
    ///
    /// ```
    /// # use vsync::{durability::CompletionTag, marshal::Address, safe::{SafeAction, SafeCore}};
    /// let a = Address::new(1, 1);
    /// let mut core = SafeCore::new(a, 1);
    /// core.install(1, &[a]);
    /// let tag = CompletionTag { sender: a, view: 1, msg_id: 1 };
    /// core.on_safe(a, tag, b"p".to_vec());
    /// assert!(matches!(core.poll_action(), Some(SafeAction::Log { .. })));
    /// assert!(core.is_holding());
    /// ```
    pub fn on_safe(&mut self, sender: Address, tag: CompletionTag, payload: Vec<u8>) {
        if self.is_acceptor() {
            self.actions.push_back(SafeAction::Log {
                view: self.view,
                tag,
                payload: payload.clone(),
            });
        }
        let n = self.queued.entry(tag).or_insert(0);
        *n += 1;
        if *n == 1 && self.votes.contains_key(&tag) {
            self.early = self.early.saturating_sub(1);
        }
        self.queue.push_back(Held {
            sender,
            payload,
            safe: Some((tag, false)),
        });
        self.drain();
    }

    /// An accept multicast by `from` for `tags` in `view`. Accepts of other views and from
    /// non-acceptors are ignored (counted).
    ///
    /// ```
    /// # use vsync::{durability::CompletionTag, marshal::Address, safe::{SafeAction, SafeCore}};
    /// let (a, b) = (Address::new(1, 1), Address::new(2, 1));
    /// let mut core = SafeCore::new(b, 1);
    /// core.install(1, &[a, b]);
    /// let tag = CompletionTag { sender: a, view: 1, msg_id: 1 };
    /// core.on_safe(a, tag, vec![]);
    /// core.on_accept(a, 1, &[tag]); // Φ = 1 accept received
    /// assert!(matches!(core.poll_action(), Some(SafeAction::DeliverSafe { .. })));
    /// ```
    pub fn on_accept(&mut self, from: Address, view: u64, tags: &[CompletionTag]) {
        if view != self.view {
            self.stats.stale_accepts += 1;
            return;
        }
        if !self.acceptors.contains(&from) {
            self.stats.foreign_accepts += 1;
            return;
        }
        for t in tags {
            let held = self.queued.contains_key(t);
            if !held && !self.votes.contains_key(t) {
                if self.early >= MAX_EARLY_ACCEPTS {
                    self.stats.early_accepts_dropped += 1;
                    continue;
                }
                self.early += 1;
            }
            self.votes.entry(*t).or_default().insert(from);
        }
        self.drain();
    }

    /// This member (an acceptor of `view`) logged `tags`: emits the accept if `view` is still
    /// the current view (else the new view's install asked for a new log already).
    ///
    /// ```
    /// # use vsync::{durability::CompletionTag, marshal::Address, safe::{SafeAction, SafeCore}};
    /// let a = Address::new(1, 1);
    /// let mut core = SafeCore::new(a, 1);
    /// core.install(1, &[a]);
    /// let tag = CompletionTag { sender: a, view: 1, msg_id: 1 };
    /// core.on_logged(1, &[tag]);
    /// assert_eq!(core.poll_action(), Some(SafeAction::Accept { view: 1, tags: vec![tag] }));
    /// ```
    pub fn on_logged(&mut self, view: u64, tags: &[CompletionTag]) {
        if view != self.view || !self.is_acceptor() {
            self.stats.stale_logged += 1;
            return;
        }
        for chunk in tags.chunks(MAX_ACCEPT_TAGS) {
            self.actions.push_back(SafeAction::Accept {
                view,
                tags: chunk.to_vec(),
            });
        }
    }

    fn drain(&mut self) {
        let phi = self.acceptors.len();
        while let Some(front) = self.queue.front() {
            if let Some((tag, accepted)) = front.safe {
                let ok =
                    accepted || (phi > 0 && self.votes.get(&tag).is_some_and(|v| v.len() >= phi));
                if !ok {
                    return;
                }
            }
            let Some(h) = self.queue.pop_front() else {
                return;
            };
            match h.safe {
                None => self.actions.push_back(SafeAction::Deliver {
                    sender: h.sender,
                    payload: h.payload,
                }),
                Some((tag, _)) => {
                    if let Some(n) = self.queued.get_mut(&tag) {
                        *n -= 1;
                        if *n == 0 {
                            self.queued.remove(&tag);
                            self.votes.remove(&tag);
                        }
                    }
                    self.actions.push_back(SafeAction::DeliverSafe {
                        sender: h.sender,
                        tag,
                        payload: h.payload,
                    });
                }
            }
        }
    }

    /// The holdback queue as bytes, for a joiner's state transfer (taken right after
    /// [`install`](Self::install), when no accept of the new view has been counted).
    ///
    /// ```
    /// # use vsync::{durability::CompletionTag, marshal::Address, safe::SafeCore};
    /// let a = Address::new(1, 1);
    /// let mut core = SafeCore::new(a, 1);
    /// core.install(1, &[a]);
    /// core.on_safe(a, CompletionTag { sender: a, view: 1, msg_id: 1 }, b"p".to_vec());
    /// let snap = core.snapshot();
    /// let mut joiner = SafeCore::new(Address::new(2, 1), 1);
    /// joiner.restore(&snap).unwrap();
    /// assert_eq!(joiner.held(), 1);
    /// ```
    pub fn snapshot(&self) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&self.view.to_le_bytes());
        v.extend_from_slice(&(self.queue.len() as u64).to_le_bytes());
        for h in &self.queue {
            v.extend_from_slice(&h.sender.0.to_le_bytes());
            match &h.safe {
                None => v.push(0),
                Some((t, acc)) => {
                    v.push(if *acc { 2 } else { 1 });
                    put_tag(&mut v, t);
                }
            }
            v.extend_from_slice(&(h.payload.len() as u64).to_le_bytes());
            v.extend_from_slice(&h.payload);
        }
        v
    }

    /// Replaces the holdback queue with a [`snapshot`](Self::snapshot) (at a joiner, before its
    /// first [`install`](Self::install)). Garbage leaves the core unchanged.
    ///
    /// ```
    /// # use vsync::{marshal::Address, safe::{SafeCore, SafeError}};
    /// let mut core = SafeCore::new(Address::new(1, 1), 1);
    /// assert!(matches!(core.restore(b"junk"), Err(SafeError::BadSnapshot(_))));
    /// assert_eq!(core.held(), 0);
    /// ```
    pub fn restore(&mut self, snap: &[u8]) -> Result<(), SafeError> {
        let bad = SafeError::BadSnapshot;
        let _view = u64_at(snap, 0).ok_or(bad("truncated header"))?;
        let n = u64_at(snap, 8).ok_or(bad("truncated header"))?;
        let mut pos = 16;
        let mut queue = VecDeque::new();
        let mut queued: HashMap<CompletionTag, u32> = HashMap::new();
        for _ in 0..n {
            let sender = Address(u64_at(snap, pos).ok_or(bad("truncated entry"))?);
            let kind = *snap.get(pos + 8).ok_or(bad("truncated entry"))?;
            pos += 9;
            let safe = match kind {
                0 => None,
                1 | 2 => {
                    let t = tag_at(snap, pos).ok_or(bad("truncated tag"))?;
                    pos += TAG_LEN;
                    *queued.entry(t).or_insert(0) += 1;
                    Some((t, kind == 2))
                }
                _ => return Err(bad("unknown entry kind")),
            };
            let len = u64_at(snap, pos).ok_or(bad("truncated entry"))?;
            pos += 8;
            let end = usize::try_from(len)
                .ok()
                .and_then(|l| pos.checked_add(l))
                .filter(|e| *e <= snap.len())
                .ok_or(bad("entry past the end"))?;
            queue.push_back(Held {
                sender,
                payload: snap[pos..end].to_vec(),
                safe,
            });
            pos = end;
        }
        if pos != snap.len() {
            return Err(bad("trailing bytes"));
        }
        self.queue = queue;
        self.queued = queued;
        Ok(())
    }
}

/// Garbage collection of logged SafeSends (sans-IO): the manual's rule that a message is
/// collected only once its update is done *at every member where it was delivered*. Each
/// member reports its completions (`K_SAFE_DONE`, FIFO Send); this tracker, fed with local
/// deliveries, reports and view installs, says when a delivered message is done everywhere
/// (then the durability method's [`done`](Durability::done) is called).
///
/// A report arriving before the local delivery is kept until the delivery (every member
/// delivers a SafeSend in the same view, and the view change delivers all of that view's
/// messages and reports, so reports still unmatched at an install are stale and dropped).
///
/// ```
/// use vsync::durability::CompletionTag;
/// use vsync::marshal::Address;
/// use vsync::safe::DoneTracker;
///
/// let (a, b) = (Address::new(1, 1), Address::new(2, 1));
/// let tag = CompletionTag { sender: a, view: 1, msg_id: 1 };
/// let mut t = DoneTracker::default();
/// t.install(&[a, b]);
/// t.on_done(b, &[tag]); // b finished before a delivered it
/// t.on_delivered(tag);
/// assert!(t.take_ready().is_empty());
/// t.on_done(a, &[tag]);
/// assert_eq!(t.take_ready(), vec![tag]);
/// ```
#[derive(Clone, Debug, Default)]
pub struct DoneTracker {
    members: BTreeSet<Address>,
    /// Delivered here: members still to report.
    waiting: HashMap<CompletionTag, BTreeSet<Address>>,
    /// Reports of messages not delivered here yet (this view).
    early: HashMap<CompletionTag, BTreeSet<Address>>,
    ready: Vec<CompletionTag>,
    dropped: u64,
}

impl DoneTracker {
    /// A new view: members that left will not report; unmatched early reports are stale.
    ///
    /// ```
    /// # use vsync::{durability::CompletionTag, marshal::Address, safe::DoneTracker};
    /// let (a, b) = (Address::new(1, 1), Address::new(2, 1));
    /// let tag = CompletionTag { sender: a, view: 1, msg_id: 1 };
    /// let mut t = DoneTracker::default();
    /// t.install(&[a, b]);
    /// t.on_delivered(tag);
    /// t.on_done(a, &[tag]);
    /// t.install(&[a]); // b left: no longer waited for
    /// assert_eq!(t.take_ready(), vec![tag]);
    /// ```
    pub fn install(&mut self, members: &[Address]) {
        self.members = members.iter().copied().collect();
        let members = &self.members;
        let ready = &mut self.ready;
        self.waiting.retain(|tag, w| {
            w.retain(|m| members.contains(m));
            if w.is_empty() {
                ready.push(*tag);
            }
            !w.is_empty()
        });
        self.early.clear();
    }

    /// The message was delivered here: every current member must report it done.
    ///
    /// ```
    /// # use vsync::{durability::CompletionTag, marshal::Address, safe::DoneTracker};
    /// let a = Address::new(1, 1);
    /// let tag = CompletionTag { sender: a, view: 1, msg_id: 1 };
    /// let mut t = DoneTracker::default();
    /// t.install(&[a]);
    /// t.on_delivered(tag);
    /// assert_eq!(t.waiting(), 1);
    /// ```
    pub fn on_delivered(&mut self, tag: CompletionTag) {
        let mut w = self.members.clone();
        if let Some(e) = self.early.remove(&tag) {
            w.retain(|m| !e.contains(m));
        }
        if w.is_empty() {
            self.ready.push(tag);
        } else {
            self.waiting.insert(tag, w);
        }
    }

    /// `from` reports these messages done.
    ///
    /// ```
    /// # use vsync::{durability::CompletionTag, marshal::Address, safe::DoneTracker};
    /// let a = Address::new(1, 1);
    /// let tag = CompletionTag { sender: a, view: 1, msg_id: 1 };
    /// let mut t = DoneTracker::default();
    /// t.install(&[a]);
    /// t.on_delivered(tag);
    /// t.on_done(a, &[tag]);
    /// assert_eq!(t.waiting(), 0);
    /// ```
    pub fn on_done(&mut self, from: Address, tags: &[CompletionTag]) {
        for t in tags {
            match self.waiting.get_mut(t) {
                Some(w) => {
                    w.remove(&from);
                    if w.is_empty() {
                        self.waiting.remove(t);
                        self.ready.push(*t);
                    }
                }
                None if self.early.len() < MAX_EARLY_ACCEPTS || self.early.contains_key(t) => {
                    self.early.entry(*t).or_default().insert(from);
                }
                None => self.dropped += 1,
            }
        }
    }

    /// Messages now done at every member that delivered them (emptied).
    ///
    /// ```
    /// # use vsync::{durability::CompletionTag, marshal::Address, safe::DoneTracker};
    /// let a = Address::new(1, 1);
    /// let tag = CompletionTag { sender: a, view: 1, msg_id: 1 };
    /// let mut t = DoneTracker::default();
    /// t.install(&[a]);
    /// t.on_delivered(tag);
    /// t.on_done(a, &[tag]);
    /// assert_eq!(t.take_ready(), vec![tag]);
    /// assert!(t.take_ready().is_empty()); // emptied
    /// ```
    pub fn take_ready(&mut self) -> Vec<CompletionTag> {
        std::mem::take(&mut self.ready)
    }

    /// Delivered messages some member has not reported done yet.
    ///
    /// ```
    /// # use vsync::{durability::CompletionTag, marshal::Address, safe::DoneTracker};
    /// let (a, b) = (Address::new(1, 1), Address::new(2, 1));
    /// let mut t = DoneTracker::default();
    /// t.install(&[a, b]);
    /// t.on_delivered(CompletionTag { sender: a, view: 1, msg_id: 1 });
    /// t.on_done(a, &[CompletionTag { sender: a, view: 1, msg_id: 1 }]);
    /// assert_eq!(t.waiting(), 1); // b has not reported yet
    /// ```
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Early reports dropped past [`MAX_EARLY_ACCEPTS`].
    ///
    /// ```
    /// # use vsync::safe::DoneTracker;
    /// let t = DoneTracker::default();
    /// assert_eq!(t.dropped(), 0);
    /// ```
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

// ------------------------------------------------------------------------------------------
// Checkpoint wrapping: the holdback queue travels with the application's checkpoint.

const CKPT_MAGIC: [u8; 12] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, b'V', b'S', b'A', b'F',
];

/// Prefixes `state` with a holdback snapshot. (A checkpoint's own encoding starts with a
/// varint element count; eight 0xff bytes would be a count ≥ 2⁵⁶, which no checkpoint has.)
pub(crate) fn wrap_checkpoint(snapshot: &[u8], state: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(CKPT_MAGIC.len() + 8 + snapshot.len() + state.len());
    v.extend_from_slice(&CKPT_MAGIC);
    v.extend_from_slice(&(snapshot.len() as u64).to_le_bytes());
    v.extend_from_slice(snapshot);
    v.extend_from_slice(state);
    v
}

/// Splits a checkpoint into (holdback snapshot, application state).
pub(crate) fn unwrap_checkpoint(state: Vec<u8>) -> (Option<Vec<u8>>, Vec<u8>) {
    if !state.starts_with(&CKPT_MAGIC) {
        return (None, state);
    }
    let Some(n) = u64_at(&state, CKPT_MAGIC.len()) else {
        return (None, state);
    };
    let start = CKPT_MAGIC.len() + 8;
    let Some(end) = usize::try_from(n)
        .ok()
        .and_then(|n| start.checked_add(n))
        .filter(|e| *e <= state.len())
    else {
        return (None, state);
    };
    (Some(state[start..end].to_vec()), state[end..].to_vec())
}

/// Mixes a non-default threshold into the group signature, so members that disagree on it
/// cannot join the same group.
pub(crate) fn sign(
    mut sig: vsync_control::oracle::Signature,
    threshold: Option<usize>,
) -> vsync_control::oracle::Signature {
    if let Some(phi) = threshold {
        let mut b = sig.hash.to_le_bytes().to_vec();
        b.extend_from_slice(b"SafeSendThreshold");
        b.extend_from_slice(&(phi as u64).to_le_bytes());
        sig.hash = xxhash_rust::xxh3::xxh3_64(&b);
        let extra = format!("; SafeSendThreshold={phi}");
        if sig.text.len() + extra.len() <= 1000 {
            sig.text.push_str(&extra);
        }
    }
    sig
}

// ------------------------------------------------------------------------------------------
// The durability object, shared by the logger thread, the delivery thread and the app.

/// A group's durability method, shared between threads.
pub(crate) type SharedDurability = Arc<Mutex<Box<dyn Durability + Send>>>;

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Delivery-side SafeSend state of a [`Group`](crate::Group).
pub(crate) struct SafeLocal {
    threshold: Mutex<Option<usize>>,
    durability: Mutex<SharedDurability>,
    /// The SafeSend whose handlers are running, and whether they began an async update.
    current: Mutex<Option<(CompletionTag, bool)>>,
    /// Async updates begun and not yet done.
    asyncs: Mutex<HashSet<CompletionTag>>,
    next_id: AtomicU64,
    /// Messages this member's durability method failed to log (so it did not accept them).
    log_failures: Arc<AtomicU64>,
}

impl Default for SafeLocal {
    fn default() -> Self {
        SafeLocal {
            threshold: Mutex::new(None),
            durability: Mutex::new(Arc::new(Mutex::new(Box::new(MemoryLogger::new())))),
            current: Mutex::new(None),
            asyncs: Mutex::new(HashSet::new()),
            next_id: AtomicU64::new(1),
            log_failures: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// UnknownTag from the log means "not logged here" (this member was never an acceptor).
fn durable(r: Result<(), DurabilityError>) -> Result<(), SafeError> {
    match r {
        Ok(()) | Err(DurabilityError::UnknownTag(_)) => Ok(()),
        Err(e) => Err(SafeError::Durability(e.to_string())),
    }
}

impl SafeLocal {
    pub(crate) fn set_threshold(&self, phi: usize) -> Result<(), SafeError> {
        if phi == 0 {
            return Err(SafeError::ZeroThreshold);
        }
        *lock(&self.threshold) = Some(phi);
        Ok(())
    }

    pub(crate) fn threshold(&self) -> Option<usize> {
        *lock(&self.threshold)
    }

    pub(crate) fn set_durability(&self, d: Box<dyn Durability + Send>) {
        *lock(&self.durability) = Arc::new(Mutex::new(d));
    }

    pub(crate) fn durability(&self) -> SharedDurability {
        lock(&self.durability).clone()
    }

    /// The counter the logger thread bumps for every message it failed to log.
    pub(crate) fn log_failures(&self) -> Arc<AtomicU64> {
        self.log_failures.clone()
    }

    /// A fresh tag for a SafeSend by `me` in `view`.
    pub(crate) fn next_tag(&self, me: Address, view: u64) -> CompletionTag {
        CompletionTag {
            sender: me,
            view,
            msg_id: self.next_id.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Before the handlers of SafeSend `tag` run.
    pub(crate) fn enter(&self, tag: CompletionTag) {
        let d = self.durability();
        let _ = lock(&d).delivered(tag);
        *lock(&self.current) = Some((tag, false));
    }

    /// After they returned: the tag to report done, unless they began an async update.
    pub(crate) fn leave(&self) -> Option<CompletionTag> {
        match lock(&self.current).take() {
            Some((tag, false)) => Some(tag),
            _ => None,
        }
    }

    pub(crate) fn current(&self) -> Option<CompletionTag> {
        lock(&self.current).map(|(t, _)| t)
    }

    pub(crate) fn begin_async(&self) -> Result<CompletionTag, SafeError> {
        let tag = {
            let mut cur = lock(&self.current);
            let Some((tag, a)) = cur.as_mut() else {
                return Err(SafeError::NotInSafeHandler);
            };
            *a = true;
            *tag
        };
        lock(&self.asyncs).insert(tag);
        let d = self.durability();
        let r = lock(&d).begin_async(tag);
        durable(r).map(|()| tag)
    }

    /// `Done(tag)` by the application: checks the tag (the caller reports it to the group).
    pub(crate) fn done(&self, tag: CompletionTag) -> Result<(), SafeError> {
        if !lock(&self.asyncs).remove(&tag) {
            return Err(SafeError::UnknownTag(tag));
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------
// Driver side.

enum LogReq {
    /// Log this message, then report it logged for `view`.
    Log {
        view: u64,
        tag: CompletionTag,
        body: Vec<u8>,
    },
    /// Every member that delivered it is done: `Durability::done`.
    Done(CompletionTag),
}

/// What the driver must do for a SafeSend step.
pub(crate) enum SafeOut {
    /// Deliver this plain ordered message now (through the normal path).
    Ordered { sender: Address, payload: Vec<u8> },
    /// Run the SafeSend handlers.
    Safe {
        sender: Address,
        tag: CompletionTag,
        qid: u64,
        code: RequestCode,
        args: Vec<u8>,
    },
    /// Multicast this (FIFO Send).
    Multicast(Vec<u8>),
}

/// Driver-side SafeSend state of one group: the core and the logger thread (started when
/// this member first has to log).
pub(crate) struct SafeGroup {
    pub(crate) core: SafeCore,
    gid: GroupId,
    sys: Weak<SysInner>,
    durability: SharedDurability,
    /// Shared with the group: messages that could not be logged (or handed to the logger).
    failures: Arc<AtomicU64>,
    log_tx: Option<Sender<LogReq>>,
    /// Holdback snapshots taken at MakeCheckpoint, by view, until the checkpoint is sent.
    snapshots: BTreeMap<u32, Vec<u8>>,
    /// Who still has to report delivered SafeSends done.
    pub(crate) dones: DoneTracker,
    /// Local completions to report (batched: see [`DONE_REPORT_INTERVAL`]).
    done_out: Vec<CompletionTag>,
    last_report: Instant,
}

/// Done reports only serve garbage collection, so they are batched: sent when this old, or
/// when [`MAX_ACCEPT_TAGS`] are waiting.
///
/// ```
/// assert!(vsync::safe::DONE_REPORT_INTERVAL < std::time::Duration::from_secs(1));
/// ```
pub const DONE_REPORT_INTERVAL: Duration = Duration::from_millis(2);

impl SafeGroup {
    pub(crate) fn new(
        gid: GroupId,
        me: Address,
        threshold: Option<usize>,
        durability: SharedDurability,
        failures: Arc<AtomicU64>,
        sys: Weak<SysInner>,
    ) -> SafeGroup {
        SafeGroup {
            core: SafeCore::new(me, threshold.unwrap_or(DEFAULT_THRESHOLD)),
            gid,
            sys,
            durability,
            failures,
            log_tx: None,
            snapshots: BTreeMap::new(),
            dones: DoneTracker::default(),
            done_out: Vec::new(),
            last_report: Instant::now(),
        }
    }

    /// Installs a view in the core and the done tracker.
    pub(crate) fn install(&mut self, view: u64, members: &[Address]) {
        self.core.install(view, members);
        self.dones.install(members);
        self.collect();
    }

    /// A local completion to report.
    pub(crate) fn local_done(&mut self, tag: CompletionTag) {
        self.done_out.push(tag);
    }

    /// The done reports to multicast now (none if the batch is young and small).
    pub(crate) fn take_done_reports(&mut self, now: Instant) -> Vec<Vec<u8>> {
        if self.done_out.is_empty()
            || (self.done_out.len() < MAX_ACCEPT_TAGS
                && now.saturating_duration_since(self.last_report) < DONE_REPORT_INTERVAL)
        {
            return Vec::new();
        }
        self.last_report = now;
        let out: Vec<Vec<u8>> = self
            .done_out
            .chunks(MAX_ACCEPT_TAGS)
            .map(encode_done)
            .collect();
        self.done_out.clear();
        out
    }

    /// Hands messages done everywhere to the durability method (on the logger thread).
    fn collect(&mut self) {
        for tag in self.dones.take_ready() {
            self.log(LogReq::Done(tag));
        }
    }

    /// Hands a log request to the logger thread, starting it the first time.
    fn log(&mut self, req: LogReq) {
        if self.log_tx.is_none() {
            let (tx, rx) = mpsc::channel::<LogReq>();
            let (gid, d, sys) = (self.gid, self.durability.clone(), self.sys.clone());
            let failures = self.failures.clone();
            let spawned = std::thread::Builder::new()
                .name("vsync-safe-log".into())
                .spawn(move || logger_loop(gid, rx, d, failures, sys));
            if spawned.is_ok() {
                self.log_tx = Some(tx);
            }
        }
        if self.log_tx.as_ref().is_none_or(|tx| tx.send(req).is_err()) {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The messages to replay after a total failure (logged, not done), as SafeSend payloads
    /// with their original tags.
    pub(crate) fn replay(&self) -> Vec<Vec<u8>> {
        lock(&self.durability)
            .pending()
            .into_iter()
            .map(|m| encode_safe(&m.tag, 0, &m.payload))
            .collect()
    }

    /// Feeds an agent delivery; false if it is not SafeSend's business (deliver as usual).
    pub(crate) fn on_deliver(&mut self, sender: Address, ordered: bool, payload: &[u8]) -> bool {
        match payload.first() {
            Some(&K_SAFE_ACCEPT) if !ordered => {
                if let Some((view, tags)) = decode_accept(payload) {
                    self.core.on_accept(sender, view, &tags);
                }
                true
            }
            Some(&K_SAFE_DONE) if !ordered => {
                if let Some(tags) = decode_done(payload) {
                    self.dones.on_done(sender, &tags);
                    self.collect();
                }
                true
            }
            Some(&K_SAFE) if ordered => {
                if let Some(m) = decode_safe(payload) {
                    self.core.on_safe(sender, m.tag, payload.to_vec());
                }
                true
            }
            Some(&K_SAFE) => true, // not ordered: malformed use, dropped
            _ if ordered && self.core.is_holding() => {
                self.core.on_ordered(sender, payload.to_vec());
                true
            }
            _ => false,
        }
    }

    pub(crate) fn on_logged(&mut self, view: u64, tags: &[CompletionTag]) {
        self.core.on_logged(view, tags);
    }

    pub(crate) fn take_snapshot(&mut self, view: u32) {
        if self.core.is_holding() {
            self.snapshots.insert(view, self.core.snapshot());
        }
    }

    /// The checkpoint for `view`, with the holdback snapshot taken for it (if any).
    pub(crate) fn wrap(&mut self, view: u32, state: Vec<u8>) -> Vec<u8> {
        self.snapshots.retain(|v, _| *v >= view);
        match self.snapshots.remove(&view) {
            Some(s) => wrap_checkpoint(&s, &state),
            None => state,
        }
    }

    /// The next step for the driver (logging is handed to the logger thread here).
    pub(crate) fn next(&mut self) -> Option<SafeOut> {
        loop {
            match self.core.poll_action()? {
                SafeAction::Deliver { sender, payload } => {
                    return Some(SafeOut::Ordered { sender, payload })
                }
                SafeAction::DeliverSafe {
                    sender, payload, ..
                } => {
                    let m = decode_safe(&payload)?;
                    self.dones.on_delivered(m.tag);
                    self.collect();
                    return Some(SafeOut::Safe {
                        sender,
                        tag: m.tag,
                        qid: m.qid,
                        code: m.code,
                        args: m.args().to_vec(),
                    });
                }
                SafeAction::Log { view, tag, payload } => {
                    let Some(m) = decode_safe(&payload) else {
                        continue;
                    };
                    let req = LogReq::Log {
                        view,
                        tag,
                        body: m.body.to_vec(),
                    };
                    self.log(req);
                }
                SafeAction::Accept { view, tags } => {
                    return Some(SafeOut::Multicast(encode_accept(view, &tags)))
                }
            }
        }
    }
}

/// The logger thread: logs what the core asks for (a batch at a time), then tells the driver.
fn logger_loop(
    gid: GroupId,
    rx: Receiver<LogReq>,
    durability: SharedDurability,
    failures: Arc<AtomicU64>,
    sys: Weak<SysInner>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_ACCEPT_TAGS {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut msgs: Vec<LoggedMsg> = Vec::new();
        let mut views: Vec<u64> = Vec::new();
        let mut dones: Vec<CompletionTag> = Vec::new();
        for r in batch {
            match r {
                LogReq::Log { view, tag, body } => {
                    msgs.push(LoggedMsg { tag, payload: body });
                    views.push(view);
                }
                LogReq::Done(tag) => dones.push(tag),
            }
        }
        let mut by_view: BTreeMap<u64, Vec<CompletionTag>> = BTreeMap::new();
        {
            let mut d = lock(&durability);
            if !msgs.is_empty() {
                let results = d.log_batch(&msgs);
                for ((m, view), res) in msgs.iter().zip(&views).zip(results) {
                    if res.is_ok() {
                        by_view.entry(*view).or_default().push(m.tag);
                    } else {
                        // Not accepted: it waits for the other acceptors or the next view.
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            for tag in dones {
                // UnknownTag: not logged here. Other errors: it stays pending (replayed).
                let _ = d.done(tag);
            }
        }
        let Some(inner) = sys.upgrade() else { return };
        let sys = System { inner };
        for (view, tags) in by_view {
            if sys
                .submit_internal(Cmd::SafeLogged { gid, view, tags })
                .is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trips_and_rejects_garbage() {
        let tag = CompletionTag {
            sender: Address::new(3, 4),
            view: 9,
            msg_id: 77,
        };
        let mut body = 5u32.to_le_bytes().to_vec();
        body.extend_from_slice(b"args");
        let p = encode_safe(&tag, 12, &body);
        let m = decode_safe(&p).unwrap();
        assert_eq!((m.tag, m.qid, m.code, m.args()), (tag, 12, 5, &b"args"[..]));
        assert_eq!(m.body, &body[..]);
        assert!(decode_safe(&p[..SAFE_HDR - 1]).is_none());
        assert!(decode_safe(b"").is_none());
        let a = encode_accept(9, &[tag, tag]);
        assert_eq!(decode_accept(&a), Some((9, vec![tag, tag])));
        assert!(decode_accept(&a[..a.len() - 1]).is_none());
        let mut bad = a.clone();
        bad[9] = 0xff; // count way past the bytes
        assert!(decode_accept(&bad).is_none());
        let many = vec![tag; MAX_ACCEPT_TAGS + 5];
        assert_eq!(
            decode_accept(&encode_accept(1, &many)).unwrap().1.len(),
            MAX_ACCEPT_TAGS
        );
    }

    #[test]
    fn checkpoint_wrapping_round_trips() {
        let w = wrap_checkpoint(b"snap", b"state");
        assert_eq!(
            unwrap_checkpoint(w),
            (Some(b"snap".to_vec()), b"state".to_vec())
        );
        let plain = crate::group::encode_checkpoint(&[b"x".to_vec()]);
        assert_eq!(unwrap_checkpoint(plain.clone()), (None, plain));
        let mut torn = wrap_checkpoint(b"snap", b"");
        torn.truncate(CKPT_MAGIC.len() + 9);
        assert_eq!(unwrap_checkpoint(torn.clone()).0, None);
    }
}
