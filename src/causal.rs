//! CausalSend ordering: vector timestamps over the members of one view.
//!
//! The manual's `CausalSend` extends the FIFO property of `Send` to Lamport's happened-before
//! relation: if a member sends X and later sends Y, or receives X and then sends Y, every
//! member delivers X before Y. Concurrent messages may be delivered in different orders at
//! different members.
//!
//! [`CausalOrder`] is the sans-IO core of that protocol (Birman–Schiper–Stephenson): each
//! outgoing message carries a [`VectorStamp`] with one entry per member of the view (indexed
//! by rank), counting the messages from that member the sender had delivered when it sent,
//! its own message included. A receiver holds an incoming message from `s` until
//!
//! * `stamp[s] == delivered[s] + 1` (it is the next message from `s`: FIFO), and
//! * `stamp[k] <= delivered[k]` for every `k != s` (everything it depends on was delivered).
//!
//! A sender delivers its own messages immediately, so [`CausalOrder::stamp`] also advances
//! its own delivered count. At a view change, [`CausalOrder::flush_view`] hands back whatever
//! is still held (the view-change protocol has already made the view's messages stable, so
//! the missing predecessors will never come) in an order that respects causality among them,
//! and the counters restart for the next view.
//!
//! Nothing here blocks, allocates without bound, or panics on bad input: an impossible stamp
//! is a [`CausalError`], and the number of held messages is capped.
//!
//! ```
//! use vsync::causal::CausalOrder;
//!
//! // Three members; rank 0 sends X, rank 1 receives X and then sends Y.
//! let mut p0 = CausalOrder::<&str>::new(0, 3).unwrap();
//! let mut p1 = CausalOrder::<&str>::new(1, 3).unwrap();
//! let mut p2 = CausalOrder::<&str>::new(2, 3).unwrap();
//!
//! let x = p0.stamp();
//! p1.receive(0, x.clone(), "X").unwrap();
//! assert_eq!(p1.poll(), Some((0, "X")));
//! let y = p1.stamp();
//!
//! // Y reaches rank 2 first: it is held until X arrives.
//! p2.receive(1, y, "Y").unwrap();
//! assert_eq!(p2.poll(), None);
//! p2.receive(0, x, "X").unwrap();
//! assert_eq!(p2.poll(), Some((0, "X")));
//! assert_eq!(p2.poll(), Some((1, "Y")));
//! ```

#![deny(missing_docs)]

use std::fmt;

use crate::marshal::{MarshalError, Reader, Writer};

/// The default bound on messages held back waiting for their causal predecessors.
///
/// ```
/// use vsync::causal::{CausalError, CausalOrder, DEFAULT_MAX_HELD};
/// let mut a = CausalOrder::<()>::new(0, 2).unwrap();
/// let mut b = CausalOrder::<()>::new(1, 2).unwrap();
/// let _lost = a.stamp();
/// for _ in 0..DEFAULT_MAX_HELD {
///     b.receive(0, a.stamp(), ()).unwrap(); // all held behind the lost message
/// }
/// let full = b.receive(0, a.stamp(), ());
/// assert_eq!(full, Err(CausalError::Full { max_held: DEFAULT_MAX_HELD }));
/// ```
pub const DEFAULT_MAX_HELD: usize = 4096;

/// A vector timestamp: entry `k` counts the messages from the member of rank `k` that the
/// sender had delivered when it sent (its own message included).
///
/// Encoding: the number of entries as a varint, then each entry as a varint (shortest form).
///
/// ```
/// use vsync::causal::VectorStamp;
///
/// let s = VectorStamp::from(vec![3, 0, 200]);
/// let bytes = s.to_bytes();
/// assert_eq!(bytes, [3, 3, 0, 0xc8, 0x01]);
/// assert_eq!(VectorStamp::decode(&bytes, 3).unwrap(), s);
/// assert!(VectorStamp::decode(&bytes, 2).is_err()); // wrong width for this view
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct VectorStamp(Vec<u64>);

impl VectorStamp {
    /// An all-zero stamp for a view of `members` members.
    ///
    /// ```
    /// use vsync::causal::VectorStamp;
    /// assert_eq!(VectorStamp::zero(3).entries(), &[0, 0, 0]);
    /// ```
    pub fn zero(members: usize) -> Self {
        VectorStamp(vec![0; members])
    }

    /// The entries, indexed by rank.
    ///
    /// ```
    /// use vsync::causal::VectorStamp;
    /// assert_eq!(VectorStamp::from(vec![1, 2]).entries(), &[1, 2]);
    /// ```
    pub fn entries(&self) -> &[u64] {
        &self.0
    }

    /// The number of entries (the size of the view).
    ///
    /// ```
    /// use vsync::causal::VectorStamp;
    /// assert_eq!(VectorStamp::zero(4).len(), 4);
    /// ```
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if the stamp has no entries.
    ///
    /// ```
    /// use vsync::causal::VectorStamp;
    /// assert!(VectorStamp::default().is_empty());
    /// assert!(!VectorStamp::zero(1).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entry for `rank`, if the stamp has one.
    ///
    /// ```
    /// use vsync::causal::VectorStamp;
    /// let s = VectorStamp::from(vec![5, 7]);
    /// assert_eq!((s.get(1), s.get(2)), (Some(7), None));
    /// ```
    pub fn get(&self, rank: usize) -> Option<u64> {
        self.0.get(rank).copied()
    }

    /// The sum of the entries (saturating). If X happened before Y, `X.sum() < Y.sum()`.
    ///
    /// ```
    /// use vsync::causal::VectorStamp;
    /// assert_eq!(VectorStamp::from(vec![1, 2, 3]).sum(), 6);
    /// assert_eq!(VectorStamp::from(vec![u64::MAX, 1]).sum(), u64::MAX);
    /// ```
    pub fn sum(&self) -> u64 {
        self.0.iter().fold(0u64, |a, &b| a.saturating_add(b))
    }

    /// True if `self` happened before `other`: every entry `<=` and at least one `<`.
    ///
    /// ```
    /// use vsync::causal::VectorStamp;
    /// let x = VectorStamp::from(vec![1, 0]);
    /// let y = VectorStamp::from(vec![1, 1]);
    /// let z = VectorStamp::from(vec![0, 1]);
    /// assert!(x.happened_before(&y) && !y.happened_before(&x));
    /// assert!(!x.happened_before(&z) && !z.happened_before(&x)); // concurrent
    /// ```
    pub fn happened_before(&self, other: &VectorStamp) -> bool {
        self.0.len() == other.0.len()
            && self.0.iter().zip(&other.0).all(|(a, b)| a <= b)
            && self.0 != other.0
    }

    /// Appends the encoding to `w`.
    ///
    /// ```
    /// use vsync::causal::VectorStamp;
    /// use vsync::marshal::Writer;
    /// let mut w = Writer::new();
    /// VectorStamp::from(vec![1, 2]).encode_into(&mut w);
    /// w.put_varint(99); // more data after the stamp
    /// assert_eq!(w.into_vec(), [2, 1, 2, 99]);
    /// ```
    pub fn encode_into(&self, w: &mut Writer) {
        w.put_varint(self.0.len() as u64);
        for &e in &self.0 {
            w.put_varint(e);
        }
    }

    /// The encoding as a fresh vector.
    ///
    /// ```
    /// use vsync::causal::VectorStamp;
    /// assert_eq!(VectorStamp::zero(2).to_bytes(), [2, 0, 0]);
    /// ```
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(1 + self.0.len());
        self.encode_into(&mut w);
        w.into_vec()
    }

    /// Decodes one stamp from `r` (which may hold more data after it). The width must be
    /// exactly `members`; nothing is allocated before that is checked.
    ///
    /// ```
    /// use vsync::causal::VectorStamp;
    /// use vsync::marshal::Reader;
    /// let mut r = Reader::new(&[2, 1, 2, 99]);
    /// assert_eq!(VectorStamp::decode_from(&mut r, 2).unwrap().entries(), &[1, 2]);
    /// assert_eq!(r.remaining(), 1); // the data after the stamp
    /// ```
    pub fn decode_from(r: &mut Reader<'_>, members: usize) -> Result<Self, CausalError> {
        let n = r.get_varint().map_err(CausalError::Decode)?;
        if n != members as u64 {
            return Err(CausalError::WrongWidth { got: n, members });
        }
        // Every entry takes at least one byte.
        if (r.remaining() as u64) < n {
            return Err(CausalError::Decode(MarshalError::Truncated {
                needed: members,
                remaining: r.remaining(),
            }));
        }
        let mut v = Vec::with_capacity(members);
        for _ in 0..members {
            v.push(r.get_varint().map_err(CausalError::Decode)?);
        }
        Ok(VectorStamp(v))
    }

    /// Decodes a stamp that must span all of `bytes`, for a view of `members` members.
    /// Never panics; allocates at most `members` entries.
    ///
    /// ```
    /// use vsync::causal::{CausalError, VectorStamp};
    /// assert_eq!(VectorStamp::decode(&[2, 4, 5], 2).unwrap().entries(), &[4, 5]);
    /// assert_eq!(
    ///     VectorStamp::decode(&[2, 4, 5], 3),
    ///     Err(CausalError::WrongWidth { got: 2, members: 3 })
    /// );
    /// ```
    pub fn decode(bytes: &[u8], members: usize) -> Result<Self, CausalError> {
        let mut r = Reader::new(bytes);
        let s = Self::decode_from(&mut r, members)?;
        r.finish().map_err(CausalError::Decode)?;
        Ok(s)
    }
}

impl From<Vec<u64>> for VectorStamp {
    fn from(v: Vec<u64>) -> Self {
        VectorStamp(v)
    }
}

impl fmt::Display for VectorStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{e}")?;
        }
        f.write_str("]")
    }
}

/// Why a stamp or message was refused.
///
/// ```
/// use vsync::causal::{CausalError, CausalOrder};
/// assert_eq!(
///     CausalOrder::<()>::new(3, 3).unwrap_err(),
///     CausalError::BadRank { rank: 3, members: 3 }
/// );
/// let mut c = CausalOrder::<()>::new(0, 2).unwrap();
/// let own = c.stamp();
/// assert_eq!(c.receive(0, own, ()), Err(CausalError::OwnMessage { rank: 0 }));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CausalError {
    /// `my_rank` is not a rank of a view of `members` members.
    BadRank {
        /// The rank given.
        rank: usize,
        /// The size of the view.
        members: usize,
    },
    /// A stamp's width is not the size of the view.
    WrongWidth {
        /// Entries in the stamp.
        got: u64,
        /// Members in the view.
        members: usize,
    },
    /// A message claims to come from this member (own messages are delivered on send).
    OwnMessage {
        /// This member's rank.
        rank: usize,
    },
    /// A message from `sender` numbered `seq` was already delivered or is already held.
    Duplicate {
        /// The sender's rank.
        sender: usize,
        /// The message's number in the sender's sequence (`stamp[sender]`).
        seq: u64,
    },
    /// The stamp can never become deliverable: it claims a dependency on a message of ours
    /// that we never sent.
    Inconsistent {
        /// The sender's rank.
        sender: usize,
        /// The rank whose entry is impossible.
        rank: usize,
        /// The entry in the stamp.
        entry: u64,
        /// The largest value the entry could legitimately have.
        limit: u64,
    },
    /// The stamp's entry for its own sender is 0: it does not count the message itself.
    ZeroSequence {
        /// The sender's rank.
        sender: usize,
    },
    /// The bound on held messages is reached; the message was not accepted.
    Full {
        /// The bound.
        max_held: usize,
    },
    /// A stamp could not be decoded.
    Decode(MarshalError),
}

impl fmt::Display for CausalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CausalError::BadRank { rank, members } => {
                write!(f, "rank {rank} is not a member of a view of {members}")
            }
            CausalError::WrongWidth { got, members } => write!(
                f,
                "vector stamp has {got} entries but the view has {members} members"
            ),
            CausalError::OwnMessage { rank } => write!(
                f,
                "message claims to come from this member (rank {rank}); own messages are delivered when sent"
            ),
            CausalError::Duplicate { sender, seq } => write!(
                f,
                "message {seq} from rank {sender} was already delivered or is already held"
            ),
            CausalError::Inconsistent {
                sender,
                rank,
                entry,
                limit,
            } => write!(
                f,
                "stamp from rank {sender} can never be delivered: entry {rank} is {entry}, at most {limit} is possible"
            ),
            CausalError::ZeroSequence { sender } => write!(
                f,
                "stamp from rank {sender} has 0 in the sender's own entry; it must count the message itself"
            ),
            CausalError::Full { max_held } => write!(
                f,
                "{max_held} messages are already held waiting for causal predecessors"
            ),
            CausalError::Decode(e) => write!(f, "malformed vector stamp: {e}"),
        }
    }
}

impl std::error::Error for CausalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CausalError::Decode(e) => Some(e),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Held<T> {
    sender: usize,
    stamp: VectorStamp,
    msg: T,
}

/// Causal delivery for one member in one view: stamps outgoing messages and holds incoming
/// ones until their causal predecessors have been delivered. See the [module docs](self).
///
/// ```
/// use vsync::causal::{CausalError, CausalOrder};
///
/// let mut a = CausalOrder::<u32>::new(0, 2).unwrap();
/// let mut b = CausalOrder::<u32>::new(1, 2).unwrap().with_max_held(1);
/// let s1 = a.stamp();
/// let s2 = a.stamp();
/// let s3 = a.stamp();
/// b.receive(0, s2, 2).unwrap(); // held: message 1 is missing
/// assert_eq!(b.receive(0, s3.clone(), 3), Err(CausalError::Full { max_held: 1 }));
/// b.receive(0, s1, 1).unwrap(); // deliverable at once: accepted even when full
/// assert_eq!(b.poll(), Some((0, 1)));
/// assert_eq!(b.poll(), Some((0, 2)));
/// assert_eq!(b.poll(), None);
/// let _s4 = a.stamp(); // lost
/// let s5 = a.stamp();
/// b.receive(0, s5, 5).unwrap();
/// assert_eq!(b.flush_view(), vec![(0, 5)]); // view change: hand back what is held
/// ```
#[derive(Debug)]
pub struct CausalOrder<T> {
    my_rank: usize,
    /// `delivered[k]`: messages from rank `k` delivered here (own: sent).
    delivered: Vec<u64>,
    held: Vec<Held<T>>,
    max_held: usize,
}

impl<T> CausalOrder<T> {
    /// Causal ordering for the member of rank `my_rank` in a view of `members` members, with
    /// at most [`DEFAULT_MAX_HELD`] held messages.
    ///
    /// ```
    /// use vsync::causal::CausalOrder;
    /// let c = CausalOrder::<String>::new(1, 3).unwrap();
    /// assert_eq!((c.rank(), c.members(), c.held()), (1, 3, 0));
    /// assert!(CausalOrder::<String>::new(3, 3).is_err());
    /// ```
    pub fn new(my_rank: usize, members: usize) -> Result<Self, CausalError> {
        if my_rank >= members {
            return Err(CausalError::BadRank {
                rank: my_rank,
                members,
            });
        }
        Ok(CausalOrder {
            my_rank,
            delivered: vec![0; members],
            held: Vec::new(),
            max_held: DEFAULT_MAX_HELD,
        })
    }

    /// Sets the bound on held messages (at least 1). When the bound is reached, one more
    /// message is accepted only if it is deliverable at once, so at most `max_held + 1`
    /// messages are ever held and the missing predecessor can always get in.
    ///
    /// ```
    /// use vsync::causal::{CausalError, CausalOrder};
    /// let mut a = CausalOrder::<u8>::new(0, 2).unwrap();
    /// let mut b = CausalOrder::<u8>::new(1, 2).unwrap().with_max_held(1);
    /// let _lost = a.stamp();
    /// b.receive(0, a.stamp(), 2).unwrap();
    /// assert_eq!(b.receive(0, a.stamp(), 3), Err(CausalError::Full { max_held: 1 }));
    /// ```
    pub fn with_max_held(mut self, max_held: usize) -> Self {
        self.max_held = max_held.max(1);
        self
    }

    /// This member's rank.
    ///
    /// ```
    /// use vsync::causal::CausalOrder;
    /// assert_eq!(CausalOrder::<()>::new(2, 5).unwrap().rank(), 2);
    /// ```
    pub fn rank(&self) -> usize {
        self.my_rank
    }

    /// The size of the view.
    ///
    /// ```
    /// use vsync::causal::CausalOrder;
    /// assert_eq!(CausalOrder::<()>::new(2, 5).unwrap().members(), 5);
    /// ```
    pub fn members(&self) -> usize {
        self.delivered.len()
    }

    /// Messages delivered here per rank (for this member's own rank: messages sent).
    ///
    /// ```
    /// use vsync::causal::CausalOrder;
    /// let mut a = CausalOrder::<()>::new(0, 2).unwrap();
    /// let mut b = CausalOrder::<()>::new(1, 2).unwrap();
    /// b.receive(0, a.stamp(), ()).unwrap();
    /// b.stamp();
    /// b.stamp();
    /// assert_eq!(b.poll(), Some((0, ())));
    /// assert_eq!(b.delivered(), &[1, 2]); // one from rank 0, two sent
    /// ```
    pub fn delivered(&self) -> &[u64] {
        &self.delivered
    }

    /// The number of messages held back.
    ///
    /// ```
    /// use vsync::causal::CausalOrder;
    /// let mut a = CausalOrder::<()>::new(0, 2).unwrap();
    /// let mut b = CausalOrder::<()>::new(1, 2).unwrap();
    /// let first = a.stamp();
    /// b.receive(0, a.stamp(), ()).unwrap();
    /// assert_eq!(b.held(), 1); // waits for `first`
    /// b.receive(0, first, ()).unwrap();
    /// while b.poll().is_some() {}
    /// assert_eq!(b.held(), 0);
    /// ```
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Stamps an outgoing message. The sender delivers it to itself at once, so its own
    /// delivered count advances.
    ///
    /// ```
    /// use vsync::causal::CausalOrder;
    /// let mut c = CausalOrder::<()>::new(0, 2).unwrap();
    /// assert_eq!(c.stamp().entries(), &[1, 0]);
    /// assert_eq!(c.stamp().entries(), &[2, 0]);
    /// ```
    pub fn stamp(&mut self) -> VectorStamp {
        let own = &mut self.delivered[self.my_rank];
        *own = own.saturating_add(1);
        VectorStamp(self.delivered.clone())
    }

    /// The stamp the next [`stamp`](Self::stamp) would return, without advancing anything:
    /// for a sender whose transmission may still be refused (backpressure). Call `stamp`
    /// once the message is actually sent.
    ///
    /// ```
    /// use vsync::causal::CausalOrder;
    /// let mut c = CausalOrder::<()>::new(1, 2).unwrap();
    /// assert_eq!(c.peek_stamp().entries(), &[0, 1]);
    /// assert_eq!(c.peek_stamp(), c.stamp());
    /// assert_eq!(c.peek_stamp().entries(), &[0, 2]);
    /// ```
    pub fn peek_stamp(&self) -> VectorStamp {
        let mut v = self.delivered.clone();
        v[self.my_rank] = v[self.my_rank].saturating_add(1);
        VectorStamp(v)
    }

    /// Accepts a message from the member of rank `sender` carrying `stamp`; it becomes
    /// available from [`poll`](Self::poll) once its causal predecessors are delivered.
    ///
    /// Errors (the message is dropped): bad sender or stamp width, a message from ourself,
    /// a duplicate (already delivered or held), a stamp that can never become deliverable,
    /// or the held-message bound.
    ///
    /// ```
    /// use vsync::causal::{CausalError, CausalOrder};
    /// let mut a = CausalOrder::<&str>::new(0, 2).unwrap();
    /// let mut b = CausalOrder::<&str>::new(1, 2).unwrap();
    /// let s = a.stamp();
    /// b.receive(0, s.clone(), "hello").unwrap();
    /// assert_eq!(b.receive(0, s, "hello"), Err(CausalError::Duplicate { sender: 0, seq: 1 }));
    /// ```
    pub fn receive(
        &mut self,
        sender: usize,
        stamp: VectorStamp,
        msg: T,
    ) -> Result<(), CausalError> {
        let n = self.delivered.len();
        if sender >= n {
            return Err(CausalError::BadRank {
                rank: sender,
                members: n,
            });
        }
        if stamp.len() != n {
            return Err(CausalError::WrongWidth {
                got: stamp.len() as u64,
                members: n,
            });
        }
        if sender == self.my_rank {
            return Err(CausalError::OwnMessage { rank: sender });
        }
        let seq = stamp.0[sender];
        if seq == 0 {
            return Err(CausalError::ZeroSequence { sender });
        }
        if seq <= self.delivered[sender]
            || self
                .held
                .iter()
                .any(|h| h.sender == sender && h.stamp.0[sender] == seq)
        {
            return Err(CausalError::Duplicate { sender, seq });
        }
        let mine = stamp.0[self.my_rank];
        if mine > self.delivered[self.my_rank] {
            return Err(CausalError::Inconsistent {
                sender,
                rank: self.my_rank,
                entry: mine,
                limit: self.delivered[self.my_rank],
            });
        }
        let h = Held { sender, stamp, msg };
        // A full buffer still takes one message that is deliverable at once (so the missing
        // predecessor of the held messages can always get in); poll frees the room again.
        if self.held.len() > self.max_held
            || (self.held.len() == self.max_held && !self.deliverable(&h))
        {
            return Err(CausalError::Full {
                max_held: self.max_held,
            });
        }
        self.held.push(h);
        debug_assert!(self.held.len() <= self.max_held + 1);
        Ok(())
    }

    fn deliverable(&self, h: &Held<T>) -> bool {
        h.stamp.0.iter().enumerate().all(|(k, &e)| {
            if k == h.sender {
                Some(e) == self.delivered[k].checked_add(1)
            } else {
                e <= self.delivered[k]
            }
        })
    }

    /// The next message that may be delivered in causal order, with its sender's rank, or
    /// `None` if every held message still waits for a predecessor. Call until `None`.
    ///
    /// Among several deliverable messages the one with the smallest (stamp sum, sender rank)
    /// comes first, so delivery is deterministic.
    ///
    /// ```
    /// use vsync::causal::CausalOrder;
    /// let mut a = CausalOrder::<u8>::new(0, 2).unwrap();
    /// let mut b = CausalOrder::<u8>::new(1, 2).unwrap();
    /// let (s1, s2) = (a.stamp(), a.stamp());
    /// b.receive(0, s2, 2).unwrap();
    /// b.receive(0, s1, 1).unwrap();
    /// assert_eq!(b.poll(), Some((0, 1)));
    /// assert_eq!(b.poll(), Some((0, 2)));
    /// assert_eq!(b.poll(), None);
    /// ```
    pub fn poll(&mut self) -> Option<(usize, T)> {
        let mut best: Option<(usize, (u64, usize))> = None;
        for (i, h) in self.held.iter().enumerate() {
            if self.deliverable(h) {
                let key = (h.stamp.sum(), h.sender);
                if best.is_none_or(|(_, k)| key < k) {
                    best = Some((i, key));
                }
            }
        }
        let (i, _) = best?;
        let h = self.held.swap_remove(i);
        debug_assert_eq!(h.stamp.0[h.sender], self.delivered[h.sender] + 1);
        self.delivered[h.sender] += 1;
        Some((h.sender, h.msg))
    }

    /// Ends the view: returns every held message in an order that respects causality among
    /// them and FIFO per sender (by stamp sum, then sender rank, then the sender's sequence
    /// number), and resets the counters for a new view of the same size and rank.
    ///
    /// ```
    /// use vsync::causal::CausalOrder;
    /// let mut a = CausalOrder::<u8>::new(0, 2).unwrap();
    /// let mut b = CausalOrder::<u8>::new(1, 2).unwrap();
    /// let _lost = a.stamp();
    /// b.receive(0, a.stamp(), 2).unwrap();
    /// assert_eq!(b.flush_view(), vec![(0, 2)]);
    /// assert_eq!(b.delivered(), &[0, 0]); // counters restart
    /// ```
    pub fn flush_view(&mut self) -> Vec<(usize, T)> {
        let mut held = std::mem::take(&mut self.held);
        held.sort_by_key(|h| (h.stamp.sum(), h.sender, h.stamp.0[h.sender]));
        self.delivered.iter_mut().for_each(|d| *d = 0);
        held.into_iter().map(|h| (h.sender, h.msg)).collect()
    }

    /// Ends the view like [`flush_view`](Self::flush_view) and starts the next one, in which
    /// this member has rank `my_rank` among `members` members. On a bad rank nothing changes.
    ///
    /// ```
    /// use vsync::causal::CausalOrder;
    /// let mut c = CausalOrder::<u8>::new(1, 2).unwrap();
    /// assert!(c.start_view(0, 3).unwrap().is_empty());
    /// assert_eq!((c.rank(), c.members()), (0, 3));
    /// assert!(c.start_view(3, 3).is_err());
    /// ```
    pub fn start_view(
        &mut self,
        my_rank: usize,
        members: usize,
    ) -> Result<Vec<(usize, T)>, CausalError> {
        if my_rank >= members {
            return Err(CausalError::BadRank {
                rank: my_rank,
                members,
            });
        }
        let out = self.flush_view();
        self.my_rank = my_rank;
        self.delivered = vec![0; members];
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_input() {
        assert!(CausalOrder::<()>::new(3, 3).is_err());
        let mut c = CausalOrder::<()>::new(1, 3).unwrap();
        assert!(matches!(
            c.receive(3, VectorStamp::zero(3), ()),
            Err(CausalError::BadRank { .. })
        ));
        assert!(matches!(
            c.receive(0, VectorStamp::zero(2), ()),
            Err(CausalError::WrongWidth { .. })
        ));
        assert_eq!(
            c.receive(1, vec![0, 1, 0].into(), ()),
            Err(CausalError::OwnMessage { rank: 1 })
        );
        assert_eq!(
            c.receive(0, vec![0, 0, 0].into(), ()),
            Err(CausalError::ZeroSequence { sender: 0 })
        );
        // Depends on a message of ours we never sent.
        let e = c.receive(0, vec![1, 1, 0].into(), ()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "stamp from rank 0 can never be delivered: entry 1 is 1, at most 0 is possible"
        );
        c.receive(0, vec![1, 0, 0].into(), ()).unwrap();
        assert_eq!(
            c.receive(0, vec![1, 0, 0].into(), ()),
            Err(CausalError::Duplicate { sender: 0, seq: 1 })
        );
        assert_eq!(c.poll(), Some((0, ())));
        assert_eq!(
            c.receive(0, vec![1, 0, 0].into(), ()),
            Err(CausalError::Duplicate { sender: 0, seq: 1 })
        );
    }

    #[test]
    fn start_view_resizes() {
        let mut c = CausalOrder::<u8>::new(0, 2).unwrap();
        c.receive(1, vec![0, 2].into(), 7).unwrap();
        assert_eq!(c.start_view(2, 3).unwrap(), vec![(1, 7)]);
        assert_eq!(c.members(), 3);
        assert_eq!(c.stamp().entries(), &[0, 0, 1]);
    }
}
