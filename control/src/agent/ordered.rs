//! OrderedSend's total order within one view: the Isis² rank-0 sequencer.
//!
//! Every OrderedSend travels as a FIFO Send. The view's rank-0 member is the sequencer: its
//! own OrderedSends are ordered by their place in its stream (the fast path: no extra
//! message), and it announces the order of everybody else's in ORDER messages, which also
//! travel in its stream. Every member (rank 0 included) walks rank 0's stream in order and
//! delivers each item once it holds the message the item names. So the order is one stream's
//! FIFO order, and all members deliver the same sequence.
//!
//! At a view change the flush gives every survivor the same messages and the same prefix of
//! rank 0's stream; [`OrderedQueue::finish_view`] then delivers what the announced order
//! still allows (skipping items whose message no survivor holds: nobody can have delivered
//! those), followed by the never-ordered rest sorted by (sender rank, sequence) — identical
//! at every survivor. Why this rather than Derecho's round-robin with null messages: a group
//! with one active sender must not wait for idle senders (Derecho issue #207); here an idle
//! member costs nothing, and rank 0's own sends cost nothing extra.

use std::collections::{BTreeMap, VecDeque};

use vsync_dataplane::MemberId;

/// One item of rank 0's order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Item {
    /// Rank 0's own OrderedSend (ordered by its place in rank 0's stream).
    Own(u64, Vec<u8>),
    /// The next message is `(sender, seq)`.
    Ref(MemberId, u64),
}

/// A message delivered in total order: `(sender, stream seq, payload)`.
pub(crate) type OrderedMsg = (MemberId, u64, Vec<u8>);

/// Per-group OrderedSend state for one view.
#[derive(Debug, Default)]
pub(crate) struct OrderedQueue {
    /// OrderedSends received but not yet delivered, by `(sender, seq)`.
    holdback: BTreeMap<(MemberId, u64), Vec<u8>>,
    /// Rank 0's order, in its stream order, not yet delivered.
    queue: VecDeque<Item>,
    /// At rank 0: messages to announce in the next ORDER message.
    announce: Vec<(MemberId, u64)>,
    /// Bytes held in `holdback` and `queue`.
    held_bytes: usize,
}

impl OrderedQueue {
    /// An OrderedSend from `sender` (stream seq `seq`) arrived, in `sender`'s FIFO order.
    pub(crate) fn on_message(
        &mut self,
        me: MemberId,
        rank0: MemberId,
        sender: MemberId,
        seq: u64,
        payload: Vec<u8>,
    ) {
        self.held_bytes += payload.len();
        if sender == rank0 {
            self.queue.push_back(Item::Own(seq, payload));
        } else {
            if me == rank0 {
                self.announce.push((sender, seq));
            }
            self.holdback.insert((sender, seq), payload);
        }
    }

    /// Rank 0's ORDER message arrived (in its stream order).
    pub(crate) fn on_order(&mut self, entries: impl IntoIterator<Item = (MemberId, u64)>) {
        self.queue
            .extend(entries.into_iter().map(|(s, q)| Item::Ref(s, q)));
    }

    /// At rank 0: the entries to announce now (emptied).
    pub(crate) fn take_announcements(&mut self) -> Vec<(MemberId, u64)> {
        std::mem::take(&mut self.announce)
    }

    /// At rank 0: puts back announcements that could not be sent.
    pub(crate) fn restore_announcements(&mut self, mut entries: Vec<(MemberId, u64)>) {
        entries.append(&mut self.announce);
        self.announce = entries;
    }

    /// Bytes held waiting for their order.
    pub(crate) fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// The next message deliverable in the total order, if any.
    pub(crate) fn poll(&mut self, rank0: MemberId) -> Option<OrderedMsg> {
        let msg = match self.queue.front()? {
            Item::Own(..) => match self.queue.pop_front() {
                Some(Item::Own(seq, payload)) => (rank0, seq, payload),
                _ => unreachable!("front was Own"),
            },
            Item::Ref(sender, seq) => {
                let key = (*sender, *seq);
                let payload = self.holdback.remove(&key)?;
                self.queue.pop_front();
                (key.0, key.1, payload)
            }
        };
        self.held_bytes -= msg.2.len();
        Some(msg)
    }

    /// Ends the view after its flush: everything still deliverable, in the order every
    /// survivor computes identically (see the module docs). `members` is the view's member
    /// list (rank order). Leaves the queue empty for the next view.
    pub(crate) fn finish_view(&mut self, members: &[MemberId]) -> Vec<OrderedMsg> {
        let rank0 = members.first().copied().unwrap_or_default();
        let mut out = Vec::new();
        while let Some(item) = self.queue.pop_front() {
            match item {
                Item::Own(seq, payload) => out.push((rank0, seq, payload)),
                Item::Ref(sender, seq) => {
                    if let Some(p) = self.holdback.remove(&(sender, seq)) {
                        out.push((sender, seq, p));
                    }
                }
            }
        }
        let rank = |m: &MemberId| members.iter().position(|x| x == m).unwrap_or(usize::MAX);
        let mut rest: Vec<OrderedMsg> = std::mem::take(&mut self.holdback)
            .into_iter()
            .map(|((s, q), p)| (s, q, p))
            .collect();
        rest.sort_by_key(|(s, q, _)| (rank(s), *q));
        out.extend(rest);
        self.announce.clear();
        self.held_bytes = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: u32) -> MemberId {
        MemberId::new(p, 1)
    }

    #[test]
    fn rank0_order_is_followed_and_own_sends_take_the_fast_path() {
        let (a, b, c) = (m(1), m(2), m(3));
        let mut q = OrderedQueue::default();
        q.on_message(c, a, b, 1, b"b1".to_vec());
        assert_eq!(q.poll(a), None, "not ordered yet");
        q.on_message(c, a, a, 1, b"a1".to_vec());
        q.on_order([(b, 1)]);
        assert_eq!(q.poll(a).unwrap().2, b"a1");
        assert_eq!(q.poll(a).unwrap().2, b"b1");
        // An order naming a message not yet received waits for it.
        q.on_order([(c, 1)]);
        q.on_message(c, a, a, 2, b"a2".to_vec());
        assert_eq!(q.poll(a), None);
        q.on_message(c, a, c, 1, b"c1".to_vec());
        assert_eq!(q.poll(a).unwrap().2, b"c1");
        assert_eq!(q.poll(a).unwrap().2, b"a2");
        assert_eq!(q.held_bytes(), 0);
    }

    #[test]
    fn finish_view_skips_lost_messages_and_sorts_the_rest() {
        let (a, b, c) = (m(1), m(2), m(3));
        let mut q = OrderedQueue::default();
        q.on_order([(c, 7), (b, 2)]);
        q.on_message(b, a, c, 9, b"c9".to_vec());
        q.on_message(b, a, b, 2, b"b2".to_vec());
        q.on_message(b, a, b, 1, b"b1".to_vec());
        let out: Vec<_> = q.finish_view(&[a, b, c]).into_iter().map(|x| x.2).collect();
        assert_eq!(out, vec![b"b2".to_vec(), b"b1".to_vec(), b"c9".to_vec()]);
        assert_eq!(q.held_bytes(), 0);
    }
}
