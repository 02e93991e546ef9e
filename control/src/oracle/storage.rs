//! The oracle replica's raft log store ([`OracleStorage`]): an in-memory implementation of
//! raft's [`Storage`] trait that stands for the replica's durable state.
//!
//! The replica writes it in the order the raft crate requires (see
//! [`super::replica`]): log entries and the `HardState` are stored *before* any message that
//! depends on them is released, and the commit index is stored with or before the entries it
//! covers are applied. A crashed replica restarts from its `OracleStorage` exactly as if it
//! had been persisted (the simulator does this), replaying the committed log into a fresh
//! state machine.
//!
//! Every method returns an error instead of panicking on out-of-range requests.

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

/// In-memory raft log, hard state and membership configuration of one oracle replica.
#[derive(Clone, Debug, Default)]
pub struct OracleStorage {
    hard_state: HardState,
    conf_state: ConfState,
    /// `entries[i].index == i + 1` (the log is never compacted).
    entries: Vec<Entry>,
    /// How many times a replica was started on this storage (part of proposal ids).
    boots: u64,
}

impl OracleStorage {
    /// Fresh storage for a cluster whose voters are `voters` (replica ids, non-zero).
    pub fn new(voters: &[u64]) -> Self {
        let conf_state = ConfState {
            voters: voters.to_vec(),
            ..Default::default()
        };
        OracleStorage {
            conf_state,
            ..Default::default()
        }
    }

    /// The stored hard state (term, vote, commit).
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The voters this storage was created for.
    pub fn voters(&self) -> &[u64] {
        &self.conf_state.voters
    }

    /// Number of stored log entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no entry is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Times a replica was started on this storage.
    pub fn boots(&self) -> u64 {
        self.boots
    }

    pub(crate) fn next_boot(&mut self) -> u64 {
        self.boots += 1;
        self.boots
    }

    /// Persists the hard state.
    pub(crate) fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// Persists a new commit index.
    pub(crate) fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = commit;
    }

    /// Appends entries, replacing any conflicting suffix. Entries must be contiguous with the
    /// log (raft guarantees it); anything else is refused rather than stored.
    pub(crate) fn append(&mut self, ents: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = ents.first() else {
            return Ok(());
        };
        let last = self.entries.len() as u64;
        if first.index == 0 || first.index > last + 1 {
            return Err(StorageError::Unavailable);
        }
        if ents.windows(2).any(|w| w[1].index != w[0].index + 1) {
            return Err(StorageError::Unavailable);
        }
        self.entries.truncate((first.index - 1) as usize);
        self.entries.extend_from_slice(ents);
        Ok(())
    }
}

impl Storage for OracleStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let last = self.entries.len() as u64;
        if low == 0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > last + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut out = self.entries[(low - 1) as usize..(high - 1) as usize].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == 0 {
            return Ok(0);
        }
        self.entries
            .get((idx - 1) as usize)
            .map(|e| e.term)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.entries.len() as u64)
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // The log is never compacted, so a peer can always be caught up from entries.
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    #[test]
    fn append_truncates_conflicts_and_refuses_gaps() {
        let mut s = OracleStorage::new(&[1, 2, 3]);
        s.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]).unwrap();
        s.append(&[entry(2, 2)]).unwrap();
        assert_eq!(s.last_index().unwrap(), 2);
        assert_eq!(s.term(2).unwrap(), 2);
        assert!(s.append(&[entry(5, 2)]).is_err());
        assert!(s.append(&[entry(3, 2), entry(5, 2)]).is_err());
        assert_eq!(s.term(0).unwrap(), 0);
        assert!(s.term(9).is_err());
    }

    #[test]
    fn entries_out_of_range_is_an_error_not_a_panic() {
        let mut s = OracleStorage::new(&[1]);
        s.append(&[entry(1, 1)]).unwrap();
        let ctx = || GetEntriesContext::empty(false);
        assert_eq!(s.entries(1, 2, None, ctx()).unwrap().len(), 1);
        assert!(s.entries(1, 9, None, ctx()).is_err());
        assert!(s.entries(0, 1, None, ctx()).is_err());
        assert!(s.entries(2, 1, None, ctx()).is_err());
    }
}
