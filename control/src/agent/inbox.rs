//! [`Inbox`]: the delivery sink between the data-plane endpoint and the member agent.
//!
//! The endpoint delivers into it during each call; the agent drains it right after. Messages
//! are copied into one reusable byte arena (no allocation per message once warm). While the
//! agent is paused (cut off from the oracle) or its event queue is full, the inbox refuses
//! deliveries: the endpoint keeps them and flow control pushes back on the senders.

use vsync_dataplane::protocol::{Delivery, DeliveryKind, DeliverySink};
use vsync_dataplane::{GroupId, MemberId, ViewId};

/// One delivered message: metadata and where its bytes are in the arena.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InboxRec {
    pub group: GroupId,
    pub view: ViewId,
    pub sender: MemberId,
    pub kind: DeliveryKind,
    pub seq: u64,
    pub start: usize,
    pub len: usize,
}

/// The agent's delivery sink (see the module docs).
#[derive(Debug, Default)]
pub struct Inbox {
    pub(crate) recs: Vec<InboxRec>,
    pub(crate) bytes: Vec<u8>,
    /// False while deliveries must wait (paused, poisoned).
    pub(crate) open: bool,
    /// How many more messages may be taken before the agent drains.
    pub(crate) room: usize,
    /// A delivery was refused since the last retry: the endpoint holds it until
    /// `Endpoint::poll_delivery`.
    pub(crate) refused: bool,
}

impl Inbox {
    /// The bytes of one record.
    pub(crate) fn payload(&self, rec: &InboxRec) -> &[u8] {
        &self.bytes[rec.start..rec.start + rec.len]
    }

    /// Empties the inbox (keeps its memory).
    pub(crate) fn clear(&mut self) {
        self.recs.clear();
        self.bytes.clear();
    }
}

impl DeliverySink for Inbox {
    fn deliver(&mut self, d: &Delivery<'_>) -> bool {
        if !self.open || self.room == 0 {
            self.refused = true;
            return false;
        }
        self.room -= 1;
        let start = self.bytes.len();
        self.bytes.extend_from_slice(d.payload);
        self.recs.push(InboxRec {
            group: d.group,
            view: d.view,
            sender: d.sender,
            kind: d.kind,
            seq: d.seq,
            start,
            len: d.payload.len(),
        });
        true
    }
}
