//! Reply collection for `Query`, `OrderedQuery`, `SafeQuery`, `CausalQuery` and `P2PQuery`.
//!
//! A query is a multicast followed by a wait for replies. [`ReplyCollector`] is the sans-IO
//! state machine of that wait, for one query at its caller: the runtime feeds it the replies
//! ([`on_reply`](ReplyCollector::on_reply)), the failures it learns about
//! ([`on_member_failed`](ReplyCollector::on_member_failed)) and the passing of time
//! ([`on_timeout`](ReplyCollector::on_timeout), with "now" as a [`Duration`] since any fixed
//! origin), and takes the result with [`finish`](ReplyCollector::finish) once
//! [`is_done`](ReplyCollector::is_done).
//!
//! Semantics, after the Isis² manual:
//!
//! * The members expected to reply are those of the view when the query was sent.
//!   [`NReplies::All`] waits for all of them, [`NReplies::Majority`] for more than half of
//!   them, [`NReplies::Count`] for `k`.
//! * A member that sends a `NullReply`, or fails before replying, is not counted and no
//!   longer awaited; a reply that got through before its sender failed is counted. The query
//!   therefore finishes when enough replies arrived, or when nobody is left to wait for — with
//!   fewer replies than wanted, possibly none.
//! * An `AbortReply` ends the query at once with [`QueryError::Aborted`]; later replies are
//!   ignored.
//! * When the [`Timeout`] expires ([`Timeout::default`]: 15 s, null reply) the members still
//!   awaited are handled by the [`TimeoutAction`]: `Failure` reports them as failed (listed
//!   in [`Replies::failed`] so the runtime can call `HasFailed`) and finishes with what
//!   arrived; `NullReply` treats them as null replies; `Abort` fails the query with
//!   [`QueryError::Timeout`].
//! * A second reply from one member is ignored (and counted); a reply from a member that was
//!   not expected is refused with [`QueryError::UnexpectedSender`].
//!
//! Replies are kept in arrival order with their senders; each is a marshalled
//! [`ArgList`](crate::marshal::ArgList) (what a handler's `Reply` carries). [`Replies`]
//! offers the manual's three ways of collecting them: typed vectors
//! ([`decode`](Replies::decode), [`decode_args`](Replies::decode_args)), raw byte strings
//! ([`raw`](Replies::raw)), and a callback with the typed vector
//! ([`invoke`](Replies::invoke)).
//!
//! ```
//! use std::time::Duration;
//! use vsync::marshal::{Address, ArgList};
//! use vsync::query::{NReplies, ReplyCollector, ReplyKind, Timeout, TimeoutAction};
//!
//! let (a, b, c) = (Address::new(1, 0), Address::new(2, 0), Address::new(3, 0));
//! let now = Duration::from_secs(100);
//! let to = Timeout::new(Duration::from_secs(1), TimeoutAction::Failure);
//! let mut q = ReplyCollector::new(7, &[a, b, c], NReplies::All, to, now);
//!
//! q.on_reply(b, ReplyKind::Value(ArgList::one(&20i32).into_bytes())).unwrap();
//! q.on_reply(a, ReplyKind::Null).unwrap();
//! assert!(!q.is_done());
//! assert!(q.on_timeout(now + Duration::from_secs(1))); // c is too slow
//! let replies = q.finish().unwrap();
//! assert_eq!(replies.decode::<i32>().unwrap(), [20]);
//! assert_eq!(replies.failed(), [c]); // the runtime reports c as failed
//! ```

#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::marshal::{Address, ArgsRef, FromArgs, Marshal, MarshalError};

/// Identifies a query at its caller.
///
/// ```
/// let r = vsync::query::Replies::default();
/// let id: vsync::query::QueryId = r.query_id();
/// assert_eq!(id, 0);
/// ```
pub type QueryId = u64;

/// How many replies a query waits for.
///
/// ```
/// use vsync::NReplies;
/// let want = NReplies::Majority;
/// assert_eq!(want.wanted(3), 2);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NReplies {
    /// All members of the view at send time (those still alive).
    All,
    /// More than half of the members of the view at send time.
    Majority,
    /// This many replies.
    Count(usize),
}

impl NReplies {
    /// The number of replies wanted when `expected` members are asked.
    ///
    /// ```
    /// use vsync::query::NReplies;
    /// assert_eq!(NReplies::All.wanted(5), 5);
    /// assert_eq!(NReplies::Majority.wanted(5), 3);
    /// assert_eq!(NReplies::Majority.wanted(4), 3);
    /// assert_eq!(NReplies::Count(2).wanted(5), 2);
    /// ```
    pub fn wanted(self, expected: usize) -> usize {
        match self {
            NReplies::All => expected,
            NReplies::Majority => expected / 2 + 1,
            NReplies::Count(k) => k,
        }
    }
}

/// What to do with the members still awaited when a query times out.
///
/// ```
/// use vsync::{Timeout, TimeoutAction};
/// let t = Timeout::millis(200, TimeoutAction::Abort); // fail the query if anyone is late
/// assert_eq!(t.action, TimeoutAction::Abort);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutAction {
    /// The manual's `TO_FAILURE`: report them as failed and finish with what arrived.
    Failure,
    /// The manual's `TO_NULLREPLY`: treat them as having sent null replies.
    NullReply,
    /// The manual's `TO_ABORTREPLY`: fail the query with [`QueryError::Timeout`].
    Abort,
}

/// How long a query waits for replies, and what happens then.
///
/// ```
/// use std::time::Duration;
/// use vsync::query::{Timeout, TimeoutAction};
///
/// let d = Timeout::default();
/// assert_eq!((d.after, d.action), (Duration::from_secs(15), TimeoutAction::NullReply));
/// let t = Timeout::millis(1000, TimeoutAction::Failure);
/// assert_eq!(t.after, Duration::from_secs(1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeout {
    /// How long to wait after sending.
    pub after: Duration,
    /// What to do with the members still awaited.
    pub action: TimeoutAction,
}

impl Timeout {
    /// The manual's default wait: 15 seconds.
    ///
    /// ```
    /// use vsync::Timeout;
    /// assert_eq!(Timeout::default().after, Timeout::DEFAULT_AFTER);
    /// ```
    pub const DEFAULT_AFTER: Duration = Duration::from_secs(15);

    /// A timeout of `after`, then `action`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use vsync::{Timeout, TimeoutAction};
    /// let t = Timeout::new(Duration::from_secs(2), TimeoutAction::Failure);
    /// assert_eq!(t, Timeout::millis(2000, TimeoutAction::Failure));
    /// ```
    pub const fn new(after: Duration, action: TimeoutAction) -> Self {
        Timeout { after, action }
    }

    /// A timeout of `ms` milliseconds (the manual's `new Timeout(ms, action)`).
    ///
    /// ```
    /// use vsync::{Timeout, TimeoutAction};
    /// const QUICK: Timeout = Timeout::millis(250, TimeoutAction::NullReply);
    /// assert_eq!(QUICK.after.as_millis(), 250);
    /// ```
    pub const fn millis(ms: u64, action: TimeoutAction) -> Self {
        Timeout::new(Duration::from_millis(ms), action)
    }
}

impl Default for Timeout {
    /// 15 seconds, then null replies (the manual's default for `Query`).
    fn default() -> Self {
        Timeout::new(Self::DEFAULT_AFTER, TimeoutAction::NullReply)
    }
}

/// What a member answered.
///
/// ```
/// # use std::time::Duration;
/// # use vsync::marshal::{Address, ArgList};
/// # use vsync::query::*;
/// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
/// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
/// let mut q = ReplyCollector::new(1, &m, NReplies::All, Timeout::default(), Duration::ZERO);
/// q.on_reply(m[0], val(1)).unwrap();
/// q.on_reply(m[1], ReplyKind::Null).unwrap();
/// q.on_reply(m[2], ReplyKind::Abort("no".into())).unwrap();
/// assert!(q.finish().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    /// A reply: a marshalled [`ArgList`](crate::marshal::ArgList).
    Value(Vec<u8>),
    /// `NullReply`: this member will not contribute a reply.
    Null,
    /// `AbortReply(reason)`: the query fails at once with this reason.
    Abort(String),
}

/// What [`ReplyCollector::on_reply`] did with a reply.
///
/// ```
/// # use std::time::Duration;
/// # use vsync::marshal::{Address, ArgList};
/// # use vsync::query::*;
/// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
/// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
/// let mut q = ReplyCollector::new(1, &m, NReplies::All, Timeout::default(), Duration::ZERO);
/// assert_eq!(q.on_reply(m[0], val(1)), Ok(ReplyOutcome::Accepted));
/// assert_eq!(q.on_reply(m[0], val(1)), Ok(ReplyOutcome::Duplicate));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// Counted (a value, a null reply or an abort).
    Accepted,
    /// A second reply from the same member: ignored, counted in
    /// [`ReplyCollector::duplicates`].
    Duplicate,
    /// Ignored because the query is already finished, or its sender was already given up on
    /// (failed or timed out).
    Ignored,
}

/// Why a query failed, or its replies could not be decoded.
///
/// ```
/// # use std::time::Duration;
/// # use vsync::marshal::{Address, ArgList};
/// # use vsync::query::*;
/// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
/// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
/// let mut q = ReplyCollector::new(5, &m, NReplies::All, Timeout::default(), Duration::ZERO);
/// let e = q.on_reply(Address::new(9, 0), val(1)).unwrap_err();
/// assert_eq!(e, QueryError::UnexpectedSender { query: 5, from: Address::new(9, 0) });
/// assert!(matches!(q.finish(), Err(QueryError::NotDone { got: 0, wanted: 3, awaiting: 3 })));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueryError {
    /// A member answered with `AbortReply(reason)`.
    Aborted {
        /// Who aborted.
        by: Address,
        /// The reason it gave.
        reason: String,
    },
    /// The timeout expired with [`TimeoutAction::Abort`].
    Timeout {
        /// Replies received (values only).
        got: usize,
        /// Replies wanted.
        wanted: usize,
        /// The members that had not answered.
        missing: Vec<Address>,
    },
    /// A reply came from a member that was not asked.
    UnexpectedSender {
        /// The query.
        query: QueryId,
        /// The sender.
        from: Address,
    },
    /// [`ReplyCollector::finish`] was called before the query was done.
    NotDone {
        /// Replies received so far.
        got: usize,
        /// Replies wanted.
        wanted: usize,
        /// Members still awaited.
        awaiting: usize,
    },
    /// A reply could not be decoded as the type asked for.
    Decode {
        /// Position of the reply in arrival order.
        index: usize,
        /// Its sender.
        from: Address,
        /// Why (a signature mismatch names the expected and the found types).
        error: MarshalError,
    },
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::Aborted { by, reason } => {
                write!(f, "query aborted by {by}: {reason}")
            }
            QueryError::Timeout {
                got,
                wanted,
                missing,
            } => {
                write!(
                    f,
                    "query timed out with {got} of {wanted} replies; no answer from "
                )?;
                write_list(f, missing)
            }
            QueryError::UnexpectedSender { query, from } => write!(
                f,
                "reply to query {query} from {from}, which was not asked to reply"
            ),
            QueryError::NotDone {
                got,
                wanted,
                awaiting,
            } => write!(
                f,
                "query not finished: {got} of {wanted} replies, {awaiting} member(s) still awaited"
            ),
            QueryError::Decode { index, from, error } => {
                write!(f, "reply {index} from {from} could not be decoded: {error}")
            }
        }
    }
}

fn write_list(f: &mut fmt::Formatter<'_>, list: &[Address]) -> fmt::Result {
    if list.is_empty() {
        return f.write_str("nobody");
    }
    for (i, a) in list.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{a}")?;
    }
    Ok(())
}

impl std::error::Error for QueryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            QueryError::Decode { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Where a member stands in a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Member {
    Awaiting,
    Replied,
    Null,
    Failed,
    TimedOut,
}

/// The replies of a finished query, in arrival order with their senders.
///
/// ```
/// use vsync::marshal::{Address, ArgList};
/// use vsync::query::{NReplies, ReplyCollector, ReplyKind, Timeout};
/// use std::time::Duration;
///
/// let m = [Address::new(1, 0), Address::new(2, 0)];
/// let mut q = ReplyCollector::new(1, &m, NReplies::All, Timeout::default(), Duration::ZERO);
/// q.on_reply(m[1], ReplyKind::Value(ArgList::new(&(2i32, "two")).into_bytes())).unwrap();
/// q.on_reply(m[0], ReplyKind::Value(ArgList::new(&(1i32, "one")).into_bytes())).unwrap();
/// let r = q.finish().unwrap();
///
/// // 1. typed vectors
/// let v: Vec<(i32, String)> = r.decode_args().unwrap();
/// assert_eq!(v, [(2, "two".to_string()), (1, "one".to_string())]);
/// // 2. raw byte strings
/// assert_eq!(r.raw().len(), 2);
/// // 3. a callback with the typed vector
/// let total = r.invoke(|v: Vec<(i32, String)>| v.iter().map(|x| x.0).sum::<i32>()).unwrap();
/// assert_eq!(total, 3);
/// assert_eq!(r.senders().collect::<Vec<_>>(), [m[1], m[0]]);
/// // A wrong type is an error naming both types.
/// assert_eq!(
///     r.decode::<i64>().unwrap_err().to_string(),
///     "reply 0 from M2.0 could not be decoded: signature mismatch: expected (i64) but the message carries (i32, String)"
/// );
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replies {
    query: QueryId,
    entries: Vec<(Address, Vec<u8>)>,
    wanted: usize,
    nulls: usize,
    failed: Vec<Address>,
    crashed: Vec<Address>,
    timed_out_as_null: Vec<Address>,
    duplicates: usize,
}

impl Replies {
    /// The query these replies answer.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let q = ReplyCollector::new(42, &m, NReplies::All, Timeout::default(), Duration::ZERO);
    /// # let mut q = q; for a in &m { q.on_reply(*a, ReplyKind::Null).unwrap(); }
    /// assert_eq!(q.finish().unwrap().query_id(), 42);
    /// ```
    pub fn query_id(&self) -> QueryId {
        self.query
    }

    /// The number of (value) replies.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let mut q = ReplyCollector::new(1, &m, NReplies::All, Timeout::default(), Duration::ZERO);
    /// q.on_reply(m[0], val(1)).unwrap();
    /// q.on_reply(m[1], val(2)).unwrap();
    /// q.on_reply(m[2], ReplyKind::Null).unwrap();
    /// assert_eq!(q.finish().unwrap().len(), 2); // null replies are not counted
    /// ```
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if no member replied with a value.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let mut q =
    ///     ReplyCollector::new(1, &m[..1], NReplies::All, Timeout::default(), Duration::ZERO);
    /// q.on_reply(m[0], ReplyKind::Null).unwrap();
    /// assert!(q.finish().unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The number of replies the query wanted.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let q = ReplyCollector::new(1, &m, NReplies::Majority, Timeout::default(), Duration::ZERO);
    /// # let mut q = q; for a in &m { q.on_reply(*a, ReplyKind::Null).unwrap(); }
    /// assert_eq!(q.finish().unwrap().wanted(), 2);
    /// ```
    pub fn wanted(&self) -> usize {
        self.wanted
    }

    /// The replies with their senders, in arrival order.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let mut q =
    ///     ReplyCollector::new(1, &m[..1], NReplies::All, Timeout::default(), Duration::ZERO);
    /// q.on_reply(m[0], val(7)).unwrap();
    /// for (from, bytes) in q.finish().unwrap().iter() {
    ///     assert_eq!(from, m[0]);
    ///     let args = ArgList::from_bytes(bytes.to_vec()).unwrap();
    ///     assert_eq!(args.decode::<(i32,)>().unwrap(), (7,));
    /// }
    /// ```
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (Address, &[u8])> + '_ {
        self.entries.iter().map(|(a, b)| (*a, b.as_slice()))
    }

    /// The senders, in arrival order.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let mut q =
    ///     ReplyCollector::new(1, &m, NReplies::Count(2), Timeout::default(), Duration::ZERO);
    /// q.on_reply(m[2], val(1)).unwrap();
    /// q.on_reply(m[0], val(1)).unwrap();
    /// assert_eq!(q.finish().unwrap().senders().collect::<Vec<_>>(), [m[2], m[0]]);
    /// ```
    pub fn senders(&self) -> impl ExactSizeIterator<Item = Address> + '_ {
        self.entries.iter().map(|(a, _)| *a)
    }

    /// Null replies counted (including members treated as null on timeout).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let mut q = ReplyCollector::new(1, &m, NReplies::All, Timeout::default(), Duration::ZERO);
    /// q.on_reply(m[0], val(1)).unwrap();
    /// q.on_timeout(Timeout::DEFAULT_AFTER); // TimeoutAction::NullReply: the others count as nulls
    /// assert_eq!(q.finish().unwrap().nulls(), 2);
    /// ```
    pub fn nulls(&self) -> usize {
        self.nulls
    }

    /// Members that timed out under [`TimeoutAction::Failure`]: the runtime should report
    /// them as failed (`HasFailed`).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let to = Timeout::millis(100, TimeoutAction::Failure);
    /// let mut q = ReplyCollector::new(1, &m[..2], NReplies::All, to, Duration::ZERO);
    /// q.on_reply(m[0], val(1)).unwrap();
    /// q.on_timeout(Duration::from_millis(100));
    /// assert_eq!(q.finish().unwrap().failed(), &m[1..2]);
    /// ```
    pub fn failed(&self) -> &[Address] {
        &self.failed
    }

    /// Members that failed (as reported by the runtime) before replying.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let mut q =
    ///     ReplyCollector::new(1, &m[..2], NReplies::All, Timeout::default(), Duration::ZERO);
    /// q.on_reply(m[0], val(1)).unwrap();
    /// q.on_member_failed(m[1]);
    /// assert_eq!(q.finish().unwrap().crashed(), &m[1..2]);
    /// ```
    pub fn crashed(&self) -> &[Address] {
        &self.crashed
    }

    /// Members treated as null replies because of a [`TimeoutAction::NullReply`] timeout.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let mut q =
    ///     ReplyCollector::new(1, &m[..2], NReplies::All, Timeout::default(), Duration::ZERO);
    /// q.on_reply(m[0], val(1)).unwrap();
    /// q.on_timeout(Timeout::DEFAULT_AFTER);
    /// assert_eq!(q.finish().unwrap().timed_out_as_null(), &m[1..2]);
    /// ```
    pub fn timed_out_as_null(&self) -> &[Address] {
        &self.timed_out_as_null
    }

    /// Duplicate replies that were ignored.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let mut q =
    ///     ReplyCollector::new(1, &m[..2], NReplies::All, Timeout::default(), Duration::ZERO);
    /// q.on_reply(m[0], val(1)).unwrap();
    /// q.on_reply(m[0], val(1)).unwrap();
    /// q.on_reply(m[1], val(2)).unwrap();
    /// assert_eq!(q.finish().unwrap().duplicates(), 1);
    /// ```
    pub fn duplicates(&self) -> usize {
        self.duplicates
    }

    /// The raw replies (each a marshalled argument list), in arrival order: the manual's
    /// `QueryToBA`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let mut q =
    ///     ReplyCollector::new(1, &m[..1], NReplies::All, Timeout::default(), Duration::ZERO);
    /// q.on_reply(m[0], val(3)).unwrap();
    /// assert_eq!(q.finish().unwrap().raw(), vec![ArgList::new(&(3i32,)).into_bytes()]);
    /// ```
    pub fn raw(&self) -> Vec<Vec<u8>> {
        self.entries.iter().map(|(_, b)| b.clone()).collect()
    }

    /// The raw replies without copying.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let mut q =
    ///     ReplyCollector::new(1, &m[..1], NReplies::All, Timeout::default(), Duration::ZERO);
    /// q.on_reply(m[0], val(3)).unwrap();
    /// let bytes: Vec<Vec<u8>> = q.finish().unwrap().into_raw();
    /// assert_eq!(bytes.len(), 1);
    /// ```
    pub fn into_raw(self) -> Vec<Vec<u8>> {
        self.entries.into_iter().map(|(_, b)| b).collect()
    }

    /// Decodes every reply as a tuple of values `A` (the manual's `r1List, r2List, ...`, one
    /// tuple per reply).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let mut q =
    ///     ReplyCollector::new(1, &m[..1], NReplies::All, Timeout::default(), Duration::ZERO);
    /// q.on_reply(m[0], ReplyKind::Value(ArgList::new(&(1i32, 2u64)).into_bytes())).unwrap();
    /// let v: Vec<(i32, u64)> = q.finish().unwrap().decode_args().unwrap();
    /// assert_eq!(v, [(1, 2)]);
    /// ```
    pub fn decode_args<A: FromArgs>(&self) -> Result<Vec<A>, QueryError> {
        self.entries
            .iter()
            .enumerate()
            .map(|(index, (from, bytes))| {
                ArgsRef::parse(bytes)
                    .and_then(|a| a.decode::<A>())
                    .map_err(|error| QueryError::Decode {
                        index,
                        from: *from,
                        error,
                    })
            })
            .collect()
    }

    /// Decodes every reply as a single value of type `T`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let mut q =
    ///     ReplyCollector::new(1, &m[..2], NReplies::All, Timeout::default(), Duration::ZERO);
    /// q.on_reply(m[0], val(1)).unwrap();
    /// q.on_reply(m[1], val(2)).unwrap();
    /// assert_eq!(q.finish().unwrap().decode::<i32>().unwrap(), [1, 2]);
    /// ```
    pub fn decode<T: Marshal>(&self) -> Result<Vec<T>, QueryError> {
        Ok(self
            .decode_args::<(T,)>()?
            .into_iter()
            .map(|(t,)| t)
            .collect())
    }

    /// Decodes every reply as a tuple `A` and calls `f` with the vector (the manual's
    /// `QueryInvoke` / `InvokeFromBArrays`). `f` is not called if a reply does not decode.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let mut q =
    ///     ReplyCollector::new(1, &m[..2], NReplies::All, Timeout::default(), Duration::ZERO);
    /// q.on_reply(m[0], val(1)).unwrap();
    /// q.on_reply(m[1], val(2)).unwrap();
    /// let max = q.finish().unwrap().invoke(|v: Vec<(i32,)>| v.into_iter().map(|x| x.0).max());
    /// assert_eq!(max.unwrap(), Some(2));
    /// ```
    pub fn invoke<A: FromArgs, R>(&self, f: impl FnOnce(Vec<A>) -> R) -> Result<R, QueryError> {
        self.decode_args().map(f)
    }
}

/// Why a query ended, once it has.
#[derive(Clone, Debug)]
enum End {
    Complete,
    Failed(QueryError),
}

/// The reply-collection state machine of one query. See the [module docs](self).
///
/// ```
/// use std::time::Duration;
/// use vsync::marshal::Address;
/// use vsync::query::{NReplies, QueryError, ReplyCollector, ReplyKind, Timeout, TimeoutAction};
///
/// let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
/// let to = Timeout::millis(500, TimeoutAction::Abort);
/// let mut q = ReplyCollector::new(9, &m, NReplies::Majority, to, Duration::ZERO);
/// assert_eq!(q.deadline(), Duration::from_millis(500));
/// q.on_reply(m[0], ReplyKind::Abort("malformed request".into())).unwrap();
/// assert!(q.is_done());
/// assert_eq!(
///     q.finish().unwrap_err(),
///     QueryError::Aborted { by: m[0], reason: "malformed request".into() }
/// );
/// ```
#[derive(Clone, Debug)]
pub struct ReplyCollector {
    query: QueryId,
    order: Vec<Address>,
    members: BTreeMap<Address, Member>,
    awaiting: usize,
    wanted: usize,
    timeout: Timeout,
    deadline: Duration,
    replies: Replies,
    ignored: usize,
    end: Option<End>,
}

impl ReplyCollector {
    /// Starts collecting replies to query `query_id`, sent at `now` to `expected` (the
    /// members of the view at send time that are to reply; duplicates are dropped), waiting
    /// for `want` replies for at most `timeout`.
    ///
    /// A query that wants no replies, or asks nobody, is done at once.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let q = ReplyCollector::new(1, &m, NReplies::Count(0), Timeout::default(), Duration::ZERO);
    /// assert!(q.is_done()); // wants no replies: done at once
    /// ```
    pub fn new(
        query_id: QueryId,
        expected: &[Address],
        want: NReplies,
        timeout: Timeout,
        now: Duration,
    ) -> Self {
        let mut members = BTreeMap::new();
        let mut order = Vec::with_capacity(expected.len());
        for &a in expected {
            if members.insert(a, Member::Awaiting).is_none() {
                order.push(a);
            }
        }
        let wanted = want.wanted(order.len());
        let mut q = ReplyCollector {
            query: query_id,
            awaiting: order.len(),
            order,
            members,
            wanted,
            timeout,
            deadline: now.saturating_add(timeout.after),
            replies: Replies {
                query: query_id,
                wanted,
                ..Replies::default()
            },
            ignored: 0,
            end: None,
        };
        q.check_complete();
        q
    }

    /// A `P2PQuery` to one member: waits for its reply.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let mut q = ReplyCollector::p2p(1, m[1], Timeout::default(), Duration::ZERO);
    /// assert_eq!(q.wanted(), 1);
    /// q.on_reply(m[1], val(5)).unwrap();
    /// assert_eq!(q.finish().unwrap().decode::<i32>().unwrap(), [5]);
    /// ```
    pub fn p2p(query_id: QueryId, member: Address, timeout: Timeout, now: Duration) -> Self {
        Self::new(query_id, &[member], NReplies::All, timeout, now)
    }

    /// The query id.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let q = ReplyCollector::p2p(17, m[0], Timeout::default(), Duration::ZERO);
    /// assert_eq!(q.query_id(), 17);
    /// ```
    pub fn query_id(&self) -> QueryId {
        self.query
    }

    /// When the timeout expires (on the clock `now` was given on).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let now = Duration::from_secs(10);
    /// let to = Timeout::millis(500, TimeoutAction::Abort);
    /// let q = ReplyCollector::new(1, &m, NReplies::All, to, now);
    /// assert_eq!(q.deadline(), Duration::from_millis(10_500));
    /// ```
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The timeout in force.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let q = ReplyCollector::new(1, &m, NReplies::All, Timeout::default(), Duration::ZERO);
    /// assert_eq!(q.timeout(), Timeout::default());
    /// ```
    pub fn timeout(&self) -> Timeout {
        self.timeout
    }

    /// The number of replies wanted.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let q = ReplyCollector::new(1, &m, NReplies::Majority, Timeout::default(), Duration::ZERO);
    /// assert_eq!(q.wanted(), 2);
    /// ```
    pub fn wanted(&self) -> usize {
        self.wanted
    }

    /// The number of (value) replies received.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let mut q = ReplyCollector::new(1, &m, NReplies::All, Timeout::default(), Duration::ZERO);
    /// q.on_reply(m[0], val(1)).unwrap();
    /// q.on_reply(m[1], ReplyKind::Null).unwrap();
    /// assert_eq!(q.got(), 1);
    /// ```
    pub fn got(&self) -> usize {
        self.replies.entries.len()
    }

    /// Duplicate replies ignored so far.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let mut q = ReplyCollector::new(1, &m, NReplies::All, Timeout::default(), Duration::ZERO);
    /// q.on_reply(m[0], val(1)).unwrap();
    /// q.on_reply(m[0], val(1)).unwrap();
    /// assert_eq!(q.duplicates(), 1);
    /// ```
    pub fn duplicates(&self) -> usize {
        self.replies.duplicates
    }

    /// Replies ignored because the query had ended or their sender was given up on.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let mut q = ReplyCollector::new(1, &m, NReplies::All, Timeout::default(), Duration::ZERO);
    /// q.on_member_failed(m[2]);
    /// assert_eq!(q.on_reply(m[2], val(1)), Ok(ReplyOutcome::Ignored));
    /// assert_eq!(q.ignored(), 1);
    /// ```
    pub fn ignored(&self) -> usize {
        self.ignored
    }

    /// The members still awaited, in the order they were given.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let mut q = ReplyCollector::new(1, &m, NReplies::All, Timeout::default(), Duration::ZERO);
    /// q.on_reply(m[1], val(1)).unwrap();
    /// assert_eq!(q.awaiting().collect::<Vec<_>>(), [m[0], m[2]]);
    /// ```
    pub fn awaiting(&self) -> impl Iterator<Item = Address> + '_ {
        self.order
            .iter()
            .copied()
            .filter(|a| self.members.get(a) == Some(&Member::Awaiting))
    }

    /// True once the query has ended (enough replies, nobody left to wait for, an abort, or
    /// the timeout); [`finish`](Self::finish) then gives the result.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let mut q =
    ///     ReplyCollector::new(1, &m, NReplies::Count(1), Timeout::default(), Duration::ZERO);
    /// assert!(!q.is_done());
    /// q.on_reply(m[0], val(1)).unwrap();
    /// assert!(q.is_done());
    /// ```
    pub fn is_done(&self) -> bool {
        self.end.is_some()
    }

    fn check_complete(&mut self) {
        debug_assert_eq!(
            self.awaiting,
            self.members
                .values()
                .filter(|m| **m == Member::Awaiting)
                .count()
        );
        if self.end.is_none() && (self.got() >= self.wanted || self.awaiting == 0) {
            self.end = Some(End::Complete);
        }
    }

    /// Records what `from` answered. Errors only if `from` was not asked; a duplicate, or a
    /// reply after the query ended, is ignored (see [`ReplyOutcome`]).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let mut q =
    ///     ReplyCollector::new(1, &m[..1], NReplies::All, Timeout::default(), Duration::ZERO);
    /// assert_eq!(q.on_reply(m[0], val(1)), Ok(ReplyOutcome::Accepted));
    /// assert_eq!(q.on_reply(m[0], val(1)), Ok(ReplyOutcome::Duplicate));
    /// assert!(q.on_reply(m[1], val(1)).is_err()); // not asked
    /// ```
    pub fn on_reply(&mut self, from: Address, kind: ReplyKind) -> Result<ReplyOutcome, QueryError> {
        let Some(state) = self.members.get_mut(&from) else {
            return Err(QueryError::UnexpectedSender {
                query: self.query,
                from,
            });
        };
        match *state {
            Member::Replied | Member::Null => {
                self.replies.duplicates += 1;
                return Ok(ReplyOutcome::Duplicate);
            }
            Member::Failed | Member::TimedOut => {
                self.ignored += 1;
                return Ok(ReplyOutcome::Ignored);
            }
            Member::Awaiting => {}
        }
        if self.end.is_some() {
            self.ignored += 1;
            return Ok(ReplyOutcome::Ignored);
        }
        self.awaiting -= 1;
        match kind {
            ReplyKind::Value(bytes) => {
                *state = Member::Replied;
                self.replies.entries.push((from, bytes));
            }
            ReplyKind::Null => {
                *state = Member::Null;
                self.replies.nulls += 1;
            }
            ReplyKind::Abort(reason) => {
                *state = Member::Replied;
                self.end = Some(End::Failed(QueryError::Aborted { by: from, reason }));
            }
        }
        self.check_complete();
        Ok(ReplyOutcome::Accepted)
    }

    /// Records that `member` failed (a new view without it). If it had not answered, it is no
    /// longer awaited and not counted; a reply it sent before failing still counts. Returns
    /// true if it was awaited.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let mut q =
    ///     ReplyCollector::new(1, &m[..2], NReplies::All, Timeout::default(), Duration::ZERO);
    /// q.on_reply(m[0], val(1)).unwrap();
    /// assert!(!q.on_member_failed(m[0])); // it had replied: still counts
    /// assert!(q.on_member_failed(m[1]));
    /// assert!(q.is_done());
    /// ```
    pub fn on_member_failed(&mut self, member: Address) -> bool {
        match self.members.get_mut(&member) {
            Some(state @ Member::Awaiting) if self.end.is_none() => {
                *state = Member::Failed;
                self.awaiting -= 1;
                self.replies.crashed.push(member);
                self.check_complete();
                true
            }
            _ => false,
        }
    }

    /// Applies the timeout action if `now` is at or past the deadline and the query has not
    /// ended. Returns true if the timeout fired.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let to = Timeout::millis(100, TimeoutAction::Abort);
    /// let mut q = ReplyCollector::new(1, &m, NReplies::All, to, Duration::ZERO);
    /// assert!(!q.on_timeout(Duration::from_millis(99)));
    /// assert!(q.on_timeout(Duration::from_millis(100)));
    /// assert!(matches!(q.finish(), Err(QueryError::Timeout { got: 0, wanted: 3, .. })));
    /// ```
    pub fn on_timeout(&mut self, now: Duration) -> bool {
        if self.end.is_some() || now < self.deadline {
            return false;
        }
        let missing: Vec<Address> = self.awaiting().collect();
        match self.timeout.action {
            TimeoutAction::Failure => {
                for a in &missing {
                    self.members.insert(*a, Member::TimedOut);
                }
                self.replies.failed = missing;
                self.end = Some(End::Complete);
            }
            TimeoutAction::NullReply => {
                for a in &missing {
                    self.members.insert(*a, Member::Null);
                }
                self.replies.nulls += missing.len();
                self.replies.timed_out_as_null = missing;
                self.end = Some(End::Complete);
            }
            TimeoutAction::Abort => {
                for a in &missing {
                    self.members.insert(*a, Member::TimedOut);
                }
                self.end = Some(End::Failed(QueryError::Timeout {
                    got: self.got(),
                    wanted: self.wanted,
                    missing,
                }));
            }
        }
        self.awaiting = 0;
        true
    }

    /// The result of a finished query: the replies, or why the query failed
    /// ([`QueryError::NotDone`] if it has not ended yet).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vsync::marshal::{Address, ArgList};
    /// # use vsync::query::*;
    /// # let val = |x: i32| ReplyKind::Value(ArgList::new(&(x,)).into_bytes());
    /// # let m: Vec<Address> = (1..=3).map(|p| Address::new(p, 0)).collect();
    /// let mut q =
    ///     ReplyCollector::new(1, &m[..1], NReplies::All, Timeout::default(), Duration::ZERO);
    /// q.on_reply(m[0], val(1)).unwrap();
    /// let replies = q.finish().unwrap();
    /// assert_eq!(replies.decode::<i32>().unwrap(), [1]);
    /// ```
    pub fn finish(self) -> Result<Replies, QueryError> {
        match self.end {
            None => Err(QueryError::NotDone {
                got: self.replies.entries.len(),
                wanted: self.wanted,
                awaiting: self.awaiting,
            }),
            Some(End::Failed(e)) => Err(e),
            Some(End::Complete) => Ok(self.replies),
        }
    }
}
