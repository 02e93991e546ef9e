//! Replay protection for authenticated datagrams: a sliding window of recently seen packet
//! numbers per sender.

use std::collections::HashMap;

use crate::{GroupId, MemberId};

/// Width of the window in packet numbers.
pub const WINDOW_BITS: u64 = 1024;
const WORDS: usize = (WINDOW_BITS / 64) as usize;

/// One sender's window: the highest packet number accepted and a bitmap of the
/// [`WINDOW_BITS`] numbers at or below it.
#[derive(Clone, Debug, Default)]
pub struct ReplayWindow {
    highest: u64,
    bits: [u64; WORDS],
}

impl ReplayWindow {
    /// Accepts `pn` if it is new (and records it); false for a replay or a number older than
    /// the window.
    pub fn accept(&mut self, pn: u64) -> bool {
        if pn > self.highest {
            let shift = pn - self.highest;
            if shift >= WINDOW_BITS {
                self.bits = [0; WORDS];
            } else {
                for _ in 0..shift {
                    // Clear the slot that now represents a number leaving the window.
                    let slot = (self.highest + 1) % WINDOW_BITS;
                    self.bits[(slot / 64) as usize] &= !(1u64 << (slot % 64));
                    self.highest += 1;
                }
            }
            self.highest = pn;
            self.set(pn);
            return true;
        }
        if self.highest - pn >= WINDOW_BITS {
            return false;
        }
        if self.get(pn) {
            return false;
        }
        self.set(pn);
        true
    }

    fn get(&self, pn: u64) -> bool {
        let slot = pn % WINDOW_BITS;
        self.bits[(slot / 64) as usize] & (1u64 << (slot % 64)) != 0
    }

    fn set(&mut self, pn: u64) {
        let slot = pn % WINDOW_BITS;
        self.bits[(slot / 64) as usize] |= 1u64 << (slot % 64);
    }
}

/// Replay windows per (group, sender), for up to `capacity` pairs. Only datagrams that passed
/// the group, view and membership checks reach the table, so it holds at most the members of
/// the joined groups; when full anyway, the pair least recently heard from is evicted.
#[derive(Debug)]
pub struct ReplayTable {
    windows: HashMap<(GroupId, MemberId), (ReplayWindow, u64)>,
    capacity: usize,
    clock: u64,
}

impl ReplayTable {
    /// A table for at most `capacity` senders.
    pub fn new(capacity: usize) -> Self {
        ReplayTable {
            windows: HashMap::new(),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    /// Accepts packet number `pn` from `sender` in `group` if it was not seen before.
    pub fn accept(&mut self, group: GroupId, sender: MemberId, pn: u64) -> bool {
        let key = (group, sender);
        self.clock += 1;
        if !self.windows.contains_key(&key) && self.windows.len() >= self.capacity {
            if let Some(oldest) = self
                .windows
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| *k)
            {
                self.windows.remove(&oldest);
            }
        }
        let clock = self.clock;
        let (w, t) = self.windows.entry(key).or_default();
        *t = clock;
        w.accept(pn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_rejects_replays_and_ancient_numbers() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(5));
        assert!(!w.accept(5));
        assert!(w.accept(3));
        assert!(!w.accept(3));
        assert!(w.accept(5 + WINDOW_BITS + 10));
        assert!(!w.accept(5));
        assert!(w.accept(5 + WINDOW_BITS + 9));
        assert!(!w.accept(5 + WINDOW_BITS + 9));
    }

    proptest::proptest! {
        #[test]
        fn window_matches_a_set_model(pns in proptest::collection::vec(1u64..3000, 1..400)) {
            let mut w = ReplayWindow::default();
            let mut seen = std::collections::BTreeSet::new();
            let mut highest = 0u64;
            for pn in pns {
                let fresh = !seen.contains(&pn) && (pn > highest || highest - pn < WINDOW_BITS);
                proptest::prop_assert_eq!(w.accept(pn), fresh, "pn {}", pn);
                if fresh { seen.insert(pn); highest = highest.max(pn); }
            }
        }
    }

    #[test]
    fn table_evicts_least_recent() {
        const G: GroupId = GroupId(1);
        let mut t = ReplayTable::new(2);
        assert!(t.accept(G, MemberId(1), 1));
        assert!(t.accept(G, MemberId(2), 1));
        assert!(t.accept(G, MemberId(1), 2));
        assert!(t.accept(G, MemberId(3), 1)); // evicts 2
        assert!(!t.accept(G, MemberId(1), 2));
        assert!(t.accept(G, MemberId(2), 1)); // forgotten after eviction
    }
}
