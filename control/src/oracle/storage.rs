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
//! # Compaction
//!
//! The replica compacts the log every `snapshot_interval` applied entries: it stores a
//! [`Snapshot`] whose data is the encoded state machine at the compaction index
//! ([`super::state::OracleState::encode_snapshot`]) and drops the entries it covers. A peer
//! that needs dropped entries is sent the snapshot instead; a snapshot received from the
//! leader replaces the whole log.
//!
//! Every method returns an error instead of panicking on out-of-range requests.
//!
//! # Durability
//!
//! [`OracleStorage::new`] is memory only (the embedded single replica and the simulator).
//! [`super::durable::open`] returns a storage that also writes every change through to a
//! directory before the method returns (see [`super::durable`]); an I/O error there is
//! fail-stop (a panic, which the replica's guard contains by stopping the replica).

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use super::durable::{Durable, DurableLog};

/// In-memory raft log, hard state and membership configuration of one oracle replica.
#[derive(Clone, Debug, Default)]
pub struct OracleStorage {
    hard_state: HardState,
    conf_state: ConfState,
    /// The latest snapshot (empty data and index 0 until the first compaction).
    snapshot: Snapshot,
    /// `entries[i].index == snapshot index + 1 + i`.
    entries: Vec<Entry>,
    /// How many times a replica was started on this storage (part of proposal ids).
    boots: u64,
    /// The on-disk copy, if this storage is durable.
    durable: Durable,
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

    /// A durable storage recovered by [`super::durable::open`].
    pub(crate) fn restore(
        hard_state: HardState,
        conf_state: ConfState,
        snapshot: Snapshot,
        entries: Vec<Entry>,
        boots: u64,
        durable: Durable,
    ) -> Self {
        OracleStorage {
            hard_state,
            conf_state,
            snapshot,
            entries,
            boots,
            durable,
        }
    }

    /// True when this storage writes through to disk.
    pub fn is_durable(&self) -> bool {
        self.durable.0.is_some()
    }

    /// Runs a write on the on-disk copy, if any; a failure is fail-stop (see the module docs).
    fn persist(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut DurableLog, &Self) -> std::io::Result<()>,
    ) {
        let Some(mut d) = self.durable.0.take() else {
            return;
        };
        let r = f(&mut d, self);
        self.durable.0 = Some(d);
        if let Err(e) = r {
            panic!("oracle storage: persisting {what} failed: {e}");
        }
    }

    fn persist_state(&mut self) {
        self.persist("the hard state", |d, s| {
            d.write_state(&s.hard_state, s.boots, &s.conf_state.voters)
        });
    }

    /// The stored hard state (term, vote, commit).
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The voters this storage was created for.
    pub fn voters(&self) -> &[u64] {
        &self.conf_state.voters
    }

    /// Index of the last entry covered by the stored snapshot (0 = none).
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn snapshot_term(&self) -> u64 {
        self.snapshot.get_metadata().term
    }

    /// The stored snapshot's state-machine bytes, if a snapshot exists.
    pub fn snapshot_data(&self) -> Option<&[u8]> {
        (self.snapshot_index() > 0).then_some(&self.snapshot.data[..])
    }

    /// Number of stored log entries (after the snapshot).
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
        self.persist_state();
        self.boots
    }

    /// Persists the hard state.
    pub(crate) fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
        self.persist_state();
    }

    /// Persists a new commit index.
    pub(crate) fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = commit;
        self.persist_state();
    }

    /// Appends entries, replacing any conflicting suffix. Entries must be contiguous with the
    /// log (raft guarantees it); anything else is refused rather than stored.
    pub(crate) fn append(&mut self, ents: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = ents.first() else {
            return Ok(());
        };
        let base = self.snapshot_index();
        let last = base + self.entries.len() as u64;
        if first.index <= base {
            return Err(StorageError::Compacted);
        }
        if first.index > last + 1 {
            return Err(StorageError::Unavailable);
        }
        if ents.windows(2).any(|w| w[1].index != w[0].index + 1) {
            return Err(StorageError::Unavailable);
        }
        self.entries.truncate((first.index - 1 - base) as usize);
        self.entries.extend_from_slice(ents);
        self.persist("log entries", |d, _| d.append(ents));
        Ok(())
    }

    /// Compacts the log up to `index` (which must be applied), keeping `data` — the state
    /// machine as of `index` — as the snapshot that replaces the dropped entries.
    pub(crate) fn compact(&mut self, index: u64, data: Vec<u8>) -> Result<(), StorageError> {
        let base = self.snapshot_index();
        if index <= base {
            return Err(StorageError::Compacted);
        }
        let term = raft::Storage::term(self, index).map_err(|_| StorageError::Unavailable)?;
        if index > self.hard_state.commit {
            return Err(StorageError::Unavailable);
        }
        self.entries.drain(..(index - base) as usize);
        self.snapshot = Snapshot {
            data: data.into(),
            metadata: Some(SnapshotMetadata {
                conf_state: Some(self.conf_state.clone()).into(),
                index,
                term,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        self.persist("a compaction", |d, s| {
            d.write_snapshot(&s.snapshot, &s.entries)
        });
        Ok(())
    }

    /// Installs a snapshot received from the leader: it replaces the whole log.
    pub(crate) fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        let meta = snapshot.get_metadata();
        if meta.index <= self.snapshot_index() {
            return Err(StorageError::SnapshotOutOfDate);
        }
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.conf_state = meta.get_conf_state().clone();
        self.entries.clear();
        self.snapshot = snapshot;
        self.persist("a snapshot", |d, s| {
            d.write_snapshot(&s.snapshot, &s.entries)
        });
        self.persist_state();
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
        let base = self.snapshot_index();
        let last = base + self.entries.len() as u64;
        if low <= base {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > last + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut out = self.entries[(low - 1 - base) as usize..(high - 1 - base) as usize].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let base = self.snapshot_index();
        if idx == base {
            return Ok(self.snapshot_term());
        }
        if idx < base {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.entries
            .get((idx - 1 - base) as usize)
            .map(|e| e.term)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snapshot_index() + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.snapshot_index() + self.entries.len() as u64)
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // Asked for only when a peer needs compacted entries, so a snapshot exists.
        if self.snapshot_index() == 0 {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
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
    fn compaction_keeps_indices_and_terms() {
        let mut s = OracleStorage::new(&[1, 2, 3]);
        s.append(&[entry(1, 1), entry(2, 1), entry(3, 2), entry(4, 2)])
            .unwrap();
        assert!(s.compact(3, vec![7]).is_err(), "not committed yet");
        s.set_commit(3);
        s.compact(3, vec![7]).unwrap();
        assert_eq!(s.first_index().unwrap(), 4);
        assert_eq!(s.last_index().unwrap(), 4);
        assert_eq!(s.term(3).unwrap(), 2);
        assert!(s.term(2).is_err());
        let ctx = || GetEntriesContext::empty(false);
        assert!(s.entries(3, 5, None, ctx()).is_err(), "compacted");
        assert_eq!(s.entries(4, 5, None, ctx()).unwrap()[0].index, 4);
        assert_eq!(s.snapshot(0, 2).unwrap().get_metadata().index, 3);
        assert_eq!(s.snapshot_data(), Some(&[7u8][..]));
        assert!(
            s.append(&[entry(3, 3)]).is_err(),
            "cannot overwrite compacted entries"
        );
        s.append(&[entry(5, 2)]).unwrap();
        assert_eq!(s.last_index().unwrap(), 5);
        // A newer snapshot from the leader replaces everything.
        let mut leader = OracleStorage::new(&[1, 2, 3]);
        for i in 1..=9 {
            leader.append(&[entry(i, 3)]).unwrap();
        }
        leader.set_commit(9);
        leader.compact(9, vec![9]).unwrap();
        s.apply_snapshot(leader.snapshot(0, 1).unwrap()).unwrap();
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (10, 9));
        assert_eq!(s.hard_state().commit, 9);
        assert!(
            s.apply_snapshot(leader.snapshot(0, 1).unwrap()).is_err(),
            "out of date"
        );
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
